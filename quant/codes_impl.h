/* quant/codes_impl.h — writing one code into a packed block (internal to quant/).
 *
 * GPTQ (calib/gptq.c) chooses every code of a block itself after the type's
 * quantizer fixed the scales; it writes them through the types' set-code
 * hooks (nb_set_code_fn, core/types.h), which live next to each block struct
 * and use these two primitives on the struct's fields.
 */
#ifndef NB_QUANT_CODES_IMPL_H
#define NB_QUANT_CODES_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The low 4 bits of v into the high (high = true) or low nibble of *b. */
static inline void nb_set_nibble(uint8_t *b, bool high, int v) {
    if (high) *b = (uint8_t)((*b & 0x0F) | (v << 4));
    else *b = (uint8_t)((*b & 0xF0) | (v & 0x0F));
}
/* Bit `bit` of *b to v != 0. */
static inline void nb_set_bit(uint8_t *b, int bit, int v) {
    if (v) *b = (uint8_t)(*b | (1u << bit));
    else *b = (uint8_t)(*b & ~(1u << bit));
}
/* Field `f` of the block struct type T at block pointer b, as bytes. */
#define NB_BLOCK_FIELD(b, T, f) ((uint8_t *)(b) + offsetof(T, f))

#endif
