/* core/sha256.h — SHA-256 (FIPS 180-4) for manifests and fetched-model checks. */
#ifndef NB_CORE_SHA256_H
#define NB_CORE_SHA256_H

#include "core/ctx.h"

#include <stddef.h>
#include <stdint.h>

typedef struct nb_sha256 {
    uint32_t h[8];
    uint64_t len;
    unsigned char buf[64];
    size_t buf_len;
} nb_sha256;

void nb_sha256_init(nb_sha256 *s);
void nb_sha256_update(nb_sha256 *s, const void *data, size_t n);
void nb_sha256_final(nb_sha256 *s, unsigned char out[32]);
/* Lower-case hex of a digest into out[65]. */
void nb_sha256_hex(const unsigned char digest[32], char out[65]);
nb_status nb_sha256_file(const char *path, unsigned char out[32], nb_ctx *ctx);

#endif
