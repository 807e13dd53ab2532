/* calib/budget_method.h — what the size-budget planner's mixed methods need
 * (quant/budget.h "Mixed methods"; docs/planner.md "Methods per tensor"):
 * per tensor group and candidate type, GPTQ's error as a fraction of
 * importance-weighted rounding's, and per tensor each method's predicted work.
 *
 * Error ratio. One pass of the engine over a quarter of the calibration
 * chunks (at least 2; the first ones of the seeded sample) through the source
 * model accumulates, for every planned weight of ONE block (the middle
 * one, n_layer / 2), the Hessian of its inputs H = 2 XᵀX / n (calib/gptq.h;
 * an expert stack's experts pooled: every routed token of every expert).
 * Then, on a deterministic sample of that weight's rows (sample_rows, evenly
 * spaced over all rows of all experts), each frontier candidate type the
 * sensitivity table kept is quantized twice, by the type's rounding with
 * importance diag(H) / 2 (= Σx²/n, what the imatrix holds) and by GPTQ under
 * H (nb_gptq_quantize_factored, default dampening), and
 *   ratio = Σ_rows (w − q_gptq) H (w − q_gptq)ᵀ / Σ_rows (w − q_round) H (w − q_round)ᵀ,
 * the layer-output errors on the calibration inputs. The ratio is given to
 * every tensor of the same group (the name without "blk.N.") for that type;
 * groups outside the blocks (token_embd, output: the sequential driver never
 * runs GPTQ on them) and types GPTQ does not support keep ratio 0 (never
 * GPTQ). The ratio is measured on the data GPTQ is fitted to, as the driver's
 * own report (err_gptq vs err_rtn) is: it is optimistic for experts with few
 * tokens, whose per-expert Hessian the driver uses.
 *
 * AWQ (calib/awq.h). The same pass also sums |x| per input column. For every
 * AWQ group of the measured block (nb_awq_groups: its readers and a linear
 * producer all planned weights) and every candidate type of its readers, the
 * AWQ search itself (nb_awq_search, 20 alphas) runs on sample_rows rows of
 * each reader with that candidate, under the first reader's H and mean |x|
 * (a stack's experts pooled), with importance diag(H) / 2; awq_ratio = the
 * error at the best alpha / the error at alpha 0 (importance-weighted
 * rounding of the same rows), given to the same group in every block.
 * awq_unit: 1 + the first tensor of the tensor's unit (the readers and
 * linear producers of a block's attention groups, or of its FFN groups),
 * which the planner gives AWQ as a whole (0: no group applies).
 * sec_awq = round + [2·T_in·n_in² (Hessian) + 20·2·r·n_in² (the search's
 * quadratic forms)] / NB_METHOD_GPTQ_FLOPS + 20·r·n_in·NB_METHOD_ROUND_SECONDS
 * for a reader, r = its rows searched (≤ 512 per layer; per expert for the
 * per-expert group); AWQ shares the block's passes (gptq_block, sec_pass).
 *
 * Work (seconds, predicted from flop counts at fixed rates measured once on
 * the development machine: deterministic, so plans do not depend on the
 * machine's load; bench/RESULTS.md compares them with measured times). For a
 * weight of n_out rows (per expert), n_in columns, E experts (1: dense) in
 * block L, T calibration tokens (T·n_used routed to a stack; T·E with
 * all_experts):
 *   GPTQ  = [2·T_in·n_in² (Hessian) + E·n_in³/3 (factor) + 2·E·n_out·n_in² (updates)] / NB_METHOD_GPTQ_FLOPS
 *         + 2·T·P(0..L) / n_L / NB_METHOD_FWD_FLOPS   (its share of the block's sequential passes:
 *                                                      P = parameters of blocks 0..L, n_L planned weights of L)
 *   round = n_el × NB_METHOD_ROUND_SECONDS
 * Shared Hessians (q/k/v, gate/up) are counted once per weight: an
 * over-estimate, as is the pass share when several weights of a block take
 * GPTQ.
 */
#ifndef NB_CALIB_BUDGET_METHOD_H
#define NB_CALIB_BUDGET_METHOD_H

#include "calib/corpus.h"
#include "core/ctx.h"
#include "formats/model.h"
#include "quant/budget.h"

#include <stdbool.h>
#include <stdint.h>

/* Rates from CPU seconds on one thread of the development machine (bench/RESULTS.md "Methods per tensor"):
 * stories260K's 15 block passes of 4096 tokens (6.0 GFlop of weight matmuls) took 0.75 s. */
#define NB_METHOD_GPTQ_FLOPS 4.0e9     /* GPTQ's double arithmetic (BLAS), flop/s */
#define NB_METHOD_FWD_FLOPS 8.0e9      /* the engine's forward pass, weight flops only, flop/s */
#define NB_METHOD_ROUND_SECONDS 2.0e-8 /* importance-weighted rounding, s per weight */

typedef struct nb_method_opts {
    const char *calib_path;  /* required: the text GPTQ will use */
    nb_corpus_opts corpus;   /* n_ctx 0: 512 */
    bool all_experts;        /* the driver's all_experts (more Hessian tokens per expert) */
    uint32_t sample_rows;    /* rows per weight in the ratio; 0: 64 */
} nb_method_opts;

typedef struct nb_method_info {
    int layer;               /* the block measured */
    size_t n_groups;         /* tensor groups with a ratio */
    uint64_t n_tokens;       /* tokens of the measurement pass (the work model uses the whole text's) */
    double seconds;          /* the measurement's wall time */
} nb_method_info;

/* Fill gptq_ratio, awq_ratio, awq_unit, sec_round, sec_gptq, sec_awq,
 * gptq_block and sec_pass of every planned tensor of s (measured on m by
 * nb_sens_measure). Errors: the engine's (an architecture it cannot run:
 * NB_ERR_UNSUPPORTED), the corpus', GPTQ's and AWQ's (named tensor). */
nb_status nb_method_measure(nb_model *m, nb_sens *s, const nb_method_opts *o, nb_method_info *info, nb_ctx *ctx);

#endif
