/* cli/cmd_quantize.c — `nibble quantize SRC -o OUT --type MIX [--rule P=T]... [--report [F]] [--json]
 * [--method rtn|imatrix|gptq --calib FILE ...]`. */
#include "calib/calibrate.h"
#include "calib/gptq_model.h"
#include "calib/imatrix.h"
#include "cli/cli.h"
#include "core/afile.h"
#include "core/progress.h"
#include "quant/quantize.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(FILE *f) {
    fputs("usage: nibble quantize SRC -o OUT.gguf --type MIX [--rule PATTERN=TYPE]... [--pure]\n"
          "                       [--no-fallback] [--dry-run] [--report[=FILE.json]] [--json]\n"
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
          "  --dry-run            print the plan (tensor -> type) and sizes; write nothing\n"
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

static void print_plan(FILE *f, const nb_quant_result *r) {
    fprintf(f, "%-40s %-22s %-8s    %-8s %-8s %10s\n", "tensor", "shape", "source", "type", "why", "bytes");
    for (size_t i = 0; i < r->n_tensors; i++) {
        const nb_quant_tensor *t = &r->tensors[i];
        char shape[64];
        int o = snprintf(shape, sizeof shape, "%lld", (long long)t->ne[0]);
        for (uint32_t d = 1; d < t->n_dims && d < 4 && o > 0 && (size_t)o < sizeof shape; d++)
            o += snprintf(shape + o, sizeof shape - (size_t)o, "x%lld", (long long)t->ne[d]);
        fprintf(f, "%-40s %-22s %-8s -> %-8s %-8s %10llu\n", t->name, shape, nb_type_name(t->src_type),
                nb_type_name(t->type), nb_plan_why_name(t->why), (unsigned long long)t->bytes_out);
    }
}

static void print_summary(FILE *f, const nb_quant_result *r, const char *dst) {
    char b1[32], b2[32];
    fprintf(f, "%-10s %8s %14s %12s %7s\n", "type", "tensors", "elements", "size", "bpw");
    for (size_t k = 0; k < r->n_types; k++) {
        const nb_quant_type_stat *s = &r->types[k];
        fprintf(f, "%-10s %8zu %14llu %12s %7.3f\n", nb_type_name(s->type), s->n_tensors,
                (unsigned long long)s->n_elements, nb_fmt_bytes((double)s->bytes, b1, sizeof b1),
                s->n_elements ? (double)s->bytes * 8.0 / (double)s->n_elements : 0.0);
    }
    double el = r->n_elements ? (double)r->n_elements : 1.0;
    fprintf(f, "size %s (%.3f bpw) -> %s (%.3f bpw), %zu of %zu tensors converted", 
            nb_fmt_bytes((double)r->bytes_in, b1, sizeof b1), (double)r->bytes_in * 8.0 / el,
            nb_fmt_bytes((double)r->tensor_bytes_out, b2, sizeof b2), (double)r->tensor_bytes_out * 8.0 / el,
            r->n_quantized, r->n_tensors);
    if (r->n_requantized) fprintf(f, " (%zu requantized)", r->n_requantized);
    if (r->n_fallback) fprintf(f, ", %zu fallback%s", r->n_fallback, r->n_fallback == 1 ? "" : "s");
    fputc('\n', f);
    if (r->bytes_out) {
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

int nb_cmd_quantize(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    nb_rules rules;
    nb_rules_init(&rules);
    const char *src = NULL, *dst = NULL, *report_file = NULL, *imatrix_file = NULL;
    nb_imatrix im;
    nb_imatrix_init(&im);
    nb_imatrix_importance imu = {.im = &im};
    bool json = false;
    nb_quant_opts o = {0};
    const char *method = NULL, *calib = NULL;
    nb_gptq_model_opts go = {0};
    long group = 0;
    bool gptq_flags = false;
    int rc = NB_EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        int c = nb_cli_common_opt(&ctx, argc, argv, &i);
        if (c < 0) goto done;
        if (c) continue;
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { help(stdout); rc = NB_EXIT_OK; goto done; }
        if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--pure")) o.pure = true;
        else if (!strcmp(a, "--no-fallback")) o.no_fallback = true;
        else if (!strcmp(a, "--dry-run")) o.dry_run = true;
        else if (!strcmp(a, "--report")) {
            o.report = true;
            if (i + 1 < argc && ends_with(argv[i + 1], ".json")) report_file = argv[++i];
        } else if (!strncmp(a, "--report=", 9) && a[9]) {
            o.report = true;
            report_file = a + 9;
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && i + 1 < argc) dst = argv[++i];
        else if (!strcmp(a, "--imatrix") && i + 1 < argc) imatrix_file = argv[++i];
        else if (!strcmp(a, "--method") && i + 1 < argc) method = argv[++i];
        else if (!strcmp(a, "--calib") && i + 1 < argc) calib = argv[++i];
        else if (!strcmp(a, "--act-order")) go.gptq.act_order = gptq_flags = true;
        else if (!strcmp(a, "--static-groups")) go.gptq.static_groups = gptq_flags = true;
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
            if (!strcmp(a, "--calib-tokens")) go.corpus.max_tokens = (uint64_t)x;
            else if (!strcmp(a, "--ctx")) go.corpus.n_ctx = (int)x;
            else if (!strcmp(a, "--seed")) go.corpus.seed = (uint64_t)x;
            else if (!strcmp(a, "--block")) { go.gptq.block = (int)x; gptq_flags = true; }
            else if (!strcmp(a, "--damp")) { go.gptq.damp = x; gptq_flags = true; }
            else group = (long)x;
        }
        else if (!strcmp(a, "--type") && i + 1 < argc) {
            const char *t = argv[++i];
            o.mix = nb_mix_find(t);
            if (!o.mix) {
                fprintf(stderr, "nibble quantize: unknown type '%s' (see nibble quantize --help for the list)\n", t);
                goto done;
            }
        } else if (!strcmp(a, "--rule") && i + 1 < argc) {
            nb_status st = nb_rules_add(&rules, argv[++i], &ctx);
            if (st != NB_OK) { rc = nb_cli_fail("quantize", &ctx, st); goto done; }
        } else if (a[0] == '-' || src) {
            fprintf(stderr, "nibble quantize: unexpected argument '%s' (see --help)\n", a);
            goto done;
        } else src = a;
    }
    if (!src || (!dst && !o.dry_run) || !o.mix) {
        fprintf(stderr, "nibble quantize: %s\n", !src ? "missing SRC" : !o.mix ? "missing --type MIX" : "missing -o OUT");
        fputs("usage: nibble quantize SRC -o OUT.gguf --type MIX [options]   (--help for the mixes)\n", stderr);
        goto done;
    }
    if (!method) method = imatrix_file ? "imatrix" : "rtn";
    bool m_rtn = !strcmp(method, "rtn"), m_imx = !strcmp(method, "imatrix"), m_gptq = !strcmp(method, "gptq");
    const char *bad = NULL;
    if (!m_rtn && !m_imx && !m_gptq) bad = "--method must be rtn, imatrix or gptq";
    else if (m_rtn && (imatrix_file || calib)) bad = "--method rtn rounds plainly: --imatrix / --calib need --method imatrix or gptq";
    else if (m_imx && !imatrix_file && !calib) bad = "--method imatrix needs --imatrix STATS or --calib FILE";
    else if (m_gptq && !calib) bad = "--method gptq needs --calib FILE";
    else if (!m_gptq && gptq_flags) bad = "--damp, --block, --act-order and --static-groups need --method gptq";
    else if (m_gptq && o.dry_run) bad = "--dry-run plans only: drop --method gptq";
    if (bad) { fprintf(stderr, "nibble quantize: %s\n", bad); goto done; }
    if (group) {
        const char *nm = NULL;
        switch (o.mix->base) {
        case NB_TYPE_INT4_SYM_G32: case NB_TYPE_INT4_SYM_G64: case NB_TYPE_INT4_SYM_G128:
            nm = group == 32 ? "int4-sym-g32" : group == 64 ? "int4-sym-g64" : group == 128 ? "int4-sym-g128" : NULL;
            break;
        case NB_TYPE_INT4_ASYM_G32: case NB_TYPE_INT4_ASYM_G64: case NB_TYPE_INT4_ASYM_G128:
            nm = group == 32 ? "int4-asym-g32" : group == 64 ? "int4-asym-g64" : group == 128 ? "int4-asym-g128" : NULL;
            break;
        default: {
            const nb_type_traits *gt = nb_type_get(o.mix->base);
            if (gt && (long)gt->block_size == group) nm = o.mix->name;
        }
        }
        const nb_mix_info *gm = nm ? nb_mix_find(nm) : NULL;
        if (!gm) {
            const nb_type_traits *gt = nb_type_get(o.mix->base);
            if (nm == NULL && !strncmp(o.mix->name, "int4", 4))
                fprintf(stderr, "nibble quantize: --group %ld: int4 mixes take 32, 64 or 128\n", group);
            else
                fprintf(stderr, "nibble quantize: --group %ld: %s has fixed blocks of %u (only int4 mixes take a group)\n",
                        group, o.mix->name, gt ? gt->block_size : 0);
            goto done;
        }
        o.mix = gm;
    }
    const nb_type_traits *bt = nb_type_get(o.mix->base);
    if (!bt || !bt->quantize) {
        fprintf(stderr, "nibble quantize: mix %s: quantizing to %s is not available in this build\n", o.mix->name,
                nb_type_name(o.mix->base));
        rc = NB_EXIT_INPUT;
        goto done;
    }
    if (dst && !ends_with(dst, ".gguf"))
        NB_WARN(&ctx, "%s: output is GGUF whatever the extension (consider naming it .gguf)", dst);
    o.rules = &rules;
    if (imatrix_file) {
        nb_status ist = nb_imatrix_load_for_model(imatrix_file, src, &im, &ctx);
        if (ist != NB_OK) { rc = nb_cli_fail("quantize", &ctx, ist); goto done; }
        o.importance = nb_imatrix_importance_fn;
        o.importance_user = &imu;
    } else if (m_imx) {
        /* statistics first, from the calibration text (what nibble calibrate writes) */
        nb_calib_opts co = {.calib_path = calib, .corpus = go.corpus};
        nb_routing rt;
        nb_calib_result cres;
        nb_status cst = nb_calibrate(src, &co, &im, &rt, &cres, &ctx);
        nb_routing_free(&rt);
        if (cst != NB_OK) { rc = nb_cli_fail("quantize", &ctx, cst); goto done; }
        NB_INFO(&ctx, "imatrix: %zu chunks (%llu tokens) in %.1f s", cres.n_chunks,
                (unsigned long long)cres.n_tokens, cres.seconds);
        o.importance = nb_imatrix_importance_fn;
        o.importance_user = &imu;
    }
    nb_quant_result res;
    nb_gptq_model_result gres = {0};
    nb_status st;
    if (m_gptq) {
        go.calib_path = calib;
        go.compare_rtn = o.report;
        st = nb_gptq_quantize_model(src, dst, &o, &go, &gres, &ctx);
        res = gres.quant;
        memset(&gres.quant, 0, sizeof gres.quant);
    } else {
        st = nb_quantize_model(src, dst ? dst : "", &o, &res, &ctx);
    }
    if (st != NB_OK) {
        rc = nb_cli_fail("quantize", &ctx, st);
        nb_quant_result_free(&res);
        nb_gptq_model_result_free(&gres);
        goto done;
    }
    FILE *human = json ? stderr : stdout;
    if (o.dry_run && !json) print_plan(stdout, &res);
    if (!ctx.quiet || (o.dry_run && !json)) {
        if (o.report) print_report(human, &res);
        if (m_gptq && o.report) print_gptq(human, &gres);
        print_summary(human, &res, dst);
        if (m_gptq)
            fprintf(human, "gptq: %zu weights (expert slices counted singly) by GPTQ, %zu rounded to nearest, "
                    "%lld experts without calibration tokens; %zu chunks x %llu tokens; calibration passes %.1f s, "
                    "GPTQ %.1f s\n", gres.n_gptq, gres.n_rtn, (long long)gres.n_zero_experts, gres.n_chunks,
                    (unsigned long long)(gres.n_chunks ? gres.n_tokens / gres.n_chunks : 0), gres.seconds_calib,
                    gres.seconds_gptq);
    }
    rc = NB_EXIT_OK;
    if (report_file) {
        char *rj = nb_quant_result_json(&res, src, dst, &o, true);
        st = rj ? write_text_atomic(report_file, rj, &ctx) : nb_err(&ctx, NB_ERR_NOMEM, "out of memory for JSON");
        free(rj);
        if (st != NB_OK) rc = nb_cli_fail("quantize", &ctx, st);
    }
    if (json && rc == NB_EXIT_OK) {
        char *sj = nb_quant_result_json(&res, src, dst, &o, true);
        char *out = sj ? with_method(sj, method, m_gptq ? &gres : NULL) : NULL;
        if (out) { puts(out); free(out); }
        else if (sj) puts(sj);
        free(sj);
    }
    nb_quant_result_free(&res);
    nb_gptq_model_result_free(&gres);
done:
    nb_imatrix_importance_free(&imu);
    nb_imatrix_free(&im);
    nb_rules_free(&rules);
    nb_ctx_free(&ctx);
    return rc;
}
