/* core/progress.h — a progress bar on stderr for long work.
 *
 * Draws "label [#####     ]  42% 1.2 GB/s ETA 0:12 tensor-name" at most 10
 * times a second. Off when stderr is not a terminal or ctx->quiet is set;
 * the calls are then cheap no-ops. Thread-safe: workers may call update.
 */
#ifndef NB_CORE_PROGRESS_H
#define NB_CORE_PROGRESS_H

#include "core/ctx.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct nb_progress {
    bool enabled;
    const char *label;
    uint64_t total;     /* units of work (bytes) */
    uint64_t done;
    double t0, last_draw;
    pthread_mutex_t mu;
} nb_progress;

void nb_progress_begin(nb_progress *p, nb_ctx *ctx, const char *label, uint64_t total);
/* Add `delta` units; `item` (may be NULL) is shown after the figures. */
void nb_progress_add(nb_progress *p, uint64_t delta, const char *item);
/* Clear the bar line. */
void nb_progress_end(nb_progress *p);

/* Human-readable byte count into buf ("1.23 GB"); returns buf. */
const char *nb_fmt_bytes(double bytes, char *buf, size_t n);

#endif
