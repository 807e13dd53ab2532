/* quant/quantize.h — the streaming quantization pipeline (`nibble quantize`).
 *
 * nb_quantize_model opens any source nb_model_open accepts (GGUF, including
 * already-quantized GGUF; safetensors; HF directories), checks that the given
 * plan (quant/plan.h: the type of every tensor) was made for it, and writes a
 * GGUF file:
 *
 *   - metadata copied from the source (split.* keys dropped), plus
 *     general.quantization_version = 2 and general.file_type = the plan's
 *     llama.cpp ftype (removed for nibble's own mixes, which have none);
 *   - tensors in source order, streamed one at a time in chunks of rows: the
 *     source rows are converted to F32 (dequantized when the source is
 *     quantized: "requantization", reported with a warning), checked for
 *     NaN/Inf, quantized with OpenMP across rows, written. A tensor whose
 *     planned type equals its source type is copied byte for byte.
 *
 * Determinism: every quantizer treats rows independently, so a chunk is
 * split across threads by rows and the bytes are identical for any thread
 * count. The one exception, NF4_DQ (its absmax offset is a mean over the
 * whole tensor), is quantized in one call per 2-D slice.
 *
 * Memory: one source tensor when the reader cannot map it (HF experts to
 * stack ...), otherwise a few chunk buffers of NB_QUANT_CHUNK_ELEMS floats;
 * NF4_DQ needs one 2-D slice in F32. Never the model.
 *
 * Errors: output path naming the input file -> NB_ERR_INVALID; a NaN/Inf
 * element -> NB_ERR_RANGE naming the tensor and element (row, column); a
 * source type that cannot be converted -> NB_ERR_UNSUPPORTED; disk full ->
 * NB_ERR_NOSPACE. On any error the partial output is removed.
 */
#ifndef NB_QUANT_QUANTIZE_H
#define NB_QUANT_QUANTIZE_H

#include "core/ctx.h"
#include "core/types.h"
#include "quant/mix.h"
#include "quant/plan.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Elements per processing chunk (F32 buffer of 64 MiB). */
#define NB_QUANT_CHUNK_ELEMS (16u << 20)

/* Optional per-column importance for tensor `name`, expert slice `slice`
 * (0 for 2-D tensors): ne0 floats that must stay valid until the next call,
 * or NULL for plain rounding. Filled by the calibration stage (imatrix). */
typedef const float *(*nb_importance_fn)(void *user, const char *name, int64_t slice, int64_t ne0);

/* Optional: bytes of tensor `name` already quantized elsewhere (GPTQ,
 * calib/gptq_model.h) in the planned `type`: a pointer to exactly `nbytes`
 * bytes (the whole tensor, valid until nb_quantize_model returns), or NULL to
 * quantize the tensor as usual. Such tensors are written as given (the report
 * still compares them with the source). */
typedef const void *(*nb_prequant_fn)(void *user, const char *name, nb_type type, uint64_t nbytes);

/* How to write (the plan says what). */
typedef struct nb_quant_opts {
    bool report;              /* compute per-tensor error statistics (costs a dequantization) */
    uint64_t chunk_elems;     /* elements per chunk; 0: NB_QUANT_CHUNK_ELEMS (tests use small values) */
    nb_importance_fn importance;
    void *importance_user;
    nb_prequant_fn prequant;
    void *prequant_user;
} nb_quant_opts;

/* Per output type (the plan's totals). */
typedef nb_plan_type_stat nb_quant_type_stat;

/* Per tensor (every tensor, in source order). Error figures are set for
 * converted tensors when opts.report is on (has_error), computed in double
 * from the dequantized output vs the F32 source:
 *   rmse = sqrt(mean((x - y)^2)), max_abs = max |x - y|,
 *   rel_rmse = rmse / sqrt(mean(x^2)) (0 when x is all zero),
 *   cosine = <x, y> / (|x| |y|) (1 when both are zero, 0 when one is). */
typedef struct nb_quant_tensor {
    const char *name;   /* borrowed from the result's name storage */
    nb_type src_type, type;
    nb_plan_why why;
    uint32_t n_dims;
    int64_t ne[4];
    uint64_t n_elements;
    uint64_t bytes_in, bytes_out;
    bool has_error;
    bool prequant;      /* bytes came from opts.prequant (e.g. GPTQ) */
    double rmse, max_abs, rel_rmse, cosine;
} nb_quant_tensor;

typedef struct nb_quant_result {
    size_t n_tensors;
    size_t n_quantized;     /* tensors converted to another type */
    size_t n_requantized;   /* of those, tensors whose source was already quantized */
    size_t n_fallback;      /* tensors whose planned type did not fit and fell back */
    uint64_t n_elements;
    uint64_t bytes_in;      /* source tensor bytes */
    uint64_t tensor_bytes_out;
    uint64_t bytes_out;     /* output file size (0 for a dry run) */
    double seconds;
    unsigned char sha256[32];
    nb_quant_tensor *tensors;  /* [n_tensors] */
    nb_quant_type_stat *types; /* [n_types], ascending type id */
    size_t n_types;
    char *names;               /* storage for tensors[].name */
} nb_quant_result;

/* Quantize src to the GGUF file dst as `plan` says (nb_plan_make, or a plan
 * file after nb_plan_resolve); a plan made for another model is NB_ERR_INVALID
 * (nb_plan_bind). `o` may be NULL (defaults). `r` is filled (also on failure,
 * as far as it got) and must be released with nb_quant_result_free. */
nb_status nb_quantize_model(const char *src, const char *dst, const nb_plan *plan, const nb_quant_opts *o,
                            nb_quant_result *r, nb_ctx *ctx);
void nb_quant_result_free(nb_quant_result *r);

/* The metadata nb_quantize_model writes for source m: m's keys without
 * split.*, general.quantization_version = 2, general.file_type = file_type
 * (removed when < 0). kv must be empty (nb_kvset_init); the caller frees it. */
nb_status nb_quantize_output_kv(const nb_model *m, int32_t file_type, nb_kvset *kv, nb_ctx *ctx);

/* Machine-readable summary (malloc'd JSON text; NULL on allocation failure):
 * {"input","output","mix","file_type","seconds","n_tensors",...,"types":[...],
 *  "tensors":[{name,src_type,type,why,shape,bytes_in,bytes_out,
 *              [rmse,max_abs,rel_rmse,cosine]}]}. "mix", "file_type" and the
 * totals come from the plan the file was written with (NULL: left out).
 * `with_tensors` adds the per-tensor list. */
char *nb_quant_result_json(const nb_quant_result *r, const nb_plan *plan, const char *src, const char *dst,
                           bool with_tensors);

/* Error statistics of y (reconstruction) against x (reference), n elements,
 * in the definitions above. Exposed for tests. */
typedef struct nb_err_acc {
    double se, xx, yy, xy, max_abs;
    uint64_t n;
} nb_err_acc;
void nb_err_acc_add(nb_err_acc *a, const float *x, const float *y, uint64_t n);
void nb_err_acc_merge(nb_err_acc *a, const nb_err_acc *b);
void nb_err_acc_finish(const nb_err_acc *a, double *rmse, double *max_abs, double *rel_rmse, double *cosine);

#endif
