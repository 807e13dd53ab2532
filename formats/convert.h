/* formats/convert.h — streaming conversion between model files.
 *
 * Reads any source nb_model_open accepts and writes a .gguf or .safetensors
 * file, one tensor (in chunks of rows) at a time: peak memory is a few MB of
 * buffers plus, for sources that must be materialised (stacked HF experts,
 * permuted q/k), one tensor — never the model. Output is atomic. */
#ifndef NB_FORMATS_CONVERT_H
#define NB_FORMATS_CONVERT_H

#include "formats/model.h"

typedef struct nb_convert_opts {
    bool set_type;      /* false: keep every tensor's type (lossless) */
    nb_type type;       /* with set_type: target for float tensors with >= 2 dims
                           (1-D float tensors become F32, as llama.cpp's converter does) */
} nb_convert_opts;

typedef struct nb_convert_result {
    size_t n_tensors;
    uint64_t bytes_in;      /* tensor bytes read */
    uint64_t bytes_out;     /* output file size */
    double seconds;
    unsigned char sha256[32];
} nb_convert_result;

nb_status nb_convert(const char *src, const char *dst, const nb_convert_opts *o, nb_convert_result *r,
                     nb_ctx *ctx);

/* Writes tensor i's bytes to the sink (nb_sink_write, in pieces as it likes). */
typedef nb_status (*nb_tensor_write_fn)(void *user, nb_model *m, size_t i, nb_sink *sink, nb_ctx *ctx);

/* The second half of every model rewrite (convert, merge, prune): with every
 * tensor of m declared on the sink, begin it, call `write` for each tensor in
 * the sink's data order under a progress bar labelled `label`, commit, and
 * fill r's n_tensors, bytes_in (the source tensor bytes), bytes_out, sha256.
 * On failure the sink is left uncommitted (nb_sink_free removes the partial). */
nb_status nb_stream_tensors(nb_model *m, nb_sink *sink, const char *label, nb_tensor_write_fn write, void *user,
                            nb_convert_result *r, nb_ctx *ctx);

/* Write tensor i of m to the sink as type `out` (converting through F32 when
 * types differ), streaming in chunks of rows. Shared by convert and quantize. */
nb_status nb_copy_tensor(nb_model *m, size_t i, nb_type out, nb_sink *sink, nb_ctx *ctx);

/* Drop the resident pages of [p, p+n) of a read-only file mapping (they are
 * re-read from the file if touched again): keeps RSS flat while streaming.
 * Advisory; p may be NULL. */
void nb_release_mapped(const void *p, uint64_t n);

/* Drop the resident pages of tensor i, and those near it in the model's one
 * mapping (nb_model.map): keeps RSS flat while streaming in any order. */
void nb_model_release_tensor(nb_model *m, size_t i);

#endif
