/* cli/cli.h — the `nibble` subcommands. The CLI only parses arguments and
 * calls the library. Exit codes: 0 ok, 1 usage, 2 bad input, 3 I/O (incl.
 * disk full and out of memory). */
#ifndef NB_CLI_H
#define NB_CLI_H

#include "cli/opts.h"
#include "core/ctx.h"
#include "quant/budget.h"

#include <stdbool.h>

enum { NB_EXIT_OK = 0, NB_EXIT_USAGE = 1, NB_EXIT_INPUT = 2, NB_EXIT_IO = 3, NB_EXIT_GATE = 4 };

/* Each command gets argv with argv[0] = command name. */
int nb_cmd_inspect(int argc, char **argv);
int nb_cmd_convert(int argc, char **argv);
int nb_cmd_synth(int argc, char **argv);
int nb_cmd_quantize(int argc, char **argv);
int nb_cmd_merge(int argc, char **argv);
int nb_cmd_prune(int argc, char **argv);
int nb_cmd_logits(int argc, char **argv);
int nb_cmd_calibrate(int argc, char **argv);
int nb_cmd_ppl(int argc, char **argv);
int nb_cmd_run(int argc, char **argv);
int nb_cmd_build(int argc, char **argv);
int nb_cmd_verify(int argc, char **argv);
int nb_cmd_batch(int argc, char **argv);
int nb_cmd_version(int argc, char **argv);
int nb_cmd_plan(int argc, char **argv);
int nb_cmd_embed(int argc, char **argv);

/* Map a library status to the documented exit code. */
int nb_cli_exit_code(nb_status st);
/* Print "nibble CMD: <errmsg>" to stderr and return the exit code for st. */
int nb_cli_fail(const char *cmd, nb_ctx *ctx, nb_status st);
/* --json of long commands (plan, quantize, build): progress events as JSON lines
 * on stdout, each before the command's result line (docs/cli.md). */
void nb_cli_json_events(nb_ctx *ctx);
/* --rule PAT=TYPE (and its llama-quantize spellings): o->dest is an nb_rules. */
nb_status nb_cli_add_rule(const nb_opt *o, const char *arg, nb_ctx *ctx);
/* Before any work: refuse an output that is one of the inputs or another
 * output (core/paths.h). Prints "nibble CMD: <message>" and returns
 * NB_EXIT_USAGE, or returns NB_OPTS_RUN to go on. NULL entries are skipped.
 * Call as nb_cli_check_paths("x", &ctx, NB_CLI_PATHS(model, calib), NB_CLI_PATHS(out, report)). */
int nb_cli_check_paths(const char *cmd, nb_ctx *ctx, const char *const *in, size_t n_in, const char *const *out,
                       size_t n_out);
#define NB_CLI_PATHS(...)                                                                          \
    (const char *const[]){__VA_ARGS__}, sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)
/* NB_OPT_CALL handler for a float storage type: opt->dest is an nb_type set to
 * f32, f16 or bf16 (any case); anything else is NB_ERR_INVALID (usage). */
nb_status nb_cli_opt_float_type(const nb_opt *opt, const char *arg, nb_ctx *ctx);

/* The size-budget options `nibble plan` and `nibble quantize` share
 * (quant/budget.h): the rows come from NB_CLI_BUDGET_ROWS(b, "ctx" or
 * "budget-ctx") in the command's table, the checks and the nb_budget from
 * nb_cli_budget_finish after parsing. */
typedef struct nb_cli_budget {
    uint64_t target_size, budget, overhead;
    double target_bpw;
    int ctx, kv_type, runtime;
    uint32_t sample_rows;
    bool size_set, bpw_set, budget_set, ctx_set, kv_set, overhead_set;
    bool allow_prune, criterion_set;
    int prune_criterion;
    const char *measure_state;
    const char *cal_text;
    int cal_ctx, cal_chunks;
} nb_cli_budget;
extern const nb_opt_choice nb_cli_prune_criteria[];
extern const nb_opt_choice nb_cli_kv_types[];
extern const nb_opt_choice nb_cli_runtimes[];
/* The two options that steer `--method mixed` (quant/budget.h method_seconds
 * and method_lambda), shared by `nibble plan` and `nibble quantize`. */
#define NB_CLI_METHOD_MIX_ROWS(seconds, lambda)                                                              \
    {.name = "method-time-budget", .type = NB_OPT_DOUBLE, .dest = &(seconds), .meta = "SECONDS", .lo = 0,      \
     .hi = 1e9, .flags = NB_OPT_LO_OPEN,                                                                     \
     .help = "mixed: at most this many predicted seconds of GPTQ and AWQ work beyond rounding"},                    \
    {.name = "method-lambda", .type = NB_OPT_DOUBLE, .dest = &(lambda), .meta = "X", .lo = 0, .hi = 1e300,    \
     .help = "mixed: GPTQ or AWQ where its saved predicted loss exceeds X per extra\n"                     \
             "predicted second (default 0: wherever it is predicted to help)"}
#define NB_CLI_BUDGET_ROWS(b, ctx_name)                                                                               \
    {.name = "target-size", .type = NB_OPT_SIZE, .dest = &(b).target_size, .given = &(b).size_set, .meta = "SIZE",           \
     .help = "plan for a file of at most SIZE (24GiB, 5.5G, 500M: the exact GGUF size)"},                  \
    {.name = "target-bpw", .type = NB_OPT_DOUBLE, .dest = &(b).target_bpw, .given = &(b).bpw_set, .meta = "X",      \
     .lo = 0, .hi = 64, .flags = NB_OPT_LO_OPEN, .help = "plan for at most X bits per weight over all tensors"},     \
    {.name = "budget", .type = NB_OPT_SIZE, .dest = &(b).budget, .given = &(b).budget_set, .meta = "SIZE",         \
     .help = "plan for a runtime memory of at most SIZE: weights + KV cache at --" ctx_name " +\n"                 \
             "compute buffers + overhead (docs/planner.md)"},                                                        \
    {.name = ctx_name, .type = NB_OPT_INT, .dest = &(b).ctx, .given = &(b).ctx_set, .meta = "N", .lo = 1,           \
     .hi = 1 << 30, .flags = NB_OPT_SUB, .help = "context in tokens the budget must hold (required with --budget)"}, \
    {.name = "kv-type", .type = NB_OPT_CHOICE, .dest = &(b).kv_type, .given = &(b).kv_set, .meta = "T",             \
     .choices = nb_cli_kv_types, .flags = NB_OPT_SUB, .help = "KV cache type: f16 (default), q8_0, q4_0"},          \
    {.name = "overhead", .type = NB_OPT_SIZE, .dest = &(b).overhead, .given = &(b).overhead_set, .meta = "SIZE",     \
     .flags = NB_OPT_SUB, .help = "runtime overhead added to the budget's total (default 256MiB)"},                 \
    {.name = "runtime", .type = NB_OPT_CHOICE, .dest = &(b).runtime, .meta = "R", .choices = nb_cli_runtimes,       \
     .help = "llama.cpp (default: GGUF types it loads) or nibble (also nf4 / int4)"},                               \
    {.name = "sample-rows", .type = NB_OPT_U32, .dest = &(b).sample_rows, .meta = "N", .lo = 1, .hi = 1 << 20,      \
     .help = "rows per tensor sampled to measure errors (default 64)"},                                             \
    {.name = "calibrate-kld", .type = NB_OPT_STR, .dest = &(b).cal_text, .meta = "TEXT",                           \
     .help = "scale each tensor group's predicted errors by the engine's KLD with that group\n"                    \
             "alone quantized on TEXT (one pass per group; an encoder: the mean cosine distance\n"                  \
             "of the embeddings of TEXT's lines; docs/planner.md)"},                                                \
    {.name = "calibrate-ctx", .type = NB_OPT_INT, .dest = &(b).cal_ctx, .meta = "N", .lo = 4, .hi = 1 << 20,         \
     .flags = NB_OPT_SUB, .help = "tokens per chunk of --calibrate-kld (default 512)"},                             \
    {.name = "calibrate-chunks", .type = NB_OPT_INT, .dest = &(b).cal_chunks, .meta = "N", .lo = 1, .hi = 1 << 30,   \
     .flags = NB_OPT_SUB, .help = "chunks of --calibrate-kld scored (default: all)"},                               \
    {.name = "measure-state", .type = NB_OPT_STR, .dest = &(b).measure_state, .meta = "FILE",                       \
     .help = "keep the measured errors in FILE as they come: an interrupted run resumes\n"                          \
             "there, a finished one is reused (same model, importance data and options only)"},                    \
    {.name = "allow-prune", .type = NB_OPT_FLAG, .dest = &(b).allow_prune,                                           \
     .help = "MoE: when every expert cannot fit, keep fewer experts per layer (the planner\n"                        \
             "chooses how many; needs routing statistics: --imatrix from nibble calibrate, or --calib)"},             \
    {.name = "prune-criterion", .type = NB_OPT_CHOICE, .dest = &(b).prune_criterion, .given = &(b).criterion_set,    \
     .meta = "C", .choices = nb_cli_prune_criteria, .flags = NB_OPT_SUB,                                             \
     .help = "which experts go with --allow-prune: reap (default) or freq (as nibble prune)"}

/* The calibration-corpus rows under a --calib row: --calib-tokens N, --CTX_NAME N
 * (chunk length) and --seed S into an nb_corpus_opts. */
#define NB_CLI_CORPUS_ROWS(corpus, ctx_name)                                                                          \
    {.name = "calib-tokens", .type = NB_OPT_U64, .dest = &(corpus).max_tokens, .meta = "N", .flags = NB_OPT_SUB,     \
     .help = "token budget: a seeded sample of ceil(N / " ctx_name ") chunks (default: all)"},                      \
    {.name = ctx_name, .type = NB_OPT_INT, .dest = &(corpus).n_ctx, .meta = "N", .lo = 2, .hi = 1000000,            \
     .flags = NB_OPT_SUB, .help = "calibration chunk length in tokens (default 512)"},                              \
    {.name = "seed", .type = NB_OPT_U64, .dest = &(corpus).seed, .meta = "S", .flags = NB_OPT_SUB,                  \
     .help = "sample seed (default 0)"}

/* After nb_opts_parse: at most one of --target-size / --target-bpw /
 * --budget (out->kind NB_BUDGET_NONE when none), --ctx required with --budget
 * and refused without it (also --kv-type, --overhead). Returns NB_OPTS_RUN, or
 * the usage error's exit code after printing it. */
int nb_cli_budget_finish(const nb_cmd_spec *spec, const nb_args *args, const nb_cli_budget *b, const char *ctx_name,
                         nb_budget *out);

/* --kv-type of the engine commands (ppl, run, logits): dest is an int holding an nb_cache_type. */
extern const nb_opt_choice nb_cli_cache_types[];
#define NB_CLI_OPT_CACHE_TYPE(var)                                                                                   \
    {.name = "kv-type", .type = NB_OPT_CHOICE, .dest = (var), .choices = nb_cli_cache_types, .meta = "T",        \
     .help = "KV cache type: f32 (default), f16 (llama.cpp's default) or q8_0, with llama.cpp's\n"                \
             "arithmetic for each (docs/engine.md)"}

#endif
