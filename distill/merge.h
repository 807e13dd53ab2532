/* distill/merge.h — merge LoRA / rsLoRA / DoRA adapters into a base model
 * (`nibble merge`). distill/ is nibble's model-surgery stage: adapters are
 * merged here, and expert pruning (distill/prune.*) lives beside it with the
 * same shape — a plan built and validated up front from the base's tensor
 * table, then one streaming pass that rewrites only the tensors it must.
 *
 * The math is PEFT's merge_and_unload (peft/tuners/lora/layer.py Linear.merge,
 * Embedding.merge, variants.py DoraLinearVariant.merge_unsafe), in F32 with
 * double accumulation of the rank sum:
 *   ΔW    = B·A · scaling · weight                 [out, in]; transposed to [in, out]
 *                                                 for fan_in_fan_out and Embedding targets
 *   LoRA  W' = W + ΔW
 *   DoRA  W' = (m / ‖W + ΔW‖_row) · (W + ΔW)      norm per output feature (dim 1 of the
 *                                                 [out, in] view); m is used as stored
 *   bias  b' = b + lora_B.bias · scaling · weight   (lora_bias)
 *   modules_to_save / trained biases: the adapter's tensor replaces the base's.
 * `weight` is the per-adapter factor of `--adapter DIR:W`: it multiplies
 * PEFT's scaling exactly as PEFT's scale_layer / set_scale do (so for DoRA the
 * magnitude is not rescaled); replacements ignore it. Adapters are applied in
 * the order given, each to the result of the previous one — what loading and
 * merging them one after the other in PEFT gives.
 *
 * Names: an adapter's module "model.layers.0.self_attn.q_proj" is the HF
 * parameter "model.layers.0.self_attn.q_proj.weight", resolved to the base's
 * GGUF name with formats/arch.h (the base's general.architecture). Where the
 * base stores llama-permuted q/k rows (GGUF and HF directories opened through
 * nibble), the delta's rows — and a DoRA magnitude's and a bias's elements —
 * are permuted the same way. Per-expert targets (block_sparse_moe.experts.E.w1
 * ...) update slice E of the stacked tensor. A base without an architecture
 * (a bare .safetensors file) is matched by exact HF names, without permutation.
 * GGUF LoRA adapters already use the base's GGUF names and row order.
 *
 * QLoRA (opts.qlora): every linear weight of the base (n_dims >= 2, a ".weight"
 * other than the token embeddings and the output head — what transformers
 * quantizes with bitsandbytes) is replaced by its NF4 round trip first: flat
 * row-major blocks of `qlora_blocksize` in the HF layout (q/k un-permuted),
 * optional double quantization, exactly bitsandbytes' quantize_4bit /
 * dequantize_4bit (quant/nf4.h), rounded to the tensor's own F16/BF16 type as
 * bitsandbytes returns it — the weight the adapter was trained against.
 * The base must then be full precision (F32/F16/BF16).
 *
 * Output types: without set_type, untouched tensors are copied byte for byte;
 * merged tensors keep an F32/F16/BF16 base type, and a quantized base tensor
 * (GGUF k-quants, NF4 ...) is dequantized, merged and written as F16 (a
 * warning says so; requantize with `nibble quantize`). With set_type, every
 * float or quantized tensor with >= 2 dims becomes `type` and 1-D ones F32,
 * as `nibble convert --type` does. The output is GGUF or safetensors by its
 * extension, written atomically (nothing is left behind on any error).
 *
 * Memory: one base tensor in F32 (plus one transposed copy for fan_in_fan_out
 * / Embedding targets, and one slice for QLoRA's un-permuted copy), the
 * current module's A and B, and the output conversion buffer.
 *
 * Errors (before any output is created): shape mismatch (names the module,
 * the base tensor and both shapes), a target the base lacks, a GGUF adapter
 * for another architecture, inconsistent adapters (see distill/adapter.h),
 * --qlora on a quantized base. During the pass: a DoRA row whose norm is 0,
 * or a non-finite merged weight (NB_ERR_RANGE naming tensor and adapter).
 */
#ifndef NB_DISTILL_MERGE_H
#define NB_DISTILL_MERGE_H

#include "core/ctx.h"
#include "core/types.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct nb_merge_adapter {
    const char *path;   /* PEFT directory or GGUF LoRA file */
    double weight;      /* multiplies the adapter's scaling (1 = as trained) */
} nb_merge_adapter;

typedef struct nb_merge_opts {
    const nb_merge_adapter *adapters;
    size_t n_adapters;          /* >= 1 */
    bool set_type;
    nb_type type;               /* with set_type (see above) */
    bool qlora;                 /* merge into the NF4 round trip of the base */
    uint32_t qlora_blocksize;   /* 0: 64 (bitsandbytes' default) */
    bool qlora_double_quant;    /* bnb_4bit_use_double_quant */
} nb_merge_opts;

typedef enum nb_merge_kind {
    NB_MERGE_LORA = 0,  /* W += ΔW */
    NB_MERGE_DORA,      /* magnitude-normalised */
    NB_MERGE_BIAS,      /* lora_B.bias added to the base bias */
    NB_MERGE_REPLACE    /* modules_to_save / trained bias: tensor replaced */
} nb_merge_kind;

const char *nb_merge_kind_name(nb_merge_kind k);

/* One applied step, in application order (by base tensor, then adapter). */
typedef struct nb_merge_entry {
    size_t adapter;         /* index in opts.adapters */
    char *module;           /* adapter module / parameter name */
    char *tensor;           /* base tensor */
    int64_t expert;         /* slice of a stacked expert tensor, or -1 */
    nb_merge_kind kind;
    uint32_t rank;          /* 0 for REPLACE */
    double alpha;
    double scaling;         /* PEFT's scaling × adapter weight (what multiplies B·A) */
    double base_norm;       /* ‖W‖_F of the slice before this step */
    double delta_norm;      /* ‖W' − W‖_F of this step */
} nb_merge_entry;

typedef struct nb_merge_result {
    size_t n_tensors;       /* tensors written */
    size_t n_merged;        /* tensors changed by an adapter */
    size_t n_qlora;         /* tensors replaced by their NF4 round trip */
    size_t n_entries;
    nb_merge_entry *entries;
    uint64_t bytes_in;      /* base tensor bytes */
    uint64_t bytes_out;     /* output file size */
    double seconds;
    unsigned char sha256[32];
} nb_merge_result;

/* Merge opts->adapters into `base`, writing `dst` (.gguf or .safetensors).
 * `r` is filled as far as the merge got and must be released with
 * nb_merge_result_free (also on failure). */
nb_status nb_merge(const char *base, const char *dst, const nb_merge_opts *o, nb_merge_result *r, nb_ctx *ctx);
void nb_merge_result_free(nb_merge_result *r);

/* JSON report (malloc'd, NUL-terminated; NULL when out of memory). */
char *nb_merge_result_json(const nb_merge_result *r, const char *base, const char *dst, const nb_merge_opts *o);

/* The kernel, exposed for tests. W holds `out` rows of `in` floats; logical
 * row o of the [out, in] update lives at row row_of[o] (row_of NULL: o).
 * A is [rank, in], B [out, rank] (row-major F32). Adds scale·(B·A) row by row;
 * with `mag` ([out]) applies DoRA instead. base_sq[o] / delta_sq[o] receive
 * Σ W[o,:]² before and Σ (W'−W)[o,:]² (double). DoRA rows with zero or
 * non-finite norm -> NB_ERR_RANGE naming the logical row and `what`.
 * Row results are independent of n_threads. */
nb_status nb_lora_merge_rows(float *W, const int64_t *row_of, int64_t out, int64_t in, const float *A,
                             const float *B, uint32_t rank, double scale, const float *mag, double *base_sq,
                             double *delta_sq, int n_threads, const char *what, nb_ctx *ctx);

#endif
