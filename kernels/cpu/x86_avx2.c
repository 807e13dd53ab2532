/* kernels/cpu/x86_avx2.c — AVX2 + FMA + F16C kernels.
 *
 * Compiled for every x86-64 build with a target pragma (the rest of the
 * library stays baseline x86-64) and used only when the CPU has the features
 * (matmul.c checks at start-up). The kernel bodies are in x86_simd.h.
 */
#include "kernels/cpu/kernels_impl.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#define NB_X86_MUL_US(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))
#define NB_X86_MADD_ACC(acc, a, b) _mm256_add_epi32((acc), _mm256_madd_epi16((a), (b)))
#include "kernels/cpu/x86_simd.h"
#include "kernels/cpu/x86_attn.h"

void nb_kern_fill_avx2(nb_kernels *k) {
    x86_fill(k);
    x86_attn_fill(k);
    k->isa = "avx2";
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

int nb_kern_have_avx2(void) { return 1; }

#else /* not x86-64 */

int nb_kern_have_avx2(void) { return 0; }
void nb_kern_fill_avx2(nb_kernels *k) { (void)k; }

#endif
