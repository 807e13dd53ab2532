/* engine/embed.h — text encoders (EmbeddingGemma): sentence embeddings, the
 * .emb file that holds them, and the fidelity metrics between two sets.
 *
 * Graph (llama.cpp's gemma-embedding + its pooling and Dense head; the arch row
 * NB_ARCH_GEMMA_EMBEDDING, flag NB_ARCH_F_ENCODER):
 *   h      = the gemma3 layers with bidirectional attention (local layers see
 *            |i - j| <= sliding_window / 2), then RMSNorm * output_norm   n x E
 *   p      = mean of h over the n tokens of the text (BOS and EOS included)  E
 *   p      = dense_3 (dense_2 p)   when the model has them: E -> D -> E (no bias)
 *   emb    = p / ||p||_2                                                     E
 * Each text is evaluated alone, in one forward call (no batching across texts,
 * so a text's embedding does not depend on its neighbours).
 *
 * Determinism: bit-identical at any thread count (engine/engine.h).
 */
#ifndef NB_ENGINE_EMBED_H
#define NB_ENGINE_EMBED_H

#include "core/ctx.h"
#include "engine/engine.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct nb_embedder nb_embedder;

typedef struct nb_embed_opts {
    int n_ctx;     /* most tokens per text, BOS/EOS included (0: min(context_length, 2048)) */
    int n_threads; /* 0: ctx->n_threads */
    bool precise;  /* reference arithmetic (nb_engine_opts.precise) */
} nb_embed_opts;

/* Open an encoder (GGUF or HF directory). Refuses a model whose architecture
 * is not an encoder (NB_ERR_UNSUPPORTED naming it) and Dense weights of the
 * wrong shape (NB_ERR_FORMAT naming the tensor). The tokenizer is built from
 * the metadata when present; without it only nb_embed_tokens works. */
nb_status nb_embed_open(const char *path, const nb_embed_opts *o, nb_embedder **out, nb_ctx *ctx);
void nb_embed_free(nb_embedder *m); /* NULL-safe */

int nb_embed_dim(const nb_embedder *m);   /* E */
int nb_embed_n_ctx(const nb_embedder *m); /* most tokens per text */
bool nb_embed_has_tokenizer(const nb_embedder *m);
/* The engine underneath (borrowed; for calibration hooks). */
nb_engine *nb_embed_engine(nb_embedder *m);

/* Embedding of one token sequence (n >= 1, n <= nb_embed_n_ctx) into
 * out[nb_embed_dim]. Ids outside the vocabulary and a too long sequence are
 * NB_ERR_RANGE. */
nb_status nb_embed_tokens(nb_embedder *m, const int32_t *ids, int n, float *out, nb_ctx *ctx);
/* Tokenize text[0..n) (BOS / EOS as the tokenizer metadata adds them, as
 * llama.cpp's llama_tokenize(add_special = true)) and embed it. *n_tok (may
 * be NULL) receives the token count. No tokenizer -> NB_ERR_UNSUPPORTED. */
nb_status nb_embed_text(nb_embedder *m, const char *text, size_t n, float *out, int *n_tok, nb_ctx *ctx);

/* ---- .emb files -----------------------------------------------------------------------
 * A small binary file of `count` embeddings of `dim` floats (docs/formats.md):
 *   0   8  magic "NBEMB\0\0\1"
 *   8   4  u32 version (1)
 *   12  4  u32 dim, 1 .. 1048576
 *   16  8  u64 count, 1 .. 16777216
 *   24 32  SHA-256 of the texts the embeddings were made from (the --text file's bytes)
 *   56     count x dim little-endian f32, row-major
 * All integers little-endian. A reader checks the header and that the file
 * size is exactly 56 + count * dim * 4 before allocating anything, and that
 * every value is finite. */
#define NB_EMB_MAGIC "NBEMB\0\0\1"
#define NB_EMB_HEADER 56u
#define NB_EMB_MAX_DIM (1u << 20)
#define NB_EMB_MAX_COUNT (1u << 24)

typedef struct nb_emb_set {
    uint32_t dim;
    uint64_t count;
    float *v;                  /* count x dim (owned) */
    unsigned char text_sha[32];
} nb_emb_set;

void nb_emb_set_free(nb_emb_set *s); /* NULL-safe; leaves *s empty */
/* Embed every non-empty line of text[0..n) (one text per line; a trailing
 * "\r" is dropped; empty lines are skipped) into *out, text_sha = SHA-256
 * of the n bytes. `ids`: each line is whitespace-separated decimal token ids
 * instead of text (nothing added). on_line (may be NULL) is called after each
 * text with its 1-based line number and token count. A line that fails names
 * its number. */
nb_status nb_embed_lines(nb_embedder *m, const char *text, size_t n, bool ids, nb_emb_set *out,
                         void (*on_line)(void *user, uint64_t line, int n_tok), void *user, nb_ctx *ctx);
/* Write atomically (core/afile). */
nb_status nb_emb_write(const char *path, const nb_emb_set *s, nb_ctx *ctx);
/* Read and validate. Any defect -> NB_ERR_FORMAT, one line naming the file
 * and what is wrong (bad magic, version, dim/count out of range, size
 * mismatch with both sizes, a non-finite value with its row and column). */
nb_status nb_emb_read(const char *path, nb_emb_set *s, nb_ctx *ctx);

/* ---- fidelity metrics ----------------------------------------------------------------
 * The encoder equivalents of KLD and same-top-token, between a set under test
 * and a base set of the same texts:
 *   cosine distance per text, d_i = 1 - cos(test_i, base_i): mean and worst;
 *   retrieval agreement: the texts split into queries (the first half, rows
 *   0 .. count/2 - 1) and a corpus (the rest); for each query the corpus row
 *   of highest cosine (ties: the lower row) under the test set equals the one
 *   under the base set, as a fraction of the queries. The sentence set
 *   tests/data/text/embed_sentences.txt pairs query i with its paraphrase,
 *   corpus row i, so `hits` (the nearest neighbour is the paraphrase) also
 *   measures the model itself. */
typedef struct nb_emb_compare {
    uint64_t count;
    double cos_dist_mean, cos_dist_max;
    uint64_t worst;            /* row of cos_dist_max */
    uint64_t n_query, n_corpus;
    uint64_t same_nn;          /* queries whose nearest corpus row is the same in both sets */
    double same_nn_frac;
    uint64_t hits_test, hits_base; /* queries whose nearest corpus row is their pair (row n_query + i) */
} nb_emb_compare;

/* The compare result as one JSON object (malloc'd; NULL when out of memory). */
char *nb_emb_compare_json(const nb_emb_compare *c);

/* Both sets must have the same dim and count (NB_ERR_FORMAT naming both) and,
 * unless ignore_text, the same text hash (NB_ERR_FORMAT); count >= 2. */
nb_status nb_emb_compare_sets(const nb_emb_set *test, const nb_emb_set *base, bool ignore_text, nb_emb_compare *out,
                              nb_ctx *ctx);

#endif
