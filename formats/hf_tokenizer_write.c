/* formats/hf_tokenizer_write.c — GGUF tokenizer.ggml.* keys -> Hugging Face tokenizer files.
 * The inverse of hf_tokenizer.c; see formats/hf_tokenizer.h for the contract.
 *
 * "gpt2" vocabularies become a byte-level BPE tokenizer.json (the
 * pre-tokenizer of the tokenizer.ggml.pre family, merges as "a b" strings,
 * CONTROL / USER_DEFINED tokens as added tokens). "llama" (SentencePiece)
 * vocabularies become tokenizer.model, which keeps the scores, and a BPE
 * tokenizer.json with merges derived from the scores (below); tokens the
 * import typed through added_tokens_decoder (score -1000, CONTROL or
 * USER_DEFINED) are listed there again so the import gives them back. In
 * both cases "[PAD<id>]" placeholders (UNUSED) are left out: the import
 * recreates them from vocab_size. tokenizer_config.json carries the special
 * token texts, add_bos/add_eos/add_sep, the chat template and, for gpt2, the
 * GGUF pre-tokenizer name (`gguf_pre_tokenizer`), which the import uses when
 * the check-text hash is not one llama.cpp knows.
 *
 * Everything is rendered in memory first; files are then written atomically
 * one after another, and those already written are removed if a later one
 * fails.
 */
#include "formats/hf_tokenizer_impl.h"

#include "core/afile.h"
#include "core/str.h"
#include "formats/json_strict.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct gguf_tok {
    const char *model, *pre, *arch;
    const nb_str *tokens;
    uint64_t n;
    const float *scores;   /* NULL: none */
    const int32_t *types;  /* NULL: all NORMAL */
    const nb_str *merges;
    uint64_t n_merges;
    int64_t id[7]; /* bos eos unk sep pad cls mask; -1 none */
    int add[3];    /* add_bos, add_eos, add_sep: -1 absent */
    int add_space_prefix;
    const char *chat_template;
} gguf_tok;

static const char *const k_id_keys[7] = {
    "tokenizer.ggml.bos_token_id",       "tokenizer.ggml.eos_token_id",     "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.cls_token_id",
    "tokenizer.ggml.mask_token_id"};
static const char *const k_id_names[7] = {"bos", "eos", "unk", "sep", "pad", "cls", "mask"};
static const char *const k_add_keys[3] = {"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
                                          "tokenizer.ggml.add_sep_token"};
static const char *const k_add_cfg[3] = {"add_bos_token", "add_eos_token", "add_sep_token"};

static const nb_kv_value *arr_of(const nb_kvset *kv, const char *key, nb_kv_type elem, bool *bad) {
    const nb_kv_value *v = nb_kv_get(kv, key);
    *bad = v && (v->type != NB_KV_ARRAY || v->v.arr.elem != elem);
    return *bad ? NULL : v;
}

static nb_status gather(const nb_kvset *kv, gguf_tok *g, nb_ctx *ctx) {
    memset(g, 0, sizeof *g);
    g->model = nb_kv_get_str(kv, "tokenizer.ggml.model");
    NB_RETURN_IF(ctx, !g->model, NB_ERR_UNSUPPORTED, "tokenizer.ggml.model: missing (the model carries no tokenizer)");
    NB_RETURN_IF(ctx, strcmp(g->model, "llama") && strcmp(g->model, "gpt2"), NB_ERR_UNSUPPORTED,
                 "tokenizer.ggml.model '%.40s' cannot be written as a Hugging Face tokenizer (llama, gpt2)", g->model);
    g->pre = nb_kv_get_str(kv, "tokenizer.ggml.pre");
    g->arch = nb_kv_get_str(kv, "general.architecture");
    bool bad;
    const nb_kv_value *t = arr_of(kv, "tokenizer.ggml.tokens", NB_KV_STRING, &bad);
    NB_RETURN_IF(ctx, !t, NB_ERR_FORMAT, "tokenizer.ggml.tokens: %s", bad ? "not an array of strings" : "missing");
    g->tokens = t->v.arr.data;
    g->n = t->v.arr.n;
    NB_RETURN_IF(ctx, g->n == 0 || g->n > INT32_MAX, NB_ERR_FORMAT, "tokenizer.ggml.tokens: %llu tokens",
                 (unsigned long long)g->n);
    for (uint64_t i = 0; i < g->n; i++) {
        size_t off;
        NB_RETURN_IF(ctx, strlen(g->tokens[i].ptr) != g->tokens[i].len ||
                              !nb_utf8_valid((const unsigned char *)g->tokens[i].ptr, g->tokens[i].len, &off),
                     NB_ERR_FORMAT, "tokenizer.ggml.tokens[%llu]: not valid UTF-8 text", (unsigned long long)i);
    }
    const nb_kv_value *s = arr_of(kv, "tokenizer.ggml.scores", NB_KV_F32, &bad);
    NB_RETURN_IF(ctx, bad || (s && s->v.arr.n != g->n), NB_ERR_FORMAT,
                 "tokenizer.ggml.scores: not an array of %llu f32", (unsigned long long)g->n);
    g->scores = s ? s->v.arr.data : NULL;
    const nb_kv_value *ty = arr_of(kv, "tokenizer.ggml.token_type", NB_KV_I32, &bad);
    NB_RETURN_IF(ctx, bad || (ty && ty->v.arr.n != g->n), NB_ERR_FORMAT,
                 "tokenizer.ggml.token_type: not an array of %llu i32", (unsigned long long)g->n);
    g->types = ty ? ty->v.arr.data : NULL;
    const nb_kv_value *m = arr_of(kv, "tokenizer.ggml.merges", NB_KV_STRING, &bad);
    NB_RETURN_IF(ctx, bad, NB_ERR_FORMAT, "tokenizer.ggml.merges: not an array of strings");
    if (m) {
        g->merges = m->v.arr.data;
        g->n_merges = m->v.arr.n;
        for (uint64_t i = 0; i < g->n_merges; i++) {
            size_t off;
            NB_RETURN_IF(ctx, !strchr(g->merges[i].ptr, ' ') ||
                                  !nb_utf8_valid((const unsigned char *)g->merges[i].ptr, g->merges[i].len, &off),
                         NB_ERR_FORMAT, "tokenizer.ggml.merges[%llu]: not an \"a b\" text", (unsigned long long)i);
        }
    }
    NB_RETURN_IF(ctx, !strcmp(g->model, "gpt2") && !m, NB_ERR_FORMAT, "tokenizer.ggml.merges: missing for a gpt2 vocab");
    for (int k = 0; k < 7; k++) {
        uint64_t u;
        g->id[k] = nb_kv_get_u64(kv, k_id_keys[k], &u) && u < g->n ? (int64_t)u : -1;
    }
    for (int k = 0; k < 3; k++) {
        bool b;
        g->add[k] = nb_kv_get_bool(kv, k_add_keys[k], &b) ? b : -1;
    }
    bool b;
    g->add_space_prefix = nb_kv_get_bool(kv, "tokenizer.ggml.add_space_prefix", &b) ? b : -1;
    g->chat_template = nb_kv_get_str(kv, "tokenizer.chat_template");
    return NB_OK;
}

static int32_t type_of(const gguf_tok *g, uint64_t i) { return g->types ? g->types[i] : NB_TT_NORMAL; }

/* "[PAD<id>]" UNUSED placeholders: the import recreates them. */
static bool is_placeholder(const gguf_tok *g, uint64_t i) {
    if (type_of(g, i) != NB_TT_UNUSED) return false;
    char pad[32];
    snprintf(pad, sizeof pad, "[PAD%llu]", (unsigned long long)i);
    return strcmp(g->tokens[i].ptr, pad) == 0;
}

/* Tokens the import typed from tokenizer_config.json's added_tokens_decoder
 * (the converter gives them score -1000): every USER_DEFINED token, and
 * CONTROL tokens scored -1000. */
static bool from_decoder(const gguf_tok *g, uint64_t i) {
    int32_t t = type_of(g, i);
    return t == NB_TT_USER_DEFINED || (t == NB_TT_CONTROL && g->scores && g->scores[i] == -1000.0f);
}

/* A USER_DEFINED token's text as SentencePiece holds it: spaces as U+2581
 * (malloc'd; the import turns them back). */
static char *spm_text(const char *s, nb_ctx *ctx) {
    size_t sp = 0, n = strlen(s);
    for (const char *p = s; *p; p++) sp += *p == ' ';
    char *o = nb_malloc(ctx, n + 2 * sp + 1, "token text");
    if (!o) return NULL;
    char *w = o;
    for (const char *p = s; *p; p++) {
        if (*p == ' ') *w++ = (char)0xe2, *w++ = (char)0x96, *w++ = (char)0x81;
        else *w++ = *p;
    }
    *w = '\0';
    return o;
}

static cJSON *added_token(const char *content, uint64_t id, bool special, bool with_id) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    bool ok = true;
    if (with_id) ok = ok && cJSON_AddNumberToObject(o, "id", (double)id);
    ok = ok && cJSON_AddStringToObject(o, "content", content);
    ok = ok && cJSON_AddBoolToObject(o, "single_word", false) && cJSON_AddBoolToObject(o, "lstrip", false) &&
         cJSON_AddBoolToObject(o, "rstrip", false) && cJSON_AddBoolToObject(o, "normalized", false) &&
         cJSON_AddBoolToObject(o, "special", special);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *byte_level(bool regex, bool prefix, bool trim) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    if (!cJSON_AddStringToObject(o, "type", "ByteLevel") || !cJSON_AddBoolToObject(o, "add_prefix_space", prefix) ||
        !cJSON_AddBoolToObject(o, "trim_offsets", trim) || !cJSON_AddBoolToObject(o, "use_regex", regex)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* tokenizer.json pre_tokenizer of a family. */
static cJSON *pre_tokenizer(nb_hf_pre_family f) {
    if (f == NB_HF_PRE_GPT2) return byte_level(true, false, true);
    cJSON *seq = cJSON_CreateObject(), *list = cJSON_CreateArray(), *a = cJSON_CreateObject();
    bool ok = seq && list && a && cJSON_AddStringToObject(seq, "type", "Sequence");
    if (ok && f == NB_HF_PRE_STARCODER) {
        ok = cJSON_AddStringToObject(a, "type", "Digits") && cJSON_AddBoolToObject(a, "individual_digits", true);
    } else if (ok) {
        cJSON *pat = cJSON_AddObjectToObject(a, "pattern");
        ok = cJSON_AddStringToObject(a, "type", "Split") && pat &&
             cJSON_AddStringToObject(pat, "Regex", nb_hf_pre_regex(f)) &&
             cJSON_AddStringToObject(a, "behavior", "Isolated") && cJSON_AddBoolToObject(a, "invert", false);
    }
    if (ok) {
        cJSON_AddItemToArray(list, a);
        a = NULL;
        cJSON *b = byte_level(f == NB_HF_PRE_STARCODER, false, f == NB_HF_PRE_STARCODER);
        ok = b && cJSON_AddItemToArray(list, b);
        if (ok) {
            cJSON_AddItemToObject(seq, "pretokenizers", list);
            list = NULL;
        }
    }
    cJSON_Delete(a);
    cJSON_Delete(list);
    if (!ok) {
        cJSON_Delete(seq);
        return NULL;
    }
    return seq;
}

/* TemplateProcessing adding BOS / EOS as the GGUF flags say (none: no special tokens). */
static cJSON *post_processor(const gguf_tok *g) {
    bool bos = g->add[0] == 1 && g->id[0] >= 0, eos = g->add[1] == 1 && g->id[1] >= 0;
    cJSON *o = cJSON_CreateObject(), *single = cJSON_CreateArray(), *pair = cJSON_CreateArray(),
          *sp = cJSON_CreateObject();
    bool ok = o && single && pair && sp && cJSON_AddStringToObject(o, "type", "TemplateProcessing");
    for (int part = 0; ok && part < 2; part++) {
        cJSON *arr = part ? pair : single;
        for (int seq = 0; ok && seq < (part ? 2 : 1); seq++) {
            for (int k = 0; ok && k < 3; k++) {
                bool is_seq = k == 1;
                if (!is_seq && !(k == 0 ? bos : eos)) continue;
                cJSON *el = cJSON_CreateObject(), *in = el ? cJSON_AddObjectToObject(el, is_seq ? "Sequence" : "SpecialToken") : NULL;
                const char *id = is_seq ? (seq ? "B" : "A") : g->tokens[g->id[k == 0 ? 0 : 1]].ptr;
                ok = in && cJSON_AddStringToObject(in, "id", id) && cJSON_AddNumberToObject(in, "type_id", seq);
                if (el) cJSON_AddItemToArray(arr, el);
            }
        }
    }
    for (int k = 0; ok && k < 2; k++) {
        if (!(k == 0 ? bos : eos)) continue;
        const char *name = g->tokens[g->id[k]].ptr;
        if (cJSON_GetObjectItemCaseSensitive(sp, name)) continue;
        cJSON *e = cJSON_AddObjectToObject(sp, name), *ids = e ? cJSON_AddArrayToObject(e, "ids") : NULL,
              *toks = e ? cJSON_AddArrayToObject(e, "tokens") : NULL;
        cJSON *n = cJSON_CreateNumber((double)g->id[k]), *s = cJSON_CreateString(name);
        ok = e && ids && toks && n && s && cJSON_AddStringToObject(e, "id", name);
        if (ok) {
            cJSON_AddItemToArray(ids, n);
            cJSON_AddItemToArray(toks, s);
        } else {
            cJSON_Delete(n);
            cJSON_Delete(s);
        }
    }
    if (o && single) cJSON_AddItemToObject(o, "single", single), single = NULL;
    if (o && pair) cJSON_AddItemToObject(o, "pair", pair), pair = NULL;
    if (o && sp) cJSON_AddItemToObject(o, "special_tokens", sp), sp = NULL;
    cJSON_Delete(single);
    cJSON_Delete(pair);
    cJSON_Delete(sp);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* text -> id over the GGUF tokens (open addressing, slot = id + 1; first id wins) */
typedef struct tok_index {
    uint32_t *slot;
    size_t mask;
    const nb_str *tokens;
} tok_index;

#define FNV_START 1469598103934665603ull
#define FNV_STEP(h, c) (((h) ^ (unsigned char)(c)) * 1099511628211ull)
static uint64_t fnv_mix(uint64_t h) { return h ^ (h >> 31); }

static uint64_t fnv(const char *s, size_t n) {
    uint64_t h = FNV_START;
    for (size_t i = 0; i < n; i++) h = FNV_STEP(h, s[i]);
    return fnv_mix(h);
}

/* id of text s[0..n) (hash: fnv(s, n)), -1 when absent */
static int64_t index_find_h(const tok_index *x, const char *s, size_t n, uint64_t hash) {
    for (size_t i = (size_t)hash & x->mask; x->slot[i]; i = (i + 1) & x->mask) {
        const nb_str *t = &x->tokens[x->slot[i] - 1];
        if (t->len == n && memcmp(t->ptr, s, n) == 0) return (int64_t)x->slot[i] - 1;
    }
    return -1;
}

static int64_t index_find(const tok_index *x, const char *s, size_t n) { return index_find_h(x, s, n, fnv(s, n)); }

/* Tokens longer than this (bytes) get no merges: SentencePiece pieces are 16
 * characters by default, and a hostile vocabulary must not cost len^2. */
#define SPM_MERGE_MAX_LEN 512

/* Tokens that take part in merging (as parts and as results). */
static bool mergeable(const gguf_tok *g, uint64_t i) {
    int32_t t = type_of(g, i);
    return (t == NB_TT_NORMAL || t == NB_TT_CONTROL || t == NB_TT_UNKNOWN || t == NB_TT_UNUSED) &&
           !is_placeholder(g, i);
}

static bool any_token(const gguf_tok *g, uint64_t i) { return !is_placeholder(g, i); }

/* Index the tokens `keep` accepts. */
static nb_status index_build(tok_index *x, const gguf_tok *g, bool (*keep)(const gguf_tok *, uint64_t), nb_ctx *ctx) {
    size_t cap = 16;
    while (cap < (size_t)g->n * 2) cap *= 2;
    x->mask = cap - 1;
    x->tokens = g->tokens;
    x->slot = nb_calloc(ctx, cap, sizeof *x->slot, "token index");
    if (!x->slot) return NB_ERR_NOMEM;
    for (uint64_t id = 0; id < g->n; id++) {
        if (!keep(g, id)) continue;
        const nb_str *t = &g->tokens[id];
        size_t i = (size_t)fnv(t->ptr, t->len) & x->mask;
        while (x->slot[i] && !(x->tokens[x->slot[i] - 1].len == t->len &&
                               memcmp(x->tokens[x->slot[i] - 1].ptr, t->ptr, t->len) == 0))
            i = (i + 1) & x->mask;
        if (!x->slot[i]) x->slot[i] = (uint32_t)id + 1;
    }
    return NB_OK;
}

/* Move *item under obj[key]: true, and *item = NULL, when obj took it; false
 * (the caller still owns *item) when cJSON could not (out of memory). */
static bool attach(cJSON *obj, const char *key, cJSON **item) {
    if (!*item || !cJSON_AddItemToObject(obj, key, *item)) return false;
    *item = NULL;
    return true;
}

/* The end both tokenizer.json renderers share: vocab and merges into model,
 * model into root, every piece still unattached (loose[0..n_loose), NULLs
 * allowed) freed, and root printed into *out (the caller's to free). */
static nb_status finish_bpe_json(cJSON *root, cJSON *model, cJSON *vocab, cJSON *merges, cJSON *const *loose,
                                 int n_loose, bool ok, char **out, nb_ctx *ctx) {
    ok = ok && attach(model, "vocab", &vocab) && attach(model, "merges", &merges) && attach(root, "model", &model);
    for (int i = 0; i < n_loose; i++) cJSON_Delete(loose[i]);
    cJSON_Delete(vocab);
    cJSON_Delete(merges);
    cJSON_Delete(model);
    *out = ok ? nb_json_print(root, false) : NULL;
    cJSON_Delete(root);
    NB_RETURN_IF(ctx, !*out, NB_ERR_NOMEM, "tokenizer.json: out of memory");
    return NB_OK;
}

static nb_status render_tokenizer_json(const gguf_tok *g, char **out, nb_ctx *ctx) {
    *out = NULL;
    nb_hf_pre_family fam = nb_hf_pre_family_of(g->pre ? g->pre : "gpt-2");
    NB_RETURN_IF(ctx, fam == NB_HF_PRE_UNKNOWN, NB_ERR_UNSUPPORTED,
                 "tokenizer.ggml.pre '%.40s' has no tokenizer.json pre-tokenizer here (gpt-2, starcoder/smollm, "
                 "llama-bpe, qwen2 families)", g->pre);
    tok_index x;
    NB_TRY(index_build(&x, g, any_token, ctx));
    cJSON *root = cJSON_CreateObject(), *added = cJSON_CreateArray(), *model = cJSON_CreateObject(),
          *vocab = cJSON_CreateObject(), *merges = cJSON_CreateArray();
    bool ok = root && added && model && vocab && merges;
    for (uint64_t i = 0; ok && i < g->n; i++) {
        int32_t t = type_of(g, i);
        if (is_placeholder(g, i)) continue;
        if (t == NB_TT_CONTROL || t == NB_TT_USER_DEFINED) {
            cJSON *a = added_token(g->tokens[i].ptr, i, t == NB_TT_CONTROL, true);
            ok = a != NULL;
            if (ok) cJSON_AddItemToArray(added, a);
        }
        /* a repeated text cannot be a second key of model.vocab: the first id keeps it */
        if (ok && index_find(&x, g->tokens[i].ptr, g->tokens[i].len) == (int64_t)i)
            ok = cJSON_AddNumberToObject(vocab, g->tokens[i].ptr, (double)i) != NULL;
    }
    free(x.slot);
    for (uint64_t i = 0; ok && i < g->n_merges; i++) {
        cJSON *s = cJSON_CreateString(g->merges[i].ptr);
        ok = s != NULL;
        if (ok) cJSON_AddItemToArray(merges, s);
    }
    ok = ok && cJSON_AddStringToObject(root, "version", "1.0") && cJSON_AddNullToObject(root, "truncation") &&
         cJSON_AddNullToObject(root, "padding");
    ok = ok && attach(root, "added_tokens", &added);
    ok = ok && cJSON_AddNullToObject(root, "normalizer");
    cJSON *pre = ok ? pre_tokenizer(fam) : NULL, *post = ok ? post_processor(g) : NULL,
          *dec = ok ? byte_level(true, true, true) : NULL;
    ok = ok && attach(root, "pre_tokenizer", &pre) && attach(root, "post_processor", &post) &&
         attach(root, "decoder", &dec);
    ok = ok && cJSON_AddStringToObject(model, "type", "BPE") && cJSON_AddNullToObject(model, "dropout") &&
         cJSON_AddNullToObject(model, "unk_token") && cJSON_AddNullToObject(model, "continuing_subword_prefix") &&
         cJSON_AddNullToObject(model, "end_of_word_suffix") && cJSON_AddBoolToObject(model, "fuse_unk", false) &&
         cJSON_AddBoolToObject(model, "byte_fallback", false) &&
         cJSON_AddBoolToObject(model, "ignore_merges", fam == NB_HF_PRE_LLAMA3);
    cJSON *const loose[] = {pre, post, dec, added};
    return finish_bpe_json(root, model, vocab, merges, loose, 4, ok, out, ctx);
}

/* ---- SentencePiece vocabularies as a tokenizer.json BPE --------------------------------------
 *
 * The form transformers' LlamaConverter (legacy) and GemmaConverter build:
 * a BPE over the U+2581 pieces with byte fallback and fuse_unk, the merges
 * derived from the scores, CONTROL / UNKNOWN / USER_DEFINED tokens as added
 * tokens. Chosen to give the ids nibble's engine (llama.cpp's SPM tokenizer)
 * gives:
 *   - merges: every split of a mergeable token (NORMAL, CONTROL, UNKNOWN,
 *     UNUSED except placeholders; at most SPM_MERGE_MAX_LEN bytes) into two
 *     mergeable tokens, ordered by the
 *     token's score (highest first), then its id, then the split point. The
 *     engine merges the adjacent pair whose result scores highest; a BPE that
 *     merges the lowest rank first then takes the same merges (ties between
 *     different tokens of one score are broken by position there, by id
 *     here: the one case where they can part).
 *   - USER_DEFINED tokens are added tokens with the GGUF text (spaces as
 *     spaces), matched in the raw text before normalization, as the engine
 *     matches them; they are never merge parts or results.
 *   - llama: normalizer Prepend("▁") (when add_space_prefix) + Replace(" ",
 *     "▁"), no pre-tokenizer: the prefix goes before every text piece between
 *     added tokens, as the engine adds it after each special token (the
 *     converter's legacy form; Metaspace would skip it before a leading space).
 *     gemma*: the GemmaConverter's Replace(" ", "▁") normalizer and
 *     Split(" ", merged_with_previous) pre-tokenizer (Gemma has no prefix).
 *   - decoder: Replace("▁", " "), ByteFallback, Fuse (+ Strip(" ", 1, 0) with
 *     a prefix). */

typedef struct spm_merge {
    float score;
    uint32_t id;   /* the token the merge makes */
    uint32_t left; /* byte length of the left part */
} spm_merge;

static int merge_cmp(const void *pa, const void *pb) {
    const spm_merge *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    return (a->left > b->left) - (a->left < b->left);
}

/* The merges of an SPM vocabulary, in rank order (malloc'd). */
static nb_status spm_merges(const gguf_tok *g, spm_merge **out, size_t *n_out, nb_ctx *ctx) {
    *out = NULL;
    *n_out = 0;
    tok_index x;
    NB_TRY(index_build(&x, g, mergeable, ctx));
    spm_merge *m = NULL;
    size_t n = 0, cap = 0;
    nb_status st = NB_OK;
    for (uint64_t id = 0; id < g->n && st == NB_OK; id++) {
        if (!mergeable(g, id) || index_find(&x, g->tokens[id].ptr, g->tokens[id].len) != (int64_t)id) continue;
        const char *s = g->tokens[id].ptr;
        size_t len = g->tokens[id].len;
        if (len > SPM_MERGE_MAX_LEN) continue;
        uint64_t h = FNV_START; /* of the prefix s[0..k) */
        for (size_t k = 1; k < len; k++) {
            h = FNV_STEP(h, s[k - 1]);
            if (((unsigned char)s[k] & 0xC0) == 0x80) continue; /* inside a code point */
            if (index_find_h(&x, s, k, fnv_mix(h)) < 0 || index_find(&x, s + k, len - k) < 0) continue;
            if (n == cap) {
                size_t nc = cap ? 2 * cap : 1024;
                spm_merge *nm = realloc(m, nc * sizeof *nm);
                if (!nm) {
                    st = nb_err(ctx, NB_ERR_NOMEM, "tokenizer.json: out of memory for the merges");
                    break;
                }
                m = nm;
                cap = nc;
            }
            m[n++] = (spm_merge){g->scores ? g->scores[id] : 0.0f, (uint32_t)id, (uint32_t)k};
        }
    }
    free(x.slot);
    if (st != NB_OK) {
        free(m);
        return st;
    }
    if (n) qsort(m, n, sizeof *m, merge_cmp);
    *out = m;
    *n_out = n;
    return NB_OK;
}

static cJSON *replace_step(const char *from, const char *to) {
    cJSON *o = cJSON_CreateObject(), *p = o ? cJSON_AddObjectToObject(o, "pattern") : NULL;
    if (!p || !cJSON_AddStringToObject(o, "type", "Replace") || !cJSON_AddStringToObject(p, "String", from) ||
        !cJSON_AddStringToObject(o, "content", to)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *typed(const char *type) {
    cJSON *o = cJSON_CreateObject();
    if (o && !cJSON_AddStringToObject(o, "type", type)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* {"type": "Sequence", key: [items...]}; the items are taken (also on failure). */
static cJSON *sequence(const char *key, cJSON **items, size_t n) {
    cJSON *o = typed("Sequence"), *arr = o ? cJSON_AddArrayToObject(o, key) : NULL;
    bool ok = arr != NULL;
    for (size_t i = 0; i < n; i++) {
        if (ok && items[i]) cJSON_AddItemToArray(arr, items[i]);
        else cJSON_Delete(items[i]), ok = false;
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

#define SPM_SPACE "\xe2\x96\x81"

static nb_status render_spm_json(const gguf_tok *g, char **out, nb_ctx *ctx) {
    *out = NULL;
    bool gemma = g->arch && strncmp(g->arch, "gemma", 5) == 0;
    bool prefix = !gemma && g->add_space_prefix != 0;
    spm_merge *mg = NULL;
    size_t n_mg = 0;
    NB_TRY(spm_merges(g, &mg, &n_mg, ctx));
    tok_index x;
    nb_status ist = index_build(&x, g, any_token, ctx);
    if (ist != NB_OK) {
        free(mg);
        return ist;
    }
    bool bytes = false;
    for (uint64_t i = 0; i < g->n; i++) bytes = bytes || type_of(g, i) == NB_TT_BYTE;
    cJSON *root = cJSON_CreateObject(), *added = cJSON_CreateArray(), *model = cJSON_CreateObject(),
          *vocab = cJSON_CreateObject(), *merges = cJSON_CreateArray();
    bool ok = root && added && model && vocab && merges;
    for (uint64_t i = 0; ok && i < g->n; i++) {
        int32_t t = type_of(g, i);
        if (is_placeholder(g, i)) continue;
        if (t == NB_TT_CONTROL || t == NB_TT_USER_DEFINED || t == NB_TT_UNKNOWN) {
            cJSON *a = added_token(g->tokens[i].ptr, i, t != NB_TT_USER_DEFINED, true);
            ok = a != NULL;
            if (ok) cJSON_AddItemToArray(added, a);
        }
        if (ok && index_find(&x, g->tokens[i].ptr, g->tokens[i].len) == (int64_t)i)
            ok = cJSON_AddNumberToObject(vocab, g->tokens[i].ptr, (double)i) != NULL;
    }
    free(x.slot);
    for (size_t i = 0; ok && i < n_mg; i++) {
        const nb_str *t = &g->tokens[mg[i].id];
        char *l = nb_strndup(ctx, t->ptr, mg[i].left);
        cJSON *pair = cJSON_CreateArray(), *a = l ? cJSON_CreateString(l) : NULL,
              *b = cJSON_CreateString(t->ptr + mg[i].left);
        free(l);
        ok = pair && a && b;
        if (ok) {
            cJSON_AddItemToArray(pair, a);
            cJSON_AddItemToArray(pair, b);
            cJSON_AddItemToArray(merges, pair);
        } else {
            cJSON_Delete(pair);
            cJSON_Delete(a);
            cJSON_Delete(b);
        }
    }
    free(mg);
    ok = ok && cJSON_AddStringToObject(root, "version", "1.0") && cJSON_AddNullToObject(root, "truncation") &&
         cJSON_AddNullToObject(root, "padding");
    ok = ok && attach(root, "added_tokens", &added);
    cJSON *norm = NULL, *pre = NULL, *post = NULL, *dec = NULL;
    if (ok) {
        if (gemma || !prefix) {
            norm = replace_step(" ", SPM_SPACE);
        } else {
            cJSON *steps[2] = {typed("Prepend"), replace_step(" ", SPM_SPACE)};
            if (steps[0] && !cJSON_AddStringToObject(steps[0], "prepend", SPM_SPACE)) cJSON_Delete(steps[0]), steps[0] = NULL;
            norm = sequence("normalizers", steps, 2);
        }
        if (gemma) {
            pre = typed("Split");
            cJSON *p = pre ? cJSON_AddObjectToObject(pre, "pattern") : NULL;
            if (!p || !cJSON_AddStringToObject(p, "String", " ") ||
                !cJSON_AddStringToObject(pre, "behavior", "MergedWithPrevious") ||
                !cJSON_AddBoolToObject(pre, "invert", false))
                cJSON_Delete(pre), pre = NULL;
        }
        post = post_processor(g);
        cJSON *d[4] = {replace_step(SPM_SPACE, " "), typed("ByteFallback"), typed("Fuse"), NULL};
        if (prefix) {
            d[3] = typed("Strip");
            if (d[3] && (!cJSON_AddStringToObject(d[3], "content", " ") || !cJSON_AddNumberToObject(d[3], "start", 1) ||
                         !cJSON_AddNumberToObject(d[3], "stop", 0)))
                cJSON_Delete(d[3]), d[3] = NULL;
        }
        dec = sequence("decoders", d, prefix ? 4 : 3);
        ok = norm && (pre || !gemma) && post && dec;
    }
    ok = ok && attach(root, "normalizer", &norm) &&
         (pre ? attach(root, "pre_tokenizer", &pre) : cJSON_AddNullToObject(root, "pre_tokenizer") != NULL) &&
         attach(root, "post_processor", &post) && attach(root, "decoder", &dec);
    const char *unk = g->id[2] >= 0 ? g->tokens[g->id[2]].ptr : NULL;
    ok = ok && cJSON_AddStringToObject(model, "type", "BPE") && cJSON_AddNullToObject(model, "dropout") &&
         (unk ? cJSON_AddStringToObject(model, "unk_token", unk) != NULL
              : cJSON_AddNullToObject(model, "unk_token") != NULL) &&
         cJSON_AddNullToObject(model, "continuing_subword_prefix") &&
         cJSON_AddNullToObject(model, "end_of_word_suffix") && cJSON_AddBoolToObject(model, "fuse_unk", true) &&
         cJSON_AddBoolToObject(model, "byte_fallback", bytes) && cJSON_AddBoolToObject(model, "ignore_merges", false);
    cJSON *const loose[] = {norm, pre, post, dec, added};
    return finish_bpe_json(root, model, vocab, merges, loose, 5, ok, out, ctx);
}

/* tokenizer_config.json (and, with `map`, special_tokens_map.json). */
static char *render_config(const gguf_tok *g, bool map, bool spm, nb_ctx *ctx) {
    cJSON *root = cJSON_CreateObject();
    bool ok = root != NULL;
    if (!map) {
        for (int k = 0; ok && k < 3; k++)
            if (g->add[k] >= 0) ok = cJSON_AddBoolToObject(root, k_add_cfg[k], g->add[k]) != NULL;
        if (ok && g->add_space_prefix >= 0 && g->arch && strcmp(g->arch, "llama") == 0)
            ok = cJSON_AddBoolToObject(root, "add_prefix_space", g->add_space_prefix) != NULL;
        if (ok && spm) {
            /* tokens the import typed from added_tokens_decoder */
            cJSON *dec = cJSON_AddObjectToObject(root, "added_tokens_decoder");
            ok = dec != NULL;
            for (uint64_t i = 0; ok && i < g->n; i++) {
                if (!from_decoder(g, i)) continue;
                bool control = type_of(g, i) == NB_TT_CONTROL;
                char key[24];
                snprintf(key, sizeof key, "%llu", (unsigned long long)i);
                char *text = control ? NULL : spm_text(g->tokens[i].ptr, ctx);
                cJSON *a = control || text ? added_token(control ? g->tokens[i].ptr : text, i, control, false) : NULL;
                free(text);
                ok = attach(dec, key, &a);
                cJSON_Delete(a);
            }
        }
    }
    for (int k = 0; ok && k < 7; k++) {
        if (g->id[k] < 0) continue;
        char key[24];
        snprintf(key, sizeof key, "%s_token", k_id_names[k]);
        ok = cJSON_AddStringToObject(root, key, g->tokens[g->id[k]].ptr) != NULL;
    }
    if (!map) {
        if (ok && g->chat_template) ok = cJSON_AddStringToObject(root, "chat_template", g->chat_template) != NULL;
        /* tokenizer.json as written: transformers 5's LlamaTokenizer / GemmaTokenizer
         * would replace its normalizer with a Metaspace that skips the
         * prefix before a leading space (the engine and SentencePiece add it) */
        ok = ok && cJSON_AddStringToObject(root, "tokenizer_class", "PreTrainedTokenizerFast");
        if (ok && !spm && g->pre) ok = cJSON_AddStringToObject(root, "gguf_pre_tokenizer", g->pre) != NULL;
        /* the tokenizer.json normalizer is the converter's legacy form (prefix after special tokens) */
        if (ok && spm) ok = cJSON_AddBoolToObject(root, "legacy", true) != NULL;
    }
    char *text = ok ? nb_json_print(root, true) : NULL;
    cJSON_Delete(root);
    if (!text) nb_err(ctx, NB_ERR_NOMEM, "tokenizer_config.json: out of memory");
    return text;
}

static nb_status render_spm(const gguf_tok *g, unsigned char **buf, size_t *n, nb_ctx *ctx) {
    nb_spm_model m;
    memset(&m, 0, sizeof m);
    m.n = g->n;
    m.pieces = nb_calloc(ctx, g->n, sizeof *m.pieces, "pieces");
    if (!m.pieces) return NB_ERR_NOMEM;
    bool bytes = false;
    nb_status st = NB_OK;
    for (uint64_t i = 0; i < g->n; i++) {
        int32_t t = type_of(g, i);
        /* decoder-typed tokens are user-defined pieces, as in the models the
         * converter reads (SentencePiece then matches them in text; the import
         * types them from the decoder again); their spaces are U+2581 there */
        bool dec = from_decoder(g, i);
        m.pieces[i].text = dec && t == NB_TT_USER_DEFINED ? spm_text(g->tokens[i].ptr, ctx) : nb_strdup(ctx, g->tokens[i].ptr);
        if (!m.pieces[i].text) {
            st = NB_ERR_NOMEM;
            break;
        }
        m.pieces[i].score = g->scores ? g->scores[i] : 0.0f;
        bool special_id = false;
        for (int k = 0; k < 7; k++) special_id = special_id || g->id[k] == (int64_t)i;
        if (dec && !special_id) t = NB_TT_USER_DEFINED; /* bos/eos/unk/pad... stay control pieces */
        m.pieces[i].type = t >= NB_TT_NORMAL && t <= NB_TT_BYTE ? t : NB_TT_NORMAL;
        bytes = bytes || t == NB_TT_BYTE;
    }
    m.model_type = 2;
    m.byte_fallback = bytes;
    m.unk_id = (int32_t)g->id[2], m.bos_id = (int32_t)g->id[0], m.eos_id = (int32_t)g->id[1], m.pad_id = (int32_t)g->id[4];
    m.add_dummy_prefix = g->add_space_prefix != 0;
    if (st == NB_OK) st = nb_spm_serialize(&m, buf, n, ctx);
    nb_spm_model_free(&m);
    return st;
}

static nb_status write_bytes(const char *path, const void *data, size_t n, nb_ctx *ctx) {
    nb_afile f;
    NB_TRY(nb_afile_open(&f, path, false, ctx));
    nb_status st = nb_afile_write(&f, data, n, ctx);
    if (st == NB_OK) st = nb_afile_commit(&f, NULL, ctx);
    nb_afile_abort(&f);
    return st;
}

nb_status nb_hf_tokenizer_write(const nb_kvset *kv, const char *dir, nb_ctx *ctx) {
    gguf_tok g;
    NB_TRY(gather(kv, &g, ctx));
    bool spm = strcmp(g.model, "llama") == 0;
    char *tok_json = NULL, *cfg = NULL, *map = NULL;
    unsigned char *model = NULL;
    size_t model_n = 0;
    const char *names[4] = {NULL, "tokenizer_config.json", "special_tokens_map.json", NULL};
    char *paths[4] = {0};
    int written = 0;
    nb_status st = NB_OK;
    if (spm) {
        NB_CHECK_GOTO(st, render_spm(&g, &model, &model_n, ctx), done);
        NB_CHECK_GOTO(st, render_spm_json(&g, &tok_json, ctx), done);
        names[3] = "tokenizer.model";
    } else {
        NB_CHECK_GOTO(st, render_tokenizer_json(&g, &tok_json, ctx), done);
    }
    names[0] = "tokenizer.json";
    cfg = render_config(&g, false, spm, ctx);
    map = render_config(&g, true, spm, ctx);
    if (!cfg || !map) NB_FAIL_GOTO(st, done, ctx, NB_ERR_NOMEM, "%s: out of memory", dir);
    for (int k = 0; k < 4; k++) {
        if (!names[k]) continue;
        paths[k] = nb_path_join(ctx, dir, names[k]);
        if (!paths[k]) NB_FAIL_GOTO(st, done, ctx, NB_ERR_NOMEM, "out of memory");
    }
    NB_CHECK_GOTO(st, nb_afile_write_text(paths[0], tok_json, ctx), done);
    written = 1;
    NB_CHECK_GOTO(st, nb_afile_write_text(paths[1], cfg, ctx), done);
    written = 2;
    NB_CHECK_GOTO(st, nb_afile_write_text(paths[2], map, ctx), done);
    written = 3;
    if (spm) {
        NB_CHECK_GOTO(st, write_bytes(paths[3], model, model_n, ctx), done);
        written = 4;
    }
done:
    if (st != NB_OK)
        for (int k = 0; k < written; k++) unlink(paths[k]);
    for (int k = 0; k < 4; k++) free(paths[k]);
    free(tok_json);
    free(cfg);
    free(map);
    free(model);
    return st;
}
