/* cli/cmd_build.c — `nibble build RECIPE [--source X] [--var N=V]... [--out DIR]
 * [--force] [--json]`: run a recipe (pipeline/build.h); `nibble verify
 * BUNDLE|DIR`: check a bundle against its manifest (pipeline/bundle.h). */
#include "cli/cli.h"
#include "cli/opts.h"
#include "core/progress.h"
#include "nb_build_info.h"
#include "pipeline/build.h"
#include "pipeline/bundle.h"

#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VARS 64

typedef struct vars {
    nb_recipe_var v[MAX_VARS];
    size_t n;
} vars;

/* A value naming an existing file or directory, made absolute: values given on
 * the command line are relative to the current directory, while paths written
 * in the recipe are relative to the recipe (pipeline/recipe.h). Other values
 * are kept as they are. The result is malloc'd (NULL: out of memory). */
static char *abs_if_exists(const char *v, nb_ctx *ctx) {
    char buf[PATH_MAX];
    return nb_strdup(ctx, realpath(v, buf) ? buf : v);
}

static nb_status add_var(const nb_opt *o, const char *arg, nb_ctx *ctx) {
    vars *vs = o->dest;
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) return nb_err(ctx, NB_ERR_INVALID, "--var needs NAME=VALUE (got '%s')", arg);
    if (vs->n == MAX_VARS) return nb_err(ctx, NB_ERR_INVALID, "--var: at most %d variables", MAX_VARS);
    /* the name is the argv text before '=': keep it in place by borrowing a copy */
    char *name = nb_strndup(ctx, arg, (size_t)(eq - arg));
    char *value = name ? abs_if_exists(eq + 1, ctx) : NULL;
    if (!value) {
        free(name);
        return NB_ERR_NOMEM;
    }
    vs->v[vs->n++] = (nb_recipe_var){name, value};
    return NB_OK;
}

static void on_event(void *user, const nb_build_event *ev) {
    FILE *f = user;
    if (ev->kind == NB_BUILD_STAGE_START)
        fprintf(f, "== [%d/%d] %s: %s\n", ev->index, ev->n_stages, ev->stage, ev->detail ? ev->detail : "");
    else if (ev->kind == NB_BUILD_STAGE_SKIP)
        fprintf(f, "== [%d/%d] %s: done in an earlier run (%s)\n", ev->index, ev->n_stages, ev->stage, ev->dir);
    else
        fprintf(f, "   %s finished in %.2f s\n", ev->stage, ev->seconds);
    fflush(f);
}

int nb_cmd_build(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    const char *source = NULL, *out = NULL, *work = NULL;
    bool force = false, json = false;
    vars vs = {0};
    const nb_opt opts[] = {
        {.name = "source", .type = NB_OPT_STR, .dest = &source, .meta = "MODEL",
         .help = "the source model: sets ${SOURCE} in the recipe"},
        {.name = "var", .type = NB_OPT_CALL, .fn = add_var, .dest = &vs, .meta = "NAME=VALUE",
         .help = "set ${NAME} in the recipe (repeatable)"},
        {.name = "out", .short_name = 'o', .type = NB_OPT_STR, .dest = &out, .meta = "DIR", .flags = NB_OPT_OUTPUT,
         .help = "output directory (default nibble-out/NAME); stage results live in DIR/.work"},
        {.name = "work", .type = NB_OPT_STR, .dest = &work, .meta = "DIR", .flags = NB_OPT_OUTPUT,
         .help = "stage cache (default DIR/.work); builds of several recipes may share one"},
        {.name = "force", .type = NB_OPT_FLAG, .dest = &force, .help = "redo every stage (default: resume)"},
        {.name = "json", .type = NB_OPT_FLAG, .dest = &json,
         .help = "JSON lines on stdout: progress events, then the result (docs/cli.md)"},
    };
    const nb_cmd_spec spec = {
        .name = "build",
        .usage = "RECIPE.json [--source MODEL] [--var NAME=VALUE]... [--out DIR] [--work DIR] [--force] [--json]\n"
                 "[--threads N] [--quiet]",
        .about = "Run a recipe (docs/recipes.md): merge adapters, prune experts, calibrate, plan and quantize,\n"
                 "validate against the source (PPL, KLD, same top token) and check the recipe's quality gate,\n"
                 "then write the model (and the Hugging Face directories of outputs.formats: hf, bnb-nf4,\n"
                 "gptq, awq), report.html, manifest.json and a .tar.zst bundle to the output directory.\n"
                 "Every stage's result is kept under DIR/.work, keyed by its inputs and options: a rerun\n"
                 "(after Ctrl-C, a crash or an edit of the recipe) redoes only what changed.",
        NB_OPTS_TABLE(opts),
        .epilogue = "exit codes: 0 ok, 1 usage, 2 bad input (recipe, model), 3 I/O, 4 the quality gate failed\n"
                    "(the outputs are written; the report says which limit was missed and by how much)",
        NB_OPTS_ONE_POS("RECIPE"),
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    /* -o DIR may hold the source (its files are named by the recipe), but may not be an input */
    if (rc == NB_OPTS_RUN) rc = nb_cli_check_paths("build", &ctx, NB_CLI_PATHS(args.pos[0], source), NB_CLI_PATHS(out));
    if (rc != NB_OPTS_RUN) goto done;
    FILE *info = json ? stderr : stdout;
    if (json) nb_cli_json_events(&ctx);
    char *src_abs = source ? abs_if_exists(source, &ctx) : NULL;
    if (source && !src_abs) {
        rc = nb_cli_fail("build", &ctx, NB_ERR_NOMEM);
        goto done;
    }
    nb_build_opts bo = {.recipe_path = args.pos[0], .vars = vs.v, .n_vars = vs.n, .source = src_abs, .out_dir = out,
                        .work_dir = work,
                        .force = force, .commit = NB_BUILD_COMMIT, .on_event = ctx.quiet ? NULL : on_event,
                        .user = info};
    nb_build_result r;
    nb_status st = nb_build_run(&bo, &r, &ctx);
    free(src_abs);
    if (st != NB_OK) {
        rc = nb_cli_fail("build", &ctx, st);
        nb_build_result_free(&r);
        goto done;
    }
    if (json) {
        char *js = nb_build_result_json(&r);
        if (js) puts(js);
        free(js);
    } else if (!ctx.quiet) {
        char b1[32], hex[65];
        for (int k = 0; k < 32; k++) snprintf(hex + 2 * k, 3, "%02x", r.model_sha256[k]);
        printf("%s: %s, %.3f bpw, sha256 %s\n", r.model_path ? r.model_path : "(the GGUF is not an output)",
               nb_fmt_bytes((double)r.model_bytes, b1, sizeof b1), r.bpw, hex);
        for (size_t i = 0; i < r.n_outputs; i++)
            printf("%s/: %s, %zu files, %s\n", r.outputs[i].dir, r.outputs[i].format, r.outputs[i].n_files,
                   nb_fmt_bytes((double)r.outputs[i].bytes, b1, sizeof b1));
        if (r.validated)
            printf("validation: PPL %.4f (reference %.4f, %+.3f%%), mean KLD %.6f +/- %.6f, same top token %.2f%%\n",
                   r.ppl, r.ppl_ref, r.ppl_ref > 0 ? 100.0 * (r.ppl / r.ppl_ref - 1) : 0, r.kld, r.kld_err,
                   100.0 * r.same_top);
        printf("report %s\n", r.report_path);
        if (r.bundle_path) printf("bundle %s\n", r.bundle_path);
    }
    rc = NB_EXIT_OK;
    if (r.gate_failed) {
        fprintf(stderr, "nibble build: %s: quality gate failed: %s\n", r.recipe.name, r.gate_msg);
        rc = NB_EXIT_GATE;
    }
    nb_build_result_free(&r);
done:
    for (size_t i = 0; i < vs.n; i++) {
        free((char *)vs.v[i].name);
        free((char *)vs.v[i].value);
    }
    nb_ctx_free(&ctx);
    return rc;
}

int nb_cmd_verify(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    bool json = false;
    const nb_opt opts[] = {
        {.name = "json", .type = NB_OPT_FLAG, .dest = &json, .help = "print the result as JSON on stdout"},
    };
    const nb_cmd_spec spec = {
        .name = "verify",
        .usage = "BUNDLE.tar.zst|DIR [--json]",
        .about = "Check a bundle (or an output directory of `nibble build`) against its manifest.json: every\n"
                 "file listed is present with its size and SHA-256, and nothing else is in the bundle.",
        NB_OPTS_TABLE(opts),
        .epilogue = "exit codes: 0 all files match, 1 usage, 2 a file is missing, extra, altered or the manifest\n"
                    "is malformed (the message names it), 3 I/O",
        NB_OPTS_ONE_POS("BUNDLE"),
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    if (rc == NB_OPTS_RUN) {
        nb_bundle_check c;
        nb_status st = nb_bundle_verify(args.pos[0], &c, &ctx);
        if (st != NB_OK) rc = nb_cli_fail("verify", &ctx, st);
        else {
            if (json) printf("{\"bundle\":\"%s\",\"ok\":true,\"files\":%zu,\"bytes\":%llu}\n", args.pos[0], c.n_files,
                             (unsigned long long)c.bytes);
            else printf("%s: ok, %zu files, %llu bytes match the manifest\n", args.pos[0], c.n_files,
                        (unsigned long long)c.bytes);
            rc = NB_EXIT_OK;
        }
    }
    nb_ctx_free(&ctx);
    return rc;
}
