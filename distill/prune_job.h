/* distill/prune_job.h — `nibble prune` as one library call: statistics
 * (loaded from a previous calibration, or collected now), the plan, the
 * write. What the CLI and a recipe runner (pipeline/) call.
 *
 * Order: the model is opened and checked first (not a MoE model, keep out of
 * range: errors before a possibly long calibration run); then statistics
 * from job->stats_path or a calibration run on job->calib.calib_path (saved to
 * job->save_stats when set); then the plan (distill/prune.h); then, unless
 * job->dst is NULL (a dry run), the pruned GGUF.
 */
#ifndef NB_DISTILL_PRUNE_JOB_H
#define NB_DISTILL_PRUNE_JOB_H

#include "calib/calibrate.h"
#include "distill/prune.h"
#include "quant/plan.h"

typedef struct nb_prune_job {
    const char *src;          /* required */
    const char *dst;          /* output GGUF; NULL: plan only */
    const char *stats_path;   /* routing statistics of `nibble calibrate` (exclusive with calib.calib_path) */
    nb_calib_opts calib;      /* calibration when stats_path is NULL (calib.calib_path required then) */
    const char *save_stats;   /* with a calibration run: also write the statistics here (may be NULL) */
    nb_prune_opts prune;
    const char *plan_path;    /* a size-budget plan with a keep-N decision (quant/plan.h "prune"):
                                 keep and criterion come from it (prune.keep / keep_ratio must be 0),
                                 the source must be the plan's, and the experts kept must be the plan's */
} nb_prune_job;

typedef struct nb_prune_job_result {
    bool calibrated;          /* statistics were collected by this call */
    nb_calib_result calib;
    nb_prune_plan plan;
    bool written;             /* dst was written */
    nb_prune_result write;
} nb_prune_job_result;

/* Run the job. `r` is filled as far as it got; free with
 * nb_prune_job_result_free. Errors: those of the stages (distill/prune.h,
 * calib/calibrate.h); NB_ERR_INVALID for a job without statistics or with
 * both sources of statistics. */
nb_status nb_prune_job_run(const nb_prune_job *job, nb_prune_job_result *r, nb_ctx *ctx);
void nb_prune_job_result_free(nb_prune_job_result *r);

/* NB_OK when prune plan pp keeps exactly the experts plan p's keep-N decision
 * lists; NB_ERR_RANGE naming the first layer that differs (statistics other
 * than those the plan was made with). */
nb_status nb_prune_plan_matches(const nb_prune_plan *pp, const nb_plan *p, nb_ctx *ctx);

#endif
