/* quant/quantize: the streaming pipeline on synthetic models.
 *
 * Checks: output tensors have the planned types and the metadata llama.cpp
 * reads; the bytes equal the type's own quantizer applied to the source rows
 * (so chunking, threading and slicing pass data through untouched); values
 * are close to the source; the error report matches an independent
 * computation; 1, 2 and 3 threads give identical files; NaN/Inf, unsupported
 * types and output == input fail cleanly without leaving files. */
#include "formats/gguf.h"
#include "formats/model.h"
#include "formats/synth.h"
#include "quant/quantize.h"
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void synth(const char *path, const char *arch, nb_type dtype, uint32_t n_expert) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.arch = arch;
    o.n_layer = 2;
    o.n_embd = 256;
    o.n_ff = 512;
    o.n_head = 4;
    o.n_head_kv = 2;
    o.n_vocab = 320;
    o.dtype = dtype;
    o.seed = 7;
    if (n_expert) { o.n_expert = n_expert; o.n_expert_used = 2; o.n_ff = 256; }
    nb_status st = nb_synth_write(&o, path, &ctx);
    ck_assert_msg(st == NB_OK, "synth: %s", nb_errmsg(&ctx));
    nb_ctx_free(&ctx);
}

/* The shared synthetic llama source (nbt_path's buffers rotate, so keep a copy). */
static const char *src_model(void) {
    static char path[512];
    if (!path[0]) {
        snprintf(path, sizeof path, "%s", nbt_path("src.gguf"));
        synth(path, "llama", NB_TYPE_F16, 0);
    }
    return path;
}

static bool have_quantizer(nb_type t) {
    const nb_type_traits *tr = nb_type_get(t);
    return tr && tr->quantize && tr->to_float;
}

/* Plan src with `mix` (pure / no_fallback from popt when given) and quantize it to dst. */
static nb_status run_p(const char *src, const char *dst, const char *mix, int threads, const nb_plan_opts *popt,
                       nb_quant_opts *extra, nb_quant_result *r, char *err, size_t errn) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ctx.n_threads = threads;
    nb_quant_opts o = extra ? *extra : (nb_quant_opts){0};
    nb_plan_opts po = popt ? *popt : (nb_plan_opts){0};
    po.mix = nb_mix_find(mix);
    po.has_importance = o.importance != NULL;
    ck_assert_ptr_nonnull(po.mix);
    nb_plan plan;
    memset(r, 0, sizeof *r);
    nb_status st = nb_plan_make_file(src, &po, &plan, &ctx);
    if (st == NB_OK) st = nb_quantize_model(src, dst, &plan, &o, r, &ctx);
    if (err) snprintf(err, errn, "%s", nb_errmsg(&ctx));
    nb_plan_free(&plan);
    nb_ctx_free(&ctx);
    return st;
}

static nb_status run(const char *src, const char *dst, const char *mix, int threads, nb_quant_opts *extra,
                     nb_quant_result *r, char *err, size_t errn) {
    return run_p(src, dst, mix, threads, NULL, extra, r, err, errn);
}

static bool files_equal(const char *a, const char *b) {
    size_t na, nb;
    unsigned char *x = nbt_read_file(a, &na), *y = nbt_read_file(b, &nb);
    bool eq = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return eq;
}

/* Read tensor i of m into F32 (malloc'd). */
static float *read_f32(nb_model *m, size_t i) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    uint64_t n = nb_tensor_nelements(&m->tensors[i]);
    float *f = malloc(n * sizeof *f + 1);
    ck_assert_ptr_nonnull(f);
    ck_assert_msg(nb_model_read_f32(m, i, f, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_ctx_free(&ctx);
    return f;
}

/* Quantize a model and check it against the source, tensor by tensor. */
static void check_mix(const char *mix, double max_rel_rmse, double min_cos) {
    const nb_mix_info *mx = nb_mix_find(mix);
    if (!have_quantizer(mx->base)) {
        printf("SKIP %s: quantizer for %s not built yet\n", mix, nb_type_name(mx->base));
        return;
    }
    const char *src = src_model();
    char dst[512];
    snprintf(dst, sizeof dst, "%s", nbt_path(mix));
    strcat(dst, ".gguf");
    nb_quant_opts o = {.report = true, .chunk_elems = 3000}; /* several chunks per tensor */
    nb_quant_result r;
    char err[1024];
    ck_assert_msg(run(src, dst, mix, 2, &o, &r, err, sizeof err) == NB_OK, "%s: %s", mix, err);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_model *in = NULL, *out = NULL;
    ck_assert_int_eq(nb_model_open(src, &in, &ctx), NB_OK);
    ck_assert_msg(nb_model_open(dst, &out, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    /* metadata */
    uint64_t v;
    ck_assert(nb_kv_get_u64(&out->kv, "general.quantization_version", &v) && v == 2);
    if (mx->llama_ftype >= 0) ck_assert(nb_kv_get_u64(&out->kv, "general.file_type", &v) && v == (uint64_t)mx->llama_ftype);
    else ck_assert_ptr_null(nb_kv_get(&out->kv, "general.file_type"));
    ck_assert_str_eq(nb_kv_get_str(&out->kv, "general.architecture"), "llama");
    ck_assert_uint_eq(out->n_tensors, in->n_tensors);
    ck_assert_uint_eq(r.n_tensors, in->n_tensors);
    ck_assert_uint_eq(r.bytes_out, out->file_bytes);
    size_t n_conv = 0;
    for (size_t i = 0; i < in->n_tensors; i++) {
        const nb_tensor *ti = &in->tensors[i], *to = nb_model_find(out, ti->name);
        ck_assert_ptr_nonnull(to);
        ck_assert_int_eq(to->type, r.tensors[i].type);
        ck_assert_mem_eq(to->ne, ti->ne, sizeof ti->ne);
        if (to->type == ti->type) {
            ck_assert_msg(!r.tensors[i].has_error, "%s", ti->name);
            ck_assert_uint_eq(to->nbytes, ti->nbytes);
            ck_assert_mem_eq(to->data, ti->data, ti->nbytes); /* copied byte for byte */
            continue;
        }
        n_conv++;
        ck_assert(r.tensors[i].has_error);
        /* the bytes are exactly the type's quantizer on the whole source */
        float *x = read_f32(in, i);
        const nb_type_traits *tt = nb_type_get(to->type);
        uint64_t ne = nb_tensor_nelements(ti), rows = ne / (uint64_t)ti->ne[0];
        unsigned char *q = malloc(to->nbytes);
        ck_assert_ptr_nonnull(q);
        size_t w = tt->quantize(x, q, (int64_t)rows, ti->ne[0], NULL);
        ck_assert_uint_eq(w, to->nbytes);
        ck_assert_msg(memcmp(q, to->data, w) == 0, "%s %s: bytes differ from the direct quantizer", mix, ti->name);
        free(q);
        /* values close to the source; the report agrees with an independent computation */
        float *y = read_f32(out, i);
        double se = 0, xx = 0, yy = 0, xy = 0, mx_err = 0;
        for (uint64_t k = 0; k < ne; k++) {
            double d = (double)x[k] - y[k];
            se += d * d; xx += (double)x[k] * x[k]; yy += (double)y[k] * y[k]; xy += (double)x[k] * y[k];
            if (fabs(d) > mx_err) mx_err = fabs(d);
        }
        double rel = sqrt(se / xx), cosv = xy / sqrt(xx * yy);
        ck_assert_msg(rel < max_rel_rmse, "%s %s: relative rmse %g", mix, ti->name, rel);
        ck_assert_msg(cosv > min_cos, "%s %s: cosine %g", mix, ti->name, cosv);
        ck_assert_double_eq_tol(r.tensors[i].rmse, sqrt(se / (double)ne), 1e-9 * (1 + sqrt(se / (double)ne)));
        ck_assert_double_eq_tol(r.tensors[i].max_abs, mx_err, 1e-12);
        ck_assert_double_eq_tol(r.tensors[i].cosine, cosv, 1e-9);
        ck_assert_double_eq_tol(r.tensors[i].rel_rmse, rel, 1e-9);
        free(x);
        free(y);
    }
    ck_assert_uint_eq(n_conv, r.n_quantized);
    ck_assert_uint_gt(n_conv, 0);
    nb_model_close(in);
    nb_model_close(out);
    nb_quant_result_free(&r);
    nb_ctx_free(&ctx);
}

START_TEST(q8_0) { check_mix("q8_0", 0.01, 0.9999); }
END_TEST
START_TEST(q4_0) { check_mix("q4_0", 0.15, 0.99); }
END_TEST
START_TEST(q4_k_m) { check_mix("q4_k_m", 0.10, 0.99); }
END_TEST
START_TEST(iq4_xs) { check_mix("iq4_xs", 0.12, 0.99); }
END_TEST
START_TEST(nf4) { check_mix("nf4", 0.15, 0.99); }
END_TEST
START_TEST(int4_g128) { check_mix("int4-g128", 0.15, 0.99); }
END_TEST

/* The planned types of the q4_k_m file, as llama.cpp's rules give for 2 layers:
 * use_more_bits(i, 2) holds for layer 1 only (7*2/8 = 1), so attn_v and
 * ffn_down of blk.1 are Q6_K; output Q6_K; norms F32. */
START_TEST(q4_k_m_types) {
    const char *src = src_model();
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_plan r;
    ck_assert_int_eq(nbt_plan(src, nb_mix_find("q4_k_m"), &r, &ctx), NB_OK);
    for (size_t i = 0; i < r.n_tensors; i++) {
        const nb_plan_tensor *t = &r.tensors[i];
        nb_type want = strstr(t->name, "norm") ? NB_TYPE_F32
                       : !strcmp(t->name, "output.weight") || !strcmp(t->name, "blk.1.attn_v.weight") ||
                               !strcmp(t->name, "blk.1.ffn_down.weight")
                           ? NB_TYPE_Q6_K
                           : NB_TYPE_Q4_K;
        ck_assert_msg(t->type == want, "%s: %s", t->name, nb_type_name(t->type));
    }
    /* per-type table adds up */
    uint64_t bytes = 0;
    size_t n = 0;
    for (size_t k = 0; k < r.n_types; k++) { bytes += r.types[k].bytes; n += r.types[k].n_tensors; }
    ck_assert_uint_eq(bytes, r.bytes_out);
    ck_assert_uint_eq(n, r.n_tensors);
    nb_plan_free(&r);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(threads_identical) {
    const char *src = src_model();
    const char *mixes[] = {"q4_k_m", "q4_0", "iq4_nl", "nf4", "int4-asym-g64"};
    for (size_t m = 0; m < sizeof mixes / sizeof *mixes; m++) {
        if (!have_quantizer(nb_mix_find(mixes[m])->base)) { printf("SKIP threads %s: not built\n", mixes[m]); continue; }
        char a[512], b[512], c[512];
        snprintf(a, sizeof a, "%s.t1.gguf", nbt_path(mixes[m]));
        snprintf(b, sizeof b, "%s.t2.gguf", nbt_path(mixes[m]));
        snprintf(c, sizeof c, "%s.t3.gguf", nbt_path(mixes[m]));
        nb_quant_result r;
        nb_quant_opts o1 = {0}, o2 = {.chunk_elems = 5000}, o3 = {.report = true, .chunk_elems = 70000};
        char err[1024];
        ck_assert_msg(run(src, a, mixes[m], 1, &o1, &r, err, sizeof err) == NB_OK, "%s", err);
        nb_quant_result_free(&r);
        ck_assert_int_eq(run(src, b, mixes[m], 2, &o2, &r, NULL, 0), NB_OK);
        nb_quant_result_free(&r);
        ck_assert_int_eq(run(src, c, mixes[m], 3, &o3, &r, NULL, 0), NB_OK);
        nb_quant_result_free(&r);
        ck_assert_msg(files_equal(a, b) && files_equal(a, c), "%s: outputs differ across thread counts", mixes[m]);
    }
}
END_TEST

/* Write a one-tensor GGUF (plus a small F32 norm) with the given values. */
static void write_model(const char *path, nb_type type, int64_t ne0, int64_t ne1, const float *vals) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_sink *s = NULL;
    ck_assert_int_eq(nb_sink_create(path, NB_FMT_GGUF, &s, &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_str(&s->kv, "general.architecture", "llama", &ctx), NB_OK);
    int64_t ne[4] = {ne0, ne1, 1, 1}, nn[4] = {ne0, 1, 1, 1};
    ck_assert_int_eq(nb_sink_add_tensor(s, "blk.0.attn_norm.weight", NB_TYPE_F32, 1, nn, &ctx), NB_OK);
    ck_assert_int_eq(nb_sink_add_tensor(s, "blk.0.attn_q.weight", type, 2, ne, &ctx), NB_OK);
    ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_OK);
    for (size_t k = 0; k < 2; k++) {
        size_t i = nb_sink_data_order(s, k);
        if (i == 0) {
            float *one = malloc((size_t)ne0 * 4);
            for (int64_t j = 0; j < ne0; j++) one[j] = 1.0f;
            ck_assert_int_eq(nb_sink_write(s, one, (uint64_t)ne0 * 4, &ctx), NB_OK);
            free(one);
        } else {
            const nb_type_traits *tr = nb_type_get(type);
            size_t n = (size_t)(ne0 * ne1), bytes = n / tr->block_size * tr->type_size;
            void *buf = calloc(1, bytes + 1);
            if (type == NB_TYPE_F32) memcpy(buf, vals, n * 4);
            else if (tr->quantize) tr->quantize(vals, buf, ne1, ne0, NULL);
            ck_assert_int_eq(nb_sink_write(s, buf, bytes, &ctx), NB_OK);
            free(buf);
        }
    }
    ck_assert_int_eq(nb_sink_commit(s, &ctx), NB_OK);
    nb_sink_free(s);
    nb_ctx_free(&ctx);
}

static bool no_output_left(const char *dst) {
    return !nbt_file_exists(dst) && !nbt_partial_exists(dst);
}

START_TEST(nan_inf_rejected) {
    float vals[64 * 4];
    uint64_t rs = 1;
    for (int k = 0; k < 64 * 4; k++) vals[k] = nbt_rand_normal(&rs);
    static const struct { int at; float v; const char *what; } cases[] = {{130, NAN, "NaN"}, {255, INFINITY, "infinite"}};
    for (size_t c = 0; c < 2; c++) {
        float bad[64 * 4];
        memcpy(bad, vals, sizeof bad);
        bad[cases[c].at] = cases[c].v;
        const char *src = nbt_path("nan.gguf"), *dst = nbt_path("nan.q8.gguf");
        write_model(src, NB_TYPE_F32, 64, 4, bad);
        nb_quant_result r;
        char err[1024];
        for (int threads = 1; threads <= 2; threads++) {
            ck_assert_int_eq(run(src, dst, "q8_0", threads, NULL, &r, err, sizeof err), NB_ERR_RANGE);
            nb_quant_result_free(&r);
            ck_assert_msg(strstr(err, "blk.0.attn_q.weight") != NULL, "%s", err);
            char want[128];
            snprintf(want, sizeof want, "element %d (row %d, column %d) is %s", cases[c].at, cases[c].at / 64,
                     cases[c].at % 64, cases[c].what);
            ck_assert_msg(strstr(err, want) != NULL, "%s (want %s)", err, want);
            ck_assert(no_output_left(dst));
        }
    }
}
END_TEST

START_TEST(unsupported_and_usage) {
    float vals[64 * 2];
    for (int k = 0; k < 128; k++) vals[k] = (float)k / 100.0f;
    nb_quant_result r;
    char err[1024];
    /* a source type nibble cannot dequantize (e.g. IQ2_XXS while it has no to_float) */
    nb_type unconv = NB_TYPE_COUNT;
    for (int t = 0; t < NB_TYPE_COUNT && unconv == NB_TYPE_COUNT; t++) {
        const nb_type_traits *tr = nb_type_get((nb_type)t);
        if (tr && tr->gguf_id >= 0 && (tr->is_quantized || tr->is_float) && !tr->to_float && tr->block_size <= 256)
            unconv = (nb_type)t;
    }
    if (unconv == NB_TYPE_COUNT) {
        printf("SKIP unsupported source: every GGUF type can be dequantized\n");
    } else {
        const char *src = nbt_path("unconv.gguf"), *dst = nbt_path("unconv.q8.gguf");
        float *z = calloc(256 * 2, sizeof(float));
        write_model(src, unconv, 256, 2, z); /* zero bytes */
        free(z);
        ck_assert_int_eq(run(src, dst, "q8_0", 1, NULL, &r, err, sizeof err), NB_ERR_UNSUPPORTED);
        nb_quant_result_free(&r);
        ck_assert_msg(strstr(err, nb_type_name(unconv)) && strstr(err, "blk.0.attn_q.weight"), "%s", err);
        ck_assert(no_output_left(dst));
    }
    /* output == input */
    const char *f = nbt_path("same.gguf");
    write_model(f, NB_TYPE_F32, 64, 2, vals);
    size_t n0;
    unsigned char *before = nbt_read_file(f, &n0);
    ck_assert_int_eq(run(f, f, "q8_0", 1, NULL, &r, err, sizeof err), NB_ERR_INVALID);
    nb_quant_result_free(&r);
    ck_assert_ptr_nonnull(strstr(err, "same file"));
    size_t n1;
    unsigned char *after = nbt_read_file(f, &n1);
    ck_assert(n0 == n1 && memcmp(before, after, n0) == 0);
    free(before);
    free(after);
    /* a row length that fits no 4-bit type: fallback to F16, or an error with no_fallback */
    const char *odd = nbt_path("odd.gguf"), *odd_out = nbt_path("odd.q4.gguf");
    float v40[40 * 2];
    for (int k = 0; k < 80; k++) v40[k] = (float)k - 40.0f;
    write_model(odd, NB_TYPE_F32, 40, 2, v40);
    nb_plan_opts nf = {.no_fallback = true};
    ck_assert_int_eq(run_p(odd, odd_out, "q4_0", 1, &nf, NULL, &r, err, sizeof err), NB_ERR_RANGE);
    nb_quant_result_free(&r);
    ck_assert_msg(strstr(err, "blk.0.attn_q.weight") && strstr(err, "40"), "%s", err);
    ck_assert(no_output_left(odd_out));
    ck_assert_int_eq(run(odd, odd_out, "q4_0", 1, NULL, &r, err, sizeof err), NB_OK);
    ck_assert_uint_eq(r.n_fallback, 1);
    ck_assert_int_eq(r.tensors[1].type, NB_TYPE_F16);
    nb_quant_result_free(&r);
}
END_TEST

START_TEST(requantize) {
    const char *src = src_model(), *q8 = nbt_path("rq.q8.gguf"), *q4 = nbt_path("rq.q4.gguf"),
               *same = nbt_path("rq.q8b.gguf");
    nb_quant_result r;
    ck_assert_int_eq(run(src, q8, "q8_0", 2, NULL, &r, NULL, 0), NB_OK);
    size_t nq8 = r.n_quantized;
    nb_quant_result_free(&r);
    /* q8_0 -> q8_0: nothing to do, identical tensor data (metadata identical too) */
    ck_assert_int_eq(run(q8, same, "q8_0", 2, NULL, &r, NULL, 0), NB_OK);
    ck_assert_uint_eq(r.n_quantized, 0);
    ck_assert_uint_eq(r.n_requantized, 0);
    nb_quant_result_free(&r);
    ck_assert(files_equal(q8, same));
    /* q8_0 -> q4_0: every quantized tensor is requantized, and equals quantizing the dequantized q8 */
    nb_quant_opts o = {.report = true};
    ck_assert_int_eq(run(q8, q4, "q4_0", 2, &o, &r, NULL, 0), NB_OK);
    ck_assert_uint_eq(r.n_requantized, nq8);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_model *a = NULL, *b = NULL;
    ck_assert_int_eq(nb_model_open(q8, &a, &ctx), NB_OK);
    ck_assert_int_eq(nb_model_open(q4, &b, &ctx), NB_OK);
    const nb_tensor *t8 = nb_model_find(a, "blk.0.attn_q.weight"), *t4 = nb_model_find(b, "blk.0.attn_q.weight");
    ck_assert_int_eq(t4->type, NB_TYPE_Q4_0);
    float *x = read_f32(a, (size_t)(t8 - a->tensors));
    unsigned char *q = malloc(t4->nbytes);
    nb_type_get(NB_TYPE_Q4_0)->quantize(x, q, t8->ne[1], t8->ne[0], NULL);
    ck_assert_mem_eq(q, t4->data, t4->nbytes);
    free(q);
    free(x);
    nb_model_close(a);
    nb_model_close(b);
    nb_ctx_free(&ctx);
    nb_quant_result_free(&r);
}
END_TEST

/* Stacked experts: quantized one expert slice at a time; importance is asked per slice. */
typedef struct imp_log {
    int calls;
    int slices_seen[64];
    float w[512];
} imp_log;

static const float *importance(void *user, const char *name, int64_t slice, int64_t ne0) {
    imp_log *l = user;
    ck_assert_int_le(ne0, 512);
    if (strstr(name, "ffn_down_exps") && !strncmp(name, "blk.0.", 6)) {
        ck_assert_int_lt(slice, 64);
        l->slices_seen[slice]++;
    }
    l->calls++;
    for (int64_t k = 0; k < ne0; k++) l->w[k] = 1.0f + (float)((k * 7 + slice * 3) % 11);
    return l->w;
}

START_TEST(moe_slices) {
    if (!have_quantizer(NB_TYPE_Q4_K)) return;
    const char *src = nbt_path("moe.gguf"), *dst = nbt_path("moe.q4km.gguf"), *dst2 = nbt_path("moe.q4km2.gguf");
    synth(src, "qwen2moe", NB_TYPE_BF16, 4);
    imp_log log;
    memset(&log, 0, sizeof log);
    nb_quant_opts o = {.importance = importance, .importance_user = &log, .chunk_elems = 4096};
    nb_quant_result r;
    char err[1024];
    ck_assert_msg(run(src, dst, "q4_k_m", 2, &o, &r, err, sizeof err) == NB_OK, "%s", err);
    nb_quant_result_free(&r);
    for (int e = 0; e < 4; e++) ck_assert_int_ge(log.slices_seen[e], 1);
    ck_assert_int_eq(log.slices_seen[4], 0);
    /* bytes of each expert slice = the quantizer with that slice's importance */
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_model *a = NULL, *b = NULL;
    ck_assert_int_eq(nb_model_open(src, &a, &ctx), NB_OK);
    ck_assert_int_eq(nb_model_open(dst, &b, &ctx), NB_OK);
    const nb_tensor *ts = nb_model_find(a, "blk.0.ffn_down_exps.weight"), *tq = nb_model_find(b, ts->name);
    ck_assert_ptr_nonnull(ts);
    ck_assert_int_eq(ts->ne[2], 4);
    float *x = read_f32(a, (size_t)(ts - a->tensors));
    const nb_type_traits *tt = nb_type_get(tq->type);
    uint64_t slice_elems = (uint64_t)(ts->ne[0] * ts->ne[1]), slice_bytes = tq->nbytes / 4;
    unsigned char *q = malloc(slice_bytes);
    for (int e = 0; e < 4; e++) {
        const float *w = importance(&log, "x", e, ts->ne[0]);
        tt->quantize(x + e * slice_elems, q, ts->ne[1], ts->ne[0], w);
        ck_assert_msg(!memcmp(q, (const unsigned char *)tq->data + e * slice_bytes, slice_bytes), "expert %d", e);
    }
    free(q);
    free(x);
    nb_model_close(a);
    nb_model_close(b);
    nb_ctx_free(&ctx);
    /* and the same with other threads/chunks */
    nb_quant_opts o2 = o;
    o2.chunk_elems = 0;
    ck_assert_int_eq(run(src, dst2, "q4_k_m", 1, &o2, &r, NULL, 0), NB_OK);
    nb_quant_result_free(&r);
    ck_assert(files_equal(dst, dst2));
}
END_TEST

/* NF4_DQ: its absmax offset is a tensor-wide mean, so the pipeline quantizes
 * a whole 2-D slice in one call, whatever the chunk size and thread count. */
START_TEST(nf4_dq_whole_slice) {
    if (!have_quantizer(NB_TYPE_NF4_DQ)) { printf("SKIP nf4-dq: not built\n"); return; }
    enum { W = 16384, H = 3 };
    float *v = malloc(sizeof(float) * W * H);
    uint64_t rs = 5;
    for (int k = 0; k < W * H; k++) v[k] = nbt_rand_normal(&rs) * (k < W ? 0.5f : 2.0f);
    char src[512], a[512], b[512];
    snprintf(src, sizeof src, "%s", nbt_path("wide.gguf"));
    snprintf(a, sizeof a, "%s", nbt_path("wide.dq1.gguf"));
    snprintf(b, sizeof b, "%s", nbt_path("wide.dq2.gguf"));
    write_model(src, NB_TYPE_F32, W, H, v);
    nb_quant_result r;
    nb_quant_opts o1 = {.chunk_elems = 1000}, o2 = {.report = true};
    ck_assert_int_eq(run(src, a, "nf4-dq", 1, &o1, &r, NULL, 0), NB_OK);
    ck_assert_int_eq(r.tensors[1].type, NB_TYPE_NF4_DQ);
    nb_quant_result_free(&r);
    ck_assert_int_eq(run(src, b, "nf4-dq", 2, &o2, &r, NULL, 0), NB_OK);
    ck_assert(r.tensors[1].has_error && r.tensors[1].cosine > 0.99);
    nb_quant_result_free(&r);
    ck_assert(files_equal(a, b));
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_model *m = NULL;
    ck_assert_int_eq(nb_model_open(a, &m, &ctx), NB_OK);
    const nb_tensor *t = nb_model_find(m, "blk.0.attn_q.weight");
    unsigned char *q = malloc(t->nbytes);
    nb_type_get(NB_TYPE_NF4_DQ)->quantize(v, q, H, W, NULL);
    ck_assert_mem_eq(q, t->data, t->nbytes);
    free(q);
    nb_model_close(m);
    nb_ctx_free(&ctx);
    free(v);
}
END_TEST

START_TEST(json_summary) {
    const char *src = src_model(), *dst = nbt_path("json.gguf");
    nb_quant_opts o = {.report = true};
    nb_quant_result r;
    ck_assert_int_eq(run(src, dst, "q4_k_m", 2, &o, &r, NULL, 0), NB_OK);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_plan plan;
    ck_assert_int_eq(nbt_plan(src, nb_mix_find("q4_k_m"), &plan, &ctx), NB_OK);
    char *s = nb_quant_result_json(&r, &plan, src, dst, true);
    nb_plan_free(&plan);
    nb_ctx_free(&ctx);
    ck_assert_ptr_nonnull(s);
    cJSON *j = cJSON_Parse(s);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "mix")->valuestring, "q4_k_m");
    ck_assert_int_eq(cJSON_GetObjectItem(j, "file_type")->valueint, 15);
    ck_assert_double_eq(cJSON_GetObjectItem(j, "bytes_out")->valuedouble, (double)r.bytes_out);
    cJSON *ts = cJSON_GetObjectItem(j, "tensors");
    ck_assert_int_eq(cJSON_GetArraySize(ts), (int)r.n_tensors);
    int with_err = 0;
    cJSON *e;
    cJSON_ArrayForEach(e, ts) with_err += cJSON_GetObjectItem(e, "cosine") != NULL;
    ck_assert_int_eq(with_err, (int)r.n_quantized);
    cJSON_Delete(j);
    free(s);
    nb_quant_result_free(&r);
}
END_TEST

START_TEST(err_acc) {
    float x[4] = {1, 2, 3, 4}, y[4] = {1, 2, 3, 2};
    nb_err_acc a = {0}, b = {0};
    nb_err_acc_add(&a, x, y, 2);
    nb_err_acc_add(&b, x + 2, y + 2, 2);
    nb_err_acc_merge(&a, &b);
    double rmse, mx, rel, cosv;
    nb_err_acc_finish(&a, &rmse, &mx, &rel, &cosv);
    ck_assert_double_eq_tol(rmse, 1.0, 1e-12);           /* sqrt(4/4) */
    ck_assert_double_eq_tol(mx, 2.0, 1e-12);
    ck_assert_double_eq_tol(rel, sqrt(4.0 / 30.0), 1e-12);
    ck_assert_double_eq_tol(cosv, 22.0 / sqrt(30.0 * 18.0), 1e-12);
    nb_err_acc z = {0};
    float zero[2] = {0, 0};
    nb_err_acc_add(&z, zero, zero, 2);
    nb_err_acc_finish(&z, &rmse, &mx, &rel, &cosv);
    ck_assert(rmse == 0 && rel == 0 && cosv == 1.0);
}
END_TEST

int main(void) {
    Suite *s = suite_create("quantize");
    TCase *tc = tcase_create("quantize");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, err_acc);
    tcase_add_test(tc, q8_0);
    tcase_add_test(tc, q4_0);
    tcase_add_test(tc, q4_k_m);
    tcase_add_test(tc, iq4_xs);
    tcase_add_test(tc, nf4);
    tcase_add_test(tc, int4_g128);
    tcase_add_test(tc, q4_k_m_types);
    tcase_add_test(tc, threads_identical);
    tcase_add_test(tc, nan_inf_rejected);
    tcase_add_test(tc, unsupported_and_usage);
    tcase_add_test(tc, requantize);
    tcase_add_test(tc, moe_slices);
    tcase_add_test(tc, nf4_dq_whole_slice);
    tcase_add_test(tc, json_summary);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* tests share the synthetic source file */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
