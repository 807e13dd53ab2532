/* formats/readers.h — constructors of each format's reader and writer, used
 * by nb_model_open / nb_sink_create (formats/model.c). Each format lives in
 * its own file (formats/safetensors.c, formats/gguf.c, formats/hf.c). */
#ifndef NB_FORMATS_READERS_H
#define NB_FORMATS_READERS_H

#include "formats/model.h"

/* A .safetensors file, or a model.safetensors.index.json naming shards. */
nb_status nb_safetensors_open(const char *path, nb_model **out, nb_ctx *ctx);
nb_status nb_safetensors_sink_create(const char *path, nb_sink **out, nb_ctx *ctx);

/* A GGUF v2/v3 file. */
nb_status nb_gguf_open(const char *path, nb_model **out, nb_ctx *ctx);
nb_status nb_gguf_sink_create(const char *path, nb_sink **out, nb_ctx *ctx);

/* A Hugging Face model directory (config.json + safetensors, sharded or not). */
nb_status nb_hf_open(const char *dir, nb_model **out, nb_ctx *ctx);

#endif
