/* core/file.h — reading a whole (small) file.
 *
 * For config files, texts, legacy imatrix files: anything read at once and
 * bounded by a limit the caller states, so a huge or endless input (a pipe,
 * /dev/zero) is refused instead of exhausting memory. Large tensor data is
 * never read this way: models are mmapped or read one tensor at a time.
 */
#ifndef NB_CORE_FILE_H
#define NB_CORE_FILE_H

#include "core/ctx.h"

#include <stddef.h>

/* Read all of `path` (regular file or stream) into *buf (malloc'd, n + 1
 * bytes with a NUL after the data, so text can be used as a C string; the
 * caller frees it) and its length into *n. More than `limit` bytes ->
 * NB_ERR_RANGE "PATH: larger than the LIMIT-byte limit" (nothing returned);
 * open/read failure -> NB_ERR_IO (errno-based message naming path); out of
 * memory -> NB_ERR_NOMEM. On failure *buf is NULL and *n 0. */
nb_status nb_read_file(const char *path, size_t limit, char **buf, size_t *n, nb_ctx *ctx);

#endif
