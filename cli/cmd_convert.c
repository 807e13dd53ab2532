/* cli/cmd_convert.c — `nibble convert SRC -o OUT [--type f32|f16|bf16|MIX] [--format hf] [--json]`.
 * A quantized --type (a mix, as `nibble quantize --type`) is the quantize job
 * (calib/job.h) with requantization of a quantized HF import allowed. */
#include "calib/job.h"
#include "cli/cli.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "formats/convert.h"
#include "formats/hf_write.h"

#include <stdio.h>
#include <string.h>

/* --type: f32 / f16 / bf16 as before (nb_convert), else a quantize mix. */
typedef struct convert_type {
    nb_convert_opts *o;
    const nb_mix_info *mix;
} convert_type;

static nb_status set_type(const nb_opt *opt, const char *arg, nb_ctx *ctx) {
    convert_type *ct = opt->dest;
    nb_type t;
    if (nb_type_from_name(arg, &t) && (t == NB_TYPE_F32 || t == NB_TYPE_F16 || t == NB_TYPE_BF16)) {
        ct->o->type = t;
        ct->o->set_type = true;
        ct->mix = NULL;
        return NB_OK;
    }
    ct->mix = nb_mix_find(arg);
    NB_RETURN_IF(ctx, !ct->mix, NB_ERR_INVALID,
                 "--%s must be f32, f16, bf16 or a quantize mix (got '%s'; see nibble quantize --help)", opt->name,
                 arg);
    ct->o->set_type = false;
    return NB_OK;
}

/* SRC -> OUT.gguf at a mix: nb_quantize_job, the figures as convert prints them. */
static nb_status convert_quantized(const char *src, const char *dst, const nb_mix_info *mix, nb_convert_result *res,
                                   nb_ctx *ctx) {
    const nb_type_traits *bt = nb_type_get(mix->base);
    NB_RETURN_IF(ctx, !bt || !bt->quantize, NB_ERR_UNSUPPORTED, "mix %s: quantizing to %s is not available in this build",
                 mix->name, nb_type_name(mix->base));
    nb_rules rules;
    nb_rules_init(&rules);
    nb_quant_job job = {.src = src, .dst = dst, .plan = {.mix = mix, .rules = &rules}, .requantize_imports = true};
    nb_quant_job_result r;
    nb_status st = nb_quantize_job(&job, &r, ctx);
    if (st == NB_OK) {
        *res = (nb_convert_result){.n_tensors = r.quant.n_tensors, .bytes_in = r.quant.bytes_in,
                                   .bytes_out = r.quant.bytes_out, .seconds = r.quant.seconds};
        memcpy(res->sha256, r.quant.sha256, 32);
    }
    nb_quant_job_result_free(&r);
    nb_rules_free(&rules);
    return st;
}

int nb_cmd_convert(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    const char *dst = NULL;
    bool json = false;
    nb_convert_opts o = {0};
    convert_type ct = {.o = &o};
    int format = 0; /* 0: by OUT's extension, 1: hf directory */
    uint64_t max_shard = 0;
    static const nb_opt_choice formats[] = {{"file", 0}, {"hf", 1}, {0, 0}};
    const nb_opt opts[] = {
        {.name = "output", .short_name = 'o', .type = NB_OPT_STR, .dest = &dst, .meta = "OUT",
         .flags = NB_OPT_OUTPUT | NB_OPT_REQUIRED,
         .help = "output file (required)"},
        {.name = "type", .type = NB_OPT_CALL, .fn = set_type, .dest = &ct, .meta = "T",
         .help = "store float and quantized tensors with >= 2 dims as T (f32, f16,\n"
                 "bf16; quantized ones are dequantized); 1-D tensors (norms, biases)\n"
                 "become f32. Default: keep every type as is\n"
                 "(lossless; quantized GGUF tensors are copied byte for byte).\n"
                 "T a quantize mix (q4_k_m, ...): `nibble quantize SRC --type T`, and a\n"
                 "quantized HF checkpoint (GPTQ, AWQ, ...) is requantized (a note says so)"},
        {.name = "format", .type = NB_OPT_CHOICE, .dest = &format, .choices = formats, .meta = "F",
         .help = "file (default: .gguf / .safetensors by OUT's extension, GGUF names) or hf:\n"
                 "OUT is a Hugging Face model directory (config.json, generation_config.json,\n"
                 "safetensors with HF names, sharded above --max-shard-size; docs/formats.md)"},
        {.name = "max-shard-size", .type = NB_OPT_SIZE, .dest = &max_shard, .meta = "SIZE",
         .help = "--format hf: largest safetensors shard (default 5GB, as transformers)"},
        {.name = "json", .type = NB_OPT_FLAG, .dest = &json, .help = "print a JSON summary on stdout"},
    };
    const nb_cmd_spec spec = {
        .name = "convert",
.usage = "SRC -o OUT [--type f32|f16|bf16|MIX] [--format file|hf] [--max-shard-size SIZE] [--json]\n"
                 "[--threads N] [--quiet]",
        .about = "Convert a model between formats. SRC: a .gguf or .safetensors file, a sharded\n"
                 "model.safetensors.index.json, or a Hugging Face model directory (tensor names are\n"
                 "mapped to GGUF names, q/k rows permuted, experts stacked, as llama.cpp's converter does).\n"
                 "OUT: a path ending in .gguf or .safetensors. The output is written to a temporary and\n"
                 "renamed when complete; nothing is left behind on failure.",
        NB_OPTS_TABLE(opts),
        NB_OPTS_ONE_POS("SRC"),
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    if (rc != NB_OPTS_RUN) { nb_ctx_free(&ctx); return rc; }
    const char *src = args.pos[0];
    rc = nb_cli_check_paths("convert", &ctx, NB_CLI_PATHS(src), NB_CLI_PATHS(dst));
    if (rc != NB_OPTS_RUN) { nb_ctx_free(&ctx); return rc; }
    if (max_shard && format != 1) {
        fprintf(stderr, "nibble convert: --max-shard-size applies to --format hf\n");
        nb_ctx_free(&ctx);
        return NB_EXIT_USAGE;
    }
    if (ct.mix && format == 1) {
        fprintf(stderr, "nibble convert: --type %s with --format hf: use nibble quantize --format gptq|awq|bnb-nf4\n",
                ct.mix->name);
        nb_ctx_free(&ctx);
        return NB_EXIT_USAGE;
    }
    nb_convert_result res;
    nb_status st;
    if (ct.mix) {
        st = convert_quantized(src, dst, ct.mix, &res, &ctx);
    } else if (format == 1) {
        nb_hf_write_opts ho = {.dtype = o.type, .dtype_set = o.set_type, .max_shard_size = max_shard};
        nb_hf_write_result hr;
        st = nb_hf_write_path(src, dst, &ho, &hr, &ctx);
        res = (nb_convert_result){.n_tensors = hr.n_tensors, .bytes_in = hr.bytes_in, .bytes_out = hr.bytes_out,
                                  .seconds = hr.seconds};
        memcpy(res.sha256, hr.sha256, 32);
    } else {
        st = nb_convert(src, dst, &o, &res, &ctx);
    }
    if (st != NB_OK) return nb_cli_fail("convert", &ctx, st);
    char hex[65], b1[32], b2[32], b3[32];
    nb_sha256_hex(res.sha256, hex);
    if (json) {
        printf("{\"input\":\"%s\",\"output\":\"%s\",\"n_tensors\":%zu,\"bytes_in\":%llu,\"bytes_out\":%llu,"
               "\"seconds\":%.3f,\"sha256\":\"%s\"}\n",
               src, dst, res.n_tensors, (unsigned long long)res.bytes_in, (unsigned long long)res.bytes_out,
               res.seconds, hex);
    } else if (!ctx.quiet) {
        fprintf(stderr, "converted %zu tensors: %s -> %s (%s in %.2f s, %s/s)\nsha256 %s  %s\n", res.n_tensors,
                nb_fmt_bytes((double)res.bytes_in, b1, sizeof b1), dst,
                nb_fmt_bytes((double)res.bytes_out, b2, sizeof b2), res.seconds,
                nb_fmt_bytes(res.seconds > 0 ? (double)res.bytes_in / res.seconds : 0, b3, sizeof b3), hex, dst);
    }
    nb_ctx_free(&ctx);
    return NB_EXIT_OK;
}
