/* tests/fuzz/fuzz_logits.c — libFuzzer target for the log-prob file reader
 * (engine/logits_file.h, `nibble ppl --kld`).
 *
 * The input is written to a file and read the way the KLD driver reads it:
 * header, tokens, then every record (decoded) and the end-of-stream check.
 * Headers claiming records larger than 1 MiB are opened but not read (the
 * reader itself is bounded; this only keeps the target fast). Seeds are small
 * files written by `nibble ppl --save-logits` on synthetic models.
 */
#include "engine/logits_file.h"
#include "fuzz_tmp.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    if (!nb_fuzz_write_input(path, sizeof path, "logits.bin", data, size)) return 0;
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    ctx.n_threads = 1;
    nb_lpf_header h;
    int32_t *tok = NULL;
    nb_lpf_reader *r = NULL;
    if (nb_lpf_open(path, &h, &tok, &r, &ctx) == NB_OK) {
        size_t rs = nb_lpf_rec_size(h.n_vocab);
        unsigned char *buf = rs <= (1u << 20) ? malloc(rs) : NULL;
        uint64_t n = (uint64_t)h.n_chunk * h.n_scored;
        nb_status st = buf ? NB_OK : NB_ERR_RANGE;
        for (uint64_t i = 0; st == NB_OK && i < n; i++) {
            st = nb_lpf_read(r, buf, 1, &ctx);
            nb_lpf_rec rec;
            if (st == NB_OK && nb_lpf_decode(buf, h.n_vocab, &rec, &ctx) == NB_OK) {
                uint32_t sum = 0; /* touch every entry: ASan checks the record bounds */
                for (uint32_t v = 0; v < h.n_vocab; v++) sum += nb_lpf_q(&rec, v);
                if (sum == 0xffffffffu) abort(); /* cannot happen: keeps the loop */
            }
        }
        if (st == NB_OK) (void)nb_lpf_finish(r, &ctx);
        free(buf);
        free(tok);
        nb_lpf_close(r);
    }
    nb_ctx_free(&ctx);
    unlink(path);
    return 0;
}
