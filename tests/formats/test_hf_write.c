/* tests/formats/test_hf_write.c — Hugging Face directories out (formats/hf_write.h, core/adir.h).
 *
 * A synthetic model of every dense and MoE family written as an HF directory
 * reads back (nb_hf_open: HF names mapped, q/k permuted, norms shifted,
 * experts stacked again) into the source's values, one file or sharded with
 * an index; a single-file output carries HF names; bad requests (no known
 * architecture, a K-quant linear to GPTQ) fail naming the problem and leave
 * nothing; atomic directories lock, refuse non-empty targets and clean up;
 * MoE models export to bnb-nf4 per expert with the router left in float;
 * llama3 rope_scaling survives HF -> GGUF (rope_freqs.weight only) -> HF -> GGUF,
 * also through the GGUF key rope.scaling.original_context_length, and values no
 * llama3 parameters give are dropped.
 */
#include "formats/hf_write.h"

#include "core/adir.h"
#include "core/str.h"
#include "formats/convert.h"
#include "formats/synth.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void synth(const char *arch, nb_type dtype, const char *path, nb_ctx *ctx) {
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.arch = arch;
    o.n_layer = 2;
    o.n_embd = 64;
    o.n_ff = 96;
    o.n_head = 4;
    o.n_head_kv = 2;
    o.n_vocab = 128;
    if (strstr(arch, "moe") || strcmp(arch, "mixtral") == 0) {
        o.n_expert = 4;
        o.n_expert_used = 2;
    }
    o.dtype = dtype;
    o.seed = 3;
    ck_assert_msg(nb_synth_write(&o, path, ctx) == NB_OK, "%s", nb_errmsg(ctx));
}

/* Every tensor of a reads back with the same values from b (by name). */
static void same_values(const char *a_path, const char *b_path, nb_ctx *ctx) {
    nb_model *a = NULL, *b = NULL;
    ck_assert_int_eq(nb_model_open(a_path, &a, ctx), NB_OK);
    ck_assert_msg(nb_model_open(b_path, &b, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    /* rope_freqs.weight comes back only when config.json could carry it (llama3 rope scaling) */
    bool dropped = nb_model_find(a, "rope_freqs.weight") && !nb_model_find(b, "rope_freqs.weight");
    ck_assert_uint_eq(a->n_tensors, b->n_tensors + dropped);
    for (size_t i = 0; i < a->n_tensors; i++) {
        const nb_tensor *ta = &a->tensors[i];
        if (dropped && strcmp(ta->name, "rope_freqs.weight") == 0) continue;
        const nb_tensor *tb = nb_model_find(b, ta->name);
        ck_assert_msg(tb != NULL, "%s missing in %s", ta->name, b_path);
        uint64_t n = nb_tensor_nelements(ta);
        ck_assert_uint_eq(n, nb_tensor_nelements(tb));
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
        ck_assert_int_eq(nb_model_read_f32(a, i, x, ctx), NB_OK);
        ck_assert_int_eq(nb_model_read_f32(b, (size_t)(tb - b->tensors), y, ctx), NB_OK);
        ck_assert_msg(memcmp(x, y, n * sizeof *x) == 0, "%s: values differ after the HF round trip", ta->name);
        free(x);
        free(y);
    }
    nb_model_close(a);
    nb_model_close(b);
}

static int count_files(const char *dir, const char *suffix) {
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (nb_str_ends_with(e->d_name, suffix)) n++;
    closedir(d);
    return n;
}

static bool leftovers(const char *path) {
    char p[1024];
    snprintf(p, sizeof p, "%s.lock", path);
    if (nbt_file_exists(p)) return true;
    const char *slash = strrchr(path, '/');
    char dir[1024];
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    DIR *d = opendir(dir);
    bool found = false;
    struct dirent *e;
    size_t nb = strlen(slash + 1);
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, slash + 1, nb) && strstr(e->d_name + nb, ".partial.")) found = true;
    if (d) closedir(d);
    return found;
}

START_TEST(round_trip) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *archs[] = {"llama", "qwen2", "gemma3", "mixtral", "qwen3moe"};
    for (size_t k = 0; k < sizeof archs / sizeof archs[0]; k++) {
        char src[64], dir[64];
        snprintf(src, sizeof src, "%s.gguf", archs[k]);
        snprintf(dir, sizeof dir, "%s_hf", archs[k]);
        synth(archs[k], NB_TYPE_F32, nbt_path(src), &ctx);
        nb_hf_write_opts o = {0};
        nb_hf_write_result r;
        ck_assert_msg(nb_hf_write_path(nbt_path(src), nbt_path(dir), &o, &r, &ctx) == NB_OK, "%s: %s", archs[k],
                      nb_errmsg(&ctx));
        ck_assert_uint_eq(r.n_shards, 1);
        ck_assert_int_eq(count_files(nbt_path(dir), ".safetensors"), 1);
        ck_assert_int_eq(count_files(nbt_path(dir), "config.json"), 2); /* config + generation_config */
        ck_assert(!leftovers(nbt_path(dir)));
        same_values(nbt_path(src), nbt_path(dir), &ctx);
    }
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(sharded) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    synth("llama", NB_TYPE_F16, nbt_path("s.gguf"), &ctx);
    nb_hf_write_opts o = {.max_shard_size = 20000};
    nb_hf_write_result r;
    ck_assert_int_eq(nb_hf_write_path(nbt_path("s.gguf"), nbt_path("s_hf"), &o, &r, &ctx), NB_OK);
    ck_assert_uint_gt(r.n_shards, 3);
    ck_assert_int_eq(count_files(nbt_path("s_hf"), ".safetensors"), (int)r.n_shards);
    char idx[1024];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", nbt_path("s_hf"));
    size_t n;
    unsigned char *text = nbt_read_file(idx, &n);
    ck_assert_ptr_nonnull(text);
    cJSON *j = cJSON_ParseWithLength((const char *)text, n);
    const cJSON *map = cJSON_GetObjectItem(j, "weight_map");
    ck_assert_int_eq(cJSON_GetArraySize(map), (int)r.n_tensors);
    char want[64];
    snprintf(want, sizeof want, "model-00001-of-%05zu.safetensors", r.n_shards);
    const cJSON *emb = cJSON_GetObjectItem(map, "model.embed_tokens.weight");
    ck_assert_ptr_nonnull(emb);
    ck_assert_str_eq(emb->valuestring, want); /* the first tensor group opens the first shard */
    const cJSON *total = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "metadata"), "total_size");
    ck_assert(cJSON_IsNumber(total) && total->valuedouble > 20000);
    cJSON_Delete(j);
    free(text);
    same_values(nbt_path("s.gguf"), nbt_path("s_hf"), &ctx);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(single_file) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    synth("qwen2", NB_TYPE_BF16, nbt_path("q.gguf"), &ctx);
    nb_hf_write_opts o = {.single_file = nbt_path("q.safetensors")};
    nb_hf_write_result r;
    ck_assert_int_eq(nb_hf_write_path(nbt_path("q.gguf"), NULL, &o, &r, &ctx), NB_OK);
    nb_model *m = NULL;
    ck_assert_int_eq(nb_model_open(nbt_path("q.safetensors"), &m, &ctx), NB_OK);
    const nb_tensor *t = nb_model_find(m, "model.layers.1.self_attn.k_proj.bias");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->type, NB_TYPE_BF16); /* the source's float type */
    ck_assert_ptr_nonnull(nb_model_find(m, "model.embed_tokens.weight"));
    ck_assert_ptr_null(nb_model_find(m, "token_embd.weight"));
    nb_model_close(m);
    ck_assert(!nbt_partial_exists(nbt_path("q.safetensors")));
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(refusals) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    synth("llama", NB_TYPE_F16, nbt_path("r.gguf"), &ctx);
    nb_hf_write_result r;
    /* GPTQ needs INT4 linears: an f16 model names its first linear */
    nb_hf_write_opts o = {.quant = NB_HF_GPTQ};
    ck_assert_int_eq(nb_hf_write_path(nbt_path("r.gguf"), nbt_path("r_gptq"), &o, &r, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "tensor 'blk.0.attn_q.weight' is f16"));
    ck_assert(!nbt_file_exists(nbt_path("r_gptq")) && !leftovers(nbt_path("r_gptq")));
    /* MoE: one bnb state per expert Linear; the router stays float and is listed for transformers */
    synth("mixtral", NB_TYPE_F16, nbt_path("m.gguf"), &ctx);
    o.quant = NB_HF_BNB_NF4;
    ck_assert_msg(nb_hf_write_path(nbt_path("m.gguf"), nbt_path("m_bnb"), &o, &r, &ctx) == NB_OK, "%s",
                  nb_errmsg(&ctx));
    nb_model *mm;
    ck_assert_int_eq(nb_model_open(nbt_path("m_bnb/model.safetensors"), &mm, &ctx), NB_OK);
    ck_assert_ptr_nonnull(nb_model_find(mm, "model.layers.1.block_sparse_moe.experts.3.w2.weight.quant_state.bitsandbytes__nf4"));
    const nb_tensor *router = nb_model_find(mm, "model.layers.0.block_sparse_moe.gate.weight");
    ck_assert(router && router->type == NB_TYPE_F16);
    nb_model_close(mm);
    size_t cn;
    char *cfg = (char *)nbt_read_file(nbt_path("m_bnb/config.json"), &cn);
    ck_assert_ptr_nonnull(strstr(cfg, "\"block_sparse_moe.gate\""));
    free(cfg);
    /* a bare safetensors file has no architecture */
    o.quant = NB_HF_PLAIN;
    nb_hf_write_opts so = {.single_file = nbt_path("bare.safetensors")};
    ck_assert_int_eq(nb_hf_write_path(nbt_path("r.gguf"), NULL, &so, &r, &ctx), NB_OK);
    ck_assert_int_eq(nb_hf_write_path(nbt_path("bare.safetensors"), nbt_path("bare_hf"), &o, &r, &ctx),
                     NB_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "has no Hugging Face layout"));
    ck_assert(!nbt_file_exists(nbt_path("bare_hf")) && !leftovers(nbt_path("bare_hf")));
    /* a bad dtype */
    nb_hf_write_opts bo = {.dtype = NB_TYPE_Q8_0, .dtype_set = true};
    ck_assert_int_eq(nb_hf_write_path(nbt_path("r.gguf"), nbt_path("bad_dt"), &bo, &r, &ctx), NB_ERR_INVALID);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(linear_names) {
    ck_assert(nb_hf_is_linear("blk.0.attn_q.weight"));
    ck_assert(nb_hf_is_linear("blk.12.ffn_down.weight"));
    ck_assert(nb_hf_is_linear("blk.3.attn_output.weight"));
    ck_assert(!nb_hf_is_linear("blk.0.attn_norm.weight"));
    ck_assert(!nb_hf_is_linear("blk.0.attn_q.bias"));
    ck_assert(!nb_hf_is_linear("blk..attn_q.weight"));
    ck_assert(!nb_hf_is_linear("blk.0.ffn_down_exps.weight")); /* stacked: one Linear per expert */
    ck_assert(nb_hf_is_linear("blk.0.ffn_up_shexp.weight"));
    ck_assert(!nb_hf_is_linear("blk.0.ffn_gate_inp.weight"));
    ck_assert(!nb_hf_is_linear("blk.0.ffn_gate_inp_shexp.weight"));
    ck_assert(!nb_hf_is_linear("output.weight"));
    ck_assert(!nb_hf_is_linear("token_embd.weight"));
    nb_hf_quant q;
    ck_assert(nb_hf_quant_from_name("bnb-nf4", &q) && q == NB_HF_BNB_NF4);
    ck_assert(nb_hf_quant_from_name("awq", &q) && q == NB_HF_AWQ);
    ck_assert(!nb_hf_quant_from_name("gguf", &q));
}
END_TEST

START_TEST(adir) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = nbt_path("adir_out");
    nb_adir a, b;
    ck_assert_int_eq(nb_adir_open(&a, p, &ctx), NB_OK);
    ck_assert_int_eq(nb_adir_open(&b, p, &ctx), NB_ERR_IO); /* a second writer */
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "another process is writing this directory"));
    char *f = nb_adir_file(&a, "x.txt", &ctx);
    nbt_write_file(f, "hi", 2);
    free(f);
    ck_assert(!nbt_file_exists(p));
    ck_assert_int_eq(nb_adir_commit(&a, &ctx), NB_OK);
    char x[1100];
    snprintf(x, sizeof x, "%s/x.txt", p);
    ck_assert(nbt_file_exists(x) && !leftovers(p));
    struct stat st;
    ck_assert(stat(p, &st) == 0 && (st.st_mode & 0055) != 0); /* not mkdtemp's 0700 */
    nb_adir_abort(&a);                                         /* after commit: harmless */
    /* a non-empty directory is refused; an empty one is replaced */
    ck_assert_int_eq(nb_adir_open(&a, p, &ctx), NB_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "not empty"));
    unlink(x);
    ck_assert_int_eq(nb_adir_open(&a, p, &ctx), NB_OK);
    f = nb_adir_file(&a, "y.txt", &ctx);
    nbt_write_file(f, "yo", 2);
    free(f);
    nb_adir_abort(&a); /* nothing left, the empty target untouched */
    ck_assert(!leftovers(p));
    snprintf(x, sizeof x, "%s/y.txt", p);
    ck_assert(!nbt_file_exists(x));
    /* a stale partial of a dead writer is removed by the next one */
    char stale[1024];
    snprintf(stale, sizeof stale, "%s.partial.ABCDEF", p);
    ck_assert_int_eq(mkdir(stale, 0755), 0);
    snprintf(x, sizeof x, "%s/junk", stale);
    nbt_write_file(x, "j", 1);
    ck_assert_int_eq(nb_adir_open(&a, p, &ctx), NB_OK);
    ck_assert(!nbt_file_exists(stale));
    ck_assert_int_eq(nb_adir_commit(&a, &ctx), NB_OK);
    /* a file in the way */
    nbt_write_file(nbt_path("afile"), "f", 1);
    ck_assert_int_eq(nb_adir_open(&a, nbt_path("afile"), &ctx), NB_ERR_INVALID);
    nb_ctx_free(&ctx);
}
END_TEST

/* config.json's rope_scaling of dir (NULL: none), parsed; free with cJSON_Delete. */
static cJSON *rope_scaling_of(const char *dir, cJSON **root) {
    char p[1024];
    snprintf(p, sizeof p, "%s/config.json", dir);
    size_t n;
    char *b = (char *)nbt_read_file(p, &n);
    ck_assert_ptr_nonnull(b);
    *root = cJSON_ParseWithLength(b, n);
    free(b);
    ck_assert_ptr_nonnull(*root);
    return cJSON_GetObjectItem(*root, "rope_scaling");
}

static double num(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItem(o, k);
    ck_assert_msg(cJSON_IsNumber(x), "rope_scaling.%s missing", k);
    return x->valuedouble;
}

/* Copy GGUF src to dst, with u32 metadata key = value (key may be NULL) and,
 * when bump >= 0, rope_freqs.weight[bump] scaled by 1.001. */
static void copy_gguf(const char *src, const char *dst, const char *key, uint32_t value, int bump, nb_ctx *ctx) {
    nb_model *m;
    ck_assert_int_eq(nb_model_open(src, &m, ctx), NB_OK);
    nb_sink *sk;
    ck_assert_int_eq(nb_sink_create(dst, NB_FMT_GGUF, &sk, ctx), NB_OK);
    ck_assert_int_eq(nb_kvset_copy(&sk->kv, &m->kv, ctx), NB_OK);
    if (key) ck_assert_int_eq(nb_kv_set_u32(&sk->kv, key, value, ctx), NB_OK);
    for (size_t i = 0; i < m->n_tensors; i++)
        ck_assert_int_eq(nb_sink_add_tensor(sk, m->tensors[i].name, m->tensors[i].type, m->tensors[i].n_dims,
                                            m->tensors[i].ne, ctx), NB_OK);
    ck_assert_int_eq(nb_sink_begin(sk, ctx), NB_OK);
    for (size_t j = 0; j < m->n_tensors; j++) {
        size_t i = nb_sink_data_order(sk, j);
        void *b = malloc(m->tensors[i].nbytes);
        ck_assert_int_eq(nb_model_read_tensor(m, i, b, ctx), NB_OK);
        if (bump >= 0 && !strcmp(m->tensors[i].name, "rope_freqs.weight")) ((float *)b)[bump] *= 1.001f;
        ck_assert_int_eq(nb_sink_write(sk, b, m->tensors[i].nbytes, ctx), NB_OK);
        free(b);
    }
    ck_assert_int_eq(nb_sink_commit(sk, ctx), NB_OK);
    nb_sink_free(sk);
    nb_model_close(m);
}

/* HF (llama3 rope_scaling) -> GGUF (only rope_freqs.weight carries it) -> HF:
 * the parameters come back from the tensor's values. */
START_TEST(llama3_rope_round_trip) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.arch = "llama";
    o.n_layer = 1, o.n_embd = 128, o.n_ff = 64, o.n_head = 1, o.n_head_kv = 1, o.n_vocab = 64; /* head dim 128 */
    o.dtype = NB_TYPE_F32;
    o.seed = 5;
    ck_assert_msg(nb_synth_write(&o, nbt_path("r3.gguf"), &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    /* {factor, low, high, original ctx, rope_theta}: Llama 3.1, 3.2, and one with low_freq_factor 2 */
    static const double cases[][5] = {{8, 1, 4, 8192, 500000}, {32, 1, 4, 8192, 500000}, {4, 2, 6, 4096, 10000}};
    nb_hf_write_opts wo = {0};
    nb_hf_write_result wr;
    ck_assert_int_eq(nb_hf_write_path(nbt_path("r3.gguf"), nbt_path("r3_hf"), &wo, &wr, &ctx), NB_OK);
    for (int k = 0; k < 3; k++) {
        const double *c = cases[k];
        char d0[64], g[64], d1[64];
        snprintf(d0, sizeof d0, "r3_src%d", k);
        snprintf(g, sizeof g, "r3_%d.gguf", k);
        snprintf(d1, sizeof d1, "r3_back%d", k);
        /* the HF source: r3_hf with rope_scaling in config.json */
        mkdir(nbt_path(d0), 0755);
        cJSON *root;
        ck_assert_ptr_null(rope_scaling_of(nbt_path("r3_hf"), &root));
        cJSON *rs = cJSON_AddObjectToObject(root, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type", "llama3");
        cJSON_AddNumberToObject(rs, "factor", c[0]);
        cJSON_AddNumberToObject(rs, "low_freq_factor", c[1]);
        cJSON_AddNumberToObject(rs, "high_freq_factor", c[2]);
        cJSON_AddNumberToObject(rs, "original_max_position_embeddings", c[3]);
        cJSON_DeleteItemFromObject(root, "rope_theta");
        cJSON_AddNumberToObject(root, "rope_theta", c[4]);
        char *txt = cJSON_Print(root);
        cJSON_Delete(root);
        char p[1024], q[1024];
        snprintf(p, sizeof p, "%s/config.json", nbt_path(d0));
        nbt_write_file(p, txt, strlen(txt));
        free(txt);
        size_t n;
        snprintf(q, sizeof q, "%s/model.safetensors", nbt_path("r3_hf"));
        unsigned char *w = nbt_read_file(q, &n);
        snprintf(p, sizeof p, "%s/model.safetensors", nbt_path(d0));
        nbt_write_file(p, w, n);
        free(w);
        nb_convert_opts co = {0};
        nb_convert_result cr;
        ck_assert_msg(nb_convert(nbt_path(d0), nbt_path(g), &co, &cr, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
        nb_model *m;
        ck_assert_int_eq(nb_model_open(nbt_path(g), &m, &ctx), NB_OK);
        ck_assert_msg(nb_model_find(m, "rope_freqs.weight") != NULL, "the GGUF carries rope_freqs.weight");
        nb_model_close(m);
        ck_assert_msg(nb_hf_write_path(nbt_path(g), nbt_path(d1), &wo, &wr, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
        rs = rope_scaling_of(nbt_path(d1), &root);
        ck_assert_msg(rs != NULL, "case %d: rope_scaling lost", k);
        ck_assert_str_eq(cJSON_GetObjectItem(rs, "rope_type")->valuestring, "llama3");
        ck_assert_double_eq(num(rs, "factor"), c[0]);
        if (c[1] == 1) { /* the values fix C/lo and C/hi only: lo = 1 is assumed */
            ck_assert_double_eq(num(rs, "low_freq_factor"), c[1]);
            ck_assert_double_eq(num(rs, "high_freq_factor"), c[2]);
            ck_assert_double_eq(num(rs, "original_max_position_embeddings"), c[3]);
        } else {
            double C = num(rs, "original_max_position_embeddings");
            ck_assert_double_eq_tol(C / num(rs, "low_freq_factor"), c[3] / c[1], 1e-6 * c[3]);
            ck_assert_double_eq_tol(C / num(rs, "high_freq_factor"), c[3] / c[2], 1e-6 * c[3]);
        }
        cJSON_Delete(root);
        same_values(nbt_path(g), nbt_path(d1), &ctx);
        /* and back to GGUF: the same rope_freqs values */
        char g2[64];
        snprintf(g2, sizeof g2, "r3_%d_again.gguf", k);
        ck_assert_msg(nb_convert(nbt_path(d1), nbt_path(g2), &co, &cr, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
        nb_model *a, *b;
        ck_assert_int_eq(nb_model_open(nbt_path(g), &a, &ctx), NB_OK);
        ck_assert_int_eq(nb_model_open(nbt_path(g2), &b, &ctx), NB_OK);
        float fa[64], fb[64];
        const nb_tensor *ta = nb_model_find(a, "rope_freqs.weight"), *tb = nb_model_find(b, "rope_freqs.weight");
        ck_assert(ta && tb && ta->ne[0] == 64 && tb->ne[0] == 64);
        ck_assert_int_eq(nb_model_read_f32(a, (size_t)(ta - a->tensors), fa, &ctx), NB_OK);
        ck_assert_int_eq(nb_model_read_f32(b, (size_t)(tb - b->tensors), fb, &ctx), NB_OK);
        ck_assert_msg(memcmp(fa, fb, sizeof fa) == 0, "case %d: rope_freqs differ after GGUF -> HF -> GGUF", k);
        nb_model_close(a);
        nb_model_close(b);
    }
    /* one value moved by 0.1%: no llama3 parameters give it; dropped with the warning, no rope_scaling */
    copy_gguf(nbt_path("r3_0.gguf"), nbt_path("r3_bad.gguf"), NULL, 0, 40, &ctx);
    ck_assert_int_eq(nb_hf_write_path(nbt_path("r3_bad.gguf"), nbt_path("r3_bad_hf"), &wo, &wr, &ctx), NB_OK);
    cJSON *root;
    ck_assert_ptr_null(rope_scaling_of(nbt_path("r3_bad_hf"), &root));
    cJSON_Delete(root);
    /* with the GGUF key rope.scaling.original_context_length, low_freq_factor 2 comes back as such */
    copy_gguf(nbt_path("r3_2.gguf"), nbt_path("r3_key.gguf"), "llama.rope.scaling.original_context_length", 4096, -1,
              &ctx);
    ck_assert_int_eq(nb_hf_write_path(nbt_path("r3_key.gguf"), nbt_path("r3_key_hf"), &wo, &wr, &ctx), NB_OK);
    cJSON *rs = rope_scaling_of(nbt_path("r3_key_hf"), &root);
    ck_assert_ptr_nonnull(rs);
    ck_assert_double_eq(num(rs, "factor"), 4);
    ck_assert_double_eq(num(rs, "low_freq_factor"), 2);
    ck_assert_double_eq(num(rs, "high_freq_factor"), 6);
    ck_assert_double_eq(num(rs, "original_max_position_embeddings"), 4096);
    cJSON_Delete(root);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("formats/hf_write");
    TCase *tc = tcase_create("hf_write");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, sharded);
    tcase_add_test(tc, single_file);
    tcase_add_test(tc, refusals);
    tcase_add_test(tc, linear_names);
    tcase_add_test(tc, adir);
    tcase_add_test(tc, llama3_rope_round_trip);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
