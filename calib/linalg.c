/* calib/linalg.c — see calib/linalg.h. */
#include "calib/linalg.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK (in OpenBLAS), Fortran calling convention with the hidden string
 * lengths gfortran appends. */
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t uplo_len);
extern void dtrtri_(const char *uplo, const char *diag, const int *n, double *a, const int *lda, int *info,
                    size_t uplo_len, size_t diag_len);

#define ATA_TILE 256 /* columns per tile of AᵀA */
#define QUAD_ROWS 32 /* rows per tile of the quadratic forms */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void init_once(void) { openblas_set_num_threads(1); }
void nb_linalg_init(void) { pthread_once(&g_once, init_once); }

void nb_linalg_ata_add(double *C, const double *A, int64_t m, int64_t n, int nt) {
    nb_linalg_init();
    if (m <= 0 || n <= 0) return;
    const int64_t T = (n + ATA_TILE - 1) / ATA_TILE, npair = T * (T + 1) / 2;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t p = 0; p < npair; p++) {
        int64_t bi = 0, rem = p; /* pair p -> tile (bi, bj), bj >= bi */
        while (rem >= T - bi) { rem -= T - bi; bi++; }
        const int64_t bj = bi + rem;
        const int64_t i0 = bi * ATA_TILE, j0 = bj * ATA_TILE;
        const int64_t ni = n - i0 < ATA_TILE ? n - i0 : ATA_TILE, nj = n - j0 < ATA_TILE ? n - j0 : ATA_TILE;
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ni, (int)nj, (int)m, 1.0, A + i0, (int)n, A + j0,
                    (int)n, 1.0, C + i0 * n + j0, (int)n);
    }
}

int nb_linalg_chol_inv_upper(double *a, int64_t n) {
    nb_linalg_init();
    const int N = (int)n;
    int info = 0;
    const size_t nn = (size_t)n * (size_t)n;
    /* J A J: reversing rows and columns of a row-major matrix reverses its storage */
    for (size_t k = 0; k < nn / 2; k++) { double t = a[k]; a[k] = a[nn - 1 - k]; a[nn - 1 - k] = t; }
    /* Fortran sees the transpose: its upper triangle is our lower one. "U": R with
     * (JAJ)ᵀ = RᵀR, i.e. our lower triangle holds L = Rᵀ; dtrtri then gives L⁻¹ there. */
    dpotrf_("U", &N, a, &N, &info, 1);
    if (info) return info;
    dtrtri_("U", "N", &N, a, &N, &info, 1, 1);
    if (info) return info;
    for (size_t k = 0; k < nn / 2; k++) { double t = a[k]; a[k] = a[nn - 1 - k]; a[nn - 1 - k] = t; }
    for (int64_t i = 0; i < n; i++) memset(a + i * n, 0, (size_t)i * sizeof(double)); /* strict lower */
    return 0;
}

bool nb_linalg_row_quad(const double *D, int64_t rows, int64_t n, const double *S, double *out, int nt) {
    nb_linalg_init();
    const int64_t T = (rows + QUAD_ROWS - 1) / QUAD_ROWS;
    int fail = 0;
#pragma omp parallel num_threads(nt) reduction(|| : fail)
    {
        double *y = malloc((size_t)QUAD_ROWS * (size_t)n * sizeof(double));
        if (!y) fail = 1;
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < T; t++) {
            if (!y) continue;
            const int64_t r0 = t * QUAD_ROWS, nr = rows - r0 < QUAD_ROWS ? rows - r0 : QUAD_ROWS;
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)n, (int)n, 1.0, D + r0 * n, (int)n,
                        S, (int)n, 0.0, y, (int)n);
            for (int64_t r = 0; r < nr; r++) out[r0 + r] = cblas_ddot((int)n, y + r * n, 1, D + (r0 + r) * n, 1);
        }
        free(y);
    }
    return !fail;
}
