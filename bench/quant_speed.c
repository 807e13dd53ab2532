/* bench/quant_speed.c — single-thread throughput of the ggml block quantizers.
 *
 * For every type in core/types.h with a quantize hook: quantize N(0,1) rows
 * (64 x 4096 floats) without and with an importance vector, and dequantize,
 * repeating until at least 0.3 s has passed; prints MB/s of f32 data
 * (input for quantize, output for dequantize), median of 3 runs.
 * Usage: bench_quant_speed [type ...]   (default: all quantizable block types)
 */
#include "core/types.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { ROWS = 64, COLS = 4096 };

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* MB/s of `bytes` processed per call, median of 3 timed runs of >= 0.3 s. */
static double rate(const nb_type_traits *t, int mode, const float *x, void *q, float *y, const float *imp) {
    double r[3];
    const double bytes = (double)ROWS * COLS * sizeof(float);
    for (int k = 0; k < 3; k++) {
        int iters = 0;
        double t0 = now(), dt;
        do {
            if (mode == 2) t->to_float(q, y, (int64_t)ROWS * COLS);
            else t->quantize(x, q, ROWS, COLS, mode ? imp : NULL);
            iters++;
            dt = now() - t0;
        } while (dt < 0.3);
        r[k] = bytes * iters / dt / 1e6;
    }
    qsort(r, 3, sizeof r[0], cmp_d);
    return r[1];
}

int main(int argc, char **argv) {
    float *x = malloc(sizeof(float) * ROWS * COLS), *y = malloc(sizeof(float) * ROWS * COLS);
    float *imp = malloc(sizeof(float) * COLS);
    void *q = malloc(sizeof(float) * ROWS * COLS); /* any block type is smaller than f32 */
    if (!x || !y || !imp || !q) return 1;
    uint64_t s = 88172645463325252ull;
    for (int i = 0; i < ROWS * COLS; i++) { /* Box-Muller from xorshift */
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        double u1 = ((double)(s >> 11) + 1) / 9007199254740993.0;
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        double u2 = (double)(s >> 11) / 9007199254740992.0;
        x[i] = (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
    }
    for (int i = 0; i < COLS; i++) imp[i] = 0.5f + (float)(i % 17);

    printf("| type | quantize MB/s | quantize+imatrix MB/s | dequantize MB/s |\n|---|---|---|---|\n");
    for (int id = 0; id < NB_GGML_TYPE_COUNT; id++) {
        const nb_type_traits *t = nb_type_get((nb_type)id);
        if (!t || !t->name || !t->is_quantized || !t->quantize || !t->to_float) continue;
        if (argc > 1) {
            int want = 0;
            for (int a = 1; a < argc; a++) want |= strcmp(argv[a], t->name) == 0;
            if (!want) continue;
        }
        double qa = rate(t, 0, x, q, y, imp), qi = rate(t, 1, x, q, y, imp), dq = rate(t, 2, x, q, y, imp);
        printf("| %s | %.1f | %.1f | %.1f |\n", t->name, qa, qi, dq);
        fflush(stdout);
    }
    free(x);
    free(y);
    free(imp);
    free(q);
    return 0;
}
