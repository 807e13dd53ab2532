/* cli/cmd_embed.c — `nibble embed MODEL --text FILE [--json] [-o OUT.emb]
 * [--compare BASE.emb]`: sentence embeddings of a text encoder, and their
 * fidelity against a base model's. The work is in engine/embed.c. */
#include "cli/cli.h"
#include "core/file.h"
#include "core/str.h"
#include "engine/embed.h"
#include "formats/json_strict.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TEXT_LIMIT (64u << 20)

/* Progress on a terminal only: a log keeps the summary line. */
static void on_line(void *user, uint64_t line, int n_tok) {
    (void)user;
    fprintf(stderr, "\rnibble embed: line %llu (%d tokens)   ", (unsigned long long)line, n_tok);
    fflush(stderr);
}

static void print_compare(const nb_emb_compare *c, const char *base) {
    printf("embeddings compared with %s: %llu texts\n", base, (unsigned long long)c->count);
    printf("cosine distance   mean %.3e   worst %.3e (row %llu)\n", c->cos_dist_mean, c->cos_dist_max,
           (unsigned long long)c->worst);
    printf("same nearest neighbour: %llu of %llu queries (%.2f%%) over a corpus of %llu\n",
           (unsigned long long)c->same_nn, (unsigned long long)c->n_query, 100.0 * c->same_nn_frac,
           (unsigned long long)c->n_corpus);
    printf("query -> its pair (row + %llu): %llu of %llu (base: %llu)\n", (unsigned long long)c->n_query,
           (unsigned long long)c->hits_test, (unsigned long long)c->n_query, (unsigned long long)c->hits_base);
}

static int print_json(const nb_emb_set *s, const char *model) {
    cJSON *o = cJSON_CreateObject(), *arr = NULL;
    bool ok = o && cJSON_AddStringToObject(o, "model", model) && cJSON_AddNumberToObject(o, "dim", s->dim) &&
              cJSON_AddNumberToObject(o, "count", (double)s->count) &&
              (arr = cJSON_AddArrayToObject(o, "embeddings")) != NULL;
    for (uint64_t r = 0; ok && r < s->count; r++) {
        cJSON *row = cJSON_CreateFloatArray(s->v + r * s->dim, (int)s->dim);
        ok = row && cJSON_AddItemToArray(arr, row);
    }
    char *js = ok ? nb_json_print(o, false) : NULL;
    cJSON_Delete(o);
    if (!js) return -1;
    printf("%s\n", js);
    free(js);
    return 0;
}

int nb_cmd_embed(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    const char *text_path = NULL, *out_path = NULL, *base = NULL;
    int n_ctx = 0;
    bool json = false, precise = false, any_text = false, ids = false;
    const nb_opt opts[] = {
        {.name = "text", .short_name = 'f', .type = NB_OPT_STR, .dest = &text_path, .meta = "FILE",
         .help = "UTF-8 text, one text per line (empty lines are skipped)"},
        {.name = "ids", .type = NB_OPT_FLAG, .dest = &ids,
         .help = "each line of FILE is whitespace-separated token ids (nothing added), not text"},
        {.name = "output", .short_name = 'o', .type = NB_OPT_STR, .dest = &out_path, .meta = "OUT.emb",
         .flags = NB_OPT_OUTPUT, .help = "write the embeddings to OUT.emb (docs/formats.md) instead of printing them"},
        {.name = "compare", .type = NB_OPT_STR, .dest = &base, .meta = "BASE.emb",
         .help = "fidelity against a base model's embeddings of the same text: mean and worst\n"
                 "cosine distance, same nearest neighbour (first half of the texts are queries,\n"
                 "the second half the corpus)"},
        {.name = "any-text", .type = NB_OPT_FLAG, .dest = &any_text,
         .help = "--compare even when the texts' hashes differ"},
        {.name = "ctx", .short_name = 'c', .type = NB_OPT_INT, .dest = &n_ctx, .meta = "N", .lo = 2, .hi = 1 << 20,
         .help = "most tokens per text (default min(context_length, 2048))"},
        {.name = "precise", .type = NB_OPT_FLAG, .dest = &precise,
         .help = "reference arithmetic: dequantized weights x F32 activations (slower)"},
        {.name = "json", .type = NB_OPT_FLAG, .dest = &json, .help = "print JSON on stdout"},
    };
    const nb_cmd_spec spec = {
        .name = "embed",
        .usage = "MODEL --text FILE [--json] [-o OUT.emb] [--compare BASE.emb]\n"
                 "TEST.emb --compare BASE.emb [--json]",
        .about = "Sentence embeddings of a text encoder (gemma-embedding: EmbeddingGemma): each line of\n"
                 "FILE is tokenized (BOS/EOS as the tokenizer adds them), run with bidirectional\n"
                 "attention, mean-pooled, projected by the model's Dense modules and L2-normalised, as\n"
                 "llama.cpp's llama-embedding computes it. Prints one line of values per text, or writes\n"
                 "OUT.emb; with --compare, prints the fidelity metrics instead (docs/engine.md).",
        NB_OPTS_TABLE(opts),
        NB_OPTS_ONE_POS("MODEL"),
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    const char *model = args.pos[0];
    const bool from_file = rc == NB_OPTS_RUN && nb_str_ends_with(model, ".emb");
    if (rc == NB_OPTS_RUN && from_file && (!base || text_path || out_path))
        rc = nb_opts_usage_error(&spec, &args, "a .emb input needs --compare BASE.emb (and no --text or -o)");
    if (rc == NB_OPTS_RUN && !from_file && !text_path) rc = nb_opts_usage_error(&spec, &args, "missing --text FILE");
    if (rc == NB_OPTS_RUN) rc = nb_cli_check_paths("embed", &ctx, NB_CLI_PATHS(model, text_path, base),
                                                   NB_CLI_PATHS(out_path));
    if (rc != NB_OPTS_RUN) {
        nb_ctx_free(&ctx);
        return rc;
    }
    nb_status st = NB_OK;
    const bool tty = !ctx.quiet && isatty(fileno(stderr));
    nb_embedder *m = NULL;
    nb_emb_set set = {0}, bset = {0};
    char *text = NULL;
    size_t n_text = 0;
    if (from_file) {
        NB_CHECK_GOTO(st, nb_emb_read(model, &set, &ctx), fail);
    } else {
        nb_embed_opts eo = {.n_ctx = n_ctx, .n_threads = ctx.n_threads, .precise = precise};
        NB_CHECK_GOTO(st, nb_read_file(text_path, TEXT_LIMIT, &text, &n_text, &ctx), fail);
        NB_CHECK_GOTO(st, nb_embed_open(model, &eo, &m, &ctx), fail);
        NB_CHECK_GOTO(st, nb_embed_lines(m, text, n_text, ids, &set, tty ? on_line : NULL, NULL, &ctx), fail);
        if (!ctx.quiet) fprintf(stderr, "%snibble embed: %llu texts, dimension %u\n", tty ? "\r" : "", (unsigned long long)set.count,
                                set.dim);
        if (out_path) NB_CHECK_GOTO(st, nb_emb_write(out_path, &set, &ctx), fail);
    }
    if (base) {
        nb_emb_compare c;
        NB_CHECK_GOTO(st, nb_emb_read(base, &bset, &ctx), fail);
        NB_CHECK_GOTO(st, nb_emb_compare_sets(&set, &bset, any_text, &c, &ctx), fail);
        if (json) {
            char *js = nb_emb_compare_json(&c);
            if (!js) NB_FAIL_GOTO(st, fail, &ctx, NB_ERR_NOMEM, "JSON output: out of memory");
            printf("%s\n", js);
            free(js);
        } else {
            print_compare(&c, base);
        }
    } else if (json) {
        if (print_json(&set, model) != 0) NB_FAIL_GOTO(st, fail, &ctx, NB_ERR_NOMEM, "JSON output: out of memory");
    } else if (!out_path) {
        for (uint64_t r = 0; r < set.count; r++)
            for (uint32_t i = 0; i < set.dim; i++)
                printf("%.7g%c", (double)set.v[r * set.dim + i], i + 1 < set.dim ? ' ' : '\n');
    }
fail:
    if (st != NB_OK && tty) fputc('\n', stderr);
    rc = st == NB_OK ? NB_EXIT_OK : nb_cli_fail("embed", &ctx, st);
    nb_emb_set_free(&set);
    nb_emb_set_free(&bset);
    nb_embed_free(m);
    free(text);
    nb_ctx_free(&ctx);
    return rc;
}
