/* distill/adapter.c — PEFT adapter directories and llama.cpp GGUF LoRA files
 * (see distill/adapter.h for the layouts and the scaling rules). */
#include "distill/adapter.h"

#include "core/file.h"
#include "core/str.h"
#include "formats/json_strict.h"
#include "formats/kv.h"
#include "formats/readers.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_CONFIG (4u << 20) /* adapter_config.json is a few KB; refuse absurd sizes */
#define PEFT_PREFIX "base_model.model."

/* ---- adapter_config.json ---------------------------------------------------------------------- */

void nb_peft_config_free(nb_peft_config *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_rank_pattern; i++) free(c->rank_keys[i]);
    for (size_t i = 0; i < c->n_alpha_pattern; i++) free(c->alpha_keys[i]);
    free(c->rank_keys);
    free(c->rank_values);
    free(c->alpha_keys);
    free(c->alpha_values);
    free(c->base_model);
    memset(c, 0, sizeof *c);
}

static nb_status get_bool(const cJSON *root, const char *key, bool *out, const char *what, nb_ctx *ctx) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return NB_OK;
    if (!cJSON_IsBool(v)) return nb_err(ctx, NB_ERR_FORMAT, "%s: \"%s\" must be true or false", what, key);
    *out = cJSON_IsTrue(v);
    return NB_OK;
}

/* A positive integer rank no larger than 2^31 (cJSON gives doubles). */
static nb_status get_rank(const cJSON *v, const char *key, uint32_t *out, const char *what, nb_ctx *ctx) {
    if (!cJSON_IsNumber(v)) return nb_err(ctx, NB_ERR_FORMAT, "%s: \"%s\" must be a number", what, key);
    double d = v->valuedouble;
    if (d != floor(d)) return nb_err(ctx, NB_ERR_FORMAT, "%s: \"%s\" = %g is not an integer", what, key, d);
    if (!(d > 0)) return nb_err(ctx, NB_ERR_RANGE, "%s: \"%s\" = %g: the LoRA rank must be > 0", what, key, d);
    if (d > 2147483648.0) return nb_err(ctx, NB_ERR_RANGE, "%s: \"%s\" = %g is too large", what, key, d);
    *out = (uint32_t)d;
    return NB_OK;
}

static nb_status get_alpha(const cJSON *v, const char *key, double *out, const char *what, nb_ctx *ctx) {
    if (!cJSON_IsNumber(v)) return nb_err(ctx, NB_ERR_FORMAT, "%s: \"%s\" must be a number", what, key);
    if (!isfinite(v->valuedouble))
        return nb_err(ctx, NB_ERR_RANGE, "%s: \"%s\" is not a finite number", what, key);
    *out = v->valuedouble;
    return NB_OK;
}

/* A key that must be absent, null, false or empty for the merge to mean what PEFT means. */
static bool is_set(const cJSON *v) {
    if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v)) return false;
    if ((cJSON_IsArray(v) || cJSON_IsObject(v)) && cJSON_GetArraySize(v) == 0) return false;
    if (cJSON_IsString(v) && !*v->valuestring) return false;
    return true;
}

static nb_status parse_patterns(const cJSON *obj, const char *key, bool rank, nb_peft_config *c, const char *what,
                                nb_ctx *ctx) {
    if (!obj || cJSON_IsNull(obj)) return NB_OK;
    if (!cJSON_IsObject(obj)) return nb_err(ctx, NB_ERR_FORMAT, "%s: \"%s\" must be an object", what, key);
    size_t n = (size_t)cJSON_GetArraySize(obj);
    char **keys = nb_calloc(ctx, n ? n : 1, sizeof *keys, "patterns");
    void *vals = nb_calloc(ctx, n ? n : 1, rank ? sizeof(uint32_t) : sizeof(double), "patterns");
    if (rank) { c->rank_keys = keys; c->rank_values = vals; } else { c->alpha_keys = keys; c->alpha_values = vals; }
    if (!keys || !vals) return NB_ERR_NOMEM;
    size_t i = 0;
    for (const cJSON *e = obj->child; e; e = e->next, i++) {
        char label[300];
        snprintf(label, sizeof label, "%s[\"%.200s\"]", key, e->string ? e->string : "");
        if (rank) NB_TRY(get_rank(e, label, &((uint32_t *)vals)[i], what, ctx));
        else NB_TRY(get_alpha(e, label, &((double *)vals)[i], what, ctx));
        bool ok;
        nb_peft_pattern_match(e->string, "", &ok);
        if (!ok)
            return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: %s: the key is not a regular expression nibble can evaluate",
                          what, label);
        keys[i] = nb_strdup(ctx, e->string);
        if (!keys[i]) return NB_ERR_NOMEM;
        if (rank) c->n_rank_pattern = i + 1; else c->n_alpha_pattern = i + 1;
    }
    return NB_OK;
}

static nb_status config_from_json(const cJSON *root, const char *what, nb_peft_config *c, nb_ctx *ctx) {
    if (!cJSON_IsObject(root)) return nb_err(ctx, NB_ERR_FORMAT, "%s: not a JSON object", what);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "peft_type");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v)) return nb_err(ctx, NB_ERR_FORMAT, "%s: \"peft_type\" must be a string", what);
        if (strcmp(v->valuestring, "LORA") != 0)
            return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: peft_type \"%s\": only LORA adapters (LoRA, rsLoRA, DoRA) can be merged",
                          what, v->valuestring);
    }
    /* PEFT's LoraConfig defaults: r = 8, lora_alpha = 8 */
    c->r = 8;
    c->lora_alpha = 8;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "r")) && !cJSON_IsNull(v)) NB_TRY(get_rank(v, "r", &c->r, what, ctx));
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "lora_alpha")) && !cJSON_IsNull(v))
        NB_TRY(get_alpha(v, "lora_alpha", &c->lora_alpha, what, ctx));
    NB_TRY(get_bool(root, "use_rslora", &c->use_rslora, what, ctx));
    NB_TRY(get_bool(root, "fan_in_fan_out", &c->fan_in_fan_out, what, ctx));
    NB_TRY(get_bool(root, "use_dora", &c->use_dora, what, ctx));
    NB_TRY(get_bool(root, "lora_bias", &c->lora_bias, what, ctx));
    /* options whose merged result is not W + f(A, B, m): refuse rather than merge wrongly */
    static const char *const refused[] = {"layer_replication", "alora_invocation_tokens", "use_qalora",
                                          "trainable_token_indices", "target_parameters", "use_bdlora"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        if (is_set(cJSON_GetObjectItemCaseSensitive(root, refused[i])))
            return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: \"%s\" is set: such adapters cannot be merged by nibble", what,
                          refused[i]);
    NB_TRY(parse_patterns(cJSON_GetObjectItemCaseSensitive(root, "rank_pattern"), "rank_pattern", true, c, what, ctx));
    NB_TRY(parse_patterns(cJSON_GetObjectItemCaseSensitive(root, "alpha_pattern"), "alpha_pattern", false, c, what, ctx));
    v = cJSON_GetObjectItemCaseSensitive(root, "base_model_name_or_path");
    if (cJSON_IsString(v) && !(c->base_model = nb_strdup(ctx, v->valuestring))) return NB_ERR_NOMEM;
    return NB_OK;
}

nb_status nb_peft_config_parse(const char *json, size_t len, const char *what, nb_peft_config *out, nb_ctx *ctx) {
    memset(out, 0, sizeof *out);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return nb_err(ctx, NB_ERR_FORMAT, "%s: not valid JSON", what);
    nb_json_last_wins(root); /* duplicate keys: the last wins, as in PEFT (Python's json) */
    nb_status st = config_from_json(root, what, out, ctx);
    cJSON_Delete(root);
    if (st != NB_OK) nb_peft_config_free(out);
    return st;
}

/* ---- PEFT's get_pattern_key ------------------------------------------------------------------------ */

#define MAX_REGEX_NODES 4000 /* PEFT keys are module names; real ones cost a few hundred */

/* An upper bound on the size of the syntax tree glibc's regcomp builds for
 * the ERE `re`, which copies a repeated atom per repetition ("x+" = "xx*",
 * "x{3}" = "xxx"): stacked or nested repetitions multiply ("I+++++..." grows
 * as 2^k). Refusing keys above a bound keeps a hostile adapter_config.json
 * from making regcomp allocate gigabytes. Back-references (exponential to
 * match) and a repetition applied to a repetition ("x+*", "x{2}+": Python's
 * "multiple repeat" error; regcomp's closure computation on them is
 * superlinear) count as over the bound; a lazy '?' after one is allowed. */
static bool regex_too_costly(const char *re) {
    enum { DEPTH = 64 };
    double total[DEPTH] = {0}, atom = 0; /* size of each open group; the last atom's */
    int d = 0;
    for (size_t i = 0; re[i]; i++) {
        char ch = re[i];
        if (ch == '\\') {
            if (re[i + 1] >= '1' && re[i + 1] <= '9') return true;
            if (re[i + 1]) i++;
            atom = 1;
        } else if (ch == '[') { /* bracket expression: one atom; ']' first is literal, [:class:] inside */
            size_t j = i + 1;
            if (re[j] == '^') j++;
            if (re[j] == ']') j++;
            while (re[j] && re[j] != ']') {
                if (re[j] == '[' && (re[j + 1] == ':' || re[j + 1] == '.' || re[j + 1] == '=')) {
                    const char *end = strchr(re + j + 2, re[j + 1]);
                    if (!end || end[1] != ']') return true;
                    j = (size_t)(end - re) + 2;
                } else {
                    j++;
                }
            }
            if (!re[j]) return true;
            i = j;
            atom = 1;
        } else if (ch == '(') {
            if (++d >= DEPTH) return true;
            total[d] = 0;
            continue;
        } else if (ch == ')') {
            if (d == 0) return true;
            atom = total[d--] + 1;
        } else if (ch == '*' || ch == '?' || ch == '+' || ch == '{') {
            if (i > 0 && ch != '?' && strchr("*+?}", re[i - 1]) && !(i > 1 && re[i - 2] == '\\')) return true;
            double f = 1;
            if (ch == '+') f = 2;
            if (ch == '{') { /* {n}, {n,}, {n,m}: at most max(n, m) + 1 copies */
                char *end;
                unsigned long a = strtoul(re + i + 1, &end, 10), b = a;
                if (*end == ',') b = end[1] == '}' ? a : strtoul(end + 1, &end, 10);
                if (*end == '}') i = (size_t)(end - re);
                f = (double)(a > b ? a : b) + 1;
            }
            total[d] += atom * (f - 1) + 1;
            atom *= f;
            if (total[d] > MAX_REGEX_NODES) return true;
            continue;
        } else {
            atom = 1;
        }
        total[d] += atom;
        if (total[d] > MAX_REGEX_NODES) return true;
    }
    return false;
}

bool nb_peft_pattern_match(const char *key, const char *module, bool *ok) {
    *ok = false;
    if (!key) return false;
    size_t n = strlen(key);
    if (n > 4096) return false;
    /* worst case: every 2-byte escape becomes "[^[:space:]]" (12 bytes) */
    size_t cap = n * 6 + 32;
    char *re = nb_malloc(NULL, cap, "adapter");
    if (!re) return false;
    size_t o = 0;
    o += (size_t)snprintf(re, cap, "^(.*\\.)?(");
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        if (key[i] == '\\' && i + 1 < n) {
            switch (key[i + 1]) {
            case 'd': rep = "[0-9]"; break;
            case 'D': rep = "[^0-9]"; break;
            case 'w': rep = "[A-Za-z0-9_]"; break;
            case 'W': rep = "[^A-Za-z0-9_]"; break;
            case 's': rep = "[[:space:]]"; break;
            case 'S': rep = "[^[:space:]]"; break;
            default: break;
            }
        }
        if (rep) {
            size_t k = strlen(rep);
            memcpy(re + o, rep, k);
            o += k;
            i++;
        } else {
            re[o++] = key[i];
        }
    }
    memcpy(re + o, ")$", 3);
    if (regex_too_costly(re)) {
        free(re);
        return false;
    }
    regex_t rx;
    int rc = regcomp(&rx, re, REG_EXTENDED | REG_NOSUB);
    free(re);
    if (rc != 0) return false;
    *ok = true;
    bool m = regexec(&rx, module, 0, NULL, 0) == 0;
    regfree(&rx);
    return m;
}

/* rank / alpha of a module as PEFT's _create_and_replace picks them. */
static uint32_t module_rank(const nb_peft_config *c, const char *module) {
    bool ok;
    for (size_t i = 0; i < c->n_rank_pattern; i++)
        if (nb_peft_pattern_match(c->rank_keys[i], module, &ok)) return c->rank_values[i];
    return c->r;
}
static double module_alpha(const nb_peft_config *c, const char *module) {
    bool ok;
    for (size_t i = 0; i < c->n_alpha_pattern; i++)
        if (nb_peft_pattern_match(c->alpha_keys[i], module, &ok)) return c->alpha_values[i];
    return c->lora_alpha;
}

/* ---- classifying tensor names ------------------------------------------------------------------------ */

typedef enum { P_A, P_B, P_BIAS, P_MAG, P_EA, P_EB, P_REPLACE } piece_kind;

typedef struct {
    char *module; /* module (or parameter, for P_REPLACE) name without the PEFT prefix */
    piece_kind kind;
    long idx;
} piece;

static int piece_cmp(const void *x, const void *y) {
    const piece *a = x, *b = y;
    int c = strcmp(a->module, b->module);
    if (c) return c;
    return (a->kind > b->kind) - (a->kind < b->kind);
}

static const struct { const char *suffix; piece_kind kind; } g_peft_suffixes[] = {
    {".lora_A.weight", P_A},
    {".lora_B.weight", P_B},
    {".lora_B.bias", P_BIAS},
    {".lora_magnitude_vector.weight", P_MAG},
    {".lora_magnitude_vector", P_MAG},
    {".lora_embedding_A", P_EA},
    {".lora_embedding_B", P_EB},
};

static const char *piece_name(piece_kind k) {
    switch (k) {
    case P_A: return "lora_A.weight";
    case P_B: return "lora_B.weight";
    case P_BIAS: return "lora_B.bias";
    case P_MAG: return "lora_magnitude_vector";
    case P_EA: return "lora_embedding_A";
    case P_EB: return "lora_embedding_B";
    default: return "tensor";
    }
}

static const char *strip_prefix(const char *name) {
    return strncmp(name, PEFT_PREFIX, strlen(PEFT_PREFIX)) ? name : name + strlen(PEFT_PREFIX);
}

/* Every element finite; the message names the tensor and the first bad element. */
static nb_status check_finite(nb_adapter *a, long idx, nb_ctx *ctx) {
    const nb_tensor *t = &a->file->tensors[idx];
    const nb_type_traits *tr = nb_type_get(t->type);
    if (!tr || !tr->to_float || !(tr->is_float || tr->is_quantized))
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: tensor '%s': type %s is not a floating-point type", a->path, t->name,
                      nb_type_name(t->type));
    uint64_t n = nb_tensor_nelements(t);
    if (n == 0) return NB_OK;
    float *f = nb_malloc(ctx, n * sizeof(float), t->name);
    if (!f) return NB_ERR_NOMEM;
    nb_status st = nb_model_read_f32(a->file, (size_t)idx, f, ctx);
    for (uint64_t i = 0; st == NB_OK && i < n; i++)
        if (!isfinite(f[i]))
            st = nb_err(ctx, NB_ERR_RANGE, "%s: tensor '%s': element %llu is %s", a->path, t->name,
                        (unsigned long long)i, isnan(f[i]) ? "NaN" : "infinite");
    free(f);
    return st;
}

static nb_status add_module(nb_adapter *a, const nb_lora_module *m, nb_ctx *ctx) {
    nb_lora_module *nm = nb_realloc(NULL, a->modules, (a->n_modules + 1) * sizeof *nm, "adapter");
    if (!nm) return nb_err(ctx, NB_ERR_NOMEM, "out of memory");
    a->modules = nm;
    a->modules[a->n_modules++] = *m;
    return NB_OK;
}

static nb_status add_replace(nb_adapter *a, const char *name, long idx, nb_ctx *ctx) {
    nb_lora_replace *nr = nb_realloc(NULL, a->replace, (a->n_replace + 1) * sizeof *nr, "adapter");
    if (!nr) return nb_err(ctx, NB_ERR_NOMEM, "out of memory");
    a->replace = nr;
    char *n = nb_strdup(ctx, name);
    if (!n) return NB_ERR_NOMEM;
    a->replace[a->n_replace].name = n;
    a->replace[a->n_replace++].tensor = idx;
    return NB_OK;
}

/* Build one PEFT module from its pieces [p, p+n) (all the same module name). */
static nb_status peft_module(nb_adapter *a, const piece *p, size_t n, nb_ctx *ctx) {
    const char *mod = p[0].module;
    long idx[P_REPLACE] = {-1, -1, -1, -1, -1, -1};
    for (size_t i = 0; i < n; i++) {
        if (idx[p[i].kind] >= 0)
            return nb_err(ctx, NB_ERR_FORMAT, "%s: module '%s': %s appears twice", a->path, mod, piece_name(p[i].kind));
        idx[p[i].kind] = p[i].idx;
    }
    bool emb = idx[P_EA] >= 0 || idx[P_EB] >= 0;
    if (emb && (idx[P_A] >= 0 || idx[P_B] >= 0))
        return nb_err(ctx, NB_ERR_FORMAT, "%s: module '%s' has both lora_A/B and lora_embedding_A/B", a->path, mod);
    long ia = emb ? idx[P_EA] : idx[P_A], ib = emb ? idx[P_EB] : idx[P_B];
    const char *na = emb ? "lora_embedding_A" : "lora_A.weight", *nbn = emb ? "lora_embedding_B" : "lora_B.weight";
    if (ia < 0 && ib < 0)
        return nb_err(ctx, NB_ERR_FORMAT, "%s: module '%s': %s without %s / %s", a->path, mod,
                      piece_name(idx[P_MAG] >= 0 ? P_MAG : P_BIAS), na, nbn);
    if (ia < 0 || ib < 0)
        return nb_err(ctx, NB_ERR_FORMAT, "%s: module '%s': %s has no matching %s", a->path, mod, ia < 0 ? nbn : na,
                      ia < 0 ? na : nbn);
    const nb_tensor *ta = &a->file->tensors[ia], *tb = &a->file->tensors[ib];
    if (ta->n_dims != 2 || tb->n_dims != 2)
        return nb_err(ctx, NB_ERR_UNSUPPORTED,
                      "%s: module '%s': %u-D %s / %u-D %s (convolution LoRA?): only Linear and Embedding targets can "
                      "be merged", a->path, mod, ta->n_dims, na, tb->n_dims, nbn);
    nb_lora_module m = {0};
    m.a = ia;
    m.b = ib;
    m.magnitude = idx[P_MAG];
    m.bias = idx[P_BIAS];
    m.embedding = emb;
    m.transposed = emb || a->cfg.fan_in_fan_out;
    m.rank = (uint32_t)(ta->ne[1] > UINT32_MAX ? 0 : ta->ne[1]);
    m.in = ta->ne[0];
    m.out = tb->ne[1];
    m.n_slices = 1;
    if (ta->ne[1] == 0 || tb->ne[0] == 0)
        return nb_err(ctx, NB_ERR_RANGE, "%s: module '%s': rank 0 (%s is [%lld, %lld], %s is [%lld, %lld]): r must be > 0",
                      a->path, mod, na, (long long)ta->ne[1], (long long)ta->ne[0], nbn, (long long)tb->ne[1],
                      (long long)tb->ne[0]);
    if (ta->ne[0] == 0 || tb->ne[1] == 0)
        return nb_err(ctx, NB_ERR_RANGE, "%s: module '%s': empty %s", a->path, mod, ta->ne[0] == 0 ? na : nbn);
    if (tb->ne[0] != ta->ne[1])
        return nb_err(ctx, NB_ERR_FORMAT, "%s: module '%s': %s is [%lld, %lld] but %s is [%lld, %lld]: ranks differ",
                      a->path, mod, na, (long long)ta->ne[1], (long long)ta->ne[0], nbn, (long long)tb->ne[1],
                      (long long)tb->ne[0]);
    uint32_t r_cfg = module_rank(&a->cfg, mod);
    if (m.rank != r_cfg)
        return nb_err(ctx, NB_ERR_FORMAT, "%s: module '%s': %s has rank %u but adapter_config.json gives r = %u", a->path,
                      mod, na, m.rank, r_cfg);
    m.alpha = module_alpha(&a->cfg, mod);
    m.scaling = a->cfg.use_rslora ? m.alpha / sqrt((double)m.rank) : m.alpha / (double)m.rank;
    if (a->cfg.use_dora && m.magnitude < 0)
        return nb_err(ctx, NB_ERR_FORMAT, "%s: module '%s': use_dora is set but lora_magnitude_vector is missing", a->path,
                      mod);
    if (!a->cfg.use_dora && m.magnitude >= 0)
        return nb_err(ctx, NB_ERR_FORMAT, "%s: module '%s' has a lora_magnitude_vector but use_dora is not set", a->path,
                      mod);
    long vec[2] = {m.magnitude, m.bias};
    for (int k = 0; k < 2; k++) {
        if (vec[k] < 0) continue;
        const nb_tensor *t = &a->file->tensors[vec[k]];
        if (nb_tensor_nelements(t) != (uint64_t)m.out || (t->n_dims > 1 && t->ne[0] != m.out))
            return nb_err(ctx, NB_ERR_FORMAT, "%s: module '%s': %s has %llu elements, expected %lld (out features)",
                          a->path, mod, k ? "lora_B.bias" : "lora_magnitude_vector",
                          (unsigned long long)nb_tensor_nelements(t), (long long)m.out);
    }
    if (m.bias >= 0 && emb)
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: module '%s': lora_bias on an Embedding", a->path, mod);
    m.name = nb_strdup(ctx, mod);
    if (!m.name) return NB_ERR_NOMEM;
    nb_status st = add_module(a, &m, ctx);
    if (st != NB_OK) free(m.name);
    return st;
}

static nb_status open_peft(nb_adapter *a, const char *dir, nb_ctx *ctx) {
    char *cfg_path = nb_path_join(ctx, dir, "adapter_config.json");
    char *st_path = nb_path_join(ctx, dir, "adapter_model.safetensors");
    char *bin_path = nb_path_join(ctx, dir, "adapter_model.bin");
    char *json = NULL;
    piece *pc = NULL;
    size_t n_pc = 0;
    nb_status st = NB_OK;
    if (!cfg_path || !st_path || !bin_path) { st = NB_ERR_NOMEM; goto out; }
    struct stat sb;
    if (stat(cfg_path, &sb) != 0)
        NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: not a PEFT adapter directory (no adapter_config.json)", dir);
    if (stat(st_path, &sb) != 0) {
        if (stat(bin_path, &sb) == 0)
            NB_FAIL_GOTO(st, out, ctx, NB_ERR_UNSUPPORTED,
                         "%s: only adapter_model.bin (a Python pickle) is present; nibble reads safetensors only "
                         "(re-save with save_pretrained(..., safe_serialization=True))", dir);
        NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: no adapter_model.safetensors", dir);
    }
    size_t len = 0;
    NB_CHECK_GOTO(st, nb_read_file(cfg_path, MAX_CONFIG, &json, &len, ctx), out);
    NB_CHECK_GOTO(st, nb_peft_config_parse(json, len, cfg_path, &a->cfg, ctx), out);
    NB_CHECK_GOTO(st, nb_safetensors_open(st_path, &a->file, ctx), out);
    pc = nb_calloc(ctx, a->file->n_tensors ? a->file->n_tensors : 1, sizeof *pc, "adapter tensors");
    if (!pc) { st = NB_ERR_NOMEM; goto out; }
    for (size_t i = 0; i < a->file->n_tensors; i++) {
        const char *full = a->file->tensors[i].name, *name = strip_prefix(full);
        piece_kind kind = P_REPLACE;
        size_t keep = strlen(name);
        for (size_t k = 0; k < sizeof g_peft_suffixes / sizeof *g_peft_suffixes; k++)
            if (nb_str_ends_with(name, g_peft_suffixes[k].suffix)) {
                kind = g_peft_suffixes[k].kind;
                keep -= strlen(g_peft_suffixes[k].suffix);
                break;
            }
        if (kind == P_REPLACE) {
            if (nb_str_ends_with(name, ".base_layer.weight") || nb_str_ends_with(name, ".base_layer.bias")) {
                NB_WARN(ctx, "%s: tensor '%s' (a copy of a base weight) is ignored", a->path, full);
                continue;
            }
            if (strstr(name, "lora_") || strstr(name, "token_adapter") || strstr(name, "modules_to_save"))
                NB_FAIL_GOTO(st, out, ctx, NB_ERR_UNSUPPORTED, "%s: tensor '%s': not a LoRA piece nibble knows", a->path,
                             full);
        }
        pc[n_pc].module = nb_strndup(ctx, name, keep);
        if (!pc[n_pc].module) { st = NB_ERR_NOMEM; goto out; }
        pc[n_pc].kind = kind;
        pc[n_pc++].idx = (long)i;
        NB_CHECK_GOTO(st, check_finite(a, (long)i, ctx), out);
    }
    qsort(pc, n_pc, sizeof *pc, piece_cmp);
    for (size_t i = 0; i < n_pc;) {
        if (pc[i].kind == P_REPLACE) {
            NB_CHECK_GOTO(st, add_replace(a, pc[i].module, pc[i].idx, ctx), out);
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < n_pc && pc[j].kind != P_REPLACE && !strcmp(pc[j].module, pc[i].module)) j++;
        NB_CHECK_GOTO(st, peft_module(a, pc + i, j - i, ctx), out);
        i = j;
    }
    if (a->n_modules == 0 && a->n_replace == 0)
        NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: the adapter holds no tensors", a->path);
out:
    for (size_t i = 0; i < n_pc; i++) free(pc[i].module);
    free(pc);
    free(json);
    free(cfg_path);
    free(st_path);
    free(bin_path);
    return st;
}

/* ---- GGUF LoRA ------------------------------------------------------------------------------------------ */

static int gguf_name_cmp(const void *x, const void *y) {
    return strcmp(((const nb_lora_module *)x)->name, ((const nb_lora_module *)y)->name);
}

static nb_status open_gguf(nb_adapter *a, nb_ctx *ctx) {
    nb_model *f = a->file;
    const char *gt = nb_kv_get_str(&f->kv, "general.type");
    if (!gt || strcmp(gt, "adapter") != 0)
        return nb_err(ctx, NB_ERR_FORMAT, "%s: general.type is %s%s%s, not \"adapter\": not a GGUF LoRA adapter", a->path,
                      gt ? "\"" : "", gt ? gt : "absent", gt ? "\"" : "");
    const char *at = nb_kv_get_str(&f->kv, "adapter.type");
    if (!at || strcmp(at, "lora") != 0)
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: adapter.type is %s, only \"lora\" adapters can be merged", a->path,
                      at ? at : "absent");
    if (nb_kv_get(&f->kv, "adapter.alora.invocation_tokens"))
        return nb_err(ctx, NB_ERR_UNSUPPORTED,
                      "%s: an activated LoRA (adapter.alora.invocation_tokens) applies only after its invocation "
                      "tokens and cannot be merged into the weights", a->path);
    double alpha = 0;
    const nb_kv_value *av = nb_kv_get(&f->kv, "adapter.lora.alpha");
    if (av && !nb_kv_get_f64(&f->kv, "adapter.lora.alpha", &alpha))
        return nb_err(ctx, NB_ERR_FORMAT, "%s: adapter.lora.alpha is a %s, expected f32", a->path, nb_kv_type_name(av->type));
    if (!isfinite(alpha)) return nb_err(ctx, NB_ERR_RANGE, "%s: adapter.lora.alpha is not finite", a->path);
    const char *arch = nb_kv_get_str(&f->kv, "general.architecture");
    if (arch && !(a->arch = nb_strdup(ctx, arch))) return NB_ERR_NOMEM;

    /* pair .lora_a / .lora_b by base name */
    for (size_t i = 0; i < f->n_tensors; i++) {
        const char *name = f->tensors[i].name;
        bool is_a = nb_str_ends_with(name, ".lora_a"), is_b = nb_str_ends_with(name, ".lora_b");
        if (!is_a && !is_b) {
            if (nb_str_ends_with(name, "_norm.weight")) {
                a->n_skipped++;
                continue;
            }
            return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s': unexpected name (expected <tensor>.lora_a / .lora_b)",
                          a->path, name);
        }
        NB_TRY(check_finite(a, (long)i, ctx));
        size_t keep = strlen(name) - 7;
        nb_lora_module *m = NULL;
        for (size_t k = 0; k < a->n_modules; k++)
            if (strlen(a->modules[k].name) == keep && !strncmp(a->modules[k].name, name, keep)) m = &a->modules[k];
        if (!m) {
            nb_lora_module nm = {0};
            nm.a = nm.b = nm.magnitude = nm.bias = -1;
            if (!(nm.name = nb_strndup(ctx, name, keep))) return NB_ERR_NOMEM;
            nb_status st = add_module(a, &nm, ctx);
            if (st != NB_OK) { free(nm.name); return st; }
            m = &a->modules[a->n_modules - 1];
        }
        long *slot = is_a ? &m->a : &m->b;
        if (*slot >= 0) return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s' appears twice", a->path, name);
        *slot = (long)i;
    }
    if (a->n_skipped)
        NB_WARN(ctx, "%s: %zu *_norm.weight tensors are ignored (llama.cpp ignores them too)", a->path, a->n_skipped);
    for (size_t k = 0; k < a->n_modules; k++) {
        nb_lora_module *m = &a->modules[k];
        if (m->a < 0 || m->b < 0)
            return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s.%s' has no matching .%s", a->path, m->name,
                          m->a < 0 ? "lora_b" : "lora_a", m->a < 0 ? "lora_a" : "lora_b");
        const nb_tensor *ta = &f->tensors[m->a], *tb = &f->tensors[m->b];
        bool embd = nb_str_ends_with(m->name, "token_embd.weight");
        if (ta->n_dims > 3 || tb->n_dims > 3 || ta->ne[2] != tb->ne[2] || ta->ne[3] != 1 || tb->ne[3] != 1)
            return nb_err(ctx, NB_ERR_FORMAT, "%s: '%s': lora_a / lora_b have incompatible dimensions", a->path, m->name);
        m->n_slices = ta->ne[2];
        m->transposed = embd;
        m->a_transposed = embd;
        if (embd) { /* lora_a ne {r, n_vocab}, lora_b ne {r, n_embd} (llm_build_inp_embd) */
            m->in = ta->ne[1];
            m->out = tb->ne[1];
            if (ta->ne[0] != tb->ne[0])
                return nb_err(ctx, NB_ERR_FORMAT, "%s: '%s': lora_a rank %lld != lora_b rank %lld", a->path, m->name,
                              (long long)ta->ne[0], (long long)tb->ne[0]);
        } else {        /* lora_a ne {in, r}, lora_b ne {r, out} */
            m->in = ta->ne[0];
            m->out = tb->ne[1];
            if (ta->ne[1] != tb->ne[0])
                return nb_err(ctx, NB_ERR_FORMAT, "%s: '%s': lora_a is ne {%lld, %lld} and lora_b ne {%lld, %lld}: "
                              "ranks differ (lora_a not transposed?)", a->path, m->name, (long long)ta->ne[0],
                              (long long)ta->ne[1], (long long)tb->ne[0], (long long)tb->ne[1]);
        }
        int64_t r = tb->ne[0];
        if (r <= 0) return nb_err(ctx, NB_ERR_RANGE, "%s: '%s': rank 0: r must be > 0", a->path, m->name);
        if (r > UINT32_MAX) return nb_err(ctx, NB_ERR_RANGE, "%s: '%s': rank %lld too large", a->path, m->name, (long long)r);
        m->rank = (uint32_t)r;
        m->alpha = alpha;
        m->scaling = alpha != 0 ? alpha / (double)r : 1.0; /* llama_adapter_lora_weight::get_scale */
    }
    qsort(a->modules, a->n_modules, sizeof *a->modules, gguf_name_cmp);
    if (a->n_modules == 0) return nb_err(ctx, NB_ERR_FORMAT, "%s: the adapter holds no LoRA tensors", a->path);
    return NB_OK;
}

/* ---- open / close / read ------------------------------------------------------------------------------------------ */

void nb_adapter_close(nb_adapter *a) {
    if (!a) return;
    for (size_t i = 0; i < a->n_modules; i++) free(a->modules[i].name);
    for (size_t i = 0; i < a->n_replace; i++) free(a->replace[i].name);
    free(a->modules);
    free(a->replace);
    nb_peft_config_free(&a->cfg);
    nb_model_close(a->file);
    free(a->arch);
    free(a->path);
    free(a);
}

nb_status nb_adapter_open(const char *path, nb_adapter **out, nb_ctx *ctx) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return nb_err_errno(ctx, errno, "%s", path);
    nb_adapter *a = nb_calloc(ctx, 1, sizeof *a, "adapter");
    if (!a) return NB_ERR_NOMEM;
    nb_status st;
    if (!(a->path = nb_strdup(ctx, path))) { st = NB_ERR_NOMEM; goto fail; }
    if (S_ISDIR(sb.st_mode)) {
        a->kind = NB_ADAPTER_PEFT;
        st = open_peft(a, path, ctx);
    } else {
        a->kind = NB_ADAPTER_GGUF;
        FILE *f = fopen(path, "rb");
        char magic[4] = {0};
        if (!f) { st = nb_err_errno(ctx, errno, "%s", path); goto fail; }
        size_t got = fread(magic, 1, 4, f);
        fclose(f);
        if (got != 4 || memcmp(magic, "GGUF", 4) != 0) {
            st = nb_err(ctx, NB_ERR_FORMAT,
                        "%s: not an adapter (expected a PEFT directory with adapter_config.json, or a GGUF LoRA file)",
                        path);
            goto fail;
        }
        st = nb_gguf_open(path, &a->file, ctx);
        if (st == NB_OK) st = open_gguf(a, ctx);
    }
    if (st != NB_OK) goto fail;
    *out = a;
    return NB_OK;
fail:
    nb_adapter_close(a);
    return st;
}

nb_status nb_adapter_read_f32(nb_adapter *a, long idx, float *dst, nb_ctx *ctx) {
    if (idx < 0 || (size_t)idx >= a->file->n_tensors)
        return nb_err(ctx, NB_ERR_INTERNAL, "%s: adapter tensor index %ld out of range", a->path, idx);
    return nb_model_read_f32(a->file, (size_t)idx, dst, ctx);
}
