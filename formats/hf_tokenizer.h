/* formats/hf_tokenizer.h — Hugging Face tokenizer files <-> GGUF tokenizer.ggml.* keys.
 *
 * In: nb_hf_tokenizer_read turns the tokenizer files of a Hugging Face model
 * directory into the GGUF keys llama.cpp's convert_hf_to_gguf.py writes:
 *   - tokenizer.model (SentencePiece ModelProto) -> tokenizer.ggml.model
 *     "llama", pre "default", tokens / scores / token_type from the pieces
 *     (_create_vocab_sentencepiece: unknown/control/unused/byte pieces keep
 *     their type, every other piece is NORMAL; ids the model lacks below
 *     vocab_size become "[PAD<id>]", score -10000, UNUSED); then
 *     added_tokens.json and tokenizer_config.json `added_tokens_decoder`
 *     override entries (score -1000; CONTROL when `special` or the text looks
 *     special, else USER_DEFINED with U+2581 turned into spaces).
 *   - tokenizer.json with a byte-level BPE model -> "gpt2": tokens by id,
 *     types (NORMAL; added tokens CONTROL / USER_DEFINED as above), merges
 *     ("a b" strings; the ["a","b"] pair form joined the same way with spaces
 *     inside a part written as U+0120), and tokenizer.ggml.pre named as
 *     llama.cpp's get_vocab_base_pre names it (hash of the token ids of its
 *     check text, for the pre-tokenizers nibble's engine implements).
 *   - tokenizer.json with a SentencePiece-style BPE (byte_fallback, U+2581
 *     pieces) and no tokenizer.model -> "llama" with scores from the merge
 *     ranks (see docs/formats.md: llama.cpp's converter cannot do this one).
 *   - special ids, add_bos/add_eos/add_sep and the chat template as gguf-py's
 *     SpecialVocab reads tokenizer.json / tokenizer_config.json /
 *     config.json (special_tokens_map.json and generation_config.json fill
 *     ids nothing else gave), plus the per-architecture rules of the
 *     converter (Gemma 3: add_space_prefix false; llama: add_prefix_space).
 * Errors name the file and the key: a tokenizer with more ids than
 * `n_vocab` (the embedding rows), an unknown tokenizer model type, malformed
 * JSON or protobuf -> NB_ERR_FORMAT / NB_ERR_UNSUPPORTED; nothing is added
 * to `kv` on failure.
 *
 * Out: nb_hf_tokenizer_write is the inverse, used by the HF-directory writer.
 */
#ifndef NB_FORMATS_HF_TOKENIZER_H
#define NB_FORMATS_HF_TOKENIZER_H

#include "core/ctx.h"
#include "formats/kv.h"

#include <stdbool.h>
#include <stdint.h>

/* Largest tokenizer file accepted (bytes): tokenizer.json of 256k-token
 * vocabularies is ~35 MB. */
#define NB_HF_TOKENIZER_MAX_FILE (512u << 20)

/* Read the tokenizer of HF directory `dir` into `kv` (tokenizer.* keys
 * appended or replaced). `n_vocab` is the model's vocabulary size (embedding
 * rows; config.json vocab_size), 0 when unknown. `arch` is the GGUF
 * architecture name ("llama", "gemma3", ... or NULL) for the converter's
 * per-architecture rules. *found is false (and NB_OK returned) when the
 * directory holds neither tokenizer.json nor tokenizer.model. */
nb_status nb_hf_tokenizer_read(const char *dir, uint32_t n_vocab, const char *arch, nb_kvset *kv, bool *found,
                               nb_ctx *ctx);

/* Write DIR/tokenizer.json, DIR/tokenizer_config.json and
 * DIR/special_tokens_map.json (and DIR/tokenizer.model for a "llama"
 * (SentencePiece) vocabulary, which holds the scores) from the GGUF
 * tokenizer keys of `kv` (borrowed for the call). `dir` must exist. Each file
 * is written atomically (core/afile). Contract: reading the directory back
 * with nb_hf_tokenizer_read gives tokenizer.ggml.tokens / scores /
 * token_type / merges arrays identical to the input, and the same
 * model, pre, special ids, add_bos/add_eos flags and chat template; files
 * load in transformers (AutoTokenizer). Errors: no tokenizer.ggml.model in
 * kv, or a model other than "llama"/"gpt2" -> NB_ERR_UNSUPPORTED; mistyped
 * arrays -> NB_ERR_FORMAT; I/O -> NB_ERR_IO. Files already written by this
 * call are removed again on failure. */
nb_status nb_hf_tokenizer_write(const nb_kvset *kv, const char *dir, nb_ctx *ctx);

#endif
