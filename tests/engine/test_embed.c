/* tests/engine/test_embed.c — text encoders (engine/embed.h) on synthetic
 * gemma-embedding models: unit-norm, finite embeddings; attention that is
 * bidirectional and, on local layers, limited to |i - j| <= window / 2;
 * bit-identical at 1 and 3 threads; the HF directory (with its 2_Dense /
 * 3_Dense modules) gives the GGUF's embeddings; a decoder is refused; the
 * .emb file round-trips and every defect of a bad one is one clear error;
 * the fidelity metrics on known sets. (Agreement with an independent numpy
 * implementation: tests/interop/test_embed_interop.py.) */
#include "engine/embed.h"
#include "engine/embed_impl.h"
#include "formats/synth.h"
#include "testutil.h"

#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define E 64

static const char *synth(const char *name, uint32_t n_layer, uint32_t window) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = nbt_path(name);
    if (!nbt_file_exists(p)) {
        nb_synth_opts o;
        nb_synth_opts_init(&o);
        o.arch = "gemma-embedding";
        o.seed = 11;
        o.n_layer = n_layer;
        o.n_embd = E;
        o.n_ff = 96;
        o.n_head = 4;
        o.n_head_kv = 1;
        o.n_vocab = 300;
        o.sliding_window = window;
        o.dtype = NB_TYPE_F32;
        ck_assert_msg(nb_synth_write(&o, p, &ctx) == NB_OK, "synth: %s", nb_errmsg(&ctx));
    }
    nb_ctx_free(&ctx);
    return p;
}

static nb_embedder *open_or_die(const char *path, int threads, nb_ctx *ctx) {
    nb_embed_opts o = {.n_ctx = 32, .n_threads = threads};
    nb_embedder *m = NULL;
    ck_assert_msg(nb_embed_open(path, &o, &m, ctx) == NB_OK, "%s: %s", path, nb_errmsg(ctx));
    return m;
}

static const int32_t k_toks[] = {2, 77, 200, 3, 255, 42, 77, 9, 130, 1};
#define NT ((int)(sizeof k_toks / sizeof k_toks[0]))

START_TEST(test_unit_norm_and_threads) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = synth("enc6.gguf", 6, 0);
    nb_embedder *m1 = open_or_die(p, 1, &ctx), *m3 = open_or_die(p, 3, &ctx);
    ck_assert_int_eq(nb_embed_dim(m1), E);
    float a[E], b[E], c[E];
    ck_assert(nb_embed_tokens(m1, k_toks, NT, a, &ctx) == NB_OK);
    ck_assert(nb_embed_tokens(m3, k_toks, NT, b, &ctx) == NB_OK);
    ck_assert_mem_eq(a, b, sizeof a); /* any thread count, bit-identical */
    double ss = 0;
    for (int i = 0; i < E; i++) {
        ck_assert(isfinite(a[i]));
        ss += (double)a[i] * a[i];
    }
    ck_assert_double_eq_tol(ss, 1.0, 1e-5);
    /* a text alone: embedding it again (after another text) gives the same vector */
    ck_assert(nb_embed_tokens(m1, k_toks + 3, 4, c, &ctx) == NB_OK);
    ck_assert(nb_embed_tokens(m1, k_toks, NT, c, &ctx) == NB_OK);
    ck_assert_mem_eq(a, c, sizeof a);
    /* too long, bad ids */
    int32_t big[40] = {0};
    ck_assert_int_eq(nb_embed_tokens(m1, big, 40, c, &ctx), NB_ERR_RANGE);
    /* the engine underneath refuses a text split over calls */
    nb_engine *e = nb_embed_engine(m1);
    nb_engine_reset(e);
    ck_assert_int_eq(nb_engine_eval(e, k_toks, 3, 0, NULL, &ctx), NB_OK);
    ck_assert_int_eq(nb_engine_eval(e, k_toks + 3, 3, 3, NULL, &ctx), NB_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "encoder"));
    int32_t bad[2] = {1, 300};
    ck_assert_int_eq(nb_embed_tokens(m1, bad, 2, c, &ctx), NB_ERR_RANGE);
    /* the synthetic vocabulary tokenizes text: BOS added */
    int n_tok = 0;
    ck_assert_msg(nb_embed_text(m1, "hello", 5, c, &n_tok, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_int_gt(n_tok, 1);
    nb_embed_free(m1);
    nb_embed_free(m3);
    nb_ctx_free(&ctx);
}
END_TEST

/* Hidden state of token t after the model's layers and final norm. */
static void hidden_row(nb_embedder *m, const int32_t *toks, int n, int t, float *out, nb_ctx *ctx) {
    float emb[E];
    ck_assert(nb_embed_tokens(m, toks, n, emb, ctx) == NB_OK);
    memcpy(out, m->eng->xb + (size_t)t * E, sizeof(float) * E);
}

START_TEST(test_bidirectional_window) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    /* one local layer with window 4: token i sees |i - j| <= 2 */
    nb_embedder *m = open_or_die(synth("enc1w4.gguf", 1, 4), 1, &ctx);
    int32_t t2[NT];
    float r0[E], r1[E];
    /* a later token within the window changes token 0 (not causal) */
    memcpy(t2, k_toks, sizeof t2);
    t2[2] = 150;
    hidden_row(m, k_toks, NT, 0, r0, &ctx);
    hidden_row(m, t2, NT, 0, r1, &ctx);
    ck_assert(memcmp(r0, r1, sizeof r0) != 0);
    /* ... one beyond it does not */
    memcpy(t2, k_toks, sizeof t2);
    t2[3] = 150;
    hidden_row(m, t2, NT, 0, r1, &ctx);
    ck_assert_mem_eq(r0, r1, sizeof r0);
    /* symmetric: token 5 sees 3 and 7, not 2 or 8 */
    hidden_row(m, k_toks, NT, 5, r0, &ctx);
    memcpy(t2, k_toks, sizeof t2);
    t2[2] = 150;
    t2[8] = 151;
    hidden_row(m, t2, NT, 5, r1, &ctx);
    ck_assert_mem_eq(r0, r1, sizeof r0);
    t2[7] = 152;
    hidden_row(m, t2, NT, 5, r1, &ctx);
    ck_assert(memcmp(r0, r1, sizeof r0) != 0);
    nb_embed_free(m);
    /* six layers (the sixth global): the last token reaches the first */
    m = open_or_die(synth("enc6.gguf", 6, 0), 1, &ctx);
    memcpy(t2, k_toks, sizeof t2);
    t2[NT - 1] = 150;
    hidden_row(m, k_toks, NT, 0, r0, &ctx);
    hidden_row(m, t2, NT, 0, r1, &ctx);
    ck_assert(memcmp(r0, r1, sizeof r0) != 0);
    nb_embed_free(m);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(test_hf_dir_matches_gguf) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *g = synth("enc6.gguf", 6, 0);
    const char *d = synth("enc6_hf", 6, 0);
    ck_assert(nbt_file_exists(nbt_path("enc6_hf/2_Dense/model.safetensors")));
    nb_embedder *mg = open_or_die(g, 1, &ctx), *md = NULL;
    nb_embed_opts o = {.n_ctx = 32, .n_threads = 1};
    ck_assert_msg(nb_embed_open(d, &o, &md, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_int_eq(md->n_dense, 4 * E);
    float a[E], b[E];
    ck_assert(nb_embed_tokens(mg, k_toks, NT, a, &ctx) == NB_OK);
    ck_assert(nb_embed_tokens(md, k_toks, NT, b, &ctx) == NB_OK);
    ck_assert_mem_eq(a, b, sizeof a);
    ck_assert(!nb_embed_has_tokenizer(md));
    ck_assert_int_eq(nb_embed_text(md, "x", 1, b, NULL, &ctx), NB_ERR_UNSUPPORTED);
    nb_embed_free(mg);
    nb_embed_free(md);
    nb_ctx_free(&ctx);
}
END_TEST

/* 1_Pooling/config.json: mean pooling is read, anything else refused */
START_TEST(test_hf_pooling_config) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *d = synth("enc1_hfp", 1, 0);
    char dir[512], cfg[600];
    snprintf(dir, sizeof dir, "%s/1_Pooling", d);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    ck_assert(mkdir(dir, 0777) == 0 || errno == EEXIST);
    const char *mean = "{\"pooling_mode_mean_tokens\": true, \"pooling_mode_cls_token\": false}";
    nbt_write_file(cfg, mean, strlen(mean));
    nb_embed_opts o = {.n_ctx = 8, .n_threads = 1};
    nb_embedder *m = NULL;
    ck_assert_msg(nb_embed_open(d, &o, &m, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_embed_free(m);
    const char *cls = "{\"pooling_mode_mean_tokens\": false, \"pooling_mode_cls_token\": true}";
    nbt_write_file(cfg, cls, strlen(cls));
    m = NULL;
    ck_assert_int_eq(nb_embed_open(d, &o, &m, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "1_Pooling/config.json"));
    ck_assert_ptr_null(m);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(test_decoder_refused) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.n_embd = 64;
    o.n_vocab = 300;
    const char *p = nbt_path("llama.gguf");
    ck_assert(nb_synth_write(&o, p, &ctx) == NB_OK);
    nb_embedder *m = NULL;
    ck_assert_int_eq(nb_embed_open(p, NULL, &m, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "not a text encoder"));
    nb_ctx_free(&ctx);
}
END_TEST

static nb_emb_set make_set(uint32_t dim, uint64_t count, uint64_t seed) {
    nb_emb_set s = {.dim = dim, .count = count};
    s.v = malloc(sizeof(float) * dim * count);
    ck_assert_ptr_nonnull(s.v);
    for (uint64_t i = 0; i < dim * count; i++) s.v[i] = nbt_rand_normal(&seed);
    memset(s.text_sha, 7, sizeof s.text_sha);
    return s;
}

static void expect_bad(const char *name, const void *data, size_t n, const char *needle) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = nbt_path(name);
    nbt_write_file(p, data, n);
    nb_emb_set s;
    ck_assert_int_eq(nb_emb_read(p, &s, &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_null(s.v);
    ck_assert_msg(strstr(nb_errmsg(&ctx), needle) && strstr(nb_errmsg(&ctx), name), "%s: '%s'", name,
                  nb_errmsg(&ctx));
    nb_ctx_free(&ctx);
}

START_TEST(test_emb_file) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_emb_set s = make_set(5, 3, 1), r;
    const char *p = nbt_path("a.emb");
    ck_assert(nb_emb_write(p, &s, &ctx) == NB_OK);
    ck_assert(!nbt_partial_exists(p));
    ck_assert(nb_emb_read(p, &r, &ctx) == NB_OK);
    ck_assert_uint_eq(r.dim, 5);
    ck_assert_uint_eq(r.count, 3);
    ck_assert_mem_eq(r.v, s.v, sizeof(float) * 15);
    ck_assert_mem_eq(r.text_sha, s.text_sha, 32);
    size_t n;
    unsigned char *raw = nbt_read_file(p, &n);
    ck_assert_uint_eq(n, NB_EMB_HEADER + 15 * 4);
    ck_assert_mem_eq(raw, NB_EMB_MAGIC, 8);
    expect_bad("short.emb", raw, 20, "shorter than the header");
    expect_bad("trunc.emb", raw, n - 1, "need");
    unsigned char *bad = malloc(n + 4);
    ck_assert_ptr_nonnull(bad);
    memcpy(bad, raw, n);
    memset(bad + n, 0, 4);
    expect_bad("long.emb", bad, n + 4, "need");
    bad[0] = 'X';
    expect_bad("magic.emb", bad, n, "bad magic");
    memcpy(bad, raw, n);
    bad[8] = 2;
    expect_bad("ver.emb", bad, n, "version 2");
    memcpy(bad, raw, n);
    memset(bad + 12, 0, 4);
    expect_bad("dim0.emb", bad, n, "dimension 0");
    memcpy(bad, raw, n);
    memset(bad + 16, 0xff, 8); /* a huge count: refused before any allocation */
    expect_bad("count.emb", bad, n, "count");
    memcpy(bad, raw, n);
    const float nan = NAN;
    memcpy(bad + NB_EMB_HEADER + 7 * 4, &nan, 4);
    expect_bad("nan.emb", bad, n, "embedding 1, value 2 is not finite");
    free(bad);
    free(raw);
    nb_emb_set_free(&r);
    nb_emb_set_free(&s);
    ck_assert_ptr_null(s.v);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(test_compare_metrics) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    /* 4 queries, 4 corpus rows; corpus row 4+i = query i + small noise: every pair is found */
    nb_emb_set base = make_set(16, 8, 3);
    uint64_t seed = 99;
    for (int q = 0; q < 4; q++)
        for (int i = 0; i < 16; i++) base.v[(4 + q) * 16 + i] = base.v[q * 16 + i] + 0.1f * nbt_rand_normal(&seed);
    nb_emb_compare c;
    ck_assert(nb_emb_compare_sets(&base, &base, false, &c, &ctx) == NB_OK);
    ck_assert_double_eq_tol(c.cos_dist_mean, 0.0, 1e-12);
    ck_assert_uint_eq(c.n_query, 4);
    ck_assert_uint_eq(c.same_nn, 4);
    ck_assert_uint_eq(c.hits_base, 4);
    ck_assert_uint_eq(c.hits_test, 4);
    /* the test set: row 5 replaced by a copy of row 4 (query 1's nearest corpus row moves to row 4:
     * its pair is now identical to query 0's pair); row 0 scaled (cosine unchanged) */
    nb_emb_set t = make_set(16, 8, 3);
    memcpy(t.v, base.v, sizeof(float) * 16 * 8);
    memcpy(t.v + 5 * 16, base.v + 4 * 16, sizeof(float) * 16);
    for (int i = 0; i < 16; i++) t.v[i] *= 3.0f;
    ck_assert(nb_emb_compare_sets(&t, &base, false, &c, &ctx) == NB_OK);
    ck_assert_uint_eq(c.worst, 5);
    ck_assert_double_gt(c.cos_dist_max, 0.01);
    ck_assert_double_eq_tol(c.cos_dist_mean, c.cos_dist_max / 8, 1e-9);
    ck_assert_uint_eq(c.same_nn, 3);
    ck_assert_uint_eq(c.hits_test, 3);
    ck_assert_uint_eq(c.hits_base, 4);
    char *js = nb_emb_compare_json(&c);
    ck_assert_ptr_nonnull(strstr(js, "\"same_nn\":3"));
    free(js);
    /* different texts, shapes */
    t.text_sha[0] ^= 1;
    ck_assert_int_eq(nb_emb_compare_sets(&t, &base, false, &c, &ctx), NB_ERR_FORMAT);
    ck_assert(nb_emb_compare_sets(&t, &base, true, &c, &ctx) == NB_OK);
    t.count = 7;
    ck_assert_int_eq(nb_emb_compare_sets(&t, &base, true, &c, &ctx), NB_ERR_FORMAT);
    nb_emb_set_free(&t);
    nb_emb_set_free(&base);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("embed");
    TCase *tc = tcase_create("embed");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_unit_norm_and_threads);
    tcase_add_test(tc, test_bidirectional_window);
    tcase_add_test(tc, test_hf_dir_matches_gguf);
    tcase_add_test(tc, test_hf_pooling_config);
    tcase_add_test(tc, test_decoder_refused);
    tcase_add_test(tc, test_emb_file);
    tcase_add_test(tc, test_compare_metrics);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
