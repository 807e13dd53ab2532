/* formats/hf_quantized.c — bitsandbytes / GPTQ / AWQ / compressed-tensors
 * checkpoints as nb_model sources. See formats/hf_quantized.h.
 *
 * Layouts, from the libraries that write them (shapes in PyTorch order,
 * N = out_features, K = in_features, G = group size, b = bits):
 *   bitsandbytes 4-bit (transformers save_pretrained of a Linear4bit):
 *     W.weight U8 [(N*K+1)/2, 1]: the row-major [N, K] weight flattened, two
 *       codes a byte, element 2i in the high nibble; blocks of `blocksize`
 *       consecutive elements share an absmax;
 *     W.weight.absmax F32 [blocks] or, double-quantized, U8 codes into
 *       W.weight.nested_quant_map F32 [256] scaled by W.weight.nested_absmax
 *       F32 [ceil(blocks/256)] plus quant_state's nested_offset;
 *     W.weight.quant_map F32 [16]; W.weight.quant_state.bitsandbytes__nf4 U8:
 *       JSON {quant_type, blocksize, dtype, shape, nested_blocksize, nested_offset}.
 *   bitsandbytes 8-bit: W.weight I8 [N, K], W.SCB F32 [N], W.weight_format U8 (0 = row).
 *   GPTQ: W.qweight I32 [ceil(K*b/32), N]: for output n, input k's code at bit
 *     k*b of the little-endian concatenation of column n's words (3 bits
 *     straddle words); W.qzeros I32 [groups, ceil(N*b/32)] packed the same way
 *     along N; W.scales F16 [groups, N]; W.g_idx I32 [K] (group of input k).
 *   AWQ GEMM: W.qweight I32 [K, N/8]: output 8c + {0,2,4,6,1,3,5,7}[i] in bits
 *     4i..4i+3 of word c; W.qzeros I32 [groups, N/8] alike; W.scales F16 [groups, N].
 *   compressed-tensors pack-quantized: W.weight_packed I32 [N, ceil(K*b/32)],
 *     codes = value + 2^(b-1) packed densely along K; W.weight_shape I64 [2] =
 *     [N, K]; W.weight_scale [N, groups] (F16/BF16/F32); W.weight_zero_point
 *     I32 [ceil(N*b/32), groups] packed along N (asymmetric only);
 *     W.weight_g_idx I32 [K] (activation order, optional).
 */
#include "formats/hf_quantized.h"

#include "core/checked.h"
#include "core/fp.h"
#include "core/str.h"
#include "formats/convert.h"
#include "formats/json_strict.h"
#include "quant/hf_pack.h"
#include "quant/int4.h"
#include "quant/nf4.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum q_kind { Q_PASS, Q_BNB4, Q_BNB8, Q_GPTQ, Q_AWQ, Q_CT } q_kind;

/* Companion tensors of one quantized weight (SIZE_MAX = absent). */
enum { A_SCALES, A_ZEROS, A_GIDX, A_NESTED, A_NESTED_MAP, A_COUNT };

typedef struct q_tensor {
    q_kind kind;
    size_t src;            /* Q_PASS: the tensor; else the packed codes */
    size_t aux[A_COUNT];   /* bnb4: A_SCALES = absmax; bnb8: A_SCALES = SCB */
    uint64_t n_out, k_in;  /* N, K */
    uint32_t bits;
    uint64_t group;        /* elements of a row per scale (GPTQ/AWQ/CT); bnb4: blocksize */
    bool v1;               /* GPTQ: zeros stored minus one */
    bool nested;           /* bnb4: double-quantized absmax */
    bool fp4;              /* bnb4: FP4 codes instead of NF4 */
    float offset;          /* bnb4: nested_offset */
} q_tensor;

typedef struct q_impl {
    nb_model *st;
    q_tensor *qt; /* one per tensor of the wrapper; nb_tensor.priv points here */
} q_impl;

/* The layout settings read from quantization_config. */
typedef struct q_cfg {
    q_kind kind;           /* what the method's anchors become */
    const char *method;
    bool bnb4, bnb8;
    uint32_t bits;         /* GPTQ / AWQ / CT */
    int64_t group;         /* GPTQ / AWQ (-1: per channel) */
    bool v1;               /* GPTQ checkpoint_format "gptq" */
} q_cfg;

/* ---- config ------------------------------------------------------------------------------ */

static nb_status cfg_int(const cJSON *o, const char *key, const char *alt, int64_t def, int64_t *out,
                         const char *what, nb_ctx *ctx) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if ((!it || cJSON_IsNull(it)) && alt) it = cJSON_GetObjectItemCaseSensitive(o, alt);
    *out = def;
    if (!it || cJSON_IsNull(it)) return NB_OK;
    NB_RETURN_IF(ctx, !cJSON_IsNumber(it) || !isfinite(it->valuedouble) || floor(it->valuedouble) != it->valuedouble ||
                          fabs(it->valuedouble) > 1e9,
                 NB_ERR_FORMAT, "%s: quantization_config.%s must be an integer", what, key);
    *out = (int64_t)it->valuedouble;
    return NB_OK;
}

static bool cfg_true(const cJSON *o, const char *key) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

static const char *cfg_string(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* compressed-tensors: every config group's weights must be "int" with one
 * num_bits, and the format pack-quantized. */
static nb_status cfg_ct(const cJSON *q, q_cfg *c, const char *what, nb_ctx *ctx) {
    const char *fmt = cfg_string(q, "format");
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(q, "config_groups");
    NB_RETURN_IF(ctx, !cJSON_IsObject(groups), NB_ERR_FORMAT,
                 "%s: quantization_config.config_groups must be an object", what);
    const cJSON *g;
    cJSON_ArrayForEach(g, groups) {
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(g, "weights");
        if (!cJSON_IsObject(w)) continue;
        const char *gf = cfg_string(g, "format");
        const char *f = gf ? gf : fmt;
        NB_RETURN_IF(ctx, !f || strcmp(f, "pack-quantized") != 0, NB_ERR_UNSUPPORTED,
                     "%s: quantization_config format '%.64s' (group '%.64s') is not supported; compressed-tensors "
                     "imports read \"pack-quantized\" int weights",
                     what, f ? f : "(none)", g->string);
        const char *type = cfg_string(w, "type");
        NB_RETURN_IF(ctx, !type || strcmp(type, "int") != 0, NB_ERR_UNSUPPORTED,
                     "%s: quantization_config.config_groups.%.64s.weights.type '%.32s' is not supported (int only)",
                     what, g->string, type ? type : "(none)");
        int64_t bits;
        NB_TRY(cfg_int(w, "num_bits", NULL, 0, &bits, what, ctx));
        NB_RETURN_IF(ctx, bits < 2 || bits > 8, NB_ERR_UNSUPPORTED,
                     "%s: quantization_config.config_groups.%.64s.weights.num_bits = %lld is not supported (2..8)",
                     what, g->string, (long long)bits);
        NB_RETURN_IF(ctx, c->bits && c->bits != bits, NB_ERR_UNSUPPORTED,
                     "%s: quantization_config.config_groups mix %u and %lld bits; not supported", what, c->bits,
                     (long long)bits);
        c->bits = (uint32_t)bits;
    }
    NB_RETURN_IF(ctx, !c->bits, NB_ERR_FORMAT, "%s: quantization_config.config_groups has no weights scheme", what);
    return NB_OK;
}

static nb_status cfg_read(const cJSON *q, q_cfg *c, const char *what, nb_ctx *ctx) {
    memset(c, 0, sizeof *c);
    c->method = cfg_string(q, "quant_method");
    NB_RETURN_IF(ctx, !c->method, NB_ERR_FORMAT, "%s: quantization_config.quant_method is missing", what);
    int64_t v;
    if (strcmp(c->method, "bitsandbytes") == 0) {
        c->bnb4 = cfg_true(q, "load_in_4bit") || cfg_true(q, "_load_in_4bit");
        c->bnb8 = cfg_true(q, "load_in_8bit") || cfg_true(q, "_load_in_8bit");
        NB_RETURN_IF(ctx, !c->bnb4 && !c->bnb8, NB_ERR_FORMAT,
                     "%s: quantization_config: bitsandbytes without load_in_4bit or load_in_8bit", what);
        c->kind = c->bnb4 ? Q_BNB4 : Q_BNB8;
        return NB_OK;
    }
    if (strcmp(c->method, "gptq") == 0) {
        NB_TRY(cfg_int(q, "bits", NULL, 4, &v, what, ctx));
        NB_RETURN_IF(ctx, v != 2 && v != 3 && v != 4 && v != 8, NB_ERR_UNSUPPORTED,
                     "%s: quantization_config.bits = %lld: GPTQ imports read 2, 3, 4 and 8 bits", what, (long long)v);
        c->bits = (uint32_t)v;
        NB_TRY(cfg_int(q, "group_size", NULL, 128, &c->group, what, ctx));
        NB_RETURN_IF(ctx, c->group != -1 && c->group <= 0, NB_ERR_UNSUPPORTED,
                     "%s: quantization_config.group_size = %lld is not supported (-1 or a positive size)", what,
                     (long long)c->group);
        const char *cf = cfg_string(q, "checkpoint_format");
        NB_RETURN_IF(ctx, cf && strcmp(cf, "gptq") != 0 && strcmp(cf, "gptq_v2") != 0, NB_ERR_UNSUPPORTED,
                     "%s: quantization_config.checkpoint_format '%.64s' is not supported (gptq, gptq_v2)", what, cf);
        c->v1 = !cf || strcmp(cf, "gptq") == 0;
        c->kind = Q_GPTQ;
        return NB_OK;
    }
    if (strcmp(c->method, "awq") == 0) {
        NB_TRY(cfg_int(q, "bits", "w_bit", 4, &v, what, ctx));
        NB_RETURN_IF(ctx, v != 4, NB_ERR_UNSUPPORTED, "%s: quantization_config.bits = %lld: AWQ imports read 4 bits",
                     what, (long long)v);
        c->bits = 4;
        NB_TRY(cfg_int(q, "group_size", "q_group_size", 128, &c->group, what, ctx));
        NB_RETURN_IF(ctx, c->group <= 0, NB_ERR_UNSUPPORTED,
                     "%s: quantization_config.group_size = %lld is not supported", what, (long long)c->group);
        const char *ver = cfg_string(q, "version");
        NB_RETURN_IF(ctx, ver && strcasecmp(ver, "gemm") != 0, NB_ERR_UNSUPPORTED,
                     "%s: quantization_config.version '%.32s' is not supported (AWQ imports read the GEMM packing)",
                     what, ver);
        c->kind = Q_AWQ;
        return NB_OK;
    }
    if (strcmp(c->method, "compressed-tensors") == 0) {
        NB_TRY(cfg_ct(q, c, what, ctx));
        c->kind = Q_CT;
        return NB_OK;
    }
    return nb_err(ctx, NB_ERR_UNSUPPORTED,
                  "%s: quantization_config.quant_method '%.64s' is not supported (bitsandbytes, gptq, awq, "
                  "compressed-tensors)",
                  what, c->method);
}

/* ---- tensors by name ----------------------------------------------------------------------- */

typedef struct name_ent {
    const char *name;
    size_t i;
} name_ent;

typedef struct name_index {
    name_ent *e; /* every tensor, sorted by name */
    size_t n;
} name_index;

static int by_name(const void *a, const void *b) {
    return strcmp(((const name_ent *)a)->name, ((const name_ent *)b)->name);
}

static nb_status index_build(name_index *ix, const nb_model *st, nb_ctx *ctx) {
    ix->n = st->n_tensors;
    ix->e = nb_malloc(ctx, (st->n_tensors ? st->n_tensors : 1) * sizeof *ix->e, "tensor index");
    if (!ix->e) return NB_ERR_NOMEM;
    for (size_t i = 0; i < st->n_tensors; i++) ix->e[i] = (name_ent){st->tensors[i].name, i};
    qsort(ix->e, ix->n, sizeof *ix->e, by_name);
    return NB_OK;
}

/* Index of prefix + suffix, or SIZE_MAX. */
static size_t index_find(const name_index *ix, const char *prefix, size_t plen, const char *suffix) {
    char name[NB_MAX_NAME + 1];
    size_t sl = strlen(suffix);
    if (plen + sl > NB_MAX_NAME) return SIZE_MAX;
    memcpy(name, prefix, plen);
    memcpy(name + plen, suffix, sl + 1);
    size_t lo = 0, hi = ix->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ix->e[mid].name, name);
        if (c == 0) return ix->e[mid].i;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return SIZE_MAX;
}

/* ---- bytes of a companion tensor, aligned for its element type --------------------------- */

typedef struct q_bytes {
    const void *p;
    void *owned;
} q_bytes;

static nb_status get_bytes(nb_model *st, size_t i, size_t align, q_bytes *b, nb_ctx *ctx) {
    b->p = b->owned = NULL;
    if (i == SIZE_MAX) return NB_OK;
    NB_TRY(nb_model_tensor_bytes(st, i, &b->p, &b->owned, ctx));
    if ((uintptr_t)b->p % align == 0) return NB_OK;
    size_t n = (size_t)st->tensors[i].nbytes;
    void *c = nb_malloc(ctx, n ? n : 1, st->tensors[i].name);
    if (!c) {
        free(b->owned);
        b->p = b->owned = NULL;
        return NB_ERR_NOMEM;
    }
    memcpy(c, b->p, n);
    free(b->owned);
    b->p = b->owned = c;
    return NB_OK;
}

static void put_bytes(nb_model *st, size_t i, q_bytes *b) {
    if (i != SIZE_MAX && !b->owned && b->p) nb_release_mapped(b->p, st->tensors[i].nbytes);
    free(b->owned);
    b->p = b->owned = NULL;
}

/* ---- checks at open ----------------------------------------------------------------------- */

static const char *shape_str(const nb_tensor *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (uint32_t d = t->n_dims; d-- > 0 && k < n;)
        k += (size_t)snprintf(buf + k, n - k, d + 1 < t->n_dims ? ", %lld" : "%lld", (long long)t->ne[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

/* Tensor i must have this type and PyTorch shape (d0 outermost; d1 = -1: 1-D). */
static nb_status expect(const nb_model *st, size_t i, nb_type type, int64_t d0, int64_t d1, nb_ctx *ctx) {
    const nb_tensor *t = &st->tensors[i];
    bool ok = t->type == type;
    if (d1 < 0) ok = ok && t->n_dims == 1 && t->ne[0] == d0;
    else ok = ok && t->n_dims == 2 && t->ne[1] == d0 && t->ne[0] == d1;
    if (ok) return NB_OK;
    char have[64];
    if (d1 < 0)
        return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s' is %s %s; expected %s [%lld]", st->path, t->name,
                      nb_type_name(t->type), shape_str(t, have, sizeof have), nb_type_name(type), (long long)d0);
    return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s' is %s %s; expected %s [%lld, %lld]", st->path, t->name,
                  nb_type_name(t->type), shape_str(t, have, sizeof have), nb_type_name(type), (long long)d0,
                  (long long)d1);
}

static nb_status need(const nb_model *st, size_t i, const char *prefix, size_t plen, const char *suffix,
                      const char *anchor, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, i == SIZE_MAX, NB_ERR_FORMAT, "%s: quantized tensor '%s' has no companion '%.*s%s'", st->path,
                 anchor, (int)plen, prefix, suffix);
    return NB_OK;
}

static uint64_t ceil_div(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }

/* ---- the wrapper model --------------------------------------------------------------------- */

static void q_close(nb_model *m) {
    q_impl *im = m->impl;
    if (im) {
        nb_model_close(im->st);
        free(im->qt);
        free(im);
    }
    nb_model_free_common(m);
}

static nb_gptq_layout gptq_layout(const q_tensor *q) {
    return (nb_gptq_layout){.bits = q->bits, .n_out = q->n_out, .k_in = q->k_in,
                            .n_groups = ceil_div(q->k_in, q->group), .group = q->group, .v1 = q->v1};
}

static float scale_at(nb_type t, const void *p, uint64_t i) {
    if (t == NB_TYPE_F32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return t == NB_TYPE_BF16 ? nb_bf16_to_f32(h) : nb_f16_to_f32(h);
}

static nb_status read_bnb4(nb_model *m, const nb_tensor *t, const q_tensor *q, q_bytes *b, void *dst, nb_ctx *ctx) {
    (void)m;
    nb_nf4_state s;
    memset(&s, 0, sizeof s);
    s.n = q->n_out * q->k_in;
    s.blocksize = (uint32_t)q->group;
    s.double_quant = q->nested;
    s.n_blocks = ceil_div(s.n, s.blocksize);
    s.packed = (uint8_t *)b[0].p;
    s.nested_blocksize = NB_NF4_DQ_NESTED;
    s.n_nested = ceil_div(s.n_blocks, NB_NF4_DQ_NESTED);
    if (q->nested) {
        s.qabsmax = (uint8_t *)b[1 + A_SCALES].p;
        s.absmax2 = (float *)b[1 + A_NESTED].p;
        s.offset = q->offset;
        memcpy(s.nested_code, b[1 + A_NESTED_MAP].p, sizeof s.nested_code);
    } else {
        s.absmax = (float *)b[1 + A_SCALES].p;
    }
    memcpy(s.code, nb_nf4_code, sizeof s.code);
    if (q->fp4) {
        nb_bnb_fp4_dequantize(&s, dst);
        return NB_OK;
    }
    if (t->type == NB_TYPE_F32) return nb_nf4_dequantize_tensor(&s, dst, ctx);
    /* NF4: each 64-element block lies inside one bnb block (64 | blocksize, 64 | K) */
    nb_block_nf4 *o = dst;
    uint64_t nblk = s.n / NB_NF4_BLOCK;
    for (uint64_t k = 0; k < nblk; k++) {
        o[k].d = nb_nf4_state_absmax(&s, k * NB_NF4_BLOCK / s.blocksize);
        memcpy(o[k].qs, s.packed + k * (NB_NF4_BLOCK / 2), NB_NF4_BLOCK / 2);
    }
    return NB_OK;
}

/* GPTQ / AWQ: blocks of nibble's INT4 when the grid fits (quant/int4.h), else
 * floats (quant/hf_pack.h); both exact. */
static nb_status read_gptq_awq(nb_model *m, const nb_tensor *t, const q_tensor *q, q_bytes *b, void *dst,
                               nb_ctx *ctx) {
    nb_gptq_tensors g = {(int32_t *)b[0].p, (int32_t *)b[1 + A_ZEROS].p, (uint16_t *)b[1 + A_SCALES].p,
                         (int32_t *)b[1 + A_GIDX].p};
    nb_awq_tensors a = {g.qweight, g.qzeros, g.scales};
    nb_gptq_layout l = gptq_layout(q);
    bool f32 = t->type == NB_TYPE_F32;
    nb_status st;
    if (q->kind == Q_GPTQ)
        st = f32 ? nb_gptq_unpack_f32(&l, &g, dst, t->name, ctx)
                 : nb_gptq_to_int4(t->type, &g, q->n_out, q->k_in, q->v1, dst, ctx);
    else
        st = f32 ? nb_awq_unpack_f32(&a, q->n_out, q->k_in, (uint32_t)q->group, dst, t->name, ctx)
                 : nb_awq_to_int4(t->type, &a, q->n_out, q->k_in, dst, ctx);
    if (st == NB_OK) return NB_OK;
    return f32 ? nb_err_prefix(ctx, "%s", m->path) : nb_err_prefix(ctx, "%s: tensor '%s'", m->path, t->name);
}

static nb_status read_ct(nb_model *m, const nb_tensor *t, const q_tensor *q, q_bytes *b, void *dst, nb_ctx *ctx) {
    const int32_t *qw = b[0].p, *zp = b[1 + A_ZEROS].p, *gi = b[1 + A_GIDX].p;
    const void *sc = b[1 + A_SCALES].p;
    const q_impl *im = m->impl;
    nb_type stype = im->st->tensors[q->aux[A_SCALES]].type;
    uint64_t N = q->n_out, K = q->k_in, ng = K / q->group;
    uint64_t wpr = ceil_div(K * q->bits, 32);
    int mid = 1 << (q->bits - 1);
    if (t->type != NB_TYPE_F32) {
        /* INT4 with the same grid: value = d * (q - z), z = 8 when symmetric */
        uint32_t group;
        bool asym;
        nb_int4_params(t->type, &group, &asym);
        size_t bsz = nb_type_get(t->type)->type_size;
        uint8_t *o = dst;
        for (uint64_t n = 0; n < N; n++)
            for (uint64_t g = 0; g < ng; g++, o += bsz) {
                uint16_t d = nb_f32_to_f16(scale_at(stype, sc, n * ng + g));
                memcpy(o, &d, 2);
                uint8_t *qs = o + (asym ? 4 : 2);
                if (asym) { /* a symmetric tensor made asymmetric by unify_types: zero 8 */
                    o[2] = zp ? (uint8_t)nb_pack_bits_get(zp + g, ng, n, q->bits) : (uint8_t)mid;
                    o[3] = 0;
                }
                const uint8_t *src = (const uint8_t *)(qw + n * wpr) + g * group / 2;
                memcpy(qs, src, group / 2); /* element 2i in the low nibble, as in pack_to_int32 */
            }
        return NB_OK;
    }
    float *w = dst;
    for (uint64_t n = 0; n < N; n++)
        for (uint64_t k = 0; k < K; k++) {
            uint64_t g = gi ? (uint64_t)(uint32_t)gi[k] : k / q->group;
            NB_RETURN_IF(ctx, g >= ng, NB_ERR_FORMAT,
                         "%s: tensor '%s': weight_g_idx[%llu] = %lld is not a group (%llu groups)", m->path, t->name,
                         (unsigned long long)k, (long long)(gi ? gi[k] : 0), (unsigned long long)ng);
            int code = (int)nb_pack_bits_get(qw + n * wpr, 1, k, q->bits);
            int z = zp ? (int)nb_pack_bits_get(zp + g, ng, n, q->bits) : mid;
            w[n * K + k] = scale_at(stype, sc, n * ng + g) * (float)(code - z);
        }
    return NB_OK;
}

static nb_status read_bnb8(const q_tensor *q, q_bytes *b, void *dst) {
    const int8_t *cb = b[0].p;
    const float *scb = b[1 + A_SCALES].p;
    float *w = dst;
    for (uint64_t n = 0; n < q->n_out; n++)
        for (uint64_t k = 0; k < q->k_in; k++)
            /* transformers' int8_vectorwise_dequant: A * SCB * 7.874015718698502e-3 in fp32 */
            w[n * q->k_in + k] = (float)cb[n * q->k_in + k] * scb[n] * 7.874015718698502e-3f;
    return NB_OK;
}

static nb_status q_read(nb_model *m, size_t i, void *dst, nb_ctx *ctx) {
    q_impl *im = m->impl;
    const nb_tensor *t = &m->tensors[i];
    const q_tensor *q = t->priv;
    if (q->kind == Q_PASS) return nb_model_read_tensor(im->st, q->src, dst, ctx);
    q_bytes b[1 + A_COUNT];
    memset(b, 0, sizeof b);
    nb_status st = get_bytes(im->st, q->src, 4, &b[0], ctx);
    for (int a = 0; a < A_COUNT && st == NB_OK; a++) st = get_bytes(im->st, q->aux[a], 4, &b[1 + a], ctx);
    if (st == NB_OK) {
        switch (q->kind) {
        case Q_BNB4: st = read_bnb4(m, t, q, b, dst, ctx); break;
        case Q_BNB8: st = read_bnb8(q, b, dst); break;
        case Q_GPTQ:
        case Q_AWQ: st = read_gptq_awq(m, t, q, b, dst, ctx); break;
        case Q_CT: st = read_ct(m, t, q, b, dst, ctx); break;
        default: st = nb_err(ctx, NB_ERR_INTERNAL, "%s: tensor '%s': bad kind", m->path, t->name);
        }
    }
    put_bytes(im->st, q->src, &b[0]);
    for (int a = 0; a < A_COUNT; a++) put_bytes(im->st, q->aux[a], &b[1 + a]);
    return st;
}

static const nb_model_ops k_q_ops = {q_read, q_close};

/* ---- recognising each layout --------------------------------------------------------------- */

typedef struct q_build {
    nb_model *st;
    const q_cfg *cfg;
    name_index ix;
    bool *consumed;
    nb_ctx *ctx;
} q_build;

static void consume(q_build *b, size_t i) {
    if (i != SIZE_MAX) b->consumed[i] = true;
}

/* Read the small JSON quant_state tensor of a bnb 4-bit weight (quant/hf_pack.h
 * parses it) and hold it to what the importer reads: a 2-D weight, nested
 * blocks of 256. */
static nb_status bnb4_state(q_build *b, size_t si, q_tensor *q, char *qtype, size_t qtlen) {
    nb_ctx *ctx = b->ctx;
    const nb_tensor *t = &b->st->tensors[si];
    NB_RETURN_IF(ctx, t->type != NB_TYPE_U8 || t->nbytes > (1u << 16), NB_ERR_FORMAT,
                 "%s: tensor '%s' must be a small U8 tensor holding JSON", b->st->path, t->name);
    const void *p;
    void *owned;
    NB_TRY(nb_model_tensor_bytes(b->st, si, &p, &owned, ctx));
    nb_bnb_quant_state qs;
    nb_status st = nb_bnb_quant_state_parse(p, (size_t)t->nbytes, t->name, &qs, ctx);
    free(owned);
    if (st != NB_OK) return nb_err_prefix(ctx, "%s", b->st->path);
    NB_RETURN_IF(ctx, qs.n_dims != 2 || qs.shape[0] > (int64_t)1e12 || qs.shape[1] > (int64_t)1e12, NB_ERR_FORMAT,
                 "%s: tensor '%s': 'shape' must be [out_features, in_features]", b->st->path, t->name);
    NB_RETURN_IF(ctx, qs.nested && qs.nested_blocksize != NB_NF4_DQ_NESTED, NB_ERR_UNSUPPORTED,
                 "%s: tensor '%s': nested_blocksize %u (bitsandbytes writes 256)", b->st->path, t->name,
                 qs.nested_blocksize);
    snprintf(qtype, qtlen, "%s", qs.quant_type);
    q->n_out = (uint64_t)qs.shape[0];
    q->k_in = (uint64_t)qs.shape[1];
    q->group = qs.blocksize;
    q->offset = (float)qs.nested_offset;
    return NB_OK;
}

static nb_status add_bnb4(q_build *b, size_t i, size_t plen, q_tensor *q, nb_tensor *out) {
    nb_ctx *ctx = b->ctx;
    nb_model *st = b->st;
    const char *name = st->tensors[i].name; /* "<module>.weight" */
    size_t nl = strlen(name);
    size_t abs = index_find(&b->ix, name, nl, ".absmax");
    size_t qs = index_find(&b->ix, name, nl, ".quant_state.bitsandbytes__nf4");
    if (qs == SIZE_MAX) qs = index_find(&b->ix, name, nl, ".quant_state.bitsandbytes__fp4");
    NB_TRY(need(st, qs, name, nl, ".quant_state.bitsandbytes__nf4", name, ctx));
    char qtype[16];
    NB_TRY(bnb4_state(b, qs, q, qtype, sizeof qtype));
    NB_RETURN_IF(ctx, strcmp(qtype, "nf4") != 0 && strcmp(qtype, "fp4") != 0, NB_ERR_UNSUPPORTED,
                 "%s: tensor '%s': quant_type '%s' is not supported (nf4, fp4)", st->path, name, qtype);
    q->fp4 = qtype[0] == 'f';
    q->kind = Q_BNB4;
    q->src = i;
    q->aux[A_SCALES] = abs;
    q->aux[A_NESTED] = index_find(&b->ix, name, nl, ".nested_absmax");
    q->aux[A_NESTED_MAP] = index_find(&b->ix, name, nl, ".nested_quant_map");
    q->nested = q->aux[A_NESTED] != SIZE_MAX;
    uint64_t n, blocks;
    NB_RETURN_IF(ctx, !nb_mul_u64(q->n_out, q->k_in, &n), NB_ERR_RANGE, "%s: tensor '%s': too large", st->path, name);
    blocks = ceil_div(n, q->group);
    NB_TRY(need(st, abs, name, nl, ".absmax", name, ctx));
    NB_TRY(expect(st, i, NB_TYPE_U8, (int64_t)((n + 1) / 2), 1, ctx));
    NB_TRY(expect(st, abs, q->nested ? NB_TYPE_U8 : NB_TYPE_F32, (int64_t)blocks, -1, ctx));
    if (q->nested) {
        NB_TRY(need(st, q->aux[A_NESTED_MAP], name, nl, ".nested_quant_map", name, ctx));
        NB_TRY(expect(st, q->aux[A_NESTED], NB_TYPE_F32, (int64_t)ceil_div(blocks, NB_NF4_DQ_NESTED), -1, ctx));
        NB_TRY(expect(st, q->aux[A_NESTED_MAP], NB_TYPE_F32, 256, -1, ctx));
        NB_RETURN_IF(ctx, !isfinite(q->offset), NB_ERR_FORMAT, "%s: tensor '%s': nested_offset is not finite",
                     st->path, name);
    }
    consume(b, qs);
    consume(b, index_find(&b->ix, name, nl, ".quant_map"));
    consume(b, q->aux[A_SCALES]);
    consume(b, q->aux[A_NESTED]);
    consume(b, q->aux[A_NESTED_MAP]);
    bool lossless = !q->fp4 && q->group % NB_NF4_BLOCK == 0 && q->k_in % NB_NF4_BLOCK == 0;
    out->type = lossless ? NB_TYPE_NF4 : NB_TYPE_F32;
    (void)plen;
    return NB_OK;
}

static nb_status add_bnb8(q_build *b, size_t i, size_t plen, q_tensor *q, nb_tensor *out) {
    nb_ctx *ctx = b->ctx;
    nb_model *st = b->st;
    const nb_tensor *w = &st->tensors[i];
    const char *name = w->name;
    size_t scb = index_find(&b->ix, name, plen, ".SCB");
    size_t wf = index_find(&b->ix, name, plen, ".weight_format");
    NB_RETURN_IF(ctx, w->n_dims != 2, NB_ERR_FORMAT, "%s: tensor '%s': int8 weight must be 2-D", st->path, name);
    q->kind = Q_BNB8;
    q->src = i;
    q->n_out = (uint64_t)w->ne[1];
    q->k_in = (uint64_t)w->ne[0];
    q->aux[A_SCALES] = scb;
    NB_TRY(expect(st, i, NB_TYPE_I8, (int64_t)q->n_out, (int64_t)q->k_in, ctx));
    NB_TRY(expect(st, scb, NB_TYPE_F32, (int64_t)q->n_out, -1, ctx));
    if (wf != SIZE_MAX) {
        const nb_tensor *f = &st->tensors[wf];
        const void *p;
        void *owned;
        NB_RETURN_IF(ctx, f->type != NB_TYPE_U8 || f->nbytes != 1, NB_ERR_FORMAT,
                     "%s: tensor '%s' must be one U8 value", st->path, f->name);
        NB_TRY(nb_model_tensor_bytes(st, wf, &p, &owned, ctx));
        unsigned v = *(const unsigned char *)p;
        free(owned);
        NB_RETURN_IF(ctx, v != 0, NB_ERR_UNSUPPORTED,
                     "%s: tensor '%s' = %u: only the row-major int8 layout (0) is supported", st->path, f->name, v);
        consume(b, wf);
    }
    consume(b, scb);
    out->type = NB_TYPE_F32;
    return NB_OK;
}

/* Scan GPTQ/AWQ zeros and g_idx (small) to see whether nibble's INT4 holds the grid. */
static nb_status int4_fit(q_build *b, const q_tensor *q, nb_type *out) {
    *out = NB_TYPE_F32;
    if (q->bits != 4 || q->k_in % q->group || q->k_in % 8 || q->n_out % 8) return NB_OK;
    nb_type asym = nb_type_int4_find(true, (int)q->group), sym = nb_type_int4_find(false, (int)q->group);
    if (asym == NB_TYPE_COUNT) return NB_OK;
    q_bytes z, g;
    NB_TRY(get_bytes(b->st, q->aux[A_ZEROS], 4, &z, b->ctx));
    nb_status st = get_bytes(b->st, q->aux[A_GIDX], 4, &g, b->ctx);
    if (st != NB_OK) {
        put_bytes(b->st, q->aux[A_ZEROS], &z);
        return st;
    }
    bool fits = true, all8 = true;
    const int32_t *gi = g.p;
    for (uint64_t k = 0; gi && fits && k < q->k_in; k++) fits = gi[k] == (int32_t)(k / q->group);
    uint64_t ng = q->k_in / q->group;
    for (uint64_t gg = 0; fits && gg < ng; gg++)
        for (uint64_t n = 0; fits && n < q->n_out; n++) {
            int zz;
            if (q->kind == Q_GPTQ) {
                nb_gptq_layout l = gptq_layout(q);
                zz = nb_gptq_zero(&l, z.p, gg, n);
            } else {
                zz = (int)(((uint32_t)((const int32_t *)z.p)[gg * (q->n_out / 8) + n / 8] >> (4 * (n % 8))) & 15);
            }
            fits = zz <= 15;
            all8 = all8 && zz == 8;
        }
    put_bytes(b->st, q->aux[A_ZEROS], &z);
    put_bytes(b->st, q->aux[A_GIDX], &g);
    if (fits) *out = (q->kind == Q_GPTQ && all8) ? sym : asym;
    return NB_OK;
}

static nb_status add_gptq_awq(q_build *b, size_t i, size_t plen, q_tensor *q, nb_tensor *out) {
    nb_ctx *ctx = b->ctx;
    nb_model *st = b->st;
    const nb_tensor *w = &st->tensors[i];
    const char *name = w->name; /* "<module>.qweight" */
    bool gptq = b->cfg->kind == Q_GPTQ;
    q->kind = b->cfg->kind;
    q->src = i;
    q->bits = b->cfg->bits;
    q->v1 = gptq && b->cfg->v1;
    q->aux[A_SCALES] = index_find(&b->ix, name, plen, ".scales");
    q->aux[A_ZEROS] = index_find(&b->ix, name, plen, ".qzeros");
    q->aux[A_GIDX] = gptq ? index_find(&b->ix, name, plen, ".g_idx") : SIZE_MAX;
    NB_TRY(need(st, q->aux[A_SCALES], name, plen, ".scales", name, ctx));
    NB_TRY(need(st, q->aux[A_ZEROS], name, plen, ".qzeros", name, ctx));
    NB_RETURN_IF(ctx, w->type != NB_TYPE_I32 || w->n_dims != 2, NB_ERR_FORMAT, "%s: tensor '%s' must be a 2-D I32 tensor",
                 st->path, name);
    uint64_t rows = (uint64_t)w->ne[1], cols = (uint64_t)w->ne[0];
    if (gptq) {
        q->n_out = cols;
        if (q->aux[A_GIDX] != SIZE_MAX) {
            const nb_tensor *g = &st->tensors[q->aux[A_GIDX]];
            NB_RETURN_IF(ctx, g->type != NB_TYPE_I32 || g->n_dims != 1, NB_ERR_FORMAT,
                         "%s: tensor '%s' must be a 1-D I32 tensor", st->path, g->name);
            q->k_in = (uint64_t)g->ne[0];
        } else {
            q->k_in = rows * 32 / q->bits;
        }
        NB_RETURN_IF(ctx, q->k_in == 0 || ceil_div(q->k_in * q->bits, 32) != rows, NB_ERR_FORMAT,
                     "%s: tensor '%s' has %llu rows; %llu inputs at %u bits need %llu", st->path, name,
                     (unsigned long long)rows, (unsigned long long)q->k_in, q->bits,
                     (unsigned long long)ceil_div(q->k_in * q->bits, 32));
    } else {
        q->k_in = rows;
        q->n_out = cols * 8;
        NB_RETURN_IF(ctx, rows == 0, NB_ERR_FORMAT, "%s: tensor '%s' has no rows", st->path, name);
    }
    q->group = b->cfg->group == -1 ? q->k_in : (uint64_t)b->cfg->group;
    uint64_t ng = ceil_div(q->k_in, q->group);
    uint64_t zcols = gptq ? ceil_div(q->n_out * q->bits, 32) : q->n_out / 8;
    NB_TRY(expect(st, q->aux[A_SCALES], NB_TYPE_F16, (int64_t)ng, (int64_t)q->n_out, ctx));
    NB_TRY(expect(st, q->aux[A_ZEROS], NB_TYPE_I32, (int64_t)ng, (int64_t)zcols, ctx));
    consume(b, q->aux[A_SCALES]);
    consume(b, q->aux[A_ZEROS]);
    consume(b, q->aux[A_GIDX]);
    return int4_fit(b, q, &out->type);
}

static nb_status add_ct(q_build *b, size_t i, size_t plen, q_tensor *q, nb_tensor *out) {
    nb_ctx *ctx = b->ctx;
    nb_model *st = b->st;
    const nb_tensor *w = &st->tensors[i];
    const char *name = w->name; /* "<module>.weight_packed" */
    q->kind = Q_CT;
    q->src = i;
    q->bits = b->cfg->bits;
    size_t shp = index_find(&b->ix, name, plen, ".weight_shape");
    q->aux[A_SCALES] = index_find(&b->ix, name, plen, ".weight_scale");
    q->aux[A_ZEROS] = index_find(&b->ix, name, plen, ".weight_zero_point");
    q->aux[A_GIDX] = index_find(&b->ix, name, plen, ".weight_g_idx");
    NB_TRY(need(st, shp, name, plen, ".weight_shape", name, ctx));
    NB_TRY(need(st, q->aux[A_SCALES], name, plen, ".weight_scale", name, ctx));
    NB_RETURN_IF(ctx, w->type != NB_TYPE_I32 || w->n_dims != 2, NB_ERR_FORMAT, "%s: tensor '%s' must be a 2-D I32 tensor",
                 st->path, name);
    NB_TRY(expect(st, shp, NB_TYPE_I64, 2, -1, ctx));
    q_bytes sb;
    NB_TRY(get_bytes(st, shp, 8, &sb, ctx));
    int64_t n_out = ((const int64_t *)sb.p)[0], k_in = ((const int64_t *)sb.p)[1];
    put_bytes(st, shp, &sb);
    NB_RETURN_IF(ctx, n_out != w->ne[1] || k_in < 1 || k_in > ((int64_t)1 << 40) || (uint64_t)w->ne[0] != ceil_div((uint64_t)k_in * q->bits, 32),
                 NB_ERR_FORMAT, "%s: tensor '%s' is [%lld, %lld] but weight_shape [%lld, %lld] at %u bits needs [%lld, %llu]",
                 st->path, name, (long long)w->ne[1], (long long)w->ne[0], (long long)n_out, (long long)k_in, q->bits,
                 (long long)n_out, (unsigned long long)ceil_div((uint64_t)(k_in > 0 ? k_in : 0) * q->bits, 32));
    q->n_out = (uint64_t)n_out;
    q->k_in = (uint64_t)k_in;
    const nb_tensor *s = &st->tensors[q->aux[A_SCALES]];
    NB_RETURN_IF(ctx, s->type != NB_TYPE_F16 && s->type != NB_TYPE_BF16 && s->type != NB_TYPE_F32, NB_ERR_FORMAT,
                 "%s: tensor '%s' is %s; expected F16, BF16 or F32", st->path, s->name, nb_type_name(s->type));
    uint64_t ng = s->n_dims == 2 ? (uint64_t)s->ne[0] : 0;
    NB_RETURN_IF(ctx, s->n_dims != 2 || (uint64_t)s->ne[1] != q->n_out || ng == 0 || q->k_in % ng != 0, NB_ERR_FORMAT,
                 "%s: tensor '%s' must be [%llu, groups] with groups dividing %llu", st->path, s->name,
                 (unsigned long long)q->n_out, (unsigned long long)q->k_in);
    q->group = q->k_in / ng;
    if (q->aux[A_ZEROS] != SIZE_MAX)
        NB_TRY(expect(st, q->aux[A_ZEROS], NB_TYPE_I32, (int64_t)ceil_div(q->n_out * q->bits, 32), (int64_t)ng, ctx));
    if (q->aux[A_GIDX] != SIZE_MAX) NB_TRY(expect(st, q->aux[A_GIDX], NB_TYPE_I32, (int64_t)q->k_in, -1, ctx));
    consume(b, shp);
    consume(b, q->aux[A_SCALES]);
    consume(b, q->aux[A_ZEROS]);
    consume(b, q->aux[A_GIDX]);
    out->type = NB_TYPE_F32;
    nb_type t = nb_type_int4_find(q->aux[A_ZEROS] != SIZE_MAX, (int)q->group);
    if (q->bits != 4 || t == NB_TYPE_COUNT || q->aux[A_GIDX] != SIZE_MAX) return NB_OK;
    /* INT4 stores fp16 scales: every scale must convert exactly */
    q_bytes sc;
    NB_TRY(get_bytes(st, q->aux[A_SCALES], 4, &sc, ctx));
    bool exact = true;
    for (uint64_t k = 0; exact && k < q->n_out * ng; k++) {
        float v = scale_at(s->type, sc.p, k);
        exact = nb_f16_to_f32(nb_f32_to_f16(v)) == v;
    }
    put_bytes(st, q->aux[A_SCALES], &sc);
    if (exact) out->type = t;
    return NB_OK;
}

/* One type per group size across the checkpoint: an MoE's experts are stacked
 * into one tensor (formats/hf.c), which needs them to agree, so one weight
 * that INT4 cannot hold (a GPTQ v1 zero point of 16, a scale not exact in
 * fp16) sends every weight with its group size to F32, and a mix of
 * symmetric and asymmetric ones becomes asymmetric (zero 8 stored: lossless). */
static nb_status unify_types(nb_model *m, nb_ctx *ctx) {
    typedef struct { uint64_t group; bool any_f32, any_asym; } agg;
    agg *a = NULL;
    size_t na = 0;
    nb_status st = NB_OK;
    for (int pass = 0; pass < 2 && st == NB_OK; pass++)
        for (size_t i = 0; i < m->n_tensors && st == NB_OK; i++) {
            nb_tensor *t = &m->tensors[i];
            const q_tensor *q = t->priv;
            if (q->kind != Q_GPTQ && q->kind != Q_AWQ && q->kind != Q_CT) continue;
            size_t k = 0;
            while (k < na && a[k].group != q->group) k++;
            if (k == na) { /* pass 0 only: every group size is seen there */
                agg *na2 = realloc(a, (na + 1) * sizeof *a);
                if (!na2) {
                    st = nb_err(ctx, NB_ERR_NOMEM, "%s: out of memory", m->path);
                    break;
                }
                a = na2;
                a[na++] = (agg){q->group, false, false};
            }
            uint32_t g;
            bool asym = false;
            if (pass == 0) {
                if (t->type == NB_TYPE_F32) a[k].any_f32 = true;
                else if (nb_int4_params(t->type, &g, &asym) && asym) a[k].any_asym = true;
                continue;
            }
            nb_type want = a[k].any_f32 ? NB_TYPE_F32 : a[k].any_asym ? nb_type_int4_find(true, (int)q->group) : t->type;
            if (want == t->type) continue;
            uint64_t rb;
            t->type = want;
            st = nb_type_row_bytes(want, q->k_in, &rb, ctx, t->name);
            if (st == NB_OK && !nb_mul_u64(rb, q->n_out, &t->nbytes))
                st = nb_err(ctx, NB_ERR_RANGE, "%s: tensor '%s': too large", m->path, t->name);
        }
    free(a);
    return st;
}

/* Suffix that marks the packed tensor of each method; "" = bnb (decided by companions). */
static const char *anchor_suffix(q_kind k) {
    switch (k) {
    case Q_GPTQ:
    case Q_AWQ: return ".qweight";
    case Q_CT: return ".weight_packed";
    default: return ".weight";
    }
}

static nb_status build(q_build *b, nb_model *m, q_impl *im) {
    nb_ctx *ctx = b->ctx;
    nb_model *st = b->st;
    const char *suf = anchor_suffix(b->cfg->kind);
    size_t sl = strlen(suf);
    m->tensors = nb_calloc(ctx, st->n_tensors ? st->n_tensors : 1, sizeof *m->tensors, "tensors");
    im->qt = nb_calloc(ctx, st->n_tensors ? st->n_tensors : 1, sizeof *im->qt, "tensors");
    if (!m->tensors || !im->qt) return NB_ERR_NOMEM;
    /* pass 1: the quantized weights (they consume their companions) */
    size_t n_q = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const nb_tensor *s = &st->tensors[i];
        size_t nl = strlen(s->name);
        if (b->consumed[i] || nl <= sl || strcmp(s->name + nl - sl, suf) != 0) continue;
        size_t plen = nl - sl;
        q_tensor *q = &im->qt[m->n_tensors];
        nb_tensor *t = &m->tensors[m->n_tensors];
        for (int a = 0; a < A_COUNT; a++) q->aux[a] = SIZE_MAX;
        nb_status rc;
        if (b->cfg->kind == Q_BNB4) {
            if (index_find(&b->ix, s->name, nl, ".absmax") == SIZE_MAX &&
                index_find(&b->ix, s->name, nl, ".quant_state.bitsandbytes__nf4") == SIZE_MAX &&
                index_find(&b->ix, s->name, nl, ".quant_state.bitsandbytes__fp4") == SIZE_MAX)
                continue; /* a module bitsandbytes left in full precision */
            rc = add_bnb4(b, i, plen, q, t);
        } else if (b->cfg->kind == Q_BNB8) {
            if (s->type != NB_TYPE_I8 && index_find(&b->ix, s->name, plen, ".SCB") == SIZE_MAX) continue;
            NB_TRY(need(st, index_find(&b->ix, s->name, plen, ".SCB"), s->name, plen, ".SCB", s->name, ctx));
            rc = add_bnb8(b, i, plen, q, t);
        } else if (b->cfg->kind == Q_CT) {
            rc = add_ct(b, i, plen, q, t);
        } else {
            rc = add_gptq_awq(b, i, plen, q, t);
        }
        NB_TRY(rc);
        /* the tensor as the rest of nibble sees it: "<module>.weight", {in, out} */
        char name[NB_MAX_NAME + 1];
        NB_RETURN_IF(ctx, plen + 7 > NB_MAX_NAME, NB_ERR_FORMAT, "%s: tensor name '%s' is too long", st->path, s->name);
        memcpy(name, s->name, plen);
        memcpy(name + plen, ".weight", 8);
        NB_RETURN_IF(ctx, b->cfg->kind != Q_BNB4 && b->cfg->kind != Q_BNB8 && index_find(&b->ix, name, strlen(name), "") != SIZE_MAX,
                     NB_ERR_FORMAT, "%s: both '%s' and '%s' are present", st->path, name, s->name);
        t->name = nb_strdup(ctx, name);
        if (!t->name) return NB_ERR_NOMEM;
        m->n_tensors++;
        b->consumed[i] = true;
        t->n_dims = 2;
        t->ne[0] = (int64_t)q->k_in;
        t->ne[1] = (int64_t)q->n_out;
        t->ne[2] = t->ne[3] = 1;
        NB_TRY(nb_type_row_bytes(t->type, q->k_in, &t->nbytes, ctx, t->name));
        NB_RETURN_IF(ctx, !nb_mul_u64(t->nbytes, q->n_out, &t->nbytes), NB_ERR_RANGE, "%s: tensor '%s': too large",
                     st->path, t->name);
        t->priv = q;
        n_q++;
    }
    NB_RETURN_IF(ctx, n_q == 0, NB_ERR_FORMAT,
                 "%s: config.json has a %s quantization_config but no tensor is quantized that way (no '*%s')",
                 st->path, b->cfg->method, b->cfg->kind == Q_BNB4 ? ".weight.absmax" : b->cfg->kind == Q_BNB8 ? ".SCB" : suf);
    NB_TRY(unify_types(m, ctx));
    /* pass 2: everything else, unchanged */
    for (size_t i = 0; i < st->n_tensors; i++) {
        if (b->consumed[i]) continue;
        q_tensor *q = &im->qt[m->n_tensors];
        nb_tensor *t = &m->tensors[m->n_tensors];
        *t = st->tensors[i];
        t->name = nb_strdup(ctx, st->tensors[i].name);
        if (!t->name) return NB_ERR_NOMEM;
        m->n_tensors++;
        q->kind = Q_PASS;
        q->src = i;
        t->priv = q;
    }
    return NB_OK;
}

nb_status nb_hfq_wrap(nb_model **stp, const char *config_json, size_t config_len, const char *cfg_path,
                      nb_ctx *ctx) {
    cJSON *root = cJSON_ParseWithLength(config_json, config_len);
    if (!root) return nb_err(ctx, NB_ERR_FORMAT, "%s: not valid JSON", cfg_path);
    nb_json_last_wins(root);
    nb_status st = NB_OK;
    nb_model *m = NULL;
    q_impl *im = NULL;
    q_build b;
    memset(&b, 0, sizeof b);
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (!qc) {
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
        if (cJSON_IsObject(tc)) qc = cJSON_GetObjectItemCaseSensitive(tc, "quantization_config");
    }
    if (!qc || cJSON_IsNull(qc)) goto done;
    if (!cJSON_IsObject(qc)) NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT, "%s: quantization_config must be an object", cfg_path);
    q_cfg cfg;
    NB_CHECK_GOTO(st, cfg_read(qc, &cfg, cfg_path, ctx), done);
    b.st = *stp;
    b.cfg = &cfg;
    b.ctx = ctx;
    b.consumed = nb_calloc(ctx, b.st->n_tensors ? b.st->n_tensors : 1, sizeof *b.consumed, "tensor flags");
    if (!b.consumed) NB_FAIL_GOTO(st, done, ctx, NB_ERR_NOMEM, "out of memory");
    NB_CHECK_GOTO(st, index_build(&b.ix, b.st, ctx), done);
    m = nb_model_alloc(b.st->path, b.st->format, ctx);
    im = nb_calloc(ctx, 1, sizeof *im, "quantized model");
    if (!m || !im) NB_FAIL_GOTO(st, done, ctx, NB_ERR_NOMEM, "out of memory");
    m->impl = im;
    m->ops = &k_q_ops;
    m->file_bytes = b.st->file_bytes;
    NB_CHECK_GOTO(st, build(&b, m, im), done);
    NB_CHECK_GOTO(st, nb_kvset_copy(&m->kv, &b.st->kv, ctx), done);
    NB_DEBUG(ctx, "%s: %s checkpoint, %zu tensors", cfg_path, cfg.method, m->n_tensors);
    im->st = *stp;
    *stp = m;
    m = NULL;
done:
    if (m) {
        if (im) im->st = NULL; /* still the caller's */
        q_close(m);
    } else if (im && !im->st) {
        free(im->qt);
        free(im);
    }
    free(b.ix.e);
    free(b.consumed);
    cJSON_Delete(root);
    return st;
}
