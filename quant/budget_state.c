/* quant/budget_state.c — the resumable measurement state of the size-budget
 * planner (nb_sens_opts.state_path; see quant/budget.h).
 *
 * A text journal, appended to as tensors are measured:
 *   line 1      "nibble-sens-state 1 <key: 64 hex digits>"
 *   then per measured tensor, one line
 *               "T <index> <n_cands> <n_slices> (<type> <bytes> <err>){n_cands}
 *                 <slice_err>{n_cands x n_slices} <slice_drop>{n_slices}"
 * errors as C99 hex floats (%a: exact, so a resumed plan is the same bytes).
 * A last line without its newline (the process died while writing it) is cut
 * off before appending. The key covers everything a measurement depends on
 * (budget_sens.c: the source's identity, the options, the importance and
 * expert weights); a journal with another key is refused, never mixed in.
 */
#include "quant/budget_impl.h"

#include "core/sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_MAGIC "nibble-sens-state 1 "
#define STATE_MAX_BYTES ((size_t)1 << 30)

/* Parse one tensor line into s (the tensor's planned flag was set by the caller). */
static nb_status parse_line(char *line, const char *path, size_t lineno, nb_sens *s, bool *done, nb_ctx *ctx) {
    char *p = line, *end;
#define BAD() nb_err(ctx, NB_ERR_FORMAT, "%s: line %zu: damaged measurement state (remove the file to start over)", \
                     path, lineno)
    if (p[0] != 'T' || p[1] != ' ') return BAD();
    p += 2;
    unsigned long long idx = strtoull(p, &end, 10), nc, ns;
    if (end == p) return BAD();
    p = end;
    nc = strtoull(p, &end, 10);
    if (end == p) return BAD();
    p = end;
    ns = strtoull(p, &end, 10);
    if (end == p) return BAD();
    p = end;
    if (idx >= s->n_tensors || nc == 0 || nc > NB_SENS_MAX_CANDS || ns > (1u << 20) || done[idx]) return BAD();
    nb_sens_tensor *t = &s->tensors[idx];
    if (!t->planned || (ns != 0) != t->expert) return BAD();
    t->n_cands = (size_t)nc;
    t->n_slices = (uint32_t)ns;
    for (size_t k = 0; k < nc; k++) {
        long ty = strtol(p, &end, 10);
        if (end == p || ty < 0 || ty >= NB_TYPE_COUNT) return BAD();
        p = end;
        unsigned long long b = strtoull(p, &end, 10);
        if (end == p) return BAD();
        p = end;
        double e = strtod(p, &end);
        if (end == p) return BAD();
        p = end;
        t->cands[k] = (nb_sens_cand){.type = (nb_type)ty, .bytes = b, .err = e};
    }
    if (ns) {
        t->slice_err = nb_calloc(ctx, (size_t)(nc * ns), sizeof *t->slice_err, "measurement state");
        t->slice_drop = nb_calloc(ctx, (size_t)ns, sizeof *t->slice_drop, "measurement state");
        if (!t->slice_err || !t->slice_drop) return NB_ERR_NOMEM;
        for (size_t k = 0; k < nc * ns; k++) {
            t->slice_err[k] = strtod(p, &end);
            if (end == p) return BAD();
            p = end;
        }
        for (size_t k = 0; k < ns; k++) {
            t->slice_drop[k] = strtod(p, &end);
            if (end == p) return BAD();
            p = end;
        }
    }
    while (*p == ' ') p++;
    if (*p) return BAD();
    done[idx] = true;
    return NB_OK;
#undef BAD
}

nb_status nb_sens_state_open(const char *path, const unsigned char key[32], nb_sens *s, bool *done, size_t *n_loaded,
                             int *fd_out, nb_ctx *ctx) {
    *n_loaded = 0;
    *fd_out = -1;
    char hex[65];
    nb_sha256_hex(key, hex);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return nb_err_errno(ctx, errno, "%s: measurement state", path);
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return nb_err(ctx, NB_ERR_IO, "%s: measurement state in use by another process", path);
    }
    struct stat sb;
    nb_status st = NB_OK;
    char *buf = NULL;
    if (fstat(fd, &sb) != 0) st = nb_err_errno(ctx, errno, "%s", path);
    else if (!S_ISREG(sb.st_mode)) st = nb_err(ctx, NB_ERR_INVALID, "%s: measurement state: not a regular file", path);
    else if ((uint64_t)sb.st_size > STATE_MAX_BYTES) st = nb_err(ctx, NB_ERR_RANGE, "%s: measurement state too large", path);
    size_t n = st == NB_OK ? (size_t)sb.st_size : 0;
    if (st == NB_OK) {
        buf = nb_malloc(ctx, n + 1, "measurement state");
        if (!buf) st = NB_ERR_NOMEM;
    }
    for (size_t got = 0; st == NB_OK && got < n;) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r <= 0) st = nb_err_errno(ctx, r < 0 ? errno : EIO, "%s: read", path);
        else got += (size_t)r;
    }
    size_t keep = 0; /* bytes of complete, valid lines */
    if (st == NB_OK) {
        buf[n] = 0;
        char *nl = memchr(buf, '\n', n);
        size_t ml = strlen(STATE_MAGIC);
        if (!nl) {
            keep = 0; /* empty, or the header itself was torn: start over */
        } else if ((size_t)(nl - buf) != ml + 64 || memcmp(buf, STATE_MAGIC, ml)) {
            st = nb_err(ctx, NB_ERR_FORMAT, "%s: not a nibble measurement state (remove it or name another file)", path);
        } else if (memcmp(buf + ml, hex, 64)) {
            st = nb_err(ctx, NB_ERR_RANGE, "%s: measurement state of another model or other options (importance "
                        "data, sample rows, runtime): remove it or name another file", path);
        } else {
            keep = (size_t)(nl - buf) + 1;
            size_t lineno = 1;
            for (char *line = nl + 1; st == NB_OK;) {
                char *e = memchr(line, '\n', n - (size_t)(line - buf));
                if (!e) break; /* a torn last line: cut off below */
                *e = 0;
                lineno++;
                st = parse_line(line, path, lineno, s, done, ctx);
                if (st == NB_OK) (*n_loaded)++;
                keep = (size_t)(e - buf) + 1;
                line = e + 1;
            }
        }
    }
    free(buf);
    if (st == NB_OK && keep < n && ftruncate(fd, (off_t)keep) != 0) st = nb_err_errno(ctx, errno, "%s: truncate", path);
    if (st == NB_OK && keep == 0) {
        char head[128];
        int hl = snprintf(head, sizeof head, "%s%s\n", STATE_MAGIC, hex);
        if (pwrite(fd, head, (size_t)hl, 0) != hl || fdatasync(fd) != 0) st = nb_err_errno(ctx, errno, "%s: write", path);
    }
    if (st == NB_OK && lseek(fd, 0, SEEK_END) < 0) st = nb_err_errno(ctx, errno, "%s: seek", path);
    if (st != NB_OK) {
        close(fd);
        return st;
    }
    *fd_out = fd;
    return NB_OK;
}

nb_status nb_sens_state_append(int fd, const char *path, size_t i, const nb_sens_tensor *t, nb_ctx *ctx) {
    size_t ns = t->slice_err ? t->n_slices : 0;
    size_t cap = 64 + t->n_cands * 64 + (t->n_cands + 1) * ns * 26;
    char *b = nb_malloc(ctx, cap, "measurement state");
    if (!b) return NB_ERR_NOMEM;
    size_t o = (size_t)snprintf(b, cap, "T %zu %zu %zu", i, t->n_cands, ns);
    for (size_t k = 0; k < t->n_cands; k++)
        o += (size_t)snprintf(b + o, cap - o, " %d %llu %a", (int)t->cands[k].type,
                              (unsigned long long)t->cands[k].bytes, t->cands[k].err);
    for (size_t k = 0; k < t->n_cands * ns; k++) o += (size_t)snprintf(b + o, cap - o, " %a", t->slice_err[k]);
    for (size_t k = 0; k < ns; k++) o += (size_t)snprintf(b + o, cap - o, " %a", t->slice_drop[k]);
    o += (size_t)snprintf(b + o, cap - o, "\n");
    nb_status st = NB_OK;
    if (o >= cap) st = nb_err(ctx, NB_ERR_INTERNAL, "measurement state: line too long");
    for (size_t w = 0; st == NB_OK && w < o;) {
        ssize_t r = write(fd, b + w, o - w);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) st = nb_err_errno(ctx, r < 0 ? errno : EIO, "%s: write", path);
        else w += (size_t)r;
    }
    free(b);
    return st;
}
