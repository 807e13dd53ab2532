/* calib/gptq.c — GPTQ on one layer with the target type's own grid (see calib/gptq.h). */
#include "calib/gptq.h"

#include "calib/linalg.h"
#include "core/checked.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows per tile: each tile runs the whole column loop on its own rows (one
 * BLAS call per lazy batch), so the tiling, not the thread count, fixes the
 * arithmetic. */
#define TILE_ROWS 128
#define HESS_TOKENS 256 /* tokens converted to double per AᵀA call */
#define MAX_DAMP_RETRIES 6

/* ---- the type's grid: the type table's GPTQ columns (core/types.h) ---------------------------- */

static const nb_type_traits *grid_type(nb_type t) {
    const nb_type_traits *tr = nb_type_get(t);
    return tr && tr->set_code && tr->grid_levels && tr->grid_sub && tr->quantize && tr->to_float ? tr : NULL;
}

bool nb_gptq_supported(nb_type t) { return grid_type(t) != NULL; }
int nb_gptq_levels(nb_type t) { const nb_type_traits *tr = grid_type(t); return tr ? (int)tr->grid_levels : 0; }
int nb_gptq_sub(nb_type t) { const nb_type_traits *tr = grid_type(t); return tr ? (int)tr->grid_sub : 0; }
void nb_gptq_set_code(nb_type t, void *block, int p, int level) {
    const nb_type_traits *tr = grid_type(t);
    if (tr) tr->set_code(block, p, level);
}

/* ---- Hessian ------------------------------------------------------------------------------------------ */

nb_status nb_hessian_init(nb_hessian *h, int64_t n_in, nb_ctx *ctx) {
    memset(h, 0, sizeof *h);
    uint64_t nn;
    if (n_in <= 0 || !nb_mul_u64((uint64_t)n_in, (uint64_t)n_in, &nn) || nn > SIZE_MAX / sizeof(double))
        return nb_err(ctx, NB_ERR_RANGE, "hessian: bad size %lld", (long long)n_in);
    h->xtx = nb_calloc(ctx, (size_t)nn, sizeof(double), "hessian");
    if (!h->xtx) return NB_ERR_NOMEM;
    h->n = n_in;
    return NB_OK;
}

void nb_hessian_free(nb_hessian *h) {
    if (!h) return;
    free(h->xtx);
    memset(h, 0, sizeof *h);
}

nb_status nb_hessian_add(nb_hessian *h, const float *x, int64_t n_tok, const char *name, nb_ctx *ctx) {
    const int64_t n = h->n;
    for (int64_t k = 0; k < n_tok * n; k++)
        if (!isfinite(x[k]))
            return nb_err(ctx, NB_ERR_RANGE, "tensor '%s': input activation row %lld, column %lld is %s",
                          name ? name : "?", (long long)(k / n), (long long)(k % n), isnan(x[k]) ? "NaN" : "infinite");
    int nt = nb_ctx_threads(ctx);
    const int64_t m = n_tok < HESS_TOKENS ? n_tok : HESS_TOKENS;
    double *xd = m > 0 ? nb_malloc(ctx, (size_t)m * (size_t)n * sizeof(double), "Hessian input") : NULL;
    if (m > 0 && !xd) return NB_ERR_NOMEM;
    for (int64_t t0 = 0; t0 < n_tok; t0 += HESS_TOKENS) {
        const int64_t k = n_tok - t0 < HESS_TOKENS ? n_tok - t0 : HESS_TOKENS;
        for (int64_t e = 0; e < k * n; e++) xd[e] = (double)x[t0 * n + e];
        nb_linalg_ata_add(h->xtx, xd, k, n, nt);
    }
    free(xd);
    h->n_tok += (uint64_t)n_tok;
    return NB_OK;
}

void nb_hessian_finish(const nb_hessian *h, double *out) {
    const int64_t n = h->n;
    double s = h->n_tok ? 2.0 / (double)h->n_tok : 0.0;
    enum { T = 64 }; /* square tiles: the mirrored writes stay in cache */
    for (int64_t i0 = 0; i0 < n; i0 += T)
        for (int64_t j0 = i0; j0 < n; j0 += T) {
            const int64_t i1 = i0 + T < n ? i0 + T : n, j1 = j0 + T < n ? j0 + T : n;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0 > i ? j0 : i; j < j1; j++) {
                    double v = h->xtx[i * n + j] * s;
                    out[i * n + j] = v;
                    out[j * n + i] = v;
                }
        }
}

/* ---- the algorithm ------------------------------------------------------------------------------------ */

/* Grid of block `bi` of a packed row: levels values per sub-block, read by
 * setting the first code of each sub-block to each level and dequantizing a
 * copy. A value depends only on its own code and the block's scales (every
 * type with a set_code), so the other codes need not be set. */
static void block_grid(const nb_type_traits *tr, const uint8_t *blk, int64_t bi, uint8_t *tmp, float *vals,
                       float *grid) {
    const int B = (int)tr->block_size, sub = (int)tr->grid_sub, L = (int)tr->grid_levels, nsub = B / sub;
    memcpy(tmp, blk, tr->type_size);
    for (int lv = 0; lv < L; lv++) {
        for (int s = 0; s < nsub; s++) tr->set_code(tmp, s * sub, lv);
        tr->to_float(tmp, vals, B);
        for (int s = 0; s < nsub; s++) grid[((int64_t)bi * nsub + s) * L + lv] = vals[s * sub];
    }
}

typedef struct shared {
    const nb_type_traits *tr; /* the target type's row, with its GPTQ grid */
    const float *w;
    int64_t n_rows, n_cols, row_bytes;
    const int64_t *perm; /* processing position -> original column */
    const bool *dead;    /* [original column] */
    const double *U;     /* n_cols x n_cols upper, in processing order */
    const nb_gptq_opts *o;
    bool static_g;
    int bs;
    uint8_t *dst;
    float *deq;
    double *row_loss;
} shared;

/* y[0..n) -= e * x[0..n): the in-batch update, element by element (no
 * reassociation: the bits match the plain loop). restrict lets the compiler
 * keep the pointers in registers and use packed arithmetic. */
static inline void sub_scaled(double *restrict y, const double *restrict x, double e, int64_t n) {
    for (int64_t j = 0; j < n; j++) y[j] -= e * x[j];
}

/* One thread's work buffers, sized for a full tile (or the whole tensor when
 * it is smaller) and reused by every tile the thread runs: fresh buffers per
 * tile cost page faults, not arithmetic. */
typedef struct tile_work {
    double *Wt, *W1, *Er; /* rows x n_cols, rows x bs, rows x bs (rows = min(TILE_ROWS, n_rows)) */
    float *grid, *fb, *vals;
    uint8_t *tmp;
} tile_work;

static void tile_work_free(tile_work *tw) {
    free(tw->Wt); free(tw->W1); free(tw->Er); free(tw->grid); free(tw->fb); free(tw->vals); free(tw->tmp);
}

static bool tile_work_alloc(const shared *S, tile_work *tw) {
    const nb_type_traits *tr = S->tr;
    const size_t C = (size_t)S->n_cols, R = (size_t)(S->n_rows < TILE_ROWS ? S->n_rows : TILE_ROWS),
                 bs = (size_t)S->bs;
    tw->Wt = nb_malloc(NULL, R * C * sizeof(double), "gptq");
    tw->W1 = nb_malloc(NULL, R * bs * sizeof(double), "gptq");
    tw->Er = nb_malloc(NULL, R * bs * sizeof(double), "gptq");
    tw->grid = nb_malloc(NULL, R * (C / tr->grid_sub) * tr->grid_levels * sizeof(float), "gptq");
    tw->fb = nb_malloc(NULL, C * sizeof(float), "gptq");
    tw->vals = nb_malloc(NULL, tr->block_size * sizeof(float), "gptq");
    tw->tmp = nb_malloc(NULL, tr->type_size, "gptq");
    return tw->Wt && tw->W1 && tw->Er && tw->grid && tw->fb && tw->vals && tw->tmp;
}

/* GPTQ on rows [r0, r0 + nr), nr <= TILE_ROWS, in tw's buffers. */
static void run_tile(const shared *S, int64_t r0, int64_t nr, const tile_work *tw) {
    const nb_type_traits *tr = S->tr;
    const int64_t C = S->n_cols, B = tr->block_size, L = tr->grid_levels, sub = tr->grid_sub, nsub_row = C / sub;
    const int64_t bs = S->bs;
    double *Wt = tw->Wt, *W1 = tw->W1, *Er = tw->Er;
    float *grid = tw->grid, *fb = tw->fb, *vals = tw->vals;
    uint8_t *tmp = tw->tmp;
    for (int64_t r = 0; r < nr; r++) {
        const float *wr = S->w + (r0 + r) * C;
        for (int64_t i = 0; i < C; i++) {
            int64_t c = S->perm[i];
            Wt[r * C + i] = S->dead[c] ? 0.0 : (double)wr[c];
        }
        S->row_loss[r0 + r] = 0;
    }
    if (S->static_g) {
        /* all scales from W as it is (dead columns zeroed), whole rows in original order */
        for (int64_t r = 0; r < nr; r++) {
            uint8_t *row = S->dst + (r0 + r) * S->row_bytes;
            for (int64_t i = 0; i < C; i++) fb[S->perm[i]] = (float)Wt[r * C + i];
            tr->quantize(fb, row, 1, C, S->o->imp);
            for (int64_t bi = 0; bi < C / B; bi++)
                block_grid(tr, row + bi * tr->type_size, bi, tmp, vals, grid + r * nsub_row * L);
        }
    }
    for (int64_t i1 = 0; i1 < C; i1 += bs) {
        int64_t i2 = i1 + bs < C ? i1 + bs : C, cnt = i2 - i1;
        for (int64_t r = 0; r < nr; r++) memcpy(W1 + r * bs, Wt + r * C + i1, (size_t)cnt * sizeof(double));
        for (int64_t i = 0; i < cnt; i++) {
            const int64_t col = i1 + i, c = S->perm[col], bi = c / B;
            const double *Urow = S->U + col * C;
            const double d = Urow[col];
            if (!S->static_g && c % B == 0) {
                /* group start: the type's own scale search on the lazily updated weights */
                for (int64_t r = 0; r < nr; r++) {
                    uint8_t *blk = S->dst + (r0 + r) * S->row_bytes + bi * tr->type_size;
                    for (int64_t k = 0; k < B; k++) fb[k] = (float)Wt[r * C + c + k];
                    tr->quantize(fb, blk, 1, B, S->o->imp ? S->o->imp + c : NULL);
                    block_grid(tr, blk, bi, tmp, vals, grid + r * nsub_row * L);
                }
            }
            for (int64_t r = 0; r < nr; r++) {
                double *w1 = W1 + r * bs;
                const double wv = w1[i];
                const float *gr = grid + (r * nsub_row + c / sub) * L;
                int best = 0;
                double bd = fabs(wv - (double)gr[0]);
                for (int lv = 1; lv < L; lv++) {
                    double dd = fabs(wv - (double)gr[lv]);
                    if (dd < bd) { bd = dd; best = lv; }
                }
                const double q = gr[best];
                tr->set_code(S->dst + (r0 + r) * S->row_bytes + bi * tr->type_size, (int)(c % B), best);
                if (S->deq) S->deq[(r0 + r) * C + c] = gr[best];
                S->row_loss[r0 + r] += (wv - q) * (wv - q) / (d * d);
                const double e = (wv - q) / d;
                Er[r * bs + i] = e;
                sub_scaled(w1 + i, Urow + i1 + i, e, cnt - i);
            }
        }
        /* lazy update of the columns after the batch: Wt[:, i2:] -= Er · U[i1:i2, i2:] */
        if (i2 < C)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)(C - i2), (int)cnt, -1.0, Er,
                        (int)bs, S->U + i1 * C + i2, (int)C, 1.0, Wt + i2, (int)C);
    }
}

typedef struct diag_idx { double d; int64_t i; } diag_idx;
static int cmp_desc(const void *a, const void *b) {
    const diag_idx *x = a, *y = b;
    if (x->d != y->d) return x->d > y->d ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

nb_status nb_gptq_factor_make(const double *H, int64_t n, const nb_gptq_opts *o, nb_gptq_factor *f,
                              const char *name, nb_ctx *ctx) {
    static const nb_gptq_opts defaults = {0};
    if (!o) o = &defaults;
    if (!name) name = "?";
    memset(f, 0, sizeof *f);
    uint64_t nn;
    if (n <= 0 || n > INT32_MAX || !nb_mul_u64((uint64_t)n, (uint64_t)n, &nn) || nn > SIZE_MAX / sizeof(double))
        return nb_err(ctx, NB_ERR_RANGE, "tensor '%s': Hessian of %lld columns does not fit GPTQ", name, (long long)n);
    for (uint64_t k = 0; k < nn; k++)
        if (!isfinite(H[k]))
            return nb_err(ctx, NB_ERR_RANGE, "tensor '%s': Hessian element (%llu, %llu) is not finite", name,
                          (unsigned long long)(k / (uint64_t)n), (unsigned long long)(k % (uint64_t)n));
    const int64_t C = n;
    const double damp = o->damp > 0 ? o->damp : 0.01;
    f->n = n;
    f->act_order = o->act_order;
    f->U = nb_malloc(ctx, (size_t)nn * sizeof(double), "GPTQ Hessian");
    f->perm = nb_malloc(ctx, (size_t)C * sizeof(int64_t), "GPTQ permutation");
    f->dead = nb_calloc(ctx, (size_t)C, sizeof(bool), "GPTQ dead columns");
    diag_idx *di = nb_malloc(ctx, (size_t)C * sizeof(diag_idx), "GPTQ diagonal");
    int64_t *rperm = nb_malloc(ctx, (size_t)C * sizeof(int64_t), "GPTQ permutation");
    nb_status st = NB_OK;
    if (!f->U || !f->perm || !f->dead || !di || !rperm) { st = NB_ERR_NOMEM; goto out; }

    /* 1, 3: dead columns, order */
    double mean = 0;
    for (int64_t i = 0; i < C; i++) {
        double hd = H[i * C + i];
        if (hd < 0) NB_FAIL_GOTO(st, out, ctx, NB_ERR_RANGE, "tensor '%s': Hessian diagonal %lld is negative", name, (long long)i);
        f->dead[i] = hd == 0;
        f->n_dead += f->dead[i];
        di[i].d = f->dead[i] ? 1.0 : hd;
        di[i].i = i;
        mean += di[i].d;
    }
    mean /= (double)C;
    if (o->act_order) qsort(di, (size_t)C, sizeof *di, cmp_desc);
    for (int64_t i = 0; i < C; i++) f->perm[i] = di[i].i;
    for (int64_t i = 0; i < C; i++) rperm[i] = f->perm[i];

    /* 4, 5: dampening and U, raising the dampening while H is not positive definite */
    double dcur = damp;
    for (;;) {
        double *U = f->U;
        for (int64_t i = 0; i < C; i++) {
            const int64_t pi = rperm[i];
            const double *hr = H + pi * C;
            for (int64_t j = 0; j < C; j++) U[i * C + j] = hr[rperm[j]];
            if (f->dead[pi]) U[i * C + i] = 1.0;
            U[i * C + i] += dcur * mean;
        }
        f->damp_abs = dcur * mean;
        int info = nb_linalg_chol_inv_upper(U, C);
        if (info == 0) break;
        if (f->damp_retries >= MAX_DAMP_RETRIES || mean <= 0)
            NB_FAIL_GOTO(st, out, ctx, NB_ERR_RANGE,
                         "tensor '%s': Hessian is not positive definite even with dampening %.3g (LAPACK info %d)",
                         name, dcur, info);
        f->damp_retries++;
        dcur *= 10;
        NB_WARN(ctx, "tensor '%s': Hessian not positive definite: dampening raised to %.3g of the mean diagonal", name,
                dcur);
    }
out:
    free(di); free(rperm);
    if (st != NB_OK) nb_gptq_factor_free(f);
    return st;
}

void nb_gptq_factor_free(nb_gptq_factor *f) {
    if (!f) return;
    free(f->U); free(f->perm); free(f->dead);
    memset(f, 0, sizeof *f);
}

nb_status nb_gptq_quantize_factored(nb_type type, const float *w, int64_t n_rows, int64_t n_cols,
                                    const nb_gptq_factor *f, const nb_gptq_opts *o, void *dst, float *deq,
                                    nb_gptq_result *res, const char *name, nb_ctx *ctx) {
    static const nb_gptq_opts defaults = {0};
    if (!o) o = &defaults;
    if (!name) name = "?";
    nb_gptq_result rs = {.damp_abs = f->damp_abs, .damp_retries = f->damp_retries, .n_dead = f->n_dead};
    if (res) *res = rs;
    const nb_type_traits *tr = grid_type(type);
    if (!tr) return nb_err(ctx, NB_ERR_UNSUPPORTED, "tensor '%s': GPTQ does not support type %s", name, nb_type_name(type));
    if (n_rows <= 0 || n_cols <= 0 || n_cols % tr->block_size || n_cols > INT32_MAX)
        return nb_err(ctx, NB_ERR_RANGE, "tensor '%s': %lld x %lld does not fit GPTQ with %s (row length a multiple of %u)",
                      name, (long long)n_rows, (long long)n_cols, nb_type_name(type), tr->block_size);
    NB_RETURN_IF(ctx, f->n != n_cols || f->act_order != o->act_order, NB_ERR_INTERNAL,
                 "tensor '%s': GPTQ factor made for %lld columns%s", name, (long long)f->n,
                 f->act_order != o->act_order ? " and another column order" : "");
    for (int64_t k = 0; k < n_rows * n_cols; k++)
        if (!isfinite(w[k]))
            return nb_err(ctx, NB_ERR_RANGE, "tensor '%s': weight row %lld, column %lld is not finite", name,
                          (long long)(k / n_cols), (long long)(k % n_cols));
    const int64_t C = n_cols;
    const int bs = o->block > 0 ? o->block : 128;
    double *row_loss = nb_calloc(ctx, (size_t)n_rows, sizeof(double), "GPTQ losses");
    if (!row_loss) return NB_ERR_NOMEM;
    nb_linalg_init();
    /* 6: rows in tiles */
    shared S = {tr, w, n_rows, C, (int64_t)(C / tr->block_size * tr->type_size), f->perm, f->dead, f->U, o,
                o->static_groups || o->act_order, bs, (uint8_t *)dst, deq, row_loss};
    const int64_t ntiles = (n_rows + TILE_ROWS - 1) / TILE_ROWS;
    int nt = nb_ctx_threads(ctx);
    if (nt > ntiles) nt = (int)ntiles; /* no buffers for threads without a tile */
    int fail = 0;
#pragma omp parallel num_threads(nt) reduction(|| : fail)
    {
        tile_work tw;
        if (!tile_work_alloc(&S, &tw)) fail = 1;
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < ntiles; t++) {
            int64_t r0 = t * TILE_ROWS, nr = n_rows - r0 < TILE_ROWS ? n_rows - r0 : TILE_ROWS;
            if (!fail) run_tile(&S, r0, nr, &tw);
        }
        tile_work_free(&tw);
    }
    nb_status st = NB_OK;
    if (fail) st = nb_err(ctx, NB_ERR_NOMEM, "tensor '%s': out of memory for GPTQ work buffers", name);
    else {
        for (int64_t r = 0; r < n_rows; r++) rs.loss += row_loss[r];
        rs.loss /= 2;
    }
    free(row_loss);
    if (res) *res = rs;
    return st;
}

nb_status nb_gptq_quantize(nb_type type, const float *w, int64_t n_rows, int64_t n_cols, const double *H,
                           const nb_gptq_opts *o, void *dst, float *deq, nb_gptq_result *res, const char *name,
                           nb_ctx *ctx) {
    static const nb_gptq_opts defaults = {0};
    if (!o) o = &defaults;
    if (!name) name = "?";
    if (res) memset(res, 0, sizeof *res);
    const nb_type_traits *tr = grid_type(type);
    if (!tr) return nb_err(ctx, NB_ERR_UNSUPPORTED, "tensor '%s': GPTQ does not support type %s", name, nb_type_name(type));
    if (n_rows <= 0 || n_cols <= 0 || n_cols % tr->block_size || n_cols > INT32_MAX)
        return nb_err(ctx, NB_ERR_RANGE, "tensor '%s': %lld x %lld does not fit GPTQ with %s (row length a multiple of %u)",
                      name, (long long)n_rows, (long long)n_cols, nb_type_name(type), tr->block_size);
    for (int64_t k = 0; k < n_rows * n_cols; k++)
        if (!isfinite(w[k]))
            return nb_err(ctx, NB_ERR_RANGE, "tensor '%s': weight row %lld, column %lld is not finite", name,
                          (long long)(k / n_cols), (long long)(k % n_cols));
    nb_gptq_factor f;
    NB_TRY(nb_gptq_factor_make(H, n_cols, o, &f, name, ctx));
    nb_status st = nb_gptq_quantize_factored(type, w, n_rows, n_cols, &f, o, dst, deq, res, name, ctx);
    nb_gptq_factor_free(&f);
    return st;
}
