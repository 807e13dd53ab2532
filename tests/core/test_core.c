/* core: errors, type table, sha256, atomic files. */
#include "core/afile.h"
#include "core/checked.h"
#include "core/sha256.h"
#include "core/str.h"
#include "core/types.h"
#include "formats/json_strict.h"
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

START_TEST(errors_compose) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ck_assert_int_eq(nb_err(&ctx, NB_ERR_FORMAT, "tensor '%s': bad", "x"), NB_ERR_FORMAT);
    ck_assert_int_eq(nb_err_prefix(&ctx, "%s", "m.gguf"), NB_ERR_FORMAT);
    ck_assert_str_eq(nb_errmsg(&ctx), "m.gguf: tensor 'x': bad");
    ck_assert_int_eq(nb_err_errno(&ctx, 28 /* ENOSPC */, "out.gguf"), NB_ERR_NOSPACE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "disk full"));
    nb_err_clear(&ctx);
    ck_assert_str_eq(nb_errmsg(&ctx), "");
    /* a prefix the message already starts with is not doubled */
    nb_err(&ctx, NB_ERR_FORMAT, "%s: truncated", "m.gguf");
    nb_err_prefix(&ctx, "%s", "m.gguf");
    ck_assert_str_eq(nb_errmsg(&ctx), "m.gguf: truncated");
    nb_err_prefix(&ctx, "%s", "m.gg");
    ck_assert_str_eq(nb_errmsg(&ctx), "m.gg: m.gguf: truncated");
    /* terminal controls quoted from a file are made visible, in messages and text */
    nb_err(&ctx, NB_ERR_FORMAT, "tensor '%s'", "a\x1b]0;pwn\x07" "b\xc2\x9b" "2Jc\x7f");
    ck_assert_str_eq(nb_errmsg(&ctx), "tensor 'a\\x1b]0;pwn\\x07b\\xc2\\x9b2Jc\\x7f'");
    char e[16];
    ck_assert_str_eq(nb_str_escape_ctl(e, sizeof e, "ok\tline\n\xc3\xa9"), "ok\tline\n\xc3\xa9"); /* é stays */
    ck_assert_str_eq(nb_str_escape_ctl(e, 8, "ab\x1b\x1b"), "ab\\x1b"); /* truncated, never a half escape */
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(type_table) {
    /* ggml ids map to themselves; names round trip; sizes are those of ggml-common.h */
    static const struct { nb_type t; unsigned bs, ts; } known[] = {
        {NB_TYPE_F32, 1, 4}, {NB_TYPE_F16, 1, 2}, {NB_TYPE_Q4_0, 32, 18}, {NB_TYPE_Q8_0, 32, 34},
        {NB_TYPE_Q4_K, 256, 144}, {NB_TYPE_Q6_K, 256, 210}, {NB_TYPE_IQ4_XS, 256, 136},
        {NB_TYPE_BF16, 1, 2}, {NB_TYPE_MXFP4, 32, 17}};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
        const nb_type_traits *tr = nb_type_get(known[i].t);
        ck_assert_ptr_nonnull(tr);
        ck_assert_uint_eq(tr->block_size, known[i].bs);
        ck_assert_uint_eq(tr->type_size, known[i].ts);
    }
    int n = 0;
    for (int t = 0; t < NB_TYPE_COUNT; t++) {
        const nb_type_traits *tr = nb_type_get((nb_type)t);
        if (!tr) continue;
        n++;
        nb_type back;
        ck_assert(nb_type_from_name(tr->name, &back));
        ck_assert_int_eq(back, t);
        if (tr->gguf_id >= 0) {
            ck_assert(nb_type_from_gguf_id((uint64_t)tr->gguf_id, &back));
            ck_assert_int_eq(back, t);
            if (t < NB_GGML_TYPE_COUNT) ck_assert_int_eq(tr->gguf_id, t);
            else ck_assert(tr->gguf_id >= (int64_t)NB_GGUF_ID_BASE);
        }
        ck_assert_uint_gt(tr->block_size, 0);
        ck_assert_uint_gt(tr->type_size, 0);
    }
    ck_assert_int_ge(n, 40);
    ck_assert_ptr_null(nb_type_get((nb_type)4)); /* removed ggml id */
    ck_assert_ptr_null(nb_type_get((nb_type)1000));
    nb_type t;
    ck_assert(nb_type_from_name("Q4_K", &t) && t == NB_TYPE_Q4_K);
    ck_assert(!nb_type_from_name("q4_kk", &t));
    ck_assert(nb_type_from_st_dtype("BF16", &t) && t == NB_TYPE_BF16);
    ck_assert(!nb_type_from_st_dtype("F4", &t));
    nb_ctx ctx;
    nbt_ctx(&ctx);
    uint64_t b;
    ck_assert_int_eq(nb_type_row_bytes(NB_TYPE_Q4_K, 512, &b, &ctx, "t"), NB_OK);
    ck_assert_uint_eq(b, 288);
    ck_assert_int_eq(nb_type_row_bytes(NB_TYPE_Q4_K, 100, &b, &ctx, "blk.0.x"), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "blk.0.x"));
    ck_assert_int_eq(nb_type_row_bytes(NB_TYPE_F32, UINT64_MAX / 2, &b, &ctx, "t"), NB_ERR_RANGE);
    ck_assert(nb_type_bpw(NB_TYPE_Q4_0) == 4.5);
    nb_ctx_free(&ctx);
}
END_TEST

/* The table's columns beyond sizes: f32 views of every storage type, INT4
 * group/asym and its lookup, GPTQ's grid. */
START_TEST(type_table_columns) {
    for (int t = 0; t < NB_TYPE_COUNT; t++) {
        const nb_type_traits *tr = nb_type_get((nb_type)t);
        if (!tr) continue;
        if (tr->to_float) ck_assert_ptr_eq(tr->to_f32, tr->to_float);
        if (tr->group) {
            ck_assert_uint_eq(tr->group, tr->block_size);
            ck_assert_int_eq(nb_type_int4_find(tr->asym, (int)tr->group), t);
            ck_assert_ptr_nonnull(strstr(tr->name, tr->asym ? "int4_asym_g" : "int4_sym_g"));
        } else {
            ck_assert(!tr->asym);
            ck_assert_ptr_null(strstr(tr->name, "int4"));
        }
        if (tr->set_code) {
            ck_assert_uint_ge(tr->grid_levels, 2);
            ck_assert_uint_le(tr->grid_levels, 256);
            ck_assert_uint_gt(tr->grid_sub, 0);
            ck_assert_uint_eq(tr->block_size % tr->grid_sub, 0);
            ck_assert(tr->to_float && tr->quantize);
        }
    }
    ck_assert_int_eq(nb_type_int4_find(false, 32), NB_TYPE_INT4_SYM_G32);
    ck_assert_int_eq(nb_type_int4_find(true, 128), NB_TYPE_INT4_ASYM_G128);
    ck_assert_int_eq(nb_type_int4_find(false, 16), NB_TYPE_COUNT);
    ck_assert_int_eq(nb_type_int4_find(true, 0), NB_TYPE_COUNT);
    ck_assert_int_eq(nb_type_int4_find(true, -64), NB_TYPE_COUNT);
    ck_assert_uint_eq(nb_type_get(NB_TYPE_Q8_0)->grid_levels, 255);
    ck_assert_ptr_null(nb_type_get(NB_TYPE_NF4_DQ)->set_code); /* tensor-wide scales: no GPTQ */

    /* integer, bool and FP8 elements: readable as f32 (from unaligned bytes),
     * but not types the pipeline computes with (no to_float) */
    unsigned char buf[1 + 2 * 8];
    float f[2];
#define CHECK_INT(type, T, a, b)                                                                      \
    do {                                                                                             \
        const nb_type_traits *tr = nb_type_get(type);                                               \
        T v[2] = {a, b};                                                                             \
        memcpy(buf + 1, v, sizeof v);                                                                \
        ck_assert_ptr_nonnull(tr->to_f32);                                                           \
        ck_assert_ptr_null(tr->to_float);                                                            \
        tr->to_f32(buf + 1, f, 2);                                                                   \
        ck_assert(f[0] == (float)(a) && f[1] == (float)(b));                                         \
    } while (0)
    CHECK_INT(NB_TYPE_I8, int8_t, -128, 127);
    CHECK_INT(NB_TYPE_I16, int16_t, -300, 32767);
    CHECK_INT(NB_TYPE_I32, int32_t, -70000, 16777216);
    CHECK_INT(NB_TYPE_I64, int64_t, -5, 1099511627776);
    CHECK_INT(NB_TYPE_U8, uint8_t, 0, 255);
    CHECK_INT(NB_TYPE_BOOL, uint8_t, 0, 1);
    CHECK_INT(NB_TYPE_U16, uint16_t, 1, 65535);
    CHECK_INT(NB_TYPE_U32, uint32_t, 7, 4294967295u);
    CHECK_INT(NB_TYPE_U64, uint64_t, 9, 1ull << 40);
#undef CHECK_INT
    const uint8_t e4m3[2] = {0x38, 0xC0}, e5m2[2] = {0x3C, 0xC0}; /* 1, -2 */
    nb_type_get(NB_TYPE_F8_E4M3)->to_f32(e4m3, f, 2);
    ck_assert(f[0] == 1.0f && f[1] == -2.0f);
    nb_type_get(NB_TYPE_F8_E5M2)->to_f32(e5m2, f, 2);
    ck_assert(f[0] == 1.0f && f[1] == -2.0f);
    ck_assert_ptr_null(nb_type_get(NB_TYPE_F8_E4M3)->to_float);
    const double d[2] = {0.5, -3.25};
    nb_type_get(NB_TYPE_F64)->to_f32(d, f, 2);
    ck_assert(f[0] == 0.5f && f[1] == -3.25f);
}
END_TEST

START_TEST(checked_math) {
    uint64_t r;
    ck_assert(nb_mul_u64(1ull << 32, 1ull << 31, &r) && r == 1ull << 63);
    ck_assert(!nb_mul_u64(1ull << 32, 1ull << 32, &r));
    ck_assert(!nb_add_u64(UINT64_MAX, 1, &r));
    ck_assert(nb_align_u64(33, 32, &r) && r == 64);
    ck_assert(!nb_align_u64(UINT64_MAX - 3, 32, &r));
}
END_TEST

static void hex_of(const char *msg, size_t n, char out[65]) {
    nb_sha256 s;
    unsigned char d[32];
    nb_sha256_init(&s);
    nb_sha256_update(&s, msg, n);
    nb_sha256_final(&s, d);
    nb_sha256_hex(d, out);
}

START_TEST(sha256_vectors) {
    char h[65];
    hex_of("", 0, h);
    ck_assert_str_eq(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hex_of("abc", 3, h);
    ck_assert_str_eq(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(m, strlen(m), h);
    ck_assert_str_eq(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* one million 'a', fed in odd-sized pieces */
    nb_sha256 s;
    nb_sha256_init(&s);
    char a[997];
    memset(a, 'a', sizeof a);
    size_t left = 1000000;
    while (left) { size_t k = left < sizeof a ? left : sizeof a; nb_sha256_update(&s, a, k); left -= k; }
    unsigned char d[32];
    nb_sha256_final(&s, d);
    nb_sha256_hex(d, h);
    ck_assert_str_eq(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
END_TEST

START_TEST(afile_commit_and_abort) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = nbt_path("out.bin");
    nb_afile f;
    ck_assert_int_eq(nb_afile_open(&f, p, true, &ctx), NB_OK);
    ck_assert(nbt_partial_exists(p));
    ck_assert(!nbt_file_exists(p));
    static unsigned char big[3u << 20];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (unsigned char)(i * 7);
    ck_assert_int_eq(nb_afile_write(&f, "abc", 3, &ctx), NB_OK);
    ck_assert_int_eq(nb_afile_write(&f, big, sizeof big, &ctx), NB_OK);
    ck_assert_int_eq(nb_afile_zeros(&f, 5, &ctx), NB_OK);
    unsigned char d[32], d2[32];
    ck_assert_int_eq(nb_afile_commit(&f, d, &ctx), NB_OK);
    ck_assert(nbt_file_exists(p));
    ck_assert(!nbt_partial_exists(p));
    size_t n;
    unsigned char *back = nbt_read_file(p, &n);
    ck_assert_uint_eq(n, 3 + sizeof big + 5);
    ck_assert(memcmp(back, "abc", 3) == 0 && memcmp(back + 3, big, sizeof big) == 0);
    ck_assert_int_eq(nb_sha256_file(p, d2, &ctx), NB_OK);
    ck_assert(memcmp(d, d2, 32) == 0);
    free(back);
    /* abort leaves nothing */
    const char *q = nbt_path("aborted.bin");
    ck_assert_int_eq(nb_afile_open(&f, q, false, &ctx), NB_OK);
    ck_assert_int_eq(nb_afile_write(&f, "x", 1, &ctx), NB_OK);
    nb_afile_abort(&f);
    ck_assert(!nbt_file_exists(q) && !nbt_partial_exists(q));
    /* a missing directory fails cleanly with an I/O error naming the path */
    ck_assert_int_eq(nb_afile_open(&f, nbt_path("no/such/dir/x.bin"), false, &ctx), NB_ERR_IO);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "no/such/dir"));
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(afile_write_failure_removes_partial) {
    /* A file-size limit makes write() fail part-way, as a full disk would. */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {1 << 20, 1 << 20};
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = nbt_path("limited.bin");
    nb_afile f;
    ck_assert_int_eq(nb_afile_open(&f, p, false, &ctx), NB_OK);
    static unsigned char buf[4u << 20];
    nb_status st = nb_afile_write(&f, buf, sizeof buf, &ctx);
    if (st == NB_OK) st = nb_afile_commit(&f, NULL, &ctx);
    else nb_afile_abort(&f);
    ck_assert_int_ne(st, NB_OK);
    ck_assert(!nbt_file_exists(p));
    ck_assert(!nbt_partial_exists(p));
    nb_ctx_free(&ctx);
}
END_TEST

/* cJSON allocates through the fault hook once nb_json_use_hooked_allocator has
 * run: its first allocation failing fails the parse and leaves nb_alloc_failed
 * set (what the CLI turns into "out of memory", exit 3); the next parse works.
 * Needs a process of its own (Check's fork mode): the hook counts per process. */
START_TEST(json_allocations_hooked) {
#ifdef NB_FAULT_INJECTION
    const char *fork_mode = getenv("CK_FORK");
    if (fork_mode && !strcmp(fork_mode, "no")) return;
    setenv("NIBBLE_FAULT_ALLOC", "1", 1);
    nb_json_use_hooked_allocator();
    nb_json_use_hooked_allocator(); /* once is enough; again is harmless */
    ck_assert(!nb_alloc_failed());
    ck_assert_ptr_null(cJSON_Parse("{\"a\": [1, 2, 3]}"));
    ck_assert(nb_alloc_failed());
    cJSON *j = cJSON_Parse("{\"a\": [1, 2, 3]}");
    ck_assert_ptr_nonnull(j);
    char *txt = cJSON_PrintUnformatted(j); /* released with free(), as callers do */
    ck_assert_str_eq(txt, "{\"a\":[1,2,3]}");
    free(txt);
    cJSON_Delete(j);
#endif
}
END_TEST

int main(void) {
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, errors_compose);
    tcase_add_test(tc, type_table);
    tcase_add_test(tc, type_table_columns);
    tcase_add_test(tc, checked_math);
    tcase_add_test(tc, sha256_vectors);
    tcase_add_test(tc, afile_commit_and_abort);
    tcase_add_test(tc, afile_write_failure_removes_partial);
    tcase_add_test(tc, json_allocations_hooked);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
