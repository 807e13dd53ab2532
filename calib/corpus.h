/* calib/corpus.h — calibration text -> chunks of token ids.
 *
 * Input (`--calib FILE`): plain UTF-8 text, tokenized with the model's
 * tokenizer, or a file of token ids: text made only of decimal integers
 * separated by whitespace or commas (an optional surrounding [ ] is allowed,
 * so a JSON array works). The kind is detected from the content; it can be
 * forced.
 *
 * Chunking follows llama-imatrix: the token stream (text: BOS first when the
 * vocabulary adds one; ids: as given) is cut into consecutive chunks of n_ctx
 * tokens (a partial tail is dropped), and the first token of every chunk is
 * replaced by BOS when the vocabulary adds one. With a token budget
 * (`--calib-tokens N`) ceil(N / n_ctx) chunks are drawn as a seeded random
 * sample without replacement (splitmix64 + Fisher-Yates over the chunk
 * positions, then kept in text order): the same seed gives the same chunks.
 * Without a budget every chunk is used, in order.
 *
 * Errors: a text too short for one chunk, or for the requested budget ->
 * NB_ERR_RANGE stating how many tokens it has and needs; a token id outside
 * the vocabulary -> NB_ERR_RANGE naming its position; an empty file ->
 * NB_ERR_RANGE.
 */
#ifndef NB_CALIB_CORPUS_H
#define NB_CALIB_CORPUS_H

#include "core/ctx.h"
#include "engine/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum nb_corpus_kind { NB_CORPUS_AUTO = 0, NB_CORPUS_TEXT, NB_CORPUS_IDS } nb_corpus_kind;

typedef struct nb_corpus_opts {
    int n_ctx;             /* tokens per chunk (> 1) */
    uint64_t max_tokens;   /* token budget; 0: every chunk */
    uint64_t seed;         /* sample seed (used with a budget) */
    nb_corpus_kind kind;
} nb_corpus_opts;

typedef struct nb_corpus {
    int n_ctx;
    size_t n_chunks;
    int32_t *tokens;       /* n_chunks x n_ctx */
    size_t *chunk_index;   /* position of each chunk in the text (0-based chunk number) */
    size_t n_stream;       /* tokens in the whole stream */
    size_t n_available;    /* whole chunks in the stream */
    bool from_ids;
} nb_corpus;

/* Build from a file. `tok` may be NULL only for token-id files (n_vocab then
 * unchecked unless n_vocab > 0). */
nb_status nb_corpus_load(const char *path, const nb_tokenizer *tok, int n_vocab, const nb_corpus_opts *o,
                         nb_corpus *out, nb_ctx *ctx);
/* Same from a token stream already in memory (copied). bos < 0: none. */
nb_status nb_corpus_from_tokens(const int32_t *ids, size_t n, int32_t bos, const nb_corpus_opts *o,
                                nb_corpus *out, nb_ctx *ctx);
void nb_corpus_free(nb_corpus *c); /* NULL-safe */

#endif
