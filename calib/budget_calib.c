/* calib/budget_calib.c — calibrated predictions for the size-budget planner
 * (calib/budget_calib.h). */
#include "calib/budget_calib.h"

#include "core/file.h"
#include "core/progress.h"
#include "engine/embed.h"
#include "engine/ppl.h"
#include "formats/arch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The group of a tensor: its name without "blk.N.". */
static const char *group_of(const char *name) {
    if (strncmp(name, "blk.", 4)) return name;
    const char *d = strchr(name + 4, '.');
    return d ? d + 1 : name;
}

void nb_group_cal_free(nb_group_cal *c) {
    if (!c) return;
    for (size_t g = 0; g < c->n; g++) free(c->groups[g].name);
    free(c->groups);
    memset(c, 0, sizeof *c);
}

/* Mean KLD of model `path` against the reference log-probs. */
static nb_status kld_of(const char *path, const nb_group_cal_opts *o, const char *ref, double *kld, nb_ctx *ctx) {
    nb_ppl_file_opts fo = {.text_path = o->text_path, .precise = true};
    fo.ppl.n_chunks = o->n_chunks;
    fo.ppl.kld_path = ref;
    nb_ppl_result pr;
    memset(&pr, 0, sizeof pr);
    nb_status st = nb_ppl_file(path, &fo, &pr, ctx);
    *kld = pr.has_kld ? pr.kld.kld : NAN;
    nb_ppl_result_free(&pr);
    return st;
}

static bool is_encoder(const nb_model *m) {
    const nb_arch *a = nb_model_arch(m);
    return a && (a->flags & NB_ARCH_F_ENCODER);
}

/* The embeddings of every line of text by the encoder at `path` (precise arithmetic). */
static nb_status embed_set(const char *path, const char *text, size_t n, nb_emb_set *out, nb_ctx *ctx) {
    const nb_embed_opts eo = {.precise = true};
    nb_embedder *e = NULL;
    NB_TRY(nb_embed_open(path, &eo, &e, ctx));
    nb_status st = nb_embed_lines(e, text, n, false, out, NULL, NULL, ctx);
    nb_embed_free(e);
    return st;
}

/* The score of model `path`: mean KLD against the reference log-probs `ref`, or (encoder: base
 * set given) mean cosine distance of its embeddings to the base's. */
static nb_status score_of(const char *path, const nb_group_cal_opts *o, const char *ref, const char *text,
                          size_t n_text, const nb_emb_set *base, double *score, nb_ctx *ctx) {
    if (!base) return kld_of(path, o, ref, score, ctx);
    nb_emb_set set = {0};
    nb_emb_compare c;
    nb_status st = embed_set(path, text, n_text, &set, ctx);
    if (st == NB_OK) st = nb_emb_compare_sets(&set, base, false, &c, ctx);
    *score = st == NB_OK ? c.cos_dist_mean : NAN;
    nb_emb_set_free(&set);
    return st;
}

/* The frontier candidate of t nearest ref_bpw bits per weight (ties: the cheaper); 0 without one. */
static size_t measured_cand(const nb_sens_tensor *t, double n_el, double ref_bpw) {
    size_t best = 0;
    for (size_t c = 1; ref_bpw > 0 && n_el > 0 && c < t->n_cands; c++) {
        double d = fabs((double)t->cands[c].bytes * 8.0 / n_el - ref_bpw);
        double db = fabs((double)t->cands[best].bytes * 8.0 / n_el - ref_bpw);
        if (d < db) best = c;
    }
    return best;
}

/* An encoder's calibration text: at most this many bytes (one text per line). */
#define CAL_TEXT_LIMIT (64u << 20)

nb_status nb_group_calibrate(const char *src, nb_model *m, nb_sens *s, const nb_group_cal_opts *o,
                             const nb_quant_opts *qo, nb_group_cal *out, nb_ctx *ctx) {
    memset(out, 0, sizeof *out);
    NB_RETURN_IF(ctx, !o->text_path || !o->work_prefix, NB_ERR_INVALID, "calibrated predictions: no text or work path");
    size_t n = m->n_tensors;
    /* the groups, in order of first appearance */
    out->groups = nb_calloc(ctx, n ? n : 1, sizeof *out->groups, "group calibration");
    int *gi = nb_calloc(ctx, n ? n : 1, sizeof *gi, "group calibration");
    if (!out->groups || !gi) { free(gi); return NB_ERR_NOMEM; }
    size_t *ci = nb_calloc(ctx, n ? n : 1, sizeof *ci, "group calibration");
    nb_status st = ci ? NB_OK : NB_ERR_NOMEM;
    const bool enc = is_encoder(m);
    out->metric = enc ? "cos_dist" : "kld";
    double *g_el = nb_calloc(ctx, n ? n : 1, sizeof *g_el, "group calibration");
    double *g_bytes = nb_calloc(ctx, n ? n : 1, sizeof *g_bytes, "group calibration");
    if (st == NB_OK && (!g_el || !g_bytes)) st = NB_ERR_NOMEM;
    for (size_t i = 0; i < n && st == NB_OK; i++) {
        gi[i] = -1;
        if (!s->tensors[i].planned || !s->tensors[i].n_cands) continue;
        const char *g = group_of(m->tensors[i].name);
        size_t k = 0;
        while (k < out->n && strcmp(out->groups[k].name, g)) k++;
        if (k == out->n) {
            out->groups[k].name = nb_strdup(ctx, g);
            if (!out->groups[k].name) st = NB_ERR_NOMEM;
            out->n++;
        }
        gi[i] = (int)k;
        double el = (double)nb_tensor_nelements(&m->tensors[i]);
        ci[i] = measured_cand(&s->tensors[i], el, o->ref_bpw);
        out->groups[k].n_tensors++;
        out->groups[k].predicted += s->tensors[i].cands[ci[i]].err;
        g_el[k] += el;
        g_bytes[k] += (double)s->tensors[i].cands[ci[i]].bytes;
    }
    for (size_t g = 0; g < out->n && st == NB_OK; g++) out->groups[g].bpw = g_el[g] > 0 ? g_bytes[g] * 8.0 / g_el[g] : 0;
    free(g_el);
    free(g_bytes);
    /* an encoder: the text's lines embedded once by the source */
    char *text = NULL;
    size_t n_text = 0;
    nb_emb_set base = {0};
    if (st == NB_OK && enc) st = nb_read_file(o->text_path, CAL_TEXT_LIMIT, &text, &n_text, ctx);
    if (st == NB_OK && enc) st = embed_set(src, text, n_text, &base, ctx);
    size_t pl = strlen(o->work_prefix) + 32;
    char *ref = nb_malloc(ctx, pl, "path"), *var = nb_malloc(ctx, pl, "path");
    if (st == NB_OK && (!ref || !var)) st = NB_ERR_NOMEM;
    if (st == NB_OK) {
        snprintf(ref, pl, "%s.ref.logits", o->work_prefix);
        snprintf(var, pl, "%s.group.gguf", o->work_prefix);
    }
    if (st == NB_OK && !enc) {
        nb_ppl_file_opts fo = {.text_path = o->text_path, .precise = true};
        fo.ppl.n_ctx = o->n_ctx;
        fo.ppl.n_chunks = o->n_chunks;
        fo.ppl.save_path = ref;
        nb_ppl_result pr;
        memset(&pr, 0, sizeof pr);
        st = nb_ppl_file(src, &fo, &pr, ctx);
        nb_ppl_result_free(&pr);
    }
    nb_plan p;
    memset(&p, 0, sizeof p);
    const nb_plan_opts po = {.mix = nb_mix_get(NB_MIX_F16), .pure = true};
    if (st == NB_OK) st = nb_plan_make(m, &po, &p, ctx);
    /* one group at a time at its tensors' cheapest types, everything else as in the source */
    for (size_t g = 0; g < out->n && st == NB_OK; g++) {
        double t0 = nb_now();
        nb_event_stage(ctx, "start", "calibrate-group", (int)g + 1, (int)out->n, out->groups[g].name, 0);
        for (size_t i = 0; i < n; i++) {
            nb_plan_tensor *t = &p.tensors[i];
            bool in = gi[i] == (int)g;
            t->type = t->wanted = in ? s->tensors[i].cands[ci[i]].type : t->src_type;
            t->why = in ? NB_PLAN_BUDGET : NB_PLAN_KEEP;
        }
        nb_quant_result qr;
        memset(&qr, 0, sizeof qr);
        st = nb_plan_retotal(&p, ctx);
        if (st == NB_OK) st = nb_quantize_model(src, var, &p, qo, &qr, ctx);
        nb_quant_result_free(&qr);
        if (st == NB_OK) st = score_of(var, o, ref, text, n_text, enc ? &base : NULL, &out->groups[g].kld, ctx);
        unlink(var);
        if (st == NB_OK) nb_event_stage(ctx, "end", "calibrate-group", (int)g + 1, (int)out->n, NULL, nb_now() - t0);
    }
    nb_plan_free(&p);
    nb_emb_set_free(&base);
    free(text);
    if (ref && !enc) unlink(ref);
    /* factors: measured KLD per unit of predicted error; a group whose figures say nothing
     * (no predicted error, or a KLD at the noise floor) takes the median of the others */
    double *f = st == NB_OK ? nb_calloc(ctx, out->n ? out->n : 1, sizeof *f, "group calibration") : NULL;
    size_t nf = 0;
    if (st == NB_OK && !f) st = NB_ERR_NOMEM;
    for (size_t g = 0; g < out->n && st == NB_OK; g++) {
        nb_group_cal_entry *e = &out->groups[g];
        e->factor = e->predicted > 0 && e->kld > 0 && isfinite(e->kld) ? e->kld / e->predicted : NAN;
        if (isfinite(e->factor)) f[nf++] = e->factor;
    }
    if (st == NB_OK && !nf) st = nb_err(ctx, NB_ERR_RANGE, "%s: calibrated predictions: no tensor group changed the "
                                        "%s measurably (a longer text?)", o->text_path,
                                        enc ? "embeddings" : "KLD");
    if (st == NB_OK) {
        for (size_t a = 1; a < nf; a++) /* insertion sort: a handful of groups */
            for (size_t b = a; b > 0 && f[b - 1] > f[b]; b--) { double x = f[b]; f[b] = f[b - 1]; f[b - 1] = x; }
        double med = nf % 2 ? f[nf / 2] : 0.5 * (f[nf / 2 - 1] + f[nf / 2]);
        for (size_t g = 0; g < out->n; g++)
            if (!isfinite(out->groups[g].factor)) out->groups[g].factor = med;
        /* rescale every candidate's error of the group's tensors: errors become predicted KLD */
        for (size_t i = 0; i < n; i++) {
            if (gi[i] < 0) continue;
            nb_sens_tensor *t = &s->tensors[i];
            double k = out->groups[gi[i]].factor;
            for (size_t c = 0; c < t->n_cands; c++) t->cands[c].err *= k;
            for (size_t c = 0; t->slice_err && c < t->n_cands * t->n_slices; c++) t->slice_err[c] *= k;
            for (size_t c = 0; t->slice_drop && c < t->n_slices; c++) t->slice_drop[c] *= k;
        }
    }
    free(f);
    free(ci);
    free(gi);
    free(ref);
    free(var);
    return st;
}
