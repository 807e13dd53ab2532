/* engine/forward_moe.c — the mixture-of-experts FFN (mixtral, qwen2moe, qwen3moe).
 *
 * As llama.cpp's build_moe_ffn with softmax gating:
 *   p      = softmax(xb W_router)                      per token, over all experts
 *   chosen = the n_used largest p (ties: lower expert id first)
 *   w      = p[chosen], divided by their sum when the architecture
 *            renormalises (mixtral, qwen3moe; not qwen2moe), times
 *            expert_weights_scale when the metadata sets one
 *   out    = sum over slots k in order: w_k * down_k(act(gate_k xb) * up_k xb)
 *   [qwen2moe] out += sigmoid(xb . w_shexp_gate) * shared_expert(xb)
 * Each expert multiplies only the rows of the tokens routed to it, reading
 * its matrix as a slice of the packed 3-D stack (never a dequantized copy).
 * With all_experts (calibration, nb_engine_set_all_experts), every expert runs on every token of the
 * batch so the hooks see its inputs; only the chosen slots reach the output,
 * which is therefore the same (each output row is computed independently).
 * Experts are visited in id order; every sum has a fixed order, so the
 * result does not depend on the thread count.
 */
#include "engine/engine_impl.h"

#include "core/expf.h"

#include <math.h>
#include <string.h>

void nb_eng_route_token(const float *logits, int X, int U, bool norm, float scale, float *probs, int32_t *sel,
                        float *w) {
    /* nb_expf: libm's expf bits on every platform (core/expf.h) */
    nb_expf_shift_n(logits, nb_max_n(logits, (size_t)X), probs, (size_t)X);
    double sum = 0;
    for (int i = 0; i < X; i++) sum += probs[i];
    const float inv = (float)(1.0 / sum);
    for (int i = 0; i < X; i++) probs[i] *= inv;
    for (int k = 0; k < U; k++) {
        int best = -1;
        for (int i = 0; i < X; i++) {
            bool taken = false;
            for (int j = 0; j < k; j++) taken |= sel[j] == i;
            if (!taken && (best < 0 || probs[i] > probs[best])) best = i;
        }
        sel[k] = best;
        w[k] = probs[best];
    }
    if (norm) {
        float s = 0;
        for (int k = 0; k < U; k++) s += w[k];
        for (int k = 0; k < U; k++) w[k] /= s;
    }
    if (scale != 1.0f)
        for (int k = 0; k < U; k++) w[k] *= scale;
}

nb_status nb_engine_moe(nb_engine *e, int L, const float *xb, int n, float *out, nb_ctx *ctx) {
    const nb_ehparams *hp = &e->hp;
    const nb_layer *l = &e->layers[L];
    const int X = hp->n_expert, U = hp->n_expert_used, E = hp->n_embd;
    const int64_t Fe = hp->n_ff_exp;

    NB_TRY(nb_eng_matmul(e, &l->gate_inp, -1, xb, n, e->router, ctx));
    for (int t = 0; t < n; t++) {
        float *r = e->router + (size_t)t * X; /* logits replaced by probabilities */
        nb_eng_route_token(r, X, U, hp->norm_topk, hp->expert_weights_scale, r, e->sel + (size_t)t * U,
                    e->selw + (size_t)t * U);
    }
    if (e->hooks.on_route) e->hooks.on_route(e->hooks.user, L, e->sel, e->selw, n, U, X);

    for (int ex = 0; ex < X; ex++) {
        int c = 0;
        for (int t = 0; t < n; t++) {
            int slot = -1;
            for (int k = 0; k < U; k++)
                if (e->sel[(size_t)t * U + k] == ex) slot = k;
            if (slot < 0 && !e->all_experts) continue;
            e->rows[c] = t;
            e->slots[c] = slot; /* -1: statistics only (all_experts) */
            memcpy(e->xe + (size_t)c * E, xb + (size_t)t * E, (size_t)E * sizeof(float));
            c++;
        }
        if (!c) continue;
        NB_TRY(nb_eng_matmul(e, &l->gate_exps, ex, e->xe, c, e->hb, ctx));
        NB_TRY(nb_eng_matmul(e, &l->up_exps, ex, e->xe, c, e->hb2, ctx));
        for (int r = 0; r < c; r++) nb_eng_glu(hp->act, e->hb + r * Fe, e->hb2 + r * Fe, Fe);
        NB_TRY(nb_eng_matmul(e, &l->down_exps, ex, e->hb, c, e->ye, ctx));
        for (int r = 0; r < c; r++)
            if (e->slots[r] >= 0)
                memcpy(e->ey + ((size_t)e->rows[r] * U + (size_t)e->slots[r]) * E, e->ye + (size_t)r * E,
                   (size_t)E * sizeof(float));
    }
    for (int t = 0; t < n; t++) {
        float *o = out + (size_t)t * E;
        for (int k = 0; k < U; k++) {
            const float w = e->selw[(size_t)t * U + k];
            const float *y = e->ey + ((size_t)t * U + k) * E;
            if (k == 0)
                for (int i = 0; i < E; i++) o[i] = w * y[i];
            else
                for (int i = 0; i < E; i++) o[i] += w * y[i];
        }
    }

    if (l->gate_shexp.data) {
        const int64_t Fs = hp->n_ff_shexp;
        float *g = e->router; /* n x 1: the router's probabilities are no longer needed */
        NB_TRY(nb_eng_matmul(e, &l->gate_inp_shexp, -1, xb, n, g, ctx));
        NB_TRY(nb_eng_matmul(e, &l->gate_shexp, -1, xb, n, e->hb, ctx));
        NB_TRY(nb_eng_matmul(e, &l->up_shexp, -1, xb, n, e->hb2, ctx));
        for (int t = 0; t < n; t++) nb_eng_glu(hp->act, e->hb + t * Fs, e->hb2 + t * Fs, Fs);
        NB_TRY(nb_eng_matmul(e, &l->down_shexp, -1, e->hb, n, e->ye, ctx));
        for (int t = 0; t < n; t++) {
            const float s = 1.0f / (1.0f + nb_expf(-g[t]));
            for (int i = 0; i < E; i++) out[(size_t)t * E + i] += s * e->ye[(size_t)t * E + i];
        }
    }
    return NB_OK;
}
