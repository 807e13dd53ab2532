/* tests/calib/test_gptq_model.c — sequential whole-model GPTQ (calib/gptq_model.h)
 * on tiny synthetic models: end to end on a dense llama (the output loads and
 * runs; every block weight went through GPTQ; per weight, the layer-output
 * error on the calibration activations — recomputed here from the output
 * model's own activations, independently of the library — is below plain
 * rounding's; 1 vs 3 threads give identical bytes), and on a MoE model whose
 * router can never pick one expert (that expert is reported, rounded to
 * nearest with exactly plain rounding's bytes, routers stay float); with
 * all_experts the same expert gets a Hessian from every token and GPTQ. */
#include "calib/gptq_model.h"
#include "engine/engine.h"
#include "formats/synth.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *synth(const char *file, const char *arch, uint32_t dim, uint32_t ff, uint32_t n_expert,
                         uint32_t n_used, nb_ctx *ctx) {
    static char path[8][512];
    static int slot;
    char *p = path[slot++ % 8];
    snprintf(p, 512, "%s", nbt_path(file));
    if (nbt_file_exists(p)) return p;
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.arch = arch;
    o.n_layer = 2;
    o.n_embd = dim;
    o.n_ff = ff;
    o.n_head = 4;
    o.n_head_kv = 2;
    o.n_expert = n_expert;
    o.n_expert_used = n_used;
    o.n_vocab = 512;
    o.dtype = NB_TYPE_F32;
    o.seed = 7;
    ck_assert_msg(nb_synth_write(&o, p, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    return p;
}

static nb_gptq_model_opts gopts(void) {
    static char calib[1024];
    snprintf(calib, sizeof calib, "%s/text/calib.txt", nbt_data_dir());
    nb_gptq_model_opts o = {.calib_path = calib};
    o.corpus.n_ctx = 32;
    o.corpus.max_tokens = 512; /* 4 x n_in of the llama: a well-conditioned Hessian */
    o.corpus.seed = 3;
    o.compare_rtn = true;
    return o;
}

/* ---- independent check: activations of the quantized model -------------------------------------- */

typedef struct capture {
    char name[8][64];
    float *x[8];
    int64_t n_tok[8], n_in[8];
    int n;
} capture;

static void cap_matmul(void *user, const char *name, int expert, const float *x, int64_t n_tok, int64_t n_in) {
    capture *c = user;
    if (expert >= 0 || strncmp(name, "blk.", 4)) return;
    int k = 0;
    for (; k < c->n; k++)
        if (!strcmp(c->name[k], name)) break;
    if (k == c->n) {
        if (k >= 8) return; /* the first 8 weights: block 0's seven and block 1's attn_q */
        snprintf(c->name[k], sizeof c->name[k], "%s", name);
        c->n_in[k] = n_in;
        c->n++;
    }
    float *nx = realloc(c->x[k], (size_t)((c->n_tok[k] + n_tok) * n_in) * sizeof(float));
    ck_assert_ptr_nonnull(nx);
    memcpy(nx + c->n_tok[k] * n_in, x, (size_t)(n_tok * n_in) * sizeof(float));
    c->x[k] = nx;
    c->n_tok[k] += n_tok;
}

/* ‖X (W - Q)ᵀ‖² in double */
static double out_err(const float *x, int64_t n_tok, const float *w, const float *q, int64_t n_out, int64_t n_in) {
    double e = 0;
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t r = 0; r < n_out; r++) {
            double s = 0;
            for (int64_t j = 0; j < n_in; j++) s += (double)x[t * n_in + j] * ((double)w[r * n_in + j] - q[r * n_in + j]);
            e += s * s;
        }
    return e;
}

static float *read_f32(const char *path, const char *name, int64_t *n_out, int64_t *n_in, nb_ctx *ctx) {
    nb_model *m = NULL;
    ck_assert_int_eq(nb_model_open(path, &m, ctx), NB_OK);
    const nb_tensor *t = nb_model_find(m, name);
    ck_assert_ptr_nonnull(t);
    *n_in = t->ne[0];
    *n_out = t->ne[1];
    float *f = malloc(nb_tensor_nelements(t) * sizeof(float));
    ck_assert_int_eq(nb_model_read_f32(m, (size_t)(t - m->tensors), f, ctx), NB_OK);
    nb_model_close(m);
    return f;
}

START_TEST(dense_llama_end_to_end) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *src = synth("gq_llama.gguf", "llama", 128, 256, 0, 0, &ctx);
    const char *out1 = nbt_path("gq_out1.gguf"), *out3 = nbt_path("gq_out3.gguf"), *rtn = nbt_path("gq_rtn.gguf");
    nb_quant_opts qo = {0};
    nb_plan pl;
    ck_assert_int_eq(nbt_plan(src, nb_mix_find(_i == 0 ? "q4_0" : "int4-g128"), &pl, &ctx), NB_OK);
    nb_gptq_model_opts go = gopts();
    go.gptq.act_order = _i == 1;
    nb_gptq_model_result r;
    ck_assert_msg(nb_gptq_quantize_model(src, out1, &pl, &qo, &go, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_int_eq(r.n_layer, 2);
    ck_assert_uint_eq(r.n_chunks, 16);
    ck_assert_uint_eq(r.n_gptq, 14); /* 2 blocks x (q, k, v, o, gate, up, down) */
    ck_assert_uint_eq(r.n_rtn, 0);
    ck_assert_int_eq(r.n_zero_experts, 0);
    ck_assert_uint_eq(r.n_stats, 14);
    size_t n_pre = 0;
    for (size_t i = 0; i < r.quant.n_tensors; i++) n_pre += r.quant.tensors[i].prequant;
    ck_assert_uint_ge(n_pre, 14);
    for (size_t k = 0; k < r.n_stats; k++) {
        const nb_gptq_tensor_stat *s = &r.stats[k];
        ck_assert_uint_eq(s->n_tok, 512);
        ck_assert_msg(s->err_gptq >= 0 && s->err_gptq < s->err_rtn && s->err_rtn < s->err_w,
                      "%s: gptq %g rtn %g |XW| %g", s->name, s->err_gptq, s->err_rtn, s->err_w);
    }
    nb_gptq_model_result_free(&r);

    /* thread count does not change a byte */
    ctx.n_threads = 3;
    ck_assert_msg(nb_gptq_quantize_model(src, out3, &pl, &qo, &go, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_gptq_model_result_free(&r);
    ctx.n_threads = 1;
    size_t n1, n3;
    unsigned char *b1 = nbt_read_file(out1, &n1), *b3 = nbt_read_file(out3, &n3);
    ck_assert_uint_eq(n1, n3);
    ck_assert_mem_eq(b1, b3, n1);
    free(b1);
    free(b3);

    /* plain rounding for comparison */
    nb_quant_result qr;
    ck_assert_int_eq(nb_quantize_model(src, rtn, &pl, &qo, &qr, &ctx), NB_OK);
    nb_quant_result_free(&qr);

    /* the output loads and runs; its activations on the calibration chunks
     * (blocks < L quantized, as GPTQ saw them) feed the independent check */
    nb_engine *e = NULL;
    nb_engine_opts eo = {.n_ctx = 32};
    ck_assert_msg(nb_engine_open(out1, &eo, &e, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_tokenizer *tok = NULL;
    ck_assert_int_eq(nb_tokenizer_create(&nb_engine_model(e)->kv, &tok, &ctx), NB_OK);
    nb_corpus corpus;
    ck_assert_int_eq(nb_corpus_load(go.calib_path, tok, nb_engine_n_vocab(e), &go.corpus, &corpus, &ctx), NB_OK);
    ck_assert_uint_eq(corpus.n_chunks, 16);
    capture cap;
    memset(&cap, 0, sizeof cap);
    nb_engine_hooks h = {cap_matmul, NULL, &cap};
    nb_engine_set_hooks(e, &h);
    float *logits = malloc((size_t)32 * (size_t)nb_engine_n_vocab(e) * sizeof(float));
    for (size_t c = 0; c < corpus.n_chunks; c++) {
        nb_engine_reset(e);
        ck_assert_int_eq(nb_engine_eval(e, corpus.tokens + c * 32, 32, 0, logits, &ctx), NB_OK);
        for (int64_t k = 0; k < 32 * (int64_t)nb_engine_n_vocab(e); k++) ck_assert(isfinite(logits[k]));
    }
    free(logits);
    nb_corpus_free(&corpus);
    nb_tokenizer_free(tok);
    nb_engine_free(e);
    ck_assert_int_eq(cap.n, 8);
    for (int k = 0; k < cap.n; k++) {
        int64_t no, ni;
        float *w = read_f32(src, cap.name[k], &no, &ni, &ctx);
        float *qg = read_f32(out1, cap.name[k], &no, &ni, &ctx);
        float *qr2 = read_f32(rtn, cap.name[k], &no, &ni, &ctx);
        double eg = out_err(cap.x[k], cap.n_tok[k], w, qg, no, ni);
        double er = out_err(cap.x[k], cap.n_tok[k], w, qr2, no, ni);
        ck_assert_msg(eg < er, "%s: GPTQ error %g >= plain rounding %g on the model's own activations", cap.name[k],
                      eg, er);
        free(w);
        free(qg);
        free(qr2);
        free(cap.x[k]);
    }
    nb_plan_free(&pl);
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- MoE: an expert no token can reach -------------------------------------------------------------- */

typedef struct logcap {
    char text[16384];
    int warns;
} logcap;
static void cap_log(void *user, nb_log_level lv, const char *line) {
    logcap *c = user;
    if (lv == NB_LOG_WARN) c->warns++;
    strncat(c->text, line, sizeof c->text - strlen(c->text) - 2);
    strcat(c->text, "\n");
}

START_TEST(moe_expert_without_tokens) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    logcap lc;
    memset(&lc, 0, sizeof lc);
    ctx.log_fn = cap_log;
    ctx.log_user = &lc;
    ctx.log_level = NB_LOG_WARN;
    const char *base = synth("gq_moe_base.gguf", "mixtral", 64, 64, 4, 1, &ctx);
    /* layer 0's router row 3 := (row 0 + row 1) / 2: its logit lies between
     * two others', so with one expert per token it can never be chosen */
    nb_model *m = NULL;
    ck_assert_int_eq(nb_model_open(base, &m, &ctx), NB_OK);
    const nb_tensor *t = nb_model_find(m, "blk.0.ffn_gate_inp.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->type, NB_TYPE_F32);
    ck_assert(t->file_offset > 0 && t->ne[0] == 64 && t->ne[1] == 4);
    uint64_t off = t->file_offset;
    nb_model_close(m);
    size_t n;
    unsigned char *b = nbt_read_file(base, &n);
    float *row = (float *)(void *)(b + off);
    for (int j = 0; j < 64; j++) {
        float r0, r1, r3;
        memcpy(&r0, b + off + 4 * (size_t)j, 4);
        memcpy(&r1, b + off + 4 * (size_t)(64 + j), 4);
        r3 = (r0 + r1) / 2;
        memcpy(b + off + 4 * (size_t)(3 * 64 + j), &r3, 4);
    }
    (void)row;
    const char *src = nbt_path("gq_moe.gguf");
    nbt_write_file(src, b, n);
    free(b);

    const char *out = nbt_path("gq_moe_out.gguf"), *rtn = nbt_path("gq_moe_rtn.gguf");
    nb_quant_opts qo = {0};
    nb_plan pl;
    ck_assert_int_eq(nbt_plan(src, nb_mix_find("nf4"), &pl, &ctx), NB_OK);
    nb_gptq_model_opts go = gopts();
    nb_gptq_model_result r;
    ck_assert_msg(nb_gptq_quantize_model(src, out, &pl, &qo, &go, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    /* layer 0, expert 3: gate, up and down slices rounded plainly, each reported */
    ck_assert_int_ge(r.n_zero_experts, 3);
    ck_assert_uint_eq(r.n_rtn, (size_t)r.n_zero_experts);
    ck_assert_msg(strstr(lc.text, "tensor 'blk.0.ffn_gate_exps.weight': expert 3 received no calibration token"),
                  "%s", lc.text);
    ck_assert(strstr(lc.text, "tensor 'blk.0.ffn_down_exps.weight': expert 3 received no calibration token"));
    for (size_t k = 0; k < r.n_stats; k++) {
        const nb_gptq_tensor_stat *s = &r.stats[k];
        ck_assert(!(s->expert == 3 && !strncmp(s->name, "blk.0.", 6)));
        ck_assert_msg(s->err_gptq <= s->err_rtn, "%s[%d]: gptq %g rtn %g", s->name, s->expert, s->err_gptq,
                      s->err_rtn);
    }
    ck_assert_uint_eq(r.n_gptq + r.n_rtn, 2 * (4 + 4 * 3)); /* per block: q k v o + 4 experts x 3 */
    nb_gptq_model_result_free(&r);
    nb_quant_result qr;
    ck_assert_int_eq(nb_quantize_model(src, rtn, &pl, &qo, &qr, &ctx), NB_OK);
    nb_quant_result_free(&qr);
    /* expert 3's slice equals plain rounding; expert 0's does not; routers stay F32 */
    nb_model *mo = NULL, *mr = NULL;
    ck_assert_int_eq(nb_model_open(out, &mo, &ctx), NB_OK);
    ck_assert_int_eq(nb_model_open(rtn, &mr, &ctx), NB_OK);
    const nb_tensor *to = nb_model_find(mo, "blk.0.ffn_up_exps.weight"), *tr = nb_model_find(mr, "blk.0.ffn_up_exps.weight");
    ck_assert_int_eq(to->type, NB_TYPE_NF4);
    ck_assert_uint_eq(to->nbytes, tr->nbytes);
    size_t slice = (size_t)to->nbytes / 4;
    ck_assert_mem_eq((const char *)to->data + 3 * slice, (const char *)tr->data + 3 * slice, slice);
    ck_assert(memcmp(to->data, tr->data, slice) != 0);
    ck_assert_int_eq(nb_model_find(mo, "blk.0.ffn_gate_inp.weight")->type, NB_TYPE_F32);
    nb_model_close(mo);
    /* all_experts: every expert slice by GPTQ, from every calibration token */
    const char *all = nbt_path("gq_moe_all.gguf");
    go.all_experts = true;
    lc.warns = 0;
    ck_assert_msg(nb_gptq_quantize_model(src, all, &pl, &qo, &go, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_int_eq(r.n_zero_experts, 0);
    ck_assert_uint_eq(r.n_rtn, 0);
    ck_assert_uint_eq(r.n_gptq, 2 * (4 + 4 * 3));
    ck_assert_int_eq(lc.warns, 0);
    int seen = 0;
    for (size_t k = 0; k < r.n_stats; k++) {
        const nb_gptq_tensor_stat *s = &r.stats[k];
        if (s->expert >= 0) ck_assert_uint_eq(s->n_tok, r.n_tokens); /* every token, every expert */
        seen += s->expert == 3 && !strncmp(s->name, "blk.0.", 6);
    }
    ck_assert_int_eq(seen, 3);
    nb_gptq_model_result_free(&r);
    ck_assert_int_eq(nb_model_open(all, &mo, &ctx), NB_OK);
    to = nb_model_find(mo, "blk.0.ffn_up_exps.weight");
    ck_assert(memcmp((const char *)to->data + 3 * slice, (const char *)tr->data + 3 * slice, slice) != 0);
    nb_model_close(mo);
    nb_model_close(mr);
    nb_plan_free(&pl);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(errors) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *src = synth("gq_llama.gguf", "llama", 128, 256, 0, 0, &ctx);
    nb_quant_opts qo = {0};
    nb_plan pl;
    ck_assert_int_eq(nbt_plan(src, nb_mix_find("q4_0"), &pl, &ctx), NB_OK);
    nb_gptq_model_opts go = gopts();
    nb_gptq_model_result r;
    go.calib_path = NULL;
    ck_assert_int_eq(nb_gptq_quantize_model(src, nbt_path("e.gguf"), &pl, &qo, &go, &r, &ctx), NB_ERR_INVALID);
    nb_gptq_model_result_free(&r);
    go = gopts();
    go.corpus.max_tokens = 100000000; /* more than the text has */
    ck_assert_int_eq(nb_gptq_quantize_model(src, nbt_path("e.gguf"), &pl, &qo, &go, &r, &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "too short"));
    nb_gptq_model_result_free(&r);
    ck_assert(!nbt_file_exists(nbt_path("e.gguf")));
    go = gopts();
    ck_assert_int_eq(nb_gptq_quantize_model(src, src, &pl, &qo, &go, &r, &ctx), NB_ERR_INVALID);
    nb_gptq_model_result_free(&r);
    nb_plan_free(&pl);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("calib/gptq_model");
    TCase *tc = tcase_create("gptq_model");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, dense_llama_end_to_end, 0, 2);
    tcase_add_test(tc, moe_expert_without_tokens);
    tcase_add_test(tc, errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
