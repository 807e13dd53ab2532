/* core/cleanup.c — partial outputs and mappings a dying process must undo
 * or name (see core/cleanup.h). Everything a handler touches is a lock-free
 * atomic slot; the handlers call only async-signal-safe functions. */
#include "core/cleanup.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    _Atomic(const char *) tmp;
    _Atomic(const char *) lock;
} partial_slot;

typedef struct {
    _Atomic(const char *) path; /* non-NULL: slot in use; written last on add, first on forget */
    _Atomic(uintptr_t) addr;
    _Atomic(size_t) len;
    _Atomic(unsigned long long) dev, ino;
} map_slot;

static partial_slot g_partials[NB_CLEANUP_SLOTS];
static map_slot g_maps[NB_CLEANUP_SLOTS];
static const char *g_prog = "nibble";

int nb_cleanup_add_partial(const char *tmp, const char *lock) {
    for (int i = 0; i < NB_CLEANUP_SLOTS; i++) {
        const char *expect = NULL;
        if (atomic_compare_exchange_strong(&g_partials[i].tmp, &expect, tmp)) {
            atomic_store(&g_partials[i].lock, lock);
            return i;
        }
    }
    return -1;
}

void nb_cleanup_forget_partial(int slot) {
    if (slot < 0 || slot >= NB_CLEANUP_SLOTS) return;
    atomic_store(&g_partials[slot].lock, NULL);
    atomic_store(&g_partials[slot].tmp, NULL);
}

int nb_cleanup_add_map(const void *addr, size_t len, const char *path, unsigned long long dev,
                       unsigned long long ino) {
    static const char claimed[] = "";
    for (int i = 0; i < NB_CLEANUP_SLOTS; i++) {
        const char *expect = NULL;
        if (atomic_compare_exchange_strong(&g_maps[i].path, &expect, claimed)) {
            atomic_store(&g_maps[i].addr, (uintptr_t)addr);
            atomic_store(&g_maps[i].len, len);
            atomic_store(&g_maps[i].dev, dev);
            atomic_store(&g_maps[i].ino, ino);
            atomic_store(&g_maps[i].path, path);
            return i;
        }
    }
    return -1;
}

void nb_cleanup_forget_map(int slot) {
    if (slot < 0 || slot >= NB_CLEANUP_SLOTS) return;
    atomic_store(&g_maps[slot].len, 0);
    atomic_store(&g_maps[slot].path, NULL);
}

nb_status nb_map_check(const void *p, size_t n, nb_ctx *ctx) {
    uintptr_t a = (uintptr_t)p;
    for (int i = 0; i < NB_CLEANUP_SLOTS; i++) {
        const char *path = atomic_load(&g_maps[i].path);
        uintptr_t lo = atomic_load(&g_maps[i].addr);
        size_t len = atomic_load(&g_maps[i].len);
        if (!path || !*path || a < lo || a - lo >= len) continue;
        struct stat sb;
        uint64_t end = (uint64_t)(a - lo) + n;
        if (stat(path, &sb) == 0 && (unsigned long long)sb.st_dev == atomic_load(&g_maps[i].dev) &&
            (unsigned long long)sb.st_ino == atomic_load(&g_maps[i].ino) && (uint64_t)sb.st_size < end)
            return nb_err(ctx, NB_ERR_IO, "%s: input file shrank to %lld bytes while being read (data up to byte %llu "
                          "needed)", path, (long long)sb.st_size, (unsigned long long)end);
        return NB_OK;
    }
    return NB_OK;
}

void nb_cleanup_run(void) {
    for (int i = 0; i < NB_CLEANUP_SLOTS; i++) {
        const char *t = atomic_load(&g_partials[i].tmp);
        const char *l = atomic_load(&g_partials[i].lock);
        if (t) unlink(t);
        if (l) unlink(l);
    }
}

static void put(const char *s) {
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void on_term(int sig) {
    nb_cleanup_run();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void on_bus(int sig, siginfo_t *si, void *uctx) {
    (void)sig;
    (void)uctx;
    uintptr_t a = (uintptr_t)si->si_addr;
    const char *file = NULL;
    for (int i = 0; i < NB_CLEANUP_SLOTS && !file; i++) {
        const char *p = atomic_load(&g_maps[i].path);
        uintptr_t lo = atomic_load(&g_maps[i].addr);
        size_t len = atomic_load(&g_maps[i].len);
        if (p && *p && a >= lo && a - lo < len) file = p;
    }
    put(g_prog);
    put(": ");
    if (file) {
        put(file);
        put(": input file changed while being read (truncated?)\n");
    } else {
        put("bus error reading a mapped input (a file truncated while being read?)\n");
    }
    nb_cleanup_run();
    _exit(3);
}

void nb_cleanup_install_signals(const char *prog) {
    if (prog) g_prog = prog;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_term;
    const int terms[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof terms / sizeof *terms; i++) {
        struct sigaction old;
        /* a signal ignored by whoever started us (nohup, `cmd &` in a script) stays ignored */
        if (sigaction(terms[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue;
        sigaction(terms[i], &sa, NULL);
    }
    struct sigaction sb;
    memset(&sb, 0, sizeof sb);
    sigemptyset(&sb.sa_mask);
    sb.sa_sigaction = on_bus;
    sb.sa_flags = SA_SIGINFO;
    sigaction(SIGBUS, &sb, NULL);
}
