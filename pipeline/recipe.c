/* pipeline/recipe.c — recipes (see pipeline/recipe.h). */
#include "pipeline/recipe.h"

#include "core/file.h"
#include "core/str.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nb_recipe_free(nb_recipe *r) {
    if (!r) return;
    free(r->path); free(r->text); free(r->name); free(r->description); free(r->source);
    for (size_t i = 0; i < r->n_adapters; i++) free(r->adapters[i].path);
    free(r->prune_criterion); free(r->calib_text); free(r->method); free(r->target_mix); free(r->target_plan);
    free(r->target_kv_type);
    free(r->target_runtime);
    free(r->target_calibrate);
    for (size_t i = 0; i < r->n_rules; i++) free(r->rules[i]);
    free(r->eval_text); free(r->out_file);
    for (size_t i = 0; i < r->n_outputs; i++) free(r->outputs[i].name);
    memset(r, 0, sizeof *r);
}

/* ---- variables -------------------------------------------------------------------------------------- */

nb_status nb_recipe_subst(const char *in, const char *what, const nb_recipe_var *vars, size_t n_vars, char **out,
                          nb_ctx *ctx) {
    *out = NULL;
    size_t cap = strlen(in) + 64, len = 0;
    char *buf = nb_malloc(ctx, cap, "recipe text");
    if (!buf) return NB_ERR_NOMEM;
    for (const char *p = in; *p;) {
        const char *add = p;
        size_t n = 1;
        if (p[0] == '$' && p[1] == '$') {
            n = 1;
            p += 2;
        } else if (p[0] == '$' && p[1] == '{') {
            const char *e = strchr(p + 2, '}');
            if (!e) { free(buf); return nb_err(ctx, NB_ERR_FORMAT, "%s: unterminated '${'", what); }
            size_t k = (size_t)(e - p - 2);
            const char *dflt = NULL; /* ${NAME:-default} */
            const char *colon = memchr(p + 2, ':', k);
            size_t dlen = 0;
            if (colon && colon[1] == '-') {
                dflt = colon + 2;
                dlen = (size_t)(e - dflt);
                k = (size_t)(colon - p - 2);
            }
            const char *val = NULL;
            for (size_t v = 0; v < n_vars && !val; v++)
                if (strlen(vars[v].name) == k && !strncmp(vars[v].name, p + 2, k)) val = vars[v].value;
            if (!val && !dflt) {
                free(buf);
                return nb_err(ctx, NB_ERR_FORMAT, "%s: variable ${%.*s} is not set (nibble build --var %.*s=VALUE)",
                              what, (int)k, p + 2, (int)k, p + 2);
            }
            add = val ? val : dflt;
            n = val ? strlen(val) : dlen;
            p = e + 1;
        } else {
            p++;
        }
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            char *nb = nb_realloc(NULL, buf, cap, "recipe");
            if (!nb) { free(buf); return nb_err(ctx, NB_ERR_NOMEM, "out of memory"); }
            buf = nb;
        }
        memcpy(buf + len, add, n);
        len += n;
    }
    buf[len] = 0;
    *out = buf;
    return NB_OK;
}

/* ---- typed, strict access ------------------------------------------------------------------------------ */

typedef struct rd {
    const char *what;  /* the file */
    const char *base;  /* the recipe path relative paths are anchored to ("" for none) */
    nb_ctx *ctx;
} rd;

static nb_status keys(const rd *r, const cJSON *o, const char *where, const char *const *allowed) {
    for (const cJSON *c = o->child; c; c = c->next) {
        bool ok = false;
        for (size_t k = 0; allowed[k] && !ok; k++) ok = !strcmp(c->string, allowed[k]);
        if (!ok) return nb_err(r->ctx, NB_ERR_FORMAT, "%s: %s%s%s: unknown key", r->what, where, *where ? "." : "", c->string);
    }
    return NB_OK;
}

static nb_status want(const rd *r, const char *where, const char *key, const char *type) {
    return nb_err(r->ctx, NB_ERR_FORMAT, "%s: %s%s%s: expected %s", r->what, where, *where ? "." : "", key, type);
}

static nb_status get_str(const rd *r, const cJSON *o, const char *where, const char *key, bool path, char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return NB_OK;
    if (!cJSON_IsString(v) || !v->valuestring[0]) return want(r, where, key, "a non-empty string");
    const char *s = v->valuestring;
    *out = path && s[0] != '/' && r->base[0] ? nb_path_sibling(r->ctx, r->base, s) : nb_strdup(r->ctx, s);
    return *out ? NB_OK : NB_ERR_NOMEM;
}

static nb_status get_num(const rd *r, const cJSON *o, const char *where, const char *key, double lo, double hi,
                         bool integer, double *out, bool *given) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (given) *given = v != NULL;
    if (!v) return NB_OK;
    char ty[96];
    snprintf(ty, sizeof ty, "%s in [%g, %g]", integer ? "an integer" : "a number", lo, hi);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi ||
        (integer && v->valuedouble != floor(v->valuedouble)))
        return want(r, where, key, ty);
    *out = v->valuedouble;
    return NB_OK;
}

static nb_status get_bool(const rd *r, const cJSON *o, const char *where, const char *key, bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return NB_OK;
    if (!cJSON_IsBool(v)) return want(r, where, key, "true or false");
    *out = cJSON_IsTrue(v);
    return NB_OK;
}

static nb_status get_obj(const rd *r, const cJSON *o, const char *key, const char *const *allowed, const cJSON **out) {
    *out = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!*out) return NB_OK;
    if (!cJSON_IsObject(*out)) return want(r, "", key, "an object");
    return keys(r, *out, key, allowed);
}

static bool one_of(const char *s, const char *const *names) {
    for (size_t k = 0; names[k]; k++)
        if (!strcmp(s, names[k])) return true;
    return false;
}

/* ---- sections ------------------------------------------------------------------------------------------ */

static nb_status parse_adapters(const rd *r, const cJSON *j, nb_recipe *out) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "adapters");
    if (!a) return NB_OK;
    if (!cJSON_IsArray(a)) return want(r, "", "adapters", "an array");
    static const char *const k_ad[] = {"path", "weight", NULL};
    for (const cJSON *e = a->child; e; e = e->next) {
        char where[32];
        snprintf(where, sizeof where, "adapters[%zu]", out->n_adapters);
        NB_RETURN_IF(r->ctx, out->n_adapters == NB_RECIPE_MAX_ADAPTERS, NB_ERR_RANGE, "%s: more than %d adapters",
                     r->what, NB_RECIPE_MAX_ADAPTERS);
        nb_recipe_adapter *ad = &out->adapters[out->n_adapters++];
        ad->weight = 1.0;
        if (cJSON_IsString(e)) {
            ad->path = e->valuestring[0] != '/' && r->base[0] ? nb_path_sibling(r->ctx, r->base, e->valuestring)
                                                              : nb_strdup(r->ctx, e->valuestring);
            if (!ad->path) return NB_ERR_NOMEM;
            continue;
        }
        if (!cJSON_IsObject(e)) return want(r, "", where, "a path or {\"path\", \"weight\"}");
        NB_TRY(keys(r, e, where, k_ad));
        NB_TRY(get_str(r, e, where, "path", true, &ad->path));
        if (!ad->path) return want(r, where, "path", "a non-empty string");
        NB_TRY(get_num(r, e, where, "weight", -1e6, 1e6, false, &ad->weight, NULL));
    }
    return NB_OK;
}

static nb_status parse_prune(const rd *r, const cJSON *j, nb_recipe *out) {
    static const char *const k[] = {"keep", "keep_ratio", "criterion", "renormalize_topk", NULL};
    const cJSON *o;
    NB_TRY(get_obj(r, j, "prune", k, &o));
    if (!o) return NB_OK;
    out->prune = true;
    double keep = 0;
    bool has_keep = false, has_ratio = false;
    const cJSON *ka = cJSON_GetObjectItemCaseSensitive(o, "keep");
    if (cJSON_IsString(ka)) {
        /* "auto": the size-budget planner decides (quant/budget.h allow_prune) */
        if (strcmp(ka->valuestring, "auto")) return want(r, "prune", "keep", "an integer or \"auto\"");
        out->prune_auto = has_keep = true;
    } else {
        NB_TRY(get_num(r, o, "prune", "keep", 1, 65536, true, &keep, &has_keep));
    }
    NB_TRY(get_num(r, o, "prune", "keep_ratio", 1e-9, 1, false, &out->prune_keep_ratio, &has_ratio));
    NB_RETURN_IF(r->ctx, has_keep == has_ratio, NB_ERR_FORMAT, "%s: prune: give exactly one of keep and keep_ratio",
                 r->what);
    out->prune_keep = (int)keep;
    NB_TRY(get_str(r, o, "prune", "criterion", false, &out->prune_criterion));
    static const char *const crit[] = {"reap", "freq", NULL};
    if (out->prune_criterion && !one_of(out->prune_criterion, crit)) return want(r, "prune", "criterion", "\"reap\" or \"freq\"");
    return get_bool(r, o, "prune", "renormalize_topk", &out->prune_renormalize);
}

static nb_status parse_calibration(const rd *r, const cJSON *j, nb_recipe *out) {
    static const char *const k[] = {"text", "ctx", "tokens", "seed", NULL};
    const cJSON *o;
    NB_TRY(get_obj(r, j, "calibration", k, &o));
    if (!o) return NB_OK;
    double v = 0;
    NB_TRY(get_str(r, o, "calibration", "text", true, &out->calib_text));
    if (!out->calib_text) return want(r, "calibration", "text", "a non-empty string");
    NB_TRY(get_num(r, o, "calibration", "ctx", 2, 1 << 20, true, &v, NULL));
    out->calib_ctx = (int)v;
    v = 0;
    NB_TRY(get_num(r, o, "calibration", "tokens", 1, 1e15, true, &v, NULL));
    out->calib_tokens = (uint64_t)v;
    v = 0;
    NB_TRY(get_num(r, o, "calibration", "seed", 0, 9007199254740992.0, true, &v, NULL));
    out->calib_seed = (uint64_t)v;
    return NB_OK;
}

static nb_status parse_target(const rd *r, const cJSON *j, nb_recipe *out) {
    static const char *const k[] = {"mix",     "plan",     "size",      "bpw",          "budget", "ctx", "kv_type",
                                    "runtime", "overhead", "calibrate", "calibrate_ctx", NULL};
    const cJSON *o;
    NB_TRY(get_obj(r, j, "target", k, &o));
    NB_RETURN_IF(r->ctx, !o, NB_ERR_FORMAT, "%s: target: missing (give {\"mix\": \"q4_k_m\"} or {\"plan\": FILE})",
                 r->what);
    int kinds = 0;
    for (const char *const *p = (const char *const[]){"mix", "plan", "size", "bpw", "budget", NULL}; *p; p++)
        kinds += cJSON_GetObjectItemCaseSensitive(o, *p) != NULL;
    NB_RETURN_IF(r->ctx, kinds != 1, NB_ERR_FORMAT, "%s: target: give exactly one of mix, plan, size, bpw, budget",
                 r->what);
    NB_TRY(get_str(r, o, "target", "mix", false, &out->target_mix));
    NB_TRY(get_str(r, o, "target", "plan", true, &out->target_plan));
    if (out->target_mix) out->target = NB_TARGET_MIX;
    else if (out->target_plan) out->target = NB_TARGET_PLAN;
    else if (cJSON_GetObjectItemCaseSensitive(o, "bpw")) {
        out->target = NB_TARGET_BPW;
        NB_TRY(get_num(r, o, "target", "bpw", 1, 32, false, &out->target_bpw, NULL));
    } else {
        out->target = cJSON_GetObjectItemCaseSensitive(o, "size") ? NB_TARGET_SIZE : NB_TARGET_BUDGET;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, out->target == NB_TARGET_SIZE ? "size" : "budget");
        if (!cJSON_IsString(v) || !nb_parse_size(v->valuestring, &out->target_bytes) || !out->target_bytes)
            return want(r, "target", v->string, "a size such as \"5.5GiB\" or \"24G\"");
    }
    double c = 0;
    NB_TRY(get_num(r, o, "target", "ctx", 1, 1 << 24, true, &c, NULL));
    out->target_ctx = (int)c;
    NB_RETURN_IF(r->ctx, out->target == NB_TARGET_BUDGET && !out->target_ctx, NB_ERR_FORMAT,
                 "%s: target: a memory budget needs \"ctx\" (the context it must hold)", r->what);
    NB_TRY(get_str(r, o, "target", "kv_type", false, &out->target_kv_type));
    static const char *const kv[] = {"f16", "q8_0", "q4_0", NULL};
    if (out->target_kv_type && !one_of(out->target_kv_type, kv)) return want(r, "target", "kv_type", "\"f16\", \"q8_0\" or \"q4_0\"");
    const cJSON *ov = cJSON_GetObjectItemCaseSensitive(o, "overhead");
    out->target_overhead = UINT64_MAX;
    if (ov && (!cJSON_IsString(ov) || !nb_parse_size(ov->valuestring, &out->target_overhead)))
        return want(r, "target", "overhead", "a size such as \"256MiB\" or \"0\"");
    NB_TRY(get_str(r, o, "target", "runtime", false, &out->target_runtime));
    static const char *const rt[] = {"llama.cpp", "nibble", NULL};
    if (out->target_runtime && !one_of(out->target_runtime, rt)) return want(r, "target", "runtime", "\"llama.cpp\" or \"nibble\"");
    NB_TRY(get_str(r, o, "target", "calibrate", true, &out->target_calibrate));
    c = 0;
    NB_TRY(get_num(r, o, "target", "calibrate_ctx", 4, 1 << 20, true, &c, NULL));
    out->target_calibrate_ctx = (int)c;
    NB_RETURN_IF(r->ctx, (out->target_calibrate || out->target_calibrate_ctx) &&
                             (out->target == NB_TARGET_MIX || out->target == NB_TARGET_PLAN),
                 NB_ERR_FORMAT, "%s: target: \"calibrate\" calibrates the planner: give size, bpw or budget", r->what);
    return NB_OK;
}

static nb_status parse_validation(const rd *r, const cJSON *j, nb_recipe *out) {
    static const char *const k[] = {"text", "ctx", "chunks", "gate", NULL};
    static const char *const kg[] = {"max_kld", "max_ppl_increase_pct", "min_same_top_pct", NULL};
    const cJSON *o, *g = NULL;
    NB_TRY(get_obj(r, j, "validation", k, &o));
    if (!o) return NB_OK;
    double v = 0;
    NB_TRY(get_str(r, o, "validation", "text", true, &out->eval_text));
    if (!out->eval_text) return want(r, "validation", "text", "a non-empty string");
    NB_TRY(get_num(r, o, "validation", "ctx", 4, 1 << 20, true, &v, NULL));
    out->eval_ctx = (int)v;
    v = 0;
    NB_TRY(get_num(r, o, "validation", "chunks", 0, 1 << 30, true, &v, NULL));
    out->eval_chunks = (int)v;
    g = cJSON_GetObjectItemCaseSensitive(o, "gate");
    if (!g) return NB_OK;
    if (!cJSON_IsObject(g)) return want(r, "validation", "gate", "an object");
    NB_TRY(keys(r, g, "validation.gate", kg));
    NB_TRY(get_num(r, g, "validation.gate", "max_kld", 0, 1e9, false, &out->max_kld, &out->gate_kld));
    NB_TRY(get_num(r, g, "validation.gate", "max_ppl_increase_pct", -100, 1e9, false, &out->max_ppl_increase_pct,
                   &out->gate_ppl));
    return get_num(r, g, "validation.gate", "min_same_top_pct", 0, 100, false, &out->min_same_top_pct, &out->gate_top);
}

/* A name inside the output directory: a plain name, no directories, not hidden. */
static bool plain_name(const char *s) { return !strchr(s, '/') && s[0] != '.'; }

/* outputs.formats: ["gguf", "gptq", {"format": "awq", "name": "DIR"}, ...]. */
static nb_status parse_formats(const rd *r, const cJSON *o, nb_recipe *out) {
    static const char *const kf[] = {"format", "name", NULL};
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "formats");
    out->gguf = !f;
    if (!f) return NB_OK;
    if (!cJSON_IsArray(f) || !f->child) return want(r, "outputs", "formats", "a non-empty array");
    size_t i = 0;
    for (const cJSON *e = f->child; e; e = e->next, i++) {
        char where[48];
        snprintf(where, sizeof where, "outputs.formats[%zu]", i);
        const char *fmt = cJSON_IsString(e) ? e->valuestring : NULL;
        char *name = NULL;
        if (cJSON_IsObject(e)) {
            NB_TRY(keys(r, e, where, kf));
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, "format");
            fmt = cJSON_IsString(v) ? v->valuestring : NULL;
            if (!fmt) return want(r, where, "format", "a string");
            NB_TRY(get_str(r, e, where, "name", false, &name));
        } else if (!fmt) {
            return want(r, "", where, "a format name or {\"format\", \"name\"}");
        }
        nb_hf_quant q = NB_HF_PLAIN;
        bool gguf = !strcmp(fmt, "gguf");
        if (!gguf && !nb_hf_quant_from_name(fmt, &q)) {
            free(name);
            return nb_err(r->ctx, NB_ERR_FORMAT, "%s: %s: unknown format '%s' (gguf, hf, bnb-nf4, gptq, awq)", r->what,
                          where, fmt);
        }
        bool dup = gguf && out->gguf;
        for (size_t k = 0; k < out->n_outputs && !gguf; k++) dup = dup || out->outputs[k].format == q;
        if (dup) { free(name); return nb_err(r->ctx, NB_ERR_FORMAT, "%s: %s: '%s' is listed twice", r->what, where, fmt); }
        if (name && !plain_name(name)) {
            free(name);
            return nb_err(r->ctx, NB_ERR_FORMAT, "%s: %s.name: a plain name, no directories", r->what, where);
        }
        if (gguf) { /* its name: outputs.file, or here */
            out->gguf = true;
            if (name && out->out_file) {
                free(name);
                return nb_err(r->ctx, NB_ERR_FORMAT, "%s: %s.name: the GGUF is already named by outputs.file", r->what, where);
            }
            if (name) out->out_file = name;
            continue;
        }
        if (!name) {
            size_t n = strlen(out->name) + strlen(fmt) + 2;
            if (!(name = nb_malloc(r->ctx, n, "output name"))) return NB_ERR_NOMEM;
            snprintf(name, n, "%s-%s", out->name, fmt);
        }
        out->outputs[out->n_outputs++] = (nb_recipe_output){q, name, i};
    }
    return NB_OK;
}

static nb_status parse_outputs(const rd *r, const cJSON *j, nb_recipe *out) {
    static const char *const k[] = {"file", "bundle", "formats", NULL};
    const cJSON *o;
    out->bundle = true;
    out->gguf = true;
    NB_TRY(get_obj(r, j, "outputs", k, &o));
    if (o) {
        NB_TRY(get_str(r, o, "outputs", "file", false, &out->out_file));
        NB_TRY(get_bool(r, o, "outputs", "bundle", &out->bundle));
        NB_TRY(parse_formats(r, o, out));
    }
    if (out->out_file) {
        NB_RETURN_IF(r->ctx, !plain_name(out->out_file), NB_ERR_FORMAT,
                     "%s: outputs.file: a plain file name, no directories", r->what);
    } else {
        size_t n = strlen(out->name) + 6;
        out->out_file = nb_malloc(r->ctx, n, "output name");
        if (!out->out_file) return NB_ERR_NOMEM;
        snprintf(out->out_file, n, "%s.gguf", out->name);
    }
    /* every output's name distinct, and none taken by the report, manifest or bundle */
    char bundle[300];
    snprintf(bundle, sizeof bundle, "%s.tar.zst", out->name);
    for (size_t i = 0; i < out->n_outputs; i++) {
        const char *n = out->outputs[i].name;
        bool clash = !strcmp(n, "report.html") || !strcmp(n, "manifest.json") || !strcmp(n, bundle) ||
                     (out->gguf && !strcmp(n, out->out_file));
        for (size_t p = 0; p < i; p++) clash = clash || !strcmp(n, out->outputs[p].name);
        NB_RETURN_IF(r->ctx, clash, NB_ERR_FORMAT, "%s: outputs.formats: the name '%s' is used twice in the output "
                     "directory", r->what, n);
    }
    return NB_OK;
}

nb_status nb_recipe_parse(const char *text, const char *path, const nb_recipe_var *vars, size_t n_vars,
                          nb_recipe *out, nb_ctx *ctx) {
    memset(out, 0, sizeof *out);
    const char *what = path ? path : "recipe";
    out->path = nb_strdup(ctx, path ? path : "");
    if (!out->path) return NB_ERR_NOMEM;
    NB_TRY(nb_recipe_subst(text, what, vars, n_vars, &out->text, ctx));
    cJSON *j = cJSON_Parse(out->text);
    NB_RETURN_IF(ctx, !j, NB_ERR_FORMAT, "%s: not valid JSON (near byte %td)", what,
                 cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - out->text : (ptrdiff_t)0);
    rd r = {what, out->path, ctx};
    static const char *const k_top[] = {"nibble_recipe", "name", "description", "source", "adapters", "qlora",
                                        "prune", "calibration", "method", "target", "rules", "allow_requantize",
                                        "validation", "outputs", NULL};
    static const char *const methods[] = {"rtn", "imatrix", "gptq", NULL};
    nb_status st = NB_OK;
    double ver = 0;
    const cJSON *rules;
    if (!cJSON_IsObject(j)) NB_FAIL_GOTO(st, out_, ctx, NB_ERR_FORMAT, "%s: a recipe is a JSON object", what);
    NB_CHECK_GOTO(st, keys(&r, j, "", k_top), out_);
    NB_CHECK_GOTO(st, get_num(&r, j, "", "nibble_recipe", 1, 1e6, true, &ver, NULL), out_);
    if (ver != NB_RECIPE_VERSION)
        NB_FAIL_GOTO(st, out_, ctx, NB_ERR_FORMAT, "%s: nibble_recipe: must be %d", what, NB_RECIPE_VERSION);
    NB_CHECK_GOTO(st, get_str(&r, j, "", "name", false, &out->name), out_);
    if (!out->name) NB_FAIL_GOTO(st, out_, ctx, NB_ERR_FORMAT, "%s: name: missing", what);
    for (const char *c = out->name; *c; c++)
        if (!(*c == '-' || *c == '_' || *c == '.' || (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') ||
              (*c >= 'A' && *c <= 'Z')))
            NB_FAIL_GOTO(st, out_, ctx, NB_ERR_FORMAT, "%s: name: letters, digits, '-', '_' and '.' only", what);
    NB_CHECK_GOTO(st, get_str(&r, j, "", "description", false, &out->description), out_);
    NB_CHECK_GOTO(st, get_str(&r, j, "", "source", true, &out->source), out_);
    if (!out->source) NB_FAIL_GOTO(st, out_, ctx, NB_ERR_FORMAT, "%s: source: missing (e.g. \"${SOURCE}\")", what);
    NB_CHECK_GOTO(st, parse_adapters(&r, j, out), out_);
    NB_CHECK_GOTO(st, get_bool(&r, j, "", "qlora", &out->qlora), out_);
    NB_CHECK_GOTO(st, parse_prune(&r, j, out), out_);
    NB_CHECK_GOTO(st, parse_calibration(&r, j, out), out_);
    NB_CHECK_GOTO(st, get_str(&r, j, "", "method", false, &out->method), out_);
    if (out->method && !one_of(out->method, methods))
        NB_FAIL_GOTO(st, out_, ctx, NB_ERR_FORMAT, "%s: method: expected \"rtn\", \"imatrix\" or \"gptq\"", what);
    NB_CHECK_GOTO(st, parse_target(&r, j, out), out_);
    rules = cJSON_GetObjectItemCaseSensitive(j, "rules");
    if (rules && !cJSON_IsArray(rules)) NB_FAIL_GOTO(st, out_, ctx, NB_ERR_FORMAT, "%s: rules: expected an array", what);
    for (const cJSON *e = rules ? rules->child : NULL; e; e = e->next) {
        if (!cJSON_IsString(e)) NB_FAIL_GOTO(st, out_, ctx, NB_ERR_FORMAT, "%s: rules: expected strings", what);
        if (out->n_rules == NB_RECIPE_MAX_RULES)
            NB_FAIL_GOTO(st, out_, ctx, NB_ERR_RANGE, "%s: rules: more than %d", what, NB_RECIPE_MAX_RULES);
        if (!(out->rules[out->n_rules++] = nb_strdup(ctx, e->valuestring))) NB_FAIL_GOTO(st, out_, ctx, NB_ERR_NOMEM, "oom");
    }
    NB_CHECK_GOTO(st, get_bool(&r, j, "", "allow_requantize", &out->allow_requantize), out_);
    NB_CHECK_GOTO(st, parse_validation(&r, j, out), out_);
    NB_CHECK_GOTO(st, parse_outputs(&r, j, out), out_);
    if (out->method && strcmp(out->method, "rtn") && !out->calib_text)
        NB_FAIL_GOTO(st, out_, ctx, NB_ERR_FORMAT, "%s: method %s needs calibration.text", what, out->method);
    if (out->prune && !out->calib_text)
        NB_FAIL_GOTO(st, out_, ctx, NB_ERR_FORMAT, "%s: prune needs calibration.text (routing statistics)", what);
    if (out->prune_auto && (out->target != NB_TARGET_SIZE && out->target != NB_TARGET_BUDGET))
        NB_FAIL_GOTO(st, out_, ctx, NB_ERR_FORMAT, "%s: prune.keep \"auto\" needs target.size or target.budget (the "
                     "planner decides how many experts fit)", what);
    if (out->prune_auto && (!out->method || strcmp(out->method, "imatrix")))
        NB_FAIL_GOTO(st, out_, ctx, NB_ERR_FORMAT, "%s: prune.keep \"auto\" needs method \"imatrix\" (the routing "
                     "statistics come with the importance matrix)", what);
    if (out->prune_auto && out->prune_renormalize)
        NB_FAIL_GOTO(st, out_, ctx, NB_ERR_FORMAT, "%s: prune.renormalize_topk cannot be combined with keep \"auto\"",
                     what);
    if ((out->gate_kld || out->gate_ppl || out->gate_top) && !out->eval_text)
        NB_FAIL_GOTO(st, out_, ctx, NB_ERR_FORMAT, "%s: validation.gate needs validation.text", what);
out_:
    cJSON_Delete(j);
    return st;
}

nb_status nb_recipe_load(const char *path, const nb_recipe_var *vars, size_t n_vars, nb_recipe *r, nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    char *text = NULL;
    size_t n = 0;
    NB_TRY(nb_read_file(path, 1u << 20, &text, &n, ctx));
    nb_status st = nb_recipe_parse(text, path, vars, n_vars, r, ctx);
    free(text);
    return st;
}
