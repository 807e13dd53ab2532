/* quant/budget + quant/memory: the size-budget planner.
 *
 * Checks: the predicted file size equals the written file's size to the byte
 * and never exceeds the budget; over a sweep of budgets a smaller budget never
 * gives a larger file nor a lower predicted loss; measurement and plan are
 * identical with 1 and 2 threads; --target-bpw is respected; candidates whose
 * block does not divide a row are never chosen (rows of 96); the KV cache
 * follows the formula (f16 and q8_0 rows, llama.cpp's 256-cell padding,
 * sliding-window layers of gemma3 hold only their window); a budget below the
 * smallest file and a context beyond the model's are NB_ERR_RANGE with the
 * figure in the message (a MoE's names the expert count that would fit);
 * expert slice weights scale the measured error; the job refuses a budget
 * combined with --type.
 * Mixed methods: GPTQ's measured error ratios are finite and positive for the
 * block weights (0 outside the blocks), identical at 1 and 2 threads; the
 * choice keeps the types (same bytes as the plan without methods), lowers the
 * predicted loss, spends no more predicted seconds than the time budget, and
 * a larger time budget never predicts a larger loss; the plan JSON keeps each
 * tensor's method and refuses an unknown one; the job's write runs GPTQ only
 * on the tensors marked gptq: every tensor marked imatrix has the same bytes
 * as in the imatrix job's file of the same budget, and with no GPTQ tensor
 * the two files are identical; --method mixed without a budget or plan, and
 * a time budget without --method mixed, are refused. Per expert: with the
 * routing weights skewed and room for only part of a stack's GPTQ work, the
 * plan lists the most routed experts (`gptq_experts`, kept through JSON), and
 * the GPTQ driver rounds the others exactly as plain rounding does. */
#include "calib/gptq_model.h"
#include "calib/job.h"
#include "formats/model.h"
#include "formats/synth.h"
#include "quant/budget.h"
#include "quant/memory.h"
#include "quant/quantize.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *synth(const char *name, const char *arch, uint32_t n_embd, uint32_t n_ff) {
    const char *path = nbt_path(name);
    static char keep[8][512];
    static int k;
    char *out = keep[k++ % 8];
    snprintf(out, 512, "%s", path);
    struct stat sb;
    if (stat(out, &sb) == 0) return out;
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.arch = arch;
    o.n_layer = 2;
    o.n_embd = n_embd;
    o.n_ff = n_ff;
    o.n_head = 4;
    o.n_head_kv = 2;
    o.n_vocab = 320;
    o.dtype = NB_TYPE_F32;
    o.seed = 5;
    ck_assert_msg(nb_synth_write(&o, out, &ctx) == NB_OK, "synth: %s", nb_errmsg(&ctx));
    nb_ctx_free(&ctx);
    return out;
}

static void measure(const char *path, int threads, nb_model **m, nb_sens *s) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.n_threads = threads;
    ck_assert(nb_model_open(path, m, &ctx) == NB_OK);
    nb_sens_opts so = {.runtime = NB_RUNTIME_LLAMACPP};
    ck_assert_msg(nb_sens_measure(*m, &so, s, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_ctx_free(&ctx);
}

/* A synthetic model, opened and measured. */
typedef struct fx {
    const char *src;
    nb_model *m;
    nb_sens s;
} fx;

static void fx_open(fx *f, const char *name, const char *arch, uint32_t n_embd, uint32_t n_ff, int threads) {
    f->src = synth(name, arch, n_embd, n_ff);
    measure(f->src, threads, &f->m, &f->s);
}

static void fx_close(fx *f) {
    nb_sens_free(&f->s);
    nb_model_close(f->m);
}

/* Smallest and largest file a plan can have. */
static void extremes(const nb_sens *s, const nb_model *m, uint64_t *lo, uint64_t *hi) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_plan p;
    nb_budget_result r;
    nb_budget b = {.kind = NB_BUDGET_FILE, .bytes = UINT64_MAX / 2};
    ck_assert(nb_budget_plan(m, s, &b, &p, &r, &ctx) == NB_OK);
    *hi = r.file_bytes;
    /* the minimum: every planned tensor at its first (cheapest) candidate, padded, plus the header */
    uint64_t min = s->header_bytes;
    for (size_t i = 0; i < s->n_tensors; i++) {
        uint64_t bytes = s->tensors[i].planned ? s->tensors[i].cands[0].bytes : p.tensors[i].bytes_out;
        min += (bytes + s->alignment - 1) / s->alignment * s->alignment;
    }
    nb_plan_free(&p);
    b.bytes = min - 1;
    ck_assert(nb_budget_plan(m, s, &b, &p, &r, &ctx) == NB_ERR_RANGE);
    nb_plan_free(&p);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "smallest achievable ") != NULL, "%s", nb_errmsg(&ctx));
    b.bytes = min;
    ck_assert_msg(nb_budget_plan(m, s, &b, &p, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_uint_eq(r.file_bytes, min);
    nb_plan_free(&p);
    *lo = min;
    nb_ctx_free(&ctx);
}

START_TEST(predicted_size_is_written_size) {
    fx f;
    fx_open(&f, "dense.gguf", "llama", 256, 512, 1);
    const nb_model *m = f.m;
    const nb_sens s = f.s;
    uint64_t lo, hi;
    extremes(&s, m, &lo, &hi);
    ck_assert_uint_lt(lo, hi);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    for (int k = 0; k < 3; k++) {
        nb_budget b = {.kind = NB_BUDGET_FILE, .bytes = lo + (hi - lo) * (uint64_t)(k + 1) / 5};
        nb_plan p;
        nb_budget_result r;
        ck_assert_msg(nb_budget_plan(m, &s, &b, &p, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
        ck_assert_uint_le(r.file_bytes, b.bytes);
        ck_assert_str_eq(p.mix, "budget");
        for (size_t i = 0; i < p.n_tensors; i++)
            if (s.tensors[i].planned) {
                ck_assert_int_eq(p.tensors[i].why, NB_PLAN_BUDGET);
                ck_assert(isfinite(p.tensors[i].pred_err));
            }
        nb_quant_result qr;
        const char *dst = nbt_path("budget_out.gguf");
        ck_assert_msg(nb_quantize_model(f.src, dst, &p, NULL, &qr, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
        ck_assert_uint_eq(qr.bytes_out, r.file_bytes);
        ck_assert_uint_eq(qr.tensor_bytes_out, r.tensor_bytes);
        nb_quant_result_free(&qr);
        nb_plan_free(&p);
    }
    nb_ctx_free(&ctx);
    fx_close(&f);
}
END_TEST

START_TEST(monotone_in_budget) {
    fx f;
    fx_open(&f, "dense.gguf", "llama", 256, 512, 1);
    const nb_model *m = f.m;
    const nb_sens s = f.s;
    uint64_t lo, hi;
    extremes(&s, m, &lo, &hi);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    uint64_t prev_size = 0;
    double prev_loss = INFINITY;
    for (int k = 0; k <= 60; k++) {
        nb_budget b = {.kind = NB_BUDGET_FILE, .bytes = lo + (hi - lo) * (uint64_t)k / 60};
        nb_plan p;
        nb_budget_result r;
        ck_assert_msg(nb_budget_plan(m, &s, &b, &p, &r, &ctx) == NB_OK, "budget %llu: %s",
                      (unsigned long long)b.bytes, nb_errmsg(&ctx));
        ck_assert_uint_le(r.file_bytes, b.bytes);
        ck_assert_msg(r.file_bytes >= prev_size, "budget %llu: file %llu < %llu of a smaller budget",
                      (unsigned long long)b.bytes, (unsigned long long)r.file_bytes, (unsigned long long)prev_size);
        ck_assert_msg(r.pred_loss <= prev_loss, "budget %llu: loss %g > %g of a smaller budget",
                      (unsigned long long)b.bytes, r.pred_loss, prev_loss);
        prev_size = r.file_bytes;
        prev_loss = r.pred_loss;
        nb_plan_free(&p);
    }
    nb_ctx_free(&ctx);
    fx_close(&f);
}
END_TEST

START_TEST(same_plan_any_thread_count) {
    fx f1, f2;
    fx_open(&f1, "dense.gguf", "llama", 256, 512, 1);
    fx_open(&f2, "dense.gguf", "llama", 256, 512, 2);
    nb_sens s1 = f1.s, s2 = f2.s;
    nb_model *m1 = f1.m, *m2 = f2.m;
    ck_assert_uint_eq(s1.n_tensors, s2.n_tensors);
    for (size_t i = 0; i < s1.n_tensors; i++) {
        ck_assert_uint_eq(s1.tensors[i].n_cands, s2.tensors[i].n_cands);
        ck_assert(!memcmp(s1.tensors[i].cands, s2.tensors[i].cands, s1.tensors[i].n_cands * sizeof(nb_sens_cand)));
    }
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_budget b = {.kind = NB_BUDGET_BPW, .bpw = 4.5};
    nb_plan p1, p2;
    nb_budget_result r1, r2;
    ck_assert(nb_budget_plan(m1, &s1, &b, &p1, &r1, &ctx) == NB_OK);
    ck_assert(nb_budget_plan(m2, &s2, &b, &p2, &r2, &ctx) == NB_OK);
    ck_assert_double_le(r1.bpw, 4.5);
    char *j1 = nb_plan_to_json(&p1), *j2 = nb_plan_to_json(&p2);
    ck_assert_str_eq(j1, j2);
    free(j1);
    free(j2);
    nb_plan_free(&p1);
    nb_plan_free(&p2);
    nb_ctx_free(&ctx);
    fx_close(&f1);
    fx_close(&f2);
}
END_TEST

START_TEST(row_width_drops_candidates) {
    /* rows of 96: no k-quant (256) nor IQ4_XS; Q4_0 / Q8_0 / IQ4_NL (32) and F16 remain */
    fx f;
    fx_open(&f, "narrow.gguf", "llama", 96, 160, 1);
    const nb_model *m = f.m;
    const nb_sens s = f.s;
    for (size_t i = 0; i < s.n_tensors; i++)
        for (size_t k = 0; k < s.tensors[i].n_cands; k++) {
            const nb_type_traits *tr = nb_type_get(s.tensors[i].cands[k].type);
            ck_assert_msg(m->tensors[i].ne[0] % tr->block_size == 0, "tensor %s: candidate %s", m->tensors[i].name,
                          tr->name);
        }
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_budget b = {.kind = NB_BUDGET_BPW, .bpw = 5.0};
    nb_plan p;
    nb_budget_result r;
    ck_assert_msg(nb_budget_plan(m, &s, &b, &p, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_uint_eq(p.n_fallback, 0);
    nb_plan_free(&p);
    nb_ctx_free(&ctx);
    fx_close(&f);
}
END_TEST

START_TEST(kv_cache_formula) {
    const char *src = synth("dense.gguf", "llama", 256, 512);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_model *m = NULL;
    ck_assert(nb_model_open(src, &m, &ctx) == NB_OK);
    nb_mem_est e;
    nb_mem_opts o = {.n_ctx = 1000, .kv_type = NB_TYPE_F16};
    ck_assert_msg(nb_mem_estimate(m, &o, &e, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    /* 2 layers x K,V x 1024 cells (1000 padded to 256) x 2 kv heads x head_dim 64 x 2 bytes */
    ck_assert_uint_eq(e.cells, 1024);
    ck_assert_uint_eq(e.kv_bytes, 2ull * 2 * 1024 * 2 * 64 * 2);
    o.kv_type = NB_TYPE_Q8_0; /* 128 elements per cell: 4 blocks of 34 bytes */
    ck_assert(nb_mem_estimate(m, &o, &e, &ctx) == NB_OK);
    ck_assert_uint_eq(e.kv_bytes, 2ull * 2 * 1024 * 4 * 34);
    o.runtime = NB_RUNTIME_NIBBLE; /* F32, n_ctx cells */
    ck_assert(nb_mem_estimate(m, &o, &e, &ctx) == NB_OK);
    ck_assert_uint_eq(e.kv_bytes, 2ull * 2 * 1000 * 128 * 4);
    o = (nb_mem_opts){.n_ctx = 5000, .kv_type = NB_TYPE_F16};
    ck_assert_int_eq(nb_mem_estimate(m, &o, &e, &ctx), NB_ERR_RANGE);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "larger than the model's context (4096"), "%s", nb_errmsg(&ctx));
    nb_model_close(m);

    /* gemma3: 6-layer pattern, layer 5 global; synth's window is 512 */
    nb_synth_opts so;
    nb_synth_opts_init(&so);
    so.arch = "gemma3";
    so.n_layer = 6;
    so.n_embd = 256;
    so.n_ff = 512;
    so.n_head = 4;
    so.n_head_kv = 2;
    so.n_vocab = 320;
    const char *g = nbt_path("gemma.gguf");
    ck_assert(nb_synth_write(&so, g, &ctx) == NB_OK);
    ck_assert(nb_model_open(g, &m, &ctx) == NB_OK);
    o = (nb_mem_opts){.n_ctx = 4096, .kv_type = NB_TYPE_F16};
    ck_assert_msg(nb_mem_estimate(m, &o, &e, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_uint_eq(e.n_swa_layers, 5);
    ck_assert_uint_eq(e.swa_cells, 1024); /* window 512 + ubatch 512 */
    uint64_t cell = 2ull * e.n_head_kv * e.head_dim * 2;
    ck_assert_uint_eq(e.kv_bytes, cell * (4096 + 5 * 1024));
    nb_model_close(m);
    nb_ctx_free(&ctx);
}
END_TEST

/* Experts ranked by descending index. */
static bool rank_desc(void *user, int layer, int *order, int n_expert) {
    (void)user;
    (void)layer;
    for (int k = 0; k < n_expert; k++) order[k] = n_expert - 1 - k;
    return true;
}

START_TEST(memory_budget_and_moe_message) {
    fx f;
    fx_open(&f, "moe.gguf", "mixtral", 256, 256, 1);
    const nb_model *m = f.m;
    const nb_sens s = f.s;
    ck_assert_uint_eq(s.n_expert, 4);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_plan p;
    nb_budget_result r;
    nb_budget b = {.kind = NB_BUDGET_MEMORY, .bytes = 64ull << 20,
                   .mem = {.n_ctx = 2048, .kv_type = NB_TYPE_F16, .overhead = 1 << 20}};
    ck_assert_msg(nb_budget_plan(m, &s, &b, &p, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_uint_eq(r.total_bytes, r.weight_bytes + r.mem.kv_bytes + r.mem.compute_bytes + (1 << 20));
    ck_assert_uint_le(r.total_bytes, b.bytes);
    nb_plan_free(&p);
    /* just above KV + compute + overhead + the non-expert minimum: only fewer experts fit */
    uint64_t lo, hi;
    extremes(&s, m, &lo, &hi);
    b.bytes = r.mem.kv_bytes + r.mem.compute_bytes + (1 << 20) + (lo - s.header_bytes) * 2 / 3;
    ck_assert_int_eq(nb_budget_plan(m, &s, &b, &p, &r, &ctx), NB_ERR_RANGE);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "experts per layer would fit (smallest") &&
                      strstr(nb_errmsg(&ctx), "--allow-prune"), "%s", nb_errmsg(&ctx));
    nb_plan_free(&p);
    /* --allow-prune: the same budget is met by keeping fewer experts, ranked by the callback */
    b.allow_prune = true;
    b.rank = rank_desc;
    b.prune_criterion = "freq";
    ck_assert_msg(nb_budget_plan(m, &s, &b, &p, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_uint_le(r.total_bytes, b.bytes);
    ck_assert(r.keep >= s.n_expert_used && r.keep < s.n_expert);
    ck_assert_uint_eq(p.prune.keep, r.keep);
    ck_assert_uint_eq(p.prune.n_expert, 4);
    ck_assert_str_eq(p.prune.criterion, "freq");
    ck_assert(p.prune.n_layer >= 1 && r.drop_loss > 0 && r.pred_loss >= r.drop_loss);
    for (uint32_t l = 0; l < p.prune.n_layer; l++) /* the top of the ranking: the highest indices */
        for (uint32_t k = 0; k < p.prune.keep; k++)
            ck_assert_int_eq(p.prune.kept[l * p.prune.keep + k], (int)(4 - p.prune.keep + k));
    for (size_t i = 0; i < p.n_tensors; i++)
        if (strstr(p.tensors[i].name, "_exps.")) ck_assert_int_eq(p.tensors[i].ne[2], (int64_t)r.keep);
    /* the plan round-trips through JSON with its keep-N decision */
    char *js = nb_plan_to_json(&p);
    nb_plan q;
    ck_assert_msg(nb_plan_from_json(js, "t", &q, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_uint_eq(q.prune.keep, p.prune.keep);
    ck_assert_int_eq(memcmp(q.prune.kept, p.prune.kept, p.prune.n_layer * p.prune.keep * sizeof *q.prune.kept), 0);
    ck_assert_int_eq(memcmp(q.prune.tensors_sha256, p.prune.tensors_sha256, 32), 0);
    /* bound to the unpruned source it says to prune first */
    ck_assert_int_eq(nb_plan_bind(&q, m, &ctx), NB_ERR_INVALID);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "prune first"), "%s", nb_errmsg(&ctx));
    nb_plan_free(&q);
    free(js);
    nb_plan_free(&p);
    /* without a ranking: refused naming the missing statistics */
    b.rank = NULL;
    ck_assert_int_eq(nb_budget_plan(m, &s, &b, &p, &r, &ctx), NB_ERR_RANGE);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "no expert routing statistics"), "%s", nb_errmsg(&ctx));
    nb_plan_free(&p);
    nb_ctx_free(&ctx);
    fx_close(&f);
}
END_TEST

static double twice(void *user, const char *name, int64_t slice) {
    (void)name;
    (void)slice;
    return *(const double *)user;
}

START_TEST(expert_weights_scale_errors) {
    const char *src = synth("moe.gguf", "mixtral", 256, 256);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_model *m = NULL;
    ck_assert(nb_model_open(src, &m, &ctx) == NB_OK);
    nb_sens a, b;
    double w = 1.0; /* n_used / n_expert = 2 / 4 by default: weight 1 doubles the error */
    nb_sens_opts so = {.runtime = NB_RUNTIME_LLAMACPP};
    ck_assert(nb_sens_measure(m, &so, &a, &ctx) == NB_OK);
    so.slice_weight = twice;
    so.slice_weight_user = &w;
    ck_assert(nb_sens_measure(m, &so, &b, &ctx) == NB_OK);
    size_t n_exp = 0;
    for (size_t i = 0; i < a.n_tensors; i++) {
        if (!a.tensors[i].planned) continue;
        for (size_t k = 0; k < a.tensors[i].n_cands; k++) {
            double ea = a.tensors[i].cands[k].err, eb = b.tensors[i].cands[k].err;
            if (a.tensors[i].expert) ck_assert_double_eq_tol(eb, 2 * ea, 1e-9 * (1 + ea));
            else ck_assert_double_eq(ea, eb);
        }
        n_exp += a.tensors[i].expert;
    }
    ck_assert_uint_eq(n_exp, 6); /* gate/up/down x 2 layers */
    nb_sens_free(&a);
    nb_sens_free(&b);
    nb_model_close(m);
    nb_ctx_free(&ctx);
}
END_TEST

/* Gemma 3's block outputs are normalised: its blk.* errors are relative to the tensor's output
 * energy, so scaling every column's importance by 4 leaves them unchanged, while token_embd's
 * (and every llama tensor's) scale by 4. */
START_TEST(relative_errors_in_sandwich_blocks) {
    const char *g = synth("gemma3.gguf", "gemma3", 256, 512);
    const char *l = synth("dense.gguf", "llama", 256, 512);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    for (int arch = 0; arch < 2; arch++) {
        nb_model *m = NULL;
        ck_assert(nb_model_open(arch ? l : g, &m, &ctx) == NB_OK);
        nb_sens a, b;
        nb_sens_opts so = {.runtime = NB_RUNTIME_LLAMACPP, .default_importance = 1.0};
        ck_assert(nb_sens_measure(m, &so, &a, &ctx) == NB_OK);
        so.default_importance = 4.0;
        ck_assert(nb_sens_measure(m, &so, &b, &ctx) == NB_OK);
        size_t n_rel = 0, n_abs = 0;
        for (size_t i = 0; i < a.n_tensors; i++) {
            if (!a.tensors[i].planned) continue;
            bool rel = !arch && !strncmp(m->tensors[i].name, "blk.", 4);
            for (size_t k = 0; k < a.tensors[i].n_cands; k++) {
                double ea = a.tensors[i].cands[k].err, eb = b.tensors[i].cands[k].err;
                if (rel) ck_assert_double_eq_tol(eb, ea, 1e-12 * (1 + ea));
                else ck_assert_double_eq_tol(eb, 4 * ea, 1e-12 * (1 + ea));
                /* a relative error at the cheapest type is a fraction of the output, not its energy */
                if (rel && k == 0) ck_assert_msg(ea > 0 && ea < 1, "%s: %g", m->tensors[i].name, ea);
            }
            n_rel += rel;
            n_abs += !rel;
        }
        ck_assert_uint_eq(a.n_relative, n_rel);
        ck_assert_uint_eq(n_rel, arch ? 0 : 14); /* q k v o gate up down x 2 layers */
        ck_assert_uint_ge(n_abs, 1);             /* token_embd (and llama's blocks) */
        nb_sens_free(&a);
        nb_sens_free(&b);
        nb_model_close(m);
    }
    nb_ctx_free(&ctx);
}
END_TEST

/* --rule inside a budget: the tensors a rule names keep its type, the rest fill the budget. */
START_TEST(pinned_tensors_keep_their_type) {
    fx f;
    fx_open(&f, "dense.gguf", "llama", 256, 512, 1);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_rules rules;
    nb_rules_init(&rules);
    ck_assert(nb_rules_add(&rules, "token_embd.weight=q8_0", &ctx) == NB_OK);
    ck_assert(nb_rules_add(&rules, "blk.0.ffn_down.weight=q6_K", &ctx) == NB_OK);
    size_t n_pin = 0, n_planned = 0;
    for (size_t i = 0; i < f.s.n_tensors; i++) n_planned += f.s.tensors[i].planned;
    uint64_t lo, hi;
    extremes(&f.s, f.m, &lo, &hi);
    ck_assert(nb_sens_pin(f.m, &f.s, &rules, &n_pin, &ctx) == NB_OK);
    ck_assert_uint_eq(n_pin, 2);
    nb_budget b = {.kind = NB_BUDGET_FILE, .bytes = lo + (hi - lo) / 3, .pins = &rules};
    nb_plan p;
    nb_budget_result r;
    ck_assert_msg(nb_budget_plan(f.m, &f.s, &b, &p, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_uint_le(r.file_bytes, b.bytes);
    ck_assert_uint_eq(r.n_planned, n_planned - 2);
    size_t seen = 0;
    for (size_t i = 0; i < p.n_tensors; i++) {
        const nb_plan_tensor *t = &p.tensors[i];
        if (!strcmp(t->name, "token_embd.weight") || !strcmp(t->name, "blk.0.ffn_down.weight")) {
            ck_assert_int_eq(t->why, NB_PLAN_RULE);
            ck_assert_int_eq(t->type, t->name[0] == 't' ? NB_TYPE_Q8_0 : NB_TYPE_Q6_K);
            seen++;
        }
    }
    ck_assert_uint_eq(seen, 2);
    nb_plan_free(&p);
    /* the mean bits left for the planned tensors: what the allocation spends */
    double bpw = 0;
    ck_assert(nb_budget_planned_bpw(f.m, &f.s, &b, &bpw, &ctx) == NB_OK);
    ck_assert_msg(bpw > 2 && bpw < 16, "%g", bpw);
    nb_rules_free(&rules);
    nb_ctx_free(&ctx);
    fx_close(&f);
}
END_TEST

START_TEST(job_budget_checks) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_quant_job j = {.src = "x.gguf", .budget = {.kind = NB_BUDGET_FILE, .bytes = 1000}};
    j.plan.mix = nb_mix_find("q4_k_m");
    ck_assert_int_eq(nb_quant_job_check(&j, &ctx), NB_ERR_INVALID);
    ck_assert(strstr(nb_errmsg(&ctx), "drop --type") != NULL);
    j.plan.mix = NULL;
    ck_assert_int_eq(nb_quant_job_check(&j, &ctx), NB_OK);
    nb_ctx_free(&ctx);
}
END_TEST

static nb_quant_job mixed_job(const char *src, const char *dst, nb_quant_method m, uint64_t bytes) {
    static char calib[1024];
    snprintf(calib, sizeof calib, "%s/text/calib.txt", nbt_data_dir());
    nb_quant_job j = {.src = src, .dst = dst, .method = m, .calib_path = calib,
                      .budget = {.kind = NB_BUDGET_FILE, .bytes = bytes}};
    j.corpus.n_ctx = 32;
    j.corpus.max_tokens = 512;
    j.corpus.seed = 3;
    return j;
}

/* Measure s's methods on the dense fixture at `threads`. */
static void measure_methods(fx *f, int threads) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.n_threads = threads;
    ctx.log_level = NB_LOG_WARN;
    nb_quant_job j = mixed_job(f->src, NULL, NB_METHOD_MIXED, 0);
    nb_method_opts mo = {.calib_path = j.calib_path, .corpus = j.corpus};
    nb_method_info info;
    ck_assert_msg(nb_method_measure(f->m, &f->s, &mo, &info, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_int_eq(info.layer, 1); /* the middle of 2 blocks */
    ck_assert_uint_eq(info.n_groups, 7);  /* q k v o gate up down */
    nb_ctx_free(&ctx);
}

START_TEST(mixed_methods_plan) {
    fx f, f2;
    fx_open(&f, "dense.gguf", "llama", 256, 512, 1);
    fx_open(&f2, "dense.gguf", "llama", 256, 512, 2);
    measure_methods(&f, 1);
    measure_methods(&f2, 2);
    size_t n_ratio = 0;
    for (size_t i = 0; i < f.s.n_tensors; i++) {
        const nb_sens_tensor *e = &f.s.tensors[i], *e2 = &f2.s.tensors[i];
        if (!e->planned) continue;
        bool blk = !strncmp(f.m->tensors[i].name, "blk.", 4);
        for (size_t k = 0; k < e->n_cands; k++) {
            ck_assert(e->gptq_ratio[k] == e2->gptq_ratio[k]); /* any thread count */
            ck_assert(e->gptq_ratio[k] >= 0 && e->gptq_ratio[k] < 10);
            if (!blk) ck_assert(e->gptq_ratio[k] == 0);
            n_ratio += e->gptq_ratio[k] > 0;
        }
        if (blk) ck_assert(e->sec_gptq > e->sec_round && e->sec_pass > 0 && e->gptq_block >= 0);
        else ck_assert_int_eq(e->gptq_block, -1);
    }
    ck_assert_uint_gt(n_ratio, 14 * 3);
    uint64_t lo, hi;
    extremes(&f.s, f.m, &lo, &hi);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_budget b = {.kind = NB_BUDGET_FILE, .bytes = lo + (hi - lo) / 4};
    nb_plan p0, p;
    nb_budget_result r0, r;
    ck_assert_int_eq(nb_budget_plan(f.m, &f.s, &b, &p0, &r0, &ctx), NB_OK);
    b.methods = true; /* lambda 0: wherever GPTQ is predicted to help */
    ck_assert_int_eq(nb_budget_plan(f.m, &f.s, &b, &p, &r, &ctx), NB_OK);
    ck_assert_uint_eq(r.file_bytes, r0.file_bytes);
    for (size_t i = 0; i < p.n_tensors; i++) {
        ck_assert_int_eq(p.tensors[i].type, p0.tensors[i].type);
        if (p0.tensors[i].why == NB_PLAN_BUDGET)
            ck_assert(p.tensors[i].method == NB_PLAN_METHOD_GPTQ || p.tensors[i].method == NB_PLAN_METHOD_IMATRIX);
    }
    ck_assert_uint_gt(r.n_gptq, 0);
    ck_assert(r.pred_loss < r0.pred_loss && r.pred_loss_round == r0.pred_loss);
    ck_assert(r.sec_methods <= r.sec_all_gptq && r.sec_all_round < r.sec_all_gptq);
    /* the plan JSON keeps the methods; an unknown one is refused */
    char *js = nb_plan_to_json(&p);
    nb_plan q;
    ck_assert_msg(nb_plan_from_json(js, "t", &q, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    for (size_t i = 0; i < p.n_tensors; i++) ck_assert_int_eq(q.tensors[i].method, p.tensors[i].method);
    nb_plan_free(&q);
    char *bad = strstr(js, "\"method\":\"gptq\"");
    ck_assert_ptr_nonnull(bad);
    memcpy(bad + 10, "gpt5", 4);
    ck_assert_int_eq(nb_plan_from_json(js, "t", &q, &ctx), NB_ERR_FORMAT);
    ck_assert(strstr(nb_errmsg(&ctx), "method") != NULL);
    nb_plan_free(&q);
    free(js);
    nb_plan_free(&p);
    /* time budgets: never over, and more time never predicts more loss */
    double prev = INFINITY;
    for (int k = 1; k <= 6; k++) {
        b.method_seconds = r.sec_all_gptq * k / 6.0;
        ck_assert_int_eq(nb_budget_plan(f.m, &f.s, &b, &p, &r, &ctx), NB_OK);
        ck_assert(r.sec_methods - r.sec_all_round <= b.method_seconds * (1 + 1e-12));
        ck_assert_msg(r.pred_loss <= prev, "time %g: loss %g > %g", b.method_seconds, r.pred_loss, prev);
        prev = r.pred_loss;
        nb_plan_free(&p);
    }
    b.method_seconds = 1e-12; /* nothing fits */
    ck_assert_int_eq(nb_budget_plan(f.m, &f.s, &b, &p, &r, &ctx), NB_OK);
    ck_assert_uint_eq(r.n_gptq, 0);
    ck_assert(r.pred_loss == r0.pred_loss);
    nb_plan_free(&p);
    nb_plan_free(&p0);
    nb_ctx_free(&ctx);
    fx_close(&f);
    fx_close(&f2);
}
END_TEST

START_TEST(mixed_methods_job) {
    fx f;
    fx_open(&f, "dense.gguf", "llama", 256, 512, 1);
    uint64_t lo, hi;
    extremes(&f.s, f.m, &lo, &hi);
    fx_close(&f);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.log_level = NB_LOG_WARN;
    uint64_t bytes = lo + (hi - lo) / 4;
    const char *src = synth("dense.gguf", "llama", 256, 512);
    const char *fi = nbt_path("mixed_imatrix.gguf"), *fm = nbt_path("mixed_mixed.gguf"),
               *fn = nbt_path("mixed_none.gguf");
    nb_quant_job ji = mixed_job(src, fi, NB_METHOD_IMATRIX, bytes);
    nb_quant_job_result ri, rm, rn;
    ck_assert_msg(nb_quantize_job(&ji, &ri, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_quant_job jm = mixed_job(src, fm, NB_METHOD_MIXED, bytes);
    ck_assert_msg(nb_quantize_job(&jm, &rm, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_uint_gt(rm.budget.n_gptq, 0);
    ck_assert_uint_lt(rm.budget.n_gptq, rm.budget.n_planned);
    ck_assert_uint_eq(rm.gptq.n_gptq, rm.budget.n_gptq); /* the driver ran GPTQ on exactly those */
    jm.dst = fn;
    jm.budget.method_lambda = 1e300; /* no tensor is worth it */
    ck_assert_msg(nb_quantize_job(&jm, &rn, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_uint_eq(rn.budget.n_gptq, 0);
    size_t na, nb2;
    unsigned char *a = nbt_read_file(fi, &na), *c = nbt_read_file(fn, &nb2);
    ck_assert_uint_eq(na, nb2);
    ck_assert_mem_eq(a, c, na); /* no GPTQ tensor: the imatrix job's file */
    free(a);
    free(c);
    nb_model *mi = NULL, *mm = NULL;
    ck_assert_int_eq(nb_model_open(fi, &mi, &ctx), NB_OK);
    ck_assert_int_eq(nb_model_open(fm, &mm, &ctx), NB_OK);
    ck_assert_uint_eq(mi->file_bytes, mm->file_bytes);
    size_t n_same = 0, n_diff = 0;
    for (size_t i = 0; i < rm.plan.n_tensors; i++) {
        const nb_plan_tensor *pt = &rm.plan.tensors[i];
        if (pt->why != NB_PLAN_BUDGET || pt->type == pt->src_type) continue;
        const nb_tensor *x = nb_model_find(mi, pt->name), *y = nb_model_find(mm, pt->name);
        ck_assert(x && y && x->nbytes == y->nbytes);
        bool same = !memcmp(x->data, y->data, (size_t)x->nbytes);
        if (pt->method == NB_PLAN_METHOD_IMATRIX) ck_assert_msg(same, "%s: imatrix tensor differs", pt->name);
        n_same += same;
        n_diff += !same;
    }
    ck_assert_uint_eq(n_diff, rm.budget.n_gptq); /* every GPTQ tensor changed */
    ck_assert_uint_gt(n_same, 0);
    nb_model_close(mi);
    nb_model_close(mm);
    nb_quant_job_result_free(&ri);
    nb_quant_job_result_free(&rm);
    nb_quant_job_result_free(&rn);
    /* option checks */
    nb_quant_job jb = mixed_job(src, fm, NB_METHOD_MIXED, 0);
    jb.budget.kind = NB_BUDGET_NONE;
    jb.plan.mix = nb_mix_find("q4_0");
    ck_assert_int_eq(nb_quant_job_check(&jb, &ctx), NB_ERR_INVALID);
    ck_assert(strstr(nb_errmsg(&ctx), "--method mixed") != NULL);
    jb = mixed_job(src, fm, NB_METHOD_IMATRIX, bytes);
    jb.budget.method_seconds = 5;
    ck_assert_int_eq(nb_quant_job_check(&jb, &ctx), NB_ERR_INVALID);
    ck_assert(strstr(nb_errmsg(&ctx), "--method-time-budget") != NULL);
    nb_ctx_free(&ctx);
}
END_TEST

static double skewed(void *user, const char *name, int64_t slice) {
    (void)user;
    (void)name;
    return slice == 0 ? 0.7 : slice == 1 ? 0.2 : 0.05; /* 4 experts, 2 used: Σ = 1 ... 2 */
}

START_TEST(mixed_methods_per_expert) {
    const char *src = synth("moe.gguf", "mixtral", 256, 256);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.log_level = NB_LOG_WARN;
    nb_model *m = NULL;
    ck_assert(nb_model_open(src, &m, &ctx) == NB_OK);
    nb_sens s;
    nb_sens_opts so = {.runtime = NB_RUNTIME_LLAMACPP, .slice_weight = skewed};
    ck_assert(nb_sens_measure(m, &so, &s, &ctx) == NB_OK);
    /* a work model by hand: GPTQ halves every error at 1 s per tensor, no passes */
    for (size_t i = 0; i < s.n_tensors; i++) {
        nb_sens_tensor *e = &s.tensors[i];
        for (size_t k = 0; k < e->n_cands; k++) e->gptq_ratio[k] = 0.5;
        e->sec_round = 0;
        e->sec_gptq = 1;
        e->gptq_block = -1;
        e->sec_pass = 0;
    }
    nb_budget b = {.kind = NB_BUDGET_BPW, .bpw = 5, .methods = true, .method_seconds = 0.5};
    nb_plan p;
    nb_budget_result r;
    ck_assert_msg(nb_budget_plan(m, &s, &b, &p, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    /* half a second: two of the four experts of some stacks (each 0.25 s), the most routed ones */
    size_t n_listed = 0;
    for (size_t i = 0; i < p.n_tensors; i++) {
        const nb_plan_tensor *t = &p.tensors[i];
        if (!t->n_gptq_experts) continue;
        ck_assert(s.tensors[i].expert && t->method == NB_PLAN_METHOD_GPTQ);
        ck_assert(nb_plan_slice_gptq(t, 0));  /* routed 70 % of the time */
        ck_assert(!nb_plan_slice_gptq(t, 3)); /* 5 % */
        n_listed++;
    }
    ck_assert_uint_gt(n_listed, 0);
    ck_assert(r.sec_methods <= 0.5 + 1e-12);
    char *js = nb_plan_to_json(&p);
    nb_plan q;
    ck_assert_msg(nb_plan_from_json(js, "t", &q, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    for (size_t i = 0; i < p.n_tensors; i++) {
        ck_assert_uint_eq(q.tensors[i].n_gptq_experts, p.tensors[i].n_gptq_experts);
        for (uint32_t k = 0; k < p.tensors[i].n_gptq_experts; k++)
            ck_assert_uint_eq(q.tensors[i].gptq_experts[k], p.tensors[i].gptq_experts[k]);
    }
    free(js);
    /* the driver: listed experts by GPTQ, the others exactly as plain rounding (no importance either way) */
    ck_assert_int_eq(nb_plan_resolve(&q, m, &ctx), NB_OK);
    static char calib[1024];
    snprintf(calib, sizeof calib, "%s/text/calib.txt", nbt_data_dir());
    nb_gptq_model_opts go = {.calib_path = calib};
    go.corpus.n_ctx = 32;
    go.corpus.max_tokens = 512;
    go.corpus.seed = 3;
    go.all_experts = true; /* every expert has a Hessian: a skipped one is the plan's doing */
    nb_quant_opts qo = {0};
    nb_gptq_model_result gr;
    const char *fg = nbt_path("per_expert_gptq.gguf"), *fr = nbt_path("per_expert_rtn.gguf");
    ck_assert_msg(nb_gptq_quantize_model(src, fg, &q, &qo, &go, &gr, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_gptq_model_result_free(&gr);
    nb_quant_result qr;
    ck_assert_int_eq(nb_quantize_model(src, fr, &q, &qo, &qr, &ctx), NB_OK);
    nb_quant_result_free(&qr);
    nb_model *mg = NULL, *mr = NULL;
    ck_assert_int_eq(nb_model_open(fg, &mg, &ctx), NB_OK);
    ck_assert_int_eq(nb_model_open(fr, &mr, &ctx), NB_OK);
    size_t n_same = 0, n_diff = 0;
    for (size_t i = 0; i < q.n_tensors; i++) {
        const nb_plan_tensor *t = &q.tensors[i];
        if (!t->n_gptq_experts) continue;
        const nb_tensor *x = nb_model_find(mg, t->name), *y = nb_model_find(mr, t->name);
        uint64_t slice = x->nbytes / (uint64_t)t->ne[2];
        for (uint32_t e = 0; e < (uint32_t)t->ne[2]; e++) {
            bool same = !memcmp((const char *)x->data + e * slice, (const char *)y->data + e * slice, slice);
            ck_assert_msg(same != nb_plan_slice_gptq(t, e), "%s expert %u: %s", t->name, e, same ? "same" : "differs");
            n_same += same;
            n_diff += !same;
        }
    }
    ck_assert_uint_gt(n_same, 0);
    ck_assert_uint_gt(n_diff, 0);
    nb_model_close(mg);
    nb_model_close(mr);
    nb_plan_free(&q);
    nb_plan_free(&p);
    nb_sens_free(&s);
    nb_model_close(m);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("budget");
    TCase *tc = tcase_create("budget");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, predicted_size_is_written_size);
    tcase_add_test(tc, monotone_in_budget);
    tcase_add_test(tc, same_plan_any_thread_count);
    tcase_add_test(tc, row_width_drops_candidates);
    tcase_add_test(tc, kv_cache_formula);
    tcase_add_test(tc, memory_budget_and_moe_message);
    tcase_add_test(tc, expert_weights_scale_errors);
    tcase_add_test(tc, relative_errors_in_sandwich_blocks);
    tcase_add_test(tc, pinned_tensors_keep_their_type);
    tcase_add_test(tc, job_budget_checks);
    tcase_add_test(tc, mixed_methods_plan);
    tcase_add_test(tc, mixed_methods_job);
    tcase_add_test(tc, mixed_methods_per_expert);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
