/* engine/tokenizer.c — building a tokenizer from GGUF metadata; special-token
 * splitting; token -> text. The SPM and BPE algorithms are in tokenizer_spm.c
 * and tokenizer_bpe.c.
 *
 * Behaviour follows llama.cpp's llama-vocab.cpp (llama_vocab::impl::load,
 * tokenizer_st_partition, tokenize, token_to_piece):
 *
 * Vocabulary
 *  - tokenizer.ggml.tokens (strings, required); an empty text becomes
 *    "[EMPTY_<id>]"; tokenizer.ggml.scores (F32 or I32, optional, 0 when
 *    absent); tokenizer.ggml.token_type (I32, optional; 1 normal, 2 unknown,
 *    3 control, 4 user-defined, 5 unused, 6 byte; absent: all normal).
 *  - Tokens whose text is one of llama.cpp's end-of-generation texts
 *    ("<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|endoftext|>", "</s>",
 *    "<eos>", ...) are promoted to CONTROL (llama.cpp does this too; it
 *    matters: Gemma's user-defined "</s>" then only splits when parse_special).
 *
 * Defaults (before the metadata overrides them)
 *  - "llama" (SPM): bos 1, eos 2, unk 0, add_bos true, add_eos false,
 *    add_space_prefix true. "gpt2" (BPE): bos 11, eos 11, no unk, add_bos
 *    false except the llama3 pre-tokenizer family (true), add_space_prefix false.
 *  - A default id outside the vocab is dropped (-1); tokenizer.ggml.bos_token_id
 *    / eos_token_id / unknown_token_id / eot_token_id replace it when inside the
 *    vocab; tokenizer.ggml.add_bos_token / add_eos_token /
 *    add_space_prefix replace the flags.
 *
 * Special tokens (tokenizer_st_partition)
 *  - Tokens typed CONTROL, USER_DEFINED or UNKNOWN are "special". Before the
 *    model's algorithm runs, the text is split on their occurrences: each
 *    special token in turn (longest text first; equal lengths by lower id,
 *    where llama.cpp's unstable sort leaves the order unspecified) claims its
 *    leftmost non-overlapping occurrences in the parts of the text still
 *    unclaimed. USER_DEFINED tokens are always matched; CONTROL and UNKNOWN
 *    ones only when parse_special. (llama.cpp's per-model lstrip/rstrip
 *    attributes — phi-3, jina, modern-bert — are not reproduced.)
 *  - SPM: each remaining text part that follows a special token (or starts the
 *    text) gets a ' ' prepended when add_space_prefix (Gemma 3: false).
 *
 * Token -> text (token_to_piece with special = true, lstrip 0)
 *  - CONTROL / UNKNOWN / USER_DEFINED: the text as is; NORMAL: SPM turns
 *    U+2581 back into ' ', BPE maps each GPT-2 stand-in back to its byte
 *    (a code point without one renders as "[UNK_BYTE_0x<hex><text>]" as in
 *    llama.cpp); BYTE "<0xXX>": that byte; UNUSED / undefined types: nothing.
 */
#include "engine/tokenizer_impl.h"
#include "engine/unicode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- hashing ------------------------------------------------------------------ */

uint64_t nb_tok_hash(const char *s, size_t n, uint32_t aux) {
    uint64_t h = 1469598103934665603ull ^ ((uint64_t)aux * 0x9E3779B97F4A7C15ull);
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return h;
}

typedef bool (*hidx_eq)(const void *u, int32_t entry, const void *key);

static nb_status hidx_init(nb_hidx *h, size_t n_entries, const char *what, nb_ctx *ctx) {
    size_t cap = 16;
    while (cap < n_entries * 2) {
        if (cap > SIZE_MAX / 8) return nb_err(ctx, NB_ERR_RANGE, "tokenizer: %s: too many entries", what);
        cap *= 2;
    }
    h->hash = nb_calloc(NULL, cap, sizeof *h->hash, "tokenizer");
    h->slot = nb_calloc(NULL, cap, sizeof *h->slot, "tokenizer");
    if (!h->hash || !h->slot) return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: %s: out of memory (%zu slots)", what, cap);
    h->mask = cap - 1;
    return NB_OK;
}

static void hidx_free(nb_hidx *h) {
    free(h->hash);
    free(h->slot);
}

/* Slot holding key, or the empty slot where it would go. */
static size_t hidx_probe(const nb_hidx *h, uint64_t hash, hidx_eq eq, const void *u, const void *key) {
    uint32_t h32 = (uint32_t)hash;
    size_t i = (size_t)(hash >> 32) & h->mask;
    while (h->slot[i] != 0) {
        if (h->hash[i] == h32 && eq(u, h->slot[i] - 1, key)) return i;
        i = (i + 1) & h->mask;
    }
    return i;
}

/* Insert entry; when the key is present, `replace` decides who keeps it.
 * The table never fills: it was sized for every entry at init. */
static void hidx_put(nb_hidx *h, uint64_t hash, int32_t entry, bool replace, hidx_eq eq, const void *u,
                     const void *key) {
    size_t i = hidx_probe(h, hash, eq, u, key);
    if (h->slot[i] != 0 && !replace) return;
    h->hash[i] = (uint32_t)hash;
    h->slot[i] = entry + 1;
}

static int32_t hidx_get(const nb_hidx *h, uint64_t hash, hidx_eq eq, const void *u, const void *key) {
    if (!h->slot) return -1;
    size_t i = hidx_probe(h, hash, eq, u, key);
    return h->slot[i] - 1;
}

typedef struct strkey {
    const char *s;
    size_t n;
    uint32_t split;
} strkey;

static bool vocab_eq(const void *u, int32_t e, const void *key) {
    const nb_tokenizer *t = u;
    const strkey *k = key;
    return t->len[e] == k->n && memcmp(t->text + t->off[e], k->s, k->n) == 0;
}

static bool merge_eq(const void *u, int32_t e, const void *key) {
    const nb_tokenizer *t = u;
    const strkey *k = key;
    return t->mlen[e] == k->n && t->msplit[e] == k->split && memcmp(t->mtext + t->moff[e], k->s, k->n) == 0;
}

static bool edge_eq(const void *u, int32_t e, const void *key) {
    const nb_tokenizer *t = u;
    return t->trie_key[e] == *(const uint64_t *)key;
}

/* multiplicative hash: edges are looked up once per text byte, so this must be cheap */
static uint64_t edge_hash(uint64_t key) {
    uint64_t h = (key + 1) * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

int32_t nb_tok_find(const nb_tokenizer *t, const char *s, size_t n) {
    if (n > t->max_len) return -1;
    strkey k = {s, n, 0};
    return hidx_get(&t->vocab, nb_tok_hash(s, n, 0), vocab_eq, t, &k);
}

int32_t nb_tok_merge_rank(const nb_tokenizer *t, const char *s, size_t n, size_t split) {
    if (t->n_merges == 0 || split > UINT32_MAX) return -1;
    strkey k = {s, n, (uint32_t)split};
    return hidx_get(&t->merges, nb_tok_hash(s, n, (uint32_t)split + 1), merge_eq, t, &k);
}

static int32_t trie_child(const nb_tokenizer *t, int32_t node, unsigned char b) {
    if (node == 0) return t->root_child[b];
    uint64_t key = (uint64_t)node << 8 | b;
    int32_t e = hidx_get(&t->trie, edge_hash(key), edge_eq, t, &key);
    return e < 0 ? -1 : t->trie_child[e];
}

nb_status nb_idvec_push(nb_idvec *iv, int32_t id, nb_ctx *ctx) {
    if (iv->n == iv->cap) {
        size_t nc = iv->cap ? iv->cap * 2 : 256;
        if (nc > SIZE_MAX / sizeof(int32_t)) return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: too many tokens");
        int32_t *nv = nb_realloc(NULL, iv->v, nc * sizeof *nv, "tokenizer");
        if (!nv) return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: out of memory (%zu tokens)", nc);
        iv->v = nv;
        iv->cap = nc;
    }
    iv->v[iv->n++] = id;
    return NB_OK;
}

/* ---- metadata ------------------------------------------------------------------ */

/* An array-valued key of the given element type, or NULL (with *err set when present but mistyped). */
static const nb_kv_value *get_arr(const nb_kvset *kv, const char *key, nb_kv_type elem, nb_kv_type elem2,
                                  bool *mistyped) {
    const nb_kv_value *v = nb_kv_get(kv, key);
    *mistyped = false;
    if (!v) return NULL;
    if (v->type != NB_KV_ARRAY || (v->v.arr.elem != elem && v->v.arr.elem != elem2)) {
        *mistyped = true;
        return NULL;
    }
    return v;
}

static int32_t le_i32(const void *data, uint64_t i) {
    int32_t x;
    memcpy(&x, (const char *)data + i * 4, 4);
    return x;
}

static float le_f32(const void *data, uint64_t i) {
    float x;
    memcpy(&x, (const char *)data + i * 4, 4);
    return x;
}

/* Texts llama.cpp treats as end-of-generation (and forces to CONTROL). */
static const char *const k_eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>", "[e~["};
/* The subset llama.cpp looks for as the end-of-turn token when no eot id is given. */
static const char *const k_eot_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
    "_<EOT>", "[EOT]", "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>",
    "<end_of_utterance>"};

static int32_t find_cstr(const nb_tokenizer *t, const char *s) { return nb_tok_find(t, s, strlen(s)); }

typedef struct pre_name {
    const char *name;
    nb_pre_kind kind;
    bool ignore_merges, add_bos;
} pre_name;

/* tokenizer.ggml.pre values llama.cpp maps onto the regex families nibble implements. */
static const pre_name k_pre_names[] = {
    {"default", NB_PRE_DEFAULT, false, false},
    {"llama3", NB_PRE_LLAMA3, true, true},       {"llama-v3", NB_PRE_LLAMA3, true, true},
    {"llama-bpe", NB_PRE_LLAMA3, true, true},    {"falcon3", NB_PRE_LLAMA3, true, true},
    {"falcon-h1", NB_PRE_LLAMA3, true, true},    {"pixtral", NB_PRE_LLAMA3, true, true},
    {"midm-2.0", NB_PRE_LLAMA3, true, true},     {"lfm2", NB_PRE_LLAMA3, true, true},
    {"jina-v5-nano", NB_PRE_LLAMA3, true, true}, {"dbrx", NB_PRE_LLAMA3, false, false},
    {"smaug-bpe", NB_PRE_LLAMA3, false, false},
    {"qwen2", NB_PRE_QWEN2, false, false},       {"deepseek-r1-qwen", NB_PRE_QWEN2, false, false},
    {"kormo", NB_PRE_QWEN2, false, false},       {"f2llmv2", NB_PRE_QWEN2, false, false},
    {"megrez", NB_PRE_QWEN2, false, false},      {"stablelm2", NB_PRE_QWEN2, false, false},
    {"hunyuan", NB_PRE_QWEN2, false, false},     {"solar-open", NB_PRE_QWEN2, false, false},
    {"gpt-2", NB_PRE_GPT2, false, false},        {"phi-2", NB_PRE_GPT2, false, false},
    {"gigachat", NB_PRE_GPT2, false, false},     {"a.x-4.0", NB_PRE_GPT2, false, false},
    {"mellum", NB_PRE_GPT2, false, false},       {"modern-bert", NB_PRE_GPT2, false, false},
    {"roberta-bpe", NB_PRE_GPT2, false, false},  {"mpt", NB_PRE_GPT2, false, false},
    {"olmo", NB_PRE_GPT2, false, false},         {"jais", NB_PRE_GPT2, false, false},
    {"trillion", NB_PRE_GPT2, false, false},     {"granite-docling", NB_PRE_GPT2, false, false},
    {"exaone4", NB_PRE_GPT2, false, false},
    {"starcoder", NB_PRE_STARCODER, false, false}, {"refact", NB_PRE_STARCODER, false, false},
    {"command-r", NB_PRE_STARCODER, false, false}, {"smollm", NB_PRE_STARCODER, false, false},
    {"codeshell", NB_PRE_STARCODER, false, false}, {"exaone", NB_PRE_STARCODER, false, false},
    {"minerva-7b", NB_PRE_STARCODER, false, false}, {"mellum2", NB_PRE_STARCODER, false, false},
};

static nb_status load_tokens(nb_tokenizer *t, const nb_kvset *kv, nb_ctx *ctx) {
    bool bad;
    const nb_kv_value *tok = get_arr(kv, "tokenizer.ggml.tokens", NB_KV_STRING, NB_KV_STRING, &bad);
    NB_RETURN_IF(ctx, !tok, NB_ERR_FORMAT, "tokenizer.ggml.tokens: %s", bad ? "not an array of strings" : "missing");
    uint64_t n = tok->v.arr.n;
    NB_RETURN_IF(ctx, n == 0 || n > INT32_MAX, NB_ERR_RANGE, "tokenizer.ggml.tokens: %llu tokens (want 1..%d)",
                 (unsigned long long)n, INT32_MAX);
    const nb_str *strs = tok->v.arr.data;

    const nb_kv_value *sc = get_arr(kv, "tokenizer.ggml.scores", NB_KV_F32, NB_KV_I32, &bad);
    NB_RETURN_IF(ctx, bad, NB_ERR_FORMAT, "tokenizer.ggml.scores: not an array of f32 or i32");
    NB_RETURN_IF(ctx, sc && sc->v.arr.n < n, NB_ERR_FORMAT, "tokenizer.ggml.scores: %llu scores for %llu tokens",
                 (unsigned long long)sc->v.arr.n, (unsigned long long)n);
    const nb_kv_value *ty = get_arr(kv, "tokenizer.ggml.token_type", NB_KV_I32, NB_KV_I32, &bad);
    NB_RETURN_IF(ctx, bad, NB_ERR_FORMAT, "tokenizer.ggml.token_type: not an array of i32");
    NB_RETURN_IF(ctx, ty && ty->v.arr.n < n, NB_ERR_FORMAT, "tokenizer.ggml.token_type: %llu types for %llu tokens",
                 (unsigned long long)ty->v.arr.n, (unsigned long long)n);

    t->n_vocab = (int32_t)n;
    size_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t l = strs[i].len ? strs[i].len : 32; /* room for "[EMPTY_<id>]" */
        NB_RETURN_IF(ctx, l > UINT32_MAX || total > SIZE_MAX - l - 1, NB_ERR_RANGE,
                     "tokenizer.ggml.tokens: token %llu: text too long", (unsigned long long)i);
        total += (size_t)l + 1;
    }
    t->text = nb_malloc(NULL, total, "tokenizer");
    t->off = nb_malloc(NULL, n * sizeof *t->off, "tokenizer");
    t->len = nb_malloc(NULL, n * sizeof *t->len, "tokenizer");
    t->score = nb_malloc(NULL, n * sizeof *t->score, "tokenizer");
    t->attr = nb_malloc(NULL, n, "tokenizer");
    if (!t->text || !t->off || !t->len || !t->score || !t->attr)
        return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: out of memory for %llu tokens", (unsigned long long)n);
    size_t pos = 0;
    for (uint64_t i = 0; i < n; i++) {
        t->off[i] = pos;
        if (strs[i].len == 0) {
            int w = snprintf(t->text + pos, 32, "[EMPTY_%llu]", (unsigned long long)i);
            t->len[i] = (uint32_t)w;
        } else {
            memcpy(t->text + pos, strs[i].ptr, (size_t)strs[i].len);
            t->len[i] = (uint32_t)strs[i].len;
        }
        t->text[pos + t->len[i]] = '\0';
        pos += t->len[i] + 1;
        if (t->len[i] > t->max_len) t->max_len = t->len[i];
        t->score[i] = !sc ? 0.0f : sc->v.arr.elem == NB_KV_F32 ? le_f32(sc->v.arr.data, i)
                                                                : (float)le_i32(sc->v.arr.data, i);
        uint8_t a = NB_TA_NORMAL;
        if (ty) {
            switch (le_i32(ty->v.arr.data, i)) {
            case 1: a = NB_TA_NORMAL; break;
            case 2: a = NB_TA_UNKNOWN; break;
            case 3: a = NB_TA_CONTROL; break;
            case 4: a = NB_TA_USER_DEFINED; break;
            case 5: a = NB_TA_UNUSED; break;
            case 6: a = NB_TA_BYTE; break;
            default: a = 0; break; /* undefined */
            }
        }
        t->attr[i] = a;
    }
    NB_TRY(hidx_init(&t->vocab, (size_t)n, "tokenizer.ggml.tokens", ctx));
    for (uint64_t i = 0; i < n; i++) {
        strkey k = {t->text + t->off[i], t->len[i], 0};
        hidx_put(&t->vocab, nb_tok_hash(k.s, k.n, 0), (int32_t)i, true, vocab_eq, t, &k);
    }
    return NB_OK;
}

static nb_status load_merges(nb_tokenizer *t, const nb_kvset *kv, nb_ctx *ctx) {
    bool bad;
    const nb_kv_value *m = get_arr(kv, "tokenizer.ggml.merges", NB_KV_STRING, NB_KV_STRING, &bad);
    NB_RETURN_IF(ctx, !m, NB_ERR_FORMAT, "tokenizer.ggml.merges: %s (needed by the gpt2 tokenizer)",
                 bad ? "not an array of strings" : "missing");
    uint64_t n = m->v.arr.n;
    NB_RETURN_IF(ctx, n > INT32_MAX, NB_ERR_RANGE, "tokenizer.ggml.merges: %llu merges", (unsigned long long)n);
    const nb_str *strs = m->v.arr.data;
    size_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        NB_RETURN_IF(ctx, strs[i].len > UINT32_MAX || total > SIZE_MAX - strs[i].len, NB_ERR_RANGE,
                     "tokenizer.ggml.merges: merge %llu too long", (unsigned long long)i);
        total += (size_t)strs[i].len;
    }
    t->mtext = nb_malloc(NULL, total ? total : 1, "tokenizer");
    t->moff = nb_malloc(NULL, (n ? n : 1) * sizeof *t->moff, "tokenizer");
    t->mlen = nb_malloc(NULL, (n ? n : 1) * sizeof *t->mlen, "tokenizer");
    t->msplit = nb_malloc(NULL, (n ? n : 1) * sizeof *t->msplit, "tokenizer");
    if (!t->mtext || !t->moff || !t->mlen || !t->msplit)
        return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: out of memory for %llu merges", (unsigned long long)n);
    NB_TRY(hidx_init(&t->merges, (size_t)n, "tokenizer.ggml.merges", ctx));
    t->n_merges = (size_t)n;
    size_t pos = 0;
    for (uint64_t i = 0; i < n; i++) {
        /* "left right", split at the first ' ' after position 0 (a left side may be " ") */
        const char *s = strs[i].ptr;
        size_t l = (size_t)strs[i].len, sp = 0;
        for (size_t j = 1; j < l; j++)
            if (s[j] == ' ') {
                sp = j;
                break;
            }
        t->moff[i] = pos;
        if (sp == 0) { /* no separator: llama.cpp records ("", ""), which no pair can match */
            t->mlen[i] = 0;
            t->msplit[i] = 0;
            continue;
        }
        memcpy(t->mtext + pos, s, sp);
        memcpy(t->mtext + pos + sp, s + sp + 1, l - sp - 1);
        t->mlen[i] = (uint32_t)(l - 1);
        t->msplit[i] = (uint32_t)sp;
        pos += l - 1;
        strkey k = {t->mtext + t->moff[i], t->mlen[i], t->msplit[i]};
        hidx_put(&t->merges, nb_tok_hash(k.s, k.n, k.split + 1), (int32_t)i, false, merge_eq, t, &k);
    }
    return NB_OK;
}

/* Special ids: default, dropped when outside the vocab; metadata wins when inside. */
static int32_t special_id(const nb_kvset *kv, const char *key, int32_t dflt, int32_t n_vocab, nb_ctx *ctx) {
    int32_t id = (dflt >= 0 && dflt < n_vocab) ? dflt : -1;
    int64_t v;
    if (nb_kv_get_i64(kv, key, &v)) {
        if (v >= 0 && v < n_vocab)
            id = (int32_t)v;
        else
            NB_WARN(ctx, "%s = %lld is outside the vocab (%d tokens): using %d", key, (long long)v, n_vocab, id);
    }
    return id;
}

static int cmp_special(const void *a, const void *b, void *u) {
    const nb_tokenizer *t = u;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->len[x] != t->len[y]) return t->len[x] > t->len[y] ? -1 : 1;
    return (x > y) - (x < y);
}

static nb_status build_specials(nb_tokenizer *t, nb_ctx *ctx) {
    size_t ns = 0, bytes = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (t->attr[i] & (NB_TA_CONTROL | NB_TA_USER_DEFINED | NB_TA_UNKNOWN)) {
            ns++;
            bytes += t->len[i];
        }
    t->special = nb_malloc(NULL, (ns ? ns : 1) * sizeof *t->special, "tokenizer");
    t->node_prio = nb_malloc(NULL, (bytes + 1) * sizeof *t->node_prio, "tokenizer");
    t->trie_key = nb_malloc(NULL, (bytes ? bytes : 1) * sizeof *t->trie_key, "tokenizer");
    t->trie_child = nb_malloc(NULL, (bytes ? bytes : 1) * sizeof *t->trie_child, "tokenizer");
    if (!t->special || !t->node_prio || !t->trie_key || !t->trie_child)
        return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: out of memory for %zu special tokens", ns);
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (t->attr[i] & (NB_TA_CONTROL | NB_TA_USER_DEFINED | NB_TA_UNKNOWN)) t->special[t->n_special++] = i;
    qsort_r(t->special, t->n_special, sizeof *t->special, cmp_special, t);

    NB_TRY(hidx_init(&t->trie, bytes, "special-token trie", ctx));
    for (int b = 0; b < 256; b++) t->root_child[b] = -1;
    t->n_nodes = 1;
    t->node_prio[0] = -1;
    for (size_t p = 0; p < t->n_special; p++) {
        int32_t id = t->special[p];
        const unsigned char *s = (const unsigned char *)t->text + t->off[id];
        int32_t node = 0;
        for (uint32_t j = 0; j < t->len[id]; j++) {
            int32_t child = trie_child(t, node, s[j]);
            if (child < 0) {
                child = (int32_t)t->n_nodes++;
                t->node_prio[child] = -1;
                if (node == 0) t->root_child[s[j]] = child;
                uint64_t key = (uint64_t)node << 8 | s[j];
                t->trie_key[t->n_edges] = key;
                t->trie_child[t->n_edges] = child;
                hidx_put(&t->trie, edge_hash(key), (int32_t)t->n_edges, false, edge_eq, t, &key);
                t->n_edges++;
            }
            node = child;
        }
        if (t->node_prio[node] < 0) t->node_prio[node] = (int32_t)p; /* same text twice: the first in order */
    }
    return NB_OK;
}

static nb_status create(nb_tokenizer *t, const nb_kvset *kv, nb_ctx *ctx) {
    const char *model = nb_kv_get_str(kv, "tokenizer.ggml.model");
    NB_RETURN_IF(ctx, !model, NB_ERR_FORMAT, "tokenizer.ggml.model: missing (no tokenizer in this model)");
    const char *pre = nb_kv_get_str(kv, "tokenizer.ggml.pre");
    int32_t d_bos, d_eos, d_unk;
    if (strcmp(model, "llama") == 0) {
        t->kind = NB_TOK_SPM;
        t->pre = NB_PRE_NONE;
        d_bos = 1, d_eos = 2, d_unk = 0;
        t->add_bos = true;
        t->add_space_prefix = true;
    } else if (strcmp(model, "gpt2") == 0) {
        t->kind = NB_TOK_BPE;
        d_bos = 11, d_eos = 11, d_unk = -1;
        if (!pre || !*pre) {
            NB_WARN(ctx, "tokenizer.ggml.pre missing: using the 'default' pre-tokenizer (as llama.cpp)");
            t->pre = NB_PRE_DEFAULT;
        } else {
            for (size_t i = 0; i < sizeof k_pre_names / sizeof k_pre_names[0]; i++)
                if (strcmp(pre, k_pre_names[i].name) == 0) {
                    t->pre = k_pre_names[i].kind;
                    t->ignore_merges = k_pre_names[i].ignore_merges;
                    t->add_bos = k_pre_names[i].add_bos;
                }
            NB_RETURN_IF(ctx, t->pre == NB_PRE_NONE, NB_ERR_UNSUPPORTED,
                         "tokenizer.ggml.pre '%s' is not supported (llama3/llama-bpe, qwen2, smollm/starcoder, "
                         "gpt-2, default families)", pre);
        }
    } else {
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "tokenizer.ggml.model '%s' is not supported (llama, gpt2)", model);
    }
    NB_TRY(load_tokens(t, kv, ctx));
    if (t->kind == NB_TOK_BPE) NB_TRY(load_merges(t, kv, ctx));

    bool b;
    if (nb_kv_get_bool(kv, "tokenizer.ggml.add_space_prefix", &b)) t->add_space_prefix = b;
    t->bos = special_id(kv, "tokenizer.ggml.bos_token_id", d_bos, t->n_vocab, ctx);
    t->eos = special_id(kv, "tokenizer.ggml.eos_token_id", d_eos, t->n_vocab, ctx);
    t->unk = special_id(kv, "tokenizer.ggml.unknown_token_id", d_unk, t->n_vocab, ctx);
    t->eot = special_id(kv, "tokenizer.ggml.eot_token_id", -1, t->n_vocab, ctx);
    if (nb_kv_get_bool(kv, "tokenizer.ggml.add_bos_token", &b)) t->add_bos = b;
    if (nb_kv_get_bool(kv, "tokenizer.ggml.add_eos_token", &b)) t->add_eos = b;

    /* end-of-generation texts: promoted to CONTROL, as llama.cpp does */
    for (size_t i = 0; i < sizeof k_eot_texts / sizeof k_eot_texts[0] && t->eot < 0; i++) {
        int32_t id = find_cstr(t, k_eot_texts[i]);
        if (id >= 0) t->eot = id;
    }
    for (size_t i = 0; i < sizeof k_eog_texts / sizeof k_eog_texts[0]; i++) {
        int32_t id = find_cstr(t, k_eog_texts[i]);
        if (id >= 0) t->attr[id] |= NB_TA_CONTROL | NB_TA_EOG;
    }
    /* llama.cpp: where "<|tool_response>" or "<|plamo:eos|>" ends generation, "</s>" is a normal token */
    int32_t s_close = find_cstr(t, "</s>");
    int32_t tr = find_cstr(t, "<|tool_response>"), pe = find_cstr(t, "<|plamo:eos|>");
    if (s_close >= 0 && ((tr >= 0 && (t->attr[tr] & NB_TA_EOG)) || (pe >= 0 && (t->attr[pe] & NB_TA_EOG))))
        t->attr[s_close] = NB_TA_NORMAL;
    /* llama.cpp renders these gpt-oss markers always, as user-defined tokens */
    static const char *const k_always_user[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"};
    for (size_t i = 0; i < 4; i++) {
        int32_t id = find_cstr(t, k_always_user[i]);
        if (id >= 0) t->attr[id] = NB_TA_USER_DEFINED;
    }
    if (t->eos >= 0) t->attr[t->eos] |= NB_TA_EOG;
    if (t->eot >= 0) t->attr[t->eot] |= NB_TA_EOG;

    for (int b2 = 0; b2 < 256; b2++) {
        char hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", (unsigned)b2);
        int32_t id = find_cstr(t, hex);
        if (id < 0) {
            char one = (char)b2;
            id = nb_tok_find(t, &one, 1);
        }
        t->byte_tok[b2] = id;
    }
    NB_TRY(build_specials(t, ctx));
    if (t->add_bos && t->bos < 0) {
        NB_WARN(ctx, "tokenizer: add_bos_token is set but the vocab has no BOS token; not adding one");
        t->add_bos = false;
    }
    if (t->add_eos && t->eos < 0) t->add_eos = false;
    return NB_OK;
}

nb_status nb_tokenizer_create(const nb_kvset *kv, nb_tokenizer **out, nb_ctx *ctx) {
    *out = NULL;
    nb_tokenizer *t = nb_calloc(NULL, 1, sizeof *t, "tokenizer");
    if (!t) return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: out of memory");
    nb_status st = create(t, kv, ctx);
    if (st != NB_OK) {
        nb_tokenizer_free(t);
        return st;
    }
    *out = t;
    return NB_OK;
}

void nb_tokenizer_free(nb_tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->off);
    free(t->len);
    free(t->score);
    free(t->attr);
    hidx_free(&t->vocab);
    free(t->mtext);
    free(t->moff);
    free(t->mlen);
    free(t->msplit);
    hidx_free(&t->merges);
    free(t->special);
    hidx_free(&t->trie);
    free(t->trie_key);
    free(t->trie_child);
    free(t->node_prio);
    free(t);
}

int nb_tokenizer_n_vocab(const nb_tokenizer *t) { return t->n_vocab; }
int32_t nb_tokenizer_bos(const nb_tokenizer *t) { return t->bos; }
int32_t nb_tokenizer_eos(const nb_tokenizer *t) { return t->eos; }
bool nb_tokenizer_add_bos(const nb_tokenizer *t) { return t->add_bos; }
bool nb_tokenizer_add_eos(const nb_tokenizer *t) { return t->add_eos; }

bool nb_tokenizer_is_eog(const nb_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && (t->attr[id] & NB_TA_EOG);
}

bool nb_tokenizer_is_control(const nb_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && (t->attr[id] & (NB_TA_CONTROL | NB_TA_UNKNOWN));
}

int32_t nb_tokenizer_token_id(const nb_tokenizer *t, const char *text, size_t n) { return nb_tok_find(t, text, n); }

/* ---- special-token split ---------------------------------------------------------- */

typedef struct frag {
    size_t off, len;
    int32_t id; /* -1: raw text */
} frag;

typedef struct fragvec {
    frag *v;
    size_t n, cap;
} fragvec;

static nb_status frag_push(fragvec *f, frag x, nb_ctx *ctx) {
    if (f->n == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 16;
        if (nc > SIZE_MAX / sizeof(frag)) return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: too many fragments");
        frag *nv = nb_realloc(NULL, f->v, nc * sizeof *nv, "tokenizer");
        if (!nv) return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: out of memory (%zu fragments)", nc);
        f->v = nv;
        f->cap = nc;
    }
    f->v[f->n++] = x;
    return NB_OK;
}

static bool eligible(const nb_tokenizer *t, int32_t id, bool parse_special) {
    return parse_special || !(t->attr[id] & (NB_TA_CONTROL | NB_TA_UNKNOWN));
}

/* Split text into raw and special-token fragments (llama.cpp's tokenizer_st_partition).
 * One trie pass finds which special tokens occur at all; only those are then
 * applied, in priority order, each claiming its leftmost non-overlapping
 * occurrences inside the fragments that are still raw. */
static nb_status partition(const nb_tokenizer *t, const char *s, size_t n, bool parse_special, fragvec *out,
                           nb_ctx *ctx) {
    out->n = 0;
    if (n == 0) return NB_OK;
    NB_TRY(frag_push(out, (frag){0, n, -1}, ctx));
    if (t->n_special == 0) return NB_OK;
    uint8_t *occurs = nb_calloc(NULL, t->n_special, 1, "tokenizer");
    if (!occurs) return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: out of memory");
    size_t n_occ = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t node = 0;
        for (size_t j = i; j < n; j++) {
            node = trie_child(t, node, (unsigned char)s[j]);
            if (node < 0) break;
            int32_t p = t->node_prio[node];
            if (p >= 0 && !occurs[p] && eligible(t, t->special[p], parse_special)) {
                occurs[p] = 1;
                n_occ++;
            }
        }
    }
    nb_status st = NB_OK;
    fragvec next = {0};
    for (size_t p = 0; p < t->n_special && n_occ > 0 && st == NB_OK; p++) {
        if (!occurs[p]) continue;
        n_occ--;
        int32_t id = t->special[p];
        const char *tx = t->text + t->off[id];
        size_t tl = t->len[id];
        next.n = 0;
        for (size_t f = 0; f < out->n && st == NB_OK; f++) {
            frag fr = out->v[f];
            if (fr.id >= 0) {
                st = frag_push(&next, fr, ctx);
                continue;
            }
            size_t a = fr.off, end = fr.off + fr.len;
            while (st == NB_OK && a < end) {
                const char *m = memmem(s + a, end - a, tx, tl);
                if (!m) break;
                size_t at = (size_t)(m - s);
                if (at > a) st = frag_push(&next, (frag){a, at - a, -1}, ctx);
                if (st == NB_OK) st = frag_push(&next, (frag){at, tl, id}, ctx);
                a = at + tl;
            }
            if (st == NB_OK && a < end) st = frag_push(&next, (frag){a, end - a, -1}, ctx);
        }
        fragvec sw = *out;
        *out = next;
        next = sw;
    }
    free(next.v);
    free(occurs);
    return st;
}

nb_status nb_tokenize(const nb_tokenizer *t, const char *text, size_t n, bool parse_special, int32_t **ids,
                      size_t *n_ids, nb_ctx *ctx) {
    *ids = NULL;
    *n_ids = 0;
    NB_RETURN_IF(ctx, !text && n > 0, NB_ERR_INVALID, "nb_tokenize: NULL text");
    fragvec fr = {0};
    nb_idvec out = {0};
    nb_status st = partition(t, text, n, parse_special, &fr, ctx);
    bool prev_special = true; /* SPM: the start counts as "after a special token" */
    for (size_t i = 0; i < fr.n && st == NB_OK; i++) {
        const frag *f = &fr.v[i];
        if (f->id >= 0) {
            st = nb_idvec_push(&out, f->id, ctx);
            prev_special = true;
        } else if (t->kind == NB_TOK_SPM) {
            st = nb_spm_encode(t, text + f->off, f->len, t->add_space_prefix && prev_special, &out, ctx);
            prev_special = false;
        } else {
            st = nb_bpe_encode(t, text + f->off, f->len, &out, ctx);
        }
    }
    free(fr.v);
    if (st != NB_OK) {
        free(out.v);
        return st;
    }
    if (!out.v) out.v = nb_malloc(NULL, sizeof(int32_t), "tokenizer"); /* a valid pointer even for no tokens */
    if (!out.v) return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: out of memory");
    *ids = out.v;
    *n_ids = out.n;
    return NB_OK;
}

/* ---- token -> text ------------------------------------------------------------------ */

typedef struct wbuf {
    char *buf;
    size_t cap, n;
} wbuf;

static void wput(wbuf *w, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++, w->n++)
        if (w->n < w->cap) w->buf[w->n] = s[i];
}

size_t nb_token_to_piece(const nb_tokenizer *t, int32_t id, char *buf, size_t cap) {
    if (!t || id < 0 || id >= t->n_vocab) return 0;
    wbuf w = {buf, buf ? cap : 0, 0};
    const char *s = t->text + t->off[id];
    size_t n = t->len[id];
    uint8_t a = t->attr[id];
    if (a & (NB_TA_UNKNOWN | NB_TA_CONTROL | NB_TA_USER_DEFINED)) {
        wput(&w, s, n);
    } else if (a & NB_TA_NORMAL) {
        if (t->kind == NB_TOK_SPM) {
            for (size_t i = 0; i < n; i++) {
                if (i + 2 < n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
                    wput(&w, " ", 1);
                    i += 2;
                } else {
                    wput(&w, s + i, 1);
                }
            }
        } else {
            for (size_t pos = 0; pos < n;) {
                uint32_t cp = nb_utf8_decode(s, n, &pos);
                int b = nb_gpt2_cp_byte(cp);
                if (b >= 0) {
                    char c = (char)b;
                    wput(&w, &c, 1);
                } else {
                    char u[4], hx[3];
                    size_t ul = nb_utf8_encode(cp, u);
                    wput(&w, "[UNK_BYTE_0x", 12);
                    for (size_t j = 0; j < ul; j++) {
                        snprintf(hx, sizeof hx, "%02x", (unsigned)(unsigned char)u[j]);
                        wput(&w, hx, 2);
                    }
                    wput(&w, s, n);
                    wput(&w, "]", 1);
                }
            }
        }
    } else if (a & NB_TA_BYTE) {
        /* "<0xXX>": llama.cpp reads the (up to) two characters after "<0x" with strtol(.., 16) */
        if (n >= 3) {
            char hx[3] = {0};
            memcpy(hx, s + 3, n - 3 < 2 ? n - 3 : 2);
            char c = (char)strtol(hx, NULL, 16);
            wput(&w, &c, 1);
        }
    }
    return w.n;
}
