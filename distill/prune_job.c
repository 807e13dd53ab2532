/* distill/prune_job.c — a prune job as one call (see distill/prune_job.h). */
#include "distill/prune_job.h"

#include "calib/imatrix.h"

#include <string.h>

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
    nb_status st;
    NB_CHECK_GOTO(st, nb_model_open(j->src, &m, ctx), out);
    NB_CHECK_GOTO(st, nb_prune_check_model(m, &j->prune, ctx), out);
    if (j->stats_path) {
        NB_CHECK_GOTO(st, nb_prune_load_stats(j->stats_path, &rt, ctx), out);
    } else {
        nb_calib_opts co = j->calib;
        if (!co.dataset_name) co.dataset_name = co.calib_path;
        NB_CHECK_GOTO(st, nb_calibrate(j->src, &co, &im, &rt, &r->calib, ctx), out);
        r->calibrated = true;
        if (j->save_stats) NB_CHECK_GOTO(st, nb_imatrix_write_gguf(&im, j->save_stats, ctx), out);
    }
    NB_CHECK_GOTO(st, nb_prune_plan_build(m, &rt, &j->prune, &r->plan, ctx), out);
    if (r->plan.norm_warning[0]) NB_WARN(ctx, "%s", r->plan.norm_warning);
    if (j->dst) {
        NB_CHECK_GOTO(st, nb_prune_write(m, &r->plan, j->dst, &r->write, ctx), out);
        r->written = true;
    }
out:
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
