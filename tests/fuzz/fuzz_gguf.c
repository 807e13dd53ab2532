/* tests/fuzz/fuzz_gguf.c — libFuzzer target for the GGUF reader.
 *
 * Parses the input as a GGUF image from memory (no file I/O). A successful
 * parse must describe tensors that lie inside the input, so every tensor's
 * bytes are touched (ASan flags any pointer the reader got wrong), and the
 * metadata is rendered to exercise nested values. The parsed model is then
 * written back through the GGUF sink and re-read: the copy must parse and
 * describe the same tensors.
 */
#include "formats/gguf.h"
#include "formats/readers.h"
#include "fuzz_tmp.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void rewrite(nb_model *m, nb_ctx *ctx) {
    char path[64];
    nb_fuzz_tmp_path(path, sizeof path, "gguf.gguf");
    nb_sink *s = NULL;
    if (nb_gguf_sink_create(path, &s, ctx) != NB_OK) return;
    int ok = nb_kvset_copy(&s->kv, &m->kv, ctx) == NB_OK;
    for (size_t i = 0; ok && i < m->n_tensors; i++) {
        const nb_tensor *t = &m->tensors[i];
        ok = nb_sink_add_tensor(s, t->name, t->type, t->n_dims, t->ne, ctx) == NB_OK;
    }
    ok = ok && nb_sink_begin(s, ctx) == NB_OK;
    for (size_t k = 0; ok && k < m->n_tensors; k++) {
        const nb_tensor *t = &m->tensors[nb_sink_data_order(s, k)];
        if (t->nbytes) ok = nb_sink_write(s, t->data, t->nbytes, ctx) == NB_OK;
    }
    ok = ok && nb_sink_commit(s, ctx) == NB_OK;
    nb_sink_free(s);
    if (!ok) {
        /* everything the reader accepts must be writable */
        fprintf(stderr, "rewrite failed: %s\n", nb_errmsg(ctx));
        abort();
    }
    nb_model *m2 = NULL;
    if (nb_gguf_open(path, &m2, ctx) != NB_OK) {
        fprintf(stderr, "re-read failed: %s\n", nb_errmsg(ctx));
        abort();
    }
    if (m2->n_tensors != m->n_tensors || m2->kv.n != m->kv.n) abort();
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *a = &m->tensors[i], *b = &m2->tensors[i];
        if (strcmp(a->name, b->name) || a->type != b->type || a->nbytes != b->nbytes ||
            (a->nbytes && memcmp(a->data, b->data, a->nbytes)))
            abort();
    }
    nb_model_close(m2);
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static nb_ctx ctx;
    static int init;
    if (!init) {
        nb_ctx_init(&ctx);
        ctx.n_threads = 1;
        ctx.quiet = true;
        ctx.log_level = NB_LOG_ERROR;
        init = 1;
    }
    /* exact-size copy: reads past the end are caught by ASan */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    nb_model *m = NULL;
    if (nb_gguf_open_memory(copy, size, "fuzz.gguf", &m, &ctx) == NB_OK) {
        volatile unsigned sum = 0;
        for (size_t i = 0; i < m->n_tensors; i++) {
            const unsigned char *p = m->tensors[i].data;
            for (uint64_t j = 0; j < m->tensors[i].nbytes; j++) sum += p[j];
        }
        char buf[256];
        for (size_t i = 0; i < m->kv.n; i++) nb_kv_value_fmt(&m->kv.items[i].val, buf, sizeof buf);
        (void)sum;
        rewrite(m, &ctx);
        nb_model_close(m);
    }
    free(copy);
    return 0;
}
