/* calib/budget_method.c — GPTQ's error ratio and each method's predicted work
 * for the planner's mixed methods (see calib/budget_method.h). */
#include "calib/budget_method.h"

#include "calib/awq.h"
#include "calib/gptq.h"
#include "core/progress.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "formats/arch.h"
#include "formats/convert.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AWQ_ROWS 512.0 /* the driver's rows per layer in the scale search */
#define AWQ_GRID 20.0  /* alphas tried */

/* The block of "blk.N....", or -1. */
static long block_of(const char *name) {
    long b = -1;
    return sscanf(name, "blk.%ld.", &b) == 1 ? b : -1;
}

/* The group of a tensor: its name without "blk.N.". */
static const char *group_of(const char *name) {
    if (strncmp(name, "blk.", 4)) return name;
    const char *d = strchr(name + 4, '.');
    return d ? d + 1 : name;
}

/* A weight the sequential driver may run GPTQ on (calib/gptq_model.c's targets). */
static bool gptq_able(const nb_model *m, const nb_sens *s, size_t i) {
    const nb_tensor *t = &m->tensors[i];
    return s->tensors[i].planned && block_of(t->name) >= 0 && t->n_dims >= 2 && t->ne[1] > 1 &&
           !strstr(t->name, "ffn_gate_inp");
}

typedef struct collector {
    const nb_model *m;
    const nb_sens *s;
    long layer;
    nb_hessian *h;  /* [n_tensors]: allocated for the measured block's weights */
    double **abs_sum; /* [n_tensors]: Σ|x| per input column (AWQ's statistics), with h */
    nb_ctx *ctx;
    nb_status err;
} collector;

static void on_matmul(void *user, const char *name, int expert, const float *x, int64_t n_tok, int64_t n_in) {
    collector *c = user;
    (void)expert; /* experts pooled */
    if (c->err != NB_OK || n_tok <= 0 || block_of(name) != c->layer) return;
    for (size_t i = 0; i < c->m->n_tensors; i++) {
        if (strcmp(c->m->tensors[i].name, name) || !gptq_able(c->m, c->s, i)) continue;
        if (c->h[i].n != n_in) {
            c->err = nb_err(c->ctx, NB_ERR_INTERNAL, "methods: tensor '%s': unexpected input width %lld", name,
                            (long long)n_in);
            return;
        }
        c->err = nb_hessian_add(&c->h[i], x, n_tok, name, c->ctx);
        for (int64_t t = 0; c->err == NB_OK && t < n_tok; t++)
            for (int64_t j = 0; j < n_in; j++) c->abs_sum[i][j] += fabs((double)x[t * n_in + j]);
        return;
    }
}

/* Σ_rows d H dᵀ with d = x - y (n_rows x n). */
static double quad(const float *x, const float *y, int64_t n_rows, int64_t n, const double *H) {
    double tot = 0;
    double *d = malloc((size_t)n * sizeof *d);
    if (!d) return NAN;
    for (int64_t r = 0; r < n_rows; r++) {
        for (int64_t j = 0; j < n; j++) d[j] = (double)x[r * n + j] - (double)y[r * n + j];
        for (int64_t a = 0; a < n; a++) {
            double acc = 0;
            for (int64_t b = 0; b < n; b++) acc += H[a * n + b] * d[b];
            tot += d[a] * acc;
        }
    }
    free(d);
    return tot;
}

/* The types' scale-search importance from H's diagonal: Σx²/n, floored as the GPTQ driver floors it. */
static void diag_imp(const double *H, int64_t n, float *imp) {
    double mean = 0;
    for (int64_t j = 0; j < n; j++) mean += H[j * n + j] / 2;
    mean /= (double)n;
    for (int64_t j = 0; j < n; j++) {
        double v = H[j * n + j] / 2;
        imp[j] = (float)(v > mean * 1e-6 ? v : mean * 1e-6 + 1e-30);
    }
}

/* GPTQ / rounding error ratio of every frontier type of tensor i on sampled
 * rows, under its finished Hessian H (see the header). */
static nb_status measure_ratios(nb_model *m, const nb_sens_tensor *e, size_t i, const double *H, uint32_t want,
                                double *ratio, nb_ctx *ctx) {
    const nb_tensor *t = &m->tensors[i];
    int64_t n = t->ne[0], rows = (int64_t)(nb_tensor_nelements(t) / (uint64_t)n);
    int64_t k = (int64_t)want < rows ? (int64_t)want : rows;
    float *w = nb_malloc(ctx, (size_t)(k * n) * sizeof(float), t->name);
    float *y = nb_malloc(ctx, (size_t)(k * n) * sizeof(float), t->name);
    float *imp = nb_malloc(ctx, (size_t)n * sizeof(float), t->name);
    unsigned char *q = NULL;
    nb_gptq_factor f;
    memset(&f, 0, sizeof f);
    nb_status st = w && y && imp ? NB_OK : NB_ERR_NOMEM;
    const nb_type_traits *src_tr = nb_type_get(t->type);
    if (st == NB_OK && (!src_tr || !src_tr->to_f32))
        st = nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: tensor '%s': cannot read type %s", m->path, t->name,
                    nb_type_name(t->type));
    uint64_t in_rb = 0;
    const void *data = NULL;
    void *owned = NULL;
    if (st == NB_OK) st = nb_type_row_bytes(t->type, (uint64_t)n, &in_rb, ctx, t->name);
    if (st == NB_OK) st = nb_model_tensor_bytes(m, i, &data, &owned, ctx);
    nb_gptq_opts go = {.imp = imp};
    if (st == NB_OK) {
        for (int64_t r = 0; r < k; r++) { /* evenly spaced rows over every expert: only those are converted */
            int64_t row = (int64_t)(((double)r + 0.5) * (double)rows / (double)k);
            src_tr->to_f32((const unsigned char *)data + (uint64_t)row * in_rb, w + r * n, n);
        }
        free(owned);
        diag_imp(H, n, imp);
        st = nb_gptq_factor_make(H, n, &go, &f, t->name, ctx);
    }
    for (size_t c = 0; c < e->n_cands && st == NB_OK; c++) {
        nb_type ty = e->cands[c].type;
        const nb_type_traits *tr = nb_type_get(ty);
        uint64_t rb = 0;
        ratio[c] = 0;
        if (ty == t->type || !nb_gptq_supported(ty) || !tr || !tr->quantize || !tr->to_float ||
            nb_type_row_bytes(ty, (uint64_t)n, &rb, NULL, t->name) != NB_OK)
            continue;
        free(q);
        q = nb_malloc(ctx, (size_t)(rb * (uint64_t)k), t->name);
        if (!q) { st = NB_ERR_NOMEM; break; }
        tr->quantize(w, q, k, n, imp);
        tr->to_float(q, y, k * n);
        double er = quad(w, y, k, n, H);
        nb_gptq_result gr;
        char label[NB_MAX_NAME + 32];
        snprintf(label, sizeof label, "%s (%s, sampled rows)", t->name, nb_type_name(ty));
        st = nb_gptq_quantize_factored(ty, w, k, n, &f, &go, q, y, &gr, label, ctx);
        if (st != NB_OK) break;
        double eg = quad(w, y, k, n, H);
        if (!isfinite(er) || !isfinite(eg)) { st = nb_err(ctx, NB_ERR_NOMEM, "out of memory measuring '%s'", t->name); break; }
        ratio[c] = er > 0 ? eg / er : 0;
    }
    free(q);
    free(w);
    free(y);
    free(imp);
    nb_gptq_factor_free(&f);
    return st;
}

/* Does AWQ group g apply to block L as the driver would run it on a plan
 * marking the group awq: the tensors by name and shape (nb_awq_group_find),
 * every reader and a linear producer a weight the driver quantizes. */
static bool group_applies(const nb_model *m, const nb_sens *s, int L, const nb_awq_group *g, long *prev, long *lin,
                          int *n_lin) {
    long ri[NB_AWQ_MAX_ROUTERS];
    int nr;
    if (!nb_awq_group_find(m, L, g, prev, lin, n_lin, ri, &nr)) return false;
    for (int k = 0; k < *n_lin; k++)
        if (!gptq_able(m, s, (size_t)lin[k])) return false;
    return g->prev_is_norm || gptq_able(m, s, (size_t)*prev);
}

/* AWQ / rounding error ratio of every candidate type of group g's readers in
 * the measured block (see the header): one search per type over the sampled
 * rows of the readers that have it, under the first reader's finished
 * Hessian and Σ|x| (a stack's experts pooled). ratio: [n_tensors x cands]. */
static nb_status measure_awq(nb_model *m, const nb_sens *s, const collector *c, const nb_awq_group *g, uint32_t want,
                             double *ratio, nb_ctx *ctx) {
    long pi, li[NB_AWQ_MAX_LIN];
    int nl;
    if (!group_applies(m, s, (int)c->layer, g, &pi, li, &nl)) return NB_OK;
    const nb_hessian *h = &c->h[li[0]];
    if (!h->xtx || h->n_tok == 0) return NB_OK;
    const int64_t n = m->tensors[li[0]].ne[0];
    float *w[NB_AWQ_MAX_LIN] = {NULL}, *imp = nb_malloc(ctx, (size_t)n * sizeof(float), "AWQ importance");
    float *sc = nb_malloc(ctx, (size_t)n * sizeof(float), "AWQ scales");
    double *mu = nb_malloc(ctx, (size_t)n * sizeof(double), "AWQ statistics");
    int64_t rows[NB_AWQ_MAX_LIN] = {0};
    nb_status st = imp && sc && mu ? NB_OK : NB_ERR_NOMEM;
    if (st == NB_OK) {
        for (int64_t j = 0; j < n; j++) mu[j] = c->abs_sum[li[0]][j] / (double)h->n_tok;
        diag_imp(h->xtx, n, imp);
    }
    for (int k = 0; k < nl && st == NB_OK; k++) st = nb_awq_sample_rows(m, (size_t)li[k], want, &w[k], &rows[k], ctx);
    nb_type seen[NB_AWQ_MAX_LIN * NB_SENS_MAX_CANDS];
    size_t n_seen = 0;
    for (int k = 0; k < nl && st == NB_OK; k++) {
        const nb_sens_tensor *ek = &s->tensors[li[k]];
        for (size_t a = 0; a < ek->n_cands && st == NB_OK; a++) {
            nb_type ty = ek->cands[a].type;
            size_t q = 0;
            while (q < n_seen && seen[q] != ty) q++;
            if (q < n_seen) continue;
            seen[n_seen++] = ty;
            const nb_type_traits *tr = nb_type_get(ty);
            if (!tr || !tr->quantize || !tr->to_float || n % tr->block_size) continue;
            nb_awq_linear lin[NB_AWQ_MAX_LIN];
            int with[NB_AWQ_MAX_LIN], nw = 0;
            for (int r = 0; r < nl; r++) { /* the readers with this candidate (not their source type) */
                const nb_sens_tensor *er = &s->tensors[li[r]];
                for (size_t b = 0; b < er->n_cands; b++)
                    if (er->cands[b].type == ty && ty != m->tensors[li[r]].type) {
                        lin[nw] = (nb_awq_linear){w[r], rows[r], ty};
                        with[nw++] = (int)(r * NB_SENS_MAX_CANDS + (int)b);
                    }
            }
            if (!nw) continue;
            char label[NB_MAX_NAME + 64];
            snprintf(label, sizeof label, "blk.%ld %s -> %s (%s, sampled rows)", c->layer, g->prev, g->lin[0],
                     nb_type_name(ty));
            nb_awq_opts ao = {.max_rows = want};
            nb_awq_result ar;
            st = nb_awq_search(h->xtx, mu, n, lin, nw, imp, &ao, sc, &ar, label, ctx);
            double rr = ar.err_plain > 0 ? ar.err / ar.err_plain : 1;
            for (int q2 = 0; q2 < nw && st == NB_OK; q2++) {
                int r = with[q2] / NB_SENS_MAX_CANDS, b = with[q2] % NB_SENS_MAX_CANDS;
                ratio[(size_t)li[r] * NB_SENS_MAX_CANDS + (size_t)b] = rr > 1e-12 ? rr : 1e-12;
            }
        }
    }
    for (int k = 0; k < NB_AWQ_MAX_LIN; k++) free(w[k]);
    free(imp);
    free(sc);
    free(mu);
    return st;
}

/* AWQ's units, and its predicted seconds per reader (see the header). */
static void awq_units(const nb_model *m, nb_sens *s, uint64_t T, uint64_t n_used, uint64_t n_layer, bool all_experts) {
    size_t ng;
    const nb_awq_group *gs = nb_awq_groups(&ng);
    for (uint64_t L = 0; L < n_layer; L++)
        for (int u = NB_AWQ_UNIT_ATTN; u <= NB_AWQ_UNIT_FFN; u++) {
            long mem[4 * NB_AWQ_MAX_LIN * 2];
            size_t nm = 0, lead = SIZE_MAX;
            for (size_t g = 0; g < ng; g++) {
                long pi, li[NB_AWQ_MAX_LIN];
                int nl;
                if ((int)gs[g].unit != u || !group_applies(m, s, (int)L, &gs[g], &pi, li, &nl)) continue;
                for (int k = 0; k <= nl; k++) {
                    long i = k < nl ? li[k] : gs[g].prev_is_norm ? -1 : pi;
                    if (i < 0 || nm == sizeof mem / sizeof mem[0]) continue;
                    mem[nm++] = i;
                    lead = (size_t)i < lead ? (size_t)i : lead;
                    if (k == nl) continue;
                    /* a reader: the Hessian (per weight, as GPTQ's) and the scale search on its sampled rows */
                    const nb_tensor *t = &m->tensors[i];
                    nb_sens_tensor *e = &s->tensors[i];
                    double n_in = (double)t->ne[0], n_out = (double)t->ne[1];
                    double E = t->n_dims >= 3 ? (double)t->ne[2] : 1;
                    double t_in = (double)T * (E > 1 ? (all_experts ? E : (double)n_used) : 1);
                    double rs = gs[g].per_expert ? E * fmin(n_out, AWQ_ROWS) : fmin(n_out * E, AWQ_ROWS);
                    e->sec_awq = e->sec_round + 2 * t_in * n_in * n_in / NB_METHOD_GPTQ_FLOPS +
                                 AWQ_GRID * (2 * rs * n_in * n_in / NB_METHOD_GPTQ_FLOPS + rs * n_in * NB_METHOD_ROUND_SECONDS);
                }
            }
            for (size_t k = 0; k < nm; k++) s->tensors[mem[k]].awq_unit = lead + 1;
        }
}

/* Predicted seconds of both methods for every planned tensor (see the header). */
static void work(const nb_model *m, nb_sens *s, uint64_t T, uint64_t n_used, uint64_t n_layer, bool all_experts) {
    double *params = calloc(n_layer + 1, sizeof *params); /* per block, then cumulative */
    for (size_t i = 0; params && i < m->n_tensors; i++) {
        long b = block_of(m->tensors[i].name);
        if (b >= 0 && (uint64_t)b < n_layer) params[b] += (double)nb_tensor_nelements(&m->tensors[i]);
    }
    for (uint64_t b = 1; params && b < n_layer; b++) params[b] += params[b - 1];
    for (size_t i = 0; i < m->n_tensors; i++) {
        nb_sens_tensor *e = &s->tensors[i];
        if (!e->planned) continue;
        const nb_tensor *t = &m->tensors[i];
        double n_el = (double)nb_tensor_nelements(t), n_in = (double)t->ne[0];
        double E = t->n_dims >= 3 ? (double)t->ne[2] : 1, n_out = t->n_dims >= 2 ? (double)t->ne[1] : 1;
        e->sec_round = n_el * NB_METHOD_ROUND_SECONDS;
        e->sec_gptq = e->sec_awq = e->sec_round;
        e->awq_unit = 0;
        e->gptq_block = -1;
        e->sec_pass = 0;
        long b = block_of(t->name);
        if (!gptq_able(m, s, i) || !params || b < 0 || (uint64_t)b >= n_layer) continue;
        double t_in = (double)T * (E > 1 ? (all_experts ? E : (double)n_used) : 1);
        double flops = 2 * t_in * n_in * n_in + E * n_in * n_in * n_in / 3 + 2 * E * n_out * n_in * n_in;
        e->sec_gptq = e->sec_round + flops / NB_METHOD_GPTQ_FLOPS;
        e->gptq_block = (int)b;
        e->sec_pass = 2 * (double)T * params[b] / NB_METHOD_FWD_FLOPS;
    }
    free(params);
}

nb_status nb_method_measure(nb_model *m, nb_sens *s, const nb_method_opts *o, nb_method_info *info, nb_ctx *ctx) {
    memset(info, 0, sizeof *info);
    double t0 = nb_now();
    NB_RETURN_IF(ctx, !o->calib_path, NB_ERR_INVALID, "methods: no calibration text");
    NB_RETURN_IF(ctx, s->n_tensors != m->n_tensors, NB_ERR_INVALID, "methods: measured another model");
    uint64_t n_used = s->n_expert_used ? s->n_expert_used : 1, n_layer = 0;
    for (size_t i = 0; i < m->n_tensors; i++) { /* blocks: 1 + the largest blk.N */
        long b = block_of(m->tensors[i].name);
        if (b >= 0 && (uint64_t)b + 1 > n_layer) n_layer = (uint64_t)b + 1;
    }
    NB_RETURN_IF(ctx, n_layer == 0 || n_layer > 65536, NB_ERR_UNSUPPORTED,
                 "%s: no blocks: mixed methods need a model the engine runs", m->path);
    collector c = {.m = m, .s = s, .layer = (long)(n_layer / 2), .ctx = ctx, .err = NB_OK};
    info->layer = (int)c.layer;
    nb_tokenizer *tok = NULL;
    nb_corpus corpus = {0};
    nb_engine *e = NULL;
    double *ratio = NULL, *awq = NULL;
    c.h = nb_calloc(ctx, m->n_tensors ? m->n_tensors : 1, sizeof *c.h, "Hessians");
    c.abs_sum = nb_calloc(ctx, m->n_tensors ? m->n_tensors : 1, sizeof *c.abs_sum, "AWQ statistics");
    nb_status st = c.h && c.abs_sum ? NB_OK : NB_ERR_NOMEM;
    for (size_t i = 0; i < m->n_tensors && st == NB_OK; i++)
        if (block_of(m->tensors[i].name) == c.layer && gptq_able(m, s, i)) {
            st = nb_hessian_init(&c.h[i], m->tensors[i].ne[0], ctx);
            c.abs_sum[i] = nb_calloc(ctx, (size_t)m->tensors[i].ne[0], sizeof(double), "AWQ statistics");
            if (st == NB_OK && !c.abs_sum[i]) st = NB_ERR_NOMEM;
        }
    if (st == NB_OK) st = nb_tokenizer_create(&m->kv, &tok, ctx);
    nb_corpus_opts co = o->corpus;
    if (co.n_ctx <= 0) co.n_ctx = 512;
    const nb_tensor *te = nb_model_find(m, "token_embd.weight");
    int n_vocab = te && te->n_dims >= 2 && te->ne[1] < INT32_MAX ? (int)te->ne[1] : 0;
    if (st == NB_OK) st = nb_corpus_load(o->calib_path, tok, n_vocab, &co, &corpus, ctx);
    nb_engine_opts eo = {.n_ctx = co.n_ctx, .n_batch = co.n_ctx};
    size_t n_chunks = corpus.n_chunks / 4 > 2 ? corpus.n_chunks / 4 : corpus.n_chunks < 2 ? corpus.n_chunks : 2;
    if (st == NB_OK) st = nb_engine_open_model(m, &eo, &e, ctx);
    if (st == NB_OK) {
        nb_engine_set_all_experts(e, o->all_experts);
        nb_engine_hooks h = {on_matmul, NULL, &c};
        nb_engine_set_hooks(e, &h);
        nb_progress prog;
        nb_progress_begin(&prog, ctx, "methods", n_chunks);
        for (size_t k = 0; k < n_chunks && st == NB_OK; k++) {
            nb_engine_reset(e);
            st = nb_engine_eval(e, corpus.tokens + k * (size_t)corpus.n_ctx, corpus.n_ctx, 0, NULL, ctx);
            if (st == NB_OK) st = c.err;
            nb_progress_add(&prog, 1, NULL);
        }
        nb_progress_end(&prog);
    }
    nb_engine_free(e);
    info->n_tokens = (uint64_t)n_chunks * (uint64_t)corpus.n_ctx;
    /* the measured block's ratios, then every tensor of the same group */
    ratio = nb_calloc(ctx, (m->n_tensors ? m->n_tensors : 1) * NB_SENS_MAX_CANDS, sizeof *ratio, "ratios");
    awq = nb_calloc(ctx, (m->n_tensors ? m->n_tensors : 1) * NB_SENS_MAX_CANDS, sizeof *awq, "ratios");
    if (st == NB_OK && (!ratio || !awq)) st = NB_ERR_NOMEM;
    uint32_t want = o->sample_rows ? o->sample_rows : 64;
    for (size_t i = 0; i < m->n_tensors && st == NB_OK; i++) {
        if (!c.h[i].xtx || c.h[i].n_tok == 0) continue;
        nb_hessian_finish(&c.h[i], c.h[i].xtx);
        st = measure_ratios(m, &s->tensors[i], i, c.h[i].xtx, want, ratio + i * NB_SENS_MAX_CANDS, ctx);
        info->n_groups++;
    }
    size_t ng;
    const nb_awq_group *gs = nb_awq_groups(&ng);
    for (size_t g = 0; g < ng && st == NB_OK; g++) st = measure_awq(m, s, &c, &gs[g], want, awq, ctx);
    for (size_t i = 0; i < m->n_tensors; i++)
        if (c.h[i].xtx) nb_model_release_tensor(m, i);
    for (size_t i = 0; i < m->n_tensors && st == NB_OK; i++) {
        nb_sens_tensor *ei = &s->tensors[i];
        for (size_t k = 0; k < NB_SENS_MAX_CANDS; k++) ei->gptq_ratio[k] = ei->awq_ratio[k] = 0;
        if (!gptq_able(m, s, i)) continue;
        for (size_t j = 0; j < m->n_tensors; j++) {
            if (!c.h[j].xtx || c.h[j].n_tok == 0 || strcmp(group_of(m->tensors[i].name), group_of(m->tensors[j].name)))
                continue;
            const nb_sens_tensor *ej = &s->tensors[j];
            for (size_t a = 0; a < ei->n_cands; a++)
                for (size_t b = 0; b < ej->n_cands; b++)
                    if (ei->cands[a].type == ej->cands[b].type) {
                        ei->gptq_ratio[a] = ratio[j * NB_SENS_MAX_CANDS + b];
                        ei->awq_ratio[a] = awq[j * NB_SENS_MAX_CANDS + b];
                    }
            break;
        }
    }
    uint64_t T = (uint64_t)corpus.n_chunks * (uint64_t)corpus.n_ctx;
    if (st == NB_OK) work(m, s, T, n_used, n_layer, o->all_experts);
    if (st == NB_OK) awq_units(m, s, T, n_used, n_layer, o->all_experts);
    for (size_t i = 0; c.h && i < m->n_tensors; i++) nb_hessian_free(&c.h[i]);
    for (size_t i = 0; c.abs_sum && i < m->n_tensors; i++) free(c.abs_sum[i]);
    free(c.h);
    free(c.abs_sum);
    free(ratio);
    free(awq);
    nb_corpus_free(&corpus);
    nb_tokenizer_free(tok);
    info->seconds = nb_now() - t0;
    return st;
}
