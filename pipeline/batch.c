/* pipeline/batch.c — many builds, unattended (see pipeline/batch.h). */
#include "pipeline/batch.h"

#include "core/afile.h"
#include "core/file.h"
#include "core/sha256.h"
#include "core/str.h"
#include "pipeline/build.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *nb_batch_status_name(nb_batch_status s) {
    static const char *const n[] = {"pending", "running", "done", "gate-failed", "failed", "interrupted", "other-shard"};
    return (unsigned)s < sizeof n / sizeof *n ? n[s] : "?";
}

void nb_batch_result_free(nb_batch_result *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_jobs; i++) {
        nb_batch_job *j = &r->job[i];
        free(j->id); free(j->source); free(j->recipe); free(j->out_dir); free(j->error);
    }
    free(r->job);
    free(r->out_root);
    memset(r, 0, sizeof *r);
}

/* ---- expansion ------------------------------------------------------------------------------------------------ */

/* "dir/name.ext" -> "name" */
static void stem(const char *path, char *out, size_t cap) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(out, cap, "%s", b);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = 0;
    if (!strcmp(out, "") || !strcmp(out, ".")) snprintf(out, cap, "model");
}

static char *anchored(const char *base, const char *p, nb_ctx *ctx) {
    return p[0] == '/' ? nb_strdup(ctx, p) : nb_path_sibling(ctx, base, p);
}

static nb_status add_job(nb_batch_result *r, size_t *cap, const char *source, const char *recipe, const char *out,
                         const char *error, nb_ctx *ctx) {
    if (r->n_jobs == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        nb_batch_job *nj = nb_realloc(NULL, r->job, nc * sizeof *nj, "batch");
        if (!nj) return nb_err(ctx, NB_ERR_NOMEM, "out of memory");
        r->job = nj;
        *cap = nc;
    }
    nb_batch_job *j = &r->job[r->n_jobs];
    memset(j, 0, sizeof *j);
    char s1[256], s2[256], id[600];
    stem(source, s1, sizeof s1);
    stem(recipe, s2, sizeof s2);
    snprintf(id, sizeof id, "%s/%s", s1, s2);
    j->id = nb_strdup(ctx, out ? out : id);
    j->source = nb_strdup(ctx, source);
    j->recipe = nb_strdup(ctx, recipe);
    j->out_dir = nb_path_join(ctx, r->out_root, out ? out : id);
    j->error = error ? nb_strdup(ctx, error) : NULL;
    r->n_jobs++;
    if (!j->id || !j->source || !j->recipe || !j->out_dir || (error && !j->error)) return NB_ERR_NOMEM;
    return NB_OK;
}

/* A string or an array of strings under `key` (the singular or plural spelling). */
static nb_status strings(const char *what, const cJSON *e, const char *one, const char *many, size_t k,
                         const cJSON **arr, const cJSON **single, nb_ctx *ctx) {
    *single = cJSON_GetObjectItemCaseSensitive(e, one);
    *arr = cJSON_GetObjectItemCaseSensitive(e, many);
    NB_RETURN_IF(ctx, (*single != NULL) == (*arr != NULL), NB_ERR_FORMAT, "%s: jobs[%zu]: give \"%s\" or \"%s\"", what,
                 k, one, many);
    if (*single && !cJSON_IsString(*single))
        return nb_err(ctx, NB_ERR_FORMAT, "%s: jobs[%zu].%s: expected a string", what, k, one);
    if (*arr) {
        NB_RETURN_IF(ctx, !cJSON_IsArray(*arr) || !(*arr)->child, NB_ERR_FORMAT,
                     "%s: jobs[%zu].%s: expected a non-empty array of strings", what, k, many);
        for (const cJSON *x = (*arr)->child; x; x = x->next)
            NB_RETURN_IF(ctx, !cJSON_IsString(x), NB_ERR_FORMAT, "%s: jobs[%zu].%s: expected strings", what, k, many);
    }
    return NB_OK;
}

nb_status nb_batch_load(const char *path, int n_shards, nb_batch_result *r, nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    char *text = NULL;
    size_t n = 0, cap = 0;
    NB_TRY(nb_read_file(path, 16u << 20, &text, &n, ctx));
    cJSON *j = cJSON_Parse(text);
    free(text);
    NB_RETURN_IF(ctx, !j, NB_ERR_FORMAT, "%s: not valid JSON", path);
    nb_status st = NB_OK;
    static const char *const k_top[] = {"nibble_batch", "out", "vars", "jobs", NULL};
    static const char *const k_job[] = {"source", "sources", "recipe", "recipes", "out", "vars", NULL};
    const cJSON *v, *jobs;
    size_t k = 0;
    if (!cJSON_IsObject(j)) NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: a job list is a JSON object", path);
    for (const cJSON *c = j->child; c; c = c->next) {
        bool ok = false;
        for (size_t q = 0; k_top[q] && !ok; q++) ok = !strcmp(c->string, k_top[q]);
        if (!ok) NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: %s: unknown key", path, c->string);
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "nibble_batch");
    if (!cJSON_IsNumber(v) || v->valuedouble != 1) NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: nibble_batch: must be 1", path);
    v = cJSON_GetObjectItemCaseSensitive(j, "out");
    if (v && !cJSON_IsString(v)) NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: out: expected a string", path);
    r->out_root = anchored(path, v ? v->valuestring : "batch-out", ctx);
    if (!r->out_root) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "out of memory");
    jobs = cJSON_GetObjectItemCaseSensitive(j, "jobs");
    if (!cJSON_IsArray(jobs)) NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: jobs: expected an array", path);
    for (const cJSON *e = jobs->child; e && st == NB_OK; e = e->next, k++) {
        if (!cJSON_IsObject(e)) NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: jobs[%zu]: expected an object", path, k);
        for (const cJSON *c = e->child; c; c = c->next) {
            bool ok = false;
            for (size_t q = 0; k_job[q] && !ok; q++) ok = !strcmp(c->string, k_job[q]);
            if (!ok) NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: jobs[%zu].%s: unknown key", path, k, c->string);
        }
        const cJSON *sa, *s1, *ra, *r1, *o = cJSON_GetObjectItemCaseSensitive(e, "out");
        NB_CHECK_GOTO(st, strings(path, e, "source", "sources", k, &sa, &s1, ctx), out);
        NB_CHECK_GOTO(st, strings(path, e, "recipe", "recipes", k, &ra, &r1, ctx), out);
        if (o && (!cJSON_IsString(o) || (sa && cJSON_GetArraySize(sa) > 1) || (ra && cJSON_GetArraySize(ra) > 1)))
            NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: jobs[%zu].out: one string, for one source and one recipe",
                         path, k);
        const cJSON *srcs = sa ? sa->child : s1, *recs = ra ? ra->child : r1;
        for (const cJSON *sx = srcs; sx && st == NB_OK; sx = sa ? sx->next : NULL) {
            char *pat = anchored(path, sx->valuestring, ctx);
            if (!pat) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "out of memory");
            glob_t g;
            int grc = glob(pat, GLOB_NOCHECK | GLOB_BRACE, NULL, &g);
            for (size_t gi = 0; grc == 0 && gi < g.gl_pathc && st == NB_OK; gi++) {
                struct stat sb;
                const char *src = g.gl_pathv[gi];
                const char *err = stat(src, &sb) != 0 ? "no file matches" : NULL;
                for (const cJSON *rx = recs; rx && st == NB_OK; rx = ra ? rx->next : NULL) {
                    char *rec = anchored(path, rx->valuestring, ctx);
                    if (!rec) { st = NB_ERR_NOMEM; break; }
                    const char *rerr = err ? err : stat(rec, &sb) != 0 ? "recipe not found" : NULL;
                    st = add_job(r, &cap, src, rec, o ? o->valuestring : NULL, rerr, ctx);
                    free(rec);
                }
            }
            if (grc == 0) globfree(&g);
            free(pat);
        }
    }
    if (st != NB_OK) goto out;
    for (size_t a = 0; a < r->n_jobs; a++) {
        r->job[a].shard = n_shards > 0 ? (int)(a % (size_t)n_shards) : 0;
        for (size_t b2 = 0; b2 < a; b2++)
            if (!strcmp(r->job[a].out_dir, r->job[b2].out_dir))
                NB_FAIL_GOTO(st, out, ctx, NB_ERR_INVALID, "%s: jobs %zu (%s) and %zu (%s) write the same output %s",
                             path, b2, r->job[b2].source, a, r->job[a].source, r->job[a].out_dir);
    }
out:
    cJSON_Delete(j);
    return st;
}

/* ---- state files -------------------------------------------------------------------------------------------- */

static void ident(const char *path, char *out, size_t cap) {
    char real[PATH_MAX];
    struct stat sb;
    if (!realpath(path, real) || stat(real, &sb) != 0) { snprintf(out, cap, "missing:%s", path); return; }
    snprintf(out, cap, "%s|%lld|%lld.%09ld", real, (long long)sb.st_size, (long long)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec);
}

static char *state_path(const nb_batch_result *r, int shard, int n_shards, nb_ctx *ctx) {
    char name[96];
    snprintf(name, sizeof name, ".batch/state-%d-of-%d.json", shard, n_shards);
    return nb_path_join(ctx, r->out_root, name);
}

static nb_status write_state(const nb_batch_result *r, int shard, int n_shards, nb_ctx *ctx) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return nb_err(ctx, NB_ERR_NOMEM, "out of memory");
    cJSON_AddNumberToObject(j, "shard", shard);
    cJSON_AddNumberToObject(j, "n_shards", n_shards);
    cJSON *a = cJSON_AddArrayToObject(j, "jobs");
    for (size_t i = 0; i < r->n_jobs && a; i++) {
        const nb_batch_job *b = &r->job[i];
        if (b->shard != shard) continue;
        char k1[PATH_MAX + 64], k2[PATH_MAX + 64];
        ident(b->source, k1, sizeof k1);
        ident(b->recipe, k2, sizeof k2);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "id", b->id);
        cJSON_AddStringToObject(e, "source", b->source);
        cJSON_AddStringToObject(e, "recipe", b->recipe);
        cJSON_AddStringToObject(e, "out", b->out_dir);
        cJSON_AddStringToObject(e, "source_key", k1);
        cJSON_AddStringToObject(e, "recipe_key", k2);
        cJSON_AddStringToObject(e, "status", nb_batch_status_name(b->status));
        cJSON_AddNumberToObject(e, "exit_code", b->exit_code);
        cJSON_AddStringToObject(e, "message", b->message);
        if (b->sha256[0]) cJSON_AddStringToObject(e, "sha256", b->sha256);
        cJSON_AddNumberToObject(e, "bytes", (double)b->bytes);
        if (b->validated) {
            cJSON_AddNumberToObject(e, "ppl", b->ppl);
            cJSON_AddNumberToObject(e, "kld", b->kld);
        }
        cJSON_AddNumberToObject(e, "seconds", b->seconds);
        cJSON_AddItemToArray(a, e);
    }
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    char *p = state_path(r, shard, n_shards, ctx);
    nb_status st = s && p ? nb_afile_write_text(p, s, ctx) : nb_err(ctx, NB_ERR_NOMEM, "out of memory");
    free(s);
    free(p);
    return st;
}

/* Fill jobs from one state file (by id); with `check_keys`, only jobs whose
 * inputs are unchanged keep a finished status. */
static void read_state(nb_batch_result *r, const char *path, bool check_keys, nb_ctx *ctx) {
    char *text = NULL;
    size_t n = 0;
    nb_ctx q;
    nb_ctx_init(&q);
    bool ok = nb_read_file(path, 64u << 20, &text, &n, &q) == NB_OK;
    nb_ctx_free(&q);
    (void)ctx;
    if (!ok) return;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *a = j ? cJSON_GetObjectItemCaseSensitive(j, "jobs") : NULL;
    for (const cJSON *e = cJSON_IsArray(a) ? a->child : NULL; e; e = e->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (!cJSON_IsString(id)) continue;
        nb_batch_job *b = NULL;
        for (size_t i = 0; i < r->n_jobs && !b; i++)
            if (!strcmp(r->job[i].id, id->valuestring)) b = &r->job[i];
        if (!b) continue;
        const cJSON *stx = cJSON_GetObjectItemCaseSensitive(e, "status");
        nb_batch_status s = NB_JOB_PENDING;
        for (int k = 0; k <= NB_JOB_INTERRUPTED; k++)
            if (cJSON_IsString(stx) && !strcmp(stx->valuestring, nb_batch_status_name((nb_batch_status)k))) s = (nb_batch_status)k;
        if (check_keys) {
            char k1[PATH_MAX + 64], k2[PATH_MAX + 64];
            ident(b->source, k1, sizeof k1);
            ident(b->recipe, k2, sizeof k2);
            const cJSON *s1 = cJSON_GetObjectItemCaseSensitive(e, "source_key"), *s2 = cJSON_GetObjectItemCaseSensitive(e, "recipe_key");
            if (!cJSON_IsString(s1) || !cJSON_IsString(s2) || strcmp(s1->valuestring, k1) || strcmp(s2->valuestring, k2))
                continue; /* inputs changed: run again */
        }
        b->status = s == NB_JOB_RUNNING ? NB_JOB_INTERRUPTED : s;
        const cJSON *x;
        if ((x = cJSON_GetObjectItemCaseSensitive(e, "message")) && cJSON_IsString(x))
            snprintf(b->message, sizeof b->message, "%s", x->valuestring);
        if ((x = cJSON_GetObjectItemCaseSensitive(e, "sha256")) && cJSON_IsString(x))
            snprintf(b->sha256, sizeof b->sha256, "%s", x->valuestring);
        if ((x = cJSON_GetObjectItemCaseSensitive(e, "exit_code")) && cJSON_IsNumber(x)) b->exit_code = x->valueint;
        if ((x = cJSON_GetObjectItemCaseSensitive(e, "bytes")) && cJSON_IsNumber(x)) b->bytes = (uint64_t)x->valuedouble;
        if ((x = cJSON_GetObjectItemCaseSensitive(e, "seconds")) && cJSON_IsNumber(x)) b->seconds = x->valuedouble;
        if ((x = cJSON_GetObjectItemCaseSensitive(e, "ppl")) && cJSON_IsNumber(x)) { b->ppl = x->valuedouble; b->validated = true; }
        if ((x = cJSON_GetObjectItemCaseSensitive(e, "kld")) && cJSON_IsNumber(x)) b->kld = x->valuedouble;
    }
    cJSON_Delete(j);
}

nb_status nb_batch_status_read(const char *jobs_path, nb_batch_result *r, nb_ctx *ctx) {
    NB_TRY(nb_batch_load(jobs_path, 1, r, ctx));
    char *dir = nb_path_join(ctx, r->out_root, ".batch");
    if (!dir) return NB_ERR_NOMEM;
    DIR *d = opendir(dir);
    for (struct dirent *e = d ? readdir(d) : NULL; e; e = readdir(d)) {
        if (strncmp(e->d_name, "state-", 6) || !nb_str_ends_with(e->d_name, ".json")) continue;
        char *p = nb_path_join(ctx, dir, e->d_name);
        if (p) read_state(r, p, false, ctx);
        free(p);
    }
    if (d) closedir(d);
    free(dir);
    return NB_OK;
}

/* ---- running ----------------------------------------------------------------------------------------------- */

static volatile sig_atomic_t g_stop;
static void on_stop(int sig) { g_stop = sig; }

/* The child: one build, output to OUT/build.log, result to OUT/.batch-result.json. */
static int child_build(const nb_batch_job *b, const nb_batch_opts *o, int threads) {
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    ctx.n_threads = threads;
    ctx.quiet = true;
    char *log = nb_path_join(&ctx, b->out_dir, "build.log");
    struct stat sb;
    if (stat(b->out_dir, &sb) != 0) {
        char tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s", b->out_dir);
        for (char *p = tmp + 1; *p; p++)
            if (*p == '/') { *p = 0; mkdir(tmp, 0755); *p = '/'; }
        mkdir(tmp, 0755);
    }
    int fd = log ? open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
    if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
    free(log);
    nb_build_opts bo = {.recipe_path = b->recipe, .source = b->source, .out_dir = b->out_dir, .commit = o->commit};
    nb_build_result r;
    nb_status st = nb_build_run(&bo, &r, &ctx);
    int code = st == NB_OK ? (r.gate_failed ? 4 : 0) : st == NB_ERR_INVALID ? 1
               : (st == NB_ERR_FORMAT || st == NB_ERR_UNSUPPORTED || st == NB_ERR_RANGE) ? 2 : 3;
    if (st != NB_OK) fprintf(stderr, "nibble build: %s\n", nb_errmsg(&ctx));
    cJSON *j = cJSON_CreateObject();
    char *rj = st == NB_OK ? nb_build_result_json(&r) : NULL;
    if (j) {
        cJSON_AddNumberToObject(j, "exit_code", code);
        cJSON_AddStringToObject(j, "message", st != NB_OK ? nb_errmsg(&ctx) : r.gate_failed ? r.gate_msg : "");
        if (rj) cJSON_AddItemToObject(j, "build", cJSON_Parse(rj));
        char *s = cJSON_PrintUnformatted(j);
        char *rp = nb_path_join(&ctx, b->out_dir, ".batch-result.json");
        if (s && rp) nb_afile_write_text(rp, s, &ctx);
        free(s);
        free(rp);
        cJSON_Delete(j);
    }
    free(rj);
    nb_build_result_free(&r);
    nb_ctx_free(&ctx);
    fflush(NULL);
    return code;
}

static void collect(nb_batch_job *b, int wstatus, double t0, nb_ctx *ctx) {
    b->seconds = nb_now() - t0;
    char *rp = nb_path_join(ctx, b->out_dir, ".batch-result.json");
    char *text = NULL;
    size_t n;
    nb_ctx q;
    nb_ctx_init(&q);
    cJSON *j = rp && nb_read_file(rp, 1u << 24, &text, &n, &q) == NB_OK ? cJSON_Parse(text) : NULL;
    nb_ctx_free(&q);
    if (rp) unlink(rp);
    free(rp);
    free(text);
    if (WIFSIGNALED(wstatus)) {
        b->status = g_stop ? NB_JOB_INTERRUPTED : NB_JOB_FAILED;
        b->exit_code = 128 + WTERMSIG(wstatus);
        snprintf(b->message, sizeof b->message, "killed by signal %d (see %s/build.log)", WTERMSIG(wstatus), b->out_dir);
    } else {
        b->exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 3;
        b->status = b->exit_code == 0 ? NB_JOB_DONE : b->exit_code == 4 ? NB_JOB_GATE_FAILED : NB_JOB_FAILED;
        const cJSON *m = j ? cJSON_GetObjectItemCaseSensitive(j, "message") : NULL;
        snprintf(b->message, sizeof b->message, "%s", cJSON_IsString(m) ? m->valuestring : "no result (see build.log)");
    }
    const cJSON *bj = j ? cJSON_GetObjectItemCaseSensitive(j, "build") : NULL, *x;
    if (bj) {
        if ((x = cJSON_GetObjectItemCaseSensitive(bj, "sha256")) && cJSON_IsString(x))
            snprintf(b->sha256, sizeof b->sha256, "%s", x->valuestring);
        if ((x = cJSON_GetObjectItemCaseSensitive(bj, "model_bytes")) && cJSON_IsNumber(x)) b->bytes = (uint64_t)x->valuedouble;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(bj, "validation");
        if (v) {
            b->validated = true;
            if ((x = cJSON_GetObjectItemCaseSensitive(v, "ppl")) && cJSON_IsNumber(x)) b->ppl = x->valuedouble;
            if ((x = cJSON_GetObjectItemCaseSensitive(v, "kld")) && cJSON_IsNumber(x)) b->kld = x->valuedouble;
        }
    }
    cJSON_Delete(j);
}

nb_status nb_batch_run(const nb_batch_opts *o, nb_batch_result *r, nb_ctx *ctx) {
    double t0 = nb_now();
    int n_shards = o->n_shards > 0 ? o->n_shards : 1, shard = o->shard;
    NB_RETURN_IF(ctx, shard < 0 || shard >= n_shards, NB_ERR_INVALID, "batch: shard %d of %d", shard, n_shards);
    NB_TRY(nb_batch_load(o->jobs_path, n_shards, r, ctx));
    char *sp = state_path(r, shard, n_shards, ctx);
    if (!sp) return NB_ERR_NOMEM;
    read_state(r, sp, true, ctx);
    free(sp);
    char *bd = nb_path_join(ctx, r->out_root, ".batch");
    if (!bd) return NB_ERR_NOMEM;
    mkdir(r->out_root, 0755);
    mkdir(bd, 0755);
    free(bd);
    int par = o->jobs > 0 ? o->jobs : 1;
    int total = o->threads > 0 ? o->threads : nb_ctx_threads(ctx);
    int per = total / par > 0 ? total / par : 1;
    /* this shard's jobs still to do */
    size_t *todo = nb_calloc(ctx, r->n_jobs ? r->n_jobs : 1, sizeof *todo, "job list");
    if (!todo) return NB_ERR_NOMEM;
    size_t n_todo = 0;
    for (size_t i = 0; i < r->n_jobs; i++) {
        nb_batch_job *b = &r->job[i];
        if (b->shard != shard) { b->status = NB_JOB_SKIPPED_SHARD; continue; }
        if (b->status == NB_JOB_DONE || b->status == NB_JOB_GATE_FAILED) { r->n_skipped++; continue; }
        b->status = NB_JOB_PENDING;
        if (b->error) {
            b->status = NB_JOB_FAILED;
            b->exit_code = 2;
            snprintf(b->message, sizeof b->message, "%s: %s", b->error, strcmp(b->error, "recipe not found") ? b->source : b->recipe);
            continue;
        }
        todo[n_todo++] = i;
    }
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    g_stop = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    pid_t *pids = nb_calloc(ctx, (size_t)par, sizeof *pids, "children");
    size_t *slot_job = nb_calloc(ctx, (size_t)par, sizeof *slot_job, "children");
    double *slot_t0 = nb_calloc(ctx, (size_t)par, sizeof *slot_t0, "children");
    nb_status st = pids && slot_job && slot_t0 ? write_state(r, shard, n_shards, ctx) : NB_ERR_NOMEM;
    size_t next = 0;
    int running = 0;
    bool killed = false;
    while (st == NB_OK && (next < n_todo || running > 0)) {
        while (!g_stop && running < par && next < n_todo) {
            nb_batch_job *b = &r->job[todo[next]];
            int s = 0;
            while (pids[s]) s++;
            fflush(NULL);
            pid_t pid = fork();
            if (pid < 0) { st = nb_err_errno(ctx, errno, "batch: fork"); break; }
            if (pid == 0) _exit(child_build(b, o, per));
            pids[s] = pid;
            slot_job[s] = todo[next++];
            slot_t0[s] = nb_now();
            b->status = NB_JOB_RUNNING;
            running++;
            r->n_run++;
            if (!o->quiet) fprintf(stderr, "nibble batch: started %s\n", b->id);
            write_state(r, shard, n_shards, ctx);
        }
        if (running == 0) break;
        if (g_stop && !killed) { /* end the running builds cleanly: their finished stages stay */
            for (int s = 0; s < par; s++)
                if (pids[s]) kill(pids[s], SIGTERM);
            killed = true;
        }
        int ws = 0;
        pid_t w = waitpid(-1, &ws, 0);
        if (w < 0) {
            if (errno != EINTR) { st = nb_err_errno(ctx, errno, "batch: wait"); break; }
            continue;
        }
        for (int s = 0; s < par; s++) {
            if (pids[s] != w) continue;
            nb_batch_job *b = &r->job[slot_job[s]];
            collect(b, ws, slot_t0[s], ctx);
            pids[s] = 0;
            running--;
            if (!o->quiet)
                fprintf(stderr, "nibble batch: %s: %s%s%s\n", b->id, nb_batch_status_name(b->status),
                        b->message[0] ? ": " : "", b->message);
            write_state(r, shard, n_shards, ctx);
        }
    }
    if (g_stop) {
        write_state(r, shard, n_shards, ctx);
        r->interrupted = true;
        if (st == NB_OK) st = nb_err(ctx, NB_ERR_IO, "batch: interrupted by signal %d: finished jobs are kept, a rerun "
                                                      "continues with the others", (int)g_stop);
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    for (size_t i = 0; i < r->n_jobs; i++) {
        const nb_batch_job *b = &r->job[i];
        if (b->shard != shard) continue;
        r->n_done += b->status == NB_JOB_DONE;
        r->n_failed += b->status == NB_JOB_FAILED || b->status == NB_JOB_INTERRUPTED;
        r->n_gate_failed += b->status == NB_JOB_GATE_FAILED;
    }
    r->seconds = nb_now() - t0;
    free(pids);
    free(slot_job);
    free(slot_t0);
    free(todo);
    return st;
}
