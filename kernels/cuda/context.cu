/* kernels/cuda/context.cu — device probe, the CUDA context, buffers, transfers, errors. */
#include "kernels/cuda/cuda_impl.cuh"

extern "C" {
#include "quant/nf4.h"
}

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

nb_status nb_cuda_status(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return NB_OK;
    case cudaErrorMemoryAllocation: return NB_ERR_NOMEM;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorCallRequiresNewerDriver: return NB_ERR_UNSUPPORTED;
    case cudaErrorInvalidValue:
    case cudaErrorInvalidConfiguration: return NB_ERR_INVALID;
    default: return NB_ERR_INTERNAL;
    }
}

nb_status nb_cuda_fail(nb_ctx *ctx, cudaError_t e, const char *what) {
    return nb_err(ctx, nb_cuda_status(e), "cuda: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

int nb_cuda_device_count(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* clear it: a missing driver is an answer here, not an error */
        return 0;
    }
    return n > 0 ? n : 0;
}

nb_status nb_cuda_enter(nb_cuda_ctx *c, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, !c, NB_ERR_INVALID, "cuda: no context");
    NB_CU(ctx, cudaSetDevice(c->device));
    return NB_OK;
}

nb_status nb_cuda_ctx_create(int device, nb_cuda_ctx **out, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, !out, NB_ERR_INVALID, "cuda: ctx_create: NULL out");
    *out = NULL;
    int n = nb_cuda_device_count();
    NB_RETURN_IF(ctx, device < 0 || device >= n, NB_ERR_UNSUPPORTED, "cuda: device %d requested, %d found", device,
                 n);
    nb_cuda_ctx *c = (nb_cuda_ctx *)nb_calloc(ctx, 1, sizeof *c, "cuda context");
    if (!c) return NB_ERR_NOMEM;
    c->device = device;
    nb_status st = NB_OK;
    cudaDeviceProp prop;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        st = nb_cuda_fail(ctx, e, "opening the device");
        free(c);
        return st;
    }
    snprintf(c->name, sizeof c->name, "%.255s (sm_%d%d)", prop.name, prop.major, prop.minor);
    float map[256];
    nb_dynamic_map_signed(map);
    void *d = NULL;
    st = nb_cuda_alloc(c, sizeof map, &d, ctx);
    if (st == NB_OK) st = nb_cuda_upload(c, d, map, sizeof map, ctx);
    if (st == NB_OK) st = nb_cuda_sync(c, ctx);
    if (st != NB_OK) {
        nb_cuda_ctx_free(c);
        return st;
    }
    c->d_dynmap = (float *)d;
    *out = c;
    return NB_OK;
}

void nb_cuda_ctx_free(nb_cuda_ctx *c) {
    if (!c) return;
    (void)cudaSetDevice(c->device);
    if (c->stream) (void)cudaStreamSynchronize(c->stream);
    for (nb_cuda_buf *b = c->bufs, *next; b; b = next) {
        next = b->next;
        (void)cudaFree(b->ptr);
        free(b);
    }
    if (c->stream) (void)cudaStreamDestroy(c->stream);
    (void)cudaGetLastError();
    free(c);
}

const char *nb_cuda_device_name(const nb_cuda_ctx *c) { return c ? c->name : ""; }
size_t nb_cuda_bytes_in_use(const nb_cuda_ctx *c) { return c ? c->in_use : 0; }
size_t nb_cuda_bytes_peak(const nb_cuda_ctx *c) { return c ? c->peak : 0; }

nb_status nb_cuda_alloc(nb_cuda_ctx *c, size_t bytes, void **d_out, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, !d_out || bytes == 0, NB_ERR_INVALID, "cuda: alloc of %zu bytes", bytes);
    *d_out = NULL;
    NB_TRY(nb_cuda_enter(c, ctx));
    nb_cuda_buf *b = (nb_cuda_buf *)nb_malloc(ctx, sizeof *b, "cuda buffer record");
    if (!b) return NB_ERR_NOMEM;
    cudaError_t e = cudaMalloc(&b->ptr, bytes);
    if (e != cudaSuccess) {
        free(b);
        (void)cudaGetLastError();
        return nb_err(ctx, nb_cuda_status(e), "cuda: cudaMalloc of %zu bytes (%zu in use): %s", bytes, c->in_use,
                      cudaGetErrorString(e));
    }
    b->bytes = bytes;
    b->next = c->bufs;
    c->bufs = b;
    c->in_use += bytes;
    if (c->in_use > c->peak) c->peak = c->in_use;
    *d_out = b->ptr;
    return NB_OK;
}

void nb_cuda_free(nb_cuda_ctx *c, void *d_ptr) {
    if (!c || !d_ptr) return;
    for (nb_cuda_buf **pp = &c->bufs; *pp; pp = &(*pp)->next) {
        nb_cuda_buf *b = *pp;
        if (b->ptr != d_ptr) continue;
        (void)cudaSetDevice(c->device);
        (void)cudaStreamSynchronize(c->stream); /* queued kernels may still read it */
        (void)cudaFree(b->ptr);
        c->in_use -= b->bytes;
        *pp = b->next;
        free(b);
        return;
    }
}

nb_status nb_cuda_upload(nb_cuda_ctx *c, void *d_dst, const void *src, size_t bytes, nb_ctx *ctx) {
    NB_TRY(nb_cuda_enter(c, ctx));
    if (bytes == 0) return NB_OK;
    /* pageable host memory: the copy is staged before the call returns, so src may be reused */
    NB_CU(ctx, cudaMemcpyAsync(d_dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    return NB_OK;
}

nb_status nb_cuda_download(nb_cuda_ctx *c, void *dst, const void *d_src, size_t bytes, nb_ctx *ctx) {
    NB_TRY(nb_cuda_enter(c, ctx));
    NB_CU(ctx, cudaStreamSynchronize(c->stream));
    if (bytes == 0) return NB_OK;
    NB_CU(ctx, cudaMemcpyAsync(dst, d_src, bytes, cudaMemcpyDeviceToHost, c->stream));
    NB_CU(ctx, cudaStreamSynchronize(c->stream));
    return NB_OK;
}

nb_status nb_cuda_sync(nb_cuda_ctx *c, nb_ctx *ctx) {
    NB_TRY(nb_cuda_enter(c, ctx));
    NB_CU(ctx, cudaStreamSynchronize(c->stream));
    return NB_OK;
}
