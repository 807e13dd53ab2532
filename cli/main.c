/* cli/main.c — `nibble` entry point: dispatches to cli/cmd_*.c. */
#include "cli/cli.h"
#include "core/cleanup.h"
#include "formats/json_strict.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} command;

static const command g_commands[] = {
    {"inspect", nb_cmd_inspect, "show format, architecture, metadata and tensor table of a model"},
    {"convert", nb_cmd_convert, "convert between safetensors / HF dirs and GGUF (f32/f16/bf16)"},
    {"synth", nb_cmd_synth, "write a seeded random model of a given architecture and size"},
    {"plan", nb_cmd_plan, "choose a type per tensor to fit a file size, bpw or memory budget (docs/planner.md)"},
    {"quantize", nb_cmd_quantize, "quantize to GGUF types and mixes (q4_k_m, q8_0, iq4_xs, nf4, int4-g128 ...)"},
    {"merge", nb_cmd_merge, "merge LoRA / DoRA / QLoRA adapters (PEFT dirs, GGUF LoRA) into a base model"},
    {"prune", nb_cmd_prune, "drop the least used MoE experts (frequency or REAP scores from calibration)"},
    {"calibrate", nb_cmd_calibrate, "run calibration text, write the importance matrix (llama.cpp imatrix GGUF/.dat)"},
    {"logits", nb_cmd_logits, "print or dump the logits of given token ids (debugging/testing)"},
    {"ppl", nb_cmd_ppl, "perplexity and KL-divergence on a text, llama.cpp's method (--save-logits / --kld)"},
    {"run", nb_cmd_run, "generate text from a prompt (greedy or top-k sampling)"},
    {"build", nb_cmd_build, "run a recipe: merge, prune, calibrate, quantize, validate, report, bundle (resumable)"},
    {"batch", nb_cmd_batch, "run many recipes over many models; resumable, shardable (Slurm job arrays)"},
    {"verify", nb_cmd_verify, "check a bundle or build directory against its manifest (sizes, sha256)"},
    {"embed", nb_cmd_embed, "sentence embeddings of a text encoder (EmbeddingGemma); --compare for fidelity"},
    {"version", nb_cmd_version, "version, git commit, build type and compiled-in features (also --version)"},
};

static void usage(FILE *f) {
    fprintf(f, "nibble %s — turn trained language models into deployable variants\n\n"
               "usage: nibble COMMAND [options]    (nibble COMMAND --help for details)\n\ncommands:\n",
            NB_VERSION);
    for (size_t i = 0; i < sizeof g_commands / sizeof *g_commands; i++)
        fprintf(f, "  %-10s %s\n", g_commands[i].name, g_commands[i].summary);
    fprintf(f, "\ncommon options: -t/--threads N, -q/--quiet, -v/--verbose, -h/--help; `nibble --version`\n"
               "exit codes: 0 ok, 1 usage error, 2 bad input (malformed, unsupported or out-of-range\n"
               "            data), 3 I/O error (cannot read/write, disk full, out of memory),\n"
               "            4 a build's quality gate failed\n");
}

/* A command's output to stdout (`> /dev/full`, a closed pipe reader) may have
 * failed in a buffered write nobody checked: flush and close it here, and turn
 * a failure into exit 3 unless the command already failed. */
static int close_stdout(int rc) {
    errno = 0;
    bool bad = fflush(stdout) != 0 || ferror(stdout);
    int e = errno;
    if (fclose(stdout) != 0 && !bad) { bad = true; e = errno; }
    if (!bad) return rc;
    fprintf(stderr, "nibble: stdout: write error%s%s\n", e ? ": " : "", e ? strerror(e) : "");
    return rc == NB_EXIT_OK ? NB_EXIT_IO : rc;
}

static int run(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return NB_EXIT_USAGE; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return NB_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) return nb_cmd_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof g_commands / sizeof *g_commands; i++)
        if (!strcmp(argv[1], g_commands[i].name)) return g_commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "nibble: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return NB_EXIT_USAGE;
}

/* A command that reported a usage or input error after an allocation failed
 * (a library returning NULL for both, as cJSON_Parse does) failed for lack of
 * memory: exit 3, as nb_cli_exit_code says for the commands that ask it. */
static int after_alloc_failure(int rc) {
    if ((rc != NB_EXIT_USAGE && rc != NB_EXIT_INPUT) || !nb_alloc_failed()) return rc;
    fprintf(stderr, "nibble: out of memory (an allocation failed before the error above)\n");
    return NB_EXIT_IO;
}

int main(int argc, char **argv) {
    nb_cleanup_install_signals("nibble");
    nb_json_use_hooked_allocator(); /* before any JSON: cJSON's hooks are process-wide */
    return close_stdout(after_alloc_failure(run(argc, argv)));
}
