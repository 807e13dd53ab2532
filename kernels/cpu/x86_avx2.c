/* kernels/cpu/x86_avx2.c — AVX2 + FMA + F16C kernels. */
#include "kernels/cpu/kernels_impl.h"

int nb_kern_have_avx2(void) { return 0; }
void nb_kern_fill_avx2(nb_kernels *k) { (void)k; }
