/* quant/budget.h — the size-budget planner: a type per tensor that minimises
 * the predicted quality loss under a byte budget (`nibble plan`, `nibble
 * quantize --target-size / --target-bpw / --budget`). docs/planner.md.
 *
 * Two steps, so a budget sweep measures once:
 *
 * 1. Sensitivity (nb_sens_measure). For every quantizable tensor (quant/mix.h
 *    nb_mix_tensor_quantizable) and every candidate type of the runtime
 *    (llama.cpp: Q2_K Q3_K Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K Q8_0 IQ4_NL
 *    IQ4_XS F16; nibble adds NF4 and INT4 g64/g128; plus the source type itself
 *    when it is F16/BF16 or a quantized type the runtime loads, at error 0):
 *      err = Σ_slices w_s · (rows_s / sampled_s) · Σ_sampled rows Σ_j imp_j (x_j - q(x)_j)²
 *    the importance-weighted squared error of quantize -> dequantize on a
 *    deterministic sample of rows (evenly spaced; `sample_rows` per tensor,
 *    at least 4 per expert slice), quantized with the same importance the
 *    writer will use. imp_j is the importance callback's weight (imatrix:
 *    E[x_j²], so err estimates E‖ΔWx‖² per token); a tensor without one gets
 *    `default_importance` for every column. w_s is 1 for dense tensors and the
 *    expert's routing frequency for a slice of a stacked expert tensor (the
 *    slice_weight callback, e.g. calib/ routing statistics; without it
 *    n_used / n_expert), so rarely routed experts get fewer bits. Embedding
 *    tables (token_embd) are looked up one row per token: their err is divided
 *    by the row count, unless the model has no output.weight (tied
 *    embeddings: the table is the output projection too). A candidate whose block does not divide the row length
 *    is dropped, never replaced by a fallback.
 *    Relative errors: in an architecture whose every block output is
 *    normalised before it reaches the residual stream (NB_ARCH_F_SANDWICH:
 *    Gemma 3 and EmbeddingGemma: q/k through their per-head norms, attn_v and
 *    attn_output through the post-attention norm, the FFN through the post-FFN
 *    norm; an encoder's dense_* through the final L2 normalisation) an error
 *    costs the output in proportion to the tensor's own output, not in
 *    absolute terms; there every blk.* and dense_* tensor's err is divided by
 *    its energy Σ_slices w_s · (rows_s / sampled_s) · Σ Σ imp_j x_j² (the same
 *    sample and weights), so err reads as the relative output error.
 *    Memory: one source tensor at a
 *    time (none when the source is mapped) plus the sampled rows.
 *    Deterministic for any thread count (candidates run in parallel, each
 *    accumulates in double in a fixed order).
 *
 * 2. Allocation (nb_budget_plan). Per tensor, the Pareto frontier of
 *    (cost, err) and its lower convex hull; every tensor starts at its
 *    cheapest point, then the hull steps of all tensors are taken in
 *    decreasing order of err saved per byte (ties: tensor order), each when it
 *    fits in what is left (a tensor whose step does not fit takes no further
 *    step in that pass); a second pass gives each tensor, in order, the
 *    lowest-err frontier point that still fits. Because each decision is
 *    "take it if it fits" in an order fixed by the measurement, a smaller
 *    budget never gives a larger result. The plan's why is NB_PLAN_BUDGET, its
 *    pred_err the chosen candidate's err, mix "budget", no file_type.
 *
 * Budgets (nb_budget.kind), all in bytes of the final artefact:
 *   FILE    the GGUF file nb_quantize_model writes: header + every tensor's
 *           bytes padded to the alignment (exact: the planner sizes the same
 *           header the writer writes);
 *   BPW     Σ tensor bytes · 8 / Σ elements <= bpw (the plan's bpw_out);
 *   MEMORY  padded tensor bytes + KV + compute + overhead (quant/memory.h).
 * A budget the cheapest candidates miss is NB_ERR_RANGE naming the smallest
 * achievable value (and, for a MoE, the largest number of experts per layer
 * that would fit, with its exact size).
 *
 * Pruning (allow_prune, MoE only, and only when the budget cannot be met with
 * every expert): for each keep count K from expert_count - 1 down to
 * expert_used_count whose cheapest types fit, the experts to keep are the
 * first K of the ranking callback (distill/prune.h's criterion over routing
 * statistics) in every MoE layer; the allocation above runs on the pruned
 * tensors (expert stacks and routers cut to K: exact bytes), and the
 * predicted loss is the kept slices' err plus, for every dropped expert, its
 * drop loss: the routing-weighted importance-weighted energy Σ imp_j x_j² of
 * its rows (what a zero output would cost; an upper bound, as the router
 * sends its tokens elsewhere). The K with the least predicted loss wins (ties:
 * the larger K). The plan then carries the keep-N decision (quant/plan.h
 * nb_plan_prune) and the pruned model's tensors.
 *
 * Mixed methods (nb_budget.methods; docs/planner.md "Methods per tensor").
 * After the types are chosen (under imatrix rounding's errors, as above),
 * each planned tensor gets a method: GPTQ or importance-weighted rounding.
 * Its GPTQ error is predicted as err × gptq_ratio (the ratio of GPTQ's to
 * rounding's layer-output error for that tensor group and type, measured on
 * sampled rows of one block with that block's Hessians: calib/budget_method.h),
 * its work as sec_gptq - sec_round predicted seconds, plus sec_pass for its
 * block's sequential passes when no other tensor of that block took GPTQ yet
 * (the driver skips the passes of a block without GPTQ tensors). Greedily,
 * the tensor whose saved loss err (1 - ratio) per marginal second is largest
 * takes GPTQ next (ties: tensor order): with method_seconds > 0 while it
 * still fits in that many predicted seconds (one that does not is passed
 * over), else while its saving exceeds method_lambda × its marginal seconds
 * (lambda 0: every tensor GPTQ is predicted to help). An expert stack (not
 * pruned) is chosen per expert: expert s saves slice_err[s] (1 - ratio) for
 * (sec_gptq - sec_round) / n_slices, and a stack with only some experts by
 * GPTQ lists them in the plan (nb_plan_tensor.gptq_experts).
 * The plan's tensors then carry their method (NB_PLAN_METHOD_GPTQ or
 * NB_PLAN_METHOD_IMATRIX) and pred_err the chosen method's prediction; the
 * bytes are those of the types alone, so a mixed plan and the imatrix plan of
 * the same budget are the same size.
 */
#ifndef NB_QUANT_BUDGET_H
#define NB_QUANT_BUDGET_H

#include "core/ctx.h"
#include "formats/model.h"
#include "quant/memory.h"
#include "quant/plan.h"
#include "quant/quantize.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NB_SENS_DEFAULT_ROWS 64u
#define NB_SENS_MAX_CANDS 20

/* Weight of expert slice `slice` of the stacked tensor `name` (its routing
 * frequency: the fraction of tokens sent to it). Negative: unknown (the
 * default n_used / n_expert applies). */
typedef double (*nb_slice_weight_fn)(void *user, const char *name, int64_t slice);

typedef struct nb_sens_opts {
    nb_runtime runtime;
    uint32_t sample_rows;           /* rows per tensor; 0: NB_SENS_DEFAULT_ROWS */
    nb_importance_fn importance;    /* may be NULL: unweighted */
    void *importance_user;
    double default_importance;      /* weight of every column of a tensor without importance; 0: 1 */
    nb_slice_weight_fn slice_weight; /* may be NULL */
    void *slice_weight_user;
    const char *state_path;         /* resumable measurement: a journal of measured tensors (NULL: none);
                                       see below */
} nb_sens_opts;

typedef struct nb_sens_cand {
    nb_type type;
    uint64_t bytes;  /* exact tensor bytes */
    double err;      /* predicted error (see above) */
} nb_sens_cand;

typedef struct nb_sens_tensor {
    bool planned;    /* quantizable: the planner chooses its type */
    bool expert;     /* a stacked expert tensor */
    int layer;       /* expert: its block index */
    uint32_t n_slices; /* expert: experts in the stack (slice_* below); else 0 */
    size_t n_cands;  /* Pareto frontier, ascending bytes, descending err */
    nb_sens_cand cands[NB_SENS_MAX_CANDS];
    double *slice_err;  /* expert: [n_cands x n_slices] err of candidate k on slice s (Σ_s = cands[k].err) */
    double *slice_drop; /* expert: [n_slices] err of dropping the slice (routing-weighted Σ imp x²) */
    /* mixed methods (filled by calib/budget_method.h; not journaled): GPTQ's error as a fraction of
       importance-weighted rounding's, per frontier candidate (0: not measured, or GPTQ cannot do the
       type), and each method's predicted seconds for this tensor */
    double gptq_ratio[NB_SENS_MAX_CANDS];
    double sec_round, sec_gptq; /* the tensor's own work (GPTQ: without the block's passes) */
    int gptq_block;             /* the block whose sequential passes GPTQ (or AWQ) on it needs (-1: none) */
    double sec_pass;            /* those passes' seconds, paid once per block with a GPTQ or AWQ tensor */
    /* AWQ (calib/awq.h): its error as a fraction of importance-weighted rounding's, per frontier
       candidate, measured on the group where the tensor reads the scaled input (0: not measured: no
       gain predicted); its predicted seconds; 1 + the index of the first tensor of its unit (a block's
       attention or FFN, chosen as a whole: the scales are shared by all readers of an input), 0: AWQ
       does not apply */
    double awq_ratio[NB_SENS_MAX_CANDS];
    double sec_awq;
    size_t awq_unit;
} nb_sens_tensor;

typedef struct nb_sens {
    size_t n_tensors;
    nb_sens_tensor *tensors; /* [n_tensors], the model's order */
    nb_runtime runtime;
    uint64_t header_bytes;   /* the writer's GGUF header, padded */
    uint32_t alignment;
    uint32_t n_expert;       /* experts per MoE layer (0: dense) */
    uint32_t n_expert_used;  /* experts per token (1 for a dense model) */
    size_t n_resumed;        /* tensors read from the journal instead of measured */
    size_t n_relative;       /* tensors whose errors are relative (see "Relative errors" above) */
    double seconds;
} nb_sens;

/* Resumable measurement (o->state_path): every measured tensor is appended to
 * a journal (quant/budget_state.c) keyed by a SHA-256 over nibble's version,
 * the source's size and tensor fingerprint, the options (runtime, sample
 * rows, default importance) and every importance vector and expert weight the
 * measurement uses. A rerun with the same key reads the journal and measures
 * only the tensors it lacks, with the same numbers (errors are stored
 * exactly), so an interrupted plan resumes to the same plan; a finished
 * journal makes a budget sweep measure once. A journal of another key is
 * refused (NB_ERR_RANGE: remove it or name another file), a damaged one is
 * NB_ERR_FORMAT naming the line; one in use by another process is NB_ERR_IO.
 *
 * Measure every quantizable tensor of m (see above). s must be freed with
 * nb_sens_free (also after a failure). Errors: reading the source,
 * NB_ERR_UNSUPPORTED when a tensor's source type cannot be dequantized,
 * NB_ERR_RANGE for NaN/Inf in a sampled row or a tensor no candidate fits. */
nb_status nb_sens_measure(nb_model *m, const nb_sens_opts *o, nb_sens *s, nb_ctx *ctx);
void nb_sens_free(nb_sens *s);

/* The error measure of nb_sens_measure over every row instead of a sample,
 * for the types plan p chose (p made by nb_budget_plan for m, bound with
 * nb_plan_bind): err[i] for tensors the planner chose, NAN for the others,
 * 0 for a kept source type. What the planner's sampled prediction is
 * compared with (build's report). Memory: one tensor in F32 plus its
 * quantized and dequantized copies. */
nb_status nb_sens_measure_plan(nb_model *m, const nb_sens_opts *o, const nb_plan *p, double *err, nb_ctx *ctx);

typedef enum nb_budget_kind {
    NB_BUDGET_NONE = 0,
    NB_BUDGET_FILE,   /* bytes: file size */
    NB_BUDGET_BPW,    /* bpw */
    NB_BUDGET_MEMORY  /* bytes: weights + KV + compute + overhead at mem.n_ctx */
} nb_budget_kind;

/* The experts of MoE block `layer` from most to least worth keeping:
 * order[0..n_expert). false: no ranking for that layer. */
typedef bool (*nb_expert_rank_fn)(void *user, int layer, int *order, int n_expert);

typedef struct nb_budget {
    nb_budget_kind kind;
    uint64_t bytes;
    double bpw;
    nb_mem_opts mem;  /* MEMORY: context, KV type, runtime, overhead */
    bool allow_prune; /* MoE: keep fewer experts when every expert cannot fit (see above) */
    nb_expert_rank_fn rank;    /* required with allow_prune */
    void *rank_user;
    const char *prune_criterion; /* recorded in the plan ("reap" when NULL) */
    bool methods;                /* choose GPTQ or imatrix rounding per tensor (mixed methods, see above) */
    double method_seconds;       /* > 0: at most this many predicted seconds of GPTQ work beyond rounding */
    double method_lambda;        /* method_seconds 0: GPTQ where saved loss > lambda x extra seconds */
    const nb_rules *pins;        /* may be NULL: tensors a rule names keep the rule's type (their bytes are
                                    fixed; mark them !planned in the nb_sens first: nb_sens_pin) */
} nb_budget;

typedef struct nb_budget_result {
    nb_budget_kind kind;
    uint64_t file_bytes;     /* predicted file size: exactly what nb_quantize_model writes */
    uint64_t weight_bytes;   /* tensor bytes padded to the alignment (the runtime's weights) */
    uint64_t tensor_bytes;   /* tensor bytes unpadded (the plan's bytes_out) */
    double bpw;              /* tensor_bytes * 8 / elements */
    nb_mem_est mem;          /* MEMORY only */
    uint64_t total_bytes;    /* MEMORY: weight + KV + compute + overhead; FILE: file; BPW: tensor bytes */
    uint64_t limit_bytes;    /* the budget in total_bytes' unit */
    double pred_loss;        /* Σ err of the chosen candidates (+ drop_loss) */
    double drop_loss;        /* pruned: Σ drop loss of the dropped experts */
    uint32_t keep, n_expert; /* pruned: experts kept per layer of n_expert (keep 0: not pruned) */
    size_t n_planned;
    bool methods;            /* mixed methods chosen */
    size_t n_gptq;           /* tensors given GPTQ */
    size_t n_awq;            /* tensors given AWQ (whole units) */
    double sec_methods;      /* predicted seconds of the chosen methods (rounding + GPTQ) */
    double sec_all_gptq;     /* ... had every tensor GPTQ could help taken it */
    double sec_all_round;    /* ... had every tensor been rounded */
    double pred_loss_round;  /* pred_loss with every tensor rounded (the imatrix plan's) */
    const char *loss_unit;   /* what pred_loss measures, for the table (static; NULL: importance-weighted
                                squared error); set by the caller that calibrated or measured relatively */
} nb_budget_result;

/* Pinned tensors: every planned tensor of s that a rule of `pins` names
 * (quant/mix.h rules, as `--rule PAT=TYPE` spells them) is marked not planned,
 * so the allocation spends the budget on the others while the pinned ones keep
 * the rule's type (pass the same rules as nb_budget.pins). *n_pinned (may be
 * NULL) receives their count. Errors: those of nb_plan_make. */
nb_status nb_sens_pin(const nb_model *m, nb_sens *s, const nb_rules *pins, size_t *n_pinned, nb_ctx *ctx);

/* The mean bits per weight budget b leaves the planned tensors of s (what
 * is left after the header or the memory estimate and the fixed tensors,
 * over the planned elements, alignment padding aside); 0 when nothing is
 * left. A calibration measures near it (calib/budget_calib.h). */
nb_status nb_budget_planned_bpw(const nb_model *m, const nb_sens *s, const nb_budget *b, double *bpw, nb_ctx *ctx);

/* Make the plan for budget b from measured s (m is the model s was measured
 * on). p is filled on success (free with nb_plan_free, also after failure).
 * Errors: NB_ERR_RANGE when even the cheapest types miss the budget (one line
 * with the smallest achievable size), those of nb_mem_estimate (MEMORY). */
nb_status nb_budget_plan(const nb_model *m, const nb_sens *s, const nb_budget *b, nb_plan *p,
                         nb_budget_result *r, nb_ctx *ctx);

/* Print a plan as a table per tensor group (the name without "blk.N."):
 * tensors, type(s), bits per weight, bytes, predicted loss; then the totals of
 * r (file, KV, compute, total vs budget). */
void nb_budget_print(FILE *f, const nb_plan *p, const nb_budget_result *r, const nb_budget *b);
/* The totals of r as a JSON object text (malloc'd; NULL on allocation failure). */
char *nb_budget_result_json(const nb_budget_result *r, const nb_budget *b);

#endif
