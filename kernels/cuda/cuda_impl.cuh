/* kernels/cuda/cuda_impl.cuh — internals shared by the .cu files (C++ / CUDA only).
 *
 * The context struct, the error-checking macro every CUDA call goes through,
 * launch helpers and warp/block reductions.
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

__device__ __forceinline__ float nb_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double nb_warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float nb_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
