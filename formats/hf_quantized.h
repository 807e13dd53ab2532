/* formats/hf_quantized.h — Hugging Face checkpoints that are already quantized,
 * opened as ordinary sources.
 *
 * When config.json has a `quantization_config`, nb_hf_open (formats/hf.c)
 * passes its safetensors model through nb_hfq_wrap. The wrapper shows each
 * quantized Linear as one tensor "<module>.weight" of shape {in, out} (ggml
 * order) and consumes the tensors that make it up; every other tensor passes
 * through unchanged (zero-copy). Quantized tensors are decoded by ops->read
 * into the caller's buffer, one tensor at a time (memory: that tensor), as:
 *
 *   bitsandbytes 4-bit NF4 (plain or double-quantized absmax, any blocksize
 *     that is a multiple of 64 when in_features is too)
 *       -> NB_TYPE_NF4, lossless: the same codes, d = bnb's fp32 absmax
 *          (double quantization undone exactly as bnb's dequantize_4bit does);
 *          other blocksizes -> F32 = code * absmax;
 *   bitsandbytes 4-bit FP4 -> F32 = code value * absmax;
 *   bitsandbytes LLM.int8 (weight int8 [out, in] + SCB [out])
 *       -> F32 = weight * SCB * (1/127 as transformers' int8_vectorwise_dequant);
 *   GPTQ (qweight / qzeros / scales / g_idx; 2, 3, 4 and 8 bits; sym or asym;
 *     checkpoint_format "gptq" (zeros stored minus one; each field gets +1 on
 *     its own, as AutoGPTQ's kernels read it, so a stored all-ones field means
 *     2^bits — GPTQModel adds 1 to the whole word instead and carries into the
 *     next field there, a case it documents as an overflow) or "gptq_v2")
 *       -> the group-wise INT4 type of the same grid (quant/int4.h) when bits 4,
 *          group 32/64/128, g_idx = k / group and every zero fits (lossless);
 *          otherwise F32 = scale[g_idx[k]] * (q - zero[g_idx[k]]);
 *   AWQ GEMM (qweight [in][out/8] in AutoAWQ's column order, qzeros, scales)
 *       -> INT4 asym (group 32/64/128) or F32;
 *   compressed-tensors "pack-quantized" int weights (weight_packed,
 *     weight_scale, weight_zero_point, weight_shape, optional weight_g_idx)
 *       -> INT4 sym/asym when 4 bits, group 32/64/128 and every scale is exact
 *          in fp16; otherwise F32 = (q - zero) * scale.
 *
 * Within one checkpoint, all GPTQ / AWQ / compressed-tensors weights of one
 * group size get one type (an MoE's experts are stacked into one tensor): if
 * one of them cannot be INT4, all become F32; if one is asymmetric, the
 * symmetric ones are stored asymmetric with zero 8 (still lossless).
 *
 * F32 values are the exact products (scale * integer) that each library
 * computes before its final cast to the compute dtype, so rounding them to
 * that dtype (fp16/bf16) gives the library's dequantized weight bit for bit.
 *
 * Errors (one message naming the file, the key or tensor, and what is wrong):
 * unknown quant_method or an unsupported layout (bits, version, format) ->
 * NB_ERR_UNSUPPORTED; a missing companion tensor, a wrong dtype or a shape
 * that disagrees with the others or with the config -> NB_ERR_FORMAT.
 */
#ifndef NB_FORMATS_HF_QUANTIZED_H
#define NB_FORMATS_HF_QUANTIZED_H

#include "formats/model.h"

#include <stddef.h>

/* config_json (config_len bytes, need not be NUL-terminated) is config.json's
 * text and cfg_path its name for messages. Without a `quantization_config`
 * nothing changes. Otherwise *st (an open safetensors model with Hugging Face
 * names) is replaced by the wrapper, which owns and closes it. On failure *st
 * is left as it was (the caller still owns it). */
nb_status nb_hfq_wrap(nb_model **st, const char *config_json, size_t config_len, const char *cfg_path,
                      nb_ctx *ctx);

#endif
