/* calib/gptq_model.h — GPTQ over a whole model, layer by layer (sequential),
 * what `nibble quantize --method gptq` runs.
 *
 * Method. The caller's plan (quant/plan.h) gives every tensor its type (the
 * same plan plain rounding would apply). Then, for each block L = 0 .. n_layer-1:
 *
 *   1. a *view* of the model is built: the source's tensors and metadata, except
 *      that every tensor already quantized (blocks < L, and token_embd) points
 *      at its quantized bytes, and the block count is L + 1 so the engine
 *      evaluates blocks 0..L only (the output projection is skipped: no logits
 *      are asked for). The engine runs on this view, so block L's inputs are
 *      produced by the quantized earlier blocks, as GPTQ's sequential method
 *      wants (block L itself still has its source weights: the inputs of
 *      attn_output / ffn_down are those of the unquantized block — GPTQ without
 *      "true-sequential", as in the reference scripts' default);
 *   2. every calibration chunk is evaluated from an empty KV cache; the
 *      engine's on_matmul hook hands the input rows of each block-L matmul,
 *      which are accumulated into H = 2 XᵀX / n (calib/gptq.h, double, in call
 *      order): per weight tensor, per expert for stacked expert tensors (only
 *      the rows routed to that expert). Weights whose inputs are the same rows
 *      (q/k/v, gate/up) share one Hessian (detected by a content hash of every
 *      call's input, verified on every call);
 *   3. each block-L weight whose planned type GPTQ supports (nb_gptq_supported)
 *      and whose plan method is gptq or the job's (a plan with methods per
 *      tensor: only those; of an expert stack with a gptq_experts list, only
 *      the listed experts get a Hessian and GPTQ, the others are rounded)
 *      is quantized with nb_gptq_quantize on its own Hessian; the importance
 *      for the types' scale search is the imatrix's (qo->importance) when it
 *      has an entry, else H's diagonal (Σx²/n of the same activations). Other
 *      quantized tensors of the block (types GPTQ does not support, e.g.
 *      NF4_DQ; weights the engine never called; experts that received no
 *      calibration token) are rounded as plain rounding would (with the
 *      imatrix when given), with a warning naming each expert without tokens;
 *   4. the block's quantized bytes are appended to a scratch file (created
 *      next to the output and unlinked at once, so nothing is left behind
 *      even after a crash) and the file is mapped again read-only for the
 *      next view.
 *
 *   token_embd (when quantized) is rounded plainly before block 0 so that the
 *   views use the embeddings the output file will have. Tensors outside the
 *   blocks (output.weight ...) and routers are left to the normal pipeline
 *   (routers are never quantized: the mixes keep ffn_gate_inp in float).
 *   Finally nb_quantize_model writes the output in one streaming pass, taking
 *   the scratch bytes for every tensor already quantized (nb_quant_opts.
 *   prequant), so metadata, order, report and JSON are those of any quantize.
 *
 * Cost: block L needs a forward pass through blocks 0..L for every chunk, so
 * the calibration work is n_layer (n_layer + 1) / 2 block passes (the engine
 * cannot resume from a saved residual stream); GPTQ itself is one dense
 * n_in³ factorisation per Hessian plus n_rows n_in² per weight.
 *
 * Sources: a GGUF source is mapped, so a view costs nothing to build; a
 * source without zero-copy tensors (an HF directory whose experts are stacked
 * on read, ...) is re-read by the engine for every view — convert it to GGUF
 * first for anything large.
 *
 * Memory: the source (mapped) + the engine's KV cache and batch scratch + the
 * Hessians of ONE block (n_in² doubles per distinct input, per expert for MoE:
 * 4096² x 8 = 128 MiB per Hessian; a 128-expert layer with n_in 2048 needs
 * 128 x 32 MiB) + one weight tensor in F32 and double while it is quantized.
 * Quantized blocks live in the scratch file (file-backed pages), never in
 * anonymous memory; never the model's activations.
 *
 * Determinism: the engine is bit-identical at any thread count, Hessians
 * accumulate in call order, GPTQ and plain rounding are row-parallel with
 * per-row arithmetic, so the output bytes do not depend on the thread count.
 *
 * Exception to the view truncation: architectures whose attention scale
 * depends on the block count (the arch row's attn_scale rule: Gemma 3 27B's
 * 62 layers), where the view keeps the full block count and blocks > L run
 * with their source weights (twice the work, same result).
 */
#ifndef NB_CALIB_GPTQ_MODEL_H
#define NB_CALIB_GPTQ_MODEL_H

#include "calib/corpus.h"
#include "calib/gptq.h"
#include "calib/imatrix.h"
#include "quant/quantize.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct nb_gptq_model_opts {
    const char *calib_path;   /* required: text or token ids (calib/corpus.h) */
    nb_corpus_opts corpus;    /* n_ctx 0: 512 */
    nb_gptq_opts gptq;        /* damp, block, act_order, static_groups (imp is set per tensor) */
    const char *scratch_dir;  /* NULL: the output's directory */
    bool compare_rtn;         /* fill err_rtn: plain rounding's error under the same Hessian (costs a rounding
                                 and one quadratic form per weight) */
    bool awq;                 /* AWQ scales (calib/awq.h) per block before the quantization, folded into the
                                 preceding norm / linear (see below) */
    bool no_gptq;             /* quantize with the types' rounding instead of GPTQ (AWQ alone); then any
                                 type with a quantizer is a target (F16 too: tests check the folding) */
    double awq_alpha;         /* > 0: use this alpha for every group instead of searching (tests) */
    bool all_experts;         /* every MoE expert's Hessian from every token (nb_engine_set_all_experts), so
                                 no expert is left to plain rounding for want of tokens */
} nb_gptq_model_opts;

/* Per GPTQ-quantized weight (or expert slice: `expert` >= 0). err_* are the
 * layer-output errors on the calibration inputs, Σ_rows (w - q) H (w - q)ᵀ / 2
 * = ‖X (W - Q)ᵀ‖² / n with H = 2 XᵀX / n; err_w is ‖X Wᵀ‖² / n for scale. */
typedef struct nb_gptq_tensor_stat {
    char name[NB_MAX_NAME + 1];
    int expert;
    nb_type type;
    uint64_t n_tok;
    double err_gptq, err_rtn, err_w; /* err_rtn: -1 unless compare_rtn */
    int damp_retries;
    int64_t n_dead;
} nb_gptq_tensor_stat;

typedef struct nb_gptq_model_result {
    int n_layer;
    size_t n_chunks;
    uint64_t n_tokens;        /* per pass */
    size_t n_gptq;            /* weights (expert slices counted singly) quantized by GPTQ */
    size_t n_rtn;             /* block weights rounded plainly for want of GPTQ (unsupported type, no data) */
    size_t n_plan_rounded;    /* block weights a plan with methods gives to imatrix (or rtn) rounding */
    size_t n_awq_groups;      /* AWQ groups searched */
    size_t n_awq_scaled;      /* ... of which scaled (alpha > 0 won) */
    double awq_expert_err;    /* MoE: Σ over the experts' up -> down groups of the searched output error */
    double awq_expert_err_plain; /* ... and of plain rounding (alpha 0) on the same rows */
    double awq_norm_err;      /* MoE: Σ over the FFN-input groups (norm -> every expert's gate/up, shared
                                 experts', routers) of the searched output error, on the pooled statistics */
    double awq_norm_err_plain; /* ... and of plain rounding (alpha 0) on the same rows */
    size_t n_awq_weights;     /* a plan with methods: weight slices of its "awq" tensors rounded after the
                                 scaling (counted here, not in n_gptq) */
    int64_t n_zero_experts;   /* expert slices without a calibration token (rounded plainly) */
    double seconds_calib;     /* forward passes + Hessian accumulation */
    double seconds_gptq;
    size_t n_stats;
    nb_gptq_tensor_stat *stats; /* [n_stats], in processing order */
    nb_quant_result quant;    /* the final write (nb_quantize_model's result) */
} nb_gptq_model_result;

/* Quantize src to the GGUF file dst with sequential GPTQ, the types from
 * `plan` (nb_plan_make / nb_plan_resolve; checked with nb_plan_bind). qo is the
 * normal quantize options (report ...; qo->importance may carry an imatrix
 * adapter for the tensors rounded plainly; prequant must be NULL).
 * `r` is filled (also on failure, as far as it got): free it with
 * nb_gptq_model_result_free. Errors: those of nb_quantize_model, the corpus,
 * the engine, nb_gptq_quantize (named tensor); an architecture the engine
 * cannot run -> NB_ERR_UNSUPPORTED; a plan for another model -> NB_ERR_INVALID. */
nb_status nb_gptq_quantize_model(const char *src, const char *dst, const nb_plan *plan, const nb_quant_opts *qo,
                                 const nb_gptq_model_opts *go, nb_gptq_model_result *r, nb_ctx *ctx);
void nb_gptq_model_result_free(nb_gptq_model_result *r);

#endif
