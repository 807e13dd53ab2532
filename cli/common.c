/* cli/common.c — helpers shared by the subcommands. */
#include "cli/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

bool nb_cli_parse_u64(const char *s, unsigned long long *out) {
    if (!s || !*s || *s == '-') return false;
    errno = 0;
    char *end;
    double mult = 1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return false;
    if (*end == '.') { /* fractional sizes like 1.5G */
        double d = strtod(s, &end);
        if (*end == 'K' || *end == 'k') mult = 1e3; else if (*end == 'M') mult = 1e6;
        else if (*end == 'G') mult = 1e9; else if (*end == 'T') mult = 1e12; else return false;
        if (end[1] && strcmp(end + 1, "B") != 0) return false;
        *out = (unsigned long long)(d * mult);
        return true;
    }
    if (*end) {
        if (*end == 'K' || *end == 'k') mult = 1e3; else if (*end == 'M') mult = 1e6;
        else if (*end == 'G') mult = 1e9; else if (*end == 'T') mult = 1e12; else return false;
        if (end[1] && strcmp(end + 1, "B") != 0) return false;
    }
    *out = v * (unsigned long long)mult;
    return true;
}

int nb_cli_common_opt(nb_ctx *ctx, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) { ctx->quiet = true; return 1; }
    if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) { ctx->log_level = NB_LOG_DEBUG; return 1; }
    if (!strcmp(a, "--threads") || !strcmp(a, "-t")) {
        unsigned long long n;
        if (*i + 1 >= argc || !nb_cli_parse_u64(argv[*i + 1], &n) || n < 1 || n > 1024) {
            fprintf(stderr, "nibble: --threads needs a number between 1 and 1024\n");
            return -1;
        }
        ctx->n_threads = (int)n;
        *i += 1;
        return 1;
    }
    return 0;
}
