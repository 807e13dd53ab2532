/* pipeline/bundle.c — .tar.zst bundles (see pipeline/bundle.h). */
#include "pipeline/bundle.h"

#include "core/afile.h"
#include "core/file.h"
#include "core/sha256.h"
#include "core/str.h"

#include <archive.h>
#include <archive_entry.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PIECE (1u << 20)
#define MANIFEST_MAX (64u << 20)

nb_status nb_bundle_hash_files(nb_bundle_file *files, size_t n, nb_ctx *ctx) {
    for (size_t i = 0; i < n; i++) {
        struct stat sb;
        if (stat(files[i].path, &sb) != 0) return nb_err_errno(ctx, errno, "%s", files[i].path);
        files[i].size = (uint64_t)sb.st_size;
        NB_TRY(nb_sha256_file(files[i].path, files[i].sha256, ctx));
    }
    return NB_OK;
}

/* ---- writing --------------------------------------------------------------------------------------------- */

typedef struct wsink {
    nb_afile f;
    nb_ctx *ctx;
    nb_status st;
} wsink;

static la_ssize_t w_write(struct archive *a, void *user, const void *buf, size_t n) {
    (void)a;
    wsink *w = user;
    if (w->st != NB_OK) return -1;
    w->st = nb_afile_write(&w->f, buf, n, w->ctx);
    return w->st == NB_OK ? (la_ssize_t)n : -1;
}

static nb_status add_entry(struct archive *a, const char *name, uint64_t size, nb_ctx *ctx, const char *dst) {
    struct archive_entry *e = archive_entry_new();
    if (!e) return nb_err(ctx, NB_ERR_NOMEM, "out of memory");
    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, (la_int64_t)size);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_mtime(e, 0, 0); /* reproducible bundles: no wall-clock times */
    int rc = archive_write_header(a, e);
    archive_entry_free(e);
    return rc == ARCHIVE_OK ? NB_OK : nb_err(ctx, NB_ERR_IO, "%s: %s: %s", dst, name, archive_error_string(a));
}

static nb_status write_bytes(struct archive *a, const void *p, size_t n, const char *dst, const char *name,
                             nb_ctx *ctx) {
    const unsigned char *b = p;
    while (n) {
        la_ssize_t k = archive_write_data(a, b, n);
        if (k <= 0) return nb_err(ctx, NB_ERR_IO, "%s: %s: %s", dst, name, archive_error_string(a));
        b += k;
        n -= (size_t)k;
    }
    return NB_OK;
}

/* Stream one file into the archive, hashing it again: a file that changed
 * since nb_bundle_hash_files is an error (the manifest would lie). */
static nb_status add_file(struct archive *a, const nb_bundle_file *f, unsigned char *buf, const char *dst,
                          nb_ctx *ctx) {
    NB_TRY(add_entry(a, f->name, f->size, ctx, dst));
    FILE *in = fopen(f->path, "rb");
    if (!in) return nb_err_errno(ctx, errno, "%s", f->path);
    nb_sha256 s;
    nb_sha256_init(&s);
    uint64_t total = 0;
    nb_status st = NB_OK;
    size_t got;
    while (st == NB_OK && (got = fread(buf, 1, PIECE, in)) > 0) {
        total += got;
        if (total > f->size) break;
        nb_sha256_update(&s, buf, got);
        st = write_bytes(a, buf, got, dst, f->name, ctx);
    }
    if (st == NB_OK && ferror(in)) st = nb_err_errno(ctx, errno ? errno : EIO, "%s: read", f->path);
    fclose(in);
    if (st != NB_OK) return st;
    unsigned char d[32];
    nb_sha256_final(&s, d);
    NB_RETURN_IF(ctx, total != f->size || memcmp(d, f->sha256, 32), NB_ERR_IO,
                 "%s: changed while the bundle was written", f->path);
    return NB_OK;
}

char *nb_bundle_manifest(const char *manifest_json, const nb_bundle_file *files, size_t n) {
    cJSON *j = manifest_json ? cJSON_Parse(manifest_json) : cJSON_CreateObject();
    if (!j || !cJSON_IsObject(j)) { cJSON_Delete(j); return NULL; }
    cJSON_DeleteItemFromObjectCaseSensitive(j, "nibble_bundle");
    cJSON_DeleteItemFromObjectCaseSensitive(j, "files");
    cJSON_AddNumberToObject(j, "nibble_bundle", NB_BUNDLE_VERSION);
    cJSON *fa = cJSON_AddArrayToObject(j, "files");
    for (size_t i = 0; i < n && fa; i++) {
        cJSON *e = cJSON_CreateObject();
        char hex[65];
        nb_sha256_hex(files[i].sha256, hex);
        cJSON_AddStringToObject(e, "name", files[i].name);
        cJSON_AddNumberToObject(e, "size", (double)files[i].size);
        cJSON_AddStringToObject(e, "sha256", hex);
        cJSON_AddItemToArray(fa, e);
    }
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

nb_status nb_bundle_write(const char *dst, const char *manifest_json, const nb_bundle_file *files, size_t n,
                          int zstd_level, nb_ctx *ctx) {
    char *man = nb_bundle_manifest(manifest_json, files, n);
    NB_RETURN_IF(ctx, !man, NB_ERR_INVALID, "%s: the manifest is not a JSON object", dst);
    unsigned char *buf = nb_malloc(ctx, PIECE, "bundle buffer");
    struct archive *a = archive_write_new();
    wsink w = {.ctx = ctx, .st = NB_OK};
    nb_status st = NB_OK;
    bool opened = false;
    char lvl[64];
    snprintf(lvl, sizeof lvl, "zstd:compression-level=%d", zstd_level > 0 ? zstd_level : 3);
    if (!buf || !a) NB_FAIL_GOTO(st, out, ctx, NB_ERR_NOMEM, "out of memory");
    NB_CHECK_GOTO(st, nb_afile_open(&w.f, dst, false, ctx), out);
    opened = true;
    if (archive_write_add_filter_zstd(a) != ARCHIVE_OK || archive_write_set_options(a, lvl) != ARCHIVE_OK ||
        archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK || /* no zero padding after the zstd frame */
        archive_write_open2(a, &w, NULL, w_write, NULL, NULL) != ARCHIVE_OK)
        NB_FAIL_GOTO(st, out, ctx, NB_ERR_IO, "%s: %s", dst, archive_error_string(a));
    NB_CHECK_GOTO(st, add_entry(a, "manifest.json", strlen(man), ctx, dst), out);
    NB_CHECK_GOTO(st, write_bytes(a, man, strlen(man), dst, "manifest.json", ctx), out);
    for (size_t i = 0; i < n && st == NB_OK; i++) st = add_file(a, &files[i], buf, dst, ctx);
    if (st != NB_OK) goto out;
    if (archive_write_close(a) != ARCHIVE_OK)
        NB_FAIL_GOTO(st, out, ctx, w.st != NB_OK ? w.st : NB_ERR_IO, "%s: %s", dst, archive_error_string(a));
    if (w.st != NB_OK) { st = w.st; goto out; }
    st = nb_afile_commit(&w.f, NULL, ctx);
out:
    if (st != NB_OK && w.st != NB_OK) st = w.st; /* the sink's message is the precise one */
    if (a) archive_write_free(a);
    if (opened) nb_afile_abort(&w.f);
    free(buf);
    free(man);
    return st;
}

/* ---- reading --------------------------------------------------------------------------------------------- */

static bool is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static nb_status open_reader(const char *path, struct archive **out, nb_ctx *ctx) {
    struct archive *a = archive_read_new();
    if (!a) return nb_err(ctx, NB_ERR_NOMEM, "out of memory");
    archive_read_support_filter_zstd(a);
    archive_read_support_format_tar(a);
    if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK) {
        nb_status st = nb_err(ctx, NB_ERR_FORMAT, "%s: not a bundle: %s", path, archive_error_string(a));
        archive_read_free(a);
        return st;
    }
    *out = a;
    return NB_OK;
}

/* Read the current entry whole (at most `limit` bytes) into a NUL-terminated buffer. */
static nb_status read_entry(struct archive *a, struct archive_entry *e, size_t limit, const char *path,
                            char **out, nb_ctx *ctx) {
    la_int64_t sz = archive_entry_size(e);
    NB_RETURN_IF(ctx, sz < 0 || (uint64_t)sz > limit, NB_ERR_FORMAT, "%s: %s: size %lld out of range", path,
                 archive_entry_pathname(e), (long long)sz);
    char *b = nb_malloc(ctx, (size_t)sz + 1, "manifest");
    if (!b) return NB_ERR_NOMEM;
    la_ssize_t got = archive_read_data(a, b, (size_t)sz);
    if (got != sz) {
        free(b);
        return nb_err(ctx, NB_ERR_FORMAT, "%s: %s: truncated", path, archive_entry_pathname(e));
    }
    b[sz] = 0;
    *out = b;
    return NB_OK;
}

nb_status nb_bundle_read_manifest(const char *path, char **out, nb_ctx *ctx) {
    *out = NULL;
    if (is_dir(path)) {
        char *mp = nb_path_join(ctx, path, "manifest.json");
        if (!mp) return NB_ERR_NOMEM;
        size_t n;
        nb_status st = nb_read_file(mp, MANIFEST_MAX, out, &n, ctx);
        free(mp);
        return st;
    }
    struct archive *a = NULL;
    NB_TRY(open_reader(path, &a, ctx));
    struct archive_entry *e;
    nb_status st;
    int rc = archive_read_next_header(a, &e);
    if (rc != ARCHIVE_OK) st = nb_err(ctx, NB_ERR_FORMAT, "%s: not a bundle: %s", path, archive_error_string(a));
    else if (strcmp(archive_entry_pathname(e), "manifest.json"))
        st = nb_err(ctx, NB_ERR_FORMAT, "%s: the first entry is '%s', not manifest.json", path, archive_entry_pathname(e));
    else st = read_entry(a, e, MANIFEST_MAX, path, out, ctx);
    archive_read_free(a);
    return st;
}

typedef struct want_file {
    const char *name;
    uint64_t size;
    unsigned char sha[32];
    bool seen;
} want_file;

/* A file's name inside a bundle: "FILE" or "DIR/FILE" (an HF output directory), each part a plain
 * name: not empty, not "." or "..", nothing above the bundle's root. */
static bool safe_name(const char *n) {
    if (!n[0] || n[0] == '/' || !strcmp(n, "manifest.json")) return false;
    for (const char *p = n; *p;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (!len || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.')) return false;
        if (!e) break;
        p = e + 1;
        if (!*p) return false; /* a trailing '/' */
    }
    return true;
}

/* The manifest's "files", checked for shape. */
static nb_status manifest_files(const char *path, cJSON *j, want_file **out, size_t *n, nb_ctx *ctx) {
    *out = NULL;
    *n = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "nibble_bundle");
    NB_RETURN_IF(ctx, !cJSON_IsNumber(v) || v->valuedouble != NB_BUNDLE_VERSION, NB_ERR_FORMAT,
                 "%s: manifest.json: \"nibble_bundle\" must be %d", path, NB_BUNDLE_VERSION);
    const cJSON *fa = cJSON_GetObjectItemCaseSensitive(j, "files");
    NB_RETURN_IF(ctx, !cJSON_IsArray(fa), NB_ERR_FORMAT, "%s: manifest.json: \"files\" missing", path);
    size_t k = (size_t)cJSON_GetArraySize(fa);
    want_file *w = nb_calloc(ctx, k ? k : 1, sizeof *w, "manifest files");
    if (!w) return NB_ERR_NOMEM;
    size_t i = 0;
    for (const cJSON *e = fa->child; e; e = e->next, i++) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name"), *sz = cJSON_GetObjectItemCaseSensitive(e, "size"),
                    *sh = cJSON_GetObjectItemCaseSensitive(e, "sha256");
        bool ok = cJSON_IsString(nm) && safe_name(nm->valuestring) && cJSON_IsNumber(sz) && sz->valuedouble >= 0 &&
                  cJSON_IsString(sh) && strlen(sh->valuestring) == 64;
        for (int b = 0; ok && b < 32; b++) {
            unsigned x;
            ok = sscanf(sh->valuestring + 2 * b, "%2x", &x) == 1;
            w[i].sha[b] = (unsigned char)x;
        }
        for (size_t p = 0; ok && p < i; p++) ok = strcmp(w[p].name, nm->valuestring) != 0;
        if (!ok) {
            free(w);
            return nb_err(ctx, NB_ERR_FORMAT, "%s: manifest.json: files[%zu] is malformed or repeated", path, i);
        }
        w[i].name = nm->valuestring;
        w[i].size = (uint64_t)sz->valuedouble;
    }
    *out = w;
    *n = k;
    return NB_OK;
}

/* Hash a stream of `size` bytes from `rd` and compare with w. */
static nb_status check_stream(const char *path, want_file *w, uint64_t got_size, const unsigned char got[32],
                              nb_ctx *ctx) {
    NB_RETURN_IF(ctx, got_size != w->size, NB_ERR_FORMAT, "%s: %s: %llu bytes, the manifest says %llu", path, w->name,
                 (unsigned long long)got_size, (unsigned long long)w->size);
    NB_RETURN_IF(ctx, memcmp(got, w->sha, 32), NB_ERR_FORMAT, "%s: %s: sha256 differs from the manifest", path,
                 w->name);
    w->seen = true;
    return NB_OK;
}

static want_file *find_want(want_file *w, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(w[i].name, name)) return &w[i];
    return NULL;
}

nb_status nb_bundle_verify(const char *path, nb_bundle_check *res, nb_ctx *ctx) {
    memset(res, 0, sizeof *res);
    char *man = NULL;
    NB_TRY(nb_bundle_read_manifest(path, &man, ctx));
    cJSON *j = cJSON_Parse(man);
    free(man);
    NB_RETURN_IF(ctx, !j, NB_ERR_FORMAT, "%s: manifest.json is not valid JSON", path);
    want_file *w = NULL;
    size_t nw = 0;
    nb_status st = manifest_files(path, j, &w, &nw, ctx);
    unsigned char *buf = st == NB_OK ? nb_malloc(ctx, PIECE, "bundle buffer") : NULL;
    if (st == NB_OK && !buf) st = NB_ERR_NOMEM;
    if (st == NB_OK && is_dir(path)) {
        for (size_t i = 0; i < nw && st == NB_OK; i++) {
            char *fp = nb_path_join(ctx, path, w[i].name);
            struct stat sb;
            unsigned char d[32];
            if (!fp) st = NB_ERR_NOMEM;
            else if (stat(fp, &sb) != 0) st = nb_err(ctx, NB_ERR_FORMAT, "%s: %s: missing", path, w[i].name);
            else if ((st = nb_sha256_file(fp, d, ctx)) == NB_OK) st = check_stream(path, &w[i], (uint64_t)sb.st_size, d, ctx);
            free(fp);
            res->bytes += w[i].size;
        }
    } else if (st == NB_OK) {
        struct archive *a = NULL;
        st = open_reader(path, &a, ctx);
        struct archive_entry *e;
        int rc = ARCHIVE_OK;
        bool first = true;
        while (st == NB_OK && (rc = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
            const char *name = archive_entry_pathname(e);
            if (first) { first = false; continue; } /* the manifest itself */
            want_file *wf = find_want(w, nw, name);
            if (!wf) { st = nb_err(ctx, NB_ERR_FORMAT, "%s: %s: not in the manifest", path, name); break; }
            nb_sha256 s;
            nb_sha256_init(&s);
            uint64_t total = 0;
            la_ssize_t k;
            while ((k = archive_read_data(a, buf, PIECE)) > 0) {
                nb_sha256_update(&s, buf, (size_t)k);
                total += (uint64_t)k;
            }
            if (k < 0) { st = nb_err(ctx, NB_ERR_FORMAT, "%s: %s: %s", path, name, archive_error_string(a)); break; }
            unsigned char d[32];
            nb_sha256_final(&s, d);
            st = check_stream(path, wf, total, d, ctx);
            res->bytes += total;
        }
        if (st == NB_OK && rc != ARCHIVE_EOF)
            st = nb_err(ctx, NB_ERR_FORMAT, "%s: damaged archive: %s", path, archive_error_string(a));
        if (a) archive_read_free(a);
    }
    for (size_t i = 0; i < nw && st == NB_OK; i++)
        if (!w[i].seen) st = nb_err(ctx, NB_ERR_FORMAT, "%s: %s: in the manifest but not in the bundle", path, w[i].name);
    if (st == NB_OK) res->n_files = nw;
    free(buf);
    free(w);
    cJSON_Delete(j);
    return st;
}
