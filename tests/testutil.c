#include "testutil.h"

#include <check.h>
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_tmp[256];

static void rm_tmp(void) {
    if (!g_tmp[0]) return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) { /* best effort */ }
}

const char *nbt_tmpdir(void) {
    if (!g_tmp[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(g_tmp, sizeof g_tmp, "%s/nbtest-XXXXXX", base ? base : "/tmp");
        ck_assert_ptr_nonnull(mkdtemp(g_tmp));
        atexit(rm_tmp);
    }
    return g_tmp;
}

const char *nbt_path(const char *name) {
    static char bufs[8][512];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, 512, "%s/%s", nbt_tmpdir(), name);
    return b;
}

void nbt_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

unsigned char *nbt_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

int nbt_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int nbt_partial_exists(const char *path) {
    char pat[1100];
    snprintf(pat, sizeof pat, "%s.partial*", path);
    glob_t g;
    int found = glob(pat, 0, NULL, &g) == 0 && g.gl_pathc > 0;
    globfree(&g);
    return found;
}

const char *nbt_data_dir(void) {
    const char *d = getenv("NB_TEST_DATA");
    return d ? d : "tests/data";
}

void nbt_ctx(nb_ctx *ctx) {
    nb_ctx_init(ctx);
    ctx->n_threads = 1;
    ctx->quiet = true;
    ctx->log_level = NB_LOG_ERROR;
}

uint64_t nbt_rand_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float nbt_rand_normal(uint64_t *s) {
    double u1 = ((double)(nbt_rand_u64(s) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = (double)(nbt_rand_u64(s) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

int nbt_run_suite(Suite *s) {
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

nb_status nbt_plan(const char *src, const nb_mix_info *mix, nb_plan *p, nb_ctx *ctx) {
    nb_plan_opts o = {.mix = mix};
    return nb_plan_make_file(src, &o, p, ctx);
}

nb_status nbt_plan_opts(const char *src, const nb_plan_opts *o, nb_plan *p, nb_ctx *ctx) {
    return nb_plan_make_file(src, o, p, ctx);
}
