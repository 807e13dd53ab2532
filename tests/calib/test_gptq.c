/* tests/calib/test_gptq.c — GPTQ on one layer:
 *   - the grid machinery (setting codes inside packed blocks) re-encodes
 *     quantizer output exactly for every supported type;
 *   - agreement with the independent numpy oracle (tests/data/gptq, files *.gqc, or
 *     the directory in NB_GPTQ_CASES) to 1e-5;
 *   - with a diagonal Hessian there is no error feedback: nearest-grid rounding;
 *   - GPTQ's layer output error is below plain rounding's on correlated inputs
 *     for every 4-bit type, with and without act-order;
 *   - dequantized output == the packed bytes decoded; 1, 2 and 3 threads give
 *     identical Hessians and bytes (tiles spanning several row tiles and
 *     Hessian tiles); a shared factor gives the bytes of nb_gptq_quantize;
 *   - nb_linalg_chol_inv_upper: UᵀU A = I, U upper;
 *   - dead columns, Hessian accumulation, dampening retries, errors. */
#include "calib/gptq.h"
#include "calib/linalg.h"
#include "core/fp.h"
#include "testutil.h"

#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const nb_type k_all[] = {NB_TYPE_Q4_0, NB_TYPE_Q4_1, NB_TYPE_Q5_0, NB_TYPE_Q5_1, NB_TYPE_Q8_0,
                                NB_TYPE_Q2_K, NB_TYPE_Q3_K, NB_TYPE_Q4_K, NB_TYPE_Q5_K, NB_TYPE_Q6_K,
                                NB_TYPE_IQ4_NL, NB_TYPE_IQ4_XS, NB_TYPE_NF4, NB_TYPE_INT4_SYM_G32,
                                NB_TYPE_INT4_SYM_G64, NB_TYPE_INT4_SYM_G128, NB_TYPE_INT4_ASYM_G32,
                                NB_TYPE_INT4_ASYM_G64, NB_TYPE_INT4_ASYM_G128};
#define N_ALL (sizeof k_all / sizeof k_all[0])

static void fill(float *x, size_t n, uint64_t seed, float sc) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) x[i] = nbt_rand_normal(&s) * sc;
}

/* Correlated activations with uneven column scales: X = Z (I + M/sqrt(n)) diag(s). */
static float *make_x(int64_t ntok, int64_t n, uint64_t seed) {
    float *z = malloc((size_t)(ntok * n) * sizeof(float)), *m = malloc((size_t)(n * n) * sizeof(float));
    float *x = calloc((size_t)(ntok * n), sizeof(float)), *s = malloc((size_t)n * sizeof(float));
    fill(z, (size_t)(ntok * n), seed, 1);
    fill(m, (size_t)(n * n), seed + 1, 1.0f / sqrtf((float)n));
    fill(s, (size_t)n, seed + 2, 1);
    for (int64_t i = 0; i < n; i++) { m[i * n + i] += 1; s[i] = expf(s[i]); }
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t k = 0; k < n; k++)
            for (int64_t j = 0; j < n; j++) x[t * n + j] += z[t * n + k] * m[k * n + j];
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t j = 0; j < n; j++) x[t * n + j] *= s[j];
    free(z); free(m); free(s);
    return x;
}

static double *hessian_of(const float *x, int64_t ntok, int64_t n, nb_ctx *ctx) {
    nb_hessian h;
    ck_assert_int_eq(nb_hessian_init(&h, n, ctx), NB_OK);
    ck_assert_int_eq(nb_hessian_add(&h, x, ntok / 2, "t", ctx), NB_OK);
    ck_assert_int_eq(nb_hessian_add(&h, x + (ntok / 2) * n, ntok - ntok / 2, "t", ctx), NB_OK);
    double *H = malloc((size_t)(n * n) * sizeof(double));
    nb_hessian_finish(&h, H);
    nb_hessian_free(&h);
    return H;
}

/* ||X (W - Q)ᵀ||² / ntok: the layer output error GPTQ minimises. */
static double out_err(const float *x, int64_t ntok, const float *w, const float *q, int64_t rows, int64_t n) {
    double e = 0;
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t r = 0; r < rows; r++) {
            double s = 0;
            for (int64_t j = 0; j < n; j++) s += (double)x[t * n + j] * ((double)w[r * n + j] - q[r * n + j]);
            e += s * s;
        }
    return e / (double)ntok;
}

START_TEST(set_code_reencodes_quantizer_output) {
    for (size_t ti = 0; ti < N_ALL; ti++) {
        nb_type t = k_all[ti];
        ck_assert_msg(nb_gptq_supported(t), "%s", nb_type_name(t));
        const nb_type_traits *tr = nb_type_get(t);
        const int B = (int)tr->block_size, L = nb_gptq_levels(t), sub = nb_gptq_sub(t);
        ck_assert_int_gt(L, 1);
        ck_assert_int_eq(B % sub, 0);
        float x[512], y[512], v[512];
        fill(x, 512, 77 + ti, 0.3f);
        x[5] = 2.0f; /* an outlier */
        unsigned char blk[1024], tmp[1024], re[1024];
        for (int b0 = 0; b0 + B <= 512; b0 += B) {
            tr->quantize(x + b0, blk, 1, B, NULL);
            tr->to_float(blk, y, B);
            /* scrambled copy: every code then set from the grid */
            memcpy(re, blk, tr->type_size);
            for (int p = 0; p < B; p++) nb_gptq_set_code(t, re, p, (p * 7 + 3) % L);
            float *grid = malloc((size_t)L * (size_t)B * sizeof(float));
            for (int lv = 0; lv < L; lv++) {
                memcpy(tmp, blk, tr->type_size);
                for (int p = 0; p < B; p++) nb_gptq_set_code(t, tmp, p, lv);
                tr->to_float(tmp, v, B);
                for (int p = 0; p < B; p++) {
                    grid[lv * B + p] = v[p];
                    /* a sub-block shares its grid */
                    ck_assert_msg(v[p] == v[p - p % sub], "%s: grid differs inside sub-block", nb_type_name(t));
                }
            }
            for (int p = 0; p < B; p++) {
                int found = -1;
                for (int lv = 0; lv < L && found < 0; lv++)
                    if (grid[lv * B + p] == y[p]) found = lv;
                ck_assert_msg(found >= 0, "%s: value %g at %d is not on its grid", nb_type_name(t), (double)y[p], p);
                nb_gptq_set_code(t, re, p, found);
            }
            tr->to_float(re, v, B);
            for (int p = 0; p < B; p++) ck_assert(v[p] == y[p]);
            /* with distinct grid values the code is unique: bytes must match */
            bool distinct = true;
            for (int p = 0; p < B && distinct; p++)
                for (int a = 0; a < L && distinct; a++)
                    for (int c = a + 1; c < L; c++)
                        if (grid[a * B + p] == grid[c * B + p]) { distinct = false; break; }
            if (distinct) ck_assert_msg(!memcmp(re, blk, tr->type_size), "%s: re-encoded bytes differ", nb_type_name(t));
            free(grid);
        }
    }
}
END_TEST

/* ---- golden cases from the numpy oracle -------------------------------------------------------------- */

static int run_golden(const char *path, nb_ctx *ctx) {
    size_t n;
    unsigned char *b = nbt_read_file(path, &n);
    ck_assert_ptr_nonnull(b);
    ck_assert_mem_eq(b, "NBGQ", 4);
    char tname[25] = {0};
    memcpy(tname, b + 8, 24);
    int64_t rows, cols, ntok;
    int32_t act, stat, block;
    double damp, loss_want;
    size_t o = 32;
    memcpy(&rows, b + o, 8); memcpy(&cols, b + o + 8, 8); memcpy(&ntok, b + o + 16, 8);
    memcpy(&act, b + o + 24, 4); memcpy(&stat, b + o + 28, 4); memcpy(&block, b + o + 32, 4);
    memcpy(&damp, b + o + 36, 8);
    o += 44;
    ck_assert_uint_eq(n, o + (size_t)(rows * cols) * 8 + (size_t)(ntok * cols) * 2 + 8);
    float *w = malloc((size_t)(rows * cols) * sizeof(float)), *x = malloc((size_t)(ntok * cols) * sizeof(float));
    float *want = malloc((size_t)(rows * cols) * sizeof(float)), *got = malloc((size_t)(rows * cols) * sizeof(float));
    memcpy(w, b + o, (size_t)(rows * cols) * 4);
    o += (size_t)(rows * cols) * 4;
    for (int64_t k = 0; k < ntok * cols; k++) {
        uint16_t h;
        memcpy(&h, b + o + 2 * k, 2);
        x[k] = nb_f16_to_f32(h);
    }
    o += (size_t)(ntok * cols) * 2;
    memcpy(want, b + o, (size_t)(rows * cols) * 4);
    memcpy(&loss_want, b + o + (size_t)(rows * cols) * 4, 8);
    free(b);
    nb_type t;
    ck_assert_msg(nb_type_from_name(tname, &t), "%s: type %s", path, tname);
    double *H = hessian_of(x, ntok, cols, ctx);
    uint64_t rb;
    ck_assert_int_eq(nb_type_row_bytes(t, (uint64_t)cols, &rb, ctx, "t"), NB_OK);
    unsigned char *dst = malloc(rb * (uint64_t)rows);
    nb_gptq_opts go = {.damp = damp, .block = block, .act_order = act != 0, .static_groups = stat != 0};
    nb_gptq_result res;
    ck_assert_msg(nb_gptq_quantize(t, w, rows, cols, H, &go, dst, got, &res, path, ctx) == NB_OK, "%s",
                  nb_errmsg(ctx));
    double maxd = 0;
    int64_t bad = 0;
    for (int64_t k = 0; k < rows * cols; k++) {
        double d = fabs((double)got[k] - want[k]);
        if (d > maxd) maxd = d;
        bad += d > 1e-5;
    }
    printf("gptq oracle %s (%s): max |C - numpy| = %.3g, loss %.6g vs %.6g\n", path, tname, maxd, res.loss, loss_want);
    ck_assert_msg(maxd <= 1e-5, "%s: %lld of %lld values differ from the numpy oracle, max %g", path, (long long)bad,
                  (long long)(rows * cols), maxd);
    ck_assert_msg(fabs(res.loss - loss_want) <= 1e-6 * fabs(loss_want) + 1e-9, "%s: loss %.10g vs oracle %.10g", path,
                  res.loss, loss_want);
    free(w); free(x); free(want); free(got); free(H); free(dst);
    return 1;
}

START_TEST(agrees_with_numpy_oracle) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *env = getenv("NB_GPTQ_CASES");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/gptq", nbt_data_dir());
    if (env && *env) snprintf(dir, sizeof dir, "%s", env);
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "%s", dir);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".gqc")) continue;
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        n += run_golden(p, &ctx);
    }
    closedir(d);
    ck_assert_int_ge(n, 5);
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- properties ---------------------------------------------------------------------------------------- */

START_TEST(diagonal_hessian_is_nearest_rounding) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const int64_t rows = 6, n = 512;
    float *w = malloc((size_t)(rows * n) * sizeof(float)), *q = malloc((size_t)(rows * n) * sizeof(float));
    fill(w, (size_t)(rows * n), 5, 1);
    double *H = calloc((size_t)(n * n), sizeof(double));
    for (int64_t i = 0; i < n; i++) H[i * n + i] = 3.0;
    nb_type ts[] = {NB_TYPE_INT4_SYM_G128, NB_TYPE_Q4_K, NB_TYPE_IQ4_NL, NB_TYPE_Q6_K};
    for (size_t k = 0; k < 4; k++) {
        const nb_type_traits *tr = nb_type_get(ts[k]);
        uint64_t rb;
        ck_assert_int_eq(nb_type_row_bytes(ts[k], n, &rb, &ctx, "t"), NB_OK);
        unsigned char *dst = malloc(rb * rows), *rtn = malloc(rb * rows);
        ck_assert_int_eq(nb_gptq_quantize(ts[k], w, rows, n, H, NULL, dst, q, NULL, "diag", &ctx), NB_OK);
        tr->quantize(w, rtn, rows, n, NULL);
        /* same scales as plain rounding; every value the nearest on its grid; few code differences (ties) */
        float *y = malloc((size_t)(rows * n) * sizeof(float));
        tr->to_float(rtn, y, rows * n);
        int64_t diff = 0;
        for (int64_t e = 0; e < rows * n; e++) {
            diff += q[e] != y[e];
            ck_assert(fabsf(w[e] - q[e]) <= fabsf(w[e] - y[e]) + 1e-6f);
        }
        ck_assert_msg(diff * 200 < rows * n, "%s: %lld values differ from plain rounding", nb_type_name(ts[k]),
                      (long long)diff);
        free(y); free(dst); free(rtn);
    }
    free(w); free(q); free(H);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(beats_round_to_nearest) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const int64_t rows = 16, n = 256, ntok = 320;
    float *x = make_x(ntok, n, 11);
    double *H = hessian_of(x, ntok, n, &ctx);
    float *w = malloc((size_t)(rows * n) * sizeof(float)), *q = malloc((size_t)(rows * n) * sizeof(float)),
          *y = malloc((size_t)(rows * n) * sizeof(float));
    fill(w, (size_t)(rows * n), 12, 0.05f);
    nb_type ts[] = {NB_TYPE_INT4_SYM_G128, NB_TYPE_INT4_ASYM_G32, NB_TYPE_NF4, NB_TYPE_Q4_0,
                    NB_TYPE_Q4_K, NB_TYPE_IQ4_NL, NB_TYPE_IQ4_XS, NB_TYPE_Q3_K};
    for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
        const nb_type_traits *tr = nb_type_get(ts[k]);
        uint64_t rb;
        ck_assert_int_eq(nb_type_row_bytes(ts[k], n, &rb, &ctx, "t"), NB_OK);
        unsigned char *dst = malloc(rb * rows);
        tr->quantize(w, dst, rows, n, NULL);
        tr->to_float(dst, y, rows * n);
        double e_rtn = out_err(x, ntok, w, y, rows, n);
        for (int act = 0; act < 2; act++) {
            nb_gptq_opts o = {.act_order = act != 0};
            nb_gptq_result res;
            ck_assert_int_eq(nb_gptq_quantize(ts[k], w, rows, n, H, &o, dst, q, &res, "l", &ctx), NB_OK);
            tr->to_float(dst, y, rows * n);
            for (int64_t e = 0; e < rows * n; e++) ck_assert(y[e] == q[e]); /* deq == packed bytes */
            double e_g = out_err(x, ntok, w, q, rows, n);
            printf("gptq %-14s act_order=%d: output error GPTQ / RTN = %.3f\n", nb_type_name(ts[k]), act, e_g / e_rtn);
            ck_assert_msg(e_g < 0.9 * e_rtn, "%s act=%d: GPTQ %g vs RTN %g", nb_type_name(ts[k]), act, e_g, e_rtn);
            ck_assert(res.loss > 0 && res.damp_retries == 0 && res.n_dead == 0);
        }
        free(dst);
    }
    free(x); free(H); free(w); free(q); free(y);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(threads_identical) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const int64_t rows = 37, n = 256, ntok = 280;
    float *x = make_x(ntok, n, 21);
    float *w = malloc((size_t)(rows * n) * sizeof(float));
    fill(w, (size_t)(rows * n), 22, 1);
    double *H1 = hessian_of(x, ntok, n, &ctx);
    ctx.n_threads = 3;
    double *H3 = hessian_of(x, ntok, n, &ctx);
    ck_assert(!memcmp(H1, H3, (size_t)(n * n) * sizeof(double)));
    uint64_t rb;
    ck_assert_int_eq(nb_type_row_bytes(NB_TYPE_Q4_K, n, &rb, &ctx, "t"), NB_OK);
    unsigned char *a = malloc(rb * rows), *b = malloc(rb * rows);
    nb_gptq_opts o = {.act_order = true};
    ctx.n_threads = 1;
    ck_assert_int_eq(nb_gptq_quantize(NB_TYPE_Q4_K, w, rows, n, H1, &o, a, NULL, NULL, "t", &ctx), NB_OK);
    ctx.n_threads = 3;
    ck_assert_int_eq(nb_gptq_quantize(NB_TYPE_Q4_K, w, rows, n, H1, &o, b, NULL, NULL, "t", &ctx), NB_OK);
    ck_assert(!memcmp(a, b, rb * rows));
    free(x); free(w); free(H1); free(H3); free(a); free(b);
    nb_ctx_free(&ctx);
}
END_TEST

/* Shapes that span several row tiles (128) and Hessian tiles (256 columns),
 * with act-order: 1, 2 and 3 threads give the same bytes; the factored API
 * (one factor for two weights) gives what nb_gptq_quantize gives. */
START_TEST(threads_identical_tiled) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const int64_t rows = 300, n = 320, ntok = 300;
    float *x = make_x(ntok, n, 31);
    float *w = malloc((size_t)(rows * n) * sizeof(float));
    fill(w, (size_t)(rows * n), 32, 1);
    ctx.n_threads = 1;
    double *H1 = hessian_of(x, ntok, n, &ctx);
    ctx.n_threads = 2;
    double *H2 = hessian_of(x, ntok, n, &ctx);
    ck_assert(!memcmp(H1, H2, (size_t)(n * n) * sizeof(double)));
    uint64_t rb;
    ck_assert_int_eq(nb_type_row_bytes(NB_TYPE_Q4_0, n, &rb, &ctx, "t"), NB_OK);
    unsigned char *out[3];
    nb_gptq_opts o = {.act_order = true};
    for (int k = 0; k < 3; k++) {
        out[k] = malloc(rb * rows);
        ctx.n_threads = k + 1;
        ck_assert_int_eq(nb_gptq_quantize(NB_TYPE_Q4_0, w, rows, n, H1, &o, out[k], NULL, NULL, "t", &ctx), NB_OK);
    }
    ck_assert(!memcmp(out[0], out[1], rb * rows));
    ck_assert(!memcmp(out[0], out[2], rb * rows));
    nb_gptq_factor f;
    ck_assert_int_eq(nb_gptq_factor_make(H1, n, &o, &f, "t", &ctx), NB_OK);
    unsigned char *b = malloc(rb * rows);
    for (int rep = 0; rep < 2; rep++) { /* the factor is not consumed */
        nb_gptq_result res;
        ck_assert_int_eq(nb_gptq_quantize_factored(NB_TYPE_Q4_0, w, rows, n, &f, &o, b, NULL, &res, "t", &ctx), NB_OK);
        ck_assert(!memcmp(out[0], b, rb * rows));
        ck_assert(res.loss > 0);
    }
    nb_gptq_opts o2 = {.act_order = false}; /* a factor for another column order is refused */
    ck_assert_int_eq(nb_gptq_quantize_factored(NB_TYPE_Q4_0, w, rows, n, &f, &o2, b, NULL, NULL, "t", &ctx),
                     NB_ERR_INTERNAL);
    nb_gptq_factor_free(&f);
    nb_gptq_factor_free(&f); /* twice: a no-op */
    for (int k = 0; k < 3; k++) free(out[k]);
    free(x); free(w); free(H1); free(H2); free(b);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(chol_inverse_upper) {
    const int64_t n = 300;
    double *a = malloc((size_t)(n * n) * sizeof(double)), *u = malloc((size_t)(n * n) * sizeof(double));
    uint64_t s = 5;
    for (int64_t i = 0; i < n; i++) /* diagonally dominant symmetric */
        for (int64_t j = 0; j <= i; j++) {
            double v = i == j ? (double)n : nbt_rand_normal(&s) * 0.5;
            a[i * n + j] = a[j * n + i] = v;
        }
    memcpy(u, a, (size_t)(n * n) * sizeof(double));
    ck_assert_int_eq(nb_linalg_chol_inv_upper(u, n), 0);
    double maxd = 0;
    for (int64_t i = 0; i < n; i++) {
        ck_assert(u[i * n + i] > 0);
        for (int64_t j = 0; j < i; j++) ck_assert(u[i * n + j] == 0);
    }
    double *p = calloc((size_t)(n * n), sizeof(double)); /* P = UᵀU */
    for (int64_t m = 0; m < n; m++)
        for (int64_t i = m; i < n; i++)
            for (int64_t k = m; k < n; k++) p[i * n + k] += u[m * n + i] * u[m * n + k];
    for (int64_t i = 0; i < n; i++) /* (P A)[i][j] */
        for (int64_t j = 0; j < n; j++) {
            double acc = 0;
            for (int64_t k = 0; k < n; k++) acc += p[i * n + k] * a[k * n + j];
            double d = fabs(acc - (i == j ? 1.0 : 0.0));
            if (d > maxd) maxd = d;
        }
    free(p);
    ck_assert_msg(maxd < 1e-10, "max |UᵀUA - I| = %g", maxd);
    /* not positive definite: info > 0 */
    for (int64_t k = 0; k < n * n; k++) a[k] = 0;
    a[0] = 1;
    a[n + 1] = -1;
    ck_assert_int_gt(nb_linalg_chol_inv_upper(a, n), 0);
    free(a); free(u);
}
END_TEST

START_TEST(dead_columns_and_hessian) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const int64_t rows = 4, n = 64, ntok = 80;
    float *x = make_x(ntok, n, 31);
    for (int64_t t = 0; t < ntok; t++) x[t * n + 9] = x[t * n + 40] = 0;
    double *H = hessian_of(x, ntok, n, &ctx);
    /* H = 2 XᵀX / n, symmetric */
    for (int64_t i = 0; i < n; i += 7)
        for (int64_t j = 0; j < n; j += 5) {
            double s = 0;
            for (int64_t t = 0; t < ntok; t++) s += (double)x[t * n + i] * x[t * n + j];
            ck_assert_double_eq_tol(H[i * n + j], 2 * s / (double)ntok, 1e-9 * fabs(s) + 1e-12);
            ck_assert(H[i * n + j] == H[j * n + i]);
        }
    float *w = malloc((size_t)(rows * n) * sizeof(float)), *q = malloc((size_t)(rows * n) * sizeof(float));
    fill(w, (size_t)(rows * n), 32, 1);
    unsigned char dst[4 * 2 * 34];
    nb_gptq_result res;
    ck_assert_int_eq(nb_gptq_quantize(NB_TYPE_INT4_SYM_G32, w, rows, n, H, NULL, dst, q, &res, "t", &ctx), NB_OK);
    ck_assert_int_eq(res.n_dead, 2);
    for (int64_t r = 0; r < rows; r++) {
        ck_assert(q[r * n + 9] == 0.0f); /* W[:, dead] = 0 -> quantized to 0 (symmetric grid has 0) */
        ck_assert(q[r * n + 40] == 0.0f);
    }
    /* a Hessian of no tokens is all zero: every column dead, still fine */
    nb_hessian h;
    ck_assert_int_eq(nb_hessian_init(&h, n, &ctx), NB_OK);
    nb_hessian_finish(&h, H);
    nb_hessian_free(&h);
    ck_assert_int_eq(nb_gptq_quantize(NB_TYPE_INT4_SYM_G32, w, rows, n, H, NULL, dst, q, &res, "t", &ctx), NB_OK);
    ck_assert_int_eq(res.n_dead, n);
    free(x); free(H); free(w); free(q);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(errors_and_dampening) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const int64_t n = 32;
    float w[2 * 32];
    fill(w, 64, 41, 1);
    double *H = calloc((size_t)(n * n), sizeof(double));
    /* indefinite: eigenvalues -2 and 4 on 2x2 blocks; 0.01, 0.1, 1 of the mean (=1) fail, 10 works */
    for (int64_t i = 0; i < n; i += 2) {
        H[i * n + i] = H[(i + 1) * n + i + 1] = 1;
        H[i * n + i + 1] = H[(i + 1) * n + i] = 3;
    }
    unsigned char dst[2 * 18];
    nb_gptq_result res;
    ck_assert_int_eq(nb_gptq_quantize(NB_TYPE_INT4_SYM_G32, w, 2, n, H, NULL, dst, NULL, &res, "t", &ctx), NB_OK);
    ck_assert_int_eq(res.damp_retries, 3);
    ck_assert_double_eq_tol(res.damp_abs, 10.0, 1e-12);
    /* hopeless: strongly negative */
    for (int64_t i = 0; i < n; i++) H[i * n + ((i + 1) % n)] = H[((i + 1) % n) * n + i] = 0;
    for (int64_t i = 0; i < n; i++) H[i * n + i] = 1;
    H[0 * n + 1] = H[1 * n + 0] = 1e12;
    ck_assert_int_eq(nb_gptq_quantize(NB_TYPE_INT4_SYM_G32, w, 2, n, H, NULL, dst, NULL, &res, "blk.0.x", &ctx),
                     NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "blk.0.x"));
    H[0 * n + 1] = H[1 * n + 0] = 0;
    ck_assert_int_eq(nb_gptq_quantize(NB_TYPE_NF4_DQ, w, 2, n, H, NULL, dst, NULL, &res, "t", &ctx),
                     NB_ERR_UNSUPPORTED);
    ck_assert_int_eq(nb_gptq_quantize(NB_TYPE_INT4_SYM_G64, w, 2, n, H, NULL, dst, NULL, &res, "t", &ctx),
                     NB_ERR_RANGE);
    w[33] = NAN;
    ck_assert_int_eq(nb_gptq_quantize(NB_TYPE_INT4_SYM_G32, w, 2, n, H, NULL, dst, NULL, &res, "blk.1.y", &ctx),
                     NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "row 1, column 1"));
    w[33] = 0;
    H[5] = NAN;
    ck_assert_int_eq(nb_gptq_quantize(NB_TYPE_INT4_SYM_G32, w, 2, n, H, NULL, dst, NULL, &res, "t", &ctx), NB_ERR_RANGE);
    /* NaN activations are refused by the accumulator, naming the tensor */
    nb_hessian h;
    ck_assert_int_eq(nb_hessian_init(&h, n, &ctx), NB_OK);
    float xa[2 * 32] = {0};
    xa[40] = INFINITY;
    ck_assert_int_eq(nb_hessian_add(&h, xa, 2, "blk.2.ffn_down.weight", &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "blk.2.ffn_down.weight"));
    ck_assert_uint_eq(h.n_tok, 0);
    nb_hessian_free(&h);
    free(H);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("calib/gptq");
    TCase *tc = tcase_create("gptq");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, set_code_reencodes_quantizer_output);
    tcase_add_test(tc, diagonal_hessian_is_nearest_rounding);
    tcase_add_test(tc, beats_round_to_nearest);
    tcase_add_test(tc, threads_identical);
    tcase_add_test(tc, threads_identical_tiled);
    tcase_add_test(tc, chol_inverse_upper);
    tcase_add_test(tc, dead_columns_and_hessian);
    tcase_add_test(tc, errors_and_dampening);
    suite_add_tcase(s, tc);
    /* its own case so tests/interop/test_gptq_interop.py can run it alone (CK_RUN_CASE=oracle) */
    TCase *to = tcase_create("oracle");
    tcase_set_timeout(to, 300);
    tcase_add_test(to, agrees_with_numpy_oracle);
    suite_add_tcase(s, to);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
