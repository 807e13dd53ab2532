/* core/afile.c — atomic buffered output files (see core/afile.h). */
#include "core/afile.h"

#include "core/adir.h"
#include "core/cleanup.h"
#include "core/fault.h"
#include "core/str.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define AFILE_BUF (1u << 20)
#define TMP_SUFFIX ".partial."
#define TMP_RANDOM 6

/* Step 1 of core/afile.h: hold "PATH.lock". The lock file may be unlinked by
 * the writer that held it before we got the flock: then we locked a dead inode
 * and try again with the file now at that name. */
static nb_status take_lock(nb_afile *f, nb_ctx *ctx) {
    for (int tries = 0; tries < 16; tries++) {
        int fd = open(f->lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
        if (fd < 0) return nb_err_errno(ctx, errno, "%s: cannot create the lock file %s", f->path, f->lock_path);
        struct stat a, b;
        if (fstat(fd, &a) != 0 || !S_ISREG(a.st_mode)) {
            close(fd);
            return nb_err(ctx, NB_ERR_IO, "%s: the lock file %s is not a regular file", f->path, f->lock_path);
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            close(fd);
            if (e == EWOULDBLOCK)
                return nb_err(ctx, NB_ERR_IO, "%s: another process is writing this file (lock %s is held)",
                              f->path, f->lock_path);
            if (e == ENOLCK || e == EOPNOTSUPP || e == ENOSYS) { /* no locks here: write unlocked */
                unlink(f->lock_path);
                return NB_OK;
            }
            return nb_err_errno(ctx, e, "%s: cannot lock %s", f->path, f->lock_path);
        }
        if (lstat(f->lock_path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
            f->lock_fd = fd;
            return NB_OK;
        }
        close(fd);
    }
    return nb_err(ctx, NB_ERR_IO, "%s: cannot lock %s (it keeps being replaced)", f->path, f->lock_path);
}

static void release_lock(nb_afile *f) {
    if (f->lock_fd < 0) return;
    unlink(f->lock_path); /* before unlocking: a waiter re-checks the name (take_lock) */
    close(f->lock_fd);
    f->lock_fd = -1;
}

/* Step 2 (see core/afile.h nb_remove_stale_partials). */
void nb_remove_stale_partials(const char *path, bool trees) {
    char *copy = strdup(path);
    if (!copy) return;
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    char *slash = strrchr(copy, '/');
    const char *dir = slash ? (slash == copy ? "/" : (*slash = 0, copy)) : ".";
    DIR *d = opendir(dir);
    if (d) {
        size_t nb = strlen(base), ns = sizeof TMP_SUFFIX - 1;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strlen(e->d_name) != nb + ns + TMP_RANDOM || strncmp(e->d_name, base, nb) ||
                strncmp(e->d_name + nb, TMP_SUFFIX, ns))
                continue;
            struct stat st;
            if (!trees || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) {
                unlinkat(dirfd(d), e->d_name, 0);
                continue;
            }
            char *p = nb_path_join(NULL, dir, e->d_name);
            nb_rmtree(p);
            free(p);
        }
        closedir(d);
    }
    free(copy);
}

/* Step 3: "PATH.partial.XXXXXX", ours alone (O_EXCL, O_NOFOLLOW). */
static nb_status create_tmp(nb_afile *f, nb_ctx *ctx) {
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t n = strlen(f->tmp_path);
    for (int tries = 0; tries < 100; tries++) {
        unsigned char r[TMP_RANDOM];
        if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t x = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid() << 20 ^ (uint64_t)tries;
            for (size_t i = 0; i < sizeof r; i++) r[i] = (unsigned char)(x >> (8 * i));
        }
        for (size_t i = 0; i < TMP_RANDOM; i++) f->tmp_path[n - TMP_RANDOM + i] = alnum[r[i] % (sizeof alnum - 1)];
        f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (f->fd >= 0) {
            struct stat st;
            if (fstat(f->fd, &st) != 0) return nb_err_errno(ctx, errno, "%s: fstat", f->tmp_path);
            f->tmp_dev = (unsigned long long)st.st_dev;
            f->tmp_ino = (unsigned long long)st.st_ino;
            return NB_OK;
        }
        if (errno != EEXIST) break;
    }
    nb_status st = nb_err_errno(ctx, errno, "%s: cannot create", f->tmp_path);
    free(f->tmp_path); /* not ours: abort must not unlink it */
    f->tmp_path = NULL;
    return st;
}

nb_status nb_afile_open(nb_afile *f, const char *path, bool hash, nb_ctx *ctx) {
    memset(f, 0, sizeof *f);
    f->fd = f->lock_fd = f->cleanup_slot = -1;
    f->path = nb_strdup(ctx, path);
    f->lock_path = nb_str_concat(ctx, path, ".lock");
    f->tmp_path = nb_str_concat(ctx, path, TMP_SUFFIX "XXXXXX");
    f->buf = nb_malloc(ctx, AFILE_BUF, "write buffer");
    if (!f->path || !f->lock_path || !f->tmp_path || !f->buf) {
        nb_afile_abort(f);
        return NB_ERR_NOMEM;
    }
    char *tmp = f->tmp_path;
    f->tmp_path = NULL; /* nothing of ours to unlink until create_tmp succeeds */
    nb_status st = take_lock(f, ctx);
    if (st == NB_OK) {
        if (f->lock_fd >= 0) nb_remove_stale_partials(path, false); /* unlocked (no flock here): another writer's may be live */
        f->tmp_path = tmp;
        st = create_tmp(f, ctx);
    } else {
        free(tmp);
    }
    if (st != NB_OK) {
        nb_afile_abort(f);
        return st;
    }
    f->cleanup_slot = nb_cleanup_add_partial(f->tmp_path, f->lock_fd >= 0 ? f->lock_path : NULL);
    f->hash = hash;
    if (hash) nb_sha256_init(&f->sha);
    return NB_OK;
}

/* write(2), or EIO when the fault hook (core/fault.h) says so. */
static ssize_t io_write(int fd, const void *p, size_t n) {
    if (nb_fault_io()) {
        errno = EIO;
        return -1;
    }
    return write(fd, p, n);
}

static nb_status flush_buf(nb_afile *f, nb_ctx *ctx) {
    size_t off = 0;
    while (off < f->buf_len) {
        ssize_t w = io_write(f->fd, f->buf + off, f->buf_len - off);
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
                ssize_t w = io_write(f->fd, p, chunk);
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
    if (f->fd < 0) return nb_err(ctx, NB_ERR_INTERNAL, "commit of a closed file");
    /* A library that met a failed allocation may have dropped data silently (a
     * cJSON node that was never added): publish nothing from such a run. */
    nb_status st = nb_alloc_failed() ? nb_err(ctx, NB_ERR_NOMEM, "%s: not written: out of memory earlier in this run",
                                              f->path)
                                     : flush_buf(f, ctx);
    if (st == NB_OK && (nb_fault_io() ? (errno = EIO, -1) : fsync(f->fd)) != 0)
        st = nb_err_errno(ctx, errno, "%s: fsync", f->path);
    if (st == NB_OK) {
        int fd = f->fd;
        f->fd = -1;
        if (close(fd) != 0) st = nb_err_errno(ctx, errno, "%s: close", f->path);
    }
    struct stat cur;
    if (st == NB_OK && (lstat(f->tmp_path, &cur) != 0 || (unsigned long long)cur.st_dev != f->tmp_dev ||
                        (unsigned long long)cur.st_ino != f->tmp_ino)) {
        st = nb_err(ctx, NB_ERR_IO, "%s: the temporary %s was removed or replaced by someone else; not renamed",
                    f->path, f->tmp_path);
        free(f->tmp_path); /* not ours any more: abort must not unlink it */
        f->tmp_path = NULL;
    }
    if (st == NB_OK && (nb_fault_io() ? (errno = EIO, -1) : rename(f->tmp_path, f->path)) != 0)
        st = nb_err_errno(ctx, errno, "%s: rename from %s", f->path, f->tmp_path);
    if (st != NB_OK) {
        nb_afile_abort(f);
        return st;
    }
    nb_cleanup_forget_partial(f->cleanup_slot);
    f->cleanup_slot = -1;
    fsync_dir(f->path);
    release_lock(f);
    if (f->hash && sha_out) nb_sha256_final(&f->sha, sha_out);
    free(f->tmp_path); free(f->path); free(f->lock_path); free(f->buf);
    f->tmp_path = f->path = f->lock_path = NULL;
    f->buf = NULL;
    return NB_OK;
}

void nb_afile_abort(nb_afile *f) {
    if (!f) return;
    if (f->fd >= 0) { close(f->fd); f->fd = -1; }
    if (f->tmp_path) unlink(f->tmp_path);
    nb_cleanup_forget_partial(f->cleanup_slot);
    f->cleanup_slot = -1;
    if (f->lock_path) release_lock(f);
    free(f->tmp_path); free(f->path); free(f->lock_path); free(f->buf);
    f->tmp_path = f->path = f->lock_path = NULL;
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
