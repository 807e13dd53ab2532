/* quant/plan.h — the quantization plan: which type every tensor of a model
 * gets, as a value that is made, printed, saved, edited and applied.
 *
 * A plan is made from a model's tensor list by one call (nb_plan_make: the
 * mix's rows, --rule overrides, fallbacks; quant/mix.h), or read from JSON
 * (nb_plan_from_json: what `nibble quantize --dry-run --json` prints, possibly
 * edited by hand). The writer (nb_quantize_model) and the GPTQ driver
 * (nb_gptq_quantize_model) take a plan and never decide a type themselves, so
 * what a dry run prints is exactly what is written, to the byte count.
 *
 * Binding to a source. A plan records its source's identity: the file size
 * (nb_model.file_bytes) and `tensors_sha256`, a SHA-256 over every tensor's
 * name, type and shape in order (a structural fingerprint that costs no read
 * of the weights: hashing a 40 GB source's contents would cost a full pass
 * before a dry run could print). nb_plan_bind checks both against the model
 * it is applied to; a plan for another model is an NB_ERR_INVALID naming the
 * first difference.
 *
 * JSON schema (version 1; docs/quantize.md "Plans"):
 *   { "nibble_plan": 1,
 *     "mix": "q4_k_m",               optional: the mix it was made with
 *     "file_type": 15,               optional: general.file_type to write (absent: none)
 *     "source": {"path": "...", "size": N, "tensors_sha256": "hex"},
 *     "n_tensors", "n_quantized", "n_requantized", "n_fallback", "n_elements",
 *     "bytes_in", "tensor_bytes_out", "bpw_in", "bpw_out",     informative totals
 *     "prune": {"keep": K, "n_expert": N, "criterion": "reap", optional: the planner's keep-N
 *               "tensors_sha256": "hex",         decision (--allow-prune); tensors then have the
 *               "layers": [{"layer": L,           shapes of the pruned model, which the plan binds
 *                           "kept": [e, ...]}]},  to; `nibble prune --plan` makes that model
 *     "tensors": [ {"name", "shape": [ne0, ...], "src_type", "type", "why",
 *                   "bytes_in", "bytes_out", "pred_err",
 *                   "method": "gptq",                 optional: the method chosen for this tensor
 *                                                     ("rtn", "imatrix", "gptq"; absent: the job's)
 *                   "gptq_experts": [e, ...]}, ... ] } optional with "gptq" on an expert stack: only
 *                                                     these experts by GPTQ (ascending, < ne[2])
 * Reading: "nibble_plan", "source" and "tensors" with each tensor's "name" and
 * "type" are required; "shape"/"src_type"/"bytes_*" are checked against the
 * model when present (a hand edit only needs to change "type"); "why" is kept
 * when valid ("plan" when absent); the totals are recomputed; an unknown key
 * anywhere is an error naming it.
 */
#ifndef NB_QUANT_PLAN_H
#define NB_QUANT_PLAN_H

#include "core/ctx.h"
#include "core/types.h"
#include "formats/model.h"
#include "quant/mix.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define NB_PLAN_VERSION 1

/* How a tensor is to be quantized when the plan says (the size-budget
 * planner's mixed methods, quant/budget.h); NB_PLAN_METHOD_JOB: whatever the
 * job's --method is (every plan made from a mix). Append-only: the names are
 * the plan file's "method" values. */
typedef enum nb_plan_method {
    NB_PLAN_METHOD_JOB = 0, /* not recorded */
    NB_PLAN_METHOD_RTN,     /* "rtn": round to nearest, no importance */
    NB_PLAN_METHOD_IMATRIX, /* "imatrix": importance-weighted rounding */
    NB_PLAN_METHOD_GPTQ,    /* "gptq": sequential GPTQ (calib/gptq_model.h) */
    NB_PLAN_METHOD_AWQ      /* "awq": AWQ scales (calib/awq.h), then importance-weighted rounding; chosen
                               for a block's attention (q, k, v, o) or FFN (gate, up, down, their expert and
                               shared-expert stacks) as a whole, as the scales are shared by every linear
                               reading the same input (the driver scales a group only when all its readers
                               say awq) */
} nb_plan_method;

#define NB_PLAN_METHOD_LAST NB_PLAN_METHOD_AWQ

/* "job", "rtn", "imatrix", "gptq", "awq". */
const char *nb_plan_method_name(nb_plan_method m);
/* Inverse of nb_plan_method_name ("job" included); false for anything else. */
bool nb_plan_method_from_name(const char *name, nb_plan_method *out);

typedef struct nb_plan_tensor {
    const char *name;      /* in the plan's name storage */
    nb_type src_type;      /* the source's type */
    nb_type type;          /* output type */
    nb_type wanted;        /* before a fallback (== type unless why == NB_PLAN_FALLBACK) */
    nb_plan_why why;
    long rule;             /* deciding --rule index, -1 if none */
    uint32_t n_dims;
    int64_t ne[NB_MAX_DIMS];
    uint64_t n_elements;
    uint64_t bytes_in;     /* source bytes */
    uint64_t bytes_out;    /* exact output bytes (the type table's row bytes x rows) */
    double pred_err;       /* predicted error of this choice; NAN: not measured (the planner fills it) */
    nb_plan_method method; /* NB_PLAN_METHOD_JOB unless the planner chose one (mixed methods) */
    uint32_t *gptq_experts; /* method GPTQ on an expert stack: the experts GPTQ quantizes, ascending
                               (owned by the plan; NULL: every expert); the others are rounded */
    uint32_t n_gptq_experts;
} nb_plan_tensor;

/* Does the plan quantize expert `slice` of tensor t with GPTQ (method GPTQ or
 * the job's, and the slice in gptq_experts when there is a list)? */
bool nb_plan_slice_gptq(const nb_plan_tensor *t, uint32_t slice);

/* Totals per output type. */
typedef struct nb_plan_type_stat {
    nb_type type;
    size_t n_tensors;
    uint64_t n_elements;
    uint64_t bytes;
} nb_plan_type_stat;

/* A keep-N-experts decision inside a plan (the size-budget planner's
 * --allow-prune): every MoE layer keeps `keep` of its `n_expert` experts,
 * chosen by `criterion` from routing statistics (distill/prune.h). The plan's
 * tensors are those of the pruned model (expert stacks and routers cut to
 * `keep`), whose structural fingerprint is `tensors_sha256`; the plan's
 * source identity stays the unpruned model's. keep == 0: no pruning. */
typedef struct nb_plan_prune {
    uint32_t keep, n_expert;
    char criterion[16];
    unsigned char tensors_sha256[32];
    uint32_t n_layer;        /* MoE layers */
    int32_t *layer;          /* [n_layer] block index, ascending */
    int32_t *kept;           /* [n_layer x keep] kept experts of each layer, ascending */
} nb_plan_prune;

typedef struct nb_plan {
    char mix[32];          /* the mix's name ("" when none) */
    int32_t file_type;     /* llama.cpp ftype written as general.file_type; -1: none */
    char *source_path;     /* informative */
    uint64_t source_size;  /* nb_model.file_bytes */
    unsigned char tensors_sha256[32];
    size_t n_tensors;
    nb_plan_tensor *tensors; /* [n_tensors], in source order */
    char *names;             /* every tensor's name, NUL-terminated, in order */
    size_t names_bytes;
    /* totals */
    size_t n_quantized;    /* tensors whose type changes */
    size_t n_requantized;  /* of those, tensors whose source was already quantized */
    size_t n_fallback;
    uint64_t n_elements, bytes_in, bytes_out;
    nb_plan_type_stat *types; /* [n_types], ascending type id */
    size_t n_types;
    nb_plan_prune prune;      /* keep == 0: none */
} nb_plan;

typedef struct nb_plan_opts {
    const nb_mix_info *mix;  /* required */
    const nb_rules *rules;   /* may be NULL */
    bool pure;               /* no mix rows */
    bool no_fallback;        /* a type that does not fit is an error, not a fallback */
    bool has_importance;     /* importance data will be supplied (changes a few mix rows, as in llama.cpp) */
} nb_plan_opts;

/* Plan every tensor of m with a mix. Warns (ctx) for each fallback, for rules
 * that decide nothing and for a source without an architecture
 * (requantization is counted in n_requantized: the caller decides). Errors: those of nb_mix_plan; NB_ERR_UNSUPPORTED when a
 * planned conversion is impossible (source type without a dequantizer, target
 * without a quantizer). `p` is filled on success and must be freed with
 * nb_plan_free (also safe after a failure). */
nb_status nb_plan_make(const nb_model *m, const nb_plan_opts *o, nb_plan *p, nb_ctx *ctx);
/* nb_plan_make on the model at `path` (opened and closed again). */
nb_status nb_plan_make_file(const char *path, const nb_plan_opts *o, nb_plan *p, nb_ctx *ctx);
void nb_plan_free(nb_plan *p);

/* Check that plan p applies to model m: same size and fingerprint, the same
 * tensors (names, source types, shapes) in the same order, and every planned
 * conversion possible (row length a multiple of the type's block: a plan
 * never falls back silently). NB_ERR_INVALID names the first difference.
 * A plan that prunes binds to the pruned model (prune.tensors_sha256; its
 * size is not known in advance); given the unpruned source it says to prune
 * first. */
nb_status nb_plan_bind(const nb_plan *p, const nb_model *m, nb_ctx *ctx);

/* The structural fingerprint of a model (see above). */
void nb_plan_fingerprint(const nb_model *m, unsigned char out[32]);
/* The same over a tensor list. */
void nb_plan_fingerprint_tensors(const nb_tensor *t, size_t n, unsigned char out[32]);

/* Add the plan's totals (n_tensors ... bpw_out, the keys of the schema above)
 * to the JSON object j (a cJSON *; also used by the quantize summary). */
struct cJSON;
void nb_plan_json_totals(const nb_plan *p, struct cJSON *j);
/* JSON text of the plan (malloc'd; NULL on allocation failure). */
char *nb_plan_to_json(const nb_plan *p);
/* Parse a plan from JSON text; `what` names the source in messages (a file
 * path). NB_ERR_FORMAT names the key or tensor that is wrong. */
nb_status nb_plan_from_json(const char *text, const char *what, nb_plan *p, nb_ctx *ctx);
/* Read a plan file (at most 256 MiB); then nb_plan_resolve it against the model. */
nb_status nb_plan_load(const char *path, nb_plan *p, nb_ctx *ctx);
/* Complete a plan read from JSON against the model it is applied to (source
 * types and shapes it leaves out), check it with nb_plan_bind, recompute the
 * totals. */
nb_status nb_plan_resolve(nb_plan *p, const nb_model *m, nb_ctx *ctx);

/* Recompute bytes_out and the totals after tensors' types were changed in
 * place (the size-budget planner, quant/budget.h, does this). Errors as
 * nb_plan_make's (a type that does not fit a row, a conversion not possible). */
nb_status nb_plan_retotal(nb_plan *p, nb_ctx *ctx);

/* Print the plan as a table: tensor, shape, source type -> type, why, bytes. */
void nb_plan_print(FILE *f, const nb_plan *p);

#endif
