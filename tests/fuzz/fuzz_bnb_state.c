/* tests/fuzz/fuzz_bnb_state.c — libFuzzer target for bitsandbytes quant_state
 * JSON (quant/hf_pack.h), which an importer reads from untrusted checkpoints.
 *
 * A state that parses must have a valid blocksize and shape; rendering it for
 * a matching NF4 state and parsing that again must give the same fields.
 */
#include "quant/hf_pack.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    ctx.log_level = NB_LOG_ERROR;
    nb_bnb_quant_state qs;
    if (nb_bnb_quant_state_parse(data, size, "fuzz", &qs, &ctx) == NB_OK) {
        if (qs.blocksize < 32 || qs.blocksize > 4096 || (qs.blocksize & (qs.blocksize - 1)) || qs.n_dims < 1 ||
            qs.n_dims > 4)
            abort();
        for (uint32_t d = 0; d < qs.n_dims; d++)
            if (qs.shape[d] < 1) abort();
        nb_nf4_state s = {.blocksize = qs.blocksize, .double_quant = qs.nested,
                          .nested_blocksize = qs.nested_blocksize, .offset = (float)qs.nested_offset};
        char *js = nb_bnb_quant_state_render(&s, "float16", qs.shape, qs.n_dims);
        nb_bnb_quant_state b;
        if (!js || nb_bnb_quant_state_parse(js, strlen(js), "fuzz", &b, &ctx) != NB_OK) abort();
        if (b.blocksize != qs.blocksize || b.n_dims != qs.n_dims || b.nested != qs.nested ||
            memcmp(b.shape, qs.shape, sizeof b.shape) != 0 || (qs.nested && (float)b.nested_offset != s.offset))
            abort();
        free(js);
    }
    nb_ctx_free(&ctx);
    return 0;
}
