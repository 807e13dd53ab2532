/* kernels/cuda/cuda.h — CUDA kernels for the engine's hot operations (C API).
 *
 * Built only when nvcc is found (CMake -DNIBBLE_CUDA=AUTO|ON|OFF); then
 * NB_HAVE_CUDA is defined for every target that links libnibble. Without it
 * nothing here exists: callers test `#ifdef NB_HAVE_CUDA`.
 *
 * All device state lives in an nb_cuda_ctx (device id, one stream, the
 * buffers it allocated, small constant tables): no global mutable state.
 * Every function that can fail returns an nb_status and leaves a one-line
 * message in the nb_ctx passed in ("cuda: <call>: <cudaGetErrorString>").
 * CUDA errors map to statuses as follows: allocation -> NB_ERR_NOMEM; no
 * device, no driver, no kernel image for this GPU -> NB_ERR_UNSUPPORTED;
 * invalid argument -> NB_ERR_INVALID; anything else (a failed launch, an
 * illegal address) -> NB_ERR_INTERNAL.
 *
 * Pointers named d_* are device pointers (from nb_cuda_alloc); the others
 * are host pointers. Every operation is enqueued on the context's stream and
 * returns as soon as it is queued; launch errors are reported at once,
 * errors of the running kernel by the next nb_cuda_sync / nb_cuda_download.
 * Results are the same math as the CPU engine (kernels/cpu, engine/forward.c);
 * summation orders differ, so floats agree within stated tolerances
 * (tests/kernels/test_cuda.c), except where a contract says "bit-exact".
 *
 * Shapes follow the CPU code: row-major, tokens outermost.
 */
#ifndef NB_KERNELS_CUDA_CUDA_H
#define NB_KERNELS_CUDA_CUDA_H

#include "core/ctx.h"
#include "core/types.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of CUDA devices usable by this process; 0 when there is no GPU, no
 * driver, or the driver is too old for this runtime. Never fails, never aborts. */
int nb_cuda_device_count(void);

/* ---- context, buffers, transfers ---------------------------------------------- */

typedef struct nb_cuda_ctx nb_cuda_ctx;

/* Open device `device` (0-based) with one new stream. *out receives the
 * context (free with nb_cuda_ctx_free). NB_ERR_UNSUPPORTED when the device
 * does not exist or cannot run this build's kernels. */
nb_status nb_cuda_ctx_create(int device, nb_cuda_ctx **out, nb_ctx *ctx);
/* Wait for queued work, free every buffer still allocated through the
 * context, destroy the stream. Accepts NULL. */
void nb_cuda_ctx_free(nb_cuda_ctx *c);
/* Device name (static storage of the context, valid until it is freed). */
const char *nb_cuda_device_name(const nb_cuda_ctx *c);
/* Bytes allocated through the context now, and the most at any one time. */
size_t nb_cuda_bytes_in_use(const nb_cuda_ctx *c);
size_t nb_cuda_bytes_peak(const nb_cuda_ctx *c);

/* Device memory of `bytes` (>= 1) bytes, 256-byte aligned, owned by the
 * context until nb_cuda_free (NULL is a no-op) or nb_cuda_ctx_free. */
nb_status nb_cuda_alloc(nb_cuda_ctx *c, size_t bytes, void **d_out, nb_ctx *ctx);
void nb_cuda_free(nb_cuda_ctx *c, void *d_ptr);
/* Host -> device copy of `bytes`; the host buffer may be reused on return. */
nb_status nb_cuda_upload(nb_cuda_ctx *c, void *d_dst, const void *src, size_t bytes, nb_ctx *ctx);
/* Device -> host copy of `bytes`: waits for all queued work first, so it
 * also reports errors of kernels that ran before it. */
nb_status nb_cuda_download(nb_cuda_ctx *c, void *dst, const void *d_src, size_t bytes, nb_ctx *ctx);
/* Wait for all queued work; reports any error it raised. */
nb_status nb_cuda_sync(nb_cuda_ctx *c, nb_ctx *ctx);

/* ---- packed weights --------------------------------------------------------------- */

/* 1 when `t` has CUDA dequantize and matmul kernels: F32, F16, BF16, Q8_0,
 * Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, NF4,
 * NF4_DQ, INT4 sym/asym g32/g64/g128 (23 types: every llama.cpp k-quant mix
 * and its fallbacks, and nibble's own types). */
bool nb_cuda_type_supported(nb_type t);

/* d_y[0..n-1] = the type table's to_float of the packed d_src (n elements, a
 * multiple of the block size), bit-exact with the CPU dequantizer. */
nb_status nb_cuda_dequantize(nb_cuda_ctx *c, nb_type t, const void *d_src, int64_t n, float *d_y, nb_ctx *ctx);

/* The same decoders run on the host, one element at a time (slow): y[0..n-1]
 * from the packed host buffer src. Lets machines without a GPU test the
 * block layouts the kernels read; needs no device and no context. */
nb_status nb_cuda_dequantize_host(nb_type t, const void *src, int64_t n, float *y, nb_ctx *ctx);

/* d_y[t*n_out + r] = sum_k W[r][k] * d_x[t*n_in + k], as nb_matmul_ref
 * (kernels/cpu/matmul.h): W is n_out packed rows of n_in elements of `t`
 * (row stride = row bytes), d_x n_tok x n_in floats, d_y n_tok x n_out.
 * Weights are dequantized in registers and multiplied with the f32
 * activations (no activation quantization), so the result is the reference
 * path's up to float summation order. n_tok == 1 runs the matrix-vector
 * kernel, larger n_tok the matrix-matrix one (8 tokens per weight read).
 * NB_ERR_UNSUPPORTED for a type without a kernel, NB_ERR_RANGE when n_in is
 * not a multiple of the block size or exceeds 2^31 - 1. */
nb_status nb_cuda_matmul(nb_cuda_ctx *c, nb_type t, const void *d_w, int64_t n_out, int64_t n_in, const float *d_x,
                         int64_t n_tok, float *d_y, nb_ctx *ctx);

/* nb_cuda_matmul's kernel run on the host (slow): the same per-lane code for
 * each of the 32 lanes of each warp, then the warp's shuffle-sum butterfly in
 * the same order; host buffers, no device. The device may fuse the lanes'
 * multiply-adds, so results agree with the GPU's to rounding, not bit for bit.
 * For testing the kernel's indexing and tiling without a GPU. */
nb_status nb_cuda_matmul_host(nb_type t, const void *w, int64_t n_out, int64_t n_in, const float *x, int64_t n_tok,
                              float *y, nb_ctx *ctx);

/* ---- llama-family operations ------------------------------------------------------ */

/* d_out[r] = d_x[r] / sqrt(mean(d_x[r]^2) + eps) * d_w, for `rows` rows of n
 * (sum of squares in double, as the CPU engine; in place allowed). */
nb_status nb_cuda_rmsnorm(nb_cuda_ctx *c, float *d_out, const float *d_x, const float *d_w, int64_t rows, int n,
                          float eps, nb_ctx *ctx);

/* Rotate the first n_rot dims of each of n_head heads (head_dim wide) of n_tok
 * tokens in place: d_v is n_tok x n_head x head_dim. d_cs holds the cos/sin
 * table the CPU engine builds (engine/forward.c rope_table, as floats):
 * d_cs[(t * n_rot/2 + i) * 2 + {0,1}] = {cos, sin} of pair i of token t, so
 * YaRN, linear scaling and llama3 factors are the caller's. neox: pairs
 * (i, i + n_rot/2) (NB_ROPE_NEOX), else (2i, 2i+1) (NB_ROPE_NORM).
 * Bit-exact with the CPU (no fused multiply-add). n_rot even, <= head_dim. */
nb_status nb_cuda_rope(nb_cuda_ctx *c, float *d_v, int64_t n_tok, int n_head, int head_dim, int n_rot, bool neox,
                       const float *d_cs, nb_ctx *ctx);

/* Softmax of each of `rows` rows of n floats in place (max subtracted first). */
nb_status nb_cuda_softmax(nb_cuda_ctx *c, float *d_x, int64_t rows, int n, nb_ctx *ctx);

/* Causal attention of n_tok queries at positions pos..pos+n_tok-1 against a
 * KV cache, as the CPU engine's attention():
 *   d_q   n_tok x n_head x head_dim          d_out: same shape
 *   d_k, d_v  n_head_kv x n_ctx x head_dim   (positions 0..pos+n_tok-1 filled)
 * head h reads kv head h / (n_head / n_head_kv) (grouped-query attention);
 * score = scale * q.k; query at position p sees positions max(0, p-window+1)..p
 * (window 0: all). Online softmax (one pass over the cache, flash-style).
 * head_dim <= 256; n_head a multiple of n_head_kv; pos + n_tok <= n_ctx. */
nb_status nb_cuda_attention(nb_cuda_ctx *c, const float *d_q, const float *d_k, const float *d_v, float *d_out,
                            int n_tok, int pos, int n_head, int n_head_kv, int head_dim, int n_ctx, float scale,
                            int window, nb_ctx *ctx);

/* Host runs of the RoPE, attention and routing kernels' code (slow; host
 * buffers, no device): the per-thread / per-warp functions the kernels call,
 * with each warp's 32 lanes on 32 host threads exchanging values where the
 * kernel shuffles. Same arguments and checks as the device calls. For testing
 * without a GPU; host and device expf may differ in the last bit. */
nb_status nb_cuda_rope_host(float *v, int64_t n_tok, int n_head, int head_dim, int n_rot, bool neox, const float *cs,
                            nb_ctx *ctx);
nb_status nb_cuda_attention_host(const float *q, const float *k, const float *v, float *out, int n_tok, int pos,
                                 int n_head, int n_head_kv, int head_dim, int n_ctx, float scale, int window,
                                 nb_ctx *ctx);
nb_status nb_cuda_moe_topk_host(const float *logits, int64_t n_tok, int n_expert, int k, bool norm, float scale,
                                int32_t *sel, float *w, nb_ctx *ctx);

/* Mixture-of-experts routing, as engine/forward_moe.c: per token, p =
 * softmax(d_logits[t]) over n_expert experts, the k largest p (ties: lower
 * expert id first) into d_sel[t*k + j] in decreasing order with weights
 * d_w[t*k + j] = p (divided by their sum when norm), times `scale`.
 * n_expert <= 256, 1 <= k <= n_expert. */
nb_status nb_cuda_moe_topk(nb_cuda_ctx *c, const float *d_logits, int64_t n_tok, int n_expert, int k, bool norm,
                           float scale, int32_t *d_sel, float *d_w, nb_ctx *ctx);

#ifdef __cplusplus
}
#endif

#endif
