#!/usr/bin/env python3
"""nibble merge against PEFT's own merge_and_unload, recorded (no torch needed).

tests/data/peft/hf_oracle was written by `test_peft_oracle.py --record`:
a tiny transformers llama (base/), adapters PEFT created and saved (LoRA,
rsLoRA, DoRA, rank/alpha patterns, DoRA + rsLoRA on the embedding with
modules_to_save) and the tensors PEFT's merge_and_unload changed
(merged.safetensors). Each adapter merged by nibble must match them within
1e-6 relative; every other tensor stays bit-identical."""
import os
import sys
import tempfile

try:
    import numpy as np  # noqa: F401
    import gguf  # noqa: F401
    from safetensors.numpy import load_file
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peft_compare  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

NB = harness.nb_bin()
DATA = harness.DATA
D = os.path.join(DATA, "peft", "hf_oracle")
check = harness.Checks()


base_dir = os.path.join(D, "base")
base = load_file(os.path.join(base_dir, "model.safetensors"))
variants = sorted(v for v in os.listdir(D) if v != "base" and os.path.isdir(os.path.join(D, v)))
check(len(variants) >= 5, f"expected 5 recorded adapters, found {variants}")
with tempfile.TemporaryDirectory(prefix="nb_peftfx_") as tmp:
    for v in variants:
        merged = load_file(os.path.join(D, v, "merged.safetensors"))
        check(len(merged) >= 14, f"{v}: only {len(merged)} merged tensors recorded")
        worst = peft_compare.merge_and_compare(NB, base_dir, os.path.join(D, v), base, merged,
                                               os.path.join(tmp, v + ".gguf"), check, v)
        print(f"{v}: {len(merged)} merged tensors, worst relative difference {worst}")
if check.summary():
    sys.exit(1)
print(f"ok: {check.n} checks on {len(variants)} PEFT-made adapters")
