/* bench/matmul.c — nb_matmul throughput per weight type.
 *
 * For each type: a ROWS x COLS matrix of N(0,1) weights quantized with the
 * type's own quantizer, activations N(0,1); times nb_matmul for n_tok = 1
 * (generation: one token, the weights stream from memory once) and for
 * prompt-processing batches, at each thread count. Prints one markdown row
 * per (type, n_tok, threads): median wall ms per call over >= 3 runs (>= 0.3 s
 * in all), median process CPU ms per call (all threads together; on a shared
 * machine the 1-thread CPU time is the steadier figure), GB/s of weight bytes
 * and GFLOP/s (2 * rows * cols * n_tok / wall time),
 * plus the relative RMS error against nb_matmul_ref at n_tok = 1.
 *
 * Usage: bench_matmul [-r ROWS] [-c COLS] [-t 1,2] [-n 1,64,512] [type ...]
 * (default: 4096 x 4096, threads 1,2, n_tok 1,64,512, the types nibble's
 * kernels cover). NB_KERNELS=generic|avx2|avx512 picks a kernel table.
 */
#include "core/types.h"
#include "kernels/cpu/kernels_impl.h"
#include "kernels/cpu/matmul.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void fill_normal(float *v, size_t n, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        double u1 = ((double)(s >> 11) + 1) / 9007199254740993.0;
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        double u2 = (double)(s >> 11) / 9007199254740992.0;
        v[i] = (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
    }
}

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

static const char *const DEFAULT_TYPES[] = {"q4_K",  "q6_K",   "q5_0",   "q8_0",  "q4_1",   "f32",
                                            "f16",   "bf16",   "nf4",    "int4_sym_g128", "int4_asym_g32",
                                            "q4_0",  "q5_1",   "q2_K",   "q3_K",  "q5_K",   "iq4_nl", "iq4_xs"};

int main(int argc, char **argv) {
    int64_t rows = 4096, cols = 4096;
    int threads[8] = {1, 2}, n_threads = 2;
    bool packed = false; /* -p: the packed copy and its row-lane kernels, where the type has them */
    int ntoks[8] = {1, 64, 512}, n_ntok = 3;
    const char *types[64];
    int n_types = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-r") && i + 1 < argc) rows = atoll(argv[++i]);
        else if (!strcmp(argv[i], "-c") && i + 1 < argc) cols = atoll(argv[++i]);
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) n_threads = parse_list(argv[++i], threads, 8);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) n_ntok = parse_list(argv[++i], ntoks, 8);
        else if (!strcmp(argv[i], "-p")) packed = true;
        else if (n_types < 64) types[n_types++] = argv[i];
    }
    if (!n_types)
        for (size_t i = 0; i < sizeof DEFAULT_TYPES / sizeof DEFAULT_TYPES[0]; i++) types[n_types++] = DEFAULT_TYPES[i];
    int max_tok = 1;
    for (int i = 0; i < n_ntok; i++) max_tok = ntoks[i] > max_tok ? ntoks[i] : max_tok;

    float *wf = malloc(sizeof(float) * (size_t)(rows * cols));
    float *x = malloc(sizeof(float) * (size_t)(max_tok * cols));
    float *y = malloc(sizeof(float) * (size_t)(max_tok * rows)), *yr = malloc(sizeof(float) * (size_t)rows);
    void *wq = malloc(sizeof(float) * (size_t)(rows * cols));
    if (!wf || !x || !y || !yr || !wq) return 1;
    fill_normal(wf, (size_t)(rows * cols), 1);
    fill_normal(x, (size_t)(max_tok * cols), 2);
    nb_ctx ctx;
    nb_ctx_init(&ctx);

    printf("kernels: %s, matrix %lld x %lld\n\n", nb_kernels_best()->isa, (long long)rows, (long long)cols);
    printf("| type | n_tok | threads | ms/call | CPU ms/call | weight GB/s | GFLOP/s | rel err vs ref |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int ti = 0; ti < n_types; ti++) {
        nb_type t;
        const nb_type_traits *tr;
        uint64_t rb;
        if (!nb_type_from_name(types[ti], &t) || !(tr = nb_type_get(t)) || !tr->quantize ||
            nb_type_row_bytes(t, (uint64_t)cols, &rb, &ctx, "bench") != NB_OK) {
            fprintf(stderr, "skip %s: unknown type or no quantizer / row length\n", types[ti]);
            continue;
        }
        /* quantize rows in parallel (rows are independent) */
#pragma omp parallel for schedule(dynamic, 16)
        for (int64_t r = 0; r < rows; r++)
            tr->quantize(wf + r * cols, (unsigned char *)wq + (uint64_t)r * rb, 1, cols, NULL);
        double err = 0, ref = 0;
        if (nb_matmul(t, wq, rows, cols, x, 1, y, 2, &ctx) != NB_OK ||
            nb_matmul_ref(t, wq, rows, cols, x, 1, yr, 2, &ctx) != NB_OK) {
            fprintf(stderr, "%s: %s\n", types[ti], nb_errmsg(&ctx));
            continue;
        }
        const uint64_t pb = packed ? nb_matmul_pack_bytes(t, rows, cols) : 0;
        void *wp = pb ? malloc(pb) : NULL;
        if (pb && !wp) return 1;
        if (wp) nb_matmul_pack(t, wq, rows, cols, wp, 2);
#define MM(nt_, th_)                                                                                   \
    (wp ? nb_matmul_packed(t, wp, rows, cols, x, (nt_), y, (th_), &ctx)                                \
        : nb_matmul(t, wq, rows, cols, x, (nt_), y, (th_), &ctx))
        for (int64_t r = 0; r < rows; r++) {
            err += ((double)y[r] - yr[r]) * ((double)y[r] - yr[r]);
            ref += (double)yr[r] * yr[r];
        }
        for (int ni = 0; ni < n_ntok; ni++)
            for (int hi = 0; hi < n_threads; hi++) {
                const int64_t nt = ntoks[ni];
                double ms[64], cpu[64];
                int runs = 0;
                double t_all = 0;
                (void)MM(nt, threads[hi]); /* warm-up */
                while (runs < 64 && (runs < 3 || t_all < 0.3)) {
                    double t0 = now(), c0 = cpu_now();
                    (void)MM(nt, threads[hi]);
                    double dt = now() - t0;
                    cpu[runs] = (cpu_now() - c0) * 1e3;
                    ms[runs++] = dt * 1e3;
                    t_all += dt;
                }
                qsort(ms, (size_t)runs, sizeof ms[0], cmp_d);
                qsort(cpu, (size_t)runs, sizeof cpu[0], cmp_d);
                const double med = ms[runs / 2] / 1e3;
                printf("| %s%s | %lld | %d | %.3f | %.3f | %.2f | %.1f | %.2e |\n", tr->name, wp ? " packed" : "",
                       (long long)nt,
                       threads[hi], med * 1e3, cpu[runs / 2], (double)rb * (double)rows / med / 1e9,
                       2.0 * (double)rows * (double)cols * (double)nt / med / 1e9, sqrt(err / ref));
                fflush(stdout);
            }
        free(wp);
    }
    nb_ctx_free(&ctx);
    free(wf);
    free(x);
    free(y);
    free(yr);
    free(wq);
    return 0;
}
