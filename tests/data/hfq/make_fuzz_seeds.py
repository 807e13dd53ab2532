#!/usr/bin/env python3
"""Seeds for tests/fuzz/fuzz_hf_quantized.c: one small quantized Linear per
layout (8 outputs, 128 inputs), cut out of the fixtures in this directory.
A seed is config.json's text, a NUL byte, then a safetensors file.
Needs numpy only; run from anywhere."""
import json
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "fuzz", "corpus", "hf_quantized")
DT = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I32": np.int32, "I64": np.int64, "I8": np.int8,
      "U8": np.uint8}
NAME = {v: k for k, v in DT.items() if k != "BF16"}


def load(d):
    raw = open(os.path.join(HERE, d, "model.safetensors"), "rb").read()
    hl = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + hl])
    out = {}
    for k, v in hdr.items():
        if k != "__metadata__":
            a, b = v["data_offsets"]
            out[k] = (v["dtype"], np.frombuffer(raw[8 + hl + a:8 + hl + b], dtype=DT[v["dtype"]]).reshape(v["shape"]))
    return json.load(open(os.path.join(HERE, d, "config.json"))), out


def dump(cfg, tensors):
    hdr, off, blobs = {}, 0, []
    for k in sorted(tensors):
        dt, a = tensors[k]
        b = np.ascontiguousarray(a).tobytes()
        hdr[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    return json.dumps({"quantization_config": cfg["quantization_config"]}).encode() + b"\0" + \
        struct.pack("<Q", len(h)) + h + b"".join(blobs)


def seed(name, fixture, cut):
    cfg, t = load(fixture)
    p = "model.layers.0.self_attn.q_proj"
    sel = {k[len(p):]: v for k, v in t.items() if k.startswith(p + ".")}
    out = {"l" + k: (dt, cut(k, a)) for k, (dt, a) in sel.items()}
    out["norm.weight"] = t["model.norm.weight"]
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(dump(cfg, out))


os.makedirs(OUT, exist_ok=True)
gptq = lambda k, a: a if k == ".g_idx" else a[:, :1] if k == ".qzeros" else a[:, :8]  # noqa: E731
seed("gptq4", "gptq_4bit_sym_g32", gptq)
seed("gptq3", "gptq_3bit_g64", gptq)
seed("gptq_descact", "gptq_4bit_descact_g32", gptq)
seed("awq", "awq_gemm_g64", lambda k, a: a[:, :8] if k == ".scales" else a[:, :1])
seed("ct_asym", "ct_w4a16_asym_g32", lambda k, a: np.array([8, 128], np.int64) if k == ".weight_shape"
     else a[:1] if k == ".weight_zero_point" else a[:8])
seed("bnb_int8", "bnb_int8", lambda k, a: a if k == ".weight_format" else a[:8])


def bnb(k, a):
    if k == ".weight":
        return a[:512]
    if k == ".weight.absmax":
        return a[:16]
    if k.startswith(".weight.quant_state"):
        st = json.loads(bytes(a).decode())
        st["shape"] = [8, 128]
        return np.frombuffer(json.dumps(st).encode(), np.uint8)
    return a


seed("bnb_nf4_dq", "bnb_nf4_dq", bnb)
print("wrote", sorted(os.listdir(OUT)))
