/* tests/formats/test_gguf.c — GGUF reader/writer: round trips of every
 * metadata type, alignment, validation of crafted files, truncation, v2,
 * big-endian rejection, atomic failure, gguf-py golden files. */
#include "core/sha256.h"
#include "formats/gguf.h"
#include "formats/readers.h"
#include "formats/synth.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a byte builder for crafted files -------------------------------------- */

typedef struct bb {
    unsigned char *p;
    size_t n, cap;
} bb;

static void bb_put(bb *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void bb_u32(bb *b, uint32_t x) { bb_put(b, &x, 4); }
static void bb_u64(bb *b, uint64_t x) { bb_put(b, &x, 8); }
static void bb_u8(bb *b, uint8_t x) { bb_put(b, &x, 1); }
static void bb_str(bb *b, const char *s) {
    bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
}
static void bb_pad(bb *b, size_t align) {
    while (b->n % align) bb_u8(b, 0);
}
static void bb_header(bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    bb_put(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}
/* tensor info with n_dims dims */
static void bb_tinfo(bb *b, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type,
                     uint64_t off) {
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) bb_u64(b, (uint64_t)ne[d]);
    bb_u32(b, type);
    bb_u64(b, off);
}

/* Parse a memory image from an exact-size heap copy (so ASan catches any read
 * past the end); returns the status and keeps the message in ctx. */
static nb_status parse_mem(const void *d, size_t n, nb_ctx *ctx) {
    void *copy = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(copy);
    if (n) memcpy(copy, d, n);
    nb_model *m = NULL;
    nb_status st = nb_gguf_open_memory(copy, n, "crafted.gguf", &m, ctx);
    if (st == NB_OK) ck_assert_ptr_nonnull(m);
    else ck_assert_ptr_null(m);
    nb_model_close(m);
    free(copy);
    return st;
}

static void expect_fail(bb *b, nb_status want, const char *substr) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_status st = parse_mem(b->p, b->n, &ctx);
    ck_assert_msg(st == want, "want %s, got %s (%s)", nb_status_name(want), nb_status_name(st),
                  nb_errmsg(&ctx));
    ck_assert_msg(strstr(nb_errmsg(&ctx), substr) != NULL, "message '%s' lacks '%s'", nb_errmsg(&ctx),
                  substr);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "crafted.gguf") != NULL, "message '%s' lacks the file name",
                  nb_errmsg(&ctx));
    /* the same bytes through the file path give the same verdict */
    const char *path = nbt_path("crafted.gguf");
    nbt_write_file(path, b->p, b->n);
    nb_model *m = NULL;
    ck_assert_int_eq(nb_gguf_open(path, &m, &ctx), want);
    ck_assert_ptr_null(m);
    nb_ctx_free(&ctx);
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- kv comparison ---------------------------------------------------------- */

static void value_eq(const nb_kv_value *a, const nb_kv_value *b, const char *key) {
    ck_assert_msg(a->type == b->type, "%s: type %d vs %d", key, a->type, b->type);
    switch (a->type) {
    case NB_KV_STRING:
        ck_assert_uint_eq(a->v.s.len, b->v.s.len);
        ck_assert_mem_eq(a->v.s.ptr, b->v.s.ptr, a->v.s.len);
        break;
    case NB_KV_ARRAY: {
        ck_assert_msg(a->v.arr.elem == b->v.arr.elem, "%s: elem", key);
        ck_assert_uint_eq(a->v.arr.n, b->v.arr.n);
        uint64_t n = a->v.arr.n;
        if (a->v.arr.elem == NB_KV_STRING) {
            const nb_str *x = a->v.arr.data, *y = b->v.arr.data;
            for (uint64_t k = 0; k < n; k++) {
                ck_assert_uint_eq(x[k].len, y[k].len);
                ck_assert_mem_eq(x[k].ptr, y[k].ptr, x[k].len);
            }
        } else if (a->v.arr.elem == NB_KV_ARRAY) {
            const nb_kv_value *x = a->v.arr.data, *y = b->v.arr.data;
            for (uint64_t k = 0; k < n; k++) value_eq(&x[k], &y[k], key);
        } else if (n) {
            ck_assert_mem_eq(a->v.arr.data, b->v.arr.data, n * nb_kv_scalar_size(a->v.arr.elem));
        }
        break;
    }
    case NB_KV_F32: case NB_KV_F64:
        ck_assert_mem_eq(&a->v.f, &b->v.f, sizeof a->v.f);
        break;
    case NB_KV_I8: case NB_KV_I16: case NB_KV_I32: case NB_KV_I64:
        ck_assert_int_eq(a->v.i, b->v.i);
        break;
    default:
        ck_assert_uint_eq(a->v.u, b->v.u);
    }
}

static void kvset_eq(const nb_kvset *a, const nb_kvset *b) {
    ck_assert_uint_eq(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        ck_assert_str_eq(a->items[i].key, b->items[i].key); /* same order */
        value_eq(&a->items[i].val, &b->items[i].val, a->items[i].key);
    }
}

/* ---- helpers that write files through the sink ---------------------------------- */

static nb_kv_value arr_of(nb_kv_type elem, uint64_t n, void *data) {
    nb_kv_value v;
    memset(&v, 0, sizeof v);
    v.type = NB_KV_ARRAY;
    v.v.arr.elem = elem;
    v.v.arr.n = n;
    v.v.arr.data = data;
    return v;
}

/* Every metadata type: scalars, empty string, arrays of each scalar type, a
 * string array, empty arrays, nested arrays 3 deep, an empty nested array. */
static void fill_all_kv(nb_kvset *kv, nb_ctx *ctx) {
    nb_kv_value v;
    static const struct { const char *key; nb_kv_type t; uint64_t u; int64_t i; } sc[] = {
        {"s.u8", NB_KV_U8, 255, 0},        {"s.i8", NB_KV_I8, 0, -128},
        {"s.u16", NB_KV_U16, 65535, 0},    {"s.i16", NB_KV_I16, 0, -32768},
        {"s.u32", NB_KV_U32, 4294967295u, 0}, {"s.i32", NB_KV_I32, 0, INT32_MIN},
        {"s.u64", NB_KV_U64, UINT64_MAX, 0}, {"s.i64", NB_KV_I64, 0, INT64_MIN},
        {"s.bool", NB_KV_BOOL, 1, 0},
    };
    for (size_t k = 0; k < sizeof sc / sizeof sc[0]; k++) {
        memset(&v, 0, sizeof v);
        v.type = sc[k].t;
        if (sc[k].t == NB_KV_I8 || sc[k].t == NB_KV_I16 || sc[k].t == NB_KV_I32 || sc[k].t == NB_KV_I64)
            v.v.i = sc[k].i;
        else
            v.v.u = sc[k].u;
        ck_assert_int_eq(nb_kv_set(kv, sc[k].key, &v, ctx), NB_OK);
    }
    memset(&v, 0, sizeof v);
    v.type = NB_KV_F32;
    v.v.f = -0.1f; /* exactly a float */
    ck_assert_int_eq(nb_kv_set(kv, "s.f32", &v, ctx), NB_OK);
    v.type = NB_KV_F64;
    v.v.f = 0.1;
    ck_assert_int_eq(nb_kv_set(kv, "s.f64", &v, ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_str(kv, "s.str", "text with ünïcode", ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_str(kv, "s.empty", "", ctx), NB_OK);
    /* a string with an embedded NUL */
    memset(&v, 0, sizeof v);
    v.type = NB_KV_STRING;
    v.v.s.len = 3;
    v.v.s.ptr = (char *)"a\0b";
    ck_assert_int_eq(nb_kv_set(kv, "s.nul", &v, ctx), NB_OK);

    uint8_t u8[3] = {0, 1, 255};
    int8_t i8[2] = {-128, 127};
    uint16_t u16[2] = {1, 65535};
    int16_t i16[2] = {-2, 3};
    uint32_t u32[3] = {1, 2, 3};
    int32_t i32[2] = {-5, 6};
    float f32[2] = {1.5f, -0.0f};
    uint8_t b8[3] = {1, 0, 1};
    uint64_t u64[1] = {UINT64_MAX};
    int64_t i64[2] = {INT64_MIN, 1};
    double f64[2] = {1e-300, -3.0};
    struct { const char *k; nb_kv_type t; uint64_t n; const void *d; } ar[] = {
        {"a.u8", NB_KV_U8, 3, u8},     {"a.i8", NB_KV_I8, 2, i8},   {"a.u16", NB_KV_U16, 2, u16},
        {"a.i16", NB_KV_I16, 2, i16},  {"a.u32", NB_KV_U32, 3, u32}, {"a.i32", NB_KV_I32, 2, i32},
        {"a.f32", NB_KV_F32, 2, f32},  {"a.bool", NB_KV_BOOL, 3, b8}, {"a.u64", NB_KV_U64, 1, u64},
        {"a.i64", NB_KV_I64, 2, i64},  {"a.f64", NB_KV_F64, 2, f64}, {"a.empty", NB_KV_F32, 0, f32},
    };
    for (size_t k = 0; k < sizeof ar / sizeof ar[0]; k++)
        ck_assert_int_eq(nb_kv_set_arr(kv, ar[k].k, ar[k].t, ar[k].n, ar[k].d, ctx), NB_OK);
    const char *strs[4] = {"<s>", "", "▁the", "x"};
    ck_assert_int_eq(nb_kv_set_arr_str(kv, "a.str", 4, strs, ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_arr_str(kv, "a.str_empty", 0, strs, ctx), NB_OK);

    /* nested: [[1,2,3],[]] of u32; [[["<s>"],[]]] of strings (3 deep); [] of arrays */
    nb_kv_value inner[2] = {arr_of(NB_KV_U32, 3, u32), arr_of(NB_KV_U32, 0, u32)};
    v = arr_of(NB_KV_ARRAY, 2, inner);
    ck_assert_int_eq(nb_kv_set(kv, "a.nested", &v, ctx), NB_OK);
    nb_str ss[1] = {{3, (char *)"<s>"}};
    nb_kv_value lvl3[2] = {arr_of(NB_KV_STRING, 1, ss), arr_of(NB_KV_STRING, 0, ss)};
    nb_kv_value lvl2[1] = {arr_of(NB_KV_ARRAY, 2, lvl3)};
    v = arr_of(NB_KV_ARRAY, 1, lvl2);
    ck_assert_int_eq(nb_kv_set(kv, "a.deep", &v, ctx), NB_OK);
    v = arr_of(NB_KV_ARRAY, 0, inner);
    ck_assert_int_eq(nb_kv_set(kv, "a.nested_empty", &v, ctx), NB_OK);
}

typedef struct tspec {
    const char *name;
    nb_type type;
    uint32_t n_dims;
    int64_t ne[4];
} tspec;

/* Deterministic tensor bytes: byte j of tensor i is (i * 31 + j * 7) & 0xff,
 * except bool-free types so no validation applies to data. */
static unsigned char tbyte(size_t i, uint64_t j) { return (unsigned char)((i * 31 + j * 7) & 0xff); }

static uint64_t spec_bytes(const tspec *t) {
    uint64_t row, n = 1;
    ck_assert_int_eq(nb_type_row_bytes(t->type, (uint64_t)t->ne[0], &row, NULL, t->name), NB_OK);
    for (uint32_t d = 1; d < t->n_dims; d++) n *= (uint64_t)t->ne[d];
    return row * n;
}

/* Write a file with kv (copied) and tensors whose data is tbyte(); data is
 * streamed in pieces of `piece` bytes that may cross tensor boundaries. */
static void write_file(const char *path, const nb_kvset *kv, const tspec *ts, size_t nt, size_t piece,
                       unsigned char sha[32], uint64_t *bytes) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_sink *s = NULL;
    ck_assert_int_eq(nb_gguf_sink_create(path, &s, &ctx), NB_OK);
    ck_assert_int_eq(nb_kvset_copy(&s->kv, kv, &ctx), NB_OK);
    uint64_t total = 0;
    for (size_t i = 0; i < nt; i++) {
        ck_assert_int_eq(nb_sink_add_tensor(s, ts[i].name, ts[i].type, ts[i].n_dims, ts[i].ne, &ctx), NB_OK);
        total += spec_bytes(&ts[i]);
    }
    ck_assert_msg(nb_sink_begin(s, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    unsigned char *all = malloc(total + 1);
    uint64_t k = 0;
    for (size_t i = 0; i < nt; i++) {
        ck_assert_uint_eq(nb_sink_data_order(s, i), i);
        for (uint64_t j = 0; j < spec_bytes(&ts[i]); j++) all[k++] = tbyte(i, j);
    }
    for (uint64_t off = 0; off < total; off += piece) {
        uint64_t n = total - off < piece ? total - off : piece;
        ck_assert_int_eq(nb_sink_write(s, all + off, n, &ctx), NB_OK);
    }
    ck_assert_msg(nb_sink_commit(s, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    if (sha) memcpy(sha, s->sha256, 32);
    if (bytes) *bytes = s->bytes_written;
    nb_sink_free(s);
    free(all);
    nb_ctx_free(&ctx);
}

/* Copy a model into a new file (the way `nibble convert` does for GGUF->GGUF). */
static void rewrite_model(nb_model *m, const char *path) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_sink *s = NULL;
    ck_assert_int_eq(nb_gguf_sink_create(path, &s, &ctx), NB_OK);
    ck_assert_int_eq(nb_kvset_copy(&s->kv, &m->kv, &ctx), NB_OK);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *t = &m->tensors[i];
        ck_assert_int_eq(nb_sink_add_tensor(s, t->name, t->type, t->n_dims, t->ne, &ctx), NB_OK);
    }
    ck_assert_msg(nb_sink_begin(s, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    for (size_t k = 0; k < m->n_tensors; k++) {
        const nb_tensor *t = &m->tensors[nb_sink_data_order(s, k)];
        if (t->nbytes) ck_assert_int_eq(nb_sink_write(s, t->data, t->nbytes, &ctx), NB_OK);
    }
    ck_assert_msg(nb_sink_commit(s, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_sink_free(s);
    nb_ctx_free(&ctx);
}

static void files_equal(const char *a, const char *b) {
    size_t na, nb;
    unsigned char *x = nbt_read_file(a, &na), *y = nbt_read_file(b, &nb);
    ck_assert_ptr_nonnull(x);
    ck_assert_ptr_nonnull(y);
    ck_assert_uint_eq(na, nb);
    ck_assert_msg(memcmp(x, y, na) == 0, "%s and %s differ", a, b);
    free(x);
    free(y);
}

static const tspec k_tensors[] = {
    {"w.f32", NB_TYPE_F32, 2, {3, 2, 1, 1}},
    {"w.f16", NB_TYPE_F16, 1, {5, 1, 1, 1}},
    {"w.q8_0", NB_TYPE_Q8_0, 3, {64, 2, 2, 1}},
    {"w.zero", NB_TYPE_F32, 2, {0, 4, 1, 1}},
    {"w.one", NB_TYPE_F32, 1, {1, 1, 1, 1}},
    {"w.q4_k", NB_TYPE_Q4_K, 4, {256, 1, 1, 2}},
    {"w.scalar", NB_TYPE_F32, 0, {1, 1, 1, 1}},
    {"w.nf4", NB_TYPE_NF4, 2, {64, 3, 1, 1}}, /* nibble's own type id */
};
#define N_TENSORS (sizeof k_tensors / sizeof k_tensors[0])

/* ---- tests -------------------------------------------------------------------- */

START_TEST(test_roundtrip_all_kv) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_kvset kv;
    nb_kvset_init(&kv);
    fill_all_kv(&kv, &ctx);
    const char *p1 = nbt_path("rt1.gguf"), *p2 = nbt_path("rt2.gguf");
    unsigned char sha[32];
    uint64_t bytes;
    write_file(p1, &kv, k_tensors, N_TENSORS, 7, sha, &bytes);

    /* sha256 and size recorded on commit match the file */
    unsigned char sha_file[32];
    ck_assert_int_eq(nb_sha256_file(p1, sha_file, &ctx), NB_OK);
    ck_assert_mem_eq(sha, sha_file, 32);
    size_t n;
    unsigned char *img = nbt_read_file(p1, &n);
    ck_assert_uint_eq(bytes, n);
    ck_assert_mem_eq(img, "GGUF\x03\0\0\0", 8);

    nb_model *m = NULL;
    ck_assert_msg(nb_model_open(p1, &m, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_int_eq(m->format, NB_FMT_GGUF);
    kvset_eq(&kv, &m->kv);
    ck_assert_uint_eq(m->n_tensors, N_TENSORS);
    uint64_t prev_end = 0;
    for (size_t i = 0; i < N_TENSORS; i++) {
        const nb_tensor *t = &m->tensors[i];
        ck_assert_str_eq(t->name, k_tensors[i].name);
        ck_assert_int_eq(t->type, k_tensors[i].type);
        ck_assert_uint_eq(t->n_dims, k_tensors[i].n_dims);
        for (int d = 0; d < 4; d++) ck_assert_int_eq(t->ne[d], k_tensors[i].ne[d]);
        ck_assert_uint_eq(t->nbytes, spec_bytes(&k_tensors[i]));
        ck_assert_uint_eq(t->file_offset % 32, 0);
        ck_assert_uint_ge(t->file_offset, prev_end); /* declaration order, no overlap */
        prev_end = t->file_offset + t->nbytes;
        /* zero-copy: data points at file_offset of the mapping */
        ck_assert_ptr_eq((const unsigned char *)m->tensors[0].data - m->tensors[0].file_offset,
                         (const unsigned char *)t->data - t->file_offset);
        for (uint64_t j = 0; j < t->nbytes; j++) {
            ck_assert_uint_eq(((const unsigned char *)t->data)[j], tbyte(i, j));
            ck_assert_uint_eq(img[t->file_offset + j], tbyte(i, j));
        }
        unsigned char *buf = malloc(t->nbytes + 1);
        ck_assert_int_eq(nb_model_read_tensor(m, i, buf, &ctx), NB_OK);
        if (t->nbytes) ck_assert_mem_eq(buf, t->data, t->nbytes);
        free(buf);
    }
    /* the nibble-only type is stored under its own id */
    const nb_type_traits *tr = nb_type_get(NB_TYPE_NF4);
    ck_assert_uint_ge((uint64_t)tr->gguf_id, NB_GGUF_ID_BASE);
    ck_assert_uint_eq(n, bytes);
    ck_assert_uint_eq(nb_gguf_alignment(m), 32);
    /* the file ends with the last tensor padded to the alignment, like gguf-py */
    ck_assert_uint_eq(n % 32, 0);
    ck_assert_uint_eq(n - m->tensors[N_TENSORS - 1].file_offset, 32 * ((m->tensors[N_TENSORS - 1].nbytes + 31) / 32));
    /* read -> write is byte-identical */
    rewrite_model(m, p2);
    files_equal(p1, p2);
    nb_model_close(m);
    free(img);
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
}
END_TEST

/* Alignments 1, 64 and 4096: header and every tensor start on a multiple,
 * padding bytes are zero, offsets are packed in declaration order. */
START_TEST(test_alignment) {
    static const uint32_t aligns[] = {1, 2, 64, 4096};
    uint32_t align = aligns[_i];
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_kvset kv;
    nb_kvset_init(&kv);
    ck_assert_int_eq(nb_kv_set_str(&kv, "general.architecture", "llama", &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_u32(&kv, "general.alignment", align, &ctx), NB_OK);
    const char *p = nbt_path("align.gguf"), *p2 = nbt_path("align2.gguf");
    write_file(p, &kv, k_tensors, N_TENSORS, 1000, NULL, NULL);
    size_t n;
    unsigned char *img = nbt_read_file(p, &n);
    nb_model *m = NULL;
    ck_assert_int_eq(nb_gguf_open(p, &m, &ctx), NB_OK);
    ck_assert_uint_eq(nb_gguf_alignment(m), align);
    uint64_t expect = m->tensors[0].file_offset, data_start = expect;
    ck_assert_uint_eq(data_start % align, 0);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *t = &m->tensors[i];
        ck_assert_uint_eq(t->file_offset, expect);
        uint64_t padded = (t->nbytes + align - 1) / align * align;
        for (uint64_t j = t->nbytes; j < padded; j++) ck_assert_uint_eq(img[t->file_offset + j], 0);
        expect += padded;
    }
    ck_assert_uint_eq(expect, n); /* the last tensor is padded too */
    rewrite_model(m, p2);
    files_equal(p, p2);
    nb_model_close(m);
    free(img);
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
}
END_TEST

/* general.alignment must be a u32 non-zero power of two for the writer too;
 * a rejected begin leaves no file behind. */
START_TEST(test_writer_bad_alignment) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = nbt_path("badalign.gguf");
    for (int k = 0; k < 3; k++) {
        nb_sink *s = NULL;
        ck_assert_int_eq(nb_gguf_sink_create(p, &s, &ctx), NB_OK);
        if (k == 0) nb_kv_set_u32(&s->kv, "general.alignment", 0, &ctx);
        if (k == 1) nb_kv_set_u32(&s->kv, "general.alignment", 48, &ctx);
        if (k == 2) nb_kv_set_u64(&s->kv, "general.alignment", 64, &ctx);
        ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_ERR_INVALID);
        ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "general.alignment"));
        nb_sink_free(s);
        ck_assert(!nbt_file_exists(p));
        ck_assert(!nbt_partial_exists(p));
    }
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(test_failed_writes_leave_no_file) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = nbt_path("fail.gguf");
    int64_t ne[2] = {4, 2};
    float data[8] = {0};
    for (int k = 0; k < 6; k++) {
        nb_sink *s = NULL;
        ck_assert_int_eq(nb_gguf_sink_create(p, &s, &ctx), NB_OK);
        ck_assert(nbt_partial_exists(p));
        ck_assert_int_eq(nb_sink_add_tensor(s, "a", NB_TYPE_F32, 2, ne, &ctx), NB_OK);
        if (k == 0) { /* commit with a tensor incomplete */
            ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_OK);
            ck_assert_int_eq(nb_sink_write(s, data, 16, &ctx), NB_OK);
            ck_assert_int_eq(nb_sink_commit(s, &ctx), NB_ERR_INVALID);
            ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "tensor 'a'"));
        } else if (k == 1) { /* too much data */
            ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_OK);
            ck_assert_int_eq(nb_sink_write(s, data, 32, &ctx), NB_OK);
            ck_assert_int_eq(nb_sink_write(s, data, 4, &ctx), NB_ERR_INVALID);
            ck_assert_int_eq(nb_sink_commit(s, &ctx), NB_ERR_INVALID);
        } else if (k == 2) { /* freed before commit */
            ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_OK);
            ck_assert_int_eq(nb_sink_write(s, data, 32, &ctx), NB_OK);
        } else if (k == 3) { /* value that does not fit its type */
            nb_kv_value v;
            memset(&v, 0, sizeof v);
            v.type = NB_KV_U8;
            v.v.u = 300;
            ck_assert_int_eq(nb_kv_set(&s->kv, "x", &v, &ctx), NB_OK);
            ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_ERR_INVALID);
        } else if (k == 4) { /* duplicate tensor name */
            ck_assert_int_eq(nb_sink_add_tensor(s, "a", NB_TYPE_F16, 2, ne, &ctx), NB_OK);
            ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_ERR_INVALID);
            ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "'a'"));
        } else { /* shapes the writer refuses */
            int64_t bad[2] = {16, 1};
            ck_assert_int_eq(nb_sink_add_tensor(s, "q", NB_TYPE_Q8_0, 2, bad, &ctx), NB_ERR_RANGE);
            ck_assert_int_eq(nb_sink_add_tensor(s, "u", NB_TYPE_U8, 2, ne, &ctx), NB_ERR_UNSUPPORTED);
            int64_t neg[2] = {-1, 1};
            ck_assert_int_eq(nb_sink_add_tensor(s, "n", NB_TYPE_F32, 2, neg, &ctx), NB_ERR_INVALID);
            ck_assert_int_eq(nb_sink_add_tensor(s, "d", NB_TYPE_F32, 5, ne, &ctx), NB_ERR_INVALID);
            char longname[NB_MAX_NAME + 2];
            memset(longname, 'x', sizeof longname - 1);
            longname[sizeof longname - 1] = 0;
            ck_assert_int_eq(nb_sink_add_tensor(s, longname, NB_TYPE_F32, 2, ne, &ctx), NB_ERR_INVALID);
        }
        nb_sink_free(s);
        ck_assert(!nbt_file_exists(p));
        ck_assert(!nbt_partial_exists(p));
    }
    /* an unwritable destination fails at create */
    nb_sink *s = NULL;
    ck_assert_int_eq(nb_gguf_sink_create(nbt_path("no/such/dir/x.gguf"), &s, &ctx), NB_ERR_IO);
    ck_assert_ptr_null(s);
    /* writes after a successful commit are refused, the file stays */
    ck_assert_int_eq(nb_gguf_sink_create(p, &s, &ctx), NB_OK);
    ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_OK);
    ck_assert_int_eq(nb_sink_commit(s, &ctx), NB_OK);
    ck_assert_int_eq(nb_sink_write(s, data, 4, &ctx), NB_ERR_INVALID);
    ck_assert_int_eq(nb_sink_add_tensor(s, "late", NB_TYPE_F32, 2, ne, &ctx), NB_ERR_INVALID);
    nb_sink_free(s);
    ck_assert(nbt_file_exists(p));
    /* an empty model: header only, padded to 32 */
    nb_model *m = NULL;
    ck_assert_int_eq(nb_gguf_open(p, &m, &ctx), NB_OK);
    ck_assert_uint_eq(m->n_tensors, 0);
    ck_assert_uint_eq(m->kv.n, 0);
    ck_assert_uint_eq(m->file_bytes, 32);
    nb_model_close(m);
    nb_ctx_free(&ctx);
}
END_TEST

/* A small valid file built by hand: 2 kv (one array), 2 tensors. */
static void build_valid(bb *b, uint32_t version) {
    bb_header(b, version, 2, 2);
    bb_str(b, "general.architecture");
    bb_u32(b, NB_KV_STRING);
    bb_str(b, "llama");
    bb_str(b, "tok");
    bb_u32(b, NB_KV_ARRAY);
    bb_u32(b, NB_KV_STRING);
    bb_u64(b, 2);
    bb_str(b, "a");
    bb_str(b, "bc");
    int64_t ne1[2] = {4, 2}, ne2[1] = {32};
    bb_tinfo(b, "t1", 2, ne1, NB_TYPE_F32, 0);
    bb_tinfo(b, "t2", 1, ne2, NB_TYPE_Q8_0, 32);
    bb_pad(b, 32);
    for (int k = 0; k < 32; k++) bb_u8(b, (uint8_t)k);
    for (int k = 0; k < 34; k++) bb_u8(b, (uint8_t)(100 + k));
}

START_TEST(test_crafted_valid_and_v2) {
    for (uint32_t version = 2; version <= 3; version++) {
        bb b = {0};
        build_valid(&b, version);
        nb_ctx ctx;
        nbt_ctx(&ctx);
        nb_model *m = NULL;
        ck_assert_msg(nb_gguf_open_memory(b.p, b.n, "v.gguf", &m, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
        ck_assert_uint_eq(m->n_tensors, 2);
        ck_assert_str_eq(nb_kv_get_str(&m->kv, "general.architecture"), "llama");
        ck_assert_uint_eq(m->tensors[1].nbytes, 34);
        ck_assert_uint_eq(((const unsigned char *)m->tensors[1].data)[33], 133);
        ck_assert_ptr_eq(m->tensors[0].data, b.p + m->tensors[0].file_offset);
        nb_model_close(m);
        nb_ctx_free(&ctx);
        free(b.p);
    }
}
END_TEST

/* Every prefix of a valid file fails cleanly until all tensor data is present. */
START_TEST(test_truncation_every_prefix) {
    bb b = {0};
    build_valid(&b, 3);
    size_t data_end = b.n; /* no trailing padding in this file */
    nb_ctx ctx;
    nbt_ctx(&ctx);
    for (size_t len = 0; len <= b.n; len++) {
        nb_status st = parse_mem(b.p, len, &ctx);
        if (len < data_end) {
            ck_assert_msg(st == NB_ERR_FORMAT, "len %zu: %s (%s)", len, nb_status_name(st), nb_errmsg(&ctx));
            ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "offset"));
        } else {
            ck_assert_int_eq(st, NB_OK);
        }
    }
    /* a sink-written file (with nested arrays, padding after the last tensor) */
    nb_kvset kv;
    nb_kvset_init(&kv);
    fill_all_kv(&kv, &ctx);
    const char *p = nbt_path("trunc.gguf");
    write_file(p, &kv, k_tensors, 4, 64, NULL, NULL);
    size_t n;
    unsigned char *img = nbt_read_file(p, &n);
    nb_model *m = NULL;
    ck_assert_int_eq(nb_gguf_open(p, &m, &ctx), NB_OK);
    uint64_t end = 0;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].file_offset + m->tensors[i].nbytes > end)
            end = m->tensors[i].file_offset + m->tensors[i].nbytes;
    nb_model_close(m);
    for (size_t len = 0; len < n; len++) {
        nb_status st = parse_mem(img, len, &ctx);
        ck_assert_msg(len < end ? st == NB_ERR_FORMAT : st == NB_OK, "len %zu: %s", len, nb_errmsg(&ctx));
    }
    /* through the file path too, for the tiny sizes that cannot be mapped */
    for (size_t len = 0; len < 40; len++) {
        nbt_write_file(p, img, len);
        ck_assert_int_eq(nb_gguf_open(p, &m, &ctx), NB_ERR_FORMAT);
    }
    free(img);
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
    free(b.p);
}
END_TEST

START_TEST(test_header_rules) {
    bb b = {0};
    bb_put(&b, "GGUX", 4);
    bb_u32(&b, 3);
    bb_u64(&b, 0);
    bb_u64(&b, 0);
    expect_fail(&b, NB_ERR_FORMAT, "bad magic");

    bb_header(&b, 1, 0, 0);
    expect_fail(&b, NB_ERR_UNSUPPORTED, "v1");
    bb_header(&b, 4, 0, 0);
    expect_fail(&b, NB_ERR_UNSUPPORTED, "version 4");
    bb_header(&b, 0, 0, 0);
    expect_fail(&b, NB_ERR_UNSUPPORTED, "version 0");
    /* a big-endian file: every integer byte-swapped */
    bb_put(&b, "GGUF", 4);
    bb_u32(&b, __builtin_bswap32(3));
    bb_u64(&b, __builtin_bswap64(0));
    bb_u64(&b, __builtin_bswap64(0));
    expect_fail(&b, NB_ERR_UNSUPPORTED, "big-endian GGUF");
    bb_put(&b, "GGUF", 4);
    bb_u32(&b, __builtin_bswap32(2));
    bb_u64(&b, 0);
    bb_u64(&b, 0);
    expect_fail(&b, NB_ERR_UNSUPPORTED, "big-endian GGUF");

    /* counts that would allocate absurd memory */
    bb_header(&b, 3, 0, UINT64_MAX);
    expect_fail(&b, NB_ERR_FORMAT, "metadata count");
    bb_header(&b, 3, (uint64_t)1 << 40, 0);
    expect_fail(&b, NB_ERR_FORMAT, "tensor count");
    bb_header(&b, 3, 1, 0);
    bb_u64(&b, 0); /* only 8 more bytes: not enough for one tensor info */
    expect_fail(&b, NB_ERR_FORMAT, "tensor count");
    /* 0 tensors, 0 kv, nothing else: valid */
    nb_ctx ctx;
    nbt_ctx(&ctx);
    bb_header(&b, 3, 0, 0);
    ck_assert_int_eq(parse_mem(b.p, b.n, &ctx), NB_OK);
    free(b.p);
    nb_ctx_free(&ctx);
}
END_TEST

/* one kv built by the caller after a header announcing 1 kv and 0 tensors */
static void kv_start(bb *b, const char *key, uint32_t type) {
    bb_header(b, 3, 0, 1);
    bb_str(b, key);
    bb_u32(b, type);
}

START_TEST(test_kv_rules) {
    bb b = {0};
    /* key length beyond the file */
    bb_header(&b, 3, 0, 1);
    bb_u64(&b, 99999999);
    bb_put(&b, "abcdefgh", 8);
    expect_fail(&b, NB_ERR_FORMAT, "key length 99999999 exceeds file size");
    /* string value length beyond the file; the message names the key and offset */
    kv_start(&b, "foo", NB_KV_STRING);
    bb_u64(&b, 99999999);
    bb_put(&b, "abc", 3);
    expect_fail(&b, NB_ERR_FORMAT, "offset 39: metadata key 'foo': string length 99999999 exceeds file size");
    /* key with a NUL byte */
    bb_header(&b, 3, 0, 1);
    bb_u64(&b, 3);
    bb_put(&b, "a\0b", 3);
    bb_u32(&b, NB_KV_U8);
    bb_u8(&b, 1);
    expect_fail(&b, NB_ERR_FORMAT, "NUL");
    /* invalid value type */
    kv_start(&b, "k", 13);
    bb_u64(&b, 0);
    expect_fail(&b, NB_ERR_FORMAT, "invalid value type 13");
    /* truncated scalar */
    kv_start(&b, "k", NB_KV_U64);
    bb_u32(&b, 0);
    bb_u8(&b, 0); /* pad so the header count check passes */
    expect_fail(&b, NB_ERR_FORMAT, "truncated");
    /* bool not 0/1, scalar and array */
    kv_start(&b, "k", NB_KV_BOOL);
    bb_u8(&b, 2);
    expect_fail(&b, NB_ERR_FORMAT, "bool");
    kv_start(&b, "k", NB_KV_ARRAY);
    bb_u32(&b, NB_KV_BOOL);
    bb_u64(&b, 2);
    bb_u8(&b, 1);
    bb_u8(&b, 7);
    expect_fail(&b, NB_ERR_FORMAT, "bool array element 1");
    /* invalid array element type */
    kv_start(&b, "k", NB_KV_ARRAY);
    bb_u32(&b, 42);
    bb_u64(&b, 0);
    expect_fail(&b, NB_ERR_FORMAT, "element type 42");
    /* huge array counts for each element class */
    static const uint32_t elems[] = {NB_KV_U8, NB_KV_U64, NB_KV_STRING, NB_KV_ARRAY};
    for (size_t k = 0; k < 4; k++) {
        kv_start(&b, "k", NB_KV_ARRAY);
        bb_u32(&b, elems[k]);
        bb_u64(&b, (uint64_t)1 << 60);
        for (int j = 0; j < 16; j++) bb_u8(&b, 0);
        expect_fail(&b, NB_ERR_FORMAT, "exceeds file size");
    }
    /* 17 bytes left: 2 u64 fit, 3 do not */
    kv_start(&b, "k", NB_KV_ARRAY);
    bb_u32(&b, NB_KV_U64);
    bb_u64(&b, 3);
    for (int j = 0; j < 17; j++) bb_u8(&b, 0);
    expect_fail(&b, NB_ERR_FORMAT, "array of 3");
    /* nesting deeper than the limit */
    kv_start(&b, "k", NB_KV_ARRAY);
    for (int d = 0; d < NB_GGUF_MAX_DEPTH; d++) {
        bb_u32(&b, NB_KV_ARRAY);
        bb_u64(&b, 1);
    }
    bb_u32(&b, NB_KV_U8);
    bb_u64(&b, 0);
    expect_fail(&b, NB_ERR_UNSUPPORTED, "nested deeper");
    /* exactly at the limit is fine */
    nb_ctx ctx;
    nbt_ctx(&ctx);
    kv_start(&b, "k", NB_KV_ARRAY);
    for (int d = 1; d < NB_GGUF_MAX_DEPTH; d++) {
        bb_u32(&b, NB_KV_ARRAY);
        bb_u64(&b, 1);
    }
    bb_u32(&b, NB_KV_U8);
    bb_u64(&b, 0);
    ck_assert_msg(parse_mem(b.p, b.n, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    free(b.p);
    memset(&b, 0, sizeof b);
    /* nested array truncated in the middle of a string element */
    kv_start(&b, "k", NB_KV_ARRAY);
    bb_u32(&b, NB_KV_ARRAY);
    bb_u64(&b, 1);
    bb_u32(&b, NB_KV_STRING);
    bb_u64(&b, 1);
    bb_u64(&b, 5);
    bb_put(&b, "ab", 2);
    expect_fail(&b, NB_ERR_FORMAT, "string length 5 exceeds file size");
    /* duplicate key */
    bb_header(&b, 3, 0, 3);
    bb_str(&b, "a");
    bb_u32(&b, NB_KV_U8);
    bb_u8(&b, 1);
    bb_str(&b, "b");
    bb_u32(&b, NB_KV_U8);
    bb_u8(&b, 1);
    bb_str(&b, "a");
    bb_u32(&b, NB_KV_U16);
    bb_u32(&b, 1);
    expect_fail(&b, NB_ERR_FORMAT, "metadata key 'a': duplicate key");
    /* alignment: wrong type, zero, not a power of two */
    kv_start(&b, "general.alignment", NB_KV_U64);
    bb_u64(&b, 32);
    expect_fail(&b, NB_ERR_FORMAT, "must be u32");
    kv_start(&b, "general.alignment", NB_KV_U32);
    bb_u32(&b, 0);
    expect_fail(&b, NB_ERR_FORMAT, "power of two");
    kv_start(&b, "general.alignment", NB_KV_U32);
    bb_u32(&b, 96);
    expect_fail(&b, NB_ERR_FORMAT, "power of two");
    /* an alignment larger than the file: fuzz_gguf's slow input, a 57-byte header
     * claiming 2^30 that every copy padded to 1 GiB (the output must stay bounded
     * by the input) */
    for (uint32_t a = 1u << 30; a >= 64; a >>= 12) {
        kv_start(&b, "general.alignment", NB_KV_U32);
        bb_u32(&b, a);
        expect_fail(&b, NB_ERR_FORMAT, "is larger than the file (57 bytes)");
    }
    /* ... while one the file can hold is fine, even with nothing aligned to it */
    kv_start(&b, "general.alignment", NB_KV_U32);
    bb_u32(&b, 32);
    ck_assert_msg(parse_mem(b.p, b.n, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    free(b.p);
    memset(&b, 0, sizeof b);
    nb_ctx_free(&ctx);
}
END_TEST

/* 1 tensor info after a header with general.alignment = 32 implied. */
static void t_start(bb *b, uint32_t n_tensors) { bb_header(b, 3, n_tensors, 0); }

START_TEST(test_tensor_rules) {
    bb b = {0};
    int64_t ne2[2] = {4, 2};
    /* name too long */
    char name[NB_MAX_NAME + 2];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = 0;
    t_start(&b, 1);
    bb_tinfo(&b, name, 2, ne2, NB_TYPE_F32, 0);
    bb_pad(&b, 32);
    for (int k = 0; k < 32; k++) bb_u8(&b, 0);
    expect_fail(&b, NB_ERR_UNSUPPORTED, "tensor name length 257 exceeds the limit");
    /* exactly NB_MAX_NAME is accepted */
    name[NB_MAX_NAME] = 0;
    nb_ctx ctx;
    nbt_ctx(&ctx);
    t_start(&b, 1);
    bb_tinfo(&b, name, 2, ne2, NB_TYPE_F32, 0);
    bb_pad(&b, 32);
    for (int k = 0; k < 32; k++) bb_u8(&b, 0);
    ck_assert_int_eq(parse_mem(b.p, b.n, &ctx), NB_OK);
    free(b.p);
    memset(&b, 0, sizeof b);
    /* name with NUL */
    t_start(&b, 1);
    bb_u64(&b, 3);
    bb_put(&b, "a\0b", 3);
    bb_u32(&b, 1);
    bb_u64(&b, 4);
    bb_u32(&b, 0);
    bb_u64(&b, 0);
    expect_fail(&b, NB_ERR_FORMAT, "NUL");
    /* n_dims 5 */
    int64_t ne5[5] = {1, 1, 1, 1, 1};
    t_start(&b, 1);
    bb_tinfo(&b, "t", 5, ne5, NB_TYPE_F32, 0);
    expect_fail(&b, NB_ERR_FORMAT, "tensor 't': n_dims 5");
    /* negative ne */
    int64_t neg[2] = {4, -2};
    t_start(&b, 1);
    bb_tinfo(&b, "t", 2, neg, NB_TYPE_F32, 0);
    expect_fail(&b, NB_ERR_FORMAT, "ne[1] = -2 is negative");
    /* element count overflow */
    int64_t big[3] = {(int64_t)1 << 31, (int64_t)1 << 31, 4};
    t_start(&b, 1);
    bb_tinfo(&b, "t", 3, big, NB_TYPE_F32, 0);
    expect_fail(&b, NB_ERR_FORMAT, "element count overflows");
    /* byte size overflow (elements fit in int64, bytes do not) */
    int64_t big2[2] = {(int64_t)1 << 31, (int64_t)1 << 31};
    t_start(&b, 1);
    bb_tinfo(&b, "t", 2, big2, NB_TYPE_F64, 0);
    expect_fail(&b, NB_ERR_FORMAT, "tensor 't'");
    /* unknown type ids: removed ggml ids, far beyond ggml, unused in nibble's range */
    static const uint32_t bad_ids[] = {4, 31, 1000, NB_GGUF_ID_BASE + 1000, UINT32_MAX};
    for (size_t k = 0; k < sizeof bad_ids / sizeof bad_ids[0]; k++) {
        t_start(&b, 1);
        bb_tinfo(&b, "w", 2, ne2, bad_ids[k], 0);
        char want[80];
        snprintf(want, sizeof want, "tensor 'w': unknown tensor type id %u", bad_ids[k]);
        expect_fail(&b, NB_ERR_UNSUPPORTED, want);
    }
    /* ne[0] not a multiple of the block size */
    int64_t q[2] = {16, 1};
    t_start(&b, 1);
    bb_tinfo(&b, "q", 2, q, NB_TYPE_Q8_0, 0);
    expect_fail(&b, NB_ERR_FORMAT, "block size 32");
    /* misaligned offset */
    t_start(&b, 1);
    bb_tinfo(&b, "t", 2, ne2, NB_TYPE_F32, 8);
    bb_pad(&b, 32);
    for (int k = 0; k < 64; k++) bb_u8(&b, 0);
    expect_fail(&b, NB_ERR_FORMAT, "not a multiple of the alignment 32");
    /* data past the end */
    t_start(&b, 1);
    bb_tinfo(&b, "t", 2, ne2, NB_TYPE_F32, 0);
    bb_pad(&b, 32);
    for (int k = 0; k < 31; k++) bb_u8(&b, 0);
    expect_fail(&b, NB_ERR_FORMAT, "past the end of the file");
    /* offset overflow */
    t_start(&b, 1);
    bb_tinfo(&b, "t", 2, ne2, NB_TYPE_F32, UINT64_MAX - 31);
    bb_pad(&b, 32);
    for (int k = 0; k < 32; k++) bb_u8(&b, 0);
    expect_fail(&b, NB_ERR_FORMAT, "past the end of the file");
    /* data section start itself beyond the file (no padding written) */
    t_start(&b, 1);
    int64_t z[1] = {0};
    bb_tinfo(&b, "t", 1, z, NB_TYPE_F32, 0);
    /* the file is 24 + (8+1) + 4+8+4+8 = 57 bytes: data would start at 64 */
    expect_fail(&b, NB_ERR_FORMAT, "past the end");
    /* overlapping tensors (the second starts inside the first) */
    int64_t ne16[1] = {16};
    t_start(&b, 2);
    bb_tinfo(&b, "a", 1, ne16, NB_TYPE_F32, 0);  /* 64 bytes */
    bb_tinfo(&b, "b", 1, ne2, NB_TYPE_F32, 32);  /* [32, 48) */
    bb_pad(&b, 32);
    for (int k = 0; k < 64; k++) bb_u8(&b, 0);
    expect_fail(&b, NB_ERR_FORMAT, "overlaps tensor 'a'");
    /* same offset, declared in reverse order */
    t_start(&b, 2);
    bb_tinfo(&b, "a", 1, ne2, NB_TYPE_F32, 32);
    bb_tinfo(&b, "b", 1, ne16, NB_TYPE_F32, 0);
    bb_pad(&b, 32);
    for (int k = 0; k < 64; k++) bb_u8(&b, 0);
    expect_fail(&b, NB_ERR_FORMAT, "overlaps");
    /* duplicate tensor name */
    t_start(&b, 2);
    bb_tinfo(&b, "a", 1, ne2, NB_TYPE_F32, 0);
    bb_tinfo(&b, "a", 1, ne2, NB_TYPE_F32, 32);
    bb_pad(&b, 32);
    for (int k = 0; k < 64; k++) bb_u8(&b, 0);
    expect_fail(&b, NB_ERR_FORMAT, "tensor 'a': duplicate tensor name");
    /* accepted: out-of-order offsets, touching ranges, empty tensors sharing an offset */
    t_start(&b, 4);
    bb_tinfo(&b, "late", 1, ne2, NB_TYPE_F32, 32);
    bb_tinfo(&b, "early", 1, ne2, NB_TYPE_F32, 0);
    bb_tinfo(&b, "e1", 1, z, NB_TYPE_F32, 32);
    bb_tinfo(&b, "e2", 1, z, NB_TYPE_F32, 64);
    bb_pad(&b, 32);
    for (int k = 0; k < 64; k++) bb_u8(&b, 0);
    ck_assert_msg(parse_mem(b.p, b.n, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    free(b.p);
    nb_ctx_free(&ctx);
}
END_TEST

/* Golden files written by gguf-py (see tests/data/gguf/README.md): read them,
 * check what gguf-py put there, write them back byte-identically. */
START_TEST(test_gguf_py_goldens) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    char path[600];
    snprintf(path, sizeof path, "%s/gguf/pyw_kv_all.gguf", nbt_data_dir());
    nb_model *m = NULL;
    ck_assert_msg(nb_gguf_open(path, &m, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_uint_eq(nb_gguf_alignment(m), 64);
    uint64_t u;
    int64_t i;
    double f;
    ck_assert(nb_kv_get_u64(&m->kv, "t.u64", &u) && u == 18000000000000000000ull);
    ck_assert(nb_kv_get_i64(&m->kv, "t.i64", &i) && i == -9000000000000000000ll);
    ck_assert(nb_kv_get_f64(&m->kv, "t.f32", &f) && f == 0.15625);
    ck_assert_int_eq(nb_kv_get(&m->kv, "t.i16")->type, NB_KV_I16);
    ck_assert_str_eq(nb_kv_get_str(&m->kv, "t.str"), "héllo wörld");
    const nb_kv_value *deep = nb_kv_get(&m->kv, "a.deep");
    ck_assert_ptr_nonnull(deep);
    ck_assert_int_eq(deep->v.arr.elem, NB_KV_ARRAY);
    const nb_kv_value *l2 = deep->v.arr.data;
    ck_assert_uint_eq(deep->v.arr.n, 2);
    ck_assert_int_eq(l2[0].v.arr.elem, NB_KV_ARRAY);
    const nb_kv_value *l3 = l2[0].v.arr.data;
    ck_assert_int_eq(l3[0].v.arr.elem, NB_KV_I32);
    ck_assert_uint_eq(l3[0].v.arr.n, 2);
    ck_assert_int_eq(((const int32_t *)l3[0].v.arr.data)[1], 2);
    const nb_tensor *q = nb_model_find(m, "w.q8_0");
    ck_assert_ptr_nonnull(q);
    ck_assert_int_eq(q->type, NB_TYPE_Q8_0);
    ck_assert_int_eq(q->ne[0], 64);
    ck_assert_int_eq(q->ne[1], 2);
    ck_assert_uint_eq(q->nbytes, 136);
    const nb_tensor *t = nb_model_find(m, "w.f32");
    ck_assert_int_eq(t->ne[0], 4);
    ck_assert_int_eq(t->ne[1], 3);
    ck_assert(((const float *)t->data)[11] == (11 - 5.5f) / 4);
    ck_assert_uint_eq(nb_model_find(m, "w.empty")->nbytes, 0);
    const char *out = nbt_path("pyw_kv_all.out.gguf");
    rewrite_model(m, out);
    files_equal(path, out);
    nb_model_close(m);

    /* v2 reads like v3 and writes back as the v3 original */
    char p2[600], p3[600];
    snprintf(p2, sizeof p2, "%s/gguf/pyw_small_v2.gguf", nbt_data_dir());
    snprintf(p3, sizeof p3, "%s/gguf/pyw_small.gguf", nbt_data_dir());
    ck_assert_msg(nb_model_open(p2, &m, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_uint_eq(m->n_tensors, 2);
    ck_assert_str_eq(m->tensors[0].name, "token_embd.weight");
    ck_assert_int_eq(m->tensors[0].ne[0], 3);
    ck_assert_int_eq(m->tensors[0].ne[1], 2);
    out = nbt_path("pyw_small.out.gguf");
    rewrite_model(m, out);
    files_equal(p3, out);
    nb_model_close(m);
    nb_ctx_free(&ctx);
}
END_TEST

/* A mapped input truncated underneath (core/cleanup.h nb_map_check): reading
 * a tensor past the new end fails with an I/O error naming the file instead
 * of faulting; a file replaced by rename is no concern (the mapping keeps it). */
/* nb_model_find through the name index the readers build: every one of 500
 * tensors (names that share long prefixes, as blk.N.* do) is found at its own
 * slot, absent names are not, and a struct copy with another tensor array (as
 * quant/budget.c makes) or a list changed after indexing still finds by scan. */
START_TEST(test_find_indexed) {
    enum { N = 500 };
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = nbt_path("many.gguf");
    nb_sink *s = NULL;
    ck_assert_int_eq(nb_gguf_sink_create(p, &s, &ctx), NB_OK);
    char name[64];
    int64_t ne[1] = {4};
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "blk.%d.attn_%s.weight", i / 5, (const char *[]){"q", "k", "v", "o", "norm"}[i % 5]);
        ck_assert_int_eq(nb_sink_add_tensor(s, name, NB_TYPE_F32, 1, ne, &ctx), NB_OK);
    }
    ck_assert_int_eq(nb_sink_begin(s, &ctx), NB_OK);
    float zero[4] = {0};
    for (int i = 0; i < N; i++) ck_assert_int_eq(nb_sink_write(s, zero, sizeof zero, &ctx), NB_OK);
    ck_assert_int_eq(nb_sink_commit(s, &ctx), NB_OK);
    nb_sink_free(s);
    nb_model *m = NULL;
    ck_assert_int_eq(nb_model_open(p, &m, &ctx), NB_OK);
    ck_assert_ptr_nonnull(m->index);
    for (size_t i = 0; i < m->n_tensors; i++) ck_assert_ptr_eq(nb_model_find(m, m->tensors[i].name), &m->tensors[i]);
    ck_assert_ptr_null(nb_model_find(m, "blk.100.attn_q.weight"));
    ck_assert_ptr_null(nb_model_find(m, "blk.0.attn_q.weigh"));
    ck_assert_ptr_null(nb_model_find(m, ""));
    nb_model copy = *m;
    copy.tensors = malloc(N * sizeof *copy.tensors);
    ck_assert_ptr_nonnull(copy.tensors);
    memcpy(copy.tensors, m->tensors, N * sizeof *copy.tensors);
    ck_assert_ptr_eq(nb_model_find(&copy, "blk.42.attn_v.weight"), &copy.tensors[212]);
    copy.n_tensors = 100; /* fewer tensors than indexed: no stale hit past the end */
    ck_assert_ptr_null(nb_model_find(&copy, "blk.42.attn_v.weight"));
    free(copy.tensors);
    m->n_tensors--; /* a list changed since indexing is scanned: the last tensor is out of it */
    ck_assert_ptr_null(nb_model_find(m, m->tensors[N - 1].name));
    m->n_tensors++;
    nb_model_close(m);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(test_truncated_underneath) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_synth_opts so;
    nb_synth_opts_init(&so);
    so.dtype = NB_TYPE_F32;
    const char *p = nbt_path("shrinks.gguf");
    ck_assert_msg(nb_synth_write(&so, p, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_model *m = NULL;
    ck_assert_int_eq(nb_model_open(p, &m, &ctx), NB_OK);
    size_t last = m->n_tensors - 1;
    const void *d;
    void *owned;
    ck_assert_int_eq(nb_model_tensor_bytes(m, last, &d, &owned, &ctx), NB_OK);
    free(owned);
    /* replaced by rename: the mapping still reads the old file */
    const char *q = nbt_path("other.gguf");
    nbt_write_file(q, "x", 1);
    ck_assert_int_eq(rename(q, p), 0);
    ck_assert_int_eq(nb_model_tensor_bytes(m, last, &d, &owned, &ctx), NB_OK);
    free(owned);
    nb_model_close(m);
    /* truncated in place */
    ck_assert_msg(nb_synth_write(&so, p, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_int_eq(nb_model_open(p, &m, &ctx), NB_OK);
    last = m->n_tensors - 1;
    ck_assert_int_eq(truncate(p, 4096), 0);
    ck_assert_int_eq(nb_model_tensor_bytes(m, last, &d, &owned, &ctx), NB_ERR_IO);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "shrinks.gguf: input file shrank to 4096 bytes"));
    float *buf = malloc((size_t)m->tensors[last].nbytes);
    ck_assert_int_eq(nb_model_read_tensor(m, last, buf, &ctx), NB_ERR_IO);
    free(buf);
    nb_model_close(m);
    nb_ctx_free(&ctx);
}
END_TEST
static Suite *gguf_suite(void) {
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_roundtrip_all_kv);
    tcase_add_loop_test(tc, test_alignment, 0, 4);
    tcase_add_test(tc, test_writer_bad_alignment);
    tcase_add_test(tc, test_failed_writes_leave_no_file);
    tcase_add_test(tc, test_truncated_underneath);
    tcase_add_test(tc, test_find_indexed);
    tcase_add_test(tc, test_crafted_valid_and_v2);
    tcase_add_test(tc, test_truncation_every_prefix);
    tcase_add_test(tc, test_header_rules);
    tcase_add_test(tc, test_kv_rules);
    tcase_add_test(tc, test_tensor_rules);
    tcase_add_test(tc, test_gguf_py_goldens);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return nbt_run_suite(gguf_suite());
}
