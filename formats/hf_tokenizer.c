/* formats/hf_tokenizer.c — Hugging Face tokenizer files -> GGUF tokenizer.ggml.* keys.
 * See formats/hf_tokenizer.h for the contract; the rules follow llama.cpp's
 * convert_hf_to_gguf.py (_create_vocab_sentencepiece, get_vocab_base,
 * get_vocab_base_pre) and gguf-py's SpecialVocab.
 *
 * The pre-tokenizer name needs a tokenizer: llama.cpp identifies a byte-level
 * BPE pre-tokenizer by the sha256 of the token ids of a fixed check text, so
 * this file builds engine/tokenizer.h's tokenizer from the keys it just made
 * (the only place formats/ reaches into engine/; a second BPE here would be a
 * copy of it).
 */
#include "formats/hf_tokenizer_impl.h"

#include "core/file.h"
#include "core/sha256.h"
#include "core/str.h"
#include "engine/tokenizer.h"
#include "formats/json_strict.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- pre-tokenizer families ---------------------------------------------------------- */

static const char k_llama3_re[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char k_qwen2_re[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* llama.cpp's get_vocab_base_pre table (convert_hf_to_gguf.py), restricted to
 * the names whose pre-tokenizer nibble's engine implements. Later rows win
 * where a hash repeats, as there (mpt/olmo). */
typedef struct pre_hash {
    const char *sha, *name;
    nb_hf_pre_family fam;
} pre_hash;
static const pre_hash k_pre_hashes[] = {
    {"1431a23e583c97432bc230bff598d103ddb5a1f89960c8f1d1051aaa944d0b35", "minerva-7b", NB_HF_PRE_STARCODER},
    {"7e57df22b1fe23a7b1e1c7f3dc4e3f96d43a4eb0836d0c6bdc3436d7b2f1c664", "hunyuan", NB_HF_PRE_QWEN2},
    {"a6b57017d60e6edb4d88ecc2845188e0eb333a70357e45dcc9b53964a73bbae6", "falcon-h1", NB_HF_PRE_LLAMA3},
    {"60476e1243776c4fb1b993dbd7a5f15ac22f83c80afdf425fa5ae01c8d44ef86", "falcon-h1", NB_HF_PRE_LLAMA3},
    {"3eda48b4c4dc7de733d1a8b3e3b4a85243dbbf704da2ee9d42c6beced8897896", "falcon-h1", NB_HF_PRE_LLAMA3},
    {"48f8e02c0359c0bbdd82f26909171fac1c18a457bb47573ed1fe3bbb2c1cfd4b", "falcon-h1", NB_HF_PRE_LLAMA3},
    {"d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c", "qwen2", NB_HF_PRE_QWEN2},
    {"0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5", "llama-bpe", NB_HF_PRE_LLAMA3},
    {"9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e", "falcon3", NB_HF_PRE_LLAMA3},
    {"b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166", "olmo", NB_HF_PRE_GPT2},
    {"35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34", "starcoder", NB_HF_PRE_STARCODER},
    {"3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454", "gpt-2", NB_HF_PRE_GPT2},
    {"32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3", "stablelm2", NB_HF_PRE_QWEN2},
    {"6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff", "refact", NB_HF_PRE_STARCODER},
    {"9c2227e4dd922002fb81bde4fc02b0483ca4f12911410dee2255e4987644e3f8", "command-r", NB_HF_PRE_STARCODER},
    {"e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea", "qwen2", NB_HF_PRE_QWEN2},
    {"a8594e3edff7c29c003940395316294b2c623e09894deebbc65f33f1515df79e", "dbrx", NB_HF_PRE_LLAMA3},
    {"a023e9fdc5a11f034d3ef515b92350e56fb2af1f66c6b6811a4444ea9bf8763d", "jina-v5-nano", NB_HF_PRE_LLAMA3},
    {"c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d", "smaug-bpe", NB_HF_PRE_LLAMA3},
    {"b53802fb28e26d645c3a310b34bfe07da813026ec7c7716883404d5e0f8b1901", "jais", NB_HF_PRE_GPT2},
    {"7b3e7548e4308f52a76e8229e4e6cc831195d0d1df43aed21ac6c93da05fec5f", "codeshell", NB_HF_PRE_STARCODER},
    {"855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249", "smollm", NB_HF_PRE_STARCODER},
    {"4e2b24cc4770243d65a2c9ec19770a72f08cffc161adbb73fcbb6b7dd45a0aae", "exaone", NB_HF_PRE_STARCODER},
    {"fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085", "phi-2", NB_HF_PRE_GPT2},
    {"8b5a93ed704057481f240da0be7e7dca721d7f8f4755263b6807227a2cbeae65", "roberta-bpe", NB_HF_PRE_GPT2},
    {"ad851be1dba641f2e3711822f816db2c265f788b37c63b4e1aeacb9ee92de8eb", "gigachat", NB_HF_PRE_GPT2},
    {"d4c8f286ea6b520b3d495c4455483cfa2302c0cfcd4be05d781b6a8a0a7cdaf1", "megrez", NB_HF_PRE_QWEN2},
    {"b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5", "deepseek-r1-qwen", NB_HF_PRE_QWEN2},
    {"1994ffd01900cfb37395608534236ecd63f2bd5995d6cb1004dda1af50240f15", "trillion", NB_HF_PRE_GPT2},
    {"0e9433cbbb161f89e264eb32e8e64bfe69e834973ffca5d41d3948a604a3e2a3", "pixtral", NB_HF_PRE_LLAMA3},
    {"b0a6b1c0bd5998ebd9df08611efde34a4ff03faed45ae09c43e6b31ebd4b94cf", "a.x-4.0", NB_HF_PRE_GPT2},
    {"f6791d196f87ce6b56a7d234be618e0d58f8cda3549416635b2bebcd22cd95c4", "midm-2.0", NB_HF_PRE_LLAMA3},
    {"169bf0296a13c4d9b7672313f749eb36501d931022de052aad6e36f2bf34dd51", "lfm2", NB_HF_PRE_LLAMA3},
    {"2085e1638f6c377a0aa4ead21b27bb4cb941bf800df86ed391011769c1758dfb", "exaone4", NB_HF_PRE_GPT2},
    {"a1e163ecab2e718a4c829d1148b6e86824ec36163bb71941c3dca9cd5ac25756", "mellum", NB_HF_PRE_GPT2},
    {"a0b64b4385f123663873756336c085744376d015ff328bb1d901598f63c44152", "modern-bert", NB_HF_PRE_GPT2},
    {"53e325976a6e142379c19b09afcae354f2f496f147afa8f9e189a33fe4e3024e", "granite-docling", NB_HF_PRE_GPT2},
    {"4a2e2abae11ca2b86d570fc5b44be4d5eb5e72cc8f22dd136a94b37da83ab665", "kormo", NB_HF_PRE_QWEN2},
    {"16389f0a1f51ee53e562ffd51c371dc508639ab0e4261502071836e50e223e91", "solar-open", NB_HF_PRE_QWEN2},
};

/* llama.cpp's check text (get_vocab_base_pre's chktxt). */
static const char k_chktxt[] =
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\xF0\x9F\x9A\x80 (normal) \xF0\x9F\x98\xB6\xE2\x80\x8D"
    "\xF0\x9F\x8C\xAB\xEF\xB8\x8F (multiple emojis concatenated) \xE2\x9C\x85 \xF0\x9F\xA6\x99\xF0\x9F\xA6\x99 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "\xE1\x9E\x80\xE1\x9E\xB6\xE1\x9E\x93\xE1\x9F\x8B\xE1\x9E\x8F\xE1\x9F\x82\xE1\x9E\x96\xE1\x9E\xB7\xE1\x9E"
    "\x9F\xE1\x9F\x81\xE1\x9E\x9F\xE1\x9E\xA2\xE1\x9E\xB6\xE1\x9E\x85\xF0\x9F\x98\x81 "
    "?\xE6\x88\x91\xE6\x83\xB3\xE5\x9C\xA8" "apple\xE5\xB7\xA5\xE4\xBD\x9C" "1314151\xE5\xA4\xA9\xEF\xBD\x9E "
    "------======= \xD0\xBD\xD0\xB5\xD1\x89\xD0\xBE \xD0\xBD\xD0\xB0 \xD0\x91\xD1\x8A\xD0\xBB\xD0\xB3\xD0\xB0"
    "\xD1\x80\xD1\x81\xD0\xBA\xD0\xB8 ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL";

typedef struct fam_name {
    const char *name;
    nb_hf_pre_family fam;
} fam_name;
/* Names llama.cpp maps onto the four families (engine/tokenizer.c's table) that can be
 * written back as tokenizer.json pre-tokenizers. */
static const fam_name k_fam_names[] = {
    {"gpt-2", NB_HF_PRE_GPT2},          {"phi-2", NB_HF_PRE_GPT2},          {"gigachat", NB_HF_PRE_GPT2},
    {"a.x-4.0", NB_HF_PRE_GPT2},        {"mellum", NB_HF_PRE_GPT2},         {"modern-bert", NB_HF_PRE_GPT2},
    {"roberta-bpe", NB_HF_PRE_GPT2},    {"mpt", NB_HF_PRE_GPT2},            {"olmo", NB_HF_PRE_GPT2},
    {"jais", NB_HF_PRE_GPT2},           {"trillion", NB_HF_PRE_GPT2},       {"granite-docling", NB_HF_PRE_GPT2},
    {"exaone4", NB_HF_PRE_GPT2},        {"starcoder", NB_HF_PRE_STARCODER}, {"refact", NB_HF_PRE_STARCODER},
    {"command-r", NB_HF_PRE_STARCODER}, {"smollm", NB_HF_PRE_STARCODER},    {"codeshell", NB_HF_PRE_STARCODER},
    {"exaone", NB_HF_PRE_STARCODER},    {"minerva-7b", NB_HF_PRE_STARCODER}, {"llama3", NB_HF_PRE_LLAMA3},
    {"llama-v3", NB_HF_PRE_LLAMA3},     {"llama-bpe", NB_HF_PRE_LLAMA3},    {"falcon3", NB_HF_PRE_LLAMA3},
    {"falcon-h1", NB_HF_PRE_LLAMA3},    {"pixtral", NB_HF_PRE_LLAMA3},      {"midm-2.0", NB_HF_PRE_LLAMA3},
    {"lfm2", NB_HF_PRE_LLAMA3},         {"jina-v5-nano", NB_HF_PRE_LLAMA3}, {"dbrx", NB_HF_PRE_LLAMA3},
    {"smaug-bpe", NB_HF_PRE_LLAMA3},    {"qwen2", NB_HF_PRE_QWEN2},         {"deepseek-r1-qwen", NB_HF_PRE_QWEN2},
    {"kormo", NB_HF_PRE_QWEN2},         {"megrez", NB_HF_PRE_QWEN2},        {"stablelm2", NB_HF_PRE_QWEN2},
    {"hunyuan", NB_HF_PRE_QWEN2},       {"solar-open", NB_HF_PRE_QWEN2},
};

nb_hf_pre_family nb_hf_pre_family_of(const char *pre) {
    if (!pre) return NB_HF_PRE_UNKNOWN;
    for (size_t i = 0; i < sizeof k_fam_names / sizeof k_fam_names[0]; i++)
        if (strcmp(pre, k_fam_names[i].name) == 0) return k_fam_names[i].fam;
    return NB_HF_PRE_UNKNOWN;
}

const char *nb_hf_pre_default_name(nb_hf_pre_family f) {
    switch (f) {
    case NB_HF_PRE_GPT2: return "gpt-2";
    case NB_HF_PRE_STARCODER: return "starcoder";
    case NB_HF_PRE_LLAMA3: return "llama-bpe";
    case NB_HF_PRE_QWEN2: return "qwen2";
    default: return NULL;
    }
}

const char *nb_hf_pre_regex(nb_hf_pre_family f) {
    return f == NB_HF_PRE_LLAMA3 ? k_llama3_re : f == NB_HF_PRE_QWEN2 ? k_qwen2_re : NULL;
}

/* ---- files ---------------------------------------------------------------------------- */

static bool is_file(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Parse DIR/NAME as JSON (strict UTF-8; duplicate keys: the last wins, as
 * Python's json). Absent -> *out NULL and NB_OK. *path_out (malloc'd) names it. */
static nb_status load_json(const char *dir, const char *name, cJSON **out, char **path_out, nb_ctx *ctx) {
    *out = NULL;
    *path_out = nb_path_join(ctx, dir, name);
    if (!*path_out) return NB_ERR_NOMEM;
    if (!is_file(*path_out)) return NB_OK;
    char *buf;
    size_t n;
    NB_TRY(nb_read_file(*path_out, NB_HF_TOKENIZER_MAX_FILE, &buf, &n, ctx));
    size_t bad;
    if (!nb_utf8_valid((const unsigned char *)buf, n, &bad)) {
        free(buf);
        return nb_err(ctx, NB_ERR_FORMAT, "%s: not valid UTF-8 (byte offset %zu)", *path_out, bad);
    }
    *out = cJSON_ParseWithLength(buf, n);
    if (!*out) {
        const char *e = cJSON_GetErrorPtr();
        size_t off = e && e >= buf && e <= buf + n ? (size_t)(e - buf) : 0;
        free(buf);
        return nb_err(ctx, NB_ERR_FORMAT, "%s: not valid JSON (near byte offset %zu)", *path_out, off);
    }
    free(buf);
    nb_json_last_wins(*out);
    if (!cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return nb_err(ctx, NB_ERR_FORMAT, "%s: not a JSON object", *path_out);
    }
    return NB_OK;
}

static const cJSON *jget(const cJSON *o, const char *key) {
    return o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}
static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *it = jget(o, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}
/* A non-negative integer value (JSON number with no fraction), or -1. */
static int64_t jint(const cJSON *it) {
    if (!cJSON_IsNumber(it)) return -1;
    double v = it->valuedouble;
    if (!(v >= 0 && v <= (double)INT32_MAX) || (double)(int64_t)v != v) return -1;
    return (int64_t)v;
}

/* ---- the vocabulary being built ---------------------------------------------------------- */

typedef struct vocab {
    uint32_t n;
    char **text; /* malloc'd; NULL -> "[PAD<id>]" at the end */
    float *score;
    int32_t *type;
    bool has_scores;
} vocab;

static nb_status vocab_init(vocab *v, uint32_t n, float score, int32_t type, nb_ctx *ctx) {
    v->n = n;
    v->text = nb_calloc(ctx, n ? n : 1, sizeof *v->text, "token texts");
    v->score = nb_malloc(ctx, (n ? n : 1) * sizeof *v->score, "token scores");
    v->type = nb_malloc(ctx, (n ? n : 1) * sizeof *v->type, "token types");
    if (!v->text || !v->score || !v->type) return NB_ERR_NOMEM;
    for (uint32_t i = 0; i < n; i++) v->score[i] = score, v->type[i] = type;
    return NB_OK;
}

static void vocab_free(vocab *v) {
    if (v->text)
        for (uint32_t i = 0; i < v->n; i++) free(v->text[i]);
    free(v->text);
    free(v->score);
    free(v->type);
    memset(v, 0, sizeof *v);
}

static nb_status vocab_set(vocab *v, uint32_t id, const char *s, nb_ctx *ctx) {
    char *c = nb_strdup(ctx, s);
    if (!c) return NB_ERR_NOMEM;
    free(v->text[id]);
    v->text[id] = c;
    return NB_OK;
}

/* Replace every U+2581 (e2 96 81) by a space, in place. */
static void unescape_spaces(char *s) {
    char *w = s;
    for (char *r = s; *r;) {
        if ((unsigned char)r[0] == 0xe2 && (unsigned char)r[1] == 0x96 && (unsigned char)r[2] == 0x81) {
            *w++ = ' ';
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
}

/* convert_hf_to_gguf.py's does_token_look_special. */
static bool looks_special(const char *t) {
    static const char *const exact[] = {"<pad>", "<mask>", "<2mass>", "[@BOS@]"};
    for (size_t i = 0; i < 4; i++)
        if (strcmp(t, exact[i]) == 0) return true;
    if (nb_str_starts_with(t, "<|") && nb_str_ends_with(t, "|>")) return true;
    if (nb_str_starts_with(t, "<\xEF\xBD\x9C") && nb_str_ends_with(t, "\xEF\xBD\x9C>")) return true;
    return nb_str_starts_with(t, "<unused") && nb_str_ends_with(t, ">");
}

/* An added token typed as the converter types it: CONTROL when special or
 * looking special, else USER_DEFINED with U+2581 pre-normalised to spaces. */
static nb_status set_added(vocab *v, uint32_t id, const char *content, bool special, float score, nb_ctx *ctx) {
    NB_TRY(vocab_set(v, id, content, ctx));
    if (special || looks_special(content)) {
        v->type[id] = NB_TT_CONTROL;
    } else {
        unescape_spaces(v->text[id]);
        v->type[id] = NB_TT_USER_DEFINED;
    }
    if (v->has_scores) v->score[id] = score;
    return NB_OK;
}

/* text -> id over a vocab (open addressing; slot = id + 1, 0 empty; the first id wins) */
typedef struct tmap {
    uint32_t *slot;
    size_t mask;
} tmap;

static uint64_t text_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 31);
}

static nb_status tmap_build(tmap *m, const vocab *v, const char *what, nb_ctx *ctx) {
    size_t cap = 16;
    while (cap < (size_t)v->n * 2) cap *= 2;
    m->mask = cap - 1;
    m->slot = calloc(cap, sizeof *m->slot);
    if (!m->slot) return nb_err(ctx, NB_ERR_NOMEM, "%s: out of memory (token index)", what);
    for (uint32_t id = 0; id < v->n; id++) {
        if (!v->text[id]) continue;
        size_t n = strlen(v->text[id]);
        size_t i = (size_t)text_hash(v->text[id], n) & m->mask;
        while (m->slot[i]) {
            const char *t = v->text[m->slot[i] - 1];
            if (strlen(t) == n && memcmp(t, v->text[id], n) == 0) break; /* repeated text: the first id */
            i = (i + 1) & m->mask;
        }
        if (!m->slot[i]) m->slot[i] = id + 1;
    }
    return NB_OK;
}

static int32_t tmap_find(const tmap *m, const vocab *v, const char *s, size_t n) {
    for (size_t i = (size_t)text_hash(s, n) & m->mask; m->slot[i]; i = (i + 1) & m->mask) {
        const char *t = v->text[m->slot[i] - 1];
        if (strlen(t) == n && memcmp(t, s, n) == 0) return (int32_t)(m->slot[i] - 1);
    }
    return -1;
}

static void tmap_free(tmap *m) {
    free(m->slot);
    m->slot = NULL;
}

/* ---- special tokens (gguf-py SpecialVocab) ---------------------------------------------- */

enum { SV_BOS, SV_EOS, SV_UNK, SV_SEP, SV_PAD, SV_CLS, SV_MASK, SV_N };
static const char *const k_sv_names[SV_N] = {"bos", "eos", "unk", "sep", "pad", "cls", "mask"};
static const char *const k_sv_keys[SV_N] = {
    "tokenizer.ggml.bos_token_id",       "tokenizer.ggml.eos_token_id",     "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.cls_token_id",
    "tokenizer.ggml.mask_token_id"};
/* add_<typ>_token flags gguf-py can write */
static const char *const k_add_keys[SV_N] = {"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", NULL,
                                            "tokenizer.ggml.add_sep_token", NULL, NULL, NULL};

typedef struct special_vocab {
    int64_t id[SV_N]; /* -1 unset */
    int order[SV_N], n_order;
    int add[SV_N]; /* -1 unset, 0, 1 */
    int add_order[SV_N], n_add_order;
} special_vocab;

static void sv_set(special_vocab *sv, int typ, int64_t id, uint32_t n_vocab) {
    if (id < 0 || sv->id[typ] >= 0) return;
    if (n_vocab && id >= n_vocab) return; /* gguf-py: out of range, skipped with a warning */
    sv->id[typ] = id;
    sv->order[sv->n_order++] = typ;
}

static void sv_add(special_vocab *sv, int typ, bool v) {
    if (sv->add[typ] < 0) sv->add_order[sv->n_add_order++] = typ;
    sv->add[typ] = v;
}

/* Content of a tokenizer_config.json "<typ>_token" entry (a string or {"content": ...}). */
static const char *token_content(const cJSON *it) {
    if (cJSON_IsString(it)) return it->valuestring;
    if (cJSON_IsObject(it)) return jstr(it, "content");
    return NULL;
}

static int64_t added_id_of(const cJSON *added, const char *content) {
    const cJSON *a;
    cJSON_ArrayForEach(a, added) {
        const char *c = jstr(a, "content");
        if (c && strcmp(c, content) == 0) return jint(jget(a, "id"));
    }
    return -1;
}

/* SpecialVocab._try_load_from_tokenizer_json's TemplateProcessing reading (simple templates). */
static void sv_post_processor(special_vocab *sv, const cJSON *tok, const char *bos, const char *eos,
                              const char *cls, const char *sep, bool have_cfg) {
    const cJSON *pp = jget(tok, "post_processor");
    if (!cJSON_IsObject(pp)) return;
    const cJSON *list = jget(pp, "processors");
    const cJSON *one = pp;
    int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : 1;
    for (int k = 0; k < n; k++) {
        const cJSON *p = cJSON_IsArray(list) ? cJSON_GetArrayItem(list, k) : one;
        const char *type = jstr(p, "type");
        if (!type) continue;
        if (strcmp(type, "RobertaProcessing") == 0) {
            sv_add(sv, SV_BOS, true);
            sv_add(sv, SV_EOS, true);
            sv_add(sv, SV_SEP, true);
            continue;
        }
        if (strcmp(type, "TemplateProcessing") != 0) continue;
        const cJSON *single = jget(p, "single"), *pair = jget(p, "pair");
        int ns = cJSON_IsArray(single) ? cJSON_GetArraySize(single) : 0;
        const char *first = NULL, *last = NULL;
        if (ns > 1) {
            first = jstr(jget(cJSON_GetArrayItem(single, 0), "SpecialToken"), "id");
            if (first) {
                if (!have_cfg) bos = first;
                sv_add(sv, SV_BOS, (bos && !strcmp(first, bos)) || (cls && !strcmp(first, cls)));
            }
            last = jstr(jget(cJSON_GetArrayItem(single, ns - 1), "SpecialToken"), "id");
            if (last) {
                if (!have_cfg) eos = last;
                sv_add(sv, SV_EOS, eos && !strcmp(last, eos));
            }
        }
        int np = cJSON_IsArray(pair) ? cJSON_GetArraySize(pair) : 0;
        if (np == 0) continue;
        int start = 0, stop = np;
        if (first) {
            const char *f = jstr(jget(cJSON_GetArrayItem(pair, 0), "SpecialToken"), "id");
            if (f && !strcmp(f, first)) start = 1;
        }
        if (last) {
            const char *l = jstr(jget(cJSON_GetArrayItem(pair, np - 1), "SpecialToken"), "id");
            if (l && !strcmp(l, last)) stop = np - 1;
        }
        if (stop - start < 1) continue;
        const char *a = jstr(jget(cJSON_GetArrayItem(pair, start), "Sequence"), "id");
        const char *b = jstr(jget(cJSON_GetArrayItem(pair, stop - 1), "Sequence"), "id");
        if (!a || !b || strcmp(a, "A") || strcmp(b, "B") || stop - start < 3) continue;
        /* A [sep] [eos] B */
        bool add_sep = false;
        for (int m = start + 1; m < stop - 1 && m < start + 3; m++) {
            const char *e = jstr(jget(cJSON_GetArrayItem(pair, m), "SpecialToken"), "id");
            bool is = e && ((sep && !strcmp(e, sep)) || (eos && !strcmp(e, eos)));
            if (m == start + 1 ? (is && !last) : is) add_sep = true;
        }
        sv_add(sv, SV_SEP, add_sep);
    }
}

/* ---- the GGUF keys ------------------------------------------------------------------------ */

static nb_status set_str_array(nb_kvset *kv, const char *key, char **strs, uint64_t n, nb_ctx *ctx) {
    nb_str *a = nb_calloc(ctx, n ? n : 1, sizeof *a, "string array");
    if (!a) return NB_ERR_NOMEM;
    for (uint64_t i = 0; i < n; i++) {
        a[i].ptr = strs[i];
        a[i].len = strlen(strs[i]);
        strs[i] = NULL; /* ownership moves into the value */
    }
    nb_kv_value v = {.type = NB_KV_ARRAY};
    v.v.arr.elem = NB_KV_STRING;
    v.v.arr.n = n;
    v.v.arr.data = a;
    nb_status st = nb_kv_set_take(kv, key, &v, ctx);
    if (st != NB_OK) nb_kv_value_free(&v);
    return st;
}

/* Everything read, before it becomes keys. */
typedef struct hf_tok {
    const char *dir;
    uint32_t n_vocab; /* the model's vocab_size, 0 unknown */
    const char *arch;
    cJSON *tok, *cfg, *stmap, *mcfg, *gen; /* tokenizer.json, tokenizer_config.json,
                                                special_tokens_map.json, config.json, generation_config.json */
    char *tok_path, *cfg_path, *stmap_path, *mcfg_path, *gen_path, *spm_path;
    vocab v;
    char **merges;
    size_t n_merges;
    const char *model; /* "llama" / "gpt2" */
    const char *pre;
    char *pre_owned;
    bool spm_add_dummy_prefix, from_spm;
    int32_t spm_ids[4]; /* unk, bos, eos, pad from trainer_spec */
    nb_kvset out;
} hf_tok;

/* The vocabulary size: the model's, or one past the largest id seen. Ids at or
 * beyond the model's embedding rows are an error (llama.cpp's converter
 * asserts or drops them; either way the GGUF would not match its weights). */
static nb_status check_id(hf_tok *h, int64_t id, const char *file, const char *key, const char *tokname,
                          nb_ctx *ctx) {
    if (id < 0)
        return nb_err(ctx, NB_ERR_FORMAT, "%s: %s: token '%.80s' has no valid id", file, key, tokname);
    if (h->n_vocab && id >= h->n_vocab)
        return nb_err(ctx, NB_ERR_FORMAT,
                      "%s: %s: token '%.80s' has id %lld but the model's vocab_size (embedding rows) is %u", file,
                      key, tokname, (long long)id, h->n_vocab);
    return NB_OK;
}

/* An added token (added_tokens.json, added_tokens_decoder, tokenizer.json
 * added_tokens) at or beyond the model's vocab_size is left out with a
 * warning, as the converter does: Gemma 3's files add "<image_soft_token>"
 * at id 262144 of a 262144-row embedding. */
static bool added_beyond(const hf_tok *h, int64_t id, const char *file, const char *tokname, nb_ctx *ctx) {
    if (!h->n_vocab || id < h->n_vocab) return false;
    NB_WARN(ctx, "%s: added token '%.80s' has id %lld, beyond the model's vocab_size %u: left out", file, tokname,
            (long long)id, h->n_vocab);
    return true;
}

/* -- SentencePiece (tokenizer.model) -- */

static nb_status read_spm(hf_tok *h, nb_ctx *ctx) {
    char *buf;
    size_t n;
    NB_TRY(nb_read_file(h->spm_path, NB_HF_TOKENIZER_MAX_FILE, &buf, &n, ctx));
    nb_spm_model m;
    nb_status st = nb_spm_parse(buf, n, h->spm_path, &m, ctx);
    free(buf);
    NB_TRY(st);
    if (m.model_type != 1 && m.model_type != 2) {
        st = nb_err(ctx, NB_ERR_UNSUPPORTED,
                    "%s: trainer_spec.model_type %d is not supported (1 unigram or 2 bpe; 3 word and 4 char "
                    "have no llama.cpp tokenizer)", h->spm_path, m.model_type);
        goto done;
    }
    uint32_t nv = h->n_vocab ? h->n_vocab : (uint32_t)m.n;
    if (m.n > nv) {
        st = nb_err(ctx, NB_ERR_FORMAT,
                    "%s: pieces: %zu pieces but the model's vocab_size (embedding rows) is %u", h->spm_path, m.n, nv);
        goto done;
    }
    h->v.has_scores = true;
    NB_CHECK_GOTO(st, vocab_init(&h->v, nv, -10000.0f, NB_TT_UNUSED, ctx), done);
    for (size_t i = 0; i < m.n; i++) {
        int32_t t = m.pieces[i].type;
        /* _create_vocab_sentencepiece keeps unknown/control/unused/byte; user-defined pieces are NORMAL */
        h->v.type[i] = (t == NB_TT_UNKNOWN || t == NB_TT_CONTROL || t == NB_TT_UNUSED || t == NB_TT_BYTE)
                           ? t : NB_TT_NORMAL;
        h->v.score[i] = m.pieces[i].score;
        h->v.text[i] = m.pieces[i].text;
        m.pieces[i].text = NULL;
    }
    h->from_spm = true;
    h->spm_add_dummy_prefix = m.add_dummy_prefix;
    h->spm_ids[0] = m.unk_id, h->spm_ids[1] = m.bos_id, h->spm_ids[2] = m.eos_id, h->spm_ids[3] = m.pad_id;
    h->model = "llama";
    h->pre = "default";
done:
    nb_spm_model_free(&m);
    return st;
}

/* added_tokens.json and tokenizer_config.json's added_tokens_decoder over an SPM vocab. */
static nb_status spm_overrides(hf_tok *h, nb_ctx *ctx) {
    cJSON *at = NULL;
    char *at_path = NULL;
    nb_status st = load_json(h->dir, "added_tokens.json", &at, &at_path, ctx);
    if (st == NB_OK && at) {
        const cJSON *it;
        cJSON_ArrayForEach(it, at) {
            int64_t id = jint(it);
            if (id < 0) {
                st = nb_err(ctx, NB_ERR_FORMAT, "%s: '%.80s': id must be a non-negative integer", at_path, it->string);
                break;
            }
            if (id >= h->v.n) {
                if (!added_beyond(h, id, at_path, it->string, ctx))
                    NB_WARN(ctx, "%s: '%.80s': id %lld is beyond the %u pieces: left out", at_path, it->string,
                            (long long)id, h->v.n);
                continue;
            }
            if ((st = vocab_set(&h->v, (uint32_t)id, it->string, ctx)) != NB_OK) break;
            h->v.score[id] = -1000.0f;
            h->v.type[id] = NB_TT_USER_DEFINED;
        }
    }
    cJSON_Delete(at);
    free(at_path);
    NB_TRY(st);
    const cJSON *dec = jget(h->cfg, "added_tokens_decoder");
    if (!dec) return NB_OK;
    NB_RETURN_IF(ctx, !cJSON_IsObject(dec), NB_ERR_FORMAT, "%s: added_tokens_decoder: not an object", h->cfg_path);
    const cJSON *it;
    cJSON_ArrayForEach(it, dec) {
        char *end;
        long long id = strtoll(it->string, &end, 10);
        const char *content = jstr(it, "content");
        NB_RETURN_IF(ctx, !*it->string || *end || id < 0 || !content, NB_ERR_FORMAT,
                     "%s: added_tokens_decoder: entry '%.40s' needs an integer id and a 'content' string",
                     h->cfg_path, it->string);
        if (added_beyond(h, id, h->cfg_path, content, ctx)) continue;
        if (id >= h->v.n) {
            NB_WARN(ctx, "%s: added_tokens_decoder: id %lld is beyond the %u pieces: left out", h->cfg_path, id, h->v.n);
            continue;
        }
        NB_TRY(set_added(&h->v, (uint32_t)id, content, cJSON_IsTrue(jget(it, "special")), -1000.0f, ctx));
    }
    return NB_OK;
}

/* -- tokenizer.json -- */

/* Merges: "a b" strings as they are; ["a", "b"] pairs joined with a space,
 * spaces inside a part as U+0120 (gguf-py's rule for the pair form). */
static nb_status read_merges(hf_tok *h, const cJSON *merges, nb_ctx *ctx) {
    if (!merges) return NB_OK;
    NB_RETURN_IF(ctx, !cJSON_IsArray(merges), NB_ERR_FORMAT, "%s: model.merges: not an array", h->tok_path);
    size_t n = (size_t)cJSON_GetArraySize(merges);
    h->merges = nb_calloc(ctx, n ? n : 1, sizeof *h->merges, "merges");
    if (!h->merges) return NB_ERR_NOMEM;
    const cJSON *m;
    size_t k = 0;
    cJSON_ArrayForEach(m, merges) {
        if (cJSON_IsString(m)) {
            h->merges[k] = nb_strdup(ctx, m->valuestring);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
            const char *a = cJSON_GetArrayItem(m, 0)->valuestring, *b = cJSON_GetArrayItem(m, 1)->valuestring;
            size_t na = strlen(a), nb = strlen(b), sp = 0;
            for (const char *p = a; *p; p++) sp += *p == ' ';
            for (const char *p = b; *p; p++) sp += *p == ' ';
            char *s = nb_malloc(ctx, na + nb + 2 + sp, "merge");
            if (s) {
                char *w = s;
                for (int part = 0; part < 2; part++) {
                    for (const char *p = part ? b : a; *p; p++) {
                        if (*p == ' ') *w++ = (char)0xc4, *w++ = (char)0xa0;
                        else *w++ = *p;
                    }
                    if (!part) *w++ = ' ';
                }
                *w = '\0';
            }
            h->merges[k] = s;
        } else {
            h->n_merges = k;
            return nb_err(ctx, NB_ERR_FORMAT, "%s: model.merges[%zu]: neither an \"a b\" string nor an [\"a\", \"b\"] pair",
                          h->tok_path, k);
        }
        if (!h->merges[k]) {
            h->n_merges = k;
            return NB_ERR_NOMEM;
        }
        k++;
    }
    h->n_merges = k;
    return NB_OK;
}

/* Family of a tokenizer.json pre_tokenizer (byte-level BPE). */
static nb_hf_pre_family pre_family(const cJSON *pre) {
    if (!cJSON_IsObject(pre)) return NB_HF_PRE_UNKNOWN;
    const char *type = jstr(pre, "type");
    const cJSON *list = NULL;
    int n = 1;
    if (type && strcmp(type, "Sequence") == 0) {
        list = jget(pre, "pretokenizers");
        if (!cJSON_IsArray(list)) return NB_HF_PRE_UNKNOWN;
        n = cJSON_GetArraySize(list);
    }
    bool digits = false, bl = false, bl_regex = false;
    const char *split = NULL;
    for (int i = 0; i < n; i++) {
        const cJSON *p = list ? cJSON_GetArrayItem(list, i) : pre;
        const char *t = jstr(p, "type");
        if (!t) return NB_HF_PRE_UNKNOWN;
        if (strcmp(t, "Digits") == 0 && cJSON_IsTrue(jget(p, "individual_digits"))) {
            digits = true;
        } else if (strcmp(t, "ByteLevel") == 0) {
            bl = true;
            const cJSON *ur = jget(p, "use_regex");
            bl_regex = !ur || cJSON_IsTrue(ur);
            if (cJSON_IsTrue(jget(p, "add_prefix_space"))) return NB_HF_PRE_UNKNOWN;
        } else if (strcmp(t, "Split") == 0) {
            split = jstr(jget(p, "pattern"), "Regex");
            const char *beh = jstr(p, "behavior");
            if (!split || !beh || strcmp(beh, "Isolated") != 0 || cJSON_IsTrue(jget(p, "invert")))
                return NB_HF_PRE_UNKNOWN;
        } else {
            return NB_HF_PRE_UNKNOWN;
        }
    }
    if (!bl) return NB_HF_PRE_UNKNOWN;
    if (split && !bl_regex && !digits) {
        if (strcmp(split, k_llama3_re) == 0) return NB_HF_PRE_LLAMA3;
        if (strcmp(split, k_qwen2_re) == 0) return NB_HF_PRE_QWEN2;
        return NB_HF_PRE_UNKNOWN;
    }
    if (!split && bl_regex) return digits ? NB_HF_PRE_STARCODER : NB_HF_PRE_GPT2;
    return NB_HF_PRE_UNKNOWN;
}

static nb_status read_tokenizer_json(hf_tok *h, nb_ctx *ctx) {
    const cJSON *model = jget(h->tok, "model");
    NB_RETURN_IF(ctx, !cJSON_IsObject(model), NB_ERR_FORMAT, "%s: model: missing or not an object", h->tok_path);
    const char *type = jstr(model, "type");
    const cJSON *jvocab = jget(model, "vocab");
    if (!type && cJSON_IsObject(jvocab) && jget(model, "merges")) type = "BPE"; /* old files omit it */
    NB_RETURN_IF(ctx, !type, NB_ERR_FORMAT, "%s: model.type: missing", h->tok_path);
    NB_RETURN_IF(ctx, strcmp(type, "BPE") != 0, NB_ERR_UNSUPPORTED,
                 "%s: model.type '%.40s' is not supported (BPE; SentencePiece models through tokenizer.model)",
                 h->tok_path, type);
    NB_RETURN_IF(ctx, !cJSON_IsObject(jvocab), NB_ERR_FORMAT, "%s: model.vocab: missing or not an object", h->tok_path);
    const cJSON *added = jget(h->tok, "added_tokens");
    NB_RETURN_IF(ctx, added && !cJSON_IsArray(added), NB_ERR_FORMAT, "%s: added_tokens: not an array", h->tok_path);
    bool spm_style = cJSON_IsTrue(jget(model, "byte_fallback"));

    /* size: the model's, else one past the largest id */
    int64_t max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, jvocab) {
        int64_t id = jint(it);
        NB_TRY(check_id(h, id, h->tok_path, "model.vocab", it->string, ctx));
        if (id > max_id) max_id = id;
    }
    cJSON_ArrayForEach(it, added) {
        const char *c = jstr(it, "content");
        int64_t id = jint(jget(it, "id"));
        NB_RETURN_IF(ctx, !c, NB_ERR_FORMAT, "%s: added_tokens: an entry has no 'content' string", h->tok_path);
        NB_RETURN_IF(ctx, id < 0, NB_ERR_FORMAT, "%s: added_tokens: token '%.80s' has no valid id", h->tok_path, c);
        if (h->n_vocab && id >= h->n_vocab) continue; /* left out below, with a warning */
        if (id > max_id) max_id = id;
    }
    /* without the model's vocab_size, ids must be about as many as the entries:
     * a stray huge id would otherwise size the vocabulary */
    int64_t n_entries = cJSON_GetArraySize(jvocab) + (added ? cJSON_GetArraySize(added) : 0);
    NB_RETURN_IF(ctx, !h->n_vocab && max_id >= 2 * n_entries + 1024, NB_ERR_FORMAT,
                 "%s: model.vocab: id %lld for %lld tokens (ids must be dense)", h->tok_path, (long long)max_id,
                 (long long)n_entries);
    uint32_t nv = h->n_vocab ? h->n_vocab : (uint32_t)(max_id + 1);
    NB_RETURN_IF(ctx, nv == 0, NB_ERR_FORMAT, "%s: model.vocab: empty", h->tok_path);
    h->v.has_scores = spm_style;
    NB_TRY(vocab_init(&h->v, nv, spm_style ? -1000.0f : 0.0f, NB_TT_UNUSED, ctx));
    cJSON_ArrayForEach(it, jvocab) {
        uint32_t id = (uint32_t)jint(it);
        NB_TRY(vocab_set(&h->v, id, it->string, ctx));
        h->v.type[id] = NB_TT_NORMAL;
    }
    NB_TRY(read_merges(h, jget(model, "merges"), ctx));
    if (spm_style) {
        /* SentencePiece-style BPE: the engine's "llama" tokenizer picks the merge
         * whose result has the highest score, HF's BPE the lowest merge rank, so a
         * merge result scores -(rank + 1); single code points 0; byte pieces BYTE. */
        h->model = "llama";
        h->pre = "default";
        for (uint32_t i = 0; i < nv; i++) {
            const char *t = h->v.text[i];
            if (!t) continue;
            size_t n = strlen(t);
            if (n == 6 && t[0] == '<' && t[1] == '0' && t[2] == 'x' && t[5] == '>') {
                h->v.type[i] = NB_TT_BYTE;
                h->v.score[i] = 0;
            } else {
                size_t cl = (unsigned char)t[0] < 0x80 ? 1 : (unsigned char)t[0] < 0xe0 ? 2 : (unsigned char)t[0] < 0xf0 ? 3 : 4;
                h->v.score[i] = n <= cl ? 0.0f : -1e9f;
            }
        }
        tmap map;
        NB_TRY(tmap_build(&map, &h->v, h->tok_path, ctx));
        for (size_t r = h->n_merges; r-- > 0;) {
            const char *m = h->merges[r];
            const char *sp = strchr(m, ' ');
            if (!sp) continue;
            size_t la = (size_t)(sp - m);
            char *joined = nb_malloc(ctx, strlen(m), "merge");
            if (!joined) {
                tmap_free(&map);
                return NB_ERR_NOMEM;
            }
            memcpy(joined, m, la);
            strcpy(joined + la, sp + 1);
            int32_t id = tmap_find(&map, &h->v, joined, strlen(joined));
            free(joined);
            if (id >= 0 && h->v.type[id] == NB_TT_NORMAL) h->v.score[id] = -(float)(r + 1);
        }
        tmap_free(&map);
        for (size_t r = 0; r < h->n_merges; r++) free(h->merges[r]);
        free(h->merges);
        h->merges = NULL;
        h->n_merges = 0;
        const char *unk = jstr(model, "unk_token");
        if (unk) {
            int64_t id = jint(jget(jvocab, unk));
            if (id >= 0) h->v.type[id] = NB_TT_UNKNOWN;
        }
    } else {
        h->model = "gpt2";
        nb_hf_pre_family fam = pre_family(jget(h->tok, "pre_tokenizer"));
        NB_RETURN_IF(ctx, fam == NB_HF_PRE_UNKNOWN, NB_ERR_UNSUPPORTED,
                     "%s: pre_tokenizer: not one of the byte-level BPE pre-tokenizers nibble implements (GPT-2 "
                     "ByteLevel, Digits + ByteLevel, the llama3 or qwen2 Split regex + ByteLevel)", h->tok_path);
        h->pre = nb_hf_pre_default_name(fam);
    }
    /* added tokens (tokenizer.json, then tokenizer_config.json's decoder for ids it lacks) */
    cJSON_ArrayForEach(it, added) {
        int64_t id = jint(jget(it, "id"));
        if (added_beyond(h, id, h->tok_path, jstr(it, "content"), ctx)) continue;
        NB_TRY(set_added(&h->v, (uint32_t)id, jstr(it, "content"), cJSON_IsTrue(jget(it, "special")), -1000.0f, ctx));
    }
    const cJSON *dec = jget(h->cfg, "added_tokens_decoder");
    if (cJSON_IsObject(dec)) {
        cJSON_ArrayForEach(it, dec) {
            char *end;
            long long id = strtoll(it->string, &end, 10);
            const char *content = jstr(it, "content");
            if (!*it->string || *end || id < 0 || !content) continue;
            if (added_id_of(added, content) == id) continue;
            if (added_beyond(h, id, h->cfg_path, content, ctx)) continue;
            if (id >= h->v.n) {
                NB_WARN(ctx, "%s: added_tokens_decoder: id %lld is beyond tokenizer.json's %u tokens: left out",
                        h->cfg_path, id, h->v.n);
                continue;
            }
            NB_TRY(set_added(&h->v, (uint32_t)id, content, cJSON_IsTrue(jget(it, "special")), -1000.0f, ctx));
        }
    }
    return NB_OK;
}

/* SentencePiece-style tokenizer.json: does it prepend U+2581 to the text (a
 * Prepend normalizer, or a Metaspace pre-tokenizer that prepends)? That is
 * SentencePiece's add_dummy_prefix, GGUF's add_space_prefix. */
static bool json_prepends(const cJSON *tok) {
    const cJSON *parts[2] = {jget(tok, "normalizer"), jget(tok, "pre_tokenizer")};
    for (int k = 0; k < 2; k++) {
        const cJSON *p = parts[k];
        const cJSON *list = jget(p, k ? "pretokenizers" : "normalizers");
        int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : 1;
        for (int i = 0; i < n; i++) {
            const cJSON *e = cJSON_IsArray(list) ? cJSON_GetArrayItem(list, i) : p;
            const char *type = jstr(e, "type");
            if (!type) continue;
            if (!k && strcmp(type, "Prepend") == 0) return true;
            if (k && strcmp(type, "Metaspace") == 0) {
                const char *scheme = jstr(e, "prepend_scheme");
                if (scheme ? strcmp(scheme, "never") != 0 : cJSON_IsTrue(jget(e, "add_prefix_space"))) return true;
            }
        }
    }
    return false;
}

/* ---- pre-tokenizer name by llama.cpp's check-text hash ---------------------------------- */

/* Ids of a TemplateProcessing "single" special token (its special_tokens entry). */
static void template_ids(const cJSON *pp, const cJSON *el, int32_t *ids, size_t *n, size_t cap) {
    const char *name = jstr(jget(el, "SpecialToken"), "id");
    if (!name) return;
    const cJSON *st = jget(jget(pp, "special_tokens"), name);
    const cJSON *arr = jget(st, "ids"), *x;
    cJSON_ArrayForEach(x, arr) {
        int64_t id = jint(x);
        if (id >= 0 && *n < cap) ids[(*n)++] = (int32_t)id;
    }
}

static nb_status name_pre(hf_tok *h, nb_ctx *ctx) {
    nb_hf_pre_family fam = nb_hf_pre_family_of(h->pre);
    nb_tokenizer *t = NULL;
    /* quiet: this build is a probe; its warnings would repeat later ones */
    nb_log_level lvl = ctx ? ctx->log_level : NB_LOG_ERROR;
    if (ctx) ctx->log_level = NB_LOG_ERROR;
    nb_status st = nb_tokenizer_create(&h->out, &t, ctx);
    if (ctx) ctx->log_level = lvl;
    if (st == NB_ERR_NOMEM) return st;
    if (st != NB_OK) {
        NB_WARN(ctx, "%s: the vocabulary does not make a tokenizer (%s); pre-tokenizer named '%s' by its structure",
                h->tok_path, nb_errmsg(ctx), h->pre);
        nb_err_clear(ctx);
        return NB_OK;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    st = nb_tokenize(t, k_chktxt, sizeof k_chktxt - 1, false, &ids, &n, ctx);
    nb_tokenizer_free(t);
    NB_TRY(st);
    /* tokenizer.encode(chktxt) adds the post-processor's special tokens */
    int32_t pre_ids[8], post_ids[8];
    size_t npre = 0, npost = 0;
    const cJSON *pp = jget(h->tok, "post_processor");
    const cJSON *procs = jget(pp, "processors");
    int np = cJSON_IsArray(procs) ? cJSON_GetArraySize(procs) : 1;
    for (int k = 0; k < np; k++) {
        const cJSON *p = cJSON_IsArray(procs) ? cJSON_GetArrayItem(procs, k) : pp;
        const char *type = jstr(p, "type");
        if (!type || strcmp(type, "TemplateProcessing") != 0) continue;
        const cJSON *single = jget(p, "single"), *el;
        bool seen_seq = false;
        cJSON_ArrayForEach(el, single) {
            if (jget(el, "Sequence")) seen_seq = true;
            else if (seen_seq) template_ids(p, el, post_ids, &npost, 8);
            else template_ids(p, el, pre_ids, &npre, 8);
        }
    }
    nb_sha256 sh;
    nb_sha256_init(&sh);
    nb_sha256_update(&sh, "[", 1);
    char num[16];
    size_t total = npre + n + npost;
    for (size_t i = 0; i < total; i++) {
        int32_t id = i < npre ? pre_ids[i] : i < npre + n ? ids[i - npre] : post_ids[i - npre - n];
        int k = snprintf(num, sizeof num, i ? ", %d" : "%d", (int)id);
        nb_sha256_update(&sh, num, (size_t)k);
    }
    nb_sha256_update(&sh, "]", 1);
    free(ids);
    unsigned char dg[32];
    char hex[65];
    nb_sha256_final(&sh, dg);
    nb_sha256_hex(dg, hex);
    const char *name = NULL;
    for (size_t i = 0; i < sizeof k_pre_hashes / sizeof k_pre_hashes[0]; i++)
        if (k_pre_hashes[i].fam == fam && strcmp(k_pre_hashes[i].sha, hex) == 0) name = k_pre_hashes[i].name;
    if (!name) {
        /* not a tokenizer llama.cpp's table knows: a name nibble wrote itself, else the family's */
        const char *hint = jstr(h->cfg, "gguf_pre_tokenizer");
        if (hint && nb_hf_pre_family_of(hint) == fam) {
            name = hint;
        } else {
            NB_WARN(ctx, "%s: pre-tokenizer check hash %.16s... is not in llama.cpp's table; naming it '%s' "
                         "by its structure", h->tok_path, hex, h->pre);
            return NB_OK;
        }
    }
    h->pre = name;
    return nb_kv_set_str(&h->out, "tokenizer.ggml.pre", name, ctx);
}

/* ---- assembling ---------------------------------------------------------------------------- */

static nb_status special_tokens(hf_tok *h, special_vocab *sv, nb_ctx *ctx) {
    memset(sv, 0, sizeof *sv);
    for (int i = 0; i < SV_N; i++) sv->id[i] = -1, sv->add[i] = -1;
    const cJSON *added = jget(h->tok, "added_tokens");
    const char *tc[SV_N];
    for (int i = 0; i < SV_N; i++) {
        char key[32];
        snprintf(key, sizeof key, "%s_token", k_sv_names[i]);
        tc[i] = token_content(jget(h->cfg, key));
    }
    const char *bos = tc[SV_BOS], *eos = tc[SV_EOS], *cls = tc[SV_CLS], *sep = tc[SV_SEP];
    if (!bos && cls && h->cfg) bos = cls;
    if (!eos && sep && h->cfg) eos = sep;
    if (h->tok) sv_post_processor(sv, h->tok, bos, eos, cls, sep, h->cfg != NULL);
    if (h->cfg) {
        for (int i = 0; i < SV_N; i++) {
            char key[32];
            snprintf(key, sizeof key, "add_%s_token", k_sv_names[i]);
            const cJSON *a = jget(h->cfg, key);
            if (cJSON_IsBool(a)) sv_add(sv, i, cJSON_IsTrue(a));
            const char *c = i == SV_BOS ? bos : i == SV_EOS ? eos : tc[i];
            if (c && added) sv_set(sv, i, added_id_of(added, c), h->n_vocab);
        }
    }
    /* config.json <typ>_token_id (top level, else text_config) */
    for (int i = 0; i < SV_N; i++) {
        char key[32];
        snprintf(key, sizeof key, "%s_token_id", k_sv_names[i]);
        const cJSON *x = jget(h->mcfg, key);
        if (!x || cJSON_IsNull(x)) x = jget(jget(h->mcfg, "text_config"), key);
        sv_set(sv, i, jint(x), h->n_vocab);
    }
    /* beyond gguf-py: special_tokens_map.json, tokenizer_config's decoder (no
     * tokenizer.json), generation_config.json and the SentencePiece trainer ids
     * fill what is still unset */
    for (int i = 0; i < SV_N; i++) {
        if (sv->id[i] >= 0) continue;
        char key[32];
        snprintf(key, sizeof key, "%s_token", k_sv_names[i]);
        const char *c = tc[i] ? tc[i] : token_content(jget(h->stmap, key));
        if (c && added) sv_set(sv, i, added_id_of(added, c), h->n_vocab);
        if (c && sv->id[i] < 0)
            for (uint32_t id = 0; id < h->v.n && sv->id[i] < 0; id++)
                if (h->v.text[id] && h->v.type[id] != NB_TT_NORMAL && strcmp(h->v.text[id], c) == 0)
                    sv_set(sv, i, id, h->n_vocab);
        snprintf(key, sizeof key, "%s_token_id", k_sv_names[i]);
        const cJSON *g = jget(h->gen, key);
        if (cJSON_IsArray(g)) g = cJSON_GetArrayItem(g, 0);
        sv_set(sv, i, jint(g), h->n_vocab);
    }
    if (h->from_spm) {
        static const int map[4] = {SV_UNK, SV_BOS, SV_EOS, SV_PAD};
        for (int k = 0; k < 4; k++)
            if (h->spm_ids[k] >= 0 && (uint32_t)h->spm_ids[k] < h->v.n) sv_set(sv, map[k], h->spm_ids[k], h->n_vocab);
    }
    (void)ctx;
    return NB_OK;
}

static nb_status chat_template(hf_tok *h, nb_ctx *ctx) {
    const cJSON *ct = jget(h->cfg, "chat_template");
    if (cJSON_IsString(ct)) return nb_kv_set_str(&h->out, "tokenizer.chat_template", ct->valuestring, ctx);
    if (cJSON_IsArray(ct)) { /* [{"name": ..., "template": ...}]: the default one */
        const cJSON *e;
        cJSON_ArrayForEach(e, ct) {
            const char *nm = jstr(e, "name"), *tp = jstr(e, "template");
            if (nm && tp && strcmp(nm, "default") == 0)
                return nb_kv_set_str(&h->out, "tokenizer.chat_template", tp, ctx);
        }
        return NB_OK;
    }
    if (!h->cfg) return NB_OK;
    char *p = nb_path_join(ctx, h->dir, "chat_template.jinja");
    if (!p) return NB_ERR_NOMEM;
    nb_status st = NB_OK;
    if (is_file(p)) {
        char *buf;
        size_t n;
        st = nb_read_file(p, NB_HF_TOKENIZER_MAX_FILE, &buf, &n, ctx);
        if (st == NB_OK) {
            size_t bad;
            if (!nb_utf8_valid((const unsigned char *)buf, n, &bad) || memchr(buf, 0, n))
                st = nb_err(ctx, NB_ERR_FORMAT, "%s: not valid UTF-8 text (byte %zu)", p, bad);
            else
                st = nb_kv_set_str(&h->out, "tokenizer.chat_template", buf, ctx);
            free(buf);
        }
    }
    free(p);
    return st;
}

static nb_status assemble(hf_tok *h, nb_ctx *ctx) {
    nb_kvset *o = &h->out;
    NB_TRY(nb_kv_set_str(o, "tokenizer.ggml.model", h->model, ctx));
    NB_TRY(nb_kv_set_str(o, "tokenizer.ggml.pre", h->pre, ctx));
    vocab *v = &h->v;
    for (uint32_t i = 0; i < v->n; i++) {
        if (v->text[i]) continue;
        char pad[32];
        snprintf(pad, sizeof pad, "[PAD%u]", i);
        NB_TRY(vocab_set(v, i, pad, ctx));
        v->type[i] = NB_TT_UNUSED;
    }
    NB_TRY(set_str_array(o, "tokenizer.ggml.tokens", v->text, v->n, ctx));
    if (v->has_scores) NB_TRY(nb_kv_set_arr(o, "tokenizer.ggml.scores", NB_KV_F32, v->n, v->score, ctx));
    NB_TRY(nb_kv_set_arr(o, "tokenizer.ggml.token_type", NB_KV_I32, v->n, v->type, ctx));
    if (h->merges) {
        NB_TRY(set_str_array(o, "tokenizer.ggml.merges", h->merges, h->n_merges, ctx));
        for (size_t i = 0; i < h->n_merges; i++) free(h->merges[i]);
        free(h->merges);
        h->merges = NULL;
    }
    special_vocab sv;
    NB_TRY(special_tokens(h, &sv, ctx));
    for (int k = 0; k < sv.n_order; k++)
        NB_TRY(nb_kv_set_u32(o, k_sv_keys[sv.order[k]], (uint32_t)sv.id[sv.order[k]], ctx));
    for (int k = 0; k < sv.n_add_order; k++) {
        int typ = sv.add_order[k];
        if (k_add_keys[typ]) NB_TRY(nb_kv_set_bool(o, k_add_keys[typ], sv.add[typ] == 1, ctx));
    }
    NB_TRY(chat_template(h, ctx));
    /* the converter's per-architecture rules */
    const cJSON *aps = jget(h->cfg, "add_prefix_space");
    if (h->arch && strcmp(h->arch, "gemma3") == 0 && h->from_spm) {
        NB_TRY(nb_kv_set_bool(o, "tokenizer.ggml.add_space_prefix", false, ctx));
    } else if (h->arch && strcmp(h->arch, "llama") == 0) {
        if (cJSON_IsBool(aps)) NB_TRY(nb_kv_set_bool(o, "tokenizer.ggml.add_space_prefix", cJSON_IsTrue(aps), ctx));
        if (h->n_vocab == 49152) NB_TRY(nb_kv_set_bool(o, "tokenizer.ggml.add_bos_token", false, ctx));
    } else if (h->from_spm && !h->spm_add_dummy_prefix) {
        /* not a converter rule: the SentencePiece model itself says no dummy prefix */
        NB_TRY(nb_kv_set_bool(o, "tokenizer.ggml.add_space_prefix", false, ctx));
    } else if (!h->from_spm && strcmp(h->model, "llama") == 0) {
        /* SentencePiece-style tokenizer.json: its normalizer / pre-tokenizer decide */
        NB_TRY(nb_kv_set_bool(o, "tokenizer.ggml.add_space_prefix", json_prepends(h->tok), ctx));
    }
    if (strcmp(h->model, "gpt2") == 0) NB_TRY(name_pre(h, ctx));
    return NB_OK;
}

nb_status nb_hf_tokenizer_read(const char *dir, uint32_t n_vocab, const char *arch, nb_kvset *kv, bool *found,
                               nb_ctx *ctx) {
    *found = false;
    hf_tok h;
    memset(&h, 0, sizeof h);
    h.dir = dir;
    h.n_vocab = n_vocab;
    h.arch = arch;
    nb_kvset_init(&h.out);
    nb_status st;
    h.spm_path = nb_path_join(ctx, dir, "tokenizer.model");
    if (!h.spm_path) return NB_ERR_NOMEM;
    NB_CHECK_GOTO(st, load_json(dir, "tokenizer.json", &h.tok, &h.tok_path, ctx), done);
    bool have_spm = is_file(h.spm_path);
    if (!h.tok && !have_spm) {
        st = NB_OK;
        goto done;
    }
    NB_CHECK_GOTO(st, load_json(dir, "tokenizer_config.json", &h.cfg, &h.cfg_path, ctx), done);
    NB_CHECK_GOTO(st, load_json(dir, "special_tokens_map.json", &h.stmap, &h.stmap_path, ctx), done);
    NB_CHECK_GOTO(st, load_json(dir, "config.json", &h.mcfg, &h.mcfg_path, ctx), done);
    NB_CHECK_GOTO(st, load_json(dir, "generation_config.json", &h.gen, &h.gen_path, ctx), done);
    if (have_spm) {
        NB_CHECK_GOTO(st, read_spm(&h, ctx), done);
        NB_CHECK_GOTO(st, spm_overrides(&h, ctx), done);
    } else {
        NB_CHECK_GOTO(st, read_tokenizer_json(&h, ctx), done);
    }
    NB_CHECK_GOTO(st, assemble(&h, ctx), done);
    NB_CHECK_GOTO(st, nb_kvset_copy(kv, &h.out, ctx), done);
    *found = true;
done:
    cJSON_Delete(h.tok);
    cJSON_Delete(h.cfg);
    cJSON_Delete(h.stmap);
    cJSON_Delete(h.mcfg);
    cJSON_Delete(h.gen);
    free(h.tok_path);
    free(h.cfg_path);
    free(h.stmap_path);
    free(h.mcfg_path);
    free(h.gen_path);
    free(h.spm_path);
    if (h.merges)
        for (size_t i = 0; i < h.n_merges; i++) free(h.merges[i]);
    free(h.merges);
    vocab_free(&h.v);
    nb_kvset_free(&h.out);
    return st;
}
