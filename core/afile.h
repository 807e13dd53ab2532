/* core/afile.h — atomic, buffered output files.
 *
 * The protocol, as SQLite treats its journal:
 *  1. lock: "PATH.lock" is created (no symlink following) and flock()ed
 *     exclusively without waiting; a second writer of the same PATH, in this
 *     or another process, fails at open with "PATH: another process is writing
 *     this file". The lock file is removed when the output is committed or
 *     aborted. Filesystems without flock support are written unlocked.
 *  2. Holding the lock, stale "PATH.partial.*" files of writers that died
 *     (SIGKILL, power loss) are removed.
 *  3. Data goes to "PATH.partial.XXXXXX", a name created by this call with
 *     O_CREAT|O_EXCL|O_NOFOLLOW: a planted file or symlink is never written
 *     through, and two writers never share a temporary.
 *  4. nb_afile_commit flushes, fsyncs, checks that the temporary is still
 *     the file it created (same inode), renames it to PATH and fsyncs the
 *     directory. It refuses (NB_ERR_NOMEM) once any hooked allocation of the
 *     process failed (nb_alloc_failed, core/ctx.h): a library may have
 *     dropped data on that failure without saying so. nb_adir_commit too.
 * nb_afile_abort (or a failed write/commit) removes the partial file, so a
 * crash or a full disk never leaves a file that looks finished; the partial
 * and lock are registered with core/cleanup.h so that a handled signal removes
 * them too. Writes are buffered (1 MiB); a running SHA-256 of everything
 * written is kept when `hash` is requested.
 */
#ifndef NB_CORE_AFILE_H
#define NB_CORE_AFILE_H

#include "core/ctx.h"
#include "core/sha256.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct nb_afile {
    int fd;
    char *path;          /* final name */
    char *tmp_path;      /* PATH.partial.XXXXXX, created by nb_afile_open */
    char *lock_path;     /* PATH.lock, held (flock) while lock_fd >= 0 */
    int lock_fd;
    int cleanup_slot;    /* core/cleanup.h registration, -1: none */
    unsigned long long tmp_dev, tmp_ino; /* identity of the temporary we created */
    uint64_t written;    /* bytes accepted so far (the logical file offset) */
    unsigned char *buf;
    size_t buf_len;
    bool hash;
    nb_sha256 sha;
} nb_afile;

/* Lock PATH and create its temporary (steps 1-3 above). `hash`: keep a
 * SHA-256. Another writer holding the lock -> NB_ERR_IO naming PATH. */
nb_status nb_afile_open(nb_afile *f, const char *path, bool hash, nb_ctx *ctx);
/* On failure the partial file is already removed (f is closed; abort stays safe). */
nb_status nb_afile_write(nb_afile *f, const void *data, size_t n, nb_ctx *ctx);
/* Write n zero bytes (padding). */
nb_status nb_afile_zeros(nb_afile *f, size_t n, nb_ctx *ctx);
/* Flush, fsync, rename to the final path. On failure the partial is removed.
 * `sha_out` (32 bytes, may be NULL) receives the digest when hashing. */
nb_status nb_afile_commit(nb_afile *f, unsigned char *sha_out, nb_ctx *ctx);
/* Close and remove the partial file; NULL-safe and safe after commit. */
void nb_afile_abort(nb_afile *f);

/* Step 2: remove "PATH.partial.XXXXXX" entries left by writers that died
 * (call it holding PATH's lock, so none belongs to a live writer): files, and
 * with `trees` directories with their contents too (core/adir.h). */
void nb_remove_stale_partials(const char *path, bool trees);

/* True when paths a and b name the same existing file (same device+inode).
 * To check all of a command's inputs against its outputs: core/paths.h. */
bool nb_same_file(const char *a, const char *b);

/* Write `text` plus a newline to `path` atomically (the protocol above): reports, plans, JSON summaries. */
nb_status nb_afile_write_text(const char *path, const char *text, nb_ctx *ctx);

#endif
