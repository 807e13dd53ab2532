/* quant/memory.h — what a runtime needs in memory to run a model: the
 * planner's memory model (quant/budget.h uses it for `--budget`).
 *
 *   total = weights + KV cache + compute buffers + overhead
 *
 * weights  exact: the plan's tensor bytes, each padded to the file's alignment
 *          (what llama.cpp maps or loads; the planner supplies it).
 * KV       per layer  n_kv_heads x head_dim x 2 (K and V) x cells, in the KV
 *          type's row bytes from the type table (f16: 2 B/element; q8_0:
 *          34 B per 32; q4_0: 18 B per 32). llama.cpp: cells = n_ctx padded
 *          up to 256 for global layers; a sliding-window layer (the arch
 *          row's swa_period, formats/arch.h) holds
 *          min(cells, pad(window + n_ubatch, 256)), as llama.cpp's tools do
 *          (its C API's default swa_full = true, which llama-cpp-python
 *          keeps, gives those layers full-size caches instead). nibble's
 *          engine keeps F32 K/V for n_ctx cells in every layer
 *          (engine/engine_impl.h).
 * compute  an estimate of the scratch the runtime allocates for one
 *          micro-batch of ub = n_ubatch tokens (llama.cpp reserves its graph
 *          for the worst case: every token an output, no flash attention),
 *          F32, the largest of two phases:
 *            a layer   4 x [n_embd x ub] (residual, norm, branch) + the larger
 *                      of attention (scores [cells x ub x n_head] + mask
 *                      [cells x ub] + q, k, v) and the FFN hidden states
 *                      (2 x [n_ff x ub], experts: x n_used);
 *            the head  logits [n_vocab x ub] + 2 x [n_embd x ub];
 *          plus llama.cpp's output buffer (n_vocab for one sequence).
 *          A model of llama.cpp's allocator, not the allocator: bench/RESULTS.md
 *          has it against llama.cpp's report (within 3 % on the real models
 *          and a synthetic MoE at ctx 512 and 4096); keep some overhead.
 * overhead what the caller configures (default NB_MEM_DEFAULT_OVERHEAD:
 *          runtime code, OS and driver slack).
 *
 * Only the hyper-parameters are read (architecture row + GGUF metadata), never
 * the weights.
 */
#ifndef NB_QUANT_MEMORY_H
#define NB_QUANT_MEMORY_H

#include "core/ctx.h"
#include "core/types.h"
#include "formats/model.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum nb_runtime {
    NB_RUNTIME_LLAMACPP = 0, /* llama.cpp (and Ollama, LM Studio): GGUF types llama.cpp loads */
    NB_RUNTIME_NIBBLE        /* nibble's own engine: also NF4 / INT4 */
} nb_runtime;

const char *nb_runtime_name(nb_runtime r);
/* "llama.cpp" (also "llamacpp"), "nibble"; false for anything else. */
bool nb_runtime_from_name(const char *name, nb_runtime *out);

#define NB_MEM_DEFAULT_OVERHEAD (256ull << 20) /* 256 MiB */
#define NB_MEM_DEFAULT_UBATCH 512u

typedef struct nb_mem_opts {
    uint32_t n_ctx;      /* context in tokens (required, >= 1) */
    nb_type kv_type;     /* llama.cpp: F16, Q8_0 or Q4_0 (quantized V needs flash attention there);
                          * the nibble runtime always keeps F32 and ignores it */
    nb_runtime runtime;
    uint32_t n_ubatch;   /* tokens per micro-batch; 0: NB_MEM_DEFAULT_UBATCH (capped at n_ctx) */
    uint64_t overhead;   /* bytes added as they are */
} nb_mem_opts;

typedef struct nb_mem_est {
    /* the hyper-parameters used */
    uint32_t n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx_train;
    uint32_t n_swa_layers, sliding_window, n_expert_used;
    uint32_t cells;          /* KV cells of a global layer */
    uint32_t swa_cells;      /* KV cells of a sliding-window layer (0: none) */
    nb_type kv_type;         /* the element type of the cache */
    uint64_t kv_bytes;       /* K + V over all layers */
    uint64_t compute_bytes;
    uint64_t overhead_bytes;
} nb_mem_est;

/* Estimate the non-weight memory of running m at o->n_ctx. Errors:
 * NB_ERR_UNSUPPORTED without a known general.architecture (nothing to model);
 * NB_ERR_RANGE when n_ctx is 0 or larger than the model's context_length
 * ("--ctx N is larger than the model's context (M)"), or the kv type is not
 * F16/Q8_0/Q4_0 (F32 is accepted for the nibble runtime, which always uses it);
 * NB_ERR_FORMAT for missing hyper-parameters. Messages name m->path. */
nb_status nb_mem_estimate(const nb_model *m, const nb_mem_opts *o, nb_mem_est *out, nb_ctx *ctx);

#endif
