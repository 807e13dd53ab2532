/* bench/matmul_io.c — nb_matmul on matrices given as raw files, for
 * comparisons against other implementations (bench/matmul_error.py).
 *
 * Usage: bench_matmul_io TYPE ROWS COLS N_TOK W.bin X.f32 Y_FAST.f32 Y_REF.f32
 *   W.bin: ROWS packed rows of COLS elements of TYPE (ggml's block layout)
 *   X.f32: N_TOK x COLS little-endian float32
 * Writes nb_matmul's result (the fast kernels) and nb_matmul_ref's, each
 * N_TOK x ROWS float32. Exit 2 on bad arguments or files.
 */
#include "core/types.h"
#include "kernels/cpu/matmul.h"

#include <stdio.h>
#include <stdlib.h>

static void *slurp(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *p = malloc(want ? want : 1);
    size_t got = p ? fread(p, 1, want, f) : 0;
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (!p || got != want || extra) {
        free(p);
        return NULL;
    }
    return p;
}

static int spill(const char *path, const float *y, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(y, sizeof(float), n, f);
    return fclose(f) != 0 || w != n ? -1 : 0;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s TYPE ROWS COLS N_TOK W.bin X.f32 Y_FAST.f32 Y_REF.f32\n", argv[0]);
        return 2;
    }
    nb_type t;
    const long rows = atol(argv[2]), cols = atol(argv[3]), ntok = atol(argv[4]);
    uint64_t rb;
    if (!nb_type_from_name(argv[1], &t) || rows <= 0 || cols <= 0 || ntok <= 0 ||
        nb_type_row_bytes(t, (uint64_t)cols, &rb, NULL, "row") != NB_OK) {
        fprintf(stderr, "%s: bad type or shape\n", argv[0]);
        return 2;
    }
    void *w = slurp(argv[5], (size_t)rb * (size_t)rows);
    float *x = slurp(argv[6], sizeof(float) * (size_t)cols * (size_t)ntok);
    float *y = malloc(sizeof(float) * (size_t)rows * (size_t)ntok);
    float *yr = malloc(sizeof(float) * (size_t)rows * (size_t)ntok);
    if (!w || !x || !y || !yr) {
        fprintf(stderr, "%s: cannot read %s / %s (size must be exact)\n", argv[0], argv[5], argv[6]);
        return 2;
    }
    int rc = nb_matmul(t, w, rows, cols, x, ntok, y, 1, NULL) != NB_OK ||
             nb_matmul_ref(t, w, rows, cols, x, ntok, yr, 1, NULL) != NB_OK ||
             spill(argv[7], y, (size_t)rows * (size_t)ntok) || spill(argv[8], yr, (size_t)rows * (size_t)ntok);
    free(w), free(x), free(y), free(yr);
    if (rc) fprintf(stderr, "%s: matmul or write failed\n", argv[0]);
    return rc ? 2 : 0;
}
