/* formats/hf.h — Hugging Face model directories (config.json + safetensors).
 *
 * nb_hf_open (formats/readers.h) opens DIR/config.json and DIR/model.safetensors
 * or DIR/model.safetensors.index.json and exposes an nb_model in GGUF names
 * and shapes (formats/arch.h gives the rules):
 *   - tensors that map 1:1 keep the safetensors reader's zero-copy `data`;
 *   - llama-family attn_q/attn_k are row-permuted, stacked experts are
 *     gathered expert by expert, Gemma norms get +1 (as F32), llama3 rope
 *     scaling becomes rope_freqs.weight: all materialised by ops->read into
 *     the caller's buffer, so memory stays one tensor;
 *   - unknown tensor names keep their HF name (a warning is logged once per
 *     model listing how many) so nothing is dropped silently; writers that
 *     target llama.cpp should refuse or drop them (nb_hf_is_unmapped);
 *   - vision towers / projectors of multimodal checkpoints and rotary caches
 *     are left out;
 *   - metadata: general.architecture, general.name (config `_name_or_path`'s
 *     last component, else the directory's name) and "<arch>.*" keys.
 * Tensors are ordered: rope_freqs, token_embd, blk.0 ... blk.N (in the
 * canonical per-block order of nb_arch_tensor_list), output_norm, output,
 * then unmapped names.
 * Checkpoints with a quantization_config go through nb_hfq_wrap
 * (formats/hf_quantized.h) first: their quantized Linears appear as one weight.
 * The tokenizer (tokenizer.json / tokenizer.model and their config files)
 * becomes tokenizer.ggml.* keys through formats/hf_tokenizer.h.
 */
#ifndef NB_FORMATS_HF_H
#define NB_FORMATS_HF_H

#include "formats/arch.h"
#include "formats/model.h"

#include <stddef.h>

/* Largest config.json accepted (bytes). */
#define NB_HF_MAX_CONFIG (16u << 20)

typedef struct nb_hf_config {
    const nb_arch *arch;
    nb_hparams hp;
    char *name; /* last component of `_name_or_path`, or NULL */
} nb_hf_config;

/* Parse config.json text (need not be NUL-terminated). `what` names the file
 * in messages ("DIR/config.json"). Errors: non-JSON or non-object ->
 * NB_ERR_FORMAT; a key of the wrong type or a non-integral / negative count
 * -> NB_ERR_FORMAT naming the key; too large -> NB_ERR_RANGE; unknown
 * architecture -> NB_ERR_UNSUPPORTED listing the supported ones.
 * On failure *out is left empty. */
nb_status nb_hf_config_parse(const char *json, size_t len, const char *what, nb_hf_config *out,
                             nb_ctx *ctx);
void nb_hf_config_free(nb_hf_config *c);

/* Render a config.json (malloc'd, NUL-terminated) for arch + hp, in the key
 * spelling transformers writes; `torch_dtype` e.g. "bfloat16". Parsing the
 * result with nb_hf_config_parse gives back the same hp. */
char *nb_hf_config_render(const nb_arch *a, const nb_hparams *hp, const char *torch_dtype,
                          nb_ctx *ctx);

/* True when tensor i of an nb_hf_open model kept its HF name (no rule matched). */
bool nb_hf_is_unmapped(const nb_model *m, size_t i);

#endif
