#!/usr/bin/env python3
"""Golden files for nibble's ggml block quantizers (tests/quant/test_quants_golden.c).

Two independent oracles produce the expected bytes:

  * PyPI `gguf` (gguf.quants): numpy re-implementations of ggml. It quantizes
    Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, TQ1_0, TQ2_0, MXFP4 and dequantizes every
    type nibble implements.
  * PyPI `libggml-python`: ggml's own prebuilt libggml-base.so, called through
    ctypes. ggml_quantize_chunk() is exactly what llama-quantize runs, so its
    output (with and without an importance matrix) is the ground truth for the
    k-quants and IQ4_NL / IQ4_XS, which gguf cannot quantize.

Files (all little-endian, raw):
  input.f32            4 rows x 512 floats (seeded; rows of varied shape: normal,
                       heavy-tailed with outliers, zero + constant super-blocks,
                       tiny values with spikes)
  imatrix.f32          512 per-column importances (some zero)
  <t>.blk              random blocks of type t (fp16 scale fields kept finite),
                       512 elements; <t>.blk.gguf.f32 is gguf's dequantization
  <t>.gguf.bin         gguf.quants.quantize(input, t)
  <t>.ggml.bin         ggml_quantize_chunk(t, input, imatrix=NULL)
  <t>.ggml-imat.bin    ggml_quantize_chunk(t, input, imatrix)

Inputs (input.f32, imatrix.f32, *.blk) are generated once and then kept: the
oracle outputs are recomputed from the committed inputs, so a NumPy change in
its random streams cannot silently change what is tested.

Usage:  python make_golden.py [--regen-inputs]      (writes next to this file)
tests/interop/test_quants_interop.py imports compute_outputs() and checks that
the committed outputs still equal what the installed oracles produce.
"""
from __future__ import annotations

import ctypes
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS, COLS = 4, 512
BLK_ELEMS = 512

# name -> (ggml type id, block size, bytes per block, byte offsets of fp16 fields)
TYPES = {
    "q4_0": (2, 32, 18, [0]),
    "q4_1": (3, 32, 20, [0, 2]),
    "q5_0": (6, 32, 22, [0]),
    "q5_1": (7, 32, 24, [0, 2]),
    "q8_0": (8, 32, 34, [0]),
    "q2_K": (10, 256, 84, [80, 82]),
    "q3_K": (11, 256, 110, [108]),
    "q4_K": (12, 256, 144, [0, 2]),
    "q5_K": (13, 256, 176, [0, 2]),
    "q6_K": (14, 256, 210, [208]),
    "q8_K": (15, 256, 292, None),  # f32 scale; gguf has no Q8_K, ggml only
    "iq4_nl": (20, 32, 18, [0]),
    "iq4_xs": (23, 256, 136, [0]),
    "tq1_0": (34, 256, 54, [52]),
    "tq2_0": (35, 256, 66, [64]),
    "mxfp4": (39, 32, 17, []),
}
GGUF_QUANTIZES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "tq1_0", "tq2_0", "mxfp4"]
GGML_NO_IMATRIX = {"q8_K"}  # no weighted path in ggml


def make_inputs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = np.empty((ROWS, COLS), dtype=np.float32)
    x[0] = rng.standard_normal(COLS) * 0.02
    heavy = rng.standard_normal(COLS) ** 3
    heavy[rng.integers(0, COLS, 6)] *= 40
    x[1] = heavy
    x[2, :256] = 0.0                                   # all-zero super-block
    x[2, 256:384] = 0.37                               # constant blocks
    x[2, 384:] = rng.uniform(-1, 1, 128) * 3
    x[3] = rng.standard_normal(COLS) * 1e-3
    x[3, ::37] = 5.0                                   # spikes
    imp = (rng.uniform(0, 1, COLS) ** 2 * 10).astype(np.float32)
    imp[rng.integers(0, COLS, 20)] = 0.0
    return x, imp


def random_blocks(rng: np.random.Generator, name: str) -> bytes:
    _, bs, ts, f16 = TYPES[name]
    nb = BLK_ELEMS // bs
    raw = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
    for off in f16:
        # finite halves of every magnitude, subnormals included
        h = (rng.integers(0, 2, nb) << 15) | (rng.integers(0, 31, nb) << 10) | rng.integers(0, 1024, nb)
        raw[:, off:off + 2] = h.astype("<u2").view(np.uint8).reshape(nb, 2)
    return raw.tobytes()


def inputs_exist() -> bool:
    return all(os.path.exists(os.path.join(HERE, f)) for f in ("input.f32", "imatrix.f32"))


def write_inputs() -> None:
    rng = np.random.default_rng(20240611)
    x, imp = make_inputs(rng)
    x.astype("<f4").tofile(os.path.join(HERE, "input.f32"))
    imp.astype("<f4").tofile(os.path.join(HERE, "imatrix.f32"))
    for name, (_, _, _, f16) in TYPES.items():
        if f16 is None:
            continue
        with open(os.path.join(HERE, name + ".blk"), "wb") as f:
            f.write(random_blocks(rng, name))


def load_libggml():
    """ctypes handle on libggml-base.so from PyPI libggml-python, or None."""
    try:
        import libggml  # type: ignore
    except ImportError:
        return None
    base = os.path.dirname(libggml.__file__)
    for sub in ("lib64", "lib"):
        p = os.path.join(base, sub, "libggml-base.so")
        if os.path.exists(p):
            lib = ctypes.CDLL(p)
            lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
            lib.ggml_quantize_chunk.restype = ctypes.c_size_t
            lib.quantize_row_q8_K_ref.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            lib.quantize_row_q8_K_ref.restype = None
            return lib
    return None


def ggml_quantize(lib, name: str, x: np.ndarray, imp: np.ndarray | None) -> bytes:
    tid, bs, ts, _ = TYPES[name]
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros(x.size // bs * ts, dtype=np.uint8)
    if name == "q8_K":
        lib.quantize_row_q8_K_ref(x.ctypes.data, out.ctypes.data, x.size)
    else:
        ip = None if imp is None else np.ascontiguousarray(imp, dtype=np.float32)
        n = lib.ggml_quantize_chunk(tid, x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1],
                                    None if ip is None else ip.ctypes.data)
        assert n == out.size, (name, n, out.size)
    return out.tobytes()


def compute_outputs(data_dir: str = HERE) -> tuple[dict[str, bytes], list[str]]:
    """Oracle outputs from the committed inputs: ({file name: bytes}, [notes on what was skipped])."""
    import gguf
    from gguf.quants import quantize, dequantize

    x = np.fromfile(os.path.join(data_dir, "input.f32"), dtype="<f4").reshape(ROWS, COLS)
    imp = np.fromfile(os.path.join(data_dir, "imatrix.f32"), dtype="<f4")
    out: dict[str, bytes] = {}
    notes: list[str] = []
    Q = gguf.GGMLQuantizationType
    for name, (tid, bs, ts, f16) in TYPES.items():
        qt = Q(tid)
        if f16 is not None:
            blk = np.fromfile(os.path.join(data_dir, name + ".blk"), dtype=np.uint8)
            deq = dequantize(blk.reshape(1, -1), qt).astype("<f4")
            out[name + ".blk.gguf.f32"] = deq.tobytes()
        if name in GGUF_QUANTIZES:
            out[name + ".gguf.bin"] = np.asarray(quantize(x, qt), dtype=np.uint8).tobytes()
    lib = load_libggml()
    if lib is None:
        notes.append("libggml-python not installed: ggml_quantize_chunk outputs not recomputed")
    else:
        for name in TYPES:
            out[name + ".ggml.bin"] = ggml_quantize(lib, name, x, None)
            if name not in GGML_NO_IMATRIX:
                out[name + ".ggml-imat.bin"] = ggml_quantize(lib, name, x, imp)
    return out, notes


def main() -> int:
    if "--regen-inputs" in sys.argv or not inputs_exist():
        write_inputs()
    out, notes = compute_outputs(HERE)
    for n in notes:
        print("note:", n)
    if any("libggml" in n for n in notes):
        print("refusing to write a partial set: pip install libggml-python", file=sys.stderr)
        return 1
    for fname, data in sorted(out.items()):
        with open(os.path.join(HERE, fname), "wb") as f:
            f.write(data)
    print(f"wrote {len(out)} golden files to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
