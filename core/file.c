/* core/file.c — whole-file reads (see core/file.h). */
#include "core/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static nb_status too_large(const char *path, size_t limit, nb_ctx *ctx) {
    return nb_err(ctx, NB_ERR_RANGE, "%s: larger than the %zu-byte limit", path, limit);
}

nb_status nb_read_file(const char *path, size_t limit, char **buf, size_t *n, nb_ctx *ctx) {
    *buf = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return nb_err_errno(ctx, errno, "%s", path);
    /* a regular file's size sizes the buffer (and is refused early); a
     * stream grows it by doubling */
    struct stat sb;
    size_t cap = 1 << 16;
    if (fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode)) {
        if (sb.st_size < 0 || (uint64_t)sb.st_size > limit) {
            fclose(f);
            return too_large(path, limit, ctx);
        }
        cap = (size_t)sb.st_size + 1;
    }
    if (cap > limit + 1 && limit < SIZE_MAX) cap = limit + 1;
    char *b = nb_malloc(ctx, cap, path);
    if (!b) {
        fclose(f);
        return NB_ERR_NOMEM;
    }
    size_t len = 0;
    nb_status st = NB_OK;
    for (;;) {
        if (len + 1 == cap) { /* full (room kept for the NUL): more to come? */
            int c = fgetc(f);
            if (c == EOF) {
                if (ferror(f)) st = nb_err_errno(ctx, errno ? errno : EIO, "%s: read", path);
                break;
            }
            if (len >= limit) { st = too_large(path, limit, ctx); break; }
            ungetc(c, f);
            char *nb = cap <= SIZE_MAX / 2 ? nb_realloc(NULL, b, cap * 2, "file") : NULL;
            if (!nb) { st = nb_err(ctx, NB_ERR_NOMEM, "%s: out of memory", path); break; }
            b = nb;
            cap *= 2;
        }
        size_t want = cap - 1 - len, got = fread(b + len, 1, want, f);
        len += got;
        if (len > limit) { st = too_large(path, limit, ctx); break; }
        if (got < want) {
            if (ferror(f)) st = nb_err_errno(ctx, errno ? errno : EIO, "%s: read", path);
            break;
        }
    }
    fclose(f);
    if (st != NB_OK) {
        free(b);
        return st;
    }
    b[len] = '\0';
    *buf = b;
    *n = len;
    return NB_OK;
}
