/* core/types.c — the element-type table (see core/types.h).
 *
 * Rows are indexed by nb_type. Quantizer hooks point into quant/; a NULL hook
 * means the operation is not available for that type. */
#include "core/types.h"

#include "core/checked.h"
#include "core/fp.h"
#include "quant/ggml_quants.h"
#include "quant/int4.h"
#include "quant/nf4.h"

#include <string.h>
#include <strings.h>

static void f32_to_float(const void *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * 4); }
static void f16_to_float(const void *src, float *dst, int64_t n) { nb_f16_to_f32_n(src, dst, (size_t)n); }
static void bf16_to_float(const void *src, float *dst, int64_t n) { nb_bf16_to_f32_n(src, dst, (size_t)n); }

static void f64_to_float(const void *src, float *dst, int64_t n) {
    const double *d = src;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)d[i];
}

/* Integer, bool and FP8 elements as f32 (nb_type_traits.to_f32). Elements
 * are read with memcpy: a safetensors tensor need not be aligned. */
#define NB_INT_TO_F32(fname, T)                                                                      \
    static void fname(const void *src, float *dst, int64_t n) {                                      \
        const unsigned char *p = src;                                                                \
        for (int64_t i = 0; i < n; i++) {                                                            \
            T v;                                                                                     \
            memcpy(&v, p + i * (int64_t)sizeof v, sizeof v);                                         \
            dst[i] = (float)v;                                                                       \
        }                                                                                            \
    }
NB_INT_TO_F32(i8_to_f32, int8_t)
NB_INT_TO_F32(i16_to_f32, int16_t)
NB_INT_TO_F32(i32_to_f32, int32_t)
NB_INT_TO_F32(i64_to_f32, int64_t)
NB_INT_TO_F32(u8_to_f32, uint8_t)
NB_INT_TO_F32(u16_to_f32, uint16_t)
NB_INT_TO_F32(u32_to_f32, uint32_t)
NB_INT_TO_F32(u64_to_f32, uint64_t)
#undef NB_INT_TO_F32

static void f8e4m3_to_f32(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = nb_f8e4m3_to_f32(p[i]);
}
static void f8e5m2_to_f32(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = nb_f8e5m2_to_f32(p[i]);
}

static size_t f32_quantize(const float *src, void *dst, int64_t nrows, int64_t n, const float *imp) {
    (void)imp;
    memcpy(dst, src, (size_t)(nrows * n) * 4);
    return (size_t)(nrows * n) * 4;
}
static size_t f16_quantize(const float *src, void *dst, int64_t nrows, int64_t n, const float *imp) {
    (void)imp;
    nb_f32_to_f16_n(src, dst, (size_t)(nrows * n));
    return (size_t)(nrows * n) * 2;
}
static size_t bf16_quantize(const float *src, void *dst, int64_t nrows, int64_t n, const float *imp) {
    (void)imp;
    nb_f32_to_bf16_n(src, dst, (size_t)(nrows * n));
    return (size_t)(nrows * n) * 2;
}

/* Row builders. Hooks point into quant/ (declared there; the table is the one
 * place that names them). */
#define ROW(nm, bs, ts, dq, qz, rd) .name = nm, .block_size = bs, .type_size = ts, .to_float = dq, .quantize = qz, .to_f32 = rd
/* ggml's block types */
#define Q(nm, id, bs, ts, dq, qz, ...) \
    [NB_TYPE_##id] = {ROW(nm, bs, ts, dq, qz, dq), .gguf_id = NB_TYPE_##id, .is_quantized = true, .ggml_loadable = true, __VA_ARGS__}
/* one element per block, ggml ids */
#define PLAIN(nm, id, st, ts, isf, dq, qz) \
    [NB_TYPE_##id] = {ROW(nm, 1, ts, dq, qz, dq), .gguf_id = NB_TYPE_##id, .st_dtype = st, .is_float = isf, .ggml_loadable = true}
/* integer types: copied as they are, readable as f32 */
#define INT(nm, id, st, ts, rd) \
    [NB_TYPE_##id] = {ROW(nm, 1, ts, NULL, NULL, rd), .gguf_id = NB_TYPE_##id, .st_dtype = st, .ggml_loadable = true}
/* safetensors-only element types (no GGUF id) */
#define STONLY(nm, id, st, ts, isf, rd) \
    [NB_TYPE_##id] = {ROW(nm, 1, ts, NULL, NULL, rd), .gguf_id = -1, .st_dtype = st, .is_float = isf}
/* nibble's own packed types: GGUF id NB_GGUF_ID_BASE + k */
#define OWN(nm, id, k, bs, ts, dq, qz, ...) \
    [NB_TYPE_##id] = {ROW(nm, bs, ts, dq, qz, dq), .gguf_id = (int64_t)NB_GGUF_ID_BASE + (k), .is_quantized = true, __VA_ARGS__}
/* GPTQ grid columns */
#define GRID(levels, sub, fn) .grid_levels = levels, .grid_sub = sub, .set_code = fn
/* group-wise INT4 columns (the group is the block size) */
#define INT4(g, a, fn) .group = g, .asym = a, GRID(16, g, fn)

static const nb_type_traits g_types[NB_TYPE_COUNT] = {
    PLAIN("f32", F32, "F32", 4, true, f32_to_float, f32_quantize),
    PLAIN("f16", F16, "F16", 2, true, f16_to_float, f16_quantize),
    PLAIN("bf16", BF16, "BF16", 2, true, bf16_to_float, bf16_quantize),
    PLAIN("f64", F64, "F64", 8, true, f64_to_float, NULL),
    INT("i8", I8, "I8", 1, i8_to_f32),
    INT("i16", I16, "I16", 2, i16_to_f32),
    INT("i32", I32, "I32", 4, i32_to_f32),
    INT("i64", I64, "I64", 8, i64_to_f32),
    Q("q4_0", Q4_0, 32, 18, nb_dequant_q4_0, nb_quantize_q4_0, GRID(16, 32, nb_set_code_q4_0)),
    Q("q4_1", Q4_1, 32, 20, nb_dequant_q4_1, nb_quantize_q4_1, GRID(16, 32, nb_set_code_q4_1)),
    Q("q5_0", Q5_0, 32, 22, nb_dequant_q5_0, nb_quantize_q5_0, GRID(32, 32, nb_set_code_q5_0)),
    Q("q5_1", Q5_1, 32, 24, nb_dequant_q5_1, nb_quantize_q5_1, GRID(32, 32, nb_set_code_q5_1)),
    Q("q8_0", Q8_0, 32, 34, nb_dequant_q8_0, nb_quantize_q8_0, GRID(255, 32, nb_set_code_q8_0)),
    Q("q8_1", Q8_1, 32, 36, nb_dequant_q8_1, NULL),
    Q("q2_K", Q2_K, 256, 84, nb_dequant_q2_k, nb_quantize_q2_k, GRID(4, 16, nb_set_code_q2_k)),
    Q("q3_K", Q3_K, 256, 110, nb_dequant_q3_k, nb_quantize_q3_k, GRID(8, 16, nb_set_code_q3_k)),
    Q("q4_K", Q4_K, 256, 144, nb_dequant_q4_k, nb_quantize_q4_k, GRID(16, 32, nb_set_code_q4_k)),
    Q("q5_K", Q5_K, 256, 176, nb_dequant_q5_k, nb_quantize_q5_k, GRID(32, 32, nb_set_code_q5_k)),
    Q("q6_K", Q6_K, 256, 210, nb_dequant_q6_k, nb_quantize_q6_k, GRID(64, 16, nb_set_code_q6_k)),
    Q("q8_K", Q8_K, 256, 292, nb_dequant_q8_k, NULL),
    Q("iq2_xxs", IQ2_XXS, 256, 66, NULL, NULL),
    Q("iq2_xs", IQ2_XS, 256, 74, NULL, NULL),
    Q("iq3_xxs", IQ3_XXS, 256, 98, NULL, NULL),
    Q("iq1_s", IQ1_S, 256, 50, NULL, NULL),
    Q("iq4_nl", IQ4_NL, 32, 18, nb_dequant_iq4_nl, nb_quantize_iq4_nl, GRID(16, 32, nb_set_code_iq4_nl)),
    Q("iq3_s", IQ3_S, 256, 110, NULL, NULL),
    Q("iq2_s", IQ2_S, 256, 82, NULL, NULL),
    Q("iq4_xs", IQ4_XS, 256, 136, nb_dequant_iq4_xs, nb_quantize_iq4_xs, GRID(16, 32, nb_set_code_iq4_xs)),
    Q("iq1_m", IQ1_M, 256, 56, NULL, NULL),
    Q("tq1_0", TQ1_0, 256, 54, nb_dequant_tq1_0, nb_quantize_tq1_0),
    Q("tq2_0", TQ2_0, 256, 66, nb_dequant_tq2_0, nb_quantize_tq2_0),
    Q("mxfp4", MXFP4, 32, 17, nb_dequant_mxfp4, nb_quantize_mxfp4),
    /* known to ggml / gguf-py 0.19; block sizes only (no dequantizer yet) */
    Q("nvfp4", NVFP4, 64, 36, NULL, NULL),
    Q("q1_0", Q1_0, 128, 18, NULL, NULL),
    /* safetensors-only element types */
    STONLY("bool", BOOL, "BOOL", 1, false, u8_to_f32),
    STONLY("u8", U8, "U8", 1, false, u8_to_f32),
    STONLY("u16", U16, "U16", 2, false, u16_to_f32),
    STONLY("u32", U32, "U32", 4, false, u32_to_f32),
    STONLY("u64", U64, "U64", 8, false, u64_to_f32),
    STONLY("f8_e4m3", F8_E4M3, "F8_E4M3", 1, true, f8e4m3_to_f32),
    STONLY("f8_e5m2", F8_E5M2, "F8_E5M2", 1, true, f8e5m2_to_f32),
    /* nibble's own packed types: GGUF id NB_GGUF_ID_BASE + k (append-only); layouts in docs/formats.md */
    OWN("nf4", NF4, 0, 64, 36, nb_dequant_nf4, nb_quantize_nf4, GRID(16, 64, nb_set_code_nf4)),
    /* no GPTQ grid: its scales depend on the whole tensor */
    OWN("nf4_dq", NF4_DQ, 1, 16384, 8456, nb_dequant_nf4_dq, nb_quantize_nf4_dq),
    OWN("int4_sym_g32", INT4_SYM_G32, 2, 32, 18, nb_dequant_int4_sym_g32, nb_quantize_int4_sym_g32,
        INT4(32, false, nb_set_code_int4_sym)),
    OWN("int4_sym_g64", INT4_SYM_G64, 3, 64, 34, nb_dequant_int4_sym_g64, nb_quantize_int4_sym_g64,
        INT4(64, false, nb_set_code_int4_sym)),
    OWN("int4_sym_g128", INT4_SYM_G128, 4, 128, 66, nb_dequant_int4_sym_g128, nb_quantize_int4_sym_g128,
        INT4(128, false, nb_set_code_int4_sym)),
    OWN("int4_asym_g32", INT4_ASYM_G32, 5, 32, 20, nb_dequant_int4_asym_g32, nb_quantize_int4_asym_g32,
        INT4(32, true, nb_set_code_int4_asym)),
    OWN("int4_asym_g64", INT4_ASYM_G64, 6, 64, 36, nb_dequant_int4_asym_g64, nb_quantize_int4_asym_g64,
        INT4(64, true, nb_set_code_int4_asym)),
    OWN("int4_asym_g128", INT4_ASYM_G128, 7, 128, 68, nb_dequant_int4_asym_g128, nb_quantize_int4_asym_g128,
        INT4(128, true, nb_set_code_int4_asym)),
};

const nb_type_traits *nb_type_get(nb_type t) {
    if ((unsigned)t >= NB_TYPE_COUNT || !g_types[t].name) return NULL;
    return &g_types[t];
}

const char *nb_type_name(nb_type t) {
    const nb_type_traits *tr = nb_type_get(t);
    return tr ? tr->name : "?";
}

bool nb_type_from_name(const char *name, nb_type *out) {
    for (int t = 0; t < NB_TYPE_COUNT; t++) {
        if (g_types[t].name && strcasecmp(g_types[t].name, name) == 0) {
            *out = (nb_type)t;
            return true;
        }
    }
    return false;
}

bool nb_type_from_gguf_id(uint64_t id, nb_type *out) {
    for (int t = 0; t < NB_TYPE_COUNT; t++) {
        if (g_types[t].name && g_types[t].gguf_id >= 0 && (uint64_t)g_types[t].gguf_id == id) {
            *out = (nb_type)t;
            return true;
        }
    }
    return false;
}

bool nb_type_from_st_dtype(const char *dtype, nb_type *out) {
    for (int t = 0; t < NB_TYPE_COUNT; t++) {
        if (g_types[t].st_dtype && strcmp(g_types[t].st_dtype, dtype) == 0) {
            *out = (nb_type)t;
            return true;
        }
    }
    return false;
}

nb_status nb_type_row_bytes(nb_type t, uint64_t n, uint64_t *out, nb_ctx *ctx, const char *what) {
    const nb_type_traits *tr = nb_type_get(t);
    if (!tr) return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: unknown type id %d", what, (int)t);
    if (n % tr->block_size != 0)
        return nb_err(ctx, NB_ERR_RANGE, "%s: row length %llu is not a multiple of %s's block size %u", what,
                      (unsigned long long)n, tr->name, tr->block_size);
    if (!nb_mul_u64(n / tr->block_size, tr->type_size, out))
        return nb_err(ctx, NB_ERR_RANGE, "%s: size of %llu elements of %s overflows", what,
                      (unsigned long long)n, tr->name);
    return NB_OK;
}

nb_type nb_type_int4_find(bool asym, int group) {
    for (int t = 0; t < NB_TYPE_COUNT; t++)
        if (g_types[t].group && group > 0 && g_types[t].group == (uint32_t)group && g_types[t].asym == asym)
            return (nb_type)t;
    return NB_TYPE_COUNT;
}

double nb_type_bpw(nb_type t) {
    const nb_type_traits *tr = nb_type_get(t);
    return tr ? (double)tr->type_size * 8.0 / (double)tr->block_size : 0.0;
}
