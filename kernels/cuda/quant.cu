/* kernels/cuda/quant.cu — dequantize and matmul on packed weights (every supported type).
 *
 * One decoder per type reads element k of a packed row (block k / QK,
 * position k % QK) with the CPU dequantizer's float expression, written with
 * mul_rn / sub_rn (__fmul_rn / __fsub_rn on the device) so nvcc never fuses
 * it into an FMA: nb_cuda_dequantize is bit-exact with the type table's
 * to_float. Decoders read bytes one at a time (blocks of 18, 34 or 210 bytes
 * leave fp16 fields only 2-aligned). They are __host__ __device__: the same
 * source also runs on the CPU (nb_cuda_dequantize_host), so the layouts are
 * tested on machines without a GPU.
 *
 * Matmul (nb_cuda_matmul): one warp per output row; lane l decodes elements
 * l, l+32, ... of the row (consecutive lanes read neighbouring bytes) and
 * multiplies each with NT token rows of f32 activations; warp shuffle sums.
 * NT = 1 is the matrix-vector kernel, NT = 8 the matrix-matrix one (a weight
 * element is decoded once per 8 tokens). Each (type, NT) pair is one template
 * instance: 23 decoders x 3 kernels keeps the fat binary's compile time small.
 * Speed work (shared-memory tiles, int8 dot products, tensor cores) is for
 * when a GPU can measure it (docs/cuda.md).
 */
#include "kernels/cuda/cuda_impl.cuh"

extern "C" {
#include "core/fp.h"
#include "quant/ggml_quants.h"
#include "quant/int4.h"
#include "quant/nf4.h"
}

#include <cuda_fp16.h>
#include <string.h>

/* ---- byte readers, device and host ------------------------------------------------- */

HD float bits_f32(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}
HD uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8); }
HD float rdf16(const uint8_t *p) {
#ifdef __CUDA_ARCH__
    return __half2float(__ushort_as_half((unsigned short)rd16(p)));
#else
    return nb_f16_to_f32((uint16_t)rd16(p));
#endif
}
HD float rdf32(const uint8_t *p) { return bits_f32(rd16(p) | (rd16(p + 2) << 16)); }

/* The code books: one literal list for the device's constant memory and the
 * host copy (the host test checks the list against the CPU dequantizers). */
#define NB_NF4_VALUES                                                                                          \
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,           \
        -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,        \
        0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,                 \
        0.7229568362236023f, 1.0f
#define NB_IQ4NL_VALUES -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113
__constant__ float k_nf4_dev[16] = {NB_NF4_VALUES};
__constant__ int8_t k_iq4nl_dev[16] = {NB_IQ4NL_VALUES};
#ifndef __CUDA_ARCH__
static const float k_nf4_host[16] = {NB_NF4_VALUES};
static const int8_t k_iq4nl_host[16] = {NB_IQ4NL_VALUES};
#endif
HD float nf4_value(int q) {
#ifdef __CUDA_ARCH__
    return k_nf4_dev[q];
#else
    return k_nf4_host[q];
#endif
}
HD float iq4nl_value(int q) {
#ifdef __CUDA_ARCH__
    return (float)k_iq4nl_dev[q];
#else
    return (float)k_iq4nl_host[q];
#endif
}

/* ---- decoders: static float get(row, k, aux); aux = the NF4_DQ absmax map ------------ */

struct DecF32 {
    static HD float get(const uint8_t *r, int64_t k, const float *) { return rdf32(r + 4 * k); }
};
struct DecF16 {
    static HD float get(const uint8_t *r, int64_t k, const float *) { return rdf16(r + 2 * k); }
};
struct DecBF16 {
    static HD float get(const uint8_t *r, int64_t k, const float *) { return bits_f32(rd16(r + 2 * k) << 16); }
};
/* Q8_0: {f16 d; int8 qs[32]}, value = qs[j] * d */
struct DecQ8_0 {
    static HD float get(const uint8_t *r, int64_t k, const float *) {
        const uint8_t *b = r + (k >> 5) * 34;
        return mul_rn((float)(int8_t)b[2 + (k & 31)], rdf16(b));
    }
};
/* Q4_0: {f16 d; qs[16]}: j < 16 low nibble of qs[j], else high nibble of qs[j-16]; (q - 8) * d */
struct DecQ4_0 {
    static HD float get(const uint8_t *r, int64_t k, const float *) {
        const uint8_t *b = r + (k >> 5) * 18;
        const int j = (int)(k & 31);
        const int q = j < 16 ? b[2 + j] & 0xF : b[2 + j - 16] >> 4;
        return mul_rn((float)(q - 8), rdf16(b));
    }
};
/* IQ4_NL: Q4_0's layout, value = d * kvalues[q] */
struct DecIQ4_NL {
    static HD float get(const uint8_t *r, int64_t k, const float *) {
        const uint8_t *b = r + (k >> 5) * 18;
        const int j = (int)(k & 31);
        const int q = j < 16 ? b[2 + j] & 0xF : b[2 + j - 16] >> 4;
        return mul_rn(rdf16(b), iq4nl_value(q));
    }
};
/* Q4_1 (20 B): {f16 d, m; qs[16]}: Q4_0's nibbles; value = q * d + m */
struct DecQ4_1 {
    static HD float get(const uint8_t *r, int64_t k, const float *) {
        const uint8_t *b = r + (k >> 5) * 20;
        const int j = (int)(k & 31);
        const int q = j < 16 ? b[4 + j] & 0xF : b[4 + j - 16] >> 4;
        return add_rn(mul_rn((float)q, rdf16(b)), rdf16(b + 2));
    }
};
/* Q5_0 (22 B): {f16 d; qh[4]; qs[16]}: Q4_0's nibbles plus bit j of the
 * little-endian qh as bit 4; value = (q - 16) * d */
struct DecQ5_0 {
    static HD float get(const uint8_t *r, int64_t k, const float *) {
        const uint8_t *b = r + (k >> 5) * 22;
        const int j = (int)(k & 31);
        const int q = (j < 16 ? b[6 + j] & 0xF : b[6 + j - 16] >> 4) | (((b[2 + j / 8] >> (j % 8)) & 1) << 4);
        return mul_rn((float)(q - 16), rdf16(b));
    }
};
/* Q5_1 (24 B): {f16 d, m; qh[4]; qs[16]}; value = q * d + m */
struct DecQ5_1 {
    static HD float get(const uint8_t *r, int64_t k, const float *) {
        const uint8_t *b = r + (k >> 5) * 24;
        const int j = (int)(k & 31);
        const int q = (j < 16 ? b[8 + j] & 0xF : b[8 + j - 16] >> 4) | (((b[4 + j / 8] >> (j % 8)) & 1) << 4);
        return add_rn(mul_rn((float)q, rdf16(b)), rdf16(b + 2));
    }
};
/* Q2_K (84 B): {scales[16]; qs[64]; f16 d, dmin}; element e: 128-half n, 32-run
 * j (shift 2j), 16-run h, l = e%16; sub-block n*8 + 2j + h (low nibble scale,
 * high nibble min); code (qs[32n + 16h + l] >> 2j) & 3; value = (d*sc) * q - (dmin*m) */
struct DecQ2_K {
    static HD float get(const uint8_t *r, int64_t k, const float *) {
        const uint8_t *b = r + (k >> 8) * 84;
        const int e = (int)(k & 255), n = e >> 7, j = (e >> 5) & 3, h = (e >> 4) & 1, l = e & 15;
        const int sc = b[n * 8 + 2 * j + h];
        const int q = (b[16 + 32 * n + 16 * h + l] >> (2 * j)) & 3;
        return sub_rn(mul_rn(mul_rn(rdf16(b + 80), (float)(sc & 0xF)), (float)q),
                      mul_rn(rdf16(b + 82), (float)(sc >> 4)));
    }
};
/* Q3_K (110 B): {hmask[32]; qs[64]; scales[12]; f16 d}; element e as Q2_K, signed
 * 6-bit scale of sub-block is = n*8 + 2j + h (kernels_impl.h nb_kern_scale_q3k),
 * code ((qs[32n + 16h + l] >> 2j) & 3) - 4 unless bit 4n + j of hmask[16h + l];
 * value = (d * sc) * code */
struct DecQ3_K {
    static HD float get(const uint8_t *r, int64_t k, const float *) {
        const uint8_t *b = r + (k >> 8) * 110;
        const int e = (int)(k & 255), n = e >> 7, j = (e >> 5) & 3, h = (e >> 4) & 1, l = e & 15;
        const int is = n * 8 + 2 * j + h;
        const uint8_t *s = b + 96;
        const int lo = is < 8 ? s[is] & 0xF : s[is - 8] >> 4, hi = (s[8 + is % 4] >> (2 * (is / 4))) & 3;
        const int sc = (lo | (hi << 4)) - 32;
        const int v = ((b[32 + 32 * n + 16 * h + l] >> (2 * j)) & 3) - ((b[16 * h + l] >> (4 * n + j)) & 1 ? 0 : 4);
        return mul_rn(mul_rn(rdf16(b + 108), (float)sc), (float)v);
    }
};
/* IQ4_XS (136 B): {f16 d; u16 scales_h; scales_l[4]; qs[128]}: 32-run ib has the
 * 6-bit scale ls (low 4 bits in scales_l, high 2 in scales_h), IQ4_NL's nibble
 * order within its 16 bytes; value = (d * (ls - 32)) * kvalues[q] */
struct DecIQ4_XS {
    static HD float get(const uint8_t *r, int64_t k, const float *) {
        const uint8_t *b = r + (k >> 8) * 136;
        const int e = (int)(k & 255), ib = e >> 5, j = e & 31;
        const int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (((int)(rd16(b + 2) >> (2 * ib)) & 3) << 4);
        const uint8_t *qs = b + 8 + 16 * ib;
        const int q = j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4;
        return mul_rn(mul_rn(rdf16(b), (float)(ls - 32)), iq4nl_value(q));
    }
};
/* K-quants' 6-bit scale and min of sub-block j (kernels_impl.h nb_kern_scale_min_k4) */
HD void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}
/* Q4_K (144 B): {f16 d, dmin; scales[12]; qs[128]}; element j: 64-chunk c, half h,
 * byte qs[32c + j%32], nibble h; value = (d*sc) * q - (dmin*m) */
struct DecQ4_K {
    static HD float get(const uint8_t *r, int64_t k, const float *) {
        const uint8_t *b = r + (k >> 8) * 144;
        const int j = (int)(k & 255), c = j >> 6, h = (j >> 5) & 1, l = j & 31;
        int sc, m;
        scale_min_k4(2 * c + h, b + 4, &sc, &m);
        const int q = (b[16 + 32 * c + l] >> (4 * h)) & 0xF;
        return sub_rn(mul_rn(mul_rn(rdf16(b), (float)sc), (float)q), mul_rn(rdf16(b + 2), (float)m));
    }
};
/* Q5_K (176 B): {f16 d, dmin; scales[12]; qh[32]; qs[128]}; the 5th bit of element
 * j is bit 2c + h of qh[j%32] */
struct DecQ5_K {
    static HD float get(const uint8_t *r, int64_t k, const float *) {
        const uint8_t *b = r + (k >> 8) * 176;
        const int j = (int)(k & 255), c = j >> 6, h = (j >> 5) & 1, l = j & 31;
        int sc, m;
        scale_min_k4(2 * c + h, b + 4, &sc, &m);
        const int q = ((b[48 + 32 * c + l] >> (4 * h)) & 0xF) + (((b[16 + l] >> (2 * c + h)) & 1) << 4);
        return sub_rn(mul_rn(mul_rn(rdf16(b), (float)sc), (float)q), mul_rn(rdf16(b + 2), (float)m));
    }
};
/* Q6_K (210 B): {ql[128]; qh[64]; int8 scales[16]; f16 d}; element j: 128-half n,
 * quarter s (0..3), l = j%32; low 4 bits from ql[64n + l + 32(s&1)] (nibble s>>1),
 * high 2 bits (qh[32n + l] >> 2s) & 3; scale scales[8n + l/16 + 2s];
 * value = (d * sc) * (q - 32) */
struct DecQ6_K {
    static HD float get(const uint8_t *r, int64_t k, const float *) {
        const uint8_t *b = r + (k >> 8) * 210;
        const int j = (int)(k & 255), n = j >> 7, s = (j >> 5) & 3, l = j & 31;
        const int lo = (b[64 * n + l + 32 * (s & 1)] >> (4 * (s >> 1))) & 0xF;
        const int hi = (b[128 + 32 * n + l] >> (2 * s)) & 3;
        const int sc = (int8_t)b[192 + 8 * n + l / 16 + 2 * s];
        return mul_rn(mul_rn(rdf16(b + 208), (float)sc), (float)((lo | (hi << 4)) - 32));
    }
};
/* NF4 (36 B): {f32 d; qs[32]}: element 2i high nibble of qs[i], 2i+1 low; code[q] * d */
struct DecNF4 {
    static HD float get(const uint8_t *r, int64_t k, const float *) {
        const uint8_t *b = r + (k >> 6) * 36;
        const int j = (int)(k & 63);
        const int q = (b[4 + j / 2] >> ((j & 1) ? 0 : 4)) & 0xF;
        return mul_rn(nf4_value(q), rdf32(b));
    }
};
/* NF4_DQ (8456 B): {f32 absmax2, offset; qabsmax[256]; qs[8192]}: sub-block s = j/64
 * has absmax fl(fl(map[qabsmax[s]] * absmax2) + offset), its codes at qs[32s..] */
struct DecNF4_DQ {
    static HD float get(const uint8_t *r, int64_t k, const float *map) {
        const uint8_t *b = r + (k >> 14) * 8456;
        const int j = (int)(k & 16383), s = j >> 6, e = j & 63;
        const float a = add_rn(mul_rn(map[b[8 + s]], rdf32(b)), rdf32(b + 4));
        const int q = (b[264 + 32 * s + e / 2] >> ((e & 1) ? 0 : 4)) & 0xF;
        return mul_rn(nf4_value(q), a);
    }
};
/* INT4 (quant/int4.h): {f16 d; [u8 z, pad;] qs[G/2]}: element i in nibble i&1 of
 * qs[i/2] (low first); value = d * (q - z), z = 8 when symmetric */
template <int G, bool ASYM>
struct DecINT4 {
    static HD float get(const uint8_t *r, int64_t k, const float *) {
        constexpr int hdr = ASYM ? 4 : 2;
        const uint8_t *b = r + (k / G) * (hdr + G / 2);
        const int i = (int)(k % G);
        const int z = ASYM ? b[2] : 8;
        const int q = (b[hdr + i / 2] >> (4 * (i & 1))) & 0xF;
        return mul_rn(rdf16(b), (float)(q - z));
    }
};

/* ---- kernels ------------------------------------------------------------------------ */

template <class D>
__global__ void k_dequant(const uint8_t *__restrict__ src, int64_t n, float *__restrict__ y, const float *aux) {
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x)
        y[k] = D::get(src, k, aux);
}

enum { MM_WARPS = 4 }; /* output rows per thread block */

/* One lane's share of a warp's output row: partial sums for the nt (<= NT)
 * tokens t0.. over the row elements lane, lane + 32, ... The kernel and its
 * host run (host_matmul) share it. */
template <class D, int NT>
HD void mm_lane(const uint8_t *wr, int n_in, const float *x, int64_t t0, int nt, int lane, const float *aux,
                float acc[NT]) {
NB_UNROLL
    for (int t = 0; t < NT; t++) acc[t] = 0.f;
    for (int k = lane; k < n_in; k += 32) {
        const float wv = D::get(wr, k, aux);
NB_UNROLL
        for (int t = 0; t < NT; t++)
            if (t < nt) acc[t] += wv * x[(t0 + t) * n_in + k];
    }
}

template <class D, int NT>
__global__ void __launch_bounds__(32 * MM_WARPS)
    k_matmul(const uint8_t *__restrict__ w, size_t row_bytes, int64_t n_out, int n_in, const float *__restrict__ x,
             int64_t n_tok, float *__restrict__ y, const float *aux) {
    const int64_t r = (int64_t)blockIdx.x * MM_WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    const int64_t t0 = (int64_t)blockIdx.y * NT;
    if (r >= n_out) return; /* whole warps leave together: the shuffles below stay full */
    const int nt = n_tok - t0 < NT ? (int)(n_tok - t0) : NT;
    float acc[NT];
    mm_lane<D, NT>(w + r * row_bytes, n_in, x, t0, nt, lane, aux, acc);
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float s = warp_sum(DevWarp(), acc[t], lane);
        if (lane == 0 && t < nt) y[(t0 + t) * n_out + r] = s;
    }
}

/* The kernel's work on the host: every (row, token tile) as one warp of 32
 * lanes running mm_lane, then warp_sum's butterfly (v[l] + v[l ^ o] for
 * o = 16, 8, 4, 2, 1), lane 0's value stored. */
template <class D, int NT>
static void host_matmul_nt(const uint8_t *w, size_t rb, int64_t n_out, int n_in, const float *x, int64_t n_tok,
                           float *y, const float *aux) {
    float v[32][NT], nv[32][NT];
    for (int64_t r = 0; r < n_out; r++)
        for (int64_t t0 = 0; t0 < n_tok; t0 += NT) {
            const int nt = n_tok - t0 < NT ? (int)(n_tok - t0) : NT;
            for (int lane = 0; lane < 32; lane++) mm_lane<D, NT>(w + r * rb, n_in, x, t0, nt, lane, aux, v[lane]);
            for (int o = 16; o > 0; o >>= 1) {
                for (int l = 0; l < 32; l++)
                    for (int t = 0; t < NT; t++) nv[l][t] = v[l][t] + v[l ^ o][t];
                memcpy(v, nv, sizeof v);
            }
            for (int t = 0; t < nt; t++) y[(t0 + t) * n_out + r] = v[0][t];
        }
}

/* ---- the type table of this file: one row per type ---------------------------------- */

typedef void (*dequant_launch)(cudaStream_t, const uint8_t *, int64_t, float *, const float *);
typedef void (*dequant_host)(const uint8_t *, int64_t, float *, const float *);
typedef void (*matmul_launch)(cudaStream_t, const uint8_t *, size_t, int64_t, int, const float *, int64_t, float *,
                              const float *);
typedef void (*matmul_host)(const uint8_t *, size_t, int64_t, int, const float *, int64_t, float *, const float *);

template <class D>
static void launch_dequant(cudaStream_t s, const uint8_t *src, int64_t n, float *y, const float *aux) {
    const int64_t blocks = (n + 255) / 256;
    k_dequant<D><<<(unsigned)(blocks < 65535 ? blocks : 65535), 256, 0, s>>>(src, n, y, aux);
}

template <class D>
static void host_dequant(const uint8_t *src, int64_t n, float *y, const float *aux) {
    for (int64_t k = 0; k < n; k++) y[k] = D::get(src, k, aux);
}

template <class D>
static void host_matmul(const uint8_t *w, size_t rb, int64_t n_out, int n_in, const float *x, int64_t n_tok, float *y,
                        const float *aux) {
    if (n_tok == 1) host_matmul_nt<D, 1>(w, rb, n_out, n_in, x, n_tok, y, aux);
    else host_matmul_nt<D, 8>(w, rb, n_out, n_in, x, n_tok, y, aux);
}

template <class D>
static void launch_matmul(cudaStream_t s, const uint8_t *w, size_t rb, int64_t n_out, int n_in, const float *x,
                          int64_t n_tok, float *y, const float *aux) {
    const unsigned gx = nb_cu_blocks(n_out, MM_WARPS);
    if (n_tok == 1) {
        k_matmul<D, 1><<<dim3(gx, 1), 32 * MM_WARPS, 0, s>>>(w, rb, n_out, n_in, x, n_tok, y, aux);
    } else {
        k_matmul<D, 8><<<dim3(gx, nb_cu_blocks(n_tok, 8)), 32 * MM_WARPS, 0, s>>>(w, rb, n_out, n_in, x, n_tok, y,
                                                                                  aux);
    }
}

typedef DecINT4<32, false> DecI4S32;
typedef DecINT4<64, false> DecI4S64;
typedef DecINT4<128, false> DecI4S128;
typedef DecINT4<32, true> DecI4A32;
typedef DecINT4<64, true> DecI4A64;
typedef DecINT4<128, true> DecI4A128;

#define ROW(T, D) {T, launch_dequant<D>, host_dequant<D>, launch_matmul<D>, host_matmul<D>}
static const struct {
    nb_type t;
    dequant_launch dequant;
    dequant_host dequant_cpu;
    matmul_launch matmul;
    matmul_host matmul_cpu;
} k_types[] = {
    ROW(NB_TYPE_F32, DecF32),
    ROW(NB_TYPE_F16, DecF16),
    ROW(NB_TYPE_BF16, DecBF16),
    ROW(NB_TYPE_Q8_0, DecQ8_0),
    ROW(NB_TYPE_Q4_0, DecQ4_0),
    ROW(NB_TYPE_Q4_1, DecQ4_1),
    ROW(NB_TYPE_Q5_0, DecQ5_0),
    ROW(NB_TYPE_Q5_1, DecQ5_1),
    ROW(NB_TYPE_IQ4_NL, DecIQ4_NL),
    ROW(NB_TYPE_IQ4_XS, DecIQ4_XS),
    ROW(NB_TYPE_Q2_K, DecQ2_K),
    ROW(NB_TYPE_Q3_K, DecQ3_K),
    ROW(NB_TYPE_Q4_K, DecQ4_K),
    ROW(NB_TYPE_Q5_K, DecQ5_K),
    ROW(NB_TYPE_Q6_K, DecQ6_K),
    ROW(NB_TYPE_NF4, DecNF4),
    ROW(NB_TYPE_NF4_DQ, DecNF4_DQ),
    ROW(NB_TYPE_INT4_SYM_G32, DecI4S32),
    ROW(NB_TYPE_INT4_SYM_G64, DecI4S64),
    ROW(NB_TYPE_INT4_SYM_G128, DecI4S128),
    ROW(NB_TYPE_INT4_ASYM_G32, DecI4A32),
    ROW(NB_TYPE_INT4_ASYM_G64, DecI4A64),
    ROW(NB_TYPE_INT4_ASYM_G128, DecI4A128),
};
#undef ROW

/* The layouts the decoders hard-code, pinned to the C structs. */
static_assert(sizeof(nb_block_q8_0) == 34 && sizeof(nb_block_q4_0) == 18 && sizeof(nb_block_iq4_nl) == 18, "legacy");
static_assert(sizeof(nb_block_q4_1) == 20 && sizeof(nb_block_q5_0) == 22 && offsetof(nb_block_q5_0, qs) == 6 &&
                  sizeof(nb_block_q5_1) == 24 && offsetof(nb_block_q5_1, qs) == 8,
              "q4_1 / q5_0 / q5_1");
static_assert(sizeof(nb_block_q2_K) == 84 && offsetof(nb_block_q2_K, qs) == 16 && offsetof(nb_block_q2_K, d) == 80,
              "q2_K");
static_assert(sizeof(nb_block_q3_K) == 110 && offsetof(nb_block_q3_K, qs) == 32 &&
                  offsetof(nb_block_q3_K, scales) == 96 && offsetof(nb_block_q3_K, d) == 108,
              "q3_K");
static_assert(sizeof(nb_block_iq4_xs) == 136 && offsetof(nb_block_iq4_xs, scales_l) == 4 &&
                  offsetof(nb_block_iq4_xs, qs) == 8,
              "iq4_xs");
static_assert(sizeof(nb_block_q4_K) == 144 && offsetof(nb_block_q4_K, qs) == 16, "q4_K");
static_assert(sizeof(nb_block_q5_K) == 176 && offsetof(nb_block_q5_K, qh) == 16 && offsetof(nb_block_q5_K, qs) == 48,
              "q5_K");
static_assert(sizeof(nb_block_q6_K) == 210 && offsetof(nb_block_q6_K, qh) == 128 &&
                  offsetof(nb_block_q6_K, scales) == 192 && offsetof(nb_block_q6_K, d) == 208,
              "q6_K");
static_assert(sizeof(nb_block_nf4) == 36 && offsetof(nb_block_nf4, qs) == 4, "nf4");
static_assert(offsetof(nb_block_nf4_dq, qabsmax) == 8 && offsetof(nb_block_nf4_dq, qs) == 264, "nf4_dq");
static_assert(offsetof(nb_block_int4_asym_g32, z) == 2 && offsetof(nb_block_int4_asym_g32, qs) == 4, "int4");

static int find_row(nb_type t) {
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (k_types[i].t == t) return (int)i;
    return -1;
}

bool nb_cuda_type_supported(nb_type t) { return find_row(t) >= 0; }

/* The row of t for dequantizing n elements into *row; fails on a type without
 * kernels or a count that is not whole blocks. */
static nb_status dequant_row(nb_type t, int64_t n, int *row, nb_ctx *ctx) {
    *row = find_row(t);
    NB_RETURN_IF(ctx, *row < 0, NB_ERR_UNSUPPORTED, "cuda: dequantize: no kernel for type %s", nb_type_name(t));
    const nb_type_traits *tr = nb_type_get(t);
    NB_RETURN_IF(ctx, n < 0 || n % tr->block_size != 0, NB_ERR_RANGE,
                 "cuda: dequantize: %lld elements is not a multiple of %s's block of %u", (long long)n,
                 nb_type_name(t), tr->block_size);
    return NB_OK;
}

nb_status nb_cuda_dequantize(nb_cuda_ctx *c, nb_type t, const void *d_src, int64_t n, float *d_y, nb_ctx *ctx) {
    int i;
    NB_TRY(dequant_row(t, n, &i, ctx));
    if (n == 0) return NB_OK;
    NB_TRY(nb_cuda_enter(c, ctx));
    k_types[i].dequant(c->stream, (const uint8_t *)d_src, n, d_y, c->d_dynmap);
    NB_CU_LAUNCHED(ctx, "dequantize kernel launch");
    return NB_OK;
}

nb_status nb_cuda_dequantize_host(nb_type t, const void *src, int64_t n, float *y, nb_ctx *ctx) {
    int i;
    NB_TRY(dequant_row(t, n, &i, ctx));
    float map[256];
    nb_dynamic_map_signed(map);
    k_types[i].dequant_cpu((const uint8_t *)src, n, y, map);
    return NB_OK;
}

/* The row of t for an n_out x n_in matmul over n_tok tokens, and its row bytes. */
static nb_status matmul_row(nb_type t, int64_t n_out, int64_t n_in, int64_t n_tok, int *row, size_t *rb, nb_ctx *ctx) {
    *row = find_row(t);
    NB_RETURN_IF(ctx, *row < 0, NB_ERR_UNSUPPORTED, "cuda: matmul: no kernel for type %s", nb_type_name(t));
    const nb_type_traits *tr = nb_type_get(t);
    NB_RETURN_IF(ctx, n_in <= 0 || n_in > INT32_MAX || n_in % tr->block_size != 0 || n_out < 0 || n_tok < 0,
                 NB_ERR_RANGE, "cuda: matmul: %lld x %lld of %s (block %u) x %lld tokens", (long long)n_out,
                 (long long)n_in, nb_type_name(t), tr->block_size, (long long)n_tok);
    NB_RETURN_IF(ctx, n_out / MM_WARPS >= INT32_MAX || n_tok / 8 >= 65535, NB_ERR_RANGE,
                 "cuda: matmul: %lld rows x %lld tokens is beyond one launch", (long long)n_out, (long long)n_tok);
    *rb = (size_t)(n_in / tr->block_size) * tr->type_size;
    return NB_OK;
}

nb_status nb_cuda_matmul(nb_cuda_ctx *c, nb_type t, const void *d_w, int64_t n_out, int64_t n_in, const float *d_x,
                         int64_t n_tok, float *d_y, nb_ctx *ctx) {
    int i;
    size_t rb;
    NB_TRY(matmul_row(t, n_out, n_in, n_tok, &i, &rb, ctx));
    if (n_out == 0 || n_tok == 0) return NB_OK;
    NB_TRY(nb_cuda_enter(c, ctx));
    k_types[i].matmul(c->stream, (const uint8_t *)d_w, rb, n_out, (int)n_in, d_x, n_tok, d_y, c->d_dynmap);
    NB_CU_LAUNCHED(ctx, "matmul kernel launch");
    return NB_OK;
}

nb_status nb_cuda_matmul_host(nb_type t, const void *w, int64_t n_out, int64_t n_in, const float *x, int64_t n_tok,
                              float *y, nb_ctx *ctx) {
    int i;
    size_t rb;
    NB_TRY(matmul_row(t, n_out, n_in, n_tok, &i, &rb, ctx));
    float map[256];
    nb_dynamic_map_signed(map);
    k_types[i].matmul_cpu((const uint8_t *)w, rb, n_out, (int)n_in, x, n_tok, y, map);
    return NB_OK;
}
