/* core/afile.c — atomic buffered output files (see core/afile.h). */
#include "core/afile.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define AFILE_BUF (1u << 20)

nb_status nb_afile_open(nb_afile *f, const char *path, bool hash, nb_ctx *ctx) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    size_t n = strlen(path);
    f->path = nb_strdup(ctx, path);
    f->tmp_path = nb_malloc(ctx, n + sizeof ".partial", "path");
    f->buf = nb_malloc(ctx, AFILE_BUF, "write buffer");
    if (!f->path || !f->tmp_path || !f->buf) {
        nb_afile_abort(f);
        return NB_ERR_NOMEM;
    }
    memcpy(f->tmp_path, path, n);
    memcpy(f->tmp_path + n, ".partial", sizeof ".partial");
    f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        nb_status st = nb_err_errno(ctx, errno, "%s: cannot create", f->tmp_path);
        nb_afile_abort(f);
        return st;
    }
    f->hash = hash;
    if (hash) nb_sha256_init(&f->sha);
    return NB_OK;
}

static nb_status flush_buf(nb_afile *f, nb_ctx *ctx) {
    size_t off = 0;
    while (off < f->buf_len) {
        ssize_t w = write(f->fd, f->buf + off, f->buf_len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return nb_err_errno(ctx, errno, "%s: write", f->path);
        }
        off += (size_t)w;
    }
    f->buf_len = 0;
    return NB_OK;
}

static nb_status write_all(nb_afile *f, const void *data, size_t n, nb_ctx *ctx);

nb_status nb_afile_write(nb_afile *f, const void *data, size_t n, nb_ctx *ctx) {
    if (f->fd < 0) return nb_err(ctx, NB_ERR_INTERNAL, "write to a closed file");
    nb_status st = write_all(f, data, n, ctx);
    if (st != NB_OK) nb_afile_abort(f); /* a failed write never leaves a partial file */
    return st;
}

static nb_status write_all(nb_afile *f, const void *data, size_t n, nb_ctx *ctx) {
    const unsigned char *p = data;
    if (f->hash) nb_sha256_update(&f->sha, p, n);
    f->written += n;
    while (n) {
        if (f->buf_len == 0 && n >= AFILE_BUF) { /* large piece: bypass the buffer */
            size_t chunk = n & ~(size_t)(AFILE_BUF - 1);
            while (chunk) {
                ssize_t w = write(f->fd, p, chunk);
                if (w < 0) {
                    if (errno == EINTR) continue;
                    return nb_err_errno(ctx, errno, "%s: write", f->path);
                }
                p += w; n -= (size_t)w; chunk -= (size_t)w;
            }
            continue;
        }
        size_t take = AFILE_BUF - f->buf_len < n ? AFILE_BUF - f->buf_len : n;
        memcpy(f->buf + f->buf_len, p, take);
        f->buf_len += take; p += take; n -= take;
        if (f->buf_len == AFILE_BUF) NB_TRY(flush_buf(f, ctx));
    }
    return NB_OK;
}

nb_status nb_afile_zeros(nb_afile *f, size_t n, nb_ctx *ctx) {
    static const unsigned char z[256];
    while (n) {
        size_t k = n < sizeof z ? n : sizeof z;
        NB_TRY(nb_afile_write(f, z, k, ctx));
        n -= k;
    }
    return NB_OK;
}

static void fsync_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy) return;
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    free(copy);
}

nb_status nb_afile_commit(nb_afile *f, unsigned char *sha_out, nb_ctx *ctx) {
    nb_status st = flush_buf(f, ctx);
    if (st == NB_OK && fsync(f->fd) != 0) st = nb_err_errno(ctx, errno, "%s: fsync", f->path);
    if (st == NB_OK) {
        int fd = f->fd;
        f->fd = -1;
        if (close(fd) != 0) st = nb_err_errno(ctx, errno, "%s: close", f->path);
    }
    if (st == NB_OK && rename(f->tmp_path, f->path) != 0)
        st = nb_err_errno(ctx, errno, "%s: rename from %s", f->path, f->tmp_path);
    if (st != NB_OK) {
        nb_afile_abort(f);
        return st;
    }
    fsync_dir(f->path);
    if (f->hash && sha_out) nb_sha256_final(&f->sha, sha_out);
    free(f->tmp_path); free(f->path); free(f->buf);
    f->tmp_path = f->path = NULL;
    f->buf = NULL;
    return NB_OK;
}

void nb_afile_abort(nb_afile *f) {
    if (!f) return;
    if (f->fd >= 0) { close(f->fd); f->fd = -1; }
    if (f->tmp_path) unlink(f->tmp_path);
    free(f->tmp_path); free(f->path); free(f->buf);
    f->tmp_path = f->path = NULL;
    f->buf = NULL;
}

bool nb_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

nb_status nb_afile_write_text(const char *path, const char *text, nb_ctx *ctx) {
    nb_afile f;
    NB_TRY(nb_afile_open(&f, path, false, ctx));
    nb_status st = nb_afile_write(&f, text, strlen(text), ctx);
    if (st == NB_OK) st = nb_afile_write(&f, "\n", 1, ctx);
    if (st == NB_OK) st = nb_afile_commit(&f, NULL, ctx);
    nb_afile_abort(&f);
    return st;
}
