/* cli/cmd_logits.c — `nibble logits`: run the engine on given token ids and
 * write every token's logits. A debugging and testing command: the interop
 * tests compare its output with an independent numpy forward pass. */
#include "cli/cli.h"
#include "core/afile.h"
#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 0: parsed, 1: not a list of ids, -1: out of memory. */
static int parse_ids(const char *s, int32_t **ids, int *n) {
    size_t cap = 16, k = 0;
    int32_t *v = nb_malloc_raw(cap * sizeof *v);
    if (!v) return -1;
    const char *p = s;
    while (*p) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 0 || x > INT32_MAX || (*end && *end != ',')) { free(v); return 1; }
        if (k == cap) {
            int32_t *w = nb_realloc(NULL, v, (cap *= 2) * sizeof *v, "token ids");
            if (!w) { free(v); return -1; }
            v = w;
        }
        v[k++] = (int32_t)x;
        p = *end ? end + 1 : end;
    }
    if (k == 0 || k > (1u << 22)) { free(v); return 1; }
    *ids = v;
    *n = (int)k;
    return 0;
}

/* The --tokens list (malloc'd; a repeated --tokens replaces it). */
typedef struct {
    int32_t *ids;
    int n;
} id_list;

static nb_status set_tokens(const nb_opt *opt, const char *arg, nb_ctx *ctx) {
    id_list *l = opt->dest;
    free(l->ids);
    l->ids = NULL;
    int r = parse_ids(arg, &l->ids, &l->n);
    if (r < 0) return nb_err(ctx, NB_ERR_NOMEM, "--tokens: out of memory");
    if (r > 0)
        return nb_err(ctx, NB_ERR_INVALID, "--tokens needs comma-separated non-negative ids");
    return NB_OK;
}

int nb_cmd_logits(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    const char *out = NULL;
    id_list tl = {NULL, 0};
    int n_ctx = 0, n_batch = 0, top = 5, kv_type = NB_CACHE_F32;
    bool precise = false;
    nb_engine *e = NULL;
    float *logits = NULL;
    const nb_opt opts[] = {
        {.name = "tokens", .type = NB_OPT_CALL, .fn = set_tokens, .dest = &tl, .meta = "LIST",
         .flags = NB_OPT_REQUIRED,
         .help = "comma-separated token ids (required)"},
        {.name = "ctx", .type = NB_OPT_INT, .dest = &n_ctx, .meta = "N", .lo = 1, .hi = 1 << 22,
         .help = "KV cache length (default: the number of tokens)"},
        {.name = "batch", .type = NB_OPT_INT, .dest = &n_batch, .meta = "N", .lo = 1, .hi = 1 << 22,
         .help = "tokens evaluated per forward pass (default: all)"},
        {.name = "output", .short_name = 'o', .type = NB_OPT_STR, .dest = &out, .meta = "OUT", .flags = NB_OPT_OUTPUT,
         .help = "output file (written atomically)"},
        {.name = "top", .type = NB_OPT_INT, .dest = &top, .meta = "K", .lo = 1, .hi = 1 << 22,
         .help = "tokens to print per position without -o (default 5)"},
        NB_CLI_OPT_CACHE_TYPE(&kv_type),
        {.name = "precise", .type = NB_OPT_FLAG, .dest = &precise,
         .help = "reference arithmetic: dequantized weights x F32 activations (docs/engine.md)"},
    };
    const nb_cmd_spec spec = {
        .name = "logits",
        .usage = "MODEL --tokens ID,ID,... [--ctx N] [--batch N] [-o OUT.f32] [--top K]\n[--kv-type T] [--precise]",
        .about = "Evaluate token ids with the engine (a debugging and testing command) and write the\n"
                 "logits of every token as raw little-endian float32, n_tokens x n_vocab, row-major.\n"
                 "Without -o, print the K (default 5) highest logits of each token instead.",
        NB_OPTS_TABLE(opts),
        NB_OPTS_ONE_POS("MODEL"),
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    const char *model = args.pos[0];
    if (rc == NB_OPTS_RUN) rc = nb_cli_check_paths("logits", &ctx, NB_CLI_PATHS(model), NB_CLI_PATHS(out));
    if (rc != NB_OPTS_RUN) goto done;
    int32_t *ids = tl.ids;
    int n_ids = tl.n;
    nb_engine_opts o = {n_ctx ? n_ctx : n_ids, n_batch, ctx.n_threads, precise, (nb_cache_type)kv_type};
    nb_status st = nb_engine_open(model, &o, &e, &ctx);
    if (st != NB_OK) { rc = nb_cli_fail("logits", &ctx, st); goto done; }
    const size_t nv = (size_t)nb_engine_n_vocab(e);
    logits = malloc((size_t)n_ids * nv * sizeof *logits);
    if (!logits) { st = nb_err(&ctx, NB_ERR_NOMEM, "out of memory for %d x %zu logits", n_ids, nv); rc = nb_cli_fail("logits", &ctx, st); goto done; }
    double t0 = nb_now();
    st = nb_engine_eval(e, ids, n_ids, 0, logits, &ctx);
    if (st != NB_OK) { rc = nb_cli_fail("logits", &ctx, st); goto done; }
    double dt = nb_now() - t0;
    if (!ctx.quiet)
        fprintf(stderr, "nibble logits: %d tokens in %.3f s (%.1f tokens/s, %d threads)\n", n_ids, dt,
                dt > 0 ? n_ids / dt : 0.0, ctx.n_threads);
    if (out) {
        nb_afile f;
        st = nb_afile_open(&f, out, false, &ctx);
        if (st == NB_OK) st = nb_afile_write(&f, logits, (size_t)n_ids * nv * sizeof *logits, &ctx);
        if (st == NB_OK) st = nb_afile_commit(&f, NULL, &ctx);
        else nb_afile_abort(&f);
        if (st != NB_OK) { rc = nb_cli_fail("logits", &ctx, st); goto done; }
    } else {
        if (top > 64) top = 64;
        size_t best[64];
        for (int t = 0; t < n_ids; t++) {
            const float *l = logits + (size_t)t * nv;
            int nb = 0; /* best[0..nb): ids by descending logit, ties by lower id */
            for (size_t j = 0; j < nv; j++) {
                int k = nb < top ? nb : top - 1;
                if (nb == top && !(l[j] > l[best[k]])) continue;
                while (k > 0 && l[j] > l[best[k - 1]]) { best[k] = best[k - 1]; k--; }
                best[k] = j;
                if (nb < top) nb++;
            }
            printf("%d: token %d ->", t, (int)ids[t]);
            for (int k = 0; k < nb; k++) printf(" %zu (%.4f)", best[k], (double)l[best[k]]);
            printf("\n");
        }
    }
    rc = NB_EXIT_OK;
done:
    free(logits);
    free(tl.ids);
    nb_engine_free(e);
    nb_ctx_free(&ctx);
    return rc;
}
