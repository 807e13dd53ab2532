/* formats/model.c — format probing and the format-independent parts of
 * sources and sinks. */
#include "formats/model.h"

#include "core/cleanup.h"
#include "core/str.h"
#include "formats/readers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

const char *nb_format_name(nb_format f) {
    switch (f) {
    case NB_FMT_SAFETENSORS: return "safetensors";
    case NB_FMT_GGUF: return "gguf";
    case NB_FMT_HF_DIR: return "hf-dir";
    default: return "unknown";
    }
}

static nb_status open_by_kind(const char *path, const struct stat *st, nb_model **out, nb_ctx *ctx) {
    if (S_ISDIR(st->st_mode)) return nb_hf_open(path, out, ctx);
    if (nb_str_ends_with_ci(path, ".json")) return nb_safetensors_open(path, out, ctx);
    /* Probe by content: GGUF starts with its magic; anything else is tried as safetensors. */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return nb_err_errno(ctx, errno, "%s", path);
    unsigned char head[4] = {0};
    ssize_t n = read(fd, head, sizeof head);
    close(fd);
    if (n == 4 && memcmp(head, "GGUF", 4) == 0) return nb_gguf_open(path, out, ctx);
    if (nb_str_ends_with_ci(path, ".gguf"))
        return nb_err(ctx, NB_ERR_FORMAT, "%s: not a GGUF file (bad magic)", path);
    return nb_safetensors_open(path, out, ctx);
}

nb_status nb_model_open(const char *path, nb_model **out, nb_ctx *ctx) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return nb_err_errno(ctx, errno, "%s", path);
    nb_status s = open_by_kind(path, &st, out, ctx);
    if (s == NB_OK) nb_model_index(*out);
    return s;
}

void nb_model_close(nb_model *m) {
    if (!m) return;
    if (m->ops && m->ops->close) m->ops->close(m);
    else nb_model_free_common(m);
}

nb_model *nb_model_alloc(const char *path, nb_format fmt, nb_ctx *ctx) {
    nb_model *m = nb_calloc(ctx, 1, sizeof *m, "model");
    if (!m) return NULL;
    m->path = nb_strdup(ctx, path);
    if (!m->path) { free(m); return NULL; }
    m->format = fmt;
    nb_kvset_init(&m->kv);
    return m;
}

void nb_model_free_common(nb_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_tensors; i++) free(m->tensors[i].name);
    free(m->tensors);
    free(m->index);
    nb_kvset_free(&m->kv);
    free(m->path);
    free(m);
}

nb_status nb_model_read_tensor(nb_model *m, size_t i, void *dst, nb_ctx *ctx) {
    if (i >= m->n_tensors) return nb_err(ctx, NB_ERR_INVALID, "tensor index %zu out of range", i);
    const nb_tensor *t = &m->tensors[i];
    if (t->data) {
        NB_TRY(nb_map_check(t->data, (size_t)t->nbytes, ctx)); /* truncated underneath? (core/cleanup.h) */
        memcpy(dst, t->data, t->nbytes);
        return NB_OK;
    }
    if (!m->ops || !m->ops->read)
        return nb_err(ctx, NB_ERR_INTERNAL, "%s: tensor '%s' has no data", m->path, t->name);
    return m->ops->read(m, i, dst, ctx);
}

nb_status nb_model_tensor_bytes(nb_model *m, size_t i, const void **data, void **owned, nb_ctx *ctx) {
    *data = NULL;
    *owned = NULL;
    if (i >= m->n_tensors) return nb_err(ctx, NB_ERR_INVALID, "tensor index %zu out of range", i);
    const nb_tensor *t = &m->tensors[i];
    if (t->data) {
        NB_TRY(nb_map_check(t->data, (size_t)t->nbytes, ctx));
        *data = t->data;
        return NB_OK;
    }
    NB_RETURN_IF(ctx, t->nbytes > SIZE_MAX, NB_ERR_RANGE, "%s: tensor '%s' is too large", m->path, t->name);
    void *buf = nb_malloc(ctx, (size_t)t->nbytes, t->name);
    if (!buf) return NB_ERR_NOMEM;
    nb_status st = nb_model_read_tensor(m, i, buf, ctx);
    if (st != NB_OK) {
        free(buf);
        return st;
    }
    *data = *owned = buf;
    return NB_OK;
}

uint64_t nb_tensor_nelements(const nb_tensor *t) {
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims && d < NB_MAX_DIMS; d++) n *= (uint64_t)t->ne[d];
    return n;
}

/* Open addressing over tensor indexes (slot = index + 1, 0 empty), valid for
 * the array `base` of `n` tensors it was built from. */
struct nb_tensor_index {
    const nb_tensor *base;
    size_t n, mask;
    size_t slot[];
};

void nb_model_index(nb_model *m) {
    free(m->index);
    m->index = NULL;
    if (m->n_tensors < 8) return; /* a scan is as quick */
    size_t cap = 16;
    while (cap < 2 * m->n_tensors) cap *= 2;
    struct nb_tensor_index *x = calloc(1, sizeof *x + cap * sizeof x->slot[0]);
    if (!x) return; /* tolerated: lookups scan */
    x->base = m->tensors;
    x->n = m->n_tensors;
    x->mask = cap - 1;
    for (size_t i = 0; i < m->n_tensors; i++) {
        size_t h = nb_str_hash(m->tensors[i].name) & x->mask;
        while (x->slot[h]) h = (h + 1) & x->mask;
        x->slot[h] = i + 1; /* in order: the first of equal names is probed first */
    }
    m->index = x;
}

const nb_tensor *nb_model_find(const nb_model *m, const char *name) {
    const struct nb_tensor_index *x = m->index;
    if (x && x->base == m->tensors && x->n == m->n_tensors) {
        for (size_t h = nb_str_hash(name) & x->mask; x->slot[h]; h = (h + 1) & x->mask)
            if (strcmp(m->tensors[x->slot[h] - 1].name, name) == 0) return &m->tensors[x->slot[h] - 1];
        return NULL;
    }
    for (size_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

nb_status nb_model_read_f32(nb_model *m, size_t i, float *dst, nb_ctx *ctx) {
    if (i >= m->n_tensors) return nb_err(ctx, NB_ERR_INVALID, "tensor index %zu out of range", i);
    const nb_tensor *t = &m->tensors[i];
    const nb_type_traits *tr = nb_type_get(t->type);
    if (t->type == NB_TYPE_F32) return nb_model_read_tensor(m, i, dst, ctx);
    NB_RETURN_IF(ctx, !tr || !tr->to_f32, NB_ERR_UNSUPPORTED, "%s: tensor '%s': cannot convert type %s to f32",
                 m->path, t->name, nb_type_name(t->type));
    const void *src;
    void *owned;
    NB_TRY(nb_model_tensor_bytes(m, i, &src, &owned, ctx));
    tr->to_f32(src, dst, (int64_t)nb_tensor_nelements(t));
    free(owned);
    return NB_OK;
}

/* ---- sinks ------------------------------------------------------------------ */

nb_status nb_sink_create(const char *path, nb_format fmt, nb_sink **out, nb_ctx *ctx) {
    *out = NULL;
    if (fmt == NB_FMT_UNKNOWN) {
        if (nb_str_ends_with_ci(path, ".gguf")) fmt = NB_FMT_GGUF;
        else if (nb_str_ends_with_ci(path, ".safetensors")) fmt = NB_FMT_SAFETENSORS;
        else
            return nb_err(ctx, NB_ERR_INVALID, "%s: output must end in .gguf or .safetensors", path);
    }
    if (fmt == NB_FMT_GGUF) return nb_gguf_sink_create(path, out, ctx);
    if (fmt == NB_FMT_SAFETENSORS) return nb_safetensors_sink_create(path, out, ctx);
    return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: cannot write format %s", path, nb_format_name(fmt));
}

nb_status nb_sink_add_tensor(nb_sink *s, const char *name, nb_type type, uint32_t n_dims,
                             const int64_t *ne, nb_ctx *ctx) {
    return s->ops->add_tensor(s, name, type, n_dims, ne, ctx);
}
nb_status nb_sink_begin(nb_sink *s, nb_ctx *ctx) { return s->ops->begin(s, ctx); }
size_t nb_sink_data_order(const nb_sink *s, size_t k) { return s->ops->data_order(s, k); }
nb_status nb_sink_write(nb_sink *s, const void *data, uint64_t n, nb_ctx *ctx) {
    return s->ops->write(s, data, n, ctx);
}
nb_status nb_sink_commit(nb_sink *s, nb_ctx *ctx) { return s->ops->commit(s, ctx); }
void nb_sink_free(nb_sink *s) {
    if (s) s->ops->free(s);
}
