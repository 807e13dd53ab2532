/* core/str.c — string and path helpers (see core/str.h). */
#include "core/str.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

bool nb_str_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

bool nb_str_ends_with_ci(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

bool nb_str_starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

char *nb_path_join(nb_ctx *ctx, const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = nb_malloc(ctx, n, "path");
    if (p) snprintf(p, n, "%s%s%s", dir, nb_str_ends_with(dir, "/") || !*dir ? "" : "/", name);
    return p;
}

char *nb_path_sibling(nb_ctx *ctx, const char *path, const char *name) {
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) + 1 : 0, n = strlen(name);
    char *p = nb_malloc(ctx, dlen + n + 1, "path");
    if (!p) return NULL;
    memcpy(p, path, dlen);
    memcpy(p + dlen, name, n + 1);
    return p;
}
