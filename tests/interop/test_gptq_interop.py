#!/usr/bin/env python3
"""GPTQ interop: nibble's C implementation (calib/gptq.c) against an
independent numpy implementation (tests/data/gptq/gptq_oracle.py, written
from the paper and the reference algorithm's description).

1. The committed golden cases (tests/data/gptq/*.gqc, which
   tests/calib/test_gptq.c checks the C code against to 1e-5) are what the
   oracle produces now.
2. The oracle itself behaves like GPTQ: with a diagonal Hessian it is plain
   nearest rounding on the type's grid, and on correlated inputs its layer
   output error ||X(W - Q)ᵀ|| is below plain rounding's.
3. Live: fresh cases from other seeds are written to a temporary directory and
   the C test binary (calib_test_gptq, next to the nibble binary) runs its
   oracle case on them (NB_GPTQ_CASES); skipped with a reason if the binary
   is not found.
"""
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

HERE = harness.HERE
DATA = harness.DATA
sys.path.insert(0, os.path.join(DATA, "gptq"))

try:
    import numpy as np
    import gguf  # noqa: F401  (the q4_0 grid comes from gguf-py's reference quantizer)
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

import gptq_oracle as O  # noqa: E402
import make_golden as G  # noqa: E402

check = harness.Checks()


def parse(blob):
    rows, cols, ntok, act, stat, block, damp = struct.unpack_from("<qqqiiid", blob, 32)
    o = 32 + 44
    W = np.frombuffer(blob, "<f4", rows * cols, o).reshape(rows, cols)
    o += rows * cols * 4
    X = np.frombuffer(blob, "<f2", ntok * cols, o).reshape(ntok, cols)
    o += ntok * cols * 2
    Q = np.frombuffer(blob, "<f4", rows * cols, o).reshape(rows, cols)
    loss = struct.unpack_from("<d", blob, o + rows * cols * 4)[0]
    return blob[8:32].rstrip(b"\0").decode(), W, X, Q, loss, (act, stat, block, damp)


def test_goldens_match_oracle():
    n = 0
    for name, qtype, W, X, act, static, block in G.cases(0):
        with open(os.path.join(DATA, "gptq", name + ".gqc"), "rb") as f:
            committed = parse(f.read())
        fresh = parse(G.encode(qtype, W, X, act, static, block))
        check(committed[0] == fresh[0], f"{name}: type")
        check(np.array_equal(committed[1], fresh[1]) and np.array_equal(committed[2], fresh[2]),
              f"{name}: inputs differ from the generator's")
        d = float(np.max(np.abs(committed[3].astype(np.float64) - fresh[3])))
        check(d <= 1e-5, f"{name}: committed Q differs from the oracle's by {d}")
        check(abs(committed[4] - fresh[4]) <= 1e-9 * abs(fresh[4]), f"{name}: loss")
        check(committed[5] == fresh[5], f"{name}: options")
        n += 1
    check(n >= 5, "too few golden cases")


def out_err(X, W, Q):
    Xd = X.astype(np.float64)
    return float(np.sum((Xd @ (W.astype(np.float64) - Q).T) ** 2))


def test_oracle_properties():
    rng = np.random.default_rng(7)
    for qtype in ("int4_sym_g32", "int4_asym_g64", "q4_0", "nf4"):
        G_ = O.GROUP[qtype]
        W = rng.standard_normal((6, 128)).astype(np.float32)
        # diagonal Hessian (orthogonal inputs of equal scale): no error feedback
        X = np.vstack([np.eye(128, dtype=np.float32)] * 2)
        Q, _ = O.gptq(W, X, qtype)
        for g in range(0, 128, G_):
            grid = O.Grid(qtype, W[:, g:g + G_])
            for j in range(g, g + G_):
                check(np.array_equal(Q[:, j], grid.quantize(W[:, j].astype(np.float64)).astype(np.float32)),
                      f"{qtype}: diagonal H is not nearest rounding (column {j})")
        # correlated inputs: GPTQ beats plain rounding on the layer output
        W, X = G.make_inputs(6, 128, 160, [], rng)
        Q, _ = O.gptq(W, X, qtype, blocksize=64)
        R = np.zeros_like(W)
        for g in range(0, 128, G_):
            grid = O.Grid(qtype, W[:, g:g + G_])
            for j in range(g, g + G_):
                R[:, j] = grid.quantize(W[:, j].astype(np.float64))
        e_g, e_r = out_err(X, W, Q), out_err(X, W, R)
        check(e_g < 0.9 * e_r, f"{qtype}: oracle GPTQ {e_g} not below RTN {e_r}")


def test_c_on_fresh_cases():
    nb_bin = os.environ.get("NB_BIN", "")
    exe = os.path.join(os.path.dirname(nb_bin), "calib_test_gptq") if nb_bin else ""
    if not exe or not os.access(exe, os.X_OK):
        print(f"SKIP (part): C test binary not found next to NB_BIN ({exe or 'NB_BIN unset'})")
        return
    with tempfile.TemporaryDirectory() as d:
        for seed in (1, 2):
            sub = os.path.join(d, f"s{seed}")
            os.mkdir(sub)
            for name, qtype, W, X, act, static, block in G.cases(seed):
                with open(os.path.join(sub, name + ".gqc"), "wb") as f:
                    f.write(G.encode(qtype, W, X, act, static, block))
            env = dict(os.environ, NB_GPTQ_CASES=sub, CK_RUN_CASE="oracle")
            p = subprocess.run([exe], env=env, capture_output=True, text=True)
            print(p.stdout.strip())
            check(p.returncode == 0, f"C GPTQ disagrees with the oracle on seed {seed}:\n{p.stdout}\n{p.stderr}")


if __name__ == "__main__":
    test_goldens_match_oracle()
    test_oracle_properties()
    test_c_on_fresh_cases()
    if check.summary():
        sys.exit(1)
    print("OK")
