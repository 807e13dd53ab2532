/* core/checked.h — overflow-safe integer arithmetic for sizes read from files.
 * Every count, offset or shape product that comes from an untrusted file goes
 * through these before it is used to allocate or index. All return false on
 * overflow and leave *out unspecified. */
#ifndef NB_CORE_CHECKED_H
#define NB_CORE_CHECKED_H

#include <stdbool.h>
#include <stdint.h>

static inline bool nb_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
static inline bool nb_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
/* Round x up to a multiple of `align` (align > 0). */
static inline bool nb_align_u64(uint64_t x, uint64_t align, uint64_t *out) {
    uint64_t r = x % align;
    if (r == 0) { *out = x; return true; }
    return nb_add_u64(x, align - r, out);
}

#endif
