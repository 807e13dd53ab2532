/* cli/cmd_logits.c — `nibble logits`: run the engine on given token ids and
 * write every token's logits. A debugging and testing command: the interop
 * tests compare its output with an independent numpy forward pass. */
#include "cli/cli.h"
#include "core/afile.h"
#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const HELP =
    "usage: nibble logits MODEL --tokens ID,ID,... [--ctx N] [--batch N] [-o OUT.f32] [--top K]\n\n"
    "Evaluate token ids with the engine (a debugging and testing command) and write the\n"
    "logits of every token as raw little-endian float32, n_tokens x n_vocab, row-major.\n"
    "Without -o, print the K (default 5) highest logits of each token instead.\n\n"
    "  --tokens LIST      comma-separated token ids (required)\n"
    "  --ctx N            KV cache length (default: the number of tokens)\n"
    "  --batch N          tokens evaluated per forward pass (default: all)\n"
    "  -o, --output OUT   output file (written atomically)\n"
    "  --top K            tokens to print per position without -o (default 5)\n"
    "  --threads N, --quiet, --verbose\n";

static bool parse_ids(const char *s, int32_t **ids, int *n) {
    size_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return false;
    const char *p = s;
    while (*p) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 0 || x > INT32_MAX || (*end && *end != ',')) { free(v); return false; }
        if (k == cap) {
            int32_t *w = realloc(v, (cap *= 2) * sizeof *v);
            if (!w) { free(v); return false; }
            v = w;
        }
        v[k++] = (int32_t)x;
        p = *end ? end + 1 : end;
    }
    if (k == 0 || k > (1u << 22)) { free(v); return false; }
    *ids = v;
    *n = (int)k;
    return true;
}

static int opt_int(int argc, char **argv, int *i, int *out) {
    unsigned long long v;
    if (*i + 1 >= argc || !nb_cli_parse_u64(argv[*i + 1], &v) || v < 1 || v > (1u << 22)) {
        fprintf(stderr, "nibble logits: %s needs a positive integer\n", argv[*i]);
        return 0;
    }
    *out = (int)v;
    *i += 1;
    return 1;
}

int nb_cmd_logits(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    const char *model = NULL, *out = NULL;
    int32_t *ids = NULL;
    int n_ids = 0, n_ctx = 0, n_batch = 0, top = 5, rc = NB_EXIT_USAGE;
    nb_engine *e = NULL;
    float *logits = NULL;
    for (int i = 1; i < argc; i++) {
        int r = nb_cli_common_opt(&ctx, argc, argv, &i);
        if (r < 0) goto done;
        if (r) continue;
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(HELP, stdout); rc = NB_EXIT_OK; goto done; }
        else if (!strcmp(a, "--tokens")) {
            if (i + 1 >= argc || !parse_ids(argv[++i], &ids, &n_ids)) {
                fprintf(stderr, "nibble logits: --tokens needs comma-separated non-negative ids\n");
                goto done;
            }
        } else if (!strcmp(a, "--ctx")) { if (!opt_int(argc, argv, &i, &n_ctx)) goto done; }
        else if (!strcmp(a, "--batch")) { if (!opt_int(argc, argv, &i, &n_batch)) goto done; }
        else if (!strcmp(a, "--top")) { if (!opt_int(argc, argv, &i, &top)) goto done; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (i + 1 >= argc) { fprintf(stderr, "nibble logits: %s needs a path\n", a); goto done; }
            out = argv[++i];
        } else if (a[0] == '-' && a[1]) { fprintf(stderr, "nibble logits: unknown option '%s'\n%s", a, HELP); goto done; }
        else if (!model) model = a;
        else { fprintf(stderr, "nibble logits: unexpected argument '%s'\n", a); goto done; }
    }
    if (!model || !ids) { fputs(HELP, stderr); goto done; }
    nb_engine_opts o = {n_ctx ? n_ctx : n_ids, n_batch, ctx.n_threads};
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
    free(ids);
    nb_engine_free(e);
    nb_ctx_free(&ctx);
    return rc;
}
