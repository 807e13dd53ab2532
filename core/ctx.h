/* core/ctx.h — status codes, the per-job context, error messages and logging.
 *
 * Every fallible function in libnibble returns an nb_status and, on failure,
 * leaves a one-line explanation in the context (nb_errmsg). The message names
 * the file, the tensor and the byte offset where those apply, e.g.
 *   "model.safetensors: tensor 'lm_head.weight': data_offsets [10,20) overlap previous tensor".
 * There is no global mutable state: threads, log sink and the error message
 * live in the nb_ctx passed down. An nb_ctx may be shared by the OpenMP
 * workers of one job: setting the message is serialised by a mutex.
 */
#ifndef NB_CORE_CTX_H
#define NB_CORE_CTX_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum nb_status {
    NB_OK = 0,
    NB_ERR_INVALID,     /* bad argument from the caller (usage) */
    NB_ERR_FORMAT,      /* input file is malformed, truncated or hostile */
    NB_ERR_UNSUPPORTED, /* well-formed but not something nibble handles (yet) */
    NB_ERR_RANGE,       /* a value (shape, count, number) is out of the allowed range */
    NB_ERR_IO,          /* read/write/open failure */
    NB_ERR_NOSPACE,     /* disk full (ENOSPC / EDQUOT) */
    NB_ERR_NOMEM,       /* allocation failed */
    NB_ERR_INTERNAL     /* a bug: should never be seen */
} nb_status;

typedef enum nb_log_level {
    NB_LOG_ERROR = 0,
    NB_LOG_WARN = 1,
    NB_LOG_INFO = 2,
    NB_LOG_DEBUG = 3
} nb_log_level;

/* A log sink receives one complete line without the trailing newline. */
typedef void (*nb_log_fn)(void *user, nb_log_level level, const char *line);

#define NB_ERRMSG_MAX 1024

typedef struct nb_ctx {
    int n_threads;          /* OpenMP workers for parallel stages; >= 1 */
    nb_log_level log_level; /* messages above this level are dropped */
    bool quiet;             /* no progress bars, only warnings and errors */
    nb_log_fn log_fn;       /* NULL: lines go to stderr */
    void *log_user;
    /* machine-readable progress events (core/progress.h): one JSON object per call, no newline;
     * NULL: none. Called from one thread at a time per progress object. */
    void (*event_fn)(void *user, const char *json);
    void *event_user;
    /* error state: last failure's code and message */
    pthread_mutex_t mu;
    nb_status err;
    char errmsg[NB_ERRMSG_MAX];
} nb_ctx;

/* Initialise with defaults: threads = online CPUs, level INFO, not quiet.
 * nb_ctx_free releases the mutex; both accept NULL. */
void nb_ctx_init(nb_ctx *ctx);
void nb_ctx_free(nb_ctx *ctx);
/* Workers a parallel stage may use: ctx->n_threads, or 1 when ctx is NULL or
 * its count is not positive. */
int nb_ctx_threads(const nb_ctx *ctx);

/* Record a failure: sets code + formatted message and returns `code`, so
 * call sites read `return nb_err(ctx, NB_ERR_FORMAT, "%s: ...", path);`.
 * ctx may be NULL (the message is then dropped). */
nb_status nb_err(nb_ctx *ctx, nb_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepend "prefix: " to the current message (adds context on the way up)
 * and return the current code. */
nb_status nb_err_prefix(nb_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Record errno-based I/O failure: "<what>: <strerror>"; ENOSPC/EDQUOT map to NB_ERR_NOSPACE. */
nb_status nb_err_errno(nb_ctx *ctx, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The message of the last failure ("" if none). Valid until the next nb_err* on ctx. */
const char *nb_errmsg(const nb_ctx *ctx);
void nb_err_clear(nb_ctx *ctx);
/* Short name of a status ("format", "io", ...). */
const char *nb_status_name(nb_status s);

void nb_log(nb_ctx *ctx, nb_log_level level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define NB_WARN(ctx, ...) nb_log((ctx), NB_LOG_WARN, __VA_ARGS__)
#define NB_INFO(ctx, ...) nb_log((ctx), NB_LOG_INFO, __VA_ARGS__)
#define NB_DEBUG(ctx, ...) nb_log((ctx), NB_LOG_DEBUG, __VA_ARGS__)

/* Keep call sites flat. */
#define NB_TRY(expr)                                                                               \
    do {                                                                                           \
        nb_status nb__s = (expr);                                                                  \
        if (nb__s != NB_OK) return nb__s;                                                          \
    } while (0)
#define NB_RETURN_IF(ctx, cond, code, ...)                                                         \
    do {                                                                                           \
        if (cond) return nb_err((ctx), (code), __VA_ARGS__);                                       \
    } while (0)
/* For functions with a cleanup label: set `st` and jump. */
#define NB_CHECK_GOTO(st, expr, label)                                                             \
    do {                                                                                           \
        (st) = (expr);                                                                             \
        if ((st) != NB_OK) goto label;                                                             \
    } while (0)
#define NB_FAIL_GOTO(st, label, ctx, code, ...)                                                    \
    do {                                                                                           \
        (st) = nb_err((ctx), (code), __VA_ARGS__);                                                 \
        goto label;                                                                                \
    } while (0)

/* Allocation helpers: on failure they record NB_ERR_NOMEM with `what` and return NULL.
 * nb_malloc(…, 0) returns a valid unique pointer. */
void *nb_malloc(nb_ctx *ctx, size_t n, const char *what);
void *nb_calloc(nb_ctx *ctx, size_t count, size_t size, const char *what);
char *nb_strdup(nb_ctx *ctx, const char *s);
char *nb_strndup(nb_ctx *ctx, const char *s, size_t n);
/* The same hooked allocation without a context, for libraries that take an
 * allocator (cJSON_InitHooks, ZSTD_customMem): fault-injectable like nb_malloc,
 * released with free() (nb_free_raw is free for hook tables). */
void *nb_malloc_raw(size_t n);
void *nb_calloc_raw(size_t count, size_t size);
void nb_free_raw(void *p);
/* The same with an unused opaque pointer first (ZSTD_customMem's shape). */
void *nb_alloc_opaque(void *opaque, size_t n);
void nb_free_opaque(void *opaque, void *p);
/* True once any hooked allocation of this process failed (injected or real).
 * A library that reports an allocation failure as something else (cJSON_Parse
 * returns NULL for "out of memory" and for "bad JSON" alike) leaves this set,
 * so the CLI can report the run as out of memory (exit 3), as SQLite's sticky
 * mallocFailed turns any later error into SQLITE_NOMEM. */
bool nb_alloc_failed(void);
/* realloc through the same fault hook: on failure *p's block is left as it was
 * (still owned by the caller). nb_realloc(…, 0) keeps a valid pointer. */
void *nb_realloc(nb_ctx *ctx, void *p, size_t n, const char *what);

/* Wall-clock seconds (monotonic). */
double nb_now(void);

#endif
