/* core/str.h — small string and path helpers shared by every stage.
 *
 * All functions take NUL-terminated strings and never modify them; the
 * allocating ones record NB_ERR_NOMEM in ctx (which may be NULL) and return
 * NULL on failure, the caller frees the result.
 */
#ifndef NB_CORE_STR_H
#define NB_CORE_STR_H

#include "core/ctx.h"

#include <stdbool.h>
#include <stddef.h>

/* True when s ends with suffix (byte-exact; "" is a suffix of everything). */
bool nb_str_ends_with(const char *s, const char *suffix);
/* The same, ASCII case-insensitive (file extensions: ".GGUF" is ".gguf"). */
bool nb_str_ends_with_ci(const char *s, const char *suffix);
/* True when s starts with prefix (byte-exact). */
bool nb_str_starts_with(const char *s, const char *prefix);
/* A hash of a NUL-terminated string (FNV-1a, folded) for hash tables of names. */
size_t nb_str_hash(const char *s);

/* a followed by b ("x.gguf" + ".lock"), malloc'd; NULL (message in ctx) when out of memory. */
char *nb_str_concat(nb_ctx *ctx, const char *a, const char *b);

/* "dir/name", with no doubled '/' when dir already ends in one ("" + name: name). malloc'd. */
char *nb_path_join(nb_ctx *ctx, const char *dir, const char *name);
/* `name` in the directory of `path` ("a/b/x.json" + "y" -> "a/b/y"; a path
 * without '/' gives "y"), as an index file names its shards. malloc'd. */
char *nb_path_sibling(nb_ctx *ctx, const char *path, const char *name);

/* A non-negative number with an optional unit: K, M, G, T (x 10^3 ...; also
 * KB ... and lower-case k), and with `binary` also KiB, MiB, GiB, TiB (x 2^10
 * ...; also Ki ...). A fraction needs a unit (1.5G, 5.5GiB) and is rounded
 * down. false if malformed, negative or >= 2^64. */
bool nb_parse_scaled(const char *s, bool binary, unsigned long long *out);
/* nb_parse_scaled with binary units: a size in bytes ("24GiB", "5.5G", "500M"). */
bool nb_parse_size(const char *s, uint64_t *out);

/* Copy src into dst (capacity n >= 1, always NUL-terminated, truncated when
 * full) with terminal control characters made visible: C0 controls other
 * than '\n' and '\t', DEL, and the C1 controls U+0080..U+009F (as UTF-8)
 * become "\xNN" per byte. Text read from files (names, metadata, messages
 * quoting them) goes through this before it reaches a terminal, so a
 * hostile file cannot move the cursor or retitle the window. Returns dst. */
char *nb_str_escape_ctl(char *dst, size_t n, const char *src);

#endif
