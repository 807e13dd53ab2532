/* cli: the option parser (cli/opts.h): every syntax form, every usage error,
 * typed targets with ranges, aliases, repeatable options, help from the table. */
#include "cli/cli.h"
#include "cli/opts.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The targets of the test command's table. */
static struct {
    const char *out, *report, *stream;
    bool json, report_given, ctx_given;
    int n, kind;
    uint32_t u32;
    uint64_t count, size;
    double damp, ratio;
    const char *rules[8];
    int n_rules;
} T;

static nb_status add_rule(const nb_opt *o, const char *arg, nb_ctx *ctx) {
    (void)o;
    if (!strchr(arg, '=')) return nb_err(ctx, NB_ERR_INVALID, "--rule '%s': expected PATTERN=TYPE", arg);
    if (T.n_rules == 8) return nb_err(ctx, NB_ERR_NOMEM, "too many rules");
    T.rules[T.n_rules++] = arg;
    return NB_OK;
}

static const nb_opt_choice KINDS[] = {{"auto", 0}, {"text", 1}, {"ids", 2}, {NULL, 0}};

static void epilogue(FILE *f) { fputs("computed list: a, b\n", f); }

static const nb_opt OPTS[] = {
    {.name = "output", .short_name = 'o', .type = NB_OPT_STR, .dest = &T.out, .meta = "OUT", .flags = NB_OPT_OUTPUT,
     .help = "output file"},
    {.name = "stream", .type = NB_OPT_STR, .dest = &T.stream, .meta = "F", .flags = NB_OPT_OUTPUT | NB_OPT_STDOUT,
     .help = "may be - (stdout)"},
    {.name = "json", .type = NB_OPT_FLAG, .dest = &T.json, .help = "print JSON"},
    {.name = "report", .short_name = 'r', .type = NB_OPT_STR, .arg = NB_ARG_OPTIONAL, .dest = &T.report,
     .meta = "FILE", .given = &T.report_given, .next_suffix = ".json", .help = "report, also as JSON to FILE"},
    {.name = "ctx", .short_name = 'c', .type = NB_OPT_INT, .dest = &T.n, .meta = "N", .lo = 2, .hi = 1 << 20,
     .given = &T.ctx_given, .help = "tokens per chunk\nsecond line of help"},
    {.name = "n-ctx", .alias_of = "ctx"}, /* hidden alias */
    {.name = "u", .type = NB_OPT_U32, .dest = &T.u32, .meta = "N", .help = "a uint32"},
    {.name = "count", .type = NB_OPT_U64, .dest = &T.count, .meta = "N", .flags = NB_OPT_SUB, .help = "a uint64"},
    {.name = "size", .type = NB_OPT_SIZE, .dest = &T.size, .meta = "BYTES", .help = "a size"},
    {.name = "damp", .type = NB_OPT_DOUBLE, .dest = &T.damp, .meta = "X", .lo = 0, .hi = 10,
     .flags = NB_OPT_LO_OPEN | NB_OPT_HI_OPEN, .help = "in (0, 10)"},
    {.name = "ratio", .type = NB_OPT_DOUBLE, .dest = &T.ratio, .meta = "R", .lo = 0, .hi = 1, .flags = NB_OPT_LO_OPEN,
     .help = "in (0, 1]"},
    {.name = "kind", .type = NB_OPT_CHOICE, .dest = &T.kind, .choices = KINDS, .meta = "K", .help = "auto|text|ids"},
    {.name = "rule", .type = NB_OPT_CALL, .fn = add_rule, .meta = "PAT=TYPE", .help = "repeatable"},
    {.name = "tensor-type", .alias_of = "rule", .help = "same as --rule (llama-quantize's name)"},
    {.help = "a line of text in the list"},
};

static const nb_cmd_spec SPEC = {
    .name = "demo",
    .usage = "MODEL [MODEL2] -o OUT [options]\n[--more]",
    .about = "Does demo things.",
    NB_OPTS_TABLE(OPTS),
    .epilogue = "types: x, y",
    .epilogue_fn = epilogue,
    .max_pos = 2,
};

/* A command with required arguments. */
static const char *R_out, *R_calib;
static const nb_opt ROPTS[] = {
    {.name = "calib", .type = NB_OPT_STR, .dest = &R_calib, .meta = "FILE", .flags = NB_OPT_REQUIRED, .help = "text"},
    {.name = "output", .short_name = 'o', .type = NB_OPT_STR, .dest = &R_out, .meta = "OUT",
     .flags = NB_OPT_OUTPUT | NB_OPT_REQUIRED, .help = "output"},
};
static const nb_cmd_spec SPEC_REQ = {
    .name = "demo", .usage = "MODEL --calib FILE -o OUT", NB_OPTS_TABLE(ROPTS), .min_pos = 1, .max_pos = 1,
    .pos_name = "MODEL"};

static const nb_cmd_spec *g_spec = &SPEC;
static char g_out[8192], g_err[8192];

/* Parse the NULL-terminated words (argv[0] = "demo" is added) into fresh
 * targets and ctx; stdout/stderr of the parser land in g_out/g_err. */
static int parse_words(nb_ctx *ctx, nb_args *a, const char *const *words) {
    char *argv[64];
    int argc = 0;
    argv[argc++] = (char *)"demo";
    for (; *words; words++) argv[argc++] = (char *)*words;
    memset(&T, 0, sizeof T);
    memset(a, 0, sizeof *a);
    nbt_ctx(ctx);
    ctx->n_threads = 7;
    FILE *o = fmemopen(g_out, sizeof g_out, "w"), *e = fmemopen(g_err, sizeof g_err, "w");
    ck_assert_ptr_nonnull(o);
    ck_assert_ptr_nonnull(e);
    a->out = o;
    a->err = e;
    int rc = nb_opts_parse(g_spec, argc, argv, a, ctx);
    fclose(o);
    fclose(e);
    a->out = a->err = NULL;
    return rc;
}
#define PARSE(ctx, a, ...) parse_words((ctx), (a), (const char *const[]){__VA_ARGS__, NULL})

/* A usage error: exit 1 and exactly one line on stderr containing `what`. */
static void expect_usage(int rc, const char *what) {
    ck_assert_int_eq(rc, NB_EXIT_USAGE);
    ck_assert_msg(strstr(g_err, what) != NULL, "expected '%s' in '%s'", what, g_err);
    ck_assert_msg(!strncmp(g_err, "nibble demo: ", 13), "no command prefix: '%s'", g_err);
    char *nl = strchr(g_err, '\n');
    ck_assert_msg(nl && nl[1] == 0, "not one line: '%s'", g_err);
}

START_TEST(long_and_short_forms) {
    nb_ctx ctx;
    nb_args a;
    const char *forms[][3] = {{"--output", "x.gguf", NULL}, {"--output=x.gguf", NULL, NULL},
                              {"-o", "x.gguf", NULL},       {"-ox.gguf", NULL, NULL}};
    for (size_t k = 0; k < 4; k++) {
        const char *w[5] = {"m.gguf", forms[k][0], forms[k][1], forms[k][1] ? "--json" : NULL, NULL};
        ck_assert_int_eq(parse_words(&ctx, &a, w), NB_OPTS_RUN);
        ck_assert_str_eq(T.out, "x.gguf");
        ck_assert_int_eq(a.n_pos, 1);
        ck_assert_str_eq(a.pos[0], "m.gguf");
        nb_ctx_free(&ctx);
    }
    /* the common --threads in every form */
    const char *tf[][2] = {{"-t", "2"}, {"-t2", NULL}, {"--threads", "2"}, {"--threads=2", NULL}};
    for (size_t k = 0; k < 4; k++) {
        const char *w[3] = {tf[k][0], tf[k][1], NULL};
        ck_assert_int_eq(parse_words(&ctx, &a, w), NB_OPTS_RUN);
        ck_assert_int_eq(ctx.n_threads, 2);
        nb_ctx_free(&ctx);
    }
    /* positionals anywhere; the last value of a repeated option wins; a value may start with '-' */
    ck_assert_int_eq(PARSE(&ctx, &a, "-o", "a", "m1", "--ctx", "64", "m2", "-o", "-b-"), NB_OPTS_RUN);
    ck_assert_int_eq(a.n_pos, 2);
    ck_assert_str_eq(a.pos[1], "m2");
    ck_assert_str_eq(T.out, "-b-");
    ck_assert_int_eq(T.n, 64);
    ck_assert(T.ctx_given);
    ck_assert(!T.report_given);
    /* short option values through the alias and the short name */
    ck_assert_int_eq(PARSE(&ctx, &a, "--n-ctx", "32"), NB_OPTS_RUN);
    ck_assert_int_eq(T.n, 32);
    ck_assert(T.ctx_given);
    ck_assert_int_eq(PARSE(&ctx, &a, "-c16"), NB_OPTS_RUN);
    ck_assert_int_eq(T.n, 16);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(bundles_and_double_dash) {
    nb_ctx ctx;
    nb_args a;
    ck_assert_int_eq(PARSE(&ctx, &a, "-qv"), NB_OPTS_RUN);
    ck_assert(ctx.quiet);
    ck_assert_int_eq(ctx.log_level, NB_LOG_DEBUG);
    ck_assert_int_eq(PARSE(&ctx, &a, "-qt3", "-oout"), NB_OPTS_RUN);
    ck_assert(ctx.quiet);
    ck_assert_int_eq(ctx.n_threads, 3);
    ck_assert_str_eq(T.out, "out");
    /* after --, everything is positional */
    ck_assert_int_eq(PARSE(&ctx, &a, "--json", "--", "--weird", "-o"), NB_OPTS_RUN);
    ck_assert(T.json);
    ck_assert_ptr_null(T.out);
    ck_assert_int_eq(a.n_pos, 2);
    ck_assert_str_eq(a.pos[0], "--weird");
    ck_assert_str_eq(a.pos[1], "-o");
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(optional_argument) {
    nb_ctx ctx;
    nb_args a;
    ck_assert_int_eq(PARSE(&ctx, &a, "--report", "m.gguf"), NB_OPTS_RUN);
    ck_assert(T.report_given);
    ck_assert_ptr_null(T.report);
    ck_assert_int_eq(a.n_pos, 1); /* not taken: does not end in .json */
    ck_assert_int_eq(PARSE(&ctx, &a, "--report=r.txt"), NB_OPTS_RUN);
    ck_assert_str_eq(T.report, "r.txt");
    ck_assert_int_eq(PARSE(&ctx, &a, "--report", "r.json", "m"), NB_OPTS_RUN);
    ck_assert_str_eq(T.report, "r.json");
    ck_assert_str_eq(a.pos[0], "m");
    ck_assert_int_eq(PARSE(&ctx, &a, "-rr2.txt"), NB_OPTS_RUN);
    ck_assert_str_eq(T.report, "r2.txt");
    ck_assert_int_eq(PARSE(&ctx, &a, "-r"), NB_OPTS_RUN);
    ck_assert(T.report_given);
    ck_assert_ptr_null(T.report);
    expect_usage(PARSE(&ctx, &a, "--report="), "needs a value after '='");
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(usage_errors) {
    nb_ctx ctx;
    nb_args a;
    expect_usage(PARSE(&ctx, &a, "--frob"), "unknown option '--frob' (see nibble demo --help)");
    expect_usage(PARSE(&ctx, &a, "--frob=1"), "unknown option '--frob'");
    expect_usage(PARSE(&ctx, &a, "-z"), "unknown option '-z'");
    expect_usage(PARSE(&ctx, &a, "-qz"), "unknown option '-z'");
    expect_usage(PARSE(&ctx, &a, "--ctx"), "--ctx needs a value");
    expect_usage(PARSE(&ctx, &a, "m", "-o"), "-o needs a value");
    expect_usage(PARSE(&ctx, &a, "-t"), "-t needs a value");
    expect_usage(PARSE(&ctx, &a, "--json=1"), "--json takes no value");
    expect_usage(PARSE(&ctx, &a, "a", "b", "c"), "unexpected argument 'c'");
    expect_usage(PARSE(&ctx, &a, "-"), "standard input");
    expect_usage(PARSE(&ctx, &a, "--", "-"), "standard input");
    /* -o - is refused, unless the option streams to stdout */
    expect_usage(PARSE(&ctx, &a, "-o", "-"), "-o -: this command cannot write to stdout");
    expect_usage(PARSE(&ctx, &a, "--output=-"), "--output -: this command cannot write to stdout");
    expect_usage(PARSE(&ctx, &a, "-o-"), "cannot write to stdout");
    ck_assert_int_eq(PARSE(&ctx, &a, "--stream", "-"), NB_OPTS_RUN);
    ck_assert_str_eq(T.stream, "-");
    /* an error before --help wins; --help before an error prints help */
    expect_usage(PARSE(&ctx, &a, "--frob", "--help"), "unknown option");
    ck_assert_int_eq(PARSE(&ctx, &a, "--help", "--frob"), NB_EXIT_OK);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(required_arguments) {
    nb_ctx ctx;
    nb_args a;
    g_spec = &SPEC_REQ;
    expect_usage(PARSE(&ctx, &a, "--calib", "t", "-o", "x"), "missing MODEL (see nibble demo --help)");
    expect_usage(PARSE(&ctx, &a, "m", "-o", "x"), "missing --calib FILE");
    expect_usage(PARSE(&ctx, &a, "--calib=t", "m"), "missing -o OUT");
    ck_assert_int_eq(PARSE(&ctx, &a, "-h"), NB_EXIT_OK); /* help needs nothing */
    ck_assert_int_eq(PARSE(&ctx, &a, "m", "--calib", "t", "-ox"), NB_OPTS_RUN);
    g_spec = &SPEC;
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(typed_values_and_ranges) {
    nb_ctx ctx;
    nb_args a;
    ck_assert_int_eq(PARSE(&ctx, &a, "--ctx", "1K", "--u", "4000000000", "--count", "18446744073709551615"),
                     NB_OPTS_RUN);
    ck_assert_int_eq(T.n, 1000);
    ck_assert_uint_eq(T.u32, 4000000000u);
    ck_assert(T.count == UINT64_MAX);
    expect_usage(PARSE(&ctx, &a, "--ctx", "1"), "--ctx needs an integer between 2 and 1048576 (got '1')");
    expect_usage(PARSE(&ctx, &a, "-c", "2M"), "-c needs an integer between 2 and 1048576");
    expect_usage(PARSE(&ctx, &a, "--ctx", "-5"), "between 2 and 1048576 (got '-5')");
    expect_usage(PARSE(&ctx, &a, "--ctx", "12x"), "(got '12x')");
    expect_usage(PARSE(&ctx, &a, "--ctx", ""), "(got '')");
    expect_usage(PARSE(&ctx, &a, "--u", "4294967296"), "--u needs a non-negative integer");
    expect_usage(PARSE(&ctx, &a, "--count", "18446744073709551616"), "--count needs a non-negative integer");
    expect_usage(PARSE(&ctx, &a, "-t", "0"), "-t needs an integer between 1 and 1024 (got '0')");
    expect_usage(PARSE(&ctx, &a, "--threads=2000"), "--threads needs an integer between 1 and 1024");
    /* doubles: open and closed bounds */
    ck_assert_int_eq(PARSE(&ctx, &a, "--damp", "0.01", "--ratio", "1"), NB_OPTS_RUN);
    ck_assert(T.damp == 0.01 && T.ratio == 1);
    expect_usage(PARSE(&ctx, &a, "--damp", "0"), "--damp needs a number in (0, 10) (got '0')");
    expect_usage(PARSE(&ctx, &a, "--damp=10"), "(0, 10)");
    expect_usage(PARSE(&ctx, &a, "--damp", "nan"), "(0, 10)");
    expect_usage(PARSE(&ctx, &a, "--damp", "1x"), "(got '1x')");
    expect_usage(PARSE(&ctx, &a, "--ratio", "0"), "--ratio needs a number in (0, 1]");
    /* sizes */
    ck_assert_int_eq(PARSE(&ctx, &a, "--size", "5.5GiB"), NB_OPTS_RUN);
    ck_assert(T.size == 5905580032ull);
    ck_assert_int_eq(PARSE(&ctx, &a, "--size=24GiB"), NB_OPTS_RUN);
    ck_assert(T.size == 24ull << 30);
    ck_assert_int_eq(PARSE(&ctx, &a, "--size", "4G"), NB_OPTS_RUN);
    ck_assert(T.size == 4000000000ull);
    expect_usage(PARSE(&ctx, &a, "--size", "4X"), "--size needs a size (500M, 4G, 5.5GiB) (got '4X')");
    /* choices */
    ck_assert_int_eq(PARSE(&ctx, &a, "--kind", "ids"), NB_OPTS_RUN);
    ck_assert_int_eq(T.kind, 2);
    expect_usage(PARSE(&ctx, &a, "--kind", "words"), "--kind must be one of auto, text, ids (got 'words')");
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(repeatable_handler_and_alias) {
    nb_ctx ctx;
    nb_args a;
    ck_assert_int_eq(PARSE(&ctx, &a, "--rule", "a=q8_0", "--rule=b=q4_k", "--tensor-type", "c=f16"), NB_OPTS_RUN);
    ck_assert_int_eq(T.n_rules, 3);
    ck_assert_str_eq(T.rules[0], "a=q8_0");
    ck_assert_str_eq(T.rules[1], "b=q4_k");
    ck_assert_str_eq(T.rules[2], "c=f16");
    /* a handler's failure: its message, its exit code */
    expect_usage(PARSE(&ctx, &a, "--rule", "nonsense"), "--rule 'nonsense': expected PATTERN=TYPE");
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(help_from_the_table) {
    nb_ctx ctx;
    nb_args a;
    ck_assert_int_eq(PARSE(&ctx, &a, "m", "-h"), NB_EXIT_OK);
    ck_assert_str_eq(g_err, "");
    const char *want[] = {"usage: nibble demo MODEL [MODEL2] -o OUT [options]\n                   [--more]\n",
                          "\nDoes demo things.\n\n",
                          "  -o, --output OUT",
                          "  -r, --report[=FILE]",
                          "  -c, --ctx N",
                          "tokens per chunk\n                          second line of help\n",
                          "    --count N", /* a sub-option is indented */
                          "  --tensor-type PAT=TYPE",
                          "same as --rule",
                          "a line of text in the list\n",
                          "  -t, --threads N",
                          "  -q, --quiet",
                          "  -h, --help",
                          "\ntypes: x, y\ncomputed list: a, b\n"};
    const char *at = g_out;
    for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
        const char *p = strstr(at, want[k]);
        ck_assert_msg(p != NULL, "help lacks (in order) '%s':\n%s", want[k], g_out);
        at = p;
    }
    ck_assert_ptr_null(strstr(g_out, "n-ctx")); /* an alias without help is not listed */
    ck_assert_int_eq(PARSE(&ctx, &a, "--help"), NB_EXIT_OK);
    ck_assert_int_eq(PARSE(&ctx, &a, "-qh"), NB_EXIT_OK);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(parse_numbers) {
    unsigned long long v;
    uint64_t s;
    ck_assert(nb_cli_parse_u64("123", &v) && v == 123);
    ck_assert(nb_cli_parse_u64("4K", &v) && v == 4000);
    ck_assert(nb_cli_parse_u64("1.5G", &v) && v == 1500000000ull);
    ck_assert(nb_cli_parse_u64("2MB", &v) && v == 2000000);
    ck_assert(!nb_cli_parse_u64("1.5", &v));
    ck_assert(!nb_cli_parse_u64("-1", &v));
    ck_assert(!nb_cli_parse_u64(" 1", &v));
    ck_assert(!nb_cli_parse_u64("1KiB", &v)); /* binary units are sizes only */
    ck_assert(!nb_cli_parse_u64("", &v));
    ck_assert(!nb_cli_parse_u64("99999999999T", &v)); /* overflows */
    ck_assert(nb_cli_parse_size("0", &s) && s == 0);
    ck_assert(nb_cli_parse_size("512B", &s) && s == 512);
    ck_assert(nb_cli_parse_size("1k", &s) && s == 1000);
    ck_assert(nb_cli_parse_size("1KiB", &s) && s == 1024);
    ck_assert(nb_cli_parse_size("1Ki", &s) && s == 1024);
    ck_assert(nb_cli_parse_size("3MiB", &s) && s == 3u << 20);
    ck_assert(nb_cli_parse_size("5.5GiB", &s) && s == 5905580032ull);
    ck_assert(nb_cli_parse_size("24GiB", &s) && s == 25769803776ull);
    ck_assert(nb_cli_parse_size("2TiB", &s) && s == 2ull << 40);
    ck_assert(nb_cli_parse_size("1.5GB", &s) && s == 1500000000ull);
    ck_assert(!nb_cli_parse_size("1iB", &s));
    ck_assert(!nb_cli_parse_size("1GiBs", &s));
    ck_assert(!nb_cli_parse_size("1.5", &s));
    ck_assert(!nb_cli_parse_size("1P", &s));
    ck_assert(!nb_cli_parse_size("20000000TiB", &s));
    ck_assert(!nb_cli_parse_size("nan", &s));
}
END_TEST

int main(void) {
    Suite *s = suite_create("opts");
    TCase *tc = tcase_create("opts");
    tcase_add_test(tc, long_and_short_forms);
    tcase_add_test(tc, bundles_and_double_dash);
    tcase_add_test(tc, optional_argument);
    tcase_add_test(tc, usage_errors);
    tcase_add_test(tc, required_arguments);
    tcase_add_test(tc, typed_values_and_ranges);
    tcase_add_test(tc, repeatable_handler_and_alias);
    tcase_add_test(tc, help_from_the_table);
    tcase_add_test(tc, parse_numbers);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
