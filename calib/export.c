/* calib/export.c — quantization jobs written as Hugging Face directories (see calib/export.h). */
#include "calib/export.h"

#include "core/adir.h"

#include <stdlib.h>
#include <string.h>

static const char *mix_name(const nb_quant_job *j) { return j->plan.mix ? j->plan.mix->name : "(plan)"; }

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
        NB_RETURN_IF(ctx, (j->method != NB_METHOD_AUTO && j->method != NB_METHOD_RTN) || j->imatrix_path ||
                              j->calib_path,
                     NB_ERR_INVALID,
                     "quantize: --format bnb-nf4 stores what bitsandbytes' own quantizer produces (absmax "
                     "scales): only --method rtn; for calibrated 4-bit use --type int4-g128 --format gptq");
        return NB_OK;
    }
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
    nb_hf_write_opts ho = {.quant = fmt};
    if (fmt == NB_HF_BNB_NF4) {
        r->method = NB_METHOD_RTN;
        ho.bnb_no_double_quant = job->plan.mix->base == NB_TYPE_NF4;
        return nb_hf_write_path(job->src, job->dst, &ho, hr, ctx);
    }
    NB_RETURN_IF(ctx, job->budget.kind != NB_BUDGET_NONE, NB_ERR_INVALID,
                 "quantize: a size budget mixes types; --format %s needs every linear weight in one INT4 type",
                 nb_hf_quant_name(fmt));
    /* the plan first (cheap): every decoder Linear must come out in one INT4 type that packs */
    nb_quant_job dry = *job;
    dry.dst = NULL;
    nb_quant_job_result pr = {0};
    nb_status st = nb_quantize_job(&dry, &pr, ctx);
    nb_type want = NB_TYPE_COUNT;
    for (size_t i = 0; st == NB_OK && i < pr.plan.n_tensors; i++) {
        const nb_plan_tensor *t = &pr.plan.tensors[i];
        if (!nb_hf_is_linear(t->name) || t->n_dims != 2) continue;
        const nb_type_traits *tr = nb_type_get(t->type);
        if (!tr || !tr->group)
            st = nb_err(ctx, NB_ERR_UNSUPPORTED,
                        "%s: tensor '%s' (%lld x %lld) would be %s: --format %s needs every linear weight in "
                        "one INT4 type (a row length the group does not divide falls back; try --group 32)",
                        job->src, t->name, (long long)t->ne[1], (long long)t->ne[0], nb_type_name(t->type),
                        nb_hf_quant_name(fmt));
        else if (want != NB_TYPE_COUNT && t->type != want)
            st = nb_err(ctx, NB_ERR_UNSUPPORTED,
                        "%s: tensor '%s' would be %s but others are %s: --format %s holds one group size and "
                        "symmetry (drop the --rule that changes it)",
                        job->src, t->name, nb_type_name(t->type), nb_type_name(want), nb_hf_quant_name(fmt));
        else if (t->ne[0] % 8 || t->ne[1] % 8)
            st = nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: tensor '%s' is %lld x %lld: --format %s packs 8 values per "
                        "int32 and needs both multiples of 8", job->src, t->name, (long long)t->ne[1],
                        (long long)t->ne[0], nb_hf_quant_name(fmt));
        want = tr && tr->group ? t->type : want;
    }
    nb_quant_job_result_free(&pr);
    if (st != NB_OK) return st;
    ho.dtype = NB_TYPE_F16; /* GPTQ / AWQ kernels compute in fp16 */
    ho.dtype_set = true;
    ho.gptq_desc_act = job->gptq.act_order;
    ho.gptq_static_groups = job->gptq.static_groups;
    ho.gptq_damp = job->gptq.damp;
    size_t n = strlen(job->dst);
    char *stage_name = nb_malloc(ctx, n + sizeof ".stage", "path");
    if (!stage_name) return NB_ERR_NOMEM;
    memcpy(stage_name, job->dst, n);
    memcpy(stage_name + n, ".stage", sizeof ".stage");
    nb_adir stage;
    st = nb_adir_open(&stage, stage_name, ctx);
    free(stage_name);
    if (st != NB_OK) return st;
    char *gguf = nb_adir_file(&stage, "stage.gguf", ctx);
    if (!gguf) st = NB_ERR_NOMEM;
    if (st == NB_OK) {
        nb_quant_job j2 = *job;
        j2.dst = gguf;
        st = nb_quantize_job(&j2, r, ctx);
    }
    if (st == NB_OK) st = nb_hf_write_path(gguf, job->dst, &ho, hr, ctx);
    free(gguf);
    nb_adir_abort(&stage);
    return st;
}
