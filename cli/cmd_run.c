/* cli/cmd_run.c — `nibble run MODEL -p PROMPT [-n N] [--temp T] [--top-k K] [--seed S]`:
 * generate text on the engine so a person can see that a packed file still
 * talks. The work is in engine/generate.c and engine/sample.c. */
#include "cli/cli.h"
#include "engine/sample.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const HELP =
    "usage: nibble run MODEL -p PROMPT [-n N] [--temp T] [--top-k K] [--seed S] [--ctx N]\n"
    "                  [--ignore-eos] [--threads N] [--quiet]\n\n"
    "Generate text from PROMPT with MODEL (any file `nibble quantize` writes, or a source\n"
    "model). The prompt is echoed, then each new token is printed as it is produced.\n\n"
    "  -p, --prompt TEXT  the prompt (BOS is put first when the vocabulary adds one)\n"
    "  -n N               tokens to generate at most (default 64; stops early at EOS)\n"
    "  --temp T           temperature (default 0: greedy, always the most likely token)\n"
    "  --top-k K          sample among the K most likely tokens (default 40; 0: all)\n"
    "  --seed S           random seed for sampling (default 1: the same seed gives the same text)\n"
    "  --ctx N            context length (default 2048)\n"
    "  --ignore-eos       keep generating after the end-of-sequence token\n";

static void on_piece(void *user, int32_t id, const char *piece, size_t n) {
    (void)user;
    (void)id;
    fwrite(piece, 1, n, stdout);
    fflush(stdout);
}

int nb_cmd_run(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    const char *model = NULL, *prompt = NULL;
    unsigned long long n_predict = 64, top_k = 40, seed = 1, n_ctx = 2048;
    double temp = 0;
    bool ignore_eos = false;
    for (int i = 1; i < argc; i++) {
        int r = nb_cli_common_opt(&ctx, argc, argv, &i);
        if (r < 0) return NB_EXIT_USAGE;
        if (r) continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(HELP, stdout); return NB_EXIT_OK; }
        if (!strcmp(a, "--ignore-eos")) { ignore_eos = true; continue; }
        bool ok = v != NULL;
        if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict"))
            ok = ok && nb_cli_parse_u64(v, &n_predict) && n_predict <= (1u << 20);
        else if (!strcmp(a, "--top-k")) ok = ok && nb_cli_parse_u64(v, &top_k) && top_k <= (1u << 24);
        else if (!strcmp(a, "--seed")) ok = ok && nb_cli_parse_u64(v, &seed);
        else if (!strcmp(a, "--ctx") || !strcmp(a, "-c"))
            ok = ok && nb_cli_parse_u64(v, &n_ctx) && n_ctx >= 2 && n_ctx <= (1u << 20);
        else if (!strcmp(a, "--temp")) {
            char *end = NULL;
            if (ok) temp = strtod(v, &end);
            ok = ok && end && *end == 0 && temp >= 0 && temp <= 100;
        } else if (a[0] == '-' || model) {
            fprintf(stderr, "nibble run: unexpected argument '%s'\n%s", a, HELP);
            return NB_EXIT_USAGE;
        } else { model = a; continue; }
        if (!ok) {
            fprintf(stderr, "nibble run: %s needs %s\n", a, v ? "a valid value (see --help)" : "a value");
            return NB_EXIT_USAGE;
        }
        i++;
    }
    if (!model || !prompt) { fputs(HELP, stderr); return NB_EXIT_USAGE; }

    int rc = NB_EXIT_OK;
    nb_status st;
    nb_engine *e = NULL;
    nb_tokenizer *tok = NULL;
    nb_sampler smp;
    memset(&smp, 0, sizeof smp);
    nb_engine_opts eo = {(int)n_ctx, 0, ctx.n_threads};
    if ((st = nb_engine_open(model, &eo, &e, &ctx)) != NB_OK) goto done;
    if ((st = nb_tokenizer_create(&nb_engine_model(e)->kv, &tok, &ctx)) != NB_OK) goto done;
    if ((st = nb_sampler_init(&smp, (float)temp, (int)top_k, seed, &ctx)) != NB_OK) goto done;
    nb_gen_opts go = {(int)n_predict, ignore_eos, on_piece, NULL};
    nb_gen_stats gs;
    fputs(prompt, stdout);
    fflush(stdout);
    st = nb_generate(e, tok, prompt, &smp, &go, &gs, &ctx);
    fputc('\n', stdout);
    fflush(stdout);
    if (st == NB_OK && !ctx.quiet)
        fprintf(stderr, "nibble run: prompt %d tokens in %.2f s (%.1f tokens/s); generated %d tokens in %.2f s "
                        "(%.1f tokens/s)%s; %s, seed %llu\n",
                gs.n_prompt, gs.t_prompt, gs.t_prompt > 0 ? gs.n_prompt / gs.t_prompt : 0, gs.n_gen, gs.t_gen,
                gs.t_gen > 0 ? gs.n_gen / gs.t_gen : 0, gs.hit_eos ? ", stopped at EOS" : "",
                temp == 0 ? "greedy" : "sampled", seed);
done:
    if (st != NB_OK) rc = nb_cli_fail("run", &ctx, st);
    nb_sampler_free(&smp);
    nb_tokenizer_free(tok);
    nb_engine_free(e);
    nb_ctx_free(&ctx);
    return rc;
}
