/* kernels/cpu/arm_neon.c — NEON kernels (AArch64 only; compiles to the two
 * "not available" stubs everywhere else).
 *
 * Covers Q8_0 and Q4_0 (the rest of the table stays generic C). The integer
 * dot of each 32-element chunk is formed with widening NEON multiplies
 * (vmull_s8: |product| <= 128 * 127 fits int16, pairwise widening adds into
 * int32), reduced exactly with vaddvq_s32, and the float step is generic.c's
 * scalar expression in the canonical order (kernels_impl.h), so results are
 * bit-identical to the generic kernels. tests/kernels/test_matmul.c checks
 * that on an AArch64 machine (isas_agree); it was only compile-checked when
 * written, on x86.
 */
#include "kernels/cpu/kernels_impl.h"

#if defined(__aarch64__) && defined(__ARM_NEON)

#include "core/fp.h"
#include "quant/ggml_quants.h"

#include <arm_neon.h>

/* exact sum of a[i] * b[i] over 16 int8 lanes, as 4 int32 lanes */
static inline int32x4_t dot16(int8x16_t a, int8x16_t b) {
    int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    int16x8_t hi = vmull_s8(vget_high_s8(a), vget_high_s8(b));
    return vaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi));
}

static float dot_q8_0(int64_t n, const void *vw, const void *vx) {
    const nb_block_q8_0 *w = vw;
    const nb_xq *x = vx;
    float acc[8] = {0};
    for (int64_t c = 0; c < n / 32; c++) {
        const int8_t *q = x->qs + 32 * c;
        int32x4_t s = vaddq_s32(dot16(vld1q_s8(w[c].qs), vld1q_s8(q)), dot16(vld1q_s8(w[c].qs + 16), vld1q_s8(q + 16)));
        const int32_t is = vaddvq_s32(s);
        acc[c & 7] += (float)is * (nb_f16_to_f32(w[c].d) * x->d[c]);
    }
    return nb_kern_acc_sum(acc);
}

static float dot_q4_0(int64_t n, const void *vw, const void *vx) {
    const nb_block_q4_0 *w = vw;
    const nb_xq *x = vx;
    const uint8x16_t m4 = vdupq_n_u8(15);
    const int8x16_t s8 = vdupq_n_s8(8);
    float acc[8] = {0};
    for (int64_t c = 0; c < n / 32; c++) {
        const int8_t *q = x->qs + 32 * c;
        const uint8x16_t v = vld1q_u8(w[c].qs);
        const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, m4)), s8);
        const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), s8);
        const int32_t is = vaddvq_s32(vaddq_s32(dot16(lo, vld1q_s8(q)), dot16(hi, vld1q_s8(q + 16))));
        acc[c & 7] += (float)is * (nb_f16_to_f32(w[c].d) * x->d[c]);
    }
    return nb_kern_acc_sum(acc);
}

int nb_kern_have_neon(void) { return 1; }

void nb_kern_fill_neon(nb_kernels *k) {
    k->isa = "neon";
    k->dot[NB_TYPE_Q8_0] = dot_q8_0;
    k->dot[NB_TYPE_Q4_0] = dot_q4_0;
}

#else

int nb_kern_have_neon(void) { return 0; }
void nb_kern_fill_neon(nb_kernels *k) { (void)k; }

#endif
