/* engine/heap.c — binary min-heap (see engine/heap.h). */
#include "engine/heap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define AT(h, i) ((h)->a + (i) * (h)->esz)

void nb_heap_init(nb_heap *h, size_t esz, nb_heap_before_fn before) {
    memset(h, 0, sizeof *h);
    h->esz = esz;
    h->before = before;
}

void nb_heap_free(nb_heap *h) {
    if (!h) return;
    free(h->a);
    h->a = NULL;
    h->n = h->cap = 0;
}

nb_status nb_heap_push(nb_heap *h, const void *e, nb_ctx *ctx) {
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 64;
        if (nc > SIZE_MAX / h->esz - 1) return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: merge queue too long");
        unsigned char *na = nb_realloc(NULL, h->a, (nc + 1) * h->esz, "heap");
        if (!na) return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: out of memory (merge queue)");
        h->a = na;
        h->cap = nc;
    }
    unsigned char *tmp = AT(h, h->cap); /* scratch: e may not stay where it is while parents move down */
    memcpy(tmp, e, h->esz);
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!h->before(tmp, AT(h, p))) break;
        memcpy(AT(h, i), AT(h, p), h->esz);
        i = p;
    }
    memcpy(AT(h, i), tmp, h->esz);
    return NB_OK;
}

void nb_heap_pop(nb_heap *h, void *out) {
    memcpy(out, AT(h, 0), h->esz);
    size_t n = --h->n;
    const unsigned char *last = AT(h, n); /* the old last element stays in place until moved */
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const unsigned char *best = last;
        if (l < n && h->before(AT(h, l), best)) m = l, best = AT(h, l);
        if (r < n && h->before(AT(h, r), best)) m = r;
        if (m == i) break;
        memcpy(AT(h, i), AT(h, m), h->esz);
        i = m;
    }
    if (n > 0) memcpy(AT(h, i), last, h->esz);
}
