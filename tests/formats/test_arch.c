/* tests/formats/test_arch.c — the architecture table: lookups, HF <-> GGUF
 * tensor names both ways for every architecture (experts and shared experts
 * included), hyper-parameters <-> GGUF metadata, the llama q/k permutation
 * against a hand-computed example and as an exact inverse pair. */
#include "formats/arch.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_lookup) {
    ck_assert_ptr_eq(nb_arch_from_hf_class("MistralForCausalLM"), nb_arch_get(NB_ARCH_MISTRAL));
    ck_assert_str_eq(nb_arch_from_hf_class("MistralForCausalLM")->gguf_arch, "llama");
    ck_assert_str_eq(nb_arch_from_hf_class("MixtralForCausalLM")->gguf_arch, "llama");
    ck_assert_str_eq(nb_arch_from_hf_class("Qwen2MoeForCausalLM")->gguf_arch, "qwen2moe");
    ck_assert_str_eq(nb_arch_from_hf_class("Qwen3MoeForCausalLM")->gguf_arch, "qwen3moe");
    ck_assert_str_eq(nb_arch_from_hf_class("Gemma3ForConditionalGeneration")->gguf_arch, "gemma3");
    ck_assert_ptr_eq(nb_arch_from_model_type("gemma3_text"), nb_arch_get(NB_ARCH_GEMMA3));
    ck_assert_ptr_null(nb_arch_from_hf_class("FooForCausalLM"));
    ck_assert_ptr_null(nb_arch_from_hf_class(NULL));
    ck_assert_ptr_eq(nb_arch_find("qwen2moe"), nb_arch_get(NB_ARCH_QWEN2MOE));
    ck_assert_ptr_eq(nb_arch_find("QWEN2_MOE"), nb_arch_get(NB_ARCH_QWEN2MOE));
    ck_assert_ptr_eq(nb_arch_find("llama"), nb_arch_get(NB_ARCH_LLAMA));
    ck_assert_ptr_null(nb_arch_find("gpt2"));
    ck_assert_ptr_eq(nb_arch_from_gguf("llama", true), nb_arch_get(NB_ARCH_MIXTRAL));
    ck_assert_ptr_eq(nb_arch_from_gguf("llama", false), nb_arch_get(NB_ARCH_LLAMA));
    ck_assert_ptr_eq(nb_arch_from_gguf("qwen3moe", true), nb_arch_get(NB_ARCH_QWEN3MOE));
    for (int i = 0; i < NB_ARCH_COUNT; i++) {
        const nb_arch *a = nb_arch_get((nb_arch_id)i);
        ck_assert_int_eq(a->id, i);
        ck_assert_ptr_eq(nb_arch_from_hf_class(a->hf_class), a);
        ck_assert_ptr_nonnull(strstr(nb_arch_supported_list(), a->name));
    }
    ck_assert_ptr_null(nb_arch_get(NB_ARCH_COUNT));
}
END_TEST

/* Graph quirks are row fields: what each family's llama.cpp graph does. */
START_TEST(test_quirk_columns) {
    const nb_arch *llama = nb_arch_get(NB_ARCH_LLAMA), *gemma = nb_arch_get(NB_ARCH_GEMMA3);
    const nb_arch *mixtral = nb_arch_get(NB_ARCH_MIXTRAL), *q2moe = nb_arch_get(NB_ARCH_QWEN2MOE);
    const nb_arch *q3moe = nb_arch_get(NB_ARCH_QWEN3MOE);
    ck_assert_int_eq(gemma->act, NB_ACT_GELU_TANH);
    ck_assert_str_eq(nb_act_hf_name(gemma->act), "gelu_pytorch_tanh");
    ck_assert(gemma->embd_scale_sqrt && (gemma->flags & NB_ARCH_F_NORM_SHIFT));
    ck_assert_ptr_nonnull(gemma->hf_defaults);
    ck_assert_uint_eq(gemma->hf_defaults->sliding_window, 4096);
    /* MoE top-k renormalisation: mixtral and qwen3moe yes, qwen2moe no */
    ck_assert(mixtral->norm_topk && q3moe->norm_topk && !q2moe->norm_topk);
    for (int i = 0; i < NB_ARCH_COUNT; i++) {
        const nb_arch *a = nb_arch_get((nb_arch_id)i);
        if (a == gemma) continue;
        if (a->id == NB_ARCH_GEMMA_EMBEDDING) { /* gemma3's quirks, llama.cpp's plain 1/sqrt(head_dim) */
            ck_assert(a->act == gemma->act && a->embd_scale_sqrt && a->swa_period == gemma->swa_period);
            ck_assert_int_eq(a->attn_scale, NB_ATTN_SCALE_HEAD_DIM);
            ck_assert(a->flags & NB_ARCH_F_ENCODER);
            continue;
        }
        ck_assert(!(a->flags & NB_ARCH_F_ENCODER));
        ck_assert_int_eq(a->act, NB_ACT_SILU);
        ck_assert_str_eq(nb_act_hf_name(a->act), "silu");
        ck_assert(!a->embd_scale_sqrt && a->swa_period == 0 && a->hf_defaults == NULL);
        ck_assert_int_eq(a->attn_scale, NB_ATTN_SCALE_HEAD_DIM);
        ck_assert(a->typical_rope_theta > 0 && a->typical_rms_eps > 0);
        if (!(a->flags & NB_ARCH_F_MOE)) ck_assert(!a->norm_topk);
    }
    /* sliding window: gemma3's layers 5, 11, ... are global */
    for (uint32_t L = 0; L < 18; L++) {
        ck_assert(nb_arch_layer_is_swa(gemma, L) == (L % 6 != 5));
        ck_assert(!nb_arch_layer_is_swa(llama, L));
    }
    /* attention scale: 1/sqrt(head_dim), Gemma 3 27B (62 layers) 1/sqrt(n_embd / n_head) */
    ck_assert(nb_arch_attn_scale(llama, 32, 4096, 32, 128) == 1.0f / sqrtf(128.0f));
    ck_assert(nb_arch_attn_scale(gemma, 26, 1152, 4, 256) == 1.0f / sqrtf(256.0f));
    ck_assert(nb_arch_attn_scale(gemma, 62, 5376, 32, 128) == 1.0f / sqrtf(168.0f));
    ck_assert(nb_arch_attn_scale(llama, 62, 5376, 32, 128) == 1.0f / sqrtf(128.0f));
}
END_TEST

typedef struct pair {
    nb_arch_id arch;
    const char *hf;
    const char *gguf;
    int expert;
    nb_xform xf;
} pair;

static const pair k_pairs[] = {
    {NB_ARCH_LLAMA, "model.embed_tokens.weight", "token_embd.weight", -1, NB_XF_NONE},
    {NB_ARCH_LLAMA, "model.norm.weight", "output_norm.weight", -1, NB_XF_NONE},
    {NB_ARCH_LLAMA, "lm_head.weight", "output.weight", -1, NB_XF_NONE},
    {NB_ARCH_LLAMA, "model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight", -1, NB_XF_NONE},
    {NB_ARCH_LLAMA, "model.layers.12.self_attn.q_proj.weight", "blk.12.attn_q.weight", -1, NB_XF_PERMUTE_Q},
    {NB_ARCH_LLAMA, "model.layers.3.self_attn.k_proj.weight", "blk.3.attn_k.weight", -1, NB_XF_PERMUTE_K},
    {NB_ARCH_LLAMA, "model.layers.3.self_attn.v_proj.weight", "blk.3.attn_v.weight", -1, NB_XF_NONE},
    {NB_ARCH_LLAMA, "model.layers.3.self_attn.o_proj.weight", "blk.3.attn_output.weight", -1, NB_XF_NONE},
    {NB_ARCH_LLAMA, "model.layers.3.post_attention_layernorm.weight", "blk.3.ffn_norm.weight", -1, NB_XF_NONE},
    {NB_ARCH_LLAMA, "model.layers.3.mlp.gate_proj.weight", "blk.3.ffn_gate.weight", -1, NB_XF_NONE},
    {NB_ARCH_LLAMA, "model.layers.3.mlp.up_proj.weight", "blk.3.ffn_up.weight", -1, NB_XF_NONE},
    {NB_ARCH_LLAMA, "model.layers.3.mlp.down_proj.weight", "blk.3.ffn_down.weight", -1, NB_XF_NONE},
    {NB_ARCH_MISTRAL, "model.layers.1.self_attn.q_proj.weight", "blk.1.attn_q.weight", -1, NB_XF_PERMUTE_Q},
    {NB_ARCH_MIXTRAL, "model.layers.1.self_attn.k_proj.weight", "blk.1.attn_k.weight", -1, NB_XF_PERMUTE_K},
    {NB_ARCH_MIXTRAL, "model.layers.2.block_sparse_moe.gate.weight", "blk.2.ffn_gate_inp.weight", -1, NB_XF_NONE},
    {NB_ARCH_MIXTRAL, "model.layers.2.block_sparse_moe.experts.7.w1.weight", "blk.2.ffn_gate_exps.weight", 7, NB_XF_NONE},
    {NB_ARCH_MIXTRAL, "model.layers.2.block_sparse_moe.experts.0.w3.weight", "blk.2.ffn_up_exps.weight", 0, NB_XF_NONE},
    {NB_ARCH_MIXTRAL, "model.layers.2.block_sparse_moe.experts.5.w2.weight", "blk.2.ffn_down_exps.weight", 5, NB_XF_NONE},
    {NB_ARCH_QWEN2, "model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", -1, NB_XF_NONE},
    {NB_ARCH_QWEN2, "model.layers.0.self_attn.q_proj.bias", "blk.0.attn_q.bias", -1, NB_XF_NONE},
    {NB_ARCH_QWEN2, "model.layers.0.self_attn.k_proj.bias", "blk.0.attn_k.bias", -1, NB_XF_NONE},
    {NB_ARCH_QWEN2, "model.layers.0.self_attn.v_proj.bias", "blk.0.attn_v.bias", -1, NB_XF_NONE},
    {NB_ARCH_QWEN3, "model.layers.4.self_attn.q_norm.weight", "blk.4.attn_q_norm.weight", -1, NB_XF_NONE},
    {NB_ARCH_QWEN3, "model.layers.4.self_attn.k_norm.weight", "blk.4.attn_k_norm.weight", -1, NB_XF_NONE},
    {NB_ARCH_QWEN2MOE, "model.layers.1.mlp.gate.weight", "blk.1.ffn_gate_inp.weight", -1, NB_XF_NONE},
    {NB_ARCH_QWEN2MOE, "model.layers.1.mlp.experts.59.gate_proj.weight", "blk.1.ffn_gate_exps.weight", 59, NB_XF_NONE},
    {NB_ARCH_QWEN2MOE, "model.layers.1.mlp.experts.3.up_proj.weight", "blk.1.ffn_up_exps.weight", 3, NB_XF_NONE},
    {NB_ARCH_QWEN2MOE, "model.layers.1.mlp.experts.3.down_proj.weight", "blk.1.ffn_down_exps.weight", 3, NB_XF_NONE},
    {NB_ARCH_QWEN2MOE, "model.layers.1.mlp.shared_expert.gate_proj.weight", "blk.1.ffn_gate_shexp.weight", -1, NB_XF_NONE},
    {NB_ARCH_QWEN2MOE, "model.layers.1.mlp.shared_expert.up_proj.weight", "blk.1.ffn_up_shexp.weight", -1, NB_XF_NONE},
    {NB_ARCH_QWEN2MOE, "model.layers.1.mlp.shared_expert.down_proj.weight", "blk.1.ffn_down_shexp.weight", -1, NB_XF_NONE},
    {NB_ARCH_QWEN2MOE, "model.layers.1.mlp.shared_expert_gate.weight", "blk.1.ffn_gate_inp_shexp.weight", -1, NB_XF_NONE},
    {NB_ARCH_QWEN3MOE, "model.layers.9.mlp.experts.127.down_proj.weight", "blk.9.ffn_down_exps.weight", 127, NB_XF_NONE},
    {NB_ARCH_QWEN3MOE, "model.layers.9.self_attn.k_norm.weight", "blk.9.attn_k_norm.weight", -1, NB_XF_NONE},
    {NB_ARCH_GEMMA3, "model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight", -1, NB_XF_NORM_SHIFT},
    {NB_ARCH_GEMMA3, "model.layers.0.post_attention_layernorm.weight", "blk.0.post_attention_norm.weight", -1, NB_XF_NORM_SHIFT},
    {NB_ARCH_GEMMA3, "model.layers.0.pre_feedforward_layernorm.weight", "blk.0.ffn_norm.weight", -1, NB_XF_NORM_SHIFT},
    {NB_ARCH_GEMMA3, "model.layers.0.post_feedforward_layernorm.weight", "blk.0.post_ffw_norm.weight", -1, NB_XF_NORM_SHIFT},
    {NB_ARCH_GEMMA3, "model.layers.0.self_attn.q_norm.weight", "blk.0.attn_q_norm.weight", -1, NB_XF_NORM_SHIFT},
    {NB_ARCH_GEMMA3, "model.norm.weight", "output_norm.weight", -1, NB_XF_NORM_SHIFT},
    {NB_ARCH_GEMMA3, "model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", -1, NB_XF_NONE},
    {NB_ARCH_GEMMA3, "model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight", -1, NB_XF_NONE},
    /* EmbeddingGemma's sentence-transformers Dense modules */
    {NB_ARCH_GEMMA_EMBEDDING, "2_Dense/linear.weight", "dense_2.weight", -1, NB_XF_NONE},
    {NB_ARCH_GEMMA_EMBEDDING, "3_Dense/linear.weight", "dense_3.weight", -1, NB_XF_NONE},
};

/* A Gemma3TextModel saved by sentence-transformers has no "model." prefix:
 * read (one way; GGUF -> HF gives the canonical prefixed name), encoders only. */
START_TEST(test_bare_encoder_names) {
    const nb_arch *e = nb_arch_get(NB_ARCH_GEMMA_EMBEDDING), *g = nb_arch_get(NB_ARCH_GEMMA3);
    static const char *const pairs[][2] = {{"layers.3.input_layernorm.weight", "blk.3.attn_norm.weight"},
                                           {"embed_tokens.weight", "token_embd.weight"},
                                           {"norm.weight", "output_norm.weight"}};
    for (size_t i = 0; i < 3; i++) {
        nb_name_map m;
        ck_assert_msg(nb_arch_map_hf(e, pairs[i][0], &m), "%s", pairs[i][0]);
        ck_assert_str_eq(m.gguf, pairs[i][1]);
        ck_assert(!nb_arch_map_hf(g, pairs[i][0], &m));
    }
    nb_name_map m;
    ck_assert(nb_arch_map_hf(e, "layers.0.input_layernorm.weight", &m) && m.xf == NB_XF_NORM_SHIFT);
    ck_assert(!nb_arch_map_hf(g, "2_Dense/linear.weight", &m));
}
END_TEST

START_TEST(test_names_both_ways) {
    for (size_t i = 0; i < sizeof k_pairs / sizeof k_pairs[0]; i++) {
        const pair *p = &k_pairs[i];
        const nb_arch *a = nb_arch_get(p->arch);
        nb_name_map m;
        ck_assert_msg(nb_arch_map_hf(a, p->hf, &m), "%s: %s unmapped", a->name, p->hf);
        ck_assert_str_eq(m.gguf, p->gguf);
        ck_assert_int_eq(m.expert, p->expert);
        ck_assert_int_eq(m.xf, p->xf);
        ck_assert(!m.skip);
        char hf[NB_MAX_NAME + 1];
        nb_xform xf;
        ck_assert_msg(nb_arch_map_gguf(a, p->gguf, p->expert, hf, sizeof hf, &xf), "%s: %s", a->name, p->gguf);
        ck_assert_str_eq(hf, p->hf);
        ck_assert_int_eq(xf, p->xf);
        /* an expert index where none belongs, or none where one is needed */
        ck_assert(!nb_arch_map_gguf(a, p->gguf, p->expert >= 0 ? -1 : 0, hf, sizeof hf, NULL));
    }
}
END_TEST

START_TEST(test_names_rejected) {
    const nb_arch *llama = nb_arch_get(NB_ARCH_LLAMA), *gemma = nb_arch_get(NB_ARCH_GEMMA3);
    const nb_arch *qwen2 = nb_arch_get(NB_ARCH_QWEN2);
    nb_name_map m;
    /* leading zeros, missing numbers, trailing junk, huge indices */
    ck_assert(!nb_arch_map_hf(llama, "model.layers.01.mlp.up_proj.weight", &m));
    ck_assert(!nb_arch_map_hf(llama, "model.layers..mlp.up_proj.weight", &m));
    ck_assert(!nb_arch_map_hf(llama, "model.layers.1.mlp.up_proj.weightx", &m));
    ck_assert(!nb_arch_map_hf(llama, "model.layers.99999999.mlp.up_proj.weight", &m));
    ck_assert(!nb_arch_map_hf(llama, "", &m));
    /* names of another architecture */
    ck_assert(!nb_arch_map_hf(llama, "model.layers.0.mlp.experts.0.up_proj.weight", &m));
    ck_assert(!nb_arch_map_hf(qwen2, "model.layers.0.self_attn.q_norm.weight", &m));
    ck_assert(!nb_arch_map_hf(llama, "model.layers.0.pre_feedforward_layernorm.weight", &m));
    ck_assert(nb_arch_map_hf(gemma, "model.layers.0.pre_feedforward_layernorm.weight", &m));
    /* multimodal wrappers: text tensors renamed, vision ones skipped */
    ck_assert(nb_arch_map_hf(gemma, "language_model.model.layers.2.mlp.up_proj.weight", &m));
    ck_assert_str_eq(m.gguf, "blk.2.ffn_up.weight");
    ck_assert(nb_arch_map_hf(gemma, "model.language_model.embed_tokens.weight", &m));
    ck_assert_str_eq(m.gguf, "token_embd.weight");
    ck_assert(nb_arch_map_hf(gemma, "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight", &m));
    ck_assert(m.skip);
    ck_assert(nb_arch_map_hf(llama, "model.layers.0.self_attn.rotary_emb.inv_freq", &m));
    ck_assert(m.skip);
    /* GGUF names that do not exist for the architecture */
    char hf[NB_MAX_NAME + 1];
    ck_assert(!nb_arch_map_gguf(llama, "blk.0.post_ffw_norm.weight", -1, hf, sizeof hf, NULL));
    ck_assert(!nb_arch_map_gguf(llama, "blk.0.ffn_gate_exps.weight", 0, hf, sizeof hf, NULL));
    ck_assert(!nb_arch_map_gguf(llama, "rope_freqs.weight", -1, hf, sizeof hf, NULL));
    /* a buffer too small fails instead of truncating */
    ck_assert(!nb_arch_map_gguf(llama, "blk.0.attn_q.weight", -1, hf, 10, NULL));
}
END_TEST

/* Every tensor of every architecture's tensor list maps to HF and back. */
START_TEST(test_tensor_list_round_trip) {
    for (int i = 0; i < NB_ARCH_COUNT; i++) {
        const nb_arch *a = nb_arch_get((nb_arch_id)i);
        nb_hparams hp = {0};
        hp.n_layer = 3;
        hp.n_embd = 64;
        hp.n_ff = 96;
        hp.n_head = 4;
        hp.n_head_kv = 2;
        hp.n_ctx = 128;
        hp.n_vocab = 100;
        hp.tie_embeddings = (a->flags & NB_ARCH_F_TIED) != 0;
        if (a->flags & NB_ARCH_F_MOE) {
            hp.n_expert = 4;
            hp.n_expert_used = 2;
            hp.n_ff_exp = 32;
            if (a->flags & NB_ARCH_F_SHEXP) hp.n_ff_shexp = 48;
        }
        nb_arch_tensor *list;
        size_t n;
        ck_assert_int_eq(nb_arch_tensor_list(a, &hp, &list, &n, NULL), NB_OK);
        size_t n_exps = 0, n_shexp = 0;
        for (size_t k = 0; k < n; k++) {
            bool stack = list[k].n_dims == 3;
            ck_assert_int_eq(stack, nb_arch_is_expert_stack(list[k].name));
            int ne = stack ? (int)list[k].ne[2] : 1;
            n_exps += stack;
            n_shexp += strstr(list[k].name, "shexp") != NULL;
            for (int e = 0; e < ne; e++) {
                char hf[NB_MAX_NAME + 1];
                ck_assert_msg(nb_arch_map_gguf(a, list[k].name, stack ? e : -1, hf, sizeof hf, NULL),
                              "%s: %s", a->name, list[k].name);
                nb_name_map m;
                ck_assert(nb_arch_map_hf(a, hf, &m));
                ck_assert_str_eq(m.gguf, list[k].name);
                ck_assert_int_eq(m.expert, stack ? e : -1);
            }
        }
        ck_assert_uint_eq(n_exps, (a->flags & NB_ARCH_F_MOE) ? 3u * hp.n_layer : 0u);
        ck_assert_uint_eq(n_shexp, (a->flags & NB_ARCH_F_SHEXP) ? 4u * hp.n_layer : 0u);
        ck_assert_str_eq(list[0].name, "token_embd.weight");
        ck_assert_str_eq(list[n - 1].name, (a->flags & NB_ARCH_F_TIED) ? "output_norm.weight" : "output.weight");
        free(list);
    }
}
END_TEST

/* llama.cpp's permute on a hand-computed example: 2 heads of dim 4 (8 rows).
 * reshape(2, 2, 2).swapaxes(1, 2): head 0 rows [0 1 2 3] -> [0 2 1 3]. */
START_TEST(test_permute_example) {
    const uint64_t expect_src[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    for (uint64_t g = 0; g < 8; g++) {
        ck_assert_uint_eq(nb_qk_src_row(g, 8, 2), expect_src[g]);
        ck_assert_uint_eq(nb_qk_dst_row(expect_src[g], 8, 2), g);
    }
    /* 1 head of dim 6: rows [0 1 2 | 3 4 5] interleave to [0 3 1 4 2 5] */
    const uint64_t ex6[6] = {0, 3, 1, 4, 2, 5};
    for (uint64_t g = 0; g < 6; g++) ck_assert_uint_eq(nb_qk_src_row(g, 6, 1), ex6[g]);
    /* with row payloads of 3 bytes */
    unsigned char src[8 * 3], dst[8 * 3], back[8 * 3];
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 3; c++) src[r * 3 + c] = (unsigned char)(r * 16 + c);
    ck_assert_int_eq(nb_qk_permute(src, dst, 8, 3, 2, false, "t", NULL), NB_OK);
    for (int g = 0; g < 8; g++)
        for (int c = 0; c < 3; c++) ck_assert_uint_eq(dst[g * 3 + c], expect_src[g] * 16 + (unsigned)c);
    ck_assert_int_eq(nb_qk_permute(dst, back, 8, 3, 2, true, "t", NULL), NB_OK);
    ck_assert_mem_eq(back, src, sizeof src);
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ck_assert_int_eq(nb_qk_permute(src, dst, 6, 3, 2, false, "blk.0.attn_q.weight", &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "blk.0.attn_q.weight"));
    ck_assert_int_eq(nb_qk_permute(src, dst, 8, 3, 0, false, "t", &ctx), NB_ERR_RANGE);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(test_permute_inverse_random) {
    uint64_t rng = 42;
    for (int iter = 0; iter < 50; iter++) {
        uint32_t heads = 1 + (uint32_t)(nbt_rand_u64(&rng) % 8);
        uint64_t hd = 2 * (1 + nbt_rand_u64(&rng) % 16);
        uint64_t rows = heads * hd, rb = 1 + nbt_rand_u64(&rng) % 7;
        unsigned char *a = malloc(rows * rb), *b = malloc(rows * rb), *c = malloc(rows * rb);
        for (uint64_t k = 0; k < rows * rb; k++) a[k] = (unsigned char)nbt_rand_u64(&rng);
        ck_assert_int_eq(nb_qk_permute(a, b, rows, rb, heads, false, "t", NULL), NB_OK);
        ck_assert_int_eq(nb_qk_permute(b, c, rows, rb, heads, true, "t", NULL), NB_OK);
        ck_assert_mem_eq(a, c, rows * rb);
        /* src/dst row maps are a bijection and each other's inverse */
        for (uint64_t g = 0; g < rows; g++) {
            ck_assert_uint_lt(nb_qk_src_row(g, rows, heads), rows);
            ck_assert_uint_eq(nb_qk_dst_row(nb_qk_src_row(g, rows, heads), rows, heads), g);
            ck_assert_uint_eq(nb_qk_src_row(nb_qk_dst_row(g, rows, heads), rows, heads), g);
        }
        free(a);
        free(b);
        free(c);
    }
}
END_TEST

START_TEST(test_hparams_kv_round_trip) {
    for (int i = 0; i < NB_ARCH_COUNT; i++) {
        const nb_arch *a = nb_arch_get((nb_arch_id)i);
        nb_hparams hp = {0};
        hp.n_layer = 5;
        hp.n_embd = 128;
        hp.n_ff = 320;
        hp.n_head = 8;
        hp.n_head_kv = 2;
        hp.n_ctx = 8192;
        hp.n_vocab = 1000;
        hp.rope_theta = 500000.0;
        hp.rms_eps = 1e-5;
        if (a->id == NB_ARCH_QWEN3 || a->id == NB_ARCH_GEMMA3) hp.head_dim = 32;
        if (a->flags & NB_ARCH_F_MOE) {
            hp.n_expert = 8;
            hp.n_expert_used = 2;
            if (!(a->flags & NB_ARCH_F_MIXTRAL_NAMES)) hp.n_ff_exp = 64;
            if (a->flags & NB_ARCH_F_SHEXP) hp.n_ff_shexp = 256;
        }
        if (a->id == NB_ARCH_GEMMA3) {
            hp.sliding_window = 512;
            hp.rope_theta_swa = 10000;
            hp.rope_scaling = NB_ROPE_SCALING_LINEAR;
            hp.rope_factor = 8;
        }
        if (a->id == NB_ARCH_QWEN2) {
            hp.rope_scaling = NB_ROPE_SCALING_YARN;
            hp.rope_factor = 4;
            hp.rope_orig_ctx = 32768;
        }
        nb_kvset kv;
        nb_kvset_init(&kv);
        ck_assert_int_eq(nb_arch_hparams_to_kv(a, &hp, "tiny", &kv, NULL), NB_OK);
        ck_assert_str_eq(nb_kv_get_str(&kv, "general.architecture"), a->gguf_arch);
        ck_assert_str_eq(nb_kv_get_str(&kv, "general.name"), "tiny");
        char key[128];
        snprintf(key, sizeof key, "%s.block_count", a->gguf_arch);
        const nb_kv_value *v = nb_kv_get(&kv, key);
        ck_assert_ptr_nonnull(v);
        ck_assert_int_eq(v->type, NB_KV_U32); /* llama.cpp's types */
        snprintf(key, sizeof key, "%s.rope.freq_base", a->gguf_arch);
        ck_assert_int_eq(nb_kv_get(&kv, key)->type, NB_KV_F32);
        snprintf(key, sizeof key, "%s.rope.dimension_count", a->gguf_arch);
        ck_assert_int_eq(nb_kv_get(&kv, key) != NULL, (a->flags & NB_ARCH_F_PERMUTE_QK) != 0);
        snprintf(key, sizeof key, "%s.attention.key_length", a->gguf_arch);
        ck_assert_int_eq(nb_kv_get(&kv, key) != NULL, hp.head_dim != 0);
        nb_hparams back;
        ck_assert_int_eq(nb_arch_hparams_from_kv(a, &kv, &back, NULL), NB_OK);
        ck_assert_uint_eq(back.n_layer, hp.n_layer);
        ck_assert_uint_eq(back.n_embd, hp.n_embd);
        ck_assert_uint_eq(back.n_ff, hp.n_ff);
        ck_assert_uint_eq(back.n_head, hp.n_head);
        ck_assert_uint_eq(back.n_head_kv, hp.n_head_kv);
        ck_assert_uint_eq(back.head_dim, hp.head_dim);
        ck_assert_uint_eq(back.n_ctx, hp.n_ctx);
        ck_assert_uint_eq(back.n_vocab, hp.n_vocab);
        ck_assert_uint_eq(back.n_expert, hp.n_expert);
        ck_assert_uint_eq(back.n_expert_used, hp.n_expert_used);
        ck_assert_uint_eq(back.n_ff_exp, hp.n_ff_exp);
        ck_assert_uint_eq(back.n_ff_shexp, hp.n_ff_shexp);
        ck_assert_uint_eq(back.sliding_window, hp.sliding_window);
        ck_assert_int_eq(back.rope_scaling, hp.rope_scaling);
        ck_assert_uint_eq(back.rope_orig_ctx, hp.rope_orig_ctx);
        ck_assert_double_eq_tol(back.rope_factor, hp.rope_factor, 1e-6);
        ck_assert_double_eq_tol(back.rope_theta, hp.rope_theta, 1e-3);
        ck_assert_double_eq_tol(back.rope_theta_swa, hp.rope_theta_swa, 1e-3);
        ck_assert_double_eq_tol(back.rms_eps, hp.rms_eps, 1e-10);
        nb_kvset_free(&kv);
    }
}
END_TEST

START_TEST(test_validate) {
    const nb_arch *llama = nb_arch_get(NB_ARCH_LLAMA), *mix = nb_arch_get(NB_ARCH_MIXTRAL);
    nb_hparams ok = {.n_layer = 2, .n_embd = 64, .n_ff = 128, .n_head = 4, .n_head_kv = 2, .n_ctx = 16, .n_vocab = 10};
    nb_ctx ctx;
    nbt_ctx(&ctx);
    ck_assert_int_eq(nb_hparams_validate(llama, &ok, "c", &ctx), NB_OK);
    nb_hparams h = ok;
    h.n_head_kv = 3;
    ck_assert_int_eq(nb_hparams_validate(llama, &h, "c", &ctx), NB_ERR_RANGE);
    h = ok;
    h.n_embd = 66; /* not a multiple of heads, no head_dim */
    ck_assert_int_eq(nb_hparams_validate(llama, &h, "c", &ctx), NB_ERR_RANGE);
    h.head_dim = 16;
    ck_assert_int_eq(nb_hparams_validate(llama, &h, "c", &ctx), NB_OK);
    h = ok;
    h.n_layer = 0;
    ck_assert_int_eq(nb_hparams_validate(llama, &h, "config.json", &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "num_hidden_layers"));
    h = ok;
    h.n_vocab = 1u << 30;
    ck_assert_int_eq(nb_hparams_validate(llama, &h, "c", &ctx), NB_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "vocab_size"));
    /* MoE: experts required, used <= count; experts on a dense arch refused */
    ck_assert_int_eq(nb_hparams_validate(mix, &ok, "c", &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "num_local_experts"));
    h = ok;
    h.n_expert = 4;
    h.n_expert_used = 5;
    ck_assert_int_eq(nb_hparams_validate(mix, &h, "c", &ctx), NB_ERR_RANGE);
    h.n_expert_used = 2;
    ck_assert_int_eq(nb_hparams_validate(mix, &h, "c", &ctx), NB_OK);
    ck_assert_int_eq(nb_hparams_validate(llama, &h, "c", &ctx), NB_ERR_UNSUPPORTED);
    nb_ctx_free(&ctx);
}
END_TEST

/* llama3 factors: 1 for short wavelengths, `factor` for long, smooth between
 * (values of Llama 3.1 8B: theta 500000, head dim 128, factor 8, 1 / 4, 8192). */
START_TEST(test_llama3_rope_factors) {
    nb_hparams hp = {.n_layer = 1, .n_embd = 4096, .n_head = 32, .n_head_kv = 8, .rope_theta = 500000,
                     .rope_scaling = NB_ROPE_SCALING_LLAMA3, .rope_factor = 8, .rope_low_freq = 1,
                     .rope_high_freq = 4, .rope_orig_ctx = 8192};
    float f[64];
    ck_assert_int_eq(nb_arch_llama3_rope_factors(&hp, f, 64, NULL), NB_OK);
    ck_assert_float_eq(f[0], 1.0f);
    ck_assert_float_eq(f[63], 8.0f);
    int n_mid = 0;
    for (int i = 0; i < 64; i++) {
        ck_assert(f[i] >= 1.0f && f[i] <= 8.0f);
        if (i) ck_assert(f[i] >= f[i - 1]); /* wavelength grows with i */
        /* the formula for the middle band, recomputed in double */
        double freq = 1.0 / pow(500000.0, (2.0 * i) / 128.0), wl = 2 * M_PI / freq;
        if (wl >= 8192.0 / 4 && wl <= 8192.0) {
            double s = (8192.0 / wl - 1) / 3;
            ck_assert_double_eq_tol(f[i], 1 / ((1 - s) / 8 + s), 1e-3);
            n_mid++;
        }
    }
    ck_assert_int_gt(n_mid, 0);
    ck_assert_int_eq(nb_arch_llama3_rope_factors(&hp, f, 63, NULL), NB_ERR_INVALID);
}
END_TEST

static Suite *arch_suite(void) {
    Suite *s = suite_create("arch");
    TCase *tc = tcase_create("arch");
    tcase_add_test(tc, test_lookup);
    tcase_add_test(tc, test_quirk_columns);
    tcase_add_test(tc, test_names_both_ways);
    tcase_add_test(tc, test_bare_encoder_names);
    tcase_add_test(tc, test_names_rejected);
    tcase_add_test(tc, test_tensor_list_round_trip);
    tcase_add_test(tc, test_permute_example);
    tcase_add_test(tc, test_permute_inverse_random);
    tcase_add_test(tc, test_hparams_kv_round_trip);
    tcase_add_test(tc, test_validate);
    tcase_add_test(tc, test_llama3_rope_factors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return nbt_run_suite(arch_suite());
}
