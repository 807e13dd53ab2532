/* tests/quant/test_nf4.c — NF4 / NF4_DQ against bitsandbytes' semantics.
 *
 * Oracles: the golden files in tests/data/nf4 (written by the independent numpy
 * re-implementation tests/data/nf4/nf4_oracle.py, see make_golden.py), the
 * threshold literals of bitsandbytes' dQuantizeNF4 and a few values of
 * bitsandbytes 0.50.2's create_dynamic_map(signed=True) copied below. */
#include "quant/nf4.h"
#include "testutil.h"

#include "core/types.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* csrc/kernels.cu dQuantizeNF4, low to high */
static const float k_bnb_thr[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
};

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

START_TEST(thresholds_ties_go_low) {
    for (int i = 0; i < 15; i++) {
        ck_assert_uint_eq(nb_nf4_index(k_bnb_thr[i]), (unsigned)i);
        ck_assert_uint_eq(nb_nf4_index(nextafterf(k_bnb_thr[i], 2.0f)), (unsigned)i + 1);
        ck_assert_uint_eq(nb_nf4_index(nextafterf(k_bnb_thr[i], -2.0f)), (unsigned)i);
    }
    /* every code maps to itself */
    for (int i = 0; i < 16; i++) ck_assert_uint_eq(nb_nf4_index(nb_nf4_code[i]), (unsigned)i);
    ck_assert_uint_eq(nb_nf4_index(1.0f), 15);
    ck_assert_uint_eq(nb_nf4_index(-1.0f), 0);
    ck_assert_uint_eq(nb_nf4_index(INFINITY), 15);
    ck_assert_uint_eq(nb_nf4_index(-INFINITY), 0);
    ck_assert_uint_eq(nb_nf4_index(NAN), 0);
    ck_assert_uint_eq(nb_nf4_index(0.0f), 7);
    ck_assert_uint_eq(nb_nf4_index(-0.0f), 7);
}
END_TEST

START_TEST(dynamic_map_is_bnb) {
    float m[256];
    nb_dynamic_map_signed(m);
    for (int i = 1; i < 256; i++) ck_assert(m[i - 1] < m[i]);
    for (int i = 0; i < 127; i++) ck_assert(m[i] == -m[254 - i]);
    ck_assert(m[127] == 0.0f && m[255] == 1.0f);
    /* bitsandbytes 0.50.2 (torch 2.15) create_dynamic_map(signed=True) bits;
     * 18, 137 and 236 are entries where torch's fused multiply-add linspace
     * differs from a naive fp32 one */
    static const struct { int i; uint32_t bits; } ref[] = {
        {0, 0xbf7e3333},   {1, 0xbf7a999a},   {18, 0xbf3d6666}, {100, 0xbbf4bc6a}, {126, 0xb513a3b7},
        {128, 0x3513a3b7}, {137, 0x39c7e283}, {200, 0x3e6f3333}, {236, 0x3f3d6666}, {254, 0x3f7e3333},
    };
    for (size_t k = 0; k < sizeof ref / sizeof ref[0]; k++)
        ck_assert_msg(fbits(m[ref[k].i]) == ref[k].bits, "map[%d] = %a", ref[k].i, (double)m[ref[k].i]);
    /* dQuantize<0>: exact codes map to themselves, midpoints go to the pivot side */
    for (int i = 0; i < 256; i++) ck_assert_uint_eq(nb_dynmap_index(m, m[i]), (unsigned)i);
    ck_assert_uint_eq(nb_dynmap_index(m, -1.0f), 0);
    ck_assert_uint_eq(nb_dynmap_index(m, 2.0f), 255);
    ck_assert_uint_eq(nb_dynmap_index(m, NAN), 0);
}
END_TEST

/* ---- goldens ---------------------------------------------------------------- */

typedef struct {
    const unsigned char *p, *end;
} rd;

static const void *take(rd *r, size_t n) {
    ck_assert_msg((size_t)(r->end - r->p) >= n, "golden file truncated");
    const void *q = r->p;
    r->p += n;
    return q;
}

static void check_golden(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/nf4/%s.nf4g", nbt_data_dir(), name);
    size_t len;
    unsigned char *buf = nbt_read_file(path, &len);
    ck_assert_msg(buf != NULL, "missing golden %s", path);
    rd r = {buf, buf + len};
    ck_assert(memcmp(take(&r, 8), "NBNF4G1", 8) == 0);
    uint64_t n;
    uint32_t bs, dq;
    memcpy(&n, take(&r, 8), 8);
    memcpy(&bs, take(&r, 4), 4);
    memcpy(&dq, take(&r, 4), 4);
    uint64_t nb = (n + bs - 1) / bs, nn = (nb + 255) / 256;
    float *x = malloc(n * 4);
    memcpy(x, take(&r, n * 4), n * 4);
    const uint8_t *packed = take(&r, (n + 1) / 2);

    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_nf4_state st;
    ck_assert_int_eq(nb_nf4_quantize_tensor(x, n, bs, dq != 0, &st, &ctx), NB_OK);
    ck_assert_uint_eq(st.n_blocks, nb);
    for (uint64_t i = 0; i < (n + 1) / 2; i++)
        ck_assert_msg(st.packed[i] == packed[i], "%s: byte %llu: got %02x want %02x", name,
                      (unsigned long long)i, st.packed[i], packed[i]);
    if (dq) {
        ck_assert_uint_eq(st.n_nested, nn);
        ck_assert(memcmp(st.qabsmax, take(&r, nb), nb) == 0);
        ck_assert(memcmp(st.absmax2, take(&r, nn * 4), nn * 4) == 0);
        ck_assert(memcmp(&st.offset, take(&r, 4), 4) == 0);
    } else {
        ck_assert(memcmp(st.absmax, take(&r, nb * 4), nb * 4) == 0);
    }
    const unsigned char *y_ref = take(&r, n * 4);
    ck_assert(r.p == r.end);
    float *y = malloc(n * 4);
    ck_assert_int_eq(nb_nf4_dequantize_tensor(&st, y, &ctx), NB_OK);
    for (uint64_t i = 0; i < n; i++) {
        float want;
        memcpy(&want, y_ref + 4 * i, 4);
        ck_assert_msg(fbits(y[i]) == fbits(want), "%s: y[%llu] = %a want %a", name, (unsigned long long)i,
                      (double)y[i], (double)want);
        ck_assert(!isnan(y[i]));
    }
    nb_nf4_state_free(&st);
    ck_assert_ptr_null(st.packed);
    free(x);
    free(y);
    free(buf);
    nb_ctx_free(&ctx);
}

START_TEST(golden_files) {
    static const char *names[] = {"plain_bs64", "edges_bs128", "dq_bs64", "dq_bs256_odd",
                                  "dq_bs4096", "dq_const", "dq_zero"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) check_golden(names[i]);
}
END_TEST

/* ---- edge cases ---------------------------------------------------------------- */

static void fill_normal(float *x, size_t n, uint64_t seed, float scale) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) x[i] = nbt_rand_normal(&s) * scale;
}

START_TEST(zeros_denormals_partial) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    float x[131];
    memset(x, 0, sizeof x);
    for (int i = 64; i < 128; i++) x[i] = (float)(i - 96) * 1e-44f; /* subnormal block */
    x[129] = 3.0f;
    x[130] = -3.0f; /* partial last block of 3 with +-absmax */
    nb_nf4_state st;
    ck_assert_int_eq(nb_nf4_quantize_tensor(x, 131, 64, false, &st, &ctx), NB_OK);
    ck_assert_uint_eq(st.n_blocks, 3);
    /* all-zero block: absmax 0, code 0, dequantizes to (negative) zero */
    ck_assert(st.absmax[0] == 0.0f);
    for (int i = 0; i < 32; i++) ck_assert_uint_eq(st.packed[i], 0x00);
    float y[131];
    ck_assert_int_eq(nb_nf4_dequantize_tensor(&st, y, &ctx), NB_OK);
    for (int i = 0; i < 131; i++) ck_assert_msg(!isnan(y[i]) && !isinf(y[i]), "y[%d] = %g", i, (double)y[i]);
    for (int i = 0; i < 64; i++) ck_assert(y[i] == 0.0f);
    /* partial block: 0 -> code 7, +absmax -> 15, -absmax -> 0; odd tail padded with 0.0 -> 7 */
    ck_assert_uint_eq(st.packed[64], 0x7F);
    ck_assert_uint_eq(st.packed[65], 0x07);
    ck_assert(y[129] == 3.0f && y[130] == -3.0f && y[128] == 0.0f);
    nb_nf4_state_free(&st);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(nan_inf_rejected) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    float x[100];
    fill_normal(x, 100, 3, 1.0f);
    x[71] = NAN;
    nb_nf4_state st;
    ck_assert_int_eq(nb_nf4_quantize_tensor(x, 100, 64, false, &st, &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "element 71"));
    ck_assert_ptr_null(st.packed);
    x[71] = 0.0f;
    x[5] = -INFINITY;
    ck_assert_int_eq(nb_nf4_quantize_tensor(x, 100, 64, true, &st, &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "element 5"));
    x[5] = 0.0f;
    ck_assert_int_eq(nb_nf4_quantize_tensor(x, 100, 48, false, &st, &ctx), NB_ERR_INVALID);
    ck_assert_int_eq(nb_nf4_quantize_tensor(x, 100, 8192, false, &st, &ctx), NB_ERR_INVALID);
    ck_assert_int_eq(nb_nf4_quantize_tensor(x, 0, 64, false, &st, &ctx), NB_ERR_INVALID);
    /* an inconsistent state (as read from a hostile file) is refused */
    ck_assert_int_eq(nb_nf4_quantize_tensor(x, 100, 64, true, &st, &ctx), NB_OK);
    float y[100];
    st.n_blocks = 3;
    ck_assert_int_eq(nb_nf4_dequantize_tensor(&st, y, &ctx), NB_ERR_FORMAT);
    st.n_blocks = 2;
    st.n_nested = 5;
    ck_assert_int_eq(nb_nf4_dequantize_tensor(&st, y, &ctx), NB_ERR_FORMAT);
    st.n_nested = 1;
    st.blocksize = 63;
    ck_assert_int_eq(nb_nf4_dequantize_tensor(&st, y, &ctx), NB_ERR_FORMAT);
    st.blocksize = 64;
    ck_assert_int_eq(nb_nf4_dequantize_tensor(&st, y, &ctx), NB_OK);
    nb_nf4_state_free(&st);
    nb_nf4_state_free(NULL);
    nb_ctx_free(&ctx);
}
END_TEST

/* Relative RMS error over blocks of a normal tensor. */
static double rel_rmse(const float *x, const float *y, size_t n) {
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        e += (double)(x[i] - y[i]) * (x[i] - y[i]);
        s += (double)x[i] * x[i];
    }
    return sqrt(e / s);
}

START_TEST(error_bounds_and_dq) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    size_t n = 64 * 1000 + 17;
    float *x = malloc(n * 4), *y = malloc(n * 4), *y2 = malloc(n * 4);
    fill_normal(x, n, 42, 0.02f);
    nb_nf4_state st, sd;
    ck_assert_int_eq(nb_nf4_quantize_tensor(x, n, 64, false, &st, &ctx), NB_OK);
    ck_assert_int_eq(nb_nf4_quantize_tensor(x, n, 64, true, &sd, &ctx), NB_OK);
    ck_assert_int_eq(nb_nf4_dequantize_tensor(&st, y, &ctx), NB_OK);
    ck_assert_int_eq(nb_nf4_dequantize_tensor(&sd, y2, &ctx), NB_OK);
    /* the nibbles do not depend on double quantization (bnb encodes with the fp32 absmax) */
    ck_assert(memcmp(st.packed, sd.packed, (n + 1) / 2) == 0);
    /* largest half gap between neighbouring NF4 codes bounds the per-element error */
    float half_gap = 0;
    for (int i = 0; i < 15; i++) half_gap = fmaxf(half_gap, (nb_nf4_code[i + 1] - nb_nf4_code[i]) / 2);
    double dq_rel_err = 0;
    for (uint64_t b = 0; b < st.n_blocks; b++) {
        float a = st.absmax[b], ad = nb_nf4_state_absmax(&sd, b);
        dq_rel_err = fmax(dq_rel_err, fabs((double)ad - a) / a);
        for (uint64_t e = b * 64; e < (b + 1) * 64 && e < n; e++)
            ck_assert_msg(fabsf(x[e] - y[e]) <= half_gap * a * 1.000001f, "e=%llu", (unsigned long long)e);
    }
    /* 8-bit dynamic code with an offset: absmax error well under 1% here */
    ck_assert_msg(dq_rel_err < 0.01, "dq absmax rel err %g", dq_rel_err);
    double r1 = rel_rmse(x, y, n), r2 = rel_rmse(x, y2, n);
    ck_assert_msg(r1 < 0.11 && r2 < r1 * 1.01, "rmse nf4 %g nf4-dq %g", r1, r2);
    /* DQ state size: 1 byte per block + 4 per 256 blocks + offset */
    ck_assert_uint_eq(sd.n_nested, (st.n_blocks + 255) / 256);
    nb_nf4_state_free(&st);
    nb_nf4_state_free(&sd);
    free(x);
    free(y);
    free(y2);
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- GGUF block forms against the flat API -------------------------------------------- */

START_TEST(gguf_nf4_matches_flat) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    enum { R = 3, C = 256 };
    float x[R * C], y[R * C];
    fill_normal(x, R * C, 7, 0.05f);
    nb_block_nf4 blk[R * C / 64];
    ck_assert_uint_eq(nb_quantize_nf4(x, blk, R, C, NULL), sizeof blk);
    nb_nf4_state st;
    ck_assert_int_eq(nb_nf4_quantize_tensor(x, R * C, 64, false, &st, &ctx), NB_OK);
    for (int b = 0; b < R * C / 64; b++) {
        ck_assert(fbits(blk[b].d) == fbits(st.absmax[b]));
        ck_assert(memcmp(blk[b].qs, st.packed + 32 * b, 32) == 0);
    }
    float yf[R * C];
    nb_dequant_nf4(blk, y, R * C);
    ck_assert_int_eq(nb_nf4_dequantize_tensor(&st, yf, &ctx), NB_OK);
    ck_assert(memcmp(y, yf, sizeof y) == 0);
    /* the type table points at these hooks */
    const nb_type_traits *tr = nb_type_get(NB_TYPE_NF4);
    ck_assert_ptr_nonnull(tr);
    ck_assert_uint_eq(tr->block_size, 64);
    ck_assert_uint_eq(tr->type_size, sizeof(nb_block_nf4));
    if (tr->to_float) ck_assert(tr->to_float == nb_dequant_nf4);
    nb_nf4_state_free(&st);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(gguf_nf4_dq_matches_flat) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const int64_t R = 2, C = NB_NF4_DQ_SUPER;
    size_t n = (size_t)(R * C);
    float *x = malloc(n * 4), *y = malloc(n * 4), *yf = malloc(n * 4);
    uint64_t s = 5;
    for (size_t i = 0; i < n; i++) /* block scales spread over two decades */
        x[i] = nbt_rand_normal(&s) * (0.01f + (float)((i / 64) % 97) * 0.001f);
    nb_block_nf4_dq *blk = malloc(2 * sizeof *blk);
    ck_assert_uint_eq(nb_quantize_nf4_dq(x, blk, R, C, NULL), 2 * sizeof *blk);
    nb_nf4_state st;
    ck_assert_int_eq(nb_nf4_quantize_tensor(x, n, 64, true, &st, &ctx), NB_OK);
    ck_assert_uint_eq(st.n_nested, 2);
    for (int b = 0; b < 2; b++) {
        ck_assert(fbits(blk[b].offset) == fbits(st.offset));
        ck_assert(fbits(blk[b].absmax2) == fbits(st.absmax2[b]));
        ck_assert(memcmp(blk[b].qabsmax, st.qabsmax + 256 * b, 256) == 0);
        ck_assert(memcmp(blk[b].qs, st.packed + 8192 * b, 8192) == 0);
    }
    nb_dequant_nf4_dq(blk, y, (int64_t)n);
    ck_assert_int_eq(nb_nf4_dequantize_tensor(&st, yf, &ctx), NB_OK);
    ck_assert(memcmp(y, yf, n * 4) == 0);
    ck_assert_msg(rel_rmse(x, y, n) < 0.11, "rmse %g", rel_rmse(x, y, n));
    const nb_type_traits *tr = nb_type_get(NB_TYPE_NF4_DQ);
    ck_assert_ptr_nonnull(tr);
    ck_assert_uint_eq(tr->block_size, NB_NF4_DQ_SUPER);
    ck_assert_uint_eq(tr->type_size, sizeof(nb_block_nf4_dq));
    nb_nf4_state_free(&st);
    free(blk);
    free(x);
    free(y);
    free(yf);
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- importance weights ------------------------------------------------------------ */

static double weighted_err(const float *x, const float *y, const float *w, int64_t rows, int64_t cols) {
    double e = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double d = (double)x[r * cols + c] - y[r * cols + c];
            e += w[c] * d * d;
        }
    return e;
}

START_TEST(importance_lowers_weighted_error) {
    const int64_t R = 8, C = 512;
    float x[8 * 512], y0[8 * 512], y1[8 * 512], w[512];
    uint64_t s = 11;
    fill_normal(x, (size_t)(R * C), 9, 1.0f);
    for (int64_t c = 0; c < C; c++) w[c] = (float)(nbt_rand_u64(&s) % 1000) / 100.0f + 0.01f;
    w[3] = 0.0f;
    nb_block_nf4 b0[8 * 512 / 64], b1[8 * 512 / 64];
    nb_quantize_nf4(x, b0, R, C, NULL);
    nb_quantize_nf4(x, b1, R, C, w);
    nb_dequant_nf4(b0, y0, R * C);
    nb_dequant_nf4(b1, y1, R * C);
    double e0 = weighted_err(x, y0, w, R, C), e1 = weighted_err(x, y1, w, R, C);
    ck_assert_msg(e1 < e0 * 0.97, "weighted error %g (imp) vs %g (plain)", e1, e0);
    /* never worse per block: absmax is one of the candidates */
    for (int64_t b = 0; b < R * C / 64; b++) {
        const float *wb = w + (b * 64) % C;
        double p = weighted_err(x + b * 64, y0 + b * 64, wb, 1, 64);
        double q = weighted_err(x + b * 64, y1 + b * 64, wb, 1, 64);
        ck_assert_msg(q <= p * (1 + 1e-12), "block %lld: %g > %g", (long long)b, q, p);
    }
    /* DQ path too (one super-block), same file format */
    float *xd = malloc(NB_NF4_DQ_SUPER * 4), *yd0 = malloc(NB_NF4_DQ_SUPER * 4),
          *yd1 = malloc(NB_NF4_DQ_SUPER * 4), *wd = malloc(NB_NF4_DQ_SUPER * 4);
    fill_normal(xd, NB_NF4_DQ_SUPER, 13, 1.0f);
    for (int i = 0; i < NB_NF4_DQ_SUPER; i++) wd[i] = (float)(nbt_rand_u64(&s) % 1000) / 100.0f;
    nb_block_nf4_dq *bd = malloc(sizeof *bd);
    nb_quantize_nf4_dq(xd, bd, 1, NB_NF4_DQ_SUPER, NULL);
    nb_dequant_nf4_dq(bd, yd0, NB_NF4_DQ_SUPER);
    nb_quantize_nf4_dq(xd, bd, 1, NB_NF4_DQ_SUPER, wd);
    nb_dequant_nf4_dq(bd, yd1, NB_NF4_DQ_SUPER);
    double d0 = weighted_err(xd, yd0, wd, 1, NB_NF4_DQ_SUPER), d1 = weighted_err(xd, yd1, wd, 1, NB_NF4_DQ_SUPER);
    ck_assert_msg(d1 < d0 * 0.97, "dq weighted error %g (imp) vs %g (plain)", d1, d0);
    free(xd);
    free(yd0);
    free(yd1);
    free(wd);
    free(bd);
}
END_TEST

int main(void) {
    Suite *s = suite_create("quant/nf4");
    TCase *tc = tcase_create("nf4");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, thresholds_ties_go_low);
    tcase_add_test(tc, dynamic_map_is_bnb);
    tcase_add_test(tc, golden_files);
    tcase_add_test(tc, zeros_denormals_partial);
    tcase_add_test(tc, nan_inf_rejected);
    tcase_add_test(tc, error_bounds_and_dq);
    tcase_add_test(tc, gguf_nf4_matches_flat);
    tcase_add_test(tc, gguf_nf4_dq_matches_flat);
    tcase_add_test(tc, importance_lowers_weighted_error);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
