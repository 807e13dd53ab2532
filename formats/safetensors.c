/* formats/safetensors.c — safetensors reader (single file or sharded index).
 * The writer is formats/safetensors_write.c, the strict JSON scan formats/json_strict.c.
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
 * JSON is parsed by cJSON after a strict RFC 8259 scan (formats/json_strict.h):
 * cJSON is lenient, the reference is strict and reads shapes and offsets as
 * exact 64-bit integers. The tree walk below consumes the scan's number tokens
 * in document order (count_numbers skips subtrees).
 */
#include "formats/safetensors.h"

#include "core/afile.h"
#include "core/checked.h"
#include "core/cleanup.h"
#include "core/file.h"
#include "core/str.h"
#include "formats/json_strict.h"
#include "formats/readers.h"
#include "formats/safetensors_impl.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_META 10000         /* metadata entries (kv sets are linear) */

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
    const nb_json_numbers *nums; /* the strict scan's number tokens */
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
        if (ps->ni >= ps->nums->n)
            return nb_err(ps->ctx, NB_ERR_INTERNAL, "%s: header: number token count mismatch", ps->file);
        uint64_t v = ps->nums->v[ps->ni++];
        if (v == NB_JSON_NOT_UINT)
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

const char *nb_st_find_duplicate(const char **v, size_t n) {
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
    const char *dup = nb_st_find_duplicate(keys, n);
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
    const char *dup = nb_st_find_duplicate(names, n);
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
    if (!nb_utf8_valid(js, jn, &bad))
        return nb_err(ctx, NB_ERR_FORMAT, "%s: header: invalid UTF-8 at byte offset %zu", name, bad + 8);
    if (jn == 0 || js[0] != '{')
        return nb_err(ctx, NB_ERR_FORMAT,
                      "%s: header: must start with '{' at byte offset 8 (found %s%02x)", name,
                      jn ? "0x" : "end of header, ", jn ? js[0] : 0);

    nb_json_numbers nums;
    nb_status st = nb_json_scan_strict(js, jn, name, "header", 8, &nums, ctx);
    cJSON *root = NULL;
    if (st == NB_OK) {
        root = cJSON_ParseWithLengthOpts((const char *)js, jn, NULL, 0);
        if (!root || !cJSON_IsObject(root))
            st = nb_err(ctx, NB_ERR_NOMEM, "%s: header: cJSON could not build the tree (out of memory?)", name);
    }
    if (st == NB_OK) {
        st_parse ps = {.nums = &nums, .file = name, .ctx = ctx};
        st = parse_tree(&ps, root, out);
    }
    cJSON_Delete(root);
    nb_json_numbers_free(&nums);
    if (st != NB_OK) nb_st_header_free(out);
    return st;
}

/* ---- reader ----------------------------------------------------------------------------- */

typedef struct st_map {
    void *p;
    size_t n;
    char *path;  /* for the SIGBUS message (core/cleanup.h) */
    int slot;    /* its registration, -1: none */
} st_map;

static void unmap(st_map *m) {
    if (m->p) { /* slot and path are set only for a mapping */
        nb_cleanup_forget_map(m->slot);
        munmap(m->p, m->n);
    }
    free(m->path);
    m->p = NULL;
    m->path = NULL;
    m->slot = -1;
}

typedef struct st_impl {
    size_t n_maps;
    st_map *maps;
} st_impl;

static void st_impl_free(st_impl *im) {
    if (!im) return;
    for (size_t k = 0; k < im->n_maps; k++)
        unmap(&im->maps[k]);
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
    out->path = NULL;
    out->slot = -1;
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
        out->path = strdup(path); /* NULL (out of memory): the SIGBUS message names no file */
        if (out->path)
            out->slot = nb_cleanup_add_map(p, out->n, out->path, (unsigned long long)sb.st_dev,
                                           (unsigned long long)sb.st_ino);
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
    if (st != NB_OK) unmap(map);
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
        unmap(&map);
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
    NB_TRY(nb_read_file(path, NB_ST_MAX_HEADER, &buf, &n, ctx));
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

    for (size_t s = 0; s < ix.n_shards; s++) {
        const char *file = ix.first[s]->file;
        free(spath);
        spath = nb_path_sibling(ctx, path, file);
        if (!spath) { st = NB_ERR_NOMEM; goto done; }
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
            nb_tensor *nt = nb_realloc(NULL, m->tensors, nc * sizeof *nt, "safetensors");
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

