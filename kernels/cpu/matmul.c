/* kernels/cpu/matmul.c — reference matmul on packed weights and the dispatcher. */
#include "kernels/cpu/matmul.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

static float dot_f32(const float *a, const float *b, int64_t n) {
    /* 8 independent partial sums: vectorisable, fixed order (deterministic) */
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

nb_status nb_get_row(nb_type wtype, const void *w, int64_t n_in, int64_t r, float *dst, nb_ctx *ctx) {
    const nb_type_traits *tr = nb_type_get(wtype);
    if (!tr || !tr->to_float)
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "no dequantizer for type %s", nb_type_name(wtype));
    uint64_t rb;
    NB_TRY(nb_type_row_bytes(wtype, (uint64_t)n_in, &rb, ctx, "matrix row"));
    tr->to_float((const unsigned char *)w + (uint64_t)r * rb, dst, n_in);
    return NB_OK;
}

nb_status nb_matmul_ref(nb_type wtype, const void *w, int64_t n_out, int64_t n_in, const float *x,
                        int64_t n_tok, float *y, int n_threads, nb_ctx *ctx) {
    const nb_type_traits *tr = nb_type_get(wtype);
    if (!tr || !tr->to_float)
        return nb_err(ctx, NB_ERR_UNSUPPORTED, "matmul: no kernel for weight type %s", nb_type_name(wtype));
    uint64_t rb;
    NB_TRY(nb_type_row_bytes(wtype, (uint64_t)n_in, &rb, ctx, "matmul weight row"));
    int nt = n_threads < 1 ? 1 : n_threads;
    int failed = 0;
#pragma omp parallel num_threads(nt)
    {
        float *row = malloc((size_t)n_in * sizeof(float));
        if (!row) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < n_out; r++) {
            if (!row) continue;
            tr->to_float((const unsigned char *)w + (uint64_t)r * rb, row, n_in);
            for (int64_t t = 0; t < n_tok; t++) y[t * n_out + r] = dot_f32(row, x + t * n_in, n_in);
        }
        free(row);
    }
    if (failed) return nb_err(ctx, NB_ERR_NOMEM, "matmul: out of memory for a row buffer");
    return NB_OK;
}

nb_status nb_matmul(nb_type wtype, const void *w, int64_t n_out, int64_t n_in, const float *x, int64_t n_tok,
                    float *y, int n_threads, nb_ctx *ctx) {
    return nb_matmul_ref(wtype, w, n_out, n_in, x, n_tok, y, n_threads, ctx);
}
