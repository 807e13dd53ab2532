#!/usr/bin/env python3
"""nibble's engine vs an independent numpy forward pass (numpy_forward.py).

For every architecture the engine runs, `nibble synth --dtype f32` writes a
small random model; `nibble logits` evaluates a token sequence (in one batch
and again in sub-batches of 3, which goes through the KV cache) and the logits
of every token must agree with numpy_forward.forward (written from the Hugging
Face definitions, float64) to 1e-4 relative (max abs difference over the
row's max abs value). Gemma 3 gets 6 layers (5 local + 1 global) and its
sliding window is patched down to 3 tokens so the window actually cuts.
Rope scaling: copies rewritten with gguf-py's writer add linear and YaRN
metadata, or llama3's rope_freqs tensor (computed as llama.cpp's converter
does, while numpy uses HF's llama3 formula). Each comparison also checks a
reference with one deliberate mistake disagrees, so the test has teeth.
Exit 77 (skip) when numpy / gguf are not importable or NB_BIN is unset.
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from gguf import GGUFReader, GGUFValueType, GGUFWriter
except Exception as e:  # pragma: no cover - environment dependent
    print(f"SKIP: needs numpy and gguf ({e})")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import numpy_forward  # noqa: E402

NB = harness.nb_bin()
run = harness.run

TOL = 1e-4
check = harness.Checks()


def patch_u32(path, key, value):
    """Overwrite a u32 metadata value in place (as gguf-set-metadata does)."""
    r = GGUFReader(path, "r+")
    f = r.fields[key]
    f.parts[f.data[0]][0] = value
    del r


def copy_with(src, dst, extra_kv, extra_tensors=()):
    """Rewrite a GGUF with gguf-py's writer, adding metadata and tensors."""
    r = GGUFReader(src)
    w = GGUFWriter(dst, r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture" or k in extra_kv:
            continue
        if f.types[0] == GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), f.types[0], sub_type=f.types[-1])
        else:
            w.add_key_value(k, f.contents(), f.types[0])
    for k, (v, vt) in extra_kv.items():
        w.add_key_value(k, v, vt)
    for t in r.tensors:
        w.add_tensor(t.name, np.asarray(t.data))
    for name, a in extra_tensors:
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama3_factors(hd, base, factor, lo, hi, old):
    """rope_freqs.weight as llama.cpp's converter computes it (float32)."""
    out = []
    for i in range(0, hd, 2):
        freq = np.float32(1.0) / np.float32(base) ** np.float32(i / hd)
        wl = 2 * np.pi / freq
        if wl < old / hi:
            out.append(1.0)
        elif wl > old / lo:
            out.append(factor)
        else:
            smooth = (old / wl - lo) / (hi - lo)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def compare(arch, path, toks, tmp, hf_rope=None, variant=None):
    ref = numpy_forward.forward(GGUFReader(path), toks, rope=hf_rope)
    ids = ",".join(str(t) for t in toks)
    for batch in (None, 3):
        out = os.path.join(tmp, f"{arch}.f32")
        args = ["logits", path, "--tokens", ids, "-o", out, "--quiet"]
        if batch:
            args += ["--batch", str(batch)]
        run(*args)
        got = np.fromfile(out, dtype="<f4").astype(np.float64)
        check(got.size == ref.size, f"{arch}: {got.size} logits, numpy has {ref.size}")
        if got.size != ref.size:
            return
        got = got.reshape(ref.shape)
        worst = max(np.max(np.abs(got[t] - ref[t])) / np.max(np.abs(ref[t])) for t in range(len(toks)))
        check(np.all(np.isfinite(got)), f"{arch}: non-finite logits")
        check(worst <= TOL, f"{arch} (batch {batch or 'all'}): relative error {worst:.3g} > {TOL}")
        print(f"{arch:14s} batch {str(batch or 'all'):3s}: max relative error {worst:.2e}")
    # the reference is not trivially close: logits vary across tokens
    check(np.std(ref) > 1e-3, f"{arch}: reference logits are (nearly) constant")
    # and the comparison has teeth: a reference with one deliberate mistake
    # (window ignored, renormalisation flipped, q/k rows left permuted, rope
    # scaling ignored) must disagree with the engine far beyond the tolerance
    if variant:
        bad = numpy_forward.forward(GGUFReader(path), toks, variant, rope=None if variant == "no_scaling" else hf_rope)
        err = max(np.max(np.abs(got[t] - bad[t])) / np.max(np.abs(bad[t])) for t in range(len(toks)))
        check(err > 10 * TOL, f"{arch}: the '{variant}' reference also agrees ({err:.3g}): test has no teeth")
        print(f"{arch:14s} vs '{variant}' reference: {err:.2e} (must exceed {10 * TOL:g})")


CASES = [
    # arch, extra synth options
    ("llama", []),
    ("mistral", ["--kv-heads", "1"]),
    ("qwen2", []),
    ("qwen3", []),
    ("mixtral", ["--experts", "4", "--experts-used", "2"]),
    ("qwen2moe", ["--experts", "4", "--experts-used", "2"]),
    ("qwen3moe", ["--experts", "8", "--experts-used", "3"]),
    ("gemma3", ["--layers", "6"]),
]

VARIANT = {"gemma3": "no_window", "llama": "no_unpermute", "mixtral": "flip_norm_topk",
           "qwen2moe": "flip_norm_topk", "qwen3moe": "flip_norm_topk"}

with tempfile.TemporaryDirectory() as tmp:
    rng = np.random.default_rng(7)
    for arch, extra in CASES:
        path = os.path.join(tmp, f"{arch}.gguf")
        opts = ["--layers", "2", "--dim", "64", "--ff", "96", "--heads", "4", "--vocab", "320"]
        if "--kv-heads" not in extra:
            opts += ["--kv-heads", "2"]
        # later options win in nibble synth's parser
        run("synth", "--arch", arch, *opts, *extra, "--dtype", "f32", "--seed", "11", "-o", path, "--quiet")
        if arch == "gemma3":
            patch_u32(path, "gemma3.attention.sliding_window", 3)
        toks = rng.integers(0, 320, size=9).tolist()
        compare(arch, path, toks, tmp, variant=VARIANT.get(arch))

    # rope scaling: linear and YaRN from GGUF metadata, llama3 as the
    # rope_freqs tensor llama.cpp's converter writes (HF parameters for numpy)
    toks = rng.integers(0, 320, size=12).tolist()
    base = os.path.join(tmp, "llama.gguf")
    S, F32 = GGUFValueType.STRING, GGUFValueType.FLOAT32
    lin = os.path.join(tmp, "llama_linear.gguf")
    copy_with(base, lin, {"llama.rope.scaling.type": ("linear", S), "llama.rope.scaling.factor": (4.0, F32)})
    compare("llama+linear", lin, toks, tmp, variant="no_scaling")
    yarn = os.path.join(tmp, "qwen2_yarn.gguf")
    copy_with(os.path.join(tmp, "qwen2.gguf"), yarn,
              {"qwen2.rope.scaling.type": ("yarn", S), "qwen2.rope.scaling.factor": (4.0, F32),
               "qwen2.rope.scaling.original_context_length": (64, GGUFValueType.UINT32),
               "qwen2.rope.freq_base": (100.0, F32)})
    compare("qwen2+yarn", yarn, toks, tmp, variant="no_scaling")
    l3 = os.path.join(tmp, "llama_llama3.gguf")
    hf = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
    copy_with(base, l3, {}, [("rope_freqs.weight", llama3_factors(16, 10000.0, 8.0, 1.0, 4.0, 64))])
    compare("llama+llama3", l3, toks, tmp, hf_rope=hf, variant="no_scaling")

if check.summary():
    sys.exit(1)
print("OK")
