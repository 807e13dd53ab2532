/* formats/arch.h — the architectures nibble knows: Hugging Face <-> GGUF.
 *
 * One table row per Hugging Face model family. Each row says which HF
 * `architectures` / `model_type` strings it matches, which GGUF architecture
 * it becomes ("mistral" and "mixtral" become "llama", as llama.cpp does), how
 * config.json hyper-parameters become GGUF metadata ("<arch>.block_count" ...),
 * how tensor names map both ways, and which tensors need a transformation on
 * the way (llama-family q/k row permutation, Gemma's "+1" norm shift).
 *
 * Naming follows llama.cpp's converter (convert_hf_to_gguf.py) and gguf-py's
 * tensor/key tables, so a GGUF produced here loads in llama.cpp and tensors
 * carry the names every later nibble stage expects.
 *
 * Tensor-name rules (HF -> GGUF, {L} = layer, {E} = expert):
 *   model.embed_tokens.weight                    token_embd.weight
 *   model.norm.weight                            output_norm.weight
 *   lm_head.weight                               output.weight
 *   model.layers.{L}.input_layernorm.weight      blk.{L}.attn_norm.weight
 *   model.layers.{L}.self_attn.{q,k,v,o}_proj.*  blk.{L}.attn_{q,k,v,output}.*
 *   model.layers.{L}.self_attn.{q,k}_norm.weight blk.{L}.attn_{q,k}_norm.weight
 *   model.layers.{L}.post_attention_layernorm    blk.{L}.ffn_norm (gemma3: post_attention_norm)
 *   model.layers.{L}.pre_feedforward_layernorm   blk.{L}.ffn_norm            (gemma3)
 *   model.layers.{L}.post_feedforward_layernorm  blk.{L}.post_ffw_norm       (gemma3)
 *   model.layers.{L}.mlp.{gate,up,down}_proj     blk.{L}.ffn_{gate,up,down}
 *   ...block_sparse_moe.gate / mlp.gate          blk.{L}.ffn_gate_inp        (router)
 *   ...block_sparse_moe.experts.{E}.w1/w3/w2     blk.{L}.ffn_{gate,up,down}_exps (stacked)
 *   ...mlp.experts.{E}.{gate,up,down}_proj       blk.{L}.ffn_{gate,up,down}_exps (stacked)
 *   ...mlp.shared_expert.{gate,up,down}_proj     blk.{L}.ffn_{gate,up,down}_shexp
 *   ...mlp.shared_expert_gate                    blk.{L}.ffn_gate_inp_shexp
 *   (gemma-embedding) the same names without the "model." prefix (a Gemma3TextModel
 *   saved by sentence-transformers), and its Dense modules as pseudo-names:
 *   2_Dense/linear.weight                        dense_2.weight
 *   3_Dense/linear.weight                        dense_3.weight
 * Stacked expert tensors have ne = {in, out, n_expert}: expert e's HF matrix
 * [out, in] is slice e, exactly torch.stack(dim=0) as llama.cpp does.
 *
 * Gemma 3: transformers' Gemma3RMSNorm computes x * (1 + w), llama.cpp's
 * gemma3 graph x * w, so llama.cpp's converter stores w + 1 for every HF
 * tensor whose name ends in "norm.weight" (input/post-attention/pre- and
 * post-feedforward norms, q/k norms, the final norm). nibble does the same
 * (NB_XF_NORM_SHIFT), adding 1 in F32 and exposing those tensors as F32
 * (llama.cpp converts bf16 sources to f32 before adding; f16 sources it adds
 * in f16 — F32 here is the exact value). Export subtracts 1 again.
 */
#ifndef NB_FORMATS_ARCH_H
#define NB_FORMATS_ARCH_H

#include "core/ctx.h"
#include "core/types.h"
#include "formats/kv.h"
#include "formats/model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum nb_arch_id {
    NB_ARCH_LLAMA = 0,
    NB_ARCH_MISTRAL,
    NB_ARCH_MIXTRAL,
    NB_ARCH_QWEN2,
    NB_ARCH_QWEN3,
    NB_ARCH_QWEN2MOE,
    NB_ARCH_QWEN3MOE,
    NB_ARCH_GEMMA3,
    NB_ARCH_GEMMA_EMBEDDING, /* EmbeddingGemma: a gemma3 encoder (HF Gemma3TextModel + sentence-transformers) */
    NB_ARCH_COUNT
} nb_arch_id;

/* Row flags. */
enum {
    NB_ARCH_F_PERMUTE_QK = 1u << 0, /* llama.cpp permutes attn_q/attn_k rows (llama family) */
    NB_ARCH_F_QKV_BIAS = 1u << 1,   /* q/k/v projections carry a bias (qwen2, qwen2moe) */
    NB_ARCH_F_QK_NORM = 1u << 2,    /* per-head q/k RMSNorm (qwen3, qwen3moe, gemma3) */
    NB_ARCH_F_MOE = 1u << 3,        /* mixture of experts */
    NB_ARCH_F_SHEXP = 1u << 4,      /* shared expert + its sigmoid gate (qwen2moe) */
    NB_ARCH_F_NORM_SHIFT = 1u << 5, /* HF norm weights w are used as (1 + w): GGUF stores w + 1 */
    NB_ARCH_F_SANDWICH = 1u << 6,   /* gemma3: pre/post attention and pre/post FFN norms */
    NB_ARCH_F_TIED = 1u << 7,       /* tie_word_embeddings defaults to true */
    NB_ARCH_F_MIXTRAL_NAMES = 1u << 8, /* experts named block_sparse_moe.experts.E.w1/w2/w3 */
    NB_ARCH_F_HEAD_DIM = 1u << 9,   /* the family's config.json always carries head_dim (qwen3, gemma3) */
    /* a text encoder (gemma-embedding): bidirectional attention (local layers see
     * |i - j| <= sliding_window / 2, llama.cpp's symmetric window), no LM head;
     * mean pooling, the optional sentence-transformers Dense projections
     * dense_2 {E, D} and dense_3 {D, E}, L2 normalisation (engine/embed.h) */
    NB_ARCH_F_ENCODER = 1u << 10
};

/* The FFN's gate activation (GLU: act(gate) * up). */
typedef enum nb_act {
    NB_ACT_SILU = 0,  /* HF hidden_act "silu" */
    NB_ACT_GELU_TANH  /* HF "gelu_pytorch_tanh" (gemma) */
} nb_act;
/* config.json's hidden_act spelling of an activation. */
const char *nb_act_hf_name(nb_act act);

/* How the attention scores q.k are scaled (nb_arch_attn_scale). */
typedef enum nb_attn_scale_rule {
    NB_ATTN_SCALE_HEAD_DIM = 0, /* 1/sqrt(head_dim) */
    /* Gemma 3: HF's query_pre_attn_scalar (nibble writes head_dim); llama.cpp
     * uses 1/sqrt(n_embd / n_head) for 62-layer models (Gemma 3 27B), whose
     * scalar is that, and 1/sqrt(head_dim) otherwise */
    NB_ATTN_SCALE_QUERY_PRE_ATTN
} nb_attn_scale_rule;

typedef struct nb_hparams nb_hparams;

typedef struct nb_arch {
    nb_arch_id id;
    const char *name;            /* nibble's name: HF model_type spelling ("qwen2_moe") */
    const char *gguf_arch;       /* general.architecture ("llama", "qwen2moe", ...) */
    const char *hf_class;        /* `architectures[0]` written to config.json */
    const char *const *hf_classes;     /* NULL-terminated: `architectures` entries matched */
    const char *const *hf_model_types; /* NULL-terminated: `model_type` values matched */
    unsigned flags;
    /* Graph quirks, as llama.cpp's graph for the architecture has them: */
    nb_act act;                     /* FFN activation */
    bool embd_scale_sqrt;           /* token embeddings are multiplied by sqrt(n_embd) */
    bool norm_topk;                 /* MoE: the chosen experts' weights are renormalised to sum 1
                                       (llama.cpp hard-codes it per graph; nibble's engine lets a
                                       "<arch>.expert_weights_norm" key override it) */
    nb_attn_scale_rule attn_scale;  /* see nb_arch_attn_scale */
    uint32_t swa_period;            /* sliding-window pattern: in each run of swa_period layers the
                                       last is global and the others slide (gemma3: 6, i.e. layers
                                       5, 11, ... global); 0: no sliding window */
    /* transformers' config-class defaults for keys a config.json may omit
     * (Gemma 3's multimodal configs omit them); zero fields: no default.
     * NULL: none at all. */
    const nb_hparams *hf_defaults;
    /* what the family's released models typically use, for synthetic models */
    double typical_rope_theta;
    double typical_rms_eps;
} nb_arch;

/* The row for an id (NULL when out of range). */
const nb_arch *nb_arch_get(nb_arch_id id);
/* Find by nibble name, HF model_type, HF class or GGUF arch name (case-
 * insensitive; "qwen2moe" and "qwen2_moe" both work). A bare GGUF "llama"
 * gives NB_ARCH_LLAMA. NULL if unknown. */
const nb_arch *nb_arch_find(const char *name);
/* The row matching an HF `architectures` class name exactly, or NULL. */
const nb_arch *nb_arch_from_hf_class(const char *cls);
/* The row matching an HF `model_type` exactly, or NULL. */
const nb_arch *nb_arch_from_model_type(const char *model_type);
/* Row for a GGUF architecture: "llama" with experts gives mixtral. NULL if unknown. */
const nb_arch *nb_arch_from_gguf(const char *gguf_arch, bool has_experts);
/* The row of m's general.architecture (as nb_arch_from_gguf without
 * experts: the flags of the family), NULL when absent or unknown. */
const nb_arch *nb_model_arch(const nb_model *m);
/* "llama, mistral, mixtral, ..." — for error messages. Static string. */
const char *nb_arch_supported_list(void);

/* ---- hyper-parameters ------------------------------------------------------ */

typedef enum nb_rope_scaling {
    NB_ROPE_SCALING_NONE = 0,
    NB_ROPE_SCALING_LINEAR,
    NB_ROPE_SCALING_YARN,
    NB_ROPE_SCALING_LLAMA3 /* no GGUF keys: becomes the rope_freqs.weight tensor */
} nb_rope_scaling;

/* Hyper-parameters in one vocabulary, whatever file they came from.
 * Zero means "absent" for the optional ones. */
struct nb_hparams {
    uint32_t n_layer;       /* num_hidden_layers          -> block_count */
    uint32_t n_embd;        /* hidden_size                -> embedding_length */
    uint32_t n_ff;          /* intermediate_size          -> feed_forward_length (0: absent) */
    uint32_t n_head;        /* num_attention_heads        -> attention.head_count */
    uint32_t n_head_kv;     /* num_key_value_heads        -> attention.head_count_kv */
    uint32_t head_dim;      /* head_dim; 0: n_embd / n_head (-> key_length/value_length when set) */
    uint32_t n_ctx;         /* max_position_embeddings    -> context_length */
    uint32_t n_vocab;       /* vocab_size                 -> vocab_size */
    double rope_theta;      /* rope_theta                 -> rope.freq_base (0: absent) */
    double rope_theta_swa;  /* rope_local_base_freq       -> rope.freq_base_swa (0: absent) */
    double rms_eps;         /* rms_norm_eps               -> attention.layer_norm_rms_epsilon (0: absent) */
    uint32_t n_expert;      /* num_local_experts / num_experts -> expert_count */
    uint32_t n_expert_used; /* num_experts_per_tok        -> expert_used_count */
    uint32_t n_ff_exp;      /* moe_intermediate_size      -> expert_feed_forward_length */
    uint32_t n_ff_shexp;    /* shared_expert_intermediate_size -> expert_shared_feed_forward_length */
    uint32_t sliding_window;/* sliding_window (gemma3)    -> attention.sliding_window */
    bool tie_embeddings;    /* tie_word_embeddings: no lm_head / output.weight */
    nb_rope_scaling rope_scaling;
    double rope_factor;      /* rope_scaling.factor -> rope.scaling.factor */
    uint32_t rope_orig_ctx;  /* rope_scaling.original_max_position_embeddings */
    double rope_low_freq;    /* llama3: low_freq_factor (default 1) */
    double rope_high_freq;   /* llama3: high_freq_factor (default 4) */
    uint32_t n_embd_dense;   /* encoders: 2_Dense out_features = 3_Dense in_features (0: no Dense
                                modules) -> dense_2_feat_out / dense_3_feat_in */
};

/* The factor q.k is multiplied by for a model of this row and shape (the
 * row's attn_scale rule; every operand in float as llama.cpp computes it). */
float nb_arch_attn_scale(const nb_arch *a, uint32_t n_layer, uint32_t n_embd, uint32_t n_head, uint32_t head_dim);
/* True when layer L uses sliding-window attention (the row's swa_period). */
bool nb_arch_layer_is_swa(const nb_arch *a, uint32_t layer);

/* Head dimension actually used: head_dim if set, else n_embd / n_head (0 if n_head is 0). */
uint32_t nb_hparams_head_dim(const nb_hparams *hp);

/* Check internal consistency (non-zero required values, n_head_kv divides
 * n_head, experts for MoE rows, ...). `what` prefixes messages (file name).
 * NB_ERR_RANGE / NB_ERR_FORMAT with the offending key in HF spelling. */
nb_status nb_hparams_validate(const nb_arch *a, const nb_hparams *hp, const char *what, nb_ctx *ctx);

/* Write GGUF metadata for hp: general.architecture, general.name (if name is
 * not NULL) and the "<arch>.*" keys, with the value types llama.cpp's
 * converter writes (u32 counts, f32 floats). */
nb_status nb_arch_hparams_to_kv(const nb_arch *a, const nb_hparams *hp, const char *name,
                                nb_kvset *kv, nb_ctx *ctx);
/* The reverse, for export: read "<arch>.*" keys of a GGUF kv set. Missing
 * required keys -> NB_ERR_FORMAT naming the key. tie_embeddings is not in
 * GGUF: the caller sets it (no output.weight tensor means tied). */
nb_status nb_arch_hparams_from_kv(const nb_arch *a, const nb_kvset *kv, nb_hparams *hp, nb_ctx *ctx);

/* llama3 rope scaling: the n = head_dim/2 per-frequency factors llama.cpp
 * stores as rope_freqs.weight (F32). Needs rope_scaling == LLAMA3. */
nb_status nb_arch_llama3_rope_factors(const nb_hparams *hp, float *out, size_t n, nb_ctx *ctx);

/* ---- tensor names ------------------------------------------------------------ */

typedef enum nb_xform {
    NB_XF_NONE = 0,
    NB_XF_PERMUTE_Q, /* rows permuted with n_head heads (llama.cpp `permute`) */
    NB_XF_PERMUTE_K, /* rows permuted with n_head_kv heads */
    NB_XF_NORM_SHIFT /* GGUF = HF + 1 (Gemma RMSNorm stores w for (1 + w)) */
} nb_xform;

typedef struct nb_name_map {
    char gguf[NB_MAX_NAME + 1]; /* GGUF name; for an expert piece, the stacked tensor's name */
    int layer;                  /* block index or -1 */
    int expert;                 /* expert index for a piece of a stacked tensor, else -1 */
    nb_xform xf;
    bool skip;                  /* not part of the GGUF model (rotary inv_freq caches, vision tower) */
} nb_name_map;

/* Map an HF tensor name to its GGUF name. Returns false when no rule matches
 * (the name is unknown for this architecture). Multimodal wrappers' prefixes
 * ("language_model.model.", "model.language_model.") are accepted; vision and
 * projector tensors and rotary caches come back with skip = true.
 * Layer/expert numbers are decimal without leading zeros, < 1,000,000. */
bool nb_arch_map_hf(const nb_arch *a, const char *hf, nb_name_map *out);
/* Map a GGUF name back to its HF name (canonical "model." prefix). For a
 * stacked expert tensor pass the expert index (>= 0), else -1. *xf receives
 * the transformation to undo (may be NULL). False when unknown, or when
 * `expert` does not fit the tensor (>= 0 for a non-expert tensor or < 0 for
 * a stacked one). */
bool nb_arch_map_gguf(const nb_arch *a, const char *gguf, int expert, char *hf, size_t n,
                      nb_xform *xf);
/* True when `gguf` is a stacked expert tensor name (ffn_*_exps). */
bool nb_arch_is_expert_stack(const char *gguf);
/* A GGUF tensor with one entry per expert on its last axis, of block L
 * (< 65536) in *layer: the expert stacks "blk.L.*_exps.*", the router
 * "blk.L.ffn_gate_inp.{weight,bias}" and "blk.L.exp_probs_b.*" (what expert
 * pruning cuts). The shared expert (*_shexp, ffn_gate_inp_shexp) is not one. */
bool nb_arch_is_per_expert(const char *gguf, int *layer);

/* ---- q/k permutation ------------------------------------------------------------ */

/* llama.cpp reorders the rows of llama-family q/k projections so that the two
 * rotary halves of each head are interleaved:
 *   w.reshape(n_head, 2, rows/n_head/2, ...).swapaxes(1, 2).reshape(rows, ...)
 * i.e. GGUF row h*hd + 2*i + j  =  HF row h*hd + j*(hd/2) + i
 * for head h, i in [0, hd/2), j in {0, 1}, hd = rows / n_head.
 * nb_qk_src_row gives the HF row a GGUF row comes from; nb_qk_dst_row is the
 * inverse (the GGUF row an HF row goes to). Both need rows % (2*n_head) == 0.
 * llama.cpp applies it to llama/mistral/mixtral q (n_head) and k (n_head_kv)
 * weights and biases only; qwen and gemma keep HF's row order. */
uint64_t nb_qk_src_row(uint64_t gguf_row, uint64_t rows, uint32_t n_head);
uint64_t nb_qk_dst_row(uint64_t hf_row, uint64_t rows, uint32_t n_head);
/* Copy `rows` rows of `row_bytes` from src to dst applying the permutation
 * (inverse = false: HF -> GGUF; true: GGUF -> HF). src and dst must not
 * overlap. NB_ERR_RANGE if rows is not a multiple of 2*n_head. `what` names
 * the tensor in messages. */
nb_status nb_qk_permute(const void *src, void *dst, uint64_t rows, uint64_t row_bytes,
                        uint32_t n_head, bool inverse, const char *what, nb_ctx *ctx);

/* ---- GGUF tensor list of an architecture ------------------------------------------ */

typedef struct nb_arch_tensor {
    char name[NB_MAX_NAME + 1];
    uint32_t n_dims;
    int64_t ne[NB_MAX_DIMS];
    bool is_f32; /* llama.cpp keeps it F32 whatever the file type: norms, biases, routers */
    bool is_norm; /* an RMSNorm weight (initialised to 1 by synth) */
} nb_arch_tensor;

/* Every GGUF tensor a model of this architecture and shape has, in a
 * canonical order (token_embd, blocks in order, output_norm, output).
 * *out is malloc'd (free()); hp must pass nb_hparams_validate. */
nb_status nb_arch_tensor_list(const nb_arch *a, const nb_hparams *hp, nb_arch_tensor **out,
                              size_t *n_out, nb_ctx *ctx);

#endif
