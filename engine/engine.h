/* engine/engine.h — the validation engine: a forward pass on packed weights.
 *
 * Opens a model (GGUF, or anything nb_model_open reads, as long as the
 * metadata names a supported architecture), keeps the weights where they are
 * (mmapped, any type of the type table), and evaluates token batches with a
 * KV cache. Memory: weights (mapped) + KV cache + scratch for one batch.
 *
 * Supported architectures (general.architecture): llama (also mistral layout),
 * qwen2, qwen3, qwen2moe, qwen3moe, gemma3; MoE variants of llama (mixtral).
 * Anything else is refused with NB_ERR_UNSUPPORTED naming what is missing.
 *
 * Determinism: results are bit-identical at any thread count.
 *
 * Numerics: activations are F32, the KV cache F32 unless nb_engine_opts.kv_type
 * asks for llama.cpp's F16 (its default) or Q8_0; norms accumulate in double; the graph follows llama.cpp's per
 * architecture (rope layout, MoE renormalisation, Gemma 3's local/global
 * layers). docs/engine.md lists the details and the known differences.
 */
#ifndef NB_ENGINE_ENGINE_H
#define NB_ENGINE_ENGINE_H

#include "core/ctx.h"
#include "formats/model.h"

#include <stdint.h>

typedef struct nb_engine nb_engine;

/* Element type of the KV cache (nb_engine_opts.kv_type). llama.cpp's
 * arithmetic is followed for each (docs/engine.md):
 *   F32   keys and values as computed (nibble's default)
 *   F16   keys and values rounded to F16; q rounded to F16 for q.k and the
 *         attention weights rounded to F16 for the sum over V (llama.cpp's
 *         default cache and its non-flash-attention path)
 *   Q8_0  keys and values in ggml's Q8_0 blocks (32 values, F16 scale); q
 *         quantized to Q8_0 for q.k, V dequantized and summed in F32
 *         (llama.cpp's flash-attention path, which a Q8_0 V cache needs);
 *         the head size must be a multiple of 32 */
typedef enum nb_cache_type { NB_CACHE_F32 = 0, NB_CACHE_F16, NB_CACHE_Q8_0 } nb_cache_type;

/* "f32", "f16", "q8_0" -> *out; false for anything else. */
bool nb_cache_type_from_name(const char *name, nb_cache_type *out);
const char *nb_cache_type_name(nb_cache_type t);

typedef struct nb_engine_opts {
    int n_ctx;      /* KV cache length in tokens (0: 512) */
    int n_batch;    /* tokens per forward pass: scratch is sized for this many; an eval
                       call with more tokens runs in sub-batches (0: min(n_ctx, 512)) */
    int n_threads;  /* 0: ctx->n_threads */
    bool precise;   /* reference arithmetic: every matmul dequantizes the weight rows and takes
                       F32 dots with the F32 activations (nb_matmul_ref) instead of the fast
                       kernels' 8-bit activations; slower, and its error sits far below any
                       quantization's, so use it for base log-probs and KLD (docs/engine.md) */
    nb_cache_type kv_type; /* KV cache element type (0: F32) */
} nb_engine_opts;

/* ---- calibration hooks (calib/ builds on these) ------------------------------ */

/* Called with the input activations of every matmul: `name` is the weight
 * tensor's GGUF name, x is n_tok x n_in floats (row-major). For MoE expert
 * tensors (3-D `*_exps`), `expert` is the expert index and x holds only the
 * rows of tokens routed to it (with nb_engine_set_all_experts: every token of the batch,
 * in order); otherwise expert = -1. The pointers are
 * borrowed for the duration of the call. Called from the evaluating thread only.
 * Every matmul of the graph is reported, the router (ffn_gate_inp) and the
 * output projection included ("token_embd.weight" when the embeddings are
 * tied); the output's input is reported even when eval's logits is NULL. */
typedef void (*nb_matmul_hook)(void *user, const char *name, int expert, const float *x, int64_t n_tok,
                               int64_t n_in);
/* Called once per MoE layer per batch: for each of n_tok tokens, n_used
 * chosen experts (ids, n_tok x n_used) and their gate weights (after any
 * normalisation, n_tok x n_used). */
typedef void (*nb_route_hook)(void *user, int layer, const int32_t *experts, const float *weights,
                              int64_t n_tok, int n_used, int n_expert);

typedef struct nb_engine_hooks {
    nb_matmul_hook on_matmul;
    nb_route_hook on_route;
    void *user;
} nb_engine_hooks;

/* Open from a path (nb_model_open) — the engine owns the model.
 * Errors: NB_ERR_UNSUPPORTED for an unknown architecture (the message lists
 * the supported ones); NB_ERR_FORMAT for a missing metadata key or tensor
 * (named) or a tensor whose shape the graph cannot use (both shapes given);
 * NB_ERR_INVALID for bad options. */
nb_status nb_engine_open(const char *path, const nb_engine_opts *o, nb_engine **out, nb_ctx *ctx);
/* Open on an already-open model (borrowed: must outlive the engine). */
nb_status nb_engine_open_model(nb_model *m, const nb_engine_opts *o, nb_engine **out, nb_ctx *ctx);
void nb_engine_free(nb_engine *e); /* NULL-safe */

int nb_engine_n_vocab(const nb_engine *e);
int nb_engine_n_ctx(const nb_engine *e);
const nb_model *nb_engine_model(const nb_engine *e);
void nb_engine_set_hooks(nb_engine *e, const nb_engine_hooks *h); /* NULL clears */
/* Calibration (llm-compressor's "all experts"): every MoE expert also runs on
 * the tokens the router did not choose for it, so on_matmul sees every
 * expert's inputs for every token; the outputs are unchanged (the MoE layers
 * cost n_expert / n_expert_used times more). Off by default. */
void nb_engine_set_all_experts(nb_engine *e, bool on);

/* Forget the KV cache (next eval starts at position 0). */
void nb_engine_reset(nb_engine *e);
/* Evaluate n tokens at positions [pos, pos+n) (pos <= tokens already in the
 * cache: an earlier pos forgets what lies beyond it; pos + n <= n_ctx).
 * logits: NULL (the output projection is skipped), or n x n_vocab floats
 * receiving the logits of every token (row-major). Token ids outside the
 * vocabulary and a full context are NB_ERR_RANGE. An encoder (gemma-embedding:
 * bidirectional attention) takes a whole text per call: pos 0 and n <= n_batch,
 * else NB_ERR_INVALID. */
nb_status nb_engine_eval(nb_engine *e, const int32_t *tokens, int n, int pos, float *logits, nb_ctx *ctx);

#endif
