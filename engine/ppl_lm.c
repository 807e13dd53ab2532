/* engine/ppl_lm.c — glue between the perplexity driver and the engine /
 * tokenizer, and nb_ppl_file (kept apart from ppl.c so the statistics link
 * without them). */
#include "engine/ppl.h"

#include "core/file.h"

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

/* The context a KLD run must use: the base file's (a different explicit one fails). */
static nb_status kld_ctx(const char *kld_path, int *n_ctx, nb_ctx *ctx) {
    nb_lpf_header h;
    int32_t *ft = NULL;
    nb_lpf_reader *r = NULL;
    nb_status st = nb_lpf_open(kld_path, &h, &ft, &r, ctx);
    free(ft);
    nb_lpf_close(r);
    NB_TRY(st);
    NB_RETURN_IF(ctx, *n_ctx && (uint32_t)*n_ctx != h.n_ctx, NB_ERR_RANGE,
                 "%s: base log-probs were computed with --ctx %u, not %d", kld_path, h.n_ctx, *n_ctx);
    *n_ctx = (int)h.n_ctx;
    return NB_OK;
}

/* Texts above this are refused (a tokenized text is held in memory whole). */
#define PPL_TEXT_MAX ((size_t)1 << 32)

nb_status nb_ppl_file(const char *model_path, const nb_ppl_file_opts *o, nb_ppl_result *res, nb_ctx *ctx) {
    memset(res, 0, sizeof *res);
    NB_RETURN_IF(ctx, !o || (!o->text_path && !o->ppl.kld_path), NB_ERR_INVALID, "perplexity: no text");
    nb_ppl_opts po = o->ppl;
    if (po.kld_path) NB_TRY(kld_ctx(po.kld_path, &po.n_ctx, ctx));
    if (!po.n_ctx) po.n_ctx = 512;
    const int n_threads = po.n_threads > 0 ? po.n_threads : nb_ctx_threads(ctx);
    nb_engine_opts eo = {po.n_ctx, po.n_batch > 0 && po.n_batch < po.n_ctx ? po.n_batch : po.n_ctx, n_threads,
                         o->precise, o->kv_type};
    nb_engine *e = NULL;
    nb_tokenizer *tok = NULL;
    char *text = NULL;
    size_t text_len = 0, n_tokens = 0;
    int32_t *tokens = NULL;
    nb_status st;
    NB_CHECK_GOTO(st, nb_engine_open(model_path, &eo, &e, ctx), out);
    const nb_model *m = nb_engine_model(e);
    NB_CHECK_GOTO(st, nb_tokenizer_create(&m->kv, &tok, ctx), out);
    if (o->text_path) {
        NB_CHECK_GOTO(st, nb_read_file(o->text_path, PPL_TEXT_MAX, &text, &text_len, ctx), out);
        NB_CHECK_GOTO(st, nb_ppl_tokenize(tok, text, text_len, &tokens, &n_tokens, ctx), out);
    }
    unsigned char vsha[32];
    const bool have_vsha = nb_lpf_vocab_hash(&m->kv, vsha);
    po.add_bos = nb_tokenizer_add_bos(tok) && nb_tokenizer_bos(tok) >= 0;
    po.bos = nb_tokenizer_bos(tok);
    po.vocab_sha = have_vsha ? vsha : NULL;
    if (o->on_start) {
        nb_ppl_start s = {model_path, nb_engine_n_vocab(e), po.add_bos, o->text_path, text_len, n_tokens,
                          po.n_ctx, eo.n_batch, n_threads, o->precise, o->kv_type};
        o->on_start(po.user, &s);
    }
    nb_ppl_lm lm = nb_ppl_lm_engine(e);
    st = nb_ppl_run(&lm, tokens, n_tokens, &po, res, ctx);
out:
    nb_tokenizer_free(tok);
    nb_engine_free(e);
    free(tokens);
    free(text);
    return st;
}
