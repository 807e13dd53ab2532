#!/usr/bin/env python3
"""PEFT itself as the merge oracle (opt-in: needs torch, transformers, peft).

A tiny transformers LlamaForCausalLM (seeded) is saved as an HF directory;
PEFT creates adapters on it (LoRA, rsLoRA, DoRA, rank_pattern/alpha_pattern,
DoRA + rsLoRA on the embedding with modules_to_save), perturbs every adapter
parameter so nothing is at its initial value, saves them with
save_pretrained, and merges with merge_and_unload. `nibble merge BASE
--adapter DIR -o out.gguf` must give the same weights: merged tensors within
1e-6 relative (max |diff| / max |ref|, q/k rows in llama.cpp's order),
untouched tensors bit-identical.

Interpreter: the one running this script if it has torch/transformers/peft;
else $NB_ORACLE_PYTHON (a venv with them, e.g. the one `scripts/test
--oracles` sets up) is used to re-run it; else SKIP (exit 77).

`--record DIR` writes what it generated (base, adapters, PEFT's merged
tensors) as the CI fixtures tests/data/peft/hf_oracle (checked without torch
by tests/interop/test_peft_fixtures_interop.py).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib

try:
    import torch
    import transformers
    import peft
except ImportError as e:
    alt = os.environ.get("NB_ORACLE_PYTHON")
    if alt and os.path.exists(alt) and not os.environ.get("NB_PEFT_ORACLE_REEXEC"):
        env = dict(os.environ, NB_PEFT_ORACLE_REEXEC="1")
        sys.exit(subprocess.run([alt, os.path.abspath(__file__), *sys.argv[1:]], env=env).returncode)
    print(f"SKIP: the PEFT oracle needs torch, transformers and peft ({e}); "
          "set NB_ORACLE_PYTHON to a python that has them (scripts/test --oracles)")
    sys.exit(77)

import numpy as np  # noqa: E402

try:
    import gguf  # noqa: E402,F401
except ImportError:
    print("SKIP: gguf (PyPI) is not installed in this interpreter")
    sys.exit(77)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peft_compare  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

NB = os.environ.get("NB_BIN")
if not NB or not os.path.exists(NB):
    print("SKIP: NB_BIN not set")
    sys.exit(77)
RECORD = sys.argv[sys.argv.index("--record") + 1] if "--record" in sys.argv else None
TMP = tempfile.mkdtemp(prefix="nb_peft_")
torch.set_num_threads(1)
FAILS = []
N_CHECKS = 0
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def check(cond, msg):
    global N_CHECKS
    N_CHECKS += 1
    if not cond:
        FAILS.append(msg)
        print("FAIL:", msg)


def variants():
    common = dict(target_modules=TARGETS, init_lora_weights=False, lora_dropout=0.0)
    return {
        "lora": LoraConfig(r=4, lora_alpha=8, **common),
        "rslora": LoraConfig(r=8, lora_alpha=4, use_rslora=True, **common),
        "dora": LoraConfig(r=4, lora_alpha=6, use_dora=True, **common),
        "patterns": LoraConfig(r=4, lora_alpha=8, rank_pattern={"q_proj": 2, "model.layers.1.mlp.down_proj": 6},
                               alpha_pattern={"v_proj": 3, r"layers\.0\.mlp\.up_proj": 12}, **common),
        "dora_rs_embed": LoraConfig(r=4, lora_alpha=5, use_dora=True, use_rslora=True,
                                    target_modules=TARGETS + ["embed_tokens"], modules_to_save=["lm_head"],
                                    init_lora_weights=False, lora_dropout=0.0),
    }


def make_base(d):
    torch.manual_seed(20261206)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=16, max_position_embeddings=64, tie_word_embeddings=False,
                      rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
    m = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.copy_(torch.randn_like(p) * (0.1 if p.dim() > 1 else 0.05) + (1.0 if p.dim() == 1 else 0.0))
    m.save_pretrained(d, safe_serialization=True)
    gc = os.path.join(d, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)
    return m


def make_adapter(base_dir, name, lcfg, adir):
    """PEFT creates and saves the adapter; returns PEFT's merged state dict (HF names)."""
    base = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    pm = get_peft_model(base, lcfg)
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:  # move every adapter parameter off its initial value
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
            elif "modules_to_save" in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    pm.save_pretrained(adir)
    # merge what was saved (reload it: the file, not the live object, is the contract)
    base2 = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base2, adir).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def compare(base_dir, adir, merged, label):
    from safetensors.torch import load_file
    base = load_file(os.path.join(base_dir, "model.safetensors"))
    changed = {k: v.numpy() for k, v in merged.items() if not torch.equal(v, base[k])}
    check(len(changed) >= 14, f"{label}: PEFT changed only {len(changed)} tensors")
    worst = peft_compare.merge_and_compare(NB, base_dir, adir, {k: v.numpy() for k, v in base.items()}, changed,
                                           os.path.join(TMP, label + ".gguf"), check, label)
    print(f"{label}: {len(changed)} merged tensors, worst relative difference {worst}")


base_dir = os.path.join(TMP, "base")
make_base(base_dir)
recorded = {}
for name, lcfg in variants().items():
    adir = os.path.join(TMP, name)
    merged = make_adapter(base_dir, name, lcfg, adir)
    compare(base_dir, adir, merged, name)
    recorded[name] = (adir, merged)

if RECORD:
    shutil.rmtree(RECORD, ignore_errors=True)
    os.makedirs(RECORD)
    shutil.copytree(base_dir, os.path.join(RECORD, "base"))
    from safetensors.torch import load_file
    base = load_file(os.path.join(base_dir, "model.safetensors"))
    for name, (adir, merged) in recorded.items():
        d = os.path.join(RECORD, name)
        shutil.copytree(adir, d)
        for f in os.listdir(d):
            if f not in ("adapter_config.json", "adapter_model.safetensors"):
                os.remove(os.path.join(d, f))
        # reproducible text: no temporary path, target_modules (a set in PEFT) sorted
        ac = json.load(open(os.path.join(d, "adapter_config.json")))
        ac["base_model_name_or_path"] = "base"
        if isinstance(ac.get("target_modules"), list):
            ac["target_modules"] = sorted(ac["target_modules"])
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            json.dump(ac, f, indent=2, sort_keys=True)
            f.write("\n")
        changed = {k: v.contiguous() for k, v in merged.items() if not torch.equal(v, base[k])}
        save_file(changed, os.path.join(d, "merged.safetensors"),
                  metadata={"producer": f"peft {peft.__version__} merge_and_unload, torch {torch.__version__}, "
                                        f"transformers {transformers.__version__}"})
    print("recorded", RECORD)

shutil.rmtree(TMP, ignore_errors=True)
if FAILS:
    print(f"{len(FAILS)} of {N_CHECKS} checks failed")
    sys.exit(1)
print(f"ok: {N_CHECKS} checks, {len(recorded)} PEFT adapters (peft {peft.__version__})")
