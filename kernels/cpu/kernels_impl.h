/* kernels/cpu/kernels_impl.h — per-ISA kernel tables behind nb_matmul (internal).
 *
 * How a matmul runs (as ggml does it): the activations of each token are
 * quantized once to 8-bit blocks in the format the weight type pairs with,
 * then every output element is one "vec_dot" of a packed weight row with one
 * quantized activation row. F32/F16/BF16 weights skip the quantization and
 * take float dots against the f32 activations. Batches take the same dots
 * 4 tokens per weight row (dot4) or, where a `tile` entry exists, rows x G
 * tokens at once with one token per vector lane (nb_xqt); each computes
 * every output exactly as `dot` does.
 *
 * Activation formats (nb_act_fmt):
 *   NB_ACT_F32   the f32 row itself
 *   NB_ACT_Q32   blocks of 32: d[b] = amax/127 (fp32), qs = round-half-even(x/d)
 *                in [-127, 127], s[b] = sum of the block's 32 codes
 *   NB_ACT_Q256  blocks of 256 (the K-quants' super-blocks): d[b] fp32 as
 *                above, s[j] = sum of the codes of 16-element group j
 * A block holding a NaN or Inf gets d = NaN and zero codes, so the non-finite
 * value reaches every output it touches (as in the reference path).
 * Codes stay in [-127, 127] so that the AVX2 sign trick (|w| * sign(x, w)
 * with maddubs) can never saturate its 16-bit pair sums.
 *
 * The canonical result of every integer kernel (all ISAs compute exactly it,
 * so they agree bit for bit):
 *   - each 32-element chunk c (NB_ACT_Q32 types) or 256-element super-block c
 *     (NB_ACT_Q256 types) yields an exact int32 dot product of weight codes
 *     and activation codes (K-quants: already weighted by the integer
 *     sub-block scales, minus the integer min term where the type has one);
 *   - its float contribution is formed by the per-type expression written in
 *     generic.c (e.g. (float)isum * (dw * dx)), without fused multiply-add;
 *   - contributions are summed into 8 accumulators, chunk c into acc[c % 8],
 *     in increasing c, and the result is
 *     ((acc0 + acc1) + (acc2 + acc3)) + ((acc4 + acc5) + (acc6 + acc7)).
 * Float kernels (F32/F16/BF16) are only required to be deterministic per ISA:
 * the SIMD ones use FMA and more partial sums than the generic C, so they
 * differ from it in the last bits (tests bound that difference).
 *
 * Files: generic.c (every kernel in C, and the activation quantizers),
 * x86_avx2.c, x86_avx512.c, arm_neon.c (override the table entries they
 * implement), matmul.c (selection at start-up, threading, fallback).
 */
#ifndef NB_KERNELS_CPU_KERNELS_IMPL_H
#define NB_KERNELS_CPU_KERNELS_IMPL_H

#include "core/types.h"
#include "core/ctx.h"
#include "kernels/cpu/attn.h"

#include <stddef.h>
#include <stdint.h>

/* clang would contract a*b+c into FMA and break the canonical order */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

typedef enum nb_act_fmt { NB_ACT_NONE = 0, NB_ACT_F32, NB_ACT_Q32, NB_ACT_Q256 } nb_act_fmt;

/* One quantized activation row of n elements (n a multiple of the block). */
typedef struct nb_xq {
    const int8_t *qs; /* n codes */
    const float *d;   /* n/32 or n/256 scales */
    const int16_t *s; /* n/32 block sums (Q32) or n/16 group sums (Q256) */
} nb_xq;

/* Dot product of one packed weight row (n elements) with one activation row:
 * `x` is a `const float *` for NB_ACT_F32 types, else a `const nb_xq *`. */
typedef float (*nb_vdot_fn)(int64_t n, const void *w, const void *x);

/* The same for 4 activation rows at once (weights unpacked once):
 * out[t] = dot(n, w, x[t]) exactly, bit for bit. */
typedef void (*nb_vdot4_fn)(int64_t n, const void *w, const void *const *x, float *out);

/* G tokens' quantized activations (NB_ACT_Q32 or NB_ACT_Q256) interleaved
 * for the token-lane tiles, one token per int32 lane (G = the table's
 * tile_tok): the 4 codes 32c+4k..32c+4k+3 of token t (chunk c of 32, k < 8)
 * at qs[32Gc + 4Gk + 4t]; the scale of its block b (of 32 or 256) at
 * d[Gb + t]; the code sum of its group g (of 32, or of 16 for Q256) as an
 * int32 at s[Gg + t]. */
typedef struct nb_xqt {
    const int8_t *qs; /* G n codes */
    const float *d;   /* G (n/32 or n/256) scales */
    const int32_t *s; /* G (n/32 or n/16) code sums */
} nb_xqt;

/* nr weight rows (row r at w + r * rb) times the G tokens of x, of which the
 * first nt (1..G) are stored: y[t * ldy + r] = dot(n, row r, token t) bit for
 * bit (the lanes are independent, so padding tokens change nothing). */
typedef void (*nb_vtile_fn)(int64_t n, const void *w, uint64_t rb, int64_t nr, const nb_xqt *x, int nt, float *y,
                            int64_t ldy);

/* Float weights (F32/F16/BF16): nr rows (row r at w + r * rb) times nt
 * tokens (token t at x + t * ldx): y[t * ldy + r] = dot(row r, token t),
 * each output bit for bit what the 1 x 1 call (and `dot`) gives. */
typedef void (*nb_ftile_fn)(int64_t n, const void *w, uint64_t rb, int64_t nr, const float *x, int64_t ldx,
                            int64_t nt, float *y, int64_t ldy);

/* Row-interleaved ("packed") weights for the row-lane kernels (Q4_0, Q4_1,
 * Q5_0, IQ4_NL, NF4, Q8_0; packed.c writes them): groups of NB_PACK_ROWS = 16
 * rows, one after another, each n/32 chunk records of code bytes, then the
 * chunks' scales. 4-bit types (256 bytes a chunk): byte 64i + 4r + b holds
 * chunk element 8i + b of row r's code index in its low nibble and element
 * 8i + 4 + b in its high nibble (i, b < 4), so the low nibbles of the 64
 * bytes at 64i are elements 4k..4k+3 of every row for k = 2i, the high ones
 * for k = 2i + 1. Q5_0 (320 bytes a chunk): those 256 bytes for the low 4
 * bits of the codes, then 64 bytes of fifth bits, bit k of byte 256 + 4r + b
 * for element 4k + b of row r. Q8_0 (512 bytes a chunk): byte 64k + 4r + b
 * is element 4k + b of row r, as code + 128. Records start 64-byte aligned when the
 * copy does. Scales: 16 per chunk, row r of chunk c at index 16c + r: the
 * F16 block scale (Q4_0, Q5_0, IQ4_NL, Q8_0); Q4_1: 32 per chunk, the 16
 * F16 d of chunk c at 32c + r, then its 16 F16 m at 32c + 16 + r; NF4: 16 per block of 64 (two
 * chunks), row r of chunk c at 16(c/2) + r, the float absmax * (1/127).
 * n_out must be a multiple of 16 (else the matrix stays unpacked). */
enum { NB_PACK_ROWS = 16 };
/* Bytes of the packed copy (0: this type has no packed form, or the shape
 * does not fit it), the code bytes of a chunk record, the bytes per chunk
 * of a group (codes and scales), and the packing itself (dst holds
 * nb_pack_layout_bytes bytes). */
uint64_t nb_pack_layout_bytes(nb_type t, int64_t n_out, int64_t n_in);
int nb_pack_code_bytes(nb_type t);
int nb_pack_chunk_bytes(nb_type t);
void nb_pack_layout(nb_type t, const void *w, int64_t n_out, int64_t n_in, void *dst, int n_threads);

/* Row-lane kernel on packed weights: n_grp groups of 16 rows from wp times
 * nt tokens (x[t], quantized NB_ACT_Q32 rows): y[t * ldy + 16 g + r] =
 * dot(n, row 16 g + r, token t) bit for bit. */
typedef void (*nb_ptile_fn)(int64_t n, const void *wp, int64_t n_grp, const nb_xq *x, int nt, float *y,
                            int64_t ldy);

/* Quantize one activation row of n floats (n a multiple of 32 / 256). */
typedef void (*nb_actq_fn)(const float *x, int64_t n, int8_t *qs, float *d, int16_t *s);

typedef struct nb_kernels {
    const char *isa;                /* "generic", "avx2", "avx512", "neon" */
    nb_vdot_fn dot[NB_TYPE_COUNT];  /* NULL: no kernel (nb_matmul uses the reference path) */
    nb_vdot4_fn dot4[NB_TYPE_COUNT]; /* optional 4-token versions (NULL: dot is used) */
    nb_ftile_fn ftile[NB_TYPE_COUNT]; /* optional row x token tiles of the float types (NULL: dot) */
    nb_vtile_fn tile[NB_TYPE_COUNT]; /* optional rows x tile_tok token tiles of the integer types (NULL: dot4) */
    int tile_tok;                     /* tokens per `tile` call (8 or 16; 0 when no tile is set) */
    nb_ptile_fn ptile[NB_TYPE_COUNT]; /* optional row-lane kernels on packed weights (NULL: no packing) */
    nb_act_fmt act[NB_TYPE_COUNT];  /* activation format each weight type pairs with (ggml's
                                     * vec_dot_type); ISA-independent, set by the generic filler */
    nb_actq_fn quant_q32;
    nb_actq_fn quant_q256;
    /* attention over a KV cache of element type F32, F16 or Q8_0 (attn.h;
     * NULL for the other types) */
    nb_attn_qk_fn att_qk[NB_TYPE_COUNT];
    nb_attn_wv_fn att_wv[NB_TYPE_COUNT];
} nb_kernels;

/* Activation format each weight type pairs with: the generic table's act column. */
nb_act_fmt nb_kern_act_fmt(nb_type t);

/* Table fillers: generic sets every entry; the others override the entries
 * they implement and leave the rest (so a table is always complete). */
void nb_kern_fill_generic(nb_kernels *k);
void nb_kern_fill_avx2(nb_kernels *k);   /* needs AVX2 + FMA + F16C */
void nb_kern_fill_avx512(nb_kernels *k); /* needs AVX-512 F/BW/VL + VNNI, after avx2 */
void nb_kern_fill_neon(nb_kernels *k);
/* attn.c: the generic attention kernels (called by nb_kern_fill_generic) */
void nb_kern_fill_attn_generic(nb_kernels *k);
/* 1 when this build has that ISA's code (compiler support), 0 otherwise. */
int nb_kern_have_avx2(void);
int nb_kern_have_avx512(void);
int nb_kern_have_neon(void);

/* The table chosen for this CPU (once; env NB_KERNELS=generic|avx2|avx512|neon
 * forces a lower one), and a table by ISA name for tests and benchmarks:
 * NULL when this build or this CPU cannot run it. */
const nb_kernels *nb_kernels_best(void);
const nb_kernels *nb_kernels_by_name(const char *isa);

/* nb_matmul with an explicit table (tests compare ISAs through it). */
nb_status nb_matmul_with(const nb_kernels *k, nb_type wtype, const void *w, int64_t n_out, int64_t n_in,
                         const float *x, int64_t n_tok, float *y, int n_threads, nb_ctx *ctx);

/* nb_matmul on a packed copy wp (nb_pack_layout) with an explicit table,
 * whose ptile entry for wtype must be set. */
nb_status nb_matmul_packed_with(const nb_kernels *k, nb_type wtype, const void *wp, int64_t n_out, int64_t n_in,
                                const float *x, int64_t n_tok, float *y, int n_threads, nb_ctx *ctx);

/* Software prefetch distance of the packed weight streams: a one-token step
 * reads each weight once, from memory, and the hardware prefetchers alone
 * left the row-lane Q4_0 kernel at 17-19 GB/s on one Zen 5 core (31-44 GB/s
 * with 12 KiB; bench/RESULTS.md; the row-by-row kernels, compute-bound,
 * gained nothing measurable from it). A prefetch never faults, so running
 * past the end of a matrix is harmless. */
#define NB_PF_DIST 12288

/* The fixed final reduction of the 8 canonical accumulators. */
static inline float nb_kern_acc_sum(const float a[8]) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* Round to nearest, ties to even, for |f| <= 2^22 (what cvtps2dq does in the
 * default rounding mode). */
static inline int32_t nb_kern_rne(float f) {
    union { float f; int32_t i; } u;
    u.f = f + 12582912.f;
    return (u.i & 0x007fffff) - 0x00400000;
}

/* Q4_K / Q5_K: 6-bit scale and min of sub-block j (0..7) from the 12 bytes. */
static inline void nb_kern_scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q3_K: signed 6-bit scale of sub-block j (0..15). */
static inline int nb_kern_scale_q3k(int j, const uint8_t *s) {
    int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

/* NF4 code values as int8 (round(code * 127)); value ~= code8 * absmax / 127. */
extern const int8_t nb_kern_nf4_i8[16];

#endif
