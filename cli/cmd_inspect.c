/* cli/cmd_inspect.c — `nibble inspect FILE|DIR [--json]`. */
#include "cli/cli.h"
#include "core/str.h"
#include "pipeline/bundle.h"
#include "core/progress.h"
#include "core/str.h"
#include "formats/json_strict.h"
#include "formats/model.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static cJSON *kv_json(const nb_kv_value *v) {
    switch (v->type) {
    case NB_KV_STRING: return cJSON_CreateString(v->v.s.ptr);
    case NB_KV_BOOL: return cJSON_CreateBool(v->v.u != 0);
    case NB_KV_F32: case NB_KV_F64: return cJSON_CreateNumber(v->v.f);
    case NB_KV_I8: case NB_KV_I16: case NB_KV_I32: return cJSON_CreateNumber((double)v->v.i);
    case NB_KV_ARRAY: {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "array");
        cJSON_AddStringToObject(o, "elem", nb_kv_type_name(v->v.arr.elem));
        cJSON_AddNumberToObject(o, "n", (double)v->v.arr.n);
        return o;
    }
    case NB_KV_I64: {
        char b[32];
        snprintf(b, sizeof b, "%lld", (long long)v->v.i);
        return cJSON_CreateRaw(b); /* exact: a double would lose 64-bit precision */
    }
    case NB_KV_U64: {
        char b[32];
        snprintf(b, sizeof b, "%llu", (unsigned long long)v->v.u);
        return cJSON_CreateRaw(b);
    }
    default: return cJSON_CreateNumber((double)v->v.u);
    }
}

typedef struct {
    uint64_t n_params, total_bytes;
    const char *arch;
} totals;

static totals compute_totals(const nb_model *m) {
    totals t = {0, 0, nb_kv_get_str(&m->kv, "general.architecture")};
    for (size_t i = 0; i < m->n_tensors; i++) {
        t.n_params += nb_tensor_nelements(&m->tensors[i]);
        t.total_bytes += m->tensors[i].nbytes;
    }
    return t;
}

static int print_json(const nb_model *m) {
    totals t = compute_totals(m);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "path", m->path);
    cJSON_AddStringToObject(root, "format", nb_format_name(m->format));
    if (t.arch) cJSON_AddStringToObject(root, "architecture", t.arch);
    else cJSON_AddNullToObject(root, "architecture");
    cJSON *meta = cJSON_AddObjectToObject(root, "metadata");
    for (size_t i = 0; i < m->kv.n; i++) cJSON_AddItemToObject(meta, m->kv.items[i].key, kv_json(&m->kv.items[i].val));
    cJSON *ts = cJSON_AddArrayToObject(root, "tensors");
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *x = &m->tensors[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", x->name);
        cJSON_AddStringToObject(o, "type", nb_type_name(x->type));
        cJSON *ne = cJSON_AddArrayToObject(o, "ne");
        cJSON *shape = cJSON_AddArrayToObject(o, "shape");
        for (uint32_t d = 0; d < x->n_dims; d++) {
            cJSON_AddItemToArray(ne, cJSON_CreateNumber((double)x->ne[d]));
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)x->ne[x->n_dims - 1 - d]));
        }
        cJSON_AddNumberToObject(o, "bytes", (double)x->nbytes);
        cJSON_AddNumberToObject(o, "offset", (double)x->file_offset);
        cJSON_AddItemToArray(ts, o);
    }
    cJSON_AddNumberToObject(root, "n_tensors", (double)m->n_tensors);
    cJSON_AddNumberToObject(root, "n_params", (double)t.n_params);
    cJSON_AddNumberToObject(root, "total_bytes", (double)t.total_bytes);
    cJSON_AddNumberToObject(root, "file_bytes", (double)m->file_bytes);
    cJSON_AddNumberToObject(root, "bpw", t.n_params ? (double)t.total_bytes * 8.0 / (double)t.n_params : 0.0);
    char *s = nb_json_print(root, false);
    cJSON_Delete(root);
    if (!s) return NB_EXIT_IO;
    puts(s);
    free(s);
    return NB_EXIT_OK;
}

static void fmt_shape(const nb_tensor *x, char *buf, size_t n) {
    size_t used = 0;
    buf[0] = 0;
    for (uint32_t d = 0; d < x->n_dims && used < n; d++)
        used += (size_t)snprintf(buf + used, n - used, d ? " x %lld" : "%lld", (long long)x->ne[d]);
    if (x->n_dims == 0) snprintf(buf, n, "scalar");
}

static void print_text(const nb_model *m, bool all_meta) {
    totals t = compute_totals(m);
    char b1[32], b2[32];
    printf("file:          %s\nformat:        %s\n", m->path, nb_format_name(m->format));
    printf("architecture:  %s\n", t.arch ? t.arch : "(unknown: no general.architecture)");
    if (t.arch) {
        /* hyper-parameters: the "<arch>." keys */
        size_t al = strlen(t.arch);
        bool any = false;
        for (size_t i = 0; i < m->kv.n; i++) {
            const char *k = m->kv.items[i].key;
            if (strncmp(k, t.arch, al) == 0 && k[al] == '.') {
                char v[160];
                if (!any) printf("hyper-parameters:\n");
                any = true;
                char ek[1024];
                printf("  %-40s %s\n", nb_str_escape_ctl(ek, sizeof ek, k + al + 1),
                       nb_kv_value_fmt(&m->kv.items[i].val, v, sizeof v));
            }
        }
    }
    printf("metadata (%zu keys):\n", m->kv.n);
    for (size_t i = 0; i < m->kv.n; i++) {
        char v[4096], ek[1024];
        printf("  %-44s %s\n", nb_str_escape_ctl(ek, sizeof ek, m->kv.items[i].key),
               nb_kv_value_fmt(&m->kv.items[i].val, v, all_meta ? sizeof v : 160));
    }
    printf("tensors (%zu):\n  %-44s %-8s %-24s %12s\n", m->n_tensors, "name", "type", "shape (ne)", "bytes");
    size_t not_ggml = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *x = &m->tensors[i];
        char shape[96];
        fmt_shape(x, shape, sizeof shape);
        char en[NB_MAX_NAME * 4 + 1];
        printf("  %-44s %-8s %-24s %12llu\n", nb_str_escape_ctl(en, sizeof en, x->name), nb_type_name(x->type), shape,
               (unsigned long long)x->nbytes);
        const nb_type_traits *tr = nb_type_get(x->type);
        if (tr && !tr->ggml_loadable) not_ggml++;
    }
    printf("total:         %zu tensors, %llu parameters, %s of tensor data, %.3f bits per weight\n",
           m->n_tensors, (unsigned long long)t.n_params, nb_fmt_bytes((double)t.total_bytes, b1, sizeof b1),
           t.n_params ? (double)t.total_bytes * 8.0 / (double)t.n_params : 0.0);
    printf("file size:     %s\n", nb_fmt_bytes((double)m->file_bytes, b2, sizeof b2));
    if (not_ggml && m->format == NB_FMT_GGUF)
        printf("note:          %zu tensors use nibble's own types (NF4/INT4); llama.cpp cannot load this file.\n"
               "               Export them with nibble for transformers/vLLM, or quantize to a GGUF type.\n",
               not_ggml);
}

/* A bundle's manifest: as it is with --json, else the main facts and the file list. */
static void print_manifest(const char *man, bool json) {
    cJSON *j = cJSON_Parse(man);
    if (json || !j) {
        if (j) {
            char *s = cJSON_PrintUnformatted(j);
            if (s) puts(s);
            free(s);
        } else {
            puts(man);
        }
        cJSON_Delete(j);
        return;
    }
    const cJSON *rec = cJSON_GetObjectItemCaseSensitive(j, "recipe"), *nbv = cJSON_GetObjectItemCaseSensitive(j, "nibble"),
                *met = cJSON_GetObjectItemCaseSensitive(j, "metrics"), *fa = cJSON_GetObjectItemCaseSensitive(j, "files");
    const cJSON *name = rec ? cJSON_GetObjectItemCaseSensitive(rec, "name") : NULL;
    const cJSON *ver = nbv ? cJSON_GetObjectItemCaseSensitive(nbv, "version") : NULL,
                *com = nbv ? cJSON_GetObjectItemCaseSensitive(nbv, "commit") : NULL;
    printf("bundle      recipe %s, nibble %s (%s)\n", cJSON_IsString(name) ? name->valuestring : "?",
           cJSON_IsString(ver) ? ver->valuestring : "?", cJSON_IsString(com) ? com->valuestring : "?");
    if (cJSON_IsObject(met)) {
        const char *keys[] = {"ppl_reference", "ppl", "kld", "same_top_pct"};
        printf("validation ");
        for (int k = 0; k < 4; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(met, keys[k]);
            if (cJSON_IsNumber(v)) printf(" %s %.6g", keys[k], v->valuedouble);
        }
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(met, "gate_passed");
        printf("%s\n", cJSON_IsBool(g) ? (cJSON_IsTrue(g) ? ", gate passed" : ", gate FAILED") : "");
    }
    const cJSON *oa = cJSON_GetObjectItemCaseSensitive(j, "outputs");
    for (const cJSON *o = cJSON_IsArray(oa) ? oa->child : NULL; o; o = o->next) { /* HF directories */
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "dir"), *f = cJSON_GetObjectItemCaseSensitive(o, "format"),
                    *n = cJSON_GetObjectItemCaseSensitive(o, "files"), *z = cJSON_GetObjectItemCaseSensitive(o, "bytes");
        printf("output      %-40s %14.0f  %s, %.0f files\n", cJSON_IsString(d) ? d->valuestring : "?",
               cJSON_IsNumber(z) ? z->valuedouble : 0, cJSON_IsString(f) ? f->valuestring : "?",
               cJSON_IsNumber(n) ? n->valuedouble : 0);
    }
    for (const cJSON *f = cJSON_IsArray(fa) ? fa->child : NULL; f; f = f->next) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(f, "name"), *z = cJSON_GetObjectItemCaseSensitive(f, "size"),
                    *h = cJSON_GetObjectItemCaseSensitive(f, "sha256");
        printf("file        %-40s %14.0f  sha256 %s\n", cJSON_IsString(n) ? n->valuestring : "?",
               cJSON_IsNumber(z) ? z->valuedouble : 0, cJSON_IsString(h) ? h->valuestring : "?");
    }
    cJSON_Delete(j);
}

int nb_cmd_inspect(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    bool json = false, all_meta = false;
    const nb_opt opts[] = {
        {.name = "json", .type = NB_OPT_FLAG, .dest = &json,
         .help = "print one JSON object instead of the table (for scripts)"},
        {.name = "all-metadata", .type = NB_OPT_FLAG, .dest = &all_meta,
         .help = "print every metadata key (default: long arrays are summarised)"},
    };
    const nb_cmd_spec spec = {
        .name = "inspect",
        .usage = "FILE|DIR|BUNDLE.tar.zst [--json] [--all-metadata]",
        .about = "Show what a model file holds: format, architecture, hyper-parameters, metadata keys,\n"
                 "the tensor table (name, type, shape, bytes) and totals (parameters, size, bits per weight).\n"
                 "FILE is a .gguf or .safetensors file or a model.safetensors.index.json; DIR is a Hugging\n"
                 "Face model directory (config.json + safetensors). Only headers are read. A bundle\n"
                 "(`nibble build`, .tar.zst) shows its manifest: recipe, validation, files and sha256.",
        NB_OPTS_TABLE(opts),
        NB_OPTS_ONE_POS("FILE|DIR"),
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    if (rc != NB_OPTS_RUN) { nb_ctx_free(&ctx); return rc; }
    const char *path = args.pos[0];
    if (nb_str_ends_with(path, ".tar.zst")) { /* a bundle: its manifest, without unpacking */
        char *man = NULL;
        nb_status bst = nb_bundle_read_manifest(path, &man, &ctx);
        if (bst != NB_OK) rc = nb_cli_fail("inspect", &ctx, bst);
        else {
            print_manifest(man, json);
            rc = NB_EXIT_OK;
        }
        free(man);
        nb_ctx_free(&ctx);
        return rc;
    }
    nb_model *m = NULL;
    nb_status st = nb_model_open(path, &m, &ctx);
    if (st != NB_OK) return nb_cli_fail("inspect", &ctx, st);
    rc = NB_EXIT_OK;
    if (json) rc = print_json(m);
    else print_text(m, all_meta);
    nb_model_close(m);
    nb_ctx_free(&ctx);
    return rc;
}
