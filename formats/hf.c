/* formats/hf.c — Hugging Face model directories: config.json parsing and an
 * nb_model view in GGUF names over the safetensors reader. See formats/hf.h. */
#include "formats/hf.h"

#include "core/checked.h"
#include "core/file.h"
#include "core/str.h"
#include "formats/hf_quantized.h"
#include "formats/hf_tokenizer.h"
#include "formats/json_strict.h"
#include "formats/readers.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- config.json ------------------------------------------------------------------------ */

/* Integer-valued key: absent or null -> *present = false. */
static nb_status cfg_uint(const cJSON *o, const char *key, uint32_t *out, bool *present,
                          const char *what, nb_ctx *ctx) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    *present = false;
    if (!it || cJSON_IsNull(it)) return NB_OK;
    if (!cJSON_IsNumber(it))
        return nb_err(ctx, NB_ERR_FORMAT, "%s: '%s' must be a number", what, key);
    double v = it->valuedouble;
    if (!isfinite(v) || v < 0 || floor(v) != v)
        return nb_err(ctx, NB_ERR_FORMAT, "%s: '%s' must be a non-negative integer (got %g)", what,
                      key, v);
    if (v > (double)UINT32_MAX)
        return nb_err(ctx, NB_ERR_RANGE, "%s: '%s' = %g is out of range", what, key, v);
    *out = (uint32_t)v;
    *present = true;
    return NB_OK;
}

static nb_status cfg_num(const cJSON *o, const char *key, double *out, bool *present,
                         const char *what, nb_ctx *ctx) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    *present = false;
    if (!it || cJSON_IsNull(it)) return NB_OK;
    if (!cJSON_IsNumber(it))
        return nb_err(ctx, NB_ERR_FORMAT, "%s: '%s' must be a number", what, key);
    if (!isfinite(it->valuedouble))
        return nb_err(ctx, NB_ERR_RANGE, "%s: '%s' is not finite", what, key);
    /* -0 becomes +0: zero means "absent" in nb_hparams */
    *out = it->valuedouble == 0 ? 0.0 : it->valuedouble;
    *present = true;
    return NB_OK;
}

/* Optional uint with a default (used for Gemma's transformers defaults).
 * 0 counts as absent, as everywhere in nb_hparams. */
static nb_status cfg_uint_def(const cJSON *o, const char *key, uint32_t *out, uint32_t def,
                              const char *what, nb_ctx *ctx) {
    bool p;
    NB_TRY(cfg_uint(o, key, out, &p, what, ctx));
    if (!p || *out == 0) *out = def;
    return NB_OK;
}

static const cJSON *cfg_obj(const cJSON *o, const char *key, const char *what, nb_status *st,
                            nb_ctx *ctx) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    *st = NB_OK;
    if (!it || cJSON_IsNull(it)) return NULL;
    if (!cJSON_IsObject(it)) {
        *st = nb_err(ctx, NB_ERR_FORMAT, "%s: '%s' must be an object", what, key);
        return NULL;
    }
    return it;
}

static nb_status cfg_str(const cJSON *o, const char *key, const char **out, const char *what,
                         nb_ctx *ctx) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = NULL;
    if (!it || cJSON_IsNull(it)) return NB_OK;
    if (!cJSON_IsString(it)) return nb_err(ctx, NB_ERR_FORMAT, "%s: '%s' must be a string", what, key);
    *out = it->valuestring;
    return NB_OK;
}

/* Pick the architecture row: `architectures` entries first, then `model_type`. */
static nb_status cfg_arch(const cJSON *root, const char *what, const nb_arch **out, nb_ctx *ctx) {
    *out = NULL;
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const char *first = NULL;
    if (archs && !cJSON_IsNull(archs)) {
        if (!cJSON_IsArray(archs))
            return nb_err(ctx, NB_ERR_FORMAT, "%s: 'architectures' must be an array of strings", what);
        const cJSON *it;
        cJSON_ArrayForEach(it, archs) {
            if (!cJSON_IsString(it))
                return nb_err(ctx, NB_ERR_FORMAT, "%s: 'architectures' must be an array of strings",
                              what);
            if (!first) first = it->valuestring;
            const nb_arch *a = nb_arch_from_hf_class(it->valuestring);
            if (a) {
                *out = a;
                return NB_OK;
            }
        }
    }
    const char *mt;
    NB_TRY(cfg_str(root, "model_type", &mt, what, ctx));
    if (mt && !first) {
        const nb_arch *a = nb_arch_from_model_type(mt);
        if (a) {
            *out = a;
            return NB_OK;
        }
    }
    if (!first && !mt)
        return nb_err(ctx, NB_ERR_FORMAT, "%s: neither 'architectures' nor 'model_type' is set", what);
    return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: architecture '%.200s' is not supported (supported: %s)",
                  what, first ? first : mt, nb_arch_supported_list());
}

static nb_status cfg_rope_scaling(const cJSON *hpo, nb_hparams *hp, const char *what, nb_ctx *ctx) {
    nb_status st;
    const cJSON *rs = cfg_obj(hpo, "rope_scaling", what, &st, ctx);
    NB_TRY(st);
    if (!rs) return NB_OK;
    const char *type;
    NB_TRY(cfg_str(rs, "rope_type", &type, what, ctx));
    if (!type) NB_TRY(cfg_str(rs, "type", &type, what, ctx));
    if (!type || strcmp(type, "default") == 0) return NB_OK;
    bool p;
    if (strcmp(type, "linear") == 0 || strcmp(type, "yarn") == 0) {
        NB_TRY(cfg_num(rs, "factor", &hp->rope_factor, &p, what, ctx));
        /* llama.cpp writes the keys only when a factor is given */
        if (!p) return NB_OK;
        hp->rope_scaling = type[0] == 'l' ? NB_ROPE_SCALING_LINEAR : NB_ROPE_SCALING_YARN;
        NB_TRY(cfg_uint(rs, "original_max_position_embeddings", &hp->rope_orig_ctx, &p, what, ctx));
        return NB_OK;
    }
    if (strcmp(type, "llama3") == 0) {
        hp->rope_scaling = NB_ROPE_SCALING_LLAMA3;
        NB_TRY(cfg_num(rs, "factor", &hp->rope_factor, &p, what, ctx));
        if (!p) hp->rope_factor = 8.0;
        NB_TRY(cfg_num(rs, "low_freq_factor", &hp->rope_low_freq, &p, what, ctx));
        if (!p) hp->rope_low_freq = 1.0;
        NB_TRY(cfg_num(rs, "high_freq_factor", &hp->rope_high_freq, &p, what, ctx));
        if (!p) hp->rope_high_freq = 4.0;
        /* transformers keeps it inside rope_scaling; llama.cpp's converter reads
         * the top-level key. Same value in every published Llama 3 config. */
        NB_TRY(cfg_uint(rs, "original_max_position_embeddings", &hp->rope_orig_ctx, &p, what, ctx));
        if (!p) NB_TRY(cfg_uint(hpo, "original_max_position_embeddings", &hp->rope_orig_ctx, &p, what, ctx));
        if (!p) hp->rope_orig_ctx = 8192;
        return NB_OK;
    }
    NB_WARN(ctx, "%s: rope_scaling type '%.64s' has no GGUF equivalent here; ignored", what, type);
    return NB_OK;
}

/* rope_theta: top level, or transformers v5 `rope_parameters` (flat, or per
 * attention kind for Gemma 3). */
static nb_status cfg_rope_theta(const cJSON *hpo, nb_hparams *hp, const char *what, nb_ctx *ctx) {
    bool p;
    NB_TRY(cfg_num(hpo, "rope_theta", &hp->rope_theta, &p, what, ctx));
    NB_TRY(cfg_num(hpo, "rope_local_base_freq", &hp->rope_theta_swa, &p, what, ctx));
    nb_status st;
    const cJSON *rp = cfg_obj(hpo, "rope_parameters", what, &st, ctx);
    NB_TRY(st);
    if (rp) {
        const cJSON *full = cfg_obj(rp, "full_attention", what, &st, ctx);
        NB_TRY(st);
        const cJSON *swa = cfg_obj(rp, "sliding_attention", what, &st, ctx);
        NB_TRY(st);
        if (hp->rope_theta == 0) NB_TRY(cfg_num(full ? full : rp, "rope_theta", &hp->rope_theta, &p, what, ctx));
        if (swa && hp->rope_theta_swa == 0)
            NB_TRY(cfg_num(swa, "rope_theta", &hp->rope_theta_swa, &p, what, ctx));
    }
    return NB_OK;
}

nb_status nb_hf_config_parse(const char *json, size_t len, const char *what, nb_hf_config *out,
                             nb_ctx *ctx) {
    memset(out, 0, sizeof *out);
    if (len > NB_HF_MAX_CONFIG)
        return nb_err(ctx, NB_ERR_RANGE, "%s: %zu bytes is larger than the %u-byte limit", what, len,
                      NB_HF_MAX_CONFIG);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return nb_err(ctx, NB_ERR_FORMAT, "%s: not valid JSON", what);
    nb_json_last_wins(root); /* duplicate keys: the last wins, as in transformers (Python's json) */
    nb_status st = NB_OK;
    nb_hparams *hp = &out->hp;
    bool p;
    if (!cJSON_IsObject(root)) NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT, "%s: not a JSON object", what);
    const nb_arch *a;
    NB_CHECK_GOTO(st, cfg_arch(root, what, &a, ctx), done);
    /* Gemma3ForConditionalGeneration keeps the language model's settings in text_config */
    const cJSON *hpo = cfg_obj(root, "text_config", what, &st, ctx);
    if (st != NB_OK) goto done;
    if (!hpo) hpo = root;
    static const nb_hparams no_defaults = {0};
    const nb_hparams *def = a->hf_defaults ? a->hf_defaults : &no_defaults;

    NB_CHECK_GOTO(st, cfg_uint(hpo, "num_hidden_layers", &hp->n_layer, &p, what, ctx), done);
    NB_CHECK_GOTO(st, cfg_uint(hpo, "hidden_size", &hp->n_embd, &p, what, ctx), done);
    NB_CHECK_GOTO(st, cfg_uint(hpo, "intermediate_size", &hp->n_ff, &p, what, ctx), done);
    /* Defaults (the arch row's hf_defaults) follow llama.cpp's converter /
     * transformers' config classes, e.g. Gemma3TextConfig, whose multimodal configs omit them. */
    NB_CHECK_GOTO(st, cfg_uint_def(hpo, "num_attention_heads", &hp->n_head, def->n_head, what, ctx), done);
    NB_CHECK_GOTO(st, cfg_uint_def(hpo, "num_key_value_heads", &hp->n_head_kv,
                                   def->n_head_kv ? def->n_head_kv : hp->n_head, what, ctx), done);
    NB_CHECK_GOTO(st, cfg_uint_def(hpo, "head_dim", &hp->head_dim, def->head_dim, what, ctx), done);
    NB_CHECK_GOTO(st, cfg_uint(hpo, "max_position_embeddings", &hp->n_ctx, &p, what, ctx), done);
    if (!p) NB_CHECK_GOTO(st, cfg_uint(hpo, "max_sequence_length", &hp->n_ctx, &p, what, ctx), done);
    if (hp->n_ctx == 0) hp->n_ctx = def->n_ctx;
    NB_CHECK_GOTO(st, cfg_uint_def(hpo, "vocab_size", &hp->n_vocab, def->n_vocab, what, ctx), done);
    NB_CHECK_GOTO(st, cfg_rope_theta(hpo, hp, what, ctx), done);
    if (hp->rope_theta == 0) hp->rope_theta = def->rope_theta;
    NB_CHECK_GOTO(st, cfg_num(hpo, "rms_norm_eps", &hp->rms_eps, &p, what, ctx), done);
    if (hp->rms_eps == 0) hp->rms_eps = def->rms_eps;
    if (a->flags & NB_ARCH_F_MOE) {
        const char *nk = (a->flags & NB_ARCH_F_MIXTRAL_NAMES) ? "num_local_experts" : "num_experts";
        NB_CHECK_GOTO(st, cfg_uint(hpo, nk, &hp->n_expert, &p, what, ctx), done);
        NB_CHECK_GOTO(st, cfg_uint(hpo, "num_experts_per_tok", &hp->n_expert_used, &p, what, ctx), done);
        NB_CHECK_GOTO(st, cfg_uint(hpo, "moe_intermediate_size", &hp->n_ff_exp, &p, what, ctx), done);
        if (a->flags & NB_ARCH_F_SHEXP)
            NB_CHECK_GOTO(st, cfg_uint(hpo, "shared_expert_intermediate_size", &hp->n_ff_shexp, &p,
                                       what, ctx), done);
    }
    if (a->swa_period)
        NB_CHECK_GOTO(st, cfg_uint_def(hpo, "sliding_window", &hp->sliding_window, def->sliding_window, what, ctx),
                      done);
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(hpo, "tie_word_embeddings");
    if (!tie || cJSON_IsNull(tie)) tie = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    if (tie && !cJSON_IsNull(tie) && !cJSON_IsBool(tie))
        NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT, "%s: 'tie_word_embeddings' must be true or false", what);
    hp->tie_embeddings = (tie && !cJSON_IsNull(tie)) ? cJSON_IsTrue(tie) : (a->flags & NB_ARCH_F_TIED) != 0;
    NB_CHECK_GOTO(st, cfg_rope_scaling(hpo, hp, what, ctx), done);
    NB_CHECK_GOTO(st, nb_hparams_validate(a, hp, what, ctx), done);

    const char *np;
    NB_CHECK_GOTO(st, cfg_str(root, "_name_or_path", &np, what, ctx), done);
    if (np) {
        size_t n = strlen(np);
        while (n > 0 && np[n - 1] == '/') n--;
        size_t b = n;
        while (b > 0 && np[b - 1] != '/') b--;
        if (n > b) {
            out->name = nb_strndup(ctx, np + b, n - b > 200 ? 200 : n - b);
            if (!out->name) NB_FAIL_GOTO(st, done, ctx, NB_ERR_NOMEM, "%s: out of memory", what);
        }
    }
    out->arch = a;
done:
    cJSON_Delete(root);
    if (st != NB_OK) nb_hf_config_free(out);
    return st;
}

void nb_hf_config_free(nb_hf_config *c) {
    if (!c) return;
    free(c->name);
    memset(c, 0, sizeof *c);
}

/* A double as JSON text that reads back exactly (cJSON's own printer may
 * lose the last bit): the shortest of %.15g, %.16g, %.17g that round-trips. */
static bool add_exact_number(cJSON *o, const char *key, double v) {
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    return cJSON_AddRawToObject(o, key, buf) != NULL;
}

char *nb_hf_config_render(const nb_arch *a, const nb_hparams *hp, const char *torch_dtype,
                          nb_ctx *ctx) {
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    cJSON *arr = cJSON_CreateStringArray(&a->hf_class, 1);
    ok = ok && arr && cJSON_AddItemToObject(o, "architectures", arr);
    if (!ok) cJSON_Delete(arr);
#define NUM(k, v) ok = ok && cJSON_AddNumberToObject(o, (k), (double)(v)) != NULL
    ok = ok && cJSON_AddStringToObject(o, "model_type", a->hf_model_types[0]) != NULL;
    ok = ok && cJSON_AddStringToObject(o, "hidden_act", nb_act_hf_name(a->act)) != NULL;
    NUM("hidden_size", hp->n_embd);
    if (hp->n_ff) NUM("intermediate_size", hp->n_ff);
    NUM("num_hidden_layers", hp->n_layer);
    NUM("num_attention_heads", hp->n_head);
    NUM("num_key_value_heads", hp->n_head_kv);
    if (hp->head_dim) NUM("head_dim", hp->head_dim);
    NUM("max_position_embeddings", hp->n_ctx);
    NUM("vocab_size", hp->n_vocab);
    if (hp->rms_eps != 0) ok = ok && add_exact_number(o, "rms_norm_eps", hp->rms_eps);
    if (hp->rope_theta != 0) ok = ok && add_exact_number(o, "rope_theta", hp->rope_theta);
    if (hp->rope_theta_swa != 0) ok = ok && add_exact_number(o, "rope_local_base_freq", hp->rope_theta_swa);
    if (a->flags & NB_ARCH_F_MOE) {
        NUM((a->flags & NB_ARCH_F_MIXTRAL_NAMES) ? "num_local_experts" : "num_experts", hp->n_expert);
        NUM("num_experts_per_tok", hp->n_expert_used);
        if (hp->n_ff_exp) NUM("moe_intermediate_size", hp->n_ff_exp);
        if (hp->n_ff_shexp) NUM("shared_expert_intermediate_size", hp->n_ff_shexp);
        if (!(a->flags & NB_ARCH_F_MIXTRAL_NAMES)) {
            NUM("decoder_sparse_step", 1);
            ok = ok && cJSON_AddBoolToObject(o, "norm_topk_prob", a->norm_topk) != NULL;
        }
    }
    if (hp->sliding_window) NUM("sliding_window", hp->sliding_window);
    if (a->attn_scale == NB_ATTN_SCALE_QUERY_PRE_ATTN) NUM("query_pre_attn_scalar", nb_hparams_head_dim(hp));
    ok = ok && cJSON_AddBoolToObject(o, "tie_word_embeddings", hp->tie_embeddings) != NULL;
    if (hp->rope_scaling != NB_ROPE_SCALING_NONE) {
        cJSON *rs = cJSON_AddObjectToObject(o, "rope_scaling");
        ok = ok && rs;
        const char *t = hp->rope_scaling == NB_ROPE_SCALING_LINEAR ? "linear"
                        : hp->rope_scaling == NB_ROPE_SCALING_YARN ? "yarn"
                                                                   : "llama3";
        ok = ok && cJSON_AddStringToObject(rs, "rope_type", t) != NULL;
        ok = ok && add_exact_number(rs, "factor", hp->rope_factor);
        if (hp->rope_orig_ctx)
            ok = ok && cJSON_AddNumberToObject(rs, "original_max_position_embeddings", hp->rope_orig_ctx);
        if (hp->rope_scaling == NB_ROPE_SCALING_LLAMA3) {
            ok = ok && add_exact_number(rs, "low_freq_factor", hp->rope_low_freq);
            ok = ok && add_exact_number(rs, "high_freq_factor", hp->rope_high_freq);
        }
    }
    if (torch_dtype) ok = ok && cJSON_AddStringToObject(o, "torch_dtype", torch_dtype) != NULL;
#undef NUM
    char *s = ok ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    if (!s) {
        nb_err(ctx, NB_ERR_NOMEM, "config.json: out of memory");
        return NULL;
    }
    /* cJSON's allocator is malloc by default: the caller frees with free() */
    return s;
}

/* ---- the model -------------------------------------------------------------------------- */

typedef enum hf_kind { K_DIRECT, K_PERMUTE, K_EXPERTS, K_SHIFT, K_ROPE_FREQS, K_UNMAPPED, K_DENSE } hf_kind;

typedef struct hf_tensor {
    hf_kind kind;
    size_t src;       /* index in the safetensors model */
    size_t *srcs;     /* K_EXPERTS: one per expert */
    uint32_t n_head;  /* K_PERMUTE */
    size_t order;     /* position in the safetensors listing (stable sort) */
    int dense;        /* K_DENSE: which sentence-transformers Dense module (0: 2_Dense, 1: 3_Dense) */
} hf_tensor;

typedef struct hf_impl {
    nb_model *st;
    nb_model *dense[2]; /* encoders: DIR/2_Dense and DIR/3_Dense model.safetensors, or NULL */
    hf_tensor *ht; /* n_tensors entries; nb_tensor.priv points here */
    nb_hparams hp;
} hf_impl;

static void hf_close(nb_model *m) {
    hf_impl *im = m->impl;
    if (im) {
        for (size_t i = 0; i < m->n_tensors; i++) free(im->ht[i].srcs);
        free(im->ht);
        nb_model_close(im->st);
        nb_model_close(im->dense[0]);
        nb_model_close(im->dense[1]);
        free(im);
    }
    nb_model_free_common(m);
}

static nb_status hf_read(nb_model *m, size_t i, void *dst, nb_ctx *ctx) {
    hf_impl *im = m->impl;
    const nb_tensor *t = &m->tensors[i];
    const hf_tensor *h = t->priv;
    switch (h->kind) {
    case K_DIRECT:
    case K_UNMAPPED:
        return nb_model_read_tensor(im->st, h->src, dst, ctx);
    case K_PERMUTE: {
        const nb_tensor *s = &im->st->tensors[h->src];
        uint64_t rows = s->n_dims >= 2 ? (uint64_t)s->ne[1] : (uint64_t)s->ne[0];
        uint64_t row_bytes = s->nbytes / rows;
        const void *src;
        void *owned;
        NB_TRY(nb_model_tensor_bytes(im->st, h->src, &src, &owned, ctx));
        nb_status st = nb_qk_permute(src, dst, rows, row_bytes, h->n_head, false, t->name, ctx);
        free(owned);
        return st;
    }
    case K_EXPERTS: {
        uint64_t piece = im->st->tensors[h->srcs[0]].nbytes;
        for (int64_t e = 0; e < t->ne[2]; e++)
            NB_TRY(nb_model_read_tensor(im->st, h->srcs[e], (unsigned char *)dst + (uint64_t)e * piece,
                                        ctx));
        return NB_OK;
    }
    case K_SHIFT: {
        float *f = dst;
        NB_TRY(nb_model_read_f32(im->st, h->src, f, ctx));
        uint64_t n = nb_tensor_nelements(t);
        for (uint64_t k = 0; k < n; k++) f[k] += 1.0f;
        return NB_OK;
    }
    case K_ROPE_FREQS:
        return nb_arch_llama3_rope_factors(&im->hp, dst, (size_t)t->ne[0], ctx);
    case K_DENSE:
        return nb_model_read_tensor(im->dense[h->dense], h->src, dst, ctx);
    }
    return nb_err(ctx, NB_ERR_INTERNAL, "%s: tensor '%s': bad kind", m->path, t->name);
}

static const nb_model_ops k_hf_ops = {hf_read, hf_close};

bool nb_hf_is_unmapped(const nb_model *m, size_t i) {
    if (!m || m->format != NB_FMT_HF_DIR || i >= m->n_tensors || !m->tensors[i].priv) return false;
    return ((const hf_tensor *)m->tensors[i].priv)->kind == K_UNMAPPED;
}

/* Sort key: group, layer, position of the suffix in the canonical block order. */
static const char *const k_block_order[] = {
    "attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_q.bias",
    "attn_k.bias", "attn_v.bias", "attn_q_norm.weight", "attn_k_norm.weight", "attn_output.weight",
    "attn_output.bias", "post_attention_norm.weight", "ffn_norm.weight", "ffn_gate.weight",
    "ffn_up.weight", "ffn_down.weight", "ffn_gate_inp.weight", "ffn_gate_exps.weight",
    "ffn_up_exps.weight", "ffn_down_exps.weight", "ffn_gate_inp_shexp.weight",
    "ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight", "post_ffw_norm.weight"};

static void sort_key(const nb_tensor *t, int *group, long *layer, int *rank) {
    const hf_tensor *h = t->priv;
    *layer = 0;
    *rank = 0;
    if (h->kind == K_UNMAPPED) { *group = 5; return; }
    if (strcmp(t->name, "rope_freqs.weight") == 0) { *group = 0; return; }
    if (strcmp(t->name, "token_embd.weight") == 0) { *group = 1; return; }
    if (strcmp(t->name, "output_norm.weight") == 0) { *group = 3; return; }
    if (strcmp(t->name, "output.weight") == 0) { *group = 4; return; }
    if (strcmp(t->name, "dense_2.weight") == 0) { *group = 5; return; }
    if (strcmp(t->name, "dense_3.weight") == 0) { *group = 6; return; }
    *group = 2;
    char *end;
    *layer = strtol(t->name + 4, &end, 10); /* "blk.N.suffix" */
    *rank = 99;
    if (*end == '.')
        for (size_t k = 0; k < sizeof k_block_order / sizeof k_block_order[0]; k++)
            if (strcmp(end + 1, k_block_order[k]) == 0) { *rank = (int)k; break; }
}

static int tensor_cmp(const void *pa, const void *pb) {
    const nb_tensor *a = pa, *b = pb;
    int ga, gb, ra, rb;
    long la, lb;
    sort_key(a, &ga, &la, &ra);
    sort_key(b, &gb, &lb, &rb);
    if (ga != gb) return ga < gb ? -1 : 1;
    if (la != lb) return la < lb ? -1 : 1;
    if (ra != rb) return ra < rb ? -1 : 1;
    size_t oa = ((const hf_tensor *)a->priv)->order, ob = ((const hf_tensor *)b->priv)->order;
    return oa < ob ? -1 : oa > ob;
}

static bool file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Expert pieces collected per stacked tensor. */
typedef struct expert_group {
    char name[NB_MAX_NAME + 1];
    size_t *srcs; /* n_expert, SIZE_MAX = missing */
    size_t order;
} expert_group;

typedef struct hf_build {
    nb_model *m;
    hf_impl *im;
    size_t cap;
    expert_group *groups;
    size_t n_groups;
    const char *dir;       /* the model directory */
    uint32_t n_embd_dense; /* encoders: 2_Dense's out_features (0: no Dense modules) */
    nb_ctx *ctx;
} hf_build;

static nb_status add_tensor(hf_build *b, const char *name, hf_tensor **h_out, nb_tensor **t_out) {
    nb_model *m = b->m;
    if (m->n_tensors == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        nb_tensor *t = nb_realloc(NULL, m->tensors, cap * sizeof *t, "hf");
        if (!t) return nb_err(b->ctx, NB_ERR_NOMEM, "%s: out of memory", m->path);
        m->tensors = t;
        hf_tensor *h = nb_realloc(NULL, b->im->ht, cap * sizeof *h, "hf");
        if (!h) return nb_err(b->ctx, NB_ERR_NOMEM, "%s: out of memory", m->path);
        b->im->ht = h;
        b->cap = cap;
    }
    nb_tensor *t = &m->tensors[m->n_tensors];
    hf_tensor *h = &b->im->ht[m->n_tensors];
    memset(t, 0, sizeof *t);
    memset(h, 0, sizeof *h);
    t->name = nb_strdup(b->ctx, name);
    if (!t->name) return NB_ERR_NOMEM;
    m->n_tensors++;
    *h_out = h;
    *t_out = t;
    return NB_OK;
}

static nb_status add_dense(hf_build *b, const nb_arch *a);

static nb_status build_tensors(hf_build *b, const nb_hf_config *cfg, const char *stpath) {
    nb_ctx *ctx = b->ctx;
    nb_model *st = b->im->st;
    const nb_arch *a = cfg->arch;
    const nb_hparams *hp = &cfg->hp;
    size_t n_unmapped = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const nb_tensor *s = &st->tensors[i];
        nb_name_map nm;
        if (!nb_arch_map_hf(a, s->name, &nm)) {
            hf_tensor *h;
            nb_tensor *t;
            NB_TRY(add_tensor(b, s->name, &h, &t));
            h->kind = K_UNMAPPED;
            h->src = i;
            h->order = i;
            char *nm_keep = t->name;
            *t = *s;
            t->name = nm_keep;
            t->priv = h;
            if (n_unmapped++ < 5)
                NB_DEBUG(ctx, "%s: tensor '%s' has no GGUF name for %s; kept as is", stpath, s->name,
                         a->name);
            continue;
        }
        if (nm.skip) continue;
        if (nm.layer >= (int)hp->n_layer)
            return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s': layer %d >= num_hidden_layers %u",
                          stpath, s->name, nm.layer, hp->n_layer);
        if (nm.expert >= 0) {
            NB_RETURN_IF(ctx, (uint32_t)nm.expert >= hp->n_expert, NB_ERR_FORMAT,
                         "%s: tensor '%s': expert %d >= expert count %u", stpath, s->name, nm.expert,
                         hp->n_expert);
            NB_RETURN_IF(ctx, s->n_dims != 2, NB_ERR_FORMAT, "%s: tensor '%s': expert weight must be 2-D",
                         stpath, s->name);
            expert_group *g = NULL;
            for (size_t k = 0; k < b->n_groups; k++)
                if (strcmp(b->groups[k].name, nm.gguf) == 0) { g = &b->groups[k]; break; }
            if (!g) {
                expert_group *ng = nb_realloc(NULL, b->groups, (b->n_groups + 1) * sizeof *ng, "hf");
                if (!ng) return nb_err(ctx, NB_ERR_NOMEM, "%s: out of memory", stpath);
                b->groups = ng;
                g = &ng[b->n_groups];
                memset(g, 0, sizeof *g);
                b->n_groups++;
                snprintf(g->name, sizeof g->name, "%s", nm.gguf);
                g->order = i;
                g->srcs = nb_malloc(ctx, hp->n_expert * sizeof *g->srcs, "expert table");
                if (!g->srcs) return NB_ERR_NOMEM;
                for (uint32_t e = 0; e < hp->n_expert; e++) g->srcs[e] = SIZE_MAX;
            }
            NB_RETURN_IF(ctx, g->srcs[nm.expert] != SIZE_MAX, NB_ERR_FORMAT,
                         "%s: tensor '%s': expert %d of '%s' appears twice", stpath, s->name, nm.expert,
                         nm.gguf);
            g->srcs[nm.expert] = i;
            continue;
        }
        NB_RETURN_IF(ctx, nb_model_find(b->m, nm.gguf) != NULL, NB_ERR_FORMAT,
                     "%s: tensor '%s' maps to '%s', which another tensor already gave", stpath, s->name,
                     nm.gguf);
        hf_tensor *h;
        nb_tensor *t;
        NB_TRY(add_tensor(b, nm.gguf, &h, &t));
        char *keep = t->name;
        *t = *s;
        t->name = keep;
        t->priv = h;
        h->src = i;
        h->order = i;
        h->kind = K_DIRECT;
        /* HF stores the shared-expert gate as [1, n_embd]; GGUF (llama.cpp) as {n_embd} */
        if (t->n_dims == 2 && t->ne[1] == 1 && strstr(nm.gguf, "ffn_gate_inp_shexp")) t->n_dims = 1;
        if (nm.xf == NB_XF_PERMUTE_Q || nm.xf == NB_XF_PERMUTE_K) {
            uint32_t nh = nm.xf == NB_XF_PERMUTE_Q ? hp->n_head : hp->n_head_kv;
            uint64_t rows = s->n_dims >= 2 ? (uint64_t)s->ne[1] : (uint64_t)s->ne[0];
            NB_RETURN_IF(ctx, s->n_dims < 1 || s->n_dims > 2 || rows % (2ull * nh) != 0, NB_ERR_FORMAT,
                         "%s: tensor '%s': %llu rows cannot be split into %u heads of even size",
                         stpath, s->name, (unsigned long long)rows, nh);
            h->kind = K_PERMUTE;
            h->n_head = nh;
            t->data = NULL;
            t->file_offset = 0;
        } else if (nm.xf == NB_XF_NORM_SHIFT) {
            const nb_type_traits *tr = nb_type_get(s->type);
            NB_RETURN_IF(ctx, !tr || !tr->is_float, NB_ERR_UNSUPPORTED,
                         "%s: tensor '%s': norm weights of type %s are not supported", stpath, s->name,
                         nb_type_name(s->type));
            h->kind = K_SHIFT;
            t->type = NB_TYPE_F32;
            NB_RETURN_IF(ctx, !nb_mul_u64(nb_tensor_nelements(s), 4, &t->nbytes), NB_ERR_RANGE,
                         "%s: tensor '%s': too large", stpath, s->name);
            t->data = NULL;
            t->file_offset = 0;
        }
    }
    if (n_unmapped)
        NB_WARN(ctx, "%s: %zu tensor(s) have no GGUF name for architecture %s and keep their "
                     "Hugging Face names (llama.cpp will not load them)",
                stpath, n_unmapped, a->name);
    /* stacked experts */
    for (size_t k = 0; k < b->n_groups; k++) {
        expert_group *g = &b->groups[k];
        const nb_tensor *s0 = NULL;
        for (uint32_t e = 0; e < hp->n_expert; e++) {
            if (g->srcs[e] == SIZE_MAX)
                return nb_err(ctx, NB_ERR_FORMAT, "%s: '%s': expert %u of %u is missing", stpath,
                              g->name, e, hp->n_expert);
            const nb_tensor *s = &st->tensors[g->srcs[e]];
            if (!s0) s0 = s;
            else if (s->type != s0->type || s->ne[0] != s0->ne[0] || s->ne[1] != s0->ne[1])
                return nb_err(ctx, NB_ERR_FORMAT, "%s: '%s': expert %u has type/shape %s [%lld, %lld], "
                                                  "expert 0 has %s [%lld, %lld]",
                              stpath, g->name, e, nb_type_name(s->type), (long long)s->ne[1],
                              (long long)s->ne[0], nb_type_name(s0->type), (long long)s0->ne[1],
                              (long long)s0->ne[0]);
        }
        hf_tensor *h;
        nb_tensor *t;
        NB_TRY(add_tensor(b, g->name, &h, &t));
        t->type = s0->type;
        t->n_dims = 3;
        t->ne[0] = s0->ne[0];
        t->ne[1] = s0->ne[1];
        t->ne[2] = hp->n_expert;
        t->ne[3] = 1;
        NB_RETURN_IF(ctx, !nb_mul_u64(s0->nbytes, hp->n_expert, &t->nbytes), NB_ERR_RANGE,
                     "%s: '%s': too large", stpath, g->name);
        t->priv = h;
        h->kind = K_EXPERTS;
        h->srcs = g->srcs;
        h->order = g->order;
        g->srcs = NULL;
    }
    if (hp->rope_scaling == NB_ROPE_SCALING_LLAMA3) {
        if (a->flags & NB_ARCH_F_PERMUTE_QK) {
            hf_tensor *h;
            nb_tensor *t;
            NB_TRY(add_tensor(b, "rope_freqs.weight", &h, &t));
            t->type = NB_TYPE_F32;
            t->n_dims = 1;
            t->ne[0] = nb_hparams_head_dim(hp) / 2;
            t->ne[1] = t->ne[2] = t->ne[3] = 1;
            t->nbytes = (uint64_t)t->ne[0] * 4;
            t->priv = h;
            h->kind = K_ROPE_FREQS;
        } else {
            NB_WARN(ctx, "%s: llama3 rope scaling is only carried for the llama family; ignored", stpath);
        }
    }
    if (a->flags & NB_ARCH_F_ENCODER) NB_TRY(add_dense(b, a));
    /* priv pointers are stable (ht is not reallocated any more); sort the views */
    for (size_t i = 0; i < b->m->n_tensors; i++) b->m->tensors[i].priv = &b->im->ht[i];
    qsort(b->m->tensors, b->m->n_tensors, sizeof *b->m->tensors, tensor_cmp);
    return NB_OK;
}

/* Encoders (gemma-embedding): the sentence-transformers Dense modules beside
 * the model, DIR/2_Dense and DIR/3_Dense (the paths llama.cpp's converter maps
 * to dense_2 / dense_3), each a model.safetensors holding linear.weight
 * [out, in] (no bias in EmbeddingGemma; a bias is refused, not dropped).
 * Without them the model is the bare transformer. Sets hp->n_embd_dense. */
static nb_status add_dense(hf_build *b, const nb_arch *a) {
    const char *dir = b->dir;
    nb_ctx *ctx = b->ctx;
    /* the engine pools by the mean (GGUF pooling_type 1): refuse a 1_Pooling that says otherwise */
    char *pool = nb_path_join(ctx, dir, "1_Pooling/config.json");
    if (!pool) return NB_ERR_NOMEM;
    if (file_exists(pool)) {
        char *js = NULL;
        size_t len = 0;
        nb_status pst = nb_read_file(pool, NB_HF_MAX_CONFIG, &js, &len, ctx);
        cJSON *root = pst == NB_OK ? cJSON_ParseWithLength(js, len) : NULL;
        const cJSON *mean = root ? cJSON_GetObjectItemCaseSensitive(root, "pooling_mode_mean_tokens") : NULL;
        if (pst == NB_OK && !cJSON_IsTrue(mean))
            pst = nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: only mean pooling is supported ('pooling_mode_mean_tokens' "
                                                  "is not true)", pool);
        cJSON_Delete(root);
        free(js);
        if (pst != NB_OK) {
            free(pool);
            return pst;
        }
    }
    free(pool);
    static const char *const sub[2] = {"2_Dense", "3_Dense"};
    nb_status st = NB_OK;
    for (int k = 0; k < 2 && st == NB_OK; k++) {
        char rel[64];
        snprintf(rel, sizeof rel, "%s/model.safetensors", sub[k]);
        char *path = nb_path_join(ctx, dir, rel);
        if (!path) return NB_ERR_NOMEM;
        if (!file_exists(path)) {
            free(path);
            continue;
        }
        st = nb_safetensors_open(path, &b->im->dense[k], ctx);
        const nb_model *dm = b->im->dense[k];
        for (size_t i = 0; st == NB_OK && i < dm->n_tensors; i++) {
            const nb_tensor *s = &dm->tensors[i];
            if (strcmp(s->name, "linear.weight") != 0) {
                st = nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: tensor '%s' is not supported (only linear.weight: a Dense "
                                                     "layer without bias)", path, s->name);
                break;
            }
            char hfname[64];
            nb_name_map nm;
            snprintf(hfname, sizeof hfname, "%s/linear.weight", sub[k]);
            if (!nb_arch_map_hf(a, hfname, &nm)) {
                st = nb_err(ctx, NB_ERR_INTERNAL, "%s: no GGUF name for '%s'", path, hfname);
                break;
            }
            hf_tensor *h;
            nb_tensor *t;
            if ((st = add_tensor(b, nm.gguf, &h, &t)) != NB_OK) break;
            char *keep = t->name;
            *t = *s;
            t->name = keep;
            t->priv = h;
            h->kind = K_DENSE;
            h->dense = k;
            h->src = i;
            h->order = SIZE_MAX - 2 + (size_t)k;
            if (k == 0 && s->n_dims == 2 && s->ne[1] <= UINT32_MAX) b->n_embd_dense = (uint32_t)s->ne[1];
        }
        free(path);
    }
    if (st == NB_OK && (b->im->dense[0] != NULL) != (b->im->dense[1] != NULL))
        st = nb_err(ctx, NB_ERR_FORMAT, "%s: %s/model.safetensors is missing (the Dense modules come in pairs)", dir,
                    b->im->dense[0] ? sub[1] : sub[0]);
    return st;
}

static void fmt_ne(char *buf, size_t n, uint32_t nd, const int64_t *ne) {
    size_t k = (size_t)snprintf(buf, n, "{");
    for (uint32_t d = 0; d < nd && k < n; d++) k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)ne[d]);
    if (k < n) snprintf(buf + k, n - k, "}");
}

/* config.json against the weights, at open: the GGUF written from a config
 * that disagrees with its tensors (heads, head_dim, layers) is one the engine
 * rejects later, far from the cause. Every tensor the architecture's list
 * names must have the shape the config implies; no block may lie beyond
 * num_hidden_layers, and the last one must be there. */
static nb_status check_config_shapes(const nb_model *m, const nb_hf_config *cfg, const char *cfg_path,
                                     nb_ctx *ctx) {
    nb_arch_tensor *list = NULL;
    size_t n = 0;
    NB_TRY(nb_arch_tensor_list(cfg->arch, &cfg->hp, &list, &n, ctx));
    nb_status st = NB_OK;
    long top = -1;
    for (size_t i = 0; i < m->n_tensors && st == NB_OK; i++) {
        const nb_tensor *t = &m->tensors[i];
        long L;
        char *end;
        if (!strncmp(t->name, "blk.", 4) && (L = strtol(t->name + 4, &end, 10)) >= 0 && *end == '.' && L > top)
            top = L;
        for (size_t k = 0; k < n; k++) {
            if (strcmp(list[k].name, t->name)) continue;
            bool same = list[k].n_dims == t->n_dims;
            for (uint32_t d = 0; same && d < t->n_dims; d++) same = list[k].ne[d] == t->ne[d];
            if (!same) {
                char have[96], want[96];
                fmt_ne(have, sizeof have, t->n_dims, t->ne);
                fmt_ne(want, sizeof want, list[k].n_dims, list[k].ne);
                st = nb_err(ctx, NB_ERR_FORMAT,
                            "%s: tensor '%s' has shape %s but the config (hidden_size %u, heads %u, kv heads %u, "
                            "head_dim %u, intermediate_size %u, vocab_size %u) implies %s",
                            cfg_path, t->name, have, cfg->hp.n_embd, cfg->hp.n_head, cfg->hp.n_head_kv,
                            nb_hparams_head_dim(&cfg->hp), cfg->hp.n_ff, cfg->hp.n_vocab, want);
            }
            break;
        }
    }
    if (st == NB_OK && top + 1 != (long)cfg->hp.n_layer)
        st = nb_err(ctx, NB_ERR_FORMAT, "%s: num_hidden_layers is %u but the weights hold %ld layer%s", cfg_path,
                    cfg->hp.n_layer, top + 1, top == 0 ? "" : "s");
    free(list);
    return st;
}

nb_status nb_hf_open(const char *dir, nb_model **out, nb_ctx *ctx) {
    *out = NULL;
    nb_status st = NB_OK;
    char *cfg_path = nb_path_join(ctx, dir, "config.json");
    char *idx_path = nb_path_join(ctx, dir, "model.safetensors.index.json");
    char *one_path = nb_path_join(ctx, dir, "model.safetensors");
    char *json = NULL;
    size_t json_len = 0;
    nb_hf_config cfg;
    memset(&cfg, 0, sizeof cfg);
    nb_model *m = NULL;
    hf_build b;
    memset(&b, 0, sizeof b);
    b.ctx = ctx;
    if (!cfg_path || !idx_path || !one_path) NB_FAIL_GOTO(st, fail, ctx, NB_ERR_NOMEM, "out of memory");
    if (!file_exists(cfg_path))
        NB_FAIL_GOTO(st, fail, ctx, NB_ERR_FORMAT, "%s: not a Hugging Face model directory (no config.json)",
                     dir);
    NB_CHECK_GOTO(st, nb_read_file(cfg_path, NB_HF_MAX_CONFIG, &json, &json_len, ctx), fail);
    NB_CHECK_GOTO(st, nb_hf_config_parse(json, json_len, cfg_path, &cfg, ctx), fail);
    const char *stpath = file_exists(idx_path) ? idx_path : file_exists(one_path) ? one_path : NULL;
    if (!stpath)
        NB_FAIL_GOTO(st, fail, ctx, NB_ERR_FORMAT,
                     "%s: no model.safetensors or model.safetensors.index.json", dir);
    m = nb_model_alloc(dir, NB_FMT_HF_DIR, ctx);
    if (!m) NB_FAIL_GOTO(st, fail, ctx, NB_ERR_NOMEM, "out of memory");
    m->ops = &k_hf_ops;
    b.m = m;
    b.im = nb_calloc(ctx, 1, sizeof *b.im, "hf model");
    if (!b.im) NB_FAIL_GOTO(st, fail, ctx, NB_ERR_NOMEM, "out of memory");
    m->impl = b.im;
    b.im->hp = cfg.hp;
    NB_CHECK_GOTO(st, nb_safetensors_open(stpath, &b.im->st, ctx), fail);
    /* quantization_config: GPTQ / AWQ / bitsandbytes / compressed-tensors tensors become one weight each */
    NB_CHECK_GOTO(st, nb_hfq_wrap(&b.im->st, json, json_len, cfg_path, ctx), fail);
    m->file_bytes = b.im->st->file_bytes;
    b.dir = dir;
    NB_CHECK_GOTO(st, build_tensors(&b, &cfg, stpath), fail);
    cfg.hp.n_embd_dense = b.n_embd_dense;
    b.im->hp = cfg.hp;
    NB_CHECK_GOTO(st, check_config_shapes(m, &cfg, cfg_path, ctx), fail);
    /* tied embeddings: what the files hold decides, not the config's flag */
    b.im->hp.tie_embeddings = nb_model_find(m, "output.weight") == NULL;
    const char *name = cfg.name;
    char *base = NULL;
    if (!name) {
        size_t n = strlen(dir);
        while (n > 1 && dir[n - 1] == '/') n--;
        size_t s = n;
        while (s > 0 && dir[s - 1] != '/') s--;
        base = nb_strndup(ctx, dir + s, n - s);
        if (!base) NB_FAIL_GOTO(st, fail, ctx, NB_ERR_NOMEM, "out of memory");
        name = base;
    }
    st = nb_arch_hparams_to_kv(cfg.arch, &cfg.hp, name, &m->kv, ctx);
    free(base);
    if (st != NB_OK) goto fail;
    bool have_tok;
    NB_CHECK_GOTO(st, nb_hf_tokenizer_read(dir, cfg.hp.n_vocab, cfg.arch->gguf_arch, &m->kv, &have_tok, ctx), fail);
    if (!have_tok) NB_DEBUG(ctx, "%s: no tokenizer.json or tokenizer.model: the model carries no tokenizer", dir);
    *out = m;
    m = NULL;
fail:
    for (size_t k = 0; k < b.n_groups; k++) free(b.groups[k].srcs);
    free(b.groups);
    if (m) {
        /* the views' priv may be unset on failure; close handles every owned piece */
        hf_close(m);
    }
    nb_hf_config_free(&cfg);
    free(json);
    free(cfg_path);
    free(idx_path);
    free(one_path);
    return st;
}
