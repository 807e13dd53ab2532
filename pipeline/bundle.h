/* pipeline/bundle.h — bundles: one `.tar.zst` holding a variant and its
 * evidence, written and checked with libarchive (zstd filter, POSIX pax tar).
 *
 * Layout (in this order, so a reader finds the manifest first):
 *   manifest.json   {"nibble_bundle": 1, ..., "files": [{"name", "size", "sha256"}, ...]}
 *                   the caller's manifest object with "files" filled in
 *   <files>         every file named by the caller, streamed from disk; a name
 *                   may hold directories ("model-gptq/config.json"), never "..",
 *                   "." or a leading '/' 
 * The archive is written to BUNDLE.partial and renamed when complete
 * (core/afile.h); the model is never copied whole into memory or onto disk
 * again: each file is read in 1 MiB pieces into the compressor.
 *
 * Verification (nb_bundle_verify) streams the archive, hashes every entry,
 * and compares names, sizes and SHA-256 with the manifest; a missing, extra,
 * truncated or altered file is NB_ERR_FORMAT naming it. A directory can be
 * verified the same way (its manifest.json and the files beside it).
 */
#ifndef NB_PIPELINE_BUNDLE_H
#define NB_PIPELINE_BUNDLE_H

#include "core/ctx.h"

#include <stddef.h>
#include <stdint.h>

#define NB_BUNDLE_VERSION 1

typedef struct nb_bundle_file {
    const char *path;     /* on disk */
    const char *name;     /* inside the bundle: a plain file name, or DIR/FILE for a file of a
                             directory (an HF output; tar creates DIR when it unpacks) */
    uint64_t size;        /* filled by nb_bundle_hash_files */
    unsigned char sha256[32];
} nb_bundle_file;

/* Size and SHA-256 of each file (one read of each). */
nb_status nb_bundle_hash_files(nb_bundle_file *files, size_t n, nb_ctx *ctx);

/* The manifest text: manifest_json (a JSON object, or NULL for {}) with
 * "nibble_bundle" and "files" (from hashed `files`) set. malloc'd; NULL when
 * manifest_json is not an object or memory runs out. What nb_bundle_write
 * puts first in the archive, and what a bundle directory holds. */
char *nb_bundle_manifest(const char *manifest_json, const nb_bundle_file *files, size_t n);

/* Write `dst` (.tar.zst): manifest_json (a JSON object; "nibble_bundle" and
 * "files" are added from `files`, which must be hashed) then every file.
 * A file that changed since it was hashed is NB_ERR_IO naming it. */
nb_status nb_bundle_write(const char *dst, const char *manifest_json, const nb_bundle_file *files, size_t n,
                          int zstd_level, nb_ctx *ctx);

/* Read only the manifest of a bundle (the first entry) or of a directory
 * (DIR/manifest.json): malloc'd JSON text in *out. */
nb_status nb_bundle_read_manifest(const char *path, char **out, nb_ctx *ctx);

typedef struct nb_bundle_check {
    size_t n_files;       /* files checked */
    uint64_t bytes;       /* their total size */
} nb_bundle_check;

/* Check every file of a bundle or directory against its manifest (see above). */
nb_status nb_bundle_verify(const char *path, nb_bundle_check *res, nb_ctx *ctx);

#endif
