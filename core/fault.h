/* core/fault.h — fault injection for tests, as SQLite fails its N-th malloc.
 *
 * In builds with NB_FAULT_INJECTION (Debug and Asan, see CMakeLists.txt) two
 * environment variables make one operation fail:
 *   NIBBLE_FAULT_ALLOC=N  the N-th nb_malloc / nb_calloc / nb_realloc /
 *                         nb_strdup returns NULL (as out of memory);
 *   NIBBLE_FAULT_IO=N     the N-th write, fsync or rename of an output file
 *                         (core/afile.c) fails with EIO.
 *   NIBBLE_FAULT_REPORT=FILE  at exit, append "alloc A io I" to FILE: how
 *                         many operations of each kind the run made (so a test
 *                         knows that its first success came after the last one,
 *                         not at a failure something swallowed).
 * Counting starts at 1 with the process; every later operation succeeds. A
 * test runs a command for N = 1, 2, ... until it succeeds and checks that each
 * failing run failed cleanly: the documented exit code, no output, no
 * temporary, no leak. An allocation whose failure is tolerated (a fallback,
 * not an error) must not use the hooked allocator: it would end the loop
 * early. In other builds both hooks are constant false.
 */
#ifndef NB_CORE_FAULT_H
#define NB_CORE_FAULT_H

#include <stdbool.h>

#ifdef NB_FAULT_INJECTION
bool nb_fault_alloc(void);
bool nb_fault_io(void);
#else
static inline bool nb_fault_alloc(void) { return false; }
static inline bool nb_fault_io(void) { return false; }
#endif

#endif
