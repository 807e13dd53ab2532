/* engine/engine_impl.h — internals of the forward pass shared by engine.c
 * (opening, hyper-parameters, tensor binding), forward.c (the graph) and
 * forward_moe.c (mixture-of-experts FFN). Not a public header.
 *
 * Shapes follow ggml's order in the tensor comments: a matrix {n_in, n_out}
 * has n_out rows of n_in contiguous elements; activations are row-major
 * n_tok x n (one row per token).
 */
#ifndef NB_ENGINE_IMPL_H
#define NB_ENGINE_IMPL_H

#include "core/types.h"
#include "engine/engine.h"
#include "formats/arch.h"

#include <stdbool.h>
#include <stdint.h>

/* A weight matrix (or a stack of expert matrices) in its packed type,
 * pointing into the model's mapping (or into an owned copy when the source
 * has no zero-copy pointer, e.g. an HF directory whose experts are stacked
 * on read). NULL `data` = absent optional tensor. */
typedef struct nb_wmat {
    const char *name;    /* GGUF tensor name (borrowed from the model) */
    nb_type type;
    const void *data;
    int64_t n_in, n_out; /* ne[0], ne[1] */
    int64_t n_mat;       /* ne[2]: experts in a stack, else 1 */
    uint64_t row_bytes;  /* bytes of one row of n_in elements */
    uint64_t mat_bytes;  /* row_bytes * n_out: stride between experts */
    const void *packed;  /* row-interleaved copy for the row-lane kernels (NULL: none; nb_matmul_pack) */
    uint64_t packed_mat_bytes; /* stride between the experts' packed copies */
} nb_wmat;

typedef enum nb_rope_layout {
    NB_ROPE_NORM = 0, /* rotate pairs (x[2i], x[2i+1]): llama.cpp's llama (q/k rows permuted in GGUF) */
    NB_ROPE_NEOX      /* rotate (x[i], x[i + n_rot/2]): qwen2/qwen3/gemma3, HF's rotate_half */
} nb_rope_layout;

/* One rotary-embedding configuration (gemma3 has two: local and global). */
typedef struct nb_rope {
    double freq_base;   /* theta base */
    double freq_scale;  /* 1 / linear (or YaRN) factor; 1 = none */
    bool yarn;          /* YaRN ramp between interpolation and extrapolation */
    double ext_factor;  /* YaRN: 1 */
    double attn_factor; /* YaRN magnitude scale before the log correction (1) */
    double corr_lo, corr_hi; /* YaRN correction dims */
    /* inv_freq[i] = freq_base^(-2i/n_rot) / rope_freqs[i] (llama3 factors), i < n_rot/2 */
    double *inv_freq;
} nb_rope;

typedef struct nb_layer {
    const float *attn_norm;       /* {E} */
    nb_wmat wq, wk, wv, wo;       /* {E, H*hd}, {E, KV*hd} x2, {H*hd, E} */
    const float *bq, *bk, *bv, *bo; /* optional biases (qwen2): {H*hd}, {KV*hd} x2, {E} */
    const float *q_norm, *k_norm; /* {hd}: per-head RMSNorm (qwen3, gemma3) */
    const float *post_attn_norm;  /* {E} gemma3 */
    const float *ffn_norm;        /* {E} (gemma3: pre-FFN norm) */
    const float *post_ffw_norm;   /* {E} gemma3 */
    /* dense FFN */
    nb_wmat ffn_gate, ffn_up, ffn_down; /* {E, F}, {E, F}, {F, E} */
    /* MoE FFN */
    nb_wmat gate_inp;                       /* router {E, n_expert} */
    nb_wmat gate_exps, up_exps, down_exps;  /* {E, Fe, X}, {E, Fe, X}, {Fe, E, X} */
    nb_wmat gate_inp_shexp;                 /* {E} -> one row: shared-expert gate (qwen2moe) */
    nb_wmat gate_shexp, up_shexp, down_shexp; /* {E, Fs}, {E, Fs}, {Fs, E} */
    bool moe;
    bool swa;              /* sliding-window (local) attention layer */
    const nb_rope *rope;   /* the layer's rotary configuration */
} nb_layer;

/* Hyper-parameters as the graph uses them. */
typedef struct nb_ehparams {
    int n_layer, n_embd, n_head, n_head_kv, head_dim, n_rot, n_vocab;
    int n_ff;                      /* dense FFN width (0 for all-MoE models) */
    int n_expert, n_expert_used, n_ff_exp, n_ff_shexp;
    bool norm_topk;                /* renormalise the chosen experts' weights to sum 1 */
    float expert_weights_scale;    /* multiply the expert weights (1 = none) */
    float rms_eps;
    float attn_scale;              /* multiplies q.k */
    float embd_scale;              /* multiplies the token embeddings (gemma: sqrt(E)), else 1 */
    int n_swa;                     /* sliding window (0: none); a local token sees p1 - p0 < n_swa
                                      (bidir: |p1 - p0| <= n_swa / 2, llama.cpp's symmetric window) */
    bool bidir;                    /* encoder (NB_ARCH_F_ENCODER): every token sees the whole batch,
                                      so a sequence must be evaluated in one call (engine/embed.c) */
    nb_rope_layout rope_layout;
    nb_act act;                    /* the arch row's */
    uint32_t n_ctx_train;
} nb_ehparams;

struct nb_engine {
    nb_model *model;     /* the source */
    bool own_model;      /* opened by nb_engine_open */
    const nb_arch *arch;
    nb_ehparams hp;
    nb_layer *layers;    /* hp.n_layer */
    nb_wmat tok_embd;    /* {E, V} */
    const float *output_norm; /* {E} */
    nb_wmat output;      /* {E, V}: token_embd when tied */
    nb_rope rope_global, rope_local;
    /* buffers this engine owns: converted norms, tensors without a zero-copy pointer */
    void **owned;
    size_t n_owned, cap_owned;

    int n_ctx, n_batch, n_threads;
    bool precise;          /* nb_engine_opts.precise */
    bool all_experts;      /* nb_engine_set_all_experts */
    int n_past;          /* tokens in the KV cache */
    /* KV cache of kv_type: k[l] and v[l] are {hd, n_ctx, KV} — per kv head a
     * contiguous n_ctx x hd block (kv_row bytes per position), so attention
     * reads one head linearly. */
    nb_cache_type kv_type;
    size_t kv_row;
    unsigned char **k_cache, **v_cache;
    float *kv_tmp;   /* per thread: NB_CACHE_TILE_TMP(hd) floats of attention scratch */

    /* scratch for one sub-batch of up to n_batch tokens */
    float *x;        /* residual stream   n_batch x E */
    float *xb;       /* normed input      n_batch x E */
    float *xb2;      /* branch output     n_batch x E */
    float *q;        /* n_batch x H*hd */
    float *k, *v;    /* n_batch x KV*hd */
    float *att;      /* attention output  n_batch x H*hd */
    float *hb, *hb2; /* FFN hidden        n_batch x max(F, Fe, Fs) */
    float *scores;   /* per thread: NB_CACHE_TILE_Q x n_ctx attention weights */
    double *rope_cs; /* cos/sin per token: n_batch x n_rot (pairs) x 2 configs */
    /* MoE scratch */
    float *router;   /* n_batch x n_expert */
    int32_t *sel;    /* n_batch x n_used chosen experts */
    float *selw;     /* n_batch x n_used their weights */
    float *ey;       /* n_batch x n_used x E: each chosen expert's output */
    float *xe;       /* gathered rows for one expert: n_batch x E */
    float *ye;       /* n_batch x E */
    int32_t *rows;   /* n_batch: token index of each gathered row */
    int32_t *slots;  /* n_batch: slot of each gathered row */

    nb_engine_hooks hooks;
    bool have_hooks;
};

/* forward.c */
nb_status nb_engine_forward(nb_engine *e, const int32_t *tokens, int n, int pos, float *logits, nb_ctx *ctx);
/* y = W x for n_tok rows (calls the matmul hook first). `expert` >= 0 picks
 * one matrix of a stack (and is passed to the hook). */
nb_status nb_eng_matmul(nb_engine *e, const nb_wmat *w, int expert, const float *x, int64_t n_tok, float *y,
                        nb_ctx *ctx);
/* In-place activation of gate (n values), multiplied by up: gate = act(gate) * up. */
void nb_eng_glu(nb_act act, float *gate, const float *up, int64_t n);

/* engine.c: bind a 2-D weight {n_in, n_out} by GGUF name (zero-copy where the
 * source allows); absent and not required -> w->data = NULL. Errors name the
 * tensor and both shapes. For graph additions outside engine.c (embed.c). */
nb_status nb_eng_bind_mat(nb_engine *e, const char *name, int64_t n_in, int64_t n_out, bool required, nb_wmat *w,
                          nb_ctx *ctx);
/* RMSNorm of `rows` rows of n (in place allowed), as the graph computes it. */
void nb_eng_rmsnorm(float *out, const float *x, const float *w, int64_t rows, int n, float eps, int n_threads);
/* kv_cache.c: the cache's element types (the arithmetic of each: engine.h). */
size_t nb_cache_row_bytes(nb_cache_type t, int hd); /* bytes of hd values; hd % 32 == 0 for Q8_0 */
#define NB_CACHE_TMP(hd) (3 * (size_t)(hd)) /* scratch floats per thread for the calls below */
/* Store hd values into one cache row. */
void nb_cache_store(nb_cache_type t, const float *src, int hd, void *dst);
/* Attention of one query row q (hd values, already scaled) over cache rows
 * p0..p1 of K and V (kv_row bytes apart): out = softmax(q.K) V. sc: p1 + 1
 * floats of scratch, tmp: NB_CACHE_TMP(hd) floats. */
void nb_cache_attend(nb_cache_type t, const float *q, const unsigned char *K, const unsigned char *V, size_t kv_row,
                     int p0, int p1, int hd, float *sc, float *tmp, float *out);
/* The same for a tile of 1..NB_CACHE_TILE_Q query rows q[i] that share one KV
 * head, query i over rows p0[i]..p1[i]; p0[] and p1[] must not decrease with i
 * (consecutive tokens, the heads of one token side by side: causal, sliding
 * and bidirectional windows all are so). Each cache row is read once per
 * tile; out[i] gets the bits nb_cache_attend gives for q[i], p0[i], p1[i].
 * sc: nq rows of ld_sc floats (ld_sc > p1[nq - 1]), tmp: NB_CACHE_TILE_TMP(hd)
 * floats. */
#define NB_CACHE_TILE_Q 16
#define NB_CACHE_TILE_TMP(hd) (2 * (size_t)NB_CACHE_TILE_Q * (size_t)(hd))
void nb_cache_attend_tile(nb_cache_type t, int nq, const float *const *q, const int *p0, const int *p1,
                          const unsigned char *K, const unsigned char *V, size_t kv_row, int hd, float *sc,
                          size_t ld_sc, float *tmp, float *const *out);

/* forward_moe.c: MoE FFN of layer L on xb (n x E) into out (n x E). */
nb_status nb_engine_moe(nb_engine *e, int L, const float *xb, int n, float *out, nb_ctx *ctx);

/* Softmax over one token's X router logits (probs: X floats of scratch, may
 * alias logits), the top U experts in sel (ties: the lower index), their
 * probabilities in w, renormalised to sum 1 when `norm`, times `scale`.
 * Exposed for the CUDA routing test (tests/kernels/cuda_ref.h). */
void nb_eng_route_token(const float *logits, int X, int U, bool norm, float scale, float *probs, int32_t *sel,
                        float *w);

#endif
