/* core/afile.h — atomic, buffered output files.
 *
 * Data goes to "PATH.partial"; nb_afile_commit flushes, fsyncs, renames it to
 * PATH and fsyncs the directory. nb_afile_abort (or a failed write/commit)
 * removes the partial file, so a crash or a full disk never leaves a file that
 * looks finished. Writes are buffered (1 MiB); a running SHA-256 of everything
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
    char *tmp_path;      /* PATH.partial */
    uint64_t written;    /* bytes accepted so far (the logical file offset) */
    unsigned char *buf;
    size_t buf_len;
    bool hash;
    nb_sha256 sha;
} nb_afile;

/* Create PATH.partial (replacing a stale one). `hash`: keep a SHA-256. */
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

/* True when paths a and b name the same existing file (same device+inode). */
bool nb_same_file(const char *a, const char *b);

/* Write `text` plus a newline to `path` atomically (the .partial, fsync,
 * rename protocol above): reports, plans, JSON summaries. */
nb_status nb_afile_write_text(const char *path, const char *text, nb_ctx *ctx);

#endif
