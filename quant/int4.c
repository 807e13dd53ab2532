/* quant/int4.c — group-wise INT4 and its GPTQ / AWQ packings (see quant/int4.h). */
#include "quant/int4.h"

#include "core/fp.h"
#include "quant/codes_impl.h"

#include <math.h>
#include <string.h>

#ifdef __clang__
#pragma clang fp contract(off)
#endif

/* Byte layout shared by the six types: header (fp16 d; asym: + u8 z + u8 pad)
 * then G/2 bytes of codes. */
typedef struct {
    int g;      /* group size */
    bool asym;
    int hdr;    /* header bytes */
    int bytes;  /* bytes per block */
} layout;

static layout lay(int g, bool asym) {
    layout l = {g, asym, asym ? 4 : 2, (asym ? 4 : 2) + g / 2};
    return l;
}

static inline uint16_t rd16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline void wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

static inline int code_at(const uint8_t *qs, int i) { return (qs[i / 2] >> (4 * (i & 1))) & 0x0F; }

static void dequant(const void *src, float *dst, int64_t n, layout l) {
    const uint8_t *b = src;
    for (int64_t blk = 0; blk < n / l.g; blk++, b += l.bytes) {
        float d = nb_f16_to_f32(rd16(b));
        int z = l.asym ? b[2] : 8;
        const uint8_t *qs = b + l.hdr;
        float *y = dst + blk * l.g;
        for (int i = 0; i < l.g; i++) y[i] = d * (float)(code_at(qs, i) - z);
    }
}

/* fp16 scale for s: finite, and 0 only for s == 0 (an underflowing scale
 * becomes the smallest subnormal, an overflowing one 65504). */
static uint16_t scale_f16(float s) {
    if (!(s > 0.0f)) return 0;
    uint16_t h = nb_f32_to_f16(s);
    if ((h & 0x7FFF) == 0) return 0x0001;
    if ((h & 0x7C00) == 0x7C00) return 0x7BFF;
    return h;
}

/* Parameters (fp16 scale bits, zero point) for a group at shrink factor p. */
static void params(const float *x, int g, bool asym, float p, uint16_t *d16, int *z) {
    float mn = 0.0f, mx = 0.0f;
    for (int i = 0; i < g; i++) {
        mn = fminf(mn, x[i]);
        mx = fmaxf(mx, x[i]);
    }
    if (!asym) {
        float amax = fmaxf(-mn, mx) * p;
        *z = 8;
        *d16 = scale_f16((amax + amax) / 15.0f);
        return;
    }
    mn *= p;
    mx *= p;
    if (mn == 0.0f && mx == 0.0f) {
        *z = 8;
        *d16 = 0;
        return;
    }
    float s = (mx - mn) / 15.0f;
    float zf = nearbyintf(-mn / s);
    int zi = zf < 0.0f ? 0 : zf > 15.0f ? 15 : (int)zf;
    if (zi == 0) { /* GPTQ v1 cannot store zero point 0: use 1 and 14 steps up */
        zi = 1;
        s = mx / 14.0f;
    }
    *z = zi;
    *d16 = scale_f16(s);
}

static inline int code_for(float x, float d, int z) {
    if (d == 0.0f) return z;
    float q = nearbyintf(x / d) + (float)z;
    if (!(q >= 0.0f)) return 0; /* also NaN */
    return q > 15.0f ? 15 : (int)q;
}

static double group_err(const float *x, const float *w, int g, uint16_t d16, int z) {
    float d = nb_f16_to_f32(d16);
    double e = 0.0;
    for (int i = 0; i < g; i++) {
        double r = (double)x[i] - (double)(d * (float)(code_for(x[i], d, z) - z));
        e += (double)w[i] * r * r;
    }
    return e;
}

static void quant_group(const float *x, const float *w, layout l, uint8_t *b) {
    uint16_t d16;
    int z;
    params(x, l.g, l.asym, 1.0f, &d16, &z);
    if (w) {
        double best = group_err(x, w, l.g, d16, z);
        for (int k = 99; k >= 70; k--) {
            uint16_t d2;
            int z2;
            params(x, l.g, l.asym, (float)k / 100.0f, &d2, &z2);
            double e = group_err(x, w, l.g, d2, z2);
            if (e < best) {
                best = e;
                d16 = d2;
                z = z2;
            }
        }
    }
    wr16(b, d16);
    if (l.asym) {
        b[2] = (uint8_t)z;
        b[3] = 0;
    }
    float d = nb_f16_to_f32(d16);
    uint8_t *qs = b + l.hdr;
    for (int i = 0; i < l.g; i += 2)
        qs[i / 2] = (uint8_t)(code_for(x[i], d, z) | code_for(x[i + 1], d, z) << 4);
}

static size_t quantize(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp,
                       layout l) {
    assert(n_per_row % l.g == 0);
    int64_t gpr = n_per_row / l.g;
    uint8_t *out = dst;
    for (int64_t r = 0; r < nrows; r++)
        for (int64_t g = 0; g < gpr; g++)
            quant_group(src + r * n_per_row + g * l.g, imp ? imp + g * l.g : NULL, l,
                        out + (r * gpr + g) * l.bytes);
    return (size_t)(nrows * gpr * l.bytes);
}

#define NB_INT4_HOOKS(name, G, ASYM)                                                                   \
    void nb_dequant_int4_##name(const void *src, float *dst, int64_t n) {                            \
        dequant(src, dst, n, lay(G, ASYM));                                                          \
    }                                                                                                \
    size_t nb_quantize_int4_##name(const float *src, void *dst, int64_t nrows, int64_t n_per_row,    \
                                   const float *imp) {                                               \
        return quantize(src, dst, nrows, n_per_row, imp, lay(G, ASYM));                              \
    }
NB_INT4_HOOKS(sym_g32, 32, false)
NB_INT4_HOOKS(sym_g64, 64, false)
NB_INT4_HOOKS(sym_g128, 128, false)
NB_INT4_HOOKS(asym_g32, 32, true)
NB_INT4_HOOKS(asym_g64, 64, true)
NB_INT4_HOOKS(asym_g128, 128, true)

/* GPTQ set-code hooks: element 2i in the low nibble of qs[i] */
void nb_set_code_int4_sym(void *b, int p, int lv) {
    nb_set_nibble(NB_BLOCK_FIELD(b, nb_block_int4_sym_g32, qs) + p / 2, p % 2 == 1, lv);
}
void nb_set_code_int4_asym(void *b, int p, int lv) {
    nb_set_nibble(NB_BLOCK_FIELD(b, nb_block_int4_asym_g32, qs) + p / 2, p % 2 == 1, lv);
}
/* the header is the same for every group size */
static_assert(offsetof(nb_block_int4_sym_g32, qs) == offsetof(nb_block_int4_sym_g128, qs), "int4 sym header");
static_assert(offsetof(nb_block_int4_asym_g32, qs) == offsetof(nb_block_int4_asym_g128, qs), "int4 asym header");

bool nb_int4_params(nb_type t, uint32_t *group, bool *asym) {
    const nb_type_traits *tr = nb_type_get(t);
    if (!tr || !tr->group) return false;
    if (group) *group = tr->group;
    if (asym) *asym = tr->asym;
    return true;
}

/* ---- GPTQ / AWQ ------------------------------------------------------------------ */

static nb_status check_shape(nb_type t, uint64_t n_out, uint64_t k_in, const char *what, layout *l,
                             nb_ctx *ctx) {
    uint32_t g;
    bool a;
    NB_RETURN_IF(ctx, !nb_int4_params(t, &g, &a), NB_ERR_INVALID, "%s: %s is not an INT4 type", what,
                 nb_type_name(t));
    NB_RETURN_IF(ctx, n_out == 0 || k_in == 0 || n_out % 8 || k_in % 8 || k_in % g, NB_ERR_RANGE,
                 "%s: shape [out %llu, in %llu] needs both dimensions multiples of 8 and in a multiple of "
                 "the group size %u",
                 what, (unsigned long long)n_out, (unsigned long long)k_in, g);
    NB_RETURN_IF(ctx, n_out > (uint64_t)1 << 40 || k_in > (uint64_t)1 << 40, NB_ERR_RANGE,
                 "%s: shape [out %llu, in %llu] too large", what, (unsigned long long)n_out,
                 (unsigned long long)k_in);
    *l = lay((int)g, a);
    return NB_OK;
}

nb_status nb_int4_to_gptq(nb_type t, const void *src, uint64_t n_out, uint64_t k_in, bool v1,
                          const nb_gptq_tensors *dst, nb_ctx *ctx) {
    layout l;
    NB_TRY(check_shape(t, n_out, k_in, "int4 -> gptq", &l, ctx));
    NB_RETURN_IF(ctx, !src || !dst || !dst->qweight || !dst->qzeros || !dst->scales, NB_ERR_INVALID,
                 "int4 -> gptq: NULL buffer");
    uint64_t ng = k_in / (uint64_t)l.g, N = n_out;
    memset(dst->qweight, 0, (size_t)(k_in / 8 * N) * 4);
    memset(dst->qzeros, 0, (size_t)(ng * N / 8) * 4);
    const uint8_t *b = src;
    for (uint64_t n = 0; n < N; n++) {
        for (uint64_t g = 0; g < ng; g++, b += l.bytes) {
            int z = l.asym ? b[2] : 8;
            NB_RETURN_IF(ctx, z > 15 || (v1 && z == 0), NB_ERR_UNSUPPORTED,
                         "int4 -> gptq: output %llu group %llu has zero point %d, not storable in GPTQ %s",
                         (unsigned long long)n, (unsigned long long)g, z, v1 ? "v1 (zero - 1)" : "v2");
            dst->scales[g * N + n] = rd16(b);
            uint32_t zs = (uint32_t)(v1 ? z - 1 : z) & 0xF;
            dst->qzeros[g * (N / 8) + n / 8] =
                (int32_t)((uint32_t)dst->qzeros[g * (N / 8) + n / 8] | zs << (4 * (n % 8)));
            /* 4 bytes of codes = 8 consecutive inputs = one little-endian qweight word */
            const uint8_t *qs = b + l.hdr;
            for (int w = 0; w < l.g / 8; w++) {
                uint32_t v = (uint32_t)qs[4 * w] | (uint32_t)qs[4 * w + 1] << 8 |
                             (uint32_t)qs[4 * w + 2] << 16 | (uint32_t)qs[4 * w + 3] << 24;
                dst->qweight[((g * (uint64_t)l.g) / 8 + (uint64_t)w) * N + n] = (int32_t)v;
            }
        }
    }
    if (dst->g_idx)
        for (uint64_t k = 0; k < k_in; k++) dst->g_idx[k] = (int32_t)(k / (uint64_t)l.g);
    return NB_OK;
}

nb_status nb_gptq_to_int4(nb_type t, const nb_gptq_tensors *src, uint64_t n_out, uint64_t k_in, bool v1,
                          void *dst, nb_ctx *ctx) {
    layout l;
    NB_TRY(check_shape(t, n_out, k_in, "gptq -> int4", &l, ctx));
    NB_RETURN_IF(ctx, !src || !dst || !src->qweight || !src->qzeros || !src->scales, NB_ERR_INVALID,
                 "gptq -> int4: NULL buffer");
    uint64_t ng = k_in / (uint64_t)l.g, N = n_out;
    if (src->g_idx)
        for (uint64_t k = 0; k < k_in; k++)
            NB_RETURN_IF(ctx, src->g_idx[k] != (int32_t)(k / (uint64_t)l.g), NB_ERR_UNSUPPORTED,
                         "gptq -> int4: g_idx[%llu] = %d, expected %llu (act-order checkpoints need a "
                         "permutation nibble does not store)",
                         (unsigned long long)k, src->g_idx[k], (unsigned long long)(k / (uint64_t)l.g));
    uint8_t *b = dst;
    for (uint64_t n = 0; n < N; n++) {
        for (uint64_t g = 0; g < ng; g++, b += l.bytes) {
            uint32_t word = (uint32_t)src->qzeros[g * (N / 8) + n / 8];
            int z = (int)((word >> (4 * (n % 8))) & 0xF) + (v1 ? 1 : 0);
            NB_RETURN_IF(ctx, z > 15, NB_ERR_UNSUPPORTED,
                         "gptq -> int4: output %llu group %llu: v1 zero point 16 is not representable",
                         (unsigned long long)n, (unsigned long long)g);
            NB_RETURN_IF(ctx, !l.asym && z != 8, NB_ERR_UNSUPPORTED,
                         "gptq -> int4: output %llu group %llu has zero point %d; %s needs 8",
                         (unsigned long long)n, (unsigned long long)g, z, nb_type_name(t));
            wr16(b, src->scales[g * N + n]);
            if (l.asym) {
                b[2] = (uint8_t)z;
                b[3] = 0;
            }
            uint8_t *qs = b + l.hdr;
            for (int w = 0; w < l.g / 8; w++) {
                uint32_t v = (uint32_t)src->qweight[((g * (uint64_t)l.g) / 8 + (uint64_t)w) * N + n];
                for (int k = 0; k < 4; k++) qs[4 * w + k] = (uint8_t)(v >> (8 * k));
            }
        }
    }
    return NB_OK;
}

static const int k_awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};

nb_status nb_int4_to_awq(nb_type t, const void *src, uint64_t n_out, uint64_t k_in, const nb_awq_tensors *dst,
                         nb_ctx *ctx) {
    layout l;
    NB_TRY(check_shape(t, n_out, k_in, "int4 -> awq", &l, ctx));
    NB_RETURN_IF(ctx, !src || !dst || !dst->qweight || !dst->qzeros || !dst->scales, NB_ERR_INVALID,
                 "int4 -> awq: NULL buffer");
    uint64_t ng = k_in / (uint64_t)l.g, N = n_out, C = N / 8;
    memset(dst->qweight, 0, (size_t)(k_in * C) * 4);
    memset(dst->qzeros, 0, (size_t)(ng * C) * 4);
    int slot[8]; /* nibble slot of column 8c + j */
    for (int i = 0; i < 8; i++) slot[k_awq_order[i]] = i;
    const uint8_t *b = src;
    for (uint64_t n = 0; n < N; n++) {
        uint32_t sh = 4u * (uint32_t)slot[n % 8];
        for (uint64_t g = 0; g < ng; g++, b += l.bytes) {
            int z = l.asym ? b[2] : 8;
            NB_RETURN_IF(ctx, z > 15, NB_ERR_UNSUPPORTED, "int4 -> awq: output %llu group %llu: zero point %d",
                         (unsigned long long)n, (unsigned long long)g, z);
            dst->scales[g * N + n] = rd16(b);
            int32_t *zw = &dst->qzeros[g * C + n / 8];
            *zw = (int32_t)((uint32_t)*zw | (uint32_t)z << sh);
            const uint8_t *qs = b + l.hdr;
            for (int i = 0; i < l.g; i++) {
                int32_t *w = &dst->qweight[(g * (uint64_t)l.g + (uint64_t)i) * C + n / 8];
                *w = (int32_t)((uint32_t)*w | (uint32_t)code_at(qs, i) << sh);
            }
        }
    }
    return NB_OK;
}

nb_status nb_awq_to_int4(nb_type t, const nb_awq_tensors *src, uint64_t n_out, uint64_t k_in, void *dst,
                         nb_ctx *ctx) {
    layout l;
    NB_TRY(check_shape(t, n_out, k_in, "awq -> int4", &l, ctx));
    NB_RETURN_IF(ctx, !src || !dst || !src->qweight || !src->qzeros || !src->scales, NB_ERR_INVALID,
                 "awq -> int4: NULL buffer");
    uint64_t ng = k_in / (uint64_t)l.g, N = n_out, C = N / 8;
    int slot[8];
    for (int i = 0; i < 8; i++) slot[k_awq_order[i]] = i;
    uint8_t *b = dst;
    for (uint64_t n = 0; n < N; n++) {
        uint32_t sh = 4u * (uint32_t)slot[n % 8];
        for (uint64_t g = 0; g < ng; g++, b += l.bytes) {
            int z = (int)(((uint32_t)src->qzeros[g * C + n / 8] >> sh) & 0xF);
            NB_RETURN_IF(ctx, !l.asym && z != 8, NB_ERR_UNSUPPORTED,
                         "awq -> int4: output %llu group %llu has zero point %d; %s needs 8",
                         (unsigned long long)n, (unsigned long long)g, z, nb_type_name(t));
            wr16(b, src->scales[g * N + n]);
            if (l.asym) {
                b[2] = (uint8_t)z;
                b[3] = 0;
            }
            uint8_t *qs = b + l.hdr;
            memset(qs, 0, (size_t)l.g / 2);
            for (int i = 0; i < l.g; i++) {
                uint32_t v = ((uint32_t)src->qweight[(g * (uint64_t)l.g + (uint64_t)i) * C + n / 8] >> sh) & 0xF;
                qs[i / 2] = (uint8_t)(qs[i / 2] | v << (4 * (i & 1)));
            }
        }
    }
    return NB_OK;
}
