/* tests/fuzz/fuzz_emb.c — libFuzzer target for the .emb reader
 * (engine/embed.h, `nibble embed --compare`).
 *
 * The input is written to a file and read with nb_emb_read; a file that
 * reads must hold count x dim finite values (every one is touched, so ASan
 * checks the allocation) and compare with itself at distance ~0. Seeds are
 * small files written by `nibble embed -o` on a synthetic encoder.
 */
#include "engine/embed.h"
#include "fuzz_tmp.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    if (!nb_fuzz_write_input(path, sizeof path, "emb.emb", data, size)) return 0;
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    ctx.log_level = NB_LOG_ERROR;
    nb_emb_set s;
    if (nb_emb_read(path, &s, &ctx) == NB_OK) {
        for (uint64_t i = 0; i < s.count * s.dim; i++)
            if (!isfinite(s.v[i])) abort();
        nb_emb_compare c;
        if (s.count >= 2 && nb_emb_compare_sets(&s, &s, false, &c, &ctx) == NB_OK &&
            !(c.cos_dist_max <= 1e-6 || c.cos_dist_max == 1.0)) /* zero rows: distance 1 */
            abort();
        nb_emb_set_free(&s);
    }
    nb_ctx_free(&ctx);
    unlink(path);
    return 0;
}
