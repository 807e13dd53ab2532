/* core/paths.c — inputs vs outputs by device+inode (see core/paths.h). */
#include "core/paths.h"

#include "core/str.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The file `name` in directory `dir` is one a reader takes from it. */
static bool read_from_dir(const char *name) {
    return nb_str_ends_with(name, ".json") || nb_str_ends_with(name, ".model") ||
           nb_str_starts_with(name, "tokenizer") || nb_str_starts_with(name, "adapter_model.") ||
           (nb_str_starts_with(name, "model") && nb_str_ends_with(name, ".safetensors"));
}

static bool same(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* Does existing output `o` (lstat'ed) belong to input `in` (see header)?
 * Out of memory: NB_ERR_NOMEM (the check is never skipped silently). */
static nb_status output_is_input(const struct stat *o, const char *in, bool *hit_out, nb_ctx *ctx) {
    *hit_out = false;
    struct stat si;
    if (stat(in, &si) != 0) return NB_OK;
    if (same(o, &si)) return *hit_out = true, NB_OK;
    const char *idx = ".safetensors.index.json";
    bool is_dir = S_ISDIR(si.st_mode), is_index = !is_dir && nb_str_ends_with(in, idx);
    if (!is_dir && !is_index) return NB_OK;
    char *dir = is_dir ? nb_strdup(ctx, in) : nb_path_sibling(ctx, in, ".");
    if (!dir) return NB_ERR_NOMEM;
    /* the index's stem ("model" for model.safetensors.index.json) */
    const char *base = strrchr(in, '/') ? strrchr(in, '/') + 1 : in;
    size_t stem = is_index ? strlen(base) - strlen(idx) : 0;
    bool hit = false;
    nb_status st = NB_OK;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && !hit && st == NB_OK && (e = readdir(d))) {
        bool take = is_dir ? read_from_dir(e->d_name)
                           : !strncmp(e->d_name, base, stem) && nb_str_ends_with(e->d_name, ".safetensors");
        if (!take) continue;
        char *p = nb_path_join(ctx, dir, e->d_name);
        struct stat sf;
        if (!p) st = NB_ERR_NOMEM;
        else hit = stat(p, &sf) == 0 && S_ISREG(sf.st_mode) && same(o, &sf);
        free(p);
    }
    if (d) closedir(d);
    free(dir);
    *hit_out = hit;
    return st;
}

/* Identity of an output: itself when it exists, else (its directory, its name). */
typedef struct {
    bool exists;
    struct stat st; /* the file, or its directory */
    const char *name;
} out_id;

/* NB_OK with *known false when neither the path nor its directory exists. */
static nb_status out_identify(const char *path, out_id *id, bool *known, nb_ctx *ctx) {
    memset(id, 0, sizeof *id);
    *known = true;
    if (lstat(path, &id->st) == 0) return id->exists = true, NB_OK;
    char *dir = nb_path_sibling(ctx, path, ".");
    if (!dir) return NB_ERR_NOMEM;
    *known = stat(dir, &id->st) == 0;
    free(dir);
    id->name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    return NB_OK;
}

static bool out_same(const out_id *a, const out_id *b) {
    if (a->exists != b->exists || !same(&a->st, &b->st)) return false;
    return a->exists || !strcmp(a->name, b->name);
}

static bool skip(const char *p) { return !p || !*p || !strcmp(p, "-"); }

nb_status nb_paths_check(const char *const *in, size_t n_in, const char *const *out, size_t n_out, nb_ctx *ctx) {
    for (size_t i = 0; i < n_out; i++) {
        if (skip(out[i])) continue;
        out_id a;
        bool known, hit;
        NB_TRY(out_identify(out[i], &a, &known, ctx));
        if (!known) continue;
        for (size_t k = 0; a.exists && k < n_in; k++) {
            if (skip(in[k])) continue;
            NB_TRY(output_is_input(&a.st, in[k], &hit, ctx));
            if (hit)
                return nb_err(ctx, NB_ERR_INVALID, "%s: is the input %s (same file); choose another output", out[i],
                              in[k]);
        }
        for (size_t j = i + 1; j < n_out; j++) {
            out_id b;
            if (skip(out[j])) continue;
            NB_TRY(out_identify(out[j], &b, &known, ctx));
            if (known && out_same(&a, &b))
                return nb_err(ctx, NB_ERR_INVALID, "%s and %s are the same file; choose two outputs", out[i], out[j]);
        }
    }
    return NB_OK;
}
