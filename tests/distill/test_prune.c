/* tests/distill/test_prune.c — MoE expert pruning.
 *
 * Models are tiny synthetic MoEs (formats/synth.h, F32) edited so that some
 * experts can never be chosen: every token embedding gets 1.0 in hidden
 * dimension 0 (and its other values x10), so the residual stream keeps a
 * large positive component there and the normalised router input x[0] is ~4
 * for every token; the dead
 * experts' router rows are -100 in column 0 and 0 elsewhere (logit ~ -800, a
 * softmax weight of exactly 0), the live rows get 0 in column 0 and keep their
 * random values (so which live experts win varies by token).
 * Checked: calibration on such a model gives the dead experts no token and
 * both criteria drop exactly them (mixtral, qwen2moe with its shared expert,
 * qwen3moe); the pruned file has consistent metadata and shapes, passes the
 * GGUF reader, its expert slices and router rows are the original's kept
 * ones byte for byte, and the engine's logits stay (the dropped experts had
 * weight 0); keeping every expert reproduces the original logits bit for bit;
 * ties keep the lower index; statistics round trip through the imatrix file;
 * quantized (Q8_0) experts and an HF-directory source slice the same way;
 * bad input (dense model, keep out of range, statistics of another model or
 * missing) fails cleanly with no output file. */
#include "calib/calibrate.h"
#include "distill/prune.h"
#include "engine/engine.h"
#include "formats/convert.h"
#include "formats/synth.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { X = 6, USED = 2, EMBD = 64, VOCAB = 300, NL = 2 };
static const int DEAD[] = {1, 4};

static bool is_dead(int e) { return e == DEAD[0] || e == DEAD[1]; }

static void synth(const char *arch, const char *path, nb_ctx *ctx) {
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.arch = arch;
    o.n_layer = NL;
    o.n_embd = EMBD;
    o.n_ff = 64;
    o.n_head = 4;
    o.n_head_kv = 2;
    if (strcmp(arch, "llama") != 0) {
        o.n_expert = X;
        o.n_expert_used = USED;
    }
    o.n_vocab = VOCAB;
    o.dtype = NB_TYPE_F32;
    o.seed = 7;
    ck_assert_msg(nb_synth_write(&o, path, ctx) == NB_OK, "%s", nb_errmsg(ctx));
}

static void put_f32(unsigned char *buf, uint64_t off, float v) { memcpy(buf + off, &v, 4); }

/* A synthetic MoE of `arch` whose experts DEAD[] are never selected (see top). */
static const char *dead_model(const char *arch, nb_ctx *ctx) {
    static char path[8][512];
    static int slot;
    char *out = path[slot++ % 8];
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", nbt_path("synth_tmp.gguf"));
    snprintf(out, 512, "%s", nbt_path(arch));
    strcat(out, "_dead.gguf");
    if (nbt_file_exists(out)) return out;
    synth(arch, tmp, ctx);
    size_t n;
    unsigned char *buf = nbt_read_file(tmp, &n);
    ck_assert_ptr_nonnull(buf);
    nb_model *m;
    ck_assert_int_eq(nb_model_open(tmp, &m, ctx), NB_OK);
    const nb_tensor *te = nb_model_find(m, "token_embd.weight");
    ck_assert(te && te->type == NB_TYPE_F32 && te->ne[0] == EMBD);
    for (int64_t t = 0; t < te->ne[1]; t++) {
        uint64_t row = te->file_offset + (uint64_t)(t * EMBD) * 4;
        put_f32(buf, row, 1.0f);
        for (int j = 1; j < EMBD; j++) { /* x10: token-dependent routing among the live experts */
            float v;
            memcpy(&v, buf + row + (uint64_t)j * 4, 4);
            put_f32(buf, row + (uint64_t)j * 4, 10 * v);
        }
    }
    for (int L = 0; L < NL; L++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.ffn_gate_inp.weight", L);
        const nb_tensor *r = nb_model_find(m, name);
        ck_assert(r && r->type == NB_TYPE_F32 && r->ne[0] == EMBD && r->ne[1] == X);
        for (int e = 0; e < X; e++) {
            uint64_t row = r->file_offset + (uint64_t)(e * EMBD) * 4;
            put_f32(buf, row, is_dead(e) ? -100.0f : 0.0f);
            if (is_dead(e))
                for (int j = 1; j < EMBD; j++) put_f32(buf, row + (uint64_t)j * 4, 0.0f);
        }
    }
    nb_model_close(m);
    nbt_write_file(out, buf, n);
    free(buf);
    return out;
}

static void calibrate(const char *model, nb_routing *rt, nb_ctx *ctx) {
    char calib[1024];
    snprintf(calib, sizeof calib, "%s/text/calib.txt", nbt_data_dir());
    nb_calib_opts o = {.calib_path = calib};
    o.corpus.n_ctx = 32;
    o.corpus.max_tokens = 192;
    o.corpus.seed = 3;
    nb_imatrix im;
    nb_calib_result res;
    ck_assert_msg(nb_calibrate(model, &o, &im, rt, &res, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    nb_imatrix_free(&im);
}

static float *logits_of(const char *path, int *n_vocab, nb_ctx *ctx) {
    static const int32_t toks[] = {1, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 10, 200};
    const int n = (int)(sizeof toks / sizeof *toks);
    nb_engine_opts eo = {.n_ctx = 32};
    nb_engine *e;
    ck_assert_msg(nb_engine_open(path, &eo, &e, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    *n_vocab = nb_engine_n_vocab(e);
    float *lg = malloc((size_t)n * (size_t)*n_vocab * sizeof *lg);
    ck_assert_ptr_nonnull(lg);
    ck_assert_msg(nb_engine_eval(e, toks, n, 0, lg, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    nb_engine_free(e);
    return lg;
}
#define N_TOKS 16

static uint64_t kv_u(const nb_model *m, const char *key) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", nb_kv_get_str(&m->kv, "general.architecture"), key);
    uint64_t v = 0;
    ck_assert_msg(nb_kv_get_u64(&m->kv, k, &v), "missing %s", k);
    return v;
}

/* The pruned file against the source: metadata, every tensor's shape, bytes
 * of the kept slices (expert axis last) and of everything else. */
static void check_pruned(const char *src, const char *dst, const nb_prune_plan *p, nb_ctx *ctx) {
    nb_model *a, *b;
    ck_assert_int_eq(nb_model_open(src, &a, ctx), NB_OK);
    ck_assert_msg(nb_model_open(dst, &b, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    ck_assert_uint_eq(kv_u(b, "expert_count"), (uint64_t)p->n_keep);
    ck_assert_uint_eq(kv_u(b, "expert_used_count"), (uint64_t)p->n_used_new);
    ck_assert_uint_eq(kv_u(b, "block_count"), kv_u(a, "block_count"));
    ck_assert_uint_eq(a->n_tensors, b->n_tensors);
    /* keys: the same ones, plus those the plan says it writes */
    char key[128];
    snprintf(key, sizeof key, "%s.expert_weights_norm", p->arch);
    size_t added = (p->write_norm_key && !nb_kv_get(&a->kv, key)) + (size_t)p->write_ff_exp_key;
    ck_assert_uint_eq(b->kv.n, a->kv.n + added);
    for (size_t k = 0; k < a->kv.n; k++) ck_assert_msg(nb_kv_get(&b->kv, a->kv.items[k].key), "%s", a->kv.items[k].key);
    int sliced = 0;
    for (size_t i = 0; i < a->n_tensors; i++) {
        const nb_tensor *ta = &a->tensors[i], *tb = nb_model_find(b, ta->name);
        ck_assert_msg(tb != NULL, "%s missing", ta->name);
        ck_assert_int_eq(ta->type, tb->type);
        ck_assert_uint_eq(ta->n_dims, tb->n_dims);
        unsigned char *da = malloc(ta->nbytes), *db = malloc(tb->nbytes ? tb->nbytes : 1);
        ck_assert_int_eq(nb_model_read_tensor(a, i, da, ctx), NB_OK);
        ck_assert_int_eq(nb_model_read_tensor(b, (size_t)(tb - b->tensors), db, ctx), NB_OK);
        const char *s = ta->name;
        bool per_expert = strstr(s, "_exps.") || strstr(s, "ffn_gate_inp.weight");
        if (strstr(s, "_shexp")) per_expert = false;
        if (!per_expert) {
            ck_assert_mem_eq(ta->ne, tb->ne, sizeof ta->ne);
            ck_assert_uint_eq(ta->nbytes, tb->nbytes);
            ck_assert_msg(memcmp(da, db, ta->nbytes) == 0, "%s changed", s);
        } else {
            int L = atoi(s + 4);
            const nb_prune_layer *pl = NULL;
            for (int k = 0; k < p->n_layer; k++)
                if (p->layers[k].layer == L) pl = &p->layers[k];
            ck_assert_ptr_nonnull(pl);
            uint32_t last = ta->n_dims - 1;
            for (uint32_t d = 0; d < last; d++) ck_assert_int_eq(ta->ne[d], tb->ne[d]);
            ck_assert_int_eq(ta->ne[last], p->n_expert);
            ck_assert_int_eq(tb->ne[last], p->n_keep);
            uint64_t slice = ta->nbytes / (uint64_t)p->n_expert;
            ck_assert_uint_eq(tb->nbytes, slice * (uint64_t)p->n_keep);
            for (int j = 0; j < p->n_keep; j++)
                ck_assert_msg(memcmp(db + (uint64_t)j * slice, da + (uint64_t)pl->kept[j] * slice, slice) == 0,
                              "%s: slice %d is not expert %d", s, j, pl->kept[j]);
            sliced++;
        }
        free(da);
        free(db);
    }
    ck_assert_int_eq(sliced, 4 * p->n_layer); /* router + gate/up/down stacks per layer */
    nb_model_close(a);
    nb_model_close(b);
}

static void prune_to(const char *src, const nb_routing *rt, const nb_prune_opts *o, const char *dst,
                     nb_prune_plan *plan, nb_ctx *ctx) {
    nb_model *m;
    ck_assert_int_eq(nb_model_open(src, &m, ctx), NB_OK);
    ck_assert_msg(nb_prune_plan_build(m, rt, o, plan, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    nb_prune_result r;
    ck_assert_msg(nb_prune_write(m, plan, dst, &r, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    ck_assert_uint_eq(r.n_tensors, m->n_tensors);
    ck_assert_uint_eq(r.n_sliced, 4u * (unsigned)plan->n_layer);
    ck_assert_uint_gt(r.bytes_out, 0);
    nb_model_close(m);
}

static void dead_experts_dropped(const char *arch) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *model = dead_model(arch, &ctx);
    nb_routing rt;
    calibrate(model, &rt, &ctx);
    /* the construction works: dead experts never chosen, every live one is */
    ck_assert_int_eq(rt.n_layer, NL);
    for (int L = 0; L < NL; L++) {
        ck_assert_int_eq(rt.layers[L].n_expert, X);
        for (int e = 0; e < X; e++) {
            if (is_dead(e)) ck_assert_msg(rt.layers[L].n_sel[e] == 0, "%s: layer %d expert %d chosen", arch, L, e);
            else ck_assert_msg(rt.layers[L].n_sel[e] > 0, "%s: layer %d live expert %d never chosen", arch, L, e);
        }
    }
    for (int crit = 0; crit < 2; crit++) {
        nb_prune_opts o = {.keep = X - 2, .criterion = crit ? NB_PRUNE_REAP : NB_PRUNE_FREQ};
        nb_prune_plan plan;
        char dst[600];
        snprintf(dst, sizeof dst, "%s.%d.pruned.gguf", model, crit);
        prune_to(model, &rt, &o, dst, &plan, &ctx);
        ck_assert_int_eq(plan.n_layer, NL);
        ck_assert_int_eq(plan.n_keep, X - 2);
        ck_assert_int_eq(plan.n_used_new, USED);
        for (int L = 0; L < NL; L++) {
            ck_assert_int_eq(plan.layers[L].dropped[0], DEAD[0]);
            ck_assert_int_eq(plan.layers[L].dropped[1], DEAD[1]);
            for (int k = 0; k < plan.n_keep; k++) ck_assert(!is_dead(plan.layers[L].kept[k]));
            for (int e = 0; e < X; e++) {
                const nb_prune_expert *x = &plan.layers[L].experts[e];
                ck_assert(is_dead(e) ? x->score == 0 : x->score > 0);
                ck_assert(crit ? x->score == x->reap : x->score == x->freq);
            }
        }
        check_pruned(model, dst, &plan, &ctx);
        /* the dropped experts had gate weight 0: the logits stay */
        int nv, nv2;
        float *a = logits_of(model, &nv, &ctx), *b = logits_of(dst, &nv2, &ctx);
        ck_assert_int_eq(nv, nv2);
        double md = 0, mx = 0;
        for (int i = 0; i < N_TOKS * nv; i++) {
            md = fmax(md, fabs((double)a[i] - b[i]));
            mx = fmax(mx, fabs((double)a[i]));
        }
        ck_assert_msg(md <= 1e-6 * mx, "%s: logits moved by %g (max %g)", arch, md, mx);
        free(a);
        free(b);
        char *js = nb_prune_report_json(&plan, model, dst, NULL, NULL);
        ck_assert_ptr_nonnull(js);
        ck_assert_ptr_nonnull(strstr(js, "\"dropped\":[{\"expert\":1,"));
        free(js);
        nb_prune_plan_free(&plan);
    }
    nb_routing_free(&rt);
    nb_ctx_free(&ctx);
}

START_TEST(dead_experts_mixtral) { dead_experts_dropped("mixtral"); }
END_TEST
START_TEST(dead_experts_qwen2moe) { dead_experts_dropped("qwen2moe"); }
END_TEST
START_TEST(dead_experts_qwen3moe) { dead_experts_dropped("qwen3moe"); }
END_TEST

/* Routing statistics made by hand: n_sel per expert (same for every layer). */
static void fake_stats(nb_routing *rt, int n_layer, int n_expert, const double *n_sel, nb_ctx *ctx) {
    ck_assert_int_eq(nb_routing_init(rt, n_layer, NULL, ctx), NB_OK);
    for (int L = 0; L < n_layer; L++) {
        nb_routing_layer *l = &rt->layers[L];
        l->n_expert = n_expert;
        l->n_sel = calloc((size_t)n_expert, sizeof(double));
        l->gate_sum = calloc((size_t)n_expert, sizeof(double));
        l->norm_sum = calloc((size_t)n_expert, sizeof(double));
        for (int e = 0; e < n_expert; e++) {
            l->n_sel[e] = n_sel[e];
            l->gate_sum[e] = 0.5 * n_sel[e];
            l->norm_sum[e] = 0.25 * n_sel[e] * (e + 1); /* reap = 0.25 (e + 1) when chosen */
        }
        l->n_tok = 100;
    }
}

START_TEST(keep_all_is_identity) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *model = dead_model("qwen2moe", &ctx);
    const double sel[X] = {5, 0, 7, 7, 0, 1};
    nb_routing rt;
    fake_stats(&rt, NL, X, sel, &ctx);
    nb_prune_opts o = {.keep = X};
    nb_prune_plan plan;
    const char *dst = nbt_path("keepall.gguf");
    prune_to(model, &rt, &o, dst, &plan, &ctx);
    ck_assert_int_eq(plan.layers[0].kept[X - 1], X - 1);
    check_pruned(model, dst, &plan, &ctx);
    int nv;
    float *a = logits_of(model, &nv, &ctx), *b = logits_of(dst, &nv, &ctx);
    ck_assert_mem_eq(a, b, (size_t)N_TOKS * (size_t)nv * sizeof(float));
    free(a);
    free(b);
    nb_prune_plan_free(&plan);
    nb_routing_free(&rt);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(ties_and_ratio) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *model = dead_model("mixtral", &ctx);
    nb_model *m;
    ck_assert_int_eq(nb_model_open(model, &m, &ctx), NB_OK);
    nb_routing rt;
    const double sel[X] = {10, 30, 30, 20, 30, 0};
    fake_stats(&rt, NL, X, sel, &ctx);
    nb_prune_plan p;
    /* freq: 30 30 30 tie between 1, 2, 4; keep 2 -> the lower indices 1, 2 */
    nb_prune_opts o = {.keep = 2};
    ck_assert_int_eq(nb_prune_plan_build(m, &rt, &o, &p, &ctx), NB_OK);
    ck_assert_int_eq(p.layers[1].kept[0], 1);
    ck_assert_int_eq(p.layers[1].kept[1], 2);
    ck_assert_int_eq(p.layers[1].dropped[0], 0);
    ck_assert_int_eq(p.layers[1].dropped[3], 5);
    ck_assert(fabs(p.layers[0].experts[3].freq - 0.2) < 1e-12);
    nb_prune_plan_free(&p);
    /* reap = 0.25 (e + 1) for chosen experts, 0 for expert 5: keeps 4, 3, 2 */
    o.criterion = NB_PRUNE_REAP;
    o.keep = 3;
    ck_assert_int_eq(nb_prune_plan_build(m, &rt, &o, &p, &ctx), NB_OK);
    ck_assert_int_eq(p.layers[0].kept[0], 2);
    ck_assert_int_eq(p.layers[0].kept[2], 4);
    ck_assert(fabs(p.layers[0].experts[4].reap - 1.25) < 1e-12);
    ck_assert(fabs(p.layers[0].experts[4].gate_mean - 0.5) < 1e-12);
    nb_prune_plan_free(&p);
    /* every score equal: the first `keep` indices */
    const double same[X] = {4, 4, 4, 4, 4, 4};
    nb_routing_free(&rt);
    fake_stats(&rt, NL, X, same, &ctx);
    o.criterion = NB_PRUNE_FREQ;
    o.keep = 0;
    o.keep_ratio = 0.5; /* ceil(3.0) = 3 */
    ck_assert_int_eq(nb_prune_plan_build(m, &rt, &o, &p, &ctx), NB_OK);
    ck_assert_int_eq(p.n_keep, 3);
    for (int k = 0; k < 3; k++) ck_assert_int_eq(p.layers[0].kept[k], k);
    nb_prune_plan_free(&p);
    o.keep_ratio = 0.51; /* ceil(3.06) = 4 */
    ck_assert_int_eq(nb_prune_plan_build(m, &rt, &o, &p, &ctx), NB_OK);
    ck_assert_int_eq(p.n_keep, 4);
    nb_prune_plan_free(&p);
    nb_routing_free(&rt);
    nb_model_close(m);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(stats_through_imatrix_file) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *model = dead_model("qwen3moe", &ctx);
    const double sel[X] = {3, 9, 0, 2, 8, 8};
    nb_routing rt, back;
    fake_stats(&rt, NL, X, sel, &ctx);
    nb_imatrix im;
    nb_imatrix_init(&im);
    im.chunk_size = 32;
    im.chunk_count = 1;
    ck_assert_int_eq(nb_imatrix_add_dataset(&im, "x", &ctx), NB_OK);
    float ones[EMBD];
    for (int j = 0; j < EMBD; j++) ones[j] = 1;
    ck_assert_int_eq(nb_imatrix_add(&im, "blk.0.attn_q.weight", 0, 1, ones, 1, EMBD, &ctx), NB_OK);
    const char *p = nbt_path("stats.imatrix.gguf");
    ck_assert_int_eq(nb_imatrix_write_gguf(&im, nbt_path("nostats.gguf"), &ctx), NB_OK);
    ck_assert_int_eq(nb_routing_to_imatrix(&rt, &im, &ctx), NB_OK);
    ck_assert_int_eq(nb_imatrix_write_gguf(&im, p, &ctx), NB_OK);
    nb_imatrix_free(&im);
    ck_assert_msg(nb_prune_load_stats(p, &back, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_model *m;
    ck_assert_int_eq(nb_model_open(model, &m, &ctx), NB_OK);
    nb_prune_plan a, b;
    nb_prune_opts o = {.keep = 3, .criterion = NB_PRUNE_REAP};
    ck_assert_int_eq(nb_prune_plan_build(m, &rt, &o, &a, &ctx), NB_OK);
    ck_assert_int_eq(nb_prune_plan_build(m, &back, &o, &b, &ctx), NB_OK);
    for (int L = 0; L < NL; L++) {
        ck_assert_mem_eq(a.layers[L].kept, b.layers[L].kept, 3 * sizeof(int));
        ck_assert_int_eq(b.layers[L].kept[0], 3); /* reap 0.25, 0.5, 0, 1, 1.25, 1.5: 3 4 5 */
        ck_assert_int_eq(b.layers[L].kept[1], 4); /* (freq would keep 1 4 5) */
        ck_assert_int_eq(b.layers[L].kept[2], 5);
    }
    nb_prune_plan_free(&a);
    nb_prune_plan_free(&b);
    nb_routing_free(&back);
    /* a file without routing statistics */
    ck_assert_int_eq(nb_prune_load_stats(nbt_path("nostats.gguf"), &back, &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "no expert routing statistics"));
    nb_routing_free(&back);
    ck_assert_int_ne(nb_prune_load_stats(nbt_path("does-not-exist.gguf"), &back, &ctx), NB_OK);
    nb_routing_free(&back);
    nb_model_close(m);
    nb_routing_free(&rt);
    nb_ctx_free(&ctx);
}
END_TEST

/* Q8_0 experts (and router) are cut as raw blocks; an HF directory source
 * (experts stacked on read, no mapping) gives the same tensors as its GGUF. */
START_TEST(quantized_and_hf_sources) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *model = dead_model("mixtral", &ctx);
    const double sel[X] = {6, 1, 5, 4, 2, 3};
    nb_routing rt;
    fake_stats(&rt, NL, X, sel, &ctx);
    const char *q = nbt_path("q8.gguf");
    nb_convert_opts co = {.set_type = true, .type = NB_TYPE_Q8_0};
    nb_convert_result cr;
    ck_assert_msg(nb_convert(model, q, &co, &cr, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_prune_opts o = {.keep = 3};
    nb_prune_plan plan;
    const char *dst = nbt_path("q8.pruned.gguf");
    prune_to(q, &rt, &o, dst, &plan, &ctx);
    ck_assert_int_eq(plan.layers[0].kept[0], 0);
    ck_assert_int_eq(plan.layers[0].kept[1], 2);
    ck_assert_int_eq(plan.layers[0].kept[2], 3);
    check_pruned(q, dst, &plan, &ctx);
    nb_model *pm;
    ck_assert_int_eq(nb_model_open(dst, &pm, &ctx), NB_OK);
    ck_assert_int_eq(nb_model_find(pm, "blk.0.ffn_down_exps.weight")->type, NB_TYPE_Q8_0);
    nb_model_close(pm);
    int nv;
    free(logits_of(dst, &nv, &ctx)); /* the engine runs it */
    nb_prune_plan_free(&plan);

    /* HF directory of the same synthetic model (seed 7, unedited) vs its GGUF */
    const char *hf = nbt_path("mixtral_hf"), *gg = nbt_path("mixtral_plain.gguf");
    synth("mixtral", hf, &ctx);
    synth("mixtral", gg, &ctx);
    nb_prune_plan p1, p2;
    prune_to(hf, &rt, &o, nbt_path("hf.pruned.gguf"), &p1, &ctx);
    prune_to(gg, &rt, &o, nbt_path("gg.pruned.gguf"), &p2, &ctx);
    nb_model *a, *b;
    ck_assert_int_eq(nb_model_open(nbt_path("hf.pruned.gguf"), &a, &ctx), NB_OK);
    ck_assert_int_eq(nb_model_open(nbt_path("gg.pruned.gguf"), &b, &ctx), NB_OK);
    ck_assert_uint_eq(a->n_tensors, b->n_tensors);
    for (size_t i = 0; i < b->n_tensors; i++) {
        const nb_tensor *tb = &b->tensors[i], *ta = nb_model_find(a, tb->name);
        ck_assert_msg(ta != NULL, "%s", tb->name);
        ck_assert_mem_eq(ta->ne, tb->ne, sizeof ta->ne);
        if (ta->type != tb->type) continue; /* HF reader may type norms differently */
        unsigned char *x = malloc(ta->nbytes), *y = malloc(tb->nbytes);
        ck_assert_int_eq(nb_model_read_tensor(a, (size_t)(ta - a->tensors), x, &ctx), NB_OK);
        ck_assert_int_eq(nb_model_read_tensor(b, i, y, &ctx), NB_OK);
        ck_assert_msg(memcmp(x, y, ta->nbytes) == 0, "%s differs", tb->name);
        free(x);
        free(y);
    }
    nb_model_close(a);
    nb_model_close(b);
    nb_prune_plan_free(&p1);
    nb_prune_plan_free(&p2);
    nb_routing_free(&rt);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(reduce_and_renormalize_topk) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *model = dead_model("qwen2moe", &ctx);
    const double sel[X] = {6, 1, 5, 4, 2, 3};
    nb_routing rt;
    fake_stats(&rt, NL, X, sel, &ctx);
    nb_prune_opts o = {.keep = 1, .reduce_topk = true, .renormalize_topk = true};
    nb_prune_plan plan;
    const char *dst = nbt_path("top1.gguf");
    prune_to(model, &rt, &o, dst, &plan, &ctx);
    ck_assert_int_eq(plan.n_used_new, 1);
    ck_assert(plan.write_norm_key);
    ck_assert(plan.norm_warning[0] != 0); /* llama.cpp's qwen2moe ignores the key */
    check_pruned(model, dst, &plan, &ctx);
    nb_model *m;
    ck_assert_int_eq(nb_model_open(dst, &m, &ctx), NB_OK);
    bool b = false;
    ck_assert(nb_kv_get_bool(&m->kv, "qwen2moe.expert_weights_norm", &b) && b);
    ck_assert_uint_eq(kv_u(m, "expert_feed_forward_length"), 64);
    nb_model_close(m);
    int nv;
    free(logits_of(dst, &nv, &ctx));
    nb_prune_plan_free(&plan);
    /* a source without expert_feed_forward_length (width = feed_forward_length
     * / expert_used_count = 128 / 2): lowering the top-k must write the width */
    ck_assert_int_eq(nb_model_open(model, &m, &ctx), NB_OK);
    nb_kv_remove(&m->kv, "qwen2moe.expert_feed_forward_length");
    ck_assert_int_eq(nb_kv_set_u32(&m->kv, "qwen2moe.feed_forward_length", 128, &ctx), NB_OK);
    ck_assert_int_eq(nb_prune_plan_build(m, &rt, &o, &plan, &ctx), NB_OK);
    ck_assert(plan.write_ff_exp_key);
    ck_assert_uint_eq(plan.ff_exp, 64);
    nb_prune_result res;
    const char *dst2 = nbt_path("top1.noffexp.gguf");
    ck_assert_int_eq(nb_prune_write(m, &plan, dst2, &res, &ctx), NB_OK);
    nb_model_close(m);
    nb_prune_plan_free(&plan);
    ck_assert_int_eq(nb_model_open(dst2, &m, &ctx), NB_OK);
    ck_assert_uint_eq(kv_u(m, "expert_feed_forward_length"), 64);
    ck_assert_uint_eq(kv_u(m, "feed_forward_length"), 128);
    ck_assert_uint_eq(kv_u(m, "expert_used_count"), 1);
    nb_model_close(m);
    free(logits_of(dst2, &nv, &ctx)); /* the engine binds 64-wide experts */
    /* mixtral renormalises already: nothing written */
    const char *mx = dead_model("mixtral", &ctx);
    o.keep = 4;
    o.reduce_topk = false;
    ck_assert_int_eq(nb_model_open(mx, &m, &ctx), NB_OK);
    ck_assert_int_eq(nb_prune_plan_build(m, &rt, &o, &plan, &ctx), NB_OK);
    ck_assert(plan.already_normalized && !plan.write_norm_key && !plan.norm_warning[0]);
    nb_prune_plan_free(&plan);
    nb_model_close(m);
    nb_routing_free(&rt);
    nb_ctx_free(&ctx);
}
END_TEST

static void expect_fail(const char *model, const nb_routing *rt, const nb_prune_opts *o, nb_status want,
                        const char *msg, nb_ctx *ctx) {
    nb_model *m;
    ck_assert_int_eq(nb_model_open(model, &m, ctx), NB_OK);
    nb_prune_plan p;
    nb_status st = nb_prune_plan_build(m, rt, o, &p, ctx);
    ck_assert_msg(st == want, "%s: got %s (%s), want %s", msg, nb_status_name(st), nb_errmsg(ctx),
                  nb_status_name(want));
    ck_assert_msg(strstr(nb_errmsg(ctx), msg) != NULL, "message '%s' lacks '%s'", nb_errmsg(ctx), msg);
    nb_prune_plan_free(&p);
    nb_model_close(m);
}

START_TEST(bad_input) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *model = dead_model("mixtral", &ctx);
    const double sel[X] = {6, 1, 5, 4, 2, 3};
    nb_routing rt, other;
    fake_stats(&rt, NL, X, sel, &ctx);
    nb_prune_opts o = {.keep = X + 1};
    expect_fail(model, &rt, &o, NB_ERR_RANGE, "has only 6 per layer", &ctx);
    o.keep = 1;
    expect_fail(model, &rt, &o, NB_ERR_RANGE, "fewer than expert_used_count = 2", &ctx);
    o.keep = 0;
    o.keep_ratio = 1.5;
    expect_fail(model, &rt, &o, NB_ERR_INVALID, "not in (0, 1]", &ctx);
    o.keep_ratio = 0;
    o.keep = 3;
    /* statistics of another model: other layer count, other expert count, a layer missing */
    fake_stats(&other, NL + 1, X, sel, &ctx);
    expect_fail(model, &other, &o, NB_ERR_RANGE, "3-layer model", &ctx);
    nb_routing_free(&other);
    fake_stats(&other, NL, X - 1, sel, &ctx);
    expect_fail(model, &other, &o, NB_ERR_RANGE, "statistics for 5 experts", &ctx);
    nb_routing_free(&other);
    fake_stats(&other, NL, X, sel, &ctx);
    other.layers[1].n_expert = 0;
    expect_fail(model, &other, &o, NB_ERR_RANGE, "no routing data for MoE layer 1", &ctx);
    other.layers[1].n_expert = X;
    other.layers[0].n_tok = 0;
    expect_fail(model, &other, &o, NB_ERR_RANGE, "no calibration token", &ctx);
    nb_routing_free(&other);
    /* a dense model */
    const char *dense = nbt_path("dense.gguf");
    synth("llama", dense, &ctx);
    expect_fail(dense, &rt, &o, NB_ERR_UNSUPPORTED, "not a mixture-of-experts model", &ctx);
    nb_model *m;
    ck_assert_int_eq(nb_model_open(dense, &m, &ctx), NB_OK);
    ck_assert_int_eq(nb_prune_check_model(m, &o, &ctx), NB_ERR_UNSUPPORTED);
    nb_model_close(m);
    /* writing onto the source is refused; a refused write leaves nothing */
    ck_assert_int_eq(nb_model_open(model, &m, &ctx), NB_OK);
    nb_prune_plan p;
    ck_assert_int_eq(nb_prune_plan_build(m, &rt, &o, &p, &ctx), NB_OK);
    nb_prune_result r;
    ck_assert_int_eq(nb_prune_write(m, &p, model, &r, &ctx), NB_ERR_INVALID);
    const char *bad = nbt_path("no-such-dir/out.gguf");
    ck_assert_int_ne(nb_prune_write(m, &p, bad, &r, &ctx), NB_OK);
    ck_assert(!nbt_file_exists(bad));
    nb_prune_plan_free(&p);
    nb_model_close(m);
    nb_routing_free(&rt);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(evaluate_pruned) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *model = dead_model("qwen3moe", &ctx);
    const double sel[X] = {6, 1, 5, 4, 2, 3};
    nb_routing rt;
    fake_stats(&rt, NL, X, sel, &ctx);
    nb_prune_opts o = {.keep = 2};
    nb_prune_plan plan;
    const char *dst = nbt_path("eval.pruned.gguf"), *same = nbt_path("eval.same.gguf");
    prune_to(model, &rt, &o, dst, &plan, &ctx);
    nb_prune_plan_free(&plan);
    o.keep = X;
    prune_to(model, &rt, &o, same, &plan, &ctx);
    char text[1024];
    snprintf(text, sizeof text, "%s/text/eval.txt", nbt_data_dir());
    nb_prune_eval_opts eo = {.text_path = text, .n_ctx = 32, .n_chunks = 2};
    nb_prune_eval ev;
    ck_assert_msg(nb_prune_evaluate(model, same, &eo, &ev, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert(ev.pruned.has_kld);
    ck_assert_uint_eq(ev.pruned.n_scored, 2 * (32 - 1 - 16));
    ck_assert(ev.base.ppl > 1 && ev.base.ppl == ev.pruned.ppl);
    ck_assert(ev.pruned.kld.kld < 1e-6 && ev.pruned.kld.same_top == 1.0);
    const double kld_floor = ev.pruned.kld.kld; /* the 16-bit log-prob file's rounding */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.base-logprobs", same);
    ck_assert(!nbt_file_exists(tmp));
    nb_prune_eval_free(&ev);
    /* dropping live experts changes the model */
    ck_assert_msg(nb_prune_evaluate(model, dst, &eo, &ev, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert(ev.pruned.ppl != ev.base.ppl);
    /* synthetic experts are small next to the residual stream, so the change is small */
    ck_assert_msg(ev.pruned.kld.kld > 5 * kld_floor, "kld %g ppl %g vs %g", ev.pruned.kld.kld, ev.pruned.ppl, ev.base.ppl);
    char *js = nb_prune_report_json(&plan, model, same, NULL, &ev);
    ck_assert_ptr_nonnull(strstr(js, "\"kld_mean\""));
    free(js);
    nb_prune_eval_free(&ev);
    eo.text_path = nbt_path("short.txt"); /* too short for two chunks */
    nbt_write_file(eo.text_path, "short text", 10);
    ck_assert_int_ne(nb_prune_evaluate(model, dst, &eo, &ev, &ctx), NB_OK);
    nb_prune_eval_free(&ev);
    nb_prune_plan_free(&plan);
    nb_routing_free(&rt);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("distill/prune");
    TCase *tc = tcase_create("prune");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, dead_experts_mixtral);
    tcase_add_test(tc, dead_experts_qwen2moe);
    tcase_add_test(tc, dead_experts_qwen3moe);
    tcase_add_test(tc, keep_all_is_identity);
    tcase_add_test(tc, ties_and_ratio);
    tcase_add_test(tc, stats_through_imatrix_file);
    tcase_add_test(tc, quantized_and_hf_sources);
    tcase_add_test(tc, reduce_and_renormalize_topk);
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, evaluate_pruned);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
