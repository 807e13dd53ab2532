/* engine/engine.c — opening a model for the forward pass: architecture and
 * hyper-parameters from GGUF metadata, binding and checking every tensor the
 * graph needs, KV cache and scratch. See engine/engine.h; the graph itself
 * is in forward.c / forward_moe.c. */
#include "engine/engine_impl.h"

#include "core/checked.h"
#include "kernels/cpu/matmul.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ENG_MAX_CTX (1 << 22)   /* KV cache positions accepted from options */
#define ENG_MAX_LAYER 65536
#define ENG_MAX_DIM (1 << 20)

/* ---- owned buffers --------------------------------------------------------------------- */

/* Keep p (freed with the engine); false when the list cannot grow. */
static bool track(nb_engine *e, void *p, nb_ctx *ctx) {
    if (e->n_owned == e->cap_owned) {
        size_t cap = e->cap_owned ? e->cap_owned * 2 : 64;
        void **v = nb_realloc(NULL, e->owned, cap * sizeof *v, "engine");
        if (!v) {
            nb_err(ctx, NB_ERR_NOMEM, "engine: out of memory");
            return false;
        }
        e->owned = v;
        e->cap_owned = cap;
    }
    e->owned[e->n_owned++] = p;
    return true;
}

static void *own(nb_engine *e, size_t n, nb_ctx *ctx, const char *what) {
    void *p = nb_malloc(ctx, n ? n : 1, what);
    if (p && !track(e, p, ctx)) {
        free(p);
        return NULL;
    }
    return p;
}

/* ---- metadata helpers ------------------------------------------------------------------ */

static bool kv_u32(const nb_kvset *kv, const char *arch, const char *suffix, uint32_t *out) {
    char key[160];
    uint64_t v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!nb_kv_get_u64(kv, key, &v) || v > UINT32_MAX) return false;
    *out = (uint32_t)v;
    return true;
}
static bool kv_f64(const nb_kvset *kv, const char *arch, const char *suffix, double *out) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return nb_kv_get_f64(kv, key, out);
}

/* ---- tensor binding -------------------------------------------------------------------- */

static size_t tensor_index(const nb_model *m, const nb_tensor *t) { return (size_t)(t - m->tensors); }

static void fmt_shape(char *buf, size_t n, uint32_t n_dims, const int64_t *ne) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (uint32_t d = 0; d < n_dims && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "", (long long)ne[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* Does t have exactly the shape {ne[0..n_dims)} (trailing dims of 1 ignored)? */
static bool shape_is(const nb_tensor *t, uint32_t n_dims, const int64_t *ne) {
    for (uint32_t d = 0; d < NB_MAX_DIMS; d++) {
        int64_t want = d < n_dims ? ne[d] : 1;
        int64_t have = d < t->n_dims ? t->ne[d] : 1;
        if (want != have) return false;
    }
    return true;
}

/* A zero-copy pointer when the source has one and it is 4-byte aligned
 * (kernels read F32/F16 elements in place); otherwise an owned copy. */
static nb_status tensor_bytes(nb_engine *e, const nb_tensor *t, const void **out, nb_ctx *ctx) {
    if (t->data && ((uintptr_t)t->data % 4) == 0) {
        *out = t->data;
        return NB_OK;
    }
    NB_RETURN_IF(ctx, t->nbytes > SIZE_MAX, NB_ERR_RANGE, "%s: tensor '%s' is too large", e->model->path,
                 t->name);
    void *p = own(e, (size_t)t->nbytes, ctx, t->name);
    if (!p) return NB_ERR_NOMEM;
    NB_TRY(nb_model_read_tensor(e->model, tensor_index(e->model, t), p, ctx));
    *out = p;
    return NB_OK;
}

static nb_status shape_err(nb_engine *e, const nb_tensor *t, uint32_t n_dims, const int64_t *ne, nb_ctx *ctx) {
    char have[96], want[96];
    fmt_shape(have, sizeof have, t->n_dims, t->ne);
    fmt_shape(want, sizeof want, n_dims, ne);
    return nb_err(ctx, NB_ERR_FORMAT, "%s: tensor '%s' has shape %s but the %s graph needs %s", e->model->path,
                  t->name, have, e->arch->gguf_arch, want);
}

/* Drop the file pages of a mapped range from this process (the whole pages
 * inside it): they stay in the page cache, and a later read (an embedding
 * row of a tied output matrix) maps them again. Without it a packed model
 * would hold both the copy and the pages it was read from. */
static void release_pages(const void *p, uint64_t n) {
#ifdef MADV_DONTNEED
    const long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) return;
    const uintptr_t a = ((uintptr_t)p + (uintptr_t)page - 1) & ~((uintptr_t)page - 1),
                    b = ((uintptr_t)p + (uintptr_t)n) & ~((uintptr_t)page - 1);
    if (b > a) (void)madvise((void *)a, b - a, MADV_DONTNEED);
#else
    (void)p, (void)n;
#endif
}

/* A row-interleaved copy of w for the row-lane kernels, where this CPU has
 * them for its type (Q4_0, Q4_1, Q5_0, IQ4_NL, NF4, Q8_0 with AVX-512 VNNI): the same bits,
 * about twice the speed (kernels/cpu/matmul.h). Not for --precise, which
 * reads the file's rows, nor with NB_PACK=0 in the environment (benchmarks,
 * debugging). The copy costs the matrix's size in memory once; the file's
 * pages it was read from are released (release_pages). */
static nb_status pack_mat(nb_engine *e, nb_wmat *w, bool mapped, nb_ctx *ctx) {
    const char *env = getenv("NB_PACK");
    if (e->precise || (env && !strcmp(env, "0"))) return NB_OK;
    const uint64_t pb = nb_matmul_pack_bytes(w->type, w->n_out, w->n_in);
    uint64_t total;
    if (!pb || !nb_mul_u64(pb, (uint64_t)w->n_mat, &total) || total > SIZE_MAX) return NB_OK;
    void *p = NULL;
    if (posix_memalign(&p, 64, (size_t)total) != 0 || !track(e, p, ctx)) {
        free(p);
        return nb_err(ctx, NB_ERR_NOMEM, "engine: out of memory for a packed copy of '%s' (%llu bytes)", w->name,
                      (unsigned long long)total);
    }
    for (int64_t m = 0; m < w->n_mat; m++)
        nb_matmul_pack(w->type, (const unsigned char *)w->data + (uint64_t)m * w->mat_bytes, w->n_out, w->n_in,
                       (unsigned char *)p + (uint64_t)m * pb, e->n_threads);
    w->packed = p;
    w->packed_mat_bytes = pb;
    if (mapped) release_pages(w->data, w->mat_bytes * (uint64_t)w->n_mat);
    return NB_OK;
}

/* Bind a matrix {n_in, n_out} (n_mat > 1: a stack {n_in, n_out, n_mat}).
 * Absent and not required: w->data stays NULL. */
static nb_status bind_mat(nb_engine *e, const char *name, int64_t n_in, int64_t n_out, int64_t n_mat,
                          bool required, nb_wmat *w, nb_ctx *ctx) {
    memset(w, 0, sizeof *w);
    const nb_tensor *t = nb_model_find(e->model, name);
    if (!t) {
        NB_RETURN_IF(ctx, required, NB_ERR_FORMAT, "%s: missing tensor '%s' (needed by the %s graph)",
                     e->model->path, name, e->arch->gguf_arch);
        return NB_OK;
    }
    int64_t ne[3] = {n_in, n_out, n_mat};
    uint32_t nd = n_mat > 1 ? 3 : (n_out > 1 ? 2 : 1);
    if (!shape_is(t, nd, ne)) return shape_err(e, t, nd, ne, ctx);
    const nb_type_traits *tr = nb_type_get(t->type);
    NB_RETURN_IF(ctx, !tr || !tr->to_float, NB_ERR_UNSUPPORTED,
                 "%s: tensor '%s': the engine has no kernel for type %s", e->model->path, name,
                 nb_type_name(t->type));
    uint64_t rb, mb, total;
    NB_TRY(nb_type_row_bytes(t->type, (uint64_t)n_in, &rb, ctx, t->name));
    NB_RETURN_IF(ctx, !nb_mul_u64(rb, (uint64_t)n_out, &mb) || !nb_mul_u64(mb, (uint64_t)n_mat, &total),
                 NB_ERR_RANGE, "%s: tensor '%s': size overflows", e->model->path, name);
    NB_RETURN_IF(ctx, total != t->nbytes, NB_ERR_FORMAT,
                 "%s: tensor '%s' holds %llu bytes but type %s and its shape need %llu", e->model->path, name,
                 (unsigned long long)t->nbytes, nb_type_name(t->type), (unsigned long long)total);
    w->name = t->name;
    w->type = t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    w->n_mat = n_mat;
    w->row_bytes = rb;
    w->mat_bytes = mb;
    NB_TRY(tensor_bytes(e, t, &w->data, ctx));
    return pack_mat(e, w, w->data == t->data, ctx);
}

/* Bind a vector of n floats (norm weights, biases): F32 in place when
 * aligned, any other type converted once into an owned buffer. */
static nb_status bind_vec(nb_engine *e, const char *name, int64_t n, bool required, const float **out,
                          nb_ctx *ctx) {
    *out = NULL;
    const nb_tensor *t = nb_model_find(e->model, name);
    if (!t) {
        NB_RETURN_IF(ctx, required, NB_ERR_FORMAT, "%s: missing tensor '%s' (needed by the %s graph)",
                     e->model->path, name, e->arch->gguf_arch);
        return NB_OK;
    }
    if (!shape_is(t, 1, &n)) return shape_err(e, t, 1, &n, ctx);
    if (t->type == NB_TYPE_F32 && t->nbytes == (uint64_t)n * 4) {
        const void *p;
        NB_TRY(tensor_bytes(e, t, &p, ctx));
        *out = p;
        return NB_OK;
    }
    const nb_type_traits *tr = nb_type_get(t->type);
    NB_RETURN_IF(ctx, !tr || !tr->to_float, NB_ERR_UNSUPPORTED, "%s: tensor '%s': cannot convert type %s to f32",
                 e->model->path, name, nb_type_name(t->type));
    float *p = own(e, (size_t)n * sizeof(float), ctx, name);
    if (!p) return NB_ERR_NOMEM;
    NB_TRY(nb_model_read_f32(e->model, tensor_index(e->model, t), p, ctx));
    *out = p;
    return NB_OK;
}

static void lname(char *buf, size_t n, int L, const char *suffix) { snprintf(buf, n, "blk.%d.%s", L, suffix); }

/* ---- hyper-parameters ---------------------------------------------------------------------- */

static nb_status need_pos(nb_engine *e, const char *key, int64_t v, int64_t lim, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, v <= 0, NB_ERR_FORMAT, "%s: missing or zero '%s.%s'", e->model->path, e->arch->gguf_arch,
                 key);
    NB_RETURN_IF(ctx, v > lim, NB_ERR_RANGE, "%s: '%s.%s' = %lld is out of range (limit %lld)", e->model->path,
                 e->arch->gguf_arch, key, (long long)v, (long long)lim);
    return NB_OK;
}

/* Rotary configuration. scale: 1/factor; yarn: llama.cpp's YaRN with
 * ext_factor 1, beta_fast 32, beta_slow 1 and n_ctx_orig. rope_freqs: per
 * frequency divisors (llama3) or NULL. */
static nb_status rope_init(nb_engine *e, nb_rope *r, double base, double scale, bool yarn, uint32_t n_ctx_orig,
                           const float *rope_freqs, nb_ctx *ctx) {
    const int n_rot = e->hp.n_rot;
    r->freq_base = base;
    r->freq_scale = scale;
    r->yarn = yarn;
    r->ext_factor = yarn ? 1.0 : 0.0;
    r->attn_factor = 1.0;
    r->inv_freq = own(e, (size_t)(n_rot / 2) * sizeof(double), ctx, "rope frequencies");
    if (!r->inv_freq) return NB_ERR_NOMEM;
    for (int i = 0; i < n_rot / 2; i++) {
        double f = pow(base, -2.0 * i / n_rot);
        if (rope_freqs) f /= rope_freqs[i];
        r->inv_freq[i] = f;
    }
    if (yarn) {
        /* dimension at which a frequency makes n rotations over n_ctx_orig */
        const double nc = n_ctx_orig ? n_ctx_orig : e->hp.n_ctx_train;
        double lo = floor(n_rot * log(nc / (32.0 * 2.0 * M_PI)) / (2.0 * log(base)));
        double hi = ceil(n_rot * log(nc / (1.0 * 2.0 * M_PI)) / (2.0 * log(base)));
        r->corr_lo = lo < 0 ? 0 : lo;
        r->corr_hi = hi > n_rot - 1 ? n_rot - 1 : hi;
    }
    return NB_OK;
}

static nb_status read_hparams(nb_engine *e, nb_ctx *ctx) {
    const nb_kvset *kv = &e->model->kv;
    const char *g = e->arch->gguf_arch;
    const char *path = e->model->path;
    nb_hparams h;
    if (nb_arch_hparams_from_kv(e->arch, kv, &h, ctx) != NB_OK) return nb_err_prefix(ctx, "%s", path);
    nb_ehparams *hp = &e->hp;
    memset(hp, 0, sizeof *hp);
    NB_TRY(need_pos(e, "block_count", h.n_layer, ENG_MAX_LAYER, ctx));
    NB_TRY(need_pos(e, "embedding_length", h.n_embd, ENG_MAX_DIM, ctx));
    NB_TRY(need_pos(e, "attention.head_count", h.n_head, 65536, ctx));
    NB_TRY(need_pos(e, "attention.head_count_kv", h.n_head_kv, 65536, ctx));
    NB_RETURN_IF(ctx, h.n_head % h.n_head_kv != 0, NB_ERR_FORMAT,
                 "%s: '%s.attention.head_count' %u is not a multiple of 'head_count_kv' %u", path, g, h.n_head,
                 h.n_head_kv);
    hp->n_layer = (int)h.n_layer;
    hp->n_embd = (int)h.n_embd;
    hp->n_head = (int)h.n_head;
    hp->n_head_kv = (int)h.n_head_kv;
    if (h.head_dim) {
        NB_TRY(need_pos(e, "attention.key_length", h.head_dim, 65536, ctx));
        hp->head_dim = (int)h.head_dim;
    } else {
        NB_RETURN_IF(ctx, h.n_embd % h.n_head != 0, NB_ERR_FORMAT,
                     "%s: '%s.embedding_length' %u is not a multiple of the head count %u (and no key_length)",
                     path, g, h.n_embd, h.n_head);
        hp->head_dim = (int)(h.n_embd / h.n_head);
    }
    uint32_t vlen;
    if (kv_u32(kv, g, "attention.value_length", &vlen))
        NB_RETURN_IF(ctx, (int)vlen != hp->head_dim, NB_ERR_UNSUPPORTED,
                     "%s: '%s.attention.value_length' %u differs from key_length %d (not supported)", path, g,
                     vlen, hp->head_dim);
    uint32_t n_rot = (uint32_t)hp->head_dim;
    kv_u32(kv, g, "rope.dimension_count", &n_rot);
    NB_RETURN_IF(ctx, n_rot == 0 || n_rot % 2 || n_rot > (uint32_t)hp->head_dim, NB_ERR_FORMAT,
                 "%s: '%s.rope.dimension_count' = %u must be even and at most the head size %d", path, g, n_rot,
                 hp->head_dim);
    hp->n_rot = (int)n_rot;
    hp->n_ff = (int)h.n_ff;
    NB_RETURN_IF(ctx, h.n_ff > ENG_MAX_DIM * 4u, NB_ERR_RANGE, "%s: '%s.feed_forward_length' %u out of range",
                 path, g, h.n_ff);
    hp->rms_eps = h.rms_eps != 0 ? (float)h.rms_eps : 1e-5f;
    NB_RETURN_IF(ctx, !(hp->rms_eps > 0 && hp->rms_eps < 1), NB_ERR_RANGE,
                 "%s: '%s.attention.layer_norm_rms_epsilon' = %g is out of range", path, g, h.rms_eps);
    hp->n_ctx_train = h.n_ctx;
    const nb_arch *a = e->arch;
    hp->embd_scale = a->embd_scale_sqrt ? sqrtf((float)hp->n_embd) : 1.0f;
    hp->expert_weights_scale = 1.0f;
    hp->attn_scale = nb_arch_attn_scale(a, (uint32_t)hp->n_layer, (uint32_t)hp->n_embd, (uint32_t)hp->n_head,
                                        (uint32_t)hp->head_dim);
    hp->act = a->act;
    hp->bidir = (a->flags & NB_ARCH_F_ENCODER) != 0;
    hp->rope_layout = (e->arch->flags & NB_ARCH_F_PERMUTE_QK) ? NB_ROPE_NORM : NB_ROPE_NEOX;

    if (e->arch->flags & NB_ARCH_F_MOE) {
        NB_TRY(need_pos(e, "expert_count", h.n_expert, 4096, ctx));
        /* 64: far above any real model (Mixtral 2, Qwen 4-8, DeepSeek 8), and it
         * bounds the per-slot expert output buffer (n_batch x n_used x n_embd) */
        NB_TRY(need_pos(e, "expert_used_count", h.n_expert_used, h.n_expert < 64 ? h.n_expert : 64, ctx));
        hp->n_expert = (int)h.n_expert;
        hp->n_expert_used = (int)h.n_expert_used;
        /* llama.cpp: mixtral's experts are feed_forward_length wide; qwen MoE
         * reads expert_feed_forward_length, else n_ff / n_expert_used */
        uint32_t fe = h.n_ff_exp;
        if (!fe) fe = (e->arch->flags & NB_ARCH_F_MIXTRAL_NAMES) ? h.n_ff : h.n_ff / h.n_expert_used;
        NB_TRY(need_pos(e, "expert_feed_forward_length", fe, ENG_MAX_DIM * 4, ctx));
        hp->n_ff_exp = (int)fe;
        if (e->arch->flags & NB_ARCH_F_SHEXP) {
            uint32_t fs = h.n_ff_shexp ? h.n_ff_shexp : h.n_ff;
            NB_TRY(need_pos(e, "expert_shared_feed_forward_length", fs, ENG_MAX_DIM * 4, ctx));
            hp->n_ff_shexp = (int)fs;
        }
        /* the graph's default (the arch row); the metadata may say otherwise */
        hp->norm_topk = a->norm_topk;
        bool b;
        char key[160];
        snprintf(key, sizeof key, "%s.expert_weights_norm", g);
        if (nb_kv_get_bool(kv, key, &b)) hp->norm_topk = b;
        double ws;
        if (kv_f64(kv, g, "expert_weights_scale", &ws) && ws != 0) hp->expert_weights_scale = (float)ws;
    } else {
        NB_TRY(need_pos(e, "feed_forward_length", h.n_ff, ENG_MAX_DIM * 4, ctx));
    }

    if (a->swa_period) {
        NB_RETURN_IF(ctx, h.sliding_window == 0, NB_ERR_FORMAT, "%s: missing or zero '%s.attention.sliding_window'",
                     path, g);
        hp->n_swa = h.sliding_window > INT32_MAX ? INT32_MAX : (int)h.sliding_window;
    }

    /* rotary embeddings */
    double base = h.rope_theta != 0 ? h.rope_theta : 10000.0;
    NB_RETURN_IF(ctx, !(base > 1.0 && base < 1e30), NB_ERR_RANGE, "%s: '%s.rope.freq_base' = %g is out of range",
                 path, g, base);
    char key[160];
    snprintf(key, sizeof key, "%s.rope.scaling.type", g);
    const char *stype = nb_kv_get_str(kv, key);
    double factor = 1.0;
    bool yarn = false;
    if (stype && strcmp(stype, "none") != 0) {
        NB_RETURN_IF(ctx, strcmp(stype, "linear") != 0 && strcmp(stype, "yarn") != 0, NB_ERR_UNSUPPORTED,
                     "%s: '%s' = '%s' is not supported (linear, yarn, none)", path, key, stype);
        NB_RETURN_IF(ctx, !(h.rope_factor >= 1.0 && h.rope_factor < 1e6), NB_ERR_RANGE,
                     "%s: '%s.rope.scaling.factor' = %g is out of range", path, g, h.rope_factor);
        factor = h.rope_factor;
        yarn = stype[0] == 'y';
    } else {
        /* llama.cpp also accepts a bare factor key (linear) */
        double f;
        if (kv_f64(kv, g, "rope.scaling.factor", &f) && f > 1.0 && f < 1e6) factor = f;
    }
    const float *rope_freqs = NULL;
    NB_TRY(bind_vec(e, "rope_freqs.weight", hp->n_rot / 2, false, &rope_freqs, ctx));
    if (rope_freqs)
        for (int i = 0; i < hp->n_rot / 2; i++)
            NB_RETURN_IF(ctx, !(rope_freqs[i] > 0 && rope_freqs[i] < 1e30f), NB_ERR_RANGE,
                         "%s: tensor 'rope_freqs.weight': element %d = %g is not a positive factor", path, i,
                         (double)rope_freqs[i]);
    NB_TRY(rope_init(e, &e->rope_global, base, 1.0 / factor, yarn, h.rope_orig_ctx, rope_freqs, ctx));
    if (hp->n_swa) {
        /* llama.cpp: local layers use base 10000 and no scaling */
        double lbase = h.rope_theta_swa != 0 ? h.rope_theta_swa : 10000.0;
        NB_RETURN_IF(ctx, !(lbase > 1.0 && lbase < 1e30), NB_ERR_RANGE,
                     "%s: '%s.rope.freq_base_swa' = %g is out of range", path, g, lbase);
        NB_TRY(rope_init(e, &e->rope_local, lbase, 1.0, false, 0, NULL, ctx));
    }
    return NB_OK;
}

/* ---- tensors ----------------------------------------------------------------------------- */

static nb_status bind_tensors(nb_engine *e, nb_ctx *ctx) {
    nb_ehparams *hp = &e->hp;
    const int64_t E = hp->n_embd, hd = hp->head_dim;
    const int64_t Q = (int64_t)hp->n_head * hd, KV = (int64_t)hp->n_head_kv * hd;
    const unsigned fl = e->arch->flags;
    const nb_tensor *te = nb_model_find(e->model, "token_embd.weight");
    NB_RETURN_IF(ctx, !te, NB_ERR_FORMAT, "%s: missing tensor 'token_embd.weight' (needed by the %s graph)",
                 e->model->path, e->arch->gguf_arch);
    NB_RETURN_IF(ctx, te->n_dims != 2 || te->ne[1] <= 0 || te->ne[1] > (1 << 24), NB_ERR_FORMAT,
                 "%s: tensor 'token_embd.weight' must be a 2-D {n_embd, n_vocab} matrix", e->model->path);
    uint32_t nv;
    if (kv_u32(&e->model->kv, e->arch->gguf_arch, "vocab_size", &nv))
        NB_RETURN_IF(ctx, nv != te->ne[1], NB_ERR_FORMAT,
                     "%s: '%s.vocab_size' = %u but tensor 'token_embd.weight' has %lld rows", e->model->path,
                     e->arch->gguf_arch, nv, (long long)te->ne[1]);
    hp->n_vocab = (int)te->ne[1];
    NB_TRY(bind_mat(e, "token_embd.weight", E, hp->n_vocab, 1, true, &e->tok_embd, ctx));
    NB_TRY(bind_vec(e, "output_norm.weight", E, true, &e->output_norm, ctx));
    NB_TRY(bind_mat(e, "output.weight", E, hp->n_vocab, 1, false, &e->output, ctx));
    if (!e->output.data) e->output = e->tok_embd; /* tied embeddings */

    e->layers = own(e, (size_t)hp->n_layer * sizeof *e->layers, ctx, "layers");
    if (!e->layers) return NB_ERR_NOMEM;
    memset(e->layers, 0, (size_t)hp->n_layer * sizeof *e->layers);
    char n[NB_MAX_NAME + 32];
#define NM(s) (lname(n, sizeof n, L, s), n)
    for (int L = 0; L < hp->n_layer; L++) {
        nb_layer *l = &e->layers[L];
        NB_TRY(bind_vec(e, NM("attn_norm.weight"), E, true, &l->attn_norm, ctx));
        NB_TRY(bind_mat(e, NM("attn_q.weight"), E, Q, 1, true, &l->wq, ctx));
        NB_TRY(bind_mat(e, NM("attn_k.weight"), E, KV, 1, true, &l->wk, ctx));
        NB_TRY(bind_mat(e, NM("attn_v.weight"), E, KV, 1, true, &l->wv, ctx));
        NB_TRY(bind_mat(e, NM("attn_output.weight"), Q, E, 1, true, &l->wo, ctx));
        bool bias = fl & NB_ARCH_F_QKV_BIAS;
        NB_TRY(bind_vec(e, NM("attn_q.bias"), Q, bias, &l->bq, ctx));
        NB_TRY(bind_vec(e, NM("attn_k.bias"), KV, bias, &l->bk, ctx));
        NB_TRY(bind_vec(e, NM("attn_v.bias"), KV, bias, &l->bv, ctx));
        NB_TRY(bind_vec(e, NM("attn_output.bias"), E, false, &l->bo, ctx));
        bool qkn = fl & NB_ARCH_F_QK_NORM;
        NB_TRY(bind_vec(e, NM("attn_q_norm.weight"), hd, qkn, &l->q_norm, ctx));
        NB_TRY(bind_vec(e, NM("attn_k_norm.weight"), hd, qkn, &l->k_norm, ctx));
        bool sw = fl & NB_ARCH_F_SANDWICH;
        NB_TRY(bind_vec(e, NM("post_attention_norm.weight"), E, sw, &l->post_attn_norm, ctx));
        NB_TRY(bind_vec(e, NM("ffn_norm.weight"), E, true, &l->ffn_norm, ctx));
        NB_TRY(bind_vec(e, NM("post_ffw_norm.weight"), E, sw, &l->post_ffw_norm, ctx));
        /* qwen MoE models may keep dense (mlp_only) layers: a layer is MoE
         * when its router is present */
        l->moe = (fl & NB_ARCH_F_MOE) && nb_model_find(e->model, NM("ffn_gate_inp.weight"));
        if ((fl & NB_ARCH_F_MOE) && !l->moe && !nb_model_find(e->model, NM("ffn_gate.weight")))
            return nb_err(ctx, NB_ERR_FORMAT, "%s: missing tensor 'blk.%d.ffn_gate_inp.weight' (needed by the %s graph)",
                          e->model->path, L, e->arch->gguf_arch);
        if (!l->moe) {
            NB_TRY(need_pos(e, "feed_forward_length", hp->n_ff, ENG_MAX_DIM * 4, ctx));
            NB_TRY(bind_mat(e, NM("ffn_gate.weight"), E, hp->n_ff, 1, true, &l->ffn_gate, ctx));
            NB_TRY(bind_mat(e, NM("ffn_up.weight"), E, hp->n_ff, 1, true, &l->ffn_up, ctx));
            NB_TRY(bind_mat(e, NM("ffn_down.weight"), hp->n_ff, E, 1, true, &l->ffn_down, ctx));
        } else {
            const int64_t X = hp->n_expert, Fe = hp->n_ff_exp;
            NB_TRY(bind_mat(e, NM("ffn_gate_inp.weight"), E, X, 1, true, &l->gate_inp, ctx));
            NB_TRY(bind_mat(e, NM("ffn_gate_exps.weight"), E, Fe, X, true, &l->gate_exps, ctx));
            NB_TRY(bind_mat(e, NM("ffn_up_exps.weight"), E, Fe, X, true, &l->up_exps, ctx));
            NB_TRY(bind_mat(e, NM("ffn_down_exps.weight"), Fe, E, X, true, &l->down_exps, ctx));
            if (fl & NB_ARCH_F_SHEXP) {
                const int64_t Fs = hp->n_ff_shexp;
                NB_TRY(bind_mat(e, NM("ffn_gate_inp_shexp.weight"), E, 1, 1, true, &l->gate_inp_shexp, ctx));
                NB_TRY(bind_mat(e, NM("ffn_gate_shexp.weight"), E, Fs, 1, true, &l->gate_shexp, ctx));
                NB_TRY(bind_mat(e, NM("ffn_up_shexp.weight"), E, Fs, 1, true, &l->up_shexp, ctx));
                NB_TRY(bind_mat(e, NM("ffn_down_shexp.weight"), Fs, E, 1, true, &l->down_shexp, ctx));
            }
        }
        l->swa = hp->n_swa > 0 && nb_arch_layer_is_swa(e->arch, (uint32_t)L);
        l->rope = l->swa ? &e->rope_local : &e->rope_global;
    }
#undef NM
    return NB_OK;
}

/* ---- buffers ------------------------------------------------------------------------------- */

static float *alloc_f(nb_engine *e, uint64_t a, uint64_t b, nb_ctx *ctx, const char *what) {
    uint64_t n;
    if (!nb_mul_u64(a, b, &n) || !nb_mul_u64(n, sizeof(float), &n) || n > SIZE_MAX) {
        nb_err(ctx, NB_ERR_RANGE, "engine: %s buffer size overflows", what);
        return NULL;
    }
    return own(e, (size_t)n, ctx, what);
}

static nb_status alloc_state(nb_engine *e, nb_ctx *ctx) {
    const nb_ehparams *hp = &e->hp;
    const uint64_t B = (uint64_t)e->n_batch, E = (uint64_t)hp->n_embd;
    const uint64_t Q = (uint64_t)hp->n_head * (uint64_t)hp->head_dim;
    const uint64_t KV = (uint64_t)hp->n_head_kv * (uint64_t)hp->head_dim;
    uint64_t F = (uint64_t)hp->n_ff;
    if ((uint64_t)hp->n_ff_exp > F) F = (uint64_t)hp->n_ff_exp;
    if ((uint64_t)hp->n_ff_shexp > F) F = (uint64_t)hp->n_ff_shexp;
    e->kv_row = nb_cache_row_bytes(e->kv_type, hp->head_dim);
    e->k_cache = own(e, (size_t)hp->n_layer * sizeof *e->k_cache, ctx, "KV cache");
    e->v_cache = own(e, (size_t)hp->n_layer * sizeof *e->v_cache, ctx, "KV cache");
    if (!e->k_cache || !e->v_cache) return NB_ERR_NOMEM;
    /* kv_row is a multiple of 2 bytes: whole floats cover any cache type */
    const uint64_t kv_floats = ((uint64_t)e->kv_row * (uint64_t)hp->n_head_kv + 3) / 4;
    for (int L = 0; L < hp->n_layer; L++) {
        if (!(e->k_cache[L] = (unsigned char *)alloc_f(e, (uint64_t)e->n_ctx, kv_floats, ctx, "KV cache")))
            return ctx ? ctx->err : NB_ERR_NOMEM;
        if (!(e->v_cache[L] = (unsigned char *)alloc_f(e, (uint64_t)e->n_ctx, kv_floats, ctx, "KV cache")))
            return ctx ? ctx->err : NB_ERR_NOMEM;
    }
    if (!(e->kv_tmp = alloc_f(e, (uint64_t)e->n_threads, NB_CACHE_TILE_TMP(hp->head_dim), ctx, "attention scratch")))
        return ctx ? ctx->err : NB_ERR_NOMEM;
    float **f[] = {&e->x, &e->xb, &e->xb2, &e->q, &e->k, &e->v, &e->att, &e->hb, &e->hb2};
    uint64_t w[] = {E, E, E, Q, KV, KV, Q, F, F};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (!(*f[i] = alloc_f(e, B, w[i], ctx, "scratch"))) return ctx ? ctx->err : NB_ERR_NOMEM;
    if (!(e->scores = alloc_f(e, (uint64_t)e->n_threads * NB_CACHE_TILE_Q, (uint64_t)e->n_ctx, ctx,
                              "attention scores")))
        return ctx ? ctx->err : NB_ERR_NOMEM;
    e->rope_cs = (double *)alloc_f(e, B * 2, (uint64_t)hp->n_rot * 2, ctx, "rope table"); /* doubles */
    if (!e->rope_cs) return ctx ? ctx->err : NB_ERR_NOMEM;
    if (hp->n_expert) {
        const uint64_t X = (uint64_t)hp->n_expert, U = (uint64_t)hp->n_expert_used;
        if (!(e->router = alloc_f(e, B, X, ctx, "router")) || !(e->sel = (int32_t *)alloc_f(e, B, U, ctx, "router")) ||
            !(e->selw = alloc_f(e, B, U, ctx, "router")) || !(e->ey = alloc_f(e, B * U, E, ctx, "experts")) ||
            !(e->xe = alloc_f(e, B, E, ctx, "experts")) || !(e->ye = alloc_f(e, B, E, ctx, "experts")) ||
            !(e->rows = (int32_t *)alloc_f(e, B, 1, ctx, "experts")) ||
            !(e->slots = (int32_t *)alloc_f(e, B, 1, ctx, "experts")))
            return ctx ? ctx->err : NB_ERR_NOMEM;
    }
    return NB_OK;
}

/* ---- public API ---------------------------------------------------------------------------- */

static bool model_has_experts(const nb_model *m, const char *arch) {
    uint32_t n = 0;
    if (kv_u32(&m->kv, arch, "expert_count", &n) && n > 0) return true;
    return nb_model_find(m, "blk.0.ffn_gate_exps.weight") != NULL;
}

nb_status nb_engine_open_model(nb_model *m, const nb_engine_opts *o, nb_engine **out, nb_ctx *ctx) {
    *out = NULL;
    const char *arch_name = nb_kv_get_str(&m->kv, "general.architecture");
    NB_RETURN_IF(ctx, !arch_name, NB_ERR_FORMAT, "%s: no 'general.architecture' in the metadata", m->path);
    const nb_arch *a = nb_arch_from_gguf(arch_name, model_has_experts(m, arch_name));
    NB_RETURN_IF(ctx, !a, NB_ERR_UNSUPPORTED,
                 "%s: architecture '%s' is not supported by the engine (supported: llama, mistral, mixtral, "
                 "qwen2, qwen3, qwen2moe, qwen3moe, gemma3, gemma-embedding)",
                 m->path, arch_name);
    nb_engine *e = nb_calloc(ctx, 1, sizeof *e, "engine");
    if (!e) return NB_ERR_NOMEM;
    e->model = m;
    e->arch = a;
    nb_engine_opts def = {0, 0, 0, false, NB_CACHE_F32};
    if (!o) o = &def;
    nb_status st;
    e->n_threads = o->n_threads > 0 ? o->n_threads : nb_ctx_threads(ctx);
    e->precise = o->precise; /* before binding: no packed copies for --precise */
    NB_CHECK_GOTO(st, read_hparams(e, ctx), fail);
    NB_CHECK_GOTO(st, bind_tensors(e, ctx), fail);
    e->n_ctx = o->n_ctx > 0 ? o->n_ctx : 512;
    if (o->n_ctx < 0 || e->n_ctx > ENG_MAX_CTX)
        NB_FAIL_GOTO(st, fail, ctx, NB_ERR_INVALID, "engine: context length %d out of range (1..%d)", o->n_ctx,
                     ENG_MAX_CTX);
    e->n_batch = o->n_batch > 0 ? o->n_batch : (e->n_ctx < 512 ? e->n_ctx : 512);
    if (o->n_batch < 0) NB_FAIL_GOTO(st, fail, ctx, NB_ERR_INVALID, "engine: negative batch size %d", o->n_batch);
    if (e->n_batch > e->n_ctx) e->n_batch = e->n_ctx;
    if ((unsigned)o->kv_type > NB_CACHE_Q8_0)
        NB_FAIL_GOTO(st, fail, ctx, NB_ERR_INVALID, "engine: unknown KV cache type %d", (int)o->kv_type);
    if (o->kv_type == NB_CACHE_Q8_0 && e->hp.head_dim % 32 != 0)
        NB_FAIL_GOTO(st, fail, ctx, NB_ERR_INVALID,
                     "%s: a q8_0 KV cache needs a head size that is a multiple of 32 (this model's is %d)",
                     m->path, e->hp.head_dim);
    e->kv_type = o->kv_type;
    NB_CHECK_GOTO(st, alloc_state(e, ctx), fail);
    *out = e;
    return NB_OK;
fail:
    nb_engine_free(e);
    return st;
}

nb_status nb_engine_open(const char *path, const nb_engine_opts *o, nb_engine **out, nb_ctx *ctx) {
    *out = NULL;
    nb_model *m = NULL;
    NB_TRY(nb_model_open(path, &m, ctx));
    nb_status st = nb_engine_open_model(m, o, out, ctx);
    if (st != NB_OK) {
        nb_model_close(m);
        return st;
    }
    (*out)->own_model = true;
    return NB_OK;
}

void nb_engine_free(nb_engine *e) {
    if (!e) return;
    for (size_t i = 0; i < e->n_owned; i++) free(e->owned[i]);
    free(e->owned);
    if (e->own_model) nb_model_close(e->model);
    free(e);
}

int nb_engine_n_vocab(const nb_engine *e) { return e->hp.n_vocab; }
int nb_engine_n_ctx(const nb_engine *e) { return e->n_ctx; }
const nb_model *nb_engine_model(const nb_engine *e) { return e->model; }

void nb_engine_set_all_experts(nb_engine *e, bool on) { e->all_experts = on; }

void nb_engine_set_hooks(nb_engine *e, const nb_engine_hooks *h) {
    if (h) e->hooks = *h;
    else memset(&e->hooks, 0, sizeof e->hooks);
    e->have_hooks = h && (h->on_matmul || h->on_route);
}

void nb_engine_reset(nb_engine *e) { e->n_past = 0; }

nb_status nb_engine_eval(nb_engine *e, const int32_t *tokens, int n, int pos, float *logits, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, n < 0 || (n > 0 && !tokens), NB_ERR_INVALID, "engine: bad token batch (n = %d)", n);
    NB_RETURN_IF(ctx, pos < 0 || pos > e->n_past, NB_ERR_INVALID,
                 "engine: position %d is past the %d tokens in the KV cache", pos, e->n_past);
    NB_RETURN_IF(ctx, n > e->n_ctx - pos, NB_ERR_RANGE,
                 "engine: %d tokens at position %d do not fit the context of %d", n, pos, e->n_ctx);
    /* an encoder's token sees the tokens after it: the whole text in one sub-batch */
    NB_RETURN_IF(ctx, e->hp.bidir && (pos != 0 || n > e->n_batch), NB_ERR_INVALID,
                 "engine: %s is an encoder: evaluate a text in one call from position 0 with at most %d tokens "
                 "(got %d at position %d)", e->arch->gguf_arch, e->n_batch, n, pos);
    for (int i = 0; i < n; i++)
        NB_RETURN_IF(ctx, tokens[i] < 0 || tokens[i] >= e->hp.n_vocab, NB_ERR_RANGE,
                     "engine: token %d (id %d) is outside the vocabulary of %d", i, (int)tokens[i], e->hp.n_vocab);
    /* forget what lies beyond pos (re-evaluation from an earlier position) */
    e->n_past = pos;
    for (int done = 0; done < n;) {
        int m = n - done < e->n_batch ? n - done : e->n_batch;
        NB_TRY(nb_engine_forward(e, tokens + done, m, pos + done,
                                 logits ? logits + (size_t)done * (size_t)e->hp.n_vocab : NULL, ctx));
        done += m;
        e->n_past = pos + done;
    }
    return NB_OK;
}

nb_status nb_eng_bind_mat(nb_engine *e, const char *name, int64_t n_in, int64_t n_out, bool required, nb_wmat *w,
                          nb_ctx *ctx) {
    return bind_mat(e, name, n_in, n_out, 1, required, w, ctx);
}
