/* tests/quant/test_int4.c — group-wise INT4: quantizer conventions, error
 * bounds, importance weights, and lossless GPTQ / AWQ packing (checked against
 * an independent re-implementation of GPTQ's and AWQ's dequantization). */
#include "quant/int4.h"
#include "testutil.h"

#include "core/fp.h"
#include "core/types.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef void (*deq_fn)(const void *, float *, int64_t);
typedef size_t (*q_fn)(const float *, void *, int64_t, int64_t, const float *);

static const struct {
    nb_type t;
    int g;
    bool asym;
    int bytes;
    deq_fn deq;
    q_fn q;
} k_types[] = {
    {NB_TYPE_INT4_SYM_G32, 32, false, 18, nb_dequant_int4_sym_g32, nb_quantize_int4_sym_g32},
    {NB_TYPE_INT4_SYM_G64, 64, false, 34, nb_dequant_int4_sym_g64, nb_quantize_int4_sym_g64},
    {NB_TYPE_INT4_SYM_G128, 128, false, 66, nb_dequant_int4_sym_g128, nb_quantize_int4_sym_g128},
    {NB_TYPE_INT4_ASYM_G32, 32, true, 20, nb_dequant_int4_asym_g32, nb_quantize_int4_asym_g32},
    {NB_TYPE_INT4_ASYM_G64, 64, true, 36, nb_dequant_int4_asym_g64, nb_quantize_int4_asym_g64},
    {NB_TYPE_INT4_ASYM_G128, 128, true, 68, nb_dequant_int4_asym_g128, nb_quantize_int4_asym_g128},
};
#define NTYPES (sizeof k_types / sizeof k_types[0])

static void fill_normal(float *x, size_t n, uint64_t seed, float scale) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) x[i] = nbt_rand_normal(&s) * scale;
}

static float blk_d(const uint8_t *b) {
    uint16_t h;
    memcpy(&h, b, 2);
    return nb_f16_to_f32(h);
}

START_TEST(table_rows) {
    for (size_t i = 0; i < NTYPES; i++) {
        const nb_type_traits *tr = nb_type_get(k_types[i].t);
        ck_assert_ptr_nonnull(tr);
        ck_assert_uint_eq(tr->block_size, (unsigned)k_types[i].g);
        ck_assert_uint_eq(tr->type_size, (unsigned)k_types[i].bytes);
        if (tr->to_float) ck_assert(tr->to_float == k_types[i].deq);
        uint32_t g;
        bool a;
        ck_assert(nb_int4_params(k_types[i].t, &g, &a));
        ck_assert_uint_eq(g, (unsigned)k_types[i].g);
        ck_assert(a == k_types[i].asym);
    }
    ck_assert(!nb_int4_params(NB_TYPE_Q4_0, NULL, NULL));
}
END_TEST

START_TEST(error_bounds) {
    enum { R = 5, C = 512 };
    float x[R * C], y[R * C];
    uint8_t buf[R * C];
    fill_normal(x, R * C, 1, 0.03f);
    x[7] = 0.5f; /* an outlier */
    for (size_t t = 0; t < NTYPES; t++) {
        int g = k_types[t].g;
        ck_assert_uint_eq(k_types[t].q(x, buf, R, C, NULL), (size_t)(R * C / g * k_types[t].bytes));
        k_types[t].deq(buf, y, R * C);
        double e2 = 0, s2 = 0;
        for (int b = 0; b < R * C / g; b++) {
            float d = blk_d(buf + b * k_types[t].bytes);
            /* sym: rounding error <= d/2 (the +absmax end clips by exactly d/2);
             * asym: the rounded zero point can shift the clip by another d/2;
             * the fp16 scale may be 2^-11 below the exact one, which moves the
             * clipped end by up to 15 * 2^-11 * d */
            float bound = (k_types[t].asym ? 1.0f : 0.5f) * d + 15.0f * d / 2048.0f + 1e-9f;
            for (int i = b * g; i < (b + 1) * g; i++) {
                ck_assert_msg(fabsf(x[i] - y[i]) <= bound, "type %zu elem %d: |%g - %g| > %g", t, i,
                              (double)x[i], (double)y[i], (double)bound);
                if (b == 0) continue; /* the outlier's group */
                e2 += (double)(x[i] - y[i]) * (x[i] - y[i]);
                s2 += (double)x[i] * x[i];
            }
        }
        /* uniform 4-bit grid over +-absmax of a normal group: about 0.1 sigma */
        ck_assert_msg(sqrt(e2 / s2) < 0.13, "type %zu rel rmse %g", t, sqrt(e2 / s2));
    }
}
END_TEST

START_TEST(conventions) {
    /* sym: amax 7.5 -> scale 2*7.5/15 = 1 exactly; round half to even; +amax clips to 7 */
    float x[32] = {7.5f, -7.5f, 2.5f, 3.5f, -0.5f, 0.5f, -2.5f, 1.0f};
    uint8_t b[68];
    float y[32];
    nb_quantize_int4_sym_g32(x, b, 1, 32, NULL);
    ck_assert(blk_d(b) == 1.0f);
    nb_dequant_int4_sym_g32(b, y, 32);
    const float want_sym[8] = {7.0f, -8.0f, 2.0f, 4.0f, -0.0f, 0.0f, -2.0f, 1.0f};
    for (int i = 0; i < 8; i++) ck_assert_msg(y[i] == want_sym[i], "sym %d: %g", i, (double)y[i]);
    ck_assert_uint_eq(b[2] & 0x0F, 15); /* 7.5 -> 8 -> +8 -> clamp 15, element 0 in the low nibble */
    ck_assert_uint_eq(b[2] >> 4, 0);    /* -7.5 -> -8 -> 0 */
    /* asym as GPTQ's find_params: min -3, max 12 -> scale 1, zero 3 */
    float xa[32];
    for (int i = 0; i < 32; i++) xa[i] = (float)(i % 16) - 3.0f;
    nb_quantize_int4_asym_g32(xa, b, 1, 32, NULL);
    ck_assert(blk_d(b) == 1.0f);
    ck_assert_uint_eq(b[2], 3);
    nb_dequant_int4_asym_g32(b, y, 32);
    for (int i = 0; i < 32; i++) ck_assert(y[i] == xa[i]);
    /* no negative value: zero point 1 (GPTQ v1 cannot store 0) and 14 steps: exact for 0..14 */
    for (int i = 0; i < 32; i++) xa[i] = (float)(i % 15);
    nb_quantize_int4_asym_g32(xa, b, 1, 32, NULL);
    ck_assert_uint_eq(b[2], 1);
    ck_assert(blk_d(b) == 1.0f);
    nb_dequant_int4_asym_g32(b, y, 32);
    for (int i = 0; i < 32; i++) ck_assert(y[i] == xa[i]);
    /* zeros: scale 0, dequantize to 0 */
    memset(xa, 0, sizeof xa);
    nb_quantize_int4_asym_g32(xa, b, 1, 32, NULL);
    nb_quantize_int4_sym_g32(xa, b + 20, 1, 32, NULL);
    ck_assert(blk_d(b) == 0.0f && blk_d(b + 20) == 0.0f);
    nb_dequant_int4_asym_g32(b, y, 32);
    for (int i = 0; i < 32; i++) ck_assert(y[i] == 0.0f);
    /* NaN input never crashes and never yields a NaN scale */
    xa[4] = NAN;
    nb_quantize_int4_asym_g32(xa, b, 1, 32, NULL);
    ck_assert(!isnan(blk_d(b)));
}
END_TEST

START_TEST(importance) {
    enum { R = 16, C = 256 };
    float x[R * C], y0[R * C], y1[R * C], w[C];
    uint8_t b0[R * C], b1[R * C];
    fill_normal(x, R * C, 3, 1.0f);
    uint64_t s = 77;
    for (int c = 0; c < C; c++) w[c] = (float)(nbt_rand_u64(&s) % 1000) / 100.0f;
    for (size_t t = 0; t < NTYPES; t++) {
        k_types[t].q(x, b0, R, C, NULL);
        k_types[t].q(x, b1, R, C, w);
        k_types[t].deq(b0, y0, R * C);
        k_types[t].deq(b1, y1, R * C);
        double e0 = 0, e1 = 0;
        for (int i = 0; i < R * C; i++) {
            e0 += w[i % C] * (double)(x[i] - y0[i]) * (x[i] - y0[i]);
            e1 += w[i % C] * (double)(x[i] - y1[i]) * (x[i] - y1[i]);
        }
        ck_assert_msg(e1 < e0 * 0.98, "type %zu: %g vs %g", t, e1, e0);
    }
}
END_TEST

/* GPTQ's dequantization, written from AutoGPTQ's QuantLinear: for output n,
 * input k, g = g_idx[k]: w = scales[g][n] * (q - z), q = nibble k%8 of
 * qweight[k/8][n], z = nibble n%8 of qzeros[g][n/8] (+1 in v1). */
static float gptq_weight(const nb_gptq_tensors *t, uint64_t N, uint64_t n, uint64_t k, bool v1) {
    int g = t->g_idx[k];
    int q = (int)(((uint32_t)t->qweight[(k / 8) * N + n] >> (4 * (k % 8))) & 0xF);
    int z = (int)(((uint32_t)t->qzeros[(uint64_t)g * (N / 8) + n / 8] >> (4 * (n % 8))) & 0xF) + (v1 ? 1 : 0);
    return nb_f16_to_f32(t->scales[(uint64_t)g * N + n]) * (float)(q - z);
}

/* AutoAWQ's unpack: reverse of order {0,2,4,6,1,3,5,7} */
static float awq_weight(const nb_awq_tensors *t, uint64_t N, uint64_t G, uint64_t n, uint64_t k) {
    static const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    int slot = 0;
    while (order[slot] != (int)(n % 8)) slot++;
    uint64_t g = k / G;
    int q = (int)(((uint32_t)t->qweight[k * (N / 8) + n / 8] >> (4 * slot)) & 0xF);
    int z = (int)(((uint32_t)t->qzeros[g * (N / 8) + n / 8] >> (4 * slot)) & 0xF);
    return nb_f16_to_f32(t->scales[g * N + n]) * (float)(q - z);
}

START_TEST(gptq_awq_lossless) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    enum { N = 24, K = 256 };
    float x[N * K], y[N * K];
    fill_normal(x, N * K, 5, 0.02f);
    for (int k = 0; k < K; k++) x[3 * K + k] = fabsf(x[3 * K + k]); /* a row without negatives */
    uint8_t *blk = malloc(N * K), *back = malloc(N * K);
    int32_t qweight[K / 8 * N], qzeros[K / 32 * N / 8], g_idx[K], awq_w[K * N / 8], awq_z[K / 32 * N / 8];
    uint16_t scales[K / 32 * N];
    for (size_t t = 0; t < NTYPES; t++) {
        uint64_t G = (uint64_t)k_types[t].g;
        size_t bytes = k_types[t].q(x, blk, N, K, NULL);
        k_types[t].deq(blk, y, N * K);
        for (int v1 = 0; v1 < 2; v1++) {
            nb_gptq_tensors gt = {qweight, qzeros, scales, g_idx};
            ck_assert_int_eq(nb_int4_to_gptq(k_types[t].t, blk, N, K, v1, &gt, &ctx), NB_OK);
            for (int k = 0; k < K; k++) ck_assert_int_eq(g_idx[k], (int)(k / (int)G));
            if (!k_types[t].asym && v1)
                for (size_t i = 0; i < K / G * N / 8; i++) ck_assert_uint_eq((uint32_t)qzeros[i], 0x77777777u);
            for (uint64_t n = 0; n < N; n++)
                for (uint64_t k = 0; k < K; k++) {
                    float w = gptq_weight(&gt, N, n, k, v1);
                    ck_assert_msg(memcmp(&w, &y[n * K + k], 4) == 0, "type %zu v1=%d [%llu,%llu]: %a vs %a",
                                  t, v1, (unsigned long long)n, (unsigned long long)k, (double)w,
                                  (double)y[n * K + k]);
                    /* what GPTQ's fp16 kernels produce */
                    ck_assert_uint_eq(nb_f32_to_f16(w), nb_f32_to_f16(y[n * K + k]));
                }
            memset(back, 0xAB, bytes);
            ck_assert_int_eq(nb_gptq_to_int4(k_types[t].t, &gt, N, K, v1, back, &ctx), NB_OK);
            ck_assert(memcmp(back, blk, bytes) == 0);
        }
        nb_awq_tensors at = {awq_w, awq_z, scales};
        ck_assert_int_eq(nb_int4_to_awq(k_types[t].t, blk, N, K, &at, &ctx), NB_OK);
        for (uint64_t n = 0; n < N; n++)
            for (uint64_t k = 0; k < K; k++) {
                float w = awq_weight(&at, N, G, n, k);
                ck_assert(memcmp(&w, &y[n * K + k], 4) == 0);
            }
        memset(back, 0xCD, bytes);
        ck_assert_int_eq(nb_awq_to_int4(k_types[t].t, &at, N, K, back, &ctx), NB_OK);
        ck_assert(memcmp(back, blk, bytes) == 0);
    }
    free(blk);
    free(back);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(gptq_rejects) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    enum { N = 8, K = 64 };
    float x[N * K];
    fill_normal(x, N * K, 9, 1.0f);
    uint8_t blk[N * K], back[N * K];
    int32_t qweight[K / 8 * N], qzeros[K / 32 * N / 8], g_idx[K];
    uint16_t scales[K / 32 * N];
    nb_gptq_tensors gt = {qweight, qzeros, scales, g_idx};
    nb_quantize_int4_sym_g32(x, blk, N, K, NULL);
    ck_assert_int_eq(nb_int4_to_gptq(NB_TYPE_INT4_SYM_G32, blk, 4, 128, true, &gt, &ctx), NB_ERR_RANGE);
    ck_assert_int_eq(nb_int4_to_gptq(NB_TYPE_INT4_SYM_G32, blk, N, 60, true, &gt, &ctx), NB_ERR_RANGE);
    ck_assert_int_eq(nb_int4_to_gptq(NB_TYPE_INT4_SYM_G128, blk, N, K, true, &gt, &ctx), NB_ERR_RANGE);
    ck_assert_int_eq(nb_int4_to_gptq(NB_TYPE_Q4_0, blk, N, K, true, &gt, &ctx), NB_ERR_INVALID);
    ck_assert_int_eq(nb_int4_to_gptq(NB_TYPE_INT4_SYM_G32, blk, N, K, true, &gt, &ctx), NB_OK);
    /* act-order g_idx */
    g_idx[5] = 1;
    ck_assert_int_eq(nb_gptq_to_int4(NB_TYPE_INT4_SYM_G32, &gt, N, K, true, back, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "g_idx[5]"));
    g_idx[5] = 0;
    /* a symmetric type needs zero point 8 */
    qzeros[1] = 0x77777767;
    ck_assert_int_eq(nb_gptq_to_int4(NB_TYPE_INT4_SYM_G32, &gt, N, K, true, back, &ctx), NB_ERR_UNSUPPORTED);
    /* an asymmetric one accepts it, but v1's stored 15 (= 16) is not representable */
    ck_assert_int_eq(nb_gptq_to_int4(NB_TYPE_INT4_ASYM_G32, &gt, N, K, true, back, &ctx), NB_OK);
    qzeros[1] = 0x7777777F;
    ck_assert_int_eq(nb_gptq_to_int4(NB_TYPE_INT4_ASYM_G32, &gt, N, K, true, back, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert_int_eq(nb_gptq_to_int4(NB_TYPE_INT4_ASYM_G32, &gt, N, K, false, back, &ctx), NB_OK);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("quant/int4");
    TCase *tc = tcase_create("int4");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, table_rows);
    tcase_add_test(tc, error_bounds);
    tcase_add_test(tc, conventions);
    tcase_add_test(tc, importance);
    tcase_add_test(tc, gptq_awq_lossless);
    tcase_add_test(tc, gptq_rejects);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
