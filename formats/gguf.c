/* formats/gguf.c — GGUF reader (mmap, zero-copy) and streaming writer.
 * The byte layout and the reader's rules are documented in formats/gguf.h. */
#include "formats/gguf.h"

#include "core/afile.h"
#include "core/checked.h"
#include "core/cleanup.h"
#include "formats/readers.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "formats/gguf.c assumes a little-endian host (GGUF data is copied without swapping)"
#endif

static const unsigned char GGUF_MAGIC[4] = {'G', 'G', 'U', 'F'};
#define GGUF_WRITE_VERSION 3u

/* Smallest encoding of one array element of type t: lets counts be checked
 * against the bytes left before anything is allocated. */
static uint64_t min_elem_bytes(nb_kv_type t) {
    if (t == NB_KV_STRING) return 8;      /* u64 length */
    if (t == NB_KV_ARRAY) return 4 + 8;   /* u32 elem_type + u64 n */
    return nb_kv_scalar_size(t);
}

static bool valid_kv_type(uint32_t t) { return t < NB_KV_TYPE_COUNT; }

static bool is_pow2(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

/* ============================== reader ==================================== */

typedef struct rd {
    const unsigned char *p;
    uint64_t size;
    uint64_t pos;
    const char *name;   /* file name for messages */
    nb_ctx *ctx;
    char where[320];    /* "header", "metadata key 'k'", "tensor 'x'" */
} rd;

__attribute__((format(printf, 4, 5)))
static nb_status rd_fail(rd *r, uint64_t off, nb_status code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nb_err(r->ctx, code, "%s: offset %" PRIu64 ": %s: %s", r->name, off, r->where, msg);
}

static void rd_where(rd *r, const char *what, const char *s, uint64_t len) {
    /* Long or binary names are cut for the message; the cut is marked. */
    int n = len > 200 ? 200 : (int)len;
    snprintf(r->where, sizeof r->where, "%s '%.*s%s'", what, n, s, len > 200 ? "..." : "");
}

static uint64_t rd_left(const rd *r) { return r->size - r->pos; }

static nb_status rd_need(rd *r, uint64_t n, const char *what) {
    if (n > rd_left(r))
        return rd_fail(r, r->pos, NB_ERR_FORMAT,
                       "truncated: %s needs %" PRIu64 " bytes, %" PRIu64 " left in file", what, n,
                       rd_left(r));
    return NB_OK;
}

static nb_status rd_u32(rd *r, uint32_t *out, const char *what) {
    NB_TRY(rd_need(r, 4, what));
    memcpy(out, r->p + r->pos, 4);
    r->pos += 4;
    return NB_OK;
}

static nb_status rd_u64(rd *r, uint64_t *out, const char *what) {
    NB_TRY(rd_need(r, 8, what));
    memcpy(out, r->p + r->pos, 8);
    r->pos += 8;
    return NB_OK;
}

/* A length-prefixed string. On success *out holds a malloc'd NUL-terminated
 * copy (freed by the caller / the kv set). `no_nul`: reject embedded NULs. */
static nb_status rd_str(rd *r, nb_str *out, const char *what, bool no_nul, uint64_t max_len) {
    uint64_t at = r->pos, len;
    NB_TRY(rd_u64(r, &len, what));
    if (len > rd_left(r))
        return rd_fail(r, at, NB_ERR_FORMAT,
                       "%s length %" PRIu64 " exceeds file size (%" PRIu64 " bytes left)", what, len,
                       rd_left(r));
    if (len > max_len)
        return rd_fail(r, at, NB_ERR_UNSUPPORTED, "%s length %" PRIu64 " exceeds the limit of %" PRIu64,
                       what, len, max_len);
    const char *src = (const char *)r->p + r->pos;
    if (no_nul && memchr(src, 0, (size_t)len))
        return rd_fail(r, at, NB_ERR_FORMAT, "%s contains a NUL byte", what);
    char *s = nb_malloc(r->ctx, (size_t)len + 1, what);
    if (!s) return NB_ERR_NOMEM;
    memcpy(s, src, (size_t)len);
    s[len] = 0;
    out->len = len;
    out->ptr = s;
    r->pos += len;
    return NB_OK;
}

static nb_status rd_scalar(rd *r, nb_kv_type t, nb_kv_value *out) {
    size_t sz = nb_kv_scalar_size(t);
    uint64_t at = r->pos;
    NB_TRY(rd_need(r, sz, nb_kv_type_name(t)));
    const unsigned char *b = r->p + r->pos;
    out->type = t;
    switch (t) {
    case NB_KV_U8: out->v.u = b[0]; break;
    case NB_KV_BOOL:
        if (b[0] > 1) return rd_fail(r, at, NB_ERR_FORMAT, "bool value %u is not 0 or 1", b[0]);
        out->v.u = b[0];
        break;
    case NB_KV_I8: { int8_t x; memcpy(&x, b, 1); out->v.i = x; break; }
    case NB_KV_U16: { uint16_t x; memcpy(&x, b, 2); out->v.u = x; break; }
    case NB_KV_I16: { int16_t x; memcpy(&x, b, 2); out->v.i = x; break; }
    case NB_KV_U32: { uint32_t x; memcpy(&x, b, 4); out->v.u = x; break; }
    case NB_KV_I32: { int32_t x; memcpy(&x, b, 4); out->v.i = x; break; }
    case NB_KV_U64: { uint64_t x; memcpy(&x, b, 8); out->v.u = x; break; }
    case NB_KV_I64: { int64_t x; memcpy(&x, b, 8); out->v.i = x; break; }
    case NB_KV_F32: { float x; memcpy(&x, b, 4); out->v.f = (double)x; break; }
    case NB_KV_F64: { double x; memcpy(&x, b, 8); out->v.f = x; break; }
    default: return rd_fail(r, at, NB_ERR_INTERNAL, "not a scalar type %d", (int)t);
    }
    r->pos += sz;
    return NB_OK;
}

/* The body of an array value (after the ARRAY tag): u32 elem, u64 n, items.
 * `depth` is this array's nesting level (1 for a top-level array). On failure
 * *out is left in a state nb_kv_value_free releases (counts cover only zeroed
 * or filled slots). */
static nb_status rd_array(rd *r, nb_kv_value *out, int depth) {
    uint64_t at = r->pos;
    uint32_t elem;
    uint64_t n;
    out->type = NB_KV_ARRAY;
    out->v.arr.elem = NB_KV_U8;
    out->v.arr.n = 0;
    out->v.arr.data = NULL;
    if (depth > NB_GGUF_MAX_DEPTH)
        return rd_fail(r, at, NB_ERR_UNSUPPORTED, "arrays nested deeper than %d levels",
                       NB_GGUF_MAX_DEPTH);
    NB_TRY(rd_u32(r, &elem, "array element type"));
    if (!valid_kv_type(elem))
        return rd_fail(r, at, NB_ERR_FORMAT, "invalid array element type %" PRIu32, elem);
    uint64_t at_n = r->pos;
    NB_TRY(rd_u64(r, &n, "array length"));
    uint64_t min = min_elem_bytes((nb_kv_type)elem);
    if (n > rd_left(r) / min)
        return rd_fail(r, at_n, NB_ERR_FORMAT,
                       "array of %" PRIu64 " %s exceeds file size (%" PRIu64 " bytes left)", n,
                       nb_kv_type_name((nb_kv_type)elem), rd_left(r));
    out->v.arr.elem = (nb_kv_type)elem;
    if (elem == NB_KV_STRING) {
        nb_str *s = nb_calloc(r->ctx, n ? (size_t)n : 1, sizeof *s, "string array");
        if (!s) return NB_ERR_NOMEM;
        out->v.arr.data = s;
        out->v.arr.n = n; /* zeroed slots free as empty */
        for (uint64_t k = 0; k < n; k++) NB_TRY(rd_str(r, &s[k], "string", false, UINT64_MAX));
    } else if (elem == NB_KV_ARRAY) {
        nb_kv_value *v = nb_calloc(r->ctx, n ? (size_t)n : 1, sizeof *v, "nested array");
        if (!v) return NB_ERR_NOMEM;
        out->v.arr.data = v;
        out->v.arr.n = n; /* zeroed slots are U8 scalars: nothing to free */
        for (uint64_t k = 0; k < n; k++) NB_TRY(rd_array(r, &v[k], depth + 1));
    } else {
        uint64_t bytes = n * min; /* cannot overflow: n <= left / min */
        unsigned char *d = nb_malloc(r->ctx, (size_t)bytes, "array");
        if (!d) return NB_ERR_NOMEM;
        memcpy(d, r->p + r->pos, (size_t)bytes);
        out->v.arr.data = d;
        out->v.arr.n = n;
        if (elem == NB_KV_BOOL) {
            for (uint64_t k = 0; k < n; k++)
                if (d[k] > 1)
                    return rd_fail(r, r->pos + k, NB_ERR_FORMAT,
                                   "bool array element %" PRIu64 " is %u, not 0 or 1", k, d[k]);
        }
        r->pos += bytes;
    }
    return NB_OK;
}

/* ---- duplicate detection: sort (name, offset) pairs -------------------- */

typedef struct name_ref {
    const char *s;
    uint64_t off;
} name_ref;

static int cmp_name_ref(const void *a, const void *b) {
    const name_ref *x = a, *y = b;
    int c = strcmp(x->s, y->s);
    if (c) return c;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Index of the later of the first duplicate pair found, or -1. */
static long find_duplicate(name_ref *refs, size_t n) {
    if (n < 2) return -1;
    qsort(refs, n, sizeof *refs, cmp_name_ref);
    for (size_t k = 1; k < n; k++)
        if (strcmp(refs[k - 1].s, refs[k].s) == 0) return (long)k;
    return -1;
}

/* ---- the model ---------------------------------------------------------- */

typedef struct gguf_impl {
    void *map;        /* mmap of the whole file (NULL for memory images) */
    size_t map_len;
    int map_slot;     /* core/cleanup.h registration (names m->path on SIGBUS), -1: none */
} gguf_impl;

static void gguf_close(nb_model *m) {
    gguf_impl *g = m->impl;
    if (g) {
        nb_cleanup_forget_map(g->map_slot);
        if (g->map) munmap(g->map, g->map_len);
        free(g);
    }
    nb_model_free_common(m);
}

static nb_status gguf_read(nb_model *m, size_t i, void *dst, nb_ctx *ctx) {
    const nb_tensor *t = &m->tensors[i];
    if (!t->data && t->nbytes)
        return nb_err(ctx, NB_ERR_INTERNAL, "%s: tensor '%s' has no data", m->path, t->name);
    if (t->nbytes) memcpy(dst, t->data, (size_t)t->nbytes);
    return NB_OK;
}

static const nb_model_ops gguf_ops = {gguf_read, gguf_close};

typedef struct span {
    uint64_t start, end;
    size_t idx;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static nb_status parse_header(rd *r, uint64_t *n_tensors, uint64_t *n_kv) {
    snprintf(r->where, sizeof r->where, "header");
    if (r->size < 4 || memcmp(r->p, GGUF_MAGIC, 4) != 0)
        return rd_fail(r, 0, NB_ERR_FORMAT, "not a GGUF file (bad magic)");
    r->pos = 4;
    uint32_t version;
    NB_TRY(rd_u32(r, &version, "version"));
    if (version != 2 && version != 3) {
        uint32_t sw = __builtin_bswap32(version);
        if (version != 0 && (version & 0xFFFFu) == 0 && sw >= 1 && sw <= 3)
            return rd_fail(r, 4, NB_ERR_UNSUPPORTED,
                           "big-endian GGUF (version field reads 0x%08" PRIx32
                           "); only little-endian files are supported", version);
        if (version == 1)
            return rd_fail(r, 4, NB_ERR_UNSUPPORTED,
                           "GGUF v1 is not supported (re-convert the model to v3)");
        return rd_fail(r, 4, NB_ERR_UNSUPPORTED, "GGUF version %" PRIu32 " is not supported (2 or 3)",
                       version);
    }
    NB_TRY(rd_u64(r, n_tensors, "tensor count"));
    NB_TRY(rd_u64(r, n_kv, "metadata count"));
    /* each kv needs >= 8 (key len) + 4 (type) + 1 byte; each tensor info 8+4+4+8 */
    if (*n_kv > rd_left(r) / 13)
        return rd_fail(r, 16, NB_ERR_FORMAT, "metadata count %" PRIu64 " exceeds file size", *n_kv);
    if (*n_tensors > rd_left(r) / 24)
        return rd_fail(r, 8, NB_ERR_FORMAT, "tensor count %" PRIu64 " exceeds file size", *n_tensors);
    return NB_OK;
}

/* Make room for `need` elements in *p (capacity *cap; new slots zeroed).
 * Arrays sized by counts from the file grow as entries actually parse, so a
 * header that merely claims a huge count allocates nothing up front. */
static nb_status grow(rd *r, void **p, size_t *cap, size_t need, size_t elsz) {
    if (need <= *cap) return NB_OK;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) nc *= 2; /* need <= file size / 13: no overflow */
    void *q = nb_realloc(NULL, *p, nc * elsz, "gguf");
    if (!q) return nb_err(r->ctx, NB_ERR_NOMEM, "%s: out of memory (%zu entries)", r->name, nc);
    memset((char *)q + *cap * elsz, 0, (nc - *cap) * elsz);
    *p = q;
    *cap = nc;
    return NB_OK;
}

static nb_status parse_kv(rd *r, nb_model *m, uint64_t n_kv, uint32_t *alignment) {
    nb_kvset *kv = &m->kv;
    name_ref *refs = NULL;
    size_t refs_cap = 0;
    nb_status st = NB_OK;
    uint64_t align_at = 0;
    for (uint64_t k = 0; k < n_kv; k++) {
        snprintf(r->where, sizeof r->where, "metadata entry %" PRIu64, k);
        uint64_t at = r->pos;
        nb_str key = {0, NULL};
        NB_CHECK_GOTO(st, rd_str(r, &key, "key", true, NB_GGUF_MAX_KEY), out);
        st = grow(r, (void **)&kv->items, &kv->cap, kv->n + 1, sizeof *kv->items);
        if (st == NB_OK) st = grow(r, (void **)&refs, &refs_cap, kv->n + 1, sizeof *refs);
        if (st != NB_OK) {
            free(key.ptr);
            goto out;
        }
        nb_kv *item = &kv->items[kv->n++];
        item->key = key.ptr;
        item->val.type = NB_KV_U8;
        refs[k].s = key.ptr;
        refs[k].off = at;
        rd_where(r, "metadata key", key.ptr, key.len);
        uint64_t at_t = r->pos;
        uint32_t type;
        NB_CHECK_GOTO(st, rd_u32(r, &type, "value type"), out);
        if (!valid_kv_type(type))
            NB_FAIL_GOTO(st, out, r->ctx, NB_ERR_FORMAT, "%s: offset %" PRIu64 ": %s: invalid value type %" PRIu32,
                         r->name, at_t, r->where, type);
        if (strcmp(key.ptr, "general.alignment") == 0) align_at = at;
        if (type == NB_KV_ARRAY) {
            NB_CHECK_GOTO(st, rd_array(r, &item->val, 1), out);
        } else if (type == NB_KV_STRING) {
            item->val.type = NB_KV_STRING;
            item->val.v.s.len = 0;
            item->val.v.s.ptr = NULL;
            NB_CHECK_GOTO(st, rd_str(r, &item->val.v.s, "string", false, UINT64_MAX), out);
        } else {
            NB_CHECK_GOTO(st, rd_scalar(r, (nb_kv_type)type, &item->val), out);
        }
    }
    long dup = find_duplicate(refs, (size_t)n_kv);
    if (dup >= 0) {
        rd_where(r, "metadata key", refs[dup].s, strlen(refs[dup].s));
        NB_FAIL_GOTO(st, out, r->ctx, NB_ERR_FORMAT, "%s: offset %" PRIu64 ": %s: duplicate key",
                     r->name, refs[dup].off, r->where);
    }
    *alignment = NB_GGUF_DEFAULT_ALIGNMENT;
    long ai = nb_kv_find(kv, "general.alignment");
    if (ai >= 0) {
        const nb_kv_value *v = &kv->items[ai].val;
        snprintf(r->where, sizeof r->where, "metadata key 'general.alignment'");
        if (v->type != NB_KV_U32)
            NB_FAIL_GOTO(st, out, r->ctx, NB_ERR_FORMAT, "%s: offset %" PRIu64 ": %s: must be u32, found %s",
                         r->name, align_at, r->where, nb_kv_type_name(v->type));
        if (!is_pow2(v->v.u))
            NB_FAIL_GOTO(st, out, r->ctx, NB_ERR_FORMAT,
                         "%s: offset %" PRIu64 ": %s: %" PRIu64 " is not a non-zero power of two",
                         r->name, align_at, r->where, v->v.u);
        /* Larger than the file: no data can lie at an aligned offset inside it, and
         * a writer copying the file would pad its header up to the alignment (a
         * 57-byte file claiming 2^30 made a 1 GiB output): work and output must
         * stay bounded by the input's size. */
        if (v->v.u > r->size)
            NB_FAIL_GOTO(st, out, r->ctx, NB_ERR_FORMAT,
                         "%s: offset %" PRIu64 ": %s: %" PRIu64 " is larger than the file (%" PRIu64 " bytes)",
                         r->name, align_at, r->where, v->v.u, r->size);
        *alignment = (uint32_t)v->v.u;
    }
out:
    free(refs);
    return st;
}

/* One tensor info; fills t (name owned by the model once t is counted). */
static nb_status parse_tensor_info(rd *r, nb_tensor *t, uint64_t *rel_offset, uint32_t alignment) {
    nb_str name = {0, NULL};
    NB_TRY(rd_str(r, &name, "tensor name", true, NB_MAX_NAME));
    t->name = name.ptr;
    rd_where(r, "tensor", name.ptr, name.len);
    uint64_t at = r->pos;
    uint32_t n_dims;
    NB_TRY(rd_u32(r, &n_dims, "n_dims"));
    if (n_dims > NB_MAX_DIMS)
        return rd_fail(r, at, NB_ERR_FORMAT, "n_dims %" PRIu32 " is more than %d", n_dims, NB_MAX_DIMS);
    t->n_dims = n_dims;
    uint64_t nel = 1;
    for (uint32_t d = 0; d < NB_MAX_DIMS; d++) {
        uint64_t ne = 1;
        at = r->pos;
        if (d < n_dims) NB_TRY(rd_u64(r, &ne, "dimension"));
        if (ne > (uint64_t)INT64_MAX)
            return rd_fail(r, at, NB_ERR_FORMAT, "ne[%" PRIu32 "] = %" PRIi64 " is negative", d,
                           (int64_t)ne);
        t->ne[d] = (int64_t)ne;
        if (!nb_mul_u64(nel, ne, &nel) || nel > (uint64_t)INT64_MAX)
            return rd_fail(r, at, NB_ERR_FORMAT, "element count overflows int64 at ne[%" PRIu32 "]", d);
    }
    at = r->pos;
    uint32_t type_id;
    NB_TRY(rd_u32(r, &type_id, "type"));
    nb_type type;
    if (!nb_type_from_gguf_id(type_id, &type))
        return rd_fail(r, at, NB_ERR_UNSUPPORTED, "unknown tensor type id %" PRIu32, type_id);
    t->type = type;
    const nb_type_traits *tr = nb_type_get(type);
    if (!tr || tr->block_size == 0)
        return rd_fail(r, at, NB_ERR_UNSUPPORTED, "type id %" PRIu32 " has no layout", type_id);
    if ((uint64_t)t->ne[0] % tr->block_size != 0)
        return rd_fail(r, at, NB_ERR_FORMAT,
                       "ne[0] = %" PRIi64 " is not a multiple of %s's block size %" PRIu32, t->ne[0],
                       tr->name, tr->block_size);
    uint64_t row, bytes = 0;
    if (nb_type_row_bytes(type, (uint64_t)t->ne[0], &row, r->ctx, t->name) != NB_OK)
        return rd_fail(r, at, NB_ERR_FORMAT, "row size overflows");
    if (nel != 0) {
        /* all ne > 0 here, so rows = nel / ne[0] exactly */
        uint64_t rows = nel / (uint64_t)t->ne[0];
        if (!nb_mul_u64(row, rows, &bytes))
            return rd_fail(r, at, NB_ERR_FORMAT, "byte size overflows");
    }
    t->nbytes = bytes;
    at = r->pos;
    NB_TRY(rd_u64(r, rel_offset, "data offset"));
    if (*rel_offset % alignment != 0)
        return rd_fail(r, at, NB_ERR_FORMAT,
                       "data offset %" PRIu64 " is not a multiple of the alignment %" PRIu32,
                       *rel_offset, alignment);
    return NB_OK;
}

static nb_status parse_tensors(rd *r, nb_model *m, uint64_t n_tensors, uint32_t alignment,
                               const unsigned char *base) {
    nb_status st = NB_OK;
    size_t n = (size_t)n_tensors, cap = 0, tcap = 0;
    typedef struct tpos { uint64_t rel, at; } tpos; /* relative data offset, info's file offset */
    tpos *pos = NULL;
    name_ref *refs = NULL;
    span *spans = NULL;
    for (size_t i = 0; i < n; i++) {
        snprintf(r->where, sizeof r->where, "tensor info %zu", i);
        NB_CHECK_GOTO(st, grow(r, (void **)&m->tensors, &tcap, i + 1, sizeof *m->tensors), out);
        NB_CHECK_GOTO(st, grow(r, (void **)&pos, &cap, i + 1, sizeof *pos), out);
        pos[i].at = r->pos;
        nb_tensor *t = &m->tensors[i];
        m->n_tensors = i + 1; /* so the name is freed on failure */
        NB_CHECK_GOTO(st, parse_tensor_info(r, t, &pos[i].rel, alignment), out);
    }
    /* every info parsed, so n is backed by >= 24 bytes each */
    refs = nb_calloc(r->ctx, n ? n : 1, sizeof *refs, "tensor names");
    spans = nb_calloc(r->ctx, n ? n : 1, sizeof *spans, "tensor spans");
    if (!refs || !spans) { st = NB_ERR_NOMEM; goto out; }
    for (size_t i = 0; i < n; i++) refs[i] = (name_ref){m->tensors[i].name, pos[i].at};
    long dup = find_duplicate(refs, n);
    if (dup >= 0) {
        rd_where(r, "tensor", refs[dup].s, strlen(refs[dup].s));
        NB_FAIL_GOTO(st, out, r->ctx, NB_ERR_FORMAT, "%s: offset %" PRIu64 ": %s: duplicate tensor name",
                     r->name, refs[dup].off, r->where);
    }
    uint64_t data_start;
    if (!nb_align_u64(r->pos, alignment, &data_start))
        NB_FAIL_GOTO(st, out, r->ctx, NB_ERR_FORMAT, "%s: data section start overflows", r->name);
    for (size_t i = 0; i < n; i++) {
        nb_tensor *t = &m->tensors[i];
        uint64_t abs, end;
        if (!nb_add_u64(data_start, pos[i].rel, &abs) || !nb_add_u64(abs, t->nbytes, &end) ||
            end > r->size) {
            rd_where(r, "tensor", t->name, strlen(t->name));
            NB_FAIL_GOTO(st, out, r->ctx, NB_ERR_FORMAT,
                         "%s: offset %" PRIu64 ": %s: data [%" PRIu64 " + %" PRIu64 ", +%" PRIu64
                         " bytes) extends past the end of the file (%" PRIu64 " bytes)",
                         r->name, pos[i].at, r->where, data_start, pos[i].rel, t->nbytes, r->size);
        }
        t->file_offset = abs;
        t->data = base + abs;
        spans[i].start = abs;
        spans[i].end = end;
        spans[i].idx = i;
    }
    if (n > 1) {
        qsort(spans, n, sizeof *spans, cmp_span);
        uint64_t prev_end = 0;
        size_t prev = 0;
        bool have_prev = false;
        for (size_t k = 0; k < n; k++) {
            if (spans[k].start == spans[k].end) continue; /* empty tensors overlap nothing */
            if (have_prev && spans[k].start < prev_end) {
                const nb_tensor *t = &m->tensors[spans[k].idx];
                rd_where(r, "tensor", t->name, strlen(t->name));
                NB_FAIL_GOTO(st, out, r->ctx, NB_ERR_FORMAT,
                             "%s: offset %" PRIu64 ": %s: data [%" PRIu64 ", %" PRIu64
                             ") overlaps tensor '%s'",
                             r->name, pos[spans[k].idx].at, r->where, spans[k].start, spans[k].end,
                             m->tensors[prev].name);
            }
            if (!have_prev || spans[k].end > prev_end) {
                prev_end = spans[k].end;
                prev = spans[k].idx;
            }
            have_prev = true;
        }
    }
out:
    free(pos);
    free(refs);
    free(spans);
    return st;
}

nb_status nb_gguf_open_memory(const void *data, size_t size, const char *name, nb_model **out,
                              nb_ctx *ctx) {
    *out = NULL;
    nb_model *m = nb_model_alloc(name, NB_FMT_GGUF, ctx);
    if (!m) return NB_ERR_NOMEM;
    m->ops = &gguf_ops;
    m->file_bytes = size;
    rd r = {.p = data, .size = size, .pos = 0, .name = name, .ctx = ctx};
    uint64_t n_tensors = 0, n_kv = 0;
    uint32_t alignment = NB_GGUF_DEFAULT_ALIGNMENT;
    nb_status st = parse_header(&r, &n_tensors, &n_kv);
    if (st == NB_OK) st = parse_kv(&r, m, n_kv, &alignment);
    if (st == NB_OK) st = parse_tensors(&r, m, n_tensors, alignment, data);
    if (st != NB_OK) {
        nb_model_close(m);
        return st;
    }
    nb_model_index(m);
    *out = m;
    return NB_OK;
}

nb_status nb_gguf_open(const char *path, nb_model **out, nb_ctx *ctx) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return nb_err_errno(ctx, errno, "%s", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return nb_err_errno(ctx, e, "%s", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return nb_err(ctx, NB_ERR_INVALID, "%s: not a regular file", path);
    }
    if (st.st_size < 24) {
        /* Too small to map usefully (mmap of 0 bytes fails): parse a copy so the
         * message is the same as for any other truncated header. */
        unsigned char head[24];
        ssize_t got = read(fd, head, sizeof head);
        close(fd);
        if (got < 0) return nb_err_errno(ctx, errno, "%s", path);
        nb_model *m = NULL;
        nb_status s = nb_gguf_open_memory(head, (size_t)got, path, &m, ctx);
        nb_model_close(m);
        return s == NB_OK ? nb_err(ctx, NB_ERR_INTERNAL, "%s: tiny file parsed", path) : s;
    }
    size_t len = (size_t)st.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return nb_err_errno(ctx, e, "%s: mmap", path);
    nb_model *m = NULL;
    nb_status s = nb_gguf_open_memory(map, len, path, &m, ctx);
    if (s != NB_OK) {
        munmap(map, len);
        return s;
    }
    gguf_impl *g = nb_calloc(ctx, 1, sizeof *g, "gguf state");
    if (!g) {
        nb_model_close(m);
        munmap(map, len);
        return NB_ERR_NOMEM;
    }
    g->map = map;
    g->map_len = len;
    m->map = map;
    m->map_len = len;
    g->map_slot =
        nb_cleanup_add_map(map, len, m->path, (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    m->impl = g;
    *out = m;
    return NB_OK;
}

uint32_t nb_gguf_alignment(const nb_model *m) {
    const nb_kv_value *v = nb_kv_get(&m->kv, "general.alignment");
    if (v && v->type == NB_KV_U32 && is_pow2(v->v.u)) return (uint32_t)v->v.u;
    return NB_GGUF_DEFAULT_ALIGNMENT;
}

/* ============================== writer ==================================== */

typedef struct wtensor {
    char *name;
    nb_type type;
    uint32_t n_dims;
    int64_t ne[NB_MAX_DIMS];
    uint32_t type_id;   /* on-disk id (ggml id or nibble's own) */
    uint64_t nbytes;
    uint64_t offset;    /* relative to the data section */
} wtensor;

typedef enum wstate { W_ADDING, W_DATA, W_DONE, W_FAILED } wstate;

typedef struct gguf_sink {
    char *path;          /* final path, for messages (the afile drops its copy on commit) */
    nb_afile f;
    bool f_open;
    wstate state;
    uint32_t alignment;
    wtensor *t;
    size_t n, cap;
    size_t cur;          /* tensor receiving data */
    uint64_t cur_done;   /* bytes of it written so far */
} gguf_sink;

static nb_status w_bytes(gguf_sink *g, const void *p, size_t n, nb_ctx *ctx) {
    return nb_afile_write(&g->f, p, n, ctx);
}
static nb_status w_u32(gguf_sink *g, uint32_t x, nb_ctx *ctx) { return w_bytes(g, &x, 4, ctx); }
static nb_status w_u64(gguf_sink *g, uint64_t x, nb_ctx *ctx) { return w_bytes(g, &x, 8, ctx); }
static nb_status w_str(gguf_sink *g, const char *s, uint64_t len, nb_ctx *ctx) {
    NB_TRY(w_u64(g, len, ctx));
    return len ? w_bytes(g, s, (size_t)len, ctx) : NB_OK;
}

/* Scalar kv value; integers must fit their declared type (a u8 holding 300
 * is a caller bug, not something to truncate silently). */
static nb_status w_scalar(gguf_sink *g, const nb_kv_value *v, const char *key, nb_ctx *ctx) {
    const char *path = g->path;
    switch (v->type) {
    case NB_KV_U8: case NB_KV_U16: case NB_KV_U32: case NB_KV_U64: case NB_KV_BOOL: {
        size_t sz = nb_kv_scalar_size(v->type);
        uint64_t lim = v->type == NB_KV_BOOL ? 1 : sz == 8 ? UINT64_MAX : (UINT64_C(1) << (8 * sz)) - 1;
        if (v->v.u > lim)
            return nb_err(ctx, NB_ERR_INVALID, "%s: metadata key '%s': value %" PRIu64 " does not fit %s",
                          path, key, v->v.u, nb_kv_type_name(v->type));
        return w_bytes(g, &v->v.u, sz, ctx); /* little-endian: low bytes first */
    }
    case NB_KV_I8: case NB_KV_I16: case NB_KV_I32: case NB_KV_I64: {
        size_t sz = nb_kv_scalar_size(v->type);
        if (sz < 8) {
            int64_t hi = (INT64_C(1) << (8 * sz - 1)) - 1;
            if (v->v.i > hi || v->v.i < -hi - 1)
                return nb_err(ctx, NB_ERR_INVALID, "%s: metadata key '%s': value %" PRIi64 " does not fit %s",
                              path, key, v->v.i, nb_kv_type_name(v->type));
        }
        return w_bytes(g, &v->v.i, sz, ctx); /* two's complement, little-endian */
    }
    case NB_KV_F32: {
        float x = (float)v->v.f;
        return w_bytes(g, &x, 4, ctx);
    }
    case NB_KV_F64: return w_bytes(g, &v->v.f, 8, ctx);
    default:
        return nb_err(ctx, NB_ERR_INVALID, "%s: metadata key '%s': invalid value type %d", path, key,
                      (int)v->type);
    }
}

/* Array body (u32 elem, u64 n, items), recursing for nested arrays. */
static nb_status w_array(gguf_sink *g, const nb_kv_value *v, const char *key, int depth, nb_ctx *ctx) {
    const char *path = g->path;
    if (v->type != NB_KV_ARRAY)
        return nb_err(ctx, NB_ERR_INVALID, "%s: metadata key '%s': nested array element has type %s",
                      path, key, nb_kv_type_name(v->type));
    if (depth > NB_GGUF_MAX_DEPTH)
        return nb_err(ctx, NB_ERR_INVALID, "%s: metadata key '%s': arrays nested deeper than %d", path,
                      key, NB_GGUF_MAX_DEPTH);
    nb_kv_type elem = v->v.arr.elem;
    uint64_t n = v->v.arr.n;
    if (!valid_kv_type((uint32_t)elem))
        return nb_err(ctx, NB_ERR_INVALID, "%s: metadata key '%s': invalid array element type %d",
                      path, key, (int)elem);
    if (n && !v->v.arr.data)
        return nb_err(ctx, NB_ERR_INVALID, "%s: metadata key '%s': array of %" PRIu64 " has no data",
                      path, key, n);
    NB_TRY(w_u32(g, (uint32_t)elem, ctx));
    NB_TRY(w_u64(g, n, ctx));
    if (elem == NB_KV_STRING) {
        const nb_str *s = v->v.arr.data;
        for (uint64_t k = 0; k < n; k++) NB_TRY(w_str(g, s[k].ptr, s[k].len, ctx));
    } else if (elem == NB_KV_ARRAY) {
        const nb_kv_value *a = v->v.arr.data;
        for (uint64_t k = 0; k < n; k++) NB_TRY(w_array(g, &a[k], key, depth + 1, ctx));
    } else {
        uint64_t bytes;
        if (!nb_mul_u64(n, nb_kv_scalar_size(elem), &bytes) || bytes > SIZE_MAX)
            return nb_err(ctx, NB_ERR_INVALID, "%s: metadata key '%s': array too large", path, key);
        if (elem == NB_KV_BOOL) {
            const unsigned char *b = v->v.arr.data;
            for (uint64_t k = 0; k < n; k++)
                if (b[k] > 1)
                    return nb_err(ctx, NB_ERR_INVALID,
                                  "%s: metadata key '%s': bool element %" PRIu64 " is %u", path, key, k,
                                  b[k]);
        }
        if (bytes) NB_TRY(w_bytes(g, v->v.arr.data, (size_t)bytes, ctx));
    }
    return NB_OK;
}

static nb_status w_kv(gguf_sink *g, const nb_kv *kv, nb_ctx *ctx) {
    if (!kv->key) return nb_err(ctx, NB_ERR_INVALID, "%s: metadata entry without a key", g->path);
    size_t klen = strlen(kv->key);
    if (klen > NB_GGUF_MAX_KEY)
        return nb_err(ctx, NB_ERR_INVALID, "%s: metadata key '%.64s...' longer than %d bytes", g->path,
                      kv->key, NB_GGUF_MAX_KEY);
    NB_TRY(w_str(g, kv->key, klen, ctx));
    const nb_kv_value *v = &kv->val;
    if (!valid_kv_type((uint32_t)v->type))
        return nb_err(ctx, NB_ERR_INVALID, "%s: metadata key '%s': invalid value type %d", g->path,
                      kv->key, (int)v->type);
    NB_TRY(w_u32(g, (uint32_t)v->type, ctx));
    if (v->type == NB_KV_STRING) {
        if (v->v.s.len && !v->v.s.ptr)
            return nb_err(ctx, NB_ERR_INVALID, "%s: metadata key '%s': string without data", g->path,
                          kv->key);
        return w_str(g, v->v.s.ptr, v->v.s.len, ctx);
    }
    if (v->type == NB_KV_ARRAY) return w_array(g, v, kv->key, 1, ctx);
    return w_scalar(g, v, kv->key, ctx);
}

/* Bytes w_kv writes for one value (after key and type tag); false on overflow or a malformed array. */
static bool kv_value_bytes(const nb_kv_value *v, int depth, uint64_t *out) {
    if (v->type == NB_KV_STRING) return nb_add_u64(8, v->v.s.len, out);
    if (v->type != NB_KV_ARRAY) {
        *out = nb_kv_scalar_size(v->type);
        return *out != 0;
    }
    if (depth > NB_GGUF_MAX_DEPTH || !valid_kv_type((uint32_t)v->v.arr.elem)) return false;
    uint64_t sum = 12, n = v->v.arr.n, b;
    if (v->v.arr.elem == NB_KV_STRING || v->v.arr.elem == NB_KV_ARRAY) {
        for (uint64_t k = 0; k < n; k++) {
            if (v->v.arr.elem == NB_KV_STRING) b = 8 + ((const nb_str *)v->v.arr.data)[k].len;
            else if (!kv_value_bytes(&((const nb_kv_value *)v->v.arr.data)[k], depth + 1, &b)) return false;
            if (!nb_add_u64(sum, b, &sum)) return false;
        }
    } else if (!nb_mul_u64(n, nb_kv_scalar_size(v->v.arr.elem), &b) || !nb_add_u64(sum, b, &sum)) {
        return false;
    }
    *out = sum;
    return true;
}

nb_status nb_gguf_data_start(const nb_kvset *kv, const nb_tensor *tensors, size_t n, uint64_t *out,
                             uint32_t *alignment, nb_ctx *ctx) {
    uint32_t al = NB_GGUF_DEFAULT_ALIGNMENT;
    const nb_kv_value *av = nb_kv_get(kv, "general.alignment");
    if (av) {
        NB_RETURN_IF(ctx, av->type != NB_KV_U32 || !is_pow2(av->v.u) || av->v.u > UINT32_MAX, NB_ERR_INVALID,
                     "metadata key 'general.alignment' must be a u32 non-zero power of two");
        al = (uint32_t)av->v.u;
    }
    uint64_t h = 4 + 4 + 8 + 8, b;
    for (size_t i = 0; i < kv->n; i++) {
        const nb_kv *e = &kv->items[i];
        NB_RETURN_IF(ctx, !e->key || !kv_value_bytes(&e->val, 1, &b), NB_ERR_INVALID,
                     "metadata key '%s': malformed value", e->key ? e->key : "?");
        h += 8 + strlen(e->key) + 4 + b;
    }
    for (size_t i = 0; i < n; i++) h += 8 + strlen(tensors[i].name) + 4 + 8ull * tensors[i].n_dims + 4 + 8;
    NB_RETURN_IF(ctx, !nb_align_u64(h, al, out), NB_ERR_RANGE, "GGUF header size overflows");
    *alignment = al;
    return NB_OK;
}

/* Mark the sink failed and remove the partial file; returns st. */
static nb_status sink_fail(gguf_sink *g, nb_status st) {
    g->state = W_FAILED;
    if (g->f_open) {
        nb_afile_abort(&g->f);
        g->f_open = false;
    }
    return st;
}

static nb_status gs_add_tensor(nb_sink *s, const char *name, nb_type type, uint32_t n_dims,
                               const int64_t *ne, nb_ctx *ctx) {
    gguf_sink *g = s->impl;
    const char *path = g->path;
    if (g->state != W_ADDING)
        return nb_err(ctx, NB_ERR_INVALID, "%s: tensor '%s' added after the header was written", path,
                      name);
    size_t nlen = strlen(name);
    if (nlen > NB_MAX_NAME)
        return nb_err(ctx, NB_ERR_INVALID, "%s: tensor name '%.64s...' longer than %d bytes", path, name,
                      NB_MAX_NAME);
    if (nlen >= 64)
        NB_WARN(ctx, "%s: tensor name '%s' is %zu bytes; llama.cpp accepts at most 63", path, name, nlen);
    const nb_type_traits *tr = nb_type_get(type);
    if (!tr || !tr->name || tr->gguf_id < 0 || tr->gguf_id > (int64_t)UINT32_MAX)
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: tensor '%s': type %s cannot be stored in GGUF", path,
                      name, nb_type_name(type));
    if (n_dims > NB_MAX_DIMS)
        return nb_err(ctx, NB_ERR_INVALID, "%s: tensor '%s': %" PRIu32 " dims (max %d)", path, name,
                      n_dims, NB_MAX_DIMS);
    wtensor w = {.type = type, .n_dims = n_dims, .type_id = (uint32_t)tr->gguf_id};
    uint64_t nel = 1;
    for (uint32_t d = 0; d < NB_MAX_DIMS; d++) {
        w.ne[d] = d < n_dims ? ne[d] : 1;
        if (w.ne[d] < 0)
            return nb_err(ctx, NB_ERR_INVALID, "%s: tensor '%s': ne[%" PRIu32 "] = %" PRIi64 " < 0", path,
                          name, d, w.ne[d]);
        if (!nb_mul_u64(nel, (uint64_t)w.ne[d], &nel) || nel > (uint64_t)INT64_MAX)
            return nb_err(ctx, NB_ERR_RANGE, "%s: tensor '%s': element count overflows", path, name);
    }
    uint64_t row;
    NB_TRY(nb_type_row_bytes(type, (uint64_t)w.ne[0], &row, ctx, name));
    if (nel && !nb_mul_u64(row, nel / (uint64_t)w.ne[0], &w.nbytes))
        return nb_err(ctx, NB_ERR_RANGE, "%s: tensor '%s': byte size overflows", path, name);
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 64;
        wtensor *t = nb_realloc(NULL, g->t, cap * sizeof *t, "gguf");
        if (!t) return nb_err(ctx, NB_ERR_NOMEM, "%s: out of memory for tensor list", path);
        g->t = t;
        g->cap = cap;
    }
    w.name = nb_strdup(ctx, name);
    if (!w.name) return NB_ERR_NOMEM;
    g->t[g->n++] = w;
    return NB_OK;
}

/* Close the current tensor when it is complete (padding it to the
 * alignment) and move on over any following empty tensors. */
static nb_status advance_full(gguf_sink *g, nb_ctx *ctx) {
    while (g->cur < g->n && g->cur_done == g->t[g->cur].nbytes) {
        uint64_t nb = g->t[g->cur].nbytes, padded;
        if (!nb_align_u64(nb, g->alignment, &padded)) return nb_err(ctx, NB_ERR_INTERNAL, "pad overflow");
        if (padded > nb) NB_TRY(nb_afile_zeros(&g->f, (size_t)(padded - nb), ctx));
        g->cur++;
        g->cur_done = 0;
    }
    return NB_OK;
}

static nb_status gs_begin_inner(nb_sink *s, nb_ctx *ctx) {
    gguf_sink *g = s->impl;
    const char *path = g->path;
    /* alignment */
    g->alignment = NB_GGUF_DEFAULT_ALIGNMENT;
    const nb_kv_value *av = nb_kv_get(&s->kv, "general.alignment");
    if (av) {
        if (av->type != NB_KV_U32 || !is_pow2(av->v.u) || av->v.u > UINT32_MAX)
            return nb_err(ctx, NB_ERR_INVALID,
                          "%s: metadata key 'general.alignment' must be a u32 non-zero power of two",
                          path);
        g->alignment = (uint32_t)av->v.u;
    }
    /* duplicate names */
    if (g->n > 1) {
        name_ref *refs = nb_calloc(ctx, g->n, sizeof *refs, "tensor names");
        if (!refs) return NB_ERR_NOMEM;
        for (size_t i = 0; i < g->n; i++) refs[i] = (name_ref){g->t[i].name, i};
        long dup = find_duplicate(refs, g->n);
        nb_status st = dup >= 0 ? nb_err(ctx, NB_ERR_INVALID, "%s: tensor '%s' added twice", path,
                                         refs[dup].s)
                                : NB_OK;
        free(refs);
        NB_TRY(st);
    }
    if (s->kv.n > 1) {
        name_ref *refs = nb_calloc(ctx, s->kv.n, sizeof *refs, "metadata keys");
        if (!refs) return NB_ERR_NOMEM;
        nb_status st = NB_OK;
        for (size_t i = 0; i < s->kv.n; i++) {
            if (!s->kv.items[i].key) st = nb_err(ctx, NB_ERR_INVALID, "%s: metadata entry without a key", path);
            refs[i] = (name_ref){s->kv.items[i].key ? s->kv.items[i].key : "", i};
        }
        long dup = st == NB_OK ? find_duplicate(refs, s->kv.n) : -1;
        if (dup >= 0) st = nb_err(ctx, NB_ERR_INVALID, "%s: metadata key '%s' appears twice", path, refs[dup].s);
        free(refs);
        NB_TRY(st);
    }
    /* offsets: declaration order, each tensor padded to the alignment */
    uint64_t off = 0;
    for (size_t i = 0; i < g->n; i++) {
        g->t[i].offset = off;
        uint64_t padded;
        if (!nb_align_u64(g->t[i].nbytes, g->alignment, &padded) || !nb_add_u64(off, padded, &off))
            return nb_err(ctx, NB_ERR_RANGE, "%s: total tensor data size overflows", path);
    }
    /* header */
    NB_TRY(w_bytes(g, GGUF_MAGIC, 4, ctx));
    NB_TRY(w_u32(g, GGUF_WRITE_VERSION, ctx));
    NB_TRY(w_u64(g, (uint64_t)g->n, ctx));
    NB_TRY(w_u64(g, (uint64_t)s->kv.n, ctx));
    for (size_t i = 0; i < s->kv.n; i++) NB_TRY(w_kv(g, &s->kv.items[i], ctx));
    for (size_t i = 0; i < g->n; i++) {
        const wtensor *t = &g->t[i];
        NB_TRY(w_str(g, t->name, strlen(t->name), ctx));
        NB_TRY(w_u32(g, t->n_dims, ctx));
        for (uint32_t d = 0; d < t->n_dims; d++) NB_TRY(w_u64(g, (uint64_t)t->ne[d], ctx));
        NB_TRY(w_u32(g, t->type_id, ctx));
        NB_TRY(w_u64(g, t->offset, ctx));
    }
    uint64_t data_start;
    if (!nb_align_u64(g->f.written, g->alignment, &data_start))
        return nb_err(ctx, NB_ERR_INTERNAL, "%s: header size overflows", path);
    NB_TRY(nb_afile_zeros(&g->f, (size_t)(data_start - g->f.written), ctx));
    g->cur = 0;
    g->cur_done = 0;
    g->state = W_DATA;
    return advance_full(g, ctx);
}

static nb_status gs_begin(nb_sink *s, nb_ctx *ctx) {
    gguf_sink *g = s->impl;
    if (g->state != W_ADDING)
        return nb_err(ctx, NB_ERR_INVALID, "%s: begin called twice or after a failure", g->path);
    nb_status st = gs_begin_inner(s, ctx);
    return st == NB_OK ? NB_OK : sink_fail(g, st);
}

static size_t gs_data_order(const nb_sink *s, size_t k) {
    (void)s;
    return k;
}

static nb_status gs_write(nb_sink *s, const void *data, uint64_t n, nb_ctx *ctx) {
    gguf_sink *g = s->impl;
    if (g->state != W_DATA)
        return nb_err(ctx, NB_ERR_INVALID, "%s: tensor data written %s", g->path,
                      g->state == W_ADDING ? "before begin" : "after commit or a failure");
    const unsigned char *p = data;
    /* A piece may run across tensor boundaries: the data section is the
     * concatenation of the tensors in order, with padding inserted here. */
    while (n > 0) {
        if (g->cur >= g->n)
            return sink_fail(g, nb_err(ctx, NB_ERR_INVALID,
                                       "%s: %" PRIu64 " bytes written beyond the last tensor",
                                       g->path, n));
        const wtensor *t = &g->t[g->cur];
        uint64_t take = t->nbytes - g->cur_done;
        if (take > n) take = n;
        nb_status st = nb_afile_write(&g->f, p, (size_t)take, ctx);
        if (st != NB_OK) return sink_fail(g, st);
        g->cur_done += take;
        p += take;
        n -= take;
        st = advance_full(g, ctx);
        if (st != NB_OK) return sink_fail(g, st);
    }
    return NB_OK;
}

static nb_status gs_commit(nb_sink *s, nb_ctx *ctx) {
    gguf_sink *g = s->impl;
    if (g->state != W_DATA)
        return nb_err(ctx, NB_ERR_INVALID, "%s: commit %s", g->path,
                      g->state == W_ADDING ? "before begin" : "after commit or a failure");
    if (g->cur < g->n)
        return sink_fail(g, nb_err(ctx, NB_ERR_INVALID,
                                   "%s: tensor '%s': only %" PRIu64 " of %" PRIu64 " bytes written",
                                   g->path, g->t[g->cur].name, g->cur_done, g->t[g->cur].nbytes));
    uint64_t total = g->f.written;
    nb_status st = nb_afile_commit(&g->f, s->sha256, ctx);
    g->f_open = false; /* commit closes the file (and removes the partial on failure) */
    if (st != NB_OK) {
        g->state = W_FAILED;
        return st;
    }
    s->bytes_written = total;
    g->state = W_DONE;
    return NB_OK;
}

static void gs_free(nb_sink *s) {
    if (!s) return;
    gguf_sink *g = s->impl;
    if (g) {
        if (g->f_open) nb_afile_abort(&g->f);
        for (size_t i = 0; i < g->n; i++) free(g->t[i].name);
        free(g->t);
        free(g->path);
        free(g);
    }
    nb_kvset_free(&s->kv);
    free(s);
}

static const nb_sink_ops gguf_sink_ops = {gs_add_tensor, gs_begin, gs_data_order,
                                          gs_write,      gs_commit, gs_free};

nb_status nb_gguf_sink_create(const char *path, nb_sink **out, nb_ctx *ctx) {
    *out = NULL;
    nb_sink *s = nb_calloc(ctx, 1, sizeof *s, "gguf sink");
    if (!s) return NB_ERR_NOMEM;
    gguf_sink *g = nb_calloc(ctx, 1, sizeof *g, "gguf sink");
    if (!g) {
        free(s);
        return NB_ERR_NOMEM;
    }
    s->ops = &gguf_sink_ops;
    s->format = NB_FMT_GGUF;
    s->impl = g;
    nb_kvset_init(&s->kv);
    g->state = W_ADDING;
    g->alignment = NB_GGUF_DEFAULT_ALIGNMENT;
    g->f.fd = -1;
    g->path = nb_strdup(ctx, path);
    if (!g->path) {
        gs_free(s);
        return NB_ERR_NOMEM;
    }
    /* Open now so an unwritable destination fails before any expensive work. */
    nb_status st = nb_afile_open(&g->f, path, true, ctx);
    if (st != NB_OK) {
        gs_free(s);
        return st;
    }
    g->f_open = true;
    *out = s;
    return NB_OK;
}
