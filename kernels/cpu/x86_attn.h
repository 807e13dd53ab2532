/* kernels/cpu/x86_attn.h — the attention row kernels (attn.h) on 256-bit
 * vectors, included after x86_simd.h by x86_avx2.c and x86_avx512.c (each
 * compiles its own copy for its own target) and installed by x86_attn_fill().
 *
 * The F32 / F16 dots keep attn.h's canonical order: one 8-lane accumulator per
 * query is exactly the 8 partial sums (mul then add, never FMA), and the
 * final ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)) of 4 queries at once
 * is two rounds of hadd and one add. Q8_0 block dots are exact int32 sums
 * (int8 widened to int16, madd), then the per-block float step of 4 queries
 * runs in 4 lanes. w.v is element-wise (any vector width gives the same bits).
 */
#ifndef NB_X86_ATTN_H
#define NB_X86_ATTN_H

/* 8 elements of a cache row as F32 (F16 converted exactly by F16C) */
INL __m256 att_load8(const void *row, bool f16, int64_t d) {
    if (f16) return _mm256_cvtph_ps(load128((const uint16_t *)row + d));
    return _mm256_loadu_ps((const float *)row + d);
}

/* lane j = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) of v[j] */
INL __m128 att_hsum4(__m256 v0, __m256 v1, __m256 v2, __m256 v3) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(v0, v1), _mm256_hadd_ps(v2, v3));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

/* scalar element d of a cache row */
INL float att_elem(const void *row, bool f16, int64_t d) {
    return f16 ? _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(((const uint16_t *)row)[d]))) : ((const float *)row)[d];
}

/* 4 queries (q[0..3]; m of them stored) against np rows, 2 rows at a time:
 * 8 accumulators, each k chunk converted once for the 4 queries. */
INL void att_qk4(bool f16, int64_t hd, const char *k, size_t kv_row, int64_t np, const float *const *q, int64_t m,
                 float *s, int64_t lds) {
    const int64_t h8 = hd / 8 * 8;
    int64_t p = 0;
    for (; p < np; p += 2) {
        const int64_t two = np - p >= 2;
        const char *k0 = k + p * kv_row, *k1 = two ? k0 + kv_row : k0;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int64_t d = 0; d < h8; d += 8) {
            const __m256 x = att_load8(k0, f16, d), y = att_load8(k1, f16, d);
            __m256 qv = _mm256_loadu_ps(q[0] + d);
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(qv, x));
            b0 = _mm256_add_ps(b0, _mm256_mul_ps(qv, y));
            qv = _mm256_loadu_ps(q[1] + d);
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(qv, x));
            b1 = _mm256_add_ps(b1, _mm256_mul_ps(qv, y));
            qv = _mm256_loadu_ps(q[2] + d);
            a2 = _mm256_add_ps(a2, _mm256_mul_ps(qv, x));
            b2 = _mm256_add_ps(b2, _mm256_mul_ps(qv, y));
            qv = _mm256_loadu_ps(q[3] + d);
            a3 = _mm256_add_ps(a3, _mm256_mul_ps(qv, x));
            b3 = _mm256_add_ps(b3, _mm256_mul_ps(qv, y));
        }
        float r[2][4];
        _mm_storeu_ps(r[0], att_hsum4(a0, a1, a2, a3));
        _mm_storeu_ps(r[1], att_hsum4(b0, b1, b2, b3));
        for (int64_t u = 0; u <= two; u++)
            for (int64_t j = 0; j < m; j++) {
                for (int64_t d = h8; d < hd; d++) r[u][j] += q[j][d] * att_elem(u ? k1 : k0, f16, d);
                s[j * lds + p + u] = r[u][j];
            }
    }
}

INL void att_qk_float(bool f16, int64_t hd, const void *k, size_t kv_row, int64_t np, const void *q, size_t ldq,
                      int64_t nq, float *s, int64_t lds) {
    for (int64_t i = 0; i < nq; i += 4) {
        const int64_t m = nq - i < 4 ? nq - i : 4; /* queries in this group */
        const float *qi[4];
        for (int j = 0; j < 4; j++) qi[j] = (const float *)((const char *)q + (size_t)(i + (j < m ? j : 0)) * ldq);
        att_qk4(f16, hd, k, kv_row, np, qi, m, s + i * lds, lds);
    }
}

static void att_qk_f32(int64_t hd, const void *k, size_t kv_row, int64_t np, const void *q, size_t ldq, int64_t nq,
                       float *s, int64_t lds) {
    att_qk_float(false, hd, k, kv_row, np, q, ldq, nq, s, lds);
}

static void att_qk_f16(int64_t hd, const void *k, size_t kv_row, int64_t np, const void *q, size_t ldq, int64_t nq,
                       float *s, int64_t lds) {
    att_qk_float(true, hd, k, kv_row, np, q, ldq, nq, s, lds);
}

/* exact int32 dot of two 32-code blocks, as 8 partial sums */
INL __m256i att_idot32(__m256i k0, __m256i k1, const int8_t *q) {
    const __m256i q0 = _mm256_cvtepi8_epi16(load128(q)), q1 = _mm256_cvtepi8_epi16(load128(q + 16));
    return _mm256_add_epi32(_mm256_madd_epi16(k0, q0), _mm256_madd_epi16(k1, q1));
}

static void att_qk_q8_0_row(int64_t hd, const void *k, const void *q, size_t ldq, int64_t nq, float *s,
                            int64_t lds) {
    const nb_block_q8_0 *kb = k;
    const int64_t nb = hd / NB_QK8_0;
    for (int64_t i = 0; i < nq; i += 4) {
        const int64_t m = nq - i < 4 ? nq - i : 4;
        const nb_block_q8_0 *qb[4];
        for (int j = 0; j < 4; j++)
            qb[j] = (const nb_block_q8_0 *)((const char *)q + (size_t)(i + (j < m ? j : 0)) * ldq);
        __m128 acc = _mm_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            const __m256i k0 = _mm256_cvtepi8_epi16(load128(kb[b].qs)),
                          k1 = _mm256_cvtepi8_epi16(load128(kb[b].qs + 16));
            const __m256i d0 = att_idot32(k0, k1, qb[0][b].qs), d1 = att_idot32(k0, k1, qb[1][b].qs),
                          d2 = att_idot32(k0, k1, qb[2][b].qs), d3 = att_idot32(k0, k1, qb[3][b].qs);
            /* lane j: the block sum of query j (integer: any order is exact) */
            const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(d0, d1), _mm256_hadd_epi32(d2, d3));
            const __m128i is = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            const __m128 dq = _mm_cvtph_ps(_mm_setr_epi16((short)qb[0][b].d, (short)qb[1][b].d, (short)qb[2][b].d,
                                                          (short)qb[3][b].d, 0, 0, 0, 0));
            const __m128 dk = _mm_set1_ps(h2f(kb[b].d));
            acc = _mm_add_ps(acc, _mm_mul_ps(_mm_cvtepi32_ps(is), _mm_mul_ps(dq, dk)));
        }
        float r[4];
        _mm_storeu_ps(r, acc);
        for (int64_t j = 0; j < m; j++) s[(i + j) * lds] = r[j];
    }
}

static void att_qk_q8_0(int64_t hd, const void *k, size_t kv_row, int64_t np, const void *q, size_t ldq, int64_t nq,
                        float *s, int64_t lds) {
    for (int64_t p = 0; p < np; p++) att_qk_q8_0_row(hd, (const char *)k + p * kv_row, q, ldq, nq, s + p, lds);
}

/* Queries per w.v group: their 4-vector output blocks stay in registers over
 * all np rows (AVX-512VL has 32 vector registers, AVX2 16). */
#ifdef NB_X86_ZMM
#define ATT_WQ 4
#else
#define ATT_WQ 2
#endif

/* out_j += sum_p w_j[p] v_p for JQ queries (JQ a constant after inlining) */
INL void att_wv_grp(bool f16, int JQ, int64_t hd, const char *v, size_t kv_row, int64_t np, const float *w,
                    int64_t ldw, float *out, int64_t ldo) {
    int64_t d = 0;
    for (; d + 32 <= hd; d += 32) {
        __m256 acc[ATT_WQ][4];
        for (int j = 0; j < JQ; j++)
            for (int c = 0; c < 4; c++) acc[j][c] = _mm256_loadu_ps(out + j * ldo + d + 8 * c);
        for (int64_t p = 0; p < np; p++) {
            const char *row = v + p * kv_row;
            __m256 vv[4];
            for (int c = 0; c < 4; c++) vv[c] = att_load8(row, f16, d + 8 * c);
            for (int j = 0; j < JQ; j++) {
                const __m256 wj = _mm256_set1_ps(w[j * ldw + p]);
                for (int c = 0; c < 4; c++) acc[j][c] = _mm256_add_ps(acc[j][c], _mm256_mul_ps(wj, vv[c]));
            }
        }
        for (int j = 0; j < JQ; j++)
            for (int c = 0; c < 4; c++) _mm256_storeu_ps(out + j * ldo + d + 8 * c, acc[j][c]);
    }
    for (; d + 8 <= hd; d += 8)
        for (int j = 0; j < JQ; j++) {
            __m256 acc = _mm256_loadu_ps(out + j * ldo + d);
            for (int64_t p = 0; p < np; p++)
                acc = _mm256_add_ps(acc,
                                    _mm256_mul_ps(_mm256_set1_ps(w[j * ldw + p]), att_load8(v + p * kv_row, f16, d)));
            _mm256_storeu_ps(out + j * ldo + d, acc);
        }
    for (; d < hd; d++)
        for (int j = 0; j < JQ; j++) {
            float o = out[j * ldo + d];
            for (int64_t p = 0; p < np; p++) o += w[j * ldw + p] * att_elem(v + p * kv_row, f16, d);
            out[j * ldo + d] = o;
        }
}

INL void att_wv_float(bool f16, int64_t hd, const void *v, size_t kv_row, int64_t np, const float *w, int64_t ldw,
                      int64_t nq, float *out, int64_t ldo) {
    int64_t i = 0;
    for (; i + ATT_WQ <= nq; i += ATT_WQ)
        att_wv_grp(f16, ATT_WQ, hd, v, kv_row, np, w + i * ldw, ldw, out + i * ldo, ldo);
    for (; i < nq; i++) att_wv_grp(f16, 1, hd, v, kv_row, np, w + i * ldw, ldw, out + i * ldo, ldo);
}

static void att_wv_f32(int64_t hd, const void *v, size_t kv_row, int64_t np, const float *w, int64_t ldw, int64_t nq,
                       float *out, int64_t ldo) {
    att_wv_float(false, hd, v, kv_row, np, w, ldw, nq, out, ldo);
}

static void att_wv_f16(int64_t hd, const void *v, size_t kv_row, int64_t np, const float *w, int64_t ldw, int64_t nq,
                       float *out, int64_t ldo) {
    att_wv_float(true, hd, v, kv_row, np, w, ldw, nq, out, ldo);
}

static void att_wv_q8_0(int64_t hd, const void *v, size_t kv_row, int64_t np, const float *w, int64_t ldw, int64_t nq,
                        float *out, int64_t ldo) {
    for (int64_t p = 0; p < np; p++) {
        const nb_block_q8_0 *vb = (const nb_block_q8_0 *)((const char *)v + p * kv_row);
        for (int64_t b = 0; b < hd / NB_QK8_0; b++) {
            const __m256 d = _mm256_set1_ps(h2f(vb[b].d));
            __m256 vv[4];
            for (int c = 0; c < 4; c++)
                vv[c] = _mm256_mul_ps(
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(vb[b].qs + 8 * c)))), d);
            for (int64_t i = 0; i < nq; i++) {
                const __m256 wi = _mm256_set1_ps(w[i * ldw + p]);
                float *o = out + i * ldo + b * NB_QK8_0;
                for (int c = 0; c < 4; c++)
                    _mm256_storeu_ps(o + 8 * c, _mm256_add_ps(_mm256_loadu_ps(o + 8 * c), _mm256_mul_ps(wi, vv[c])));
            }
        }
    }
}

static void x86_attn_fill(nb_kernels *k) {
    k->att_qk[NB_TYPE_F32] = att_qk_f32;
    k->att_qk[NB_TYPE_F16] = att_qk_f16;
    k->att_qk[NB_TYPE_Q8_0] = att_qk_q8_0;
    k->att_wv[NB_TYPE_F32] = att_wv_f32;
    k->att_wv[NB_TYPE_F16] = att_wv_f16;
    k->att_wv[NB_TYPE_Q8_0] = att_wv_q8_0;
}

#endif
