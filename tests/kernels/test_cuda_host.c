/* kernels/cuda without a GPU: the kernels' own code, run on the host.
 *
 * Parts of every CUDA kernel are __host__ __device__ and have *_host entry
 * points (kernels/cuda/cuda.h), so this suite checks, on any machine with nvcc:
 *   - the 23 decoders (nb_cuda_dequantize_host) bit for bit against the type
 *     table's to_float, on quantized Gaussian rows and on random bytes (every
 *     code pattern, extreme and non-finite scales; NaN equals NaN);
 *   - the matmul kernel's lane code (nb_cuda_matmul_host: 32 lanes per warp,
 *     the shuffle butterfly in the kernel's order, NT = 1 and NT = 8) against
 *     nb_matmul_ref for every type at n_tok 1, 3, 8, 13, odd n_out (3e-5);
 *   - RoPE per pair bit for bit, attention and MoE routing per warp (32 host
 *     threads stand for the lanes, memory and barriers for the shuffles)
 *     against the engine's functions (cuda_ref.h): attention within 2e-5,
 *     routing with identical experts (a tie included), weights within 2e-6;
 *   - error paths.
 * Not covered here: the device itself (launches, real shuffles, the block
 * reductions of RMSNorm and softmax, every CUDA call): test_cuda.c, on a GPU.
 * Skips (77) in a build without CUDA.
 */
#include "core/types.h"
#include "kernels/cpu/matmul.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>

#ifndef NB_HAVE_CUDA

int main(void) {
    puts("SKIP: this build has no CUDA (nvcc not found or -DNIBBLE_CUDA=OFF)");
    return 77;
}

#else

#include "kernels/cuda/cuda.h"
#include "cuda_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const nb_type TYPES[] = {
    NB_TYPE_F32,           NB_TYPE_F16,          NB_TYPE_BF16,          NB_TYPE_Q8_0,           NB_TYPE_Q4_0,
    NB_TYPE_Q4_1,          NB_TYPE_Q5_0,         NB_TYPE_Q5_1,          NB_TYPE_IQ4_NL,         NB_TYPE_IQ4_XS,
    NB_TYPE_Q2_K,          NB_TYPE_Q3_K,         NB_TYPE_Q4_K,          NB_TYPE_Q5_K,           NB_TYPE_Q6_K,
    NB_TYPE_NF4,           NB_TYPE_NF4_DQ,       NB_TYPE_INT4_SYM_G32,  NB_TYPE_INT4_SYM_G64,   NB_TYPE_INT4_SYM_G128,
    NB_TYPE_INT4_ASYM_G32, NB_TYPE_INT4_ASYM_G64, NB_TYPE_INT4_ASYM_G128,
};
#define N_TYPES (sizeof TYPES / sizeof TYPES[0])

/* n elements' worth of blocks of t: quantized Gaussian rows, or random bytes. */
static void *blocks(nb_type t, int64_t rows, int64_t n_in, bool random, uint64_t seed, size_t *bytes) {
    const nb_type_traits *tr = nb_type_get(t);
    uint64_t rb = 0;
    ck_assert_int_eq(nb_type_row_bytes(t, (uint64_t)n_in, &rb, NULL, "w"), NB_OK);
    *bytes = (size_t)(rb * (uint64_t)rows);
    uint8_t *q = malloc(*bytes);
    ck_assert_ptr_nonnull(q);
    uint64_t s = seed;
    if (random) {
        for (size_t i = 0; i < *bytes; i++) q[i] = (uint8_t)nbt_rand_u64(&s);
        return q;
    }
    float *f = malloc((size_t)(rows * n_in) * sizeof(float));
    ck_assert_ptr_nonnull(f);
    for (int64_t i = 0; i < rows * n_in; i++) f[i] = (0.1f + 0.05f * (float)((i / n_in) % 33)) * nbt_rand_normal(&s);
    tr->quantize(f, q, rows, n_in, NULL);
    free(f);
    return q;
}

static bool same_value(float a, float b) { return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0; }

START_TEST(decoders_match_to_float) {
    const nb_type t = TYPES[_i / 2];
    const bool random = _i % 2;
    const nb_type_traits *tr = nb_type_get(t);
    ck_assert(nb_cuda_type_supported(t));
    const int64_t n_in = tr->block_size >= 16384 ? 16384 : 1024, rows = 3, n = rows * n_in;
    size_t bytes = 0;
    void *w = blocks(t, rows, n_in, random, 7 + (uint64_t)_i, &bytes);
    float *cpu = malloc((size_t)n * sizeof(float)), *dec = malloc((size_t)n * sizeof(float));
    ck_assert(cpu && dec);
    tr->to_float(w, cpu, n);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ck_assert_int_eq(nb_cuda_dequantize_host(t, w, n, dec, &ctx), NB_OK);
    int64_t diff = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (!same_value(cpu[i], dec[i])) {
            if (first < 0) first = i;
            diff++;
        }
    printf("cuda decoders (host): %-16s %-8s %lld of %lld values differ from to_float\n", nb_type_name(t),
           random ? "random" : "gauss", (long long)diff, (long long)n);
    ck_assert_msg(diff == 0, "%s (%s bytes): %lld differ, first at %lld: %g vs %g", nb_type_name(t),
                  random ? "random" : "quantized", (long long)diff, (long long)first,
                  first >= 0 ? (double)dec[first] : 0.0, first >= 0 ? (double)cpu[first] : 0.0);
    free(w);
    free(cpu);
    free(dec);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(matmul_lanes_match_reference) {
    const nb_type t = TYPES[_i];
    const int64_t n_out = 19, n_in = nb_type_get(t)->block_size >= 16384 ? 16384 : 512;
    static const int64_t toks[] = {1, 3, 8, 13};
    size_t bytes = 0;
    void *w = blocks(t, n_out, n_in, false, 50 + (uint64_t)_i, &bytes);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    double worst = 0;
    for (size_t k = 0; k < sizeof toks / sizeof toks[0]; k++) {
        const int64_t nt = toks[k];
        float *x = malloc((size_t)(nt * n_in) * sizeof(float)), *yr = malloc((size_t)(nt * n_out) * sizeof(float));
        float *yh = malloc((size_t)(nt * n_out) * sizeof(float));
        ck_assert(x && yr && yh);
        uint64_t st = 60 + k;
        for (int64_t i = 0; i < nt * n_in; i++) x[i] = nbt_rand_normal(&st);
        ck_assert_int_eq(nb_matmul_ref(t, w, n_out, n_in, x, nt, yr, 1, &ctx), NB_OK);
        ck_assert_int_eq(nb_cuda_matmul_host(t, w, n_out, n_in, x, nt, yh, &ctx), NB_OK);
        const double e = max_rel(yh, yr, (size_t)(nt * n_out));
        if (!(e <= worst)) worst = e;
        free(x);
        free(yr);
        free(yh);
    }
    printf("cuda matmul lanes (host): %-16s max rel err %.3g vs nb_matmul_ref\n", nb_type_name(t), worst);
    ck_assert_msg(worst <= 3e-5, "%s: %g", nb_type_name(t), worst);
    free(w);
    nb_ctx_free(&ctx);
}
END_TEST

/* The warp kernels' code on 32 host threads per warp, against the engine's
 * functions; same shapes as test_cuda.c. */
START_TEST(rope_attention_routing_on_host) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    /* RoPE, both layouts: bit-identical */
    {
        const int n = 6, H = 4, hd = 128, n_rot = 96, half = n_rot / 2;
        float *cs = malloc((size_t)n * half * 2 * sizeof(float));
        ck_assert_ptr_nonnull(cs);
        for (int t = 0; t < n; t++)
            for (int i = 0; i < half; i++) {
                const double th = (double)(17 + t) * pow(10000.0, -2.0 * i / n_rot);
                cs[(t * half + i) * 2] = (float)cos(th);
                cs[(t * half + i) * 2 + 1] = (float)sin(th);
            }
        for (int neox = 0; neox < 2; neox++) {
            float *v = gauss((size_t)n * H * hd, 5 + (uint64_t)neox, 1.f), *g = malloc((size_t)n * H * hd * sizeof(float));
            ck_assert_ptr_nonnull(g);
            memcpy(g, v, (size_t)n * H * hd * sizeof(float));
            ref_rope(v, n, H, hd, n_rot, neox, cs);
            ck_assert_int_eq(nb_cuda_rope_host(g, n, H, hd, n_rot, neox, cs, &ctx), NB_OK);
            ck_assert_msg(memcmp(v, g, (size_t)n * H * hd * sizeof(float)) == 0, "rope %d differs", neox);
            free(v);
            free(g);
        }
        ck_assert_int_eq(nb_cuda_rope_host(cs, n, H, hd, 7, false, cs, &ctx), NB_ERR_RANGE);
        free(cs);
    }
    /* attention: GQA 8/2, cache offset, head_dim 64..256, a window */
    static const struct {
        int hd, window;
    } att[] = {{64, 0}, {80, 0}, {128, 0}, {128, 4}, {256, 0}};
    for (size_t k = 0; k < sizeof att / sizeof att[0]; k++) {
        const int n = 5, pos = 11, H = 8, Hkv = 2, n_ctx = 32, hd = att[k].hd;
        const size_t nq = (size_t)n * H * hd, nkv = (size_t)Hkv * n_ctx * hd;
        const float scale = 1.0f / sqrtf((float)hd);
        float *q = gauss(nq, 10 + k, 1.f), *kc = gauss(nkv, 20 + k, 1.f), *vc = gauss(nkv, 30 + k, 1.f);
        float *o_ref = malloc(nq * sizeof(float)), *o_host = malloc(nq * sizeof(float));
        ck_assert(o_ref && o_host);
        ref_attention(q, kc, vc, o_ref, n, pos, H, Hkv, hd, n_ctx, scale, att[k].window);
        ck_assert_int_eq(nb_cuda_attention_host(q, kc, vc, o_host, n, pos, H, Hkv, hd, n_ctx, scale, att[k].window, &ctx),
                         NB_OK);
        const double e = max_rel(o_host, o_ref, nq);
        printf("cuda attention (host): head_dim %d window %d: max rel err %.3g\n", hd, att[k].window, e);
        ck_assert_msg(e <= 2e-5, "attention hd %d: %g", hd, e);
        free(q);
        free(kc);
        free(vc);
        free(o_ref);
        free(o_host);
    }
    ck_assert_int_eq(nb_cuda_attention_host(NULL, NULL, NULL, NULL, 1, 0, 8, 2, 288, 32, 1.f, 0, &ctx), NB_ERR_RANGE);
    /* routing: identical experts (ties to the lower id), weights within 2e-6 */
    static const struct {
        int X, U;
        bool norm;
        float scale;
    } moe[] = {{8, 2, true, 1.f}, {60, 4, false, 1.f}, {128, 8, true, 2.5f}, {256, 8, false, 1.f}, {5, 5, true, 1.f}};
    for (size_t k = 0; k < sizeof moe / sizeof moe[0]; k++) {
        const int64_t n = 9;
        const int X = moe[k].X, U = moe[k].U;
        float *lg = gauss((size_t)(n * X), 40 + k, 2.f);
        if (k == 0) lg[3] = lg[5] = 9.f; /* a tie: expert 3 first */
        int32_t *sr = malloc((size_t)(n * U) * sizeof(int32_t)), *sh = malloc((size_t)(n * U) * sizeof(int32_t));
        float *wr = malloc((size_t)(n * U) * sizeof(float)), *wh = malloc((size_t)(n * U) * sizeof(float));
        ck_assert(sr && sh && wr && wh);
        for (int64_t t = 0; t < n; t++) ref_route(lg + t * X, X, U, moe[k].norm, moe[k].scale, sr + t * U, wr + t * U);
        ck_assert_int_eq(nb_cuda_moe_topk_host(lg, n, X, U, moe[k].norm, moe[k].scale, sh, wh, &ctx), NB_OK);
        ck_assert_msg(memcmp(sr, sh, (size_t)(n * U) * sizeof(int32_t)) == 0, "routing top %d of %d: experts differ", U,
                      X);
        if (k == 0) ck_assert(sh[0] == 3 && sh[1] == 5);
        const double e = max_rel(wh, wr, (size_t)(n * U));
        printf("cuda moe_topk (host): top %d of %d: experts identical, weights max rel err %.3g\n", U, X, e);
        ck_assert_msg(e <= 2e-6, "routing weights %g", e);
        free(lg);
        free(sr);
        free(sh);
        free(wr);
        free(wh);
    }
    ck_assert_int_eq(nb_cuda_moe_topk_host(NULL, 1, 300, 2, false, 1.f, NULL, NULL, &ctx), NB_ERR_RANGE);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(unsupported_and_bad_shapes) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    float y[64];
    uint8_t w[256] = {0};
    ck_assert(!nb_cuda_type_supported(NB_TYPE_IQ2_XXS));
    ck_assert(!nb_cuda_type_supported(NB_TYPE_COUNT));
    ck_assert_int_eq(nb_cuda_dequantize_host(NB_TYPE_IQ2_XXS, w, 256, y, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert_int_eq(nb_cuda_dequantize_host(NB_TYPE_Q8_0, w, 33, y, &ctx), NB_ERR_RANGE);
    ck_assert(strstr(nb_errmsg(&ctx), "q8_0") != NULL);
    ck_assert_int_eq(nb_cuda_matmul_host(NB_TYPE_IQ2_XXS, w, 1, 256, y, 1, y, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert_int_eq(nb_cuda_matmul_host(NB_TYPE_Q4_K, w, 1, 64, y, 1, y, &ctx), NB_ERR_RANGE);
    ck_assert_int_eq(nb_cuda_matmul_host(NB_TYPE_Q8_0, w, 1, 32, y, -1, y, &ctx), NB_ERR_RANGE);
    /* the probe never fails: 0 or more devices, whatever the machine */
    ck_assert_int_ge(nb_cuda_device_count(), 0);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("kernels/cuda_host");
    TCase *tc = tcase_create("host");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, decoders_match_to_float, 0, (int)(2 * N_TYPES));
    tcase_add_loop_test(tc, matmul_lanes_match_reference, 0, (int)N_TYPES);
    tcase_add_test(tc, rope_attention_routing_on_host);
    tcase_add_test(tc, unsupported_and_bad_shapes);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}

#endif
