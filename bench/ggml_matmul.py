#!/usr/bin/env python3
"""bench/ggml_matmul.py — ggml's CPU matmul on the same shapes as bench_matmul.

Times ggml_mul_mat through ggml's own CPU backend (libggml-cpu from PyPI
`libggml-python`, installed by scripts/pyenv) via ctypes: a ROWS x COLS weight
matrix quantized by ggml_quantize_chunk from N(0,1) data, N(0,1) activations,
one graph per (type, n_tok), ggml_graph_compute_with_ctx at each thread count;
median wall ms and process CPU ms per call over >= 3 runs (>= 0.3 s in all). Prints markdown rows in
bench_matmul's format so the two tables can be put side by side.

Usage: .venv/bin/python bench/ggml_matmul.py [-r ROWS] [-c COLS] [-t 1,2] [-n 1,64,512] [type ...]
Exit 77 (skip) when libggml is not installed.
"""
import argparse
import ctypes
import os
import sys
import time

TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q2_K": 10, "q3_K": 11,
         "q4_K": 12, "q5_K": 13, "q6_K": 14, "iq4_nl": 20, "iq4_xs": 23, "bf16": 30}
DEFAULT = ["q4_K", "q6_K", "q5_0", "q8_0", "q4_1", "f32", "f16", "bf16", "q4_0", "q5_1", "q2_K", "q3_K", "q5_K",
           "iq4_nl", "iq4_xs"]


class InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


def load():
    try:
        import libggml  # noqa: F401
    except ImportError:
        return None
    libdir = os.path.join(os.path.dirname(sys.modules["libggml"].__file__), "lib64")
    base = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(os.path.join(libdir, "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
    vp, i64 = ctypes.c_void_p, ctypes.c_int64
    base.ggml_init.argtypes, base.ggml_init.restype = [InitParams], vp
    base.ggml_free.argtypes = [vp]
    base.ggml_new_tensor_2d.argtypes, base.ggml_new_tensor_2d.restype = [vp, ctypes.c_int, i64, i64], vp
    base.ggml_get_data.argtypes, base.ggml_get_data.restype = [vp], vp
    base.ggml_mul_mat.argtypes, base.ggml_mul_mat.restype = [vp, vp, vp], vp
    base.ggml_new_graph.argtypes, base.ggml_new_graph.restype = [vp], vp
    base.ggml_build_forward_expand.argtypes = [vp, vp]
    base.ggml_quantize_chunk.argtypes = [ctypes.c_int, vp, vp, i64, i64, i64, vp]
    base.ggml_quantize_chunk.restype = ctypes.c_size_t
    base.ggml_row_size.argtypes, base.ggml_row_size.restype = [ctypes.c_int, i64], ctypes.c_size_t
    cpu.ggml_graph_compute_with_ctx.argtypes, cpu.ggml_graph_compute_with_ctx.restype = [vp, vp, ctypes.c_int], ctypes.c_int
    cpu.ggml_cpu_init.argtypes = []
    cpu.ggml_cpu_init()
    return base, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-r", type=int, default=4096)
    ap.add_argument("-c", type=int, default=4096)
    ap.add_argument("-t", default="1,2")
    ap.add_argument("-n", default="1,64,512")
    ap.add_argument("types", nargs="*")
    a = ap.parse_args()
    libs = load()
    if libs is None:
        print("SKIP: libggml (PyPI libggml-python) is not installed")
        return 77
    import numpy as np
    base, cpu = libs
    rows, cols = a.r, a.c
    threads = [int(v) for v in a.t.split(",")]
    ntoks = [int(v) for v in a.n.split(",")]
    rng = np.random.default_rng(1)
    wf = rng.standard_normal((rows, cols), dtype=np.float32)
    xs = rng.standard_normal((max(ntoks), cols), dtype=np.float32)
    print(f"ggml CPU backend (libggml-python), matrix {rows} x {cols}\n")
    print("| type | n_tok | threads | ms/call | CPU ms/call | weight GB/s | GFLOP/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in a.types or DEFAULT:
        t = TYPES[name]
        wbytes = base.ggml_row_size(t, cols) * rows
        for nt in ntoks:
            mem = wbytes + 4 * cols * nt * 3 + 4 * rows * nt + (64 << 20)
            ctx = base.ggml_init(InitParams(mem, None, False))
            W = base.ggml_new_tensor_2d(ctx, t, cols, rows)
            X = base.ggml_new_tensor_2d(ctx, 0, cols, nt)
            base.ggml_quantize_chunk(t, wf.ctypes.data, base.ggml_get_data(W), 0, rows, cols, None)
            ctypes.memmove(base.ggml_get_data(X), xs[:nt].ctypes.data, 4 * cols * nt)
            Y = base.ggml_mul_mat(ctx, W, X)
            g = base.ggml_new_graph(ctx)
            base.ggml_build_forward_expand(g, Y)
            for th in threads:
                cpu.ggml_graph_compute_with_ctx(ctx, g, th)  # warm-up
                ms, cms, total = [], [], 0.0
                while len(ms) < 64 and (len(ms) < 3 or total < 0.3):
                    t0, c0 = time.perf_counter(), time.process_time()
                    cpu.ggml_graph_compute_with_ctx(ctx, g, th)
                    dt = time.perf_counter() - t0
                    cms.append(time.process_time() - c0)
                    ms.append(dt)
                    total += dt
                ms.sort()
                cms.sort()
                med = ms[len(ms) // 2]
                print(f"| {name} | {nt} | {th} | {med * 1e3:.3f} | {cms[len(cms) // 2] * 1e3:.3f} | {wbytes / med / 1e9:.2f} | "
                      f"{2.0 * rows * cols * nt / med / 1e9:.1f} |", flush=True)
            base.ggml_free(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
