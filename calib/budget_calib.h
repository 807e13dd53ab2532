/* calib/budget_calib.h — calibrated predictions for the size-budget planner
 * (`nibble plan --calibrate-kld TEXT`; docs/planner.md).
 *
 * The planner's per-tensor errors (quant/budget.h) are importance-weighted
 * squared errors: comparable within a tensor, but a unit of error in one
 * tensor group (attn_v, ffn_down, output ...) does not cost the model's output
 * what it costs in another. This step measures that cost: for every tensor
 * group (the name without "blk.N."), a copy of the model with only that
 * group's tensors quantized is scored by the engine against the source; the
 * group's factor is that score divided by the group's predicted error at
 * those types, and every candidate error of the group's tensors is
 * multiplied by it (errors become "predicted score"). A group whose score or
 * prediction is zero takes the median factor of the others.
 *
 * The score: for a language model the mean KLD over o->text_path
 * (llama-perplexity's method, in chunks of n_ctx); for a text encoder
 * (NB_ARCH_F_ENCODER: EmbeddingGemma) the mean cosine distance of the
 * embeddings of every line of o->text_path (engine/embed.h; n_ctx and
 * n_chunks do not apply). Both in precise arithmetic, so the engine's own
 * rounding is not measured.
 *
 * The types: each tensor at its frontier candidate nearest o->ref_bpw bits
 * per weight (ties: the cheaper), so the factor is measured where the
 * allocation will decide (a squared-error model fits one point of a tensor's
 * curve, not all of it: at 2 bits an encoder's output is far from linear in
 * the weights' error); ref_bpw 0: the cheapest candidate (the strongest
 * signal).
 *
 * Cost: one engine pass over the text for the reference and one per group,
 * plus writing the one-group copy (work_prefix + ".group.gguf", removed after
 * each group; the source's size on disk). Deterministic for any thread count.
 */
#ifndef NB_CALIB_BUDGET_CALIB_H
#define NB_CALIB_BUDGET_CALIB_H

#include "core/ctx.h"
#include "formats/model.h"
#include "quant/budget.h"
#include "quant/quantize.h"

typedef struct nb_group_cal_opts {
    const char *text_path;    /* evaluation text (>= 2 x n_ctx tokens) */
    int n_ctx;                /* 0: 512 */
    int n_chunks;             /* <= 0: all */
    const char *work_prefix;  /* temporaries: prefix + ".ref.logits", + ".group.gguf" */
    double ref_bpw;           /* > 0: measure each tensor at its candidate nearest this (see above) */
} nb_group_cal_opts;

typedef struct nb_group_cal_entry {
    char *name;
    size_t n_tensors;
    double predicted;         /* Σ err of the group's tensors at the measured types */
    double kld;               /* the score with only this group quantized: mean KLD, or mean cosine distance
                                 for an encoder (nb_group_cal.metric) */
    double factor;            /* kld / predicted (or the median) */
    double bpw;               /* bits per weight of the group at the measured types */
} nb_group_cal_entry;

typedef struct nb_group_cal {
    const char *metric;       /* "kld" or "cos_dist" (static) */
    size_t n;
    nb_group_cal_entry *groups;
} nb_group_cal;

/* Calibrate s (measured on m, opened from src) in place (see above); qo: the
 * importance the writer uses. out is filled (free with nb_group_cal_free, also
 * after a failure). Errors: the engine's and the writer's; NB_ERR_RANGE when
 * no group changes the KLD at all. */
nb_status nb_group_calibrate(const char *src, nb_model *m, nb_sens *s, const nb_group_cal_opts *o,
                             const nb_quant_opts *qo, nb_group_cal *out, nb_ctx *ctx);
void nb_group_cal_free(nb_group_cal *c);

#endif
