/* calib/job.h — a whole quantization job as one library call: what
 * `nibble quantize` runs, and what a recipe runner calls.
 *
 * nb_quantize_job does, in order:
 *   1. the plan: read from job->plan_path (and resolved against the source,
 *      quant/plan.h), or made with job->plan (mix, rules, ...);
 *   2. the importance data the method needs: loaded from job->imatrix_path and
 *      checked against the model, or — method imatrix without a file —
 *      collected first from job->calib_path (calib/calibrate.h, what `nibble
 *      calibrate` writes);
 *   3. the write: plain or importance-weighted rounding (quant/quantize.h) or
 *      sequential GPTQ (calib/gptq_model.h).
 * With job->dst NULL only step 1 runs (a dry run: the plan is the result).
 *
 * Size budget (job->budget.kind != NB_BUDGET_NONE; quant/budget.h): the plan
 * is made by the planner instead of a mix, so step 2 comes first (the
 * importance data weighs the planner's errors, and its routing statistics —
 * in the imatrix file, or collected with it — weigh the experts), then the
 * plan, then the write with the same importance data. An imatrix that lacks
 * an entry for a quantizable blk.* tensor is NB_ERR_RANGE (it was made for
 * another model); token_embd / output need none (llama-imatrix skips them).
 * Without importance data the errors are unweighted.
 *
 * Pruning (budget.allow_prune; quant/budget.h): the experts are ranked by
 * budget.prune_criterion over the routing statistics (distill/prune.h); when
 * the plan keeps fewer experts, the write first prunes the source to
 * job->prune_tmp (default "<dst>.pruned.tmp", removed afterwards: one extra
 * copy of the pruned source on disk, never in memory), then quantizes that
 * with the plan, the importance of expert slices mapped to the kept experts.
 *
 * Requantization (a source tensor already in a block-quantized type, planned
 * to another type) compounds two roundings; it is refused with NB_ERR_INVALID
 * unless job->allow_requantize (llama-quantize --allow-requantize), or
 * job->requantize_imports and the source is not a GGUF. A dry run only warns.
 *
 * Methods:
 *   rtn      round to nearest; takes neither an imatrix nor calibration text
 *   imatrix  importance-weighted rounding; needs imatrix_path or calib_path
 *   gptq     sequential GPTQ; needs calib_path (imatrix_path optional: the
 *            scale search's importance for the tensors it has)
 *   awq      AWQ scales per block (calib/awq.h), folded into the preceding
 *            norm / linear, then the types' rounding with importance;
 *            needs calib_path (same driver as gptq)
 *   awq+gptq AWQ scales, then GPTQ on the scaled weights
 *   mixed    with a budget: the planner chooses GPTQ, AWQ (for a block's
 *            attention or FFN as a whole) or imatrix rounding per tensor
 *            (quant/budget.h "Mixed methods"; the ratios and work from
 *            calib/budget_method.h); needs calib_path (the imatrix is
 *            collected from it unless imatrix_path is given). With plan_path:
 *            the plan's per-tensor methods (tensors without one: imatrix).
 *            The write is the sequential driver when any tensor says gptq or
 *            awq (GPTQ on the gptq tensors, AWQ's scales and rounding on the
 *            awq groups, plain imatrix rounding for the others), else
 *            importance-weighted rounding.
 * NB_METHOD_AUTO picks imatrix when imatrix_path is set, else rtn.
 */
#ifndef NB_CALIB_JOB_H
#define NB_CALIB_JOB_H

#include "calib/budget_calib.h"
#include "calib/budget_method.h"
#include "calib/calibrate.h"
#include "calib/corpus.h"
#include "calib/gptq.h"
#include "calib/gptq_model.h"
#include "quant/budget.h"
#include "quant/plan.h"
#include "quant/quantize.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum nb_quant_method {
    NB_METHOD_AUTO = 0,
    NB_METHOD_RTN,
    NB_METHOD_IMATRIX,
    NB_METHOD_GPTQ,
    NB_METHOD_AWQ,      /* AWQ scales, then the types' rounding (importance as gptq's scale search) */
    NB_METHOD_AWQ_GPTQ, /* AWQ scales, then GPTQ */
    NB_METHOD_MIXED     /* GPTQ or imatrix rounding per tensor, as the planner chose */
} nb_quant_method;

const char *nb_quant_method_name(nb_quant_method m);
/* "rtn", "imatrix", "gptq", "awq", "awq+gptq", "mixed"; false for anything else. */
bool nb_quant_method_from_name(const char *name, nb_quant_method *out);
/* gptq, awq, awq+gptq, mixed: the block-by-block driver (calib/gptq_model.h) with calibration text
 * (mixed: when the plan has a gptq or awq tensor). */
bool nb_quant_method_sequential(nb_quant_method m);

typedef struct nb_quant_job {
    const char *src;           /* required */
    const char *dst;           /* output GGUF; NULL: plan only (dry run) */
    const char *plan_path;     /* apply this plan file (then plan.mix must be NULL) */
    nb_plan_opts plan;         /* mix, rules, pure, no_fallback (has_importance is set by the job) */
    nb_quant_method method;
    const char *imatrix_path;  /* nibble calibrate / llama-imatrix .gguf or .dat */
    const char *calib_path;    /* calibration text or token ids */
    nb_corpus_opts corpus;     /* chunking of calib_path */
    nb_gptq_opts gptq;         /* damp, block, act_order, static_groups */
    bool gptq_opts_set;        /* any of gptq's fields given (an error for other methods) */
    bool allow_requantize;     /* without it, a plan that requantizes an already-quantized tensor is refused */
    bool requantize_imports;   /* allow it too when the source is a quantized Hugging Face checkpoint (a directory
                                  or safetensors, not a GGUF: quantizing it is what was asked), with a one-line
                                  note instead of the warning; `nibble convert --type MIX` sets it */
    bool all_experts;          /* calibration from calib_path: every MoE expert sees every token (statistics
                                  and Hessians only; calib/calibrate.h) */
    const char *const *include_weights; /* llama-quantize --include-weights: use importance data only for */
    size_t n_include_weights;           /*   tensors whose name contains one of these (none: all) */
    const char *const *exclude_weights; /* --exclude-weights: never for names containing one of these */
    size_t n_exclude_weights;
    bool report;               /* per-tensor error statistics (and GPTQ vs RTN errors) */
    uint64_t chunk_elems;      /* 0: default */
    nb_budget budget;          /* kind NB_BUDGET_NONE: no budget (the plan comes from a mix or a file) */
    uint32_t sample_rows;      /* budget: rows sampled per tensor (0: NB_SENS_DEFAULT_ROWS) */
    const char *prune_tmp;     /* a plan that prunes: the pruned source's path (NULL: "<dst>.pruned.tmp") */
    const char *measure_state; /* budget: resumable measurement journal (quant/budget.h; NULL: none) */
    nb_group_cal_opts group_cal; /* budget: text_path set: calibrated predictions (calib/budget_calib.h; work_prefix
                                    NULL: a temporary name in $TMPDIR or /tmp) */
    uint32_t method_rows;      /* mixed: rows per weight in GPTQ's error ratio (0: 64) */
    bool verify_plan;          /* budget, after the write: the planner's error over every row of the chosen
                                  types (nb_sens_measure_plan) into result->measured_err */
} nb_quant_job;

typedef struct nb_quant_job_result {
    nb_quant_method method;    /* the method that ran (AUTO resolved) */
    nb_plan plan;
    bool calibrated;           /* statistics were collected first (method imatrix from calib_path) */
    nb_calib_result calib;
    nb_quant_result quant;     /* the write (empty for a dry run) */
    nb_gptq_model_result gptq; /* sequential methods: the driver's figures (its .quant is moved to .quant) */
    nb_budget_result budget;   /* with a budget: the planner's totals */
    double seconds_measure;    /* with a budget: the sensitivity measurement */
    double *measured_err;      /* verify_plan: [plan.n_tensors] (NAN where the planner chose nothing) */
    nb_group_cal group_cal;    /* calibrated predictions: the factor of every tensor group */
    nb_method_info methods;    /* mixed with a budget: the ratio measurement */
} nb_quant_job_result;

/* Check the job's options against each other without touching any file:
 * NB_ERR_INVALID with a message saying which combination is wrong. */
nb_status nb_quant_job_check(const nb_quant_job *job, nb_ctx *ctx);

/* Run the job (see above). `r` is filled as far as the job got and must be
 * freed with nb_quant_job_result_free. Errors: nb_quant_job_check's, and
 * those of the plan, calibration, imatrix and write stages. */
nb_status nb_quantize_job(const nb_quant_job *job, nb_quant_job_result *r, nb_ctx *ctx);
void nb_quant_job_result_free(nb_quant_job_result *r);

#endif
