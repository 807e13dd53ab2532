/* formats/safetensors.c — safetensors reader (single file or sharded index) and writer.
 *
 * Reader rules, those of the reference implementation (Rust crate `safetensors`,
 * SafeTensors::read_metadata + Metadata::validate), in the order they are checked:
 *   - the file has at least 8 bytes; N (u64 LE) <= 100,000,000; 8 + N <= file size;
 *   - the header is valid UTF-8 and one JSON object, optionally followed by JSON
 *     whitespace (writers pad with spaces). Unlike the reference (which lets serde
 *     skip leading whitespace) the first byte must be '{', as the format's
 *     documentation requires;
 *   - "__metadata__", when present and not null, is an object of string values;
 *   - every other key is a tensor: {"dtype": known dtype, "shape": [non-negative
 *     integers], "data_offsets": [begin, end]} (other fields are ignored, as serde
 *     does); prod(shape) * dtype size == end - begin, with overflow checks;
 *   - sorted by (begin, end), the tensors tile the data section: first begin 0,
 *     each begin == previous end, last end == file size - 8 - N.
 * Stricter than the reference, by design: duplicate keys are errors (serde keeps
 * the last one silently), a header must start with '{'. nibble's own limits give
 * NB_ERR_UNSUPPORTED: <= 4 dims, names <= NB_MAX_NAME bytes, no "\u0000" in
 * strings, JSON nesting <= 64, <= 4M JSON values, <= 10,000 metadata entries.
 *
 * Sharded checkpoints (a path ending in .json: model.safetensors.index.json):
 * "weight_map" {tensor: shard file relative to the index's directory}. Every
 * shard is opened and validated as above; model->tensors lists the shards in
 * order of first mention in weight_map, each shard's tensors in its data order.
 * A tensor the map names but its shard lacks, or a shard tensor the map does not
 * assign to that shard, is NB_ERR_FORMAT. Metadata: the index's "metadata"
 * (strings; non-negative integers as u64, e.g. total_size; other numbers f64;
 * booleans), then each shard's __metadata__ in shard order (same keys replace).
 *
 * JSON is parsed by cJSON after a strict RFC 8259 scan of our own: cJSON is
 * lenient (raw control characters in strings, numbers as doubles), while the
 * reference is strict and reads shapes and offsets as exact 64-bit integers. The
 * scan records the exact value of every number token in document order; the tree
 * walk below consumes them in the same order (count_numbers skips subtrees).
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
#include "core/str.h"
#include "formats/readers.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_NOT_UINT UINT64_MAX    /* number token that is not a plain u64 */
#define ST_MAX_VALUES (1u << 22)  /* JSON values per header (bounds cJSON's tree) */
#define ST_MAX_DEPTH 64
#define ST_MAX_NUMBER_CHARS 63    /* cJSON cannot parse longer number tokens */
#define ST_MAX_META 10000         /* metadata entries (kv sets are linear) */

/* Safetensors dtypes in the reference's enum order: the writer sorts by it. */
static const char *const g_st_order[] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3",
                                         "I16",  "U16", "F16", "BF16",    "I32",
                                         "U32",  "F32", "F64", "I64",     "U64"};

static int st_dtype_rank(const char *dtype) {
    for (size_t i = 0; i < sizeof g_st_order / sizeof g_st_order[0]; i++)
        if (strcmp(g_st_order[i], dtype) == 0) return (int)i;
    return -1;
}

/* ---- UTF-8 ------------------------------------------------------------------ */

/* Strict UTF-8 (no overlong forms, no surrogates, <= U+10FFFF), like Rust's
 * str::from_utf8. On failure *bad is the offset of the first bad byte. */
static bool utf8_valid(const unsigned char *p, size_t n, size_t *bad) {
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            *bad = i;
            return false;
        }
        if (n - i < len) { *bad = i; return false; }
        for (size_t k = 1; k < len; k++) {
            unsigned b = p[i + k];
            unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
            if (b < l || b > h) { *bad = i; return false; }
        }
        i += len;
    }
    return true;
}

/* ---- strict JSON scan ----------------------------------------------------------- */

typedef struct st_scan {
    const unsigned char *p;
    size_t n, i;
    uint64_t *nums; /* exact value of each number token, ST_NOT_UINT if not a plain u64 */
    size_t n_nums, cap_nums;
    size_t n_values;
    const char *file;
    nb_ctx *ctx;
} st_scan;

__attribute__((format(printf, 3, 4)))
static nb_status scan_fail(st_scan *s, nb_status code, const char *fmt, ...) {
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return nb_err(s->ctx, code, "%s: header: invalid JSON at byte offset %zu: %s", s->file,
                  s->i + 8, what);
}

static void scan_ws(st_scan *s) {
    while (s->i < s->n) {
        unsigned char c = s->p[s->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        s->i++;
    }
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads "XXXX" at s->i (after "\u"); returns -1 when not 4 hex digits. */
static long scan_hex4(st_scan *s) {
    if (s->n - s->i < 4) return -1;
    long v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(s->p[s->i + (size_t)k]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

static nb_status scan_string(st_scan *s) {
    s->i++; /* opening quote */
    for (;;) {
        if (s->i >= s->n) return scan_fail(s, NB_ERR_FORMAT, "unterminated string");
        unsigned char c = s->p[s->i];
        if (c == '"') { s->i++; return NB_OK; }
        if (c < 0x20) return scan_fail(s, NB_ERR_FORMAT, "control character 0x%02x in a string", c);
        if (c != '\\') { s->i++; continue; }
        if (++s->i >= s->n) return scan_fail(s, NB_ERR_FORMAT, "unterminated string");
        unsigned char e = s->p[s->i];
        if (e && strchr("\"\\/bfnrt", e)) { s->i++; continue; }
        if (e != 'u') return scan_fail(s, NB_ERR_FORMAT, "invalid escape '\\%c'", e >= 0x20 && e < 0x7f ? e : '?');
        s->i++;
        long cp = scan_hex4(s);
        if (cp < 0) return scan_fail(s, NB_ERR_FORMAT, "invalid \\u escape");
        if (cp == 0)
            return scan_fail(s, NB_ERR_UNSUPPORTED, "escaped NUL character (\\u0000) in a string");
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            return scan_fail(s, NB_ERR_FORMAT, "lone low surrogate \\u%04lx", (unsigned long)cp);
        s->i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s->n - s->i < 2 || s->p[s->i] != '\\' || s->p[s->i + 1] != 'u')
                return scan_fail(s, NB_ERR_FORMAT, "lone high surrogate \\u%04lx", (unsigned long)cp);
            s->i += 2;
            long lo = scan_hex4(s);
            if (lo < 0xDC00 || lo > 0xDFFF)
                return scan_fail(s, NB_ERR_FORMAT, "high surrogate \\u%04lx not followed by a low one",
                                 (unsigned long)cp);
            s->i += 4;
        }
    }
}

static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static nb_status scan_number(st_scan *s) {
    size_t start = s->i;
    bool plain = true;
    if (s->p[s->i] == '-') { plain = false; s->i++; }
    if (s->i >= s->n || !is_digit(s->p[s->i])) return scan_fail(s, NB_ERR_FORMAT, "invalid number");
    if (s->p[s->i] == '0') s->i++;
    else
        while (s->i < s->n && is_digit(s->p[s->i])) s->i++;
    if (s->i < s->n && s->p[s->i] == '.') {
        plain = false;
        s->i++;
        if (s->i >= s->n || !is_digit(s->p[s->i])) return scan_fail(s, NB_ERR_FORMAT, "invalid number");
        while (s->i < s->n && is_digit(s->p[s->i])) s->i++;
    }
    if (s->i < s->n && (s->p[s->i] == 'e' || s->p[s->i] == 'E')) {
        plain = false;
        s->i++;
        if (s->i < s->n && (s->p[s->i] == '+' || s->p[s->i] == '-')) s->i++;
        if (s->i >= s->n || !is_digit(s->p[s->i])) return scan_fail(s, NB_ERR_FORMAT, "invalid number");
        while (s->i < s->n && is_digit(s->p[s->i])) s->i++;
    }
    if (s->i - start > ST_MAX_NUMBER_CHARS) {
        s->i = start;
        return scan_fail(s, NB_ERR_UNSUPPORTED, "number token longer than %d characters",
                         ST_MAX_NUMBER_CHARS);
    }
    uint64_t v = 0;
    if (plain) {
        for (size_t k = start; k < s->i; k++) {
            if (!nb_mul_u64(v, 10, &v) || !nb_add_u64(v, (uint64_t)(s->p[k] - '0'), &v)) {
                v = ST_NOT_UINT;
                break;
            }
        }
    } else {
        v = ST_NOT_UINT;
    }
    if (s->n_nums == s->cap_nums) {
        size_t cap = s->cap_nums ? s->cap_nums * 2 : 64;
        uint64_t *p = realloc(s->nums, cap * sizeof *p);
        if (!p) return nb_err(s->ctx, NB_ERR_NOMEM, "%s: header: out of memory", s->file);
        s->nums = p;
        s->cap_nums = cap;
    }
    s->nums[s->n_nums++] = v;
    return NB_OK;
}

static nb_status scan_value(st_scan *s, int depth);

static nb_status scan_container(st_scan *s, int depth, bool object) {
    unsigned char close = object ? '}' : ']';
    s->i++;
    scan_ws(s);
    if (s->i < s->n && s->p[s->i] == close) { s->i++; return NB_OK; }
    for (;;) {
        if (object) {
            scan_ws(s);
            if (s->i >= s->n || s->p[s->i] != '"')
                return scan_fail(s, NB_ERR_FORMAT, "expected a string key");
            NB_TRY(scan_string(s));
            scan_ws(s);
            if (s->i >= s->n || s->p[s->i] != ':') return scan_fail(s, NB_ERR_FORMAT, "expected ':'");
            s->i++;
        }
        NB_TRY(scan_value(s, depth + 1));
        scan_ws(s);
        if (s->i >= s->n) return scan_fail(s, NB_ERR_FORMAT, "unexpected end of header");
        if (s->p[s->i] == close) { s->i++; return NB_OK; }
        if (s->p[s->i] != ',')
            return scan_fail(s, NB_ERR_FORMAT, "expected ',' or '%c'", close);
        s->i++;
    }
}

static nb_status scan_value(st_scan *s, int depth) {
    if (++s->n_values > ST_MAX_VALUES)
        return scan_fail(s, NB_ERR_UNSUPPORTED, "more than %u JSON values", ST_MAX_VALUES);
    if (depth > ST_MAX_DEPTH)
        return scan_fail(s, NB_ERR_UNSUPPORTED, "nesting deeper than %d", ST_MAX_DEPTH);
    scan_ws(s);
    if (s->i >= s->n) return scan_fail(s, NB_ERR_FORMAT, "unexpected end of header");
    unsigned char c = s->p[s->i];
    if (c == '{' || c == '[') return scan_container(s, depth, c == '{');
    if (c == '"') return scan_string(s);
    if (c == '-' || is_digit(c)) return scan_number(s);
    static const char *const lits[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t len = strlen(lits[k]);
        if (s->n - s->i >= len && memcmp(s->p + s->i, lits[k], len) == 0) {
            s->i += len;
            return NB_OK;
        }
    }
    if (c >= 0x20 && c < 0x7f) return scan_fail(s, NB_ERR_FORMAT, "unexpected character '%c'", c);
    return scan_fail(s, NB_ERR_FORMAT, "unexpected byte 0x%02x", c);
}

/* ---- header -> tensor table --------------------------------------------------------- */

static size_t count_numbers(const cJSON *j) {
    if (cJSON_IsNumber(j)) return 1;
    size_t c = 0;
    if (cJSON_IsArray(j) || cJSON_IsObject(j))
        for (const cJSON *k = j->child; k; k = k->next) c += count_numbers(k);
    return c;
}

/* "[d0,d1,...]" of a safetensors shape, for messages. */
static const char *fmt_dims(const uint64_t *d, size_t nd, char *buf, size_t cap) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (size_t k = 0; k < nd && o < cap; k++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%" PRIu64, k ? "," : "", d[k]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
    return buf;
}

typedef struct st_parse {
    st_scan *scan;
    size_t ni; /* next number token */
    const char *file;
    nb_ctx *ctx;
} st_parse;

/* Reads an array of plain u64 into out[] (at most `max` kept; *count gets the
 * length). `what` names the field for messages. */
static nb_status parse_uint_array(st_parse *ps, const cJSON *arr, const char *tname, const char *what,
                                  uint64_t *out, size_t max, size_t *count) {
    if (!cJSON_IsArray(arr))
        return nb_err(ps->ctx, NB_ERR_FORMAT, "%s: tensor '%s': '%s' must be an array of integers",
                      ps->file, tname, what);
    size_t k = 0;
    for (const cJSON *e = arr->child; e; e = e->next, k++) {
        if (!cJSON_IsNumber(e))
            return nb_err(ps->ctx, NB_ERR_FORMAT, "%s: tensor '%s': %s[%zu] is not a number",
                          ps->file, tname, what, k);
        if (ps->ni >= ps->scan->n_nums)
            return nb_err(ps->ctx, NB_ERR_INTERNAL, "%s: header: number token count mismatch", ps->file);
        uint64_t v = ps->scan->nums[ps->ni++];
        if (v == ST_NOT_UINT)
            return nb_err(ps->ctx, NB_ERR_FORMAT,
                          "%s: tensor '%s': %s[%zu] is not an integer in [0, 2^64-1)", ps->file, tname,
                          what, k);
        if (k < max) out[k] = v;
    }
    *count = k;
    return NB_OK;
}

/* One tensor entry -> t (name set by the caller). Stores begin in t->file_offset
 * (made absolute later). */
static nb_status parse_tensor(st_parse *ps, const cJSON *ent, nb_tensor *t) {
    const char *name = t->name;
    const char *file = ps->file;
    nb_ctx *ctx = ps->ctx;
    if (!cJSON_IsObject(ent))
        return nb_err(ctx, NB_ERR_FORMAT,
                      "%s: tensor '%s': entry must be an object with dtype, shape and data_offsets",
                      file, name);
    const cJSON *dtype = NULL;
    bool have_shape = false, have_offs = false;
    uint64_t dims[NB_MAX_DIMS + 1] = {0}, offs[2] = {0};
    size_t nd = 0, noffs = 0;
    for (const cJSON *f = ent->child; f; f = f->next) {
        const char *k = f->string ? f->string : "";
        if (strcmp(k, "dtype") == 0) {
            if (dtype) return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s': duplicate field 'dtype'", file, name);
            if (!cJSON_IsString(f))
                return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s': 'dtype' must be a string", file, name);
            dtype = f;
        } else if (strcmp(k, "shape") == 0) {
            if (have_shape) return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s': duplicate field 'shape'", file, name);
            have_shape = true;
            NB_TRY(parse_uint_array(ps, f, name, "shape", dims, NB_MAX_DIMS + 1, &nd));
        } else if (strcmp(k, "data_offsets") == 0) {
            if (have_offs)
                return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s': duplicate field 'data_offsets'", file, name);
            have_offs = true;
            NB_TRY(parse_uint_array(ps, f, name, "data_offsets", offs, 2, &noffs));
            if (noffs != 2)
                return nb_err(ctx, NB_ERR_FORMAT,
                              "%s: tensor '%s': data_offsets must have 2 elements (expected 2, found %zu)",
                              file, name, noffs);
        } else {
            ps->ni += count_numbers(f); /* unknown fields are ignored, as the reference does */
        }
    }
    if (!dtype) return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s': missing 'dtype'", file, name);
    if (!have_shape) return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s': missing 'shape'", file, name);
    if (!have_offs) return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s': missing 'data_offsets'", file, name);

    nb_type type;
    if (!nb_type_from_st_dtype(dtype->valuestring, &type))
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: tensor '%s': unknown dtype '%s'", file, name,
                      dtype->valuestring);
    if (nd > NB_MAX_DIMS)
        return nb_err(ctx, NB_ERR_UNSUPPORTED,
                      "%s: tensor '%s': %zu dimensions (nibble supports at most %d)", file, name, nd,
                      NB_MAX_DIMS);
    const nb_type_traits *tr = nb_type_get(type);
    char sbuf[128];
    uint64_t nel = 1, nbytes;
    for (size_t k = 0; k < nd; k++) {
        if (dims[k] > (uint64_t)INT64_MAX)
            return nb_err(ctx, NB_ERR_UNSUPPORTED,
                          "%s: tensor '%s': shape %s: dimension %zu exceeds 2^63-1", file, name,
                          fmt_dims(dims, nd, sbuf, sizeof sbuf), k);
        if (!nb_mul_u64(nel, dims[k], &nel))
            return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s': shape %s: element count overflows 64 bits",
                          file, name, fmt_dims(dims, nd, sbuf, sizeof sbuf));
    }
    if (!nb_mul_u64(nel, tr->type_size, &nbytes))
        return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s': shape %s of %s: byte size overflows 64 bits",
                      file, name, fmt_dims(dims, nd, sbuf, sizeof sbuf), tr->st_dtype);
    if (offs[1] < offs[0])
        return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64
                      "): end before begin", file, name, offs[0], offs[1]);
    if (offs[1] - offs[0] != nbytes)
        return nb_err(ctx, NB_ERR_FORMAT,
                      "%s: tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64 ") do not match shape %s of %s"
                      " (expected %" PRIu64 " bytes, found %" PRIu64 ")",
                      file, name, offs[0], offs[1], fmt_dims(dims, nd, sbuf, sizeof sbuf),
                      tr->st_dtype, nbytes, offs[1] - offs[0]);
    t->type = type;
    t->n_dims = (uint32_t)nd;
    for (int d = 0; d < NB_MAX_DIMS; d++) t->ne[d] = 1;
    for (size_t k = 0; k < nd; k++) t->ne[nd - 1 - k] = (int64_t)dims[k]; /* ggml order */
    t->nbytes = nbytes;
    t->file_offset = offs[0];
    return NB_OK;
}

static int cmp_name_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct st_span {
    uint64_t begin, end;
    size_t idx;
} st_span;

static int cmp_span(const void *a, const void *b) {
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* First duplicate in a list of n strings (sorts `v`), or NULL. */
static const char *find_duplicate(const char **v, size_t n) {
    qsort(v, n, sizeof *v, cmp_name_ptr);
    for (size_t k = 1; k < n; k++)
        if (strcmp(v[k - 1], v[k]) == 0) return v[k];
    return NULL;
}

static nb_status parse_metadata(st_parse *ps, const cJSON *md, nb_kvset *meta) {
    if (cJSON_IsNull(md)) return NB_OK; /* the reference reads null as "no metadata" */
    if (!cJSON_IsObject(md))
        return nb_err(ps->ctx, NB_ERR_FORMAT, "%s: header: __metadata__ must be an object of strings",
                      ps->file);
    size_t n = 0;
    for (const cJSON *e = md->child; e; e = e->next, n++) {
        if (!cJSON_IsString(e))
            return nb_err(ps->ctx, NB_ERR_FORMAT,
                          "%s: header: __metadata__ value of '%s' is not a string", ps->file,
                          e->string ? e->string : "");
    }
    if (n > ST_MAX_META)
        return nb_err(ps->ctx, NB_ERR_UNSUPPORTED,
                      "%s: header: __metadata__ has %zu entries (nibble's limit is %d)", ps->file, n,
                      ST_MAX_META);
    const char **keys = nb_malloc(ps->ctx, (n ? n : 1) * sizeof *keys, "metadata keys");
    if (!keys) return NB_ERR_NOMEM;
    size_t k = 0;
    for (const cJSON *e = md->child; e; e = e->next) keys[k++] = e->string ? e->string : "";
    const char *dup = find_duplicate(keys, n);
    free(keys);
    if (dup)
        return nb_err(ps->ctx, NB_ERR_FORMAT, "%s: header: __metadata__ key '%s' appears twice",
                      ps->file, dup);
    for (const cJSON *e = md->child; e; e = e->next)
        NB_TRY(nb_kv_set_str(meta, e->string ? e->string : "", e->valuestring, ps->ctx));
    return NB_OK;
}

void nb_st_header_free(nb_st_header *h) {
    if (!h) return;
    for (size_t k = 0; k < h->n_tensors; k++) free(h->tensors[k].name);
    free(h->tensors);
    nb_kvset_free(&h->meta);
    memset(h, 0, sizeof *h);
}

/* The tensor walk over a parsed, scanned header (root is an object). */
static nb_status parse_tree(st_parse *ps, const cJSON *root, nb_st_header *h) {
    nb_ctx *ctx = ps->ctx;
    const char *file = ps->file;
    size_t n_ent = 0;
    const cJSON *md = NULL;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (e->string && strcmp(e->string, "__metadata__") == 0) {
            if (md) return nb_err(ctx, NB_ERR_FORMAT, "%s: header: __metadata__ appears twice", file);
            md = e;
        } else {
            n_ent++;
        }
    }
    h->tensors = nb_calloc(ctx, n_ent ? n_ent : 1, sizeof *h->tensors, "tensor table");
    if (!h->tensors) return NB_ERR_NOMEM;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (e == md) {
            ps->ni += count_numbers(e); /* numbers there are rejected by parse_metadata anyway */
            continue;
        }
        const char *name = e->string ? e->string : "";
        size_t len = strlen(name);
        if (len > NB_MAX_NAME)
            return nb_err(ctx, NB_ERR_UNSUPPORTED,
                          "%s: tensor '%.40s...': name is %zu bytes (nibble's limit is %d)", file,
                          name, len, NB_MAX_NAME);
        nb_tensor *t = &h->tensors[h->n_tensors];
        t->name = nb_strdup(ctx, name);
        if (!t->name) return NB_ERR_NOMEM;
        h->n_tensors++;
        NB_TRY(parse_tensor(ps, e, t));
    }
    if (md) NB_TRY(parse_metadata(ps, md, &h->meta));

    size_t n = h->n_tensors;
    const char **names = nb_malloc(ctx, (n ? n : 1) * sizeof *names, "tensor names");
    if (!names) return NB_ERR_NOMEM;
    for (size_t k = 0; k < n; k++) names[k] = h->tensors[k].name;
    const char *dup = find_duplicate(names, n);
    nb_status st = NB_OK;
    if (dup) st = nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s': name appears twice in the header", file, dup);
    free(names);
    if (st != NB_OK) return st;

    /* Data order, then contiguity, exactly as the reference validates. */
    st_span *sp = nb_malloc(ctx, (n ? n : 1) * sizeof *sp, "tensor spans");
    nb_tensor *sorted = nb_malloc(ctx, (n ? n : 1) * sizeof *sorted, "tensor table");
    if (!sp || !sorted) { free(sp); free(sorted); return NB_ERR_NOMEM; }
    for (size_t k = 0; k < n; k++)
        sp[k] = (st_span){h->tensors[k].file_offset, h->tensors[k].file_offset + h->tensors[k].nbytes, k};
    qsort(sp, n, sizeof *sp, cmp_span);
    for (size_t k = 0; k < n; k++) sorted[k] = h->tensors[sp[k].idx];
    free(h->tensors);
    h->tensors = sorted;
    uint64_t expect = 0;
    for (size_t k = 0; k < n && st == NB_OK; k++) {
        const nb_tensor *t = &h->tensors[k];
        uint64_t b = sp[k].begin, e = sp[k].end;
        if (b < expect)
            st = nb_err(ctx, NB_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64 ") overlap previous tensor '%s'"
                        " (expected begin %" PRIu64 ", found %" PRIu64 ")",
                        file, t->name, b, e, h->tensors[k - 1].name, expect, b);
        else if (b > expect)
            st = nb_err(ctx, NB_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64 ") leave a gap after %s"
                        " (expected begin %" PRIu64 ", found %" PRIu64 ")",
                        file, t->name, b, e, k ? "the previous tensor" : "the start of the data",
                        expect, b);
        expect = e;
    }
    free(sp);
    if (st != NB_OK) return st;
    if (expect != h->data_size)
        return nb_err(ctx, NB_ERR_FORMAT,
                      "%s: header: tensors cover %" PRIu64 " bytes but the data section at byte offset %"
                      PRIu64 " has %" PRIu64 " (expected %" PRIu64 ", found %" PRIu64 ")",
                      file, expect, h->data_start, h->data_size, h->data_size, expect);
    for (size_t k = 0; k < n; k++) h->tensors[k].file_offset += h->data_start;
    return NB_OK;
}

nb_status nb_safetensors_parse_header(const void *buf, size_t n, uint64_t file_size,
                                      const char *name, nb_st_header *out, nb_ctx *ctx) {
    memset(out, 0, sizeof *out);
    nb_kvset_init(&out->meta);
    const unsigned char *p = buf;
    if (!name) name = "safetensors";
    if (n > file_size) return nb_err(ctx, NB_ERR_INVALID, "%s: buffer larger than the file", name);
    if (file_size < 8)
        return nb_err(ctx, NB_ERR_FORMAT,
                      "%s: header: file too small for the header length (expected at least 8 bytes, found %" PRIu64 ")",
                      name, file_size);
    if (n < 8) return nb_err(ctx, NB_ERR_INVALID, "%s: header: buffer holds %zu bytes, need 8", name, n);
    uint64_t hl = 0;
    for (int k = 7; k >= 0; k--) hl = hl << 8 | p[k];
    if (hl > NB_ST_MAX_HEADER)
        return nb_err(ctx, NB_ERR_FORMAT,
                      "%s: header: length %" PRIu64 " exceeds the limit (expected at most %u, found %" PRIu64 ")",
                      name, hl, NB_ST_MAX_HEADER, hl);
    if (8 + hl > file_size)
        return nb_err(ctx, NB_ERR_FORMAT,
                      "%s: header: length %" PRIu64 " runs past the end of the file (expected 8 + %" PRIu64
                      " <= file size, found file size %" PRIu64 ")",
                      name, hl, hl, file_size);
    if (8 + hl > n)
        return nb_err(ctx, NB_ERR_INVALID, "%s: header: buffer holds %zu bytes, need %" PRIu64, name,
                      n, 8 + hl);
    out->header_len = hl;
    out->data_start = 8 + hl;
    out->data_size = file_size - 8 - hl;
    const unsigned char *js = p + 8;
    size_t jn = (size_t)hl, bad = 0;
    if (!utf8_valid(js, jn, &bad))
        return nb_err(ctx, NB_ERR_FORMAT, "%s: header: invalid UTF-8 at byte offset %zu", name, bad + 8);
    if (jn == 0 || js[0] != '{')
        return nb_err(ctx, NB_ERR_FORMAT,
                      "%s: header: must start with '{' at byte offset 8 (found %s%02x)", name,
                      jn ? "0x" : "end of header, ", jn ? js[0] : 0);

    st_scan sc = {.p = js, .n = jn, .file = name, .ctx = ctx};
    nb_status st = scan_value(&sc, 0);
    if (st == NB_OK) {
        scan_ws(&sc);
        if (sc.i != sc.n) st = scan_fail(&sc, NB_ERR_FORMAT, "trailing bytes after the header object");
    }
    cJSON *root = NULL;
    if (st == NB_OK) {
        root = cJSON_ParseWithLengthOpts((const char *)js, jn, NULL, 0);
        if (!root || !cJSON_IsObject(root))
            st = nb_err(ctx, NB_ERR_NOMEM, "%s: header: cJSON could not build the tree (out of memory?)", name);
    }
    if (st == NB_OK) {
        st_parse ps = {.scan = &sc, .file = name, .ctx = ctx};
        st = parse_tree(&ps, root, out);
    }
    cJSON_Delete(root);
    free(sc.nums);
    if (st != NB_OK) nb_st_header_free(out);
    return st;
}

/* ---- reader ----------------------------------------------------------------------------- */

typedef struct st_map {
    void *p;
    size_t n;
} st_map;

typedef struct st_impl {
    size_t n_maps;
    st_map *maps;
} st_impl;

static void st_impl_free(st_impl *im) {
    if (!im) return;
    for (size_t k = 0; k < im->n_maps; k++)
        if (im->maps[k].p) munmap(im->maps[k].p, im->maps[k].n);
    free(im->maps);
    free(im);
}

static nb_status st_read(nb_model *m, size_t i, void *dst, nb_ctx *ctx) {
    if (i >= m->n_tensors) return nb_err(ctx, NB_ERR_INVALID, "tensor index %zu out of range", i);
    const nb_tensor *t = &m->tensors[i];
    if (t->nbytes) memcpy(dst, t->data, t->nbytes);
    return NB_OK;
}

static void st_close(nb_model *m) {
    if (!m) return;
    st_impl_free(m->impl);
    m->impl = NULL;
    nb_model_free_common(m);
}

static const nb_model_ops g_st_ops = {st_read, st_close};

/* Map a whole file read-only. An empty file gives p = NULL, n = 0. */
static nb_status map_file(const char *path, st_map *out, nb_ctx *ctx) {
    out->p = NULL;
    out->n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return nb_err_errno(ctx, errno, "%s", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return nb_err_errno(ctx, e, "%s", path);
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return nb_err(ctx, NB_ERR_INVALID, "%s: not a regular file", path);
    }
    if (sb.st_size > 0) {
        void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return nb_err_errno(ctx, e, "%s: mmap", path);
        }
        out->p = p;
        out->n = (size_t)sb.st_size;
    }
    close(fd);
    return NB_OK;
}

/* Map and validate one file. On success the caller owns map and header. */
static nb_status open_one(const char *path, st_map *map, nb_st_header *h, nb_ctx *ctx) {
    memset(h, 0, sizeof *h);
    nb_kvset_init(&h->meta);
    NB_TRY(map_file(path, map, ctx));
    nb_status st = nb_safetensors_parse_header(map->p, map->n, map->n, path, h, ctx);
    if (st != NB_OK) {
        if (map->p) munmap(map->p, map->n);
        map->p = NULL;
    }
    return st;
}

static nb_status open_single(const char *path, nb_model **out, nb_ctx *ctx) {
    st_map map;
    nb_st_header h;
    NB_TRY(open_one(path, &map, &h, ctx));
    nb_model *m = nb_model_alloc(path, NB_FMT_SAFETENSORS, ctx);
    st_impl *im = nb_calloc(ctx, 1, sizeof *im, "safetensors state");
    st_map *maps = nb_malloc(ctx, sizeof *maps, "safetensors state");
    if (!m || !im || !maps) {
        nb_model_free_common(m);
        free(im);
        free(maps);
        munmap(map.p, map.n);
        nb_st_header_free(&h);
        return NB_ERR_NOMEM;
    }
    maps[0] = map;
    im->maps = maps;
    im->n_maps = 1;
    m->impl = im;
    m->ops = &g_st_ops;
    m->file_bytes = map.n;
    m->n_tensors = h.n_tensors;
    m->tensors = h.tensors;
    for (size_t k = 0; k < h.n_tensors; k++)
        m->tensors[k].data = (const unsigned char *)map.p + m->tensors[k].file_offset;
    nb_kvset_free(&m->kv);
    m->kv = h.meta;
    *out = m;
    return NB_OK;
}

/* ---- sharded checkpoints (model.safetensors.index.json) -------------------------------- */

typedef struct st_wm {
    const char *tensor;
    const char *file;
    size_t pos;   /* position in weight_map */
    size_t shard; /* shard id (order of first mention) */
    bool seen;
} st_wm;

static int cmp_wm_file(const void *a, const void *b) {
    const st_wm *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    if (c) return c;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int cmp_wm_tensor(const void *a, const void *b) {
    return strcmp(((const st_wm *)a)->tensor, ((const st_wm *)b)->tensor);
}

static int cmp_wm_first(const void *a, const void *b) {
    const st_wm *x = *(const st_wm *const *)a, *y = *(const st_wm *const *)b;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static nb_status read_small_file(const char *path, char **buf, size_t *n, nb_ctx *ctx) {
    st_map map;
    NB_TRY(map_file(path, &map, ctx));
    if (map.n > NB_ST_MAX_HEADER) {
        munmap(map.p, map.n);
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: index file is %zu bytes (limit %u)", path, map.n,
                      NB_ST_MAX_HEADER);
    }
    *buf = nb_malloc(ctx, map.n + 1, "index file");
    if (!*buf) {
        if (map.p) munmap(map.p, map.n);
        return NB_ERR_NOMEM;
    }
    if (map.n) memcpy(*buf, map.p, map.n);
    (*buf)[map.n] = 0;
    *n = map.n;
    if (map.p) munmap(map.p, map.n);
    return NB_OK;
}

/* Index "metadata" values: strings as strings, non-negative integers as u64,
 * other numbers as f64, booleans as bool; arrays, objects and null are skipped. */
static nb_status index_metadata(const cJSON *md, nb_kvset *kv, nb_ctx *ctx) {
    if (!cJSON_IsObject(md)) return NB_OK;
    for (const cJSON *e = md->child; e; e = e->next) {
        const char *k = e->string ? e->string : "";
        if (cJSON_IsString(e)) {
            NB_TRY(nb_kv_set_str(kv, k, e->valuestring, ctx));
        } else if (cJSON_IsBool(e)) {
            NB_TRY(nb_kv_set_bool(kv, k, cJSON_IsTrue(e), ctx));
        } else if (cJSON_IsNumber(e)) {
            double d = e->valuedouble;
            if (d >= 0 && d < 18446744073709551616.0 && floor(d) == d) {
                NB_TRY(nb_kv_set_u64(kv, k, (uint64_t)d, ctx));
            } else {
                nb_kv_value v = {.type = NB_KV_F64, .v.f = d};
                NB_TRY(nb_kv_set(kv, k, &v, ctx));
            }
        }
    }
    return NB_OK;
}

/* Shard file names must stay inside the index's directory. */
static bool shard_name_ok(const char *f) {
    if (!f[0] || f[0] == '/') return false;
    for (const char *p = f; *p;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.') return false;
        if (!slash) break;
        p = slash + 1;
    }
    return true;
}

typedef struct st_index {
    cJSON *root;
    st_wm *wm;      /* sorted by tensor name */
    size_t n_wm;
    st_wm **first;  /* per shard id: one of its weight_map entries (for the file name) */
    size_t n_shards;
} st_index;

static void st_index_free(st_index *ix) {
    cJSON_Delete(ix->root);
    free(ix->wm);
    free(ix->first);
}

static nb_status parse_index(const char *path, st_index *ix, nb_ctx *ctx) {
    memset(ix, 0, sizeof *ix);
    char *buf = NULL;
    size_t n = 0;
    NB_TRY(read_small_file(path, &buf, &n, ctx));
    const char *end = NULL;
    ix->root = cJSON_ParseWithLengthOpts(buf, n, &end, 0);
    size_t err_at = end ? (size_t)(end - buf) : 0;
    free(buf);
    if (!ix->root)
        return nb_err(ctx, NB_ERR_FORMAT, "%s: not valid JSON (near byte offset %zu)", path, err_at);
    const cJSON *wmj = cJSON_GetObjectItemCaseSensitive(ix->root, "weight_map");
    if (!cJSON_IsObject(ix->root) || !cJSON_IsObject(wmj))
        return nb_err(ctx, NB_ERR_FORMAT, "%s: expected an object with a \"weight_map\" object", path);
    size_t cnt = 0;
    for (const cJSON *e = wmj->child; e; e = e->next) cnt++;
    if (cnt == 0) return nb_err(ctx, NB_ERR_FORMAT, "%s: weight_map is empty", path);
    ix->wm = nb_calloc(ctx, cnt, sizeof *ix->wm, "weight_map");
    if (!ix->wm) return NB_ERR_NOMEM;
    for (const cJSON *e = wmj->child; e; e = e->next) {
        const char *t = e->string ? e->string : "";
        if (!cJSON_IsString(e))
            return nb_err(ctx, NB_ERR_FORMAT, "%s: weight_map: tensor '%s': shard must be a file name",
                          path, t);
        if (!shard_name_ok(e->valuestring))
            return nb_err(ctx, NB_ERR_FORMAT,
                          "%s: weight_map: tensor '%s': shard '%s' is not a relative path inside the index's directory",
                          path, t, e->valuestring);
        ix->wm[ix->n_wm] = (st_wm){.tensor = t, .file = e->valuestring, .pos = ix->n_wm};
        ix->n_wm++;
    }
    /* Shard ids: group by file, numbered by first mention. */
    qsort(ix->wm, ix->n_wm, sizeof *ix->wm, cmp_wm_file);
    ix->first = nb_malloc(ctx, ix->n_wm * sizeof *ix->first, "shard list");
    if (!ix->first) return NB_ERR_NOMEM;
    for (size_t k = 0; k < ix->n_wm; k++)
        if (k == 0 || strcmp(ix->wm[k - 1].file, ix->wm[k].file) != 0) ix->first[ix->n_shards++] = &ix->wm[k];
    qsort(ix->first, ix->n_shards, sizeof *ix->first, cmp_wm_first);
    for (size_t s = 0; s < ix->n_shards; s++) ix->first[s]->shard = s;
    for (size_t k = 1; k < ix->n_wm; k++)
        if (strcmp(ix->wm[k - 1].file, ix->wm[k].file) == 0) ix->wm[k].shard = ix->wm[k - 1].shard;
    /* Sort by tensor name for lookups; `first` then points at any entry of each
     * shard (only its file name is used). */
    qsort(ix->wm, ix->n_wm, sizeof *ix->wm, cmp_wm_tensor);
    for (size_t k = 1; k < ix->n_wm; k++)
        if (strcmp(ix->wm[k - 1].tensor, ix->wm[k].tensor) == 0)
            return nb_err(ctx, NB_ERR_FORMAT, "%s: weight_map: tensor '%s' appears twice", path,
                          ix->wm[k].tensor);
    for (size_t k = 0; k < ix->n_wm; k++) ix->first[ix->wm[k].shard] = &ix->wm[k];
    return NB_OK;
}

static nb_status open_index(const char *path, nb_model **out, nb_ctx *ctx) {
    st_index ix;
    nb_status st = parse_index(path, &ix, ctx);
    nb_model *m = NULL;
    st_impl *im = NULL;
    char *spath = NULL;
    size_t cap = 0;
    if (st != NB_OK) goto done;
    m = nb_model_alloc(path, NB_FMT_SAFETENSORS, ctx);
    im = nb_calloc(ctx, 1, sizeof *im, "safetensors state");
    if (im) im->maps = nb_calloc(ctx, ix.n_shards, sizeof *im->maps, "shard maps");
    if (!m || !im || !im->maps) { st = NB_ERR_NOMEM; goto done; }
    m->impl = im;
    m->ops = &g_st_ops;
    NB_CHECK_GOTO(st, index_metadata(cJSON_GetObjectItemCaseSensitive(ix.root, "metadata"), &m->kv, ctx), done);

    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) + 1 : 0;
    for (size_t s = 0; s < ix.n_shards; s++) {
        const char *file = ix.first[s]->file;
        free(spath);
        spath = nb_malloc(ctx, dlen + strlen(file) + 1, "shard path");
        if (!spath) { st = NB_ERR_NOMEM; goto done; }
        memcpy(spath, path, dlen);
        strcpy(spath + dlen, file);
        nb_st_header h;
        st = open_one(spath, &im->maps[s], &h, ctx);
        if (st != NB_OK) {
            nb_err_prefix(ctx, "%s", path);
            goto done;
        }
        im->n_maps = s + 1;
        m->file_bytes += im->maps[s].n;
        if (m->n_tensors + h.n_tensors > cap) {
            size_t nc = cap ? cap * 2 : 64;
            while (nc < m->n_tensors + h.n_tensors) nc *= 2;
            nb_tensor *nt = realloc(m->tensors, nc * sizeof *nt);
            if (!nt) {
                nb_st_header_free(&h);
                st = nb_err(ctx, NB_ERR_NOMEM, "%s: out of memory", path);
                goto done;
            }
            m->tensors = nt;
            cap = nc;
        }
        for (size_t k = 0; k < h.n_tensors && st == NB_OK; k++) {
            nb_tensor *t = &h.tensors[k];
            st_wm key = {.tensor = t->name};
            st_wm *w = bsearch(&key, ix.wm, ix.n_wm, sizeof *ix.wm, cmp_wm_tensor);
            if (!w)
                st = nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s' is in shard '%s' but not in the weight_map",
                            path, t->name, file);
            else if (w->shard != s)
                st = nb_err(ctx, NB_ERR_FORMAT,
                            "%s: tensor '%s' is in shard '%s' but the weight_map assigns it to '%s'", path,
                            t->name, file, w->file);
            else
                w->seen = true;
        }
        if (st == NB_OK) st = nb_kvset_copy(&m->kv, &h.meta, ctx);
        if (st != NB_OK) {
            nb_st_header_free(&h);
            goto done;
        }
        for (size_t k = 0; k < h.n_tensors; k++) {
            nb_tensor *t = &m->tensors[m->n_tensors++];
            *t = h.tensors[k];
            t->data = (const unsigned char *)im->maps[s].p + t->file_offset;
        }
        free(h.tensors); /* names moved into the model */
        h.tensors = NULL;
        h.n_tensors = 0;
        nb_st_header_free(&h);
    }
    for (size_t k = 0; k < ix.n_wm; k++)
        if (!ix.wm[k].seen) {
            st = nb_err(ctx, NB_ERR_FORMAT,
                        "%s: weight_map lists tensor '%s' in shard '%s' but that shard has no such tensor",
                        path, ix.wm[k].tensor, ix.wm[k].file);
            goto done;
        }
done:
    free(spath);
    if (st != NB_OK) {
        if (!m || m->impl != im) st_impl_free(im);
        st_close(m);
        m = NULL;
    }
    st_index_free(&ix);
    if (st == NB_OK) *out = m;
    return st;
}

nb_status nb_safetensors_open(const char *path, nb_model **out, nb_ctx *ctx) {
    *out = NULL;
    if (nb_str_ends_with_ci(path, ".json")) return open_index(path, out, ctx);
    return open_single(path, out, ctx);
}

/* ---- writer --------------------------------------------------------------------------- */

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
        char *p = realloc(b->p, cap);
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
    if (!utf8_valid((const unsigned char *)name, len, &bad))
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
        st_entry *p = realloc(w->e, cap * sizeof *p);
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
        if (!utf8_valid((const unsigned char *)kv->key, strlen(kv->key), &bad) ||
            !utf8_valid((const unsigned char *)text, tlen, &bad))
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
    const char *dup = find_duplicate(names, n);
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
    while (b.n % 8) buf_put(&b, " ", 1); /* data starts 8-aligned */
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
