/* cli/cmd_prune.c — `nibble prune MODEL (--calib FILE | --stats STATS.gguf)
 * (--keep N | --keep-ratio R) -o OUT.gguf [options]`: drop the least used MoE
 * experts. The work is in distill/prune.c and calib/calibrate.c. */
#include "calib/calibrate.h"
#include "cli/cli.h"
#include "core/afile.h"
#include "core/progress.h"
#include "distill/prune.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const HELP =
    "usage: nibble prune MODEL (--calib FILE | --stats STATS.gguf) (--keep N | --keep-ratio R) -o OUT.gguf\n"
    "                    [--criterion reap|freq] [--renormalize-topk] [--reduce-topk]\n"
    "                    [--eval FILE [--eval-ctx N] [--eval-chunks N]] [--json] [--report F.json]\n"
    "                    [--dry-run] [--threads N] [--quiet]\n\n"
    "Drop the experts of a mixture-of-experts model (mixtral, qwen2moe, qwen3moe) that the\n"
    "calibration text uses least, in every MoE layer: the stacked expert tensors and the router\n"
    "rows are cut to the kept experts (raw bytes: any quantized type works), expert_count is\n"
    "updated, everything else (shared experts included) is copied byte for byte.\n\n"
    "  --calib FILE         run calibration on FILE (text or token ids, as `nibble calibrate`)\n"
    "    --ctx N            tokens per calibration chunk (default 512)\n"
    "    --calib-tokens N   token budget: a seeded sample of ceil(N / ctx) chunks (default: all)\n"
    "    --seed S           sample seed (default 0)\n"
    "    --save-stats F     also write the statistics (GGUF imatrix) to F for later --stats runs\n"
    "  --stats F            routing statistics of a previous `nibble calibrate MODEL ... -o F`\n"
    "  --keep N             experts kept per layer (expert_used_count <= N <= expert_count)\n"
    "  --keep-ratio R       keep ceil(R x expert_count) experts per layer, 0 < R <= 1\n"
    "  --criterion C        reap (default): mean over routed tokens of gate weight x ||expert\n"
    "                       output||; freq: share of tokens routed to the expert. Ties keep the\n"
    "                       lower expert index.\n"
    "  --renormalize-topk   make the router renormalise the chosen experts' weights to sum 1\n"
    "                       (writes <arch>.expert_weights_norm; mixtral and qwen3moe already do;\n"
    "                       for qwen2moe only nibble's engine reads the key, not llama.cpp)\n"
    "  --reduce-topk        allow --keep below expert_used_count, which then becomes N\n"
    "  --eval FILE          perplexity of the original and the pruned model on FILE and the\n"
    "                       KL-divergence of the pruned one (llama-perplexity's method)\n"
    "    --eval-ctx N       tokens per evaluation chunk (default 512; FILE needs 2 x N tokens)\n"
    "    --eval-chunks N    evaluate at most N chunks (default: all)\n"
    "  -o, --output F       output GGUF file (required unless --dry-run)\n"
    "  --json               print the report as JSON on stdout\n"
    "  --report F           also write the JSON report to F\n"
    "  --dry-run            score and print the plan, write no model\n\n"
    "exit codes: 0 ok, 1 usage, 2 bad input (not a MoE model, --keep out of range, statistics\n"
    "missing or of another model), 3 I/O\n";

static bool parse_int(const char *s, int lo, int hi, int *out) {
    unsigned long long v;
    if (!s || !nb_cli_parse_u64(s, &v) || v < (unsigned long long)lo || v > (unsigned long long)hi) return false;
    *out = (int)v;
    return true;
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

static nb_status write_report(const char *path, const char *json, nb_ctx *ctx) {
    nb_afile f;
    NB_TRY(nb_afile_open(&f, path, false, ctx));
    nb_status st = nb_afile_write(&f, json, strlen(json), ctx);
    if (st == NB_OK) st = nb_afile_write(&f, "\n", 1, ctx);
    if (st == NB_OK) st = nb_afile_commit(&f, NULL, ctx);
    nb_afile_abort(&f);
    return st;
}

int nb_cmd_prune(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    const char *model = NULL, *out = NULL, *stats = NULL, *save_stats = NULL, *report = NULL;
    bool json = false, dry = false, keep_set = false, ratio_set = false;
    nb_prune_opts po = {.criterion = NB_PRUNE_REAP};
    nb_calib_opts co = {0};
    nb_prune_eval_opts eo = {0};
    int rc = NB_EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        int c = nb_cli_common_opt(&ctx, argc, argv, &i);
        if (c < 0) goto done;
        if (c) continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(HELP, stdout); rc = NB_EXIT_OK; goto done; }
        if (!strcmp(a, "--json")) { json = true; continue; }
        if (!strcmp(a, "--dry-run")) { dry = true; continue; }
        if (!strcmp(a, "--renormalize-topk")) { po.renormalize_topk = true; continue; }
        if (!strcmp(a, "--reduce-topk")) { po.reduce_topk = true; continue; }
        bool ok = v != NULL;
        unsigned long long u = 0;
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) out = v;
        else if (!strcmp(a, "--calib")) co.calib_path = v;
        else if (!strcmp(a, "--stats")) stats = v;
        else if (!strcmp(a, "--save-stats")) save_stats = v;
        else if (!strcmp(a, "--report")) report = v;
        else if (!strcmp(a, "--eval")) eo.text_path = v;
        else if (!strcmp(a, "--keep")) ok = parse_int(v, 1, 1 << 20, &po.keep), keep_set = true;
        else if (!strcmp(a, "--keep-ratio")) {
            char *end = NULL;
            po.keep_ratio = v ? strtod(v, &end) : 0;
            ok = v && end != v && !*end && po.keep_ratio > 0 && po.keep_ratio <= 1;
            ratio_set = true;
        } else if (!strcmp(a, "--criterion")) ok = nb_prune_criterion_from_name(v, &po.criterion);
        else if (!strcmp(a, "--ctx")) ok = parse_int(v, 2, 1 << 20, &co.corpus.n_ctx);
        else if (!strcmp(a, "--calib-tokens")) {
            ok = v && nb_cli_parse_u64(v, &u) && u > 0;
            co.corpus.max_tokens = u;
        } else if (!strcmp(a, "--seed")) {
            ok = v && nb_cli_parse_u64(v, &u);
            co.corpus.seed = u;
        } else if (!strcmp(a, "--eval-ctx")) ok = parse_int(v, 4, 1 << 20, &eo.n_ctx);
        else if (!strcmp(a, "--eval-chunks")) ok = parse_int(v, 1, 1 << 30, &eo.n_chunks);
        else if (a[0] == '-' || model) {
            fprintf(stderr, "nibble prune: unexpected argument '%s' (see --help)\n", a);
            goto done;
        } else { model = a; continue; }
        if (!ok) {
            fprintf(stderr, "nibble prune: %s needs %s\n", a,
                    !v ? "a value"
                       : !strcmp(a, "--criterion") ? "reap or freq"
                       : !strcmp(a, "--keep-ratio") ? "a number in (0, 1]"
                                                    : "a positive number in range");
            goto done;
        }
        i++;
    }
    const char *why = !model                      ? "missing MODEL"
                      : !co.calib_path && !stats  ? "missing statistics: give --calib FILE or --stats STATS.gguf"
                      : co.calib_path && stats    ? "--calib and --stats cannot be combined"
                      : !keep_set && !ratio_set   ? "missing --keep N or --keep-ratio R"
                      : keep_set && ratio_set     ? "--keep and --keep-ratio cannot be combined"
                      : !out && !dry              ? "missing -o OUT.gguf"
                      : save_stats && !co.calib_path ? "--save-stats needs --calib"
                      : dry && eo.text_path       ? "--eval needs a pruned model: not with --dry-run"
                                                  : NULL;
    if (why) {
        fprintf(stderr, "nibble prune: %s\nusage: nibble prune MODEL (--calib FILE | --stats STATS.gguf) "
                        "(--keep N | --keep-ratio R) -o OUT.gguf   (--help for more)\n", why);
        goto done;
    }

    nb_status st = NB_OK;
    nb_routing rt = {0};
    nb_imatrix im;
    nb_imatrix_init(&im);
    nb_model *m = NULL;
    nb_prune_plan plan = {0};
    nb_prune_result res = {0};
    nb_prune_eval ev = {0};
    bool have_res = false, have_ev = false;
    char *js = NULL;
    FILE *info = json ? stderr : stdout;

    /* Check the model before a possibly long calibration run. */
    NB_CHECK_GOTO(st, nb_model_open(model, &m, &ctx), fail);
    NB_CHECK_GOTO(st, nb_prune_check_model(m, &po, &ctx), fail);
    if (stats) {
        NB_CHECK_GOTO(st, nb_prune_load_stats(stats, &rt, &ctx), fail);
    } else {
        nb_calib_result cr;
        co.dataset_name = co.calib_path;
        NB_CHECK_GOTO(st, nb_calibrate(model, &co, &im, &rt, &cr, &ctx), fail);
        if (!ctx.quiet)
            fprintf(stderr, "nibble prune: calibrated on %zu chunks (%llu tokens) in %.2f s\n", cr.n_chunks,
                    (unsigned long long)cr.n_tokens, cr.seconds);
        if (save_stats) NB_CHECK_GOTO(st, nb_imatrix_write_gguf(&im, save_stats, &ctx), fail);
    }
    NB_CHECK_GOTO(st, nb_prune_plan_build(m, &rt, &po, &plan, &ctx), fail);
    if (plan.norm_warning[0]) NB_WARN(&ctx, "%s", plan.norm_warning);
    if (!dry) {
        NB_CHECK_GOTO(st, nb_prune_write(m, &plan, out, &res, &ctx), fail);
        have_res = true;
    }
    nb_model_close(m);
    m = NULL;
    if (!json && !ctx.quiet) print_plan(info, &plan);
    if (have_res && eo.text_path) {
        st = nb_prune_evaluate(model, out, &eo, &ev, &ctx);
        if (st != NB_OK) goto fail; /* the pruned model stays: it is complete and correct */
        have_ev = true;
    }
    if (json || report) {
        js = nb_prune_report_json(&plan, model, dry ? NULL : out, have_res ? &res : NULL, have_ev ? &ev : NULL);
        if (!js) { st = nb_err(&ctx, NB_ERR_NOMEM, "JSON report"); goto fail; }
        if (report) NB_CHECK_GOTO(st, write_report(report, js, &ctx), fail);
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
    nb_prune_plan_free(&plan);
    nb_model_close(m);
    nb_imatrix_free(&im);
    nb_routing_free(&rt);
done:
    nb_ctx_free(&ctx);
    return rc;
}
