/* formats/kv.h — typed key/value metadata, GGUF's value model.
 *
 * Every model source exposes its metadata as an nb_kvset in GGUF keys
 * ("general.architecture", "llama.block_count", "tokenizer.ggml.tokens" ...),
 * whatever file it came from, so later stages read one vocabulary. Values keep
 * their exact GGUF type (a u32 stays a u32) so GGUF round trips are
 * byte-identical. Keys keep insertion order.
 *
 * Ownership: a set owns deep copies of everything put into it.
 */
#ifndef NB_FORMATS_KV_H
#define NB_FORMATS_KV_H

#include "core/ctx.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* GGUF's gguf_type ids (append-only on disk). */
typedef enum nb_kv_type {
    NB_KV_U8 = 0,
    NB_KV_I8 = 1,
    NB_KV_U16 = 2,
    NB_KV_I16 = 3,
    NB_KV_U32 = 4,
    NB_KV_I32 = 5,
    NB_KV_F32 = 6,
    NB_KV_BOOL = 7,
    NB_KV_STRING = 8,
    NB_KV_ARRAY = 9,
    NB_KV_U64 = 10,
    NB_KV_I64 = 11,
    NB_KV_F64 = 12,
    NB_KV_TYPE_COUNT = 13
} nb_kv_type;

typedef struct nb_str {
    uint64_t len;
    char *ptr; /* NUL-terminated copy; may contain embedded NULs (len is authoritative) */
} nb_str;

typedef struct nb_kv_value nb_kv_value;
struct nb_kv_value {
    nb_kv_type type;
    union {
        uint64_t u;     /* U8/U16/U32/U64/BOOL */
        int64_t i;      /* I8/I16/I32/I64 */
        double f;       /* F32 (exactly representable) / F64 */
        nb_str s;       /* STRING */
        struct {
            nb_kv_type elem; /* element type */
            uint64_t n;      /* element count */
            /* scalar elements: n * nb_kv_scalar_size(elem) little-endian bytes;
             * STRING: nb_str[n]; ARRAY: nb_kv_value[n] (each of type ARRAY) */
            void *data;
        } arr;
    } v;
};

typedef struct nb_kv {
    char *key;
    nb_kv_value val;
} nb_kv;

typedef struct nb_kvset {
    size_t n, cap;
    nb_kv *items;
    /* Hash index of items[0..n_indexed) by key (open addressing, slot = item
     * index + 1, 0 empty; idx_cap a power of two >= 2 * n_indexed, or 0), so
     * that building a set of n keys is O(n), not O(n^2). Items appended
     * directly (the GGUF reader does) are found by a scan of the unindexed
     * tail and indexed by the next setter. Private to formats/kv.c. */
    size_t *idx;
    size_t idx_cap, n_indexed;
} nb_kvset;

/* Size in bytes of a scalar kv type (0 for STRING/ARRAY/invalid). */
size_t nb_kv_scalar_size(nb_kv_type t);
const char *nb_kv_type_name(nb_kv_type t);

void nb_kvset_init(nb_kvset *s);
void nb_kvset_free(nb_kvset *s);
void nb_kv_value_free(nb_kv_value *v);
nb_status nb_kv_value_copy(nb_kv_value *dst, const nb_kv_value *src, nb_ctx *ctx);
/* Deep copy of all of src appended (or replacing same keys) into dst. */
nb_status nb_kvset_copy(nb_kvset *dst, const nb_kvset *src, nb_ctx *ctx);

/* Lookup; NULL when absent. */
const nb_kv_value *nb_kv_get(const nb_kvset *s, const char *key);
/* Index of key or -1. */
long nb_kv_find(const nb_kvset *s, const char *key);
/* Remove a key if present. */
void nb_kv_remove(nb_kvset *s, const char *key);

/* Setters replace an existing key in place (keeping its position) or append. */
nb_status nb_kv_set(nb_kvset *s, const char *key, const nb_kv_value *v, nb_ctx *ctx);   /* deep copy */
nb_status nb_kv_set_take(nb_kvset *s, const char *key, nb_kv_value *v, nb_ctx *ctx); /* takes ownership of v's buffers (v is zeroed) */
nb_status nb_kv_set_u32(nb_kvset *s, const char *key, uint32_t x, nb_ctx *ctx);
nb_status nb_kv_set_i32(nb_kvset *s, const char *key, int32_t x, nb_ctx *ctx);
nb_status nb_kv_set_u64(nb_kvset *s, const char *key, uint64_t x, nb_ctx *ctx);
nb_status nb_kv_set_f32(nb_kvset *s, const char *key, float x, nb_ctx *ctx);
nb_status nb_kv_set_bool(nb_kvset *s, const char *key, bool x, nb_ctx *ctx);
nb_status nb_kv_set_str(nb_kvset *s, const char *key, const char *x, nb_ctx *ctx);
/* Scalar array: `data` holds n elements of `elem` in native (little-endian) layout. */
nb_status nb_kv_set_arr(nb_kvset *s, const char *key, nb_kv_type elem, uint64_t n, const void *data,
                        nb_ctx *ctx);
nb_status nb_kv_set_arr_str(nb_kvset *s, const char *key, uint64_t n, const char *const *strs,
                            nb_ctx *ctx);

/* Typed getters: true when present and convertible (any integer type to the
 * requested integer if the value fits; F32/F64 to float/double). */
bool nb_kv_get_u64(const nb_kvset *s, const char *key, uint64_t *out);
bool nb_kv_get_i64(const nb_kvset *s, const char *key, int64_t *out);
bool nb_kv_get_f64(const nb_kvset *s, const char *key, double *out);
bool nb_kv_get_bool(const nb_kvset *s, const char *key, bool *out);
/* Borrowed string (lives as long as the set entry). */
const char *nb_kv_get_str(const nb_kvset *s, const char *key);

/* Short human-readable rendering of a value into buf (arrays as "[n × type]"
 * plus the first few elements). Returns buf. */
const char *nb_kv_value_fmt(const nb_kv_value *v, char *buf, size_t n);

#endif
