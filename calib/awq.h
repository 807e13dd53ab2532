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
#include "formats/model.h"

#include <stdbool.h>
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

/* Where AWQ applies in a block: what produces an input (`prev`: a norm whose
 * weight is divided by s, or a linear whose rows are) and the linears that
 * read it (columns multiplied by s), named by their "blk.L.<name>.weight".
 * One row of the table per kind of group; the sequential driver
 * (calib/gptq_model.c) and the mixed planner's measurement
 * (calib/budget_method.c) both read it.
 *
 *   attn_norm    -> attn_q, attn_k, attn_v                   unit attn
 *   attn_v       -> attn_output (v's rows; needs no GQA)     unit attn
 *   ffn_norm     -> ffn_gate, ffn_up (dense; not with a router) unit ffn
 *   ffn_norm     -> ffn_gate_exps, ffn_up_exps [, ffn_gate_shexp, ffn_up_shexp]
 *                   and the routers ffn_gate_inp [, ffn_gate_inp_shexp], whose
 *                   columns are multiplied by s too (they stay float: routing
 *                   is unchanged in exact arithmetic)            unit ffn
 *   ffn_up       -> ffn_down                                 unit ffn
 *   ffn_up_shexp -> ffn_down_shexp                           unit ffn
 *   ffn_up_exps  -> ffn_down_exps (one scale vector per expert) unit ffn
 *
 * A *unit* is what the planner chooses AWQ for as a whole: every linear of a
 * block's attention or FFN, since a group's scales are shared by all its
 * readers and a linear producer's rows are scaled with its readers. */
typedef enum nb_awq_unit { NB_AWQ_UNIT_ATTN = 0, NB_AWQ_UNIT_FFN = 1 } nb_awq_unit;

#define NB_AWQ_MAX_LIN 4
#define NB_AWQ_MAX_ROUTERS 2

typedef struct nb_awq_group {
    const char *prev;
    bool prev_is_norm;
    const char *lin[NB_AWQ_MAX_LIN];
    int n_lin;          /* readers named */
    int n_need;         /* the first n_need must exist; the others join when present (shared experts) */
    const char *skip_if; /* a tensor whose presence means prev has another reader (dense FFN vs a router) */
    const char *router[NB_AWQ_MAX_ROUTERS]; /* float readers whose columns take s (NULL: none) */
    bool per_expert;    /* stacked prev and readers: one scale vector per expert */
    nb_awq_unit unit;
} nb_awq_group;

/* The rows of tensor i of m that nb_awq_search samples from a layer of all its
 * rows (at most max_rows, row k * rows / nr: every expert of a stack), in F32:
 * *out (malloc'd, *nr x ne[0]). Errors: NB_ERR_UNSUPPORTED (a source type
 * without a dequantizer), reading the source, NB_ERR_NOMEM. */
nb_status nb_awq_sample_rows(nb_model *m, size_t i, int64_t max_rows, float **out, int64_t *nr, nb_ctx *ctx);

/* The table above ([*n] rows, static). */
const nb_awq_group *nb_awq_groups(size_t *n);

/* Where group g stands in block L of m, by names and shapes only: *prev (the
 * producer's tensor index), lin[0 .. *n_lin) (the readers present, table
 * order), routers[0 .. *n_routers). False when it does not apply: a missing
 * tensor, a bias on the producer, skip_if present, a reader that is not a
 * matrix (a stack for per_expert / expert readers) of the producer's width, a
 * norm that is not 1-D, a router of another width. The callers add their own
 * conditions (quantized here, statistics present). */
bool nb_awq_group_find(const nb_model *m, int L, const nb_awq_group *g, long *prev, long *lin, int *n_lin,
                       long *routers, int *n_routers);

#endif
