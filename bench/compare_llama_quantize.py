#!/usr/bin/env python3
"""Compare `nibble quantize` with llama.cpp's own llama_model_quantize, tensor by tensor.

Needs PyPI `llama-cpp-python` (which compiles llama.cpp; use a separate venv:
  python3 -m venv .venv-llamacpp
  CMAKE_ARGS="-DGGML_NATIVE=OFF" .venv-llamacpp/bin/pip install llama-cpp-python gguf numpy
) and the nibble CLI. Not part of CI.

For each mix, the same F16 GGUF is quantized by both tools (no imatrix, same
thread count), then every tensor is compared: name, type, shape and bytes.
Prints the first differing tensor (if any) per mix, whether the whole files
are identical, and the wall time of each tool.

usage: compare_llama_quantize.py --nibble build/nibble [--src F16.gguf | synth options]
                                 [--mixes q8_0,q4_0,q4_k_m] [--threads N] [--json OUT.json]
"""
import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time

FTYPES = {  # llama.h enum llama_ftype
    "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12,
    "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18, "iq4_nl": 25,
    "iq4_xs": 30, "bf16": 32, "f16": 1,
}


def llama_quantize(llama_cpp, src, dst, mix, threads):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = FTYPES[mix]
    p.nthread = threads
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    dt = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({mix}) returned {rc}")
    return dt


def tensors(path):
    import gguf
    r = gguf.GGUFReader(path)
    return r, {t.name: (t.tensor_type.name, [int(x) for x in t.shape], bytes(memoryview(t.data).cast("B")))
               for t in r.tensors}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nibble", required=True)
    ap.add_argument("--src", help="F16/BF16/F32 GGUF to quantize (default: a nibble synth llama model)")
    ap.add_argument("--arch", default="llama")
    ap.add_argument("--layers", default="8")
    ap.add_argument("--dim", default="512")
    ap.add_argument("--ff", default="1536")
    ap.add_argument("--heads", default="8")
    ap.add_argument("--kv-heads", default="2")
    ap.add_argument("--vocab", default="2000")
    ap.add_argument("--mixes", default="q8_0,q4_0,q4_k_m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    try:
        import llama_cpp
    except ImportError as e:
        print(f"llama-cpp-python not importable: {e}")
        return 77
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        src = a.src
        if not src:
            src = os.path.join(tmp, "src.gguf")
            subprocess.run([a.nibble, "synth", "--arch", a.arch, "--layers", a.layers, "--dim", a.dim, "--ff", a.ff,
                            "--heads", a.heads, "--kv-heads", a.kv_heads, "--vocab", a.vocab, "--seed", "1",
                            "-o", src], check=True)
        for mix in a.mixes.split(","):
            ours, theirs = os.path.join(tmp, f"nb.{mix}.gguf"), os.path.join(tmp, f"ll.{mix}.gguf")
            t0 = time.perf_counter()
            subprocess.run([a.nibble, "quantize", src, "-o", ours, "--type", mix, "--threads", str(a.threads),
                            "--quiet"], check=True)
            t_nb = time.perf_counter() - t0
            t_ll = llama_quantize(llama_cpp, src, theirs, mix, a.threads)
            _, tn = tensors(ours)
            _, tl = tensors(theirs)
            first = None
            n_same = 0
            for name in sorted(set(tn) | set(tl)):
                x, y = tn.get(name), tl.get(name)
                if x is None or y is None:
                    first = first or f"{name}: only in {'llama.cpp' if x is None else 'nibble'}"
                elif x[0] != y[0]:
                    first = first or f"{name}: type {x[0]} (nibble) vs {y[0]} (llama.cpp)"
                elif x[1] != y[1]:
                    first = first or f"{name}: shape {x[1]} vs {y[1]}"
                elif x[2] != y[2]:
                    d = next(i for i in range(len(x[2])) if x[2][i] != y[2][i])
                    first = first or f"{name} ({x[0]}): bytes differ from offset {d}"
                else:
                    n_same += 1
            with open(ours, "rb") as f1, open(theirs, "rb") as f2:
                files_identical = f1.read() == f2.read()
            res = {"mix": mix, "tensors": len(tl), "identical_tensors": n_same, "first_difference": first,
                   "files_identical": files_identical, "seconds_nibble": round(t_nb, 3),
                   "seconds_llama_cpp": round(t_ll, 3), "src_bytes": os.path.getsize(src)}
            results.append(res)
            print(f"{mix}: {n_same}/{len(tl)} tensors byte-identical"
                  f"{'' if first is None else '; first difference: ' + first}; whole file identical: "
                  f"{files_identical}; nibble {t_nb:.2f} s, llama.cpp {t_ll:.2f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"llama_cpp_python": getattr(llama_cpp, "__version__", "?"), "results": results}, f, indent=1)
    return 0 if all(r["first_difference"] is None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
