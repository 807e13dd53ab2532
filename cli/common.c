/* cli/common.c — helpers shared by the subcommands. */
#include "cli/cli.h"
#include "core/types.h"

#include <stdio.h>

int nb_cli_exit_code(nb_status st) {
    switch (st) {
    case NB_OK: return NB_EXIT_OK;
    case NB_ERR_INVALID: return NB_EXIT_USAGE;
    case NB_ERR_FORMAT: case NB_ERR_UNSUPPORTED: case NB_ERR_RANGE: return NB_EXIT_INPUT;
    default: return NB_EXIT_IO;
    }
}

int nb_cli_fail(const char *cmd, nb_ctx *ctx, nb_status st) {
    const char *m = nb_errmsg(ctx);
    fprintf(stderr, "nibble %s: %s\n", cmd, m && *m ? m : nb_status_name(st));
    return nb_cli_exit_code(st);
}

nb_status nb_cli_opt_float_type(const nb_opt *opt, const char *arg, nb_ctx *ctx) {
    nb_type t;
    if (!nb_type_from_name(arg, &t) || (t != NB_TYPE_F32 && t != NB_TYPE_F16 && t != NB_TYPE_BF16))
        return nb_err(ctx, NB_ERR_INVALID, "--%s must be f32, f16 or bf16 (got '%s')", opt->name, arg);
    *(nb_type *)opt->dest = t;
    return NB_OK;
}
