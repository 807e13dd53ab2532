/* quant/int4.h — group-wise INT4 (symmetric and with zero point), GPTQ/AWQ-convertible.
 *
 * A row of n elements is cut into groups of G = 32, 64 or 128 consecutive
 * elements (G divides n); each group is one block with an fp16 scale d and,
 * for the asymmetric types, a zero point z in 0..15. Codes q are unsigned
 * nibbles; element 2i of a group sits in the LOW nibble of qs[i] and element
 * 2i+1 in the high nibble, so 4 consecutive bytes read as a little-endian
 * int32 are exactly one GPTQ qweight word (8 consecutive input features).
 *
 *   symmetric:  value = d * (q - 8)        (GPTQ sym: zero point 8)
 *   asymmetric: value = d * (q - z)
 *
 * The product is exact in fp32 (11-bit scale times a 5-bit integer), so
 * rounding it to fp16 gives exactly what GPTQ's and AWQ's fp16 kernels compute
 * from the converted tensors: conversion to GPTQ (v1 or v2 zeros) and to AWQ
 * is lossless in both directions (nb_int4_to_gptq / nb_gptq_to_int4 and the
 * AWQ pair below).
 *
 * Quantization follows GPTQ's Quantizer.find_params (RTN):
 *   symmetric:  s = 2 * absmax / 15, q = clamp(round(x / s) + 8, 0, 15)
 *               (unlike GPTQ, a group with no negative value still uses
 *               -absmax as its minimum: GPTQ would halve its range);
 *   asymmetric: xmin = min(min x, 0), xmax = max(max x, 0), s = (xmax - xmin) / 15,
 *               z = round(-xmin / s), q = clamp(round(x / s) + z, 0, 15).
 *               One deliberate difference: z = 0 (a group with no negative
 *               value) becomes z = 1 with s = xmax / 14, because the GPTQ v1
 *               checkpoint format stores z - 1 in 4 bits and cannot hold z = 0.
 * round() is round-half-to-even (torch.round); x / s divides by the scale
 * already rounded to fp16, so stored codes and stored scale agree. A group
 * of zeros stores d = 0. With importance weights (imp != NULL) the range is
 * shrunk by p in {1.00, 0.99, ..., 0.70} (GPTQ's mse grid) to minimise
 * sum(imp * (x - x')^2); the format is unchanged.
 *
 * Per-channel quantization (GPTQ group_size = -1) is not a type: it is G = row
 * length. Export it from G128 only when every group of a row agrees, or
 * quantize with the largest group that divides the row.
 */
#ifndef NB_QUANT_INT4_H
#define NB_QUANT_INT4_H

#include "core/ctx.h"
#include "core/types.h"

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct { uint16_t d; uint8_t qs[16]; } nb_block_int4_sym_g32;
typedef struct { uint16_t d; uint8_t qs[32]; } nb_block_int4_sym_g64;
typedef struct { uint16_t d; uint8_t qs[64]; } nb_block_int4_sym_g128;
/* z: zero point 0..15 (1..15 as written by nibble's quantizer); pad: 0 */
typedef struct { uint16_t d; uint8_t z, pad; uint8_t qs[16]; } nb_block_int4_asym_g32;
typedef struct { uint16_t d; uint8_t z, pad; uint8_t qs[32]; } nb_block_int4_asym_g64;
typedef struct { uint16_t d; uint8_t z, pad; uint8_t qs[64]; } nb_block_int4_asym_g128;
static_assert(sizeof(nb_block_int4_sym_g32) == 18, "int4 sym g32 block");
static_assert(sizeof(nb_block_int4_sym_g64) == 34, "int4 sym g64 block");
static_assert(sizeof(nb_block_int4_sym_g128) == 66, "int4 sym g128 block");
static_assert(sizeof(nb_block_int4_asym_g32) == 20, "int4 asym g32 block");
static_assert(sizeof(nb_block_int4_asym_g64) == 36, "int4 asym g64 block");
static_assert(sizeof(nb_block_int4_asym_g128) == 68, "int4 asym g128 block");

/* Type-table hooks (core/types.h signatures; n / n_per_row multiples of G). */
void nb_dequant_int4_sym_g32(const void *src, float *dst, int64_t n);
void nb_dequant_int4_sym_g64(const void *src, float *dst, int64_t n);
void nb_dequant_int4_sym_g128(const void *src, float *dst, int64_t n);
void nb_dequant_int4_asym_g32(const void *src, float *dst, int64_t n);
void nb_dequant_int4_asym_g64(const void *src, float *dst, int64_t n);
void nb_dequant_int4_asym_g128(const void *src, float *dst, int64_t n);
size_t nb_quantize_int4_sym_g32(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_int4_sym_g64(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_int4_sym_g128(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_int4_asym_g32(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_int4_asym_g64(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_int4_asym_g128(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);

/* GPTQ set-code hooks (core/types.h nb_set_code_fn), any group size. */
void nb_set_code_int4_sym(void *block, int p, int level);
void nb_set_code_int4_asym(void *block, int p, int level);

/* Group size and symmetry of an INT4 type (the type table's `group` and
 * `asym` columns); false if t is not one. */
bool nb_int4_params(nb_type t, uint32_t *group, bool *asym);

/* GPTQ tensors of one Linear layer with in_features K (= nibble's row length,
 * ggml ne[0]) and out_features N (= nibble's row count): caller-allocated.
 *   qweight [K/8][N]    int32: bits 4j..4j+3 of qweight[r][n] = code of input 8r+j, output n
 *   qzeros  [K/G][N/8]  int32: bits 4j..4j+3 of qzeros[g][c] = zero of output 8c+j
 *                              (v1: z - 1, the "gptq" checkpoint_format of AutoGPTQ /
 *                              transformers; v2: z, GPTQModel's "gptq_v2")
 *   scales  [K/G][N]    fp16 bits
 *   g_idx   [K]         int32 k / G (no act-order); may be NULL */
typedef struct nb_gptq_tensors {
    int32_t *qweight;
    int32_t *qzeros;
    uint16_t *scales;
    int32_t *g_idx;
} nb_gptq_tensors;

/* src: N rows of K elements of INT4 type t. Needs K % G == 0, K % 8 == 0 and
 * N % 8 == 0 (NB_ERR_RANGE otherwise). Lossless: nb_gptq_to_int4 gives the
 * same blocks back and GPTQ's fp16 dequantization equals fp16(nibble's). */
nb_status nb_int4_to_gptq(nb_type t, const void *src, uint64_t n_out, uint64_t k_in, bool v1,
                          const nb_gptq_tensors *dst, nb_ctx *ctx);
/* Inverse (also an importer for GPTQ checkpoints without act-order). g_idx,
 * if given, must be k / G (NB_ERR_UNSUPPORTED otherwise); a symmetric type
 * needs every zero point to be 8, and a v1 stored zero of 15 (meaning 16) is
 * not representable (NB_ERR_UNSUPPORTED naming the group and column).
 * dst receives N rows of K elements of type t. */
nb_status nb_gptq_to_int4(nb_type t, const nb_gptq_tensors *src, uint64_t n_out, uint64_t k_in, bool v1,
                          void *dst, nb_ctx *ctx);

/* AWQ (AutoAWQ GEMM layout): qweight [K][N/8] and qzeros [K/G][N/8] int32 with
 * output column 8c + order[i] in bits 4i..4i+3, order = {0,2,4,6,1,3,5,7};
 * zeros stored as is; scales [K/G][N] fp16. Same conditions as GPTQ. */
typedef struct nb_awq_tensors {
    int32_t *qweight;
    int32_t *qzeros;
    uint16_t *scales;
} nb_awq_tensors;
nb_status nb_int4_to_awq(nb_type t, const void *src, uint64_t n_out, uint64_t k_in, const nb_awq_tensors *dst,
                         nb_ctx *ctx);
nb_status nb_awq_to_int4(nb_type t, const nb_awq_tensors *src, uint64_t n_out, uint64_t k_in, void *dst,
                         nb_ctx *ctx);

#endif
