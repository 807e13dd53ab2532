/* libFuzzer target for the quantized-checkpoint importer (formats/hf_quantized.h).
 * Input: config.json's text, a NUL byte, then a safetensors file (seeds in
 * tests/fuzz/corpus/hf_quantized, made by tests/data/hfq/make_fuzz_seeds.py).
 * The file goes through an in-memory file descriptor; when the wrapper
 * accepts it, every tensor is read (decoded) into a buffer of exactly its
 * size, so ASan catches any read or write outside the promised bytes. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "core/ctx.h"
#include "formats/hf_quantized.h"
#include "formats/readers.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    if (!nul) return 0;
    size_t cfg_len = (size_t)(nul - data);
    int fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC);
    if (fd < 0) return 0;
    size_t n = size - cfg_len - 1;
    if (n && write(fd, nul + 1, n) != (ssize_t)n) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    ctx.quiet = true;
    ctx.log_level = NB_LOG_ERROR;
    nb_model *m = NULL;
    if (nb_safetensors_open(path, &m, &ctx) == NB_OK) {
        nb_status st = nb_hfq_wrap(&m, (const char *)data, cfg_len, "config.json", &ctx);
        if (st == NB_OK) {
            for (size_t i = 0; i < m->n_tensors; i++) {
                const nb_tensor *t = &m->tensors[i];
                if (t->nbytes > (64u << 20)) continue;
                void *buf = malloc(t->nbytes ? (size_t)t->nbytes : 1);
                if (!buf) break;
                nb_status r = nb_model_read_tensor(m, i, buf, &ctx);
                if (r != NB_OK && r != NB_ERR_FORMAT && r != NB_ERR_UNSUPPORTED && r != NB_ERR_RANGE &&
                    r != NB_ERR_NOMEM && r != NB_ERR_IO)
                    abort();
                free(buf);
            }
        } else if (st != NB_ERR_FORMAT && st != NB_ERR_UNSUPPORTED && st != NB_ERR_RANGE && st != NB_ERR_NOMEM &&
                   st != NB_ERR_IO) {
            abort(); /* INVALID/INTERNAL would mean a contract bug */
        }
        nb_model_close(m);
    }
    nb_ctx_free(&ctx);
    close(fd);
    return 0;
}
