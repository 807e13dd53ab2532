/* tests/fuzz/fuzz_hf_tokenizer.c — libFuzzer target for the Hugging Face
 * tokenizer import (formats/hf_tokenizer.h) and the SentencePiece protobuf
 * codec (formats/hf_tokenizer_impl.h).
 *
 * Input: one mode byte, then the file body.
 *   mode % 4 == 0: the body is tokenizer.json;
 *   mode % 4 == 1: the body is tokenizer.model (also parsed from memory: a
 *                  model that parses must serialize and parse back to the
 *                  same pieces);
 *   mode % 4 == 2: the body is tokenizer_config.json beside a fixed small
 *                  tokenizer.model;
 *   mode % 4 == 3: the body is tokenizer_config.json beside a fixed small
 *                  byte-level tokenizer.json.
 * Bit 0x10 of the mode passes a vocab_size of 16 (else 0: unknown).
 * An import that succeeds must give a tokenizer the engine builds (or refuses
 * cleanly), and its export must read back with the same number of tokens.
 * Files go to a private temporary directory, removed at exit: under /dev/shm
 * where it is writable (nb_fuzz_tmp_dir; tmpfs: the export's fsyncs cost nothing there, which makes
 * the run about ten times faster than on a disk-backed /tmp), else /tmp.
 */
#include "engine/tokenizer.h"
#include "formats/hf_tokenizer.h"
#include "formats/hf_tokenizer_impl.h"
#include "fuzz_tmp.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[256], g_out[300];

/* Remove the tokenizer files an input or an export may leave in dir. */
static void clear_dir(const char *dir) {
    static const char *const files[] = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                                        "special_tokens_map.json"};
    char p[400];
    for (int k = 0; k < 4; k++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[k]);
        unlink(p);
    }
}

static void cleanup(void) {
    clear_dir(g_dir);
    clear_dir(g_out);
    rmdir(g_out);
    rmdir(g_dir);
}

static void put(const char *name, const void *d, size_t n) {
    char p[400];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    if (n && fwrite(d, 1, n, f) != n) abort();
    fclose(f);
}

static void drop(const char *name) {
    char p[400];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    unlink(p);
}

static const char k_small_json[] =
    "{\"added_tokens\": [{\"id\": 0, \"content\": \"<|e|>\", \"special\": true}],"
    " \"pre_tokenizer\": {\"type\": \"ByteLevel\"},"
    " \"model\": {\"type\": \"BPE\", \"vocab\": {\"<|e|>\": 0, \"a\": 1, \"b\": 2, \"ab\": 3}, \"merges\": [\"a b\"]}}";

static void small_model(nb_ctx *ctx) {
    static char t0[] = "<unk>", t1[] = "<s>", t2[] = "</s>", t3[] = "\xE2\x96\x81" "a", t4[] = "a";
    nb_spm_piece pc[5] = {{t0, 0, 2}, {t1, 0, 3}, {t2, 0, 3}, {t3, -1, 1}, {t4, -2, 1}};
    nb_spm_model m = {.pieces = pc, .n = 5, .model_type = 2, .unk_id = 0, .bos_id = 1, .eos_id = 2, .pad_id = -1,
                      .add_dummy_prefix = true};
    unsigned char *buf;
    size_t n;
    if (nb_spm_serialize(&m, &buf, &n, ctx) != NB_OK) abort();
    put("tokenizer.model", buf, n);
    free(buf);
}

static void check_memory_codec(const uint8_t *d, size_t n, nb_ctx *ctx) {
    nb_spm_model m, r;
    if (nb_spm_parse(d, n, "fuzz.model", &m, ctx) != NB_OK) return;
    unsigned char *buf;
    size_t bn;
    if (nb_spm_serialize(&m, &buf, &bn, ctx) != NB_OK) abort();
    if (nb_spm_parse(buf, bn, "fuzz.model", &r, ctx) != NB_OK || r.n != m.n) abort();
    for (size_t i = 0; i < m.n; i++)
        if (strcmp(r.pieces[i].text, m.pieces[i].text) || r.pieces[i].type != m.pieces[i].type ||
            memcmp(&r.pieces[i].score, &m.pieces[i].score, 4))
            abort();
    free(buf);
    nb_spm_model_free(&r);
    nb_spm_model_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof g_dir, "%s/nb-fuzz-hftok-XXXXXX", nb_fuzz_tmp_dir());
        if (!mkdtemp(g_dir)) abort();
        snprintf(g_out, sizeof g_out, "%s/out", g_dir);
        if (mkdir(g_out, 0700) != 0) abort();
        atexit(cleanup);
    }
    if (size < 1) return 0;
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    ctx.log_level = NB_LOG_ERROR;
    ctx.n_threads = 1;
    int mode = data[0];
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    drop("tokenizer.json");
    drop("tokenizer.model");
    drop("tokenizer_config.json");
    switch (mode % 4) {
    case 0: put("tokenizer.json", body, n); break;
    case 1:
        put("tokenizer.model", body, n);
        check_memory_codec(body, n, &ctx);
        break;
    case 2:
        small_model(&ctx);
        put("tokenizer_config.json", body, n);
        break;
    default:
        put("tokenizer.json", k_small_json, sizeof k_small_json - 1);
        put("tokenizer_config.json", body, n);
        break;
    }
    nb_kvset kv;
    nb_kvset_init(&kv);
    bool found;
    uint32_t nv = (mode & 0x10) ? 16 : 0;
    if (nb_hf_tokenizer_read(g_dir, nv, (mode & 0x20) ? "gemma3" : "llama", &kv, &found, &ctx) == NB_OK && found) {
        nb_tokenizer *t;
        if (nb_tokenizer_create(&kv, &t, &ctx) == NB_OK) {
            int32_t *ids;
            size_t nid;
            if (nb_tokenize(t, "a ab <|e|>", 10, true, &ids, &nid, &ctx) == NB_OK) free(ids);
            nb_tokenizer_free(t);
        }
        const nb_kv_value *tok = nb_kv_get(&kv, "tokenizer.ggml.tokens");
        if (!tok) abort();
        clear_dir(g_out); /* the previous input's export (say a tokenizer.model) must not be read back */
        if (nb_hf_tokenizer_write(&kv, g_out, &ctx) == NB_OK) {
            nb_kvset back;
            nb_kvset_init(&back);
            bool f2;
            /* exported files must read back: same token count */
            if (nb_hf_tokenizer_read(g_out, (uint32_t)tok->v.arr.n, "llama", &back, &f2, &ctx) != NB_OK || !f2)
                abort();
            const nb_kv_value *t2 = nb_kv_get(&back, "tokenizer.ggml.tokens");
            if (!t2 || t2->v.arr.n != tok->v.arr.n) abort();
            nb_kvset_free(&back);
        }
    }
    nb_kvset_free(&kv);
    nb_ctx_free(&ctx);
    return 0;
}
