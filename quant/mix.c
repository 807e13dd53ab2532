/* quant/mix.c — type mixes (see quant/mix.h and docs/quantize.md).
 *
 * The per-tensor choice of llama.cpp's llama_tensor_get_type_impl is written
 * here as data: a table of rows {mixes, tensor category, conditions, type},
 * scanned in order, first match wins (the if / else-if chain of llama.cpp
 * becomes row order), plus two "post" rows llama.cpp applies to attn_v after
 * the chain. Only llama.cpp's semantics were taken, not its code.
 */
#include "quant/mix.h"

#include <ctype.h>
#include <fnmatch.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- the presets ------------------------------------------------------------------------ */

/* llama.h enum llama_ftype values (append-only upstream). */
static const nb_mix_info g_mixes[NB_MIX_COUNT] = {
    {NB_MIX_F32, "f32", NB_TYPE_F32, 0, "32-bit float, lossless"},
    {NB_MIX_F16, "f16", NB_TYPE_F16, 1, "16-bit float"},
    {NB_MIX_BF16, "bf16", NB_TYPE_BF16, 32, "bfloat16"},
    {NB_MIX_Q4_0, "q4_0", NB_TYPE_Q4_0, 2, "4-bit round-to-nearest, one scale per 32"},
    {NB_MIX_Q4_1, "q4_1", NB_TYPE_Q4_1, 3, "4-bit, scale + min per 32"},
    {NB_MIX_Q5_0, "q5_0", NB_TYPE_Q5_0, 8, "5-bit, one scale per 32"},
    {NB_MIX_Q5_1, "q5_1", NB_TYPE_Q5_1, 9, "5-bit, scale + min per 32"},
    {NB_MIX_Q8_0, "q8_0", NB_TYPE_Q8_0, 7, "8-bit, one scale per 32 (near lossless)"},
    {NB_MIX_Q2_K, "q2_k", NB_TYPE_Q2_K, 10, "k-quant 2-bit; attn_v/ffn_down/attn_output raised"},
    {NB_MIX_Q3_K_S, "q3_k_s", NB_TYPE_Q3_K, 11, "k-quant 3-bit, small"},
    {NB_MIX_Q3_K_M, "q3_k_m", NB_TYPE_Q3_K, 12, "k-quant 3-bit, medium (attn_v/ffn_down/attn_output raised)"},
    {NB_MIX_Q3_K_L, "q3_k_l", NB_TYPE_Q3_K, 13, "k-quant 3-bit, large (attn_v/ffn_down/attn_output Q5_K)"},
    {NB_MIX_Q4_K_S, "q4_k_s", NB_TYPE_Q4_K, 14, "k-quant 4-bit, small"},
    {NB_MIX_Q4_K_M, "q4_k_m", NB_TYPE_Q4_K, 15, "k-quant 4-bit, medium (half of attn_v/ffn_down Q6_K)"},
    {NB_MIX_Q5_K_S, "q5_k_s", NB_TYPE_Q5_K, 16, "k-quant 5-bit, small"},
    {NB_MIX_Q5_K_M, "q5_k_m", NB_TYPE_Q5_K, 17, "k-quant 5-bit, medium (half of attn_v/ffn_down Q6_K)"},
    {NB_MIX_Q6_K, "q6_k", NB_TYPE_Q6_K, 18, "k-quant 6-bit"},
    {NB_MIX_IQ4_NL, "iq4_nl", NB_TYPE_IQ4_NL, 25, "4-bit non-linear, blocks of 32"},
    {NB_MIX_IQ4_XS, "iq4_xs", NB_TYPE_IQ4_XS, 30, "4-bit non-linear, super-blocks of 256"},
    {NB_MIX_TQ1_0, "tq1_0", NB_TYPE_TQ1_0, 36, "ternary 1.69 bpw (for ternary-trained models)"},
    {NB_MIX_TQ2_0, "tq2_0", NB_TYPE_TQ2_0, 37, "ternary 2.06 bpw (for ternary-trained models)"},
    {NB_MIX_MXFP4_MOE, "mxfp4_moe", NB_TYPE_MXFP4, 38, "MoE experts MXFP4, everything else Q8_0"},
    {NB_MIX_NF4, "nf4", NB_TYPE_NF4, -1, "bitsandbytes NF4, blocks of 64 (nibble engine / bnb export)"},
    {NB_MIX_NF4_DQ, "nf4-dq", NB_TYPE_NF4_DQ, -1, "NF4 with double-quantized absmax (rows a multiple of 16384, else NF4)"},
    {NB_MIX_INT4_G32, "int4-g32", NB_TYPE_INT4_SYM_G32, -1, "INT4 symmetric, fp16 scale per 32 (GPTQ/AWQ layout)"},
    {NB_MIX_INT4_G64, "int4-g64", NB_TYPE_INT4_SYM_G64, -1, "INT4 symmetric, fp16 scale per 64"},
    {NB_MIX_INT4_G128, "int4-g128", NB_TYPE_INT4_SYM_G128, -1, "INT4 symmetric, fp16 scale per 128"},
    {NB_MIX_INT4_ASYM_G32, "int4-asym-g32", NB_TYPE_INT4_ASYM_G32, -1, "INT4 with zero point per 32"},
    {NB_MIX_INT4_ASYM_G64, "int4-asym-g64", NB_TYPE_INT4_ASYM_G64, -1, "INT4 with zero point per 64"},
    {NB_MIX_INT4_ASYM_G128, "int4-asym-g128", NB_TYPE_INT4_ASYM_G128, -1, "INT4 with zero point per 128"},
};

const nb_mix_info *nb_mix_get(nb_mix_id id) {
    return (unsigned)id < NB_MIX_COUNT ? &g_mixes[id] : NULL;
}

/* Compare names ignoring case and treating '-' and '_' alike. */
static bool name_eq(const char *a, const char *b) {
    for (;; a++, b++) {
        int ca = *a == '-' ? '_' : tolower((unsigned char)*a);
        int cb = *b == '-' ? '_' : tolower((unsigned char)*b);
        if (ca != cb) return false;
        if (!ca) return true;
    }
}

/* Other spellings users type (llama-quantize accepts "Q4_K" for Q4_K_M, ...). */
static const struct { const char *alias; nb_mix_id id; } g_alias[] = {
    {"q3_k", NB_MIX_Q3_K_M},         {"q4_k", NB_MIX_Q4_K_M},        {"q5_k", NB_MIX_Q5_K_M},
    {"int4", NB_MIX_INT4_G128},      {"int4-sym-g32", NB_MIX_INT4_G32}, {"int4-sym-g64", NB_MIX_INT4_G64},
    {"int4-sym-g128", NB_MIX_INT4_G128}, {"int4-asym", NB_MIX_INT4_ASYM_G128}, {"nf4_dq", NB_MIX_NF4_DQ},
};

const nb_mix_info *nb_mix_find(const char *name) {
    if (!name) return NULL;
    for (int i = 0; i < NB_MIX_COUNT; i++)
        if (name_eq(g_mixes[i].name, name)) return &g_mixes[i];
    for (size_t i = 0; i < sizeof g_alias / sizeof *g_alias; i++)
        if (name_eq(g_alias[i].alias, name)) return &g_mixes[g_alias[i].id];
    return NULL;
}

/* ---- hyper-parameters ------------------------------------------------------------------ */

static uint32_t kv_u32_first(const nb_kvset *kv, const char *key) {
    uint64_t v;
    if (nb_kv_get_u64(kv, key, &v)) return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    /* per-layer arrays (some architectures): take layer 0, as llama.cpp's n_gqa() does */
    const nb_kv_value *a = nb_kv_get(kv, key);
    if (a && a->type == NB_KV_ARRAY && a->v.arr.n > 0) {
        size_t sz = nb_kv_scalar_size(a->v.arr.elem);
        if (sz == 4 && (a->v.arr.elem == NB_KV_U32 || a->v.arr.elem == NB_KV_I32)) {
            uint32_t x;
            memcpy(&x, a->v.arr.data, 4);
            return a->v.arr.elem == NB_KV_I32 && (int32_t)x < 0 ? 0 : x;
        }
    }
    return 0;
}

void nb_mix_hparams_from_kv(const nb_kvset *kv, nb_mix_hparams *hp) {
    memset(hp, 0, sizeof *hp);
    const char *arch = nb_kv_get_str(kv, "general.architecture");
    if (!arch || strlen(arch) >= sizeof hp->arch) return;
    strcpy(hp->arch, arch);
    char key[160];
    snprintf(key, sizeof key, "%s.block_count", arch);
    hp->n_layer = kv_u32_first(kv, key);
    snprintf(key, sizeof key, "%s.attention.head_count", arch);
    hp->n_head = kv_u32_first(kv, key);
    snprintf(key, sizeof key, "%s.attention.head_count_kv", arch);
    hp->n_head_kv = nb_kv_get(kv, key) ? kv_u32_first(kv, key) : hp->n_head;
    snprintf(key, sizeof key, "%s.expert_count", arch);
    hp->n_expert = kv_u32_first(kv, key);
}

/* ---- rules ------------------------------------------------------------------------------ */

struct nb_rule {
    char *text;   /* the whole spec, for messages */
    char *pattern;
    bool is_regex;
    regex_t re;
    nb_type type;
};

void nb_rules_init(nb_rules *r) { memset(r, 0, sizeof *r); }

void nb_rules_free(nb_rules *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) {
        if (r->items[i].is_regex) regfree(&r->items[i].re);
        free(r->items[i].text);
        free(r->items[i].pattern);
    }
    free(r->items);
    memset(r, 0, sizeof *r);
}

/* Type by name, accepting '-' for '_' ("nf4-dq"). */
static bool type_from_user_name(const char *s, nb_type *out) {
    char buf[64];
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof buf) return false;
    for (size_t i = 0; i <= n; i++) buf[i] = s[i] == '-' ? '_' : s[i];
    return nb_type_from_name(buf, out);
}

nb_status nb_rules_add(nb_rules *r, const char *spec, nb_ctx *ctx) {
    const char *eq = spec ? strrchr(spec, '=') : NULL;
    if (!eq || eq == spec || !eq[1])
        return nb_err(ctx, NB_ERR_INVALID, "rule '%s': expected PATTERN=TYPE (e.g. 'blk.*.ffn_down.weight=q6_k')",
                      spec ? spec : "");
    nb_type t;
    if (!type_from_user_name(eq + 1, &t))
        return nb_err(ctx, NB_ERR_INVALID, "rule '%s': unknown type '%s'", spec, eq + 1);
    const nb_type_traits *tr = nb_type_get(t);
    if (!tr || !tr->quantize || tr->gguf_id < 0)
        return nb_err(ctx, NB_ERR_INVALID, "rule '%s': cannot quantize to type %s", spec, nb_type_name(t));
    nb_rule nr = {0};
    nr.type = t;
    const char *pat = spec;
    if (!strncmp(pat, "re:", 3)) { nr.is_regex = true; pat += 3; }
    nr.pattern = nb_strndup(ctx, pat, (size_t)(eq - pat));
    nr.text = nb_strdup(ctx, spec);
    if (!nr.pattern || !nr.text) { free(nr.pattern); free(nr.text); return NB_ERR_NOMEM; }
    if (nr.is_regex) {
        int rc = regcomp(&nr.re, nr.pattern, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char msg[128];
            regerror(rc, &nr.re, msg, sizeof msg);
            nb_status st = nb_err(ctx, NB_ERR_INVALID, "rule '%s': bad regular expression: %s", spec, msg);
            free(nr.pattern); free(nr.text);
            return st;
        }
    }
    nb_rule *items = nb_realloc(NULL, r->items, (r->n + 1) * sizeof *items, "mix");
    if (!items) {
        if (nr.is_regex) regfree(&nr.re);
        free(nr.pattern); free(nr.text);
        return nb_err(ctx, NB_ERR_NOMEM, "out of memory for rules");
    }
    r->items = items;
    r->items[r->n++] = nr;
    return NB_OK;
}

long nb_rules_match(const nb_rules *r, const char *name) {
    if (!r) return -1;
    for (size_t k = r->n; k-- > 0;) {
        const nb_rule *x = &r->items[k];
        bool hit = x->is_regex ? regexec(&x->re, name, 0, NULL, 0) == 0 : fnmatch(x->pattern, name, 0) == 0;
        if (hit) return (long)k;
    }
    return -1;
}

const char *nb_rule_text(const nb_rules *r, size_t i) { return i < r->n ? r->items[i].text : "?"; }
nb_type nb_rule_type(const nb_rules *r, size_t i) { return i < r->n ? r->items[i].type : NB_TYPE_F32; }

/* ---- tensor categories (llama.cpp's tensor_get_category, same test order) ------------------ */

typedef enum cat {
    CAT_OTHER = 0,
    CAT_OUTPUT,     /* output.weight, and token_embd when embeddings are tied */
    CAT_TOKEN_EMBD,
    CAT_ATTN_V,     /* attn_v, attn_qkv, attn_kv_b ("attention-v-like") */
    CAT_ATTN_K,
    CAT_ATTN_Q,
    CAT_ATTN_OUT,
    CAT_FFN_UP,
    CAT_FFN_GATE,
    CAT_FFN_DOWN,
    CAT_ANY         /* table rows only: every category except OUTPUT */
} cat;

static cat category(const char *name) {
    if (!strcmp(name, "output.weight")) return CAT_OUTPUT;
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "per_layer_token_embd.weight")) return CAT_TOKEN_EMBD;
    if (strstr(name, "attn_qkv.weight") || strstr(name, "attn_kv_b.weight") || strstr(name, "attn_v.weight"))
        return CAT_ATTN_V;
    if (strstr(name, "attn_k.weight")) return CAT_ATTN_K;
    if (strstr(name, "attn_q.weight")) return CAT_ATTN_Q;
    if (strstr(name, "attn_output.weight")) return CAT_ATTN_OUT;
    if (strstr(name, "ffn_up")) return CAT_FFN_UP;
    if (strstr(name, "ffn_gate")) return CAT_FFN_GATE;
    if (strstr(name, "ffn_down")) return CAT_FFN_DOWN;
    return CAT_OTHER;
}

/* ---- which tensors are quantized at all (llama.cpp's tensor_allows_quantization) ---------- */

/* Substrings that keep a tensor unquantized: norms, MoE routers, small
 * architecture-specific tensors, multimodal/positional tensors. */
static const char *const g_never[] = {
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
    "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
    "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
    "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
    "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
};
/* Whole names never quantized (position embeddings, BERT token types). */
static const char *const g_never_exact[] = {"position_embd.weight", "token_types.weight"};

/* ggml_n_dims: dims up to the last one that is not 1. */
static int eff_dims(const int64_t ne[NB_MAX_DIMS]) {
    for (int i = NB_MAX_DIMS - 1; i >= 1; i--)
        if (ne[i] != 1) return i + 1;
    return 1;
}

bool nb_mix_tensor_quantizable(const char *name, const int64_t ne[NB_MAX_DIMS]) {
    if (eff_dims(ne) < 2) return false;
    size_t n = strlen(name);
    if (n < 6 || strcmp(name + n - 6, "weight") != 0) return false;
    for (size_t i = 0; i < sizeof g_never / sizeof *g_never; i++)
        if (strstr(name, g_never[i])) return false;
    for (size_t i = 0; i < sizeof g_never_exact / sizeof *g_never_exact; i++)
        if (!strcmp(name, g_never_exact[i])) return false;
    return true;
}

bool nb_mix_use_more_bits(int i_layer, int n_layers) {
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

/* ---- the mix table ---------------------------------------------------------------------- */

#define M(x) (1ull << NB_MIX_##x)
/* every llama.cpp quantized mix */
#define GGML_Q                                                                                     \
    (M(Q4_0) | M(Q4_1) | M(Q5_0) | M(Q5_1) | M(Q8_0) | M(Q2_K) | M(Q3_K_S) | M(Q3_K_M) | M(Q3_K_L) | \
     M(Q4_K_S) | M(Q4_K_M) | M(Q5_K_S) | M(Q5_K_M) | M(Q6_K) | M(IQ4_NL) | M(IQ4_XS) | M(TQ1_0) |  \
     M(TQ2_0) | M(MXFP4_MOE))
#define OWN                                                                                        \
    (M(NF4) | M(NF4_DQ) | M(INT4_G32) | M(INT4_G64) | M(INT4_G128) | M(INT4_ASYM_G32) |             \
     M(INT4_ASYM_G64) | M(INT4_ASYM_G128))

/* Row conditions: all set bits must hold. (i, n) are the category's layer
 * position: attn_v uses llama.cpp's running attn_v counter and the attn_v
 * count; ffn_down the layer (counter for dense models, parsed from the name
 * for MoE) and block_count. */
enum {
    K_GQA4 = 1u << 0,     /* n_head / n_head_kv >= 4 */
    K_MORE = 1u << 1,     /* use_more_bits(i, n) */
    K_LT8 = 1u << 2,      /* i < n/8 */
    K_LT16 = 1u << 3,     /* i < n/16 */
    K_ILT = 1u << 4,      /* i < row.arg */
    K_FALCON = 1u << 5,   /* architecture falcon */
    K_NFALCON = 1u << 6,
    K_EXP8 = 1u << 7,     /* expert_count == 8 */
    K_NEXP8 = 1u << 8,
    K_IMAT = 1u << 9,     /* importance data supplied */
    K_NIMAT = 1u << 10,
    K_3D = 1u << 11,      /* ne[2] > 1 (stacked experts) */
    K_MISFIT = 1u << 12,  /* ne[0] not a multiple of the mix base type's block size */
    K_70B = 1u << 13,     /* llama with 80 layers and GQA (llama.cpp's LLM_TYPE_70B) */
    K_FROM_Q34 = 1u << 14 /* post rows: current choice is Q3_K or Q4_K */
};
/* Needs (i, n) from the layer position. */
#define K_LAYER (K_MORE | K_LT8 | K_LT16 | K_ILT)

/* Pseudo type: keep the tensor in 16-bit float (source F16/BF16 stays, else F16). */
#define T_KEEP16 ((nb_type)NB_TYPE_COUNT)

typedef struct mix_row {
    uint64_t mixes;
    cat c;
    uint32_t cond;
    int arg;
    nb_type type;
} mix_row;

/* llama_tensor_get_type_impl's chain for the supported mixes, in order
 * (first match wins). Rows for IQ1/IQ2/IQ3 mixes are left out: nibble has no
 * quantizers for those types. */
static const mix_row g_rows[] = {
    /* output.weight (and tied token_embd) */
    {M(MXFP4_MOE), CAT_OUTPUT, 0, 0, NB_TYPE_Q8_0},
    {GGML_Q, CAT_OUTPUT, K_FALCON, 0, NB_TYPE_Q8_0},
    {GGML_Q, CAT_OUTPUT, K_MISFIT, 0, NB_TYPE_Q8_0},
    {GGML_Q & ~M(Q8_0), CAT_OUTPUT, 0, 0, NB_TYPE_Q6_K},
    {OWN, CAT_OUTPUT, 0, 0, T_KEEP16},
    /* MXFP4_MOE: stacked experts MXFP4, all else Q8_0 */
    {M(MXFP4_MOE), CAT_ANY, K_3D, 0, NB_TYPE_MXFP4},
    {M(MXFP4_MOE), CAT_ANY, 0, 0, NB_TYPE_Q8_0},
    /* token_embd (untied) */
    {M(TQ1_0) | M(TQ2_0), CAT_TOKEN_EMBD, 0, 0, NB_TYPE_Q4_K},
    {OWN, CAT_TOKEN_EMBD, 0, 0, T_KEEP16},
    /* attn_v-like */
    {M(Q2_K), CAT_ATTN_V, K_GQA4, 0, NB_TYPE_Q4_K},
    {M(Q2_K), CAT_ATTN_V, 0, 0, NB_TYPE_Q3_K},
    {M(Q3_K_M), CAT_ATTN_V, K_ILT, 2, NB_TYPE_Q5_K},
    {M(Q3_K_M), CAT_ATTN_V, 0, 0, NB_TYPE_Q4_K},
    {M(Q3_K_L), CAT_ATTN_V, 0, 0, NB_TYPE_Q5_K},
    {M(IQ4_NL) | M(IQ4_XS), CAT_ATTN_V, K_GQA4, 0, NB_TYPE_Q5_K},
    {M(Q4_K_M) | M(Q5_K_M), CAT_ATTN_V, K_MORE, 0, NB_TYPE_Q6_K},
    {M(Q4_K_S), CAT_ATTN_V, K_ILT, 4, NB_TYPE_Q5_K},
    /* attn_k */
    {GGML_Q & ~M(MXFP4_MOE), CAT_ATTN_K, K_EXP8, 0, NB_TYPE_Q8_0},
    /* ffn_down */
    {M(Q2_K), CAT_FFN_DOWN, 0, 0, NB_TYPE_Q3_K},
    {M(Q3_K_M), CAT_FFN_DOWN, K_LT16, 0, NB_TYPE_Q5_K},
    {M(Q3_K_M), CAT_FFN_DOWN, K_NFALCON, 0, NB_TYPE_Q4_K},
    {M(Q3_K_M), CAT_FFN_DOWN, K_MORE, 0, NB_TYPE_Q4_K},
    {M(Q3_K_M), CAT_FFN_DOWN, 0, 0, NB_TYPE_Q3_K},
    {M(Q3_K_L), CAT_FFN_DOWN, K_FALCON, 0, NB_TYPE_Q4_K},
    {M(Q3_K_L), CAT_FFN_DOWN, 0, 0, NB_TYPE_Q5_K},
    {M(Q4_K_M), CAT_FFN_DOWN, K_FALCON | K_LT16, 0, NB_TYPE_Q6_K},
    {M(Q4_K_M), CAT_FFN_DOWN, K_FALCON | K_MORE, 0, NB_TYPE_Q5_K},
    {M(Q4_K_M), CAT_FFN_DOWN, K_FALCON, 0, NB_TYPE_Q4_K},
    {M(Q4_K_M), CAT_FFN_DOWN, K_MORE, 0, NB_TYPE_Q6_K},
    {M(IQ4_NL) | M(IQ4_XS), CAT_FFN_DOWN, K_LT8 | K_NIMAT, 0, NB_TYPE_Q5_K},
    {M(Q5_K_M), CAT_FFN_DOWN, K_MORE, 0, NB_TYPE_Q6_K},
    {M(Q4_K_S), CAT_FFN_DOWN, K_NFALCON | K_LT8, 0, NB_TYPE_Q5_K},
    {M(Q4_0), CAT_FFN_DOWN, K_IMAT | K_LT8, 0, NB_TYPE_Q4_1},
    {M(Q5_0), CAT_FFN_DOWN, K_IMAT | K_LT8, 0, NB_TYPE_Q5_1},
    /* attn_output */
    {M(Q2_K) | M(Q3_K_S) | M(Q3_K_M) | M(IQ4_NL) | M(Q4_K_S) | M(Q4_K_M) | M(IQ4_XS), CAT_ATTN_OUT,
     K_NFALCON | K_EXP8, 0, NB_TYPE_Q5_K},
    {M(Q2_K), CAT_ATTN_OUT, K_NFALCON | K_NEXP8, 0, NB_TYPE_Q3_K},
    {M(Q3_K_M), CAT_ATTN_OUT, K_NFALCON | K_NEXP8, 0, NB_TYPE_Q4_K},
    {M(Q3_K_L), CAT_ATTN_OUT, K_NFALCON | K_NEXP8, 0, NB_TYPE_Q5_K},
    {M(Q3_K_L), CAT_ATTN_OUT, K_FALCON, 0, NB_TYPE_Q4_K},
};

/* Applied to attn_v after the chain, each in turn, when the chain reached the
 * attn_v branch (so not for MXFP4_MOE, whose catch-all row comes first). */
static const mix_row g_post_rows[] = {
    {GGML_Q & ~M(MXFP4_MOE), CAT_ATTN_V, K_70B | K_FROM_Q34, 0, NB_TYPE_Q5_K},
    {GGML_Q & ~M(MXFP4_MOE), CAT_ATTN_V, K_EXP8, 0, NB_TYPE_Q8_0},
};

/* llama.cpp's tensor_type_fallback table, plus nibble's own types. */
static const struct { nb_type from, to; } g_fallback[] = {
    {NB_TYPE_IQ1_S, NB_TYPE_IQ4_NL},   {NB_TYPE_IQ1_M, NB_TYPE_IQ4_NL},   {NB_TYPE_IQ2_XXS, NB_TYPE_IQ4_NL},
    {NB_TYPE_IQ2_XS, NB_TYPE_IQ4_NL},  {NB_TYPE_IQ2_S, NB_TYPE_IQ4_NL},   {NB_TYPE_IQ3_XXS, NB_TYPE_IQ4_NL},
    {NB_TYPE_IQ3_S, NB_TYPE_IQ4_NL},   {NB_TYPE_IQ4_XS, NB_TYPE_IQ4_NL},  {NB_TYPE_Q2_K, NB_TYPE_Q4_0},
    {NB_TYPE_Q3_K, NB_TYPE_Q4_0},      {NB_TYPE_TQ1_0, NB_TYPE_Q4_0},     {NB_TYPE_TQ2_0, NB_TYPE_Q4_0},
    {NB_TYPE_Q4_K, NB_TYPE_Q5_0},      {NB_TYPE_Q5_K, NB_TYPE_Q5_1},      {NB_TYPE_Q6_K, NB_TYPE_Q8_0},
    {NB_TYPE_NF4_DQ, NB_TYPE_NF4},
    {NB_TYPE_INT4_SYM_G128, NB_TYPE_INT4_SYM_G64},   {NB_TYPE_INT4_SYM_G64, NB_TYPE_INT4_SYM_G32},
    {NB_TYPE_INT4_ASYM_G128, NB_TYPE_INT4_ASYM_G64}, {NB_TYPE_INT4_ASYM_G64, NB_TYPE_INT4_ASYM_G32},
};

/* ---- planning -------------------------------------------------------------------------- */

typedef struct plan_state {
    const nb_mix_info *mix;
    const nb_mix_hparams *hp;
    int n_attn_v, i_attn_v;
    int i_ffn_down, i_ffn_gate, i_ffn_up;
    bool tied;
    bool falcon, is70b;
    uint32_t gqa;
} plan_state;

static bool fits(nb_type t, int64_t ne0) {
    const nb_type_traits *tr = nb_type_get(t);
    return tr && tr->block_size > 0 && ne0 % (int64_t)tr->block_size == 0;
}

static bool row_holds(const plan_state *ps, const mix_row *r, const nb_tensor *t, nb_type cur, int i, int n) {
    uint32_t k = r->cond;
    const nb_mix_hparams *hp = ps->hp;
    if ((k & K_GQA4) && ps->gqa < 4) return false;
    if ((k & K_MORE) && !nb_mix_use_more_bits(i, n)) return false;
    if ((k & K_LT8) && !(i < n / 8)) return false;
    if ((k & K_LT16) && !(i < n / 16)) return false;
    if ((k & K_ILT) && !(i < r->arg)) return false;
    if ((k & K_FALCON) && !ps->falcon) return false;
    if ((k & K_NFALCON) && ps->falcon) return false;
    if ((k & K_EXP8) && hp->n_expert != 8) return false;
    if ((k & K_NEXP8) && hp->n_expert == 8) return false;
    if ((k & K_IMAT) && !hp->has_imatrix) return false;
    if ((k & K_NIMAT) && hp->has_imatrix) return false;
    if ((k & K_3D) && !(t->ne[2] > 1)) return false;
    if ((k & K_MISFIT) && fits(ps->mix->base, t->ne[0])) return false;
    if ((k & K_70B) && !ps->is70b) return false;
    if ((k & K_FROM_Q34) && cur != NB_TYPE_Q3_K && cur != NB_TYPE_Q4_K) return false;
    return true;
}

/* Layer position for ffn_* tensors: llama.cpp's layer_info — the running
 * counter for dense models, the "blk.N." number for MoE (n_expert > 1). */
static nb_status layer_info(const plan_state *ps, const char *name, int counter, int *i, int *n, nb_ctx *ctx) {
    *n = (int)ps->hp->n_layer;
    *i = counter;
    if (ps->hp->n_expert > 1) {
        int l;
        if (sscanf(name, "blk.%d.", &l) != 1)
            return nb_err(ctx, NB_ERR_FORMAT, "tensor '%s': cannot determine its layer (expected 'blk.N.')", name);
        if (l < 0 || l >= *n)
            return nb_err(ctx, NB_ERR_FORMAT, "tensor '%s': layer %d outside [0, %d) (block_count)", name, l, *n);
        *i = l;
    }
    return NB_OK;
}

static bool row_needs_layer(const plan_state *ps, cat c) {
    uint64_t bit = 1ull << ps->mix->id;
    for (size_t k = 0; k < sizeof g_rows / sizeof *g_rows; k++)
        if ((g_rows[k].mixes & bit) && g_rows[k].c == c && (g_rows[k].cond & K_LAYER)) return true;
    return false;
}

/* The mix's choice for a quantizable tensor (llama_tensor_get_type_impl). */
static nb_status mix_choice(plan_state *ps, const nb_tensor *t, nb_type *out, bool *changed, nb_ctx *ctx) {
    cat c = category(t->name);
    if (c == CAT_TOKEN_EMBD && ps->tied) c = CAT_OUTPUT;
    uint64_t bit = 1ull << ps->mix->id;
    int i = 0, n = 0;
    switch (c) {
    case CAT_ATTN_V: i = ps->i_attn_v; n = ps->n_attn_v; break;
    case CAT_FFN_DOWN: case CAT_FFN_GATE: case CAT_FFN_UP: {
        int counter = c == CAT_FFN_DOWN ? ps->i_ffn_down : c == CAT_FFN_GATE ? ps->i_ffn_gate : ps->i_ffn_up;
        if (ps->hp->n_expert > 1 || row_needs_layer(ps, c)) NB_TRY(layer_info(ps, t->name, counter, &i, &n, ctx));
        break;
    }
    default: break;
    }
    nb_type cur = ps->mix->base;
    bool hit = false;
    const mix_row *first = NULL;
    for (size_t k = 0; k < sizeof g_rows / sizeof *g_rows && !hit; k++) {
        const mix_row *r = &g_rows[k];
        if (!(r->mixes & bit)) continue;
        if (r->c == CAT_ANY ? c == CAT_OUTPUT : r->c != c) continue;
        if (!row_holds(ps, r, t, cur, i, n)) continue;
        cur = r->type;
        first = r;
        hit = true;
    }
    if (c == CAT_ATTN_V && !(first && first->c == CAT_ANY)) {
        for (size_t k = 0; k < sizeof g_post_rows / sizeof *g_post_rows; k++) {
            const mix_row *r = &g_post_rows[k];
            if ((r->mixes & bit) && row_holds(ps, r, t, cur, i, n)) cur = r->type;
        }
    }
    /* llama.cpp advances its counters when the tensor reaches its branch */
    if (c == CAT_ATTN_V) ps->i_attn_v++;
    else if (c == CAT_FFN_DOWN) ps->i_ffn_down++;
    else if (c == CAT_FFN_GATE) ps->i_ffn_gate++;
    else if (c == CAT_FFN_UP) ps->i_ffn_up++;
    if (cur == T_KEEP16) cur = t->type == NB_TYPE_BF16 || t->type == NB_TYPE_F16 ? t->type : NB_TYPE_F16;
    *out = cur;
    *changed = cur != ps->mix->base;
    return NB_OK;
}

/* Layer index in "blk.N." or -1 (llama.cpp's weight_name_comparer). */
static int name_layer(const char *name) {
    int l = -1;
    if (sscanf(name, "blk.%d.", &l) != 1) l = -1;
    return l;
}

typedef struct order_item {
    int layer;
    const char *name;
    size_t idx;
} order_item;

static int order_cmp(const void *pa, const void *pb) {
    const order_item *a = pa, *b = pb;
    if (a->layer != b->layer) return a->layer < b->layer ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* Type a non-quantizable tensor keeps: the source type, but 1-D float
 * tensors and MoE routers in F32, as llama.cpp's converter writes them. */
static nb_type keep_type(const nb_tensor *t) {
    const nb_type_traits *tr = nb_type_get(t->type);
    if (tr && tr->is_float && tr->to_float && (eff_dims(t->ne) < 2 || strstr(t->name, "ffn_gate_inp")))
        return NB_TYPE_F32;
    return t->type;
}

nb_status nb_mix_plan(const nb_mix_info *mix, const nb_mix_hparams *hp, const nb_mix_opts *o,
                      const nb_tensor *tensors, size_t n, nb_mix_choice *out, nb_ctx *ctx) {
    static const nb_mix_opts no_opts = {0};
    if (!o) o = &no_opts;
    if (!mix || !hp) return nb_err(ctx, NB_ERR_INVALID, "nb_mix_plan: no mix");
    plan_state ps = {.mix = mix, .hp = hp, .tied = true};
    ps.falcon = !strcmp(hp->arch, "falcon");
    ps.is70b = !strcmp(hp->arch, "llama") && hp->n_layer == 80 && hp->n_head != hp->n_head_kv;
    ps.gqa = hp->n_head_kv ? hp->n_head / hp->n_head_kv : 0;
    for (size_t k = 0; k < n; k++) {
        if (category(tensors[k].name) == CAT_ATTN_V) ps.n_attn_v++;
        if (!strcmp(tensors[k].name, "output.weight")) ps.tied = false;
    }
    /* llama.cpp visits tensors ordered by (layer, name); its counters follow that order */
    order_item *ord = n ? nb_malloc(NULL, n * sizeof *ord, "mix") : NULL;
    if (n && !ord) return nb_err(ctx, NB_ERR_NOMEM, "out of memory planning %zu tensors", n);
    for (size_t k = 0; k < n; k++) ord[k] = (order_item){name_layer(tensors[k].name), tensors[k].name, k};
    if (n) qsort(ord, n, sizeof *ord, order_cmp);
    nb_status st = NB_OK;
    for (size_t j = 0; j < n && st == NB_OK; j++) {
        const nb_tensor *t = &tensors[ord[j].idx];
        nb_mix_choice *p = &out[ord[j].idx];
        *p = (nb_mix_choice){.type = t->type, .wanted = t->type, .why = NB_PLAN_KEEP, .rule = -1};
        const nb_type_traits *tr = nb_type_get(t->type);
        if (!nb_mix_tensor_quantizable(t->name, t->ne) || !tr || !(tr->is_float || tr->is_quantized)) {
            p->type = p->wanted = keep_type(t);
            continue;
        }
        nb_type ty = mix->base;
        p->why = NB_PLAN_BASE;
        long r = nb_rules_match(o->rules, t->name);
        if (r >= 0) {
            ty = nb_rule_type(o->rules, (size_t)r);
            p->why = NB_PLAN_RULE;
            p->rule = r;
        } else if (!o->pure) {
            bool changed = false;
            st = mix_choice(&ps, t, &ty, &changed, ctx);
            if (changed) p->why = NB_PLAN_MIX;
        }
        p->wanted = ty;
        if (!fits(ty, t->ne[0])) {
            if (o->no_fallback) {
                const nb_type_traits *tt = nb_type_get(ty);
                st = nb_err(ctx, NB_ERR_RANGE,
                            "tensor '%s': row length %lld is not a multiple of %s's block size %u "
                            "(fallbacks disabled)", t->name, (long long)t->ne[0], nb_type_name(ty),
                            tt ? tt->block_size : 0);
                break;
            }
            while (!fits(ty, t->ne[0])) {
                nb_type next = NB_TYPE_F16;
                for (size_t k = 0; k < sizeof g_fallback / sizeof *g_fallback; k++)
                    if (g_fallback[k].from == ty) { next = g_fallback[k].to; break; }
                ty = next;
                if (ty == NB_TYPE_F16) break;
            }
            p->why = NB_PLAN_FALLBACK;
        }
        p->type = ty;
    }
    free(ord);
    return st;
}

const char *nb_plan_why_name(nb_plan_why w) {
    switch (w) {
    case NB_PLAN_KEEP: return "keep";
    case NB_PLAN_BASE: return "base";
    case NB_PLAN_MIX: return "mix";
    case NB_PLAN_RULE: return "rule";
    case NB_PLAN_FALLBACK: return "fallback";
    case NB_PLAN_GIVEN: return "plan";
    case NB_PLAN_BUDGET: return "budget";
    }
    return "?";
}

bool nb_plan_why_from_name(const char *name, nb_plan_why *out) {
    for (int w = NB_PLAN_KEEP; w <= NB_PLAN_BUDGET; w++) {
        if (!strcmp(name, nb_plan_why_name((nb_plan_why)w))) {
            *out = (nb_plan_why)w;
            return true;
        }
    }
    return false;
}
