/* quant/plan.c — the quantization plan as a value (see quant/plan.h). */
#include "quant/plan.h"

#include "core/file.h"
#include "core/sha256.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void nb_plan_free(nb_plan *p) {
    if (!p) return;
    for (size_t i = 0; p->tensors && i < p->n_tensors; i++) free(p->tensors[i].gptq_experts);
    free(p->tensors);
    free(p->types);
    free(p->names);
    free(p->source_path);
    free(p->prune.layer);
    free(p->prune.kept);
    memset(p, 0, sizeof *p);
    p->file_type = -1;
}

void nb_plan_fingerprint(const nb_model *m, unsigned char out[32]) {
    nb_plan_fingerprint_tensors(m->tensors, m->n_tensors, out);
}

void nb_plan_fingerprint_tensors(const nb_tensor *ts, size_t n, unsigned char out[32]) {
    nb_sha256 s;
    nb_sha256_init(&s);
    for (size_t i = 0; i < n; i++) {
        const nb_tensor *t = &ts[i];
        /* name NUL type n_dims ne[0..n_dims) as little-endian 64-bit values */
        nb_sha256_update(&s, t->name, strlen(t->name) + 1);
        uint64_t v[2 + NB_MAX_DIMS];
        size_t k = 0;
        v[k++] = (uint64_t)t->type;
        v[k++] = t->n_dims;
        for (uint32_t d = 0; d < t->n_dims && d < NB_MAX_DIMS; d++) v[k++] = (uint64_t)t->ne[d];
        unsigned char b[8 * (2 + NB_MAX_DIMS)];
        for (size_t j = 0; j < k; j++)
            for (int q = 0; q < 8; q++) b[8 * j + (size_t)q] = (unsigned char)(v[j] >> (8 * q));
        nb_sha256_update(&s, b, 8 * k);
    }
    nb_sha256_final(&s, out);
}

/* Allocate p's tensor table and copy names, source types and shapes from m. */
static nb_status plan_alloc(nb_plan *p, const nb_model *m, nb_ctx *ctx) {
    size_t n = m->n_tensors, name_bytes = 0;
    for (size_t i = 0; i < n; i++) name_bytes += strlen(m->tensors[i].name) + 1;
    p->tensors = nb_calloc(ctx, n ? n : 1, sizeof *p->tensors, "tensor plan");
    p->names = nb_malloc(ctx, name_bytes ? name_bytes : 1, "tensor names");
    p->names_bytes = name_bytes;
    p->source_path = nb_strdup(ctx, m->path ? m->path : "");
    if (!p->tensors || !p->names || !p->source_path) return NB_ERR_NOMEM;
    p->n_tensors = n;
    p->source_size = m->file_bytes;
    nb_plan_fingerprint(m, p->tensors_sha256);
    char *np = p->names;
    for (size_t i = 0; i < n; i++) {
        const nb_tensor *t = &m->tensors[i];
        nb_plan_tensor *pt = &p->tensors[i];
        size_t len = strlen(t->name) + 1;
        memcpy(np, t->name, len);
        pt->name = np;
        np += len;
        pt->src_type = pt->type = pt->wanted = t->type;
        pt->why = NB_PLAN_KEEP;
        pt->rule = -1;
        pt->n_dims = t->n_dims;
        memcpy(pt->ne, t->ne, sizeof pt->ne);
        pt->n_elements = nb_tensor_nelements(t);
        pt->bytes_in = t->nbytes;
        pt->pred_err = NAN;
    }
    return NB_OK;
}

/* Output bytes of every tensor, totals, and whether each conversion is
 * possible. `path` names the source in messages. */
static nb_status plan_totals(nb_plan *p, const char *path, nb_ctx *ctx) {
    p->n_quantized = p->n_requantized = p->n_fallback = 0;
    p->n_elements = p->bytes_in = p->bytes_out = 0;
    for (size_t i = 0; i < p->n_tensors; i++) {
        nb_plan_tensor *t = &p->tensors[i];
        uint64_t rb = 0, nrows = t->ne[0] > 0 ? t->n_elements / (uint64_t)t->ne[0] : 0;
        NB_TRY(nb_type_row_bytes(t->type, (uint64_t)t->ne[0], &rb, ctx, t->name));
        t->bytes_out = rb * nrows;
        p->n_elements += t->n_elements;
        p->bytes_in += t->bytes_in;
        p->bytes_out += t->bytes_out;
        if (t->why == NB_PLAN_FALLBACK) p->n_fallback++;
        if (t->type == t->src_type) continue;
        const nb_type_traits *ti = nb_type_get(t->src_type), *to = nb_type_get(t->type);
        if (!ti || !ti->to_float)
            return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: tensor '%s': cannot convert from type %s", path, t->name,
                          nb_type_name(t->src_type));
        if (!to || !to->quantize || !to->to_float || to->gguf_id < 0)
            return nb_err(ctx, NB_ERR_UNSUPPORTED, "tensor '%s': quantizing to %s is not available in this build",
                          t->name, nb_type_name(t->type));
        p->n_quantized++;
        if (ti->is_quantized) p->n_requantized++;
    }
    /* per-type totals, ascending type id */
    size_t counts[NB_TYPE_COUNT] = {0};
    for (size_t i = 0; i < p->n_tensors; i++) counts[p->tensors[i].type]++;
    size_t nty = 0;
    for (int t = 0; t < NB_TYPE_COUNT; t++) nty += counts[t] != 0;
    free(p->types);
    p->n_types = 0;
    p->types = nb_calloc(ctx, nty ? nty : 1, sizeof *p->types, "type table");
    if (!p->types) return NB_ERR_NOMEM;
    for (int t = 0; t < NB_TYPE_COUNT; t++) {
        if (!counts[t]) continue;
        nb_plan_type_stat *s = &p->types[p->n_types++];
        s->type = (nb_type)t;
        for (size_t i = 0; i < p->n_tensors; i++) {
            if (p->tensors[i].type != (nb_type)t) continue;
            s->n_tensors++;
            s->n_elements += p->tensors[i].n_elements;
            s->bytes += p->tensors[i].bytes_out;
        }
    }
    return NB_OK;
}

nb_status nb_plan_make(const nb_model *m, const nb_plan_opts *o, nb_plan *p, nb_ctx *ctx) {
    memset(p, 0, sizeof *p);
    p->file_type = -1;
    NB_RETURN_IF(ctx, !o || !o->mix, NB_ERR_INVALID, "plan: no type/mix given");
    nb_mix_hparams hp;
    nb_mix_hparams_from_kv(&m->kv, &hp);
    hp.has_imatrix = o->has_importance;
    if (!hp.arch[0] && !o->pure)
        NB_WARN(ctx, "%s: no general.architecture: tensor names are not GGUF names, so the mix's per-tensor rows "
                "(output, attn_v, ffn_down ...) may not apply (open the model's HF directory instead)", m->path);
    NB_TRY(plan_alloc(p, m, ctx));
    snprintf(p->mix, sizeof p->mix, "%s", o->mix->name);
    p->file_type = o->mix->llama_ftype;
    size_t n = m->n_tensors;
    nb_mix_choice *ch = nb_calloc(ctx, n ? n : 1, sizeof *ch, "tensor plan");
    if (!ch) return NB_ERR_NOMEM;
    nb_mix_opts mo = {.rules = o->rules, .pure = o->pure, .no_fallback = o->no_fallback};
    nb_status st = nb_mix_plan(o->mix, &hp, &mo, m->tensors, n, ch, ctx);
    for (size_t i = 0; i < n && st == NB_OK; i++) {
        nb_plan_tensor *t = &p->tensors[i];
        t->type = ch[i].type;
        t->wanted = ch[i].wanted;
        t->why = ch[i].why;
        t->rule = ch[i].rule;
        if (t->why == NB_PLAN_FALLBACK) {
            const nb_type_traits *w = nb_type_get(t->wanted);
            NB_WARN(ctx, "tensor '%s': row length %lld is not a multiple of %u (%s): using %s", t->name,
                    (long long)t->ne[0], w ? w->block_size : 0, nb_type_name(t->wanted), nb_type_name(t->type));
        }
    }
    if (st == NB_OK) st = plan_totals(p, m->path, ctx);
    if (st == NB_OK && o->rules) {
        for (size_t k = 0; k < o->rules->n; k++) {
            bool used = false;
            for (size_t i = 0; i < n && !used; i++) used = ch[i].rule == (long)k;
            if (!used) NB_WARN(ctx, "rule '%s' decided no tensor (no quantizable tensor matches it, or a later rule wins)",
                               nb_rule_text(o->rules, k));
        }
    }
    free(ch);
    return st;
}

nb_status nb_plan_make_file(const char *path, const nb_plan_opts *o, nb_plan *p, nb_ctx *ctx) {
    memset(p, 0, sizeof *p);
    p->file_type = -1;
    nb_model *m = NULL;
    NB_TRY(nb_model_open(path, &m, ctx));
    nb_status st = nb_plan_make(m, o, p, ctx);
    nb_model_close(m);
    return st;
}

nb_status nb_plan_bind(const nb_plan *p, const nb_model *m, nb_ctx *ctx) {
    if (p->prune.keep) {
        unsigned char fp0[32];
        nb_plan_fingerprint(m, fp0);
        NB_RETURN_IF(ctx, !memcmp(fp0, p->tensors_sha256, 32) && p->source_size == m->file_bytes, NB_ERR_INVALID,
                     "%s: the plan keeps %u of %u experts per layer: prune first (nibble prune MODEL --plan PLAN "
                     "--stats STATS -o PRUNED.gguf), or let `nibble quantize --allow-prune` do both", m->path,
                     p->prune.keep, p->prune.n_expert);
    }
    NB_RETURN_IF(ctx, p->n_tensors != m->n_tensors, NB_ERR_INVALID,
                 "%s: the plan is for another model (%zu tensors planned, the model has %zu)", m->path, p->n_tensors,
                 m->n_tensors);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *t = &m->tensors[i];
        const nb_plan_tensor *pt = &p->tensors[i];
        NB_RETURN_IF(ctx, strcmp(pt->name, t->name), NB_ERR_INVALID,
                     "%s: the plan is for another model (tensor %zu is '%s' in the plan, '%s' in the model)", m->path,
                     i, pt->name, t->name);
        bool same_shape = pt->n_dims == t->n_dims && !memcmp(pt->ne, t->ne, sizeof pt->ne);
        NB_RETURN_IF(ctx, pt->src_type != t->type || !same_shape, NB_ERR_INVALID,
                     "%s: the plan is for another model (tensor '%s' differs in type or shape)", m->path, t->name);
        const nb_type_traits *to = nb_type_get(pt->type);
        NB_RETURN_IF(ctx, !to || (to->block_size && t->ne[0] % to->block_size), NB_ERR_INVALID,
                     "%s: plan: tensor '%s': row length %lld is not a multiple of %s's block of %u", m->path, t->name,
                     (long long)t->ne[0], nb_type_name(pt->type), to ? to->block_size : 0);
        NB_RETURN_IF(ctx, pt->n_gptq_experts && (t->n_dims < 3 || pt->gptq_experts[pt->n_gptq_experts - 1] >=
                                                                       (uint64_t)t->ne[2]),
                     NB_ERR_INVALID, "%s: plan: tensor '%s': \"gptq_experts\" names an expert it does not have",
                     m->path, t->name);
    }
    unsigned char fp[32];
    nb_plan_fingerprint(m, fp);
    if (p->prune.keep) {
        NB_RETURN_IF(ctx, memcmp(fp, p->prune.tensors_sha256, 32), NB_ERR_INVALID,
                     "%s: the plan is for another model (the pruned model's tensors_sha256 differs)", m->path);
        return NB_OK;
    }
    NB_RETURN_IF(ctx, memcmp(fp, p->tensors_sha256, 32), NB_ERR_INVALID,
                 "%s: the plan is for another model (tensors_sha256 differs)", m->path);
    NB_RETURN_IF(ctx, p->source_size != m->file_bytes, NB_ERR_INVALID,
                 "%s: the plan is for another model (source size %llu in the plan, %llu here)", m->path,
                 (unsigned long long)p->source_size, (unsigned long long)m->file_bytes);
    return NB_OK;
}

/* ---- JSON out ---------------------------------------------------------------------------------------- */

void nb_plan_json_totals(const nb_plan *p, cJSON *j) {
    cJSON_AddNumberToObject(j, "n_tensors", (double)p->n_tensors);
    cJSON_AddNumberToObject(j, "n_quantized", (double)p->n_quantized);
    cJSON_AddNumberToObject(j, "n_requantized", (double)p->n_requantized);
    cJSON_AddNumberToObject(j, "n_fallback", (double)p->n_fallback);
    cJSON_AddNumberToObject(j, "n_elements", (double)p->n_elements);
    cJSON_AddNumberToObject(j, "bytes_in", (double)p->bytes_in);
    cJSON_AddNumberToObject(j, "tensor_bytes_out", (double)p->bytes_out);
    double el = p->n_elements ? (double)p->n_elements : 1.0;
    cJSON_AddNumberToObject(j, "bpw_in", p->n_elements ? (double)p->bytes_in * 8.0 / el : 0);
    cJSON_AddNumberToObject(j, "bpw_out", p->n_elements ? (double)p->bytes_out * 8.0 / el : 0);
}

char *nb_plan_to_json(const nb_plan *p) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    char hex[65];
    cJSON_AddNumberToObject(j, "nibble_plan", NB_PLAN_VERSION);
    if (p->mix[0]) cJSON_AddStringToObject(j, "mix", p->mix);
    if (p->file_type >= 0) cJSON_AddNumberToObject(j, "file_type", p->file_type);
    cJSON *src = cJSON_AddObjectToObject(j, "source");
    cJSON_AddStringToObject(src, "path", p->source_path ? p->source_path : "");
    cJSON_AddNumberToObject(src, "size", (double)p->source_size);
    nb_sha256_hex(p->tensors_sha256, hex);
    cJSON_AddStringToObject(src, "tensors_sha256", hex);
    nb_plan_json_totals(p, j);
    if (p->prune.keep) {
        const nb_plan_prune *pr = &p->prune;
        cJSON *o = cJSON_AddObjectToObject(j, "prune");
        cJSON_AddNumberToObject(o, "keep", pr->keep);
        cJSON_AddNumberToObject(o, "n_expert", pr->n_expert);
        cJSON_AddStringToObject(o, "criterion", pr->criterion);
        nb_sha256_hex(pr->tensors_sha256, hex);
        cJSON_AddStringToObject(o, "tensors_sha256", hex);
        cJSON *ls = cJSON_AddArrayToObject(o, "layers");
        for (uint32_t l = 0; l < pr->n_layer && ls; l++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "layer", pr->layer[l]);
            cJSON_AddItemToObject(e, "kept", cJSON_CreateIntArray(pr->kept + (size_t)l * pr->keep, (int)pr->keep));
            cJSON_AddItemToArray(ls, e);
        }
    }
    cJSON *ts = cJSON_AddArrayToObject(j, "tensors");
    for (size_t i = 0; i < p->n_tensors && ts; i++) {
        const nb_plan_tensor *t = &p->tensors[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", t->name);
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        uint32_t nd = t->n_dims ? t->n_dims : 1;
        for (uint32_t d = 0; d < nd && d < NB_MAX_DIMS && sh; d++)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->ne[d]));
        cJSON_AddStringToObject(e, "src_type", nb_type_name(t->src_type));
        cJSON_AddStringToObject(e, "type", nb_type_name(t->type));
        cJSON_AddStringToObject(e, "why", nb_plan_why_name(t->why));
        cJSON_AddNumberToObject(e, "bytes_in", (double)t->bytes_in);
        cJSON_AddNumberToObject(e, "bytes_out", (double)t->bytes_out);
        if (isfinite(t->pred_err)) cJSON_AddNumberToObject(e, "pred_err", t->pred_err);
        else cJSON_AddNullToObject(e, "pred_err");
        if (t->method != NB_PLAN_METHOD_JOB) cJSON_AddStringToObject(e, "method", nb_plan_method_name(t->method));
        if (t->n_gptq_experts) {
            cJSON *ge = cJSON_AddArrayToObject(e, "gptq_experts");
            for (uint32_t k = 0; ge && k < t->n_gptq_experts; k++)
                cJSON_AddItemToArray(ge, cJSON_CreateNumber((double)t->gptq_experts[k]));
        }
        cJSON_AddItemToArray(ts, e);
    }
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

/* ---- JSON in ----------------------------------------------------------------------------------------- */

/* Every key of object o must be one of the NULL-terminated list. */
static nb_status known_keys(const cJSON *o, const char *const *keys, const char *what, const char *where,
                            nb_ctx *ctx) {
    for (const cJSON *c = o->child; c; c = c->next) {
        bool ok = false;
        for (size_t k = 0; keys[k] && !ok; k++) ok = c->string && !strcmp(c->string, keys[k]);
        if (!ok) return nb_err(ctx, NB_ERR_FORMAT, "%s: plan: unknown key '%s'%s%s", what, c->string ? c->string : "?",
                               where ? " in " : "", where ? where : "");
    }
    return NB_OK;
}

/* A non-negative integer that a double represents exactly, or false. */
static bool json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return false;
    *out = (uint64_t)d;
    return true;
}

static bool hex32(const char *s, unsigned char out[32]) {
    if (!s || strlen(s) != 64) return false;
    for (int k = 0; k < 32; k++) {
        unsigned v = 0;
        for (int h = 0; h < 2; h++) {
            char c = s[2 * k + h];
            unsigned x = c >= '0' && c <= '9' ? (unsigned)(c - '0') : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                       : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16u;
            if (x > 15) return false;
            v = v * 16 + x;
        }
        out[k] = (unsigned char)v;
    }
    return true;
}

static const char *const k_top[] = {"nibble_plan", "mix", "file_type", "source", "n_tensors", "n_quantized",
                                    "n_requantized", "n_fallback", "n_elements", "bytes_in", "tensor_bytes_out",
                                    "bpw_in", "bpw_out", "prune", "tensors", NULL};
static const char *const k_src[] = {"path", "size", "tensors_sha256", NULL};
static const char *const k_prune[] = {"keep", "n_expert", "criterion", "tensors_sha256", "layers", NULL};
static const char *const k_prune_layer[] = {"layer", "kept", NULL};
static const char *const k_tensor[] = {"name", "shape", "src_type", "type", "why", "bytes_in", "bytes_out",
                                       "pred_err", "method", "gptq_experts", NULL};

/* The "prune" object (see plan.h): kept experts ascending, distinct, < n_expert. */
static nb_status parse_prune(const cJSON *o, const char *what, nb_plan_prune *pr, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, !cJSON_IsObject(o), NB_ERR_FORMAT, "%s: plan: \"prune\" is not an object", what);
    NB_TRY(known_keys(o, k_prune, what, "prune", ctx));
    uint64_t keep, n;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "keep");
    const cJSON *ne = cJSON_GetObjectItemCaseSensitive(o, "n_expert");
    NB_RETURN_IF(ctx, !json_u64(v, &keep) || !json_u64(ne, &n) || keep < 1 || n > 65536 || keep >= n, NB_ERR_FORMAT,
                 "%s: plan: prune: \"keep\" and \"n_expert\" must be integers with 1 <= keep < n_expert", what);
    pr->keep = (uint32_t)keep;
    pr->n_expert = (uint32_t)n;
    v = cJSON_GetObjectItemCaseSensitive(o, "criterion");
    NB_RETURN_IF(ctx, !cJSON_IsString(v) || strlen(v->valuestring) >= sizeof pr->criterion, NB_ERR_FORMAT,
                 "%s: plan: prune: bad \"criterion\"", what);
    snprintf(pr->criterion, sizeof pr->criterion, "%s", v->valuestring);
    v = cJSON_GetObjectItemCaseSensitive(o, "tensors_sha256");
    NB_RETURN_IF(ctx, !cJSON_IsString(v) || !hex32(v->valuestring, pr->tensors_sha256), NB_ERR_FORMAT,
                 "%s: plan: prune: bad \"tensors_sha256\"", what);
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(o, "layers");
    int nl = cJSON_IsArray(ls) ? cJSON_GetArraySize(ls) : -1;
    NB_RETURN_IF(ctx, nl < 1 || nl > 65536, NB_ERR_FORMAT, "%s: plan: prune: missing \"layers\"", what);
    pr->layer = nb_calloc(ctx, (size_t)nl, sizeof *pr->layer, "plan");
    pr->kept = nb_calloc(ctx, (size_t)nl * keep, sizeof *pr->kept, "plan");
    if (!pr->layer || !pr->kept) return NB_ERR_NOMEM;
    pr->n_layer = (uint32_t)nl;
    uint32_t l = 0;
    for (const cJSON *e = ls->child; e; e = e->next, l++) {
        NB_RETURN_IF(ctx, !cJSON_IsObject(e), NB_ERR_FORMAT, "%s: plan: prune.layers[%u] is not an object", what, l);
        NB_TRY(known_keys(e, k_prune_layer, what, "prune.layers", ctx));
        uint64_t L;
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(e, "kept");
        NB_RETURN_IF(ctx, !json_u64(cJSON_GetObjectItemCaseSensitive(e, "layer"), &L) || L > INT32_MAX ||
                              (l && (int32_t)L <= pr->layer[l - 1]),
                     NB_ERR_FORMAT, "%s: plan: prune.layers[%u]: bad \"layer\" (block indices ascending)", what, l);
        pr->layer[l] = (int32_t)L;
        NB_RETURN_IF(ctx, !cJSON_IsArray(k) || cJSON_GetArraySize(k) != (int)keep, NB_ERR_FORMAT,
                     "%s: plan: prune.layers[%u]: \"kept\" must list %u experts", what, l, pr->keep);
        uint32_t q = 0;
        for (const cJSON *x = k->child; x; x = x->next, q++) {
            uint64_t ex;
            int32_t *dst = &pr->kept[(size_t)l * keep + q];
            NB_RETURN_IF(ctx, !json_u64(x, &ex) || ex >= n || (q && (int32_t)ex <= dst[-1]), NB_ERR_FORMAT,
                         "%s: plan: prune.layers[%u].kept: expert indices below %u, ascending", what, l, pr->n_expert);
            *dst = (int32_t)ex;
        }
    }
    return NB_OK;
}

static nb_status parse_tensor(const cJSON *e, size_t i, const char *what, nb_plan_tensor *t, char **np,
                              nb_ctx *ctx) {
    char where[64];
    snprintf(where, sizeof where, "tensors[%zu]", i);
    NB_RETURN_IF(ctx, !cJSON_IsObject(e), NB_ERR_FORMAT, "%s: plan: %s is not an object", what, where);
    NB_TRY(known_keys(e, k_tensor, what, where, ctx));
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(e, "type");
    NB_RETURN_IF(ctx, !cJSON_IsString(name) || !name->valuestring[0] || strlen(name->valuestring) > NB_MAX_NAME,
                 NB_ERR_FORMAT, "%s: plan: %s: missing or bad \"name\"", what, where);
    const char *nm = name->valuestring;
    NB_RETURN_IF(ctx, !cJSON_IsString(type) || !nb_type_from_name(type->valuestring, &t->type), NB_ERR_FORMAT,
                 "%s: plan: tensor '%s': missing or unknown \"type\"", what, nm);
    size_t len = strlen(nm) + 1;
    memcpy(*np, nm, len);
    t->name = *np;
    *np += len;
    t->wanted = t->type;
    t->why = NB_PLAN_GIVEN;
    t->rule = -1;
    t->pred_err = NAN;
    t->src_type = NB_TYPE_COUNT; /* unknown until bound: filled from the model */
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(e, "why"))) {
        NB_RETURN_IF(ctx, !cJSON_IsString(v) || !nb_plan_why_from_name(v->valuestring, &t->why), NB_ERR_FORMAT,
                     "%s: plan: tensor '%s': unknown \"why\"", what, nm);
        if (t->why == NB_PLAN_FALLBACK) t->why = NB_PLAN_GIVEN; /* the wanted type is not recorded */
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(e, "src_type")))
        NB_RETURN_IF(ctx, !cJSON_IsString(v) || !nb_type_from_name(v->valuestring, &t->src_type), NB_ERR_FORMAT,
                     "%s: plan: tensor '%s': unknown \"src_type\"", what, nm);
    if ((v = cJSON_GetObjectItemCaseSensitive(e, "shape"))) {
        int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
        NB_RETURN_IF(ctx, n < 1 || n > NB_MAX_DIMS, NB_ERR_FORMAT, "%s: plan: tensor '%s': bad \"shape\"", what, nm);
        t->n_dims = (uint32_t)n;
        for (int d = 0; d < NB_MAX_DIMS; d++) t->ne[d] = 1;
        int d = 0;
        for (const cJSON *x = v->child; x; x = x->next, d++) {
            uint64_t u;
            NB_RETURN_IF(ctx, !json_u64(x, &u) || u > (uint64_t)INT64_MAX, NB_ERR_FORMAT,
                         "%s: plan: tensor '%s': bad \"shape\"", what, nm);
            t->ne[d] = (int64_t)u;
        }
    } else {
        t->n_dims = 0; /* unknown until bound */
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(e, "pred_err")) && !cJSON_IsNull(v)) {
        NB_RETURN_IF(ctx, !cJSON_IsNumber(v) || !isfinite(v->valuedouble), NB_ERR_FORMAT,
                     "%s: plan: tensor '%s': bad \"pred_err\"", what, nm);
        t->pred_err = v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(e, "method")))
        NB_RETURN_IF(ctx, !cJSON_IsString(v) || !nb_plan_method_from_name(v->valuestring, &t->method), NB_ERR_FORMAT,
                     "%s: plan: tensor '%s': unknown \"method\" (rtn, imatrix, gptq or awq)", what, nm);
    if ((v = cJSON_GetObjectItemCaseSensitive(e, "gptq_experts"))) {
        int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
        NB_RETURN_IF(ctx, n < 1 || n > 65536 || t->method != NB_PLAN_METHOD_GPTQ, NB_ERR_FORMAT,
                     "%s: plan: tensor '%s': \"gptq_experts\" must be a non-empty list with \"method\": \"gptq\"",
                     what, nm);
        t->gptq_experts = nb_calloc(ctx, (size_t)n, sizeof *t->gptq_experts, "plan");
        if (!t->gptq_experts) return NB_ERR_NOMEM;
        t->n_gptq_experts = (uint32_t)n;
        uint32_t k = 0;
        for (const cJSON *x = v->child; x; x = x->next, k++) {
            uint64_t u;
            NB_RETURN_IF(ctx, !json_u64(x, &u) || u >= 65536 || (k && u <= t->gptq_experts[k - 1]), NB_ERR_FORMAT,
                         "%s: plan: tensor '%s': \"gptq_experts\" must be ascending expert numbers", what, nm);
            t->gptq_experts[k] = (uint32_t)u;
        }
    }
    uint64_t u;
    if ((v = cJSON_GetObjectItemCaseSensitive(e, "bytes_in")))
        NB_RETURN_IF(ctx, !json_u64(v, &u), NB_ERR_FORMAT, "%s: plan: tensor '%s': bad \"bytes_in\"", what, nm);
    if ((v = cJSON_GetObjectItemCaseSensitive(e, "bytes_out")))
        NB_RETURN_IF(ctx, !json_u64(v, &u), NB_ERR_FORMAT, "%s: plan: tensor '%s': bad \"bytes_out\"", what, nm);
    return NB_OK;
}

nb_status nb_plan_from_json(const char *text, const char *what, nb_plan *p, nb_ctx *ctx) {
    memset(p, 0, sizeof *p);
    p->file_type = -1;
    cJSON *j = cJSON_Parse(text);
    NB_RETURN_IF(ctx, !j, NB_ERR_FORMAT, "%s: plan: not valid JSON", what);
    nb_status st = NB_OK;
    const cJSON *v, *src, *ts;
    if (!cJSON_IsObject(j)) NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: plan: not a JSON object", what);
    NB_CHECK_GOTO(st, known_keys(j, k_top, what, NULL, ctx), out);
    v = cJSON_GetObjectItemCaseSensitive(j, "nibble_plan");
    if (!cJSON_IsNumber(v) || v->valuedouble != NB_PLAN_VERSION)
        NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: plan: \"nibble_plan\" must be %d (a plan written by nibble)",
                     what, NB_PLAN_VERSION);
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "mix"))) {
        if (!cJSON_IsString(v) || strlen(v->valuestring) >= sizeof p->mix)
            NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: plan: bad \"mix\"", what);
        snprintf(p->mix, sizeof p->mix, "%s", v->valuestring);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "file_type"))) {
        uint64_t u;
        if (!json_u64(v, &u) || u > INT32_MAX) NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: plan: bad \"file_type\"", what);
        p->file_type = (int32_t)u;
    }
    src = cJSON_GetObjectItemCaseSensitive(j, "source");
    if (!cJSON_IsObject(src)) NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: plan: missing \"source\"", what);
    NB_CHECK_GOTO(st, known_keys(src, k_src, what, "source", ctx), out);
    v = cJSON_GetObjectItemCaseSensitive(src, "size");
    if (!json_u64(v, &p->source_size)) NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: plan: bad source \"size\"", what);
    v = cJSON_GetObjectItemCaseSensitive(src, "tensors_sha256");
    if (!cJSON_IsString(v) || !hex32(v->valuestring, p->tensors_sha256))
        NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: plan: bad source \"tensors_sha256\"", what);
    v = cJSON_GetObjectItemCaseSensitive(src, "path");
    if (v && !cJSON_IsString(v)) NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: plan: bad source \"path\"", what);
    p->source_path = nb_strdup(ctx, v ? v->valuestring : "");
    if (!p->source_path) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "out of memory");
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "prune"))) NB_CHECK_GOTO(st, parse_prune(v, what, &p->prune, ctx), out);
    ts = cJSON_GetObjectItemCaseSensitive(j, "tensors");
    if (!cJSON_IsArray(ts)) NB_FAIL_GOTO(st, out, ctx, NB_ERR_FORMAT, "%s: plan: missing \"tensors\"", what);
    size_t n = (size_t)cJSON_GetArraySize(ts), name_bytes = 0;
    for (const cJSON *e = ts->child; e; e = e->next) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
        if (cJSON_IsString(nm)) name_bytes += strlen(nm->valuestring) + 1;
    }
    p->tensors = nb_calloc(ctx, n ? n : 1, sizeof *p->tensors, "tensor plan");
    p->names = nb_malloc(ctx, name_bytes ? name_bytes : 1, "tensor names");
    p->names_bytes = name_bytes;
    if (!p->tensors || !p->names) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "out of memory");
    char *np = p->names;
    size_t i = 0;
    p->n_tensors = n; /* a failure part-way frees what the tensors parsed so far own */
    for (const cJSON *e = ts->child; e && st == NB_OK; e = e->next, i++) st = parse_tensor(e, i, what, &p->tensors[i], &np, ctx);
    p->n_tensors = i;
out:
    cJSON_Delete(j);
    if (st != NB_OK) nb_plan_free(p);
    return st;
}

/* Fill what a plan file may leave out (source types, shapes) from the model,
 * check the plan against it and recompute the totals. */
static nb_status plan_complete(nb_plan *p, const nb_model *m, nb_ctx *ctx) {
    for (size_t i = 0; i < p->n_tensors && i < m->n_tensors; i++) {
        nb_plan_tensor *t = &p->tensors[i];
        const nb_tensor *mt = &m->tensors[i];
        if (strcmp(t->name, mt->name)) continue; /* nb_plan_bind reports it */
        if (t->src_type == NB_TYPE_COUNT) t->src_type = mt->type;
        if (t->n_dims == 0) {
            t->n_dims = mt->n_dims;
            memcpy(t->ne, mt->ne, sizeof t->ne);
        }
        t->n_elements = nb_tensor_nelements(mt);
        t->bytes_in = mt->nbytes;
    }
    NB_TRY(nb_plan_bind(p, m, ctx));
    return plan_totals(p, m->path, ctx);
}

nb_status nb_plan_load(const char *path, nb_plan *p, nb_ctx *ctx) {
    memset(p, 0, sizeof *p);
    p->file_type = -1;
    char *buf = NULL;
    size_t len = 0;
    NB_TRY(nb_read_file(path, (size_t)256 << 20, &buf, &len, ctx));
    nb_status st = nb_plan_from_json(buf, path, p, ctx);
    free(buf);
    return st;
}

nb_status nb_plan_resolve(nb_plan *p, const nb_model *m, nb_ctx *ctx) {
    return plan_complete(p, m, ctx);
}

nb_status nb_plan_retotal(nb_plan *p, nb_ctx *ctx) {
    return plan_totals(p, p->source_path ? p->source_path : "plan", ctx);
}

/* ---- table --------------------------------------------------------------------------------------------- */

bool nb_plan_slice_gptq(const nb_plan_tensor *t, uint32_t slice) {
    if (t->method != NB_PLAN_METHOD_JOB && t->method != NB_PLAN_METHOD_GPTQ) return false;
    if (!t->n_gptq_experts) return true;
    for (uint32_t k = 0; k < t->n_gptq_experts; k++)
        if (t->gptq_experts[k] == slice) return true;
    return false;
}

const char *nb_plan_method_name(nb_plan_method m) {
    switch (m) {
    case NB_PLAN_METHOD_JOB: return "job";
    case NB_PLAN_METHOD_RTN: return "rtn";
    case NB_PLAN_METHOD_IMATRIX: return "imatrix";
    case NB_PLAN_METHOD_GPTQ: return "gptq";
    case NB_PLAN_METHOD_AWQ: return "awq";
    }
    return "?";
}

bool nb_plan_method_from_name(const char *name, nb_plan_method *out) {
    for (int m = NB_PLAN_METHOD_JOB; m <= NB_PLAN_METHOD_LAST; m++)
        if (!strcmp(name, nb_plan_method_name((nb_plan_method)m))) {
            *out = (nb_plan_method)m;
            return true;
        }
    return false;
}

void nb_plan_print(FILE *f, const nb_plan *p) {
    bool methods = false; /* a method column only for plans that choose methods */
    for (size_t i = 0; i < p->n_tensors; i++) methods |= p->tensors[i].method != NB_PLAN_METHOD_JOB;
    fprintf(f, "%-40s %-22s %-8s    %-8s %-8s %10s%s\n", "tensor", "shape", "source", "type", "why", "bytes",
            methods ? "  method" : "");
    for (size_t i = 0; i < p->n_tensors; i++) {
        const nb_plan_tensor *t = &p->tensors[i];
        char shape[64];
        int o = snprintf(shape, sizeof shape, "%lld", (long long)t->ne[0]);
        for (uint32_t d = 1; d < t->n_dims && d < NB_MAX_DIMS && o > 0 && (size_t)o < sizeof shape; d++)
            o += snprintf(shape + o, sizeof shape - (size_t)o, "x%lld", (long long)t->ne[d]);
        char meth[48] = "";
        if (methods && t->n_gptq_experts) /* some experts of a stack: gptq[k/n] */
            snprintf(meth, sizeof meth, "  gptq[%u/%lld]", t->n_gptq_experts, (long long)t->ne[2]);
        else if (methods)
            snprintf(meth, sizeof meth, "  %s", t->method == NB_PLAN_METHOD_JOB ? "-" : nb_plan_method_name(t->method));
        fprintf(f, "%-40s %-22s %-8s -> %-8s %-8s %10llu%s\n", t->name, shape, nb_type_name(t->src_type),
                nb_type_name(t->type), nb_plan_why_name(t->why), (unsigned long long)t->bytes_out, meth);
    }
}
