/* calib/gptq_model.c — sequential GPTQ over a whole model (see calib/gptq_model.h). */
#include "calib/gptq_model.h"

#include "calib/awq.h"
#include "calib/linalg.h"

#include "formats/arch.h"

#include "core/afile.h"
#include "core/checked.h"
#include "core/progress.h"
#include "engine/engine.h"
#include "formats/convert.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SCRATCH_ALIGN 64
#define AWQ_MAX_ROWS 512 /* rows per layer in the AWQ search (nb_awq_opts.max_rows) */

/* ---- scratch file: quantized tensors of finished blocks -------------------------------------------- */

typedef struct scratch {
    int fd;
    uint64_t size;       /* bytes written (aligned) */
    unsigned char *map;  /* read-only mapping of [0, map_size) */
    uint64_t map_size;
    int64_t *slot;       /* per source tensor: entry index or -1 */
    uint64_t *off;       /* per source tensor: offset (valid when slot >= 0) */
    nb_type *type;       /* per source tensor: quantized type */
    uint64_t *nbytes;
    size_t n_tensors;
    const nb_model *m;   /* the source, for name lookups */
} scratch;

static nb_status scratch_open(scratch *s, const char *dir, const nb_model *m, nb_ctx *ctx) {
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->m = m;
    s->n_tensors = m->n_tensors;
    size_t n = m->n_tensors ? m->n_tensors : 1;
    s->slot = nb_malloc(ctx, n * sizeof *s->slot, "scratch table");
    s->off = nb_calloc(ctx, n, sizeof *s->off, "scratch table");
    s->type = nb_calloc(ctx, n, sizeof *s->type, "scratch table");
    s->nbytes = nb_calloc(ctx, n, sizeof *s->nbytes, "scratch table");
    if (!s->slot || !s->off || !s->type || !s->nbytes) return NB_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) s->slot[i] = -1;
    char path[4096];
    int k = snprintf(path, sizeof path, "%s/.nibble-gptq-XXXXXX", dir && dir[0] ? dir : ".");
    NB_RETURN_IF(ctx, k < 0 || (size_t)k >= sizeof path, NB_ERR_INVALID, "gptq: scratch directory name too long");
    s->fd = mkstemp(path);
    if (s->fd < 0) return nb_err_errno(ctx, errno, "gptq: cannot create a scratch file in %s", dir);
    unlink(path); /* anonymous from now on: nothing is left behind, whatever happens */
    return NB_OK;
}

static void scratch_close(scratch *s) {
    if (s->map) munmap(s->map, s->map_size);
    if (s->fd >= 0) close(s->fd);
    free(s->slot); free(s->off); free(s->type); free(s->nbytes);
    memset(s, 0, sizeof *s);
    s->fd = -1;
}

/* Append tensor i's quantized bytes. */
static nb_status scratch_put(scratch *s, size_t i, nb_type type, const void *data, uint64_t n, nb_ctx *ctx) {
    uint64_t off = s->size;
    const unsigned char *p = data;
    for (uint64_t done = 0; done < n;) {
        size_t want = n - done > ((size_t)1 << 30) ? ((size_t)1 << 30) : (size_t)(n - done);
        ssize_t w = pwrite(s->fd, p + done, want, (off_t)(off + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return nb_err_errno(ctx, w < 0 ? errno : ENOSPC, "gptq: scratch file: writing tensor '%s' (%llu bytes)",
                                s->m->tensors[i].name, (unsigned long long)n);
        done += (uint64_t)w;
    }
    s->slot[i] = (int64_t)i;
    s->off[i] = off;
    s->type[i] = type;
    s->nbytes[i] = n;
    s->size = (off + n + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN;
    return NB_OK;
}

/* Map everything written so far (callers drop pointers into the old mapping first). */
static nb_status scratch_map(scratch *s, nb_ctx *ctx) {
    if (s->map) munmap(s->map, s->map_size);
    s->map = NULL;
    s->map_size = 0;
    if (!s->size) return NB_OK;
    void *p = mmap(NULL, (size_t)s->size, PROT_READ, MAP_SHARED, s->fd, 0);
    if (p == MAP_FAILED) return nb_err_errno(ctx, errno, "gptq: cannot map the scratch file (%llu bytes)",
                                             (unsigned long long)s->size);
    s->map = p;
    s->map_size = s->size;
    return NB_OK;
}

static const void *scratch_data(const scratch *s, size_t i) {
    if (s->slot[i] < 0 || !s->map || s->off[i] + s->nbytes[i] > s->map_size) return NULL;
    return s->map + s->off[i];
}

/* nb_quant_opts.prequant */
static const void *scratch_prequant(void *user, const char *name, nb_type type, uint64_t nbytes) {
    scratch *s = user;
    for (size_t i = 0; i < s->n_tensors; i++) {
        if (s->slot[i] < 0 || strcmp(s->m->tensors[i].name, name)) continue;
        if (s->type[i] != type || s->nbytes[i] != nbytes) return NULL; /* cannot happen: same plan */
        return scratch_data(s, i);
    }
    return NULL;
}

/* ---- the view model ---------------------------------------------------------------------------------- */

typedef struct view_impl {
    nb_model *src;
} view_impl;

static nb_status view_read(nb_model *m, size_t i, void *dst, nb_ctx *ctx) {
    view_impl *v = m->impl;
    size_t si = (size_t)(uintptr_t)m->tensors[i].priv;
    return nb_model_read_tensor(v->src, si, dst, ctx);
}

static void view_close(nb_model *m) {
    free(m->impl);
    nb_model_free_common(m);
}

static const nb_model_ops g_view_ops = {view_read, view_close};

/* Block index of "blk.N.*", or -1. */
static long block_of(const char *name) {
    if (strncmp(name, "blk.", 4)) return -1;
    char *end = NULL;
    long b = strtol(name + 4, &end, 10);
    return end && end != name + 4 && *end == '.' && b >= 0 ? b : -1;
}

/* The source with the scratch's tensors substituted; with `truncate`, blocks
 * > L are left out and the block count is L + 1. */
static nb_status view_build(nb_model *src, const scratch *s, int L, bool truncate, const char *count_key,
                            nb_model **out, nb_ctx *ctx) {
    *out = NULL;
    nb_model *m = nb_model_alloc(src->path, src->format, ctx);
    if (!m) return NB_ERR_NOMEM;
    view_impl *v = nb_calloc(ctx, 1, sizeof *v, "model view");
    m->tensors = nb_calloc(ctx, src->n_tensors ? src->n_tensors : 1, sizeof *m->tensors, "model view");
    if (!v || !m->tensors) { free(v); nb_model_free_common(m); return NB_ERR_NOMEM; }
    v->src = src;
    m->impl = v;
    m->ops = &g_view_ops;
    m->file_bytes = src->file_bytes;
    nb_status st = nb_kvset_copy(&m->kv, &src->kv, ctx);
    if (st == NB_OK && truncate) st = nb_kv_set_u32(&m->kv, count_key, (uint32_t)L + 1, ctx);
    for (size_t i = 0; i < src->n_tensors && st == NB_OK; i++) {
        const nb_tensor *t = &src->tensors[i];
        if (truncate && block_of(t->name) > L) continue;
        nb_tensor *d = &m->tensors[m->n_tensors];
        *d = *t;
        d->priv = (void *)(uintptr_t)i;
        d->name = nb_strdup(ctx, t->name);
        if (!d->name) { st = NB_ERR_NOMEM; break; }
        m->n_tensors++;
        const void *q = scratch_data(s, i);
        if (q) {
            d->type = s->type[i];
            d->nbytes = s->nbytes[i];
            d->data = q;
            d->file_offset = 0;
        }
    }
    if (st != NB_OK) { view_close(m); return st; }
    *out = m;
    return NB_OK;
}

/* ---- Hessian collection --------------------------------------------------------------------------- */

/* One (weight, expert) input accumulator of the current block. */
typedef struct hacc {
    size_t tidx;       /* source tensor */
    int expert;        /* -1: 2-D weight */
    int64_t n_in;
    int alias;         /* accumulator whose Hessian this one shares, -1: own (or undecided) */
    bool decided;
    nb_hessian h;      /* own: allocated on the first call */
    uint64_t last_hash;
    int64_t last_ntok;
    uint64_t last_call; /* collector call number of the last input (in chunk last_chunk) */
    uint64_t last_chunk;
    bool skip;         /* an expert the plan leaves to rounding (gptq_experts): no Hessian */
    bool gptq;         /* its weight is quantized by GPTQ (not AWQ's rounding): its Hessian is factored */
    /* after the passes (factor_all), for own Hessians with tokens: */
    bool factored;
    nb_gptq_factor f;  /* shared by every weight reading these inputs */
    float *imp_h;      /* [n_in] Σx²/n from H's diagonal (the scale search's default importance) */
    double *abs_sum;   /* [n_in] Σ|x| (own, with AWQ) */
} hacc;

typedef struct collector {
    bool awq;          /* also Σ|x| per column */
    hacc *a;
    size_t n;
    size_t *first;     /* per target: index of its first accumulator (experts follow) */
    size_t n_targets;
    const nb_model *src;
    int layer;
    uint64_t call;     /* calls seen in this chunk (reset per chunk) */
    uint64_t chunk;
    nb_ctx *ctx;
    nb_status err;
} collector;

static uint64_t hash_rows(const float *x, int64_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    const uint32_t *u = (const uint32_t *)(const void *)x;
    for (int64_t k = 0; k < n; k++) {
        h ^= u[k];
        h *= 0x100000001B3ull;
        h ^= h >> 29;
    }
    return h;
}

static void on_matmul(void *user, const char *name, int expert, const float *x, int64_t n_tok, int64_t n_in) {
    collector *c = user;
    if (c->err != NB_OK || block_of(name) != c->layer || n_tok <= 0) return;
    size_t k = 0;
    for (; k < c->n_targets; k++)
        if (!strcmp(c->src->tensors[c->a[c->first[k]].tidx].name, name)) break;
    if (k == c->n_targets) return;
    hacc *a0 = &c->a[c->first[k]];
    size_t ai = c->first[k] + (expert >= 0 ? (size_t)expert : 0);
    size_t end = k + 1 < c->n_targets ? c->first[k + 1] : c->n;
    if (ai >= end || (expert >= 0) != (a0->expert >= 0) || n_in != a0->n_in) {
        c->err = nb_err(c->ctx, NB_ERR_INTERNAL, "gptq: tensor '%s': unexpected matmul input (expert %d, %lld columns)",
                        name, expert, (long long)n_in);
        return;
    }
    hacc *a = &c->a[ai];
    if (a->skip) return;
    uint64_t hsh = hash_rows(x, n_tok * n_in);
    uint64_t id = ++c->call;
    if (!a->decided) {
        /* the same rows as another weight's input of this chunk (q/k/v, gate/up)? share its Hessian */
        for (size_t b = 0; b < c->n; b++) {
            hacc *o = &c->a[b];
            if (b == ai || !o->decided || o->alias >= 0 || o->expert != a->expert || o->n_in != n_in) continue;
            if (o->last_call && o->last_chunk == c->chunk && o->last_hash == hsh && o->last_ntok == n_tok) {
                a->alias = (int)b;
                break;
            }
        }
        a->decided = true;
        if (a->alias < 0) {
            c->err = nb_hessian_init(&a->h, n_in, c->ctx);
            if (c->err != NB_OK) return;
        }
    }
    if (a->alias >= 0) {
        const hacc *o = &c->a[a->alias];
        if (o->last_chunk != c->chunk || o->last_hash != hsh || o->last_ntok != n_tok) {
            c->err = nb_err(c->ctx, NB_ERR_INTERNAL,
                            "gptq: tensor '%s': its input stopped matching that of '%s' (shared Hessian)", name,
                            c->src->tensors[o->tidx].name);
            return;
        }
    } else {
        c->err = nb_hessian_add(&a->h, x, n_tok, name, c->ctx);
        if (c->err != NB_OK) return;
        if (c->awq) {
            if (!a->abs_sum && !(a->abs_sum = nb_calloc(c->ctx, (size_t)n_in, sizeof(double), "AWQ statistics"))) {
                c->err = NB_ERR_NOMEM;
                return;
            }
            for (int64_t t = 0; t < n_tok; t++)
                for (int64_t j = 0; j < n_in; j++) a->abs_sum[j] += fabs((double)x[t * n_in + j]);
        }
    }
    a->last_hash = hsh;
    a->last_ntok = n_tok;
    a->last_call = id;
    a->last_chunk = c->chunk;
}

static void collector_free(collector *c) {
    for (size_t k = 0; k < c->n; k++) {
        nb_hessian_free(&c->a[k].h);
        nb_gptq_factor_free(&c->a[k].f);
        free(c->a[k].imp_h);
        free(c->a[k].abs_sum);
    }
    free(c->a);
    free(c->first);
    c->a = NULL;
    c->first = NULL;
    c->n = c->n_targets = 0;
}

/* ---- quantizing one tensor ------------------------------------------------------------------------------ */

typedef struct worker {
    nb_model *src;
    const nb_quant_opts *qo;
    const nb_gptq_model_opts *go;
    const nb_plan_tensor *plan;   /* the plan's tensors (source order) */
    scratch *s;
    nb_gptq_model_result *r;
    nb_ctx *ctx;
    /* AWQ of the current block, per source tensor (NULL: none): weight columns
     * multiplied by col_s, rows divided by row_s */
    float **col_s, **row_s;
} worker;

/* Plain rounding of n_rows rows of f into dst, as the quantize pipeline does
 * (rows in parallel; NF4_DQ in one call: its offset is a mean over the slice). */
static void rtn_rows(nb_type type, const float *f, void *dst, int64_t n_rows, int64_t n_in, uint64_t row_bytes,
                     const float *imp, int nt) {
    const nb_type_traits *to = nb_type_get(type);
    if (type == NB_TYPE_NF4_DQ) { to->quantize(f, dst, n_rows, n_in, imp); return; }
    int64_t per = n_in >= 65536 ? 1 : 65536 / n_in;
    int64_t nb = (n_rows + per - 1) / per;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t k = 0; k < nb; k++) {
        int64_t a = k * per, e = a + per < n_rows ? a + per : n_rows;
        to->quantize(f + a * n_in, (unsigned char *)dst + (uint64_t)a * row_bytes, e - a, n_in, imp);
    }
}

#define QUAD_SLAB 256 /* rows converted to double per nb_linalg_row_quad call */

/* Σ_rows d H dᵀ / 2 with d = x - y (n_rows x n; y NULL: d = x), in slabs of
 * fixed size (row tiles in parallel inside), summed in row order. rowbuf:
 * n_rows doubles. False when out of memory. */
static bool quad_err(const float *x, const float *y, int64_t n_rows, int64_t n, const double *H, double *rowbuf,
                     int nt, double *out) {
    const int64_t slab = n_rows < QUAD_SLAB ? n_rows : QUAD_SLAB;
    double *d = malloc((size_t)slab * (size_t)n * sizeof(double));
    bool ok = d != NULL;
    for (int64_t r0 = 0; ok && r0 < n_rows; r0 += QUAD_SLAB) {
        const int64_t nr = n_rows - r0 < QUAD_SLAB ? n_rows - r0 : QUAD_SLAB;
        for (int64_t e = 0; e < nr * n; e++) d[e] = (double)x[r0 * n + e] - (y ? (double)y[r0 * n + e] : 0.0);
        ok = nb_linalg_row_quad(d, nr, n, H, rowbuf + r0, nt);
    }
    free(d);
    double tot = 0;
    for (int64_t r = 0; ok && r < n_rows; r++) tot += rowbuf[r] / 2;
    *out = tot;
    return ok;
}

static nb_status add_stat(nb_gptq_model_result *r, const nb_gptq_tensor_stat *st, nb_ctx *ctx) {
    if ((r->n_stats & (r->n_stats + 1)) == 0 || !r->stats) {
        size_t cap = r->n_stats ? 2 * (r->n_stats + 1) : 16;
        nb_gptq_tensor_stat *p = nb_realloc(NULL, r->stats, cap * sizeof *p, "gptq_model");
        if (!p) return nb_err(ctx, NB_ERR_NOMEM, "gptq: out of memory for statistics");
        r->stats = p;
    }
    r->stats[r->n_stats++] = *st;
    return NB_OK;
}

/* Quantize tensor i (type from the plan): GPTQ per slice where `first`
 * points at its accumulators (NULL: plain rounding), into the scratch. */
static nb_status quantize_tensor(worker *w, size_t i, const collector *c, size_t first, bool gptq, nb_ctx *ctx) {
    nb_model *m = w->src;
    const nb_tensor *t = &m->tensors[i];
    const nb_plan_tensor *pl = &w->plan[i];
    const nb_type_traits *ti = nb_type_get(t->type);
    nb_type type = pl->type;
    int nt = nb_ctx_threads(ctx);
    const int64_t n_in = t->ne[0], n_out = t->n_dims >= 2 ? t->ne[1] : 1;
    const int64_t n_mat = t->n_dims >= 3 ? t->ne[2] : 1;
    NB_RETURN_IF(ctx, !ti || !ti->to_float, NB_ERR_UNSUPPORTED, "%s: tensor '%s': cannot convert from type %s",
                 m->path, t->name, nb_type_name(t->type));
    uint64_t in_rb, out_rb;
    NB_TRY(nb_type_row_bytes(t->type, (uint64_t)n_in, &in_rb, ctx, t->name));
    NB_TRY(nb_type_row_bytes(type, (uint64_t)n_in, &out_rb, ctx, t->name));
    NB_RETURN_IF(ctx, out_rb * (uint64_t)n_out * (uint64_t)n_mat != pl->bytes_out, NB_ERR_INTERNAL,
                 "gptq: tensor '%s': plan size mismatch", t->name);
    const void *sbv = NULL;
    void *owned = NULL;
    NB_TRY(nb_model_tensor_bytes(m, i, &sbv, &owned, ctx));
    const unsigned char *sb = sbv;
    size_t slice_el = (size_t)n_in * (size_t)n_out;
    float *f = nb_malloc(ctx, slice_el * sizeof(float), t->name);
    float *deq = nb_malloc(ctx, slice_el * sizeof(float), t->name);
    float *rq = w->go->compare_rtn ? nb_malloc(ctx, slice_el * sizeof(float), t->name) : NULL;
    float *impb = nb_malloc(ctx, (size_t)n_in * sizeof(float), t->name);
    double *rowbuf = nb_malloc(ctx, (size_t)n_out * sizeof(double), t->name);
    unsigned char *q = nb_malloc(ctx, (size_t)pl->bytes_out, t->name);
    unsigned char *rtnq = w->go->compare_rtn ? nb_malloc(ctx, (size_t)(out_rb * (uint64_t)n_out), t->name) : NULL;
    nb_status st = NB_OK;
    if (!f || !deq || !impb || !rowbuf || !q || (w->go->compare_rtn && (!rq || !rtnq))) {
        st = NB_ERR_NOMEM;
        goto out;
    }
    for (int64_t s = 0; s < n_mat && st == NB_OK; s++) {
        ti->to_float(sb + (uint64_t)s * in_rb * (uint64_t)n_out, f, (int64_t)slice_el);
        for (size_t k = 0; k < slice_el; k++)
            if (!isfinite(f[k]))
                NB_FAIL_GOTO(st, out, ctx, NB_ERR_RANGE, "%s: tensor '%s': element %llu (row %llu, column %llu) is %s",
                             m->path, t->name, (unsigned long long)((uint64_t)s * slice_el + k),
                             (unsigned long long)((uint64_t)s * (uint64_t)n_out + k / (size_t)n_in),
                             (unsigned long long)(k % (size_t)n_in), isnan(f[k]) ? "NaN" : "infinite");
        const float *imp = w->qo->importance && pl->method != NB_PLAN_METHOD_RTN
                               ? w->qo->importance(w->qo->importance_user, t->name, s, n_in) : NULL;
        if (imp) memcpy(impb, imp, (size_t)n_in * sizeof(float)); /* the callback's buffer is reused */
        /* AWQ scales: one vector per tensor, or per expert slice of a stack (slice s at s * n) */
        const float *cs = w->col_s && w->col_s[i] ? w->col_s[i] + (n_mat > 1 ? s * n_in : 0) : NULL;
        const float *rs = w->row_s && w->row_s[i] ? w->row_s[i] + (n_mat > 1 ? s * n_out : 0) : NULL;
        if (cs) { /* AWQ: W diag(s); the measured importance is that of the inputs x / s */
            for (int64_t r = 0; r < n_out; r++)
                for (int64_t j = 0; j < n_in; j++) f[r * n_in + j] *= cs[j];
            if (imp)
                for (int64_t j = 0; j < n_in; j++) impb[j] /= cs[j] * cs[j];
        }
        if (rs)
            for (int64_t r = 0; r < n_out; r++)
                for (int64_t j = 0; j < n_in; j++) f[r * n_in + j] /= rs[r];
        unsigned char *dst = q + (uint64_t)s * out_rb * (uint64_t)n_out;
        const hacc *a = gptq ? &c->a[first + (size_t)s] : NULL;
        const hacc *ha = a && a->alias >= 0 ? &c->a[a->alias] : a;
        uint64_t n_tok = ha && ha->decided && ha->factored ? ha->h.n_tok : 0;
        if (gptq && n_mat > 1 && a->skip) { /* the plan rounds this expert */
            w->r->n_rtn++;
            rtn_rows(type, f, dst, n_out, n_in, out_rb, imp ? impb : NULL, nt);
            continue;
        }
        if (!gptq || n_tok == 0) {
            if (gptq && n_mat > 1)
                NB_WARN(ctx, "tensor '%s': expert %lld received no calibration token: rounded to nearest (no GPTQ)",
                        t->name, (long long)s);
            else if (gptq)
                NB_WARN(ctx, "tensor '%s': no calibration input reached it: rounded to nearest (no GPTQ)", t->name);
            if (gptq && n_mat > 1) w->r->n_zero_experts++;
            if (!gptq && (pl->method == NB_PLAN_METHOD_IMATRIX || pl->method == NB_PLAN_METHOD_RTN))
                w->r->n_plan_rounded++; /* the plan's choice, not a fallback */
            else
                w->r->n_rtn++;
            rtn_rows(type, f, dst, n_out, n_in, out_rb, imp ? impb : NULL, nt);
            continue;
        }
        if (!imp) memcpy(impb, ha->imp_h, (size_t)n_in * sizeof(float));
        nb_gptq_opts go = w->go->gptq;
        go.imp = impb;
        nb_gptq_result gr;
        char label[NB_MAX_NAME + 32];
        if (n_mat > 1) snprintf(label, sizeof label, "%s[expert %lld]", t->name, (long long)s);
        else snprintf(label, sizeof label, "%s", t->name);
        const bool awq_round = w->go->no_gptq || pl->method == NB_PLAN_METHOD_AWQ;
        if (awq_round) { /* AWQ alone: the type's rounding with the (scaled) importance */
            memset(&gr, 0, sizeof gr);
            rtn_rows(type, f, dst, n_out, n_in, out_rb, impb, nt);
            nb_type_get(type)->to_float(dst, deq, (int64_t)slice_el);
        } else {
            NB_CHECK_GOTO(st, nb_gptq_quantize_factored(type, f, n_out, n_in, &ha->f, &go, dst, deq, &gr, label, ctx),
                          out);
        }
        if (pl->method == NB_PLAN_METHOD_AWQ) w->r->n_awq_weights++;
        else w->r->n_gptq++;
        nb_gptq_tensor_stat ts = {.expert = n_mat > 1 ? (int)s : -1, .type = type, .n_tok = n_tok,
                                  .err_gptq = -1, .err_rtn = -1, .err_w = -1, .damp_retries = gr.damp_retries,
                                  .n_dead = gr.n_dead};
        snprintf(ts.name, sizeof ts.name, "%s", t->name);
        if (gr.damp_retries)
            NB_WARN(ctx, "%s: Hessian not positive definite: dampening raised %d time%s", label, gr.damp_retries,
                    gr.damp_retries == 1 ? "" : "s");
        if (w->go->compare_rtn) {
            /* errors under the undampened Hessian (H again: nb_gptq_quantize does not modify it) */
            const double *H = ha->h.xtx; /* finished: H = 2 XᵀX / n (factor_all) */
            bool ok = quad_err(f, deq, n_out, n_in, H, rowbuf, nt, &ts.err_gptq);
            rtn_rows(type, f, rtnq, n_out, n_in, out_rb, imp ? impb : NULL, nt);
            nb_type_get(type)->to_float(rtnq, rq, (int64_t)slice_el);
            ok = ok && quad_err(f, rq, n_out, n_in, H, rowbuf, nt, &ts.err_rtn);
            ok = ok && quad_err(f, NULL, n_out, n_in, H, rowbuf, nt, &ts.err_w);
            if (!ok) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "%s: out of memory for the error report", label);
        }
        NB_CHECK_GOTO(st, add_stat(w->r, &ts, ctx), out);
    }
    if (st == NB_OK) st = scratch_put(w->s, i, type, q, pl->bytes_out, ctx);
out:
    free(f); free(deq); free(rq); free(impb); free(rowbuf); free(q); free(rtnq); free(owned);
    nb_model_release_tensor(m, i);
    return st;
}

/* After the calibration passes (and finish_all, AWQ): every own Hessian's
 * diagonal gives the default importance, and the Hessian its GPTQ factor — the factorisations of the block in parallel (one thread each,
 * BLAS single-threaded: the result does not depend on the thread count).
 * H itself is kept only for the error report (compare_rtn). */
static void diag_importance(const double *H, int64_t n, float *imp) {
    double mean = 0;
    for (int64_t j = 0; j < n; j++) mean += H[j * n + j];
    mean /= 2.0 * (double)n;
    for (int64_t j = 0; j < n; j++) { /* Σx²/n, floored so no block has all-zero weights */
        double v = H[j * n + j] / 2;
        imp[j] = (float)(v > mean * 1e-6 ? v : mean * 1e-6 + 1e-30);
    }
}

/* H = 2 XᵀX / n in place (full symmetric) for every own Hessian with tokens. */
static void finish_all(collector *c) {
    for (size_t k = 0; k < c->n; k++) {
        hacc *a = &c->a[k];
        if (a->decided && a->alias < 0 && a->h.n_tok > 0) nb_hessian_finish(&a->h, a->h.xtx);
    }
}

/* ---- AWQ of one block (calib/awq.h) -------------------------------------------------------------------- */

/* May AWQ scale tensor i? A plan without methods: the job's (go->awq); a plan
 * with methods (the planner's mixed methods): its "awq" tensors only, so a
 * group is scaled only when every reader (and a linear producer) says awq. */
static bool awq_on(const worker *w, size_t i) {
    nb_plan_method pm = w->plan[i].method;
    return w->go->awq && (pm == NB_PLAN_METHOD_JOB || pm == NB_PLAN_METHOD_AWQ);
}

/* The accumulator of 2-D target tensor i (its own Hessian's), or NULL. */
static hacc *own_acc(collector *c, size_t i) {
    for (size_t k = 0; k < c->n_targets; k++) {
        hacc *a = &c->a[c->first[k]];
        if (a->tidx != i || a->expert >= 0) continue;
        if (a->alias >= 0) a = &c->a[a->alias];
        return a->decided && a->h.n_tok > 0 ? a : NULL;
    }
    return NULL;
}

/* The accumulators of stacked target tensor i (its first expert's), or NULL. */
static hacc *stack_accs(collector *c, size_t i) {
    for (size_t k = 0; k < c->n_targets; k++)
        if (c->a[c->first[k]].tidx == i && c->a[c->first[k]].expert == 0) return &c->a[c->first[k]];
    return NULL;
}

static float *copy_scales(const float *s, int64_t n, int64_t times) {
    float *p = malloc((size_t)(n * times) * sizeof(float));
    for (int64_t k = 0; p && k < times; k++) memcpy(p + k * n, s, (size_t)n * sizeof(float));
    return p;
}

/* Rewrite float tensor i (a norm: its 1-D weight; a router: its rows) with
 * column j multiplied by mul[j] (or divided, `divide`), in its own type, into
 * the scratch. */
static nb_status rewrite_scaled(worker *w, size_t i, const float *sc, bool divide, nb_ctx *ctx) {
    const nb_tensor *t = &w->src->tensors[i];
    const nb_type_traits *tt = nb_type_get(t->type);
    const int64_t n = t->ne[0], rows = (int64_t)(nb_tensor_nelements(t) / (uint64_t)n);
    float *f = nb_malloc(ctx, (size_t)(n * rows) * sizeof(float), t->name);
    unsigned char *q = nb_malloc(ctx, (size_t)t->nbytes, t->name);
    nb_status st = f && q ? nb_model_read_f32(w->src, i, f, ctx) : NB_ERR_NOMEM;
    if (st == NB_OK) {
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < n; j++) f[r * n + j] = divide ? f[r * n + j] / sc[j] : f[r * n + j] * sc[j];
        tt->quantize(f, q, rows, n, NULL);
        st = scratch_put(w->s, i, t->type, q, t->nbytes, ctx);
    }
    free(f);
    free(q);
    return st;
}

/* Does tensor i stay in its (float) source type, rewritable from F32? */
static bool float_kept(const worker *w, size_t i) {
    const nb_tensor *t = &w->src->tensors[i];
    const nb_type_traits *tt = nb_type_get(t->type);
    return w->plan[i].type == t->type && tt && tt->quantize && tt->to_f32;
}

/* One group of nb_awq_groups (not the per-expert one): search, then record
 * the scales (weights: applied when quantized; a norm or router: rewritten
 * into the scratch now) and scale the Hessians. Readers that are expert
 * stacks (the MoE FFN input) are searched on their experts' statistics
 * pooled over (token, expert) pairs — every expert's Hessian and Σ|x| weighted
 * by the tokens routed to it (all tokens with all_experts) — and take the same
 * scales in every expert. Returns NB_OK without doing anything when the group
 * does not apply. */
static nb_status awq_group_run(worker *w, collector *c, int L, const nb_awq_group *g, nb_ctx *ctx) {
    nb_model *m = w->src;
    long pi, li[NB_AWQ_MAX_LIN], ri[NB_AWQ_MAX_ROUTERS];
    int nl, nr;
    if (!nb_awq_group_find(m, L, g, &pi, li, &nl, ri, &nr)) return NB_OK;
    const int64_t n = m->tensors[li[0]].ne[0];
    hacc *own = NULL, *stack = NULL; /* the 2-D readers' shared accumulator; the first stack's experts */
    size_t n_h = 0;
    for (int k = 0; k < nl; k++) {
        const nb_tensor *t = &m->tensors[li[k]];
        if (!awq_on(w, (size_t)li[k])) return NB_OK;
        if (t->n_dims == 3) {
            hacc *a0 = stack_accs(c, (size_t)li[k]);
            if (!a0) return NB_OK; /* every reader quantized here (scaled on the way) */
            if (!stack) stack = a0;
            n_h += (size_t)t->ne[2];
        } else {
            hacc *a = own_acc(c, (size_t)li[k]);
            if (!a || (own && a != own) || !a->abs_sum) return NB_OK; /* one input */
            own = a;
            n_h++;
        }
    }
    if (g->prev_is_norm ? !float_kept(w, (size_t)pi) : !own_acc(c, (size_t)pi) || !awq_on(w, (size_t)pi))
        return NB_OK; /* a norm rewritten in its type; a producer's rows quantized here (scaled on the way) */
    for (int k = 0; k < nr; k++)
        if (!float_kept(w, (size_t)ri[k])) return NB_OK;
    char label[NB_MAX_NAME + 64];
    snprintf(label, sizeof label, "blk.%d %s -> %s%s", L, g->prev, g->lin[0], nl > 1 ? "..." : "");
    nb_awq_linear lin[NB_AWQ_MAX_LIN];
    float *wf[NB_AWQ_MAX_LIN] = {NULL}, *sc = NULL, *imp = NULL;
    double *mu = NULL, *hp = NULL;
    hacc **hs = NULL;
    nb_status st = NB_OK;
    sc = nb_malloc(ctx, (size_t)n * sizeof(float), "AWQ scales");
    imp = nb_malloc(ctx, (size_t)n * sizeof(float), "AWQ importance");
    mu = nb_calloc(ctx, (size_t)n, sizeof(double), "AWQ statistics");
    hs = nb_calloc(ctx, n_h, sizeof *hs, "AWQ statistics");
    if (!sc || !imp || !mu || !hs) { st = NB_ERR_NOMEM; goto out; }
    const double *H = NULL;
    size_t nh = 0; /* distinct Hessians to rescale */
    if (own) hs[nh++] = own;
    for (int k = 0; k < nl; k++) {
        const nb_tensor *t = &m->tensors[li[k]];
        if (t->n_dims != 3) continue;
        hacc *a0 = stack_accs(c, (size_t)li[k]);
        for (int64_t e = 0; e < t->ne[2]; e++) {
            hacc *a = a0[e].alias >= 0 ? &c->a[a0[e].alias] : &a0[e];
            if (!a->decided || a->h.n_tok == 0) continue;
            size_t q = 0;
            while (q < nh && hs[q] != a) q++;
            if (q == nh) hs[nh++] = a;
        }
    }
    if (!stack) {
        H = own->h.xtx;
        for (int64_t j = 0; j < n; j++) mu[j] = own->abs_sum[j] / (double)own->h.n_tok;
        const float *mi =
            w->qo->importance ? w->qo->importance(w->qo->importance_user, m->tensors[li[0]].name, 0, n) : NULL;
        if (mi) memcpy(imp, mi, (size_t)n * sizeof(float));
        else diag_importance(H, n, imp);
    } else {
        hp = nb_calloc(ctx, (size_t)(n * n), sizeof(double), "AWQ statistics");
        if (!hp) { st = NB_ERR_NOMEM; goto out; }
        double tok = 0;
        for (int64_t e = 0; e < m->tensors[stack->tidx].ne[2]; e++) {
            const hacc *a = stack[e].alias >= 0 ? &c->a[stack[e].alias] : &stack[e];
            if (!a->decided || a->h.n_tok == 0 || !a->abs_sum) continue;
            const double ne = (double)a->h.n_tok;
            for (int64_t k = 0; k < n * n; k++) hp[k] += ne * a->h.xtx[k];
            for (int64_t j = 0; j < n; j++) mu[j] += a->abs_sum[j];
            tok += ne;
        }
        if (!(tok > 0)) goto out; /* no expert saw a token */
        for (int64_t k = 0; k < n * n; k++) hp[k] /= tok;
        for (int64_t j = 0; j < n; j++) mu[j] /= tok;
        H = hp;
        diag_importance(H, n, imp);
    }
    for (int k = 0; k < nl; k++) {
        int64_t rows = 0;
        NB_CHECK_GOTO(st, nb_awq_sample_rows(m, (size_t)li[k], AWQ_MAX_ROWS, &wf[k], &rows, ctx), out);
        lin[k] = (nb_awq_linear){wf[k], rows, w->plan[li[k]].type};
    }
    nb_awq_opts ao = {.max_rows = AWQ_MAX_ROWS};
    nb_awq_result ar = {.alpha = w->go->awq_alpha};
    if (w->go->awq_alpha > 0) nb_awq_scales(mu, n, w->go->awq_alpha, sc);
    else NB_CHECK_GOTO(st, nb_awq_search(H, mu, n, lin, nl, imp, &ao, sc, &ar, label, ctx), out);
    w->r->n_awq_groups++;
    if (stack) {
        w->r->awq_norm_err += ar.err;
        w->r->awq_norm_err_plain += ar.err_plain;
    }
    if (w->go->awq_alpha > 0) NB_INFO(ctx, "awq: %s: alpha %.2f (given)", label, ar.alpha);
    else
        NB_INFO(ctx, "awq: %s: alpha %.2f, output error %.4g = %.3f x plain rounding's (sampled rows)", label,
                ar.alpha, ar.err, ar.err_plain > 0 ? ar.err / ar.err_plain : 1.0);
    if (ar.alpha == 0) goto out;
    w->r->n_awq_scaled++;
    for (int k = 0; k < nl; k++) {
        const nb_tensor *t = &m->tensors[li[k]];
        if (!(w->col_s[li[k]] = copy_scales(sc, n, t->n_dims == 3 ? t->ne[2] : 1))) { st = NB_ERR_NOMEM; goto out; }
    }
    if (g->prev_is_norm) NB_CHECK_GOTO(st, rewrite_scaled(w, (size_t)pi, sc, true, ctx), out); /* weight / s */
    else if (!(w->row_s[pi] = copy_scales(sc, n, 1))) { st = NB_ERR_NOMEM; goto out; }
    for (int k = 0; k < nr; k++) /* the routers read x / s now: columns x s, routing unchanged */
        NB_CHECK_GOTO(st, rewrite_scaled(w, (size_t)ri[k], sc, false, ctx), out);
    for (size_t q = 0; q < nh; q++) /* the inputs are now x / s: H -> S⁻¹ H S⁻¹ */
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) hs[q]->h.xtx[i * n + j] /= (double)sc[i] * (double)sc[j];
out:
    for (int k = 0; k < NB_AWQ_MAX_LIN; k++) free(wf[k]);
    free(sc); free(imp); free(mu); free(hp); free(hs);
    return st;
}

/* MoE experts: per expert e, scales between its up and down projections
 * (down's input is act(gate x) ⊙ (up x), linear in up's rows): searched on
 * expert e's own Hessian of down's input (only the tokens routed to it),
 * folded by dividing up's rows of slice e by s and multiplying down's columns
 * of slice e by s. Experts without tokens keep scale 1. (The FFN input, shared
 * by every expert's gate and up and the router, is the norm-folded group of
 * awq_group_run.) */
static nb_status awq_experts(worker *w, collector *c, int L, const nb_awq_group *g, nb_ctx *ctx) {
    nb_model *m = w->src;
    long ui, dil[NB_AWQ_MAX_LIN], rr[NB_AWQ_MAX_ROUTERS];
    int nl, nr;
    if (!nb_awq_group_find(m, L, g, &ui, dil, &nl, rr, &nr) || nl != 1) return NB_OK;
    const long di = dil[0];
    if (!awq_on(w, (size_t)ui) || !awq_on(w, (size_t)di)) return NB_OK;
    const nb_tensor *dt = &m->tensors[di];
    hacc *da = stack_accs(c, (size_t)di);
    if (!da || !stack_accs(c, (size_t)ui)) return NB_OK; /* both quantized here (up scaled on the way) */
    const int64_t n = dt->ne[0], n_out = dt->ne[1], n_exp = dt->ne[2];
    float *wd = nb_malloc(ctx, (size_t)(n * n_out * n_exp) * sizeof(float), dt->name);
    float *cs = nb_malloc(ctx, (size_t)(n * n_exp) * sizeof(float), "AWQ scales");
    float *imp = nb_malloc(ctx, (size_t)n * sizeof(float), "AWQ importance");
    double *mu = nb_malloc(ctx, (size_t)n * sizeof(double), "AWQ statistics");
    nb_status st = wd && cs && imp && mu ? NB_OK : NB_ERR_NOMEM;
    if (st == NB_OK) st = nb_model_read_f32(m, (size_t)di, wd, ctx);
    size_t scaled = 0;
    for (int64_t e = 0; e < n_exp && st == NB_OK; e++) {
        float *sc = cs + e * n;
        for (int64_t j = 0; j < n; j++) sc[j] = 1;
        hacc *a = &da[e];
        if (!a->decided || a->alias >= 0 || a->h.n_tok == 0 || !a->abs_sum) continue;
        for (int64_t j = 0; j < n; j++) mu[j] = a->abs_sum[j] / (double)a->h.n_tok;
        const float *mi = w->qo->importance ? w->qo->importance(w->qo->importance_user, dt->name, e, n) : NULL;
        if (mi) memcpy(imp, mi, (size_t)n * sizeof(float));
        else diag_importance(a->h.xtx, n, imp);
        char label[NB_MAX_NAME + 64];
        snprintf(label, sizeof label, "blk.%d ffn_up_exps -> ffn_down_exps[expert %lld]", L, (long long)e);
        nb_awq_linear lin = {wd + e * n * n_out, n_out, w->plan[di].type};
        nb_awq_result ar = {.alpha = w->go->awq_alpha};
        if (w->go->awq_alpha > 0) nb_awq_scales(mu, n, w->go->awq_alpha, sc);
        else st = nb_awq_search(a->h.xtx, mu, n, &lin, 1, imp, NULL, sc, &ar, label, ctx);
        if (st != NB_OK) break;
        w->r->n_awq_groups++;
        w->r->awq_expert_err += ar.err;
        w->r->awq_expert_err_plain += ar.err_plain;
        if (ar.alpha == 0) continue;
        w->r->n_awq_scaled++;
        scaled++;
        for (int64_t i = 0; i < n; i++) /* expert e's inputs are now x / s: H -> S⁻¹ H S⁻¹ */
            for (int64_t j = 0; j < n; j++) a->h.xtx[i * n + j] /= (double)sc[i] * (double)sc[j];
    }
    if (st == NB_OK && scaled) {
        NB_INFO(ctx, "awq: blk.%d: %zu of %lld experts scaled between up and down", L, scaled, (long long)n_exp);
        w->col_s[di] = cs; /* down's columns x s, up's rows / s, per slice */
        w->row_s[ui] = copy_scales(cs, n * n_exp, 1);
        cs = NULL;
        if (!w->row_s[ui]) st = NB_ERR_NOMEM;
    }
    free(wd); free(cs); free(imp); free(mu);
    return st;
}

static nb_status awq_block(worker *w, collector *c, int L, nb_ctx *ctx) {
    size_t ng;
    const nb_awq_group *g = nb_awq_groups(&ng);
    for (size_t k = 0; k < ng; k++) NB_TRY(g[k].per_expert ? awq_experts(w, c, L, &g[k], ctx) : awq_group_run(w, c, L, &g[k], ctx));
    return NB_OK;
}

static nb_status factor_all(collector *c, const nb_gptq_opts *o, bool factor, bool keep_h, nb_ctx *ctx) {
    size_t n_own = 0;
    for (size_t k = 0; k < c->n; k++) n_own += c->a[k].decided && c->a[k].alias < 0 && c->a[k].h.n_tok > 0;
    if (!n_own) return NB_OK;
    size_t *own = nb_malloc(ctx, n_own * sizeof *own, "Hessian list");
    if (!own) return NB_ERR_NOMEM;
    n_own = 0;
    for (size_t k = 0; k < c->n; k++)
        if (c->a[k].decided && c->a[k].alias < 0 && c->a[k].h.n_tok > 0) own[n_own++] = k;
    int nt = nb_ctx_threads(ctx);
    nb_status first = NB_OK;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (size_t q = 0; q < n_own; q++) {
        hacc *a = &c->a[own[q]];
        const int64_t n = a->n_in;
        char label[NB_MAX_NAME + 32];
        if (a->expert >= 0) snprintf(label, sizeof label, "%s[expert %d]", c->src->tensors[a->tidx].name, a->expert);
        else snprintf(label, sizeof label, "%s", c->src->tensors[a->tidx].name);
        a->imp_h = malloc((size_t)n * sizeof(float));
        nb_status sq = a->imp_h ? NB_OK : nb_err(ctx, NB_ERR_NOMEM, "gptq: %s: out of memory", label);
        if (sq == NB_OK) {
            diag_importance(a->h.xtx, n, a->imp_h);
            if (factor && a->gptq) sq = nb_gptq_factor_make(a->h.xtx, n, o, &a->f, label, ctx);
        }
        if (sq != NB_OK) {
#pragma omp critical(nb_gptq_factor_fail)
            if (first == NB_OK) first = sq;
            continue;
        }
        a->factored = true;
        if (!keep_h) { free(a->h.xtx); a->h.xtx = NULL; }
    }
    free(own);
    return first;
}

/* Does the pipeline quantize tensor i (planned type differs from the source)? */
static bool converted(const worker *w, size_t i) { return w->plan[i].type != w->src->tensors[i].type; }

static bool gptq_target(const worker *w, size_t i) {
    const nb_tensor *t = &w->src->tensors[i];
    const nb_type_traits *tt = nb_type_get(w->plan[i].type);
    bool ok = w->go->no_gptq ? tt && tt->quantize && tt->to_float : nb_gptq_supported(w->plan[i].type);
    /* a plan with methods per tensor (the planner's mixed methods): only its gptq and awq tensors */
    nb_plan_method pm = w->plan[i].method;
    if (pm == NB_PLAN_METHOD_AWQ) ok = w->go->awq && tt && tt->quantize && tt->to_float; /* AWQ, then rounding */
    else ok = ok && (pm == NB_PLAN_METHOD_JOB || pm == NB_PLAN_METHOD_GPTQ);
    return converted(w, i) && ok && t->n_dims >= 2 && t->ne[1] > 1 && !strstr(t->name, "ffn_gate_inp");
}

/* ---- the driver --------------------------------------------------------------------------------------- */

static nb_status run_layer(worker *w, int L, bool truncate, const char *count_key, const nb_corpus *corpus,
                           nb_progress *prog, nb_ctx *ctx) {
    nb_model *src = w->src;
    collector c = {.src = src, .layer = L, .ctx = ctx, .err = NB_OK, .awq = w->go->awq};
    nb_model *view = NULL;
    nb_engine *e = NULL;
    nb_status st = NB_OK;
    /* accumulators: one per target weight, one per expert of a stacked one */
    size_t n_acc = 0, n_tg = 0;
    for (size_t i = 0; i < src->n_tensors; i++) {
        if (block_of(src->tensors[i].name) != L || !gptq_target(w, i)) continue;
        const nb_tensor *t = &src->tensors[i];
        n_acc += (size_t)(t->n_dims >= 3 ? t->ne[2] : 1);
        n_tg++;
    }
    if (n_tg) {
        c.a = nb_calloc(ctx, n_acc, sizeof *c.a, "Hessian accumulators");
        c.first = nb_calloc(ctx, n_tg, sizeof *c.first, "Hessian accumulators");
        if (!c.a || !c.first) { collector_free(&c); return NB_ERR_NOMEM; }
        for (size_t i = 0; i < src->n_tensors; i++) {
            if (block_of(src->tensors[i].name) != L || !gptq_target(w, i)) continue;
            const nb_tensor *t = &src->tensors[i];
            c.first[c.n_targets++] = c.n;
            int64_t nm = t->n_dims >= 3 ? t->ne[2] : 1;
            for (int64_t x = 0; x < nm; x++) {
                hacc *a = &c.a[c.n++];
                a->tidx = i;
                a->expert = t->n_dims >= 3 ? (int)x : -1;
                a->n_in = t->ne[0];
                a->alias = -1;
                a->skip = t->n_dims >= 3 && w->plan[i].method != NB_PLAN_METHOD_AWQ &&
                          !nb_plan_slice_gptq(&w->plan[i], (uint32_t)x);
                a->gptq = !w->go->no_gptq && w->plan[i].method != NB_PLAN_METHOD_AWQ;
            }
        }
        double t0 = nb_now();
        NB_CHECK_GOTO(st, view_build(src, w->s, L, truncate, count_key, &view, ctx), out);
        nb_engine_opts eo = {.n_ctx = corpus->n_ctx, .n_batch = corpus->n_ctx};
        NB_CHECK_GOTO(st, nb_engine_open_model(view, &eo, &e, ctx), out);
        nb_engine_set_all_experts(e, w->go->all_experts);
        nb_engine_hooks h = {on_matmul, NULL, &c};
        nb_engine_set_hooks(e, &h);
        for (size_t k = 0; k < corpus->n_chunks; k++) {
            c.call = 0;
            c.chunk = k;
            nb_engine_reset(e);
            st = nb_engine_eval(e, corpus->tokens + k * (size_t)corpus->n_ctx, corpus->n_ctx, 0, NULL, ctx);
            if (st == NB_OK && c.err != NB_OK) st = c.err;
            if (st != NB_OK) goto out;
            nb_progress_add(prog, 1, NULL);
        }
        nb_engine_free(e);
        e = NULL;
        nb_model_close(view);
        view = NULL;
        w->r->seconds_calib += nb_now() - t0;
    } else {
        nb_progress_add(prog, corpus->n_chunks, NULL);
    }
    double t1 = nb_now();
    if (st == NB_OK && n_tg) finish_all(&c);
    if (st == NB_OK && n_tg && w->go->awq) st = awq_block(w, &c, L, ctx);
    for (size_t k = 0; st == NB_OK && k < c.n; k++) /* a Hessian shared with a GPTQ weight is factored */
        if (c.a[k].gptq && c.a[k].alias >= 0) c.a[c.a[k].alias].gptq = true;
    if (st == NB_OK && n_tg)
        st = factor_all(&c, &w->go->gptq, !w->go->no_gptq, w->go->compare_rtn, ctx);
    size_t k = 0;
    for (size_t i = 0; i < src->n_tensors && st == NB_OK; i++) {
        if (block_of(src->tensors[i].name) != L || !converted(w, i)) continue;
        bool g = gptq_target(w, i);
        nb_plan_method pm = w->plan[i].method;
        if (!g && (pm == NB_PLAN_METHOD_RTN || pm == NB_PLAN_METHOD_IMATRIX))
            NB_INFO(ctx, "tensor '%s': the plan says %s", src->tensors[i].name, nb_plan_method_name(pm));
        else if (!g)
            NB_INFO(ctx, "tensor '%s': GPTQ does not support %s: rounded to nearest", src->tensors[i].name,
                    nb_type_name(w->plan[i].type));
        st = quantize_tensor(w, i, &c, g ? c.first[k] : 0, g, ctx);
        if (g) k++;
    }
    w->r->seconds_gptq += nb_now() - t1;
    if (st == NB_OK) st = scratch_map(w->s, ctx);
out:
    if (w->col_s)
        for (size_t i = 0; i < src->n_tensors; i++) {
            free(w->col_s[i]);
            free(w->row_s[i]);
            w->col_s[i] = w->row_s[i] = NULL;
        }
    nb_engine_free(e);
    nb_model_close(view);
    collector_free(&c);
    return st;
}

/* May a view cut the model to blocks 0..L? Only when nothing the engine
 * computes for those blocks depends on the block count: the arch row's
 * attention scale must be the same for every count (Gemma 3's depends on it
 * for 62-layer models, see formats/arch.h). */
static bool view_truncates(const nb_model *m, const char *arch, uint32_t n_layer) {
    const nb_arch *a = nb_arch_from_gguf(arch, false);
    nb_hparams hp;
    nb_ctx quiet;
    nb_ctx_init(&quiet);
    bool ok = a && nb_arch_hparams_from_kv(a, &m->kv, &hp, &quiet) == NB_OK;
    nb_ctx_free(&quiet);
    if (!ok) return true; /* the engine will refuse the model with a proper message */
    uint32_t hd = nb_hparams_head_dim(&hp);
    float full = nb_arch_attn_scale(a, n_layer, hp.n_embd, hp.n_head, hd);
    for (uint32_t l = 1; l < n_layer; l++)
        if (nb_arch_attn_scale(a, l, hp.n_embd, hp.n_head, hd) != full) return false;
    return true;
}

nb_status nb_gptq_quantize_model(const char *src_path, const char *dst, const nb_plan *plan, const nb_quant_opts *qo,
                                 const nb_gptq_model_opts *go, nb_gptq_model_result *r, nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    NB_RETURN_IF(ctx, !plan, NB_ERR_INVALID, "gptq: no plan given");
    NB_RETURN_IF(ctx, !qo || !go || !go->calib_path, NB_ERR_INVALID, "gptq: no calibration file (--calib)");
    NB_RETURN_IF(ctx, qo->prequant, NB_ERR_INVALID, "gptq: prequant is set by the GPTQ driver");
    NB_RETURN_IF(ctx, !strcmp(src_path, dst) || nb_same_file(src_path, dst), NB_ERR_INVALID,
                 "%s: output is the same file as the input", dst);
    nb_model *m = NULL;
    nb_tokenizer *tok = NULL;
    nb_corpus corpus = {0};
    scratch s;
    memset(&s, 0, sizeof s);
    s.fd = -1;
    double t0 = nb_now();
    nb_status st;
    NB_CHECK_GOTO(st, nb_model_open(src_path, &m, ctx), out);
    NB_CHECK_GOTO(st, nb_plan_bind(plan, m, ctx), out);
    const char *arch = nb_kv_get_str(&m->kv, "general.architecture");
    if (!arch) NB_FAIL_GOTO(st, out, ctx, NB_ERR_UNSUPPORTED, "%s: no general.architecture: GPTQ needs a model the engine runs", src_path);
    char count_key[160];
    snprintf(count_key, sizeof count_key, "%s.block_count", arch);
    uint64_t n_layer = 0;
    if (!nb_kv_get_u64(&m->kv, count_key, &n_layer) || n_layer == 0 || n_layer > 65536)
        NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: '%s' missing or out of range", src_path, count_key);
    r->n_layer = (int)n_layer;
    bool truncate = view_truncates(m, arch, (uint32_t)n_layer);
    /* 2. corpus */
    NB_CHECK_GOTO(st, nb_tokenizer_create(&m->kv, &tok, ctx), out);
    nb_corpus_opts co = go->corpus;
    if (co.n_ctx <= 0) co.n_ctx = 512;
    const nb_tensor *te = nb_model_find(m, "token_embd.weight");
    int n_vocab = te && te->n_dims >= 2 && te->ne[1] < INT32_MAX ? (int)te->ne[1] : 0;
    NB_CHECK_GOTO(st, nb_corpus_load(go->calib_path, tok, n_vocab, &co, &corpus, ctx), out);
    r->n_chunks = corpus.n_chunks;
    r->n_tokens = (uint64_t)corpus.n_chunks * (uint64_t)corpus.n_ctx;
    NB_INFO(ctx, "gptq: %d layers, %zu chunks of %d tokens from %s (%zu chunks available%s)", r->n_layer,
            corpus.n_chunks, corpus.n_ctx, go->calib_path, corpus.n_available,
            corpus.n_chunks < corpus.n_available ? ", seeded sample" : "");
    /* 3. scratch next to the output */
    char dir[4096];
    if (go->scratch_dir) snprintf(dir, sizeof dir, "%s", go->scratch_dir);
    else {
        snprintf(dir, sizeof dir, "%s", dst);
        char *sl = strrchr(dir, '/');
        if (sl) *(sl == dir ? sl + 1 : sl) = 0;
        else snprintf(dir, sizeof dir, ".");
    }
    NB_CHECK_GOTO(st, scratch_open(&s, dir, m, ctx), out);
    worker w = {m, qo, go, plan->tensors, &s, r, ctx, NULL, NULL};
    /* token_embd first: the views then embed tokens as the output file will */
    for (size_t i = 0; i < m->n_tensors && st == NB_OK; i++)
        if (!strcmp(m->tensors[i].name, "token_embd.weight") && converted(&w, i))
            st = quantize_tensor(&w, i, NULL, 0, false, ctx);
    if (st == NB_OK) st = scratch_map(&s, ctx);
    if (st != NB_OK) goto out;
    r->n_rtn = r->n_plan_rounded = 0; /* token_embd is not a block weight */
    if (go->awq) {
        w.col_s = nb_calloc(ctx, m->n_tensors ? m->n_tensors : 1, sizeof *w.col_s, "AWQ scales");
        w.row_s = nb_calloc(ctx, m->n_tensors ? m->n_tensors : 1, sizeof *w.row_s, "AWQ scales");
        if (!w.col_s || !w.row_s) {
            free(w.col_s);
            free(w.row_s);
            st = NB_ERR_NOMEM;
            goto out;
        }
    }
    nb_progress prog;
    nb_progress_begin_unit(&prog, ctx, "gptq", n_layer * corpus.n_chunks, "layer-chunks");
    for (int L = 0; L < (int)n_layer && st == NB_OK; L++) st = run_layer(&w, L, truncate, count_key, &corpus, &prog, ctx);
    nb_progress_end(&prog);
    free(w.col_s);
    free(w.row_s);
    if (st != NB_OK) goto out;
    NB_INFO(ctx, "gptq: %zu weights by GPTQ, %zu by AWQ's rounding (the plan's), %zu rounded as the plan says, "
            "%zu rounded to nearest (%lld experts without tokens); calibration passes %.1f s, GPTQ %.1f s",
            r->n_gptq, r->n_awq_weights, r->n_plan_rounded, r->n_rtn, (long long)r->n_zero_experts,
            r->seconds_calib, r->seconds_gptq);
    /* 4. the output, with the scratch's tensors as they are (the source stays
     * open: scratch_prequant looks names up in it) */
    nb_quant_opts fo = *qo;
    fo.prequant = scratch_prequant;
    fo.prequant_user = &s;
    st = nb_quantize_model(src_path, dst, plan, &fo, &r->quant, ctx);
    r->quant.seconds = nb_now() - t0;
out:
    scratch_close(&s);
    nb_corpus_free(&corpus);
    nb_tokenizer_free(tok);
    nb_model_close(m);
    return st;
}

void nb_gptq_model_result_free(nb_gptq_model_result *r) {
    if (!r) return;
    free(r->stats);
    nb_quant_result_free(&r->quant);
    memset(r, 0, sizeof *r);
}
