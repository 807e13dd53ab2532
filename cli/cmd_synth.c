/* cli/cmd_synth.c — `nibble synth`: write a seeded random model (formats/synth.h). */
#include "cli/cli.h"
#include "formats/synth.h"

#include <stdio.h>
#include <string.h>

/* Shape options: a positive uint32 each (0 in nb_synth_opts means "default"). */
#define DIM(nm, field, text) \
    {.name = nm, .type = NB_OPT_U32, .dest = &o.field, .meta = "N", .lo = 1, .hi = UINT32_MAX, .help = text}

int nb_cmd_synth(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    const char *out = NULL;
    const nb_opt opts[] = {
        {.name = "arch", .type = NB_OPT_STR, .dest = &o.arch, .meta = "A", .flags = NB_OPT_REQUIRED,
         .help = "llama, mistral, mixtral, qwen2, qwen3, qwen2moe, qwen3moe, gemma3"},
        {.name = "output", .short_name = 'o', .type = NB_OPT_STR, .dest = &out, .meta = "OUT",
         .flags = NB_OPT_OUTPUT | NB_OPT_REQUIRED,
         .help = "output .gguf file or directory (required)"},
        {.name = "seed", .type = NB_OPT_U64, .dest = &o.seed, .meta = "S", .help = "random seed (default 0)"},
        {.name = "dtype", .type = NB_OPT_CALL, .fn = nb_cli_opt_float_type, .dest = &o.dtype, .meta = "T",
         .help = "f32, f16 or bf16 for the weight matrices (default f16); norms,\n"
                 "biases and MoE routers are f32, as llama.cpp stores them"},
        DIM("layers", n_layer, "number of blocks (default 2)"),
        DIM("dim", n_embd, "hidden size (default 256)"),
        DIM("ff", n_ff, "feed-forward width; per expert for MoE (default 512)"),
        DIM("heads", n_head, "attention heads (default 4)"),
        DIM("kv-heads", n_head_kv, "key/value heads, must divide --heads (default 2)"),
        DIM("experts", n_expert, "experts per MoE layer (default 4)"),
        DIM("experts-used", n_expert_used, "experts routed per token (default 2)"),
        DIM("vocab", n_vocab, "vocabulary size (default 512; 32000 with --size)"),
        DIM("ctx", n_ctx, "context length written to the metadata (default 4096)"),
        {.name = "size", .type = NB_OPT_SIZE, .dest = &o.target_bytes, .meta = "N", .lo = 1, .hi = (double)UINT64_MAX,
         .help = "target file size, e.g. 1G, 4G, 500M (decimal units; 4GiB: binary):\n"
                 "chooses the dims not given explicitly (dim, layers, ff, heads)"},
        {.name = "shard-size", .type = NB_OPT_SIZE, .dest = &o.shard_bytes, .meta = "N", .lo = 1,
         .hi = (double)UINT64_MAX, .help = "largest safetensors shard of a directory output (default 4G)"},
        {.name = "no-vocab", .type = NB_OPT_FLAG, .dest = &o.no_vocab, .help = "GGUF: leave out the tokenizer metadata"},
        {.name = "starve-experts", .type = NB_OPT_U32, .dest = &o.starve_experts, .meta = "K", .lo = 1,
         .hi = 65535,
         .help = "MoE: the routers never choose the last K experts (one large embedding\n"
                 "channel steers them; for testing calibration with --all-experts)"},
    };
    const nb_cmd_spec spec = {
        .name = "synth",
        .usage = "--arch A [shape options | --size N] [--dtype T] [--seed S] -o OUT",
        .about = "Write a seeded random model of a supported architecture, for tests and benchmarks.\n"
                 "OUT ending in .gguf gives a GGUF file (GGUF tensor names and metadata plus a minimal\n"
                 "byte-level vocabulary); any other path gives a Hugging Face model directory\n"
                 "(config.json + model.safetensors, sharded with model.safetensors.index.json when\n"
                 "larger than --shard-size) that `nibble convert` reads back into the same tensors.\n"
                 "The same options and seed give the same bytes at any --threads count. Weights are\n"
                 "~N(0, 0.02); norm weights are 1. Memory use is a few MiB whatever the model size.",
        NB_OPTS_TABLE(opts),
        .epilogue = "examples:\n"
                    "  nibble synth --arch llama --size 1G --dtype f16 --seed 1 -o llama-1g.gguf\n"
                    "  nibble synth --arch qwen2moe --layers 2 --dim 128 --experts 8 --seed 7 -o qwen-moe/",
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    if (rc == NB_OPTS_RUN) {
        nb_status st = nb_synth_write(&o, out, &ctx);
        rc = st == NB_OK ? NB_EXIT_OK : nb_cli_fail("synth", &ctx, st);
    }
    nb_ctx_free(&ctx);
    return rc;
}
