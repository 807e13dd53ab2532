/* cli/opts.c — the option parser and help printer of cli/opts.h. */
#include "cli/opts.h"
#include "core/str.h"

#include "cli/cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ numbers */

/* Number with an optional unit: K/M/G/T decimal (+ optional B), and with
 * `binary` also Ki/Mi/Gi/Ti (+ optional B) and a bare B. */

bool nb_cli_parse_u64(const char *s, unsigned long long *out) { return nb_parse_scaled(s, false, out); }

bool nb_cli_parse_size(const char *s, uint64_t *out) {
    unsigned long long v;
    if (!nb_parse_scaled(s, true, &v)) return false;
    *out = v;
    return true;
}

/* ------------------------------------------------------------ the common options */

enum { COMMON_THREADS, COMMON_QUIET, COMMON_VERBOSE, COMMON_HELP, N_COMMON };

static nb_status set_verbose(const nb_opt *o, const char *arg, nb_ctx *ctx) {
    (void)o;
    (void)arg;
    ctx->log_level = NB_LOG_DEBUG;
    return NB_OK;
}

/* The options every command accepts, pointing into ctx (NULL ctx: for help). */
static void common_table(nb_opt t[N_COMMON], nb_ctx *ctx, bool *help) {
    const nb_opt rows[N_COMMON] = {
        [COMMON_THREADS] = {.name = "threads", .short_name = 't', .type = NB_OPT_INT,
                            .dest = ctx ? &ctx->n_threads : NULL, .meta = "N", .lo = 1, .hi = 1024,
                            .help = "worker threads (default: all cores)"},
        [COMMON_QUIET] = {.name = "quiet", .short_name = 'q', .type = NB_OPT_FLAG, .dest = ctx ? &ctx->quiet : NULL,
                          .help = "no progress output: warnings and errors only"},
        [COMMON_VERBOSE] = {.name = "verbose", .short_name = 'v', .type = NB_OPT_CALL, .arg = NB_ARG_NONE,
                            .fn = set_verbose, .help = "debug messages"},
        [COMMON_HELP] = {.name = "help", .short_name = 'h', .type = NB_OPT_FLAG, .dest = help,
                         .help = "print this help and exit"},
    };
    memcpy(t, rows, sizeof rows);
}

/* ------------------------------------------------------------ parsing */

typedef struct {
    const nb_cmd_spec *spec;
    nb_opt common[N_COMMON];
    FILE *err;
    nb_ctx *ctx;
    unsigned char seen[NB_OPTS_MAX_ROWS]; /* per row of spec->opts: given at least once */
} parser;

static void perr(const parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void perr(const parser *p, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(p->err, "nibble%s%s: ", p->spec ? " " : "", p->spec ? p->spec->name : "");
    vfprintf(p->err, fmt, ap);
    fputc('\n', p->err);
    va_end(ap);
}

static bool is_text_row(const nb_opt *o) { return !o->name && !o->short_name; }

/* The row an alias stands for (o itself when not an alias); NULL if the
 * table names a row that does not exist (a programming error, reported). */
static const nb_opt *resolve(const nb_opt *tab, size_t n, const nb_opt *o) {
    if (!o->alias_of) return o;
    for (size_t k = 0; k < n; k++)
        if (tab[k].name && !tab[k].alias_of && !strcmp(tab[k].name, o->alias_of)) return &tab[k];
    return NULL;
}

/* Find a row by long name (len bytes of name) or by short name, in the
 * command's table first, then the common one; resolved through aliases. */
static const nb_opt *lookup(const parser *p, const char *name, size_t len, char short_name) {
    const nb_opt *tabs[2] = {p->spec ? p->spec->opts : NULL, p->common};
    size_t ns[2] = {p->spec ? p->spec->n_opts : 0, N_COMMON};
    for (int t = 0; t < 2; t++)
        for (size_t k = 0; k < ns[t]; k++) {
            const nb_opt *o = &tabs[t][k];
            bool hit = name ? o->name && strlen(o->name) == len && !strncmp(o->name, name, len)
                            : o->short_name == short_name;
            if (hit) return resolve(tabs[t], ns[t], o);
        }
    return NULL;
}

static nb_opt_arg arg_kind(const nb_opt *o) {
    if (o->arg != NB_ARG_DEFAULT) return o->arg;
    return o->type == NB_OPT_FLAG ? NB_ARG_NONE : NB_ARG_REQUIRED;
}

/* Inclusive integer bounds of an integer or size row. */
static void int_bounds(const nb_opt *o, unsigned long long *lo, unsigned long long *hi) {
    unsigned long long tmax = o->type == NB_OPT_INT ? INT_MAX : o->type == NB_OPT_U32 ? UINT32_MAX : ULLONG_MAX;
    if (o->lo == 0 && o->hi == 0) { *lo = 0; *hi = tmax; return; }
    double l = o->lo < 0 ? 0 : o->lo, h = o->hi;
    *lo = (unsigned long long)ceil(l) + ((o->flags & NB_OPT_LO_OPEN) && ceil(l) == l);
    *hi = h >= (double)tmax ? tmax : (unsigned long long)floor(h) - ((o->flags & NB_OPT_HI_OPEN) && floor(h) == h);
}

static bool in_double_range(const nb_opt *o, double x) {
    if (!isfinite(x)) return false;
    if (o->lo == 0 && o->hi == 0) return true;
    bool lo_ok = (o->flags & NB_OPT_LO_OPEN) ? x > o->lo : x >= o->lo;
    bool hi_ok = (o->flags & NB_OPT_HI_OPEN) ? x < o->hi : x <= o->hi;
    return lo_ok && hi_ok;
}

/* Apply one occurrence: `spelled` is the option as typed ("--ctx", "-c"),
 * val its argument or NULL. Returns NB_OPTS_RUN or an exit code. */
static int apply(parser *p, const nb_opt *o, const char *spelled, int slen, const char *val) {
    if ((o->flags & NB_OPT_OUTPUT) && val && !strcmp(val, "-") && !(o->flags & NB_OPT_STDOUT)) {
        perr(p, "%.*s -: this command cannot write to stdout; give a file name", slen, spelled);
        return NB_EXIT_USAGE;
    }
    unsigned long long v = 0, lo, hi;
    switch (o->type) {
    case NB_OPT_FLAG: *(bool *)o->dest = true; break;
    case NB_OPT_STR: if (val) *(const char **)o->dest = val; break;
    case NB_OPT_INT: case NB_OPT_U32: case NB_OPT_U64: case NB_OPT_SIZE: {
        bool size = o->type == NB_OPT_SIZE;
        int_bounds(o, &lo, &hi);
        bool ok = size ? nb_parse_scaled(val, true, &v) : nb_cli_parse_u64(val, &v);
        if (!ok || v < lo || v > hi) {
            const char *what = size ? "a size (500M, 4G, 5.5GiB)" : "an integer";
            if (lo == 0 && hi == (o->type == NB_OPT_INT ? INT_MAX : o->type == NB_OPT_U32 ? UINT32_MAX : ULLONG_MAX))
                perr(p, "%.*s needs %s%s (got '%s')", slen, spelled, size ? "" : "a non-negative ",
                     size ? what : "integer", val);
            else
                perr(p, "%.*s needs %s between %llu and %llu (got '%s')", slen, spelled, what, lo, hi, val);
            return NB_EXIT_USAGE;
        }
        if (o->type == NB_OPT_INT) *(int *)o->dest = (int)v;
        else if (o->type == NB_OPT_U32) *(uint32_t *)o->dest = (uint32_t)v;
        else *(uint64_t *)o->dest = v;
        break;
    }
    case NB_OPT_DOUBLE: {
        char *end = NULL;
        errno = 0;
        double x = strtod(val, &end);
        if (end == val || *end || errno == ERANGE || !in_double_range(o, x)) {
            if (o->lo == 0 && o->hi == 0)
                perr(p, "%.*s needs a number (got '%s')", slen, spelled, val);
            else
                perr(p, "%.*s needs a number in %c%g, %g%c (got '%s')", slen, spelled,
                     (o->flags & NB_OPT_LO_OPEN) ? '(' : '[', o->lo, o->hi, (o->flags & NB_OPT_HI_OPEN) ? ')' : ']',
                     val);
            return NB_EXIT_USAGE;
        }
        *(double *)o->dest = x;
        break;
    }
    case NB_OPT_CHOICE: {
        const nb_opt_choice *c = o->choices;
        while (c && c->name && strcmp(c->name, val)) c++;
        if (!c || !c->name) {
            char list[256];
            size_t used = 0;
            list[0] = 0;
            for (c = o->choices; c && c->name && used < sizeof list; c++)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", c->name);
            perr(p, "%.*s must be one of %s (got '%s')", slen, spelled, list, val);
            return NB_EXIT_USAGE;
        }
        *(int *)o->dest = c->value;
        break;
    }
    case NB_OPT_CALL: {
        nb_status st = o->fn(o, val, p->ctx);
        if (st != NB_OK) {
            const char *m = nb_errmsg(p->ctx);
            if (m && *m) perr(p, "%s", m);
            else perr(p, "bad value '%s' for %.*s", val ? val : "", slen, spelled);
            return nb_cli_exit_code(st);
        }
        break;
    }
    }
    if (o->given) *o->given = true;
    if (p->spec && o >= p->spec->opts && o < p->spec->opts + p->spec->n_opts)
        p->seen[o - p->spec->opts] = 1;
    return NB_OPTS_RUN;
}

/* Parse the option at argv[*i] (which starts with '-' and is not "-" or "--");
 * advances *i past a separate argument. */
static int parse_option(parser *p, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (a[1] == '-') {
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int slen = (int)(len + 2);
        const nb_opt *o = lookup(p, name, len, 0);
        if (!o) {
            perr(p, "unknown option '%.*s'%s%s%s", slen, a, p->spec ? " (see nibble " : "",
                 p->spec ? p->spec->name : "", p->spec ? " --help)" : "");
            return NB_EXIT_USAGE;
        }
        nb_opt_arg k = arg_kind(o);
        const char *val = NULL;
        if (eq) {
            if (k == NB_ARG_NONE) { perr(p, "%.*s takes no value (got '%s')", slen, a, a); return NB_EXIT_USAGE; }
            val = eq + 1;
            if (!*val && k == NB_ARG_OPTIONAL) { perr(p, "%.*s= needs a value after '='", slen, a); return NB_EXIT_USAGE; }
        } else if (k == NB_ARG_REQUIRED) {
            if (*i + 1 >= argc) { perr(p, "%.*s needs a value", slen, a); return NB_EXIT_USAGE; }
            val = argv[++*i];
        } else if (k == NB_ARG_OPTIONAL && o->next_suffix && *i + 1 < argc && nb_str_ends_with(argv[*i + 1], o->next_suffix)) {
            val = argv[++*i];
        }
        return apply(p, o, a, slen, val);
    }
    for (const char *c = a + 1; *c; c++) { /* -x, -xVALUE, -abc */
        char sp[3] = {'-', *c, 0};
        const nb_opt *o = lookup(p, NULL, 0, *c);
        if (!o) {
            perr(p, "unknown option '%s'%s%s%s", sp, p->spec ? " (see nibble " : "", p->spec ? p->spec->name : "",
                 p->spec ? " --help)" : "");
            return NB_EXIT_USAGE;
        }
        nb_opt_arg k = arg_kind(o);
        const char *val = NULL;
        if (k == NB_ARG_NONE) {
            int rc = apply(p, o, sp, 2, NULL);
            if (rc != NB_OPTS_RUN) return rc;
            continue;
        }
        if (c[1]) val = c + 1;
        else if (k == NB_ARG_REQUIRED) {
            if (*i + 1 >= argc) { perr(p, "%s needs a value", sp); return NB_EXIT_USAGE; }
            val = argv[++*i];
        } else if (o->next_suffix && *i + 1 < argc && nb_str_ends_with(argv[*i + 1], o->next_suffix)) {
            val = argv[++*i];
        }
        return apply(p, o, sp, 2, val);
    }
    return NB_OPTS_RUN;
}

int nb_opts_parse(const nb_cmd_spec *spec, int argc, char **argv, nb_args *args, nb_ctx *ctx) {
    bool help = false;
    if (spec->n_opts > NB_OPTS_MAX_ROWS) {
        fprintf(args->err ? args->err : stderr, "nibble %s: option table too long\n", spec->name);
        return NB_EXIT_USAGE;
    }
    parser p = {.spec = spec, .err = args->err ? args->err : stderr, .ctx = ctx};
    common_table(p.common, ctx, &help);
    args->n_pos = 0;
    bool only_pos = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && a[0] == '-' && a[1]) {
            if (!strcmp(a, "--")) { only_pos = true; continue; }
            int rc = parse_option(&p, argc, argv, &i);
            if (rc != NB_OPTS_RUN) return rc;
            if (help) { nb_opts_help(spec, args->out ? args->out : stdout); return NB_EXIT_OK; }
            continue;
        }
        if (!strcmp(a, "-")) {
            perr(&p, "'-': no command reads standard input; give a file name");
            return NB_EXIT_USAGE;
        }
        if (args->n_pos >= spec->max_pos || args->n_pos >= NB_OPTS_MAX_POS) {
            perr(&p, "unexpected argument '%s' (see nibble %s --help)", a, spec->name);
            return NB_EXIT_USAGE;
        }
        args->pos[args->n_pos++] = a;
    }
    if (args->n_pos < spec->min_pos) {
        perr(&p, "missing %s (see nibble %s --help)", spec->pos_name ? spec->pos_name : "argument", spec->name);
        return NB_EXIT_USAGE;
    }
    for (size_t k = 0; k < spec->n_opts; k++) {
        const nb_opt *o = &spec->opts[k];
        if (!(o->flags & NB_OPT_REQUIRED) || p.seen[k]) continue;
        const char *meta = arg_kind(o) == NB_ARG_NONE ? "" : o->meta ? o->meta : "VALUE";
        if (o->short_name) perr(&p, "missing -%c%s%s (see nibble %s --help)", o->short_name, *meta ? " " : "", meta, spec->name);
        else perr(&p, "missing --%s%s%s (see nibble %s --help)", o->name, *meta ? " " : "", meta, spec->name);
        return NB_EXIT_USAGE;
    }
    return NB_OPTS_RUN;
}

int nb_opts_usage_error(const nb_cmd_spec *spec, const nb_args *args, const char *fmt, ...) {
    FILE *f = args && args->err ? args->err : stderr;
    va_list ap;
    va_start(ap, fmt);
    fprintf(f, "nibble %s: ", spec->name);
    vfprintf(f, fmt, ap);
    fprintf(f, " (see nibble %s --help)\n", spec->name);
    va_end(ap);
    return NB_EXIT_USAGE;
}

/* ------------------------------------------------------------ help */

enum { HELP_MAX_COL = 24 };

/* "-o, --output OUT", "--report[=FILE]", "-n N" for a listed row. */
static int display(const nb_opt *tab, size_t n, const nb_opt *o, char *buf, size_t cap) {
    const nb_opt *t = resolve(tab, n, o);
    if (!t) t = o;
    nb_opt_arg k = arg_kind(t);
    const char *meta = t->meta ? t->meta : "VALUE";
    int used = snprintf(buf, cap, "%s", (o->flags & NB_OPT_SUB) ? "  " : "");
    if (o->short_name) used += snprintf(buf + used, cap - (size_t)used, "-%c%s", o->short_name, o->name ? ", " : "");
    if (o->name) used += snprintf(buf + used, cap - (size_t)used, "--%s", o->name);
    if (k == NB_ARG_REQUIRED) used += snprintf(buf + used, cap - (size_t)used, " %s", meta);
    else if (k == NB_ARG_OPTIONAL) used += snprintf(buf + used, cap - (size_t)used, o->name ? "[=%s]" : "[%s]", meta);
    return used;
}

/* Print text with every line after the first indented by `indent` spaces. */
static void put_indented(FILE *f, const char *text, int indent) {
    for (const char *s = text; *s;) {
        const char *nl = strchr(s, '\n');
        size_t n = nl ? (size_t)(nl - s) : strlen(s);
        if (s != text) fprintf(f, "%*s", indent, "");
        fprintf(f, "%.*s\n", (int)n, s);
        s += n + (nl != NULL);
    }
}

static void help_rows(FILE *f, const nb_opt *tab, size_t n, int col) {
    char d[128];
    for (size_t k = 0; k < n; k++) {
        const nb_opt *o = &tab[k];
        if (is_text_row(o)) { if (o->help) put_indented(f, o->help, 0); continue; }
        if (!o->help) continue;
        int w = display(tab, n, o, d, sizeof d);
        if (w > col - 4) fprintf(f, "  %s\n%*s", d, col, "");
        else fprintf(f, "  %-*s", col - 2, d);
        put_indented(f, o->help, col);
    }
}

static int help_width(const nb_opt *tab, size_t n) {
    char d[128];
    int w = 0;
    for (size_t k = 0; k < n; k++) {
        if (is_text_row(&tab[k]) || !tab[k].help) continue;
        int x = display(tab, n, &tab[k], d, sizeof d);
        if (x > w && x <= HELP_MAX_COL) w = x;
    }
    return w;
}

void nb_opts_help(const nb_cmd_spec *spec, FILE *f) {
    nb_opt common[N_COMMON];
    common_table(common, NULL, NULL);
    int indent = (int)strlen("usage: nibble  ") + (int)strlen(spec->name);
    fprintf(f, "usage: nibble %s ", spec->name);
    put_indented(f, spec->usage ? spec->usage : "", indent);
    if (spec->about) { fputc('\n', f); put_indented(f, spec->about, 0); }
    int w = help_width(spec->opts, spec->n_opts), wc = help_width(common, N_COMMON);
    int col = (w > wc ? w : wc) + 4;
    fputc('\n', f);
    help_rows(f, spec->opts, spec->n_opts, col);
    help_rows(f, common, N_COMMON, col);
    if (spec->epilogue) { fputc('\n', f); put_indented(f, spec->epilogue, 0); }
    if (spec->epilogue_fn) spec->epilogue_fn(f);
}
