#!/usr/bin/env python3
"""Write the quantized Hugging Face checkpoints in this directory and the
dequantized values their libraries compute (expected.json). See README.md.

Needs torch (CPU), transformers, bitsandbytes, compressed-tensors, safetensors
and numpy; AutoAWQ's pure-torch packing module is loaded from an unpacked
`autoawq` sdist named by AUTOAWQ_SRC (its package needs CUDA to install):

    pip download --no-deps autoawq==0.2.9 && tar xzf autoawq-0.2.9.tar.gz
    AUTOAWQ_SRC=autoawq-0.2.9 python make_fixtures.py

Deterministic for a given library version (seeded weights; bitsandbytes'
mean(absmax) for double quantization is a torch fp32 reduction).
"""
import hashlib
import importlib.util
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(20261206)
torch.set_num_threads(1)

# One llama block: every Linear has in_features 128 (group 128 fits), out
# features 128 or 64 (kv), so the checkpoints stay small.
CFG = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=128, intermediate_size=128,
           num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=64, vocab_size=64,
           max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
           hidden_act="silu", torch_dtype="float16", bos_token_id=1, eos_token_id=2)
LINEARS = {"self_attn.q_proj": (128, 128), "self_attn.k_proj": (64, 128), "self_attn.v_proj": (64, 128),
           "self_attn.o_proj": (128, 128), "mlp.gate_proj": (128, 128), "mlp.up_proj": (128, 128),
           "mlp.down_proj": (128, 128)}  # name: (out_features, in_features)
EXPECTED = {}


def base_weights():
    g = torch.Generator().manual_seed(7)
    w = {"model.embed_tokens.weight": torch.randn(64, 128, generator=g) * 0.02,
         "model.norm.weight": 1 + torch.randn(128, generator=g) * 0.1,
         "model.layers.0.input_layernorm.weight": 1 + torch.randn(128, generator=g) * 0.1,
         "model.layers.0.post_attention_layernorm.weight": 1 + torch.randn(128, generator=g) * 0.1}
    for m, (o, i) in LINEARS.items():
        w[f"model.layers.0.{m}.weight"] = torch.randn(o, i, generator=g) * (1 / math.sqrt(i))
    return {k: v.to(torch.float16) for k, v in w.items()}


def record(fixture, name, deq, kind, note=None):
    """Expected values: the library's dequantized tensor in fp32 (sha256 of its
    little-endian bytes, plus a few values for a readable failure)."""
    a = deq.detach().to(torch.float32).contiguous().numpy()
    e = {"shape": list(a.shape), "type": kind, "sha256_f32": hashlib.sha256(a.tobytes()).hexdigest(),
         "first": [float(x) for x in a.reshape(-1)[:4]], "sum": float(a.astype(np.float64).sum())}
    if note:
        e["note"] = note
    EXPECTED.setdefault(fixture, {})[name] = e


def write_dir(name, tensors, qcfg, extra_cfg=None):
    d = os.path.join(HERE, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    cfg = dict(CFG)
    cfg["quantization_config"] = qcfg
    if extra_cfg:
        cfg.update(extra_cfg)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "model.safetensors"),
              metadata={"format": "pt"})
    return d


# ---- bitsandbytes: transformers quantizes and saves --------------------------------------

def bnb_fixture(name, **kw):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig
    import bitsandbytes.functional as F
    src = os.path.join(HERE, "_float")
    shutil.rmtree(src, ignore_errors=True)
    os.makedirs(src)
    c = {k: v for k, v in CFG.items() if k not in ("architectures", "model_type", "torch_dtype")}
    LlamaConfig(**c).save_pretrained(src)
    w = base_weights()
    save_file(w, os.path.join(src, "model.safetensors"), metadata={"format": "pt"})
    m = AutoModelForCausalLM.from_pretrained(src, quantization_config=BitsAndBytesConfig(**kw),
                                             dtype=torch.float16, device_map="cpu")
    d = os.path.join(HERE, name)
    shutil.rmtree(d, ignore_errors=True)
    m.save_pretrained(d)
    shutil.rmtree(src)
    for f in ("generation_config.json",):
        if os.path.exists(os.path.join(d, f)):
            os.remove(os.path.join(d, f))
    for mod in LINEARS:
        lin = m.get_submodule(f"model.layers.0.{mod}")
        full = f"model.layers.0.{mod}.weight"
        if kw.get("load_in_4bit"):
            deq = F.dequantize_4bit(lin.weight.data, lin.weight.quant_state)  # fp16: the library's output
            qs = lin.weight.quant_state
            # the fp32 product the kernel rounds to fp16: code * absmax
            absmax = qs.absmax
            if qs.nested:
                absmax = F.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset
            codes = torch.stack([(lin.weight.data.view(-1) >> 4) & 15, lin.weight.data.view(-1) & 15], 1).view(-1)
            f32 = (qs.code[codes.long()].view(-1, qs.blocksize) * absmax.view(-1, 1).float()).view(qs.shape)
            assert torch.equal(f32.to(torch.float16), deq), "fp32 product must round to bnb's fp16 output"
            record(name, full, f32, "nf4" if kw.get("bnb_4bit_quant_type") == "nf4" else "f32")
        else:
            from bitsandbytes.functional import int8_vectorwise_dequant
            cb = lin.weight.data
            scb = lin.weight.SCB
            deq = int8_vectorwise_dequant(cb, scb)  # fp32: CB * SCB / 127
            record(name, full, deq, "f32")
    return d


# ---- GPTQ: GPTQModel's pack_original / dequantize_weight, transcribed -----------------------

def rtn(w, bits, group, sym):
    """GPTQ's Quantizer.find_params + quantize per group of input features.
    w [out, in] -> codes [out, in] int, scales [in/G, out], zeros [in/G, out]."""
    o, i = w.shape
    maxq = 2 ** bits - 1
    wg = w.float().view(o, i // group, group)
    xmin = torch.clamp(wg.amin(-1), max=0)
    xmax = torch.clamp(wg.amax(-1), min=0)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = -xmax
    scale = ((xmax - xmin) / maxq).to(torch.float16).float()
    scale[scale == 0] = 1
    if sym:
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        zero = torch.round(-xmin / scale).clamp(1, maxq)  # z = 0 is not storable in v1
    q = torch.clamp(torch.round(wg / scale[..., None]) + zero[..., None], 0, maxq).to(torch.int64)
    return q.view(o, i), scale.T.contiguous(), zero.T.to(torch.int64).contiguous()


def pack_rows(codes, bits):
    """[in, out] codes -> qweight [in*bits/32, out] int32 (GPTQ row packing, 3-bit across words)."""
    k, n = codes.shape
    flat = codes.T.reshape(n, k)  # per output column, the input sequence
    words = pack_dense(flat, bits)  # [n, words]
    return words.T.contiguous()


def pack_dense(v, bits):
    """[rows, k] unsigned codes -> [rows, ceil(k*bits/32)] int32: element j at bit j*bits
    of the concatenated little-endian words (GPTQ's 2/3/4/8-bit layouts are all this)."""
    rows, k = v.shape
    nw = (k * bits + 31) // 32
    out = np.zeros((rows, nw), dtype=np.uint64)
    vv = v.numpy().astype(np.uint64)
    for j in range(k):
        b = j * bits
        w, s = b // 32, b % 32
        out[:, w] |= (vv[:, j] << np.uint64(s)) & np.uint64(0xFFFFFFFF)
        if s + bits > 32:
            out[:, w + 1] |= vv[:, j] >> np.uint64(32 - s)
    return torch.from_numpy(out.astype(np.uint32).view(np.int32))


def gptq_dequant(qweight, qzeros, scales, g_idx, bits, v1):
    """GPTQModel PackableQuantLinear.dequantize_weight: scales[g_idx] * (W - zeros[g_idx])
    in fp16, W [in, out]; v1 checkpoints store zero - 1 (the loader adds 1)."""
    k = g_idx.shape[0]
    n = scales.shape[1]
    w = unpack_dense(qweight.T.contiguous(), bits, k).T  # [in, out]
    z = unpack_dense(qzeros, bits, n)  # [groups, out]
    if v1:
        z = z + 1
    return scales[g_idx.long()] * (w - z[g_idx.long()]).to(torch.float16), \
        scales[g_idx.long()].float() * (w - z[g_idx.long()]).float()


def unpack_dense(words, bits, k):
    u = words.numpy().view(np.uint32).astype(np.uint64)
    rows = u.shape[0]
    out = np.zeros((rows, k), dtype=np.int64)
    for j in range(k):
        b = j * bits
        w, s = b // 32, b % 32
        v = u[:, w] >> np.uint64(s)
        if s + bits > 32:
            v |= u[:, w + 1] << np.uint64(32 - s)
        out[:, j] = (v & np.uint64((1 << bits) - 1)).astype(np.int64)
    return torch.from_numpy(out)


def gptq_fixture(name, bits, group, sym, desc_act=False, v1=True, kind="f32"):
    w = base_weights()
    out = {k: v for k, v in w.items() if not any(k.endswith(m + ".weight") for m in LINEARS)}
    for mod, (o, i) in LINEARS.items():
        G = i if group == -1 else group
        W = w[f"model.layers.0.{mod}.weight"]
        perm = torch.randperm(i) if desc_act else torch.arange(i)
        # act-order: GPTQ quantizes columns in perm order; group g = position // G
        q, sc, zr = rtn(W[:, perm], bits, G, sym)
        inv = torch.argsort(perm)
        codes = q[:, inv].T.contiguous()  # [in, out], back in input order
        g_idx = (inv // G).to(torch.int32) if desc_act else (torch.arange(i) // G).to(torch.int32)
        zst = zr - 1 if v1 else zr
        p = f"model.layers.0.{mod}"
        out[p + ".qweight"] = pack_rows(codes, bits)
        out[p + ".qzeros"] = pack_dense(zst.to(torch.int64) & ((1 << bits) - 1), bits)
        out[p + ".scales"] = sc.to(torch.float16)
        out[p + ".g_idx"] = g_idx
        deq16, deq32 = gptq_dequant(out[p + ".qweight"], out[p + ".qzeros"], out[p + ".scales"], g_idx, bits, v1)
        assert torch.equal(deq32.to(torch.float16), deq16)
        record(name, p + ".weight", deq32.T, kind)
    qcfg = {"bits": bits, "group_size": group, "desc_act": desc_act, "sym": sym, "quant_method": "gptq",
            "checkpoint_format": "gptq" if v1 else "gptq_v2", "damp_percent": 0.01, "true_sequential": True,
            "static_groups": False, "lm_head": False}
    write_dir(name, out, qcfg)


# ---- AWQ GEMM: AutoAWQ's WQLinear_GEMM.from_linear packing; its dequantize_gemm as oracle --

def awq_fixture(name, group):
    src = os.environ.get("AUTOAWQ_SRC")
    spec = importlib.util.spec_from_file_location("awq_packing", os.path.join(src, "awq", "utils", "packing_utils.py"))
    pu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pu)
    w = base_weights()
    out = {k: v for k, v in w.items() if not any(k.endswith(m + ".weight") for m in LINEARS)}
    order = [0, 2, 4, 6, 1, 3, 5, 7]
    for mod, (o, i) in LINEARS.items():
        W = w[f"model.layers.0.{mod}.weight"]
        q, sc, zr = rtn(W, 4, group, False)
        intweight = q.T.contiguous().to(torch.int32)  # [in, out]
        qweight = torch.zeros(i, o // 8, dtype=torch.int32)
        for col in range(o // 8):
            for k in range(8):
                qweight[:, col] |= intweight[:, col * 8 + order[k]] << (k * 4)
        zeros = zr.to(torch.int32)  # [groups, out]
        qzeros = torch.zeros(zeros.shape[0], o // 8, dtype=torch.int32)
        for col in range(o // 8):
            for k in range(8):
                qzeros[:, col] |= zeros[:, col * 8 + order[k]] << (k * 4)
        p = f"model.layers.0.{mod}"
        out[p + ".qweight"] = qweight
        out[p + ".qzeros"] = qzeros
        out[p + ".scales"] = sc.to(torch.float16)
        deq = pu.dequantize_gemm(qweight, qzeros, sc.to(torch.float16), 4, group)  # [in, out] fp16
        iw, iz = pu.unpack_awq(qweight, qzeros, 4)
        iw, iz = pu.reverse_awq_order(iw, iz, 4)
        iw, iz = iw & 15, iz & 15
        f32 = (iw - iz.repeat_interleave(group, 0)).float() * sc.float().repeat_interleave(group, 0)
        assert torch.equal(f32.to(torch.float16), deq)
        record(name, p + ".weight", f32.T, "int4_asym_g%d" % group)
    qcfg = {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True, "version": "gemm",
            "modules_to_not_convert": None}
    write_dir(name, out, qcfg)


# ---- compressed-tensors pack-quantized W4A16: the library packs and dequantizes -------------

def ct_fixture(name, group, sym, strategy="group"):
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    args = QuantizationArgs(num_bits=4, type="int", symmetric=sym, strategy=strategy,
                            group_size=group if strategy == "group" else None)
    w = base_weights()
    out = {k: v for k, v in w.items() if not any(k.endswith(m + ".weight") for m in LINEARS)}
    for mod, (o, i) in LINEARS.items():
        G = group if strategy == "group" else i
        W = w[f"model.layers.0.{mod}.weight"]
        q, sc, zr = rtn(W, 4, G, sym)  # unsigned codes, scale [groups, out]
        signed = (q - 8).to(torch.int8)
        scale = sc.T.contiguous().to(torch.bfloat16)  # [out, groups], the model dtype
        p = f"model.layers.0.{mod}"
        out[p + ".weight_packed"] = pack_to_int32(signed, 4)
        out[p + ".weight_scale"] = scale
        out[p + ".weight_shape"] = torch.tensor([o, i], dtype=torch.int64)
        zp = None
        if not sym:
            zp = (zr.T.contiguous() - 8).to(torch.int8)  # [out, groups]
            out[p + ".weight_zero_point"] = pack_to_int32(zp, 4, packed_dim=0)
        xq = unpack_from_int32(out[p + ".weight_packed"], 4, torch.Size([o, i]))
        assert torch.equal(xq, signed)
        zpu = None if sym else unpack_from_int32(out[p + ".weight_zero_point"], 4, torch.Size([o, i // G]), packed_dim=0)
        deq = dequantize(xq, scale, zpu, args=args)  # in the scale's dtype (bf16), as the library runs it
        zfull = torch.zeros_like(xq) if sym else zpu.repeat_interleave(G, 1)
        f32 = (xq.float() - zfull.float()) * scale.float().repeat_interleave(G, 1)
        assert torch.equal(f32.to(deq.dtype), deq), "exact product must round to the library's bf16 output"
        record(name, p + ".weight", f32, "int4_%s_g%d" % ("sym" if sym else "asym", G) if G in (32, 64, 128) else "f32",
               note="exact fp32 product; bf16(product) == compressed_tensors dequantize()")
    wargs = {"num_bits": 4, "type": "int", "symmetric": sym, "strategy": strategy, "dynamic": False,
             "group_size": group if strategy == "group" else None, "actorder": None, "observer": "minmax",
             "block_structure": None, "observer_kwargs": {}}
    qcfg = {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": wargs, "input_activations": None,
                                          "output_activations": None, "format": "pack-quantized"}},
            "ignore": ["lm_head"], "kv_cache_scheme": None, "global_compression_ratio": None,
            "sparsity_config": {}, "version": "0.20.1"}
    write_dir(name, out, qcfg, {"torch_dtype": "bfloat16"})


bnb_fixture("bnb_nf4_dq", load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float16)
bnb_fixture("bnb_fp4", load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype=torch.float16)
bnb_fixture("bnb_int8", load_in_8bit=True)
gptq_fixture("gptq_4bit_sym_g32", 4, 32, True, kind="int4_sym_g32")
gptq_fixture("gptq_4bit_asym_g128_v2", 4, 128, False, v1=False, kind="int4_asym_g128")
gptq_fixture("gptq_4bit_descact_g32", 4, 32, False, desc_act=True)
gptq_fixture("gptq_3bit_g64", 3, 64, False)
gptq_fixture("gptq_8bit_chan", 8, -1, True)
gptq_fixture("gptq_2bit_g32", 2, 32, False)
awq_fixture("awq_gemm_g64", 64)
ct_fixture("ct_w4a16_g128", 128, True)
ct_fixture("ct_w4a16_asym_g32", 32, False)
with open(os.path.join(HERE, "expected.json"), "w") as f:
    json.dump(EXPECTED, f, indent=1, sort_keys=True)
    f.write("\n")
print("wrote", ", ".join(sorted(EXPECTED)))
