/* quant/hf_pack.c — bitsandbytes / GPTQ / AWQ packed layouts (see quant/hf_pack.h). */
#include "quant/hf_pack.h"

#include "core/fp.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Python's float repr -------------------------------------------------------------- */

/* repr(v) as CPython prints a float: the shortest digits that read back to v,
 * in positional notation for decimal exponents -4..15 ("0.0001", "12.5",
 * "3.0"), else scientific with a two-digit minimum exponent ("1e-05"). */
static void py_float_repr(double v, char *out, size_t cap) {
    if (isnan(v)) { snprintf(out, cap, "NaN"); return; }
    if (isinf(v)) { snprintf(out, cap, v < 0 ? "-Infinity" : "Infinity"); return; }
    char e[40];
    int p = 0;
    for (p = 0; p < 17; p++) { /* p digits after the point in %e: p + 1 significant */
        snprintf(e, sizeof e, "%.*e", p, v);
        if (strtod(e, NULL) == v) break;
    }
    /* e = [-]D[.DDD]e[+-]XX */
    const char *s = e;
    bool neg = *s == '-';
    if (neg) s++;
    char dig[24];
    size_t nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s != '.') dig[nd++] = *s;
    while (nd > 1 && dig[nd - 1] == '0') nd--;
    dig[nd] = 0;
    int x = atoi(s + 1);
    char *o = out;
    size_t left = cap;
#define PUT(...) do { int w_ = snprintf(o, left, __VA_ARGS__); if (w_ < 0 || (size_t)w_ >= left) return; o += w_; left -= (size_t)w_; } while (0)
    if (neg) PUT("-");
    if (v == 0) { PUT("0.0"); return; }
    if (x < -4 || x >= 16) {
        PUT("%c", dig[0]);
        if (nd > 1) PUT(".%s", dig + 1);
        PUT("e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
    } else if (x < 0) {
        PUT("0.");
        for (int i = 0; i < -x - 1; i++) PUT("0");
        PUT("%s", dig);
    } else {
        for (int i = 0; i <= x; i++) PUT("%c", i < (int)nd ? dig[i] : '0');
        PUT(".");
        if ((int)nd > x + 1) PUT("%s", dig + x + 1);
        else PUT("0");
    }
#undef PUT
}

/* ---- bitsandbytes ----------------------------------------------------------------------- */

char *nb_bnb_quant_state_render(const nb_nf4_state *s, const char *dtype, const int64_t *shape, uint32_t n_dims) {
    size_t cap = 512;
    char *out = malloc(cap);
    if (!out) return NULL;
    char shp[200] = "";
    size_t at = 0;
    for (uint32_t d = 0; d < n_dims && d < 4; d++)
        at += (size_t)snprintf(shp + at, sizeof shp - at, "%s%lld", d ? ", " : "", (long long)shape[d]);
    int w = snprintf(out, cap, "{\"quant_type\": \"nf4\", \"blocksize\": %u, \"dtype\": \"%s\", \"shape\": [%s]",
                     s->blocksize, dtype, shp);
    if (s->double_quant) {
        char off[40];
        py_float_repr((double)s->offset, off, sizeof off);
        w += snprintf(out + w, cap - (size_t)w,
                      ", \"nested_blocksize\": %u, \"nested_dtype\": \"float32\", \"nested_offset\": %s",
                      s->nested_blocksize, off);
    }
    snprintf(out + w, cap - (size_t)w, "}");
    return out;
}

static nb_status qs_str(const cJSON *o, const char *key, char *dst, size_t cap, const char *what, nb_ctx *ctx) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    NB_RETURN_IF(ctx, !cJSON_IsString(v) || strlen(v->valuestring) >= cap, NB_ERR_FORMAT,
                 "%s: quant_state key '%s' must be a short string", what, key);
    strcpy(dst, v->valuestring);
    return NB_OK;
}

static nb_status qs_uint(const cJSON *o, const char *key, uint32_t lo, uint32_t hi, uint32_t *dst, const char *what,
                         nb_ctx *ctx) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    NB_RETURN_IF(ctx, !cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
                          v->valuedouble > hi,
                 NB_ERR_FORMAT, "%s: quant_state key '%s' must be an integer in [%u, %u]", what, key, lo, hi);
    *dst = (uint32_t)v->valuedouble;
    return NB_OK;
}

nb_status nb_bnb_quant_state_parse(const void *json, size_t len, const char *what, nb_bnb_quant_state *out,
                                   nb_ctx *ctx) {
    memset(out, 0, sizeof *out);
    cJSON *o = cJSON_ParseWithLength(json, len);
    nb_status st = NB_OK;
    if (!cJSON_IsObject(o)) NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT, "%s: quant_state is not a JSON object", what);
    NB_CHECK_GOTO(st, qs_str(o, "quant_type", out->quant_type, sizeof out->quant_type, what, ctx), done);
    NB_CHECK_GOTO(st, qs_uint(o, "blocksize", 32, 4096, &out->blocksize, what, ctx), done);
    if (out->blocksize & (out->blocksize - 1))
        NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT, "%s: quant_state blocksize %u is not a power of two", what,
                     out->blocksize);
    NB_CHECK_GOTO(st, qs_str(o, "dtype", out->dtype, sizeof out->dtype, what, ctx), done);
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(o, "shape");
    int nd = cJSON_IsArray(sh) ? cJSON_GetArraySize(sh) : -1;
    if (nd < 1 || nd > 4)
        NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT, "%s: quant_state key 'shape' must be a list of 1 to 4 sizes", what);
    out->n_dims = (uint32_t)nd;
    for (int d = 0; d < nd; d++) {
        const cJSON *e = cJSON_GetArrayItem(sh, d);
        if (!cJSON_IsNumber(e) || e->valuedouble < 1 || e->valuedouble > 4.5e15 ||
            e->valuedouble != floor(e->valuedouble))
            NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT, "%s: quant_state shape[%d] is not a positive integer", what, d);
        out->shape[d] = (int64_t)e->valuedouble;
    }
    out->nested = cJSON_GetObjectItemCaseSensitive(o, "nested_offset") != NULL ||
                  cJSON_GetObjectItemCaseSensitive(o, "nested_blocksize") != NULL;
    if (out->nested) {
        NB_CHECK_GOTO(st, qs_uint(o, "nested_blocksize", 1, 1u << 20, &out->nested_blocksize, what, ctx), done);
        NB_CHECK_GOTO(st, qs_str(o, "nested_dtype", out->nested_dtype, sizeof out->nested_dtype, what, ctx), done);
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(o, "nested_offset");
        if (!cJSON_IsNumber(off) || !isfinite(off->valuedouble) || fabs(off->valuedouble) > FLT_MAX)
            NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT,
                         "%s: quant_state key 'nested_offset' must be a finite float32 number", what);
        out->nested_offset = off->valuedouble;
    }
done:
    cJSON_Delete(o);
    if (st != NB_OK) memset(out, 0, sizeof *out);
    return st;
}

nb_status nb_bnb_nf4_state_load(const nb_bnb_quant_state *qs, const nb_bnb_nf4_tensors *t, const char *what,
                                nb_nf4_state *out, nb_ctx *ctx) {
    memset(out, 0, sizeof *out);
    NB_RETURN_IF(ctx, strcmp(qs->quant_type, "nf4") != 0, NB_ERR_UNSUPPORTED,
                 "%s: bitsandbytes quant_type '%s' is not supported (only nf4)", what, qs->quant_type);
    uint64_t n = 1;
    for (uint32_t d = 0; d < qs->n_dims; d++) {
        NB_RETURN_IF(ctx, n > UINT64_MAX / 2 / (uint64_t)qs->shape[d], NB_ERR_FORMAT, "%s: quant_state shape too large",
                     what);
        n *= (uint64_t)qs->shape[d];
    }
    uint64_t nb = (n + qs->blocksize - 1) / qs->blocksize;
    NB_RETURN_IF(ctx, !t->packed || t->n_packed != (n + 1) / 2, NB_ERR_FORMAT,
                 "%s: packed weight has %llu bytes, the shape needs %llu", what, (unsigned long long)t->n_packed,
                 (unsigned long long)((n + 1) / 2));
    NB_RETURN_IF(ctx, !t->absmax || t->n_absmax != nb, NB_ERR_FORMAT, "%s%s has %llu values, expected %llu", what,
                 NB_BNB_SUFFIX_ABSMAX, (unsigned long long)t->n_absmax, (unsigned long long)nb);
    NB_RETURN_IF(ctx, t->quant_map && t->n_quant_map != 16, NB_ERR_FORMAT, "%s%s has %llu values, expected 16", what,
                 NB_BNB_SUFFIX_QUANT_MAP, (unsigned long long)t->n_quant_map);
    uint64_t nn = 0;
    if (qs->nested) {
        NB_RETURN_IF(ctx, qs->nested_blocksize == 0, NB_ERR_FORMAT, "%s: nested_blocksize 0", what);
        nn = (nb + qs->nested_blocksize - 1) / qs->nested_blocksize;
        NB_RETURN_IF(ctx, !t->nested_absmax || t->n_nested_absmax != nn, NB_ERR_FORMAT,
                     "%s%s has %llu values, expected %llu", what, NB_BNB_SUFFIX_NESTED_ABSMAX,
                     (unsigned long long)t->n_nested_absmax, (unsigned long long)nn);
        NB_RETURN_IF(ctx, !t->nested_quant_map || t->n_nested_quant_map != 256, NB_ERR_FORMAT,
                     "%s%s has %llu values, expected 256", what, NB_BNB_SUFFIX_NESTED_QUANT_MAP,
                     (unsigned long long)t->n_nested_quant_map);
        NB_RETURN_IF(ctx, qs->nested_blocksize != NB_NF4_DQ_NESTED, NB_ERR_UNSUPPORTED,
                     "%s: nested_blocksize %u (bitsandbytes writes 256)", what, qs->nested_blocksize);
    }
    nb_nf4_state s = {0};
    s.n = n;
    s.blocksize = qs->blocksize;
    s.double_quant = qs->nested;
    s.n_blocks = nb;
    s.nested_blocksize = qs->nested ? qs->nested_blocksize : 0;
    s.n_nested = nn;
    memcpy(s.code, t->quant_map ? t->quant_map : nb_nf4_code, sizeof s.code);
    s.packed = nb_malloc(ctx, (size_t)((n + 1) / 2), "bnb packed weight");
    if (!s.packed) return NB_ERR_NOMEM;
    memcpy(s.packed, t->packed, (size_t)((n + 1) / 2));
    if (qs->nested) {
        s.qabsmax = nb_malloc(ctx, (size_t)nb, "bnb absmax");
        s.absmax2 = nb_malloc(ctx, (size_t)nn * sizeof(float), "bnb nested absmax");
        if (!s.qabsmax || !s.absmax2) { nb_nf4_state_free(&s); return NB_ERR_NOMEM; }
        memcpy(s.qabsmax, t->absmax, (size_t)nb);
        memcpy(s.absmax2, t->nested_absmax, (size_t)nn * sizeof(float));
        memcpy(s.nested_code, t->nested_quant_map, sizeof s.nested_code);
        s.offset = (float)qs->nested_offset;
    } else {
        s.absmax = nb_malloc(ctx, (size_t)nb * sizeof(float), "bnb absmax");
        if (!s.absmax) { nb_nf4_state_free(&s); return NB_ERR_NOMEM; }
        memcpy(s.absmax, t->absmax, (size_t)nb * sizeof(float));
    }
    *out = s;
    return NB_OK;
}

const float nb_bnb_fp4_code[16] = {0.0f,  0.0052083334885537624f,  0.6666666865348816f,  1.0f,
                                    0.3333333432674408f,  0.5f,  0.1666666716337204f,  0.25f,
                                    0.0f,  -0.0052083334885537624f, -0.6666666865348816f, -1.0f,
                                    -0.3333333432674408f, -0.5f, -0.1666666716337204f, -0.25f};

void nb_bnb_fp4_dequantize(const nb_nf4_state *s, float *dst) {
    for (uint64_t k = 0; k < s->n; k++) {
        uint8_t byte = s->packed[k / 2];
        dst[k] = nb_bnb_fp4_code[k % 2 ? byte & 15 : byte >> 4] * nb_nf4_state_absmax(s, k / s->blocksize);
    }
}

/* ---- GPTQ ----------------------------------------------------------------------------------- */

uint32_t nb_pack_bits_get(const int32_t *w, size_t stride, uint64_t k, uint32_t bits) {
    uint64_t bit = k * bits;
    uint64_t wi = bit / 32;
    uint32_t sh = (uint32_t)(bit % 32);
    uint64_t v = (uint32_t)w[wi * stride] >> sh;
    if (sh + bits > 32) v |= (uint64_t)(uint32_t)w[(wi + 1) * stride] << (32 - sh);
    return (uint32_t)(v & ((1u << bits) - 1));
}

int nb_gptq_zero(const nb_gptq_layout *l, const int32_t *qzeros, uint64_t g, uint64_t n) {
    uint64_t words = (l->n_out * l->bits + 31) / 32;
    int z = (int)nb_pack_bits_get(qzeros + g * words, 1, n, l->bits);
    return l->v1 ? z + 1 : z;
}

nb_status nb_gptq_check(const nb_gptq_layout *l, const int32_t *g_idx, const char *what, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, l->bits != 2 && l->bits != 3 && l->bits != 4 && l->bits != 8, NB_ERR_UNSUPPORTED,
                 "%s: GPTQ with %u bits is not supported (2, 3, 4 or 8)", what, l->bits);
    uint32_t per = l->bits == 3 ? 32 : 32 / l->bits; /* codes that fill whole words */
    NB_RETURN_IF(ctx, l->k_in == 0 || l->k_in % per, NB_ERR_FORMAT,
                 "%s: in_features %llu is not a multiple of %u (%u-bit GPTQ words)", what,
                 (unsigned long long)l->k_in, per, l->bits);
    NB_RETURN_IF(ctx, l->n_out == 0 || l->n_out % per, NB_ERR_FORMAT,
                 "%s: out_features %llu is not a multiple of %u (%u-bit GPTQ zero words)", what,
                 (unsigned long long)l->n_out, per, l->bits);
    NB_RETURN_IF(ctx, l->n_groups == 0 || l->n_groups > l->k_in, NB_ERR_FORMAT, "%s: %llu groups for %llu inputs",
                 what, (unsigned long long)l->n_groups, (unsigned long long)l->k_in);
    NB_RETURN_IF(ctx, l->group && (l->k_in + l->group - 1) / l->group != l->n_groups, NB_ERR_FORMAT,
                 "%s: %llu groups of %llu for %llu inputs", what, (unsigned long long)l->n_groups,
                 (unsigned long long)l->group, (unsigned long long)l->k_in);
    if (g_idx)
        for (uint64_t k = 0; k < l->k_in; k++)
            NB_RETURN_IF(ctx, g_idx[k] < 0 || (uint64_t)g_idx[k] >= l->n_groups, NB_ERR_FORMAT,
                         "%s.g_idx[%llu] = %d is outside [0, %llu)", what, (unsigned long long)k, g_idx[k],
                         (unsigned long long)l->n_groups);
    return NB_OK;
}

nb_status nb_gptq_unpack_f32(const nb_gptq_layout *l, const nb_gptq_tensors *src, float *dst, const char *what,
                             nb_ctx *ctx) {
    NB_RETURN_IF(ctx, !src || !src->qweight || !src->qzeros || !src->scales || !dst, NB_ERR_INVALID,
                 "%s: gptq unpack: NULL buffer", what);
    NB_TRY(nb_gptq_check(l, src->g_idx, what, ctx));
    const uint64_t N = l->n_out, K = l->k_in;
    for (uint64_t k = 0; k < K; k++) {
        uint64_t g = src->g_idx ? (uint64_t)src->g_idx[k] : l->group ? k / l->group : k * l->n_groups / K;
        for (uint64_t n = 0; n < N; n++) {
            int q = (int)nb_pack_bits_get(src->qweight + n, N, k, l->bits);
            dst[n * K + k] = nb_f16_to_f32(src->scales[g * N + n]) * (float)(q - nb_gptq_zero(l, src->qzeros, g, n));
        }
    }
    return NB_OK;
}

nb_gptq_sizes nb_gptq_sizes_of(uint64_t n_out, uint64_t k_in, uint32_t group) {
    nb_gptq_sizes s;
    uint64_t ng = group ? k_in / group : 1;
    s.qweight = k_in / 8 * n_out * 4;
    s.qzeros = ng * (n_out / 8) * 4;
    s.scales = ng * n_out * 2;
    s.g_idx = k_in * 4;
    return s;
}

/* ---- AWQ ------------------------------------------------------------------------------------------ */

nb_status nb_awq_unpack_f32(const nb_awq_tensors *src, uint64_t n_out, uint64_t k_in, uint32_t group, float *dst,
                            const char *what, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, !src || !src->qweight || !src->qzeros || !src->scales || !dst, NB_ERR_INVALID,
                 "%s: awq unpack: NULL buffer", what);
    NB_RETURN_IF(ctx, group == 0 || k_in == 0 || k_in % group || n_out == 0 || n_out % 8, NB_ERR_FORMAT,
                 "%s: AWQ needs in_features (%llu) a multiple of the group (%u) and out_features (%llu) of 8", what,
                 (unsigned long long)k_in, group, (unsigned long long)n_out);
    static const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    const uint64_t C = n_out / 8;
    for (uint64_t k = 0; k < k_in; k++) {
        uint64_t g = k / group;
        for (uint64_t c = 0; c < C; c++) {
            uint32_t w = (uint32_t)src->qweight[k * C + c], zw = (uint32_t)src->qzeros[g * C + c];
            for (int i = 0; i < 8; i++) {
                uint64_t n = 8 * c + (uint64_t)order[i];
                int q = (int)((w >> (4 * i)) & 0xF), z = (int)((zw >> (4 * i)) & 0xF);
                dst[n * k_in + k] = nb_f16_to_f32(src->scales[g * n_out + n]) * (float)(q - z);
            }
        }
    }
    return NB_OK;
}

/* ---- nibble NF4 blocks -> bitsandbytes state ---------------------------------------------- */

nb_status nb_bnb_nf4_state_from_blocks(nb_type type, const void *blocks, uint64_t n, nb_nf4_state *out,
                                       const char *what, nb_ctx *ctx) {
    memset(out, 0, sizeof *out);
    bool dq = type == NB_TYPE_NF4_DQ;
    uint64_t per = dq ? NB_NF4_DQ_SUPER : NB_NF4_BLOCK;
    NB_RETURN_IF(ctx, (type != NB_TYPE_NF4 && !dq) || n == 0 || n % per, NB_ERR_INVALID,
                 "%s: %s with %llu elements is not whole NF4 blocks", what, nb_type_name(type), (unsigned long long)n);
    nb_nf4_state s = {0};
    s.n = n;
    s.blocksize = NB_NF4_BLOCK;
    s.double_quant = dq;
    s.n_blocks = n / NB_NF4_BLOCK;
    memcpy(s.code, nb_nf4_code, sizeof s.code);
    s.packed = nb_malloc(ctx, (size_t)(n / 2), "bnb packed weight");
    if (!s.packed) return NB_ERR_NOMEM;
    if (!dq) {
        const nb_block_nf4 *b = blocks;
        s.absmax = nb_malloc(ctx, (size_t)s.n_blocks * sizeof(float), "bnb absmax");
        if (!s.absmax) { nb_nf4_state_free(&s); return NB_ERR_NOMEM; }
        for (uint64_t k = 0; k < s.n_blocks; k++) {
            s.absmax[k] = b[k].d;
            memcpy(s.packed + k * (NB_NF4_BLOCK / 2), b[k].qs, NB_NF4_BLOCK / 2);
        }
        *out = s;
        return NB_OK;
    }
    const nb_block_nf4_dq *b = blocks;
    uint64_t ns = n / NB_NF4_DQ_SUPER;
    s.nested_blocksize = NB_NF4_DQ_NESTED;
    s.n_nested = ns;
    s.offset = b[0].offset;
    nb_dynamic_map_signed(s.nested_code);
    s.qabsmax = nb_malloc(ctx, (size_t)s.n_blocks, "bnb absmax");
    s.absmax2 = nb_malloc(ctx, (size_t)ns * sizeof(float), "bnb nested absmax");
    if (!s.qabsmax || !s.absmax2) { nb_nf4_state_free(&s); return NB_ERR_NOMEM; }
    for (uint64_t k = 0; k < ns; k++) {
        if (memcmp(&b[k].offset, &s.offset, sizeof s.offset) != 0) {
            nb_nf4_state_free(&s);
            return nb_err(ctx, NB_ERR_UNSUPPORTED,
                          "%s: double-quantized NF4 super-blocks 0 and %llu have different absmax offsets (%g, %g): "
                          "bitsandbytes holds one offset per tensor (quantize the tensor in one call)",
                          what, (unsigned long long)k, (double)s.offset, (double)b[k].offset);
        }
        s.absmax2[k] = b[k].absmax2;
        memcpy(s.qabsmax + k * NB_NF4_DQ_NESTED, b[k].qabsmax, NB_NF4_DQ_NESTED);
        memcpy(s.packed + k * (NB_NF4_DQ_SUPER / 2), b[k].qs, NB_NF4_DQ_SUPER / 2);
    }
    *out = s;
    return NB_OK;
}
