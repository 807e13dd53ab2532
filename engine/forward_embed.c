/* engine/forward_embed.c — the encoder's head after the transformer layers:
 * final norm, mean pooling, the sentence-transformers Dense projections and
 * L2 normalisation (engine/embed.h gives the graph). The layers themselves
 * are forward.c's, run with bidirectional attention (nb_ehparams.bidir).
 *
 * Numerics: pooling and the norms accumulate in double, in token / element
 * order on one thread, so the result is the same at any thread count; the
 * Dense matmuls go through nb_eng_matmul (calibration hooks see them).
 */
#include "engine/embed_impl.h"

#include <math.h>
#include <string.h>

nb_status nb_embed_forward(nb_embedder *m, const int32_t *ids, int n, float *out, nb_ctx *ctx) {
    nb_engine *e = m->eng;
    const int E = e->hp.n_embd;
    nb_engine_reset(e);
    /* logits NULL: the output projection is skipped; x keeps the last layer's residual stream */
    NB_TRY(nb_engine_eval(e, ids, n, 0, NULL, ctx));
    nb_eng_rmsnorm(e->xb, e->x, e->output_norm, n, E, e->hp.rms_eps, e->n_threads);
    /* mean pooling over every token of the text */
    for (int i = 0; i < E; i++) {
        double s = 0;
        for (int t = 0; t < n; t++) s += e->xb[(size_t)t * E + i];
        m->pool[i] = (float)(s / n);
    }
    const float *p = m->pool;
    if (m->dense2.data) {
        NB_TRY(nb_eng_matmul(e, &m->dense2, -1, m->pool, 1, m->hidden, ctx));
        NB_TRY(nb_eng_matmul(e, &m->dense3, -1, m->hidden, 1, m->proj, ctx));
        p = m->proj;
    }
    double ss = 0;
    for (int i = 0; i < E; i++) ss += (double)p[i] * p[i];
    const double inv = ss > 0 ? 1.0 / sqrt(ss) : 0.0;
    for (int i = 0; i < E; i++) out[i] = (float)(p[i] * inv);
    return NB_OK;
}
