/* core/expf.h — e^x in float: the same bits on every machine, one at a time
 * or in bulk.
 *
 * nb_expf computes glibc's expf (the table-driven algorithm of its
 * sysdeps/ieee754/flt-32/e_expf.c, x86-64 FMA build) in portable C with
 * explicit fused multiply-adds, so it gives libm's bits on this project's
 * reference platform (checked for every float x <= 90: bench/expf_check.c)
 * and the same bits on any other. The bulk form runs 16 lanes with AVX-512F
 * where the CPU has it (the same operations per lane), else the scalar code.
 * The engine uses it where it used expf (softmax, SiLU), so its results did
 * not move, and the exponentials run vectorised.
 */
#ifndef NB_CORE_EXPF_H
#define NB_CORE_EXPF_H

#include <stddef.h>

float nb_expf(float x);
/* y[i] = nb_expf(x[i] - shift) (the difference rounded to float first, as
 * expf(x[i] - shift) would take it); y may be x */
void nb_expf_shift_n(const float *x, float shift, float *y, size_t n);
/* the largest element that is not a NaN (-inf when there is none) */
float nb_max_n(const float *x, size_t n);

#endif
