/* quant/ggml_quants.h — ggml's block-quantized types: layouts, quantizers, dequantizers.
 *
 * Each type is a fixed-size block of `QK` elements stored as one packed struct
 * (little-endian, no padding; a static_assert pins every size to ggml's). A
 * row of n elements is n/QK blocks back to back. Half-precision fields are raw
 * IEEE binary16 bits (uint16_t), converted with core/fp.h (round to nearest
 * even, like ggml's GGML_FP32_TO_FP16).
 *
 * Quantizers (nb_quantize_*, signature nb_quantize_fn of core/types.h):
 *   - imp == NULL: bytes identical to what llama-quantize writes without an
 *     imatrix, i.e. ggml_quantize_chunk(type, ..., NULL). For the legacy and
 *     k-quant types that is quantize_row_<t>_ref; for IQ4_NL / IQ4_XS it is the
 *     search path with weights x^2 (ggml never uses their _ref there).
 *   - imp != NULL: imp is the per-column importance (imatrix entry, length
 *     n_per_row, shared by all rows), used exactly as ggml's quant_weights so
 *     the result is byte-identical to llama-quantize --imatrix. Q8_0, TQ1_0,
 *     TQ2_0, MXFP4 and Q8_K ignore it, as ggml does.
 *   - n_per_row must be a multiple of the block size (the caller checks; the
 *     functions only assert). Returns nrows * row bytes. Rows are independent,
 *     so callers may split rows across threads. Non-finite input gives
 *     unspecified bytes but never crashes or reads/writes out of bounds.
 * Dequantizers (nb_dequant_*, nb_to_float_fn): n a multiple of the block size;
 *   any byte pattern is accepted (a NaN/Inf half scale yields NaN/Inf floats).
 *
 * Bit-exactness relies on plain IEEE single-precision evaluation without
 * fused multiply-add contraction: the library is built with -std=c11 (GCC then
 * defaults to -ffp-contract=off) and the .c files turn contraction off for
 * clang. Never build them with -ffast-math.
 */
#ifndef NB_QUANT_GGML_QUANTS_H
#define NB_QUANT_GGML_QUANTS_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#define NB_QK4_0 32
#define NB_QK4_1 32
#define NB_QK5_0 32
#define NB_QK5_1 32
#define NB_QK8_0 32
#define NB_QK8_1 32
#define NB_QK_K 256
#define NB_QK4_NL 32
#define NB_QK_MXFP4 32
#define NB_K_SCALE_SIZE 12

/* d: scale; qs: 32 4-bit codes, element j in low nibble of qs[j], element
 * j+16 in the high nibble; value = (code - 8) * d */
typedef struct { uint16_t d; uint8_t qs[NB_QK4_0 / 2]; } nb_block_q4_0;
/* value = code * d + m */
typedef struct { uint16_t d, m; uint8_t qs[NB_QK4_1 / 2]; } nb_block_q4_1;
/* qh: bit j = 5th bit of element j (little-endian uint32); value = (code - 16) * d */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[NB_QK5_0 / 2]; } nb_block_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[NB_QK5_1 / 2]; } nb_block_q5_1;
typedef struct { uint16_t d; int8_t qs[NB_QK8_0]; } nb_block_q8_0;
/* s = d * sum(qs) */
typedef struct { uint16_t d, s; int8_t qs[NB_QK8_1]; } nb_block_q8_1;

/* Super-blocks of 256. Q2_K: 16 sub-blocks of 16, 4-bit scale + 4-bit min each. */
typedef struct {
    uint8_t scales[NB_QK_K / 16]; /* low nibble scale, high nibble min */
    uint8_t qs[NB_QK_K / 4];      /* 2-bit codes */
    uint16_t d, dmin;
} nb_block_q2_K;
/* Q3_K: 16 sub-blocks of 16, signed 6-bit scales packed in 12 bytes. */
typedef struct {
    uint8_t hmask[NB_QK_K / 8]; /* high bit of each 3-bit code */
    uint8_t qs[NB_QK_K / 4];    /* low 2 bits */
    uint8_t scales[12];
    uint16_t d;
} nb_block_q3_K;
/* Q4_K: 8 sub-blocks of 32, 6-bit scale + 6-bit min each, packed in 12 bytes. */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[NB_K_SCALE_SIZE];
    uint8_t qs[NB_QK_K / 2];
} nb_block_q4_K;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[NB_K_SCALE_SIZE];
    uint8_t qh[NB_QK_K / 8];
    uint8_t qs[NB_QK_K / 2];
} nb_block_q5_K;
/* Q6_K: 16 sub-blocks of 16, signed 8-bit scales; value = d * scale * (code - 32) */
typedef struct {
    uint8_t ql[NB_QK_K / 2];
    uint8_t qh[NB_QK_K / 4];
    int8_t scales[NB_QK_K / 16];
    uint16_t d;
} nb_block_q6_K;
/* Q8_K: intermediate type for dot products (f32 scale, per-16 sums). */
typedef struct {
    float d;
    int8_t qs[NB_QK_K];
    int16_t bsums[NB_QK_K / 16];
} nb_block_q8_K;

/* IQ4_NL: 32 codes into the 16-entry non-linear table nb_kvalues_iq4nl. */
typedef struct { uint16_t d; uint8_t qs[NB_QK4_NL / 2]; } nb_block_iq4_nl;
/* IQ4_XS: 8 sub-blocks of 32 with 6-bit scales (offset 32). */
typedef struct {
    uint16_t d;
    uint16_t scales_h;
    uint8_t scales_l[NB_QK_K / 64];
    uint8_t qs[NB_QK_K / 2];
} nb_block_iq4_xs;
/* TQ1_0: ternary, 5 trits per byte (base-3 fixed point) + 4 per byte in qh. */
typedef struct {
    uint8_t qs[(NB_QK_K - 4 * NB_QK_K / 64) / 5];
    uint8_t qh[NB_QK_K / 64];
    uint16_t d;
} nb_block_tq1_0;
/* TQ2_0: ternary, 2 bits per element (code - 1). */
typedef struct { uint8_t qs[NB_QK_K / 4]; uint16_t d; } nb_block_tq2_0;
/* MXFP4: E8M0 shared exponent + 32 E2M1 codes. */
typedef struct { uint8_t e; uint8_t qs[NB_QK_MXFP4 / 2]; } nb_block_mxfp4;

static_assert(sizeof(nb_block_q4_0) == 18, "q4_0 block");
static_assert(sizeof(nb_block_q4_1) == 20, "q4_1 block");
static_assert(sizeof(nb_block_q5_0) == 22, "q5_0 block");
static_assert(sizeof(nb_block_q5_1) == 24, "q5_1 block");
static_assert(sizeof(nb_block_q8_0) == 34, "q8_0 block");
static_assert(sizeof(nb_block_q8_1) == 36, "q8_1 block");
static_assert(sizeof(nb_block_q2_K) == 84, "q2_K block");
static_assert(sizeof(nb_block_q3_K) == 110, "q3_K block");
static_assert(sizeof(nb_block_q4_K) == 144, "q4_K block");
static_assert(sizeof(nb_block_q5_K) == 176, "q5_K block");
static_assert(sizeof(nb_block_q6_K) == 210, "q6_K block");
static_assert(sizeof(nb_block_q8_K) == 292, "q8_K block");
static_assert(sizeof(nb_block_iq4_nl) == 18, "iq4_nl block");
static_assert(sizeof(nb_block_iq4_xs) == 136, "iq4_xs block");
static_assert(sizeof(nb_block_tq1_0) == 54, "tq1_0 block");
static_assert(sizeof(nb_block_tq2_0) == 66, "tq2_0 block");
static_assert(sizeof(nb_block_mxfp4) == 17, "mxfp4 block");

/* The IQ4_NL / IQ4_XS code book (ggml's kvalues_iq4nl, part of the format). */
extern const int8_t nb_kvalues_iq4nl[16];
/* MXFP4's E2M1 values, doubled (the scale is halved to match). */
extern const int8_t nb_kvalues_mxfp4[16];

/* ---- dequantizers: void f(const void *src, float *dst, int64_t n) ---- */
void nb_dequant_q4_0(const void *src, float *dst, int64_t n);
void nb_dequant_q4_1(const void *src, float *dst, int64_t n);
void nb_dequant_q5_0(const void *src, float *dst, int64_t n);
void nb_dequant_q5_1(const void *src, float *dst, int64_t n);
void nb_dequant_q8_0(const void *src, float *dst, int64_t n);
void nb_dequant_q8_1(const void *src, float *dst, int64_t n);
void nb_dequant_q2_k(const void *src, float *dst, int64_t n);
void nb_dequant_q3_k(const void *src, float *dst, int64_t n);
void nb_dequant_q4_k(const void *src, float *dst, int64_t n);
void nb_dequant_q5_k(const void *src, float *dst, int64_t n);
void nb_dequant_q6_k(const void *src, float *dst, int64_t n);
void nb_dequant_q8_k(const void *src, float *dst, int64_t n);
void nb_dequant_iq4_nl(const void *src, float *dst, int64_t n);
void nb_dequant_iq4_xs(const void *src, float *dst, int64_t n);
void nb_dequant_tq1_0(const void *src, float *dst, int64_t n);
void nb_dequant_tq2_0(const void *src, float *dst, int64_t n);
void nb_dequant_mxfp4(const void *src, float *dst, int64_t n);

/* ---- quantizers: size_t f(src, dst, nrows, n_per_row, imp) ---- */
size_t nb_quantize_q4_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_q4_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_q5_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_q5_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_q8_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
/* Q8_1 (ggml's quantize_row_q8_1_ref; not a storage type in llama.cpp files). */
size_t nb_quantize_q8_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_q2_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_q3_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_q4_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_q5_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_q6_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_q8_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_iq4_nl(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_iq4_xs(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_tq1_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_tq2_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);
size_t nb_quantize_mxfp4(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp);

/* ---- GPTQ set-code hooks: void f(void *block, int p, int level) (core/types.h
 * nb_set_code_fn): write code `level` (0 .. levels-1, the code as stored;
 * Q8_0: level - 127) of element p of one block, leaving the rest untouched ---- */
void nb_set_code_q4_0(void *block, int p, int level);
void nb_set_code_q4_1(void *block, int p, int level);
void nb_set_code_q5_0(void *block, int p, int level);
void nb_set_code_q5_1(void *block, int p, int level);
void nb_set_code_q8_0(void *block, int p, int level);
void nb_set_code_q2_k(void *block, int p, int level);
void nb_set_code_q3_k(void *block, int p, int level);
void nb_set_code_q4_k(void *block, int p, int level);
void nb_set_code_q5_k(void *block, int p, int level);
void nb_set_code_q6_k(void *block, int p, int level);
void nb_set_code_iq4_nl(void *block, int p, int level);
void nb_set_code_iq4_xs(void *block, int p, int level);

#endif
