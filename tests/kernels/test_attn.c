/* kernels/cpu/attn.h: the attention row kernels of every ISA table this CPU
 * runs give the generic C's bits (the canonical order of attn.h), for F32,
 * F16 and Q8_0 cache rows, 1 to 16 queries (the SIMD kernels take 4 at a
 * time), head sizes with and without an hd % 8 tail, strided scores and
 * weights, and extreme values (large magnitudes, Q8_0 codes of +-127). The
 * generic kernels themselves are checked against a plain loop written here
 * in the same order. (The engine's use of them: tests/engine/test_engine.c.) */
#include "core/fp.h"
#include "kernels/cpu/attn.h"
#include "quant/ggml_quants.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* NPR rows ROWB bytes apart (odd: the SIMD q.k takes 2 rows at a time);
 * scores and weights LD apart */
enum { HDMAX = 256, NQ = 16, NPR = 5, ROWB = HDMAX * 4 + 8, LD = 7 };

static const nb_type k_types[] = {NB_TYPE_F32, NB_TYPE_F16, NB_TYPE_Q8_0};

/* a row of hd values of type t from floats */
static size_t put_row(nb_type t, const float *x, int hd, unsigned char *dst) {
    if (t == NB_TYPE_F16) {
        nb_f32_to_f16_n(x, (uint16_t *)dst, (size_t)hd);
        return (size_t)hd * 2;
    }
    if (t == NB_TYPE_Q8_0) {
        nb_quantize_q8_0(x, dst, 1, hd, NULL);
        return (size_t)hd / 32 * sizeof(nb_block_q8_0);
    }
    memcpy(dst, x, (size_t)hd * sizeof(float));
    return (size_t)hd * sizeof(float);
}

static float rnd(uint64_t *seed, int i) { return nbt_rand_normal(seed) * (i % 11 == 0 ? 300.f : 1.f); }

/* the documented order, written out for one query and one row */
static float plain_qk(nb_type t, int hd, const unsigned char *k, const unsigned char *q) {
    if (t == NB_TYPE_Q8_0) {
        const nb_block_q8_0 *a = (const nb_block_q8_0 *)q, *b = (const nb_block_q8_0 *)k;
        float r = 0.f;
        for (int i = 0; i < hd / 32; i++) {
            int32_t is = 0;
            for (int j = 0; j < 32; j++) is += a[i].qs[j] * b[i].qs[j];
            r += (float)is * (nb_f16_to_f32(a[i].d) * nb_f16_to_f32(b[i].d));
        }
        return r;
    }
    float kf[HDMAX], s[8] = {0};
    if (t == NB_TYPE_F16) nb_f16_to_f32_n((const uint16_t *)k, kf, (size_t)hd);
    else memcpy(kf, k, (size_t)hd * sizeof(float));
    const float *qf = (const float *)q;
    int d = 0;
    for (; d + 8 <= hd; d += 8)
        for (int j = 0; j < 8; j++) s[j] += qf[d + j] * kf[d + j];
    float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; d < hd; d++) r += qf[d] * kf[d];
    return r;
}

START_TEST(attn_kernels_agree) {
    static const int hds[] = {256, 64, 32, 36, 8, 3};
    static const char *const isas[] = {"generic", "avx2", "avx512", "neon"};
    uint64_t seed = 7;
    static unsigned char krows[NPR * ROWB], vrows[NPR * ROWB], qrows[NQ][HDMAX * 4];
    static float out_g[NQ * HDMAX], out_k[NQ * HDMAX], w[NQ * LD], s_g[NQ * LD], s_k[NQ * LD];
    int compared = 0;
    for (size_t ti = 0; ti < 3; ti++)
        for (size_t hi = 0; hi < sizeof hds / sizeof *hds; hi++) {
            const nb_type t = k_types[ti];
            const int hd = hds[hi];
            if (t == NB_TYPE_Q8_0 && hd % 32) continue;
            float x[HDMAX];
            for (int p = 0; p < NPR; p++) {
                for (int d = 0; d < hd; d++) x[d] = rnd(&seed, d + p);
                put_row(t, x, hd, krows + p * ROWB);
                for (int d = 0; d < hd; d++) x[d] = rnd(&seed, d + 1);
                put_row(t, x, hd, vrows + p * ROWB);
            }
            for (int i = 0; i < NQ; i++) {
                for (int d = 0; d < hd; d++) x[d] = rnd(&seed, d + i);
                if (t == NB_TYPE_F16) /* the engine rounds F16-cache queries to F16 values */
                    for (int d = 0; d < hd; d++) x[d] = nb_f16_to_f32(nb_f32_to_f16(x[d]));
                put_row(t == NB_TYPE_Q8_0 ? t : NB_TYPE_F32, x, hd, qrows[i]); /* rows HDMAX * 4 bytes apart */
            }
            for (int i = 0; i < NQ * LD; i++) w[i] = nbt_rand_normal(&seed);
            nb_attn_kernels g;
            ck_assert(nb_attn_kernels_isa("generic", t, &g));
            for (size_t k = 0; k < 4; k++) {
                nb_attn_kernels kk;
                if (!nb_attn_kernels_isa(isas[k], t, &kk)) continue;
                for (int nq = 1; nq <= NQ; nq++) {
                    memset(s_g, 0, sizeof s_g);
                    memset(s_k, 0, sizeof s_k);
                    g.qk(hd, krows, ROWB, NPR, qrows, sizeof qrows[0], nq, s_g, LD);
                    kk.qk(hd, krows, ROWB, NPR, qrows, sizeof qrows[0], nq, s_k, LD);
                    ck_assert_msg(memcmp(s_g, s_k, sizeof s_g) == 0, "%s %s hd %d nq %d: q.k differs from generic",
                                  isas[k], nb_type_name(t), hd, nq);
                    for (int i = 0; i < nq; i++)
                        for (int p = 0; p < NPR; p++) {
                            const float pl = plain_qk(t, hd, krows + p * ROWB, qrows[i]);
                            ck_assert_msg(memcmp(&pl, &s_g[i * LD + p], sizeof pl) == 0,
                                          "%s hd %d: generic q.k order", nb_type_name(t), hd);
                        }
                    for (int i = 0; i < NQ * HDMAX; i++) out_g[i] = out_k[i] = (float)(i % 13) - 6.f;
                    g.wv(hd, vrows, ROWB, NPR, w, LD, nq, out_g, HDMAX);
                    kk.wv(hd, vrows, ROWB, NPR, w, LD, nq, out_k, HDMAX);
                    ck_assert_msg(memcmp(out_g, out_k, sizeof out_g) == 0,
                                  "%s %s hd %d nq %d: w.v differs from generic",
                                  isas[k], nb_type_name(t), hd, nq);
                    compared++;
                }
            }
        }
    ck_assert_int_gt(compared, 0);
    printf("attn_kernels_agree: %d comparisons\n", compared);
}
END_TEST

START_TEST(attn_kernels_lookup) {
    nb_attn_kernels k;
    for (size_t ti = 0; ti < 3; ti++) ck_assert(nb_attn_kernels_best(k_types[ti], &k) && k.qk && k.wv);
    ck_assert(!nb_attn_kernels_best(NB_TYPE_Q4_0, &k));
    ck_assert(!nb_attn_kernels_isa("no-such-isa", NB_TYPE_F32, &k));
}
END_TEST

int main(void) {
    Suite *s = suite_create("kernels/attn");
    TCase *tc = tcase_create("attn");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, attn_kernels_agree);
    tcase_add_test(tc, attn_kernels_lookup);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
