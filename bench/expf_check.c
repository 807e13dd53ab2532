/* bench/expf_check.c — nb_expf and its bulk form against libm's expf, for
 * every float from -inf to 90 (3.26e9 inputs, about 40 s on one core).
 *
 *   build/rel/bench_expf_check            prints the count of differences
 *
 * On glibc x86-64 (the reference platform) both must be 0: the engine's
 * softmax and SiLU then give the bits libm's expf gave them. Elsewhere a
 * non-zero count says how far that libm's expf is from glibc's (nibble's own
 * results do not change with the platform). */
#include "core/expf.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int same(float a, float b) { return (isnan(a) && isnan(b)) || memcmp(&a, &b, 4) == 0; }

int main(void) {
    enum { B = 4096 };
    static float xs[B], ys[B];
    uint64_t n = 0, bad_scalar = 0, bad_bulk = 0;
    /* -0 down to -inf and the NaNs above it, then +0 up to 90 */
    const uint64_t ranges[2][2] = {{0x80000000u, 0xffffffffu}, {0, 0x42b40000u}};
    for (int g = 0; g < 2; g++)
        for (uint64_t u = ranges[g][0]; u <= ranges[g][1];) {
            size_t m = 0;
            for (; m < B && u <= ranges[g][1]; m++, u++) {
                const uint32_t v = (uint32_t)u;
                memcpy(&xs[m], &v, 4);
            }
            nb_expf_shift_n(xs, 0.f, ys, m);
            for (size_t i = 0; i < m; i++) {
                const float want = expf(xs[i]);
                if (!same(nb_expf(xs[i]), want)) {
                    if (bad_scalar++ < 5) printf("nb_expf(%a) = %a, libm %a\n", xs[i], nb_expf(xs[i]), want);
                }
                if (!same(ys[i], want)) {
                    if (bad_bulk++ < 5) printf("nb_expf_shift_n(%a) = %a, libm %a\n", xs[i], ys[i], want);
                }
            }
            n += m;
        }
    printf("%llu inputs: nb_expf differs from libm expf on %llu, the bulk form on %llu\n", (unsigned long long)n,
           (unsigned long long)bad_scalar, (unsigned long long)bad_bulk);
    return bad_scalar || bad_bulk ? 1 : 0;
}
