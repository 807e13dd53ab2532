"""GPTQ in numpy, written from the paper (Frantar et al., "GPTQ: Accurate
Post-Training Quantization for Generative Pre-trained Transformers", 2022,
Algorithm 1 with lazy batches and the Cholesky reformulation) and the
reference description in calib/gptq.h, as an oracle for nibble's C code
(calib/gptq.c). Everything is float64 except the quantization grids, which
are float32 numbers exactly as the packed formats decode them.

Grids (one per row and block of G columns, chosen when the block starts):
  int4 sym/asym  GPTQ's find_params in nibble's variant (quant/int4.h):
                 fp16 scale, sym zero point 8, asym zero point 1..15;
                 q = clamp(rint(x / d) + z, 0, 15), value = d * (q - z)
  q4_0           scales from gguf-py's numpy reference quantizer
                 (gguf.quants), value = d * (code - 8), nearest code
  nf4            absmax per 64, value = NF4_CODE[code] * absmax, nearest code
"""
import numpy as np

import importlib.util
import os


def _nf4_code():
    """bitsandbytes' 16 NF4 values (float32) from the NF4 oracle, loaded by path
    (not via sys.path: tests/data/nf4 has its own make_golden module)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "nf4", "nf4_oracle.py")
    spec = importlib.util.spec_from_file_location("nb_nf4_oracle", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.NF4_CODE


NF4_CODE = _nf4_code()


def _f16_scale(s):
    """fp16 bits of a float32 scale as quant/int4.c stores it: 0 for s <= 0,
    at least the smallest subnormal, at most 65504."""
    s = np.float32(s)
    if not s > 0:
        return np.float16(0)
    h = np.float32(s).astype(np.float16)
    bits = h.view(np.uint16)
    if bits & 0x7FFF == 0:
        return np.array([1], dtype=np.uint16).view(np.float16)[0]
    if bits & 0x7C00 == 0x7C00:
        return np.float16(65504)
    return h


def int4_params(x, asym):
    """(d as float32, z) for one group x (float32) with shrink factor 1."""
    mn = np.float32(min(np.float32(0), x.min()))
    mx = np.float32(max(np.float32(0), x.max()))
    if not asym:
        amax = np.float32(max(-mn, mx))
        return np.float32(_f16_scale(np.float32(amax + amax) / np.float32(15))), 8
    if mn == 0 and mx == 0:
        return np.float32(0), 8
    s = np.float32(np.float32(mx - mn) / np.float32(15))
    z = int(np.clip(np.rint(np.float32(-mn) / s), 0, 15))
    if z == 0:
        z, s = 1, np.float32(mx / np.float32(14))
    return np.float32(_f16_scale(s)), z


class Grid:
    """Per-row grid of one block: values[r] (levels,) float32, or int4 (d, z)."""

    def __init__(self, qtype, block):  # block: rows x G float32
        self.qtype = qtype
        rows, G = block.shape
        if qtype.startswith("int4"):
            asym = "asym" in qtype
            self.values = np.zeros((rows, 16), dtype=np.float32)
            self.dz = []
            for r in range(rows):
                d, z = int4_params(block[r], asym)
                self.dz.append((d, z))
                self.values[r] = d * (np.arange(16, dtype=np.float32) - np.float32(z))
        elif qtype == "q4_0":
            import gguf
            raw = gguf.quants.quantize(block, gguf.GGMLQuantizationType.Q4_0)
            d = raw[:, 0:2].copy().view(np.float16)[:, 0].astype(np.float32)
            self.values = (np.arange(16, dtype=np.float32) - np.float32(8))[None, :] * d[:, None]
        elif qtype == "nf4":
            amax = np.abs(block).max(axis=1).astype(np.float32)
            self.values = NF4_CODE[None, :] * amax[:, None]
        else:
            raise ValueError(qtype)

    def quantize(self, w):
        """Nearest representable value per row (float64 column w)."""
        if self.qtype.startswith("int4"):
            out = np.empty_like(w)
            for r, (d, z) in enumerate(self.dz):
                if d == 0:
                    out[r] = 0.0
                    continue
                q = np.clip(np.rint(w[r] / np.float64(d)) + z, 0, 15)
                out[r] = np.float32(d) * np.float32(q - z)
            return out
        k = np.argmin(np.abs(w[:, None] - self.values.astype(np.float64)), axis=1)
        return self.values[np.arange(len(w)), k].astype(np.float64)


GROUP = {"int4_sym_g32": 32, "int4_sym_g64": 64, "int4_sym_g128": 128, "int4_asym_g32": 32,
         "int4_asym_g64": 64, "int4_asym_g128": 128, "q4_0": 32, "nf4": 64}


def gptq(W, X, qtype, blocksize=128, percdamp=0.01, actorder=False, static_groups=False):
    """Returns (Q as float32 rows x cols in the original column order, loss)."""
    W = np.array(W, dtype=np.float64)
    rows, cols = W.shape
    G = GROUP[qtype]
    Xd = np.asarray(X, dtype=np.float64)
    H = (2.0 / Xd.shape[0]) * (Xd.T @ Xd)
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    static = static_groups or actorder
    groups = None
    if static:
        groups = [Grid(qtype, W[:, g:g + G].astype(np.float32)) for g in range(0, cols, G)]
    if actorder:
        perm = np.argsort(-np.diag(H), kind="stable")
    else:
        perm = np.arange(cols)
    W = W[:, perm]
    H = H[perm][:, perm]
    H[np.diag_indices(cols)] += percdamp * np.mean(np.diag(H))
    Hinv = np.linalg.inv(H)
    Hinv = (Hinv + Hinv.T) / 2
    U = np.linalg.cholesky(Hinv).T  # upper, Hinv = U^T U
    Q = np.zeros_like(W)
    loss = 0.0
    cur = None
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].copy()
        Err1 = np.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            c = perm[col]
            if static:
                grid = groups[c // G]
            else:
                if c % G == 0:  # the group's scales from the lazily updated W (not W1)
                    cur = Grid(qtype, W[:, c:c + G].astype(np.float32))
                grid = cur
            w = W1[:, i]
            q = grid.quantize(w)
            Q[:, col] = q
            d = U[col, col]
            loss += float(np.sum((w - q) ** 2) / d ** 2)
            err = (w - q) / d
            W1[:, i:] -= np.outer(err, U[col, col:i2])
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    Q = Q[:, np.argsort(perm)]
    return Q.astype(np.float32), loss / 2
