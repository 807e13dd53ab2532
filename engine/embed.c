/* engine/embed.c — text encoders: opening, tokenization, the .emb file and
 * the fidelity metrics. See engine/embed.h; the head of the graph is in
 * forward_embed.c. */
#include "engine/embed_impl.h"

#include "core/afile.h"
#include "core/checked.h"
#include "core/sha256.h"
#include "formats/json_strict.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define EMB_DEFAULT_CTX 2048 /* EmbeddingGemma's max_seq_length */

/* ---- opening --------------------------------------------------------------------------- */

nb_status nb_embed_open(const char *path, const nb_embed_opts *o, nb_embedder **out, nb_ctx *ctx) {
    *out = NULL;
    static const nb_embed_opts def = {0, 0, false};
    if (!o) o = &def;
    NB_RETURN_IF(ctx, o->n_ctx < 0, NB_ERR_INVALID, "embed: negative context %d", o->n_ctx);
    nb_model *model = NULL;
    NB_TRY(nb_model_open(path, &model, ctx));
    nb_status st = NB_OK;
    nb_embedder *m = NULL;
    const char *g = nb_kv_get_str(&model->kv, "general.architecture");
    const nb_arch *a = nb_model_arch(model);
    if (!a || !(a->flags & NB_ARCH_F_ENCODER)) {
        nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: architecture '%s' is not a text encoder (supported: gemma-embedding)",
               path, g ? g : "(none)");
        nb_model_close(model);
        return NB_ERR_UNSUPPORTED;
    }
    int n_ctx = o->n_ctx;
    if (!n_ctx) {
        char key[160];
        uint64_t v = 0;
        snprintf(key, sizeof key, "%s.context_length", a->gguf_arch);
        n_ctx = nb_kv_get_u64(&model->kv, key, &v) && v > 0 && v < EMB_DEFAULT_CTX ? (int)v : EMB_DEFAULT_CTX;
    }
    m = nb_calloc(ctx, 1, sizeof *m, "embedder");
    if (!m) { nb_model_close(model); return NB_ERR_NOMEM; }
    /* every text in one forward call: bidirectional attention sees the whole text */
    nb_engine_opts eo = {.n_ctx = n_ctx, .n_batch = n_ctx, .n_threads = o->n_threads, .precise = o->precise};
    st = nb_engine_open_model(model, &eo, &m->eng, ctx);
    if (st != NB_OK) {
        nb_model_close(model);
        free(m);
        return st;
    }
    m->eng->own_model = true;
    nb_engine *e = m->eng;
    const int E = e->hp.n_embd;
    /* the Dense modules: both or neither; their width from dense_2's shape */
    const nb_tensor *d2 = nb_model_find(model, "dense_2.weight"), *d3 = nb_model_find(model, "dense_3.weight");
    if (d2 || d3) {
        if (!d2 || !d3)
            NB_FAIL_GOTO(st, fail, ctx, NB_ERR_FORMAT, "%s: tensor '%s' is present but '%s' is missing", path,
                         d2 ? "dense_2.weight" : "dense_3.weight", d2 ? "dense_3.weight" : "dense_2.weight");
        if (d2->n_dims != 2 || d2->ne[1] <= 0 || d2->ne[1] > (1 << 22))
            NB_FAIL_GOTO(st, fail, ctx, NB_ERR_FORMAT, "%s: tensor 'dense_2.weight' must be a 2-D {%d, D} matrix",
                         path, E);
        m->n_dense = (int)d2->ne[1];
        NB_CHECK_GOTO(st, nb_eng_bind_mat(e, "dense_2.weight", E, m->n_dense, true, &m->dense2, ctx), fail);
        NB_CHECK_GOTO(st, nb_eng_bind_mat(e, "dense_3.weight", m->n_dense, E, true, &m->dense3, ctx), fail);
    }
    m->pool = nb_calloc(ctx, (size_t)E, sizeof *m->pool, "embedding");
    m->proj = nb_calloc(ctx, (size_t)E, sizeof *m->proj, "embedding");
    m->hidden = nb_calloc(ctx, (size_t)(m->n_dense ? m->n_dense : 1), sizeof *m->hidden, "embedding");
    if (!m->pool || !m->proj || !m->hidden) NB_FAIL_GOTO(st, fail, ctx, NB_ERR_NOMEM, "embed: out of memory");
    if (nb_kv_get(&model->kv, "tokenizer.ggml.model"))
        NB_CHECK_GOTO(st, nb_tokenizer_create(&model->kv, &m->tok, ctx), fail);
    *out = m;
    return NB_OK;
fail:
    nb_embed_free(m);
    return st;
}

void nb_embed_free(nb_embedder *m) {
    if (!m) return;
    nb_engine_free(m->eng);
    nb_tokenizer_free(m->tok);
    free(m->pool);
    free(m->hidden);
    free(m->proj);
    free(m);
}

int nb_embed_dim(const nb_embedder *m) { return m->eng->hp.n_embd; }
int nb_embed_n_ctx(const nb_embedder *m) { return m->eng->n_ctx; }
bool nb_embed_has_tokenizer(const nb_embedder *m) { return m->tok != NULL; }
nb_engine *nb_embed_engine(nb_embedder *m) { return m->eng; }

nb_status nb_embed_tokens(nb_embedder *m, const int32_t *ids, int n, float *out, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, n < 1 || !ids, NB_ERR_INVALID, "embed: empty token sequence");
    NB_RETURN_IF(ctx, n > m->eng->n_ctx, NB_ERR_RANGE, "embed: %d tokens exceed the context of %d (--ctx)", n,
                 m->eng->n_ctx);
    return nb_embed_forward(m, ids, n, out, ctx);
}

nb_status nb_embed_text(nb_embedder *m, const char *text, size_t n, float *out, int *n_tok, nb_ctx *ctx) {
    if (n_tok) *n_tok = 0;
    NB_RETURN_IF(ctx, !m->tok, NB_ERR_UNSUPPORTED, "%s: no tokenizer metadata: cannot embed text",
                 m->eng->model->path);
    int32_t *ids = NULL;
    size_t k = 0;
    NB_TRY(nb_tokenize(m->tok, text, n, false, &ids, &k, ctx));
    const bool bos = nb_tokenizer_add_bos(m->tok) && nb_tokenizer_bos(m->tok) >= 0;
    const bool eos = nb_tokenizer_add_eos(m->tok) && nb_tokenizer_eos(m->tok) >= 0;
    size_t total = k + bos + eos;
    nb_status st = NB_OK;
    int32_t *all = nb_malloc(ctx, (total ? total : 1) * sizeof *all, "tokens");
    if (!all) {
        free(ids);
        return NB_ERR_NOMEM;
    }
    size_t j = 0;
    if (bos) all[j++] = nb_tokenizer_bos(m->tok);
    if (k) memcpy(all + j, ids, k * sizeof *ids);
    j += k;
    if (eos) all[j++] = nb_tokenizer_eos(m->tok);
    free(ids);
    if (total > (size_t)m->eng->n_ctx)
        st = nb_err(ctx, NB_ERR_RANGE, "embed: %zu tokens exceed the context of %d (--ctx)", total, m->eng->n_ctx);
    else if (total == 0)
        st = nb_err(ctx, NB_ERR_INVALID, "embed: empty text and no BOS/EOS token to embed");
    else
        st = nb_embed_forward(m, all, (int)total, out, ctx);
    if (st == NB_OK && n_tok) *n_tok = (int)total;
    free(all);
    return st;
}

/* ---- .emb files ------------------------------------------------------------------------- */

static void le_put(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t le_get(const unsigned char *p, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

void nb_emb_set_free(nb_emb_set *s) {
    if (!s) return;
    free(s->v);
    memset(s, 0, sizeof *s);
}

nb_status nb_emb_write(const char *path, const nb_emb_set *s, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, s->dim < 1 || s->dim > NB_EMB_MAX_DIM || s->count < 1 || s->count > NB_EMB_MAX_COUNT,
                 NB_ERR_INVALID, "%s: %llu embeddings of %u values cannot be written", path,
                 (unsigned long long)s->count, s->dim);
    unsigned char hdr[NB_EMB_HEADER];
    memcpy(hdr, NB_EMB_MAGIC, 8);
    le_put(hdr + 8, 1, 4);
    le_put(hdr + 12, s->dim, 4);
    le_put(hdr + 16, s->count, 8);
    memcpy(hdr + 24, s->text_sha, 32);
    nb_afile f;
    NB_TRY(nb_afile_open(&f, path, false, ctx));
    nb_status st = nb_afile_write(&f, hdr, sizeof hdr, ctx);
    unsigned char buf[4096];
    const uint64_t n = s->count * s->dim;
    for (uint64_t i = 0; st == NB_OK && i < n;) {
        size_t k = 0;
        for (; k + 4 <= sizeof buf && i < n; k += 4, i++) {
            uint32_t u;
            memcpy(&u, &s->v[i], 4);
            le_put(buf + k, u, 4);
        }
        st = nb_afile_write(&f, buf, k, ctx);
    }
    if (st == NB_OK) st = nb_afile_commit(&f, NULL, ctx);
    nb_afile_abort(&f);
    return st;
}

nb_status nb_emb_read(const char *path, nb_emb_set *s, nb_ctx *ctx) {
    memset(s, 0, sizeof *s);
    FILE *fp = fopen(path, "rb");
    if (!fp) return nb_err_errno(ctx, errno, "%s", path);
    nb_status st = NB_OK;
    struct stat sb;
    unsigned char hdr[NB_EMB_HEADER];
    if (fstat(fileno(fp), &sb) != 0) {
        st = nb_err_errno(ctx, errno, "%s", path);
        goto done;
    }
    if (!S_ISREG(sb.st_mode)) NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT, "%s: not a regular file", path);
    if ((uint64_t)sb.st_size < NB_EMB_HEADER || fread(hdr, 1, sizeof hdr, fp) != sizeof hdr)
        NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT, "%s: not an embeddings file (%lld bytes, shorter than the header)",
                     path, (long long)sb.st_size);
    if (memcmp(hdr, NB_EMB_MAGIC, 8) != 0)
        NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT, "%s: not an embeddings file (bad magic)", path);
    const uint64_t ver = le_get(hdr + 8, 4), dim = le_get(hdr + 12, 4), count = le_get(hdr + 16, 8);
    if (ver != 1) NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT, "%s: version %llu is not supported (1)", path,
                               (unsigned long long)ver);
    if (dim < 1 || dim > NB_EMB_MAX_DIM)
        NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT, "%s: dimension %llu is out of range (1..%u)", path,
                     (unsigned long long)dim, NB_EMB_MAX_DIM);
    if (count < 1 || count > NB_EMB_MAX_COUNT)
        NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT, "%s: count %llu is out of range (1..%u)", path,
                     (unsigned long long)count, NB_EMB_MAX_COUNT);
    const uint64_t want = NB_EMB_HEADER + count * dim * 4; /* < 2^47: no overflow with the limits above */
    if ((uint64_t)sb.st_size != want)
        NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT, "%s: %lld bytes, but %llu embeddings of %llu values need %llu", path,
                     (long long)sb.st_size, (unsigned long long)count, (unsigned long long)dim,
                     (unsigned long long)want);
    s->v = nb_malloc(ctx, (size_t)(count * dim) * sizeof *s->v, "embeddings");
    if (!s->v) NB_FAIL_GOTO(st, done, ctx, NB_ERR_NOMEM, "%s: out of memory", path);
    s->dim = (uint32_t)dim;
    s->count = count;
    memcpy(s->text_sha, hdr + 24, 32);
    unsigned char buf[4096];
    for (uint64_t i = 0, n = count * dim; i < n;) {
        size_t want_b = (n - i) * 4 < sizeof buf ? (size_t)(n - i) * 4 : sizeof buf;
        if (fread(buf, 1, want_b, fp) != want_b)
            NB_FAIL_GOTO(st, done, ctx, NB_ERR_IO, "%s: read failed at value %llu", path, (unsigned long long)i);
        for (size_t k = 0; k < want_b; k += 4, i++) {
            uint32_t u = (uint32_t)le_get(buf + k, 4);
            float f;
            memcpy(&f, &u, 4);
            if (!isfinite(f))
                NB_FAIL_GOTO(st, done, ctx, NB_ERR_FORMAT, "%s: embedding %llu, value %llu is not finite", path,
                             (unsigned long long)(i / dim), (unsigned long long)(i % dim));
            s->v[i] = f;
        }
    }
done:
    fclose(fp);
    if (st != NB_OK) nb_emb_set_free(s);
    return st;
}

/* ---- metrics --------------------------------------------------------------------------- */

static double cosine(const float *a, const float *b, uint32_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (uint32_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0.0;
}

/* Corpus row (n_query .. count-1) nearest to query q; ties: the lower row. */
static uint64_t nearest(const nb_emb_set *s, uint64_t q, uint64_t n_query) {
    uint64_t best = n_query;
    double bc = -INFINITY;
    for (uint64_t r = n_query; r < s->count; r++) {
        double c = cosine(s->v + q * s->dim, s->v + r * s->dim, s->dim);
        if (c > bc) {
            bc = c;
            best = r;
        }
    }
    return best;
}

nb_status nb_emb_compare_sets(const nb_emb_set *t, const nb_emb_set *b, bool ignore_text, nb_emb_compare *out,
                              nb_ctx *ctx) {
    memset(out, 0, sizeof *out);
    NB_RETURN_IF(ctx, t->dim != b->dim || t->count != b->count, NB_ERR_FORMAT,
                 "embeddings differ in shape: %llu x %u against the base's %llu x %u", (unsigned long long)t->count,
                 t->dim, (unsigned long long)b->count, b->dim);
    NB_RETURN_IF(ctx, !ignore_text && memcmp(t->text_sha, b->text_sha, 32) != 0, NB_ERR_FORMAT,
                 "the embeddings were made from different texts than the base's (text hashes differ)");
    NB_RETURN_IF(ctx, t->count < 2, NB_ERR_FORMAT, "comparing needs at least 2 embeddings (got %llu)",
                 (unsigned long long)t->count);
    out->count = t->count;
    double sum = 0;
    for (uint64_t r = 0; r < t->count; r++) {
        double d = 1.0 - cosine(t->v + r * t->dim, b->v + r * b->dim, t->dim);
        sum += d;
        if (r == 0 || d > out->cos_dist_max) {
            out->cos_dist_max = d;
            out->worst = r;
        }
    }
    out->cos_dist_mean = sum / (double)t->count;
    out->n_query = t->count / 2;
    out->n_corpus = t->count - out->n_query;
    for (uint64_t q = 0; q < out->n_query; q++) {
        uint64_t nt = nearest(t, q, out->n_query), nbs = nearest(b, q, out->n_query);
        out->same_nn += nt == nbs;
        out->hits_test += nt == out->n_query + q;
        out->hits_base += nbs == out->n_query + q;
    }
    out->same_nn_frac = (double)out->same_nn / (double)out->n_query;
    return NB_OK;
}

/* Embed one line of whitespace-separated decimal token ids. */
static nb_status embed_id_line(nb_embedder *m, const char *s, size_t n, float *out, int *n_tok, nb_ctx *ctx) {
    const int cap = nb_embed_n_ctx(m);
    int32_t *ids = nb_malloc(ctx, (size_t)cap * sizeof *ids, "tokens");
    if (!ids) return NB_ERR_NOMEM;
    nb_status st = NB_OK;
    int k = 0;
    for (size_t i = 0; i < n && st == NB_OK;) {
        if (s[i] == ' ' || s[i] == '\t') { i++; continue; }
        long long v = 0;
        size_t j = i;
        while (j < n && s[j] >= '0' && s[j] <= '9' && v <= INT32_MAX) v = v * 10 + (s[j++] - '0');
        if (j == i || (j < n && s[j] != ' ' && s[j] != '\t') || v > INT32_MAX)
            st = nb_err(ctx, NB_ERR_FORMAT, "byte %zu: expected a token id", i + 1);
        else if (k == cap)
            st = nb_err(ctx, NB_ERR_RANGE, "more than %d tokens (--ctx)", cap);
        else
            ids[k++] = (int32_t)v;
        i = j;
    }
    if (st == NB_OK && k == 0) st = nb_err(ctx, NB_ERR_FORMAT, "no token ids");
    if (st == NB_OK) st = nb_embed_tokens(m, ids, k, out, ctx);
    if (st == NB_OK) *n_tok = k;
    free(ids);
    return st;
}

nb_status nb_embed_lines(nb_embedder *m, const char *text, size_t n, bool ids, nb_emb_set *out,
                         void (*on_line)(void *user, uint64_t line, int n_tok), void *user, nb_ctx *ctx) {
    memset(out, 0, sizeof *out);
    uint64_t count = 0;
    for (size_t i = 0; i < n;) { /* count the non-empty lines first: one allocation */
        const char *nl = memchr(text + i, '\n', n - i);
        size_t e = nl ? (size_t)(nl - text) : n, len = e - i;
        if (len && text[e - 1] == '\r') len--;
        count += len > 0;
        i = e + 1;
    }
    NB_RETURN_IF(ctx, count == 0, NB_ERR_FORMAT, "embed: the text holds no non-empty line");
    NB_RETURN_IF(ctx, count > NB_EMB_MAX_COUNT, NB_ERR_RANGE, "embed: %llu lines (limit %u)",
                 (unsigned long long)count, NB_EMB_MAX_COUNT);
    const uint32_t E = (uint32_t)nb_embed_dim(m);
    out->v = nb_malloc(ctx, (size_t)count * E * sizeof *out->v, "embeddings");
    if (!out->v) return NB_ERR_NOMEM;
    out->dim = E;
    out->count = count;
    nb_sha256 sh;
    nb_sha256_init(&sh);
    nb_sha256_update(&sh, text, n);
    nb_sha256_final(&sh, out->text_sha);
    uint64_t row = 0, line = 0;
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(text + i, '\n', n - i);
        size_t e = nl ? (size_t)(nl - text) : n, len = e - i;
        if (len && text[e - 1] == '\r') len--;
        line++;
        if (len > 0) {
            int n_tok = 0;
            nb_status st = ids ? embed_id_line(m, text + i, len, out->v + row * E, &n_tok, ctx)
                               : nb_embed_text(m, text + i, len, out->v + row * E, &n_tok, ctx);
            if (st != NB_OK) {
                nb_emb_set_free(out);
                return nb_err_prefix(ctx, "line %llu", (unsigned long long)line);
            }
            if (on_line) on_line(user, line, n_tok);
            row++;
        }
        i = e + 1;
    }
    return NB_OK;
}

char *nb_emb_compare_json(const nb_emb_compare *c) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    bool ok = cJSON_AddNumberToObject(o, "count", (double)c->count) &&
              cJSON_AddNumberToObject(o, "cos_dist_mean", c->cos_dist_mean) &&
              cJSON_AddNumberToObject(o, "cos_dist_max", c->cos_dist_max) &&
              cJSON_AddNumberToObject(o, "worst_row", (double)c->worst) &&
              cJSON_AddNumberToObject(o, "queries", (double)c->n_query) &&
              cJSON_AddNumberToObject(o, "corpus", (double)c->n_corpus) &&
              cJSON_AddNumberToObject(o, "same_nn", (double)c->same_nn) &&
              cJSON_AddNumberToObject(o, "same_nn_frac", c->same_nn_frac) &&
              cJSON_AddNumberToObject(o, "pair_hits", (double)c->hits_test) &&
              cJSON_AddNumberToObject(o, "pair_hits_base", (double)c->hits_base);
    char *s = ok ? nb_json_print(o, false) : NULL;
    cJSON_Delete(o);
    return s;
}
