/* calib/imatrix.c — activation statistics and llama.cpp's imatrix files (see calib/imatrix.h). */
#include "calib/imatrix.h"

#include "core/afile.h"
#include "core/checked.h"
#include "core/file.h"
#include "core/str.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DAT_MAX_ENTRIES (1 << 20)

void nb_imatrix_init(nb_imatrix *im) {
    memset(im, 0, sizeof *im);
    nb_kvset_init(&im->extra_kv);
}

static void entry_free(nb_imatrix_entry *e) {
    free(e->name);
    free(e->sum2);
    free(e->sum);
    free(e->count);
}

void nb_imatrix_free(nb_imatrix *im) {
    if (!im) return;
    for (size_t i = 0; i < im->n; i++) entry_free(&im->e[i]);
    free(im->e);
    free(im->idx);
    for (size_t i = 0; i < im->n_datasets; i++) free(im->datasets[i]);
    free(im->datasets);
    for (size_t i = 0; i < im->n_extra; i++) {
        free(im->extra[i].name);
        free(im->extra[i].data);
    }
    free(im->extra);
    nb_kvset_free(&im->extra_kv);
    nb_imatrix_init(im);
}

const nb_imatrix_entry *nb_imatrix_find(const nb_imatrix *im, const char *name) {
    if (im->idx_cap) {
        size_t m = im->idx_cap - 1;
        for (size_t h = nb_str_hash(name) & m; im->idx[h]; h = (h + 1) & m)
            if (!strcmp(im->e[im->idx[h] - 1].name, name)) return &im->e[im->idx[h] - 1];
        return NULL;
    }
    for (size_t i = 0; i < im->n; i++)
        if (!strcmp(im->e[i].name, name)) return &im->e[i];
    return NULL;
}

static void idx_put(nb_imatrix *im, size_t i) {
    size_t m = im->idx_cap - 1, h = nb_str_hash(im->e[i].name) & m;
    while (im->idx[h]) h = (h + 1) & m;
    im->idx[h] = i + 1;
}

/* Index the entry just appended, growing the table. Plain calloc: when it
 * fails the index is dropped and lookups scan (slower, still correct). */
static void idx_add(nb_imatrix *im) {
    if (im->idx_cap && 2 * im->n <= im->idx_cap) {
        idx_put(im, im->n - 1);
        return;
    }
    size_t cap = im->idx_cap ? im->idx_cap * 2 : 128;
    while (cap < 2 * im->n) cap *= 2;
    free(im->idx);
    im->idx = calloc(cap, sizeof *im->idx);
    im->idx_cap = im->idx ? cap : 0;
    for (size_t i = 0; im->idx && i < im->n; i++) idx_put(im, i);
}

/* Append an entry with arrays for n_in x n_mat values and n_counts counts. */
static nb_status entry_new(nb_imatrix *im, const char *name, int64_t n_in, int64_t n_mat, int64_t n_counts,
                           bool with_sum, nb_imatrix_entry **out, nb_ctx *ctx) {
    uint64_t nv;
    if (n_in <= 0 || n_mat <= 0 || n_counts <= 0 || !nb_mul_u64((uint64_t)n_in, (uint64_t)n_mat, &nv) ||
        nv > (SIZE_MAX / sizeof(double)))
        return nb_err(ctx, NB_ERR_RANGE, "imatrix: tensor '%s': bad shape %lld x %lld", name, (long long)n_in,
                      (long long)n_mat);
    if (im->n == im->cap) {
        size_t cap = im->cap ? im->cap * 2 : 64;
        nb_imatrix_entry *e = nb_realloc(NULL, im->e, cap * sizeof *e, "imatrix");
        if (!e) return nb_err(ctx, NB_ERR_NOMEM, "imatrix: out of memory");
        im->e = e;
        im->cap = cap;
    }
    nb_imatrix_entry *e = &im->e[im->n];
    memset(e, 0, sizeof *e);
    e->name = nb_strdup(ctx, name);
    e->sum2 = nb_calloc(ctx, (size_t)nv, sizeof(double), name);
    e->sum = with_sum ? nb_calloc(ctx, (size_t)nv, sizeof(double), name) : NULL;
    e->count = nb_calloc(ctx, (size_t)n_counts, sizeof(double), name);
    if (!e->name || !e->sum2 || (with_sum && !e->sum) || !e->count) {
        entry_free(e);
        return NB_ERR_NOMEM;
    }
    e->n_in = n_in;
    e->n_mat = n_mat;
    e->n_counts = n_counts;
    im->n++;
    idx_add(im);
    *out = e;
    return NB_OK;
}

nb_status nb_imatrix_entry_get(nb_imatrix *im, const char *name, int64_t n_in, int64_t n_mat,
                               nb_imatrix_entry **out, nb_ctx *ctx) {
    nb_imatrix_entry *e = (nb_imatrix_entry *)nb_imatrix_find(im, name);
    if (e) {
        if (e->n_in != n_in || e->n_mat != n_mat)
            return nb_err(ctx, NB_ERR_RANGE, "imatrix: tensor '%s': statistics of shape %lld x %lld, input is %lld x %lld",
                          name, (long long)e->n_in, (long long)e->n_mat, (long long)n_in, (long long)n_mat);
        *out = e;
        return NB_OK;
    }
    return entry_new(im, name, n_in, n_mat, n_mat, true, out, ctx);
}

nb_status nb_imatrix_add(nb_imatrix *im, const char *name, int64_t expert, int64_t n_mat, const float *x,
                         int64_t n_tok, int64_t n_in, nb_ctx *ctx) {
    if (expert < 0 || expert >= n_mat || n_tok < 0)
        return nb_err(ctx, NB_ERR_INVALID, "imatrix: tensor '%s': expert %lld of %lld", name, (long long)expert,
                      (long long)n_mat);
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t j = 0; j < n_in; j++)
            if (!isfinite(x[t * n_in + j]))
                return nb_err(ctx, NB_ERR_RANGE, "tensor '%s'%s: input activation row %lld, column %lld is %s", name,
                              n_mat > 1 ? " (expert)" : "", (long long)t, (long long)j,
                              isnan(x[t * n_in + j]) ? "NaN" : "infinite");
    nb_imatrix_entry *e;
    NB_TRY(nb_imatrix_entry_get(im, name, n_in, n_mat, &e, ctx));
    double *s2 = e->sum2 + expert * n_in, *s1 = e->sum ? e->sum + expert * n_in : NULL;
    /* column-parallel would be deterministic too; rows in order keep it simple and cache-friendly */
    for (int64_t t = 0; t < n_tok; t++) {
        const float *r = x + t * n_in;
        for (int64_t j = 0; j < n_in; j++) {
            double v = r[j];
            s2[j] += v * v;
        }
        if (s1)
            for (int64_t j = 0; j < n_in; j++) s1[j] += r[j];
    }
    e->count[e->n_counts == 1 ? 0 : expert] += (double)n_tok;
    return NB_OK;
}

nb_status nb_imatrix_add_dataset(nb_imatrix *im, const char *dataset, nb_ctx *ctx) {
    char **d = nb_realloc(NULL, im->datasets, (im->n_datasets + 1) * sizeof *d, "imatrix");
    if (!d) return nb_err(ctx, NB_ERR_NOMEM, "imatrix: out of memory");
    im->datasets = d;
    d[im->n_datasets] = nb_strdup(ctx, dataset);
    if (!d[im->n_datasets]) return NB_ERR_NOMEM;
    im->n_datasets++;
    return NB_OK;
}

nb_status nb_imatrix_set_extra(nb_imatrix *im, const char *name, int64_t ne0, int64_t ne1, const float *data,
                               nb_ctx *ctx) {
    uint64_t n;
    if (ne0 <= 0 || ne1 <= 0 || !nb_mul_u64((uint64_t)ne0, (uint64_t)ne1, &n) || n > SIZE_MAX / sizeof(float))
        return nb_err(ctx, NB_ERR_RANGE, "imatrix: extra tensor '%s': bad shape", name);
    float *copy = nb_malloc(ctx, (size_t)n * sizeof(float), name);
    if (!copy) return NB_ERR_NOMEM;
    memcpy(copy, data, (size_t)n * sizeof(float));
    nb_imatrix_extra *x = (nb_imatrix_extra *)nb_imatrix_get_extra(im, name);
    if (!x) {
        nb_imatrix_extra *a = nb_realloc(NULL, im->extra, (im->n_extra + 1) * sizeof *a, "imatrix");
        if (!a) { free(copy); return nb_err(ctx, NB_ERR_NOMEM, "imatrix: out of memory"); }
        im->extra = a;
        x = &a[im->n_extra];
        memset(x, 0, sizeof *x);
        x->name = nb_strdup(ctx, name);
        if (!x->name) { free(copy); return NB_ERR_NOMEM; }
        im->n_extra++;
    }
    free(x->data);
    x->data = copy;
    x->n_dims = ne1 > 1 ? 2 : 1;
    x->ne[0] = ne0;
    x->ne[1] = ne1;
    return NB_OK;
}

const nb_imatrix_extra *nb_imatrix_get_extra(const nb_imatrix *im, const char *name) {
    for (size_t i = 0; i < im->n_extra; i++)
        if (!strcmp(im->extra[i].name, name)) return &im->extra[i];
    return NULL;
}

int nb_imatrix_weights(const nb_imatrix *im, const char *name, int64_t expert, int64_t n_in, float *out) {
    const nb_imatrix_entry *e = nb_imatrix_find(im, name);
    if (!e) return 0;
    if (e->n_in != n_in || expert < 0 || expert >= e->n_mat) return -1;
    double c = e->count[e->n_counts == 1 ? 0 : expert];
    const double *s2 = e->sum2 + expert * n_in;
    for (int64_t j = 0; j < n_in; j++) out[j] = c > 0 ? (float)(s2[j] / c) : 1.0f;
    return 1;
}

int64_t nb_imatrix_zero_count(const nb_imatrix_entry *e) {
    int64_t z = 0;
    for (int64_t k = 0; k < e->n_mat; k++) z += e->count[e->n_counts == 1 ? 0 : k] <= 0;
    return z;
}

nb_status nb_imatrix_check_model(nb_imatrix *im, const nb_model *m, const char *what, nb_ctx *ctx) {
    for (size_t i = 0; i < im->n; i++) {
        nb_imatrix_entry *e = &im->e[i];
        const nb_tensor *t = nb_model_find(m, e->name);
        if (!t)
            return nb_err(ctx, NB_ERR_RANGE, "imatrix %s: tensor '%s' is not in %s (imatrix from another model?)", what,
                          e->name, m->path);
        int64_t n_mat = t->n_dims >= 3 ? t->ne[2] : 1;
        if (t->n_dims >= 3 && e->n_mat == 1 && n_mat > 1 && e->n_in == t->ne[0] * n_mat) {
            /* legacy flat entry of an expert tensor: split it per expert */
            e->n_in = t->ne[0];
            e->n_mat = n_mat;
            continue;
        }
        if (e->n_in != t->ne[0] || e->n_mat != n_mat)
            return nb_err(ctx, NB_ERR_RANGE,
                          "imatrix %s: tensor '%s': statistics for %lld input columns x %lld matrices, the model's "
                          "tensor has %lld x %lld (imatrix from another model?)",
                          what, e->name, (long long)e->n_in, (long long)e->n_mat, (long long)t->ne[0],
                          (long long)n_mat);
    }
    return NB_OK;
}

/* ---- GGUF ---------------------------------------------------------------------------------------- */

static int cmp_entry_ptr(const void *a, const void *b) {
    const nb_imatrix_entry *x = *(const nb_imatrix_entry *const *)a, *y = *(const nb_imatrix_entry *const *)b;
    return strcmp(x->name, y->name);
}

/* Entries sorted by name (pointers into im; caller frees the array). */
static const nb_imatrix_entry **sorted_entries(const nb_imatrix *im, nb_ctx *ctx) {
    const nb_imatrix_entry **s = nb_malloc(ctx, (im->n ? im->n : 1) * sizeof *s, "imatrix entries");
    if (!s) return NULL;
    for (size_t i = 0; i < im->n; i++) s[i] = &im->e[i];
    qsort(s, im->n, sizeof *s, cmp_entry_ptr);
    return s;
}

static nb_status write_f32(nb_sink *sink, const double *v, uint64_t n, nb_ctx *ctx) {
    float buf[1024];
    for (uint64_t a = 0; a < n; a += 1024) {
        uint64_t k = n - a < 1024 ? n - a : 1024;
        for (uint64_t j = 0; j < k; j++) buf[j] = (float)v[a + j];
        NB_TRY(nb_sink_write(sink, buf, k * sizeof(float), ctx));
    }
    return NB_OK;
}

nb_status nb_imatrix_write_gguf(const nb_imatrix *im, const char *path, nb_ctx *ctx) {
    const nb_imatrix_entry **s = sorted_entries(im, ctx);
    if (!s) return NB_ERR_NOMEM;
    nb_sink *sink = NULL;
    nb_status st;
    char name[NB_MAX_NAME + 16];
    NB_CHECK_GOTO(st, nb_sink_create(path, NB_FMT_GGUF, &sink, ctx), out);
    NB_CHECK_GOTO(st, nb_kv_set_str(&sink->kv, "general.type", "imatrix", ctx), out);
    NB_CHECK_GOTO(st, nb_kv_set_arr_str(&sink->kv, "imatrix.datasets", im->n_datasets,
                                        (const char *const *)im->datasets, ctx), out);
    NB_CHECK_GOTO(st, nb_kv_set_u32(&sink->kv, "imatrix.chunk_count", im->chunk_count, ctx), out);
    NB_CHECK_GOTO(st, nb_kv_set_u32(&sink->kv, "imatrix.chunk_size", im->chunk_size, ctx), out);
    NB_CHECK_GOTO(st, nb_kvset_copy(&sink->kv, &im->extra_kv, ctx), out);
    /* tensor order as llama.cpp writes it: per entry in_sum2, counts, in_sum; then nibble's extras */
    for (size_t i = 0; i < im->n; i++) {
        const nb_imatrix_entry *e = s[i];
        int64_t ne_v[2] = {e->n_in, e->n_mat}, ne_c[2] = {1, e->n_counts};
        if (strlen(e->name) + 8 > NB_MAX_NAME)
            NB_FAIL_GOTO(st, out, ctx, NB_ERR_RANGE, "imatrix: tensor name '%s' too long", e->name);
        /* ggml writes n_dims without trailing 1s (ggml_n_dims): 1 for a dense entry */
        uint32_t nd_v = e->n_mat > 1 ? 2 : 1, nd_c = e->n_counts > 1 ? 2 : 1;
        snprintf(name, sizeof name, "%s.in_sum2", e->name);
        NB_CHECK_GOTO(st, nb_sink_add_tensor(sink, name, NB_TYPE_F32, nd_v, ne_v, ctx), out);
        snprintf(name, sizeof name, "%s.counts", e->name);
        NB_CHECK_GOTO(st, nb_sink_add_tensor(sink, name, NB_TYPE_F32, nd_c, ne_c, ctx), out);
        if (e->sum) {
            snprintf(name, sizeof name, "%s.in_sum", e->name);
            NB_CHECK_GOTO(st, nb_sink_add_tensor(sink, name, NB_TYPE_F32, nd_v, ne_v, ctx), out);
        }
    }
    for (size_t i = 0; i < im->n_extra; i++) {
        const nb_imatrix_extra *x = &im->extra[i];
        NB_CHECK_GOTO(st, nb_sink_add_tensor(sink, x->name, NB_TYPE_F32, x->n_dims, x->ne, ctx), out);
    }
    NB_CHECK_GOTO(st, nb_sink_begin(sink, ctx), out);
    /* the data order is declaration order for GGUF; follow whatever the sink says */
    size_t n_t = 0, i = 0, base = 0; /* entry i's tensors start at index base */
    for (size_t j = 0; j < im->n; j++) n_t += s[j]->sum ? 3 : 2;
    for (size_t k = 0; k < n_t + im->n_extra; k++) {
        size_t idx = nb_sink_data_order(sink, k);
        if (idx >= n_t) {
            const nb_imatrix_extra *x = &im->extra[idx - n_t];
            NB_CHECK_GOTO(st, nb_sink_write(sink, x->data, (uint64_t)(x->ne[0] * x->ne[1]) * sizeof(float), ctx), out);
            continue;
        }
        /* walk on from the previous tensor's entry: linear in declaration order
         * (the GGUF sink's), a restart only for a sink that goes backwards */
        if (idx < base) i = base = 0;
        while (base + (s[i]->sum ? 3u : 2u) <= idx) base += s[i++]->sum ? 3u : 2u;
        const nb_imatrix_entry *e = s[i];
        uint64_t nv = (uint64_t)(e->n_in * e->n_mat);
        size_t which = idx - base;
        if (which == 0) st = write_f32(sink, e->sum2, nv, ctx);
        else if (which == 1) st = write_f32(sink, e->count, (uint64_t)e->n_counts, ctx);
        else st = write_f32(sink, e->sum, nv, ctx);
        if (st != NB_OK) goto out;
    }
    st = nb_sink_commit(sink, ctx);
out:
    nb_sink_free(sink);
    free(s);
    return st;
}

static bool strip_suffix(const char *name, const char *suf, char *base, size_t cap) {
    size_t n = strlen(name), k = strlen(suf);
    if (n <= k || strcmp(name + n - k, suf) || n - k >= cap) return false;
    memcpy(base, name, n - k);
    base[n - k] = 0;
    return true;
}

/* Copy tensor i of m as F32 into a new double array of n values. */
static nb_status read_doubles(nb_model *m, size_t i, uint64_t n, double **out, nb_ctx *ctx) {
    const nb_tensor *t = &m->tensors[i];
    float *f = nb_malloc(ctx, (size_t)n * sizeof(float), t->name);
    double *d = nb_malloc(ctx, (size_t)n * sizeof(double), t->name);
    nb_status st = (f && d) ? nb_model_read_f32(m, i, f, ctx) : NB_ERR_NOMEM;
    if (st == NB_OK) {
        for (uint64_t j = 0; j < n; j++) {
            if (!isfinite(f[j])) {
                st = nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s': element %llu is not finite", m->path, t->name,
                            (unsigned long long)j);
                break;
            }
            d[j] = f[j];
        }
    }
    free(f);
    if (st != NB_OK) { free(d); return st; }
    *out = d;
    return NB_OK;
}

static int cmp_tensor_ptr(const void *a, const void *b) {
    return strcmp((*(const nb_tensor *const *)a)->name, (*(const nb_tensor *const *)b)->name);
}

/* Tensor `name` in by[0..n) (sorted by name), or NULL: nb_model_find scans, and
 * two lookups per entry would make a file of many entries quadratic. */
static const nb_tensor *find_sorted(const nb_tensor *const *by, size_t n, const char *name) {
    nb_tensor key = {.name = (char *)name};
    const nb_tensor *kp = &key;
    const nb_tensor *const *hit = bsearch(&kp, by, n, sizeof *by, cmp_tensor_ptr);
    return hit ? *hit : NULL;
}

static nb_status read_gguf(const char *path, nb_imatrix *im, nb_ctx *ctx) {
    nb_model *m = NULL;
    NB_TRY(nb_model_open(path, &m, ctx));
    nb_status st = NB_OK;
    const nb_tensor **by = nb_malloc(ctx, (m->n_tensors ? m->n_tensors : 1) * sizeof *by, "imatrix tensors");
    if (!by) { nb_model_close(m); return NB_ERR_NOMEM; }
    for (size_t i = 0; i < m->n_tensors; i++) by[i] = &m->tensors[i];
    qsort(by, m->n_tensors, sizeof *by, cmp_tensor_ptr);
    char base[NB_MAX_NAME + 1], other[NB_MAX_NAME + 16];
    const char *gt = nb_kv_get_str(&m->kv, "general.type");
    if (gt && strcmp(gt, "imatrix"))
        NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: general.type is '%s', not an imatrix", path, gt);
    const nb_kv_value *ds = nb_kv_get(&m->kv, "imatrix.datasets");
    if (ds && ds->type == NB_KV_ARRAY && ds->v.arr.elem == NB_KV_STRING) {
        const nb_str *strs = ds->v.arr.data;
        for (uint64_t k = 0; k < ds->v.arr.n; k++) NB_CHECK_GOTO(st, nb_imatrix_add_dataset(im, strs[k].ptr, ctx), out);
    }
    uint64_t u;
    if (nb_kv_get_u64(&m->kv, "imatrix.chunk_count", &u) && u <= UINT32_MAX) im->chunk_count = (uint32_t)u;
    if (nb_kv_get_u64(&m->kv, "imatrix.chunk_size", &u) && u <= UINT32_MAX) im->chunk_size = (uint32_t)u;
    for (size_t k = 0; k < m->kv.n; k++)
        if (!strncmp(m->kv.items[k].key, "nibble.", 7))
            NB_CHECK_GOTO(st, nb_kv_set(&im->extra_kv, m->kv.items[k].key, &m->kv.items[k].val, ctx), out);
    /* entries: one per "<name>.in_sum2" */
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *t = &m->tensors[i];
        if (!strip_suffix(t->name, ".in_sum2", base, sizeof base)) continue;
        snprintf(other, sizeof other, "%s.counts", base);
        const nb_tensor *c = find_sorted(by, m->n_tensors, other);
        snprintf(other, sizeof other, "%s.in_sum", base);
        const nb_tensor *s1 = find_sorted(by, m->n_tensors, other);
        if (!c) NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: tensor '%s' has no '%s.counts'", path, t->name, base);
        if (t->type != NB_TYPE_F32 || c->type != NB_TYPE_F32 || (s1 && s1->type != NB_TYPE_F32))
            NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: imatrix tensors of '%s' must be F32", path, base);
        if (t->n_dims > 2 || c->n_dims > 2 || t->ne[0] <= 0 || t->ne[1] <= 0)
            NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: tensor '%s': bad shape", path, t->name);
        int64_t n_in = t->ne[0], n_mat = t->ne[1];
        uint64_t nc = nb_tensor_nelements(c);
        if (nc != 1 && nc != (uint64_t)n_mat)
            NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: '%s.counts' has %llu values for %lld matrices", path, base,
                          (unsigned long long)nc, (long long)n_mat);
        if (s1 && (s1->ne[0] != n_in || nb_tensor_nelements(s1) != nb_tensor_nelements(t)))
            NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: '%s.in_sum' and '%s.in_sum2' differ in shape", path, base,
                          base);
        if (nb_imatrix_find(im, base))
            NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: entry '%s' appears twice", path, base);
        nb_imatrix_entry *e;
        NB_CHECK_GOTO(st, entry_new(im, base, n_in, n_mat, (int64_t)nc, false, &e, ctx), out);
        free(e->sum2);
        free(e->count);
        e->sum2 = e->count = NULL;
        NB_CHECK_GOTO(st, read_doubles(m, i, nb_tensor_nelements(t), &e->sum2, ctx), out);
        NB_CHECK_GOTO(st, read_doubles(m, (size_t)(c - m->tensors), nc, &e->count, ctx), out);
        for (uint64_t k = 0; k < nc; k++)
            if (e->count[k] < 0)
                NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: '%s.counts' value %llu is negative", path, base,
                              (unsigned long long)k);
        if (s1) NB_CHECK_GOTO(st, read_doubles(m, (size_t)(s1 - m->tensors), nb_tensor_nelements(s1), &e->sum, ctx), out);
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *t = &m->tensors[i];
        if (strncmp(t->name, "nibble.", 7)) {
            if (!strip_suffix(t->name, ".in_sum2", base, sizeof base) &&
                !strip_suffix(t->name, ".counts", base, sizeof base) &&
                !strip_suffix(t->name, ".in_sum", base, sizeof base))
                NB_WARN(ctx, "%s: ignoring tensor '%s'", path, t->name);
            else if (!nb_imatrix_find(im, base))
                NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: tensor '%s' has no '%s.in_sum2'", path, t->name, base);
            continue;
        }
        if (t->type != NB_TYPE_F32 || t->n_dims > 2) {
            NB_WARN(ctx, "%s: ignoring tensor '%s' (not a 1-D/2-D F32 tensor)", path, t->name);
            continue;
        }
        uint64_t n = nb_tensor_nelements(t);
        float *f = nb_malloc(ctx, (size_t)(n ? n : 1) * sizeof(float), t->name);
        if (!f) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "out of memory");
        st = nb_model_read_f32(m, i, f, ctx);
        if (st == NB_OK && n) st = nb_imatrix_set_extra(im, t->name, t->ne[0], t->n_dims > 1 ? t->ne[1] : 1, f, ctx);
        free(f);
        if (st != NB_OK) goto out;
    }
    if (im->n == 0) st = nb_err(ctx, NB_ERR_FORMAT, "%s: no imatrix entries ('*.in_sum2' tensors)", path);
out:
    free(by);
    nb_model_close(m);
    return st;
}

/* ---- legacy .dat ------------------------------------------------------------------------------------ */

typedef struct rd {
    const unsigned char *p;
    size_t n, off;
    const char *path;
} rd;

static bool rd_i32(rd *r, int32_t *v) {
    if (r->n - r->off < 4) return false;
    memcpy(v, r->p + r->off, 4);
    r->off += 4;
    return true;
}

static nb_status read_dat(const char *path, const unsigned char *buf, size_t size, nb_imatrix *im, nb_ctx *ctx) {
    rd r = {buf, size, 0, path};
    int32_t n_entries;
    if (!rd_i32(&r, &n_entries) || n_entries < 1 || n_entries > DAT_MAX_ENTRIES)
        return nb_err(ctx, NB_ERR_FORMAT, "%s: not an imatrix (neither GGUF nor a legacy .dat with entries)", path);
    im->legacy = true;
    im->chunk_size = 1;
    char name[NB_MAX_NAME + 1];
    for (int32_t i = 0; i < n_entries; i++) {
        size_t at = r.off;
        int32_t len, ncall, nval;
        if (!rd_i32(&r, &len) || len <= 0 || len > NB_MAX_NAME || r.n - r.off < (size_t)len)
            return nb_err(ctx, NB_ERR_FORMAT, "%s: entry %d at byte %zu: bad name length", path, i, at);
        memcpy(name, r.p + r.off, (size_t)len);
        name[len] = 0;
        r.off += (size_t)len;
        if (strlen(name) != (size_t)len)
            return nb_err(ctx, NB_ERR_FORMAT, "%s: entry %d at byte %zu: name contains a NUL byte", path, i, at);
        if (!rd_i32(&r, &ncall) || !rd_i32(&r, &nval) || nval < 1 || ncall < 0)
            return nb_err(ctx, NB_ERR_FORMAT, "%s: entry '%s' at byte %zu: bad call/value count", path, name, at);
        if ((r.n - r.off) / 4 < (size_t)nval)
            return nb_err(ctx, NB_ERR_FORMAT, "%s: entry '%s': %d values run past the end of the file (%zu bytes)",
                          path, name, nval, r.n);
        if (nb_imatrix_find(im, name))
            return nb_err(ctx, NB_ERR_FORMAT, "%s: entry '%s' appears twice", path, name);
        nb_imatrix_entry *e;
        NB_TRY(entry_new(im, name, nval, 1, 1, false, &e, ctx));
        for (int32_t j = 0; j < nval; j++) {
            float v;
            memcpy(&v, r.p + r.off + 4 * (size_t)j, 4);
            if (!isfinite(v))
                return nb_err(ctx, NB_ERR_FORMAT, "%s: entry '%s': value %d is not finite", path, name, j);
            e->sum2[j] = v;
        }
        r.off += 4 * (size_t)nval;
        /* ncall 0: llama-quantize then uses the values as they are; count 1 gives the same weights */
        e->count[0] = ncall > 0 ? (double)ncall : 1.0;
    }
    int32_t n_chunk, dlen;
    if (rd_i32(&r, &n_chunk)) {
        im->chunk_count = n_chunk > 0 ? (uint32_t)n_chunk : 0;
        if (rd_i32(&r, &dlen) && dlen > 0 && r.n - r.off >= (size_t)dlen) {
            char *d = nb_strndup(ctx, (const char *)r.p + r.off, (size_t)dlen);
            if (!d) return NB_ERR_NOMEM;
            nb_status st = nb_imatrix_add_dataset(im, d, ctx);
            free(d);
            NB_TRY(st);
        }
    }
    return NB_OK;
}

nb_status nb_imatrix_read(const char *path, nb_imatrix *im, nb_ctx *ctx) {
    nb_imatrix_init(im);
    FILE *f = fopen(path, "rb");
    if (!f) return nb_err_errno(ctx, errno, "%s", path);
    unsigned char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    nb_status st;
    if (got == 4 && !memcmp(magic, "GGUF", 4)) {
        fclose(f);
        st = read_gguf(path, im, ctx);
    } else {
        /* legacy: read the whole file (bounded by its size; values are needed anyway) */
        fclose(f);
        char *buf;
        size_t size;
        st = nb_read_file(path, SIZE_MAX, &buf, &size, ctx);
        if (st == NB_OK) st = read_dat(path, (const unsigned char *)buf, size, im, ctx);
        free(buf);
    }
    if (st != NB_OK) nb_imatrix_free(im);
    return st;
}

static nb_status put_i32(nb_afile *f, int32_t v, nb_ctx *ctx) { return nb_afile_write(f, &v, 4, ctx); }

nb_status nb_imatrix_write_dat(const nb_imatrix *im, const char *path, nb_ctx *ctx) {
    const nb_imatrix_entry **s = sorted_entries(im, ctx);
    if (!s) return NB_ERR_NOMEM;
    double chunk = im->chunk_size ? (double)im->chunk_size : 1.0;
    int32_t n_store = 0;
    for (size_t i = 0; i < im->n; i++) {
        int64_t z = nb_imatrix_zero_count(s[i]);
        if (z == s[i]->n_mat) NB_WARN(ctx, "imatrix: entry '%s' has no data - not written to the .dat file", s[i]->name);
        else n_store++;
    }
    nb_afile f;
    nb_status st = nb_afile_open(&f, path, false, ctx);
    if (st != NB_OK) { free(s); return st; }
    float *tmp = NULL;
    NB_CHECK_GOTO(st, put_i32(&f, n_store, ctx), out);
    for (size_t i = 0; i < im->n; i++) {
        const nb_imatrix_entry *e = s[i];
        if (nb_imatrix_zero_count(e) == e->n_mat) continue;
        uint64_t nv = (uint64_t)(e->n_in * e->n_mat);
        if (nv > INT32_MAX || strlen(e->name) > INT32_MAX)
            NB_FAIL_GOTO(st, out, ctx, NB_ERR_RANGE, "imatrix: entry '%s' too large for the .dat format", e->name);
        double maxc = 0;
        for (int64_t k = 0; k < e->n_counts; k++) maxc = e->count[k] > maxc ? e->count[k] : maxc;
        double ncall = ceil(maxc / chunk);
        if (ncall > INT32_MAX) NB_FAIL_GOTO(st, out, ctx, NB_ERR_RANGE, "imatrix: entry '%s': count too large", e->name);
        NB_CHECK_GOTO(st, put_i32(&f, (int32_t)strlen(e->name), ctx), out);
        NB_CHECK_GOTO(st, nb_afile_write(&f, e->name, strlen(e->name), ctx), out);
        NB_CHECK_GOTO(st, put_i32(&f, (int32_t)ncall, ctx), out);
        NB_CHECK_GOTO(st, put_i32(&f, (int32_t)nv, ctx), out);
        free(tmp);
        tmp = nb_malloc(ctx, (size_t)nv * sizeof(float), e->name);
        if (!tmp) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "out of memory");
        for (uint64_t j = 0; j < nv; j++) {
            int64_t ex = (int64_t)(j / (uint64_t)e->n_in);
            double c = e->count[e->n_counts == 1 ? 0 : ex], v = e->sum2[j];
            if (c <= 0) { v = 1; c = 1; } /* partial data: neutral, as llama.cpp stores it */
            tmp[j] = (float)(v / c * ncall);
        }
        NB_CHECK_GOTO(st, nb_afile_write(&f, tmp, (size_t)nv * sizeof(float), ctx), out);
    }
    NB_CHECK_GOTO(st, put_i32(&f, (int32_t)(im->chunk_count > INT32_MAX ? INT32_MAX : im->chunk_count), ctx), out);
    {
        const char *d = im->n_datasets ? im->datasets[im->n_datasets - 1] : "";
        NB_CHECK_GOTO(st, put_i32(&f, (int32_t)strlen(d), ctx), out);
        NB_CHECK_GOTO(st, nb_afile_write(&f, d, strlen(d), ctx), out);
    }
    st = nb_afile_commit(&f, NULL, ctx);
out:
    nb_afile_abort(&f);
    free(tmp);
    free(s);
    return st;
}

/* Weights above this are rescaled: the quantizers sum w * x^2 over a block
 * in float, which must stay finite for |x| up to ~1e5. */
#define HUGE_WEIGHT 1e20

/* The importance a file gives must be usable: a negative sum of squares is
 * not an importance matrix (refused). Weights that are all zero would
 * quantize the matrix to zeros: it falls back to the neutral weights of an
 * expert that saw no token (count 0), as llama-imatrix fills degenerate
 * entries. Weights so large that the quantizers' sums overflow are scaled
 * down (the weighted rounding depends only on their ratios). Each fallback is
 * a warning naming the tensor. */
static nb_status validate(nb_imatrix *im, const char *path, nb_ctx *ctx) {
    for (size_t i = 0; i < im->n; i++) {
        nb_imatrix_entry *e = &im->e[i];
        for (int64_t k = 0; k < e->n_mat; k++) {
            double *c = &e->count[e->n_counts == 1 ? 0 : k];
            if (!(*c > 0)) continue;
            double *s2 = e->sum2 + k * e->n_in, top = 0;
            for (int64_t j = 0; j < e->n_in; j++) {
                if (s2[j] < 0)
                    return nb_err(ctx, NB_ERR_FORMAT,
                                  "imatrix %s: tensor '%s'%s: column %lld has a negative sum of squares (%g)", path,
                                  e->name, e->n_mat > 1 ? " (an expert)" : "", (long long)j, s2[j]);
                if (s2[j] / *c > top) top = s2[j] / *c;
            }
            char who[64] = "";
            if (e->n_mat > 1) snprintf(who, sizeof who, " expert %lld", (long long)k);
            if (top > HUGE_WEIGHT) {
                NB_WARN(ctx, "imatrix %s: tensor '%s'%s: importance values up to %g: scaled down to at most 1", path,
                        e->name, who, top);
                for (int64_t j = 0; j < e->n_in; j++) s2[j] /= top;
            } else if (top == 0) {
                NB_WARN(ctx, "imatrix %s: tensor '%s'%s: importance values are all zero: neutral weights%s", path,
                        e->name, who, e->n_mat > 1 && e->n_counts == 1 ? " for every expert" : "");
                *c = 0;
            }
        }
    }
    return NB_OK;
}

nb_status nb_imatrix_load_for_model(const char *path, const char *model_path, nb_imatrix *im, nb_ctx *ctx) {
    NB_TRY(nb_imatrix_read(path, im, ctx));
    nb_model *m = NULL;
    nb_status st = nb_model_open(model_path, &m, ctx);
    if (st == NB_OK) st = nb_imatrix_check_model(im, m, path, ctx);
    nb_model_close(m);
    if (st != NB_OK) { nb_imatrix_free(im); return st; }
    NB_INFO(ctx, "imatrix %s: %zu entries%s, %u chunks of %u tokens, dataset %s", path, im->n,
            im->legacy ? " (legacy .dat)" : "", im->chunk_count, im->chunk_size,
            im->n_datasets ? im->datasets[im->n_datasets - 1] : "(none)");
    for (size_t i = 0; i < im->n; i++) {
        int64_t z = nb_imatrix_zero_count(&im->e[i]);
        if (z) NB_WARN(ctx, "imatrix %s: tensor '%s': %lld of %lld experts saw no token (neutral weights)", path,
                       im->e[i].name, (long long)z, (long long)im->e[i].n_mat);
    }
    st = validate(im, path, ctx); /* after those warnings: what it neutralises is said once, by it */
    if (st != NB_OK) nb_imatrix_free(im);
    return st;
}

/* ---- quantize adapter ------------------------------------------------------------------------------ */

const float *nb_imatrix_importance_fn(void *user, const char *name, int64_t slice, int64_t ne0) {
    nb_imatrix_importance *u = user;
    if (!u || !u->im || ne0 <= 0) return NULL;
    if (!nb_imatrix_find(u->im, name)) return NULL;
    if ((size_t)ne0 > u->cap) {
        float *b = nb_realloc(NULL, u->buf, (size_t)ne0 * sizeof(float), "imatrix");
        if (!b) { u->failed = true; return NULL; }
        u->buf = b;
        u->cap = (size_t)ne0;
    }
    int r = nb_imatrix_weights(u->im, name, slice, ne0, u->buf);
    if (r < 0) u->failed = true;
    return r == 1 ? u->buf : NULL;
}

void nb_imatrix_importance_free(nb_imatrix_importance *u) {
    if (!u) return;
    free(u->buf);
    u->buf = NULL;
    u->cap = 0;
}
