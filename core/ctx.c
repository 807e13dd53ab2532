/* core/ctx.c — context, error messages, logging, allocation helpers. */
#include "core/ctx.h"

#include "core/fault.h"
#include "core/str.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void nb_ctx_init(nb_ctx *ctx) {
    if (!ctx) return;
    memset(ctx, 0, sizeof *ctx);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    ctx->n_threads = n > 0 ? (int)n : 1;
    ctx->log_level = NB_LOG_INFO;
    pthread_mutex_init(&ctx->mu, NULL);
}

void nb_ctx_free(nb_ctx *ctx) {
    if (!ctx) return;
    pthread_mutex_destroy(&ctx->mu);
}

int nb_ctx_threads(const nb_ctx *ctx) { return ctx && ctx->n_threads > 0 ? ctx->n_threads : 1; }

__attribute__((format(printf, 4, 0))) static void set_msg(nb_ctx *ctx, nb_status code, const char *prefix,
                                                        const char *fmt, va_list ap) {
    char raw[NB_ERRMSG_MAX], tmp[NB_ERRMSG_MAX];
    vsnprintf(raw, sizeof raw, fmt, ap);
    nb_str_escape_ctl(tmp, sizeof tmp, raw); /* names quoted from files reach a terminal */
    pthread_mutex_lock(&ctx->mu);
    ctx->err = code;
    size_t np = strlen(tmp);
    if (prefix && !strncmp(ctx->errmsg, tmp, np) && ctx->errmsg[np] == ':') {
        /* already says it ("x.gguf: x.gguf: ..." would double the prefix) */
    } else if (prefix) {
        char joined[2 * NB_ERRMSG_MAX + 2];
        snprintf(joined, sizeof joined, "%s: %s", tmp, ctx->errmsg);
        memcpy(ctx->errmsg, joined, NB_ERRMSG_MAX - 1);
        ctx->errmsg[NB_ERRMSG_MAX - 1] = 0;
    } else {
        memcpy(ctx->errmsg, tmp, sizeof tmp);
    }
    pthread_mutex_unlock(&ctx->mu);
}

nb_status nb_err(nb_ctx *ctx, nb_status code, const char *fmt, ...) {
    if (!ctx) return code;
    va_list ap;
    va_start(ap, fmt);
    set_msg(ctx, code, NULL, fmt, ap);
    va_end(ap);
    return code;
}

nb_status nb_err_prefix(nb_ctx *ctx, const char *fmt, ...) {
    if (!ctx) return NB_ERR_INTERNAL;
    va_list ap;
    va_start(ap, fmt);
    set_msg(ctx, ctx->err, "", fmt, ap);
    va_end(ap);
    return ctx->err;
}

nb_status nb_err_errno(nb_ctx *ctx, int errnum, const char *fmt, ...) {
    nb_status code = NB_ERR_IO;
    if (errnum == ENOSPC || errnum == EDQUOT) code = NB_ERR_NOSPACE;
    else if (errnum == ENOMEM) code = NB_ERR_NOMEM;
    if (!ctx) return code;
    char what[NB_ERRMSG_MAX / 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const char *why = errnum == ENOSPC ? "disk full (no space left on device)" : strerror(errnum);
    return nb_err(ctx, code, "%s: %s", what, why);
}

const char *nb_errmsg(const nb_ctx *ctx) { return ctx ? ctx->errmsg : ""; }

void nb_err_clear(nb_ctx *ctx) {
    if (!ctx) return;
    pthread_mutex_lock(&ctx->mu);
    ctx->err = NB_OK;
    ctx->errmsg[0] = 0;
    pthread_mutex_unlock(&ctx->mu);
}

const char *nb_status_name(nb_status s) {
    switch (s) {
    case NB_OK: return "ok";
    case NB_ERR_INVALID: return "invalid argument";
    case NB_ERR_FORMAT: return "bad format";
    case NB_ERR_UNSUPPORTED: return "unsupported";
    case NB_ERR_RANGE: return "out of range";
    case NB_ERR_IO: return "i/o error";
    case NB_ERR_NOSPACE: return "disk full";
    case NB_ERR_NOMEM: return "out of memory";
    case NB_ERR_INTERNAL: return "internal error";
    }
    return "?";
}

void nb_log(nb_ctx *ctx, nb_log_level level, const char *fmt, ...) {
    if (ctx && level > ctx->log_level) return;
    if (ctx && ctx->quiet && level > NB_LOG_WARN) return;
    char raw[2048], line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    nb_str_escape_ctl(line, sizeof line, raw);
    if (ctx && ctx->log_fn) {
        ctx->log_fn(ctx->log_user, level, line);
        return;
    }
    static const char *const tags[] = {"error", "warning", "info", "debug"};
    if (level == NB_LOG_INFO) fprintf(stderr, "%s\n", line);
    else fprintf(stderr, "nibble: %s: %s\n", tags[level], line);
}

/* Set once any allocation through the hooks below came back NULL (injected or
 * real): the run's later errors may be consequences (core/fault.h). */
static _Atomic bool g_alloc_failed;

bool nb_alloc_failed(void) { return atomic_load(&g_alloc_failed); }

static void *noted(void *p) {
    if (!p) atomic_store(&g_alloc_failed, true);
    return p;
}

void *nb_malloc_raw(size_t n) { return noted(nb_fault_alloc() ? NULL : malloc(n ? n : 1)); }
void *nb_calloc_raw(size_t count, size_t size) {
    return noted(nb_fault_alloc() ? NULL : calloc(count ? count : 1, size ? size : 1));
}
void nb_free_raw(void *p) { free(p); }
void *nb_alloc_opaque(void *opaque, size_t n) {
    (void)opaque;
    return nb_malloc_raw(n);
}
void nb_free_opaque(void *opaque, void *p) {
    (void)opaque;
    free(p);
}

void *nb_malloc(nb_ctx *ctx, size_t n, const char *what) {
    void *p = nb_malloc_raw(n);
    if (!p) nb_err(ctx, NB_ERR_NOMEM, "out of memory allocating %zu bytes for %s", n, what);
    return p;
}

void *nb_calloc(nb_ctx *ctx, size_t count, size_t size, const char *what) {
    void *p = nb_calloc_raw(count, size);
    if (!p) nb_err(ctx, NB_ERR_NOMEM, "out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}

void *nb_realloc(nb_ctx *ctx, void *p, size_t n, const char *what) {
    void *q = noted(nb_fault_alloc() ? NULL : realloc(p, n ? n : 1));
    if (!q) nb_err(ctx, NB_ERR_NOMEM, "out of memory allocating %zu bytes for %s", n, what);
    return q;
}

char *nb_strdup(nb_ctx *ctx, const char *s) { return nb_strndup(ctx, s, strlen(s)); }

char *nb_strndup(nb_ctx *ctx, const char *s, size_t n) {
    char *p = nb_malloc(ctx, n + 1, "string");
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

double nb_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
