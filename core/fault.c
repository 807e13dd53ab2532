/* core/fault.c — the test hooks of core/fault.h. Process-wide by design: the
 * N-th operation of the whole process is what a test loop steps through. */
#include "core/fault.h"

#ifdef NB_FAULT_INJECTION
#include <stdatomic.h>
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

static bool hit(const char *var, _Atomic long long *cache, _Atomic long long *count) {
    long long t = target(var, cache);
    return t > 0 && atomic_fetch_add(count, 1) + 1 == t;
}

static _Atomic long long g_alloc_target = -2, g_alloc_count, g_io_target = -2, g_io_count;

bool nb_fault_alloc(void) { return hit("NIBBLE_FAULT_ALLOC", &g_alloc_target, &g_alloc_count); }
bool nb_fault_io(void) { return hit("NIBBLE_FAULT_IO", &g_io_target, &g_io_count); }
#else
typedef int nb_fault_unused; /* ISO C: a translation unit must not be empty */
#endif
