/* cli/cmd_prune.c — `nibble prune MODEL (--calib FILE | --stats STATS.gguf)
 * (--keep N | --keep-ratio R) -o OUT.gguf [options]`: drop the least used MoE
 * experts. The work is in distill/prune.c and calib/calibrate.c. */
#include "calib/calibrate.h"
#include "cli/cli.h"
#include "core/afile.h"
#include "core/progress.h"
#include "distill/prune_job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static nb_status set_criterion(const nb_opt *opt, const char *arg, nb_ctx *ctx) {
    if (!nb_prune_criterion_from_name(arg, opt->dest))
        return nb_err(ctx, NB_ERR_INVALID, "--criterion needs reap or freq (got '%s')", arg);
    return NB_OK;
}

static void print_plan(FILE *f, const nb_prune_plan *p) {
    for (int i = 0; i < p->n_layer; i++) {
        const nb_prune_layer *pl = &p->layers[i];
        fprintf(f, "layer %d (%.0f tokens): kept", pl->layer, pl->n_tok);
        for (int k = 0; k < p->n_keep; k++) fprintf(f, " %d:%.4g", pl->kept[k], pl->experts[pl->kept[k]].score);
        fprintf(f, " | dropped");
        for (int k = 0; k < p->n_expert - p->n_keep; k++)
            fprintf(f, " %d:%.4g", pl->dropped[k], pl->experts[pl->dropped[k]].score);
        fputc('\n', f);
    }
}

int nb_cmd_prune(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    const char *out = NULL, *stats = NULL, *save_stats = NULL, *report = NULL, *plan_path = NULL;
    bool json = false, dry = false, keep_set = false, ratio_set = false;
    nb_prune_opts po = {.criterion = NB_PRUNE_REAP};
    nb_calib_opts co = {0};
    nb_prune_eval_opts eo = {0};
    const nb_opt opts[] = {
        {.name = "calib", .type = NB_OPT_STR, .dest = &co.calib_path, .meta = "FILE",
         .help = "run calibration on FILE (text or token ids, as `nibble calibrate`)"},
        {.name = "ctx", .type = NB_OPT_INT, .dest = &co.corpus.n_ctx, .meta = "N", .lo = 2, .hi = 1 << 20,
         .flags = NB_OPT_SUB, .help = "tokens per calibration chunk (default 512)"},
        {.name = "calib-tokens", .type = NB_OPT_U64, .dest = &co.corpus.max_tokens, .meta = "N", .lo = 1,
         .hi = (double)UINT64_MAX, .flags = NB_OPT_SUB,
         .help = "token budget: a seeded sample of ceil(N / ctx) chunks (default: all)"},
        {.name = "seed", .type = NB_OPT_U64, .dest = &co.corpus.seed, .meta = "S", .flags = NB_OPT_SUB,
         .help = "sample seed (default 0)"},
        {.name = "save-stats", .type = NB_OPT_STR, .dest = &save_stats, .meta = "F", .flags = NB_OPT_SUB | NB_OPT_OUTPUT,
         .help = "also write the statistics (GGUF imatrix) to F for later --stats runs"},
        {.name = "stats", .type = NB_OPT_STR, .dest = &stats, .meta = "F",
         .help = "routing statistics of a previous `nibble calibrate MODEL ... -o F`"},
        {.name = "keep", .type = NB_OPT_INT, .dest = &po.keep, .given = &keep_set, .meta = "N", .lo = 1, .hi = 1 << 20,
         .help = "experts kept per layer (expert_used_count <= N <= expert_count)"},
        {.name = "keep-ratio", .type = NB_OPT_DOUBLE, .dest = &po.keep_ratio, .given = &ratio_set, .meta = "R", .lo = 0,
         .hi = 1, .flags = NB_OPT_LO_OPEN, .help = "keep ceil(R x expert_count) experts per layer, 0 < R <= 1"},
        {.name = "plan", .type = NB_OPT_STR, .dest = &plan_path, .meta = "PLAN.json",
         .help = "keep as many experts as this size-budget plan decided (nibble plan\n"
                 "--allow-prune), by its criterion; check that the statistics keep the\n"
                 "plan's experts. Then `nibble quantize OUT --plan PLAN.json`"},
        {.name = "criterion", .type = NB_OPT_CALL, .fn = set_criterion, .dest = &po.criterion, .meta = "C",
         .help = "reap (default): mean over routed tokens of gate weight x ||expert\n"
                 "output||; freq: share of tokens routed to the expert. Ties keep the\n"
                 "lower expert index."},
        {.name = "renormalize-topk", .type = NB_OPT_FLAG, .dest = &po.renormalize_topk,
         .help = "make the router renormalise the chosen experts' weights to sum 1\n"
                 "(writes <arch>.expert_weights_norm; mixtral and qwen3moe already do;\n"
                 "for qwen2moe only nibble's engine reads the key, not llama.cpp)"},
        {.name = "reduce-topk", .type = NB_OPT_FLAG, .dest = &po.reduce_topk,
         .help = "allow --keep below expert_used_count, which then becomes N"},
        {.name = "eval", .type = NB_OPT_STR, .dest = &eo.text_path, .meta = "FILE",
         .help = "perplexity of the original and the pruned model on FILE and the\n"
                 "KL-divergence of the pruned one (llama-perplexity's method)"},
        {.name = "eval-ctx", .type = NB_OPT_INT, .dest = &eo.n_ctx, .meta = "N", .lo = 4, .hi = 1 << 20,
         .flags = NB_OPT_SUB, .help = "tokens per evaluation chunk (default 512; FILE needs 2 x N tokens)"},
        {.name = "eval-chunks", .type = NB_OPT_INT, .dest = &eo.n_chunks, .meta = "N", .lo = 1, .hi = 1 << 30,
         .flags = NB_OPT_SUB, .help = "evaluate at most N chunks (default: all)"},
        {.name = "output", .short_name = 'o', .type = NB_OPT_STR, .dest = &out, .meta = "F", .flags = NB_OPT_OUTPUT,
         .help = "output GGUF file (required unless --dry-run)"},
        {.name = "json", .type = NB_OPT_FLAG, .dest = &json, .help = "print the report as JSON on stdout"},
        {.name = "report", .type = NB_OPT_STR, .dest = &report, .meta = "F", .flags = NB_OPT_OUTPUT,
         .help = "also write the JSON report to F"},
        {.name = "dry-run", .type = NB_OPT_FLAG, .dest = &dry, .help = "score and print the plan, write no model"},
    };
    const nb_cmd_spec spec = {
        .name = "prune",
        .usage = "MODEL (--calib FILE | --stats STATS.gguf) (--keep N | --keep-ratio R | --plan PLAN.json)\n"
                 "-o OUT.gguf\n"
                 "[--criterion reap|freq] [--renormalize-topk] [--reduce-topk]\n"
                 "[--eval FILE [--eval-ctx N] [--eval-chunks N]] [--json] [--report F.json]\n"
                 "[--dry-run] [--threads N] [--quiet]",
        .about = "Drop the experts of a mixture-of-experts model (mixtral, qwen2moe, qwen3moe) that the\n"
                 "calibration text uses least, in every MoE layer: the stacked expert tensors and the router\n"
                 "rows are cut to the kept experts (raw bytes: any quantized type works), expert_count is\n"
                 "updated, everything else (shared experts included) is copied byte for byte.",
        NB_OPTS_TABLE(opts),
        .epilogue = "exit codes: 0 ok, 1 usage, 2 bad input (not a MoE model, --keep out of range, statistics\n"
                    "missing or of another model), 3 I/O",
        NB_OPTS_ONE_POS("MODEL"),
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    if (rc != NB_OPTS_RUN) goto done;
    const char *model = args.pos[0];
    const char *why = !co.calib_path && !stats    ? "missing statistics: give --calib FILE or --stats STATS.gguf"
                      : co.calib_path && stats    ? "--calib and --stats cannot be combined"
                      : !keep_set && !ratio_set && !plan_path ? "missing --keep N, --keep-ratio R or --plan PLAN.json"
                      : keep_set + ratio_set + !!plan_path > 1 ? "give one of --keep, --keep-ratio and --plan"
                      : !out && !dry              ? "missing -o OUT.gguf"
                      : save_stats && !co.calib_path ? "--save-stats needs --calib"
                      : dry && eo.text_path       ? "--eval needs a pruned model: not with --dry-run"
                                                  : NULL;
    if (why) {
        rc = nb_opts_usage_error(&spec, &args, "%s", why);
        goto done;
    }
    rc = nb_cli_check_paths("prune", &ctx, NB_CLI_PATHS(model, co.calib_path, stats, eo.text_path, plan_path),
                            NB_CLI_PATHS(dry ? NULL : out, save_stats, report));
    if (rc != NB_OPTS_RUN) goto done;

    nb_prune_job job = {.src = model, .dst = dry ? NULL : out, .stats_path = stats, .calib = co,
                        .save_stats = save_stats, .prune = po, .plan_path = plan_path};
    nb_prune_job_result jr = {0};
    nb_prune_eval ev = {0};
    bool have_ev = false;
    char *js = NULL;
    FILE *info = json ? stderr : stdout;
    nb_status st = nb_prune_job_run(&job, &jr, &ctx);
    if (st != NB_OK) goto fail;
    const nb_prune_plan plan = jr.plan;
    const nb_prune_result res = jr.write;
    const bool have_res = jr.written;
    if (jr.calibrated && !ctx.quiet)
        fprintf(stderr, "nibble prune: calibrated on %zu chunks (%llu tokens) in %.2f s\n", jr.calib.n_chunks,
                (unsigned long long)jr.calib.n_tokens, jr.calib.seconds);
    if (!json && !ctx.quiet) print_plan(info, &plan);
    if (have_res && eo.text_path) {
        st = nb_prune_evaluate(model, out, &eo, &ev, &ctx);
        if (st != NB_OK) goto fail; /* the pruned model stays: it is complete and correct */
        have_ev = true;
    }
    if (json || report) {
        js = nb_prune_report_json(&plan, model, dry ? NULL : out, have_res ? &res : NULL, have_ev ? &ev : NULL);
        if (!js) { st = nb_err(&ctx, NB_ERR_NOMEM, "JSON report"); goto fail; }
        if (report && (st = nb_afile_write_text(report, js, &ctx)) != NB_OK) {
            if (have_res) nb_err_prefix(&ctx, "%s is complete, but the report failed", out);
            goto fail;
        }
        if (json) printf("%s\n", js);
    }
    if (!ctx.quiet) {
        fprintf(info, "%s: %d -> %d experts per layer in %d MoE layers (criterion %s", model, plan.n_expert,
                plan.n_keep, plan.n_layer, nb_prune_criterion_name(plan.criterion));
        if (plan.n_used_new != plan.n_used) fprintf(info, ", expert_used_count %d -> %d", plan.n_used, plan.n_used_new);
        if (plan.write_norm_key) fprintf(info, ", top-k renormalised");
        fprintf(info, ")");
        if (have_res) {
            char a[32], b[32], hex[65];
            for (int k = 0; k < 32; k++) snprintf(hex + 2 * k, 3, "%02x", res.sha256[k]);
            fprintf(info, " -> %s: %s of tensors -> %s file in %.2f s, sha256 %s", out,
                    nb_fmt_bytes((double)res.bytes_in, a, sizeof a), nb_fmt_bytes((double)res.bytes_out, b, sizeof b),
                    res.seconds, hex);
        } else {
            fprintf(info, " (dry run: nothing written)");
        }
        fputc('\n', info);
        if (have_ev) {
            fprintf(info, "eval %s (%d chunks x %d tokens, %zu scored): PPL original %.4f +/- %.4f, pruned %.4f +/- %.4f",
                    eo.text_path, ev.pruned.n_chunk, ev.pruned.n_ctx, ev.pruned.n_scored, ev.base.ppl,
                    ev.base.ppl_err, ev.pruned.ppl, ev.pruned.ppl_err);
            if (ev.pruned.has_kld)
                fprintf(info, "; mean KLD %.6f +/- %.6f, same top token %.2f%%", ev.pruned.kld.kld,
                        ev.pruned.kld.kld_err, 100.0 * ev.pruned.kld.same_top);
            fputc('\n', info);
        }
    }
    rc = NB_EXIT_OK;
fail:
    if (st != NB_OK) rc = nb_cli_fail("prune", &ctx, st);
    free(js);
    nb_prune_eval_free(&ev);
    nb_prune_job_result_free(&jr);
done:
    nb_ctx_free(&ctx);
    return rc;
}
