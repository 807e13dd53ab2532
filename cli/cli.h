/* cli/cli.h — the `nibble` subcommands. The CLI only parses arguments and
 * calls the library. Exit codes: 0 ok, 1 usage, 2 bad input, 3 I/O (incl.
 * disk full and out of memory). */
#ifndef NB_CLI_H
#define NB_CLI_H

#include "cli/opts.h"
#include "core/ctx.h"

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

/* Map a library status to the documented exit code. */
int nb_cli_exit_code(nb_status st);
/* Print "nibble CMD: <errmsg>" to stderr and return the exit code for st. */
int nb_cli_fail(const char *cmd, nb_ctx *ctx, nb_status st);
/* NB_OPT_CALL handler for a float storage type: opt->dest is an nb_type set to
 * f32, f16 or bf16 (any case); anything else is NB_ERR_INVALID (usage). */
nb_status nb_cli_opt_float_type(const nb_opt *opt, const char *arg, nb_ctx *ctx);

#endif
