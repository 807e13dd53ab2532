/* formats/hf_write.h — Hugging Face model directories out (plain, bitsandbytes
 * NF4, GPTQ, AWQ).
 *
 * nb_hf_write writes an open model (GGUF names, any source nb_model_open
 * accepts) as a directory that transformers' from_pretrained loads:
 *   config.json               nb_hf_config_render + bos/eos ids + quantization_config
 *   generation_config.json    bos / eos / pad ids from tokenizer.ggml.*
 *   model.safetensors         or model-0000K-of-0000N.safetensors + model.safetensors.index.json
 *                             when the tensors exceed max_shard_size (transformers' rule:
 *                             a shard is closed before the tensor group that would overflow it)
 *   tokenizer files           formats/hf_tokenizer.h when this build has it (see hf_write.c)
 * Tensor names are the architecture's HF names (formats/arch.h), undoing
 * llama.cpp's q/k row permutation and Gemma's norm +1; stacked experts become
 * one tensor per expert; rope_freqs.weight is dropped (llama3 rope scaling
 * lives in config.json); tensors that kept their HF name (nb_hf_is_unmapped)
 * are written under it.
 *
 * Quantized layouts (quant/hf_pack.h gives the bytes):
 *   NB_HF_BNB_NF4  every Linear weight of the decoder blocks (attn q/k/v/o, ffn
 *                  gate/up/down) quantized from its values with bitsandbytes'
 *                  own flat NF4 quantizer (blocksize 64, double quant unless
 *                  bnb_no_double_quant), the rest in `dtype` — what
 *                  save_pretrained writes for BitsAndBytesConfig(load_in_4bit,
 *                  nf4). A source already in NF4 (RTN) round-trips exactly.
 *   NB_HF_GPTQ     every Linear weight must already be one INT4 type (quant/int4.h;
 *                  `nibble quantize --type int4...`, RTN or GPTQ): packed losslessly as
 *                  qweight/qzeros (v1)/scales/g_idx; quantization_config quant_method
 *                  gptq with bits 4, the group, sym, desc_act / static_groups as given.
 *   NB_HF_AWQ      same source condition; AutoAWQ GEMM packing (version "gemm").
 * Quantized exports of MoE architectures are refused (NB_ERR_UNSUPPORTED).
 *
 * Memory: one source tensor in F32 plus its packed form; never the model.
 * The bnb export reads each Linear weight twice (its quant_state's length,
 * which depends on the double-quant offset, is in the header).
 * Atomic: the directory is built as DIR.partial.XXXXXX and renamed (core/adir.h).
 */
#ifndef NB_FORMATS_HF_WRITE_H
#define NB_FORMATS_HF_WRITE_H

#include "formats/model.h"

#include <stdbool.h>
#include <stdint.h>

#define NB_HF_DEFAULT_SHARD 5000000000ull /* transformers' max_shard_size "5GB" */

typedef enum nb_hf_quant {
    NB_HF_PLAIN = 0,
    NB_HF_BNB_NF4,
    NB_HF_GPTQ,
    NB_HF_AWQ
} nb_hf_quant;

/* "hf", "bnb-nf4", "gptq", "awq" (and "gguf" -> false: not an HF layout). */
bool nb_hf_quant_from_name(const char *name, nb_hf_quant *out);
const char *nb_hf_quant_name(nb_hf_quant q);

typedef struct nb_hf_write_opts {
    nb_type dtype;            /* F32, F16 or BF16 for unquantized tensors; NB_TYPE_COUNT (or 0 with
                                 dtype_set false): the source's float type (BF16 when it has none) */
    bool dtype_set;
    uint64_t max_shard_size;  /* bytes per shard; 0: NB_HF_DEFAULT_SHARD */
    nb_hf_quant quant;
    bool bnb_no_double_quant; /* bnb: fp32 absmax instead of double quantization */
    bool gptq_desc_act;       /* recorded in quantization_config (nibble's act-order keeps g_idx = k/G) */
    bool gptq_static_groups;
    double gptq_damp;         /* recorded as damp_percent (0: 0.01) */
    const char *single_file;  /* non-NULL: write one .safetensors file there (HF names, no
                                 config, no sharding) instead of a directory */
} nb_hf_write_opts;

typedef struct nb_hf_write_result {
    size_t n_tensors;   /* safetensors entries written */
    size_t n_shards;
    uint64_t bytes_in;  /* source tensor bytes */
    uint64_t bytes_out; /* all files written */
    double seconds;
    unsigned char sha256[32]; /* of the single safetensors file (one shard / single_file), else zero */
} nb_hf_write_result;

/* Write m to the directory `dir` (or o->single_file). Errors: an architecture
 * without HF names or a tensor without an HF name -> NB_ERR_UNSUPPORTED
 * naming it; a quantized layout that cannot hold a tensor (a K-quant to bnb,
 * a non-INT4 linear to GPTQ ...) -> NB_ERR_UNSUPPORTED naming the tensor and
 * type; DIR non-empty -> NB_ERR_INVALID; I/O. Nothing is left on failure. */
nb_status nb_hf_write(nb_model *m, const char *dir, const nb_hf_write_opts *o, nb_hf_write_result *r,
                      nb_ctx *ctx);

/* Open src and nb_hf_write it. */
nb_status nb_hf_write_path(const char *src, const char *dir, const nb_hf_write_opts *o, nb_hf_write_result *r,
                           nb_ctx *ctx);

/* Decoder-block Linear weights (blk.N.attn_{q,k,v,output}.weight,
 * blk.N.ffn_{gate,up,down}.weight, the shared experts'
 * blk.N.ffn_{gate,up,down}_shexp.weight): the tensors quantized exports pack.
 * Stacked experts (blk.N.ffn_*_exps.weight) are packed too, one Linear per
 * expert; routers (ffn_gate_inp*) stay in float and are listed in
 * quantization_config's modules_to_not_convert (llm_int8_skip_modules for
 * bitsandbytes, with lm_head). */
bool nb_hf_is_linear(const char *gguf_name);

#endif
