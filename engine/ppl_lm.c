/* engine/ppl_lm.c — glue between the perplexity driver and the engine /
 * tokenizer (kept apart from ppl.c so the statistics link without them). */
#include "engine/ppl.h"

#include <stdlib.h>
#include <string.h>

static void eng_reset(void *u) { nb_engine_reset(u); }
static nb_status eng_eval(void *u, const int32_t *tokens, int n, int pos, float *logits, nb_ctx *ctx) {
    return nb_engine_eval(u, tokens, n, pos, logits, ctx);
}

nb_ppl_lm nb_ppl_lm_engine(nb_engine *e) {
    nb_ppl_lm lm = {nb_engine_n_vocab(e), nb_engine_n_ctx(e), e, eng_reset, eng_eval};
    return lm;
}

nb_status nb_ppl_tokenize(const nb_tokenizer *t, const char *text, size_t n, int32_t **ids, size_t *n_ids,
                          nb_ctx *ctx) {
    *ids = NULL;
    *n_ids = 0;
    int32_t *raw = NULL;
    size_t n_raw = 0;
    NB_TRY(nb_tokenize(t, text, n, false, &raw, &n_raw, ctx));
    const bool bos = nb_tokenizer_add_bos(t) && nb_tokenizer_bos(t) >= 0;
    int32_t *out = nb_malloc(ctx, (n_raw + 1) * sizeof *out, "text tokens");
    if (!out) { free(raw); return NB_ERR_NOMEM; }
    size_t k = 0;
    if (bos) out[k++] = nb_tokenizer_bos(t);
    if (n_raw) memcpy(out + k, raw, n_raw * sizeof *out);
    free(raw);
    *ids = out;
    *n_ids = k + n_raw;
    return NB_OK;
}
