/* formats/json_strict.h — strict UTF-8 and RFC 8259 JSON scanning.
 *
 * cJSON is lenient (raw control characters in strings, numbers as doubles),
 * while formats such as safetensors are read by strict parsers that take
 * shapes and offsets as exact 64-bit integers. A header is therefore first
 * scanned here — exactly one JSON value, optionally surrounded by JSON
 * whitespace — and the exact value of every number token is recorded in
 * document order; the caller then walks cJSON's tree of the same text and
 * consumes the numbers in the same order (skipping a subtree means skipping
 * its number count).
 *
 * Stricter than RFC 8259 where nibble's limits apply (NB_ERR_UNSUPPORTED):
 * no "\u0000" in strings, nesting <= NB_JSON_MAX_DEPTH, <= NB_JSON_MAX_VALUES
 * values, number tokens <= NB_JSON_MAX_NUMBER_CHARS characters. Syntax
 * errors, lone surrogates, control characters in strings: NB_ERR_FORMAT.
 * Messages read "<file>: <what>: invalid JSON at byte offset <base + i>: ...".
 */
#ifndef NB_FORMATS_JSON_STRICT_H
#define NB_FORMATS_JSON_STRICT_H

#include "core/ctx.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NB_JSON_NOT_UINT UINT64_MAX      /* number token that is not a plain u64 */
#define NB_JSON_MAX_VALUES (1u << 22)    /* JSON values per document (bounds cJSON's tree) */
#define NB_JSON_MAX_DEPTH 64
#define NB_JSON_MAX_NUMBER_CHARS 63      /* cJSON cannot parse longer number tokens */

/* Strict UTF-8 (no overlong forms, no surrogates, <= U+10FFFF), like Rust's
 * str::from_utf8. On failure *bad is the offset of the first bad byte. */
bool nb_utf8_valid(const unsigned char *p, size_t n, size_t *bad);

/* Number tokens of a scanned document, in order: the exact value of a plain
 * non-negative integer that fits u64, else NB_JSON_NOT_UINT. */
typedef struct nb_json_numbers {
    uint64_t *v; /* malloc'd */
    size_t n;
} nb_json_numbers;

/* Scan buf[0, n) as one JSON value with optional whitespace around it.
 * file, what and base only shape messages (base: offset of buf in the file).
 * On success *out holds the number tokens (free with nb_json_numbers_free);
 * on failure it is empty. */
nb_status nb_json_scan_strict(const void *buf, size_t n, const char *file, const char *what, size_t base,
                             nb_json_numbers *out, nb_ctx *ctx);
void nb_json_numbers_free(nb_json_numbers *nums); /* NULL-safe */

/* Duplicate object keys, as Python's json reads them: the last occurrence
 * wins. cJSON's lookups return the first, so a config.json with "a": 1, "a": 2
 * would mean 1 here and 2 to transformers; this removes every earlier
 * duplicate, in every object of the tree, in O(k log k) per object of k
 * members. Returns the number of members removed. */
struct cJSON;
size_t nb_json_last_wins(struct cJSON *root);

/* Print a tree as JSON text (cJSON_Print when pretty, else unformatted;
 * free() the result; NULL when out of memory) after making every key and
 * string valid UTF-8: text taken from files (tensor names, metadata) may not
 * be, and cJSON copies such bytes as they are, which makes the output invalid
 * JSON. Each byte of an invalid sequence becomes the six characters "\\xNN"
 * (the text form of core/str.h), so the output parses and says what was there. */
char *nb_json_print(struct cJSON *root, bool pretty);

/* Route cJSON's allocations through core/ctx.h's hooked allocator
 * (nb_malloc_raw: the fault hook of core/fault.h, and nb_alloc_failed() set on
 * failure). cJSON_InitHooks is process-wide, so this is done once, by the
 * program before any JSON is parsed (cli/main.c, tests that inject faults);
 * repeated calls do nothing. Memory cJSON returns (cJSON_Print) is still
 * released with free(). */
void nb_json_use_hooked_allocator(void);

#endif
