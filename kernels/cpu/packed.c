/* kernels/cpu/packed.c — row-interleaved copies of 4-bit weight matrices.
 *
 * The row-lane kernels (x86_simd.h, PTILE_FN) put one weight row in each
 * int32 lane of a 512-bit vector, so a chunk's integer dot product for 16
 * rows is 8 VNNI instructions against 4 activation bytes broadcast to every
 * lane, with no horizontal sum and no per-row float step. That needs the 16
 * rows' codes side by side, which the file layout (row after row) does not
 * give; this file writes the copy once, when the engine opens a model
 * (Q4_0, Q4_1, Q5_0, IQ4_NL, NF4 and Q8_0).
 * Layout in kernels_impl.h (NB_PACK_*).
 */
#include "kernels/cpu/kernels_impl.h"
#include "quant/ggml_quants.h"
#include "quant/nf4.h"

#include <string.h>

/* Scale bytes per row in a record: F16 copies the block's own half (Q4_0,
 * IQ4_NL: the float the kernels use is exactly its conversion); NF4's scale
 * is absmax * (1/127) in float, stored as that float. 0: no packed form. */
static int scale_bytes(nb_type t) {
    switch (t) {
    case NB_TYPE_Q4_0:
    case NB_TYPE_Q5_0:
    case NB_TYPE_IQ4_NL:
    case NB_TYPE_Q8_0: return 2;
    case NB_TYPE_NF4:
    case NB_TYPE_Q4_1: return 4; /* Q4_1: F16 d and F16 m */
    default: return 0;
    }
}

uint64_t nb_pack_layout_bytes(nb_type t, int64_t n_out, int64_t n_in) {
    const int sb = scale_bytes(t);
    const int64_t blk = t == NB_TYPE_NF4 ? NB_NF4_BLOCK : 32;
    if (!sb || n_out <= 0 || n_in <= 0 || n_out % NB_PACK_ROWS || n_in % blk) return 0;
    return (uint64_t)(n_out / NB_PACK_ROWS) * (uint64_t)(n_in / 32) * (uint64_t)nb_pack_chunk_bytes(t);
}

int nb_pack_code_bytes(nb_type t) { return t == NB_TYPE_Q8_0 ? 512 : t == NB_TYPE_Q5_0 ? 320 : 256; }
/* chunks per scale: NF4's 64-element block scale serves its two chunks */
static int scale_chunks(nb_type t) { return t == NB_TYPE_NF4 ? 2 : 1; }
int nb_pack_chunk_bytes(nb_type t) { return nb_pack_code_bytes(t) + NB_PACK_ROWS * scale_bytes(t) / scale_chunks(t); }

/* Chunk c (32 elements) of one row: its code indices (4-bit types) or its
 * codes + 128 (Q8_0) in element order, and its scale's bytes as the copy
 * keeps them. */
static void row_chunk(nb_type t, const unsigned char *row, int64_t c, uint8_t idx[32], unsigned char *scale) {
    if (t == NB_TYPE_Q8_0) {
        const nb_block_q8_0 *b = (const nb_block_q8_0 *)row + c;
        for (int j = 0; j < 32; j++) idx[j] = (uint8_t)(b->qs[j] + 128);
        memcpy(scale, &b->d, 2);
        return;
    }
    if (t == NB_TYPE_NF4) {
        const nb_block_nf4 *b = (const nb_block_nf4 *)row + c / 2;
        const uint8_t *qs = b->qs + 16 * (c & 1);
        for (int j = 0; j < 16; j++) {
            idx[2 * j] = qs[j] >> 4; /* element 2i in the high nibble */
            idx[2 * j + 1] = qs[j] & 15;
        }
        const float s = b->d * (1.f / 127.f); /* generic.c's expression */
        memcpy(scale, &s, 4);
        return;
    }
    if (t == NB_TYPE_Q5_0) {
        const nb_block_q5_0 *b = (const nb_block_q5_0 *)row + c;
        uint32_t qh;
        memcpy(&qh, b->qh, 4);
        for (int j = 0; j < 16; j++) {
            idx[j] = (uint8_t)((b->qs[j] & 15) | ((qh >> j) & 1) << 4);
            idx[j + 16] = (uint8_t)((b->qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
        }
        memcpy(scale, &b->d, 2);
        return;
    }
    if (t == NB_TYPE_Q4_1) {
        const nb_block_q4_1 *b = (const nb_block_q4_1 *)row + c;
        for (int j = 0; j < 16; j++) {
            idx[j] = b->qs[j] & 15;
            idx[j + 16] = b->qs[j] >> 4;
        }
        memcpy(scale, &b->d, 2);
        memcpy(scale + 2, &b->m, 2);
        return;
    }
    /* Q4_0 and IQ4_NL share the block: d, then element j low / j+16 high */
    const nb_block_q4_0 *b = (const nb_block_q4_0 *)row + c;
    for (int j = 0; j < 16; j++) {
        idx[j] = b->qs[j] & 15;
        idx[j + 16] = b->qs[j] >> 4;
    }
    memcpy(scale, &b->d, 2);
}

void nb_pack_layout(nb_type t, const void *w, int64_t n_out, int64_t n_in, void *dst, int n_threads) {
    const int64_t nc = n_in / 32, n_grp = n_out / NB_PACK_ROWS;
    const int sb = scale_bytes(t), cb = nb_pack_chunk_bytes(t), codes = nb_pack_code_bytes(t),
              spc = scale_chunks(t);
    uint64_t rb = 0;
    nb_type_row_bytes(t, (uint64_t)n_in, &rb, NULL, "pack");
#pragma omp parallel for num_threads(n_threads < 1 ? 1 : n_threads) schedule(static)
    for (int64_t g = 0; g < n_grp; g++) {
        unsigned char *gp = (unsigned char *)dst + (uint64_t)g * (uint64_t)nc * (uint64_t)cb;
        unsigned char *scales = gp + (uint64_t)nc * (uint64_t)codes;
        for (int64_t c = 0; c < nc; c++) {
            unsigned char *p = gp + (uint64_t)c * (uint64_t)codes;
            for (int r = 0; r < NB_PACK_ROWS; r++) {
                uint8_t idx[32];
                unsigned char sc[4];
                row_chunk(t, (const unsigned char *)w + (uint64_t)(g * NB_PACK_ROWS + r) * rb, c, idx, sc);
                unsigned char *s0 = scales + (uint64_t)(c / spc) * NB_PACK_ROWS * (uint64_t)sb;
                if (t == NB_TYPE_Q4_1) { /* the chunk's 16 d, then its 16 m */
                    memcpy(s0 + 2 * r, sc, 2);
                    memcpy(s0 + 2 * NB_PACK_ROWS + 2 * r, sc + 2, 2);
                } else {
                    memcpy(s0 + (uint64_t)r * (uint64_t)sb, sc, (size_t)sb);
                }
                if (codes == 512)
                    for (int k = 0; k < 8; k++)
                        for (int b = 0; b < 4; b++) p[64 * k + 4 * r + b] = idx[4 * k + b];
                else
                    for (int i = 0; i < 4; i++)
                        for (int b = 0; b < 4; b++)
                            p[64 * i + 4 * r + b] = (uint8_t)((idx[8 * i + b] & 15) | (idx[8 * i + 4 + b] & 15) << 4);
                if (codes == 320) /* the fifth bits: bit k of byte 256 + 4r + b is element 4k + b's */
                    for (int b = 0; b < 4; b++) {
                        uint8_t h = 0;
                        for (int k = 0; k < 8; k++) h |= (uint8_t)(((idx[4 * k + b] >> 4) & 1) << k);
                        p[256 + 4 * r + b] = h;
                    }
            }
        }
    }
}
