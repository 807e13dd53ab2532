/* engine/embed_impl.h — internals shared by engine/embed.c (opening,
 * tokenization, files, metrics) and engine/forward_embed.c (the head).
 * Not a public header. */
#ifndef NB_ENGINE_EMBED_IMPL_H
#define NB_ENGINE_EMBED_IMPL_H

#include "engine/embed.h"
#include "engine/engine_impl.h"
#include "engine/tokenizer.h"

struct nb_embedder {
    nb_engine *eng;      /* owns the model */
    nb_tokenizer *tok;   /* NULL without tokenizer metadata */
    nb_wmat dense2;      /* {E, D}; data NULL when the model has no Dense modules */
    nb_wmat dense3;      /* {D, E} */
    int n_dense;         /* D */
    float *pool;         /* E: pooled vector */
    float *hidden;       /* D: after dense_2 */
    float *proj;         /* E: after dense_3 */
};

/* Run ids[0..n) (already checked) and write the normalised embedding to out[E]. */
nb_status nb_embed_forward(nb_embedder *m, const int32_t *ids, int n, float *out, nb_ctx *ctx);

#endif
