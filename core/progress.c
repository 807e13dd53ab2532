/* core/progress.c — progress bar on stderr. */
#include "core/progress.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

const char *nb_fmt_bytes(double b, char *buf, size_t n) {
    static const char *const u[] = {"B", "KB", "MB", "GB", "TB"};
    int k = 0;
    while (b >= 1000.0 && k < 4) { b /= 1000.0; k++; }
    snprintf(buf, n, k ? "%.2f %s" : "%.0f %s", b, u[k]);
    return buf;
}

void nb_progress_begin(nb_progress *p, nb_ctx *ctx, const char *label, uint64_t total) {
    memset(p, 0, sizeof *p);
    p->enabled = !(ctx && ctx->quiet) && isatty(STDERR_FILENO);
    p->label = label;
    p->total = total;
    p->t0 = nb_now();
    pthread_mutex_init(&p->mu, NULL);
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
    char rb[32];
    nb_fmt_bytes(rate, rb, sizeof rb);
    fprintf(stderr, "\r\033[K%s [%s] %3d%% %s/s ETA %d:%02d %.40s", p->label, bar, (int)(frac * 100.0), rb,
            (int)eta / 60, (int)eta % 60, item ? item : "");
    fflush(stderr);
}

void nb_progress_add(nb_progress *p, uint64_t delta, const char *item) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->done += delta;
    if (p->enabled) {
        double now = nb_now();
        if (now - p->last_draw >= 0.1) {
            p->last_draw = now;
            draw(p, item, now);
        }
    }
    pthread_mutex_unlock(&p->mu);
}

void nb_progress_end(nb_progress *p) {
    if (!p) return;
    if (p->enabled) { fprintf(stderr, "\r\033[K"); fflush(stderr); }
    pthread_mutex_destroy(&p->mu);
}
