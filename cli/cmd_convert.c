/* cli/cmd_convert.c — `nibble convert SRC -o OUT [--type f32|f16|bf16] [--format hf] [--json]`. */
#include "cli/cli.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "formats/convert.h"
#include "formats/hf_write.h"

#include <stdio.h>
#include <string.h>

int nb_cmd_convert(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    const char *dst = NULL;
    bool json = false;
    nb_convert_opts o = {0};
    int format = 0; /* 0: by OUT's extension, 1: hf directory */
    uint64_t max_shard = 0;
    static const nb_opt_choice formats[] = {{"file", 0}, {"hf", 1}, {0, 0}};
    const nb_opt opts[] = {
        {.name = "output", .short_name = 'o', .type = NB_OPT_STR, .dest = &dst, .meta = "OUT",
         .flags = NB_OPT_OUTPUT | NB_OPT_REQUIRED,
         .help = "output file (required)"},
        {.name = "type", .type = NB_OPT_CALL, .fn = nb_cli_opt_float_type, .dest = &o.type, .given = &o.set_type,
         .meta = "T",
         .help = "store float and quantized tensors with >= 2 dims as T (f32, f16,\n"
                 "bf16; quantized ones are dequantized); 1-D tensors (norms, biases)\n"
                 "become f32. Default: keep every type as is\n"
                 "(lossless; quantized GGUF tensors are copied byte for byte).\n"
                 "Quantized types: `nibble quantize`"},
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
        .usage = "SRC -o OUT [--type f32|f16|bf16] [--format file|hf] [--max-shard-size SIZE] [--json]\n"
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
    nb_convert_result res;
    nb_status st;
    if (format == 1) {
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
