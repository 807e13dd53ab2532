/* formats/kv.c — typed metadata sets (see formats/kv.h). */
#include "formats/kv.h"

#include "core/str.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t nb_kv_scalar_size(nb_kv_type t) {
    switch (t) {
    case NB_KV_U8: case NB_KV_I8: case NB_KV_BOOL: return 1;
    case NB_KV_U16: case NB_KV_I16: return 2;
    case NB_KV_U32: case NB_KV_I32: case NB_KV_F32: return 4;
    case NB_KV_U64: case NB_KV_I64: case NB_KV_F64: return 8;
    default: return 0;
    }
}

const char *nb_kv_type_name(nb_kv_type t) {
    static const char *const n[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                    "bool", "string", "array", "u64", "i64", "f64"};
    return (unsigned)t < NB_KV_TYPE_COUNT ? n[t] : "?";
}

void nb_kvset_init(nb_kvset *s) { memset(s, 0, sizeof *s); }

void nb_kv_value_free(nb_kv_value *v) {
    if (!v) return;
    if (v->type == NB_KV_STRING) {
        free(v->v.s.ptr);
    } else if (v->type == NB_KV_ARRAY) {
        if (v->v.arr.elem == NB_KV_STRING) {
            nb_str *s = v->v.arr.data;
            for (uint64_t i = 0; s && i < v->v.arr.n; i++) free(s[i].ptr);
        } else if (v->v.arr.elem == NB_KV_ARRAY) {
            nb_kv_value *a = v->v.arr.data;
            for (uint64_t i = 0; a && i < v->v.arr.n; i++) nb_kv_value_free(&a[i]);
        }
        free(v->v.arr.data);
    }
    memset(v, 0, sizeof *v);
}

void nb_kvset_free(nb_kvset *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->items[i].key);
        nb_kv_value_free(&s->items[i].val);
    }
    free(s->items);
    free(s->idx);
    memset(s, 0, sizeof *s);
}

nb_status nb_kv_value_copy(nb_kv_value *dst, const nb_kv_value *src, nb_ctx *ctx) {
    memset(dst, 0, sizeof *dst);
    dst->type = src->type;
    if (src->type == NB_KV_STRING) {
        dst->v.s.len = src->v.s.len;
        dst->v.s.ptr = nb_malloc(ctx, src->v.s.len + 1, "metadata string");
        if (!dst->v.s.ptr) return NB_ERR_NOMEM;
        memcpy(dst->v.s.ptr, src->v.s.ptr, src->v.s.len);
        dst->v.s.ptr[src->v.s.len] = 0;
        return NB_OK;
    }
    if (src->type != NB_KV_ARRAY) {
        dst->v = src->v;
        return NB_OK;
    }
    nb_kv_type e = src->v.arr.elem;
    uint64_t n = src->v.arr.n;
    dst->v.arr.elem = e;
    size_t esz = e == NB_KV_STRING ? sizeof(nb_str) : e == NB_KV_ARRAY ? sizeof(nb_kv_value) : nb_kv_scalar_size(e);
    dst->v.arr.data = nb_calloc(ctx, n ? n : 1, esz ? esz : 1, "metadata array");
    if (!dst->v.arr.data) return NB_ERR_NOMEM;
    if (e == NB_KV_STRING) {
        const nb_str *s = src->v.arr.data;
        nb_str *d = dst->v.arr.data;
        for (uint64_t i = 0; i < n; i++) {
            d[i].ptr = nb_malloc(ctx, s[i].len + 1, "metadata string");
            if (!d[i].ptr) { dst->v.arr.n = i; nb_kv_value_free(dst); return NB_ERR_NOMEM; }
            memcpy(d[i].ptr, s[i].ptr, s[i].len);
            d[i].ptr[s[i].len] = 0;
            d[i].len = s[i].len;
        }
    } else if (e == NB_KV_ARRAY) {
        const nb_kv_value *s = src->v.arr.data;
        nb_kv_value *d = dst->v.arr.data;
        for (uint64_t i = 0; i < n; i++) {
            nb_status st = nb_kv_value_copy(&d[i], &s[i], ctx);
            if (st != NB_OK) { dst->v.arr.n = i; nb_kv_value_free(dst); return st; }
        }
    } else if (n) {
        memcpy(dst->v.arr.data, src->v.arr.data, (size_t)n * esz);
    }
    dst->v.arr.n = n;
    return NB_OK;
}

static void idx_put(nb_kvset *s, size_t i) {
    size_t m = s->idx_cap - 1, h = nb_str_hash(s->items[i].key) & m;
    while (s->idx[h]) h = (h + 1) & m;
    s->idx[h] = i + 1;
}

/* Index items[n_indexed..n), growing the table; false when out of memory
 * (the set stays correct: lookups scan what is not indexed). */
static bool idx_update(nb_kvset *s) {
    if (s->n_indexed == s->n) return true;
    if (2 * s->n > s->idx_cap) {
        size_t cap = s->idx_cap ? s->idx_cap : 64;
        while (cap < 2 * s->n) cap *= 2;
        size_t *t = calloc(cap, sizeof *t); /* not nb_calloc: a failure is tolerated, so no fault point */
        if (!t) return false;
        free(s->idx);
        s->idx = t;
        s->idx_cap = cap;
        s->n_indexed = 0;
    }
    for (; s->n_indexed < s->n; s->n_indexed++) idx_put(s, s->n_indexed);
    return true;
}

static void idx_drop(nb_kvset *s) {
    free(s->idx);
    s->idx = NULL;
    s->idx_cap = s->n_indexed = 0;
}

long nb_kv_find(const nb_kvset *s, const char *key) {
    if (s->n_indexed) {
        size_t m = s->idx_cap - 1;
        for (size_t h = nb_str_hash(key) & m; s->idx[h]; h = (h + 1) & m)
            if (strcmp(s->items[s->idx[h] - 1].key, key) == 0) return (long)(s->idx[h] - 1);
    }
    for (size_t i = s->n_indexed; i < s->n; i++)
        if (strcmp(s->items[i].key, key) == 0) return (long)i;
    return -1;
}

const nb_kv_value *nb_kv_get(const nb_kvset *s, const char *key) {
    long i = nb_kv_find(s, key);
    return i < 0 ? NULL : &s->items[i].val;
}

void nb_kv_remove(nb_kvset *s, const char *key) {
    long i = nb_kv_find(s, key);
    if (i < 0) return;
    free(s->items[i].key);
    nb_kv_value_free(&s->items[i].val);
    memmove(&s->items[i], &s->items[i + 1], (s->n - (size_t)i - 1) * sizeof *s->items);
    s->n--;
    idx_drop(s); /* positions moved: the next setter rebuilds it */
}

nb_status nb_kv_set_take(nb_kvset *s, const char *key, nb_kv_value *v, nb_ctx *ctx) {
    idx_update(s);
    long i = nb_kv_find(s, key);
    if (i >= 0) {
        nb_kv_value_free(&s->items[i].val);
        s->items[i].val = *v;
        memset(v, 0, sizeof *v);
        return NB_OK;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        nb_kv *items = nb_realloc(NULL, s->items, cap * sizeof *items, "kv");
        if (!items) return nb_err(ctx, NB_ERR_NOMEM, "out of memory growing metadata");
        s->items = items;
        s->cap = cap;
    }
    char *k = nb_strdup(ctx, key);
    if (!k) return NB_ERR_NOMEM;
    s->items[s->n].key = k;
    s->items[s->n].val = *v;
    s->n++;
    memset(v, 0, sizeof *v);
    return NB_OK;
}

nb_status nb_kv_set(nb_kvset *s, const char *key, const nb_kv_value *v, nb_ctx *ctx) {
    nb_kv_value c;
    NB_TRY(nb_kv_value_copy(&c, v, ctx));
    nb_status st = nb_kv_set_take(s, key, &c, ctx);
    if (st != NB_OK) nb_kv_value_free(&c);
    return st;
}

nb_status nb_kvset_copy(nb_kvset *dst, const nb_kvset *src, nb_ctx *ctx) {
    for (size_t i = 0; i < src->n; i++) NB_TRY(nb_kv_set(dst, src->items[i].key, &src->items[i].val, ctx));
    return NB_OK;
}

static nb_status set_scalar(nb_kvset *s, const char *key, nb_kv_type t, uint64_t u, int64_t i, double f,
                            nb_ctx *ctx) {
    nb_kv_value v = {.type = t};
    if (t == NB_KV_F32 || t == NB_KV_F64) v.v.f = f;
    else if (t == NB_KV_I8 || t == NB_KV_I16 || t == NB_KV_I32 || t == NB_KV_I64) v.v.i = i;
    else v.v.u = u;
    return nb_kv_set_take(s, key, &v, ctx);
}

nb_status nb_kv_set_u32(nb_kvset *s, const char *k, uint32_t x, nb_ctx *c) { return set_scalar(s, k, NB_KV_U32, x, 0, 0, c); }
nb_status nb_kv_set_i32(nb_kvset *s, const char *k, int32_t x, nb_ctx *c) { return set_scalar(s, k, NB_KV_I32, 0, x, 0, c); }
nb_status nb_kv_set_u64(nb_kvset *s, const char *k, uint64_t x, nb_ctx *c) { return set_scalar(s, k, NB_KV_U64, x, 0, 0, c); }
nb_status nb_kv_set_f32(nb_kvset *s, const char *k, float x, nb_ctx *c) { return set_scalar(s, k, NB_KV_F32, 0, 0, x, c); }
nb_status nb_kv_set_bool(nb_kvset *s, const char *k, bool x, nb_ctx *c) { return set_scalar(s, k, NB_KV_BOOL, x, 0, 0, c); }

nb_status nb_kv_set_str(nb_kvset *s, const char *key, const char *x, nb_ctx *ctx) {
    nb_kv_value v = {.type = NB_KV_STRING};
    v.v.s.len = strlen(x);
    v.v.s.ptr = nb_strdup(ctx, x);
    if (!v.v.s.ptr) return NB_ERR_NOMEM;
    nb_status st = nb_kv_set_take(s, key, &v, ctx);
    if (st != NB_OK) nb_kv_value_free(&v);
    return st;
}

nb_status nb_kv_set_arr(nb_kvset *s, const char *key, nb_kv_type elem, uint64_t n, const void *data,
                        nb_ctx *ctx) {
    if (!nb_kv_scalar_size(elem)) return nb_err(ctx, NB_ERR_INVALID, "%s: not a scalar array type", key);
    nb_kv_value v = {.type = NB_KV_ARRAY};
    v.v.arr.elem = elem;
    v.v.arr.n = n;
    v.v.arr.data = (void *)data; /* copied by nb_kv_set */
    return nb_kv_set(s, key, &v, ctx);
}

nb_status nb_kv_set_arr_str(nb_kvset *s, const char *key, uint64_t n, const char *const *strs, nb_ctx *ctx) {
    nb_str *a = nb_calloc(ctx, n ? n : 1, sizeof *a, "string array");
    if (!a) return NB_ERR_NOMEM;
    for (uint64_t i = 0; i < n; i++) { a[i].ptr = (char *)strs[i]; a[i].len = strlen(strs[i]); }
    nb_kv_value v = {.type = NB_KV_ARRAY};
    v.v.arr.elem = NB_KV_STRING;
    v.v.arr.n = n;
    v.v.arr.data = a;
    nb_status st = nb_kv_set(s, key, &v, ctx);
    free(a);
    return st;
}

static bool as_i128(const nb_kv_value *v, __int128 *out) {
    switch (v->type) {
    case NB_KV_U8: case NB_KV_U16: case NB_KV_U32: case NB_KV_U64: case NB_KV_BOOL:
        *out = (__int128)v->v.u; return true;
    case NB_KV_I8: case NB_KV_I16: case NB_KV_I32: case NB_KV_I64:
        *out = (__int128)v->v.i; return true;
    default: return false;
    }
}

bool nb_kv_get_u64(const nb_kvset *s, const char *key, uint64_t *out) {
    const nb_kv_value *v = nb_kv_get(s, key);
    __int128 x;
    if (!v || v->type == NB_KV_BOOL || !as_i128(v, &x) || x < 0 || x > (__int128)UINT64_MAX) return false;
    *out = (uint64_t)x;
    return true;
}

bool nb_kv_get_i64(const nb_kvset *s, const char *key, int64_t *out) {
    const nb_kv_value *v = nb_kv_get(s, key);
    __int128 x;
    if (!v || v->type == NB_KV_BOOL || !as_i128(v, &x) || x < INT64_MIN || x > INT64_MAX) return false;
    *out = (int64_t)x;
    return true;
}

bool nb_kv_get_f64(const nb_kvset *s, const char *key, double *out) {
    const nb_kv_value *v = nb_kv_get(s, key);
    if (!v) return false;
    if (v->type == NB_KV_F32 || v->type == NB_KV_F64) { *out = v->v.f; return true; }
    __int128 x;
    if (v->type != NB_KV_BOOL && as_i128(v, &x)) { *out = (double)x; return true; }
    return false;
}

bool nb_kv_get_bool(const nb_kvset *s, const char *key, bool *out) {
    const nb_kv_value *v = nb_kv_get(s, key);
    if (!v || v->type != NB_KV_BOOL) return false;
    *out = v->v.u != 0;
    return true;
}

const char *nb_kv_get_str(const nb_kvset *s, const char *key) {
    const nb_kv_value *v = nb_kv_get(s, key);
    return v && v->type == NB_KV_STRING ? v->v.s.ptr : NULL;
}

static void fmt_scalar_at(nb_kv_type t, const unsigned char *p, char *buf, size_t n) {
    switch (t) {
    case NB_KV_U8: snprintf(buf, n, "%u", p[0]); break;
    case NB_KV_I8: snprintf(buf, n, "%d", (int8_t)p[0]); break;
    case NB_KV_BOOL: snprintf(buf, n, "%s", p[0] ? "true" : "false"); break;
    case NB_KV_U16: { uint16_t x; memcpy(&x, p, 2); snprintf(buf, n, "%u", x); break; }
    case NB_KV_I16: { int16_t x; memcpy(&x, p, 2); snprintf(buf, n, "%d", x); break; }
    case NB_KV_U32: { uint32_t x; memcpy(&x, p, 4); snprintf(buf, n, "%" PRIu32, x); break; }
    case NB_KV_I32: { int32_t x; memcpy(&x, p, 4); snprintf(buf, n, "%" PRId32, x); break; }
    case NB_KV_F32: { float x; memcpy(&x, p, 4); snprintf(buf, n, "%.9g", (double)x); break; }
    case NB_KV_U64: { uint64_t x; memcpy(&x, p, 8); snprintf(buf, n, "%" PRIu64, x); break; }
    case NB_KV_I64: { int64_t x; memcpy(&x, p, 8); snprintf(buf, n, "%" PRId64, x); break; }
    case NB_KV_F64: { double x; memcpy(&x, p, 8); snprintf(buf, n, "%.17g", x); break; }
    default: snprintf(buf, n, "?");
    }
}

const char *nb_kv_value_fmt(const nb_kv_value *v, char *buf, size_t n) {
    if (n == 0) return buf;
    buf[0] = 0;
    switch (v->type) {
    case NB_KV_STRING: snprintf(buf, n, "\"%.*s\"", v->v.s.len > 200 ? 200 : (int)v->v.s.len, v->v.s.ptr); break;
    case NB_KV_F32: case NB_KV_F64: snprintf(buf, n, "%.9g", v->v.f); break;
    case NB_KV_BOOL: snprintf(buf, n, "%s", v->v.u ? "true" : "false"); break;
    case NB_KV_I8: case NB_KV_I16: case NB_KV_I32: case NB_KV_I64: snprintf(buf, n, "%" PRId64, v->v.i); break;
    case NB_KV_ARRAY: {
        size_t used = (size_t)snprintf(buf, n, "[%" PRIu64 " x %s]", v->v.arr.n, nb_kv_type_name(v->v.arr.elem));
        for (uint64_t i = 0; i < v->v.arr.n && i < 4 && used + 40 < n; i++) {
            char item[96];
            if (v->v.arr.elem == NB_KV_STRING) {
                const nb_str *s = (const nb_str *)v->v.arr.data + i;
                snprintf(item, sizeof item, "\"%.*s\"", s->len > 24 ? 24 : (int)s->len, s->ptr);
            } else if (v->v.arr.elem == NB_KV_ARRAY) {
                snprintf(item, sizeof item, "[...]");
            } else {
                size_t es = nb_kv_scalar_size(v->v.arr.elem);
                fmt_scalar_at(v->v.arr.elem, (const unsigned char *)v->v.arr.data + i * es, item, sizeof item);
            }
            used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? ", " : " ", item);
        }
        if (v->v.arr.n > 4 && used + 5 < n) snprintf(buf + used, n - used, ", ...");
        break;
    }
    default: snprintf(buf, n, "%" PRIu64, v->v.u);
    }
    if (v->type == NB_KV_STRING || v->type == NB_KV_ARRAY) { /* text from a file: no terminal controls */
        char *raw = strdup(buf);
        if (raw) nb_str_escape_ctl(buf, n, raw);
        free(raw);
    }
    return buf;
}
