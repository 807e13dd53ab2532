/* kernels/cuda: every CUDA kernel against the CPU code on the same data.
 *
 * Skips (exit 77, "SKIP: ..." on stdout) when the build has no CUDA or the
 * process sees no GPU. Otherwise, on seeded random data:
 *   - dequantize: bit-identical to the type table's to_float, per type;
 *   - matmul: per type and for n_tok 1 (matrix-vector), 3, 8, 13
 *     (matrix-matrix, full and partial 8-token tiles), odd n_out: within
 *     TOL_MM of nb_matmul_ref (same math, other summation order) and within
 *     the fast CPU kernels' own tolerance of nb_matmul (8-bit activations);
 *   - RMSNorm, softmax, attention (GQA, head_dim 64/80/128/256, a sliding
 *     window, a KV-cache offset) and MoE top-k routing against copies of the
 *     CPU engine's functions (engine/forward.c, forward_moe.c, static there);
 *     RoPE (normal and NeoX) bit-identical;
 *   - bad shapes and types without a kernel fail with a status, not a crash.
 * "Max relative error" below is max_i |gpu_i - cpu_i| / max_i |cpu_i| over
 * all outputs of a call; every type's figure is printed (scripts/gpu-check
 * collects those lines).
 *
 * The suite runs without fork (CK_NOFORK): CUDA cannot be used in a child
 * forked after the parent initialised it, and the probe in main does.
 */
#include "core/types.h"
#include "kernels/cpu/matmul.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>

#ifndef NB_HAVE_CUDA

int main(void) {
    puts("SKIP: no CUDA device (this build has no CUDA: nvcc not found or -DNIBBLE_CUDA=OFF)");
    return 77;
}

#else

#include "kernels/cuda/cuda.h"
#include "cuda_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOL_MM 3e-5     /* vs nb_matmul_ref: float sums of <= 16384 terms in another order */
#define TOL_OPS 2e-6    /* rmsnorm, softmax, routing weights */
#define TOL_ATT 2e-5    /* attention: online softmax vs two-pass */
/* vs nb_matmul: relative RMS, the bounds of tests/kernels/test_matmul.c (8-bit activations) */
#define TOL_FAST_FLOAT 1e-5
#define TOL_FAST_Q32 1.2e-2
#define TOL_FAST_Q256 1.5e-2

static const struct {
    nb_type t;
    double tol_fast;
    int n_in;
} TYPES[] = {
    {NB_TYPE_F32, TOL_FAST_FLOAT, 512},         {NB_TYPE_F16, TOL_FAST_FLOAT, 512},
    {NB_TYPE_BF16, TOL_FAST_FLOAT, 512},        {NB_TYPE_Q8_0, TOL_FAST_Q32, 512},
    {NB_TYPE_Q4_0, TOL_FAST_Q32, 512},          {NB_TYPE_Q4_1, TOL_FAST_Q32, 512},
    {NB_TYPE_Q5_0, TOL_FAST_Q32, 512},          {NB_TYPE_Q5_1, TOL_FAST_Q32, 512},
    {NB_TYPE_IQ4_NL, TOL_FAST_Q32, 512},        {NB_TYPE_IQ4_XS, TOL_FAST_Q256, 512},
    {NB_TYPE_Q2_K, TOL_FAST_Q256, 512},         {NB_TYPE_Q3_K, TOL_FAST_Q256, 512},
    {NB_TYPE_Q4_K, TOL_FAST_Q256, 512},         {NB_TYPE_Q5_K, TOL_FAST_Q256, 512},
    {NB_TYPE_Q6_K, TOL_FAST_Q256, 512},         {NB_TYPE_NF4, TOL_FAST_Q256, 512},
    {NB_TYPE_NF4_DQ, TOL_FAST_Q256, 16384},     {NB_TYPE_INT4_SYM_G32, TOL_FAST_Q32, 512},
    {NB_TYPE_INT4_SYM_G64, TOL_FAST_Q32, 512},  {NB_TYPE_INT4_SYM_G128, TOL_FAST_Q32, 512},
    {NB_TYPE_INT4_ASYM_G32, TOL_FAST_Q32, 512}, {NB_TYPE_INT4_ASYM_G64, TOL_FAST_Q32, 512},
    {NB_TYPE_INT4_ASYM_G128, TOL_FAST_Q32, 512},
};
#define N_TYPES (sizeof TYPES / sizeof TYPES[0])

/* ---- helpers ------------------------------------------------------------------------ */

static nb_cuda_ctx *open_gpu(nb_ctx *ctx) {
    nbt_ctx(ctx);
    nb_cuda_ctx *c = NULL;
    nb_status st = nb_cuda_ctx_create(0, &c, ctx);
    ck_assert_msg(st == NB_OK, "nb_cuda_ctx_create: %s", nb_errmsg(ctx));
    return c;
}

static void *put(nb_cuda_ctx *c, const void *host, size_t bytes, nb_ctx *ctx) {
    void *d = NULL;
    ck_assert_msg(nb_cuda_alloc(c, bytes, &d, ctx) == NB_OK, "alloc: %s", nb_errmsg(ctx));
    if (host) ck_assert_msg(nb_cuda_upload(c, d, host, bytes, ctx) == NB_OK, "upload: %s", nb_errmsg(ctx));
    return d;
}

static void get(nb_cuda_ctx *c, void *host, const void *d, size_t bytes, nb_ctx *ctx) {
    ck_assert_msg(nb_cuda_download(c, host, d, bytes, ctx) == NB_OK, "download: %s", nb_errmsg(ctx));
}

/* n_out rows of Gaussian weights (row scales 0.1..1.7) quantized to t; *bytes receives the size. */
static void *weights(nb_type t, int64_t n_out, int64_t n_in, uint64_t seed, size_t *bytes) {
    const nb_type_traits *tr = nb_type_get(t);
    ck_assert_ptr_nonnull(tr);
    ck_assert_ptr_nonnull(tr->quantize);
    float *f = gauss((size_t)(n_out * n_in), seed, 1.f);
    for (int64_t r = 0; r < n_out; r++)
        for (int64_t i = 0; i < n_in; i++) f[r * n_in + i] *= 0.1f + 0.05f * (float)(r % 33);
    uint64_t rb = 0;
    ck_assert_int_eq(nb_type_row_bytes(t, (uint64_t)n_in, &rb, NULL, "w"), NB_OK);
    *bytes = (size_t)(rb * (uint64_t)n_out);
    void *q = malloc(*bytes);
    ck_assert_ptr_nonnull(q);
    tr->quantize(f, q, n_out, n_in, NULL);
    free(f);
    return q;
}

static double rel_rms(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---- dequantize and matmul, per type ------------------------------------------------ */

START_TEST(dequantize_bit_exact) {
    const nb_type t = TYPES[_i].t;
    const int64_t n_out = 5, n_in = TYPES[_i].n_in, n = n_out * n_in;
    nb_ctx ctx;
    nb_cuda_ctx *c = open_gpu(&ctx);
    ck_assert(nb_cuda_type_supported(t));
    size_t bytes = 0;
    void *w = weights(t, n_out, n_in, 100 + (uint64_t)_i, &bytes);
    float *cpu = malloc((size_t)n * sizeof(float)), *gpu = malloc((size_t)n * sizeof(float));
    ck_assert(cpu && gpu);
    nb_type_get(t)->to_float(w, cpu, n);
    void *dw = put(c, w, bytes, &ctx);
    float *dy = put(c, NULL, (size_t)n * sizeof(float), &ctx);
    ck_assert_msg(nb_cuda_dequantize(c, t, dw, n, dy, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    get(c, gpu, dy, (size_t)n * sizeof(float), &ctx);
    int64_t diff = 0;
    for (int64_t i = 0; i < n; i++) diff += memcmp(&cpu[i], &gpu[i], sizeof(float)) != 0;
    printf("cuda: dequantize %-16s %lld of %lld values differ from to_float (want 0)\n", nb_type_name(t),
           (long long)diff, (long long)n);
    ck_assert_msg(diff == 0, "%s: %lld values differ", nb_type_name(t), (long long)diff);
    free(w);
    free(cpu);
    free(gpu);
    nb_cuda_ctx_free(c);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(matmul_matches_cpu) {
    const nb_type t = TYPES[_i].t;
    const int64_t n_out = 37, n_in = TYPES[_i].n_in;
    static const int64_t toks[] = {1, 3, 8, 13};
    nb_ctx ctx;
    nb_cuda_ctx *c = open_gpu(&ctx);
    size_t bytes = 0;
    void *w = weights(t, n_out, n_in, 200 + (uint64_t)_i, &bytes);
    void *dw = put(c, w, bytes, &ctx);
    double worst_ref = 0, worst_fast = 0;
    for (size_t k = 0; k < sizeof toks / sizeof toks[0]; k++) {
        const int64_t nt = toks[k];
        float *x = gauss((size_t)(nt * n_in), 300 + (uint64_t)k, 1.f);
        float *yr = malloc((size_t)(nt * n_out) * sizeof(float)), *yf = malloc((size_t)(nt * n_out) * sizeof(float));
        float *yg = malloc((size_t)(nt * n_out) * sizeof(float));
        ck_assert(yr && yf && yg);
        ck_assert_int_eq(nb_matmul_ref(t, w, n_out, n_in, x, nt, yr, 1, &ctx), NB_OK);
        ck_assert_int_eq(nb_matmul(t, w, n_out, n_in, x, nt, yf, 1, &ctx), NB_OK);
        float *dx = put(c, x, (size_t)(nt * n_in) * sizeof(float), &ctx);
        float *dy = put(c, NULL, (size_t)(nt * n_out) * sizeof(float), &ctx);
        ck_assert_msg(nb_cuda_matmul(c, t, dw, n_out, n_in, dx, nt, dy, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
        get(c, yg, dy, (size_t)(nt * n_out) * sizeof(float), &ctx);
        const double er = max_rel(yg, yr, (size_t)(nt * n_out)), ef = rel_rms(yg, yf, (size_t)(nt * n_out));
        if (!(er <= worst_ref)) worst_ref = er;
        if (!(ef <= worst_fast)) worst_fast = ef;
        nb_cuda_free(c, dx);
        nb_cuda_free(c, dy);
        free(x);
        free(yr);
        free(yf);
        free(yg);
    }
    printf("cuda: matmul     %-16s max rel err %.3g vs nb_matmul_ref (tol %.0e), rel RMS %.3g vs nb_matmul (tol %.1e)\n",
           nb_type_name(t), worst_ref, TOL_MM, worst_fast, TYPES[_i].tol_fast);
    ck_assert_msg(worst_ref <= TOL_MM, "%s: %g vs nb_matmul_ref", nb_type_name(t), worst_ref);
    ck_assert_msg(worst_fast <= TYPES[_i].tol_fast, "%s: %g vs nb_matmul", nb_type_name(t), worst_fast);
    free(w);
    nb_cuda_ctx_free(c);
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- operations ----------------------------------------------------------------------- */

START_TEST(rmsnorm_softmax) {
    nb_ctx ctx;
    nb_cuda_ctx *c = open_gpu(&ctx);
    const int64_t rows = 7;
    const int n = 2560;
    float *x = gauss((size_t)(rows * n), 1, 2.f), *w = gauss((size_t)n, 2, 1.f);
    float *yr = malloc((size_t)(rows * n) * sizeof(float)), *yg = malloc((size_t)(rows * n) * sizeof(float));
    ck_assert(yr && yg);
    ref_rmsnorm(yr, x, w, rows, n, 1e-6f);
    float *dx = put(c, x, (size_t)(rows * n) * sizeof(float), &ctx), *dw = put(c, w, (size_t)n * sizeof(float), &ctx);
    float *dy = put(c, NULL, (size_t)(rows * n) * sizeof(float), &ctx);
    ck_assert_int_eq(nb_cuda_rmsnorm(c, dy, dx, dw, rows, n, 1e-6f, &ctx), NB_OK);
    get(c, yg, dy, (size_t)(rows * n) * sizeof(float), &ctx);
    double e = max_rel(yg, yr, (size_t)(rows * n));
    printf("cuda: rmsnorm    max rel err %.3g (tol %.0e)\n", e, TOL_OPS);
    ck_assert_msg(e <= TOL_OPS, "rmsnorm %g", e);
    /* softmax of rows of logits, in place */
    memcpy(yr, x, (size_t)(rows * n) * sizeof(float));
    ref_softmax(yr, rows, n);
    ck_assert_int_eq(nb_cuda_softmax(c, dx, rows, n, &ctx), NB_OK);
    get(c, yg, dx, (size_t)(rows * n) * sizeof(float), &ctx);
    e = max_rel(yg, yr, (size_t)(rows * n));
    printf("cuda: softmax    max rel err %.3g (tol %.0e)\n", e, TOL_OPS);
    ck_assert_msg(e <= TOL_OPS, "softmax %g", e);
    /* errors */
    ck_assert_int_eq(nb_cuda_rmsnorm(c, dy, dx, dw, rows, 0, 1e-6f, &ctx), NB_ERR_RANGE);
    ck_assert_int_eq(nb_cuda_softmax(c, dx, -1, n, &ctx), NB_ERR_RANGE);
    free(x);
    free(w);
    free(yr);
    free(yg);
    nb_cuda_ctx_free(c);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(rope_bit_exact) {
    nb_ctx ctx;
    nb_cuda_ctx *c = open_gpu(&ctx);
    const int n = 6, H = 4, hd = 128, n_rot = 96, pos = 17, half = n_rot / 2;
    float *cs = malloc((size_t)n * half * 2 * sizeof(float));
    ck_assert_ptr_nonnull(cs);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < half; i++) {
            const double th = (double)(pos + t) * pow(10000.0, -2.0 * i / n_rot);
            cs[(t * half + i) * 2] = (float)cos(th);
            cs[(t * half + i) * 2 + 1] = (float)sin(th);
        }
    float *dcs = put(c, cs, (size_t)n * half * 2 * sizeof(float), &ctx);
    for (int neox = 0; neox < 2; neox++) {
        float *v = gauss((size_t)n * H * hd, 5 + (uint64_t)neox, 1.f), *g = malloc((size_t)n * H * hd * sizeof(float));
        ck_assert_ptr_nonnull(g);
        float *dv = put(c, v, (size_t)n * H * hd * sizeof(float), &ctx);
        ref_rope(v, n, H, hd, n_rot, neox, cs);
        ck_assert_int_eq(nb_cuda_rope(c, dv, n, H, hd, n_rot, neox, dcs, &ctx), NB_OK);
        get(c, g, dv, (size_t)n * H * hd * sizeof(float), &ctx);
        const int same = memcmp(v, g, (size_t)n * H * hd * sizeof(float)) == 0;
        printf("cuda: rope       %s %s\n", neox ? "neox" : "norm", same ? "bit-identical" : "DIFFERS");
        ck_assert_msg(same, "rope %s differs", neox ? "neox" : "norm");
        nb_cuda_free(c, dv);
        free(v);
        free(g);
    }
    ck_assert_int_eq(nb_cuda_rope(c, dcs, n, H, hd, 7, false, dcs, &ctx), NB_ERR_RANGE);
    free(cs);
    nb_cuda_ctx_free(c);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(attention_matches_cpu) {
    static const struct {
        int hd, window;
    } cfg[] = {{64, 0}, {80, 0}, {128, 0}, {128, 4}, {256, 0}};
    nb_ctx ctx;
    nb_cuda_ctx *c = open_gpu(&ctx);
    const int n = 5, pos = 11, H = 8, Hkv = 2, n_ctx = 32;
    double worst = 0;
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        const int hd = cfg[k].hd;
        const size_t nq = (size_t)n * H * hd, nkv = (size_t)Hkv * n_ctx * hd;
        const float scale = 1.0f / sqrtf((float)hd);
        float *q = gauss(nq, 10 + k, 1.f), *kc = gauss(nkv, 20 + k, 1.f), *vc = gauss(nkv, 30 + k, 1.f);
        float *or_ = malloc(nq * sizeof(float)), *og = malloc(nq * sizeof(float));
        ck_assert(or_ && og);
        ref_attention(q, kc, vc, or_, n, pos, H, Hkv, hd, n_ctx, scale, cfg[k].window);
        float *dq = put(c, q, nq * sizeof(float), &ctx), *dk = put(c, kc, nkv * sizeof(float), &ctx);
        float *dv = put(c, vc, nkv * sizeof(float), &ctx), *dout = put(c, NULL, nq * sizeof(float), &ctx);
        ck_assert_msg(nb_cuda_attention(c, dq, dk, dv, dout, n, pos, H, Hkv, hd, n_ctx, scale, cfg[k].window, &ctx) ==
                          NB_OK,
                      "%s", nb_errmsg(&ctx));
        get(c, og, dout, nq * sizeof(float), &ctx);
        const double e = max_rel(og, or_, nq);
        if (!(e <= worst)) worst = e;
        printf("cuda: attention  head_dim %d window %d: max rel err %.3g (tol %.0e)\n", hd, cfg[k].window, e, TOL_ATT);
        nb_cuda_free(c, dq);
        nb_cuda_free(c, dk);
        nb_cuda_free(c, dv);
        nb_cuda_free(c, dout);
        free(q);
        free(kc);
        free(vc);
        free(or_);
        free(og);
    }
    ck_assert_msg(worst <= TOL_ATT, "attention %g", worst);
    /* head_dim above 256, n_head not a multiple of n_head_kv, the cache too short */
    ck_assert_int_eq(nb_cuda_attention(c, NULL, NULL, NULL, NULL, 1, 0, 8, 2, 288, 32, 1.f, 0, &ctx), NB_ERR_RANGE);
    ck_assert_int_eq(nb_cuda_attention(c, NULL, NULL, NULL, NULL, 1, 0, 6, 4, 64, 32, 1.f, 0, &ctx), NB_ERR_RANGE);
    ck_assert_int_eq(nb_cuda_attention(c, NULL, NULL, NULL, NULL, 4, 30, 8, 2, 64, 32, 1.f, 0, &ctx), NB_ERR_RANGE);
    nb_cuda_ctx_free(c);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(moe_routing) {
    static const struct {
        int X, U;
        bool norm;
        float scale;
    } cfg[] = {{8, 2, true, 1.f}, {60, 4, false, 1.f}, {128, 8, true, 2.5f}, {256, 8, false, 1.f}, {5, 5, true, 1.f}};
    nb_ctx ctx;
    nb_cuda_ctx *c = open_gpu(&ctx);
    const int64_t n = 9;
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        const int X = cfg[k].X, U = cfg[k].U;
        float *lg = gauss((size_t)(n * X), 40 + k, 2.f);
        if (k == 0) lg[3] = lg[5] = 9.f; /* a tie: expert 3 first */
        int32_t *sr = malloc((size_t)(n * U) * sizeof(int32_t)), *sg = malloc((size_t)(n * U) * sizeof(int32_t));
        float *wr = malloc((size_t)(n * U) * sizeof(float)), *wg = malloc((size_t)(n * U) * sizeof(float));
        ck_assert(sr && sg && wr && wg);
        for (int64_t t = 0; t < n; t++) ref_route(lg + t * X, X, U, cfg[k].norm, cfg[k].scale, sr + t * U, wr + t * U);
        float *dl = put(c, lg, (size_t)(n * X) * sizeof(float), &ctx);
        int32_t *ds = put(c, NULL, (size_t)(n * U) * sizeof(int32_t), &ctx);
        float *dw = put(c, NULL, (size_t)(n * U) * sizeof(float), &ctx);
        ck_assert_int_eq(nb_cuda_moe_topk(c, dl, n, X, U, cfg[k].norm, cfg[k].scale, ds, dw, &ctx), NB_OK);
        get(c, sg, ds, (size_t)(n * U) * sizeof(int32_t), &ctx);
        get(c, wg, dw, (size_t)(n * U) * sizeof(float), &ctx);
        const int same = memcmp(sr, sg, (size_t)(n * U) * sizeof(int32_t)) == 0;
        const double e = max_rel(wg, wr, (size_t)(n * U));
        printf("cuda: moe_topk   top %d of %d: experts %s, weights max rel err %.3g (tol %.0e)\n", U, X,
               same ? "identical" : "DIFFER", e, TOL_OPS);
        ck_assert_msg(same, "moe_topk experts differ (top %d of %d)", U, X);
        ck_assert_msg(e <= TOL_OPS, "moe_topk weights %g", e);
        nb_cuda_free(c, dl);
        nb_cuda_free(c, ds);
        nb_cuda_free(c, dw);
        free(lg);
        free(sr);
        free(sg);
        free(wr);
        free(wg);
    }
    ck_assert_int_eq(nb_cuda_moe_topk(c, NULL, 1, 300, 2, false, 1.f, NULL, NULL, &ctx), NB_ERR_RANGE);
    ck_assert_int_eq(nb_cuda_moe_topk(c, NULL, 1, 8, 9, false, 1.f, NULL, NULL, &ctx), NB_ERR_RANGE);
    nb_cuda_ctx_free(c);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(errors_and_bookkeeping) {
    nb_ctx ctx;
    nb_cuda_ctx *c = open_gpu(&ctx);
    printf("cuda: device %s\n", nb_cuda_device_name(c));
    /* no kernel for IQ2_XXS; n_in not a multiple of the block; a device that is not there */
    ck_assert(!nb_cuda_type_supported(NB_TYPE_IQ2_XXS));
    ck_assert_int_eq(nb_cuda_matmul(c, NB_TYPE_IQ2_XXS, NULL, 1, 256, NULL, 1, NULL, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert_int_eq(nb_cuda_matmul(c, NB_TYPE_Q4_K, NULL, 1, 300, NULL, 1, NULL, &ctx), NB_ERR_RANGE);
    ck_assert_int_eq(nb_cuda_dequantize(c, NB_TYPE_Q8_0, NULL, 33, NULL, &ctx), NB_ERR_RANGE);
    nb_cuda_ctx *none = NULL;
    ck_assert_int_eq(nb_cuda_ctx_create(nb_cuda_device_count(), &none, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert_ptr_null(none);
    /* buffers are counted; freeing returns them; the context frees what is left */
    const size_t base = nb_cuda_bytes_in_use(c);
    void *a = NULL, *b = NULL;
    ck_assert_int_eq(nb_cuda_alloc(c, 1000, &a, &ctx), NB_OK);
    ck_assert_int_eq(nb_cuda_alloc(c, 24, &b, &ctx), NB_OK);
    ck_assert_uint_eq(nb_cuda_bytes_in_use(c), base + 1024);
    nb_cuda_free(c, a);
    ck_assert_uint_eq(nb_cuda_bytes_in_use(c), base + 24);
    ck_assert_uint_ge(nb_cuda_bytes_peak(c), base + 1024);
    ck_assert_int_eq(nb_cuda_alloc(c, 0, &a, &ctx), NB_ERR_INVALID);
    nb_cuda_ctx_free(c); /* frees b */
    nb_cuda_ctx_free(NULL);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    const int n = nb_cuda_device_count();
    if (n == 0) {
        puts("SKIP: no CUDA device");
        return 77;
    }
    printf("cuda: %d device%s; testing device 0\n", n, n == 1 ? "" : "s");
    Suite *s = suite_create("kernels/cuda");
    TCase *tc = tcase_create("cuda");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, dequantize_bit_exact, 0, (int)N_TYPES);
    tcase_add_loop_test(tc, matmul_matches_cpu, 0, (int)N_TYPES);
    tcase_add_test(tc, rmsnorm_softmax);
    tcase_add_test(tc, rope_bit_exact);
    tcase_add_test(tc, attention_matches_cpu);
    tcase_add_test(tc, moe_routing);
    tcase_add_test(tc, errors_and_bookkeeping);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

#endif
