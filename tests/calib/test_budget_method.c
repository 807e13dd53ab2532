/* tests/calib/test_budget_method.c — AWQ as a choice of the mixed planner
 * (calib/budget_method.h measures, quant/budget.h chooses, calib/gptq_model.h
 * applies), on a synthetic llama whose norms give input channel 3 of every
 * attention and FFN a weight of 30 (an outlier channel, the case AWQ is for)
 * and the same llama without it:
 *   - the measurement: AWQ's error ratios, units and seconds are the same at
 *     1 and 2 threads; every block weight belongs to its block's attention
 *     (q, k, v, o) or FFN (gate, up, down) unit; ratios lie in (0, 1], and
 *     gate/up's are lower with the outlier channel than without;
 *   - the plan: the same types and bytes as the plan without methods, and the
 *     same plan from the 2-thread measurement; whole units only, kept in the
 *     plan JSON; a time budget is never exceeded. On this tiny fixture GPTQ's
 *     ratios, fitted on as many tokens as a weight has columns, are far below
 *     AWQ's, so the case built to favour AWQ also sets GPTQ's ratios to 0.95
 *     (a type GPTQ barely helps): then AWQ is chosen; with every AWQ ratio 1
 *     (no predicted gain) it is not, and the plan is the GPTQ-only one;
 *   - the driver: a plan marking block 0's attention and FFN awq writes those
 *     tensors (and block 0's norms) byte for byte as `--method awq` does, and
 *     every other tensor as plain rounding does;
 *   - the job: `--method mixed --plan` with that favoured plan runs AWQ on
 *     exactly the tensors it marks, and its imatrix tensors are the imatrix
 *     job's bytes. */
#include "calib/budget_method.h"
#include "calib/gptq_model.h"
#include "calib/job.h"
#include "formats/model.h"
#include "formats/synth.h"
#include "quant/budget.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUTLIER 30.0f

/* The synthetic llama with norm weight OUTLIER at input channel 3 of every attn_norm / ffn_norm. */
static const char *plain_llama(void) {
    static char plain[512];
    snprintf(plain, sizeof plain, "%s", nbt_path("bm_plain.gguf"));
    if (nbt_file_exists(plain)) return plain;
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.arch = "llama";
    o.n_layer = 2;
    o.n_embd = 64;
    o.n_ff = 128;
    o.n_head = 4;
    o.n_head_kv = 4; /* no GQA: v -> o is a group too */
    o.n_vocab = 320;
    o.dtype = NB_TYPE_F32;
    o.seed = 7;
    ck_assert_msg(nb_synth_write(&o, plain, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_ctx_free(&ctx);
    return plain;
}

static const char *outlier_llama(void) {
    static char path[512];
    snprintf(path, sizeof path, "%s", nbt_path("bm_outlier.gguf"));
    if (nbt_file_exists(path)) return path;
    const char *plain = plain_llama();
    nb_ctx ctx;
    nbt_ctx(&ctx);
    size_t n = 0;
    unsigned char *bytes = nbt_read_file(plain, &n);
    nb_model *m = NULL;
    ck_assert_int_eq(nb_model_open(plain, &m, &ctx), NB_OK);
    int patched = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *t = &m->tensors[i];
        if (!strstr(t->name, "attn_norm.weight") && !strstr(t->name, "ffn_norm.weight")) continue;
        ck_assert(t->type == NB_TYPE_F32 && t->file_offset > 0 && t->file_offset + t->nbytes <= n);
        float v = OUTLIER;
        memcpy(bytes + t->file_offset + 3 * sizeof(float), &v, sizeof v);
        patched++;
    }
    ck_assert_int_eq(patched, 4);
    nb_model_close(m);
    nbt_write_file(path, bytes, n);
    free(bytes);
    nb_ctx_free(&ctx);
    return path;
}

static const char *calib_path(void) {
    static char calib[1024];
    snprintf(calib, sizeof calib, "%s/text/calib.txt", nbt_data_dir());
    return calib;
}

static nb_corpus_opts corpus_opts(void) {
    nb_corpus_opts co = {0};
    co.n_ctx = 32;
    co.max_tokens = 512;
    co.seed = 3;
    return co;
}

/* Open, measure the types' errors and the methods at `threads`. */
static void measure(const char *src, int threads, nb_model **m, nb_sens *s) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.n_threads = threads;
    ctx.log_level = NB_LOG_WARN;
    ck_assert_int_eq(nb_model_open(src, m, &ctx), NB_OK);
    nb_sens_opts so = {.runtime = NB_RUNTIME_LLAMACPP};
    ck_assert_msg(nb_sens_measure(*m, &so, s, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_method_opts mo = {.calib_path = calib_path(), .corpus = corpus_opts()};
    nb_method_info info;
    ck_assert_msg(nb_method_measure(*m, s, &mo, &info, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_int_eq(info.layer, 1);
    nb_ctx_free(&ctx);
}

static bool is(const char *name, const char *part) { return strstr(name, part) != NULL; }

/* Mean AWQ ratio of gate/up over their quantized candidates. */
static double gate_up_ratio(const nb_model *m, const nb_sens *s) {
    double sum = 0;
    int n = 0;
    for (size_t i = 0; i < s->n_tensors; i++) {
        const nb_sens_tensor *e = &s->tensors[i];
        if (!is(m->tensors[i].name, "ffn_gate") && !is(m->tensors[i].name, "ffn_up")) continue;
        for (size_t k = 0; k < e->n_cands; k++)
            if (e->awq_ratio[k] > 0 && e->cands[k].type != NB_TYPE_F16) {
                sum += e->awq_ratio[k];
                n++;
            }
    }
    ck_assert_int_gt(n, 0);
    return sum / n;
}

static void check_measured(const nb_model *m1, const nb_sens *s1, const nb_sens *s2) {
    size_t n_ratio = 0;
    for (size_t i = 0; i < s1->n_tensors; i++) {
        const nb_sens_tensor *a = &s1->tensors[i], *b = &s2->tensors[i];
        const char *nm = m1->tensors[i].name;
        ck_assert(a->awq_unit == b->awq_unit && a->sec_awq == b->sec_awq); /* any thread count */
        for (size_t k = 0; k < a->n_cands; k++) {
            ck_assert(a->awq_ratio[k] == b->awq_ratio[k]);
            ck_assert_msg(a->awq_ratio[k] >= 0 && a->awq_ratio[k] <= 1, "%s: %g", nm, a->awq_ratio[k]);
            n_ratio += a->awq_ratio[k] > 0;
        }
        bool blk = !strncmp(nm, "blk.", 4) && a->planned;
        ck_assert_msg((a->awq_unit != 0) == blk, "%s: unit %zu", nm, a->awq_unit);
        if (!blk) continue;
        ck_assert(a->sec_awq > a->sec_round);
        /* the unit's first tensor: attn_q of the block for the attention, ffn_gate (or the first FFN weight) */
        const nb_tensor *lead = &m1->tensors[a->awq_unit - 1];
        ck_assert_msg(!strncmp(lead->name, nm, 6), "%s: unit led by %s", nm, lead->name); /* same "blk.N." */
        bool attn = is(nm, "attn_");
        ck_assert_msg(is(lead->name, "attn_") == attn, "%s: unit led by %s", nm, lead->name);
    }
    ck_assert_uint_gt(n_ratio, 14 * 3);
}

/* A file budget a quarter of the way from the smallest to the largest plan. */
static uint64_t budget_bytes(const nb_model *m, const nb_sens *s) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_plan p;
    nb_budget_result r;
    nb_budget b = {.kind = NB_BUDGET_FILE, .bytes = UINT64_MAX / 2};
    ck_assert(nb_budget_plan(m, s, &b, &p, &r, &ctx) == NB_OK);
    uint64_t hi = r.file_bytes, lo = s->header_bytes;
    for (size_t i = 0; i < s->n_tensors; i++) {
        uint64_t bytes = s->tensors[i].planned ? s->tensors[i].cands[0].bytes : p.tensors[i].bytes_out;
        lo += (bytes + s->alignment - 1) / s->alignment * s->alignment;
    }
    nb_plan_free(&p);
    nb_ctx_free(&ctx);
    return lo + (hi - lo) / 4;
}

/* Every unit all awq or none. */
static void units_whole(const nb_sens *s, const nb_plan *p) {
    for (size_t i = 0; i < p->n_tensors; i++) {
        size_t u = s->tensors[i].awq_unit;
        if (!u) {
            ck_assert_int_ne(p->tensors[i].method, NB_PLAN_METHOD_AWQ);
            continue;
        }
        bool lead_awq = p->tensors[u - 1].method == NB_PLAN_METHOD_AWQ;
        ck_assert_msg((p->tensors[i].method == NB_PLAN_METHOD_AWQ) == lead_awq, "%s: unit split",
                      p->tensors[i].name);
    }
}

/* The case built to favour AWQ: GPTQ's ratios 0.95. */
static void weak_gptq(nb_sens *s) {
    for (size_t i = 0; i < s->n_tensors; i++)
        for (size_t k = 0; k < s->tensors[i].n_cands; k++)
            if (s->tensors[i].gptq_ratio[k] > 0) s->tensors[i].gptq_ratio[k] = 0.95;
}

START_TEST(awq_measured_and_planned) {
    nb_model *m = NULL, *m2 = NULL, *m0 = NULL;
    nb_sens s, s2, s0;
    measure(outlier_llama(), 1, &m, &s);
    measure(outlier_llama(), 2, &m2, &s2);
    measure(plain_llama(), 1, &m0, &s0);
    check_measured(m, &s, &s2);
    double ro = gate_up_ratio(m, &s), rp = gate_up_ratio(m0, &s0);
    printf("awq measured: gate/up's mean AWQ ratio %.3f with the outlier channel, %.3f without\n", ro, rp);
    ck_assert_msg(ro < rp, "outlier %g, plain %g", ro, rp);
    nb_sens_free(&s0);
    nb_model_close(m0);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_budget b = {.kind = NB_BUDGET_FILE, .bytes = budget_bytes(m, &s)};
    nb_plan p0, p, q;
    nb_budget_result r0, r, rq;
    ck_assert_int_eq(nb_budget_plan(m, &s, &b, &p0, &r0, &ctx), NB_OK);
    b.methods = true; /* lambda 0: wherever a method is predicted to help */
    ck_assert_int_eq(nb_budget_plan(m, &s, &b, &p, &r, &ctx), NB_OK);
    ck_assert_int_eq(nb_budget_plan(m2, &s2, &b, &q, &rq, &ctx), NB_OK); /* measured at 2 threads */
    ck_assert_uint_eq(r.file_bytes, r0.file_bytes);
    size_t n_awq = 0;
    for (size_t i = 0; i < p.n_tensors; i++) {
        ck_assert_int_eq(p.tensors[i].type, p0.tensors[i].type);
        ck_assert_int_eq(q.tensors[i].type, p.tensors[i].type);
        ck_assert_int_eq(q.tensors[i].method, p.tensors[i].method);
        ck_assert(q.tensors[i].pred_err == p.tensors[i].pred_err || (isnan(q.tensors[i].pred_err) &&
                                                                     isnan(p.tensors[i].pred_err)));
        n_awq += p.tensors[i].method == NB_PLAN_METHOD_AWQ;
    }
    printf("awq planned (measured): %zu gptq, %zu awq of %zu; predicted loss %.4g (imatrix %.4g); work %.3g s\n",
           r.n_gptq, r.n_awq, r.n_planned, r.pred_loss, r.pred_loss_round, r.sec_methods);
    ck_assert_uint_eq(n_awq, r.n_awq);
    ck_assert(r.pred_loss < r0.pred_loss && r.pred_loss_round == r0.pred_loss);
    units_whole(&s, &p);
    nb_plan_free(&p);
    /* the case built for AWQ */
    weak_gptq(&s);
    ck_assert_int_eq(nb_budget_plan(m, &s, &b, &p, &r, &ctx), NB_OK);
    n_awq = 0;
    for (size_t i = 0; i < p.n_tensors; i++) n_awq += p.tensors[i].method == NB_PLAN_METHOD_AWQ;
    printf("awq planned (GPTQ weak): %zu gptq, %zu awq of %zu; predicted loss %.4g (imatrix %.4g)\n", r.n_gptq,
           r.n_awq, r.n_planned, r.pred_loss, r.pred_loss_round);
    ck_assert_uint_eq(n_awq, r.n_awq);
    ck_assert_uint_gt(r.n_awq, 0);
    ck_assert_uint_eq(r.file_bytes, r0.file_bytes);
    units_whole(&s, &p);
    /* the plan JSON keeps "awq" */
    char *js = nb_plan_to_json(&p);
    ck_assert_ptr_nonnull(strstr(js, "\"method\":\"awq\""));
    nb_plan pj;
    ck_assert_msg(nb_plan_from_json(js, "t", &pj, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    for (size_t i = 0; i < p.n_tensors; i++) ck_assert_int_eq(pj.tensors[i].method, p.tensors[i].method);
    nb_plan_free(&pj);
    free(js);
    nb_plan_free(&q);
    /* time budgets: never over, whole units, more time never predicts more loss */
    double prev = INFINITY;
    const double all = r.sec_methods - r.sec_all_round;
    nb_plan_free(&p);
    for (int k = 1; k <= 6; k++) {
        b.method_seconds = all * k / 6.0;
        ck_assert_int_eq(nb_budget_plan(m, &s, &b, &p, &r, &ctx), NB_OK);
        ck_assert(r.sec_methods - r.sec_all_round <= b.method_seconds * (1 + 1e-12));
        ck_assert_msg(r.pred_loss <= prev, "time %g: loss %g > %g", b.method_seconds, r.pred_loss, prev);
        units_whole(&s, &p);
        prev = r.pred_loss;
        nb_plan_free(&p);
    }
    b.method_seconds = 0;
    /* no predicted gain: no AWQ, and the plan GPTQ alone would give */
    nb_plan pg;
    nb_budget_result rg;
    for (size_t i = 0; i < s.n_tensors; i++)
        for (size_t k = 0; k < s.tensors[i].n_cands; k++) s.tensors[i].awq_ratio[k] = 1;
    ck_assert_int_eq(nb_budget_plan(m, &s, &b, &p, &r, &ctx), NB_OK);
    for (size_t i = 0; i < s.n_tensors; i++) s.tensors[i].awq_unit = 0;
    ck_assert_int_eq(nb_budget_plan(m, &s, &b, &pg, &rg, &ctx), NB_OK);
    ck_assert_uint_eq(r.n_awq, 0);
    ck_assert_uint_gt(r.n_gptq, 0);
    ck_assert_uint_eq(r.n_gptq, rg.n_gptq);
    ck_assert(r.pred_loss == rg.pred_loss);
    for (size_t i = 0; i < p.n_tensors; i++) ck_assert_int_eq(p.tensors[i].method, pg.tensors[i].method);
    nb_plan_free(&p);
    nb_plan_free(&pg);
    nb_plan_free(&p0);
    nb_ctx_free(&ctx);
    nb_sens_free(&s);
    nb_sens_free(&s2);
    nb_model_close(m);
    nb_model_close(m2);
}
END_TEST

static bool same_tensor(nb_model *a, nb_model *b, const char *name) {
    const nb_tensor *x = nb_model_find(a, name), *y = nb_model_find(b, name);
    ck_assert_msg(x && y && x->type == y->type && x->nbytes == y->nbytes, "%s", name);
    return !memcmp(x->data, y->data, (size_t)x->nbytes);
}

START_TEST(awq_tensors_as_method_awq) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.log_level = NB_LOG_WARN;
    const char *src = outlier_llama();
    nb_plan pl;
    ck_assert_int_eq(nbt_plan(src, nb_mix_find("q4_0"), &pl, &ctx), NB_OK);
    nb_quant_opts qo = {0};
    nb_gptq_model_opts go = {.calib_path = calib_path(), .corpus = corpus_opts(), .awq = true, .no_gptq = true};
    nb_gptq_model_result r;
    const char *fa = nbt_path("bm_awq.gguf"), *fm = nbt_path("bm_mixed.gguf"), *fp = nbt_path("bm_round.gguf");
    ck_assert_msg(nb_gptq_quantize_model(src, fa, &pl, &qo, &go, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_gptq_model_result_free(&r);
    nb_quant_result qr;
    ck_assert_int_eq(nb_quantize_model(src, fp, &pl, &qo, &qr, &ctx), NB_OK);
    nb_quant_result_free(&qr);
    /* block 0's attention and FFN awq, everything else imatrix (no imatrix here: plain rounding) */
    size_t n_marked = 0;
    for (size_t i = 0; i < pl.n_tensors; i++) {
        nb_plan_tensor *t = &pl.tensors[i];
        bool b0 = !strncmp(t->name, "blk.0.", 6) && t->type != t->src_type;
        t->method = b0 ? NB_PLAN_METHOD_AWQ : NB_PLAN_METHOD_IMATRIX;
        n_marked += b0;
    }
    ck_assert_uint_eq(n_marked, 7);
    go.no_gptq = false; /* the plan's methods decide */
    ck_assert_msg(nb_gptq_quantize_model(src, fm, &pl, &qo, &go, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_uint_eq(r.n_awq_weights, 7);
    ck_assert_uint_eq(r.n_gptq, 0);
    ck_assert_uint_eq(r.n_awq_groups, 4); /* block 0: norm -> qkv, v -> o, norm -> gate/up, up -> down */
    ck_assert_uint_ge(r.n_awq_scaled, 2);
    ck_assert_uint_eq(r.n_plan_rounded, 7); /* block 1's, counted apart from fallbacks */
    ck_assert_uint_eq(r.n_rtn, 0);
    nb_gptq_model_result_free(&r);
    nb_model *ma = NULL, *mm = NULL, *mp = NULL;
    ck_assert_int_eq(nb_model_open(fa, &ma, &ctx), NB_OK);
    ck_assert_int_eq(nb_model_open(fm, &mm, &ctx), NB_OK);
    ck_assert_int_eq(nb_model_open(fp, &mp, &ctx), NB_OK);
    size_t n_awq_same = 0, n_round_same = 0;
    for (size_t i = 0; i < pl.n_tensors; i++) {
        const char *nm = pl.tensors[i].name;
        if (!strncmp(nm, "blk.0.", 6)) { /* AWQ's, norms included */
            ck_assert_msg(same_tensor(mm, ma, nm), "%s differs from --method awq's", nm);
            n_awq_same++;
            if (pl.tensors[i].method == NB_PLAN_METHOD_AWQ || strstr(nm, "norm"))
                ck_assert_msg(!same_tensor(mm, mp, nm), "%s: not scaled", nm);
        } else {
            ck_assert_msg(same_tensor(mm, mp, nm), "%s differs from plain rounding", nm);
            n_round_same++;
        }
    }
    ck_assert_uint_eq(n_awq_same, 9);
    ck_assert_uint_gt(n_round_same, 9);
    nb_model_close(ma);
    nb_model_close(mm);
    nb_model_close(mp);
    nb_plan_free(&pl);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(awq_mixed_job) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.log_level = NB_LOG_WARN;
    const char *src = outlier_llama();
    nb_model *m = NULL;
    nb_sens s;
    measure(src, 1, &m, &s);
    weak_gptq(&s); /* the plan of the case built for AWQ, with GPTQ too where it is predicted to help */
    nb_budget b = {.kind = NB_BUDGET_FILE, .bytes = budget_bytes(m, &s), .methods = true};
    nb_plan p;
    nb_budget_result r;
    ck_assert_int_eq(nb_budget_plan(m, &s, &b, &p, &r, &ctx), NB_OK);
    nb_plan_free(&p);
    b.method_seconds = (r.sec_methods - r.sec_all_round) * 0.6; /* some tensors left to imatrix rounding */
    ck_assert_int_eq(nb_budget_plan(m, &s, &b, &p, &r, &ctx), NB_OK);
    ck_assert_uint_gt(r.n_awq, 0);
    char *js = nb_plan_to_json(&p);
    const char *plan = nbt_path("bm_plan.json");
    nbt_write_file(plan, js, strlen(js));
    free(js);
    nb_plan_free(&p);
    nb_sens_free(&s);
    nb_model_close(m);
    const char *fi = nbt_path("bm_job_imatrix.gguf"), *fm = nbt_path("bm_job_mixed.gguf");
    nb_quant_job j = {.src = src, .dst = fi, .method = NB_METHOD_IMATRIX, .calib_path = calib_path(),
                      .plan_path = plan};
    j.corpus = corpus_opts();
    nb_quant_job_result ri, rm;
    ck_assert_msg(nb_quantize_job(&j, &ri, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    j.dst = fm;
    j.method = NB_METHOD_MIXED;
    ck_assert_msg(nb_quantize_job(&j, &rm, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    size_t n_awq = 0, n_gptq = 0, n_im = 0;
    for (size_t i = 0; i < rm.plan.n_tensors; i++) {
        const nb_plan_tensor *pt = &rm.plan.tensors[i];
        n_awq += pt->method == NB_PLAN_METHOD_AWQ;
        n_gptq += pt->method == NB_PLAN_METHOD_GPTQ;
        n_im += pt->method == NB_PLAN_METHOD_IMATRIX && !strncmp(pt->name, "blk.", 4) && pt->type != pt->src_type;
    }
    printf("awq mixed job: plan %zu gptq + %zu awq; driver %zu gptq, %zu awq, %zu imatrix, %zu groups scaled\n",
           n_gptq, n_awq, rm.gptq.n_gptq, rm.gptq.n_awq_weights, rm.gptq.n_plan_rounded, rm.gptq.n_awq_scaled);
    ck_assert_uint_eq(n_awq, r.n_awq);
    ck_assert_uint_eq(rm.gptq.n_awq_weights, n_awq); /* AWQ on exactly the plan's awq tensors */
    ck_assert_uint_eq(rm.gptq.n_gptq, n_gptq);
    ck_assert_uint_gt(n_im, 0);
    ck_assert_uint_eq(rm.gptq.n_plan_rounded, n_im); /* counted as the plan's imatrix rounding */
    ck_assert_uint_eq(rm.gptq.n_rtn, 0);
    ck_assert_uint_gt(rm.gptq.n_awq_scaled, 0);
    ck_assert_uint_eq(rm.quant.bytes_out, ri.quant.bytes_out); /* the same types */
    nb_model *mi = NULL, *mm = NULL;
    ck_assert_int_eq(nb_model_open(fi, &mi, &ctx), NB_OK);
    ck_assert_int_eq(nb_model_open(fm, &mm, &ctx), NB_OK);
    for (size_t i = 0; i < rm.plan.n_tensors; i++) { /* imatrix tensors as the imatrix job wrote them */
        const nb_plan_tensor *pt = &rm.plan.tensors[i];
        if (pt->method == NB_PLAN_METHOD_IMATRIX && pt->type != pt->src_type)
            ck_assert_msg(same_tensor(mi, mm, pt->name), "%s: imatrix tensor differs", pt->name);
        if (pt->method == NB_PLAN_METHOD_AWQ) ck_assert_msg(!same_tensor(mi, mm, pt->name), "%s: no AWQ", pt->name);
    }
    nb_model_close(mi);
    nb_model_close(mm);
    nb_quant_job_result_free(&ri);
    nb_quant_job_result_free(&rm);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("calib/budget_method");
    TCase *tc = tcase_create("awq");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, awq_measured_and_planned);
    tcase_add_test(tc, awq_tensors_as_method_awq);
    tcase_add_test(tc, awq_mixed_job);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
