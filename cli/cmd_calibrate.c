/* cli/cmd_calibrate.c — `nibble calibrate MODEL --calib FILE -o STATS.gguf [options]`. */
#include "calib/calibrate.h"
#include "cli/cli.h"
#include "formats/json_strict.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const nb_opt_choice CALIB_FORMATS[] = {
    {"auto", NB_CORPUS_AUTO}, {"text", NB_CORPUS_TEXT}, {"ids", NB_CORPUS_IDS}, {NULL, 0}};

static void print_json(const char *model, const char *calib, const char *out, const nb_calib_result *r,
                       const nb_imatrix *im, const nb_routing *rt) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return;
    cJSON_AddStringToObject(j, "model", model);
    cJSON_AddStringToObject(j, "calib", calib);
    cJSON_AddStringToObject(j, "output", out);
    cJSON_AddNumberToObject(j, "chunks", (double)r->n_chunks);
    cJSON_AddNumberToObject(j, "chunk_size", im->chunk_size);
    cJSON_AddNumberToObject(j, "tokens", (double)r->n_tokens);
    cJSON_AddNumberToObject(j, "seconds", r->seconds);
    cJSON_AddNumberToObject(j, "entries", (double)im->n);
    cJSON_AddNumberToObject(j, "experts_without_tokens", (double)r->n_zero_experts);
    cJSON_AddNumberToObject(j, "experts_without_data", (double)r->n_zero_data);
    cJSON *layers = cJSON_AddArrayToObject(j, "moe_layers");
    for (int L = 0; L < rt->n_layer && layers; L++) {
        const nb_routing_layer *l = &rt->layers[L];
        if (!l->n_expert) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "layer", L);
        cJSON_AddNumberToObject(o, "tokens", l->n_tok);
        cJSON *a = cJSON_AddArrayToObject(o, "tokens_per_expert");
        for (int e = 0; e < l->n_expert && a; e++) cJSON_AddItemToArray(a, cJSON_CreateNumber(l->n_sel[e]));
        cJSON_AddItemToArray(layers, o);
    }
    char *s = nb_json_print(j, false);
    if (s) { puts(s); free(s); }
    cJSON_Delete(j);
}

int nb_cmd_calibrate(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    const char *out = NULL;
    bool dat = false, json = false;
    nb_calib_opts o = {0};
    int kind = NB_CORPUS_AUTO;
    const nb_opt opts[] = {
        {.name = "calib", .type = NB_OPT_STR, .dest = &o.calib_path, .meta = "FILE", .flags = NB_OPT_REQUIRED,
         .help = "UTF-8 text (tokenized with the model's tokenizer) or token ids\n"
                 "(integers separated by spaces/commas, detected from the content)"},
        {.name = "calib-format", .type = NB_OPT_CHOICE, .dest = &kind, .choices = CALIB_FORMATS, .meta = "F",
         .help = "auto (default: detected from the content), text or ids"},
        {.name = "calib-tokens", .type = NB_OPT_U64, .dest = &o.corpus.max_tokens, .meta = "N", .lo = 1,
         .hi = (double)UINT64_MAX,
         .help = "token budget: ceil(N / ctx) chunks drawn as a seeded random sample\n"
                 "(default: every whole chunk of the text, in order)"},
        {.name = "ctx", .type = NB_OPT_INT, .dest = &o.corpus.n_ctx, .meta = "N", .lo = 2, .hi = 1 << 20,
         .help = "tokens per chunk, each evaluated from an empty cache (default 512)"},
        {.name = "seed", .type = NB_OPT_U64, .dest = &o.corpus.seed, .meta = "S", .help = "sample seed (default 0)"},
        {.name = "process-output", .type = NB_OPT_FLAG, .dest = &o.process_output,
         .help = "also collect output.weight (llama-imatrix --process-output)"},
        {.name = "all-experts", .type = NB_OPT_FLAG, .dest = &o.all_experts,
         .help = "MoE: every expert also sees the tokens the router did not give it\n"
                 "(statistics only; the routing statistics stay the router's)"},
        {.name = "output", .short_name = 'o', .type = NB_OPT_STR, .dest = &out, .meta = "FILE",
         .flags = NB_OPT_OUTPUT | NB_OPT_REQUIRED,
         .help = "output file (required)"},
        {.name = "dat", .type = NB_OPT_FLAG, .dest = &dat,
         .help = "write llama.cpp's legacy .dat format instead (no routing statistics)"},
        {.name = "json", .type = NB_OPT_FLAG, .dest = &json, .help = "print a JSON summary on stdout"},
    };
    const nb_cmd_spec spec = {
        .name = "calibrate",
        .usage = "MODEL --calib FILE -o STATS.gguf [--calib-tokens N] [--ctx N]\n"
                 "[--seed S] [--calib-format auto|text|ids] [--process-output] [--all-experts]\n"
                 "[--dat] [--json] [--threads N] [--quiet]",
        .about = "Run the model on calibration text and write its importance matrix (per weight tensor:\n"
                 "sum of squared inputs per column, sum of inputs and token counts; per expert for MoE)\n"
                 "in llama.cpp's GGUF imatrix format, which `nibble quantize --imatrix` and\n"
                 "`llama-quantize --imatrix` read. MoE models also get expert routing statistics\n"
                 "(selection frequency, mean gate weight, mean router-weighted output norm) in the same file.\n"
                 "Statistics are identical for any --threads value.",
        NB_OPTS_TABLE(opts),
        .epilogue = "exit codes: 0 ok, 1 usage, 2 bad input (text too short, NaN activations, unsupported\n"
                    "model), 3 I/O",
        NB_OPTS_ONE_POS("MODEL"),
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    const char *model = args.pos[0];
    if (rc == NB_OPTS_RUN)
        rc = nb_cli_check_paths("calibrate", &ctx, NB_CLI_PATHS(model, o.calib_path), NB_CLI_PATHS(out));
    if (rc != NB_OPTS_RUN) goto done;
    o.corpus.kind = (nb_corpus_kind)kind;
    nb_imatrix im;
    nb_routing rt;
    nb_calib_result res;
    nb_status st = nb_calibrate(model, &o, &im, &rt, &res, &ctx);
    if (st == NB_OK) {
        if (dat) {
            if (rt.n_layer && im.n_extra) NB_WARN(&ctx, "%s: the .dat format cannot hold the expert routing statistics", out);
            st = nb_imatrix_write_dat(&im, out, &ctx);
        } else {
            st = nb_imatrix_write_gguf(&im, out, &ctx);
        }
    }
    if (st != NB_OK) rc = nb_cli_fail("calibrate", &ctx, st);
    else {
        rc = NB_EXIT_OK;
        if (!ctx.quiet)
            fprintf(json ? stderr : stdout, "calibrated on %zu chunks x %u tokens (%llu tokens) in %.2f s: %zu entries%s -> %s\n",
                    res.n_chunks, im.chunk_size, (unsigned long long)res.n_tokens, res.seconds, im.n,
                    res.n_zero_data ? " (some experts saw no token: see warnings; --all-experts gives them data)"
                                    : "", out);
        if (json) print_json(model, o.calib_path, out, &res, &im, &rt);
    }
    nb_imatrix_free(&im);
    nb_routing_free(&rt);
done:
    nb_ctx_free(&ctx);
    return rc;
}
