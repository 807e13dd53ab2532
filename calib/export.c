/* calib/export.c — quantization jobs written as Hugging Face directories (see calib/export.h). */
#include "calib/export.h"

#include "core/adir.h"
#include "formats/arch.h"

#include <stdlib.h>
#include <string.h>

static const char *mix_name(const nb_quant_job *j) {
    return j->plan.mix ? j->plan.mix->name : j->budget.kind != NB_BUDGET_NONE ? "a planned mix (size budget)" : "(plan)";
}

/* bnb-nf4 with a calibrated method (imatrix, gptq, awq, ...): the job runs
 * into a staging GGUF and its NF4 blocks are repacked as they are. Without
 * one, bitsandbytes' own quantizer runs on the source (any shape). */
static bool bnb_calibrated(const nb_quant_job *j) {
    return (j->method != NB_METHOD_AUTO && j->method != NB_METHOD_RTN) || j->imatrix_path || j->calib_path;
}

/* The decoder Linears of a planned job (dense and stacked experts). */
static bool is_export_linear(const nb_plan_tensor *t) {
    return (nb_hf_is_linear(t->name) && t->n_dims == 2) || (nb_arch_is_expert_stack(t->name) && t->n_dims == 3);
}

nb_status nb_quant_export_check_plan(const nb_quant_job *job, const nb_plan *plan, nb_hf_quant fmt, nb_ctx *ctx) {
    if (fmt == NB_HF_PLAIN || (fmt == NB_HF_BNB_NF4 && !bnb_calibrated(job))) return NB_OK;
    /* bnb-nf4: the mix's NF4 type exactly; GPTQ/AWQ: one INT4 type with sizes multiple of 8 */
    nb_type want = fmt == NB_HF_BNB_NF4 && job->plan.mix ? job->plan.mix->base : NB_TYPE_COUNT;
    const char *f = nb_hf_quant_name(fmt);
    nb_status st = NB_OK;
    for (size_t i = 0; st == NB_OK && i < plan->n_tensors; i++) {
        const nb_plan_tensor *t = &plan->tensors[i];
        if (!is_export_linear(t)) continue;
        long long N = (long long)t->ne[1], K = (long long)t->ne[0];
        if (fmt == NB_HF_BNB_NF4) {
            if (t->type == want) continue;
            if (want == NB_TYPE_NF4_DQ)
                st = nb_err(ctx, NB_ERR_UNSUPPORTED,
                            "%s: tensor '%s' (%lld x %lld) would be %s: a calibrated --format bnb-nf4 with double "
                            "quantization is exact only for rows that are multiples of 16384 (one bitsandbytes "
                            "nested block; otherwise the job's scales would be 8-bit quantized after its codes were "
                            "chosen): use --type nf4 (fp32 absmax: exact for rows that are multiples of 64) or --method rtn",
                            job->src, t->name, N, K, nb_type_name(t->type));
            else
                st = nb_err(ctx, NB_ERR_UNSUPPORTED,
                            "%s: tensor '%s' (%lld x %lld) would be %s: a calibrated --format bnb-nf4 needs every "
                            "linear weight in nf4 (rows a multiple of 64; --method rtn quantizes any shape with "
                            "bitsandbytes' flat blocks)", job->src, t->name, N, K, nb_type_name(t->type));
            continue;
        }
        const nb_type_traits *tr = nb_type_get(t->type);
        if (!tr || !tr->group)
            st = nb_err(ctx, NB_ERR_UNSUPPORTED,
                        "%s: tensor '%s' (%lld x %lld) would be %s: --format %s needs every linear weight in "
                        "one INT4 type (a row length the group does not divide falls back; try --group 32)",
                        job->src, t->name, N, K, nb_type_name(t->type), f);
        else if (want != NB_TYPE_COUNT && t->type != want)
            st = nb_err(ctx, NB_ERR_UNSUPPORTED,
                        "%s: tensor '%s' would be %s but others are %s: --format %s holds one group size and "
                        "symmetry (drop the --rule that changes it)",
                        job->src, t->name, nb_type_name(t->type), nb_type_name(want), f);
        else if (K % 8 || N % 8)
            st = nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: tensor '%s' is %lld x %lld: --format %s packs 8 values per "
                        "int32 and needs both multiples of 8", job->src, t->name, N, K, f);
        want = tr && tr->group ? t->type : want;
    }
    return st;
}

/* Plan the job (cheap, no quantization) and check its plan for the layout. */
static nb_status check_linears(const nb_quant_job *job, nb_hf_quant fmt, nb_ctx *ctx) {
    nb_quant_job dry = *job;
    dry.dst = NULL;
    nb_quant_job_result pr = {0};
    nb_status st = nb_quantize_job(&dry, &pr, ctx);
    if (st == NB_OK) st = nb_quant_export_check_plan(job, &pr.plan, fmt, ctx);
    nb_quant_job_result_free(&pr);
    return st;
}

nb_status nb_quant_export_gguf(const nb_quant_job *job, nb_hf_quant fmt, const char *gguf, const char *dst,
                               nb_hf_write_result *hr, nb_ctx *ctx) {
    memset(hr, 0, sizeof *hr);
    nb_hf_write_opts ho = {.quant = fmt};
    if (fmt == NB_HF_BNB_NF4) {
        NB_RETURN_IF(ctx, !job->plan.mix, NB_ERR_INVALID, "quantize: --format bnb-nf4 needs --type nf4 or nf4-dq");
        ho.bnb_no_double_quant = job->plan.mix->base == NB_TYPE_NF4;
        if (!bnb_calibrated(job)) return nb_hf_write_path(job->src, dst, &ho, hr, ctx); /* bitsandbytes' quantizer */
    } else if (fmt != NB_HF_PLAIN) {
        ho.dtype = NB_TYPE_F16; /* GPTQ / AWQ kernels compute in fp16 */
        ho.dtype_set = true;
        ho.gptq_desc_act = job->gptq.act_order;
        ho.gptq_static_groups = job->gptq.static_groups;
        ho.gptq_damp = job->gptq.damp;
    }
    NB_RETURN_IF(ctx, !gguf, NB_ERR_INVALID, "export %s: no GGUF to write from", nb_hf_quant_name(fmt));
    return nb_hf_write_path(gguf, dst, &ho, hr, ctx);
}

/* Run the job into DST.stage.partial.XXXXXX/stage.gguf, write DST from it, remove the stage. */
static nb_status run_staged(const nb_quant_job *job, nb_hf_quant fmt, nb_quant_job_result *r, nb_hf_write_result *hr,
                            nb_ctx *ctx) {
    size_t n = strlen(job->dst);
    char *stage_name = nb_malloc(ctx, n + sizeof ".stage", "path");
    if (!stage_name) return NB_ERR_NOMEM;
    memcpy(stage_name, job->dst, n);
    memcpy(stage_name + n, ".stage", sizeof ".stage");
    nb_adir stage;
    nb_status st = nb_adir_open(&stage, stage_name, ctx);
    free(stage_name);
    if (st != NB_OK) return st;
    char *gguf = nb_adir_file(&stage, "stage.gguf", ctx);
    if (!gguf) st = NB_ERR_NOMEM;
    if (st == NB_OK) {
        nb_quant_job j2 = *job;
        j2.dst = gguf;
        st = nb_quantize_job(&j2, r, ctx);
    }
    if (st == NB_OK) st = nb_quant_export_gguf(job, fmt, gguf, job->dst, hr, ctx);
    free(gguf);
    nb_adir_abort(&stage);
    return st;
}

nb_status nb_quant_export_check(const nb_quant_job *j, nb_hf_quant fmt, nb_ctx *ctx) {
    const char *f = nb_hf_quant_name(fmt);
    NB_RETURN_IF(ctx, fmt == NB_HF_PLAIN, NB_ERR_INVALID,
                 "quantize: --format hf writes no quantized layout: use `nibble convert --format hf`");
    nb_type base = j->plan.mix ? j->plan.mix->base : NB_TYPE_COUNT;
    if (fmt == NB_HF_BNB_NF4) {
        NB_RETURN_IF(ctx, base != NB_TYPE_NF4 && base != NB_TYPE_NF4_DQ, NB_ERR_INVALID,
                     "quantize: --format bnb-nf4 holds bitsandbytes NF4 only: use --type nf4-dq (double "
                     "quantization) or nf4 (got %s)", mix_name(j));
        NB_RETURN_IF(ctx, j->plan_path || j->budget.kind != NB_BUDGET_NONE || (j->plan.rules && j->plan.rules->n) ||
                              j->plan.pure,
                     NB_ERR_INVALID,
                     "quantize: --format bnb-nf4 quantizes every decoder Linear as bitsandbytes does: drop --plan, "
                     "--rule, --pure and the budget options");
        return bnb_calibrated(j) ? nb_quant_job_check(j, ctx) : NB_OK;
    }
    NB_RETURN_IF(ctx, j->budget.kind != NB_BUDGET_NONE, NB_ERR_INVALID,
                 "quantize: a size budget mixes types; --format %s needs every linear weight in one INT4 type", f);
    if (j->plan.mix) {
        const nb_type_traits *tr = nb_type_get(base);
        NB_RETURN_IF(ctx, !tr || !tr->group, NB_ERR_INVALID,
                     "quantize: --format %s holds group-wise INT4 only: use --type int4-g128, int4-asym-g128 (or "
                     "g32 / g64 variants) (got %s)", f, mix_name(j));
    }
    return nb_quant_job_check(j, ctx);
}

nb_status nb_quantize_export(const nb_quant_job *job, nb_hf_quant fmt, nb_quant_job_result *r,
                             nb_hf_write_result *hr, nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    memset(hr, 0, sizeof *hr);
    NB_TRY(nb_quant_export_check(job, fmt, ctx));
    NB_RETURN_IF(ctx, !job->dst, NB_ERR_INVALID, "quantize: --format %s needs -o DIR", nb_hf_quant_name(fmt));
    if (fmt == NB_HF_BNB_NF4 && !bnb_calibrated(job)) {
        r->method = NB_METHOD_RTN;
        return nb_quant_export_gguf(job, fmt, NULL, job->dst, hr, ctx);
    }
    NB_TRY(check_linears(job, fmt, ctx));
    return run_staged(job, fmt, r, hr, ctx);
}
