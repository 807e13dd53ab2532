/* core/sha256.h — SHA-256 for manifests, output digests and logits-file identity.
 * Backed by OpenSSL's libcrypto (Debian's libssl-dev), which uses the CPU's
 * SHA extensions where present (several GB/s instead of ~250 MB/s for plain C):
 * every output file is hashed while it is written, so this is on the hot path. */
#ifndef NB_CORE_SHA256_H
#define NB_CORE_SHA256_H

#include "core/ctx.h"

#include <stddef.h>
#include <stdint.h>

typedef struct nb_sha256 {
    _Alignas(16) unsigned char state[128]; /* OpenSSL's SHA256_CTX (checked in sha256.c) */
} nb_sha256;

void nb_sha256_init(nb_sha256 *s);
void nb_sha256_update(nb_sha256 *s, const void *data, size_t n);
void nb_sha256_final(nb_sha256 *s, unsigned char out[32]);
/* Lower-case hex of a digest into out[65]. */
void nb_sha256_hex(const unsigned char digest[32], char out[65]);
nb_status nb_sha256_file(const char *path, unsigned char out[32], nb_ctx *ctx);

#endif
