/* quant/memory.c — the runtime memory model (see quant/memory.h). */
#include "quant/memory.h"

#include "core/checked.h"
#include "formats/arch.h"

#include <string.h>

const char *nb_runtime_name(nb_runtime r) {
    return r == NB_RUNTIME_NIBBLE ? "nibble" : "llama.cpp";
}

bool nb_runtime_from_name(const char *name, nb_runtime *out) {
    if (!strcmp(name, "llama.cpp") || !strcmp(name, "llamacpp")) *out = NB_RUNTIME_LLAMACPP;
    else if (!strcmp(name, "nibble")) *out = NB_RUNTIME_NIBBLE;
    else return false;
    return true;
}

static uint64_t pad_to(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }
static uint64_t max3(uint64_t a, uint64_t b, uint64_t c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

nb_status nb_mem_estimate(const nb_model *m, const nb_mem_opts *o, nb_mem_est *e, nb_ctx *ctx) {
    memset(e, 0, sizeof *e);
    const char *g = nb_kv_get_str(&m->kv, "general.architecture");
    NB_RETURN_IF(ctx, !g, NB_ERR_UNSUPPORTED,
                 "%s: no general.architecture: the memory model needs the layer shapes (open a GGUF or HF directory)",
                 m->path);
    bool moe = nb_model_find(m, "blk.0.ffn_gate_exps.weight") != NULL;
    const nb_arch *a = nb_arch_from_gguf(g, moe);
    NB_RETURN_IF(ctx, !a, NB_ERR_UNSUPPORTED, "%s: architecture '%s' has no memory model (supported: %s)", m->path, g,
                 nb_arch_supported_list());
    nb_hparams hp;
    nb_status st = nb_arch_hparams_from_kv(a, &m->kv, &hp, ctx);
    if (st != NB_OK) return nb_err_prefix(ctx, "%s", m->path);
    NB_RETURN_IF(ctx, !hp.n_head || !hp.n_head_kv || !hp.n_layer || !hp.n_embd, NB_ERR_FORMAT,
                 "%s: zero layer, head or embedding count in the metadata", m->path);
    NB_RETURN_IF(ctx, o->n_ctx == 0, NB_ERR_RANGE, "%s: --ctx must be at least 1", m->path);
    NB_RETURN_IF(ctx, hp.n_ctx && o->n_ctx > hp.n_ctx, NB_ERR_RANGE,
                 "%s: --ctx %u is larger than the model's context (%u tokens)", m->path, o->n_ctx, hp.n_ctx);
    nb_type kvt = o->runtime == NB_RUNTIME_NIBBLE ? NB_TYPE_F32 : o->kv_type;
    NB_RETURN_IF(ctx, kvt != NB_TYPE_F16 && kvt != NB_TYPE_Q8_0 && kvt != NB_TYPE_Q4_0 && kvt != NB_TYPE_F32,
                 NB_ERR_RANGE, "%s: KV type %s: the KV cache takes f16, q8_0 or q4_0", m->path, nb_type_name(kvt));
    if (!hp.n_vocab) {
        const nb_tensor *te = nb_model_find(m, "token_embd.weight");
        if (te && te->n_dims >= 2 && te->ne[1] > 0 && te->ne[1] <= UINT32_MAX) hp.n_vocab = (uint32_t)te->ne[1];
    }
    e->n_layer = hp.n_layer;
    e->n_embd = hp.n_embd;
    e->n_head = hp.n_head;
    e->n_head_kv = hp.n_head_kv;
    e->head_dim = nb_hparams_head_dim(&hp);
    e->n_ff = hp.n_ff_exp && moe ? hp.n_ff_exp : hp.n_ff;
    e->n_vocab = hp.n_vocab;
    e->n_ctx_train = hp.n_ctx;
    e->n_expert_used = moe ? (hp.n_expert_used ? hp.n_expert_used : 1) : 0;
    e->kv_type = kvt;
    e->overhead_bytes = o->overhead;
    bool llama = o->runtime == NB_RUNTIME_LLAMACPP;
    uint64_t ub = o->n_ubatch ? o->n_ubatch : NB_MEM_DEFAULT_UBATCH;
    if (ub > o->n_ctx) ub = o->n_ctx;
    uint64_t cells = llama ? pad_to(o->n_ctx, 256) : o->n_ctx;
    e->cells = (uint32_t)cells;
    uint64_t swa_cells = 0;
    if (llama && a->swa_period && hp.sliding_window) {
        swa_cells = pad_to((uint64_t)hp.sliding_window + ub, 256);
        if (swa_cells > cells) swa_cells = cells;
        e->sliding_window = hp.sliding_window;
        e->swa_cells = (uint32_t)swa_cells;
    }
    uint64_t row = 0; /* one cell of K (or V) of one layer */
    NB_TRY(nb_type_row_bytes(kvt, (uint64_t)e->n_head_kv * e->head_dim, &row, ctx, "KV cache row"));
    for (uint32_t l = 0; l < hp.n_layer; l++) {
        bool swa = swa_cells && nb_arch_layer_is_swa(a, l);
        e->n_swa_layers += swa;
        e->kv_bytes += 2 * row * (swa ? swa_cells : cells);
    }
    /* compute: see the header; F32 activations */
    uint64_t f = 4, E = hp.n_embd, hd = e->head_dim;
    uint64_t qkv = f * ub * ((uint64_t)hp.n_head + 2u * hp.n_head_kv) * hd;
    uint64_t ffn = 2 * f * e->n_ff * ub * (moe ? e->n_expert_used : 1);
    if (llama) {
        uint64_t attn = f * cells * ub * hp.n_head /* scores */ + f * cells * ub /* mask */ + qkv;
        uint64_t layer = 4 * f * E * ub + (attn > ffn ? attn : ffn);
        uint64_t head = f * hp.n_vocab * ub + 2 * f * E * ub; /* logits of every token, final norm */
        e->compute_bytes = (layer > head ? layer : head) + f * hp.n_vocab; /* + the output buffer */
    } else {
        /* nibble's engine: fixed n_batch scratch, one logits row, one score row per thread */
        uint64_t scores = f * o->n_ctx * 2;
        e->compute_bytes = 4 * f * E * ub + qkv + max3(f * hp.n_vocab, scores, ffn);
    }
    return NB_OK;
}
