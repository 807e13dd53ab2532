/* pipeline/batch.h — `nibble batch`: many recipes over many models,
 * unattended, on one machine or as shards of a Slurm job array.
 *
 * Job list (JSON; paths relative to the file):
 *   { "nibble_batch": 1,
 *     "out": "batch-out",                         root of every job's output directory
 *     "vars": {"CALIB": "calib.txt"},             variables for every recipe
 *     "jobs": [
 *       {"sources": ["models/NAME-GLOB.gguf"], "recipes": ["recipes/a.json", "recipes/b.json"]},
 *       {"source": "x.gguf", "recipe": "r.json", "out": "x-special", "vars": {...}} ] }
 * An entry with "sources" (globs) x "recipes" expands to one job per pair, in
 * that order; a glob that matches nothing is kept as a job that fails
 * ("no file matches"), so a typo is reported, not silently skipped. Job k's
 * output directory is OUT/<source stem>/<recipe file stem> unless "out" is
 * given; two jobs with the same output directory are refused before any runs.
 *
 * Running: each job is `nibble build` (pipeline/build.h) in a child process
 * (one crashing or failing job never stops the others), at most `jobs` at a
 * time, each with threads / jobs threads. Shard I of N runs the jobs k with
 * k % N == I (deterministic: the expansion order). A state file per shard,
 * OUT/.batch/state-I-of-N.json, is rewritten atomically after every job: each
 * job's id, status (pending, running, done, gate-failed, failed,
 * interrupted), message, exit code, input keys (source and recipe: resolved
 * path, size, mtime), output sha256 and size, PPL/KLD and seconds. A rerun
 * skips jobs whose status is done (or gate-failed) with unchanged input keys;
 * the others run again, and `nibble build` resumes their finished stages.
 *
 * SIGINT / SIGTERM (Ctrl-C, scancel, a Slurm time limit): the running
 * children are sent SIGTERM, their jobs are recorded as interrupted, and the
 * call returns NB_ERR_IO with result->interrupted set (the CLI exits 143).
 */
#ifndef NB_PIPELINE_BATCH_H
#define NB_PIPELINE_BATCH_H

#include "core/ctx.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum nb_batch_status {
    NB_JOB_PENDING = 0,
    NB_JOB_RUNNING,
    NB_JOB_DONE,
    NB_JOB_GATE_FAILED,
    NB_JOB_FAILED,
    NB_JOB_INTERRUPTED,
    NB_JOB_SKIPPED_SHARD /* belongs to another shard (only in --status of a partial set) */
} nb_batch_status;

const char *nb_batch_status_name(nb_batch_status s);

typedef struct nb_batch_job {
    char *id;            /* "<source stem>/<recipe stem>" or the entry's "out" */
    char *source, *recipe, *out_dir;
    char *error;         /* a problem found while expanding (missing file ...), or NULL */
    int shard;           /* k % n_shards */
    nb_batch_status status;
    int exit_code;
    char message[512];
    char sha256[65];
    uint64_t bytes;
    double ppl, kld, seconds;
    bool validated;
} nb_batch_job;

typedef struct nb_batch_opts {
    const char *jobs_path;     /* required */
    int jobs;                  /* concurrent jobs (default 1) */
    int threads;               /* total thread budget (default: the context's) */
    int shard, n_shards;       /* default 0 of 1 */
    const char *commit;        /* for the manifests */
    bool quiet;
} nb_batch_opts;

typedef struct nb_batch_result {
    char *out_root;
    size_t n_jobs;             /* all jobs of the list */
    nb_batch_job *job;         /* [n_jobs] */
    size_t n_run, n_done, n_failed, n_gate_failed, n_skipped;
    bool interrupted;
    double seconds;
} nb_batch_result;

/* Expand the job list (no job runs): checks the list, refuses duplicate
 * outputs. Used by nb_batch_run and --status. */
nb_status nb_batch_load(const char *jobs_path, int n_shards, nb_batch_result *r, nb_ctx *ctx);

/* Run this shard's jobs (see above). Returns NB_OK when every job ran (some
 * may have failed: see the counts). */
nb_status nb_batch_run(const nb_batch_opts *o, nb_batch_result *r, nb_ctx *ctx);

/* Read every shard's state file under the list's output root into r (jobs of
 * shards without a state file stay pending). */
nb_status nb_batch_status_read(const char *jobs_path, nb_batch_result *r, nb_ctx *ctx);

void nb_batch_result_free(nb_batch_result *r);

#endif
