/* kernels/cpu/attn.h — the row kernels of the engine's attention over its KV
 * cache (engine/kv_cache.c), chosen per ISA like the matmul kernels.
 *
 * A tile of nq query rows that share one KV head meets each cache row once:
 * the row is loaded (and converted from F16 / Q8_0) once and used for every
 * query of the tile. Each output value is computed in the same order as the
 * one-query path of engine/kv_cache.c, so every ISA gives the same bits as
 * the generic C and as that path:
 *   F32 / F16 q.k   8 partial sums, lane j over elements d = j (mod 8) in
 *                   increasing d, each step s_j = s_j + q[d] * k[d] (no fused
 *                   multiply-add), then ((s0 + s1) + (s2 + s3)) + ((s4 + s5)
 *                   + (s6 + s7)), then the hd % 8 tail elements added in order.
 *                   F16 rows are converted exactly to F32 first.
 *   Q8_0 q.k        per 32-block the exact int32 dot of the codes, then
 *                   s = s + (float)idot * (d_q * d_k), blocks in order from 0.
 *   w.v (all)       out[d] = out[d] + w * v[d] (no fused multiply-add), v as
 *                   F32 (F16 converted exactly; Q8_0 dequantized as
 *                   (float)code * d).
 */
#ifndef NB_KERNELS_CPU_ATTN_H
#define NB_KERNELS_CPU_ATTN_H

#include "core/types.h"

#include <stddef.h>
#include <stdint.h>

/* s[i * lds + p] = q_i . k_p for i < nq, p < np. k_p: the cache row at
 * (const char *)k + p * kv_row, hd elements of the cache type; q_i at
 * (const char *)q + i * ldq bytes: hd floats for F32 and F16 caches (the
 * caller rounds them to F16 values for F16), hd / 32 nb_block_q8_0 for Q8_0
 * (hd % 32 == 0). */
typedef void (*nb_attn_qk_fn)(int64_t hd, const void *k, size_t kv_row, int64_t np, const void *q, size_t ldq,
                              int64_t nq, float *s, int64_t lds);

/* out_i[d] += w[i * ldw + p] * v_p[d] for p = 0, 1, ..., np - 1 in that
 * order, for i < nq, d < hd, out_i = out + i * ldo; v_p: the cache row at
 * (const char *)v + p * kv_row. */
typedef void (*nb_attn_wv_fn)(int64_t hd, const void *v, size_t kv_row, int64_t np, const float *w, int64_t ldw,
                              int64_t nq, float *out, int64_t ldo);

typedef struct nb_attn_kernels {
    nb_attn_qk_fn qk;
    nb_attn_wv_fn wv;
} nb_attn_kernels;

/* The kernels for a cache of element type `t` (NB_TYPE_F32, NB_TYPE_F16 or
 * NB_TYPE_Q8_0) on the ISA nb_matmul uses (nb_kernels_active), or on the
 * named ISA (tests): false when the type has no attention kernels or the ISA
 * cannot run here. */
bool nb_attn_kernels_best(nb_type t, nb_attn_kernels *out);
bool nb_attn_kernels_isa(const char *isa, nb_type t, nb_attn_kernels *out);

#endif
