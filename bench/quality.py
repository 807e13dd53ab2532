#!/usr/bin/env python3
"""bench/quality.py — the quality table of issue 5 (driven by bench/quality.sh).

For each real model (scripts/fetch-models) the source is the model's own
weights dequantized to F32 (`nibble convert --type f32`; the cached files are
4-bit GGUFs, so F32 keeps every dequantized value exactly). Every 4-bit scheme
is quantized from that source with each method (rtn, imatrix, gptq) and scored
with `nibble ppl` on tests/data/text/eval.txt: PPL, and mean KLD / same-top-token
rate against the source's saved log-probs. Quantize wall time and peak RSS come
from /usr/bin/time -v. The imatrix (imatrix rows) is collected once per model
by `nibble calibrate` from tests/data/text/calib.txt with the same token budget
GPTQ gets; its time is reported separately.

Raw rows go to a TSV (resumable: rows already there are not re-run); the
markdown section "## Quality" of bench/RESULTS.md is (re)written from it.
"""
import argparse
import csv
import json
import os
import platform
import re
import subprocess
import sys
import time

# nf4-dq only differs from nf4 on rows that are a multiple of 16384 (quant/mix.h):
# neither model has one, so it is left out by default (it would repeat nf4).
SCHEMES = ["q4_k_m", "int4-g128", "nf4", "iq4_nl", "q4_0", "int4-asym-g128"]
METHODS = ["rtn", "imatrix", "gptq"]  # add gptq-act with --methods
FIELDS = ["model", "scheme", "method", "bytes", "bpw", "bpw_blk", "ppl", "ppl_err", "kld", "kld_err", "same_top",
          "seconds", "rss_mb", "note"]

# Which grids the source quantization shares (the source's values lie on
# those grids, so re-quantizing to them can recover the source almost exactly).
SOURCE_NOTE = {
    "gemma3-270m": ("Q4_K_M file: block matrices Q5_0 (attn_q/k, ffn_gate/up: rows of 640 are not a multiple "
                    "of 256, llama.cpp's fallback), Q4_K (attn_output), Q6_K / Q8_0 (ffn_down, attn_v), "
                    "token_embd Q8_0 (tied output). nibble's q4_k_m mix plans exactly these types, so the q4_k_m "
                    "rows re-round values that already sit on their grid", {"q4_k_m"}),
    "smollm2-135m": ("Q4_1 file: every block matrix Q4_1 (scale + min per 32), token_embd Q8_0 (tied output). "
                     "Q4_K's sub-blocks (scale + min per 32) nearly contain that grid; INT4 asym (zero point per "
                     "128) partly", {"q4_k_m", "int4-asym-g128"}),
}


def run(cmd, log, timed=False):
    """Run cmd, appending its output to log; returns (stdout, seconds, max_rss_mb)."""
    full = (["/usr/bin/time", "-v"] + cmd) if timed else cmd
    t0 = time.time()
    p = subprocess.run(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dt = time.time() - t0
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n" + p.stderr[-4000:] + "\n")
    if p.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s" % (p.returncode, " ".join(cmd), p.stderr[-2000:]))
    rss = None
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    if m:
        rss = int(m.group(1)) / 1024.0
    return p.stdout, dt, rss


def ppl_json(out):
    i = out.find("{")
    return json.loads(out[i:])


def get(d, *keys):
    """First key present, searching nested dicts (the ppl JSON groups KLD fields)."""
    for k in keys:
        if k in d:
            return d[k]
    for v in d.values():
        if isinstance(v, dict):
            r = get(v, *keys)
            if r is not None:
                return r
    return None


def load_rows(tsv):
    rows = {}
    if os.path.exists(tsv):
        with open(tsv) as f:
            rd = csv.DictReader(f, delimiter="\t")
            old = rd.fieldnames != FIELDS
            for r in rd:
                rows[(r["model"], r["scheme"], r["method"])] = {k: (r.get(k) or "") for k in FIELDS}
        if old:  # written by an earlier version of this script: rewrite with today's columns
            rewrite(tsv, rows)
    return rows


def rewrite(tsv, rows):
    with open(tsv + ".tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, delimiter="\t")
        w.writeheader()
        for r in rows.values():
            w.writerow(r)
    os.replace(tsv + ".tmp", tsv)


def blk_bpw(q):
    """Bits per weight of the block matrices (blk.*, >= 2 dims) from a quantize JSON."""
    b = n = 0
    for t in q.get("tensors", []):
        if t["name"].startswith("blk.") and len(t["shape"]) >= 2:
            e = 1
            for d in t["shape"]:
                e *= d
            b += t["bytes_out"]
            n += e
    return 8.0 * b / n if n else None


def save_row(tsv, row):
    new = not os.path.exists(tsv)
    with open(tsv, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, delimiter="\t")
        if new:
            w.writeheader()
        w.writerow(row)


def fnum(x, fmt):
    try:
        return fmt % float(x)
    except (TypeError, ValueError):
        return "—"


def render(rows, meta, args):
    out = ["## Quality", ""]
    out.append("Generated by `bench/quality.sh` (bench/quality.py) on %s, %s, commit %s. "
               "Source = the model's own weights dequantized to F32; eval text tests/data/text/eval.txt, "
               "`nibble ppl --ctx %d --chunks %d` (KLD and same-top-token over the %s scored tokens, against the "
               "F32 source); calibration (imatrix and GPTQ) tests/data/text/calib.txt, %d tokens (chunks of %d), "
               "seed 0. Sizes and bits per weight are the whole file's tensors (embeddings included). Time and "
               "peak RSS are those of `nibble quantize` (imatrix rows: plus the one-off `nibble calibrate` time "
               "shown per model). GPTQ: damp 0.01, lazy blocks 128, importance for the scale search "
               "from the Hessian's diagonal; gptq-act = the same with --act-order (static groups). The machine is shared (2 cores, other jobs running): times are "
               "indicative only."
               % (meta.get("date", "?"), meta.get("machine", "?"), meta.get("commit", "?"), args.ctx, args.chunks,
                  meta.get("scored", "?"), args.calib_tokens, args.ctx))
    out.append("")
    out.append("bpw file: all tensors (embeddings included: Gemma 3 270M's 262k x 640 embedding table is 63 % "
               "of its weights and stays Q8_0/Q6_K/F16 per mix, so whole-file figures sit far above 4.5); "
               "bpw blocks: the blk.* matrices only, which is where the 4-bit schemes differ. nf4-dq is not "
               "listed: it double-quantizes only rows that are a multiple of 16384, which neither model has, so "
               "it would repeat the nf4 rows. The ‘original file’ KLD below is the floor every row shares: "
               "those are the source's own weights, and the KLD comes from the engine's 8-bit quantization of "
               "activations in quantized matmuls (F32 weights multiply in float).")
    out.append("")
    out.append("**Biased rows (marked ⚠)**: the source values already lie on that grid (or a finer one of the "
               "same family), so plain rounding recovers them almost exactly and the row says little about the "
               "scheme on a real F16 model.")
    out.append("")
    for model in meta["models"]:
        mm = meta["per_model"].get(model, {})
        note, biased = SOURCE_NOTE.get(model, ("?", set()))
        out.append("### %s" % model)
        out.append("")
        out.append("Source: %s. F32 source PPL %s ± %s; original file PPL %s, KLD vs F32 source %s "
                   "(the same weights as the source: this is the engine's activation-quantization floor, see above). "
                   "imatrix collection: %s s."
                   % (note, fnum(mm.get("ppl_src"), "%.4f"), fnum(mm.get("ppl_src_err"), "%.4f"),
                      fnum(mm.get("ppl_orig"), "%.4f"), fnum(mm.get("kld_orig"), "%.6f"),
                      fnum(mm.get("calib_seconds"), "%.1f")))
        out.append("")
        out.append("| scheme | method | size MiB | bpw file | bpw blocks | PPL | mean KLD | same top % | quantize s | peak RSS MiB | note |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for scheme in args.schemes:
            for method in args.methods:
                r = rows.get((model, scheme, method))
                if not r:
                    continue
                flag = " ⚠" if scheme in biased else ""
                out.append("| %s%s | %s | %s | %s | %s | %s ± %s | %s ± %s | %s | %s | %s | %s |" % (
                    scheme, flag, method, fnum(float(r["bytes"]) / 2**20 if r["bytes"] else None, "%.1f"),
                    fnum(r["bpw"], "%.3f"), fnum(r["bpw_blk"], "%.3f"), fnum(r["ppl"], "%.3f"), fnum(r["ppl_err"], "%.3f"),
                    fnum(r["kld"], "%.5f"), fnum(r["kld_err"], "%.5f"), fnum(r["same_top"], "%.2f"),
                    fnum(r["seconds"], "%.1f"), fnum(r["rss_mb"], "%.0f"), r.get("note", "")))
        out.append("")
        out.extend(goal_lines(rows, model, args, biased))
        out.append("")
    return "\n".join(out) + "\n"


def goal_lines(rows, model, args, biased):
    lines = []
    ref = rows.get((model, "q4_k_m", "imatrix"))
    cands = [r for (m, s, me), r in rows.items() if m == model and me != "rtn" and r["kld"]
             and r["bpw_blk"] and float(r["bpw_blk"]) <= 4.6]
    if ref and ref["kld"] and cands:
        best = min(cands, key=lambda r: float(r["kld"]))
        ratio = float(best["kld"]) / float(ref["kld"])
        lines.append("Goal 1 (best calibrated file ≤ 4.6 bpw in the block weights has KLD ≤ 0.8 × Q4_K_M+imatrix): "
                     "best is %s/%s (%.3f bpw blocks) with KLD %.5f vs %.5f → ratio %.3f: **%s**%s." % (
                         best["scheme"], best["method"], float(best["bpw_blk"]), float(best["kld"]), float(ref["kld"]),
                         ratio, "met" if ratio <= 0.8 else "not met",
                         " (the reference Q4_K_M row is marked biased above: read the ratio with that in mind)"
                         if "q4_k_m" in biased else ""))
    cmp = []
    for scheme in args.schemes:
        g, r = rows.get((model, scheme, "gptq")), rows.get((model, scheme, "rtn"))
        if g and r and g["kld"] and r["kld"] and not g.get("note"):
            ok = float(g["kld"]) < float(r["kld"])
            cmp.append("%s %.5f vs %.5f (%s)" % (scheme, float(g["kld"]), float(r["kld"]), "better" if ok else "NOT better"))
    if cmp:
        lines.append("Goal 2 (GPTQ strictly better than RTN, mean KLD): " + "; ".join(cmp) + ".")
    return lines


def write_section(results_md, text):
    cur = open(results_md).read() if os.path.exists(results_md) else "# Benchmark results\n"
    m = re.search(r"^## Quality\n.*?(?=^## |\Z)", cur, flags=re.S | re.M)
    if m:
        cur = cur[:m.start()] + text + ("\n" if m.end() < len(cur) else "") + cur[m.end():]
    else:
        cur = cur.rstrip("\n") + "\n\n" + text
    open(results_md, "w").write(cur)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nibble", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--models", default="gemma3-270m,smollm2-135m")
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--calib-tokens", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--results", default=None, help="RESULTS.md to update (default: bench/RESULTS.md)")
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    args.schemes = [s for s in args.schemes.split(",") if s]
    args.methods = [m for m in args.methods.split(",") if m]
    nb = args.nibble
    os.makedirs(args.work, exist_ok=True)
    log = os.path.join(args.work, "quality.log")
    tsv = os.path.join(args.work, "quality.tsv")
    metaf = os.path.join(args.work, "quality_meta.json")
    meta = json.load(open(metaf)) if os.path.exists(metaf) else {"per_model": {}}
    meta["models"] = args.models
    meta["date"] = time.strftime("%Y-%m-%d")
    meta["machine"] = "%s, %d CPUs" % (platform.machine(), os.cpu_count() or 0)
    try:
        meta["commit"] = subprocess.run(["git", "-C", args.repo, "rev-parse", "--short", "HEAD"],
                                        stdout=subprocess.PIPE, text=True).stdout.strip()
    except OSError:
        meta["commit"] = "?"
    thr = ["--threads", str(args.threads)] if args.threads else []
    evalt = os.path.join(args.repo, "tests/data/text/eval.txt")
    calibt = os.path.join(args.repo, "tests/data/text/calib.txt")
    rows = load_rows(tsv)
    pplargs = ["--text", evalt, "--ctx", str(args.ctx), "--chunks", str(args.chunks), "--json"] + thr
    calargs = ["--calib", calibt, "--ctx", str(args.ctx), "--calib-tokens", str(args.calib_tokens)]
    for model in ([] if args.render_only else args.models):
        p = subprocess.run([os.path.join(args.repo, "scripts/fetch-models"), "--path", model],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if p.returncode != 0:
            print("quality: %s is not cached (scripts/fetch-models): skipped" % model, file=sys.stderr)
            continue
        orig = p.stdout.strip()
        d = os.path.join(args.work, model)
        os.makedirs(d, exist_ok=True)
        mm = meta["per_model"].setdefault(model, {})
        src = os.path.join(d, "src-f32.gguf")
        base = os.path.join(d, "base-logits.bin")
        imx = os.path.join(d, "imatrix.gguf")
        if not os.path.exists(src):
            run([nb, "convert", orig, "-o", src, "--type", "f32", "--quiet"] + thr, log)
        if not os.path.exists(base) or "ppl_src" not in mm:
            out, _, _ = run([nb, "ppl", src, "--save-logits", base] + pplargs, log)
            j = ppl_json(out)
            mm["ppl_src"], mm["ppl_src_err"] = get(j, "ppl"), get(j, "ppl_err")
            meta["scored"] = get(j, "n_scored")
            json.dump(meta, open(metaf, "w"), indent=1)
        if "kld_orig" not in mm:
            out, _, _ = run([nb, "ppl", orig, "--kld", base] + pplargs, log)
            j = ppl_json(out)
            mm["ppl_orig"], mm["kld_orig"] = get(j, "ppl_q", "ppl"), get(j, "kld_mean")
            json.dump(meta, open(metaf, "w"), indent=1)
        if "imatrix" in args.methods and not os.path.exists(imx):
            _, dt, _ = run([nb, "calibrate", src, "-o", imx, "--quiet"] + calargs + thr, log, timed=True)
            mm["calib_seconds"] = dt
            json.dump(meta, open(metaf, "w"), indent=1)
        fixed = False
        for (m_, sc, me), r in rows.items():
            if m_ == model and not r.get("bpw_blk") and r.get("bytes"):
                out, _, _ = run([nb, "quantize", src, "--dry-run", "--type", sc, "--json"], log)
                bb = blk_bpw(json.loads(out[out.find("{"):]))
                r["bpw_blk"] = "%.4f" % bb if bb else ""
                fixed = True
        if fixed:
            rewrite(tsv, rows)
        for scheme in args.schemes:
            for method in args.methods:
                if (model, scheme, method) in rows:
                    continue
                outq = os.path.join(d, "%s-%s.gguf" % (scheme, method))
                cmd = [nb, "quantize", src, "-o", outq, "--type", scheme, "--json", "--quiet"] + thr
                if method == "imatrix":
                    cmd += ["--method", "imatrix", "--imatrix", imx]
                elif method == "gptq":
                    cmd += ["--method", "gptq"] + calargs
                elif method == "gptq-act":  # GPTQ with act-order (desc_act, static groups)
                    cmd += ["--method", "gptq", "--act-order"] + calargs
                note = ""
                try:
                    out, dt, rss = run(cmd, log, timed=True)
                except RuntimeError as e:
                    print("quality: %s" % e, file=sys.stderr)
                    save_row(tsv, {"model": model, "scheme": scheme, "method": method, "note": "failed"})
                    continue
                q = json.loads(out[out.find("{"):])
                bpw = 8.0 * q["tensor_bytes_out"] / q["n_elements"]
                g = q.get("gptq")
                if g and g.get("n_gptq", 0) == 0:
                    note = "no GPTQ-capable tensor: all rounded to nearest"
                elif g and g.get("n_rtn", 0):
                    note = "%d block weights rounded to nearest" % g["n_rtn"]
                if scheme == "nf4-dq" and q["types"] and not any(t["type"] == "nf4_dq" for t in q["types"]):
                    note = (note + "; " if note else "") + "no row is a multiple of 16384: the file is plain NF4"
                pout, _, _ = run([nb, "ppl", outq, "--kld", base] + pplargs, log)
                j = ppl_json(pout)
                bb = blk_bpw(q)
                row = {"model": model, "scheme": scheme, "method": method, "bytes": q["bytes_out"],
                       "bpw": "%.4f" % bpw, "bpw_blk": "%.4f" % bb if bb else "", "ppl": get(j, "ppl_q", "ppl"), "ppl_err": get(j, "ppl_q_err", "ppl_err"),
                       "kld": get(j, "kld_mean"), "kld_err": get(j, "kld_err"),
                       "same_top": get(j, "same_top_p_pct"), "seconds": "%.1f" % dt,
                       "rss_mb": "%.0f" % rss if rss else "", "note": note}
                save_row(tsv, row)
                rows[(model, scheme, method)] = row
                os.remove(outq)
                print("quality: %s %s %s: bpw %.3f kld %s" % (model, scheme, method, bpw, row["kld"]), flush=True)
                with open(os.path.join(args.work, "quality.md"), "w") as f:  # progress view
                    f.write(render(load_rows(tsv), meta, args))
    results = args.results or os.path.join(args.repo, "bench/RESULTS.md")
    write_section(results, render(load_rows(tsv), meta, args))


if __name__ == "__main__":
    main()
