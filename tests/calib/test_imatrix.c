/* tests/calib/test_imatrix.c — activation statistics and llama.cpp's imatrix
 * files: accumulation against a direct computation, NaN rejection, GGUF and
 * legacy .dat round trips (values, metadata, byte-identical rewrites), the
 * weights llama-quantize derives (Σx²/count, 1 for experts without tokens),
 * model checks (foreign names, wrong shapes, legacy expert reshaping),
 * truncated/hostile .dat files, and the quantize adapter. */
#include "calib/imatrix.h"
#include "formats/synth.h"
#include "quant/quantize.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fill(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) x[i] = nbt_rand_normal(&s);
}

/* A small imatrix: one dense entry, one MoE entry (4 experts, expert 2 unused). */
static void build(nb_imatrix *im, nb_ctx *ctx) {
    nb_imatrix_init(im);
    float x[40 * 64];
    fill(x, 40 * 64, 1);
    ck_assert_int_eq(nb_imatrix_add(im, "blk.0.attn_q.weight", 0, 1, x, 25, 64, ctx), NB_OK);
    ck_assert_int_eq(nb_imatrix_add(im, "blk.0.attn_q.weight", 0, 1, x + 25 * 64, 15, 64, ctx), NB_OK);
    fill(x, 40 * 64, 2);
    for (int e = 0; e < 4; e++)
        if (e != 2) ck_assert_int_eq(nb_imatrix_add(im, "blk.0.ffn_down_exps.weight", e, 4, x + e * 256, 3 + e, 32, ctx), NB_OK);
    ck_assert_int_eq(nb_imatrix_add_dataset(im, "calib.txt", ctx), NB_OK);
    im->chunk_count = 2;
    im->chunk_size = 20;
}

START_TEST(accumulate_matches_direct) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_imatrix im;
    build(&im, &ctx);
    float x[40 * 64];
    fill(x, 40 * 64, 1);
    const nb_imatrix_entry *e = nb_imatrix_find(&im, "blk.0.attn_q.weight");
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->n_in, 64);
    ck_assert_int_eq(e->n_mat, 1);
    ck_assert(e->count[0] == 40);
    float w[64];
    ck_assert_int_eq(nb_imatrix_weights(&im, "blk.0.attn_q.weight", 0, 64, w), 1);
    for (int j = 0; j < 64; j++) {
        double s2 = 0, s1 = 0;
        for (int t = 0; t < 40; t++) { s2 += (double)x[t * 64 + j] * x[t * 64 + j]; s1 += x[t * 64 + j]; }
        ck_assert_double_eq_tol(e->sum2[j], s2, 1e-9 * s2);
        ck_assert_double_eq_tol(e->sum[j], s1, 1e-9);
        ck_assert_float_eq_tol(w[j], (float)(s2 / 40), 1e-6f * (float)(s2 / 40));
    }
    /* MoE: per-expert counts; unused expert -> neutral weights */
    e = nb_imatrix_find(&im, "blk.0.ffn_down_exps.weight");
    ck_assert_int_eq(e->n_mat, 4);
    ck_assert_int_eq(e->n_counts, 4);
    ck_assert(e->count[0] == 3 && e->count[1] == 4 && e->count[2] == 0 && e->count[3] == 6);
    ck_assert_int_eq(nb_imatrix_zero_count(e), 1);
    float wm[32];
    ck_assert_int_eq(nb_imatrix_weights(&im, "blk.0.ffn_down_exps.weight", 2, 32, wm), 1);
    for (int j = 0; j < 32; j++) ck_assert(wm[j] == 1.0f);
    ck_assert_int_eq(nb_imatrix_weights(&im, "blk.0.ffn_down_exps.weight", 3, 32, wm), 1);
    fill(x, 40 * 64, 2);
    double s = 0;
    for (int t = 0; t < 6; t++) s += (double)x[3 * 256 + t * 32 + 5] * x[3 * 256 + t * 32 + 5];
    ck_assert_float_eq_tol(wm[5], (float)(s / 6), 1e-6f);
    /* bad lookups */
    ck_assert_int_eq(nb_imatrix_weights(&im, "nope", 0, 32, wm), 0);
    ck_assert_int_eq(nb_imatrix_weights(&im, "blk.0.ffn_down_exps.weight", 4, 32, wm), -1);
    ck_assert_int_eq(nb_imatrix_weights(&im, "blk.0.ffn_down_exps.weight", 0, 64, wm), -1);
    /* shape change of an existing entry is refused */
    ck_assert_int_eq(nb_imatrix_add(&im, "blk.0.attn_q.weight", 0, 1, x, 1, 32, &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "blk.0.attn_q.weight"));
    nb_imatrix_free(&im);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(nan_is_an_error_naming_the_tensor) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_imatrix im;
    nb_imatrix_init(&im);
    float x[3 * 8];
    fill(x, 24, 3);
    x[13] = NAN;
    ck_assert_int_eq(nb_imatrix_add(&im, "blk.3.ffn_up.weight", 0, 1, x, 3, 8, &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "blk.3.ffn_up.weight"));
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "row 1, column 5"));
    ck_assert_ptr_null(nb_imatrix_find(&im, "blk.3.ffn_up.weight")); /* nothing added */
    x[13] = INFINITY;
    ck_assert_int_eq(nb_imatrix_add(&im, "blk.3.ffn_up.weight", 0, 1, x, 3, 8, &ctx), NB_ERR_RANGE);
    nb_imatrix_free(&im);
    nb_ctx_free(&ctx);
}
END_TEST

static void same_weights(const nb_imatrix *a, const nb_imatrix *b, float rel) {
    ck_assert_uint_eq(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const nb_imatrix_entry *e = &a->e[i];
        const nb_imatrix_entry *f = nb_imatrix_find(b, e->name);
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(f->n_in * f->n_mat, e->n_in * e->n_mat);
        float *wa = malloc((size_t)e->n_in * sizeof(float)), *wb = malloc((size_t)e->n_in * sizeof(float));
        for (int64_t k = 0; k < e->n_mat; k++) {
            ck_assert_int_eq(nb_imatrix_weights(a, e->name, k, e->n_in, wa), 1);
            ck_assert_int_eq(nb_imatrix_weights(b, e->name, k, e->n_in, wb), 1);
            for (int64_t j = 0; j < e->n_in; j++) ck_assert_float_eq_tol(wb[j], wa[j], rel * fabsf(wa[j]) + 1e-30f);
        }
        free(wa);
        free(wb);
    }
}

START_TEST(gguf_round_trip) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_imatrix im, back, back2;
    build(&im, &ctx);
    float r[6] = {1, 2, 3, 4, 5, 6};
    ck_assert_int_eq(nb_imatrix_set_extra(&im, "nibble.routing.blk.0.freq", 3, 2, r, &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_u32(&im.extra_kv, "nibble.routing.n_expert", 4, &ctx), NB_OK);
    const char *p1 = nbt_path("im1.gguf"), *p2 = nbt_path("im2.gguf");
    ck_assert_msg(nb_imatrix_write_gguf(&im, p1, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_msg(nb_imatrix_read(p1, &back, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert(!back.legacy);
    ck_assert_uint_eq(back.chunk_count, 2);
    ck_assert_uint_eq(back.chunk_size, 20);
    ck_assert_uint_eq(back.n_datasets, 1);
    ck_assert_str_eq(back.datasets[0], "calib.txt");
    for (size_t i = 0; i < im.n; i++) {
        const nb_imatrix_entry *e = &im.e[i], *f = nb_imatrix_find(&back, e->name);
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(f->n_in, e->n_in);
        ck_assert_int_eq(f->n_mat, e->n_mat);
        ck_assert_int_eq(f->n_counts, e->n_counts);
        ck_assert_ptr_nonnull(f->sum);
        for (int64_t j = 0; j < e->n_in * e->n_mat; j++) {
            ck_assert(f->sum2[j] == (double)(float)e->sum2[j]); /* stored as F32 */
            ck_assert(f->sum[j] == (double)(float)e->sum[j]);
        }
        for (int64_t k = 0; k < e->n_counts; k++) ck_assert(f->count[k] == e->count[k]);
    }
    same_weights(&im, &back, 1e-6f);
    const nb_imatrix_extra *x = nb_imatrix_get_extra(&back, "nibble.routing.blk.0.freq");
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(x->ne[0], 3);
    ck_assert_int_eq(x->ne[1], 2);
    ck_assert(x->data[5] == 6);
    uint64_t u;
    ck_assert(nb_kv_get_u64(&back.extra_kv, "nibble.routing.n_expert", &u) && u == 4);
    /* rewriting what was read gives the same bytes */
    ck_assert_int_eq(nb_imatrix_write_gguf(&back, p2, &ctx), NB_OK);
    size_t n1, n2;
    unsigned char *b1 = nbt_read_file(p1, &n1), *b2 = nbt_read_file(p2, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert_mem_eq(b1, b2, n1);
    free(b1);
    free(b2);
    /* the file is a plain GGUF with llama.cpp's tensor names and shapes */
    nb_model *m = NULL;
    ck_assert_int_eq(nb_model_open(p1, &m, &ctx), NB_OK);
    ck_assert_str_eq(nb_kv_get_str(&m->kv, "general.type"), "imatrix");
    const nb_tensor *t = nb_model_find(m, "blk.0.ffn_down_exps.weight.in_sum2");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->ne[0], 32);
    ck_assert_int_eq(t->ne[1], 4);
    t = nb_model_find(m, "blk.0.attn_q.weight.counts");
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(t->n_dims, 1);
    ck_assert_int_eq(t->ne[0], 1);
    nb_model_close(m);
    (void)back2;
    nb_imatrix_free(&back);
    nb_imatrix_free(&im);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(dat_round_trip) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_imatrix im, back, back2;
    build(&im, &ctx);
    const char *p1 = nbt_path("im1.dat"), *p2 = nbt_path("im2.dat"), *pg = nbt_path("fromdat.gguf");
    ck_assert_int_eq(nb_imatrix_write_dat(&im, p1, &ctx), NB_OK);
    /* layout: n_entries, then the first entry (sorted by name) */
    size_t n1;
    unsigned char *b1 = nbt_read_file(p1, &n1);
    int32_t v;
    memcpy(&v, b1, 4);
    ck_assert_int_eq(v, 2);
    memcpy(&v, b1 + 4, 4);
    ck_assert_int_eq(v, (int)strlen("blk.0.attn_q.weight"));
    ck_assert_mem_eq(b1 + 8, "blk.0.attn_q.weight", (size_t)v);
    int32_t ncall;
    memcpy(&ncall, b1 + 8 + v, 4);
    ck_assert_int_eq(ncall, 2); /* ceil(40 / 20) */
    float f0;
    memcpy(&f0, b1 + 8 + v + 8, 4);
    ck_assert_float_eq_tol(f0, (float)(im.e[0].sum2[0] / 40 * 2), 1e-6f * f0);

    ck_assert_msg(nb_imatrix_read(p1, &back, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert(back.legacy);
    ck_assert_uint_eq(back.chunk_count, 2);
    ck_assert_str_eq(back.datasets[0], "calib.txt");
    /* expert split is unknown in .dat: a flat entry until checked against a model */
    const nb_imatrix_entry *f = nb_imatrix_find(&back, "blk.0.ffn_down_exps.weight");
    ck_assert_int_eq(f->n_in, 128);
    ck_assert_int_eq(f->n_mat, 1);
    /* .dat keeps one count for all experts: the weights are what llama-quantize derives */
    float w[128];
    ck_assert_int_eq(nb_imatrix_weights(&back, "blk.0.ffn_down_exps.weight", 0, 128, w), 1);
    for (int j = 0; j < 32; j++) ck_assert(w[64 + j] == 1.0f); /* expert 2: stored neutral */
    float we[32];
    ck_assert_int_eq(nb_imatrix_weights(&im, "blk.0.ffn_down_exps.weight", 3, 32, we), 1);
    for (int j = 0; j < 32; j++) ck_assert_float_eq_tol(w[96 + j], we[j], 1e-6f * we[j]);
    /* .dat -> .dat is byte-identical; .dat -> GGUF -> .dat too */
    ck_assert_int_eq(nb_imatrix_write_dat(&back, p2, &ctx), NB_OK);
    size_t n2;
    unsigned char *b2 = nbt_read_file(p2, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert_mem_eq(b1, b2, n1);
    free(b2);
    ck_assert_int_eq(nb_imatrix_write_gguf(&back, pg, &ctx), NB_OK);
    ck_assert_int_eq(nb_imatrix_read(pg, &back2, &ctx), NB_OK);
    same_weights(&back, &back2, 0);
    ck_assert_int_eq(nb_imatrix_write_dat(&back2, p2, &ctx), NB_OK);
    b2 = nbt_read_file(p2, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert_mem_eq(b1, b2, n1);
    free(b2);
    free(b1);
    nb_imatrix_free(&back2);
    nb_imatrix_free(&back);
    nb_imatrix_free(&im);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(dat_entry_without_data_is_dropped) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_imatrix im, back;
    nb_imatrix_init(&im);
    nb_imatrix_entry *e;
    ck_assert_int_eq(nb_imatrix_entry_get(&im, "blk.1.ffn_up_exps.weight", 16, 2, &e, &ctx), NB_OK);
    float x[16] = {1};
    ck_assert_int_eq(nb_imatrix_add(&im, "blk.1.attn_k.weight", 0, 1, x, 1, 16, &ctx), NB_OK);
    const char *p = nbt_path("drop.dat");
    ck_assert_int_eq(nb_imatrix_write_dat(&im, p, &ctx), NB_OK);
    ck_assert_int_eq(nb_imatrix_read(p, &back, &ctx), NB_OK);
    ck_assert_uint_eq(back.n, 1);
    ck_assert_ptr_nonnull(nb_imatrix_find(&back, "blk.1.attn_k.weight"));
    nb_imatrix_free(&back);
    nb_imatrix_free(&im);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(hostile_dat_files) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_imatrix im, back;
    build(&im, &ctx);
    const char *p = nbt_path("ok.dat"), *q = nbt_path("bad.dat");
    ck_assert_int_eq(nb_imatrix_write_dat(&im, p, &ctx), NB_OK);
    size_t n;
    unsigned char *b = nbt_read_file(p, &n);
    /* every truncation either reads (the trailer is optional) or fails cleanly */
    int ok = 0, bad = 0;
    for (size_t k = 0; k < n; k++) {
        nbt_write_file(q, b, k);
        nb_status st = nb_imatrix_read(q, &back, &ctx);
        if (st == NB_OK) ok++;
        else { ck_assert_int_eq(st, NB_ERR_FORMAT); bad++; }
        nb_imatrix_free(&back);
    }
    ck_assert_int_gt(bad, 0);
    ck_assert_int_gt(ok, 0);
    /* huge counts and lengths */
    unsigned char *c = malloc(n);
    int32_t big = INT32_MAX;
    size_t offs[] = {0, 4, 8 + 19 + 4};
    for (size_t k = 0; k < 3; k++) {
        memcpy(c, b, n);
        memcpy(c + offs[k], &big, 4);
        nbt_write_file(q, c, n);
        ck_assert_int_eq(nb_imatrix_read(q, &back, &ctx), NB_ERR_FORMAT);
        nb_imatrix_free(&back);
    }
    /* a NaN value */
    memcpy(c, b, n);
    float nanv = NAN;
    memcpy(c + 8 + 19 + 8, &nanv, 4);
    nbt_write_file(q, c, n);
    ck_assert_int_eq(nb_imatrix_read(q, &back, &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "blk.0.attn_q.weight"));
    free(c);
    free(b);
    ck_assert_int_ne(nb_imatrix_read(nbt_path("missing.dat"), &back, &ctx), NB_OK);
    nb_imatrix_free(&im);
    nb_ctx_free(&ctx);
}
END_TEST

static const char *tiny_moe(nb_ctx *ctx) {
    static char path[512];
    snprintf(path, sizeof path, "%s", nbt_path("moe.gguf"));
    if (nbt_file_exists(path)) return path;
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.arch = "mixtral";
    o.n_layer = 1;
    o.n_embd = 64;
    o.n_ff = 32;
    o.n_head = 4;
    o.n_head_kv = 2;
    o.n_expert = 4;
    o.n_expert_used = 2;
    o.n_vocab = 300;
    o.dtype = NB_TYPE_F32;
    ck_assert_msg(nb_synth_write(&o, path, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    return path;
}

START_TEST(check_against_model) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_model *m = NULL;
    ck_assert_int_eq(nb_model_open(tiny_moe(&ctx), &m, &ctx), NB_OK);
    nb_imatrix im, back;
    build(&im, &ctx); /* attn_q 64 columns fits; ffn_down_exps has 32 inputs x 4 experts: fits too */
    ck_assert_msg(nb_imatrix_check_model(&im, m, "x", &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    /* legacy flat entry is split per expert */
    const char *p = nbt_path("chk.dat");
    ck_assert_int_eq(nb_imatrix_write_dat(&im, p, &ctx), NB_OK);
    ck_assert_int_eq(nb_imatrix_read(p, &back, &ctx), NB_OK);
    ck_assert_int_eq(nb_imatrix_check_model(&back, m, p, &ctx), NB_OK);
    const nb_imatrix_entry *f = nb_imatrix_find(&back, "blk.0.ffn_down_exps.weight");
    ck_assert_int_eq(f->n_in, 32);
    ck_assert_int_eq(f->n_mat, 4);
    float a[32], b[32];
    ck_assert_int_eq(nb_imatrix_weights(&back, "blk.0.ffn_down_exps.weight", 3, 32, a), 1);
    ck_assert_int_eq(nb_imatrix_weights(&im, "blk.0.ffn_down_exps.weight", 3, 32, b), 1);
    for (int j = 0; j < 32; j++) ck_assert_float_eq_tol(a[j], b[j], 1e-6f * b[j]);
    nb_imatrix_free(&back);
    /* a name the model lacks */
    float x[64] = {1};
    ck_assert_int_eq(nb_imatrix_add(&im, "blk.7.attn_q.weight", 0, 1, x, 1, 64, &ctx), NB_OK);
    ck_assert_int_eq(nb_imatrix_check_model(&im, m, "other.gguf", &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "blk.7.attn_q.weight"));
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "other.gguf"));
    nb_imatrix_free(&im);
    /* a shape the model's tensor does not have */
    nb_imatrix_init(&im);
    ck_assert_int_eq(nb_imatrix_add(&im, "blk.0.attn_k.weight", 0, 1, x, 1, 32, &ctx), NB_OK);
    ck_assert_int_eq(nb_imatrix_check_model(&im, m, "y", &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "blk.0.attn_k.weight"));
    nb_imatrix_free(&im);
    nb_imatrix_init(&im);
    ck_assert_int_eq(nb_imatrix_add(&im, "blk.0.ffn_up_exps.weight", 0, 3, x, 1, 64, &ctx), NB_OK);
    ck_assert_int_eq(nb_imatrix_check_model(&im, m, "y", &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "blk.0.ffn_up_exps.weight"));
    nb_imatrix_free(&im);
    nb_model_close(m);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(quantize_with_imatrix) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *src = tiny_moe(&ctx);
    nb_model *m = NULL;
    ck_assert_int_eq(nb_model_open(src, &m, &ctx), NB_OK);
    /* statistics with strongly varying column scales, so weighting changes the result */
    nb_imatrix im;
    nb_imatrix_init(&im);
    float x[64 * 8];
    fill(x, 64 * 8, 9);
    for (int t = 0; t < 8; t++)
        for (int j = 0; j < 64; j++) x[t * 64 + j] *= (j % 7 == 0) ? 20.0f : 0.1f;
    ck_assert_int_eq(nb_imatrix_add(&im, "blk.0.attn_q.weight", 0, 1, x, 8, 64, &ctx), NB_OK);
    for (int e = 0; e < 4; e++)
        ck_assert_int_eq(nb_imatrix_add(&im, "blk.0.ffn_gate_exps.weight", e, 4, x + 64 * e, 2, 64, &ctx), NB_OK);
    ck_assert_int_eq(nb_imatrix_check_model(&im, m, "mem", &ctx), NB_OK);
    nb_imatrix_importance u = {.im = &im};
    nb_quant_opts o = {0};
    nb_plan_opts po = {.mix = nb_mix_find("q4_0"), .pure = true, .has_importance = true};
    ck_assert_ptr_nonnull(po.mix);
    nb_plan plan;
    ck_assert_int_eq(nbt_plan_opts(src, &po, &plan, &ctx), NB_OK);
    o.importance = nb_imatrix_importance_fn;
    o.importance_user = &u;
    const char *out1 = nbt_path("q_im.gguf"), *out0 = nbt_path("q_plain.gguf");
    nb_quant_result r;
    ck_assert_msg(nb_quantize_model(src, out1, &plan, &o, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_quant_result_free(&r);
    ck_assert(!u.failed);
    o.importance = NULL;
    ck_assert_int_eq(nb_quantize_model(src, out0, &plan, &o, &r, &ctx), NB_OK);
    nb_quant_result_free(&r);
    nb_plan_free(&plan);
    nb_model *q1 = NULL, *q0 = NULL;
    ck_assert_int_eq(nb_model_open(out1, &q1, &ctx), NB_OK);
    ck_assert_int_eq(nb_model_open(out0, &q0, &ctx), NB_OK);
    /* tensors with an entry: bytes equal the quantizer called directly with the weights */
    const char *names[] = {"blk.0.attn_q.weight", "blk.0.ffn_gate_exps.weight", "blk.0.attn_k.weight"};
    for (int k = 0; k < 3; k++) {
        const nb_tensor *ts = nb_model_find(m, names[k]), *t1 = nb_model_find(q1, names[k]),
                        *t0 = nb_model_find(q0, names[k]);
        ck_assert_ptr_nonnull(t1);
        ck_assert_int_eq(t1->type, NB_TYPE_Q4_0);
        uint64_t n = nb_tensor_nelements(ts);
        float *f = malloc(n * sizeof(float));
        ck_assert_int_eq(nb_model_read_f32(m, (size_t)(ts - m->tensors), f, &ctx), NB_OK);
        unsigned char *want = malloc(t1->nbytes), *got = malloc(t1->nbytes), *plain = malloc(t0->nbytes);
        int64_t row = ts->ne[0], rows = ts->ne[1], nm = ts->n_dims >= 3 ? ts->ne[2] : 1;
        size_t slice_bytes = t1->nbytes / (size_t)nm;
        float w[64];
        for (int64_t e = 0; e < nm; e++) {
            int r2 = nb_imatrix_weights(&im, names[k], e, row, w);
            nb_type_get(NB_TYPE_Q4_0)->quantize(f + e * row * rows, want + (size_t)e * slice_bytes, rows, row,
                                                r2 == 1 ? w : NULL);
        }
        ck_assert_int_eq(nb_model_read_tensor(q1, (size_t)(t1 - q1->tensors), got, &ctx), NB_OK);
        ck_assert_int_eq(nb_model_read_tensor(q0, (size_t)(t0 - q0->tensors), plain, &ctx), NB_OK);
        ck_assert_mem_eq(got, want, t1->nbytes);
        if (k < 2) ck_assert(memcmp(got, plain, t1->nbytes) != 0); /* the weights mattered */
        else ck_assert_mem_eq(got, plain, t1->nbytes);           /* no entry: plain rounding */
        free(f);
        free(want);
        free(got);
        free(plain);
    }
    nb_model_close(q1);
    nb_model_close(q0);
    nb_imatrix_importance_free(&u);
    nb_imatrix_free(&im);
    nb_model_close(m);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("calib/imatrix");
    TCase *tc = tcase_create("imatrix");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, accumulate_matches_direct);
    tcase_add_test(tc, nan_is_an_error_naming_the_tensor);
    tcase_add_test(tc, gguf_round_trip);
    tcase_add_test(tc, dat_round_trip);
    tcase_add_test(tc, dat_entry_without_data_is_dropped);
    tcase_add_test(tc, hostile_dat_files);
    tcase_add_test(tc, check_against_model);
    tcase_add_test(tc, quantize_with_imatrix);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
