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
        char *np = realloc(s->p, cap);
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
    sb_add(&s, "</p>\n<h2>Size</h2>\n");
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
        sb_add(&s, "</p>\n");
    } else {
        sb_add(&s, "<p>not validated (the recipe has no validation text)</p>\n");
    }
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
