/* libFuzzer target for the safetensors header parser (formats/safetensors.h).
 * The input is a whole file: parse it in memory, and when it is accepted check
 * the invariants the reader promises (tensors tile the data section in order,
 * byte sizes match shapes, dims within range). Any violation aborts. */
#include "core/ctx.h"
#include "formats/safetensors.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    ctx.quiet = true;
    ctx.log_level = NB_LOG_ERROR;
    nb_st_header h;
    nb_status st = nb_safetensors_parse_header(data, size, size, "fuzz.safetensors", &h, &ctx);
    if (st == NB_OK) {
        if (h.data_start != 8 + h.header_len || h.data_start + h.data_size != size) abort();
        uint64_t off = h.data_start;
        for (size_t k = 0; k < h.n_tensors; k++) {
            const nb_tensor *t = &h.tensors[k];
            if (t->file_offset != off || t->n_dims > NB_MAX_DIMS) abort();
            uint64_t n = 1;
            for (int d = 0; d < NB_MAX_DIMS; d++) {
                if (t->ne[d] < 0 || ((uint32_t)d >= t->n_dims && t->ne[d] != 1)) abort();
                n *= (uint64_t)t->ne[d];
            }
            if (n * nb_type_get(t->type)->type_size != t->nbytes) abort();
            off += t->nbytes;
        }
        if (off != size) abort();
        nb_st_header_free(&h);
    } else if (st != NB_ERR_FORMAT && st != NB_ERR_UNSUPPORTED && st != NB_ERR_NOMEM) {
        abort(); /* INVALID/INTERNAL would mean a contract bug */
    }
    nb_ctx_free(&ctx);
    return 0;
}
