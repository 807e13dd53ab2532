/* tests/distill/test_merge.c — adapter merging: the LoRA/DoRA kernel against
 * a direct double-precision computation, thread independence, PEFT's
 * rank/alpha pattern matching, adapter_config.json parsing, the adapter
 * readers' validation (PEFT directories and GGUF LoRA files written here), and
 * an end-to-end nb_merge on a synthetic llama checked element by element
 * (including llama.cpp's q/k row permutation). The numpy oracle of every PEFT
 * variant is tests/interop/test_merge_interop.py. */
#include "distill/adapter.h"
#include "distill/merge.h"
#include "testutil.h"

#include "formats/arch.h"
#include "formats/model.h"
#include "formats/readers.h"
#include "formats/synth.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void fill(float *x, size_t n, uint64_t seed, float s) {
    uint64_t st = seed;
    for (size_t i = 0; i < n; i++) x[i] = nbt_rand_normal(&st) * s;
}

/* W'[o][j] for plain LoRA / DoRA computed directly in double. */
static void naive(const float *W, int64_t out, int64_t in, const float *A, const float *B, int r, double scale,
                  const float *mag, double *ref) {
    for (int64_t o = 0; o < out; o++) {
        double nn = 0;
        for (int64_t j = 0; j < in; j++) {
            double d = 0;
            for (int k = 0; k < r; k++) d += (double)B[o * r + k] * A[k * in + j];
            ref[o * in + j] = W[o * in + j] + d * scale;
            nn += ref[o * in + j] * ref[o * in + j];
        }
        if (mag)
            for (int64_t j = 0; j < in; j++) ref[o * in + j] *= mag[o] / sqrt(nn);
    }
}

static double max_rel(const float *got, const double *ref, size_t n) {
    double m = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        m = fmax(m, fabs(ref[i]));
        e = fmax(e, fabs(got[i] - ref[i]));
    }
    return e / m;
}

START_TEST(kernel_lora_and_dora) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    enum { OUT = 6, IN = 10, R = 3 };
    float W[OUT * IN], W0[OUT * IN], A[R * IN], B[OUT * R], mag[OUT];
    double ref[OUT * IN], bsq[OUT], dsq[OUT];
    fill(W0, OUT * IN, 1, 0.5f);
    fill(A, R * IN, 2, 0.3f);
    fill(B, OUT * R, 3, 0.3f);
    for (int o = 0; o < OUT; o++) mag[o] = 0.5f + 0.25f * (float)o;
    for (int dora = 0; dora < 2; dora++) {
        memcpy(W, W0, sizeof W);
        ck_assert_int_eq(nb_lora_merge_rows(W, NULL, OUT, IN, A, B, R, 0.75, dora ? mag : NULL, bsq, dsq, 1, "t", &ctx),
                         NB_OK);
        naive(W0, OUT, IN, A, B, R, 0.75, dora ? mag : NULL, ref);
        ck_assert_double_le(max_rel(W, ref, OUT * IN), 1e-6);
        for (int o = 0; o < OUT; o++) {
            double b = 0, d = 0, n2 = 0;
            for (int j = 0; j < IN; j++) {
                b += (double)W0[o * IN + j] * W0[o * IN + j];
                d += ((double)W[o * IN + j] - W0[o * IN + j]) * ((double)W[o * IN + j] - W0[o * IN + j]);
                n2 += (double)W[o * IN + j] * W[o * IN + j];
            }
            ck_assert_double_eq_tol(bsq[o], b, 1e-12 * b);
            ck_assert_double_eq_tol(dsq[o], d, 1e-9 * d + 1e-20);
            /* DoRA: every row ends with exactly the magnitude as its norm */
            if (dora) ck_assert_double_eq_tol(sqrt(n2), mag[o], 1e-6);
        }
    }
    /* scale 0 leaves W bit-identical */
    memcpy(W, W0, sizeof W);
    ck_assert_int_eq(nb_lora_merge_rows(W, NULL, OUT, IN, A, B, R, 0.0, NULL, NULL, NULL, 1, "t", &ctx), NB_OK);
    ck_assert_mem_eq(W, W0, sizeof W);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(kernel_row_map_and_threads) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    enum { OUT = 64, IN = 96, R = 8 };
    float *W0 = malloc(OUT * IN * sizeof(float)), *W1 = malloc(OUT * IN * sizeof(float)),
          *W2 = malloc(OUT * IN * sizeof(float)), *A = malloc(R * IN * sizeof(float)),
          *B = malloc(OUT * R * sizeof(float)), mag[OUT];
    int64_t map[OUT];
    fill(W0, OUT * IN, 4, 0.1f);
    fill(A, R * IN, 5, 0.1f);
    fill(B, OUT * R, 6, 0.1f);
    for (int o = 0; o < OUT; o++) {
        mag[o] = 1.0f + 0.01f * (float)o;
        map[o] = (int64_t)nb_qk_dst_row((uint64_t)o, OUT, 4);
    }
    /* row_of: logical row o of the update lands on stored row map[o] */
    memcpy(W1, W0, OUT * IN * sizeof(float));
    ck_assert_int_eq(nb_lora_merge_rows(W1, map, OUT, IN, A, B, R, 1.5, mag, NULL, NULL, 1, "t", &ctx), NB_OK);
    for (int o = 0; o < OUT; o++) memcpy(W2 + o * IN, W0 + map[o] * IN, IN * sizeof(float)); /* logical order */
    ck_assert_int_eq(nb_lora_merge_rows(W2, NULL, OUT, IN, A, B, R, 1.5, mag, NULL, NULL, 1, "t", &ctx), NB_OK);
    for (int o = 0; o < OUT; o++) ck_assert_mem_eq(W1 + map[o] * IN, W2 + o * IN, IN * sizeof(float));
    /* any thread count: identical bytes */
    for (int nt = 2; nt <= 5; nt += 3) {
        memcpy(W2, W0, OUT * IN * sizeof(float));
        ck_assert_int_eq(nb_lora_merge_rows(W2, map, OUT, IN, A, B, R, 1.5, mag, NULL, NULL, nt, "t", &ctx), NB_OK);
        ck_assert_mem_eq(W1, W2, OUT * IN * sizeof(float));
    }
    /* DoRA on a row whose W + ΔW is zero: an error naming the row, not a NaN */
    memcpy(W2, W0, OUT * IN * sizeof(float));
    memset(W2 + 5 * IN, 0, IN * sizeof(float));
    memset(B + 5 * R, 0, R * sizeof(float));
    ck_assert_int_eq(nb_lora_merge_rows(W2, NULL, OUT, IN, A, B, R, 1.0, mag, NULL, NULL, 3, "blk.0.attn_q", &ctx),
                     NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "row 5"));
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "blk.0.attn_q"));
    free(W0); free(W1); free(W2); free(A); free(B);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(pattern_keys) {
    static const struct { const char *key, *mod; bool match; } c[] = {
        {"q_proj", "model.layers.0.self_attn.q_proj", true},
        {"q_proj", "model.layers.0.self_attn.qq_proj", false},    /* needs a '.' before the key */
        {"q_proj", "model.layers.0.self_attn.q_proj_x", false},   /* anchored at the end */
        {"self_attn.q_proj", "model.layers.0.self_attn.q_proj", true},
        {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.q_proj", true},
        {"layers\\.\\d\\.mlp\\.down_proj", "model.layers.3.mlp.down_proj", true},
        {"layers\\.\\d\\.mlp\\.down_proj", "model.layers.13.mlp.down_proj", false},
        {"layers\\.(0|1)\\.self_attn\\.(k|v)_proj", "model.layers.1.self_attn.v_proj", true},
        {"\\w+_proj", "model.layers.1.mlp.up_proj", true},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        bool ok;
        ck_assert_msg(nb_peft_pattern_match(c[i].key, c[i].mod, &ok) == c[i].match, "%s ~ %s", c[i].key, c[i].mod);
        ck_assert(ok);
    }
    bool ok = true;
    ck_assert(!nb_peft_pattern_match("(q_proj", "x.q_proj", &ok));
    ck_assert(!ok);
    /* keys regcomp would expand to gigabytes, and back-references: refused (found by fuzz_peft) */
    static const char *const costly[] = {"I++++++++++++++++++++++++++++++++q_proj", "((q{99}){99}){99}_proj",
                                         "(q|k)+++++++++++++++++++++++++_proj", "(\\w)\\1_proj",
                                         "\xff++*++++++++++++l_proj", "q+*_proj", "q{2}{3}_proj"};
    for (size_t i = 0; i < sizeof costly / sizeof *costly; i++) {
        ok = true;
        ck_assert_msg(!nb_peft_pattern_match(costly[i], "x.q_proj", &ok), "%s", costly[i]);
        ck_assert_msg(!ok, "%s", costly[i]);
    }
    ck_assert(nb_peft_pattern_match("[[:alpha:]]{1,8}_proj", "x.q_proj", &ok) && ok);
    ck_assert(nb_peft_pattern_match("[]a-z]+_pro(j)?", "x.q_proj", &ok) && ok);
    ck_assert(nb_peft_pattern_match("q_pr.*?j", "x.q_proj", &ok) && ok); /* lazy: allowed */
}
END_TEST

static nb_status parse(const char *json, nb_peft_config *c, nb_ctx *ctx) {
    return nb_peft_config_parse(json, strlen(json), "adapter_config.json", c, ctx);
}

START_TEST(config_parse) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_peft_config c;
    ck_assert_int_eq(parse("{\"peft_type\":\"LORA\"}", &c, &ctx), NB_OK);
    ck_assert_uint_eq(c.r, 8); /* PEFT's defaults */
    ck_assert_double_eq(c.lora_alpha, 8);
    ck_assert(!c.use_rslora && !c.use_dora && !c.fan_in_fan_out);
    nb_peft_config_free(&c);
    ck_assert_int_eq(parse("{\"peft_type\":\"LORA\",\"r\":16,\"lora_alpha\":32.5,\"use_rslora\":true,"
                           "\"use_dora\":true,\"fan_in_fan_out\":null,\"layer_replication\":null,"
                           "\"rank_pattern\":{\"q_proj\":4,\"layers\\\\.1\\\\..*\":2},\"alpha_pattern\":{\"v_proj\":3},"
                           "\"base_model_name_or_path\":\"org/model\"}", &c, &ctx), NB_OK);
    ck_assert_uint_eq(c.r, 16);
    ck_assert_double_eq(c.lora_alpha, 32.5);
    ck_assert(c.use_rslora && c.use_dora && !c.fan_in_fan_out);
    ck_assert_uint_eq(c.n_rank_pattern, 2);
    ck_assert_str_eq(c.rank_keys[1], "layers\\.1\\..*");
    ck_assert_uint_eq(c.rank_values[0], 4);
    ck_assert_uint_eq(c.n_alpha_pattern, 1);
    ck_assert_double_eq(c.alpha_values[0], 3);
    ck_assert_str_eq(c.base_model, "org/model");
    nb_peft_config_free(&c);
    static const struct { const char *json; nb_status st; const char *msg; } bad[] = {
        {"{\"r\":0}", NB_ERR_RANGE, "must be > 0"},
        {"{\"r\":-4}", NB_ERR_RANGE, "must be > 0"},
        {"{\"r\":2.5}", NB_ERR_FORMAT, "not an integer"},
        {"{\"r\":\"8\"}", NB_ERR_FORMAT, "\"r\" must be a number"},
        {"{\"use_dora\":1}", NB_ERR_FORMAT, "use_dora"},
        {"{\"peft_type\":\"LOHA\"}", NB_ERR_UNSUPPORTED, "only LORA"},
        {"{\"layer_replication\":[[0,2]]}", NB_ERR_UNSUPPORTED, "layer_replication"},
        {"{\"rank_pattern\":{\"q_proj\":0}}", NB_ERR_RANGE, "rank_pattern[\"q_proj\"]"},
        {"{\"rank_pattern\":{\"(q\":2}}", NB_ERR_UNSUPPORTED, "regular expression"},
        {"{\"alpha_pattern\":[1]}", NB_ERR_FORMAT, "alpha_pattern"},
        {"[1,2]", NB_ERR_FORMAT, "not a JSON object"},
        {"{\"r\":", NB_ERR_FORMAT, "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(parse(bad[i].json, &c, &ctx), bad[i].st);
        ck_assert_msg(strstr(nb_errmsg(&ctx), bad[i].msg), "%s -> %s", bad[i].json, nb_errmsg(&ctx));
        ck_assert_uint_eq(c.n_rank_pattern, 0); /* left empty */
    }
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- adapters written here ---------------------------------------------------------------------- */

typedef struct {
    const char *name;
    int64_t rows, cols; /* torch order; cols = 0: 1-D */
    const float *data;
} wt;

static void write_tensors(const char *path, const wt *t, size_t n) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_sink *s;
    ck_assert_int_eq(nb_sink_create(path, NB_FMT_UNKNOWN, &s, &ctx), NB_OK);
    for (size_t i = 0; i < n; i++) {
        int64_t ne[4] = {t[i].cols ? t[i].cols : t[i].rows, t[i].cols ? t[i].rows : 1, 1, 1};
        ck_assert_int_eq(nb_sink_add_tensor(s, t[i].name, NB_TYPE_F32, t[i].cols ? 2 : 1, ne, &ctx), NB_OK);
    }
    ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_OK);
    for (size_t k = 0; k < n; k++) {
        size_t i = nb_sink_data_order(s, k);
        size_t cnt = (size_t)(t[i].rows * (t[i].cols ? t[i].cols : 1));
        ck_assert_int_eq(nb_sink_write(s, t[i].data, cnt * sizeof(float), &ctx), NB_OK);
    }
    ck_assert_int_eq(nb_sink_commit(s, &ctx), NB_OK);
    nb_sink_free(s);
    nb_ctx_free(&ctx);
}

static const char *peft_dir(const char *name, const char *cfg, const wt *t, size_t n) {
    const char *d = nbt_path(name);
    mkdir(d, 0755);
    char p[512];
    snprintf(p, sizeof p, "%s/adapter_config.json", d);
    nbt_write_file(p, cfg, strlen(cfg));
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", d);
    write_tensors(p, t, n);
    return d;
}

#define DIM 32
#define NH 4
#define NKV 2
#define KV (DIM / NH * NKV)

static float g_a[4 * DIM], g_b[DIM * 4], g_bk[KV * 4], g_nan[DIM * 4];

START_TEST(adapter_readers) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    fill(g_a, 4 * DIM, 7, 0.1f);
    fill(g_b, DIM * 4, 8, 0.1f);
    nb_adapter *a;
    const char *ok_cfg = "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":6,\"alpha_pattern\":{\"k_proj\":2}}";
    wt good[] = {{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", 4, DIM, g_a},
                 {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", DIM, 4, g_b},
                 {"base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight", 4, DIM, g_a},
                 {"base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight", KV, 4, g_b},
                 {"base_model.model.lm_head.weight", 4, DIM, g_a}};
    ck_assert_int_eq(nb_adapter_open(peft_dir("good", ok_cfg, good, 5), &a, &ctx), NB_OK);
    ck_assert_uint_eq(a->kind, NB_ADAPTER_PEFT);
    ck_assert_uint_eq(a->n_modules, 2);
    ck_assert_str_eq(a->modules[0].name, "model.layers.0.self_attn.k_proj"); /* sorted */
    ck_assert_double_eq(a->modules[0].scaling, 2.0 / 4);
    ck_assert_double_eq(a->modules[1].scaling, 6.0 / 4);
    ck_assert_int_eq(a->modules[0].out, KV);
    ck_assert_uint_eq(a->n_replace, 1);
    ck_assert_str_eq(a->replace[0].name, "lm_head.weight");
    nb_adapter_close(a);

    for (size_t i = 0; i < DIM * 4; i++) g_nan[i] = g_b[i];
    g_nan[9] = INFINITY;
    static const struct { const char *cfg; int drop; int bad_b; const char *msg; } bad[] = {
        {"{\"r\":4}", 1, 0, "lora_A.weight has no matching lora_B.weight"},
        {"{\"r\":4}", 0, 1, "element 9 is infinite"},
        {"{\"r\":8}", 0, 0, "has rank 4 but adapter_config.json gives r = 8"},
        {"{\"r\":4,\"use_dora\":true}", 0, 0, "lora_magnitude_vector is missing"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        wt t[] = {{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", 4, DIM, g_a},
                  {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", DIM, 4, bad[i].bad_b ? g_nan : g_b}};
        char nm[32];
        snprintf(nm, sizeof nm, "bad%zu", i);
        ck_assert_int_ne(nb_adapter_open(peft_dir(nm, bad[i].cfg, t, bad[i].drop ? 1 : 2), &a, &ctx), NB_OK);
        ck_assert_ptr_null(a);
        ck_assert_msg(strstr(nb_errmsg(&ctx), bad[i].msg), "%zu: %s", i, nb_errmsg(&ctx));
    }
    /* a directory without adapter_config.json, a non-adapter file */
    const char *empty = nbt_path("empty");
    mkdir(empty, 0755);
    ck_assert_int_eq(nb_adapter_open(empty, &a, &ctx), NB_ERR_FORMAT);
    nbt_write_file(nbt_path("junk.bin"), "hello world", 11);
    ck_assert_int_eq(nb_adapter_open(nbt_path("junk.bin"), &a, &ctx), NB_ERR_FORMAT);

    /* GGUF LoRA: general.type must be "adapter"; lora_a needs its lora_b */
    nb_sink *s;
    const char *gp = nbt_path("lora.gguf");
    for (int variant = 0; variant < 3; variant++) {
        ck_assert_int_eq(nb_sink_create(gp, NB_FMT_GGUF, &s, &ctx), NB_OK);
        nb_kv_set_str(&s->kv, "general.architecture", "llama", &ctx);
        nb_kv_set_str(&s->kv, "general.type", variant == 1 ? "model" : "adapter", &ctx);
        nb_kv_set_str(&s->kv, "adapter.type", "lora", &ctx);
        nb_kv_set_f32(&s->kv, "adapter.lora.alpha", 8.0f, &ctx);
        int64_t nea[4] = {DIM, 4, 1, 1}, neb[4] = {4, DIM, 1, 1};
        ck_assert_int_eq(nb_sink_add_tensor(s, "blk.0.attn_q.weight.lora_a", NB_TYPE_F32, 2, nea, &ctx), NB_OK);
        if (variant != 2) ck_assert_int_eq(nb_sink_add_tensor(s, "blk.0.attn_q.weight.lora_b", NB_TYPE_F32, 2, neb, &ctx), NB_OK);
        ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_OK);
        ck_assert_int_eq(nb_sink_write(s, g_a, sizeof g_a, &ctx), NB_OK);
        if (variant != 2) ck_assert_int_eq(nb_sink_write(s, g_b, sizeof g_b, &ctx), NB_OK);
        ck_assert_int_eq(nb_sink_commit(s, &ctx), NB_OK);
        nb_sink_free(s);
        nb_status st = nb_adapter_open(gp, &a, &ctx);
        if (variant == 0) {
            ck_assert_int_eq(st, NB_OK);
            ck_assert_uint_eq(a->kind, NB_ADAPTER_GGUF);
            ck_assert_str_eq(a->arch, "llama");
            ck_assert_uint_eq(a->modules[0].rank, 4);
            ck_assert_double_eq(a->modules[0].scaling, 2.0); /* alpha / r, llama.cpp's rule */
            nb_adapter_close(a);
        } else {
            ck_assert_int_eq(st, NB_ERR_FORMAT);
            ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), variant == 1 ? "general.type" : "has no matching .lora_b"));
        }
    }
    nb_ctx_free(&ctx);
}
END_TEST

/* End to end on a synthetic llama GGUF: q and k get a LoRA, the output is
 * compared element by element with W + scale·B·A placed through llama.cpp's
 * row permutation; everything else is byte-identical. */
START_TEST(merge_end_to_end) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.n_threads = 2;
    nb_synth_opts so;
    nb_synth_opts_init(&so);
    so.arch = "llama";
    so.n_layer = 1;
    so.n_embd = DIM;
    so.n_ff = 64;
    so.n_head = NH;
    so.n_head_kv = NKV;
    so.n_vocab = 32;
    so.dtype = NB_TYPE_F32;
    so.no_vocab = true;
    const char *base = nbt_path("base.gguf"), *out = nbt_path("merged.gguf");
    ck_assert_int_eq(nb_synth_write(&so, base, &ctx), NB_OK);
    fill(g_bk, KV * 4, 9, 0.1f);
    wt t[] = {{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", 4, DIM, g_a},
              {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", DIM, 4, g_b},
              {"base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight", 4, DIM, g_a},
              {"base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight", KV, 4, g_bk}};
    const char *dir = peft_dir("e2e", "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":2}", t, 4);
    nb_merge_adapter ad = {dir, 3.0};
    nb_merge_opts o = {.adapters = &ad, .n_adapters = 1};
    nb_merge_result r;
    ck_assert_int_eq(nb_merge(base, out, &o, &r, &ctx), NB_OK);
    ck_assert_uint_eq(r.n_merged, 2);
    ck_assert_uint_eq(r.n_entries, 2);
    ck_assert_double_eq(r.entries[0].scaling, 2.0 / 4 * 3.0);
    nb_model *mb, *mo;
    ck_assert_int_eq(nb_model_open(base, &mb, &ctx), NB_OK);
    ck_assert_int_eq(nb_model_open(out, &mo, &ctx), NB_OK);
    ck_assert_uint_eq(mb->n_tensors, mo->n_tensors);
    for (size_t i = 0; i < mb->n_tensors; i++) {
        const nb_tensor *tb = &mb->tensors[i], *to = nb_model_find(mo, tb->name);
        ck_assert_ptr_nonnull(to);
        ck_assert_int_eq(to->type, tb->type);
        bool q = !strcmp(tb->name, "blk.0.attn_q.weight"), k = !strcmp(tb->name, "blk.0.attn_k.weight");
        if (!q && !k) {
            ck_assert_mem_eq(to->data, tb->data, tb->nbytes);
            continue;
        }
        const float *w0 = tb->data, *w1 = to->data, *B = q ? g_b : g_bk;
        int64_t rows = q ? DIM : KV;
        for (int64_t o2 = 0; o2 < rows; o2++) {
            int64_t g = (int64_t)nb_qk_dst_row((uint64_t)o2, (uint64_t)rows, q ? NH : NKV);
            for (int j = 0; j < DIM; j++) {
                double d = 0;
                for (int kk = 0; kk < 4; kk++) d += (double)B[o2 * 4 + kk] * g_a[kk * DIM + j];
                double want = w0[g * DIM + j] + d * 1.5;
                ck_assert_double_eq_tol(w1[g * DIM + j], want, 1e-6 * fabs(want) + 1e-9);
            }
        }
    }
    nb_model_close(mb);
    nb_model_close(mo);
    char *js = nb_merge_result_json(&r, base, out, &o);
    ck_assert_ptr_nonnull(js);
    ck_assert_ptr_nonnull(strstr(js, "\"tensor\":\t\"blk.0.attn_k.weight\""));
    free(js);
    nb_merge_result_free(&r);

    /* a target the base lacks: error before any output exists */
    wt t2[] = {{"base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight", 4, DIM, g_a},
               {"base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight", DIM, 4, g_b}};
    ad.path = peft_dir("e2e_missing", "{\"r\":4}", t2, 2);
    const char *out2 = nbt_path("never.gguf");
    ck_assert_int_eq(nb_merge(base, out2, &o, &r, &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "blk.3.attn_q.weight"));
    ck_assert(!nbt_file_exists(out2));
    nb_merge_result_free(&r);
    nb_ctx_free(&ctx);
}
END_TEST

/* The committed fixtures (tests/data/peft): what the readers make of them. */
START_TEST(fixture_files) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    char p[1024];
    nb_adapter *a;
    snprintf(p, sizeof p, "%s/peft/peft_dora_rs", nbt_data_dir());
    ck_assert_int_eq(nb_adapter_open(p, &a, &ctx), NB_OK);
    ck_assert_uint_eq(a->n_modules, 7);
    ck_assert(a->cfg.use_dora && a->cfg.use_rslora);
    for (size_t i = 0; i < a->n_modules; i++) {
        const nb_lora_module *m = &a->modules[i];
        bool q = strstr(m->name, "q_proj") != NULL, v = strstr(m->name, "v_proj") != NULL,
             down = strstr(m->name, "down_proj") != NULL;
        ck_assert_uint_eq(m->rank, q ? 2 : down ? 3 : 4);
        ck_assert_double_eq(m->alpha, v ? 3 : 6);
        ck_assert_double_eq_tol(m->scaling, m->alpha / sqrt((double)m->rank), 1e-15);
        ck_assert_int_ge(m->magnitude, 0);
        ck_assert(!m->transposed);
    }
    ck_assert_uint_eq(a->n_replace, 1);
    ck_assert_str_eq(a->replace[0].name, "lm_head.weight");
    nb_adapter_close(a);
    snprintf(p, sizeof p, "%s/peft/llama_lora.gguf", nbt_data_dir());
    ck_assert_int_eq(nb_adapter_open(p, &a, &ctx), NB_OK);
    ck_assert_uint_eq(a->n_modules, 3);
    ck_assert_str_eq(a->modules[2].name, "token_embd.weight");
    ck_assert(a->modules[2].a_transposed && a->modules[2].transposed);
    ck_assert_int_eq(a->modules[2].in, 32);
    ck_assert_int_eq(a->modules[2].out, 16);
    for (size_t i = 0; i < 3; i++) ck_assert_double_eq(a->modules[i].scaling, 2.0);
    nb_adapter_close(a);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("distill/merge");
    TCase *tc = tcase_create("merge");
    tcase_add_test(tc, kernel_lora_and_dora);
    tcase_add_test(tc, kernel_row_map_and_threads);
    tcase_add_test(tc, pattern_keys);
    tcase_add_test(tc, config_parse);
    tcase_add_test(tc, adapter_readers);
    tcase_add_test(tc, merge_end_to_end);
    tcase_add_test(tc, fixture_files);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
