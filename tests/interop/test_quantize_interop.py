#!/usr/bin/env python3
"""`nibble quantize` output checked by independent implementations.

A seeded F16 llama model (`nibble synth`) is quantized with the q8_0, q4_0,
q4_k_m, q5_k_m and iq4_xs mixes. Then:
  1. gguf-py's GGUFReader loads every output; general.file_type and
     general.quantization_version are llama.cpp's values.
  2. The tensor types equal llama.cpp's mix rules as re-implemented below in
     Python from llama-quant.cpp (use_more_bits, output -> Q6_K ...), not
     taken from nibble.
  3. Each quantized tensor's bytes equal gguf.quants.quantize() of the source
     (types gguf-py can quantize: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) and, when PyPI
     libggml-python is installed, ggml_quantize_chunk() from ggml's own
     library for every type (Q4_K, Q6_K, IQ4_XS ...): what llama-quantize runs.
  4. gguf.quants.dequantize() of our Q8_0 / Q4_0 / Q4_K / Q6_K / IQ4_XS
     tensors equals nibble's own dequantization (`nibble convert --type f32`)
     bit for bit.

Environment: NB_BIN = the nibble CLI. Exit 77 (skip) with the reason when
numpy/gguf or the CLI are unavailable.
"""
import ctypes
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import skip  # noqa: E402


try:
    import numpy as np
    import gguf
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as QT
except ImportError as e:  # pragma: no cover
    skip(f"{e} (pip install gguf numpy)")

NB = harness.nb_bin()
check = harness.Checks()
fail = check.fail


def nb(*args):
    r = subprocess.run([NB, *args], capture_output=True, text=True)
    if r.returncode != 0:
        skip(f"nibble {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[:300]}")
    return r


def load_libggml():
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
            return lib
    return None


# ---- llama.cpp's mix rules for a dense llama, written from llama-quant.cpp ----
def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def expected_type(mix, name, ne, n_layer, gqa, tied):
    """Type llama.cpp gives tensor `name` (dense llama, no imatrix)."""
    base = {"q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_k_m": QT.Q4_K, "q5_k_m": QT.Q5_K, "iq4_xs": QT.IQ4_XS}[mix]
    if len([d for d in ne if d != 1]) < 2 or "norm" in name:
        return QT.F32
    blk = lambda t: GGML_QUANT_SIZES[t][0]  # noqa: E731
    t = base
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        if ne[0] % blk(base) != 0:
            t = QT.Q8_0
        elif base != QT.Q8_0:
            t = QT.Q6_K
    elif "attn_v.weight" in name:
        # the attn_v counter equals the layer index in a dense model
        if mix in ("q4_k_m", "q5_k_m") and use_more_bits(layer, n_layer):
            t = QT.Q6_K
        elif mix == "iq4_xs" and gqa >= 4:
            t = QT.Q5_K
    elif "ffn_down" in name:
        if mix in ("q4_k_m", "q5_k_m") and use_more_bits(layer, n_layer):
            t = QT.Q6_K
        elif mix == "iq4_xs" and layer < n_layer // 8:
            t = QT.Q5_K
    # fallback for row lengths the type cannot take
    if ne[0] % blk(t) != 0:
        t = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0, QT.IQ4_XS: QT.IQ4_NL}.get(t, QT.F16)
        if ne[0] % blk(t) != 0:
            t = QT.F16
    return t


def tensor_map(path):
    r = gguf.GGUFReader(path)
    return r, {t.name: t for t in r.tensors}


def field(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]][0]


def as_f32(t):
    if t.tensor_type == QT.F32:
        return np.asarray(t.data, dtype=np.float32).reshape(-1)
    if t.tensor_type == QT.F16:
        return np.asarray(t.data, dtype=np.float16).astype(np.float32).reshape(-1)
    return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).reshape(-1)


def main():
    lib = load_libggml()
    if lib is None:
        print("note: libggml-python not installed: k-quant/IQ bytes checked only through dequantization")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src.gguf")
        n_layer, heads, kv = 8, 8, 2
        # dim 320: 320 % 256 != 0, so k-quant rows of width 320 exercise the fallbacks
        nb("synth", "--arch", "llama", "--layers", str(n_layer), "--dim", "320", "--ff", "512", "--heads",
           str(heads), "--kv-heads", str(kv), "--vocab", "300", "--seed", "5", "-o", src)
        sr, st = tensor_map(src)
        tied = "output.weight" not in st
        for mix, ftype in (("q8_0", 7), ("q4_0", 2), ("q4_k_m", 15), ("q5_k_m", 17), ("iq4_xs", 30)):
            out = os.path.join(tmp, f"{mix}.gguf")
            nb("quantize", src, "-o", out, "--type", mix, "--threads", "2", "--quiet")
            deq = os.path.join(tmp, f"{mix}.f32.gguf")
            nb("convert", out, "-o", deq, "--type", "f32")
            qr, qt = tensor_map(out)
            _, dt = tensor_map(deq)
            if int(field(qr, "general.file_type")) != ftype:
                fail(f"{mix}: general.file_type {field(qr, 'general.file_type')} != {ftype}")
            if int(field(qr, "general.quantization_version")) != 2:
                fail(f"{mix}: general.quantization_version != 2")
            if set(qt) != set(st):
                fail(f"{mix}: tensor names differ from the source")
                continue
            n_bytes = n_deq = n_ggml = 0
            for name, s in st.items():
                q = qt[name]
                ne = [int(x) for x in s.shape]
                want = expected_type(mix, name, ne, n_layer, heads // kv, tied)
                if q.tensor_type != want:
                    fail(f"{mix}: {name}: type {q.tensor_type.name}, llama.cpp's rules give {want.name}")
                    continue
                if q.tensor_type == s.tensor_type:
                    continue
                x = as_f32(s).reshape(ne[1] if len(ne) > 1 else 1, ne[0])
                ours = np.asarray(q.data).tobytes()
                try:
                    ref = gguf.quants.quantize(x, q.tensor_type).tobytes()
                    n_bytes += 1
                    if ref != ours:
                        fail(f"{mix}: {name} ({q.tensor_type.name}): bytes differ from gguf.quants.quantize")
                except NotImplementedError:
                    pass
                if lib is not None and q.tensor_type not in (QT.F16, QT.F32):
                    bs, ts = GGML_QUANT_SIZES[q.tensor_type]
                    buf = np.zeros(x.size // bs * ts, dtype=np.uint8)
                    xc = np.ascontiguousarray(x, dtype=np.float32)
                    lib.ggml_quantize_chunk(int(q.tensor_type), xc.ctypes.data, buf.ctypes.data, 0, x.shape[0],
                                            x.shape[1], None)
                    n_ggml += 1
                    if buf.tobytes() != ours:
                        fail(f"{mix}: {name} ({q.tensor_type.name}): bytes differ from ggml_quantize_chunk")
                # gguf-py's dequantization of our bytes == nibble's own
                mine = np.asarray(dt[name].data, dtype=np.float32).reshape(-1)
                theirs = as_f32(q)
                n_deq += 1
                if mine.shape != theirs.shape or not np.array_equal(mine.view(np.uint32), theirs.view(np.uint32)):
                    bad = int(np.argmax(mine != theirs)) if mine.shape == theirs.shape else -1
                    fail(f"{mix}: {name} ({q.tensor_type.name}): gguf-py dequantizes differently (first at {bad})")
            print(f"{mix}: {len(qt)} tensors, types as llama.cpp's rules; {n_bytes} byte-compared with gguf.quants, "
                  f"{n_ggml} with ggml_quantize_chunk, {n_deq} dequantizations compared")
    if check.summary():
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
