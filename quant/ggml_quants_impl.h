/* quant/ggml_quants_impl.h — helpers shared by q_legacy.c, q_kquants.c, q_iq.c.
 *
 * Internal to quant/: these reproduce ggml's scale-search routines operation
 * by operation (same float expressions, same order, same tie rules) because
 * the bytes they lead to must equal ggml's.
 */
#ifndef NB_QUANT_GGML_QUANTS_IMPL_H
#define NB_QUANT_GGML_QUANTS_IMPL_H

#include "core/fp.h"
#include "quant/ggml_quants.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Clang contracts a*b+c into FMA by default (GCC does not in ISO C mode);
 * either would change the rounding ggml's reference code sees. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* ggml's GROUP_MAX_EPS: a group whose largest magnitude is below this is all-zero. */
#define NB_GQ_GROUP_MAX_EPS 1e-15f

/* Round to nearest, ties to even, for |f| <= 2^22 (ggml's nearest_int: add
 * 1.5*2^23 and read the mantissa). Outside that range (or NaN) the result is
 * garbage, exactly as in ggml, but no undefined behaviour. */
static inline int nb_gq_nearest_int(float f) {
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static inline int nb_gq_min(int a, int b) { return a < b ? a : b; }
static inline int nb_gq_max(int a, int b) { return a > b ? a : b; }

/* float -> int truncation toward zero like a C cast, defined for every input:
 * NaN and out-of-range values give 0 (finite in-range values are unchanged). */
static inline int nb_gq_trunc(float f) {
    return (f > -2147483648.f && f < 2147483648.f) ? (int)f : 0;
}

static inline float nb_gq_h2f(uint16_t h) { return nb_f16_to_f32(h); }
static inline uint16_t nb_gq_f2h(float f) { return nb_f32_to_f16(f); }

/* ggml's make_qx_quants with rmse_type 1: symmetric codes L[i] in [0, 2*nmax)
 * (stored with +nmax offset), weights qw (x^2 when qw is NULL); returns the scale. */
float nb_gq_make_qx_quants(int n, int nmax, const float *x, int8_t *L, const float *qw);

/* ggml's make_qkx3_quants: asymmetric codes L[i] in [0, nmax] with a min <= 0
 * (*the_min receives -min); weights NULL means x^2. Laux: n bytes of scratch. */
float nb_gq_make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                             float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                             bool use_mad);

#endif
