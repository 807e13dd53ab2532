#!/usr/bin/env python3
"""Oracle: transformers (+ bitsandbytes, CPU) loads nibble's Hugging Face
exports, and its logits agree with nibble's engine on the same weights.

Run by `scripts/test --oracles` with the venv of scripts/oracle-env (torch,
transformers, bitsandbytes); needs NB_BIN. Tolerances (max |difference| over
the largest |logit| of the sequence, float32 everywhere):
  hf dir (f32)        1e-4  stories260K (real, trained; skipped when absent),
                            synthetic gemma3 (norm shift, tied embeddings, sliding
                            window) and llama (q/k permutation) from GGUF
  merge -> hf dir     1e-4  a PEFT LoRA merged into an HF base, output dir loaded
  bnb-nf4 (fp32 absmax) 1e-4 vs nibble's engine on the NF4 GGUF (the same
                            dequantized weights: bnb's flat blocks = nibble's rows)
  bnb-nf4 (double quant) exact: identical logits to the model bitsandbytes
                            quantizes itself from the same weights (identical bytes)
                            and bnb's dequantize_4bit of our tensors equals its own
  bnb-nf4 MoE         bitsandbytes' CPU dequantize_4bit of every expert Linear: equal to
                            nibble's NF4 after --method gptq (rounded to the state's dtype);
                            nf4-dq RTN: the packed codes equal bnb's own quantization of each
                            expert, the 8-bit absmax codes on >= 98%, the offsets within an ulp
  gptq / awq          not run: no CPU loader here (transformers needs gptqmodel /
                            autoawq, not installed); tests/interop/test_hf_export_interop.py
                            checks the packing against those libraries' unpacking in numpy.
Exit 77 when torch / transformers / bitsandbytes cannot be imported.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import bitsandbytes.functional as bnbf
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
except Exception as e:  # pragma: no cover
    print(f"SKIP: needs torch, transformers, bitsandbytes ({e})")
    sys.exit(77)

NB = os.environ.get("NB_BIN")
if not NB or not os.path.exists(NB):
    print("SKIP: NB_BIN not set")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
STORIES = os.path.join(HERE, "..", "data", "models", "stories260K.gguf")
TMP = tempfile.mkdtemp(prefix="nb_oracle_hf_")
TOL = 1e-4
failures = 0
torch.manual_seed(0)


def check(cond, what):
    global failures
    print(("ok:   " if cond else "FAIL: ") + what)
    if not cond:
        failures += 1


def run(*args):
    r = subprocess.run([NB, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        print("command failed:", args, r.stdout, r.stderr)
        sys.exit(1)
    return r


def nb_logits(model, ids):
    out = os.path.join(TMP, "logits.f32")
    run("logits", model, "--tokens", ",".join(map(str, ids)), "--precise", "-o", out, "--quiet")
    return np.fromfile(out, np.float32).reshape(len(ids), -1)


def hf_logits(d, **kw):
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, device_map="cpu", **kw)
    m.eval()
    return m


def logits_of(m, ids):
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].float().numpy()


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def synth(arch, out, dtype="f32", extra=()):
    run("synth", "--arch", arch, "--layers", 2, "--dim", 64, "--ff", 128, "--heads", 4, "--kv-heads", 2,
        "--vocab", 512, "--dtype", dtype, "--seed", 11, *extra, "-o", out, "--quiet")
    return out


IDS = [1, 17, 300, 42, 99, 256, 7, 480, 33, 5, 128, 64]


def test_hf_dirs():
    cases = []
    if os.path.exists(STORIES):
        cases.append(("stories260K", STORIES))
    else:
        print(f"skip: {STORIES} absent")
    cases.append(("gemma3", synth("gemma3", os.path.join(TMP, "g3.gguf"))))
    cases.append(("llama", synth("llama", os.path.join(TMP, "ll.gguf"))))
    for name, g in cases:
        d = os.path.join(TMP, name + "_hf")
        run("convert", g, "-o", d, "--format", "hf", "--type", "f32", "--quiet")
        e = rel(logits_of(hf_logits(d), IDS), nb_logits(g, IDS))
        check(e <= TOL, f"hf dir {name}: transformers vs nibble logits, rel {e:.2e} <= {TOL}")


def test_merge_dir():
    base = synth("llama", os.path.join(TMP, "base_hf"))  # an HF directory
    from peft import LoraConfig, get_peft_model
    m = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    pm = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "down_proj"],
                                      init_lora_weights=False))
    ad = os.path.join(TMP, "adapter")
    pm.save_pretrained(ad)
    ref = logits_of(pm.merge_and_unload(), IDS)
    out = os.path.join(TMP, "merged_hf")
    run("merge", base, "--adapter", ad, "-o", out, "--quiet")
    e = rel(logits_of(hf_logits(out), IDS), ref)
    check(e <= TOL, f"merge -> hf dir: transformers on nibble's merge vs PEFT merge_and_unload, rel {e:.2e}")


def dequantized(m):
    """{linear weight name: bitsandbytes' dequantize_4bit of it, float32}"""
    out = {}
    for name, mod in m.named_modules():
        w = getattr(mod, "weight", None)
        if w is not None and getattr(w, "quant_state", None) is not None:
            out[name + ".weight"] = bnbf.dequantize_4bit(w.data, w.quant_state).float()
    return out


def test_bnb():
    g = synth("llama", os.path.join(TMP, "bnb_src.gguf"))  # f32: the export's compute dtype is float32 too
    plain = os.path.join(TMP, "bnb_src_hf")
    run("convert", g, "-o", plain, "--format", "hf", "--quiet")
    # fp32 absmax: the NF4 GGUF holds the same dequantized weights -> nibble's engine
    d = os.path.join(TMP, "bnb_nf4")
    run("quantize", g, "--type", "nf4", "--format", "bnb-nf4", "-o", d, "--quiet")
    q = os.path.join(TMP, "nf4.gguf")
    run("quantize", g, "--type", "nf4", "--rule", "token_embd.weight=f32", "--rule", "output.weight=f32", "-o", q,
        "--quiet")
    m = hf_logits(d)
    W = dequantized(m)
    check(len(W) == 14, f"bnb-nf4: {len(W)} of 14 Linear weights loaded as bitsandbytes 4-bit")
    ref = hf_logits(plain)
    sd = ref.state_dict()
    sd.update(W)
    ref.load_state_dict(sd)
    nb = nb_logits(q, IDS)
    e = rel(logits_of(ref, IDS), nb)
    check(e <= TOL, f"bnb-nf4 (fp32 absmax): weights as bitsandbytes dequantizes them vs nibble on the NF4 GGUF, "
                    f"rel {e:.2e} <= {TOL}")
    e = rel(logits_of(m, IDS), nb)
    check(e <= 2e-2, f"bnb-nf4 (fp32 absmax): bitsandbytes' own CPU forward vs nibble, rel {e:.2e} <= 2e-2 "
                     f"(its CPU 4-bit matmul is not float32-exact)")
    # double quant: bitsandbytes quantizing the same weights itself gives the same model
    dq = os.path.join(TMP, "bnb_nf4_dq")
    run("quantize", g, "--type", "nf4-dq", "--format", "bnb-nf4", "-o", dq, "--quiet")
    own = AutoModelForCausalLM.from_pretrained(plain, device_map="cpu", dtype=torch.float32,
                                               quantization_config=BitsAndBytesConfig(
                                                   load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                   bnb_4bit_use_double_quant=True,
                                                   bnb_4bit_compute_dtype=torch.float32))
    ours = hf_logits(dq)
    la, lb = logits_of(ours, IDS), logits_of(own, IDS)
    check(np.array_equal(la, lb), f"bnb-nf4 (double quant): logits equal bitsandbytes' own quantization "
                                  f"(max diff {np.max(np.abs(la - lb)):.2e})")
    wa, wb = dequantized(ours), dequantized(own)
    n = sum(int(k in wb and torch.equal(v, wb[k])) for k, v in wa.items())
    check(n == 14, f"bnb-nf4 (double quant): dequantize_4bit equal to bitsandbytes' own on {n} of 14 weights")


def bnb_states(d):
    """{Linear weight name: bitsandbytes' dequantize_4bit (CPU) of the export's packed state}"""
    t = load_file(os.path.join(d, "model.safetensors"))
    out = {}
    for k in t:
        if not k.endswith(".quant_state.bitsandbytes__nf4"):
            continue
        w = k[: -len(".quant_state.bitsandbytes__nf4")]
        sd = {s[len(w) + 1:]: v for s, v in t.items() if s.startswith(w + ".")}
        qs = bnbf.QuantState.from_dict(sd, device=torch.device("cpu"))
        out[w] = (t[w], qs, bnbf.dequantize_4bit(t[w], qs))
    return out


def test_bnb_moe():
    """MoE exports (one bnb state per expert Linear) through bitsandbytes' own CPU dequantize_4bit."""
    g = os.path.join(TMP, "moe.gguf")
    run("synth", "--arch", "qwen2moe", "--layers", 1, "--dim", 128, "--ff", 128, "--heads", 4, "--kv-heads", 2,
        "--experts", 4, "--experts-used", 2, "--vocab", 512, "--dtype", "f32", "--seed", 11, "-o", g, "--quiet")
    src_dir = os.path.join(TMP, "moe_f32")
    run("convert", g, "-o", src_dir, "--format", "hf", "--type", "f32", "--quiet")
    src = load_file(os.path.join(src_dir, "model.safetensors"))
    calib = os.path.join(HERE, "..", "data", "text", "calib.txt")
    # calibrated nf4 (--method gptq): bnb's dequantization equals nibble's of the GGUF the job writes
    d, ref = os.path.join(TMP, "moe_nf4_gptq"), os.path.join(TMP, "moe_nf4_gptq.gguf")
    gq = ["--method", "gptq", "--calib", calib, "--ctx", 32, "--calib-tokens", 256]
    run("quantize", g, "--type", "nf4", "--format", "bnb-nf4", "-o", d, "--quiet", *gq)
    run("quantize", g, "--type", "nf4", "-o", ref, "--quiet", *gq)
    run("convert", ref, "-o", ref + "_deq", "--format", "hf", "--type", "f32", "--quiet")
    want = load_file(os.path.join(ref + "_deq", "model.safetensors"))
    got = bnb_states(d)
    # dequantize_4bit returns the state's dtype: nibble's fp32 values rounded once to it
    same = sum(torch.equal(v[2], want[k].to(v[2].dtype)) for k, v in got.items())
    check(len(got) == 19 and same == 19,
          f"bnb-nf4 MoE, --method gptq: dequantize_4bit equals nibble's NF4 on {same} of {len(got)} Linears (19)")
    # nf4-dq RTN: as bitsandbytes quantizes each expert itself
    d = os.path.join(TMP, "moe_nf4dq")
    run("quantize", g, "--type", "nf4-dq", "--format", "bnb-nf4", "-o", d, "--quiet")
    got = bnb_states(d)
    n_codes = n_same = n_abs = n_abs_same = n_off = 0
    for k, (packed, qs, _) in got.items():
        q, st = bnbf.quantize_4bit(src[k], blocksize=64, compress_statistics=True, quant_type="nf4")
        n_codes += packed.numel()
        n_same += int((packed.reshape(-1) == q.reshape(-1)).sum())
        n_abs += qs.absmax.numel()
        n_abs_same += int((qs.absmax == st.absmax).sum())
        n_off += abs(float(qs.offset) - float(st.offset)) <= 2.4e-7 * abs(float(st.offset))
    # bitsandbytes' CPU backend codes the nested absmax through a lookup table and takes torch's
    # mean for the offset: a neighbouring code now and then, an ulp (docs/formats.md)
    check(len(got) == 19 and n_same == n_codes and n_abs_same >= 0.98 * n_abs and n_off == len(got),
          f"bnb-nf4 MoE, nf4-dq: packed codes equal bitsandbytes' own quantization of each Linear on "
          f"{n_same} of {n_codes} bytes, 8-bit absmax on {n_abs_same} of {n_abs}, offsets within an ulp on "
          f"{n_off} of {len(got)}")


def main():
    try:
        test_hf_dirs()
        test_merge_dir()
        test_bnb()
        test_bnb_moe()
        print("gptq / awq: no CPU loader in this venv (transformers needs gptqmodel / autoawq); "
              "checked in tests/interop/test_hf_export_interop.py")
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    if failures:
        print(f"{failures} failure(s)")
        sys.exit(1)
    print("all oracles agree")


if __name__ == "__main__":
    main()
