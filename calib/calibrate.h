/* calib/calibrate.h — run the engine over calibration chunks and collect the
 * importance matrix (calib/imatrix.h) and expert routing statistics
 * (calib/routing.h): what `nibble calibrate` does.
 *
 * Method (as llama-imatrix): each chunk of n_ctx tokens (calib/corpus.h) is
 * evaluated from an empty KV cache in one pass; every matmul input of a
 * "blk.*" weight (and of output.weight with process_output) is accumulated:
 * Σx², Σx per input column and the row count, per expert for stacked expert
 * tensors (only the rows routed to that expert). Statistics are independent
 * of the thread count (the engine's activations are bit-identical at any
 * thread count and are accumulated in call order).
 *
 * all_experts (llm-compressor's "calibrate all experts"): every expert of a
 * MoE layer also runs on the tokens the router did not give it
 * (nb_engine_set_all_experts), for statistics only: the imatrix of every
 * expert then counts every token, so no expert is quantized without data;
 * the routing statistics stay the router's own choices (what pruning needs).
 * Without it, experts that see no token keep count 0 and get neutral weights
 * (1) when the imatrix is used, with a warning here and in nibble quantize.
 */
#ifndef NB_CALIB_CALIBRATE_H
#define NB_CALIB_CALIBRATE_H

#include "calib/corpus.h"
#include "calib/imatrix.h"
#include "calib/routing.h"

typedef struct nb_calib_opts {
    const char *calib_path;   /* required */
    nb_corpus_opts corpus;    /* n_ctx 0: 512 */
    bool process_output;      /* also collect output.weight (llama-imatrix --process-output) */
    const char *dataset_name; /* imatrix.datasets entry; NULL: calib_path */
    bool all_experts;         /* every MoE expert sees every calibration token (statistics only) */
} nb_calib_opts;

typedef struct nb_calib_result {
    size_t n_chunks;
    uint64_t n_tokens;       /* evaluated */
    double seconds;
    int64_t n_zero_experts;  /* (layer, expert) pairs the router never chose */
    int64_t n_zero_data;     /* (tensor, expert) pairs of the imatrix without a token (0 with all_experts) */
} nb_calib_result;

/* im and rt are initialised here (free with nb_imatrix_free / nb_routing_free,
 * also on failure). Errors: see corpus / engine; a NaN activation ->
 * NB_ERR_RANGE naming the tensor. */
nb_status nb_calibrate(const char *model_path, const nb_calib_opts *o, nb_imatrix *im, nb_routing *rt,
                       nb_calib_result *res, nb_ctx *ctx);

/* Log one line per MoE layer with tokens per expert (min / max / zero
 * experts) at INFO and a warning per expert that saw no token; returns the
 * number of such experts. With all_experts the router's zeros are INFO only
 * (their statistics come from every token). */
int64_t nb_calib_report_experts(const nb_routing *rt, nb_ctx *ctx);

/* Log one line per stacked expert tensor of the imatrix with its per-expert
 * token counts (min / max / experts without a token); returns the number of
 * (tensor, expert) pairs without a token. */
int64_t nb_calib_report_expert_counts(const nb_imatrix *im, nb_ctx *ctx);

#endif
