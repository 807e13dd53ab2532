/* tests/fuzz/fuzz_imatrix.c — libFuzzer target for the importance-matrix
 * readers (calib/imatrix.h: GGUF imatrix and llama.cpp's legacy .dat, chosen
 * by content) and their validation against a model.
 *
 * The input is written to a file and read with nb_imatrix_read. A file that
 * reads must give entries of positive shape with finite, non-negative counts
 * and finite sums; written back in its own format and read again it must give
 * the same entries. It is then loaded for a small synthetic MoE model
 * (nb_imatrix_load_for_model, as `nibble quantize --imatrix` does; written
 * once per process): when that succeeds, every entry names a tensor of the
 * model and the importance weights of every expert are finite and >= 0.
 * Seeds: imatrices of that model (`nibble calibrate`, GGUF and --dat).
 */
#include "calib/imatrix.h"
#include "formats/synth.h"
#include "fuzz_tmp.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_model[96], g_in[96], g_out[96];

static void quiet_ctx(nb_ctx *ctx) {
    nb_ctx_init(ctx);
    ctx->quiet = true;
    ctx->log_level = NB_LOG_ERROR;
    ctx->n_threads = 1;
}

static void cleanup(void) {
    unlink(g_model);
    unlink(g_in);
    unlink(g_out);
}

/* The model of the seeds: `nibble synth --arch mixtral --layers 1 --dim 32
 * --ff 32 --heads 4 --kv-heads 2 --experts 4 --experts-used 2 --vocab 64
 * --no-vocab` (tensor shapes are what the imatrix is checked against). */
static int setup(void) {
    nb_fuzz_tmp_path(g_model, sizeof g_model, "imatrix_model.gguf");
    nb_fuzz_tmp_path(g_in, sizeof g_in, "imatrix_in");
    nb_fuzz_tmp_path(g_out, sizeof g_out, "imatrix_out");
    nb_ctx ctx;
    quiet_ctx(&ctx);
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.arch = "mixtral";
    o.n_layer = 1;
    o.n_embd = 32;
    o.n_ff = 32;
    o.n_head = 4;
    o.n_head_kv = 2;
    o.n_expert = 4;
    o.n_expert_used = 2;
    o.n_vocab = 64;
    o.no_vocab = true;
    o.dtype = NB_TYPE_F32;
    nb_status st = nb_synth_write(&o, g_model, &ctx);
    nb_ctx_free(&ctx);
    if (st != NB_OK) return -1;
    atexit(cleanup);
    return 0;
}

static void check_entries(const nb_imatrix *im) {
    if (im->n == 0) abort();
    for (size_t i = 0; i < im->n; i++) {
        const nb_imatrix_entry *e = &im->e[i];
        if (!e->name || e->n_in <= 0 || e->n_mat <= 0 || (e->n_counts != 1 && e->n_counts != e->n_mat)) abort();
        for (int64_t k = 0; k < e->n_counts; k++)
            if (!isfinite(e->count[k]) || e->count[k] < 0) abort();
        for (int64_t j = 0; j < e->n_in * e->n_mat; j++)
            if (!isfinite(e->sum2[j]) || (e->sum && !isfinite(e->sum[j]))) abort();
    }
}

static bool same_values(const double *a, const double *b, int64_t n) {
    if (!a || !b) return a == b;
    return memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

/* Write im in its own format, read it back: the same entries. */
static void round_trip(const nb_imatrix *im, nb_ctx *ctx) {
    nb_status st = im->legacy ? nb_imatrix_write_dat(im, g_out, ctx) : nb_imatrix_write_gguf(im, g_out, ctx);
    if (st != NB_OK) return; /* e.g. a name too long for the suffixes: refused cleanly */
    nb_imatrix back;
    if (nb_imatrix_read(g_out, &back, ctx) != NB_OK || back.n != im->n || back.legacy != im->legacy) abort();
    for (size_t i = 0; i < im->n; i++) {
        const nb_imatrix_entry *e = &im->e[i], *f = nb_imatrix_find(&back, e->name);
        if (!f || f->n_in != e->n_in || f->n_mat != e->n_mat || f->n_counts != e->n_counts ||
            !same_values(f->sum2, e->sum2, e->n_in * e->n_mat) || !same_values(f->count, e->count, e->n_counts) ||
            !same_values(f->sum, e->sum, e->n_in * e->n_mat))
            abort();
    }
    nb_imatrix_free(&back);
    unlink(g_out);
}

static void check_weights(const nb_imatrix *im) {
    for (size_t i = 0; i < im->n; i++) {
        const nb_imatrix_entry *e = &im->e[i];
        float *w = malloc((size_t)e->n_in * sizeof *w);
        if (!w) return;
        for (int64_t k = 0; k < e->n_mat; k++) {
            if (nb_imatrix_weights(im, e->name, k, e->n_in, w) != 1) abort();
            for (int64_t j = 0; j < e->n_in; j++)
                if (!isfinite(w[j]) || w[j] < 0) abort();
        }
        free(w);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready = -2;
    if (ready == -2) ready = setup();
    if (ready != 0) return 0;
    FILE *f = fopen(g_in, "wb");
    if (!f) return 0;
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    nb_ctx ctx;
    quiet_ctx(&ctx);
    nb_imatrix im;
    if (nb_imatrix_read(g_in, &im, &ctx) == NB_OK) {
        check_entries(&im);
        round_trip(&im, &ctx);
        nb_imatrix_free(&im);
        if (nb_imatrix_load_for_model(g_in, g_model, &im, &ctx) == NB_OK) {
            check_entries(&im);
            check_weights(&im);
        } else if (im.n) {
            abort(); /* on failure it is left empty */
        }
    } else if (im.n || im.n_extra || im.n_datasets) {
        abort();
    }
    nb_imatrix_free(&im);
    nb_ctx_free(&ctx);
    return 0;
}
