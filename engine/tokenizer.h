/* engine/tokenizer.h — tokenizers built from GGUF tokenizer metadata.
 *
 * tokenizer.ggml.model "llama" (SentencePiece-style: score-driven merges with
 * byte fallback) and "gpt2" (byte-level BPE with the pre-tokenizer regex named
 * by tokenizer.ggml.pre: llama3/llama-bpe, qwen2, smollm/starcoder, gpt-2,
 * default and their aliases). Special tokens and add-BOS/EOS rules come from
 * the metadata. Token ids equal llama.cpp's llama_tokenize(add_special=false)
 * on the same GGUF; engine/tokenizer.c lists the rules and the few
 * documented differences (inputs on which llama.cpp aborts).
 *
 * A tokenizer is immutable once built: any number of threads may tokenize
 * with it at the same time.
 */
#ifndef NB_ENGINE_TOKENIZER_H
#define NB_ENGINE_TOKENIZER_H

#include "core/ctx.h"
#include "formats/kv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct nb_tokenizer nb_tokenizer;

/* Build from metadata (borrowed only during the call). Fails with
 * NB_ERR_FORMAT on missing/mistyped tokenizer keys, NB_ERR_UNSUPPORTED on a
 * tokenizer model or pre-tokenizer nibble does not implement. */
nb_status nb_tokenizer_create(const nb_kvset *kv, nb_tokenizer **out, nb_ctx *ctx);
void nb_tokenizer_free(nb_tokenizer *t); /* NULL-safe */

int nb_tokenizer_n_vocab(const nb_tokenizer *t);
int32_t nb_tokenizer_bos(const nb_tokenizer *t); /* -1 if none */
int32_t nb_tokenizer_eos(const nb_tokenizer *t); /* -1 if none */
bool nb_tokenizer_add_bos(const nb_tokenizer *t); /* tokenizer.ggml.add_bos_token, with llama.cpp's defaults */
bool nb_tokenizer_add_eos(const nb_tokenizer *t); /* tokenizer.ggml.add_eos_token (default false) */
/* End of generation: the EOS/EOT ids and the texts llama.cpp treats so
 * ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", ...). False for ids out of range. */
bool nb_tokenizer_is_eog(const nb_tokenizer *t, int32_t id);
/* Control or unknown token (llama.cpp hides those when rendering with special=false). */
bool nb_tokenizer_is_control(const nb_tokenizer *t, int32_t id);
/* Id of the token whose text is exactly text[0..n), or -1. */
int32_t nb_tokenizer_token_id(const nb_tokenizer *t, const char *text, size_t n);

/* Tokenize `n` bytes of text (no BOS/EOS added: the caller decides, see
 * nb_tokenizer_add_bos). Any bytes are accepted (invalid UTF-8 is handled as
 * llama.cpp does). *ids is malloc'd (caller frees; non-NULL on success even
 * for 0 tokens), *n_ids receives the count. `parse_special`: also recognise
 * control-token text like "<bos>" (false for plain corpora); user-defined
 * tokens are always recognised. */
nb_status nb_tokenize(const nb_tokenizer *t, const char *text, size_t n, bool parse_special, int32_t **ids,
                      size_t *n_ids, nb_ctx *ctx);
/* Text of one token as bytes, like llama_token_to_piece(special = true):
 * byte-fallback tokens decoded, SPM's U+2581 turned back into a space, BPE's
 * byte stand-ins turned back into bytes, control tokens as their text (use
 * nb_tokenizer_is_control to hide them). Writes at most `cap` bytes (no NUL)
 * and returns the piece's full length, like snprintf: a return > cap means
 * the piece was cut. Out-of-range ids give 0. */
size_t nb_token_to_piece(const nb_tokenizer *t, int32_t id, char *buf, size_t cap);

#endif
