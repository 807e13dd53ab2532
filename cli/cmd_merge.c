/* cli/cmd_merge.c — `nibble merge BASE --adapter A[:W]... -o OUT [--type T] [--qlora ...] [--report [F]] [--json]`. */
#include "cli/cli.h"
#include "core/afile.h"
#include "core/progress.h"
#include "distill/merge.h"
#include "distill/merge_hf.h"
#include "core/str.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ADAPTERS 64

/* "PATH:W" -> path + weight when the text after the last ':' is a number. */
static bool parse_adapter(const char *arg, char **path, double *w) {
    const char *c = strrchr(arg, ':');
    *w = 1.0;
    if (c && c[1]) {
        char *end;
        errno = 0;
        double v = strtod(c + 1, &end);
        if (!*end && !errno && isfinite(v)) {
            *path = nb_strndup(NULL, arg, (size_t)(c - arg)); /* fault-injectable: core/fault.h */
            *w = v;
            return *path != NULL;
        }
    }
    *path = nb_strdup(NULL, arg);
    return *path != NULL;
}

/* The --adapter list, filled in argv order. */
typedef struct {
    nb_merge_adapter ads[MAX_ADAPTERS];
    char *paths[MAX_ADAPTERS];
    size_t n;
} adapter_list;

static nb_status add_adapter(const nb_opt *opt, const char *arg, nb_ctx *ctx) {
    adapter_list *l = opt->dest;
    if (l->n == MAX_ADAPTERS) return nb_err(ctx, NB_ERR_INVALID, "at most %d adapters", MAX_ADAPTERS);
    if (!parse_adapter(arg, &l->paths[l->n], &l->ads[l->n].weight)) return nb_err(ctx, NB_ERR_NOMEM, "out of memory");
    l->ads[l->n].path = l->paths[l->n];
    l->n++;
    return NB_OK;
}

static nb_status set_type(const nb_opt *opt, const char *arg, nb_ctx *ctx) {
    nb_merge_opts *o = opt->dest;
    const nb_type_traits *tr;
    if (!nb_type_from_name(arg, &o->type) || !(tr = nb_type_get(o->type)) || !tr->quantize)
        return nb_err(ctx, NB_ERR_INVALID, "unknown or unwritable type '%s' (f32, f16, bf16, q8_0, q4_K ...)", arg);
    o->set_type = true;
    return NB_OK;
}

static nb_status set_blocksize(const nb_opt *opt, const char *arg, nb_ctx *ctx) {
    unsigned long long v;
    if (!nb_cli_parse_u64(arg, &v) || v < 32 || v > 4096 || (v & (v - 1)))
        return nb_err(ctx, NB_ERR_INVALID, "--qlora-blocksize needs a power of two in [32, 4096]");
    *(uint32_t *)opt->dest = (uint32_t)v;
    return NB_OK;
}

static void print_report(FILE *f, const nb_merge_result *r) {
    fprintf(f, "%-3s %-44s %-30s %-9s %5s %8s %10s %11s\n", "#", "module", "tensor", "kind", "rank", "alpha",
            "scaling", "|dW|/|W|");
    for (size_t i = 0; i < r->n_entries; i++) {
        const nb_merge_entry *e = &r->entries[i];
        char tn[300];
        if (e->expert >= 0) snprintf(tn, sizeof tn, "%s[%lld]", e->tensor, (long long)e->expert);
        else snprintf(tn, sizeof tn, "%s", e->tensor);
        char rel[32] = "-";
        if (e->base_norm > 0) snprintf(rel, sizeof rel, "%.4e", e->delta_norm / e->base_norm);
        if (e->kind == NB_MERGE_REPLACE)
            fprintf(f, "%-3zu %-44s %-30s %-9s %5s %8s %10s %11s\n", e->adapter, e->module, tn,
                    nb_merge_kind_name(e->kind), "-", "-", "-", rel);
        else
            fprintf(f, "%-3zu %-44s %-30s %-9s %5u %8g %10.5g %11s\n", e->adapter, e->module, tn,
                    nb_merge_kind_name(e->kind), e->rank, e->alpha, e->scaling, rel);
    }
}

int nb_cmd_merge(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    adapter_list al = {.n = 0};
    const char *dst = NULL, *report_file = NULL;
    bool json = false, report = false;
    nb_merge_opts o = {0};
    const nb_opt opts[] = {
        {.name = "adapter", .type = NB_OPT_CALL, .fn = add_adapter, .dest = &al, .meta = "A[:W]",
         .flags = NB_OPT_REQUIRED,
         .help = "adapter to merge; repeatable, applied in the order given. W (default 1)\n"
                 "multiplies the adapter's scaling (PEFT's set_scale); e.g. A:0.7"},
        {.name = "output", .short_name = 'o', .type = NB_OPT_STR, .dest = &dst, .meta = "OUT",
         .flags = NB_OPT_OUTPUT | NB_OPT_REQUIRED,
         .help = "output file (required)"},
        {.name = "type", .type = NB_OPT_CALL, .fn = set_type, .dest = &o, .meta = "T",
         .help = "write every float/quantized matrix as T (f32, f16, bf16, q8_0, ...),\n"
                 "1-D tensors as f32. Default: untouched tensors are copied byte for\n"
                 "byte, merged ones keep an f32/f16/bf16 type; merged tensors of a\n"
                 "quantized base are dequantized and written as f16"},
        {.name = "qlora", .type = NB_OPT_FLAG, .dest = &o.qlora,
         .help = "merge into the NF4 round trip of the base (bitsandbytes-exact), the\n"
                 "weights a QLoRA adapter was trained against; needs a f32/f16/bf16 base"},
        {.name = "qlora-blocksize", .type = NB_OPT_CALL, .fn = set_blocksize, .dest = &o.qlora_blocksize, .meta = "N",
         .help = "NF4 block size (default 64, bitsandbytes' default)"},
        {.name = "qlora-double-quant", .type = NB_OPT_FLAG, .dest = &o.qlora_double_quant,
         .help = "the base was loaded with bnb_4bit_use_double_quant=True (default: off,\n"
                 "as in transformers' BitsAndBytesConfig)"},
        {.name = "report", .type = NB_OPT_STR, .arg = NB_ARG_OPTIONAL, .dest = &report_file, .given = &report,
         .next_suffix = ".json", .meta = "FILE", .flags = NB_OPT_OUTPUT,
         .help = "per merged module: rank, alpha, scaling, ||dW||/||W|| (table), and as\n"
                 "JSON to FILE (also accepted as `--report FILE.json`)"},
        {.name = "json", .type = NB_OPT_FLAG, .dest = &json, .help = "print the JSON report on stdout"},
    };
    const nb_cmd_spec spec = {
        .name = "merge",
        .usage = "BASE --adapter ADAPTER[:WEIGHT]... -o OUT [--type T] [--qlora]\n"
                 "[--qlora-blocksize N] [--qlora-double-quant] [--report[=FILE.json]] [--json]\n"
                 "[--threads N] [--quiet]",
        .about = "Merge LoRA / rsLoRA / DoRA adapters into a base model with PEFT's merge_and_unload math,\n"
                 "one tensor at a time. BASE: a GGUF file, a Hugging Face model directory or a .safetensors\n"
                 "file. ADAPTER: a PEFT directory (adapter_config.json + adapter_model.safetensors) or a\n"
                 "llama.cpp GGUF LoRA file. OUT ending in .gguf: GGUF; .safetensors: one file with HF names when\n"
                 "BASE is a Hugging Face directory (GGUF names otherwise); anything else: a Hugging Face model\n"
                 "directory (config.json + safetensors) that transformers loads. Files are written\n"
                 "to a temporary (OUT.partial.XXXXXX) and renamed when complete, nothing is left on failure.",
        NB_OPTS_TABLE(opts),
        .epilogue = "exit codes: 0 ok, 1 usage, 2 bad input (shape mismatch, missing target, r = 0, NaN ...),\n"
                    "3 I/O",
        NB_OPTS_ONE_POS("BASE"),
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    const char *base = args.pos[0];
    if (rc == NB_OPTS_RUN && !o.qlora && (o.qlora_blocksize || o.qlora_double_quant))
        rc = nb_opts_usage_error(&spec, &args, "--qlora-blocksize / --qlora-double-quant need --qlora");
    if (rc == NB_OPTS_RUN) {
        const char *in[MAX_ADAPTERS + 1] = {base};
        for (size_t k = 0; k < al.n; k++) in[1 + k] = al.paths[k];
        rc = nb_cli_check_paths("merge", &ctx, in, 1 + al.n, NB_CLI_PATHS(dst, report_file));
    }
    if (rc != NB_OPTS_RUN) goto done;
    const size_t n_ad = al.n;
    o.adapters = al.ads;
    o.n_adapters = n_ad;
    nb_merge_result res = {0};
    bool hf_names = false, hf_dir = false;
    nb_status st = nb_merge_wants_hf(base, dst, &hf_names, &hf_dir, &ctx);
    if (st == NB_OK) st = hf_names ? nb_merge_hf(base, dst, hf_dir, &o, &res, &ctx) : nb_merge(base, dst, &o, &res, &ctx);
    if (st != NB_OK) {
        rc = nb_cli_fail("merge", &ctx, st);
        nb_merge_result_free(&res);
        goto done;
    }
    rc = NB_EXIT_OK;
    FILE *human = json ? stderr : stdout;
    if (report && !ctx.quiet) print_report(human, &res);
    if (!ctx.quiet) {
        char b1[32];
        fprintf(human, "merged %zu adapter%s: %zu of %zu tensors changed%s, wrote %s (%s) in %.2f s\nsha256 ", n_ad,
                n_ad == 1 ? "" : "s", res.n_merged, res.n_tensors, o.qlora ? " (NF4 round trip first)" : "", dst,
                nb_fmt_bytes((double)res.bytes_out, b1, sizeof b1), res.seconds);
        for (int k = 0; k < 32; k++) fprintf(human, "%02x", res.sha256[k]);
        fprintf(human, "  %s\n", dst);
    }
    if (report_file || json) {
        char *j = nb_merge_result_json(&res, base, dst, &o);
        if (!j) {
            rc = nb_cli_fail("merge", &ctx, nb_err(&ctx, NB_ERR_NOMEM, "out of memory for JSON"));
        } else {
            if (report_file && (st = nb_afile_write_text(report_file, j, &ctx)) != NB_OK) {
                nb_err_prefix(&ctx, "%s is complete, but the report failed", dst);
                rc = nb_cli_fail("merge", &ctx, st);
            }
            if (json && rc == NB_EXIT_OK) puts(j);
            free(j);
        }
    }
    nb_merge_result_free(&res);
done:
    for (size_t k = 0; k < al.n; k++) free(al.paths[k]);
    nb_ctx_free(&ctx);
    return rc;
}
