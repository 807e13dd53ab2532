/* tests/formats/test_synth.c — synthetic models: byte-identical for a seed at
 * any thread count, different for another seed, GGUF and HF outputs of the
 * same options open to the same tensors (names, shapes, types, bytes) and
 * metadata for every architecture, sharded HF output, size fitting, usage
 * errors. */
#include "core/fp.h"
#include "formats/hf.h"
#include "formats/readers.h"
#include "formats/synth.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static nb_synth_opts small_opts(const char *arch, uint64_t seed) {
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.arch = arch;
    o.seed = seed;
    o.n_layer = 2;
    o.n_embd = 64;
    o.n_ff = 96;
    o.n_head = 4;
    o.n_head_kv = 2;
    o.n_vocab = 300;
    o.dtype = NB_TYPE_BF16;
    return o;
}

START_TEST(test_deterministic_any_threads) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_synth_opts o = small_opts("qwen2moe", 11);
    o.n_embd = 128;
    o.n_ff = 160;
    o.n_vocab = 4000; /* a few chunks per tensor with threads */
    const char *a = nbt_path("det1.gguf"), *b = nbt_path("det4.gguf"), *c = nbt_path("det_other.gguf");
    ctx.n_threads = 1;
    ck_assert_int_eq(nb_synth_write(&o, a, &ctx), NB_OK);
    ctx.n_threads = 4;
    ck_assert_int_eq(nb_synth_write(&o, b, &ctx), NB_OK);
    o.seed = 12;
    ck_assert_int_eq(nb_synth_write(&o, c, &ctx), NB_OK);
    size_t na, nb, nc;
    unsigned char *da = nbt_read_file(a, &na), *db = nbt_read_file(b, &nb), *dc = nbt_read_file(c, &nc);
    ck_assert_ptr_nonnull(da);
    ck_assert_uint_eq(na, nb);
    ck_assert_mem_eq(da, db, na);
    ck_assert_uint_eq(na, nc); /* same shapes */
    ck_assert(memcmp(da, dc, na) != 0);
    ck_assert(!nbt_partial_exists(nbt_path("det1.gguf")));
    free(da);
    free(db);
    free(dc);
    nb_ctx_free(&ctx);
}
END_TEST

/* Open both outputs and compare every tensor and the architecture metadata. */
static void compare_models(const char *gguf, const char *dir, nb_ctx *ctx) {
    nb_model *g = NULL, *h = NULL;
    ck_assert_msg(nb_model_open(gguf, &g, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    ck_assert_msg(nb_hf_open(dir, &h, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    ck_assert_int_eq(h->format, NB_FMT_HF_DIR);
    ck_assert_uint_eq(h->n_tensors, g->n_tensors);
    for (size_t i = 0; i < g->n_tensors; i++) {
        const nb_tensor *a = &g->tensors[i], *b = &h->tensors[i];
        ck_assert_str_eq(b->name, a->name); /* same canonical order */
        ck_assert_int_eq(b->type, a->type);
        ck_assert_uint_eq(b->n_dims, a->n_dims);
        for (int d = 0; d < NB_MAX_DIMS; d++) ck_assert_int_eq(b->ne[d], a->ne[d]);
        ck_assert_uint_eq(b->nbytes, a->nbytes);
        ck_assert(!nb_hf_is_unmapped(h, i));
        unsigned char *x = malloc(a->nbytes), *y = malloc(b->nbytes);
        ck_assert_int_eq(nb_model_read_tensor(g, i, x, ctx), NB_OK);
        ck_assert_msg(nb_model_read_tensor(h, i, y, ctx) == NB_OK, "%s", nb_errmsg(ctx));
        ck_assert_msg(memcmp(x, y, a->nbytes) == 0, "%s: tensor %s differs", dir, a->name);
        /* nb_model_tensor_bytes: the mapping itself when there is one (GGUF),
         * else an owned copy of what nb_model_read_tensor gives (HF: permuted,
         * stacked and shifted tensors have no mapping) */
        const void *bx, *by;
        void *ox, *oy;
        ck_assert_int_eq(nb_model_tensor_bytes(g, i, &bx, &ox, ctx), NB_OK);
        ck_assert_ptr_eq(bx, a->data);
        ck_assert_ptr_null(ox);
        ck_assert_int_eq(nb_model_tensor_bytes(h, i, &by, &oy, ctx), NB_OK);
        if (b->data) ck_assert(by == b->data && oy == NULL);
        else ck_assert(by == oy && oy != NULL);
        ck_assert(memcmp(by, y, b->nbytes) == 0);
        free(oy);
        free(x);
        free(y);
    }
    /* every architecture key the HF side derives equals the GGUF synth's */
    for (size_t k = 0; k < h->kv.n; k++) {
        const nb_kv *e = &h->kv.items[k];
        if (strcmp(e->key, "general.name") == 0) continue;
        const nb_kv_value *gv = nb_kv_get(&g->kv, e->key);
        ck_assert_msg(gv != NULL, "%s missing in GGUF", e->key);
        char s1[256], s2[256];
        ck_assert_str_eq(nb_kv_value_fmt(&e->val, s1, sizeof s1), nb_kv_value_fmt(gv, s2, sizeof s2));
    }
    nb_model_close(g);
    nb_model_close(h);
}

START_TEST(test_gguf_equals_hf_every_arch) {
    static const char *const archs[] = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "gemma3"};
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.n_threads = 2;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
        nb_synth_opts o = small_opts(archs[i], 100 + i);
        if (i % 2) o.dtype = NB_TYPE_F16;
        char gname[64], dname[64];
        snprintf(gname, sizeof gname, "rt-%s.gguf", archs[i]);
        snprintf(dname, sizeof dname, "rt-%s", archs[i]);
        char gpath[512], dpath[512];
        snprintf(gpath, sizeof gpath, "%s", nbt_path(gname));
        snprintf(dpath, sizeof dpath, "%s", nbt_path(dname));
        ck_assert_msg(nb_synth_write(&o, gpath, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
        ck_assert_msg(nb_synth_write(&o, dpath, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
        char cfg[600];
        snprintf(cfg, sizeof cfg, "%s/config.json", dpath);
        ck_assert(nbt_file_exists(cfg));
        compare_models(gpath, dpath, &ctx);
    }
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(test_values) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_synth_opts o = small_opts("gemma3", 3);
    o.dtype = NB_TYPE_F32;
    o.n_embd = 256;
    o.n_vocab = 2000;
    const char *p = nbt_path("values.gguf");
    ck_assert_int_eq(nb_synth_write(&o, p, &ctx), NB_OK);
    nb_model *m;
    ck_assert_int_eq(nb_model_open(p, &m, &ctx), NB_OK);
    ck_assert_str_eq(nb_kv_get_str(&m->kv, "general.architecture"), "gemma3");
    ck_assert_str_eq(nb_kv_get_str(&m->kv, "tokenizer.ggml.model"), "llama");
    uint64_t nv;
    ck_assert(nb_kv_get_u64(&m->kv, "gemma3.vocab_size", &nv));
    ck_assert_uint_eq(nv, 2000);
    ck_assert_ptr_null(nb_model_find(m, "output.weight")); /* gemma ties embeddings */
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *t = &m->tensors[i];
        uint64_t n = nb_tensor_nelements(t);
        float *f = malloc(n * sizeof *f);
        ck_assert_int_eq(nb_model_read_f32(m, i, f, &ctx), NB_OK);
        if (strstr(t->name, "norm")) {
            for (uint64_t k = 0; k < n; k++) ck_assert_float_eq(f[k], 1.0f);
        } else {
            double s = 0, s2 = 0;
            for (uint64_t k = 0; k < n; k++) {
                s += f[k];
                s2 += (double)f[k] * f[k];
                ck_assert_float_eq(f[k], nb_synth_value(3, t->name, k));
            }
            double mean = s / (double)n, sd = sqrt(s2 / (double)n - mean * mean);
            if (n >= 10000) {
                ck_assert_double_lt(fabs(mean), 0.002);
                ck_assert_double_lt(fabs(sd - 0.02), 0.002);
            }
        }
        free(f);
    }
    nb_model_close(m);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(test_sharded_hf) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_synth_opts o = small_opts("mixtral", 9);
    o.shard_bytes = 20000; /* many shards */
    const char *d = nbt_path("sharded");
    ck_assert_msg(nb_synth_write(&o, d, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    ck_assert(nbt_file_exists(p));
    snprintf(p, sizeof p, "%s/model-00002-of-", d);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    ck_assert(!nbt_file_exists(p));
    const char *g = nbt_path("sharded.gguf");
    ck_assert_int_eq(nb_synth_write(&o, g, &ctx), NB_OK);
    compare_models(g, d, &ctx);
    /* rewriting the same directory unsharded removes the stale index */
    o.shard_bytes = 0;
    ck_assert_int_eq(nb_synth_write(&o, d, &ctx), NB_OK);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    ck_assert(!nbt_file_exists(p));
    compare_models(g, d, &ctx);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(test_size_fit) {
    static const struct { const char *arch; uint64_t target; nb_type t; } cases[] = {
        {"llama", 1000000000ull, NB_TYPE_F16}, {"llama", 4000000000ull, NB_TYPE_F16},
        {"qwen3", 300000000ull, NB_TYPE_BF16},  {"mixtral", 2000000000ull, NB_TYPE_BF16},
        {"qwen2moe", 1000000000ull, NB_TYPE_F32}, {"gemma3", 500000000ull, NB_TYPE_F16},
    };
    nb_ctx ctx;
    nbt_ctx(&ctx);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nb_synth_opts o;
        nb_synth_opts_init(&o);
        o.arch = cases[i].arch;
        o.dtype = cases[i].t;
        o.target_bytes = cases[i].target;
        const nb_arch *a;
        nb_hparams hp;
        ck_assert_msg(nb_synth_hparams(&o, &a, &hp, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
        double got = (double)nb_synth_data_bytes(a, &hp, o.dtype);
        ck_assert_msg(fabs(got / (double)cases[i].target - 1) < 0.03, "%s %llu: got %.0f (dim %u layers %u ff %u)",
                      cases[i].arch, (unsigned long long)cases[i].target, got, hp.n_embd, hp.n_layer, hp.n_ff);
        ck_assert_uint_ge(hp.n_layer, 2);
    }
    /* explicit dims are kept */
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.target_bytes = 1000000000ull;
    o.n_layer = 8;
    const nb_arch *a;
    nb_hparams hp;
    ck_assert_int_eq(nb_synth_hparams(&o, &a, &hp, &ctx), NB_OK);
    ck_assert_uint_eq(hp.n_layer, 8);
    double got = (double)nb_synth_data_bytes(a, &hp, o.dtype);
    ck_assert_double_lt(fabs(got / 1e9 - 1), 0.03);
    o.n_layer = 0;
    o.target_bytes = 1000; /* impossible */
    ck_assert_int_eq(nb_synth_hparams(&o, &a, &hp, &ctx), NB_ERR_INVALID);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(test_usage_errors) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_synth_opts o = small_opts("gpt2", 1);
    ck_assert_int_eq(nb_synth_write(&o, nbt_path("x.gguf"), &ctx), NB_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "gpt2"));
    o = small_opts("llama", 1);
    o.dtype = NB_TYPE_Q4_0;
    ck_assert_int_eq(nb_synth_write(&o, nbt_path("x.gguf"), &ctx), NB_ERR_INVALID);
    o = small_opts("llama", 1);
    o.n_expert = 4;
    ck_assert_int_eq(nb_synth_write(&o, nbt_path("x.gguf"), &ctx), NB_ERR_INVALID);
    o = small_opts("llama", 1);
    o.n_head_kv = 3;
    ck_assert_int_eq(nb_synth_write(&o, nbt_path("x.gguf"), &ctx), NB_ERR_INVALID);
    o = small_opts("llama", 1);
    ck_assert_int_eq(nb_synth_write(&o, nbt_path("x.safetensors"), &ctx), NB_ERR_INVALID);
    ck_assert(!nbt_file_exists(nbt_path("x.gguf")));
    nbt_write_file(nbt_path("afile"), "x", 1);
    ck_assert_int_ne(nb_synth_write(&o, nbt_path("afile"), &ctx), NB_OK);
    nb_ctx_free(&ctx);
}
END_TEST

static Suite *synth_suite(void) {
    Suite *s = suite_create("synth");
    TCase *tc = tcase_create("synth");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_deterministic_any_threads);
    tcase_add_test(tc, test_gguf_equals_hf_every_arch);
    tcase_add_test(tc, test_values);
    tcase_add_test(tc, test_sharded_hf);
    tcase_add_test(tc, test_size_fit);
    tcase_add_test(tc, test_usage_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return nbt_run_suite(synth_suite());
}
