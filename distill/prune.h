/* distill/prune.h — drop Mixture-of-Experts experts (`nibble prune`).
 *
 * Input: a MoE model nibble's engine knows (mixtral = GGUF "llama" with
 * experts, qwen2moe with its shared expert, qwen3moe), in any format
 * nb_model_open reads, and expert routing statistics (calib/routing.h) of that
 * model: from a calibration run (calib/calibrate.h) or from the imatrix GGUF a
 * previous `nibble calibrate` wrote.
 *
 * Scores, per MoE layer L and expert e, over the calibration tokens:
 *   freq  n_sel[e] / n_tok                 selection frequency (share of tokens
 *                                          whose top-k contains e)
 *   reap  norm_sum[e] / n_sel[e]           REAP saliency (Lasby et al. 2025): the
 *                                          mean, over the tokens routed to e, of
 *                                          gate weight x ||f_e(x)||_2; 0 when e was
 *                                          never chosen
 * The plan keeps the `keep` highest-scoring experts of every layer (GGUF has
 * one expert_count for all layers) and drops the rest. Ties are broken
 * deterministically: at equal score the lower index is kept. Kept experts
 * keep their relative order: new expert j of layer L is old expert kept[j].
 *
 * Surgery (one streaming pass; every tensor written once, in the model's
 * order, with the metadata of the source plus the changes below):
 *   - per-expert tensors of a MoE layer have the expert on their last axis and
 *     are cut to the kept slices, copied as raw bytes (any element type: a
 *     slice of a stacked tensor is whole rows, so whole blocks):
 *       blk.L.ffn_{gate,up,down}_exps.*   ne = {in, out, X}  -> {in, out, keep}
 *       blk.L.ffn_gate_inp.weight         ne = {n_embd, X}   -> router rows
 *       blk.L.ffn_gate_inp.bias, blk.L.exp_probs_b.bias  ne = {X}
 *                                          (router biases, where a model has them)
 *     anything else (attention, norms, the shared expert *_shexp and its gate
 *     ffn_gate_inp_shexp, embeddings) is copied byte for byte;
 *   - "<arch>.expert_count" = keep (same value type as the source);
 *   - "<arch>.expert_used_count" is kept. keep < expert_used_count is refused
 *     unless reduce_topk is set, which lowers it to keep; then, for the qwen
 *     architectures whose expert width llama.cpp derives as
 *     feed_forward_length / expert_used_count when
 *     "<arch>.expert_feed_forward_length" is absent, that key is written with
 *     the width of the stored expert tensors so the width does not change;
 *   - renormalize_topk writes "<arch>.expert_weights_norm" = true, so the
 *     chosen experts' gate weights are rescaled to sum to 1. Without it, the
 *     router's softmax now runs over fewer experts and the chosen weights
 *     grow wherever a dropped expert had probability. Mixtral and qwen3moe
 *     renormalise anyway (nibble and llama.cpp): nothing is written for them.
 *     qwen2moe does not: nibble's engine honours the key, but llama.cpp's
 *     qwen2moe graph never reads it (llama.cpp reads expert_weights_norm only
 *     for architectures such as deepseek2), so such a file runs renormalised
 *     in nibble and not in llama.cpp; plan.norm_warning says so and the CLI
 *     prints it.
 * The output is GGUF, written atomically (nothing is left behind on error).
 * Memory: one tensor at most (only for sources without a zero-copy mapping,
 * e.g. HF directories whose experts must be stacked), else the mapping.
 *
 * Errors (all before any output exists): a model without experts ->
 * NB_ERR_UNSUPPORTED; statistics missing for a MoE layer, of another expert
 * count or layer count, or a layer without tokens -> NB_ERR_RANGE naming the
 * layer; keep > expert_count or keep < expert_used_count (without
 * reduce_topk) -> NB_ERR_RANGE; a per-expert tensor whose last axis is not
 * expert_count -> NB_ERR_FORMAT naming it and its shape.
 */
#ifndef NB_DISTILL_PRUNE_H
#define NB_DISTILL_PRUNE_H

#include "calib/routing.h"
#include "core/ctx.h"
#include "engine/ppl.h"
#include "formats/model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum nb_prune_criterion { NB_PRUNE_FREQ = 0, NB_PRUNE_REAP } nb_prune_criterion;

const char *nb_prune_criterion_name(nb_prune_criterion c);
/* "freq" / "frequency" / "reap"; false if unknown. */
bool nb_prune_criterion_from_name(const char *s, nb_prune_criterion *out);

typedef struct nb_prune_opts {
    int keep;                    /* experts kept per MoE layer (>= 1); 0: from keep_ratio */
    double keep_ratio;           /* with keep == 0: keep = ceil(keep_ratio x expert_count), in (0, 1] */
    nb_prune_criterion criterion;
    bool renormalize_topk;       /* write <arch>.expert_weights_norm = true (see above) */
    bool reduce_topk;            /* allow keep < expert_used_count: expert_used_count becomes keep */
} nb_prune_opts;

/* One expert of one layer, from the statistics. */
typedef struct nb_prune_expert {
    double n_sel;     /* tokens that chose it */
    double freq;      /* n_sel / n_tok */
    double gate_mean; /* mean gate weight when chosen (0 if never) */
    double reap;      /* mean gate x ||output||_2 when chosen (0 if never) */
    double score;     /* freq or reap, per the criterion */
} nb_prune_expert;

typedef struct nb_prune_layer {
    int layer;                /* block index */
    double n_tok;             /* calibration tokens the layer saw */
    nb_prune_expert *experts; /* [n_expert], by original index */
    int *kept;                /* [n_keep], ascending original indices */
    int *dropped;             /* [n_expert - n_keep], ascending */
} nb_prune_layer;

typedef struct nb_prune_plan {
    char arch[64];            /* general.architecture (metadata key prefix) */
    int n_expert;             /* before */
    int n_keep;               /* after */
    int n_used;               /* expert_used_count before */
    int n_used_new;           /* after (== n_used unless reduce_topk lowered it) */
    nb_prune_criterion criterion;
    bool write_norm_key;      /* renormalize_topk: <arch>.expert_weights_norm written */
    bool already_normalized;  /* the architecture renormalises the top-k anyway */
    bool write_ff_exp_key;    /* <arch>.expert_feed_forward_length written (= ff_exp) */
    uint32_t ff_exp;          /* width of the expert tensors (ffn_gate_exps ne[1]) */
    char norm_warning[256];   /* non-empty: a caveat the user must see */
    int n_layer;              /* MoE layers in the plan */
    nb_prune_layer *layers;   /* [n_layer], ascending block index */
} nb_prune_plan;

/* Build and validate the plan for model m from routing statistics rt (see the
 * errors above). *plan is zeroed first; free with nb_prune_plan_free (also
 * after a failure). */
nb_status nb_prune_plan_build(const nb_model *m, const nb_routing *rt, const nb_prune_opts *o, nb_prune_plan *plan,
                              nb_ctx *ctx);
void nb_prune_plan_free(nb_prune_plan *p); /* NULL-safe */
/* order[0..n_expert): the experts of MoE block `layer` from most to least
 * worth keeping by criterion c, the order nb_prune_plan_build keeps them in
 * (score descending, the lower index first at a tie). false: no statistics
 * for the layer, another expert count, or out of memory. */
bool nb_prune_rank(const nb_routing *rt, int layer, nb_prune_criterion c, int *order, int n_expert);
/* The checks of nb_prune_plan_build that need no statistics (a MoE model of a
 * supported architecture, the keep count): run them before a calibration. */
nb_status nb_prune_check_model(const nb_model *m, const nb_prune_opts *o, nb_ctx *ctx);

/* Read routing statistics from an imatrix GGUF written by `nibble calibrate`
 * (calib/imatrix.h). A file without them (llama.cpp's imatrix, a .dat file,
 * a dense model's statistics) -> NB_ERR_RANGE saying so. rt is initialised
 * here (free with nb_routing_free, also on failure). */
nb_status nb_prune_load_stats(const char *path, nb_routing *rt, nb_ctx *ctx);

typedef struct nb_prune_result {
    size_t n_tensors;         /* tensors written */
    size_t n_sliced;          /* of which cut to the kept experts */
    uint64_t bytes_in;        /* source tensor bytes */
    uint64_t bytes_out;       /* output file size */
    double seconds;
    unsigned char sha256[32];
} nb_prune_result;

/* Write the pruned model to dst (GGUF, atomic). m must be the model the plan
 * was built for. dst naming the source file -> NB_ERR_INVALID. */
nb_status nb_prune_write(nb_model *m, const nb_prune_plan *plan, const char *dst, nb_prune_result *r, nb_ctx *ctx);

/* ---- evaluation: the pruned model against the original ------------------------ */

typedef struct nb_prune_eval_opts {
    const char *text_path;    /* UTF-8 evaluation text (>= 2 x n_ctx tokens) */
    int n_ctx;                /* 0: 512 */
    int n_chunks;             /* <= 0: all */
    const char *tmp_path;     /* base log-prob file (removed afterwards); NULL: "<pruned>.base-logprobs" */
} nb_prune_eval_opts;

typedef struct nb_prune_eval {
    nb_ppl_result base;       /* original model: PPL */
    nb_ppl_result pruned;     /* pruned model: PPL and KLD(original || pruned) in .kld */
} nb_prune_eval;

/* Perplexity of both models on the text with llama-perplexity's method and
 * the KL-divergence of the pruned model against the original (engine/ppl.h).
 * Free *out with nb_prune_eval_free (also on failure). */
nb_status nb_prune_evaluate(const char *orig_path, const char *pruned_path, const nb_prune_eval_opts *o,
                            nb_prune_eval *out, nb_ctx *ctx);
void nb_prune_eval_free(nb_prune_eval *ev); /* NULL-safe */

/* The report as JSON (malloc'd; NULL when out of memory): model, output,
 * criterion, expert counts, per layer kept and dropped experts with their
 * statistics, and, when given, the write result and the evaluation. */
char *nb_prune_report_json(const nb_prune_plan *p, const char *model, const char *dst, const nb_prune_result *r,
                           const nb_prune_eval *ev);

#endif
