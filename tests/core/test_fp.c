/* FP16/BF16 conversions: exact, RNE, NaN/Inf/subnormals; bulk == scalar. */
#include "core/expf.h"
#include "core/fp.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

START_TEST(f16_roundtrip_all) {
    /* every half value survives half -> float -> half (NaNs: quiet and still NaN) */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = nb_f16_to_f32((uint16_t)h);
        uint16_t back = nb_f32_to_f16(f);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            ck_assert_msg(isnan(f), "h=%04x", h);
            ck_assert_uint_eq(back & 0xfe00, (h & 0x8000) | 0x7e00);
        } else {
            ck_assert_msg(back == h, "h=%04x back=%04x", h, back);
        }
    }
}
END_TEST

#if defined(__FLT16_MAX__)
START_TEST(f32_to_f16_matches_compiler) {
    /* the compiler's _Float16 conversion (libgcc soft-float, RNE) is an independent oracle */
    uint64_t s = 1;
    for (int i = 0; i < 300000; i++) {
        uint32_t u = (uint32_t)nbt_rand_u64(&s);
        if (i & 1) u = (u & 0x8fffffffu) | 0x30000000u; /* bias towards the half range */
        float f = u2f(u);
        if (isnan(f)) continue;
        _Float16 r = (_Float16)f;
        uint16_t ref;
        memcpy(&ref, &r, 2);
        ck_assert_msg(nb_f32_to_f16(f) == ref, "f=%08x ours=%04x ref=%04x", u, nb_f32_to_f16(f), ref);
        ck_assert(nb_f16_to_f32(ref) == (float)r);
    }
}
END_TEST
#endif

START_TEST(f16_specials) {
    ck_assert_uint_eq(nb_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(nb_f32_to_f16(65519.99f), 0x7bff);
    ck_assert_uint_eq(nb_f32_to_f16(65520.0f), 0x7c00); /* tie rounds to even = inf */
    ck_assert_uint_eq(nb_f32_to_f16(INFINITY), 0x7c00);
    ck_assert_uint_eq(nb_f32_to_f16(-INFINITY), 0xfc00);
    ck_assert_uint_eq(nb_f32_to_f16(0x1p-24f), 0x0001);  /* smallest subnormal */
    ck_assert_uint_eq(nb_f32_to_f16(0x1p-25f), 0x0000);  /* tie -> even (0) */
    ck_assert_uint_eq(nb_f32_to_f16(0x1.8p-25f), 0x0001);
    ck_assert_uint_eq(nb_f32_to_f16(-0.0f), 0x8000);
    ck_assert_uint_eq(nb_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);              /* tie, even stays */
    ck_assert_uint_eq(nb_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);          /* tie, odd rounds up */
    ck_assert(isnan(nb_f16_to_f32(nb_f32_to_f16(NAN))));
}
END_TEST

START_TEST(bf16_exact) {
    ck_assert_uint_eq(nb_f32_to_bf16(u2f(0x3f808000u)), 0x3f80); /* tie to even */
    ck_assert_uint_eq(nb_f32_to_bf16(u2f(0x3f818000u)), 0x3f82);
    ck_assert_uint_eq(nb_f32_to_bf16(u2f(0x3f808001u)), 0x3f81);
    ck_assert_uint_eq(nb_f32_to_bf16(u2f(0x7f7fffffu)), 0x7f80); /* overflow to inf */
    ck_assert_uint_eq(nb_f32_to_bf16(u2f(0x00000001u)), 0x0000); /* tiny subnormal */
    ck_assert_uint_eq(nb_f32_to_bf16(u2f(0x00018000u)), 0x0002); /* subnormal tie to even */
    ck_assert_uint_eq(nb_f32_to_bf16(INFINITY), 0x7f80);
    uint16_t n = nb_f32_to_bf16(u2f(0x7f800001u)); /* signalling NaN stays NaN */
    ck_assert(isnan(nb_bf16_to_f32(n)));
    for (uint32_t h = 0; h < 65536; h++) {
        float f = nb_bf16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        ck_assert_uint_eq(nb_f32_to_bf16(f), h);
        ck_assert_uint_eq(f2u(f), h << 16);
    }
}
END_TEST

START_TEST(bulk_equals_scalar) {
    enum { N = 100003 };
    float *f = malloc(N * 4), *g = malloc(N * 4);
    uint16_t *h = malloc(N * 2), *b = malloc(N * 2);
    uint64_t s = 7;
    for (int i = 0; i < N; i++) f[i] = u2f((uint32_t)nbt_rand_u64(&s));
    f[0] = NAN; f[1] = INFINITY; f[2] = -0.0f; f[3] = 0x1p-20f; f[4] = 65520.0f; f[5] = u2f(0x7f800001u);
    nb_f32_to_f16_n(f, h, N);
    nb_f32_to_bf16_n(f, b, N);
    for (int i = 0; i < N; i++) {
        ck_assert_msg(h[i] == nb_f32_to_f16(f[i]), "f16 i=%d %08x", i, f2u(f[i]));
        ck_assert_msg(b[i] == nb_f32_to_bf16(f[i]), "bf16 i=%d %08x", i, f2u(f[i]));
    }
    for (int i = 0; i < N; i++) h[i] = (uint16_t)nbt_rand_u64(&s);
    nb_f16_to_f32_n(h, g, N);
    for (int i = 0; i < N; i++) {
        float r = nb_f16_to_f32(h[i]);
        ck_assert_msg(f2u(g[i]) == f2u(r), "f16->f32 i=%d h=%04x", i, h[i]);
    }
    nb_bf16_to_f32_n(h, g, N);
    for (int i = 0; i < N; i++) ck_assert_uint_eq(f2u(g[i]), (uint32_t)h[i] << 16);
    /* rounding through F16 in place: the scalar pair's bits */
    memcpy(g, f, N * 4);
    nb_f16_round_n(g, N);
    for (int i = 0; i < N; i++)
        ck_assert_msg(f2u(g[i]) == f2u(nb_f16_to_f32(nb_f32_to_f16(f[i]))), "f16 round i=%d %08x", i, f2u(f[i]));
    free(f); free(g); free(h); free(b);
}
END_TEST

/* nb_expf: the bulk form equals the scalar one on every 61st float (all
 * exponents and signs, NaNs, infinities, the over/underflow edges), with a
 * shift; both equal glibc's expf on x86-64 (bench/expf_check.c checks every
 * float); nb_max_n skips NaNs. */
START_TEST(expf_exact) {
    enum { B = 1024 };
    static float x[B], y[B];
    uint64_t n = 0, libm_bad = 0;
    size_t m = 0;
    const float edges[] = {0x1.62e42ep6f, 0x1.62e430p6f, -0x1.9fe368p6f, -0x1.9fe36ap6f, -88.f, 88.f, -0.f, 0.f,
                           INFINITY, -INFINITY, NAN};
    for (uint64_t u = 0; u <= 0xffffffffu + (uint64_t)(sizeof edges / sizeof edges[0]); u += (u <= 0xffffffffu ? 61 : 1)) {
        if (u <= 0xffffffffu) {
            const uint32_t v = (uint32_t)u;
            memcpy(&x[m++], &v, 4);
        } else {
            x[m++] = edges[u - 0xffffffffu - 1];
        }
        const bool last = u + 61 > 0xffffffffu + (uint64_t)(sizeof edges / sizeof edges[0]);
        if (m < B && !last) continue;
        for (int sh = 0; sh < 2; sh++) {
            const float shift = sh ? 1.5f : 0.f;
            nb_expf_shift_n(x, shift, y, m);
            for (size_t i = 0; i < m; i++) {
                const float want = nb_expf(x[i] - shift);
                /* a plain test: each ck_assert reports to the parent process */
                if (!((isnan(want) && isnan(y[i])) || !memcmp(&want, &y[i], 4)))
                    ck_abort_msg("expf(%a - %g): bulk %a, scalar %a", x[i], shift, y[i], want);
            }
        }
#if defined(__GLIBC__) && defined(__x86_64__)
        for (size_t i = 0; i < m; i++) {
            const float a = nb_expf(x[i]), b = expf(x[i]);
            if (!((isnan(a) && isnan(b)) || !memcmp(&a, &b, 4))) libm_bad++;
        }
#endif
        n += m;
        m = 0;
    }
    ck_assert_uint_gt(n, 70000000);
    ck_assert_msg(libm_bad == 0, "nb_expf differs from glibc's expf on %llu of %llu inputs", (unsigned long long)libm_bad,
                  (unsigned long long)n);
    const float v[] = {NAN, -3.f, NAN, 2.5f, -INFINITY, 2.5f, 1.f, NAN, 0.f, -7.f, 1e30f, NAN, 0.f, 0.f, 0.f, 0.f, 3.f, NAN, 4.f};
    ck_assert(nb_max_n(v, 19) == 1e30f);
    ck_assert(nb_max_n(v, 4) == 2.5f);
    const float nans[] = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    ck_assert(nb_max_n(nans, 17) == -INFINITY && nb_max_n(nans, 0) == -INFINITY);
}
END_TEST

START_TEST(fp8) {
    ck_assert(nb_f8e4m3_to_f32(0x38) == 1.0f);
    ck_assert(nb_f8e4m3_to_f32(0x7e) == 448.0f);
    ck_assert(isnan(nb_f8e4m3_to_f32(0x7f)));
    ck_assert(nb_f8e4m3_to_f32(0x01) == 0x1p-9f);
    ck_assert(nb_f8e5m2_to_f32(0x3c) == 1.0f);
    ck_assert(isinf(nb_f8e5m2_to_f32(0x7c)));
}
END_TEST

int main(void) {
    Suite *s = suite_create("core/fp");
    TCase *tc = tcase_create("fp");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, f16_roundtrip_all);
#if defined(__FLT16_MAX__)
    tcase_add_test(tc, f32_to_f16_matches_compiler);
#endif
    tcase_add_test(tc, f16_specials);
    tcase_add_test(tc, bf16_exact);
    tcase_add_test(tc, bulk_equals_scalar);
    tcase_add_test(tc, fp8);
    tcase_add_test(tc, expf_exact);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
