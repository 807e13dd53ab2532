/* engine/sample.h — choosing the next token, and text generation on the engine.
 *
 * Sampling: temperature 0 is greedy (argmax, the lowest id on ties); otherwise
 * softmax(logits / temp) restricted to the top_k highest logits (top_k 0 or
 * >= n_vocab: all), drawn with a seeded splitmix64 generator, so a seed
 * always gives the same text for the same logits.
 */
#ifndef NB_ENGINE_SAMPLE_H
#define NB_ENGINE_SAMPLE_H

#include "core/ctx.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct nb_sampler {
    float temp;     /* 0: greedy */
    int top_k;      /* 0: no limit */
    uint64_t rng;   /* splitmix64 state */
    int cap;        /* scratch entries */
    int32_t *idx;   /* scratch: candidate ids */
    float *val;     /* scratch: candidate logits */
} nb_sampler;

/* temp < 0 or non-finite, or top_k < 0 -> NB_ERR_INVALID. */
nb_status nb_sampler_init(nb_sampler *s, float temp, int top_k, uint64_t seed, nb_ctx *ctx);
void nb_sampler_free(nb_sampler *s); /* NULL-safe */
/* Next token for one row of n_vocab logits; -1 only on allocation failure. */
int32_t nb_sample(nb_sampler *s, const float *logits, int n_vocab);
/* Uniform double in [0, 1) from the sampler's generator (53 bits). */
double nb_sampler_uniform(nb_sampler *s);

typedef struct nb_gen_opts {
    int n_predict;         /* tokens to generate at most (<= 0: until EOS or the context is full) */
    bool ignore_eos;       /* keep going past end-of-generation tokens (EOS, <end_of_turn> ...) */
    /* Called with each generated token's text (may be empty); NULL: nothing. */
    void (*on_piece)(void *user, int32_t id, const char *piece, size_t n);
    void *user;
} nb_gen_opts;

typedef struct nb_gen_stats {
    int n_prompt;          /* prompt tokens (with BOS) */
    int n_gen;             /* tokens generated */
    bool hit_eos;          /* stopped at an end-of-generation token */
    double t_prompt, t_gen; /* seconds */
} nb_gen_stats;

/* Tokenize `prompt` (BOS first when the vocabulary adds it), evaluate it and
 * generate with `s`. Fails with NB_ERR_RANGE when the prompt does not fit
 * the engine's context. */
nb_status nb_generate(nb_engine *e, const nb_tokenizer *t, const char *prompt, nb_sampler *s,
                      const nb_gen_opts *o, nb_gen_stats *stats, nb_ctx *ctx);

/* Throughput as llama.cpp's llama-bench measures it (its pp and tg tests):
 *   pp: n_prompt tokens (BOS first when bos >= 0, then fixed pseudo-random
 *       ids) from an empty cache in batches of the engine's n_batch, the
 *       logits of the last token only (evaluated as n_prompt - 1 tokens
 *       without logits, then the last one);
 *   tg: n_gen single-token steps from an empty cache (BOS, then pseudo-random
 *       ids), each with its logits;
 * one untimed warm-up of each, then `reps` timed repetitions; tokens/s is the
 * mean over the repetitions of n / seconds, sd their sample standard
 * deviation (llama-bench's avg_ts and stddev_ts). The context must hold
 * max(n_prompt, n_gen) tokens; n_prompt or n_gen 0 skips that test. */
typedef struct nb_bench_opts {
    int n_prompt, n_gen, reps;
    int32_t bos; /* -1: none */
} nb_bench_opts;
typedef struct nb_bench_result {
    double pp_tps, pp_sd, tg_tps, tg_sd; /* tokens per second (0 for a skipped test) */
} nb_bench_result;
nb_status nb_bench(nb_engine *e, const nb_bench_opts *o, nb_bench_result *r, nb_ctx *ctx);

#endif
