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

/* Does existing output `o` (lstat'ed) belong to input `in` (see header)? */
static bool output_is_input(const struct stat *o, const char *in, nb_ctx *ctx) {
    struct stat si;
    if (stat(in, &si) != 0) return false;
    if (same(o, &si)) return true;
    const char *idx = ".safetensors.index.json";
    bool is_dir = S_ISDIR(si.st_mode), is_index = !is_dir && nb_str_ends_with(in, idx);
    if (!is_dir && !is_index) return false;
    char *dir = is_dir ? nb_strdup(ctx, in) : nb_path_sibling(ctx, in, ".");
    if (!dir) return false;
    /* the index's stem ("model" for model.safetensors.index.json) */
    const char *base = strrchr(in, '/') ? strrchr(in, '/') + 1 : in;
    size_t stem = is_index ? strlen(base) - strlen(idx) : 0;
    bool hit = false;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && !hit && (e = readdir(d))) {
        bool take = is_dir ? read_from_dir(e->d_name)
                           : !strncmp(e->d_name, base, stem) && nb_str_ends_with(e->d_name, ".safetensors");
        if (!take) continue;
        char *p = nb_path_join(ctx, dir, e->d_name);
        struct stat sf;
        hit = p && stat(p, &sf) == 0 && S_ISREG(sf.st_mode) && same(o, &sf);
        free(p);
    }
    if (d) closedir(d);
    free(dir);
    return hit;
}

/* Identity of an output: itself when it exists, else (its directory, its name). */
typedef struct {
    bool exists;
    struct stat st; /* the file, or its directory */
    const char *name;
} out_id;

static bool out_identify(const char *path, out_id *id, nb_ctx *ctx) {
    memset(id, 0, sizeof *id);
    if (lstat(path, &id->st) == 0) return id->exists = true;
    char *dir = nb_path_sibling(ctx, path, ".");
    bool ok = dir && stat(dir, &id->st) == 0;
    free(dir);
    id->name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    return ok;
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
        if (!out_identify(out[i], &a, ctx)) continue;
        if (a.exists)
            for (size_t k = 0; k < n_in; k++)
                if (!skip(in[k]) && output_is_input(&a.st, in[k], ctx))
                    return nb_err(ctx, NB_ERR_INVALID, "%s: is the input %s (same file); choose another output",
                                  out[i], in[k]);
        for (size_t j = i + 1; j < n_out; j++) {
            out_id b;
            if (!skip(out[j]) && out_identify(out[j], &b, ctx) && out_same(&a, &b))
                return nb_err(ctx, NB_ERR_INVALID, "%s and %s are the same file; choose two outputs", out[i], out[j]);
        }
    }
    return NB_OK;
}
