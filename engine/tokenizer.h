/* engine/tokenizer.h — tokenizers built from GGUF tokenizer metadata.
 *
 * tokenizer.ggml.model "llama" (SentencePiece-style: score-driven merges with
 * byte fallback) and "gpt2" (byte-level BPE with the pre-tokenizer regex named
 * by tokenizer.ggml.pre: llama3/llama-bpe, qwen2, smollm, gpt2, default ...).
 * Special tokens and add-BOS/EOS rules come from the metadata.
 */
#ifndef NB_ENGINE_TOKENIZER_H
#define NB_ENGINE_TOKENIZER_H

#include "core/ctx.h"
#include "formats/kv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct nb_tokenizer nb_tokenizer;

/* Build from metadata (borrowed only during the call). */
nb_status nb_tokenizer_create(const nb_kvset *kv, nb_tokenizer **out, nb_ctx *ctx);
void nb_tokenizer_free(nb_tokenizer *t);

int nb_tokenizer_n_vocab(const nb_tokenizer *t);
int32_t nb_tokenizer_bos(const nb_tokenizer *t); /* -1 if none */
int32_t nb_tokenizer_eos(const nb_tokenizer *t); /* -1 if none */
bool nb_tokenizer_add_bos(const nb_tokenizer *t); /* tokenizer.ggml.add_bos_token, with llama.cpp's defaults */

/* Tokenize `n` bytes of UTF-8 text (no BOS added: the caller decides).
 * *ids is malloc'd (caller frees), *n_ids receives the count. `parse_special`:
 * recognise special-token text like "<bos>" (false for plain corpora). */
nb_status nb_tokenize(const nb_tokenizer *t, const char *text, size_t n, bool parse_special, int32_t **ids,
                      size_t *n_ids, nb_ctx *ctx);
/* Text of one token as UTF-8 bytes (byte-fallback tokens decoded, SPM's
 * U+2581 turned back into a space); returns the byte count written (<= cap). */
size_t nb_token_to_piece(const nb_tokenizer *t, int32_t id, char *buf, size_t cap);

#endif
