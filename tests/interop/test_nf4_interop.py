#!/usr/bin/env python3
"""NF4 interop: keep the numpy oracle honest, and check it against the real
bitsandbytes when that is importable.

1. The golden files in tests/data/nf4 (which tests/quant/test_nf4.c compares
   nibble's C output with, byte for byte) must be exactly what the numpy oracle
   (tests/data/nf4/nf4_oracle.py) produces now.
2. Facts of bitsandbytes' NF4 that the oracle encodes are re-derived here: the
   dQuantizeNF4 thresholds are the midpoints of neighbouring codes, the dynamic
   map has bitsandbytes' structure.
3. Optional: with `torch` and `bitsandbytes` importable (CPU is enough), the
   real library must (a) build the same nested quant map, (b) dequantize the
   oracle's states to bit-identical floats (plain and double-quantized), (c)
   quantize to the same nibbles except in blocks whose absmax is so small that
   1/absmax overflows (bitsandbytes' CPU backend clamps absmax to 1e-38 there,
   its CUDA kernel, which the oracle follows, does not), and (d) pick no nearer
   nested code than the oracle does. Skipped with a printed reason otherwise.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

HERE = harness.HERE
DATA = harness.DATA
sys.path.insert(0, os.path.join(DATA, "nf4"))

try:
    import numpy as np
except ImportError:
    print("SKIP: numpy not importable")
    sys.exit(77)

import make_golden as G  # noqa: E402
import nf4_oracle as O  # noqa: E402

check = harness.Checks()


def test_goldens_match_oracle():
    for name, x, bs, dq in G.cases():
        path = os.path.join(DATA, "nf4", name + ".nf4g")
        with open(path, "rb") as f:
            committed = f.read()
        check(committed == G.encode(x, bs, dq), f"golden {name} differs from the oracle's output")


def test_oracle_facts():
    code = O.NF4_CODE.astype(np.float64)
    mids = (code[:-1] + code[1:]) / 2
    # each kernel threshold is the midpoint, to within one float ulp
    for i, (t, m) in enumerate(zip(O.NF4_THRESHOLDS, mids)):
        check(abs(float(t) - m) <= abs(float(np.spacing(np.float32(m)))), f"threshold {i} is not a midpoint")
        check(O.nf4_index(np.array([t]))[0] == i, f"tie at threshold {i} must take the lower code")
        check(O.nf4_index(np.array([np.nextafter(t, np.float32(2))]))[0] == i + 1, f"above threshold {i}")
    m = O.dynamic_map_signed()
    check(m.size == 256 and np.all(np.diff(m) > 0), "dynamic map is not 256 ascending values")
    check(m[127] == 0 and m[255] == 1 and np.array_equal(m[:127], -m[254:127:-1]), "dynamic map shape")
    # the 7 exponent levels hold 1, 2, 4, ..., 64 means between 10^(i-6) * 0.1 and 10^(i-6)
    pos = m[128:255].astype(np.float64)
    for i in range(7):
        lo, hi = 10.0 ** (i - 6) * 0.1, 10.0 ** (i - 6)
        check(np.count_nonzero((pos > lo) & (pos < hi)) == 2 ** i, f"dynamic map level {i}")


def test_real_bitsandbytes():
    try:
        import torch
        import bitsandbytes.functional as F
    except Exception as e:  # ImportError, or a broken CUDA-only build
        print(f"SKIP (optional part): real bitsandbytes not importable here: {type(e).__name__}: {e}")
        return
    import bitsandbytes
    print(f"real bitsandbytes {bitsandbytes.__version__}, torch {torch.__version__}")
    ref = F.create_dynamic_map(signed=True).numpy()
    check(np.array_equal(ref.view(np.uint32), O.dynamic_map_signed().view(np.uint32)),
          "create_dynamic_map(signed=True) differs from the oracle's map")
    for name, x, bs, dq in G.cases():
        st = O.quantize_4bit(x, bs, dq)
        t = torch.from_numpy(x.copy())
        q, s = F.quantize_4bit(t, blocksize=bs, quant_type="nf4", compress_statistics=dq)
        # (c) nibbles, outside blocks whose reciprocal absmax overflows, and
        # except values lying between a kernel threshold literal and the fp32
        # midpoint bitsandbytes' CPU backend bucketizes with (they differ by
        # one ulp for 4 of the 15 thresholds)
        amax = np.array([np.max(np.abs(x[b:b + bs])) for b in range(0, x.size, bs)], dtype=np.float32)
        tiny = np.repeat(amax < np.float32(2.0 ** -126), bs)[: x.size]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            scaled = (x * np.repeat(np.float32(1) / amax, bs)[: x.size]).astype(np.float32)
        cpu_mid = ((O.NF4_CODE[:-1] + O.NF4_CODE[1:]) / np.float32(2)).astype(np.float32)
        lo, hi = np.minimum(cpu_mid, O.NF4_THRESHOLDS), np.maximum(cpu_mid, O.NF4_THRESHOLDS)
        between = np.any((scaled[:, None] >= lo) & (scaled[:, None] <= hi), axis=1)
        theirs = q.numpy().reshape(-1)
        codes_t = np.empty(theirs.size * 2, dtype=np.uint8)
        codes_t[0::2], codes_t[1::2] = theirs >> 4, theirs & 0x0F
        codes_o = np.empty(theirs.size * 2, dtype=np.uint8)
        codes_o[0::2], codes_o[1::2] = st["packed"] >> 4, st["packed"] & 0x0F
        diff = (codes_t != codes_o)[: x.size]
        bad = diff & ~tiny & ~between
        check(not np.any(bad), f"{name}: bitsandbytes quantize_4bit differs at {np.nonzero(bad)[0][:8]}")
        if np.any(diff & between):
            print(f"  {name}: {np.count_nonzero(diff & between)} value(s) on a threshold where bnb's CPU "
                  "backend and its CUDA kernel (= nibble) disagree")
        if dq and not np.any(amax < np.float32(2.0 ** -126)):
            # (d) nested codes given bitsandbytes' own absmax and offset (its fp32 mean)
            off = np.float32(s.offset.item())
            v = (amax - off).astype(np.float32)
            ours, _ = O.quantize_blockwise(v, st["nested_code"], 256)
            theirs = s.absmax.numpy().reshape(-1)
            a2 = np.repeat(s.state2.absmax.numpy(), 256)[: v.size]
            with np.errstate(divide="ignore", invalid="ignore"):
                vn = (v * (np.float32(1) / a2)).astype(np.float32)
            code = st["nested_code"]
            worse = np.abs(vn - code[ours]) > np.abs(vn - code[theirs])
            check(not np.any(worse[np.isfinite(vn)]), f"{name}: oracle's nested code farther than bnb's")
        # (b) bitsandbytes dequantizes the oracle's state to the oracle's numbers
        s.absmax = torch.from_numpy(st["qabsmax"] if dq else st["absmax"])
        if dq:
            s.offset = torch.tensor(st["offset"])
            s.state2.absmax = torch.from_numpy(st["absmax2"])
            s.state2.code = torch.from_numpy(st["nested_code"])
        y = F.dequantize_4bit(torch.from_numpy(st["packed"]).reshape(-1, 1), s).numpy().reshape(-1)
        check(np.array_equal(y.view(np.uint32), O.dequantize_4bit(st).view(np.uint32)),
              f"{name}: bitsandbytes dequantize_4bit of the oracle state differs")
    # a larger random tensor: nibbles identical, dequantization identical
    rng = np.random.default_rng(2024)
    x = (rng.normal(0, 0.02, 1 << 20)).astype(np.float32)
    for dq in (False, True):
        st = O.quantize_4bit(x, 64, dq)
        q, s = F.quantize_4bit(torch.from_numpy(x.copy()), blocksize=64, quant_type="nf4", compress_statistics=dq)
        nd = np.count_nonzero(q.numpy().reshape(-1) != st["packed"])
        check(nd == 0, f"random 2^20 (dq={dq}): {nd} packed bytes differ from bitsandbytes")
        ya = F.dequantize_4bit(q, s).numpy().reshape(-1)
        yo = O.dequantize_4bit(st)
        same = np.count_nonzero(ya.view(np.uint32) == yo.view(np.uint32))
        print(f"  random 2^20 dq={dq}: packed bytes differing {nd}; dequantized values bit-identical "
              f"{same}/{x.size} (offset bnb {s.offset.item() if dq else 0:.9g} vs oracle "
              f"{float(st.get('offset', 0)):.9g})")
        if not dq:
            check(same == x.size, "random 2^20: dequantized values differ")


if __name__ == "__main__":
    test_goldens_match_oracle()
    test_oracle_facts()
    test_real_bitsandbytes()
    if check.summary():
        sys.exit(1)
    print("nf4 interop: all checks passed")
