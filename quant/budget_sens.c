/* quant/budget_sens.c — step 1 of the size-budget planner: per tensor and
 * candidate type, the predicted error of quantizing it (see quant/budget.h). */
#include "quant/budget_impl.h"

#include "core/checked.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "formats/arch.h"
#include "formats/gguf.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "quant/plan.h"

static const nb_type k_llama_cands[] = {NB_TYPE_Q2_K, NB_TYPE_Q3_K,   NB_TYPE_Q4_0,   NB_TYPE_Q4_1, NB_TYPE_Q5_0,
                                        NB_TYPE_Q5_1, NB_TYPE_Q4_K,   NB_TYPE_Q5_K,   NB_TYPE_Q6_K, NB_TYPE_Q8_0,
                                        NB_TYPE_IQ4_NL, NB_TYPE_IQ4_XS, NB_TYPE_F16};
static const nb_type k_nibble_extra[] = {NB_TYPE_NF4, NB_TYPE_INT4_SYM_G64, NB_TYPE_INT4_SYM_G128};

void nb_sens_free(nb_sens *s) {
    if (!s) return;
    for (size_t i = 0; s->tensors && i < s->n_tensors; i++) {
        free(s->tensors[i].slice_err);
        free(s->tensors[i].slice_drop);
    }
    free(s->tensors);
    memset(s, 0, sizeof *s);
}

/* The candidate types for a tensor of source type src (see the header). */
static size_t candidates(nb_runtime rt, nb_type src, nb_type *out) {
    size_t n = 0;
    for (size_t k = 0; k < sizeof k_llama_cands / sizeof *k_llama_cands; k++) out[n++] = k_llama_cands[k];
    if (rt == NB_RUNTIME_NIBBLE)
        for (size_t k = 0; k < sizeof k_nibble_extra / sizeof *k_nibble_extra; k++) out[n++] = k_nibble_extra[k];
    const nb_type_traits *st = nb_type_get(src);
    bool keepable = src == NB_TYPE_F16 || src == NB_TYPE_BF16 ||
                    (st && st->is_quantized && (rt == NB_RUNTIME_NIBBLE || st->ggml_loadable));
    bool listed = false;
    for (size_t k = 0; k < n; k++) listed |= out[k] == src;
    if (keepable && !listed) out[n++] = src;
    return n;
}

static int cand_cmp(const void *a, const void *b) {
    const nb_sens_cand *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? -1 : 1;
    if (x->err != y->err) return x->err < y->err ? -1 : 1;
    return (int)x->type - (int)y->type;
}

/* Keep the Pareto frontier of c[0..n): ascending bytes, strictly descending err. */
static size_t pareto(nb_sens_cand *c, size_t n) {
    qsort(c, n, sizeof *c, cand_cmp);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || c[i].err < c[k - 1].err) c[k++] = c[i];
    return k;
}

/* What one tensor's measurement needs. */
typedef struct sample {
    int64_t ne0, rows, n_slices, n_sampled; /* rows per slice; slices; total sampled rows */
    int64_t *k;        /* [n_slices] rows sampled per slice */
    float *x;          /* [n_sampled x ne0] sampled rows, slice-major */
    float *imp;        /* [n_slices x ne0] importance per slice (NULL rows: see has_imp) */
    bool *has_imp;     /* [n_slices] */
    double *scale;     /* [n_slices] (rows / k) x slice weight */
    double dflt;       /* weight of a column without importance */
} sample;

static void sample_free(sample *s) {
    free(s->k);
    free(s->x);
    free(s->imp);
    free(s->has_imp);
    free(s->scale);
}

/* Importance-weighted squared error of candidate type ty over the sample;
 * per_slice (may be NULL): each slice's share. */
static double cand_err(const sample *s, nb_type ty, uint64_t row_bytes, double *per_slice, bool *oom) {
    const nb_type_traits *tr = nb_type_get(ty);
    int64_t kmax = 0;
    for (int64_t sl = 0; sl < s->n_slices; sl++) kmax = s->k[sl] > kmax ? s->k[sl] : kmax;
    unsigned char *q = nb_malloc(NULL, (size_t)(row_bytes * (uint64_t)kmax), "budget_sens");
    float *y = nb_malloc(NULL, (size_t)kmax * (size_t)s->ne0 * sizeof *y, "budget_sens");
    double err = 0;
    if (!q || !y) {
        *oom = true;
    } else {
        const float *x = s->x;
        for (int64_t sl = 0; sl < s->n_slices; sl++) {
            int64_t k = s->k[sl];
            const float *imp = s->has_imp[sl] ? s->imp + sl * s->ne0 : NULL;
            tr->quantize(x, q, k, s->ne0, imp);
            tr->to_float(q, y, k * s->ne0);
            double se = 0;
            for (int64_t r = 0; r < k; r++) {
                const float *xr = x + r * s->ne0, *yr = y + r * s->ne0;
                double rs = 0;
                for (int64_t j = 0; j < s->ne0; j++) {
                    double d = (double)xr[j] - (double)yr[j];
                    rs += (imp ? (double)imp[j] : s->dflt) * d * d;
                }
                se += rs;
            }
            err += s->scale[sl] * se;
            if (per_slice) per_slice[sl] = s->scale[sl] * se;
            x += k * s->ne0;
        }
    }
    free(q);
    free(y);
    return err;
}

/* The sampled rows are a few pages of a mapped tensor: tell the kernel not to
 * read ahead around them (only advice; nothing changes if it is ignored). */
static void advise_random(const void *p, uint64_t n) {
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0 || !n) return;
    uintptr_t a = (uintptr_t)p, start = a & ~(uintptr_t)(pg - 1);
    (void)posix_madvise((void *)start, (size_t)(a + n - start), POSIX_MADV_RANDOM);
}

/* Draw the sample of tensor i (rows, importance, weights). */
static nb_status take_sample(nb_model *m, size_t i, const nb_sens_opts *o, uint32_t n_used, sample *s, nb_ctx *ctx) {
    const nb_tensor *t = &m->tensors[i];
    const nb_type_traits *st = nb_type_get(t->type);
    NB_RETURN_IF(ctx, !st || !st->to_f32, NB_ERR_UNSUPPORTED, "%s: tensor '%s': cannot read type %s", m->path, t->name,
                 nb_type_name(t->type));
    s->ne0 = t->ne[0];
    s->rows = t->ne[1];
    s->n_slices = (int64_t)(nb_tensor_nelements(t) / (uint64_t)(s->ne0 * s->rows));
    uint32_t want = o->sample_rows ? o->sample_rows : NB_SENS_DEFAULT_ROWS;
    int64_t per = ((int64_t)want + s->n_slices - 1) / s->n_slices;
    if (per < 4) per = 4;
    if (per > s->rows) per = s->rows;
    s->n_sampled = per * s->n_slices;
    s->dflt = o->default_importance > 0 ? o->default_importance : 1.0;
    s->k = nb_calloc(ctx, (size_t)s->n_slices, sizeof *s->k, "sample");
    s->scale = nb_calloc(ctx, (size_t)s->n_slices, sizeof *s->scale, "sample");
    s->has_imp = nb_calloc(ctx, (size_t)s->n_slices, sizeof *s->has_imp, "sample");
    s->imp = nb_calloc(ctx, (size_t)(s->n_slices * s->ne0), sizeof *s->imp, "sample importance");
    s->x = nb_calloc(ctx, (size_t)(s->n_sampled * s->ne0), sizeof *s->x, "sampled rows");
    if (!s->k || !s->scale || !s->has_imp || !s->imp || !s->x) return NB_ERR_NOMEM;
    bool expert = s->n_slices > 1 && nb_arch_is_expert_stack(t->name);
    /* a lookup table: one row per token; tied embeddings are the output matrix too, a full matmul */
    bool embd = !strcmp(t->name, "token_embd.weight") && nb_model_find(m, "output.weight");
    for (int64_t sl = 0; sl < s->n_slices; sl++) {
        s->k[sl] = per;
        double w = 1;
        if (expert) {
            w = o->slice_weight ? o->slice_weight(o->slice_weight_user, t->name, sl) : -1;
            if (w < 0) w = (double)n_used / (double)s->n_slices;
        }
        s->scale[sl] = (double)s->rows / (double)per * w / (embd ? (double)s->rows : 1.0);
        const float *imp = o->importance ? o->importance(o->importance_user, t->name, sl, s->ne0) : NULL;
        if (imp) {
            memcpy(s->imp + sl * s->ne0, imp, (size_t)s->ne0 * sizeof *imp);
            s->has_imp[sl] = true;
        }
    }
    uint64_t rb = 0;
    NB_TRY(nb_type_row_bytes(t->type, (uint64_t)s->ne0, &rb, ctx, t->name));
    const void *data = NULL;
    void *owned = NULL;
    NB_TRY(nb_model_tensor_bytes(m, i, &data, &owned, ctx));
    if (!owned) advise_random(data, t->nbytes);
    nb_status st2 = NB_OK;
    float *x = s->x;
    for (int64_t sl = 0; sl < s->n_slices && st2 == NB_OK; sl++) {
        for (int64_t r = 0; r < per && st2 == NB_OK; r++) {
            /* evenly spaced rows, the middle of each of `per` equal stretches */
            int64_t row = (int64_t)(((double)r + 0.5) * (double)s->rows / (double)per);
            const unsigned char *src = (const unsigned char *)data + ((uint64_t)(sl * s->rows + row)) * rb;
            st->to_f32(src, x, s->ne0);
            for (int64_t j = 0; j < s->ne0; j++)
                if (!isfinite(x[j])) {
                    st2 = nb_err(ctx, NB_ERR_RANGE, "%s: tensor '%s': non-finite value at row %lld, column %lld",
                                 m->path, t->name, (long long)(sl * s->rows + row), (long long)j);
                    break;
                }
            x += s->ne0;
        }
    }
    free(owned);
    return st2;
}

/* The output energy Σ imp x² over the sampled rows, scaled as cand_err (the err of a zero output);
 * per_slice (may be NULL): each slice's share. */
static double energy(const sample *s, double *per_slice) {
    const float *x = s->x;
    double all = 0;
    for (int64_t sl = 0; sl < s->n_slices; sl++) {
        const float *imp = s->has_imp[sl] ? s->imp + sl * s->ne0 : NULL;
        double e = 0;
        for (int64_t r = 0; r < s->k[sl]; r++, x += s->ne0)
            for (int64_t j = 0; j < s->ne0; j++) e += (imp ? (double)imp[j] : s->dflt) * (double)x[j] * (double)x[j];
        if (per_slice) per_slice[sl] = s->scale[sl] * e;
        all += s->scale[sl] * e;
    }
    return all;
}

/* A stacked expert tensor (its slices are experts). */
static bool expert_tensor(const nb_tensor *t) {
    int layer;
    return t->n_dims >= 3 && t->ne[2] > 1 && nb_arch_is_expert_stack(t->name) && nb_arch_is_per_expert(t->name, &layer);
}

/* Whether m's block outputs are normalised before the residual (errors relative: quant/budget.h). */
static bool relative_model(const nb_model *m) {
    const nb_arch *a = nb_model_arch(m);
    return a && (a->flags & NB_ARCH_F_SANDWICH);
}

/* The divisor of tensor i's errors: its output energy over the sample when they are relative, else 1. */
static double err_norm(const nb_model *m, size_t i, bool expert, const sample *s) {
    const char *name = m->tensors[i].name;
    if (expert || !relative_model(m) || (strncmp(name, "blk.", 4) && strncmp(name, "dense_", 6))) return 1.0;
    double e = energy(s, NULL);
    return e > 0 && isfinite(e) ? e : 1.0;
}

static nb_status measure_tensor(nb_model *m, size_t i, const nb_sens_opts *o, uint32_t n_used, nb_sens_tensor *out,
                                nb_ctx *ctx) {
    const nb_tensor *t = &m->tensors[i];
    nb_type ty[NB_SENS_MAX_CANDS];
    size_t n = candidates(o->runtime, t->type, ty);
    nb_sens_cand c[NB_SENS_MAX_CANDS];
    bool fits[NB_SENS_MAX_CANDS] = {0};
    uint64_t nrows = nb_tensor_nelements(t) / (uint64_t)t->ne[0];
    for (size_t k = 0; k < n; k++) {
        const nb_type_traits *tr = nb_type_get(ty[k]);
        uint64_t rb = 0;
        c[k] = (nb_sens_cand){.type = ty[k], .err = 0};
        fits[k] = tr && tr->block_size && t->ne[0] % tr->block_size == 0 &&
                  (ty[k] == t->type || (tr->quantize && tr->to_float)) &&
                  nb_type_row_bytes(ty[k], (uint64_t)t->ne[0], &rb, NULL, t->name) == NB_OK;
        c[k].bytes = rb * nrows;
    }
    sample s = {0};
    nb_status st = take_sample(m, i, o, n_used, &s, ctx);
    bool oom = false;
    double *se = NULL; /* expert stacks: [n x n_slices] per-slice errors */
    if (st == NB_OK && out->expert) {
        out->n_slices = (uint32_t)s.n_slices;
        se = nb_calloc(ctx, n * (size_t)s.n_slices, sizeof *se, "per-expert errors");
        out->slice_drop = nb_calloc(ctx, (size_t)s.n_slices, sizeof *out->slice_drop, "per-expert errors");
        if (!se || !out->slice_drop) st = NB_ERR_NOMEM;
        else energy(&s, out->slice_drop);
    }
    if (st == NB_OK) {
        int nt = nb_ctx_threads(ctx);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (size_t k = 0; k < n; k++) {
            if (!fits[k] || ty[k] == t->type) continue; /* keeping the source type: a copy, error 0 */
            bool o2 = false;
            uint64_t rb = c[k].bytes / nrows;
            c[k].err = cand_err(&s, ty[k], rb, se ? se + k * (size_t)s.n_slices : NULL, &o2);
            if (o2) {
#pragma omp atomic write
                oom = true;
            }
        }
    }
    if (st == NB_OK) {
        double norm = err_norm(m, i, out->expert, &s);
        for (size_t k = 0; k < n; k++) c[k].err /= norm;
    }
    sample_free(&s);
    if (st == NB_OK && oom) st = nb_err(ctx, NB_ERR_NOMEM, "out of memory measuring tensor '%s'", t->name);
    size_t kept = 0;
    for (size_t k = 0; k < n && st == NB_OK; k++)
        if (fits[k]) c[kept++] = c[k];
    if (st == NB_OK && !kept)
        st = nb_err(ctx, NB_ERR_RANGE, "%s: tensor '%s': row length %lld fits no candidate type", m->path, t->name,
                    (long long)t->ne[0]);
    if (st == NB_OK) {
        out->n_cands = pareto(c, kept);
        memcpy(out->cands, c, out->n_cands * sizeof *c);
    }
    if (st == NB_OK && se) {
        /* the frontier's per-slice errors, in frontier order (types are distinct) */
        size_t ns = out->n_slices;
        out->slice_err = nb_calloc(ctx, out->n_cands * ns, sizeof *out->slice_err, "per-expert errors");
        if (!out->slice_err) st = NB_ERR_NOMEM;
        for (size_t f = 0; f < out->n_cands && st == NB_OK; f++)
            for (size_t k = 0; k < n; k++)
                if (ty[k] == out->cands[f].type) memcpy(out->slice_err + f * ns, se + k * ns, ns * sizeof *se);
    }
    free(se);
    return st;
}

/* expert_used_count (1 when absent) and expert_count (0) of m. */
static void expert_counts(const nb_model *m, uint32_t *n_used, uint32_t *n_expert) {
    *n_used = 1;
    *n_expert = 0;
    const char *arch = nb_kv_get_str(&m->kv, "general.architecture");
    if (!arch) return;
    char key[160];
    uint64_t v;
    snprintf(key, sizeof key, "%s.expert_used_count", arch);
    if (nb_kv_get_u64(&m->kv, key, &v) && v > 0 && v < 65536) *n_used = (uint32_t)v;
    snprintf(key, sizeof key, "%s.expert_count", arch);
    if (nb_kv_get_u64(&m->kv, key, &v) && v < 65536) *n_expert = (uint32_t)v;
}

nb_status nb_sens_measure_plan(nb_model *m, const nb_sens_opts *o, const nb_plan *p, double *err, nb_ctx *ctx) {
    NB_TRY(nb_plan_bind(p, m, ctx));
    uint32_t n_used, n_expert;
    expert_counts(m, &n_used, &n_expert);
    nb_sens_opts all = *o;
    all.sample_rows = UINT32_MAX; /* every row */
    nb_progress prog;
    uint64_t total = 0;
    for (size_t i = 0; i < m->n_tensors; i++) total += p->tensors[i].why == NB_PLAN_BUDGET ? m->tensors[i].nbytes : 0;
    nb_progress_begin(&prog, ctx, "verify", total);
    nb_status st = NB_OK;
    for (size_t i = 0; i < m->n_tensors && st == NB_OK; i++) {
        const nb_plan_tensor *pt = &p->tensors[i];
        err[i] = NAN;
        if (pt->why != NB_PLAN_BUDGET) continue;
        if (pt->type == pt->src_type) { err[i] = 0; continue; }
        sample s = {0};
        st = take_sample(m, i, &all, n_used, &s, ctx);
        bool oom = false;
        if (st == NB_OK)
            err[i] = cand_err(&s, pt->type, pt->bytes_out / (uint64_t)s.n_sampled, NULL, &oom) /
                     err_norm(m, i, expert_tensor(&m->tensors[i]), &s);
        sample_free(&s);
        if (st == NB_OK && oom) st = nb_err(ctx, NB_ERR_NOMEM, "out of memory measuring tensor '%s'", pt->name);
        nb_progress_add(&prog, m->tensors[i].nbytes, pt->name);
    }
    nb_progress_end(&prog);
    return st;
}

/* What a measurement depends on (the journal's key): nibble's version, the
 * source's identity, the options, and every importance vector and expert
 * weight the measurement will use. */
static void state_key(nb_model *m, const nb_sens_opts *o, const nb_sens *s, uint32_t n_used, unsigned char key[32]) {
    nb_sha256 h;
    nb_sha256_init(&h);
    char b[256];
    unsigned char fp[32];
    nb_plan_fingerprint(m, fp);
    int n = snprintf(b, sizeof b, "nibble %s sens|%llu|rt %d|rows %u|dflt %a|used %u|sw %d|rel %d|", NB_VERSION,
                     (unsigned long long)m->file_bytes, (int)o->runtime,
                     o->sample_rows ? o->sample_rows : NB_SENS_DEFAULT_ROWS, o->default_importance, n_used,
                     o->slice_weight != NULL, (int)relative_model(m));
    nb_sha256_update(&h, b, (size_t)n);
    nb_sha256_update(&h, fp, 32);
    for (size_t i = 0; i < m->n_tensors; i++) {
        if (!s->tensors[i].planned) continue;
        const nb_tensor *t = &m->tensors[i];
        int64_t ns = (int64_t)(nb_tensor_nelements(t) / (uint64_t)(t->ne[0] * t->ne[1]));
        nb_sha256_update(&h, t->name, strlen(t->name) + 1);
        for (int64_t sl = 0; sl < ns; sl++) {
            const float *imp = o->importance ? o->importance(o->importance_user, t->name, sl, t->ne[0]) : NULL;
            if (imp) nb_sha256_update(&h, imp, (size_t)t->ne[0] * sizeof *imp);
            else nb_sha256_update(&h, "-", 1);
            double w = s->tensors[i].expert && o->slice_weight ? o->slice_weight(o->slice_weight_user, t->name, sl) : 0;
            nb_sha256_update(&h, &w, sizeof w);
        }
    }
    nb_sha256_final(&h, key);
}

nb_status nb_sens_measure(nb_model *m, const nb_sens_opts *o, nb_sens *s, nb_ctx *ctx) {
    memset(s, 0, sizeof *s);
    double t0 = nb_now();
    s->runtime = o->runtime;
    s->n_tensors = m->n_tensors;
    s->tensors = nb_calloc(ctx, m->n_tensors ? m->n_tensors : 1, sizeof *s->tensors, "sensitivity table");
    if (!s->tensors) return NB_ERR_NOMEM;
    /* the header the writer will write (its size does not depend on the types) */
    nb_kvset kv;
    nb_kvset_init(&kv);
    nb_status st = nb_quantize_output_kv(m, -1, &kv, ctx);
    if (st == NB_OK) st = nb_gguf_data_start(&kv, m->tensors, m->n_tensors, &s->header_bytes, &s->alignment, ctx);
    nb_kvset_free(&kv);
    NB_TRY(st);
    uint32_t n_used;
    expert_counts(m, &n_used, &s->n_expert);
    s->n_expert_used = n_used;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *t = &m->tensors[i];
        const nb_type_traits *tr = nb_type_get(t->type);
        nb_sens_tensor *e = &s->tensors[i];
        e->planned = nb_mix_tensor_quantizable(t->name, t->ne) && tr && (tr->is_float || tr->is_quantized);
        e->expert = e->planned && t->n_dims >= 3 && t->ne[2] > 1 && nb_arch_is_expert_stack(t->name) &&
                    nb_arch_is_per_expert(t->name, &e->layer);
        if (e->planned && !e->expert && relative_model(m) && (!strncmp(t->name, "blk.", 4) || !strncmp(t->name, "dense_", 6)))
            s->n_relative++;
    }
    if (s->n_relative)
        NB_INFO(ctx, "measure: %zu tensors' errors relative to their output (block outputs are normalised in this "
                "architecture)", s->n_relative);
    /* a journal of earlier (interrupted) runs: its tensors are not measured again */
    bool *done = nb_calloc(ctx, m->n_tensors ? m->n_tensors : 1, sizeof *done, "measurement state");
    if (!done) return NB_ERR_NOMEM;
    int fd = -1;
    if (o->state_path) {
        unsigned char key[32];
        state_key(m, o, s, n_used, key);
        st = nb_sens_state_open(o->state_path, key, s, done, &s->n_resumed, &fd, ctx);
        if (st == NB_OK && s->n_resumed)
            NB_INFO(ctx, "measure: %zu tensors from %s (an earlier run)", s->n_resumed, o->state_path);
    }
    nb_progress prog;
    uint64_t total = 0;
    for (size_t i = 0; i < m->n_tensors; i++) total += m->tensors[i].nbytes;
    nb_progress_begin(&prog, ctx, "measure", total);
    for (size_t i = 0; i < m->n_tensors && st == NB_OK; i++) {
        const nb_tensor *t = &m->tensors[i];
        nb_sens_tensor *e = &s->tensors[i];
        if (e->planned && !done[i]) {
            st = measure_tensor(m, i, o, n_used, e, ctx);
            if (st == NB_OK && fd >= 0) st = nb_sens_state_append(fd, o->state_path, i, e, ctx);
        }
        nb_progress_add(&prog, t->nbytes, t->name);
    }
    nb_progress_end(&prog);
    if (fd >= 0) close(fd);
    free(done);
    s->seconds = nb_now() - t0;
    return st;
}
