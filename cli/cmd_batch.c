/* cli/cmd_batch.c — `nibble batch JOBS.json [--jobs N] [--shard I/N] [--json]`
 * and `nibble batch --status JOBS.json`: many recipes over many models
 * (pipeline/batch.h). */
#include "cli/cli.h"
#include "cli/opts.h"
#include "core/progress.h"
#include "nb_build_info.h"
#include "pipeline/batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static nb_status set_shard(const nb_opt *o, const char *arg, nb_ctx *ctx) {
    int *v = o->dest, i = -1, n = 0;
    char tail = 0;
    if (sscanf(arg, "%d/%d%c", &i, &n, &tail) != 2 || n < 1 || n > 100000 || i < 0 || i >= n)
        return nb_err(ctx, NB_ERR_INVALID, "--shard needs I/N with 0 <= I < N (got '%s')", arg);
    v[0] = i;
    v[1] = n;
    return NB_OK;
}

static void print_table(FILE *f, const nb_batch_result *r) {
    fprintf(f, "%-40s %-12s %12s %10s %10s %8s  %s\n", "job", "status", "size", "PPL", "KLD", "seconds", "message");
    for (size_t i = 0; i < r->n_jobs; i++) {
        const nb_batch_job *b = &r->job[i];
        char sz[32] = "-", ppl[32] = "-", kld[32] = "-";
        if (b->bytes) nb_fmt_bytes((double)b->bytes, sz, sizeof sz);
        if (b->validated) {
            snprintf(ppl, sizeof ppl, "%.4f", b->ppl);
            snprintf(kld, sizeof kld, "%.6f", b->kld);
        }
        fprintf(f, "%-40s %-12s %12s %10s %10s %8.1f  %s\n", b->id, nb_batch_status_name(b->status), sz, ppl, kld,
                b->seconds, b->message);
    }
}

static void print_json(const nb_batch_result *r) {
    printf("{\"out\":\"%s\",\"jobs\":[", r->out_root);
    for (size_t i = 0; i < r->n_jobs; i++) {
        const nb_batch_job *b = &r->job[i];
        printf("%s{\"id\":\"%s\",\"status\":\"%s\",\"exit_code\":%d,\"bytes\":%llu,\"sha256\":\"%s\",\"seconds\":%.3f",
               i ? "," : "", b->id, nb_batch_status_name(b->status), b->exit_code, (unsigned long long)b->bytes,
               b->sha256, b->seconds);
        if (b->validated) printf(",\"ppl\":%.6f,\"kld\":%.8f", b->ppl, b->kld);
        printf("}");
    }
    printf("]}\n");
}

int nb_cmd_batch(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    int jobs = 1, shard[2] = {0, 0};
    bool json = false, status = false, shard_given = false;
    const nb_opt opts[] = {
        {.name = "jobs", .short_name = 'j', .type = NB_OPT_INT, .dest = &jobs, .meta = "N", .lo = 1, .hi = 1024,
         .help = "run N builds at once, each with threads / N threads (default 1)"},
        {.name = "shard", .type = NB_OPT_CALL, .fn = set_shard, .dest = shard, .given = &shard_given, .meta = "I/N",
         .help = "run only the jobs k with k % N == I (default: SLURM_ARRAY_TASK_ID and\n"
                 "SLURM_ARRAY_TASK_COUNT when set, else 0/1)"},
        {.name = "status", .type = NB_OPT_FLAG, .dest = &status,
         .help = "print the combined state of every shard and run nothing"},
        {.name = "json", .type = NB_OPT_FLAG, .dest = &json, .help = "print the summary as JSON on stdout"},
    };
    const nb_cmd_spec spec = {
        .name = "batch",
        .usage = "JOBS.json [--jobs N] [--threads N] [--shard I/N] [--json]\n--status JOBS.json [--json]",
        .about = "Run many recipes over many models (docs/batch.md): each job is a `nibble build` in its own\n"
                 "process; a state file per shard records every job's status, inputs and outputs, so a rerun\n"
                 "skips finished jobs and resumes the others; one failing job never stops the rest.\n"
                 "SIGTERM / SIGINT (scancel, a Slurm time limit) stop the running builds cleanly.",
        NB_OPTS_TABLE(opts),
        .epilogue = "exit codes: 0 every job done, 1 usage (incl. two jobs with one output), 2 bad job list or a job\n"
                    "failed, 4 a job's quality gate failed (and none failed otherwise), 143/130 interrupted",
        NB_OPTS_ONE_POS("JOBS.json"),
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    if (rc != NB_OPTS_RUN) goto done;
    nb_batch_result r;
    memset(&r, 0, sizeof r);
    if (status) {
        nb_status st = nb_batch_status_read(args.pos[0], &r, &ctx);
        if (st != NB_OK) rc = nb_cli_fail("batch", &ctx, st);
        else {
            if (json) print_json(&r);
            else print_table(stdout, &r);
            rc = NB_EXIT_OK;
        }
        nb_batch_result_free(&r);
        goto done;
    }
    if (!shard_given) {
        const char *id = getenv("SLURM_ARRAY_TASK_ID"), *cnt = getenv("SLURM_ARRAY_TASK_COUNT"),
                   *mn = getenv("SLURM_ARRAY_TASK_MIN");
        if (id && cnt) {
            shard[0] = atoi(id) - (mn ? atoi(mn) : 0);
            shard[1] = atoi(cnt);
        }
    }
    nb_batch_opts bo = {.jobs_path = args.pos[0], .jobs = jobs, .threads = ctx.n_threads, .shard = shard[0],
                        .n_shards = shard[1] > 0 ? shard[1] : 1, .commit = NB_BUILD_COMMIT, .quiet = ctx.quiet};
    nb_status st = nb_batch_run(&bo, &r, &ctx);
    if (r.n_jobs) {
        if (json) print_json(&r);
        else if (!ctx.quiet) print_table(stdout, &r);
    }
    if (r.interrupted) {
        fprintf(stderr, "nibble batch: %s\n", nb_errmsg(&ctx));
        rc = 128 + 15;
    } else if (st != NB_OK) {
        rc = nb_cli_fail("batch", &ctx, st);
    } else {
        if (!ctx.quiet)
            fprintf(stderr, "nibble batch: shard %d/%d: %zu jobs run now; %zu done (%zu of them in earlier runs), "
                    "%zu failed, %zu gate failed; %.1f s\n", bo.shard, bo.n_shards, r.n_run, r.n_done, r.n_skipped,
                    r.n_failed, r.n_gate_failed, r.seconds);
        rc = r.n_failed ? NB_EXIT_INPUT : r.n_gate_failed ? NB_EXIT_GATE : NB_EXIT_OK;
    }
    nb_batch_result_free(&r);
done:
    nb_ctx_free(&ctx);
    return rc;
}
