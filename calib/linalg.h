/* calib/linalg.h — the dense linear algebra of calibration (GPTQ, AWQ) on
 * Debian's OpenBLAS, deterministic at any thread count.
 *
 * OpenBLAS's own threads are switched off (nb_linalg_init: one BLAS thread
 * per call, set once per process): a threaded GEMM may split its work
 * differently for different thread counts. Parallelism comes from OpenMP
 * over fixed tiles instead: every output tile is one single-threaded BLAS
 * call whose arguments do not depend on the thread count, so results are
 * bit-identical for any number of threads.
 */
#ifndef NB_CALIB_LINALG_H
#define NB_CALIB_LINALG_H

#include <stdbool.h>
#include <stdint.h>

/* Idempotent, thread-safe; every function below calls it. */
void nb_linalg_init(void);

/* C (n x n, row-major) += AᵀA on and above the diagonal (below it: untouched
 * outside the diagonal tiles, where it receives the mirror values). A is
 * m x n row-major. Fixed tiles of columns, nt OpenMP threads. */
void nb_linalg_ata_add(double *C, const double *A, int64_t m, int64_t n, int nt);

/* A (n x n, row-major, symmetric positive definite; only read, then
 * overwritten) -> U upper triangular with A⁻¹ = UᵀU (strict lower zeroed).
 * Computed as U = J L⁻¹ J with J A J = L Lᵀ (J reverses the order): one
 * Cholesky and one triangular inverse (LAPACK dpotrf + dtrtri), without
 * forming A⁻¹. Returns LAPACK's info (0: ok; > 0: A is not positive definite). */
int nb_linalg_chol_inv_upper(double *a, int64_t n);

/* out[r] = d_r S d_rᵀ for the rows d_r of D (rows x n, row-major), S n x n
 * (full). Row tiles of fixed size, nt threads. False when a thread's
 * scratch (32 n doubles) could not be allocated (out is then incomplete). */
bool nb_linalg_row_quad(const double *D, int64_t rows, int64_t n, const double *S, double *out, int nt);

#endif
