"""Independent numpy re-implementation of bitsandbytes' NF4 quantization.

Written from reading bitsandbytes' sources (csrc/kernels.cu: kQuantizeBlockwise,
dQuantizeNF4, dQuantize<0>, kDequantizeBlockwise; bitsandbytes/functional.py:
quantize_4bit, dequantize_4bit, quantize_blockwise, create_dynamic_map), not
from nibble's C code. It is the oracle for nibble's quant/nf4.c: the goldens in
this folder are produced by it, and tests/interop/test_nf4_interop.py re-runs it
to check that the committed goldens still say what the oracle says.

Conventions mirrored here (the CUDA kernel's, which is what QLoRA checkpoints
were made with):
  * absmax per block of the flattened tensor, fp32; the last block may be short;
  * x is scaled by multiplying with the fp32 reciprocal 1/absmax;
  * code = number of dQuantizeNF4 thresholds strictly below x (the kernel's
    comparison tree), NaN (0 * inf, all-zero blocks) -> code 0;
  * element 2i -> high nibble of byte i; an odd tail is padded with 0.0;
  * double quantization: offset = mean(absmax) (here: exact mean rounded to
    fp32), quantize_blockwise(absmax - offset, blocksize=256) with the signed
    dynamic map and dQuantize<0>'s binary search + midpoint rule;
  * dequantization: code * absmax in fp32, DQ absmax = map[q] * absmax2 + offset.
"""
from fractions import Fraction

import numpy as np

F32 = np.float32

def f32_from_decimal(s):
    """Correctly rounded decimal -> fp32 (as a C/CUDA `1.5f` literal is parsed).
    numpy's np.float32(str) goes through double first, and double rounding
    moves -0.8480964004993439 (dQuantizeNF4's lowest threshold) by one ulp."""
    exact = Fraction(s)
    f = np.float32(float(exact))
    best = f
    for cand in (np.nextafter(f, np.float32(-np.inf)), np.nextafter(f, np.float32(np.inf))):
        dc, db = abs(Fraction(float(cand)) - exact), abs(Fraction(float(best)) - exact)
        if dc < db or (dc == db and (int(cand.view(np.uint32)) & 1) == 0):
            best = cand
    return np.float32(best)


# get_4bit_type("nf4") values, as the float literals of kernels.cu's NF4 LUT
NF4_CODE_STR = [
    "-1.0", "-0.6961928009986877", "-0.5250730514526367", "-0.39491748809814453",
    "-0.28444138169288635", "-0.18477343022823334", "-0.09105003625154495", "0.0",
    "0.07958029955625534", "0.16093020141124725", "0.24611230194568634", "0.33791524171829224",
    "0.44070982933044434", "0.5626170039176941", "0.7229568362236023", "1.0"]
NF4_CODE = np.array([f32_from_decimal(s) for s in NF4_CODE_STR], dtype=np.float32)

# the float literals of dQuantizeNF4's decision tree, low to high
NF4_THRESHOLD_STR = [
    "-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
    "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
    "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
    "0.5016634166240692", "0.6427869200706482", "0.8614784181118011"]
NF4_THRESHOLDS = np.array([f32_from_decimal(s) for s in NF4_THRESHOLD_STR], dtype=np.float32)


def nf4_index(v):
    """dQuantizeNF4 on an fp32 array: count of thresholds t with v > t."""
    v = np.asarray(v, dtype=np.float32)
    idx = np.searchsorted(NF4_THRESHOLDS, v, side="left").astype(np.uint8)
    idx[np.isnan(v)] = 0
    return idx


def _fma32(a, b, c):
    return F32(float(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))))


def _linspace32(start, end, steps):
    """torch.linspace in fp32 as its vectorised CPU kernel computes it
    (first half start + step*i, second half end - step*(steps-1-i), each a
    fused multiply-add)."""
    s, e = F32(start), F32(end)
    step = F32(F32(e - s) / F32(steps - 1))
    half = steps // 2
    out = []
    for i in range(steps):
        if i < half:
            out.append(_fma32(step, F32(i), s))
        else:
            out.append(_fma32(-step, F32(steps - 1 - i), e))
    return np.array(out, dtype=np.float32)


def dynamic_map_signed():
    """create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)."""
    data = []
    for i in range(7):
        b = _linspace32(0.1, 1.0, 2 ** i + 1)
        means = ((b[:-1] + b[1:]) / F32(2.0)).astype(np.float32)
        p = F32(10.0 ** (i - 6))
        data += list((p * means).astype(np.float32))
        data += list((-(p * means)).astype(np.float32))
    data += [F32(0.0), F32(1.0)]
    return np.sort(np.array(data, dtype=np.float32))


def dquantize(code, x):
    """dQuantize<STOCHASTIC=0> (scalar, fp32)."""
    x = F32(x)
    pivot, upper_pivot, lower_pivot = 127, 255, 0
    lower, upper = F32(-1.0), F32(1.0)
    val = code[pivot]
    i = 64
    while i > 0:
        if x > val:
            lower_pivot, lower = pivot, val
            pivot += i
        else:
            upper_pivot, upper = pivot, val
            pivot -= i
        val = code[pivot]
        i >>= 1
    if upper_pivot == 255:
        upper = code[upper_pivot]
    if lower_pivot == 0:
        lower = code[lower_pivot]
    if x > val:
        mid = F32((upper + val) * F32(0.5))
        return upper_pivot if x > mid else pivot
    mid = F32((lower + val) * F32(0.5))
    return lower_pivot if x < mid else pivot


def _blocks(n, bs):
    return [(b, min(b + bs, n)) for b in range(0, n, bs)]


def quantize_blockwise(a, code, blocksize):
    """quantize_blockwise(A, code, blocksize) for fp32 A: (codes u8, absmax f32)."""
    a = np.asarray(a, dtype=np.float32)
    q = np.zeros(a.size, dtype=np.uint8)
    amax = []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for beg, end in _blocks(a.size, blocksize):
            m = F32(np.max(np.abs(a[beg:end])))
            amax.append(m)
            inv = F32(F32(1.0) / m)
            for j in range(beg, end):
                q[j] = dquantize(code, F32(a[j] * inv))
    return q, np.array(amax, dtype=np.float32)


def quantize_4bit(x, blocksize=64, compress_statistics=False):
    """bnb quantize_4bit(x.flatten(), blocksize, quant_type='nf4'). Returns a dict
    with packed (u8), and absmax (f32) or qabsmax/absmax2/offset/nested_code."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    n = x.size
    codes = np.zeros(n + (n % 2), dtype=np.uint8)
    absmax = []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for beg, end in _blocks(n, blocksize):
            blk = x[beg:end]
            m = F32(np.max(np.abs(blk)))
            absmax.append(m)
            inv = F32(F32(1.0) / m)
            codes[beg:end] = nf4_index((blk * inv).astype(np.float32))
            if end == n and n % 2:
                codes[n] = nf4_index(np.array([F32(0.0) * inv], dtype=np.float32))[0]
    packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)
    absmax = np.array(absmax, dtype=np.float32)
    st = {"n": n, "blocksize": blocksize, "packed": packed, "double_quant": compress_statistics}
    if not compress_statistics:
        st["absmax"] = absmax
        return st
    offset = F32(sum(Fraction(float(v)) for v in absmax) / len(absmax))
    code = dynamic_map_signed()
    q, absmax2 = quantize_blockwise((absmax - offset).astype(np.float32), code, 256)
    st.update({"qabsmax": q, "absmax2": absmax2, "offset": offset, "nested_code": code})
    return st


def state_absmax(st):
    if not st["double_quant"]:
        return st["absmax"]
    code = st["nested_code"]
    a2 = np.repeat(st["absmax2"], 256)[: st["qabsmax"].size]
    return ((code[st["qabsmax"]] * a2).astype(np.float32) + st["offset"]).astype(np.float32)


def dequantize_4bit(st):
    n, bs = st["n"], st["blocksize"]
    p = st["packed"]
    codes = np.empty(p.size * 2, dtype=np.uint8)
    codes[0::2] = p >> 4
    codes[1::2] = p & 0x0F
    a = np.repeat(state_absmax(st), bs)[:n]
    return (NF4_CODE[codes[:n]] * a).astype(np.float32)
