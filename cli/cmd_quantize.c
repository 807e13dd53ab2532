/* cli/cmd_quantize.c — `nibble quantize SRC -o OUT --type MIX [--rule P=T]... [--report [F]] [--json]
 * [--method rtn|imatrix|gptq --calib FILE ...]`. */
#include "calib/job.h"
#include "cli/cli.h"
#include "core/afile.h"
#include "core/progress.h"
#include "quant/quantize.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(FILE *f) {
    fputs("usage: nibble quantize SRC -o OUT.gguf (--type MIX | --plan PLAN.json) [--rule PATTERN=TYPE]...\n"
          "                       [--pure] [--no-fallback] [--allow-requantize] [--dry-run [--json]]\n"
          "                       [--report[=FILE.json]] [--json]\n"
          "                       [--imatrix STATS] [--method rtn|imatrix|gptq] [--calib FILE]\n"
          "                       [--calib-tokens N] [--ctx N] [--seed S] [--damp X] [--block N]\n"
          "                       [--act-order] [--static-groups] [--group G] [--threads N] [--quiet]\n\n"
          "Quantize a model to GGUF, one tensor at a time (memory stays bounded by a few tensors).\n"
          "SRC: a .gguf (F32/F16/BF16, or already quantized: dequantized and requantized, with a\n"
          "warning), a .safetensors file, a sharded index or a Hugging Face model directory.\n"
          "The output is written to OUT.partial and renamed when complete; nothing is left on failure.\n"
          "Output bytes are identical for any --threads value.\n\n"
          "  -o, --output OUT     output GGUF file (required unless --dry-run)\n"
          "  --type MIX           the mix (below); llama.cpp's per-tensor choices (output.weight Q6_K,\n"
          "                       attn_v/ffn_down raised in the layers llama.cpp favours, ...) apply\n"
          "  --rule PAT=TYPE      per-tensor override; PAT is a glob over the whole name\n"
          "                       ('blk.*.ffn_down.weight=q6_k') or 're:REGEX' (POSIX ERE, searched\n"
          "                       anywhere). Repeatable; later rules win. Only quantizable tensors.\n"
          "  --pure               no mix rules: every quantizable tensor gets the base type\n"
          "  --no-fallback        fail when a row length does not fit the chosen type, instead of\n"
          "                       falling back (Q4_K->Q5_0, Q6_K->Q8_0, ..., then F16)\n"
          "  --dry-run            print the plan (tensor -> type) and sizes; write nothing. With --json:\n"
          "                       the plan as JSON (docs/quantize.md \"Plans\"), which --plan applies\n"
          "  --plan FILE          apply a plan (from --dry-run --json, possibly edited: change a tensor's\n"
          "                       \"type\"); it must have been made for this source (size, tensor table)\n"
          "  --allow-requantize   allow tensors that are already quantized to be requantized (refused\n"
          "                       without it: the second rounding adds to the first)\n"
          "  --tensor-type RE=T, --output-tensor-type T, --token-embedding-type T\n"
          "                       llama-quantize's spellings: --rule 're:RE=T', 'output.weight=T',\n"
          "                       'token_embd.weight=T'\n"
          "  --include-weights S, --exclude-weights S\n"
          "                       use the imatrix only for tensors whose name contains S / never for them\n"
          "                       (repeatable; llama-quantize's options)\n"
          "  --report[=FILE]      per-tensor error vs the source (RMSE, max |error|, relative RMSE,\n"
          "                       cosine similarity): printed as a table, and written as JSON to FILE\n"
          "                       (also accepted as `--report FILE.json`). Costs one dequantization.\n"
          "  --json               print a JSON summary (with the per-tensor list) on stdout\n"
          "  --imatrix STATS      importance matrix (nibble calibrate, or llama-imatrix's .gguf / .dat):\n"
          "                       weighted rounding as llama-quantize --imatrix does (same bytes for the\n"
          "                       GGUF types); tensors without an entry are rounded plainly\n"
          "  --method M           rtn: round to nearest (default without --imatrix); imatrix: weighted\n"
          "                       rounding with --imatrix STATS, or with statistics collected first from\n"
          "                       --calib FILE; gptq: sequential GPTQ (docs/calibration.md): block by block,\n"
          "                       Hessians from --calib FILE run through the already-quantized earlier\n"
          "                       blocks; the scale search uses --imatrix when given, else the Hessian's\n"
          "                       diagonal. Types GPTQ cannot do (nf4_dq) and experts without calibration\n"
          "                       tokens are rounded to nearest, with a message\n"
          "  --calib FILE         calibration text or token ids (imatrix without --imatrix, gptq)\n"
          "  --calib-tokens N     token budget: a seeded sample of ceil(N / ctx) chunks (default: all)\n"
          "  --ctx N              calibration chunk length in tokens (default 512); --seed S sample seed\n"
          "  --damp X             gptq: dampening, fraction of mean(diag H) (default 0.01)\n"
          "  --block N            gptq: lazy batch width (default 128)\n"
          "  --act-order          gptq: columns by decreasing Hessian diagonal (desc_act), static groups\n"
          "  --static-groups      gptq: all group scales chosen before the error feedback\n"
          "  --group G            int4 mixes: group size 32, 64 or 128 (other types: their block size)\n"
          "  --threads N, --quiet, --verbose\n\n"
          "mixes (bpw = bits per weight of the base type; the file's average is a bit higher):\n",
          f);
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
    fputs("\n\nexit codes: 0 ok, 1 usage (incl. output == input), 2 bad input (NaN/Inf weights,\n"
          "unsupported type, row length that does not fit with --no-fallback), 3 I/O (disk full ...)\n",
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
        cJSON_AddNumberToObject(o, "n_zero_experts", (double)g->n_zero_experts);
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
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static nb_status write_text_atomic(const char *path, const char *text, nb_ctx *ctx) {
    nb_afile f;
    NB_TRY(nb_afile_open(&f, path, false, ctx));
    nb_status st = nb_afile_write(&f, text, strlen(text), ctx);
    if (st == NB_OK) st = nb_afile_write(&f, "\n", 1, ctx);
    if (st == NB_OK) st = nb_afile_commit(&f, NULL, ctx);
    nb_afile_abort(&f);
    return st;
}

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

/* --group G: the INT4 mix of that group size, or the mix itself when G is its block size. */
static const nb_mix_info *with_group(const nb_mix_info *mix, long group) {
    const nb_type_traits *gt = nb_type_get(mix->base);
    if (!strncmp(mix->name, "int4", 4)) {
        char nm[32];
        snprintf(nm, sizeof nm, "int4-%s-g%ld", strstr(mix->name, "asym") ? "asym" : "sym", group);
        return nb_mix_find(nm);
    }
    return gt && (long)gt->block_size == group ? mix : NULL;
}

/* llama-quantize spellings that are rules here: --output-tensor-type T,
 * --token-embedding-type T, --tensor-type REGEX=T. */
static nb_status add_alias_rule(nb_rules *rules, const char *opt, const char *val, nb_ctx *ctx) {
    char spec[1024];
    if (!strcmp(opt, "--output-tensor-type")) snprintf(spec, sizeof spec, "output.weight=%s", val);
    else if (!strcmp(opt, "--token-embedding-type")) snprintf(spec, sizeof spec, "token_embd.weight=%s", val);
    else snprintf(spec, sizeof spec, "re:%s", val); /* --tensor-type: llama.cpp searches a regex in the name */
    return nb_rules_add(rules, spec, ctx);
}

int nb_cmd_quantize(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    nb_rules rules;
    nb_rules_init(&rules);
    const char *report_file = NULL;
    bool json = false, dry_run = false, allow_requantize = false;
    nb_quant_job job = {0};
    nb_quant_job_result res = {0};
    /* --include-weights / --exclude-weights values (pointers into argv) */
    const char **include = calloc((size_t)argc, sizeof *include), **exclude = calloc((size_t)argc, sizeof *exclude);
    size_t n_include = 0, n_exclude = 0;
    long group = 0;
    int rc = NB_EXIT_USAGE;
    if (!include || !exclude) { fputs("nibble quantize: out of memory\n", stderr); rc = NB_EXIT_IO; goto done; }
    for (int i = 1; i < argc; i++) {
        int c = nb_cli_common_opt(&ctx, argc, argv, &i);
        if (c < 0) goto done;
        if (c) continue;
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { help(stdout); rc = NB_EXIT_OK; goto done; }
        if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--pure")) job.plan.pure = true;
        else if (!strcmp(a, "--no-fallback")) job.plan.no_fallback = true;
        else if (!strcmp(a, "--dry-run")) dry_run = true;
        else if (!strcmp(a, "--allow-requantize")) allow_requantize = true;
        else if (!strcmp(a, "--report")) {
            job.report = true;
            if (i + 1 < argc && ends_with(argv[i + 1], ".json")) report_file = argv[++i];
        } else if (!strncmp(a, "--report=", 9) && a[9]) {
            job.report = true;
            report_file = a + 9;
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && i + 1 < argc) job.dst = argv[++i];
        else if (!strcmp(a, "--plan") && i + 1 < argc) job.plan_path = argv[++i];
        else if (!strcmp(a, "--imatrix") && i + 1 < argc) job.imatrix_path = argv[++i];
        else if ((!strcmp(a, "--include-weights") || !strcmp(a, "--exclude-weights")) && i + 1 < argc) {
            if (a[2] == 'i') include[n_include++] = argv[++i];
            else exclude[n_exclude++] = argv[++i];
        } else if (!strcmp(a, "--method") && i + 1 < argc) {
            if (!nb_quant_method_from_name(argv[++i], &job.method)) {
                fprintf(stderr, "nibble quantize: --method must be rtn, imatrix or gptq\n");
                goto done;
            }
        } else if (!strcmp(a, "--calib") && i + 1 < argc) job.calib_path = argv[++i];
        else if (!strcmp(a, "--act-order")) job.gptq.act_order = job.gptq_opts_set = true;
        else if (!strcmp(a, "--static-groups")) job.gptq.static_groups = job.gptq_opts_set = true;
        else if ((!strcmp(a, "--calib-tokens") || !strcmp(a, "--ctx") || !strcmp(a, "--seed") ||
                  !strcmp(a, "--block") || !strcmp(a, "--group") || !strcmp(a, "--damp")) && i + 1 < argc) {
            const char *v = argv[++i];
            char *end = NULL;
            double x = strtod(v, &end);
            bool intval = x == (double)(long long)x;
            if (!end || *end || !(x >= 0) || x > 1e15 || (strcmp(a, "--damp") && !intval) ||
                (!strcmp(a, "--damp") && !(x > 0 && x < 10)) || (!strcmp(a, "--ctx") && (x < 2 || x > 1e6)) ||
                (!strcmp(a, "--block") && (x < 1 || x > 65536)) || (!strcmp(a, "--group") && (x < 1 || x > 65536))) {
                fprintf(stderr, "nibble quantize: bad value '%s' for %s\n", v, a);
                goto done;
            }
            if (!strcmp(a, "--calib-tokens")) job.corpus.max_tokens = (uint64_t)x;
            else if (!strcmp(a, "--ctx")) job.corpus.n_ctx = (int)x;
            else if (!strcmp(a, "--seed")) job.corpus.seed = (uint64_t)x;
            else if (!strcmp(a, "--block")) { job.gptq.block = (int)x; job.gptq_opts_set = true; }
            else if (!strcmp(a, "--damp")) { job.gptq.damp = x; job.gptq_opts_set = true; }
            else group = (long)x;
        }
        else if (!strcmp(a, "--type") && i + 1 < argc) {
            const char *t = argv[++i];
            job.plan.mix = nb_mix_find(t);
            if (!job.plan.mix) {
                fprintf(stderr, "nibble quantize: unknown type '%s' (see nibble quantize --help for the list)\n", t);
                goto done;
            }
        } else if (!strcmp(a, "--rule") && i + 1 < argc) {
            nb_status st = nb_rules_add(&rules, argv[++i], &ctx);
            if (st != NB_OK) { rc = nb_cli_fail("quantize", &ctx, st); goto done; }
        } else if ((!strcmp(a, "--tensor-type") || !strcmp(a, "--output-tensor-type") ||
                    !strcmp(a, "--token-embedding-type")) && i + 1 < argc) {
            nb_status st = add_alias_rule(&rules, a, argv[++i], &ctx);
            if (st != NB_OK) { rc = nb_cli_fail("quantize", &ctx, st); goto done; }
        } else if (a[0] == '-' || job.src) {
            fprintf(stderr, "nibble quantize: unexpected argument '%s' (see --help)\n", a);
            goto done;
        } else job.src = a;
    }
    if (!job.src || (!job.dst && !dry_run) || (!job.plan.mix && !job.plan_path)) {
        fprintf(stderr, "nibble quantize: %s\n", !job.src ? "missing SRC" : !job.dst && !dry_run ? "missing -o OUT"
                                                                                                   : "missing --type MIX (or --plan FILE)");
        fputs("usage: nibble quantize SRC -o OUT.gguf --type MIX [options]   (--help for the mixes)\n", stderr);
        goto done;
    }
    if (dry_run) job.dst = NULL;
    if (group && job.plan.mix) {
        const nb_mix_info *gm = with_group(job.plan.mix, group);
        if (!gm) {
            const nb_type_traits *gt = nb_type_get(job.plan.mix->base);
            if (!strncmp(job.plan.mix->name, "int4", 4))
                fprintf(stderr, "nibble quantize: --group %ld: int4 mixes take 32, 64 or 128\n", group);
            else
                fprintf(stderr, "nibble quantize: --group %ld: %s has fixed blocks of %u (only int4 mixes take a group)\n",
                        group, job.plan.mix->name, gt ? gt->block_size : 0);
            goto done;
        }
        job.plan.mix = gm;
    } else if (group) {
        fputs("nibble quantize: --group shapes a new plan: edit the plan file instead\n", stderr);
        goto done;
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
    if ((n_include || n_exclude) && !job.imatrix_path && !job.calib_path) {
        fputs("nibble quantize: --include-weights / --exclude-weights select imatrix entries: give --imatrix\n", stderr);
        goto done;
    }
    if (job.dst && !ends_with(job.dst, ".gguf"))
        NB_WARN(&ctx, "%s: output is GGUF whatever the extension (consider naming it .gguf)", job.dst);
    job.plan.rules = &rules;
    job.allow_requantize = allow_requantize;
    job.include_weights = include;
    job.n_include_weights = n_include;
    job.exclude_weights = exclude;
    job.n_exclude_weights = n_exclude;
    nb_status st = nb_quantize_job(&job, &res, &ctx);
    if (st != NB_OK) { rc = nb_cli_fail("quantize", &ctx, st); goto done; }
    const char *method = nb_quant_method_name(res.method);
    bool m_gptq = res.method == NB_METHOD_GPTQ;
    if (dry_run) {
        if (json) {
            char *pj = nb_plan_to_json(&res.plan);
            if (pj) { puts(pj); free(pj); }
        } else {
            nb_plan_print(stdout, &res.plan);
            print_summary(stdout, &res.plan, NULL, NULL);
        }
        rc = NB_EXIT_OK;
        goto done;
    }
    FILE *human = json ? stderr : stdout;
    if (!ctx.quiet) {
        if (job.report) print_report(human, &res.quant);
        if (m_gptq && job.report) print_gptq(human, &res.gptq);
        print_summary(human, &res.plan, &res.quant, job.dst);
        if (m_gptq) {
            const nb_gptq_model_result *g = &res.gptq;
            fprintf(human, "gptq: %zu weights (expert slices counted singly) by GPTQ, %zu rounded to nearest, "
                    "%lld experts without calibration tokens; %zu chunks x %llu tokens; calibration passes %.1f s, "
                    "GPTQ %.1f s\n", g->n_gptq, g->n_rtn, (long long)g->n_zero_experts, g->n_chunks,
                    (unsigned long long)(g->n_chunks ? g->n_tokens / g->n_chunks : 0), g->seconds_calib,
                    g->seconds_gptq);
        }
    }
    rc = NB_EXIT_OK;
    if (report_file) {
        char *rj = nb_quant_result_json(&res.quant, &res.plan, job.src, job.dst, true);
        st = rj ? write_text_atomic(report_file, rj, &ctx) : nb_err(&ctx, NB_ERR_NOMEM, "out of memory for JSON");
        free(rj);
        if (st != NB_OK) rc = nb_cli_fail("quantize", &ctx, st);
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
    free(include);
    free(exclude);
    nb_rules_free(&rules);
    nb_ctx_free(&ctx);
    return rc;
}
