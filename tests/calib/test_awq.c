/* tests/calib/test_awq.c — AWQ (calib/awq.h, the awq methods of calib/gptq_model.h):
 *   - on a layer whose inputs have outlier channels, the searched scales lower
 *     the layer output error ‖X (W - Ŵ)ᵀ‖² below plain rounding's, for a
 *     GGUF type, NF4 and INT4 — both errors recomputed here from X, not taken
 *     from the library; the search is the same at 1 and 2 threads;
 *   - folding: a synthetic llama run through the AWQ driver with a given
 *     alpha and F16 targets (so nothing but the scaling and F16 rounding
 *     changes the weights) gives the float model's logits within F16
 *     tolerance, while its norms and weights did change;
 *   - end to end with q4_0: awq and awq+gptq write files that load and run;
 *     1 vs 2 threads give identical bytes;
 *   - MoE experts: on a synthetic mixtral, per-expert scales between up and
 *     down and the FFN input's scales (ffn_norm -> every expert's gate and
 *     up and the router's columns) fold without changing the float model
 *     (F16 targets, given alpha: the expert tensors, the norm and the router
 *     change, the logits do not beyond F16 rounding, and every test token is
 *     routed to the same experts), and with down_exps in Q4_0 the searched
 *     scales lower the experts' output error — recomputed here, per expert,
 *     from the written file's up, gate and down and the source's own inputs
 *     of block 0's experts on the calibration chunks (divided by the FFN
 *     input's scales where the file's norm took them) — below the same
 *     rounding without scales;
 *   - MoE FFN input: on a mixtral whose residual stream keeps one large
 *     channel (synth's starve_experts), with only gate_exps and up_exps in
 *     Q4_0, the shared norm-folded scales lower the same recomputed expert
 *     output error below unscaled rounding. */
#include "calib/awq.h"
#include "calib/gptq.h"
#include "calib/gptq_model.h"
#include "calib/corpus.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "formats/synth.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* X: ntok x n, N(0,1) with 4 outlier channels x 25. */
static float *outlier_x(int64_t ntok, int64_t n, uint64_t seed) {
    float *x = malloc((size_t)(ntok * n) * sizeof(float));
    uint64_t s = seed;
    for (int64_t k = 0; k < ntok * n; k++) x[k] = nbt_rand_normal(&s);
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t j = 3; j < n; j += n / 4) x[t * n + j] *= 25;
    return x;
}

/* ‖X (W - Q)ᵀ‖² / ntok in double, straight from the definition. */
static double out_err(const float *x, int64_t ntok, const float *w, const float *q, int64_t rows, int64_t n) {
    double e = 0;
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t r = 0; r < rows; r++) {
            double s = 0;
            for (int64_t j = 0; j < n; j++) s += (double)x[t * n + j] * ((double)w[r * n + j] - q[r * n + j]);
            e += s * s;
        }
    return e / (double)ntok;
}

/* Dequantized Q(W diag(s)) diag(s)⁻¹ (s NULL: plain rounding), no importance. */
static void round_scaled(nb_type type, const float *w, int64_t rows, int64_t n, const float *s, float *out) {
    const nb_type_traits *tr = nb_type_get(type);
    uint64_t rb = (uint64_t)(n / tr->block_size) * tr->type_size;
    unsigned char *q = malloc(rb * (uint64_t)rows);
    float *ws = malloc((size_t)(rows * n) * sizeof(float));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < n; j++) ws[r * n + j] = w[r * n + j] * (s ? s[j] : 1.0f);
    tr->quantize(ws, q, rows, n, NULL);
    tr->to_float(q, out, rows * n);
    if (s)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < n; j++) out[r * n + j] /= s[j];
    free(q);
    free(ws);
}

START_TEST(search_beats_plain_rounding_on_outliers) {
    static const nb_type types[] = {NB_TYPE_Q4_0, NB_TYPE_NF4, NB_TYPE_INT4_SYM_G128, NB_TYPE_Q4_K};
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const int64_t n = 256, rows = 96, ntok = 512;
    float *x = outlier_x(ntok, n, 11);
    float *w = malloc((size_t)(rows * n) * sizeof(float)), *q = malloc((size_t)(rows * n) * sizeof(float));
    uint64_t sd = 12;
    for (int64_t k = 0; k < rows * n; k++) w[k] = nbt_rand_normal(&sd) * 0.02f;
    double *H = calloc((size_t)(n * n), sizeof(double)), *mu = calloc((size_t)n, sizeof(double));
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t i = 0; i < n; i++) {
            mu[i] += fabs((double)x[t * n + i]) / (double)ntok;
            for (int64_t j = 0; j < n; j++) H[i * n + j] += 2.0 * x[t * n + i] * x[t * n + j] / (double)ntok;
        }
    float *s1 = malloc((size_t)n * sizeof(float)), *s2 = malloc((size_t)n * sizeof(float));
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        nb_awq_linear lin = {w, rows, types[k]};
        nb_awq_result r1, r2;
        ctx.n_threads = 1;
        ck_assert_msg(nb_awq_search(H, mu, n, &lin, 1, NULL, NULL, s1, &r1, "t", &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
        ctx.n_threads = 2;
        ck_assert_int_eq(nb_awq_search(H, mu, n, &lin, 1, NULL, NULL, s2, &r2, "t", &ctx), NB_OK);
        ck_assert(!memcmp(s1, s2, (size_t)n * sizeof(float)) && r1.alpha == r2.alpha && r1.err == r2.err);
        round_scaled(types[k], w, rows, n, NULL, q);
        double e_rtn = out_err(x, ntok, w, q, rows, n);
        round_scaled(types[k], w, rows, n, s1, q);
        double e_awq = out_err(x, ntok, w, q, rows, n);
        printf("awq %-14s alpha %.2f: output error AWQ / RTN = %.3f (library: %.3f)\n", nb_type_name(types[k]),
               r1.alpha, e_awq / e_rtn, r1.err / r1.err_plain);
        ck_assert(r1.alpha > 0);
        ck_assert(r1.err <= r1.err_plain);
        ck_assert_msg(e_awq < 0.9 * e_rtn, "%s: AWQ %g vs RTN %g", nb_type_name(types[k]), e_awq, e_rtn);
        /* the library's error is the same quantity (its H is 2 XᵀX / N: half of it is ours) */
        ck_assert_double_eq_tol(r1.err, e_awq, 1e-6 * e_awq);
    }
    /* bad input is an error, not a crash */
    mu[5] = NAN;
    nb_awq_linear lin = {w, rows, NB_TYPE_Q4_0};
    nb_awq_result r;
    ck_assert_int_eq(nb_awq_search(H, mu, n, &lin, 1, NULL, NULL, s1, &r, "blk.3.x", &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "blk.3.x"));
    mu[5] = 1;
    nb_awq_linear odd = {w, rows, NB_TYPE_Q4_K}; /* 100 columns: not a multiple of 256 */
    ck_assert_int_eq(nb_awq_search(H, mu, 100, &odd, 1, NULL, NULL, s1, &r, "t", &ctx), NB_ERR_RANGE);
    free(x); free(w); free(q); free(H); free(mu); free(s1); free(s2);
    nb_ctx_free(&ctx);
}
END_TEST

static const char *synth_llama(nb_ctx *ctx) {
    static char path[512];
    snprintf(path, sizeof path, "%s", nbt_path("awq_llama.gguf"));
    if (nbt_file_exists(path)) return path;
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.arch = "llama";
    o.n_layer = 2;
    o.n_embd = 128;
    o.n_ff = 256;
    o.n_head = 4;
    o.n_head_kv = 4; /* no GQA: the v -> o group applies too */
    o.n_vocab = 512;
    o.dtype = NB_TYPE_F32;
    o.seed = 9;
    ck_assert_msg(nb_synth_write(&o, path, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    return path;
}

static nb_gptq_model_opts awq_opts(void) {
    static char calib[1024];
    snprintf(calib, sizeof calib, "%s/text/calib.txt", nbt_data_dir());
    nb_gptq_model_opts o = {.calib_path = calib, .awq = true, .no_gptq = true};
    o.corpus.n_ctx = 32;
    o.corpus.max_tokens = 512;
    o.corpus.seed = 3;
    return o;
}

/* Experts chosen per token, per layer (at most 2 layers x 32 tokens x 2 used). */
typedef struct routes {
    int32_t sel[2][32 * 2];
    int64_t n[2];
} routes;

static void on_route(void *user, int layer, const int32_t *experts, const float *weights, int64_t n_tok, int n_used,
                     int n_expert) {
    routes *r = user;
    (void)weights;
    (void)n_expert;
    if (layer < 0 || layer >= 2 || n_used != 2) return;
    for (int64_t k = 0; k < n_tok * n_used && r->n[layer] < 64; k++) r->sel[layer][r->n[layer]++] = experts[k];
}

static float *logits_of_routes(const char *path, int n_tok, routes *rt, nb_ctx *ctx) {
    nb_engine *e = NULL;
    nb_engine_opts eo = {n_tok, n_tok, 1, true, NB_CACHE_F32};
    ck_assert_msg(nb_engine_open(path, &eo, &e, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    int32_t tok[32];
    for (int i = 0; i < n_tok; i++) tok[i] = (int32_t)((i * 37 + 5) % 500);
    float *lg = malloc((size_t)n_tok * (size_t)nb_engine_n_vocab(e) * sizeof(float));
    if (rt) {
        nb_engine_hooks hk = {NULL, on_route, rt};
        nb_engine_set_hooks(e, &hk);
    }
    ck_assert_int_eq(nb_engine_eval(e, tok, n_tok, 0, lg, ctx), NB_OK);
    nb_engine_free(e);
    return lg;
}

static float *logits_of(const char *path, int n_tok, nb_ctx *ctx) { return logits_of_routes(path, n_tok, NULL, ctx); }

/* src through the AWQ driver with alpha 0.5 and F16 targets (out) and plainly to F16 (plain): the
 * tensors `changed` differ between the two, `same` do not, and the logits stay within F16 tolerance of
 * the F32 source's. *scaled: groups scaled. */
static void check_folding(const char *src, const char *out, const char *plain, const char *const *changed,
                          size_t n_changed, const char *const *same, size_t n_same, size_t *scaled, nb_ctx *ctx) {
    nb_plan pl;
    ck_assert_int_eq(nbt_plan(src, nb_mix_find("f16"), &pl, ctx), NB_OK);
    nb_quant_opts qo = {0};
    nb_gptq_model_opts go = awq_opts();
    go.awq_alpha = 0.5;
    nb_gptq_model_result r;
    ck_assert_msg(nb_gptq_quantize_model(src, out, &pl, &qo, &go, &r, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    printf("awq folding %s: %zu groups, %zu scaled\n", src, r.n_awq_groups, r.n_awq_scaled);
    ck_assert_uint_eq(r.n_awq_scaled, r.n_awq_groups); /* a given alpha scales every group searched */
    *scaled = r.n_awq_scaled;
    nb_gptq_model_result_free(&r);
    nb_quant_result qr;
    ck_assert_int_eq(nb_quantize_model(src, plain, &pl, &qo, &qr, ctx), NB_OK);
    nb_quant_result_free(&qr);
    nb_model *ma = NULL, *mb = NULL;
    ck_assert_int_eq(nb_model_open(out, &ma, ctx), NB_OK);
    ck_assert_int_eq(nb_model_open(plain, &mb, ctx), NB_OK);
    for (size_t k = 0; k < n_changed + n_same; k++) {
        const char *nm = k < n_changed ? changed[k] : same[k - n_changed];
        const nb_tensor *a = nb_model_find(ma, nm), *b = nb_model_find(mb, nm);
        ck_assert_msg(a && b && a->type == b->type && a->nbytes == b->nbytes, "%s", nm);
        bool differ = memcmp(a->data, b->data, (size_t)a->nbytes) != 0;
        ck_assert_msg(differ == (k < n_changed), "%s %s", nm, differ ? "changed" : "unchanged");
    }
    nb_model_close(ma);
    nb_model_close(mb);
    /* ... and the function did not: logits within F16 tolerance of the F32 source's */
    const int nt = 24;
    routes r0 = {0}, ra = {0};
    float *l0 = logits_of_routes(src, nt, &r0, ctx), *la = logits_of_routes(out, nt, &ra, ctx),
          *lb = logits_of(plain, nt, ctx);
    for (int L = 0; L < 2; L++) { /* MoE: the same experts for every token (none: nothing recorded) */
        ck_assert_int_eq(r0.n[L], ra.n[L]);
        for (int64_t k = 0; k < r0.n[L]; k += 2) { /* the pair, in either order */
            int32_t a0 = r0.sel[L][k], a1 = r0.sel[L][k + 1], b0 = ra.sel[L][k], b1 = ra.sel[L][k + 1];
            ck_assert_msg((a0 == b0 && a1 == b1) || (a0 == b1 && a1 == b0), "layer %d token %lld: experts %d,%d vs %d,%d",
                          L, (long long)k / 2, a0, a1, b0, b1);
        }
    }
    double da = 0, db = 0, scale = 0;
    for (int64_t k = 0; k < (int64_t)nt * 512; k++) {
        da = fmax(da, fabs((double)la[k] - l0[k]));
        db = fmax(db, fabs((double)lb[k] - l0[k]));
        scale = fmax(scale, fabs((double)l0[k]));
    }
    printf("awq folding: max |logit - F32 logit| AWQ-scaled F16 %.3g, plain F16 %.3g (max |logit| %.3g)\n", da, db,
           scale);
    ck_assert_msg(da <= 4 * db + 1e-4 * scale, "AWQ-folded model differs: %g vs plain F16's %g", da, db);
    free(l0); free(la); free(lb);
    nb_plan_free(&pl);
}

START_TEST(folding_keeps_the_float_model) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.log_level = NB_LOG_WARN;
    static const char *const changed[] = {"blk.0.attn_norm.weight", "blk.1.ffn_norm.weight", "blk.0.attn_q.weight",
                                          "blk.1.ffn_up.weight", "blk.1.ffn_down.weight", "blk.0.attn_v.weight",
                                          "blk.0.attn_output.weight"};
    size_t scaled;
    check_folding(synth_llama(&ctx), nbt_path("awq_f16.gguf"), nbt_path("awq_f16_plain.gguf"), changed,
                  sizeof changed / sizeof *changed, NULL, 0, &scaled, &ctx);
    ck_assert_uint_eq(scaled, 2 * 4); /* per block: norm -> qkv, norm -> gate/up, up -> down, v -> o */
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(end_to_end_q4_0) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.log_level = NB_LOG_WARN;
    const char *src = synth_llama(&ctx);
    nb_plan pl;
    ck_assert_int_eq(nbt_plan(src, nb_mix_find("q4_0"), &pl, &ctx), NB_OK);
    nb_quant_opts qo = {0};
    for (int gq = 0; gq < 2; gq++) {
        unsigned char *bytes[2];
        size_t nbytes[2];
        for (int th = 1; th <= 2; th++) {
            char name[64];
            snprintf(name, sizeof name, "awq_q4_%d_%d.gguf", gq, th);
            const char *out = nbt_path(name);
            nb_gptq_model_opts go = awq_opts();
            go.no_gptq = gq == 0;
            ctx.n_threads = th;
            nb_gptq_model_result r;
            ck_assert_msg(nb_gptq_quantize_model(src, out, &pl, &qo, &go, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
            ck_assert_uint_eq(r.n_awq_groups, 2 * 4);
            ck_assert_uint_eq(r.n_rtn, 0);
            nb_gptq_model_result_free(&r);
            bytes[th - 1] = nbt_read_file(out, &nbytes[th - 1]);
            float *lg = logits_of(out, 8, &ctx);
            for (int k = 0; k < 8 * 512; k++) ck_assert(isfinite(lg[k]));
            free(lg);
        }
        ck_assert_uint_eq(nbytes[0], nbytes[1]);
        ck_assert_mem_eq(bytes[0], bytes[1], nbytes[0]);
        free(bytes[0]);
        free(bytes[1]);
    }
    nb_plan_free(&pl);
    nb_ctx_free(&ctx);
}
END_TEST

static const char *synth_moe_opts(nb_ctx *ctx, const char *name, uint32_t starve) {
    static char path[512];
    snprintf(path, sizeof path, "%s", nbt_path(name));
    if (nbt_file_exists(path)) return path;
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.arch = "mixtral";
    o.n_layer = 2;
    o.n_embd = 64;
    o.n_ff = 128;
    o.n_head = 4;
    o.n_head_kv = 4;
    o.n_expert = 4;
    o.n_expert_used = 2;
    o.n_vocab = 512;
    o.dtype = NB_TYPE_F32;
    o.seed = 11;
    o.starve_experts = starve;
    ck_assert_msg(nb_synth_write(&o, path, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    return path;
}

static const char *synth_moe(nb_ctx *ctx) { return synth_moe_opts(ctx, "awq_moe.gguf", 0); }

START_TEST(moe_folding_keeps_the_float_model) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.log_level = NB_LOG_WARN;
    /* the FFN input's scales: the norm (weight / s), every expert's gate and up (columns x s), the router
       (columns x s, kept F32); up -> down per expert */
    static const char *const changed[] = {"blk.0.ffn_up_exps.weight",   "blk.0.ffn_down_exps.weight",
                                          "blk.1.ffn_up_exps.weight",   "blk.1.ffn_down_exps.weight",
                                          "blk.0.ffn_gate_exps.weight", "blk.1.ffn_gate_exps.weight",
                                          "blk.0.ffn_norm.weight",      "blk.1.ffn_norm.weight",
                                          "blk.0.ffn_gate_inp.weight",  "blk.1.ffn_gate_inp.weight"};
    static const char *const same[] = {"token_embd.weight", "output_norm.weight"};
    size_t scaled;
    check_folding(synth_moe(&ctx), nbt_path("awq_moe_f16.gguf"), nbt_path("awq_moe_f16_plain.gguf"), changed,
                  sizeof changed / sizeof *changed, same, sizeof same / sizeof *same, &scaled, &ctx);
    /* per block: norm -> qkv, v -> o, norm -> experts' gate/up, and one group per expert that received tokens */
    ck_assert_uint_gt(scaled, 2 * 3);
    ck_assert_uint_le(scaled, 2 * (3 + 4));
    nb_ctx_free(&ctx);
}
END_TEST

/* Inputs of blk.0's experts in the source (the rows routed to each). */
typedef struct expert_inputs {
    float *x[4];
    int64_t n[4], cap[4], n_in;
} expert_inputs;

static void grab_expert_inputs(void *user, const char *name, int expert, const float *x, int64_t n_tok,
                               int64_t n_in) {
    expert_inputs *u = user;
    if (strcmp(name, "blk.0.ffn_up_exps.weight") || expert < 0 || expert >= 4) return;
    u->n_in = n_in;
    if (u->n[expert] + n_tok > u->cap[expert]) {
        u->cap[expert] = (u->n[expert] + n_tok) * 2;
        u->x[expert] = realloc(u->x[expert], (size_t)(u->cap[expert] * n_in) * sizeof(float));
    }
    memcpy(u->x[expert] + u->n[expert] * n_in, x, (size_t)(n_tok * n_in) * sizeof(float));
    u->n[expert] += n_tok;
}

static float *tensor_f32(nb_model *m, const char *name, int64_t *nel) {
    const nb_tensor *t = nb_model_find(m, name);
    ck_assert_ptr_nonnull(t);
    *nel = (int64_t)nb_tensor_nelements(t);
    float *f = malloc((size_t)*nel * sizeof(float));
    ck_assert_int_eq(nb_model_read_f32(m, (size_t)(t - m->tensors), f, NULL), NB_OK);
    return f;
}

/* Σ over experts and their routed source inputs of ‖FFN_e(x) − FFN'_e(x)‖², the
 * expert FFN down (silu(gate x) ⊙ up x) of the source vs of model `path`. */
static double expert_error(const char *src, const char *path, const expert_inputs *u, nb_ctx *ctx) {
    nb_model *ms = NULL, *mq = NULL;
    ck_assert_int_eq(nb_model_open(src, &ms, ctx), NB_OK);
    ck_assert_int_eq(nb_model_open(path, &mq, ctx), NB_OK);
    static const char *names[] = {"blk.0.ffn_gate_exps.weight", "blk.0.ffn_up_exps.weight",
                                  "blk.0.ffn_down_exps.weight"};
    float *ws[3], *wq[3];
    int64_t nel;
    for (int k = 0; k < 3; k++) {
        ws[k] = tensor_f32(ms, names[k], &nel);
        wq[k] = tensor_f32(mq, names[k], &nel);
    }
    /* the file's experts read the source's input times norm_file / norm_source (1 unless the FFN input's
       scales were folded into the norm) */
    float *ns = tensor_f32(ms, "blk.0.ffn_norm.weight", &nel), *nq = tensor_f32(mq, "blk.0.ffn_norm.weight", &nel);
    const int64_t d = u->n_in, ff = 128;
    ck_assert_int_eq(nel, d);
    double err = 0;
    float *h = malloc((size_t)ff * 2 * sizeof(float)), *xq = malloc((size_t)d * sizeof(float));
    for (int e = 0; e < 4; e++)
        for (int64_t t = 0; t < u->n[e]; t++) {
            for (int v = 0; v < 2; v++) { /* v 0: source, 1: the file */
                float **w = v ? wq : ws;
                const float *x = u->x[e] + t * d;
                if (v) {
                    for (int64_t j = 0; j < d; j++) xq[j] = (float)((double)x[j] * nq[j] / ns[j]);
                    x = xq;
                }
                for (int64_t r = 0; r < ff; r++) {
                    double g = 0, up = 0;
                    for (int64_t j = 0; j < d; j++) {
                        g += (double)w[0][(e * ff + r) * d + j] * x[j];
                        up += (double)w[1][(e * ff + r) * d + j] * x[j];
                    }
                    h[v * ff + r] = (float)(g / (1 + exp(-g)) * up);
                }
            }
            for (int64_t o = 0; o < d; o++) {
                double ys = 0, yq = 0;
                for (int64_t r = 0; r < ff; r++) {
                    ys += (double)ws[2][(e * d + o) * ff + r] * h[r];
                    yq += (double)wq[2][(e * d + o) * ff + r] * h[ff + r];
                }
                err += (ys - yq) * (ys - yq);
            }
        }
    free(h);
    free(xq);
    free(ns);
    free(nq);
    for (int k = 0; k < 3; k++) { free(ws[k]); free(wq[k]); }
    nb_model_close(ms);
    nb_model_close(mq);
    return err;
}

/* src through the AWQ driver and the same rounding without scales (out, plain), the plan F16 but for the
 * expert tensors named in `q4` (Q4_0) and `keep` (their source type, F32): the experts' output errors
 * recomputed (*ea, *ep), and the library's searched / plain errors of the per-expert (or FFN-input)
 * groups (*lib, *lib_plain). */
static void moe_errors(const char *src, const char *tag, const char *const *q4, int n_q4, const char *const *keep,
                       int n_keep, bool norm_groups, double *ea, double *ep, double *lib, double *lib_plain,
                       size_t *scaled, nb_ctx *ctx) {
    nb_ctx *cx = ctx;
    nb_plan pl;
    ck_assert_int_eq(nbt_plan(src, nb_mix_find("f16"), &pl, cx), NB_OK);
    for (size_t i = 0; i < pl.n_tensors; i++) {
        for (int k = 0; k < n_q4; k++)
            if (strstr(pl.tensors[i].name, q4[k])) pl.tensors[i].type = pl.tensors[i].wanted = NB_TYPE_Q4_0;
        for (int k = 0; k < n_keep; k++)
            if (strstr(pl.tensors[i].name, keep[k])) pl.tensors[i].type = pl.tensors[i].wanted = pl.tensors[i].src_type;
    }
    ck_assert_int_eq(nb_plan_retotal(&pl, cx), NB_OK);
    nb_quant_opts qo = {0};
    char no[64], np[64];
    snprintf(no, sizeof no, "awq_moe_%s.gguf", tag);
    snprintf(np, sizeof np, "awq_moe_%s_plain.gguf", tag);
    static char out[1024], plain[1024];
    snprintf(out, sizeof out, "%s", nbt_path(no));
    snprintf(plain, sizeof plain, "%s", nbt_path(np));
    nb_gptq_model_opts go = awq_opts();
    nb_gptq_model_result r;
    ck_assert_msg(nb_gptq_quantize_model(src, out, &pl, &qo, &go, &r, cx) == NB_OK, "%s", nb_errmsg(cx));
    *lib = norm_groups ? r.awq_norm_err : r.awq_expert_err;
    *lib_plain = norm_groups ? r.awq_norm_err_plain : r.awq_expert_err_plain;
    *scaled = r.n_awq_scaled;
    nb_gptq_model_result_free(&r);
    go.awq = false; /* the same rounding (importance from the same Hessians), no scales */
    ck_assert_msg(nb_gptq_quantize_model(src, plain, &pl, &qo, &go, &r, cx) == NB_OK, "%s", nb_errmsg(cx));
    ck_assert_uint_eq(r.n_awq_groups, 0);
    nb_gptq_model_result_free(&r);
    /* the source's inputs of block 0's experts on the calibration chunks the driver used (what the scales
       were searched on: random synthetic weights have no outlier channels whose gain would carry over to
       other text, so that is not what is checked here) */
    expert_inputs u = {0};
    nb_model *sm = NULL;
    nb_tokenizer *tok = NULL;
    nb_corpus corpus = {0};
    ck_assert_int_eq(nb_model_open(src, &sm, cx), NB_OK);
    ck_assert_int_eq(nb_tokenizer_create(&sm->kv, &tok, cx), NB_OK);
    ck_assert_int_eq(nb_corpus_load(go.calib_path, tok, 512, &go.corpus, &corpus, cx), NB_OK);
    nb_engine *e = NULL;
    nb_engine_opts eo = {corpus.n_ctx, corpus.n_ctx, 1, true, NB_CACHE_F32};
    ck_assert_int_eq(nb_engine_open_model(sm, &eo, &e, cx), NB_OK);
    nb_engine_hooks hk = {grab_expert_inputs, NULL, &u};
    nb_engine_set_hooks(e, &hk);
    for (size_t c = 0; c < corpus.n_chunks; c++) {
        nb_engine_reset(e);
        ck_assert_int_eq(nb_engine_eval(e, corpus.tokens + c * (size_t)corpus.n_ctx, corpus.n_ctx, 0, NULL, cx),
                         NB_OK);
    }
    nb_engine_free(e);
    nb_corpus_free(&corpus);
    nb_tokenizer_free(tok);
    nb_model_close(sm);
    *ea = expert_error(src, out, &u, cx);
    *ep = expert_error(src, plain, &u, cx);
    for (int k = 0; k < 4; k++) free(u.x[k]);
    nb_plan_free(&pl);
}

START_TEST(moe_expert_error_goes_down) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.log_level = NB_LOG_WARN;
    static const char *const q4[] = {"ffn_down_exps"}; /* only the experts' down projections rounded coarsely */
    double ea, ep, lib, lib_plain;
    size_t scaled;
    moe_errors(synth_moe(&ctx), "q4", q4, 1, NULL, 0, false, &ea, &ep, &lib, &lib_plain, &scaled, &ctx);
    printf("awq moe: %zu groups scaled; experts' output error AWQ %.4g vs unscaled %.4g (%.3f); library's sampled "
           "rows %.4g vs %.4g\n", scaled, ea, ep, ea / ep, lib, lib_plain);
    ck_assert_uint_gt(scaled, 0);
    ck_assert_msg(lib < lib_plain, "search: %g vs %g", lib, lib_plain);
    ck_assert_msg(ea < ep, "AWQ experts' output error %g not below unscaled %g", ea, ep);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(moe_ffn_input_outlier) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.log_level = NB_LOG_WARN;
    /* one large residual channel (synth's starve_experts: element 0 of every embedding is 10); gate and up
       of every expert in Q4_0, down kept in F32 (so no up -> down scales: only the shared FFN-input ones) */
    const char *src = synth_moe_opts(&ctx, "awq_moe_outlier.gguf", 1);
    static const char *const q4[] = {"ffn_gate_exps", "ffn_up_exps"}, *const keep[] = {"ffn_down_exps"};
    double ea, ep, lib, lib_plain;
    size_t scaled;
    moe_errors(src, "gu", q4, 2, keep, 1, true, &ea, &ep, &lib, &lib_plain, &scaled, &ctx);
    printf("awq moe FFN input: %zu groups scaled; experts' output error AWQ %.4g vs unscaled %.4g (%.3f); "
           "library's pooled sampled rows %.4g vs %.4g\n", scaled, ea, ep, ea / ep, lib, lib_plain);
    ck_assert_msg(lib > 0 && lib < lib_plain, "search: %g vs %g", lib, lib_plain);
    ck_assert_msg(ea < ep, "AWQ experts' output error %g not below unscaled %g", ea, ep);
    /* the scales went into block 0's norm, and its router kept its type */
    nb_model *a = NULL, *b = NULL;
    ck_assert_int_eq(nb_model_open(src, &a, &ctx), NB_OK);
    ck_assert_int_eq(nb_model_open(nbt_path("awq_moe_gu.gguf"), &b, &ctx), NB_OK);
    const nb_tensor *na = nb_model_find(a, "blk.0.ffn_norm.weight"), *nb = nb_model_find(b, "blk.0.ffn_norm.weight");
    ck_assert(na && nb && memcmp(na->data, nb->data, (size_t)na->nbytes) != 0);
    const nb_tensor *ra = nb_model_find(a, "blk.0.ffn_gate_inp.weight"), *rb = nb_model_find(b, "blk.0.ffn_gate_inp.weight");
    ck_assert(ra && rb && ra->type == rb->type && memcmp(ra->data, rb->data, (size_t)ra->nbytes) != 0);
    nb_model_close(a);
    nb_model_close(b);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("calib/awq");
    TCase *tc = tcase_create("awq");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, search_beats_plain_rounding_on_outliers);
    tcase_add_test(tc, folding_keeps_the_float_model);
    tcase_add_test(tc, end_to_end_q4_0);
    tcase_add_test(tc, moe_folding_keeps_the_float_model);
    tcase_add_test(tc, moe_expert_error_goes_down);
    tcase_add_test(tc, moe_ffn_input_outlier);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
