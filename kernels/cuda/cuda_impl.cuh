/* kernels/cuda/cuda_impl.cuh — internals shared by the .cu files (C++ / CUDA only).
 *
 * The context struct, the error-checking macro every CUDA call goes through,
 * launch helpers, and what the kernels share with their host runs: FMA-free
 * arithmetic and warp reductions over a DevWarp (shuffles) or a HostWarp.
 */
#ifndef NB_KERNELS_CUDA_IMPL_CUH
#define NB_KERNELS_CUDA_IMPL_CUH

/* libnibble's C headers: C linkage */
extern "C" {
#include "core/ctx.h"
#include "core/types.h"
}
#include "kernels/cuda/cuda.h"

#include <cuda_runtime.h>

#include <stdint.h>

/* Buffers the context owns, in a singly linked list (allocation is rare:
 * weights once, scratch per shape). */
typedef struct nb_cuda_buf {
    void *ptr;
    size_t bytes;
    struct nb_cuda_buf *next;
} nb_cuda_buf;

struct nb_cuda_ctx {
    int device;
    cudaStream_t stream;
    char name[320]; /* cudaDeviceProp.name (256) + " (sm_NN)" */
    nb_cuda_buf *bufs;
    size_t in_use, peak;
    /* bitsandbytes' signed dynamic map (256 floats, quant/nf4.h), for NF4_DQ's
     * absmax codes: uploaded once at create time. */
    float *d_dynmap;
};

/* The nb_status a CUDA error maps to (contract in cuda.h). */
nb_status nb_cuda_status(cudaError_t e);
/* Record a CUDA failure of `what` on ctx: "cuda: <what>: <error string>". */
nb_status nb_cuda_fail(nb_ctx *ctx, cudaError_t e, const char *what);

/* Every CUDA runtime call goes through this: on failure, return its status
 * with a message naming the call. */
#define NB_CU(ctx, call)                                                                           \
    do {                                                                                           \
        cudaError_t nb__e = (call);                                                                \
        if (nb__e != cudaSuccess) return nb_cuda_fail((ctx), nb__e, #call);                        \
    } while (0)

/* After a kernel launch: report a bad configuration or a launch failure now. */
#define NB_CU_LAUNCHED(ctx, what)                                                                  \
    do {                                                                                           \
        cudaError_t nb__e = cudaGetLastError();                                                    \
        if (nb__e != cudaSuccess) return nb_cuda_fail((ctx), nb__e, (what));                       \
    } while (0)

/* Make the context's device current for this host thread. */
nb_status nb_cuda_enter(nb_cuda_ctx *c, nb_ctx *ctx);

static inline unsigned nb_cu_blocks(int64_t n, int per_block) { return (unsigned)((n + per_block - 1) / per_block); }

/* ---- code compiled for the device and the host ------------------------------------------
 * Parts of the kernels are __host__ __device__ so that *_host functions can
 * run them on the CPU (tests without a GPU). */
#define HD __host__ __device__ __forceinline__
/* #pragma unroll in code that is also compiled for the host */
#ifdef __CUDA_ARCH__
#define NB_UNROLL _Pragma("unroll")
#else
#define NB_UNROLL
#endif

/* IEEE single multiply / add / subtract that are never contracted into an FMA
 * (the host side is compiled with -ffp-contract=off). */
HD float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
HD float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
HD float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

/* Cross-lane exchange for warp code shared by a kernel and its host run:
 * xor(v, o, lane) returns lane (lane ^ o)'s v, as __shfl_xor_sync over a full
 * warp. DevWarp is the shuffle; HostWarp runs each lane on its own host
 * thread and exchanges through memory between two barriers. */
struct DevWarp {
    template <class T>
    HD T xor_(T v, int o, int lane) const {
        (void)lane;
#ifdef __CUDA_ARCH__
        return __shfl_xor_sync(0xffffffffu, v, o);
#else
        (void)o;
        return v; /* never used: host code runs HostWarp */
#endif
    }
};
struct HostWarp {
    void *bar;    /* pthread_barrier_t of the 32 lane threads */
    double *slot; /* [32]: one value per lane (float, double and int fit exactly) */
    template <class T>
    HD T xor_(T v, int o, int lane) const;
};

template <class W, class T>
HD T warp_sum(const W &w, T v, int lane) {
    NB_UNROLL
    for (int o = 16; o > 0; o >>= 1) v += w.xor_(v, o, lane);
    return v;
}
template <class W>
HD float warp_max(const W &w, float v, int lane) {
    NB_UNROLL
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, w.xor_(v, o, lane));
    return v;
}

#endif
