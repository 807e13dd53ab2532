#!/usr/bin/env python3
"""Record the bitsandbytes export fixtures (run with the oracle venv:
scripts/oracle-env; needs torch, transformers, bitsandbytes).

tiny_llama/      a seeded random LlamaForCausalLM (1 layer, hidden 64, 4 heads /
                 2 KV heads, FFN 128, vocab 128, untied lm_head) saved by
                 transformers' save_pretrained in bfloat16.
bnb_nf4_dq/      the same model loaded with BitsAndBytesConfig(load_in_4bit,
                 nf4, double quant, compute dtype bfloat16) on CPU and saved
                 with save_pretrained: the layout `nibble quantize --format
                 bnb-nf4` must reproduce (model.safetensors + config.json).
bnb_nf4/         the same without double quantization.
Versions used are written to versions.txt.
"""
import json
import os
import shutil

import bitsandbytes
import torch
import transformers
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

here = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(1234)
cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  tie_word_embeddings=False, rms_norm_eps=1e-5)
model = LlamaForCausalLM(cfg)
with torch.no_grad():  # norms away from 1 so a lost norm shows
    for n, p in model.named_parameters():
        if n.endswith("norm.weight"):
            p.copy_(1 + 0.1 * torch.randn_like(p))
model = model.to(torch.bfloat16)
src = os.path.join(here, "tiny_llama")
shutil.rmtree(src, ignore_errors=True)
model.save_pretrained(src)
for name, dq in (("bnb_nf4_dq", True), ("bnb_nf4", False)):
    q = AutoModelForCausalLM.from_pretrained(src, device_map="cpu", quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=dq,
        bnb_4bit_compute_dtype=torch.bfloat16))
    out = os.path.join(here, name)
    shutil.rmtree(out, ignore_errors=True)
    q.save_pretrained(out)
    os.remove(os.path.join(out, "generation_config.json"))
with open(os.path.join(here, "versions.txt"), "w") as f:
    f.write(f"torch {torch.__version__}\ntransformers {transformers.__version__}\n"
            f"bitsandbytes {bitsandbytes.__version__}\n")
