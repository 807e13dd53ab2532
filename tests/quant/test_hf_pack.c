/* tests/quant/test_hf_pack.c — bitsandbytes quant_state, GPTQ and AWQ unpacking (quant/hf_pack.h).
 *
 * quant_state: the rendered JSON equals, byte for byte, what bitsandbytes
 * 0.50's pack_dict_to_tensor stored for a real save_pretrained (strings
 * copied from tests/data/hf_export/bnb_nf4_dq), including Python's float repr
 * of the offset; parse reads it back; loading checks every size.
 * GPTQ / AWQ: packing nibble's INT4 blocks (quant/int4.h) and unpacking with
 * the general functions gives exactly the blocks' dequantization; an
 * act-order g_idx moves values between groups as its definition says; 2- and
 * 8-bit words decode as hand-built; bad layouts are refused with a message.
 */
#include "quant/hf_pack.h"

#include "core/fp.h"
#include "core/types.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

START_TEST(quant_state_render) {
    nb_nf4_state s = {.blocksize = 64, .double_quant = true, .nested_blocksize = 256};
    const int64_t shape[2] = {64, 128};
    struct { float off; const char *want; } cases[] = {
        /* offsets from tests/data/hf_export/bnb_nf4_dq and the first bnb recording */
        {0.05133247375488281f, "0.05133247375488281"},
        {0.051548004150390625f, "0.051548004150390625"},
        {0.0512237548828125f, "0.0512237548828125"},
        {1e-05f, "9.999999747378752e-06"},
        {3.0f, "3.0"},
        {0.0f, "0.0"},
        {1234567.0f, "1234567.0"},
        {1e20f, "1.0000000200408773e+20"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s.offset = cases[i].off;
        char *js = nb_bnb_quant_state_render(&s, "bfloat16", shape, 2);
        char want[512];
        snprintf(want, sizeof want,
                 "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [64, 128], "
                 "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": %s}",
                 cases[i].want);
        ck_assert_str_eq(js, want);
        nb_ctx ctx;
        nbt_ctx(&ctx);
        nb_bnb_quant_state qs;
        ck_assert_int_eq(nb_bnb_quant_state_parse(js, strlen(js), "w", &qs, &ctx), NB_OK);
        ck_assert(qs.nested && qs.blocksize == 64 && qs.nested_blocksize == 256 && qs.n_dims == 2);
        ck_assert(qs.shape[0] == 64 && qs.shape[1] == 128 && (float)qs.nested_offset == cases[i].off);
        ck_assert_str_eq(qs.dtype, "bfloat16");
        nb_ctx_free(&ctx);
        free(js);
    }
    s.double_quant = false;
    char *js = nb_bnb_quant_state_render(&s, "float16", shape, 2);
    ck_assert_str_eq(js, "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [64, 128]}");
    free(js);
}
END_TEST

START_TEST(quant_state_bad) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_bnb_quant_state qs;
    const char *bad[][2] = {
        {"[1]", "not a JSON object"},
        {"{\"quant_type\": \"nf4\", \"blocksize\": 63, \"dtype\": \"float16\", \"shape\": [2, 64]}", "blocksize"},
        {"{\"quant_type\": \"nf4\", \"blocksize\": 96, \"dtype\": \"float16\", \"shape\": [2, 64]}", "power of two"},
        {"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [2, -64]}", "shape[1]"},
        {"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\"}", "'shape'"},
        {"{\"quant_type\": 4, \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [2]}", "'quant_type'"},
        {"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [2], \"nested_offset\": 1}",
         "nested_blocksize"},
        {"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"f", "not a JSON object"},
        /* found by fuzz_bnb_state: an offset no float32 holds */
        {"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"f\", \"shape\": [2], \"nested_blocksize\": 256, "
         "\"nested_dtype\": \"float32\", \"nested_offset\": 1.5e84}", "finite float32"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(nb_bnb_quant_state_parse(bad[i][0], strlen(bad[i][0]), "W.weight", &qs, &ctx), NB_ERR_FORMAT);
        ck_assert_msg(strstr(nb_errmsg(&ctx), bad[i][1]) && strstr(nb_errmsg(&ctx), "W.weight"), "%zu: %s", i,
                      nb_errmsg(&ctx));
    }
    nb_ctx_free(&ctx);
}
END_TEST

/* quantize -> tensors -> load -> dequantize equals the original state's dequantization */
START_TEST(bnb_state_load) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    enum { R = 40, C = 100 }; /* 4000 elements: 63 blocks of 64, the last partial; 1 nested block */
    float *x = malloc(R * C * sizeof *x), *y0 = malloc(R * C * sizeof *y0), *y1 = malloc(R * C * sizeof *y1);
    uint64_t rs = 5;
    for (int i = 0; i < R * C; i++) x[i] = nbt_rand_normal(&rs);
    for (int dq = 0; dq < 2; dq++) {
        nb_nf4_state s;
        ck_assert_int_eq(nb_nf4_quantize_tensor(x, R * C, 64, dq, &s, &ctx), NB_OK);
        ck_assert_int_eq(nb_nf4_dequantize_tensor(&s, y0, &ctx), NB_OK);
        int64_t shape[2] = {R, C};
        char *js = nb_bnb_quant_state_render(&s, "float32", shape, 2);
        nb_bnb_quant_state qs;
        ck_assert_int_eq(nb_bnb_quant_state_parse(js, strlen(js), "w", &qs, &ctx), NB_OK);
        nb_bnb_nf4_tensors t = {
            .packed = s.packed, .n_packed = (s.n + 1) / 2,
            .absmax = dq ? (const void *)s.qabsmax : (const void *)s.absmax, .n_absmax = s.n_blocks,
            .quant_map = s.code, .n_quant_map = 16,
            .nested_absmax = s.absmax2, .n_nested_absmax = s.n_nested,
            .nested_quant_map = s.nested_code, .n_nested_quant_map = 256};
        nb_nf4_state l;
        ck_assert_int_eq(nb_bnb_nf4_state_load(&qs, &t, "w", &l, &ctx), NB_OK);
        ck_assert_int_eq(nb_nf4_dequantize_tensor(&l, y1, &ctx), NB_OK);
        ck_assert_mem_eq(y0, y1, R * C * sizeof(float));
        nb_nf4_state_free(&l);
        /* sizes that disagree with the shape */
        t.n_packed--;
        ck_assert_int_eq(nb_bnb_nf4_state_load(&qs, &t, "w", &l, &ctx), NB_ERR_FORMAT);
        ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "packed weight has 1999 bytes"));
        t.n_packed++;
        t.n_absmax = 62;
        ck_assert_int_eq(nb_bnb_nf4_state_load(&qs, &t, "w", &l, &ctx), NB_ERR_FORMAT);
        ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "w.absmax has 62 values, expected 63"));
        t.n_absmax = 63;
        if (dq) {
            t.n_nested_quant_map = 255;
            ck_assert_int_eq(nb_bnb_nf4_state_load(&qs, &t, "w", &l, &ctx), NB_ERR_FORMAT);
            ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "nested_quant_map"));
        }
        strcpy(qs.quant_type, "fp4");
        ck_assert_int_eq(nb_bnb_nf4_state_load(&qs, &t, "w", &l, &ctx), NB_ERR_UNSUPPORTED);
        free(js);
        nb_nf4_state_free(&s);
    }
    free(x);
    free(y0);
    free(y1);
    nb_ctx_free(&ctx);
}
END_TEST

/* INT4 blocks -> gptq / awq -> general unpack == the blocks' dequantization */
START_TEST(int4_unpack) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    enum { N = 24, K = 128 };
    const nb_type types[] = {NB_TYPE_INT4_SYM_G32, NB_TYPE_INT4_ASYM_G64, NB_TYPE_INT4_ASYM_G128};
    float *w = malloc(N * K * sizeof *w), *ref = malloc(N * K * sizeof *ref), *got = malloc(N * K * sizeof *got);
    uint64_t rs = 11;
    for (int i = 0; i < N * K; i++) w[i] = nbt_rand_normal(&rs) + (i % 7 == 0 ? 0.5f : 0.0f);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        nb_type t = types[ti];
        const nb_type_traits *tr = nb_type_get(t);
        uint32_t G = tr->group;
        void *blk = malloc((size_t)N * K / G * tr->type_size);
        tr->quantize(w, blk, N, K, NULL);
        tr->to_float(blk, ref, N * K);
        nb_gptq_sizes sz = nb_gptq_sizes_of(N, K, G);
        nb_gptq_tensors gq = {malloc(sz.qweight), malloc(sz.qzeros), malloc(sz.scales), malloc(sz.g_idx)};
        ck_assert_int_eq(nb_int4_to_gptq(t, blk, N, K, true, &gq, &ctx), NB_OK);
        nb_gptq_layout l = {.bits = 4, .n_out = N, .k_in = K, .n_groups = K / G, .v1 = true};
        ck_assert_int_eq(nb_gptq_unpack_f32(&l, &gq, got, "layer", &ctx), NB_OK);
        ck_assert_mem_eq(got, ref, N * K * sizeof(float));
        /* act-order: input 3 claims group 1's scales and zeros */
        if (K / G > 1) {
            gq.g_idx[3] = 1;
            ck_assert_int_eq(nb_gptq_unpack_f32(&l, &gq, got, "layer", &ctx), NB_OK);
            for (int n = 0; n < N; n++) {
                uint32_t q = ((uint32_t)gq.qweight[0 * N + n] >> 12) & 0xF;
                uint32_t z = (((uint32_t)gq.qzeros[1 * (N / 8) + n / 8] >> (4 * (n % 8))) & 0xF) + 1;
                ck_assert_float_eq(got[n * K + 3], nb_f16_to_f32(gq.scales[1 * N + n]) * ((float)q - (float)z));
                ck_assert_float_eq(got[n * K + 4], ref[n * K + 4]);
            }
            gq.g_idx[3] = (int32_t)(K / G); /* out of range */
            ck_assert_int_eq(nb_gptq_unpack_f32(&l, &gq, got, "layer", &ctx), NB_ERR_FORMAT);
            ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "layer.g_idx[3]"));
            gq.g_idx[3] = 0;
        }
        nb_awq_tensors aw = {malloc(K * N / 2), malloc(K / G * N / 2), malloc(K / G * N * 2)};
        ck_assert_int_eq(nb_int4_to_awq(t, blk, N, K, &aw, &ctx), NB_OK);
        ck_assert_int_eq(nb_awq_unpack_f32(&aw, N, K, G, got, "layer", &ctx), NB_OK);
        ck_assert_mem_eq(got, ref, N * K * sizeof(float));
        ck_assert_int_eq(nb_awq_unpack_f32(&aw, N, K, 48, got, "layer", &ctx), NB_ERR_FORMAT);
        free(aw.qweight); free(aw.qzeros); free(aw.scales);
        free(gq.qweight); free(gq.qzeros); free(gq.scales); free(gq.g_idx);
        free(blk);
    }
    free(w);
    free(ref);
    free(got);
    nb_ctx_free(&ctx);
}
END_TEST

/* 2- and 8-bit words, built by hand */
START_TEST(gptq_bits) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    enum { N = 16, K = 16 };
    for (uint32_t bits = 2; bits <= 8; bits *= 2) {
        if (bits == 4) continue;
        uint32_t per = 32 / bits, mask = (1u << bits) - 1;
        int32_t qw[K / 2 * N] = {0}, qz[N] = {0}, g_idx[K];
        uint16_t sc[N];
        uint8_t code[N][K], zero[N];
        uint64_t rs = bits;
        for (int n = 0; n < N; n++) {
            zero[n] = (uint8_t)(nbt_rand_u64(&rs) & mask);
            sc[n] = nb_f32_to_f16(0.25f + (float)n / 64);
            qz[n / per] = (int32_t)((uint32_t)qz[n / per] | (uint32_t)((zero[n] - 1) & mask) << ((n % per) * bits));
            for (int k = 0; k < K; k++) {
                code[n][k] = (uint8_t)(nbt_rand_u64(&rs) & mask);
                qw[(k / per) * N + n] = (int32_t)((uint32_t)qw[(k / per) * N + n] | (uint32_t)code[n][k]
                                                                                        << ((k % per) * bits));
            }
        }
        for (int k = 0; k < K; k++) g_idx[k] = 0;
        nb_gptq_tensors t = {qw, qz, sc, g_idx};
        nb_gptq_layout l = {.bits = bits, .n_out = N, .k_in = K, .n_groups = 1, .v1 = true};
        float out[N * K];
        ck_assert_int_eq(nb_gptq_unpack_f32(&l, &t, out, "l", &ctx), NB_OK);
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) {
                int z = ((zero[n] - 1) & (int)mask) + 1; /* v1: stored zero - 1, read back + 1 */
                ck_assert_float_eq(out[n * K + k], nb_f16_to_f32(sc[n]) * (float)(code[n][k] - z));
            }
    }
    nb_gptq_layout l5 = {.bits = 5, .n_out = 32, .k_in = 32, .n_groups = 1};
    ck_assert_int_eq(nb_gptq_check(&l5, NULL, "model.layers.0.mlp.up_proj", &ctx), NB_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "model.layers.0.mlp.up_proj: GPTQ with 5 bits"));
    nb_gptq_layout l3 = {.bits = 3, .n_out = 32, .k_in = 32, .n_groups = 1};
    ck_assert_int_eq(nb_gptq_check(&l3, NULL, "x", &ctx), NB_OK); /* 32 codes in 3 words */
    l3.k_in = 48;
    ck_assert_int_eq(nb_gptq_check(&l3, NULL, "x", &ctx), NB_ERR_FORMAT);
    nb_gptq_layout lk = {.bits = 4, .n_out = 16, .k_in = 12, .n_groups = 1};
    ck_assert_int_eq(nb_gptq_check(&lk, NULL, "x", &ctx), NB_ERR_FORMAT);
    nb_ctx_free(&ctx);
}
END_TEST

/* nibble NF4 / NF4_DQ blocks -> bnb state: bnb's dequantization gives the blocks' values bit for bit,
 * also for importance-chosen scales (not the block maximum); super-blocks with different offsets refused. */
START_TEST(nf4_blocks_to_state) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const int64_t rows = 2;
    const int64_t k_nf4 = 128, k_dq = NB_NF4_DQ_SUPER;
    float *x = malloc((size_t)(rows * k_dq) * sizeof *x), *imp = malloc((size_t)k_dq * sizeof *imp);
    float *want = malloc((size_t)(rows * k_dq) * sizeof *want), *got = malloc((size_t)(rows * k_dq) * sizeof *got);
    uint32_t r = 7;
    for (int64_t i = 0; i < rows * k_dq; i++) {
        r = r * 1664525u + 1013904223u;
        x[i] = ((float)(r >> 8) / 16777216.0f - 0.5f) * (i % 97 == 0 ? 8.0f : 1.0f);
    }
    for (int64_t i = 0; i < k_dq; i++) imp[i] = 1.0f + (float)(i % 13);
    struct { nb_type t; int64_t k; size_t bytes; } cases[] = {
        {NB_TYPE_NF4, k_nf4, sizeof(nb_block_nf4) * (size_t)(rows * k_nf4 / NB_NF4_BLOCK)},
        {NB_TYPE_NF4_DQ, k_dq, sizeof(nb_block_nf4_dq) * (size_t)rows}};
    for (int c = 0; c < 2; c++) {
        void *blocks = malloc(cases[c].bytes);
        if (cases[c].t == NB_TYPE_NF4) nb_quantize_nf4(x, blocks, rows, cases[c].k, imp);
        else nb_quantize_nf4_dq(x, blocks, rows, cases[c].k, imp);
        uint64_t n = (uint64_t)(rows * cases[c].k);
        nb_type_get(cases[c].t)->to_f32(blocks, want, (int64_t)n);
        nb_nf4_state s;
        ck_assert_msg(nb_bnb_nf4_state_from_blocks(cases[c].t, blocks, n, &s, "w", &ctx) == NB_OK, "%s",
                      nb_errmsg(&ctx));
        ck_assert(s.double_quant == (cases[c].t == NB_TYPE_NF4_DQ) && s.blocksize == 64);
        ck_assert_int_eq(nb_nf4_dequantize_tensor(&s, got, &ctx), NB_OK);
        ck_assert_msg(memcmp(want, got, (size_t)n * sizeof *got) == 0, "%s: values differ", nb_type_name(cases[c].t));
        if (cases[c].t == NB_TYPE_NF4) {
            bool below_max = false; /* the importance search moved some scale off the block maximum */
            for (uint64_t b = 0; b < s.n_blocks; b++) {
                float m = 0;
                for (int j = 0; j < 64; j++) m = fmaxf(m, fabsf(x[b * 64 + (uint64_t)j]));
                below_max = below_max || s.absmax[b] != m;
            }
            ck_assert(below_max);
        } else {
            ((nb_block_nf4_dq *)blocks)[1].offset += 1e-3f;
            nb_nf4_state bad;
            ck_assert_int_eq(nb_bnb_nf4_state_from_blocks(cases[c].t, blocks, n, &bad, "w", &ctx), NB_ERR_UNSUPPORTED);
            ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "offset"));
            ck_assert_int_eq(nb_bnb_nf4_state_from_blocks(cases[c].t, blocks, n - 64, &bad, "w", &ctx), NB_ERR_INVALID);
        }
        nb_nf4_state_free(&s);
        free(blocks);
    }
    free(x), free(imp), free(want), free(got);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("quant/hf_pack");
    TCase *tc = tcase_create("hf_pack");
    tcase_add_test(tc, quant_state_render);
    tcase_add_test(tc, quant_state_bad);
    tcase_add_test(tc, bnb_state_load);
    tcase_add_test(tc, int4_unpack);
    tcase_add_test(tc, gptq_bits);
    tcase_add_test(tc, nf4_blocks_to_state);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
