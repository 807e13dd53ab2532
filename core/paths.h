/* core/paths.h — a command's inputs against its outputs, before any work.
 *
 * `nibble calibrate X.gguf --calib T -o X.gguf` must not replace the model
 * with an importance matrix, nor `ppl --save-logits` overwrite its text.
 * Every command lists every path it reads and every path it writes and calls
 * nb_paths_check once, before opening anything for real.
 *
 * Identity is the file, not the spelling: an input is (st_dev, st_ino) after
 * following symlinks; an existing output is its own directory entry (lstat),
 * since the atomic rename of core/afile.h replaces a symlink, not its target.
 * Two outputs are the same when they are the same existing file, or, when
 * they do not exist yet, the same name in the same directory (by the
 * directory's device+inode).
 *
 * An input that is a directory (a Hugging Face model, a PEFT adapter) stands
 * for the files a reader takes from it: *.json, *.model, tokenizer*, and the
 * weights named model*.safetensors or adapter_model.*; a sharded index
 * (NAME.safetensors.index.json) also stands for its sibling shards
 * NAME*.safetensors. Paths that do not exist are skipped (opening them fails
 * later with the reader's message), as are NULL entries and "-" (stdout).
 */
#ifndef NB_CORE_PATHS_H
#define NB_CORE_PATHS_H

#include "core/ctx.h"

#include <stddef.h>

/* NB_ERR_INVALID (a usage error: exit 1) naming both paths when an output is
 * an input ("OUT: is the input IN (same file); choose another output") or two
 * outputs are the same ("OUT1 and OUT2 are the same file"); NB_ERR_NOMEM when out of
 * memory; NB_OK otherwise.
 * Arrays may hold NULL entries. */
nb_status nb_paths_check(const char *const *in, size_t n_in, const char *const *out, size_t n_out, nb_ctx *ctx);

#endif
