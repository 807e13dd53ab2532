/* engine/generate.c — text generation on the engine (contract in sample.h). */
#include "engine/sample.h"

#include "engine/ppl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

nb_status nb_generate(nb_engine *e, const nb_tokenizer *t, const char *prompt, nb_sampler *s,
                      const nb_gen_opts *o, nb_gen_stats *stats, nb_ctx *ctx) {
    memset(stats, 0, sizeof *stats);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    NB_TRY(nb_ppl_tokenize(t, prompt, strlen(prompt), &ids, &n_ids, ctx));
    const int n_ctx = nb_engine_n_ctx(e), nv = nb_engine_n_vocab(e);
    nb_status st = NB_OK;
    float *logits = NULL;
    if (n_ids == 0) NB_FAIL_GOTO(st, done, ctx, NB_ERR_INVALID, "empty prompt (and no BOS to start from)");
    if (n_ids >= (size_t)n_ctx)
        NB_FAIL_GOTO(st, done, ctx, NB_ERR_RANGE, "the prompt is %zu tokens; the context holds %d", n_ids, n_ctx);
    logits = nb_malloc(ctx, (size_t)nv * sizeof *logits, "logits");
    if (!logits) { st = NB_ERR_NOMEM; goto done; }
    stats->n_prompt = (int)n_ids;
    nb_engine_reset(e);
    double t0 = nb_now();
    /* Only the last prompt token's logits are needed. */
    if (n_ids > 1) NB_CHECK_GOTO(st, nb_engine_eval(e, ids, (int)n_ids - 1, 0, NULL, ctx), done);
    NB_CHECK_GOTO(st, nb_engine_eval(e, ids + n_ids - 1, 1, (int)n_ids - 1, logits, ctx), done);
    stats->t_prompt = nb_now() - t0;
    t0 = nb_now();
    int pos = (int)n_ids;
    char piece[256];
    for (;;) {
        int32_t next = nb_sample(s, logits, nv);
        if (next < 0) NB_FAIL_GOTO(st, done, ctx, NB_ERR_NOMEM, "sampler scratch");
        if (nb_tokenizer_is_eog(t, next) && !o->ignore_eos) { stats->hit_eos = true; break; }
        stats->n_gen++;
        if (o->on_piece) {
            /* control tokens (<end_of_turn> past --ignore-eos ...) are not text */
            size_t n = nb_tokenizer_is_control(t, next) ? 0 : nb_token_to_piece(t, next, piece, sizeof piece);
            o->on_piece(o->user, next, piece, n < sizeof piece ? n : sizeof piece);
        }
        if ((o->n_predict > 0 && stats->n_gen >= o->n_predict) || pos >= n_ctx) break;
        NB_CHECK_GOTO(st, nb_engine_eval(e, &next, 1, pos, logits, ctx), done);
        pos++;
    }
    stats->t_gen = nb_now() - t0;
done:
    free(ids);
    free(logits);
    return st;
}

/* mean and sample standard deviation of n rates */
static void mean_sd(const double *v, int n, double *mean, double *sd) {
    double m = 0, q = 0;
    for (int i = 0; i < n; i++) m += v[i];
    m /= n;
    for (int i = 0; i < n; i++) q += (v[i] - m) * (v[i] - m);
    *mean = m;
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0;
}

nb_status nb_bench(nb_engine *e, const nb_bench_opts *o, nb_bench_result *r, nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    const int nv = nb_engine_n_vocab(e), n_ctx = nb_engine_n_ctx(e);
    const int reps = o->reps < 1 ? 1 : o->reps;
    NB_RETURN_IF(ctx, o->n_prompt < 0 || o->n_gen < 0 || o->n_prompt > n_ctx || o->n_gen > n_ctx, NB_ERR_RANGE,
                 "bench: %d prompt / %d generated tokens do not fit a context of %d", o->n_prompt, o->n_gen, n_ctx);
    const int n_tok = o->n_prompt > o->n_gen ? o->n_prompt : o->n_gen;
    int32_t *ids = nb_malloc(ctx, (size_t)(n_tok > 0 ? n_tok : 1) * sizeof *ids, "bench tokens");
    float *logits = nb_malloc(ctx, (size_t)nv * sizeof *logits, "logits");
    double *ts = nb_malloc(ctx, (size_t)reps * sizeof *ts, "bench times");
    nb_status st = NB_OK;
    if (!ids || !logits || !ts) { st = NB_ERR_NOMEM; goto done; }
    uint64_t x = 0x9E3779B97F4A7C15ull; /* xorshift64: the same ids every run */
    for (int i = 0; i < n_tok; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)nv);
    }
    if (o->bos >= 0 && n_tok > 0) ids[0] = o->bos;
    if (o->n_prompt > 0) {
        for (int rep = -1; rep < reps; rep++) { /* rep -1: warm-up */
            nb_engine_reset(e);
            const double t0 = nb_now();
            if (o->n_prompt > 1) NB_CHECK_GOTO(st, nb_engine_eval(e, ids, o->n_prompt - 1, 0, NULL, ctx), done);
            NB_CHECK_GOTO(st, nb_engine_eval(e, ids + o->n_prompt - 1, 1, o->n_prompt - 1, logits, ctx), done);
            if (rep >= 0) ts[rep] = o->n_prompt / (nb_now() - t0);
        }
        mean_sd(ts, reps, &r->pp_tps, &r->pp_sd);
    }
    if (o->n_gen > 0) {
        for (int rep = -1; rep < reps; rep++) {
            nb_engine_reset(e);
            const double t0 = nb_now();
            for (int i = 0; i < o->n_gen; i++) NB_CHECK_GOTO(st, nb_engine_eval(e, ids + i, 1, i, logits, ctx), done);
            if (rep >= 0) ts[rep] = o->n_gen / (nb_now() - t0);
        }
        mean_sd(ts, reps, &r->tg_tps, &r->tg_sd);
    }
done:
    free(ids);
    free(logits);
    free(ts);
    return st;
}
