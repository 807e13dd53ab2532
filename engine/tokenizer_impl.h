/* engine/tokenizer_impl.h — internals shared by tokenizer.c, tokenizer_spm.c, tokenizer_bpe.c.
 *
 * The tokenizer reproduces llama.cpp's llama-vocab.cpp (see tokenizer.c for
 * the exact rules). Token texts live in one arena; a hash index maps text to
 * id, another maps a BPE merge (left, right) to its rank.
 */
#ifndef NB_ENGINE_TOKENIZER_IMPL_H
#define NB_ENGINE_TOKENIZER_IMPL_H

#include "engine/tokenizer.h"

/* Token attributes (bit set, as llama.cpp's llama_token_attr; a token can be
 * promoted to CONTROL on top of its GGUF type). */
enum {
    NB_TA_UNKNOWN = 1 << 0,
    NB_TA_UNUSED = 1 << 1,
    NB_TA_NORMAL = 1 << 2,
    NB_TA_CONTROL = 1 << 3,
    NB_TA_USER_DEFINED = 1 << 4,
    NB_TA_BYTE = 1 << 5,
    NB_TA_EOG = 1 << 6 /* nibble's: ends generation (llama.cpp keeps a separate set) */
};

typedef enum nb_tok_kind { NB_TOK_SPM = 1, NB_TOK_BPE = 2 } nb_tok_kind;

/* Pre-tokenizer regex families (tokenizer.ggml.pre -> one of these). */
typedef enum nb_pre_kind {
    NB_PRE_NONE = 0,   /* SPM: no pre-tokenizer */
    NB_PRE_DEFAULT,    /* BPE without / with "default" pre: 4 regexes */
    NB_PRE_GPT2,       /* 's|'t|...| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    NB_PRE_LLAMA3,     /* (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|... */
    NB_PRE_QWEN2,      /* as LLAMA3 with \p{N} (single digits) */
    NB_PRE_STARCODER   /* \p{N} isolated, then GPT2 (smollm, starcoder, refact, ...) */
} nb_pre_kind;

/* Open-addressing hash index over entries kept elsewhere. slot = entry + 1, 0 = empty. */
typedef struct nb_hidx {
    uint32_t *hash; /* per slot: low 32 bits of the key's hash */
    int32_t *slot;  /* per slot: entry index + 1, or 0 */
    size_t mask;    /* capacity - 1 (capacity a power of two) */
} nb_hidx;

struct nb_tokenizer {
    nb_tok_kind kind;
    nb_pre_kind pre;
    int32_t n_vocab;

    /* token texts: text + off[id], len[id] bytes, NUL-terminated in the arena */
    char *text;
    size_t *off;
    uint32_t *len;
    float *score;
    uint8_t *attr;
    uint32_t max_len; /* longest token text in bytes */
    nb_hidx vocab;    /* text -> id (the last id wins for a repeated text, as llama.cpp's map) */

    /* BPE merges: "left" "right" concatenated in mtext at moff[r], mlen[r] bytes, left part msplit[r] */
    char *mtext;
    size_t *moff;
    uint32_t *mlen;
    uint32_t *msplit;
    size_t n_merges;
    nb_hidx merges; /* (left, right) -> rank (the first occurrence wins) */

    /* special tokens (CONTROL | USER_DEFINED | UNKNOWN), in matching priority:
     * longer text first, then lower id */
    int32_t *special;
    size_t n_special;
    /* byte trie over the special texts, to find which ones occur in a text in one pass:
     * edge (node, byte) -> child; node_prio[node] = index in special[] ending here or -1 */
    nb_hidx trie;     /* entries are edges: trie_key[e] = node << 8 | byte, trie_child[e] */
    uint64_t *trie_key;
    int32_t *trie_child;
    int32_t *node_prio;
    int32_t root_child[256]; /* the root's edges, without hashing: most text bytes stop there */
    size_t n_nodes, n_edges;

    int32_t byte_tok[256]; /* SPM byte fallback: "<0xXX>" (or the 1-byte text) -> id, -1 if none */

    int32_t bos, eos, unk, eot;
    bool add_bos, add_eos, add_space_prefix;
    bool ignore_merges; /* llama3 family: a pre-token that is itself a token is not merged */
};

/* A growable id list. */
typedef struct nb_idvec {
    int32_t *v;
    size_t n, cap;
} nb_idvec;

nb_status nb_idvec_push(nb_idvec *iv, int32_t id, nb_ctx *ctx);

/* Hashing of byte strings (64-bit FNV-1a folded). */
uint64_t nb_tok_hash(const char *s, size_t n, uint32_t aux);

/* Token id of an exact text, or -1. */
int32_t nb_tok_find(const nb_tokenizer *t, const char *s, size_t n);
/* Rank of the merge (s[0..split), s[split..n)), or -1. */
int32_t nb_tok_merge_rank(const nb_tokenizer *t, const char *s, size_t n, size_t split);

/* Tokenize one raw fragment (no special tokens inside), appending to out.
 * SPM: `prefix_space` prepends ' ' (add_space_prefix after a special token / at the start). */
nb_status nb_spm_encode(const nb_tokenizer *t, const char *s, size_t n, bool prefix_space, nb_idvec *out,
                        nb_ctx *ctx);
nb_status nb_bpe_encode(const nb_tokenizer *t, const char *s, size_t n, nb_idvec *out, nb_ctx *ctx);

/* Pre-tokenizer split (exposed for tests): the code points of s are cut into
 * pieces; *ends receives the end (in bytes of s) of each piece, malloc'd. */
nb_status nb_bpe_pretokenize(nb_pre_kind pre, const char *s, size_t n, size_t **ends, size_t *n_pieces,
                             nb_ctx *ctx);

#endif
