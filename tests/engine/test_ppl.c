/* engine/ppl: perplexity method, KL-divergence statistics, log-prob file and
 * sampler, on synthetic language models (no engine needed).
 *
 * The fake model's logits depend on the current token, its position and the
 * token the chunk started with (a stand-in for the KV cache), so a driver
 * that forgot to reset, to put BOS first, or that scored the wrong positions
 * gets a different number from the independent reference computed here. */
#include "core/sha256.h"
#include "engine/logits_file.h"
#include "engine/ppl.h"
#include "engine/sample.h"
#include "formats/synth.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the fake model ----------------------------------------------------------- */

typedef struct fake_lm {
    int n_vocab, n_ctx_max;
    double seed, noise; /* noise: a "quantized" variant of the same model */
    int next_pos;       /* contract check: eval positions are contiguous from a reset */
    int32_t first;      /* token at position 0 since the reset */
    int calls, fail_at; /* fail_at > 0: the fail_at-th eval call fails */
    int violations;
} fake_lm;

static double fake_logit(const fake_lm *f, int32_t tok, int pos, int32_t first, int v) {
    uint64_t h = (uint64_t)tok * 0x9E3779B97F4A7C15ull ^ (uint64_t)v * 0xC2B2AE3D27D4EB4Full ^ (uint64_t)pos * 0x165667B19E3779F9ull;
    h ^= h >> 29; h *= 0xBF58476D1CE4E5B9ull; h ^= h >> 32;
    double u = (double)(h >> 11) / 9007199254740992.0 - 0.5;
    double x = 3.0 * sin(0.37 * tok * (v + 1) + 0.05 * first + f->seed) + 0.01 * pos * cos(v);
    if (v % 7 == 0) x -= 25.0; /* far below the rest: exercises the -16 cut */
    return x + f->noise * u;
}

static void fake_reset(void *u) {
    fake_lm *f = u;
    f->next_pos = 0;
    f->first = -1;
}

static nb_status fake_eval(void *u, const int32_t *tokens, int n, int pos, float *logits, nb_ctx *ctx) {
    fake_lm *f = u;
    f->calls++;
    if (f->fail_at && f->calls == f->fail_at) return nb_err(ctx, NB_ERR_IO, "fake failure");
    if (pos != f->next_pos || n < 1 || pos + n > f->n_ctx_max) f->violations++;
    if (pos == 0) f->first = tokens[0];
    for (int k = 0; k < n; k++)
        if (logits)
            for (int v = 0; v < f->n_vocab; v++)
                logits[(size_t)k * f->n_vocab + v] = (float)fake_logit(f, tokens[k], pos + k, f->first, v);
    f->next_pos = pos + n;
    return NB_OK;
}

static nb_ppl_lm lm_of(fake_lm *f) {
    nb_ppl_lm lm = {f->n_vocab, f->n_ctx_max, f, fake_reset, fake_eval};
    return lm;
}

static fake_lm fake(int n_vocab, double seed, double noise) {
    fake_lm f = {n_vocab, 4096, seed, noise, 0, -1, 0, 0, 0};
    return f;
}

static int32_t *random_tokens(size_t n, int n_vocab, uint64_t seed, int32_t bos) {
    int32_t *t = malloc(n * sizeof *t);
    ck_assert_ptr_nonnull(t);
    for (size_t i = 0; i < n; i++) t[i] = (int32_t)(nbt_rand_u64(&seed) % (uint64_t)n_vocab);
    if (bos >= 0) t[0] = bos;
    return t;
}

/* Reference log-softmax of the fake model's float logits, in long double. */
static void ref_logprobs(const fake_lm *f, int32_t tok, int pos, int32_t first, long double *lp) {
    float *l = malloc((size_t)f->n_vocab * sizeof *l);
    ck_assert_ptr_nonnull(l);
    float mx = -INFINITY;
    for (int v = 0; v < f->n_vocab; v++) {
        l[v] = (float)fake_logit(f, tok, pos, first, v);
        if (l[v] > mx) mx = l[v];
    }
    long double s = 0;
    for (int v = 0; v < f->n_vocab; v++) s += expl((long double)l[v] - mx);
    for (int v = 0; v < f->n_vocab; v++) lp[v] = (long double)l[v] - mx - logl(s);
    free(l);
}

/* Per scored token of llama-perplexity's method, computed directly: chunk c,
 * positions first..n_ctx-2 predict the next token; position 0 holds BOS. */
typedef struct ref_tok { long double nll, nll_base, kld; double dp; int same_top; } ref_tok;

static size_t ref_scores(const fake_lm *q, const fake_lm *base, const int32_t *tokens, size_t n_tokens, int n_ctx,
                         int n_chunks, bool add_bos, int32_t bos, ref_tok **out) {
    size_t n_chunk = n_tokens / (size_t)n_ctx;
    if (n_chunks > 0 && (size_t)n_chunks < n_chunk) n_chunk = (size_t)n_chunks;
    int first = n_ctx / 2;
    ref_tok *r = calloc(n_chunk * (size_t)n_ctx, sizeof *r);
    long double *lq = malloc((size_t)q->n_vocab * sizeof *lq), *lb = malloc((size_t)q->n_vocab * sizeof *lb);
    ck_assert(r && lq && lb);
    size_t k = 0;
    for (size_t c = 0; c < n_chunk; c++) {
        const int32_t *t = tokens + c * (size_t)n_ctx;
        int32_t t0 = add_bos ? bos : t[0];
        for (int j = first; j < n_ctx - 1; j++, k++) {
            ref_logprobs(q, t[j], j, t0, lq);
            int32_t nx = t[j + 1];
            r[k].nll = -lq[nx];
            if (!base) continue;
            ref_logprobs(base, t[j], j, t0, lb);
            r[k].nll_base = -lb[nx];
            int aq = 0, ab = 0;
            for (int v = 0; v < q->n_vocab; v++) {
                if (lq[v] > lq[aq]) aq = v;
                if (lb[v] > lb[ab]) ab = v;
                if (lb[v] > -16.0L) r[k].kld += expl(lb[v]) * (lb[v] - lq[v]);
            }
            r[k].same_top = aq == ab;
            r[k].dp = (double)(expl(lq[nx]) - expl(lb[nx]));
        }
    }
    free(lq);
    free(lb);
    *out = r;
    return k;
}

static nb_ppl_opts opts(int n_ctx, bool add_bos, int32_t bos) {
    nb_ppl_opts o = {0};
    o.n_ctx = n_ctx;
    o.add_bos = add_bos;
    o.bos = bos;
    o.n_threads = 1;
    return o;
}

/* ---- tests ------------------------------------------------------------------- */

START_TEST(nll_matches_reference) {
    uint64_t st = 7;
    float l[1000];
    for (int trial = 0; trial < 20; trial++) {
        double off = trial * 1000.0; /* shift invariance at large magnitudes */
        for (int v = 0; v < 1000; v++) l[v] = (float)(off + 5.0 * nbt_rand_normal(&st));
        int tok = (int)(nbt_rand_u64(&st) % 1000);
        long double mx = l[0], s = 0;
        for (int v = 1; v < 1000; v++) if (l[v] > mx) mx = l[v];
        for (int v = 0; v < 1000; v++) s += expl(l[v] - mx);
        long double ref = logl(s) - (l[tok] - mx);
        double got = nb_nll(l, 1000, tok);
        ck_assert_msg(fabsl(got - ref) < 1e-9L * (1 + fabsl(ref)), "trial %d: %.12f vs %.12Lf", trial, got, ref);
    }
}
END_TEST

START_TEST(ppl_method_matches_reference) {
    fake_lm f = fake(97, 0.3, 0.0);
    nb_ppl_lm lm = lm_of(&f);
    const int n_ctx = 64;
    const size_t n = 5 * 64 + 17; /* tail of 17 tokens is dropped */
    const int32_t bos = 2;
    int32_t *tok = random_tokens(n, f.n_vocab, 11, bos);
    double ppl_by_bos[2];
    for (int add_bos = 0; add_bos <= 1; add_bos++) {
        nb_ppl_opts o = opts(n_ctx, add_bos, bos);
        nb_ppl_result r;
        nb_ctx ctx;
        nbt_ctx(&ctx);
        f.violations = 0;
        ck_assert_int_eq(nb_ppl_run(&lm, tok, n, &o, &r, &ctx), NB_OK);
        ck_assert_int_eq(f.violations, 0);
        ck_assert_int_eq(r.n_chunk, 5);
        ck_assert_uint_eq(r.n_scored, 5u * (64 - 1 - 32));
        ref_tok *ref;
        size_t nr = ref_scores(&f, NULL, tok, n, n_ctx, 0, add_bos, bos, &ref);
        ck_assert_uint_eq(nr, r.n_scored);
        long double s = 0, s2 = 0;
        size_t per = (size_t)(n_ctx - 1 - n_ctx / 2);
        for (size_t i = 0; i < nr; i++) {
            s += ref[i].nll;
            s2 += ref[i].nll * ref[i].nll;
            if ((i + 1) % per == 0) { /* running PPL after each chunk */
                double want = (double)expl(s / (long double)(i + 1));
                ck_assert_msg(fabs(r.chunk_ppl[i / per] - want) < 1e-9 * want, "chunk %zu", i / per);
            }
        }
        long double m = s / nr, var = s2 / nr - m * m;
        double ppl = (double)expl(m), err = (double)(sqrtl(var / (nr - 1)) * expl(m));
        ck_assert_msg(fabs(r.ppl - ppl) < 1e-9 * ppl, "PPL %.10f vs %.10f", r.ppl, ppl);
        ck_assert_msg(fabs(r.ppl_err - err) < 1e-6 * err, "err %.10f vs %.10f", r.ppl_err, err);
        ppl_by_bos[add_bos] = r.ppl;
        free(ref);
        nb_ppl_result_free(&r);
        nb_ctx_free(&ctx);
    }
    /* the BOS rule matters (the fake model remembers the chunk's first token) */
    ck_assert_msg(ppl_by_bos[0] != ppl_by_bos[1], "BOS replacement had no effect");
    free(tok);
}
END_TEST

START_TEST(ppl_independent_of_batch_and_threads) {
    fake_lm f = fake(131, 1.1, 0.0);
    nb_ppl_lm lm = lm_of(&f);
    size_t n = 4 * 48 + 3;
    int32_t *tok = random_tokens(n, f.n_vocab, 5, 1);
    double first_ppl = 0, first_err = 0;
    const int batches[] = {0, 7, 24, 25, 48};
    for (int bi = 0; bi < 5; bi++)
        for (int th = 1; th <= 3; th++) {
            nb_ppl_opts o = opts(48, true, 1);
            o.n_batch = batches[bi];
            o.n_threads = th;
            o.n_chunks = 3;
            nb_ppl_result r;
            nb_ctx ctx;
            nbt_ctx(&ctx);
            f.violations = 0;
            ck_assert_int_eq(nb_ppl_run(&lm, tok, n, &o, &r, &ctx), NB_OK);
            ck_assert_int_eq(f.violations, 0);
            ck_assert_int_eq(r.n_chunk, 3);
            if (bi == 0 && th == 1) { first_ppl = r.ppl; first_err = r.ppl_err; }
            ck_assert_msg(memcmp(&r.ppl, &first_ppl, sizeof(double)) == 0 &&
                              memcmp(&r.ppl_err, &first_err, sizeof(double)) == 0,
                          "batch %d threads %d: %.17g vs %.17g", batches[bi], th, r.ppl, first_ppl);
            nb_ppl_result_free(&r);
            nb_ctx_free(&ctx);
        }
    free(tok);
}
END_TEST

START_TEST(too_short_text_is_refused) {
    fake_lm f = fake(50, 0, 0);
    nb_ppl_lm lm = lm_of(&f);
    int32_t *tok = random_tokens(2 * 64 - 1, 50, 3, 1);
    nb_ppl_opts o = opts(64, true, 1);
    nb_ppl_result r;
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ck_assert_int_eq(nb_ppl_run(&lm, tok, 2 * 64 - 1, &o, &r, &ctx), NB_ERR_RANGE);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "127 tokens") && strstr(nb_errmsg(&ctx), "at least 128"), "%s",
                  nb_errmsg(&ctx));
    /* exactly 2 x n_ctx is enough */
    ck_assert_int_eq(nb_ppl_run(&lm, tok, 2 * 64 - 1 + 0, &(nb_ppl_opts){.n_ctx = 63, .add_bos = true, .bos = 1},
                                &r, &ctx), NB_OK);
    ck_assert_int_eq(r.n_chunk, 2);
    nb_ppl_result_free(&r);
    /* a context the model cannot hold */
    f.n_ctx_max = 32;
    lm = lm_of(&f);
    ck_assert_int_eq(nb_ppl_run(&lm, tok, 127, &o, &r, &ctx), NB_ERR_INVALID);
    nb_ctx_free(&ctx);
    free(tok);
}
END_TEST

/* Save base log-probs with model `base`, score model `q` against them. */
static nb_status save_and_compare(fake_lm *base, fake_lm *q, const int32_t *tok, size_t n, int n_ctx, int threads,
                                  const char *file, nb_ppl_result *rb, nb_ppl_result *rq, nb_ctx *ctx) {
    nb_ppl_opts o = opts(n_ctx, true, 1);
    o.save_path = file;
    o.n_threads = threads;
    nb_ppl_lm lb = lm_of(base), lq = lm_of(q);
    NB_TRY(nb_ppl_run(&lb, tok, n, &o, rb, ctx));
    o.save_path = NULL;
    o.kld_path = file;
    return nb_ppl_run(&lq, tok, n, &o, rq, ctx);
}

START_TEST(kld_against_itself_is_zero) {
    fake_lm a = fake(211, 0.7, 0.0), b = a;
    size_t n = 6 * 40;
    int32_t *tok = random_tokens(n, a.n_vocab, 9, 1);
    nb_ppl_result rb, rq;
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ck_assert_int_eq(save_and_compare(&a, &b, tok, n, 40, 2, nbt_path("self.bin"), &rb, &rq, &ctx), NB_OK);
    ck_assert(rq.has_kld);
    const nb_kld_stats *k = &rq.kld;
    ck_assert_uint_eq(k->count, 6u * 19);
    ck_assert_msg(fabs(k->kld) < 1e-4 && k->kld_pct[0] < 5e-4, "mean %g max %g", k->kld, k->kld_pct[0]);
    ck_assert_msg(k->same_top == 1.0, "same top %g", k->same_top);
    ck_assert_msg(fabs(k->ppl_q - k->ppl_base) < 1e-5 * k->ppl_q, "%g vs %g", k->ppl_q, k->ppl_base);
    ck_assert_msg(fabs(k->ppl_q - rb.ppl) < 1e-9 * rb.ppl, "PPL(Q) %g vs base run %g", k->ppl_q, rb.ppl);
    ck_assert_msg(k->cor > 0.99999, "cor %g", k->cor);
    ck_assert_msg(fabs(k->dp) < 1e-5 && k->dp_rms < 1e-5, "dp %g rms %g", k->dp, k->dp_rms);
    nb_ppl_result_free(&rb);
    nb_ppl_result_free(&rq);
    nb_ctx_free(&ctx);
    free(tok);
}
END_TEST

static int cmp_ld(const void *a, const void *b) {
    long double x = *(const long double *)a, y = *(const long double *)b;
    return (x > y) - (x < y);
}

START_TEST(kld_statistics_match_reference) {
    fake_lm a = fake(301, 0.2, 0.0), b = fake(301, 0.2, 1.5); /* b: a with noise on every logit */
    const int n_ctx = 32;
    size_t n = 9 * 32 + 5;
    int32_t *tok = random_tokens(n, a.n_vocab, 21, 1);
    nb_ppl_result rb, rq;
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ck_assert_int_eq(save_and_compare(&a, &b, tok, n, n_ctx, 3, nbt_path("kld.bin"), &rb, &rq, &ctx), NB_OK);
    ref_tok *ref;
    size_t nr = ref_scores(&b, &a, tok, n, n_ctx, 0, true, 1, &ref);
    const nb_kld_stats *k = &rq.kld;
    ck_assert_uint_eq(k->count, nr);
    long double skld = 0, sq = 0, sb = 0, sq2 = 0, sb2 = 0, sqb = 0, sdp = 0, sdp2 = 0;
    size_t same = 0;
    long double *kv = malloc(nr * sizeof *kv);
    ck_assert_ptr_nonnull(kv);
    for (size_t i = 0; i < nr; i++) {
        skld += ref[i].kld;
        kv[i] = ref[i].kld;
        sq += ref[i].nll; sq2 += ref[i].nll * ref[i].nll;
        sb += ref[i].nll_base; sb2 += ref[i].nll_base * ref[i].nll_base;
        sqb += ref[i].nll * ref[i].nll_base;
        sdp += ref[i].dp; sdp2 += (long double)ref[i].dp * ref[i].dp;
        same += (size_t)ref[i].same_top;
    }
    double mean_kld = (double)(skld / nr);
    ck_assert_msg(mean_kld > 0.05, "the noise should make a visible KLD (%g)", mean_kld);
    /* 16-bit log-probs: each entry within 16/65535/2 of the truth */
    ck_assert_msg(fabs(k->kld - mean_kld) < 2e-4, "KLD %.6f vs %.6f", k->kld, mean_kld);
    qsort(kv, nr, sizeof *kv, cmp_ld);
    ck_assert_msg(fabs(k->kld_pct[0] - (double)kv[nr - 1]) < 3e-4, "max %g vs %Lg", k->kld_pct[0], kv[nr - 1]);
    ck_assert_msg(fabs(k->kld_pct[NB_KLD_NPCT - 1] - (double)kv[0]) < 3e-4, "min");
    double med = nr % 2 ? (double)kv[nr / 2] : (double)(kv[nr / 2] + kv[nr / 2 - 1]) / 2;
    ck_assert_msg(fabs(k->kld_pct[5] - med) < 3e-4, "median %g vs %g", k->kld_pct[5], med);
    ck_assert_msg(k->same_top == (double)same / (double)nr, "same top %g vs %g", k->same_top, (double)same / (double)nr);
    ck_assert_msg(same < nr, "noise should flip some argmaxes");
    double ppl_b = (double)expl(sb / nr), ppl_q = (double)expl(sq / nr);
    ck_assert_msg(fabs(k->ppl_base - ppl_b) < 1e-5 * ppl_b, "PPL(base) %g vs %g", k->ppl_base, ppl_b);
    ck_assert_msg(fabs(k->ppl_q - ppl_q) < 1e-9 * ppl_q, "PPL(Q) %g vs %g", k->ppl_q, ppl_q);
    ck_assert_msg(fabs(k->ln_ratio - (double)((sq - sb) / nr)) < 1e-6, "ln ratio");
    /* Pearson correlation of the per-token nll's */
    long double cov = sqb / nr - (sq / nr) * (sb / nr), vq = sq2 / nr - (sq / nr) * (sq / nr),
                vb = sb2 / nr - (sb / nr) * (sb / nr);
    double cor = (double)(cov / sqrtl(vq * vb));
    ck_assert_msg(fabs(k->cor - cor) < 1e-5, "cor %g vs %g", k->cor, cor);
    ck_assert_msg(fabs(k->dp - (double)(sdp / nr)) < 1e-6, "dp %g", k->dp);
    ck_assert_msg(fabs(k->dp_rms - (double)sqrtl(sdp2 / nr)) < 1e-6, "rms dp %g", k->dp_rms);
    /* base run's PPL equals what the KLD run reports as PPL(base) */
    ck_assert_msg(fabs(rb.ppl - k->ppl_base) < 1e-5 * rb.ppl, "base run %g", rb.ppl);
    /* JSON carries the numbers */
    char *js = nb_ppl_result_json(&rq);
    ck_assert_ptr_nonnull(js);
    ck_assert(strstr(js, "\"kld_mean\"") && strstr(js, "\"same_top_p_pct\"") && strstr(js, "\"p99.9\"") &&
              strstr(js, "\"cor_ln_ppl\""));
    free(js);
    free(kv);
    free(ref);
    nb_ppl_result_free(&rb);
    nb_ppl_result_free(&rq);
    nb_ctx_free(&ctx);
    free(tok);
}
END_TEST

START_TEST(kld_thread_independent) {
    fake_lm a = fake(150, 0.9, 0.0), b = fake(150, 0.9, 0.8);
    size_t n = 4 * 30;
    int32_t *tok = random_tokens(n, a.n_vocab, 4, 1);
    nb_kld_stats s1 = {0};
    unsigned char *f1 = NULL;
    size_t n1 = 0;
    for (int th = 1; th <= 3; th++) {
        nb_ppl_result rb, rq;
        nb_ctx ctx;
        nbt_ctx(&ctx);
        char name[32];
        snprintf(name, sizeof name, "th%d.bin", th);
        ck_assert_int_eq(save_and_compare(&a, &b, tok, n, 30, th, nbt_path(name), &rb, &rq, &ctx), NB_OK);
        size_t nf;
        unsigned char *fb = nbt_read_file(nbt_path(name), &nf);
        ck_assert_ptr_nonnull(fb);
        if (th == 1) { s1 = rq.kld; f1 = fb; n1 = nf; }
        else {
            ck_assert_msg(memcmp(&s1, &rq.kld, sizeof s1) == 0, "threads %d: statistics differ", th);
            ck_assert_msg(nf == n1 && memcmp(fb, f1, nf) == 0, "threads %d: saved file differs", th);
            free(fb);
        }
        nb_ppl_result_free(&rb);
        nb_ppl_result_free(&rq);
        nb_ctx_free(&ctx);
    }
    free(f1);
    free(tok);
}
END_TEST

START_TEST(kld_refuses_mismatches) {
    fake_lm a = fake(120, 0.1, 0.0);
    size_t n = 3 * 32;
    int32_t *tok = random_tokens(n, a.n_vocab, 8, 1);
    const char *file = nbt_path("base.bin");
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_ppl_result r;
    unsigned char vs[32];
    memset(vs, 0xab, 32);
    nb_ppl_opts o = opts(32, true, 1);
    o.save_path = file;
    o.vocab_sha = vs;
    nb_ppl_lm la = lm_of(&a);
    ck_assert_int_eq(nb_ppl_run(&la, tok, n, &o, &r, &ctx), NB_OK);
    nb_ppl_result_free(&r);
    ck_assert(nbt_file_exists(file));

    o.save_path = NULL;
    o.kld_path = file;
    /* same everything: fine, also without the text (tokens from the file) */
    ck_assert_int_eq(nb_ppl_run(&la, tok, n, &o, &r, &ctx), NB_OK);
    nb_ppl_result_free(&r);
    ck_assert_int_eq(nb_ppl_run(&la, NULL, 0, &o, &r, &ctx), NB_OK);
    ck_assert_int_eq(r.n_chunk, 3);
    nb_ppl_result_free(&r);
    /* other vocabulary size */
    fake_lm c = fake(121, 0.1, 0.0);
    nb_ppl_lm lc = lm_of(&c);
    ck_assert_int_eq(nb_ppl_run(&lc, NULL, 0, &o, &r, &ctx), NB_ERR_RANGE);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "vocabulary of 120"), "%s", nb_errmsg(&ctx));
    /* other vocabulary contents */
    unsigned char vs2[32];
    memset(vs2, 0xcd, 32);
    o.vocab_sha = vs2;
    ck_assert_int_eq(nb_ppl_run(&la, tok, n, &o, &r, &ctx), NB_ERR_RANGE);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "tokenizer"), "%s", nb_errmsg(&ctx));
    o.vocab_sha = vs;
    /* other text */
    tok[40] = (tok[40] + 1) % a.n_vocab;
    ck_assert_int_eq(nb_ppl_run(&la, tok, n, &o, &r, &ctx), NB_ERR_RANGE);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "different text"), "%s", nb_errmsg(&ctx));
    tok[40] = (tok[40] + a.n_vocab - 1) % a.n_vocab;
    ck_assert_int_eq(nb_ppl_run(&la, tok, n - 1, &o, &r, &ctx), NB_ERR_RANGE);
    /* other context */
    o.n_ctx = 64;
    ck_assert_int_eq(nb_ppl_run(&la, tok, n, &o, &r, &ctx), NB_ERR_RANGE);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "--ctx 32"), "%s", nb_errmsg(&ctx));
    o.n_ctx = 32;
    /* other BOS rule */
    o.add_bos = false;
    ck_assert_int_eq(nb_ppl_run(&la, tok, n, &o, &r, &ctx), NB_ERR_RANGE);
    o.add_bos = true;
    /* both modes at once */
    o.save_path = nbt_path("x.bin");
    ck_assert_int_eq(nb_ppl_run(&la, tok, n, &o, &r, &ctx), NB_ERR_INVALID);
    nb_ctx_free(&ctx);
    free(tok);
}
END_TEST

START_TEST(failed_run_leaves_no_file) {
    fake_lm a = fake(60, 0.1, 0.0);
    a.fail_at = 5;
    size_t n = 4 * 16;
    int32_t *tok = random_tokens(n, a.n_vocab, 8, 1);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_ppl_result r;
    nb_ppl_opts o = opts(16, true, 1);
    o.save_path = nbt_path("fail.bin");
    nb_ppl_lm la = lm_of(&a);
    ck_assert_int_eq(nb_ppl_run(&la, tok, n, &o, &r, &ctx), NB_ERR_IO);
    ck_assert(!nbt_file_exists(nbt_path("fail.bin")));
    ck_assert(!nbt_partial_exists(nbt_path("fail.bin")));
    ck_assert_ptr_null(r.chunk_ppl);
    /* unwritable destination */
    a.fail_at = 0;
    o.save_path = nbt_path("no/such/dir/x.bin");
    ck_assert_int_eq(nb_ppl_run(&la, tok, n, &o, &r, &ctx), NB_ERR_IO);
    nb_ctx_free(&ctx);
    free(tok);
}
END_TEST

/* Write a valid small file and return its bytes. */
static unsigned char *valid_file(const char *path, size_t *len) {
    fake_lm a = fake(40, 0.5, 0.0);
    size_t n = 2 * 16;
    int32_t *tok = random_tokens(n, a.n_vocab, 8, 1);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_ppl_result r;
    nb_ppl_opts o = opts(16, true, 1);
    o.save_path = path;
    nb_ppl_lm la = lm_of(&a);
    ck_assert_int_eq(nb_ppl_run(&la, tok, n, &o, &r, &ctx), NB_OK);
    nb_ppl_result_free(&r);
    nb_ctx_free(&ctx);
    free(tok);
    unsigned char *b = nbt_read_file(path, len);
    ck_assert_ptr_nonnull(b);
    return b;
}

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v) {
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

/* Recompute the header check field (logits_file.h: sha256 of the header with it zeroed). */
static void reseal(unsigned char *hdr) {
    unsigned char d[32];
    put32(hdr + 36, 0);
    nb_sha256 s;
    nb_sha256_init(&s);
    nb_sha256_update(&s, hdr, NB_LPF_HEADER_SIZE);
    nb_sha256_final(&s, d);
    memcpy(hdr + 36, d, 4);
}

/* Open + read every record + finish; the status of the first failure, and a
 * digest of everything decoded. */
static nb_status read_all_digest(const char *path, unsigned char digest[32], nb_ctx *ctx) {
    nb_lpf_header h;
    int32_t *tok;
    nb_lpf_reader *r;
    NB_TRY(nb_lpf_open(path, &h, &tok, &r, ctx));
    nb_sha256 sh;
    nb_sha256_init(&sh);
    nb_sha256_update(&sh, &h, sizeof h);
    nb_sha256_update(&sh, tok, (size_t)h.n_chunk * h.n_ctx * sizeof *tok);
    free(tok);
    size_t rs = nb_lpf_rec_size(h.n_vocab);
    unsigned char *buf = malloc(rs);
    nb_status st = NB_OK;
    for (uint64_t i = 0; st == NB_OK && i < (uint64_t)h.n_chunk * h.n_scored; i++) {
        st = nb_lpf_read(r, buf, 1, ctx);
        nb_lpf_rec rec;
        if (st == NB_OK) st = nb_lpf_decode(buf, h.n_vocab, &rec, ctx);
        if (st == NB_OK) nb_sha256_update(&sh, buf, rs);
    }
    if (st == NB_OK) st = nb_lpf_finish(r, ctx);
    nb_sha256_final(&sh, digest);
    free(buf);
    nb_lpf_close(r);
    return st;
}

static nb_status read_all(const char *path, nb_ctx *ctx) {
    unsigned char d[32];
    return read_all_digest(path, d, ctx);
}

/* nb_ppl_file is the manual sequence (engine, tokenizer, nb_ppl_tokenize,
 * nb_ppl_run with the vocabulary's BOS) in one call; the base file fixes the
 * context of a KLD run. */
static void on_start(void *user, const nb_ppl_start *s) { *(nb_ppl_start *)user = *s; }

START_TEST(ppl_file_is_the_manual_run) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_synth_opts so;
    nb_synth_opts_init(&so); /* synth's default shape: 2 layers, 256 wide, vocabulary 512 */
    so.dtype = NB_TYPE_F32;
    so.seed = 3;
    const char *model = nbt_path("pplfile.gguf");
    ck_assert_msg(nb_synth_write(&so, model, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    char text[1024];
    snprintf(text, sizeof text, "%s/text/eval.txt", nbt_data_dir());

    /* by hand */
    nb_engine_opts eo = {32, 32, 1, false, NB_CACHE_F32};
    nb_engine *e = NULL;
    ck_assert_int_eq(nb_engine_open(model, &eo, &e, &ctx), NB_OK);
    nb_tokenizer *tok = NULL;
    ck_assert_int_eq(nb_tokenizer_create(&nb_engine_model(e)->kv, &tok, &ctx), NB_OK);
    size_t n_bytes;
    unsigned char *txt = nbt_read_file(text, &n_bytes);
    int32_t *ids;
    size_t n_ids;
    ck_assert_int_eq(nb_ppl_tokenize(tok, (const char *)txt, n_bytes, &ids, &n_ids, &ctx), NB_OK);
    nb_ppl_opts po = {.n_ctx = 32, .n_chunks = 2, .add_bos = nb_tokenizer_add_bos(tok) && nb_tokenizer_bos(tok) >= 0,
                      .bos = nb_tokenizer_bos(tok)};
    nb_ppl_lm lm = nb_ppl_lm_engine(e);
    nb_ppl_result want;
    ck_assert_msg(nb_ppl_run(&lm, ids, n_ids, &po, &want, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));

    /* in one call, saving the base log-probs */
    const char *base = nbt_path("pplfile.logprobs");
    nb_ppl_start st;
    memset(&st, 0, sizeof st);
    nb_ppl_file_opts fo = {.text_path = text, .on_start = on_start};
    fo.ppl.n_ctx = 32;
    fo.ppl.n_chunks = 2;
    fo.ppl.save_path = base;
    fo.ppl.user = &st;
    nb_ppl_result got;
    ck_assert_msg(nb_ppl_file(model, &fo, &got, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert(got.ppl == want.ppl && got.ppl_err == want.ppl_err);
    ck_assert_uint_eq(got.n_scored, want.n_scored);
    ck_assert_uint_eq(st.n_tokens, n_ids);
    ck_assert_uint_eq(st.text_bytes, n_bytes);
    ck_assert_int_eq(st.n_ctx, 32);
    ck_assert_int_eq(st.n_vocab, nb_engine_n_vocab(e));
    ck_assert_int_eq(st.add_bos, po.add_bos);
    nb_ppl_result_free(&got);

    /* KLD against itself, without a text: the file's context and tokens */
    nb_ppl_file_opts ko = {0};
    ko.ppl.kld_path = base;
    ck_assert_msg(nb_ppl_file(model, &ko, &got, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert(got.has_kld && got.n_ctx == 32 && got.ppl == want.ppl);
    nb_ppl_result_free(&got);
    ko.ppl.n_ctx = 64; /* a different explicit context is refused */
    ck_assert_int_eq(nb_ppl_file(model, &ko, &got, &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "--ctx 32"));
    nb_ppl_file_opts none = {0};
    ck_assert_int_eq(nb_ppl_file(model, &none, &got, &ctx), NB_ERR_INVALID);

    nb_ppl_result_free(&want);
    free(ids);
    free(txt);
    nb_tokenizer_free(tok);
    nb_engine_free(e);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(logits_file_rejects_damage) {
    size_t len;
    const char *good = nbt_path("good.bin"), *bad = nbt_path("bad.bin");
    unsigned char *b = valid_file(good, &len);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    unsigned char want[32], got[32];
    ck_assert_int_eq(read_all_digest(good, want, &ctx), NB_OK);
    nb_lpf_header h;
    int32_t *tok;
    nb_lpf_reader *r;
    ck_assert_int_eq(nb_lpf_open(good, &h, &tok, &r, &ctx), NB_OK);
    ck_assert_uint_eq(h.n_vocab, 40);
    ck_assert_uint_eq(h.n_ctx, 16);
    ck_assert_uint_eq(h.n_chunk, 2);
    ck_assert_uint_eq(h.n_scored, 7);
    ck_assert(h.bos_replaced);
    free(tok);
    nb_lpf_close(r);

    /* every truncation */
    for (size_t cut = 0; cut < len; cut += (cut < 200 ? 1 : 97)) {
        nbt_write_file(bad, b, cut);
        ck_assert_msg(read_all(bad, &ctx) == NB_ERR_FORMAT, "cut at %zu: %s", cut, nb_errmsg(&ctx));
    }
    /* a flipped byte anywhere is caught (header check, zstd structure or
     * content checksum), unless it is a zstd frame-header bit that does not
     * change what decodes (e.g. a larger window) */
    for (size_t pos = 0; pos < len; pos += 13) {
        unsigned char *c = malloc(len);
        memcpy(c, b, len);
        c[pos] ^= 0x41;
        nbt_write_file(bad, c, len);
        nb_status st = read_all_digest(bad, got, &ctx);
        ck_assert_msg(st != NB_OK || memcmp(got, want, 32) == 0, "flip at %zu accepted with other content", pos);
        free(c);
    }
    /* trailing garbage */
    unsigned char *c = malloc(len + 4);
    memcpy(c, b, len);
    memcpy(c + len, "junk", 4);
    nbt_write_file(bad, c, len + 4);
    ck_assert_int_eq(read_all(bad, &ctx), NB_ERR_FORMAT);
    /* hostile header fields: huge counts allocate nothing and fail cleanly */
    const struct { size_t off; uint32_t v; } hostile[] = {
        {12, 0}, {12, 0xffffffffu}, {16, 0}, {16, 0x7fffffffu}, {20, 0}, {20, 0xffffffffu}, {24, 8}, {8, 2}, {28, 4},
        {32, 40},
    };
    for (size_t i = 0; i < sizeof hostile / sizeof *hostile; i++) {
        memcpy(c, b, len);
        put32(c + hostile[i].off, hostile[i].v);
        reseal(c); /* so the field checks, not the header checksum, must catch it */
        nbt_write_file(bad, c, len);
        nb_status st = read_all(bad, &ctx);
        ck_assert_msg((st == NB_ERR_FORMAT || st == NB_ERR_UNSUPPORTED) && !strstr(nb_errmsg(&ctx), "checksum"),
                      "field at %zu = %u: %d %s", hostile[i].off, hostile[i].v, st, nb_errmsg(&ctx));
    }
    /* counts within the format's ranges but beyond what the file can hold: refused
     * before anything is allocated for them (2^27 chunks x 16 tokens = 8 GiB of tokens) */
    const uint32_t lying[] = {1u << 27, 1u << 22};
    for (size_t i = 0; i < sizeof lying / sizeof *lying; i++) {
        memcpy(c, b, len);
        put32(c + 20, lying[i]);
        put64(c + 40, (uint64_t)lying[i] * 16);
        reseal(c);
        nbt_write_file(bad, c, len);
        ck_assert_int_eq(read_all(bad, &ctx), NB_ERR_FORMAT);
        ck_assert_msg(strstr(nb_errmsg(&ctx), "more than a") && strstr(nb_errmsg(&ctx), "bad.bin"), "%s",
                      nb_errmsg(&ctx));
    }
    nbt_write_file(bad, "not a log-prob file at all", 26);
    ck_assert_int_eq(read_all(bad, &ctx), NB_ERR_FORMAT);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "neither a nibble nor a llama.cpp log-prob file"), "%s", nb_errmsg(&ctx));
    free(c);
    free(b);
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- llama.cpp's --kl-divergence-base file --------------------------------------- */

/* A base saved in llama.cpp's layout scores a variant: the statistics agree
 * with a base in nibble's layout to the 16-bit rounding of the target's
 * log-prob (llama.cpp's file keeps no exact copy), and a model against
 * itself still gives KLD ~ 0. */
START_TEST(llamacpp_base_round_trip) {
    fake_lm a = fake(211, 0.7, 0.0), q = fake(211, 0.7, 0.4), self = a;
    size_t n = 6 * 40;
    int32_t *tok = random_tokens(n, a.n_vocab, 9, 1);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *fl = nbt_path("base.kld"), *fn = nbt_path("base.bin");
    nb_ppl_opts o = opts(40, true, 1);
    nb_ppl_lm la = lm_of(&a), lq = lm_of(&q), ls = lm_of(&self);
    nb_ppl_result rl, rn, kl, kn, ks;
    o.save_path = fl;
    o.save_format = NB_LPF_LLAMACPP;
    ck_assert_int_eq(nb_ppl_run(&la, tok, n, &o, &rl, &ctx), NB_OK);
    o.save_path = fn;
    o.save_format = NB_LPF_NIBBLE;
    ck_assert_int_eq(nb_ppl_run(&la, tok, n, &o, &rn, &ctx), NB_OK);
    ck_assert_msg(fabs(rl.ppl - rn.ppl) < 1e-12 * rn.ppl, "PPL %g vs %g", rl.ppl, rn.ppl);

    /* the layout, read back by hand */
    size_t len;
    unsigned char *b = nbt_read_file(fl, &len);
    ck_assert_ptr_nonnull(b);
    const size_t rec = 2 * (2 * ((211 + 1) / 2) + 4), n_rec = 6 * 19;
    ck_assert_uint_eq(len, 20 + 4 * n + n_rec * rec);
    ck_assert(memcmp(b, "_logits_", 8) == 0);
    int32_t hv[3];
    memcpy(hv, b + 8, 12);
    ck_assert_int_eq(hv[0], 40);
    ck_assert_int_eq(hv[1], 211);
    ck_assert_int_eq(hv[2], 6);
    ck_assert(memcmp(b + 20, tok, 4 * n) == 0); /* the text's tokens, BOS not substituted */
    /* record 0 predicts tok[21]: its log-prob decodes to the reference within the rounding */
    long double lp[211];
    ref_logprobs(&a, tok[20], 20, 1, lp);
    float sc, mn;
    memcpy(&sc, b + 20 + 4 * n, 4);
    memcpy(&mn, b + 24 + 4 * n, 4);
    uint16_t qv;
    memcpy(&qv, b + 28 + 4 * n + 2 * (size_t)tok[21], 2);
    ck_assert_msg(fabsl(mn + sc * qv - lp[tok[21]]) < 2e-4L, "%g vs %Lg", (double)(mn + sc * qv), lp[tok[21]]);
    free(b);

    o.save_path = NULL;
    o.kld_path = fl;
    ck_assert_int_eq(nb_ppl_run(&lq, tok, n, &o, &kl, &ctx), NB_OK);
    o.kld_path = fn;
    ck_assert_int_eq(nb_ppl_run(&lq, tok, n, &o, &kn, &ctx), NB_OK);
    ck_assert_uint_eq(kl.kld.count, n_rec);
    ck_assert_msg(fabs(kl.kld.kld - kn.kld.kld) < 1e-3 * kn.kld.kld && kn.kld.kld > 1e-3, "KLD %g vs %g", kl.kld.kld,
                  kn.kld.kld);
    /* llama.cpp's file has only the 16-bit value, floored at max - 16: a target
     * further down reads as that floor, so PPL(base) can only come out lower
     * (this fake model puts many targets there) */
    ck_assert_msg(kl.kld.ppl_base <= kn.kld.ppl_base * (1 + 1e-6), "PPL(base) %g vs %g", kl.kld.ppl_base,
                  kn.kld.ppl_base);
    ck_assert_msg(fabs(kl.kld.same_top - kn.kld.same_top) < 0.02, "same top %g vs %g", kl.kld.same_top,
                  kn.kld.same_top);
    ck_assert_msg(fabs(kl.ppl - kn.ppl) < 1e-12 * kn.ppl, "PPL(Q) %g vs %g", kl.ppl, kn.ppl);
    /* against itself */
    o.kld_path = fl;
    ck_assert_int_eq(nb_ppl_run(&ls, tok, n, &o, &ks, &ctx), NB_OK);
    ck_assert_msg(fabs(ks.kld.kld) < 1e-4 && ks.kld.same_top == 1.0, "self KLD %g same top %g", ks.kld.kld,
                  ks.kld.same_top);
    /* KLD mode without a text takes the file's tokens */
    nb_ppl_result_free(&ks);
    ck_assert_int_eq(nb_ppl_run(&ls, NULL, 0, &o, &ks, &ctx), NB_OK);
    ck_assert_uint_eq(ks.kld.count, n_rec);
    /* a different text is refused */
    int32_t *other = random_tokens(n, a.n_vocab, 10, 1);
    nb_ppl_result kx;
    ck_assert_int_eq(nb_ppl_run(&lq, other, n, &o, &kx, &ctx), NB_ERR_RANGE);
    free(other);
    nb_ppl_result_free(&rl);
    nb_ppl_result_free(&rn);
    nb_ppl_result_free(&kl);
    nb_ppl_result_free(&kn);
    nb_ppl_result_free(&ks);
    nb_ctx_free(&ctx);
    free(tok);
}
END_TEST

/* A file built byte by byte from the layout in perplexity.cpp (not by our
 * writer): what the reader derives from it. Vocabulary 3 (odd: one u16 of
 * padding), n_ctx 4 -> 1 scored token per chunk (position 2 predicts 3). */
START_TEST(llamacpp_layout_by_hand) {
    unsigned char f[20 + 4 * 8 + 2 * 16]; /* records: 2 f32 + 4 u16 */
    memcpy(f, "_logits_", 8);
    put32(f + 8, 4);
    put32(f + 12, 3);
    put32(f + 16, 2);
    const int32_t toks[8] = {1, 2, 0, 2, 1, 0, 1, 1};
    for (int i = 0; i < 8; i++) put32(f + 20 + 4 * i, (uint32_t)toks[i]);
    unsigned char *r = f + 52;
    const float scale[2] = {0.25f / 65535.f, 0.f}, mlp[2] = {-1.5f, -1.0986123f};
    const uint16_t q[2][4] = {{0, 65535, 20000, 0xBEEF}, {0, 0, 0, 7}}; /* last: padding */
    for (int k = 0; k < 2; k++) {
        memcpy(r + 16 * k, &scale[k], 4);
        memcpy(r + 16 * k + 4, &mlp[k], 4);
        for (int i = 0; i < 4; i++) {
            r[16 * k + 8 + 2 * i] = (unsigned char)q[k][i];
            r[16 * k + 9 + 2 * i] = (unsigned char)(q[k][i] >> 8);
        }
    }
    const char *p = nbt_path("hand.kld");
    nbt_write_file(p, f, sizeof f);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_lpf_header h;
    int32_t *tok;
    nb_lpf_reader *rd;
    ck_assert_int_eq(nb_lpf_open(p, &h, &tok, &rd, &ctx), NB_OK);
    ck_assert_int_eq(h.format, NB_LPF_LLAMACPP);
    ck_assert_uint_eq(h.n_ctx, 4);
    ck_assert_uint_eq(h.n_vocab, 3);
    ck_assert_uint_eq(h.n_chunk, 2);
    ck_assert_uint_eq(h.n_scored, 1);
    ck_assert_int_eq(h.bos, -1);
    ck_assert(memcmp(tok, toks, sizeof toks) == 0);
    unsigned char buf[2 * (NB_LPF_REC_HDR + 6)];
    ck_assert_int_eq(nb_lpf_read(rd, buf, 2, &ctx), NB_OK);
    nb_lpf_rec a, b;
    ck_assert_int_eq(nb_lpf_decode(buf, 3, &a, &ctx), NB_OK);
    ck_assert_int_eq(nb_lpf_decode(buf + NB_LPF_REC_HDR + 6, 3, &b, &ctx), NB_OK);
    /* chunk 0: position 2 predicts toks[3] = 2 -> q = 20000 */
    ck_assert(a.scale == scale[0] && a.min_lp == mlp[0]);
    ck_assert(a.lp_target == scale[0] * 20000.f + mlp[0]);
    ck_assert_int_eq(a.argmax, 1);
    ck_assert_uint_eq(nb_lpf_q(&a, 1), 65535);
    /* chunk 1: toks[7] = 1, all q = 0: every entry is min_lp, the first is the argmax */
    ck_assert(b.lp_target == mlp[1]);
    ck_assert_int_eq(b.argmax, 0);
    ck_assert_int_eq(nb_lpf_finish(rd, &ctx), NB_OK);
    nb_lpf_close(rd);
    free(tok);

    /* hostile: every truncation and extension, bad counts, tokens outside the vocabulary */
    const char *bad = nbt_path("hand_bad.kld");
    for (size_t cut = 0; cut < sizeof f; cut++) {
        nbt_write_file(bad, f, cut);
        ck_assert_msg(read_all(bad, &ctx) == NB_ERR_FORMAT, "cut at %zu: %s", cut, nb_errmsg(&ctx));
    }
    unsigned char g[sizeof f + 2];
    memcpy(g, f, sizeof f);
    g[sizeof f] = g[sizeof f + 1] = 0;
    nbt_write_file(bad, g, sizeof g);
    ck_assert_int_eq(read_all(bad, &ctx), NB_ERR_FORMAT);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "hand_bad.kld") && strstr(nb_errmsg(&ctx), "need"), "%s",
                  nb_errmsg(&ctx));
    const struct { size_t off; uint32_t v; } hostile[] = {
        {8, 0}, {8, 0x80000000u}, {8, 3}, {8, 0x7fffffffu}, {12, 0}, {12, 0xffffffffu}, {12, 1u << 30},
        {16, 0}, {16, 0xffffffffu}, {16, 0x7fffffffu}, {20, 3}, {44, 0xffffffffu},
    };
    for (size_t i = 0; i < sizeof hostile / sizeof *hostile; i++) {
        memcpy(g, f, sizeof f);
        put32(g + hostile[i].off, hostile[i].v);
        nbt_write_file(bad, g, sizeof f);
        nb_status st = read_all(bad, &ctx);
        ck_assert_msg(st == NB_ERR_FORMAT && strstr(nb_errmsg(&ctx), "hand_bad.kld"), "field at %zu = %u: %d %s",
                      hostile[i].off, hostile[i].v, st, nb_errmsg(&ctx));
    }
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(record_encoding) {
    /* decoded log-probs are within half a step of the truth; below the -16
     * floor they read as "absent"; argmax and target are exact */
    uint64_t st = 3;
    const int nv = 5000;
    float *l = malloc(nv * sizeof *l);
    unsigned char *rec = malloc(nb_lpf_rec_size(nv));
    for (int trial = 0; trial < 5; trial++) {
        for (int v = 0; v < nv; v++) l[v] = (trial == 4 ? 1.0f : 4.0f) * nbt_rand_normal(&st);
        if (trial == 3) for (int v = 0; v < nv; v++) l[v] = 1.5f; /* flat: scale 0 */
        int tok = (int)(nbt_rand_u64(&st) % nv);
        double nll = nb_lpf_encode(l, nv, tok, rec);
        ck_assert_msg(fabs(nll - nb_nll(l, nv, tok)) < 1e-12, "nll");
        nb_lpf_rec r;
        nb_ctx ctx;
        nbt_ctx(&ctx);
        ck_assert_int_eq(nb_lpf_decode(rec, nv, &r, &ctx), NB_OK);
        long double mx = l[0], s = 0;
        int am = 0;
        for (int v = 1; v < nv; v++) if (l[v] > mx) { mx = l[v]; am = v; }
        for (int v = 0; v < nv; v++) s += expl(l[v] - mx);
        ck_assert_int_eq(r.argmax, am);
        ck_assert_msg(fabsl(r.lp_target - (l[tok] - mx - logl(s))) < 1e-5L, "target");
        for (int v = 0; v < nv; v++) {
            long double lp = l[v] - mx - logl(s);
            double dec = (double)r.min_lp + (double)r.scale * nb_lpf_q(&r, (size_t)v);
            if (lp > -logl(s) - 15.999L) /* within the stored range */
                ck_assert_msg(fabsl(dec - lp) < 16.0L / 65535 / 2 + 1e-5L, "v %d: %g vs %Lg", v, dec, lp);
            else if (lp < -logl(s) - 16.001L)
                ck_assert_msg(nb_lpf_q(&r, (size_t)v) == 0, "v %d below the floor should be 0", v);
        }
        nb_ctx_free(&ctx);
    }
    free(l);
    free(rec);
}
END_TEST

START_TEST(percentiles_and_estimate) {
    double v[] = {1, 2, 4, 8, 16};
    ck_assert(nb_percentile(v, 5, 0) == 1 && nb_percentile(v, 5, 1) == 16);
    ck_assert(nb_percentile(v, 5, 0.5) == 4);
    ck_assert(fabs(nb_percentile(v, 5, 0.9) - (0.4 * 8 + 0.6 * 16)) < 1e-12); /* 0.9*4 = 3.6 */
    ck_assert(nb_percentile(v, 1, 0.3) == 1);
    double ppl, err;
    nb_ppl_estimate(6.0, 14.0, 3, &ppl, &err); /* nll 1,2,3 */
    ck_assert(fabs(ppl - exp(2.0)) < 1e-12);
    ck_assert(fabs(err - sqrt((14.0 / 3 - 4) / 2) * exp(2.0)) < 1e-12);
    /* llama's mean_and_uncertainty: no error bar for <= 10 values */
    nb_kld_acc a;
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ck_assert_int_eq(nb_kld_acc_init(&a, 20, &ctx), NB_OK);
    for (int i = 0; i < 5; i++) nb_kld_acc_add(&a, &(nb_kld_tok){1.0 + i, 1.0, 0.01 * i, 0.1, i % 2});
    nb_kld_stats s;
    ck_assert_int_eq(nb_kld_stats_compute(&a, &s, &ctx), NB_OK);
    ck_assert(s.kld_err == 0 && fabs(s.kld - 0.02) < 1e-12 && s.same_top == 0.4);
    ck_assert(s.kld_pct[0] == 0.04 && s.kld_pct[NB_KLD_NPCT - 1] == 0.0);
    nb_kld_acc_free(&a);
    nb_ctx_free(&ctx);
}
END_TEST

/* The KLD histogram's bins: edges exact at the boundaries, the ends caught, counts whole. */
START_TEST(kld_histogram_bins) {
    const int top = NB_KLD_HIST_BINS - 2;
    ck_assert_int_eq(NB_KLD_HIST_BINS, 42);
    ck_assert(fabs(nb_kld_hist_edge(0) - 1e-6) < 1e-18 && fabs(nb_kld_hist_edge(top) - 100.0) < 1e-12);
    ck_assert(fabs(nb_kld_hist_edge(5) - 1e-5) < 1e-17);
    for (int e = 0; e <= top; e++) {
        double x = nb_kld_hist_edge(e);
        ck_assert_msg(nb_kld_hist_bin(x) == e + 1, "edge %d (%.17g) in bin %d", e, x, nb_kld_hist_bin(x));
        ck_assert_msg(nb_kld_hist_bin(nextafter(x, 0)) == e, "below edge %d in bin %d", e, nb_kld_hist_bin(nextafter(x, 0)));
        if (e < top) /* the middle of a bin (geometric) */
            ck_assert_int_eq(nb_kld_hist_bin(sqrt(x * nb_kld_hist_edge(e + 1))), e + 1);
    }
    ck_assert_int_eq(nb_kld_hist_bin(0.0), 0);
    ck_assert_int_eq(nb_kld_hist_bin(-1e-9), 0); /* rounding below zero */
    ck_assert_int_eq(nb_kld_hist_bin(1e-300), 0);
    ck_assert_int_eq(nb_kld_hist_bin(1e3), NB_KLD_HIST_BINS - 1);
    ck_assert_int_eq(nb_kld_hist_bin(INFINITY), NB_KLD_HIST_BINS - 1);
    ck_assert_int_eq(nb_kld_hist_bin(NAN), NB_KLD_HIST_BINS - 1);
    /* 0.05: log10 = -1.30 -> 4.70 decades above 1e-6 -> log bin 23, [10^-1.4, 10^-1.2) */
    ck_assert_int_eq(nb_kld_hist_bin(0.05), 24);
    /* through the statistics: every token counted once, the same counts in any order */
    static const double v[8] = {0.0, 2e-7, 0.05, 0.05, 0.051, 1.0, 250.0, 3e-4};
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_kld_stats s[2];
    for (int pass = 0; pass < 2; pass++) {
        nb_kld_acc a;
        ck_assert_int_eq(nb_kld_acc_init(&a, 8, &ctx), NB_OK);
        for (int i = 0; i < 8; i++) nb_kld_acc_add(&a, &(nb_kld_tok){1.0, 1.0, v[pass ? 7 - i : i], 0.0, true});
        ck_assert_int_eq(nb_kld_stats_compute(&a, &s[pass], &ctx), NB_OK);
        nb_kld_acc_free(&a);
    }
    ck_assert(memcmp(s[0].kld_hist, s[1].kld_hist, sizeof s[0].kld_hist) == 0);
    uint64_t total = 0;
    for (int i = 0; i < NB_KLD_HIST_BINS; i++) total += s[0].kld_hist[i];
    ck_assert_uint_eq(total, 8);
    ck_assert_uint_eq(s[0].kld_hist[0], 2);                   /* 0, 2e-7 */
    ck_assert_uint_eq(s[0].kld_hist[24], 3);                  /* 0.05, 0.05, 0.051 */
    ck_assert_uint_eq(s[0].kld_hist[1 + 5 * 6], 1);           /* 1.0: the first bin of 1e0 */
    ck_assert_uint_eq(s[0].kld_hist[NB_KLD_HIST_BINS - 1], 1); /* 250 */
    char *j = nb_kld_hist_json(s[0].kld_hist);
    ck_assert_ptr_nonnull(j);
    ck_assert_msg(strstr(j, "\"lo_log10\":-6,\"hi_log10\":2,\"per_decade\":5,\"counts\":[2,0,") == j + 1, "%s", j);
    free(j);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(sampler) {
    nb_sampler s;
    nb_ctx ctx;
    nbt_ctx(&ctx);
    float l[6] = {0.5f, 3.0f, 3.0f, -1.0f, 2.0f, 0.0f};
    ck_assert_int_eq(nb_sampler_init(&s, 0.0f, 40, 1, &ctx), NB_OK);
    ck_assert_int_eq(nb_sample(&s, l, 6), 1); /* greedy, lowest id on ties */
    nb_sampler_free(&s);
    ck_assert_int_eq(nb_sampler_init(&s, -1.0f, 40, 1, &ctx), NB_ERR_INVALID);
    ck_assert_int_eq(nb_sampler_init(&s, 1.0f, -2, 1, &ctx), NB_ERR_INVALID);
    /* top-k = 3 never leaves {1, 2, 4}; frequencies follow softmax within the top 3 */
    ck_assert_int_eq(nb_sampler_init(&s, 1.0f, 3, 42, &ctx), NB_OK);
    int cnt[6] = {0};
    const int N = 30000;
    for (int i = 0; i < N; i++) {
        int32_t t = nb_sample(&s, l, 6);
        ck_assert(t >= 0 && t < 6);
        cnt[t]++;
    }
    ck_assert(cnt[0] == 0 && cnt[3] == 0 && cnt[5] == 0);
    double z = 2 * exp(3.0) + exp(2.0);
    double p[3] = {exp(3.0) / z, exp(3.0) / z, exp(2.0) / z};
    int ids[3] = {1, 2, 4};
    for (int i = 0; i < 3; i++) {
        double sd = sqrt(N * p[i] * (1 - p[i]));
        ck_assert_msg(fabs(cnt[ids[i]] - N * p[i]) < 5 * sd, "token %d: %d vs %.0f", ids[i], cnt[ids[i]], N * p[i]);
    }
    nb_sampler_free(&s);
    /* same seed, same draws; temperature sharpens */
    nb_sampler s1, s2;
    nb_sampler_init(&s1, 0.7f, 0, 99, &ctx);
    nb_sampler_init(&s2, 0.7f, 0, 99, &ctx);
    for (int i = 0; i < 200; i++) ck_assert_int_eq(nb_sample(&s1, l, 6), nb_sample(&s2, l, 6));
    nb_sampler_free(&s1);
    nb_sampler_free(&s2);
    nb_sampler_init(&s1, 0.05f, 0, 5, &ctx);
    int c4 = 0;
    for (int i = 0; i < 1000; i++) c4 += nb_sample(&s1, l, 6) == 4;
    ck_assert_msg(c4 < 5, "at T=0.05 token 4 (1 nat below the top) is ~e^-20 likely (%d)", c4);
    nb_sampler_free(&s1);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("engine/ppl");
    TCase *tc = tcase_create("ppl");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, nll_matches_reference);
    tcase_add_test(tc, ppl_method_matches_reference);
    tcase_add_test(tc, ppl_independent_of_batch_and_threads);
    tcase_add_test(tc, too_short_text_is_refused);
    tcase_add_test(tc, kld_against_itself_is_zero);
    tcase_add_test(tc, kld_statistics_match_reference);
    tcase_add_test(tc, kld_thread_independent);
    tcase_add_test(tc, kld_refuses_mismatches);
    tcase_add_test(tc, failed_run_leaves_no_file);
    tcase_add_test(tc, ppl_file_is_the_manual_run);
    tcase_add_test(tc, logits_file_rejects_damage);
    tcase_add_test(tc, record_encoding);
    tcase_add_test(tc, llamacpp_base_round_trip);
    tcase_add_test(tc, llamacpp_layout_by_hand);
    tcase_add_test(tc, percentiles_and_estimate);
    tcase_add_test(tc, kld_histogram_bins);
    tcase_add_test(tc, sampler);
    suite_add_tcase(s, tc);
    int rc = nbt_run_suite(s);
    return rc;
}
