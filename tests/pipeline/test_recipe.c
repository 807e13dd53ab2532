/* pipeline/recipe: parsing recipes.
 *
 * Checks: variables are substituted (and `$$` is a literal `$`), an unset or
 * unterminated variable is an error naming it; relative paths are anchored
 * at the recipe's directory, absolute ones kept; defaults (output file name,
 * bundle on); every section's keys and types are checked with the key path in
 * the message; combinations a build cannot run (method without calibration
 * text, a gate without a validation text, two targets) are refused; outputs.formats
 * gives the GGUF and HF directories with their default names, and refuses an unknown
 * format, a format twice, a name that is not plain or that another output takes. */
#include "pipeline/recipe.h"
#include "testutil.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static const nb_recipe_var k_vars[] = {{"SOURCE", "/models/m.gguf"}, {"CALIB", "c.txt"}};

START_TEST(substitution) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    char *out = NULL;
    ck_assert_int_eq(nb_recipe_subst("a ${SOURCE} b $$ ${CALIB}", "t", k_vars, 2, &out, &ctx), NB_OK);
    ck_assert_str_eq(out, "a /models/m.gguf b $ c.txt");
    free(out);
    ck_assert_int_eq(nb_recipe_subst("n ${CTX:-512} ${SOURCE:-x} ${E:-}.", "t", k_vars, 2, &out, &ctx), NB_OK);
    ck_assert_str_eq(out, "n 512 /models/m.gguf .");
    free(out);
    ck_assert_int_eq(nb_recipe_subst("${NOPE}", "t", k_vars, 2, &out, &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "${NOPE} is not set"));
    ck_assert_int_eq(nb_recipe_subst("x ${SOURCE", "t", k_vars, 2, &out, &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(nb_errmsg(&ctx), "unterminated"));
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(full_recipe) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *text =
        "{\"nibble_recipe\":1,\"name\":\"v1\",\"source\":\"${SOURCE}\",\"adapters\":[\"ad\",{\"path\":\"/abs/a2\",\"weight\":0.5}],"
        "\"prune\":{\"keep\":4},\"calibration\":{\"text\":\"${CALIB}\",\"ctx\":256,\"tokens\":1000},\"method\":\"gptq\","
        "\"target\":{\"mix\":\"q4_k_m\"},\"rules\":[\"output.weight=q8_0\"],"
        "\"validation\":{\"text\":\"e.txt\",\"chunks\":2,\"gate\":{\"max_kld\":0.1,\"min_same_top_pct\":90}}}";
    nb_recipe r;
    ck_assert_msg(nb_recipe_parse(text, "dir/sub/r.json", k_vars, 2, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert_str_eq(r.name, "v1");
    ck_assert_str_eq(r.source, "/models/m.gguf");
    ck_assert_uint_eq(r.n_adapters, 2);
    ck_assert_str_eq(r.adapters[0].path, "dir/sub/ad");
    ck_assert_str_eq(r.adapters[1].path, "/abs/a2");
    ck_assert(r.adapters[0].weight == 1.0 && r.adapters[1].weight == 0.5);
    ck_assert(r.prune && r.prune_keep == 4);
    ck_assert_str_eq(r.calib_text, "dir/sub/c.txt");
    ck_assert_int_eq(r.calib_ctx, 256);
    ck_assert_str_eq(r.method, "gptq");
    ck_assert_int_eq(r.target, NB_TARGET_MIX);
    ck_assert_str_eq(r.target_mix, "q4_k_m");
    ck_assert_uint_eq(r.n_rules, 1);
    ck_assert(r.gate_kld && !r.gate_ppl && r.gate_top && r.max_kld == 0.1);
    ck_assert_str_eq(r.out_file, "v1.gguf");
    ck_assert(r.bundle);
    nb_recipe_free(&r);
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(errors_name_the_key) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *head = "{\"nibble_recipe\":1,\"name\":\"v\",\"source\":\"s\",";
    struct { const char *tail, *want; } cases[] = {
        {"\"target\":{\"mix\":\"q8_0\"},\"extra\":1}", "extra: unknown key"},
        {"\"target\":{\"mix\":\"q8_0\",\"plan\":\"p\"}}", "exactly one of"},
        {"\"target\":{}}", "exactly one of"},
        {"\"target\":{\"mix\":\"q8_0\"},\"prune\":{\"keep\":2,\"keep_ratio\":0.5},\"calibration\":{\"text\":\"c\"}}", "exactly one of keep"},
        {"\"target\":{\"mix\":\"q8_0\"},\"prune\":{\"keep\":2}}", "prune needs calibration.text"},
        {"\"target\":{\"mix\":\"q8_0\"},\"method\":\"imatrix\"}", "needs calibration.text"},
        {"\"target\":{\"mix\":\"q8_0\"},\"method\":\"awq\"}", "method: expected"},
        {"\"target\":{\"mix\":\"q8_0\"},\"validation\":{\"text\":\"e\",\"gate\":{\"max_kld\":\"x\"}}}",
         "validation.gate.max_kld: expected a number"},
        {"\"target\":{\"mix\":\"q8_0\"},\"validation\":{\"text\":\"e\",\"gate\":{\"max_kl\":1}}}",
         "validation.gate.max_kl: unknown key"},
        {"\"target\":{\"mix\":\"q8_0\"},\"calibration\":{\"text\":\"c\",\"ctx\":1.5}}", "calibration.ctx: expected an integer"},
        {"\"target\":{\"mix\":\"q8_0\"},\"outputs\":{\"file\":\"../x.gguf\"}}", "outputs.file"},
        {"\"target\":{\"mix\":\"q8_0\"},\"adapters\":[3]}", "adapters[0]"},
        {"\"target\":{\"mix\":\"q8_0\"},\"qlora\":1}", "qlora: expected true or false"},
        {"\"target\":{\"size\":\"1M\"},\"prune\":{\"keep\":\"most\"},\"calibration\":{\"text\":\"c\"}}",
         "prune.keep: expected an integer or \"auto\""},
        {"\"target\":{\"mix\":\"q8_0\"},\"prune\":{\"keep\":\"auto\"},\"calibration\":{\"text\":\"c\"},"
         "\"method\":\"imatrix\"}", "needs target.size or target.budget"},
        {"\"target\":{\"size\":\"1M\"},\"prune\":{\"keep\":\"auto\"},\"calibration\":{\"text\":\"c\"}}",
         "needs method \"imatrix\""},
        {"\"target\":{\"mix\":\"q8_0\",\"calibrate\":\"t\"}}", "\"calibrate\" calibrates the planner"},
        {"\"target\":{\"size\":\"1M\",\"calibrate\":3}}", "target.calibrate: expected"},
        {"\"target\":{\"size\":\"1M\",\"calibrate\":\"t\",\"calibrate_ctx\":2}}", "target.calibrate_ctx: expected"},
        {"\"target\":{\"mix\":\"q8_0\"},\"outputs\":{\"formats\":[]}}", "outputs.formats: expected a non-empty array"},
        {"\"target\":{\"mix\":\"q8_0\"},\"outputs\":{\"formats\":\"gptq\"}}", "outputs.formats: expected a non-empty array"},
        {"\"target\":{\"mix\":\"q8_0\"},\"outputs\":{\"formats\":[\"gguf\",3]}}", "outputs.formats[1]: expected a format"},
        {"\"target\":{\"mix\":\"q8_0\"},\"outputs\":{\"formats\":[\"safetensors\"]}}",
         "outputs.formats[0]: unknown format 'safetensors'"},
        {"\"target\":{\"mix\":\"q8_0\"},\"outputs\":{\"formats\":[{\"format\":\"awq\",\"dir\":\"a\"}]}}",
         "outputs.formats[0].dir: unknown key"},
        {"\"target\":{\"mix\":\"q8_0\"},\"outputs\":{\"formats\":[{\"name\":\"a\"}]}}", "outputs.formats[0].format: expected"},
        {"\"target\":{\"mix\":\"q8_0\"},\"outputs\":{\"formats\":[\"gguf\",{\"format\":\"gguf\"}]}}", "'gguf' is listed twice"},
        {"\"target\":{\"mix\":\"q8_0\"},\"outputs\":{\"formats\":[\"awq\",\"hf\",\"awq\"]}}", "formats[2]: 'awq' is listed twice"},
        {"\"target\":{\"mix\":\"q8_0\"},\"outputs\":{\"file\":\"a.gguf\",\"formats\":[{\"format\":\"gguf\",\"name\":\"b.gguf\"}]}}",
         "already named by outputs.file"},
        {"\"target\":{\"mix\":\"q8_0\"},\"outputs\":{\"formats\":[{\"format\":\"hf\",\"name\":\".hidden\"}]}}",
         "outputs.formats[0].name: a plain name"},
        {"\"target\":{\"mix\":\"q8_0\"},\"outputs\":{\"file\":\"m\",\"formats\":[\"gguf\",{\"format\":\"hf\",\"name\":\"m\"}]}}",
         "the name 'm' is used twice"},
        {"\"target\":{\"mix\":\"q8_0\"},\"outputs\":{\"formats\":[{\"format\":\"hf\",\"name\":\"v.tar.zst\"}]}}",
         "the name 'v.tar.zst' is used twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char text[1024];
        snprintf(text, sizeof text, "%s%s", head, cases[i].tail);
        nb_recipe r;
        nb_status st = nb_recipe_parse(text, "r.json", NULL, 0, &r, &ctx);
        ck_assert_msg(st == NB_ERR_FORMAT || st == NB_ERR_RANGE, "case %zu: status %d", i, st);
        ck_assert_msg(strstr(nb_errmsg(&ctx), cases[i].want) && strstr(nb_errmsg(&ctx), "r.json"), "case %zu: %s", i,
                      nb_errmsg(&ctx));
        nb_recipe_free(&r);
    }
    nb_ctx_free(&ctx);
}
END_TEST

START_TEST(prune_auto) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *text = "{\"nibble_recipe\":1,\"name\":\"v\",\"source\":\"s\",\"prune\":{\"keep\":\"auto\",\"criterion\":"
                       "\"freq\"},\"calibration\":{\"text\":\"c\"},\"method\":\"imatrix\",\"target\":{\"size\":\"2MiB\"}}";
    nb_recipe r;
    ck_assert_msg(nb_recipe_parse(text, "r.json", NULL, 0, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert(r.prune && r.prune_auto && r.prune_keep == 0);
    ck_assert_str_eq(r.prune_criterion, "freq");
    ck_assert_int_eq(r.target, NB_TARGET_SIZE);
    ck_assert_uint_eq(r.target_bytes, 2u << 20);
    nb_recipe_free(&r);
    nb_ctx_free(&ctx);
}
END_TEST

/* outputs.formats: the GGUF and HF directories, default names, the GGUF's name from an object. */
START_TEST(outputs_formats) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *head = "{\"nibble_recipe\":1,\"name\":\"v\",\"source\":\"s\",\"target\":{\"mix\":\"int4-g128\"}";
    char text[512];
    nb_recipe r;
    snprintf(text, sizeof text, "%s}", head); /* no outputs: the GGUF alone */
    ck_assert_msg(nb_recipe_parse(text, "r.json", NULL, 0, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert(r.gguf && r.n_outputs == 0 && r.bundle);
    nb_recipe_free(&r);
    snprintf(text, sizeof text, "%s,\"outputs\":{\"formats\":[\"gguf\",\"gptq\",{\"format\":\"bnb-nf4\",\"name\":\"b\"}],"
             "\"bundle\":false}}", head);
    ck_assert_msg(nb_recipe_parse(text, "r.json", NULL, 0, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert(r.gguf && !r.bundle);
    ck_assert_uint_eq(r.n_outputs, 2);
    ck_assert_int_eq(r.outputs[0].format, NB_HF_GPTQ);
    ck_assert_str_eq(r.outputs[0].name, "v-gptq");
    ck_assert_uint_eq(r.outputs[0].index, 1);
    ck_assert_int_eq(r.outputs[1].format, NB_HF_BNB_NF4);
    ck_assert_str_eq(r.outputs[1].name, "b");
    ck_assert_uint_eq(r.outputs[1].index, 2);
    ck_assert_str_eq(r.out_file, "v.gguf");
    nb_recipe_free(&r);
    snprintf(text, sizeof text, "%s,\"outputs\":{\"formats\":[\"awq\"]}}", head); /* no GGUF among them */
    ck_assert_msg(nb_recipe_parse(text, "r.json", NULL, 0, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert(!r.gguf && r.n_outputs == 1 && r.outputs[0].format == NB_HF_AWQ);
    nb_recipe_free(&r);
    snprintf(text, sizeof text, "%s,\"outputs\":{\"formats\":[\"hf\",{\"format\":\"gguf\",\"name\":\"m.gguf\"}]}}", head);
    ck_assert_msg(nb_recipe_parse(text, "r.json", NULL, 0, &r, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    ck_assert(r.gguf && r.n_outputs == 1 && r.outputs[0].format == NB_HF_PLAIN);
    ck_assert_str_eq(r.out_file, "m.gguf");
    ck_assert_str_eq(r.outputs[0].name, "v-hf");
    nb_recipe_free(&r);
    nb_ctx_free(&ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("recipe");
    TCase *tc = tcase_create("recipe");
    tcase_add_test(tc, substitution);
    tcase_add_test(tc, full_recipe);
    tcase_add_test(tc, errors_name_the_key);
    tcase_add_test(tc, prune_auto);
    tcase_add_test(tc, outputs_formats);
    suite_add_tcase(s, tc);
    return nbt_run_suite(s);
}
