#!/usr/bin/env python3
"""HF directories <-> GGUF, checked with the reference Python libraries.

1. A llama-like and a mixtral-like HF directory written here with PyPI
   `safetensors` (numpy) are converted by `$NB_BIN convert DIR -o out.gguf`;
   gguf-py's GGUFReader must find llama.cpp's tensor names, q/k rows permuted
   exactly as a numpy re-implementation of convert_hf_to_gguf.py's `permute`
   predicts, experts stacked as torch.stack(dim=0) would, and the metadata.
2. A gemma3-like directory: norms come out as HF + 1 (F32).
3. `nibble synth` writes the same seed as GGUF and as an HF directory; read by
   gguf-py and safetensors, the HF tensors mapped with the same numpy rules
   equal the GGUF tensors bit for bit.
Exit 77 (skip) when numpy / safetensors / gguf are not importable.
"""
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from safetensors.numpy import load_file, save_file
    from gguf import GGUFReader
except Exception as e:  # pragma: no cover - environment dependent
    print(f"SKIP: needs numpy, safetensors and gguf ({e})")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

NB = harness.nb_bin()
run = harness.run

check = harness.Checks()


def permute(w, n_head, n_head_kv):
    """llama.cpp's LlamaModel.permute, in numpy."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def gguf_tensors(path):
    rd = GGUFReader(path)
    out = {}
    for t in rd.tensors:
        out[t.name] = np.array(t.data).reshape([int(x) for x in reversed(t.shape.tolist())])
    return rd, out


def field(rd, key):
    f = rd.fields[key]
    v = f.parts[f.data[0]]
    if f.types and f.types[0].name == "STRING":
        return bytes(v).decode()
    return v.tolist()[0]


def hf_to_gguf_name(name, arch):
    """The mapping of formats/arch.h, written independently for the test."""
    if name == "model.embed_tokens.weight":
        return "token_embd.weight", None
    if name == "model.norm.weight":
        return "output_norm.weight", None
    if name == "lm_head.weight":
        return "output.weight", None
    parts = name.split(".")
    L = parts[2]
    rest = ".".join(parts[3:])
    simple = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
        "block_sparse_moe.gate.weight": "ffn_gate_inp.weight",
        "mlp.gate.weight": "ffn_gate_inp.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.q_norm.weight": "attn_q_norm.weight",
        "self_attn.k_norm.weight": "attn_k_norm.weight",
        "mlp.shared_expert.gate_proj.weight": "ffn_gate_shexp.weight",
        "mlp.shared_expert.up_proj.weight": "ffn_up_shexp.weight",
        "mlp.shared_expert.down_proj.weight": "ffn_down_shexp.weight",
        "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",
    }
    if arch == "gemma3":
        simple.update({"post_attention_layernorm.weight": "post_attention_norm.weight",
                       "pre_feedforward_layernorm.weight": "ffn_norm.weight",
                       "post_feedforward_layernorm.weight": "post_ffw_norm.weight"})
    if rest in simple:
        return f"blk.{L}.{simple[rest]}", None
    if "experts" in rest:
        e = int(parts[5])
        w = parts[6]
        kind = {"w1": "gate", "w3": "up", "w2": "down",
                "gate_proj": "gate", "up_proj": "up", "down_proj": "down"}[w]
        return f"blk.{L}.ffn_{kind}_exps.weight", e
    raise KeyError(name)


def expected_gguf(hf, cfg, arch):
    """GGUF tensors llama.cpp's converter would produce from HF tensors."""
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    out, experts = {}, {}
    for name, w in hf.items():
        g, e = hf_to_gguf_name(name, arch)
        if arch in ("llama", "mixtral"):
            if name.endswith(("q_proj.weight", "q_proj.bias")):
                w = permute(w, n_head, n_head)
            if name.endswith(("k_proj.weight", "k_proj.bias")):
                w = permute(w, n_head, n_kv)
        if arch == "gemma3" and name.endswith("norm.weight"):
            w = w.astype(np.float32) + 1
        if e is None:
            out[g] = w
        else:
            experts.setdefault(g, {})[e] = w
    for g, d in experts.items():
        out[g] = np.stack([d[i] for i in range(len(d))], axis=0)
    if "ffn_gate_inp_shexp" in "".join(out):
        for k in list(out):
            if k.endswith("ffn_gate_inp_shexp.weight"):
                out[k] = out[k].reshape(-1)
    return out


def compare(got, want, label):
    check(sorted(got) == sorted(want), f"{label}: tensor names {sorted(set(got) ^ set(want))}")
    for k in want:
        if k not in got:
            continue
        a, b = got[k], want[k]
        if a.shape != b.shape:
            check(False, f"{label}: {k} shape {a.shape} != {b.shape}")
            continue
        check(np.array_equal(a, b.astype(a.dtype)), f"{label}: {k} values differ")


def hf_dir(root, name, cfg, tensors):
    d = os.path.join(root, name)
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    return d


def main():
    rng = np.random.default_rng(1234)
    with tempfile.TemporaryDirectory() as tmp:
        # ---- 1. llama-like, GQA, f32 and f16 --------------------------------------------
        E, H, KV, F, V, L = 64, 8, 2, 96, 50, 2
        hd = E // H
        cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": E,
               "intermediate_size": F, "num_attention_heads": H, "num_key_value_heads": KV,
               "num_hidden_layers": L, "max_position_embeddings": 256, "vocab_size": V,
               "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False}
        t = {"model.embed_tokens.weight": rng.standard_normal((V, E)).astype(np.float32),
             "model.norm.weight": rng.standard_normal(E).astype(np.float32),
             "lm_head.weight": rng.standard_normal((V, E)).astype(np.float16)}
        for i in range(L):
            p = f"model.layers.{i}."
            t[p + "input_layernorm.weight"] = rng.standard_normal(E).astype(np.float32)
            t[p + "post_attention_layernorm.weight"] = rng.standard_normal(E).astype(np.float32)
            t[p + "self_attn.q_proj.weight"] = rng.standard_normal((H * hd, E)).astype(np.float32)
            t[p + "self_attn.k_proj.weight"] = rng.standard_normal((KV * hd, E)).astype(np.float16)
            t[p + "self_attn.v_proj.weight"] = rng.standard_normal((KV * hd, E)).astype(np.float32)
            t[p + "self_attn.o_proj.weight"] = rng.standard_normal((E, H * hd)).astype(np.float32)
            t[p + "mlp.gate_proj.weight"] = rng.standard_normal((F, E)).astype(np.float32)
            t[p + "mlp.up_proj.weight"] = rng.standard_normal((F, E)).astype(np.float32)
            t[p + "mlp.down_proj.weight"] = rng.standard_normal((E, F)).astype(np.float32)
        d = hf_dir(tmp, "tiny-llama", cfg, t)
        out = os.path.join(tmp, "llama.gguf")
        run("convert", d, "-o", out, "--quiet")
        rd, got = gguf_tensors(out)
        compare(got, expected_gguf(t, cfg, "llama"), "llama convert")
        check(field(rd, "general.architecture") == "llama", "llama arch")
        check(field(rd, "llama.block_count") == L, "llama.block_count")
        check(field(rd, "llama.attention.head_count_kv") == KV, "llama.attention.head_count_kv")
        check(field(rd, "llama.rope.dimension_count") == hd, "llama.rope.dimension_count")
        # the permutation really moved rows (so the test above could fail)
        q = t["model.layers.0.self_attn.q_proj.weight"]
        check(not np.array_equal(got["blk.0.attn_q.weight"], q), "q rows were permuted")

        # ---- 2. mixtral-like: experts stacked, q/k permuted --------------------------------
        NE = 3
        cfg_m = dict(cfg, architectures=["MixtralForCausalLM"], model_type="mixtral",
                     num_local_experts=NE, num_experts_per_tok=2)
        tm = {k: v for k, v in t.items() if ".mlp." not in k}
        for i in range(L):
            p = f"model.layers.{i}.block_sparse_moe."
            tm[p + "gate.weight"] = rng.standard_normal((NE, E)).astype(np.float32)
            for e in reversed(range(NE)):
                tm[p + f"experts.{e}.w1.weight"] = rng.standard_normal((F, E)).astype(np.float32)
                tm[p + f"experts.{e}.w3.weight"] = rng.standard_normal((F, E)).astype(np.float32)
                tm[p + f"experts.{e}.w2.weight"] = rng.standard_normal((E, F)).astype(np.float32)
        d = hf_dir(tmp, "tiny-mixtral", cfg_m, tm)
        out = os.path.join(tmp, "mixtral.gguf")
        run("convert", d, "-o", out, "--quiet")
        rd, got = gguf_tensors(out)
        compare(got, expected_gguf(tm, cfg_m, "mixtral"), "mixtral convert")
        check(field(rd, "llama.expert_count") == NE, "llama.expert_count")
        check(got["blk.1.ffn_down_exps.weight"].shape == (NE, E, F), "stacked expert shape")

        # ---- 3. gemma3-like: norms + 1 ------------------------------------------------------
        cfg_g = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": E,
                 "intermediate_size": F, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16,
                 "num_hidden_layers": 1, "max_position_embeddings": 256, "vocab_size": V,
                 "sliding_window": 32, "query_pre_attn_scalar": 16}
        tg = {"model.embed_tokens.weight": rng.standard_normal((V, E)).astype(np.float32),
              "model.norm.weight": rng.standard_normal(E).astype(np.float32)}
        p = "model.layers.0."
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            tg[p + n + ".weight"] = rng.standard_normal(E).astype(np.float32)
        tg[p + "self_attn.q_norm.weight"] = rng.standard_normal(16).astype(np.float32)
        tg[p + "self_attn.k_norm.weight"] = rng.standard_normal(16).astype(np.float32)
        tg[p + "self_attn.q_proj.weight"] = rng.standard_normal((64, E)).astype(np.float32)
        d = hf_dir(tmp, "tiny-gemma", cfg_g, tg)
        out = os.path.join(tmp, "gemma.gguf")
        run("convert", d, "-o", out, "--quiet")
        rd, got = gguf_tensors(out)
        want = expected_gguf(tg, cfg_g, "gemma3")
        check(np.array_equal(want["blk.0.ffn_norm.weight"], tg[p + "pre_feedforward_layernorm.weight"] + 1),
              "test's own gemma mapping")
        compare(got, want, "gemma3 convert")
        check(got["output_norm.weight"].dtype == np.float32, "gemma3 norms are f32")
        check(field(rd, "gemma3.attention.sliding_window") == 32, "gemma3 sliding window")

        # ---- 4. synth: GGUF and HF outputs of one seed agree ----------------------------------
        for arch, hfarch in (("llama", "llama"), ("mixtral", "mixtral"), ("qwen2moe", "qwen2_moe")):
            g = os.path.join(tmp, f"synth-{arch}.gguf")
            hd_ = os.path.join(tmp, f"synth-{arch}")
            common = ["synth", "--arch", arch, "--layers", "2", "--dim", "64", "--ff", "96",
                      "--heads", "4", "--kv-heads", "2", "--vocab", "300", "--dtype", "f16",
                      "--seed", "77", "--quiet"]
            run(*common, "-o", g)
            run(*common, "--shard-size", "40K", "-o", hd_)
            cfg_s = json.load(open(os.path.join(hd_, "config.json")))
            index = json.load(open(os.path.join(hd_, "model.safetensors.index.json")))
            hf = {}
            for f in sorted(set(index["weight_map"].values())):
                hf.update(load_file(os.path.join(hd_, f)))
            check(set(hf) == set(index["weight_map"]), f"{arch}: index weight_map")
            check(len(set(index["weight_map"].values())) > 1, f"{arch}: sharded")
            check(cfg_s["model_type"] == hfarch, f"{arch}: model_type")
            rd, got = gguf_tensors(g)
            compare(got, expected_gguf(hf, cfg_s, arch), f"synth {arch}")
            check(field(rd, "tokenizer.ggml.model") == "llama", f"{arch}: vocab")
    if check.summary():
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
