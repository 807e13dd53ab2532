/* tests/fuzz/fuzz_tokenizer.c — libFuzzer target for the tokenizers.
 *
 * Input: one mode byte, then the text.
 *   mode & 0x80 == 0: tokenize the text with one of six fixed small vocabs
 *     (SPM with and without add_space_prefix; BPE with the default, gpt-2,
 *     llama3, qwen2 and smollm pre-tokenizers), parse_special from bit 3;
 *   mode & 0x80: also build a vocabulary from the text itself (pieces split
 *     at 0x01 bytes become tokens, the ones with a space also merges, types and
 *     scores derived from the bytes) and tokenize the text with it: hostile
 *     vocabularies (duplicates, empty texts, "<0x" stubs, odd merges) must be
 *     refused or handled, never crash.
 * Every returned id must lie in the vocab and have a piece.
 */
#include "engine/tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const k_pre[] = {"default", "gpt-2", "llama-bpe", "qwen2", "smollm"};

static nb_tokenizer *fixed_vocab(int which, nb_ctx *ctx) {
    static char names[300][8];
    const char *tok[300];
    float score[300];
    int32_t type[300];
    int n = 0;
    bool spm = which < 2;
    if (spm) {
        tok[n] = "<unk>", type[n] = 2, score[n++] = 0;
        tok[n] = "<s>", type[n] = 3, score[n++] = 0;
        tok[n] = "</s>", type[n] = 3, score[n++] = 0;
        for (int b = 0; b < 256; b++) {
            snprintf(names[b], sizeof names[b], "<0x%02X>", b);
            tok[n] = names[b], type[n] = 6, score[n++] = 0;
        }
        static const char *const words[] = {"\xE2\x96\x81", "a", "b", "ab", "\xE2\x96\x81" "a", "ba", "aa",
                                            "\xC3\xA9", "<t>", "\n\n"};
        for (int i = 0; i < 10; i++) tok[n] = words[i], type[n] = i >= 8 ? 4 : 1, score[n++] = (float)-(i % 4);
    } else {
        for (int b = 0; b < 256; b++) { /* GPT-2 stand-ins as UTF-8 */
            unsigned cp = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE ? (unsigned)b : 0;
            if (!cp) {
                unsigned k = b <= 0x20 ? (unsigned)b : b <= 0xA0 ? 33u + (unsigned)(b - 0x7F) : 67u;
                cp = 0x100 + k;
            }
            if (cp < 0x80) {
                names[b][0] = (char)cp, names[b][1] = 0;
            } else {
                names[b][0] = (char)(0xC0 | (cp >> 6)), names[b][1] = (char)(0x80 | (cp & 0x3F)), names[b][2] = 0;
            }
            tok[n] = names[b], type[n] = 1, score[n++] = 0;
        }
        static const char *const words[] = {"ab", "\xC4\xA0" "a", "\xC4\xA0" "ab", "<|e|>", "<u>"};
        for (int i = 0; i < 5; i++) tok[n] = words[i], type[n] = i == 3 ? 3 : i == 4 ? 4 : 1, score[n++] = 0;
    }
    nb_kvset kv;
    nb_kvset_init(&kv);
    nb_tokenizer *t = NULL;
    int ok = nb_kv_set_str(&kv, "tokenizer.ggml.model", spm ? "llama" : "gpt2", ctx) == NB_OK &&
             nb_kv_set_arr_str(&kv, "tokenizer.ggml.tokens", (uint64_t)n, tok, ctx) == NB_OK &&
             nb_kv_set_arr(&kv, "tokenizer.ggml.scores", NB_KV_F32, (uint64_t)n, score, ctx) == NB_OK &&
             nb_kv_set_arr(&kv, "tokenizer.ggml.token_type", NB_KV_I32, (uint64_t)n, type, ctx) == NB_OK;
    if (ok && spm) ok = nb_kv_set_bool(&kv, "tokenizer.ggml.add_space_prefix", which == 1, ctx) == NB_OK;
    if (ok && !spm) {
        static const char *const merges[] = {"a b", "\xC4\xA0 a", "\xC4\xA0" "a b"};
        ok = nb_kv_set_str(&kv, "tokenizer.ggml.pre", k_pre[which - 2], ctx) == NB_OK &&
             nb_kv_set_arr_str(&kv, "tokenizer.ggml.merges", 3, merges, ctx) == NB_OK;
    }
    if (ok && nb_tokenizer_create(&kv, &t, ctx) != NB_OK) t = NULL;
    nb_kvset_free(&kv);
    return t;
}

/* A vocabulary made of the input: pieces between 0x01 bytes. */
static nb_tokenizer *input_vocab(const uint8_t *d, size_t n, bool spm, int pre, nb_ctx *ctx) {
    enum { MAXT = 64 };
    char *copy = malloc(n + 1);
    if (!copy) return NULL;
    memcpy(copy, d, n);
    copy[n] = 0;
    const char *tok[MAXT];
    float score[MAXT];
    int32_t type[MAXT];
    const char *merges[MAXT];
    uint64_t nt = 0, nm = 0;
    char *p = copy;
    for (size_t i = 0; i <= n && nt < MAXT; i++) {
        if (i == n || copy[i] == 1) {
            copy[i] = 0;
            tok[nt] = p;
            score[nt] = (float)((unsigned char)p[0]) - 128.0f;
            type[nt] = (int32_t)((unsigned char)p[0] % 8);
            if (strchr(p, ' ') && nm < MAXT) merges[nm++] = p;
            nt++;
            p = copy + i + 1;
        }
    }
    nb_kvset kv;
    nb_kvset_init(&kv);
    nb_tokenizer *t = NULL;
    int ok = nb_kv_set_str(&kv, "tokenizer.ggml.model", spm ? "llama" : "gpt2", ctx) == NB_OK &&
             nb_kv_set_arr_str(&kv, "tokenizer.ggml.tokens", nt, tok, ctx) == NB_OK &&
             nb_kv_set_arr(&kv, "tokenizer.ggml.scores", NB_KV_F32, nt, score, ctx) == NB_OK &&
             nb_kv_set_arr(&kv, "tokenizer.ggml.token_type", NB_KV_I32, nt, type, ctx) == NB_OK &&
             nb_kv_set_u32(&kv, "tokenizer.ggml.bos_token_id", (uint32_t)(n ? d[0] % 70 : 0), ctx) == NB_OK;
    if (ok && !spm)
        ok = nb_kv_set_str(&kv, "tokenizer.ggml.pre", k_pre[pre % 5], ctx) == NB_OK &&
             nb_kv_set_arr_str(&kv, "tokenizer.ggml.merges", nm, merges, ctx) == NB_OK;
    if (ok && nb_tokenizer_create(&kv, &t, ctx) != NB_OK) t = NULL;
    nb_kvset_free(&kv);
    free(copy);
    return t;
}

static void run(const nb_tokenizer *t, const char *text, size_t n, bool special, nb_ctx *ctx) {
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (nb_tokenize(t, text, n, special, &ids, &n_ids, ctx) != NB_OK) return;
    char piece[512];
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= nb_tokenizer_n_vocab(t)) abort();
        size_t l = nb_token_to_piece(t, ids[i], piece, sizeof piece);
        (void)l;
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static nb_tokenizer *fixed[7];
    static nb_ctx ctx;
    static int init;
    if (!init) {
        nb_ctx_init(&ctx);
        ctx.quiet = true;
        ctx.log_level = NB_LOG_ERROR;
        for (int i = 0; i < 7; i++) fixed[i] = fixed_vocab(i, &ctx);
        init = 1;
    }
    if (size < 1) return 0;
    uint8_t mode = data[0];
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    bool special = mode & 8;
    if (mode & 0x80) {
        nb_tokenizer *t = input_vocab(data + 1, n, mode & 1, mode >> 1, &ctx);
        if (t) run(t, text, n, special, &ctx);
        nb_tokenizer_free(t);
        return 0;
    }
    nb_tokenizer *t = fixed[(mode & 7) % 7];
    if (t) run(t, text, n, special, &ctx);
    return 0;
}
