/* tests/core/test_afile.c — core/afile.h (unique temporaries, the output
 * lock, stale partials, planted files), core/cleanup.h (signal cleanup
 * registry) and core/paths.h (inputs vs outputs). */
#include "core/afile.h"
#include "core/cleanup.h"
#include "core/paths.h"
#include "testutil.h"

#include <check.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int count_glob(const char *pat) {
    glob_t g;
    int n = glob(pat, 0, NULL, &g) == 0 ? (int)g.gl_pathc : 0;
    globfree(&g);
    return n;
}

static void expect_content(const char *path, const char *want) {
    size_t n;
    unsigned char *d = nbt_read_file(path, &n);
    ck_assert_ptr_nonnull(d);
    ck_assert_uint_eq(n, strlen(want));
    ck_assert_mem_eq(d, want, n);
    free(d);
}

START_TEST(unique_temporary_and_lock) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = nbt_path("out.bin");
    char pat[700], lock[700];
    snprintf(pat, sizeof pat, "%s.partial.*", p);
    snprintf(lock, sizeof lock, "%s.lock", p);
    nb_afile a, b;
    ck_assert_int_eq(nb_afile_open(&a, p, true, &ctx), NB_OK);
    ck_assert_int_eq(count_glob(pat), 1);
    ck_assert(nbt_file_exists(lock));
    /* a second writer of the same output fails at once, naming it, and leaves the first alone */
    ck_assert_int_eq(nb_afile_open(&b, p, false, &ctx), NB_ERR_IO);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "another process is writing this file"));
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "out.bin"));
    ck_assert_int_eq(count_glob(pat), 1);
    ck_assert_int_eq(nb_afile_write(&a, "hello", 5, &ctx), NB_OK);
    ck_assert_int_eq(nb_afile_commit(&a, NULL, &ctx), NB_OK);
    expect_content(p, "hello");
    ck_assert_int_eq(count_glob(pat), 0);
    ck_assert(!nbt_file_exists(lock));
    /* after commit the output is free again */
    ck_assert_int_eq(nb_afile_write_text(p, "again", &ctx), NB_OK);
    expect_content(p, "again\n");
    ck_assert(!nbt_file_exists(lock));
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(planted_files_are_not_written_through) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = nbt_path("victim.out");
    const char *target = nbt_path("precious.txt");
    nbt_write_file(target, "keep", 4);
    char name[700];
    /* the old fixed temporary name as a symlink: never opened now */
    snprintf(name, sizeof name, "%s.partial", p);
    ck_assert_int_eq(symlink(target, name), 0);
    /* a stale temporary of a dead writer, and one that is a symlink: removed, target untouched */
    char stale[700], stale_link[700];
    snprintf(stale, sizeof stale, "%s.partial.AAAAAA", p);
    snprintf(stale_link, sizeof stale_link, "%s.partial.BBBBBB", p);
    nbt_write_file(stale, "stale", 5);
    ck_assert_int_eq(symlink(target, stale_link), 0);
    ck_assert_int_eq(nb_afile_write_text(p, "new", &ctx), NB_OK);
    expect_content(p, "new\n");
    expect_content(target, "keep");
    ck_assert(!nbt_file_exists(stale));
    struct stat st;
    ck_assert_int_ne(lstat(stale_link, &st), 0);
    ck_assert_int_eq(lstat(name, &st), 0); /* not ours: left as it was */
    /* a symlink planted at the lock name is refused, not followed */
    const char *q = nbt_path("locked.out");
    snprintf(name, sizeof name, "%s.lock", q);
    ck_assert_int_eq(symlink(target, name), 0);
    ck_assert_int_eq(nb_afile_write_text(q, "x", &ctx), NB_ERR_IO);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "locked.out.lock"));
    ck_assert(!nbt_file_exists(q));
    expect_content(target, "keep");
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(replaced_temporary_is_not_renamed) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = nbt_path("swap.out");
    nb_afile a;
    ck_assert_int_eq(nb_afile_open(&a, p, false, &ctx), NB_OK);
    ck_assert_int_eq(nb_afile_write(&a, "mine", 4, &ctx), NB_OK);
    /* someone with write access to the directory swaps the temporary */
    ck_assert_int_eq(unlink(a.tmp_path), 0);
    nbt_write_file(a.tmp_path, "theirs", 6);
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s", a.tmp_path);
    ck_assert_int_eq(nb_afile_commit(&a, NULL, &ctx), NB_ERR_IO);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "replaced"));
    ck_assert(!nbt_file_exists(p));
    expect_content(tmp, "theirs"); /* not ours: neither renamed nor removed */
    nb_afile_abort(&a);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(cleanup_registry_removes_partials) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = nbt_path("sig.out");
    char pat[700];
    snprintf(pat, sizeof pat, "%s.*", p);
    nb_afile a;
    ck_assert_int_eq(nb_afile_open(&a, p, false, &ctx), NB_OK);
    ck_assert_int_ge(a.cleanup_slot, 0);
    ck_assert_int_eq(count_glob(pat), 2); /* partial + lock */
    nb_cleanup_run();                     /* what the SIGINT/SIGTERM handler does */
    ck_assert_int_eq(count_glob(pat), 0);
    nb_afile_abort(&a);
    /* after commit/abort nothing stays registered */
    ck_assert_int_eq(nb_afile_write_text(p, "x", &ctx), NB_OK);
    nb_cleanup_run();
    expect_content(p, "x\n");
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(paths_inputs_vs_outputs) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *model = nbt_path("m.gguf"), *calib = nbt_path("calib.txt"), *slink = nbt_path("link.gguf");
    const char *hard = nbt_path("hard.gguf"), *fresh = nbt_path("fresh.gguf");
    nbt_write_file(model, "GGUF", 4);
    nbt_write_file(calib, "text", 4);
    ck_assert_int_eq(symlink(model, slink), 0);
    ck_assert_int_eq(link(model, hard), 0);
    const char *in[] = {model, NULL, calib};
    /* an output that is an input, by another name (hard link) */
    const char *out1[] = {fresh, hard};
    ck_assert_int_eq(nb_paths_check(in, 3, out1, 2, &ctx), NB_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "hard.gguf: is the input"));
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "m.gguf"));
    const char *out2[] = {calib};
    ck_assert_int_eq(nb_paths_check(in, 3, out2, 1, &ctx), NB_ERR_INVALID);
    /* a symlink output is replaced by the rename, its target is not: allowed */
    const char *out3[] = {slink, fresh, "-", NULL};
    ck_assert_int_eq(nb_paths_check(in, 3, out3, 4, &ctx), NB_OK);
    /* two outputs that are one, existing or not yet */
    char again[700];
    snprintf(again, sizeof again, "%s/./fresh.gguf", nbt_tmpdir());
    const char *out4[] = {fresh, again};
    ck_assert_int_eq(nb_paths_check(in, 3, out4, 2, &ctx), NB_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "are the same file"));
    /* a directory input stands for the files read from it */
    char dir[700], cfg[760], shard[760], other[760];
    snprintf(dir, sizeof dir, "%s/hf", nbt_tmpdir());
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(shard, sizeof shard, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(other, sizeof other, "%s/old-output.gguf", dir);
    nbt_write_file(cfg, "{}", 2);
    nbt_write_file(shard, "x", 1);
    nbt_write_file(other, "y", 1);
    const char *din[] = {dir};
    const char *o5[] = {cfg}, *o6[] = {shard}, *o7[] = {other};
    ck_assert_int_eq(nb_paths_check(din, 1, o5, 1, &ctx), NB_ERR_INVALID);
    ck_assert_int_eq(nb_paths_check(din, 1, o6, 1, &ctx), NB_ERR_INVALID);
    ck_assert_int_eq(nb_paths_check(din, 1, o7, 1, &ctx), NB_OK); /* a previous output: may be replaced */
    char idx[760];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    nbt_write_file(idx, "{}", 2);
    const char *iin[] = {idx};
    ck_assert_int_eq(nb_paths_check(iin, 1, o6, 1, &ctx), NB_ERR_INVALID);
    ck_assert_int_eq(nb_paths_check(iin, 1, o7, 1, &ctx), NB_OK);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("core_afile");
    TCase *tc = tcase_create("afile");
    tcase_add_test(tc, unique_temporary_and_lock);
    tcase_add_test(tc, planted_files_are_not_written_through);
    tcase_add_test(tc, replaced_temporary_is_not_renamed);
    tcase_add_test(tc, cleanup_registry_removes_partials);
    tcase_add_test(tc, paths_inputs_vs_outputs);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
