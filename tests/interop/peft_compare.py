"""Shared by test_peft_oracle.py (live PEFT) and test_peft_fixtures_interop.py
(recorded PEFT output): run `nibble merge BASE --adapter DIR -o X.gguf` and
compare every tensor with PEFT's merge_and_unload result given in Hugging
Face names. Merged tensors must agree within 1e-6 relative (max |diff| /
max |ref|) after mapping to GGUF names and llama.cpp's q/k row order;
tensors PEFT left unchanged must be bit-identical to the base."""
import json
import os
import subprocess

import numpy as np
import gguf

TOL = 1e-6
GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_gguf_name(hf, cfg):
    """HF llama tensor name -> (GGUF name, heads to permute by or None)."""
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "lm_head.weight": "output.weight",
             "model.norm.weight": "output_norm.weight"}
    if hf in fixed:
        return fixed[hf], None
    parts = hf.split(".")  # model.layers.N.<module>.weight
    layer, mod = parts[2], ".".join(parts[3:-1])
    nh = cfg["num_attention_heads"] if mod == "self_attn.q_proj" else \
        cfg["num_key_value_heads"] if mod == "self_attn.k_proj" else None
    return f"blk.{layer}.{GGUF[mod]}.weight", nh


def merge_and_compare(nb, base_dir, adir, base, merged, out, check, label):
    """base / merged: dict HF name -> float32 numpy array (merged: PEFT's tensors
    that changed; every other base tensor must come out unchanged). Returns the
    worst relative difference of the merged tensors."""
    cfg = json.load(open(os.path.join(base_dir, "config.json")))
    p = subprocess.run([nb, "merge", base_dir, "--adapter", adir, "-o", out, "--quiet"], capture_output=True,
                       text=True)
    check(p.returncode == 0, f"{label}: nibble merge failed: {p.stderr.strip()}")
    if p.returncode != 0:
        return None
    r = gguf.GGUFReader(out)
    got = {t.name: np.array(t.data).reshape([int(x) for x in reversed(t.shape)]) for t in r.tensors}
    worst = 0.0
    for hf, b in base.items():
        gname, nh = to_gguf_name(hf, cfg)
        ref = merged.get(hf, b).astype(np.float64)
        if nh:
            ref = permute(ref, nh)
        g = got.get(gname)
        check(g is not None and g.shape == ref.shape, f"{label}: {gname} missing or shaped {None if g is None else g.shape}")
        if g is None or g.shape != ref.shape:
            continue
        g = g.astype(np.float64)
        if hf in merged:
            rel = np.abs(g - ref).max() / np.abs(ref).max()
            worst = max(worst, rel)
            check(rel <= TOL, f"{label}: {gname} ({hf}) differs from PEFT's merge_and_unload by {rel:.3g} relative")
        else:
            check(np.array_equal(g, ref), f"{label}: untouched {gname} changed")
    check(len(got) == len(base), f"{label}: {len(got)} tensors written, base has {len(base)}")
    return worst
