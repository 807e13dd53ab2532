#!/usr/bin/env python3
"""A synthetic GPTQ (4-bit, group 128, sym, v1) llama checkpoint for
bench/hf_import.sh: random codes and fp16 scales in the layout GPTQModel
writes (see tests/data/hfq for checkpoints made by the libraries).
usage: make_quantized_hf.py OUT_DIR [--layers N] [--hidden H] [--ff F] [--vocab V]"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--layers", type=int, default=8)
ap.add_argument("--hidden", type=int, default=2048)
ap.add_argument("--ff", type=int, default=5632)
ap.add_argument("--vocab", type=int, default=32000)
a = ap.parse_args()
rng = np.random.default_rng(1)
H, F, G = a.hidden, a.ff, 128
os.makedirs(a.out, exist_ok=True)
heads = H // 64
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": F,
       "num_hidden_layers": a.layers, "num_attention_heads": heads, "num_key_value_heads": heads,
       "vocab_size": a.vocab, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
       "tie_word_embeddings": False, "torch_dtype": "float16",
       "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": G, "sym": True, "desc_act": False,
                               "checkpoint_format": "gptq"}}
json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=1)
t = {"model.embed_tokens.weight": (rng.standard_normal((a.vocab, H)) * 0.02).astype(np.float16),
     "lm_head.weight": (rng.standard_normal((a.vocab, H)) * 0.02).astype(np.float16),
     "model.norm.weight": np.ones(H, np.float16)}
lin = {"self_attn.q_proj": (H, H), "self_attn.k_proj": (H, H), "self_attn.v_proj": (H, H),
       "self_attn.o_proj": (H, H), "mlp.gate_proj": (F, H), "mlp.up_proj": (F, H), "mlp.down_proj": (H, F)}
for L in range(a.layers):
    p = f"model.layers.{L}."
    t[p + "input_layernorm.weight"] = np.ones(H, np.float16)
    t[p + "post_attention_layernorm.weight"] = np.ones(H, np.float16)
    for m, (n, k) in lin.items():
        t[p + m + ".qweight"] = rng.integers(-2**31, 2**31, (k // 8, n), dtype=np.int64).astype(np.int32)
        t[p + m + ".qzeros"] = np.full((k // G, n // 8), 0x77777777, np.int32)  # v1: zero 8 - 1
        t[p + m + ".scales"] = (rng.random((k // G, n)) * 0.01 + 0.001).astype(np.float16)
        t[p + m + ".g_idx"] = (np.arange(k) // G).astype(np.int32)
save_file(t, os.path.join(a.out, "model.safetensors"))
print(a.out, sum(v.nbytes for v in t.values()), "bytes")
