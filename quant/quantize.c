/* quant/quantize.c — the streaming quantization pipeline (see quant/quantize.h). */
#include "quant/quantize.h"

#include "core/afile.h"
#include "core/progress.h"
#include "formats/convert.h"
#include "formats/json_strict.h"
#include "formats/model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rows are processed in blocks of about this many elements: the unit of
 * OpenMP work and of error accumulation. Fixed, so results (including the
 * report's sums) do not depend on the thread count. */
#define BLOCK_ELEMS (1u << 16)

/* ---- error statistics ---------------------------------------------------------------------- */

void nb_err_acc_add(nb_err_acc *a, const float *x, const float *y, uint64_t n) {
    double se = 0, xx = 0, yy = 0, xy = 0, mx = a->max_abs;
    for (uint64_t k = 0; k < n; k++) {
        double xv = x[k], yv = y[k], d = xv - yv;
        se += d * d;
        xx += xv * xv;
        yy += yv * yv;
        xy += xv * yv;
        if (fabs(d) > mx) mx = fabs(d);
    }
    a->se += se; a->xx += xx; a->yy += yy; a->xy += xy;
    a->max_abs = mx;
    a->n += n;
}

void nb_err_acc_merge(nb_err_acc *a, const nb_err_acc *b) {
    a->se += b->se; a->xx += b->xx; a->yy += b->yy; a->xy += b->xy;
    if (b->max_abs > a->max_abs) a->max_abs = b->max_abs;
    a->n += b->n;
}

void nb_err_acc_finish(const nb_err_acc *a, double *rmse, double *max_abs, double *rel_rmse, double *cosine) {
    double n = a->n ? (double)a->n : 1.0;
    *rmse = sqrt(a->se / n);
    *max_abs = a->max_abs;
    *rel_rmse = a->xx > 0 ? sqrt(a->se / a->xx) : 0.0;
    if (a->xx == 0 && a->yy == 0) *cosine = 1.0;
    else if (a->xx == 0 || a->yy == 0) *cosine = 0.0;
    else *cosine = a->xy / (sqrt(a->xx) * sqrt(a->yy));
}

/* ---- buffers --------------------------------------------------------------------------------- */

/* Grow-only work buffers reused across tensors. */
typedef struct bufs {
    float *f;        size_t f_cap;   /* source rows in F32 */
    float *y;        size_t y_cap;   /* dequantized output rows (report) */
    unsigned char *q; size_t q_cap;  /* quantized rows */
    nb_err_acc *acc; size_t acc_cap; /* per row block */
    int64_t *bad;    size_t bad_cap; /* per row block: first non-finite element or -1 */
} bufs;

static void *grow(void **p, size_t *cap, size_t need, nb_ctx *ctx) {
    if (need <= *cap) return *p;
    void *n = nb_realloc(NULL, *p, need ? need : 1, "quantize");
    if (!n) { nb_err(ctx, NB_ERR_NOMEM, "out of memory (%zu bytes of quantization buffers)", need); return NULL; }
    *p = n;
    *cap = need;
    return n;
}

static void bufs_free(bufs *b) {
    free(b->f); free(b->y); free(b->q); free(b->acc); free(b->bad);
    memset(b, 0, sizeof *b);
}

/* Index of the first NaN/Inf in x[0..n), or -1. Scans 64 floats at a time
 * with a branch-free test the compiler vectorises; only a flagged group is
 * searched element by element. */
static int64_t first_nonfinite(const float *x, uint64_t n) {
    uint64_t j = 0;
    for (; j + 64 <= n; j += 64) {
        uint32_t badbits = 0;
        for (int k = 0; k < 64; k++) {
            uint32_t u;
            memcpy(&u, x + j + k, 4);
            badbits |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
        }
        if (badbits) break;
    }
    for (; j < n; j++)
        if (!isfinite(x[j])) return (int64_t)j;
    return -1;
}

/* ---- one tensor ---------------------------------------------------------------------------------- */

typedef struct job {
    nb_model *m;
    nb_sink *sink;
    const nb_quant_opts *o;
    bufs *b;
    nb_progress *prog;
} job;

/* Convert (and for a type change quantize) rows [r0, r0 + nr) whose source
 * bytes start at `src`. Writes the chunk's output to the sink. */
static nb_status do_chunk(job *jb, const nb_tensor *t, nb_quant_tensor *rt, const unsigned char *src, uint64_t r0,
                          uint64_t nr, int64_t slice, uint64_t in_row_bytes, uint64_t out_row_bytes,
                          nb_err_acc *tacc, nb_ctx *ctx) {
    const nb_type_traits *ti = nb_type_get(t->type), *to = nb_type_get(rt->type);
    const uint64_t row = (uint64_t)t->ne[0];
    const bool same = rt->type == t->type;
    const bool whole = rt->type == NB_TYPE_NF4_DQ; /* tensor-wide absmax offset: one call per slice */
    const bool report = jb->o->report && !same;
    bufs *b = jb->b;
    uint64_t block_rows = row >= BLOCK_ELEMS ? 1 : BLOCK_ELEMS / row;
    uint64_t nblocks = (nr + block_rows - 1) / block_rows;
    if (!grow((void **)&b->f, &b->f_cap, nr * row * sizeof(float), ctx)) return NB_ERR_NOMEM;
    if (!same && !grow((void **)&b->q, &b->q_cap, nr * out_row_bytes, ctx)) return NB_ERR_NOMEM;
    if (report && !grow((void **)&b->y, &b->y_cap, nr * row * sizeof(float), ctx)) return NB_ERR_NOMEM;
    if (!grow((void **)&b->acc, &b->acc_cap, nblocks * sizeof(nb_err_acc), ctx)) return NB_ERR_NOMEM;
    if (!grow((void **)&b->bad, &b->bad_cap, nblocks * sizeof(int64_t), ctx)) return NB_ERR_NOMEM;
    const float *imp = NULL;
    if (!same && jb->o->importance) imp = jb->o->importance(jb->o->importance_user, t->name, slice, t->ne[0]);
    int nt = nb_ctx_threads(ctx);
    float *f = b->f, *y = b->y;
    unsigned char *q = b->q;
    nb_err_acc *acc = b->acc;
    int64_t *bad = b->bad;
    const int64_t nb = (int64_t)nblocks;

    /* 1. source rows -> F32, finiteness, and (row-wise types) quantization */
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t k = 0; k < nb; k++) {
        uint64_t a = (uint64_t)k * block_rows, e = a + block_rows < nr ? a + block_rows : nr;
        float *fk = f + a * row;
        ti->to_float(src + a * in_row_bytes, fk, (int64_t)((e - a) * row));
        int64_t nf = first_nonfinite(fk, (e - a) * row);
        bad[k] = nf < 0 ? -1 : (int64_t)(a * row) + nf;
        if (!same && !whole && bad[k] < 0) to->quantize(fk, q + a * out_row_bytes, (int64_t)(e - a), (int64_t)row, imp);
    }
    for (int64_t k = 0; k < nb; k++) {
        if (bad[k] < 0) continue;
        uint64_t at = r0 * row + (uint64_t)bad[k];
        return nb_err(ctx, NB_ERR_RANGE, "%s: tensor '%s': element %llu (row %llu, column %llu) is %s",
                      jb->m->path, t->name, (unsigned long long)at, (unsigned long long)(at / row),
                      (unsigned long long)(at % row), isnan(f[bad[k]]) ? "NaN" : "infinite");
    }
    if (same) return nb_sink_write(jb->sink, src, nr * in_row_bytes, ctx);
    if (whole) to->quantize(f, q, (int64_t)nr, (int64_t)row, imp);

    /* 2. error report: dequantize what was written and compare */
    if (report) {
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (int64_t k = 0; k < nb; k++) {
            uint64_t a = (uint64_t)k * block_rows, e = a + block_rows < nr ? a + block_rows : nr;
            to->to_float(q + a * out_row_bytes, y + a * row, (int64_t)((e - a) * row));
            memset(&acc[k], 0, sizeof acc[k]);
            nb_err_acc_add(&acc[k], f + a * row, y + a * row, (e - a) * row);
        }
        for (int64_t k = 0; k < nb; k++) nb_err_acc_merge(tacc, &acc[k]);
    }
    return nb_sink_write(jb->sink, q, nr * out_row_bytes, ctx);
}

/* A tensor whose bytes come from opts.prequant: written as given; with the
 * report, source and given bytes are compared chunk by chunk (rows). */
static nb_status do_prequant(job *jb, const nb_tensor *t, nb_quant_tensor *rt, const unsigned char *pq,
                             nb_ctx *ctx) {
    rt->prequant = true;
    if (!jb->o->report) {
        nb_status st = nb_sink_write(jb->sink, pq, rt->bytes_out, ctx);
        nb_progress_add(jb->prog, t->nbytes, t->name);
        return st;
    }
    nb_model *m = jb->m;
    size_t i = (size_t)(t - m->tensors);
    const nb_type_traits *ti = nb_type_get(t->type), *to = nb_type_get(rt->type);
    const void *data = NULL;
    void *owned = NULL;
    NB_TRY(nb_model_tensor_bytes(m, i, &data, &owned, ctx));
    const unsigned char *src = data;
    nb_status st = NB_OK;
    uint64_t row = (uint64_t)t->ne[0], nrows = nb_tensor_nelements(t) / row, in_rb = 0, out_rb = 0;
    NB_CHECK_GOTO(st, nb_type_row_bytes(t->type, row, &in_rb, ctx, t->name), out);
    NB_CHECK_GOTO(st, nb_type_row_bytes(rt->type, row, &out_rb, ctx, t->name), out);
    uint64_t chunk = jb->o->chunk_elems ? jb->o->chunk_elems : NB_QUANT_CHUNK_ELEMS;
    uint64_t rows_per = row >= chunk ? 1 : chunk / row;
    bufs *b = jb->b;
    nb_err_acc tacc = {0};
    for (uint64_t r0 = 0; r0 < nrows && st == NB_OK; r0 += rows_per) {
        uint64_t nr = nrows - r0 < rows_per ? nrows - r0 : rows_per;
        if (!grow((void **)&b->f, &b->f_cap, nr * row * sizeof(float), ctx) ||
            !grow((void **)&b->y, &b->y_cap, nr * row * sizeof(float), ctx)) { st = NB_ERR_NOMEM; break; }
        ti->to_float(src + r0 * in_rb, b->f, (int64_t)(nr * row));
        to->to_float(pq + r0 * out_rb, b->y, (int64_t)(nr * row));
        nb_err_acc_add(&tacc, b->f, b->y, nr * row);
        st = nb_sink_write(jb->sink, pq + r0 * out_rb, nr * out_rb, ctx);
        nb_progress_add(jb->prog, nr * in_rb, t->name);
    }
    if (st == NB_OK) {
        rt->has_error = true;
        nb_err_acc_finish(&tacc, &rt->rmse, &rt->max_abs, &rt->rel_rmse, &rt->cosine);
    }
out:
    free(owned);
    nb_model_release_tensor(m, i);
    return st;
}

static nb_status do_tensor(job *jb, size_t i, nb_quant_tensor *rt, nb_ctx *ctx) {
    nb_model *m = jb->m;
    const nb_tensor *t = &m->tensors[i];
    if (t->nbytes == 0) return NB_OK;
    const nb_type_traits *ti = nb_type_get(t->type);
    const bool same = rt->type == t->type;
    if (jb->o->prequant) { /* also same-type tensors: AWQ rewrites norms */
        const unsigned char *pq = jb->o->prequant(jb->o->prequant_user, t->name, rt->type, rt->bytes_out);
        if (pq) return do_prequant(jb, t, rt, pq, ctx);
    }
    if (same && (!ti || !ti->to_float)) {
        /* nothing to check or convert (integer tensors ...): copy the bytes */
        nb_status st = nb_copy_tensor(m, i, t->type, jb->sink, ctx);
        nb_progress_add(jb->prog, t->nbytes, t->name);
        return st;
    }
    const void *data = NULL;
    void *owned = NULL;
    NB_TRY(nb_model_tensor_bytes(m, i, &data, &owned, ctx));
    const unsigned char *src = data;
    nb_status st = NB_OK;
    uint64_t row = (uint64_t)t->ne[0], nrows = nb_tensor_nelements(t) / row;
    uint64_t in_row_bytes = 0, out_row_bytes = 0;
    NB_CHECK_GOTO(st, nb_type_row_bytes(t->type, row, &in_row_bytes, ctx, t->name), out);
    NB_CHECK_GOTO(st, nb_type_row_bytes(rt->type, row, &out_row_bytes, ctx, t->name), out);
    /* chunks never cross a 2-D slice (an expert of a stacked tensor): importance is per slice */
    uint64_t slice_rows = (uint64_t)(t->ne[1] > 0 ? t->ne[1] : 1);
    if (slice_rows > nrows) slice_rows = nrows;
    uint64_t chunk = jb->o->chunk_elems ? jb->o->chunk_elems : NB_QUANT_CHUNK_ELEMS;
    uint64_t rows_per = rt->type == NB_TYPE_NF4_DQ ? slice_rows : row >= chunk ? 1 : chunk / row;
    if (rows_per > slice_rows) rows_per = slice_rows;
    nb_err_acc tacc = {0};
    for (uint64_t s0 = 0; s0 < nrows && st == NB_OK; s0 += slice_rows) {
        uint64_t s_end = s0 + slice_rows < nrows ? s0 + slice_rows : nrows;
        for (uint64_t r0 = s0; r0 < s_end && st == NB_OK; r0 += rows_per) {
            uint64_t nr = s_end - r0 < rows_per ? s_end - r0 : rows_per;
            st = do_chunk(jb, t, rt, src + r0 * in_row_bytes, r0, nr, (int64_t)(s0 / slice_rows), in_row_bytes,
                          out_row_bytes, &tacc, ctx);
            if (!owned) nb_release_mapped(src + r0 * in_row_bytes, nr * in_row_bytes); /* RSS stays flat */
            nb_progress_add(jb->prog, nr * in_row_bytes, t->name);
        }
    }
    if (st == NB_OK && jb->o->report && !same) {
        rt->has_error = true;
        nb_err_acc_finish(&tacc, &rt->rmse, &rt->max_abs, &rt->rel_rmse, &rt->cosine);
    }
out:
    free(owned);
    nb_model_release_tensor(m, i);
    return st;
}

/* ---- the plan into the result ------------------------------------------------------------------- */

static nb_status fill_result(const nb_plan *p, nb_quant_result *r, nb_ctx *ctx) {
    size_t n = p->n_tensors;
    r->tensors = nb_calloc(ctx, n ? n : 1, sizeof *r->tensors, "tensor table");
    r->names = nb_malloc(ctx, p->names_bytes ? p->names_bytes : 1, "tensor names");
    if (!r->tensors || !r->names) return NB_ERR_NOMEM;
    memcpy(r->names, p->names, p->names_bytes);
    r->n_tensors = n;
    r->n_quantized = p->n_quantized;
    r->n_requantized = p->n_requantized;
    r->n_fallback = p->n_fallback;
    r->n_elements = p->n_elements;
    r->bytes_in = p->bytes_in;
    r->tensor_bytes_out = p->bytes_out;
    for (size_t i = 0; i < n; i++) {
        const nb_plan_tensor *t = &p->tensors[i];
        nb_quant_tensor *rt = &r->tensors[i];
        rt->name = r->names + (t->name - p->names); /* same layout as the plan's names */
        rt->src_type = t->src_type;
        rt->type = t->type;
        rt->why = t->why;
        rt->n_dims = t->n_dims;
        memcpy(rt->ne, t->ne, sizeof rt->ne);
        rt->n_elements = t->n_elements;
        rt->bytes_in = t->bytes_in;
        rt->bytes_out = t->bytes_out;
    }
    r->types = nb_calloc(ctx, p->n_types ? p->n_types : 1, sizeof *r->types, "type table");
    if (!r->types) return NB_ERR_NOMEM;
    memcpy(r->types, p->types, p->n_types * sizeof *r->types);
    r->n_types = p->n_types;
    return NB_OK;
}

/* ---- the driver ---------------------------------------------------------------------------------- */

nb_status nb_quantize_output_kv(const nb_model *m, int32_t file_type, nb_kvset *kv, nb_ctx *ctx) {
    NB_TRY(nb_kvset_copy(kv, &m->kv, ctx));
    nb_kv_remove(kv, "split.no");
    nb_kv_remove(kv, "split.count");
    nb_kv_remove(kv, "split.tensors.count");
    NB_TRY(nb_kv_set_u32(kv, "general.quantization_version", 2, ctx));
    if (file_type >= 0) return nb_kv_set_u32(kv, "general.file_type", (uint32_t)file_type, ctx);
    nb_kv_remove(kv, "general.file_type");
    return NB_OK;
}

nb_status nb_quantize_model(const char *src, const char *dst, const nb_plan *plan, const nb_quant_opts *o,
                            nb_quant_result *r, nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    double t0 = nb_now();
    static const nb_quant_opts defaults = {0};
    if (!o) o = &defaults;
    if (!plan) return nb_err(ctx, NB_ERR_INVALID, "quantize: no plan given");
    if (!src || !dst) return nb_err(ctx, NB_ERR_INVALID, "quantize: source and output paths are required");
    if (!strcmp(src, dst) || nb_same_file(src, dst))
        return nb_err(ctx, NB_ERR_INVALID, "%s: output is the same file as the input", dst);
    nb_model *m = NULL;
    NB_TRY(nb_model_open(src, &m, ctx));
    nb_sink *sink = NULL;
    bufs b = {0};
    nb_status st = nb_plan_bind(plan, m, ctx);
    if (st == NB_OK) st = fill_result(plan, r, ctx);
    if (st != NB_OK) goto out;

    NB_CHECK_GOTO(st, nb_sink_create(dst, NB_FMT_GGUF, &sink, ctx), out);
    NB_CHECK_GOTO(st, nb_quantize_output_kv(m, plan->file_type, &sink->kv, ctx), out);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *t = &m->tensors[i];
        NB_CHECK_GOTO(st, nb_sink_add_tensor(sink, t->name, r->tensors[i].type, t->n_dims, t->ne, ctx), out);
    }
    NB_CHECK_GOTO(st, nb_sink_begin(sink, ctx), out);
    nb_progress prog;
    nb_progress_begin(&prog, ctx, "quantize", r->bytes_in);
    job jb = {m, sink, o, &b, &prog};
    for (size_t k = 0; k < m->n_tensors && st == NB_OK; k++) {
        size_t i = nb_sink_data_order(sink, k);
        st = do_tensor(&jb, i, &r->tensors[i], ctx);
    }
    nb_progress_end(&prog);
    if (st != NB_OK) goto out;
    NB_CHECK_GOTO(st, nb_sink_commit(sink, ctx), out);
    r->bytes_out = sink->bytes_written;
    memcpy(r->sha256, sink->sha256, 32);
out:
    bufs_free(&b);
    nb_sink_free(sink);
    nb_model_close(m);
    r->seconds = nb_now() - t0;
    return st;
}

void nb_quant_result_free(nb_quant_result *r) {
    if (!r) return;
    free(r->tensors);
    free(r->types);
    free(r->names);
    memset(r, 0, sizeof *r);
}

/* ---- JSON ----------------------------------------------------------------------------------------- */

static cJSON *shape_json(const nb_quant_tensor *t) {
    cJSON *a = cJSON_CreateArray();
    uint32_t nd = t->n_dims ? t->n_dims : 1;
    for (uint32_t d = 0; d < nd && d < 4 && a; d++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)t->ne[d]));
    return a;
}

char *nb_quant_result_json(const nb_quant_result *r, const nb_plan *plan, const char *src, const char *dst,
                           bool with_tensors) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON_AddStringToObject(j, "input", src ? src : "");
    cJSON_AddStringToObject(j, "output", dst ? dst : "");
    if (plan && plan->mix[0]) cJSON_AddStringToObject(j, "mix", plan->mix);
    if (plan && plan->file_type >= 0) cJSON_AddNumberToObject(j, "file_type", plan->file_type);
    cJSON_AddNumberToObject(j, "seconds", r->seconds);
    if (plan) nb_plan_json_totals(plan, j);
    cJSON_AddNumberToObject(j, "bytes_out", (double)r->bytes_out);
    if (r->bytes_out) {
        char hex[65];
        for (int k = 0; k < 32; k++) snprintf(hex + 2 * k, 3, "%02x", r->sha256[k]);
        cJSON_AddStringToObject(j, "sha256", hex);
    }
    cJSON *types = cJSON_AddArrayToObject(j, "types");
    for (size_t k = 0; k < r->n_types && types; k++) {
        const nb_quant_type_stat *s = &r->types[k];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "type", nb_type_name(s->type));
        cJSON_AddNumberToObject(e, "n_tensors", (double)s->n_tensors);
        cJSON_AddNumberToObject(e, "n_elements", (double)s->n_elements);
        cJSON_AddNumberToObject(e, "bytes", (double)s->bytes);
        cJSON_AddNumberToObject(e, "bpw", s->n_elements ? (double)s->bytes * 8.0 / (double)s->n_elements : 0);
        cJSON_AddItemToArray(types, e);
    }
    if (with_tensors) {
        cJSON *ts = cJSON_AddArrayToObject(j, "tensors");
        for (size_t k = 0; k < r->n_tensors && ts; k++) {
            const nb_quant_tensor *t = &r->tensors[k];
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", t->name);
            cJSON_AddStringToObject(e, "src_type", nb_type_name(t->src_type));
            cJSON_AddStringToObject(e, "type", nb_type_name(t->type));
            cJSON_AddStringToObject(e, "why", nb_plan_why_name(t->why));
            cJSON_AddItemToObject(e, "shape", shape_json(t));
            cJSON_AddNumberToObject(e, "bytes_in", (double)t->bytes_in);
            cJSON_AddNumberToObject(e, "bytes_out", (double)t->bytes_out);
            if (t->prequant) cJSON_AddBoolToObject(e, "prequant", true);
            if (t->has_error) {
                cJSON_AddNumberToObject(e, "rmse", t->rmse);
                cJSON_AddNumberToObject(e, "max_abs", t->max_abs);
                cJSON_AddNumberToObject(e, "rel_rmse", t->rel_rmse);
                cJSON_AddNumberToObject(e, "cosine", t->cosine);
            }
            cJSON_AddItemToArray(ts, e);
        }
    }
    char *s = nb_json_print(j, false);
    cJSON_Delete(j);
    return s;
}
