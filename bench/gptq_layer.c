/* bench/gptq_layer.c — GPTQ on one synthetic layer: Hessian accumulation
 * (nb_hessian_add) and nb_gptq_quantize, timed in wall and process CPU
 * seconds (all threads), so two builds of the library can be compared on a
 * loaded machine (link the same file against each). Not a test.
 * usage: bench_gptq_layer ROWS COLS [TOKENS=512] [THREADS=1] [TYPE=q4_0] [REPS=1]
 *   e.g. 4096 4096 (attn_q of a 7B), 4096 11008 (ffn_down of a 7B) */
#include "calib/gptq.h"
#include "core/types.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float rnd(uint64_t *s) { /* roughly N(0, 1): sum of 4 uniforms */
    float a = 0;
    for (int k = 0; k < 4; k++) {
        *s = *s * 6364136223846793005ull + 1442695040888963407ull;
        a += (float)(*s >> 40) / (float)(1u << 24);
    }
    return (a - 2.0f) * 1.7f;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ROWS COLS [TOKENS] [THREADS] [TYPE] [REPS]\n", argv[0]);
        return 1;
    }
    const int64_t rows = atoll(argv[1]), cols = atoll(argv[2]), ntok = argc > 3 ? atoll(argv[3]) : 512;
    const int threads = argc > 4 ? atoi(argv[4]) : 1, reps = argc > 6 ? atoi(argv[6]) : 1;
    nb_type type = NB_TYPE_Q4_0;
    if (argc > 5 && !nb_type_from_name(argv[5], &type)) { fprintf(stderr, "unknown type %s\n", argv[5]); return 1; }
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    ctx.n_threads = threads;
    float *x = malloc((size_t)(ntok * cols) * sizeof(float)), *w = malloc((size_t)(rows * cols) * sizeof(float));
    double *H = malloc((size_t)(cols * cols) * sizeof(double));
    uint64_t rb;
    if (!x || !w || !H || nb_type_row_bytes(type, (uint64_t)cols, &rb, &ctx, "w") != NB_OK) return 1;
    void *dst = malloc(rb * (uint64_t)rows);
    uint64_t s = 1;
    for (int64_t k = 0; k < ntok * cols; k++) x[k] = rnd(&s) * (k % cols % 17 == 0 ? 8.0f : 1.0f);
    for (int64_t k = 0; k < rows * cols; k++) w[k] = rnd(&s) * 0.02f;
    for (int r = 0; r < reps; r++) {
        double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        nb_hessian h;
        if (nb_hessian_init(&h, cols, &ctx) != NB_OK || nb_hessian_add(&h, x, ntok, "x", &ctx) != NB_OK) return 1;
        nb_hessian_finish(&h, H);
        nb_hessian_free(&h);
        double w1 = now(CLOCK_MONOTONIC), c1 = now(CLOCK_PROCESS_CPUTIME_ID);
        nb_gptq_result res;
        if (nb_gptq_quantize(type, w, rows, cols, H, NULL, dst, NULL, &res, "w", &ctx) != NB_OK) {
            fprintf(stderr, "%s\n", nb_errmsg(&ctx));
            return 1;
        }
        double w2 = now(CLOCK_MONOTONIC), c2 = now(CLOCK_PROCESS_CPUTIME_ID);
        uint64_t hash = 1469598103934665603ull; /* FNV-1a of the packed output: same bits or not */
        for (uint64_t k = 0; k < rb * (uint64_t)rows; k++) hash = (hash ^ ((const uint8_t *)dst)[k]) * 1099511628211ull;
        printf("gptq_layer %lld x %lld %s tokens %lld threads %d: hessian wall %.2f s cpu %.2f s; "
               "gptq wall %.2f s cpu %.2f s; loss %.6g; output %016llx\n", (long long)rows, (long long)cols,
               nb_type_name(type), (long long)ntok, threads, w1 - w0, c1 - c0, w2 - w1, c2 - c1, res.loss,
               (unsigned long long)hash);
    }
    free(x); free(w); free(H); free(dst);
    nb_ctx_free(&ctx);
    return 0;
}
