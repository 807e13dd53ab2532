/* calib/corpus.c — calibration text -> token chunks (see calib/corpus.h). */
#include "calib/corpus.h"

#include "core/file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nb_corpus_free(nb_corpus *c) {
    if (!c) return;
    free(c->tokens);
    free(c->chunk_index);
    memset(c, 0, sizeof *c);
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

nb_status nb_corpus_from_tokens(const int32_t *ids, size_t n, int32_t bos, const nb_corpus_opts *o,
                                nb_corpus *out, nb_ctx *ctx) {
    memset(out, 0, sizeof *out);
    if (!o || o->n_ctx < 2) return nb_err(ctx, NB_ERR_INVALID, "calibration: context must be at least 2 tokens");
    const size_t nc = (size_t)o->n_ctx, avail = n / nc;
    if (avail == 0)
        return nb_err(ctx, NB_ERR_RANGE, "calibration text too short: %zu tokens, one chunk needs %zu", n, nc);
    size_t want = avail;
    if (o->max_tokens) {
        uint64_t w = (o->max_tokens + nc - 1) / nc;
        if (w > avail)
            return nb_err(ctx, NB_ERR_RANGE,
                          "calibration text too short: %zu tokens give %zu chunks of %zu, %llu tokens (%llu chunks) "
                          "requested",
                          n, avail, nc, (unsigned long long)o->max_tokens, (unsigned long long)w);
        want = (size_t)w;
    }
    size_t *idx = nb_malloc(ctx, avail * sizeof *idx, "chunk index");
    if (!idx) return NB_ERR_NOMEM;
    for (size_t i = 0; i < avail; i++) idx[i] = i;
    if (want < avail) {
        uint64_t s = o->seed;
        for (size_t i = 0; i < want; i++) { /* partial Fisher-Yates: the first `want` are the sample */
            size_t j = i + (size_t)(splitmix(&s) % (uint64_t)(avail - i));
            size_t t = idx[i];
            idx[i] = idx[j];
            idx[j] = t;
        }
        qsort(idx, want, sizeof *idx, cmp_size);
    }
    out->tokens = nb_malloc(ctx, want * nc * sizeof(int32_t), "calibration chunks");
    if (!out->tokens) { free(idx); return NB_ERR_NOMEM; }
    for (size_t k = 0; k < want; k++) {
        memcpy(out->tokens + k * nc, ids + idx[k] * nc, nc * sizeof(int32_t));
        if (bos >= 0) out->tokens[k * nc] = bos;
    }
    out->chunk_index = idx;
    out->n_chunks = want;
    out->n_ctx = o->n_ctx;
    out->n_stream = n;
    out->n_available = avail;
    return NB_OK;
}

/* Token-id text: digits, whitespace, commas, optional [ ]. */
static bool looks_like_ids(const char *s, size_t n) {
    bool digit = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') digit = true;
        else if (!(c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == '[' || c == ']')) return false;
    }
    return digit;
}

static nb_status parse_ids(const char *path, const char *s, size_t n, int n_vocab, int32_t **ids, size_t *n_ids,
                           nb_ctx *ctx) {
    size_t cap = n / 2 + 1, k = 0;
    int32_t *v = nb_malloc(ctx, cap * sizeof *v, "token ids");
    if (!v) return NB_ERR_NOMEM;
    for (size_t i = 0; i < n;) {
        char c = s[i];
        if (c < '0' || c > '9') {
            if (!(c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == '[' || c == ']')) {
                free(v);
                return nb_err(ctx, NB_ERR_FORMAT, "%s: byte %zu: not a token id list", path, i);
            }
            i++;
            continue;
        }
        size_t at = i;
        uint64_t x = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            x = x * 10 + (uint64_t)(s[i++] - '0');
            if (x > INT32_MAX) { free(v); return nb_err(ctx, NB_ERR_RANGE, "%s: byte %zu: token id too large", path, at); }
        }
        if (n_vocab > 0 && x >= (uint64_t)n_vocab) {
            free(v);
            return nb_err(ctx, NB_ERR_RANGE, "%s: token %zu (byte %zu): id %llu is outside the vocabulary (%d)", path, k,
                          at, (unsigned long long)x, n_vocab);
        }
        v[k++] = (int32_t)x;
    }
    *ids = v;
    *n_ids = k;
    return NB_OK;
}

nb_status nb_corpus_load(const char *path, const nb_tokenizer *tok, int n_vocab, const nb_corpus_opts *o,
                         nb_corpus *out, nb_ctx *ctx) {
    memset(out, 0, sizeof *out);
    char *buf = NULL;
    size_t n = 0;
    NB_TRY(nb_read_file(path, SIZE_MAX, &buf, &n, ctx));
    if (n == 0) { free(buf); return nb_err(ctx, NB_ERR_RANGE, "%s: calibration file is empty", path); }
    nb_corpus_kind kind = o->kind;
    if (kind == NB_CORPUS_AUTO) kind = looks_like_ids(buf, n) ? NB_CORPUS_IDS : NB_CORPUS_TEXT;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    nb_status st;
    int32_t bos = -1;
    if (kind == NB_CORPUS_IDS) {
        st = parse_ids(path, buf, n, tok ? nb_tokenizer_n_vocab(tok) : n_vocab, &ids, &n_ids, ctx);
        if (tok && nb_tokenizer_add_bos(tok)) bos = nb_tokenizer_bos(tok);
    } else if (!tok) {
        st = nb_err(ctx, NB_ERR_INVALID, "%s: a text corpus needs the model's tokenizer", path);
    } else {
        /* BOS first when the vocabulary adds it, as llama-imatrix tokenizes */
        int32_t *raw = NULL;
        size_t n_raw = 0;
        st = nb_tokenize(tok, buf, n, false, &raw, &n_raw, ctx);
        if (st == NB_OK) {
            if (nb_tokenizer_add_bos(tok)) bos = nb_tokenizer_bos(tok);
            ids = nb_malloc(ctx, (n_raw + 1) * sizeof *ids, "calibration tokens");
            if (!ids) st = NB_ERR_NOMEM;
            else {
                if (bos >= 0) ids[n_ids++] = bos;
                if (n_raw) memcpy(ids + n_ids, raw, n_raw * sizeof *ids);
                n_ids += n_raw;
            }
        }
        free(raw);
    }
    free(buf);
    if (st == NB_OK) {
        st = nb_corpus_from_tokens(ids, n_ids, bos, o, out, ctx);
        if (st != NB_OK) nb_err_prefix(ctx, "%s", path);
        out->from_ids = kind == NB_CORPUS_IDS;
    }
    free(ids);
    return st;
}
