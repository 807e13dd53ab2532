/* tests/fuzz/fuzz_config.c — libFuzzer target for config.json parsing and
 * tensor-name mapping (formats/hf.h, formats/arch.h).
 *
 * The input is parsed as config.json. A config that parses must validate,
 * give GGUF metadata, and survive render -> parse with identical
 * hyper-parameters. The input (first 300 bytes) is also mapped as an HF
 * tensor name for every architecture: a name that maps must map back to an
 * HF name that maps to the same GGUF name and expert.
 */
#include "formats/arch.h"
#include "formats/hf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_names(const uint8_t *data, size_t size) {
    char name[301];
    size_t n = size < 300 ? size : 300;
    memcpy(name, data, n);
    name[n] = '\0';
    for (int i = 0; i < NB_ARCH_COUNT; i++) {
        const nb_arch *a = nb_arch_get((nb_arch_id)i);
        nb_name_map m;
        if (!nb_arch_map_hf(a, name, &m) || m.skip) continue;
        char hf[NB_MAX_NAME + 1];
        if (!nb_arch_map_gguf(a, m.gguf, m.expert, hf, sizeof hf, NULL)) abort();
        nb_name_map m2;
        if (!nb_arch_map_hf(a, hf, &m2) || strcmp(m2.gguf, m.gguf) != 0 || m2.expert != m.expert ||
            m2.layer != m.layer || m2.xf != m.xf)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    ctx.log_level = NB_LOG_ERROR;
    ctx.quiet = true;
    fuzz_names(data, size);
    nb_hf_config c;
    if (nb_hf_config_parse((const char *)data, size, "config.json", &c, &ctx) == NB_OK) {
        if (!c.arch || nb_hparams_validate(c.arch, &c.hp, "fuzz", &ctx) != NB_OK) abort();
        nb_kvset kv;
        nb_kvset_init(&kv);
        if (nb_arch_hparams_to_kv(c.arch, &c.hp, c.name, &kv, &ctx) != NB_OK) abort();
        nb_hparams back;
        if (nb_arch_hparams_from_kv(c.arch, &kv, &back, &ctx) != NB_OK) abort();
        if (back.n_layer != c.hp.n_layer || back.n_embd != c.hp.n_embd || back.n_head != c.hp.n_head)
            abort();
        nb_kvset_free(&kv);
        char *s = nb_hf_config_render(c.arch, &c.hp, "bfloat16", &ctx);
        if (s) {
            nb_hf_config c2;
            if (nb_hf_config_parse(s, strlen(s), "rendered", &c2, &ctx) != NB_OK) abort();
            if (c2.arch != c.arch || memcmp(&c2.hp, &c.hp, sizeof c.hp) != 0) abort();
            nb_hf_config_free(&c2);
            free(s);
        }
        if (c.hp.rope_scaling == NB_ROPE_SCALING_LLAMA3) {
            uint32_t hd = nb_hparams_head_dim(&c.hp);
            float *f = malloc((hd / 2 + 1) * sizeof *f);
            if (f && nb_arch_llama3_rope_factors(&c.hp, f, hd / 2, &ctx) != NB_OK) abort();
            free(f);
        }
        nb_hf_config_free(&c);
    }
    nb_ctx_free(&ctx);
    return 0;
}
