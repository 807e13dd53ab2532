#!/usr/bin/env python3
"""The planner's memory model (quant/memory.h) against llama.cpp's own report.

For each model and context: `nibble plan SRC --budget 1TiB --ctx N --overhead 0`
gives the KV and compute figures, `nibble plan SRC --target-bpw 5` (8 where
some rows only take F16) a mixed
plan (its padded tensor bytes are the weights), `nibble quantize --plan`
writes it, and llama.cpp (PyPI
llama-cpp-python, which compiles llama.cpp) loads the file at the same
context with n_batch = n_ubatch = 512, flash attention off and swa_full off
(llama.cpp's command-line defaults), CPU only. Compared: weights (nibble's
padded tensor bytes vs llama.cpp's CPU_Mapped model buffer), KV cache, compute
(nibble's estimate vs llama.cpp's compute + output buffers), and the total.
llama.cpp's CPU_REPACK buffer (a CPU-only copy of some types rearranged for
AVX2; absent with GPU offload) is listed apart and not in the total.
Prints a markdown table. Not a test: nothing is asserted.

Setup (once):
  python3 -m venv .venv-llamacpp
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF" .venv-llamacpp/bin/pip install llama-cpp-python
Example:
  .venv-llamacpp/bin/python bench/planner_llamacpp.py --nibble build/release/nibble \\
      --model stories=tests/data/models/stories260K.gguf --model smollm2=SRC.gguf --ctx 512,4096
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

PROBE = ("import llama_cpp, sys\n"
         "llama_cpp.Llama(model_path=sys.argv[1], n_ctx=int(sys.argv[2]), n_batch=512, n_ubatch=512,"
         " flash_attn=False, swa_full=False, n_gpu_layers=0, verbose=True)\n")
MIB = 1048576.0


def llama_report(path, ctx):
    p = subprocess.run([sys.executable, "-c", PROBE, path, str(ctx)], capture_output=True, text=True)
    e = p.stderr

    def total(pat):
        r = re.findall(pat, e)
        return sum(float(x) for x in r) * MIB if r else None
    rep = {"model": total(r"CPU_Mapped model buffer size =\s+([0-9.]+) MiB"),
           "repack": total(r"CPU_REPACK model buffer size =\s+([0-9.]+) MiB") or 0.0,
           "kv": total(r"llama_kv_cache: size =\s+([0-9.]+) MiB"),
           "compute": total(r"matches expectation of\s+([0-9.]+) MiB") or total(r"CPU compute buffer size =\s+([0-9.]+) MiB"),
           "output": total(r"CPU\s+output buffer size =\s+([0-9.]+) MiB") or 0.0}
    if rep["model"] is None or rep["kv"] is None or rep["compute"] is None:
        raise RuntimeError("llama.cpp did not load %s:\n%s" % (path, e[-2000:]))
    return rep


def plan_json(nb, src, args, out=None):
    cmd = [nb, "plan", src, "--json", "-q"] + args + (["-o", out] if out else [])
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(" ".join(cmd) + ": " + p.stderr.strip())
    return json.loads(p.stdout)["budget"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nibble", required=True)
    ap.add_argument("--model", action="append", required=True, help="NAME=SRC.gguf (a float source)")
    ap.add_argument("--ctx", default="512,4096")
    ap.add_argument("--work", default=tempfile.mkdtemp(prefix="planner-llamacpp-"))
    a = ap.parse_args()
    print("| model | ctx | weights nibble / llama.cpp MiB | KV nibble / llama.cpp MiB | compute nibble / llama.cpp MiB | "
          "total nibble / llama.cpp MiB | total ratio | llama.cpp repack MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for spec in a.model:
        name, src = spec.split("=", 1)
        for ctx in [int(c) for c in a.ctx.split(",")]:
            common = ["--ctx", str(ctx), "--overhead", "0"]
            pj = os.path.join(a.work, "%s-%d.json" % (name, ctx))
            gg = os.path.join(a.work, "%s-%d.gguf" % (name, ctx))
            try:
                b = plan_json(a.nibble, src, ["--budget", "1TiB"] + common)
                try:
                    w = plan_json(a.nibble, src, ["--target-bpw", "5"], pj)
                except RuntimeError:  # rows a 5-bpw type cannot hold (stories260K's ffn_down: F16 only)
                    w = plan_json(a.nibble, src, ["--target-bpw", "8"], pj)
                b["weight_bytes"] = w["weight_bytes"]
                subprocess.run([a.nibble, "quantize", src, "--plan", pj, "-o", gg, "-q"], check=True)
                r = llama_report(gg, ctx)
            except (RuntimeError, subprocess.CalledProcessError) as err:
                print("| %s | %d | skipped: %s |" % (name, ctx, str(err).strip().splitlines()[-1].split(": ")[-1][:100]))
                continue
            ours = b["weight_bytes"] + b["kv_bytes"] + b["compute_bytes"]
            theirs = r["model"] + r["kv"] + r["compute"] + r["output"]
            print("| %s | %d | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f | %.4f | %.2f |" % (
                name, ctx, b["weight_bytes"] / MIB, r["model"] / MIB, b["kv_bytes"] / MIB, r["kv"] / MIB,
                b["compute_bytes"] / MIB, (r["compute"] + r["output"]) / MIB, ours / MIB, theirs / MIB,
                ours / theirs, r["repack"] / MIB))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
