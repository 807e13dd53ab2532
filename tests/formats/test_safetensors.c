/* formats/safetensors: writer layout, reader validation, sharded indexes, atomic writes. */
#include "core/sha256.h"
#include "formats/readers.h"
#include "formats/safetensors.h"
#include "testutil.h"

#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------ */

/* Write "<u64 len><header><data_len bytes>" to tmpdir/fname; header taken as is. */
static const char *craft_len(const char *fname, uint64_t hlen, const char *hdr, size_t hdr_bytes,
                             size_t data_len) {
    const char *p = nbt_path(fname);
    size_t n = 8 + hdr_bytes + data_len;
    unsigned char *b = calloc(1, n ? n : 1);
    ck_assert_ptr_nonnull(b);
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)(hlen >> (8 * k));
    memcpy(b + 8, hdr, hdr_bytes);
    for (size_t k = 0; k < data_len; k++) b[8 + hdr_bytes + k] = (unsigned char)(k * 7 + 1);
    nbt_write_file(p, b, n);
    free(b);
    return p;
}

static const char *craft(const char *fname, const char *hdr, size_t data_len) {
    return craft_len(fname, strlen(hdr), hdr, strlen(hdr), data_len);
}

/* Opening `path` fails with `code` and a message naming the file and containing `sub`. */
static void expect_fail(const char *path, nb_status code, const char *sub) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_model *m = (nb_model *)1;
    nb_status st = nb_safetensors_open(path, &m, &ctx);
    ck_assert_msg(st == code, "%s: expected status %s, got %s (%s)", path, nb_status_name(code),
                  nb_status_name(st), nb_errmsg(&ctx));
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(nb_errmsg(&ctx), path) != NULL, "message does not name the file: %s",
                  nb_errmsg(&ctx));
    ck_assert_msg(strstr(nb_errmsg(&ctx), sub) != NULL, "message lacks '%s': %s", sub, nb_errmsg(&ctx));
    nb_ctx_free(&ctx);
}

static nb_model *open_ok(const char *path) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_model *m = NULL;
    nb_status st = nb_safetensors_open(path, &m, &ctx);
    ck_assert_msg(st == NB_OK, "%s: %s", path, nb_errmsg(&ctx));
    ck_assert_ptr_nonnull(m);
    nb_ctx_free(&ctx);
    return m;
}

typedef struct spec {
    const char *name;
    nb_type type;
    uint32_t n_dims;
    int64_t ne[4];
} spec;

/* Write tensors via the sink with pseudo-random contents; data[i] receives a copy
 * of tensor i's bytes (add order). Returns the committed sink's byte count. */
static uint64_t write_model(const char *path, const spec *sp, size_t n, const nb_kvset *kv,
                            unsigned char **data, unsigned char sha[32]) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_sink *s = NULL;
    ck_assert_int_eq(nb_safetensors_sink_create(path, &s, &ctx), NB_OK);
    if (kv) ck_assert_int_eq(nb_kvset_copy(&s->kv, kv, &ctx), NB_OK);
    uint64_t seed = 42;
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(nb_sink_add_tensor(s, sp[i].name, sp[i].type, sp[i].n_dims, sp[i].ne, &ctx) == NB_OK,
                      "%s", nb_errmsg(&ctx));
        uint64_t nel = 1;
        for (uint32_t d = 0; d < sp[i].n_dims; d++) nel *= (uint64_t)sp[i].ne[d];
        size_t nb = (size_t)(nel * nb_type_get(sp[i].type)->type_size);
        data[i] = malloc(nb ? nb : 1);
        for (size_t k = 0; k < nb; k++) data[i][k] = (unsigned char)nbt_rand_u64(&seed);
    }
    ck_assert_msg(nb_sink_begin(s, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    for (size_t k = 0; k < n; k++) {
        size_t i = nb_sink_data_order(s, k);
        ck_assert_uint_lt(i, n);
        uint64_t nel = 1;
        for (uint32_t d = 0; d < sp[i].n_dims; d++) nel *= (uint64_t)sp[i].ne[d];
        uint64_t nb = nel * nb_type_get(sp[i].type)->type_size;
        /* in two pieces, to exercise partial writes */
        ck_assert_int_eq(nb_sink_write(s, data[i], nb / 2, &ctx), NB_OK);
        ck_assert_int_eq(nb_sink_write(s, data[i] + nb / 2, nb - nb / 2, &ctx), NB_OK);
    }
    ck_assert_msg(nb_sink_commit(s, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    uint64_t bytes = s->bytes_written;
    if (sha) memcpy(sha, s->sha256, 32);
    nb_sink_free(s);
    nb_ctx_free(&ctx);
    return bytes;
}

static uint64_t rd_u64(const unsigned char *b) {
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--) v = v << 8 | b[k];
    return v;
}

/* ---- writer + reader round trip ---------------------------------------------------- */

START_TEST(round_trip) {
    static const spec sp[] = {
        {"model.embed.weight", NB_TYPE_F32, 2, {3, 2, 1, 1}}, /* safetensors shape [2,3] */
        {"b.half", NB_TYPE_F16, 1, {5, 1, 1, 1}},
        {"a.idx", NB_TYPE_I64, 2, {2, 2, 1, 1}},
        {"scalar", NB_TYPE_U8, 0, {1, 1, 1, 1}},
        {"empty", NB_TYPE_BF16, 2, {4, 0, 1, 1}},
        {"flags", NB_TYPE_BOOL, 1, {3, 1, 1, 1}},
        {"f8", NB_TYPE_F8_E4M3, 3, {2, 1, 1, 1}},
        {"one", NB_TYPE_F64, 4, {1, 1, 1, 1}},
        {"i32", NB_TYPE_I32, 1, {1, 1, 1, 1}},
    };
    const size_t n = sizeof sp / sizeof sp[0];
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_kvset kv;
    nb_kvset_init(&kv);
    ck_assert_int_eq(nb_kv_set_str(&kv, "format", "pt", &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_u32(&kv, "n", 7, &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_bool(&kv, "flag", true, &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_f32(&kv, "eps", 1e-5f, &ctx), NB_OK);
    const char *toks[] = {"a", "b"};
    ck_assert_int_eq(nb_kv_set_arr_str(&kv, "tokens", 2, toks, &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_str(&kv, "quote\"d\n", "tab\there \xc3\xa9", &ctx), NB_OK);

    const char *path = nbt_path("rt.safetensors");
    unsigned char *data[16], sha[32], sha2[32];
    uint64_t bytes = write_model(path, sp, n, &kv, data, sha);
    size_t fsz;
    unsigned char *file = nbt_read_file(path, &fsz);
    ck_assert_ptr_nonnull(file);
    ck_assert_uint_eq(bytes, fsz);
    ck_assert_int_eq(nb_sha256_file(path, sha2, &ctx), NB_OK);
    ck_assert_mem_eq(sha, sha2, 32);
    ck_assert(!nbt_partial_exists(nbt_path("rt.safetensors")));

    /* layout: 8-aligned header padded with spaces, __metadata__ first */
    uint64_t hl = rd_u64(file);
    ck_assert_uint_eq(hl % 8, 0);
    const char *meta = "{\"__metadata__\":{\"format\":\"pt\",\"n\":\"7\",\"flag\":\"true\","
                       "\"eps\":\"1e-05\",\"quote\\\"d\\n\":\"tab\\there \xc3\xa9\"},";
    ck_assert_mem_eq(file + 8, meta, strlen(meta));
    size_t end = 8 + (size_t)hl;
    while (file[end - 1] == ' ') end--;
    ck_assert_uint_eq(file[end - 1], '}');
    ck_assert_uint_lt(8 + hl - end, 8);
    ck_assert_ptr_null(memmem(file + 8, (size_t)hl, "tokens", 6)); /* arrays are skipped */

    nb_model *m = open_ok(path);
    ck_assert_uint_eq(m->n_tensors, n);
    ck_assert_uint_eq(m->file_bytes, fsz);
    ck_assert_int_eq(m->format, NB_FMT_SAFETENSORS);
    /* expected data order: dtype rank descending, then name */
    static const char *const order[] = {"a.idx", "one", "model.embed.weight", "i32", "empty", "b.half",
                                        "f8", "scalar", "flags"};
    uint64_t off = 8 + hl;
    for (size_t k = 0; k < n; k++) {
        const nb_tensor *t = &m->tensors[k];
        ck_assert_str_eq(t->name, order[k]);
        size_t i = 0;
        while (strcmp(sp[i].name, t->name) != 0) i++;
        ck_assert_int_eq(t->type, sp[i].type);
        ck_assert_uint_eq(t->n_dims, sp[i].n_dims);
        for (int d = 0; d < 4; d++) ck_assert_int_eq(t->ne[d], sp[i].ne[d]);
        ck_assert_uint_eq(t->file_offset, off);
        ck_assert_uint_eq(nb_tensor_nelements(t) * nb_type_get(t->type)->type_size, t->nbytes);
        if (t->nbytes) ck_assert_mem_eq(t->data, data[i], t->nbytes);
        ck_assert_ptr_nonnull(t->data);
        unsigned char buf[64];
        ck_assert_int_eq(nb_model_read_tensor(m, k, buf, &ctx), NB_OK);
        if (t->nbytes) ck_assert_mem_eq(buf, data[i], t->nbytes);
        off += t->nbytes;
    }
    ck_assert_uint_eq(off, fsz);
    ck_assert_str_eq(nb_kv_get_str(&m->kv, "format"), "pt");
    ck_assert_str_eq(nb_kv_get_str(&m->kv, "n"), "7");
    ck_assert_str_eq(nb_kv_get_str(&m->kv, "flag"), "true");
    ck_assert_str_eq(nb_kv_get_str(&m->kv, "quote\"d\n"), "tab\there \xc3\xa9");
    ck_assert_ptr_null(nb_kv_get(&m->kv, "tokens"));
    ck_assert_uint_eq(m->kv.n, 5);

    /* read -> write again: byte-identical (metadata order is the file's) */
    const char *path2 = nbt_path("rt2.safetensors");
    nb_sink *s = NULL;
    ck_assert_int_eq(nb_safetensors_sink_create(path2, &s, &ctx), NB_OK);
    ck_assert_int_eq(nb_kvset_copy(&s->kv, &m->kv, &ctx), NB_OK);
    for (size_t k = 0; k < m->n_tensors; k++) {
        const nb_tensor *t = &m->tensors[n - 1 - k]; /* add in reverse: order must not matter */
        ck_assert_int_eq(nb_sink_add_tensor(s, t->name, t->type, t->n_dims, t->ne, &ctx), NB_OK);
    }
    ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_OK);
    for (size_t k = 0; k < n; k++) {
        const nb_tensor *t = &m->tensors[n - 1 - nb_sink_data_order(s, k)];
        ck_assert_int_eq(nb_sink_write(s, t->data, t->nbytes, &ctx), NB_OK);
    }
    ck_assert_int_eq(nb_sink_commit(s, &ctx), NB_OK);
    nb_sink_free(s);
    size_t fsz2;
    unsigned char *file2 = nbt_read_file(path2, &fsz2);
    ck_assert_uint_eq(fsz2, fsz);
    ck_assert_mem_eq(file2, file, fsz);

    /* nb_model_open probes by content */
    nb_model *m2 = NULL;
    ck_assert_int_eq(nb_model_open(path, &m2, &ctx), NB_OK);
    ck_assert_uint_eq(m2->n_tensors, n);
    nb_model_close(m2);

    free(file2);
    nb_model_close(m);
    for (size_t i = 0; i < n; i++) free(data[i]);
    free(file);
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
}
END_TEST

/* Byte layouts the reference's own serializer tests pin down (header lengths 64,
 * 72, 8 and 40 for these inputs), plus the dtype/name ordering. */
START_TEST(reference_layout) {
    struct {
        const char *name;
        uint32_t nd;
        int64_t ne[4];
        const char *meta;
        uint64_t hlen;
        const char *json;
    } cases[] = {
        {"attn.0", 3, {3, 2, 1, 1}, NULL, 64,
         "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}"},
        {"attn0", 4, {3, 2, 1, 1}, NULL, 72,
         "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}"},
        {NULL, 0, {1, 1, 1, 1}, NULL, 8, "{}"},
        {NULL, 0, {1, 1, 1, 1}, "pt", 40, "{\"__metadata__\":{\"framework\":\"pt\"}}"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        nb_ctx ctx;
        nbt_ctx(&ctx);
        const char *p = nbt_path("ref.safetensors");
        nb_sink *s = NULL;
        ck_assert_int_eq(nb_safetensors_sink_create(p, &s, &ctx), NB_OK);
        if (cases[c].meta) ck_assert_int_eq(nb_kv_set_str(&s->kv, "framework", cases[c].meta, &ctx), NB_OK);
        float v[6] = {0, 1, 2, 3, 4, 5};
        if (cases[c].name)
            ck_assert_int_eq(nb_sink_add_tensor(s, cases[c].name, NB_TYPE_F32, cases[c].nd, cases[c].ne, &ctx), NB_OK);
        ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_OK);
        if (cases[c].name) ck_assert_int_eq(nb_sink_write(s, v, sizeof v, &ctx), NB_OK);
        ck_assert_int_eq(nb_sink_commit(s, &ctx), NB_OK);
        nb_sink_free(s);
        size_t n;
        unsigned char *b = nbt_read_file(p, &n);
        ck_assert_uint_eq(rd_u64(b), cases[c].hlen);
        size_t jl = strlen(cases[c].json);
        ck_assert_mem_eq(b + 8, cases[c].json, jl);
        for (size_t k = 8 + jl; k < 8 + cases[c].hlen; k++) ck_assert_uint_eq(b[k], ' ');
        ck_assert_uint_eq(n, 8 + cases[c].hlen + (cases[c].name ? 24 : 0));
        free(b);
        nb_ctx_free(&ctx);
    }

    /* order: U64 > I64 > F64 > F32 > U32 > I32 > BF16 > F16 > U16 > I16 > F8_E4M3 >
     * F8_E5M2 > I8 > U8 > BOOL, ties by name (bytewise: 'B' < 'a') */
    static const spec sp[] = {
        {"z", NB_TYPE_BOOL, 1, {1, 1, 1, 1}}, {"y", NB_TYPE_U8, 1, {1, 1, 1, 1}},
        {"x", NB_TYPE_I8, 1, {1, 1, 1, 1}},   {"w", NB_TYPE_F8_E5M2, 1, {1, 1, 1, 1}},
        {"v", NB_TYPE_F8_E4M3, 1, {1, 1, 1, 1}}, {"u", NB_TYPE_I16, 1, {1, 1, 1, 1}},
        {"t", NB_TYPE_U16, 1, {1, 1, 1, 1}},  {"s", NB_TYPE_F16, 1, {1, 1, 1, 1}},
        {"r", NB_TYPE_BF16, 1, {1, 1, 1, 1}}, {"q", NB_TYPE_I32, 1, {1, 1, 1, 1}},
        {"p", NB_TYPE_U32, 1, {1, 1, 1, 1}},  {"o", NB_TYPE_F32, 1, {1, 1, 1, 1}},
        {"n", NB_TYPE_F64, 1, {1, 1, 1, 1}},  {"m", NB_TYPE_I64, 1, {1, 1, 1, 1}},
        {"l", NB_TYPE_U64, 1, {1, 1, 1, 1}},  {"a", NB_TYPE_F32, 1, {1, 1, 1, 1}},
        {"B", NB_TYPE_F32, 1, {1, 1, 1, 1}},
    };
    static const char *const want = "lmnBaopqrstuvwxyz";
    const size_t n = sizeof sp / sizeof sp[0];
    unsigned char *data[32];
    const char *p = nbt_path("order.safetensors");
    write_model(p, sp, n, NULL, data, NULL);
    nb_model *m = open_ok(p);
    ck_assert_uint_eq(m->n_tensors, n);
    for (size_t k = 0; k < n; k++) {
        ck_assert_uint_eq(m->tensors[k].name[0], (unsigned char)want[k]);
        ck_assert_uint_eq(m->tensors[k].name[1], 0);
    }
    nb_model_close(m);
    for (size_t i = 0; i < n; i++) free(data[i]);
}
END_TEST

/* ---- valid edge cases -------------------------------------------------------------- */

START_TEST(valid_edge_cases) {
    /* scalar, 0-element tensor, 1-element tensor, listed out of data order, padded
     * with trailing JSON whitespace, null metadata, an unknown field ignored */
    const char *h =
        "{\"__metadata__\":null,\"late\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[4,12]},"
        "\"none\":{\"dtype\":\"F32\",\"shape\":[0,7],\"data_offsets\":[4,4],\"extra\":[1.5,{\"k\":-2e3}]},"
        "\"one\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}  \n\t \r";
    nb_model *m = open_ok(craft("edge.safetensors", h, 12));
    ck_assert_uint_eq(m->n_tensors, 3);
    ck_assert_str_eq(m->tensors[0].name, "one");
    ck_assert_str_eq(m->tensors[1].name, "none");
    ck_assert_str_eq(m->tensors[2].name, "late");
    ck_assert_uint_eq(m->tensors[2].n_dims, 0);
    ck_assert_uint_eq(nb_tensor_nelements(&m->tensors[2]), 1);
    ck_assert_uint_eq(m->tensors[2].nbytes, 8);
    ck_assert_uint_eq(m->tensors[1].nbytes, 0);
    ck_assert_int_eq(m->tensors[1].ne[0], 7);
    ck_assert_int_eq(m->tensors[1].ne[1], 0);
    ck_assert_uint_eq(m->tensors[0].file_offset, 8 + strlen(h));
    ck_assert_uint_eq(m->kv.n, 0);
    nb_model_close(m);

    /* no tensors at all */
    m = open_ok(craft("empty.safetensors", "{}", 0));
    ck_assert_uint_eq(m->n_tensors, 0);
    nb_model_close(m);

    /* a name of exactly NB_MAX_NAME bytes is accepted, one more is not */
    char name[NB_MAX_NAME + 2];
    memset(name, 'n', sizeof name);
    name[NB_MAX_NAME] = 0;
    char hdr[NB_MAX_NAME + 200];
    snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", name);
    m = open_ok(craft("name256.safetensors", hdr, 2));
    ck_assert_uint_eq(strlen(m->tensors[0].name), NB_MAX_NAME);
    nb_model_close(m);
    name[NB_MAX_NAME] = 'n';
    name[NB_MAX_NAME + 1] = 0;
    snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", name);
    expect_fail(craft("name257.safetensors", hdr, 2), NB_ERR_UNSUPPORTED, "name is 257 bytes");

    /* metadata goes to kv under its own key names, file order */
    m = open_ok(craft("meta.safetensors",
                      "{\"__metadata__\":{\"z\":\"1\",\"format\":\"pt\",\"a\":\"\\u00e9\\n\"}}", 0));
    ck_assert_uint_eq(m->kv.n, 3);
    ck_assert_str_eq(m->kv.items[0].key, "z");
    ck_assert_str_eq(m->kv.items[1].key, "format");
    ck_assert_str_eq(nb_kv_get_str(&m->kv, "format"), "pt");
    ck_assert_str_eq(nb_kv_get_str(&m->kv, "a"), "\xc3\xa9\n");
    nb_model_close(m);
}
END_TEST

/* ---- every validation rule ------------------------------------------------------------ */

typedef struct bad_case {
    const char *hdr;
    size_t data;
    nb_status code;
    const char *sub;
} bad_case;

#define T1 "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}"

static const bad_case g_bad[] = {
    /* JSON / structure */
    {" {" T1 "}", 4, NB_ERR_FORMAT, "must start with '{'"},
    {"", 4, NB_ERR_FORMAT, "must start with '{'"},
    {"{\"t\":}", 0, NB_ERR_FORMAT, "invalid JSON at byte offset 13"},
    {"{" T1 "} x", 4, NB_ERR_FORMAT, "trailing bytes"},
    {"{" T1, 4, NB_ERR_FORMAT, "unexpected end"},
    {"{" T1 ",}", 4, NB_ERR_FORMAT, "expected a string key"},
    {"{\"t\x01\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NB_ERR_FORMAT,
     "control character 0x01"},
    {"{\"t\\x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NB_ERR_FORMAT, "invalid escape"},
    {"{\"t\\ud800\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NB_ERR_FORMAT, "surrogate"},
    {"{\"t\\u0000\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NB_ERR_UNSUPPORTED, "NUL"},
    {"{\"t\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", 4, NB_ERR_FORMAT, "expected ','"},
    {"{\"t\":tru}", 0, NB_ERR_FORMAT, "unexpected character 't'"},
    {"{\"t\":[1]}", 0, NB_ERR_FORMAT, "tensor 't': entry must be an object"},
    /* fields */
    {"{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NB_ERR_FORMAT, "tensor 't': missing 'dtype'"},
    {"{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, NB_ERR_FORMAT, "tensor 't': missing 'shape'"},
    {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, NB_ERR_FORMAT, "tensor 't': missing 'data_offsets'"},
    {"{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NB_ERR_FORMAT,
     "duplicate field 'dtype'"},
    {"{\"t\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NB_ERR_FORMAT, "'dtype' must be a string"},
    {"{\"t\":{\"dtype\":\"XYZ\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NB_ERR_UNSUPPORTED,
     "tensor 't': unknown dtype 'XYZ'"},
    {"{\"t\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NB_ERR_UNSUPPORTED,
     "unknown dtype 'f32'"},
    {"{\"t\":{\"dtype\":\"F8_E8M0\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, NB_ERR_UNSUPPORTED,
     "unknown dtype 'F8_E8M0'"},
    {"{\"t\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, NB_ERR_FORMAT, "'shape' must be an array"},
    {"{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, NB_ERR_FORMAT,
     "shape[0] is not an integer"},
    {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, NB_ERR_FORMAT,
     "shape[0] is not an integer"},
    {"{\"t\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, NB_ERR_FORMAT,
     "shape[0] is not a number"},
    {"{\"t\":{\"dtype\":\"F32\",\"shape\":[18446744073709551616],\"data_offsets\":[0,4]}}", 4, NB_ERR_FORMAT,
     "not an integer"},
    {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, NB_ERR_UNSUPPORTED,
     "5 dimensions"},
    {"{\"t\":{\"dtype\":\"F32\",\"shape\":[0,9223372036854775808],\"data_offsets\":[0,0]}}", 0,
     NB_ERR_UNSUPPORTED, "exceeds 2^63-1"},
    {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,4]}}", 4, NB_ERR_FORMAT,
     "expected 2, found 3"},
    {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, NB_ERR_FORMAT, "expected 2, found 1"},
    {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, NB_ERR_FORMAT, "end before begin"},
    /* sizes */
    {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, NB_ERR_FORMAT,
     "expected 8 bytes, found 4"},
    {"{\"t\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,2],\"data_offsets\":[0,4]}}", 4,
     NB_ERR_FORMAT, "element count overflows"},
    {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,1],\"data_offsets\":[0,4]}}", 4,
     NB_ERR_FORMAT, "byte size overflows"},
    /* layout */
    {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, NB_ERR_FORMAT,
     "tensor 't': data_offsets [4,8) leave a gap after the start of the data (expected begin 0, found 4)"},
    {"{" T1 ",\"u\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}", 6, NB_ERR_FORMAT,
     "tensor 'u': data_offsets [2,6) overlap previous tensor 't' (expected begin 4, found 2)"},
    {"{" T1 ",\"u\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[5,9]}}", 9, NB_ERR_FORMAT,
     "tensor 'u': data_offsets [5,9) leave a gap"},
    {"{" T1 "}", 5, NB_ERR_FORMAT, "(expected 5, found 4)"},
    {"{" T1 "}", 3, NB_ERR_FORMAT, "(expected 3, found 4)"},
    {"{" T1 "}", 0, NB_ERR_FORMAT, "tensors cover 4 bytes"},
    /* names */
    {"{" T1 "," T1 "}", 8, NB_ERR_FORMAT, "tensor 't': name appears twice"},
    /* metadata */
    {"{\"__metadata__\":{\"a\":\"1\"},\"__metadata__\":{}}", 0, NB_ERR_FORMAT, "__metadata__ appears twice"},
    {"{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0, NB_ERR_FORMAT, "key 'a' appears twice"},
    {"{\"__metadata__\":{\"a\":1}}", 0, NB_ERR_FORMAT, "value of 'a' is not a string"},
    {"{\"__metadata__\":[\"a\"]}", 0, NB_ERR_FORMAT, "__metadata__ must be an object"},
    {"{\"__metadata__\":\"pt\"," T1 "}", 4, NB_ERR_FORMAT, "__metadata__ must be an object"},
};

START_TEST(bad_headers) {
    for (size_t c = 0; c < sizeof g_bad / sizeof g_bad[0]; c++) {
        char fname[64];
        snprintf(fname, sizeof fname, "bad%02zu.safetensors", c);
        expect_fail(craft(fname, g_bad[c].hdr, g_bad[c].data), g_bad[c].code, g_bad[c].sub);
    }
}
END_TEST

START_TEST(bad_framing) {
    /* shorter than the length field */
    const char *p = nbt_path("tiny.safetensors");
    nbt_write_file(p, "\x02\0\0\0", 4);
    expect_fail(p, NB_ERR_FORMAT, "expected at least 8 bytes, found 4");
    nbt_write_file(p, "", 0);
    expect_fail(p, NB_ERR_FORMAT, "found 0");
    /* header length over the reference's limit, even if the file were that big */
    const char *h = "{" T1 "}";
    expect_fail(craft_len("big.safetensors", 100000001ull, h, strlen(h), 4), NB_ERR_FORMAT,
                "exceeds the limit (expected at most 100000000, found 100000001)");
    expect_fail(craft_len("huge.safetensors", UINT64_MAX, h, strlen(h), 4), NB_ERR_FORMAT,
                "exceeds the limit");
    /* header length past the end of the file */
    expect_fail(craft_len("past.safetensors", 1000, h, strlen(h), 4), NB_ERR_FORMAT,
                "runs past the end of the file");
    /* invalid UTF-8 (overlong '/', lone continuation, surrogate, truncated sequence) */
    static const char *const bad_utf8[] = {"{\"\xc0\xaf\":{}}", "{\"\x80\":{}}", "{\"\xed\xa0\x80\":{}}",
                                           "{\"\xe2\x82"};
    for (size_t k = 0; k < 4; k++) expect_fail(craft("utf8.safetensors", bad_utf8[k], 0), NB_ERR_FORMAT, "invalid UTF-8 at byte offset 10");
    /* a directory is not a file; a missing file is an I/O error */
    expect_fail(nbt_tmpdir(), NB_ERR_INVALID, "not a regular file");
    expect_fail(nbt_path("missing.safetensors"), NB_ERR_IO, "missing.safetensors");
    /* JSON nested deeper than nibble's limit */
    char deep[200] = "{\"x\":";
    for (int k = 0; k < 70; k++) strcat(deep, "[");
    for (int k = 0; k < 70; k++) strcat(deep, "]");
    strcat(deep, "}");
    expect_fail(craft("deep.safetensors", deep, 0), NB_ERR_UNSUPPORTED, "nesting deeper than 64");
    /* parse_header contract: the buffer must hold the whole header */
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_st_header hd;
    char buf[24] = {0x10};
    memcpy(buf + 8, "{}", 2);
    memset(buf + 10, ' ', 14);
    ck_assert_int_eq(nb_safetensors_parse_header(buf, 10, 24, "mem", &hd, &ctx), NB_ERR_INVALID);
    ck_assert_int_eq(nb_safetensors_parse_header(buf, 24, 24, "mem", &hd, &ctx), NB_OK);
    ck_assert_uint_eq(hd.header_len, 16);
    ck_assert_uint_eq(hd.data_start, 24);
    ck_assert_uint_eq(hd.data_size, 0);
    nb_st_header_free(&hd);
    nb_ctx_free(&ctx);
}
END_TEST

/* Every prefix of a valid file fails cleanly; single-byte corruptions never crash. */
START_TEST(truncations_and_corruptions) {
    static const spec sp[] = {
        {"w", NB_TYPE_F32, 2, {3, 2, 1, 1}}, {"b", NB_TYPE_F16, 1, {3, 1, 1, 1}},
        {"s", NB_TYPE_U8, 0, {1, 1, 1, 1}},  {"e", NB_TYPE_I64, 1, {0, 1, 1, 1}},
    };
    nb_kvset kv;
    nb_kvset_init(&kv);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ck_assert_int_eq(nb_kv_set_str(&kv, "format", "pt", &ctx), NB_OK);
    unsigned char *data[4];
    const char *p = nbt_path("full.safetensors");
    write_model(p, sp, 4, &kv, data, NULL);
    size_t n;
    unsigned char *file = nbt_read_file(p, &n);
    const char *q = nbt_path("cut.safetensors");
    for (size_t k = 0; k < n; k++) {
        nbt_write_file(q, file, k);
        nb_model *m = NULL;
        nb_status st = nb_safetensors_open(q, &m, &ctx);
        ck_assert_msg(st == NB_ERR_FORMAT, "prefix %zu: %s", k, nb_status_name(st));
        ck_assert_ptr_null(m);
        ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), q));
        /* in-memory parser on a copy of exactly k bytes (ASan catches overreads) */
        unsigned char *copy = malloc(k ? k : 1);
        memcpy(copy, file, k);
        nb_st_header h;
        ck_assert_int_ne(nb_safetensors_parse_header(copy, k, k, "mem", &h, &ctx), NB_OK);
        free(copy);
    }
    size_t ok = 0;
    static const unsigned char vals[] = {0x00, 0xff, '"', '{', '9', ' ', 0x80};
    for (size_t k = 0; k < n; k++)
        for (size_t v = 0; v < sizeof vals; v++) {
            unsigned char *copy = malloc(n);
            memcpy(copy, file, n);
            if (copy[k] == vals[v]) { free(copy); continue; }
            copy[k] = vals[v];
            nb_st_header h;
            nb_status st = nb_safetensors_parse_header(copy, n, n, "mem", &h, &ctx);
            if (st == NB_OK) {
                ok++;
                nb_st_header_free(&h);
            } else {
                ck_assert(st == NB_ERR_FORMAT || st == NB_ERR_UNSUPPORTED);
            }
            free(copy);
        }
    ck_assert_uint_gt(ok, 0); /* changes inside tensor data are harmless */
    free(file);
    for (size_t i = 0; i < 4; i++) free(data[i]);
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- sharded checkpoints --------------------------------------------------------------- */

static void write_index(const char *json) { nbt_write_file(nbt_path("model.safetensors.index.json"), json, strlen(json)); }

START_TEST(sharded) {
    static const spec s1[] = {{"layer.1", NB_TYPE_F32, 1, {4, 1, 1, 1}}, {"layer.0", NB_TYPE_F16, 2, {2, 3, 1, 1}}};
    static const spec s2[] = {{"head", NB_TYPE_BF16, 1, {5, 1, 1, 1}}};
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_kvset kv;
    nb_kvset_init(&kv);
    ck_assert_int_eq(nb_kv_set_str(&kv, "format", "pt", &ctx), NB_OK);
    unsigned char *d1[2], *d2[1];
    uint64_t n1 = write_model(nbt_path("model-00001-of-00002.safetensors"), s1, 2, &kv, d1, NULL);
    uint64_t n2 = write_model(nbt_path("model-00002-of-00002.safetensors"), s2, 1, NULL, d2, NULL);
    const char *ix = nbt_path("model.safetensors.index.json");

    /* shard order = order of first mention in weight_map; within a shard, data order */
    write_index("{\"metadata\":{\"total_size\":30,\"note\":\"x\",\"ratio\":0.5,\"ok\":true,\"arr\":[1]},"
                "\"weight_map\":{\"head\":\"model-00002-of-00002.safetensors\","
                "\"layer.0\":\"model-00001-of-00002.safetensors\","
                "\"layer.1\":\"model-00001-of-00002.safetensors\"}}");
    nb_model *m = open_ok(ix);
    ck_assert_uint_eq(m->n_tensors, 3);
    ck_assert_str_eq(m->tensors[0].name, "head");
    ck_assert_str_eq(m->tensors[1].name, "layer.1"); /* F32 before F16 in shard 1 */
    ck_assert_str_eq(m->tensors[2].name, "layer.0");
    ck_assert_mem_eq(m->tensors[0].data, d2[0], 10);
    ck_assert_mem_eq(m->tensors[1].data, d1[0], 16);
    ck_assert_mem_eq(m->tensors[2].data, d1[1], 12);
    ck_assert_int_eq(m->tensors[2].ne[0], 2);
    ck_assert_int_eq(m->tensors[2].ne[1], 3);
    ck_assert_uint_eq(m->file_bytes, n1 + n2);
    uint64_t ts = 0;
    ck_assert(nb_kv_get_u64(&m->kv, "total_size", &ts));
    ck_assert_uint_eq(ts, 30);
    ck_assert_str_eq(nb_kv_get_str(&m->kv, "note"), "x");
    ck_assert_str_eq(nb_kv_get_str(&m->kv, "format"), "pt"); /* from shard 1 */
    double r = 0;
    ck_assert(nb_kv_get_f64(&m->kv, "ratio", &r));
    ck_assert(r == 0.5);
    ck_assert_ptr_null(nb_kv_get(&m->kv, "arr"));
    unsigned char buf[16];
    ck_assert_int_eq(nb_model_read_tensor(m, 1, buf, &ctx), NB_OK);
    ck_assert_mem_eq(buf, d1[0], 16);
    nb_model_close(m);
    ck_assert_int_eq(nb_model_open(ix, &m, &ctx), NB_OK);
    ck_assert_uint_eq(m->n_tensors, 3);
    nb_model_close(m);

    /* the index names a tensor its shard lacks */
    write_index("{\"weight_map\":{\"head\":\"model-00002-of-00002.safetensors\",\"ghost\":\"model-00002-of-00002.safetensors\","
                "\"layer.0\":\"model-00001-of-00002.safetensors\",\"layer.1\":\"model-00001-of-00002.safetensors\"}}");
    expect_fail(ix, NB_ERR_FORMAT, "tensor 'ghost' in shard 'model-00002-of-00002.safetensors' but that shard has no such tensor");
    /* a shard holds a tensor the index does not mention */
    write_index("{\"weight_map\":{\"head\":\"model-00002-of-00002.safetensors\",\"layer.0\":\"model-00001-of-00002.safetensors\"}}");
    expect_fail(ix, NB_ERR_FORMAT, "tensor 'layer.1' is in shard 'model-00001-of-00002.safetensors' but not in the weight_map");
    /* ... or assigns it to another shard */
    write_index("{\"weight_map\":{\"head\":\"model-00002-of-00002.safetensors\",\"layer.0\":\"model-00001-of-00002.safetensors\","
                "\"layer.1\":\"model-00002-of-00002.safetensors\"}}");
    expect_fail(ix, NB_ERR_FORMAT,
                "tensor 'layer.1' is in shard 'model-00001-of-00002.safetensors' but the weight_map assigns it to "
                "'model-00002-of-00002.safetensors'");
    /* missing shard file */
    write_index("{\"weight_map\":{\"head\":\"model-00003-of-00002.safetensors\"}}");
    expect_fail(ix, NB_ERR_IO, "model-00003-of-00002.safetensors");
    /* a broken shard: its own validation message, prefixed with the index */
    craft("broken.safetensors", "{" T1 "}", 3);
    write_index("{\"weight_map\":{\"t\":\"broken.safetensors\"}}");
    expect_fail(ix, NB_ERR_FORMAT, "broken.safetensors: header: tensors cover 4 bytes");
    /* paths must stay in the directory; the index must be JSON with a weight_map */
    write_index("{\"weight_map\":{\"head\":\"../model-00002-of-00002.safetensors\"}}");
    expect_fail(ix, NB_ERR_FORMAT, "not a relative path");
    write_index("{\"weight_map\":{\"head\":\"/etc/passwd\"}}");
    expect_fail(ix, NB_ERR_FORMAT, "not a relative path");
    write_index("{\"weight_map\":{\"head\":3}}");
    expect_fail(ix, NB_ERR_FORMAT, "shard must be a file name");
    write_index("{\"weight_map\":{}}");
    expect_fail(ix, NB_ERR_FORMAT, "weight_map is empty");
    write_index("{\"metadata\":{}}");
    expect_fail(ix, NB_ERR_FORMAT, "\"weight_map\"");
    write_index("{\"weight_map\":{\"head\":\"a\",\"head\":\"a\"}}");
    expect_fail(ix, NB_ERR_FORMAT, "tensor 'head' appears twice");
    write_index("{\"weight_map\":");
    expect_fail(ix, NB_ERR_FORMAT, "not valid JSON");

    for (int i = 0; i < 2; i++) free(d1[i]);
    free(d2[0]);
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- writer failures ------------------------------------------------------------------ */

START_TEST(write_failures) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    int64_t ne[4] = {4, 1, 1, 1};
    float v[4] = {1, 2, 3, 4};
    nb_sink *s = NULL;

    /* nonexistent directory: begin fails, nothing is left behind */
    const char *bad = nbt_path("no/such/dir/x.safetensors");
    ck_assert_int_eq(nb_safetensors_sink_create(bad, &s, &ctx), NB_OK);
    ck_assert_int_eq(nb_sink_add_tensor(s, "t", NB_TYPE_F32, 1, ne, &ctx), NB_OK);
    ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_ERR_IO);
    ck_assert_int_ne(nb_sink_write(s, v, 16, &ctx), NB_OK);
    ck_assert_int_ne(nb_sink_commit(s, &ctx), NB_OK);
    nb_sink_free(s);
    ck_assert(!nbt_file_exists(bad));

    /* abort mid-way: the .partial disappears and an older file stays untouched */
    const char *p = nbt_path("abort.safetensors");
    nbt_write_file(p, "old", 3);
    ck_assert_int_eq(nb_safetensors_sink_create(p, &s, &ctx), NB_OK);
    ck_assert_int_eq(nb_sink_add_tensor(s, "t", NB_TYPE_F32, 1, ne, &ctx), NB_OK);
    ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_OK);
    ck_assert_int_eq(nb_sink_write(s, v, 8, &ctx), NB_OK);
    ck_assert(nbt_partial_exists(p));
    /* committing an incomplete tensor fails and names it */
    ck_assert_int_eq(nb_sink_commit(s, &ctx), NB_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "tensor 't' incomplete"));
    /* writing past the end fails */
    ck_assert_int_eq(nb_sink_write(s, v, 16, &ctx), NB_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "past the end"));
    /* declaring after begin fails */
    ck_assert_int_eq(nb_sink_add_tensor(s, "u", NB_TYPE_F32, 1, ne, &ctx), NB_ERR_INVALID);
    nb_sink_free(s);
    ck_assert(!nbt_partial_exists(p));
    size_t n;
    unsigned char *old = nbt_read_file(p, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_mem_eq(old, "old", 3);
    free(old);

    /* declaration errors */
    ck_assert_int_eq(nb_safetensors_sink_create(p, &s, &ctx), NB_OK);
    ck_assert_int_eq(nb_sink_add_tensor(s, "q", NB_TYPE_Q4_K, 1, (int64_t[4]){256, 1, 1, 1}, &ctx),
                     NB_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "tensor 'q': safetensors has no dtype for q4_K"));
    ck_assert_int_eq(nb_sink_add_tensor(s, "__metadata__", NB_TYPE_F32, 1, ne, &ctx), NB_ERR_INVALID);
    ck_assert_int_eq(nb_sink_add_tensor(s, "", NB_TYPE_F32, 1, ne, &ctx), NB_ERR_INVALID);
    ck_assert_int_eq(nb_sink_add_tensor(s, "bad\xff", NB_TYPE_F32, 1, ne, &ctx), NB_ERR_INVALID);
    ck_assert_int_eq(nb_sink_add_tensor(s, "neg", NB_TYPE_F32, 1, (int64_t[4]){-1, 1, 1, 1}, &ctx),
                     NB_ERR_INVALID);
    ck_assert_int_eq(nb_sink_add_tensor(s, "big", NB_TYPE_F64, 4,
                                        (int64_t[4]){INT64_MAX, INT64_MAX, 2, 1}, &ctx), NB_ERR_RANGE);
    char longname[NB_MAX_NAME + 2];
    memset(longname, 'x', sizeof longname);
    longname[NB_MAX_NAME + 1] = 0;
    ck_assert_int_eq(nb_sink_add_tensor(s, longname, NB_TYPE_F32, 1, ne, &ctx), NB_ERR_INVALID);
    longname[NB_MAX_NAME] = 0;
    ck_assert_int_eq(nb_sink_add_tensor(s, longname, NB_TYPE_F32, 1, ne, &ctx), NB_OK);
    ck_assert_int_eq(nb_sink_add_tensor(s, "dup", NB_TYPE_F32, 1, ne, &ctx), NB_OK);
    ck_assert_int_eq(nb_sink_add_tensor(s, "dup", NB_TYPE_F16, 1, ne, &ctx), NB_OK);
    ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "tensor 'dup' added twice"));
    nb_sink_free(s);
    ck_assert(!nbt_partial_exists(p));
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("safetensors");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, reference_layout);
    tcase_add_test(tc, valid_edge_cases);
    tcase_add_test(tc, bad_headers);
    tcase_add_test(tc, bad_framing);
    tcase_add_test(tc, truncations_and_corruptions);
    tcase_add_test(tc, sharded);
    tcase_add_test(tc, write_failures);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
