/* tests/testutil.h — small helpers shared by the Check suites. */
#ifndef NB_TESTUTIL_H
#define NB_TESTUTIL_H

#include "core/ctx.h"
#include "quant/plan.h"

#include <check.h>

#include <stddef.h>
#include <stdint.h>

/* A fresh temporary directory for this test process (created once, removed at exit). */
const char *nbt_tmpdir(void);
/* "<tmpdir>/<name>" in a static rotating buffer (8 slots). */
const char *nbt_path(const char *name);
/* Write bytes to a file; aborts the test on failure. */
void nbt_write_file(const char *path, const void *data, size_t n);
/* Read a whole file (malloc'd; *n receives the size); NULL if missing. */
unsigned char *nbt_read_file(const char *path, size_t *n);
int nbt_file_exists(const char *path);
/* True when a temporary of output `path` (core/afile.h: PATH.partial.XXXXXX) exists. */
int nbt_partial_exists(const char *path);
/* Directory of checked-in test data (env NB_TEST_DATA or tests/data). */
const char *nbt_data_dir(void);
/* A context with 1 thread and quiet logging. */
void nbt_ctx(nb_ctx *ctx);
/* Deterministic pseudo-random numbers (splitmix64). */
uint64_t nbt_rand_u64(uint64_t *state);
float nbt_rand_normal(uint64_t *state);

/* nb_plan_make_file with a mix (and optionally pure / no_fallback / has_importance from o). */
nb_status nbt_plan(const char *src, const nb_mix_info *mix, nb_plan *p, nb_ctx *ctx);
nb_status nbt_plan_opts(const char *src, const nb_plan_opts *o, nb_plan *p, nb_ctx *ctx);

/* Run a Check suite (CK_NORMAL output); returns the process exit code (0: all passed). */
int nbt_run_suite(Suite *s);

#endif
