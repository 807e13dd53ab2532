/* cli/common.c — helpers shared by the subcommands. */
#include "cli/cli.h"

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
