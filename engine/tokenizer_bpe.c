/* engine/tokenizer_bpe.c — byte-level BPE ("gpt2" tokenizer.ggml.model) as llama.cpp runs it.
 *
 * 1. Pre-tokenize: the fragment is decoded to code points (nb_utf8_decode:
 *    undecodable bytes become U+FFFD, as in llama.cpp) and cut into pieces by
 *    the regex family of tokenizer.ggml.pre. The regexes are not run by a
 *    regex engine: each family is a hand-written matcher with the semantics of
 *    llama.cpp's unicode.cpp (its custom gpt2/llama3/qwen2 splitters, and the
 *    std::regex passes on "collapsed" text for \p{N}, \p{N}+, the punctuation
 *    run class and [0-9]{3}). Several regexes run as successive passes, each
 *    cutting every piece of the previous pass.
 * 2. Each piece is re-encoded to UTF-8 and every byte replaced by its GPT-2
 *    stand-in code point (the "byte-level" alphabet the vocab is written in).
 * 3. Merge: the piece starts as one symbol per (stand-in) character; the
 *    adjacent pair with the lowest merge rank is merged, ties to the leftmost,
 *    until no pair has a rank. For the llama3 family (ignore_merges) a piece
 *    that is itself a token is emitted directly.
 * 4. Each final symbol is looked up in the vocab; one that is not a token is
 *    emitted byte by byte as 1-byte token texts, skipping bytes that are not
 *    tokens either (llama.cpp's behaviour).
 */
#include "engine/heap.h"
#include "engine/tokenizer_impl.h"
#include "engine/unicode.h"

#include <stdlib.h>
#include <string.h>

/* ---- growable size_t vector --------------------------------------------- */

typedef struct szvec {
    size_t *v;
    size_t n, cap;
} szvec;

static nb_status sz_push(szvec *a, size_t x, nb_ctx *ctx) {
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        if (nc > SIZE_MAX / sizeof(size_t)) return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: piece list too long");
        size_t *nv = nb_realloc(NULL, a->v, nc * sizeof(size_t), "tokenizer_bpe");
        if (!nv) return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: out of memory (%zu pieces)", nc);
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = x;
    return NB_OK;
}

/* ---- pre-tokenizer passes ------------------------------------------------ */

/* A piece [a, b) of the code point array being cut; `last` is the end of the
 * previous emitted piece. Positions at or past b are "out of range": they have
 * no class (the lookahead in \s+(?!\S) and the ' '-prefix checks see the
 * piece end there, as llama.cpp's splitters do). */
typedef struct cut {
    const uint32_t *cp;
    const uint8_t *cl;
    size_t a, b, last;
    szvec *out;
    nb_ctx *ctx;
    nb_status st;
} cut;

#define OOR 0xFFFFFFFFu

static uint32_t cp_at(const cut *c, size_t p) { return p < c->b ? c->cp[p] : OOR; }
static bool in_range(const cut *c, size_t p) { return p < c->b; }
static bool is_l(const cut *c, size_t p) { return p < c->b && (c->cl[p] & NB_UC_CLASS_MASK) == NB_UC_LETTER; }
static bool is_n(const cut *c, size_t p) { return p < c->b && (c->cl[p] & NB_UC_CLASS_MASK) == NB_UC_NUMBER; }
static bool is_ws(const cut *c, size_t p) { return p < c->b && (c->cl[p] & NB_UC_WS); }
/* [^\s\p{L}\p{N}] and inside the piece */
static bool is_other(const cut *c, size_t p) { return in_range(c, p) && !is_ws(c, p) && !is_l(c, p) && !is_n(c, p); }

static void emit(cut *c, size_t end) {
    if (end > c->last && c->st == NB_OK) c->st = sz_push(c->out, end, c->ctx);
    c->last = end;
}

static uint32_t ascii_lower(uint32_t x) { return (x >= 'A' && x <= 'Z') ? x + 32 : x; }

/* 's|'t|'re|'ve|'m|'ll|'d (case-insensitive when `fold`); returns the match
 * length (2 or 3) at p, or 0. The generator checks that no non-ASCII code point
 * lower-cases to these letters, so ASCII folding equals llama.cpp's tolower. */
static size_t contraction(const cut *c, size_t p, bool fold) {
    if (c->cp[p] != '\'' || p + 1 >= c->b) return 0;
    uint32_t n1 = c->cp[p + 1];
    if (fold) n1 = ascii_lower(n1);
    if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') return 2;
    if (p + 2 >= c->b) return 0;
    uint32_t n2 = c->cp[p + 2];
    if (fold) n2 = ascii_lower(n2);
    if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) return 3;
    return 0;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static void split_gpt2(cut *c) {
    size_t pos = c->a;
    while (pos < c->b) {
        size_t k = contraction(c, pos, false);
        if (k) {
            pos += k;
            emit(c, pos);
            continue;
        }
        bool sp = c->cp[pos] == ' ';
        size_t q = sp ? pos + 1 : pos; /* where the class run would start */
        if (is_l(c, q)) {
            while (is_l(c, q)) q++;
            emit(c, pos = q);
            continue;
        }
        if (is_n(c, q)) {
            while (is_n(c, q)) q++;
            emit(c, pos = q);
            continue;
        }
        if (is_other(c, q)) {
            while (is_other(c, q)) q++;
            emit(c, pos = q);
            continue;
        }
        size_t nws = 0;
        while (is_ws(c, pos + nws)) nws++;
        if (nws > 1 && in_range(c, pos + nws)) { /* \s+(?!\S): leave the last space to the next word */
            emit(c, pos += nws - 1);
            continue;
        }
        if (nws > 0) {
            emit(c, pos += nws);
            continue;
        }
        emit(c, ++pos); /* nothing matched: a piece of its own */
    }
}

/* LLAMA3 (max_digits 3) and QWEN2 (max_digits 1):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static void split_llama3(cut *c, size_t max_digits) {
    size_t pos = c->a;
    while (pos < c->b) {
        size_t k = contraction(c, pos, true);
        if (k) {
            pos += k;
            emit(c, pos);
            continue;
        }
        uint32_t ch = c->cp[pos];
        if (!(ch == '\r' || ch == '\n' || is_n(c, pos)) && (is_l(c, pos) || is_l(c, pos + 1))) {
            pos++; /* the optional non-letter lead, or the first letter */
            while (is_l(c, pos)) pos++;
            emit(c, pos);
            continue;
        }
        if (is_n(c, pos)) {
            size_t run = 0;
            while (is_n(c, pos)) {
                pos++;
                if (++run == max_digits) {
                    emit(c, pos);
                    run = 0;
                }
            }
            emit(c, pos);
            continue;
        }
        size_t q = ch == ' ' ? pos + 1 : pos;
        /* llama.cpp tests the class of q without the range check (an out-of-range
         * q after a final ' ' still enters this branch: it then yields " " alone,
         * the same piece the \s+ rule would give) */
        if (!is_ws(c, q) && !is_l(c, q) && !is_n(c, q)) {
            while (is_other(c, q)) q++;
            while (cp_at(c, q) == '\r' || cp_at(c, q) == '\n') q++;
            emit(c, pos = q);
            continue;
        }
        size_t nws = 0, last_rn = 0;
        while (is_ws(c, pos + nws)) {
            uint32_t w = c->cp[pos + nws];
            if (w == '\r' || w == '\n') last_rn = pos + nws + 1;
            nws++;
        }
        if (last_rn > 0) { /* \s*[\r\n]+ */
            emit(c, pos = last_rn);
            continue;
        }
        if (nws > 1 && in_range(c, pos + nws)) {
            emit(c, pos += nws - 1);
            continue;
        }
        if (nws > 0) {
            emit(c, pos += nws);
            continue;
        }
        emit(c, ++pos);
    }
}

/* A one-class regex run by std::regex in llama.cpp: matches and the gaps
 * between them both become pieces. `each` = every matching code point is its
 * own match (\p{N}); otherwise maximal runs match ([class]+). */
typedef bool (*cp_pred)(const cut *c, size_t p);

static void split_class(cut *c, cp_pred pred, bool each) {
    size_t pos = c->a;
    while (pos < c->b) {
        if (!pred(c, pos)) {
            pos++;
            continue;
        }
        emit(c, pos); /* the gap before the match */
        if (each)
            pos++;
        else
            while (pos < c->b && pred(c, pos)) pos++;
        emit(c, pos);
    }
    emit(c, c->b);
}

/* [\p{P}\$\+<=>\^~\|] */
static bool pred_punct(const cut *c, size_t p) {
    uint32_t ch = c->cp[p];
    if ((c->cl[p] & NB_UC_CLASS_MASK) == NB_UC_PUNCT) return true;
    return ch == '$' || ch == '+' || ch == '<' || ch == '=' || ch == '>' || ch == '^' || ch == '~' || ch == '|';
}
static bool pred_num(const cut *c, size_t p) { return (c->cl[p] & NB_UC_CLASS_MASK) == NB_UC_NUMBER; }
static bool is_digit(uint32_t ch) { return ch >= '0' && ch <= '9'; }

/* [0-9][0-9][0-9]: leftmost non-overlapping triples of ASCII digits */
static void split_digits3(cut *c) {
    size_t pos = c->a;
    while (pos < c->b) {
        if (pos + 3 <= c->b && is_digit(c->cp[pos]) && is_digit(c->cp[pos + 1]) && is_digit(c->cp[pos + 2])) {
            emit(c, pos);
            emit(c, pos += 3);
        } else {
            pos++;
        }
    }
    emit(c, c->b);
}

typedef enum pass { P_GPT2, P_LLAMA3, P_QWEN2, P_NUM_EACH, P_NUM_RUN, P_PUNCT_RUN, P_DIGITS3 } pass;

static nb_status run_pass(pass ps, const uint32_t *cp, const uint8_t *cl, const szvec *in, szvec *out, nb_ctx *ctx) {
    out->n = 0;
    size_t a = 0;
    for (size_t i = 0; i < in->n; i++) {
        cut c = {cp, cl, a, in->v[i], a, out, ctx, NB_OK};
        switch (ps) {
        case P_GPT2: split_gpt2(&c); break;
        case P_LLAMA3: split_llama3(&c, 3); break;
        case P_QWEN2: split_llama3(&c, 1); break;
        case P_NUM_EACH: split_class(&c, pred_num, true); break;
        case P_NUM_RUN: split_class(&c, pred_num, false); break;
        case P_PUNCT_RUN: split_class(&c, pred_punct, false); break;
        case P_DIGITS3: split_digits3(&c); break;
        }
        emit(&c, c.b); /* whatever is left of the piece */
        NB_TRY(c.st);
        a = in->v[i];
    }
    return NB_OK;
}

/* Code points of s (llama.cpp decoding) and their classes. */
static nb_status decode_all(const char *s, size_t n, uint32_t **cps, uint8_t **cls, size_t *ncp, nb_ctx *ctx) {
    *cps = NULL;
    *cls = NULL;
    uint32_t *cp = nb_malloc(NULL, (n ? n : 1) * sizeof *cp, "tokenizer_bpe");
    uint8_t *cl = nb_malloc(NULL, n ? n : 1, "tokenizer_bpe");
    if (!cp || !cl) {
        free(cp);
        free(cl);
        return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: out of memory decoding %zu bytes", n);
    }
    size_t k = 0;
    for (size_t pos = 0; pos < n; k++) {
        cp[k] = nb_utf8_decode(s, n, &pos);
        cl[k] = nb_uc_class(cp[k]);
    }
    *cps = cp;
    *cls = cl;
    *ncp = k;
    return NB_OK;
}

static nb_status pretokenize_cps(nb_pre_kind pre, const uint32_t *cp, const uint8_t *cl, size_t ncp, szvec *res,
                                 nb_ctx *ctx) {
    static const pass p_default[] = {P_PUNCT_RUN, P_GPT2, P_NUM_RUN, P_DIGITS3};
    static const pass p_gpt2[] = {P_GPT2};
    static const pass p_llama3[] = {P_LLAMA3};
    static const pass p_qwen2[] = {P_QWEN2};
    static const pass p_starcoder[] = {P_NUM_EACH, P_GPT2};
    const pass *ps;
    size_t np;
    switch (pre) {
    case NB_PRE_DEFAULT: ps = p_default, np = 4; break;
    case NB_PRE_GPT2: ps = p_gpt2, np = 1; break;
    case NB_PRE_LLAMA3: ps = p_llama3, np = 1; break;
    case NB_PRE_QWEN2: ps = p_qwen2, np = 1; break;
    case NB_PRE_STARCODER: ps = p_starcoder, np = 2; break;
    default: return nb_err(ctx, NB_ERR_INTERNAL, "tokenizer: no pre-tokenizer for kind %d", (int)pre);
    }
    res->n = 0;
    if (ncp == 0) return NB_OK;
    szvec tmp = {0};
    nb_status st = sz_push(res, ncp, ctx);
    for (size_t i = 0; i < np && st == NB_OK; i++) {
        st = run_pass(ps[i], cp, cl, res, &tmp, ctx);
        szvec sw = *res;
        *res = tmp;
        tmp = sw;
    }
    free(tmp.v);
    return st;
}

nb_status nb_bpe_pretokenize(nb_pre_kind pre, const char *s, size_t n, size_t **ends, size_t *n_pieces,
                             nb_ctx *ctx) {
    *ends = NULL;
    *n_pieces = 0;
    uint32_t *cp;
    uint8_t *cl;
    size_t ncp;
    NB_TRY(decode_all(s, n, &cp, &cl, &ncp, ctx));
    szvec res = {0};
    nb_status st = pretokenize_cps(pre, cp, cl, ncp, &res, ctx);
    free(cp);
    free(cl);
    if (st != NB_OK) {
        free(res.v);
        return st;
    }
    *ends = res.v;
    *n_pieces = res.n;
    return NB_OK;
}

/* ---- merging --------------------------------------------------------------- */

typedef struct sym {
    uint32_t off, n; /* bytes in the encoded word */
    int32_t prev, next;
} sym;

typedef struct bigram {
    int32_t left, right;
    int32_t rank;
    uint32_t size;
} bigram;

/* min-heap: lower rank first, then leftmost */
static bool bg_before(const bigram *x, const bigram *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->left < y->left);
}

static bool bg_before_v(const void *x, const void *y) { return bg_before(x, y); }

typedef struct bpe_work {
    char *w; /* encoded word */
    size_t wcap;
    sym *s;
    size_t scap;
    nb_heap h; /* of bigram */
} bpe_work;

static nb_status add_bigram(const nb_tokenizer *t, bpe_work *wk, int32_t l, int32_t r, nb_ctx *ctx) {
    if (l < 0 || r < 0) return NB_OK;
    const sym *L = &wk->s[l], *R = &wk->s[r];
    int32_t rank = nb_tok_merge_rank(t, wk->w + L->off, (size_t)L->n + R->n, L->n);
    if (rank < 0) return NB_OK;
    bigram b = {l, r, rank, L->n + R->n};
    return nb_heap_push(&wk->h, &b, ctx);
}

static nb_status grow(void **p, size_t *cap, size_t need, size_t elem, nb_ctx *ctx) {
    if (need <= *cap) return NB_OK;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / elem) return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: word too long");
        nc *= 2;
    }
    void *np = nb_realloc(NULL, *p, nc * elem, "tokenizer_bpe");
    if (!np) return nb_err(ctx, NB_ERR_NOMEM, "tokenizer: out of memory (%zu bytes)", nc * elem);
    *p = np;
    *cap = nc;
    return NB_OK;
}

/* Merge one encoded word wk->w[0..wn) and append its tokens. */
static nb_status bpe_word(const nb_tokenizer *t, bpe_work *wk, size_t wn, nb_idvec *out, nb_ctx *ctx) {
    if (t->ignore_merges) {
        int32_t id = nb_tok_find(t, wk->w, wn);
        if (id >= 0) return nb_idvec_push(out, id, ctx);
    }
    if (wn > UINT32_MAX / 2) return nb_err(ctx, NB_ERR_RANGE, "tokenizer: a pre-token of %zu bytes is too long", wn);
    NB_TRY(grow((void **)&wk->s, &wk->scap, wn, sizeof(sym), ctx));
    int32_t ns = 0;
    for (size_t off = 0; off < wn;) {
        size_t len = nb_utf8_len((unsigned char)wk->w[off]);
        if (len > wn - off) len = wn - off;
        wk->s[ns] = (sym){(uint32_t)off, (uint32_t)len, ns - 1, off + len == wn ? -1 : ns + 1};
        ns++;
        off += len;
    }
    nb_heap_clear(&wk->h);
    for (int32_t i = 1; i < ns; i++) NB_TRY(add_bigram(t, wk, i - 1, i, ctx));
    while (wk->h.n > 0) {
        bigram b;
        nb_heap_pop(&wk->h, &b);
        sym *L = &wk->s[b.left], *R = &wk->s[b.right];
        /* stale: one side was merged away or grew since the pair was queued */
        if (L->n == 0 || R->n == 0 || L->n + R->n != b.size) continue;
        L->n += R->n;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0) wk->s[R->next].prev = b.left;
        NB_TRY(add_bigram(t, wk, L->prev, b.left, ctx));
        NB_TRY(add_bigram(t, wk, b.left, L->next, ctx));
    }
    for (int32_t i = 0; i >= 0 && i < ns; i = wk->s[i].next) {
        const sym *S = &wk->s[i];
        int32_t id = nb_tok_find(t, wk->w + S->off, S->n);
        if (id >= 0) {
            NB_TRY(nb_idvec_push(out, id, ctx));
            continue;
        }
        for (uint32_t j = 0; j < S->n; j++) { /* 1-byte texts; bytes that are no token are dropped */
            int32_t bid = nb_tok_find(t, wk->w + S->off + j, 1);
            if (bid >= 0) NB_TRY(nb_idvec_push(out, bid, ctx));
        }
    }
    return NB_OK;
}

nb_status nb_bpe_encode(const nb_tokenizer *t, const char *s, size_t n, nb_idvec *out, nb_ctx *ctx) {
    uint32_t *cp;
    uint8_t *cl;
    size_t ncp;
    NB_TRY(decode_all(s, n, &cp, &cl, &ncp, ctx));
    szvec ends = {0};
    bpe_work wk = {0};
    nb_heap_init(&wk.h, sizeof(bigram), bg_before_v);
    nb_status st = pretokenize_cps(t->pre, cp, cl, ncp, &ends, ctx);
    size_t a = 0;
    for (size_t i = 0; i < ends.n && st == NB_OK; i++) {
        size_t b = ends.v[i];
        /* worst case 4 UTF-8 bytes per code point, each byte 2 bytes as a stand-in */
        st = grow((void **)&wk.w, &wk.wcap, (b - a) * 8 + 1, 1, ctx);
        if (st != NB_OK) break;
        size_t wn = 0;
        for (size_t k = a; k < b; k++) {
            char u[4];
            size_t ul = nb_utf8_encode(cp[k], u);
            for (size_t j = 0; j < ul; j++) wn += nb_utf8_encode(nb_gpt2_byte_cp((uint8_t)u[j]), wk.w + wn);
        }
        st = bpe_word(t, &wk, wn, out, ctx);
        a = b;
    }
    free(ends.v);
    free(wk.w);
    free(wk.s);
    nb_heap_free(&wk.h);
    free(cp);
    free(cl);
    return st;
}
