/* quant/nf4.h — bitsandbytes NF4, bit-exact, with optional double quantization.
 *
 * Two views of the same numbers:
 *
 * 1. The flat-tensor API (nb_nf4_quantize_tensor / nb_nf4_dequantize_tensor)
 *    has bitsandbytes' own semantics: the tensor is flattened in row-major
 *    order and cut into blocks of `blocksize` elements (blocks run across row
 *    boundaries; the last block may be partial). It produces exactly what
 *    `bitsandbytes.functional.quantize_4bit(A, blocksize, quant_type="nf4",
 *    compress_statistics=dq)` produces with its CUDA kernel, and dequantizes
 *    exactly as `dequantize_4bit` does. Exporters (bnb safetensors) and QLoRA
 *    merging use it.
 *
 * 2. The type-table hooks (NB_TYPE_NF4, NB_TYPE_NF4_DQ) store the same data as
 *    self-contained GGUF blocks (layouts below and in docs/formats.md). For a
 *    row length that is a multiple of the block size, the bytes decode to
 *    values identical to the flat API's, so GGUF <-> bnb safetensors is
 *    lossless.
 *
 * bitsandbytes semantics implemented here (read from csrc/kernels.cu
 * kQuantizeBlockwise / dQuantizeNF4 / dQuantize<0>, bitsandbytes/functional.py
 * quantize_4bit / dequantize_4bit / create_dynamic_map):
 *   - absmax per block = max |x| in fp32 (padding never counts);
 *   - x is normalised by MULTIPLYING with the fp32 reciprocal 1.0f/absmax
 *     (not by dividing), then mapped with dQuantizeNF4's comparison tree:
 *     15 thresholds (midpoints of adjacent codes, as float literals), each
 *     test `x > t`, so a value exactly on a threshold takes the lower code and
 *     NaN takes code 0;
 *   - element 2i goes to the high nibble of byte i, element 2i+1 to the low
 *     nibble; an odd element count leaves a last low nibble that encodes 0.0
 *     scaled by the last block (code 7, or code 0 if that block's absmax is 0);
 *   - an all-zero block has absmax 0: 1/0 = inf, 0*inf = NaN -> code 0 (-1.0),
 *     and dequantizes to -1.0 * 0 = -0.0 (never NaN);
 *   - dequantization: code[nibble] * absmax in fp32;
 *   - double quantization: offset = mean(absmax) (fp32; computed here in double
 *     and rounded once — torch's fp32 reduction order is unspecified, so a
 *     last-ulp difference against a given torch build is possible and is the
 *     only non-determinism in bnb's own output), then (absmax - offset) in fp32
 *     is quantized blockwise (256 values per block) with the signed dynamic
 *     8-bit map: absmax2 = max |.| per block, normalised by the reciprocal, code
 *     chosen by dQuantize<0> (binary search of 7 strict `>` steps, then
 *     nearest of the two neighbours by comparing with the fp32 midpoint); the
 *     dequantized absmax is fl(fl(map[q] * absmax2) + offset).
 */
#ifndef NB_QUANT_NF4_H
#define NB_QUANT_NF4_H

#include "core/ctx.h"

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NB_NF4_BLOCK 64          /* elements per NF4 block in GGUF */
#define NB_NF4_DQ_NESTED 256     /* absmax values per second-level block (bnb's fixed 256) */
#define NB_NF4_DQ_SUPER (NB_NF4_BLOCK * NB_NF4_DQ_NESTED) /* 16384 elements per NF4_DQ block */

/* NB_TYPE_NF4: 64 elements. d = fp32 absmax (or the importance-chosen scale);
 * qs[i] = code(e[2i]) << 4 | code(e[2i+1]); value = nb_nf4_code[code] * d. */
typedef struct {
    float d;
    uint8_t qs[NB_NF4_BLOCK / 2];
} nb_block_nf4;
static_assert(sizeof(nb_block_nf4) == 36, "nb_block_nf4 must be 36 bytes");

/* NB_TYPE_NF4_DQ: 16384 elements = 256 NF4 blocks sharing one second-level
 * block, i.e. exactly one of bnb's nested blocks when the tensor is quantized
 * from element 0. absmax of sub-block j = fl(fl(map[qabsmax[j]] * absmax2) +
 * offset); offset is the tensor-wide mean of all absmax values (the same in
 * every super-block of a tensor quantized in one call); qs as in nb_block_nf4,
 * sub-block j's bytes at qs[32*j .. 32*j+31]. */
typedef struct {
    float absmax2;
    float offset;
    uint8_t qabsmax[NB_NF4_DQ_NESTED];
    uint8_t qs[NB_NF4_DQ_SUPER / 2];
} nb_block_nf4_dq;
static_assert(sizeof(nb_block_nf4_dq) == 8456, "nb_block_nf4_dq must be 8456 bytes");

/* The 16 NF4 code values (bitsandbytes get_4bit_type("nf4")), ascending. */
extern const float nb_nf4_code[16];

/* Code index of a normalised value, bitsandbytes' dQuantizeNF4 tree. */
uint8_t nb_nf4_index(float x);

/* bitsandbytes create_dynamic_map(signed=True) (the nested quant_map), derived
 * from its generating formula with torch's fp32 linspace arithmetic (fused
 * multiply-add, as torch's vectorised CPU kernel computes it). 256 ascending
 * values, out[0] = -0.99296875, out[127] = 0, out[255] = 1. */
void nb_dynamic_map_signed(float out[256]);
/* Nearest index in a 256-entry ascending code as dQuantize<0> picks it. */
uint8_t nb_dynmap_index(const float code[256], float x);

/* Quantization state of one flat tensor, bnb's QuantState in plain arrays.
 * Arrays are owned by the state (nb_nf4_state_free). */
typedef struct nb_nf4_state {
    uint64_t n;                /* element count (prod of the original shape) */
    uint32_t blocksize;        /* elements per absmax block: power of two, 32..4096 */
    bool double_quant;         /* bnb compress_statistics / "nested" */
    uint64_t n_blocks;         /* ceil(n / blocksize) */
    uint8_t *packed;           /* (n + 1) / 2 bytes, bnb's `weight` (uint8 storage) */
    float *absmax;             /* [n_blocks] fp32; NULL when double_quant */
    uint8_t *qabsmax;          /* [n_blocks] u8 codes; NULL unless double_quant */
    uint32_t nested_blocksize; /* 256 (bnb's state2.blocksize) */
    uint64_t n_nested;         /* ceil(n_blocks / nested_blocksize) */
    float *absmax2;            /* [n_nested] fp32 (state2.absmax); NULL unless double_quant */
    float offset;              /* state.offset; 0 unless double_quant */
    float code[16];            /* quant_map (the NF4 values) */
    float nested_code[256];    /* nested_quant_map (state2.code), used by dequantization */
} nb_nf4_state;

/* Release the arrays; accepts NULL and a zeroed state; leaves *s zeroed. */
void nb_nf4_state_free(nb_nf4_state *s);

/* Quantize n floats (row-major flattening of the tensor) to NF4 with bnb's
 * flat semantics. blocksize: power of two in [32, 4096] (bnb's default 64).
 * double_quant: compress the absmax values as bnb's compress_statistics=True.
 * On success *out owns new arrays (free with nb_nf4_state_free); on failure
 * *out is zeroed. Errors: NB_ERR_INVALID (bad blocksize, n == 0, NULL),
 * NB_ERR_RANGE (a NaN/Inf element; the message names its index),
 * NB_ERR_NOMEM. */
nb_status nb_nf4_quantize_tensor(const float *x, uint64_t n, uint32_t blocksize, bool double_quant,
                                 nb_nf4_state *out, nb_ctx *ctx);

/* Dequantize a state (possibly read from a file) into y[0..n-1], exactly as
 * bnb's dequantize_4bit does in fp32 (NF4 values come from the fixed table, as
 * bnb's kernel ignores quant_map; the nested map comes from the state).
 * Validates the state's sizes and arrays first: NB_ERR_FORMAT on an
 * inconsistent state. */
nb_status nb_nf4_dequantize_tensor(const nb_nf4_state *s, float *y, nb_ctx *ctx);

/* Effective fp32 absmax of block b of a valid state (DQ undone). */
float nb_nf4_state_absmax(const nb_nf4_state *s, uint64_t b);

/* Type-table hooks (core/types.h signatures). Quantizers: n_per_row a
 * multiple of the block size (64 / 16384), imp = optional per-column
 * importance (length n_per_row): NULL gives bnb-exact bytes; non-NULL picks
 * each block's scale in [0.7, 1.0] * absmax (stored in the same field) to
 * minimise sum(imp * (x - x')^2). NF4_DQ computes the offset over all
 * nrows * n_per_row values, so call it once per tensor for bnb-identical
 * output (chunked calls still decode correctly: every super-block carries its
 * offset). Non-finite input never crashes (NaN elements get code 0). */
/* GPTQ set-code hook (core/types.h nb_set_code_fn) for NB_TYPE_NF4. */
void nb_set_code_nf4(void *block, int p, int level);
void nb_dequant_nf4(const void *src, float *dst, int64_t n);
size_t nb_quantize_nf4(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
void nb_dequant_nf4_dq(const void *src, float *dst, int64_t n);
size_t nb_quantize_nf4_dq(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                          const float *imp);

#endif
