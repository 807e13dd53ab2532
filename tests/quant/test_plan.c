/* quant/plan: the plan as a value.
 *
 * Checks: a plan survives JSON out and in (every tensor's type, why and
 * bytes); a hand edit that only changes a "type" is completed from the model
 * and its sizes recomputed; the written file has exactly the planned types
 * and tensor bytes; a plan for another model (other shapes, other size, other
 * tensor names) is refused naming the difference; unknown keys, unknown
 * types, a type whose block does not divide the row, and malformed JSON are
 * errors naming what is wrong; the quantization job refuses requantization
 * without allow_requantize and checks method/option combinations. */
#include "calib/job.h"
#include "formats/model.h"
#include "formats/synth.h"
#include "quant/plan.h"
#include "quant/quantize.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void synth(const char *path, uint32_t n_embd, uint64_t seed) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.arch = "llama";
    o.n_layer = 2;
    o.n_embd = n_embd;
    o.n_ff = 512;
    o.n_head = 4;
    o.n_head_kv = 2;
    o.n_vocab = 320;
    o.seed = seed;
    ck_assert_msg(nb_synth_write(&o, path, &ctx) == NB_OK, "synth: %s", nb_errmsg(&ctx));
    nb_ctx_free(&ctx);
}

static const char *src_model(void) {
    static char path[512];
    if (!path[0]) {
        snprintf(path, sizeof path, "%s", nbt_path("plan_src.gguf"));
        synth(path, 256, 3);
    }
    return path;
}

/* Parse `json` and resolve it against the model at src. */
static nb_status load_text(const char *json, const char *src, nb_plan *p, nb_ctx *ctx) {
    nb_status st = nb_plan_from_json(json, "test.json", p, ctx);
    if (st != NB_OK) return st;
    nb_model *m = NULL;
    st = nb_model_open(src, &m, ctx);
    if (st == NB_OK) st = nb_plan_resolve(p, m, ctx);
    nb_model_close(m);
    return st;
}

/* Replace the first occurrence of `from` after `anchor` in s (malloc'd copy). */
static char *replace_after(const char *s, const char *anchor, const char *from, const char *to) {
    const char *a = strstr(s, anchor);
    ck_assert_ptr_nonnull(a);
    const char *f = strstr(a, from);
    ck_assert_ptr_nonnull(f);
    size_t n = strlen(s) - strlen(from) + strlen(to) + 1;
    char *out = malloc(n);
    snprintf(out, n, "%.*s%s%s", (int)(f - s), s, to, f + strlen(from));
    return out;
}

START_TEST(json_round_trip) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *src = src_model();
    nb_plan a, b;
    ck_assert_int_eq(nbt_plan(src, nb_mix_find("q4_k_m"), &a, &ctx), NB_OK);
    ck_assert_str_eq(a.mix, "q4_k_m");
    ck_assert_int_eq(a.file_type, 15);
    char *js = nb_plan_to_json(&a);
    ck_assert_ptr_nonnull(js);
    ck_assert_msg(load_text(js, src, &b, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_uint_eq(a.n_tensors, b.n_tensors);
    ck_assert_uint_eq(a.bytes_out, b.bytes_out);
    ck_assert_uint_eq(a.n_quantized, b.n_quantized);
    ck_assert_int_eq(b.file_type, 15);
    ck_assert_mem_eq(a.tensors_sha256, b.tensors_sha256, 32);
    for (size_t i = 0; i < a.n_tensors; i++) {
        ck_assert_str_eq(a.tensors[i].name, b.tensors[i].name);
        ck_assert_int_eq(a.tensors[i].type, b.tensors[i].type);
        ck_assert_int_eq(a.tensors[i].src_type, b.tensors[i].src_type);
        ck_assert_int_eq(a.tensors[i].why, b.tensors[i].why);
        ck_assert_uint_eq(a.tensors[i].bytes_out, b.tensors[i].bytes_out);
        ck_assert(isnan(b.tensors[i].pred_err));
    }
    /* the second serialisation is the same text */
    char *js2 = nb_plan_to_json(&b);
    ck_assert_str_eq(js, js2);
    free(js);
    free(js2);
    nb_plan_free(&a);
    nb_plan_free(&b);
    nb_ctx_free(&ctx);
}
END_TEST

/* A hand edit: one tensor's "type" changed and its sizes left stale. The
 * written file has that type and exactly the plan's tensor bytes. */
START_TEST(hand_edit_applies) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *src = src_model(), *dst = nbt_path("plan_edit.gguf");
    nb_plan a, b;
    ck_assert_int_eq(nbt_plan(src, nb_mix_find("q4_0"), &a, &ctx), NB_OK);
    char *js = nb_plan_to_json(&a);
    char *ed = replace_after(js, "\"name\":\"blk.0.ffn_down.weight\"", "\"type\":\"q4_0\"", "\"type\":\"q8_0\"");
    ck_assert_msg(load_text(ed, src, &b, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    size_t k = 0;
    while (strcmp(b.tensors[k].name, "blk.0.ffn_down.weight")) k++;
    ck_assert_int_eq(b.tensors[k].type, NB_TYPE_Q8_0);
    ck_assert_uint_gt(b.tensors[k].bytes_out, a.tensors[k].bytes_out); /* recomputed, not the stale figure */
    ck_assert_uint_eq(b.bytes_out, a.bytes_out - a.tensors[k].bytes_out + b.tensors[k].bytes_out);
    nb_quant_result r;
    ck_assert_msg(nb_quantize_model(src, dst, &b, NULL, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_model *m = NULL;
    ck_assert_int_eq(nb_model_open(dst, &m, &ctx), NB_OK);
    uint64_t total = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        ck_assert_int_eq(m->tensors[i].type, b.tensors[i].type);
        ck_assert_uint_eq(m->tensors[i].nbytes, b.tensors[i].bytes_out);
        total += m->tensors[i].nbytes;
    }
    ck_assert_uint_eq(total, b.bytes_out);
    ck_assert_uint_eq(r.tensor_bytes_out, b.bytes_out);
    nb_model_close(m);
    nb_quant_result_free(&r);
    free(js);
    free(ed);
    nb_plan_free(&a);
    nb_plan_free(&b);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(other_model_refused) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *src = src_model();
    char other[512], same_shape[512];
    snprintf(other, sizeof other, "%s", nbt_path("plan_other.gguf"));
    snprintf(same_shape, sizeof same_shape, "%s", nbt_path("plan_seed.gguf"));
    synth(other, 512, 3);      /* other shapes */
    synth(same_shape, 256, 9); /* same tensor table, other weights */
    nb_plan a;
    ck_assert_int_eq(nbt_plan(src, nb_mix_find("q8_0"), &a, &ctx), NB_OK);
    nb_quant_result r;
    ck_assert_int_eq(nb_quantize_model(other, nbt_path("plan_o.gguf"), &a, NULL, &r, &ctx), NB_ERR_INVALID);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "another model") && strstr(nb_errmsg(&ctx), "token_embd.weight"), "%s",
                  nb_errmsg(&ctx));
    nb_quant_result_free(&r);
    ck_assert(!nbt_file_exists(nbt_path("plan_o.gguf")));
    /* same structure: the fingerprint matches and the file size decides */
    nb_model *m = NULL;
    ck_assert_int_eq(nb_model_open(same_shape, &m, &ctx), NB_OK);
    unsigned char fp[32];
    nb_plan_fingerprint(m, fp);
    ck_assert_mem_eq(fp, a.tensors_sha256, 32);
    uint64_t sz = a.source_size;
    ck_assert_int_eq(nb_plan_bind(&a, m, &ctx), NB_OK);
    a.source_size = sz + 1;
    ck_assert_int_eq(nb_plan_bind(&a, m, &ctx), NB_ERR_INVALID);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "source size"), "%s", nb_errmsg(&ctx));
    a.source_size = sz;
    a.tensors_sha256[0] ^= 1;
    ck_assert_int_eq(nb_plan_bind(&a, m, &ctx), NB_ERR_INVALID);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "tensors_sha256"), "%s", nb_errmsg(&ctx));
    nb_model_close(m);
    nb_plan_free(&a);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(bad_plans) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *src = src_model();
    nb_plan a, b;
    ck_assert_int_eq(nbt_plan(src, nb_mix_find("q4_0"), &a, &ctx), NB_OK);
    char *js = nb_plan_to_json(&a);
    struct { const char *anchor, *from, *to, *want; } cases[] = {
        {"\"nibble_plan\"", "\"mix\"", "\"mixx\"", "unknown key 'mixx'"},
        {"\"name\":\"blk.1.attn_q.weight\"", "\"why\"", "\"whyy\"", "unknown key 'whyy' in tensors["},
        {"\"name\":\"blk.1.attn_q.weight\"", "\"type\":\"q4_0\"", "\"type\":\"q9_9\"", "'blk.1.attn_q.weight': missing or unknown \"type\""},
        {"\"name\":\"blk.1.attn_q.weight\"", "\"type\":\"q4_0\"", "\"type\":\"nf4_dq\"", "not a multiple of"},
        {"\"name\":\"blk.1.attn_q.weight\"", "blk.1.attn_q.weight", "blk.1.attn_x.weight", "another model"},
        {"\"name\":\"blk.1.attn_q.weight\"", "\"shape\":[256,256]", "\"shape\":[256,255]", "differs in type or shape"},
        {"\"nibble_plan\"", "\"nibble_plan\":1", "\"nibble_plan\":2", "\"nibble_plan\" must be 1"},
        {"\"source\"", "\"tensors_sha256\":\"", "\"tensors_sha256\":\"zz", "tensors_sha256"},
        {"\"nibble_plan\"", "{", "[", "not valid JSON"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char *ed = replace_after(js, cases[c].anchor, cases[c].from, cases[c].to);
        nb_status st = load_text(ed, src, &b, &ctx);
        ck_assert_msg(st == NB_ERR_FORMAT || st == NB_ERR_INVALID, "case %zu: status %d", c, st);
        ck_assert_msg(strstr(nb_errmsg(&ctx), cases[c].want), "case %zu: %s", c, nb_errmsg(&ctx));
        nb_plan_free(&b);
        free(ed);
    }
    free(js);
    nb_plan_free(&a);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(job_checks) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *src = src_model(), *q8 = nbt_path("plan_q8.gguf"), *out = nbt_path("plan_rq.gguf");
    nb_quant_job j = {.src = src, .dst = q8, .plan.mix = nb_mix_find("q8_0")};
    nb_quant_job_result r;
    ck_assert_msg(nb_quantize_job(&j, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_int_eq(r.method, NB_METHOD_RTN);
    ck_assert_uint_eq(r.quant.tensor_bytes_out, r.plan.bytes_out);
    nb_quant_job_result_free(&r);
    /* requantizing the Q8_0 file: refused, then allowed */
    nb_quant_job rq = {.src = q8, .dst = out, .plan.mix = nb_mix_find("q4_0")};
    ck_assert_int_eq(nb_quantize_job(&rq, &r, &ctx), NB_ERR_INVALID);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "--allow-requantize"), "%s", nb_errmsg(&ctx));
    ck_assert(!nbt_file_exists(out));
    nb_quant_job_result_free(&r);
    rq.dst = NULL; /* a dry run only plans */
    ck_assert_int_eq(nb_quantize_job(&rq, &r, &ctx), NB_OK);
    ck_assert_uint_gt(r.plan.n_requantized, 0);
    nb_quant_job_result_free(&r);
    rq.dst = out;
    rq.allow_requantize = true;
    ck_assert_msg(nb_quantize_job(&rq, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert(nbt_file_exists(out));
    nb_quant_job_result_free(&r);
    /* option combinations */
    nb_quant_job bad[] = {
        {.src = src, .dst = out},
        {.src = src, .dst = out, .plan.mix = nb_mix_find("q4_0"), .plan_path = "x.json"},
        {.src = src, .dst = out, .plan.mix = nb_mix_find("q4_0"), .method = NB_METHOD_RTN, .calib_path = "c.txt"},
        {.src = src, .dst = out, .plan.mix = nb_mix_find("q4_0"), .method = NB_METHOD_IMATRIX},
        {.src = src, .dst = out, .plan.mix = nb_mix_find("q4_0"), .method = NB_METHOD_GPTQ},
        {.src = src, .dst = out, .plan.mix = nb_mix_find("q4_0"), .gptq_opts_set = true},
        {.src = src, .dst = out, .plan_path = "x.json", .plan.pure = true},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        ck_assert_msg(nb_quant_job_check(&bad[k], &ctx) == NB_ERR_INVALID, "case %zu", k);
        ck_assert_msg(nb_errmsg(&ctx)[0], "case %zu: no message", k);
    }
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("plan");
    TCase *tc = tcase_create("plan");
    tcase_add_test(tc, json_round_trip);
    tcase_add_test(tc, hand_edit_applies);
    tcase_add_test(tc, other_model_refused);
    tcase_add_test(tc, bad_plans);
    tcase_add_test(tc, job_checks);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
