/* core/types.h — the element-type table.
 *
 * Every element type nibble knows is described once here: its name, its id in
 * GGUF files (ggml's id for ggml types; nibble's own ids, far above ggml's
 * range, for types ggml lacks), its safetensors dtype, the number of elements
 * per block and the bytes per block, the conversion hooks (dequantize,
 * quantize, read as f32), the INT4 group/asymmetry and GPTQ's grid. Every
 * stage asks this table; nothing else switches on types.
 *
 * nb_type values 0..NB_GGML_TYPE_COUNT-1 are exactly ggml's `enum ggml_type`
 * (gaps are ids ggml removed; their rows have name == NULL). Types after that
 * are nibble-internal enumerators; their on-disk GGUF id is `gguf_id`.
 * On-disk ids are append-only: never renumber.
 */
#ifndef NB_CORE_TYPES_H
#define NB_CORE_TYPES_H

#include "core/ctx.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum nb_type {
    /* ggml ids (ggml.h `enum ggml_type`) */
    NB_TYPE_F32 = 0,
    NB_TYPE_F16 = 1,
    NB_TYPE_Q4_0 = 2,
    NB_TYPE_Q4_1 = 3,
    /* 4, 5: removed (Q4_2, Q4_3) */
    NB_TYPE_Q5_0 = 6,
    NB_TYPE_Q5_1 = 7,
    NB_TYPE_Q8_0 = 8,
    NB_TYPE_Q8_1 = 9,
    NB_TYPE_Q2_K = 10,
    NB_TYPE_Q3_K = 11,
    NB_TYPE_Q4_K = 12,
    NB_TYPE_Q5_K = 13,
    NB_TYPE_Q6_K = 14,
    NB_TYPE_Q8_K = 15,
    NB_TYPE_IQ2_XXS = 16,
    NB_TYPE_IQ2_XS = 17,
    NB_TYPE_IQ3_XXS = 18,
    NB_TYPE_IQ1_S = 19,
    NB_TYPE_IQ4_NL = 20,
    NB_TYPE_IQ3_S = 21,
    NB_TYPE_IQ2_S = 22,
    NB_TYPE_IQ4_XS = 23,
    NB_TYPE_I8 = 24,
    NB_TYPE_I16 = 25,
    NB_TYPE_I32 = 26,
    NB_TYPE_I64 = 27,
    NB_TYPE_F64 = 28,
    NB_TYPE_IQ1_M = 29,
    NB_TYPE_BF16 = 30,
    /* 31..33: removed (Q4_0_4_4, Q4_0_4_8, Q4_0_8_8) */
    NB_TYPE_TQ1_0 = 34,
    NB_TYPE_TQ2_0 = 35,
    /* 36..38: removed (IQ4_NL_4_4, IQ4_NL_4_8, IQ4_NL_8_8) */
    NB_TYPE_MXFP4 = 39,
    NB_TYPE_NVFP4 = 40,
    NB_TYPE_Q1_0 = 41,
    NB_GGML_TYPE_COUNT = 42,

    /* element types safetensors has and ggml lacks (no GGUF id) */
    NB_TYPE_BOOL = 48,
    NB_TYPE_U8,
    NB_TYPE_U16,
    NB_TYPE_U32,
    NB_TYPE_U64,
    NB_TYPE_F8_E4M3,
    NB_TYPE_F8_E5M2,

    /* nibble's own packed types (GGUF ids NB_GGUF_ID_BASE + k, see docs/formats.md) */
    NB_TYPE_NF4 = 64,       /* bitsandbytes NF4, blocksize 64, fp32 absmax per block */
    NB_TYPE_NF4_DQ,         /* NF4 with double-quantized absmax */
    NB_TYPE_INT4_SYM_G32,   /* group-wise INT4, symmetric, fp16 scale */
    NB_TYPE_INT4_SYM_G64,
    NB_TYPE_INT4_SYM_G128,
    NB_TYPE_INT4_ASYM_G32,  /* group-wise INT4 with zero point */
    NB_TYPE_INT4_ASYM_G64,
    NB_TYPE_INT4_ASYM_G128,

    NB_TYPE_COUNT = 80
} nb_type;

/* First GGUF type id nibble uses for its own types: far above ggml's range so
 * that a future ggml type can never collide with one of ours. */
#define NB_GGUF_ID_BASE 0x4E420000u /* "NB" << 16 */

/* Dequantize n elements (n a multiple of block_size) from packed src. */
typedef void (*nb_to_float_fn)(const void *src, float *dst, int64_t n);
/* Quantize nrows rows of n_per_row elements (n_per_row a multiple of
 * block_size). `imp` is an optional per-column importance weight (length
 * n_per_row, NULL for plain rounding). Returns bytes written. */
typedef size_t (*nb_quantize_fn)(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                                 const float *imp);

/* Write code `level` of element p (0 <= p < block_size) into one packed
 * block, leaving every other code and the scales as they are. Levels are the
 * stored codes in order (0 .. grid_levels-1); GPTQ reads the grid back by
 * dequantizing. */
typedef void (*nb_set_code_fn)(void *block, int p, int level);

typedef struct nb_type_traits {
    const char *name;        /* ggml's spelling where one exists ("q4_K", "f16"); NULL: unused id */
    int64_t gguf_id;         /* id written in GGUF tensor infos; -1: cannot be stored in GGUF */
    const char *st_dtype;    /* safetensors dtype ("F16", "BF16", ...); NULL: none */
    uint32_t block_size;     /* elements per block */
    uint32_t type_size;      /* bytes per block */
    bool is_quantized;       /* block-packed with scales */
    bool is_float;           /* plain floating point element type */
    bool ggml_loadable;      /* llama.cpp can load tensors of this type */
    /* Dequantize for computing: set for the float and packed types the
     * pipeline converts, quantizes from and runs; NULL for integer, bool and
     * FP8 tensors, whose bytes every stage copies as they are. */
    nb_to_float_fn to_float;
    nb_quantize_fn quantize;       /* NULL: cannot quantize to this type */
    /* Elements as f32 for reading (nb_model_read_f32): to_float where set,
     * and a value conversion for the integer, bool and FP8 types too
     * (integers above 2^24 round). NULL: no conversion (unknown blocks). */
    nb_to_float_fn to_f32;
    /* Group-wise INT4 (quant/int4.h): elements per scale (= block_size) and
     * whether a zero point is stored; group 0: not an INT4 type. */
    uint32_t group;
    bool asym;
    /* GPTQ's grid (calib/gptq.h): codes per element, elements per sub-block
     * sharing one grid, and the hook that writes a code. set_code NULL: GPTQ
     * cannot target the type. */
    uint32_t grid_levels;
    uint32_t grid_sub;
    nb_set_code_fn set_code;
} nb_type_traits;

/* Row for `t`, or NULL when t is not a valid type. */
const nb_type_traits *nb_type_get(nb_type t);
/* Type's name or "?" */
const char *nb_type_name(nb_type t);
/* Case-insensitive lookup by name ("Q4_K", "q4_k", "f16", "nf4"); false if unknown. */
bool nb_type_from_name(const char *name, nb_type *out);
/* Map a GGUF on-disk id to a type; false if unknown. */
bool nb_type_from_gguf_id(uint64_t id, nb_type *out);
/* Map a safetensors dtype string to a type; false if unknown. */
bool nb_type_from_st_dtype(const char *dtype, nb_type *out);

/* The group-wise INT4 type with this asymmetry and group size (32, 64,
 * 128), or NB_TYPE_COUNT when there is none. */
nb_type nb_type_int4_find(bool asym, int group);

/* Bytes for `n` elements of `t` in one row. Fails with NB_ERR_RANGE if n is
 * not a multiple of the block size or on overflow; `what` names the tensor
 * for the message. */
nb_status nb_type_row_bytes(nb_type t, uint64_t n, uint64_t *out, nb_ctx *ctx, const char *what);
/* Bits per weight of a type (type_size * 8 / block_size). */
double nb_type_bpw(nb_type t);

#endif
