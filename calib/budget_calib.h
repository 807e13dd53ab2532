/* calib/budget_calib.h — calibrated predictions for the size-budget planner
 * (`nibble plan --calibrate-kld TEXT`; docs/planner.md).
 *
 * The planner's per-tensor errors (quant/budget.h) are importance-weighted
 * squared errors: comparable within a tensor, but a unit of error in one
 * tensor group (attn_v, ffn_down, output ...) does not cost the model's output
 * what it costs in another. This step measures that cost: for every tensor
 * group (the name without "blk.N."), a copy of the model with only that
 * group's tensors quantized (each to its cheapest candidate) is scored by the
 * engine against the source (mean KLD over o->text_path, llama-perplexity's
 * method); the group's factor is that KLD divided by the group's predicted
 * error at those types, and every candidate error of the group's tensors is
 * multiplied by it (errors become "predicted KLD"). A group whose KLD or
 * prediction is zero takes the median factor of the others.
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
} nb_group_cal_opts;

typedef struct nb_group_cal_entry {
    char *name;
    size_t n_tensors;
    double predicted;         /* Σ err of the group's tensors at their cheapest types */
    double kld;               /* mean KLD with only this group quantized */
    double factor;            /* kld / predicted (or the median) */
} nb_group_cal_entry;

typedef struct nb_group_cal {
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
