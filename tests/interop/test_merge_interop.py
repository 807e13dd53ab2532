#!/usr/bin/env python3
"""nibble merge vs an independent numpy oracle of PEFT's merge formula.

The oracle below is written from PEFT's documented semantics and the merge
code paths of peft/tuners/lora (layer.py Linear.merge / get_delta_weight,
Embedding.get_delta_weight, variants.py DoraLinearVariant.merge_unsafe,
dora.py DoraLinearLayer.get_weight_norm, utils/other.py get_pattern_key),
in float64 on the float32 inputs, on Hugging Face names and layouts. The
result is then mapped to GGUF names and llama.cpp's q/k row order in numpy
and compared with what `nibble merge` wrote (read back with gguf-py or
safetensors): merged tensors agree to 1e-6 relative (max |diff| / max |ref|),
untouched tensors are byte-identical.

Every adapter is generated here with PEFT's serialisation conventions
(adapter_config.json + adapter_model.safetensors, "base_model.model." names,
the adapter name removed, DoRA magnitude without ".weight"). Variants: plain,
rsLoRA, rank/alpha patterns, DoRA, fan_in_fan_out, lora_bias, trained biases,
modules_to_save, Embedding LoRA, two adapters with weights, per-expert MoE
targets, llama.cpp GGUF LoRA, QLoRA (bitsandbytes NF4 oracle from
tests/data/nf4/nf4_oracle.py), F16 and Q8_0 bases, plus the error paths.
"""
import glob
import json
import math
import os
import re
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
    from safetensors.numpy import load_file, save_file
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

NB = harness.nb_bin()
DATA = harness.DATA
sys.path.insert(0, os.path.join(DATA, "nf4"))
import nf4_oracle  # noqa: E402

TMP = tempfile.mkdtemp(prefix="nb_merge_")
run = harness.run
check = harness.Checks()


# ---------------------------------------------------------------------------------------------
# the oracle: PEFT's merge on HF names, float64

def get_pattern_key(pattern_keys, key):
    for k in pattern_keys:
        if re.match(rf"(.*\.)?({k})$", key):
            return k
    return key


def load_adapter(d):
    cfg = json.load(open(os.path.join(d, "adapter_config.json")))
    t = {k: v.astype(np.float64) for k, v in load_file(os.path.join(d, "adapter_model.safetensors")).items()}
    return cfg, t


def oracle_merge(W, adapter_dir, weight=1.0):
    """W: dict HF param name -> float64 array (modified in place). PEFT merge_and_unload
    of one adapter whose scaling is multiplied by `weight` (PEFT's set_scale)."""
    cfg, t = load_adapter(adapter_dir)
    pre = "base_model.model."
    strip = lambda k: k[len(pre):] if k.startswith(pre) else k  # noqa: E731
    modules = {}
    for k in t:
        m = re.match(r"(.*)\.(lora_A\.weight|lora_B\.weight|lora_B\.bias|lora_magnitude_vector(?:\.weight)?|"
                     r"lora_embedding_A|lora_embedding_B)$", strip(k))
        if m:
            modules.setdefault(m.group(1), {})[m.group(2)] = t[k]
    for name, p in modules.items():
        rp, ap = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
        r = rp.get(get_pattern_key(rp.keys(), name), cfg["r"])
        alpha = ap.get(get_pattern_key(ap.keys(), name), cfg["lora_alpha"])
        scaling = (alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r) * weight
        wn = name + ".weight"
        if "lora_embedding_A" in p:  # Embedding: transpose(B @ A) * scaling
            delta = (p["lora_embedding_B"] @ p["lora_embedding_A"]).T * scaling
            mag = p.get("lora_magnitude_vector", p.get("lora_magnitude_vector.weight"))
            if mag is None:
                W[wn] = W[wn] + delta
            else:  # DoraEmbeddingVariant: norm over the [dim, vocab] view, factor.view(1, -1)
                norm = np.linalg.norm(W[wn].T + delta.T, axis=1)
                W[wn] = (mag / norm).reshape(1, -1) * (W[wn] + delta)
            continue
        A, B = p["lora_A.weight"], p["lora_B.weight"]
        assert A.shape[0] == r
        fan = bool(cfg.get("fan_in_fan_out"))
        T = (lambda x: x.T) if fan else (lambda x: x)  # noqa: E731
        delta = T(B @ A) * scaling
        mag = p.get("lora_magnitude_vector", p.get("lora_magnitude_vector.weight"))
        if mag is None:
            W[wn] = W[wn] + delta
        else:
            # get_weight_norm(orig, transpose(delta, fan), scaling=1): norm over dim 1 of the [out, in] view
            norm = np.linalg.norm(T(W[wn]) + T(delta), axis=1)
            factor = T((mag / norm).reshape(-1, 1))
            W[wn] = factor * (W[wn] + delta)
        if "lora_B.bias" in p:
            W[name + ".bias"] = W[name + ".bias"] + p["lora_B.bias"] * scaling
    for k, v in t.items():  # modules_to_save / trained biases replace the base's
        if not re.search(r"lora_", k):
            W[strip(k)] = v.copy()


# ---------------------------------------------------------------------------------------------
# HF -> GGUF names for the llama / qwen2 / mixtral test models, and llama.cpp's q/k permutation

HF2GGUF = [
    (r"model\.embed_tokens\.weight", "token_embd.weight"),
    (r"model\.norm\.weight", "output_norm.weight"),
    (r"lm_head\.weight", "output.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"blk.\1.attn_norm.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blk.\1.ffn_norm.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)", r"blk.\1.attn_q.\2"),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)", r"blk.\1.attn_k.\2"),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)", r"blk.\1.attn_v.\2"),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight", r"blk.\1.attn_output.weight"),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", r"blk.\1.ffn_gate.weight"),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", r"blk.\1.ffn_up.weight"),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", r"blk.\1.ffn_down.weight"),
    (r"model\.layers\.(\d+)\.block_sparse_moe\.gate\.weight", r"blk.\1.ffn_gate_inp.weight"),
]
EXPERT = re.compile(r"model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w1|w2|w3)\.weight")
EXPERT_GGUF = {"w1": "ffn_gate_exps", "w2": "ffn_down_exps", "w3": "ffn_up_exps"}


def permute(w, n_head):
    # llama.cpp convert_hf_to_gguf.py LlamaModel.permute, re-written in numpy
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_gguf(W, n_head=None, n_head_kv=None):
    out, experts = {}, {}
    for k, v in W.items():
        m = EXPERT.fullmatch(k)
        if m:
            experts.setdefault(f"blk.{m.group(1)}.{EXPERT_GGUF[m.group(3)]}.weight", {})[int(m.group(2))] = v
            continue
        for pat, rep in HF2GGUF:
            if re.fullmatch(pat, k):
                g = re.sub(pat, rep, k)
                if n_head and ".attn_q." in g:
                    v = permute(v, n_head)
                elif n_head and ".attn_k." in g:
                    v = permute(v, n_head_kv)
                out[g] = v
                break
        else:
            out[k] = v
    for g, e in experts.items():
        out[g] = np.stack([e[i] for i in range(len(e))])
    return out


def read_out(path):
    """name -> (numpy array in torch order, raw bytes, ggml type name)"""
    res = {}
    if path.endswith(".safetensors"):
        for k, v in load_file(path).items():
            res[k] = (v.astype(np.float64), v.tobytes(), str(v.dtype))
        return res
    r = gguf.GGUFReader(path)
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        raw = bytes(np.asarray(t.data).tobytes())
        if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            arr = np.asarray(t.data).astype(np.float64).reshape(shape)
        else:
            arr = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float64).reshape(shape)
        res[t.name] = (arr, raw, t.tensor_type.name)
    return res


def compare(label, out_path, ref, base_raw, tol=1e-6, f16_ulps=None):
    """ref: GGUF-named float64 arrays; base_raw: name -> bytes of the unmerged base."""
    got = read_out(out_path)
    check(set(got) == set(ref), f"{label}: tensor names differ: {sorted(set(got) ^ set(ref))[:6]}")
    n_merged = 0
    for name, r in ref.items():
        if name not in got:
            continue
        g, raw, _ = got[name]
        check(g.shape == r.shape, f"{label}: {name}: shape {g.shape} != {r.shape}")
        if g.shape != r.shape:
            continue
        if name in base_raw and raw == base_raw[name]:
            # untouched: must equal the base exactly (and the oracle must agree it is untouched)
            check(np.array_equal(g, r) or np.max(np.abs(g - r)) == 0,
                  f"{label}: {name}: left unchanged but the oracle changed it")
            continue
        n_merged += 1
        if f16_ulps is not None:
            rr = r.astype(np.float16).astype(np.float64)
            ulp = np.spacing(np.abs(rr).astype(np.float16)).astype(np.float64)
            bad = np.abs(g - rr) > f16_ulps * ulp
            check(not bad.any(), f"{label}: {name}: {int(bad.sum())} elements differ by more than {f16_ulps} f16 ulp")
        else:
            err = np.max(np.abs(g - r)) / max(np.max(np.abs(r)), 1e-30)
            check(err <= tol, f"{label}: {name}: relative error {err:.3e} > {tol}")
    return n_merged


# ---------------------------------------------------------------------------------------------
# adapter writers (PEFT's and llama.cpp's conventions)

RNG = np.random.default_rng(1234)


def rnd(*shape, s=0.05):
    return (RNG.standard_normal(shape) * s).astype(np.float32)


def write_peft(d, cfg, tensors):
    os.makedirs(d, exist_ok=True)
    base = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "synthetic",
            "r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
            "use_rslora": False, "use_dora": False, "lora_bias": False, "modules_to_save": None,
            "rank_pattern": {}, "alpha_pattern": {}, "target_modules": [], "init_lora_weights": True}
    base.update(cfg)
    json.dump(base, open(os.path.join(d, "adapter_config.json"), "w"), indent=2)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(d, "adapter_model.safetensors"))
    return d


def lora_pair(t, module, r, fan_in, fan_out, dora=False, bias=False, mag_suffix=""):
    p = "base_model.model." + module
    t[p + ".lora_A.weight"] = rnd(r, fan_in)
    t[p + ".lora_B.weight"] = rnd(fan_out, r)
    if dora:
        t[p + ".lora_magnitude_vector" + mag_suffix] = (1 + rnd(fan_out, s=0.1)).astype(np.float32)
    if bias:
        t[p + ".lora_B.bias"] = rnd(fan_out)


DIM, FF, NH, NKV, VOCAB, LAYERS = 64, 128, 4, 2, 64, 2
HD = DIM // NH
SHAPES = {"q_proj": (DIM, DIM), "k_proj": (DIM, NKV * HD), "v_proj": (DIM, NKV * HD), "o_proj": (DIM, DIM),
          "gate_proj": (DIM, FF), "up_proj": (DIM, FF), "down_proj": (FF, DIM)}  # (in, out)


def module_path(L, proj):
    return f"model.layers.{L}.{'self_attn' if proj.endswith(('q_proj', 'k_proj', 'v_proj', 'o_proj')) else 'mlp'}.{proj}"


def load_st(path):
    """safetensors -> float64 arrays; BF16 widened by hand (numpy has no bfloat16)."""
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    hdr = json.loads(raw[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        buf = raw[8 + n + b:8 + n + e]
        if v["dtype"] == "BF16":
            a = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(buf, {"F32": np.float32, "F16": np.float16}[v["dtype"]])
        out[k] = a.astype(np.float64).reshape(v["shape"])
    return out


def base_dicts(hf_dir):
    W = {}
    for f in sorted(os.listdir(hf_dir)):
        if f.endswith(".safetensors"):
            W.update(load_st(os.path.join(hf_dir, f)))
    return W


def raw_of(path):
    return {k: v[1] for k, v in read_out(path).items()}


def synth(arch, out, dtype="f32", extra=()):
    run("synth", "--arch", arch, "--layers", LAYERS, "--dim", DIM, "--ff", FF, "--heads", NH, "--kv-heads", NKV,
        "--vocab", VOCAB, "--dtype", dtype, "--seed", 3, *extra, "-o", out, "--quiet")
    return out


def main():
    llama_hf = synth("llama", os.path.join(TMP, "llama_hf"))
    llama_gguf = synth("llama", os.path.join(TMP, "llama.gguf"))
    base_hf = base_dicts(llama_hf)
    base_gguf_raw = raw_of(llama_gguf)

    # 1. plain LoRA on every projection of both layers
    t = {}
    for L in range(LAYERS):
        for proj, (fi, fo) in SHAPES.items():
            lora_pair(t, module_path(L, proj), 4, fi, fo)
    plain = write_peft(os.path.join(TMP, "plain"), {"r": 4, "lora_alpha": 8}, t)

    def expect(adapters, base=base_hf, n_head=NH, n_kv=NKV):
        W = {k: v.copy() for k, v in base.items()}
        for d, w in adapters:
            oracle_merge(W, d, w)
        return to_gguf(W, n_head, n_kv)

    out = os.path.join(TMP, "plain.gguf")
    rep = os.path.join(TMP, "plain.json")
    run("merge", llama_hf, "--adapter", plain, "-o", out, "--report", rep, "--quiet")
    n = compare("plain (HF dir base)", out, expect([(plain, 1)]), base_gguf_raw)
    check(n == LAYERS * 7, f"plain: {n} tensors merged, expected {LAYERS * 7}")
    check(not glob.glob(out + ".partial*"), "plain: partial left behind")
    # report figures against the oracle's norms
    R = json.load(open(rep))
    ent = {e["module"]: e for e in R["merged"]}
    cfg, at = load_adapter(plain)
    m = "model.layers.1.self_attn.k_proj"
    dW = at["base_model.model." + m + ".lora_B.weight"] @ at["base_model.model." + m + ".lora_A.weight"] * 2.0
    rel = np.linalg.norm(dW) / np.linalg.norm(base_hf[m + ".weight"])
    check(abs(ent[m]["rel_delta"] - rel) <= 1e-5 * rel, f"report rel_delta {ent[m]['rel_delta']} vs {rel}")
    check(ent[m]["rank"] == 4 and ent[m]["scaling"] == 2.0 and ent[m]["tensor"] == "blk.1.attn_k.weight",
          f"report entry {ent[m]}")

    # same adapter on the GGUF base gives the same file contents; safetensors output too
    out2 = os.path.join(TMP, "plain_from_gguf.gguf")
    run("merge", llama_gguf, "--adapter", plain, "-o", out2, "--quiet", "--threads", "3")
    compare("plain (GGUF base, 3 threads)", out2, expect([(plain, 1)]), base_gguf_raw)
    g1, g2 = read_out(out), read_out(out2)
    check(all(g1[k][1] == g2[k][1] for k in g1), "plain: HF-dir and GGUF bases give different merged bytes")
    # an HF base merged to .safetensors keeps HF names (what transformers loads); to a directory, an HF dir
    W_hf = {k: v.copy() for k, v in base_hf.items()}
    oracle_merge(W_hf, plain, 1)
    base_hf_raw = {}
    for f in sorted(glob.glob(os.path.join(llama_hf, "*.safetensors"))):
        base_hf_raw.update(raw_of(f))
    out3 = os.path.join(TMP, "plain.safetensors")
    run("merge", llama_hf, "--adapter", plain, "-o", out3, "--quiet")
    compare("plain (safetensors output, HF names)", out3, W_hf, base_hf_raw)
    out4 = os.path.join(TMP, "plain_hf_dir")
    run("merge", llama_gguf, "--adapter", plain, "-o", out4, "--quiet")
    compare("plain (HF directory output)", os.path.join(out4, "model.safetensors"), W_hf, base_hf_raw)
    check(json.load(open(os.path.join(out4, "config.json")))["architectures"] == ["LlamaForCausalLM"],
          "plain: HF directory output has no llama config.json")
    check(not glob.glob(out4 + ".*"), "plain: HF directory output left a partial, lock or stage behind")

    # 2. rsLoRA + rank/alpha patterns (regex keys, first key in file order wins)
    t = {}
    ranks = {}
    rank_pattern = {"q_proj": 2, r"layers\.1\.mlp\.down_proj": 6, r"layers\.\d\.self_attn\.(k|v)_proj": 3}
    alpha_pattern = {r"model\.layers\.0\.self_attn\.q_proj": 5, "up_proj": 1.5}
    for L in range(LAYERS):
        for proj, (fi, fo) in SHAPES.items():
            mod = module_path(L, proj)
            r = rank_pattern.get(get_pattern_key(rank_pattern.keys(), mod), 4)
            ranks[mod] = r
            lora_pair(t, mod, r, fi, fo)
    rs = write_peft(os.path.join(TMP, "rslora"), {"r": 4, "lora_alpha": 16, "use_rslora": True,
                                                  "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern}, t)
    out = os.path.join(TMP, "rslora.gguf")
    rep = os.path.join(TMP, "rslora.json")
    run("merge", llama_hf, "--adapter", rs, "-o", out, f"--report={rep}", "--quiet")
    compare("rslora + patterns", out, expect([(rs, 1)]), base_gguf_raw)
    ent = {e["module"]: e for e in json.load(open(rep))["merged"]}
    check(ent["model.layers.0.self_attn.q_proj"]["scaling"] == 5 / math.sqrt(2), "rslora: q_proj scaling")
    check(ent["model.layers.1.mlp.up_proj"]["scaling"] == 1.5 / 2.0, "rslora: up_proj scaling")
    check(ent["model.layers.1.self_attn.v_proj"]["rank"] == 3, "rslora: v_proj rank from a regex key")

    # 3. DoRA (both magnitude spellings), on permuted q/k too
    t = {}
    for L in range(LAYERS):
        for i, proj in enumerate(("q_proj", "k_proj", "v_proj", "down_proj")):
            fi, fo = SHAPES[proj]
            lora_pair(t, module_path(L, proj), 4, fi, fo, dora=True, mag_suffix=".weight" if i % 2 else "")
    dora = write_peft(os.path.join(TMP, "dora"), {"use_dora": True}, t)
    out = os.path.join(TMP, "dora.gguf")
    run("merge", llama_hf, "--adapter", dora, "-o", out, "--quiet")
    compare("DoRA", out, expect([(dora, 1)]), base_gguf_raw)

    # 4. modules_to_save (lm_head, embed_tokens) + Embedding LoRA in a second adapter + weights
    t = {"base_model.model.lm_head.weight": rnd(VOCAB, DIM),
         "base_model.model.model.norm.weight": (1 + rnd(DIM)).astype(np.float32)}
    lora_pair(t, module_path(0, "o_proj"), 4, DIM, DIM)
    mts = write_peft(os.path.join(TMP, "mts"), {"modules_to_save": ["lm_head"]}, t)
    t = {"base_model.model.model.embed_tokens.lora_embedding_A": rnd(4, VOCAB),
         "base_model.model.model.embed_tokens.lora_embedding_B": rnd(DIM, 4),
         "base_model.model.model.embed_tokens.lora_magnitude_vector": (1 + rnd(DIM, s=0.1)).astype(np.float32)}
    lora_pair(t, module_path(0, "o_proj"), 4, DIM, DIM, dora=True)
    emb = write_peft(os.path.join(TMP, "emb"), {"use_dora": True, "lora_alpha": 4}, t)
    # the second adapter's o_proj is DoRA: the order of application matters
    out = os.path.join(TMP, "two.gguf")
    run("merge", llama_hf, "--adapter", f"{mts}:0.7", "--adapter", f"{emb}:-0.3", "-o", out, "--quiet")
    compare("two adapters 0.7 / -0.3", out, expect([(mts, 0.7), (emb, -0.3)]), base_gguf_raw)
    out_r = os.path.join(TMP, "two_rev.gguf")
    run("merge", llama_hf, "--adapter", f"{emb}:-0.3", "--adapter", f"{mts}:0.7", "-o", out_r, "--quiet")
    compare("two adapters reversed", out_r, expect([(emb, -0.3), (mts, 0.7)]), base_gguf_raw)

    # 5. lora_bias and trained biases (bias="all") on qwen2, which has q/k/v biases
    qwen_hf = synth("qwen2", os.path.join(TMP, "qwen_hf"))
    qwen_gguf = os.path.join(TMP, "qwen.gguf")
    run("convert", qwen_hf, "-o", qwen_gguf, "--quiet")
    base_q = base_dicts(qwen_hf)
    t = {"base_model.model.model.layers.1.self_attn.v_proj.bias": rnd(NKV * HD)}
    for proj in ("q_proj", "k_proj"):
        fi, fo = SHAPES[proj]
        lora_pair(t, module_path(0, proj), 4, fi, fo, bias=True)
    lb = write_peft(os.path.join(TMP, "lorabias"), {"lora_bias": True, "bias": "all", "lora_alpha": 6}, t)
    out = os.path.join(TMP, "lorabias.gguf")
    run("merge", qwen_hf, "--adapter", f"{lb}:1.25", "-o", out, "--quiet")
    compare("lora_bias + trained bias (qwen2)", out, expect([(lb, 1.25)], base_q, None, None), raw_of(qwen_gguf))

    # 6. fan_in_fan_out (GPT-2 Conv1D weights stored [in, out]) on a bare safetensors base, with DoRA
    conv = {"transformer.h.0.attn.c_attn.weight": rnd(16, 48, s=0.2), "transformer.h.0.attn.c_attn.bias": rnd(48),
            "transformer.h.0.mlp.c_fc.weight": rnd(16, 32, s=0.2), "transformer.wte.weight": rnd(10, 16)}
    conv_path = os.path.join(TMP, "gpt2ish.safetensors")
    save_file(conv, conv_path)
    t = {}
    lora_pair(t, "transformer.h.0.attn.c_attn", 3, 16, 48, dora=True)
    lora_pair(t, "transformer.h.0.mlp.c_fc", 3, 16, 32, dora=True)
    fan = write_peft(os.path.join(TMP, "fan"), {"r": 3, "lora_alpha": 5, "fan_in_fan_out": True, "use_dora": True}, t)
    out = os.path.join(TMP, "fan.safetensors")
    run("merge", conv_path, "--adapter", fan, "-o", out, "--quiet")
    W = {k: v.astype(np.float64) for k, v in conv.items()}
    oracle_merge(W, fan)
    compare("fan_in_fan_out + DoRA (bare safetensors)", out, W, {k: v.tobytes() for k, v in conv.items()})

    # 7. per-expert targets on a Mixtral-style model (stacked ffn_*_exps slices)
    mix_hf = synth("mixtral", os.path.join(TMP, "mix_hf"), extra=("--experts", 4, "--experts-used", 2))
    mix_gguf = os.path.join(TMP, "mix.gguf")
    run("convert", mix_hf, "-o", mix_gguf, "--quiet")
    t = {}
    lora_pair(t, "model.layers.0.block_sparse_moe.experts.1.w1", 4, DIM, FF)
    lora_pair(t, "model.layers.1.block_sparse_moe.experts.3.w2", 4, FF, DIM)
    lora_pair(t, "model.layers.1.self_attn.q_proj", 4, DIM, DIM)
    ex = write_peft(os.path.join(TMP, "experts"), {}, t)
    out = os.path.join(TMP, "experts.gguf")
    run("merge", mix_hf, "--adapter", ex, "-o", out, "--quiet")
    n = compare("per-expert targets (mixtral)", out, expect([(ex, 1)], base_dicts(mix_hf)), raw_of(mix_gguf))
    check(n == 3, f"experts: {n} tensors merged, expected 3")

    # 8. llama.cpp GGUF LoRA (names and row order already GGUF's; token_embd lora_a transposed)
    gl = os.path.join(TMP, "lora.gguf")
    w = gguf.GGUFWriter(gl, "llama")
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 12.0)
    gt = {"blk.0.attn_q.weight.lora_a": rnd(6, DIM), "blk.0.attn_q.weight.lora_b": rnd(DIM, 6),
          "blk.1.ffn_down.weight.lora_a": rnd(6, FF), "blk.1.ffn_down.weight.lora_b": rnd(DIM, 6),
          "token_embd.weight.lora_a": rnd(VOCAB, 6), "token_embd.weight.lora_b": rnd(DIM, 6),
          "blk.0.attn_norm.weight": rnd(DIM)}
    for k, v in gt.items():
        w.add_tensor(k, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = os.path.join(TMP, "gl.gguf")
    run("merge", llama_gguf, "--adapter", gl + ":0.5", "-o", out, "--quiet")
    ref = {k: v[0].copy() for k, v in read_out(llama_gguf).items()}
    s = 12.0 / 6 * 0.5
    a64 = {k: v.astype(np.float64) for k, v in gt.items()}
    ref["blk.0.attn_q.weight"] += a64["blk.0.attn_q.weight.lora_b"] @ a64["blk.0.attn_q.weight.lora_a"] * s
    ref["blk.1.ffn_down.weight"] += a64["blk.1.ffn_down.weight.lora_b"] @ a64["blk.1.ffn_down.weight.lora_a"] * s
    ref["token_embd.weight"] += a64["token_embd.weight.lora_a"] @ a64["token_embd.weight.lora_b"].T * s
    n = compare("GGUF LoRA", out, ref, base_gguf_raw)
    check(n == 3, f"GGUF LoRA: {n} tensors merged, expected 3")

    # 9. QLoRA: merge into the bitsandbytes NF4 round trip of every linear weight (bf16 base)
    llama_bf = synth("llama", os.path.join(TMP, "llama_bf16"), dtype="bf16")
    base_bf = base_dicts(llama_bf)
    for bs, dq in ((64, True), (128, False)):
        Wq = {}
        for k, v in base_bf.items():
            if v.ndim == 2 and k.startswith("model.layers."):
                st = nf4_oracle.quantize_4bit(v.astype(np.float32), blocksize=bs, compress_statistics=dq)
                d = nf4_oracle.dequantize_4bit(st).reshape(v.shape)
                # bitsandbytes returns the weight's own dtype (bf16): round to nearest even
                u = d.astype(np.float32).view(np.uint32)
                u = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
                Wq[k] = u.view(np.float32).astype(np.float64)
            else:
                Wq[k] = v.copy()
        oracle_merge(Wq, plain)
        ref = to_gguf(Wq, NH, NKV)
        out = os.path.join(TMP, f"qlora{bs}.gguf")
        args = ["merge", llama_bf, "--adapter", plain, "--qlora", "--qlora-blocksize", bs, "-o", out, "--quiet",
                "--type", "f32"]
        run(*(args + (["--qlora-double-quant"] if dq else [])))
        compare(f"QLoRA bs={bs} dq={dq}", out, ref, {})

    # 10. F16 base, default type: merged tensors stay F16 (oracle rounded to f16, <= 1 ulp)
    llama_f16 = synth("llama", os.path.join(TMP, "llama_f16.gguf"), dtype="f16")
    out = os.path.join(TMP, "f16.gguf")
    run("merge", llama_f16, "--adapter", plain, "-o", out, "--quiet")
    hf16 = synth("llama", os.path.join(TMP, "llama_f16_hf"), dtype="f16")
    n = compare("F16 base", out, expect([(plain, 1)], base_dicts(hf16)), raw_of(llama_f16), f16_ulps=1)
    check(n == LAYERS * 7, f"F16: {n} merged")
    types = {k: v[2] for k, v in read_out(out).items()}
    check(types["blk.0.attn_q.weight"] == "F16", f"F16 base: merged type {types['blk.0.attn_q.weight']}")

    # 11. Q8_0 base: dequantized, merged, written F16; untouched tensors stay Q8_0 byte for byte
    q8 = os.path.join(TMP, "llama_q8.gguf")
    run("quantize", llama_gguf, "-o", q8, "--type", "q8_0", "--pure", "--quiet")
    out = os.path.join(TMP, "q8m.gguf")
    p = run("merge", q8, "--adapter", plain, "-o", out)
    check("written as f16" in p.stderr, "Q8_0 base: no warning about the output type")
    dq = read_out(q8)
    # oracle on the dequantized base: back to HF names and row order, merge, forward again
    W = {}
    for L in range(LAYERS):
        for proj in SHAPES:
            k = module_path(L, proj) + ".weight"
            g = dq[to_gguf_name(k)][0]
            nh = NH if proj == "q_proj" else NKV if proj == "k_proj" else None
            if nh:
                idx = permute(np.arange(g.shape[0]).reshape(-1, 1), nh).reshape(-1)  # GGUF row j <- HF row idx[j]
                hf = np.empty_like(g)
                hf[idx] = g
                g = hf
            W[k] = g
    oracle_merge(W, plain)
    ref = {k: v[0] for k, v in dq.items()}
    ref.update(to_gguf(W, NH, NKV))
    compare("Q8_0 base -> F16", out, ref, {k: v[1] for k, v in dq.items()}, f16_ulps=1)
    types = {k: v[2] for k, v in read_out(out).items()}
    check(types["blk.0.attn_q.weight"] == "F16" and types["token_embd.weight"] == "Q8_0",
          f"Q8_0 base: types {types['blk.0.attn_q.weight']}, {types['token_embd.weight']}")

    fixtures()
    errors(llama_hf, llama_gguf, q8, plain)


def fixtures():
    """The committed fixtures (tests/data/peft, see its README) on the base they were made for."""
    fx = os.path.join(DATA, "peft")
    tiny = ["--layers", 1, "--dim", 16, "--ff", 32, "--heads", 4, "--kv-heads", 2, "--vocab", 32, "--dtype", "f32",
            "--seed", 1, "--quiet"]
    hf = os.path.join(TMP, "tiny_hf")
    gg = os.path.join(TMP, "tiny.gguf")
    run("synth", "--arch", "llama", *tiny, "-o", hf)
    run("synth", "--arch", "llama", *tiny, "-o", gg)
    W = base_dicts(hf)
    oracle_merge(W, os.path.join(fx, "peft_dora_rs"))
    out = os.path.join(TMP, "fx_peft.gguf")
    run("merge", hf, "--adapter", os.path.join(fx, "peft_dora_rs"), "-o", out, "--quiet")
    n = compare("fixture peft_dora_rs", out, to_gguf(W, 4, 2), raw_of(gg))
    check(n == 8, f"fixture peft_dora_rs: {n} tensors merged, expected 8 (7 DoRA + lm_head)")
    ref = {k: v[0].copy() for k, v in read_out(gg).items()}
    r = gguf.GGUFReader(os.path.join(fx, "llama_lora.gguf"))
    lt = {t.name: np.asarray(t.data).astype(np.float64) for t in r.tensors}
    s = 16.0 / 8 * 2.0
    for name in ("blk.0.attn_q.weight", "blk.0.ffn_up.weight"):
        ref[name] += lt[name + ".lora_b"] @ lt[name + ".lora_a"] * s
    ref["token_embd.weight"] += lt["token_embd.weight.lora_a"] @ lt["token_embd.weight.lora_b"].T * s
    out = os.path.join(TMP, "fx_gguf.gguf")
    run("merge", gg, "--adapter", os.path.join(fx, "llama_lora.gguf") + ":2", "-o", out, "--quiet")
    n = compare("fixture llama_lora.gguf", out, ref, raw_of(gg))
    check(n == 3, f"fixture llama_lora.gguf: {n} tensors merged, expected 3")


def to_gguf_name(hf):
    (g,) = to_gguf({hf: np.zeros((2, 2))}, None, None).keys()
    return g


def errors(llama_hf, llama_gguf, q8, plain):
    def bad(label, adapters, want_rc, want_msg, base=llama_hf, extra=()):
        out = os.path.join(TMP, "bad_" + re.sub(r"\W", "_", label) + ".gguf")
        args = ["merge", base]
        for a in adapters:
            args += ["--adapter", a]
        p = run(*args, "-o", out, *extra, ok=False)
        msg = p.stderr.strip()
        check(p.returncode == want_rc, f"{label}: rc {p.returncode}, expected {want_rc} ({msg})")
        check(want_msg in msg, f"{label}: message {msg!r} lacks {want_msg!r}")
        check(len(msg.splitlines()) == 1, f"{label}: message is not one line: {msg!r}")
        check(not os.path.exists(out) and not glob.glob(out + ".partial*"), f"{label}: output left behind")

    t = {}
    lora_pair(t, module_path(0, "q_proj"), 4, 128, 128)
    bad("shape mismatch", [write_peft(os.path.join(TMP, "e_shape"), {}, t)], 2,
        "adapter delta is [128, 128] but the base tensor is [64, 64]")
    t = {}
    lora_pair(t, module_path(7, "q_proj"), 4, DIM, DIM)
    bad("missing target", [write_peft(os.path.join(TMP, "e_missing"), {}, t)], 2,
        "the base has no tensor 'model.layers.7.self_attn.q_proj.weight' (blk.7.attn_q.weight)")
    bad("r = 0 in config", [write_peft(os.path.join(TMP, "e_r0"), {"r": 0}, {})], 2, "the LoRA rank must be > 0")
    t = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((0, DIM), np.float32),
         "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": np.zeros((DIM, 0), np.float32)}
    bad("rank-0 tensors", [write_peft(os.path.join(TMP, "e_r0t"), {}, t)], 2, "rank 0")
    t = {}
    lora_pair(t, module_path(0, "q_proj"), 4, DIM, DIM)
    del t["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    bad("lora_A without lora_B", [write_peft(os.path.join(TMP, "e_nob"), {}, t)], 2,
        "lora_A.weight has no matching lora_B.weight")
    t = {}
    lora_pair(t, module_path(0, "q_proj"), 4, DIM, DIM)
    t["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"][3, 1] = np.nan
    bad("NaN in adapter", [write_peft(os.path.join(TMP, "e_nan"), {}, t)], 2, "element 13 is NaN")
    t = {}
    lora_pair(t, module_path(0, "q_proj"), 2, DIM, DIM)
    bad("rank differs from config", [write_peft(os.path.join(TMP, "e_rank"), {"r": 4}, t)], 2,
        "has rank 2 but adapter_config.json gives r = 4")
    d = os.path.join(TMP, "e_bin")
    os.makedirs(d, exist_ok=True)
    json.dump({"peft_type": "LORA", "r": 4, "lora_alpha": 8}, open(os.path.join(d, "adapter_config.json"), "w"))
    open(os.path.join(d, "adapter_model.bin"), "wb").write(b"\x80\x02}q\x00.")
    bad("pickle only", [d], 2, "nibble reads safetensors only")
    bad("LoHa", [write_peft(os.path.join(TMP, "e_loha"), {"peft_type": "LOHA"}, {})], 2, "only LORA adapters")
    gl = os.path.join(TMP, "e_arch.gguf")
    w = gguf.GGUFWriter(gl, "qwen2")
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 8.0)
    w.add_tensor("blk.0.attn_q.weight.lora_a", rnd(4, DIM))
    w.add_tensor("blk.0.attn_q.weight.lora_b", rnd(DIM, 4))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    bad("GGUF adapter for another architecture", [gl], 2, "the adapter is for architecture 'qwen2'", base=llama_gguf)
    bad("--qlora on a quantized base", [plain], 1, "--qlora needs a full-precision base", base=q8, extra=("--qlora",))
    p = run("merge", llama_gguf, "--adapter", plain, "-o", llama_gguf, ok=False)
    check(p.returncode == 1 and "same file" in p.stderr, f"output == base: rc {p.returncode} {p.stderr.strip()}")


if __name__ == "__main__":
    main()
    print(f"{check.n} checks, {len(check.failures)} failed")
    sys.exit(check.summary())
