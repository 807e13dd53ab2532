/* kernels/cuda/ops.cu — RMSNorm, RoPE, softmax, attention and MoE routing on the GPU.
 *
 * Each kernel is the CPU engine's function (engine/forward.c, forward_moe.c)
 * with the same float expressions; only the order of the sums differs (tree
 * reductions instead of one loop), except RoPE, which is bit-exact.
 */
#include "kernels/cuda/cuda_impl.cuh"

#include <math.h>
#include <pthread.h>

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

/* Rotate pair g (of n_tok x n_head x half); shared by the kernel and nb_cuda_rope_host. */
HD void rope_pair(float *v, int64_t g, int n_head, int hd, int half, bool neox, const float *cs) {
    const int i = (int)(g % half);
    const int64_t th = g / half, t = th / n_head;
    float *x = v + th * hd;
    const float co = cs[(t * half + i) * 2], si = cs[(t * half + i) * 2 + 1];
    const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    const float x0 = x[a], x1 = x[b];
    x[a] = sub_rn(mul_rn(x0, co), mul_rn(x1, si));
    x[b] = add_rn(mul_rn(x0, si), mul_rn(x1, co));
}

__global__ void k_rope(float *v, int64_t n_pairs, int n_head, int hd, int half, bool neox, const float *cs) {
    const int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g < n_pairs) rope_pair(v, g, n_head, hd, half, neox, cs);
}

static nb_status rope_check(int64_t n_tok, int n_head, int head_dim, int n_rot, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, n_tok < 0 || n_head <= 0 || n_rot <= 0 || n_rot % 2 || n_rot > head_dim, NB_ERR_RANGE,
                 "cuda: rope: %lld tokens, %d heads of %d, n_rot %d", (long long)n_tok, n_head, head_dim, n_rot);
    NB_RETURN_IF(ctx, n_tok * n_head * (n_rot / 2) / 256 >= INT32_MAX, NB_ERR_RANGE, "cuda: rope: too many pairs");
    return NB_OK;
}

nb_status nb_cuda_rope_host(float *v, int64_t n_tok, int n_head, int head_dim, int n_rot, bool neox, const float *cs,
                            nb_ctx *ctx) {
    NB_TRY(rope_check(n_tok, n_head, head_dim, n_rot, ctx));
    for (int64_t g = 0; g < n_tok * n_head * (n_rot / 2); g++) rope_pair(v, g, n_head, head_dim, n_rot / 2, neox, cs);
    return NB_OK;
}

nb_status nb_cuda_rope(nb_cuda_ctx *c, float *d_v, int64_t n_tok, int n_head, int head_dim, int n_rot, bool neox,
                       const float *d_cs, nb_ctx *ctx) {
    NB_TRY(rope_check(n_tok, n_head, head_dim, n_rot, ctx));
    const int64_t n_pairs = n_tok * n_head * (n_rot / 2);
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

struct AttArgs {
    const float *q, *k, *v;
    float *out;
    int n_tok, pos, n_head, group, hd, n_ctx, window;
    float scale;
};

/* Warp wi = t * n_head + h: out[wi] = softmax(scale * q[wi] . K) V over the
 * positions query t sees; lane l holds dims l, l+32, ... */
template <class W>
HD void attention_warp(const W &w, int lane, int64_t wi, const AttArgs &a) {
    const int hd = a.hd;
    const int t = (int)(wi / a.n_head), h = (int)(wi % a.n_head), kvh = h / a.group;
    const float *qr = a.q + wi * hd;
    const float *K = a.k + (int64_t)kvh * a.n_ctx * hd, *V = a.v + (int64_t)kvh * a.n_ctx * hd;
    const int p1 = a.pos + t;
    const int p0 = a.window > 0 && p1 - a.window + 1 > 0 ? p1 - a.window + 1 : 0;
    float qv[ATT_MAXD], acc[ATT_MAXD];
    NB_UNROLL
    for (int i = 0; i < ATT_MAXD; i++) {
        const int d = lane + 32 * i;
        qv[i] = d < hd ? qr[d] : 0.f;
        acc[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int p = p0; p <= p1; p++) {
        const float *kr = K + (int64_t)p * hd, *vr = V + (int64_t)p * hd;
        float s = 0.f;
        NB_UNROLL
        for (int i = 0; i < ATT_MAXD; i++) {
            const int d = lane + 32 * i;
            if (d < hd) s += qv[i] * kr[d];
        }
        s = warp_sum(w, s, lane) * a.scale;
        const float mn = fmaxf(m, s), corr = expf(m - mn), e = expf(s - mn);
        l = l * corr + e;
        NB_UNROLL
        for (int i = 0; i < ATT_MAXD; i++) {
            const int d = lane + 32 * i;
            if (d < hd) acc[i] = acc[i] * corr + e * vr[d];
        }
        m = mn;
    }
    const float inv = 1.0f / l;
    float *o = a.out + wi * hd;
    NB_UNROLL
    for (int i = 0; i < ATT_MAXD; i++) {
        const int d = lane + 32 * i;
        if (d < hd) o[d] = acc[i] * inv;
    }
}

__global__ void __launch_bounds__(32 * ATT_WARPS) k_attention(AttArgs a) {
    const int64_t wi = (int64_t)blockIdx.x * ATT_WARPS + threadIdx.x / 32;
    if (wi < (int64_t)a.n_tok * a.n_head) attention_warp(DevWarp(), threadIdx.x & 31, wi, a);
}

static nb_status attention_args(const float *q, const float *k, const float *v, float *out, int n_tok, int pos,
                                int n_head, int n_head_kv, int head_dim, int n_ctx, float scale, int window,
                                AttArgs *a, nb_ctx *ctx) {
    NB_RETURN_IF(ctx,
                 n_tok < 0 || pos < 0 || n_head <= 0 || n_head_kv <= 0 || n_head % n_head_kv || head_dim <= 0 ||
                     head_dim > 32 * ATT_MAXD || window < 0 || (int64_t)pos + n_tok > n_ctx,
                 NB_ERR_RANGE, "cuda: attention: %d tokens at %d, heads %d/%d of %d, n_ctx %d, window %d", n_tok, pos,
                 n_head, n_head_kv, head_dim, n_ctx, window);
    *a = AttArgs{q, k, v, out, n_tok, pos, n_head, n_head / n_head_kv, head_dim, n_ctx, window, scale};
    return NB_OK;
}

nb_status nb_cuda_attention(nb_cuda_ctx *c, const float *d_q, const float *d_k, const float *d_v, float *d_out,
                            int n_tok, int pos, int n_head, int n_head_kv, int head_dim, int n_ctx, float scale,
                            int window, nb_ctx *ctx) {
    AttArgs a;
    NB_TRY(attention_args(d_q, d_k, d_v, d_out, n_tok, pos, n_head, n_head_kv, head_dim, n_ctx, scale, window, &a,
                          ctx));
    const int64_t warps = (int64_t)n_tok * n_head;
    if (warps == 0) return NB_OK;
    NB_TRY(nb_cuda_enter(c, ctx));
    k_attention<<<nb_cu_blocks(warps, ATT_WARPS), 32 * ATT_WARPS, 0, c->stream>>>(a);
    NB_CU_LAUNCHED(ctx, "attention kernel launch");
    return NB_OK;
}

/* ---- MoE routing: one warp per token; lane l holds experts l, l+32, ... ---------------- */

struct MoeArgs {
    const float *logits;
    int64_t n_tok;
    int X, K;
    bool norm;
    float scale;
    int32_t *sel;
    float *w;
};

template <class W>
HD void moe_warp(const W &w, int lane, int64_t t, const MoeArgs &a) {
    const int X = a.X, K = a.K;
    const float *lg = a.logits + t * X;
    float p[MOE_MAXE];
    float mx = -INFINITY;
    NB_UNROLL
    for (int i = 0; i < MOE_MAXE; i++) {
        const int e = lane + 32 * i;
        p[i] = e < X ? lg[e] : -INFINITY;
        mx = fmaxf(mx, p[i]);
    }
    mx = warp_max(w, mx, lane);
    double sum = 0;
    NB_UNROLL
    for (int i = 0; i < MOE_MAXE; i++) {
        const int e = lane + 32 * i;
        p[i] = e < X ? expf(p[i] - mx) : 0.f;
        sum += p[i];
    }
    sum = warp_sum(w, sum, lane);
    const float inv = (float)(1.0 / sum);
    unsigned taken = 0;
    NB_UNROLL
    for (int i = 0; i < MOE_MAXE; i++) p[i] *= inv;
    int32_t *st = a.sel + t * K;
    float *wt = a.w + t * K;
    for (int j = 0; j < K; j++) {
        /* this lane's best untaken expert, then the warp's: larger p, ties to the lower id */
        float bv = -1.f;
        int be = INT32_MAX;
        NB_UNROLL
        for (int i = 0; i < MOE_MAXE; i++) {
            const int e = lane + 32 * i;
            if (e < X && !(taken >> i & 1u) && (p[i] > bv || be == INT32_MAX)) {
                bv = p[i];
                be = e;
            }
        }
        NB_UNROLL
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = w.xor_(bv, o, lane);
            const int oe = w.xor_(be, o, lane);
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
        if (a.norm) {
            float s = 0;
            for (int j = 0; j < K; j++) s += wt[j];
            for (int j = 0; j < K; j++) wt[j] /= s;
        }
        if (a.scale != 1.0f)
            for (int j = 0; j < K; j++) wt[j] *= a.scale;
    }
}

__global__ void k_moe_topk(MoeArgs a) {
    const int64_t t = (int64_t)blockIdx.x * 4 + threadIdx.x / 32;
    if (t < a.n_tok) moe_warp(DevWarp(), threadIdx.x & 31, t, a);
}

static nb_status moe_args(const float *logits, int64_t n_tok, int n_expert, int k, bool norm, float scale,
                          int32_t *sel, float *w, MoeArgs *a, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, n_tok < 0 || n_expert <= 0 || n_expert > 32 * MOE_MAXE || k < 1 || k > n_expert, NB_ERR_RANGE,
                 "cuda: moe_topk: %lld tokens, top %d of %d experts (at most %d)", (long long)n_tok, k, n_expert,
                 32 * MOE_MAXE);
    NB_RETURN_IF(ctx, n_tok / 4 >= INT32_MAX, NB_ERR_RANGE, "cuda: moe_topk: too many tokens");
    *a = MoeArgs{logits, n_tok, n_expert, k, norm, scale, sel, w};
    return NB_OK;
}

nb_status nb_cuda_moe_topk(nb_cuda_ctx *c, const float *d_logits, int64_t n_tok, int n_expert, int k, bool norm,
                           float scale, int32_t *d_sel, float *d_w, nb_ctx *ctx) {
    MoeArgs a;
    NB_TRY(moe_args(d_logits, n_tok, n_expert, k, norm, scale, d_sel, d_w, &a, ctx));
    if (n_tok == 0) return NB_OK;
    NB_TRY(nb_cuda_enter(c, ctx));
    k_moe_topk<<<nb_cu_blocks(n_tok, 4), 128, 0, c->stream>>>(a);
    NB_CU_LAUNCHED(ctx, "moe_topk kernel launch");
    return NB_OK;
}

/* ---- host runs of the warp kernels: 32 threads, one per lane ------------------------------ */

template <class T>
HD T HostWarp::xor_(T v, int o, int lane) const {
#ifdef __CUDA_ARCH__
    (void)o;
    (void)lane;
    return v; /* never used: device code runs DevWarp */
#else
    slot[lane] = (double)v;
    pthread_barrier_wait((pthread_barrier_t *)bar);
    const T r = (T)slot[lane ^ o];
    pthread_barrier_wait((pthread_barrier_t *)bar);
    return r;
#endif
}

/* Lane threads start together once all 32 exist (or none runs: a missing
 * lane would leave the others waiting at the barrier for ever). */
struct HostGate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state; /* 0 wait, 1 run, 2 cancelled */
};

/* Every lane thread runs all n_warps warps in order, in step through the barriers. */
struct HostRun {
    HostWarp *w;
    HostGate *gate;
    int lane;
    int64_t n_warps;
    void (*one)(const HostWarp &, int, int64_t, const void *);
    const void *args;
};

static void *host_lane(void *p) {
    const HostRun *r = (const HostRun *)p;
    pthread_mutex_lock(&r->gate->mu);
    while (r->gate->state == 0) pthread_cond_wait(&r->gate->cv, &r->gate->mu);
    const int run = r->gate->state == 1;
    pthread_mutex_unlock(&r->gate->mu);
    if (run)
        for (int64_t wi = 0; wi < r->n_warps; wi++) r->one(*r->w, r->lane, wi, r->args);
    return NULL;
}

static nb_status host_warps(int64_t n_warps, void (*one)(const HostWarp &, int, int64_t, const void *),
                            const void *args, nb_ctx *ctx) {
    pthread_barrier_t bar;
    double slot[32];
    HostWarp w = {&bar, slot};
    HostGate gate;
    HostRun runs[32];
    pthread_t th[32];
    NB_RETURN_IF(ctx, pthread_barrier_init(&bar, NULL, 32) != 0, NB_ERR_NOMEM, "cuda: host run: barrier");
    pthread_mutex_init(&gate.mu, NULL);
    pthread_cond_init(&gate.cv, NULL);
    gate.state = 0;
    int started = 0;
    for (; started < 32; started++) {
        runs[started] = HostRun{&w, &gate, started, n_warps, one, args};
        if (pthread_create(&th[started], NULL, host_lane, &runs[started]) != 0) break;
    }
    pthread_mutex_lock(&gate.mu);
    gate.state = started == 32 ? 1 : 2;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    pthread_cond_destroy(&gate.cv);
    pthread_mutex_destroy(&gate.mu);
    pthread_barrier_destroy(&bar);
    NB_RETURN_IF(ctx, started < 32, NB_ERR_NOMEM, "cuda: host run: could not start 32 lane threads");
    return NB_OK;
}

static void attention_one(const HostWarp &w, int lane, int64_t wi, const void *a) {
    attention_warp(w, lane, wi, *(const AttArgs *)a);
}
static void moe_one(const HostWarp &w, int lane, int64_t t, const void *a) { moe_warp(w, lane, t, *(const MoeArgs *)a); }

nb_status nb_cuda_attention_host(const float *q, const float *k, const float *v, float *out, int n_tok, int pos,
                                 int n_head, int n_head_kv, int head_dim, int n_ctx, float scale, int window,
                                 nb_ctx *ctx) {
    AttArgs a;
    NB_TRY(attention_args(q, k, v, out, n_tok, pos, n_head, n_head_kv, head_dim, n_ctx, scale, window, &a, ctx));
    return host_warps((int64_t)n_tok * n_head, attention_one, &a, ctx);
}

nb_status nb_cuda_moe_topk_host(const float *logits, int64_t n_tok, int n_expert, int k, bool norm, float scale,
                                int32_t *sel, float *w, nb_ctx *ctx) {
    MoeArgs a;
    NB_TRY(moe_args(logits, n_tok, n_expert, k, norm, scale, sel, w, &a, ctx));
    return host_warps(n_tok, moe_one, &a, ctx);
}
