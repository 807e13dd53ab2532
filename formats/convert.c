/* formats/convert.c — streaming conversion (see formats/convert.h). */
#include "formats/convert.h"

#include "core/afile.h"
#include "core/progress.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHUNK_ELEMS (1u << 22) /* 4 Mi elements per conversion chunk */

/* Drop resident pages of [p, p+n) of a read-only file mapping: they are
 * re-read from the file if touched again. Advisory: failure only costs memory. */
void nb_release_mapped(const void *p, uint64_t n) {
    if (!p || n == 0) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p & ~(page - 1);
    uintptr_t e = ((uintptr_t)p + n + page - 1) & ~(page - 1);
    madvise((void *)a, e - a, MADV_DONTNEED);
}

/* A fault on a file mapping maps more than the page it needs: the fault-around
 * window and, with large page-cache folios (ext4 on recent kernels), up to a
 * whole folio (2 MiB on x86-64) -- bytes of neighbouring tensors. Released with
 * the tensor alone, those stayed resident until their own tensor's turn, so a
 * stream in another order than the file's (safetensors output sorted by name,
 * prune) grew with the tensor count (about 0.4 MiB per tensor). Releasing NEAR
 * bytes either side as well, inside the model's one mapping, keeps it flat; a
 * neighbour still to come is read again from the page cache. */
#define RELEASE_NEAR ((uint64_t)4 << 20)

void nb_model_release_tensor(nb_model *m, size_t i) {
    const nb_tensor *t = &m->tensors[i];
    const unsigned char *base = m->map, *p = t->data;
    if (!base || !p || p < base || (uint64_t)(p - base) + t->nbytes > m->map_len) {
        nb_release_mapped(p, t->nbytes);
        return;
    }
    uint64_t lo = (uint64_t)(p - base), hi = lo + t->nbytes;
    lo = lo > RELEASE_NEAR ? lo - RELEASE_NEAR : 0;
    hi = m->map_len - hi > RELEASE_NEAR ? hi + RELEASE_NEAR : m->map_len;
    nb_release_mapped(base + lo, hi - lo);
}

nb_status nb_copy_tensor(nb_model *m, size_t i, nb_type out, nb_sink *sink, nb_ctx *ctx) {
    const nb_tensor *t = &m->tensors[i];
    if (t->nbytes == 0) return NB_OK;
    const void *src;
    void *owned;
    NB_TRY(nb_model_tensor_bytes(m, i, &src, &owned, ctx));
    nb_status st = NB_OK;
    if (out == t->type) {
        /* copy in 16 MiB pieces, releasing each mapped piece once written, so a
         * large tensor never becomes resident as a whole */
        const uint64_t piece = 16u << 20;
        const unsigned char *p = src;
        for (uint64_t off = 0; off < t->nbytes && st == NB_OK; off += piece) {
            uint64_t n = t->nbytes - off < piece ? t->nbytes - off : piece;
            st = nb_sink_write(sink, p + off, n, ctx);
            if (!owned) nb_release_mapped(p + off, n);
        }
        goto done;
    }
    const nb_type_traits *ti = nb_type_get(t->type), *to = nb_type_get(out);
    if (!ti || !ti->to_float) {
        st = nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: tensor '%s': cannot convert from type %s", m->path, t->name,
                    nb_type_name(t->type));
        goto done;
    }
    if (!to || !to->quantize) {
        st = nb_err(ctx, NB_ERR_UNSUPPORTED, "%s: tensor '%s': cannot convert to type %s", m->path, t->name,
                    nb_type_name(out));
        goto done;
    }
    uint64_t row = (uint64_t)t->ne[0], nrows = row ? nb_tensor_nelements(t) / row : 0;
    uint64_t in_row_bytes, out_row_bytes;
    NB_CHECK_GOTO(st, nb_type_row_bytes(t->type, row, &in_row_bytes, ctx, t->name), done);
    NB_CHECK_GOTO(st, nb_type_row_bytes(out, row, &out_row_bytes, ctx, t->name), done);
    uint64_t rows_per = row >= CHUNK_ELEMS ? 1 : CHUNK_ELEMS / row;
    if (rows_per > nrows) rows_per = nrows;
    float *f = nb_malloc(ctx, rows_per * row * sizeof(float), "conversion buffer");
    void *q = nb_malloc(ctx, rows_per * out_row_bytes, "conversion buffer");
    if (!f || !q) {
        free(f); free(q);
        st = NB_ERR_NOMEM;
        goto done;
    }
    for (uint64_t r0 = 0; r0 < nrows && st == NB_OK; r0 += rows_per) {
        uint64_t nr = nrows - r0 < rows_per ? nrows - r0 : rows_per;
        const unsigned char *in = (const unsigned char *)src + r0 * in_row_bytes;
        ti->to_float(in, f, (int64_t)(nr * row));
        if (!owned) nb_release_mapped(in, nr * in_row_bytes);
        size_t w = to->quantize(f, q, (int64_t)nr, (int64_t)row, NULL);
        st = nb_sink_write(sink, q, w, ctx);
    }
    free(f);
    free(q);
done:
    free(owned);
    nb_model_release_tensor(m, i);
    return st;
}

static nb_type target_type(const nb_tensor *t, const nb_convert_opts *o) {
    if (!o || !o->set_type) return t->type;
    const nb_type_traits *tr = nb_type_get(t->type);
    if (!tr || !(tr->is_float || tr->is_quantized)) return t->type; /* integers stay as they are */
    return t->n_dims >= 2 ? o->type : NB_TYPE_F32;
}

static nb_status write_converted(void *user, nb_model *m, size_t i, nb_sink *sink, nb_ctx *ctx) {
    return nb_copy_tensor(m, i, target_type(&m->tensors[i], user), sink, ctx);
}

nb_status nb_stream_tensors(nb_model *m, nb_sink *sink, const char *label, nb_tensor_write_fn write, void *user,
                            nb_convert_result *r, nb_ctx *ctx) {
    uint64_t total = 0;
    for (size_t i = 0; i < m->n_tensors; i++) total += m->tensors[i].nbytes;
    NB_TRY(nb_sink_begin(sink, ctx));
    nb_progress p;
    nb_progress_begin(&p, ctx, label, total);
    nb_status st = NB_OK;
    for (size_t k = 0; k < m->n_tensors && st == NB_OK; k++) {
        size_t i = nb_sink_data_order(sink, k);
        st = write(user, m, i, sink, ctx);
        nb_progress_add(&p, m->tensors[i].nbytes, m->tensors[i].name);
    }
    nb_progress_end(&p);
    if (st == NB_OK) st = nb_sink_commit(sink, ctx);
    if (st != NB_OK) return st;
    r->n_tensors = m->n_tensors;
    r->bytes_in = total;
    r->bytes_out = sink->bytes_written;
    memcpy(r->sha256, sink->sha256, 32);
    return NB_OK;
}

nb_status nb_convert(const char *src, const char *dst, const nb_convert_opts *o, nb_convert_result *r,
                     nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    double t0 = nb_now();
    if (nb_same_file(src, dst))
        return nb_err(ctx, NB_ERR_INVALID, "%s: output is the same file as the input", dst);
    nb_model *m = NULL;
    NB_TRY(nb_model_open(src, &m, ctx));
    nb_sink *sink = NULL;
    nb_status st = nb_sink_create(dst, NB_FMT_UNKNOWN, &sink, ctx);
    if (st != NB_OK) { nb_model_close(m); return st; }
    NB_CHECK_GOTO(st, nb_kvset_copy(&sink->kv, &m->kv, ctx), out);
    if (o && o->set_type && sink->format == NB_FMT_GGUF) {
        /* llama.cpp's file-type enum: 0 all F32, 1 mostly F16, 32 mostly BF16 */
        uint32_t ft = o->type == NB_TYPE_F16 ? 1 : o->type == NB_TYPE_BF16 ? 32 : 0;
        NB_CHECK_GOTO(st, nb_kv_set_u32(&sink->kv, "general.file_type", ft, ctx), out);
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        const nb_tensor *t = &m->tensors[i];
        NB_CHECK_GOTO(st, nb_sink_add_tensor(sink, t->name, target_type(t, o), t->n_dims, t->ne, ctx), out);
    }
    NB_CHECK_GOTO(st, nb_stream_tensors(m, sink, "convert", write_converted, (void *)o, r, ctx), out);
out:
    nb_sink_free(sink);
    nb_model_close(m);
    r->seconds = nb_now() - t0;
    return st;
}
