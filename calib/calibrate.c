/* calib/calibrate.c — the calibration run (see calib/calibrate.h). */
#include "calib/calibrate.h"

#include "core/progress.h"
#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct collector {
    nb_imatrix *im;
    nb_routing *rt;
    const nb_model *m;
    bool process_output;
    nb_ctx *ctx;
    nb_status err;
} collector;

static void on_matmul(void *user, const char *name, int expert, const float *x, int64_t n_tok, int64_t n_in) {
    collector *c = user;
    if (c->err != NB_OK) return;
    nb_routing_on_matmul(c->rt, name, expert, x, n_tok, n_in, c->ctx);
    if (c->rt->err != NB_OK) { c->err = c->rt->err; return; }
    if (strncmp(name, "blk.", 4) && !(c->process_output && !strcmp(name, "output.weight"))) return;
    int64_t n_mat = 1;
    if (expert >= 0) {
        const nb_tensor *t = nb_model_find(c->m, name);
        n_mat = t && t->n_dims >= 3 ? t->ne[2] : 0;
        if (expert >= n_mat) {
            c->err = nb_err(c->ctx, NB_ERR_INTERNAL, "calibrate: tensor '%s': expert %d of %lld", name, expert,
                            (long long)n_mat);
            return;
        }
    }
    c->err = nb_imatrix_add(c->im, name, expert < 0 ? 0 : expert, n_mat, x, n_tok, n_in, c->ctx);
}

static void on_route(void *user, int layer, const int32_t *experts, const float *weights, int64_t n_tok, int n_used,
                     int n_expert) {
    collector *c = user;
    if (c->err != NB_OK) return;
    nb_routing_on_route(c->rt, layer, experts, weights, n_tok, n_used, n_expert, c->ctx);
    if (c->rt->err != NB_OK) c->err = c->rt->err;
}

int64_t nb_calib_report_experts(const nb_routing *rt, nb_ctx *ctx) {
    int64_t zero = 0;
    for (int L = 0; L < rt->n_layer; L++) {
        const nb_routing_layer *l = &rt->layers[L];
        if (!l->n_expert) continue;
        double mn = l->n_sel[0], mx = l->n_sel[0];
        int z = 0;
        for (int e = 0; e < l->n_expert; e++) {
            mn = l->n_sel[e] < mn ? l->n_sel[e] : mn;
            mx = l->n_sel[e] > mx ? l->n_sel[e] : mx;
            if (l->n_sel[e] <= 0) {
                z++;
                if (rt->all_experts)
                    NB_INFO(ctx, "layer %d: the router never chose expert %d (its statistics come from every token: "
                            "--all-experts)", L, e);
                else
                    NB_WARN(ctx, "layer %d: expert %d saw no calibration token (its imatrix weights fall back to 1; "
                            "--all-experts gives it data)", L, e);
            }
        }
        NB_INFO(ctx, "layer %d: %.0f tokens, tokens per expert min %.0f max %.0f, %d of %d experts without tokens", L,
                l->n_tok, mn, mx, z, l->n_expert);
        zero += z;
    }
    return zero;
}

int64_t nb_calib_report_expert_counts(const nb_imatrix *im, nb_ctx *ctx) {
    int64_t zero = 0;
    for (size_t i = 0; i < im->n; i++) {
        const nb_imatrix_entry *en = &im->e[i];
        if (en->n_mat <= 1 || en->n_counts != en->n_mat) continue;
        double mn = en->count[0], mx = en->count[0];
        int64_t z = 0;
        for (int64_t k = 0; k < en->n_mat; k++) {
            mn = en->count[k] < mn ? en->count[k] : mn;
            mx = en->count[k] > mx ? en->count[k] : mx;
            z += en->count[k] <= 0;
        }
        NB_INFO(ctx, "%s: tokens per expert min %.0f max %.0f, %lld of %lld experts without data", en->name, mn, mx,
                (long long)z, (long long)en->n_mat);
        zero += z;
    }
    return zero;
}

nb_status nb_calibrate(const char *model_path, const nb_calib_opts *o, nb_imatrix *im, nb_routing *rt,
                       nb_calib_result *res, nb_ctx *ctx) {
    nb_imatrix_init(im);
    memset(rt, 0, sizeof *rt);
    memset(res, 0, sizeof *res);
    if (!o || !o->calib_path) return nb_err(ctx, NB_ERR_INVALID, "calibrate: no calibration file");
    double t0 = nb_now();
    nb_model *m = NULL;
    nb_engine *e = NULL;
    nb_tokenizer *tok = NULL;
    nb_corpus corpus = {0};
    nb_corpus_opts co = o->corpus;
    if (co.n_ctx <= 0) co.n_ctx = 512;
    nb_status st;
    NB_CHECK_GOTO(st, nb_model_open(model_path, &m, ctx), out);
    nb_engine_opts eo = {.n_ctx = co.n_ctx, .n_batch = co.n_ctx};
    NB_CHECK_GOTO(st, nb_engine_open_model(m, &eo, &e, ctx), out);
    nb_engine_set_all_experts(e, o->all_experts);
    NB_CHECK_GOTO(st, nb_tokenizer_create(&m->kv, &tok, ctx), out);
    NB_CHECK_GOTO(st, nb_corpus_load(o->calib_path, tok, nb_engine_n_vocab(e), &co, &corpus, ctx), out);
    uint64_t n_layer = 0;
    const char *arch = nb_kv_get_str(&m->kv, "general.architecture");
    if (arch) {
        char key[128];
        snprintf(key, sizeof key, "%s.block_count", arch);
        nb_kv_get_u64(&m->kv, key, &n_layer);
    }
    NB_CHECK_GOTO(st, nb_routing_init(rt, (int)(n_layer < 65536 ? n_layer : 0), m, ctx), out);
    rt->all_experts = o->all_experts;
    NB_INFO(ctx, "calibrate: %zu chunks of %d tokens (%zu tokens in %s, %zu chunks available%s)", corpus.n_chunks,
            corpus.n_ctx, corpus.n_stream, o->calib_path, corpus.n_available,
            corpus.n_chunks < corpus.n_available ? ", seeded sample" : "");
    collector c = {im, rt, m, o->process_output, ctx, NB_OK};
    nb_engine_hooks h = {on_matmul, on_route, &c};
    nb_engine_set_hooks(e, &h);
    nb_progress prog;
    nb_progress_begin_unit(&prog, ctx, "calibrate", corpus.n_chunks * (uint64_t)corpus.n_ctx, "tokens");
    for (size_t k = 0; k < corpus.n_chunks; k++) {
        nb_engine_reset(e);
        st = nb_engine_eval(e, corpus.tokens + k * (size_t)corpus.n_ctx, corpus.n_ctx, 0, NULL, ctx);
        if (st == NB_OK && c.err != NB_OK) st = c.err;
        if (st != NB_OK) break;
        res->n_chunks++;
        res->n_tokens += (uint64_t)corpus.n_ctx;
        nb_progress_add(&prog, (uint64_t)corpus.n_ctx, NULL);
    }
    nb_progress_end(&prog);
    nb_engine_set_hooks(e, NULL);
    if (st != NB_OK) goto out;
    im->chunk_count = (uint32_t)res->n_chunks;
    im->chunk_size = (uint32_t)corpus.n_ctx;
    NB_CHECK_GOTO(st, nb_imatrix_add_dataset(im, o->dataset_name ? o->dataset_name : o->calib_path, ctx), out);
    NB_CHECK_GOTO(st, nb_routing_to_imatrix(rt, im, ctx), out);
    res->n_zero_experts = nb_calib_report_experts(rt, ctx);
    res->n_zero_data = nb_calib_report_expert_counts(im, ctx);
out:
    res->seconds = nb_now() - t0;
    rt->model = NULL; /* borrowed model is closed below */
    nb_corpus_free(&corpus);
    nb_tokenizer_free(tok);
    nb_engine_free(e);
    nb_model_close(m);
    return st;
}
