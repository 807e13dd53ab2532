/* tests/engine/test_tokenizer.c — SPM and BPE tokenizers.
 *
 * - Tiny synthetic vocabularies (no model needed) with expectations worked out
 *   by hand from the algorithms' rules (comments show the derivation).
 * - Pre-tokenizer splits for each regex family, worked out from the regexes.
 * - Real models (skipped when not cached): every fixture text of
 *   tests/data/tokenizer/<model>.json must give exactly the ids llama.cpp gave
 *   (recorded by make_fixtures.py through llama-cpp-python), in both
 *   parse_special modes; token pieces and BOS/EOS facts too.
 * - Robustness: random bytes through both synthetic vocabularies.
 */
#include "engine/tokenizer.h"
#include "engine/tokenizer_impl.h"
#include "engine/unicode.h"
#include "formats/readers.h"
#include "formats/model.h"
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------- */

static void expect_ids(const nb_tokenizer *t, const char *text, size_t n, bool special, const int32_t *want,
                       size_t n_want) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    ck_assert_msg(nb_tokenize(t, text, n, special, &ids, &n_ids, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_ptr_nonnull(ids);
    char got[512] = "", exp[512] = "";
    for (size_t i = 0; i < n_ids && strlen(got) < 480; i++) snprintf(got + strlen(got), 32, "%d ", ids[i]);
    for (size_t i = 0; i < n_want && strlen(exp) < 480; i++) snprintf(exp + strlen(exp), 32, "%d ", want[i]);
    ck_assert_msg(n_ids == n_want && (n_ids == 0 || memcmp(ids, want, n_ids * sizeof *ids) == 0), "'%.*s' (special=%d): got [%s] want [%s]",
                  (int)n, text, special, got, exp);
    free(ids);
    nb_ctx_free(&ctx);
}
#define EXPECT(t, text, special, ...)                                                                              \
    do {                                                                                                           \
        static const int32_t w_[] = {__VA_ARGS__};                                                                 \
        expect_ids((t), (text), strlen(text), (special), w_, sizeof w_ / sizeof w_[0]);                            \
    } while (0)
#define EXPECT_NONE(t, text, special) expect_ids((t), (text), strlen(text), (special), NULL, 0)

/* ---- synthetic SPM vocab ---------------------------------------------------------- */

enum { SPM_UNK = 0, SPM_BOS = 1, SPM_EOS = 2, SPM_BYTE0 = 3 }; /* bytes: 3 + b */
enum { SPM_SP = 259, SPM_A, SPM_B, SPM_C, SPM_AB, SPM_BC, SPM_ABC, SPM_SPA, SPM_TAG, SPM_SPSP, SPM_CTL, SPM_EACUTE,
       SPM_AA, SPM_N };

static nb_tokenizer *make_spm(bool add_space_prefix) {
    static char bytes[256][8];
    const char *tok[SPM_N];
    float score[SPM_N];
    int32_t type[SPM_N];
    tok[0] = "<unk>", type[0] = 2;
    tok[1] = "<s>", type[1] = 3;
    tok[2] = "</s>", type[2] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        tok[SPM_BYTE0 + b] = bytes[b];
        type[SPM_BYTE0 + b] = 6;
    }
    for (int i = 0; i < SPM_N; i++) score[i] = 0.0f;
    struct { int id; const char *s; float sc; int ty; } n[] = {
        {SPM_SP, "\xE2\x96\x81", -1.0f, 1}, {SPM_A, "a", -2.0f, 1},      {SPM_B, "b", -2.0f, 1},
        {SPM_C, "c", -2.0f, 1},             {SPM_AB, "ab", -3.0f, 1},    {SPM_BC, "bc", -1.5f, 1},
        {SPM_ABC, "abc", -4.0f, 1},         {SPM_SPA, "\xE2\x96\x81" "a", -2.5f, 1},
        {SPM_TAG, "<tag>", 0.0f, 4},        {SPM_SPSP, "\xE2\x96\x81\xE2\x96\x81", -1.0f, 1},
        {SPM_CTL, "<ctl>", 0.0f, 3},        {SPM_EACUTE, "\xC3\xA9", -2.0f, 1}, {SPM_AA, "aa", -1.0f, 1},
    };
    for (size_t i = 0; i < sizeof n / sizeof n[0]; i++) {
        tok[n[i].id] = n[i].s;
        score[n[i].id] = n[i].sc;
        type[n[i].id] = n[i].ty;
    }
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_kvset kv;
    nb_kvset_init(&kv);
    ck_assert(nb_kv_set_str(&kv, "tokenizer.ggml.model", "llama", &ctx) == NB_OK);
    ck_assert(nb_kv_set_arr_str(&kv, "tokenizer.ggml.tokens", SPM_N, tok, &ctx) == NB_OK);
    ck_assert(nb_kv_set_arr(&kv, "tokenizer.ggml.scores", NB_KV_F32, SPM_N, score, &ctx) == NB_OK);
    ck_assert(nb_kv_set_arr(&kv, "tokenizer.ggml.token_type", NB_KV_I32, SPM_N, type, &ctx) == NB_OK);
    ck_assert(nb_kv_set_bool(&kv, "tokenizer.ggml.add_space_prefix", add_space_prefix, &ctx) == NB_OK);
    nb_tokenizer *t = NULL;
    ck_assert_msg(nb_tokenizer_create(&kv, &t, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
    return t;
}

START_TEST(test_spm_synthetic) {
    nb_tokenizer *t = make_spm(false);
    ck_assert_int_eq(nb_tokenizer_n_vocab(t), SPM_N);
    /* llama defaults: bos 1, eos 2, add_bos true */
    ck_assert_int_eq(nb_tokenizer_bos(t), SPM_BOS);
    ck_assert_int_eq(nb_tokenizer_eos(t), SPM_EOS);
    ck_assert(nb_tokenizer_add_bos(t));
    ck_assert(!nb_tokenizer_add_eos(t));
    ck_assert(nb_tokenizer_is_eog(t, SPM_EOS));  /* "</s>" is an end-of-generation text */
    ck_assert(!nb_tokenizer_is_eog(t, SPM_A));
    ck_assert(nb_tokenizer_is_control(t, SPM_CTL));
    ck_assert(!nb_tokenizer_is_control(t, SPM_TAG));
    ck_assert_int_eq(nb_tokenizer_token_id(t, "bc", 2), SPM_BC);
    ck_assert_int_eq(nb_tokenizer_token_id(t, "zz", 2), -1);

    EXPECT_NONE(t, "", false);
    /* a b c: pairs ab (-3), bc (-1.5): bc first, then a+bc = abc (-4) */
    EXPECT(t, "abc", false, SPM_ABC);
    EXPECT(t, "ab", false, SPM_AB);
    /* ab merges, d is no token: byte fallback <0x64> */
    EXPECT(t, "abd", false, SPM_AB, SPM_BYTE0 + 'd');
    /* ' ' -> U+2581: "▁a" */
    EXPECT(t, " a", false, SPM_SPA);
    EXPECT(t, "  ", false, SPM_SPSP);
    /* equal scores: the leftmost pair merges first: (aa) a */
    EXPECT(t, "aaa", false, SPM_AA, SPM_A);
    /* user-defined tokens split the text whatever parse_special says */
    EXPECT(t, "a<tag>b", false, SPM_A, SPM_TAG, SPM_B);
    /* control tokens only with parse_special; otherwise plain text (bytes) */
    EXPECT(t, "<ctl>", false, SPM_BYTE0 + '<', SPM_C, SPM_BYTE0 + 't', SPM_BYTE0 + 'l', SPM_BYTE0 + '>');
    EXPECT(t, "<ctl>", true, SPM_CTL);
    EXPECT(t, "a<ctl><tag>", true, SPM_A, SPM_CTL, SPM_TAG);
    /* UTF-8: é is a token; a lone lead byte is one symbol of one byte -> <0xC3> */
    EXPECT(t, "\xC3\xA9", false, SPM_EACUTE);
    EXPECT(t, "\xC3", false, SPM_BYTE0 + 0xC3);
    /* a broken 2-byte sequence "\xC3a" is still one 2-byte symbol (length from the lead byte) */
    EXPECT(t, "\xC3" "a", false, SPM_BYTE0 + 0xC3, SPM_BYTE0 + 'a');

    /* pieces: U+2581 -> ' ', bytes decoded, control text as is */
    char buf[16];
    ck_assert_uint_eq(nb_token_to_piece(t, SPM_SPA, buf, sizeof buf), 2);
    ck_assert(memcmp(buf, " a", 2) == 0);
    ck_assert_uint_eq(nb_token_to_piece(t, SPM_BYTE0 + 0x0A, buf, sizeof buf), 1);
    ck_assert_int_eq(buf[0], '\n');
    ck_assert_uint_eq(nb_token_to_piece(t, SPM_CTL, buf, sizeof buf), 5);
    ck_assert(memcmp(buf, "<ctl>", 5) == 0);
    ck_assert_uint_eq(nb_token_to_piece(t, SPM_CTL, buf, 2), 5); /* cut: full length returned */
    ck_assert_uint_eq(nb_token_to_piece(t, -1, buf, sizeof buf), 0);
    ck_assert_uint_eq(nb_token_to_piece(t, SPM_N, buf, sizeof buf), 0);
    nb_tokenizer_free(t);

    /* add_space_prefix: ' ' before the text and after every special token */
    t = make_spm(true);
    EXPECT(t, "a", false, SPM_SPA);
    /* "▁a" <tag> "▁b" -> ▁b is no token: ▁ b */
    EXPECT(t, "a<tag>b", false, SPM_SPA, SPM_TAG, SPM_SP, SPM_B);
    EXPECT_NONE(t, "", false);
    nb_tokenizer_free(t);
    nb_tokenizer_free(NULL);
}
END_TEST

/* ---- synthetic BPE vocab ------------------------------------------------------------ */

enum { BPE_LL = 256, BPE_HE, BPE_HELL, BPE_HELLO, BPE_GW, BPE_OR, BPE_GWOR, BPE_EOT, BPE_USER, BPE_GWORLD, BPE_N };

static nb_tokenizer *make_bpe(const char *pre) {
    /* ids 0..255: the GPT-2 stand-in of byte i (so a byte's id is its value) */
    static char stand[256][4];
    const char *tok[BPE_N];
    for (int b = 0; b < 256; b++) {
        size_t l = nb_utf8_encode(nb_gpt2_byte_cp((uint8_t)b), stand[b]);
        stand[b][l] = '\0';
        tok[b] = stand[b];
    }
    tok[BPE_LL] = "ll", tok[BPE_HE] = "he", tok[BPE_HELL] = "hell", tok[BPE_HELLO] = "hello";
    tok[BPE_GW] = "\xC4\xA0w", tok[BPE_OR] = "or", tok[BPE_GWOR] = "\xC4\xA0wor";
    tok[BPE_EOT] = "<|endoftext|>", tok[BPE_USER] = "<|user|>", tok[BPE_GWORLD] = "\xC4\xA0world";
    int32_t type[BPE_N];
    for (int i = 0; i < BPE_N; i++) type[i] = 1;
    type[BPE_EOT] = 3;
    type[BPE_USER] = 4;
    const char *merges[] = {"l l", "h e", "he ll", "hell o", "\xC4\xA0 w", "o r", "\xC4\xA0w or"};
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_kvset kv;
    nb_kvset_init(&kv);
    ck_assert(nb_kv_set_str(&kv, "tokenizer.ggml.model", "gpt2", &ctx) == NB_OK);
    ck_assert(nb_kv_set_str(&kv, "tokenizer.ggml.pre", pre, &ctx) == NB_OK);
    ck_assert(nb_kv_set_arr_str(&kv, "tokenizer.ggml.tokens", BPE_N, tok, &ctx) == NB_OK);
    ck_assert(nb_kv_set_arr(&kv, "tokenizer.ggml.token_type", NB_KV_I32, BPE_N, type, &ctx) == NB_OK);
    ck_assert(nb_kv_set_arr_str(&kv, "tokenizer.ggml.merges", sizeof merges / sizeof merges[0], merges, &ctx) ==
              NB_OK);
    ck_assert(nb_kv_set_u32(&kv, "tokenizer.ggml.eos_token_id", BPE_EOT, &ctx) == NB_OK);
    nb_tokenizer *t = NULL;
    ck_assert_msg(nb_tokenizer_create(&kv, &t, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
    return t;
}

START_TEST(test_bpe_synthetic) {
    nb_tokenizer *t = make_bpe("gpt-2");
    /* gpt2 defaults: bos 11 (inside this vocab), add_bos false */
    ck_assert_int_eq(nb_tokenizer_bos(t), 11);
    ck_assert_int_eq(nb_tokenizer_eos(t), BPE_EOT);
    ck_assert(!nb_tokenizer_add_bos(t));
    ck_assert(nb_tokenizer_is_eog(t, BPE_EOT));

    /* "hello": l l (rank 0) first, then h e (1), he ll (2), hell o (3) */
    EXPECT(t, "hello", false, BPE_HELLO);
    /* " world" = Ġ w o r l d: Ġw (4), or (5), Ġw or (6); l, d stay bytes */
    EXPECT(t, "hello world", false, BPE_HELLO, BPE_GWOR, 'l', 'd');
    /* equal ranks: leftmost first: ll ll / ll l */
    EXPECT(t, "llll", false, BPE_LL, BPE_LL);
    EXPECT(t, "lll", false, BPE_LL, 'l');
    /* é = C3 A9: two byte tokens */
    EXPECT(t, "\xC3\xA9", false, 0xC3, 0xA9);
    /* invalid UTF-8 becomes U+FFFD (EF BF BD) before byte encoding, as in llama.cpp */
    EXPECT(t, "\xFF", false, 0xEF, 0xBF, 0xBD);
    EXPECT(t, "<|user|>", false, BPE_USER);
    EXPECT(t, "<|endoftext|>", true, BPE_EOT);
    EXPECT(t, "a<|endoftext|>", true, 'a', BPE_EOT);
    EXPECT_NONE(t, "", false);
    {   /* not special: plain bytes (no merges apply to them) */
        const char *s = "<|endoftext|>";
        int32_t w[16];
        for (size_t i = 0; i < strlen(s); i++) w[i] = (unsigned char)s[i];
        expect_ids(t, s, strlen(s), false, w, strlen(s));
    }
    char buf[16];
    ck_assert_uint_eq(nb_token_to_piece(t, BPE_GWOR, buf, sizeof buf), 4);
    ck_assert(memcmp(buf, " wor", 4) == 0);
    ck_assert_uint_eq(nb_token_to_piece(t, 0x0A, buf, sizeof buf), 1); /* stand-in Ċ -> '\n' */
    ck_assert_int_eq(buf[0], '\n');
    nb_tokenizer_free(t);

    /* llama3 family: a pre-token that is a token is emitted as is (ignore_merges); add_bos true */
    t = make_bpe("llama-bpe");
    ck_assert(nb_tokenizer_add_bos(t));
    EXPECT(t, "hello world", false, BPE_HELLO, BPE_GWORLD);
    nb_tokenizer_free(t);
}
END_TEST

/* ---- pre-tokenizer splits ---------------------------------------------------------------- */

static void expect_split(nb_pre_kind pre, const char *text, const char *const *want, size_t n_want) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    size_t *ends = NULL, n = 0;
    ck_assert(nb_bpe_pretokenize(pre, text, strlen(text), &ends, &n, &ctx) == NB_OK);
    /* ends are code point indices; this helper only feeds valid UTF-8 */
    size_t cp = 0, pos = 0, piece = 0, start = 0;
    char got[1024] = "";
    while (pos < strlen(text)) {
        nb_utf8_decode(text, strlen(text), &pos);
        cp++;
        if (piece < n && cp == ends[piece]) {
            snprintf(got + strlen(got), sizeof got - strlen(got), "[%.*s]", (int)(pos - start), text + start);
            start = pos;
            piece++;
        }
    }
    char exp[1024] = "";
    for (size_t i = 0; i < n_want; i++) snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "[%s]", want[i]);
    ck_assert_msg(strcmp(got, exp) == 0 && n == n_want, "pre %d '%s':\n got %s\nwant %s", (int)pre, text, got, exp);
    free(ends);
    nb_ctx_free(&ctx);
}
#define SPLIT(pre, text, ...)                                                                                      \
    do {                                                                                                           \
        static const char *const w_[] = {__VA_ARGS__};                                                             \
        expect_split((pre), (text), w_, sizeof w_ / sizeof w_[0]);                                                 \
    } while (0)

START_TEST(test_pretokenize) {
    /* GPT-2: \s+(?!\S) leaves one space to the next word; the final run is \s+ */
    SPLIT(NB_PRE_GPT2, "Hello world's 123  x\n\n y  ", "Hello", " world", "'s", " 123", " ", " x", "\n\n", " y", "  ");
    SPLIT(NB_PRE_GPT2, "it'S ok", "it", "'", "S", " ok"); /* case-sensitive contractions */
    SPLIT(NB_PRE_GPT2, "a+=b!!", "a", "+=", "b", "!!");
    /* llama3: digits by 3, [^\r\n\p{L}\p{N}]?\p{L}+, case-insensitive contractions, \s*[\r\n]+ */
    SPLIT(NB_PRE_LLAMA3, "Hello world's 1234567 don'T\n\n  x", "Hello", " world", "'s", " ", "123", "456", "7", " don",
          "'T", "\n\n", " ", " x");
    SPLIT(NB_PRE_LLAMA3, "(x) ... !!\n\ny", "(x", ")", " ...", " !!\n\n", "y");
    /* qwen2: single digits */
    SPLIT(NB_PRE_QWEN2, "ab 1234", "ab", " ", "1", "2", "3", "4");
    /* smollm/starcoder: \p{N} isolated first, then GPT-2 inside each piece */
    SPLIT(NB_PRE_STARCODER, "abc123 4", "abc", "1", "2", "3", " ", "4");
    /* default: punctuation runs, GPT-2, \p{N}+, then [0-9]{3} */
    SPLIT(NB_PRE_DEFAULT, "a+=b!! 12345", "a", "+=", "b", "!!", " ", "123", "45");
    /* Unicode classes: é is \p{L}, ٣ (Arabic-Indic three) is \p{N}, U+3000 is \s */
    SPLIT(NB_PRE_LLAMA3, "caf\xC3\xA9 \xD9\xA3\xD9\xA3\xE3\x80\x80x", "caf\xC3\xA9", " ", "\xD9\xA3\xD9\xA3",
          "\xE3\x80\x80x");
}
END_TEST

START_TEST(test_unicode_tables) {
    /* spot checks against the Unicode character database */
    ck_assert_int_eq(nb_uc_class('a') & NB_UC_CLASS_MASK, NB_UC_LETTER);
    ck_assert_int_eq(nb_uc_class('7') & NB_UC_CLASS_MASK, NB_UC_NUMBER);
    ck_assert_int_eq(nb_uc_class('$') & NB_UC_CLASS_MASK, NB_UC_SYMBOL);
    ck_assert_int_eq(nb_uc_class('_') & NB_UC_CLASS_MASK, NB_UC_PUNCT);
    ck_assert(nb_uc_class(' ') & NB_UC_WS);
    ck_assert(nb_uc_class('\n') & NB_UC_WS);
    ck_assert(nb_uc_class(0x3000) & NB_UC_WS);
    ck_assert(!(nb_uc_class(0x200B) & NB_UC_WS)); /* zero width space is Cf, not White_Space */
    ck_assert_int_eq(nb_uc_class(0x4E2D) & NB_UC_CLASS_MASK, NB_UC_LETTER);  /* 中 */
    ck_assert_int_eq(nb_uc_class(0x0301) & NB_UC_CLASS_MASK, NB_UC_MARK);    /* combining acute */
    ck_assert_int_eq(nb_uc_class(0x00BD) & NB_UC_CLASS_MASK, NB_UC_NUMBER);  /* ½ */
    ck_assert_int_eq(nb_uc_class(0x1F600) & NB_UC_CLASS_MASK, NB_UC_SYMBOL); /* 😀 */
    ck_assert_int_eq(nb_uc_class(0xE000) & NB_UC_CLASS_MASK, NB_UC_CONTROL); /* private use */
    ck_assert_int_eq(nb_uc_class(0x0378) & NB_UC_CLASS_MASK, NB_UC_UNDEF);   /* unassigned */
    ck_assert_int_eq(nb_uc_class(0x110000), NB_UC_UNDEF);
    /* ranges are sorted and start at 0 */
    ck_assert_uint_eq(nb_ucd_ranges[0].first, 0);
    for (size_t i = 1; i < nb_ucd_n_ranges; i++) ck_assert(nb_ucd_ranges[i].first > nb_ucd_ranges[i - 1].first);
    /* GPT-2 byte map is a bijection onto printable code points */
    for (int b = 0; b < 256; b++) {
        uint32_t cp = nb_gpt2_byte_cp((uint8_t)b);
        ck_assert_int_eq(nb_gpt2_cp_byte(cp), b);
        ck_assert(!(nb_uc_class(cp) & NB_UC_WS));
    }
    ck_assert_uint_eq(nb_gpt2_byte_cp(' '), 0x120); /* Ġ */
    ck_assert_uint_eq(nb_gpt2_byte_cp('\n'), 0x10A); /* Ċ */
    ck_assert_int_eq(nb_gpt2_cp_byte(0x144), -1);
    /* llama.cpp's UTF-8 tolerance */
    size_t pos = 0;
    ck_assert_uint_eq(nb_utf8_decode("\xC0\x80", 2, &pos), 0); /* overlong accepted */
    ck_assert_uint_eq(pos, 2);
    pos = 0;
    ck_assert_uint_eq(nb_utf8_decode("\xE2\x82", 2, &pos), NB_UC_REPLACEMENT); /* truncated */
    ck_assert_uint_eq(pos, 1);
    pos = 0;
    ck_assert_uint_eq(nb_utf8_decode("\xF4\x90\x80\x80", 4, &pos), NB_UC_REPLACEMENT); /* > U+10FFFF */
}
END_TEST

START_TEST(test_bad_metadata) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_kvset kv;
    nb_kvset_init(&kv);
    nb_tokenizer *t = (nb_tokenizer *)1;
    ck_assert_int_eq(nb_tokenizer_create(&kv, &t, &ctx), NB_ERR_FORMAT); /* no model */
    ck_assert_ptr_null(t);
    ck_assert(strstr(nb_errmsg(&ctx), "tokenizer.ggml.model"));
    ck_assert(nb_kv_set_str(&kv, "tokenizer.ggml.model", "t5", &ctx) == NB_OK);
    ck_assert_int_eq(nb_tokenizer_create(&kv, &t, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert(nb_kv_set_str(&kv, "tokenizer.ggml.model", "llama", &ctx) == NB_OK);
    ck_assert_int_eq(nb_tokenizer_create(&kv, &t, &ctx), NB_ERR_FORMAT); /* no tokens */
    ck_assert(strstr(nb_errmsg(&ctx), "tokenizer.ggml.tokens"));
    const char *toks[] = {"a", "", "b"};
    ck_assert(nb_kv_set_arr_str(&kv, "tokenizer.ggml.tokens", 3, toks, &ctx) == NB_OK);
    float sc[2] = {0, 0};
    ck_assert(nb_kv_set_arr(&kv, "tokenizer.ggml.scores", NB_KV_F32, 2, sc, &ctx) == NB_OK);
    ck_assert_int_eq(nb_tokenizer_create(&kv, &t, &ctx), NB_ERR_FORMAT); /* 2 scores for 3 tokens */
    ck_assert(strstr(nb_errmsg(&ctx), "scores"));
    nb_kv_remove(&kv, "tokenizer.ggml.scores");
    uint8_t ty[3] = {1, 1, 1};
    ck_assert(nb_kv_set_arr(&kv, "tokenizer.ggml.token_type", NB_KV_U8, 3, ty, &ctx) == NB_OK);
    ck_assert_int_eq(nb_tokenizer_create(&kv, &t, &ctx), NB_ERR_FORMAT); /* types must be i32 */
    nb_kv_remove(&kv, "tokenizer.ggml.token_type");
    /* out-of-range special ids fall back to the default; an empty text gets a placeholder */
    ck_assert(nb_kv_set_u32(&kv, "tokenizer.ggml.bos_token_id", 99, &ctx) == NB_OK);
    ck_assert_int_eq(nb_tokenizer_create(&kv, &t, &ctx), NB_OK);
    ck_assert_int_eq(nb_tokenizer_bos(t), 1); /* llama default 1 is inside the 3-token vocab */
    ck_assert_int_eq(nb_tokenizer_eos(t), 2);
    ck_assert_int_eq(nb_tokenizer_token_id(t, "[EMPTY_1]", 9), 1);
    nb_tokenizer_free(t);
    /* gpt2 needs merges and a known pre-tokenizer */
    ck_assert(nb_kv_set_str(&kv, "tokenizer.ggml.model", "gpt2", &ctx) == NB_OK);
    ck_assert(nb_kv_set_str(&kv, "tokenizer.ggml.pre", "qwen2", &ctx) == NB_OK);
    ck_assert_int_eq(nb_tokenizer_create(&kv, &t, &ctx), NB_ERR_FORMAT);
    ck_assert(strstr(nb_errmsg(&ctx), "merges"));
    const char *mg[] = {"a b", "nospace"};
    ck_assert(nb_kv_set_arr_str(&kv, "tokenizer.ggml.merges", 2, mg, &ctx) == NB_OK);
    ck_assert(nb_kv_set_str(&kv, "tokenizer.ggml.pre", "no-such-pre", &ctx) == NB_OK);
    ck_assert_int_eq(nb_tokenizer_create(&kv, &t, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert(strstr(nb_errmsg(&ctx), "no-such-pre"));
    ck_assert(nb_kv_set_str(&kv, "tokenizer.ggml.pre", "qwen2", &ctx) == NB_OK);
    ck_assert_int_eq(nb_tokenizer_create(&kv, &t, &ctx), NB_OK);
    ck_assert_int_eq(nb_tokenizer_bos(t), -1); /* gpt2 default 11 is outside the vocab */
    /* "ab" -> a b merge has no token "ab": the symbol is emitted byte by byte; bytes
     * without a 1-byte token are dropped (llama.cpp) */
    EXPECT(t, "ab", false, 0, 2);
    nb_tokenizer_free(t);
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
}
END_TEST

/* Random bytes through both synthetic vocabularies: never fails, every id in
 * range, and the pieces spell the input back (SPM: U+2581 reads as ' '; BPE:
 * the input as llama.cpp decodes it, undecodable bytes as U+FFFD). */
static size_t normalise(const char *s, size_t n, bool spm, char *out) {
    size_t k = 0;
    if (spm) {
        /* escape ' ' as U+2581, then walk SPM's symbols (length from the lead byte):
         * a U+2581 that is a whole symbol reads back as ' ', anything else as its bytes */
        char esc[1024];
        size_t e = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ')
                memcpy(esc + e, "\xE2\x96\x81", 3), e += 3;
            else
                esc[e++] = s[i];
        }
        for (size_t i = 0; i < e;) {
            size_t l = nb_utf8_len((unsigned char)esc[i]);
            if (l > e - i) l = e - i;
            if (l == 3 && memcmp(esc + i, "\xE2\x96\x81", 3) == 0)
                out[k++] = ' ';
            else
                memcpy(out + k, esc + i, l), k += l;
            i += l;
        }
        return k;
    }
    for (size_t pos = 0; pos < n;) k += nb_utf8_encode(nb_utf8_decode(s, n, &pos), out + k);
    return k;
}

START_TEST(test_random_bytes) {
    nb_tokenizer *ts[3] = {make_spm(false), make_bpe("llama-bpe"), make_bpe("default")};
    nb_ctx ctx;
    nbt_ctx(&ctx);
    uint64_t rng = 12345;
    static const char alphabet[] = "ab c\n\t'<>|lhe\xC3\xA9\xE2\x96\x81\xFF\x80" "0123";
    char buf[256], want[1024], got[1024];
    for (int iter = 0; iter < 2000; iter++) {
        size_t n = nbt_rand_u64(&rng) % sizeof buf;
        for (size_t i = 0; i < n; i++) {
            uint64_t r = nbt_rand_u64(&rng);
            buf[i] = (r & 1) ? (char)(r >> 8) : alphabet[(r >> 8) % (sizeof alphabet - 1)];
        }
        for (int k = 0; k < 3; k++) {
            int32_t *ids;
            size_t n_ids;
            ck_assert(nb_tokenize(ts[k], buf, n, iter & 1, &ids, &n_ids, &ctx) == NB_OK);
            size_t ng = 0;
            for (size_t i = 0; i < n_ids; i++) {
                ck_assert(ids[i] >= 0 && ids[i] < nb_tokenizer_n_vocab(ts[k]));
                size_t pl = nb_token_to_piece(ts[k], ids[i], got + ng, sizeof got - ng);
                ck_assert(pl <= sizeof got - ng);
                ng += pl;
            }
            size_t nw = normalise(buf, n, k == 0, want);
            ck_assert_msg(ng == nw && memcmp(got, want, nw) == 0, "vocab %d, iteration %d: pieces differ", k, iter);
            free(ids);
        }
    }
    for (int k = 0; k < 3; k++) nb_tokenizer_free(ts[k]);
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- real models against llama.cpp fixtures ------------------------------------------------ */

static const char *cached(const char *file) {
    static char buf[4096];
    const char *dir = getenv("NIBBLE_MODELS");
    if (dir && *dir)
        snprintf(buf, sizeof buf, "%s/%s", dir, file);
    else if (getenv("HOME"))
        snprintf(buf, sizeof buf, "%s/.cache/nibble/models/%s", getenv("HOME"), file);
    else
        return NULL;
    return access(buf, R_OK) == 0 ? buf : NULL;
}

static void check_ids_json(const nb_tokenizer *t, const char *text, size_t n, bool special, const cJSON *arr,
                           const char *what) {
    int32_t want[4096];
    size_t nw = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        ck_assert(nw < 4096);
        want[nw++] = (int32_t)it->valuedouble;
    }
    (void)what;
    expect_ids(t, text, n, special, want, nw);
}

static int unhex(const char *h, char *out) {
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    return (int)n;
}

static const char *const k_fixtures[] = {"gemma3-270m", "smollm2-135m"};

START_TEST(test_real_fixtures) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/%s.json", nbt_data_dir(), k_fixtures[_i]);
    size_t jn;
    char *js = (char *)nbt_read_file(path, &jn);
    ck_assert_msg(js != NULL, "missing fixture %s", path);
    cJSON *root = cJSON_ParseWithLength(js, jn);
    ck_assert(root);
    const char *file = cJSON_GetObjectItem(root, "file")->valuestring;
    const char *model = cached(file);
    if (!model) {
        printf("SKIP tokenizer fixture %s: model %s not cached (scripts/fetch-models)\n", k_fixtures[_i], file);
        cJSON_Delete(root);
        free(js);
        return;
    }
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_model *m = NULL;
    ck_assert_msg(nb_gguf_open(model, &m, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    nb_tokenizer *t = NULL;
    double t0 = nb_now();
    ck_assert_msg(nb_tokenizer_create(&m->kv, &t, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    double t_build = nb_now() - t0;
    ck_assert_int_eq(nb_tokenizer_n_vocab(t), cJSON_GetObjectItem(root, "n_vocab")->valueint);
    ck_assert_int_eq(nb_tokenizer_bos(t), cJSON_GetObjectItem(root, "bos")->valueint);
    ck_assert_int_eq(nb_tokenizer_eos(t), cJSON_GetObjectItem(root, "eos")->valueint);
    ck_assert_int_eq(nb_tokenizer_add_bos(t), cJSON_IsTrue(cJSON_GetObjectItem(root, "add_bos")));
    ck_assert_int_eq(nb_tokenizer_add_eos(t), cJSON_IsTrue(cJSON_GetObjectItem(root, "add_eos")));

    static char text[1 << 16];
    int n_cases = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        const cJSON *tx = cJSON_GetObjectItem(c, "text");
        size_t n;
        if (tx) {
            n = strlen(tx->valuestring);
            ck_assert(n < sizeof text);
            memcpy(text, tx->valuestring, n);
        } else {
            n = (size_t)unhex(cJSON_GetObjectItem(c, "hex")->valuestring, text);
        }
        const cJSON *ids = cJSON_GetObjectItem(c, "ids");
        const cJSON *ids_sp = cJSON_GetObjectItem(c, "ids_special");
        check_ids_json(t, text, n, false, ids, "ids");
        check_ids_json(t, text, n, true, ids_sp ? ids_sp : ids, "ids_special");
        n_cases++;
    }
    const cJSON *p;
    int n_pieces = 0;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(root, "pieces_hex")) {
        char want[256], got[256];
        int nw = unhex(p->valuestring, want);
        size_t ng = nb_token_to_piece(t, atoi(p->string), got, sizeof got);
        ck_assert_msg((int)ng == nw && memcmp(got, want, (size_t)nw) == 0, "piece of token %s", p->string);
        n_pieces++;
    }

    /* throughput on ~256 KiB of the fixture texts (not asserted; printed) */
    size_t bn = 0;
    char *big = malloc(1 << 18);
    while (bn < (1 << 18) - 4096) {
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
            const cJSON *tx = cJSON_GetObjectItem(c, "text");
            if (!tx) continue;
            size_t n = strlen(tx->valuestring);
            if (bn + n > (1 << 18)) break;
            memcpy(big + bn, tx->valuestring, n);
            bn += n;
        }
    }
    int32_t *ids;
    size_t n_ids;
    t0 = nb_now();
    ck_assert(nb_tokenize(t, big, bn, false, &ids, &n_ids, &ctx) == NB_OK);
    double dt = nb_now() - t0;
    printf("%s: %d fixture texts x 2 modes and %d pieces equal llama.cpp; build %.3f s; "
           "%zu bytes -> %zu tokens in %.3f s\n",
           k_fixtures[_i], n_cases, n_pieces, t_build, bn, n_ids, dt);
    free(ids);
    free(big);
    nb_tokenizer_free(t);
    nb_model_close(m);
    cJSON_Delete(root);
    free(js);
    nb_ctx_free(&ctx);
}
END_TEST

static Suite *tok_suite(void) {
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("tokenizer");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_spm_synthetic);
    tcase_add_test(tc, test_bpe_synthetic);
    tcase_add_test(tc, test_pretokenize);
    tcase_add_test(tc, test_unicode_tables);
    tcase_add_test(tc, test_bad_metadata);
    tcase_add_test(tc, test_random_bytes);
    tcase_add_loop_test(tc, test_real_fixtures, 0, (int)(sizeof k_fixtures / sizeof k_fixtures[0]));
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return nbt_run_suite(tok_suite());
}
