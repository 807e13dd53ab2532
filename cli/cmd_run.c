/* cli/cmd_run.c — `nibble run MODEL -p PROMPT [-n N] [--temp T] [--top-k K] [--seed S]`:
 * generate text on the engine so a person can see that a packed file still
 * talks; `nibble run MODEL --bench [-P 512] [-n 128]` measures prompt and
 * generation throughput as llama-bench does. The work is in engine/generate.c
 * and engine/sample.c. */
#include "cli/cli.h"
#include "engine/sample.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void on_piece(void *user, int32_t id, const char *piece, size_t n) {
    (void)user;
    (void)id;
    fwrite(piece, 1, n, stdout);
    fflush(stdout);
}

int nb_cmd_run(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    const char *prompt = NULL;
    int n_predict = 64, top_k = 40, n_ctx = 2048, kv_type = NB_CACHE_F32;
    uint64_t seed = 1;
    double temp = 0;
    bool ignore_eos = false, bench = false, n_given = false, ctx_given = false;
    int bench_prompt = 512, reps = 3;
    const nb_opt opts[] = {
        {.name = "prompt", .short_name = 'p', .type = NB_OPT_STR, .dest = &prompt, .meta = "TEXT",
         .help = "the prompt (BOS is put first when the vocabulary adds one; required unless --bench)"},
        {.name = "n-predict", .short_name = 'n', .type = NB_OPT_INT, .dest = &n_predict, .meta = "N", .lo = 0,
         .hi = 1 << 20, .given = &n_given,
         .help = "tokens to generate at most (default 64; stops early at EOS; --bench: 128)"},
        {.name = "bench", .type = NB_OPT_FLAG, .dest = &bench,
         .help = "measure throughput as llama-bench's pp/tg tests do instead of generating text:\n"
                 "prompt processing of --bench-prompt tokens and generation of -n tokens, each from an\n"
                 "empty cache on fixed pseudo-random token ids (BOS first), one warm-up then --reps\n"
                 "timed runs; prints one JSON line (tokens/s, mean and standard deviation)"},
        {.name = "bench-prompt", .short_name = 'P', .type = NB_OPT_INT, .dest = &bench_prompt, .meta = "N", .lo = 0,
         .hi = 1 << 20, .help = "--bench: prompt tokens (default 512; 0 skips the prompt test)"},
        {.name = "reps", .type = NB_OPT_INT, .dest = &reps, .meta = "N", .lo = 1, .hi = 1000,
         .help = "--bench: timed repetitions of each test (default 3)"},
        {.name = "temp", .type = NB_OPT_DOUBLE, .dest = &temp, .meta = "T", .lo = 0, .hi = 100,
         .help = "temperature (default 0: greedy, always the most likely token)"},
        {.name = "top-k", .type = NB_OPT_INT, .dest = &top_k, .meta = "K", .lo = 0, .hi = 1 << 24,
         .help = "sample among the K most likely tokens (default 40; 0: all)"},
        {.name = "seed", .type = NB_OPT_U64, .dest = &seed, .meta = "S",
         .help = "random seed for sampling (default 1: the same seed gives the same text)"},
        {.name = "ctx", .short_name = 'c', .type = NB_OPT_INT, .dest = &n_ctx, .meta = "N", .lo = 2, .hi = 1 << 20,
         .given = &ctx_given, .help = "context length (default 2048; --bench: what the tests need)"},
        NB_CLI_OPT_CACHE_TYPE(&kv_type),
        {.name = "ignore-eos", .type = NB_OPT_FLAG, .dest = &ignore_eos,
         .help = "keep generating after the end-of-sequence token"},
    };
    const nb_cmd_spec spec = {
        .name = "run",
        .usage = "MODEL -p PROMPT [-n N] [--temp T] [--top-k K] [--seed S] [--ctx N]\n"
                 "[--kv-type T] [--ignore-eos] [--threads N] [--quiet]\n"
                 "MODEL --bench [-P N] [-n N] [--reps N] [--kv-type T] [--threads N]",
        .about = "Generate text from PROMPT with MODEL (any file `nibble quantize` writes, or a source\n"
                 "model). The prompt is echoed, then each new token is printed as it is produced.",
        NB_OPTS_TABLE(opts),
        NB_OPTS_ONE_POS("MODEL"),
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    const char *model = args.pos[0];
    if (rc != NB_OPTS_RUN) { nb_ctx_free(&ctx); return rc; }

    rc = NB_EXIT_OK;
    nb_status st;
    nb_engine *e = NULL;
    nb_tokenizer *tok = NULL;
    nb_sampler smp;
    memset(&smp, 0, sizeof smp);
    if (!bench && !prompt) {
        st = nb_err(&ctx, NB_ERR_INVALID, "-p/--prompt is required (or --bench)");
        goto done;
    }
    if (bench && !n_given) n_predict = 128;
    if (bench && !ctx_given) n_ctx = bench_prompt > n_predict ? bench_prompt : n_predict < 2 ? 2 : n_predict;
    nb_engine_opts eo = {n_ctx, 0, ctx.n_threads, false, (nb_cache_type)kv_type};
    if ((st = nb_engine_open(model, &eo, &e, &ctx)) != NB_OK) goto done;
    if ((st = nb_tokenizer_create(&nb_engine_model(e)->kv, &tok, &ctx)) != NB_OK) goto done;
    if (bench) {
        const nb_bench_opts bo = {bench_prompt, n_predict, reps,
                                  nb_tokenizer_add_bos(tok) ? nb_tokenizer_bos(tok) : -1};
        nb_bench_result br;
        if ((st = nb_bench(e, &bo, &br, &ctx)) != NB_OK) goto done;
        printf("{\"threads\":%d,\"kv_type\":\"%s\",\"reps\":%d,\"n_prompt\":%d,"
               "\"pp_tps\":%.3f,\"pp_sd\":%.3f,\"n_gen\":%d,\"tg_tps\":%.3f,\"tg_sd\":%.3f}\n",
               ctx.n_threads, nb_cache_type_name((nb_cache_type)kv_type), reps, bench_prompt, br.pp_tps,
               br.pp_sd, n_predict, br.tg_tps, br.tg_sd);
        goto done;
    }
    if ((st = nb_sampler_init(&smp, (float)temp, top_k, seed, &ctx)) != NB_OK) goto done;
    nb_gen_opts go = {n_predict, ignore_eos, on_piece, NULL};
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
                temp == 0 ? "greedy" : "sampled", (unsigned long long)seed);
done:
    if (st != NB_OK) rc = nb_cli_fail("run", &ctx, st);
    nb_sampler_free(&smp);
    nb_tokenizer_free(tok);
    nb_engine_free(e);
    nb_ctx_free(&ctx);
    return rc;
}
