#!/usr/bin/env python3
"""Regenerate the gguf-py-written golden files in this directory.

Usage: python make_golden.py   (needs PyPI `gguf` and `numpy`; see README.md)
Contents are deterministic (no randomness), so regenerating with the same
gguf-py version reproduces the files byte for byte.
"""
import os
import sys

import numpy as np
import gguf

HERE = os.path.dirname(os.path.abspath(__file__))


def write_kv_all(path):
    """Every metadata value type, arrays of each, nested arrays, alignment 64,
    F32/F16/Q8_0/I32 tensors plus 1-element and 0-element tensors."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 0.15625)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo wörld")
    w.add_uint64("t.u64", 18000000000000000000)
    w.add_int64("t.i64", -9000000000000000000)
    w.add_float64("t.f64", -2.5e-300)
    V = gguf.GGUFValueType
    for name, vt, vals in [
        ("u8", V.UINT8, [1, 2, 255]), ("i8", V.INT8, [-1, 0, 127]),
        ("u16", V.UINT16, [1, 65535]), ("i16", V.INT16, [-32768, 5]),
        ("u32", V.UINT32, [7, 8, 9]), ("i32", V.INT32, [-7, 8]),
        ("f32", V.FLOAT32, [0.5, -1.25]), ("bool", V.BOOL, [True, False, True]),
        ("u64", V.UINT64, [2**64 - 1]), ("i64", V.INT64, [-(2**63)]),
        ("f64", V.FLOAT64, [1e300, -0.0]),
    ]:
        w.add_key_value("a." + name, vals, V.ARRAY, sub_type=vt)
    w.add_array("a.str", ["", "a", "bc", "tokens ▁x"])
    w.add_array("a.nested", [[1, 2, 3], [4], [5, 6]])
    w.add_array("a.nested_str", [["x", "yy"], ["zzz"]])
    w.add_array("a.deep", [[[1, 2], [3]], [[4]]])
    f32 = (np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5) / 4
    w.add_tensor("w.f32", f32)
    w.add_tensor("w.f16", np.linspace(-2, 2, 8, dtype=np.float32).astype(np.float16))
    q_src = np.sin(np.arange(128, dtype=np.float32)).reshape(2, 64)
    q = gguf.quants.quantize(q_src, gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("w.q8_0", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("w.i32", np.array([1, -2, 3, -4, 5], dtype=np.int32))
    w.add_tensor("w.one", np.array([3.0], dtype=np.float32))
    w.add_tensor("w.empty", np.zeros((0,), dtype=np.float32))
    w.add_tensor("w.last", np.array([1, 2, 3], dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_small(path):
    """Default alignment (32), a few keys and two tensors."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint32("llama.block_count", 1)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "a"])
    w.add_tensor("token_embd.weight", np.arange(6, dtype=np.float32).reshape(2, 3))
    w.add_tensor("output_norm.weight", np.ones(3, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    write_kv_all(os.path.join(HERE, "pyw_kv_all.gguf"))
    small = os.path.join(HERE, "pyw_small.gguf")
    write_small(small)
    # GGUF v2 has exactly v3's little-endian layout; only the version differs.
    data = bytearray(open(small, "rb").read())
    assert data[4:8] == (3).to_bytes(4, "little")
    data[4:8] = (2).to_bytes(4, "little")
    open(os.path.join(HERE, "pyw_small_v2.gguf"), "wb").write(bytes(data))
    print("gguf", gguf.__version__ if hasattr(gguf, "__version__") else "?", "numpy", np.__version__,
          file=sys.stderr)


if __name__ == "__main__":
    main()
