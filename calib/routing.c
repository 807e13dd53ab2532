/* calib/routing.c — MoE expert routing statistics (see calib/routing.h). */
#include "calib/routing.h"

#include "kernels/cpu/matmul.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void layer_free(nb_routing_layer *l) {
    free(l->n_sel); free(l->gate_sum); free(l->norm_sum); free(l->sel); free(l->selw);
    memset(l, 0, sizeof *l);
}

nb_status nb_routing_init(nb_routing *r, int n_layer, nb_model *model, nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    if (n_layer < 0 || n_layer > 1 << 16) return nb_err(ctx, NB_ERR_RANGE, "routing: %d layers", n_layer);
    r->layers = nb_calloc(ctx, (size_t)(n_layer ? n_layer : 1), sizeof *r->layers, "routing layers");
    if (!r->layers) return NB_ERR_NOMEM;
    r->n_layer = n_layer;
    r->model = model;
    r->n_threads = nb_ctx_threads(ctx);
    return NB_OK;
}

void nb_routing_free(nb_routing *r) {
    if (!r) return;
    for (int i = 0; i < r->n_layer; i++) layer_free(&r->layers[i]);
    free(r->layers);
    free(r->ybuf);
    free(r->xbuf);
    memset(r, 0, sizeof *r);
}

static nb_status layer_alloc(nb_routing_layer *l, int n_expert, nb_ctx *ctx) {
    if (l->n_expert == n_expert) return NB_OK;
    if (l->n_expert) return nb_err(ctx, NB_ERR_RANGE, "routing: expert count changed (%d vs %d)", l->n_expert, n_expert);
    l->n_sel = nb_calloc(ctx, (size_t)n_expert, sizeof(double), "routing");
    l->gate_sum = nb_calloc(ctx, (size_t)n_expert, sizeof(double), "routing");
    l->norm_sum = nb_calloc(ctx, (size_t)n_expert, sizeof(double), "routing");
    if (!l->n_sel || !l->gate_sum || !l->norm_sum) return NB_ERR_NOMEM;
    l->n_expert = n_expert;
    return NB_OK;
}

void nb_routing_on_route(nb_routing *r, int layer, const int32_t *experts, const float *weights, int64_t n_tok,
                         int n_used, int n_expert, nb_ctx *ctx) {
    if (r->err != NB_OK) return;
    if (layer < 0 || layer >= r->n_layer || n_expert <= 0 || n_used <= 0) {
        r->err = nb_err(ctx, NB_ERR_RANGE, "routing: layer %d of %d (%d experts)", layer, r->n_layer, n_expert);
        return;
    }
    nb_routing_layer *l = &r->layers[layer];
    if ((r->err = layer_alloc(l, n_expert, ctx)) != NB_OK) return;
    size_t n = (size_t)n_tok * (size_t)n_used;
    int32_t *s = nb_realloc(NULL, l->sel, (n ? n : 1) * sizeof *s, "routing");
    if (s) l->sel = s;
    float *w = nb_realloc(NULL, l->selw, (n ? n : 1) * sizeof *w, "routing");
    if (w) l->selw = w;
    if (!s || !w) { r->err = nb_err(ctx, NB_ERR_NOMEM, "routing: out of memory"); return; }
    memcpy(l->sel, experts, n * sizeof *s);
    memcpy(l->selw, weights, n * sizeof *w);
    l->sel_tok = n_tok;
    l->n_used = n_used;
    for (size_t k = 0; k < n; k++) {
        int e = experts[k];
        if (e < 0 || e >= n_expert) {
            r->err = nb_err(ctx, NB_ERR_RANGE, "routing: layer %d: expert id %d of %d", layer, e, n_expert);
            return;
        }
        l->n_sel[e] += 1;
        l->gate_sum[e] += weights[k];
    }
    l->n_tok += (double)n_tok;
}

void nb_routing_on_matmul(nb_routing *r, const char *name, int expert, const float *x, int64_t n_tok, int64_t n_in,
                          nb_ctx *ctx) {
    int layer, used = 0;
    if (r->err != NB_OK || !r->model || expert < 0) return;
    if (sscanf(name, "blk.%d.ffn_down_exps.weight%n", &layer, &used) != 1 || name[used] != 0) return;
    if (layer < 0 || layer >= r->n_layer) return;
    nb_routing_layer *l = &r->layers[layer];
    const nb_tensor *t = nb_model_find(r->model, name);
    if (!l->n_expert || !t || !t->data || t->n_dims < 3 || t->ne[0] != n_in || expert >= t->ne[2]) return;
    const int64_t n_out = t->ne[1];
    if (r->all_experts) { /* every token's row: keep those whose route chose `expert`, in order */
        if (n_tok != l->sel_tok) {
            r->err = nb_err(ctx, NB_ERR_INTERNAL, "routing: %s expert %d: %lld rows for %lld routed tokens", name,
                            expert, (long long)n_tok, (long long)l->sel_tok);
            return;
        }
        size_t want = (size_t)(n_tok * n_in);
        if (want > r->xbuf_cap) {
            float *b = realloc(r->xbuf, want * sizeof *b);
            if (!b) { r->err = nb_err(ctx, NB_ERR_NOMEM, "routing: out of memory"); return; }
            r->xbuf = b;
            r->xbuf_cap = want;
        }
        int64_t c = 0;
        for (int64_t tk = 0; tk < n_tok; tk++)
            for (int k = 0; k < l->n_used; k++)
                if (l->sel[tk * l->n_used + k] == expert)
                    memcpy(r->xbuf + (c++) * n_in, x + tk * n_in, (size_t)n_in * sizeof(float));
        if (!c) return;
        x = r->xbuf;
        n_tok = c;
    }
    size_t need = (size_t)(n_tok * n_out);
    if (need > r->ybuf_cap) {
        float *b = nb_realloc(NULL, r->ybuf, need * sizeof *b, "routing");
        if (!b) { r->err = nb_err(ctx, NB_ERR_NOMEM, "routing: out of memory"); return; }
        r->ybuf = b;
        r->ybuf_cap = need;
    }
    const unsigned char *w = (const unsigned char *)t->data + t->nbytes / (uint64_t)t->ne[2] * (uint64_t)expert;
    nb_status st = nb_matmul(t->type, w, n_out, n_in, x, n_tok, r->ybuf, r->n_threads, ctx);
    if (st != NB_OK) { r->err = st; return; }
    /* rows are the tokens that chose `expert`, ascending, in the order of the last route */
    int64_t row = 0;
    for (int64_t tk = 0; tk < l->sel_tok && row < n_tok; tk++)
        for (int k = 0; k < l->n_used && row < n_tok; k++) {
            if (l->sel[tk * l->n_used + k] != expert) continue;
            const float *y = r->ybuf + row * n_out;
            double s = 0;
            for (int64_t j = 0; j < n_out; j++) s += (double)y[j] * y[j];
            l->norm_sum[expert] += (double)l->selw[tk * l->n_used + k] * sqrt(s);
            row++;
        }
    if (row != n_tok)
        r->err = nb_err(ctx, NB_ERR_INTERNAL, "routing: %s expert %d: %lld rows, the route chose it %lld times", name,
                        expert, (long long)n_tok, (long long)row);
}

bool nb_routing_expert(const nb_routing *r, int layer, int expert, nb_expert_stats *out) {
    if (layer < 0 || layer >= r->n_layer) return false;
    const nb_routing_layer *l = &r->layers[layer];
    if (expert < 0 || expert >= l->n_expert) return false;
    out->n_sel = l->n_sel[expert];
    out->freq = l->n_tok > 0 ? l->n_sel[expert] / l->n_tok : 0;
    out->gate_mean = l->n_sel[expert] > 0 ? l->gate_sum[expert] / l->n_sel[expert] : 0;
    out->out_norm_mean = l->n_sel[expert] > 0 ? l->norm_sum[expert] / l->n_sel[expert] : 0;
    return true;
}

nb_status nb_routing_to_imatrix(const nb_routing *r, nb_imatrix *im, nb_ctx *ctx) {
    char name[64];
    for (int L = 0; L < r->n_layer; L++) {
        const nb_routing_layer *l = &r->layers[L];
        if (!l->n_expert) continue;
        const int X = l->n_expert;
        float *d = nb_malloc(ctx, (size_t)X * 4 * sizeof(float), "routing");
        if (!d) return NB_ERR_NOMEM;
        for (int e = 0; e < X; e++) {
            d[e] = (float)l->n_sel[e];
            d[X + e] = (float)l->gate_sum[e];
            d[2 * X + e] = (float)l->norm_sum[e];
            d[3 * X + e] = (float)l->n_tok;
        }
        snprintf(name, sizeof name, "nibble.routing.blk.%d", L);
        nb_status st = nb_imatrix_set_extra(im, name, X, 4, d, ctx);
        free(d);
        NB_TRY(st);
    }
    return nb_kv_set_u32(&im->extra_kv, "nibble.routing.n_layer", (uint32_t)r->n_layer, ctx);
}

nb_status nb_routing_from_imatrix(const nb_imatrix *im, nb_routing *r, nb_ctx *ctx) {
    uint64_t nl = 0;
    nb_routing_free(r);
    if (!nb_kv_get_u64(&im->extra_kv, "nibble.routing.n_layer", &nl)) return nb_routing_init(r, 0, NULL, ctx);
    if (nl > 1 << 16) return nb_err(ctx, NB_ERR_FORMAT, "imatrix: nibble.routing.n_layer %llu", (unsigned long long)nl);
    NB_TRY(nb_routing_init(r, (int)nl, NULL, ctx));
    for (size_t i = 0; i < im->n_extra; i++) {
        const nb_imatrix_extra *x = &im->extra[i];
        int L, used = 0;
        if (sscanf(x->name, "nibble.routing.blk.%d%n", &L, &used) != 1 || x->name[used] != 0) continue;
        if (L < 0 || L >= r->n_layer || x->ne[1] != 4 || x->ne[0] <= 0 || x->ne[0] > 1 << 16)
            return nb_err(ctx, NB_ERR_FORMAT, "imatrix: tensor '%s': bad routing statistics shape or layer", x->name);
        nb_routing_layer *l = &r->layers[L];
        const int X = (int)x->ne[0];
        NB_TRY(layer_alloc(l, X, ctx));
        for (int e = 0; e < X; e++) {
            if (!(x->data[e] >= 0) || !(x->data[X + e] >= 0) || !(x->data[2 * X + e] >= 0))
                return nb_err(ctx, NB_ERR_FORMAT, "imatrix: tensor '%s': expert %d: negative or NaN statistics", x->name, e);
            l->n_sel[e] = x->data[e];
            l->gate_sum[e] = x->data[X + e];
            l->norm_sum[e] = x->data[2 * X + e];
        }
        l->n_tok = x->data[3 * X];
    }
    return NB_OK;
}
