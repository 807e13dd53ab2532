/* engine/logits_file.h — the base-model log-probability file of `nibble ppl
 * --save-logits` / `--kld`.
 *
 * What it holds: for every scored token of a perplexity run (the second half
 * of every chunk, see engine/ppl.h) the full log-softmax of the base model,
 * quantized to 16 bits per vocabulary entry, so that a later run of another
 * model (usually a quantized variant) on the same tokens can compute the
 * KL-divergence token by token. The idea follows llama-perplexity's
 * `--kl-divergence-base` file (uint16 log-probs with a per-token scale and
 * offset); the layout is nibble's own and adds what that file lacks: a
 * version, a vocabulary hash, the exact log-prob of the target token and the
 * exact argmax, and zstd compression with a content checksum.
 *
 * Byte layout (all integers and floats little-endian):
 *
 *   offset size  field
 *   0      8     magic "NBLOGPRB"
 *   8      4     u32 version (NB_LPF_VERSION)
 *   12     4     u32 n_vocab             (1 .. NB_LPF_MAX_VOCAB)
 *   16     4     u32 n_ctx               (4 .. NB_LPF_MAX_CTX, even or odd)
 *   20     4     u32 n_chunk             (>= 1)
 *   24     4     u32 n_scored            (per chunk; must equal n_ctx - 1 - n_ctx/2)
 *   28     4     u32 flags               (bit 0: BOS replaced the first token of each chunk)
 *   32     4     i32 bos                 (-1: none)
 *   36     4     u32 header check: first 4 bytes (as u32 LE) of sha256 over
 *                  these 112 bytes with this field zero
 *   40     8     u64 n_text_tokens       (tokens of the whole text, >= n_chunk*n_ctx)
 *   48     32    sha256 of the evaluated tokens (n_chunk*n_ctx i32 LE, before BOS replacement)
 *   80     32    sha256 of the vocabulary (nb_lpf_vocab_hash), all zero if unknown
 *   112    ...   one zstd stream (any number of frames, content checksums on) of
 *                  n_chunk*n_ctx i32 tokens, then
 *                  n_chunk*n_scored records, chunk-major, each NB_LPF_REC_HDR + 2*n_vocab bytes:
 *                    f32 scale, f32 min_lp     log p[i] = min_lp + scale * q[i]
 *                    f32 lp_target             exact log-prob of the next token (from doubles)
 *                    i32 argmax                exact argmax of the logits (first on ties)
 *                    u16 q[n_vocab]            0 also marks "below max_lp - 16" (treated as p = 0)
 *
 * Nothing read from the file is trusted: counts are range-checked, sizes
 * overflow-checked, the stream must decompress to exactly the promised size
 * and every token id must be < n_vocab.
 *
 * llama.cpp's `--kl-divergence-base` file (tools/perplexity/perplexity.cpp)
 * is read and written too (NB_LPF_LLAMACPP), so a base saved by either tool
 * scores variants in the other. Its layout, little-endian, uncompressed:
 *
 *   8     magic "_logits_"
 *   4     i32 n_ctx
 *   4     i32 n_vocab
 *   4     i32 n_chunk
 *   4*T   i32 tokens[T = n_chunk*n_ctx]   the text's first T tokens (BOS not substituted)
 *   then n_chunk*(n_ctx - 1 - n_ctx/2) records, chunk-major, each
 *         2*(2*((n_vocab+1)/2) + 4) bytes:
 *     f32 scale, f32 min_lp      log p[i] = min_lp + scale * q[i]
 *     u16 q[n_vocab]             (one u16 of padding when n_vocab is odd)
 *   where, per row of logits l: max = max l, lo = max(min l, max - 16),
 *   lse = log sum exp(l - max), scale = (max - lo)/65535, min_lp = lo - max - lse,
 *   q[i] = round((l[i] - lo)/scale) for l[i] > lo, else 0.
 * It has no BOS flag, text length, vocabulary hash or exact target log-prob:
 * read, the target's log-prob is the quantized one and the argmax the first
 * largest q (as llama-perplexity computes them); the file's size must be
 * exactly what its counts say.
 */
#ifndef NB_ENGINE_LOGITS_FILE_H
#define NB_ENGINE_LOGITS_FILE_H

#include "core/ctx.h"
#include "formats/kv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NB_LPF_MAGIC "NBLOGPRB"
#define NB_LPF_VERSION 1u
#define NB_LPF_HEADER_SIZE 112
#define NB_LPF_REC_HDR 16
#define NB_LPF_MAX_VOCAB (1u << 24)
#define NB_LPF_MAX_CTX (1u << 20)
/* Log-probs more than this far below the maximum are stored as "zero probability". */
#define NB_LPF_RANGE 16.0f
#define NB_LPF_LLAMACPP_MAGIC "_logits_"

typedef enum nb_lpf_format {
    NB_LPF_NIBBLE = 0, /* the NBLOGPRB layout above */
    NB_LPF_LLAMACPP    /* llama-perplexity's _logits_ layout */
} nb_lpf_format;

typedef struct nb_lpf_header {
    nb_lpf_format format; /* reading: what the file is; writing: what to write */
    uint32_t version;     /* NB_LPF_NIBBLE only */
    uint32_t n_vocab;
    uint32_t n_ctx;
    uint32_t n_chunk;
    uint32_t n_scored;
    bool bos_replaced;
    int32_t bos;
    uint64_t n_text_tokens;
    unsigned char tokens_sha[32];
    unsigned char vocab_sha[32];
} nb_lpf_header;

/* One decoded record view (points into a caller's record buffer). */
typedef struct nb_lpf_rec {
    float scale, min_lp, lp_target;
    int32_t argmax;
    const uint16_t *q; /* n_vocab entries (unaligned-safe: read with memcpy if needed) */
} nb_lpf_rec;

/* Bytes of one record for a vocabulary size (nibble's layout; the reader
 * returns records in it whatever the file's format). */
size_t nb_lpf_rec_size(uint32_t n_vocab);
/* Bytes of one record of llama.cpp's layout. */
size_t nb_lpf_llamacpp_rec_size(uint32_t n_vocab);
/* Encode one row of logits as a llama.cpp record (nb_lpf_llamacpp_rec_size
 * bytes, llama-perplexity's rounding). Returns -log p(tok) in double. */
double nb_lpf_encode_llamacpp(const float *logits, int n_vocab, int tok, void *rec);

/* Quantize one row of logits (n_vocab floats) into a record at `rec`
 * (nb_lpf_rec_size bytes). tok: the next token (its exact log-prob is kept).
 * Returns -log p(tok) computed in double. Logits must be finite. */
double nb_lpf_encode(const float *logits, int n_vocab, int tok, void *rec);
/* Decode a record's fixed fields (checks them: finite scale >= 0 and min_lp,
 * lp_target <= 0 within rounding, argmax in range). */
nb_status nb_lpf_decode(const void *rec, uint32_t n_vocab, nb_lpf_rec *out, nb_ctx *ctx);
/* q[i] of a decoded record (alignment-safe). */
static inline uint16_t nb_lpf_q(const nb_lpf_rec *r, size_t i) {
    const unsigned char *p = (const unsigned char *)(r->q) + 2 * i;
    return (uint16_t)(p[0] | (p[1] << 8));
}

/* sha256 over the vocabulary strings (tokenizer.ggml.tokens, each followed by
 * a NUL). Returns false (out zeroed) when the metadata has no token list. */
bool nb_lpf_vocab_hash(const nb_kvset *kv, unsigned char out[32]);
/* sha256 over n tokens as i32 little-endian. */
void nb_lpf_tokens_hash(const int32_t *tokens, size_t n, unsigned char out[32]);

/* ---- writing ---------------------------------------------------------------- */

typedef struct nb_lpf_writer nb_lpf_writer;

/* Create PATH (atomically: PATH.partial until commit), write the header and
 * the n_chunk*n_ctx tokens. h->tokens_sha is computed here from `tokens`.
 * h->format picks the layout; records passed to nb_lpf_write are in that
 * layout (nb_lpf_encode or nb_lpf_encode_llamacpp). */
nb_status nb_lpf_create(const char *path, const nb_lpf_header *h, const int32_t *tokens,
                        nb_lpf_writer **out, nb_ctx *ctx);
/* Append n records (n * nb_lpf_rec_size bytes). */
nb_status nb_lpf_write(nb_lpf_writer *w, const void *recs, size_t n, nb_ctx *ctx);
/* Check that all n_chunk*n_scored records arrived, finish the stream, fsync
 * and rename. The writer is freed whatever the outcome. */
nb_status nb_lpf_commit(nb_lpf_writer *w, nb_ctx *ctx);
/* Remove the partial file and free; NULL-safe. */
void nb_lpf_abort(nb_lpf_writer *w);

/* ---- reading ---------------------------------------------------------------- */

typedef struct nb_lpf_reader nb_lpf_reader;

/* Open and validate the header (either format, told apart by the magic;
 * h->format says which); *tokens (malloc'd, n_chunk*n_ctx, caller frees)
 * receives the evaluated tokens, checked against the header's hash and
 * against n_vocab. For a llama.cpp file: version 0, bos -1, bos_replaced
 * false, n_text_tokens = n_chunk*n_ctx, vocab_sha zero (unknown); tokens_sha
 * is computed. */
nb_status nb_lpf_open(const char *path, nb_lpf_header *h, int32_t **tokens, nb_lpf_reader **out,
                      nb_ctx *ctx);
/* Read the next n records into buf (n * nb_lpf_rec_size bytes, nibble's
 * record layout for either file format). Asking for more than remain, a
 * truncated stream or a checksum mismatch fails. */
nb_status nb_lpf_read(nb_lpf_reader *r, void *buf, size_t n, nb_ctx *ctx);
/* Fails if the stream holds anything after the last record. */
nb_status nb_lpf_finish(nb_lpf_reader *r, nb_ctx *ctx);
void nb_lpf_close(nb_lpf_reader *r); /* NULL-safe */

#endif
