/* core/str.c — string and path helpers (see core/str.h). */
#include "core/str.h"

#include <stdio.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
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

char *nb_str_concat(nb_ctx *ctx, const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *s = nb_malloc(ctx, na + nb + 1, "path");
    if (!s) return NULL;
    memcpy(s, a, na);
    memcpy(s + na, b, nb + 1);
    return s;
}

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

bool nb_parse_scaled(const char *s, bool binary, unsigned long long *out) {
    if (!s || !((*s >= '0' && *s <= '9') || *s == '.')) return false; /* no sign, no blank */
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    double d = 0;
    bool frac = *end == '.';
    if (errno) return false;
    if (frac) {
        d = strtod(s, &end);
        if (end == s) return false;
    } else if (end == s) {
        return false;
    }
    double mult = 1;
    int shift = 0;
    const char *u = end;
    switch (*u) {
    case 'k': case 'K': mult = 1e3; shift = 10; break;
    case 'M': mult = 1e6; shift = 20; break;
    case 'G': mult = 1e9; shift = 30; break;
    case 'T': mult = 1e12; shift = 40; break;
    case 0: break;
    case 'B': if (binary && !u[1]) break; return false;
    default: return false;
    }
    if (*u && *u != 'B') {
        u++;
        if (binary && *u == 'i') { mult = (double)(1ull << shift); u++; }
        if (*u == 'B') u++;
        if (*u) return false;
    }
    if (frac) {
        if (mult == 1) return false; /* a fraction of a unit, never of a byte/count */
        double x = d * mult;
        if (!(x >= 0 && x < 18446744073709551616.0)) return false;
        *out = (unsigned long long)x;
        return true;
    }
    unsigned long long m = (unsigned long long)mult;
    if (v > ULLONG_MAX / m) return false;
    *out = v * m;
    return true;
}

bool nb_parse_size(const char *s, uint64_t *out) {
    unsigned long long v;
    if (!nb_parse_scaled(s, true, &v)) return false;
    *out = v;
    return true;
}

char *nb_str_escape_ctl(char *dst, size_t n, const char *src) {
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)src; *p && k + 1 < n; p++) {
        bool c1 = p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f;
        if ((*p < 0x20 && *p != '\n' && *p != '\t') || *p == 0x7f || c1) {
            for (int b = 0; b < (c1 ? 2 : 1); b++) {
                if (k + 4 >= n) goto done;
                dst[k++] = '\\';
                dst[k++] = 'x';
                dst[k++] = hex[p[b] >> 4];
                dst[k++] = hex[p[b] & 15];
            }
            p += c1;
        } else {
            dst[k++] = (char)*p;
        }
    }
done:
    dst[k] = 0;
    return dst;
}

size_t nb_str_hash(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    return (size_t)(h ^ (h >> 29));
}
