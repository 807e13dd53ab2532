/* kernels/cuda/ops.cu — RMSNorm, RoPE, softmax, attention and MoE routing on the GPU.
 *
 * Each kernel is the CPU engine's function (engine/forward.c, forward_moe.c)
 * with the same float expressions; only the order of the sums differs (tree
 * reductions instead of one loop), except RoPE, which is bit-exact.
 */
#include "kernels/cuda/cuda_impl.cuh"

#include <math.h>

enum { RED_THREADS = 256, ATT_WARPS = 4, ATT_MAXD = 8 /* head_dim <= 32 * 8 */, MOE_MAXE = 8 /* experts <= 256 */ };

/* Sum / max over a block of RED_THREADS threads; every thread gets the result. */
template <class T, class Op>
__device__ __forceinline__ T block_reduce(T v, Op op, T *sh /* [32] */) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads(); /* sh may still be read from a previous call */
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = sh[0];
    for (int i = 1; i < RED_THREADS / 32; i++) v = op(v, sh[i]);
    return v;
}
struct OpAddD {
    __device__ double operator()(double a, double b) const { return a + b; }
};
struct OpAddF {
    __device__ float operator()(float a, float b) const { return a + b; }
};
struct OpMaxF {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

/* ---- RMSNorm: one block per row ----------------------------------------------------- */

__global__ void __launch_bounds__(RED_THREADS)
    k_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    __shared__ double sh[32];
    const float *xr = x + (int64_t)blockIdx.x * n;
    float *o = out + (int64_t)blockIdx.x * n;
    double ss = 0;
    for (int i = threadIdx.x; i < n; i += RED_THREADS) ss += (double)__fmul_rn(xr[i], xr[i]);
    ss = block_reduce(ss, OpAddD(), sh);
    const float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = threadIdx.x; i < n; i += RED_THREADS) o[i] = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
}

nb_status nb_cuda_rmsnorm(nb_cuda_ctx *c, float *d_out, const float *d_x, const float *d_w, int64_t rows, int n,
                          float eps, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, rows < 0 || rows > INT32_MAX || n <= 0, NB_ERR_RANGE, "cuda: rmsnorm: %lld rows of %d",
                 (long long)rows, n);
    if (rows == 0) return NB_OK;
    NB_TRY(nb_cuda_enter(c, ctx));
    k_rmsnorm<<<(unsigned)rows, RED_THREADS, 0, c->stream>>>(d_out, d_x, d_w, n, eps);
    NB_CU_LAUNCHED(ctx, "rmsnorm kernel launch");
    return NB_OK;
}

/* ---- RoPE: one thread per rotated pair --------------------------------------------- */

__global__ void k_rope(float *v, int64_t n_pairs, int n_head, int hd, int half, bool neox, const float *cs) {
    const int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= n_pairs) return;
    const int i = (int)(g % half);
    const int64_t th = g / half, t = th / n_head;
    float *x = v + th * hd;
    const float co = cs[(t * half + i) * 2], si = cs[(t * half + i) * 2 + 1];
    const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    const float x0 = x[a], x1 = x[b];
    x[a] = __fsub_rn(__fmul_rn(x0, co), __fmul_rn(x1, si));
    x[b] = __fadd_rn(__fmul_rn(x0, si), __fmul_rn(x1, co));
}

nb_status nb_cuda_rope(nb_cuda_ctx *c, float *d_v, int64_t n_tok, int n_head, int head_dim, int n_rot, bool neox,
                       const float *d_cs, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, n_tok < 0 || n_head <= 0 || n_rot <= 0 || n_rot % 2 || n_rot > head_dim, NB_ERR_RANGE,
                 "cuda: rope: %lld tokens, %d heads of %d, n_rot %d", (long long)n_tok, n_head, head_dim, n_rot);
    const int64_t n_pairs = n_tok * n_head * (n_rot / 2);
    NB_RETURN_IF(ctx, n_pairs / 256 >= INT32_MAX, NB_ERR_RANGE, "cuda: rope: too many pairs");
    if (n_pairs == 0) return NB_OK;
    NB_TRY(nb_cuda_enter(c, ctx));
    k_rope<<<nb_cu_blocks(n_pairs, 256), 256, 0, c->stream>>>(d_v, n_pairs, n_head, head_dim, n_rot / 2, neox, d_cs);
    NB_CU_LAUNCHED(ctx, "rope kernel launch");
    return NB_OK;
}

/* ---- softmax: one block per row --------------------------------------------------- */

__global__ void __launch_bounds__(RED_THREADS) k_softmax(float *x, int n) {
    __shared__ float sh[32];
    float *r = x + (int64_t)blockIdx.x * n;
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < n; i += RED_THREADS) mx = fmaxf(mx, r[i]);
    mx = block_reduce(mx, OpMaxF(), sh);
    float sum = 0;
    for (int i = threadIdx.x; i < n; i += RED_THREADS) {
        const float e = expf(r[i] - mx);
        r[i] = e;
        sum += e;
    }
    sum = block_reduce(sum, OpAddF(), sh);
    const float inv = 1.0f / sum;
    for (int i = threadIdx.x; i < n; i += RED_THREADS) r[i] *= inv;
}

nb_status nb_cuda_softmax(nb_cuda_ctx *c, float *d_x, int64_t rows, int n, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, rows < 0 || rows > INT32_MAX || n <= 0, NB_ERR_RANGE, "cuda: softmax: %lld rows of %d",
                 (long long)rows, n);
    if (rows == 0) return NB_OK;
    NB_TRY(nb_cuda_enter(c, ctx));
    k_softmax<<<(unsigned)rows, RED_THREADS, 0, c->stream>>>(d_x, n);
    NB_CU_LAUNCHED(ctx, "softmax kernel launch");
    return NB_OK;
}

/* ---- attention: one warp per (token, head), online softmax over the cache ------------ */

__global__ void __launch_bounds__(32 * ATT_WARPS)
    k_attention(const float *q, const float *k, const float *v, float *out, int n_tok, int pos, int n_head, int group,
                int hd, int n_ctx, float scale, int window) {
    const int64_t wi = (int64_t)blockIdx.x * ATT_WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (wi >= (int64_t)n_tok * n_head) return;
    const int t = (int)(wi / n_head), h = (int)(wi % n_head), kvh = h / group;
    const float *qr = q + wi * hd;
    const float *K = k + (int64_t)kvh * n_ctx * hd, *V = v + (int64_t)kvh * n_ctx * hd;
    const int p1 = pos + t;
    const int p0 = window > 0 && p1 - window + 1 > 0 ? p1 - window + 1 : 0;
    float qv[ATT_MAXD], acc[ATT_MAXD];
#pragma unroll
    for (int i = 0; i < ATT_MAXD; i++) {
        const int d = lane + 32 * i;
        qv[i] = d < hd ? qr[d] : 0.f;
        acc[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int p = p0; p <= p1; p++) {
        const float *kr = K + (int64_t)p * hd, *vr = V + (int64_t)p * hd;
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < ATT_MAXD; i++) {
            const int d = lane + 32 * i;
            if (d < hd) s += qv[i] * kr[d];
        }
        s = nb_warp_sum(s) * scale;
        const float mn = fmaxf(m, s), corr = expf(m - mn), e = expf(s - mn);
        l = l * corr + e;
#pragma unroll
        for (int i = 0; i < ATT_MAXD; i++) {
            const int d = lane + 32 * i;
            if (d < hd) acc[i] = acc[i] * corr + e * vr[d];
        }
        m = mn;
    }
    const float inv = 1.0f / l;
    float *o = out + wi * hd;
#pragma unroll
    for (int i = 0; i < ATT_MAXD; i++) {
        const int d = lane + 32 * i;
        if (d < hd) o[d] = acc[i] * inv;
    }
}

nb_status nb_cuda_attention(nb_cuda_ctx *c, const float *d_q, const float *d_k, const float *d_v, float *d_out,
                            int n_tok, int pos, int n_head, int n_head_kv, int head_dim, int n_ctx, float scale,
                            int window, nb_ctx *ctx) {
    NB_RETURN_IF(ctx,
                 n_tok < 0 || pos < 0 || n_head <= 0 || n_head_kv <= 0 || n_head % n_head_kv || head_dim <= 0 ||
                     head_dim > 32 * ATT_MAXD || window < 0 || (int64_t)pos + n_tok > n_ctx,
                 NB_ERR_RANGE, "cuda: attention: %d tokens at %d, heads %d/%d of %d, n_ctx %d, window %d", n_tok, pos,
                 n_head, n_head_kv, head_dim, n_ctx, window);
    const int64_t warps = (int64_t)n_tok * n_head;
    if (warps == 0) return NB_OK;
    NB_TRY(nb_cuda_enter(c, ctx));
    k_attention<<<nb_cu_blocks(warps, ATT_WARPS), 32 * ATT_WARPS, 0, c->stream>>>(
        d_q, d_k, d_v, d_out, n_tok, pos, n_head, n_head / n_head_kv, head_dim, n_ctx, scale, window);
    NB_CU_LAUNCHED(ctx, "attention kernel launch");
    return NB_OK;
}

/* ---- MoE routing: one warp per token; lane l holds experts l, l+32, ... ---------------- */

__global__ void k_moe_topk(const float *logits, int64_t n_tok, int X, int K, bool norm, float scale, int32_t *sel,
                           float *wout) {
    const int64_t t = (int64_t)blockIdx.x * 4 + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (t >= n_tok) return;
    const float *lg = logits + t * X;
    float p[MOE_MAXE];
    float mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < MOE_MAXE; i++) {
        const int e = lane + 32 * i;
        p[i] = e < X ? lg[e] : -INFINITY;
        mx = fmaxf(mx, p[i]);
    }
    mx = nb_warp_max(mx);
    double sum = 0;
#pragma unroll
    for (int i = 0; i < MOE_MAXE; i++) {
        const int e = lane + 32 * i;
        p[i] = e < X ? expf(p[i] - mx) : 0.f;
        sum += p[i];
    }
    sum = nb_warp_sum_d(sum);
    const float inv = (float)(1.0 / sum);
    unsigned taken = 0;
#pragma unroll
    for (int i = 0; i < MOE_MAXE; i++) p[i] *= inv;
    int32_t *st = sel + t * K;
    float *wt = wout + t * K;
    for (int j = 0; j < K; j++) {
        /* this lane's best untaken expert, then the warp's: larger p, ties to the lower id */
        float bv = -1.f;
        int be = INT32_MAX;
#pragma unroll
        for (int i = 0; i < MOE_MAXE; i++) {
            const int e = lane + 32 * i;
            if (e < X && !(taken >> i & 1u) && (p[i] > bv || be == INT32_MAX)) {
                bv = p[i];
                be = e;
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oe = __shfl_xor_sync(0xffffffffu, be, o);
            if (oe != INT32_MAX && (be == INT32_MAX || ov > bv || (ov == bv && oe < be))) {
                bv = ov;
                be = oe;
            }
        }
        if (be % 32 == lane) taken |= 1u << (be / 32);
        if (lane == 0) {
            st[j] = be;
            wt[j] = bv;
        }
    }
    if (lane == 0) {
        if (norm) {
            float s = 0;
            for (int j = 0; j < K; j++) s += wt[j];
            for (int j = 0; j < K; j++) wt[j] /= s;
        }
        if (scale != 1.0f)
            for (int j = 0; j < K; j++) wt[j] *= scale;
    }
}

nb_status nb_cuda_moe_topk(nb_cuda_ctx *c, const float *d_logits, int64_t n_tok, int n_expert, int k, bool norm,
                           float scale, int32_t *d_sel, float *d_w, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, n_tok < 0 || n_expert <= 0 || n_expert > 32 * MOE_MAXE || k < 1 || k > n_expert, NB_ERR_RANGE,
                 "cuda: moe_topk: %lld tokens, top %d of %d experts (at most %d)", (long long)n_tok, k, n_expert,
                 32 * MOE_MAXE);
    NB_RETURN_IF(ctx, n_tok / 4 >= INT32_MAX, NB_ERR_RANGE, "cuda: moe_topk: too many tokens");
    if (n_tok == 0) return NB_OK;
    NB_TRY(nb_cuda_enter(c, ctx));
    k_moe_topk<<<nb_cu_blocks(n_tok, 4), 128, 0, c->stream>>>(d_logits, n_tok, n_expert, k, norm, scale, d_sel, d_w);
    NB_CU_LAUNCHED(ctx, "moe_topk kernel launch");
    return NB_OK;
}
