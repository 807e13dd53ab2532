/* kernels/cpu/x86_avx512.c — AVX-512 VNNI kernels (on 256-bit vectors).
 *
 * Compiled for every x86-64 build with a target pragma (the rest of the
 * library stays baseline x86-64) and used only when the CPU has the features
 * (matmul.c checks at start-up). The kernel bodies are in x86_simd.h; this
 * copy multiplies int8 with VNNI's vpdpbusd (one instruction instead of
 * maddubs + madd, same exact int32 sums), so it agrees bit for bit with the
 * AVX2 and generic kernels. The integer kernels keep 256-bit vectors (the
 * canonical 8-lane float order); the float-weight tiles use 512-bit ones.
 */
#include "kernels/cpu/kernels_impl.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#endif

#define NB_X86_ZMM 1 /* float tiles on 512-bit vectors */
#define NB_X86_MUL_US(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s))
#define NB_X86_MADD_ACC(acc, a, b) _mm256_dpwssd_epi32((acc), (a), (b))
#include "kernels/cpu/x86_simd.h"
#include "kernels/cpu/x86_attn.h"

void nb_kern_fill_avx512(nb_kernels *k) {
    x86_fill(k);
    x86_attn_fill(k);
    k->isa = "avx512";
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

int nb_kern_have_avx512(void) { return 1; }

#else /* not x86-64 */

int nb_kern_have_avx512(void) { return 0; }
void nb_kern_fill_avx512(nb_kernels *k) { (void)k; }

#endif
