/* kernels/cpu/x86_avx512.c — AVX-512 (F/BW/VL + VNNI) kernels. */
#include "kernels/cpu/kernels_impl.h"

int nb_kern_have_avx512(void) { return 0; }
void nb_kern_fill_avx512(nb_kernels *k) { (void)k; }
