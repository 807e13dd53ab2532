/* tests/formats/test_json_strict.c — the strict scanner formats/ uses before
 * cJSON: exact number tokens in document order, RFC 8259 syntax, nibble's
 * limits, messages with the caller's file/part/offset. */
#include "formats/json_strict.h"
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static nb_status scan(const char *doc, nb_json_numbers *out, nb_ctx *ctx) {
    return nb_json_scan_strict(doc, strlen(doc), "f.json", "header", 8, out, ctx);
}

START_TEST(numbers_in_order) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_json_numbers nums;
    const char *doc = " {\"a\": [0, 18446744073709551615, 18446744073709551616], \"b\": {\"c\": -1, \"d\": 1.5},"
                      " \"e\": 2e3, \"s\": \"\\u00e9\\ud83d\\ude00\", \"t\": [true, false, null], \"z\": 7}\n";
    ck_assert_msg(scan(doc, &nums, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    const uint64_t want[] = {0, UINT64_MAX, NB_JSON_NOT_UINT, NB_JSON_NOT_UINT, NB_JSON_NOT_UINT,
                             NB_JSON_NOT_UINT, 7};
    /* UINT64_MAX itself is a valid u64 but equals the marker: callers treat it as too large anyway */
    ck_assert_uint_eq(nums.n, sizeof want / sizeof *want);
    for (size_t i = 0; i < nums.n; i++) ck_assert_uint_eq(nums.v[i], want[i]);
    nb_json_numbers_free(&nums);
    ck_assert_ptr_null(nums.v);
    nb_json_numbers_free(NULL);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(rejects) {
    static const struct { const char *doc; nb_status code; const char *msg; } bad[] = {
        {"{} x", NB_ERR_FORMAT, "trailing bytes after the header object"},
        {"{\"a\":1,}", NB_ERR_FORMAT, "expected a string key"},
        {"{\"a\" 1}", NB_ERR_FORMAT, "expected ':'"},
        {"[1 2]", NB_ERR_FORMAT, "expected ',' or ']'"},
        {"{\"a\":[1,2", NB_ERR_FORMAT, "unexpected end of header"},
        {"\"tab\there\"", NB_ERR_FORMAT, "control character 0x09"},
        {"\"\\x\"", NB_ERR_FORMAT, "invalid escape"},
        {"\"\\ud800\"", NB_ERR_FORMAT, "lone high surrogate"},
        {"\"\\udc00\"", NB_ERR_FORMAT, "lone low surrogate"},
        {"\"\\u0000\"", NB_ERR_UNSUPPORTED, "escaped NUL"},
        {"01", NB_ERR_FORMAT, "trailing bytes"},
        {"-", NB_ERR_FORMAT, "invalid number"},
        {"1.", NB_ERR_FORMAT, "invalid number"},
        {"tru", NB_ERR_FORMAT, "unexpected character 't'"},
        {"1234567890123456789012345678901234567890123456789012345678901234", NB_ERR_UNSUPPORTED, "longer than 63"},
    };
    nb_ctx ctx;
    nbt_ctx(&ctx);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        nb_json_numbers nums;
        ck_assert_int_eq(scan(bad[i].doc, &nums, &ctx), bad[i].code);
        ck_assert_msg(strstr(nb_errmsg(&ctx), bad[i].msg) != NULL, "%s: %s", bad[i].doc, nb_errmsg(&ctx));
        ck_assert_msg(strncmp(nb_errmsg(&ctx), "f.json: header: invalid JSON at byte offset ", 44) == 0, "%s",
                      nb_errmsg(&ctx));
        ck_assert_ptr_null(nums.v);
        ck_assert_uint_eq(nums.n, 0);
    }
    /* offsets are reported relative to the file (base 8) */
    nb_json_numbers nums;
    ck_assert_int_eq(scan("{} x", &nums, &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "byte offset 11"));
    /* nesting limit */
    char deep[2 * (NB_JSON_MAX_DEPTH + 2) + 1];
    size_t k = 0;
    for (int d = 0; d < NB_JSON_MAX_DEPTH + 2; d++) deep[k++] = '[';
    for (int d = 0; d < NB_JSON_MAX_DEPTH + 2; d++) deep[k++] = ']';
    deep[k] = 0;
    ck_assert_int_eq(scan(deep, &nums, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "nesting deeper than"));
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(utf8) {
    size_t bad = 99;
    ck_assert(nb_utf8_valid((const unsigned char *)"a\xc3\xa9\xf0\x9f\x98\x80", 7, &bad));
    ck_assert(!nb_utf8_valid((const unsigned char *)"ab\xc0\xaf", 4, &bad)); /* overlong */
    ck_assert_uint_eq(bad, 2);
    ck_assert(!nb_utf8_valid((const unsigned char *)"\xed\xa0\x80", 3, &bad)); /* surrogate */
    ck_assert_uint_eq(bad, 0);
    ck_assert(!nb_utf8_valid((const unsigned char *)"x\xf4\x90\x80\x80", 5, &bad)); /* > U+10FFFF */
    ck_assert_uint_eq(bad, 1);
    ck_assert(!nb_utf8_valid((const unsigned char *)"\xe2\x82", 2, &bad)); /* truncated */
}
END_TEST

START_TEST(duplicate_keys_last_wins) {
    cJSON *j = cJSON_Parse("{\"a\": 1, \"b\": {\"x\": 1, \"x\": [2, {\"y\": 0, \"y\": 5}]}, \"a\": 3, \"a\": 4, \"c\": 0}");
    ck_assert_ptr_nonnull(j);
    ck_assert_uint_eq(nb_json_last_wins(j), 4);
    ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(j, "a")->valueint, 4);
    ck_assert_int_eq(cJSON_GetArraySize(j), 3);
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "b"), "x");
    ck_assert(cJSON_IsArray(x));
    ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(x, 1), "y")->valueint, 5);
    char *out = cJSON_PrintUnformatted(j);
    ck_assert_str_eq(out, "{\"b\":{\"x\":[2,{\"y\":5}]},\"a\":4,\"c\":0}");
    free(out);
    cJSON_Delete(j);
}
END_TEST

int main(void) {
    Suite *s = suite_create("json_strict");
    TCase *tc = tcase_create("json_strict");
    tcase_add_test(tc, numbers_in_order);
    tcase_add_test(tc, rejects);
    tcase_add_test(tc, utf8);
    tcase_add_test(tc, duplicate_keys_last_wins);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
