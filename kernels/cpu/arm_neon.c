/* kernels/cpu/arm_neon.c — NEON kernels (AArch64 only; empty elsewhere). */
#include "kernels/cpu/kernels_impl.h"

int nb_kern_have_neon(void) { return 0; }
void nb_kern_fill_neon(nb_kernels *k) { (void)k; }
