/* formats/arch.c — architecture table, hyper-parameter <-> GGUF metadata,
 * tensor-name mapping and the llama q/k permutation. See formats/arch.h. */
#include "formats/arch.h"

#include "core/checked.h"
#include "core/str.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- the table -------------------------------------------------------------------- */

static const char *const k_llama_cls[] = {"LlamaForCausalLM", "LLaMAForCausalLM", NULL};
static const char *const k_llama_mt[] = {"llama", NULL};
static const char *const k_mistral_cls[] = {"MistralForCausalLM", NULL};
static const char *const k_mistral_mt[] = {"mistral", NULL};
static const char *const k_mixtral_cls[] = {"MixtralForCausalLM", NULL};
static const char *const k_mixtral_mt[] = {"mixtral", NULL};
static const char *const k_qwen2_cls[] = {"Qwen2ForCausalLM", NULL};
static const char *const k_qwen2_mt[] = {"qwen2", NULL};
static const char *const k_qwen3_cls[] = {"Qwen3ForCausalLM", NULL};
static const char *const k_qwen3_mt[] = {"qwen3", NULL};
static const char *const k_qwen2moe_cls[] = {"Qwen2MoeForCausalLM", NULL};
static const char *const k_qwen2moe_mt[] = {"qwen2_moe", NULL};
static const char *const k_qwen3moe_cls[] = {"Qwen3MoeForCausalLM", NULL};
static const char *const k_qwen3moe_mt[] = {"qwen3_moe", NULL};
static const char *const k_gemma3_cls[] = {"Gemma3ForCausalLM", "Gemma3ForConditionalGeneration", NULL};
static const char *const k_gemma3_mt[] = {"gemma3_text", "gemma3", NULL};
/* EmbeddingGemma's config.json says Gemma3TextModel / gemma3_text: the class decides (a bare
 * model_type "gemma3_text" finds the gemma3 row first) */
static const char *const k_gemma_embd_cls[] = {"Gemma3TextModel", NULL};
static const char *const k_gemma_embd_mt[] = {"gemma3_text", NULL};

/* Gemma3TextConfig's defaults (llama.cpp's converter uses them too). */
static const nb_hparams k_gemma3_hf_defaults = {
    .n_head = 8, .n_head_kv = 4, .head_dim = 256, .n_ctx = 131072, .n_vocab = 262208,
    .rope_theta = 1000000.0, .rms_eps = 1e-6, .sliding_window = 4096,
};

#define ROW(id_, name_, gguf_, cls_, classes_, types_, flags_) \
    [id_] = {.id = id_, .name = name_, .gguf_arch = gguf_, .hf_class = cls_, .hf_classes = classes_, \
             .hf_model_types = types_, .flags = flags_
/* the llama family's values; rows override what differs */
#define LLAMA_LIKE .act = NB_ACT_SILU, .typical_rope_theta = 10000.0, .typical_rms_eps = 1e-5
#define QWEN_LIKE .act = NB_ACT_SILU, .typical_rope_theta = 1000000.0, .typical_rms_eps = 1e-6

static const nb_arch k_arch[NB_ARCH_COUNT] = {
    ROW(NB_ARCH_LLAMA, "llama", "llama", "LlamaForCausalLM", k_llama_cls, k_llama_mt, NB_ARCH_F_PERMUTE_QK),
        LLAMA_LIKE},
    ROW(NB_ARCH_MISTRAL, "mistral", "llama", "MistralForCausalLM", k_mistral_cls, k_mistral_mt, NB_ARCH_F_PERMUTE_QK),
        LLAMA_LIKE},
    ROW(NB_ARCH_MIXTRAL, "mixtral", "llama", "MixtralForCausalLM", k_mixtral_cls, k_mixtral_mt,
        NB_ARCH_F_PERMUTE_QK | NB_ARCH_F_MOE | NB_ARCH_F_MIXTRAL_NAMES),
        LLAMA_LIKE, .norm_topk = true},
    ROW(NB_ARCH_QWEN2, "qwen2", "qwen2", "Qwen2ForCausalLM", k_qwen2_cls, k_qwen2_mt, NB_ARCH_F_QKV_BIAS),
        QWEN_LIKE},
    ROW(NB_ARCH_QWEN3, "qwen3", "qwen3", "Qwen3ForCausalLM", k_qwen3_cls, k_qwen3_mt,
        NB_ARCH_F_QK_NORM | NB_ARCH_F_HEAD_DIM),
        QWEN_LIKE},
    ROW(NB_ARCH_QWEN2MOE, "qwen2_moe", "qwen2moe", "Qwen2MoeForCausalLM", k_qwen2moe_cls, k_qwen2moe_mt,
        NB_ARCH_F_QKV_BIAS | NB_ARCH_F_MOE | NB_ARCH_F_SHEXP),
        QWEN_LIKE, .norm_topk = false},
    ROW(NB_ARCH_QWEN3MOE, "qwen3_moe", "qwen3moe", "Qwen3MoeForCausalLM", k_qwen3moe_cls, k_qwen3moe_mt,
        NB_ARCH_F_QK_NORM | NB_ARCH_F_MOE | NB_ARCH_F_HEAD_DIM),
        QWEN_LIKE, .norm_topk = true},
    ROW(NB_ARCH_GEMMA3, "gemma3", "gemma3", "Gemma3ForCausalLM", k_gemma3_cls, k_gemma3_mt,
        NB_ARCH_F_QK_NORM | NB_ARCH_F_NORM_SHIFT | NB_ARCH_F_SANDWICH | NB_ARCH_F_TIED | NB_ARCH_F_HEAD_DIM),
        .act = NB_ACT_GELU_TANH, .embd_scale_sqrt = true, .attn_scale = NB_ATTN_SCALE_QUERY_PRE_ATTN,
        .swa_period = 6, .hf_defaults = &k_gemma3_hf_defaults, .typical_rope_theta = 1000000.0,
        .typical_rms_eps = 1e-6},
    /* llama.cpp's gemma-embedding: the gemma3 graph without the causal mask, a
     * symmetric sliding window and 1/sqrt(head_dim) as the attention scale */
    ROW(NB_ARCH_GEMMA_EMBEDDING, "gemma-embedding", "gemma-embedding", "Gemma3TextModel", k_gemma_embd_cls,
        k_gemma_embd_mt,
        NB_ARCH_F_QK_NORM | NB_ARCH_F_NORM_SHIFT | NB_ARCH_F_SANDWICH | NB_ARCH_F_TIED | NB_ARCH_F_HEAD_DIM |
            NB_ARCH_F_ENCODER),
        .act = NB_ACT_GELU_TANH, .embd_scale_sqrt = true, .attn_scale = NB_ATTN_SCALE_HEAD_DIM,
        .swa_period = 6, .hf_defaults = &k_gemma3_hf_defaults, .typical_rope_theta = 1000000.0,
        .typical_rms_eps = 1e-6},
};
#undef ROW
#undef LLAMA_LIKE
#undef QWEN_LIKE

const nb_arch *nb_arch_get(nb_arch_id id) {
    if ((int)id < 0 || id >= NB_ARCH_COUNT) return NULL;
    return &k_arch[id];
}

static bool in_list(const char *const *list, const char *s, bool icase) {
    for (; *list; list++)
        if (icase ? strcasecmp(*list, s) == 0 : strcmp(*list, s) == 0) return true;
    return false;
}

const nb_arch *nb_arch_from_hf_class(const char *cls) {
    if (!cls) return NULL;
    for (int i = 0; i < NB_ARCH_COUNT; i++)
        if (in_list(k_arch[i].hf_classes, cls, false)) return &k_arch[i];
    return NULL;
}

const nb_arch *nb_arch_from_model_type(const char *mt) {
    if (!mt) return NULL;
    for (int i = 0; i < NB_ARCH_COUNT; i++)
        if (in_list(k_arch[i].hf_model_types, mt, false)) return &k_arch[i];
    return NULL;
}

const nb_arch *nb_arch_find(const char *name) {
    if (!name) return NULL;
    for (int i = 0; i < NB_ARCH_COUNT; i++) {
        const nb_arch *a = &k_arch[i];
        if (strcasecmp(a->name, name) == 0 || in_list(a->hf_model_types, name, true) ||
            in_list(a->hf_classes, name, true))
            return a;
    }
    /* GGUF spellings ("qwen2moe"); "llama" was matched above */
    for (int i = 0; i < NB_ARCH_COUNT; i++)
        if (strcasecmp(k_arch[i].gguf_arch, name) == 0) return &k_arch[i];
    return NULL;
}

const nb_arch *nb_model_arch(const nb_model *m) {
    const char *g = nb_kv_get_str(&m->kv, "general.architecture");
    return g ? nb_arch_from_gguf(g, false) : NULL;
}

const nb_arch *nb_arch_from_gguf(const char *g, bool has_experts) {
    if (!g) return NULL;
    if (strcmp(g, "llama") == 0) return &k_arch[has_experts ? NB_ARCH_MIXTRAL : NB_ARCH_LLAMA];
    for (int i = 0; i < NB_ARCH_COUNT; i++)
        if (strcmp(k_arch[i].gguf_arch, g) == 0) return &k_arch[i];
    return NULL;
}

const char *nb_arch_supported_list(void) {
    return "llama, mistral, mixtral, qwen2, qwen3, qwen2_moe, qwen3_moe, gemma3 (gemma3_text), "
           "gemma-embedding (Gemma3TextModel)";
}

const char *nb_act_hf_name(nb_act act) { return act == NB_ACT_GELU_TANH ? "gelu_pytorch_tanh" : "silu"; }

float nb_arch_attn_scale(const nb_arch *a, uint32_t n_layer, uint32_t n_embd, uint32_t n_head, uint32_t head_dim) {
    if (a->attn_scale == NB_ATTN_SCALE_QUERY_PRE_ATTN && n_layer == 62)
        return 1.0f / sqrtf((float)(n_embd / n_head));
    return 1.0f / sqrtf((float)head_dim);
}

bool nb_arch_layer_is_swa(const nb_arch *a, uint32_t layer) {
    return a->swa_period > 0 && layer % a->swa_period < a->swa_period - 1;
}

/* ---- hyper-parameters -------------------------------------------------------------------- */

uint32_t nb_hparams_head_dim(const nb_hparams *hp) {
    if (hp->head_dim) return hp->head_dim;
    return hp->n_head ? hp->n_embd / hp->n_head : 0;
}

/* Limits keep every product of shapes far inside int64 (see nb_arch_tensor_list):
 * they are generous for real models (largest today: ~16k hidden, ~200k vocab). */
#define LIM_LAYER 65536u
#define LIM_EMBD (1u << 20)
#define LIM_FF (1u << 22)
#define LIM_HEAD 65536u
#define LIM_HEAD_DIM 65536u
#define LIM_VOCAB (1u << 24)
#define LIM_EXPERT 4096u

static nb_status need(nb_ctx *ctx, const char *what, const char *key, uint32_t v, uint32_t lim) {
    if (v == 0) return nb_err(ctx, NB_ERR_FORMAT, "%s: missing or zero '%s'", what, key);
    if (v > lim)
        return nb_err(ctx, NB_ERR_RANGE, "%s: '%s' = %u is out of range (limit %u)", what, key, v, lim);
    return NB_OK;
}

nb_status nb_hparams_validate(const nb_arch *a, const nb_hparams *hp, const char *what, nb_ctx *ctx) {
    NB_TRY(need(ctx, what, "num_hidden_layers", hp->n_layer, LIM_LAYER));
    NB_TRY(need(ctx, what, "hidden_size", hp->n_embd, LIM_EMBD));
    NB_TRY(need(ctx, what, "num_attention_heads", hp->n_head, LIM_HEAD));
    NB_TRY(need(ctx, what, "num_key_value_heads", hp->n_head_kv, LIM_HEAD));
    NB_TRY(need(ctx, what, "vocab_size", hp->n_vocab, LIM_VOCAB));
    NB_TRY(need(ctx, what, "max_position_embeddings", hp->n_ctx, UINT32_MAX));
    NB_RETURN_IF(ctx, hp->n_head % hp->n_head_kv != 0, NB_ERR_RANGE,
                 "%s: num_attention_heads %u is not a multiple of num_key_value_heads %u", what,
                 hp->n_head, hp->n_head_kv);
    if (hp->head_dim) {
        NB_TRY(need(ctx, what, "head_dim", hp->head_dim, LIM_HEAD_DIM));
    } else {
        NB_RETURN_IF(ctx, hp->n_embd % hp->n_head != 0, NB_ERR_RANGE,
                     "%s: hidden_size %u is not a multiple of num_attention_heads %u (and no head_dim)",
                     what, hp->n_embd, hp->n_head);
    }
    uint32_t hd = nb_hparams_head_dim(hp);
    NB_RETURN_IF(ctx, hd == 0 || hd > LIM_HEAD_DIM, NB_ERR_RANGE, "%s: head dimension %u out of range",
                 what, hd);
    bool moe = a->flags & NB_ARCH_F_MOE;
    bool qwen_moe = moe && !(a->flags & NB_ARCH_F_MIXTRAL_NAMES);
    if (!qwen_moe) NB_TRY(need(ctx, what, "intermediate_size", hp->n_ff, LIM_FF));
    else if (hp->n_ff > LIM_FF)
        return nb_err(ctx, NB_ERR_RANGE, "%s: 'intermediate_size' = %u is out of range", what, hp->n_ff);
    if (moe) {
        NB_TRY(need(ctx, what, qwen_moe ? "num_experts" : "num_local_experts", hp->n_expert, LIM_EXPERT));
        NB_TRY(need(ctx, what, "num_experts_per_tok", hp->n_expert_used, hp->n_expert));
        if (qwen_moe) NB_TRY(need(ctx, what, "moe_intermediate_size", hp->n_ff_exp, LIM_FF));
        if (a->flags & NB_ARCH_F_SHEXP)
            NB_TRY(need(ctx, what, "shared_expert_intermediate_size", hp->n_ff_shexp, LIM_FF));
    } else {
        NB_RETURN_IF(ctx, hp->n_expert > 1, NB_ERR_UNSUPPORTED,
                     "%s: architecture '%s' has no experts but the config sets %u", what, a->name,
                     hp->n_expert);
    }
    NB_RETURN_IF(ctx, hp->n_embd_dense && !(a->flags & NB_ARCH_F_ENCODER), NB_ERR_UNSUPPORTED,
                 "%s: architecture '%s' has no sentence-transformers Dense modules", what, a->name);
    NB_RETURN_IF(ctx, hp->n_embd_dense > LIM_FF, NB_ERR_RANGE, "%s: Dense width %u is out of range (limit %u)",
                 what, hp->n_embd_dense, LIM_FF);
    if (hp->rope_theta != 0)
        NB_RETURN_IF(ctx, !(hp->rope_theta > 0 && hp->rope_theta < 1e30), NB_ERR_RANGE,
                     "%s: 'rope_theta' = %g is out of range", what, hp->rope_theta);
    if (hp->rope_theta_swa != 0)
        NB_RETURN_IF(ctx, !(hp->rope_theta_swa > 0 && hp->rope_theta_swa < 1e30), NB_ERR_RANGE,
                     "%s: 'rope_local_base_freq' = %g is out of range", what, hp->rope_theta_swa);
    if (hp->rms_eps != 0)
        NB_RETURN_IF(ctx, !(hp->rms_eps > 0 && hp->rms_eps < 1), NB_ERR_RANGE,
                     "%s: 'rms_norm_eps' = %g is out of range", what, hp->rms_eps);
    if (hp->rope_scaling != NB_ROPE_SCALING_NONE)
        NB_RETURN_IF(ctx, !(hp->rope_factor > 0 && hp->rope_factor < 1e6), NB_ERR_RANGE,
                     "%s: 'rope_scaling.factor' = %g is out of range", what, hp->rope_factor);
    if (hp->rope_scaling == NB_ROPE_SCALING_LLAMA3) {
        NB_RETURN_IF(ctx, hd % 2 != 0, NB_ERR_RANGE, "%s: llama3 rope scaling needs an even head dim",
                     what);
        NB_RETURN_IF(ctx, !(hp->rope_high_freq > hp->rope_low_freq && hp->rope_low_freq > 0 &&
                            hp->rope_high_freq < 1e6),
                     NB_ERR_RANGE, "%s: llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor",
                     what);
        NB_RETURN_IF(ctx, hp->rope_orig_ctx == 0, NB_ERR_RANGE,
                     "%s: llama3 rope scaling needs original_max_position_embeddings > 0", what);
    }
    return NB_OK;
}

static nb_status kv_u32(nb_kvset *kv, const char *arch, const char *suffix, uint32_t v, nb_ctx *ctx) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return nb_kv_set_u32(kv, key, v, ctx);
}
static nb_status kv_f32(nb_kvset *kv, const char *arch, const char *suffix, double v, nb_ctx *ctx) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return nb_kv_set_f32(kv, key, (float)v, ctx);
}

nb_status nb_arch_hparams_to_kv(const nb_arch *a, const nb_hparams *hp, const char *name,
                                nb_kvset *kv, nb_ctx *ctx) {
    const char *g = a->gguf_arch;
    NB_TRY(nb_kv_set_str(kv, "general.architecture", g, ctx));
    if (name && *name) NB_TRY(nb_kv_set_str(kv, "general.name", name, ctx));
    NB_TRY(kv_u32(kv, g, "vocab_size", hp->n_vocab, ctx));
    NB_TRY(kv_u32(kv, g, "context_length", hp->n_ctx, ctx));
    NB_TRY(kv_u32(kv, g, "embedding_length", hp->n_embd, ctx));
    NB_TRY(kv_u32(kv, g, "block_count", hp->n_layer, ctx));
    if (hp->n_ff) NB_TRY(kv_u32(kv, g, "feed_forward_length", hp->n_ff, ctx));
    NB_TRY(kv_u32(kv, g, "attention.head_count", hp->n_head, ctx));
    NB_TRY(kv_u32(kv, g, "attention.head_count_kv", hp->n_head_kv, ctx));
    if (hp->rope_theta != 0) NB_TRY(kv_f32(kv, g, "rope.freq_base", hp->rope_theta, ctx));
    if (hp->rope_theta_swa != 0) NB_TRY(kv_f32(kv, g, "rope.freq_base_swa", hp->rope_theta_swa, ctx));
    if (hp->rms_eps != 0) NB_TRY(kv_f32(kv, g, "attention.layer_norm_rms_epsilon", hp->rms_eps, ctx));
    if (hp->n_expert) NB_TRY(kv_u32(kv, g, "expert_count", hp->n_expert, ctx));
    if (hp->n_expert_used) NB_TRY(kv_u32(kv, g, "expert_used_count", hp->n_expert_used, ctx));
    if (hp->head_dim) {
        NB_TRY(kv_u32(kv, g, "attention.key_length", hp->head_dim, ctx));
        NB_TRY(kv_u32(kv, g, "attention.value_length", hp->head_dim, ctx));
    }
    /* llama.cpp writes rope.dimension_count for the llama family only */
    if (a->flags & NB_ARCH_F_PERMUTE_QK)
        NB_TRY(kv_u32(kv, g, "rope.dimension_count", nb_hparams_head_dim(hp), ctx));
    if (hp->n_ff_exp) NB_TRY(kv_u32(kv, g, "expert_feed_forward_length", hp->n_ff_exp, ctx));
    if (hp->n_ff_shexp)
        NB_TRY(kv_u32(kv, g, "expert_shared_feed_forward_length", hp->n_ff_shexp, ctx));
    if (hp->sliding_window) NB_TRY(kv_u32(kv, g, "attention.sliding_window", hp->sliding_window, ctx));
    if (a->flags & NB_ARCH_F_ENCODER) {
        /* llama.cpp's converter: pooling from 1_Pooling (mean for EmbeddingGemma; LLAMA_POOLING_TYPE_MEAN
         * = 1), and the Dense modules' in/out features when it keeps them */
        NB_TRY(kv_u32(kv, g, "pooling_type", 1, ctx));
        if (hp->n_embd_dense) {
            NB_TRY(kv_u32(kv, g, "dense_2_feat_in", hp->n_embd, ctx));
            NB_TRY(kv_u32(kv, g, "dense_2_feat_out", hp->n_embd_dense, ctx));
            NB_TRY(kv_u32(kv, g, "dense_3_feat_in", hp->n_embd_dense, ctx));
            NB_TRY(kv_u32(kv, g, "dense_3_feat_out", hp->n_embd, ctx));
        }
    }
    if (hp->rope_scaling == NB_ROPE_SCALING_LINEAR || hp->rope_scaling == NB_ROPE_SCALING_YARN) {
        char key[128];
        snprintf(key, sizeof key, "%s.rope.scaling.type", g);
        NB_TRY(nb_kv_set_str(kv, key, hp->rope_scaling == NB_ROPE_SCALING_LINEAR ? "linear" : "yarn", ctx));
        NB_TRY(kv_f32(kv, g, "rope.scaling.factor", hp->rope_factor, ctx));
        if (hp->rope_scaling == NB_ROPE_SCALING_YARN && hp->rope_orig_ctx)
            NB_TRY(kv_u32(kv, g, "rope.scaling.original_context_length", hp->rope_orig_ctx, ctx));
    }
    return NB_OK;
}

static bool get_u32(const nb_kvset *kv, const char *arch, const char *suffix, uint32_t *out) {
    char key[128];
    uint64_t v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!nb_kv_get_u64(kv, key, &v) || v > UINT32_MAX) return false;
    *out = (uint32_t)v;
    return true;
}
static bool get_f64(const nb_kvset *kv, const char *arch, const char *suffix, double *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return nb_kv_get_f64(kv, key, out);
}

nb_status nb_arch_hparams_from_kv(const nb_arch *a, const nb_kvset *kv, nb_hparams *hp, nb_ctx *ctx) {
    const char *g = a->gguf_arch;
    memset(hp, 0, sizeof *hp);
    static const char *const req[] = {"context_length", "embedding_length", "block_count",
                                      "attention.head_count"};
    uint32_t *dst[] = {&hp->n_ctx, &hp->n_embd, &hp->n_layer, &hp->n_head};
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
        if (!get_u32(kv, g, req[i], dst[i]))
            return nb_err(ctx, NB_ERR_FORMAT, "GGUF metadata: missing or invalid '%s.%s'", g, req[i]);
    if (!get_u32(kv, g, "attention.head_count_kv", &hp->n_head_kv)) hp->n_head_kv = hp->n_head;
    get_u32(kv, g, "feed_forward_length", &hp->n_ff);
    get_u32(kv, g, "vocab_size", &hp->n_vocab);
    get_u32(kv, g, "attention.key_length", &hp->head_dim);
    get_f64(kv, g, "rope.freq_base", &hp->rope_theta);
    get_f64(kv, g, "rope.freq_base_swa", &hp->rope_theta_swa);
    get_f64(kv, g, "attention.layer_norm_rms_epsilon", &hp->rms_eps);
    get_u32(kv, g, "expert_count", &hp->n_expert);
    get_u32(kv, g, "expert_used_count", &hp->n_expert_used);
    get_u32(kv, g, "expert_feed_forward_length", &hp->n_ff_exp);
    get_u32(kv, g, "expert_shared_feed_forward_length", &hp->n_ff_shexp);
    get_u32(kv, g, "attention.sliding_window", &hp->sliding_window);
    get_u32(kv, g, "dense_2_feat_out", &hp->n_embd_dense);
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", g);
    const char *st = nb_kv_get_str(kv, key);
    if (st && (strcmp(st, "linear") == 0 || strcmp(st, "yarn") == 0)) {
        hp->rope_scaling = st[0] == 'l' ? NB_ROPE_SCALING_LINEAR : NB_ROPE_SCALING_YARN;
        get_f64(kv, g, "rope.scaling.factor", &hp->rope_factor);
        get_u32(kv, g, "rope.scaling.original_context_length", &hp->rope_orig_ctx);
    }
    if (!hp->n_vocab) {
        const nb_kv_value *tok = nb_kv_get(kv, "tokenizer.ggml.tokens");
        if (tok && tok->type == NB_KV_ARRAY && tok->v.arr.n <= UINT32_MAX)
            hp->n_vocab = (uint32_t)tok->v.arr.n;
    }
    return NB_OK;
}

nb_status nb_arch_llama3_rope_factors(const nb_hparams *hp, float *out, size_t n, nb_ctx *ctx) {
    uint32_t hd = nb_hparams_head_dim(hp);
    NB_RETURN_IF(ctx, hp->rope_scaling != NB_ROPE_SCALING_LLAMA3 || n != hd / 2, NB_ERR_INVALID,
                 "llama3 rope factors: wrong scaling type or length %zu (head dim %u)", n, hd);
    /* Mirrors llama.cpp's converter, which computes the frequencies in float32
     * (torch) and the factors from them: 1 for short wavelengths, `factor` for
     * long ones, a smooth interpolation between. */
    const float base = (float)(hp->rope_theta != 0 ? hp->rope_theta : 10000.0);
    const float factor = (float)hp->rope_factor, lo = (float)hp->rope_low_freq,
                hi = (float)hp->rope_high_freq, old_ctx = (float)hp->rope_orig_ctx;
    const float low_wl = old_ctx / lo, high_wl = old_ctx / hi;
    for (size_t i = 0; i < n; i++) {
        float expo = (float)(2 * i) / (float)hd;
        float freq = 1.0f / powf(base, expo);
        float wl = (float)(2.0 * M_PI) / freq;
        if (wl < high_wl) out[i] = 1.0f;
        else if (wl > low_wl) out[i] = factor;
        else {
            float smooth = (old_ctx / wl - lo) / (hi - lo);
            out[i] = 1.0f / ((1.0f - smooth) / factor + smooth);
        }
    }
    return NB_OK;
}

/* ---- tensor names ---------------------------------------------------------------------- */

#define B(x) (1u << (x))
#define M_ALL ((1u << NB_ARCH_COUNT) - 1u)
#define M_LLAMA (B(NB_ARCH_LLAMA) | B(NB_ARCH_MISTRAL) | B(NB_ARCH_MIXTRAL))
#define M_GEMMA (B(NB_ARCH_GEMMA3) | B(NB_ARCH_GEMMA_EMBEDDING))
#define M_QMOE (B(NB_ARCH_QWEN2MOE) | B(NB_ARCH_QWEN3MOE))
#define M_QKNORM (B(NB_ARCH_QWEN3) | B(NB_ARCH_QWEN3MOE) | M_GEMMA)
#define M_DENSE (M_ALL & ~B(NB_ARCH_MIXTRAL)) /* qwen MoE may have dense (mlp_only) layers */

typedef struct name_rule {
    const char *hf;   /* pattern with {L} / {E} */
    const char *gguf; /* pattern with {L} */
    unsigned archs;   /* mask of B(nb_arch_id) */
} name_rule;

static const name_rule k_rules[] = {
    {"model.embed_tokens.weight", "token_embd.weight", M_ALL},
    {"model.norm.weight", "output_norm.weight", M_ALL},
    {"lm_head.weight", "output.weight", M_ALL},
    {"model.layers.{L}.input_layernorm.weight", "blk.{L}.attn_norm.weight", M_ALL},
    {"model.layers.{L}.self_attn.q_proj.weight", "blk.{L}.attn_q.weight", M_ALL},
    {"model.layers.{L}.self_attn.k_proj.weight", "blk.{L}.attn_k.weight", M_ALL},
    {"model.layers.{L}.self_attn.v_proj.weight", "blk.{L}.attn_v.weight", M_ALL},
    {"model.layers.{L}.self_attn.o_proj.weight", "blk.{L}.attn_output.weight", M_ALL},
    {"model.layers.{L}.self_attn.q_proj.bias", "blk.{L}.attn_q.bias", M_ALL},
    {"model.layers.{L}.self_attn.k_proj.bias", "blk.{L}.attn_k.bias", M_ALL},
    {"model.layers.{L}.self_attn.v_proj.bias", "blk.{L}.attn_v.bias", M_ALL},
    {"model.layers.{L}.self_attn.o_proj.bias", "blk.{L}.attn_output.bias", M_LLAMA},
    {"model.layers.{L}.self_attn.q_norm.weight", "blk.{L}.attn_q_norm.weight", M_QKNORM},
    {"model.layers.{L}.self_attn.k_norm.weight", "blk.{L}.attn_k_norm.weight", M_QKNORM},
    {"model.layers.{L}.post_attention_layernorm.weight", "blk.{L}.ffn_norm.weight", M_ALL & ~M_GEMMA},
    {"model.layers.{L}.post_attention_layernorm.weight", "blk.{L}.post_attention_norm.weight", M_GEMMA},
    {"model.layers.{L}.pre_feedforward_layernorm.weight", "blk.{L}.ffn_norm.weight", M_GEMMA},
    {"model.layers.{L}.post_feedforward_layernorm.weight", "blk.{L}.post_ffw_norm.weight", M_GEMMA},
    {"model.layers.{L}.mlp.gate_proj.weight", "blk.{L}.ffn_gate.weight", M_DENSE},
    {"model.layers.{L}.mlp.up_proj.weight", "blk.{L}.ffn_up.weight", M_DENSE},
    {"model.layers.{L}.mlp.down_proj.weight", "blk.{L}.ffn_down.weight", M_DENSE},
    /* mixtral */
    {"model.layers.{L}.block_sparse_moe.gate.weight", "blk.{L}.ffn_gate_inp.weight", B(NB_ARCH_MIXTRAL)},
    {"model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight", "blk.{L}.ffn_gate_exps.weight",
     B(NB_ARCH_MIXTRAL)},
    {"model.layers.{L}.block_sparse_moe.experts.{E}.w3.weight", "blk.{L}.ffn_up_exps.weight",
     B(NB_ARCH_MIXTRAL)},
    {"model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight", "blk.{L}.ffn_down_exps.weight",
     B(NB_ARCH_MIXTRAL)},
    /* qwen2_moe / qwen3_moe */
    {"model.layers.{L}.mlp.gate.weight", "blk.{L}.ffn_gate_inp.weight", M_QMOE},
    {"model.layers.{L}.mlp.experts.{E}.gate_proj.weight", "blk.{L}.ffn_gate_exps.weight", M_QMOE},
    {"model.layers.{L}.mlp.experts.{E}.up_proj.weight", "blk.{L}.ffn_up_exps.weight", M_QMOE},
    {"model.layers.{L}.mlp.experts.{E}.down_proj.weight", "blk.{L}.ffn_down_exps.weight", M_QMOE},
    {"model.layers.{L}.mlp.shared_expert.gate_proj.weight", "blk.{L}.ffn_gate_shexp.weight",
     B(NB_ARCH_QWEN2MOE)},
    {"model.layers.{L}.mlp.shared_expert.up_proj.weight", "blk.{L}.ffn_up_shexp.weight",
     B(NB_ARCH_QWEN2MOE)},
    {"model.layers.{L}.mlp.shared_expert.down_proj.weight", "blk.{L}.ffn_down_shexp.weight",
     B(NB_ARCH_QWEN2MOE)},
    {"model.layers.{L}.mlp.shared_expert_gate.weight", "blk.{L}.ffn_gate_inp_shexp.weight",
     B(NB_ARCH_QWEN2MOE)},
    /* sentence-transformers Dense modules (DIR/2_Dense/model.safetensors ...), as formats/hf.c names them */
    {"2_Dense/linear.weight", "dense_2.weight", B(NB_ARCH_GEMMA_EMBEDDING)},
    {"3_Dense/linear.weight", "dense_3.weight", B(NB_ARCH_GEMMA_EMBEDDING)},
};
#define N_RULES (sizeof k_rules / sizeof k_rules[0])

#define MAX_INDEX 999999

/* Match `s` against `pat`; {L}/{E} take a decimal number (no leading zeros). */
static bool pat_match(const char *pat, const char *s, int *L, int *E) {
    *L = -1;
    *E = -1;
    while (*pat) {
        if (pat[0] == '{' && (pat[1] == 'L' || pat[1] == 'E') && pat[2] == '}') {
            if (*s < '0' || *s > '9') return false;
            if (s[0] == '0' && s[1] >= '0' && s[1] <= '9') return false;
            long v = 0;
            while (*s >= '0' && *s <= '9') {
                v = v * 10 + (*s - '0');
                if (v > MAX_INDEX) return false;
                s++;
            }
            if (pat[1] == 'L') *L = (int)v;
            else *E = (int)v;
            pat += 3;
            continue;
        }
        if (*pat != *s) return false;
        pat++;
        s++;
    }
    return *s == '\0';
}

static bool pat_format(const char *pat, int L, int E, char *out, size_t n) {
    size_t k = 0;
    while (*pat) {
        if (pat[0] == '{' && (pat[1] == 'L' || pat[1] == 'E') && pat[2] == '}') {
            int v = pat[1] == 'L' ? L : E;
            if (v < 0) return false;
            int w = snprintf(out + k, n - k, "%d", v);
            if (w < 0 || (size_t)w >= n - k) return false;
            k += (size_t)w;
            pat += 3;
            continue;
        }
        if (k + 1 >= n) return false;
        out[k++] = *pat++;
    }
    out[k] = '\0';
    return true;
}

bool nb_arch_is_expert_stack(const char *gguf) {
    return nb_str_ends_with(gguf, "_exps.weight");
}

bool nb_arch_is_per_expert(const char *name, int *layer) {
    if (strncmp(name, "blk.", 4) != 0) return false;
    const char *p = name + 4;
    if (*p < '0' || *p > '9') return false;
    long L = 0;
    while (*p >= '0' && *p <= '9') {
        L = L * 10 + (*p - '0');
        if (L >= 65536) return false;
        p++;
    }
    if (*p != '.') return false;
    p++;
    if (strstr(p, "_exps.") || !strcmp(p, "ffn_gate_inp.weight") || !strcmp(p, "ffn_gate_inp.bias") ||
        !strncmp(p, "exp_probs_b.", 12)) {
        *layer = (int)L;
        return true;
    }
    return false;
}

static nb_xform xform_for(const nb_arch *a, const char *gguf) {
    if (a->flags & NB_ARCH_F_PERMUTE_QK) {
        if (nb_str_ends_with(gguf, ".attn_q.weight") || nb_str_ends_with(gguf, ".attn_q.bias")) return NB_XF_PERMUTE_Q;
        if (nb_str_ends_with(gguf, ".attn_k.weight") || nb_str_ends_with(gguf, ".attn_k.bias")) return NB_XF_PERMUTE_K;
    }
    /* llama.cpp: every HF name ending in "norm.weight" gets +1 for gemma3 */
    if ((a->flags & NB_ARCH_F_NORM_SHIFT) && nb_str_ends_with(gguf, "norm.weight")) return NB_XF_NORM_SHIFT;
    return NB_XF_NONE;
}

bool nb_arch_map_hf(const nb_arch *a, const char *hf, nb_name_map *out) {
    memset(out, 0, sizeof *out);
    out->layer = out->expert = -1;
    /* multimodal wrappers and caches that are not part of a text model */
    static const char *const skip_prefix[] = {"vision_tower.", "multi_modal_projector.",
                                              "model.vision_tower.", "model.multi_modal_projector.",
                                              "vision_model.", "model.vision_model."};
    for (size_t i = 0; i < sizeof skip_prefix / sizeof skip_prefix[0]; i++)
        if (nb_str_starts_with(hf, skip_prefix[i])) {
            out->skip = true;
            return true;
        }
    if (nb_str_ends_with(hf, ".rotary_emb.inv_freq")) {
        out->skip = true;
        return true;
    }
    char buf[NB_MAX_NAME + 16];
    if (strlen(hf) > NB_MAX_NAME) return false;
    if (nb_str_starts_with(hf, "language_model.")) /* Gemma3ForConditionalGeneration, transformers < 4.52 */
        snprintf(buf, sizeof buf, "%s", hf + strlen("language_model."));
    else if (nb_str_starts_with(hf, "model.language_model.")) /* transformers >= 4.52 */
        snprintf(buf, sizeof buf, "model.%s", hf + strlen("model.language_model."));
    else snprintf(buf, sizeof buf, "%s", hf);
    /* a Gemma3TextModel saved on its own (sentence-transformers) has no "model." prefix */
    if ((a->flags & NB_ARCH_F_ENCODER) && !nb_str_starts_with(buf, "model.") && strchr(buf, '/') == NULL &&
        (nb_str_starts_with(buf, "layers.") || nb_str_starts_with(buf, "embed_tokens.") ||
         nb_str_starts_with(buf, "norm."))) {
        memmove(buf + 6, buf, strlen(buf) + 1); /* strlen <= NB_MAX_NAME: room for 16 more */
        memcpy(buf, "model.", 6);
    }
    for (size_t r = 0; r < N_RULES; r++) {
        if (!(k_rules[r].archs & B(a->id))) continue;
        int L, E;
        if (!pat_match(k_rules[r].hf, buf, &L, &E)) continue;
        if (!pat_format(k_rules[r].gguf, L, -1, out->gguf, sizeof out->gguf)) return false;
        out->layer = L;
        out->expert = E;
        out->xf = xform_for(a, out->gguf);
        return true;
    }
    return false;
}

bool nb_arch_map_gguf(const nb_arch *a, const char *gguf, int expert, char *hf, size_t n, nb_xform *xf) {
    bool stack = nb_arch_is_expert_stack(gguf);
    if (stack != (expert >= 0)) return false;
    for (size_t r = 0; r < N_RULES; r++) {
        if (!(k_rules[r].archs & B(a->id))) continue;
        int L, E;
        if (!pat_match(k_rules[r].gguf, gguf, &L, &E)) continue;
        if (!pat_format(k_rules[r].hf, L, expert, hf, n)) return false;
        if (xf) *xf = xform_for(a, gguf);
        return true;
    }
    return false;
}

/* ---- q/k permutation ------------------------------------------------------------------------ */

uint64_t nb_qk_src_row(uint64_t g, uint64_t rows, uint32_t n_head) {
    uint64_t hd = rows / n_head, half = hd / 2;
    uint64_t h = g / hd, r = g % hd;
    uint64_t i = r / 2, j = r % 2;
    return h * hd + j * half + i;
}

uint64_t nb_qk_dst_row(uint64_t s, uint64_t rows, uint32_t n_head) {
    uint64_t hd = rows / n_head, half = hd / 2;
    uint64_t h = s / hd, r = s % hd;
    uint64_t j = r / half, i = r % half;
    return h * hd + 2 * i + j;
}

nb_status nb_qk_permute(const void *src, void *dst, uint64_t rows, uint64_t row_bytes,
                        uint32_t n_head, bool inverse, const char *what, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, n_head == 0 || rows % (2ull * n_head) != 0, NB_ERR_RANGE,
                 "tensor '%s': %llu rows cannot be split into %u heads of an even size", what,
                 (unsigned long long)rows, n_head);
    const unsigned char *s = src;
    unsigned char *d = dst;
    for (uint64_t g = 0; g < rows; g++) {
        uint64_t h = nb_qk_src_row(g, rows, n_head);
        /* forward: GGUF row g <- HF row h; inverse: HF row h <- GGUF row g */
        if (!inverse) memcpy(d + g * row_bytes, s + h * row_bytes, row_bytes);
        else memcpy(d + h * row_bytes, s + g * row_bytes, row_bytes);
    }
    return NB_OK;
}

/* ---- tensor list --------------------------------------------------------------------------- */

typedef struct tl_builder {
    nb_arch_tensor *v;
    size_t n, cap;
    nb_ctx *ctx;
} tl_builder;

static nb_status tl_add(tl_builder *b, bool f32, bool norm, uint32_t n_dims, int64_t ne0, int64_t ne1,
                        int64_t ne2, const char *fmt, int layer) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        nb_arch_tensor *v = nb_realloc(NULL, b->v, cap * sizeof *v, "arch");
        if (!v) return nb_err(b->ctx, NB_ERR_NOMEM, "tensor list: out of memory");
        b->v = v;
        b->cap = cap;
    }
    nb_arch_tensor *t = &b->v[b->n++];
    memset(t, 0, sizeof *t);
    if (layer >= 0) snprintf(t->name, sizeof t->name, "blk.%d.%s", layer, fmt);
    else snprintf(t->name, sizeof t->name, "%s", fmt);
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->ne[3] = 1;
    t->is_f32 = f32;
    t->is_norm = norm;
    return NB_OK;
}

nb_status nb_arch_tensor_list(const nb_arch *a, const nb_hparams *hp, nb_arch_tensor **out,
                              size_t *n_out, nb_ctx *ctx) {
    *out = NULL;
    *n_out = 0;
    NB_TRY(nb_hparams_validate(a, hp, "hparams", ctx));
    tl_builder b = {NULL, 0, 0, ctx};
    const int64_t E = hp->n_embd, V = hp->n_vocab, hd = nb_hparams_head_dim(hp);
    const int64_t q = (int64_t)hp->n_head * hd, kv = (int64_t)hp->n_head_kv * hd;
    const int64_t nx = hp->n_expert;
    const bool moe = a->flags & NB_ARCH_F_MOE;
    const int64_t ff_e = hp->n_ff_exp ? hp->n_ff_exp : hp->n_ff;
    nb_status st = NB_OK;
#define ADD(...)                                                                                   \
    do {                                                                                           \
        if ((st = tl_add(&b, __VA_ARGS__)) != NB_OK) goto fail;                                   \
    } while (0)
    if (hp->rope_scaling == NB_ROPE_SCALING_LLAMA3) ADD(true, false, 1, hd / 2, 1, 1, "rope_freqs.weight", -1);
    ADD(false, false, 2, E, V, 1, "token_embd.weight", -1);
    for (int L = 0; L < (int)hp->n_layer; L++) {
        ADD(true, true, 1, E, 1, 1, "attn_norm.weight", L);
        ADD(false, false, 2, E, q, 1, "attn_q.weight", L);
        ADD(false, false, 2, E, kv, 1, "attn_k.weight", L);
        ADD(false, false, 2, E, kv, 1, "attn_v.weight", L);
        if (a->flags & NB_ARCH_F_QKV_BIAS) {
            ADD(true, false, 1, q, 1, 1, "attn_q.bias", L);
            ADD(true, false, 1, kv, 1, 1, "attn_k.bias", L);
            ADD(true, false, 1, kv, 1, 1, "attn_v.bias", L);
        }
        if (a->flags & NB_ARCH_F_QK_NORM) {
            ADD(true, true, 1, hd, 1, 1, "attn_q_norm.weight", L);
            ADD(true, true, 1, hd, 1, 1, "attn_k_norm.weight", L);
        }
        ADD(false, false, 2, q, E, 1, "attn_output.weight", L);
        if (a->flags & NB_ARCH_F_SANDWICH) ADD(true, true, 1, E, 1, 1, "post_attention_norm.weight", L);
        ADD(true, true, 1, E, 1, 1, "ffn_norm.weight", L);
        if (!moe) {
            ADD(false, false, 2, E, hp->n_ff, 1, "ffn_gate.weight", L);
            ADD(false, false, 2, E, hp->n_ff, 1, "ffn_up.weight", L);
            ADD(false, false, 2, hp->n_ff, E, 1, "ffn_down.weight", L);
        } else {
            ADD(true, false, 2, E, nx, 1, "ffn_gate_inp.weight", L);
            ADD(false, false, 3, E, ff_e, nx, "ffn_gate_exps.weight", L);
            ADD(false, false, 3, E, ff_e, nx, "ffn_up_exps.weight", L);
            ADD(false, false, 3, ff_e, E, nx, "ffn_down_exps.weight", L);
            if (a->flags & NB_ARCH_F_SHEXP) {
                ADD(true, false, 1, E, 1, 1, "ffn_gate_inp_shexp.weight", L);
                ADD(false, false, 2, E, hp->n_ff_shexp, 1, "ffn_gate_shexp.weight", L);
                ADD(false, false, 2, E, hp->n_ff_shexp, 1, "ffn_up_shexp.weight", L);
                ADD(false, false, 2, hp->n_ff_shexp, E, 1, "ffn_down_shexp.weight", L);
            }
        }
        if (a->flags & NB_ARCH_F_SANDWICH) ADD(true, true, 1, E, 1, 1, "post_ffw_norm.weight", L);
    }
    ADD(true, true, 1, E, 1, 1, "output_norm.weight", -1);
    if (!hp->tie_embeddings) ADD(false, false, 2, E, V, 1, "output.weight", -1);
    if (hp->n_embd_dense) {
        ADD(false, false, 2, E, hp->n_embd_dense, 1, "dense_2.weight", -1);
        ADD(false, false, 2, hp->n_embd_dense, E, 1, "dense_3.weight", -1);
    }
#undef ADD
    *out = b.v;
    *n_out = b.n;
    return NB_OK;
fail:
    free(b.v);
    return st;
}
