/* core/fp.h — exact FP16 / BF16 / FP8 <-> F32 conversion.
 *
 * F32 -> F16 and F32 -> BF16 round to nearest, ties to even; NaN stays NaN
 * (quiet, sign kept), +-Inf stays Inf, overflow gives Inf, subnormals are
 * produced and read exactly. Bulk converters pick an F16C/AVX2 path at run
 * time when the CPU has it and give the same bits as the scalar code.
 */
#ifndef NB_CORE_FP_H
#define NB_CORE_FP_H

#include <stddef.h>
#include <stdint.h>

float nb_f16_to_f32(uint16_t h);
uint16_t nb_f32_to_f16(float f);
float nb_bf16_to_f32(uint16_t h);
uint16_t nb_f32_to_bf16(float f);
float nb_f8e4m3_to_f32(uint8_t v);
float nb_f8e5m2_to_f32(uint8_t v);

void nb_f16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void nb_f32_to_f16_n(const float *src, uint16_t *dst, size_t n);
void nb_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void nb_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n);
/* x[i] = nb_f16_to_f32(nb_f32_to_f16(x[i])) in place (a value as an F16 store
 * and load would leave it), the same bits on either path. */
void nb_f16_round_n(float *x, size_t n);

#endif
