/* KLD statistics against llama-perplexity's own printout.
 *
 * The fixture in tests/data/kld_llamacpp (provenance in its README.md) holds a
 * real llama-perplexity --kl-divergence-base file (stories260K F32, eval.txt,
 * ctx 64, 4 chunks), llama.cpp's logits of a Q4_0 variant at the 124 scored
 * positions, and what llama-perplexity --kl-divergence printed for that
 * variant. Feeding those logits through nibble's KLD driver (reading the
 * llama.cpp base file) must give every printed figure: same definitions,
 * within float tolerance (llama.cpp sums some terms in float, nibble in
 * double). The engine is not involved: its logits differ from llama.cpp's by
 * its own arithmetic, which tests/engine/test_llamacpp.c bounds. */
#include "engine/ppl.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

enum { N_CTX = 64, N_CHUNK = 4, N_VOCAB = 512, BOS = 1, FIRST = N_CTX / 2, N_SCORED = N_CTX - 1 - N_CTX / 2 };

/* A "model" that returns the fixture's logits at the scored positions. */
typedef struct stored_lm {
    const float *rows; /* N_CHUNK * N_SCORED rows of N_VOCAB */
    int chunk;         /* chunks started (resets seen) */
    int bad;           /* positions asked outside the contract */
} stored_lm;

static void stored_reset(void *u) { ((stored_lm *)u)->chunk++; }

static nb_status stored_eval(void *u, const int32_t *tokens, int n, int pos, float *logits, nb_ctx *ctx) {
    (void)tokens;
    (void)ctx;
    stored_lm *s = u;
    if (!logits) return NB_OK;
    for (int k = 0; k < n; k++) {
        const int p = pos + k;
        float *dst = logits + (size_t)k * N_VOCAB;
        if (p >= FIRST && p < N_CTX - 1 && s->chunk >= 1 && s->chunk <= N_CHUNK)
            memcpy(dst, s->rows + ((size_t)(s->chunk - 1) * N_SCORED + (size_t)(p - FIRST)) * N_VOCAB,
                   N_VOCAB * sizeof(float));
        else { /* not scored: any values do */
            if (s->chunk < 1 || s->chunk > N_CHUNK) s->bad++;
            memset(dst, 0, N_VOCAB * sizeof(float));
        }
    }
    return NB_OK;
}

static unsigned char *read_zst(const char *name, size_t *n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/kld_llamacpp/%s", nbt_data_dir(), name);
    size_t zn;
    unsigned char *z = nbt_read_file(path, &zn);
    ck_assert_msg(z != NULL, "cannot read %s", path);
    unsigned long long size = ZSTD_getFrameContentSize(z, zn);
    ck_assert_msg(size != ZSTD_CONTENTSIZE_ERROR && size != ZSTD_CONTENTSIZE_UNKNOWN, "%s: no content size", path);
    unsigned char *d = malloc((size_t)size);
    ck_assert_ptr_nonnull(d);
    size_t got = ZSTD_decompress(d, (size_t)size, z, zn);
    ck_assert_msg(!ZSTD_isError(got) && got == size, "%s: bad zstd data", path);
    free(z);
    *n = (size_t)size;
    return d;
}

/* One printed line: its label and where nibble keeps its figures (x scale:
 * llama-perplexity prints some as percentages). */
typedef struct field {
    const char *label;
    const double *v[2];
    double scale;
    double abs_tol; /* besides the printed rounding (0: none) */
} field;

static int check_line(const field *fs, size_t nf, const char *line) {
    const char *colon = strchr(line, ':');
    if (!colon) return 0;
    size_t kl = (size_t)(colon - line);
    while (kl > 0 && line[kl - 1] == ' ') kl--;
    for (size_t i = 0; i < nf; i++) {
        size_t ll = strlen(fs[i].label);
        while (ll > 0 && fs[i].label[ll - 1] == ' ') ll--;
        if (ll != kl || strncmp(line, fs[i].label, kl) != 0) continue;
        const char *p = colon + 1;
        for (int j = 0; j < 2 && fs[i].v[j]; j++) {
            while (*p && !(*p == '-' || (*p >= '0' && *p <= '9'))) p++;
            ck_assert_msg(*p, "no value %d in '%s'", j, line);
            char *end;
            const double printed = strtod(p, &end);
            const char *dot = memchr(p, '.', (size_t)(end - p));
            const int decimals = dot ? (int)(end - dot - 1) : 0;
            const double mine = *fs[i].v[j] * fs[i].scale;
            /* the printed rounding (+-1 in the last digit for float vs double
             * sums), or 1e-6 relative (PPL(Q)-PPL(base)'s error is a float
             * difference of near-equal terms), or the field's own */
            const double tol = fmax(fmax(1.01 * pow(10, -decimals), 1e-6 * fabs(mine)), fs[i].abs_tol);
            ck_assert_msg(fabs(mine - printed) <= tol, "%s: nibble %.9f, llama-perplexity printed %.*f", fs[i].label,
                          mine, decimals, printed);
            p = end;
        }
        return 1;
    }
    return 0;
}

START_TEST(reproduces_llama_perplexity) {
    size_t nb, nl;
    unsigned char *base = read_zst("base.kld.zst", &nb);
    unsigned char *lg = read_zst("variant.logits.zst", &nl);
    ck_assert_uint_eq(nl, (size_t)N_CHUNK * N_SCORED * N_VOCAB * sizeof(float));
    const char *bpath = nbt_path("base.kld");
    nbt_write_file(bpath, base, nb);
    free(base);

    nb_ctx ctx;
    nbt_ctx(&ctx);
    stored_lm s = {(const float *)lg, 0, 0};
    nb_ppl_lm lm = {N_VOCAB, N_CTX, &s, stored_reset, stored_eval};
    nb_ppl_opts o = {0};
    o.n_ctx = N_CTX;
    o.add_bos = true;
    o.bos = BOS;
    o.n_threads = 1;
    o.kld_path = bpath;
    nb_ppl_result r;
    ck_assert_msg(nb_ppl_run(&lm, NULL, 0, &o, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_int_eq(s.bad, 0);
    ck_assert_int_eq(s.chunk, N_CHUNK);
    ck_assert(r.has_kld);
    ck_assert_uint_eq(r.kld.count, (size_t)N_CHUNK * N_SCORED);

    const nb_kld_stats *k = &r.kld;
    /* llama-perplexity rounds each token's nll to float (nibble keeps double):
     * PPL-sized figures may differ by a few float epsilons of the PPL */
    const double ppl_tol = 4 * 1.2e-7 * k->ppl_base;
    const field fs[] = {
        {"Mean PPL(Q)", {&k->ppl_q, &k->ppl_q_err}, 1, ppl_tol},
        {"Mean PPL(base)", {&k->ppl_base, &k->ppl_base_err}, 1, ppl_tol},
        {"Cor(ln(PPL(Q)), ln(PPL(base)))", {&k->cor, NULL}, 100, 0},
        {"Mean ln(PPL(Q)/PPL(base))", {&k->ln_ratio, &k->ln_ratio_err}, 1, 0},
        {"Mean PPL(Q)/PPL(base)", {&k->ppl_ratio, &k->ppl_ratio_err}, 1, 0},
        {"Mean PPL(Q)-PPL(base)", {&k->ppl_diff, &k->ppl_diff_err}, 1, ppl_tol},
        {"Mean    KLD", {&k->kld, &k->kld_err}, 1, 0},
        {"Maximum KLD", {&k->kld_pct[0], NULL}, 1, 0},
        {"99.9%   KLD", {&k->kld_pct[1], NULL}, 1, 0},
        {"99.0%   KLD", {&k->kld_pct[2], NULL}, 1, 0},
        {"95.0%   KLD", {&k->kld_pct[3], NULL}, 1, 0},
        {"90.0%   KLD", {&k->kld_pct[4], NULL}, 1, 0},
        {"Median  KLD", {&k->kld_pct[5], NULL}, 1, 0},
        {"10.0%   KLD", {&k->kld_pct[6], NULL}, 1, 0},
        {" 5.0%   KLD", {&k->kld_pct[7], NULL}, 1, 0},
        {" 1.0%   KLD", {&k->kld_pct[8], NULL}, 1, 0},
        {" 0.1%   KLD", {&k->kld_pct[9], NULL}, 1, 0},
        {"Minimum KLD", {&k->kld_pct[10], NULL}, 1, 0},
        {"Mean    Δp", {&k->dp, &k->dp_err}, 100, 0},
        {"Maximum Δp", {&k->dp_pct[0], NULL}, 100, 0},
        {"99.9%   Δp", {&k->dp_pct[1], NULL}, 100, 0},
        {"99.0%   Δp", {&k->dp_pct[2], NULL}, 100, 0},
        {"95.0%   Δp", {&k->dp_pct[3], NULL}, 100, 0},
        {"90.0%   Δp", {&k->dp_pct[4], NULL}, 100, 0},
        {"75.0%   Δp", {&k->dp_pct[5], NULL}, 100, 0},
        {"Median  Δp", {&k->dp_pct[6], NULL}, 100, 0},
        {"25.0%   Δp", {&k->dp_pct[7], NULL}, 100, 0},
        {"10.0%   Δp", {&k->dp_pct[8], NULL}, 100, 0},
        {" 5.0%   Δp", {&k->dp_pct[9], NULL}, 100, 0},
        {" 1.0%   Δp", {&k->dp_pct[10], NULL}, 100, 0},
        {" 0.1%   Δp", {&k->dp_pct[11], NULL}, 100, 0},
        {"Minimum Δp", {&k->dp_pct[12], NULL}, 100, 0},
        {"RMS Δp", {&k->dp_rms, &k->dp_rms_err}, 100, 0},
        {"Same top p", {&k->same_top, &k->same_top_err}, 100, 0},
    };
    const size_t nf = sizeof fs / sizeof fs[0];
    char path[4096];
    snprintf(path, sizeof path, "%s/kld_llamacpp/llama-perplexity.txt", nbt_data_dir());
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot read %s", path);
    char line[512];
    size_t matched = 0;
    while (fgets(line, sizeof line, f)) matched += (size_t)check_line(fs, nf, line);
    fclose(f);
    ck_assert_uint_eq(matched, nf); /* every figure was printed and checked */
    nb_ppl_result_free(&r);
    nb_ctx_free(&ctx);
    free(lg);
}
END_TEST

int main(void) {
    Suite *s = suite_create("kld_llamacpp");
    TCase *tc = tcase_create("kld_llamacpp");
    tcase_add_test(tc, reproduces_llama_perplexity);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
