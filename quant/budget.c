/* quant/budget.c — step 2 of the size-budget planner: the allocation under a
 * budget, the table and the JSON totals (see quant/budget.h). */
#include "quant/budget.h"

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

/* Frontier in cost (padded bytes may tie) and its lower convex hull. */
static void build_front(const nb_sens_tensor *st, bool padded, uint32_t al, front *f) {
    f->n = f->n_hull = f->cur = 0;
    for (size_t k = 0; k < st->n_cands; k++) {
        uint64_t c = padded ? pad(st->cands[k].bytes, al) : st->cands[k].bytes;
        double e = st->cands[k].err;
        if (f->n && c == f->cost[f->n - 1]) {
            if (e < f->err[f->n - 1]) { f->err[f->n - 1] = e; f->type[f->n - 1] = st->cands[k].type; }
            continue;
        }
        if (f->n && e >= f->err[f->n - 1]) continue;
        f->cost[f->n] = c;
        f->err[f->n] = e;
        f->type[f->n] = st->cands[k].type;
        f->n++;
    }
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

/* The "does not fit" message: the smallest achievable value, and for a MoE
 * what keeping fewer experts would give. */
static nb_status too_small(const nb_model *m, const nb_sens *s, const nb_budget *b, uint64_t extra, uint64_t fixed,
                           uint64_t min_dense, uint64_t min_exp, double n_elements, nb_ctx *ctx) {
    char a[32], c[32], more[200] = "";
    uint64_t smallest = extra + fixed + min_dense + min_exp;
    if (min_exp && s->n_expert > 1) {
        for (uint32_t k = s->n_expert - 1; k >= 1; k--) {
            uint64_t est = extra + fixed + min_dense + min_exp / s->n_expert * k;
            bool fits = b->kind == NB_BUDGET_BPW ? (double)est * 8.0 / n_elements <= b->bpw : est <= b->bytes;
            if (fits) {
                snprintf(more, sizeof more, "; keeping %u of %u experts per layer (nibble prune --keep %u) would give "
                         "about %s", k, s->n_expert, k, gib((double)est, a, sizeof a));
                break;
            }
        }
    }
    if (b->kind == NB_BUDGET_BPW)
        return nb_err(ctx, NB_ERR_RANGE, "%s: --target-bpw %.3f is below the smallest achievable %.3f bpw (every "
                      "tensor at its cheapest type)%s", m->path, b->bpw, (double)smallest * 8.0 / n_elements, more);
    return nb_err(ctx, NB_ERR_RANGE, "%s: %s %s is below the smallest achievable %s%s (every tensor at its cheapest "
                  "type)%s", m->path, kind_flag(b->kind), gib((double)b->bytes, a, sizeof a),
                  gib((double)smallest, c, sizeof c),
                  b->kind == NB_BUDGET_MEMORY ? " of weights, KV cache, compute and overhead" : " file", more);
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
    bool padded = b->kind != NB_BUDGET_BPW;
    uint64_t extra = 0; /* what the budget holds besides the tensors */
    if (b->kind == NB_BUDGET_FILE) extra = s->header_bytes;
    if (b->kind == NB_BUDGET_MEMORY) {
        NB_TRY(nb_mem_estimate(m, &b->mem, &r->mem, ctx));
        extra = r->mem.kv_bytes + r->mem.compute_bytes + r->mem.overhead_bytes;
    }
    const nb_plan_opts po = {.mix = nb_mix_get(NB_MIX_F16), .pure = true};
    NB_TRY(nb_plan_make(m, &po, p, ctx));
    snprintf(p->mix, sizeof p->mix, "budget");
    p->file_type = -1;

    size_t n = m->n_tensors;
    front *f = nb_calloc(ctx, n ? n : 1, sizeof *f, "planner frontiers");
    step *steps = nb_calloc(ctx, n * NB_SENS_MAX_CANDS + 1, sizeof *steps, "planner steps");
    bool *blocked = nb_calloc(ctx, n ? n : 1, sizeof *blocked, "planner state");
    nb_status st = f && steps && blocked ? NB_OK : NB_ERR_NOMEM;
    uint64_t fixed = 0, min_dense = 0, min_exp = 0;
    double n_el = 0;
    size_t n_steps = 0;
    for (size_t i = 0; i < n && st == NB_OK; i++) {
        const nb_sens_tensor *t = &s->tensors[i];
        nb_plan_tensor *pt = &p->tensors[i];
        n_el += (double)pt->n_elements;
        if (t->planned != (pt->why == NB_PLAN_BASE)) {
            st = nb_err(ctx, NB_ERR_INTERNAL, "budget: tensor '%s': measured and planned sets differ", pt->name);
            break;
        }
        if (!t->planned) {
            fixed += padded ? pad(pt->bytes_out, s->alignment) : pt->bytes_out;
            continue;
        }
        build_front(t, padded, s->alignment, &f[i]);
        if (t->expert) min_exp += f[i].cost[0];
        else min_dense += f[i].cost[0];
        for (size_t j = 0; j + 1 < f[i].n_hull; j++) {
            size_t a = f[i].hull[j], c = f[i].hull[j + 1];
            steps[n_steps++] = (step){i, j, (f[i].err[a] - f[i].err[c]) / (double)(f[i].cost[c] - f[i].cost[a])};
        }
    }
    uint64_t limit = 0;
    if (st == NB_OK) {
        if (b->kind == NB_BUDGET_BPW) limit = (uint64_t)floor(b->bpw * n_el / 8.0);
        else limit = b->bytes;
        r->limit_bytes = limit;
        if (extra + fixed + min_dense + min_exp > limit)
            st = too_small(m, s, b, extra, fixed, min_dense, min_exp, n_el, ctx);
    }
    if (st == NB_OK) {
        uint64_t left = limit - (extra + fixed + min_dense + min_exp);
        /* pass 1: hull steps by decreasing saving per byte */
        qsort(steps, n_steps, sizeof *steps, step_cmp);
        for (size_t k = 0; k < n_steps; k++) {
            front *ft = &f[steps[k].t];
            if (blocked[steps[k].t] || ft->cur != ft->hull[steps[k].j]) continue;
            uint64_t d = ft->cost[ft->hull[steps[k].j + 1]] - ft->cost[ft->cur];
            if (d <= left) {
                left -= d;
                ft->cur = ft->hull[steps[k].j + 1];
            } else {
                blocked[steps[k].t] = true;
            }
        }
        /* pass 2: what is left, tensor by tensor, the lowest error that fits */
        for (size_t i = 0; i < n; i++) {
            front *ft = &f[i];
            if (!s->tensors[i].planned) continue;
            for (size_t k = ft->n; k-- > ft->cur + 1;) {
                uint64_t d = ft->cost[k] - ft->cost[ft->cur];
                if (d <= left) {
                    left -= d;
                    ft->cur = k;
                    break;
                }
            }
        }
        for (size_t i = 0; i < n; i++) {
            if (!s->tensors[i].planned) continue;
            nb_plan_tensor *pt = &p->tensors[i];
            pt->type = pt->wanted = f[i].type[f[i].cur];
            pt->why = NB_PLAN_BUDGET;
            pt->pred_err = f[i].err[f[i].cur];
            r->pred_loss += pt->pred_err;
            r->n_planned++;
        }
        st = nb_plan_retotal(p, ctx);
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
    free(f);
    free(steps);
    free(blocked);
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
    fprintf(f, "%-28s %7s  %-30s %6s %14s %12s\n", "tensor group", "tensors", "types", "bpw", "bytes", "pred. loss");
    bool *done = calloc(p->n_tensors ? p->n_tensors : 1, sizeof *done);
    if (!done) return;
    uint64_t o_n = 0, o_bytes = 0, o_el = 0;
    for (size_t i = 0; i < p->n_tensors; i++) {
        if (done[i]) continue;
        if (p->tensors[i].why != NB_PLAN_BUDGET) {
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
        for (size_t k = i; k < p->n_tensors; k++) {
            const nb_plan_tensor *t = &p->tensors[k];
            if (done[k] || t->why != NB_PLAN_BUDGET || strcmp(group_of(t->name, g2, sizeof g2), gi)) continue;
            done[k] = true;
            cnt[t->type]++;
            nt++;
            bytes += t->bytes_out;
            el += t->n_elements;
            loss += isfinite(t->pred_err) ? t->pred_err : 0;
        }
        char types[31] = "";
        size_t o = 0;
        for (int ty = 0; ty < NB_TYPE_COUNT; ty++) {
            if (!cnt[ty] || o >= sizeof types - 1) continue;
            int w = snprintf(types + o, sizeof types - o, o ? " %s:%zu" : "%s:%zu", nb_type_name((nb_type)ty), cnt[ty]);
            o += w > 0 ? (size_t)w : 0;
        }
        fprintf(f, "%-28s %7llu  %-30s %6.2f %14llu %12.4g\n", gi, (unsigned long long)nt, types,
                el ? (double)bytes * 8.0 / (double)el : 0, (unsigned long long)bytes, loss);
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
    fprintf(f, "predicted loss %.6g (importance-weighted squared error, summed over tensors)\n", r->pred_loss);
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
    cJSON_AddNumberToObject(j, "n_planned", (double)r->n_planned);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}
