/* cli/cmd_ppl.c — `nibble ppl MODEL --text FILE [--ctx N] [--chunks N] [--batch N]
 * [--json] [--save-logits BASE.bin] [--kld BASE.bin]`: perplexity with
 * llama-perplexity's method, and KL-divergence against a base model's saved
 * log-probs. The work is in engine/ppl.c. */
#include "cli/cli.h"
#include "engine/ppl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void on_chunk(void *user, const nb_ppl_progress *p) {
    FILE *f = user;
    if (p->kld)
        fprintf(f, "[%d] PPL %.4f  ln(PPL(Q)/PPL(base)) %.5f  KLD %.6f  RMS dp %.3f%%  same top p %.3f%%\n",
                p->chunk, p->ppl, p->ln_ratio, p->kld_mean, 100.0 * p->dp_rms, 100.0 * p->same_top);
    else
        fprintf(f, "[%d]%.4f,", p->chunk, p->ppl);
    fflush(f);
}

/* The settings line before the first chunk (stderr; --quiet drops it). */
static void on_start(void *user, const nb_ppl_start *st) {
    (void)user;
    fprintf(stderr, "nibble ppl: %s: vocabulary %d, BOS %s; ", st->model_path, st->n_vocab,
            st->add_bos ? "added" : "not added");
    if (st->text_path) fprintf(stderr, "%s: %zu bytes -> %zu tokens; ", st->text_path, st->text_bytes, st->n_tokens);
    fprintf(stderr, "n_ctx %d, batch %d, %d threads, %s arithmetic, %s KV cache\n", st->n_ctx, st->n_batch,
            st->n_threads, st->precise ? "precise" : "fast", nb_cache_type_name(st->kv_type));
}

static void print_kld(FILE *f, const nb_kld_stats *k) {
    static const char *const kn[NB_KLD_NPCT] = {"Maximum", "99.9%  ", "99.0%  ", "95.0%  ", "90.0%  ", "Median ",
                                                 "10.0%  ", " 5.0%  ", " 1.0%  ", " 0.1%  ", "Minimum"};
    static const char *const dn[NB_DP_NPCT] = {"Maximum", "99.9%  ", "99.0%  ", "95.0%  ", "90.0%  ",
                                                "75.0%  ", "Median ", "25.0%  ", "10.0%  ", " 5.0%  ",
                                                " 1.0%  ", " 0.1%  ", "Minimum"};
    if (k->count < 100) fprintf(f, "(only %zu tokens scored: the statistics below are rough)\n", k->count);
    fprintf(f, "====== Perplexity statistics ======\n");
    fprintf(f, "Mean PPL(Q)                   : %10.6f ± %10.6f\n", k->ppl_q, k->ppl_q_err);
    fprintf(f, "Mean PPL(base)                : %10.6f ± %10.6f\n", k->ppl_base, k->ppl_base_err);
    fprintf(f, "Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", 100.0 * k->cor);
    fprintf(f, "Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n", k->ln_ratio, k->ln_ratio_err);
    fprintf(f, "Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n", k->ppl_ratio, k->ppl_ratio_err);
    fprintf(f, "Mean PPL(Q)-PPL(base)         : %10.6f ± %10.6f\n\n", k->ppl_diff, k->ppl_diff_err);
    fprintf(f, "====== KL divergence statistics ======\n");
    fprintf(f, "Mean    KLD: %10.6f ± %10.6f\n", k->kld, k->kld_err);
    for (int i = 0; i < NB_KLD_NPCT; i++) fprintf(f, "%s KLD: %10.6f\n", kn[i], k->kld_pct[i]);
    fprintf(f, "\n====== Token probability statistics ======\n");
    fprintf(f, "Mean    Δp: %6.3f ± %5.3f %%\n", 100.0 * k->dp, 100.0 * k->dp_err);
    for (int i = 0; i < NB_DP_NPCT; i++) fprintf(f, "%s Δp: %6.3f%%\n", dn[i], 100.0 * k->dp_pct[i]);
    fprintf(f, "RMS Δp    : %6.3f ± %5.3f %%\n", 100.0 * k->dp_rms, 100.0 * k->dp_rms_err);
    fprintf(f, "Same top p: %6.3f ± %5.3f %%\n", 100.0 * k->same_top, 100.0 * k->same_top_err);
}

int nb_cmd_ppl(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    const char *text_path = NULL, *save = NULL, *kld = NULL;
    int n_ctx = 0, n_chunks = 0, n_batch = 0, kv_type = NB_CACHE_F32, lfmt = NB_LPF_NIBBLE;
    static const nb_opt_choice LOGIT_FORMATS[] = {{"nibble", NB_LPF_NIBBLE}, {"llama.cpp", NB_LPF_LLAMACPP}, {0, 0}};
    bool json = false, precise = false, fast = false;
    const nb_opt opts[] = {
        {.name = "text", .short_name = 'f', .type = NB_OPT_STR, .dest = &text_path, .meta = "FILE",
         .help = "UTF-8 text to score (optional with --kld: the base file holds the tokens)"},
        {.name = "ctx", .short_name = 'c', .type = NB_OPT_INT, .dest = &n_ctx, .meta = "N", .lo = 4, .hi = 1 << 20,
         .help = "tokens per chunk (default 512)"},
        {.name = "chunks", .type = NB_OPT_INT, .dest = &n_chunks, .meta = "N", .lo = 1, .hi = 1 << 30,
         .help = "score at most N chunks (default: all)"},
        {.name = "batch", .short_name = 'b', .type = NB_OPT_INT, .dest = &n_batch, .meta = "N", .lo = 1, .hi = 1 << 20,
         .help = "tokens per forward call (default N = --ctx); memory for logits is\n"
                 "batch x vocabulary floats"},
        {.name = "save-logits", .type = NB_OPT_STR, .dest = &save, .meta = "F", .flags = NB_OPT_OUTPUT,
         .help = "save the log-probs of every scored token to F (zstd-compressed,\n"
                 "16 bits per vocabulary entry) for later --kld runs"},
        {.name = "logits-format", .type = NB_OPT_CHOICE, .dest = &lfmt, .choices = LOGIT_FORMATS, .meta = "FMT",
         .help = "layout of the --save-logits file: nibble (default: zstd, exact target\n"
                 "log-prob and argmax) or llama.cpp (llama-perplexity's --kl-divergence-base\n"
                 "file); --kld reads either"},
        {.name = "kld", .type = NB_OPT_STR, .dest = &kld, .meta = "F",
         .help = "KL-divergence of MODEL against the base log-probs in F (same\n"
                 "tokenizer, text and --ctx): mean KLD, percentiles, same top token,\n"
                 "delta-p, PPL ratio and correlation, as llama-perplexity prints them"},
        {.name = "kl-divergence-base", .alias_of = "kld"}, /* llama-perplexity's name */
        {.name = "precise", .type = NB_OPT_FLAG, .dest = &precise,
         .help = "reference arithmetic: dequantized weights x F32 activations, F32 sums\n"
                 "(slower; the default with --save-logits and --kld, so a KLD measures the\n"
                 "model, not the engine's 8-bit activations)"},
        {.name = "fast", .type = NB_OPT_FLAG, .dest = &fast,
         .help = "the fast kernels (8-bit activations, as llama.cpp) also with --save-logits / --kld"},
        NB_CLI_OPT_CACHE_TYPE(&kv_type),
        {.name = "json", .type = NB_OPT_FLAG, .dest = &json, .help = "print the results as one JSON object on stdout"},
    };
    const nb_cmd_spec spec = {
        .name = "ppl",
        .usage = "MODEL --text FILE [--ctx N] [--chunks N] [--batch N] [--threads N]\n"
                 "[--kv-type T] [--json] [--save-logits BASE.bin [--logits-format FMT] | --kld BASE.bin]",
        .about = "Perplexity of MODEL on a text, computed as llama.cpp's llama-perplexity does: the whole\n"
                 "text is tokenized (BOS first when the vocabulary adds one) and cut into chunks of N\n"
                 "tokens; each chunk starts from an empty cache with BOS as its first token, and only its\n"
                 "second half is scored. Prints the running PPL per chunk, `[1]12.3456,[2]...`, then\n"
                 "`Final estimate: PPL = X +/- err`. The text must hold at least 2 x N tokens.",
        NB_OPTS_TABLE(opts),
        NB_OPTS_ONE_POS("MODEL"),
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    const char *model = args.pos[0];
    if (rc == NB_OPTS_RUN && !text_path && !kld) rc = nb_opts_usage_error(&spec, &args, "missing --text FILE");
    if (rc != NB_OPTS_RUN) { nb_ctx_free(&ctx); return rc; }
    if (save && kld) {
        nb_ctx_free(&ctx);
        return nb_opts_usage_error(&spec, &args, "--save-logits and --kld cannot be combined");
    }
    rc = nb_cli_check_paths("ppl", &ctx, NB_CLI_PATHS(model, text_path, kld), NB_CLI_PATHS(save));
    if (rc != NB_OPTS_RUN) { nb_ctx_free(&ctx); return rc; }
    FILE *info = json ? stderr : stdout;

    rc = NB_EXIT_OK;
    nb_ppl_result res = {0};
    if (precise && fast) {
        nb_ctx_free(&ctx);
        return nb_opts_usage_error(&spec, &args, "--precise and --fast cannot be combined");
    }
    nb_ppl_file_opts fo = {.text_path = text_path, .on_start = ctx.quiet ? NULL : on_start,
                           .precise = precise || ((save || kld) && !fast), .kv_type = (nb_cache_type)kv_type};
    fo.ppl.n_ctx = n_ctx;
    fo.ppl.n_chunks = n_chunks;
    fo.ppl.n_batch = n_batch;
    fo.ppl.n_threads = ctx.n_threads;
    fo.ppl.save_path = save;
    fo.ppl.save_format = (nb_lpf_format)lfmt;
    fo.ppl.kld_path = kld;
    fo.ppl.on_chunk = ctx.quiet ? NULL : on_chunk;
    fo.ppl.user = info;
    nb_status st = nb_ppl_file(model, &fo, &res, &ctx);
    if (st != NB_OK) goto fail;
    if (fo.ppl.on_chunk && !kld) fputc('\n', info);
    if (json) {
        char *js = nb_ppl_result_json(&res);
        if (!js) { st = nb_err(&ctx, NB_ERR_NOMEM, "JSON output"); goto fail; }
        printf("%s\n", js);
        free(js);
    } else {
        if (kld) { fputc('\n', stdout); print_kld(stdout, &res.kld); }
        printf("Final estimate: PPL = %.4f +/- %.5f\n", res.ppl, res.ppl_err);
    }
    if (!ctx.quiet) {
        double tps = res.seconds_eval > 0 ? (double)res.n_chunk * res.n_ctx / res.seconds_eval : 0;
        fprintf(stderr, "nibble ppl: %d chunks x %d tokens, %zu scored, in %.2f s (forward pass %.2f s, %.1f tokens/s)%s%s\n",
                res.n_chunk, res.n_ctx, res.n_scored, res.seconds, res.seconds_eval, tps,
                save ? "; log-probs saved to " : "", save ? save : "");
    }
fail:
    if (st != NB_OK) rc = nb_cli_fail("ppl", &ctx, st);
    nb_ppl_result_free(&res);
    nb_ctx_free(&ctx);
    return rc;
}
