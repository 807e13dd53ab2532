/* formats/hf_tokenizer_impl.h — internals shared by hf_tokenizer.c (read),
 * hf_tokenizer_write.c (write) and hf_tokenizer_pb.c (SentencePiece protobuf).
 */
#ifndef NB_FORMATS_HF_TOKENIZER_IMPL_H
#define NB_FORMATS_HF_TOKENIZER_IMPL_H

#include "formats/hf_tokenizer.h"

#include <stddef.h>
#include <stdint.h>

/* GGUF token types (llama.cpp's llama_token_type; SentencePiece's
 * ModelProto.SentencePiece.Type uses the same numbers). */
enum {
    NB_TT_NORMAL = 1,
    NB_TT_UNKNOWN = 2,
    NB_TT_CONTROL = 3,
    NB_TT_USER_DEFINED = 4,
    NB_TT_UNUSED = 5,
    NB_TT_BYTE = 6
};

/* Byte-level BPE pre-tokenizer families, as tokenizer.json spells them
 * (pre_tokenizer) and as llama.cpp names them (tokenizer.ggml.pre). */
typedef enum nb_hf_pre_family {
    NB_HF_PRE_UNKNOWN = 0,
    NB_HF_PRE_GPT2,      /* ByteLevel(use_regex) */
    NB_HF_PRE_STARCODER, /* Digits(individual) + ByteLevel(use_regex) */
    NB_HF_PRE_LLAMA3,    /* Split(llama3 regex, Isolated) + ByteLevel(no regex) */
    NB_HF_PRE_QWEN2      /* Split(qwen2 regex, Isolated) + ByteLevel(no regex) */
} nb_hf_pre_family;

/* The family of a tokenizer.ggml.pre name (UNKNOWN for names nibble cannot
 * express in tokenizer.json), and the name used when the check-text hash is
 * not in llama.cpp's table. */
nb_hf_pre_family nb_hf_pre_family_of(const char *pre);
const char *nb_hf_pre_default_name(nb_hf_pre_family f);
/* The Split regex of the LLAMA3 / QWEN2 families (tokenizer.json text, unescaped). */
const char *nb_hf_pre_regex(nb_hf_pre_family f);

/* One SentencePiece piece. */
typedef struct nb_spm_piece {
    char *text; /* malloc'd, NUL-terminated */
    float score;
    int32_t type; /* NB_TT_* (SentencePiece's numbering) */
} nb_spm_piece;

/* The fields of a SentencePiece ModelProto that the conversion needs. */
typedef struct nb_spm_model {
    nb_spm_piece *pieces;
    size_t n;
    int32_t model_type; /* trainer_spec.model_type: 1 unigram, 2 bpe, 3 word, 4 char */
    int32_t unk_id, bos_id, eos_id, pad_id;
    bool byte_fallback;
    bool add_dummy_prefix; /* normalizer_spec.add_dummy_prefix */
} nb_spm_model;

/* Parse a serialized ModelProto (bounded: every length checked against the
 * buffer, at most INT32_MAX pieces, pieces must be valid UTF-8). `what`
 * names the file in messages. On failure *out is empty. */
nb_status nb_spm_parse(const void *buf, size_t n, const char *what, nb_spm_model *out, nb_ctx *ctx);
void nb_spm_model_free(nb_spm_model *m);
/* Serialize (malloc'd buffer): the pieces, trainer_spec {model_type, vocab
 * size, byte_fallback, unk/bos/eos/pad ids} and normalizer_spec {name
 * "identity", add_dummy_prefix, escape_whitespaces}. */
nb_status nb_spm_serialize(const nb_spm_model *m, unsigned char **buf, size_t *n, nb_ctx *ctx);

#endif
