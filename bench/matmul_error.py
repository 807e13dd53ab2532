#!/usr/bin/env python3
"""bench/matmul_error.py — error of nibble's and ggml's CPU matmul per weight type.

For each type, one ROWS x COLS weight matrix is quantized by ggml
(ggml_quantize_chunk, PyPI libggml-python), so both sides multiply the same
bytes. Activations: N(0,1), and N(0,1) with 1 % of the channels scaled by 20
(the outlier channels real transformer activations have). The exact product
is float64 (gguf-py's dequantizer, numpy). Printed per type: relative RMS
error against the exact product of ggml_mul_mat (ggml's CPU backend: its
activation formats), of nb_matmul (the fast kernels) and of nb_matmul_ref
(dequantize + F32 dot), and the RMS difference nibble-fast vs ggml.

Usage: scripts/pyenv-python bench/matmul_error.py --bin build/rel/bench_matmul_io [-r ROWS] [-c COLS] [-n N_TOK] [type ...]
Exit 77 (skip) when libggml or gguf is not installed.
"""
import argparse
import ctypes
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ggml_matmul  # noqa: E402

DEFAULT = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", "q2_K", "q3_K", "q4_K", "q5_K",
           "q6_K", "iq4_xs"]


def ggml_product(base, cpu, t, wf, x):
    rows, cols = wf.shape
    nt = x.shape[0]
    import numpy as np
    wbytes = base.ggml_row_size(t, cols) * rows
    ctx = base.ggml_init(ggml_matmul.InitParams(wbytes + 4 * cols * nt * 3 + 4 * rows * nt + (16 << 20), None, False))
    W = base.ggml_new_tensor_2d(ctx, t, cols, rows)
    X = base.ggml_new_tensor_2d(ctx, 0, cols, nt)
    if t == 0:
        ctypes.memmove(base.ggml_get_data(W), wf.ctypes.data, 4 * rows * cols)
    else:
        base.ggml_quantize_chunk(t, wf.ctypes.data, base.ggml_get_data(W), 0, rows, cols, None)
    wq = np.ctypeslib.as_array(ctypes.cast(base.ggml_get_data(W), ctypes.POINTER(ctypes.c_uint8)),
                               shape=(wbytes,)).copy()
    ctypes.memmove(base.ggml_get_data(X), x.ctypes.data, 4 * cols * nt)
    Y = base.ggml_mul_mat(ctx, W, X)
    g = base.ggml_new_graph(ctx)
    base.ggml_build_forward_expand(g, Y)
    cpu.ggml_graph_compute_with_ctx(ctx, g, 1)
    y = np.ctypeslib.as_array(ctypes.cast(base.ggml_get_data(Y), ctypes.POINTER(ctypes.c_float)),
                              shape=(nt, rows)).copy()
    base.ggml_free(ctx)
    return wq, y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="bench_matmul_io from a nibble build")
    ap.add_argument("-r", type=int, default=512)
    ap.add_argument("-c", type=int, default=2048)
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("types", nargs="*")
    a = ap.parse_args()
    libs = ggml_matmul.load()
    try:
        import numpy as np
        from gguf import GGMLQuantizationType, quants
    except ImportError:
        libs = None
    if libs is None:
        print("SKIP: libggml (PyPI libggml-python) or gguf is not installed")
        return 77
    base, cpu = libs
    rng = np.random.default_rng(7)
    wf = rng.standard_normal((a.r, a.c), dtype=np.float32)
    xg = rng.standard_normal((a.n, a.c), dtype=np.float32)
    xo = xg.copy()
    xo[:, rng.choice(a.c, a.c // 100, replace=False)] *= 20.0
    print(f"matrix {a.r} x {a.c}, {a.n} tokens; relative RMS error vs the float64 product of the same packed weights\n")
    print("| type | activations | ggml | nibble fast | nibble ref | nibble fast vs ggml |")
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.types or DEFAULT:
            t = ggml_matmul.TYPES[name]
            for label, x in (("N(0,1)", xg), ("1 % outliers x20", xo)):
                wq, yg = ggml_product(base, cpu, t, wf, x)
                wd = wf.astype(np.float64) if t == 0 else \
                    quants.dequantize(wq.reshape(a.r, -1), GGMLQuantizationType(t)).astype(np.float64)
                exact = x.astype(np.float64) @ wd.T
                paths = [os.path.join(tmp, f) for f in ("w.bin", "x.f32", "y.f32", "yr.f32")]
                wq.tofile(paths[0])
                x.tofile(paths[1])
                subprocess.run([a.bin, name, str(a.r), str(a.c), str(a.n)] + paths, check=True)
                yf = np.fromfile(paths[2], dtype=np.float32).reshape(a.n, a.r)
                yr = np.fromfile(paths[3], dtype=np.float32).reshape(a.n, a.r)
                norm = np.sqrt((exact ** 2).mean())

                def rel(y):
                    return np.sqrt(((y.astype(np.float64) - exact) ** 2).mean()) / norm
                fg = np.sqrt(((yf.astype(np.float64) - yg) ** 2).mean()) / norm
                print(f"| {name} | {label} | {rel(yg):.3e} | {rel(yf):.3e} | {rel(yr):.3e} | {fg:.3e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
