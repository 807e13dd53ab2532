/* cli/cmd_convert.c — `nibble convert SRC -o OUT [--type f32|f16|bf16] [--json]`. */
#include "cli/cli.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "formats/convert.h"

#include <stdio.h>
#include <string.h>

static const char *const HELP =
    "usage: nibble convert SRC -o OUT [--type f32|f16|bf16] [--json] [--threads N] [--quiet]\n\n"
    "Convert a model between formats. SRC: a .gguf or .safetensors file, a sharded\n"
    "model.safetensors.index.json, or a Hugging Face model directory (tensor names are\n"
    "mapped to GGUF names, q/k rows permuted, experts stacked, as llama.cpp's converter does).\n"
    "OUT: a path ending in .gguf or .safetensors. The output is written to OUT.partial and\n"
    "renamed when complete; nothing is left behind on failure.\n\n"
    "  -o, --output OUT   output file (required)\n"
    "  --type T           store float and quantized tensors with >= 2 dims as T (f32, f16,\n"
    "                     bf16; quantized ones are dequantized); 1-D tensors (norms, biases)\n"
    "                     become f32. Default: keep every type as is\n"
    "                     (lossless; quantized GGUF tensors are copied byte for byte).\n"
    "  --json             print a JSON summary on stdout\n";

int nb_cmd_convert(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    const char *src = NULL, *dst = NULL;
    bool json = false;
    nb_convert_opts o = {0};
    for (int i = 1; i < argc; i++) {
        int r = nb_cli_common_opt(&ctx, argc, argv, &i);
        if (r < 0) return NB_EXIT_USAGE;
        if (r) continue;
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(HELP, stdout); return NB_EXIT_OK; }
        if (!strcmp(a, "--json")) json = true;
        else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && i + 1 < argc) dst = argv[++i];
        else if (!strcmp(a, "--type") && i + 1 < argc) {
            const char *t = argv[++i];
            if (!nb_type_from_name(t, &o.type) ||
                (o.type != NB_TYPE_F32 && o.type != NB_TYPE_F16 && o.type != NB_TYPE_BF16)) {
                fprintf(stderr, "nibble convert: --type must be f32, f16 or bf16 (got '%s'); "
                                "use `nibble quantize` for quantized types\n", t);
                return NB_EXIT_USAGE;
            }
            o.set_type = true;
        } else if (a[0] == '-' || src) {
            fprintf(stderr, "nibble convert: unexpected argument '%s'\n%s", a, HELP);
            return NB_EXIT_USAGE;
        } else src = a;
    }
    if (!src || !dst) { fputs(HELP, stderr); return NB_EXIT_USAGE; }
    nb_convert_result res;
    nb_status st = nb_convert(src, dst, &o, &res, &ctx);
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
