/* calib/routing.h — MoE expert routing statistics (for expert pruning).
 *
 * Per MoE layer and expert, over the calibration tokens:
 *   n_sel[e]     times expert e was among a token's chosen experts,
 *   gate_sum[e]  Σ of its gate weight (after normalisation) when chosen,
 *   norm_sum[e]  Σ gate · ||f_e(x)||₂, f_e(x) the expert's output (the
 *                ffn_down_exps product of the rows routed to it), i.e. the
 *                REAP saliency numerator (Lasby et al. 2025),
 *   n_tok        tokens the layer saw.
 * Derived: selection frequency n_sel / n_tok, mean gate gate_sum / n_sel,
 * mean router-weighted output norm norm_sum / n_sel (0 for an expert never
 * chosen).
 *
 * Collected from the engine hooks (engine/engine.h): on_route gives the
 * choices; the ffn_down_exps input rows of expert e arrive in token order
 * (the engine's contract: tokens ascending, then slots), which matches them
 * with the gates of the last on_route of that layer. With all_experts the
 * rows are every token of the batch and only the chosen ones count: the
 * statistics are the router's, whatever the engine computed besides. The expert output is
 * recomputed from the packed weights with nb_matmul (deterministic).
 *
 * Storage: inside the imatrix GGUF, as one F32 tensor per MoE layer
 *   "nibble.routing.blk.L"  ne = {n_expert, 4}: rows n_sel, gate_sum,
 *                            norm_sum, n_tok (repeated in every column)
 * plus the u32 key "nibble.routing.n_layer" (layer count of the model).
 * llama.cpp ignores both (names do not end in .in_sum2/.counts/.in_sum).
 */
#ifndef NB_CALIB_ROUTING_H
#define NB_CALIB_ROUTING_H

#include "calib/imatrix.h"
#include "core/ctx.h"
#include "formats/model.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct nb_routing_layer {
    int n_expert;        /* 0: not a MoE layer (or not seen) */
    double *n_sel, *gate_sum, *norm_sum; /* [n_expert] */
    double n_tok;
    /* the last on_route of this layer (matching expert rows to gates) */
    int32_t *sel;
    float *selw;
    int64_t sel_tok;
    int n_used;
} nb_routing_layer;

typedef struct nb_routing {
    int n_layer;
    nb_routing_layer *layers; /* [n_layer] */
    nb_model *model;          /* borrowed, for ffn_down_exps weights; NULL: no output norms */
    int n_threads;
    float *ybuf;              /* scratch for expert outputs */
    size_t ybuf_cap;
    nb_status err;            /* first failure inside a hook */
    bool all_experts;         /* the engine runs every expert on every token (nb_engine_set_all_experts):
                                 expert rows are all the batch's tokens, the chosen ones are picked out */
    float *xbuf;              /* scratch: the chosen rows (all_experts) */
    size_t xbuf_cap;
} nb_routing;

typedef struct nb_expert_stats {
    double n_sel, freq, gate_mean, out_norm_mean;
} nb_expert_stats;

nb_status nb_routing_init(nb_routing *r, int n_layer, nb_model *model, nb_ctx *ctx);
void nb_routing_free(nb_routing *r); /* NULL-safe */

/* Hook bodies (call from the engine hooks). Failures are kept in r->err. */
void nb_routing_on_route(nb_routing *r, int layer, const int32_t *experts, const float *weights, int64_t n_tok,
                         int n_used, int n_expert, nb_ctx *ctx);
/* For "blk.L.ffn_down_exps.weight" inputs (expert rows); other names are ignored. */
void nb_routing_on_matmul(nb_routing *r, const char *name, int expert, const float *x, int64_t n_tok, int64_t n_in,
                          nb_ctx *ctx);

/* Statistics of one expert; false if the layer has no data or e is out of range. */
bool nb_routing_expert(const nb_routing *r, int layer, int expert, nb_expert_stats *out);

/* Into / out of the imatrix file's extra tensors. from_imatrix: r must be
 * freshly initialised (nb_routing_init with n_layer 0 is fine); a malformed
 * tensor -> NB_ERR_FORMAT naming it. Returns NB_OK with n_layer 0 when the
 * file has no routing data. */
nb_status nb_routing_to_imatrix(const nb_routing *r, nb_imatrix *im, nb_ctx *ctx);
nb_status nb_routing_from_imatrix(const nb_imatrix *im, nb_routing *r, nb_ctx *ctx);

#endif
