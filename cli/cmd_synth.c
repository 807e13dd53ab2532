/* cli/cmd_synth.c — `nibble synth`: write a seeded random model (formats/synth.h). */
#include "cli/cli.h"
#include "formats/synth.h"

#include <stdio.h>
#include <string.h>

static const char *const HELP =
    "usage: nibble synth --arch A [shape options | --size N] [--dtype T] [--seed S] -o OUT\n\n"
    "Write a seeded random model of a supported architecture, for tests and benchmarks.\n"
    "OUT ending in .gguf gives a GGUF file (GGUF tensor names and metadata plus a minimal\n"
    "byte-level vocabulary); any other path gives a Hugging Face model directory\n"
    "(config.json + model.safetensors, sharded with model.safetensors.index.json when\n"
    "larger than --shard-size) that `nibble convert` reads back into the same tensors.\n"
    "The same options and seed give the same bytes at any --threads count. Weights are\n"
    "~N(0, 0.02); norm weights are 1. Memory use is a few MiB whatever the model size.\n\n"
    "  --arch A           llama, mistral, mixtral, qwen2, qwen3, qwen2moe, qwen3moe, gemma3\n"
    "  -o, --output OUT   output .gguf file or directory (required)\n"
    "  --seed S           random seed (default 0)\n"
    "  --dtype T          f32, f16 or bf16 for the weight matrices (default f16); norms,\n"
    "                     biases and MoE routers are f32, as llama.cpp stores them\n"
    "  --layers N         number of blocks (default 2)\n"
    "  --dim N            hidden size (default 256)\n"
    "  --ff N             feed-forward width; per expert for MoE (default 512)\n"
    "  --heads N          attention heads (default 4)\n"
    "  --kv-heads N       key/value heads, must divide --heads (default 2)\n"
    "  --experts N        experts per MoE layer (default 4)\n"
    "  --experts-used N   experts routed per token (default 2)\n"
    "  --vocab N          vocabulary size (default 512; 32000 with --size)\n"
    "  --ctx N            context length written to the metadata (default 4096)\n"
    "  --size N           target file size, e.g. 1G, 4G, 500M (decimal units): chooses the\n"
    "                     dims not given explicitly (dim, layers, ff, heads)\n"
    "  --shard-size N     largest safetensors shard of a directory output (default 4G)\n"
    "  --no-vocab         GGUF: leave out the tokenizer metadata\n"
    "  --threads N, --quiet, --verbose\n\n"
    "examples:\n"
    "  nibble synth --arch llama --size 1G --dtype f16 --seed 1 -o llama-1g.gguf\n"
    "  nibble synth --arch qwen2moe --layers 2 --dim 128 --experts 8 --seed 7 -o qwen-moe/\n";

/* Parse "--opt N" into a u32 (K/M/G suffixes allowed). Returns false after printing. */
static bool u32_arg(int argc, char **argv, int *i, uint32_t *out) {
    unsigned long long v;
    if (*i + 1 >= argc || !nb_cli_parse_u64(argv[*i + 1], &v) || v == 0 || v > UINT32_MAX) {
        fprintf(stderr, "nibble synth: %s needs a positive integer\n", argv[*i]);
        return false;
    }
    *out = (uint32_t)v;
    *i += 1;
    return true;
}

int nb_cmd_synth(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    const char *out = NULL;
    bool have_arch = false;
    int rc = NB_EXIT_USAGE;
    static const struct { const char *flag; size_t off; } dims[] = {
        {"--layers", offsetof(nb_synth_opts, n_layer)},     {"--dim", offsetof(nb_synth_opts, n_embd)},
        {"--ff", offsetof(nb_synth_opts, n_ff)},            {"--heads", offsetof(nb_synth_opts, n_head)},
        {"--kv-heads", offsetof(nb_synth_opts, n_head_kv)}, {"--experts", offsetof(nb_synth_opts, n_expert)},
        {"--experts-used", offsetof(nb_synth_opts, n_expert_used)},
        {"--vocab", offsetof(nb_synth_opts, n_vocab)},      {"--ctx", offsetof(nb_synth_opts, n_ctx)},
    };
    for (int i = 1; i < argc; i++) {
        int r = nb_cli_common_opt(&ctx, argc, argv, &i);
        if (r < 0) goto done;
        if (r) continue;
        const char *a = argv[i];
        bool matched = false;
        for (size_t k = 0; k < sizeof dims / sizeof dims[0]; k++) {
            if (strcmp(a, dims[k].flag) != 0) continue;
            if (!u32_arg(argc, argv, &i, (uint32_t *)((char *)&o + dims[k].off))) goto done;
            matched = true;
            break;
        }
        if (matched) continue;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(HELP, stdout);
            rc = NB_EXIT_OK;
            goto done;
        } else if (!strcmp(a, "--arch") && i + 1 < argc) {
            o.arch = argv[++i];
            have_arch = true;
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(a, "--seed") && i + 1 < argc) {
            unsigned long long v;
            if (!nb_cli_parse_u64(argv[++i], &v)) {
                fprintf(stderr, "nibble synth: --seed needs a non-negative integer\n");
                goto done;
            }
            o.seed = v;
        } else if (!strcmp(a, "--dtype") && i + 1 < argc) {
            const char *t = argv[++i];
            if (!nb_type_from_name(t, &o.dtype) ||
                (o.dtype != NB_TYPE_F32 && o.dtype != NB_TYPE_F16 && o.dtype != NB_TYPE_BF16)) {
                fprintf(stderr, "nibble synth: --dtype must be f32, f16 or bf16 (got '%s')\n", t);
                goto done;
            }
        } else if ((!strcmp(a, "--size") || !strcmp(a, "--shard-size")) && i + 1 < argc) {
            unsigned long long v;
            if (!nb_cli_parse_u64(argv[i + 1], &v) || v == 0) {
                fprintf(stderr, "nibble synth: %s needs a positive size such as 500M or 4G\n", a);
                goto done;
            }
            if (a[2] == 's' && a[3] == 'i') o.target_bytes = v;
            else o.shard_bytes = v;
            i++;
        } else if (!strcmp(a, "--no-vocab")) {
            o.no_vocab = true;
        } else {
            fprintf(stderr, "nibble synth: unexpected argument '%s'\n\n%s", a, HELP);
            goto done;
        }
    }
    if (!have_arch || !out) {
        fprintf(stderr, "nibble synth: %s is required\n\n%s", !have_arch ? "--arch" : "-o OUT", HELP);
        goto done;
    }
    nb_status st = nb_synth_write(&o, out, &ctx);
    rc = st == NB_OK ? NB_EXIT_OK : nb_cli_fail("synth", &ctx, st);
done:
    nb_ctx_free(&ctx);
    return rc;
}
