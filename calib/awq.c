/* calib/awq.c — AWQ's scale search (see calib/awq.h). */
#include "calib/awq.h"

#include "calib/linalg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Scales for one alpha: μ^α normalised by sqrt(max · min); μ floored at 1e-4
 * (of its mean) so silent channels do not give zero scales. */
void nb_awq_scales(const double *mu, int64_t n, double alpha, float *s) {
    double mean = 0;
    for (int64_t j = 0; j < n; j++) mean += mu[j];
    mean = mean > 0 ? mean / (double)n : 1;
    double mx = 0, mn = INFINITY;
    for (int64_t j = 0; j < n; j++) {
        double m = mu[j] > 1e-4 * mean ? mu[j] : 1e-4 * mean;
        double v = alpha == 0 ? 1.0 : pow(m, alpha);
        s[j] = (float)v;
        mx = v > mx ? v : mx;
        mn = v < mn ? v : mn;
    }
    const double norm = sqrt(mx * mn);
    for (int64_t j = 0; j < n; j++) s[j] = alpha == 0 ? 1.0f : (float)((double)s[j] / norm);
}

/* Output error of one layer's sampled rows (ws: nr x n) with scales s. */
static bool layer_err(const nb_type_traits *tr, const float *ws, int64_t nr, int64_t n, const float *s,
                      const float *imp, const double *H, float *buf, unsigned char *q, double *d, double *rq,
                      int nt, double *out) {
    for (int64_t r = 0; r < nr; r++)
        for (int64_t j = 0; j < n; j++) buf[r * n + j] = ws[r * n + j] * s[j];
    uint64_t rb = (uint64_t)(n / tr->block_size) * tr->type_size;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < nr; r++) tr->quantize(buf + r * n, q + (uint64_t)r * rb, 1, n, imp);
    for (int64_t r = 0; r < nr; r++) tr->to_float(q + (uint64_t)r * rb, buf + r * n, n);
    for (int64_t r = 0; r < nr; r++)
        for (int64_t j = 0; j < n; j++) d[r * n + j] = (double)ws[r * n + j] - (double)buf[r * n + j] / (double)s[j];
    if (!nb_linalg_row_quad(d, nr, n, H, rq, nt)) return false;
    double e = 0;
    for (int64_t r = 0; r < nr; r++) e += rq[r] / 2;
    *out = e;
    return true;
}

nb_status nb_awq_search(const double *H, const double *mu, int64_t n, const nb_awq_linear *lin, int n_lin,
                        const float *imp, const nb_awq_opts *o, float *s, nb_awq_result *r, const char *name,
                        nb_ctx *ctx) {
    static const nb_awq_opts defaults = {0};
    if (!o) o = &defaults;
    if (!name) name = "?";
    memset(r, 0, sizeof *r);
    const int G = o->n_grid > 0 ? o->n_grid : 20;
    const int64_t max_rows = o->max_rows > 0 ? o->max_rows : 512;
    NB_RETURN_IF(ctx, n <= 0 || n_lin <= 0, NB_ERR_RANGE, "awq: %s: empty group", name);
    for (int64_t j = 0; j < n; j++)
        NB_RETURN_IF(ctx, !isfinite(mu[j]) || mu[j] < 0, NB_ERR_RANGE, "awq: %s: input column %lld: mean |x| = %g",
                     name, (long long)j, mu[j]);
    int64_t cap = 0;
    for (int k = 0; k < n_lin; k++) {
        const nb_type_traits *tr = nb_type_get(lin[k].type);
        NB_RETURN_IF(ctx, !tr || !tr->quantize || !tr->to_float || n % tr->block_size || lin[k].rows <= 0,
                     NB_ERR_RANGE, "awq: %s: layer %d: %lld x %lld cannot be quantized to %s", name, k,
                     (long long)lin[k].rows, (long long)n, nb_type_name(lin[k].type));
        int64_t nr = lin[k].rows < max_rows ? lin[k].rows : max_rows;
        cap = nr > cap ? nr : cap;
    }
    const int nt = nb_ctx_threads(ctx);
    float **ws = nb_calloc(ctx, (size_t)n_lin, sizeof *ws, "awq rows");
    int64_t *nrs = nb_calloc(ctx, (size_t)n_lin, sizeof *nrs, "awq rows");
    float *buf = nb_malloc(ctx, (size_t)(cap * n) * sizeof(float), "awq buffer");
    unsigned char *q = nb_malloc(ctx, (size_t)(cap * n) * 4 + 64, "awq buffer"); /* >= any row's packed bytes */
    double *d = nb_malloc(ctx, (size_t)(cap * n) * sizeof(double), "awq buffer");
    double *rq = nb_malloc(ctx, (size_t)cap * sizeof(double), "awq buffer");
    float *sc = nb_malloc(ctx, (size_t)n * sizeof(float), "awq scales");
    float *imps = imp ? nb_malloc(ctx, (size_t)n * sizeof(float), "awq importance") : NULL;
    nb_status st = NB_OK;
    if (!ws || !nrs || !buf || !q || !d || !rq || !sc || (imp && !imps)) { st = NB_ERR_NOMEM; goto out; }
    for (int k = 0; k < n_lin && st == NB_OK; k++) { /* the sampled rows: evenly strided, fixed */
        const int64_t rows = lin[k].rows, nr = rows < max_rows ? rows : max_rows;
        nrs[k] = nr;
        ws[k] = nb_malloc(ctx, (size_t)(nr * n) * sizeof(float), "awq rows");
        if (!ws[k]) { st = NB_ERR_NOMEM; break; }
        for (int64_t i = 0; i < nr; i++) {
            const float *src = lin[k].w + (i * rows / nr) * n;
            for (int64_t j = 0; j < n; j++)
                if (!isfinite(src[j]))
                    NB_FAIL_GOTO(st, out, ctx, NB_ERR_RANGE, "awq: %s: layer %d row %lld column %lld is not finite", name,
                                 k, (long long)(i * rows / nr), (long long)j);
            memcpy(ws[k] + i * n, src, (size_t)n * sizeof(float));
        }
    }
    if (st != NB_OK) goto out;
    double best = INFINITY;
    for (int g = 0; g < G; g++) {
        const double alpha = (double)g / G;
        nb_awq_scales(mu, n, alpha, sc);
        if (imp)
            for (int64_t j = 0; j < n; j++) imps[j] = imp[j] / (sc[j] * sc[j]);
        double e = 0;
        for (int k = 0; k < n_lin; k++) {
            double ek;
            if (!layer_err(nb_type_get(lin[k].type), ws[k], nrs[k], n, sc, imps, H, buf, q, d, rq, nt, &ek))
                NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "awq: %s: out of memory", name);
            e += ek;
        }
        if (g == 0) r->err_plain = e;
        if (e < best) { /* strict: ties keep the smaller alpha */
            best = e;
            r->alpha = alpha;
            r->err = e;
            memcpy(s, sc, (size_t)n * sizeof(float));
        }
    }
out:
    if (ws)
        for (int k = 0; k < n_lin; k++) free(ws[k]);
    free(ws); free(nrs); free(buf); free(q); free(d); free(rq); free(sc); free(imps);
    return st;
}

static const nb_awq_group k_groups[] = {
    {"attn_norm", true, {"attn_q", "attn_k", "attn_v"}, 3, 3, NULL, {NULL}, false, NB_AWQ_UNIT_ATTN},
    {"ffn_norm", true, {"ffn_gate", "ffn_up"}, 2, 2, "ffn_gate_inp", {NULL}, false, NB_AWQ_UNIT_FFN},
    {"ffn_norm", true, {"ffn_gate_exps", "ffn_up_exps", "ffn_gate_shexp", "ffn_up_shexp"}, 4, 2, NULL,
     {"ffn_gate_inp", "ffn_gate_inp_shexp"}, false, NB_AWQ_UNIT_FFN},
    {"ffn_up", false, {"ffn_down"}, 1, 1, NULL, {NULL}, false, NB_AWQ_UNIT_FFN},
    {"ffn_up_shexp", false, {"ffn_down_shexp"}, 1, 1, NULL, {NULL}, false, NB_AWQ_UNIT_FFN},
    {"attn_v", false, {"attn_output"}, 1, 1, NULL, {NULL}, false, NB_AWQ_UNIT_ATTN},
    {"ffn_up_exps", false, {"ffn_down_exps"}, 1, 1, NULL, {NULL}, true, NB_AWQ_UNIT_FFN},
};

const nb_awq_group *nb_awq_groups(size_t *n) {
    *n = sizeof k_groups / sizeof k_groups[0];
    return k_groups;
}

static long find(const nb_model *m, int L, const char *base, const char *suffix) {
    char nm[NB_MAX_NAME + 1];
    snprintf(nm, sizeof nm, "blk.%d.%s.%s", L, base, suffix);
    const nb_tensor *t = nb_model_find(m, nm);
    return t ? (long)(t - m->tensors) : -1;
}

bool nb_awq_group_find(const nb_model *m, int L, const nb_awq_group *g, long *prev, long *lin, int *n_lin,
                       long *routers, int *n_routers) {
    *n_lin = *n_routers = 0;
    long pi = find(m, L, g->prev, "weight");
    if (pi < 0 || find(m, L, g->prev, "bias") >= 0) return false; /* a bias would need the scale too */
    if (g->skip_if && find(m, L, g->skip_if, "weight") >= 0) return false;
    const nb_tensor *pt = &m->tensors[pi];
    int64_t n = 0;
    if (g->prev_is_norm) {
        if (pt->n_dims != 1) return false;
        n = pt->ne[0];
    } else {
        if (pt->n_dims != (g->per_expert ? 3u : 2u)) return false;
        n = pt->ne[1]; /* the producer's outputs */
    }
    for (int k = 0; k < g->n_lin; k++) {
        long li = find(m, L, g->lin[k], "weight");
        if (li < 0) {
            if (k < g->n_need) return false;
            continue;
        }
        const nb_tensor *t = &m->tensors[li];
        bool stack = strstr(g->lin[k], "_exps") != NULL;
        if (t->n_dims != (stack ? 3u : 2u) || t->ne[0] != n || t->ne[1] <= 1) return false;
        if (g->per_expert && t->ne[2] != pt->ne[2]) return false;
        lin[(*n_lin)++] = li;
    }
    for (int k = 0; k < NB_AWQ_MAX_ROUTERS && g->router[k]; k++) {
        long ri = find(m, L, g->router[k], "weight");
        if (ri < 0) {
            if (k == 0) return false; /* the experts' router must be there */
            continue;
        }
        if (m->tensors[ri].ne[0] != n || m->tensors[ri].n_dims > 2) return false;
        routers[(*n_routers)++] = ri;
    }
    *prev = pi;
    return *n_lin > 0;
}

nb_status nb_awq_sample_rows(nb_model *m, size_t i, int64_t max_rows, float **out, int64_t *nr, nb_ctx *ctx) {
    *out = NULL;
    *nr = 0;
    const nb_tensor *t = &m->tensors[i];
    const int64_t n = t->ne[0], rows = (int64_t)(nb_tensor_nelements(t) / (uint64_t)n);
    const int64_t k = rows < max_rows ? rows : max_rows;
    const nb_type_traits *tr = nb_type_get(t->type);
    NB_RETURN_IF(ctx, !tr || !tr->to_f32, NB_ERR_UNSUPPORTED, "%s: tensor '%s': cannot read type %s", m->path,
                 t->name, nb_type_name(t->type));
    uint64_t rb = 0;
    NB_TRY(nb_type_row_bytes(t->type, (uint64_t)n, &rb, ctx, t->name));
    float *w = nb_malloc(ctx, (size_t)(k * n) * sizeof(float), t->name);
    if (!w) return NB_ERR_NOMEM;
    const void *data = NULL;
    void *owned = NULL;
    nb_status st = nb_model_tensor_bytes(m, i, &data, &owned, ctx);
    if (st != NB_OK) { free(w); return st; }
    for (int64_t r = 0; r < k; r++) /* nb_awq_search's rows: r * rows / k */
        tr->to_f32((const unsigned char *)data + (uint64_t)(r * rows / k) * rb, w + r * n, n);
    free(owned);
    *out = w;
    *nr = k;
    return NB_OK;
}
