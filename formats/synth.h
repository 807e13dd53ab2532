/* formats/synth.h — seeded random models of every supported architecture.
 *
 * Used by tests and benchmarks (`nibble synth`). A synthetic model is a real
 * file in a real format: a GGUF file (GGUF names + metadata, a minimal
 * byte-fallback SentencePiece-style vocabulary so the engine can run), or a
 * Hugging Face directory (config.json + model.safetensors, sharded with an
 * index above the shard size) that nb_hf_open reads back.
 *
 * Values: every element is a pure function of (seed, GGUF tensor name,
 * element index in the GGUF layout): a counter-based hash turned into an
 * approximately normal number with standard deviation 0.02. Norm weights are
 * 1 (in GGUF terms; Gemma's HF files store 0 since llama.cpp adds 1).
 * So the output is identical for any thread count, and the HF directory
 * opened with nb_hf_open yields exactly the tensors of the GGUF file for the
 * same options: the HF writer draws the GGUF value for each element and
 * places it where the HF layout wants it (q/k rows un-permuted, experts
 * split out).
 *
 * Memory: one chunk buffer (a few MiB); tensors are generated and streamed
 * chunk by chunk, so a model of any size needs no more.
 */
#ifndef NB_FORMATS_SYNTH_H
#define NB_FORMATS_SYNTH_H

#include "core/ctx.h"
#include "core/types.h"
#include "formats/arch.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct nb_synth_opts {
    const char *arch;       /* nb_arch_find name: llama, mistral, mixtral, qwen2, qwen3, qwen2moe, qwen3moe, gemma3,
                               gemma-embedding (an encoder, with the Dense head E -> 4E -> E) */
    /* shape; 0 = default (or chosen by target_bytes) */
    uint32_t n_layer, n_embd, n_ff, n_head, n_head_kv;
    uint32_t n_expert, n_expert_used; /* MoE only */
    uint32_t n_vocab, n_ctx;
    nb_type dtype;          /* F32, F16 or BF16 for the weight matrices (norms, biases, routers stay F32) */
    uint64_t seed;
    uint64_t target_bytes;  /* > 0: choose the unset dims so the file is about this size */
    uint64_t shard_bytes;   /* HF output: largest shard (0: 4 GiB) */
    bool no_vocab;          /* GGUF: leave out the tokenizer metadata */
    uint32_t starve_experts; /* MoE: the router never chooses the last K experts of any layer (for
                                calibration tests): element 0 of every token embedding is 10 (the
                                residual stream keeps one large channel) and the routers' column 0
                                is +1 for the other experts, -1 for these; < n_expert - n_expert_used */
    uint32_t sliding_window; /* sliding-window rows (gemma3, gemma-embedding): the window (0: 512) */
} nb_synth_opts;

/* Defaults: arch llama, dtype F16, seed 0, everything else 0. */
void nb_synth_opts_init(nb_synth_opts *o);

/* Resolve options to an architecture and hyper-parameters (defaults, size
 * fitting, validation). Usage errors (unknown arch, bad dtype, impossible
 * shapes, a target too small for the fixed dims) are NB_ERR_INVALID. */
nb_status nb_synth_hparams(const nb_synth_opts *o, const nb_arch **arch, nb_hparams *hp, nb_ctx *ctx);

/* Bytes of tensor data a model of these parameters holds (all tensors, as
 * synth types them). */
uint64_t nb_synth_data_bytes(const nb_arch *a, const nb_hparams *hp, nb_type dtype);

/* Write the model. out_path ending in ".gguf" -> GGUF file; any other path ->
 * HF directory (created if missing; existing config/model files replaced).
 * Output files are atomic (.partial then rename). */
nb_status nb_synth_write(const nb_synth_opts *o, const char *out_path, nb_ctx *ctx);

/* The value synth gives element `idx` (GGUF layout) of non-norm tensor `name`. */
float nb_synth_value(uint64_t seed, const char *name, uint64_t idx);

#endif
