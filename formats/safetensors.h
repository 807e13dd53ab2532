/* formats/safetensors.h — safetensors header parsing, exposed for fuzzing and tools.
 *
 * The reader and writer proper are nb_safetensors_open / nb_safetensors_sink_create
 * (formats/readers.h). This header adds the in-memory header parser they use, so
 * that a fuzz target can exercise every validation rule without file I/O.
 *
 * File layout (little-endian):
 *   [0, 8)          u64 N: length of the JSON header
 *   [8, 8+N)        UTF-8 JSON object, first byte '{', may end in JSON whitespace
 *                   (writers pad with spaces so that 8+N is a multiple of 8):
 *                     { "__metadata__": { "key": "value", ... },        (optional)
 *                       "name": { "dtype": "F32", "shape": [rows, cols],
 *                                 "data_offsets": [begin, end] }, ... }
 *   [8+N, size)     data section; every tensor's [begin, end) is relative to 8+N.
 *                   Sorted by begin, the ranges tile the section exactly: the first
 *                   begins at 0, each begins where the previous ends, the last ends
 *                   at size - 8 - N. end - begin == prod(shape) * dtype size.
 */
#ifndef NB_FORMATS_SAFETENSORS_H
#define NB_FORMATS_SAFETENSORS_H

#include "core/ctx.h"
#include "formats/kv.h"
#include "formats/model.h"

#include <stddef.h>
#include <stdint.h>

/* Largest header the reference implementation accepts (bytes of JSON). */
#define NB_ST_MAX_HEADER 100000000u

/* A parsed, fully validated header. */
typedef struct nb_st_header {
    uint64_t header_len;  /* N */
    uint64_t data_start;  /* 8 + N: absolute offset of the data section */
    uint64_t data_size;   /* file size - 8 - N */
    size_t n_tensors;
    nb_tensor *tensors;   /* in data order; name owned here, data = NULL,
                           * file_offset = absolute offset, priv = NULL */
    nb_kvset meta;        /* "__metadata__" entries as STRING values, in file order */
} nb_st_header;

/* Parse and validate the header of a safetensors file of `file_size` bytes whose
 * first `n` bytes are in `buf` (n <= file_size; the whole header must be inside:
 * n >= 8 + N, else NB_ERR_INVALID). `name` names the file in messages.
 * Applies every rule of the reference reader (see formats/safetensors.c) plus
 * nibble's limits (<= 4 dims, names <= NB_MAX_NAME bytes, known dtypes:
 * NB_ERR_UNSUPPORTED). On failure *out is left empty (nothing to free).
 * Memory: the JSON tree (bounded by the header size) while parsing, then only
 * the tensor table. */
nb_status nb_safetensors_parse_header(const void *buf, size_t n, uint64_t file_size,
                                      const char *name, nb_st_header *out, nb_ctx *ctx);
/* NULL-safe; frees names, the table and meta. */
void nb_st_header_free(nb_st_header *h);

#endif
