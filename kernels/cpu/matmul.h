/* kernels/cpu/matmul.h — matrix products on packed weights.
 *
 * The engine multiplies activations by weights stored in any type of the
 * type table, without a full-precision copy of the weights. One entry point;
 * the implementation picks a per-type kernel (generic C, AVX2, AVX-512) at
 * run time, and falls back to "dequantize one row, F32 dot" for any type
 * with a to_float hook.
 *
 * Determinism: every output element is computed by exactly one thread with a
 * fixed summation order, so results are bit-identical at any thread count and
 * any batch size (a token gives the same outputs alone or in a batch).
 *
 * Accuracy: as in ggml, the fast kernels of the quantized types quantize the
 * activations to 8 bits per block (32, or 256 for the K-quants and IQ4_XS)
 * and take integer dot products, so they differ from nb_matmul_ref by about
 * 0.5-0.7 % relative RMS on Gaussian data (NF4 also rounds its code book to
 * int8: ~0.8 %); F32/F16/BF16 weights use float dots (~1e-7 relative).
 * The integer kernels of every ISA give the same bits as the generic C
 * (kernels/cpu/kernels_impl.h defines the canonical order). With quantized
 * weights, a NaN or Inf in a token's activations makes all of that token's
 * outputs NaN (float weights: IEEE arithmetic, as the reference).
 * NB_KERNELS=generic|avx2|avx512|neon in the environment selects a lower
 * kernel table (debugging, benchmarks).
 */
#ifndef NB_KERNELS_MATMUL_H
#define NB_KERNELS_MATMUL_H

#include "core/types.h"

#include <stdint.h>

/* y[t*n_out + r] = sum_k W[r][k] * x[t*n_in + k]
 *   W: n_out rows of n_in elements of `wtype`, packed (row stride = row bytes of n_in)
 *   x: n_tok x n_in floats (row-major), y: n_tok x n_out floats
 * n_threads >= 1 (OpenMP). Returns NB_ERR_UNSUPPORTED when wtype has no
 * kernel and no to_float, NB_ERR_RANGE when n_in is not a multiple of the
 * type's block size. */
nb_status nb_matmul(nb_type wtype, const void *w, int64_t n_out, int64_t n_in, const float *x, int64_t n_tok,
                    float *y, int n_threads, nb_ctx *ctx);

/* Row-interleaved copies of weight matrices (Q4_0, Q4_1, Q5_0, IQ4_NL, NF4, Q8_0) for
 * this CPU's row-lane kernels: one weight row per vector lane, 16 rows per
 * group (kernels/cpu/kernels_impl.h has the layout). The engine packs such
 * matrices once when it opens a model; nb_matmul_packed then gives exactly
 * nb_matmul's bits, faster. nb_matmul_pack_bytes: the copy's size, 0 when
 * this CPU's kernels have no packed form for the type, or n_out is not a
 * multiple of 16. nb_matmul_pack writes it into wp (that many bytes). */
uint64_t nb_matmul_pack_bytes(nb_type wtype, int64_t n_out, int64_t n_in);
void nb_matmul_pack(nb_type wtype, const void *w, int64_t n_out, int64_t n_in, void *wp, int n_threads);
nb_status nb_matmul_packed(nb_type wtype, const void *wp, int64_t n_out, int64_t n_in, const float *x,
                           int64_t n_tok, float *y, int n_threads, nb_ctx *ctx);

/* The reference path (dequantize row, F32 dot in double-free fixed order),
 * exposed so tests can compare the fast kernels against it. */
nb_status nb_matmul_ref(nb_type wtype, const void *w, int64_t n_out, int64_t n_in, const float *x,
                        int64_t n_tok, float *y, int n_threads, nb_ctx *ctx);

/* Dequantize row `r` of a packed matrix into dst (n_in floats); used for
 * embedding lookups (token_embd in any type). */
nb_status nb_get_row(nb_type wtype, const void *w, int64_t n_in, int64_t r, float *dst, nb_ctx *ctx);

/* The CPU kernel ISAs this build compiled in, best last ("generic", "avx2",
 * "avx512", "neon"): up to cap static names into names; returns how many there
 * are (which may exceed cap). For `nibble --version`. */
size_t nb_kernels_compiled(const char **names, size_t cap);

/* The ISA nb_matmul runs on this CPU (after NB_KERNELS): a static name. */
const char *nb_kernels_active(void);

#endif
