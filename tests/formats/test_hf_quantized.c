/* tests/formats/test_hf_quantized.c — quantized HF checkpoints as sources.
 *
 * The fixtures in tests/data/hfq were written by bitsandbytes (through
 * transformers), compressed-tensors and the GPTQ / AWQ packing code (see its
 * README); expected.json holds the sha256 of each library's dequantized
 * weight in fp32. Every quantized weight read here must give those exact
 * bytes and the documented type (NF4 / INT4 where the grid is the same). */
#include "core/fp.h"
#include "core/sha256.h"
#include "formats/hf_quantized.h"
#include "formats/readers.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static cJSON *load_expected(void) {
    char p[1024];
    snprintf(p, sizeof p, "%s/hfq/expected.json", nbt_data_dir());
    size_t n;
    unsigned char *b = nbt_read_file(p, &n);
    ck_assert_ptr_nonnull(b);
    cJSON *j = cJSON_ParseWithLength((const char *)b, n);
    free(b);
    ck_assert_ptr_nonnull(j);
    return j;
}

/* Open DIR/model.safetensors through the wrapper (Hugging Face names, no q/k permutation). */
static nb_status open_wrapped(const char *dir, nb_model **m, nb_ctx *ctx) {
    char p[1100];
    snprintf(p, sizeof p, "%s/config.json", dir);
    size_t n;
    unsigned char *cfg = nbt_read_file(p, &n);
    ck_assert_ptr_nonnull(cfg);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    nb_status st = nb_safetensors_open(p, m, ctx);
    if (st == NB_OK) {
        st = nb_hfq_wrap(m, (const char *)cfg, n, "config.json", ctx);
        if (st != NB_OK) {
            nb_model_close(*m);
            *m = NULL;
        }
    }
    free(cfg);
    return st;
}

static size_t find(const nb_model *m, const char *name) {
    for (size_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return i;
    return SIZE_MAX;
}

START_TEST(test_library_values) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    cJSON *exp = load_expected();
    int n_fix = 0, n_checked = 0;
    const cJSON *fix;
    cJSON_ArrayForEach(fix, exp) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/hfq/%.64s", nbt_data_dir(), fix->string);
        nb_model *m = NULL;
        nb_status st = open_wrapped(dir, &m, &ctx);
        ck_assert_msg(st == NB_OK, "%s: %s", fix->string, nb_errmsg(&ctx));
        /* no companion tensor is left over */
        for (size_t i = 0; i < m->n_tensors; i++) {
            const char *nm = m->tensors[i].name;
            ck_assert_msg(!strstr(nm, "qweight") && !strstr(nm, "qzeros") && !strstr(nm, "absmax") &&
                              !strstr(nm, "quant_") && !strstr(nm, "SCB") && !strstr(nm, "weight_"),
                          "%s: '%s' left over", fix->string, nm);
        }
        const cJSON *t;
        cJSON_ArrayForEach(t, fix) {
            size_t i = find(m, t->string);
            ck_assert_msg(i != SIZE_MAX, "%s: no tensor '%s'", fix->string, t->string);
            const nb_tensor *tt = &m->tensors[i];
            const cJSON *shape = cJSON_GetObjectItem(t, "shape");
            ck_assert_int_eq(tt->n_dims, 2);
            ck_assert_int_eq(tt->ne[1], cJSON_GetArrayItem(shape, 0)->valueint);
            ck_assert_int_eq(tt->ne[0], cJSON_GetArrayItem(shape, 1)->valueint);
            ck_assert_msg(strcmp(nb_type_name(tt->type), cJSON_GetObjectItem(t, "type")->valuestring) == 0,
                          "%s %s: type %s, expected %s", fix->string, t->string, nb_type_name(tt->type),
                          cJSON_GetObjectItem(t, "type")->valuestring);
            uint64_t ne = nb_tensor_nelements(tt);
            float *f = malloc(ne * sizeof *f);
            ck_assert_ptr_nonnull(f);
            st = nb_model_read_f32(m, i, f, &ctx);
            ck_assert_msg(st == NB_OK, "%s", nb_errmsg(&ctx));
            nb_sha256 h;
            unsigned char dg[32];
            char hex[65];
            nb_sha256_init(&h);
            nb_sha256_update(&h, f, ne * sizeof *f);
            nb_sha256_final(&h, dg);
            nb_sha256_hex(dg, hex);
            const cJSON *first = cJSON_GetObjectItem(t, "first");
            ck_assert_msg(strcmp(hex, cJSON_GetObjectItem(t, "sha256_f32")->valuestring) == 0,
                          "%s %s: dequantized values differ from the library's (first %.9g vs %.9g)", fix->string,
                          t->string, f[0], cJSON_GetArrayItem(first, 0)->valuedouble);
            free(f);
            n_checked++;
        }
        nb_model_close(m);
        n_fix++;
    }
    ck_assert_int_ge(n_fix, 11);
    ck_assert_int_ge(n_checked, 11 * 7);
    cJSON_Delete(exp);
    nb_ctx_free(&ctx);
}
END_TEST

/* The whole directory through nb_model_open: GGUF names, q/k permuted, and the
 * untouched tensors pass through zero-copy. */
START_TEST(test_open_dirs) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    static const struct {
        const char *dir, *type;
    } cases[] = {{"bnb_nf4_dq", "nf4"},           {"gptq_4bit_sym_g32", "int4_sym_g32"},
                 {"awq_gemm_g64", "int4_asym_g64"}, {"ct_w4a16_g128", "int4_sym_g128"},
                 {"gptq_3bit_g64", "f32"},         {"bnb_int8", "f32"}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/hfq/%s", nbt_data_dir(), cases[c].dir);
        nb_model *m;
        ck_assert_msg(nb_model_open(dir, &m, &ctx) == NB_OK, "%s: %s", dir, nb_errmsg(&ctx));
        ck_assert_int_eq(m->n_tensors, 11); /* embd, 2 norms, 7 linears, output_norm; tied output */
        const nb_tensor *q = nb_model_find(m, "blk.0.attn_q.weight");
        ck_assert_ptr_nonnull(q);
        ck_assert_str_eq(nb_type_name(q->type), cases[c].type);
        const nb_tensor *e = nb_model_find(m, "token_embd.weight");
        ck_assert_ptr_nonnull(e);
        ck_assert_int_eq(e->type, NB_TYPE_F16);
        ck_assert_ptr_nonnull(e->data);
        for (size_t i = 0; i < m->n_tensors; i++) {
            const void *p;
            void *owned;
            ck_assert_msg(nb_model_tensor_bytes(m, i, &p, &owned, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
            free(owned);
        }
        nb_model_close(m);
    }
    nb_ctx_free(&ctx);
}
END_TEST

/* A copy of a fixture whose config.json text has `from` replaced by `to`. */
static const char *variant(const char *fixture, const char *name, const char *from, const char *to) {
    char src[1024], dst[1024];
    const char *d = nbt_path(name);
    ck_assert_int_eq(mkdir(d, 0755) == 0 || nbt_file_exists(d) == 0, 1);
    snprintf(src, sizeof src, "%s/hfq/%s/model.safetensors", nbt_data_dir(), fixture);
    snprintf(dst, sizeof dst, "%s/model.safetensors", d);
    unlink(dst);
    ck_assert_int_eq(symlink(src, dst), 0);
    snprintf(src, sizeof src, "%s/hfq/%s/config.json", nbt_data_dir(), fixture);
    size_t n;
    unsigned char *raw = nbt_read_file(src, &n);
    ck_assert_ptr_nonnull(raw);
    char *cfg = malloc(n + 1); /* NUL-terminated for strstr */
    memcpy(cfg, raw, n);
    cfg[n] = 0;
    free(raw);
    char *at = strstr(cfg, from);
    ck_assert_msg(at != NULL, "'%s' not in %s", from, src);
    size_t fl = strlen(from), tl = strlen(to);
    char *out = malloc(n + tl + 1);
    memcpy(out, cfg, (size_t)(at - cfg));
    memcpy(out + (at - cfg), to, tl);
    memcpy(out + (at - cfg) + tl, at + fl, n - (size_t)(at - cfg) - fl);
    snprintf(dst, sizeof dst, "%s/config.json", d);
    nbt_write_file(dst, out, n - fl + tl);
    free(out);
    free(cfg);
    return d;
}

START_TEST(test_bad_input) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    static const struct {
        const char *fixture, *from, *to;
        nb_status want;
        const char *msg1, *msg2;
    } cases[] = {
        {"gptq_4bit_sym_g32", "\"bits\": 4", "\"bits\": 5", NB_ERR_UNSUPPORTED, "quantization_config.bits = 5", "config.json"},
        /* 4-bit rows read as 8 bits: qweight has too few rows for 128 inputs */
        {"gptq_4bit_sym_g32", "\"bits\": 4", "\"bits\": 8", NB_ERR_FORMAT, "proj.qweight", "128 inputs at 8 bits need 32"},
        /* a group size the scales do not have */
        {"gptq_4bit_sym_g32", "\"group_size\": 32", "\"group_size\": 64", NB_ERR_FORMAT, "proj.scales", "expected f16 [2, 128]"},
        {"gptq_4bit_sym_g32", "\"checkpoint_format\": \"gptq\"", "\"checkpoint_format\": \"marlin\"", NB_ERR_UNSUPPORTED,
         "checkpoint_format 'marlin'", "config.json"},
        {"awq_gemm_g64", "\"version\": \"gemm\"", "\"version\": \"gemv\"", NB_ERR_UNSUPPORTED, "version 'gemv'", "GEMM"},
        {"awq_gemm_g64", "\"group_size\": 64", "\"group_size\": 128", NB_ERR_FORMAT, "proj.scales", "[1, 128]"},
        {"ct_w4a16_g128", "\"format\": \"pack-quantized\"", "\"format\": \"float-quantized\"",
         NB_ERR_UNSUPPORTED, "float-quantized", "pack-quantized"},
        {"ct_w4a16_g128", "\"num_bits\": 4", "\"num_bits\": 8", NB_ERR_FORMAT, "weight_packed", "weight_shape"},
        {"ct_w4a16_g128", "\"type\": \"int\"", "\"type\": \"float\"", NB_ERR_UNSUPPORTED, "weights.type 'float'", "config.json"},
        {"bnb_nf4_dq", "\"quant_method\": \"bitsandbytes\"", "\"quant_method\": \"hqq\"", NB_ERR_UNSUPPORTED,
         "quant_method 'hqq'", "config.json"},
        /* a method whose tensors are not there */
        {"bnb_nf4_dq", "\"quant_method\": \"bitsandbytes\"", "\"quant_method\": \"gptq\"", NB_ERR_FORMAT,
         "no tensor is quantized", "qweight"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu", c);
        const char *d = variant(cases[c].fixture, name, cases[c].from, cases[c].to);
        nb_model *m = (nb_model *)1;
        nb_status st = nb_model_open(d, &m, &ctx);
        ck_assert_msg(st == cases[c].want, "case %zu: status %d (%s)", c, st, nb_errmsg(&ctx));
        ck_assert_ptr_null(m);
        ck_assert_msg(strstr(nb_errmsg(&ctx), cases[c].msg1) && strstr(nb_errmsg(&ctx), cases[c].msg2),
                      "case %zu: message '%s' lacks '%s' / '%s'", c, nb_errmsg(&ctx), cases[c].msg1, cases[c].msg2);
    }
    nb_ctx_free(&ctx);
}
END_TEST

static Suite *hfq_suite(void) {
    Suite *s = suite_create("hf_quantized");
    TCase *tc = tcase_create("hf_quantized");
    tcase_add_test(tc, test_library_values);
    tcase_add_test(tc, test_open_dirs);
    tcase_add_test(tc, test_bad_input);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return nbt_run_suite(hfq_suite());
}
