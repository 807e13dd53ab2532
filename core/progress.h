/* core/progress.h — progress of long work: a bar on stderr for people and
 * JSON-lines events for machines.
 *
 * The bar: "label [#####     ]  42% 1.2 GB/s ETA 0:12 tensor-name" at most 10
 * times a second (the rate in the progress's unit: bytes as B/s, anything
 * else as "<n> <unit>/s"). Off when stderr is not a terminal or ctx->quiet is
 * set; the calls are then cheap no-ops. Thread-safe: workers may call add.
 *
 * Events (ctx->event_fn set, ctx->quiet not): one JSON object per event,
 * what `--json` prints as JSON lines (docs/cli.md "Progress events"):
 *   {"event":"progress","stage":label,"done":N,"total":N,"unit":"bytes",
 *    "seconds":S,"rate":R[,"item":"tensor name"]}
 * at begin (done 0), at most once a second while running, and at end (done as
 * far as it got); {"event":"stage", ...} from nb_event_stage. Numbers are
 * plain JSON numbers; names are escaped as cJSON does.
 */
#ifndef NB_CORE_PROGRESS_H
#define NB_CORE_PROGRESS_H

#include "core/ctx.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct nb_progress {
    bool enabled;
    const char *label;
    const char *unit;   /* "bytes" (default), "tokens", ... */
    uint64_t total;     /* units of work */
    uint64_t done;
    double t0, last_draw, last_event;
    nb_ctx *ctx;        /* events: NULL when off */
    pthread_mutex_t mu;
} nb_progress;

/* Begin `total` bytes of work. */
void nb_progress_begin(nb_progress *p, nb_ctx *ctx, const char *label, uint64_t total);
/* Begin `total` units of work (unit: a static string, plural: "tokens"). */
void nb_progress_begin_unit(nb_progress *p, nb_ctx *ctx, const char *label, uint64_t total, const char *unit);
/* Add `delta` units; `item` (may be NULL) is shown after the figures. */
void nb_progress_add(nb_progress *p, uint64_t delta, const char *item);
/* Clear the bar line. */
void nb_progress_end(nb_progress *p);

/* A stage event, {"event":"stage","phase":phase,"stage":name,"index":i,"of":n
 * [,"detail":d][,"seconds":s]}: phase "start", "skip" (done in an earlier
 * run) or "end". index/of 0: not part of a numbered sequence (left out). */
void nb_event_stage(nb_ctx *ctx, const char *phase, const char *name, int index, int n, const char *detail,
                    double seconds);
/* Emit a JSON object text as an event (the caller built it). */
void nb_event_raw(nb_ctx *ctx, const char *json);

/* Human-readable byte count into buf ("1.23 GB"); returns buf. */
const char *nb_fmt_bytes(double bytes, char *buf, size_t n);

#endif
