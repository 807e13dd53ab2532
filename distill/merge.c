/* distill/merge.c — adapter merging (see distill/merge.h for the math, the
 * name resolution, QLoRA and the output types).
 *
 * Two phases. plan_build opens the base (headers only) and every adapter,
 * resolves each adapter module to a base tensor (and expert slice and row
 * permutation), checks every shape, and fails before any output exists.
 * Then one streaming pass writes the output: a tensor without work is copied
 * (byte for byte when its type is kept); a tensor with work is read as F32,
 * NF4-round-tripped for QLoRA, updated by its steps in adapter order,
 * checked for NaN/Inf and written. */
#include "distill/merge.h"

#include "core/afile.h"
#include "core/fp.h"
#include "core/str.h"
#include "distill/adapter.h"
#include "formats/arch.h"
#include "formats/convert.h"
#include "formats/json_strict.h"
#include "formats/model.h"
#include "quant/nf4.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *nb_merge_kind_name(nb_merge_kind k) {
    switch (k) {
    case NB_MERGE_LORA: return "lora";
    case NB_MERGE_DORA: return "dora";
    case NB_MERGE_BIAS: return "lora_bias";
    case NB_MERGE_REPLACE: return "replace";
    }
    return "?";
}

/* ---- the kernel ---------------------------------------------------------------------------------- */

nb_status nb_lora_merge_rows(float *W, const int64_t *row_of, int64_t out, int64_t in, const float *A,
                             const float *B, uint32_t rank, double scale, const float *mag, double *base_sq,
                             double *delta_sq, int n_threads, const char *what, nb_ctx *ctx) {
    int nt = n_threads < 1 ? 1 : n_threads;
    int64_t bad_row = -1;   /* smallest failing row: deterministic message */
    bool nomem = false;
#pragma omp parallel num_threads(nt)
    {
        double *acc = nb_malloc(NULL, (size_t)in * sizeof(double), "merge");
        if (!acc) {
#pragma omp atomic write
            nomem = true;
        }
#pragma omp for schedule(static)
        for (int64_t o = 0; o < out; o++) {
            if (!acc) continue;
            float *w = W + (row_of ? row_of[o] : o) * in;
            memset(acc, 0, (size_t)in * sizeof(double));
            const float *b = B + o * (int64_t)rank;
            for (uint32_t k = 0; k < rank; k++) {
                double bk = b[k];
                if (bk == 0) continue;
                const float *a = A + (int64_t)k * in;
                for (int64_t j = 0; j < in; j++) acc[j] += bk * a[j];
            }
            double bs = 0, ds = 0;
            if (!mag) {
                for (int64_t j = 0; j < in; j++) {
                    float old = w[j], nw = old + (float)(acc[j] * scale);
                    bs += (double)old * old;
                    ds += ((double)nw - old) * ((double)nw - old);
                    w[j] = nw;
                }
            } else {
                /* PEFT: weight_norm = ||W + ΔW|| over the row, dora_factor = m / weight_norm */
                double nn = 0;
                for (int64_t j = 0; j < in; j++) {
                    float s = w[j] + (float)(acc[j] * scale);
                    nn += (double)s * s;
                }
                double norm = sqrt(nn), f = (double)mag[o] / norm;
                if (!(norm > 0) || !isfinite(f)) {
#pragma omp critical(nb_lora_bad)
                    if (bad_row < 0 || o < bad_row) bad_row = o;
                    continue;
                }
                for (int64_t j = 0; j < in; j++) {
                    float old = w[j], s = old + (float)(acc[j] * scale), nw = (float)(f * s);
                    bs += (double)old * old;
                    ds += ((double)nw - old) * ((double)nw - old);
                    w[j] = nw;
                }
            }
            if (base_sq) base_sq[o] = bs;
            if (delta_sq) delta_sq[o] = ds;
        }
        free(acc);
    }
    if (nomem) return nb_err(ctx, NB_ERR_NOMEM, "%s: out of memory for the LoRA accumulator", what);
    if (bad_row >= 0)
        return nb_err(ctx, NB_ERR_RANGE, "%s: DoRA: row %lld of W + ΔW has norm 0 or the magnitude is not finite",
                      what, (long long)bad_row);
    return NB_OK;
}

/* ---- the plan ------------------------------------------------------------------------------------- */

typedef enum { OP_LORA, OP_BIAS, OP_REPLACE } op_kind;

typedef struct {
    size_t tensor;              /* base tensor index */
    size_t adapter;             /* index in opts.adapters */
    size_t seq;                 /* creation order: adapter order, then module order */
    op_kind kind;
    const nb_lora_module *mod;  /* OP_LORA, OP_BIAS */
    long src;                   /* OP_REPLACE: adapter tensor */
    const char *name;           /* module / parameter name, for messages and the report */
    int64_t slice;              /* expert slice of a 3-D base tensor, or -1 */
    nb_xform xf;                /* how the base stores the rows (permute / norm shift) */
    uint32_t n_head;            /* heads for the q/k permutation */
} op;

typedef struct {
    nb_model *m;
    const nb_arch *arch;        /* NULL: bare safetensors, names matched exactly */
    uint32_t n_head, n_head_kv;
    nb_adapter **ad;
    const nb_merge_opts *o;
    op *ops;
    size_t n_ops, cap_ops;
    size_t *first, *count;      /* per base tensor: its ops after sorting */
    bool *qlora_t;              /* per base tensor: NF4 round trip first */
} plan;

static int op_cmp(const void *x, const void *y) {
    const op *a = x, *b = y;
    if (a->tensor != b->tensor) return a->tensor < b->tensor ? -1 : 1;
    return (a->seq > b->seq) - (a->seq < b->seq);
}

static nb_status push_op(plan *p, const op *x, nb_ctx *ctx) {
    if (p->n_ops == p->cap_ops) {
        size_t cap = p->cap_ops ? p->cap_ops * 2 : 64;
        op *n = nb_realloc(NULL, p->ops, cap * sizeof *n, "merge");
        if (!n) return nb_err(ctx, NB_ERR_NOMEM, "out of memory for the merge plan");
        p->ops = n;
        p->cap_ops = cap;
    }
    p->ops[p->n_ops] = *x;
    p->ops[p->n_ops].seq = p->n_ops;
    p->n_ops++;
    return NB_OK;
}

/* HF parameter name -> base tensor. `gguf` receives the name looked for. */
static bool resolve(const plan *p, const char *hf, size_t *ti, int64_t *expert, nb_xform *xf, char *gguf, size_t gn) {
    *expert = -1;
    *xf = NB_XF_NONE;
    snprintf(gguf, gn, "%s", hf);
    const nb_tensor *t = NULL;
    if (p->arch) {
        nb_name_map mp;
        if (nb_arch_map_hf(p->arch, hf, &mp) && !mp.skip) {
            snprintf(gguf, gn, "%s", mp.gguf);
            t = nb_model_find(p->m, mp.gguf);
            if (t) {
                *expert = mp.expert;
                *xf = mp.xf;
            }
        }
    }
    if (!t) t = nb_model_find(p->m, hf); /* bare safetensors, or a name the HF reader kept */
    if (!t) return false;
    *ti = (size_t)(t - p->m->tensors);
    return true;
}

static void shape_str(char *buf, size_t n, int64_t rows, int64_t cols) {
    snprintf(buf, n, "[%lld, %lld]", (long long)rows, (long long)cols);
}

/* Torch-order shape of a base tensor (or of one expert slice). */
static void base_shape_str(char *buf, size_t n, const nb_tensor *t, bool slice) {
    if (t->n_dims <= 1) snprintf(buf, n, "[%lld]", (long long)t->ne[0]);
    else if (t->n_dims == 2 || slice) shape_str(buf, n, t->ne[1], t->ne[0]);
    else snprintf(buf, n, "[%lld, %lld, %lld]", (long long)t->ne[2], (long long)t->ne[1], (long long)t->ne[0]);
}

static bool convertible(const nb_tensor *t) {
    const nb_type_traits *tr = nb_type_get(t->type);
    return tr && tr->to_float && (tr->is_float || tr->is_quantized);
}

static nb_status check_permute(const plan *p, op *x, int64_t rows, const char *what, nb_ctx *ctx) {
    if (x->xf != NB_XF_PERMUTE_Q && x->xf != NB_XF_PERMUTE_K) return NB_OK;
    x->n_head = x->xf == NB_XF_PERMUTE_Q ? p->n_head : p->n_head_kv;
    if (x->n_head == 0 || rows % (2 * (int64_t)x->n_head) != 0)
        return nb_err(ctx, NB_ERR_RANGE, "%s: %lld rows cannot be permuted with %u heads (base head counts wrong?)", what,
                      (long long)rows, x->n_head);
    return NB_OK;
}

/* One LoRA module of adapter k: its delta op (and its bias op). */
static nb_status plan_module(plan *p, size_t k, const nb_lora_module *md, nb_ctx *ctx) {
    nb_adapter *ad = p->ad[k];
    char hf[NB_MAX_NAME + 16], gguf[NB_MAX_NAME + 16], bs[64], ds[64], what[2 * NB_MAX_NAME + 64];
    op x = {0};
    x.adapter = k;
    x.kind = OP_LORA;
    x.mod = md;
    x.name = md->name;
    x.src = -1;
    if (ad->kind == NB_ADAPTER_GGUF) {
        const nb_tensor *t = nb_model_find(p->m, md->name);
        if (!t)
            return nb_err(ctx, NB_ERR_FORMAT, "%s: LoRA target '%s' does not exist in the base (wrong base model?)",
                          ad->path, md->name);
        x.tensor = (size_t)(t - p->m->tensors);
        x.slice = -1;
        snprintf(gguf, sizeof gguf, "%s", md->name);
    } else {
        snprintf(hf, sizeof hf, "%s.weight", md->name);
        if (!resolve(p, hf, &x.tensor, &x.slice, &x.xf, gguf, sizeof gguf))
            return nb_err(ctx, NB_ERR_FORMAT,
                          "%s: module '%s': the base has no tensor '%s'%s%s%s (adapter for another model?)", ad->path,
                          md->name, hf, strcmp(hf, gguf) ? " (" : "", strcmp(hf, gguf) ? gguf : "",
                          strcmp(hf, gguf) ? ")" : "");
    }
    const nb_tensor *t = &p->m->tensors[x.tensor];
    snprintf(what, sizeof what, "%s: module '%s' -> '%s'", ad->path, md->name, t->name);
    if (!convertible(t))
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: base type %s cannot be dequantized", what, nb_type_name(t->type));
    /* which base dims must the delta fit? */
    bool sliced = x.slice >= 0;
    if (sliced && (t->n_dims != 3 || x.slice >= t->ne[2]))
        return nb_err(ctx, NB_ERR_FORMAT, "%s: expert %lld does not exist in the base (it has %lld)", what,
                      (long long)x.slice, (long long)(t->n_dims == 3 ? t->ne[2] : 0));
    if (md->n_slices > 1 && !(t->n_dims == 3 && t->ne[2] == md->n_slices))
        return nb_err(ctx, NB_ERR_FORMAT, "%s: the adapter has %lld expert slices, the base tensor %lld", what,
                      (long long)md->n_slices, (long long)(t->n_dims == 3 ? t->ne[2] : 1));
    if (!sliced && md->n_slices == 1 && t->ne[2] != 1)
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: a 2-D LoRA cannot update the stacked tensor as a whole", what);
    if (t->ne[3] != 1 || t->n_dims < 2)
        return nb_err(ctx, NB_ERR_FORMAT, "%s: the base tensor is %u-D, not a matrix", what, t->n_dims);
    int64_t rows = md->transposed ? md->in : md->out, cols = md->transposed ? md->out : md->in;
    if (t->ne[1] != rows || t->ne[0] != cols) {
        base_shape_str(bs, sizeof bs, t, sliced);
        shape_str(ds, sizeof ds, rows, cols);
        return nb_err(ctx, NB_ERR_FORMAT, "%s: adapter delta is %s but the base tensor is %s (adapter for another model "
                      "size?)", what, ds, bs);
    }
    if (md->transposed && x.xf != NB_XF_NONE)
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: a transposed (fan_in_fan_out) delta on a permuted q/k tensor", what);
    NB_TRY(check_permute(p, &x, md->out, what, ctx));
    NB_TRY(push_op(p, &x, ctx));
    if (md->bias < 0) return NB_OK;
    /* lora_bias: b += lora_B.bias * scaling (PEFT Linear.merge); the base must have a bias */
    op y = x;
    y.kind = OP_BIAS;
    snprintf(hf, sizeof hf, "%s.bias", md->name);
    if (ad->kind == NB_ADAPTER_GGUF || !resolve(p, hf, &y.tensor, &y.slice, &y.xf, gguf, sizeof gguf))
        return nb_err(ctx, NB_ERR_FORMAT, "%s: module '%s' has lora_bias but the base has no bias '%s'", ad->path,
                      md->name, hf);
    t = &p->m->tensors[y.tensor];
    snprintf(what, sizeof what, "%s: lora_B.bias of '%s' -> '%s'", ad->path, md->name, t->name);
    if (y.slice >= 0 || t->n_dims != 1 || t->ne[0] != md->out || !convertible(t)) {
        base_shape_str(bs, sizeof bs, t, false);
        return nb_err(ctx, NB_ERR_FORMAT, "%s: expected a [%lld] float bias, the base has %s %s", what,
                      (long long)md->out, nb_type_name(t->type), bs);
    }
    NB_TRY(check_permute(p, &y, md->out, what, ctx));
    return push_op(p, &y, ctx);
}

static nb_status plan_replace(plan *p, size_t k, const nb_lora_replace *rp, nb_ctx *ctx) {
    nb_adapter *ad = p->ad[k];
    char gguf[NB_MAX_NAME + 16], bs[64], as[64], what[2 * NB_MAX_NAME + 64];
    op x = {0};
    x.adapter = k;
    x.kind = OP_REPLACE;
    x.src = rp->tensor;
    x.name = rp->name;
    if (!resolve(p, rp->name, &x.tensor, &x.slice, &x.xf, gguf, sizeof gguf))
        return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s' (modules_to_save / bias) has no counterpart '%s' in the base%s",
                      ad->path, rp->name, gguf,
                      !strcmp(gguf, "output.weight") ? " (the base ties the output head to token_embd)" : "");
    const nb_tensor *t = &p->m->tensors[x.tensor], *s = &ad->file->tensors[rp->tensor];
    snprintf(what, sizeof what, "%s: '%s' -> '%s'", ad->path, rp->name, t->name);
    bool sliced = x.slice >= 0;
    bool same = s->n_dims == (sliced ? 2u : t->n_dims) && s->ne[0] == t->ne[0] && s->ne[1] == t->ne[1] &&
                (sliced || (s->ne[2] == t->ne[2] && s->ne[3] == t->ne[3]));
    if (!same || !convertible(t)) {
        base_shape_str(bs, sizeof bs, t, sliced);
        if (s->n_dims <= 1) snprintf(as, sizeof as, "[%lld]", (long long)s->ne[0]);
        else shape_str(as, sizeof as, s->ne[1], s->ne[0]);
        return nb_err(ctx, NB_ERR_FORMAT, "%s: the adapter's tensor is %s but the base tensor is %s %s", what, as,
                      nb_type_name(t->type), bs);
    }
    NB_TRY(check_permute(p, &x, t->n_dims >= 2 ? t->ne[1] : t->ne[0], what, ctx));
    return push_op(p, &x, ctx);
}

/* QLoRA: which base tensors bitsandbytes would have held in NF4. */
static bool qlora_target(const nb_tensor *t) {
    if (t->n_dims < 2 || !nb_str_ends_with(t->name, ".weight")) return false;
    static const char *const keep[] = {"token_embd.weight", "output.weight", "lm_head.weight", "embed_tokens.weight",
                                       "wte.weight", "wpe.weight"};
    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++)
        if (!strcmp(t->name, keep[i]) || (nb_str_ends_with(t->name, keep[i]) && t->name[strlen(t->name) - strlen(keep[i]) - 1] == '.'))
            return false;
    return true;
}

static void plan_free(plan *p) {
    if (p->ad)
        for (size_t k = 0; k < p->o->n_adapters; k++) nb_adapter_close(p->ad[k]);
    free(p->ad);
    free(p->ops);
    free(p->first);
    free(p->count);
    free(p->qlora_t);
    nb_model_close(p->m);
    memset(p, 0, sizeof *p);
}

static nb_status plan_build(plan *p, const char *base, const nb_merge_opts *o, nb_ctx *ctx) {
    memset(p, 0, sizeof *p);
    p->o = o;
    NB_TRY(nb_model_open(base, &p->m, ctx));
    nb_model *m = p->m;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (strstr(m->tensors[i].name, "quant_state.bitsandbytes") || nb_str_ends_with(m->tensors[i].name, ".absmax"))
            return nb_err(ctx, NB_ERR_UNSUPPORTED,
                          "%s: a bitsandbytes-packed checkpoint (tensor '%s'): nibble cannot read its 4-bit weights; "
                          "merge into the full-precision base with --qlora instead", base, m->tensors[i].name);
    const char *ga = nb_kv_get_str(&m->kv, "general.architecture");
    if (ga) {
        char key[160];
        uint64_t ne = 0, v = 0;
        snprintf(key, sizeof key, "%s.expert_count", ga);
        nb_kv_get_u64(&m->kv, key, &ne);
        p->arch = nb_arch_from_gguf(ga, ne > 0);
        snprintf(key, sizeof key, "%s.attention.head_count", ga);
        if (nb_kv_get_u64(&m->kv, key, &v) && v <= UINT32_MAX) p->n_head = (uint32_t)v;
        snprintf(key, sizeof key, "%s.attention.head_count_kv", ga);
        p->n_head_kv = nb_kv_get_u64(&m->kv, key, &v) && v <= UINT32_MAX ? (uint32_t)v : p->n_head;
    }
    p->ad = nb_calloc(ctx, o->n_adapters, sizeof *p->ad, "adapters");
    if (!p->ad) return NB_ERR_NOMEM;
    for (size_t k = 0; k < o->n_adapters; k++) {
        NB_TRY(nb_adapter_open(o->adapters[k].path, &p->ad[k], ctx));
        nb_adapter *ad = p->ad[k];
        if (ad->kind == NB_ADAPTER_GGUF && ad->arch && ga && strcmp(ad->arch, ga) != 0)
            return nb_err(ctx, NB_ERR_FORMAT, "%s: the adapter is for architecture '%s', the base '%s' is '%s'", ad->path,
                          ad->arch, base, ga);
        if (!isfinite(o->adapters[k].weight))
            return nb_err(ctx, NB_ERR_INVALID, "%s: adapter weight is not a finite number", ad->path);
        for (size_t i = 0; i < ad->n_modules; i++) NB_TRY(plan_module(p, k, &ad->modules[i], ctx));
        for (size_t i = 0; i < ad->n_replace; i++) NB_TRY(plan_replace(p, k, &ad->replace[i], ctx));
    }
    qsort(p->ops, p->n_ops, sizeof *p->ops, op_cmp);
    size_t nt = m->n_tensors ? m->n_tensors : 1;
    p->first = nb_calloc(ctx, nt, sizeof *p->first, "plan");
    p->count = nb_calloc(ctx, nt, sizeof *p->count, "plan");
    p->qlora_t = nb_calloc(ctx, nt, sizeof *p->qlora_t, "plan");
    if (!p->first || !p->count || !p->qlora_t) return NB_ERR_NOMEM;
    for (size_t j = p->n_ops; j-- > 0;) {
        p->first[p->ops[j].tensor] = j;
        p->count[p->ops[j].tensor]++;
    }
    if (o->qlora) {
        uint32_t bsz = o->qlora_blocksize ? o->qlora_blocksize : 64;
        if (bsz < 32 || bsz > 4096 || (bsz & (bsz - 1)))
            return nb_err(ctx, NB_ERR_INVALID, "--qlora-blocksize %u: must be a power of two in [32, 4096]", bsz);
        for (size_t i = 0; i < m->n_tensors; i++) {
            const nb_tensor *t = &m->tensors[i];
            if (!qlora_target(t)) continue;
            if (t->type != NB_TYPE_F32 && t->type != NB_TYPE_F16 && t->type != NB_TYPE_BF16)
                return nb_err(ctx, NB_ERR_INVALID,
                              "%s: --qlora needs a full-precision base, but '%s' is %s (omit --qlora: a quantized base "
                              "is dequantized and merged as it is)", base, t->name, nb_type_name(t->type));
            p->qlora_t[i] = true;
        }
    }
    return NB_OK;
}

/* ---- the pass ------------------------------------------------------------------------------------------ */

typedef struct {
    float *tmp;            /* transposed / un-permuted copy of a slice */
    uint64_t tmp_n;
    double *bsq, *dsq;     /* per-row sums */
    uint64_t sq_n;
    int64_t *rows;         /* permutation row map */
    uint64_t rows_n;
} work;

static void *grow(void **buf, uint64_t *have, uint64_t need, size_t elem, nb_ctx *ctx) {
    if (*have >= need) return *buf;
    free(*buf);
    *have = 0;
    *buf = nb_malloc(ctx, (size_t)(need ? need : 1) * elem, "merge buffer");
    if (*buf) *have = need;
    return *buf;
}

static const int64_t *row_map(work *w, nb_xform xf, int64_t rows, uint32_t nh, nb_ctx *ctx) {
    if (xf != NB_XF_PERMUTE_Q && xf != NB_XF_PERMUTE_K) return NULL;
    int64_t *r = grow((void **)&w->rows, &w->rows_n, (uint64_t)rows, sizeof *r, ctx);
    if (!r) return NULL;
    for (int64_t o = 0; o < rows; o++) r[o] = (int64_t)nb_qk_dst_row((uint64_t)o, (uint64_t)rows, nh);
    return r;
}

static nb_status add_entry(nb_merge_result *r, const plan *p, const op *x, nb_merge_kind kind, int64_t expert,
                           double bsq, double dsq, nb_ctx *ctx) {
    nb_merge_entry *ne = nb_realloc(NULL, r->entries, (r->n_entries + 1) * sizeof *ne, "merge");
    if (!ne) return nb_err(ctx, NB_ERR_NOMEM, "out of memory for the merge report");
    r->entries = ne;
    nb_merge_entry *e = &r->entries[r->n_entries];
    memset(e, 0, sizeof *e);
    e->module = nb_strdup(ctx, x->name);
    e->tensor = nb_strdup(ctx, p->m->tensors[x->tensor].name);
    if (!e->module || !e->tensor) { free(e->module); free(e->tensor); return NB_ERR_NOMEM; }
    r->n_entries++;
    e->adapter = x->adapter;
    e->expert = expert;
    e->kind = kind;
    if (x->mod) {
        e->rank = x->mod->rank;
        e->alpha = x->mod->alpha;
        e->scaling = x->mod->scaling * p->o->adapters[x->adapter].weight;
    }
    e->base_norm = sqrt(bsq);
    e->delta_norm = sqrt(dsq);
    return NB_OK;
}

static double sum_d(const double *v, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += v[i];
    return s;
}

static nb_status apply_lora(plan *p, const op *x, float *W, work *w, nb_merge_result *r, nb_ctx *ctx) {
    const nb_lora_module *md = x->mod;
    nb_adapter *ad = p->ad[x->adapter];
    const nb_tensor *t = &p->m->tensors[x->tensor];
    int64_t S = md->n_slices, in = md->in, out = md->out, rk = md->rank;
    uint64_t na = (uint64_t)(rk * in * S), nbb = (uint64_t)(out * rk * S);
    char what[2 * NB_MAX_NAME + 64];
    snprintf(what, sizeof what, "%s: module '%s' -> '%s'", ad->path, md->name, t->name);
    float *A = nb_malloc(ctx, na * sizeof(float), "lora_A"), *B = nb_malloc(ctx, nbb * sizeof(float), "lora_B");
    float *mag = md->magnitude >= 0 ? nb_malloc(ctx, (size_t)out * sizeof(float), "magnitude") : NULL;
    nb_status st = NB_OK;
    if (!A || !B || (md->magnitude >= 0 && !mag)) { st = NB_ERR_NOMEM; goto out; }
    NB_CHECK_GOTO(st, nb_adapter_read_f32(ad, md->b, B, ctx), out);
    if (md->magnitude >= 0) NB_CHECK_GOTO(st, nb_adapter_read_f32(ad, md->magnitude, mag, ctx), out);
    if (md->a_transposed) { /* stored [in, rank] -> [rank, in] */
        float *raw = nb_malloc(ctx, na * sizeof(float), "lora_a");
        if (!raw) { st = NB_ERR_NOMEM; goto out; }
        st = nb_adapter_read_f32(ad, md->a, raw, ctx);
        for (int64_t i = 0; st == NB_OK && i < in; i++)
            for (int64_t k = 0; k < rk; k++) A[k * in + i] = raw[i * rk + k];
        free(raw);
        if (st != NB_OK) goto out;
    } else {
        NB_CHECK_GOTO(st, nb_adapter_read_f32(ad, md->a, A, ctx), out);
    }
    double scale = md->scaling * p->o->adapters[x->adapter].weight;
    int64_t slice_n = t->ne[0] * t->ne[1];
    if (w->sq_n < (uint64_t)out) { /* per-row sums, both sized together */
        free(w->bsq);
        free(w->dsq);
        w->sq_n = 0;
        w->bsq = nb_malloc(ctx, (size_t)out * sizeof(double), "merge buffer");
        w->dsq = nb_malloc(ctx, (size_t)out * sizeof(double), "merge buffer");
        if (!w->bsq || !w->dsq) { st = NB_ERR_NOMEM; goto out; }
        w->sq_n = (uint64_t)out;
    }
    const int64_t *rows = row_map(w, x->xf, out, x->n_head, ctx);
    if (x->xf == NB_XF_PERMUTE_Q || x->xf == NB_XF_PERMUTE_K) {
        if (!rows) { st = NB_ERR_NOMEM; goto out; }
    }
    for (int64_t s = 0; s < S; s++) {
        int64_t sl = S > 1 ? s : (x->slice >= 0 ? x->slice : 0);
        float *Ws = W + sl * slice_n;
        const float *As = A + s * rk * in, *Bs = B + s * out * rk;
        float *target = Ws;
        if (md->transposed) { /* stored [in, out] -> [out, in] */
            if (!grow((void **)&w->tmp, &w->tmp_n, (uint64_t)slice_n, sizeof(float), ctx)) { st = NB_ERR_NOMEM; goto out; }
            for (int64_t j = 0; j < in; j++)
                for (int64_t o = 0; o < out; o++) w->tmp[o * in + j] = Ws[j * out + o];
            target = w->tmp;
        }
        st = nb_lora_merge_rows(target, rows, out, in, As, Bs, (uint32_t)rk, scale, mag, w->bsq, w->dsq,
                                ctx->n_threads, what, ctx);
        if (st != NB_OK) goto out;
        if (md->transposed)
            for (int64_t j = 0; j < in; j++)
                for (int64_t o = 0; o < out; o++) Ws[j * out + o] = w->tmp[o * in + j];
        NB_CHECK_GOTO(st, add_entry(r, p, x, mag ? NB_MERGE_DORA : NB_MERGE_LORA,
                                    S > 1 ? s : x->slice, sum_d(w->bsq, out), sum_d(w->dsq, out), ctx), out);
    }
out:
    free(A);
    free(B);
    free(mag);
    return st;
}

static nb_status apply_bias(plan *p, const op *x, float *W, work *w, nb_merge_result *r, nb_ctx *ctx) {
    const nb_lora_module *md = x->mod;
    int64_t out = md->out;
    float *b = nb_malloc(ctx, (size_t)out * sizeof(float), "lora_B.bias");
    if (!b) return NB_ERR_NOMEM;
    nb_status st = nb_adapter_read_f32(p->ad[x->adapter], md->bias, b, ctx);
    const int64_t *rows = row_map(w, x->xf, out, x->n_head, ctx);
    if (st == NB_OK && !rows && (x->xf == NB_XF_PERMUTE_Q || x->xf == NB_XF_PERMUTE_K)) st = NB_ERR_NOMEM;
    double scale = md->scaling * p->o->adapters[x->adapter].weight, bsq = 0, dsq = 0;
    for (int64_t o = 0; st == NB_OK && o < out; o++) {
        float *v = &W[rows ? rows[o] : o];
        float nv = *v + (float)(b[o] * scale);
        bsq += (double)*v * *v;
        dsq += ((double)nv - *v) * ((double)nv - *v);
        *v = nv;
    }
    free(b);
    if (st == NB_OK) st = add_entry(r, p, x, NB_MERGE_BIAS, -1, bsq, dsq, ctx);
    return st;
}

static nb_status apply_replace(plan *p, const op *x, float *W, work *w, nb_merge_result *r, nb_ctx *ctx) {
    const nb_tensor *t = &p->m->tensors[x->tensor];
    int64_t n = x->slice >= 0 || t->n_dims <= 2 ? t->ne[0] * t->ne[1] : (int64_t)nb_tensor_nelements(t);
    int64_t rows = t->n_dims >= 2 ? t->ne[1] : t->ne[0], rl = n / rows; /* rows are permuted (q/k) */
    float *Ws = W + (x->slice >= 0 ? x->slice * n : 0);
    if (!grow((void **)&w->tmp, &w->tmp_n, (uint64_t)n, sizeof(float), ctx)) return NB_ERR_NOMEM;
    NB_TRY(nb_adapter_read_f32(p->ad[x->adapter], x->src, w->tmp, ctx));
    const int64_t *map = row_map(w, x->xf, rows, x->n_head, ctx);
    if (!map && (x->xf == NB_XF_PERMUTE_Q || x->xf == NB_XF_PERMUTE_K)) return NB_ERR_NOMEM;
    float shift = x->xf == NB_XF_NORM_SHIFT ? 1.0f : 0.0f;
    double bsq = 0, dsq = 0;
    for (int64_t o = 0; o < rows; o++) {
        float *d = Ws + (map ? map[o] : o) * rl;
        const float *s = w->tmp + o * rl;
        for (int64_t j = 0; j < rl; j++) {
            float nv = s[j] + shift;
            bsq += (double)d[j] * d[j];
            dsq += ((double)nv - d[j]) * ((double)nv - d[j]);
            d[j] = nv;
        }
    }
    return add_entry(r, p, x, NB_MERGE_REPLACE, x->slice, bsq, dsq, ctx);
}

/* bitsandbytes NF4 round trip of every 2-D slice, in the HF layout. */
static nb_status qlora_roundtrip(plan *p, size_t i, float *W, work *w, nb_ctx *ctx) {
    const nb_tensor *t = &p->m->tensors[i];
    int64_t slice_n = t->ne[0] * t->ne[1], n_sl = (int64_t)nb_tensor_nelements(t) / (slice_n ? slice_n : 1);
    nb_xform xf = NB_XF_NONE;
    uint32_t nh = 0;
    if (p->arch) {
        char hf[NB_MAX_NAME + 32];
        if (nb_arch_map_gguf(p->arch, t->name, t->n_dims == 3 ? 0 : -1, hf, sizeof hf, &xf)) {
            if (xf == NB_XF_PERMUTE_Q) nh = p->n_head;
            else if (xf == NB_XF_PERMUTE_K) nh = p->n_head_kv;
            else xf = NB_XF_NONE;
        } else {
            xf = NB_XF_NONE;
        }
    }
    if (nh && t->ne[1] % (2 * (int64_t)nh) != 0) xf = NB_XF_NONE, nh = 0;
    const int64_t *map = nh ? row_map(w, xf, t->ne[1], nh, ctx) : NULL;
    if (nh && !map) return NB_ERR_NOMEM;
    if (!grow((void **)&w->tmp, &w->tmp_n, (uint64_t)slice_n, sizeof(float), ctx)) return NB_ERR_NOMEM;
    uint32_t bsz = p->o->qlora_blocksize ? p->o->qlora_blocksize : 64;
    for (int64_t s = 0; s < n_sl; s++) {
        float *Ws = W + s * slice_n, *h = w->tmp;
        int64_t rl = t->ne[0];
        for (int64_t o = 0; o < t->ne[1]; o++) memcpy(h + o * rl, Ws + (map ? map[o] : o) * rl, (size_t)rl * sizeof(float));
        nb_nf4_state q;
        nb_status st = nb_nf4_quantize_tensor(h, (uint64_t)slice_n, bsz, p->o->qlora_double_quant, &q, ctx);
        if (st != NB_OK) return nb_err_prefix(ctx, "%s: --qlora", t->name);
        st = nb_nf4_dequantize_tensor(&q, h, ctx);
        nb_nf4_state_free(&q);
        if (st != NB_OK) return st;
        /* bitsandbytes returns the dequantized weight in the weight's own dtype */
        if (t->type == NB_TYPE_F16)
            for (int64_t j = 0; j < slice_n; j++) h[j] = nb_f16_to_f32(nb_f32_to_f16(h[j]));
        else if (t->type == NB_TYPE_BF16)
            for (int64_t j = 0; j < slice_n; j++) h[j] = nb_bf16_to_f32(nb_f32_to_bf16(h[j]));
        for (int64_t o = 0; o < t->ne[1]; o++) memcpy(Ws + (map ? map[o] : o) * rl, h + o * rl, (size_t)rl * sizeof(float));
    }
    return NB_OK;
}

static nb_type out_type(const nb_tensor *t, const nb_merge_opts *o, bool processed) {
    const nb_type_traits *tr = nb_type_get(t->type);
    if (o->set_type) {
        if (!tr || !(tr->is_float || tr->is_quantized)) return t->type;
        return t->n_dims >= 2 ? o->type : NB_TYPE_F32;
    }
    if (!processed) return t->type;
    if (t->type == NB_TYPE_F32 || t->type == NB_TYPE_F16 || t->type == NB_TYPE_BF16) return t->type;
    return t->n_dims >= 2 ? NB_TYPE_F16 : NB_TYPE_F32;
}

/* Write W (finite, checked by the caller) as type ot. What is written is
 * checked again after rounding: a merged value that overflows f16 (or a
 * block scale that does) would otherwise be written as +-Inf with exit 0. */
static nb_status write_f32(nb_sink *sink, const float *W, const nb_tensor *t, nb_type ot, const char *path,
                           nb_ctx *ctx) {
    uint64_t n = nb_tensor_nelements(t);
    if (ot == NB_TYPE_F32) return nb_sink_write(sink, W, n * sizeof(float), ctx);
    const nb_type_traits *tr = nb_type_get(ot);
    uint64_t row = (uint64_t)t->ne[0], nrows = row ? n / row : 0, rb;
    NB_TRY(nb_type_row_bytes(ot, row, &rb, ctx, t->name));
    uint64_t qn = rb * nrows;
    void *q = nb_malloc(ctx, (size_t)(qn ? qn : 1), "output buffer");
    float *back = nb_malloc(ctx, (size_t)(row ? row : 1) * sizeof(float), "output check");
    nb_status st = q && back ? NB_OK : NB_ERR_NOMEM;
    size_t got = st == NB_OK ? tr->quantize(W, q, (int64_t)nrows, (int64_t)row, NULL) : 0;
    for (uint64_t r = 0; st == NB_OK && tr->to_float && r < nrows; r++) {
        tr->to_float((const unsigned char *)q + r * rb, back, (int64_t)row);
        for (uint64_t c = 0; c < row; c++)
            if (!isfinite(back[c])) {
                st = nb_err(ctx, NB_ERR_RANGE,
                            "%s: merged tensor '%s' does not fit %s: row %llu, column %llu is %g, which rounds to %s "
                            "(write with --type f32 or bf16)",
                            path, t->name, nb_type_name(ot), (unsigned long long)r, (unsigned long long)c,
                            (double)W[r * row + c], isnan(back[c]) ? "NaN" : back[c] > 0 ? "+Inf" : "-Inf");
                break;
            }
    }
    if (st == NB_OK) st = nb_sink_write(sink, q, got, ctx);
    free(back);
    free(q);
    return st;
}

static nb_status process(plan *p, size_t i, nb_sink *sink, nb_type ot, work *w, nb_merge_result *r, nb_ctx *ctx) {
    const nb_tensor *t = &p->m->tensors[i];
    uint64_t n = nb_tensor_nelements(t);
    float *W = nb_malloc(ctx, (size_t)(n ? n : 1) * sizeof(float), t->name);
    if (!W) return NB_ERR_NOMEM;
    nb_status st = nb_model_read_f32(p->m, i, W, ctx);
    nb_model_release_tensor(p->m, i);
    if (st == NB_OK && p->qlora_t[i]) {
        st = qlora_roundtrip(p, i, W, w, ctx);
        r->n_qlora++;
    }
    for (size_t j = p->first[i]; st == NB_OK && j < p->first[i] + p->count[i]; j++) {
        const op *x = &p->ops[j];
        if (x->kind == OP_LORA) st = apply_lora(p, x, W, w, r, ctx);
        else if (x->kind == OP_BIAS) st = apply_bias(p, x, W, w, r, ctx);
        else st = apply_replace(p, x, W, w, r, ctx);
    }
    if (p->count[i]) r->n_merged++;
    for (uint64_t k = 0; st == NB_OK && k < n; k++)
        if (!isfinite(W[k])) {
            int64_t row = t->ne[0] ? (int64_t)(k / (uint64_t)t->ne[0]) : 0;
            st = nb_err(ctx, NB_ERR_RANGE, "%s: merged tensor '%s' has a %s at row %lld, column %lld (adapter %s)",
                        p->m->path, t->name, isnan(W[k]) ? "NaN" : "non-finite value", (long long)row,
                        (long long)(k - (uint64_t)row * (uint64_t)t->ne[0]),
                        p->count[i] ? p->ad[p->ops[p->first[i]].adapter]->path : "none");
        }
    if (st == NB_OK) st = write_f32(sink, W, t, ot, p->m->path, ctx);
    free(W);
    return st;
}

typedef struct merge_writer {
    plan *p;
    const nb_merge_opts *o;
    work *w;
    nb_merge_result *r;
} merge_writer;

static nb_status write_merged(void *user, nb_model *m, size_t i, nb_sink *sink, nb_ctx *ctx) {
    merge_writer *mw = user;
    bool proc = mw->p->count[i] || mw->p->qlora_t[i];
    nb_type ot = out_type(&m->tensors[i], mw->o, proc);
    return proc ? process(mw->p, i, sink, ot, mw->w, mw->r, ctx) : nb_copy_tensor(m, i, ot, sink, ctx);
}

nb_status nb_merge(const char *base, const char *dst, const nb_merge_opts *o, nb_merge_result *r, nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    double t0 = nb_now();
    if (!o || o->n_adapters == 0) return nb_err(ctx, NB_ERR_INVALID, "merge: no adapter given");
    if (nb_same_file(base, dst)) return nb_err(ctx, NB_ERR_INVALID, "%s: output is the same file as the base", dst);
    for (size_t k = 0; k < o->n_adapters; k++)
        if (nb_same_file(o->adapters[k].path, dst))
            return nb_err(ctx, NB_ERR_INVALID, "%s: output is the same file as an adapter", dst);
    if (o->set_type) {
        const nb_type_traits *tr = nb_type_get(o->type);
        if (!tr || !tr->quantize)
            return nb_err(ctx, NB_ERR_INVALID, "--type %s: cannot write this type", nb_type_name(o->type));
    }
    plan p;
    nb_status st = plan_build(&p, base, o, ctx);
    if (st != NB_OK) { plan_free(&p); return st; }
    nb_model *m = p.m;
    bool warned = false;
    for (size_t i = 0; i < m->n_tensors && !o->set_type; i++) {
        const nb_tensor *t = &m->tensors[i];
        if ((p.count[i] || p.qlora_t[i]) && out_type(t, o, true) != t->type && !warned) {
            NB_WARN(ctx, "%s: merged tensors of quantized type (e.g. '%s', %s) are written as %s; requantize the "
                    "result with `nibble quantize` (or pass --type)", base, t->name, nb_type_name(t->type),
                    nb_type_name(out_type(t, o, true)));
            warned = true;
        }
    }
    nb_sink *sink = NULL;
    work w = {0};
    NB_CHECK_GOTO(st, nb_sink_create(dst, NB_FMT_UNKNOWN, &sink, ctx), out);
    NB_CHECK_GOTO(st, nb_kvset_copy(&sink->kv, &m->kv, ctx), out);
    if (o->set_type && sink->format == NB_FMT_GGUF) {
        if (o->type == NB_TYPE_F32 || o->type == NB_TYPE_F16 || o->type == NB_TYPE_BF16)
            NB_CHECK_GOTO(st, nb_kv_set_u32(&sink->kv, "general.file_type",
                                            o->type == NB_TYPE_F16 ? 1u : o->type == NB_TYPE_BF16 ? 32u : 0u, ctx), out);
        else
            nb_kv_remove(&sink->kv, "general.file_type");
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *t = &m->tensors[i];
        bool proc = p.count[i] || p.qlora_t[i];
        NB_CHECK_GOTO(st, nb_sink_add_tensor(sink, t->name, out_type(t, o, proc), t->n_dims, t->ne, ctx), out);
    }
    merge_writer mw = {&p, o, &w, r};
    nb_convert_result cr;
    NB_CHECK_GOTO(st, nb_stream_tensors(m, sink, "merge", write_merged, &mw, &cr, ctx), out);
    r->n_tensors = cr.n_tensors;
    r->bytes_in = cr.bytes_in;
    r->bytes_out = cr.bytes_out;
    memcpy(r->sha256, cr.sha256, 32);
out:
    nb_sink_free(sink);
    free(w.tmp);
    free(w.bsq);
    free(w.dsq);
    free(w.rows);
    plan_free(&p);
    r->seconds = nb_now() - t0;
    return st;
}

void nb_merge_result_free(nb_merge_result *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_entries; i++) {
        free(r->entries[i].module);
        free(r->entries[i].tensor);
    }
    free(r->entries);
    memset(r, 0, sizeof *r);
}

char *nb_merge_result_json(const nb_merge_result *r, const char *base, const char *dst, const nb_merge_opts *o) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    char sha[65];
    for (int k = 0; k < 32; k++) snprintf(sha + 2 * k, 3, "%02x", r->sha256[k]);
    cJSON_AddStringToObject(j, "base", base);
    cJSON_AddStringToObject(j, "output", dst);
    cJSON *ads = cJSON_AddArrayToObject(j, "adapters");
    for (size_t k = 0; ads && k < o->n_adapters; k++) {
        cJSON *a = cJSON_CreateObject();
        if (!a) break;
        cJSON_AddStringToObject(a, "path", o->adapters[k].path);
        cJSON_AddNumberToObject(a, "weight", o->adapters[k].weight);
        cJSON_AddItemToArray(ads, a);
    }
    cJSON_AddStringToObject(j, "type", o->set_type ? nb_type_name(o->type) : "keep");
    if (o->qlora) {
        cJSON *q = cJSON_AddObjectToObject(j, "qlora");
        if (q) {
            cJSON_AddNumberToObject(q, "blocksize", o->qlora_blocksize ? o->qlora_blocksize : 64);
            cJSON_AddBoolToObject(q, "double_quant", o->qlora_double_quant);
            cJSON_AddNumberToObject(q, "tensors", (double)r->n_qlora);
        }
    }
    cJSON_AddNumberToObject(j, "n_tensors", (double)r->n_tensors);
    cJSON_AddNumberToObject(j, "n_merged", (double)r->n_merged);
    cJSON_AddNumberToObject(j, "bytes_in", (double)r->bytes_in);
    cJSON_AddNumberToObject(j, "bytes_out", (double)r->bytes_out);
    cJSON_AddNumberToObject(j, "seconds", r->seconds);
    cJSON_AddStringToObject(j, "sha256", sha);
    cJSON *es = cJSON_AddArrayToObject(j, "merged");
    for (size_t i = 0; es && i < r->n_entries; i++) {
        const nb_merge_entry *e = &r->entries[i];
        cJSON *x = cJSON_CreateObject();
        if (!x) break;
        cJSON_AddNumberToObject(x, "adapter", (double)e->adapter);
        cJSON_AddStringToObject(x, "module", e->module);
        cJSON_AddStringToObject(x, "tensor", e->tensor);
        if (e->expert >= 0) cJSON_AddNumberToObject(x, "expert", (double)e->expert);
        cJSON_AddStringToObject(x, "kind", nb_merge_kind_name(e->kind));
        if (e->kind != NB_MERGE_REPLACE) {
            cJSON_AddNumberToObject(x, "rank", e->rank);
            cJSON_AddNumberToObject(x, "alpha", e->alpha);
            cJSON_AddNumberToObject(x, "scaling", e->scaling);
        }
        cJSON_AddNumberToObject(x, "norm_w", e->base_norm);
        cJSON_AddNumberToObject(x, "norm_delta", e->delta_norm);
        if (e->base_norm > 0) cJSON_AddNumberToObject(x, "rel_delta", e->delta_norm / e->base_norm);
        else cJSON_AddNullToObject(x, "rel_delta");
        cJSON_AddItemToArray(es, x);
    }
    char *s = nb_json_print(j, true);
    cJSON_Delete(j);
    return s;
}
