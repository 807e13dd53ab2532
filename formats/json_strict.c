/* formats/json_strict.c — strict UTF-8 and RFC 8259 JSON scanning (see formats/json_strict.h). */
#include "formats/json_strict.h"

#include "core/checked.h"

#include <cjson/cJSON.h>
#include <pthread.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool nb_utf8_valid(const unsigned char *p, size_t n, size_t *bad) {
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

typedef struct st_scan {
    const unsigned char *p;
    size_t n, i;
    uint64_t *nums; /* exact value of each number token, NB_JSON_NOT_UINT if not a plain u64 */
    size_t n_nums, cap_nums;
    size_t n_values;
    const char *file, *what; /* for messages: "<file>: <what>: ..." */
    size_t base;             /* offset of p[0] in the file, for messages */
    nb_ctx *ctx;
} st_scan;

__attribute__((format(printf, 3, 4)))
static nb_status scan_fail(st_scan *s, nb_status code, const char *fmt, ...) {
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return nb_err(s->ctx, code, "%s: %s: invalid JSON at byte offset %zu: %s", s->file, s->what,
                  s->i + s->base, what);
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
    if (s->i - start > NB_JSON_MAX_NUMBER_CHARS) {
        s->i = start;
        return scan_fail(s, NB_ERR_UNSUPPORTED, "number token longer than %d characters",
                         NB_JSON_MAX_NUMBER_CHARS);
    }
    uint64_t v = 0;
    if (plain) {
        for (size_t k = start; k < s->i; k++) {
            if (!nb_mul_u64(v, 10, &v) || !nb_add_u64(v, (uint64_t)(s->p[k] - '0'), &v)) {
                v = NB_JSON_NOT_UINT;
                break;
            }
        }
    } else {
        v = NB_JSON_NOT_UINT;
    }
    if (s->n_nums == s->cap_nums) {
        size_t cap = s->cap_nums ? s->cap_nums * 2 : 64;
        uint64_t *p = nb_realloc(NULL, s->nums, cap * sizeof *p, "json_strict");
        if (!p) return nb_err(s->ctx, NB_ERR_NOMEM, "%s: %s: out of memory", s->file, s->what);
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
        if (s->i >= s->n) return scan_fail(s, NB_ERR_FORMAT, "unexpected end of %s", s->what);
        if (s->p[s->i] == close) { s->i++; return NB_OK; }
        if (s->p[s->i] != ',')
            return scan_fail(s, NB_ERR_FORMAT, "expected ',' or '%c'", close);
        s->i++;
    }
}

static nb_status scan_value(st_scan *s, int depth) {
    if (++s->n_values > NB_JSON_MAX_VALUES)
        return scan_fail(s, NB_ERR_UNSUPPORTED, "more than %u JSON values", NB_JSON_MAX_VALUES);
    if (depth > NB_JSON_MAX_DEPTH)
        return scan_fail(s, NB_ERR_UNSUPPORTED, "nesting deeper than %d", NB_JSON_MAX_DEPTH);
    scan_ws(s);
    if (s->i >= s->n) return scan_fail(s, NB_ERR_FORMAT, "unexpected end of %s", s->what);
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

nb_status nb_json_scan_strict(const void *buf, size_t n, const char *file, const char *what, size_t base,
                             nb_json_numbers *out, nb_ctx *ctx) {
    memset(out, 0, sizeof *out);
    st_scan sc = {.p = buf, .n = n, .file = file, .what = what, .base = base, .ctx = ctx};
    nb_status st = scan_value(&sc, 0);
    if (st == NB_OK) {
        scan_ws(&sc);
        if (sc.i != sc.n) st = scan_fail(&sc, NB_ERR_FORMAT, "trailing bytes after the %s object", what);
    }
    if (st != NB_OK) {
        free(sc.nums);
        return st;
    }
    out->v = sc.nums;
    out->n = sc.n_nums;
    return NB_OK;
}

void nb_json_numbers_free(nb_json_numbers *nums) {
    if (!nums) return;
    free(nums->v);
    memset(nums, 0, sizeof *nums);
}

typedef struct member_ref {
    cJSON *item;
    size_t pos;
} member_ref;

static int member_cmp(const void *a, const void *b) {
    const member_ref *x = a, *y = b;
    int c = strcmp(x->item->string ? x->item->string : "", y->item->string ? y->item->string : "");
    return c ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

size_t nb_json_last_wins(cJSON *root) {
    if (!root || !(cJSON_IsObject(root) || cJSON_IsArray(root))) return 0;
    size_t removed = 0, k = 0;
    for (cJSON *c = root->child; c; c = c->next) removed += nb_json_last_wins(c), k++;
    if (!cJSON_IsObject(root) || k < 2) return removed;
    member_ref *r = nb_malloc(NULL, k * sizeof *r, "json_strict");
    if (!r) return removed; /* out of memory: left as it is (first wins) */
    size_t i = 0;
    for (cJSON *c = root->child; c; c = c->next, i++) r[i] = (member_ref){c, i};
    qsort(r, k, sizeof *r, member_cmp);
    for (i = 0; i + 1 < k; i++)
        if (!strcmp(r[i].item->string ? r[i].item->string : "", r[i + 1].item->string ? r[i + 1].item->string : "")) {
            cJSON_Delete(cJSON_DetachItemViaPointer(root, r[i].item));
            removed++;
        }
    free(r);
    return removed;
}

/* s as valid UTF-8 (malloc'd), or NULL when it is valid already or memory is out. */
static char *utf8_fixed(const char *s) {
    size_t n = strlen(s), bad;
    if (nb_utf8_valid((const unsigned char *)s, n, &bad)) return NULL;
    char *o = nb_malloc(NULL, 4 * n + 1, "json_strict");
    if (!o) return NULL;
    size_t k = 0, i = 0;
    for (;;) {
        memcpy(o + k, s + i, bad);
        k += bad;
        i += bad;
        if (i >= n) break;
        k += (size_t)snprintf(o + k, 5, "\\x%02x", (unsigned char)s[i]);
        i++;
        if (nb_utf8_valid((const unsigned char *)s + i, n - i, &bad)) bad = n - i;
    }
    o[k] = 0;
    return o;
}

static void sanitize(cJSON *j) {
    for (; j; j = j->next) {
        if (j->string && !(j->type & cJSON_StringIsConst)) {
            char *f = utf8_fixed(j->string);
            if (f) {
                free(j->string); /* cJSON's default allocator */
                j->string = f;
            }
        }
        if (cJSON_IsString(j) && j->valuestring) {
            char *f = utf8_fixed(j->valuestring);
            if (f) {
                cJSON_SetValuestring(j, f);
                free(f);
            }
        }
        sanitize(j->child);
    }
}

char *nb_json_print(cJSON *root, bool pretty) {
    if (!root) return NULL;
    sanitize(root->child);
    return pretty ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
}

static void install_json_hooks(void) {
    cJSON_Hooks h = {.malloc_fn = nb_malloc_raw, .free_fn = nb_free_raw};
    cJSON_InitHooks(&h);
}

void nb_json_use_hooked_allocator(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_json_hooks);
}
