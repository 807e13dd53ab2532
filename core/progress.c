/* core/progress.c — progress bar on stderr and JSON-lines events (core/progress.h). */
#include "core/progress.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *nb_fmt_bytes(double b, char *buf, size_t n) {
    static const char *const u[] = {"B", "KB", "MB", "GB", "TB"};
    int k = 0;
    while (b >= 1000.0 && k < 4) { b /= 1000.0; k++; }
    snprintf(buf, n, k ? "%.2f %s" : "%.0f %s", b, u[k]);
    return buf;
}

static bool events_on(const nb_ctx *ctx) { return ctx && ctx->event_fn && !ctx->quiet; }

void nb_event_raw(nb_ctx *ctx, const char *json) {
    if (events_on(ctx) && json) ctx->event_fn(ctx->event_user, json);
}

/* Print j as an event and free it. */
static void emit(nb_ctx *ctx, cJSON *j) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    if (s) ctx->event_fn(ctx->event_user, s);
    free(s);
    cJSON_Delete(j);
}

void nb_event_stage(nb_ctx *ctx, const char *phase, const char *name, int index, int n, const char *detail,
                    double seconds) {
    if (!events_on(ctx)) return;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "event", "stage");
    cJSON_AddStringToObject(j, "phase", phase);
    cJSON_AddStringToObject(j, "stage", name);
    if (n > 0) {
        cJSON_AddNumberToObject(j, "index", index);
        cJSON_AddNumberToObject(j, "of", n);
    }
    if (detail) cJSON_AddStringToObject(j, "detail", detail);
    if (!strcmp(phase, "end")) cJSON_AddNumberToObject(j, "seconds", seconds);
    emit(ctx, j);
}

static void progress_event(nb_progress *p, const char *item, double now) {
    cJSON *j = cJSON_CreateObject();
    double el = now - p->t0;
    cJSON_AddStringToObject(j, "event", "progress");
    cJSON_AddStringToObject(j, "stage", p->label);
    cJSON_AddNumberToObject(j, "done", (double)p->done);
    cJSON_AddNumberToObject(j, "total", (double)p->total);
    cJSON_AddStringToObject(j, "unit", p->unit);
    cJSON_AddNumberToObject(j, "seconds", el);
    cJSON_AddNumberToObject(j, "rate", el > 0 ? (double)p->done / el : 0.0);
    if (item) {
        /* names come from files: keep the event valid JSON (non-ASCII bytes shown as '?') */
        char b[128];
        size_t k = 0;
        for (; item[k] && k < sizeof b - 1; k++) b[k] = (unsigned char)item[k] < 0x80 ? item[k] : '?';
        b[k] = 0;
        cJSON_AddStringToObject(j, "item", b);
    }
    emit(p->ctx, j);
}

void nb_progress_begin_unit(nb_progress *p, nb_ctx *ctx, const char *label, uint64_t total, const char *unit) {
    memset(p, 0, sizeof *p);
    p->enabled = !(ctx && ctx->quiet) && isatty(STDERR_FILENO);
    p->label = label;
    p->unit = unit ? unit : "bytes";
    p->total = total;
    p->t0 = p->last_event = nb_now();
    p->ctx = events_on(ctx) ? ctx : NULL;
    pthread_mutex_init(&p->mu, NULL);
    if (p->ctx) progress_event(p, NULL, p->t0);
}

void nb_progress_begin(nb_progress *p, nb_ctx *ctx, const char *label, uint64_t total) {
    nb_progress_begin_unit(p, ctx, label, total, "bytes");
}

static void draw(nb_progress *p, const char *item, double now) {
    double frac = p->total ? (double)p->done / (double)p->total : 0.0;
    if (frac > 1.0) frac = 1.0;
    int filled = (int)(frac * 24.0);
    char bar[25];
    for (int i = 0; i < 24; i++) bar[i] = i < filled ? '#' : ' ';
    bar[24] = 0;
    double el = now - p->t0, rate = el > 0 ? (double)p->done / el : 0.0;
    double eta = rate > 0 ? (double)(p->total - (p->done < p->total ? p->done : p->total)) / rate : 0.0;
    char rb[48];
    if (!strcmp(p->unit, "bytes")) {
        nb_fmt_bytes(rate, rb, sizeof rb - 2);
        strcat(rb, "/s");
    } else {
        snprintf(rb, sizeof rb, "%.4g %s/s", rate, p->unit);
    }
    fprintf(stderr, "\r\033[K%s [%s] %3d%% %s ETA %d:%02d %.40s", p->label, bar, (int)(frac * 100.0), rb,
            (int)eta / 60, (int)eta % 60, item ? item : "");
    fflush(stderr);
}

void nb_progress_add(nb_progress *p, uint64_t delta, const char *item) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->done += delta;
    if (p->enabled || p->ctx) {
        double now = nb_now();
        if (p->enabled && now - p->last_draw >= 0.1) {
            p->last_draw = now;
            draw(p, item, now);
        }
        if (p->ctx && now - p->last_event >= 1.0) {
            p->last_event = now;
            progress_event(p, item, now);
        }
    }
    pthread_mutex_unlock(&p->mu);
}

void nb_progress_end(nb_progress *p) {
    if (!p) return;
    if (p->enabled) { fprintf(stderr, "\r\033[K"); fflush(stderr); }
    if (p->ctx) progress_event(p, NULL, nb_now());
    pthread_mutex_destroy(&p->mu);
}
