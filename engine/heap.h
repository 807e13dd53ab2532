/* engine/heap.h — a binary min-heap of fixed-size elements under a caller's
 * order, for the tokenizers' merge queues (SPM and BPE pop the best bigram).
 * Ties are resolved only by `before`, so the order is deterministic. */
#ifndef NB_ENGINE_HEAP_H
#define NB_ENGINE_HEAP_H

#include "core/ctx.h"

#include <stdbool.h>
#include <stddef.h>

/* true when element a must be popped before element b */
typedef bool (*nb_heap_before_fn)(const void *a, const void *b);

typedef struct nb_heap {
    unsigned char *a; /* cap + 1 elements: the last slot is scratch */
    size_t n, cap, esz;
    nb_heap_before_fn before;
} nb_heap;

/* An empty heap of elements of `esz` bytes (no allocation yet). */
void nb_heap_init(nb_heap *h, size_t esz, nb_heap_before_fn before);
void nb_heap_free(nb_heap *h); /* NULL-safe */
static inline void nb_heap_clear(nb_heap *h) { h->n = 0; }
nb_status nb_heap_push(nb_heap *h, const void *e, nb_ctx *ctx);
/* Pop the first element into out (h->n > 0). */
void nb_heap_pop(nb_heap *h, void *out);

#endif
