/* formats/gguf.h — GGUF (v2/v3, little-endian) reader and writer.
 *
 * The file/model constructors used by nb_model_open / nb_sink_create are in
 * formats/readers.h (nb_gguf_open, nb_gguf_sink_create). This header adds the
 * pieces other code and the tests need beyond them.
 *
 * Byte layout (all integers little-endian):
 *
 *   "GGUF"  u32 version (2 or 3)  u64 n_tensors  u64 n_kv
 *   n_kv ×      { str key; u32 value_type; value }
 *   n_tensors × { str name; u32 n_dims; u64 ne[n_dims] (ggml order);
 *                 u32 type_id; u64 offset (relative to the data section) }
 *   zero padding up to a multiple of `alignment`          <- data section starts here
 *   tensor data: each tensor at data_start + offset; the writer puts them in
 *   declaration order, each followed by zeros up to a multiple of `alignment`
 *   (so offset_k = sum_{j<k} pad(nbytes_j)), exactly like gguf-py's GGUFWriter.
 *
 *   str   = u64 length, then that many bytes (no NUL)
 *   value = scalar (u8 i8 u16 i16 u32 i32 f32 bool(u8 0/1) u64 i64 f64)
 *         | str
 *         | array: u32 elem_type, u64 n, then n values of elem_type written
 *           without their own type tag (elem_type ARRAY nests: each element is
 *           again "u32 elem_type, u64 n, values").
 *
 * `alignment` is the u32 value of "general.alignment" if present (a non-zero
 * power of two; 1 is allowed, as in ggml and gguf-py), else 32.
 *
 * Reader policy (what a file must satisfy; every violation is a clean error
 * naming the file, the key or tensor and the byte offset):
 *   - version 2 or 3 (v2 has v3's layout); v1 and byte-swapped (big-endian)
 *     files are NB_ERR_UNSUPPORTED;
 *   - every count and length fits in the bytes left in the file before
 *     anything is allocated; arrays nest at most NB_GGUF_MAX_DEPTH deep;
 *   - keys and tensor names contain no NUL byte and are unique; tensor names
 *     are at most NB_MAX_NAME bytes (ggml itself stops at 63: longer names are
 *     readable here but llama.cpp will not load such a file);
 *   - n_dims 0..4 (0 is a scalar, as ggml accepts), each ne >= 0, the element
 *     count fits in int64, ne[0] is a multiple of the type's block size, the
 *     type id is known to core/types.h (else NB_ERR_UNSUPPORTED);
 *   - offsets are multiples of the alignment, data lies inside the file and
 *     no two tensors' bytes overlap. (ggml additionally demands tensors be
 *     packed in declaration order; nibble accepts any non-overlapping layout.)
 * Metadata is kept exactly (types and order) so read -> write reproduces the
 * file byte for byte when it was written the way gguf-py writes.
 */
#ifndef NB_FORMATS_GGUF_H
#define NB_FORMATS_GGUF_H

#include "formats/model.h"

#include <stddef.h>

#define NB_GGUF_DEFAULT_ALIGNMENT 32u
/* Deepest array nesting accepted (an array of arrays has depth 2). */
#define NB_GGUF_MAX_DEPTH 8
/* Longest metadata key accepted (bytes). */
#define NB_GGUF_MAX_KEY 65535

/* Parse a GGUF image held in memory (the fuzz target and nb_gguf_open use
 * this). `name` is used in messages and as the model's path. The model's
 * tensors point into `data` (zero-copy), so `data` must stay valid and
 * unchanged until nb_model_close. */
nb_status nb_gguf_open_memory(const void *data, size_t size, const char *name, nb_model **out,
                              nb_ctx *ctx);

/* Alignment the model's file uses (from general.alignment, else 32). */
uint32_t nb_gguf_alignment(const nb_model *m);

/* Where the data section of a GGUF file the writer (nb_sink) would write
 * starts: the header for metadata kv and these tensors (names and n_dims; the
 * type does not change the header's size), padded to the alignment
 * (general.alignment in kv, else 32), which goes to *alignment. Lets a
 * planner know the file size before writing: data start + each tensor's
 * bytes padded to the alignment. NB_ERR_INVALID for a malformed kv value. */
nb_status nb_gguf_data_start(const nb_kvset *kv, const nb_tensor *tensors, size_t n, uint64_t *out,
                             uint32_t *alignment, nb_ctx *ctx);

#endif
