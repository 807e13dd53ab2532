/* tests/core/test_str_file.c — core/str.h (suffixes, prefixes, paths),
 * core/file.h (whole-file reads with a limit) and nb_ctx_threads. */
#include "core/file.h"
#include "core/str.h"
#include "testutil.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

START_TEST(suffix_prefix) {
    ck_assert(nb_str_ends_with("blk.0.attn_q.weight", ".weight"));
    ck_assert(nb_str_ends_with("x", ""));
    ck_assert(!nb_str_ends_with("weight", ".weight"));
    ck_assert(!nb_str_ends_with("model.GGUF", ".gguf"));
    ck_assert(nb_str_ends_with_ci("model.GGUF", ".gguf"));
    ck_assert(!nb_str_ends_with_ci("gguf", ".gguf"));
    ck_assert(nb_str_starts_with("language_model.model.x", "language_model."));
    ck_assert(nb_str_starts_with("abc", ""));
    ck_assert(!nb_str_starts_with("ab", "abc"));
}
END_TEST

/* p (malloc'd) equals want; frees p */
static void expect_path(char *p, const char *want) {
    ck_assert_ptr_nonnull(p);
    ck_assert_str_eq(p, want);
    free(p);
}

START_TEST(paths) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    expect_path(nb_path_join(&ctx, "dir", "config.json"), "dir/config.json");
    expect_path(nb_path_join(&ctx, "dir/", "config.json"), "dir/config.json");
    expect_path(nb_path_join(&ctx, "", "x"), "x");
    expect_path(nb_path_sibling(&ctx, "a/b/model.safetensors.index.json", "model-00001.safetensors"),
                "a/b/model-00001.safetensors");
    expect_path(nb_path_sibling(&ctx, "index.json", "s.safetensors"), "s.safetensors");
    expect_path(nb_path_sibling(&ctx, "/index.json", "s"), "/s");
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(read_file) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *path = nbt_path("read_file.txt");
    static const char text[] = "hello\0world";
    nbt_write_file(path, text, sizeof text - 1);
    char *b;
    size_t n;
    ck_assert_int_eq(nb_read_file(path, 64, &b, &n, &ctx), NB_OK);
    ck_assert_uint_eq(n, sizeof text - 1);
    ck_assert(memcmp(b, text, n) == 0);
    ck_assert_int_eq(b[n], 0); /* NUL after the data */
    free(b);
    /* exactly at the limit is fine, one byte more is not */
    ck_assert_int_eq(nb_read_file(path, sizeof text - 1, &b, &n, &ctx), NB_OK);
    free(b);
    ck_assert_int_eq(nb_read_file(path, sizeof text - 2, &b, &n, &ctx), NB_ERR_RANGE);
    ck_assert_ptr_null(b);
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "read_file.txt"));
    /* empty file */
    const char *empty = nbt_path("empty.txt");
    nbt_write_file(empty, "", 0);
    ck_assert_int_eq(nb_read_file(empty, 0, &b, &n, &ctx), NB_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(b[0], 0);
    free(b);
    /* larger than the first buffer of a stream, and missing files */
    size_t big = (1u << 17) + 3;
    char *data = malloc(big);
    for (size_t i = 0; i < big; i++) data[i] = (char)('a' + i % 26);
    const char *bp = nbt_path("big.txt");
    nbt_write_file(bp, data, big);
    ck_assert_int_eq(nb_read_file(bp, SIZE_MAX, &b, &n, &ctx), NB_OK);
    ck_assert_uint_eq(n, big);
    ck_assert(memcmp(b, data, big) == 0);
    free(b);
    free(data);
    ck_assert_int_eq(nb_read_file(nbt_path("missing.txt"), 10, &b, &n, &ctx), NB_ERR_IO);
    ck_assert_ptr_null(b);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(read_stream) {
    /* a stream (no size up front) grows past its first buffer and is held to the limit */
    nb_ctx ctx;
    nbt_ctx(&ctx);
    char *b;
    size_t n;
    ck_assert_int_eq(nb_read_file("/dev/zero", 100000, &b, &n, &ctx), NB_ERR_RANGE);
    ck_assert_ptr_null(b);
    ck_assert_int_eq(nb_read_file("/dev/null", 10, &b, &n, &ctx), NB_OK);
    ck_assert_uint_eq(n, 0);
    free(b);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(ctx_threads) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ck_assert_int_eq(nb_ctx_threads(NULL), 1);
    ctx.n_threads = 3;
    ck_assert_int_eq(nb_ctx_threads(&ctx), 3);
    ctx.n_threads = 0;
    ck_assert_int_eq(nb_ctx_threads(&ctx), 1);
    ctx.n_threads = -2;
    ck_assert_int_eq(nb_ctx_threads(&ctx), 1);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("core_str_file");
    TCase *tc = tcase_create("core_str_file");
    tcase_add_test(tc, suffix_prefix);
    tcase_add_test(tc, paths);
    tcase_add_test(tc, read_file);
    tcase_add_test(tc, read_stream);
    tcase_add_test(tc, ctx_threads);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
