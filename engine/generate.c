/* engine/generate.c — text generation on the engine (contract in sample.h). */
#include "engine/sample.h"

#include "engine/ppl.h"

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
