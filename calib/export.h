/* calib/export.h — `nibble quantize ... --format bnb-nf4|gptq|awq -o DIR`: a
 * quantization job whose output is a Hugging Face directory that transformers,
 * vLLM and the GPTQ/AWQ kernels load (formats/hf_write.h gives the layouts).
 *
 *   bnb-nf4  the mix must be nf4 (fp32 absmax) or nf4-dq (double
 *            quantization); no plan file, rules or budget (the layout
 *            quantizes every decoder Linear and nothing else). With --method
 *            rtn: what bitsandbytes itself produces (its own flat NF4
 *            quantizer, bit-exact, any shape). With a calibrated method
 *            (imatrix, gptq, awq, awq-gptq): the job runs into a staging GGUF
 *            and its NF4 blocks are repacked unchanged; every Linear must come
 *            out as the mix's type (rows of 64k for nf4, 16384k for nf4-dq),
 *            else NB_ERR_UNSUPPORTED naming the tensor.
 *   gptq     the job runs as for GGUF (any method: rtn, imatrix, gptq; rules;
 *   awq      plan files) into a staging GGUF, then every decoder Linear, which
 *            must be one group-wise INT4 type, is packed losslessly. With
 *            --method gptq --format gptq the checkpoint holds GPTQ's codes.
 * The staging GGUF lives in "DIR.stage.partial.XXXXXX/" (core/adir.h) and is
 * removed at the end, also on failure. */
#ifndef NB_CALIB_EXPORT_H
#define NB_CALIB_EXPORT_H

#include "calib/job.h"
#include "formats/hf_write.h"

/* Check that the job can be exported as `fmt` before any work: a mix the
 * layout cannot hold (K-quants to bnb, NF4 to GPTQ ...) or a job option it
 * cannot honour -> NB_ERR_INVALID with one line saying what to use. */
nb_status nb_quant_export_check(const nb_quant_job *job, nb_hf_quant fmt, nb_ctx *ctx);

/* The plan of `job` against layout `fmt`, tensor by tensor: every decoder
 * Linear in one packable INT4 type (gptq / awq) or in the mix's NF4 type
 * (calibrated bnb-nf4); nothing to check for hf or bnb-nf4 by rtn.
 * NB_ERR_UNSUPPORTED naming job->src and the first tensor that would not fit. */
nb_status nb_quant_export_check_plan(const nb_quant_job *job, const nb_plan *plan, nb_hf_quant fmt, nb_ctx *ctx);

/* Write `dst` in layout `fmt` from `gguf`, the GGUF this job wrote (checked
 * with the two calls above): gptq / awq pack its INT4 weights losslessly,
 * calibrated bnb-nf4 repacks its NF4 blocks, hf writes its weights dequantized
 * in the source's float type; bnb-nf4 by rtn ignores it and quantizes job->src
 * with bitsandbytes' quantizer (gguf may then be NULL).
 * What nb_quantize_export does after its staging job; `nibble build` calls it
 * on the quantize stage's GGUF, so an HF output holds the validated weights. */
nb_status nb_quant_export_gguf(const nb_quant_job *job, nb_hf_quant fmt, const char *gguf, const char *dst,
                               nb_hf_write_result *hr, nb_ctx *ctx);

/* Run the job and write job->dst as a directory in layout `fmt`. r is
 * filled as nb_quantize_job fills it (for bnb-nf4 only the method and the
 * plan stay empty); hr receives the directory's figures. Free r with
 * nb_quant_job_result_free. */
nb_status nb_quantize_export(const nb_quant_job *job, nb_hf_quant fmt, nb_quant_job_result *r,
                             nb_hf_write_result *hr, nb_ctx *ctx);

#endif
