/* cli/cmd_quantize.c — `nibble quantize SRC -o OUT --type MIX [--rule P=T]... [--report [F]] [--json]`. */
#include "calib/imatrix.h"
#include "cli/cli.h"
#include "core/afile.h"
#include "core/progress.h"
#include "quant/quantize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(FILE *f) {
    fputs("usage: nibble quantize SRC -o OUT.gguf --type MIX [--rule PATTERN=TYPE]... [--pure]\n"
          "                       [--no-fallback] [--dry-run] [--report[=FILE.json]] [--json]\n"
          "                       [--imatrix STATS] [--threads N] [--quiet]\n\n"
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
    }
    nb_quant_result res;
    nb_status st = nb_quantize_model(src, dst ? dst : "", &o, &res, &ctx);
    if (st != NB_OK) {
        rc = nb_cli_fail("quantize", &ctx, st);
        nb_quant_result_free(&res);
        goto done;
    }
    FILE *human = json ? stderr : stdout;
    if (o.dry_run && !json) print_plan(stdout, &res);
    if (!ctx.quiet || (o.dry_run && !json)) {
        if (o.report) print_report(human, &res);
        print_summary(human, &res, dst);
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
        if (sj) { puts(sj); free(sj); }
    }
    nb_quant_result_free(&res);
done:
    nb_imatrix_importance_free(&imu);
    nb_imatrix_free(&im);
    nb_rules_free(&rules);
    nb_ctx_free(&ctx);
    return rc;
}
