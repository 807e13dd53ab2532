/* pipeline/build.c — recipes run stage by stage (see pipeline/build.h). */
#include "pipeline/build.h"

#include "calib/calibrate.h"
#include "calib/imatrix.h"
#include "calib/export.h"
#include "calib/job.h"
#include "calib/routing.h"
#include "core/adir.h"
#include "core/afile.h"
#include "core/file.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "core/str.h"
#include "distill/merge.h"
#include "distill/prune_job.h"
#include "engine/ppl.h"
#include "formats/json_strict.h"
#include "pipeline/bundle.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- keys --------------------------------------------------------------------------------------------------- */

typedef struct key {
    nb_sha256 s;
} key;

/* The running executable's SHA-256, once: a rebuilt nibble (a planner or quantizer that changed
 * under the same version number) never reuses an older binary's work. Without /proc: zeros
 * (the version alone). */
static const unsigned char *self_digest(void) {
    static unsigned char d[32];
    static bool done;
    if (!done) {
        nb_ctx c;
        nb_ctx_init(&c);
        c.quiet = true;
        if (nb_sha256_file("/proc/self/exe", d, &c) != NB_OK) memset(d, 0, sizeof d);
        nb_ctx_free(&c);
        done = true;
    }
    return d;
}

static void key_init(key *k, const char *stage) {
    nb_sha256_init(&k->s);
    const char *v = "nibble " NB_VERSION;
    nb_sha256_update(&k->s, v, strlen(v) + 1);
    nb_sha256_update(&k->s, self_digest(), 32);
    nb_sha256_update(&k->s, stage, strlen(stage) + 1);
}

static void key_str(key *k, const char *name, const char *val) {
    nb_sha256_update(&k->s, name, strlen(name) + 1);
    if (val) nb_sha256_update(&k->s, val, strlen(val) + 1);
    else nb_sha256_update(&k->s, "\xff", 1);
}

static void key_num(key *k, const char *name, double v) {
    char b[64];
    snprintf(b, sizeof b, "%.17g", v);
    key_str(k, name, b);
}

/* A file or directory input: resolved path, size, modification time. */
static nb_status key_file(key *k, const char *name, const char *path, nb_ctx *ctx) {
    if (!path) { key_str(k, name, NULL); return NB_OK; }
    char real[PATH_MAX];
    struct stat sb;
    if (!realpath(path, real) || stat(real, &sb) != 0) return nb_err_errno(ctx, errno, "%s", path);
    char b[PATH_MAX + 96];
    snprintf(b, sizeof b, "%s|%lld|%lld.%09ld", real, (long long)sb.st_size, (long long)sb.st_mtim.tv_sec,
             sb.st_mtim.tv_nsec);
    key_str(k, name, b);
    return NB_OK;
}

/* Chain: the digest of an input stage's key (so a stage's key covers every stage before it). */
static void key_chain(key *k, const key *in) {
    unsigned char d[32];
    nb_sha256 c = in->s;
    nb_sha256_final(&c, d);
    nb_sha256_update(&k->s, d, 32);
}

/* A stage's key: its name, chained to its input's key. */
static void key_start(key *k, const char *stage, const key *in) {
    key_init(k, stage);
    key_chain(k, in);
}

static void key_hex(key *k, char out[17]) {
    unsigned char d[32];
    char hex[65];
    nb_sha256_final(&k->s, d);
    nb_sha256_hex(d, hex);
    memcpy(out, hex, 16);
    out[16] = 0;
}

/* The calibration settings a stage depends on. */
static nb_status key_calib(key *k, const nb_recipe *rc, nb_ctx *ctx) {
    NB_TRY(key_file(k, "calib", rc->calib_text, ctx));
    key_num(k, "ctx", rc->calib_ctx);
    key_num(k, "tokens", (double)rc->calib_tokens);
    key_num(k, "seed", (double)rc->calib_seed);
    return NB_OK;
}

/* ---- work directories ----------------------------------------------------------------------------------------- */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static nb_status mkdir_p(const char *path, nb_ctx *ctx) {
    char b[PATH_MAX];
    NB_RETURN_IF(ctx, strlen(path) >= sizeof b, NB_ERR_RANGE, "%s: path too long", path);
    strcpy(b, path);
    for (char *p = b + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(b, 0755) != 0 && errno != EEXIST) return nb_err_errno(ctx, errno, "%s: mkdir", b);
        *p = '/';
    }
    if (mkdir(b, 0755) != 0 && errno != EEXIST) return nb_err_errno(ctx, errno, "%s: mkdir", b);
    return NB_OK;
}

typedef struct builder {
    const nb_build_opts *o;
    nb_build_result *r;
    nb_ctx *ctx;
    char work[PATH_MAX];
    int index, n_stages;
} builder;

typedef struct stage {
    char dir[PATH_MAX];
    char done[PATH_MAX];
    bool finished;        /* done.json exists: skip */
    double t0;
} stage;

static void event(builder *b, nb_build_event_kind kind, const char *name, const char *detail, const char *dir,
                  double seconds) {
    static const char *const phase[] = {"start", "skip", "end"};
    nb_event_stage(b->ctx, phase[kind], name, b->index, b->n_stages, detail, seconds);
    if (!b->o->on_event) return;
    nb_build_event ev = {kind, name, b->index, b->n_stages, detail, dir, seconds};
    b->o->on_event(b->o->user, &ev);
}

/* Start stage `name` with key k: its directory, emptied unless finished. */
static nb_status stage_begin(builder *b, const char *name, const char *detail, key *k, stage *s) {
    char hex[17];
    key_hex(k, hex);
    b->index++;
    int n1 = snprintf(s->dir, sizeof s->dir, "%s/%s-%s", b->work, name, hex);
    int n2 = n1 < 0 ? -1 : snprintf(s->done, sizeof s->done, "%.*s/done.json", (int)(sizeof s->done - 16), s->dir);
    NB_RETURN_IF(b->ctx, n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof s->dir || (size_t)n2 >= sizeof s->done, NB_ERR_RANGE,
                 "%s: output path too long", b->work);
    struct stat sb;
    s->finished = !b->o->force && stat(s->done, &sb) == 0;
    s->t0 = nb_now();
    nb_build_stage *bs = &b->r->stages[b->r->n_stages < NB_BUILD_MAX_STAGES ? b->r->n_stages++ : NB_BUILD_MAX_STAGES - 1];
    bs->name = name;
    bs->skipped = s->finished;
    if (s->finished) {
        event(b, NB_BUILD_STAGE_SKIP, name, detail, s->dir, 0);
        return NB_OK;
    }
    event(b, NB_BUILD_STAGE_START, name, detail, s->dir, 0);
    if (stat(s->dir, &sb) == 0) nftw(s->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); /* an interrupted earlier try */
    return mkdir_p(s->dir, b->ctx);
}

/* Mark the stage finished: done.json holds `json` (the stage's figures). */
static nb_status stage_end(builder *b, const char *name, stage *s, const char *json) {
    NB_TRY(nb_afile_write_text(s->done, json ? json : "{}", b->ctx));
    double dt = nb_now() - s->t0;
    b->r->stages[b->r->n_stages - 1].seconds = dt;
    event(b, NB_BUILD_STAGE_DONE, name, NULL, s->dir, dt);
    return NB_OK;
}

static char *in_dir(builder *b, const stage *s, const char *file) { return nb_path_join(b->ctx, s->dir, file); }

/* done.json of a finished stage, parsed. */
static nb_status stage_json(builder *b, const stage *s, cJSON **out) {
    char *t = NULL;
    size_t n;
    NB_TRY(nb_read_file(s->done, 1u << 26, &t, &n, b->ctx));
    *out = cJSON_Parse(t);
    free(t);
    NB_RETURN_IF(b->ctx, !*out, NB_ERR_FORMAT, "%s: damaged (rerun with --force)", s->done);
    return NB_OK;
}

/* ---- stages --------------------------------------------------------------------------------------------------- */

static nb_status do_merge(builder *b, const char *src, char **out, key *kin) {
    const nb_recipe *rc = &b->r->recipe;
    key k;
    key_start(&k, "merge", kin);
    for (size_t i = 0; i < rc->n_adapters; i++) {
        NB_TRY(key_file(&k, "adapter", rc->adapters[i].path, b->ctx));
        key_num(&k, "weight", rc->adapters[i].weight);
    }
    key_num(&k, "qlora", rc->qlora);
    nb_sha256 save = k.s;
    char detail[128];
    snprintf(detail, sizeof detail, "%zu adapter%s%s", rc->n_adapters, rc->n_adapters == 1 ? "" : "s",
             rc->qlora ? ", QLoRA (against the NF4 round trip of the base)" : "");
    stage s;
    NB_TRY(stage_begin(b, "merge", detail, &k, &s));
    *out = in_dir(b, &s, "merged.gguf");
    if (!*out) return NB_ERR_NOMEM;
    if (!s.finished) {
        nb_merge_adapter ad[NB_RECIPE_MAX_ADAPTERS];
        for (size_t i = 0; i < rc->n_adapters; i++) ad[i] = (nb_merge_adapter){rc->adapters[i].path, rc->adapters[i].weight};
        nb_merge_opts mo = {.adapters = ad, .n_adapters = rc->n_adapters, .qlora = rc->qlora};
        nb_merge_result mr;
        memset(&mr, 0, sizeof mr);
        nb_status st = nb_merge(src, *out, &mo, &mr, b->ctx);
        nb_merge_result_free(&mr);
        NB_TRY(st);
        NB_TRY(stage_end(b, "merge", &s, NULL));
    }
    kin->s = save; /* the next stage's input key: this stage's */
    return NB_OK;
}

static nb_status do_prune(builder *b, const char *src, char **out, key *kin) {
    const nb_recipe *rc = &b->r->recipe;
    key k;
    key_start(&k, "prune", kin);
    NB_TRY(key_calib(&k, rc, b->ctx));
    key_num(&k, "keep", rc->prune_keep);
    key_num(&k, "ratio", rc->prune_keep_ratio);
    key_str(&k, "criterion", rc->prune_criterion);
    key_num(&k, "renorm", rc->prune_renormalize);
    nb_sha256 save = k.s;
    char detail[128];
    if (rc->prune_keep) snprintf(detail, sizeof detail, "keep %d experts per layer", rc->prune_keep);
    else snprintf(detail, sizeof detail, "keep %.0f%% of the experts", 100.0 * rc->prune_keep_ratio);
    stage s;
    NB_TRY(stage_begin(b, "prune", detail, &k, &s));
    *out = in_dir(b, &s, "pruned.gguf");
    if (!*out) return NB_ERR_NOMEM;
    if (!s.finished) {
        nb_prune_job j = {.src = src, .dst = *out};
        j.calib.calib_path = rc->calib_text;
        j.calib.corpus.n_ctx = rc->calib_ctx;
        j.calib.corpus.max_tokens = rc->calib_tokens;
        j.calib.corpus.seed = rc->calib_seed;
        j.prune.keep = rc->prune_keep;
        j.prune.keep_ratio = rc->prune_keep_ratio;
        j.prune.criterion = NB_PRUNE_REAP;
        if (rc->prune_criterion) nb_prune_criterion_from_name(rc->prune_criterion, &j.prune.criterion);
        j.prune.renormalize_topk = rc->prune_renormalize;
        nb_prune_job_result jr;
        nb_status st = nb_prune_job_run(&j, &jr, b->ctx);
        nb_prune_job_result_free(&jr);
        NB_TRY(st);
        NB_TRY(stage_end(b, "prune", &s, NULL));
    }
    kin->s = save;
    return NB_OK;
}

static nb_status do_calibrate(builder *b, const char *src, char **out, const key *kin) {
    const nb_recipe *rc = &b->r->recipe;
    key k;
    key_start(&k, "calibrate", kin);
    NB_TRY(key_calib(&k, rc, b->ctx));
    stage s;
    NB_TRY(stage_begin(b, "calibrate", "importance matrix from the calibration text", &k, &s));
    *out = in_dir(b, &s, "imatrix.gguf");
    if (!*out) return NB_ERR_NOMEM;
    if (s.finished) return NB_OK;
    nb_calib_opts co = {.calib_path = rc->calib_text};
    co.corpus.n_ctx = rc->calib_ctx;
    co.corpus.max_tokens = rc->calib_tokens;
    co.corpus.seed = rc->calib_seed;
    nb_imatrix im;
    nb_imatrix_init(&im);
    nb_routing rt = {0};
    nb_calib_result cr;
    nb_status st = nb_calibrate(src, &co, &im, &rt, &cr, b->ctx);
    if (st == NB_OK) st = nb_imatrix_write_gguf(&im, *out, b->ctx);
    nb_imatrix_free(&im);
    nb_routing_free(&rt);
    NB_TRY(st);
    return stage_end(b, "calibrate", &s, NULL);
}

/* Quantize; *plan_json receives the plan (for the report and manifest). */
/* The quantize stage's figures from its done.json: the plan, and for the report the planner's totals and
 * per-tensor errors (b->r->budget_json, b->r->errors_json; absent without the planner). */
static nb_status quantize_figures(builder *b, const stage *s, char **plan_json) {
    cJSON *j = NULL;
    NB_TRY(stage_json(b, s, &j));
    const cJSON *bu = cJSON_GetObjectItemCaseSensitive(j, "budget"), *er = cJSON_GetObjectItemCaseSensitive(j, "errors");
    *plan_json = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(j, "plan"));
    if (bu) b->r->budget_json = cJSON_PrintUnformatted(bu);
    if (er) b->r->errors_json = cJSON_PrintUnformatted(er);
    cJSON_Delete(j);
    return *plan_json ? NB_OK : nb_err(b->ctx, NB_ERR_FORMAT, "%s: no plan (rerun with --force)", s->done);
}

/* The quantize job a recipe describes, from `src` to `dst` (rules are filled into *rules, which the
 * caller frees with nb_rules_free also on failure): what the quantize stage runs and what the HF
 * outputs are checked and written against (calib/export.h). */
static nb_status recipe_job(const nb_recipe *rc, const char *src, const char *dst, const char *imatrix,
                            nb_rules *rules, nb_quant_job *j, nb_ctx *ctx) {
    nb_rules_init(rules);
    *j = (nb_quant_job){.src = src, .dst = dst, .plan_path = rc->target_plan, .imatrix_path = imatrix,
                        .allow_requantize = rc->allow_requantize};
    for (size_t i = 0; i < rc->n_rules; i++) NB_TRY(nb_rules_add(rules, rc->rules[i], ctx));
    j->plan.mix = rc->target_mix ? nb_mix_find(rc->target_mix) : NULL;
    j->plan.rules = rules;
    NB_RETURN_IF(ctx, rc->target_mix && !j->plan.mix, NB_ERR_FORMAT, "%s: target.mix: unknown mix '%s'", rc->path,
                 rc->target_mix);
    if (rc->method) nb_quant_method_from_name(rc->method, &j->method);
    if (rc->target == NB_TARGET_SIZE || rc->target == NB_TARGET_BPW || rc->target == NB_TARGET_BUDGET) {
        j->budget.kind = rc->target == NB_TARGET_SIZE ? NB_BUDGET_FILE : rc->target == NB_TARGET_BPW ? NB_BUDGET_BPW
                                                                                                     : NB_BUDGET_MEMORY;
        j->budget.bytes = rc->target_bytes;
        j->budget.bpw = rc->target_bpw;
        j->budget.mem.n_ctx = (uint32_t)rc->target_ctx;
        j->budget.mem.kv_type = NB_TYPE_F16;
        if (rc->target_kv_type) nb_type_from_name(rc->target_kv_type, &j->budget.mem.kv_type);
        if (rc->target_runtime) nb_runtime_from_name(rc->target_runtime, &j->budget.mem.runtime);
        j->budget.mem.overhead = rc->target_overhead == UINT64_MAX ? NB_MEM_DEFAULT_OVERHEAD : rc->target_overhead;
        j->budget.allow_prune = rc->prune_auto;
        j->group_cal = (nb_group_cal_opts){.text_path = rc->target_calibrate, .n_ctx = rc->target_calibrate_ctx};
        j->budget.prune_criterion = rc->prune_criterion ? rc->prune_criterion : "reap";
    }
    if (nb_quant_method_sequential(j->method)) {
        j->calib_path = rc->calib_text;
        j->corpus.n_ctx = rc->calib_ctx;
        j->corpus.max_tokens = rc->calib_tokens;
        j->corpus.seed = rc->calib_seed;
    }
    return NB_OK;
}

/* ---- Hugging Face outputs ------------------------------------------------------------------------------- */

static const char *export_stage_name(nb_hf_quant q) {
    static const char *const n[] = {"export-hf", "export-bnb-nf4", "export-gptq", "export-awq"};
    return (unsigned)q < sizeof n / sizeof *n ? n[q] : "export";
}

/* Before any stage runs: every HF output the recipe asks for must hold what the quantize job makes
 * (calib/export.h), else the recipe is refused naming outputs.formats[i]. gptq / awq also plan the job
 * (cheap: no weights are quantized) to find a tensor that would fall back to a type they cannot pack. */
static nb_status check_outputs(const nb_recipe *rc, nb_ctx *ctx) {
    for (size_t i = 0; i < rc->n_outputs; i++) {
        nb_hf_quant q = rc->outputs[i].format;
        if (q == NB_HF_PLAIN) continue; /* any variant dequantizes */
        bool imx = rc->method && !strcmp(rc->method, "imatrix");
        nb_rules rules;
        nb_quant_job j;
        /* the importance matrix does not exist yet: a name stands for it (nothing is read) */
        nb_status st = recipe_job(rc, rc->source, "out.gguf", imx ? "imatrix.gguf" : NULL, &rules, &j, ctx);
        if (st != NB_OK) { /* the recipe's own error (a rule, a mix name): the quantize stage's message */
            nb_rules_free(&rules);
            return st;
        }
        st = nb_quant_export_check(&j, q, ctx);
        if (st == NB_OK) {
            nb_quant_job dry = j; /* the plan of the mix, rules or plan file */
            dry.dst = NULL;
            dry.imatrix_path = dry.calib_path = NULL;
            dry.method = NB_METHOD_RTN;
            dry.allow_requantize = true;
            nb_quant_job_result pr;
            memset(&pr, 0, sizeof pr);
            /* the plan's warnings (fallback types) are the quantize stage's to print, once */
            nb_log_level lv = ctx->log_level;
            bool quiet = ctx->quiet;
            ctx->log_level = NB_LOG_ERROR;
            ctx->quiet = true;
            st = nb_quantize_job(&dry, &pr, ctx);
            ctx->log_level = lv;
            ctx->quiet = quiet;
            if (st == NB_OK) st = nb_quant_export_check_plan(&j, &pr.plan, q, ctx);
            nb_quant_job_result_free(&pr);
        }
        nb_rules_free(&rules);
        if (st == NB_ERR_INVALID || st == NB_ERR_UNSUPPORTED) { /* a combination the layout cannot hold: a recipe
                                                                   error (exit 2); a missing source stays itself */
            nb_err_prefix(ctx, "%s: outputs.formats[%zu]: %s cannot hold this recipe's variant", rc->path,
                          rc->outputs[i].index, nb_hf_quant_name(q));
            return NB_ERR_FORMAT;
        }
        if (st != NB_OK) return st;
    }
    return NB_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The regular files of a directory, sorted (malloc'd names in *names). Anything else is an error. */
static nb_status list_dir(const char *dir, char ***names, size_t *n, nb_ctx *ctx) {
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return nb_err_errno(ctx, errno, "%s", dir);
    nb_status st = NB_OK;
    size_t cap = 0;
    struct dirent *e;
    while (st == NB_OK && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *fp = nb_path_join(ctx, dir, e->d_name);
        struct stat sb;
        if (!fp) { st = NB_ERR_NOMEM; break; }
        if (lstat(fp, &sb) != 0) st = nb_err_errno(ctx, errno, "%s", fp);
        else if (!S_ISREG(sb.st_mode)) st = nb_err(ctx, NB_ERR_FORMAT, "%s: not a regular file", fp);
        free(fp);
        if (st != NB_OK) break;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **g = realloc(*names, cap * sizeof *g);
            if (!g) { st = nb_err(ctx, NB_ERR_NOMEM, "out of memory"); break; }
            *names = g;
        }
        if (!((*names)[*n] = nb_strdup(ctx, e->d_name))) { st = NB_ERR_NOMEM; break; }
        (*n)++;
    }
    closedir(d);
    if (st == NB_OK) qsort(*names, *n, sizeof **names, cmp_str);
    return st;
}

static void free_names(char **names, size_t n) {
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

static nb_status publish(const char *from, const char *to, nb_ctx *ctx);

/* One HF output: its stage writes the directory from the quantize stage's GGUF (the validated weights;
 * bnb-nf4: from the stage's source, as bitsandbytes quantizes), keyed by the quantize stage's key and the
 * format; then OUT/<name>/ gets hard links to its files (copies where linking fails). */
static nb_status do_export(builder *b, size_t i, const char *src, const char *model, const char *imatrix,
                           const key *kq) {
    const nb_recipe *rc = &b->r->recipe;
    const nb_recipe_output *ro = &rc->outputs[i];
    nb_build_output *bo = &b->r->outputs[b->r->n_outputs++];
    bo->format = nb_hf_quant_name(ro->format);
    const char *name = export_stage_name(ro->format);
    key k;
    key_start(&k, name, kq);
    key_str(&k, "format", bo->format);
    char detail[160];
    snprintf(detail, sizeof detail, "%s directory %s/", bo->format, ro->name);
    stage s;
    NB_TRY(stage_begin(b, name, detail, &k, &s));
    char *dir = in_dir(b, &s, "out");
    if (!dir) return NB_ERR_NOMEM;
    nb_status st = NB_OK;
    if (!s.finished) {
        nb_rules rules;
        nb_quant_job j;
        nb_hf_write_result hr = {0};
        st = recipe_job(rc, src, model, imatrix, &rules, &j, b->ctx);
        if (st == NB_OK) st = nb_quant_export_gguf(&j, ro->format, model, dir, &hr, b->ctx);
        nb_rules_free(&rules);
        char js[160];
        snprintf(js, sizeof js, "{\"format\":\"%s\",\"tensors\":%zu,\"shards\":%zu,\"bytes\":%llu}", bo->format,
                 hr.n_tensors, hr.n_shards, (unsigned long long)hr.bytes_out);
        if (st == NB_OK) st = stage_end(b, name, &s, js);
    }
    /* publish: a fresh OUT/<name>/ (the previous build's is replaced) */
    char **names = NULL;
    size_t n = 0;
    bo->dir = nb_path_join(b->ctx, b->r->out_dir, ro->name);
    if (st == NB_OK && !bo->dir) st = NB_ERR_NOMEM;
    if (st == NB_OK) st = list_dir(dir, &names, &n, b->ctx);
    nb_adir ad = {.lock_fd = -1};
    bool opened = false;
    if (st == NB_OK) {
        nb_rmtree(bo->dir);
        st = nb_adir_open(&ad, bo->dir, b->ctx);
        opened = st == NB_OK;
    }
    for (size_t f = 0; st == NB_OK && f < n; f++) {
        char *from = nb_path_join(b->ctx, dir, names[f]), *to = nb_adir_file(&ad, names[f], b->ctx);
        st = from && to ? publish(from, to, b->ctx) : NB_ERR_NOMEM;
        free(from);
        free(to);
    }
    if (st == NB_OK) st = nb_adir_commit(&ad, b->ctx);
    if (opened) nb_adir_abort(&ad);
    if (st == NB_OK) {
        bo->names = names;
        bo->n_files = n;
    } else {
        free_names(names, n);
    }
    free(dir);
    return st;
}

static nb_status do_quantize(builder *b, const char *src, const char *imatrix, char **out, char **plan_json,
                             const key *kin, key *kout) {
    const nb_recipe *rc = &b->r->recipe;
    key k;
    key_start(&k, "quantize", kin);
    NB_TRY(key_file(&k, "imatrix", imatrix, b->ctx));
    /* the planner's measurement journal: keyed by the model and importance data, not the target, so a
     * rerun after a crash or with another budget measures only what is missing (quant/budget.h) */
    char mstate[PATH_MAX + 64], mhex[17];
    key km = k;
    key_hex(&km, mhex);
    snprintf(mstate, sizeof mstate, "%s/measure-%s.state", b->work, mhex);
    key_str(&k, "mix", rc->target_mix);
    NB_TRY(key_file(&k, "plan", rc->target_plan, b->ctx));
    key_str(&k, "method", rc->method);
    NB_TRY(key_calib(&k, rc, b->ctx));
    for (size_t i = 0; i < rc->n_rules; i++) key_str(&k, "rule", rc->rules[i]);
    key_num(&k, "requant", rc->allow_requantize);
    key_num(&k, "target", rc->target);
    key_num(&k, "bytes", (double)rc->target_bytes);
    key_num(&k, "bpw", rc->target_bpw);
    key_num(&k, "tctx", rc->target_ctx);
    key_str(&k, "kv", rc->target_kv_type);
    key_str(&k, "runtime", rc->target_runtime);
    key_num(&k, "overhead", (double)rc->target_overhead);
    NB_TRY(key_file(&k, "calibrate", rc->target_calibrate, b->ctx));
    key_num(&k, "calibrate_ctx", rc->target_calibrate_ctx);
    if (rc->prune_auto) {
        key_str(&k, "prune", "auto");
        key_str(&k, "criterion", rc->prune_criterion);
    }
    char detail[200], b1[32];
    if (rc->target == NB_TARGET_MIX || rc->target == NB_TARGET_PLAN)
        snprintf(detail, sizeof detail, "%s%s, method %s", rc->target_mix ? "mix " : "plan ",
                 rc->target_mix ? rc->target_mix : rc->target_plan, rc->method ? rc->method : "rtn");
    else if (rc->target == NB_TARGET_BPW)
        snprintf(detail, sizeof detail, "planned for %.3f bits per weight, method %s", rc->target_bpw,
                 rc->method ? rc->method : "rtn");
    else
        snprintf(detail, sizeof detail, "planned for %s %s%s, method %s", rc->target == NB_TARGET_SIZE ? "a file of" : "a memory budget of",
                 nb_fmt_bytes((double)rc->target_bytes, b1, sizeof b1), rc->target == NB_TARGET_BUDGET ? " with its KV cache" : "",
                 rc->method ? rc->method : "rtn");
    if (rc->prune_auto) snprintf(detail + strlen(detail), sizeof detail - strlen(detail), ", experts pruned as needed");
    *kout = k; /* the HF outputs' stages chain to it */
    stage s;
    NB_TRY(stage_begin(b, "quantize", detail, &k, &s));
    *out = in_dir(b, &s, "model.gguf");
    if (!*out) return NB_ERR_NOMEM;
    if (s.finished) return quantize_figures(b, &s, plan_json);
    nb_rules rules;
    nb_quant_job j;
    nb_status st = recipe_job(rc, src, *out, imatrix, &rules, &j, b->ctx);
    char *tmp = rc->prune_auto ? in_dir(b, &s, "pruned.tmp") : NULL;
    if (rc->prune_auto && !tmp) st = NB_ERR_NOMEM;
    j.prune_tmp = tmp;
    j.measure_state = mstate;
    j.verify_plan = j.budget.kind != NB_BUDGET_NONE;
    nb_quant_job_result jr;
    memset(&jr, 0, sizeof jr);
    if (st == NB_OK) st = nb_quantize_job(&j, &jr, b->ctx);
    free(tmp);
    nb_rules_free(&rules);
    /* done.json: the plan, and with the planner its totals (weights / KV / compute) and, per tensor it
     * chose, the predicted error (sampled rows) and the same measure over every row of the written type */
    cJSON *dj = cJSON_CreateObject();
    char *pj = st == NB_OK ? nb_plan_to_json(&jr.plan) : NULL;
    cJSON *pl = pj ? cJSON_Parse(pj) : NULL;
    free(pj);
    if (st == NB_OK && dj && pl) {
        cJSON_AddItemToObject(dj, "plan", pl);
        pl = NULL;
        if (j.budget.kind != NB_BUDGET_NONE) {
            char *bj = nb_budget_result_json(&jr.budget, &j.budget);
            cJSON *bo = bj ? cJSON_Parse(bj) : NULL;
            free(bj);
            if (bo) cJSON_AddItemToObject(dj, "budget", bo);
            cJSON *ea = cJSON_AddArrayToObject(dj, "errors");
            for (size_t i = 0; ea && jr.measured_err && i < jr.plan.n_tensors; i++) {
                const nb_plan_tensor *t = &jr.plan.tensors[i];
                if (t->why != NB_PLAN_BUDGET || !isfinite(jr.measured_err[i]) || !isfinite(t->pred_err)) continue;
                cJSON *e = cJSON_CreateObject();
                cJSON_AddStringToObject(e, "name", t->name);
                cJSON_AddStringToObject(e, "type", nb_type_name(t->type));
                cJSON_AddNumberToObject(e, "predicted", t->pred_err);
                cJSON_AddNumberToObject(e, "measured", jr.measured_err[i]);
                cJSON_AddItemToArray(ea, e);
            }
        }
    }
    cJSON_Delete(pl);
    nb_quant_job_result_free(&jr);
    char *done = st == NB_OK && dj ? nb_json_print(dj, false) : NULL;
    cJSON_Delete(dj);
    NB_TRY(st);
    if (!done) return nb_err(b->ctx, NB_ERR_NOMEM, "out of memory");
    st = stage_end(b, "quantize", &s, done);
    free(done);
    NB_TRY(st);
    return quantize_figures(b, &s, plan_json);
}

/* Reference log-probs of the model the variant is judged against. */
static nb_status do_reference(builder *b, const char *ref, char **out, const key *kref) {
    const nb_recipe *rc = &b->r->recipe;
    key k;
    key_start(&k, "reference", kref);
    NB_TRY(key_file(&k, "eval", rc->eval_text, b->ctx));
    key_num(&k, "ctx", rc->eval_ctx);
    key_num(&k, "chunks", rc->eval_chunks);
    key_str(&k, "arithmetic", "precise");
    stage s;
    NB_TRY(stage_begin(b, "reference", "log-probs of the source on the evaluation text", &k, &s));
    *out = in_dir(b, &s, "reference.logits");
    if (!*out) return NB_ERR_NOMEM;
    if (s.finished) {
        cJSON *j = NULL;
        NB_TRY(stage_json(b, &s, &j));
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "ppl");
        b->r->ppl_ref = cJSON_IsNumber(p) ? p->valuedouble : 0;
        cJSON_Delete(j);
        return NB_OK;
    }
    nb_ppl_file_opts fo = {.text_path = rc->eval_text, .precise = true};
    fo.ppl.n_ctx = rc->eval_ctx;
    fo.ppl.n_chunks = rc->eval_chunks;
    fo.ppl.save_path = *out;
    nb_ppl_result pr;
    memset(&pr, 0, sizeof pr);
    nb_status st = nb_ppl_file(ref, &fo, &pr, b->ctx);
    b->r->ppl_ref = pr.ppl;
    nb_ppl_result_free(&pr);
    NB_TRY(st);
    char js[96];
    snprintf(js, sizeof js, "{\"ppl\":%.17g}", b->r->ppl_ref);
    return stage_end(b, "reference", &s, js);
}

static nb_status do_validate(builder *b, const char *model, const char *ref_logits, const char *model_key) {
    const nb_recipe *rc = &b->r->recipe;
    nb_build_result *r = b->r;
    key k;
    key_init(&k, "validate");
    key_str(&k, "model", model_key);
    NB_TRY(key_file(&k, "reference", ref_logits, b->ctx));
    stage s;
    NB_TRY(stage_begin(b, "validate", "PPL and KLD of the variant against the reference", &k, &s));
    if (!s.finished) {
        nb_ppl_file_opts fo = {.text_path = rc->eval_text, .precise = true};
        fo.ppl.n_chunks = rc->eval_chunks;
        fo.ppl.kld_path = ref_logits;
        nb_ppl_result pr;
        memset(&pr, 0, sizeof pr);
        nb_status st = nb_ppl_file(model, &fo, &pr, b->ctx);
        if (st != NB_OK) { nb_ppl_result_free(&pr); return st; }
        char js[4096]; /* 17 numbers and NB_KLD_HIST_BINS counts */
        int o = snprintf(js, sizeof js, "{\"ppl\":%.17g,\"ppl_err\":%.17g,\"kld\":%.17g,\"kld_err\":%.17g,"
                         "\"same_top\":%.17g,\"same_top_err\":%.17g,\"kld_pct\":[", pr.ppl, pr.ppl_err, pr.kld.kld,
                         pr.kld.kld_err, pr.kld.same_top, pr.kld.same_top_err);
        for (int q = 0; q < NB_KLD_NPCT; q++)
            o += snprintf(js + o, sizeof js - (size_t)o, "%s%.17g", q ? "," : "", pr.kld.kld_pct[q]);
        char *hj = nb_kld_hist_json(pr.kld.kld_hist);
        nb_ppl_result_free(&pr);
        if (!hj) return nb_err(b->ctx, NB_ERR_NOMEM, "out of memory");
        snprintf(js + o, sizeof js - (size_t)o, "],\"kld_histogram\":%s}", hj);
        free(hj);
        NB_TRY(stage_end(b, "validate", &s, js));
    }
    cJSON *j = NULL;
    NB_TRY(stage_json(b, &s, &j));
    const char *names[6] = {"ppl", "ppl_err", "kld", "kld_err", "same_top", "same_top_err"};
    double *dst[6] = {&r->ppl, &r->ppl_err, &r->kld, &r->kld_err, &r->same_top, &r->same_top_err};
    for (int i = 0; i < 6; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, names[i]);
        *dst[i] = cJSON_IsNumber(v) ? v->valuedouble : 0;
    }
    const cJSON *pc = cJSON_GetObjectItemCaseSensitive(j, "kld_pct");
    if (cJSON_IsArray(pc) && cJSON_GetArraySize(pc) == NB_KLD_NPCT) {
        int q = 0;
        for (const cJSON *v = pc->child; v; v = v->next) r->kld_pct[q++] = cJSON_IsNumber(v) ? v->valuedouble : 0;
        r->has_kld_pct = true;
    }
    const cJSON *hc = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "kld_histogram"), "counts");
    if (cJSON_IsArray(hc) && cJSON_GetArraySize(hc) == NB_KLD_HIST_BINS) {
        int q = 0;
        for (const cJSON *v = hc->child; v; v = v->next)
            r->kld_hist[q++] = cJSON_IsNumber(v) && v->valuedouble >= 0 ? (uint64_t)v->valuedouble : 0;
        r->has_kld_hist = true;
    }
    cJSON_Delete(j);
    r->validated = true;
    return NB_OK;
}

/* The quality gate: every limit the recipe sets, and by how much a miss misses. */
static void gate(nb_build_result *r) {
    const nb_recipe *rc = &r->recipe;
    size_t o = 0;
    double ppl_inc = r->ppl_ref > 0 ? 100.0 * (r->ppl / r->ppl_ref - 1.0) : 0;
    if (rc->gate_kld && r->kld > rc->max_kld)
        o += (size_t)snprintf(r->gate_msg + o, sizeof r->gate_msg - o, "mean KLD %.6f > max_kld %.6f (by %.6f); ",
                              r->kld, rc->max_kld, r->kld - rc->max_kld);
    if (rc->gate_ppl && ppl_inc > rc->max_ppl_increase_pct && o < sizeof r->gate_msg)
        o += (size_t)snprintf(r->gate_msg + o, sizeof r->gate_msg - o,
                              "PPL +%.3f%% > max_ppl_increase_pct %.3f%% (by %.3f points); ", ppl_inc,
                              rc->max_ppl_increase_pct, ppl_inc - rc->max_ppl_increase_pct);
    if (rc->gate_top && 100.0 * r->same_top < rc->min_same_top_pct && o < sizeof r->gate_msg)
        o += (size_t)snprintf(r->gate_msg + o, sizeof r->gate_msg - o,
                              "same top token %.3f%% < min_same_top_pct %.3f%% (by %.3f points); ", 100.0 * r->same_top,
                              rc->min_same_top_pct, rc->min_same_top_pct - 100.0 * r->same_top);
    r->gate_failed = o > 0;
    if (o >= 2 && o < sizeof r->gate_msg) r->gate_msg[o - 2] = 0;
}

/* OUT/name: a hard link to the stage's file (or a copy when linking fails). */
static nb_status publish(const char *from, const char *to, nb_ctx *ctx) {
    unlink(to);
    if (link(from, to) == 0) return NB_OK;
    char *buf = NULL;
    FILE *in = fopen(from, "rb");
    if (!in) return nb_err_errno(ctx, errno, "%s", from);
    nb_afile f;
    nb_status st = nb_afile_open(&f, to, false, ctx);
    buf = st == NB_OK ? nb_malloc(NULL, 1u << 20, "build") : NULL;
    if (st == NB_OK && !buf) st = nb_err(ctx, NB_ERR_NOMEM, "out of memory");
    size_t got;
    while (st == NB_OK && (got = fread(buf, 1, 1u << 20, in)) > 0) st = nb_afile_write(&f, buf, got, ctx);
    if (st == NB_OK && ferror(in)) st = nb_err_errno(ctx, errno ? errno : EIO, "%s: read", from);
    if (st == NB_OK) st = nb_afile_commit(&f, NULL, ctx);
    nb_afile_abort(&f);
    fclose(in);
    free(buf);
    return st;
}

static char *manifest_json(const nb_build_result *r, const nb_build_opts *o, const char *plan_json) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON *rec = cJSON_Parse(r->recipe.text);
    cJSON_AddItemToObject(j, "recipe", rec ? rec : cJSON_CreateNull());
    cJSON *nb = cJSON_AddObjectToObject(j, "nibble");
    cJSON_AddStringToObject(nb, "version", NB_VERSION);
    cJSON_AddStringToObject(nb, "commit", o->commit ? o->commit : "unknown");
    cJSON *plan = plan_json ? cJSON_Parse(plan_json) : NULL;
    if (plan) {
        cJSON *src = cJSON_GetObjectItemCaseSensitive(plan, "source");
        if (src) cJSON_AddItemToObject(j, "source", cJSON_Duplicate(src, true));
        cJSON_AddItemToObject(j, "plan", plan);
    }
    char *res = nb_build_result_json(r);
    cJSON *rj = res ? cJSON_Parse(res) : NULL;
    free(res);
    if (rj) {
        cJSON_AddItemToObject(j, "metrics", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(rj, "validation"), true));
        cJSON_AddItemToObject(j, "timings", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(rj, "stages"), true));
        cJSON_Delete(rj);
    }
    cJSON *oa = r->n_outputs ? cJSON_AddArrayToObject(j, "outputs") : NULL;
    for (size_t i = 0; oa && i < r->n_outputs; i++) { /* each HF directory; its files are in "files" as DIR/FILE */
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "format", r->outputs[i].format);
        cJSON_AddStringToObject(e, "dir", r->recipe.outputs[i].name);
        cJSON_AddNumberToObject(e, "files", (double)r->outputs[i].n_files);
        cJSON_AddNumberToObject(e, "bytes", (double)r->outputs[i].bytes);
        cJSON_AddItemToArray(oa, e);
    }
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

nb_status nb_build_run(const nb_build_opts *o, nb_build_result *r, nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    double t0 = nb_now();
    NB_RETURN_IF(ctx, !o || !o->recipe_path, NB_ERR_INVALID, "build: no recipe given");
    nb_recipe_var vars[65];
    size_t nv = 0;
    for (size_t i = 0; i < o->n_vars && nv < 64; i++) vars[nv++] = o->vars[i];
    if (o->source) vars[nv++] = (nb_recipe_var){"SOURCE", o->source};
    NB_TRY(nb_recipe_load(o->recipe_path, vars, nv, &r->recipe, ctx));
    const nb_recipe *rc = &r->recipe;
    NB_TRY(check_outputs(rc, ctx));
    builder b = {.o = o, .r = r, .ctx = ctx};
    char dflt[PATH_MAX];
    snprintf(dflt, sizeof dflt, "nibble-out/%s", rc->name);
    r->out_dir = nb_strdup(ctx, o->out_dir ? o->out_dir : dflt);
    if (!r->out_dir) return NB_ERR_NOMEM;
    if (o->work_dir) snprintf(b.work, sizeof b.work, "%s", o->work_dir);
    else snprintf(b.work, sizeof b.work, "%s/.work", r->out_dir);
    NB_TRY(mkdir_p(r->out_dir, ctx));
    NB_TRY(mkdir_p(b.work, ctx));
    bool imx = rc->method && !strcmp(rc->method, "imatrix");
    bool prune_stage = rc->prune && !rc->prune_auto; /* auto: the quantize stage prunes as its plan says */
    b.n_stages = (rc->n_adapters > 0) + prune_stage + imx + 1 + (rc->eval_text ? 2 : 0) + (int)rc->n_outputs;

    char *merged = NULL, *pruned = NULL, *imatrix = NULL, *model = NULL, *reflog = NULL, *plan_json = NULL;
    char *report = NULL, *man = NULL;
    nb_bundle_file *files = NULL;
    size_t nf = 0;
    nb_status st = NB_OK;
    key kin;
    key_init(&kin, "source");
    NB_CHECK_GOTO(st, key_file(&kin, "source", rc->source, ctx), out);
    const char *cur = rc->source;
    if (rc->n_adapters) {
        NB_CHECK_GOTO(st, do_merge(&b, cur, &merged, &kin), out);
        cur = merged;
    }
    const char *ref = cur;      /* the variant is judged against the (merged) source */
    key kref = kin;
    if (prune_stage) {
        NB_CHECK_GOTO(st, do_prune(&b, cur, &pruned, &kin), out);
        cur = pruned;
    }
    if (imx) NB_CHECK_GOTO(st, do_calibrate(&b, cur, &imatrix, &kin), out);
    key kq;
    NB_CHECK_GOTO(st, do_quantize(&b, cur, imatrix, &model, &plan_json, &kin, &kq), out);
    {
        unsigned char d[32];
        NB_CHECK_GOTO(st, nb_sha256_file(model, d, ctx), out);
        memcpy(r->model_sha256, d, 32);
        struct stat sb;
        if (stat(model, &sb) == 0) r->model_bytes = (uint64_t)sb.st_size;
    }
    {
        cJSON *pj = cJSON_Parse(plan_json);
        const cJSON *bi = pj ? cJSON_GetObjectItemCaseSensitive(pj, "bytes_in") : NULL,
                    *ne = pj ? cJSON_GetObjectItemCaseSensitive(pj, "n_elements") : NULL,
                    *bo = pj ? cJSON_GetObjectItemCaseSensitive(pj, "bpw_out") : NULL;
        r->source_bytes = cJSON_IsNumber(bi) ? (uint64_t)bi->valuedouble : 0;
        r->n_elements = cJSON_IsNumber(ne) ? (uint64_t)ne->valuedouble : 0;
        r->bpw = cJSON_IsNumber(bo) ? bo->valuedouble : 0;
        cJSON_Delete(pj);
    }
    if (rc->eval_text) {
        char mk[65];
        nb_sha256_hex(r->model_sha256, mk);
        NB_CHECK_GOTO(st, do_reference(&b, ref, &reflog, &kref), out);
        NB_CHECK_GOTO(st, do_validate(&b, model, reflog, mk), out);
        gate(r);
    }
    for (size_t i = 0; i < rc->n_outputs; i++) NB_CHECK_GOTO(st, do_export(&b, i, cur, model, imatrix, &kq), out);
    /* outputs */
    r->report_path = nb_path_join(ctx, r->out_dir, "report.html");
    r->manifest_path = nb_path_join(ctx, r->out_dir, "manifest.json");
    if (!r->report_path || !r->manifest_path) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "out of memory");
    if (rc->gguf) {
        r->model_path = nb_path_join(ctx, r->out_dir, rc->out_file);
        if (!r->model_path) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "out of memory");
        NB_CHECK_GOTO(st, publish(model, r->model_path, ctx), out);
    }
    /* every file the manifest lists: the model, the report, each HF directory's files as DIR/FILE */
    nf = 1 + (rc->gguf ? 1 : 0);
    for (size_t i = 0; i < r->n_outputs; i++) nf += r->outputs[i].n_files;
    files = nb_calloc(ctx, nf, sizeof *files, "bundle files");
    if (!files) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "out of memory");
    size_t k = 0;
    if (rc->gguf) files[k++] = (nb_bundle_file){.path = r->model_path, .name = rc->out_file};
    files[k++] = (nb_bundle_file){.path = r->report_path, .name = "report.html"};
    for (size_t i = 0; i < r->n_outputs; i++) {
        nb_build_output *bo = &r->outputs[i];
        const char *dn = rc->outputs[i].name;
        for (size_t f = 0; f < bo->n_files; f++, k++) {
            files[k].path = nb_path_join(ctx, bo->dir, bo->names[f]);
            files[k].name = nb_path_join(ctx, dn, bo->names[f]);
            if (!files[k].path || !files[k].name) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "out of memory");
            struct stat sb;
            if (stat(files[k].path, &sb) != 0) {
                st = nb_err_errno(ctx, errno, "%s", files[k].path);
                goto out;
            }
            bo->bytes += (uint64_t)sb.st_size;
        }
    }
    r->seconds = nb_now() - t0;
    report = nb_build_report_html(r, plan_json);
    if (!report) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "out of memory");
    NB_CHECK_GOTO(st, nb_afile_write_text(r->report_path, report, ctx), out);
    man = manifest_json(r, o, plan_json);
    if (!man) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "out of memory");
    {
        NB_CHECK_GOTO(st, nb_bundle_hash_files(files, nf, ctx), out);
        /* the directory's manifest: the same as the bundle's */
        char *dm = nb_bundle_manifest(man, files, nf);
        if (!dm) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "out of memory");
        st = nb_afile_write_text(r->manifest_path, dm, ctx);
        free(dm);
        if (st != NB_OK) goto out;
        if (rc->bundle) {
            char bn[PATH_MAX];
            snprintf(bn, sizeof bn, "%s/%s.tar.zst", r->out_dir, rc->name);
            r->bundle_path = nb_strdup(ctx, bn);
            if (!r->bundle_path) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "out of memory");
            NB_CHECK_GOTO(st, nb_bundle_write(r->bundle_path, man, files, nf, 3, ctx), out);
        }
    }
    r->seconds = nb_now() - t0;
out:
    for (size_t i = 0; files && i < nf; i++)
        if (files[i].path != r->model_path && files[i].path != r->report_path) {
            free((char *)files[i].path);
            free((char *)files[i].name);
        }
    free(files);
    free(merged); free(pruned); free(imatrix); free(model); free(reflog); free(plan_json); free(report); free(man);
    return st;
}

void nb_build_result_free(nb_build_result *r) {
    if (!r) return;
    nb_recipe_free(&r->recipe);
    free(r->budget_json);
    free(r->errors_json);
    free(r->out_dir); free(r->model_path); free(r->report_path); free(r->manifest_path); free(r->bundle_path);
    for (size_t i = 0; i < r->n_outputs; i++) {
        free(r->outputs[i].dir);
        free_names(r->outputs[i].names, r->outputs[i].n_files);
    }
    memset(r, 0, sizeof *r);
}

char *nb_build_result_json(const nb_build_result *r) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    char hex[65];
    cJSON_AddStringToObject(j, "recipe", r->recipe.name ? r->recipe.name : "");
    cJSON_AddStringToObject(j, "out_dir", r->out_dir ? r->out_dir : "");
    if (r->model_path) cJSON_AddStringToObject(j, "model", r->model_path);
    if (r->report_path) cJSON_AddStringToObject(j, "report", r->report_path);
    if (r->bundle_path) cJSON_AddStringToObject(j, "bundle", r->bundle_path);
    cJSON *oa = r->n_outputs ? cJSON_AddArrayToObject(j, "outputs") : NULL;
    for (size_t i = 0; oa && i < r->n_outputs; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "format", r->outputs[i].format);
        cJSON_AddStringToObject(e, "dir", r->outputs[i].dir ? r->outputs[i].dir : "");
        cJSON_AddNumberToObject(e, "files", (double)r->outputs[i].n_files);
        cJSON_AddNumberToObject(e, "bytes", (double)r->outputs[i].bytes);
        cJSON_AddItemToArray(oa, e);
    }
    cJSON_AddNumberToObject(j, "model_bytes", (double)r->model_bytes);
    cJSON_AddNumberToObject(j, "source_tensor_bytes", (double)r->source_bytes);
    cJSON_AddNumberToObject(j, "bpw", r->bpw);
    nb_sha256_hex(r->model_sha256, hex);
    cJSON_AddStringToObject(j, "sha256", hex);
    if (r->validated) {
        cJSON *v = cJSON_AddObjectToObject(j, "validation");
        cJSON_AddNumberToObject(v, "ppl_reference", r->ppl_ref);
        cJSON_AddNumberToObject(v, "ppl", r->ppl);
        cJSON_AddNumberToObject(v, "ppl_err", r->ppl_err);
        cJSON_AddNumberToObject(v, "kld", r->kld);
        cJSON_AddNumberToObject(v, "kld_err", r->kld_err);
        cJSON_AddNumberToObject(v, "same_top_pct", 100.0 * r->same_top);
        if (r->has_kld_hist) { /* per-token KLD, log-spaced bins (engine/ppl.h) */
            char *hj = nb_kld_hist_json(r->kld_hist);
            cJSON *h = hj ? cJSON_Parse(hj) : NULL;
            free(hj);
            if (h) cJSON_AddItemToObject(v, "kld_histogram", h);
        }
        cJSON_AddBoolToObject(v, "gate_passed", !r->gate_failed);
        if (r->gate_failed) cJSON_AddStringToObject(v, "gate", r->gate_msg);
    }
    cJSON *sa = cJSON_AddArrayToObject(j, "stages");
    for (int i = 0; i < r->n_stages && sa; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "stage", r->stages[i].name);
        cJSON_AddBoolToObject(e, "skipped", r->stages[i].skipped);
        cJSON_AddNumberToObject(e, "seconds", r->stages[i].seconds);
        cJSON_AddItemToArray(sa, e);
    }
    cJSON_AddNumberToObject(j, "seconds", r->seconds);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}
