/* calib/job.c — a quantization job as one call (see calib/job.h). */
#include "calib/job.h"

#include "calib/imatrix.h"
#include "calib/routing.h"

#include <string.h>

const char *nb_quant_method_name(nb_quant_method m) {
    switch (m) {
    case NB_METHOD_AUTO: return "auto";
    case NB_METHOD_RTN: return "rtn";
    case NB_METHOD_IMATRIX: return "imatrix";
    case NB_METHOD_GPTQ: return "gptq";
    }
    return "?";
}

bool nb_quant_method_from_name(const char *name, nb_quant_method *out) {
    for (int m = NB_METHOD_RTN; m <= NB_METHOD_GPTQ; m++) {
        if (!strcmp(name, nb_quant_method_name((nb_quant_method)m))) {
            *out = (nb_quant_method)m;
            return true;
        }
    }
    return false;
}

static nb_quant_method resolved(const nb_quant_job *j) {
    if (j->method != NB_METHOD_AUTO) return j->method;
    return j->imatrix_path ? NB_METHOD_IMATRIX : NB_METHOD_RTN;
}

nb_status nb_quant_job_check(const nb_quant_job *j, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, !j || !j->src, NB_ERR_INVALID, "quantize: no source given");
    NB_RETURN_IF(ctx, !j->plan.mix && !j->plan_path, NB_ERR_INVALID, "quantize: give a type (--type MIX) or a plan (--plan FILE)");
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
    else if (m == NB_METHOD_GPTQ && !j->calib_path)
        bad = "--method gptq needs --calib FILE";
    else if (m != NB_METHOD_GPTQ && j->gptq_opts_set)
        bad = "--damp, --block, --act-order and --static-groups need --method gptq";
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
static nb_status job_plan(const nb_quant_job *j, nb_quant_method m, nb_plan *p, nb_ctx *ctx) {
    nb_model *mdl = NULL;
    NB_TRY(nb_model_open(j->src, &mdl, ctx));
    nb_status st;
    if (j->plan_path) {
        st = nb_plan_load(j->plan_path, p, ctx);
        if (st == NB_OK) st = nb_plan_resolve(p, mdl, ctx);
    } else {
        nb_plan_opts po = j->plan;
        po.has_importance = j->imatrix_path || m == NB_METHOD_IMATRIX;
        st = nb_plan_make(mdl, &po, p, ctx);
    }
    nb_model_close(mdl);
    return st;
}

nb_status nb_quantize_job(const nb_quant_job *j, nb_quant_job_result *r, nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    r->plan.file_type = -1;
    NB_TRY(nb_quant_job_check(j, ctx));
    nb_quant_method m = resolved(j);
    r->method = m;
    NB_TRY(job_plan(j, m, &r->plan, ctx));
    size_t nrq = r->plan.n_requantized;
    NB_RETURN_IF(ctx, nrq && j->dst && !j->allow_requantize, NB_ERR_INVALID,
                 "%s: %zu tensor%s already quantized: requantizing adds a second rounding error to the first; "
                 "quantize from the F16/BF16/F32 original, or pass --allow-requantize to do it anyway", j->src, nrq,
                 nrq == 1 ? " is" : "s are");
    if (nrq)
        NB_WARN(ctx, "%s: %zu tensor%s already quantized: dequantizing and requantizing (errors add up; "
                "quantize from the F16/BF16/F32 original when you have it)", j->src, nrq, nrq == 1 ? " is" : "s are");
    if (!j->dst) return NB_OK;

    /* step 2: importance data */
    nb_imatrix im;
    nb_imatrix_init(&im);
    nb_imatrix_importance imu = {.im = &im};
    name_filter nf = {j, &imu};
    nb_quant_opts qo = {.report = j->report, .chunk_elems = j->chunk_elems};
    nb_status st = NB_OK;
    if (j->imatrix_path) {
        st = nb_imatrix_load_for_model(j->imatrix_path, j->src, &im, ctx);
        qo.importance = filtered_importance;
        qo.importance_user = &nf;
    } else if (m == NB_METHOD_IMATRIX) {
        nb_calib_opts co = {.calib_path = j->calib_path, .corpus = j->corpus};
        nb_routing rt;
        st = nb_calibrate(j->src, &co, &im, &rt, &r->calib, ctx);
        nb_routing_free(&rt);
        if (st == NB_OK) {
            r->calibrated = true;
            NB_INFO(ctx, "imatrix: %zu chunks (%llu tokens) in %.1f s", r->calib.n_chunks,
                    (unsigned long long)r->calib.n_tokens, r->calib.seconds);
        }
        qo.importance = filtered_importance;
        qo.importance_user = &nf;
    }

    /* step 3: the write */
    if (st == NB_OK && m == NB_METHOD_GPTQ) {
        nb_gptq_model_opts go = {.calib_path = j->calib_path, .corpus = j->corpus, .gptq = j->gptq,
                                 .compare_rtn = j->report};
        st = nb_gptq_quantize_model(j->src, j->dst, &r->plan, &qo, &go, &r->gptq, ctx);
        r->quant = r->gptq.quant;
        memset(&r->gptq.quant, 0, sizeof r->gptq.quant);
    } else if (st == NB_OK) {
        st = nb_quantize_model(j->src, j->dst, &r->plan, &qo, &r->quant, ctx);
    }
    nb_imatrix_importance_free(&imu);
    nb_imatrix_free(&im);
    return st;
}

void nb_quant_job_result_free(nb_quant_job_result *r) {
    if (!r) return;
    nb_plan_free(&r->plan);
    nb_quant_result_free(&r->quant);
    nb_gptq_model_result_free(&r->gptq);
    memset(r, 0, sizeof *r);
}
