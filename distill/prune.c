/* distill/prune.c — MoE expert pruning (see distill/prune.h). */
#include "distill/prune.h"

#include "calib/imatrix.h"
#include "core/afile.h"
#include "core/checked.h"
#include "engine/tokenizer.h"
#include "formats/arch.h"
#include "formats/convert.h"
#include "formats/json_strict.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Same bound as the engine's (engine.c): no real model comes near it. */
#define PRUNE_MAX_EXPERT 4096
#define PRUNE_MAX_LAYER 65536

const char *nb_prune_criterion_name(nb_prune_criterion c) { return c == NB_PRUNE_REAP ? "reap" : "freq"; }

bool nb_prune_criterion_from_name(const char *s, nb_prune_criterion *out) {
    if (!s) return false;
    if (!strcmp(s, "freq") || !strcmp(s, "frequency")) { *out = NB_PRUNE_FREQ; return true; }
    if (!strcmp(s, "reap")) { *out = NB_PRUNE_REAP; return true; }
    return false;
}

/* ---- metadata helpers ---------------------------------------------------------------- */

static bool arch_u64(const nb_kvset *kv, const char *arch, const char *key, uint64_t *out) {
    char k[160];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return nb_kv_get_u64(kv, k, out);
}

/* Set an integer key keeping the value type the source used (u32 stays u32). */
static nb_status set_count(nb_kvset *kv, const char *arch, const char *key, uint64_t x, nb_ctx *ctx) {
    char k[160];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    const nb_kv_value *old = nb_kv_get(kv, k);
    if (!old) return nb_kv_set_u32(kv, k, (uint32_t)x, ctx);
    nb_kv_value v = {.type = old->type};
    switch (old->type) {
    case NB_KV_U8: case NB_KV_U16: case NB_KV_U32: case NB_KV_U64: v.v.u = x; break;
    case NB_KV_I8: case NB_KV_I16: case NB_KV_I32: case NB_KV_I64: v.v.i = (int64_t)x; break;
    default: return nb_kv_set_u32(kv, k, (uint32_t)x, ctx); /* not an integer: write what llama.cpp writes */
    }
    return nb_kv_set(kv, k, &v, ctx);
}

/* A tensor with the expert on its last axis (formats/arch.h). */
static bool per_expert_name(const char *name, int *layer) { return nb_arch_is_per_expert(name, layer); }

static const char *shape_str(const nb_tensor *t, char *buf, size_t n) {
    int k = snprintf(buf, n, "{");
    for (uint32_t d = 0; d < t->n_dims && k > 0 && (size_t)k < n; d++)
        k += snprintf(buf + k, n - (size_t)k, "%s%lld", d ? ", " : "", (long long)t->ne[d]);
    if (k > 0 && (size_t)k < n) snprintf(buf + k, n - (size_t)k, "}");
    return buf;
}

/* ---- the plan --------------------------------------------------------------------------- */

void nb_prune_plan_free(nb_prune_plan *p) {
    if (!p) return;
    for (int i = 0; i < p->n_layer; i++) {
        free(p->layers[i].experts);
        free(p->layers[i].kept);
        free(p->layers[i].dropped);
    }
    free(p->layers);
    memset(p, 0, sizeof *p);
}

/* Sort key: score descending, then index ascending (the lower index wins a tie). */
typedef struct ranked {
    double score;
    int index;
} ranked;

static int cmp_ranked(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->score > y->score) return -1;
    if (x->score < y->score) return 1;
    return (x->index > y->index) - (x->index < y->index);
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Expert e's statistics and score from the routing layer l. */
static void expert_score(const nb_routing_layer *l, int e, nb_prune_criterion c, nb_prune_expert *x) {
    x->n_sel = l->n_sel[e];
    x->freq = l->n_sel[e] / l->n_tok;
    x->gate_mean = l->n_sel[e] > 0 ? l->gate_sum[e] / l->n_sel[e] : 0;
    x->reap = l->n_sel[e] > 0 ? l->norm_sum[e] / l->n_sel[e] : 0;
    x->score = c == NB_PRUNE_REAP ? x->reap : x->freq;
}

/* r[0..X): the experts by score descending (lower index first at a tie). */
static void rank_layer(const nb_routing_layer *l, int X, nb_prune_criterion c, nb_prune_expert *ex, ranked *r) {
    for (int e = 0; e < X; e++) {
        expert_score(l, e, c, &ex[e]);
        r[e].score = ex[e].score;
        r[e].index = e;
    }
    qsort(r, (size_t)X, sizeof *r, cmp_ranked);
}

bool nb_prune_rank(const nb_routing *rt, int layer, nb_prune_criterion c, int *order, int n_expert) {
    if (!rt || layer < 0 || layer >= rt->n_layer || n_expert < 1) return false;
    const nb_routing_layer *l = &rt->layers[layer];
    if (l->n_expert != n_expert || !(l->n_tok > 0)) return false;
    nb_prune_expert *ex = calloc((size_t)n_expert, sizeof *ex);
    ranked *r = calloc((size_t)n_expert, sizeof *r);
    if (ex && r) {
        rank_layer(l, n_expert, c, ex, r);
        for (int k = 0; k < n_expert; k++) order[k] = r[k].index;
    }
    bool ok = ex && r;
    free(ex);
    free(r);
    return ok;
}

static nb_status plan_layer(nb_prune_layer *pl, const nb_routing_layer *l, int X, int keep, nb_prune_criterion c,
                            nb_ctx *ctx) {
    pl->n_tok = l->n_tok;
    pl->experts = nb_calloc(ctx, (size_t)X, sizeof *pl->experts, "prune plan");
    pl->kept = nb_calloc(ctx, (size_t)keep, sizeof *pl->kept, "prune plan");
    pl->dropped = nb_calloc(ctx, (size_t)(X - keep ? X - keep : 1), sizeof *pl->dropped, "prune plan");
    ranked *r = nb_calloc(ctx, (size_t)X, sizeof *r, "prune plan");
    if (!pl->experts || !pl->kept || !pl->dropped || !r) { free(r); return NB_ERR_NOMEM; }
    rank_layer(l, X, c, pl->experts, r);
    for (int k = 0; k < X; k++) {
        if (k < keep) pl->kept[k] = r[k].index;
        else pl->dropped[k - keep] = r[k].index;
    }
    free(r);
    qsort(pl->kept, (size_t)keep, sizeof(int), cmp_int);
    qsort(pl->dropped, (size_t)(X - keep), sizeof(int), cmp_int);
    return NB_OK;
}

/* What needs only the model and the options: architecture, counts, keep, routers. */
static nb_status check_model(const nb_model *m, const nb_prune_opts *o, nb_prune_plan *plan, const nb_arch **arch_out,
                             uint64_t *n_block_out, nb_ctx *ctx) {
    if (!o) return nb_err(ctx, NB_ERR_INVALID, "prune: no options");
    const char *path = m->path;
    const char *arch = nb_kv_get_str(&m->kv, "general.architecture");
    NB_RETURN_IF(ctx, !arch || !*arch, NB_ERR_UNSUPPORTED,
                 "%s: no general.architecture: not a model nibble can prune", path);
    NB_RETURN_IF(ctx, strlen(arch) >= sizeof plan->arch, NB_ERR_FORMAT, "%s: general.architecture too long", path);
    snprintf(plan->arch, sizeof plan->arch, "%s", arch);
    uint64_t X = 0, U = 0, n_block = 0;
    bool has_x = arch_u64(&m->kv, arch, "expert_count", &X) && X > 0;
    const nb_arch *a = nb_arch_from_gguf(arch, has_x);
    if (!has_x || !a || !(a->flags & NB_ARCH_F_MOE))
        return nb_err(ctx, NB_ERR_UNSUPPORTED,
                      "%s: not a mixture-of-experts model (architecture '%s'%s): nothing to prune "
                      "(prune handles mixtral, qwen2moe and qwen3moe)",
                      path, arch, has_x ? ", not one nibble prunes" : ", no expert_count");
    NB_RETURN_IF(ctx, X > PRUNE_MAX_EXPERT, NB_ERR_RANGE, "%s: '%s.expert_count' = %llu is out of range", path, arch,
                 (unsigned long long)X);
    NB_RETURN_IF(ctx, !arch_u64(&m->kv, arch, "expert_used_count", &U) || U == 0 || U > X, NB_ERR_FORMAT,
                 "%s: '%s.expert_used_count' missing or not in 1..%llu", path, arch, (unsigned long long)X);
    NB_RETURN_IF(ctx, !arch_u64(&m->kv, arch, "block_count", &n_block) || n_block == 0 || n_block > PRUNE_MAX_LAYER,
                 NB_ERR_FORMAT, "%s: '%s.block_count' missing or out of range", path, arch);
    plan->n_expert = (int)X;
    plan->n_used = (int)U;
    plan->criterion = o->criterion;

    /* how many to keep */
    long keep = o->keep;
    if (keep == 0) {
        NB_RETURN_IF(ctx, !(o->keep_ratio > 0 && o->keep_ratio <= 1), NB_ERR_INVALID,
                     "prune: keep ratio %g is not in (0, 1]", o->keep_ratio);
        keep = (long)ceil(o->keep_ratio * (double)X - 1e-9);
        if (keep < 1) keep = 1;
    }
    NB_RETURN_IF(ctx, keep < 1, NB_ERR_INVALID, "prune: keep %ld experts: must be at least 1", keep);
    NB_RETURN_IF(ctx, keep > (long)X, NB_ERR_RANGE, "prune: cannot keep %ld experts: %s has only %llu per layer",
                 keep, path, (unsigned long long)X);
    if (keep < (long)U && !o->reduce_topk)
        return nb_err(ctx, NB_ERR_RANGE,
                      "prune: keeping %ld experts is fewer than expert_used_count = %llu (each token is routed to "
                      "%llu experts); keep at least %llu, or pass --reduce-topk to lower expert_used_count too",
                      keep, (unsigned long long)U, (unsigned long long)U, (unsigned long long)U);
    plan->n_keep = (int)keep;
    plan->n_used_new = keep < (long)U ? (int)keep : (int)U;

    /* MoE layers: those with a router */
    bool any = false;
    char name[NB_MAX_NAME + 1];
    for (uint64_t L = 0; L < n_block && !any; L++) {
        snprintf(name, sizeof name, "blk.%llu.ffn_gate_inp.weight", (unsigned long long)L);
        any = nb_model_find(m, name) != NULL;
    }
    NB_RETURN_IF(ctx, !any, NB_ERR_UNSUPPORTED,
                 "%s: no router tensor (blk.N.ffn_gate_inp.weight): not a mixture-of-experts model, nothing to prune",
                 path);
    *arch_out = a;
    *n_block_out = n_block;
    return NB_OK;
}

nb_status nb_prune_check_model(const nb_model *m, const nb_prune_opts *o, nb_ctx *ctx) {
    nb_prune_plan p = {0};
    const nb_arch *a;
    uint64_t n_block;
    return check_model(m, o, &p, &a, &n_block, ctx);
}

nb_status nb_prune_plan_build(const nb_model *m, const nb_routing *rt, const nb_prune_opts *o, nb_prune_plan *plan,
                              nb_ctx *ctx) {
    memset(plan, 0, sizeof *plan);
    const nb_arch *a = NULL;
    uint64_t n_block = 0;
    NB_TRY(check_model(m, o, plan, &a, &n_block, ctx));
    const char *path = m->path, *arch = plan->arch;
    const uint64_t X = (uint64_t)plan->n_expert;
    const int keep = plan->n_keep;
    char name[NB_MAX_NAME + 1];
    int n_moe = 0;
    for (uint64_t L = 0; L < n_block; L++) {
        snprintf(name, sizeof name, "blk.%llu.ffn_gate_inp.weight", (unsigned long long)L);
        if (nb_model_find(m, name)) n_moe++;
    }
    NB_RETURN_IF(ctx, !rt, NB_ERR_RANGE, "prune: no expert routing statistics");
    NB_RETURN_IF(ctx, rt->n_layer != (int)n_block, NB_ERR_RANGE,
                 "prune: the routing statistics are for a %d-layer model, %s has %llu layers (statistics of another "
                 "model?)",
                 rt->n_layer, path, (unsigned long long)n_block);
    plan->layers = nb_calloc(ctx, (size_t)n_moe, sizeof *plan->layers, "prune plan");
    if (!plan->layers) return NB_ERR_NOMEM;
    for (uint64_t L = 0; L < n_block; L++) {
        snprintf(name, sizeof name, "blk.%llu.ffn_gate_inp.weight", (unsigned long long)L);
        const nb_tensor *t = nb_model_find(m, name);
        if (!t) continue;
        char sh[96];
        NB_RETURN_IF(ctx, t->n_dims != 2 || t->ne[1] != (int64_t)X, NB_ERR_FORMAT,
                     "%s: tensor '%s': shape %s, expected {n_embd, %llu} (expert_count)", path, name,
                     shape_str(t, sh, sizeof sh), (unsigned long long)X);
        const nb_routing_layer *l = &rt->layers[L];
        NB_RETURN_IF(ctx, l->n_expert == 0, NB_ERR_RANGE,
                     "prune: the statistics have no routing data for MoE layer %llu (run `nibble calibrate` on this "
                     "model)",
                     (unsigned long long)L);
        NB_RETURN_IF(ctx, l->n_expert != (int)X, NB_ERR_RANGE,
                     "prune: layer %llu: routing statistics for %d experts, the model has %llu (statistics of another "
                     "model?)",
                     (unsigned long long)L, l->n_expert, (unsigned long long)X);
        NB_RETURN_IF(ctx, !(l->n_tok > 0) || !isfinite(l->n_tok), NB_ERR_RANGE,
                     "prune: layer %llu: the routing statistics hold no calibration token", (unsigned long long)L);
        nb_prune_layer *pl = &plan->layers[plan->n_layer++];
        pl->layer = (int)L;
        NB_TRY(plan_layer(pl, l, (int)X, keep, o->criterion, ctx));
        if (plan->ff_exp == 0) {
            snprintf(name, sizeof name, "blk.%llu.ffn_gate_exps.weight", (unsigned long long)L);
            const nb_tensor *g = nb_model_find(m, name);
            if (g && g->n_dims == 3 && g->ne[1] > 0 && g->ne[1] <= UINT32_MAX) plan->ff_exp = (uint32_t)g->ne[1];
        }
    }

    /* top-k renormalisation: the engine's default per architecture (llama.cpp
     * hard-codes it per graph), overridden by an expert_weights_norm key */
    char key[160];
    bool b;
    plan->already_normalized = a->norm_topk;
    snprintf(key, sizeof key, "%s.expert_weights_norm", arch);
    if (nb_kv_get_bool(&m->kv, key, &b)) plan->already_normalized = b;
    if (o->renormalize_topk && !plan->already_normalized) {
        plan->write_norm_key = true;
        /* a graph that never renormalises hard-codes that: llama.cpp ignores the key */
        if (!a->norm_topk)
            snprintf(plan->norm_warning, sizeof plan->norm_warning,
                     "--renormalize-topk: nibble's engine reads %s.expert_weights_norm, llama.cpp's %s "
                     "graph does not (it never renormalises): the file runs renormalised only in nibble",
                     a->gguf_arch, a->gguf_arch);
    }
    /* expert width: keep it explicit when expert_used_count changes and the
     * architecture would derive it from feed_forward_length / expert_used_count */
    uint64_t ffe = 0;
    if (plan->n_used_new != plan->n_used && !(a->flags & NB_ARCH_F_MIXTRAL_NAMES) &&
        !arch_u64(&m->kv, arch, "expert_feed_forward_length", &ffe)) {
        NB_RETURN_IF(ctx, plan->ff_exp == 0, NB_ERR_FORMAT,
                     "%s: cannot tell the expert width (no expert_feed_forward_length, no 3-D ffn_gate_exps)", path);
        plan->write_ff_exp_key = true;
    }
    return NB_OK;
}

nb_status nb_prune_load_stats(const char *path, nb_routing *rt, nb_ctx *ctx) {
    nb_imatrix im;
    memset(rt, 0, sizeof *rt);
    NB_TRY(nb_imatrix_read(path, &im, ctx));
    nb_status st = nb_routing_init(rt, 0, NULL, ctx);
    if (st == NB_OK) st = nb_routing_from_imatrix(&im, rt, ctx);
    if (st != NB_OK) nb_err_prefix(ctx, "%s: ", path);
    nb_imatrix_free(&im);
    if (st == NB_OK && rt->n_layer == 0)
        st = nb_err(ctx, NB_ERR_RANGE,
                    "%s: no expert routing statistics in this file (they are written by `nibble calibrate` on a MoE "
                    "model into its GGUF imatrix; llama.cpp's imatrix files and .dat files do not have them)",
                    path);
    return st;
}

/* ---- the streaming pass ------------------------------------------------------------- */

/* Per source tensor: index into plan->layers of its MoE layer when it is cut,
 * else -1. */
static nb_status classify(const nb_model *m, const nb_prune_plan *p, int *slot, nb_ctx *ctx) {
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *t = &m->tensors[i];
        int L;
        slot[i] = -1;
        if (!per_expert_name(t->name, &L)) continue;
        int k = -1;
        for (int j = 0; j < p->n_layer; j++)
            if (p->layers[j].layer == L) { k = j; break; }
        char sh[96];
        NB_RETURN_IF(ctx, k < 0, NB_ERR_FORMAT,
                     "%s: tensor '%s' is per-expert but layer %d has no router (blk.%d.ffn_gate_inp.weight)", m->path,
                     t->name, L, L);
        NB_RETURN_IF(ctx, t->n_dims < 1 || t->ne[t->n_dims - 1] != p->n_expert, NB_ERR_FORMAT,
                     "%s: tensor '%s': shape %s, expected the %d experts on the last axis", m->path, t->name,
                     shape_str(t, sh, sizeof sh), p->n_expert);
        const nb_type_traits *tr = nb_type_get(t->type);
        uint64_t per = nb_tensor_nelements(t) / (uint64_t)p->n_expert, bytes;
        /* a slice must be whole blocks, and the bytes must be the packed size */
        NB_RETURN_IF(ctx, !tr || per % tr->block_size != 0 ||
                              !nb_mul_u64(nb_tensor_nelements(t) / tr->block_size, tr->type_size, &bytes) ||
                              bytes != t->nbytes,
                     NB_ERR_UNSUPPORTED, "%s: tensor '%s' (%s, shape %s): expert slices are not whole blocks",
                     m->path, t->name, nb_type_name(t->type), shape_str(t, sh, sizeof sh));
        slot[i] = k;
    }
    return NB_OK;
}

static nb_status write_slices(nb_model *m, size_t i, const nb_prune_layer *pl, int keep, int X, nb_sink *sink,
                              nb_ctx *ctx) {
    const nb_tensor *t = &m->tensors[i];
    const void *bytes;
    void *owned;
    NB_TRY(nb_model_tensor_bytes(m, i, &bytes, &owned, ctx));
    const unsigned char *src = bytes;
    const uint64_t slice = t->nbytes / (uint64_t)X, piece = 16u << 20;
    nb_status st = NB_OK;
    for (int j = 0; j < keep && st == NB_OK; j++) {
        const unsigned char *s = src + (uint64_t)pl->kept[j] * slice;
        for (uint64_t off = 0; off < slice && st == NB_OK; off += piece)
            st = nb_sink_write(sink, s + off, slice - off < piece ? slice - off : piece, ctx);
    }
    free(owned);
    nb_model_release_tensor(m, i);
    return st;
}

typedef struct prune_writer {
    const nb_prune_plan *p;
    const int *slot; /* per tensor: layer slot of a sliced expert tensor, or -1 */
} prune_writer;

static nb_status write_pruned(void *user, nb_model *m, size_t i, nb_sink *sink, nb_ctx *ctx) {
    const prune_writer *w = user;
    if (w->slot[i] >= 0)
        return write_slices(m, i, &w->p->layers[w->slot[i]], w->p->n_keep, w->p->n_expert, sink, ctx);
    return nb_copy_tensor(m, i, m->tensors[i].type, sink, ctx);
}

nb_status nb_prune_write(nb_model *m, const nb_prune_plan *p, const char *dst, nb_prune_result *r, nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    double t0 = nb_now();
    NB_RETURN_IF(ctx, p->n_layer == 0 || p->n_keep < 1 || p->n_keep > p->n_expert, NB_ERR_INVALID,
                 "prune: empty or invalid plan");
    NB_RETURN_IF(ctx, nb_same_file(m->path, dst), NB_ERR_INVALID, "%s: output is the same file as the input", dst);
    int *slot = nb_calloc(ctx, m->n_tensors ? m->n_tensors : 1, sizeof *slot, "prune");
    if (!slot) return NB_ERR_NOMEM;
    nb_sink *sink = NULL;
    nb_status st;
    NB_CHECK_GOTO(st, classify(m, p, slot, ctx), out);
    NB_CHECK_GOTO(st, nb_sink_create(dst, NB_FMT_GGUF, &sink, ctx), out);
    NB_CHECK_GOTO(st, nb_kvset_copy(&sink->kv, &m->kv, ctx), out);
    NB_CHECK_GOTO(st, set_count(&sink->kv, p->arch, "expert_count", (uint64_t)p->n_keep, ctx), out);
    if (p->n_used_new != p->n_used)
        NB_CHECK_GOTO(st, set_count(&sink->kv, p->arch, "expert_used_count", (uint64_t)p->n_used_new, ctx), out);
    if (p->write_ff_exp_key)
        NB_CHECK_GOTO(st, set_count(&sink->kv, p->arch, "expert_feed_forward_length", p->ff_exp, ctx), out);
    if (p->write_norm_key) {
        char key[160];
        snprintf(key, sizeof key, "%s.expert_weights_norm", p->arch);
        NB_CHECK_GOTO(st, nb_kv_set_bool(&sink->kv, key, true, ctx), out);
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *t = &m->tensors[i];
        int64_t ne[NB_MAX_DIMS];
        memcpy(ne, t->ne, sizeof ne);
        if (slot[i] >= 0) {
            ne[t->n_dims - 1] = p->n_keep;
            r->n_sliced++;
        }
        NB_CHECK_GOTO(st, nb_sink_add_tensor(sink, t->name, t->type, t->n_dims, ne, ctx), out);
    }
    prune_writer pw = {p, slot};
    nb_convert_result cr;
    NB_CHECK_GOTO(st, nb_stream_tensors(m, sink, "prune", write_pruned, &pw, &cr, ctx), out);
    r->n_tensors = cr.n_tensors;
    r->bytes_in = cr.bytes_in;
    r->bytes_out = cr.bytes_out;
    memcpy(r->sha256, cr.sha256, 32);
out:
    nb_sink_free(sink);
    free(slot);
    r->seconds = nb_now() - t0;
    return st;
}

/* ---- evaluation ----------------------------------------------------------------------- */

void nb_prune_eval_free(nb_prune_eval *ev) {
    if (!ev) return;
    nb_ppl_result_free(&ev->base);
    nb_ppl_result_free(&ev->pruned);
    memset(ev, 0, sizeof *ev);
}

nb_status nb_prune_evaluate(const char *orig_path, const char *pruned_path, const nb_prune_eval_opts *o,
                            nb_prune_eval *out, nb_ctx *ctx) {
    memset(out, 0, sizeof *out);
    NB_RETURN_IF(ctx, !o || !o->text_path, NB_ERR_INVALID, "prune: no evaluation text");
    char *tmp = NULL;
    if (o->tmp_path) tmp = nb_strdup(ctx, o->tmp_path);
    else if ((tmp = nb_malloc(ctx, strlen(pruned_path) + 32, "path")) != NULL)
        sprintf(tmp, "%s.base-logprobs", pruned_path);
    if (!tmp) return NB_ERR_NOMEM;
    /* the original saves its log-probs, the pruned model (same vocabulary,
     * so the same tokens) is scored against them */
    nb_ppl_file_opts po = {.text_path = o->text_path};
    po.ppl.n_ctx = o->n_ctx > 0 ? o->n_ctx : 512;
    po.ppl.n_chunks = o->n_chunks;
    po.ppl.save_path = tmp;
    nb_status st;
    NB_CHECK_GOTO(st, nb_ppl_file(orig_path, &po, &out->base, ctx), out);
    po.ppl.save_path = NULL;
    po.ppl.kld_path = tmp;
    NB_CHECK_GOTO(st, nb_ppl_file(pruned_path, &po, &out->pruned, ctx), out);
out:
    if (st != NB_OK) nb_err_prefix(ctx, "evaluation on %s: ", o->text_path);
    remove(tmp);
    free(tmp);
    return st;
}

/* ---- report --------------------------------------------------------------------------- */

static void add_expert_list(cJSON *parent, const char *key, const nb_prune_layer *pl, const int *idx, int n) {
    cJSON *a = cJSON_AddArrayToObject(parent, key);
    for (int k = 0; a && k < n; k++) {
        const nb_prune_expert *x = &pl->experts[idx[k]];
        cJSON *o = cJSON_CreateObject();
        if (!o) return;
        cJSON_AddNumberToObject(o, "expert", idx[k]);
        cJSON_AddNumberToObject(o, "score", x->score);
        cJSON_AddNumberToObject(o, "tokens", x->n_sel);
        cJSON_AddNumberToObject(o, "freq", x->freq);
        cJSON_AddNumberToObject(o, "gate_mean", x->gate_mean);
        cJSON_AddNumberToObject(o, "reap", x->reap);
        cJSON_AddItemToArray(a, o);
    }
}

char *nb_prune_report_json(const nb_prune_plan *p, const char *model, const char *dst, const nb_prune_result *r,
                           const nb_prune_eval *ev) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON_AddStringToObject(j, "model", model ? model : "");
    if (dst) cJSON_AddStringToObject(j, "output", dst);
    cJSON_AddStringToObject(j, "architecture", p->arch);
    cJSON_AddStringToObject(j, "criterion", nb_prune_criterion_name(p->criterion));
    cJSON_AddNumberToObject(j, "expert_count", p->n_expert);
    cJSON_AddNumberToObject(j, "expert_count_new", p->n_keep);
    cJSON_AddNumberToObject(j, "expert_used_count", p->n_used);
    cJSON_AddNumberToObject(j, "expert_used_count_new", p->n_used_new);
    cJSON_AddBoolToObject(j, "renormalize_topk_written", p->write_norm_key);
    cJSON_AddBoolToObject(j, "topk_renormalized", p->already_normalized || p->write_norm_key);
    if (p->norm_warning[0]) cJSON_AddStringToObject(j, "warning", p->norm_warning);
    cJSON *layers = cJSON_AddArrayToObject(j, "layers");
    for (int i = 0; layers && i < p->n_layer; i++) {
        const nb_prune_layer *pl = &p->layers[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) break;
        cJSON_AddNumberToObject(o, "layer", pl->layer);
        cJSON_AddNumberToObject(o, "tokens", pl->n_tok);
        add_expert_list(o, "kept", pl, pl->kept, p->n_keep);
        add_expert_list(o, "dropped", pl, pl->dropped, p->n_expert - p->n_keep);
        cJSON_AddItemToArray(layers, o);
    }
    if (r) {
        char hex[65];
        for (int k = 0; k < 32; k++) snprintf(hex + 2 * k, 3, "%02x", r->sha256[k]);
        cJSON_AddNumberToObject(j, "tensors", (double)r->n_tensors);
        cJSON_AddNumberToObject(j, "tensors_sliced", (double)r->n_sliced);
        cJSON_AddNumberToObject(j, "bytes_in", (double)r->bytes_in);
        cJSON_AddNumberToObject(j, "bytes_out", (double)r->bytes_out);
        cJSON_AddNumberToObject(j, "seconds", r->seconds);
        cJSON_AddStringToObject(j, "sha256", hex);
    }
    if (ev) {
        cJSON *e = cJSON_AddObjectToObject(j, "eval");
        char *bs = nb_ppl_result_json(&ev->base), *ps = nb_ppl_result_json(&ev->pruned);
        cJSON *b = bs ? cJSON_Parse(bs) : NULL, *q = ps ? cJSON_Parse(ps) : NULL;
        free(bs);
        free(ps);
        if (e) {
            cJSON_AddNumberToObject(e, "ppl_original", ev->base.ppl);
            cJSON_AddNumberToObject(e, "ppl_original_err", ev->base.ppl_err);
            cJSON_AddNumberToObject(e, "ppl_pruned", ev->pruned.ppl);
            cJSON_AddNumberToObject(e, "ppl_pruned_err", ev->pruned.ppl_err);
            if (ev->pruned.has_kld) {
                cJSON_AddNumberToObject(e, "kld_mean", ev->pruned.kld.kld);
                cJSON_AddNumberToObject(e, "kld_mean_err", ev->pruned.kld.kld_err);
                cJSON_AddNumberToObject(e, "same_top", ev->pruned.kld.same_top);
            }
            if (b) cJSON_AddItemToObject(e, "original", b), b = NULL;
            if (q) cJSON_AddItemToObject(e, "pruned", q), q = NULL;
        }
        cJSON_Delete(b);
        cJSON_Delete(q);
    }
    char *s = nb_json_print(j, false);
    cJSON_Delete(j);
    return s;
}
