/* kernels/cpu: fast matmul kernels against the reference path.
 *
 * Checks: per type, nb_matmul is within a named tolerance of nb_matmul_ref
 * (activations are quantized to 8 bits for the integer kernels, so results
 * are close, not equal); every ISA table this CPU runs gives bit-identical
 * results to the generic C for the integer kernels (exact integer dots, one
 * canonical float order) — also on random weight bytes, which reach the
 * extreme codes — and agrees within a tolerance for the float kernels (FMA);
 * the activation quantizers agree bit for bit, ties included; 1, 2 and 3
 * threads give identical outputs; odd n_out, n_tok = 1 and > 1; NaN in one
 * token reaches only that token's outputs; types without a kernel fall back
 * to the reference exactly; bad shapes and unsupported types fail cleanly. */
#include "core/fp.h"
#include "kernels/cpu/kernels_impl.h"
#include "kernels/cpu/matmul.h"
#include "quant/nf4.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Relative RMS error allowed against the reference. The integer kernels'
 * error is dominated by 8-bit activations (blocks of 32: ~0.5 %, of 256:
 * ~0.65 % expected on Gaussian data, numpy-simulated); NF4 adds its int8
 * code book (~0.4 %). The bounds leave about 2x for the small samples. */
#define TOL_FLOAT 2e-6
#define TOL_Q32 1.2e-2
#define TOL_Q256 1.5e-2
#define TOL_NF4 1.5e-2

static const struct {
    nb_type t;
    double tol;
} TYPES[] = {
    {NB_TYPE_F32, TOL_FLOAT},          {NB_TYPE_F16, TOL_FLOAT},          {NB_TYPE_BF16, TOL_FLOAT},
    {NB_TYPE_Q4_0, TOL_Q32},           {NB_TYPE_Q4_1, TOL_Q32},           {NB_TYPE_Q5_0, TOL_Q32},
    {NB_TYPE_Q5_1, TOL_Q32},           {NB_TYPE_Q8_0, TOL_Q32},           {NB_TYPE_IQ4_NL, TOL_Q32},
    {NB_TYPE_Q2_K, TOL_Q256},          {NB_TYPE_Q3_K, TOL_Q256},          {NB_TYPE_Q4_K, TOL_Q256},
    {NB_TYPE_Q5_K, TOL_Q256},          {NB_TYPE_Q6_K, TOL_Q256},          {NB_TYPE_IQ4_XS, TOL_Q256},
    {NB_TYPE_NF4, TOL_NF4},            {NB_TYPE_INT4_SYM_G32, TOL_Q32},   {NB_TYPE_INT4_SYM_G64, TOL_Q32},
    {NB_TYPE_INT4_SYM_G128, TOL_Q32},  {NB_TYPE_INT4_ASYM_G32, TOL_Q32},  {NB_TYPE_INT4_ASYM_G64, TOL_Q32},
    {NB_TYPE_INT4_ASYM_G128, TOL_Q32},
};
#define N_TYPES (sizeof TYPES / sizeof TYPES[0])

enum { N_OUT = 37, N_IN = 768, N_TOK = 5 };

static float *gauss(size_t n, uint64_t seed, float scale) {
    float *v = malloc(n * sizeof(float));
    ck_assert_ptr_nonnull(v);
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) v[i] = scale * nbt_rand_normal(&s);
    return v;
}

/* n_out rows of Gaussian weights (row scales vary 0.1..1.7) quantized to t. */
static void *weights(nb_type t, int64_t n_out, int64_t n_in, uint64_t seed) {
    const nb_type_traits *tr = nb_type_get(t);
    ck_assert_ptr_nonnull(tr);
    ck_assert_ptr_nonnull(tr->quantize);
    float *f = gauss((size_t)(n_out * n_in), seed, 1.f);
    for (int64_t r = 0; r < n_out; r++)
        for (int64_t i = 0; i < n_in; i++) f[r * n_in + i] *= 0.1f + 0.05f * (float)(r % 33);
    uint64_t rb = 0;
    ck_assert_int_eq(nb_type_row_bytes(t, (uint64_t)n_in, &rb, NULL, "w"), NB_OK);
    void *q = malloc((size_t)(rb * (uint64_t)n_out));
    ck_assert_ptr_nonnull(q);
    tr->quantize(f, q, n_out, n_in, NULL);
    free(f);
    return q;
}

/* Random bytes (every code pattern, extreme scales, the odd Inf/NaN scale). */
static void *random_bytes(nb_type t, int64_t n_out, int64_t n_in, uint64_t seed) {
    uint64_t rb = 0;
    ck_assert_int_eq(nb_type_row_bytes(t, (uint64_t)n_in, &rb, NULL, "w"), NB_OK);
    size_t n = (size_t)(rb * (uint64_t)n_out);
    unsigned char *q = malloc(n);
    ck_assert_ptr_nonnull(q);
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) q[i] = (unsigned char)(nbt_rand_u64(&s) >> 56);
    return q;
}

static double rel_rms(const float *a, const float *ref, size_t n) {
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)ref[i];
        e += d * d;
        r += (double)ref[i] * (double)ref[i];
    }
    return r > 0 ? sqrt(e / r) : sqrt(e);
}

/* Bitwise equal, counting any two NaNs as equal. */
static int same_bits(const float *a, const float *b, size_t n, size_t *where) {
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) && isnan(b[i])) continue;
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            *where = i;
            return 0;
        }
    }
    return 1;
}

static int is_float_type(nb_type t) { return nb_kern_act_fmt(t) == NB_ACT_F32; }

START_TEST(matches_reference) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const nb_type t = TYPES[_i].t;
    void *w = weights(t, N_OUT, N_IN, 11 + (uint64_t)_i);
    float *x = gauss((size_t)N_TOK * N_IN, 99, 2.f);
    float y[N_TOK * N_OUT], yr[N_TOK * N_OUT];
    for (int64_t nt = 1; nt <= N_TOK; nt += N_TOK - 1) {
        ck_assert_int_eq(nb_matmul_ref(t, w, N_OUT, N_IN, x, nt, yr, 1, &ctx), NB_OK);
        ck_assert_int_eq(nb_matmul(t, w, N_OUT, N_IN, x, nt, y, 1, &ctx), NB_OK);
        double e = rel_rms(y, yr, (size_t)(nt * N_OUT));
        printf("%-16s n_tok=%lld rel rms vs ref %.2e (tol %.1e, kernels %s)\n", nb_type_name(t), (long long)nt, e,
               TYPES[_i].tol, nb_kernels_best()->isa);
        ck_assert_msg(e <= TYPES[_i].tol, "%s: rel rms %g > %g", nb_type_name(t), e, TYPES[_i].tol);
        /* every output is near its own reference, not only on average */
        for (int64_t i = 0; i < nt * N_OUT; i++) ck_assert(isfinite(y[i]));
    }
    /* and every ISA this machine runs stays within the same bound */
    const char *isas[] = {"generic", "avx2", "avx512", "neon"};
    for (size_t k = 0; k < 4; k++) {
        const nb_kernels *kt = nb_kernels_by_name(isas[k]);
        if (!kt) continue;
        ck_assert_ptr_nonnull(kt->dot[t]);
        ck_assert_int_eq(nb_matmul_with(kt, t, w, N_OUT, N_IN, x, N_TOK, y, 1, &ctx), NB_OK);
        double e = rel_rms(y, yr, (size_t)(N_TOK * N_OUT));
        ck_assert_msg(e <= TYPES[_i].tol, "%s/%s: rel rms %g", isas[k], nb_type_name(t), e);
    }
    free(w);
    free(x);
    nb_ctx_free(&ctx);
}
END_TEST

/* Activations with the awkward cases: exact ties after scaling, a zero
 * block, tiny (subnormal-scale) values, huge values, a lone outlier. */
static float *tricky_x(size_t n, uint64_t seed) {
    float *x = gauss(n, seed, 1.f);
    for (size_t i = 0; i < n && i < 256; i++) x[i] = (float)((int)(i % 9) - 4) * 0.5f; /* ties */
    for (size_t i = 256; i < n && i < 288; i++) x[i] = 0.f;
    for (size_t i = 288; i < n && i < 320; i++) x[i] *= 1e-39f;
    for (size_t i = 320; i < n && i < 352; i++) x[i] *= 1e30f;
    if (n > 400) x[400] = 1e4f;
    return x;
}

/* Every integer kernel of table kt gives generic's bits for rows of n_in
 * (quantized and random-byte weights, tricky activations), for a batch of
 * n_tok <= N_TOK_ISA tokens (token tiles of 8 or 16, a padded last tile or
 * the 4-token and 1-token kernels for the rest; the tricky blocks sit in the
 * first tile) and for each token alone through kt. */
enum { N_TOK_ISA = 37 };
static void isa_same_bits(const nb_kernels *g, const nb_kernels *kt, const char *isa, int64_t n_in, int64_t n_tok,
                          nb_ctx *ctx) {
    for (size_t i = 0; i < N_TYPES; i++) {
        const nb_type t = TYPES[i].t;
        if (n_in % nb_type_get(t)->block_size) continue;
        float *xs = tricky_x((size_t)n_tok * n_in, 17);
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 1 && is_float_type(t)) break;
            void *w = pass == 0 ? weights(t, N_OUT, n_in, 3 + i) : random_bytes(t, N_OUT, n_in, 7 + i);
            float ya[N_TOK_ISA * N_OUT], yb[N_TOK_ISA * N_OUT], y1[N_OUT];
            ck_assert_int_eq(nb_matmul_with(g, t, w, N_OUT, n_in, xs, n_tok, ya, 1, ctx), NB_OK);
            ck_assert_int_eq(nb_matmul_with(kt, t, w, N_OUT, n_in, xs, n_tok, yb, 1, ctx), NB_OK);
            if (is_float_type(t)) {
                double e = rel_rms(yb, ya, (size_t)n_tok * N_OUT);
                ck_assert_msg(e <= 1e-6, "%s %s vs generic: rel rms %g", isa, nb_type_name(t), e);
            } else {
                size_t at = 0;
                ck_assert_msg(same_bits(ya, yb, (size_t)n_tok * N_OUT, &at),
                              "%s %s (%s weights) differs from generic at %zu: %.9g vs %.9g", isa,
                              nb_type_name(t), pass ? "random-byte" : "quantized", at, (double)ya[at],
                              (double)yb[at]);
            }
            for (int64_t tk = 0; tk < n_tok; tk++) {
                ck_assert_int_eq(nb_matmul_with(kt, t, w, N_OUT, n_in, xs + tk * n_in, 1, y1, 1, ctx), NB_OK);
                size_t at = 0;
                ck_assert_msg(same_bits(y1, yb + tk * N_OUT, N_OUT, &at),
                              "%s %s: token %lld alone differs at row %zu: %.9g vs %.9g", isa, nb_type_name(t),
                              (long long)tk, at, (double)y1[at], (double)yb[tk * N_OUT + at]);
            }
            free(w);
        }
        free(xs);
    }
}

START_TEST(isas_agree) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const nb_kernels *g = nb_kernels_by_name("generic");
    ck_assert_ptr_nonnull(g);
    const char *isas[] = {"avx2", "avx512", "neon"};
    int compared = 0;
    for (size_t k = 0; k < 3; k++) {
        const nb_kernels *kt = nb_kernels_by_name(isas[k]);
        if (!kt) continue;
        compared++;
        /* activation quantizers: identical codes, scales and sums */
        float *x = tricky_x(N_IN * 2, 5);
        int8_t qa[N_IN * 2], qb[N_IN * 2];
        float da[N_IN * 2 / 32], db[N_IN * 2 / 32];
        int16_t sa[N_IN * 2 / 16], sb[N_IN * 2 / 16];
        memset(sa, 0, sizeof sa);
        memset(sb, 0, sizeof sb);
        g->quant_q32(x, N_IN * 2, qa, da, sa);
        kt->quant_q32(x, N_IN * 2, qb, db, sb);
        ck_assert_mem_eq(qa, qb, sizeof qa);
        ck_assert_mem_eq(da, db, sizeof da);
        ck_assert_mem_eq(sa, sb, sizeof(int16_t) * N_IN * 2 / 32);
        g->quant_q256(x, N_IN * 2, qa, da, sa);
        kt->quant_q256(x, N_IN * 2, qb, db, sb);
        ck_assert_mem_eq(qa, qb, sizeof qa);
        ck_assert_mem_eq(da, db, sizeof(float) * N_IN * 2 / 256);
        ck_assert_mem_eq(sa, sb, sizeof sa);
        free(x);

        isa_same_bits(g, kt, isas[k], N_IN, N_TOK_ISA, &ctx);
        /* 20 chunks of 32: the tiles' tail of chunks (a Gemma 3 270M row); 35
         * tokens: 3 left after the 16-token tiles (4-token and 1-token kernels) */
        isa_same_bits(g, kt, isas[k], 640, 35, &ctx);
        /* 11 super-blocks: the SIMD K-quant kernels' 8-at-a-time path and their tail */
        isa_same_bits(g, kt, isas[k], 11 * 256, N_TOK_ISA, &ctx);
    }
    if (!compared) printf("isas_agree: only the generic kernels run on this CPU/build\n");
    nb_ctx_free(&ctx);
}
END_TEST

/* Any thread count and any batch give the same bits. nb_matmul wakes one
 * thread per 2^22 multiply-adds, so the batch is 512 tokens (enough work for 3);
 * float weights also run rows whose length leaves a tail after the vectors. */
static void threads_and_batch(nb_type t, int64_t n_in, nb_ctx *ctx) {
    enum { NT = 512 };
    void *w = weights(t, N_OUT, n_in, 23);
    float *x = gauss((size_t)NT * (size_t)n_in, 4, 1.f);
    float *y1 = malloc(sizeof(float) * NT * N_OUT), *yn = malloc(sizeof(float) * NT * N_OUT);
    ck_assert(y1 && yn);
    ck_assert_int_eq(nb_matmul(t, w, N_OUT, n_in, x, NT, y1, 1, ctx), NB_OK);
    for (int th = 2; th <= 3; th++) {
        ck_assert_int_eq(nb_matmul(t, w, N_OUT, n_in, x, NT, yn, th, ctx), NB_OK);
        ck_assert_mem_eq(y1, yn, sizeof(float) * NT * N_OUT);
    }
    /* one token at a time, and a batch of 7 (tiles of 4 + 3), give the batch's numbers */
    for (int64_t tk = 0; tk < 7; tk++) {
        float yt[N_OUT];
        ck_assert_int_eq(nb_matmul(t, w, N_OUT, n_in, x + tk * n_in, 1, yt, 2, ctx), NB_OK);
        ck_assert_mem_eq(yt, y1 + tk * N_OUT, sizeof yt);
    }
    ck_assert_int_eq(nb_matmul(t, w, N_OUT, n_in, x + 3 * n_in, 7, yn, 1, ctx), NB_OK);
    ck_assert_mem_eq(yn, y1 + 3 * N_OUT, sizeof(float) * 7 * N_OUT);
    free(w);
    free(x);
    free(y1);
    free(yn);
}

START_TEST(threads_identical) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const nb_type t = TYPES[_i].t;
    threads_and_batch(t, N_IN, &ctx);
    if (is_float_type(t)) threads_and_batch(t, N_IN + 13, &ctx);
    nb_ctx_free(&ctx);
}
END_TEST

/* A generation step of a tall matrix (an output layer): enough multiply-adds
 * for 2-3 threads, which then take contiguous runs of row tiles; every thread
 * count gives the 1-thread bits, for 1 and 3 tokens. */
START_TEST(generation_split_identical) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    enum { ROWS = 16411, COLS = 768 };
    const nb_type ts[] = {NB_TYPE_Q8_0, NB_TYPE_Q4_K, NB_TYPE_F16};
    float *x = gauss(3 * COLS, 31, 1.f);
    float *y1 = malloc(sizeof(float) * 3 * ROWS), *yn = malloc(sizeof(float) * 3 * ROWS);
    ck_assert(x && y1 && yn);
    for (size_t i = 0; i < 3; i++) {
        void *w = weights(ts[i], ROWS, COLS, 29);
        for (int64_t n_tok = 1; n_tok <= 3; n_tok += 2) {
            ck_assert_int_eq(nb_matmul(ts[i], w, ROWS, COLS, x, n_tok, y1, 1, &ctx), NB_OK);
            for (int th = 2; th <= 3; th++) {
                memset(yn, 0xff, sizeof(float) * 3 * ROWS);
                ck_assert_int_eq(nb_matmul(ts[i], w, ROWS, COLS, x, n_tok, yn, th, &ctx), NB_OK);
                ck_assert_msg(!memcmp(y1, yn, sizeof(float) * (size_t)(n_tok * ROWS)), "%s: %lld tokens, %d threads",
                              nb_type_name(ts[i]), (long long)n_tok, th);
            }
        }
        free(w);
    }
    free(x);
    free(y1);
    free(yn);
    nb_ctx_free(&ctx);
}
END_TEST

/* The row-lane kernels on packed weights give generic.c's dot bit for bit:
 * every type with a packed form, trained-like and random weights (every
 * code, NaN / Inf scales), chunk counts below and above 8, 1-70 tokens (the
 * 1-2 token and 3-8 token kernels, remainders, more than a work item's 64),
 * 1-3 threads, and a tall matrix split over threads in a generation step. */
START_TEST(packed_equals_dot) {
    const nb_kernels *k = nb_kernels_by_name("avx512");
    if (!k || !k->ptile[NB_TYPE_Q4_0]) {
        printf("packed_equals_dot: skipped: no AVX-512 VNNI on this machine (no packed kernels)\n");
        return;
    }
    const nb_kernels *gen = nb_kernels_by_name("generic");
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const nb_type ts[] = {NB_TYPE_Q4_0, NB_TYPE_Q4_1, NB_TYPE_Q5_0, NB_TYPE_IQ4_NL, NB_TYPE_NF4, NB_TYPE_Q8_0};
    const int64_t shapes[][2] = {{48, 640}, {32, 192}, {16384, 640}};
    const int toks[] = {1, 2, 3, 4, 5, 8, 9, 16, 37, 70};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        for (size_t sh = 0; sh < 3; sh++)
            for (int rnd = 0; rnd < 2; rnd++) {
                const int64_t n_out = shapes[sh][0], n_in = shapes[sh][1];
                const bool tall = sh == 2;
                void *w = rnd ? random_bytes(ts[i], n_out, n_in, 41 + i) : weights(ts[i], n_out, n_in, 43 + i);
                const uint64_t pb = nb_pack_layout_bytes(ts[i], n_out, n_in);
                ck_assert_uint_gt(pb, 0);
                ck_assert_uint_eq(pb, nb_matmul_pack_bytes(ts[i], n_out, n_in));
                void *wp = malloc(pb);
                ck_assert_ptr_nonnull(wp);
                nb_matmul_pack(ts[i], w, n_out, n_in, wp, 2);
                const int max_tok = tall ? 3 : 70;
                float *x = gauss((size_t)(max_tok * n_in), 47, 1.5f);
                float *yr = malloc(sizeof(float) * (size_t)(max_tok * n_out)),
                      *yp = malloc(sizeof(float) * (size_t)(max_tok * n_out));
                ck_assert(x && yr && yp);
                for (size_t ti = 0; ti < sizeof toks / sizeof toks[0] && toks[ti] <= max_tok; ti++) {
                    const int nt = toks[ti];
                    ck_assert_int_eq(nb_matmul_with(gen, ts[i], w, n_out, n_in, x, nt, yr, 1, &ctx), NB_OK);
                    for (int th = 1; th <= 3; th++) {
                        ck_assert_int_eq(nb_matmul_packed_with(k, ts[i], wp, n_out, n_in, x, nt, yp, th, &ctx), NB_OK);
                        size_t where = 0;
                        ck_assert_msg(same_bits(yp, yr, (size_t)(nt * n_out), &where),
                                      "%s %lld x %lld %s, %d tokens, %d threads: output %zu %.9g vs %.9g",
                                      nb_type_name(ts[i]), (long long)n_out, (long long)n_in,
                                      rnd ? "random bytes" : "weights", nt, th, where, yp[where], yr[where]);
                    }
                }
                free(w);
                free(wp);
                free(x);
                free(yr);
                free(yp);
            }
    /* no packed form: a type without one, rows not a multiple of 16 */
    ck_assert_uint_eq(nb_pack_layout_bytes(NB_TYPE_Q4_K, 64, 256), 0);
    ck_assert_uint_eq(nb_pack_layout_bytes(NB_TYPE_Q4_0, 40, 256), 0);
    ck_assert_uint_eq(nb_pack_layout_bytes(NB_TYPE_NF4, 64, 96), 0);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(nan_stays_in_its_token) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const nb_type ts[] = {NB_TYPE_Q8_0, NB_TYPE_Q4_K, NB_TYPE_F16};
    for (size_t i = 0; i < 3; i++) {
        void *w = weights(ts[i], N_OUT, N_IN, 5);
        float *x = gauss(2 * N_IN, 8, 1.f);
        x[N_IN + 77] = NAN;
        float y[2 * N_OUT];
        ck_assert_int_eq(nb_matmul(ts[i], w, N_OUT, N_IN, x, 2, y, 2, &ctx), NB_OK);
        for (int r = 0; r < N_OUT; r++) {
            ck_assert_msg(isfinite(y[r]), "%s: token 0 row %d", nb_type_name(ts[i]), r);
            ck_assert_msg(isnan(y[N_OUT + r]), "%s: token 1 row %d not NaN", nb_type_name(ts[i]), r);
        }
        free(w);
        free(x);
    }
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(fallback_and_errors) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    /* a type with a dequantizer but no kernel: exactly the reference */
    const nb_type fb = NB_TYPE_TQ2_0;
    ck_assert_int_eq(nb_kern_act_fmt(fb), NB_ACT_NONE);
    void *w = weights(fb, 9, 512, 1);
    float *x = gauss(2 * 512, 2, 1.f);
    float y[18], yr[18];
    ck_assert_int_eq(nb_matmul(fb, w, 9, 512, x, 2, y, 2, &ctx), NB_OK);
    ck_assert_int_eq(nb_matmul_ref(fb, w, 9, 512, x, 2, yr, 1, &ctx), NB_OK);
    ck_assert_mem_eq(y, yr, sizeof y);
    free(w);
    /* a type with neither: unsupported, named in the message */
    nb_type none = NB_TYPE_COUNT;
    for (int t = 0; t < NB_TYPE_COUNT; t++) {
        const nb_type_traits *tr = nb_type_get((nb_type)t);
        if (tr && tr->name && !tr->to_float) {
            none = (nb_type)t;
            break;
        }
    }
    ck_assert_int_ne(none, NB_TYPE_COUNT);
    float wdummy[64] = {0};
    ck_assert_int_eq(nb_matmul(none, wdummy, 1, 8, x, 1, y, 1, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), nb_type_name(none)));
    ck_assert_int_eq(nb_matmul((nb_type)200, wdummy, 1, 8, x, 1, y, 1, &ctx), NB_ERR_UNSUPPORTED);
    /* row length not a multiple of the block */
    void *wq = weights(NB_TYPE_Q4_K, 2, 256, 3);
    ck_assert_int_eq(nb_matmul(NB_TYPE_Q4_K, wq, 2, 100, x, 1, y, 1, &ctx), NB_ERR_RANGE);
    ck_assert_int_eq(nb_matmul(NB_TYPE_Q8_0, wq, 2, 48, x, 1, y, 1, &ctx), NB_ERR_RANGE);
    ck_assert_int_eq(nb_matmul(NB_TYPE_Q4_K, wq, -1, 256, x, 1, y, 1, &ctx), NB_ERR_INVALID);
    /* empty shapes do nothing */
    ck_assert_int_eq(nb_matmul(NB_TYPE_Q4_K, wq, 2, 256, x, 0, y, 1, &ctx), NB_OK);
    free(wq);
    free(x);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(nf4_codebook) {
    /* the int8 code book is round(code * 127) of bitsandbytes' NF4 values */
    for (int i = 0; i < 16; i++) ck_assert_int_eq(nb_kern_nf4_i8[i], (int)lrintf(nb_nf4_code[i] * 127.f));
    /* F32 weights with n_in not a multiple of 8 (tails) */
    nb_ctx ctx;
    nbt_ctx(&ctx);
    float *w = gauss(3 * 13, 3, 1.f), *x = gauss(13, 4, 1.f), y[3], yr[3];
    ck_assert_int_eq(nb_matmul(NB_TYPE_F32, w, 3, 13, x, 1, y, 1, &ctx), NB_OK);
    ck_assert_int_eq(nb_matmul_ref(NB_TYPE_F32, w, 3, 13, x, 1, yr, 1, &ctx), NB_OK);
    ck_assert(rel_rms(y, yr, 3) < 1e-6);
    free(w);
    free(x);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("kernels/matmul");
    TCase *tc = tcase_create("matmul");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, matches_reference, 0, (int)N_TYPES);
    tcase_add_test(tc, isas_agree);
    tcase_add_loop_test(tc, threads_identical, 0, (int)N_TYPES);
    tcase_add_test(tc, generation_split_identical);
    tcase_add_test(tc, packed_equals_dot);
    tcase_add_test(tc, nan_stays_in_its_token);
    tcase_add_test(tc, fallback_and_errors);
    tcase_add_test(tc, nf4_codebook);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
