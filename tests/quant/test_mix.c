/* quant/mix: per-tensor type choice on synthetic tensor sets.
 *
 * The expected tables below were written by hand from reading llama.cpp's
 * llama_tensor_get_type_impl / tensor_type_fallback (src/llama-quant.cpp),
 * not computed with the code under test: e.g. for a 32-layer model
 * use_more_bits(i, 32) is i < 4 || i >= 28 || (i - 4) % 3 == 2, i.e. the
 * layers listed in MORE_BITS_32. */
#include "quant/mix.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a synthetic tensor set ------------------------------------------------------------- */

typedef struct tset {
    nb_tensor t[1024];
    char names[1024][64];
    size_t n;
} tset;

static void add(tset *s, const char *name, nb_type type, int64_t ne0, int64_t ne1, int64_t ne2) {
    ck_assert_uint_lt(s->n, 1024);
    nb_tensor *t = &s->t[s->n];
    memset(t, 0, sizeof *t);
    snprintf(s->names[s->n], sizeof s->names[s->n], "%s", name);
    t->name = s->names[s->n];
    t->type = type;
    t->ne[0] = ne0; t->ne[1] = ne1; t->ne[2] = ne2; t->ne[3] = 1;
    t->n_dims = ne2 > 1 ? 3 : ne1 > 1 ? 2 : 1;
    s->n++;
}

/* "blk.<layer>.<suffix>" */
static void addf(tset *s, nb_type type, int64_t ne0, int64_t ne1, int64_t ne2, const char *suffix, int layer) {
    char name[64];
    snprintf(name, sizeof name, "blk.%d.%s", layer, suffix);
    add(s, name, type, ne0, ne1, ne2);
}

/* A llama-shaped model in GGUF file order: embd, per layer (norms, attn, ffn), output. */
static void llama_set(tset *s, int n_layer, int64_t embd, int64_t ff, int n_head, int n_head_kv, bool with_output) {
    memset(s, 0, sizeof *s);
    int64_t kv = embd / n_head * n_head_kv;
    add(s, "token_embd.weight", NB_TYPE_F16, embd, 32000, 1);
    for (int l = 0; l < n_layer; l++) {
        addf(s, NB_TYPE_F32, embd, 1, 1, "attn_norm.weight", l);
        addf(s, NB_TYPE_F16, embd, embd, 1, "attn_q.weight", l);
        addf(s, NB_TYPE_F16, embd, kv, 1, "attn_k.weight", l);
        addf(s, NB_TYPE_F16, embd, kv, 1, "attn_v.weight", l);
        addf(s, NB_TYPE_F16, embd, embd, 1, "attn_output.weight", l);
        addf(s, NB_TYPE_F32, embd, 1, 1, "ffn_norm.weight", l);
        addf(s, NB_TYPE_F16, embd, ff, 1, "ffn_gate.weight", l);
        addf(s, NB_TYPE_F16, embd, ff, 1, "ffn_up.weight", l);
        addf(s, NB_TYPE_F16, ff, embd, 1, "ffn_down.weight", l);
    }
    add(s, "output_norm.weight", NB_TYPE_F32, embd, 1, 1);
    if (with_output) add(s, "output.weight", NB_TYPE_F16, embd, 32000, 1);
}

static nb_mix_hparams hparams(const char *arch, uint32_t n_layer, uint32_t n_head, uint32_t n_head_kv,
                              uint32_t n_expert) {
    nb_mix_hparams hp = {0};
    snprintf(hp.arch, sizeof hp.arch, "%s", arch);
    hp.n_layer = n_layer; hp.n_head = n_head; hp.n_head_kv = n_head_kv; hp.n_expert = n_expert;
    return hp;
}

static nb_mix_choice g_plan[1024];

static void plan(const char *mix, const nb_mix_hparams *hp, const nb_mix_opts *o, const tset *s) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const nb_mix_info *m = nb_mix_find(mix);
    ck_assert_msg(m != NULL, "mix %s", mix);
    nb_status st = nb_mix_plan(m, hp, o, s->t, s->n, g_plan, &ctx);
    ck_assert_msg(st == NB_OK, "plan %s: %s", mix, nb_errmsg(&ctx));
    nb_ctx_free(&ctx);
}

static nb_type type_of(const tset *s, const char *name) {
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) return g_plan[i].type;
    ck_abort_msg("no tensor %s", name);
    return NB_TYPE_COUNT;
}

static void expect(const tset *s, const char *name, nb_type want) {
    nb_type got = type_of(s, name);
    ck_assert_msg(got == want, "%s: got %s, want %s", name, nb_type_name(got), nb_type_name(want));
}

static void expect_layer(const tset *s, const char *suffix, int l, nb_type want) {
    char name[64];
    snprintf(name, sizeof name, "blk.%d.%s", l, suffix);
    expect(s, name, want);
}

/* use_more_bits(i, 32), by hand: 0..3, 28..31, and 4 + 2 + 3k = 6, 9, ..., 27 */
static const int MORE_BITS_32[] = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31};

static bool in_more_32(int l) {
    for (size_t i = 0; i < sizeof MORE_BITS_32 / sizeof *MORE_BITS_32; i++)
        if (MORE_BITS_32[i] == l) return true;
    return false;
}

/* ---- tests ------------------------------------------------------------------------------------ */

START_TEST(use_more_bits_32) {
    for (int l = 0; l < 32; l++) ck_assert_int_eq(nb_mix_use_more_bits(l, 32), in_more_32(l));
    /* n = 4: n/8 = 0, 7n/8 = 3: layers 2 ((2-0)%3 == 2) and 3 */
    ck_assert(!nb_mix_use_more_bits(0, 4) && !nb_mix_use_more_bits(1, 4));
    ck_assert(nb_mix_use_more_bits(2, 4) && nb_mix_use_more_bits(3, 4));
}
END_TEST

static tset g_s;

START_TEST(q4_k_m_llama32) {
    llama_set(&g_s, 32, 4096, 11008, 32, 8, true);
    nb_mix_hparams hp = hparams("llama", 32, 32, 8, 0);
    plan("q4_k_m", &hp, NULL, &g_s);
    expect(&g_s, "token_embd.weight", NB_TYPE_Q4_K);
    expect(&g_s, "output.weight", NB_TYPE_Q6_K);
    expect(&g_s, "output_norm.weight", NB_TYPE_F32);
    for (int l = 0; l < 32; l++) {
        nb_type raised = in_more_32(l) ? NB_TYPE_Q6_K : NB_TYPE_Q4_K;
        expect_layer(&g_s, "attn_v.weight", l, raised);
        expect_layer(&g_s, "ffn_down.weight", l, raised);
        expect_layer(&g_s, "attn_q.weight", l, NB_TYPE_Q4_K);
        expect_layer(&g_s, "attn_k.weight", l, NB_TYPE_Q4_K);
        expect_layer(&g_s, "attn_output.weight", l, NB_TYPE_Q4_K);
        expect_layer(&g_s, "ffn_gate.weight", l, NB_TYPE_Q4_K);
        expect_layer(&g_s, "ffn_up.weight", l, NB_TYPE_Q4_K);
        expect_layer(&g_s, "attn_norm.weight", l, NB_TYPE_F32);
        expect_layer(&g_s, "ffn_norm.weight", l, NB_TYPE_F32);
    }
    /* why: mix rows are marked, norms kept */
    for (size_t i = 0; i < g_s.n; i++) {
        if (strstr(g_s.t[i].name, "norm")) ck_assert_int_eq(g_plan[i].why, NB_PLAN_KEEP);
        else if (g_plan[i].type == NB_TYPE_Q6_K) ck_assert_int_eq(g_plan[i].why, NB_PLAN_MIX);
        else ck_assert_int_eq(g_plan[i].why, NB_PLAN_BASE);
    }
}
END_TEST

/* The counters follow llama.cpp's (layer, name) order, not the file order. */
START_TEST(order_independent) {
    llama_set(&g_s, 32, 4096, 11008, 32, 8, true);
    nb_mix_hparams hp = hparams("llama", 32, 32, 8, 0);
    /* reverse the list: a file with blk.31 first */
    for (size_t i = 0; i < g_s.n / 2; i++) {
        nb_tensor t = g_s.t[i];
        g_s.t[i] = g_s.t[g_s.n - 1 - i];
        g_s.t[g_s.n - 1 - i] = t;
    }
    plan("q4_k_m", &hp, NULL, &g_s);
    for (int l = 0; l < 32; l++) {
        nb_type raised = in_more_32(l) ? NB_TYPE_Q6_K : NB_TYPE_Q4_K;
        expect_layer(&g_s, "attn_v.weight", l, raised);
        expect_layer(&g_s, "ffn_down.weight", l, raised);
    }
}
END_TEST

START_TEST(k_mixes_llama32) {
    llama_set(&g_s, 32, 4096, 11008, 32, 8, true);
    nb_mix_hparams hp = hparams("llama", 32, 32, 8, 0);
    /* q4_k_s: attn_v of the first 4 attn_v tensors and ffn_down of layers < 32/8 get Q5_K */
    plan("q4_k_s", &hp, NULL, &g_s);
    for (int l = 0; l < 32; l++) {
        expect_layer(&g_s, "attn_v.weight", l, l < 4 ? NB_TYPE_Q5_K : NB_TYPE_Q4_K);
        expect_layer(&g_s, "ffn_down.weight", l, l < 4 ? NB_TYPE_Q5_K : NB_TYPE_Q4_K);
        expect_layer(&g_s, "attn_output.weight", l, NB_TYPE_Q4_K);
    }
    expect(&g_s, "output.weight", NB_TYPE_Q6_K);
    /* q3_k_m: attn_v Q5_K for the first two, then Q4_K; ffn_down Q5_K below 32/16, else Q4_K
     * (not falcon); attn_output Q4_K */
    plan("q3_k_m", &hp, NULL, &g_s);
    for (int l = 0; l < 32; l++) {
        expect_layer(&g_s, "attn_v.weight", l, l < 2 ? NB_TYPE_Q5_K : NB_TYPE_Q4_K);
        expect_layer(&g_s, "ffn_down.weight", l, l < 2 ? NB_TYPE_Q5_K : NB_TYPE_Q4_K);
        expect_layer(&g_s, "attn_output.weight", l, NB_TYPE_Q4_K);
        expect_layer(&g_s, "attn_q.weight", l, NB_TYPE_Q3_K);
    }
    /* q3_k_l: attn_v, ffn_down, attn_output Q5_K */
    plan("q3_k_l", &hp, NULL, &g_s);
    expect(&g_s, "blk.17.attn_v.weight", NB_TYPE_Q5_K);
    expect(&g_s, "blk.17.ffn_down.weight", NB_TYPE_Q5_K);
    expect(&g_s, "blk.17.attn_output.weight", NB_TYPE_Q5_K);
    expect(&g_s, "blk.17.ffn_up.weight", NB_TYPE_Q3_K);
    /* q3_k_s: only output raised */
    plan("q3_k_s", &hp, NULL, &g_s);
    expect(&g_s, "blk.0.attn_v.weight", NB_TYPE_Q3_K);
    expect(&g_s, "blk.0.ffn_down.weight", NB_TYPE_Q3_K);
    expect(&g_s, "output.weight", NB_TYPE_Q6_K);
    /* q2_k with GQA 4: attn_v Q4_K; ffn_down and attn_output Q3_K */
    plan("q2_k", &hp, NULL, &g_s);
    expect(&g_s, "blk.5.attn_v.weight", NB_TYPE_Q4_K);
    expect(&g_s, "blk.5.ffn_down.weight", NB_TYPE_Q3_K);
    expect(&g_s, "blk.5.attn_output.weight", NB_TYPE_Q3_K);
    expect(&g_s, "blk.5.attn_q.weight", NB_TYPE_Q2_K);
    /* q5_k_m: use_more_bits layers Q6_K */
    plan("q5_k_m", &hp, NULL, &g_s);
    for (int l = 0; l < 32; l++) {
        nb_type want = in_more_32(l) ? NB_TYPE_Q6_K : NB_TYPE_Q5_K;
        expect_layer(&g_s, "attn_v.weight", l, want);
        expect_layer(&g_s, "ffn_down.weight", l, want);
    }
    /* q5_k_s, q6_k: only the output (q6_k's output is Q6_K anyway) */
    plan("q5_k_s", &hp, NULL, &g_s);
    expect(&g_s, "blk.0.attn_v.weight", NB_TYPE_Q5_K);
    expect(&g_s, "output.weight", NB_TYPE_Q6_K);
    plan("q6_k", &hp, NULL, &g_s);
    expect(&g_s, "blk.0.ffn_down.weight", NB_TYPE_Q6_K);
    /* iq4_nl / iq4_xs with GQA 4: attn_v Q5_K; ffn_down Q5_K below n/8 (no imatrix) */
    plan("iq4_xs", &hp, NULL, &g_s);
    expect(&g_s, "blk.9.attn_v.weight", NB_TYPE_Q5_K);
    expect(&g_s, "blk.3.ffn_down.weight", NB_TYPE_Q5_K);
    expect(&g_s, "blk.4.ffn_down.weight", NB_TYPE_IQ4_XS);
    expect(&g_s, "output.weight", NB_TYPE_Q6_K);
    expect(&g_s, "token_embd.weight", NB_TYPE_IQ4_XS);
}
END_TEST

START_TEST(legacy_mixes) {
    llama_set(&g_s, 32, 4096, 11008, 32, 32, true); /* no GQA */
    nb_mix_hparams hp = hparams("llama", 32, 32, 32, 0);
    /* q4_0: output Q6_K, everything else Q4_0 (the Q4_1 ffn_down guard needs an imatrix) */
    plan("q4_0", &hp, NULL, &g_s);
    expect(&g_s, "output.weight", NB_TYPE_Q6_K);
    expect(&g_s, "token_embd.weight", NB_TYPE_Q4_0);
    expect(&g_s, "blk.0.ffn_down.weight", NB_TYPE_Q4_0);
    expect(&g_s, "blk.0.attn_v.weight", NB_TYPE_Q4_0);
    hp.has_imatrix = true;
    plan("q4_0", &hp, NULL, &g_s);
    expect(&g_s, "blk.3.ffn_down.weight", NB_TYPE_Q4_1);
    expect(&g_s, "blk.4.ffn_down.weight", NB_TYPE_Q4_0);
    hp.has_imatrix = false;
    /* q8_0 keeps output at Q8_0 */
    plan("q8_0", &hp, NULL, &g_s);
    expect(&g_s, "output.weight", NB_TYPE_Q8_0);
    expect(&g_s, "token_embd.weight", NB_TYPE_Q8_0);
    /* q2_k without GQA: attn_v Q3_K */
    plan("q2_k", &hp, NULL, &g_s);
    expect(&g_s, "blk.0.attn_v.weight", NB_TYPE_Q3_K);
    /* iq4_nl without GQA: attn_v stays */
    plan("iq4_nl", &hp, NULL, &g_s);
    expect(&g_s, "blk.0.attn_v.weight", NB_TYPE_IQ4_NL);
    /* float mixes: every quantizable tensor in the type, norms F32 */
    plan("bf16", &hp, NULL, &g_s);
    expect(&g_s, "output.weight", NB_TYPE_BF16);
    expect(&g_s, "blk.0.attn_v.weight", NB_TYPE_BF16);
    expect(&g_s, "blk.0.attn_norm.weight", NB_TYPE_F32);
}
END_TEST

START_TEST(tied_embeddings) {
    llama_set(&g_s, 32, 4096, 11008, 32, 8, false);
    nb_mix_hparams hp = hparams("llama", 32, 32, 8, 0);
    plan("q4_k_m", &hp, NULL, &g_s);
    expect(&g_s, "token_embd.weight", NB_TYPE_Q6_K); /* treated as the output tensor */
    plan("q8_0", &hp, NULL, &g_s);
    expect(&g_s, "token_embd.weight", NB_TYPE_Q8_0);
    /* token_embd row length 576 (SmolLM-135M): Q6_K does not fit 256 -> output rule picks Q8_0
     * because 576 is not a multiple of q4_K's 256 either */
    memset(&g_s, 0, sizeof g_s);
    add(&g_s, "token_embd.weight", NB_TYPE_F16, 576, 49152, 1);
    add(&g_s, "blk.0.attn_v.weight", NB_TYPE_F16, 576, 192, 1);
    add(&g_s, "blk.0.ffn_down.weight", NB_TYPE_F16, 1536, 576, 1);
    hp = hparams("llama", 1, 9, 3, 0);
    plan("q4_k_m", &hp, NULL, &g_s);
    expect(&g_s, "token_embd.weight", NB_TYPE_Q8_0);
    ck_assert_int_eq(g_plan[0].why, NB_PLAN_MIX);
    /* q4_0 on the same: token_embd Q6_K wanted (576 % 32 == 0), Q6_K needs 256 -> fallback Q8_0 */
    plan("q4_0", &hp, NULL, &g_s);
    expect(&g_s, "token_embd.weight", NB_TYPE_Q8_0);
    ck_assert_int_eq(g_plan[0].why, NB_PLAN_FALLBACK);
    ck_assert_int_eq(g_plan[0].wanted, NB_TYPE_Q6_K);
    /* attn_v 576 wide in q4_k_m: use_more_bits(0, 1) -> Q6_K, falls back to Q8_0; ffn_down 1536 fits */
    plan("q4_k_m", &hp, NULL, &g_s);
    expect(&g_s, "blk.0.attn_v.weight", NB_TYPE_Q8_0);
    expect(&g_s, "blk.0.ffn_down.weight", NB_TYPE_Q6_K);
}
END_TEST

/* Mixtral-like: 8 experts, stacked 3-D expert tensors, routers. */
static void moe_set(tset *s, int n_layer) {
    memset(s, 0, sizeof *s);
    add(s, "token_embd.weight", NB_TYPE_F16, 4096, 32000, 1);
    for (int l = 0; l < n_layer; l++) {
        addf(s, NB_TYPE_F32, 4096, 1, 1, "attn_norm.weight", l);
        addf(s, NB_TYPE_F16, 4096, 4096, 1, "attn_q.weight", l);
        addf(s, NB_TYPE_F16, 4096, 1024, 1, "attn_k.weight", l);
        addf(s, NB_TYPE_F16, 4096, 1024, 1, "attn_v.weight", l);
        addf(s, NB_TYPE_F16, 4096, 4096, 1, "attn_output.weight", l);
        addf(s, NB_TYPE_F32, 4096, 8, 1, "ffn_gate_inp.weight", l);
        addf(s, NB_TYPE_F16, 4096, 14336, 8, "ffn_gate_exps.weight", l);
        addf(s, NB_TYPE_F16, 4096, 14336, 8, "ffn_up_exps.weight", l);
        addf(s, NB_TYPE_F16, 14336, 4096, 8, "ffn_down_exps.weight", l);
    }
    add(s, "output.weight", NB_TYPE_F16, 4096, 32000, 1);
}

START_TEST(moe_mixtral) {
    moe_set(&g_s, 32);
    nb_mix_hparams hp = hparams("llama", 32, 32, 8, 8);
    plan("q4_k_m", &hp, NULL, &g_s);
    for (int l = 0; l < 32; l++) {
        expect_layer(&g_s, "attn_v.weight", l, NB_TYPE_Q8_0);  /* n_expert == 8 */
        expect_layer(&g_s, "attn_k.weight", l, NB_TYPE_Q8_0);
        expect_layer(&g_s, "attn_output.weight", l, NB_TYPE_Q5_K);
        expect_layer(&g_s, "ffn_gate_inp.weight", l, NB_TYPE_F32); /* router: never quantized */
        expect_layer(&g_s, "ffn_down_exps.weight", l, in_more_32(l) ? NB_TYPE_Q6_K : NB_TYPE_Q4_K);
        expect_layer(&g_s, "ffn_up_exps.weight", l, NB_TYPE_Q4_K);
    }
    /* q4_0 on an 8-expert model: attn_v/attn_k still Q8_0 */
    plan("q4_0", &hp, NULL, &g_s);
    expect(&g_s, "blk.3.attn_v.weight", NB_TYPE_Q8_0);
    expect(&g_s, "blk.3.attn_k.weight", NB_TYPE_Q8_0);
    expect(&g_s, "blk.3.attn_output.weight", NB_TYPE_Q4_0);
    /* mxfp4_moe: stacked experts MXFP4, the rest Q8_0, output Q8_0 */
    plan("mxfp4_moe", &hp, NULL, &g_s);
    expect(&g_s, "blk.3.ffn_down_exps.weight", NB_TYPE_MXFP4);
    expect(&g_s, "blk.3.attn_v.weight", NB_TYPE_Q8_0);
    expect(&g_s, "blk.3.attn_q.weight", NB_TYPE_Q8_0);
    expect(&g_s, "output.weight", NB_TYPE_Q8_0);
    expect(&g_s, "token_embd.weight", NB_TYPE_Q8_0);
    /* a MoE tensor outside "blk.N." cannot be placed: error, as in llama.cpp */
    add(&g_s, "extra.ffn_down_exps.weight", NB_TYPE_F16, 256, 256, 8);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ck_assert_int_eq(nb_mix_plan(nb_mix_find("q4_k_m"), &hp, NULL, g_s.t, g_s.n, g_plan, &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "extra.ffn_down_exps.weight"));
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(llama70b_attn_v) {
    llama_set(&g_s, 80, 8192, 28672, 64, 8, true);
    nb_mix_hparams hp = hparams("llama", 80, 64, 8, 0);
    /* q4_k_s: first 4 attn_v Q5_K, the rest Q4_K bumped to Q5_K on 70B */
    plan("q4_k_s", &hp, NULL, &g_s);
    for (int l = 0; l < 80; l++) expect_layer(&g_s, "attn_v.weight", l, NB_TYPE_Q5_K);
    /* same shape as another arch: no bump */
    hp = hparams("qwen2", 80, 64, 8, 0);
    plan("q4_k_s", &hp, NULL, &g_s);
    expect(&g_s, "blk.40.attn_v.weight", NB_TYPE_Q4_K);
}
END_TEST

START_TEST(falcon_rows) {
    llama_set(&g_s, 32, 4096, 11008, 32, 8, true);
    nb_mix_hparams hp = hparams("falcon", 32, 32, 8, 0);
    plan("q4_k_m", &hp, NULL, &g_s);
    expect(&g_s, "output.weight", NB_TYPE_Q8_0);
    expect(&g_s, "blk.0.ffn_down.weight", NB_TYPE_Q6_K);  /* i < n/16 */
    expect(&g_s, "blk.3.ffn_down.weight", NB_TYPE_Q5_K);  /* use_more_bits */
    expect(&g_s, "blk.4.ffn_down.weight", NB_TYPE_Q4_K);
    plan("q3_k_l", &hp, NULL, &g_s);
    expect(&g_s, "blk.4.attn_output.weight", NB_TYPE_Q4_K);
    expect(&g_s, "blk.4.ffn_down.weight", NB_TYPE_Q4_K);
}
END_TEST

START_TEST(quantizable) {
    int64_t ne2[4] = {4096, 4096, 1, 1}, ne1[4] = {4096, 1, 1, 1}, col[4] = {1, 4096, 1, 1};
    ck_assert(nb_mix_tensor_quantizable("blk.0.attn_q.weight", ne2));
    ck_assert(!nb_mix_tensor_quantizable("blk.0.attn_q.weight", ne1)); /* 1-D */
    ck_assert(nb_mix_tensor_quantizable("blk.0.attn_q.weight", col));  /* [1, 4096] is 2-D in ggml */
    ck_assert(!nb_mix_tensor_quantizable("blk.0.attn_q.bias", ne2));   /* not a weight */
    ck_assert(!nb_mix_tensor_quantizable("blk.0.attn_q_norm.weight", ne2));
    ck_assert(!nb_mix_tensor_quantizable("blk.0.ffn_gate_inp.weight", ne2));
    ck_assert(!nb_mix_tensor_quantizable("position_embd.weight", ne2));
    ck_assert(!nb_mix_tensor_quantizable("blk.0.ssm_conv1d.weight", ne2));
    ck_assert(nb_mix_tensor_quantizable("blk.0.ffn_gate_inp_shexp.weight", ne2)); /* not the router itself */
    /* kept types: a 1-D F16 bias becomes F32, an F16 router F32, an I32 2-D tensor stays */
    memset(&g_s, 0, sizeof g_s);
    add(&g_s, "blk.0.attn_q.bias", NB_TYPE_F16, 64, 1, 1);
    add(&g_s, "blk.0.ffn_gate_inp.weight", NB_TYPE_F16, 64, 8, 1);
    add(&g_s, "blk.0.idx.weight", NB_TYPE_I32, 64, 8, 1);
    nb_mix_hparams hp = hparams("qwen2moe", 1, 4, 4, 8);
    plan("q8_0", &hp, NULL, &g_s);
    ck_assert_int_eq(g_plan[0].type, NB_TYPE_F32);
    ck_assert_int_eq(g_plan[1].type, NB_TYPE_F32);
    ck_assert_int_eq(g_plan[2].type, NB_TYPE_I32);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(g_plan[i].why, NB_PLAN_KEEP);
}
END_TEST

START_TEST(fallbacks) {
    memset(&g_s, 0, sizeof g_s);
    add(&g_s, "blk.0.attn_q.weight", NB_TYPE_F16, 4000, 16, 1);  /* 4000 % 256 != 0, % 32 == 0 */
    add(&g_s, "blk.0.attn_k.weight", NB_TYPE_F16, 100, 16, 1);   /* not even % 32 */
    add(&g_s, "blk.0.attn_v.weight", NB_TYPE_F16, 4096, 16, 1);
    nb_mix_hparams hp = hparams("llama", 1, 4, 4, 0);
    static const struct { const char *mix; nb_type q, k; } cases[] = {
        {"q4_k_s", NB_TYPE_Q5_0, NB_TYPE_F16}, {"q5_k_s", NB_TYPE_Q5_1, NB_TYPE_F16},
        {"q6_k", NB_TYPE_Q8_0, NB_TYPE_F16},   {"iq4_xs", NB_TYPE_IQ4_NL, NB_TYPE_F16},
        {"q3_k_s", NB_TYPE_Q4_0, NB_TYPE_F16}, {"q2_k", NB_TYPE_Q4_0, NB_TYPE_F16},
        {"q8_0", NB_TYPE_Q8_0, NB_TYPE_F16},   {"int4-g128", NB_TYPE_INT4_SYM_G32, NB_TYPE_F16},
        {"int4-asym-g128", NB_TYPE_INT4_ASYM_G32, NB_TYPE_F16}, {"nf4-dq", NB_TYPE_F16, NB_TYPE_F16},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        plan(cases[c].mix, &hp, NULL, &g_s);
        ck_assert_msg(g_plan[0].type == cases[c].q, "%s: 4000 wide -> %s", cases[c].mix, nb_type_name(g_plan[0].type));
        ck_assert_msg(g_plan[1].type == cases[c].k, "%s: 100 wide -> %s", cases[c].mix, nb_type_name(g_plan[1].type));
        ck_assert_int_eq(g_plan[1].why, NB_PLAN_FALLBACK);
    }
    /* nf4-dq: 4096-wide rows do not fit 16384 -> NF4 */
    plan("nf4-dq", &hp, NULL, &g_s);
    ck_assert_int_eq(g_plan[2].type, NB_TYPE_NF4);
    ck_assert_int_eq(g_plan[2].wanted, NB_TYPE_NF4_DQ);
    /* --no-fallback turns it into an error naming the tensor */
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_mix_opts o = {.no_fallback = true};
    ck_assert_int_eq(nb_mix_plan(nb_mix_find("q4_k_m"), &hp, &o, g_s.t, g_s.n, g_plan, &ctx), NB_ERR_RANGE);
    /* llama.cpp's visiting order is by name within a layer: attn_k (100 wide) comes first */
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "blk.0.attn_k.weight"));
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "100"));
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(rules_override) {
    llama_set(&g_s, 32, 4096, 11008, 32, 8, true);
    nb_mix_hparams hp = hparams("llama", 32, 32, 8, 0);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_rules r;
    nb_rules_init(&r);
    ck_assert_int_eq(nb_rules_add(&r, "blk.*.ffn_down.weight=q8_0", &ctx), NB_OK);
    ck_assert_int_eq(nb_rules_add(&r, "re:^blk\\.(1|2)\\.ffn_down=Q5_0", &ctx), NB_OK);
    ck_assert_int_eq(nb_rules_add(&r, "*norm.weight=q8_0", &ctx), NB_OK); /* norms are never quantized */
    ck_assert_int_eq(nb_rules_add(&r, "output.weight=f16", &ctx), NB_OK);
    nb_mix_opts o = {.rules = &r};
    plan("q4_k_m", &hp, &o, &g_s);
    expect(&g_s, "blk.0.ffn_down.weight", NB_TYPE_Q8_0);
    expect(&g_s, "blk.1.ffn_down.weight", NB_TYPE_Q5_0); /* later rule wins */
    expect(&g_s, "blk.2.ffn_down.weight", NB_TYPE_Q5_0);
    expect(&g_s, "blk.12.ffn_down.weight", NB_TYPE_Q8_0);
    expect(&g_s, "blk.0.attn_norm.weight", NB_TYPE_F32);
    expect(&g_s, "output.weight", NB_TYPE_F16);
    for (size_t i = 0; i < g_s.n; i++)
        if (strstr(g_s.t[i].name, "ffn_down")) ck_assert_int_eq(g_plan[i].why, NB_PLAN_RULE);
    /* attn_v keeps the mix's choice */
    expect(&g_s, "blk.6.attn_v.weight", NB_TYPE_Q6_K);
    ck_assert_int_eq(nb_rules_match(&r, "blk.1.ffn_down.weight"), 1);
    ck_assert_int_eq(nb_rules_match(&r, "blk.1.attn_q.weight"), -1);
    /* malformed rules are usage errors */
    ck_assert_int_eq(nb_rules_add(&r, "blk.*.ffn_down.weight", &ctx), NB_ERR_INVALID);
    ck_assert_int_eq(nb_rules_add(&r, "=q8_0", &ctx), NB_ERR_INVALID);
    ck_assert_int_eq(nb_rules_add(&r, "x=q9_9", &ctx), NB_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "q9_9"));
    ck_assert_int_eq(nb_rules_add(&r, "x=q8_K", &ctx) == NB_OK, nb_type_get(NB_TYPE_Q8_K)->quantize != NULL);
    ck_assert_int_eq(nb_rules_add(&r, "re:blk.(=q8_0", &ctx), NB_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "regular expression"));
    nb_rules_free(&r);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(pure_mode) {
    llama_set(&g_s, 32, 4096, 11008, 32, 8, true);
    nb_mix_hparams hp = hparams("llama", 32, 32, 8, 0);
    nb_mix_opts o = {.pure = true};
    plan("q4_k_m", &hp, &o, &g_s);
    for (size_t i = 0; i < g_s.n; i++)
        ck_assert_int_eq(g_plan[i].type, strstr(g_s.t[i].name, "norm") ? NB_TYPE_F32 : NB_TYPE_Q4_K);
}
END_TEST

START_TEST(own_mixes) {
    llama_set(&g_s, 4, 4096, 11008, 32, 8, true);
    g_s.t[0].type = NB_TYPE_BF16;
    nb_mix_hparams hp = hparams("llama", 4, 32, 8, 0);
    plan("nf4", &hp, NULL, &g_s);
    expect(&g_s, "token_embd.weight", NB_TYPE_BF16); /* 16-bit source kept */
    expect(&g_s, "output.weight", NB_TYPE_F16);
    expect(&g_s, "blk.0.attn_v.weight", NB_TYPE_NF4);
    expect(&g_s, "blk.3.ffn_down.weight", NB_TYPE_NF4); /* no llama.cpp rows for own mixes */
    plan("int4-g64", &hp, NULL, &g_s);
    expect(&g_s, "blk.0.ffn_down.weight", NB_TYPE_INT4_SYM_G64);
    plan("INT4_ASYM_G32", &hp, NULL, &g_s);
    expect(&g_s, "blk.0.ffn_up.weight", NB_TYPE_INT4_ASYM_G32);
}
END_TEST

START_TEST(names_and_hparams) {
    ck_assert_int_eq(nb_mix_find("Q4_K_M")->id, NB_MIX_Q4_K_M);
    ck_assert_int_eq(nb_mix_find("q4_k")->id, NB_MIX_Q4_K_M);
    ck_assert_int_eq(nb_mix_find("nf4_dq")->id, NB_MIX_NF4_DQ);
    ck_assert_int_eq(nb_mix_find("int4")->id, NB_MIX_INT4_G128);
    ck_assert_ptr_null(nb_mix_find("q4_k_x"));
    /* general.file_type values from llama.h */
    ck_assert_int_eq(nb_mix_find("q4_k_m")->llama_ftype, 15);
    ck_assert_int_eq(nb_mix_find("q8_0")->llama_ftype, 7);
    ck_assert_int_eq(nb_mix_find("q4_0")->llama_ftype, 2);
    ck_assert_int_eq(nb_mix_find("q5_k_m")->llama_ftype, 17);
    ck_assert_int_eq(nb_mix_find("iq4_xs")->llama_ftype, 30);
    ck_assert_int_eq(nb_mix_find("bf16")->llama_ftype, 32);
    ck_assert_int_eq(nb_mix_find("nf4")->llama_ftype, -1);
    for (int i = 0; i < NB_MIX_COUNT; i++) {
        const nb_mix_info *m = nb_mix_get((nb_mix_id)i);
        ck_assert_int_eq(m->id, i);
        ck_assert_ptr_eq(nb_mix_find(m->name), m);
        ck_assert_ptr_nonnull(nb_type_get(m->base));
    }
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_kvset kv;
    nb_kvset_init(&kv);
    ck_assert_int_eq(nb_kv_set_str(&kv, "general.architecture", "qwen3moe", &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_u32(&kv, "qwen3moe.block_count", 48, &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_u32(&kv, "qwen3moe.attention.head_count", 32, &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_u32(&kv, "qwen3moe.expert_count", 128, &ctx), NB_OK);
    nb_mix_hparams hp;
    nb_mix_hparams_from_kv(&kv, &hp);
    ck_assert_str_eq(hp.arch, "qwen3moe");
    ck_assert_uint_eq(hp.n_layer, 48);
    ck_assert_uint_eq(hp.n_head_kv, 32); /* defaults to head_count */
    ck_assert_uint_eq(hp.n_expert, 128);
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("mix");
    TCase *tc = tcase_create("mix");
    tcase_add_test(tc, use_more_bits_32);
    tcase_add_test(tc, q4_k_m_llama32);
    tcase_add_test(tc, order_independent);
    tcase_add_test(tc, k_mixes_llama32);
    tcase_add_test(tc, legacy_mixes);
    tcase_add_test(tc, tied_embeddings);
    tcase_add_test(tc, moe_mixtral);
    tcase_add_test(tc, llama70b_attn_v);
    tcase_add_test(tc, falcon_rows);
    tcase_add_test(tc, quantizable);
    tcase_add_test(tc, fallbacks);
    tcase_add_test(tc, rules_override);
    tcase_add_test(tc, pure_mode);
    tcase_add_test(tc, own_mixes);
    tcase_add_test(tc, names_and_hparams);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
