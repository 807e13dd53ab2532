/* calib/job.c — a quantization job as one call (see calib/job.h). */
#include "calib/job.h"

#include "calib/imatrix.h"
#include "calib/routing.h"
#include "core/progress.h"
#include "distill/prune_job.h"
#include "formats/arch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *nb_quant_method_name(nb_quant_method m) {
    switch (m) {
    case NB_METHOD_AUTO: return "auto";
    case NB_METHOD_RTN: return "rtn";
    case NB_METHOD_IMATRIX: return "imatrix";
    case NB_METHOD_GPTQ: return "gptq";
    case NB_METHOD_AWQ: return "awq";
    case NB_METHOD_AWQ_GPTQ: return "awq+gptq";
    case NB_METHOD_MIXED: return "mixed";
    }
    return "?";
}

bool nb_quant_method_from_name(const char *name, nb_quant_method *out) {
    for (int m = NB_METHOD_RTN; m <= NB_METHOD_MIXED; m++) {
        if (!strcmp(name, nb_quant_method_name((nb_quant_method)m))) {
            *out = (nb_quant_method)m;
            return true;
        }
    }
    return false;
}

bool nb_quant_method_sequential(nb_quant_method m) {
    return m == NB_METHOD_GPTQ || m == NB_METHOD_AWQ || m == NB_METHOD_AWQ_GPTQ || m == NB_METHOD_MIXED;
}

static nb_quant_method resolved(const nb_quant_job *j) {
    if (j->method != NB_METHOD_AUTO) return j->method;
    return j->imatrix_path ? NB_METHOD_IMATRIX : NB_METHOD_RTN;
}

nb_status nb_quant_job_check(const nb_quant_job *j, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, !j || !j->src, NB_ERR_INVALID, "quantize: no source given");
    if (j->budget.kind != NB_BUDGET_NONE) {
        NB_RETURN_IF(ctx, j->plan.mix || j->plan_path, NB_ERR_INVALID,
                     "quantize: --target-size / --target-bpw / --budget make the plan: drop --type / --plan");
        NB_RETURN_IF(ctx, j->plan.pure || j->plan.no_fallback, NB_ERR_INVALID,
                     "quantize: --pure and --no-fallback shape a mix's plan, not a budget's");
    }
    NB_RETURN_IF(ctx, !j->plan.mix && !j->plan_path && j->budget.kind == NB_BUDGET_NONE, NB_ERR_INVALID,
                 "quantize: give a type (--type MIX) or a plan (--plan FILE)");
    NB_RETURN_IF(ctx, j->plan.mix && j->plan_path, NB_ERR_INVALID,
                 "quantize: --plan FILE already says every tensor's type: drop --type");
    NB_RETURN_IF(ctx, j->plan_path && (j->plan.pure || j->plan.no_fallback || (j->plan.rules && j->plan.rules->n)),
                 NB_ERR_INVALID, "quantize: --rule, --pure and --no-fallback shape a new plan: edit the plan file instead");
    nb_quant_method m = resolved(j);
    const char *bad = NULL;
    if (m == NB_METHOD_RTN && (j->imatrix_path || j->calib_path))
        bad = "--method rtn rounds plainly: --imatrix / --calib need --method imatrix or gptq";
    else if (m == NB_METHOD_IMATRIX && !j->imatrix_path && !j->calib_path)
        bad = "--method imatrix needs --imatrix STATS or --calib FILE";
    else if (nb_quant_method_sequential(m) && !j->calib_path)
        bad = "--method gptq, awq, awq+gptq and mixed need --calib FILE";
    else if (m == NB_METHOD_MIXED && j->budget.kind == NB_BUDGET_NONE && !j->plan_path)
        bad = "--method mixed chooses a method per tensor inside a size budget (--target-size, --target-bpw, "
              "--budget) or applies a plan's (--plan FILE)";
    else if (m != NB_METHOD_MIXED && (j->budget.method_seconds > 0 || j->budget.method_lambda > 0))
        bad = "--method-time-budget and --method-lambda need --method mixed";
    else if (j->all_experts && !j->calib_path)
        bad = "--all-experts changes how statistics are collected from --calib FILE: give one";
    else if (m != NB_METHOD_GPTQ && m != NB_METHOD_AWQ_GPTQ && j->gptq_opts_set)
        bad = "--damp, --block, --act-order and --static-groups need --method gptq or awq+gptq";
    NB_RETURN_IF(ctx, bad, NB_ERR_INVALID, "%s", bad);
    return NB_OK;
}

/* The imatrix adapter behind llama-quantize's --include-weights /
 * --exclude-weights (substring matches on the tensor name, as llama.cpp's
 * prepare_imatrix does). */
typedef struct name_filter {
    const nb_quant_job *job;
    nb_imatrix_importance *imu;
} name_filter;

static bool contains_any(const char *name, const char *const *subs, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (strstr(name, subs[k])) return true;
    return false;
}

static const float *filtered_importance(void *user, const char *name, int64_t slice, int64_t ne0) {
    const name_filter *f = user;
    const nb_quant_job *j = f->job;
    if (j->n_include_weights && !contains_any(name, j->include_weights, j->n_include_weights)) return NULL;
    if (contains_any(name, j->exclude_weights, j->n_exclude_weights)) return NULL;
    return nb_imatrix_importance_fn(f->imu, name, slice, ne0);
}

/* Step 1: the plan (made, or read and resolved). */
static nb_status job_plan(const nb_quant_job *j, nb_quant_method m, nb_plan *p, nb_format *fmt, nb_ctx *ctx) {
    nb_model *mdl = NULL;
    NB_TRY(nb_model_open(j->src, &mdl, ctx));
    *fmt = mdl->format;
    nb_status st;
    if (j->plan_path) {
        st = nb_plan_load(j->plan_path, p, ctx);
        if (st == NB_OK) st = nb_plan_resolve(p, mdl, ctx);
    } else {
        nb_plan_opts po = j->plan;
        po.has_importance = j->imatrix_path || m == NB_METHOD_IMATRIX || m == NB_METHOD_MIXED;
        st = nb_plan_make(mdl, &po, p, ctx);
    }
    nb_model_close(mdl);
    return st;
}

/* Step 2: the importance data the method needs (and, collected or in the
 * imatrix file, expert routing statistics), wired into qo. */
typedef struct job_data {
    nb_imatrix im;
    nb_imatrix_importance imu;
    name_filter nf;
    nb_routing rt;
    nb_sens_opts so;   /* budget: the measurement's options (the verification reuses them) */
} job_data;

static nb_status job_importance(const nb_quant_job *j, nb_quant_method m, job_data *d, nb_quant_opts *qo,
                                nb_quant_job_result *r, nb_ctx *ctx) {
    nb_status st = NB_OK;
    d->nf = (name_filter){j, &d->imu};
    const nb_plan_prune *pr = &r->plan.prune;
    if (j->imatrix_path && pr->keep && j->budget.kind == NB_BUDGET_NONE) {
        /* a pruning plan on the pruned model: the imatrix is of the unpruned source (expert slices are mapped) */
        st = nb_imatrix_read(j->imatrix_path, &d->im, ctx);
        for (size_t i = 0; i < d->im.n && st == NB_OK; i++)
            if (d->im.e[i].n_mat > 1 && d->im.e[i].n_mat != (int64_t)pr->n_expert)
                st = nb_err(ctx, NB_ERR_RANGE, "%s: tensor '%s': %lld experts, the plan's source has %u (an imatrix "
                            "of the unpruned source is needed)", j->imatrix_path, d->im.e[i].name,
                            (long long)d->im.e[i].n_mat, pr->n_expert);
        qo->importance = filtered_importance;
        qo->importance_user = &d->nf;
    } else if (j->imatrix_path) {
        st = nb_imatrix_load_for_model(j->imatrix_path, j->src, &d->im, ctx);
        if (st == NB_OK && j->budget.kind != NB_BUDGET_NONE) st = nb_routing_from_imatrix(&d->im, &d->rt, ctx);
        qo->importance = filtered_importance;
        qo->importance_user = &d->nf;
    } else if (m == NB_METHOD_IMATRIX || m == NB_METHOD_MIXED) {
        nb_calib_opts co = {.calib_path = j->calib_path, .corpus = j->corpus, .all_experts = j->all_experts};
        nb_routing rt;
        st = nb_calibrate(j->src, &co, &d->im, &rt, &r->calib, ctx);
        if (j->budget.kind != NB_BUDGET_NONE) d->rt = rt;
        else nb_routing_free(&rt);
        if (st == NB_OK) {
            r->calibrated = true;
            NB_INFO(ctx, "imatrix: %zu chunks (%llu tokens) in %.1f s", r->calib.n_chunks,
                    (unsigned long long)r->calib.n_tokens, r->calib.seconds);
        }
        qo->importance = filtered_importance;
        qo->importance_user = &d->nf;
    }
    return st;
}

/* The routing frequency of an expert (nb_slice_weight_fn over nb_routing). */
static double routing_weight(void *user, const char *name, int64_t slice) {
    const nb_routing *rt = user;
    int layer = -1;
    if (sscanf(name, "blk.%d.", &layer) != 1) return -1;
    const nb_routing_layer *l = layer >= 0 && layer < rt->n_layer ? &rt->layers[layer] : NULL;
    nb_expert_stats es;
    if (!l || !(l->n_tok > 0) || !nb_routing_expert(rt, layer, (int)slice, &es)) return -1;
    return es.freq;
}

/* Mean importance weight over every entry and column: the weight of the
 * columns of tensors without an entry, so their errors are on the same scale. */
static double mean_importance(const nb_imatrix *im) {
    double sum = 0, n = 0;
    for (size_t i = 0; i < im->n; i++) {
        const nb_imatrix_entry *e = &im->e[i];
        for (int64_t k = 0; k < e->n_mat; k++) {
            double c = e->count[e->n_counts > 1 ? k : 0];
            if (!(c > 0)) continue;
            for (int64_t c2 = 0; c2 < e->n_in; c2++) sum += e->sum2[k * e->n_in + c2] / c;
            n += (double)e->n_in;
        }
    }
    return n > 0 && sum > 0 ? sum / n : 1.0;
}

/* The experts' ranking for --allow-prune (nb_expert_rank_fn over nb_routing). */
typedef struct ranker {
    const nb_routing *rt;
    nb_prune_criterion crit;
} ranker;

static bool rank_experts(void *user, int layer, int *order, int n_expert) {
    const ranker *k = user;
    return nb_prune_rank(k->rt, layer, k->crit, order, n_expert);
}

/* Importance of the pruned model's expert slices: those of the kept experts. */
typedef struct pruned_imp {
    const nb_plan_prune *pr;
    nb_importance_fn fn;
    void *user;
    const nb_routing *rt;
} pruned_imp;

static const float *pruned_importance(void *user, const char *name, int64_t slice, int64_t ne0) {
    const pruned_imp *u = user;
    int L;
    if (nb_arch_is_expert_stack(name) && nb_arch_is_per_expert(name, &L) && slice >= 0 &&
        slice < (int64_t)u->pr->keep) {
        for (uint32_t l = 0; l < u->pr->n_layer; l++)
            if (u->pr->layer[l] == L) {
                slice = u->pr->kept[(size_t)l * u->pr->keep + (size_t)slice];
                break;
            }
    }
    return u->fn(u->user, name, slice, ne0);
}

static double pruned_slice_weight(void *user, const char *name, int64_t slice) {
    const pruned_imp *u = user;
    int L;
    if (nb_arch_is_per_expert(name, &L) && slice >= 0 && slice < (int64_t)u->pr->keep)
        for (uint32_t l = 0; l < u->pr->n_layer; l++)
            if (u->pr->layer[l] == L) {
                slice = u->pr->kept[(size_t)l * u->pr->keep + (size_t)slice];
                break;
            }
    return routing_weight((void *)u->rt, name, slice);
}

/* Write the source pruned as plan p says to `tmp` (the model the plan binds to). */
static nb_status job_prune(const nb_quant_job *j, const nb_routing *rt, const nb_plan *p, const char *tmp,
                           nb_ctx *ctx) {
    const nb_plan_prune *pr = &p->prune;
    nb_prune_opts po = {.keep = (int)pr->keep};
    NB_RETURN_IF(ctx, !nb_prune_criterion_from_name(pr->criterion, &po.criterion), NB_ERR_FORMAT,
                 "plan: unknown prune criterion '%s'", pr->criterion);
    nb_model *m = NULL;
    NB_TRY(nb_model_open(j->src, &m, ctx));
    nb_prune_plan pp;
    nb_prune_result res;
    nb_status st = nb_prune_plan_build(m, rt, &po, &pp, ctx);
    if (st == NB_OK) st = nb_prune_plan_matches(&pp, p, ctx);
    if (st == NB_OK) st = nb_prune_write(m, &pp, tmp, &res, ctx);
    nb_prune_plan_free(&pp);
    nb_model_close(m);
    return st;
}

/* Step 1 with a budget: measure, then allocate. */
static nb_status job_plan_budget(const nb_quant_job *j, job_data *d, const nb_quant_opts *qo, nb_quant_job_result *r,
                                 nb_ctx *ctx) {
    nb_model *mdl = NULL;
    NB_TRY(nb_model_open(j->src, &mdl, ctx));
    nb_status st = NB_OK;
    if (j->imatrix_path) {
        for (size_t i = 0; i < mdl->n_tensors && st == NB_OK; i++) {
            const nb_tensor *t = &mdl->tensors[i];
            if (!strncmp(t->name, "blk.", 4) && nb_mix_tensor_quantizable(t->name, t->ne) &&
                !nb_imatrix_find(&d->im, t->name))
                st = nb_err(ctx, NB_ERR_RANGE, "%s: imatrix has no entry for tensor '%s' (made for another model?)",
                            j->imatrix_path, t->name);
        }
    }
    nb_sens sens = {0};
    nb_sens_opts so = {.runtime = j->budget.mem.runtime, .sample_rows = j->sample_rows,
                       .importance = qo->importance, .importance_user = qo->importance_user,
                       .default_importance = qo->importance ? mean_importance(&d->im) : 1.0,
                       .slice_weight = d->rt.n_layer ? routing_weight : NULL, .slice_weight_user = &d->rt,
                       .state_path = j->measure_state};
    d->so = so;
    if (st == NB_OK) st = nb_sens_measure(mdl, &so, &sens, ctx);
    r->seconds_measure = sens.seconds;
    size_t n_pinned = 0;
    if (st == NB_OK) st = nb_sens_pin(mdl, &sens, j->plan.rules, &n_pinned, ctx);
    if (st == NB_OK && n_pinned)
        NB_INFO(ctx, "budget: %zu tensor%s pinned by --rule (their types fixed, the budget spent on the rest)",
                n_pinned, n_pinned == 1 ? "" : "s");
    if (st == NB_OK && j->group_cal.text_path) {
        nb_group_cal_opts go = j->group_cal;
        char pre[128];
        if (!go.work_prefix) {
            const char *td = getenv("TMPDIR");
            snprintf(pre, sizeof pre, "%s/nibble-cal-%ld", td && *td && strlen(td) < 64 ? td : "/tmp", (long)getpid());
            go.work_prefix = pre;
        }
        nb_quant_opts cq = *qo;
        nb_budget pb = j->budget;
        pb.pins = j->plan.rules;
        st = nb_budget_planned_bpw(mdl, &sens, &pb, &go.ref_bpw, ctx);
        if (st == NB_OK) st = nb_group_calibrate(j->src, mdl, &sens, &go, &cq, &r->group_cal, ctx);
        if (st == NB_OK)
            NB_INFO(ctx, "budget: errors calibrated on %s (%s of %zu tensor groups, each measured near %.2f bpw)",
                    go.text_path, strcmp(r->group_cal.metric, "kld") ? "cosine distance" : "KLD", r->group_cal.n,
                    go.ref_bpw);
    }
    nb_budget b = j->budget;
    b.pins = j->plan.rules;
    b.methods = j->method == NB_METHOD_MIXED;
    if (st == NB_OK && b.methods) {
        nb_method_opts mo = {.calib_path = j->calib_path, .corpus = j->corpus, .all_experts = j->all_experts,
                             .sample_rows = j->method_rows};
        st = nb_method_measure(mdl, &sens, &mo, &r->methods, ctx);
        if (st == NB_OK)
            NB_INFO(ctx, "methods: GPTQ's error ratio measured on block %d (%zu tensor groups, %llu tokens) in %.1f s",
                    r->methods.layer, r->methods.n_groups, (unsigned long long)r->methods.n_tokens,
                    r->methods.seconds);
    }
    ranker rk = {.rt = &d->rt, .crit = NB_PRUNE_REAP};
    if (b.allow_prune) {
        if (b.prune_criterion && !nb_prune_criterion_from_name(b.prune_criterion, &rk.crit) && st == NB_OK)
            st = nb_err(ctx, NB_ERR_INVALID, "unknown prune criterion '%s'", b.prune_criterion);
        b.rank = d->rt.n_layer ? rank_experts : NULL;
        b.rank_user = &rk;
        b.prune_criterion = nb_prune_criterion_name(rk.crit);
    }
    if (st == NB_OK) st = nb_budget_plan(mdl, &sens, &b, &r->plan, &r->budget, ctx);
    if (st == NB_OK && r->group_cal.n)
        r->budget.loss_unit = strcmp(r->group_cal.metric, "kld") ? "predicted cosine distance, calibrated per group"
                                                                  : "predicted KLD, calibrated per tensor group";
    else if (st == NB_OK && sens.n_relative)
        r->budget.loss_unit = "importance-weighted squared error, relative to each block tensor's output";
    nb_sens_free(&sens);
    nb_model_close(mdl);
    return st;
}

nb_status nb_quantize_job(const nb_quant_job *j, nb_quant_job_result *r, nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    r->plan.file_type = -1;
    NB_TRY(nb_quant_job_check(j, ctx));
    nb_quant_method m = resolved(j);
    r->method = m;
    bool budget = j->budget.kind != NB_BUDGET_NONE;
    job_data d;
    nb_imatrix_init(&d.im);
    memset(&d.rt, 0, sizeof d.rt);
    d.imu = (nb_imatrix_importance){.im = &d.im};
    nb_quant_opts qo = {.report = j->report, .chunk_elems = j->chunk_elems};
    nb_status st = NB_OK;
    nb_format fmt = NB_FMT_UNKNOWN; /* the source's, known when the plan is made from a mix or file */
    if (budget) {
        st = job_importance(j, m, &d, &qo, r, ctx);
        double t0 = nb_now();
        nb_event_stage(ctx, "start", "plan", 0, 0, "measure the errors, then choose the types for the target", 0);
        if (st == NB_OK) st = job_plan_budget(j, &d, &qo, r, ctx);
        if (st == NB_OK) nb_event_stage(ctx, "end", "plan", 0, 0, NULL, nb_now() - t0);
    } else {
        st = job_plan(j, m, &r->plan, &fmt, ctx);
    }
    size_t nrq = r->plan.n_requantized;
    bool import = j->requantize_imports && fmt != NB_FMT_UNKNOWN && fmt != NB_FMT_GGUF;
    if (st == NB_OK && nrq && j->dst && !j->allow_requantize && !import)
        st = nb_err(ctx, NB_ERR_INVALID,
                    "%s: %zu tensor%s already quantized: requantizing adds a second rounding error to the first; "
                    "quantize from the F16/BF16/F32 original, or pass %s to do it anyway", j->src, nrq,
                    nrq == 1 ? " is" : "s are",
                    j->requantize_imports ? "`nibble quantize --allow-requantize`" : "--allow-requantize");
    if (st == NB_OK && nrq && import && !j->allow_requantize)
        NB_WARN(ctx, "%s: %zu tensor%s of a quantized checkpoint, rounded once already: rounding again to the new "
                "type%s", j->src, nrq, nrq == 1 ? "" : "s", nrq == 1 ? "" : "s");
    else if (st == NB_OK && nrq)
        NB_WARN(ctx, "%s: %zu tensor%s already quantized: dequantizing and requantizing (errors add up; "
                "quantize from the F16/BF16/F32 original when you have it)", j->src, nrq, nrq == 1 ? " is" : "s are");
    char *tmp = NULL;
    const char *src = j->src;
    pruned_imp pi = {.pr = &r->plan.prune, .fn = qo.importance, .user = qo.importance_user, .rt = &d.rt};
    if (st == NB_OK && j->dst && budget && r->plan.prune.keep) {
        /* the plan keeps fewer experts: prune first, then quantize the pruned model */
        size_t tn = strlen(j->dst) + 16;
        tmp = j->prune_tmp ? nb_strdup(ctx, j->prune_tmp) : nb_malloc(ctx, tn, "path");
        if (tmp && !j->prune_tmp) snprintf(tmp, tn, "%s.pruned.tmp", j->dst);
        double tp = nb_now();
        nb_event_stage(ctx, "start", "prune", 0, 0, "keep the experts the plan chose", 0);
        st = tmp ? job_prune(j, &d.rt, &r->plan, tmp, ctx) : NB_ERR_NOMEM;
        src = tmp;
        if (st == NB_OK) nb_event_stage(ctx, "end", "prune", 0, 0, NULL, nb_now() - tp);
        if (qo.importance) {
            qo.importance = pruned_importance;
            qo.importance_user = &pi;
        }
    }
    if (st == NB_OK && j->dst) {
        if (!budget) st = job_importance(j, m, &d, &qo, r, ctx);
        if (!budget && r->plan.prune.keep && qo.importance) {
            /* a pruning plan applied to the pruned model: the imatrix is the unpruned source's */
            pi.fn = qo.importance;
            pi.user = qo.importance_user;
            qo.importance = pruned_importance;
            qo.importance_user = &pi;
        }
        /* step 3: the write (mixed: the sequential driver only when a tensor takes GPTQ or AWQ) */
        bool any_gptq = false, any_awq = false;
        for (size_t i = 0; i < r->plan.n_tensors; i++) {
            any_gptq |= r->plan.tensors[i].method == NB_PLAN_METHOD_GPTQ;
            any_awq |= r->plan.tensors[i].method == NB_PLAN_METHOD_AWQ;
        }
        if (m == NB_METHOD_MIXED)
            for (size_t i = 0; i < r->plan.n_tensors; i++) /* a plan file's tensors without a method: imatrix */
                if (r->plan.tensors[i].method == NB_PLAN_METHOD_JOB) r->plan.tensors[i].method = NB_PLAN_METHOD_IMATRIX;
        if (st == NB_OK && nb_quant_method_sequential(m) && (m != NB_METHOD_MIXED || any_gptq || any_awq)) {
            nb_gptq_model_opts go = {.calib_path = j->calib_path, .corpus = j->corpus, .gptq = j->gptq,
                                     .compare_rtn = j->report, .all_experts = j->all_experts,
                                     .awq = m == NB_METHOD_AWQ || m == NB_METHOD_AWQ_GPTQ ||
                                            (m == NB_METHOD_MIXED && any_awq),
                                     .no_gptq = m == NB_METHOD_AWQ};
            st = nb_gptq_quantize_model(src, j->dst, &r->plan, &qo, &go, &r->gptq, ctx);
            r->quant = r->gptq.quant;
            memset(&r->gptq.quant, 0, sizeof r->gptq.quant);
        } else if (st == NB_OK) {
            st = nb_quantize_model(src, j->dst, &r->plan, &qo, &r->quant, ctx);
        }
    }
    if (st == NB_OK && j->dst && budget && j->verify_plan) {
        /* the planner's error measure over every row of the written types (what it predicted from samples) */
        nb_sens_opts so = d.so;
        so.state_path = NULL;
        so.importance = qo.importance;
        so.importance_user = qo.importance_user;
        if (r->plan.prune.keep && so.slice_weight) {
            so.slice_weight = pruned_slice_weight;
            so.slice_weight_user = &pi;
        }
        nb_model *mv = NULL;
        r->measured_err = nb_calloc(ctx, r->plan.n_tensors ? r->plan.n_tensors : 1, sizeof *r->measured_err,
                                    "measured errors");
        st = r->measured_err ? nb_model_open(src, &mv, ctx) : NB_ERR_NOMEM;
        if (st == NB_OK) st = nb_sens_measure_plan(mv, &so, &r->plan, r->measured_err, ctx);
        nb_model_close(mv);
    }
    if (tmp) unlink(tmp);
    free(tmp);
    nb_imatrix_importance_free(&d.imu);
    nb_imatrix_free(&d.im);
    nb_routing_free(&d.rt);
    return st;
}

void nb_quant_job_result_free(nb_quant_job_result *r) {
    if (!r) return;
    free(r->measured_err);
    nb_group_cal_free(&r->group_cal);
    nb_plan_free(&r->plan);
    nb_quant_result_free(&r->quant);
    nb_gptq_model_result_free(&r->gptq);
    memset(r, 0, sizeof *r);
}
