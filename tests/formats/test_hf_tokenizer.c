/* tests/formats/test_hf_tokenizer.c — Hugging Face tokenizer files <-> GGUF keys
 * (formats/hf_tokenizer.h):
 * - the SentencePiece protobuf codec: round trip, and every truncation of a
 *   model fails cleanly;
 * - hand-made directories: tokenizer.model + tokenizer_config.json (the
 *   converter's typing rules: [PAD] fill, added_tokens_decoder CONTROL /
 *   USER_DEFINED with U+2581 -> space, score -1000), a byte-level BPE
 *   tokenizer.json (pair-form merges with spaces, added tokens, special ids
 *   through tokenizer_config.json, the post-processor's add_bos), a
 *   SentencePiece-style tokenizer.json (scores from merge ranks);
 * - bad input: ids beyond vocab_size, unknown model types, malformed JSON and
 *   protobuf: one message naming the file and key, kv untouched;
 * - GGUF -> HF -> GGUF keeps every tokenizer array identical (hand-made and,
 *   when cached, the real Gemma 3 and SmolLM2 vocabularies);
 * - real data (skipped with a reason when not fetched): the EmbeddingGemma-300M
 *   directory's tokenizer.model import equals the Gemma 3 270M GGUF's arrays,
 *   its tokenizer.json import the GGUF's tokens and types; a SmolLM2 HF
 *   tokenizer directory equals the SmolLM2 GGUF's arrays and pre "smollm";
 *   token ids of the imported tokenizers equal those recorded from HF
 *   `tokenizers` (tests/data/tokenizer/hf/hf_ids.json).
 */
#include "engine/tokenizer.h"
#include "formats/hf_tokenizer.h"
#include "formats/hf_tokenizer_impl.h"
#include "formats/readers.h"
#include "formats/model.h"
#include "core/sha256.h"
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *mkdir_t(const char *name) {
    const char *p = nbt_path(name);
    mkdir(p, 0755);
    return p;
}

static void put(const char *dir, const char *file, const char *text) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    nbt_write_file(p, text, strlen(text));
}

static const nb_str *strs(const nb_kvset *kv, const char *key, uint64_t *n) {
    const nb_kv_value *v = nb_kv_get(kv, key);
    ck_assert_msg(v && v->type == NB_KV_ARRAY && v->v.arr.elem == NB_KV_STRING, "%s missing", key);
    *n = v->v.arr.n;
    return v->v.arr.data;
}

static const void *arr(const nb_kvset *kv, const char *key, nb_kv_type elem, uint64_t *n) {
    const nb_kv_value *v = nb_kv_get(kv, key);
    ck_assert_msg(v && v->type == NB_KV_ARRAY && v->v.arr.elem == elem, "%s missing", key);
    *n = v->v.arr.n;
    return v->v.arr.data;
}

static uint64_t u64(const nb_kvset *kv, const char *key) {
    uint64_t u;
    ck_assert_msg(nb_kv_get_u64(kv, key, &u), "%s missing", key);
    return u;
}

/* ---- protobuf -------------------------------------------------------------------------- */

static void small_spm(nb_spm_model *m, nb_spm_piece *pc) {
    static char t0[] = "<unk>", t1[] = "<s>", t2[] = "</s>", t3[] = "<0x41>", t4[] = "\xE2\x96\x81the", t5[] = "a",
                t6[] = "<mask>", t7[] = "\xE2\x96\x81\xE2\x96\x81";
    char *t[8] = {t0, t1, t2, t3, t4, t5, t6, t7};
    int32_t ty[8] = {NB_TT_UNKNOWN, NB_TT_CONTROL, NB_TT_CONTROL, NB_TT_BYTE, NB_TT_NORMAL, NB_TT_NORMAL,
                     NB_TT_USER_DEFINED, NB_TT_USER_DEFINED};
    for (int i = 0; i < 8; i++) pc[i] = (nb_spm_piece){t[i], -0.5f * (float)i, ty[i]};
    memset(m, 0, sizeof *m);
    m->pieces = pc;
    m->n = 8;
    m->model_type = 2;
    m->unk_id = 0, m->bos_id = 1, m->eos_id = 2, m->pad_id = -1;
    m->byte_fallback = true;
    m->add_dummy_prefix = false;
}

START_TEST(test_protobuf) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_spm_piece pc[8];
    nb_spm_model m, r;
    small_spm(&m, pc);
    unsigned char *buf;
    size_t n;
    ck_assert_int_eq(nb_spm_serialize(&m, &buf, &n, &ctx), NB_OK);
    ck_assert_int_eq(nb_spm_parse(buf, n, "t.model", &r, &ctx), NB_OK);
    ck_assert_uint_eq(r.n, 8);
    for (int i = 0; i < 8; i++) {
        ck_assert_str_eq(r.pieces[i].text, pc[i].text);
        ck_assert(r.pieces[i].score == pc[i].score);
        ck_assert_int_eq(r.pieces[i].type, pc[i].type);
    }
    ck_assert_int_eq(r.model_type, 2);
    ck_assert_int_eq(r.pad_id, -1);
    ck_assert_int_eq(r.eos_id, 2);
    ck_assert(r.byte_fallback && !r.add_dummy_prefix);
    nb_spm_model_free(&r);
    /* every strict prefix: either a clean error or (at a field boundary) fewer pieces, never a crash */
    for (size_t k = 0; k < n; k++) {
        nb_status st = nb_spm_parse(buf, k, "t.model", &r, &ctx);
        if (st == NB_OK) {
            ck_assert_uint_le(r.n, 8);
            nb_spm_model_free(&r);
        } else {
            ck_assert_msg(strstr(nb_errmsg(&ctx), "t.model"), "%s", nb_errmsg(&ctx));
        }
    }
    /* a group wire type is refused */
    unsigned char grp[] = {0x0b, 0x0c};
    ck_assert_int_eq(nb_spm_parse(grp, 2, "t.model", &r, &ctx), NB_ERR_FORMAT);
    free(buf);
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- hand-made directories -------------------------------------------------------------- */

static void write_spm(const char *dir) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_spm_piece pc[8];
    nb_spm_model m;
    small_spm(&m, pc);
    unsigned char *buf;
    size_t n;
    ck_assert_int_eq(nb_spm_serialize(&m, &buf, &n, &ctx), NB_OK);
    char p[1024];
    snprintf(p, sizeof p, "%s/tokenizer.model", dir);
    nbt_write_file(p, buf, n);
    free(buf);
    nb_ctx_free(&ctx);
}

START_TEST(test_spm_dir) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *dir = mkdir_t("spm");
    write_spm(dir);
    put(dir, "tokenizer_config.json",
        "{\"add_bos_token\": true, \"add_eos_token\": false, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\","
        " \"chat_template\": \"{{ messages }}\", \"added_tokens_decoder\": {"
        " \"6\": {\"content\": \"<mask>\", \"special\": false},"
        " \"7\": {\"content\": \"\xE2\x96\x81\xE2\x96\x81\", \"special\": false},"
        " \"9\": {\"content\": \"<extra>\", \"special\": true}}}");
    nb_kvset kv;
    nb_kvset_init(&kv);
    bool found;
    ck_assert_msg(nb_hf_tokenizer_read(dir, 12, "gemma3", &kv, &found, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert(found);
    ck_assert_str_eq(nb_kv_get_str(&kv, "tokenizer.ggml.model"), "llama");
    ck_assert_str_eq(nb_kv_get_str(&kv, "tokenizer.ggml.pre"), "default");
    uint64_t n;
    const nb_str *t = strs(&kv, "tokenizer.ggml.tokens", &n);
    ck_assert_uint_eq(n, 12);
    const float *sc = arr(&kv, "tokenizer.ggml.scores", NB_KV_F32, &n);
    const int32_t *ty = arr(&kv, "tokenizer.ggml.token_type", NB_KV_I32, &n);
    ck_assert_str_eq(t[4].ptr, "\xE2\x96\x81the");
    ck_assert(sc[4] == -2.0f);
    ck_assert_int_eq(ty[0], NB_TT_UNKNOWN);
    ck_assert_int_eq(ty[1], NB_TT_CONTROL);
    ck_assert_int_eq(ty[3], NB_TT_BYTE);
    /* "<mask>" looks special: CONTROL though special is false; score -1000 */
    ck_assert_int_eq(ty[6], NB_TT_CONTROL);
    ck_assert(sc[6] == -1000.0f);
    /* user-defined U+2581 run stored with spaces */
    ck_assert_str_eq(t[7].ptr, "  ");
    ck_assert_int_eq(ty[7], NB_TT_USER_DEFINED);
    /* ids the model lacks: [PAD<id>], -10000, UNUSED; the decoder's id 9 fills one */
    ck_assert_str_eq(t[8].ptr, "[PAD8]");
    ck_assert(sc[8] == -10000.0f);
    ck_assert_int_eq(ty[8], NB_TT_UNUSED);
    ck_assert_str_eq(t[9].ptr, "<extra>");
    ck_assert_int_eq(ty[9], NB_TT_CONTROL);
    /* no tokenizer.json: BOS/EOS from the decoder's texts / trainer ids */
    ck_assert_uint_eq(u64(&kv, "tokenizer.ggml.bos_token_id"), 1);
    ck_assert_uint_eq(u64(&kv, "tokenizer.ggml.eos_token_id"), 2);
    ck_assert_uint_eq(u64(&kv, "tokenizer.ggml.unknown_token_id"), 0);
    bool b;
    ck_assert(nb_kv_get_bool(&kv, "tokenizer.ggml.add_bos_token", &b) && b);
    ck_assert(nb_kv_get_bool(&kv, "tokenizer.ggml.add_space_prefix", &b) && !b); /* gemma3 rule */
    ck_assert_str_eq(nb_kv_get_str(&kv, "tokenizer.chat_template"), "{{ messages }}");
    /* the engine builds a tokenizer from it */
    nb_tokenizer *tk;
    ck_assert_msg(nb_tokenizer_create(&kv, &tk, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    int32_t *ids;
    size_t nid;
    ck_assert_int_eq(nb_tokenize(tk, "a  a", 4, false, &ids, &nid, &ctx), NB_OK);
    ck_assert_uint_eq(nid, 3); /* the user-defined "  " splits the text */
    ck_assert_int_eq(ids[0], 5);
    ck_assert_int_eq(ids[1], 7);
    ck_assert_int_eq(ids[2], 5);
    free(ids);
    nb_tokenizer_free(tk);
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
}
END_TEST

/* A byte-level BPE over "a", "b", " " (as U+0120), "ab", " a"... */
static const char k_bpe_json[] =
    "{\"version\": \"1.0\", \"added_tokens\": ["
    "  {\"id\": 0, \"content\": \"<|endoftext|>\", \"special\": true},"
    "  {\"id\": 1, \"content\": \"<|im_start|>\", \"special\": true},"
    "  {\"id\": 9, \"content\": \"<tool>\", \"special\": false}],"
    " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
    "   {\"type\": \"Digits\", \"individual_digits\": true},"
    "   {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}]},"
    " \"post_processor\": {\"type\": \"TemplateProcessing\","
    "   \"single\": [{\"SpecialToken\": {\"id\": \"<|im_start|>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],"
    "   \"pair\": [], \"special_tokens\": {\"<|im_start|>\": {\"id\": \"<|im_start|>\", \"ids\": [1], \"tokens\": [\"<|im_start|>\"]}}},"
    " \"model\": {\"type\": \"BPE\", \"byte_fallback\": false, \"vocab\": {"
    "   \"<|endoftext|>\": 0, \"<|im_start|>\": 1, \"a\": 2, \"b\": 3, \"\xC4\xA0\": 4, \"ab\": 5,"
    "   \"\xC4\xA0" "a\": 6, \"\xC4\xA0" "ab\": 7, \"1\": 8},"
    "   \"merges\": [[\" \", \"a\"], [\"a\", \"b\"], \"\xC4\xA0" "a b\"]}}";

START_TEST(test_bpe_dir) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *dir = mkdir_t("bpe");
    put(dir, "tokenizer.json", k_bpe_json);
    put(dir, "tokenizer_config.json",
        "{\"bos_token\": \"<|im_start|>\", \"eos_token\": {\"content\": \"<|endoftext|>\"}, \"pad_token\": null}");
    put(dir, "config.json", "{\"pad_token_id\": 0}");
    nb_kvset kv;
    nb_kvset_init(&kv);
    bool found;
    ck_assert_msg(nb_hf_tokenizer_read(dir, 12, "qwen2", &kv, &found, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_str_eq(nb_kv_get_str(&kv, "tokenizer.ggml.model"), "gpt2");
    /* Digits + ByteLevel: the starcoder family; its check hash is no known model's */
    ck_assert_str_eq(nb_kv_get_str(&kv, "tokenizer.ggml.pre"), "starcoder");
    ck_assert(nb_kv_get(&kv, "tokenizer.ggml.scores") == NULL);
    uint64_t n, nm;
    const nb_str *t = strs(&kv, "tokenizer.ggml.tokens", &n);
    const int32_t *ty = arr(&kv, "tokenizer.ggml.token_type", NB_KV_I32, &n);
    const nb_str *m = strs(&kv, "tokenizer.ggml.merges", &nm);
    ck_assert_uint_eq(n, 12);
    ck_assert_uint_eq(nm, 3);
    ck_assert_str_eq(m[0].ptr, "\xC4\xA0 a"); /* a space inside a pair part becomes U+0120 */
    ck_assert_str_eq(m[1].ptr, "a b");
    ck_assert_str_eq(m[2].ptr, "\xC4\xA0" "a b");
    ck_assert_int_eq(ty[0], NB_TT_CONTROL);
    ck_assert_int_eq(ty[2], NB_TT_NORMAL);
    ck_assert_str_eq(t[9].ptr, "<tool>");
    ck_assert_int_eq(ty[9], NB_TT_USER_DEFINED);
    ck_assert_str_eq(t[10].ptr, "[PAD10]");
    ck_assert_int_eq(ty[10], NB_TT_UNUSED);
    ck_assert_uint_eq(u64(&kv, "tokenizer.ggml.bos_token_id"), 1);
    ck_assert_uint_eq(u64(&kv, "tokenizer.ggml.eos_token_id"), 0);
    ck_assert_uint_eq(u64(&kv, "tokenizer.ggml.padding_token_id"), 0);
    bool b;
    ck_assert(nb_kv_get_bool(&kv, "tokenizer.ggml.add_bos_token", &b) && b); /* the template's first token */
    nb_tokenizer *tk;
    ck_assert_msg(nb_tokenizer_create(&kv, &tk, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    int32_t *ids;
    size_t nid;
    ck_assert_int_eq(nb_tokenize(tk, "ab ab1", 6, false, &ids, &nid, &ctx), NB_OK);
    ck_assert_uint_eq(nid, 3);
    ck_assert_int_eq(ids[0], 5);
    ck_assert_int_eq(ids[1], 7);
    ck_assert_int_eq(ids[2], 8);
    free(ids);
    nb_tokenizer_free(tk);
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
}
END_TEST

/* SentencePiece-style BPE in tokenizer.json (no tokenizer.model): "llama", scores from merge ranks. */
START_TEST(test_spm_style_json) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *dir = mkdir_t("spmjson");
    put(dir, "tokenizer.json",
        "{\"added_tokens\": [{\"id\": 1, \"content\": \"<bos>\", \"special\": true}],"
        " \"pre_tokenizer\": null,"
        " \"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"unk_token\": \"<unk>\", \"vocab\": {"
        "  \"<unk>\": 0, \"<bos>\": 1, \"<0x00>\": 2, \"\xE2\x96\x81\": 3, \"t\": 4, \"h\": 5, \"th\": 6,"
        "  \"\xE2\x96\x81th\": 7}, \"merges\": [\"t h\", \"\xE2\x96\x81 th\"]}}");
    nb_kvset kv;
    nb_kvset_init(&kv);
    bool found;
    ck_assert_msg(nb_hf_tokenizer_read(dir, 0, NULL, &kv, &found, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_str_eq(nb_kv_get_str(&kv, "tokenizer.ggml.model"), "llama");
    uint64_t n;
    const float *sc = arr(&kv, "tokenizer.ggml.scores", NB_KV_F32, &n);
    const int32_t *ty = arr(&kv, "tokenizer.ggml.token_type", NB_KV_I32, &n);
    ck_assert_uint_eq(n, 8);
    ck_assert(sc[6] == -1.0f && sc[7] == -2.0f && sc[4] == 0.0f);
    ck_assert_int_eq(ty[0], NB_TT_UNKNOWN);
    ck_assert_int_eq(ty[1], NB_TT_CONTROL);
    ck_assert_int_eq(ty[2], NB_TT_BYTE);
    ck_assert(nb_kv_get(&kv, "tokenizer.ggml.merges") == NULL);
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- bad input ---------------------------------------------------------------------------- */

static void expect_fail(const char *dir, uint32_t n_vocab, nb_status want, const char *file, const char *key) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_kvset kv;
    nb_kvset_init(&kv);
    nb_kv_set_str(&kv, "general.architecture", "llama", &ctx);
    bool found;
    nb_status st = nb_hf_tokenizer_read(dir, n_vocab, "llama", &kv, &found, &ctx);
    ck_assert_msg(st == want, "%s: status %d (%s), want %d", dir, st, nb_errmsg(&ctx), want);
    ck_assert_msg(strstr(nb_errmsg(&ctx), file) && strstr(nb_errmsg(&ctx), key), "message '%s' lacks '%s' / '%s'",
                  nb_errmsg(&ctx), file, key);
    ck_assert_msg(strchr(nb_errmsg(&ctx), '\n') == NULL, "one line: %s", nb_errmsg(&ctx));
    ck_assert_uint_eq(kv.n, 1); /* nothing added */
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
}

START_TEST(test_bad_input) {
    const char *d1 = mkdir_t("bad1");
    put(d1, "tokenizer.json", k_bpe_json);
    expect_fail(d1, 7, NB_ERR_FORMAT, "tokenizer.json", "vocab_size"); /* vocab id 8 >= 7 embedding rows */
    const char *d2 = mkdir_t("bad2");
    put(d2, "tokenizer.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}");
    expect_fail(d2, 0, NB_ERR_UNSUPPORTED, "tokenizer.json", "model.type");
    const char *d3 = mkdir_t("bad3");
    put(d3, "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, ");
    expect_fail(d3, 0, NB_ERR_FORMAT, "tokenizer.json", "JSON");
    const char *d4 = mkdir_t("bad4");
    put(d4, "tokenizer.model", "\x0a\x05\x0a\x09");
    expect_fail(d4, 0, NB_ERR_FORMAT, "tokenizer.model", "SentencePiece");
    const char *d5 = mkdir_t("bad5");
    write_spm(d5);
    expect_fail(d5, 4, NB_ERR_FORMAT, "tokenizer.model", "vocab_size"); /* 8 pieces, 4 rows */
    const char *d6 = mkdir_t("bad6");
    put(d6, "tokenizer.json",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]},"
        " \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}");
    expect_fail(d6, 0, NB_ERR_FORMAT, "tokenizer.json", "model.merges[0]");
    const char *d7 = mkdir_t("bad7");
    put(d7, "tokenizer.json",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
        " \"pre_tokenizer\": {\"type\": \"Whitespace\"}}");
    expect_fail(d7, 0, NB_ERR_UNSUPPORTED, "tokenizer.json", "pre_tokenizer");
    const char *d8 = mkdir_t("bad8");
    write_spm(d8);
    put(d8, "tokenizer_config.json", "{\"added_tokens_decoder\": {\"x\": {\"content\": \"a\"}}}");
    expect_fail(d8, 0, NB_ERR_FORMAT, "tokenizer_config.json", "added_tokens_decoder");
    /* no tokenizer at all: not an error */
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_kvset kv;
    nb_kvset_init(&kv);
    bool found = true;
    ck_assert_int_eq(nb_hf_tokenizer_read(mkdir_t("none"), 0, NULL, &kv, &found, &ctx), NB_OK);
    ck_assert(!found && kv.n == 0);
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- GGUF -> HF -> GGUF ---------------------------------------------------------------------- */

static void same_array(const nb_kvset *a, const nb_kvset *b, const char *key) {
    const nb_kv_value *x = nb_kv_get(a, key), *y = nb_kv_get(b, key);
    if (!x) {
        ck_assert_msg(!y, "%s: appeared", key);
        return;
    }
    ck_assert_msg(y != NULL, "%s: lost", key);
    ck_assert_int_eq(x->type, NB_KV_ARRAY);
    ck_assert_int_eq(y->type, NB_KV_ARRAY);
    ck_assert_int_eq(x->v.arr.elem, y->v.arr.elem);
    ck_assert_msg(x->v.arr.n == y->v.arr.n, "%s: %llu vs %llu elements", key, (unsigned long long)x->v.arr.n,
                  (unsigned long long)y->v.arr.n);
    if (x->v.arr.elem == NB_KV_STRING) {
        const nb_str *p = x->v.arr.data, *q = y->v.arr.data;
        for (uint64_t i = 0; i < x->v.arr.n; i++)
            ck_assert_msg(p[i].len == q[i].len && memcmp(p[i].ptr, q[i].ptr, p[i].len) == 0,
                          "%s[%llu]: '%s' vs '%s'", key, (unsigned long long)i, p[i].ptr, q[i].ptr);
    } else {
        size_t es = nb_kv_scalar_size(x->v.arr.elem);
        const unsigned char *p = x->v.arr.data, *q = y->v.arr.data;
        for (uint64_t i = 0; i < x->v.arr.n; i++)
            ck_assert_msg(memcmp(p + i * es, q + i * es, es) == 0, "%s[%llu] differs", key, (unsigned long long)i);
    }
}

static void same_scalar(const nb_kvset *a, const nb_kvset *b, const char *key) {
    const nb_kv_value *x = nb_kv_get(a, key), *y = nb_kv_get(b, key);
    if (!x) return;
    ck_assert_msg(y != NULL, "%s: lost", key);
    if (x->type == NB_KV_STRING) {
        ck_assert_msg(y->type == NB_KV_STRING && strcmp(x->v.s.ptr, y->v.s.ptr) == 0, "%s: '%s' vs '%s'", key,
                      x->v.s.ptr, y->type == NB_KV_STRING ? y->v.s.ptr : "?");
    } else {
        uint64_t u, v;
        bool bx, by;
        if (nb_kv_get_u64(a, key, &u)) ck_assert_msg(nb_kv_get_u64(b, key, &v) && u == v, "%s differs", key);
        else if (nb_kv_get_bool(a, key, &bx)) ck_assert_msg(nb_kv_get_bool(b, key, &by) && bx == by, "%s differs", key);
    }
}

/* kv -> HF files in a fresh directory -> kv2; every tokenizer array identical. */
static void roundtrip(const nb_kvset *kv, const char *name, const char *arch, bool check_flags) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *dir = mkdir_t(name);
    ck_assert_msg(nb_hf_tokenizer_write(kv, dir, &ctx) == NB_OK, "%s: %s", name, nb_errmsg(&ctx));
    /* tests/interop/test_hf_tokenizer_interop.py loads these exports in HF tokenizers / sentencepiece */
    const char *keep = getenv("NB_HF_TOK_KEEP");
    if (keep && *keep) {
        char kd[4096];
        snprintf(kd, sizeof kd, "%s/%s", keep, name);
        mkdir(kd, 0755);
        ck_assert_msg(nb_hf_tokenizer_write(kv, kd, &ctx) == NB_OK, "%s: %s", kd, nb_errmsg(&ctx));
    }
    uint64_t n;
    strs(kv, "tokenizer.ggml.tokens", &n);
    nb_kvset back;
    nb_kvset_init(&back);
    bool found;
    ck_assert_msg(nb_hf_tokenizer_read(dir, (uint32_t)n, arch, &back, &found, &ctx) == NB_OK, "%s: %s", name,
                  nb_errmsg(&ctx));
    static const char *const arrays[] = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                                         "tokenizer.ggml.merges"};
    for (int k = 0; k < 4; k++) same_array(kv, &back, arrays[k]);
    static const char *const scalars[] = {"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id",
                                          "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                                          "tokenizer.ggml.padding_token_id", "tokenizer.chat_template",
                                          "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"};
    for (int k = 0; k < (check_flags ? 9 : 7); k++) same_scalar(kv, &back, scalars[k]);
    nb_kvset_free(&back);
    nb_ctx_free(&ctx);
}

START_TEST(test_roundtrip_small) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    /* the hand-made SPM and BPE imports, written out and read back */
    nb_kvset kv;
    nb_kvset_init(&kv);
    bool found;
    const char *d = mkdir_t("rt_spm_src");
    write_spm(d);
    put(d, "tokenizer_config.json",
        "{\"add_bos_token\": true, \"added_tokens_decoder\": {\"7\": {\"content\": \"\xE2\x96\x81\xE2\x96\x81\"}}}");
    ck_assert_int_eq(nb_hf_tokenizer_read(d, 10, "gemma3", &kv, &found, &ctx), NB_OK);
    nb_kv_set_str(&kv, "general.architecture", "gemma3", &ctx);
    roundtrip(&kv, "rt_spm", "gemma3", true);
    nb_kvset_free(&kv);
    nb_kvset_init(&kv);
    d = mkdir_t("rt_bpe_src");
    put(d, "tokenizer.json", k_bpe_json);
    put(d, "tokenizer_config.json", "{\"bos_token\": \"<|im_start|>\", \"eos_token\": \"<|endoftext|>\", "
                                   "\"chat_template\": \"x\"}");
    ck_assert_int_eq(nb_hf_tokenizer_read(d, 12, "qwen2", &kv, &found, &ctx), NB_OK);
    nb_kv_set_str(&kv, "tokenizer.ggml.pre", "smollm", &ctx); /* a name only the hint can carry back */
    roundtrip(&kv, "rt_bpe", "qwen2", true);
    nb_kvset_free(&kv);
    /* unsupported models refused before anything is written */
    nb_kvset_init(&kv);
    nb_kv_set_str(&kv, "tokenizer.ggml.model", "bert", &ctx);
    const char *e = mkdir_t("rt_bad");
    ck_assert_int_eq(nb_hf_tokenizer_write(&kv, e, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "tokenizer.ggml.model"), "%s", nb_errmsg(&ctx));
    char p[1024];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", e);
    ck_assert(!nbt_file_exists(p));
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- real models --------------------------------------------------------------------------- */

static const char *cached(const char *file) {
    static char buf[8][4096];
    static int slot;
    char *b = buf[slot++ & 7];
    const char *dir = getenv("NIBBLE_MODELS");
    if (dir && *dir)
        snprintf(b, 4096, "%s/%s", dir, file);
    else if (getenv("HOME"))
        snprintf(b, 4096, "%s/.cache/nibble/models/%s", getenv("HOME"), file);
    else
        return NULL;
    return access(b, R_OK) == 0 ? b : NULL;
}

static nb_model *open_gguf(const char *file, nb_ctx *ctx) {
    const char *p = cached(file);
    if (!p) return NULL;
    nb_model *m;
    ck_assert_msg(nb_gguf_open(p, &m, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    return m;
}

START_TEST(test_real_roundtrip) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    static const char *const files[] = {"gemma-3-270m-Q4_K_M.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"};
    for (int k = 0; k < 2; k++) {
        nb_model *m = open_gguf(files[k], &ctx);
        if (!m) {
            printf("SKIP GGUF -> HF -> GGUF on %s: not cached (scripts/fetch-models)\n", files[k]);
            continue;
        }
        roundtrip(&m->kv, k ? "rt_smollm2" : "rt_gemma3", nb_kv_get_str(&m->kv, "general.architecture"), true);
        nb_model_close(m);
    }
    nb_ctx_free(&ctx);
}
END_TEST

/* A copy of an HF directory's tokenizer files without tokenizer.model. */
static const char *json_only_copy(const char *src) { /* src: at most 4095 bytes */
    const char *dir = mkdir_t("gemma_json_only");
    static const char *const files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                        "config.json"};
    for (int k = 0; k < 4; k++) {
        char a[8192], b[8192];
        snprintf(a, sizeof a, "%s/%s", src, files[k]);
        snprintf(b, sizeof b, "%s/%s", dir, files[k]);
        unlink(b);
        if (access(a, R_OK) == 0) ck_assert_int_eq(symlink(a, b), 0);
    }
    return dir;
}

/* Token types equal, except where EmbeddingGemma's tokenizer_config.json marks
 * an added token `special` that the Gemma 3 270M GGUF's source did not: the
 * converter's rule then gives CONTROL where the GGUF has USER_DEFINED. */
static void same_types_but_special(const nb_kvset *gguf, const nb_kvset *kv, const char *dir) {
    uint64_t n, n2;
    const int32_t *a = arr(gguf, "tokenizer.ggml.token_type", NB_KV_I32, &n);
    const int32_t *b = arr(kv, "tokenizer.ggml.token_type", NB_KV_I32, &n2);
    ck_assert_uint_eq(n, n2);
    char p[8192];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    size_t len;
    char *buf = (char *)nbt_read_file(p, &len);
    ck_assert(buf != NULL);
    cJSON *cfg = cJSON_ParseWithLength(buf, len);
    free(buf);
    const cJSON *dec = cJSON_GetObjectItem(cfg, "added_tokens_decoder");
    size_t explained = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (a[i] == b[i]) continue;
        char key[24];
        snprintf(key, sizeof key, "%llu", (unsigned long long)i);
        const cJSON *e = cJSON_GetObjectItem(dec, key);
        ck_assert_msg(a[i] == NB_TT_USER_DEFINED && b[i] == NB_TT_CONTROL && e &&
                          cJSON_IsTrue(cJSON_GetObjectItem(e, "special")),
                      "token_type[%llu]: GGUF %d, import %d", (unsigned long long)i, a[i], b[i]);
        explained++;
    }
    printf("Gemma 3 token types: %llu equal, %zu CONTROL where EmbeddingGemma's config marks the token special\n",
           (unsigned long long)(n - explained), explained);
    cJSON_Delete(cfg);
}

START_TEST(test_real_gemma) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *hf = cached("embeddinggemma-300m/tokenizer.model");
    nb_model *g = open_gguf("gemma-3-270m-Q4_K_M.gguf", &ctx);
    if (!hf || !g) {
        printf("SKIP real Gemma 3 tokenizer import: %s not cached (scripts/fetch-models --quality)\n",
               !hf ? "embeddinggemma-300m/" : "gemma-3-270m-Q4_K_M.gguf");
        if (g) nb_model_close(g);
        nb_ctx_free(&ctx);
        return;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", hf);
    *strrchr(dir, '/') = '\0';
    nb_kvset kv;
    nb_kvset_init(&kv);
    bool found;
    ck_assert_msg(nb_hf_tokenizer_read(dir, 262144, "gemma3", &kv, &found, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    same_array(&g->kv, &kv, "tokenizer.ggml.tokens");
    same_array(&g->kv, &kv, "tokenizer.ggml.scores");
    same_types_but_special(&g->kv, &kv, dir);
    /* EmbeddingGemma's tokenizer_config.json sets add_eos_token, the 270M model's does not */
    static const char *const sc[] = {"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id",
                                     "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                                     "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token",
                                     "tokenizer.ggml.add_space_prefix"};
    for (int k = 0; k < 8; k++) same_scalar(&g->kv, &kv, sc[k]);
    nb_kvset_free(&kv);
    /* tokenizer.json alone: same tokens and types (its BPE has no SentencePiece scores) */
    nb_kvset_init(&kv);
    ck_assert_msg(nb_hf_tokenizer_read(json_only_copy(dir), 262144, "gemma3", &kv, &found, &ctx) == NB_OK, "%s",
                  nb_errmsg(&ctx));
    same_array(&g->kv, &kv, "tokenizer.ggml.tokens");
    same_types_but_special(&g->kv, &kv, dir);
    nb_kvset_free(&kv);
    nb_model_close(g);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(test_real_smollm2) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *hf = cached("smollm2-135m-hf/tokenizer.json");
    nb_model *g = open_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", &ctx);
    if (!hf || !g) {
        printf("SKIP real SmolLM2 tokenizer import: %s not available (tests/interop/make_hf_tokenizer_dirs.py)\n",
               !hf ? "smollm2-135m-hf/" : "SmolLM2-135M-Instruct.Q4_1.gguf");
        if (g) nb_model_close(g);
        nb_ctx_free(&ctx);
        return;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", hf);
    *strrchr(dir, '/') = '\0';
    nb_kvset kv;
    nb_kvset_init(&kv);
    bool found;
    ck_assert_msg(nb_hf_tokenizer_read(dir, 49152, "llama", &kv, &found, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    static const char *const keys[] = {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"};
    for (int k = 0; k < 3; k++) same_array(&g->kv, &kv, keys[k]);
    static const char *const sc[] = {"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id",
                                     "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                                     "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token",
                                     "tokenizer.chat_template", "tokenizer.ggml.add_space_prefix"};
    for (int k = 0; k < 9; k++) same_scalar(&g->kv, &kv, sc[k]);
    nb_kvset_free(&kv);
    nb_model_close(g);
    nb_ctx_free(&ctx);
}
END_TEST

/* Token ids of nibble's tokenizer on an imported HF tokenizer against those recorded from HF tokenizers. */
static void check_cases(const char *dir, const char *arch, const cJSON *cases, const char *label, nb_ctx *ctx) {
    nb_kvset kv;
    nb_kvset_init(&kv);
    bool found;
    ck_assert_msg(nb_hf_tokenizer_read(dir, 0, arch, &kv, &found, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    nb_tokenizer *t;
    ck_assert_msg(nb_tokenizer_create(&kv, &t, ctx) == NB_OK, "%s", nb_errmsg(ctx));
    const cJSON *c;
    int checked = 0;
    cJSON_ArrayForEach(c, cases) {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        int32_t *ids;
        size_t nid;
        /* HF tokenizers always splits added tokens out of the text: parse_special */
        ck_assert_int_eq(nb_tokenize(t, text, strlen(text), true, &ids, &nid, ctx), NB_OK);
        const cJSON *want = cJSON_GetObjectItem(c, "ids");
        bool same = (size_t)cJSON_GetArraySize(want) == nid;
        for (size_t i = 0; same && i < nid; i++) same = cJSON_GetArrayItem(want, (int)i)->valueint == ids[i];
        ck_assert_msg(same, "%s: ids differ from HF tokenizers on %.60s (%zu vs %d ids)", label, text, nid,
                      cJSON_GetArraySize(want));
        free(ids);
        checked++;
    }
    printf("%s: %d texts tokenized as HF tokenizers does\n", label, checked);
    nb_tokenizer_free(t);
    nb_kvset_free(&kv);
}

START_TEST(test_hf_ids_fixture) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    char p[1024];
    snprintf(p, sizeof p, "%s/tokenizer/hf/hf_ids.json", nbt_data_dir());
    size_t n;
    char *buf = (char *)nbt_read_file(p, &n);
    ck_assert_msg(buf != NULL, "missing fixture %s", p);
    cJSON *root = cJSON_ParseWithLength(buf, n);
    free(buf);
    ck_assert(root != NULL);
    const cJSON *tok;
    cJSON_ArrayForEach(tok, cJSON_GetObjectItem(root, "tokenizers")) {
        const char *rel = cJSON_GetObjectItem(tok, "dir")->valuestring;
        const char *file = cJSON_GetObjectItem(tok, "probe")->valuestring;
        const char *arch = cJSON_GetObjectItem(tok, "arch")->valuestring;
        const cJSON *cases = cJSON_GetObjectItem(tok, "cases");
        char probe[512];
        snprintf(probe, sizeof probe, "%s/%s", rel, file);
        const char *hf = cached(probe);
        if (!hf) {
            printf("SKIP HF tokenizers ids for %s: directory not available\n", rel);
            continue;
        }
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", hf);
        *strrchr(dir, '/') = '\0';
        check_cases(dir, arch, cases, rel, &ctx);
        if (strcmp(file, "tokenizer.model") == 0) {
            /* the same tokenizer imported from tokenizer.json alone (scores from merge ranks) */
            char label[600];
            snprintf(label, sizeof label, "%s (tokenizer.json only)", rel);
            check_cases(json_only_copy(dir), arch, cases, label, &ctx);
        }
    }
    cJSON_Delete(root);
    nb_ctx_free(&ctx);
}
END_TEST

/* SentencePiece vocabularies exported as tokenizer.json: the file is the one
 * HF tokenizers was run on (sha256 recorded in the fixture, made by
 * tests/data/tokenizer/make_spm_export_ids.py with the oracle venv), and
 * nibble's tokenizer gives the ids HF tokenizers gave on it. */
START_TEST(test_spm_json_fixture) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    char p[1024];
    snprintf(p, sizeof p, "%s/tokenizer/hf/spm_export_ids.json", nbt_data_dir());
    size_t n;
    char *buf = (char *)nbt_read_file(p, &n);
    ck_assert_msg(buf != NULL, "missing fixture %s", p);
    cJSON *root = cJSON_ParseWithLength(buf, n);
    free(buf);
    ck_assert(root != NULL);
    snprintf(p, sizeof p, "%s/tokenizer/hf/hf_ids.json", nbt_data_dir());
    buf = (char *)nbt_read_file(p, &n);
    ck_assert_msg(buf != NULL, "missing fixture %s", p);
    cJSON *texts_root = cJSON_ParseWithLength(buf, n);
    free(buf);
    ck_assert(texts_root != NULL);
    const cJSON *texts = NULL, *tk;
    cJSON_ArrayForEach(tk, cJSON_GetObjectItem(texts_root, "tokenizers"))
        if (!strcmp(cJSON_GetObjectItem(tk, "dir")->valuestring, "embeddinggemma-300m"))
            texts = cJSON_GetObjectItem(tk, "cases");
    ck_assert(texts != NULL);
    const char *keep = getenv("NB_HF_TOK_KEEP");
    const cJSON *ex;
    cJSON_ArrayForEach(ex, cJSON_GetObjectItem(root, "exports")) {
        const char *name = cJSON_GetObjectItem(ex, "name")->valuestring;
        snprintf(p, sizeof p, "%s/%s", nbt_data_dir(), cJSON_GetObjectItem(ex, "model")->valuestring);
        nb_model *m;
        ck_assert_msg(nb_gguf_open(p, &m, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
        nb_kvset kv;
        nb_kvset_init(&kv);
        ck_assert_int_eq(nb_kvset_copy(&kv, &m->kv, &ctx), NB_OK);
        nb_model_close(m);
        const cJSON *set;
        cJSON_ArrayForEach(set, cJSON_GetObjectItem(ex, "set"))
            ck_assert_int_eq(nb_kv_set_bool(&kv, set->string, cJSON_IsTrue(set), &ctx), NB_OK);
        char dir[600];
        snprintf(dir, sizeof dir, "spm_%s", name);
        const char *d = mkdir_t(dir);
        ck_assert_msg(nb_hf_tokenizer_write(&kv, d, &ctx) == NB_OK, "%s: %s", name, nb_errmsg(&ctx));
        if (keep && *keep) {
            char kd[4096];
            snprintf(kd, sizeof kd, "%s/spm_%s", keep, name);
            mkdir(kd, 0755);
            ck_assert_msg(nb_hf_tokenizer_write(&kv, kd, &ctx) == NB_OK, "%s: %s", kd, nb_errmsg(&ctx));
        }
        if (getenv("NB_HF_TOK_RECORD")) { /* make_spm_export_ids.py is recording: exports only */
            nb_kvset_free(&kv);
            continue;
        }
        snprintf(p, sizeof p, "%s/tokenizer.json", d);
        unsigned char *tj = nbt_read_file(p, &n);
        ck_assert(tj != NULL);
        unsigned char dg[32];
        char hex[65];
        nb_sha256 sh;
        nb_sha256_init(&sh);
        nb_sha256_update(&sh, tj, n);
        nb_sha256_final(&sh, dg);
        nb_sha256_hex(dg, hex);
        free(tj);
        ck_assert_msg(!strcmp(hex, cJSON_GetObjectItem(ex, "tokenizer_json_sha256")->valuestring),
                      "%s: tokenizer.json is not the file HF tokenizers was run on (sha256 %s): rerun "
                      "tests/data/tokenizer/make_spm_export_ids.py with the oracle venv", name, hex);
        nb_tokenizer *t;
        ck_assert_msg(nb_tokenizer_create(&kv, &t, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
        int checked = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(ex, "cases")) {
            int idx = cJSON_GetArrayItem(c, 0)->valueint;
            const cJSON *want = cJSON_GetArrayItem(c, 1);
            const char *text = cJSON_GetObjectItem(cJSON_GetArrayItem(texts, idx), "text")->valuestring;
            int32_t *ids;
            size_t nid;
            ck_assert_int_eq(nb_tokenize(t, text, strlen(text), true, &ids, &nid, &ctx), NB_OK);
            bool same = (size_t)cJSON_GetArraySize(want) == nid;
            for (size_t i = 0; same && i < nid; i++) same = cJSON_GetArrayItem(want, (int)i)->valueint == ids[i];
            ck_assert_msg(same, "%s: ids differ from HF tokenizers on its tokenizer.json for %.60s (%zu vs %d ids)",
                          name, text, nid, cJSON_GetArraySize(want));
            free(ids);
            checked++;
        }
        ck_assert_int_gt(checked, 20);
        printf("%s: tokenizer.json as recorded; %d texts give HF tokenizers' ids\n", name, checked);
        nb_tokenizer_free(t);
        nb_kvset_free(&kv);
    }
    /* the real Gemma 3 vocabulary, for the oracle (HF tokenizers on it against hf_ids.json) */
    nb_model *g = keep && *keep ? open_gguf("gemma-3-270m-Q4_K_M.gguf", &ctx) : NULL;
    if (g) {
        char kd[4096];
        snprintf(kd, sizeof kd, "%s/spm_gemma3", keep);
        mkdir(kd, 0755);
        ck_assert_msg(nb_hf_tokenizer_write(&g->kv, kd, &ctx) == NB_OK, "%s: %s", kd, nb_errmsg(&ctx));
        nb_model_close(g);
    }
    cJSON_Delete(texts_root);
    cJSON_Delete(root);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("hf_tokenizer");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_protobuf);
    tcase_add_test(tc, test_spm_dir);
    tcase_add_test(tc, test_bpe_dir);
    tcase_add_test(tc, test_spm_style_json);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_roundtrip_small);
    tcase_add_test(tc, test_real_roundtrip);
    tcase_add_test(tc, test_real_gemma);
    tcase_add_test(tc, test_real_smollm2);
    tcase_add_test(tc, test_hf_ids_fixture);
    suite_add_tcase(s, tc);
    TCase *tj = tcase_create("spm_json"); /* its own case: make_spm_export_ids.py runs it alone */
    tcase_set_timeout(tj, 600);
    tcase_add_test(tj, test_spm_json_fixture);
    suite_add_tcase(s, tj);
    return nbt_run_suite(s);
}
