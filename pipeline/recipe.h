/* pipeline/recipe.h — a recipe: how one variant of a model is made and
 * checked (docs/recipes.md; the schema is recipes/schema.json).
 *
 * A recipe is a JSON object. Its text may hold variables, `${NAME}` or
 * `${NAME:-default}`, replaced before parsing (anywhere: in strings, or as a
 * number, `"ctx": ${CTX:-512}`) from the variables the caller passes (`nibble
 * build --var NAME=VALUE`; `--source X` sets ${SOURCE}); a variable without a
 * value or a default is an error naming it. `$$` is a literal `$`. Relative paths in a recipe are relative to
 * the recipe file's directory.
 *
 *   { "nibble_recipe": 1,
 *     "name": "dense-q4km",                      required: names the outputs
 *     "description": "...",
 *     "source": "${SOURCE}",                     required: any model nb_model_open reads
 *     "adapters": [{"path": "...", "weight": 1.0}], "qlora": false,
 *     "prune": {"keep": 8 | "auto" | "keep_ratio": 0.5, "criterion": "reap"|"freq",
 *               "renormalize_topk": false},     "auto": the planner keeps as many as the
 *                                                target allows (needs target size/budget,
 *                                                method imatrix)
 *     "calibration": {"text": "...", "ctx": 512, "tokens": 65536, "seed": 0},
 *     "method": "rtn" | "imatrix" | "gptq",
 *     "target": {"mix": "q4_k_m"} | {"plan": "plan.json"} | {"size": "5.5GiB"} |
 *               {"bpw": 4.5} | {"budget": "24GiB", "ctx": 8192, "kv_type": "f16"},
 *               size / bpw / budget: the size-budget planner (quant/budget.h), with
 *               "runtime": "llama.cpp" (default) | "nibble"
 *     "rules": ["blk.*.ffn_down.weight=q6_k"], "allow_requantize": false,
 *     "validation": {"text": "...", "ctx": 512, "chunks": 0,
 *                    "gate": {"max_kld": 0.05, "max_ppl_increase_pct": 5,
 *                             "min_same_top_pct": 90}},
 *     "outputs": {"file": "${NAME}.gguf", "bundle": true,
 *                 "formats": ["gguf", "gptq", {"format": "awq", "name": "dir"}]} }
 *               formats: what the variant is written as, each from the quantize stage's
 *               plan and job (calib/export.h): "gguf" (the file above), "hf" (the
 *               variant's weights dequantized), "bnb-nf4", "gptq", "awq" (a Hugging Face
 *               directory named "name", default NAME-FORMAT); default ["gguf"]
 *
 * Unknown keys and wrong types are NB_ERR_FORMAT naming the key path
 * ("validation.gate.max_kld: expected a number").
 */
#ifndef NB_PIPELINE_RECIPE_H
#define NB_PIPELINE_RECIPE_H

#include "core/ctx.h"
#include "formats/hf_write.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NB_RECIPE_VERSION 1
#define NB_RECIPE_MAX_ADAPTERS 16
#define NB_RECIPE_MAX_RULES 64
#define NB_RECIPE_MAX_OUTPUTS 4 /* one per HF layout */

typedef struct nb_recipe_adapter {
    char *path;
    double weight;
} nb_recipe_adapter;

/* One Hugging Face output directory (outputs.formats). */
typedef struct nb_recipe_output {
    nb_hf_quant format;
    char *name;             /* the directory's name inside the output directory */
    size_t index;           /* its place in outputs.formats (for messages) */
} nb_recipe_output;

typedef enum nb_recipe_target_kind {
    NB_TARGET_MIX = 0,  /* a preset mix (quant/mix.h) */
    NB_TARGET_PLAN,     /* a plan file (quant/plan.h) */
    NB_TARGET_SIZE,     /* file size (the size-budget planner) */
    NB_TARGET_BPW,      /* bits per weight (the planner) */
    NB_TARGET_BUDGET    /* whole runtime memory at a context (the planner) */
} nb_recipe_target_kind;

typedef struct nb_recipe {
    char *path;             /* the recipe file ("" when parsed from text) */
    char *text;             /* the recipe after variable substitution (for manifests) */
    char *name;
    char *description;
    char *source;
    size_t n_adapters;
    nb_recipe_adapter adapters[NB_RECIPE_MAX_ADAPTERS];
    bool qlora;
    /* prune */
    bool prune;
    int prune_keep;         /* 0: from keep_ratio (or auto) */
    bool prune_auto;        /* keep "auto": the planner decides (no prune stage; the quantize stage prunes) */
    double prune_keep_ratio;
    char *prune_criterion;  /* "reap" (default) or "freq" */
    bool prune_renormalize;
    /* calibration */
    char *calib_text;       /* NULL: none */
    int calib_ctx;          /* 0: 512 */
    uint64_t calib_tokens;  /* 0: all */
    uint64_t calib_seed;
    char *method;           /* "rtn" (default), "imatrix", "gptq" */
    /* target */
    nb_recipe_target_kind target;
    char *target_mix;       /* NB_TARGET_MIX */
    char *target_plan;      /* NB_TARGET_PLAN */
    uint64_t target_bytes;  /* NB_TARGET_SIZE / NB_TARGET_BUDGET */
    double target_bpw;      /* NB_TARGET_BPW */
    int target_ctx;         /* NB_TARGET_BUDGET */
    char *target_kv_type;   /* NB_TARGET_BUDGET: "f16" (default), "q8_0", "q4_0" */
    char *target_runtime;   /* "llama.cpp" (default) or "nibble" (also allows NF4/INT4 types) */
    uint64_t target_overhead; /* NB_TARGET_BUDGET: bytes added to the estimate; UINT64_MAX: the default */
    char *target_calibrate; /* size/bpw/budget: the planner's errors calibrated on this text (nibble plan
                               --calibrate-kld: KLD per tensor group, an encoder's cosine distance); NULL: not */
    int target_calibrate_ctx; /* its chunk length (0: the default) */
    size_t n_rules;
    char *rules[NB_RECIPE_MAX_RULES];
    bool allow_requantize;
    /* validation */
    char *eval_text;        /* NULL: no validation */
    int eval_ctx;           /* 0: 512 */
    int eval_chunks;        /* 0: all */
    bool gate_kld, gate_ppl, gate_top;
    double max_kld, max_ppl_increase_pct, min_same_top_pct;
    /* outputs */
    char *out_file;         /* file name of the model inside the output directory */
    bool gguf;              /* the GGUF is an output ("gguf" in outputs.formats, or no formats given) */
    size_t n_outputs;       /* HF directories */
    nb_recipe_output outputs[NB_RECIPE_MAX_OUTPUTS];
    bool bundle;
} nb_recipe;

/* One variable: `${name}` -> value. */
typedef struct nb_recipe_var {
    const char *name;
    const char *value;
} nb_recipe_var;

/* Parse recipe text; `path` (may be NULL) names it in messages and anchors
 * relative paths. Fills r (free with nb_recipe_free, also after a failure). */
nb_status nb_recipe_parse(const char *text, const char *path, const nb_recipe_var *vars, size_t n_vars,
                          nb_recipe *r, nb_ctx *ctx);
/* Read and parse a recipe file (at most 1 MiB). */
nb_status nb_recipe_load(const char *path, const nb_recipe_var *vars, size_t n_vars, nb_recipe *r, nb_ctx *ctx);
void nb_recipe_free(nb_recipe *r);

/* Replace ${NAME} in `in` (malloc'd result in *out). Exposed for tests. */
nb_status nb_recipe_subst(const char *in, const char *what, const nb_recipe_var *vars, size_t n_vars, char **out,
                          nb_ctx *ctx);

#endif
