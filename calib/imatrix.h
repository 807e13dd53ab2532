/* calib/imatrix.h — activation statistics ("importance matrix") and the two
 * file formats llama.cpp uses for them.
 *
 * For every weight tensor W (GGUF name, ne = {n_in, n_out[, n_expert]}) the
 * statistics are, per input column j and per expert e (e = 0 for 2-D weights):
 *   sum2[e][j] = Σ x_j²   over the rows x of W's matmul input (tokens),
 *   sum [e][j] = Σ x_j    (optional: legacy files do not have it),
 *   count[e]   = number of rows seen (tokens routed to expert e).
 * The importance weight llama-quantize derives (tools/quantize/quantize.cpp,
 * load_imatrix) and nb_imatrix_weights returns is sum2[e][j] / count[e], or
 * 1 for every column of an expert that saw no token (neutral fallback).
 *
 * GGUF imatrix (llama.cpp tools/imatrix, what llama-quantize --imatrix reads):
 *   general.type = "imatrix"
 *   imatrix.datasets    string array (calibration file names)
 *   imatrix.chunk_count u32 (chunks of chunk_size tokens processed)
 *   imatrix.chunk_size  u32 (tokens per chunk)
 *   per entry, entries sorted by name (strcmp):
 *     "<name>.in_sum2"  F32 ne = {n_in, n_mat}  Σx²
 *     "<name>.counts"   F32 ne = {1, n_mat}     tokens (whole numbers)
 *     "<name>.in_sum"   F32 ne = {n_in, n_mat}  Σx (when known)
 *   n_mat = 1 for 2-D weights, n_expert for stacked expert tensors. A counts
 *   tensor of one element with n_mat > 1 (older files) applies to every expert.
 *   Other tensors and keys are ignored by llama.cpp; nibble keeps the ones whose
 *   names start with "nibble." (expert routing statistics, calib/routing.h) in
 *   `extra` / `extra_kv` so a read -> write round trip preserves them.
 *
 * Legacy .dat (llama.cpp before the GGUF format; little-endian):
 *   i32 n_entries (>= 1)
 *   n_entries × { i32 len; name[len]; i32 ncall; i32 nval; f32 values[nval] }
 *   optional trailer: i32 chunk_count; i32 len; dataset[len]
 *   values = (Σx² / count) * ncall with ncall = ceil(max count / chunk_size),
 *   an expert with count 0 stored as 1 * ncall; nval = n_in * n_expert (the
 *   expert split is not in the file: nb_imatrix_check_model recovers it from
 *   the model's shape). Entries with no data at all are not written.
 *   On reading, nibble keeps sum2 = values and count = ncall (one count for all
 *   experts) with chunk_size = 1, so sum2 / count is the mean llama-quantize
 *   uses, and .dat -> .dat round trips are byte-identical.
 *
 * Accumulation is in double, in call order, so statistics are identical for
 * any thread count as long as the inputs arrive in the same order (the engine
 * guarantees that).
 */
#ifndef NB_CALIB_IMATRIX_H
#define NB_CALIB_IMATRIX_H

#include "core/ctx.h"
#include "formats/kv.h"
#include "formats/model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct nb_imatrix_entry {
    char *name;       /* weight tensor name ("blk.0.attn_q.weight") */
    int64_t n_in;     /* input columns (the weight's ne[0]) */
    int64_t n_mat;    /* 1, or n_expert for a stacked expert tensor */
    int64_t n_counts; /* 1 or n_mat */
    double *sum2;     /* [n_mat * n_in] Σx², expert-major */
    double *sum;      /* [n_mat * n_in] Σx, or NULL when unknown */
    double *count;    /* [n_counts] */
} nb_imatrix_entry;

/* An extra F32 tensor carried in the GGUF file (names "nibble.*"). */
typedef struct nb_imatrix_extra {
    char *name;
    uint32_t n_dims;
    int64_t ne[2];
    float *data; /* ne[0] * ne[1] */
} nb_imatrix_extra;

typedef struct nb_imatrix {
    size_t n, cap;
    nb_imatrix_entry *e; /* in insertion order; written sorted by name */
    size_t *idx;         /* hash index of e by name: slot = entry index + 1, 0 empty; idx_cap a
                          * power of two >= 2 n, or 0 (then lookups scan): files with a million
                          * entries read in linear time */
    size_t idx_cap;
    size_t n_datasets;
    char **datasets;
    uint32_t chunk_count, chunk_size;
    bool legacy;         /* read from a .dat file */
    size_t n_extra;
    nb_imatrix_extra *extra;
    nb_kvset extra_kv;   /* "nibble.*" keys */
} nb_imatrix;

void nb_imatrix_init(nb_imatrix *im);
void nb_imatrix_free(nb_imatrix *im); /* NULL-safe; leaves *im initialised */

/* Entry by name, or NULL. */
const nb_imatrix_entry *nb_imatrix_find(const nb_imatrix *im, const char *name);
/* Entry `name` with that shape, created zeroed (with a Σx array) if absent.
 * An existing entry of another shape -> NB_ERR_RANGE naming the tensor. */
nb_status nb_imatrix_entry_get(nb_imatrix *im, const char *name, int64_t n_in, int64_t n_mat,
                               nb_imatrix_entry **out, nb_ctx *ctx);

/* Accumulate n_tok rows of x (n_tok x n_in, row-major) into entry `name`,
 * matrix `expert` (0 for a 2-D weight) of n_mat. A NaN/Inf element ->
 * NB_ERR_RANGE naming the tensor, row and column (nothing is added then). */
nb_status nb_imatrix_add(nb_imatrix *im, const char *name, int64_t expert, int64_t n_mat, const float *x,
                         int64_t n_tok, int64_t n_in, nb_ctx *ctx);

nb_status nb_imatrix_add_dataset(nb_imatrix *im, const char *dataset, nb_ctx *ctx);
/* Add (replace) an extra tensor; `data` is copied. */
nb_status nb_imatrix_set_extra(nb_imatrix *im, const char *name, int64_t ne0, int64_t ne1, const float *data,
                               nb_ctx *ctx);
const nb_imatrix_extra *nb_imatrix_get_extra(const nb_imatrix *im, const char *name);

/* Importance weights of `name`, expert slice `expert`: n_in floats into out
 * (sum2 / count, 1 where count is 0). Returns 1 when written, 0 when the
 * imatrix has no entry of that name, -1 when the entry's shape does not fit
 * (n_in differs or expert out of range). */
int nb_imatrix_weights(const nb_imatrix *im, const char *name, int64_t expert, int64_t n_in, float *out);

/* Number of experts (matrices) of the entry with count 0. */
int64_t nb_imatrix_zero_count(const nb_imatrix_entry *e);

/* Check the imatrix against a model: every entry must name a tensor of m with
 * ne[0] == n_in and n_mat == ne[2] (3-D) or 1; a legacy flat entry whose size
 * is ne[0] * ne[2] is reshaped to n_mat = ne[2]. A mismatch -> NB_ERR_RANGE
 * "imatrix 'F': tensor 'x': ... (imatrix from another model?)". `what` names
 * the imatrix file in messages. */
nb_status nb_imatrix_check_model(nb_imatrix *im, const nb_model *m, const char *what, nb_ctx *ctx);

/* Read a GGUF imatrix or a legacy .dat file (chosen by content). On failure
 * *im is left initialised and empty. */
nb_status nb_imatrix_read(const char *path, nb_imatrix *im, nb_ctx *ctx);
/* Write the GGUF format (atomic). */
nb_status nb_imatrix_write_gguf(const nb_imatrix *im, const char *path, nb_ctx *ctx);
/* Write the legacy format (atomic). Entries with no data are left out (with a
 * warning, as llama.cpp does). chunk_size 0 is taken as 1. */
nb_status nb_imatrix_write_dat(const nb_imatrix *im, const char *path, nb_ctx *ctx);

/* Read `path` and check it against the model at model_path (opened lazily,
 * headers only): what `nibble quantize --imatrix` does. Logs the entry count
 * and datasets at INFO, warns about experts without data. */
nb_status nb_imatrix_load_for_model(const char *path, const char *model_path, nb_imatrix *im, nb_ctx *ctx);

/* nb_quant_opts.importance adapter (quant/quantize.h): user is an
 * nb_imatrix_importance; tensors without an entry get NULL (plain rounding). */
typedef struct nb_imatrix_importance {
    const nb_imatrix *im;
    float *buf;
    size_t cap;
    bool failed; /* set when an entry's shape did not fit (check_model prevents it) */
} nb_imatrix_importance;
const float *nb_imatrix_importance_fn(void *user, const char *name, int64_t slice, int64_t ne0);
void nb_imatrix_importance_free(nb_imatrix_importance *u);

#endif
