/* calib/awq.h — AWQ (Lin et al., "AWQ: Activation-aware Weight Quantization",
 * 2023): per-input-channel scales searched on calibration activations.
 *
 * For a group of linear layers that read the same input X (n columns), with
 * μ_j = mean |x_j| over the calibration tokens, the search tries
 *   s = μ^α / sqrt(max(μ^α) · min(μ^α)),  α = 0, 1/G, ..., (G-1)/G  (G = 20)
 * and keeps the α whose weights, scaled and quantized to their target types,
 *   Ŵ = Q(W diag(s)) diag(s)⁻¹,
 * give the least output error Σ_layers ‖X (W - Ŵ)ᵀ‖² / N = Σ_rows d H dᵀ / 2
 * with H = 2 XᵀX / N (the GPTQ Hessian, calib/gptq.h). α = 0 is plain
 * rounding, so the chosen error is never above it. The scales are then folded
 * into what produces X (the preceding RMSNorm weight divided by s, or the rows
 * of the preceding linear divided by s) and the weights multiplied by s, which
 * leaves the float model's function unchanged: the file format is the same.
 *
 * The quantizer is the target type's own (with importance imp / s², i.e. the
 * per-column Σx²/N of the scaled inputs, when imp is given), so AWQ works for
 * every type with a quantizer: the GGUF types, NF4 and INT4. Rows: at most
 * max_rows of each layer (evenly strided, the same for every α) enter the
 * error, which is a sum over rows. Deterministic: everything is in a fixed
 * order; the quadratic forms use calib/linalg.h (bit-identical at any thread
 * count).
 */
#ifndef NB_CALIB_AWQ_H
#define NB_CALIB_AWQ_H

#include "core/ctx.h"
#include "core/types.h"

#include <stdint.h>

typedef struct nb_awq_linear {
    const float *w;   /* rows x n, row-major (the layer's float weights) */
    int64_t rows;
    nb_type type;     /* target type (its block size divides n) */
} nb_awq_linear;

typedef struct nb_awq_opts {
    int n_grid;       /* 0: 20 */
    int64_t max_rows; /* rows per layer in the error; 0: 512 */
} nb_awq_opts;

typedef struct nb_awq_result {
    double alpha;     /* chosen */
    double err;       /* output error at alpha (Σ over the layers' sampled rows) */
    double err_plain; /* at alpha = 0 (plain rounding of the same rows) */
} nb_awq_result;

/* Search the scales of one group: H (n x n, full symmetric, 2 XᵀX / N), mu
 * (n, mean |x|), n_lin layers, imp (n or NULL: per-column importance of the
 * unscaled inputs for the types' scale search). s receives n scales (all 1
 * when alpha = 0 wins). Errors: NB_ERR_RANGE (bad shape, non-finite input,
 * named with `name`), NB_ERR_NOMEM. */
nb_status nb_awq_search(const double *H, const double *mu, int64_t n, const nb_awq_linear *lin, int n_lin,
                        const float *imp, const nb_awq_opts *o, float *s, nb_awq_result *r, const char *name,
                        nb_ctx *ctx);

/* The scales of one alpha: s = μ^α / sqrt(max · min) (μ floored at 1e-4 of
 * its mean; all 1 for α = 0). */
void nb_awq_scales(const double *mu, int64_t n, double alpha, float *s);

#endif
