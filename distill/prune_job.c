/* distill/prune_job.c — a prune job as one call (see distill/prune_job.h). */
#include "distill/prune_job.h"

#include "calib/imatrix.h"

#include <string.h>

nb_status nb_prune_plan_matches(const nb_prune_plan *pp, const nb_plan *p, nb_ctx *ctx) {
    const nb_plan_prune *pr = &p->prune;
    NB_RETURN_IF(ctx, (uint32_t)pp->n_keep != pr->keep || (uint32_t)pp->n_layer != pr->n_layer, NB_ERR_RANGE,
                 "plan: keeps %u experts in %u layers, the pruning %d in %d", pr->keep, pr->n_layer, pp->n_keep,
                 pp->n_layer);
    for (int l = 0; l < pp->n_layer; l++) {
        bool same = pp->layers[l].layer == pr->layer[l];
        for (int k = 0; k < pp->n_keep && same; k++) same = pp->layers[l].kept[k] == pr->kept[(size_t)l * pr->keep + (size_t)k];
        NB_RETURN_IF(ctx, !same, NB_ERR_RANGE,
                     "plan: layer %d: these routing statistics keep other experts than the plan (made with other "
                     "statistics?)", pp->layers[l].layer);
    }
    return NB_OK;
}

nb_status nb_prune_job_run(const nb_prune_job *j, nb_prune_job_result *r, nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    NB_RETURN_IF(ctx, !j || !j->src, NB_ERR_INVALID, "prune: no model given");
    NB_RETURN_IF(ctx, !j->stats_path && !j->calib.calib_path, NB_ERR_INVALID,
                 "prune: missing statistics: give calibration text or a statistics file");
    NB_RETURN_IF(ctx, j->stats_path && j->calib.calib_path, NB_ERR_INVALID,
                 "prune: calibration text and a statistics file cannot be combined");
    nb_routing rt = {0};
    nb_imatrix im;
    nb_imatrix_init(&im);
    nb_model *m = NULL;
    nb_plan plan;
    memset(&plan, 0, sizeof plan);
    nb_prune_opts po = j->prune;
    nb_status st;
    NB_CHECK_GOTO(st, nb_model_open(j->src, &m, ctx), out);
    if (j->plan_path) {
        /* the keep-N decision of a size-budget plan (quant/budget.h) */
        NB_CHECK_GOTO(st, nb_plan_load(j->plan_path, &plan, ctx), out);
        if (!plan.prune.keep)
            NB_FAIL_GOTO(st, out, ctx, NB_ERR_INVALID, "%s: the plan prunes no experts (plan with --allow-prune)",
                         j->plan_path);
        unsigned char fp[32];
        nb_plan_fingerprint(m, fp);
        if (memcmp(fp, plan.tensors_sha256, 32) || plan.source_size != m->file_bytes)
            NB_FAIL_GOTO(st, out, ctx, NB_ERR_INVALID, "%s: the plan %s is for another model", j->src, j->plan_path);
        po.keep = (int)plan.prune.keep;
        po.keep_ratio = 0;
        if (!nb_prune_criterion_from_name(plan.prune.criterion, &po.criterion))
            NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: unknown prune criterion '%s'", j->plan_path,
                         plan.prune.criterion);
    }
    NB_CHECK_GOTO(st, nb_prune_check_model(m, &po, ctx), out);
    if (j->stats_path) {
        NB_CHECK_GOTO(st, nb_prune_load_stats(j->stats_path, &rt, ctx), out);
    } else {
        nb_calib_opts co = j->calib;
        if (!co.dataset_name) co.dataset_name = co.calib_path;
        NB_CHECK_GOTO(st, nb_calibrate(j->src, &co, &im, &rt, &r->calib, ctx), out);
        r->calibrated = true;
        if (j->save_stats) NB_CHECK_GOTO(st, nb_imatrix_write_gguf(&im, j->save_stats, ctx), out);
    }
    NB_CHECK_GOTO(st, nb_prune_plan_build(m, &rt, &po, &r->plan, ctx), out);
    if (j->plan_path && (st = nb_prune_plan_matches(&r->plan, &plan, ctx)) != NB_OK) {
        nb_err_prefix(ctx, "%s", j->plan_path);
        goto out;
    }
    if (r->plan.norm_warning[0]) NB_WARN(ctx, "%s", r->plan.norm_warning);
    if (j->dst) {
        NB_CHECK_GOTO(st, nb_prune_write(m, &r->plan, j->dst, &r->write, ctx), out);
        r->written = true;
    }
out:
    nb_plan_free(&plan);
    nb_model_close(m);
    nb_imatrix_free(&im);
    nb_routing_free(&rt);
    return st;
}

void nb_prune_job_result_free(nb_prune_job_result *r) {
    if (!r) return;
    nb_prune_plan_free(&r->plan);
    memset(r, 0, sizeof *r);
}
