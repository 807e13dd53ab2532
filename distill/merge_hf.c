/* distill/merge_hf.c — merges written with Hugging Face names (see distill/merge_hf.h). */
#include "distill/merge_hf.h"

#include "core/adir.h"
#include "core/str.h"

#include <stdlib.h>
#include <string.h>

nb_status nb_merge_wants_hf(const char *base, const char *dst, bool *hf_names, bool *dir, nb_ctx *ctx) {
    *dir = !nb_str_ends_with(dst, ".gguf") && !nb_str_ends_with(dst, ".safetensors");
    *hf_names = *dir;
    if (*dir || !nb_str_ends_with(dst, ".safetensors")) return NB_OK;
    nb_model *m = NULL;
    NB_TRY(nb_model_open(base, &m, ctx));
    *hf_names = m->format == NB_FMT_HF_DIR;
    nb_model_close(m);
    return NB_OK;
}

nb_status nb_merge_hf(const char *base, const char *dst, bool dir, const nb_merge_opts *o, nb_merge_result *r,
                      nb_ctx *ctx) {
    memset(r, 0, sizeof *r);
    size_t n = strlen(dst);
    char *stage_name = nb_malloc(ctx, n + sizeof ".stage", "path");
    if (!stage_name) return NB_ERR_NOMEM;
    memcpy(stage_name, dst, n);
    memcpy(stage_name + n, ".stage", sizeof ".stage");
    nb_adir stage;
    nb_status st = nb_adir_open(&stage, stage_name, ctx);
    free(stage_name);
    if (st != NB_OK) return st;
    char *gguf = nb_adir_file(&stage, "merged.gguf", ctx);
    if (!gguf) st = NB_ERR_NOMEM;
    if (st == NB_OK) st = nb_merge(base, gguf, o, r, ctx);
    if (st == NB_OK) {
        nb_hf_write_opts ho = {.single_file = dir ? NULL : dst};
        nb_hf_write_result hr;
        st = nb_hf_write_path(gguf, dst, &ho, &hr, ctx);
        if (st == NB_OK) {
            r->bytes_out = hr.bytes_out;
            memcpy(r->sha256, hr.sha256, 32);
        }
    }
    free(gguf);
    nb_adir_abort(&stage);
    return st;
}
