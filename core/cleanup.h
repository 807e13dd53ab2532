/* core/cleanup.h — what a dying process must undo, and say.
 *
 * A process killed by SIGINT/SIGTERM/SIGHUP must not leave `.partial` files
 * (hundreds of MB) behind, and a mapped input truncated underneath us
 * (SIGBUS on the next read of a vanished page) must end with one line naming
 * the file, not a silent crash. A signal handler cannot reach an nb_ctx, so
 * this is the one piece of process-wide state in libnibble: two fixed tables
 * of borrowed pointers, written with atomics, read by the handlers.
 *
 * Library code registers what it creates (core/afile.c: every open output;
 * the GGUF and safetensors readers: every mapping). Only the program decides
 * whether handlers are installed (nb_cleanup_install_signals, called once by
 * cli/main.c); a library user that does not call it keeps its own handlers.
 *
 * Limits: at most NB_CLEANUP_SLOTS partials and mappings are tracked at once
 * (a further one works but is not cleaned up by a signal); SIGKILL and power
 * loss cannot be caught (a later writer of the same output removes the stale
 * partials, see core/afile.h); a SIGBUS outside a registered mapping is
 * reported without a file name.
 */
#ifndef NB_CORE_CLEANUP_H
#define NB_CORE_CLEANUP_H

#include "core/ctx.h"

#include <stddef.h>

#define NB_CLEANUP_SLOTS 64

/* Register a partial output `tmp` and its lock file `lock` (may be NULL): both
 * are unlinked if the process dies by a handled signal. The strings are
 * borrowed and must stay valid until nb_cleanup_forget_partial. Returns the
 * slot (>= 0) or -1 when the table is full. */
int nb_cleanup_add_partial(const char *tmp, const char *lock);
/* Unregister a slot from nb_cleanup_add_partial (-1 is ignored). */
void nb_cleanup_forget_partial(int slot);

/* Register a read-only mapping [addr, addr+len) of file `path` (borrowed until
 * nb_cleanup_forget_map), whose inode was (dev, ino) when mapped. Returns the
 * slot or -1. */
int nb_cleanup_add_map(const void *addr, size_t len, const char *path, unsigned long long dev,
                       unsigned long long ino);
void nb_cleanup_forget_map(int slot);

/* Before reading [p, p+n) of a registered mapping: when its file (the same
 * inode: a file replaced by rename is no concern, the mapping keeps the old
 * one) has shrunk below p+n, fail with NB_ERR_IO "FILE: input file shrank to
 * N bytes while being read" instead of faulting. Unregistered memory: NB_OK.
 * Reading stays racy (a truncation after this check still faults, and the
 * SIGBUS handler says so), but the common case, a file cut while a long job
 * runs, ends with a message before the next tensor. */
nb_status nb_map_check(const void *p, size_t n, nb_ctx *ctx);

/* Unlink every registered partial and lock (async-signal-safe). */
void nb_cleanup_run(void);

/* Install handlers: SIGINT, SIGTERM, SIGHUP remove the partials, then the
 * signal is re-raised with its default action, so the shell reports 128+N
 * (130 for Ctrl-C, 143 for SIGTERM) as for any program killed by it. SIGBUS
 * prints "PROG: FILE: input file changed while being read (truncated?)"
 * naming the registered mapping that faulted, removes the partials and exits
 * with 3 (I/O). `prog` is borrowed for the life of the process. */
void nb_cleanup_install_signals(const char *prog);

#endif
