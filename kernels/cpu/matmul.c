/* kernels/cpu/matmul.c — reference matmul on packed weights, kernel selection
 * and the threaded driver of the fast kernels (kernels_impl.h). */
#include "kernels/cpu/matmul.h"

#include "core/checked.h"
#include "kernels/cpu/kernels_impl.h"

#include <assert.h>
#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static float dot_f32(const float *a, const float *b, int64_t n) {
    /* 8 independent partial sums: vectorisable, fixed order (deterministic) */
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

/* Multiply-adds one thread should have before a second one is woken: a
 * parallel region costs a few microseconds on an idle machine and far more on
 * a loaded one (a worker that spins or sleeps while the other core is busy:
 * on a 2-core VM running other jobs, a 2048 x 640 Q5_0 product of one token
 * took 0.06 ms on one thread and 60 ms on two), so small products run on fewer
 * threads. 2^22 (about 0.1-0.2 ms of integer-kernel work) keeps a one-token
 * step of a small model (Gemma 3 270M, SmolLM2 135M: every layer matrix below
 * 2^22) to one parallel region, the output matrix, while every matrix of a
 * prompt batch still splits. The thread count never changes a result (each
 * output is one dot call). */
#define MIN_MACS_PER_THREAD ((int64_t)1 << 22)

static int threads_for(int n_threads, int64_t n_out, int64_t n_in, int64_t n_tok) {
    int nt = n_threads < 1 ? 1 : n_threads;
    const double macs = (double)n_out * (double)n_in * (double)n_tok;
    const double cap = macs / (double)MIN_MACS_PER_THREAD;
    if (cap < (double)nt) nt = cap < 1 ? 1 : (int)cap;
    return nt;
}

nb_status nb_get_row(nb_type wtype, const void *w, int64_t n_in, int64_t r, float *dst, nb_ctx *ctx) {
    const nb_type_traits *tr = nb_type_get(wtype);
    if (!tr || !tr->to_float)
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "no dequantizer for type %s", nb_type_name(wtype));
    uint64_t rb;
    NB_TRY(nb_type_row_bytes(wtype, (uint64_t)n_in, &rb, ctx, "matrix row"));
    tr->to_float((const unsigned char *)w + (uint64_t)r * rb, dst, n_in);
    return NB_OK;
}

nb_status nb_matmul_ref(nb_type wtype, const void *w, int64_t n_out, int64_t n_in, const float *x,
                        int64_t n_tok, float *y, int n_threads, nb_ctx *ctx) {
    const nb_type_traits *tr = nb_type_get(wtype);
    if (!tr || !tr->to_float)
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "matmul: no kernel for weight type %s", nb_type_name(wtype));
    uint64_t rb;
    NB_TRY(nb_type_row_bytes(wtype, (uint64_t)n_in, &rb, ctx, "matmul weight row"));
    int nt = threads_for(n_threads, n_out, n_in, n_tok);
    int failed = 0;
#pragma omp parallel num_threads(nt)
    {
        float *row = malloc((size_t)n_in * sizeof(float));
        if (!row) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < n_out; r++) {
            if (!row) continue;
            tr->to_float((const unsigned char *)w + (uint64_t)r * rb, row, n_in);
            for (int64_t t = 0; t < n_tok; t++) y[t * n_out + r] = dot_f32(row, x + t * n_in, n_in);
        }
        free(row);
    }
    if (failed) return nb_err(ctx, NB_ERR_NOMEM, "matmul: out of memory for a row buffer");
    return NB_OK;
}

/* ------------------------------------------------------------ kernel selection */

enum { ISA_GENERIC, ISA_AVX2, ISA_AVX512, ISA_NEON, ISA_COUNT };
static const char *const isa_names[ISA_COUNT] = {"generic", "avx2", "avx512", "neon"};
static nb_kernels tables[ISA_COUNT];
static int table_ok[ISA_COUNT];
static int best_isa;
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static int cpu_has_avx2(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    /* CPUID.1:ECX bit 29 is F16C (clang's __builtin_cpu_supports lacks "f16c") */
    unsigned a, b, c, d;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __get_cpuid(1, &a, &b, &c, &d) &&
           (c & (1u << 29));
#else
    return 0;
#endif
}

static int cpu_has_avx512(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

/* The tables are filled once and read-only afterwards (no mutable global
 * state is visible to callers). */
static void tables_init(void) {
    nb_kern_fill_generic(&tables[ISA_GENERIC]);
    table_ok[ISA_GENERIC] = 1;
    if (nb_kern_have_avx2() && cpu_has_avx2()) {
        tables[ISA_AVX2] = tables[ISA_GENERIC];
        nb_kern_fill_avx2(&tables[ISA_AVX2]);
        table_ok[ISA_AVX2] = 1;
        if (nb_kern_have_avx512() && cpu_has_avx512()) {
            tables[ISA_AVX512] = tables[ISA_AVX2];
            nb_kern_fill_avx512(&tables[ISA_AVX512]);
            table_ok[ISA_AVX512] = 1;
        }
    }
    if (nb_kern_have_neon()) {
        tables[ISA_NEON] = tables[ISA_GENERIC];
        nb_kern_fill_neon(&tables[ISA_NEON]);
        table_ok[ISA_NEON] = 1;
    }
    best_isa = ISA_GENERIC;
    for (int i = 0; i < ISA_COUNT; i++)
        if (table_ok[i]) best_isa = i;
    /* NB_KERNELS=<isa> selects a lower table (tests, benchmarks, bisecting) */
    const char *env = getenv("NB_KERNELS");
    if (env)
        for (int i = 0; i < ISA_COUNT; i++)
            if (table_ok[i] && strcmp(env, isa_names[i]) == 0) best_isa = i;
}

const nb_kernels *nb_kernels_best(void) {
    pthread_once(&tables_once, tables_init);
    return &tables[best_isa];
}

const nb_kernels *nb_kernels_by_name(const char *isa) {
    pthread_once(&tables_once, tables_init);
    for (int i = 0; i < ISA_COUNT; i++)
        if (table_ok[i] && isa && strcmp(isa, isa_names[i]) == 0) return &tables[i];
    return NULL;
}

size_t nb_kernels_compiled(const char **names, size_t cap) {
    const int have[ISA_COUNT] = {1, nb_kern_have_avx2(), nb_kern_have_avx2() && nb_kern_have_avx512(),
                                 nb_kern_have_neon()};
    size_t n = 0;
    for (int i = 0; i < ISA_COUNT; i++) {
        if (!have[i]) continue;
        if (n < cap) names[n] = isa_names[i];
        n++;
    }
    return n;
}

const char *nb_kernels_active(void) { return nb_kernels_best()->isa; }

/* ------------------------------------------------------------ the driver */


/* Work items are tiles of rows x tokens: the tile's weight rows (at most
 * TILE_BYTES, >= 1 row) stay in L1 while TOK_TILE tokens pass over them, and
 * the tokens' activations stay in L2. Each output element is still computed
 * by one dot call, so the tiling never changes a result. */
enum { TILE_BYTES = 32 * 1024, MAX_ROW_TILE = 64, TOK_TILE = 64 };
/* float weights: rows per work item at least (the tile kernels take 4 rows at a time) */
enum { FTILE_ROWS = 4 };

/* Token t's quantized row inside the activation buffer (layout above). */
static nb_xq act_row(const unsigned char *xbuf, int64_t t, uint64_t tok_bytes, int64_t n_in, int64_t n_d) {
    const unsigned char *p = xbuf + (uint64_t)t * tok_bytes;
    nb_xq xq;
    xq.qs = (const int8_t *)p;
    xq.d = (const float *)(p + ((uint64_t)n_in + 3) / 4 * 4);
    xq.s = (const int16_t *)(xq.d + n_d);
    return xq;
}

/* Group g of G quantized tokens interleaved for the tile kernels (nb_xqt
 * layout), at xgbuf + g * grp_bytes; n_d scales and n_s sums per token. */
static nb_xqt act_group(unsigned char *xgbuf, int64_t g, uint64_t grp_bytes, int64_t n_in, int64_t n_d, int G) {
    unsigned char *p = xgbuf + (uint64_t)g * grp_bytes;
    nb_xqt xq;
    xq.qs = (const int8_t *)p;
    xq.d = (const float *)(p + (uint64_t)G * (uint64_t)n_in);
    xq.s = (const int32_t *)(xq.d + G * n_d);
    return xq;
}

static void interleave_group(const unsigned char *xbuf, uint64_t tok_bytes, int64_t g, int64_t n_in, int64_t n_d,
                             int64_t n_s, int64_t n_tok, unsigned char *xgbuf, uint64_t grp_bytes, int G) {
    const nb_xqt dst = act_group(xgbuf, g, grp_bytes, n_in, n_d, G);
    int8_t *qs = (int8_t *)dst.qs;
    float *d = (float *)dst.d;
    int32_t *s = (int32_t *)dst.s;
    for (int t = 0; t < G; t++) {
        if (G * g + t >= n_tok) { /* padding of the last group: zero codes, scales and sums */
            for (int64_t c = 0; c < n_in / 32; c++)
                for (int k = 0; k < 8; k++) memset(qs + 32 * G * c + 4 * G * k + 4 * t, 0, 4);
            for (int64_t b = 0; b < n_d; b++) d[G * b + t] = 0.f;
            for (int64_t j = 0; j < n_s; j++) s[G * j + t] = 0;
            continue;
        }
        const nb_xq src = act_row(xbuf, G * g + t, tok_bytes, n_in, n_d);
        for (int64_t c = 0; c < n_in / 32; c++)
            for (int k = 0; k < 8; k++) memcpy(qs + 32 * G * c + 4 * G * k + 4 * t, src.qs + 32 * c + 4 * k, 4);
        for (int64_t b = 0; b < n_d; b++) d[G * b + t] = src.d[b];
        for (int64_t j = 0; j < n_s; j++) s[G * j + t] = src.s[j];
    }
}

/* Quantize token t's activations into its place in xbuf. */
static void quant_row(nb_actq_fn quant, const float *x, int64_t t, int64_t n_in, unsigned char *xbuf,
                      uint64_t tok_bytes, int64_t n_d) {
    unsigned char *p = xbuf + (uint64_t)t * tok_bytes;
    int8_t *qs = (int8_t *)p;
    float *d = (float *)(p + ((uint64_t)n_in + 3) / 4 * 4);
    int16_t *s = (int16_t *)(d + n_d);
    quant(x + t * n_in, n_in, qs, d, s);
}

/* One matmul call's shapes and buffers, shared by its work items. */
typedef struct {
    int64_t n_in, n_out, n_tok;
    const unsigned char *wb; /* weight rows, rb bytes each */
    uint64_t rb;
    const float *x;
    float *y;
    unsigned char *xbuf; /* quantized tokens (NULL: float activations) */
    uint64_t tok_bytes;
    int64_t n_d;
    unsigned char *xgbuf; /* interleaved token groups for `tile` (NULL: none) */
    uint64_t grp_bytes;
    int64_t n_grp;
    int G;
    int64_t row_tile, n_tt;
    nb_vdot_fn dot;
    nb_vdot4_fn dot4;
    nb_vtile_fn tile;
    nb_ftile_fn ftile;
    nb_ptile_fn ptile; /* row-lane kernel on the packed copy wp (NULL: none) */
    const unsigned char *wp;
    uint64_t grp_w_bytes; /* bytes of one packed group of 16 rows */
} mm_job;

/* Work item `item`: row tile item / n_tt against token tile item % n_tt. */
static void run_item(const mm_job *j, int64_t item) {
    const int64_t n_in = j->n_in, n_out = j->n_out;
    const unsigned char *wb = j->wb;
    const uint64_t rb = j->rb;
    const int64_t r0 = (item / j->n_tt) * j->row_tile, r1 = r0 + j->row_tile < n_out ? r0 + j->row_tile : n_out;
    const int64_t t0 = (item % j->n_tt) * TOK_TILE, t1 = t0 + TOK_TILE < j->n_tok ? t0 + TOK_TILE : j->n_tok;
    if (j->ptile) {
        nb_xq xq[TOK_TILE];
        for (int64_t t = t0; t < t1; t++) xq[t - t0] = act_row(j->xbuf, t, j->tok_bytes, n_in, j->n_d);
        j->ptile(n_in, j->wp + (uint64_t)(r0 / NB_PACK_ROWS) * j->grp_w_bytes, (r1 - r0) / NB_PACK_ROWS, xq,
                 (int)(t1 - t0), j->y + t0 * n_out + r0, n_out);
        return;
    }
    if (j->ftile) {
        j->ftile(n_in, wb + (uint64_t)r0 * rb, rb, r1 - r0, j->x + t0 * n_in, n_in, t1 - t0, j->y + t0 * n_out + r0,
                 n_out);
        return;
    }
    int64_t t = t0;
    if (j->xgbuf) /* TOK_TILE is a multiple of G: groups start at t0 */
        for (; t < t1 && t / j->G < j->n_grp; t += j->G) {
            const nb_xqt xg = act_group(j->xgbuf, t / j->G, j->grp_bytes, n_in, j->n_d, j->G);
            const int nv = t1 - t < j->G ? (int)(t1 - t) : j->G;
            j->tile(n_in, wb + (uint64_t)r0 * rb, rb, r1 - r0, &xg, nv, j->y + t * n_out + r0, n_out);
        }
    if (j->dot4 && j->xbuf)
        for (; t + 4 <= t1; t += 4) {
            nb_xq xq[4];
            const void *xa[4];
            for (int k = 0; k < 4; k++) {
                xq[k] = act_row(j->xbuf, t + k, j->tok_bytes, n_in, j->n_d);
                xa[k] = &xq[k];
            }
            for (int64_t r = r0; r < r1; r++) {
                float o[4];
                j->dot4(n_in, wb + (uint64_t)r * rb, xa, o);
                for (int k = 0; k < 4; k++) j->y[(t + k) * n_out + r] = o[k];
            }
        }
    for (; t < t1; t++) {
        nb_xq xq;
        const void *xa;
        if (j->xbuf) {
            xq = act_row(j->xbuf, t, j->tok_bytes, n_in, j->n_d);
            xa = &xq;
        } else {
            xa = j->x + t * n_in;
        }
        float *yt = j->y + t * n_out;
        for (int64_t r = r0; r < r1; r++) yt[r] = j->dot(n_in, wb + (uint64_t)r * rb, xa);
    }
}

/* nb_matmul_with, or (wp != NULL) its row-lane form on the packed copy wp. */
static nb_status matmul_run(const nb_kernels *k, nb_type wtype, const void *w, const void *wp, int64_t n_out,
                            int64_t n_in, const float *x, int64_t n_tok, float *y, int n_threads, nb_ctx *ctx) {
    if (n_out < 0 || n_in < 0 || n_tok < 0)
        return nb_err(ctx, NB_ERR_INVALID, "matmul: negative shape (%lld x %lld, %lld tokens)", (long long)n_out,
                      (long long)n_in, (long long)n_tok);
    const nb_act_fmt fmt = k && wtype >= 0 && wtype < NB_TYPE_COUNT ? k->act[wtype] : NB_ACT_NONE;
    const nb_ptile_fn ptile = wp && fmt == NB_ACT_Q32 ? k->ptile[wtype] : NULL;
    if (wp && (!ptile || !nb_pack_layout_bytes(wtype, n_out, n_in)))
        return nb_err(ctx, NB_ERR_INVALID, "matmul: no packed kernel for %s %lld x %lld", nb_type_name(wtype),
                      (long long)n_out, (long long)n_in);
    const nb_vdot_fn dot = (k && fmt != NB_ACT_NONE) ? k->dot[wtype] : NULL;
    const nb_vdot4_fn dot4 = dot && !ptile ? k->dot4[wtype] : NULL;
    const nb_ftile_fn ftile = dot && fmt == NB_ACT_F32 ? k->ftile[wtype] : NULL;
    const nb_vtile_fn tile = dot && !ptile && fmt != NB_ACT_F32 && n_tok >= k->tile_tok / 4 ? k->tile[wtype] : NULL;
    const int G = tile ? k->tile_tok : 0;
    assert(!tile || (G > 0 && TOK_TILE % G == 0)); /* groups must not straddle work items */
    if (!dot) return nb_matmul_ref(wtype, w, n_out, n_in, x, n_tok, y, n_threads, ctx);
    uint64_t rb;
    NB_TRY(nb_type_row_bytes(wtype, (uint64_t)n_in, &rb, ctx, "matmul weight row"));
    if (n_out == 0 || n_tok == 0) return NB_OK;
    if (n_in == 0) {
        memset(y, 0, (size_t)n_out * (size_t)n_tok * sizeof(float));
        return NB_OK;
    }
    const int nt = threads_for(n_threads, n_out, n_in, n_tok);
    const unsigned char *wb = w;

    /* quantized activations: per token n_in codes, then scales, then sums */
    const int64_t blk = fmt == NB_ACT_Q256 ? 256 : 32;
    const int64_t n_d = n_in / blk, n_s = fmt == NB_ACT_Q256 ? n_in / 16 : n_in / 32;
    /* keep each token's arrays 4-byte aligned */
    const uint64_t tok_bytes = ((uint64_t)n_in + 3) / 4 * 4 + (uint64_t)n_d * 4 + ((uint64_t)n_s * 2 + 3) / 4 * 4;
    unsigned char *xbuf = NULL;
    if (fmt != NB_ACT_F32) {
        uint64_t total;
        if (!nb_mul_u64(tok_bytes, (uint64_t)n_tok, &total) || total > SIZE_MAX)
            return nb_err(ctx, NB_ERR_RANGE, "matmul: activation buffer size overflows");
        xbuf = malloc((size_t)total);
        if (!xbuf) return nb_err(ctx, NB_ERR_NOMEM, "matmul: out of memory for %llu bytes of activations",
                                 (unsigned long long)total);
    }
    /* groups of G tokens interleaved for `tile`: G x (codes, scales, int32 sums);
     * a last group of at least G/4 tokens is padded to a whole tile (cheaper
     * than the 4-token kernels) */
    const int64_t n_grp = !tile ? 0 : n_tok / G + (n_tok % G >= G / 4 ? 1 : 0);
    const uint64_t grp_bytes = (uint64_t)G * ((uint64_t)n_in + (uint64_t)n_d * 4 + (uint64_t)n_s * 4);
    unsigned char *xgbuf = NULL;
    if (n_grp > 0) {
        uint64_t total;
        if (!nb_mul_u64(grp_bytes, (uint64_t)n_grp, &total) || total > SIZE_MAX) {
            free(xbuf);
            return nb_err(ctx, NB_ERR_RANGE, "matmul: activation buffer size overflows");
        }
        xgbuf = malloc((size_t)total);
        if (!xgbuf) {
            free(xbuf);
            return nb_err(ctx, NB_ERR_NOMEM, "matmul: out of memory for %llu bytes of activations",
                          (unsigned long long)total);
        }
    }
    const nb_actq_fn quant = fmt == NB_ACT_Q256 ? k->quant_q256 : k->quant_q32;
    int64_t row_tile = (int64_t)(TILE_BYTES / rb);
    row_tile = row_tile < 1 ? 1 : row_tile > MAX_ROW_TILE ? MAX_ROW_TILE : row_tile;
    if (ftile && row_tile < FTILE_ROWS) row_tile = n_out < FTILE_ROWS ? n_out : FTILE_ROWS;
    /* packed: whole groups of 16 rows; one group per item in a generation
     * step (even shares for the threads), 4 in a batch */
    if (ptile) row_tile = n_tok <= 4 ? NB_PACK_ROWS : 4 * NB_PACK_ROWS;
    const int64_t n_rt = (n_out + row_tile - 1) / row_tile, n_tt = (n_tok + TOK_TILE - 1) / TOK_TILE;
    const int64_t n_items = n_rt * n_tt;

    /* fewer tokens than threads (a generation step): quantize them before the
     * parallel region rather than behind a barrier in it (the same calls) */
    const bool quant_first = xbuf && n_tok < nt;
    /* a generation step (a few tokens): contiguous runs of rows per thread.
     * Handing out its small items one at a time from a shared counter made
     * the 262144 x 640 output matrix of Gemma 3 slower on two threads than
     * on one (6.5 vs 5.7 ms: the counter's cache line and the broken weight
     * streams); a prompt batch keeps the dynamic schedule, whose items differ
     * in cost (padded and remainder token groups). */
    const bool contiguous = n_tok <= 4;
    const mm_job job = {.n_in = n_in, .n_out = n_out, .n_tok = n_tok, .wb = wb, .rb = rb, .x = x, .y = y,
                        .xbuf = xbuf, .tok_bytes = tok_bytes, .n_d = n_d, .xgbuf = xgbuf, .grp_bytes = grp_bytes,
                        .n_grp = n_grp, .G = G, .row_tile = row_tile, .n_tt = n_tt, .dot = dot, .dot4 = dot4,
                        .tile = tile, .ftile = ftile, .ptile = ptile, .wp = wp,
                        .grp_w_bytes = ptile ? (uint64_t)(n_in / 32) * (uint64_t)nb_pack_chunk_bytes(wtype) : 0};
    if (quant_first)
        for (int64_t t = 0; t < n_tok; t++) quant_row(quant, x, t, n_in, xbuf, tok_bytes, n_d);
#pragma omp parallel num_threads(nt)
    {
        if (xbuf && !quant_first) {
            /* each token row is quantized by one thread: deterministic */
#pragma omp for schedule(static)
            for (int64_t t = 0; t < n_tok; t++) quant_row(quant, x, t, n_in, xbuf, tok_bytes, n_d);
        }
        if (xgbuf) {
#pragma omp for schedule(static)
            for (int64_t g = 0; g < n_grp; g++) interleave_group(xbuf, tok_bytes, g, n_in, n_d, n_s, n_tok, xgbuf,
                                                                 grp_bytes, G);
        }
        if (contiguous) {
            /* each thread one contiguous run of items: no shared counter, and
             * every thread streams its own part of the weights */
            const int64_t th = omp_get_thread_num(), n_th = omp_get_num_threads();
            const int64_t lo = n_items * th / n_th, hi = n_items * (th + 1) / n_th;
            for (int64_t item = lo; item < hi; item++) run_item(&job, item);
        } else {
#pragma omp for schedule(dynamic, 1)
            for (int64_t item = 0; item < n_items; item++) run_item(&job, item);
        }
    }
    free(xgbuf);
    free(xbuf);
    return NB_OK;
}

nb_status nb_matmul_with(const nb_kernels *k, nb_type wtype, const void *w, int64_t n_out, int64_t n_in,
                         const float *x, int64_t n_tok, float *y, int n_threads, nb_ctx *ctx) {
    return matmul_run(k, wtype, w, NULL, n_out, n_in, x, n_tok, y, n_threads, ctx);
}

nb_status nb_matmul_packed_with(const nb_kernels *k, nb_type wtype, const void *wp, int64_t n_out, int64_t n_in,
                                const float *x, int64_t n_tok, float *y, int n_threads, nb_ctx *ctx) {
    return matmul_run(k, wtype, NULL, wp, n_out, n_in, x, n_tok, y, n_threads, ctx);
}

uint64_t nb_matmul_pack_bytes(nb_type wtype, int64_t n_out, int64_t n_in) {
    const nb_kernels *k = nb_kernels_best();
    if (wtype < 0 || wtype >= NB_TYPE_COUNT || !k->ptile[wtype]) return 0;
    return nb_pack_layout_bytes(wtype, n_out, n_in);
}

void nb_matmul_pack(nb_type wtype, const void *w, int64_t n_out, int64_t n_in, void *wp, int n_threads) {
    nb_pack_layout(wtype, w, n_out, n_in, wp, n_threads);
}

nb_status nb_matmul_packed(nb_type wtype, const void *wp, int64_t n_out, int64_t n_in, const float *x,
                           int64_t n_tok, float *y, int n_threads, nb_ctx *ctx) {
    return matmul_run(nb_kernels_best(), wtype, NULL, wp, n_out, n_in, x, n_tok, y, n_threads, ctx);
}

nb_status nb_matmul(nb_type wtype, const void *w, int64_t n_out, int64_t n_in, const float *x, int64_t n_tok,
                    float *y, int n_threads, nb_ctx *ctx) {
    return nb_matmul_with(nb_kernels_best(), wtype, w, n_out, n_in, x, n_tok, y, n_threads, ctx);
}
