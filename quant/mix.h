/* quant/mix.h — type mixes: which type each tensor of a model gets.
 *
 * A mix is a named preset (llama-quantize's "ftype": q4_k_m, q5_k_s, q8_0, ...
 * plus nibble's own nf4 / int4 mixes). Planning a model with a mix gives every
 * tensor its output type. The decision reads only the tensor set — names,
 * shapes, source types — and a few hyper-parameters from the metadata (layer
 * count, heads, experts, architecture); never the weights. So the plan is
 * known before any data is read, and a test can check it on a synthetic
 * tensor list.
 *
 * The GGUF mixes follow llama.cpp's llama_tensor_get_type (src/llama-quant.cpp)
 * without an importance matrix; docs/quantize.md lists every rule. In short:
 *   1. Only tensors llama.cpp quantizes are touched: >= 2 dims (ggml_n_dims,
 *      trailing 1s ignored), name ending in "weight", not "*_norm.weight",
 *      not MoE routers (ffn_gate_inp), not position/token-type embeddings
 *      and a few small architecture-specific tensors. The others keep their
 *      type (1-D floats and routers become F32, as llama.cpp's converter writes).
 *   2. The mix's rows (quant/mix.c, a table, first matching row wins) may
 *      raise a tensor: output.weight (and token_embd when embeddings are tied)
 *      to Q6_K, attn_v / ffn_down in the layers use_more_bits() picks ...
 *   3. --rule GLOB=TYPE / re:REGEX=TYPE overrides (later rules win) replace
 *      steps 2's choice for matching quantizable tensors.
 *   4. Fallback when ne[0] is not a multiple of the type's block size:
 *      llama.cpp's table (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, IQ4_XS ->
 *      IQ4_NL, Q2_K/Q3_K -> Q4_0 ...), then F16; nibble's own types fall back
 *      INT4 g128 -> g64 -> g32 -> F16, NF4_DQ -> NF4 -> F16.
 */
#ifndef NB_QUANT_MIX_H
#define NB_QUANT_MIX_H

#include "core/ctx.h"
#include "core/types.h"
#include "formats/model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The presets. Values are nibble's own (not written to files); the GGUF
 * general.file_type value is nb_mix_info.llama_ftype. */
typedef enum nb_mix_id {
    NB_MIX_F32 = 0,
    NB_MIX_F16,
    NB_MIX_BF16,
    NB_MIX_Q4_0,
    NB_MIX_Q4_1,
    NB_MIX_Q5_0,
    NB_MIX_Q5_1,
    NB_MIX_Q8_0,
    NB_MIX_Q2_K,
    NB_MIX_Q3_K_S,
    NB_MIX_Q3_K_M,
    NB_MIX_Q3_K_L,
    NB_MIX_Q4_K_S,
    NB_MIX_Q4_K_M,
    NB_MIX_Q5_K_S,
    NB_MIX_Q5_K_M,
    NB_MIX_Q6_K,
    NB_MIX_IQ4_NL,
    NB_MIX_IQ4_XS,
    NB_MIX_TQ1_0,
    NB_MIX_TQ2_0,
    NB_MIX_MXFP4_MOE,
    /* nibble's own (no llama.cpp file type; llama.cpp cannot load them) */
    NB_MIX_NF4,
    NB_MIX_NF4_DQ,
    NB_MIX_INT4_G32,
    NB_MIX_INT4_G64,
    NB_MIX_INT4_G128,
    NB_MIX_INT4_ASYM_G32,
    NB_MIX_INT4_ASYM_G64,
    NB_MIX_INT4_ASYM_G128,
    NB_MIX_COUNT
} nb_mix_id;

typedef struct nb_mix_info {
    nb_mix_id id;
    const char *name;     /* CLI spelling: "q4_k_m", "nf4-dq", "int4-g128" */
    nb_type base;         /* type of the bulk of the weights */
    int32_t llama_ftype;  /* llama.h LLAMA_FTYPE_* written as general.file_type; -1: none */
    const char *summary;  /* one line for --help */
} nb_mix_info;

/* Row of a mix, NULL when out of range. */
const nb_mix_info *nb_mix_get(nb_mix_id id);
/* Look a mix up by name (case-insensitive; '-' and '_' are interchangeable; aliases
 * q3_k/q4_k/q5_k = the _m mixes, int4 = int4-g128, int4-asym = int4-asym-g128). */
const nb_mix_info *nb_mix_find(const char *name);

/* What the mix rules read besides the tensor list (from the metadata). */
typedef struct nb_mix_hparams {
    char arch[64];       /* general.architecture ("" if unknown) */
    uint32_t n_layer;    /* <arch>.block_count */
    uint32_t n_head;     /* <arch>.attention.head_count (first layer's if per-layer) */
    uint32_t n_head_kv;  /* <arch>.attention.head_count_kv (defaults to n_head) */
    uint32_t n_expert;   /* <arch>.expert_count (0: dense) */
    bool has_imatrix;    /* importance data is supplied (changes a few rows, as in llama.cpp) */
} nb_mix_hparams;

/* Fill hp from GGUF metadata; missing keys leave 0 (never an error). */
void nb_mix_hparams_from_kv(const nb_kvset *kv, nb_mix_hparams *hp);

/* ---- per-tensor overrides ----------------------------------------------------
 * "PATTERN=TYPE": PATTERN is an fnmatch(3) glob over the whole tensor name
 * ("blk.*.ffn_down.weight"), or with a "re:" prefix a POSIX extended regex
 * searched anywhere in the name ("re:blk\.(1|2)\.attn_v"). TYPE is any type
 * name with a quantizer (q6_k, q8_0, f16, nf4, ...). Later rules win. */
typedef struct nb_rule nb_rule;
typedef struct nb_rules {
    size_t n;
    nb_rule *items;
} nb_rules;

void nb_rules_init(nb_rules *r);
void nb_rules_free(nb_rules *r);
/* Parse and append one rule; NB_ERR_INVALID on a malformed rule, an unknown
 * type, a type that cannot be quantized to, or a bad regex. */
nb_status nb_rules_add(nb_rules *r, const char *spec, nb_ctx *ctx);
/* Index of the last rule matching name, or -1. */
long nb_rules_match(const nb_rules *r, const char *name);
/* The i-th rule's text and type (for messages). */
const char *nb_rule_text(const nb_rules *r, size_t i);
nb_type nb_rule_type(const nb_rules *r, size_t i);

/* ---- planning ------------------------------------------------------------------ */

/* Why a tensor got its type. */
typedef enum nb_plan_why {
    NB_PLAN_KEEP = 0,   /* not quantizable (1-D, norm, router, ...): kept (1-D floats -> F32) */
    NB_PLAN_BASE,       /* the mix's base type */
    NB_PLAN_MIX,        /* raised/changed by a row of the mix (output, attn_v, ffn_down ...) */
    NB_PLAN_RULE,       /* a --rule */
    NB_PLAN_FALLBACK,   /* the chosen type did not fit ne[0]; `wanted` holds it */
    NB_PLAN_GIVEN,      /* read from a plan file entry without a "why" (quant/plan.h) */
    NB_PLAN_BUDGET      /* chosen by the size-budget planner (quant/budget.h) */
} nb_plan_why;

/* The mix's decision for one tensor (quant/plan.h turns these into a plan). */
typedef struct nb_mix_choice {
    nb_type type;       /* output type */
    nb_type wanted;     /* before the fallback (== type unless why == FALLBACK) */
    nb_plan_why why;
    long rule;          /* index of the deciding rule, -1 if none */
} nb_mix_choice;

typedef struct nb_mix_opts {
    const nb_rules *rules; /* may be NULL */
    bool pure;             /* no mix rows: every quantizable tensor gets the base type (llama --pure) */
    bool no_fallback;      /* a type that does not fit ne[0] is an error instead of a fallback */
} nb_mix_opts;

/* Plan every tensor of a model: out[i] for tensors[i]. Only names, shapes
 * and source types are read. Errors: NB_ERR_RANGE when no_fallback is set
 * and a tensor's row length does not fit its type (the message names the
 * tensor, its ne[0] and the block size); NB_ERR_FORMAT when a MoE tensor's
 * layer cannot be read from its name (llama.cpp fails there too). */
nb_status nb_mix_plan(const nb_mix_info *mix, const nb_mix_hparams *hp, const nb_mix_opts *o,
                      const nb_tensor *tensors, size_t n, nb_mix_choice *out, nb_ctx *ctx);

/* Would llama.cpp quantize a tensor with this name and shape at all? */
bool nb_mix_tensor_quantizable(const char *name, const int64_t ne[NB_MAX_DIMS]);

/* llama.cpp's use_more_bits(i_layer, n_layers): the layers whose attn_v /
 * ffn_down the _M mixes raise (first and last eighth, every third between). */
bool nb_mix_use_more_bits(int i_layer, int n_layers);

const char *nb_plan_why_name(nb_plan_why w);
/* Inverse of nb_plan_why_name; false for an unknown name. */
bool nb_plan_why_from_name(const char *name, nb_plan_why *out);

#endif
