/* cli/opts.h — the one option parser of the `nibble` commands.
 *
 * A command declares its options once, in a table of nb_opt rows (names,
 * argument kind, typed target with range, help text), and a nb_cmd_spec
 * (usage synopsis, description, table, epilogue). nb_opts_parse() applies
 * argv to the targets and nb_opts_help() prints --help from the same table,
 * so help and behaviour cannot drift. The common options (-t/--threads N,
 * -q/--quiet, -v/--verbose, -h/--help) are declared here once and accepted by
 * every command; they write into the nb_ctx the command passes in.
 *
 * Syntax (the same as GNU getopt_long, without abbreviations of long names):
 *   --opt VALUE  --opt=VALUE      long option with a required argument
 *   -o VALUE  -oVALUE             short option with a required argument
 *   -qv                           bundled short options without arguments
 *   --report  --report=FILE       optional argument: only the attached form is
 *                                 its value (`-rFILE` for a short name), unless
 *                                 the row sets next_suffix (below)
 *   --                            everything after it is a positional argument
 *   positionals may come before, between or after the options.
 * A required argument is the next argv element whatever it looks like
 * (`--prompt -x` gives "-x"). Options may repeat: a typed target keeps the
 * last value, an NB_OPT_CALL handler sees every occurrence in order (use it
 * for lists: `--rule P=T --rule Q=U`).
 *
 * Errors are usage errors (exit code 1, NB_EXIT_USAGE) printed as one line
 * on the error stream: `nibble CMD: unknown option '--frob' (see nibble CMD --help)`,
 * `nibble CMD: --ctx needs a value`, `nibble CMD: --ctx needs an integer
 * between 2 and 1048576 (got 'x')`, `nibble CMD: -o -: this command cannot
 * write to stdout; give a file name`, `unexpected argument`, `takes no value`.
 * A handler that fails decides the exit code through its nb_status
 * (nb_cli_exit_code) and its message (nb_errmsg).
 *
 * Example:
 *     const char *dst = NULL; bool json = false; int n_ctx = 512;
 *     const nb_opt opts[] = {
 *         {.name = "output", .short_name = 'o', .type = NB_OPT_STR, .dest = &dst, .meta = "OUT",
 *          .flags = NB_OPT_OUTPUT | NB_OPT_REQUIRED, .help = "output file (required)"},
 *         {.name = "ctx", .type = NB_OPT_INT, .dest = &n_ctx, .meta = "N", .lo = 2, .hi = 1 << 20,
 *          .help = "tokens per chunk (default 512)"},
 *         {.name = "json", .type = NB_OPT_FLAG, .dest = &json, .help = "print JSON on stdout"},
 *     };
 *     const nb_cmd_spec spec = {.name = "x", .usage = "MODEL -o OUT [--ctx N] [--json]",
 *                               .about = "What x does.", NB_OPTS_TABLE(opts), NB_OPTS_ONE_POS("MODEL")};
 *     nb_args a = {0};
 *     int rc = nb_opts_parse(&spec, argc, argv, &a, &ctx);
 *     if (rc != NB_OPTS_RUN) return rc;   // --help printed (0) or usage error (1)
 *     if (json && n_ctx > 4096) return nb_opts_usage_error(&spec, &a, "--json needs --ctx <= 4096");
 * The table is usually an automatic array in the command's function, so
 * `dest` can point at its locals; positionals are in a.pos[0..a.n_pos).
 *
 * Patterns (see cli/cmd_merge.c, cmd_ppl.c, cmd_prune.c, tests/cli/test_opts.c):
 *   repeatable list   {.name = "rule", .type = NB_OPT_CALL, .fn = add_rule, .dest = &rules, .meta = "PAT=TYPE"}
 *                     with nb_status add_rule(const nb_opt *o, const char *arg, nb_ctx *ctx)
 *                     { return nb_rules_add(o->dest, arg, ctx); }
 *   another spelling  {.name = "tensor-type", .alias_of = "rule", .help = "same as --rule"} (listed),
 *                     {.name = "kl-divergence-base", .alias_of = "kld"} (accepted, not listed)
 *   optional value    {.name = "report", .type = NB_OPT_STR, .arg = NB_ARG_OPTIONAL, .dest = &file,
 *                      .given = &report, .next_suffix = ".json", .flags = NB_OPT_OUTPUT}
 *   open range        {.name = "damp", .type = NB_OPT_DOUBLE, .dest = &damp, .lo = 0, .hi = 10,
 *                      .flags = NB_OPT_LO_OPEN | NB_OPT_HI_OPEN}          -> (0, 10)
 *   size              {.name = "budget", .type = NB_OPT_SIZE, .dest = &bytes} -> 24GiB, 5.5G, 500M
 *   names to values   {.name = "method", .type = NB_OPT_CHOICE, .dest = &method_int, .choices = METHODS}
 *   was it given      .given = &flag (any type); required: .flags = NB_OPT_REQUIRED
 *   computed epilogue .epilogue_fn = print_mix_list (after .epilogue)
 */
#ifndef NB_CLI_OPTS_H
#define NB_CLI_OPTS_H

#include "core/ctx.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* What an option's target is, and so how its argument is parsed. */
typedef enum nb_opt_type {
    NB_OPT_FLAG,   /* bool *dest = true; takes no argument */
    NB_OPT_STR,    /* const char **dest = the argument (borrowed from argv: lives as long as argv) */
    NB_OPT_INT,    /* int *dest */
    NB_OPT_U32,    /* uint32_t *dest */
    NB_OPT_U64,    /* uint64_t *dest */
    NB_OPT_DOUBLE, /* double *dest: a finite decimal number (strtod syntax, no suffix) */
    NB_OPT_SIZE,   /* uint64_t *dest: bytes, nb_cli_parse_size syntax (500M, 4G, 5.5GiB) */
    NB_OPT_CHOICE, /* int *dest = the value of the row of `choices` whose name is the argument */
    NB_OPT_CALL,   /* fn(opt, arg, ctx) for every occurrence; dest is the handler's to use */
} nb_opt_type;
/* The integer types (INT, U32, U64) take a decimal integer with an optional
 * K/M/G/T suffix (x 10^3 ...; `1.5K` = 1500), nb_cli_parse_u64's syntax;
 * negative values are refused. */

/* Whether an option takes an argument. NB_ARG_DEFAULT: none for NB_OPT_FLAG,
 * required for every other type (and NB_OPT_CALL: required). */
typedef enum nb_opt_arg {
    NB_ARG_DEFAULT = 0,
    NB_ARG_NONE,     /* NB_OPT_CALL only: the handler gets arg == NULL */
    NB_ARG_REQUIRED,
    NB_ARG_OPTIONAL, /* `--opt` (arg NULL) or `--opt=V` / `-xV`; NB_OPT_STR and NB_OPT_CALL only.
                      * A STR target is left untouched (and `given` set) when the value is absent */
} nb_opt_arg;

enum nb_opt_flags {
    NB_OPT_OUTPUT = 1u << 0,  /* the value is a path the command writes: `-` (stdout) is refused... */
    NB_OPT_STDOUT = 1u << 1,  /* ...unless this is set too: the command streams to stdout for `-` */
    NB_OPT_LO_OPEN = 1u << 2, /* numeric range excludes lo: (lo, hi] */
    NB_OPT_HI_OPEN = 1u << 3, /* numeric range excludes hi: [lo, hi) */
    NB_OPT_SUB = 1u << 4,     /* help: indent under the row above (a sub-option of it) */
    NB_OPT_REQUIRED = 1u << 5, /* the option must be given: "missing -o OUT" otherwise (checked after
                                * every argument, so --help still works) */
};

/* One choice of an NB_OPT_CHOICE row; a row with name NULL ends the list. */
typedef struct nb_opt_choice {
    const char *name;
    int value;
} nb_opt_choice;

typedef struct nb_opt nb_opt;

/* Handler of an NB_OPT_CALL row, called for every occurrence, in argv order.
 * arg: the argument (NULL for NB_ARG_NONE, or NB_ARG_OPTIONAL without one);
 * borrowed from argv. Returns NB_OK to go on; any other status stops the parse:
 * nb_opts_parse prints "nibble CMD: <nb_errmsg(ctx)>" and returns
 * nb_cli_exit_code(status) (NB_ERR_INVALID: 1, usage). */
typedef nb_status (*nb_opt_fn)(const nb_opt *opt, const char *arg, nb_ctx *ctx);

/* One row of a command's option table. Zero-initialised fields are "none";
 * write rows with designated initialisers. */
struct nb_opt {
    const char *name;   /* long name without "--" ("threads"); NULL: a short-only option, or,
                         * with short_name 0 too, a line of text printed in the help list */
    char short_name;    /* 'o' for -o; 0: none */
    nb_opt_type type;
    nb_opt_arg arg;
    void *dest;         /* the typed target (see nb_opt_type) */
    const char *meta;   /* value name in help: "N", "FILE", "PAT=TYPE" (default "VALUE") */
    const char *help;   /* help text, '\n' between lines; NULL: the row is not listed in --help */
    double lo, hi;      /* inclusive range of INT/U32/U64/DOUBLE/SIZE values (see NB_OPT_*_OPEN);
                         * lo == hi == 0: the target type's whole range (DOUBLE: any finite) */
    unsigned flags;     /* enum nb_opt_flags */
    bool *given;        /* when not NULL, set true each time the option appears */
    const nb_opt_choice *choices; /* NB_OPT_CHOICE: the accepted names */
    nb_opt_fn fn;       /* NB_OPT_CALL: the handler */
    const char *alias_of;    /* this row is another spelling of the row whose long name this is
                              * (e.g. {.name = "tensor-type", .alias_of = "rule"}): only name,
                              * short_name and help are read from an alias row; without help it is
                              * not listed. Aliases must follow their row in the table. */
    const char *next_suffix; /* NB_ARG_OPTIONAL: also take the next argv element as the value when
                              * it ends with this (".json": `--report out.json` = `--report=out.json`) */
};

/* The usage and help of one command, and its option table. */
typedef struct nb_cmd_spec {
    const char *name;     /* the command: "convert" (messages say "nibble convert: ...") */
    const char *usage;    /* synopsis after "usage: nibble NAME "; '\n' continues on an indented line */
    const char *about;    /* description paragraph(s) printed after the usage, or NULL */
    const nb_opt *opts;   /* the command's table (NB_OPTS_TABLE fills opts and n_opts) */
    size_t n_opts;
    const char *epilogue; /* free text printed after the options (lists of types, exit codes), or NULL */
    void (*epilogue_fn)(FILE *f); /* printed after `epilogue`, for lists computed at run time, or NULL */
    int max_pos;          /* positional arguments accepted (more: "unexpected argument"); <= NB_OPTS_MAX_POS */
    int min_pos;          /* positional arguments required (fewer: "missing POS_NAME") */
    const char *pos_name; /* what the positionals are, for that message: "MODEL", "SRC" */
} nb_cmd_spec;

#define NB_OPTS_TABLE(arr) .opts = (arr), .n_opts = sizeof(arr) / sizeof((arr)[0])
/* Exactly one positional argument, called `name` in messages ("MODEL"). */
#define NB_OPTS_ONE_POS(name) .min_pos = 1, .max_pos = 1, .pos_name = (name)
#define NB_OPTS_MAX_POS 8
#define NB_OPTS_MAX_ROWS 256 /* rows in one command's table */

/* What nb_opts_parse leaves besides the targets. Zero-initialise; out and err
 * may be set before the call (NULL: stdout and stderr). */
typedef struct nb_args {
    const char *pos[NB_OPTS_MAX_POS]; /* positional arguments in order (borrowed from argv) */
    int n_pos;
    FILE *out; /* --help goes here */
    FILE *err; /* error messages go here */
} nb_args;

/* Returned by nb_opts_parse when the command should run. */
#define NB_OPTS_RUN (-1)

/* Parse argv[1..argc) (argv[0] is the command name) against spec->opts and
 * the common options; fills the targets, args->pos/n_pos and ctx (threads,
 * quiet, log level). Returns NB_OPTS_RUN to go on, or the exit code the
 * command must return: NB_EXIT_OK after printing --help to args->out,
 * NB_EXIT_USAGE after a one-line usage error on args->err (including a
 * missing NB_OPT_REQUIRED option or fewer than spec->min_pos positionals,
 * checked in that order: positionals, then rows in table order), or a
 * handler's nb_cli_exit_code. A positional `-` (stdin) is a usage error: no
 * command reads stdin. Targets of options seen before an error keep their
 * values. A table may hold at most NB_OPTS_MAX_ROWS rows. */
int nb_opts_parse(const nb_cmd_spec *spec, int argc, char **argv, nb_args *args, nb_ctx *ctx);

/* Print the help: "usage: nibble NAME USAGE", the about text, every listed
 * option of the table with its help then the common options, then the
 * epilogue. */
void nb_opts_help(const nb_cmd_spec *spec, FILE *f);

/* For checks after parsing (a missing positional or required option, options
 * that cannot be combined): print "nibble NAME: <message> (see nibble NAME --help)"
 * as one line on args->err (NULL args: stderr) and return NB_EXIT_USAGE. */
int nb_opts_usage_error(const nb_cmd_spec *spec, const nb_args *args, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parse a non-negative integer with an optional K/M/G/T (x 10^3, 10^6, ...)
 * suffix, optionally followed by B; a fraction is allowed with a suffix
 * (1.5G). false if malformed or out of range. */
bool nb_cli_parse_u64(const char *s, unsigned long long *out);

/* Parse a size in bytes: a number (fraction allowed: 5.5GiB) with an optional
 * unit: K, M, G, T (decimal: x 10^3 ...; also KB, MB, ... and lower-case k)
 * or KiB, MiB, GiB, TiB (binary: x 2^10 ...; also Ki, Mi, ...). A fraction is
 * rounded down to whole bytes. false if malformed, negative or >= 2^64. */
bool nb_cli_parse_size(const char *s, uint64_t *out);

#endif
