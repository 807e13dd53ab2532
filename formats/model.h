/* formats/model.h — model sources and sinks, whatever the file format.
 *
 * A source (nb_model) is lazy: opening it reads headers only; tensor data is
 * mmapped (zero-copy `data` pointer) or materialised one tensor at a time by
 * nb_model_read_tensor (for HF experts that must be stacked, q/k rows that
 * must be permuted, tensors split over shards ...). Tensor names are GGUF
 * names when the architecture is known (HF directory with config.json, GGUF);
 * a bare .safetensors file keeps its own names.
 *
 * Shapes use ggml's order: ne[0] is the row length (contiguous elements),
 * ne[1] the number of rows, ... Unused dims are 1. A safetensors shape
 * [rows, cols] is ne = {cols, rows}.
 *
 * A sink (nb_sink) writes a file in one pass: first every tensor is declared
 * (name, type, shape) and the metadata set, then nb_sink_begin writes the
 * header, then tensor data is streamed in the order nb_sink_data_order gives
 * (a tensor may be written in several pieces), then nb_sink_commit fsyncs and
 * atomically renames. Freeing an uncommitted sink removes the partial file.
 */
#ifndef NB_FORMATS_MODEL_H
#define NB_FORMATS_MODEL_H

#include "core/ctx.h"
#include "core/types.h"
#include "formats/kv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NB_MAX_DIMS 4
#define NB_MAX_NAME 256 /* longest tensor name accepted (bytes, without NUL) */

typedef enum nb_format {
    NB_FMT_UNKNOWN = 0,
    NB_FMT_SAFETENSORS, /* one .safetensors file or a sharded set via its index */
    NB_FMT_GGUF,
    NB_FMT_HF_DIR       /* Hugging Face model directory (config.json + safetensors) */
} nb_format;

const char *nb_format_name(nb_format f);

typedef struct nb_tensor {
    char *name;              /* owned by the model */
    nb_type type;
    uint32_t n_dims;
    int64_t ne[NB_MAX_DIMS]; /* ggml order, unused = 1 */
    uint64_t nbytes;
    const void *data;        /* zero-copy pointer into a mapping, or NULL: use nb_model_read_tensor */
    uint64_t file_offset;    /* absolute offset of the data in its file when it is one contiguous range, else 0 */
    void *priv;              /* format's per-tensor state */
} nb_tensor;

typedef struct nb_model nb_model;

typedef struct nb_model_ops {
    /* Copy tensor i's bytes (t->nbytes) into dst. */
    nb_status (*read)(nb_model *m, size_t i, void *dst, nb_ctx *ctx);
    void (*close)(nb_model *m);
} nb_model_ops;

struct nb_model {
    char *path;            /* what was opened */
    nb_format format;
    nb_kvset kv;           /* metadata in GGUF keys; arch in "general.architecture" when known */
    size_t n_tensors;
    nb_tensor *tensors;
    uint64_t file_bytes;   /* total size of the files backing the model */
    const nb_model_ops *ops;
    void *impl;            /* format's state */
    struct nb_tensor_index *index; /* names -> tensors (formats/model.c; NULL: none) */
    /* The one read-only file mapping that holds every mapped tensor, or NULL
     * (several files, or none): nb_model_release_tensor releases pages near a
     * tensor too when they lie inside it (formats/convert.h). Owned by impl. */
    const void *map;
    size_t map_len;
};

/* Probe the path (directory, .safetensors, .gguf, index.json; by content, not
 * only by extension) and open it with the right reader. */
nb_status nb_model_open(const char *path, nb_model **out, nb_ctx *ctx);
/* NULL-safe. */
void nb_model_close(nb_model *m);
/* Copy tensor i's bytes into dst (t->nbytes bytes). */
nb_status nb_model_read_tensor(nb_model *m, size_t i, void *dst, nb_ctx *ctx);
/* Tensor i's bytes (t->nbytes), without a copy when the source maps them:
 * *data = t->data and *owned = NULL; otherwise the bytes are read
 * (nb_model_read_tensor) into a malloc'd buffer that *data points to and the
 * caller frees through *owned (free(NULL) is fine, so callers always
 * free(*owned)). *data stays valid while the model is open / until the free.
 * On failure both are NULL. */
nb_status nb_model_tensor_bytes(nb_model *m, size_t i, const void **data, void **owned, nb_ctx *ctx);
/* Read tensor i converted to F32 (dst holds nelements floats); needs the type's to_float. */
nb_status nb_model_read_f32(nb_model *m, size_t i, float *dst, nb_ctx *ctx);
/* Tensor by name or NULL (the first of that name). Hashed once nb_model_index
 * has run (nb_model_open and the GGUF reader do, so callers that look up
 * every tensor stay linear); a scan otherwise, and whenever the tensor array
 * changed since (a struct copy with its own array, appended tensors). */
const nb_tensor *nb_model_find(const nb_model *m, const char *name);
/* Index the tensor names for nb_model_find. Call when the tensor list is
 * complete; a later change makes lookups scan again until the next call.
 * Failing to allocate is not an error (lookups scan): it uses plain malloc,
 * outside the fault hook (core/fault.h). */
void nb_model_index(nb_model *m);
/* Element count of a tensor. */
uint64_t nb_tensor_nelements(const nb_tensor *t);
/* Shared helper for the per-format constructors: allocate an empty model. */
nb_model *nb_model_alloc(const char *path, nb_format fmt, nb_ctx *ctx);
/* Frees the common parts (names, kv, tensors array, path) — for ops->close. */
void nb_model_free_common(nb_model *m);

/* ---- sinks ----------------------------------------------------------------- */

typedef struct nb_sink nb_sink;

typedef struct nb_sink_ops {
    nb_status (*add_tensor)(nb_sink *s, const char *name, nb_type type, uint32_t n_dims,
                            const int64_t *ne, nb_ctx *ctx);
    nb_status (*begin)(nb_sink *s, nb_ctx *ctx);
    size_t (*data_order)(const nb_sink *s, size_t k);
    nb_status (*write)(nb_sink *s, const void *data, uint64_t n, nb_ctx *ctx);
    nb_status (*commit)(nb_sink *s, nb_ctx *ctx);
    void (*free)(nb_sink *s);
} nb_sink_ops;

struct nb_sink {
    const nb_sink_ops *ops;
    nb_format format;
    nb_kvset kv;           /* metadata to write; set before begin */
    unsigned char sha256[32]; /* digest of the committed file */
    uint64_t bytes_written;   /* size of the committed file */
    void *impl;
};

/* Create a sink for path; fmt NB_FMT_UNKNOWN picks by extension (.gguf or .safetensors). */
nb_status nb_sink_create(const char *path, nb_format fmt, nb_sink **out, nb_ctx *ctx);
nb_status nb_sink_add_tensor(nb_sink *s, const char *name, nb_type type, uint32_t n_dims,
                             const int64_t *ne, nb_ctx *ctx);
nb_status nb_sink_begin(nb_sink *s, nb_ctx *ctx);
/* Index (in add order) of the tensor whose data goes k-th. */
size_t nb_sink_data_order(const nb_sink *s, size_t k);
/* Stream the next piece of the current tensor's data. */
nb_status nb_sink_write(nb_sink *s, const void *data, uint64_t n, nb_ctx *ctx);
nb_status nb_sink_commit(nb_sink *s, nb_ctx *ctx);
/* NULL-safe; removes the partial file if not committed. */
void nb_sink_free(nb_sink *s);

#endif
