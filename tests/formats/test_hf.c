/* tests/formats/test_hf.c — Hugging Face directories: config.json fixtures of
 * every architecture, malformed configs, config render/parse round trip, and
 * nb_hf_open on hand-built directories: names, q/k permutation, expert
 * stacking, Gemma's +1 norms, llama3 rope_freqs, skipped and unmapped
 * tensors, and clean failures. */
#include "core/fp.h"
#include "formats/hf.h"
#include "formats/readers.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static nb_status parse_str(const char *json, nb_hf_config *c, nb_ctx *ctx) {
    return nb_hf_config_parse(json, strlen(json), "config.json", c, ctx);
}

static nb_status parse_fixture(const char *file, nb_hf_config *c, nb_ctx *ctx) {
    char p[1024];
    snprintf(p, sizeof p, "%s/hf/%s", nbt_data_dir(), file);
    size_t n;
    char *b = (char *)nbt_read_file(p, &n);
    ck_assert_msg(b != NULL, "missing fixture %s", p);
    nb_status st = nb_hf_config_parse(b, n, file, c, ctx);
    free(b);
    return st;
}

START_TEST(test_fixtures) {
    static const struct {
        const char *file;
        nb_arch_id arch;
        uint32_t layers, embd, ff, heads, kv, head_dim, ctx, vocab, experts, used, ff_exp, ff_sh, swa;
        bool tie;
        nb_rope_scaling rs;
    } cases[] = {
        {"llama3.json", NB_ARCH_LLAMA, 32, 4096, 14336, 32, 8, 0, 131072, 128256, 0, 0, 0, 0, 0, false, NB_ROPE_SCALING_LLAMA3},
        {"mistral.json", NB_ARCH_MISTRAL, 32, 4096, 14336, 32, 8, 0, 32768, 32000, 0, 0, 0, 0, 0, false, NB_ROPE_SCALING_NONE},
        {"mixtral.json", NB_ARCH_MIXTRAL, 32, 4096, 14336, 32, 8, 0, 32768, 32000, 8, 2, 0, 0, 0, false, NB_ROPE_SCALING_NONE},
        {"qwen2.json", NB_ARCH_QWEN2, 24, 896, 4864, 14, 2, 0, 32768, 151936, 0, 0, 0, 0, 0, true, NB_ROPE_SCALING_NONE},
        {"qwen3.json", NB_ARCH_QWEN3, 28, 1024, 3072, 16, 8, 128, 40960, 151936, 0, 0, 0, 0, 0, true, NB_ROPE_SCALING_NONE},
        {"qwen2_moe.json", NB_ARCH_QWEN2MOE, 24, 2048, 5632, 16, 16, 0, 8192, 151936, 60, 4, 1408, 5632, 0, false, NB_ROPE_SCALING_NONE},
        {"qwen3_moe.json", NB_ARCH_QWEN3MOE, 48, 2048, 6144, 32, 4, 128, 40960, 151936, 128, 8, 768, 0, 0, false, NB_ROPE_SCALING_NONE},
        {"gemma3_text.json", NB_ARCH_GEMMA3, 18, 640, 2048, 4, 1, 256, 32768, 262144, 0, 0, 0, 0, 512, true, NB_ROPE_SCALING_NONE},
        /* omitted keys take transformers' Gemma3TextConfig defaults, as llama.cpp's converter does */
        {"gemma3_multimodal.json", NB_ARCH_GEMMA3, 34, 2560, 10240, 8, 4, 256, 131072, 262208, 0, 0, 0, 0, 1024, true, NB_ROPE_SCALING_LINEAR},
    };
    nb_ctx ctx;
    nbt_ctx(&ctx);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nb_hf_config c;
        ck_assert_msg(parse_fixture(cases[i].file, &c, &ctx) == NB_OK, "%s: %s", cases[i].file, nb_errmsg(&ctx));
        ck_assert_int_eq(c.arch->id, cases[i].arch);
        ck_assert_uint_eq(c.hp.n_layer, cases[i].layers);
        ck_assert_uint_eq(c.hp.n_embd, cases[i].embd);
        ck_assert_uint_eq(c.hp.n_ff, cases[i].ff);
        ck_assert_uint_eq(c.hp.n_head, cases[i].heads);
        ck_assert_uint_eq(c.hp.n_head_kv, cases[i].kv);
        ck_assert_uint_eq(c.hp.head_dim, cases[i].head_dim);
        ck_assert_uint_eq(c.hp.n_ctx, cases[i].ctx);
        ck_assert_uint_eq(c.hp.n_vocab, cases[i].vocab);
        ck_assert_uint_eq(c.hp.n_expert, cases[i].experts);
        ck_assert_uint_eq(c.hp.n_expert_used, cases[i].used);
        ck_assert_uint_eq(c.hp.n_ff_exp, cases[i].ff_exp);
        ck_assert_uint_eq(c.hp.n_ff_shexp, cases[i].ff_sh);
        ck_assert_uint_eq(c.hp.sliding_window, cases[i].swa);
        ck_assert_int_eq(c.hp.tie_embeddings, cases[i].tie);
        ck_assert_int_eq(c.hp.rope_scaling, cases[i].rs);
        ck_assert(c.hp.rope_theta > 0);
        ck_assert(c.hp.rms_eps > 0 && c.hp.rms_eps < 1e-4);
        nb_kvset kv;
        nb_kvset_init(&kv);
        ck_assert_int_eq(nb_arch_hparams_to_kv(c.arch, &c.hp, c.name, &kv, &ctx), NB_OK);
        char key[128];
        uint64_t v;
        snprintf(key, sizeof key, "%s.block_count", c.arch->gguf_arch);
        ck_assert(nb_kv_get_u64(&kv, key, &v));
        ck_assert_uint_eq(v, cases[i].layers);
        snprintf(key, sizeof key, "%s.expert_count", c.arch->gguf_arch);
        ck_assert_int_eq(nb_kv_get(&kv, key) != NULL, cases[i].experts != 0);
        nb_kvset_free(&kv);
        nb_hf_config_free(&c);
    }
    nb_hf_config c;
    ck_assert_int_eq(parse_fixture("llama3.json", &c, &ctx), NB_OK);
    ck_assert_str_eq(c.name, "Example-Llama-8B");
    ck_assert_double_eq(c.hp.rope_factor, 8.0);
    ck_assert_uint_eq(c.hp.rope_orig_ctx, 8192);
    nb_hf_config_free(&c);
    ck_assert_int_eq(parse_fixture("gemma3_text.json", &c, &ctx), NB_OK);
    ck_assert_double_eq(c.hp.rope_theta_swa, 10000.0);
    ck_assert_ptr_null(c.name);
    nb_hf_config_free(&c);
    nb_ctx_free(&ctx);
}
END_TEST

#define BASE                                                                                       \
    "\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,"       \
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"max_position_embeddings\":128,"         \
    "\"vocab_size\":100,\"num_hidden_layers\":2"

START_TEST(test_bad_configs) {
    static const struct {
        const char *json;
        nb_status st;
        const char *msg;
    } cases[] = {
        {"", NB_ERR_FORMAT, "not valid JSON"},
        {"{\"architectures\": [\"Llama", NB_ERR_FORMAT, "not valid JSON"},
        {"[1, 2]", NB_ERR_FORMAT, "not a JSON object"},
        {"\"LlamaForCausalLM\"", NB_ERR_FORMAT, "not a JSON object"},
        {"{}", NB_ERR_FORMAT, "neither 'architectures' nor 'model_type'"},
        {"{\"architectures\":[\"FooForCausalLM\"]}", NB_ERR_UNSUPPORTED,
         "architecture 'FooForCausalLM' is not supported (supported: llama"},
        {"{\"model_type\":\"bar\"}", NB_ERR_UNSUPPORTED, "architecture 'bar' is not supported"},
        {"{\"architectures\":\"LlamaForCausalLM\"}", NB_ERR_FORMAT, "'architectures' must be an array"},
        {"{\"architectures\":[3]}", NB_ERR_FORMAT, "'architectures' must be an array"},
        {"{\"model_type\":7}", NB_ERR_FORMAT, "'model_type' must be a string"},
        {"{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64}", NB_ERR_FORMAT, "num_hidden_layers"},
        {"{" BASE ",\"hidden_size\":\"4096\"}", NB_ERR_FORMAT, "'hidden_size' must be a number"},
        /* duplicate keys: the last wins, as transformers (Python's json) reads config.json */
        {"{\"hidden_size\":\"4096\"," BASE "}", NB_OK, ""},
        {"{" BASE ",\"hidden_size\":64.5}", NB_ERR_FORMAT, "'hidden_size' must be a non-negative integer"},
        {"{" BASE ",\"hidden_size\":-64}", NB_ERR_FORMAT, "'hidden_size'"},
        {"{" BASE ",\"hidden_size\":1e300}", NB_ERR_RANGE, "'hidden_size'"},
        {"{" BASE ",\"vocab_size\":1e999}", NB_ERR_FORMAT, "'vocab_size'"},
        {"{" BASE ",\"vocab_size\":4294967296}", NB_ERR_RANGE, "'vocab_size'"},
        {"{" BASE ",\"vocab_size\":4294967295}", NB_ERR_RANGE, "'vocab_size'"},
        {"{" BASE ",\"num_hidden_layers\":100000}", NB_ERR_RANGE, "num_hidden_layers"},
        {"{" BASE ",\"num_key_value_heads\":3}", NB_ERR_RANGE, "num_key_value_heads"},
        {"{" BASE ",\"tie_word_embeddings\":\"yes\"}", NB_ERR_FORMAT, "tie_word_embeddings"},
        {"{" BASE ",\"rope_scaling\":\"linear\"}", NB_ERR_FORMAT, "'rope_scaling' must be an object"},
        {"{" BASE ",\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":\"2\"}}", NB_ERR_FORMAT, "'factor'"},
        {"{" BASE ",\"rope_theta\":-5}", NB_ERR_RANGE, "rope_theta"},
        {"{" BASE ",\"rms_norm_eps\":0}", NB_OK, ""},
        {"{" BASE ",\"text_config\":[]}", NB_ERR_FORMAT, "'text_config' must be an object"},
        {"{" BASE ",\"_name_or_path\":5}", NB_ERR_FORMAT, "_name_or_path"},
        {"{\"architectures\":[\"MixtralForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,"
         "\"num_attention_heads\":4,\"max_position_embeddings\":128,\"vocab_size\":100,\"num_hidden_layers\":2}",
         NB_ERR_FORMAT, "num_local_experts"},
        {"{\"architectures\":[\"Qwen2MoeForCausalLM\"],\"num_experts\":4,\"num_experts_per_tok\":2,"
         "\"hidden_size\":64,\"intermediate_size\":128,\"num_attention_heads\":4,\"max_position_embeddings\":128,"
         "\"vocab_size\":100,\"num_hidden_layers\":2,\"moe_intermediate_size\":32}",
         NB_ERR_FORMAT, "shared_expert_intermediate_size"},
        {"{" BASE ",\"architectures\":[\"FooForCausalLM\", \"LlamaForCausalLM\"]}", NB_OK, ""},
    };
    nb_ctx ctx;
    nbt_ctx(&ctx);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nb_hf_config c;
        nb_status st = parse_str(cases[i].json, &c, &ctx);
        ck_assert_msg(st == cases[i].st, "case %zu: %s -> %s (%s)", i, cases[i].json, nb_status_name(st),
                      nb_errmsg(&ctx));
        if (st != NB_OK) {
            ck_assert_msg(strstr(nb_errmsg(&ctx), cases[i].msg) != NULL, "case %zu: message '%s'", i,
                          nb_errmsg(&ctx));
            ck_assert_msg(strstr(nb_errmsg(&ctx), "config.json") != NULL, "case %zu", i);
            ck_assert_ptr_null(c.arch);
        }
        nb_hf_config_free(&c);
    }
    /* not NUL-terminated: the length is what counts */
    const char *j = "{" BASE "}garbage";
    nb_hf_config c;
    ck_assert_int_eq(nb_hf_config_parse(j, strlen(j) - 7, "config.json", &c, &ctx), NB_OK);
    nb_hf_config_free(&c);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(test_render_round_trip) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    for (int i = 0; i < NB_ARCH_COUNT; i++) {
        const nb_arch *a = nb_arch_get((nb_arch_id)i);
        nb_hparams hp = {.n_layer = 3, .n_embd = 96, .n_ff = 200, .n_head = 6, .n_head_kv = 2,
                         .n_ctx = 2048, .n_vocab = 777, .rope_theta = 12345.0, .rms_eps = 1e-6};
        const bool gemma = a->id == NB_ARCH_GEMMA3 || a->id == NB_ARCH_GEMMA_EMBEDDING;
        if (a->id == NB_ARCH_QWEN3 || gemma) hp.head_dim = 32;
        if (a->flags & NB_ARCH_F_MOE) {
            hp.n_expert = 6;
            hp.n_expert_used = 3;
            if (!(a->flags & NB_ARCH_F_MIXTRAL_NAMES)) hp.n_ff_exp = 48;
            if (a->flags & NB_ARCH_F_SHEXP) hp.n_ff_shexp = 64;
        }
        if (gemma) {
            hp.sliding_window = 256;
            hp.rope_theta_swa = 10000.0;
            hp.tie_embeddings = true;
        }
        if (a->id == NB_ARCH_LLAMA) {
            hp.rope_scaling = NB_ROPE_SCALING_LLAMA3;
            hp.rope_factor = 8;
            hp.rope_low_freq = 1;
            hp.rope_high_freq = 4;
            hp.rope_orig_ctx = 1024;
        }
        if (a->id == NB_ARCH_QWEN2) {
            hp.rope_scaling = NB_ROPE_SCALING_YARN;
            hp.rope_factor = 4;
            hp.rope_orig_ctx = 512;
        }
        char *s = nb_hf_config_render(a, &hp, "bfloat16", &ctx);
        ck_assert_ptr_nonnull(s);
        nb_hf_config c;
        ck_assert_msg(parse_str(s, &c, &ctx) == NB_OK, "%s: %s", a->name, nb_errmsg(&ctx));
        ck_assert_ptr_eq(c.arch, a);
        ck_assert_mem_eq(&c.hp, &hp, sizeof hp); /* every field, exactly */
        nb_hf_config_free(&c);
        free(s);
    }
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- hand-built directories ------------------------------------------------------------ */

typedef struct tdef {
    const char *name;
    uint32_t n_dims;
    int64_t ne0, ne1;
} tdef;

/* Element k of tensor number t: exact in bf16 and f32 for the sizes used here. */
static float tval(size_t t, uint64_t k) { return (float)(t * 64 + k % 64) / 8.0f; }
/* The same value as stored in a BF16 file. */
static float tval_bf16(size_t t, uint64_t k) { return nb_bf16_to_f32(nb_f32_to_bf16(tval(t, k))); }

static void write_st(const char *path, const tdef *d, size_t n, nb_type type) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_sink *s;
    ck_assert_msg(nb_safetensors_sink_create(path, &s, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    for (size_t i = 0; i < n; i++) {
        int64_t ne[4] = {d[i].ne0, d[i].ne1, 1, 1};
        ck_assert_int_eq(nb_sink_add_tensor(s, d[i].name, type, d[i].n_dims, ne, &ctx), NB_OK);
    }
    ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_OK);
    for (size_t k = 0; k < n; k++) {
        size_t i = nb_sink_data_order(s, k);
        uint64_t ne = (uint64_t)d[i].ne0 * (uint64_t)(d[i].n_dims > 1 ? d[i].ne1 : 1);
        size_t es = type == NB_TYPE_F32 ? 4 : 2;
        unsigned char *buf = malloc(ne * es);
        for (uint64_t e = 0; e < ne; e++) {
            float v = tval(i, e);
            if (type == NB_TYPE_F32) memcpy(buf + e * 4, &v, 4);
            else {
                uint16_t h = nb_f32_to_bf16(v);
                memcpy(buf + e * 2, &h, 2);
            }
        }
        ck_assert_int_eq(nb_sink_write(s, buf, ne * es, &ctx), NB_OK);
        free(buf);
    }
    ck_assert_msg(nb_sink_commit(s, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_sink_free(s);
    nb_ctx_free(&ctx);
}

static const char *make_dir(const char *name, const char *config) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s", nbt_path(name));
    mkdir(dir, 0777);
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    nbt_write_file(p, config, strlen(config));
    return dir;
}

static size_t tindex(const tdef *d, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(d[i].name, name) == 0) return i;
    ck_abort_msg("no tensor %s", name);
    return 0;
}

static float *read_f32(nb_model *m, const char *name, const nb_tensor **tout) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const nb_tensor *t = nb_model_find(m, name);
    ck_assert_msg(t != NULL, "no tensor %s", name);
    float *f = malloc(nb_tensor_nelements(t) * sizeof *f);
    ck_assert_msg(nb_model_read_f32(m, (size_t)(t - m->tensors), f, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_ctx_free(&ctx);
    if (tout) *tout = t;
    return f;
}

START_TEST(test_open_llama) {
    const char *cfg =
        "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8,\"intermediate_size\":6,"
        "\"num_attention_heads\":2,\"num_key_value_heads\":1,\"max_position_embeddings\":64,"
        "\"vocab_size\":5,\"num_hidden_layers\":1,\"rope_theta\":10000.0,\"rms_norm_eps\":1e-5,"
        "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,"
        "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":32}}";
    const char *dir = make_dir("llama-dir", cfg);
    static const tdef d[] = {
        {"lm_head.weight", 2, 8, 5},
        {"model.embed_tokens.weight", 2, 8, 5},
        {"model.extra_thing.weight", 1, 3, 1},
        {"model.layers.0.input_layernorm.weight", 1, 8, 1},
        {"model.layers.0.mlp.down_proj.weight", 2, 6, 8},
        {"model.layers.0.mlp.gate_proj.weight", 2, 8, 6},
        {"model.layers.0.mlp.up_proj.weight", 2, 8, 6},
        {"model.layers.0.post_attention_layernorm.weight", 1, 8, 1},
        {"model.layers.0.self_attn.k_proj.weight", 2, 8, 4},
        {"model.layers.0.self_attn.o_proj.weight", 2, 8, 8},
        {"model.layers.0.self_attn.q_proj.weight", 2, 8, 8},
        {"model.layers.0.self_attn.rotary_emb.inv_freq", 1, 2, 1},
        {"model.layers.0.self_attn.v_proj.weight", 2, 8, 4},
        {"model.norm.weight", 1, 8, 1},
    };
    const size_t n = sizeof d / sizeof d[0];
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_st(p, d, n, NB_TYPE_F32);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_model *m;
    ck_assert_msg(nb_hf_open(dir, &m, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    /* 14 files tensors - 1 skipped (inv_freq) + rope_freqs */
    ck_assert_uint_eq(m->n_tensors, 14);
    static const char *const order[] = {
        "rope_freqs.weight", "token_embd.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight",
        "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.0.attn_output.weight", "blk.0.ffn_norm.weight",
        "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight", "output_norm.weight",
        "output.weight", "model.extra_thing.weight"};
    for (size_t i = 0; i < m->n_tensors; i++) {
        ck_assert_str_eq(m->tensors[i].name, order[i]);
        ck_assert_int_eq(nb_hf_is_unmapped(m, i), i == m->n_tensors - 1);
    }
    ck_assert_str_eq(nb_kv_get_str(&m->kv, "general.architecture"), "llama");
    ck_assert_str_eq(nb_kv_get_str(&m->kv, "general.name"), "llama-dir");
    uint64_t v;
    ck_assert(nb_kv_get_u64(&m->kv, "llama.attention.head_count_kv", &v));
    ck_assert_uint_eq(v, 1);
    ck_assert(nb_kv_get_u64(&m->kv, "llama.rope.dimension_count", &v));
    ck_assert_uint_eq(v, 4);
    ck_assert_ptr_null(nb_kv_get(&m->kv, "llama.rope.scaling.type"));
    /* q: 2 heads of 4 rows: GGUF rows come from HF rows 0 2 1 3 4 6 5 7 */
    const nb_tensor *t;
    float *q = read_f32(m, "blk.0.attn_q.weight", &t);
    ck_assert_int_eq(t->ne[0], 8);
    ck_assert_int_eq(t->ne[1], 8);
    size_t qi = tindex(d, n, "model.layers.0.self_attn.q_proj.weight");
    static const int qsrc[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 8; c++) ck_assert_float_eq(q[r * 8 + c], tval(qi, (uint64_t)(qsrc[r] * 8 + c)));
    free(q);
    /* k: one kv head of 4 rows: 0 2 1 3 */
    float *k = read_f32(m, "blk.0.attn_k.weight", NULL);
    size_t ki = tindex(d, n, "model.layers.0.self_attn.k_proj.weight");
    static const int ksrc[4] = {0, 2, 1, 3};
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 8; c++) ck_assert_float_eq(k[r * 8 + c], tval(ki, (uint64_t)(ksrc[r] * 8 + c)));
    free(k);
    /* v and the norms are untouched */
    float *vv = read_f32(m, "blk.0.attn_v.weight", NULL);
    size_t vi = tindex(d, n, "model.layers.0.self_attn.v_proj.weight");
    for (int e = 0; e < 32; e++) ck_assert_float_eq(vv[e], tval(vi, (uint64_t)e));
    free(vv);
    float *nw = read_f32(m, "output_norm.weight", NULL);
    for (int e = 0; e < 8; e++) ck_assert_float_eq(nw[e], tval(tindex(d, n, "model.norm.weight"), (uint64_t)e));
    free(nw);
    /* llama3 rope factors: head dim 4 -> 2 factors, equal to the arch helper's */
    float *rf = read_f32(m, "rope_freqs.weight", &t);
    ck_assert_int_eq(t->ne[0], 2);
    ck_assert_int_eq(t->type, NB_TYPE_F32);
    nb_hf_config c;
    ck_assert_int_eq(parse_str(cfg, &c, &ctx), NB_OK);
    float ex[2];
    ck_assert_int_eq(nb_arch_llama3_rope_factors(&c.hp, ex, 2, &ctx), NB_OK);
    ck_assert_mem_eq(rf, ex, sizeof ex);
    ck_assert(rf[0] >= 1.0f && rf[1] <= 8.0f);
    nb_hf_config_free(&c);
    free(rf);
    nb_model_close(m);
    /* nb_model_open probes a directory as HF */
    ck_assert_int_eq(nb_model_open(dir, &m, &ctx), NB_OK);
    ck_assert_int_eq(m->format, NB_FMT_HF_DIR);
    nb_model_close(m);
    nb_ctx_free(&ctx);
}
END_TEST

#define QMOE_CFG(experts)                                                                          \
    "{\"architectures\":[\"Qwen2MoeForCausalLM\"],\"hidden_size\":4,\"intermediate_size\":8,"      \
    "\"num_attention_heads\":2,\"num_key_value_heads\":2,\"max_position_embeddings\":64,"          \
    "\"vocab_size\":3,\"num_hidden_layers\":1,\"num_experts\":" experts ",\"num_experts_per_tok\":2," \
    "\"moe_intermediate_size\":2,\"shared_expert_intermediate_size\":6,\"tie_word_embeddings\":true}"

/* One qwen2_moe layer, experts listed out of order; `drop` leaves one out. */
static const tdef k_qmoe[] = {
    {"model.embed_tokens.weight", 2, 4, 3},
    {"model.layers.0.mlp.experts.2.down_proj.weight", 2, 2, 4},
    {"model.layers.0.mlp.experts.0.down_proj.weight", 2, 2, 4},
    {"model.layers.0.mlp.experts.1.down_proj.weight", 2, 2, 4},
    {"model.layers.0.mlp.experts.1.gate_proj.weight", 2, 4, 2},
    {"model.layers.0.mlp.experts.0.gate_proj.weight", 2, 4, 2},
    {"model.layers.0.mlp.experts.2.gate_proj.weight", 2, 4, 2},
    {"model.layers.0.mlp.experts.0.up_proj.weight", 2, 4, 2},
    {"model.layers.0.mlp.experts.1.up_proj.weight", 2, 4, 2},
    {"model.layers.0.mlp.experts.2.up_proj.weight", 2, 4, 2},
    {"model.layers.0.mlp.gate.weight", 2, 4, 3},
    {"model.layers.0.mlp.shared_expert.down_proj.weight", 2, 6, 4},
    {"model.layers.0.mlp.shared_expert.gate_proj.weight", 2, 4, 6},
    {"model.layers.0.mlp.shared_expert.up_proj.weight", 2, 4, 6},
    {"model.layers.0.mlp.shared_expert_gate.weight", 2, 4, 1},
    {"model.layers.0.self_attn.q_proj.weight", 2, 4, 4},
    {"model.layers.0.self_attn.q_proj.bias", 1, 4, 1},
    {"model.norm.weight", 1, 4, 1},
};

START_TEST(test_open_moe) {
    const size_t n = sizeof k_qmoe / sizeof k_qmoe[0];
    const char *dir = make_dir("qmoe-dir", QMOE_CFG("3"));
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_st(p, k_qmoe, n, NB_TYPE_BF16);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_model *m;
    ck_assert_msg(nb_hf_open(dir, &m, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_uint_eq(m->n_tensors, n - 6); /* 9 expert pieces -> 3 stacks */
    static const char *const proj[3] = {"gate", "up", "down"};
    for (int pi = 0; pi < 3; pi++) {
        char g[64];
        snprintf(g, sizeof g, "blk.0.ffn_%s_exps.weight", proj[pi]);
        const nb_tensor *t;
        float *f = read_f32(m, g, &t);
        ck_assert_uint_eq(t->n_dims, 3);
        ck_assert_int_eq(t->type, NB_TYPE_BF16);
        ck_assert_int_eq(t->ne[0], pi == 2 ? 2 : 4);
        ck_assert_int_eq(t->ne[1], pi == 2 ? 4 : 2);
        ck_assert_int_eq(t->ne[2], 3);
        ck_assert_uint_eq(t->nbytes, 3 * 8 * 2);
        for (int e = 0; e < 3; e++) {
            char hf[96];
            snprintf(hf, sizeof hf, "model.layers.0.mlp.experts.%d.%s_proj.weight", e, proj[pi]);
            size_t src = tindex(k_qmoe, n, hf);
            for (int k = 0; k < 8; k++) ck_assert_float_eq(f[e * 8 + k], tval_bf16(src, (uint64_t)k));
        }
        free(f);
    }
    const nb_tensor *t = nb_model_find(m, "blk.0.ffn_gate_inp_shexp.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(t->n_dims, 1); /* [1, n_embd] squeezed as llama.cpp stores it */
    ck_assert_int_eq(t->ne[0], 4);
    ck_assert_ptr_nonnull(nb_model_find(m, "blk.0.ffn_gate_inp.weight"));
    ck_assert_ptr_nonnull(nb_model_find(m, "blk.0.ffn_down_shexp.weight"));
    /* qwen2 family: no permutation, bias kept */
    float *q = read_f32(m, "blk.0.attn_q.weight", NULL);
    size_t qi = tindex(k_qmoe, n, "model.layers.0.self_attn.q_proj.weight");
    for (int k = 0; k < 16; k++) ck_assert_float_eq(q[k], tval_bf16(qi, (uint64_t)k));
    free(q);
    ck_assert_ptr_nonnull(nb_model_find(m, "blk.0.attn_q.bias"));
    ck_assert_ptr_null(nb_model_find(m, "output.weight"));
    uint64_t v;
    ck_assert(nb_kv_get_u64(&m->kv, "qwen2moe.expert_count", &v));
    ck_assert_uint_eq(v, 3);
    ck_assert(nb_kv_get_u64(&m->kv, "qwen2moe.expert_shared_feed_forward_length", &v));
    ck_assert_uint_eq(v, 6);
    nb_model_close(m);

    /* four experts declared, three present */
    dir = make_dir("qmoe-missing", QMOE_CFG("4"));
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_st(p, k_qmoe, n, NB_TYPE_BF16);
    ck_assert_int_eq(nb_hf_open(dir, &m, &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "expert 3 of 4 is missing"));
    /* two declared, expert 2 present */
    dir = make_dir("qmoe-extra", QMOE_CFG("2"));
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_st(p, k_qmoe, n, NB_TYPE_BF16);
    ck_assert_int_eq(nb_hf_open(dir, &m, &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "expert 2 >= expert count 2"));
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(test_open_gemma_norms) {
    const char *cfg =
        "{\"architectures\":[\"Gemma3ForCausalLM\"],\"model_type\":\"gemma3_text\",\"hidden_size\":4,"
        "\"intermediate_size\":8,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"head_dim\":2,"
        "\"max_position_embeddings\":64,\"vocab_size\":3,\"num_hidden_layers\":1,\"sliding_window\":16}";
    const char *dir = make_dir("gemma-dir", cfg);
    static const tdef d[] = {
        {"model.embed_tokens.weight", 2, 4, 3},
        {"model.layers.0.input_layernorm.weight", 1, 4, 1},
        {"model.layers.0.post_attention_layernorm.weight", 1, 4, 1},
        {"model.layers.0.pre_feedforward_layernorm.weight", 1, 4, 1},
        {"model.layers.0.post_feedforward_layernorm.weight", 1, 4, 1},
        {"model.layers.0.self_attn.q_norm.weight", 1, 2, 1},
        {"model.norm.weight", 1, 4, 1},
        {"model.layers.0.mlp.up_proj.weight", 2, 4, 8},
    };
    const size_t n = sizeof d / sizeof d[0];
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_st(p, d, n, NB_TYPE_BF16);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_model *m;
    ck_assert_msg(nb_hf_open(dir, &m, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    static const struct { const char *gguf, *hf; } norms[] = {
        {"blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"},
        {"blk.0.post_attention_norm.weight", "model.layers.0.post_attention_layernorm.weight"},
        {"blk.0.ffn_norm.weight", "model.layers.0.pre_feedforward_layernorm.weight"},
        {"blk.0.post_ffw_norm.weight", "model.layers.0.post_feedforward_layernorm.weight"},
        {"blk.0.attn_q_norm.weight", "model.layers.0.self_attn.q_norm.weight"},
        {"output_norm.weight", "model.norm.weight"},
    };
    for (size_t i = 0; i < sizeof norms / sizeof norms[0]; i++) {
        const nb_tensor *t;
        float *f = read_f32(m, norms[i].gguf, &t);
        ck_assert_int_eq(t->type, NB_TYPE_F32); /* shifted norms are exposed as F32 */
        ck_assert_uint_eq(t->nbytes, nb_tensor_nelements(t) * 4);
        size_t src = tindex(d, n, norms[i].hf);
        for (uint64_t k = 0; k < nb_tensor_nelements(t); k++) ck_assert_float_eq(f[k], tval_bf16(src, k) + 1.0f);
        free(f);
    }
    const nb_tensor *t;
    float *up = read_f32(m, "blk.0.ffn_up.weight", &t);
    ck_assert_int_eq(t->type, NB_TYPE_BF16);
    ck_assert_float_eq(up[5], tval_bf16(tindex(d, n, "model.layers.0.mlp.up_proj.weight"), 5));
    free(up);
    uint64_t v;
    ck_assert(nb_kv_get_u64(&m->kv, "gemma3.attention.sliding_window", &v));
    ck_assert_uint_eq(v, 16);
    ck_assert(nb_kv_get_u64(&m->kv, "gemma3.attention.key_length", &v));
    ck_assert_uint_eq(v, 2);
    nb_model_close(m);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(test_open_errors) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_model *m = (nb_model *)1;
    char dir[512];
    snprintf(dir, sizeof dir, "%s", nbt_path("empty-dir"));
    mkdir(dir, 0777);
    ck_assert_int_eq(nb_hf_open(dir, &m, &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "config.json"));
    /* config but no weights */
    const char *d = make_dir("noweights", "{" BASE "}");
    ck_assert_int_eq(nb_hf_open(d, &m, &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "model.safetensors"));
    /* bad config: the message names the file path */
    d = make_dir("badcfg", "{\"architectures\":[\"GPT2LMHeadModel\"]}");
    ck_assert_int_eq(nb_hf_open(d, &m, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "badcfg/config.json: architecture 'GPT2LMHeadModel'"));
    /* a layer beyond num_hidden_layers */
    d = make_dir("badlayer", "{" BASE "}");
    static const tdef t1[] = {{"model.layers.2.mlp.up_proj.weight", 2, 64, 128}};
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    write_st(p, t1, 1, NB_TYPE_BF16);
    ck_assert_int_eq(nb_hf_open(d, &m, &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "layer 2 >= num_hidden_layers 2"));
    /* q rows that cannot be split into heads */
    d = make_dir("badq", "{" BASE "}");
    static const tdef t2[] = {{"model.layers.0.self_attn.q_proj.weight", 2, 64, 6}};
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    write_st(p, t2, 1, NB_TYPE_BF16);
    ck_assert_int_eq(nb_hf_open(d, &m, &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "q_proj"));
    /* two HF names for one GGUF tensor */
    d = make_dir("dup", "{\"architectures\":[\"Gemma3ForConditionalGeneration\"],\"text_config\":"
                       "{\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":1}}");
    static const tdef t3[] = {{"language_model.model.norm.weight", 1, 64, 1}, {"model.norm.weight", 1, 64, 1}};
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    write_st(p, t3, 2, NB_TYPE_F32);
    ck_assert_int_eq(nb_hf_open(d, &m, &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "output_norm.weight"));
    nb_ctx_free(&ctx);
}
END_TEST

static Suite *hf_suite(void) {
    Suite *s = suite_create("hf");
    TCase *tc = tcase_create("hf");
    tcase_add_test(tc, test_fixtures);
    tcase_add_test(tc, test_bad_configs);
    tcase_add_test(tc, test_render_round_trip);
    tcase_add_test(tc, test_open_llama);
    tcase_add_test(tc, test_open_moe);
    tcase_add_test(tc, test_open_gemma_norms);
    tcase_add_test(tc, test_open_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return nbt_run_suite(hf_suite());
}
