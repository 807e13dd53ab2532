/* tests/fuzz/fuzz_tmp.h — temporary files for the fuzz targets whose reader
 * takes a path: one name per process and purpose, in tmpfs when there is one
 * (the writers fsync on commit; a disk would set the pace).
 */
#ifndef NB_TESTS_FUZZ_TMP_H
#define NB_TESTS_FUZZ_TMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

/* The directory the targets' files go in: /dev/shm when writable, else /tmp. */
static inline const char *nb_fuzz_tmp_dir(void) { return access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"; }

/* "DIR/fuzz_PID_WHAT" into buf (WHAT names the target and the file's role,
 * with its extension: "gguf.gguf", "imatrix_model.gguf"). */
static inline void nb_fuzz_tmp_path(char *buf, size_t n, const char *what) {
    snprintf(buf, n, "%s/fuzz_%d_%s", nb_fuzz_tmp_dir(), (int)getpid(), what);
}

/* Write the input to its file (path from nb_fuzz_tmp_path); false when it
 * cannot be written, and the input is then skipped. The caller unlinks. */
static inline bool nb_fuzz_write_input(char *buf, size_t n, const char *what, const uint8_t *data, size_t size) {
    nb_fuzz_tmp_path(buf, n, what);
    FILE *f = fopen(buf, "wb");
    if (!f) return false;
    bool ok = size == 0 || fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok;
}

#endif
