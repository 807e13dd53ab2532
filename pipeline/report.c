/* pipeline/report.c — report.html of a build: one self-contained file (inline
 * CSS and SVG, no scripts, no external fonts or images). */
#include "pipeline/build.h"

#include "core/progress.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_add(sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf *s, const char *fmt, ...) {
    if (s->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(s->p ? s->p + s->n : NULL, s->p ? s->cap - s->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { s->oom = true; return; }
        if (s->p && s->n + (size_t)k < s->cap) { s->n += (size_t)k; return; }
        size_t cap = (s->cap + (size_t)k + 1) * 2;
        char *np = nb_realloc(NULL, s->p, cap, "report");
        if (!np) { s->oom = true; return; }
        s->p = np;
        s->cap = cap;
    }
}

/* Text with HTML's special characters escaped (and control characters dropped). */
static void sb_text(sbuf *s, const char *t) {
    for (; t && *t; t++) {
        unsigned char c = (unsigned char)*t;
        if (c == '<') sb_add(s, "&lt;");
        else if (c == '>') sb_add(s, "&gt;");
        else if (c == '&') sb_add(s, "&amp;");
        else if (c == '"') sb_add(s, "&quot;");
        else if (c < 0x20 && c != '\n' && c != '\t') continue;
        else sb_add(s, "%c", c);
    }
}

/* Horizontal bars, one per (label, value); values scaled to the largest. */
static void svg_bars(sbuf *s, const char *const *label, const double *val, const char *const *note, int n,
                     const char *color) {
    double mx = 0;
    for (int i = 0; i < n; i++) mx = val[i] > mx ? val[i] : mx;
    int h = 26 * n + 10;
    sb_add(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"%d\" role=\"img\">\n", h);
    for (int i = 0; i < n; i++) {
        double w = mx > 0 ? 440.0 * val[i] / mx : 0;
        int y = 6 + 26 * i;
        sb_add(s, "<text x=\"0\" y=\"%d\" font-size=\"13\">", y + 15);
        sb_text(s, label[i]);
        sb_add(s, "</text><rect x=\"170\" y=\"%d\" width=\"%.1f\" height=\"18\" fill=\"%s\"/>", y, w, color);
        sb_add(s, "<text x=\"%.1f\" y=\"%d\" font-size=\"12\">", 176 + w, y + 14);
        sb_text(s, note[i]);
        sb_add(s, "</text>\n");
    }
    sb_add(s, "</svg>\n");
}

static double jnum(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* Size against the target: one stacked bar (memory: weights, KV cache, compute, overhead;
 * file: tensors and header) with the limit as a line. */
static void svg_budget(sbuf *s, const char *budget_json) {
    cJSON *b = budget_json ? cJSON_Parse(budget_json) : NULL;
    const cJSON *tg = b ? cJSON_GetObjectItemCaseSensitive(b, "target") : NULL;
    if (!cJSON_IsString(tg)) { cJSON_Delete(b); return; }
    const char *kind = tg->valuestring;
    const char *lab[4];
    double val[4];
    const char *col[4] = {"#4a7fb5", "#e69138", "#8e7cc3", "#999999"};
    int n = 0;
    if (!strcmp(kind, "memory")) {
        lab[n] = "weights"; val[n++] = jnum(b, "weight_bytes");
        lab[n] = "KV cache"; val[n++] = jnum(b, "kv_bytes");
        lab[n] = "compute"; val[n++] = jnum(b, "compute_bytes");
        lab[n] = "overhead"; val[n++] = jnum(b, "overhead_bytes");
    } else if (!strcmp(kind, "file")) {
        lab[n] = "tensors"; val[n++] = jnum(b, "weight_bytes");
        lab[n] = "header"; val[n++] = jnum(b, "file_bytes") - jnum(b, "weight_bytes");
    } else {
        lab[n] = "tensors"; val[n++] = jnum(b, "tensor_bytes");
    }
    double limit = jnum(b, "limit_bytes"), total = 0;
    for (int i = 0; i < n; i++) total += val[i];
    double mx = limit > total ? limit : total, x = 10;
    char b1[32], b2[32];
    sb_add(s, "<h2>Size against the target</h2>\n<p>target: %s, %s of %s", !strcmp(kind, "memory") ? "runtime memory"
           : !strcmp(kind, "file") ? "file size" : "bits per weight (tensor bytes)",
           nb_fmt_bytes(total, b1, sizeof b1), nb_fmt_bytes(limit, b2, sizeof b2));
    if (!strcmp(kind, "memory"))
        sb_add(s, " at a context of %.0f tokens, %s KV cache", jnum(b, "ctx"),
               cJSON_IsString(cJSON_GetObjectItemCaseSensitive(b, "kv_type"))
                   ? cJSON_GetObjectItemCaseSensitive(b, "kv_type")->valuestring : "");
    if (jnum(b, "keep") > 0)
        sb_add(s, "; experts pruned to %.0f of %.0f per layer by the planner", jnum(b, "keep"), jnum(b, "n_expert"));
    sb_add(s, "</p>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"%d\" role=\"img\">\n", 60 + 20 * n);
    for (int i = 0; i < n; i++) {
        double w = mx > 0 ? 680.0 * val[i] / mx : 0;
        sb_add(s, "<rect x=\"%.1f\" y=\"10\" width=\"%.1f\" height=\"26\" fill=\"%s\"><title>%s</title></rect>\n", x, w,
               col[i], lab[i]);
        x += w;
        sb_add(s, "<rect x=\"10\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"28\" y=\"%d\" "
               "font-size=\"12\">%s: %s</text>\n", 50 + 20 * i, col[i], 61 + 20 * i, lab[i],
               nb_fmt_bytes(val[i], b1, sizeof b1));
    }
    double lx = mx > 0 ? 10 + 680.0 * limit / mx : 10;
    sb_add(s, "<line x1=\"%.1f\" y1=\"4\" x2=\"%.1f\" y2=\"42\" stroke=\"#b00\" stroke-width=\"2\"/>"
           "<text x=\"%.1f\" y=\"%d\" font-size=\"12\" fill=\"#b00\" text-anchor=\"end\">limit %s</text>\n</svg>\n", lx, lx,
           lx, 61, nb_fmt_bytes(limit, b2, sizeof b2));
    cJSON_Delete(b);
}

/* Per tensor the planner chose: its predicted error (sampled rows) against the same measure over every
 * row, log-log with the diagonal; then the sums per tensor group. */
static void svg_errors(sbuf *s, const char *errors_json) {
    cJSON *a = errors_json ? cJSON_Parse(errors_json) : NULL;
    if (!cJSON_IsArray(a) || !cJSON_GetArraySize(a)) { cJSON_Delete(a); return; }
    double lo = INFINITY, hi = 0;
    for (const cJSON *e = a->child; e; e = e->next)
        for (int k = 0; k < 2; k++) {
            double v = jnum(e, k ? "measured" : "predicted");
            if (v > 0) { lo = v < lo ? v : lo; hi = v > hi ? v : hi; }
        }
    sb_add(s, "<h2>Predicted against measured error</h2>\n<p>Per tensor the planner chose: the importance-weighted "
              "squared error it predicted from sampled rows (x) and the same measure over every row of the type "
              "written (y). Points on the diagonal were predicted exactly.</p>\n");
    if (!(hi > 0) || !(lo < hi)) { lo = hi > 0 ? hi / 10 : 1e-6; hi = hi > 0 ? hi * 10 : 1; }
    double l0 = floor(log10(lo)), l1 = ceil(log10(hi));
    if (l1 <= l0) l1 = l0 + 1;
    const double W = 360, X0 = 60, Y0 = 10;
#define PX(v) (X0 + W * (log10(v) - l0) / (l1 - l0))
#define PY(v) (Y0 + W - W * (log10(v) - l0) / (l1 - l0))
    sb_add(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"460\" height=\"420\" role=\"img\">\n"
              "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#ccc\"/>\n"
              "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#aaa\" stroke-dasharray=\"4 3\"/>\n",
           X0, Y0, W, W, X0, Y0 + W, X0 + W, Y0);
    for (double d = l0; d <= l1; d += 1) {
        double px = X0 + W * (d - l0) / (l1 - l0), py = Y0 + W - W * (d - l0) / (l1 - l0);
        sb_add(s, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"10\" text-anchor=\"middle\">1e%.0f</text>"
                  "<text x=\"%.0f\" y=\"%.0f\" font-size=\"10\" text-anchor=\"end\">1e%.0f</text>\n",
               px, Y0 + W + 14, d, X0 - 4, py + 3, d);
    }
    sb_add(s, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\" text-anchor=\"middle\">predicted</text>"
              "<text x=\"12\" y=\"%.0f\" font-size=\"12\" transform=\"rotate(-90 12 %.0f)\" text-anchor=\"middle\">"
              "measured</text>\n", X0 + W / 2, Y0 + W + 30, Y0 + W / 2, Y0 + W / 2);
    for (const cJSON *e = a->child; e; e = e->next) {
        double p = jnum(e, "predicted"), m = jnum(e, "measured");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name"), *ty = cJSON_GetObjectItemCaseSensitive(e, "type");
        if (!(p > 0) || !(m > 0)) continue;
        sb_add(s, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#4a7fb5\" fill-opacity=\"0.7\"><title>", PX(p), PY(m));
        sb_text(s, cJSON_IsString(nm) ? nm->valuestring : "");
        sb_add(s, " (");
        sb_text(s, cJSON_IsString(ty) ? ty->valuestring : "");
        sb_add(s, "): predicted %.4g, measured %.4g</title></circle>\n", p, m);
    }
    sb_add(s, "</svg>\n");
#undef PX
#undef PY
    /* sums per group (the name without blk.N.) */
    enum { MAXG = 48 };
    char g[MAXG][64];
    double gp[MAXG] = {0}, gm[MAXG] = {0};
    int gn[MAXG] = {0}, ng = 0;
    for (const cJSON *e = a->child; e; e = e->next) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
        if (!cJSON_IsString(nm)) continue;
        const char *n = nm->valuestring;
        if (!strncmp(n, "blk.", 4) && strchr(n + 4, '.')) n = strchr(n + 4, '.') + 1;
        int k = 0;
        while (k < ng && strcmp(g[k], n)) k++;
        if (k == ng) {
            if (ng == MAXG) continue;
            snprintf(g[ng++], sizeof g[0], "%s", n);
        }
        gp[k] += jnum(e, "predicted");
        gm[k] += jnum(e, "measured");
        gn[k]++;
    }
    sb_add(s, "<table><tr><th>tensor group</th><th>tensors</th><th>predicted</th><th>measured</th>"
              "<th>measured / predicted</th></tr>\n");
    for (int k = 0; k < ng; k++) {
        sb_add(s, "<tr><td>");
        sb_text(s, g[k]);
        sb_add(s, "</td><td>%d</td><td>%.4g</td><td>%.4g</td><td>%.3f</td></tr>\n", gn[k], gp[k], gm[k],
               gp[k] > 0 ? gm[k] / gp[k] : 0);
    }
    sb_add(s, "</table>\n");
    cJSON_Delete(a);
}

/* One metric as a dot with its ±1 standard error whisker, the reference and the gate's limit as lines. */
static void svg_metric(sbuf *s, const char *label, double v, double err, double ref, bool has_ref, double limit,
                       bool has_limit, const char *text) {
    double lo = v - 3 * err, hi = v + 3 * err;
    if (has_ref) { lo = ref < lo ? ref : lo; hi = ref > hi ? ref : hi; }
    if (has_limit) { lo = limit < lo ? limit : lo; hi = limit > hi ? limit : hi; }
    if (!(hi > lo)) { lo = v - 1; hi = v + 1; }
    double pad = 0.08 * (hi - lo);
    lo -= pad;
    hi += pad;
#define SX(x) (180 + 500 * ((x) - lo) / (hi - lo))
    sb_add(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"44\" role=\"img\">\n"
              "<text x=\"0\" y=\"24\" font-size=\"13\">%s</text>\n"
              "<line x1=\"180\" y1=\"22\" x2=\"680\" y2=\"22\" stroke=\"#ddd\"/>\n", label);
    if (has_ref)
        sb_add(s, "<line x1=\"%.1f\" y1=\"8\" x2=\"%.1f\" y2=\"36\" stroke=\"#777\"><title>reference</title></line>\n",
               SX(ref), SX(ref));
    if (has_limit)
        sb_add(s, "<line x1=\"%.1f\" y1=\"6\" x2=\"%.1f\" y2=\"38\" stroke=\"#b00\" stroke-width=\"2\">"
                  "<title>gate limit</title></line>\n", SX(limit), SX(limit));
    sb_add(s, "<line x1=\"%.1f\" y1=\"22\" x2=\"%.1f\" y2=\"22\" stroke=\"#4a7fb5\" stroke-width=\"2\"/>"
              "<line x1=\"%.1f\" y1=\"16\" x2=\"%.1f\" y2=\"28\" stroke=\"#4a7fb5\"/>"
              "<line x1=\"%.1f\" y1=\"16\" x2=\"%.1f\" y2=\"28\" stroke=\"#4a7fb5\"/>"
              "<circle cx=\"%.1f\" cy=\"22\" r=\"4\" fill=\"#4a7fb5\"/>\n",
           SX(v - err), SX(v + err), SX(v - err), SX(v - err), SX(v + err), SX(v + err), SX(v));
    sb_add(s, "<text x=\"690\" y=\"26\" font-size=\"11\" text-anchor=\"end\" dy=\"-12\">%s</text>\n</svg>\n", text);
#undef SX
}

/* The per-token KLD distribution: the histogram the validation counted (fixed log-spaced bins,
 * engine/ppl.h), one bar per bin between the first and last non-empty one, the tokens below
 * 10^NB_KLD_HIST_LO and at or above 10^NB_KLD_HIST_HI as bars of their own at the ends; the median
 * and 99 % marked; then the percentiles as a table. */
static void svg_kld_dist(sbuf *s, const nb_build_result *r) {
    /* nb_kld_pct_at order: max, 99.9, 99, 95, 90, median, 10, 5, 1, 0.1, min */
    static const char *const at[11] = {"max", "99.9%", "99%", "95%", "90%", "median", "10%", "5%", "1%", "0.1%", "min"};
    const double *q = r->kld_pct;
    sb_add(s, "<h3>KLD per token</h3>\n");
    if (r->has_kld_hist) {
        const uint64_t *h = r->kld_hist;
        const int nb = NB_KLD_HIST_BINS;
        int first = -1, last = -1;
        uint64_t peak = 0, total = 0;
        for (int i = 0; i < nb; i++) {
            if (!h[i]) continue;
            if (first < 0) first = i;
            last = i;
            peak = h[i] > peak ? h[i] : peak;
            total += h[i];
        }
        if (first >= 0) {
            /* whole decades on the log axis, so each boundary gets its label */
            const int P = NB_KLD_HIST_PER_DECADE;
            if (first >= 1 && first <= nb - 2) first = 1 + P * ((first - 1) / P);
            if (last >= 1 && last <= nb - 2) last = P * ((last - 1) / P + 1);
            int n = last - first + 1;
            double w = 640.0 / n;
            sb_add(s, "<p>How the KL-divergence of the %llu evaluation tokens is spread: one bar per bin, %d bins "
                      "per decade (log axis), height the share of tokens; red: the median, dashed: the 99th "
                      "percentile.</p>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"190\" "
                      "role=\"img\">\n", (unsigned long long)total, NB_KLD_HIST_PER_DECADE);
            for (int i = first; i <= last; i++) {
                double x = 40 + w * (i - first), bh = 140.0 * (double)h[i] / (double)peak;
                char range[96];
                if (i == 0) snprintf(range, sizeof range, "KLD &lt; %.3g", nb_kld_hist_edge(0));
                else if (i == nb - 1) snprintf(range, sizeof range, "KLD &ge; %.3g", nb_kld_hist_edge(nb - 2));
                else snprintf(range, sizeof range, "%.3g &le; KLD &lt; %.3g", nb_kld_hist_edge(i - 1), nb_kld_hist_edge(i));
                sb_add(s, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%s: %llu "
                          "tokens (%.2f%%)</title></rect>\n", x + 0.5, 150 - bh, w > 2 ? w - 1 : w, bh,
                       i == 0 || i == nb - 1 ? "#999" : "#4a7fb5", range, (unsigned long long)h[i],
                       100.0 * (double)h[i] / (double)total);
                /* a label at each decade's first bin, and at the end bins */
                if (i == 0) sb_add(s, "<text x=\"%.1f\" y=\"166\" font-size=\"10\" text-anchor=\"middle\">&lt;1e%d</text>\n", x + w / 2, NB_KLD_HIST_LO);
                else if (i == nb - 1) sb_add(s, "<text x=\"%.1f\" y=\"166\" font-size=\"10\" text-anchor=\"middle\">&ge;1e%d</text>\n", x + w / 2, NB_KLD_HIST_HI);
                else if ((i - 1) % NB_KLD_HIST_PER_DECADE == 0)
                    sb_add(s, "<line x1=\"%.1f\" y1=\"150\" x2=\"%.1f\" y2=\"155\" stroke=\"#333\"/><text x=\"%.1f\" "
                              "y=\"166\" font-size=\"10\" text-anchor=\"middle\">1e%d</text>\n", x, x, x,
                           NB_KLD_HIST_LO + (i - 1) / NB_KLD_HIST_PER_DECADE);
            }
            if (last >= 1 && last <= nb - 2) /* the right end of the last decade */
                sb_add(s, "<line x1=\"680\" y1=\"150\" x2=\"680\" y2=\"155\" stroke=\"#333\"/><text x=\"680\" "
                          "y=\"166\" font-size=\"10\" text-anchor=\"middle\">1e%d</text>\n", NB_KLD_HIST_LO + last / P);
            sb_add(s, "<line x1=\"40\" y1=\"150\" x2=\"680\" y2=\"150\" stroke=\"#333\"/>\n"
                      "<text x=\"360\" y=\"184\" font-size=\"11\" text-anchor=\"middle\">KLD per token</text>\n"
                      "<text x=\"36\" y=\"14\" font-size=\"10\" text-anchor=\"end\">%.1f%%</text>\n",
                   100.0 * (double)peak / (double)total);
            /* the median and the 99th percentile, placed inside their bins on the log scale */
            for (int m = 0; m < 2 && r->has_kld_pct; m++) {
                double v = q[m ? 2 : 5];
                int bi = nb_kld_hist_bin(v);
                if (bi < first || bi > last) continue;
                double frac = 0.5;
                if (bi > 0 && bi < nb - 1) {
                    double lo = log10(nb_kld_hist_edge(bi - 1)), hi = log10(nb_kld_hist_edge(bi));
                    frac = (log10(v) - lo) / (hi - lo);
                }
                double x = 40 + w * (bi - first + frac);
                sb_add(s, "<line x1=\"%.1f\" y1=\"6\" x2=\"%.1f\" y2=\"150\" stroke=\"#b00\" stroke-width=\"1.5\"%s>"
                          "<title>%s: %.4g</title></line>\n", x, x, m ? " stroke-dasharray=\"4 3\"" : "",
                       m ? "99th percentile" : "median", v);
            }
            sb_add(s, "</svg>\n");
        }
    } else if (r->has_kld_pct) {
        sb_add(s, "<p>(no histogram in this build's validation: its percentiles only)</p>\n");
    }
    if (!r->has_kld_pct) return;
    sb_add(s, "<table><tr>");
    for (int k = 10; k >= 0; k--) sb_add(s, "<th>%s</th>", at[k]);
    sb_add(s, "</tr><tr>");
    for (int k = 10; k >= 0; k--) sb_add(s, "<td>%.4g</td>", q[k]);
    sb_add(s, "</tr></table>\n");
}

char *nb_build_report_html(const nb_build_result *r, const char *plan_json) {
    sbuf s = {0};
    const nb_recipe *rc = &r->recipe;
    char b1[32], b2[32];
    sb_add(&s, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>nibble build: ");
    sb_text(&s, rc->name);
    sb_add(&s, "</title>\n<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
               "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
               "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.fail{color:#b00;font-weight:bold}"
               ".pass{color:#070;font-weight:bold}pre{background:#f7f7f7;padding:1em;overflow:auto}</style></head><body>\n");
    sb_add(&s, "<h1>");
    sb_text(&s, rc->name);
    sb_add(&s, "</h1>\n<p>");
    sb_text(&s, rc->description ? rc->description : "");
    sb_add(&s, "</p>\n");
    svg_budget(&s, r->budget_json);
    sb_add(&s, "<h2>Size</h2>\n");
    const char *lab[2] = {"source tensors", "variant file"};
    double val[2] = {(double)r->source_bytes, (double)r->model_bytes};
    char n0[64], n1[64];
    snprintf(n0, sizeof n0, "%s", nb_fmt_bytes(val[0], b1, sizeof b1));
    snprintf(n1, sizeof n1, "%s (%.3f bits per weight)", nb_fmt_bytes(val[1], b2, sizeof b2), r->bpw);
    const char *notes[2] = {n0, n1};
    svg_bars(&s, lab, val, notes, 2, "#4a7fb5");

    /* bits per tensor group from the plan: group = the name without "blk.N." */
    cJSON *plan = plan_json ? cJSON_Parse(plan_json) : NULL;
    const cJSON *ts = plan ? cJSON_GetObjectItemCaseSensitive(plan, "tensors") : NULL;
    enum { MAXG = 48 };
    char gname[MAXG][64];
    double gbytes[MAXG] = {0}, gel[MAXG] = {0};
    int ng = 0;
    for (const cJSON *t = ts ? ts->child : NULL; t; t = t->next) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(t, "name"), *bo = cJSON_GetObjectItemCaseSensitive(t, "bytes_out"),
                    *sh = cJSON_GetObjectItemCaseSensitive(t, "shape");
        if (!cJSON_IsString(nm) || !cJSON_IsNumber(bo) || !cJSON_IsArray(sh)) continue;
        const char *g = nm->valuestring;
        if (!strncmp(g, "blk.", 4) && strchr(g + 4, '.')) g = strchr(g + 4, '.') + 1;
        double el = 1;
        for (const cJSON *d = sh->child; d; d = d->next) el *= d->valuedouble;
        int k = 0;
        while (k < ng && strcmp(gname[k], g)) k++;
        if (k == ng) {
            if (ng == MAXG) continue;
            snprintf(gname[ng++], sizeof gname[0], "%s", g);
        }
        gbytes[k] += bo->valuedouble;
        gel[k] += el;
    }
    if (ng) {
        sb_add(&s, "<h2>Bits per weight by tensor group</h2>\n");
        const char *gl[MAXG], *gn[MAXG];
        double gv[MAXG];
        char notes_buf[MAXG][48];
        for (int k = 0; k < ng; k++) {
            gl[k] = gname[k];
            gv[k] = gel[k] > 0 ? 8.0 * gbytes[k] / gel[k] : 0;
            snprintf(notes_buf[k], sizeof notes_buf[k], "%.2f bpw, %s", gv[k], nb_fmt_bytes(gbytes[k], b1, sizeof b1));
            gn[k] = notes_buf[k];
        }
        svg_bars(&s, gl, gv, gn, ng, "#6aa84f");
    }
    cJSON_Delete(plan);
    svg_errors(&s, r->errors_json);

    sb_add(&s, "<h2>Quality against the source</h2>\n");
    if (r->validated) {
        double inc = r->ppl_ref > 0 ? 100.0 * (r->ppl / r->ppl_ref - 1.0) : 0;
        sb_add(&s, "<table><tr><th>metric</th><th>value</th><th>limit</th></tr>\n"
                   "<tr><td>PPL (reference)</td><td>%.4f</td><td></td></tr>\n"
                   "<tr><td>PPL (variant)</td><td>%.4f &plusmn; %.4f</td><td></td></tr>\n",
               r->ppl_ref, r->ppl, r->ppl_err);
        sb_add(&s, "<tr><td>PPL increase</td><td>%.3f%%</td><td>", inc);
        if (rc->gate_ppl) sb_add(&s, "&le; %.3f%%", rc->max_ppl_increase_pct);
        sb_add(&s, "</td></tr>\n<tr><td>mean KLD</td><td>%.6f &plusmn; %.6f</td><td>", r->kld, r->kld_err);
        if (rc->gate_kld) sb_add(&s, "&le; %.6f", rc->max_kld);
        sb_add(&s, "</td></tr>\n<tr><td>same top token</td><td>%.3f%%</td><td>", 100.0 * r->same_top);
        if (rc->gate_top) sb_add(&s, "&ge; %.3f%%", rc->min_same_top_pct);
        sb_add(&s, "</td></tr></table>\n<p class=\"%s\">quality gate: ", r->gate_failed ? "fail" : "pass");
        sb_text(&s, r->gate_failed ? r->gate_msg : "passed");
        sb_add(&s, "</p>\n<p>Each figure with its &plusmn;1 standard error (whiskers); grey: the source, red: the "
                   "gate's limit.</p>\n");
        char t[3][96];
        snprintf(t[0], sizeof t[0], "%.4f \xc2\xb1 %.4f", r->ppl, r->ppl_err);
        snprintf(t[1], sizeof t[1], "%.6f \xc2\xb1 %.6f", r->kld, r->kld_err);
        snprintf(t[2], sizeof t[2], "%.2f \xc2\xb1 %.2f %%", 100.0 * r->same_top, 100.0 * r->same_top_err);
        svg_metric(&s, "PPL", r->ppl, r->ppl_err, r->ppl_ref, r->ppl_ref > 0,
                   r->ppl_ref * (1 + rc->max_ppl_increase_pct / 100), rc->gate_ppl && r->ppl_ref > 0, t[0]);
        svg_metric(&s, "mean KLD", r->kld, r->kld_err, 0, true, rc->max_kld, rc->gate_kld, t[1]);
        svg_metric(&s, "same top token (%)", 100.0 * r->same_top, 100.0 * r->same_top_err, 100, true,
                   rc->min_same_top_pct, rc->gate_top, t[2]);
        if (r->has_kld_pct || r->has_kld_hist) svg_kld_dist(&s, r);
    } else {
        sb_add(&s, "<p>not validated (the recipe has no validation text)</p>\n");
    }
    sb_add(&s, "<h2>Outputs</h2>\n<table><tr><th>output</th><th>format</th><th>files</th><th>size</th></tr>\n");
    if (rc->gguf) {
        sb_add(&s, "<tr><td>");
        sb_text(&s, rc->out_file);
        sb_add(&s, "</td><td>gguf</td><td>1</td><td>%s</td></tr>\n", nb_fmt_bytes((double)r->model_bytes, b1, sizeof b1));
    }
    for (size_t i = 0; i < r->n_outputs; i++) {
        sb_add(&s, "<tr><td>");
        sb_text(&s, rc->outputs[i].name);
        sb_add(&s, "/</td><td>%s</td><td>%zu</td><td>%s</td></tr>\n", r->outputs[i].format, r->outputs[i].n_files,
               nb_fmt_bytes((double)r->outputs[i].bytes, b1, sizeof b1));
    }
    sb_add(&s, "</table>\n<p>Every output holds the weights the quality figures above were measured on: the GGUF "
               "is the quantize stage's file, and a GPTQ / AWQ directory packs its INT4 weights losslessly (an "
               "hf directory holds them dequantized; bnb-nf4 repacks its NF4 blocks, or by rtn is bitsandbytes' own "
               "quantization of the same source). manifest.json lists every file with its size and SHA-256.</p>\n");
    sb_add(&s, "<h2>Stages</h2>\n<table><tr><th>stage</th><th>seconds</th><th></th></tr>\n");
    for (int i = 0; i < r->n_stages; i++) {
        sb_add(&s, "<tr><td>");
        sb_text(&s, r->stages[i].name);
        sb_add(&s, "</td><td>%.2f</td><td>%s</td></tr>\n", r->stages[i].seconds,
               r->stages[i].skipped ? "done in an earlier run" : "");
    }
    sb_add(&s, "</table>\n<h2>Recipe</h2>\n<pre>");
    sb_text(&s, rc->text);
    sb_add(&s, "</pre>\n<p>nibble %s</p>\n</body></html>\n", NB_VERSION);
    if (s.oom) { free(s.p); return NULL; }
    return s.p;
}
