/* quant/hf_pack.h — the packed layouts of quantized Hugging Face checkpoints:
 * bitsandbytes NF4 (with double quantization), GPTQ and AWQ (GEMM), both
 * directions. Exporters (formats/hf_write.c) pack; importers unpack.
 *
 * Shapes follow the checkpoints (PyTorch order), with a Linear layer of
 * out_features N and in_features K (nibble's rows = N, row length = K).
 *
 * bitsandbytes NF4 (transformers' save_pretrained of a load_in_4bit model,
 * bnb QuantState.as_dict(packed=True)); for a weight "W.weight":
 *   W.weight                                  U8  [(N*K+1)/2, 1]  packed codes (flat, row-major;
 *                                                                 element 2i in the HIGH nibble)
 *   W.weight.absmax                           U8  [n_blocks]      double quant: 8-bit absmax codes
 *                                             F32 [n_blocks]      otherwise: the absmax values
 *   W.weight.quant_map                        F32 [16]            the NF4 code values
 *   W.weight.nested_absmax                    F32 [n_nested]      double quant only
 *   W.weight.nested_quant_map                 F32 [256]           double quant only (signed dynamic map)
 *   W.weight.quant_state.bitsandbytes__nf4    U8  [len]           UTF-8 JSON as Python's json.dumps
 *                                                                 writes it: {"quant_type": "nf4",
 *     "blocksize": 64, "dtype": "bfloat16", "shape": [N, K], and with double quant
 *     "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": <float>}
 * The blocks are bnb's flat blocks (quant/nf4.h nb_nf4_state holds exactly
 * these arrays).
 *
 * GPTQ (AutoGPTQ / transformers / vLLM, checkpoint_format "gptq" = v1, "gptq_v2" = v2):
 *   W.qweight  I32 [K*bits/32, N]  for output n, input k's code at bit k*bits of the
 *                                  little-endian concatenation of column n's words
 *                                  (word k/(32/bits), bits (k % (32/bits))*bits when bits
 *                                  divides 32; 3-bit codes straddle words)
 *   W.qzeros   I32 [n_groups, N*bits/32]  output n's zero packed the same way along N;
 *                                  v1 stores zero - 1, v2 the zero
 *   W.scales   F16 [n_groups, N]
 *   W.g_idx    I32 [K]            group of input k (k / G without act-order; any
 *                                 permutation-derived map with desc_act)
 *   value(n, k) = scales[g][n] * (q(n, k) - zero(g, n)), g = g_idx[k], computed in
 *   fp16 by the kernels (fp32 here: the product of an fp16 scale and a small
 *   integer is exact in fp32, so rounding it to fp16 gives the kernel's value).
 *
 * AWQ GEMM (AutoAWQ WQLinear_GEMM, transformers "awq" version "gemm"), 4 bits:
 *   W.qweight  I32 [K, N/8]        output 8c + order[i] in bits 4i..4i+3,
 *                                  order = {0, 2, 4, 6, 1, 3, 5, 7}
 *   W.qzeros   I32 [K/G, N/8]      same interleave; zeros stored as is
 *   W.scales   F16 [K/G, N]
 *   value(n, k) = scales[k/G][n] * (q - zero)
 *
 * The exact block-level conversions between nibble's INT4 types and GPTQ/AWQ
 * (lossless both ways, no act-order) are in quant/int4.h; the functions here
 * add the general forms an importer meets (any bits, act-order g_idx) and the
 * bitsandbytes state.
 */
#ifndef NB_QUANT_HF_PACK_H
#define NB_QUANT_HF_PACK_H

#include "core/ctx.h"
#include "quant/int4.h"
#include "quant/nf4.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- bitsandbytes NF4 --------------------------------------------------------------- */

/* Suffixes of the tensors of one bnb 4-bit weight, appended to "W.weight". */
#define NB_BNB_SUFFIX_ABSMAX ".absmax"
#define NB_BNB_SUFFIX_QUANT_MAP ".quant_map"
#define NB_BNB_SUFFIX_NESTED_ABSMAX ".nested_absmax"
#define NB_BNB_SUFFIX_NESTED_QUANT_MAP ".nested_quant_map"
#define NB_BNB_SUFFIX_QUANT_STATE ".quant_state.bitsandbytes__nf4"

/* The non-tensor part of a bnb QuantState (the quant_state JSON). */
typedef struct nb_bnb_quant_state {
    char quant_type[8];        /* "nf4" ("fp4" parses, nibble does not import it) */
    uint32_t blocksize;
    char dtype[16];            /* torch dtype of the original weight: "bfloat16", "float16", "float32" */
    uint32_t n_dims;           /* 1..4 */
    int64_t shape[4];          /* PyTorch order ([N, K] for a Linear weight) */
    bool nested;               /* double quantization present */
    uint32_t nested_blocksize; /* 256 */
    char nested_dtype[16];     /* "float32" */
    double nested_offset;      /* the fp32 offset as Python prints it */
} nb_bnb_quant_state;

/* Render the quant_state JSON for state s of a weight with PyTorch shape
 * `shape` (n_dims entries) and dtype name `dtype`: malloc'd, NUL-terminated,
 * byte for byte what bnb's pack_dict_to_tensor stores (json.dumps with its
 * default separators; floats as Python's repr). NULL on allocation failure. */
char *nb_bnb_quant_state_render(const nb_nf4_state *s, const char *dtype, const int64_t *shape, uint32_t n_dims);

/* Parse the quant_state bytes (need not be NUL-terminated). `what` names the
 * tensor in messages. Unknown keys are ignored; a missing or mistyped key,
 * a blocksize that is not a power of two in [32, 4096] or a shape with a
 * negative / too large dimension -> NB_ERR_FORMAT naming `what` and the key. */
nb_status nb_bnb_quant_state_parse(const void *json, size_t len, const char *what, nb_bnb_quant_state *out,
                                   nb_ctx *ctx);

/* The arrays of one bnb weight as read from a checkpoint (borrowed). Sizes
 * are element counts, checked by nb_bnb_nf4_state_load. */
typedef struct nb_bnb_nf4_tensors {
    const uint8_t *packed;    uint64_t n_packed;  /* "W.weight" bytes */
    const void *absmax;       uint64_t n_absmax;  /* u8 codes (nested) or f32 values */
    const float *quant_map;   uint64_t n_quant_map;         /* 16; may be NULL (bnb ignores it) */
    const float *nested_absmax; uint64_t n_nested_absmax;   /* nested only */
    const float *nested_quant_map; uint64_t n_nested_quant_map; /* nested only: 256 */
} nb_bnb_nf4_tensors;

/* Build an owned nb_nf4_state (quant/nf4.h; free with nb_nf4_state_free) from
 * a parsed quant_state and its tensors, checking every size against the
 * shape: NB_ERR_FORMAT naming `what` and the tensor on a mismatch,
 * NB_ERR_UNSUPPORTED for a quant_type other than nf4. The state then
 * dequantizes with nb_nf4_dequantize_tensor exactly as bnb does. */
nb_status nb_bnb_nf4_state_load(const nb_bnb_quant_state *qs, const nb_bnb_nf4_tensors *t, const char *what,
                                nb_nf4_state *out, nb_ctx *ctx);

/* bitsandbytes' FP4 code values (functional.get_4bit_type("fp4"); code 8 is
 * +0 there, -0 in the CUDA kernel's dDequantizeFP4Tree: the same number). */
extern const float nb_bnb_fp4_code[16];

/* Dequantize a bnb FP4 weight held in s (s->code unused: FP4's values are
 * nb_bnb_fp4_code) to n floats, as bitsandbytes does: code * absmax of the
 * element's block, high nibble first as for NF4. */
void nb_bnb_fp4_dequantize(const nb_nf4_state *s, float *dst);

/* The bnb state (blocksize 64; nested 256 for NB_TYPE_NF4_DQ) holding exactly
 * n elements stored as nibble NF4 (type NB_TYPE_NF4) or NF4_DQ blocks, back to
 * back in row-major order: lossless, the state dequantizes to the blocks'
 * values bit for bit. n must be whole blocks (64 / 16384: NB_ERR_INVALID);
 * NF4_DQ super-blocks must share one offset, as bnb's one per tensor
 * (NB_ERR_UNSUPPORTED naming `what`). *out owns new arrays. */
nb_status nb_bnb_nf4_state_from_blocks(nb_type type, const void *blocks, uint64_t n, nb_nf4_state *out,
                                       const char *what, nb_ctx *ctx);

/* ---- GPTQ ----------------------------------------------------------------------------- */

/* Everything a GPTQ tensor set needs besides its arrays. */
typedef struct nb_gptq_layout {
    uint32_t bits;   /* 2, 3, 4 or 8 */
    uint64_t n_out;  /* N */
    uint64_t k_in;   /* K */
    uint64_t n_groups; /* rows of qzeros / scales (ceil(K / G), or 1 for group_size -1) */
    uint64_t group;  /* G: without g_idx input k is in group k / G; 0: k * n_groups / K */
    bool v1;         /* checkpoint_format "gptq": qzeros hold zero - 1 */
} nb_gptq_layout;

/* Check a GPTQ layout (bits; K and N whole words: multiples of 32/bits, of
 * 32 for 3 bits; n_groups >= 1) and, when g_idx is given, that every entry
 * is in [0, n_groups). `what` names the layer. NB_ERR_UNSUPPORTED for bits,
 * NB_ERR_FORMAT otherwise. */
nb_status nb_gptq_check(const nb_gptq_layout *l, const int32_t *g_idx, const char *what, nb_ctx *ctx);

/* Code k of a dense little-endian stream of `bits`-bit codes (1..8) held in
 * the 32-bit words w[0], w[stride], w[2 * stride], ... (GPTQ qweight columns
 * and qzeros rows, compressed-tensors weight_packed rows and zero points). */
uint32_t nb_pack_bits_get(const int32_t *w, size_t stride, uint64_t k, uint32_t bits);

/* Zero point of output n in group g of a GPTQ qzeros tensor (v1: stored + 1). */
int nb_gptq_zero(const nb_gptq_layout *l, const int32_t *qzeros, uint64_t g, uint64_t n);

/* Dequantize GPTQ tensors (src->g_idx may be NULL: see l->group) to
 * dst[N][K] floats (nibble's row order: row n = output n). Checks as
 * nb_gptq_check. The value of each element is exact (see above). */
nb_status nb_gptq_unpack_f32(const nb_gptq_layout *l, const nb_gptq_tensors *src, float *dst, const char *what,
                             nb_ctx *ctx);

/* Byte sizes of the four GPTQ tensors of a 4-bit layer with group G (K % G == 0). */
typedef struct nb_gptq_sizes {
    uint64_t qweight, qzeros, scales, g_idx;
} nb_gptq_sizes;
nb_gptq_sizes nb_gptq_sizes_of(uint64_t n_out, uint64_t k_in, uint32_t group);

/* ---- AWQ (GEMM) ------------------------------------------------------------------------- */

/* Dequantize AWQ GEMM tensors (4 bits, group G) to dst[N][K] floats.
 * K % G == 0 and N % 8 == 0 (NB_ERR_FORMAT naming `what` otherwise). */
nb_status nb_awq_unpack_f32(const nb_awq_tensors *src, uint64_t n_out, uint64_t k_in, uint32_t group, float *dst,
                            const char *what, nb_ctx *ctx);

#endif
