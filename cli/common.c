/* cli/common.c — helpers shared by the subcommands. */
#include "cli/cli.h"

#include "formats/json_strict.h"
#include <cjson/cJSON.h>
#include <stdlib.h>
#include "core/paths.h"
#include "core/types.h"
#include "distill/prune.h"
#include "engine/engine.h"

#include <stdio.h>
#include <string.h>

int nb_cli_exit_code(nb_status st) {
    /* After a failed allocation, a "bad input" verdict may be its consequence
     * (cJSON_Parse returns NULL for both): the run failed for lack of memory. */
    if (st != NB_OK && nb_alloc_failed()) return NB_EXIT_IO;
    switch (st) {
    case NB_OK: return NB_EXIT_OK;
    case NB_ERR_INVALID: return NB_EXIT_USAGE;
    case NB_ERR_FORMAT: case NB_ERR_UNSUPPORTED: case NB_ERR_RANGE: return NB_EXIT_INPUT;
    default: return NB_EXIT_IO;
    }
}

int nb_cli_fail(const char *cmd, nb_ctx *ctx, nb_status st) {
    const char *m = nb_errmsg(ctx);
    bool oom = nb_alloc_failed() && st != NB_ERR_NOMEM;
    fprintf(stderr, "nibble %s: %s%s%s\n", cmd, oom ? "out of memory (then: " : "", m && *m ? m : nb_status_name(st),
            oom ? ")" : "");
    if (ctx->event_fn) {
        /* --json: the failure as the last event, so a reader of the lines sees why they stop */
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "event", "error");
        cJSON_AddStringToObject(j, "command", cmd);
        cJSON_AddStringToObject(j, "message", m && *m ? m : nb_status_name(st));
        cJSON_AddNumberToObject(j, "exit", nb_cli_exit_code(st));
        char *js = nb_json_print(j, false);
        if (js) ctx->event_fn(ctx->event_user, js);
        free(js);
        cJSON_Delete(j);
    }
    return nb_cli_exit_code(st);
}

int nb_cli_check_paths(const char *cmd, nb_ctx *ctx, const char *const *in, size_t n_in, const char *const *out,
                       size_t n_out) {
    nb_status st = nb_paths_check(in, n_in, out, n_out, ctx);
    return st == NB_OK ? NB_OPTS_RUN : nb_cli_fail(cmd, ctx, st);
}

nb_status nb_cli_opt_float_type(const nb_opt *opt, const char *arg, nb_ctx *ctx) {
    nb_type t;
    if (!nb_type_from_name(arg, &t) || (t != NB_TYPE_F32 && t != NB_TYPE_F16 && t != NB_TYPE_BF16))
        return nb_err(ctx, NB_ERR_INVALID, "--%s must be f32, f16 or bf16 (got '%s')", opt->name, arg);
    *(nb_type *)opt->dest = t;
    return NB_OK;
}

const nb_opt_choice nb_cli_kv_types[] = {{"f16", NB_TYPE_F16}, {"q8_0", NB_TYPE_Q8_0}, {"q4_0", NB_TYPE_Q4_0}, {0, 0}};
const nb_opt_choice nb_cli_cache_types[] = {
    {"f32", NB_CACHE_F32}, {"f16", NB_CACHE_F16}, {"q8_0", NB_CACHE_Q8_0}, {0, 0}};
const nb_opt_choice nb_cli_runtimes[] = {{"llama.cpp", NB_RUNTIME_LLAMACPP}, {"nibble", NB_RUNTIME_NIBBLE}, {0, 0}};
const nb_opt_choice nb_cli_prune_criteria[] = {{"reap", NB_PRUNE_REAP}, {"freq", NB_PRUNE_FREQ}, {0, 0}};

/* --json: progress events as JSON lines on stdout (core/progress.h), before the result line. */
static void stdout_event(void *user, const char *json) {
    (void)user;
    flockfile(stdout);
    fputs(json, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    funlockfile(stdout);
}

nb_status nb_cli_add_rule(const nb_opt *o, const char *arg, nb_ctx *ctx) { return nb_rules_add(o->dest, arg, ctx); }

void nb_cli_json_events(nb_ctx *ctx) {
    ctx->event_fn = stdout_event;
    ctx->event_user = NULL;
}

int nb_cli_budget_finish(const nb_cmd_spec *spec, const nb_args *args, const nb_cli_budget *b, const char *ctx_name,
                         nb_budget *out) {
    memset(out, 0, sizeof *out);
    int n = b->size_set + b->bpw_set + b->budget_set;
    if (n > 1) return nb_opts_usage_error(spec, args, "give one of --target-size, --target-bpw and --budget");
    if (!b->budget_set && (b->ctx_set || b->kv_set || b->overhead_set))
        return nb_opts_usage_error(spec, args, "--%s, --kv-type and --overhead size a --budget: give --budget SIZE",
                                   ctx_name);
    if (b->budget_set && !b->ctx_set)
        return nb_opts_usage_error(spec, args, "--budget needs --%s N (the context the memory must hold)", ctx_name);
    if ((b->allow_prune || b->criterion_set) && (b->bpw_set || !n))
        return nb_opts_usage_error(spec, args, "--allow-prune needs --target-size or --budget (bits per weight do "
                                   "not shrink when experts go)");
    if ((b->cal_text || b->cal_ctx || b->cal_chunks) && !n)
        return nb_opts_usage_error(spec, args, "--calibrate-kld calibrates the planner's errors: give a target");
    if (b->measure_state && !n)
        return nb_opts_usage_error(spec, args, "--measure-state keeps the planner's measurement: give a target");
    if (b->criterion_set && !b->allow_prune)
        return nb_opts_usage_error(spec, args, "--prune-criterion needs --allow-prune");
    out->kind = b->size_set ? NB_BUDGET_FILE : b->bpw_set ? NB_BUDGET_BPW : b->budget_set ? NB_BUDGET_MEMORY
                                                                                        : NB_BUDGET_NONE;
    out->bytes = b->size_set ? b->target_size : b->budget;
    out->bpw = b->target_bpw;
    out->mem = (nb_mem_opts){.n_ctx = (uint32_t)b->ctx, .kv_type = b->kv_set ? (nb_type)b->kv_type : NB_TYPE_F16,
                             .runtime = (nb_runtime)b->runtime,
                             .overhead = b->overhead_set ? b->overhead : NB_MEM_DEFAULT_OVERHEAD};
    out->allow_prune = b->allow_prune;
    out->prune_criterion = nb_prune_criterion_name((nb_prune_criterion)(b->criterion_set ? b->prune_criterion
                                                                                         : NB_PRUNE_REAP));
    return NB_OPTS_RUN;
}
