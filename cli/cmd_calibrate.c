/* cli/cmd_calibrate.c — `nibble calibrate MODEL --calib FILE -o STATS.gguf [options]`. */
#include "calib/calibrate.h"
#include "cli/cli.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(FILE *f) {
    fputs("usage: nibble calibrate MODEL --calib FILE -o STATS.gguf [--calib-tokens N] [--ctx N]\n"
          "                        [--seed S] [--calib-format auto|text|ids] [--process-output]\n"
          "                        [--dat] [--json] [--threads N] [--quiet]\n\n"
          "Run the model on calibration text and write its importance matrix (per weight tensor:\n"
          "sum of squared inputs per column, sum of inputs and token counts; per expert for MoE)\n"
          "in llama.cpp's GGUF imatrix format, which `nibble quantize --imatrix` and\n"
          "`llama-quantize --imatrix` read. MoE models also get expert routing statistics\n"
          "(selection frequency, mean gate weight, mean router-weighted output norm) in the same file.\n"
          "Statistics are identical for any --threads value.\n\n"
          "  --calib FILE         UTF-8 text (tokenized with the model's tokenizer) or token ids\n"
          "                       (integers separated by spaces/commas, detected from the content)\n"
          "  --calib-tokens N     token budget: ceil(N / ctx) chunks drawn as a seeded random sample\n"
          "                       (default: every whole chunk of the text, in order)\n"
          "  --ctx N              tokens per chunk, each evaluated from an empty cache (default 512)\n"
          "  --seed S             sample seed (default 0)\n"
          "  --process-output     also collect output.weight (llama-imatrix --process-output)\n"
          "  -o, --output FILE    output file (required)\n"
          "  --dat                write llama.cpp's legacy .dat format instead (no routing statistics)\n"
          "  --json               print a JSON summary on stdout\n\n"
          "exit codes: 0 ok, 1 usage, 2 bad input (text too short, NaN activations, unsupported\n"
          "model), 3 I/O\n",
          f);
}

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
    char *s = cJSON_PrintUnformatted(j);
    if (s) { puts(s); free(s); }
    cJSON_Delete(j);
}

int nb_cmd_calibrate(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    const char *model = NULL, *out = NULL;
    bool dat = false, json = false;
    nb_calib_opts o = {0};
    int rc = NB_EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        int c = nb_cli_common_opt(&ctx, argc, argv, &i);
        if (c < 0) goto done;
        if (c) continue;
        const char *a = argv[i];
        unsigned long long v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { help(stdout); rc = NB_EXIT_OK; goto done; }
        if (!strcmp(a, "--dat")) dat = true;
        else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--process-output")) o.process_output = true;
        else if (!strcmp(a, "--all-experts")) {
            fputs("nibble calibrate: --all-experts is not available yet (the engine has no option to route\n"
                  "calibration tokens through every expert); experts without tokens get neutral weights\n", stderr);
            goto done;
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && i + 1 < argc) out = argv[++i];
        else if (!strcmp(a, "--calib") && i + 1 < argc) o.calib_path = argv[++i];
        else if (!strcmp(a, "--calib-tokens") && i + 1 < argc) {
            if (!nb_cli_parse_u64(argv[++i], &v) || v == 0) {
                fprintf(stderr, "nibble calibrate: --calib-tokens needs a positive number\n");
                goto done;
            }
            o.corpus.max_tokens = v;
        } else if (!strcmp(a, "--ctx") && i + 1 < argc) {
            if (!nb_cli_parse_u64(argv[++i], &v) || v < 2 || v > (1u << 20)) {
                fprintf(stderr, "nibble calibrate: --ctx needs a number between 2 and 1048576\n");
                goto done;
            }
            o.corpus.n_ctx = (int)v;
        } else if (!strcmp(a, "--seed") && i + 1 < argc) {
            if (!nb_cli_parse_u64(argv[++i], &v)) {
                fprintf(stderr, "nibble calibrate: --seed needs a non-negative number\n");
                goto done;
            }
            o.corpus.seed = v;
        } else if (!strcmp(a, "--calib-format") && i + 1 < argc) {
            const char *k = argv[++i];
            if (!strcmp(k, "auto")) o.corpus.kind = NB_CORPUS_AUTO;
            else if (!strcmp(k, "text")) o.corpus.kind = NB_CORPUS_TEXT;
            else if (!strcmp(k, "ids")) o.corpus.kind = NB_CORPUS_IDS;
            else { fprintf(stderr, "nibble calibrate: --calib-format is auto, text or ids\n"); goto done; }
        } else if (a[0] == '-' || model) {
            fprintf(stderr, "nibble calibrate: unexpected argument '%s' (see --help)\n", a);
            goto done;
        } else model = a;
    }
    if (!model || !o.calib_path || !out) {
        fprintf(stderr, "nibble calibrate: %s\n", !model ? "missing MODEL" : !o.calib_path ? "missing --calib FILE"
                                                                                            : "missing -o OUT");
        fputs("usage: nibble calibrate MODEL --calib FILE -o STATS.gguf [options]   (--help for more)\n", stderr);
        goto done;
    }
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
                    res.n_zero_experts ? " (some experts saw no token: see warnings)" : "", out);
        if (json) print_json(model, o.calib_path, out, &res, &im, &rt);
    }
    nb_imatrix_free(&im);
    nb_routing_free(&rt);
done:
    nb_ctx_free(&ctx);
    return rc;
}
