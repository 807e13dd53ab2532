/* core/adir.h — atomic output directories (Hugging Face model directories).
 *
 * The directory counterpart of core/afile.h:
 *  1. "DIR.lock" is created (no symlink following) and flock()ed without
 *     waiting: a second writer of DIR fails at open ("another process is
 *     writing this directory").
 *  2. Holding the lock, stale "DIR.partial.XXXXXX" directories of writers that
 *     died are removed with their contents.
 *  3. Files go into "DIR.partial.XXXXXX", created by mkdtemp (ours alone); each
 *     file inside is written with core/afile (fsynced, renamed).
 *  4. nb_adir_commit fsyncs the temporary directory, renames it to DIR and
 *     fsyncs the parent. An existing DIR is replaced only when it is an empty
 *     directory: a non-empty one is refused at open (NB_ERR_INVALID naming it)
 *     rather than deleting files nibble did not write.
 * nb_adir_abort (or a failed commit) removes the temporary tree. A process
 * killed by a signal leaves the temporary directory (a signal handler cannot
 * remove a tree safely); the next writer of DIR removes it (step 2).
 */
#ifndef NB_CORE_ADIR_H
#define NB_CORE_ADIR_H

#include "core/ctx.h"

typedef struct nb_adir {
    char *path;      /* final name */
    char *tmp_path;  /* DIR.partial.XXXXXX */
    char *lock_path; /* DIR.lock */
    int lock_fd;     /* -1: none */
} nb_adir;

/* Steps 1-3. On failure nothing is left (f is closed; abort stays safe). */
nb_status nb_adir_open(nb_adir *d, const char *path, nb_ctx *ctx);
/* Path of `name` inside the temporary directory (malloc'd; NULL + NB_ERR_NOMEM on failure). */
char *nb_adir_file(const nb_adir *d, const char *name, nb_ctx *ctx);
/* Step 4; on failure the temporary tree is removed. */
nb_status nb_adir_commit(nb_adir *d, nb_ctx *ctx);
/* Remove the temporary tree and the lock; NULL-safe, safe after commit. */
void nb_adir_abort(nb_adir *d);

/* Remove a directory tree (no symlink following); best effort. */
void nb_rmtree(const char *path);

#endif
