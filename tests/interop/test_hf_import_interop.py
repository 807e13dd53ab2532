#!/usr/bin/env python3
"""Quantized Hugging Face checkpoints (tests/data/hfq) as nibble sources,
checked against independent numpy dequantizers.

For every fixture, numpy dequantizes the checkpoint's own tensors (written
here from the layouts of bitsandbytes, GPTQModel, AutoAWQ and
compressed-tensors, see formats/hf_quantized.c) and
  1. the fp32 bytes hash to the value expected.json recorded from the
     libraries themselves (ties this oracle to them);
  2. `nibble convert DIR -o x.gguf --type f32` read back with gguf-py gives
     exactly those values (q/k rows in llama.cpp's order), and every other
     tensor unchanged;
  3. `nibble convert DIR -o x.gguf` (no --type) keeps NF4 / INT4 where the
     grid is nibble's, and `nibble quantize DIR --type q4_k_m
     --allow-requantize` writes a GGUF that gguf-py dequantizes to within
     the requantization error (relative RMS < 0.2 of the weights);
  4. bad checkpoints: exit 2, one line naming the file and key/tensor,
     nothing written;
  5. sharded checkpoints whose packed codes and companions sit in different
     shards convert to the same tensors as the single file;
  6. one type per group size: a GPTQ v1 zero point of 16 sends every weight
     to f32, one asymmetric weight makes the symmetric ones asymmetric, and
     the values stay the oracle's.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
    from gguf.quants import dequantize
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

NB = harness.nb_bin()
DATA = harness.DATA
HFQ = os.path.join(DATA, "hfq")
TMP = tempfile.mkdtemp(prefix="nb_hfq_")
check = harness.Checks()


def run(*args):
    return harness.run(*args, ok=False)


NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], dtype=np.float32)


def dense_unpack(words, bits, k):
    """[rows, w] int32 -> [rows, k]: element j at bit j*bits of the little-endian word stream."""
    u = words.view(np.uint32).astype(np.uint64)
    out = np.zeros((u.shape[0], k), dtype=np.int64)
    for j in range(k):
        b = j * bits
        w, s = b // 32, b % 32
        v = u[:, w] >> np.uint64(s)
        if s + bits > 32:
            v |= u[:, w + 1] << np.uint64(32 - s)
        out[:, j] = (v & np.uint64((1 << bits) - 1)).astype(np.int64)
    return out


FP4 = np.array([0.0, 0.0052083334885537624, 0.6666666865348816, 1.0, 0.3333333432674408, 0.5, 0.1666666716337204,
                0.25, 0.0, -0.0052083334885537624, -0.6666666865348816, -1.0, -0.3333333432674408, -0.5,
                -0.1666666716337204, -0.25], dtype=np.float32)


def deq_bnb4(t, p):
    key = [k for k in (p + ".quant_state.bitsandbytes__nf4", p + ".quant_state.bitsandbytes__fp4") if k in t][0]
    st = json.loads(bytes(t[key]).decode())
    n, k = st["shape"]
    bs = st["blocksize"]
    packed = t[p].reshape(-1)
    codes = np.stack([packed >> 4, packed & 15], 1).reshape(-1)[: n * k]
    if p + ".nested_absmax" in t:
        a2 = t[p + ".nested_absmax"].astype(np.float32)
        qa = t[p + ".absmax"].astype(np.int64)
        absmax = (t[p + ".nested_quant_map"][qa] * np.repeat(a2, 256)[: qa.size]).astype(np.float32) \
            + np.float32(st["nested_offset"])
    else:
        absmax = t[p + ".absmax"]
    table = FP4 if st["quant_type"] == "fp4" else NF4
    return (table[codes].reshape(-1, bs) * absmax.reshape(-1, 1)).astype(np.float32).reshape(n, k)


def deq_bnb8(t, p):
    return (t[p + ".weight"].astype(np.float32) * t[p + ".SCB"][:, None]) * np.float32(7.874015718698502e-3)


def deq_gptq(t, p, cfg):
    bits = cfg["bits"]
    gi = t[p + ".g_idx"].astype(np.int64)
    k = gi.size
    qw = t[p + ".qweight"]
    n = qw.shape[1]
    w = dense_unpack(np.ascontiguousarray(qw.T), bits, k)  # [out, in]
    z = dense_unpack(t[p + ".qzeros"], bits, n)  # [groups, out]
    if cfg.get("checkpoint_format", "gptq") == "gptq":
        z = z + 1
    sc = t[p + ".scales"].astype(np.float32)
    return sc[gi].T * (w - z[gi].T).astype(np.float32)


def deq_awq(t, p, cfg):
    g = cfg["group_size"]
    qw, qz = t[p + ".qweight"], t[p + ".qzeros"]
    rev = [0, 4, 1, 5, 2, 6, 3, 7]  # AutoAWQ's AWQ_REVERSE_ORDER
    def unpack(x):
        u = x.view(np.uint32)
        v = np.stack([(u >> (4 * i)) & 15 for i in range(8)], -1)  # [rows, cols, 8]
        return v[:, :, rev].reshape(x.shape[0], -1).astype(np.int64)
    w, z = unpack(qw), unpack(qz)
    sc = t[p + ".scales"].astype(np.float32)
    return (np.repeat(sc, g, 0) * (w - np.repeat(z, g, 0)).astype(np.float32)).T


def deq_ct(t, p, cfg):
    n, k = t[p + ".weight_shape"]
    bits = 4
    sc = t[p + ".weight_scale"]
    sc = sc.astype(np.float32) if sc.dtype != np.uint16 else (sc.astype(np.uint32) << 16).view(np.float32)
    g = k // sc.shape[1]
    q = dense_unpack(t[p + ".weight_packed"], bits, k) - 8
    zp = np.zeros((n, sc.shape[1]), np.int64)
    if p + ".weight_zero_point" in t:
        zp = dense_unpack(np.ascontiguousarray(t[p + ".weight_zero_point"].T), bits, n).T - 8
    return (q - np.repeat(zp, g, 1)).astype(np.float32) * np.repeat(sc, g, 1)


DT = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I32": np.int32, "I64": np.int64, "I8": np.int8,
      "U8": np.uint8}


def load_st(d, dtypes=None):
    """Every tensor of DIR/model.safetensors; BF16 as its raw uint16 bits (numpy has no bf16).
    Read with the format's own rules (8-byte header length, JSON header, offsets); dtypes, if
    given, receives each tensor's dtype string."""
    import struct
    raw = open(os.path.join(d, "model.safetensors"), "rb").read()
    hl = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + hl])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + hl + a: 8 + hl + b], dtype=DT[v["dtype"]]).reshape(v["shape"])
        if dtypes is not None:
            dtypes[k] = v["dtype"]
    return out


def save_st(path, tensors, dtypes):
    """Write a safetensors file keeping the dtype strings (BF16 from raw bits)."""
    import struct
    hdr, off, blobs = {}, 0, []
    for k in sorted(tensors):
        b = np.ascontiguousarray(tensors[k]).tobytes()
        hdr[k] = {"dtype": dtypes[k], "shape": list(tensors[k].shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def reference(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    q = cfg["quantization_config"]
    t = load_st(d)
    ref = {}
    for name in t:
        if q["quant_method"] == "bitsandbytes" and (name + ".quant_state.bitsandbytes__nf4" in t or
                                                    name + ".quant_state.bitsandbytes__fp4" in t):
            ref[name] = deq_bnb4(t, name)
        elif q["quant_method"] == "bitsandbytes" and name.endswith(".SCB"):
            ref[name[:-4] + ".weight"] = deq_bnb8(t, name[:-4])
        elif q["quant_method"] == "gptq" and name.endswith(".qweight"):
            ref[name[:-8] + ".weight"] = deq_gptq(t, name[:-8], q)
        elif q["quant_method"] == "awq" and name.endswith(".qweight"):
            ref[name[:-8] + ".weight"] = deq_awq(t, name[:-8], q)
        elif q["quant_method"] == "compressed-tensors" and name.endswith(".weight_packed"):
            ref[name[:-14] + ".weight"] = deq_ct(t, name[:-14], q)
    return cfg, t, ref


GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(path):
    r = gguf.GGUFReader(path)
    out = {}
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape)]
        out[t.name] = (t.tensor_type.name, dequantize(t.data, t.tensor_type).reshape(shape)
                       if t.tensor_type not in (gguf.GGMLQuantizationType.F32,) else
                       np.array(t.data).reshape(shape))
    return out


expected = json.load(open(os.path.join(HFQ, "expected.json")))
for fx in sorted(expected):
    d = os.path.join(HFQ, fx)
    cfg, t, ref = reference(d)
    # 1. numpy oracle == the libraries' recorded values
    for name, e in expected[fx].items():
        h = hashlib.sha256(np.ascontiguousarray(ref[name], dtype=np.float32).tobytes()).hexdigest()
        check(h == e["sha256_f32"], f"{fx} {name}: numpy dequantization differs from the library record")
    # 2. nibble convert --type f32 == the oracle, exactly
    out = os.path.join(TMP, fx + ".gguf")
    p = run("convert", d, "-o", out, "--type", "f32")
    check(p.returncode == 0, f"{fx}: convert --type f32 failed: {p.stderr.strip()}")
    if p.returncode != 0:
        continue
    g = gguf_tensors(out)
    for hf, short in GGUF_NAMES.items():
        w = ref[f"model.layers.0.{hf}.weight"]
        if short == "attn_q":
            w = permute(w, cfg["num_attention_heads"])
        elif short == "attn_k":
            w = permute(w, cfg["num_key_value_heads"])
        got = g[f"blk.0.{short}.weight"][1]
        check(got.shape == w.shape and np.array_equal(got.astype(np.float32), w),
              f"{fx} blk.0.{short}.weight: not the oracle's values (max |diff| "
              f"{np.abs(got - w).max() if got.shape == w.shape else 'shape'})")
    emb = t["model.embed_tokens.weight"].astype(np.float32)
    check(np.array_equal(g["token_embd.weight"][1], emb), f"{fx}: token_embd changed")
    # 3. lossless types without --type, and a GGUF llama.cpp loads after requantization
    out2 = os.path.join(TMP, fx + "_keep.gguf")
    p = run("convert", d, "-o", out2)
    check(p.returncode == 0, f"{fx}: convert failed: {p.stderr.strip()}")
    want = expected[fx]["model.layers.0.self_attn.q_proj.weight"]["type"]
    if p.returncode == 0:
        p2 = run("inspect", out2, "--json")
        info = json.loads(p2.stdout)
        ty = {x["name"]: x["type"] for x in info["tensors"]}
        check(ty.get("blk.0.attn_q.weight") == want, f"{fx}: attn_q kept as {ty.get('blk.0.attn_q.weight')}, want {want}")
    out3 = os.path.join(TMP, fx + "_q4km.gguf")
    p = run("quantize", d, "-o", out3, "--type", "q4_k_m", "--allow-requantize")
    check(p.returncode == 0, f"{fx}: quantize q4_k_m failed: {p.stderr.strip()}")
    if p.returncode == 0:
        g3 = gguf_tensors(out3)
        for hf, short in GGUF_NAMES.items():
            ty, got = g3[f"blk.0.{short}.weight"]
            ref32 = g[f"blk.0.{short}.weight"][1]
            rel = np.sqrt(np.mean((got - ref32) ** 2) / np.mean(ref32 ** 2))
            check(ty in ("Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0") and rel < 0.2,
                  f"{fx} {short}: q4_k_m gave {ty}, relative RMS error {rel:.3f}")

# 5. a sharded checkpoint whose companions sit in another shard than the packed codes
def sharded(fixture):
    src = os.path.join(HFQ, fixture)
    d = os.path.join(TMP, "sharded_" + fixture)
    os.makedirs(d)
    shutil.copy(os.path.join(src, "config.json"), d)
    dts = {}
    t = load_st(src, dts)
    names = sorted(t)
    parts = [{k: t[k] for k in names if k.endswith((".qweight", ".weight_packed", "embed_tokens.weight"))}]
    parts.append({k: t[k] for k in names if k not in parts[0]})
    wm = {}
    for i, part in enumerate(parts):
        fn = f"model-{i + 1:05d}-of-00002.safetensors"
        save_st(os.path.join(d, fn), part, dts)
        wm.update({k: fn for k in part})
    json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(d, "model.safetensors.index.json"), "w"))
    a, b = os.path.join(TMP, "one.gguf"), os.path.join(TMP, "sharded.gguf")
    pa, pb = run("convert", src, "-o", a, "--type", "f32"), run("convert", d, "-o", b, "--type", "f32")
    check(pa.returncode == 0 and pb.returncode == 0, f"sharded {fixture}: {pa.stderr.strip()} {pb.stderr.strip()}")
    if pa.returncode == 0 and pb.returncode == 0:
        ga, gb = gguf.GGUFReader(a), gguf.GGUFReader(b)
        ta = {x.name: bytes(x.data) for x in ga.tensors}
        tb = {x.name: bytes(x.data) for x in gb.tensors}
        check(ta == tb, f"sharded {fixture}: tensors differ from the single-file checkpoint")


# 6. one type per group size (stacked MoE experts must agree): a zero point INT4 cannot
#    hold sends every weight to f32, one asymmetric weight makes them all asymmetric
def retyped(name, edit, want_type):
    src = os.path.join(HFQ, "gptq_4bit_sym_g32")
    d = os.path.join(TMP, name)
    os.makedirs(d)
    shutil.copy(os.path.join(src, "config.json"), d)
    dts = {}
    t = dict(load_st(src, dts))
    edit(t)
    save_st(os.path.join(d, "model.safetensors"), t, dts)
    cfg, _, ref = reference(d)
    out = os.path.join(TMP, name + ".gguf")
    p = run("convert", d, "-o", out)
    check(p.returncode == 0, f"{name}: {p.stderr.strip()}")
    if p.returncode != 0:
        return
    info = json.loads(run("inspect", out, "--json").stdout)
    ty = {x["name"]: x["type"] for x in info["tensors"]}
    check(all(ty[f"blk.0.{s}.weight"] == want_type for s in GGUF_NAMES.values()),
          f"{name}: types {[ty[f'blk.0.{s}.weight'] for s in GGUF_NAMES.values()]}, want all {want_type}")
    p = run("convert", d, "-o", out, "--type", "f32")
    g = gguf_tensors(out)
    for hf, short in GGUF_NAMES.items():
        w = ref[f"model.layers.0.{hf}.weight"]
        w = permute(w, cfg["num_attention_heads"]) if short == "attn_q" else \
            permute(w, cfg["num_key_value_heads"]) if short == "attn_k" else w
        check(np.array_equal(g[f"blk.0.{short}.weight"][1], w), f"{name}: {short} differs from the oracle")


def zero16(t):  # stored 15 in a v1 checkpoint: zero point 16
    z = t["model.layers.0.mlp.up_proj.qzeros"].copy()
    z[0, 0] |= 0xF
    t["model.layers.0.mlp.up_proj.qzeros"] = z


def asym_one(t):  # k_proj's zeros 5 (stored 4): no longer symmetric
    t["model.layers.0.self_attn.k_proj.qzeros"] = np.full_like(t["model.layers.0.self_attn.k_proj.qzeros"], 0x44444444)


retyped("gptq_zero16", zero16, "f32")
retyped("gptq_mixed_sym", asym_one, "int4_asym_g32")

sharded("gptq_4bit_sym_g32")
sharded("ct_w4a16_asym_g32")


# 4. bad input: exit 2, one line naming file and key, nothing written
def bad(fixture, edit, want):
    d = os.path.join(TMP, "bad_" + fixture)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    os.symlink(os.path.abspath(os.path.join(HFQ, fixture, "model.safetensors")), os.path.join(d, "model.safetensors"))
    cfg = json.load(open(os.path.join(HFQ, fixture, "config.json")))
    edit(cfg["quantization_config"])
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    out = os.path.join(TMP, "bad.gguf")
    p = run("convert", d, "-o", out)
    lines = [x for x in p.stderr.strip().splitlines() if x]
    check(p.returncode == 2, f"bad {fixture}: exit {p.returncode}, want 2 ({p.stderr.strip()})")
    check(len(lines) == 1 and all(w in lines[0] for w in want), f"bad {fixture}: message {lines} lacks {want}")
    check(not os.path.exists(out) and not any(f.startswith("bad.gguf") for f in os.listdir(TMP)),
          f"bad {fixture}: output left behind")


bad("gptq_4bit_sym_g32", lambda q: q.update(bits=6), ["config.json", "quantization_config.bits = 6"])
bad("gptq_4bit_sym_g32", lambda q: q.update(group_size=128), ["model.safetensors", "scales", "expected"])
bad("awq_gemm_g64", lambda q: q.update(version="gemv_fast"), ["config.json", "version"])
bad("bnb_nf4_dq", lambda q: q.update(quant_method="quanto"), ["config.json", "quant_method 'quanto'"])


# convert DIR --type MIX (llama.cpp #11024: GPTQ -> q4_k_m in one step) is the quantize job with
# requantization allowed: the same bytes as quantize --allow-requantize, and a one-line note saying so.
for fixture in ("gptq_4bit_sym_g32", "awq_gemm_g64"):
    x, y = os.path.join(TMP, "cv_x.gguf"), os.path.join(TMP, "cv_y.gguf")
    p = run("convert", os.path.join(HFQ, fixture), "-o", x, "--type", "q4_k_m")
    q = run("quantize", os.path.join(HFQ, fixture), "-o", y, "--type", "q4_k_m", "--allow-requantize")
    check(p.returncode == 0 and q.returncode == 0, f"convert/quantize {fixture} q4_k_m: exit {p.returncode} / "
          f"{q.returncode} ({p.stderr.strip()[-300:]} {q.stderr.strip()[-300:]})")
    check(p.returncode == 0 and q.returncode == 0 and open(x, "rb").read() == open(y, "rb").read(),
          f"convert {fixture} --type q4_k_m differs from quantize --allow-requantize")
    notes = [ln for ln in p.stderr.splitlines() if "rounded once already" in ln]
    check(len(notes) == 1, f"convert {fixture} --type q4_k_m: {len(notes)} requantize notes, want 1")
    for f in (x, y):
        if os.path.exists(f):
            os.remove(f)

shutil.rmtree(TMP, ignore_errors=True)
if check.summary():
    sys.exit(1)
print(f"ok: {check.n} checks on {len(expected)} quantized checkpoints")
