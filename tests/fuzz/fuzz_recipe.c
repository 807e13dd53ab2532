/* tests/fuzz/fuzz_recipe.c — libFuzzer target for recipes (pipeline/recipe.h).
 *
 * The input is parsed as a recipe with two variables set. A recipe that
 * parses must have its required fields (name, source, output file) and a
 * target of a known kind; parsing the substituted text again (no variables
 * left to expand, `$` doubled) must give the same name and source. */
#include "pipeline/recipe.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 16)) return 0;
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    ctx.log_level = NB_LOG_ERROR;
    const nb_recipe_var vars[] = {{"SOURCE", "m.gguf"}, {"CALIB", "c.txt"}};
    nb_recipe r;
    if (nb_recipe_parse(text, "fuzz/r.json", vars, 2, &r, &ctx) == NB_OK) {
        if (!r.name || !r.source || !r.out_file || r.target > NB_TARGET_BUDGET) abort();
        /* the substituted text, with '$' escaped, parses to the same recipe */
        size_t n = strlen(r.text), k = 0;
        char *esc = malloc(2 * n + 1);
        if (esc) {
            for (size_t i = 0; i < n; i++) {
                if (r.text[i] == '$') esc[k++] = '$';
                esc[k++] = r.text[i];
            }
            esc[k] = 0;
            nb_recipe r2;
            if (nb_recipe_parse(esc, "fuzz/r.json", NULL, 0, &r2, &ctx) != NB_OK || strcmp(r2.name, r.name) ||
                strcmp(r2.source, r.source))
                abort();
            nb_recipe_free(&r2);
            free(esc);
        }
    }
    nb_recipe_free(&r);
    nb_ctx_free(&ctx);
    free(text);
    return 0;
}
