/* ggml block quantizers against golden files made by two independent oracles
 * (tests/data/quants/make_golden.py): ggml's own libggml-base.so
 * (ggml_quantize_chunk, what llama-quantize runs) and PyPI gguf's numpy
 * reference code. Every comparison is byte for byte / bit for bit. */
#include "core/types.h"
#include "quant/ggml_quants.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROWS 4
#define COLS 512

typedef struct {
    const char *name;
    size_t bs, ts;
    nb_quantize_fn q;
    nb_to_float_fn dq;
    int has_blk;   /* <t>.blk + gguf dequantization exist */
    int has_gguf;  /* gguf quantizes this type */
    int has_imat;  /* ggml has an importance-weighted path */
} gtype;

static const gtype TYPES[] = {
    {"q4_0", 32, 18, nb_quantize_q4_0, nb_dequant_q4_0, 1, 1, 1},
    {"q4_1", 32, 20, nb_quantize_q4_1, nb_dequant_q4_1, 1, 1, 1},
    {"q5_0", 32, 22, nb_quantize_q5_0, nb_dequant_q5_0, 1, 1, 1},
    {"q5_1", 32, 24, nb_quantize_q5_1, nb_dequant_q5_1, 1, 1, 1},
    {"q8_0", 32, 34, nb_quantize_q8_0, nb_dequant_q8_0, 1, 1, 1},
    {"q2_K", 256, 84, nb_quantize_q2_k, nb_dequant_q2_k, 1, 0, 1},
    {"q3_K", 256, 110, nb_quantize_q3_k, nb_dequant_q3_k, 1, 0, 1},
    {"q4_K", 256, 144, nb_quantize_q4_k, nb_dequant_q4_k, 1, 0, 1},
    {"q5_K", 256, 176, nb_quantize_q5_k, nb_dequant_q5_k, 1, 0, 1},
    {"q6_K", 256, 210, nb_quantize_q6_k, nb_dequant_q6_k, 1, 0, 1},
    {"q8_K", 256, 292, nb_quantize_q8_k, nb_dequant_q8_k, 0, 0, 0},
    {"iq4_nl", 32, 18, nb_quantize_iq4_nl, nb_dequant_iq4_nl, 1, 0, 1},
    {"iq4_xs", 256, 136, nb_quantize_iq4_xs, nb_dequant_iq4_xs, 1, 0, 1},
    {"tq1_0", 256, 54, nb_quantize_tq1_0, nb_dequant_tq1_0, 1, 1, 1},
    {"tq2_0", 256, 66, nb_quantize_tq2_0, nb_dequant_tq2_0, 1, 1, 1},
    {"mxfp4", 32, 17, nb_quantize_mxfp4, nb_dequant_mxfp4, 1, 1, 1},
};
#define NTYPES (int)(sizeof TYPES / sizeof TYPES[0])

static unsigned char *load(const char *file, size_t *n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/quants/%s", nbt_data_dir(), file);
    unsigned char *b = nbt_read_file(path, n);
    ck_assert_msg(b != NULL, "missing golden file %s (run tests/data/quants/make_golden.py)", path);
    return b;
}

static void expect_same(const gtype *t, const char *what, const unsigned char *got, const unsigned char *want,
                        size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            ck_abort_msg("%s %s: byte %zu (block %zu, byte %zu in block) is %02x, oracle has %02x", t->name, what, i,
                         i / t->ts, i % t->ts, got[i], want[i]);
        }
    }
}

static float *g_x, *g_imp;

static void setup(void) {
    size_t n;
    g_x = (float *)load("input.f32", &n);
    ck_assert_uint_eq(n, sizeof(float) * ROWS * COLS);
    g_imp = (float *)load("imatrix.f32", &n);
    ck_assert_uint_eq(n, sizeof(float) * COLS);
}

static void teardown(void) {
    free(g_x);
    free(g_imp);
}

/* imp == NULL: equals ggml_quantize_chunk (and gguf where it quantizes). */
START_TEST(quantize_plain) {
    const gtype *t = &TYPES[_i];
    const size_t bytes = ROWS * COLS / t->bs * t->ts;
    unsigned char *got = calloc(1, bytes);
    ck_assert_ptr_nonnull(got);
    ck_assert_uint_eq(t->q(g_x, got, ROWS, COLS, NULL), bytes);
    char f[64];
    size_t n;
    snprintf(f, sizeof f, "%s.ggml.bin", t->name);
    unsigned char *want = load(f, &n);
    ck_assert_uint_eq(n, bytes);
    expect_same(t, "vs ggml_quantize_chunk", got, want, bytes);
    free(want);
    if (t->has_gguf) {
        snprintf(f, sizeof f, "%s.gguf.bin", t->name);
        want = load(f, &n);
        ck_assert_uint_eq(n, bytes);
        expect_same(t, "vs gguf.quants.quantize", got, want, bytes);
        free(want);
    }
    free(got);
}
END_TEST

/* imp != NULL: equals ggml_quantize_chunk with the same imatrix. */
START_TEST(quantize_imatrix) {
    const gtype *t = &TYPES[_i];
    if (!t->has_imat) return;
    const size_t bytes = ROWS * COLS / t->bs * t->ts;
    unsigned char *got = calloc(1, bytes);
    ck_assert_ptr_nonnull(got);
    ck_assert_uint_eq(t->q(g_x, got, ROWS, COLS, g_imp), bytes);
    char f[64];
    size_t n;
    snprintf(f, sizeof f, "%s.ggml-imat.bin", t->name);
    unsigned char *want = load(f, &n);
    ck_assert_uint_eq(n, bytes);
    expect_same(t, "with imatrix vs ggml_quantize_chunk", got, want, bytes);
    free(want);
    free(got);
}
END_TEST

/* Dequantization of random blocks equals gguf's numpy dequantizer bit for bit. */
START_TEST(dequant_random_blocks) {
    const gtype *t = &TYPES[_i];
    if (!t->has_blk) return;
    char f[64];
    size_t nblk, nref;
    snprintf(f, sizeof f, "%s.blk", t->name);
    unsigned char *blk = load(f, &nblk);
    snprintf(f, sizeof f, "%s.blk.gguf.f32", t->name);
    float *ref = (float *)load(f, &nref);
    ck_assert_uint_eq(nblk % t->ts, 0);
    const size_t n = nblk / t->ts * t->bs;
    ck_assert_uint_eq(nref, n * sizeof(float));
    float *got = malloc(n * sizeof(float));
    ck_assert_ptr_nonnull(got);
    t->dq(blk, got, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        uint32_t a, b;
        memcpy(&a, &got[i], 4);
        memcpy(&b, &ref[i], 4);
        ck_assert_msg(a == b, "%s: element %zu (block %zu) = %.9g (%08x), gguf has %.9g (%08x)", t->name, i,
                      i / t->bs, (double)got[i], a, (double)ref[i], b);
    }
    free(got);
    free(ref);
    free(blk);
}
END_TEST

int main(void) {
    Suite *s = suite_create("quant/golden");
    TCase *tc = tcase_create("golden");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, quantize_plain, 0, NTYPES);
    tcase_add_loop_test(tc, quantize_imatrix, 0, NTYPES);
    tcase_add_loop_test(tc, dequant_random_blocks, 0, NTYPES);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
