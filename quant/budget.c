/* quant/budget.c — step 2 of the size-budget planner: the allocation under a
 * budget, the table and the JSON totals (see quant/budget.h). */
#include "quant/budget.h"

#include "formats/arch.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* "5.50 GiB" (binary units: budgets are given that way). */
static const char *gib(double b, char *buf, size_t n) {
    static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int k = 0;
    while (b >= 1024.0 && k < 4) { b /= 1024.0; k++; }
    snprintf(buf, n, k ? "%.2f %s" : "%.0f %s", b, u[k]);
    return buf;
}

static uint64_t pad(uint64_t x, uint32_t a) { return a > 1 ? (x + a - 1) / a * a : x; }

/* One tensor's frontier in the budget's cost unit. */
typedef struct front {
    size_t n;
    uint64_t cost[NB_SENS_MAX_CANDS];
    double err[NB_SENS_MAX_CANDS];
    nb_type type[NB_SENS_MAX_CANDS];
    size_t hull[NB_SENS_MAX_CANDS]; /* indices into the frontier: its lower convex hull */
    size_t n_hull;
    size_t cur;                     /* chosen frontier index */
} front;

typedef struct step {
    size_t t, j;   /* tensor, hull step j -> j + 1 */
    double slope;  /* err saved per byte */
} step;

static int step_cmp(const void *a, const void *b) {
    const step *x = a, *y = b;
    if (x->slope != y->slope) return x->slope > y->slope ? -1 : 1;
    if (x->t != y->t) return x->t < y->t ? -1 : 1;
    return x->j < y->j ? -1 : x->j > y->j;
}

/* Frontier in cost (padded bytes may tie) and its lower convex hull, from
 * candidates in ascending bytes (errors need not descend: a pruned tensor's
 * kept slices may reorder them). */
static void build_front(const nb_sens_cand *cands, size_t n_cands, const double *err, const uint64_t *bytes,
                        bool padded, uint32_t al, front *f) {
    f->n = f->n_hull = f->cur = 0;
    for (size_t k = 0; k < n_cands; k++) {
        uint64_t c = padded ? pad(bytes[k], al) : bytes[k];
        double e = err[k];
        if (f->n && c == f->cost[f->n - 1]) {
            if (e < f->err[f->n - 1]) { f->err[f->n - 1] = e; f->type[f->n - 1] = cands[k].type; }
            continue;
        }
        if (f->n && e >= f->err[f->n - 1]) continue;
        f->cost[f->n] = c;
        f->err[f->n] = e;
        f->type[f->n] = cands[k].type;
        f->n++;
    }
    /* equal costs merged above may have left a later point no better than the one before */
    size_t w = 0;
    for (size_t k = 0; k < f->n; k++) {
        if (w && f->err[k] >= f->err[w - 1]) continue;
        f->cost[w] = f->cost[k];
        f->err[w] = f->err[k];
        f->type[w] = f->type[k];
        w++;
    }
    f->n = w;
    for (size_t k = 0; k < f->n; k++) {
        /* pop the last hull point while it lies on or above the chord */
        while (f->n_hull >= 2) {
            size_t a = f->hull[f->n_hull - 2], b = f->hull[f->n_hull - 1];
            double s_ab = (f->err[a] - f->err[b]) / (double)(f->cost[b] - f->cost[a]);
            double s_bk = (f->err[b] - f->err[k]) / (double)(f->cost[k] - f->cost[b]);
            if (s_ab > s_bk) break;
            f->n_hull--;
        }
        f->hull[f->n_hull++] = k;
    }
}

static const char *kind_flag(nb_budget_kind k) {
    return k == NB_BUDGET_FILE ? "--target-size" : k == NB_BUDGET_BPW ? "--target-bpw" : "--budget";
}

/* The planner's working state for one keep count. */
typedef struct alloc {
    const nb_model *m;
    const nb_sens *s;
    const nb_plan *p0;      /* the unpruned plan (F16 pure: kept tensors' types and bytes) */
    bool padded;
    size_t n;
    front *f;               /* [n] */
    step *steps;            /* [n x NB_SENS_MAX_CANDS] */
    bool *blocked;          /* [n] */
    size_t n_steps;
    uint64_t fixed, min_cost; /* bytes of the tensors not planned; Σ cheapest planned costs */
    double drop_loss;
    /* pruning */
    uint32_t n_expert;
    int *order;             /* [n_block x n_expert] ranking per MoE block (NULL: not loaded: sizes only) */
    bool *moe;              /* [n_block] the block has experts */
    bool *kept;             /* [n_expert] scratch */
    int n_block;
} alloc;

static void alloc_free(alloc *a) {
    free(a->f);
    free(a->steps);
    free(a->blocked);
    free(a->order);
    free(a->moe);
    free(a->kept);
}

/* Tensor i has one entry per expert on its last axis: its bytes scale with the keep count. */
static bool per_expert(const nb_model *m, size_t i, uint32_t n_expert, int *layer) {
    const nb_tensor *t = &m->tensors[i];
    int L;
    if (!n_expert || !nb_arch_is_per_expert(t->name, &L) || t->n_dims < 1 || t->ne[t->n_dims - 1] != n_expert)
        return false;
    if (layer) *layer = L;
    return true;
}

/* Fronts, steps and the fixed part for keep experts per layer (keep == n_expert: no pruning). */
static nb_status alloc_setup(alloc *a, uint32_t keep, nb_ctx *ctx) {
    const nb_sens *s = a->s;
    a->fixed = a->min_cost = 0;
    a->n_steps = 0;
    a->drop_loss = 0;
    bool prune = keep < a->n_expert;
    for (size_t i = 0; i < a->n; i++) {
        const nb_sens_tensor *t = &s->tensors[i];
        const nb_plan_tensor *pt = &a->p0->tensors[i];
        int L = -1;
        bool pe = prune && per_expert(a->m, i, a->n_expert, &L);
        a->blocked[i] = false;
        if (!t->planned) {
            uint64_t b = pe ? pt->bytes_out / a->n_expert * keep : pt->bytes_out;
            a->fixed += a->padded ? pad(b, s->alignment) : b;
            continue;
        }
        uint64_t bytes[NB_SENS_MAX_CANDS];
        double err[NB_SENS_MAX_CANDS];
        for (size_t k = 0; k < t->n_cands; k++) {
            bytes[k] = t->cands[k].bytes;
            err[k] = t->cands[k].err;
        }
        if (pe) {
            /* without a ranking (sizes only) every expert's share counts the same */
            bool ranked = a->order && L < a->n_block;
            NB_RETURN_IF(ctx, a->order && !ranked, NB_ERR_INTERNAL, "budget: tensor '%s': no ranking", pt->name);
            memset(a->kept, 0, a->n_expert * sizeof *a->kept);
            for (uint32_t e = 0; ranked && e < keep; e++) a->kept[a->order[(size_t)L * a->n_expert + e]] = true;
            for (size_t k = 0; k < t->n_cands; k++) {
                bytes[k] = t->cands[k].bytes / a->n_expert * keep;
                if (ranked && t->slice_err && t->n_slices == a->n_expert) {
                    err[k] = 0;
                    for (uint32_t e = 0; e < a->n_expert; e++)
                        if (a->kept[e]) err[k] += t->slice_err[k * t->n_slices + e];
                } else {
                    err[k] = t->cands[k].err / a->n_expert * keep;
                }
            }
            if (ranked && t->slice_drop && t->n_slices == a->n_expert)
                for (uint32_t e = 0; e < a->n_expert; e++)
                    if (!a->kept[e]) a->drop_loss += t->slice_drop[e];
        }
        front *f = &a->f[i];
        build_front(t->cands, t->n_cands, err, bytes, a->padded, s->alignment, f);
        a->min_cost += f->cost[0];
        for (size_t j = 0; j + 1 < f->n_hull; j++) {
            size_t x = f->hull[j], c = f->hull[j + 1];
            a->steps[a->n_steps++] = (step){i, j, (f->err[x] - f->err[c]) / (double)(f->cost[c] - f->cost[x])};
        }
    }
    return NB_OK;
}

/* The allocation (see budget.h) within `left` bytes beyond every cheapest
 * choice; returns Σ err of the chosen points. */
static double alloc_run(alloc *a, uint64_t left) {
    qsort(a->steps, a->n_steps, sizeof *a->steps, step_cmp);
    for (size_t k = 0; k < a->n_steps; k++) {
        front *ft = &a->f[a->steps[k].t];
        if (a->blocked[a->steps[k].t] || ft->cur != ft->hull[a->steps[k].j]) continue;
        uint64_t d = ft->cost[ft->hull[a->steps[k].j + 1]] - ft->cost[ft->cur];
        if (d <= left) {
            left -= d;
            ft->cur = ft->hull[a->steps[k].j + 1];
        } else {
            a->blocked[a->steps[k].t] = true;
        }
    }
    /* pass 2: what is left, tensor by tensor, the lowest error that fits */
    double loss = 0;
    for (size_t i = 0; i < a->n; i++) {
        front *ft = &a->f[i];
        if (!a->s->tensors[i].planned) continue;
        for (size_t k = ft->n; k-- > ft->cur + 1;) {
            uint64_t d = ft->cost[k] - ft->cost[ft->cur];
            if (d <= left) {
                left -= d;
                ft->cur = k;
                break;
            }
        }
        loss += ft->err[ft->cur];
    }
    return loss;
}

static bool fits(const nb_budget *b, uint64_t bytes, uint64_t limit, double n_el) {
    return b->kind == NB_BUDGET_BPW ? (double)bytes * 8.0 / n_el <= b->bpw : bytes <= limit;
}

/* The "does not fit" message: the smallest achievable value, and for a MoE
 * the most experts per layer that would fit (exact sizes). */
static nb_status too_small(alloc *a, const nb_budget *b, uint64_t extra, uint64_t smallest, uint64_t limit,
                           double n_el, nb_ctx *ctx) {
    char x[32], c[32], more[240] = "";
    const nb_model *m = a->m;
    if (b->kind != NB_BUDGET_BPW && a->n_expert > 1 && a->s->n_expert_used < a->n_expert) {
        for (uint32_t k = a->n_expert - 1; k >= a->s->n_expert_used && k >= 1; k--) {
            if (alloc_setup(a, k, NULL) != NB_OK) break;
            uint64_t est = extra + a->fixed + a->min_cost;
            if (fits(b, est, limit, n_el)) {
                snprintf(more, sizeof more, "; keeping %u of %u experts per layer would fit (smallest %s%s)", k,
                         a->n_expert, gib((double)est, x, sizeof x),
                         b->allow_prune ? "" : "; --allow-prune lets the planner prune");
                break;
            }
        }
    }
    char tail[96] = "";
    if (b->allow_prune && b->kind != NB_BUDGET_BPW && !more[0] && a->n_expert > 1 && a->s->n_expert_used >= 1 &&
        a->s->n_expert_used < a->n_expert && alloc_setup(a, a->s->n_expert_used, NULL) == NB_OK) {
        smallest = extra + a->fixed + a->min_cost;
        snprintf(tail, sizeof tail, ", keeping only %u of %u experts per layer", a->s->n_expert_used, a->n_expert);
    }
    if (b->kind == NB_BUDGET_BPW)
        return nb_err(ctx, NB_ERR_RANGE, "%s: --target-bpw %.3f is below the smallest achievable %.3f bpw (every "
                      "tensor at its cheapest type)%s", m->path, b->bpw, (double)smallest * 8.0 / n_el, more);
    return nb_err(ctx, NB_ERR_RANGE, "%s: %s %s is below the smallest achievable %s%s (every tensor at its cheapest "
                  "type%s)%s", m->path, kind_flag(b->kind), gib((double)b->bytes, x, sizeof x),
                  gib((double)smallest, c, sizeof c),
                  b->kind == NB_BUDGET_MEMORY ? " of weights, KV cache, compute and overhead" : " file", tail, more);
}

/* The experts' ranking of every MoE block (allow_prune). */
static nb_status load_ranking(alloc *a, const nb_budget *b, nb_ctx *ctx) {
    int nb = 0;
    for (size_t i = 0; i < a->n; i++) {
        int L;
        if (per_expert(a->m, i, a->n_expert, &L) && L + 1 > nb) nb = L + 1;
    }
    a->n_block = nb;
    a->order = nb_calloc(ctx, (size_t)(nb ? nb : 1) * a->n_expert, sizeof *a->order, "expert ranking");
    a->moe = nb_calloc(ctx, (size_t)(nb ? nb : 1), sizeof *a->moe, "expert ranking");
    if (!a->order || !a->moe) return NB_ERR_NOMEM;
    for (size_t i = 0; i < a->n; i++) {
        int L;
        if (!per_expert(a->m, i, a->n_expert, &L) || a->moe[L]) continue;
        a->moe[L] = true;
        if (!b->rank || !b->rank(b->rank_user, L, a->order + (size_t)L * a->n_expert, (int)a->n_expert))
            return nb_err(ctx, NB_ERR_RANGE, "%s: --allow-prune: no expert routing statistics for layer %d (an "
                          "imatrix from `nibble calibrate` on this model has them, or give --calib TEXT)", a->m->path, L);
    }
    return NB_OK;
}

/* The plan of the model pruned to keep experts per layer: a copy of the
 * tensor list with the per-expert axes cut (the model pruning would write). */
static nb_status pruned_plan(alloc *a, uint32_t keep, const nb_budget *b, nb_plan *p, nb_ctx *ctx) {
    const nb_model *m = a->m;
    nb_tensor *ts = nb_calloc(ctx, a->n ? a->n : 1, sizeof *ts, "pruned tensor list");
    if (!ts) return NB_ERR_NOMEM;
    memcpy(ts, m->tensors, a->n * sizeof *ts);
    for (size_t i = 0; i < a->n; i++)
        if (per_expert(m, i, a->n_expert, NULL)) {
            ts[i].nbytes = ts[i].nbytes / a->n_expert * keep;
            ts[i].ne[ts[i].n_dims - 1] = keep;
        }
    nb_model pm = *m;
    pm.tensors = ts;
    const nb_plan_opts po = {.mix = nb_mix_get(NB_MIX_F16), .rules = b->pins, .pure = true};
    nb_status st = nb_plan_make(&pm, &po, p, ctx);
    if (st == NB_OK) {
        nb_plan_prune *pr = &p->prune;
        pr->keep = keep;
        pr->n_expert = a->n_expert;
        snprintf(pr->criterion, sizeof pr->criterion, "%s", b->prune_criterion ? b->prune_criterion : "reap");
        memcpy(pr->tensors_sha256, p->tensors_sha256, 32);
        nb_plan_fingerprint(m, p->tensors_sha256);
        p->source_size = m->file_bytes;
        uint32_t nl = 0;
        for (int L = 0; L < a->n_block; L++) nl += a->moe[L];
        pr->layer = nb_calloc(ctx, nl ? nl : 1, sizeof *pr->layer, "prune plan");
        pr->kept = nb_calloc(ctx, (size_t)(nl ? nl : 1) * keep, sizeof *pr->kept, "prune plan");
        if (!pr->layer || !pr->kept) st = NB_ERR_NOMEM;
        for (int L = 0; L < a->n_block && st == NB_OK; L++) {
            const int *ord = a->order + (size_t)L * a->n_expert;
            if (!a->moe[L]) continue;
            memset(a->kept, 0, a->n_expert * sizeof *a->kept);
            for (uint32_t e = 0; e < keep; e++) a->kept[ord[e]] = true;
            int32_t *kl = pr->kept + (size_t)pr->n_layer * keep;
            uint32_t q = 0;
            for (uint32_t e = 0; e < a->n_expert; e++)
                if (a->kept[e]) kl[q++] = (int32_t)e;
            pr->layer[pr->n_layer++] = L;
        }
    }
    free(ts);
    return st;
}

/* Mixed methods: GPTQ for the tensors (expert stacks: the experts), or AWQ
 * for the units (a block's attention or FFN), where it saves the most
 * predicted loss per marginal predicted second (see the header), the others
 * imatrix rounding. O(n²) in the candidates. */
typedef struct gain {
    size_t t;            /* the tensor (AWQ: its unit's first) */
    bool awq;            /* AWQ on t's unit (else GPTQ on t) */
    int64_t slice;       /* expert of a stack (-1: the whole tensor) */
    double saved, extra; /* predicted loss saved; its own extra seconds */
    int block;           /* its block's passes (-1: none) */
    double pass;
    bool done, taken;
} gain;

/* AWQ's predicted error ratio of e at type ty (1: not measured, no gain). */
static double awq_ratio(const nb_sens_tensor *e, nb_type ty) {
    for (size_t k = 0; k < e->n_cands; k++)
        if (e->cands[k].type == ty && e->awq_ratio[k] > 0) return e->awq_ratio[k];
    return 1.0;
}

static nb_status choose_methods(const nb_sens *s, const nb_budget *b, nb_plan *p, nb_budget_result *r, nb_ctx *ctx) {
    size_t nt = p->n_tensors ? p->n_tensors : 1, cap = 0;
    for (size_t i = 0; i < p->n_tensors; i++) cap += s->tensors[i].n_slices > 1 ? s->tensors[i].n_slices : 1;
    cap += p->n_tensors; /* AWQ units */
    gain *g = nb_calloc(ctx, cap ? cap : 1, sizeof *g, "planner methods");
    bool *open = nb_calloc(ctx, nt, sizeof *open, "planner methods"); /* blocks whose passes are paid */
    bool *seen = nb_calloc(ctx, nt, sizeof *seen, "planner methods");
    unsigned char *unit = nb_calloc(ctx, nt, 1, "planner methods"); /* per unit lead: 1 AWQ taken, 2 a GPTQ member */
    if (!g || !open || !seen || !unit) { free(g); free(open); free(seen); free(unit); return NB_ERR_NOMEM; }
    size_t n = 0;
    r->methods = true;
    r->pred_loss_round = r->pred_loss;
    for (size_t i = 0; i < p->n_tensors; i++) {
        const nb_sens_tensor *e = &s->tensors[i];
        nb_plan_tensor *pt = &p->tensors[i];
        if (!e->planned || pt->why != NB_PLAN_BUDGET) continue;
        pt->method = NB_PLAN_METHOD_IMATRIX;
        r->sec_methods += e->sec_round;
        r->sec_all_round += e->sec_round;
        double ratio = 0;
        size_t f = 0;
        for (size_t k = 0; k < e->n_cands; k++)
            if (e->cands[k].type == pt->type) { ratio = e->gptq_ratio[k]; f = k; }
        double saved = pt->pred_err * (1.0 - ratio), extra = e->sec_gptq - e->sec_round;
        bool blk = e->gptq_block >= 0 && (size_t)e->gptq_block < nt;
        if (!(ratio > 0) || pt->type == pt->src_type || !(saved > 0) || !(extra + (blk ? e->sec_pass : 0) > 0)) continue;
        gain x = {i, false, -1, saved, extra > 0 ? extra : 0, blk ? e->gptq_block : -1, blk ? e->sec_pass : 0, false,
                  false};
        if (e->n_slices > 1 && e->slice_err && !p->prune.keep) { /* per expert: its routing-weighted error */
            for (uint32_t sl = 0; sl < e->n_slices; sl++) {
                g[n] = x;
                g[n].slice = sl;
                g[n].saved = e->slice_err[f * e->n_slices + sl] * (1.0 - ratio);
                g[n].extra = x.extra / e->n_slices;
                if (g[n].saved > 0) n++;
            }
        } else {
            g[n++] = x;
        }
        r->sec_all_gptq += x.extra;
        if (blk && !seen[e->gptq_block]) { seen[e->gptq_block] = true; r->sec_all_gptq += e->sec_pass; }
    }
    /* AWQ: one option per unit whose every tensor the planner chose (and converts) */
    for (size_t i = 0; i < p->n_tensors; i++) {
        const nb_sens_tensor *e = &s->tensors[i];
        if (e->awq_unit != i + 1) continue; /* not a unit's first tensor */
        gain x = {i, true, -1, 0, 0, -1, 0, false, false};
        bool ok = e->gptq_block >= 0 && (size_t)e->gptq_block < nt;
        for (size_t j = i; j < p->n_tensors && ok; j++) {
            const nb_sens_tensor *ej = &s->tensors[j];
            const nb_plan_tensor *pj = &p->tensors[j];
            if (ej->awq_unit != i + 1) continue;
            ok = ej->planned && pj->why == NB_PLAN_BUDGET && pj->type != pj->src_type && ej->gptq_block == e->gptq_block;
            x.saved += pj->pred_err * (1.0 - awq_ratio(ej, pj->type));
            x.extra += ej->sec_awq > ej->sec_round ? ej->sec_awq - ej->sec_round : 0;
        }
        if (!ok || !(x.saved > 0) || !(x.extra + e->sec_pass > 0)) continue;
        x.block = e->gptq_block;
        x.pass = e->sec_pass;
        g[n++] = x;
    }
    double spent = 0;
    for (;;) {
        size_t best = n;
        double bs = 0, bc = 1;
        for (size_t k = 0; k < n; k++) {
            if (g[k].done) continue;
            size_t u = g[k].awq ? g[k].t + 1 : s->tensors[g[k].t].awq_unit; /* GPTQ and AWQ exclude each other */
            if (u && unit[u - 1] == (g[k].awq ? 2 : 1)) continue;
            double c = g[k].extra + (g[k].block >= 0 && !open[g[k].block] ? g[k].pass : 0);
            if (b->method_seconds > 0 && spent + c > b->method_seconds) continue;
            if (b->method_seconds <= 0 && !(g[k].saved > b->method_lambda * c)) continue;
            /* saved / c descending without dividing (c > 0); ties: the first candidate */
            if (best == n || g[k].saved * bc > bs * c) { best = k; bs = g[k].saved; bc = c; }
        }
        if (best == n) break;
        gain *x = &g[best];
        x->done = x->taken = true;
        spent += bc;
        if (x->block >= 0) open[x->block] = true;
        if (x->awq) {
            unit[x->t] = 1;
            for (size_t j = x->t; j < p->n_tensors; j++) {
                if (s->tensors[j].awq_unit != x->t + 1) continue;
                nb_plan_tensor *pj = &p->tensors[j];
                double sv = pj->pred_err * (1.0 - awq_ratio(&s->tensors[j], pj->type));
                pj->method = NB_PLAN_METHOD_AWQ;
                pj->pred_err -= sv;
                r->pred_loss -= sv;
                r->n_awq++;
            }
            continue;
        }
        nb_plan_tensor *pt = &p->tensors[x->t];
        if (s->tensors[x->t].awq_unit) unit[s->tensors[x->t].awq_unit - 1] = 2;
        if (pt->method != NB_PLAN_METHOD_GPTQ) r->n_gptq++;
        pt->method = NB_PLAN_METHOD_GPTQ;
        pt->pred_err -= x->saved;
        r->pred_loss -= x->saved;
    }
    /* stacks with only some experts by GPTQ: their list */
    nb_status st = NB_OK;
    for (size_t k = 0; k < n && st == NB_OK; k++) {
        nb_plan_tensor *pt = &p->tensors[g[k].t];
        if (g[k].awq || g[k].slice < 0 || (k && g[k - 1].t == g[k].t) || pt->method != NB_PLAN_METHOD_GPTQ)
            continue; /* once */
        uint32_t ns = s->tensors[g[k].t].n_slices, cnt = 0;
        for (size_t q = k; q < n && g[q].t == g[k].t && !g[q].awq; q++) cnt += g[q].taken;
        if (cnt == ns) continue;
        pt->gptq_experts = nb_calloc(ctx, cnt, sizeof *pt->gptq_experts, "planner methods");
        if (!pt->gptq_experts) { st = NB_ERR_NOMEM; break; }
        for (size_t q = k; q < n && g[q].t == g[k].t && !g[q].awq; q++)
            if (g[q].taken) pt->gptq_experts[pt->n_gptq_experts++] = (uint32_t)g[q].slice;
    }
    r->sec_all_gptq += r->sec_all_round;
    r->sec_methods += spent;
    free(g);
    free(open);
    free(seen);
    free(unit);
    return st;
}

/* What budget b holds besides the tensors: the file's header, or the KV cache, compute and overhead
 * (mem filled) of a memory budget. */
static nb_status budget_extra(const nb_model *m, const nb_sens *s, const nb_budget *b, nb_mem_est *mem, uint64_t *extra,
                              nb_ctx *ctx) {
    *extra = 0;
    if (b->kind == NB_BUDGET_FILE) *extra = s->header_bytes;
    if (b->kind == NB_BUDGET_MEMORY) {
        NB_TRY(nb_mem_estimate(m, &b->mem, mem, ctx));
        *extra = mem->kv_bytes + mem->compute_bytes + mem->overhead_bytes;
    }
    return NB_OK;
}

nb_status nb_budget_planned_bpw(const nb_model *m, const nb_sens *s, const nb_budget *b, double *bpw, nb_ctx *ctx) {
    *bpw = 0;
    NB_RETURN_IF(ctx, s->n_tensors != m->n_tensors, NB_ERR_INVALID, "budget: measured another model");
    uint64_t extra = 0;
    nb_mem_est mem;
    NB_TRY(budget_extra(m, s, b, &mem, &extra, ctx));
    nb_plan p0;
    const nb_plan_opts po = {.mix = nb_mix_get(NB_MIX_F16), .rules = b->pins, .pure = true};
    NB_TRY(nb_plan_make(m, &po, &p0, ctx));
    double n_el = 0, planned_el = 0, fixed = 0;
    for (size_t i = 0; i < s->n_tensors; i++) {
        n_el += (double)p0.tensors[i].n_elements;
        if (s->tensors[i].planned) planned_el += (double)p0.tensors[i].n_elements;
        else fixed += (double)(b->kind == NB_BUDGET_BPW ? p0.tensors[i].bytes_out : pad(p0.tensors[i].bytes_out, s->alignment));
    }
    nb_plan_free(&p0);
    double limit = b->kind == NB_BUDGET_BPW ? b->bpw * n_el / 8.0 : (double)b->bytes;
    if (planned_el > 0 && limit > (double)extra + fixed) *bpw = (limit - (double)extra - fixed) * 8.0 / planned_el;
    return NB_OK;
}

nb_status nb_sens_pin(const nb_model *m, nb_sens *s, const nb_rules *pins, size_t *n_pinned, nb_ctx *ctx) {
    if (n_pinned) *n_pinned = 0;
    if (!pins || !pins->n) return NB_OK;
    NB_RETURN_IF(ctx, s->n_tensors != m->n_tensors, NB_ERR_INVALID, "budget: measured another model");
    nb_plan p0;
    const nb_plan_opts po = {.mix = nb_mix_get(NB_MIX_F16), .rules = pins, .pure = true};
    NB_TRY(nb_plan_make(m, &po, &p0, ctx));
    for (size_t i = 0; i < s->n_tensors; i++) {
        /* a rule's type, or its fallback when the type does not fit the row */
        bool pinned = s->tensors[i].planned && p0.tensors[i].why != NB_PLAN_BASE;
        if (!pinned) continue;
        s->tensors[i].planned = false;
        if (n_pinned) (*n_pinned)++;
    }
    nb_plan_free(&p0);
    return NB_OK;
}

nb_status nb_budget_plan(const nb_model *m, const nb_sens *s, const nb_budget *b, nb_plan *p, nb_budget_result *r,
                         nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    memset(p, 0, sizeof *p);
    p->file_type = -1;
    r->kind = b->kind;
    NB_RETURN_IF(ctx, s->n_tensors != m->n_tensors, NB_ERR_INVALID, "budget: measured another model");
    NB_RETURN_IF(ctx, b->kind == NB_BUDGET_BPW && !(b->bpw > 0 && b->bpw <= 64), NB_ERR_RANGE,
                 "--target-bpw %g: give a value in (0, 64]", b->bpw);
    uint64_t extra = 0; /* what the budget holds besides the tensors */
    NB_TRY(budget_extra(m, s, b, &r->mem, &extra, ctx));
    nb_plan p0;
    const nb_plan_opts po = {.mix = nb_mix_get(NB_MIX_F16), .rules = b->pins, .pure = true};
    NB_TRY(nb_plan_make(m, &po, &p0, ctx));

    size_t n = m->n_tensors;
    alloc a = {.m = m, .s = s, .p0 = &p0, .padded = b->kind != NB_BUDGET_BPW, .n = n, .n_expert = s->n_expert};
    a.f = nb_calloc(ctx, n ? n : 1, sizeof *a.f, "planner frontiers");
    a.kept = nb_calloc(ctx, s->n_expert ? s->n_expert : 1, sizeof *a.kept, "planner state");
    a.steps = nb_calloc(ctx, n * NB_SENS_MAX_CANDS + 1, sizeof *a.steps, "planner steps");
    a.blocked = nb_calloc(ctx, n ? n : 1, sizeof *a.blocked, "planner state");
    nb_status st = a.f && a.steps && a.blocked && a.kept ? NB_OK : NB_ERR_NOMEM;
    double n_el = 0;
    for (size_t i = 0; i < n && st == NB_OK; i++) {
        n_el += (double)p0.tensors[i].n_elements;
        if (s->tensors[i].planned != (p0.tensors[i].why == NB_PLAN_BASE))
            st = nb_err(ctx, NB_ERR_INTERNAL, "budget: tensor '%s': measured and planned sets differ", p0.tensors[i].name);
    }
    uint64_t limit = b->kind == NB_BUDGET_BPW ? (uint64_t)floor(b->bpw * n_el / 8.0) : b->bytes;
    r->limit_bytes = limit;
    uint32_t keep = s->n_expert;
    if (st == NB_OK) st = alloc_setup(&a, s->n_expert, ctx);
    bool prune = false;
    if (st == NB_OK && extra + a.fixed + a.min_cost > limit) {
        uint64_t smallest = extra + a.fixed + a.min_cost;
        bool can = b->allow_prune && b->kind != NB_BUDGET_BPW && s->n_expert > 1 && s->n_expert_used < s->n_expert;
        if (can) st = load_ranking(&a, b, ctx);
        /* the keep count with the least predicted loss among those that fit (ties: more experts) */
        double best = INFINITY;
        for (uint32_t k = s->n_expert - 1; can && st == NB_OK && k >= s->n_expert_used && k >= 1; k--) {
            st = alloc_setup(&a, k, ctx);
            if (st != NB_OK || extra + a.fixed + a.min_cost > limit) continue;
            double loss = alloc_run(&a, limit - (extra + a.fixed + a.min_cost)) + a.drop_loss;
            if (loss < best) { best = loss; keep = k; }
        }
        if (st == NB_OK && isfinite(best)) prune = true;
        else if (st == NB_OK) st = too_small(&a, b, extra, smallest, limit, n_el, ctx);
    }
    if (st == NB_OK) {
        if (prune) st = pruned_plan(&a, keep, b, p, ctx);
        else st = nb_plan_make(m, &po, p, ctx);
    }
    if (st == NB_OK) st = alloc_setup(&a, keep, ctx);
    if (st == NB_OK) {
        snprintf(p->mix, sizeof p->mix, "budget");
        p->file_type = -1;
        r->pred_loss = alloc_run(&a, limit - (extra + a.fixed + a.min_cost));
        for (size_t i = 0; i < n; i++) {
            if (!s->tensors[i].planned) continue;
            nb_plan_tensor *pt = &p->tensors[i];
            pt->type = pt->wanted = a.f[i].type[a.f[i].cur];
            pt->why = NB_PLAN_BUDGET;
            pt->pred_err = a.f[i].err[a.f[i].cur];
            r->n_planned++;
        }
        if (prune) {
            r->keep = keep;
            r->n_expert = s->n_expert;
            r->drop_loss = a.drop_loss;
            r->pred_loss += a.drop_loss;
        }
        st = nb_plan_retotal(p, ctx);
        if (st == NB_OK && b->methods) st = choose_methods(s, b, p, r, ctx);
    }
    if (st == NB_OK) {
        r->tensor_bytes = p->bytes_out;
        for (size_t i = 0; i < n; i++) r->weight_bytes += pad(p->tensors[i].bytes_out, s->alignment);
        r->file_bytes = s->header_bytes + r->weight_bytes;
        r->bpw = p->n_elements ? (double)p->bytes_out * 8.0 / (double)p->n_elements : 0;
        r->total_bytes = b->kind == NB_BUDGET_FILE ? r->file_bytes
                       : b->kind == NB_BUDGET_BPW  ? r->tensor_bytes
                                                   : r->weight_bytes + extra;
    }
    alloc_free(&a);
    nb_plan_free(&p0);
    return st;
}

/* ---- table and JSON -------------------------------------------------------------------------------- */

/* The group of a tensor: its name without "blk.N.". */
static const char *group_of(const char *name, char *buf, size_t n) {
    if (strncmp(name, "blk.", 4)) return name;
    const char *d = strchr(name + 4, '.');
    snprintf(buf, n, "%s", d ? d + 1 : name);
    return buf;
}

void nb_budget_print(FILE *f, const nb_plan *p, const nb_budget_result *r, const nb_budget *b) {
    fprintf(f, "%-28s %7s  %-30s %6s %14s %12s%s\n", "tensor group", "tensors", "types", "bpw", "bytes", "pred. loss",
            r->methods ? "  methods" : "");
    bool *done = nb_calloc(NULL, p->n_tensors ? p->n_tensors : 1, sizeof *done, "budget");
    if (!done) return;
    uint64_t o_n = 0, o_bytes = 0, o_el = 0;
    for (size_t i = 0; i < p->n_tensors; i++) {
        if (done[i]) continue;
        /* planned tensors by group; pinned ones (a --rule, or its fallback) in rows of their own */
        bool pin = p->tensors[i].why == NB_PLAN_RULE || p->tensors[i].why == NB_PLAN_FALLBACK;
        if (p->tensors[i].why != NB_PLAN_BUDGET && !pin) {
            o_n++;
            o_bytes += p->tensors[i].bytes_out;
            o_el += p->tensors[i].n_elements;
            continue;
        }
        char g[NB_MAX_NAME + 1], g2[NB_MAX_NAME + 1];
        const char *gi = group_of(p->tensors[i].name, g, sizeof g);
        size_t cnt[NB_TYPE_COUNT] = {0};
        uint64_t nt = 0, bytes = 0, el = 0;
        double loss = 0;
        size_t n_method[NB_PLAN_METHOD_LAST + 1] = {0};
        for (size_t k = i; k < p->n_tensors; k++) {
            const nb_plan_tensor *t = &p->tensors[k];
            bool pk = t->why == NB_PLAN_RULE || t->why == NB_PLAN_FALLBACK;
            if (done[k] || (t->why != NB_PLAN_BUDGET && !pk) || pk != pin || strcmp(group_of(t->name, g2, sizeof g2), gi))
                continue;
            done[k] = true;
            cnt[t->type]++;
            nt++;
            bytes += t->bytes_out;
            el += t->n_elements;
            loss += isfinite(t->pred_err) ? t->pred_err : 0;
            n_method[t->method]++;
        }
        char types[31] = "";
        size_t o = 0;
        for (int ty = 0; ty < NB_TYPE_COUNT; ty++) {
            if (!cnt[ty] || o >= sizeof types - 1) continue;
            int w = snprintf(types + o, sizeof types - o, o ? " %s:%zu" : "%s:%zu", nb_type_name((nb_type)ty), cnt[ty]);
            o += w > 0 ? (size_t)w : 0;
        }
        char meth[64] = "";
        for (int k = NB_PLAN_METHOD_RTN, w = 0; r->methods && k <= NB_PLAN_METHOD_LAST; k++)
            if (n_method[k] && w >= 0 && (size_t)w < sizeof meth)
                w += snprintf(meth + w, sizeof meth - (size_t)w, "  %s:%zu", nb_plan_method_name((nb_plan_method)k),
                              n_method[k]);
        char lab[NB_MAX_NAME + 16];
        snprintf(lab, sizeof lab, pin ? "%s (--rule)" : "%s", gi);
        if (pin)
            fprintf(f, "%-28s %7llu  %-30s %6.2f %14llu %12s\n", lab, (unsigned long long)nt, types,
                    el ? (double)bytes * 8.0 / (double)el : 0, (unsigned long long)bytes, "pinned");
        else
            fprintf(f, "%-28s %7llu  %-30s %6.2f %14llu %12.4g%s\n", lab, (unsigned long long)nt, types,
                    el ? (double)bytes * 8.0 / (double)el : 0, (unsigned long long)bytes, loss, meth);
    }
    if (o_n)
        fprintf(f, "%-28s %7llu  %-30s %6.2f %14llu %12s\n", "(kept: norms, biases, ...)", (unsigned long long)o_n,
                "as planned", o_el ? (double)o_bytes * 8.0 / (double)o_el : 0, (unsigned long long)o_bytes, "-");
    free(done);
    char a[32], c[32], d[32];
    fprintf(f, "\nfile        %14llu B  %s  (%.3f bpw over %llu tensors, %zu chosen by the planner)\n",
            (unsigned long long)r->file_bytes, gib((double)r->file_bytes, a, sizeof a), r->bpw,
            (unsigned long long)p->n_tensors, r->n_planned);
    if (r->kind == NB_BUDGET_MEMORY) {
        const nb_mem_est *m = &r->mem;
        fprintf(f, "weights     %14llu B  %s\n", (unsigned long long)r->weight_bytes,
                gib((double)r->weight_bytes, a, sizeof a));
        fprintf(f, "KV cache    %14llu B  %s  (ctx %u, %s, %u layers, %u sliding over %u cells)\n",
                (unsigned long long)m->kv_bytes, gib((double)m->kv_bytes, a, sizeof a), b->mem.n_ctx,
                nb_type_name(m->kv_type), m->n_layer, m->n_swa_layers, m->swa_cells);
        fprintf(f, "compute     %14llu B  %s  (%s estimate)\n", (unsigned long long)m->compute_bytes,
                gib((double)m->compute_bytes, a, sizeof a), nb_runtime_name(b->mem.runtime));
        fprintf(f, "overhead    %14llu B  %s\n", (unsigned long long)m->overhead_bytes,
                gib((double)m->overhead_bytes, a, sizeof a));
    }
    if (r->kind == NB_BUDGET_BPW)
        fprintf(f, "total       %.4f bpw of %.4f\n", r->bpw, b->bpw);
    else
        fprintf(f, "total       %14llu B  %s of %s (%s left)\n", (unsigned long long)r->total_bytes,
                gib((double)r->total_bytes, a, sizeof a), gib((double)r->limit_bytes, c, sizeof c),
                gib((double)(r->limit_bytes - r->total_bytes), d, sizeof d));
    if (r->keep)
        fprintf(f, "pruned      %u of %u experts kept per layer (%s; predicted loss of the dropped experts %.6g)\n",
                r->keep, r->n_expert, p->prune.criterion, r->drop_loss);
    fprintf(f, "predicted loss %.6g (%s, summed over tensors)\n", r->pred_loss,
            r->loss_unit ? r->loss_unit : "importance-weighted squared error");
    if (r->methods)
        fprintf(f, "methods     GPTQ on %zu, AWQ on %zu of %zu tensors: predicted loss %.6g (%.6g with imatrix rounding "
                "alone), predicted work %.1f s (rounding alone %.1f s, GPTQ wherever it helps %.1f s)\n", r->n_gptq,
                r->n_awq, r->n_planned, r->pred_loss, r->pred_loss_round, r->sec_methods, r->sec_all_round, r->sec_all_gptq);
}

char *nb_budget_result_json(const nb_budget_result *r, const nb_budget *b) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    static const char *const kinds[] = {"none", "file", "bpw", "memory"};
    cJSON_AddStringToObject(j, "target", kinds[r->kind]);
    cJSON_AddNumberToObject(j, "file_bytes", (double)r->file_bytes);
    cJSON_AddNumberToObject(j, "weight_bytes", (double)r->weight_bytes);
    cJSON_AddNumberToObject(j, "tensor_bytes", (double)r->tensor_bytes);
    cJSON_AddNumberToObject(j, "bpw", r->bpw);
    if (r->kind == NB_BUDGET_MEMORY) {
        cJSON_AddNumberToObject(j, "ctx", b->mem.n_ctx);
        cJSON_AddStringToObject(j, "kv_type", nb_type_name(r->mem.kv_type));
        cJSON_AddStringToObject(j, "runtime", nb_runtime_name(b->mem.runtime));
        cJSON_AddNumberToObject(j, "kv_bytes", (double)r->mem.kv_bytes);
        cJSON_AddNumberToObject(j, "compute_bytes", (double)r->mem.compute_bytes);
        cJSON_AddNumberToObject(j, "overhead_bytes", (double)r->mem.overhead_bytes);
    }
    if (r->kind == NB_BUDGET_BPW) cJSON_AddNumberToObject(j, "target_bpw", b->bpw);
    cJSON_AddNumberToObject(j, "total_bytes", (double)r->total_bytes);
    cJSON_AddNumberToObject(j, "limit_bytes", (double)r->limit_bytes);
    cJSON_AddNumberToObject(j, "pred_loss", r->pred_loss);
    if (r->keep) {
        cJSON_AddNumberToObject(j, "keep", r->keep);
        cJSON_AddNumberToObject(j, "n_expert", r->n_expert);
        cJSON_AddNumberToObject(j, "drop_loss", r->drop_loss);
    }
    cJSON_AddNumberToObject(j, "n_planned", (double)r->n_planned);
    if (r->methods) {
        cJSON_AddNumberToObject(j, "n_gptq", (double)r->n_gptq);
        cJSON_AddNumberToObject(j, "n_awq", (double)r->n_awq);
        cJSON_AddNumberToObject(j, "pred_loss_round", r->pred_loss_round);
        cJSON_AddNumberToObject(j, "pred_seconds", r->sec_methods);
        cJSON_AddNumberToObject(j, "pred_seconds_round", r->sec_all_round);
        cJSON_AddNumberToObject(j, "pred_seconds_all_gptq", r->sec_all_gptq);
    }
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}
