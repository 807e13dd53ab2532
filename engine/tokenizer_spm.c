/* engine/tokenizer_spm.c — SentencePiece-style tokenization ("llama" tokenizer.ggml.model)
 * as llama.cpp's llm_tokenizer_spm runs it.
 *
 * 1. The fragment (optionally with ' ' prepended) has every ' ' replaced by
 *    U+2581 ("▁"); no other normalisation.
 * 2. It is cut into symbols of one UTF-8 character each, the length taken from
 *    the lead byte alone (a broken sequence still makes one symbol of that
 *    many bytes, clipped at the end of the text).
 * 3. Every adjacent pair whose concatenated text is a token is queued with that
 *    token's score; the best pair (highest score, ties to the leftmost) is
 *    merged and the pairs around the merged symbol re-queued, until the queue
 *    is empty. Pairs queued before a neighbour changed are skipped.
 * 4. Each final symbol is its token, or (a single character that is no token)
 *    its bytes as byte-fallback tokens <0xXX>.
 *
 * llama.cpp also keeps a "rev_merge" map to re-split symbols that are not
 * tokens; it never fires: a merged symbol is a token by construction (pairs are
 * queued only when their text is one), and an unmerged symbol is one character,
 * which no pair text can equal. It is not reproduced.
 */
#include "engine/heap.h"
#include "engine/tokenizer_impl.h"
#include "engine/unicode.h"

#include <stdlib.h>
#include <string.h>

typedef struct spm_sym {
    uint32_t off, n;
    int32_t prev, next;
} spm_sym;

typedef struct spm_bigram {
    int32_t left, right;
    float score;
    uint32_t size;
} spm_bigram;

/* max-heap order: higher score first, then leftmost */
static bool sb_before(const spm_bigram *x, const spm_bigram *y) {
    return x->score > y->score || (x->score == y->score && x->left < y->left);
}

static bool sb_before_v(const void *x, const void *y) { return sb_before(x, y); }

typedef struct spm_work {
    char *txt;
    spm_sym *s;
    nb_heap h; /* of spm_bigram */
} spm_work;

static nb_status try_bigram(const nb_tokenizer *t, spm_work *wk, int32_t l, int32_t r, nb_ctx *ctx) {
    if (l < 0 || r < 0) return NB_OK;
    const spm_sym *L = &wk->s[l], *R = &wk->s[r];
    size_t len = (size_t)L->n + R->n;
    if (len > t->max_len) return NB_OK; /* cannot be a token */
    int32_t id = nb_tok_find(t, wk->txt + L->off, len);
    if (id < 0) return NB_OK;
    spm_bigram b = {l, r, t->score[id], (uint32_t)len};
    return nb_heap_push(&wk->h, &b, ctx);
}

nb_status nb_spm_encode(const nb_tokenizer *t, const char *s, size_t n, bool prefix_space, nb_idvec *out,
                        nb_ctx *ctx) {
    /* escaped text: each ' ' becomes the 3 bytes of U+2581 */
    size_t spaces = prefix_space ? 1 : 0;
    for (size_t i = 0; i < n; i++) spaces += s[i] == ' ';
    size_t tn = n + (prefix_space ? 1 : 0) + 2 * spaces;
    if (n > SIZE_MAX / 4 || tn > UINT32_MAX / 2)
        return nb_err(ctx, NB_ERR_RANGE, "tokenizer: text fragment of %zu bytes is too long", n);
    if (tn == 0) return NB_OK;
    spm_work wk = {0};
    nb_heap_init(&wk.h, sizeof(spm_bigram), sb_before_v);
    nb_status st = NB_OK;
    wk.txt = nb_malloc(NULL, tn, "tokenizer_spm");
    wk.s = nb_malloc(NULL, tn * sizeof *wk.s, "tokenizer_spm");
    if (!wk.txt || !wk.s) {
        st = nb_err(ctx, NB_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte fragment", n);
        goto done;
    }
    size_t k = 0;
    for (size_t i = 0; i < n + (prefix_space ? 1 : 0); i++) {
        char ch = prefix_space ? (i == 0 ? ' ' : s[i - 1]) : s[i];
        if (ch == ' ') {
            memcpy(wk.txt + k, "\xE2\x96\x81", 3);
            k += 3;
        } else {
            wk.txt[k++] = ch;
        }
    }
    int32_t ns = 0;
    for (size_t off = 0; off < tn;) {
        size_t len = nb_utf8_len((unsigned char)wk.txt[off]);
        if (len > tn - off) len = tn - off;
        wk.s[ns] = (spm_sym){(uint32_t)off, (uint32_t)len, ns - 1, off + len == tn ? -1 : ns + 1};
        ns++;
        off += len;
    }
    for (int32_t i = 1; i < ns && st == NB_OK; i++) st = try_bigram(t, &wk, i - 1, i, ctx);
    while (st == NB_OK && wk.h.n > 0) {
        spm_bigram b;
        nb_heap_pop(&wk.h, &b);
        spm_sym *L = &wk.s[b.left], *R = &wk.s[b.right];
        if (L->n == 0 || R->n == 0 || L->n + R->n != b.size) continue;
        L->n += R->n;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0) wk.s[R->next].prev = b.left;
        st = try_bigram(t, &wk, L->prev, b.left, ctx);
        if (st == NB_OK) st = try_bigram(t, &wk, b.left, L->next, ctx);
    }
    for (int32_t i = 0; st == NB_OK && i >= 0 && i < ns; i = wk.s[i].next) {
        const spm_sym *S = &wk.s[i];
        int32_t id = nb_tok_find(t, wk.txt + S->off, S->n);
        if (id >= 0) {
            st = nb_idvec_push(out, id, ctx);
            continue;
        }
        for (uint32_t j = 0; j < S->n && st == NB_OK; j++) {
            int32_t bid = t->byte_tok[(unsigned char)wk.txt[S->off + j]];
            /* llama.cpp aborts when a byte has no token; use <unk> (or drop the byte) instead */
            if (bid < 0) bid = t->unk;
            if (bid >= 0) st = nb_idvec_push(out, bid, ctx);
        }
    }
done:
    free(wk.txt);
    free(wk.s);
    nb_heap_free(&wk.h);
    return st;
}
