/* distill/adapter.h — LoRA adapters as nibble reads them: PEFT directories and
 * llama.cpp GGUF LoRA files, reduced to one description the merger uses.
 *
 * PEFT directory (what `PeftModel.save_pretrained` writes):
 *   adapter_config.json      peft_type "LORA", r, lora_alpha, use_rslora,
 *                            fan_in_fan_out, use_dora, lora_bias, bias,
 *                            rank_pattern, alpha_pattern, modules_to_save ...
 *   adapter_model.safetensors  tensors named after the wrapped model's
 *                            parameters with the adapter name removed:
 *     base_model.model.<module>.lora_A.weight          [r, in]   (torch order)
 *     base_model.model.<module>.lora_B.weight          [out, r]
 *     base_model.model.<module>.lora_B.bias            [out]     (lora_bias)
 *     base_model.model.<module>.lora_magnitude_vector  [out]     (DoRA; ".weight" suffix also accepted)
 *     base_model.model.<module>.lora_embedding_A       [r, num_embeddings]   (Embedding targets)
 *     base_model.model.<module>.lora_embedding_B       [embedding_dim, r]
 *     base_model.model.<param>                         full tensors (modules_to_save
 *                                                      weights, trained biases with bias="all"/"lora_only")
 *   adapter_model.bin (a pickle) is not read: nibble reads safetensors only.
 *
 * llama.cpp GGUF LoRA (convert_lora_to_gguf.py, src/llama-adapter.cpp):
 *   general.type = "adapter", adapter.type = "lora", adapter.lora.alpha (f32,
 *   0 or absent: scale 1), general.architecture = the base's;
 *   "<base tensor>.lora_a" ne = {in, r}, "<base tensor>.lora_b" ne = {r, out}
 *   (numpy [r, in] / [out, r], PEFT's own orientation), tensor names are the
 *   base's GGUF names and q/k rows are already in GGUF (permuted) order; for
 *   token_embd.weight lora_a is stored transposed (ne = {r, n_vocab});
 *   "*_norm.weight" tensors are skipped, as llama.cpp skips them.
 *   scale = alpha / r (r = lora_b ne[0]) when alpha != 0, else 1 — llama.cpp's
 *   rule; rsLoRA and rank/alpha patterns do not exist in this format.
 *
 * Scaling (PEFT LoraLayer.update_layer): r and alpha of a module come from
 * rank_pattern / alpha_pattern when a key matches the module name (first key
 * in file order whose Python regex matches `(.*\.)?(KEY)$` from the start of
 * the name, PEFT's get_pattern_key), else from r / lora_alpha; scaling =
 * alpha / r, or alpha / sqrt(r) with use_rslora.
 *
 * Everything is validated when the adapter is opened, before anything is
 * merged: pairs complete, ranks > 0 and consistent with the config, vector
 * lengths, all values finite. Errors name the file and the tensor.
 */
#ifndef NB_DISTILL_ADAPTER_H
#define NB_DISTILL_ADAPTER_H

#include "core/ctx.h"
#include "formats/model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum nb_adapter_kind {
    NB_ADAPTER_PEFT = 0, /* directory with adapter_config.json + adapter_model.safetensors */
    NB_ADAPTER_GGUF      /* llama.cpp GGUF LoRA */
} nb_adapter_kind;

/* adapter_config.json, the fields that change merged weights. */
typedef struct nb_peft_config {
    uint32_t r;             /* default rank (> 0) */
    double lora_alpha;      /* default alpha */
    bool use_rslora;        /* scaling = alpha / sqrt(r) */
    bool fan_in_fan_out;    /* base Linear weights stored [in, out] (GPT-2 Conv1D) */
    bool use_dora;
    bool lora_bias;         /* lora_B carries a bias */
    size_t n_rank_pattern, n_alpha_pattern;
    char **rank_keys;       /* rank_pattern keys, file order */
    uint32_t *rank_values;
    char **alpha_keys;      /* alpha_pattern keys, file order */
    double *alpha_values;
    char *base_model;       /* base_model_name_or_path or NULL */
} nb_peft_config;

/* Parse adapter_config.json text (need not be NUL-terminated). `what` names
 * the file in messages. Refused (NB_ERR_UNSUPPORTED): peft_type other than
 * LORA, layer_replication, alora / trainable-token / megatron options that
 * change the model beyond A/B/magnitude. r <= 0 or a pattern rank <= 0 ->
 * NB_ERR_RANGE; wrong JSON types -> NB_ERR_FORMAT naming the key. On failure
 * *out is left empty. */
nb_status nb_peft_config_parse(const char *json, size_t len, const char *what, nb_peft_config *out,
                               nb_ctx *ctx);
void nb_peft_config_free(nb_peft_config *c);

/* PEFT's get_pattern_key test: does pattern `key` match module name `module`
 * (Python `re.match(r"(.*\.)?(KEY)$", module)`)? The key is a regular
 * expression; Python's \d \w \s (and upper-case forms) are translated, the
 * rest is POSIX ERE. *ok is set false when the key does not compile, and
 * for keys whose compiled form would be huge (repetitions that multiply, as
 * in "x++++..." or "(x{99}){99}") or that use back-references: regcomp's
 * memory must stay small whatever adapter_config.json says. */
bool nb_peft_pattern_match(const char *key, const char *module, bool *ok);

/* One low-rank update. Shapes in torch order: A [rank, in], B [out, rank];
 * the delta B·A·scaling is [out, in], added transposed ([in, out]) when
 * `transposed` (fan_in_fan_out Linear, or any Embedding: PEFT transposes
 * lora_embedding_B @ lora_embedding_A). */
typedef struct nb_lora_module {
    char *name;         /* PEFT: module path without "base_model.model." ("model.layers.0.self_attn.q_proj");
                         * GGUF: base tensor name ("blk.0.attn_q.weight") */
    long a, b;          /* tensor indices in the adapter file */
    long magnitude;     /* DoRA magnitude vector [out], or -1 */
    long bias;          /* lora_B.bias [out], or -1 */
    bool embedding;     /* lora_embedding_A/B */
    bool a_transposed;  /* A is stored [in, rank] (GGUF token_embd lora_a) */
    bool transposed;    /* delta is added as [in, out] (see above) */
    uint32_t rank;
    int64_t in, out;    /* logical (torch) dims of the delta */
    int64_t n_slices;   /* 1, or the expert count of a 3-D GGUF LoRA on a stacked tensor */
    double alpha;
    double scaling;     /* PEFT: alpha/r or alpha/sqrt(r); GGUF: alpha/r or 1 */
} nb_lora_module;

/* A tensor that replaces the base's (modules_to_save, trained biases). */
typedef struct nb_lora_replace {
    char *name;         /* parameter path without "base_model.model." ("lm_head.weight") */
    long tensor;        /* index in the adapter file */
} nb_lora_replace;

typedef struct nb_adapter {
    char *path;                 /* what was opened */
    nb_adapter_kind kind;
    nb_model *file;             /* the adapter's tensors, names as stored */
    nb_peft_config cfg;         /* PEFT only (zeroed for GGUF) */
    char *arch;                 /* GGUF general.architecture; NULL for PEFT */
    size_t n_modules;
    nb_lora_module *modules;    /* sorted by name */
    size_t n_replace;
    nb_lora_replace *replace;   /* sorted by name */
    size_t n_skipped;           /* GGUF *_norm.weight tensors left out */
} nb_adapter;

/* Open a PEFT directory or a GGUF LoRA file (probed by content) and validate
 * it completely (see the top of this file). On failure *out is NULL. */
nb_status nb_adapter_open(const char *path, nb_adapter **out, nb_ctx *ctx);
/* NULL-safe. */
void nb_adapter_close(nb_adapter *a);

/* Read adapter tensor `idx` as F32 into dst (its element count). */
nb_status nb_adapter_read_f32(nb_adapter *a, long idx, float *dst, nb_ctx *ctx);

#endif
