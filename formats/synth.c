/* formats/synth.c — seeded random models (see formats/synth.h). */
#include "formats/synth.h"

#include "core/afile.h"
#include "core/checked.h"
#include "core/fp.h"
#include "core/progress.h"
#include "core/str.h"
#include "formats/hf.h"
#include "formats/model.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define SYNTH_CHUNK (4u << 20) /* bytes generated per sink write */
#define SYNTH_STD 0.02f

void nb_synth_opts_init(nb_synth_opts *o) {
    memset(o, 0, sizeof *o);
    o->arch = "llama";
    o->dtype = NB_TYPE_F16;
}

/* ---- values ---------------------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t tensor_key(uint64_t seed, const char *name) {
    uint64_t h = 0xCBF29CE484222325ull; /* FNV-1a over the name, then mixed with the seed */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 0x100000001B3ull;
    return mix64(h ^ mix64(seed + 0x9E3779B97F4A7C15ull));
}

/* Element idx of the tensor with this key: the sum of four 16-bit uniforms of
 * one splitmix64 output (Irwin-Hall, close to normal), scaled to std 0.02. */
static inline float key_value(uint64_t key, uint64_t idx) {
    uint64_t z = mix64(key + (idx + 1) * 0x9E3779B97F4A7C15ull);
    uint32_t s = (uint32_t)(z & 0xFFFF) + (uint32_t)((z >> 16) & 0xFFFF) +
                 (uint32_t)((z >> 32) & 0xFFFF) + (uint32_t)(z >> 48);
    /* mean 2 * 65535, std sqrt(4 * (65536^2 - 1) / 12) */
    return ((float)s - 131070.0f) * (SYNTH_STD / 37837.23f);
}

float nb_synth_value(uint64_t seed, const char *name, uint64_t idx) {
    return key_value(tensor_key(seed, name), idx);
}

/* ---- options -> hyper-parameters ---------------------------------------------------------- */

static bool is_qwen_moe(const nb_arch *a) {
    return (a->flags & NB_ARCH_F_MOE) && !(a->flags & NB_ARCH_F_MIXTRAL_NAMES);
}

static uint64_t type_bytes(nb_type t) {
    return t == NB_TYPE_F32 ? 4 : 2;
}

uint64_t nb_synth_data_bytes(const nb_arch *a, const nb_hparams *hp, nb_type dtype) {
    nb_arch_tensor *list;
    size_t n;
    if (nb_arch_tensor_list(a, hp, &list, &n, NULL) != NB_OK) return 0;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t ne = 1;
        for (uint32_t d = 0; d < list[i].n_dims; d++) ne *= (uint64_t)list[i].ne[d];
        total += ne * (list[i].is_f32 ? 4 : type_bytes(dtype));
    }
    free(list);
    return total;
}

/* Fill the derived fields of hp from (n_embd, n_ff, heads...) as synth shapes them. */
static void shape_hp(const nb_arch *a, const nb_synth_opts *o, nb_hparams *hp, uint32_t embd,
                     uint32_t ff, uint32_t layers) {
    hp->n_embd = embd;
    hp->n_layer = layers;
    uint32_t hd_default = embd >= 2048 ? 128 : 64;
    if (embd < 256) hd_default = embd / 4 ? embd / 4 : 1;
    hp->n_head = o->n_head ? o->n_head : (embd / hd_default ? embd / hd_default : 1);
    if (o->n_head_kv) hp->n_head_kv = o->n_head_kv;
    else hp->n_head_kv = hp->n_head % 4 == 0 ? hp->n_head / 4 : hp->n_head;
    bool explicit_hd = a->flags & NB_ARCH_F_HEAD_DIM;
    hp->head_dim = explicit_hd && hp->n_head ? embd / hp->n_head : 0;
    if (is_qwen_moe(a)) {
        hp->n_ff = ff;
        hp->n_ff_exp = ff;
        hp->n_ff_shexp = (a->flags & NB_ARCH_F_SHEXP) ? ff : 0;
    } else {
        hp->n_ff = ff;
    }
}

/* File bytes as a function of the free dims, for fitting. */
static uint64_t size_of(const nb_arch *a, const nb_synth_opts *o, nb_hparams hp, uint32_t embd,
                        uint32_t ff, uint32_t layers) {
    shape_hp(a, o, &hp, embd, ff, layers);
    return nb_synth_data_bytes(a, &hp, o->dtype);
}

static nb_status fit_size(const nb_arch *a, const nb_synth_opts *o, nb_hparams *hp, nb_ctx *ctx) {
    static const uint32_t ladder[] = {256, 384, 512, 768, 1024, 1536, 2048, 2560, 3072, 4096, 5120, 6144, 8192};
    const uint64_t T = o->target_bytes;
    uint32_t best_embd = 0, best_layers = 0;
    for (size_t k = 0; k < sizeof ladder / sizeof ladder[0]; k++) {
        uint32_t embd = o->n_embd ? o->n_embd : ladder[k];
        if (o->n_embd && k > 0) break;
        uint32_t ff = o->n_ff ? o->n_ff : ((embd * 8 / 3 + 127) / 128) * 128;
        if (is_qwen_moe(a) && !o->n_ff) ff = ((embd / 2 + 127) / 128) * 128;
        uint32_t min_layers = embd / 128 < 4 ? 4 : embd / 128 > 32 ? 32 : embd / 128;
        uint64_t s0 = size_of(a, o, *hp, embd, ff, 1), s1 = size_of(a, o, *hp, embd, ff, 2);
        if (s0 == 0 || s1 <= s0) continue;
        uint64_t per_layer = s1 - s0, fixed = s0 - per_layer;
        if (T < fixed + per_layer) break;
        uint64_t fit = (T - fixed) / per_layer;
        if (fit > 65536) fit = 65536;
        /* a fixed layer count must fit; else prefer the widest model keeping min_layers */
        bool ok = o->n_layer ? fit >= o->n_layer : fit >= min_layers;
        if (ok || best_embd == 0) {
            best_embd = embd;
            best_layers = o->n_layer ? o->n_layer : (uint32_t)fit;
        }
        if (!ok) break;
    }
    if (!best_embd)
        return nb_err(ctx, NB_ERR_INVALID, "a %s model cannot be as small as %llu bytes", a->name,
                      (unsigned long long)T);
    /* Now spend what is left on the FFN width (multiples of 64) unless it was given. */
    uint32_t ff = o->n_ff;
    if (!ff) {
        uint64_t s_lo = size_of(a, o, *hp, best_embd, 64, best_layers);
        uint64_t s_hi = size_of(a, o, *hp, best_embd, 128, best_layers);
        uint64_t per64 = s_hi > s_lo ? s_hi - s_lo : 1;
        uint64_t steps = T > s_lo ? (T - s_lo + per64 / 2) / per64 : 0;
        if (steps > (1u << 16)) steps = 1u << 16;
        ff = (uint32_t)(64 + steps * 64);
    }
    shape_hp(a, o, hp, best_embd, ff, best_layers);
    return NB_OK;
}

nb_status nb_synth_hparams(const nb_synth_opts *o, const nb_arch **arch, nb_hparams *hp, nb_ctx *ctx) {
    const nb_arch *a = nb_arch_find(o->arch ? o->arch : "llama");
    NB_RETURN_IF(ctx, !a, NB_ERR_INVALID, "unknown architecture '%s' (supported: %s)",
                 o->arch ? o->arch : "", nb_arch_supported_list());
    NB_RETURN_IF(ctx, o->dtype != NB_TYPE_F32 && o->dtype != NB_TYPE_F16 && o->dtype != NB_TYPE_BF16,
                 NB_ERR_INVALID, "--dtype must be f32, f16 or bf16 (got %s)", nb_type_name(o->dtype));
    memset(hp, 0, sizeof *hp);
    bool moe = a->flags & NB_ARCH_F_MOE;
    NB_RETURN_IF(ctx, !moe && (o->n_expert > 0 || o->n_expert_used > 0), NB_ERR_INVALID,
                 "--experts/--experts-used need a MoE architecture (mixtral, qwen2moe, qwen3moe)");
    hp->n_vocab = o->n_vocab ? o->n_vocab : (o->target_bytes ? 32000 : 512);
    hp->n_ctx = o->n_ctx ? o->n_ctx : 4096;
    hp->n_expert = moe ? (o->n_expert ? o->n_expert : 4) : 0;
    hp->n_expert_used = moe ? (o->n_expert_used ? o->n_expert_used : 2) : 0;
    if (moe && hp->n_expert_used > hp->n_expert) hp->n_expert_used = hp->n_expert;
    hp->rope_theta = a->typical_rope_theta;
    hp->rms_eps = a->typical_rms_eps;
    hp->tie_embeddings = (a->flags & NB_ARCH_F_TIED) != 0;
    if (a->swa_period) { /* a small window, so that short tests exercise it */
        hp->sliding_window = o->sliding_window ? o->sliding_window : 512;
        hp->rope_theta_swa = 10000.0;
    }
    if (o->target_bytes) {
        NB_TRY(fit_size(a, o, hp, ctx));
    } else {
        uint32_t embd = o->n_embd ? o->n_embd : 256;
        uint32_t ff = o->n_ff ? o->n_ff : 512;
        shape_hp(a, o, hp, embd, ff, o->n_layer ? o->n_layer : 2);
        if (!o->n_head && !o->n_embd) { hp->n_head = 4; hp->n_head_kv = o->n_head_kv ? o->n_head_kv : 2; }
        if (hp->head_dim) hp->head_dim = hp->n_embd / hp->n_head;
    }
    /* encoders get the sentence-transformers Dense head, E -> 4E -> E as EmbeddingGemma's */
    if (a->flags & NB_ARCH_F_ENCODER) hp->n_embd_dense = 4 * hp->n_embd;
    nb_status st = nb_hparams_validate(a, hp, "options", ctx);
    if (st != NB_OK) { /* a usage error here, whatever code validate chose */
        char msg[NB_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", nb_errmsg(ctx));
        return nb_err(ctx, NB_ERR_INVALID, "invalid shape: %s", msg);
    }
    *arch = a;
    return NB_OK;
}

/* ---- generation ------------------------------------------------------------------------- */

/* One tensor as stored in the output file. GGUF: the logical tensor itself.
 * HF: one piece of a logical tensor (an expert slice) in HF row order. */
typedef struct piece {
    char name[NB_MAX_NAME + 1]; /* name in the output file */
    const nb_arch_tensor *src;  /* the logical (GGUF) tensor */
    int expert;                 /* slice of a stacked tensor, or -1 */
    uint32_t perm_heads;        /* HF q/k: rows un-permuted with this many heads; 0 = none */
    float norm_value;           /* value of a norm weight in this file (1, or 0 for Gemma HF) */
    nb_type type;
    uint32_t n_dims;
    int64_t ne[NB_MAX_DIMS];
    uint64_t rows, cols, nbytes;
} piece;

typedef struct gen_state {
    uint64_t seed;
    const nb_hparams *hp;
    unsigned char *buf; /* SYNTH_CHUNK bytes + one row */
    size_t buf_cap;
    int n_threads;
    uint32_t starve;            /* nb_synth_opts.starve_experts */
    nb_progress prog;
} gen_state;

static void fill_rows(const gen_state *g, const piece *p, uint64_t key, uint64_t r0, uint64_t nr,
                      unsigned char *out) {
    const bool norm = p->src->is_norm;
    const uint64_t cols = p->cols, rows = p->rows;
    const uint64_t base = p->expert >= 0 ? (uint64_t)p->expert * rows * cols : 0;
    const size_t es = (size_t)type_bytes(p->type);
    const int64_t n = (int64_t)nr;
#pragma omp parallel for num_threads(g->n_threads) schedule(static)
    for (int64_t k = 0; k < n; k++) {
        uint64_t r = r0 + (uint64_t)k;
        uint64_t gr = p->perm_heads ? nb_qk_dst_row(r, rows, p->perm_heads) : r;
        uint64_t idx0 = base + gr * cols;
        unsigned char *row = out + (uint64_t)k * cols * es;
        float tmp[256]; /* values in blocks, then one bulk conversion (F16C when available) */
        for (uint64_t c0 = 0; c0 < cols; c0 += 256) {
            size_t m = cols - c0 < 256 ? (size_t)(cols - c0) : 256;
            for (size_t j = 0; j < m; j++) tmp[j] = norm ? p->norm_value : key_value(key, idx0 + c0 + j);
            if (g->starve && c0 == 0 && p->expert < 0) { /* see nb_synth_opts.starve_experts */
                if (!strcmp(p->src->name, "token_embd.weight")) tmp[0] = 10.0f;
                else if (strstr(p->src->name, ".ffn_gate_inp.weight"))
                    tmp[0] = r + g->starve >= rows ? -1.0f : 1.0f;
            }
            unsigned char *dst = row + c0 * es;
            if (p->type == NB_TYPE_F32) memcpy(dst, tmp, m * 4);
            else if (p->type == NB_TYPE_F16) {
                uint16_t h[256];
                nb_f32_to_f16_n(tmp, h, m);
                memcpy(dst, h, m * 2);
            } else {
                uint16_t h[256];
                nb_f32_to_bf16_n(tmp, h, m);
                memcpy(dst, h, m * 2);
            }
        }
    }
}

static nb_status write_piece(gen_state *g, const piece *p, nb_sink *s, nb_ctx *ctx) {
    if (strcmp(p->src->name, "rope_freqs.weight") == 0) {
        float *f = (float *)g->buf;
        NB_TRY(nb_arch_llama3_rope_factors(g->hp, f, (size_t)p->src->ne[0], ctx));
        return nb_sink_write(s, f, p->nbytes, ctx);
    }
    const uint64_t key = tensor_key(g->seed, p->src->name);
    const uint64_t row_bytes = p->nbytes / p->rows;
    uint64_t per = g->buf_cap / row_bytes;
    if (per == 0) per = 1;
    for (uint64_t r = 0; r < p->rows; r += per) {
        uint64_t nr = p->rows - r < per ? p->rows - r : per;
        fill_rows(g, p, key, r, nr, g->buf);
        NB_TRY(nb_sink_write(s, g->buf, nr * row_bytes, ctx));
        nb_progress_add(&g->prog, nr * row_bytes, p->name);
    }
    return NB_OK;
}

/* Shape a piece: rows x cols in the file's layout; 1-D tensors are ne0 rows of 1. */
static void piece_shape(piece *p) {
    if (p->n_dims == 1) {
        p->rows = (uint64_t)p->ne[0];
        p->cols = 1;
    } else {
        p->cols = (uint64_t)p->ne[0];
        p->rows = (uint64_t)p->ne[1] * (p->n_dims >= 3 ? (uint64_t)p->ne[2] : 1);
    }
    p->nbytes = p->rows * p->cols * type_bytes(p->type);
}

static nb_status write_sink(gen_state *g, piece *ps, size_t n, nb_sink *s, nb_ctx *ctx) {
    for (size_t i = 0; i < n; i++)
        NB_TRY(nb_sink_add_tensor(s, ps[i].name, ps[i].type, ps[i].n_dims, ps[i].ne, ctx));
    NB_TRY(nb_sink_begin(s, ctx));
    for (size_t k = 0; k < n; k++) {
        size_t i = nb_sink_data_order(s, k);
        if (i >= n) return nb_err(ctx, NB_ERR_INTERNAL, "synth: sink gave data index %zu of %zu", i, n);
        NB_TRY(write_piece(g, &ps[i], s, ctx));
    }
    return nb_sink_commit(s, ctx);
}

/* A byte-fallback vocabulary: <unk> <s> </s>, the 256 byte tokens, then
 * filler words; tokenizer.ggml.model "llama" (SentencePiece rules). */
static nb_status add_vocab(nb_kvset *kv, uint32_t n_vocab, nb_ctx *ctx) {
    if (n_vocab < 3 + 256) return NB_OK;
    nb_status st = NB_OK;
    char **toks = nb_calloc(ctx, n_vocab, sizeof *toks, "vocab");
    float *scores = nb_calloc(ctx, n_vocab, sizeof *scores, "vocab");
    int32_t *types = nb_calloc(ctx, n_vocab, sizeof *types, "vocab");
    char *strs = nb_malloc(ctx, (size_t)n_vocab * 16, "vocab");
    if (!toks || !scores || !types || !strs) {
        st = NB_ERR_NOMEM;
        goto done;
    }
    for (uint32_t i = 0; i < n_vocab; i++) {
        char *t = strs + (size_t)i * 16;
        toks[i] = t;
        if (i == 0) { snprintf(t, 16, "<unk>"); types[i] = 2; }
        else if (i == 1) { snprintf(t, 16, "<s>"); types[i] = 3; }
        else if (i == 2) { snprintf(t, 16, "</s>"); types[i] = 3; }
        else if (i < 259) { snprintf(t, 16, "<0x%02X>", i - 3); types[i] = 6; }
        else { snprintf(t, 16, "tok%u", i); types[i] = 1; scores[i] = -(float)(i - 259); }
    }
    NB_CHECK_GOTO(st, nb_kv_set_str(kv, "tokenizer.ggml.model", "llama", ctx), done);
    NB_CHECK_GOTO(st, nb_kv_set_arr_str(kv, "tokenizer.ggml.tokens", n_vocab, (const char *const *)toks, ctx), done);
    NB_CHECK_GOTO(st, nb_kv_set_arr(kv, "tokenizer.ggml.scores", NB_KV_F32, n_vocab, scores, ctx), done);
    NB_CHECK_GOTO(st, nb_kv_set_arr(kv, "tokenizer.ggml.token_type", NB_KV_I32, n_vocab, types, ctx), done);
    NB_CHECK_GOTO(st, nb_kv_set_u32(kv, "tokenizer.ggml.bos_token_id", 1, ctx), done);
    NB_CHECK_GOTO(st, nb_kv_set_u32(kv, "tokenizer.ggml.eos_token_id", 2, ctx), done);
    NB_CHECK_GOTO(st, nb_kv_set_u32(kv, "tokenizer.ggml.unknown_token_id", 0, ctx), done);
    NB_CHECK_GOTO(st, nb_kv_set_bool(kv, "tokenizer.ggml.add_bos_token", true, ctx), done);
done:
    free(toks);
    free(scores);
    free(types);
    free(strs);
    return st;
}

static uint32_t file_type_of(nb_type t) {
    return t == NB_TYPE_F32 ? 0 : t == NB_TYPE_F16 ? 1 : 32; /* llama_ftype ALL_F32 / MOSTLY_F16 / MOSTLY_BF16 */
}

static nb_status write_gguf(gen_state *g, const nb_synth_opts *o, const nb_arch *a,
                            const nb_arch_tensor *list, size_t n, const char *path, nb_ctx *ctx) {
    piece *ps = nb_calloc(ctx, n, sizeof *ps, "synth tensor table");
    if (!ps) return NB_ERR_NOMEM;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        piece *p = &ps[i];
        snprintf(p->name, sizeof p->name, "%s", list[i].name);
        p->src = &list[i];
        p->expert = -1;
        p->norm_value = 1.0f;
        p->type = list[i].is_f32 ? NB_TYPE_F32 : o->dtype;
        p->n_dims = list[i].n_dims;
        memcpy(p->ne, list[i].ne, sizeof p->ne);
        piece_shape(p);
        total += p->nbytes;
    }
    nb_sink *s = NULL;
    nb_status st = nb_sink_create(path, NB_FMT_GGUF, &s, ctx);
    if (st == NB_OK) {
        char name[64];
        snprintf(name, sizeof name, "synth-%s", a->name);
        st = nb_arch_hparams_to_kv(a, g->hp, name, &s->kv, ctx);
        if (st == NB_OK) st = nb_kv_set_u32(&s->kv, "general.file_type", file_type_of(o->dtype), ctx);
        if (st == NB_OK && !o->no_vocab) st = add_vocab(&s->kv, g->hp->n_vocab, ctx);
        if (st == NB_OK) {
            nb_progress_begin(&g->prog, ctx, "synth", total);
            st = write_sink(g, ps, n, s, ctx);
            nb_progress_end(&g->prog);
        }
    }
    nb_sink_free(s);
    free(ps);
    return st;
}

static nb_status write_text_atomic(const char *path, const char *text, nb_ctx *ctx) {
    nb_afile f;
    NB_TRY(nb_afile_open(&f, path, false, ctx));
    nb_status st = nb_afile_write(&f, text, strlen(text), ctx);
    if (st == NB_OK) st = nb_afile_commit(&f, NULL, ctx);
    nb_afile_abort(&f);
    return st;
}

/* Build the HF pieces: experts split, q/k un-permuted, Gemma norms 0, rope_freqs left out. */
static nb_status hf_pieces(const nb_arch *a, const nb_hparams *hp, nb_type dtype,
                           const nb_arch_tensor *list, size_t n, piece **out, size_t *n_out,
                           nb_ctx *ctx) {
    size_t cap = 0;
    for (size_t i = 0; i < n; i++) cap += list[i].n_dims == 3 ? (size_t)list[i].ne[2] : 1;
    piece *ps = nb_calloc(ctx, cap ? cap : 1, sizeof *ps, "synth tensor table");
    if (!ps) return NB_ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const nb_arch_tensor *t = &list[i];
        if (strcmp(t->name, "rope_freqs.weight") == 0) continue; /* derived from config.json */
        int n_e = t->n_dims == 3 ? (int)t->ne[2] : 0;
        for (int e = n_e ? 0 : -1; e < n_e; e++) {
            piece *p = &ps[k];
            nb_xform xf = NB_XF_NONE;
            if (!nb_arch_map_gguf(a, t->name, e, p->name, sizeof p->name, &xf)) {
                free(ps);
                return nb_err(ctx, NB_ERR_INTERNAL, "synth: no HF name for '%s'", t->name);
            }
            p->src = t;
            p->expert = e;
            p->type = t->is_f32 ? NB_TYPE_F32 : dtype;
            p->norm_value = xf == NB_XF_NORM_SHIFT ? 0.0f : 1.0f;
            p->perm_heads = xf == NB_XF_PERMUTE_Q ? hp->n_head : xf == NB_XF_PERMUTE_K ? hp->n_head_kv : 0;
            /* HF shapes in ggml order: the same 2-D matrix; the shared-expert gate is [1, n_embd] */
            p->n_dims = t->n_dims == 3 ? 2 : t->n_dims;
            p->ne[0] = t->ne[0];
            p->ne[1] = t->n_dims >= 2 ? t->ne[1] : 1;
            p->ne[2] = p->ne[3] = 1;
            if (strstr(t->name, "ffn_gate_inp_shexp")) p->n_dims = 2;
            piece_shape(p);
            k++;
        }
    }
    *out = ps;
    *n_out = k;
    return NB_OK;
}

static nb_status write_hf(gen_state *g, const nb_synth_opts *o, const nb_arch *a,
                          const nb_arch_tensor *list, size_t n, const char *dir, nb_ctx *ctx) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) return nb_err_errno(ctx, errno, "%s", dir);
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return nb_err(ctx, NB_ERR_INVALID, "%s: exists and is not a directory", dir);
    piece *ps = NULL;
    size_t np = 0;
    NB_TRY(hf_pieces(a, g->hp, o->dtype, list, n, &ps, &np, ctx));
    const uint64_t shard = o->shard_bytes ? o->shard_bytes : (4ull << 30);
    /* assign pieces to shards in order */
    size_t *shard_of = nb_calloc(ctx, np ? np : 1, sizeof *shard_of, "shard table");
    nb_status st = shard_of ? NB_OK : NB_ERR_NOMEM;
    size_t n_shards = 0;
    uint64_t cur = 0, total = 0;
    for (size_t i = 0; st == NB_OK && i < np; i++) {
        if (strchr(ps[i].name, '/')) { /* a sentence-transformers module: its own file, below */
            shard_of[i] = SIZE_MAX;
            continue;
        }
        if (n_shards == 0 || (cur > 0 && cur + ps[i].nbytes > shard)) {
            n_shards++;
            cur = 0;
        }
        shard_of[i] = n_shards - 1;
        cur += ps[i].nbytes;
        total += ps[i].nbytes;
    }
    char *cfg_path = nb_path_join(ctx, dir, "config.json");
    char *idx_path = nb_path_join(ctx, dir, "model.safetensors.index.json");
    char *one_path = nb_path_join(ctx, dir, "model.safetensors");
    cJSON *wm = NULL;
    if (st == NB_OK && (!cfg_path || !idx_path || !one_path)) st = NB_ERR_NOMEM;
    const char *torch_dtype = o->dtype == NB_TYPE_F32 ? "float32" : o->dtype == NB_TYPE_F16 ? "float16" : "bfloat16";
    if (st == NB_OK) nb_progress_begin(&g->prog, ctx, "synth", total);
    char fname[64];
    for (size_t sh = 0; st == NB_OK && sh < n_shards; sh++) {
        if (n_shards == 1) snprintf(fname, sizeof fname, "model.safetensors");
        else snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", sh + 1, n_shards);
        char *path = nb_path_join(ctx, dir, fname);
        if (!path) { st = NB_ERR_NOMEM; break; }
        size_t first = 0, cnt = 0;
        for (size_t i = 0; i < np; i++)
            if (shard_of[i] == sh) { if (!cnt) first = i; cnt++; }
        nb_sink *s = NULL;
        st = nb_sink_create(path, NB_FMT_SAFETENSORS, &s, ctx);
        if (st == NB_OK) st = nb_kv_set_str(&s->kv, "format", "pt", ctx);
        if (st == NB_OK) st = write_sink(g, ps + first, cnt, s, ctx);
        nb_sink_free(s);
        free(path);
        if (st == NB_OK && n_shards > 1) {
            if (!wm) wm = cJSON_CreateObject();
            for (size_t i = first; wm && i < first + cnt; i++)
                if (!cJSON_AddStringToObject(wm, ps[i].name, fname)) { st = nb_err(ctx, NB_ERR_NOMEM, "index: out of memory"); break; }
            if (!wm) st = nb_err(ctx, NB_ERR_NOMEM, "index: out of memory");
        }
    }
    /* Dense modules of encoders: DIR/2_Dense/model.safetensors holding linear.weight, ... */
    for (size_t i = 0; st == NB_OK && i < np; i++) {
        const char *slash = strchr(ps[i].name, '/');
        if (!slash) continue;
        char sub[NB_MAX_NAME + 32];
        snprintf(sub, sizeof sub, "%.*s", (int)(slash - ps[i].name), ps[i].name);
        char *sdir = nb_path_join(ctx, dir, sub);
        char *path = sdir ? nb_path_join(ctx, sdir, "model.safetensors") : NULL;
        piece p = ps[i];
        snprintf(p.name, sizeof p.name, "%s", slash + 1);
        nb_sink *s = NULL;
        if (!path) st = NB_ERR_NOMEM;
        else if (mkdir(sdir, 0777) != 0 && errno != EEXIST) st = nb_err_errno(ctx, errno, "%s", sdir);
        if (st == NB_OK) st = nb_sink_create(path, NB_FMT_SAFETENSORS, &s, ctx);
        if (st == NB_OK) st = nb_kv_set_str(&s->kv, "format", "pt", ctx);
        if (st == NB_OK) st = write_sink(g, &p, 1, s, ctx);
        nb_sink_free(s);
        free(path);
        free(sdir);
    }
    nb_progress_end(&g->prog);
    if (st == NB_OK && n_shards > 1) {
        cJSON *root = cJSON_CreateObject();
        cJSON *md = root ? cJSON_AddObjectToObject(root, "metadata") : NULL;
        char *text = NULL;
        if (md && cJSON_AddNumberToObject(md, "total_size", (double)total) &&
            cJSON_AddItemToObject(root, "weight_map", wm)) {
            wm = NULL;
            text = cJSON_Print(root);
        }
        cJSON_Delete(root);
        if (!text) st = nb_err(ctx, NB_ERR_NOMEM, "index: out of memory");
        else {
            st = write_text_atomic(idx_path, text, ctx);
            free(text);
        }
        if (st == NB_OK) unlink(one_path); /* a stale single file would not be read anyway */
    } else if (st == NB_OK) {
        unlink(idx_path); /* nb_hf_open prefers an index: remove a stale one */
    }
    if (st == NB_OK) {
        char *cfg = nb_hf_config_render(a, g->hp, torch_dtype, ctx);
        if (!cfg) st = NB_ERR_NOMEM;
        else {
            st = write_text_atomic(cfg_path, cfg, ctx);
            free(cfg);
        }
    }
    cJSON_Delete(wm);
    free(cfg_path);
    free(idx_path);
    free(one_path);
    free(shard_of);
    free(ps);
    return st;
}

nb_status nb_synth_write(const nb_synth_opts *o, const char *out_path, nb_ctx *ctx) {
    const nb_arch *a;
    nb_hparams hp;
    NB_TRY(nb_synth_hparams(o, &a, &hp, ctx));
    NB_RETURN_IF(ctx, nb_str_ends_with_ci(out_path, ".safetensors") || nb_str_ends_with_ci(out_path, ".json"),
                 NB_ERR_INVALID,
                 "%s: synth writes a .gguf file or a Hugging Face directory (give a directory path)",
                 out_path);
    nb_arch_tensor *list;
    size_t n;
    NB_RETURN_IF(ctx, o->starve_experts && (!hp.n_expert || o->starve_experts + hp.n_expert_used > hp.n_expert),
                 NB_ERR_INVALID,
                 "synth: --starve-experts %u needs a MoE architecture with at least %u + experts-used experts",
                 o->starve_experts, o->starve_experts);
    NB_TRY(nb_arch_tensor_list(a, &hp, &list, &n, ctx));
    gen_state g;
    memset(&g, 0, sizeof g);
    g.seed = o->seed;
    g.hp = &hp;
    g.starve = o->starve_experts;
    g.n_threads = nb_ctx_threads(ctx);
    /* room for the chunk and at least one row of the widest tensor (f32) */
    uint64_t widest = 0;
    for (size_t i = 0; i < n; i++)
        if ((uint64_t)list[i].ne[0] > widest) widest = (uint64_t)list[i].ne[0];
    g.buf_cap = SYNTH_CHUNK + (size_t)widest * 4;
    g.buf = nb_malloc(ctx, g.buf_cap, "synth buffer");
    nb_status st = g.buf ? NB_OK : NB_ERR_NOMEM;
    if (st == NB_OK) {
        NB_INFO(ctx, "synth: %s, %u layers, dim %u, ff %u, heads %u/%u, vocab %u%s, %llu bytes of tensors",
                a->name, hp.n_layer, hp.n_embd, hp.n_ff_exp ? hp.n_ff_exp : hp.n_ff, hp.n_head,
                hp.n_head_kv, hp.n_vocab, hp.n_expert ? " (MoE)" : "",
                (unsigned long long)nb_synth_data_bytes(a, &hp, o->dtype));
        if (nb_str_ends_with_ci(out_path, ".gguf")) st = write_gguf(&g, o, a, list, n, out_path, ctx);
        else st = write_hf(&g, o, a, list, n, out_path, ctx);
    }
    free(g.buf);
    free(list);
    return st;
}
