#!/usr/bin/env python3
"""Keep the quantizer golden files honest.

tests/quant/test_quants_golden.c compares nibble's quantizers and dequantizers
byte for byte with files in tests/data/quants/. This test recomputes those
files from the committed inputs with the oracles installed here and checks
they are unchanged:
  * PyPI gguf (gguf.quants): quantize Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/TQ1_0/TQ2_0/MXFP4,
    dequantize every type nibble implements;
  * PyPI libggml-python (ggml's libggml-base.so, via ctypes): ggml_quantize_chunk
    for every type, with and without the importance matrix.
It also cross-checks the two oracles where both quantize the same type.
Exit 77 (skip) when numpy/gguf are missing; the libggml part is skipped with a
message when libggml-python is not installed.
"""
import importlib.util
import os
import sys


def main() -> int:
    try:
        import numpy  # noqa: F401
        import gguf  # noqa: F401
    except ImportError as e:
        print(f"SKIP: {e} (pip install gguf numpy libggml-python)")
        return 77
    here = os.path.dirname(os.path.abspath(__file__))
    data = os.environ.get("NB_TEST_DATA") or os.path.join(here, "..", "data")
    qdir = os.path.join(data, "quants")
    spec = importlib.util.spec_from_file_location("make_golden", os.path.join(qdir, "make_golden.py"))
    mg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mg)

    outputs, notes = mg.compute_outputs(qdir)
    for n in notes:
        print("note:", n)
    passed = failed = 0
    for fname, want in sorted(outputs.items()):
        path = os.path.join(qdir, fname)
        if not os.path.exists(path):
            print(f"FAIL {fname}: oracle produces it but it is not committed (run make_golden.py)")
            failed += 1
            continue
        with open(path, "rb") as f:
            have = f.read()
        if have != want:
            diff = next((i for i in range(min(len(have), len(want))) if have[i] != want[i]), min(len(have), len(want)))
            print(f"FAIL {fname}: committed file differs from the installed oracle at byte {diff} "
                  f"(sizes {len(have)} vs {len(want)})")
            failed += 1
        else:
            passed += 1

    # The two oracles must agree with each other where both quantize.
    for name in mg.GGUF_QUANTIZES:
        a, b = outputs.get(name + ".gguf.bin"), outputs.get(name + ".ggml.bin")
        if a is None or b is None:
            continue
        if a != b:
            print(f"FAIL {name}: gguf.quants and ggml_quantize_chunk disagree")
            failed += 1
        else:
            passed += 1

    # Every committed oracle output must still be produced (no stale files),
    # unless part of the oracle set is missing here.
    if not notes:
        for fname in sorted(os.listdir(qdir)):
            if fname.endswith((".bin", ".gguf.f32")) and fname not in outputs:
                print(f"FAIL {fname}: committed but no longer produced by make_golden.py")
                failed += 1

    if passed == 0 and failed == 0:
        print("SKIP: nothing to compare")
        return 77
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
