#!/usr/bin/env python3
"""Write the NF4 golden files of this folder from the numpy oracle (nf4_oracle.py).

Provenance: inputs are seeded pseudo-random numbers (numpy PCG64, seeds below)
plus hand-placed edge values; expected outputs are what bitsandbytes'
quantize_4bit / dequantize_4bit (CUDA-kernel semantics) produce, as computed by
the independent numpy re-implementation in nf4_oracle.py. Re-run with
`python3 make_golden.py` (numpy needed); `--check` instead verifies that the
committed files are byte-identical to what the oracle produces now.

File format (little-endian), one case per `<name>.nf4g`:
  char magic[8] = "NBNF4G1\\0"; u64 n; u32 blocksize; u32 double_quant;
  f32 x[n]; u8 packed[(n+1)/2];
  double_quant ? (u8 qabsmax[nb]; f32 absmax2[ceil(nb/256)]; f32 offset)
               : (f32 absmax[nb]);
  f32 y[n]            (dequantize_4bit of the state)
where nb = ceil(n / blocksize).
"""
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nf4_oracle as O  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
F32 = np.float32


def edges_bs128():
    """777 elements, blocksize 128: 6 full blocks + a 9-element odd tail."""
    rng = np.random.default_rng(7)
    x = np.zeros(777, dtype=np.float32)
    # block 0: all zeros, with negative zeros -> absmax 0 -> codes 0, dequant -0.0
    x[0:128:3] = F32(-0.0)
    # block 1: absmax 1.0, values exactly on every threshold (tie -> lower code)
    # and one ulp above (-> upper code)
    b = x[128:256]
    b[0], b[1] = F32(1.0), F32(-1.0)
    t = O.NF4_THRESHOLDS
    b[2:17] = t
    b[17:32] = np.nextafter(t, F32(2.0))
    b[32:47] = np.nextafter(t, F32(-2.0))
    b[47:62] = (t.astype(np.float64) * 0.999999).astype(np.float32)
    # block 2: only subnormals: 1/absmax overflows to inf; zeros become NaN -> code 0
    c = x[256:384]
    c[:] = rng.integers(-2000, 2000, 128).astype(np.float32) * F32(1e-42)
    c[5] = F32(0.0)
    # block 3: one small normal, the rest subnormal (scaled values ~0)
    d = x[384:512]
    d[:] = rng.integers(-100, 100, 128).astype(np.float32) * F32(1e-44)
    d[77] = F32(-3e-30)
    # block 4: +absmax and -absmax both present -> codes 15 and 0, plus ties at 2x thresholds
    e = x[512:640]
    e[:] = rng.normal(0, 1, 128).astype(np.float32)
    e[3], e[90] = F32(2.0), F32(-2.0)
    e[10:25] = t * F32(2.0)
    # block 5: huge magnitudes
    x[640:768] = rng.normal(0, 1e30, 128).astype(np.float32)
    # block 6: odd tail
    x[768:777] = rng.normal(0, 0.1, 9).astype(np.float32)
    return x


def scaled_normal(n, bs, seed, zero_blocks=()):
    rng = np.random.default_rng(seed)
    nb = (n + bs - 1) // bs
    scale = np.exp(rng.normal(-4.0, 1.0, nb)).astype(np.float32)
    x = (rng.normal(0, 1, n).astype(np.float32) * np.repeat(scale, bs)[:n]).astype(np.float32)
    for z in zero_blocks:
        x[z * bs:(z + 1) * bs] = 0.0
    return x


def cases():
    rng = np.random.default_rng(1234)
    plain = (rng.normal(0, 0.02, 1000)).astype(np.float32)
    plain[100] = F32(0.5)  # one outlier dominates its block
    return [
        ("plain_bs64", plain, 64, False),
        ("edges_bs128", edges_bs128(), 128, False),
        ("dq_bs64", scaled_normal(64 * 257 + 37, 64, 99, zero_blocks=(3,)), 64, True),
        ("dq_bs256_odd", scaled_normal(256 * 40 + 3, 256, 5), 256, True),
        ("dq_bs4096", scaled_normal(4096 * 2 + 100, 4096, 11), 4096, True),
        ("dq_const", np.full(640, 0.5, dtype=np.float32), 64, True),
        ("dq_zero", np.zeros(200, dtype=np.float32), 64, True),
    ]


def encode(x, bs, dq):
    st = O.quantize_4bit(x, bs, dq)
    y = O.dequantize_4bit(st)
    out = bytearray(b"NBNF4G1\0")
    out += struct.pack("<QII", x.size, bs, 1 if dq else 0)
    out += x.astype("<f4").tobytes()
    out += st["packed"].tobytes()
    if dq:
        out += st["qabsmax"].tobytes()
        out += st["absmax2"].astype("<f4").tobytes()
        out += np.array([st["offset"]], dtype="<f4").tobytes()
    else:
        out += st["absmax"].astype("<f4").tobytes()
    out += y.astype("<f4").tobytes()
    return bytes(out)


def main():
    check = "--check" in sys.argv
    bad = 0
    for name, x, bs, dq in cases():
        data = encode(x, bs, dq)
        path = os.path.join(HERE, name + ".nf4g")
        if check:
            with open(path, "rb") as f:
                same = f.read() == data
            print(("ok   " if same else "DIFF ") + name)
            bad += not same
        else:
            with open(path, "wb") as f:
                f.write(data)
            print("wrote", path, len(data), "bytes")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
