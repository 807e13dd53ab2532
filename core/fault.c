/* core/fault.c — the test hooks of core/fault.h. Process-wide by design: the
 * N-th operation of the whole process is what a test loop steps through. */
#include "core/fault.h"

#ifdef NB_FAULT_INJECTION
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static long long target(const char *var, _Atomic long long *cache) {
    long long t = atomic_load(cache);
    if (t == -2) {
        const char *s = getenv(var);
        t = s && *s ? atoll(s) : -1;
        atomic_store(cache, t);
    }
    return t;
}

static _Atomic long long g_alloc_target = -2, g_alloc_count, g_io_target = -2, g_io_count;
static _Atomic int g_report = -1; /* NIBBLE_FAULT_REPORT: -1 unknown, 0 no, 1 yes */

static void report(void) {
    FILE *f = fopen(getenv("NIBBLE_FAULT_REPORT"), "a");
    if (!f) return;
    fprintf(f, "alloc %lld io %lld\n", (long long)atomic_load(&g_alloc_count), (long long)atomic_load(&g_io_count));
    fclose(f);
}

static bool reporting(void) {
    int r = atomic_load(&g_report);
    if (r < 0) {
        const char *s = getenv("NIBBLE_FAULT_REPORT");
        int want = s && *s ? 1 : 0, expected = -1;
        if (atomic_compare_exchange_strong(&g_report, &expected, want) && want) atexit(report);
        r = atomic_load(&g_report);
    }
    return r == 1;
}

static bool hit(const char *var, _Atomic long long *cache, _Atomic long long *count) {
    long long t = target(var, cache);
    if (t <= 0 && !reporting()) return false;
    return atomic_fetch_add(count, 1) + 1 == t;
}

bool nb_fault_alloc(void) { return hit("NIBBLE_FAULT_ALLOC", &g_alloc_target, &g_alloc_count); }
bool nb_fault_io(void) { return hit("NIBBLE_FAULT_IO", &g_io_target, &g_io_count); }
#else
typedef int nb_fault_unused; /* ISO C: a translation unit must not be empty */
#endif
