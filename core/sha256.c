/* core/sha256.c — SHA-256 through libcrypto's low-level interface, which needs
 * no allocation (the EVP interface would make init fallible). The 1.1.1 API
 * level keeps OpenSSL 3 from flagging it as deprecated. */
#define OPENSSL_API_COMPAT 10101
#include "core/sha256.h"

#include <openssl/sha.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Static_assert(sizeof(SHA256_CTX) <= sizeof(((nb_sha256 *)0)->state), "nb_sha256 too small for SHA256_CTX");

void nb_sha256_init(nb_sha256 *s) { SHA256_Init((SHA256_CTX *)s->state); }

void nb_sha256_update(nb_sha256 *s, const void *data, size_t n) { SHA256_Update((SHA256_CTX *)s->state, data, n); }

void nb_sha256_final(nb_sha256 *s, unsigned char out[32]) { SHA256_Final(out, (SHA256_CTX *)s->state); }

void nb_sha256_hex(const unsigned char d[32], char out[65]) {
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) { out[2 * i] = hx[d[i] >> 4]; out[2 * i + 1] = hx[d[i] & 15]; }
    out[64] = 0;
}

nb_status nb_sha256_file(const char *path, unsigned char out[32], nb_ctx *ctx) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return nb_err_errno(ctx, errno, "%s", path);
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = nb_malloc(ctx, CHUNK, "hash buffer");
    if (!buf) { close(fd); return NB_ERR_NOMEM; }
    nb_sha256 s;
    nb_sha256_init(&s);
    for (;;) {
        ssize_t n = read(fd, buf, CHUNK);
        if (n < 0) {
            if (errno == EINTR) continue;
            nb_status st = nb_err_errno(ctx, errno, "%s: read", path);
            free(buf); close(fd);
            return st;
        }
        if (n == 0) break;
        nb_sha256_update(&s, buf, (size_t)n);
    }
    free(buf);
    close(fd);
    nb_sha256_final(&s, out);
    return NB_OK;
}
