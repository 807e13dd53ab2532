/* tests/calib/test_calibrate.c — calibration runs: corpus chunking and
 * sampling, token-id files, a run on a synthetic MoE model (1 vs 3 threads
 * give identical files; counts and routing statistics agree with each other),
 * routing statistics through the imatrix file, the report of experts that saw
 * no token, and errors (text too short, NaN activations naming the tensor). */
#include "calib/calibrate.h"
#include "formats/synth.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(corpus_chunks_and_sample) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    int32_t ids[1000];
    for (int i = 0; i < 1000; i++) ids[i] = 10 + i;
    nb_corpus c, d;
    nb_corpus_opts o = {.n_ctx = 64};
    ck_assert_int_eq(nb_corpus_from_tokens(ids, 1000, 1, &o, &c, &ctx), NB_OK);
    ck_assert_uint_eq(c.n_chunks, 15); /* 1000 / 64, tail dropped */
    for (size_t k = 0; k < c.n_chunks; k++) {
        ck_assert_int_eq(c.tokens[k * 64], 1); /* BOS replaces the first token */
        ck_assert_int_eq(c.tokens[k * 64 + 5], 10 + (int)(k * 64) + 5);
    }
    nb_corpus_free(&c);
    o.max_tokens = 200; /* ceil(200 / 64) = 4 chunks, a seeded sample in text order */
    o.seed = 3;
    ck_assert_int_eq(nb_corpus_from_tokens(ids, 1000, -1, &o, &c, &ctx), NB_OK);
    ck_assert_int_eq(nb_corpus_from_tokens(ids, 1000, -1, &o, &d, &ctx), NB_OK);
    ck_assert_uint_eq(c.n_chunks, 4);
    ck_assert_mem_eq(c.tokens, d.tokens, 4 * 64 * sizeof(int32_t));
    for (size_t k = 0; k < 4; k++) {
        ck_assert_int_eq(c.tokens[k * 64], 10 + (int)(c.chunk_index[k] * 64)); /* no BOS: as given */
        if (k) ck_assert_uint_gt(c.chunk_index[k], c.chunk_index[k - 1]);
    }
    nb_corpus_free(&d);
    int differ = 0;
    for (uint64_t s = 4; s < 12; s++) {
        o.seed = s;
        ck_assert_int_eq(nb_corpus_from_tokens(ids, 1000, -1, &o, &d, &ctx), NB_OK);
        differ += memcmp(c.chunk_index, d.chunk_index, 4 * sizeof(size_t)) != 0;
        nb_corpus_free(&d);
    }
    ck_assert_int_gt(differ, 0);
    nb_corpus_free(&c);
    o.max_tokens = 1000;
    ck_assert_int_eq(nb_corpus_from_tokens(ids, 1000, -1, &o, &c, &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "too short"));
    o.max_tokens = 0;
    ck_assert_int_eq(nb_corpus_from_tokens(ids, 50, -1, &o, &c, &ctx), NB_ERR_RANGE);
    /* token-id files */
    const char *p = nbt_path("ids.txt");
    const char *txt = "[5, 6,7\n8 9 10, 11 12]";
    nbt_write_file(p, txt, strlen(txt));
    o.n_ctx = 4;
    ck_assert_int_eq(nb_corpus_load(p, NULL, 100, &o, &c, &ctx), NB_OK);
    ck_assert(c.from_ids);
    ck_assert_uint_eq(c.n_chunks, 2);
    ck_assert_int_eq(c.tokens[7], 12);
    nb_corpus_free(&c);
    ck_assert_int_eq(nb_corpus_load(p, NULL, 12, &o, &c, &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "token 7"));
    o.kind = NB_CORPUS_IDS;
    nbt_write_file(p, "1 2 x", 5);
    ck_assert_int_eq(nb_corpus_load(p, NULL, 100, &o, &c, &ctx), NB_ERR_FORMAT);
    nbt_write_file(p, "", 0);
    ck_assert_int_eq(nb_corpus_load(p, NULL, 100, &o, &c, &ctx), NB_ERR_RANGE);
    nb_ctx_free(&ctx);
}
END_TEST

static const char *moe_model(nb_ctx *ctx) {
    static char path[512];
    snprintf(path, sizeof path, "%s", nbt_path("cal_moe.gguf"));
    if (nbt_file_exists(path)) return path;
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.arch = "mixtral";
    o.n_layer = 2;
    o.n_embd = 64;
    o.n_ff = 64;
    o.n_head = 4;
    o.n_head_kv = 2;
    o.n_expert = 4;
    o.n_expert_used = 2;
    o.n_vocab = 512;
    o.dtype = NB_TYPE_F32;
    ck_assert_msg(nb_synth_write(&o, path, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    return path;
}

static nb_calib_opts calib_opts(void) {
    static char calib[1024];
    snprintf(calib, sizeof calib, "%s/text/calib.txt", nbt_data_dir());
    nb_calib_opts o = {.calib_path = calib, .dataset_name = "calib.txt"};
    o.corpus.n_ctx = 32;
    o.corpus.max_tokens = 256;
    o.corpus.seed = 5;
    return o;
}

START_TEST(run_on_moe_model) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *model = moe_model(&ctx);
    nb_calib_opts o = calib_opts();
    nb_imatrix im;
    nb_routing rt;
    nb_calib_result res;
    const char *p1 = nbt_path("cal1.gguf"), *p3 = nbt_path("cal3.gguf");
    ck_assert_msg(nb_calibrate(model, &o, &im, &rt, &res, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_uint_eq(res.n_chunks, 8);
    ck_assert_uint_eq(res.n_tokens, 256);
    ck_assert_uint_eq(im.chunk_count, 8);
    ck_assert_uint_eq(im.chunk_size, 32);
    ck_assert_int_eq(nb_imatrix_write_gguf(&im, p1, &ctx), NB_OK);
    /* every dense blk tensor saw every token; q, k, v share their input */
    const nb_imatrix_entry *q = nb_imatrix_find(&im, "blk.1.attn_q.weight"),
                           *k = nb_imatrix_find(&im, "blk.1.attn_k.weight");
    ck_assert_ptr_nonnull(q);
    ck_assert_ptr_nonnull(k);
    ck_assert(q->count[0] == 256);
    ck_assert_mem_eq(q->sum2, k->sum2, 64 * sizeof(double));
    ck_assert_ptr_null(nb_imatrix_find(&im, "output.weight")); /* not without process_output */
    /* experts: counts per expert == routing selections; gate == up statistics */
    for (int L = 0; L < 2; L++) {
        char n1[64], n2[64], n3[64];
        snprintf(n1, sizeof n1, "blk.%d.ffn_gate_exps.weight", L);
        snprintf(n2, sizeof n2, "blk.%d.ffn_up_exps.weight", L);
        snprintf(n3, sizeof n3, "blk.%d.ffn_down_exps.weight", L);
        const nb_imatrix_entry *g = nb_imatrix_find(&im, n1), *u = nb_imatrix_find(&im, n2),
                               *d = nb_imatrix_find(&im, n3);
        ck_assert_ptr_nonnull(g);
        ck_assert_int_eq(g->n_mat, 4);
        ck_assert_int_eq(d->n_in, 64);
        ck_assert_mem_eq(g->sum2, u->sum2, (size_t)(g->n_in * 4) * sizeof(double));
        double tot = 0;
        for (int e = 0; e < 4; e++) {
            nb_expert_stats es;
            ck_assert(nb_routing_expert(&rt, L, e, &es));
            ck_assert(g->count[e] == es.n_sel);
            ck_assert(d->count[e] == es.n_sel);
            tot += es.n_sel;
            if (es.n_sel > 0) {
                ck_assert(es.gate_mean > 0 && es.gate_mean <= 1);
                ck_assert(es.out_norm_mean > 0 && isfinite(es.out_norm_mean));
            }
        }
        ck_assert(tot == 256 * 2);
        ck_assert(rt.layers[L].n_tok == 256);
    }
    /* routing statistics survive the file */
    nb_imatrix back;
    nb_routing rb;
    ck_assert_int_eq(nb_imatrix_read(p1, &back, &ctx), NB_OK);
    ck_assert_int_eq(nb_routing_init(&rb, 0, NULL, &ctx), NB_OK);
    ck_assert_int_eq(nb_routing_from_imatrix(&back, &rb, &ctx), NB_OK);
    ck_assert_int_eq(rb.n_layer, 2);
    for (int e = 0; e < 4; e++) {
        nb_expert_stats a, b;
        ck_assert(nb_routing_expert(&rt, 1, e, &a) && nb_routing_expert(&rb, 1, e, &b));
        ck_assert_double_eq_tol(b.freq, a.freq, 1e-6);
        ck_assert_double_eq_tol(b.gate_mean, a.gate_mean, 1e-6);
        ck_assert_double_eq_tol(b.out_norm_mean, a.out_norm_mean, 1e-5 * a.out_norm_mean);
    }
    nb_routing_free(&rb);
    nb_imatrix_free(&back);
    nb_imatrix_free(&im);
    nb_routing_free(&rt);
    /* 3 threads: the same file */
    ctx.n_threads = 3;
    ck_assert_int_eq(nb_calibrate(model, &o, &im, &rt, &res, &ctx), NB_OK);
    ck_assert_int_eq(nb_imatrix_write_gguf(&im, p3, &ctx), NB_OK);
    size_t n1, n3;
    unsigned char *b1 = nbt_read_file(p1, &n1), *b3 = nbt_read_file(p3, &n3);
    ck_assert_uint_eq(n1, n3);
    ck_assert_mem_eq(b1, b3, n1);
    free(b1);
    free(b3);
    nb_imatrix_free(&im);
    nb_routing_free(&rt);
    /* too short for the budget */
    o.corpus.max_tokens = 10000000;
    ck_assert_int_eq(nb_calibrate(model, &o, &im, &rt, &res, &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "too short"));
    nb_imatrix_free(&im);
    nb_routing_free(&rt);
    nb_ctx_free(&ctx);
}
END_TEST

/* A MoE whose routers never choose experts 2 and 3 (synth's starve_experts):
 * without all_experts their imatrix counts are 0; with it every expert counts
 * every token, while the routing statistics and every activation outside the
 * experts (the layer outputs are unchanged) stay bit-identical. */
START_TEST(all_experts_feeds_starved_experts) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.log_level = NB_LOG_ERROR;
    nb_synth_opts so;
    nb_synth_opts_init(&so);
    so.arch = "mixtral";
    so.n_layer = 2;
    so.n_embd = 64;
    so.n_ff = 64;
    so.n_head = 4;
    so.n_head_kv = 2;
    so.n_expert = 4;
    so.n_expert_used = 2;
    so.n_vocab = 512;
    so.dtype = NB_TYPE_F32;
    so.starve_experts = 2;
    const char *model = nbt_path("cal_starve.gguf");
    so.starve_experts = 3; /* leaves fewer experts than are used per token */
    ck_assert_int_eq(nb_synth_write(&so, model, &ctx), NB_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "--starve-experts"));
    so.starve_experts = 2;
    ck_assert_msg(nb_synth_write(&so, model, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_calib_opts o = calib_opts();
    nb_imatrix im[2];
    nb_routing rt[2];
    nb_calib_result res[2];
    for (int k = 0; k < 2; k++) {
        o.all_experts = k == 1;
        ck_assert_msg(nb_calibrate(model, &o, &im[k], &rt[k], &res[k], &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    }
    ck_assert_int_eq(res[0].n_zero_experts, 2 * 2); /* the router's: the same in both runs */
    ck_assert_int_eq(res[1].n_zero_experts, 2 * 2);
    ck_assert_int_eq(res[0].n_zero_data, 2 * 2 * 3); /* 2 layers x 2 experts x gate/up/down */
    ck_assert_int_eq(res[1].n_zero_data, 0);
    for (int L = 0; L < 2; L++) {
        const char *kinds[3] = {"gate", "up", "down"};
        for (int q = 0; q < 3; q++) {
            char nm[64];
            snprintf(nm, sizeof nm, "blk.%d.ffn_%s_exps.weight", L, kinds[q]);
            const nb_imatrix_entry *a = nb_imatrix_find(&im[0], nm), *b = nb_imatrix_find(&im[1], nm);
            ck_assert_ptr_nonnull(a);
            ck_assert_ptr_nonnull(b);
            printf("%s tokens per expert: without --all-experts %.0f %.0f %.0f %.0f, with %.0f %.0f %.0f %.0f\n", nm,
                   a->count[0], a->count[1], a->count[2], a->count[3], b->count[0], b->count[1], b->count[2],
                   b->count[3]);
            for (int e = 0; e < 4; e++) {
                ck_assert(b->count[e] == 256);
                if (e >= 2) ck_assert(a->count[e] == 0);
                else ck_assert(a->count[e] > 0);
            }
        }
        for (int e = 0; e < 4; e++) {
            nb_expert_stats x, y;
            ck_assert(nb_routing_expert(&rt[0], L, e, &x) && nb_routing_expert(&rt[1], L, e, &y));
            ck_assert(x.n_sel == y.n_sel && x.gate_mean == y.gate_mean && x.out_norm_mean == y.out_norm_mean);
            if (e >= 2) ck_assert(x.n_sel == 0);
        }
    }
    /* outside the experts the activations are those of the plain run */
    const nb_imatrix_entry *a = nb_imatrix_find(&im[0], "blk.1.attn_q.weight"),
                           *b = nb_imatrix_find(&im[1], "blk.1.attn_q.weight");
    ck_assert_mem_eq(a->sum2, b->sum2, 64 * sizeof(double));
    for (int k = 0; k < 2; k++) {
        nb_imatrix_free(&im[k]);
        nb_routing_free(&rt[k]);
    }
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(nan_activation_names_the_tensor) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *model = moe_model(&ctx);
    /* a copy with a NaN in blk.1's attention norm: its matmul inputs turn NaN */
    size_t n;
    unsigned char *b = nbt_read_file(model, &n);
    nb_model *m = NULL;
    ck_assert_int_eq(nb_model_open(model, &m, &ctx), NB_OK);
    const nb_tensor *t = nb_model_find(m, "blk.1.attn_norm.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_gt(t->file_offset, 0);
    float nanv = NAN;
    memcpy(b + t->file_offset + 4, &nanv, 4);
    nb_model_close(m);
    const char *bad = nbt_path("nan.gguf");
    nbt_write_file(bad, b, n);
    free(b);
    nb_calib_opts o = calib_opts();
    nb_imatrix im;
    nb_routing rt;
    nb_calib_result res;
    ck_assert_int_eq(nb_calibrate(bad, &o, &im, &rt, &res, &ctx), NB_ERR_RANGE);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "blk.1.attn_") != NULL, "%s", nb_errmsg(&ctx));
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "NaN"));
    nb_imatrix_free(&im);
    nb_routing_free(&rt);
    nb_ctx_free(&ctx);
}
END_TEST

typedef struct logcap {
    char text[4096];
    int warns;
} logcap;
static void cap_log(void *user, nb_log_level lv, const char *line) {
    logcap *c = user;
    if (lv == NB_LOG_WARN) c->warns++;
    strncat(c->text, line, sizeof c->text - strlen(c->text) - 2);
    strcat(c->text, "\n");
}

START_TEST(experts_without_tokens_are_reported) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    logcap cap = {{0}, 0};
    ctx.log_fn = cap_log;
    ctx.log_user = &cap;
    ctx.log_level = NB_LOG_INFO;
    nb_routing rt;
    ck_assert_int_eq(nb_routing_init(&rt, 3, NULL, &ctx), NB_OK);
    /* layer 1: 4 experts, 3 tokens, 2 chosen each; expert 2 never chosen */
    int32_t sel[6] = {0, 1, 3, 0, 1, 3};
    float w[6] = {0.6f, 0.4f, 0.5f, 0.5f, 0.9f, 0.1f};
    nb_routing_on_route(&rt, 1, sel, w, 3, 2, 4, &ctx);
    ck_assert_int_eq(rt.err, NB_OK);
    ck_assert_int_eq(nb_calib_report_experts(&rt, &ctx), 1);
    ck_assert_int_eq(cap.warns, 1);
    ck_assert_ptr_nonnull(strstr(cap.text, "layer 1: expert 2 saw no calibration token"));
    nb_expert_stats es;
    ck_assert(nb_routing_expert(&rt, 1, 0, &es));
    ck_assert_double_eq_tol(es.freq, 2.0 / 3.0, 1e-12);
    ck_assert_double_eq_tol(es.gate_mean, (0.6 + 0.5) / 2, 1e-7);
    ck_assert(nb_routing_expert(&rt, 1, 2, &es) && es.n_sel == 0 && es.gate_mean == 0);
    ck_assert(!nb_routing_expert(&rt, 0, 0, &es)); /* no data for layer 0 */
    /* a bad expert id is an error, not a crash */
    sel[3] = 9;
    nb_routing_on_route(&rt, 1, sel, w, 3, 2, 4, &ctx);
    ck_assert_int_eq(rt.err, NB_ERR_RANGE);
    nb_routing_free(&rt);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("calib/calibrate");
    TCase *tc = tcase_create("calibrate");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, corpus_chunks_and_sample);
    tcase_add_test(tc, run_on_moe_model);
    tcase_add_test(tc, all_experts_feeds_starved_experts);
    tcase_add_test(tc, nan_activation_names_the_tensor);
    tcase_add_test(tc, experts_without_tokens_are_reported);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
