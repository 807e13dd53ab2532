/* formats/safetensors_write.c — safetensors writer (nb_safetensors_sink_create).
 *
 * Writer: the layout of the reference `serialize_to_file` (byte-identical output
 * for the same tensors and metadata, verified against PyPI safetensors 0.8):
 *   - tensors sorted by dtype descending in the reference's enum order
 *     (BOOL < U8 < I8 < F8_E5M2 < F8_E4M3 < I16 < U16 < F16 < BF16 < I32 < U32 <
 *     F32 < F64 < I64 < U64), then by name ascending (bytewise); data in that
 *     order with no padding between tensors;
 *   - compact JSON (serde_json): "__metadata__" first when there is metadata,
 *     then the tensors in data order, each {"dtype","shape","data_offsets"};
 *     strings escape '"' '\\' \b \f \n \r \t and other bytes < 0x20 as \u00xx
 *     (lower-case hex), everything else raw UTF-8;
 *   - spaces appended so that N is a multiple of 8 (so data starts 8-aligned).
 * The reference writes __metadata__ entries in hash-map order (it varies from
 * run to run); we write sink->kv's order, which is the file's order for kv read
 * by this reader, so a read-write round trip is byte-identical.
 */
#include "formats/safetensors.h"

#include "core/afile.h"
#include "core/checked.h"
#include "formats/json_strict.h"
#include "formats/readers.h"
#include "formats/safetensors_impl.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Safetensors dtypes in the reference's enum order: the writer sorts by it. */
static const char *const g_st_order[] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3",
                                         "I16",  "U16", "F16", "BF16",    "I32",
                                         "U32",  "F32", "F64", "I64",     "U64"};

static int st_dtype_rank(const char *dtype) {
    for (size_t i = 0; i < sizeof g_st_order / sizeof g_st_order[0]; i++)
        if (strcmp(g_st_order[i], dtype) == 0) return (int)i;
    return -1;
}

typedef struct st_buf {
    char *p;
    size_t n, cap;
    bool oom;
} st_buf;

static void buf_put(st_buf *b, const void *s, size_t n) {
    if (b->oom) return;
    if (b->cap - b->n < n + 1) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->n < n + 1) {
            if (cap > SIZE_MAX / 2) { b->oom = true; return; }
            cap *= 2;
        }
        char *p = nb_realloc(NULL, b->p, cap, "safetensors_write");
        if (!p) { b->oom = true; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void buf_puts(st_buf *b, const char *s) { buf_put(b, s, strlen(s)); }

__attribute__((format(printf, 2, 3)))
static void buf_printf(st_buf *b, const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k > 0) buf_put(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

/* A JSON string as serde_json writes it (see the top of this file). */
static void buf_json_str(st_buf *b, const char *s, size_t n) {
    buf_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (c < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", c);
                esc = u;
            }
        }
        if (!esc) continue;
        buf_put(b, s + run, i - run);
        buf_puts(b, esc);
        run = i + 1;
    }
    buf_put(b, s + run, n - run);
    buf_put(b, "\"", 1);
}

/* Shortest decimal text that reads back to the same value. */
static void fmt_float(double v, bool is_f32, char *out, size_t cap) {
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, v);
        if (is_f32 ? strtof(out, NULL) == (float)v : strtod(out, NULL) == v) return;
    }
}

typedef struct st_entry {
    char *name;
    nb_type type;
    uint32_t n_dims;
    int64_t ne[NB_MAX_DIMS];
    uint64_t nbytes;
    int rank;
} st_entry;

typedef enum { ST_DECLARE, ST_DATA, ST_DONE, ST_FAILED } st_state;

typedef struct st_sink {
    char *path;
    st_entry *e;
    size_t n, cap;
    size_t *order;       /* data order (indices into e), set by begin */
    uint64_t data_size;  /* sum of nbytes */
    uint64_t data_written;
    nb_afile f;
    bool f_open;
    st_state state;
} st_sink;

static nb_status sink_add(nb_sink *s, const char *name, nb_type type, uint32_t n_dims,
                          const int64_t *ne, nb_ctx *ctx) {
    st_sink *w = s->impl;
    if (w->state != ST_DECLARE)
        return nb_err(ctx, NB_ERR_INVALID, "%s: add_tensor after begin", w->path);
    if (!name || !name[0]) return nb_err(ctx, NB_ERR_INVALID, "%s: empty tensor name", w->path);
    size_t len = strlen(name), bad;
    if (len > NB_MAX_NAME)
        return nb_err(ctx, NB_ERR_INVALID, "%s: tensor '%.40s...': name is %zu bytes (limit %d)",
                      w->path, name, len, NB_MAX_NAME);
    if (strcmp(name, "__metadata__") == 0)
        return nb_err(ctx, NB_ERR_INVALID, "%s: '__metadata__' is reserved, not a tensor name", w->path);
    if (!nb_utf8_valid((const unsigned char *)name, len, &bad))
        return nb_err(ctx, NB_ERR_INVALID, "%s: tensor name is not valid UTF-8 (byte %zu)", w->path, bad);
    const nb_type_traits *tr = nb_type_get(type);
    if (!tr) return nb_err(ctx, NB_ERR_INVALID, "%s: tensor '%s': invalid type id %d", w->path, name, (int)type);
    int rank = tr->st_dtype ? st_dtype_rank(tr->st_dtype) : -1;
    if (rank < 0 || tr->block_size != 1)
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: tensor '%s': safetensors has no dtype for %s",
                      w->path, name, nb_type_name(type));
    if (n_dims > NB_MAX_DIMS)
        return nb_err(ctx, NB_ERR_INVALID, "%s: tensor '%s': %u dimensions (at most %d)", w->path,
                      name, n_dims, NB_MAX_DIMS);
    st_entry e = {.type = type, .n_dims = n_dims, .rank = rank};
    uint64_t nel = 1;
    for (uint32_t d = 0; d < NB_MAX_DIMS; d++) {
        e.ne[d] = d < n_dims ? ne[d] : 1;
        if (e.ne[d] < 0)
            return nb_err(ctx, NB_ERR_INVALID, "%s: tensor '%s': negative dimension ne[%u] = %" PRId64,
                          w->path, name, d, e.ne[d]);
        if (d < n_dims && !nb_mul_u64(nel, (uint64_t)e.ne[d], &nel))
            return nb_err(ctx, NB_ERR_RANGE, "%s: tensor '%s': element count overflows", w->path, name);
    }
    uint64_t total;
    if (!nb_mul_u64(nel, tr->type_size, &e.nbytes) || !nb_add_u64(w->data_size, e.nbytes, &total))
        return nb_err(ctx, NB_ERR_RANGE, "%s: tensor '%s': byte size overflows", w->path, name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        st_entry *p = nb_realloc(NULL, w->e, cap * sizeof *p, "safetensors_write");
        if (!p) return nb_err(ctx, NB_ERR_NOMEM, "%s: out of memory", w->path);
        w->e = p;
        w->cap = cap;
    }
    e.name = nb_strdup(ctx, name);
    if (!e.name) return NB_ERR_NOMEM;
    w->e[w->n++] = e;
    w->data_size = total;
    return NB_OK;
}

/* qsort context-free comparators: the entry array is reached through a pointer
 * pair (index, entries) packed per element. */
typedef struct st_ord {
    const st_entry *e;
    size_t idx;
} st_ord;

static int cmp_ord(const void *a, const void *b) {
    const st_entry *x = ((const st_ord *)a)->e, *y = ((const st_ord *)b)->e;
    if (x->rank != y->rank) return x->rank > y->rank ? -1 : 1; /* dtype descending */
    return strcmp(x->name, y->name);                             /* then name, bytewise */
}

/* "__metadata__" body from sink->kv. Strings as they are; integers and booleans as
 * decimal text / "true" / "false"; floats as the shortest text that reads back
 * exactly. Arrays have no safetensors equivalent (GGUF token lists, ...) and are
 * skipped with one warning. */
static nb_status build_metadata(const nb_sink *s, const st_sink *w, st_buf *b, bool *any, nb_ctx *ctx) {
    size_t skipped = 0;
    const char *first_skipped = NULL;
    *any = false;
    for (size_t k = 0; k < s->kv.n; k++) {
        const nb_kv *kv = &s->kv.items[k];
        const nb_kv_value *v = &kv->val;
        char num[64];
        const char *text = num;
        size_t tlen;
        switch (v->type) {
        case NB_KV_STRING: text = v->v.s.ptr ? v->v.s.ptr : ""; tlen = (size_t)v->v.s.len; break;
        case NB_KV_U8: case NB_KV_U16: case NB_KV_U32: case NB_KV_U64:
            snprintf(num, sizeof num, "%" PRIu64, v->v.u); tlen = strlen(num); break;
        case NB_KV_I8: case NB_KV_I16: case NB_KV_I32: case NB_KV_I64:
            snprintf(num, sizeof num, "%" PRId64, v->v.i); tlen = strlen(num); break;
        case NB_KV_BOOL: text = v->v.u ? "true" : "false"; tlen = strlen(text); break;
        case NB_KV_F32: case NB_KV_F64:
            fmt_float(v->v.f, v->type == NB_KV_F32, num, sizeof num); tlen = strlen(num); break;
        default:
            if (!skipped++) first_skipped = kv->key;
            continue;
        }
        size_t bad;
        if (!nb_utf8_valid((const unsigned char *)kv->key, strlen(kv->key), &bad) ||
            !nb_utf8_valid((const unsigned char *)text, tlen, &bad))
            return nb_err(ctx, NB_ERR_INVALID, "%s: metadata '%s': not valid UTF-8", w->path, kv->key);
        buf_puts(b, *any ? "," : "\"__metadata__\":{");
        buf_json_str(b, kv->key, strlen(kv->key));
        buf_put(b, ":", 1);
        buf_json_str(b, text, tlen);
        *any = true;
    }
    if (*any) buf_put(b, "}", 1);
    if (skipped)
        NB_WARN(ctx, "%s: %zu array-valued metadata key(s) not written (safetensors metadata holds "
                     "strings only), first '%s'", w->path, skipped, first_skipped);
    return NB_OK;
}

static nb_status sink_begin(nb_sink *s, nb_ctx *ctx) {
    st_sink *w = s->impl;
    if (w->state != ST_DECLARE) return nb_err(ctx, NB_ERR_INVALID, "%s: begin called twice", w->path);
    size_t n = w->n;
    st_ord *ord = nb_malloc(ctx, (n ? n : 1) * sizeof *ord, "tensor order");
    w->order = nb_malloc(ctx, (n ? n : 1) * sizeof *w->order, "tensor order");
    if (!ord || !w->order) { free(ord); return NB_ERR_NOMEM; }
    for (size_t k = 0; k < n; k++) ord[k] = (st_ord){&w->e[k], k};
    qsort(ord, n, sizeof *ord, cmp_ord);
    for (size_t k = 0; k < n; k++) w->order[k] = ord[k].idx;
    free(ord);
    /* Duplicates: same name means same place in a by-name sort. */
    const char **names = nb_malloc(ctx, (n ? n : 1) * sizeof *names, "tensor names");
    if (!names) return NB_ERR_NOMEM;
    for (size_t k = 0; k < n; k++) names[k] = w->e[k].name;
    const char *dup = nb_st_find_duplicate(names, n);
    nb_status st = NB_OK;
    if (dup) st = nb_err(ctx, NB_ERR_INVALID, "%s: tensor '%s' added twice", w->path, dup);
    free(names);
    if (st != NB_OK) return st;

    st_buf b = {0};
    bool any_meta;
    buf_put(&b, "{", 1);
    st = build_metadata(s, w, &b, &any_meta, ctx);
    uint64_t off = 0;
    for (size_t k = 0; k < n && st == NB_OK; k++) {
        const st_entry *e = &w->e[w->order[k]];
        if (k || any_meta) buf_put(&b, ",", 1);
        buf_json_str(&b, e->name, strlen(e->name));
        buf_printf(&b, ":{\"dtype\":\"%s\",\"shape\":[", nb_type_get(e->type)->st_dtype);
        for (uint32_t d = 0; d < e->n_dims; d++) /* safetensors order: ne reversed */
            buf_printf(&b, "%s%" PRId64, d ? "," : "", e->ne[e->n_dims - 1 - d]);
        buf_printf(&b, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + e->nbytes);
        off += e->nbytes;
    }
    buf_put(&b, "}", 1);
    while (!b.oom && b.n % 8) buf_put(&b, " ", 1); /* data starts 8-aligned (out of memory: nothing grows) */
    if (st == NB_OK && b.oom) st = nb_err(ctx, NB_ERR_NOMEM, "%s: out of memory for the header", w->path);
    if (st == NB_OK && b.n > NB_ST_MAX_HEADER)
        st = nb_err(ctx, NB_ERR_RANGE, "%s: header would be %zu bytes (readers accept at most %u)",
                    w->path, b.n, NB_ST_MAX_HEADER);
    if (st == NB_OK) st = nb_afile_open(&w->f, w->path, true, ctx);
    if (st == NB_OK) {
        w->f_open = true;
        unsigned char le[8];
        for (int k = 0; k < 8; k++) le[k] = (unsigned char)((uint64_t)b.n >> (8 * k));
        st = nb_afile_write(&w->f, le, 8, ctx);
        if (st == NB_OK) st = nb_afile_write(&w->f, b.p, b.n, ctx);
    }
    free(b.p);
    if (st != NB_OK) {
        if (w->f_open) nb_afile_abort(&w->f);
        w->f_open = false;
        w->state = ST_FAILED;
        return st;
    }
    w->state = ST_DATA;
    return NB_OK;
}

static size_t sink_data_order(const nb_sink *s, size_t k) {
    const st_sink *w = s->impl;
    return w->order && k < w->n ? w->order[k] : k;
}

/* Name of the tensor that holds data byte `at` (in data order). */
static const char *tensor_at(const st_sink *w, uint64_t at) {
    uint64_t off = 0;
    for (size_t k = 0; k < w->n; k++) {
        const st_entry *e = &w->e[w->order[k]];
        if (at < off + e->nbytes) return e->name;
        off += e->nbytes;
    }
    return "(end)";
}

static nb_status sink_write(nb_sink *s, const void *data, uint64_t n, nb_ctx *ctx) {
    st_sink *w = s->impl;
    if (w->state != ST_DATA) return nb_err(ctx, NB_ERR_INVALID, "%s: write outside begin..commit", w->path);
    if (n > w->data_size - w->data_written)
        return nb_err(ctx, NB_ERR_INVALID,
                      "%s: write of %" PRIu64 " bytes runs past the end of the data (expected at most %"
                      PRIu64 ", found %" PRIu64 ")", w->path, n, w->data_size - w->data_written, n);
    nb_status st = nb_afile_write(&w->f, data, (size_t)n, ctx);
    if (st != NB_OK) {
        nb_err_prefix(ctx, "tensor '%s'", tensor_at(w, w->data_written));
        nb_afile_abort(&w->f);
        w->f_open = false;
        w->state = ST_FAILED;
        return st;
    }
    w->data_written += n;
    return NB_OK;
}

static nb_status sink_commit(nb_sink *s, nb_ctx *ctx) {
    st_sink *w = s->impl;
    if (w->state != ST_DATA) return nb_err(ctx, NB_ERR_INVALID, "%s: commit without a successful begin", w->path);
    if (w->data_written != w->data_size)
        return nb_err(ctx, NB_ERR_INVALID,
                      "%s: tensor '%s' incomplete: data bytes written (expected %" PRIu64 ", found %" PRIu64 ")",
                      w->path, tensor_at(w, w->data_written), w->data_size, w->data_written);
    uint64_t size = w->f.written;
    nb_status st = nb_afile_commit(&w->f, s->sha256, ctx);
    w->f_open = false;
    if (st != NB_OK) {
        w->state = ST_FAILED;
        return st;
    }
    s->bytes_written = size;
    w->state = ST_DONE;
    return NB_OK;
}

static void sink_free(nb_sink *s) {
    if (!s) return;
    st_sink *w = s->impl;
    if (w) {
        if (w->f_open) nb_afile_abort(&w->f);
        for (size_t k = 0; k < w->n; k++) free(w->e[k].name);
        free(w->e);
        free(w->order);
        free(w->path);
        free(w);
    }
    nb_kvset_free(&s->kv);
    free(s);
}

static const nb_sink_ops g_st_sink_ops = {sink_add,   sink_begin,  sink_data_order,
                                          sink_write, sink_commit, sink_free};

nb_status nb_safetensors_sink_create(const char *path, nb_sink **out, nb_ctx *ctx) {
    *out = NULL;
    nb_sink *s = nb_calloc(ctx, 1, sizeof *s, "sink");
    st_sink *w = nb_calloc(ctx, 1, sizeof *w, "sink");
    char *p = nb_strdup(ctx, path);
    if (!s || !w || !p) {
        free(s);
        free(w);
        free(p);
        return NB_ERR_NOMEM;
    }
    w->path = p;
    w->f.fd = -1;
    s->ops = &g_st_sink_ops;
    s->format = NB_FMT_SAFETENSORS;
    nb_kvset_init(&s->kv);
    s->impl = w;
    *out = s;
    return NB_OK;
}
