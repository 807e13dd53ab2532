#!/usr/bin/env python3
"""Write the tiny adapter fixtures in this directory (deterministic; needs
numpy, safetensors, gguf). They target the model

    nibble synth --arch llama --layers 1 --dim 16 --ff 32 --heads 4 --kv-heads 2 --vocab 32 --dtype f32

and follow the serialisation of PyPI `peft` (PeftModel.save_pretrained) and of
llama.cpp's convert_lora_to_gguf.py, re-stated here from their documentation
and source (not produced by those tools: torch could not be installed where
these were made):

  peft_dora_rs/   adapter_config.json with the keys PEFT writes (peft_type, r,
                  lora_alpha, use_rslora, use_dora, rank_pattern, alpha_pattern,
                  modules_to_save, fan_in_fan_out, lora_bias, bias, target_modules ...);
                  adapter_model.safetensors with "base_model.model.<module>.lora_A.weight"
                  [r, in], ".lora_B.weight" [out, r], ".lora_magnitude_vector" [out]
                  (PEFT strips the ".weight" of the DoRA module), and the
                  modules_to_save tensor "base_model.model.lm_head.weight" with
                  the adapter name removed, as get_peft_model_state_dict does.
  llama_lora.gguf general.type=adapter, adapter.type=lora, adapter.lora.alpha,
                  general.architecture=llama, "<gguf name>.lora_a" ne {in, r},
                  ".lora_b" ne {r, out}, token_embd's lora_a transposed.
"""
import json
import os

import numpy as np
import gguf
from safetensors.numpy import save_file

here = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(20240601)
DIM, FF, KV, VOCAB = 16, 32, 8, 32


def r(*s, scale=0.1):
    return (rng.standard_normal(s) * scale).astype(np.float32)


shapes = {"self_attn.q_proj": (DIM, DIM), "self_attn.k_proj": (DIM, KV), "self_attn.v_proj": (DIM, KV),
          "self_attn.o_proj": (DIM, DIM), "mlp.gate_proj": (DIM, FF), "mlp.up_proj": (DIM, FF),
          "mlp.down_proj": (FF, DIM)}
rank_pattern = {"q_proj": 2, r"layers\.0\.mlp\.down_proj": 3}
cfg = {
    "alpha_pattern": {"v_proj": 3}, "auto_mapping": None, "base_model_name_or_path": "nibble-synth-llama-16",
    "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
    "layer_replication": None, "layers_pattern": None, "layers_to_transform": None, "loftq_config": {},
    "lora_alpha": 6, "lora_bias": False, "lora_dropout": 0.0, "megatron_config": None, "megatron_core": "megatron.core",
    "modules_to_save": ["lm_head"], "peft_type": "LORA", "r": 4, "rank_pattern": rank_pattern, "revision": None,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "task_type": "CAUSAL_LM", "use_dora": True, "use_rslora": True}
t = {}
for mod, (fi, fo) in shapes.items():
    name = f"model.layers.0.{mod}"
    rk = 2 if mod.endswith("q_proj") else 3 if mod == "mlp.down_proj" else 4
    t[f"base_model.model.{name}.lora_A.weight"] = r(rk, fi)
    t[f"base_model.model.{name}.lora_B.weight"] = r(fo, rk)
    t[f"base_model.model.{name}.lora_magnitude_vector"] = (0.3 + np.abs(r(fo, scale=0.05))).astype(np.float32)
t["base_model.model.lm_head.weight"] = r(VOCAB, DIM, scale=0.02)
d = os.path.join(here, "peft_dora_rs")
os.makedirs(d, exist_ok=True)
json.dump(cfg, open(os.path.join(d, "adapter_config.json"), "w"), indent=2, sort_keys=True)
save_file(t, os.path.join(d, "adapter_model.safetensors"))

w = gguf.GGUFWriter(os.path.join(here, "llama_lora.gguf"), "llama")
w.add_type(gguf.GGUFType.ADAPTER)
w.add_string(gguf.Keys.Adapter.TYPE, "lora")
w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 16.0)
for name, (fi, fo) in (("blk.0.attn_q.weight", (DIM, DIM)), ("blk.0.ffn_up.weight", (DIM, FF))):
    w.add_tensor(name + ".lora_a", r(8, fi))
    w.add_tensor(name + ".lora_b", r(fo, 8))
w.add_tensor("token_embd.weight.lora_a", r(VOCAB, 8))
w.add_tensor("token_embd.weight.lora_b", r(DIM, 8))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
