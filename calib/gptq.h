/* calib/gptq.h — GPTQ (Frantar et al., 2022) on one linear layer.
 *
 * The algorithm is the reference one (IST-DASLab gptq.py / AutoGPTQ
 * `fasterquant`), step by step:
 *
 *   W: n_rows x n_cols (nibble's rows = output features, columns = input
 *      features = ggml ne[0]); H = 2 XᵀX / n (n_cols x n_cols) from the layer's
 *      calibration inputs X (nb_hessian).
 *   1. dead columns: H_ii == 0 -> H_ii = 1 and W[:, i] = 0.
 *   2. static groups (always with act-order): every block's scales are chosen
 *      up front from W as it is (step 6 then never re-chooses them).
 *   3. act-order (desc_act): columns are processed in order of decreasing H_ii
 *      (stable for ties); W and H permuted accordingly, the result permuted back.
 *   4. dampening: H_ii += damp * mean(diag H) (damp default 0.01).
 *   5. U = upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU), computed without forming
 *      H⁻¹ as U = J L⁻¹ J with J H J = L Lᵀ, J the order reversal (LAPACK
 *      dpotrf + dtrtri, calib/linalg.h). If H is not positive definite
 *      the dampening is multiplied by 10 and step 4 retried (at most 6 times;
 *      counted in the result) — the reference would stop with an error.
 *   6. columns in lazy batches of `block` (128): for column i of a batch,
 *        (group start, no static groups) choose the block's scales from the
 *            lazily updated W[:, i : i + G] (as the reference does: the
 *            updates inside the current batch are not yet in W),
 *        q = the representable value nearest to w = W1[:, i] on that grid,
 *        err = (w - q) / U_ii,  W1[:, i:] -= err · U[i, i:]  (inside the batch),
 *      then W[:, batch end:] -= Err · U[batch, batch end:].
 *   Loss = Σ (w - q)² / U_ii² / 2 (the reference's Losses).
 *
 * The quantization grid is the target type's own ("quantize one block given
 * its scales"): G = the type's block size (INT4_G128: 128, Q4_0: 32, Q4_K:
 * 256, NF4: 64 ...). When a block starts, its current weights (one row, G
 * columns) go through the type's quantizer exactly as plain rounding would
 * (with the importance weights `imp` when given): that fixes the block's
 * scales — for the K-quants also every sub-block scale and min. The grid of
 * each sub-block (all values a code can take with those scales) is then read
 * back by setting every code of the block to each level and dequantizing, so
 * the grid is exactly what the file will decode to. Each column is then
 * rounded to the nearest grid value (lowest code on an exact tie) and its
 * code written into the block; after the last column every code of the block
 * has been chosen by GPTQ, the scales by the type's own search. For INT4 that
 * is GPTQ's find_params (nibble's variant, quant/int4.h: fp16 scale, zero point
 * 1..15); for the GGUF types it is ggml's scale search on error-compensated
 * weights, as llama.cpp-oriented GPTQ ports do. One difference from
 * llama-quantize: the quantizer sees one block, so the legacy types' imatrix
 * regulariser sigma2 (ggml: mean x² over the whole row for Q4_0/Q4_1/Q5_x and
 * Q3_K) is the block's mean instead (with static groups the whole row is
 * quantized at once and it is the row's).
 *
 * Supported types: nb_gptq_supported, i.e. the type-table rows with a GPTQ
 * grid (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL,
 * IQ4_XS, NF4, the six INT4 types). Not NF4_DQ (its scales depend on the
 * whole tensor).
 *
 * Speed, determinism and threads (calib/linalg.h): XᵀX, the Cholesky factor
 * and the lazy batch updates (W[:, batch end:] -= Err · U[...], a GEMM per
 * tile of 128 rows) run on OpenBLAS, single-threaded per call. Rows are
 * independent given U; the fixed row tiles are spread over OpenMP threads,
 * XᵀX over fixed tiles of H, so the output is identical for any thread
 * count. Arithmetic is double precision (W, H, U); memory: H and U (2 n_cols²
 * doubles), 128 rows of W per thread.
 */
#ifndef NB_CALIB_GPTQ_H
#define NB_CALIB_GPTQ_H

#include "core/ctx.h"
#include "core/types.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Running XᵀX of a layer's inputs (upper triangle accumulated; double). */
typedef struct nb_hessian {
    int64_t n;      /* columns (n_in) */
    uint64_t n_tok; /* rows added */
    double *xtx;    /* [n * n] row-major; valid on and above the diagonal until nb_hessian_finish */
} nb_hessian;

nb_status nb_hessian_init(nb_hessian *h, int64_t n_in, nb_ctx *ctx);
void nb_hessian_free(nb_hessian *h); /* NULL-safe */
/* Add n_tok rows of x (n_tok x n, row-major). A NaN/Inf -> NB_ERR_RANGE naming
 * `name` (nothing added). Parallel over H's rows; each element sums tokens in
 * order, so the result does not depend on the thread count. */
nb_status nb_hessian_add(nb_hessian *h, const float *x, int64_t n_tok, const char *name, nb_ctx *ctx);
/* out (n x n, may be h->xtx) = 2 XᵀX / n_tok, full symmetric; zero when no token was added. */
void nb_hessian_finish(const nb_hessian *h, double *out);

typedef struct nb_gptq_opts {
    double damp;        /* fraction of mean(diag H) added to the diagonal; 0: 0.01 */
    int block;          /* lazy batch width; 0: 128 */
    bool act_order;     /* desc_act (implies static_groups) */
    bool static_groups; /* choose all block scales before the loop */
    const float *imp;   /* optional per-column importance (n_cols) for the types' scale search */
} nb_gptq_opts;

typedef struct nb_gptq_result {
    double loss;       /* GPTQ's Σ (w - q)² / U_ii² / 2 */
    double damp_abs;   /* the value added to the diagonal */
    int damp_retries;  /* times the dampening was raised (H not positive definite) */
    int64_t n_dead;    /* columns with H_ii == 0 */
} nb_gptq_result;

bool nb_gptq_supported(nb_type t);

/* Quantize w (n_rows x n_cols floats, row-major) to `type` with GPTQ.
 * H: n_cols x n_cols symmetric (e.g. nb_hessian_finish), not modified.
 * dst: n_rows packed rows of `type` (n_cols a multiple of its block size).
 * deq: optional n_rows x n_cols floats receiving the dequantized result
 * (identical to dequantizing dst). `name` is used in messages.
 * Errors: unsupported type / bad shape -> NB_ERR_UNSUPPORTED / NB_ERR_RANGE;
 * NaN/Inf in w or H -> NB_ERR_RANGE; H not positive definite after the
 * retries -> NB_ERR_RANGE; allocation -> NB_ERR_NOMEM. */
nb_status nb_gptq_quantize(nb_type type, const float *w, int64_t n_rows, int64_t n_cols, const double *H,
                           const nb_gptq_opts *o, void *dst, float *deq, nb_gptq_result *res, const char *name,
                           nb_ctx *ctx);

/* The part of GPTQ that depends on H only (dead columns, column order,
 * dampening, U): made once per Hessian and shared by every weight that reads
 * the same inputs (q/k/v, gate/up). */
typedef struct nb_gptq_factor {
    int64_t n;          /* columns */
    bool act_order;     /* the order the factor was made for */
    double *U;          /* [n * n] upper, processing order */
    int64_t *perm;      /* [n] processing position -> column */
    bool *dead;         /* [n] by column */
    double damp_abs;
    int damp_retries;
    int64_t n_dead;
} nb_gptq_factor;

/* Steps 1, 3, 4, 5 for H (n x n, not modified) with o's damp and act_order.
 * Errors as nb_gptq_quantize's for H. f is zeroed on failure. */
nb_status nb_gptq_factor_make(const double *H, int64_t n, const nb_gptq_opts *o, nb_gptq_factor *f,
                              const char *name, nb_ctx *ctx);
void nb_gptq_factor_free(nb_gptq_factor *f); /* NULL-safe */
/* Step 6 with a factor (o->act_order must be the factor's; damp is ignored).
 * res carries the factor's damp_abs / damp_retries / n_dead. */
nb_status nb_gptq_quantize_factored(nb_type type, const float *w, int64_t n_rows, int64_t n_cols,
                                    const nb_gptq_factor *f, const nb_gptq_opts *o, void *dst, float *deq,
                                    nb_gptq_result *res, const char *name, nb_ctx *ctx);

/* For tests: the grid machinery, i.e. the type table's GPTQ columns
 * (core/types.h grid_levels, grid_sub, set_code; the hooks live next to the
 * block structs in quant/). Number of levels (codes) of a supported type,
 * elements per sub-block sharing one grid, and "set code `level` of element
 * p (0 <= p < block size) in the packed block"; 0 / no-op when unsupported. */
int nb_gptq_levels(nb_type t);
int nb_gptq_sub(nb_type t);
void nb_gptq_set_code(nb_type t, void *block, int p, int level);

#endif
