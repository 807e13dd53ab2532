/* distill/merge_hf.h — merges written with Hugging Face names.
 *
 * `nibble merge BASE --adapter ... -o OUT` writes:
 *   OUT ending in .gguf           GGUF names (nb_merge)
 *   OUT ending in .safetensors    GGUF names, or HF names (formats/hf_write.h,
 *                                 single file) when BASE is a Hugging Face directory
 *   any other OUT                 a Hugging Face directory (config.json, generation_config.json,
 *                                 sharded safetensors) that AutoModelForCausalLM.from_pretrained loads
 * The HF forms merge into a staging GGUF ("OUT.stage.partial.XXXXXX/", removed
 * at the end, also on failure) and rewrite it with nb_hf_write: memory stays
 * one tensor, the disk holds the model twice while it runs. */
#ifndef NB_DISTILL_MERGE_HF_H
#define NB_DISTILL_MERGE_HF_H

#include "distill/merge.h"
#include "formats/hf_write.h"

/* Whether `dst` gets HF names for base `base` (see above); NB_ERR_* when the
 * base cannot be opened. */
nb_status nb_merge_wants_hf(const char *base, const char *dst, bool *hf_names, bool *dir, nb_ctx *ctx);

/* nb_merge writing Hugging Face names: a directory when `dir`, else the single
 * .safetensors file dst. r as nb_merge fills it (bytes_out and sha256 are the
 * output's). */
nb_status nb_merge_hf(const char *base, const char *dst, bool dir, const nb_merge_opts *o, nb_merge_result *r,
                      nb_ctx *ctx);

#endif
