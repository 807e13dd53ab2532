/* cli/cmd_quantize.c — `nibble quantize SRC -o OUT (--type MIX | --plan PLAN.json) [options]`:
 * options and printing only; the job (plan, statistics, rtn/imatrix/gptq) is
 * nb_quantize_job (calib/job.h). */
#include "calib/export.h"
#include "calib/job.h"
#include "cli/cli.h"
#include "cli/opts.h"
#include "core/afile.h"
#include "core/progress.h"
#include "core/str.h"
#include "formats/json_strict.h"
#include "quant/quantize.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The mix and type lists after the options in --help. */
static void print_mix_list(FILE *f) {
    fputs("mixes (bpw = bits per weight of the base type; the file's average is a bit higher):\n", f);
    for (int i = 0; i < NB_MIX_COUNT; i++) {
        const nb_mix_info *mx = nb_mix_get((nb_mix_id)i);
        const nb_type_traits *tr = nb_type_get(mx->base);
        bool ok = tr && tr->quantize;
        char ft[16] = "-";
        if (mx->llama_ftype >= 0) snprintf(ft, sizeof ft, "%d", mx->llama_ftype);
        fprintf(f, "  %-15s %5.2f bpw  ftype %-3s %s%s\n", mx->name, nb_type_bpw(mx->base), ft, mx->summary,
                ok ? "" : "  [not available in this build]");
    }
    fputs("  (aliases: q3_k, q4_k, q5_k = the _m mixes; int4 = int4-g128; int4-asym = int4-asym-g128)\n"
          "nf4 / int4 mixes keep token_embd and output in 16-bit float and are nibble's own GGUF types:\n"
          "llama.cpp cannot load them (export them to bitsandbytes / GPTQ safetensors instead).\n\n"
          "types for --rule:",
          f);
    int col = 0;
    for (int t = 0; t < NB_TYPE_COUNT; t++) {
        const nb_type_traits *tr = nb_type_get((nb_type)t);
        if (!tr || !tr->quantize || tr->gguf_id < 0) continue;
        fprintf(f, "%s%s (%.2f)", col % 6 ? ", " : "\n  ", tr->name, nb_type_bpw((nb_type)t));
        col++;
    }
    fputs("\n\nexit codes: 0 ok, 1 usage (incl. output == input, requantizing without\n"
          "--allow-requantize), 2 bad input (NaN/Inf weights, unsupported type, row length that does not\n"
          "fit with --no-fallback, a plan for another model), 3 I/O (disk full ...)\n",
          f);
}

/* Per-type table and the size line from the plan; the written file's figures when r has them. */
static void print_summary(FILE *f, const nb_plan *p, const nb_quant_result *r, const char *dst) {
    char b1[32], b2[32];
    fprintf(f, "%-10s %8s %14s %12s %7s\n", "type", "tensors", "elements", "size", "bpw");
    for (size_t k = 0; k < p->n_types; k++) {
        const nb_plan_type_stat *s = &p->types[k];
        fprintf(f, "%-10s %8zu %14llu %12s %7.3f\n", nb_type_name(s->type), s->n_tensors,
                (unsigned long long)s->n_elements, nb_fmt_bytes((double)s->bytes, b1, sizeof b1),
                s->n_elements ? (double)s->bytes * 8.0 / (double)s->n_elements : 0.0);
    }
    double el = p->n_elements ? (double)p->n_elements : 1.0;
    fprintf(f, "size %s (%.3f bpw) -> %s (%.3f bpw), %zu of %zu tensors converted",
            nb_fmt_bytes((double)p->bytes_in, b1, sizeof b1), (double)p->bytes_in * 8.0 / el,
            nb_fmt_bytes((double)p->bytes_out, b2, sizeof b2), (double)p->bytes_out * 8.0 / el, p->n_quantized,
            p->n_tensors);
    if (p->n_requantized) fprintf(f, " (%zu requantized)", p->n_requantized);
    if (p->n_fallback) fprintf(f, ", %zu fallback%s", p->n_fallback, p->n_fallback == 1 ? "" : "s");
    fputc('\n', f);
    if (r && r->bytes_out) {
        fprintf(f, "wrote %s (%s) in %.2f s, %s/s of input\nsha256 ", dst,
                nb_fmt_bytes((double)r->bytes_out, b1, sizeof b1), r->seconds,
                nb_fmt_bytes(r->seconds > 0 ? (double)r->bytes_in / r->seconds : 0, b2, sizeof b2));
        for (int k = 0; k < 32; k++) fprintf(f, "%02x", r->sha256[k]);
        fprintf(f, "  %s\n", dst);
    }
}

static void print_report(FILE *f, const nb_quant_result *r) {
    fprintf(f, "%-40s %-8s    %-8s %11s %11s %9s %10s\n", "tensor", "source", "type", "rmse", "max|err|", "rel_rmse",
            "cosine");
    for (size_t i = 0; i < r->n_tensors; i++) {
        const nb_quant_tensor *t = &r->tensors[i];
        if (!t->has_error) continue;
        fprintf(f, "%-40s %-8s -> %-8s %11.4e %11.4e %9.5f %10.7f\n", t->name, nb_type_name(t->src_type),
                nb_type_name(t->type), t->rmse, t->max_abs, t->rel_rmse, t->cosine);
    }
}

/* Per GPTQ weight: layer-output error on the calibration inputs, GPTQ vs plain rounding. */
static void print_gptq(FILE *f, const nb_gptq_model_result *g) {
    fprintf(f, "%-40s %6s %-8s %8s %12s %12s %8s\n", "gptq tensor", "expert", "type", "tokens", "err gptq", "err rtn",
            "ratio");
    for (size_t k = 0; k < g->n_stats; k++) {
        const nb_gptq_tensor_stat *t = &g->stats[k];
        char ex[16] = "-";
        if (t->expert >= 0) snprintf(ex, sizeof ex, "%d", t->expert);
        fprintf(f, "%-40s %6s %-8s %8llu %12.5e %12.5e %8.4f\n", t->name, ex, nb_type_name(t->type),
                (unsigned long long)t->n_tok, t->err_gptq, t->err_rtn, t->err_rtn > 0 ? t->err_gptq / t->err_rtn : 0);
    }
}

/* The summary JSON with "method" (and a "gptq" object) added; NULL on failure. */
static char *with_method(const char *js, const char *method, const nb_gptq_model_result *g) {
    cJSON *j = cJSON_Parse(js);
    if (!j) return NULL;
    cJSON_AddStringToObject(j, "method", method);
    if (g) {
        cJSON *o = cJSON_AddObjectToObject(j, "gptq");
        cJSON_AddNumberToObject(o, "n_layer", g->n_layer);
        cJSON_AddNumberToObject(o, "n_chunks", (double)g->n_chunks);
        cJSON_AddNumberToObject(o, "n_tokens", (double)g->n_tokens);
        cJSON_AddNumberToObject(o, "n_gptq", (double)g->n_gptq);
        cJSON_AddNumberToObject(o, "n_rtn", (double)g->n_rtn);
        cJSON_AddNumberToObject(o, "n_awq_weights", (double)g->n_awq_weights);
        cJSON_AddNumberToObject(o, "n_plan_rounded", (double)g->n_plan_rounded);
        cJSON_AddNumberToObject(o, "n_zero_experts", (double)g->n_zero_experts);
        cJSON_AddNumberToObject(o, "n_awq_groups", (double)g->n_awq_groups);
        cJSON_AddNumberToObject(o, "n_awq_scaled", (double)g->n_awq_scaled);
        cJSON_AddNumberToObject(o, "seconds_calib", g->seconds_calib);
        cJSON_AddNumberToObject(o, "seconds_gptq", g->seconds_gptq);
        cJSON *ts = cJSON_AddArrayToObject(o, "tensors");
        for (size_t k = 0; k < g->n_stats && ts; k++) {
            const nb_gptq_tensor_stat *t = &g->stats[k];
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", t->name);
            if (t->expert >= 0) cJSON_AddNumberToObject(e, "expert", t->expert);
            cJSON_AddNumberToObject(e, "tokens", (double)t->n_tok);
            if (t->err_rtn >= 0) {
                cJSON_AddNumberToObject(e, "err_gptq", t->err_gptq);
                cJSON_AddNumberToObject(e, "err_rtn", t->err_rtn);
            }
            cJSON_AddItemToArray(ts, e);
        }
    }
    char *s = nb_json_print(j, false);
    cJSON_Delete(j);
    return s;
}

/* --group G: the mix with that group size (an INT4 mix of the same symmetry,
 * found through the type table), or the mix itself when G is its block size. */
static const nb_mix_info *with_group(const nb_mix_info *mix, int group) {
    const nb_type_traits *bt = nb_type_get(mix->base);
    if (bt && bt->group) {
        nb_type t = nb_type_int4_find(bt->asym, group);
        for (int i = 0; t != NB_TYPE_COUNT && i < NB_MIX_COUNT; i++)
            if (nb_mix_get((nb_mix_id)i)->base == t) return nb_mix_get((nb_mix_id)i);
        return NULL;
    }
    return bt && (int)bt->block_size == group ? mix : NULL;
}

/* Option handlers. */
static nb_status set_mix(const nb_opt *o, const char *arg, nb_ctx *ctx) {
    const nb_mix_info **mix = o->dest;
    *mix = nb_mix_find(arg);
    if (!*mix) return nb_err(ctx, NB_ERR_INVALID, "unknown type '%s' (see nibble quantize --help for the list)", arg);
    return NB_OK;
}

static nb_status set_method(const nb_opt *o, const char *arg, nb_ctx *ctx) {
    if (!nb_quant_method_from_name(arg, o->dest))
        return nb_err(ctx, NB_ERR_INVALID, "--method must be rtn, imatrix, gptq, awq, awq+gptq or mixed (got '%s')",
                      arg);
    return NB_OK;
}

/* llama-quantize spellings that are rules here: --output-tensor-type T,
 * --token-embedding-type T, --tensor-type REGEX=T (llama.cpp searches the
 * regex anywhere in the name, as a 're:' rule does). */
static nb_status add_output_rule(const nb_opt *o, const char *arg, nb_ctx *ctx) {
    char spec[512];
    snprintf(spec, sizeof spec, "output.weight=%s", arg);
    return nb_rules_add(o->dest, spec, ctx);
}

static nb_status add_embd_rule(const nb_opt *o, const char *arg, nb_ctx *ctx) {
    char spec[512];
    snprintf(spec, sizeof spec, "token_embd.weight=%s", arg);
    return nb_rules_add(o->dest, spec, ctx);
}

static nb_status add_regex_rule(const nb_opt *o, const char *arg, nb_ctx *ctx) {
    char spec[1024];
    snprintf(spec, sizeof spec, "re:%s", arg);
    return nb_rules_add(o->dest, spec, ctx);
}

/* --include-weights / --exclude-weights: argv strings collected in a list. */
typedef struct strs {
    const char **v;
    size_t n;
} strs;

static nb_status add_str(const nb_opt *o, const char *arg, nb_ctx *ctx) {
    strs *l = o->dest;
    const char **nv = nb_realloc(ctx, l->v, (l->n + 1) * sizeof *nv, "option list");
    if (!nv) return NB_ERR_NOMEM;
    nv[l->n++] = arg;
    l->v = nv;
    return NB_OK;
}

int nb_cmd_quantize(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    nb_rules rules;
    nb_rules_init(&rules);
    const char *report_file = NULL;
    bool json = false, dry_run = false, report = false, act_order = false, static_groups = false;
    bool damp_set = false, block_set = false;
    double method_seconds = 0, method_lambda = 0;
    nb_quant_job job = {0};
    nb_quant_job_result res = {0};
    strs include = {0}, exclude = {0};
    nb_cli_budget bo = {0};
    int group = 0;
    int format = 0; /* nb_hf_quant; 0 (NB_HF_PLAIN) stands for gguf here */
    nb_hf_write_result hr = {0};
    static const nb_opt_choice formats[] = {
        {"gguf", 0}, {"bnb-nf4", NB_HF_BNB_NF4}, {"gptq", NB_HF_GPTQ}, {"awq", NB_HF_AWQ}, {0, 0}};
    const nb_opt opts[] = {
        {.name = "output", .short_name = 'o', .type = NB_OPT_STR, .dest = &job.dst, .meta = "OUT",
         .flags = NB_OPT_OUTPUT, .help = "output GGUF file (required unless --dry-run)"},
        {.name = "type", .type = NB_OPT_CALL, .fn = set_mix, .dest = &job.plan.mix, .meta = "MIX",
         .help = "the mix (below); llama.cpp's per-tensor choices (output.weight Q6_K,\n"
                 "attn_v/ffn_down raised in the layers llama.cpp favours, ...) apply"},
        {.name = "plan", .type = NB_OPT_STR, .dest = &job.plan_path, .meta = "FILE",
         .help = "apply a plan instead of --type: the JSON of --dry-run --json, possibly\n"
                 "edited (change a tensor's \"type\"); it must have been made for this\n"
                 "source (same size and tensor table; docs/quantize.md \"Plans\")"},
        NB_CLI_BUDGET_ROWS(bo, "budget-ctx"),
        {.name = "rule", .type = NB_OPT_CALL, .fn = nb_cli_add_rule, .dest = &rules, .meta = "PAT=TYPE",
         .help = "per-tensor override; PAT is a glob over the whole name\n"
                 "('blk.*.ffn_down.weight=q6_k') or 're:REGEX' (POSIX ERE, searched\n"
                 "anywhere). Repeatable; later rules win. Only quantizable tensors."},
        {.name = "tensor-type", .type = NB_OPT_CALL, .fn = add_regex_rule, .dest = &rules, .meta = "RE=TYPE",
         .flags = NB_OPT_SUB, .help = "llama-quantize's spelling of --rule 're:RE=TYPE'"},
        {.name = "output-tensor-type", .type = NB_OPT_CALL, .fn = add_output_rule, .dest = &rules, .meta = "TYPE",
         .flags = NB_OPT_SUB, .help = "llama-quantize's spelling of --rule 'output.weight=TYPE'"},
        {.name = "token-embedding-type", .type = NB_OPT_CALL, .fn = add_embd_rule, .dest = &rules, .meta = "TYPE",
         .flags = NB_OPT_SUB, .help = "llama-quantize's spelling of --rule 'token_embd.weight=TYPE'"},
        {.name = "pure", .type = NB_OPT_FLAG, .dest = &job.plan.pure,
         .help = "no mix rules: every quantizable tensor gets the base type"},
        {.name = "no-fallback", .type = NB_OPT_FLAG, .dest = &job.plan.no_fallback,
         .help = "fail when a row length does not fit the chosen type, instead of\n"
                 "falling back (Q4_K->Q5_0, Q6_K->Q8_0, ..., then F16)"},
        {.name = "group", .type = NB_OPT_INT, .dest = &group, .meta = "G", .lo = 1, .hi = 65536,
         .help = "int4 mixes: group size 32, 64 or 128 (other types: their block size)"},
        {.name = "allow-requantize", .type = NB_OPT_FLAG, .dest = &job.allow_requantize,
         .help = "requantize tensors that are already quantized (refused without it:\n"
                 "the second rounding adds to the first; quantize from F16/BF16/F32)"},
        {.name = "format", .type = NB_OPT_CHOICE, .dest = &format, .choices = formats, .meta = "F",
         .help = "gguf (default) or a Hugging Face directory OUT that transformers / vLLM\n"
                 "load: bnb-nf4 (--type nf4-dq or nf4: bitsandbytes' layout), gptq or awq\n"
                 "(--type int4-*; any --method: --method gptq gives a GPTQ checkpoint).\n"
                 "docs/formats.md \"Hugging Face out\""},
        {.name = "dry-run", .type = NB_OPT_FLAG, .dest = &dry_run,
         .help = "print the plan (tensor -> type) and sizes, write nothing; with --json\n"
                 "the plan as JSON, which --plan applies"},
        {.name = "report", .type = NB_OPT_STR, .arg = NB_ARG_OPTIONAL, .dest = &report_file, .given = &report,
         .next_suffix = ".json", .meta = "FILE", .flags = NB_OPT_OUTPUT,
         .help = "per-tensor error vs the source (RMSE, max |error|, relative RMSE,\n"
                 "cosine similarity): printed as a table, and written as JSON to FILE\n"
                 "(also accepted as `--report FILE.json`). Costs one dequantization."},
        {.name = "json", .type = NB_OPT_FLAG, .dest = &json,
         .help = "JSON lines on stdout: progress events, then the summary (with the per-tensor\n"
                 "list); with --dry-run only the plan"},
        {.name = "imatrix", .type = NB_OPT_STR, .dest = &job.imatrix_path, .meta = "STATS",
         .help = "importance matrix (nibble calibrate, or llama-imatrix's .gguf / .dat):\n"
                 "weighted rounding as llama-quantize --imatrix does (same bytes for the\n"
                 "GGUF types); tensors without an entry are rounded plainly"},
        {.name = "include-weights", .type = NB_OPT_CALL, .fn = add_str, .dest = &include, .meta = "S",
         .flags = NB_OPT_SUB, .help = "use the imatrix only for tensors whose name contains S (repeatable)"},
        {.name = "exclude-weights", .type = NB_OPT_CALL, .fn = add_str, .dest = &exclude, .meta = "S",
         .flags = NB_OPT_SUB, .help = "never use it for tensors whose name contains S (repeatable)"},
        {.name = "method", .type = NB_OPT_CALL, .fn = set_method, .dest = &job.method, .meta = "M",
         .help = "rtn: round to nearest (default without --imatrix); imatrix: weighted\n"
                 "rounding with --imatrix STATS, or with statistics collected first from\n"
                 "--calib FILE; gptq: sequential GPTQ (docs/calibration.md): block by block,\n"
                 "Hessians from --calib FILE run through the already-quantized earlier\n"
                 "blocks; the scale search uses --imatrix when given, else the Hessian's\n"
                 "diagonal. Types GPTQ cannot do (nf4_dq) and experts without calibration\n"
                 "tokens are rounded to nearest, with a message; awq: activation-aware\n"
                 "scales per block searched on --calib FILE, folded into the preceding\n"
                 "norm or linear (same file format), then weighted rounding; awq+gptq:\n"
                 "AWQ scales, then GPTQ; mixed (with a size budget, or --plan with methods):\n"
                 "GPTQ, AWQ (per block attention / FFN) or imatrix rounding per tensor,\n"
                 "where GPTQ or AWQ saves the most predicted loss per predicted second\n"
                 "(docs/planner.md \"Methods per tensor\")"},
        NB_CLI_METHOD_MIX_ROWS(method_seconds, method_lambda),
        {.name = "calib", .type = NB_OPT_STR, .dest = &job.calib_path, .meta = "FILE",
         .help = "calibration text or token ids (imatrix without --imatrix, gptq)"},
        NB_CLI_CORPUS_ROWS(job.corpus, "ctx"),
        {.name = "damp", .type = NB_OPT_DOUBLE, .dest = &job.gptq.damp, .given = &damp_set, .meta = "X", .lo = 0,
         .hi = 10, .flags = NB_OPT_LO_OPEN | NB_OPT_HI_OPEN,
         .help = "gptq: dampening, fraction of mean(diag H) (default 0.01)"},
        {.name = "block", .type = NB_OPT_INT, .dest = &job.gptq.block, .given = &block_set, .meta = "N", .lo = 1,
         .hi = 65536, .help = "gptq: lazy batch width (default 128)"},
        {.name = "all-experts", .type = NB_OPT_FLAG, .dest = &job.all_experts,
         .help = "MoE: calibration tokens also run through the experts the router did\n"
                 "not pick (statistics / Hessians only), so every expert is calibrated"},
        {.name = "act-order", .type = NB_OPT_FLAG, .dest = &act_order,
         .help = "gptq: columns by decreasing Hessian diagonal (desc_act), static groups"},
        {.name = "static-groups", .type = NB_OPT_FLAG, .dest = &static_groups,
         .help = "gptq: all group scales chosen before the error feedback"},
    };
    const nb_cmd_spec spec = {
        .name = "quantize",
        .usage = "SRC -o OUT.gguf (--type MIX | --plan PLAN.json | --target-size SIZE | --target-bpw X |\n"
                 "--budget SIZE --budget-ctx N [--kv-type T] [--overhead SIZE]) [--runtime R] [--sample-rows N]\n"
                 "[--allow-prune [--prune-criterion reap|freq]] [--rule PATTERN=TYPE]...\n"
                 "[--pure] [--no-fallback] [--allow-requantize] [--dry-run] [--report[=FILE.json]] [--json]\n"
                 "[--imatrix STATS] [--method rtn|imatrix|gptq|awq|awq+gptq|mixed] [--calib FILE] [--calib-tokens N]\n"
                 "[--ctx N] [--seed S] [--all-experts] [--damp X] [--block N] [--act-order] [--static-groups]\n"
                 "[--group G] [--threads N] [--quiet]",
        .about = "Quantize a model to GGUF, one tensor at a time (memory stays bounded by a few tensors).\n"
                 "SRC: a .gguf (F32/F16/BF16, or already quantized: requantized with --allow-requantize),\n"
                 "a .safetensors file, a sharded index or a Hugging Face model directory. Every tensor's\n"
                 "type comes from a plan: made from --type MIX (and --rule ...), or read with --plan;\n"
                 "--dry-run prints it. The output is written to a temporary and renamed when complete;\n"
                 "nothing is left on failure. Output bytes are identical for any --threads value.",
        NB_OPTS_TABLE(opts),
        .epilogue_fn = print_mix_list,
        NB_OPTS_ONE_POS("SRC"),
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    if (rc != NB_OPTS_RUN) goto done;
    job.src = args.pos[0];
    job.gptq.act_order = act_order;
    job.gptq.static_groups = static_groups;
    job.gptq_opts_set = act_order || static_groups || damp_set || block_set;
    job.report = report;
    rc = NB_EXIT_USAGE;
    if (!job.dst && !dry_run) { rc = nb_opts_usage_error(&spec, &args, "missing -o OUT"); goto done; }
    job.measure_state = bo.measure_state;
    job.group_cal = (nb_group_cal_opts){.text_path = bo.cal_text, .n_ctx = bo.cal_ctx, .n_chunks = bo.cal_chunks};
    rc = nb_cli_budget_finish(&spec, &args, &bo, "budget-ctx", &job.budget);
    if (rc != NB_OPTS_RUN) goto done;
    job.budget.method_seconds = method_seconds;
    job.budget.method_lambda = method_lambda;
    job.sample_rows = bo.sample_rows;
    rc = NB_EXIT_USAGE;
    if (!job.plan.mix && !job.plan_path && job.budget.kind == NB_BUDGET_NONE) {
        rc = nb_opts_usage_error(&spec, &args, "missing --type MIX (or --plan FILE, --target-size SIZE, ...)");
        goto done;
    }
    if (dry_run) job.dst = NULL;
    if (group && !job.plan.mix) { rc = nb_opts_usage_error(&spec, &args, "--group shapes a new plan: edit the plan file instead"); goto done; }
    if (group) {
        const nb_mix_info *gm = with_group(job.plan.mix, group);
        if (!gm) {
            const nb_type_traits *gt = nb_type_get(job.plan.mix->base);
            if (gt && gt->group)
                rc = nb_opts_usage_error(&spec, &args, "--group %d: int4 mixes take 32, 64 or 128", group);
            else
                rc = nb_opts_usage_error(&spec, &args, "--group %d: %s has fixed blocks of %u (only int4 mixes take a group)",
                                         group, job.plan.mix->name, gt ? gt->block_size : 0);
            goto done;
        }
        job.plan.mix = gm;
    }
    if (job.plan.mix) {
        const nb_type_traits *bt = nb_type_get(job.plan.mix->base);
        if (!bt || !bt->quantize) {
            fprintf(stderr, "nibble quantize: mix %s: quantizing to %s is not available in this build\n",
                    job.plan.mix->name, nb_type_name(job.plan.mix->base));
            rc = NB_EXIT_INPUT;
            goto done;
        }
    }
    if ((include.n || exclude.n) && !job.imatrix_path && !job.calib_path) {
        rc = nb_opts_usage_error(&spec, &args, "--include-weights / --exclude-weights select imatrix entries: give --imatrix");
        goto done;
    }
    if (format && dry_run) { rc = nb_opts_usage_error(&spec, &args, "--dry-run prints a GGUF plan: drop --format"); goto done; }
    if (format) {
        job.plan.rules = &rules;
        nb_status cs = nb_quant_export_check(&job, (nb_hf_quant)format, &ctx);
        if (cs != NB_OK) { rc = nb_cli_fail("quantize", &ctx, cs); goto done; }
    }
    if (job.dst && !format && !nb_str_ends_with(job.dst, ".gguf"))
        NB_WARN(&ctx, "%s: output is GGUF whatever the extension (consider naming it .gguf)", job.dst);
    rc = nb_cli_check_paths("quantize", &ctx, NB_CLI_PATHS(job.src, job.plan_path, job.imatrix_path, job.calib_path),
                            NB_CLI_PATHS(job.dst, report_file));
    if (rc != NB_OPTS_RUN) goto done;
    job.plan.rules = &rules;
    job.include_weights = include.v;
    job.n_include_weights = include.n;
    job.exclude_weights = exclude.v;
    job.n_exclude_weights = exclude.n;
    if (json && !dry_run) nb_cli_json_events(&ctx); /* a dry run's stdout is the plan file alone */
    nb_status st = format ? nb_quantize_export(&job, (nb_hf_quant)format, &res, &hr, &ctx)
                          : nb_quantize_job(&job, &res, &ctx);
    if (st != NB_OK) { rc = nb_cli_fail("quantize", &ctx, st); goto done; }
    if (format) {
        char b1[32];
        if (!ctx.quiet && res.plan.n_tensors) print_summary(json ? stderr : stdout, &res.plan, NULL, NULL);
        if (json)
            printf("{\"input\":\"%s\",\"output\":\"%s\",\"format\":\"%s\",\"method\":\"%s\",\"n_tensors\":%zu,"
                   "\"n_shards\":%zu,\"bytes_out\":%llu,\"seconds\":%.3f}\n",
                   job.src, job.dst, nb_hf_quant_name((nb_hf_quant)format), nb_quant_method_name(res.method),
                   hr.n_tensors, hr.n_shards, (unsigned long long)hr.bytes_out, hr.seconds);
        else if (!ctx.quiet)
            printf("wrote %s (%s directory, %zu safetensors entr%s in %zu shard%s, %s) by %s\n", job.dst,
                   nb_hf_quant_name((nb_hf_quant)format), hr.n_tensors, hr.n_tensors == 1 ? "y" : "ies", hr.n_shards,
                   hr.n_shards == 1 ? "" : "s", nb_fmt_bytes((double)hr.bytes_out, b1, sizeof b1),
                   nb_quant_method_name(res.method));
        rc = NB_EXIT_OK;
        goto done;
    }
    const char *method = nb_quant_method_name(res.method);
    bool m_gptq = nb_quant_method_sequential(res.method);
    if (dry_run) {
        if (json) {
            char *pj = nb_plan_to_json(&res.plan);
            if (pj) { puts(pj); free(pj); }
        } else {
            nb_plan_print(stdout, &res.plan);
            print_summary(stdout, &res.plan, NULL, NULL);
            if (job.budget.kind != NB_BUDGET_NONE) nb_budget_print(stdout, &res.plan, &res.budget, &job.budget);
        }
        rc = NB_EXIT_OK;
        goto done;
    }
    FILE *human = json ? stderr : stdout;
    if (!ctx.quiet) {
        if (job.report) print_report(human, &res.quant);
        if (m_gptq && job.report) print_gptq(human, &res.gptq);
        print_summary(human, &res.plan, &res.quant, job.dst);
        if (job.budget.kind != NB_BUDGET_NONE)
            fprintf(human, "budget: predicted file %llu bytes, written %llu; predicted loss %.6g\n",
                    (unsigned long long)res.budget.file_bytes, (unsigned long long)res.quant.bytes_out,
                    res.budget.pred_loss);
        if (res.budget.keep)
            fprintf(human, "pruned: %u of %u experts kept per layer (%s), as the plan decided\n", res.budget.keep,
                    res.budget.n_expert, res.plan.prune.criterion);
        if (m_gptq) {
            const nb_gptq_model_result *g = &res.gptq;
            if (res.method == NB_METHOD_AWQ || res.method == NB_METHOD_AWQ_GPTQ)
                fprintf(human, "awq: %zu groups searched, %zu scaled (the rest kept scale 1)\n", g->n_awq_groups,
                        g->n_awq_scaled);
            if (res.method == NB_METHOD_MIXED && !g->n_layer) {
                fprintf(human, "mixed: the plan's choice: imatrix rounding for every tensor (no gptq or awq tensor: "
                        "no calibration passes)\n");
            } else if (res.method == NB_METHOD_MIXED) {
                fprintf(human, "mixed: the plan's choice: %zu weights (expert slices counted singly) by gptq, %zu by "
                        "awq (%zu groups scaled of %zu searched), %zu by imatrix rounding; %zu rounded to nearest, "
                        "%lld experts without calibration tokens; %zu chunks x %llu tokens; calibration passes %.1f "
                        "s, GPTQ %.1f s\n", g->n_gptq, g->n_awq_weights, g->n_awq_scaled, g->n_awq_groups,
                        g->n_plan_rounded, g->n_rtn, (long long)g->n_zero_experts, g->n_chunks,
                        (unsigned long long)(g->n_chunks ? g->n_tokens / g->n_chunks : 0), g->seconds_calib,
                        g->seconds_gptq);
            } else {
                fprintf(human, "%s: %zu weights (expert slices counted singly) by %s, %zu rounded to nearest, "
                        "%lld experts without calibration tokens; %zu chunks x %llu tokens; calibration passes %.1f "
                        "s, GPTQ %.1f s\n", method, g->n_gptq, res.method == NB_METHOD_AWQ ? "AWQ + weighted rounding"
                        : method, g->n_rtn, (long long)g->n_zero_experts, g->n_chunks,
                        (unsigned long long)(g->n_chunks ? g->n_tokens / g->n_chunks : 0), g->seconds_calib,
                        g->seconds_gptq);
            }
        }
    }
    rc = NB_EXIT_OK;
    if (report_file) {
        char *rj = nb_quant_result_json(&res.quant, &res.plan, job.src, job.dst, true);
        st = rj ? nb_afile_write_text(report_file, rj, &ctx) : nb_err(&ctx, NB_ERR_NOMEM, "out of memory for JSON");
        free(rj);
        if (st != NB_OK) {
            nb_err_prefix(&ctx, "%s is complete, but the report failed", job.dst);
            rc = nb_cli_fail("quantize", &ctx, st);
        }
    }
    if (json && rc == NB_EXIT_OK) {
        char *sj = nb_quant_result_json(&res.quant, &res.plan, job.src, job.dst, true);
        char *out = sj ? with_method(sj, method, m_gptq ? &res.gptq : NULL) : NULL;
        if (out) { puts(out); free(out); }
        else if (sj) puts(sj);
        free(sj);
    }
done:
    nb_quant_job_result_free(&res);
    free(include.v);
    free(exclude.v);
    nb_rules_free(&rules);
    nb_ctx_free(&ctx);
    return rc;
}
