#!/usr/bin/env python3
"""Write the GPTQ golden cases (*.gqc) that tests/calib/test_gptq.c compares
nibble's C implementation with (to 1e-5), from the numpy oracle in
gptq_oracle.py. Run from anywhere: `python3 make_golden.py [OUTDIR [SEED]]`
(default: this directory, seed 0). tests/interop/test_gptq_interop.py checks
that the committed files are what the oracle produces now, and runs the C test
on freshly generated cases with other seeds.

File layout (little-endian):
  "NBGQ" u32 version (1) char type[24] (NUL-padded nibble type name)
  i64 rows, cols, ntok  i32 act_order, static_groups, block  f64 damp
  f32 W[rows*cols]  f16 X[ntok*cols]  f32 Q[rows*cols] (expected)  f64 loss
"""
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gptq_oracle as O  # noqa: E402

# name, type, rows, cols, ntok, act_order, static_groups, block, dead columns
# (group 32 inside lazy batches of 64 exercises the reference's choice of scales
#  from the lazily updated W; several batches exercise the lazy update)
CASES = [
    ("int4_sym_g32", "int4_sym_g32", 8, 128, 144, False, False, 64, []),
    ("int4_asym_g128_actorder_dead", "int4_asym_g128", 8, 256, 264, True, True, 128, [5, 77]),
    ("q4_0_block32", "q4_0", 7, 96, 112, False, False, 32, [3]),
    ("nf4_static", "nf4", 9, 128, 144, False, True, 64, []),
    ("int4_sym_g128", "int4_sym_g128", 8, 128, 144, False, False, 128, []),
]


def make_inputs(rows, cols, ntok, dead, rng):
    W = rng.standard_normal((rows, cols)).astype(np.float32)
    # correlated inputs with very different column scales, like real activations
    M = rng.standard_normal((cols, cols)) / np.sqrt(cols) + np.eye(cols)
    scale = np.exp(rng.standard_normal(cols))
    X = (rng.standard_normal((ntok, cols)) @ M * scale).astype(np.float32)
    X[:, dead] = 0
    return W, X.astype(np.float16).astype(np.float32)  # stored as f16 to keep the files small


def encode(qtype, W, X, act, static, block, damp=0.01):
    Q, loss = O.gptq(W, X, qtype, blocksize=block, percdamp=damp, actorder=act, static_groups=static)
    rows, cols = W.shape
    out = b"NBGQ" + struct.pack("<I", 1) + qtype.encode().ljust(24, b"\0")
    out += struct.pack("<qqqiiid", rows, cols, X.shape[0], int(act), int(static), block, damp)
    out += W.astype("<f4").tobytes() + X.astype("<f2").tobytes() + Q.astype("<f4").tobytes()
    out += struct.pack("<d", loss)
    return out


def cases(seed=0):
    rng = np.random.default_rng(seed)
    for name, qtype, rows, cols, ntok, act, static, block, dead in CASES:
        W, X = make_inputs(rows, cols, ntok, dead, rng)
        yield name, qtype, W, X, act, static, block


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else HERE
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    for name, qtype, W, X, act, static, block in cases(seed):
        with open(os.path.join(outdir, name + ".gqc"), "wb") as f:
            f.write(encode(qtype, W, X, act, static, block))


if __name__ == "__main__":
    main()
