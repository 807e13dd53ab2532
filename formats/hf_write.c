/* formats/hf_write.c — Hugging Face model directories out (see formats/hf_write.h). */
#include "formats/hf_write.h"

#include "core/adir.h"
#include "core/afile.h"
#include "core/cleanup.h"
#include "core/progress.h"
#include "core/str.h"
#include "formats/arch.h"
#include "formats/convert.h"
#include "formats/hf.h"
#include "formats/json_strict.h"
#include "quant/hf_pack.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The tokenizer writer lives in formats/hf_tokenizer.{c,h} (issue 13 part 1).
 * Until a build has it, HF directories get no tokenizer files; the one call
 * site is write_tokenizer() below. */
#if defined(__has_include)
#if __has_include("formats/hf_tokenizer.h")
#include "formats/hf_tokenizer.h"
#define NB_HAVE_HF_TOKENIZER 1
#endif
#endif

/* ---- names -------------------------------------------------------------------- */

bool nb_hf_quant_from_name(const char *name, nb_hf_quant *out) {
    static const struct { const char *n; nb_hf_quant q; } k[] = {
        {"hf", NB_HF_PLAIN}, {"bnb-nf4", NB_HF_BNB_NF4}, {"gptq", NB_HF_GPTQ}, {"awq", NB_HF_AWQ}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (strcmp(name, k[i].n) == 0) { *out = k[i].q; return true; }
    return false;
}

const char *nb_hf_quant_name(nb_hf_quant q) {
    switch (q) {
    case NB_HF_BNB_NF4: return "bnb-nf4";
    case NB_HF_GPTQ: return "gptq";
    case NB_HF_AWQ: return "awq";
    default: return "hf";
    }
}

bool nb_hf_is_linear(const char *g) {
    static const char *const k[] = {"attn_q.weight",  "attn_k.weight", "attn_v.weight", "attn_output.weight",
                                    "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight", "ffn_gate_shexp.weight",
                                    "ffn_up_shexp.weight", "ffn_down_shexp.weight"};
    if (!nb_str_starts_with(g, "blk.")) return false;
    const char *p = g + 4;
    if (*p < '0' || *p > '9') return false;
    while (*p >= '0' && *p <= '9') p++;
    if (*p++ != '.') return false;
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (strcmp(p, k[i]) == 0) return true;
    return false;
}

/* ---- the output table ------------------------------------------------------------ */

typedef enum {
    E_PLAIN,
    E_BNB_W, E_BNB_ABSMAX, E_BNB_QMAP, E_BNB_NABSMAX, E_BNB_NQMAP, E_BNB_STATE,
    E_GPTQ_QW, E_GPTQ_QZ, E_GPTQ_SC, E_GPTQ_GIDX,
    E_AWQ_QW, E_AWQ_QZ, E_AWQ_SC
} ekind;

typedef struct entry {
    char *name;     /* HF name */
    ekind kind;
    size_t src;     /* source tensor */
    int expert;     /* slice of a stacked tensor, else -1 */
    nb_xform xf;
    nb_type type;
    uint32_t n_dims;
    int64_t ne[NB_MAX_DIMS];
    uint64_t nel, nbytes;
    char *state;    /* E_BNB_STATE: the quant_state JSON */
    size_t shard;
} entry;

typedef struct writer {
    nb_model *m;
    const nb_hf_write_opts *o;
    const nb_arch *a;
    nb_hparams hp;
    nb_type dtype;
    entry *e;
    size_t n, cap;
    /* one source tensor's product, reused by every entry it feeds */
    size_t c_src;
    int c_expert;
    bool c_valid;
    float *f32;           /* plain: the slice in F32, xform applied */
    nb_nf4_state nf4;     /* bnb */
    nb_gptq_tensors gq;   /* gptq */
    nb_awq_tensors aw;    /* awq */
    char **skip;          /* quantized layouts: module suffixes left unquantized ("mlp.gate") */
    size_t n_skip;
    uint32_t q_group;     /* gptq/awq: the group of the linears' INT4 type */
    bool q_asym;
    nb_type q_type;
} writer;

static nb_status add_entry(writer *w, const char *name, ekind kind, size_t src, int expert, nb_xform xf, nb_type type,
                           uint32_t n_dims, const int64_t *ne, nb_ctx *ctx) {
    if (w->n == w->cap) {
        size_t nc = w->cap ? 2 * w->cap : 64;
        entry *ne2 = realloc(w->e, nc * sizeof *ne2);
        if (!ne2) return nb_err(ctx, NB_ERR_NOMEM, "out of memory for the tensor table");
        w->e = ne2;
        w->cap = nc;
    }
    entry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    e->name = nb_strdup(ctx, name);
    if (!e->name) return NB_ERR_NOMEM;
    w->n++;
    e->kind = kind;
    e->src = src;
    e->expert = expert;
    e->xf = xf;
    e->type = type;
    e->n_dims = n_dims;
    uint64_t nel = 1;
    for (uint32_t d = 0; d < NB_MAX_DIMS; d++) {
        e->ne[d] = d < n_dims ? ne[d] : 1;
        nel *= (uint64_t)e->ne[d];
    }
    e->nel = nel;
    return nb_type_row_bytes(type, nel, &e->nbytes, ctx, name);
}

static uint64_t slice_elems(const nb_tensor *t) { return (uint64_t)t->ne[0] * (uint64_t)t->ne[1]; }

/* ---- products ---------------------------------------------------------------------- */

static void cache_drop(writer *w) {
    free(w->f32);
    w->f32 = NULL;
    nb_nf4_state_free(&w->nf4);
    free(w->gq.qweight); free(w->gq.qzeros); free(w->gq.scales); free(w->gq.g_idx);
    memset(&w->gq, 0, sizeof w->gq);
    free(w->aw.qweight); free(w->aw.qzeros); free(w->aw.scales);
    memset(&w->aw, 0, sizeof w->aw);
    w->c_valid = false;
}

/* Slice `expert` of source tensor i in F32 with the HF transformation applied. */
static nb_status read_slice_f32(writer *w, size_t i, int expert, nb_xform xf, float **out, nb_ctx *ctx) {
    nb_model *m = w->m;
    const nb_tensor *t = &m->tensors[i];
    uint64_t all = nb_tensor_nelements(t), n = expert >= 0 ? slice_elems(t) : all;
    float *x = nb_malloc(ctx, (size_t)all * sizeof(float), "tensor in f32");
    if (!x) return NB_ERR_NOMEM;
    nb_status st = nb_model_read_f32(m, i, x, ctx);
    if (st != NB_OK) { free(x); return st; }
    nb_model_release_tensor(m, i);
    if (expert > 0) memmove(x, x + (uint64_t)expert * n, (size_t)n * sizeof(float));
    if (xf == NB_XF_NORM_SHIFT) {
        for (uint64_t k = 0; k < n; k++) x[k] -= 1.0f;
    } else if (xf == NB_XF_PERMUTE_Q || xf == NB_XF_PERMUTE_K) {
        float *y = nb_malloc(ctx, (size_t)n * sizeof(float), "permuted tensor");
        if (!y) { free(x); return NB_ERR_NOMEM; }
        uint32_t heads = xf == NB_XF_PERMUTE_Q ? w->hp.n_head : w->hp.n_head_kv;
        uint64_t rows = n / (uint64_t)t->ne[0];
        st = nb_qk_permute(x, y, rows, (uint64_t)t->ne[0] * sizeof(float), heads, true, t->name, ctx);
        free(x);
        if (st != NB_OK) { free(y); return st; }
        x = y;
    }
    *out = x;
    return NB_OK;
}

/* The packed rows (INT4 / NF4 blocks) of source tensor i, or of slice
 * `expert` of a stacked tensor, in HF row order. */
static nb_status read_block_rows(writer *w, size_t i, int expert, nb_xform xf, void **out, nb_ctx *ctx) {
    const nb_tensor *t = &w->m->tensors[i];
    void *b = nb_malloc(ctx, (size_t)t->nbytes, "quantized tensor");
    if (!b) return NB_ERR_NOMEM;
    nb_status st = nb_model_read_tensor(w->m, i, b, ctx);
    nb_model_release_tensor(w->m, i);
    if (st == NB_OK && expert > 0) {
        uint64_t slice = t->nbytes / (uint64_t)t->ne[2];
        memmove(b, (unsigned char *)b + (uint64_t)expert * slice, (size_t)slice);
    }
    if (st == NB_OK && (xf == NB_XF_PERMUTE_Q || xf == NB_XF_PERMUTE_K)) {
        void *y = nb_malloc(ctx, (size_t)t->nbytes, "permuted tensor");
        if (!y) st = NB_ERR_NOMEM;
        else {
            uint32_t heads = xf == NB_XF_PERMUTE_Q ? w->hp.n_head : w->hp.n_head_kv;
            uint64_t rows = (uint64_t)t->ne[1];
            st = nb_qk_permute(b, y, rows, t->nbytes / rows, heads, true, t->name, ctx);
            free(b);
            b = y;
        }
    }
    if (st != NB_OK) { free(b); return st; }
    *out = b;
    return NB_OK;
}

static bool is_bnb(ekind k) { return k >= E_BNB_W && k <= E_BNB_STATE; }

/* A source tensor already in the NF4 flavour of the export (nf4 for fp32
 * absmax, nf4_dq for double quantization) is repacked, not requantized: a
 * calibrated job's scales and codes reach the checkpoint unchanged. */
static bool bnb_keeps_blocks(const writer *w, const nb_tensor *t) {
    return w->o->bnb_no_double_quant ? t->type == NB_TYPE_NF4 : t->type == NB_TYPE_NF4_DQ;
}
static bool is_gptq(ekind k) { return k >= E_GPTQ_QW && k <= E_GPTQ_GIDX; }

static nb_status produce(writer *w, const entry *e, nb_ctx *ctx) {
    if (w->c_valid && w->c_src == e->src && w->c_expert == e->expert) return NB_OK;
    cache_drop(w);
    const nb_tensor *t = &w->m->tensors[e->src];
    nb_status st = NB_OK;
    if (e->kind == E_PLAIN) {
        NB_TRY(read_slice_f32(w, e->src, e->expert, e->xf, &w->f32, ctx));
    } else if (is_bnb(e->kind)) {
        uint64_t n = e->expert >= 0 ? slice_elems(t) : nb_tensor_nelements(t);
        if (bnb_keeps_blocks(w, t)) {
            void *b = NULL;
            NB_TRY(read_block_rows(w, e->src, e->expert, e->xf, &b, ctx));
            st = nb_bnb_nf4_state_from_blocks(t->type, b, n, &w->nf4, t->name, ctx);
            free(b);
        } else {
            float *x = NULL;
            NB_TRY(read_slice_f32(w, e->src, e->expert, e->xf, &x, ctx));
            st = nb_nf4_quantize_tensor(x, n, NB_NF4_BLOCK, !w->o->bnb_no_double_quant, &w->nf4, ctx);
            free(x);
        }
        if (st != NB_OK) return nb_err_prefix(ctx, "%s: tensor '%s'", w->m->path, t->name);
    } else {
        void *b = NULL;
        NB_TRY(read_block_rows(w, e->src, e->expert, e->xf, &b, ctx));
        uint64_t K = (uint64_t)t->ne[0], N = (uint64_t)t->ne[1], G = w->q_group;
        if (is_gptq(e->kind)) {
            nb_gptq_sizes s = nb_gptq_sizes_of(N, K, (uint32_t)G);
            w->gq.qweight = nb_malloc(ctx, (size_t)s.qweight, "qweight");
            w->gq.qzeros = nb_malloc(ctx, (size_t)s.qzeros, "qzeros");
            w->gq.scales = nb_malloc(ctx, (size_t)s.scales, "scales");
            w->gq.g_idx = nb_malloc(ctx, (size_t)s.g_idx, "g_idx");
            st = !w->gq.qweight || !w->gq.qzeros || !w->gq.scales || !w->gq.g_idx
                     ? NB_ERR_NOMEM
                     : nb_int4_to_gptq(t->type, b, N, K, true, &w->gq, ctx);
        } else {
            w->aw.qweight = nb_malloc(ctx, (size_t)(K * N / 2), "qweight");
            w->aw.qzeros = nb_malloc(ctx, (size_t)(K / G * N / 2), "qzeros");
            w->aw.scales = nb_malloc(ctx, (size_t)(K / G * N * 2), "scales");
            st = !w->aw.qweight || !w->aw.qzeros || !w->aw.scales ? NB_ERR_NOMEM
                                                                  : nb_int4_to_awq(t->type, b, N, K, &w->aw, ctx);
        }
        free(b);
        if (st != NB_OK) {
            cache_drop(w);
            return nb_err_prefix(ctx, "%s: tensor '%s'", w->m->path, t->name);
        }
    }
    w->c_src = e->src;
    w->c_expert = e->expert;
    w->c_valid = true;
    return NB_OK;
}

/* Bytes of entry e (after produce); *tmp receives a buffer to free, if any. */
static nb_status entry_bytes(writer *w, const entry *e, const void **data, void **tmp, nb_ctx *ctx) {
    *tmp = NULL;
    switch (e->kind) {
    case E_PLAIN: {
        uint64_t n = e->nel;
        if (e->type == NB_TYPE_F32) { *data = w->f32; return NB_OK; }
        void *b = nb_malloc(ctx, (size_t)e->nbytes, "converted tensor");
        if (!b) return NB_ERR_NOMEM;
        nb_type_get(e->type)->quantize(w->f32, b, 1, (int64_t)n, NULL);
        *data = *tmp = b;
        return NB_OK;
    }
    case E_BNB_W: *data = w->nf4.packed; return NB_OK;
    case E_BNB_ABSMAX: *data = w->nf4.double_quant ? (const void *)w->nf4.qabsmax : (const void *)w->nf4.absmax; return NB_OK;
    case E_BNB_QMAP: *data = w->nf4.code; return NB_OK;
    case E_BNB_NABSMAX: *data = w->nf4.absmax2; return NB_OK;
    case E_BNB_NQMAP: *data = w->nf4.nested_code; return NB_OK;
    case E_BNB_STATE: *data = e->state; return NB_OK;
    case E_GPTQ_QW: *data = w->gq.qweight; return NB_OK;
    case E_GPTQ_QZ: *data = w->gq.qzeros; return NB_OK;
    case E_GPTQ_SC: *data = w->gq.scales; return NB_OK;
    case E_GPTQ_GIDX: *data = w->gq.g_idx; return NB_OK;
    case E_AWQ_QW: *data = w->aw.qweight; return NB_OK;
    case E_AWQ_QZ: *data = w->aw.qzeros; return NB_OK;
    case E_AWQ_SC: *data = w->aw.scales; return NB_OK;
    }
    return nb_err(ctx, NB_ERR_INTERNAL, "hf write: unknown entry kind");
}

/* config.json / quant_state spelling of a float type. */
static const char *torch_dtype(nb_type t) {
    return t == NB_TYPE_F32 ? "float32" : t == NB_TYPE_F16 ? "float16" : "bfloat16";
}

/* ---- planning --------------------------------------------------------------------------- */

static nb_status plan_bnb(writer *w, size_t i, int expert, const char *hf, nb_xform xf, nb_ctx *ctx) {
    const nb_tensor *t = &w->m->tensors[i];
    const nb_type_traits *tr = nb_type_get(t->type);
    NB_RETURN_IF(ctx, !tr || !tr->to_f32, NB_ERR_UNSUPPORTED, "%s: tensor '%s': type %s cannot be read as numbers",
                 w->m->path, t->name, nb_type_name(t->type));
    /* the quant_state JSON's length depends on the double-quant offset: quantize once now */
    entry probe = {.kind = E_BNB_W, .src = i, .expert = expert, .xf = xf};
    NB_TRY(produce(w, &probe, ctx));
    uint64_t n = w->nf4.n;
    int64_t shape[2] = {t->ne[1], t->ne[0]};
    char *js = nb_bnb_quant_state_render(&w->nf4, torch_dtype(w->dtype), shape, 2);
    NB_RETURN_IF(ctx, !js, NB_ERR_NOMEM, "out of memory");
    char nm[NB_MAX_NAME + 64];
    int64_t ne[2] = {1, (int64_t)((n + 1) / 2)};
    nb_status st = add_entry(w, hf, E_BNB_W, i, expert, xf, NB_TYPE_U8, 2, ne, ctx);
    int64_t nb1[1] = {(int64_t)w->nf4.n_blocks};
    snprintf(nm, sizeof nm, "%s" NB_BNB_SUFFIX_ABSMAX, hf);
    if (st == NB_OK)
        st = add_entry(w, nm, E_BNB_ABSMAX, i, expert, xf, w->nf4.double_quant ? NB_TYPE_U8 : NB_TYPE_F32, 1, nb1, ctx);
    int64_t n16[1] = {16}, n256[1] = {256}, nn[1] = {(int64_t)w->nf4.n_nested}, nj[1] = {(int64_t)strlen(js)};
    snprintf(nm, sizeof nm, "%s" NB_BNB_SUFFIX_QUANT_MAP, hf);
    if (st == NB_OK) st = add_entry(w, nm, E_BNB_QMAP, i, expert, xf, NB_TYPE_F32, 1, n16, ctx);
    if (st == NB_OK && w->nf4.double_quant) {
        snprintf(nm, sizeof nm, "%s" NB_BNB_SUFFIX_NESTED_ABSMAX, hf);
        st = add_entry(w, nm, E_BNB_NABSMAX, i, expert, xf, NB_TYPE_F32, 1, nn, ctx);
        snprintf(nm, sizeof nm, "%s" NB_BNB_SUFFIX_NESTED_QUANT_MAP, hf);
        if (st == NB_OK) st = add_entry(w, nm, E_BNB_NQMAP, i, expert, xf, NB_TYPE_F32, 1, n256, ctx);
    }
    snprintf(nm, sizeof nm, "%s" NB_BNB_SUFFIX_QUANT_STATE, hf);
    if (st == NB_OK) st = add_entry(w, nm, E_BNB_STATE, i, expert, xf, NB_TYPE_U8, 1, nj, ctx);
    if (st == NB_OK) w->e[w->n - 1].state = js;
    else free(js);
    return st;
}

static nb_status plan_int4(writer *w, size_t i, int expert, const char *hf, nb_xform xf, nb_ctx *ctx) {
    const nb_tensor *t = &w->m->tensors[i];
    const char *fmt = nb_hf_quant_name(w->o->quant);
    uint32_t g = 0;
    bool asym = false;
    NB_RETURN_IF(ctx, !nb_int4_params(t->type, &g, &asym), NB_ERR_UNSUPPORTED,
                 "%s: tensor '%s' is %s: the %s export needs every linear weight in one INT4 type "
                 "(quantize with --type int4-g128, int4-asym-g128, ...)",
                 w->m->path, t->name, nb_type_name(t->type), fmt);
    if (w->q_type == NB_TYPE_COUNT) {
        w->q_type = t->type;
        w->q_group = g;
        w->q_asym = asym;
    }
    NB_RETURN_IF(ctx, t->type != w->q_type, NB_ERR_UNSUPPORTED,
                 "%s: tensor '%s' is %s but other linear weights are %s: %s's quantization_config holds one "
                 "group size and symmetry",
                 w->m->path, t->name, nb_type_name(t->type), nb_type_name(w->q_type), fmt);
    int64_t K = t->ne[0], N = t->ne[1];
    NB_RETURN_IF(ctx, N % 8 || K % 8, NB_ERR_UNSUPPORTED,
                 "%s: tensor '%s' has %lld x %lld: %s packs 8 values per int32 and needs both multiples of 8",
                 w->m->path, t->name, (long long)N, (long long)K, fmt);
    char base[NB_MAX_NAME + 64], nm[NB_MAX_NAME + 80];
    snprintf(base, sizeof base, "%s", hf);
    if (nb_str_ends_with(base, ".weight")) base[strlen(base) - 7] = 0;
    nb_status st = NB_OK;
    int64_t ng = K / (int64_t)g;
#define ADD(suffix, kind, type, d0, d1, nd)                                                                    \
    do {                                                                                                       \
        int64_t ne_[2] = {(d0), (d1)};                                                                         \
        snprintf(nm, sizeof nm, "%s%s", base, suffix);                                                         \
        if (st == NB_OK) st = add_entry(w, nm, kind, i, expert, xf, type, nd, ne_, ctx);                       \
    } while (0)
    if (w->o->quant == NB_HF_GPTQ) {
        ADD(".qweight", E_GPTQ_QW, NB_TYPE_I32, N, K / 8, 2);
        ADD(".qzeros", E_GPTQ_QZ, NB_TYPE_I32, N / 8, ng, 2);
        ADD(".scales", E_GPTQ_SC, NB_TYPE_F16, N, ng, 2);
        ADD(".g_idx", E_GPTQ_GIDX, NB_TYPE_I32, K, 1, 1);
    } else {
        ADD(".qweight", E_AWQ_QW, NB_TYPE_I32, N / 8, K, 2);
        ADD(".qzeros", E_AWQ_QZ, NB_TYPE_I32, N / 8, ng, 2);
        ADD(".scales", E_AWQ_SC, NB_TYPE_F16, N, ng, 2);
    }
#undef ADD
    return st;
}

/* A Linear inside the decoder blocks that a quantized layout keeps in float
 * (the MoE router "mlp.gate", a shared-expert gate, shared experts): its
 * module name without "model.layers.N." goes to modules_to_not_convert, or
 * transformers would make it a quantized Linear and find no packed weight. */
static nb_status skip_module(writer *w, const char *hf, nb_ctx *ctx) {
    const char *p = strstr(hf, "layers.");
    if (!p) return NB_OK;
    p += 7;
    while (*p >= '0' && *p <= '9') p++;
    if (*p++ != '.') return NB_OK;
    size_t n = strlen(p);
    if (n > 7 && strcmp(p + n - 7, ".weight") == 0) n -= 7;
    else return NB_OK;
    for (size_t k = 0; k < w->n_skip; k++)
        if (strlen(w->skip[k]) == n && !strncmp(w->skip[k], p, n)) return NB_OK;
    char **ns = realloc(w->skip, (w->n_skip + 1) * sizeof *ns);
    if (!ns) return nb_err(ctx, NB_ERR_NOMEM, "out of memory");
    w->skip = ns;
    w->skip[w->n_skip] = nb_strndup(ctx, p, n);
    if (!w->skip[w->n_skip]) return NB_ERR_NOMEM;
    w->n_skip++;
    return NB_OK;
}

/* modules_to_not_convert: "lm_head" (untied) and the skipped block modules; NULL when empty. */
static cJSON *not_convert_list(const writer *w) {
    bool head = !w->hp.tie_embeddings;
    if (!head && !w->n_skip) return NULL;
    cJSON *a = cJSON_CreateArray();
    if (a && head) cJSON_AddItemToArray(a, cJSON_CreateString("lm_head"));
    for (size_t k = 0; a && k < w->n_skip; k++) cJSON_AddItemToArray(a, cJSON_CreateString(w->skip[k]));
    return a;
}

static nb_status plan_tensor(writer *w, size_t i, nb_ctx *ctx) {
    nb_model *m = w->m;
    const nb_tensor *t = &m->tensors[i];
    if (strcmp(t->name, "rope_freqs.weight") == 0) return NB_OK;
    char hf[NB_MAX_NAME + 1];
    nb_xform xf = NB_XF_NONE;
    if (nb_hf_is_unmapped(m, i))
        return add_entry(w, t->name, E_PLAIN, i, -1, NB_XF_NONE, w->dtype, t->n_dims, t->ne, ctx);
    if (nb_arch_is_expert_stack(t->name)) {
        /* one tensor per expert, each expert's Linear quantized on its own as
         * the MoE checkpoints of bitsandbytes / GPTQ / AWQ hold them */
        for (int64_t e = 0; e < t->ne[2]; e++) {
            NB_RETURN_IF(ctx, !nb_arch_map_gguf(w->a, t->name, (int)e, hf, sizeof hf, &xf), NB_ERR_UNSUPPORTED,
                         "%s: tensor '%s' has no Hugging Face name for %s", m->path, t->name, w->a->name);
            if (w->o->quant == NB_HF_BNB_NF4) NB_TRY(plan_bnb(w, i, (int)e, hf, xf, ctx));
            else if (w->o->quant != NB_HF_PLAIN) NB_TRY(plan_int4(w, i, (int)e, hf, xf, ctx));
            else NB_TRY(add_entry(w, hf, E_PLAIN, i, (int)e, xf, w->dtype, 2, t->ne, ctx));
        }
        return NB_OK;
    }
    NB_RETURN_IF(ctx, !nb_arch_map_gguf(w->a, t->name, -1, hf, sizeof hf, &xf), NB_ERR_UNSUPPORTED,
                 "%s: tensor '%s' has no Hugging Face name for %s", m->path, t->name, w->a->name);
    if (w->o->quant != NB_HF_PLAIN && nb_hf_is_linear(t->name) && t->n_dims == 2) {
        if (w->o->quant == NB_HF_BNB_NF4) return plan_bnb(w, i, -1, hf, xf, ctx);
        return plan_int4(w, i, -1, hf, xf, ctx);
    }
    const nb_type_traits *tr = nb_type_get(t->type);
    NB_RETURN_IF(ctx, !tr || !tr->to_f32, NB_ERR_UNSUPPORTED, "%s: tensor '%s': type %s cannot be converted",
                 m->path, t->name, nb_type_name(t->type));
    /* routers and the shared-expert gate: Linears in transformers that stay in float */
    if (w->o->quant != NB_HF_PLAIN && strstr(t->name, ".ffn_gate_inp")) NB_TRY(skip_module(w, hf, ctx));
    return add_entry(w, hf, E_PLAIN, i, -1, xf, w->dtype, t->n_dims, t->ne, ctx);
}

/* ---- config files ------------------------------------------------------------------------- */

static bool kv_u32(const nb_kvset *kv, const char *key, double *out) {
    uint64_t v;
    if (!nb_kv_get_u64(kv, key, &v)) return false;
    *out = (double)v;
    return true;
}

static cJSON *quant_config(const writer *w) {
    const nb_hf_write_opts *o = w->o;
    cJSON *q = cJSON_CreateObject();
    if (!q) return NULL;
    if (o->quant == NB_HF_BNB_NF4) {
        const char *cd = torch_dtype(w->dtype);
        cJSON_AddBoolToObject(q, "_load_in_4bit", true);
        cJSON_AddBoolToObject(q, "_load_in_8bit", false);
        cJSON_AddStringToObject(q, "bnb_4bit_compute_dtype", cd);
        cJSON_AddStringToObject(q, "bnb_4bit_quant_storage", "uint8");
        cJSON_AddStringToObject(q, "bnb_4bit_quant_type", "nf4");
        cJSON_AddBoolToObject(q, "bnb_4bit_use_double_quant", !o->bnb_no_double_quant);
        cJSON_AddBoolToObject(q, "llm_int8_enable_fp32_cpu_offload", false);
        cJSON_AddBoolToObject(q, "llm_int8_has_fp16_weight", false);
        /* transformers quantizes every Linear not listed here (a list replaces its lm_head default) */
        cJSON *skip = w->n_skip ? not_convert_list(w) : NULL;
        if (skip) cJSON_AddItemToObject(q, "llm_int8_skip_modules", skip);
        else cJSON_AddNullToObject(q, "llm_int8_skip_modules");
        cJSON_AddRawToObject(q, "llm_int8_threshold", "6.0"); /* a float in Python: BitsAndBytesConfig checks */
        cJSON_AddBoolToObject(q, "load_in_4bit", true);
        cJSON_AddBoolToObject(q, "load_in_8bit", false);
        cJSON_AddStringToObject(q, "quant_method", "bitsandbytes");
    } else if (o->quant == NB_HF_GPTQ) {
        cJSON_AddNumberToObject(q, "bits", 4);
        cJSON_AddNumberToObject(q, "group_size", w->q_group);
        cJSON_AddNumberToObject(q, "damp_percent", o->gptq_damp > 0 ? o->gptq_damp : 0.01);
        cJSON_AddBoolToObject(q, "desc_act", o->gptq_desc_act);
        cJSON_AddBoolToObject(q, "static_groups", o->gptq_static_groups || o->gptq_desc_act);
        cJSON_AddBoolToObject(q, "sym", !w->q_asym);
        cJSON_AddBoolToObject(q, "true_sequential", true);
        cJSON_AddStringToObject(q, "checkpoint_format", "gptq");
        cJSON_AddStringToObject(q, "quant_method", "gptq");
        cJSON *skip = w->n_skip ? not_convert_list(w) : NULL;
        if (skip) cJSON_AddItemToObject(q, "modules_to_not_convert", skip);
    } else {
        cJSON_AddNumberToObject(q, "bits", 4);
        cJSON_AddNumberToObject(q, "group_size", w->q_group);
        cJSON_AddBoolToObject(q, "zero_point", true);
        cJSON_AddStringToObject(q, "version", "gemm");
        cJSON_AddStringToObject(q, "quant_method", "awq");
        cJSON *skip = w->n_skip ? not_convert_list(w) : NULL;
        if (skip) cJSON_AddItemToObject(q, "modules_to_not_convert", skip);
    }
    return q;
}

/* config.json and generation_config.json into the directory. */
static nb_status write_configs(writer *w, const nb_adir *d, uint64_t *bytes, nb_ctx *ctx) {
    char *cfg = nb_hf_config_render(w->a, &w->hp, torch_dtype(w->dtype), ctx);
    if (!cfg) return NB_ERR_NOMEM;
    cJSON *c = cJSON_Parse(cfg);
    free(cfg);
    cJSON *g = cJSON_CreateObject();
    nb_status st = NB_OK;
    if (!c || !g) NB_FAIL_GOTO(st, done, ctx, NB_ERR_NOMEM, "out of memory for config.json");
    cJSON_AddBoolToObject(g, "_from_model_config", true);
    static const char *const ids[][2] = {{"tokenizer.ggml.bos_token_id", "bos_token_id"},
                                         {"tokenizer.ggml.eos_token_id", "eos_token_id"},
                                         {"tokenizer.ggml.padding_token_id", "pad_token_id"}};
    for (size_t k = 0; k < 3; k++) {
        double v;
        if (!kv_u32(&w->m->kv, ids[k][0], &v)) continue;
        cJSON_AddNumberToObject(g, ids[k][1], v);
        if (k < 2) cJSON_AddNumberToObject(c, ids[k][1], v);
    }
    if (w->o->quant != NB_HF_PLAIN) {
        cJSON *q = quant_config(w);
        if (!q || !cJSON_AddItemToObject(c, "quantization_config", q)) {
            cJSON_Delete(q); /* not attached when the key's copy failed */
            NB_FAIL_GOTO(st, done, ctx, NB_ERR_NOMEM, "out of memory for config.json");
        }
    }
    const struct { const char *name; cJSON *j; } files[] = {{"config.json", c}, {"generation_config.json", g}};
    for (size_t k = 0; k < 2 && st == NB_OK; k++) {
        char *text = nb_json_print(files[k].j, true);
        char *p = text ? nb_adir_file(d, files[k].name, ctx) : NULL;
        if (!text || !p) st = nb_err(ctx, NB_ERR_NOMEM, "out of memory for %s", files[k].name);
        else st = nb_afile_write_text(p, text, ctx);
        if (st == NB_OK) *bytes += strlen(text) + 1;
        free(text);
        free(p);
    }
done:
    cJSON_Delete(c);
    cJSON_Delete(g);
    return st;
}

static nb_status write_tokenizer(writer *w, const nb_adir *d, nb_ctx *ctx) {
#ifdef NB_HAVE_HF_TOKENIZER
    if (!nb_kv_get(&w->m->kv, "tokenizer.ggml.model")) return NB_OK;
    return nb_hf_tokenizer_write(&w->m->kv, d->tmp_path, ctx);
#else
    (void)d;
    (void)ctx;
    if (nb_kv_get(&w->m->kv, "tokenizer.ggml.model"))
        NB_WARN(ctx, "%s: this build writes no tokenizer files (formats/hf_tokenizer is missing)", w->m->path);
    return NB_OK;
#endif
}

/* ---- shards ---------------------------------------------------------------------------------- */

/* A plain tensor that needs no reordering (no q/k permutation, not an expert
 * slice), streamed in chunks of rows: memory is two chunk buffers, not the
 * tensor in F32. */
#define STREAM_CHUNK (1u << 20) /* elements per chunk (at least one row) */
static bool streamable(const entry *e) {
    return e->kind == E_PLAIN && e->expert < 0 && (e->xf == NB_XF_NONE || e->xf == NB_XF_NORM_SHIFT);
}

static nb_status stream_plain(writer *w, const entry *e, nb_sink *s, nb_ctx *ctx) {
    nb_model *m = w->m;
    const nb_tensor *t = &m->tensors[e->src];
    const nb_type_traits *in = nb_type_get(t->type), *out = nb_type_get(e->type);
    uint64_t ne0 = (uint64_t)t->ne[0], rows = nb_tensor_nelements(t) / ne0, in_row = t->nbytes / rows;
    uint64_t out_row = e->nbytes / rows, step = STREAM_CHUNK / ne0 ? STREAM_CHUNK / ne0 : 1;
    const void *src;
    void *owned;
    NB_TRY(nb_model_tensor_bytes(m, e->src, &src, &owned, ctx));
    float *x = nb_malloc(ctx, (size_t)(step * ne0) * sizeof *x, "row chunk");
    void *y = nb_malloc(ctx, (size_t)(step * out_row), "row chunk");
    nb_status st = x && y ? NB_OK : NB_ERR_NOMEM;
    for (uint64_t r0 = 0; r0 < rows && st == NB_OK; r0 += step) {
        uint64_t nr = rows - r0 < step ? rows - r0 : step, n = nr * ne0;
        const unsigned char *p = (const unsigned char *)src + r0 * in_row;
        if (!owned) st = nb_map_check(p, (size_t)(nr * in_row), ctx);
        if (st != NB_OK) break;
        in->to_f32(p, x, (int64_t)n);
        if (e->xf == NB_XF_NORM_SHIFT)
            for (uint64_t k = 0; k < n; k++) x[k] -= 1.0f;
        if (e->type == NB_TYPE_F32) st = nb_sink_write(s, x, n * sizeof(float), ctx);
        else {
            out->quantize(x, y, 1, (int64_t)n, NULL);
            st = nb_sink_write(s, y, nr * out_row, ctx);
        }
        if (!owned) nb_release_mapped(p, nr * in_row);
    }
    free(x);
    free(y);
    free(owned);
    return st;
}

static nb_status write_shard(writer *w, const char *path, size_t shard, nb_hf_write_result *r, nb_progress *pg,
                             nb_ctx *ctx) {
    nb_sink *s = NULL;
    NB_TRY(nb_sink_create(path, NB_FMT_SAFETENSORS, &s, ctx));
    nb_status st = nb_kv_set_str(&s->kv, "format", "pt", ctx);
    size_t *idx = NULL, k = 0;
    size_t cnt = 0;
    for (size_t i = 0; i < w->n; i++) cnt += w->e[i].shard == shard;
    idx = nb_malloc(ctx, (cnt ? cnt : 1) * sizeof *idx, "shard table");
    if (!idx) st = NB_ERR_NOMEM;
    for (size_t i = 0; i < w->n && st == NB_OK; i++) {
        const entry *e = &w->e[i];
        if (e->shard != shard) continue;
        idx[k++] = i;
        st = nb_sink_add_tensor(s, e->name, e->type, e->n_dims, e->ne, ctx);
    }
    if (st == NB_OK) st = nb_sink_begin(s, ctx);
    for (size_t j = 0; j < cnt && st == NB_OK; j++) {
        const entry *e = &w->e[idx[nb_sink_data_order(s, j)]];
        const void *data = NULL;
        void *tmp = NULL;
        if (streamable(e)) {
            st = stream_plain(w, e, s, ctx);
            r->n_tensors++;
            nb_progress_add(pg, e->nbytes, e->name);
            continue;
        }
        st = produce(w, e, ctx);
        if (st == NB_OK) st = entry_bytes(w, e, &data, &tmp, ctx);
        if (st != NB_OK) break;
        st = nb_sink_write(s, data, e->nbytes, ctx);
        free(tmp);
        r->n_tensors++;
        nb_progress_add(pg, e->nbytes, e->name);
    }
    if (st == NB_OK) st = nb_sink_commit(s, ctx);
    if (st == NB_OK) {
        r->bytes_out += s->bytes_written;
        memcpy(r->sha256, s->sha256, 32);
    }
    free(idx);
    nb_sink_free(s);
    return st;
}

static nb_status write_index(writer *w, const nb_adir *d, size_t n_shards, uint64_t *bytes, nb_ctx *ctx) {
    cJSON *j = cJSON_CreateObject(), *meta = j ? cJSON_AddObjectToObject(j, "metadata") : NULL;
    cJSON *map = j ? cJSON_AddObjectToObject(j, "weight_map") : NULL;
    nb_status st = NB_OK;
    uint64_t total = 0;
    for (size_t i = 0; i < w->n; i++) total += w->e[i].nbytes;
    if (!meta || !map || !cJSON_AddNumberToObject(meta, "total_size", (double)total))
        NB_FAIL_GOTO(st, done, ctx, NB_ERR_NOMEM, "out of memory for the index");
    /* weight_map sorted by name, as transformers writes it */
    size_t *ord = nb_malloc(ctx, w->n * sizeof *ord, "index order");
    if (!ord) NB_FAIL_GOTO(st, done, ctx, NB_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < w->n; i++) ord[i] = i;
    for (size_t i = 1; i < w->n; i++) /* insertion sort: names are few thousand at most */
        for (size_t k = i; k > 0 && strcmp(w->e[ord[k - 1]].name, w->e[ord[k]].name) > 0; k--) {
            size_t t = ord[k]; ord[k] = ord[k - 1]; ord[k - 1] = t;
        }
    for (size_t i = 0; i < w->n; i++) {
        char fn[64];
        snprintf(fn, sizeof fn, "model-%05zu-of-%05zu.safetensors", w->e[ord[i]].shard + 1, n_shards);
        cJSON_AddStringToObject(map, w->e[ord[i]].name, fn);
    }
    free(ord);
    char *text = nb_json_print(j, true);
    char *p = text ? nb_adir_file(d, "model.safetensors.index.json", ctx) : NULL;
    if (!text || !p) st = nb_err(ctx, NB_ERR_NOMEM, "out of memory for the index");
    else st = nb_afile_write_text(p, text, ctx);
    if (st == NB_OK) *bytes += strlen(text) + 1;
    free(text);
    free(p);
done:
    cJSON_Delete(j);
    return st;
}

/* ---- llama3 rope scaling from rope_freqs.weight --------------------------------------------------- */

/* True when the llama3 parameters in hp reproduce the n rope_freqs values v
 * (nb_arch_llama3_rope_factors, as the import computes them) to within float
 * rounding (2 ulp). */
static bool llama3_reproduces(const nb_hparams *hp, const float *v, size_t n, float *tmp, nb_ctx *ctx) {
    bool ok = hp->rope_high_freq > hp->rope_low_freq && hp->rope_low_freq > 0 && hp->rope_orig_ctx > 0 &&
              nb_arch_llama3_rope_factors(hp, tmp, n, ctx) == NB_OK;
    for (size_t i = 0; ok && i < n; i++) ok = fabsf(tmp[i] - v[i]) <= 2.0f * FLT_EPSILON * fabsf(v[i]);
    return ok;
}

/* Solve the llama3 parameters (factor, low_freq_factor, high_freq_factor,
 * original_max_position_embeddings) from the per-frequency divisors v[i]
 * that llama.cpp stores: 1 where the wavelength 2*pi*base^(2i/hd) is below
 * C/hi, `factor` above C/lo, and 1/((1-s)/factor + s) with
 * s = (C/wl - lo)/(hi - lo) between. In the smooth part s is linear in 1/wl
 * (slope C/(hi-lo), intercept -lo/(hi-lo)), fitted by least squares; the
 * values only fix C/lo and C/hi, so C comes from the GGUF key
 * rope.scaling.original_context_length when present, else lo = 1 (every
 * published Llama 3 config). Tidy roundings are tried before the raw
 * solution, the defaults (1, 4, 8192) when fewer than two values are in the
 * smooth part; a candidate counts only if it reproduces every value. */
static bool llama3_from_freqs(nb_hparams *hp, const float *v, size_t n, uint32_t ctx_key, double factor_key,
                              nb_ctx *ctx) {
    if (n < 1 || nb_hparams_head_dim(hp) != 2 * n) return false;
    float *tmp = malloc(n * sizeof *tmp);
    if (!tmp) return false;
    nb_hparams t = *hp;
    t.rope_scaling = NB_ROPE_SCALING_LLAMA3;
    double f = factor_key > 1 ? factor_key : v[n - 1];
    const double base = hp->rope_theta != 0 ? hp->rope_theta : 10000.0;
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int m = 0;
    for (size_t i = 0; i < n && f > 1; i++) {
        if (!(v[i] > 1.0f + 4 * FLT_EPSILON && v[i] < (float)f * (1.0f - 4 * FLT_EPSILON))) continue;
        double wl = 2.0 * M_PI * pow(base, (double)(2 * i) / (double)(2 * n));
        double x = 1.0 / wl, y = (1.0 / v[i] - 1.0 / f) / (1.0 - 1.0 / f);
        sx += x, sy += y, sxx += x * x, sxy += x * y, m++;
    }
    double cand[3][3]; /* {C, lo, hi} */
    int nc = 0;
    if (m >= 2 && sxx * m - sx * sx > 0) {
        double A = (m * sxy - sx * sy) / (m * sxx - sx * sx), B = (sy - A * sx) / m;
        double C, lo, hi;
        if (ctx_key) C = ctx_key, lo = -B * C / A, hi = lo + C / A;
        else lo = 1.0, hi = 1.0 - 1.0 / B, C = -A / B;
        if (A > 0 && B < 0 && C >= 1 && C < 1e9) {
            double Cr = floor(C + 0.5);
            cand[nc][0] = Cr, cand[nc][1] = floor(lo * 1e4 + 0.5) / 1e4, cand[nc][2] = floor(hi * 1e4 + 0.5) / 1e4, nc++;
            cand[nc][0] = Cr, cand[nc][1] = lo * Cr / C, cand[nc][2] = hi * Cr / C, nc++;
        }
    }
    cand[nc][0] = ctx_key ? ctx_key : 8192, cand[nc][1] = 1.0, cand[nc][2] = 4.0, nc++;
    bool found = false;
    for (int k = 0; k < nc && !found && f > 1; k++) {
        t.rope_factor = f;
        t.rope_orig_ctx = (uint32_t)cand[k][0];
        t.rope_low_freq = cand[k][1];
        t.rope_high_freq = cand[k][2];
        found = llama3_reproduces(&t, v, n, tmp, ctx);
    }
    free(tmp);
    if (found) *hp = t;
    return found;
}

/* The model's rope_freqs.weight as llama3 rope scaling in hp, when it is one. */
static nb_status recover_rope_scaling(writer *w, nb_ctx *ctx) {
    nb_model *m = w->m;
    const nb_tensor *t = nb_model_find(m, "rope_freqs.weight");
    if (!t || w->hp.rope_scaling != NB_ROPE_SCALING_NONE) return NB_OK;
    uint64_t n = nb_tensor_nelements(t);
    float *v = n && n <= (1u << 20) ? nb_malloc(ctx, (size_t)n * sizeof *v, "rope_freqs") : NULL;
    if (n && n <= (1u << 20) && !v) return NB_ERR_NOMEM;
    nb_status st = v ? nb_model_read_f32(m, (size_t)(t - m->tensors), v, ctx) : NB_OK;
    if (st != NB_OK) {
        free(v);
        return st;
    }
    const char *g = w->a->gguf_arch;
    char key[160];
    uint64_t octx = 0;
    double fkey = 0;
    snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", g);
    if (!nb_kv_get_u64(&m->kv, key, &octx) || octx > UINT32_MAX) octx = 0;
    snprintf(key, sizeof key, "%s.rope.scaling.factor", g);
    if (!nb_kv_get_f64(&m->kv, key, &fkey)) fkey = 0;
    if (v && llama3_from_freqs(&w->hp, v, (size_t)n, (uint32_t)octx, fkey, ctx))
        NB_INFO(ctx, "%s: rope_freqs.weight is llama3 rope scaling (factor %g, low_freq_factor %g, high_freq_factor "
                "%g, original_max_position_embeddings %u): written to config.json", m->path, w->hp.rope_factor,
                w->hp.rope_low_freq, w->hp.rope_high_freq, w->hp.rope_orig_ctx);
    else
        NB_WARN(ctx, "%s: rope_freqs.weight is not llama3 rope scaling that config.json can express (no "
                "parameters reproduce its values); it is dropped", m->path);
    free(v);
    return NB_OK;
}

/* ---- the writer ---------------------------------------------------------------------------------- */

static nb_type pick_dtype(const nb_model *m) {
    uint64_t best = 0;
    nb_type t = NB_TYPE_BF16;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *x = &m->tensors[i];
        if (x->n_dims < 2 || (x->type != NB_TYPE_F32 && x->type != NB_TYPE_F16 && x->type != NB_TYPE_BF16)) continue;
        if (x->nbytes > best) { best = x->nbytes; t = x->type; }
    }
    return t;
}

nb_status nb_hf_write(nb_model *m, const char *dir, const nb_hf_write_opts *o, nb_hf_write_result *r,
                      nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    double t0 = nb_now();
    writer w = {.m = m, .o = o, .q_type = NB_TYPE_COUNT};
    nb_status st = NB_OK;
    nb_adir d = {.lock_fd = -1};
    const char *gname = nb_kv_get_str(&m->kv, "general.architecture");
    bool experts = false;
    for (size_t i = 0; i < m->n_tensors; i++) experts = experts || nb_arch_is_expert_stack(m->tensors[i].name);
    w.a = gname ? nb_arch_from_gguf(gname, experts) : NULL;
    if (!w.a)
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: architecture '%s' has no Hugging Face layout here (supported: %s)",
                      m->path, gname ? gname : "(none)", nb_arch_supported_list());
    NB_TRY(nb_arch_hparams_from_kv(w.a, &m->kv, &w.hp, ctx));
    w.hp.tie_embeddings = nb_model_find(m, "output.weight") == NULL;
    const nb_tensor *emb = nb_model_find(m, "token_embd.weight");
    if (!w.hp.n_vocab && emb) w.hp.n_vocab = (uint32_t)emb->ne[1];
    NB_TRY(recover_rope_scaling(&w, ctx));
    w.dtype = o->dtype_set ? o->dtype : pick_dtype(m);
    NB_RETURN_IF(ctx, w.dtype != NB_TYPE_F32 && w.dtype != NB_TYPE_F16 && w.dtype != NB_TYPE_BF16, NB_ERR_INVALID,
                 "hf write: dtype must be f32, f16 or bf16 (got %s)", nb_type_name(w.dtype));

    for (size_t i = 0; i < m->n_tensors && st == NB_OK; i++) st = plan_tensor(&w, i, ctx);
    cache_drop(&w);
    if (st == NB_OK && o->quant != NB_HF_PLAIN && o->quant != NB_HF_BNB_NF4 && w.q_type == NB_TYPE_COUNT)
        st = nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: no linear weight to pack for %s", m->path, nb_hf_quant_name(o->quant));
    /* shards: whole source tensors, closed before the group that would overflow */
    uint64_t max = o->max_shard_size ? o->max_shard_size : NB_HF_DEFAULT_SHARD, cur = 0;
    size_t shard = 0;
    for (size_t i = 0; i < w.n && st == NB_OK;) {
        size_t j = i;
        uint64_t grp = 0;
        while (j < w.n && w.e[j].src == w.e[i].src && w.e[j].expert == w.e[i].expert) grp += w.e[j++].nbytes;
        if (!o->single_file && cur > 0 && cur + grp > max) { shard++; cur = 0; }
        for (size_t k = i; k < j; k++) w.e[k].shard = shard;
        cur += grp;
        i = j;
    }
    size_t n_shards = w.n ? shard + 1 : 1;
    for (size_t i = 0; i < m->n_tensors; i++) r->bytes_in += m->tensors[i].nbytes;
    if (st != NB_OK) goto done;

    nb_progress pg;
    uint64_t total_out = 0;
    for (size_t i = 0; i < w.n; i++) total_out += w.e[i].nbytes;
    nb_progress_begin(&pg, ctx, "hf", total_out);
    if (o->single_file) {
        st = write_shard(&w, o->single_file, 0, r, &pg, ctx);
    } else {
        NB_CHECK_GOTO(st, nb_adir_open(&d, dir, ctx), done_pg);
        for (size_t s = 0; s < n_shards && st == NB_OK; s++) {
            char fn[64];
            if (n_shards == 1) snprintf(fn, sizeof fn, "model.safetensors");
            else snprintf(fn, sizeof fn, "model-%05zu-of-%05zu.safetensors", s + 1, n_shards);
            char *p = nb_adir_file(&d, fn, ctx);
            st = p ? write_shard(&w, p, s, r, &pg, ctx) : NB_ERR_NOMEM;
            free(p);
        }
        if (n_shards > 1) memset(r->sha256, 0, 32);
        if (st == NB_OK && n_shards > 1) st = write_index(&w, &d, n_shards, &r->bytes_out, ctx);
        if (st == NB_OK) st = write_configs(&w, &d, &r->bytes_out, ctx);
        if (st == NB_OK) st = write_tokenizer(&w, &d, ctx);
        if (st == NB_OK) st = nb_adir_commit(&d, ctx);
    }
    r->n_shards = n_shards;
done_pg:
    nb_progress_end(&pg);
done:
    nb_adir_abort(&d);
    cache_drop(&w);
    for (size_t i = 0; i < w.n; i++) {
        free(w.e[i].name);
        free(w.e[i].state);
    }
    free(w.e);
    for (size_t k = 0; k < w.n_skip; k++) free(w.skip[k]);
    free(w.skip);
    r->seconds = nb_now() - t0;
    return st;
}

nb_status nb_hf_write_path(const char *src, const char *dir, const nb_hf_write_opts *o, nb_hf_write_result *r,
                           nb_ctx *ctx) {
    nb_model *m = NULL;
    memset(r, 0, sizeof *r);
    NB_TRY(nb_model_open(src, &m, ctx));
    nb_status st = nb_hf_write(m, dir, o, r, ctx);
    nb_model_close(m);
    return st;
}
