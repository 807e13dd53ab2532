/* Properties of the ggml block quantizers that hold without any oracle:
 * bounded round-trip error, exact zeros, constants and outliers, rows
 * independent of each other, re-quantizing quantized data, the importance
 * path beating plain rounding on the weighted error, no crash on NaN/Inf,
 * and agreement with core/types.h's table. Bit-exactness against ggml itself
 * is test_quants_golden.c's job. */
#include "core/types.h"
#include "quant/ggml_quants.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* requant: what quantize(dequantize(q)) gives
 *   REQ_BYTES   identical bytes
 *   REQ_VALUES  possibly other bytes, identical dequantized values
 *   REQ_CLOSE   values within REQ_CLOSE_FRAC of the first round trip's error
 *               (the scale search may settle on a neighbouring scale) */
enum { REQ_BYTES, REQ_VALUES, REQ_CLOSE };
#define REQ_CLOSE_FRAC 0.35

typedef struct {
    const char *name;
    nb_type type;
    size_t bs, ts;
    nb_quantize_fn q;
    nb_to_float_fn dq;
    double max_rel_rmse; /* round trip of N(0,1) data: sqrt(sum d^2 / sum x^2) (measured x ~1.25) */
    int uses_imp;        /* has an importance-weighted path */
    int requant;
    double outlier_tol;  /* relative error on a lone 1e4 in N(0,1) data */
    double const_tol;    /* relative error on a constant row of 0.37 */
} qtype;

static const qtype TYPES[] = {
    {"q4_0", NB_TYPE_Q4_0, 32, 18, nb_quantize_q4_0, nb_dequant_q4_0, 0.11, 1, REQ_BYTES, 2e-3, 1e-3},
    {"q4_1", NB_TYPE_Q4_1, 32, 20, nb_quantize_q4_1, nb_dequant_q4_1, 0.10, 1, REQ_BYTES, 2e-3, 1e-3},
    {"q5_0", NB_TYPE_Q5_0, 32, 22, nb_quantize_q5_0, nb_dequant_q5_0, 0.055, 1, REQ_BYTES, 2e-3, 1e-3},
    {"q5_1", NB_TYPE_Q5_1, 32, 24, nb_quantize_q5_1, nb_dequant_q5_1, 0.05, 1, REQ_BYTES, 2e-3, 1e-3},
    {"q8_0", NB_TYPE_Q8_0, 32, 34, nb_quantize_q8_0, nb_dequant_q8_0, 0.007, 0, REQ_BYTES, 2e-3, 1e-3},
    {"q8_1", NB_TYPE_Q8_1, 32, 36, nb_quantize_q8_1, nb_dequant_q8_1, 0.007, 0, REQ_VALUES, 2e-3, 1e-3},
    {"q2_K", NB_TYPE_Q2_K, 256, 84, nb_quantize_q2_k, nb_dequant_q2_k, 0.37, 1, REQ_CLOSE, 2e-3, 1e-3},
    {"q3_K", NB_TYPE_Q3_K, 256, 110, nb_quantize_q3_k, nb_dequant_q3_k, 0.19, 1, REQ_CLOSE, 2e-3, 1e-3},
    {"q4_K", NB_TYPE_Q4_K, 256, 144, nb_quantize_q4_k, nb_dequant_q4_k, 0.09, 1, REQ_CLOSE, 2e-3, 1e-3},
    {"q5_K", NB_TYPE_Q5_K, 256, 176, nb_quantize_q5_k, nb_dequant_q5_k, 0.045, 1, REQ_CLOSE, 2e-3, 1e-3},
    {"q6_K", NB_TYPE_Q6_K, 256, 210, nb_quantize_q6_k, nb_dequant_q6_k, 0.022, 1, REQ_VALUES, 2e-3, 1e-3},
    {"q8_K", NB_TYPE_Q8_K, 256, 292, nb_quantize_q8_k, nb_dequant_q8_k, 0.009, 0, REQ_CLOSE, 2e-3, 1e-3},
    {"iq4_nl", NB_TYPE_IQ4_NL, 32, 18, nb_quantize_iq4_nl, nb_dequant_iq4_nl, 0.095, 1, REQ_CLOSE, 2e-3, 1e-3},
    {"iq4_xs", NB_TYPE_IQ4_XS, 256, 136, nb_quantize_iq4_xs, nb_dequant_iq4_xs, 0.095, 1, REQ_CLOSE, 2e-3, 1e-3},
    /* ternary on Gaussian data is coarse by design; exactness on ternary data is tested below */
    {"tq1_0", NB_TYPE_TQ1_0, 256, 54, nb_quantize_tq1_0, nb_dequant_tq1_0, 0.85, 0, REQ_BYTES, 2e-3, 1e-3},
    {"tq2_0", NB_TYPE_TQ2_0, 256, 66, nb_quantize_tq2_0, nb_dequant_tq2_0, 0.85, 0, REQ_BYTES, 2e-3, 1e-3},
    /* power-of-two scale and E2M1 levels: coarse outliers and constants */
    {"mxfp4", NB_TYPE_MXFP4, 32, 17, nb_quantize_mxfp4, nb_dequant_mxfp4, 0.14, 0, REQ_BYTES, 0.25, 0.05},
};
#define NTYPES (int)(sizeof TYPES / sizeof TYPES[0])

enum { R = 32, C = 1024 };

static float *falloc(size_t n) {
    float *p = calloc(n, sizeof(float));
    ck_assert_ptr_nonnull(p);
    return p;
}
static unsigned char *qalloc(const qtype *t, size_t n) {
    unsigned char *p = calloc(n / t->bs * t->ts + 1, 1);
    ck_assert_ptr_nonnull(p);
    return p;
}
static void fill_normal(float *x, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) x[i] = nbt_rand_normal(&seed);
}
static double rel_rmse(const float *x, const float *y, size_t n) {
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)x[i] - (double)y[i];
        e += d * d;
        s += (double)x[i] * x[i];
    }
    return sqrt(e / s);
}

START_TEST(round_trip_error_bounded) {
    const qtype *t = &TYPES[_i];
    float *x = falloc(R * C), *y = falloc(R * C);
    unsigned char *q = qalloc(t, R * C);
    fill_normal(x, R * C, 42);
    ck_assert_uint_eq(t->q(x, q, R, C, NULL), (size_t)R * C / t->bs * t->ts);
    t->dq(q, y, R * C);
    const double e = rel_rmse(x, y, R * C);
    ck_assert_msg(e <= t->max_rel_rmse, "%s: relative RMSE %.5f > %.5f", t->name, e, t->max_rel_rmse);
    ck_assert_msg(e > 0, "%s: lossless on random data? the quantizer cannot be running", t->name);
    free(x);
    free(y);
    free(q);
}
END_TEST

START_TEST(zero_rows_stay_zero) {
    const qtype *t = &TYPES[_i];
    float *x = falloc(2 * C), *y = falloc(2 * C);
    unsigned char *q = qalloc(t, 2 * C);
    for (int imp = 0; imp < 2; imp++) {
        float *w = imp ? falloc(C) : NULL;
        if (w)
            for (int i = 0; i < C; i++) w[i] = 1.0f + (float)(i % 7);
        memset(q, 0xAB, (size_t)2 * C / t->bs * t->ts);
        t->q(x, q, 2, C, w);
        for (int i = 0; i < 2 * C; i++) y[i] = 1.0f;
        t->dq(q, y, 2 * C);
        for (int i = 0; i < 2 * C; i++) ck_assert_msg(y[i] == 0.0f, "%s imp=%d: element %d -> %g", t->name, imp, i, (double)y[i]);
        free(w);
    }
    free(x);
    free(y);
    free(q);
}
END_TEST

START_TEST(constant_row) {
    const qtype *t = &TYPES[_i];
    float x[512], y[512];
    unsigned char q[2048];
    for (int s = 0; s < 2; s++) {
        const float c = s ? -0.37f : 0.37f;
        for (int i = 0; i < 512; i++) x[i] = c;
        t->q(x, q, 1, 512, NULL);
        t->dq(q, y, 512);
        for (int i = 0; i < 512; i++)
            ck_assert_msg(fabs((double)y[i] - c) <= t->const_tol * fabs((double)c), "%s: constant %g -> %g at %d",
                          t->name, (double)c, (double)y[i], i);
    }
}
END_TEST

START_TEST(one_huge_outlier) {
    const qtype *t = &TYPES[_i];
    float x[512], y[512];
    unsigned char q[2048];
    fill_normal(x, 512, 7);
    x[77] = 1e4f;
    for (int imp = 0; imp < 2; imp++) {
        float w[512];
        for (int i = 0; i < 512; i++) w[i] = 1.0f;
        t->q(x, q, 1, 512, imp ? w : NULL);
        t->dq(q, y, 512);
        for (int i = 0; i < 512; i++) ck_assert_msg(isfinite(y[i]), "%s: non-finite output at %d", t->name, i);
        const double e = fabs((double)y[77] - 1e4) / 1e4;
        ck_assert_msg(e <= t->outlier_tol, "%s imp=%d: outlier 1e4 -> %g (rel err %.3g)", t->name, imp, (double)y[77], e);
        /* elements of other blocks keep their own scale: bounded by the normal round trip */
        const size_t far = 256; /* the second super-block: never shares a scale with element 77 */
        const double e2 = rel_rmse(x + far, y + far, 256);
        ck_assert_msg(e2 <= t->max_rel_rmse * 1.5, "%s: block without outlier got rel err %.4f", t->name, e2);
    }
}
END_TEST

/* Rows are independent (callers split rows across threads): n rows at once
 * equal n single-row calls, with and without importance. */
START_TEST(rows_independent) {
    const qtype *t = &TYPES[_i];
    enum { NR = 3, NC = 512 };
    float *x = falloc(NR * NC), w[NC];
    fill_normal(x, NR * NC, 99);
    for (int i = 0; i < NC; i++) w[i] = 0.5f + (float)((i * 37) % 11);
    const size_t rb = NC / t->bs * t->ts;
    unsigned char *all = qalloc(t, NR * NC), *one = qalloc(t, NC);
    for (int imp = 0; imp < 2; imp++) {
        ck_assert_uint_eq(t->q(x, all, NR, NC, imp ? w : NULL), NR * rb);
        for (int r = 0; r < NR; r++) {
            ck_assert_uint_eq(t->q(x + r * NC, one, 1, NC, imp ? w : NULL), rb);
            ck_assert_msg(memcmp(one, all + r * rb, rb) == 0, "%s imp=%d: row %d differs when quantized alone", t->name, imp, r);
        }
    }
    free(x);
    free(all);
    free(one);
}
END_TEST

START_TEST(requantize_quantized) {
    const qtype *t = &TYPES[_i];
    float *x = falloc(R * C), *y = falloc(R * C), *y2 = falloc(R * C);
    unsigned char *q = qalloc(t, R * C), *q2 = qalloc(t, R * C);
    const size_t nbytes = (size_t)R * C / t->bs * t->ts;
    fill_normal(x, R * C, 5);
    t->q(x, q, R, C, NULL);
    t->dq(q, y, R * C);
    t->q(y, q2, R, C, NULL);
    t->dq(q2, y2, R * C);
    switch (t->requant) {
    case REQ_BYTES:
        ck_assert_msg(memcmp(q, q2, nbytes) == 0, "%s: quantize(dequantize(q)) != q", t->name);
        break;
    case REQ_VALUES:
        for (int i = 0; i < R * C; i++) ck_assert_msg(y[i] == y2[i], "%s: value %d changed on re-quantization", t->name, i);
        break;
    default: {
        const double e1 = rel_rmse(x, y, R * C), e2 = rel_rmse(y, y2, R * C);
        ck_assert_msg(e2 <= REQ_CLOSE_FRAC * e1, "%s: re-quantization moved values by %.4f (first round trip %.4f)", t->name, e2, e1);
    }
    }
    free(x);
    free(y);
    free(y2);
    free(q);
    free(q2);
}
END_TEST

/* With an importance vector the imp-weighted squared error must be lower than
 * plain rounding's (ggml's weighting also has a sqrt(sigma2 + x^2) factor, so
 * this is the behaviour we rely on, not an identity). */
START_TEST(importance_helps) {
    const qtype *t = &TYPES[_i];
    float *x = falloc(R * C), *y0 = falloc(R * C), *y1 = falloc(R * C), *w = falloc(C);
    unsigned char *q = qalloc(t, R * C);
    fill_normal(x, R * C, 11);
    uint64_t s = 3;
    for (int i = 0; i < C; i++) w[i] = expf(2.0f * nbt_rand_normal(&s)); /* log-normal spread */
    t->q(x, q, R, C, NULL);
    t->dq(q, y0, R * C);
    t->q(x, q, R, C, w);
    t->dq(q, y1, R * C);
    double e0 = 0, e1 = 0;
    for (int i = 0; i < R * C; i++) {
        double d0 = (double)x[i] - y0[i], d1 = (double)x[i] - y1[i];
        e0 += w[i % C] * d0 * d0;
        e1 += w[i % C] * d1 * d1;
    }
    if (t->uses_imp) ck_assert_msg(e1 < 0.9 * e0, "%s: weighted error with imp %.4g, without %.4g", t->name, e1, e0);
    else ck_assert_msg(e1 == e0, "%s ignores imp, yet the result changed", t->name);
    free(x);
    free(y0);
    free(y1);
    free(w);
    free(q);
}
END_TEST

START_TEST(ternary_data_exact) {
    /* values in {-a, 0, a} with a representable in fp16 survive TQ1_0/TQ2_0 exactly */
    float x[512], y[512];
    unsigned char q[2048];
    uint64_t s = 17;
    for (int i = 0; i < 512; i++) x[i] = 0.75f * (float)((int)(nbt_rand_u64(&s) % 3) - 1);
    x[0] = 0.75f;
    x[300] = -0.75f;
    for (int k = 0; k < 2; k++) {
        if (k == 0) nb_quantize_tq1_0(x, q, 1, 512, NULL), nb_dequant_tq1_0(q, y, 512);
        else nb_quantize_tq2_0(x, q, 1, 512, NULL), nb_dequant_tq2_0(q, y, 512);
        for (int i = 0; i < 512; i++) ck_assert_msg(y[i] == x[i], "tq%d_0: %d: %g -> %g", k + 1, i, (double)x[i], (double)y[i]);
    }
}
END_TEST

START_TEST(non_finite_input_no_crash) {
    const qtype *t = &TYPES[_i];
    float x[512], y[512], w[512];
    unsigned char q[2048];
    for (int k = 0; k < 4; k++) {
        fill_normal(x, 512, (uint64_t)k);
        if (k & 1) x[3] = NAN, x[300] = -NAN;
        if (k & 2) x[40] = INFINITY, x[400] = -INFINITY;
        if (k == 0) for (int i = 0; i < 512; i++) x[i] = 3e38f * (i & 1 ? 1.f : -1.f); /* huge, finite */
        for (int i = 0; i < 512; i++) w[i] = k == 3 ? NAN : 1.0f;
        ck_assert_uint_eq(t->q(x, q, 1, 512, NULL), 512 / t->bs * t->ts);
        t->q(x, q, 1, 512, w);
        t->dq(q, y, 512); /* only must not crash or trip the sanitizers */
    }
}
END_TEST

START_TEST(table_agrees) {
    /* core/types.h's row for each type has our block geometry; where the table
     * wires a function, it is ours */
    const qtype *t = &TYPES[_i];
    const nb_type_traits *tr = nb_type_get(t->type);
    ck_assert_ptr_nonnull(tr);
    ck_assert_uint_eq(tr->block_size, t->bs);
    ck_assert_uint_eq(tr->type_size, t->ts);
    if (tr->to_float) ck_assert_msg(tr->to_float == t->dq, "%s: table to_float is not nb_dequant_%s", t->name, t->name);
    if (tr->quantize) ck_assert_msg(tr->quantize == t->q, "%s: table quantize is not nb_quantize_%s", t->name, t->name);
}
END_TEST

int main(void) {
    Suite *s = suite_create("quant/ggml");
    TCase *tc = tcase_create("props");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, round_trip_error_bounded, 0, NTYPES);
    tcase_add_loop_test(tc, zero_rows_stay_zero, 0, NTYPES);
    tcase_add_loop_test(tc, constant_row, 0, NTYPES);
    tcase_add_loop_test(tc, one_huge_outlier, 0, NTYPES);
    tcase_add_loop_test(tc, rows_independent, 0, NTYPES);
    tcase_add_loop_test(tc, requantize_quantized, 0, NTYPES);
    tcase_add_loop_test(tc, importance_helps, 0, NTYPES);
    tcase_add_test(tc, ternary_data_exact);
    tcase_add_loop_test(tc, non_finite_input_no_crash, 0, NTYPES);
    tcase_add_loop_test(tc, table_agrees, 0, NTYPES);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
