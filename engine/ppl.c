/* engine/ppl.c — perplexity / KL-divergence driver and statistics
 * (method and definitions in ppl.h). */
#include "engine/ppl.h"

#include "core/checked.h"
#include "formats/json_strict.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- per-token statistics ------------------------------------------------------------ */

/* max (first index on ties) and log(sum exp(l - max)) in double. */
static double log_sum_exp(const float *l, int n, float *mx_out, int *imax_out) {
    float mx = l[0];
    int imax = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > mx) { mx = l[i]; imax = i; }
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)l[i] - (double)mx);
    *mx_out = mx;
    if (imax_out) *imax_out = imax;
    return log(s);
}

double nb_nll(const float *logits, int n_vocab, int tok) {
    float mx;
    double lse = log_sum_exp(logits, n_vocab, &mx, NULL);
    return lse - ((double)logits[tok] - (double)mx);
}

void nb_kld_token(const float *logits, int n_vocab, int tok, const nb_lpf_rec *base, nb_kld_tok *out) {
    float mx;
    int imax;
    const double lse = log_sum_exp(logits, n_vocab, &mx, &imax);
    const double off = (double)mx + lse; /* log p_i = logits[i] - off */
    double kld = 0;
    const double scale = base->scale, min_lp = base->min_lp;
    for (int i = 0; i < n_vocab; i++) {
        double lpb = min_lp + scale * nb_lpf_q(base, (size_t)i);
        if (lpb > -(double)NB_LPF_RANGE) kld += exp(lpb) * (lpb - ((double)logits[i] - off));
    }
    out->nll = off - (double)logits[tok];
    out->nll_base = -(double)base->lp_target;
    out->kld = kld;
    out->dp = exp(-out->nll) - exp(-out->nll_base);
    out->same_top = imax == base->argmax;
}

double nb_percentile(const double *v, size_t n, double fraction) {
    if (fraction <= 0) return v[0];
    if (fraction >= 1) return v[n - 1];
    double p = fraction * (double)(n - 1);
    size_t ip = (size_t)p;
    p -= (double)ip;
    size_t ip1 = ip + 1 < n ? ip + 1 : n - 1;
    return (1 - p) * v[ip] + p * v[ip1];
}

const double nb_kld_pct_at[NB_KLD_NPCT] = {1.0, 0.999, 0.99, 0.95, 0.90, 0.5, 0.10, 0.05, 0.01, 0.001, 0.0};
const double nb_dp_pct_at[NB_DP_NPCT] = {1.0, 0.999, 0.99, 0.95, 0.90, 0.75, 0.5,
                                         0.25, 0.10, 0.05, 0.01, 0.001, 0.0};

nb_status nb_kld_acc_init(nb_kld_acc *a, size_t cap, nb_ctx *ctx) {
    memset(a, 0, sizeof *a);
    a->kld_vals = nb_malloc(ctx, (cap ? cap : 1) * sizeof(double), "KLD values");
    a->dp_vals = nb_malloc(ctx, (cap ? cap : 1) * sizeof(double), "delta-p values");
    if (!a->kld_vals || !a->dp_vals) { nb_kld_acc_free(a); return NB_ERR_NOMEM; }
    a->cap = cap;
    return NB_OK;
}

void nb_kld_acc_free(nb_kld_acc *a) {
    if (!a) return;
    free(a->kld_vals);
    free(a->dp_vals);
    a->kld_vals = a->dp_vals = NULL;
    a->cap = 0;
}

void nb_kld_acc_add(nb_kld_acc *a, const nb_kld_tok *t) {
    a->sum_nll += t->nll;
    a->sum_nll2 += t->nll * t->nll;
    a->sum_nll_base += t->nll_base;
    a->sum_nll_base2 += t->nll_base * t->nll_base;
    a->sum_nll_nll_base += t->nll * t->nll_base;
    a->sum_kld += t->kld;
    a->sum_kld2 += t->kld * t->kld;
    a->sum_dp += t->dp;
    const double dp2 = t->dp * t->dp;
    a->sum_dp2 += dp2;
    a->sum_dp4 += dp2 * dp2;
    a->n_same_top += t->same_top;
    if (a->count < a->cap) {
        a->kld_vals[a->count] = t->kld;
        a->dp_vals[a->count] = t->dp;
    }
    a->count++;
}

/* llama-perplexity's mean_and_uncertainty. */
static void mean_unc(double sum, double sum2, size_t n, double *mean, double *unc) {
    *mean = *unc = 0;
    if (n < 1) return;
    double f = sum / (double)n, df = sum2 / (double)n - f * f;
    *mean = f;
    *unc = df > 0 && n > 10 ? sqrt(df / (double)(n - 1)) : 0.0;
}

static double covariance(double sa, double sb, double sab, size_t n) {
    if (n < 10) return 0.0;
    double dn = (double)n;
    return (sab / dn - (sa / dn) * (sb / dn)) / (dn - 1);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void nb_ppl_estimate(double sum_nll, double sum_nll2, size_t count, double *ppl, double *err) {
    *ppl = *err = 0;
    if (!count) return;
    double m = sum_nll / (double)count, v = sum_nll2 / (double)count - m * m;
    *ppl = exp(m);
    *err = v > 0 && count > 1 ? sqrt(v / (double)(count - 1)) * *ppl : 0.0;
}

double nb_kld_hist_edge(int e) {
    return pow(10.0, NB_KLD_HIST_LO + (double)e / NB_KLD_HIST_PER_DECADE);
}

int nb_kld_hist_bin(double kld) {
    if (!(kld >= nb_kld_hist_edge(0))) return isnan(kld) ? NB_KLD_HIST_BINS - 1 : 0;
    const int top = NB_KLD_HIST_BINS - 2; /* the overflow bin's lower edge is edge(top) */
    if (kld >= nb_kld_hist_edge(top)) return NB_KLD_HIST_BINS - 1;
    /* the logarithm's guess, then the edges decide (log10 may round across an edge) */
    int e = (int)floor((log10(kld) - NB_KLD_HIST_LO) * NB_KLD_HIST_PER_DECADE);
    e = e < 0 ? 0 : e >= top ? top - 1 : e;
    while (e > 0 && kld < nb_kld_hist_edge(e)) e--;
    while (e + 1 < top && kld >= nb_kld_hist_edge(e + 1)) e++;
    return e + 1;
}

char *nb_kld_hist_json(const uint64_t hist[NB_KLD_HIST_BINS]) {
    size_t cap = 96 + 24 * (size_t)NB_KLD_HIST_BINS, o = 0;
    char *p = malloc(cap);
    if (!p) return NULL;
    o += (size_t)snprintf(p, cap, "{\"lo_log10\":%d,\"hi_log10\":%d,\"per_decade\":%d,\"counts\":[", NB_KLD_HIST_LO,
                          NB_KLD_HIST_HI, NB_KLD_HIST_PER_DECADE);
    for (int i = 0; i < NB_KLD_HIST_BINS; i++)
        o += (size_t)snprintf(p + o, cap - o, "%s%llu", i ? "," : "", (unsigned long long)hist[i]);
    snprintf(p + o, cap - o, "]}");
    return p;
}

nb_status nb_kld_stats_compute(const nb_kld_acc *a, nb_kld_stats *s, nb_ctx *ctx) {
    memset(s, 0, sizeof *s);
    size_t n = a->count;
    NB_RETURN_IF(ctx, n < 1 || n > a->cap, NB_ERR_INTERNAL, "KLD statistics over %zu values (capacity %zu)", n,
                 a->cap);
    s->count = n;
    double lq, lq_u, lb, lb_u;
    mean_unc(a->sum_nll, a->sum_nll2, n, &lq, &lq_u);
    mean_unc(a->sum_nll_base, a->sum_nll_base2, n, &lb, &lb_u);
    s->ppl_q = exp(lq);
    s->ppl_q_err = s->ppl_q * lq_u;
    s->ppl_base = exp(lb);
    s->ppl_base_err = s->ppl_base * lb_u;
    const double cov = covariance(a->sum_nll, a->sum_nll_base, a->sum_nll_nll_base, n);
    s->cor = lq_u > 0 && lb_u > 0 ? cov / (lq_u * lb_u) : 0.0;
    s->ln_ratio = lq - lb;
    double r2 = lq_u * lq_u + lb_u * lb_u - 2.0 * cov;
    s->ln_ratio_err = r2 > 0 ? sqrt(r2) : 0.0;
    s->ppl_ratio = exp(s->ln_ratio);
    s->ppl_ratio_err = s->ppl_ratio * s->ln_ratio_err;
    const double ppl_cov = s->ppl_q * s->ppl_base * cov;
    s->ppl_diff = s->ppl_q - s->ppl_base;
    double d2 = s->ppl_q_err * s->ppl_q_err + s->ppl_base_err * s->ppl_base_err - 2.0 * ppl_cov;
    s->ppl_diff_err = d2 > 0 ? sqrt(d2) : 0.0;

    mean_unc(a->sum_kld, a->sum_kld2, n, &s->kld, &s->kld_err);
    mean_unc(a->sum_dp, a->sum_dp2, n, &s->dp, &s->dp_err);
    double mse, mse_u;
    mean_unc(a->sum_dp2, a->sum_dp4, n, &mse, &mse_u);
    s->dp_rms = sqrt(mse);
    s->dp_rms_err = s->dp_rms > 0 ? 0.5 / s->dp_rms * mse_u : 0.0;
    s->same_top = (double)a->n_same_top / (double)n;
    s->same_top_err = n > 1 ? sqrt(s->same_top * (1 - s->same_top) / (double)(n - 1)) : 0.0;

    double *v = nb_malloc(ctx, n * sizeof *v, "sorted values");
    if (!v) return NB_ERR_NOMEM;
    memcpy(v, a->kld_vals, n * sizeof *v);
    qsort(v, n, sizeof *v, cmp_double);
    for (int i = 0; i < NB_KLD_NPCT; i++) s->kld_pct[i] = nb_percentile(v, n, nb_kld_pct_at[i]);
    for (size_t i = 0; i < n; i++) s->kld_hist[nb_kld_hist_bin(a->kld_vals[i])]++;
    memcpy(v, a->dp_vals, n * sizeof *v);
    qsort(v, n, sizeof *v, cmp_double);
    for (int i = 0; i < NB_DP_NPCT; i++) s->dp_pct[i] = nb_percentile(v, n, nb_dp_pct_at[i]);
    free(v);
    return NB_OK;
}

/* ---- the driver ------------------------------------------------------------------------ */

typedef struct run_state {
    const nb_ppl_lm *lm;
    const nb_ppl_opts *o;
    int n_ctx, n_batch, first, n_scored, n_threads;
    size_t rec_size;
    float *logits;        /* n_batch x n_vocab */
    unsigned char *recs;  /* n_batch records (save / KLD) */
    double *nll;          /* n_batch per-row values */
    nb_kld_tok *kt;       /* n_batch (KLD) */
    nb_lpf_writer *w;
    nb_lpf_reader *r;
    double sum_nll, sum_nll2;
    size_t count;
    nb_kld_acc acc;
} run_state;

static const char *hexs(const unsigned char *d, char *buf) {
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 6; i++) { buf[2 * i] = hx[d[i] >> 4]; buf[2 * i + 1] = hx[d[i] & 15]; }
    buf[12] = 0;
    return buf;
}

static bool all_zero(const unsigned char *d) {
    for (int i = 0; i < 32; i++)
        if (d[i]) return false;
    return true;
}

/* Score rows [0, n_rows) of s->logits; row k holds the logits at chunk
 * position pos0 + k and predicts next[k]. */
static nb_status score_rows(run_state *s, const int32_t *next, int n_rows, nb_ctx *ctx) {
    const int nv = s->lm->n_vocab;
    nb_status st = NB_OK;
    if (s->r) {
        NB_TRY(nb_lpf_read(s->r, s->recs, (size_t)n_rows, ctx));
        nb_status bad = NB_OK;
#pragma omp parallel for num_threads(s->n_threads) schedule(static)
        for (int k = 0; k < n_rows; k++) {
            nb_lpf_rec rec;
            if (nb_lpf_decode(s->recs + (size_t)k * s->rec_size, (uint32_t)nv, &rec, NULL) != NB_OK) {
#pragma omp critical(nb_ppl_bad)
                bad = NB_ERR_FORMAT;
                continue;
            }
            nb_kld_token(s->logits + (size_t)k * nv, nv, next[k], &rec, &s->kt[k]);
        }
        if (bad != NB_OK) {
            /* Re-decode serially for the message. */
            for (int k = 0; k < n_rows; k++) {
                nb_lpf_rec rec;
                if (nb_lpf_decode(s->recs + (size_t)k * s->rec_size, (uint32_t)nv, &rec, ctx) != NB_OK)
                    return nb_err_prefix(ctx, "%s: token %zu", s->o->kld_path, s->count + (size_t)k);
            }
            return nb_err(ctx, NB_ERR_FORMAT, "%s: bad record", s->o->kld_path);
        }
        for (int k = 0; k < n_rows; k++) {
            nb_kld_acc_add(&s->acc, &s->kt[k]);
            s->nll[k] = s->kt[k].nll;
        }
    } else if (s->w) {
#pragma omp parallel for num_threads(s->n_threads) schedule(static)
        for (int k = 0; k < n_rows; k++)
            s->nll[k] = s->o->save_format == NB_LPF_LLAMACPP
                            ? nb_lpf_encode_llamacpp(s->logits + (size_t)k * nv, nv, next[k],
                                                     s->recs + (size_t)k * s->rec_size)
                            : nb_lpf_encode(s->logits + (size_t)k * nv, nv, next[k], s->recs + (size_t)k * s->rec_size);
        st = nb_lpf_write(s->w, s->recs, (size_t)n_rows, ctx);
    } else {
#pragma omp parallel for num_threads(s->n_threads) schedule(static)
        for (int k = 0; k < n_rows; k++) s->nll[k] = nb_nll(s->logits + (size_t)k * nv, nv, next[k]);
    }
    for (int k = 0; k < n_rows; k++) { /* in token order: thread-count independent */
        s->sum_nll += s->nll[k];
        s->sum_nll2 += s->nll[k] * s->nll[k];
    }
    s->count += (size_t)n_rows;
    return st;
}

/* Evaluate one chunk (tokens = its n_ctx original tokens) and score its second half. */
static nb_status run_chunk(run_state *s, const int32_t *tokens, int32_t *buf, double *t_eval, nb_ctx *ctx) {
    const nb_ppl_lm *lm = s->lm;
    memcpy(buf, tokens, (size_t)s->n_ctx * sizeof *buf);
    if (s->o->add_bos) buf[0] = s->o->bos;
    lm->reset(lm->user);
    int pos = 0;
    while (pos < s->first) { /* unscored half: no logits */
        int n = s->first - pos < s->n_batch ? s->first - pos : s->n_batch;
        double t0 = nb_now();
        NB_TRY(lm->eval(lm->user, buf + pos, n, pos, NULL, ctx));
        *t_eval += nb_now() - t0;
        pos += n;
    }
    while (pos < s->n_ctx) {
        int n = s->n_ctx - pos < s->n_batch ? s->n_ctx - pos : s->n_batch;
        double t0 = nb_now();
        NB_TRY(lm->eval(lm->user, buf + pos, n, pos, s->logits, ctx));
        *t_eval += nb_now() - t0;
        /* rows predicting a token inside the chunk: positions <= n_ctx - 2 */
        int rows = pos + n <= s->n_ctx - 1 ? n : s->n_ctx - 1 - pos;
        if (rows > 0) NB_TRY(score_rows(s, tokens + pos + 1, rows, ctx));
        pos += n;
    }
    return NB_OK;
}

/* Open the base file and check it against the model, options and text. */
static nb_status open_base(run_state *s, const int32_t *tokens, size_t n_tokens, nb_lpf_header *h,
                           int32_t **ftok, nb_ctx *ctx) {
    const nb_ppl_opts *o = s->o;
    const char *p = o->kld_path;
    NB_TRY(nb_lpf_open(p, h, ftok, &s->r, ctx));
    char a[13], b[13];
    NB_RETURN_IF(ctx, h->n_vocab != (uint32_t)s->lm->n_vocab, NB_ERR_RANGE,
                 "%s: base log-probs have a vocabulary of %u tokens, this model %d: not the same model family",
                 p, h->n_vocab, s->lm->n_vocab);
    if (o->vocab_sha && !all_zero(h->vocab_sha) && !all_zero(o->vocab_sha))
        NB_RETURN_IF(ctx, memcmp(o->vocab_sha, h->vocab_sha, 32) != 0, NB_ERR_RANGE,
                     "%s: base vocabulary hash %s... differs from this model's %s...: not the same tokenizer", p,
                     hexs(h->vocab_sha, a), hexs(o->vocab_sha, b));
    NB_RETURN_IF(ctx, o->n_ctx && (uint32_t)o->n_ctx != h->n_ctx, NB_ERR_RANGE,
                 "%s: base log-probs were computed with --ctx %u, not %d", p, h->n_ctx, o->n_ctx);
    /* a llama.cpp file does not say; llama-perplexity uses the scoring model's BOS */
    const bool llamacpp = h->format == NB_LPF_LLAMACPP;
    NB_RETURN_IF(ctx, !llamacpp && (h->bos_replaced != o->add_bos || (o->add_bos && h->bos != o->bos)), NB_ERR_RANGE,
                 "%s: base run %s BOS %d, this model %s BOS %d: not the same tokenizer", p,
                 h->bos_replaced ? "adds" : "does not add", h->bos, o->add_bos ? "adds" : "does not add", o->bos);
    NB_RETURN_IF(ctx, (int64_t)h->n_ctx > s->lm->n_ctx_max, NB_ERR_RANGE,
                 "%s: base n_ctx %u exceeds this model's context %d", p, h->n_ctx, s->lm->n_ctx_max);
    if (tokens) {
        uint64_t need = (uint64_t)h->n_chunk * h->n_ctx;
        unsigned char sha[32];
        if (n_tokens >= need) nb_lpf_tokens_hash(tokens, (size_t)need, sha);
        /* a llama.cpp file holds only the evaluated tokens: they must begin this text */
        const bool len_ok = llamacpp ? n_tokens >= need : n_tokens == h->n_text_tokens;
        NB_RETURN_IF(ctx, !len_ok || memcmp(sha, h->tokens_sha, 32) != 0, NB_ERR_RANGE,
                     "%s: base log-probs were computed on a different text or tokenization (%llu tokens, hash "
                     "%s...; this text: %zu tokens)",
                     p, (unsigned long long)h->n_text_tokens, hexs(h->tokens_sha, a), n_tokens);
    }
    return NB_OK;
}

nb_status nb_ppl_run(const nb_ppl_lm *lm, const int32_t *tokens, size_t n_tokens, const nb_ppl_opts *o,
                     nb_ppl_result *res, nb_ctx *ctx) {
    memset(res, 0, sizeof *res);
    run_state s = {0};
    s.lm = lm;
    s.o = o;
    const double t_start = nb_now();
    double t_eval = 0;
    nb_status st = NB_OK;
    int32_t *ftok = NULL, *buf = NULL;
    NB_RETURN_IF(ctx, o->save_path && o->kld_path, NB_ERR_INVALID,
                 "--save-logits and --kld cannot be combined (save from the base model, compare the others)");
    NB_RETURN_IF(ctx, lm->n_vocab < 1, NB_ERR_INVALID, "model has no vocabulary");
    NB_RETURN_IF(ctx, o->add_bos && (o->bos < 0 || o->bos >= lm->n_vocab), NB_ERR_INVALID,
                 "BOS id %d outside the vocabulary (%d)", o->bos, lm->n_vocab);
    NB_RETURN_IF(ctx, !tokens && !o->kld_path, NB_ERR_INVALID, "no tokens to score");

    nb_lpf_header h = {0};
    if (o->kld_path) {
        NB_CHECK_GOTO(st, open_base(&s, tokens, n_tokens, &h, &ftok, ctx), done);
        s.n_ctx = (int)h.n_ctx;
        if (!tokens) { tokens = ftok; n_tokens = (size_t)h.n_chunk * h.n_ctx; }
    } else {
        s.n_ctx = o->n_ctx ? o->n_ctx : 512;
    }
    if (s.n_ctx < 4 || s.n_ctx > lm->n_ctx_max || (uint32_t)s.n_ctx > NB_LPF_MAX_CTX)
        NB_FAIL_GOTO(st, done, ctx, NB_ERR_INVALID, "context %d out of range (4 .. %d)", s.n_ctx,
                     lm->n_ctx_max < (int)NB_LPF_MAX_CTX ? lm->n_ctx_max : (int)NB_LPF_MAX_CTX);
    if (n_tokens < 2 * (size_t)s.n_ctx)
        NB_FAIL_GOTO(st, done, ctx, NB_ERR_RANGE,
                     "the text tokenizes to only %zu tokens; perplexity with --ctx %d needs at least %d "
                     "(2 x n_ctx): use a longer text or a smaller --ctx",
                     n_tokens, s.n_ctx, 2 * s.n_ctx);
    size_t n_chunk = n_tokens / (size_t)s.n_ctx;
    if (o->kld_path) n_chunk = h.n_chunk;
    if (o->n_chunks > 0 && (size_t)o->n_chunks < n_chunk) n_chunk = (size_t)o->n_chunks;
    if (n_chunk > (size_t)1 << 30) NB_FAIL_GOTO(st, done, ctx, NB_ERR_RANGE, "too many chunks (%zu)", n_chunk);
    s.n_batch = o->n_batch > 0 && o->n_batch < s.n_ctx ? o->n_batch : s.n_ctx;
    s.first = s.n_ctx / 2;
    s.n_scored = s.n_ctx - 1 - s.first;
    s.n_threads = o->n_threads > 0 ? o->n_threads : nb_ctx_threads(ctx);
    /* records in the buffer: the saved file's layout, or nibble's (what the reader returns) */
    s.rec_size = o->save_path && o->save_format == NB_LPF_LLAMACPP ? nb_lpf_llamacpp_rec_size((uint32_t)lm->n_vocab)
                                                                   : nb_lpf_rec_size((uint32_t)lm->n_vocab);

    const size_t nb = (size_t)s.n_batch, nv = (size_t)lm->n_vocab;
    uint64_t lbytes;
    if (!nb_mul_u64(nb, nv, &lbytes) || !nb_mul_u64(lbytes, sizeof(float), &lbytes) || lbytes > SIZE_MAX / 2)
        NB_FAIL_GOTO(st, done, ctx, NB_ERR_RANGE, "batch %zu x vocabulary %zu is too large", nb, nv);
    s.logits = nb_malloc(ctx, (size_t)lbytes, "logits buffer");
    s.nll = nb_malloc(ctx, nb * sizeof *s.nll, "per-token values");
    buf = nb_malloc(ctx, (size_t)s.n_ctx * sizeof *buf, "chunk tokens");
    res->chunk_ppl = nb_calloc(ctx, n_chunk, sizeof *res->chunk_ppl, "per-chunk PPL");
    if (!s.logits || !s.nll || !buf || !res->chunk_ppl) { st = NB_ERR_NOMEM; goto done; }
    if (o->save_path || o->kld_path) {
        s.recs = nb_malloc(ctx, nb * s.rec_size, "log-prob records");
        if (!s.recs) { st = NB_ERR_NOMEM; goto done; }
    }
    if (o->kld_path) {
        s.kt = nb_malloc(ctx, nb * sizeof *s.kt, "KLD values");
        if (!s.kt) { st = NB_ERR_NOMEM; goto done; }
        NB_CHECK_GOTO(st, nb_kld_acc_init(&s.acc, n_chunk * (size_t)s.n_scored, ctx), done);
    }
    if (o->save_path) {
        nb_lpf_header wh = {0};
        wh.format = o->save_format;
        wh.n_vocab = (uint32_t)lm->n_vocab;
        wh.n_ctx = (uint32_t)s.n_ctx;
        wh.n_chunk = (uint32_t)n_chunk;
        wh.n_scored = (uint32_t)s.n_scored;
        wh.bos_replaced = o->add_bos;
        wh.bos = o->add_bos ? o->bos : -1;
        wh.n_text_tokens = n_tokens;
        if (o->vocab_sha) memcpy(wh.vocab_sha, o->vocab_sha, 32);
        NB_CHECK_GOTO(st, nb_lpf_create(o->save_path, &wh, tokens, &s.w, ctx), done);
    }

    for (size_t i = 0; i < n_chunk; i++) {
        NB_CHECK_GOTO(st, run_chunk(&s, tokens + i * (size_t)s.n_ctx, buf, &t_eval, ctx), done);
        double ppl, err;
        nb_ppl_estimate(s.sum_nll, s.sum_nll2, s.count, &ppl, &err);
        res->chunk_ppl[i] = ppl;
        if (o->on_chunk) {
            nb_ppl_progress p = {(int)i + 1, (int)n_chunk, ppl, o->kld_path != NULL, 0, 0, 0, 0, nb_now() - t_start};
            if (p.kld) {
                double dn = (double)s.acc.count;
                p.kld_mean = s.acc.sum_kld / dn;
                p.ln_ratio = (s.acc.sum_nll - s.acc.sum_nll_base) / dn;
                p.dp_rms = sqrt(s.acc.sum_dp2 / dn);
                p.same_top = (double)s.acc.n_same_top / dn;
            }
            o->on_chunk(o->user, &p);
        }
    }
    if (s.w) {
        nb_lpf_writer *w = s.w;
        s.w = NULL;
        NB_CHECK_GOTO(st, nb_lpf_commit(w, ctx), done);
    }
    if (s.r && n_chunk == h.n_chunk) NB_CHECK_GOTO(st, nb_lpf_finish(s.r, ctx), done);

    res->n_ctx = s.n_ctx;
    res->n_chunk = (int)n_chunk;
    res->n_batch = s.n_batch;
    res->n_text_tokens = o->kld_path ? (size_t)h.n_text_tokens : n_tokens;
    res->n_scored = s.count;
    nb_ppl_estimate(s.sum_nll, s.sum_nll2, s.count, &res->ppl, &res->ppl_err);
    res->nll_mean = s.count ? s.sum_nll / (double)s.count : 0;
    if (o->kld_path) {
        res->has_kld = true;
        NB_CHECK_GOTO(st, nb_kld_stats_compute(&s.acc, &res->kld, ctx), done);
    }
    res->seconds_eval = t_eval;
    res->seconds = nb_now() - t_start;
done:
    nb_lpf_abort(s.w);
    nb_lpf_close(s.r);
    nb_kld_acc_free(&s.acc);
    free(s.logits);
    free(s.recs);
    free(s.nll);
    free(s.kt);
    free(buf);
    free(ftok);
    if (st != NB_OK) nb_ppl_result_free(res);
    return st;
}

void nb_ppl_result_free(nb_ppl_result *r) {
    if (!r) return;
    free(r->chunk_ppl);
    r->chunk_ppl = NULL;
}

/* ---- JSON ---------------------------------------------------------------------------- */

static void add_pct(cJSON *o, const char *name, const double *v, const double *at, int n, double mult) {
    cJSON *p = cJSON_AddObjectToObject(o, name);
    if (!p) return;
    for (int i = 0; i < n; i++) {
        char key[16];
        if (at[i] >= 1.0) snprintf(key, sizeof key, "max");
        else if (at[i] <= 0.0) snprintf(key, sizeof key, "min");
        else if (at[i] == 0.5) snprintf(key, sizeof key, "median");
        else snprintf(key, sizeof key, "p%g", at[i] * 100.0);
        cJSON_AddNumberToObject(p, key, v[i] * mult);
    }
}

char *nb_ppl_result_json(const nb_ppl_result *r) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "n_ctx", r->n_ctx);
    cJSON_AddNumberToObject(o, "n_chunk", r->n_chunk);
    cJSON_AddNumberToObject(o, "n_batch", r->n_batch);
    cJSON_AddNumberToObject(o, "n_text_tokens", (double)r->n_text_tokens);
    cJSON_AddNumberToObject(o, "n_scored", (double)r->n_scored);
    cJSON_AddNumberToObject(o, "ppl", r->ppl);
    cJSON_AddNumberToObject(o, "ppl_err", r->ppl_err);
    cJSON_AddNumberToObject(o, "nll_mean", r->nll_mean);
    cJSON *c = cJSON_AddArrayToObject(o, "chunk_ppl");
    for (int i = 0; c && i < r->n_chunk; i++) cJSON_AddItemToArray(c, cJSON_CreateNumber(r->chunk_ppl[i]));
    cJSON_AddNumberToObject(o, "seconds", r->seconds);
    cJSON_AddNumberToObject(o, "seconds_eval", r->seconds_eval);
    cJSON_AddNumberToObject(o, "tokens_per_second",
                            r->seconds_eval > 0 ? (double)r->n_chunk * r->n_ctx / r->seconds_eval : 0.0);
    if (r->has_kld) {
        const nb_kld_stats *k = &r->kld;
        cJSON *j = cJSON_AddObjectToObject(o, "kld");
        if (j) {
            cJSON_AddNumberToObject(j, "count", (double)k->count);
            cJSON_AddNumberToObject(j, "ppl_q", k->ppl_q);
            cJSON_AddNumberToObject(j, "ppl_q_err", k->ppl_q_err);
            cJSON_AddNumberToObject(j, "ppl_base", k->ppl_base);
            cJSON_AddNumberToObject(j, "ppl_base_err", k->ppl_base_err);
            cJSON_AddNumberToObject(j, "cor_ln_ppl", k->cor);
            cJSON_AddNumberToObject(j, "ln_ppl_ratio", k->ln_ratio);
            cJSON_AddNumberToObject(j, "ln_ppl_ratio_err", k->ln_ratio_err);
            cJSON_AddNumberToObject(j, "ppl_ratio", k->ppl_ratio);
            cJSON_AddNumberToObject(j, "ppl_ratio_err", k->ppl_ratio_err);
            cJSON_AddNumberToObject(j, "ppl_diff", k->ppl_diff);
            cJSON_AddNumberToObject(j, "ppl_diff_err", k->ppl_diff_err);
            cJSON_AddNumberToObject(j, "kld_mean", k->kld);
            cJSON_AddNumberToObject(j, "kld_err", k->kld_err);
            add_pct(j, "kld_percentiles", k->kld_pct, nb_kld_pct_at, NB_KLD_NPCT, 1.0);
            char *hj = nb_kld_hist_json(k->kld_hist);
            cJSON *h = hj ? cJSON_Parse(hj) : NULL;
            free(hj);
            if (h) cJSON_AddItemToObject(j, "kld_histogram", h);
            cJSON_AddNumberToObject(j, "dp_mean_pct", 100.0 * k->dp);
            cJSON_AddNumberToObject(j, "dp_err_pct", 100.0 * k->dp_err);
            cJSON_AddNumberToObject(j, "dp_rms_pct", 100.0 * k->dp_rms);
            cJSON_AddNumberToObject(j, "dp_rms_err_pct", 100.0 * k->dp_rms_err);
            add_pct(j, "dp_percentiles_pct", k->dp_pct, nb_dp_pct_at, NB_DP_NPCT, 100.0);
            cJSON_AddNumberToObject(j, "same_top_p_pct", 100.0 * k->same_top);
            cJSON_AddNumberToObject(j, "same_top_p_err_pct", 100.0 * k->same_top_err);
        }
    }
    char *s = nb_json_print(o, false);
    cJSON_Delete(o);
    return s;
}
