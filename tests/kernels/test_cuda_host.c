/* kernels/cuda without a GPU: the kernels' decoders and matmul lanes, run on the host.
 *
 * The CUDA dequantize and matmul kernels read every type through one decoder
 * per type (kernels/cuda/quant.cu), compiled for the device and the host.
 * This suite runs the host build of those decoders (nb_cuda_dequantize_host)
 * on every supported type (23) and checks them bit for bit against the type
 * table's to_float: on quantized Gaussian rows and on random bytes (every
 * code pattern, extreme scales; NaN compares equal to NaN). So the layouts
 * the GPU reads are tested on any machine with nvcc; the GPU arithmetic itself
 * is tested by test_cuda.c where a device exists.
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

/* max |a - b| / max |b| */
static double max_rel(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= num)) num = d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return den > 0 ? num / den : num;
}

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
    tcase_add_test(tc, unsupported_and_bad_shapes);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}

#endif
