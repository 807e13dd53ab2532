/* formats/kv: typed metadata sets. */
#include "formats/kv.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(set_get_replace) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_kvset s;
    nb_kvset_init(&s);
    ck_assert_int_eq(nb_kv_set_str(&s, "general.architecture", "llama", &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_u32(&s, "llama.block_count", 32, &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_i32(&s, "neg", -5, &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_f32(&s, "eps", 1e-5f, &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_bool(&s, "flag", true, &ctx), NB_OK);
    ck_assert_str_eq(nb_kv_get_str(&s, "general.architecture"), "llama");
    uint64_t u;
    int64_t i;
    double f;
    bool b;
    ck_assert(nb_kv_get_u64(&s, "llama.block_count", &u) && u == 32);
    ck_assert(!nb_kv_get_u64(&s, "neg", &u)); /* negative does not fit */
    ck_assert(nb_kv_get_i64(&s, "neg", &i) && i == -5);
    ck_assert(nb_kv_get_f64(&s, "eps", &f) && (float)f == 1e-5f);
    ck_assert(nb_kv_get_bool(&s, "flag", &b) && b);
    ck_assert(!nb_kv_get_u64(&s, "flag", &u)); /* bool is not an integer */
    ck_assert_ptr_null(nb_kv_get_str(&s, "llama.block_count"));
    /* replacing keeps position and type changes */
    ck_assert_int_eq(nb_kv_set_u64(&s, "llama.block_count", 40, &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_find(&s, "llama.block_count"), 1);
    ck_assert_int_eq(nb_kv_get(&s, "llama.block_count")->type, NB_KV_U64);
    ck_assert_uint_eq(s.n, 5);
    nb_kv_remove(&s, "neg");
    ck_assert_uint_eq(s.n, 4);
    ck_assert_int_eq(nb_kv_find(&s, "eps"), 2);
    nb_kvset_free(&s);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(arrays_deep_copy) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_kvset s, c;
    nb_kvset_init(&s);
    nb_kvset_init(&c);
    const char *toks[] = {"<s>", "", "hello"};
    float scores[] = {0.0f, -1.5f, 2.25f};
    ck_assert_int_eq(nb_kv_set_arr_str(&s, "tokenizer.ggml.tokens", 3, toks, &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_arr(&s, "tokenizer.ggml.scores", NB_KV_F32, 3, scores, &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_arr(&s, "empty", NB_KV_I32, 0, NULL, &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_set_arr(&s, "bad", NB_KV_STRING, 1, toks, &ctx), NB_ERR_INVALID);
    /* nested: array of two arrays */
    nb_kv_value inner[2];
    memset(inner, 0, sizeof inner);
    int32_t a0[] = {1, 2}, a1[] = {3};
    inner[0].type = inner[1].type = NB_KV_ARRAY;
    inner[0].v.arr.elem = inner[1].v.arr.elem = NB_KV_I32;
    inner[0].v.arr.n = 2; inner[0].v.arr.data = a0;
    inner[1].v.arr.n = 1; inner[1].v.arr.data = a1;
    nb_kv_value outer = {.type = NB_KV_ARRAY};
    outer.v.arr.elem = NB_KV_ARRAY;
    outer.v.arr.n = 2;
    outer.v.arr.data = inner;
    ck_assert_int_eq(nb_kv_set(&s, "nested", &outer, &ctx), NB_OK);
    ck_assert_int_eq(nb_kvset_copy(&c, &s, &ctx), NB_OK);
    nb_kvset_free(&s); /* the copy must not share anything */
    const nb_kv_value *t = nb_kv_get(&c, "tokenizer.ggml.tokens");
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(t->v.arr.n, 3);
    ck_assert_str_eq(((nb_str *)t->v.arr.data)[2].ptr, "hello");
    ck_assert_uint_eq(((nb_str *)t->v.arr.data)[1].len, 0);
    const nb_kv_value *sc = nb_kv_get(&c, "tokenizer.ggml.scores");
    ck_assert(((float *)sc->v.arr.data)[2] == 2.25f);
    const nb_kv_value *n = nb_kv_get(&c, "nested");
    const nb_kv_value *n1 = (const nb_kv_value *)n->v.arr.data + 1;
    ck_assert_int_eq(((int32_t *)n1->v.arr.data)[0], 3);
    char buf[200];
    nb_kv_value_fmt(t, buf, sizeof buf);
    ck_assert_ptr_nonnull(strstr(buf, "[3 x string]"));
    nb_kvset_free(&c);
    nb_ctx_free(&ctx);
}
END_TEST

/* The hash index (formats/kv.h): many keys, replacing, removing (which
 * moves positions), and items appended behind the index's back as the GGUF
 * reader does; every key stays findable at its position, order kept. */
START_TEST(many_keys_indexed) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_kvset s;
    nb_kvset_init(&s);
    enum { N = 20000 };
    char k[32];
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "x.key.%d", i);
        ck_assert_int_eq(nb_kv_set_u32(&s, k, (uint32_t)i, &ctx), NB_OK);
    }
    ck_assert_int_eq(nb_kv_set_u32(&s, "x.key.7", 70, &ctx), NB_OK); /* replace in place */
    ck_assert_uint_eq(s.n, N);
    for (int i = 0; i < N; i += 3) { /* remove a third: positions move */
        snprintf(k, sizeof k, "x.key.%d", i);
        nb_kv_remove(&s, k);
    }
    ck_assert_int_eq(nb_kv_set_u32(&s, "late", 1, &ctx), NB_OK);
    /* appended directly, unindexed, then a setter */
    nb_kv_value v = {.type = NB_KV_U32};
    v.v.u = 5;
    nb_kv direct = {strdup("direct"), v};
    if (s.n == s.cap) {
        s.cap *= 2;
        s.items = realloc(s.items, s.cap * sizeof *s.items);
    }
    s.items[s.n++] = direct;
    ck_assert_int_eq(nb_kv_find(&s, "direct"), (long)s.n - 1);
    ck_assert_int_eq(nb_kv_set_u32(&s, "after", 2, &ctx), NB_OK);
    ck_assert_int_eq(nb_kv_find(&s, "direct"), (long)s.n - 2);
    size_t pos = 0;
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "x.key.%d", i);
        long at = nb_kv_find(&s, k);
        if (i % 3 == 0) { ck_assert_int_eq(at, -1); continue; }
        ck_assert_int_eq(at, (long)pos++);
        uint64_t u;
        ck_assert(nb_kv_get_u64(&s, k, &u));
        ck_assert_uint_eq(u, i == 7 ? 70 : (uint64_t)i);
    }
    ck_assert_int_eq(nb_kv_find(&s, "late"), (long)pos);
    ck_assert_int_eq(nb_kv_find(&s, "nope"), -1);
    nb_kvset_free(&s);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("formats/kv");
    TCase *tc = tcase_create("kv");
    tcase_add_test(tc, set_get_replace);
    tcase_add_test(tc, arrays_deep_copy);
    tcase_add_test(tc, many_keys_indexed);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
