/* tests/fuzz/fuzz_peft.c — libFuzzer target for PEFT adapter_config.json
 * (distill/adapter.h: nb_peft_config_parse, nb_peft_pattern_match, and the
 * config checks of nb_adapter_open).
 *
 * The input is parsed as adapter_config.json. A config that parses must have
 * a rank > 0, a finite alpha and pattern tables whose keys compile and whose
 * values are in range. It is then the config of two small fixed adapters
 * (written once per process under /dev/shm or /tmp): one DoRA adapter with
 * magnitude vectors, one plain LoRA with a lora_B bias. An open that succeeds
 * must give modules whose rank is the tensors' and whose scaling is finite.
 * The first 256 bytes are also used as a rank_pattern key (a regular
 * expression) against a module name: it must compile within bounded memory
 * (a key of stacked '+' made regcomp allocate gigabytes before the bound in
 * distill/adapter.c).
 */
#include "distill/adapter.h"
#include "fuzz_tmp.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PRE "base_model.model.model.layers.0."

typedef struct {
    const char *name;
    int64_t d0, d1; /* safetensors shape; d1 = 0 for a vector */
} fx_tensor;

/* q_proj rank 2, v_proj rank 4, in = out = 8; one replaced tensor */
static const fx_tensor g_common[] = {
    {PRE "self_attn.q_proj.lora_A.weight", 2, 8},
    {PRE "self_attn.q_proj.lora_B.weight", 8, 2},
    {PRE "self_attn.v_proj.lora_A.weight", 4, 8},
    {PRE "self_attn.v_proj.lora_B.weight", 8, 4},
    {"base_model.model.lm_head.weight", 4, 8},
};
#define N_COMMON (sizeof g_common / sizeof *g_common)
static const fx_tensor g_dora[] = {
    {PRE "self_attn.q_proj.lora_magnitude_vector", 8, 0},
    {PRE "self_attn.v_proj.lora_magnitude_vector", 8, 0},
};
static const fx_tensor g_bias[] = {
    {PRE "self_attn.q_proj.lora_B.bias", 8, 0},
};

static char g_dir[2][64];
static char g_cfg[96];

/* Write a safetensors file of F32 tensors (values small and finite). */
static int write_st(const char *path, const fx_tensor *extra, size_t n_extra) {
    char hdr[4096];
    size_t h = 0, off = 0, n = N_COMMON + n_extra;
    h += (size_t)snprintf(hdr + h, sizeof hdr - h, "{");
    for (size_t i = 0; i < n; i++) {
        const fx_tensor *t = i < N_COMMON ? &g_common[i] : &extra[i - N_COMMON];
        size_t bytes = (size_t)(t->d0 * (t->d1 ? t->d1 : 1)) * 4;
        if (t->d1)
            h += (size_t)snprintf(hdr + h, sizeof hdr - h, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],",
                                  i ? "," : "", t->name, (long long)t->d0, (long long)t->d1);
        else
            h += (size_t)snprintf(hdr + h, sizeof hdr - h, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],", i ? "," : "",
                                  t->name, (long long)t->d0);
        h += (size_t)snprintf(hdr + h, sizeof hdr - h, "\"data_offsets\":[%zu,%zu]}", off, off + bytes);
        off += bytes;
    }
    h += (size_t)snprintf(hdr + h, sizeof hdr - h, "}");
    while (h % 8) hdr[h++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    uint64_t len = h;
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(len >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(hdr, 1, h, f);
    for (size_t i = 0; i < off / 4; i++) {
        float v = 0.01f * (float)((int)(i % 17) - 8);
        fwrite(&v, 4, 1, f);
    }
    return fclose(f);
}

static void cleanup(void) {
    char p[160];
    for (int d = 0; d < 2; d++) {
        snprintf(p, sizeof p, "%s/adapter_model.safetensors", g_dir[d]);
        unlink(p);
        snprintf(p, sizeof p, "%s/adapter_config.json", g_dir[d]);
        unlink(p);
        rmdir(g_dir[d]);
    }
}

static int setup(void) {
    const char *base = nb_fuzz_tmp_dir();
    char p[160];
    for (int d = 0; d < 2; d++) {
        snprintf(g_dir[d], sizeof g_dir[d], "%s/fuzz_peft_%d_%d", base, (int)getpid(), d);
        (void)rmdir(g_dir[d]);
        if (mkdir(g_dir[d], 0700) != 0) return -1;
        snprintf(p, sizeof p, "%s/adapter_model.safetensors", g_dir[d]);
        if (write_st(p, d ? g_bias : g_dora, d ? 1 : 2) != 0) return -1;
    }
    snprintf(g_cfg, sizeof g_cfg, "%s/adapter_config.json", g_dir[0]);
    snprintf(p, sizeof p, "%s/adapter_config.json", g_dir[1]);
    if (symlink(g_cfg, p) != 0) return -1;
    atexit(cleanup);
    return 0;
}

static void check_config(const nb_peft_config *c) {
    if (c->r == 0 || !isfinite(c->lora_alpha)) abort();
    for (size_t i = 0; i < c->n_rank_pattern; i++)
        if (!c->rank_keys[i] || c->rank_values[i] == 0) abort();
    for (size_t i = 0; i < c->n_alpha_pattern; i++)
        if (!c->alpha_keys[i] || !isfinite(c->alpha_values[i])) abort();
}

static void check_open(const uint8_t *data, size_t size) {
    FILE *f = fopen(g_cfg, "wb");
    if (!f) return;
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    for (int d = 0; d < 2; d++) {
        nb_ctx ctx;
        nb_ctx_init(&ctx);
        ctx.log_level = NB_LOG_ERROR;
        ctx.quiet = true;
        nb_adapter *a = NULL;
        if (nb_adapter_open(g_dir[d], &a, &ctx) == NB_OK) {
            if (a->kind != NB_ADAPTER_PEFT || a->n_modules != 2 || a->n_replace != 1) abort();
            for (size_t i = 0; i < a->n_modules; i++) {
                const nb_lora_module *m = &a->modules[i];
                uint32_t want = strstr(m->name, "q_proj") ? 2 : 4;
                if (m->rank != want || m->in != 8 || m->out != 8 || !isfinite(m->scaling)) abort();
                if ((m->magnitude >= 0) != (d == 0) || a->cfg.use_dora != (d == 0)) abort();
            }
        } else if (a) {
            abort(); /* on failure *out is NULL */
        }
        nb_adapter_close(a);
        nb_ctx_free(&ctx);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready = -2;
    if (ready == -2) ready = setup();
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    ctx.log_level = NB_LOG_ERROR;
    ctx.quiet = true;
    nb_peft_config c;
    bool parsed = nb_peft_config_parse((const char *)data, size, "adapter_config.json", &c, &ctx) == NB_OK;
    if (parsed) {
        check_config(&c);
        nb_peft_config_free(&c);
        if (ready == 0) check_open(data, size);
    } else if (c.r || c.n_rank_pattern || c.n_alpha_pattern || c.base_model) {
        abort(); /* on failure *out is left empty */
    }
    /* the input as a pattern key */
    char key[257];
    size_t n = size < 256 ? size : 256;
    memcpy(key, data, n);
    key[n] = 0;
    bool ok;
    (void)nb_peft_pattern_match(key, "model.layers.10.self_attn.q_proj", &ok);
    nb_ctx_free(&ctx);
    return 0;
}
