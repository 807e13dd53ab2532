/* cli/cmd_plan.c — `nibble plan MODEL (--target-size SIZE | --target-bpw X |
 * --budget SIZE --ctx N) [--imatrix F | --calib TEXT] [-o PLAN.json] [--json]`:
 * options and printing only; the planner is quant/budget.h, run through
 * nb_quantize_job (calib/job.h) as a dry run. */
#include "calib/job.h"
#include "cli/cli.h"
#include "cli/opts.h"
#include "core/afile.h"
#include "formats/json_strict.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* {"budget": totals, "plan": plan} (malloc'd), or NULL. */
static char *plan_json(const nb_quant_job_result *r, const nb_budget *b) {
    char *pj = nb_plan_to_json(&r->plan), *bj = nb_budget_result_json(&r->budget, b), *out = NULL, *cj = NULL;
    if (r->group_cal.n) {
        /* calibrated predictions: each group's factor */
        cJSON *a = cJSON_CreateArray();
        for (size_t g = 0; a && g < r->group_cal.n; g++) {
            const nb_group_cal_entry *e = &r->group_cal.groups[g];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "group", e->name);
            cJSON_AddNumberToObject(o, "tensors", (double)e->n_tensors);
            cJSON_AddNumberToObject(o, "predicted", e->predicted);
            cJSON_AddStringToObject(o, "metric", r->group_cal.metric);
            cJSON_AddNumberToObject(o, "score", e->kld);
            if (!strcmp(r->group_cal.metric, "kld")) cJSON_AddNumberToObject(o, "kld", e->kld);
            cJSON_AddNumberToObject(o, "bpw", e->bpw);
            cJSON_AddNumberToObject(o, "factor", e->factor);
            cJSON_AddItemToArray(a, o);
        }
        cj = a ? nb_json_print(a, false) : NULL;
        cJSON_Delete(a);
    }
    if (pj && bj) {
        size_t n = strlen(pj) + strlen(bj) + (cj ? strlen(cj) : 0) + 96;
        out = malloc(n);
        if (out) snprintf(out, n, "{\"budget\":%s,\"measure_seconds\":%.3f,%s%s%s\"plan\":%s}", bj, r->seconds_measure,
                          cj ? "\"calibration\":" : "", cj ? cj : "", cj ? "," : "", pj);
    }
    free(pj);
    free(bj);
    free(cj);
    return out;
}

int nb_cmd_plan(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    nb_quant_job job = {0};
    nb_quant_job_result res = {0};
    nb_cli_budget bo = {0};
    nb_rules rules;
    nb_rules_init(&rules);
    const char *out_path = NULL;
    bool json = false;
    int method = 0;
    double method_seconds = 0, method_lambda = 0;
    static const nb_opt_choice methods[] = {{"imatrix", 0}, {"mixed", 1}, {NULL, 0}};
    const nb_opt opts[] = {
        NB_CLI_BUDGET_ROWS(bo, "ctx"),
        {.name = "rule", .type = NB_OPT_CALL, .fn = nb_cli_add_rule, .dest = &rules, .meta = "PAT=TYPE",
         .help = "pin the tensors PAT names to TYPE (glob over the whole name or 're:REGEX', as\n"
                 "quantize's --rule); the budget is spent on the others. Repeatable"},
        {.name = "output", .short_name = 'o', .type = NB_OPT_STR, .dest = &out_path, .meta = "PLAN.json",
         .flags = NB_OPT_OUTPUT, .help = "write the plan (what `nibble quantize --plan` applies)"},
        {.name = "json", .type = NB_OPT_FLAG, .dest = &json,
         .help = "JSON lines on stdout: progress events, then {\"budget\": totals, \"plan\": the plan}\n"
                 "(the table goes to stderr)"},
        {.name = "imatrix", .type = NB_OPT_STR, .dest = &job.imatrix_path, .meta = "STATS",
         .help = "importance matrix (nibble calibrate / llama-imatrix): errors weighted by it, and\n"
                 "experts by its routing statistics; quantize with the same file"},
        {.name = "calib", .type = NB_OPT_STR, .dest = &job.calib_path, .meta = "TEXT",
         .help = "collect the importance matrix from this calibration text first"},
        NB_CLI_CORPUS_ROWS(job.corpus, "calib-ctx"),
        {.name = "method", .type = NB_OPT_CHOICE, .dest = &method, .choices = methods, .meta = "M",
         .help = "mixed: choose GPTQ, AWQ (per block attention / FFN) or imatrix rounding\n"
                 "per tensor as well (needs --calib; docs/planner.md \"Methods per tensor\");\n"
                 "imatrix: types only (default)"},
        NB_CLI_METHOD_MIX_ROWS(method_seconds, method_lambda),
    };
    const nb_cmd_spec spec = {
        .name = "plan",
        .usage = "MODEL (--target-size SIZE | --target-bpw X | --budget SIZE --ctx N [--kv-type T]\n"
                 "[--overhead SIZE]) [--runtime llama.cpp|nibble] [--imatrix STATS | --calib TEXT]\n"
                 "[--sample-rows N] [--method mixed --calib TEXT [--method-time-budget S | --method-lambda X]]\n"
                 "[--rule PAT=TYPE ...] [-o PLAN.json] [--json]",
        .about = "Choose a type for every tensor so the model fits a size: the file (--target-size), bits per\n"
                 "weight (--target-bpw) or the runtime's memory at a context (--budget: weights + KV cache +\n"
                 "compute + overhead), spending bits where the measured error (importance-weighted, on\n"
                 "sampled rows) is largest. Prints a table per tensor group and the totals; -o writes the\n"
                 "plan, which `nibble quantize MODEL --plan PLAN.json -o OUT.gguf` applies (the file is\n"
                 "then exactly the predicted size). docs/planner.md.",
        NB_OPTS_TABLE(opts),
        .epilogue = "exit codes: 0 ok, 1 usage, 2 bad input (a budget below the smallest achievable size, --ctx\n"
                    "beyond the model's context, an imatrix without entries for the model's tensors), 3 I/O\n",
        NB_OPTS_ONE_POS("MODEL"),
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    if (rc != NB_OPTS_RUN) goto done;
    job.measure_state = bo.measure_state;
    job.group_cal = (nb_group_cal_opts){.text_path = bo.cal_text, .n_ctx = bo.cal_ctx, .n_chunks = bo.cal_chunks};
    rc = nb_cli_budget_finish(&spec, &args, &bo, "ctx", &job.budget);
    if (rc != NB_OPTS_RUN) goto done;
    if (job.budget.kind == NB_BUDGET_NONE) {
        rc = nb_opts_usage_error(&spec, &args, "give --target-size SIZE, --target-bpw X or --budget SIZE --ctx N");
        goto done;
    }
    if (job.imatrix_path && job.calib_path && method != 1) {
        rc = nb_opts_usage_error(&spec, &args, "give --imatrix STATS or --calib TEXT, not both (both: --method mixed)");
        goto done;
    }
    if (json) nb_cli_json_events(&ctx);
    job.src = args.pos[0];
    job.sample_rows = bo.sample_rows;
    job.plan.rules = &rules;
    job.method = job.calib_path ? NB_METHOD_IMATRIX : NB_METHOD_AUTO;
    if (method == 1) {
        if (!job.calib_path) {
            rc = nb_opts_usage_error(&spec, &args, "--method mixed measures GPTQ on --calib TEXT: give one");
            goto done;
        }
        job.method = NB_METHOD_MIXED;
    }
    if ((method_seconds > 0 || method_lambda > 0) && job.method != NB_METHOD_MIXED) {
        rc = nb_opts_usage_error(&spec, &args, "--method-time-budget and --method-lambda need --method mixed");
        goto done;
    }
    if (method_seconds > 0 && method_lambda > 0) {
        rc = nb_opts_usage_error(&spec, &args, "give --method-time-budget or --method-lambda, not both");
        goto done;
    }
    job.budget.method_seconds = method_seconds;
    job.budget.method_lambda = method_lambda;
    nb_status st = nb_quantize_job(&job, &res, &ctx);
    if (st != NB_OK) { rc = nb_cli_fail("plan", &ctx, st); goto done; }
    if (out_path) {
        char *pj = nb_plan_to_json(&res.plan);
        st = pj ? nb_afile_write_text(out_path, pj, &ctx) : nb_err(&ctx, NB_ERR_NOMEM, "out of memory for JSON");
        free(pj);
        if (st != NB_OK) { rc = nb_cli_fail("plan", &ctx, st); goto done; }
    }
    if (!ctx.quiet || !json) nb_budget_print(json ? stderr : stdout, &res.plan, &res.budget, &job.budget);
    if (res.group_cal.n && (!ctx.quiet || !json)) {
        FILE *f = json ? stderr : stdout;
        bool kld = !strcmp(res.group_cal.metric, "kld");
        fprintf(f, "\ncalibrated on %s (errors scaled to predicted %s):\n%-28s %7s %6s %14s %12s %12s\n",
                job.group_cal.text_path, kld ? "KLD" : "cosine distance", "tensor group", "tensors", "bpw",
                "pred. error", kld ? "KLD alone" : "cos. alone", "factor");
        for (size_t g = 0; g < res.group_cal.n; g++) {
            const nb_group_cal_entry *e = &res.group_cal.groups[g];
            fprintf(f, "%-28s %7zu %6.2f %14.6g %12.6g %12.6g\n", e->name, e->n_tensors, e->bpw, e->predicted, e->kld,
                    e->factor);
        }
    }
    if (json) {
        char *j = plan_json(&res, &job.budget);
        if (!j) { rc = nb_cli_fail("plan", &ctx, nb_err(&ctx, NB_ERR_NOMEM, "out of memory for JSON")); goto done; }
        puts(j);
        free(j);
    }
    rc = NB_EXIT_OK;
done:
    nb_rules_free(&rules);
    nb_quant_job_result_free(&res);
    nb_ctx_free(&ctx);
    return rc;
}
