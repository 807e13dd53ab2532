/* engine/ppl.h — perplexity and KL-divergence, llama-perplexity's method.
 *
 * Method (tools/perplexity in llama.cpp, reproduced so numbers compare with
 * published tables):
 *   - the whole text is tokenized once, with BOS in front when the vocabulary
 *     adds one (the caller does this: nb_ppl_tokenize);
 *   - n_chunk = n_tokens / n_ctx chunks of n_ctx consecutive tokens (the tail
 *     is dropped), at most --chunks of them; a text of fewer than 2 x n_ctx
 *     tokens is refused;
 *   - each chunk is evaluated from an empty KV cache with its first token
 *     replaced by BOS when the vocabulary adds BOS;
 *   - only the second half is scored: the logits at positions
 *     first = n_ctx/2 .. n_ctx-2 predict the tokens at first+1 .. n_ctx-1
 *     (n_ctx - 1 - n_ctx/2 tokens per chunk), always the text's own tokens;
 *   - nll = -log softmax(logits)[next] in double; PPL = exp(mean nll), and
 *     its error is PPL * sqrt((mean(nll^2) - mean(nll)^2) / (count - 1)).
 *
 * KL-divergence: a base run writes the log-softmax of every scored token to
 * a log-prob file (engine/logits_file.h); a run of another model reads it and
 * computes per token KLD(base || model) = sum_i p_base,i (log p_base,i -
 * log p_i) over the entries with log p_base,i > -16, Δp = p(next) -
 * p_base(next), and whether the argmaxes agree; then the summary
 * statistics llama-perplexity prints (nb_kld_stats).
 *
 * Determinism: per-token values are computed in parallel but summed in token
 * order, so results are bit-identical at any thread count (given a model
 * whose logits are).
 */
#ifndef NB_ENGINE_PPL_H
#define NB_ENGINE_PPL_H

#include "core/ctx.h"
#include "engine/engine.h"
#include "engine/logits_file.h"
#include "engine/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A causal language model as the driver sees it: the engine (nb_ppl_lm_engine)
 * or anything else that produces logits (tests use synthetic ones). */
typedef struct nb_ppl_lm {
    int n_vocab;
    int n_ctx_max; /* longest context eval accepts */
    void *user;
    void (*reset)(void *user);
    /* Same contract as nb_engine_eval: tokens at positions [pos, pos+n);
     * logits NULL or n x n_vocab floats. */
    nb_status (*eval)(void *user, const int32_t *tokens, int n, int pos, float *logits, nb_ctx *ctx);
} nb_ppl_lm;

/* Wrap an engine (borrowed). */
nb_ppl_lm nb_ppl_lm_engine(nb_engine *e);

/* ---- per-token statistics (pure functions, exposed for tests) ------------------- */

/* -log softmax(logits)[tok], in double. */
double nb_nll(const float *logits, int n_vocab, int tok);

/* One token scored against a base record. */
typedef struct nb_kld_tok {
    double nll;      /* -log p(next) of this model */
    double nll_base; /* -log p_base(next) (exact, from the record) */
    double kld;      /* KLD(base || this) over base entries with log p > -16 */
    double dp;       /* p(next) - p_base(next) */
    bool same_top;   /* argmax agrees with the base argmax */
} nb_kld_tok;
void nb_kld_token(const float *logits, int n_vocab, int tok, const nb_lpf_rec *base, nb_kld_tok *out);

/* Percentile of sorted values (linear interpolation at fraction*(n-1), as
 * llama-perplexity; fraction <= 0: first, >= 1: last). n >= 1. */
double nb_percentile(const double *sorted, size_t n, double fraction);

/* llama-perplexity's summary (its mean_and_uncertainty: mean, and
 * sqrt(var/(count-1)) when count > 10, else 0). */
#define NB_KLD_NPCT 11 /* max, 99.9, 99, 95, 90, median, 10, 5, 1, 0.1, min */
#define NB_DP_NPCT 13  /* max, 99.9, 99, 95, 90, 75, median, 25, 10, 5, 1, 0.1, min */
extern const double nb_kld_pct_at[NB_KLD_NPCT]; /* the fractions (median: 0.5) */
extern const double nb_dp_pct_at[NB_DP_NPCT];

/* The per-token KLD histogram: fixed log-spaced bins, NB_KLD_HIST_PER_DECADE
 * per decade from 10^NB_KLD_HIST_LO to 10^NB_KLD_HIST_HI, with an underflow
 * bin first (KLD < 10^LO, zero and the tiny negatives rounding leaves
 * included) and an overflow bin last (>= 10^HI; NaN too). Bin i (1 ..
 * NB_KLD_HIST_BINS - 2) holds [nb_kld_hist_edge(i - 1), nb_kld_hist_edge(i)).
 * Counts are integers, so the histogram is the same at any thread count and
 * in any order of the tokens. */
#define NB_KLD_HIST_LO (-6)
#define NB_KLD_HIST_HI 2
#define NB_KLD_HIST_PER_DECADE 5
#define NB_KLD_HIST_BINS ((NB_KLD_HIST_HI - NB_KLD_HIST_LO) * NB_KLD_HIST_PER_DECADE + 2)
/* Lower edge of log bin e (0 .. NB_KLD_HIST_BINS - 2): 10^(LO + e / PER_DECADE). */
double nb_kld_hist_edge(int e);
/* The bin of one KLD value (0 .. NB_KLD_HIST_BINS - 1). */
int nb_kld_hist_bin(double kld);
/* The histogram as JSON, what `nibble ppl --json` and build manifests hold:
 * {"lo_log10": LO, "hi_log10": HI, "per_decade": P, "counts": [underflow, ..., overflow]}.
 * malloc'd; NULL when memory runs out. */
char *nb_kld_hist_json(const uint64_t hist[NB_KLD_HIST_BINS]);

typedef struct nb_kld_stats {
    size_t count;
    double ppl_q, ppl_q_err;         /* exp(mean nll) of this model */
    double ppl_base, ppl_base_err;
    double cor;                      /* Cor(ln PPL(Q), ln PPL(base)) as llama-perplexity defines it */
    double ln_ratio, ln_ratio_err;   /* mean ln(PPL(Q)/PPL(base)) */
    double ppl_ratio, ppl_ratio_err;
    double ppl_diff, ppl_diff_err;
    double kld, kld_err;             /* mean KLD */
    double kld_pct[NB_KLD_NPCT];
    uint64_t kld_hist[NB_KLD_HIST_BINS]; /* tokens per bin (nb_kld_hist_bin) */
    double dp, dp_err;               /* mean Δp (fraction, not %) */
    double dp_rms, dp_rms_err;
    double dp_pct[NB_DP_NPCT];
    double same_top, same_top_err;   /* fraction */
} nb_kld_stats;

/* Running sums; values[] keep every token's KLD and Δp for the percentiles. */
typedef struct nb_kld_acc {
    double sum_nll, sum_nll2, sum_nll_base, sum_nll_base2, sum_nll_nll_base;
    double sum_kld, sum_kld2, sum_dp, sum_dp2, sum_dp4;
    size_t n_same_top, count, cap;
    double *kld_vals, *dp_vals;
} nb_kld_acc;
nb_status nb_kld_acc_init(nb_kld_acc *a, size_t cap, nb_ctx *ctx);
void nb_kld_acc_free(nb_kld_acc *a);
void nb_kld_acc_add(nb_kld_acc *a, const nb_kld_tok *t); /* count < cap */
/* Summary of what was added (needs count >= 1; sorts copies of the values). */
nb_status nb_kld_stats_compute(const nb_kld_acc *a, nb_kld_stats *out, nb_ctx *ctx);

/* PPL and llama-perplexity's "Final estimate" error from nll sums. */
void nb_ppl_estimate(double sum_nll, double sum_nll2, size_t count, double *ppl, double *err);

/* ---- the driver --------------------------------------------------------------------- */

typedef struct nb_ppl_progress {
    int chunk, n_chunk;   /* chunk just finished (1-based) of n_chunk */
    double ppl;           /* running PPL over the chunks so far */
    bool kld;             /* KLD mode: the next fields are set */
    double kld_mean, ln_ratio, dp_rms, same_top;
    double seconds;       /* since the start */
} nb_ppl_progress;

typedef struct nb_ppl_opts {
    int n_ctx;       /* 0: 512 (KLD mode: taken from the file; a different non-zero value fails) */
    int n_chunks;    /* <= 0: all */
    int n_batch;     /* tokens per eval call, 0: n_ctx; memory is n_batch x n_vocab floats */
    int n_threads;   /* per-token statistics workers, 0: ctx->n_threads */
    bool add_bos;    /* the vocabulary adds BOS: each chunk starts with `bos` */
    int32_t bos;
    const unsigned char *vocab_sha; /* 32 bytes or NULL: stored / compared in log-prob files */
    const char *save_path;          /* write the base log-prob file here (NULL: no) */
    nb_lpf_format save_format;      /* its layout: nibble's (0) or llama.cpp's (logits_file.h) */
    const char *kld_path;           /* compare against this base file (NULL: no) */
    void (*on_chunk)(void *user, const nb_ppl_progress *p);
    void *user;
} nb_ppl_opts;

typedef struct nb_ppl_result {
    int n_ctx, n_chunk, n_batch;
    size_t n_text_tokens;  /* whole text (with BOS) */
    size_t n_scored;       /* tokens scored */
    double ppl, ppl_err;   /* "Final estimate" */
    double nll_mean;
    double *chunk_ppl;     /* running PPL after each chunk, n_chunk entries (owned) */
    double seconds;        /* wall time of the whole run */
    double seconds_eval;   /* of which in the model's eval */
    bool has_kld;
    nb_kld_stats kld;
} nb_ppl_result;

/* Tokenize a whole text the way llama-perplexity does: BOS first when the
 * vocabulary adds it, special-token text not parsed. *ids malloc'd. */
nb_status nb_ppl_tokenize(const nb_tokenizer *t, const char *text, size_t n, int32_t **ids, size_t *n_ids,
                          nb_ctx *ctx);

/* Run perplexity (and KLD / saving) over `tokens` (n_tokens, from
 * nb_ppl_tokenize). In KLD mode tokens may be NULL: the file's tokens are
 * used; when given, they must be the file's. Errors: too short a text, or a
 * log-prob file of a different vocabulary, tokenizer, context or text ->
 * NB_ERR_RANGE naming the mismatch; a damaged file -> NB_ERR_FORMAT; bad
 * options -> NB_ERR_INVALID. res is filled on success (free with
 * nb_ppl_result_free). */
nb_status nb_ppl_run(const nb_ppl_lm *lm, const int32_t *tokens, size_t n_tokens, const nb_ppl_opts *o,
                     nb_ppl_result *res, nb_ctx *ctx);
void nb_ppl_result_free(nb_ppl_result *r); /* NULL-safe */

/* The result as JSON (malloc'd string, NULL on allocation failure). */
char *nb_ppl_result_json(const nb_ppl_result *r);

/* ---- one call: a model file over a text file ------------------------------------------ */

/* What nb_ppl_file settled on, reported before the first chunk. */
typedef struct nb_ppl_start {
    const char *model_path;
    int n_vocab;
    bool add_bos;
    const char *text_path;  /* NULL in KLD mode without a text */
    size_t text_bytes;
    size_t n_tokens;        /* the tokenized text, BOS included */
    int n_ctx, n_batch, n_threads;
    bool precise;
    nb_cache_type kv_type;
} nb_ppl_start;

typedef struct nb_ppl_file_opts {
    const char *text_path;  /* the text; NULL only with ppl.kld_path (the base file's tokens are used) */
    /* As for nb_ppl_run; ppl.n_ctx 0 means the KLD file's context, else 512;
     * n_threads 0: ctx's. add_bos, bos and vocab_sha are ignored: the call
     * takes them from the model's vocabulary. */
    nb_ppl_opts ppl;
    void (*on_start)(void *user, const nb_ppl_start *s); /* may be NULL; gets ppl.user */
    bool precise;           /* the engine's reference arithmetic (nb_engine_opts.precise) */
    nb_cache_type kv_type;  /* the engine's KV cache type (nb_engine_opts.kv_type) */
} nb_ppl_file_opts;

/* Perplexity (and KLD / saving) of the model at model_path over the text at
 * o->text_path, llama-perplexity's way: open the model in the engine (sized
 * for the context), tokenize the text with the model's vocabulary
 * (nb_ppl_tokenize; texts up to 4 GiB), take BOS and the vocabulary hash
 * from it, and run nb_ppl_run. In KLD mode the base file fixes the context:
 * a different non-zero ppl.n_ctx -> NB_ERR_RANGE. Errors as nb_engine_open,
 * nb_read_file, nb_tokenize and nb_ppl_run. res is filled on success (free
 * with nb_ppl_result_free). Used by `nibble ppl` and prune's evaluation. */
nb_status nb_ppl_file(const char *model_path, const nb_ppl_file_opts *o, nb_ppl_result *res, nb_ctx *ctx);

#endif
