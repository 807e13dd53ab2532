/* core/adir.c — atomic output directories (see core/adir.h). */
#include "core/adir.h"

#include "core/afile.h"
#include "core/fault.h"
#include "core/str.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    if (flag == FTW_DP || flag == FTW_D) rmdir(p);
    else unlink(p);
    return 0;
}

void nb_rmtree(const char *path) {
    if (path) nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void fsync_path(const char *p) {
    int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) { fsync(fd); close(fd); }
}

static bool dir_is_empty(const char *p) {
    DIR *d = opendir(p);
    if (!d) return false;
    struct dirent *e;
    bool empty = true;
    while (empty && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = false;
    closedir(d);
    return empty;
}

static void release(nb_adir *d) {
    if (d->lock_fd >= 0) {
        unlink(d->lock_path);
        close(d->lock_fd);
        d->lock_fd = -1;
    }
}

nb_status nb_adir_open(nb_adir *d, const char *path, nb_ctx *ctx) {
    memset(d, 0, sizeof *d);
    d->lock_fd = -1;
    nb_status st = NB_OK;
    struct stat sb;
    if (lstat(path, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode))
            return nb_err(ctx, NB_ERR_INVALID, "%s: exists and is not a directory (the output is a model directory)",
                          path);
        if (!dir_is_empty(path))
            return nb_err(ctx, NB_ERR_INVALID, "%s: directory exists and is not empty; remove it or name a new one",
                          path);
    }
    d->path = nb_strdup(ctx, path);
    d->lock_path = nb_str_concat(ctx, path, ".lock");
    d->tmp_path = nb_str_concat(ctx, path, ".partial.XXXXXX");
    if (!d->path || !d->lock_path || !d->tmp_path) NB_FAIL_GOTO(st, fail, ctx, NB_ERR_NOMEM, "out of memory");
    int fd = open(d->lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = nb_err_errno(ctx, errno, "%s: cannot create the lock file %s", path, d->lock_path);
        goto fail;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK) {
            st = nb_err(ctx, NB_ERR_IO, "%s: another process is writing this directory (lock %s is held)", path,
                        d->lock_path);
            goto fail_nolock;
        }
        unlink(d->lock_path); /* filesystem without locks: write unlocked */
    } else {
        d->lock_fd = fd;
    }
    if (d->lock_fd >= 0) nb_remove_stale_partials(path, true); /* unlocked: another writer's may be live */
    bool fault = nb_fault_io();
    if (fault || !mkdtemp(d->tmp_path)) {
        st = nb_err_errno(ctx, fault ? EIO : errno, "%s: cannot create the temporary directory", path);
        free(d->tmp_path);
        d->tmp_path = NULL;
        goto fail;
    }
    mode_t um = umask(0);
    umask(um);
    chmod(d->tmp_path, 0777 & ~um); /* mkdtemp makes 0700; a model directory is shared like any output */
    return NB_OK;
fail:
    release(d);
fail_nolock:
    free(d->path);
    free(d->lock_path);
    free(d->tmp_path);
    memset(d, 0, sizeof *d);
    d->lock_fd = -1;
    return st;
}

char *nb_adir_file(const nb_adir *d, const char *name, nb_ctx *ctx) { return nb_path_join(ctx, d->tmp_path, name); }

nb_status nb_adir_commit(nb_adir *d, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, !d->tmp_path, NB_ERR_INVALID, "adir: commit without a temporary directory");
    if (nb_alloc_failed()) { /* as nb_afile_commit: nothing from a run that lost an allocation */
        nb_status st = nb_err(ctx, NB_ERR_NOMEM, "%s: not written: out of memory earlier in this run", d->path);
        nb_adir_abort(d);
        return st;
    }
    fsync_path(d->tmp_path);
    struct stat sb;
    if (lstat(d->path, &sb) == 0 && S_ISDIR(sb.st_mode) && dir_is_empty(d->path)) rmdir(d->path);
    if ((nb_fault_io() ? (errno = EIO, -1) : rename(d->tmp_path, d->path)) != 0) {
        nb_status st = nb_err_errno(ctx, errno, "%s: rename from %s", d->path, d->tmp_path);
        nb_adir_abort(d);
        return st;
    }
    free(d->tmp_path);
    d->tmp_path = NULL;
    char *parent = strdup(d->path);
    if (parent) {
        char *slash = strrchr(parent, '/');
        fsync_path(slash ? (slash == parent ? "/" : (*slash = 0, parent)) : ".");
        free(parent);
    }
    release(d);
    free(d->path);
    free(d->lock_path);
    memset(d, 0, sizeof *d);
    d->lock_fd = -1;
    return NB_OK;
}

void nb_adir_abort(nb_adir *d) {
    if (!d) return;
    if (d->tmp_path) nb_rmtree(d->tmp_path);
    release(d);
    free(d->path);
    free(d->lock_path);
    free(d->tmp_path);
    memset(d, 0, sizeof *d);
    d->lock_fd = -1;
}
