/* engine/logits_file.c — writer and reader of the zstd-compressed log-prob
 * file, and of llama-perplexity's uncompressed one (layouts in logits_file.h). */
#include "engine/logits_file.h"

#include "core/afile.h"
#include "core/checked.h"
#include "core/sha256.h"

#include <errno.h>
#include <sys/stat.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_customMem: zstd's allocations go through the fault hook */
#include <zstd.h>

static const ZSTD_customMem k_zstd_mem = {nb_alloc_opaque, nb_free_opaque, NULL};

/* ---- little-endian helpers ----------------------------------------------------- */

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}
static void put_u64(unsigned char *p, uint64_t v) {
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}
static void put_f32(unsigned char *p, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(p, u);
}
static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const unsigned char *p) { return get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }
static float get_f32(const unsigned char *p) {
    uint32_t u = get_u32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* First 4 bytes of sha256 over the header with the check field (36..40) zero. */
static uint32_t header_check(const unsigned char *hdr) {
    unsigned char tmp[NB_LPF_HEADER_SIZE], d[32];
    memcpy(tmp, hdr, sizeof tmp);
    memset(tmp + 36, 0, 4);
    nb_sha256 s;
    nb_sha256_init(&s);
    nb_sha256_update(&s, tmp, sizeof tmp);
    nb_sha256_final(&s, d);
    return get_u32(d);
}

size_t nb_lpf_rec_size(uint32_t n_vocab) { return NB_LPF_REC_HDR + 2 * (size_t)n_vocab; }
size_t nb_lpf_llamacpp_rec_size(uint32_t n_vocab) { return 2 * (2 * (((size_t)n_vocab + 1) / 2) + 4); }

/* ---- one record --------------------------------------------------------------- */

double nb_lpf_encode(const float *logits, int n_vocab, int tok, void *rec) {
    unsigned char *r = rec;
    float mx = logits[0], mn = logits[0];
    int32_t imax = 0;
    for (int i = 1; i < n_vocab; i++) {
        if (logits[i] > mx) { mx = logits[i]; imax = i; }
        if (logits[i] < mn) mn = logits[i];
    }
    double sum = 0;
    for (int i = 0; i < n_vocab; i++) sum += exp((double)logits[i] - (double)mx);
    const double lse = log(sum);
    const float floor_l = mn > mx - NB_LPF_RANGE ? mn : mx - NB_LPF_RANGE;
    const float scale = (mx - floor_l) / 65535.0f;
    const double lp_tok = ((double)logits[tok] - (double)mx) - lse;
    put_f32(r, scale);
    put_f32(r + 4, (float)(((double)floor_l - (double)mx) - lse));
    put_f32(r + 8, (float)lp_tok);
    put_u32(r + 12, (uint32_t)imax);
    unsigned char *q = r + NB_LPF_REC_HDR;
    if (scale > 0) {
        const float inv = 1.0f / scale;
        for (int i = 0; i < n_vocab; i++) {
            uint32_t v = 0;
            if (logits[i] > floor_l) {
                float x = (logits[i] - floor_l) * inv + 0.5f;
                v = x >= 65535.0f ? 65535u : (uint32_t)x;
            }
            q[2 * i] = (unsigned char)v;
            q[2 * i + 1] = (unsigned char)(v >> 8);
        }
    } else {
        memset(q, 0, 2 * (size_t)n_vocab);
    }
    return -lp_tok;
}

double nb_lpf_encode_llamacpp(const float *logits, int n_vocab, int tok, void *rec) {
    unsigned char *r = rec;
    float mx = logits[0], lo = logits[0];
    for (int i = 1; i < n_vocab; i++) {
        if (logits[i] > mx) mx = logits[i];
        if (logits[i] < lo) lo = logits[i];
    }
    if (lo < mx - NB_LPF_RANGE) lo = mx - NB_LPF_RANGE;
    /* llama-perplexity's arithmetic: float exponentials summed in double, the
     * log and the offsets in float */
    double sum = 0, dsum = 0;
    for (int i = 0; i < n_vocab; i++) {
        sum += expf(logits[i] - mx);
        dsum += exp((double)logits[i] - (double)mx);
    }
    const float lse = (float)log(sum);
    const float scale = (mx - lo) / 65535.f;
    put_f32(r, scale);
    put_f32(r + 4, lo - mx - lse);
    unsigned char *q = r + 8;
    const size_t nq = nb_lpf_llamacpp_rec_size((uint32_t)n_vocab) / 2 - 4;
    memset(q, 0, 2 * nq);
    if (scale > 0) {
        const float inv = 1.f / scale;
        for (int i = 0; i < n_vocab; i++) {
            if (!(logits[i] > lo)) continue;
            long v = lrintf(inv * (logits[i] - lo)); /* round half to even, as nearest_int */
            v = v < 0 ? 0 : v > 65535 ? 65535 : v;
            q[2 * i] = (unsigned char)v;
            q[2 * i + 1] = (unsigned char)(v >> 8);
        }
    }
    return ((double)mx + log(dsum)) - (double)logits[tok];
}

nb_status nb_lpf_decode(const void *rec, uint32_t n_vocab, nb_lpf_rec *out, nb_ctx *ctx) {
    const unsigned char *r = rec;
    out->scale = get_f32(r);
    out->min_lp = get_f32(r + 4);
    out->lp_target = get_f32(r + 8);
    out->argmax = (int32_t)get_u32(r + 12);
    out->q = (const uint16_t *)(const void *)(r + NB_LPF_REC_HDR);
    /* scale <= 16/65535 by construction; allow rounding slack. */
    NB_RETURN_IF(ctx, !isfinite(out->scale) || out->scale < 0 || out->scale > 2.0f * NB_LPF_RANGE / 65535.0f,
                 NB_ERR_FORMAT, "record scale %g out of range", (double)out->scale);
    NB_RETURN_IF(ctx, !isfinite(out->min_lp) || out->min_lp > 1e-3f || out->min_lp < -1e6f, NB_ERR_FORMAT,
                 "record min log-prob %g out of range", (double)out->min_lp);
    NB_RETURN_IF(ctx, !isfinite(out->lp_target) || out->lp_target > 1e-3f, NB_ERR_FORMAT,
                 "record target log-prob %g out of range", (double)out->lp_target);
    NB_RETURN_IF(ctx, out->argmax < 0 || (uint32_t)out->argmax >= n_vocab, NB_ERR_FORMAT,
                 "record argmax %d outside the vocabulary (%u)", out->argmax, n_vocab);
    return NB_OK;
}

bool nb_lpf_vocab_hash(const nb_kvset *kv, unsigned char out[32]) {
    memset(out, 0, 32);
    const nb_kv_value *v = kv ? nb_kv_get(kv, "tokenizer.ggml.tokens") : NULL;
    if (!v || v->type != NB_KV_ARRAY || v->v.arr.elem != NB_KV_STRING) return false;
    nb_sha256 s;
    nb_sha256_init(&s);
    const nb_str *strs = v->v.arr.data;
    for (uint64_t i = 0; i < v->v.arr.n; i++) {
        nb_sha256_update(&s, strs[i].ptr, (size_t)strs[i].len);
        nb_sha256_update(&s, "", 1);
    }
    nb_sha256_final(&s, out);
    return true;
}

void nb_lpf_tokens_hash(const int32_t *tokens, size_t n, unsigned char out[32]) {
    nb_sha256 s;
    nb_sha256_init(&s);
    unsigned char buf[4096];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        put_u32(buf + k, (uint32_t)tokens[i]);
        k += 4;
        if (k == sizeof buf) { nb_sha256_update(&s, buf, k); k = 0; }
    }
    nb_sha256_update(&s, buf, k);
    nb_sha256_final(&s, out);
}

static nb_status check_header(const nb_lpf_header *h, const char *path, uint64_t *n_tok, uint64_t *n_rec,
                              nb_ctx *ctx) {
    NB_RETURN_IF(ctx, h->version != NB_LPF_VERSION, NB_ERR_UNSUPPORTED,
                 "%s: log-prob file version %u (this nibble reads %u)", path, h->version, NB_LPF_VERSION);
    NB_RETURN_IF(ctx, h->n_vocab < 1 || h->n_vocab > NB_LPF_MAX_VOCAB, NB_ERR_FORMAT,
                 "%s: vocabulary size %u out of range", path, h->n_vocab);
    NB_RETURN_IF(ctx, h->n_ctx < 4 || h->n_ctx > NB_LPF_MAX_CTX, NB_ERR_FORMAT, "%s: n_ctx %u out of range",
                 path, h->n_ctx);
    NB_RETURN_IF(ctx, h->n_chunk < 1, NB_ERR_FORMAT, "%s: no chunks", path);
    NB_RETURN_IF(ctx, h->n_scored != h->n_ctx - 1 - h->n_ctx / 2, NB_ERR_FORMAT,
                 "%s: %u scored tokens per chunk, expected %u for n_ctx %u", path, h->n_scored,
                 h->n_ctx - 1 - h->n_ctx / 2, h->n_ctx);
    NB_RETURN_IF(ctx, h->bos < -1 || (h->bos >= 0 && (uint32_t)h->bos >= h->n_vocab), NB_ERR_FORMAT,
                 "%s: BOS id %d outside the vocabulary", path, h->bos);
    NB_RETURN_IF(ctx, h->bos_replaced && h->bos < 0, NB_ERR_FORMAT, "%s: BOS flag set without a BOS id", path);
    uint64_t t, r;
    NB_RETURN_IF(ctx, !nb_mul_u64(h->n_chunk, h->n_ctx, &t) || t > ((uint64_t)1 << 31), NB_ERR_FORMAT,
                 "%s: %u chunks x %u tokens is too many", path, h->n_chunk, h->n_ctx);
    NB_RETURN_IF(ctx, h->n_text_tokens < t, NB_ERR_FORMAT, "%s: text has %llu tokens, fewer than the %llu scored",
                 path, (unsigned long long)h->n_text_tokens, (unsigned long long)t);
    r = (uint64_t)h->n_chunk * h->n_scored;
    *n_tok = t;
    *n_rec = r;
    return NB_OK;
}

/* ---- writer ----------------------------------------------------------------------- */

struct nb_lpf_writer {
    nb_afile f;
    nb_lpf_format fmt;
    ZSTD_CCtx *z;        /* NB_LPF_NIBBLE */
    unsigned char *out;
    size_t out_cap;
    uint32_t n_vocab;
    size_t rec_size;     /* bytes of one record in fmt */
    uint64_t recs_left;
};

/* llama.cpp's header and tokens, uncompressed. */
static nb_status create_llamacpp(nb_lpf_writer *w, const nb_lpf_header *h, const int32_t *tokens, uint64_t n_tok,
                                 nb_ctx *ctx) {
    unsigned char hdr[20];
    memcpy(hdr, NB_LPF_LLAMACPP_MAGIC, 8);
    put_u32(hdr + 8, h->n_ctx);
    put_u32(hdr + 12, h->n_vocab);
    put_u32(hdr + 16, h->n_chunk);
    NB_TRY(nb_afile_write(&w->f, hdr, sizeof hdr, ctx));
    unsigned char buf[4096];
    size_t k = 0;
    for (uint64_t i = 0; i < n_tok; i++) {
        put_u32(buf + k, (uint32_t)tokens[i]);
        k += 4;
        if (k == sizeof buf || i + 1 == n_tok) {
            NB_TRY(nb_afile_write(&w->f, buf, k, ctx));
            k = 0;
        }
    }
    return NB_OK;
}

static nb_status zwrite(nb_lpf_writer *w, const void *data, size_t n, ZSTD_EndDirective mode, nb_ctx *ctx) {
    ZSTD_inBuffer in = {data, n, 0};
    for (;;) {
        ZSTD_outBuffer o = {w->out, w->out_cap, 0};
        size_t rem = ZSTD_compressStream2(w->z, &o, &in, mode);
        if (ZSTD_isError(rem))
            return nb_err(ctx, NB_ERR_INTERNAL, "%s: zstd: %s", w->f.path, ZSTD_getErrorName(rem));
        if (o.pos) NB_TRY(nb_afile_write(&w->f, w->out, o.pos, ctx));
        if (mode == ZSTD_e_end ? rem == 0 : in.pos == in.size) return NB_OK;
    }
}

nb_status nb_lpf_create(const char *path, const nb_lpf_header *h0, const int32_t *tokens, nb_lpf_writer **out,
                        nb_ctx *ctx) {
    *out = NULL;
    nb_lpf_header h = *h0;
    h.version = NB_LPF_VERSION;
    uint64_t n_tok = 0, n_rec = 0;
    NB_TRY(check_header(&h, path, &n_tok, &n_rec, ctx));
    nb_lpf_tokens_hash(tokens, (size_t)n_tok, h.tokens_sha);

    nb_lpf_writer *w = nb_calloc(ctx, 1, sizeof *w, "log-prob writer");
    if (!w) return NB_ERR_NOMEM;
    w->f.fd = -1;
    w->fmt = h.format;
    w->n_vocab = h.n_vocab;
    w->recs_left = n_rec;
    nb_status st = NB_OK;
    if (w->fmt == NB_LPF_LLAMACPP) {
        w->rec_size = nb_lpf_llamacpp_rec_size(h.n_vocab);
        NB_CHECK_GOTO(st, nb_afile_open(&w->f, path, false, ctx), fail);
        NB_CHECK_GOTO(st, create_llamacpp(w, &h, tokens, n_tok, ctx), fail);
        *out = w;
        return NB_OK;
    }
    w->rec_size = nb_lpf_rec_size(h.n_vocab);
    w->out_cap = ZSTD_CStreamOutSize();
    w->out = nb_malloc(ctx, w->out_cap, "zstd output buffer");
    w->z = ZSTD_createCCtx_advanced(k_zstd_mem);
    if (!w->out) { st = NB_ERR_NOMEM; goto fail; }
    if (!w->z) NB_FAIL_GOTO(st, fail, ctx, NB_ERR_NOMEM, "%s: cannot create a zstd context", path);
    /* Level 1 keeps compression far below the forward pass in cost; most of a
     * row is the q = 0 floor, which any level squeezes. */
    ZSTD_CCtx_setParameter(w->z, ZSTD_c_compressionLevel, 1);
    ZSTD_CCtx_setParameter(w->z, ZSTD_c_checksumFlag, 1);
    NB_CHECK_GOTO(st, nb_afile_open(&w->f, path, false, ctx), fail);

    unsigned char hdr[NB_LPF_HEADER_SIZE] = {0};
    memcpy(hdr, NB_LPF_MAGIC, 8);
    put_u32(hdr + 8, h.version);
    put_u32(hdr + 12, h.n_vocab);
    put_u32(hdr + 16, h.n_ctx);
    put_u32(hdr + 20, h.n_chunk);
    put_u32(hdr + 24, h.n_scored);
    put_u32(hdr + 28, h.bos_replaced ? 1u : 0u);
    put_u32(hdr + 32, (uint32_t)h.bos);
    put_u64(hdr + 40, h.n_text_tokens);
    memcpy(hdr + 48, h.tokens_sha, 32);
    memcpy(hdr + 80, h.vocab_sha, 32);
    put_u32(hdr + 36, header_check(hdr));
    NB_CHECK_GOTO(st, nb_afile_write(&w->f, hdr, sizeof hdr, ctx), fail);

    unsigned char buf[4096];
    size_t k = 0;
    for (uint64_t i = 0; i < n_tok; i++) {
        put_u32(buf + k, (uint32_t)tokens[i]);
        k += 4;
        if (k == sizeof buf || i + 1 == n_tok) {
            NB_CHECK_GOTO(st, zwrite(w, buf, k, ZSTD_e_continue, ctx), fail);
            k = 0;
        }
    }
    *out = w;
    return NB_OK;
fail:
    nb_lpf_abort(w);
    return st;
}

nb_status nb_lpf_write(nb_lpf_writer *w, const void *recs, size_t n, nb_ctx *ctx) {
    if (n > w->recs_left) {
        return nb_err(ctx, NB_ERR_INTERNAL, "%s: %zu records written past the %llu announced", w->f.path, n,
                      (unsigned long long)w->recs_left);
    }
    w->recs_left -= n;
    if (w->fmt == NB_LPF_LLAMACPP) return nb_afile_write(&w->f, recs, n * w->rec_size, ctx);
    return zwrite(w, recs, n * w->rec_size, ZSTD_e_continue, ctx);
}

nb_status nb_lpf_commit(nb_lpf_writer *w, nb_ctx *ctx) {
    nb_status st = NB_OK;
    if (w->recs_left) {
        st = nb_err(ctx, NB_ERR_INTERNAL, "%s: %llu records missing", w->f.path, (unsigned long long)w->recs_left);
        goto done;
    }
    if (w->fmt == NB_LPF_NIBBLE) NB_CHECK_GOTO(st, zwrite(w, NULL, 0, ZSTD_e_end, ctx), done);
    NB_CHECK_GOTO(st, nb_afile_commit(&w->f, NULL, ctx), done);
done:
    nb_lpf_abort(w);
    return st;
}

void nb_lpf_abort(nb_lpf_writer *w) {
    if (!w) return;
    nb_afile_abort(&w->f);
    ZSTD_freeCCtx(w->z);
    free(w->out);
    free(w);
}

/* ---- reader ----------------------------------------------------------------------- */

struct nb_lpf_reader {
    FILE *fp;
    char *path;
    ZSTD_DCtx *z;
    unsigned char *in;
    size_t in_cap;
    ZSTD_inBuffer ib;
    bool eof;        /* fread hit end of file */
    size_t last_ret; /* last ZSTD_decompressStream hint: 0 = a frame just ended */
    uint32_t n_vocab;
    uint64_t recs_left;
    /* NB_LPF_LLAMACPP: records are converted on reading, which needs each
     * one's target token */
    nb_lpf_format fmt;
    unsigned char *raw;   /* one llama.cpp record */
    int32_t *tok;         /* the file's tokens */
    uint32_t n_ctx, n_scored;
    uint64_t rec_next;    /* index of the next record */
};

/* Decompress exactly n bytes into dst. */
static nb_status zread(nb_lpf_reader *r, void *dst, size_t n, nb_ctx *ctx) {
    ZSTD_outBuffer o = {dst, n, 0};
    while (o.pos < o.size) {
        if (r->ib.pos == r->ib.size && !r->eof) {
            size_t got = fread(r->in, 1, r->in_cap, r->fp);
            if (got == 0) {
                if (ferror(r->fp)) return nb_err_errno(ctx, errno, "%s: read", r->path);
                r->eof = true;
            }
            r->ib.src = r->in;
            r->ib.size = got;
            r->ib.pos = 0;
        }
        if (r->ib.pos == r->ib.size && r->eof)
            return nb_err(ctx, NB_ERR_FORMAT, "%s: truncated (the compressed data ends early)", r->path);
        size_t before = o.pos, inb = r->ib.pos;
        size_t ret = ZSTD_decompressStream(r->z, &o, &r->ib);
        if (ZSTD_isError(ret))
            return nb_err(ctx, NB_ERR_FORMAT, "%s: corrupt compressed data (%s)", r->path, ZSTD_getErrorName(ret));
        r->last_ret = ret;
        if (o.pos == before && r->ib.pos == inb && r->eof && r->ib.pos == r->ib.size)
            return nb_err(ctx, NB_ERR_FORMAT, "%s: truncated (the compressed data ends early)", r->path);
    }
    return NB_OK;
}

/* Read exactly n raw bytes (llama.cpp's layout). */
static nb_status rread(nb_lpf_reader *r, void *dst, size_t n, nb_ctx *ctx) {
    if (fread(dst, 1, n, r->fp) == n) return NB_OK;
    if (ferror(r->fp)) return nb_err_errno(ctx, errno, "%s: read", r->path);
    return nb_err(ctx, NB_ERR_FORMAT, "%s: truncated", r->path);
}

/* The rest of nb_lpf_open for llama.cpp's layout (magic already read). Every
 * count is checked, and the file's size must be exactly what they promise,
 * before anything is allocated for them. */
static nb_status open_llamacpp(nb_lpf_reader *r, nb_lpf_header *h, int32_t **tokens, nb_ctx *ctx) {
    const char *path = r->path;
    unsigned char hdr[12];
    NB_TRY(rread(r, hdr, sizeof hdr, ctx));
    const int32_t n_ctx = (int32_t)get_u32(hdr), n_vocab = (int32_t)get_u32(hdr + 4),
                  n_chunk = (int32_t)get_u32(hdr + 8);
    NB_RETURN_IF(ctx, n_vocab < 1 || (uint32_t)n_vocab > NB_LPF_MAX_VOCAB, NB_ERR_FORMAT,
                 "%s: llama.cpp log-prob file: vocabulary size %d out of range (1..%u)", path, n_vocab,
                 NB_LPF_MAX_VOCAB);
    NB_RETURN_IF(ctx, n_ctx < 4 || (uint32_t)n_ctx > NB_LPF_MAX_CTX, NB_ERR_FORMAT,
                 "%s: llama.cpp log-prob file: n_ctx %d out of range (4..%u)", path, n_ctx, NB_LPF_MAX_CTX);
    NB_RETURN_IF(ctx, n_chunk < 1, NB_ERR_FORMAT, "%s: llama.cpp log-prob file: %d chunks", path, n_chunk);
    h->format = NB_LPF_LLAMACPP;
    h->n_vocab = (uint32_t)n_vocab;
    h->n_ctx = (uint32_t)n_ctx;
    h->n_chunk = (uint32_t)n_chunk;
    h->n_scored = h->n_ctx - 1 - h->n_ctx / 2;
    h->bos = -1;
    const uint64_t n_tok = (uint64_t)h->n_chunk * h->n_ctx, n_rec = (uint64_t)h->n_chunk * h->n_scored;
    h->n_text_tokens = n_tok;
    uint64_t need = 0, rb = 0;
    struct stat fs;
    if (fstat(fileno(r->fp), &fs) != 0) return nb_err(ctx, NB_ERR_IO, "%s: fstat: %s", path, strerror(errno));
    NB_RETURN_IF(ctx, !nb_mul_u64(n_rec, nb_lpf_llamacpp_rec_size(h->n_vocab), &rb) ||
                          !nb_add_u64(rb, 20 + 4 * n_tok, &need),
                 NB_ERR_FORMAT, "%s: llama.cpp log-prob file: n_ctx %d x %d chunks x vocabulary %d overflows", path,
                 n_ctx, n_chunk, n_vocab);
    NB_RETURN_IF(ctx, need != (uint64_t)fs.st_size, NB_ERR_FORMAT,
                 "%s: llama.cpp log-prob file of %lld bytes, but n_ctx %d, vocabulary %d and %d chunks need %llu",
                 path, (long long)fs.st_size, n_ctx, n_vocab, n_chunk, (unsigned long long)need);
    int32_t *tok = nb_malloc(ctx, (size_t)n_tok * sizeof *tok, "log-prob tokens");
    r->tok = nb_malloc(ctx, (size_t)n_tok * sizeof *tok, "log-prob tokens");
    r->raw = nb_malloc(ctx, nb_lpf_llamacpp_rec_size(h->n_vocab), "log-prob record");
    if (!tok || !r->tok || !r->raw) { free(tok); return NB_ERR_NOMEM; }
    nb_status st = rread(r, tok, (size_t)n_tok * sizeof *tok, ctx);
    for (uint64_t i = 0; st == NB_OK && i < n_tok; i++) {
        uint32_t u = get_u32((const unsigned char *)&tok[i]);
        if (u >= h->n_vocab)
            st = nb_err(ctx, NB_ERR_FORMAT, "%s: token %llu has id %d outside the vocabulary (%u)", path,
                        (unsigned long long)i, (int32_t)u, h->n_vocab);
        tok[i] = (int32_t)u;
    }
    if (st != NB_OK) { free(tok); return st; }
    memcpy(r->tok, tok, (size_t)n_tok * sizeof *tok);
    nb_lpf_tokens_hash(tok, (size_t)n_tok, h->tokens_sha);
    r->fmt = NB_LPF_LLAMACPP;
    r->n_vocab = h->n_vocab;
    r->n_ctx = h->n_ctx;
    r->n_scored = h->n_scored;
    r->recs_left = n_rec;
    *tokens = tok;
    return NB_OK;
}

/* One llama.cpp record (r->raw) -> nibble's record layout at dst, with the
 * target's quantized log-prob and the first largest entry as llama-perplexity
 * derives them. */
static void convert_llamacpp(nb_lpf_reader *r, unsigned char *dst) {
    const uint64_t k = r->rec_next++;
    const uint64_t pos = (k / r->n_scored) * r->n_ctx + r->n_ctx / 2 + k % r->n_scored + 1;
    const int32_t target = r->tok[pos];
    const float scale = get_f32(r->raw), min_lp = get_f32(r->raw + 4);
    const unsigned char *q = r->raw + 8;
    uint32_t best = 0;
    int32_t imax = 0;
    for (uint32_t i = 0; i < r->n_vocab; i++) {
        uint32_t v = (uint32_t)q[2 * i] | (uint32_t)q[2 * i + 1] << 8;
        if (v > best) { best = v; imax = (int32_t)i; }
    }
    const uint32_t qt = (uint32_t)q[2 * target] | (uint32_t)q[2 * target + 1] << 8;
    put_f32(dst, scale);
    put_f32(dst + 4, min_lp);
    put_f32(dst + 8, scale * (float)qt + min_lp);
    put_u32(dst + 12, (uint32_t)imax);
    memcpy(dst + NB_LPF_REC_HDR, q, 2 * (size_t)r->n_vocab);
}

nb_status nb_lpf_open(const char *path, nb_lpf_header *h, int32_t **tokens, nb_lpf_reader **out, nb_ctx *ctx) {
    *out = NULL;
    *tokens = NULL;
    memset(h, 0, sizeof *h);
    nb_lpf_reader *r = nb_calloc(ctx, 1, sizeof *r, "log-prob reader");
    if (!r) return NB_ERR_NOMEM;
    nb_status st = NB_OK;
    int32_t *tok = NULL;
    r->path = nb_strdup(ctx, path);
    if (!r->path) { st = NB_ERR_NOMEM; goto fail; }
    r->fp = fopen(path, "rb");
    if (!r->fp) { st = nb_err_errno(ctx, errno, "%s: open", path); goto fail; }
    unsigned char hdr[NB_LPF_HEADER_SIZE];
    size_t got = fread(hdr, 1, 8, r->fp);
    if (got == 8 && memcmp(hdr, NB_LPF_LLAMACPP_MAGIC, 8) == 0) {
        NB_CHECK_GOTO(st, open_llamacpp(r, h, tokens, ctx), fail);
        *out = r;
        return NB_OK;
    }
    if (got < 8 || memcmp(hdr, NB_LPF_MAGIC, 8) != 0)
        NB_FAIL_GOTO(st, fail, ctx, NB_ERR_FORMAT,
                     "%s: neither a nibble nor a llama.cpp log-prob file (write one with `nibble ppl "
                     "--save-logits`)",
                     path);
    got += fread(hdr + 8, 1, sizeof hdr - 8, r->fp);
    if (got < sizeof hdr) NB_FAIL_GOTO(st, fail, ctx, NB_ERR_FORMAT, "%s: truncated header (%zu bytes)", path, got);
    h->version = get_u32(hdr + 8);
    h->n_vocab = get_u32(hdr + 12);
    h->n_ctx = get_u32(hdr + 16);
    h->n_chunk = get_u32(hdr + 20);
    h->n_scored = get_u32(hdr + 24);
    uint32_t flags = get_u32(hdr + 28);
    h->bos_replaced = flags & 1u;
    h->bos = (int32_t)get_u32(hdr + 32);
    h->n_text_tokens = get_u64(hdr + 40);
    memcpy(h->tokens_sha, hdr + 48, 32);
    memcpy(h->vocab_sha, hdr + 80, 32);
    if (get_u32(hdr + 36) != header_check(hdr))
        NB_FAIL_GOTO(st, fail, ctx, NB_ERR_FORMAT, "%s: header checksum mismatch (file damaged)", path);
    if (flags & ~1u) NB_FAIL_GOTO(st, fail, ctx, NB_ERR_FORMAT, "%s: unknown flags 0x%x", path, flags);
    uint64_t n_tok = 0, n_rec = 0;
    NB_CHECK_GOTO(st, check_header(h, path, &n_tok, &n_rec, ctx), fail);
    /* Counts against what the file can hold, before allocating for them: a zstd
     * block holds at most 128 KiB and takes at least 3 bytes of header plus one
     * of content, so no frame expands more than 32768-fold (the bound below has
     * a margin of 2). */
    struct stat fs;
    if (fstat(fileno(r->fp), &fs) != 0) NB_FAIL_GOTO(st, fail, ctx, NB_ERR_IO, "%s: fstat: %s", path, strerror(errno));
    uint64_t need, rec_bytes, cap = (uint64_t)(fs.st_size > 0 ? fs.st_size : 0) * 65536;
    if (!nb_mul_u64(n_rec, nb_lpf_rec_size(h->n_vocab), &rec_bytes) || !nb_add_u64(rec_bytes, n_tok * 4, &need) ||
        need > cap)
        NB_FAIL_GOTO(st, fail, ctx, NB_ERR_FORMAT,
                     "%s: the header declares %llu tokens and %llu records, more than a %lld-byte file can hold", path,
                     (unsigned long long)n_tok, (unsigned long long)n_rec, (long long)fs.st_size);
    r->n_vocab = h->n_vocab;
    r->recs_left = n_rec;
    r->in_cap = ZSTD_DStreamInSize();
    r->in = nb_malloc(ctx, r->in_cap, "zstd input buffer");
    r->z = ZSTD_createDCtx_advanced(k_zstd_mem);
    if (!r->in) { st = NB_ERR_NOMEM; goto fail; }
    if (!r->z) NB_FAIL_GOTO(st, fail, ctx, NB_ERR_NOMEM, "%s: cannot create a zstd context", path);
    /* A hostile frame cannot make zstd allocate a huge window. */
    ZSTD_DCtx_setParameter(r->z, ZSTD_d_windowLogMax, 27);

    /* The tokens grow with what actually decompresses, so a header that lies
     * within the bound above still costs no more memory than its data. */
    for (uint64_t have = 0; have < n_tok;) {
        uint64_t take = n_tok - have < (1u << 20) ? n_tok - have : (1u << 20);
        int32_t *t2 = nb_realloc(NULL, tok, (size_t)(have + take) * sizeof *tok, "logits_file");
        if (!t2) NB_FAIL_GOTO(st, fail, ctx, NB_ERR_NOMEM, "%s: out of memory for %llu tokens", path,
                              (unsigned long long)n_tok);
        tok = t2;
        NB_CHECK_GOTO(st, zread(r, tok + have, (size_t)take * sizeof *tok, ctx), fail);
        have += take;
    }
    for (uint64_t i = 0; i < n_tok; i++) {
        uint32_t u = get_u32((const unsigned char *)&tok[i]);
        if (u >= h->n_vocab)
            NB_FAIL_GOTO(st, fail, ctx, NB_ERR_FORMAT, "%s: token %llu has id %u outside the vocabulary (%u)", path,
                         (unsigned long long)i, u, h->n_vocab);
        tok[i] = (int32_t)u;
    }
    unsigned char sha[32];
    nb_lpf_tokens_hash(tok, (size_t)n_tok, sha);
    if (memcmp(sha, h->tokens_sha, 32) != 0)
        NB_FAIL_GOTO(st, fail, ctx, NB_ERR_FORMAT, "%s: token hash mismatch (file corrupt)", path);
    *tokens = tok;
    *out = r;
    return NB_OK;
fail:
    free(tok);
    nb_lpf_close(r);
    return st;
}

nb_status nb_lpf_read(nb_lpf_reader *r, void *buf, size_t n, nb_ctx *ctx) {
    if (n > r->recs_left)
        return nb_err(ctx, NB_ERR_INTERNAL, "%s: %zu records asked, %llu left", r->path, n,
                      (unsigned long long)r->recs_left);
    r->recs_left -= n;
    if (r->fmt == NB_LPF_LLAMACPP) {
        const size_t raw = nb_lpf_llamacpp_rec_size(r->n_vocab), rs = nb_lpf_rec_size(r->n_vocab);
        for (size_t i = 0; i < n; i++) {
            NB_TRY(rread(r, r->raw, raw, ctx));
            convert_llamacpp(r, (unsigned char *)buf + i * rs);
        }
        return NB_OK;
    }
    return zread(r, buf, n * nb_lpf_rec_size(r->n_vocab), ctx);
}

nb_status nb_lpf_finish(nb_lpf_reader *r, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, r->recs_left, NB_ERR_INTERNAL, "%s: %llu records not read", r->path,
                 (unsigned long long)r->recs_left);
    if (r->fmt == NB_LPF_LLAMACPP) return NB_OK; /* its size was checked exactly on opening */
    /* The last frame must be complete (its checksum verified) and nothing may follow. */
    unsigned char extra;
    ZSTD_outBuffer o = {&extra, 1, 0};
    for (;;) {
        if (r->ib.pos == r->ib.size && !r->eof) {
            size_t got = fread(r->in, 1, r->in_cap, r->fp);
            if (got == 0) r->eof = true;
            r->ib.src = r->in;
            r->ib.size = got;
            r->ib.pos = 0;
        }
        if (r->ib.pos == r->ib.size && r->eof) break;
        size_t ret = ZSTD_decompressStream(r->z, &o, &r->ib);
        if (ZSTD_isError(ret))
            return nb_err(ctx, NB_ERR_FORMAT, "%s: corrupt compressed data (%s)", r->path, ZSTD_getErrorName(ret));
        r->last_ret = ret;
        if (o.pos) return nb_err(ctx, NB_ERR_FORMAT, "%s: data after the last record", r->path);
    }
    NB_RETURN_IF(ctx, r->last_ret != 0, NB_ERR_FORMAT, "%s: truncated (the last zstd frame is incomplete)",
                 r->path);
    return NB_OK;
}

void nb_lpf_close(nb_lpf_reader *r) {
    if (!r) return;
    if (r->fp) fclose(r->fp);
    ZSTD_freeDCtx(r->z);
    free(r->in);
    free(r->raw);
    free(r->tok);
    free(r->path);
    free(r);
}
