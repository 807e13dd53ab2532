#!/usr/bin/env python3
"""nibble's engine vs an independent numpy forward pass (numpy_forward.py).

For every architecture the engine runs, `nibble synth --dtype f32` writes a
small random model; `nibble logits` evaluates a token sequence (in one batch
and again in sub-batches of 3, which goes through the KV cache) and the logits
of every token must agree with numpy_forward.forward (written from the Hugging
Face definitions, float64) to 1e-4 relative (max abs difference over the
row's max abs value). Gemma 3 gets 6 layers (5 local + 1 global) and its
sliding window is patched down to 3 tokens so the window actually cuts.
Exit 77 (skip) when numpy / gguf are not importable or NB_BIN is unset.
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from gguf import GGUFReader
except Exception as e:  # pragma: no cover - environment dependent
    print(f"SKIP: needs numpy and gguf ({e})")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy_forward  # noqa: E402

NB = os.environ.get("NB_BIN")
if not NB or not os.path.exists(NB):
    print("SKIP: NB_BIN not set")
    sys.exit(77)

TOL = 1e-4
failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)


def run(*args):
    r = subprocess.run([NB, *args], capture_output=True, text=True)
    if r.returncode != 0:
        print("command failed:", args, r.stdout, r.stderr)
        sys.exit(1)
    return r


def patch_u32(path, key, value):
    """Overwrite a u32 metadata value in place (as gguf-set-metadata does)."""
    r = GGUFReader(path, "r+")
    f = r.fields[key]
    f.parts[f.data[0]][0] = value
    del r


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
        ids = ",".join(str(t) for t in toks)
        ref = numpy_forward.forward(GGUFReader(path), toks)
        for batch in (None, 3):
            out = os.path.join(tmp, f"{arch}.f32")
            args = ["logits", path, "--tokens", ids, "-o", out, "--quiet"]
            if batch:
                args += ["--batch", str(batch)]
            run(*args)
            got = np.fromfile(out, dtype="<f4").astype(np.float64)
            check(got.size == ref.size, f"{arch}: {got.size} logits, numpy has {ref.size}")
            if got.size != ref.size:
                continue
            got = got.reshape(ref.shape)
            worst = 0.0
            for t in range(len(toks)):
                err = np.max(np.abs(got[t] - ref[t])) / np.max(np.abs(ref[t]))
                worst = max(worst, err)
            check(np.all(np.isfinite(got)), f"{arch}: non-finite logits")
            check(worst <= TOL, f"{arch} (batch {batch or 'all'}): relative error {worst:.3g} > {TOL}")
            print(f"{arch:9s} batch {str(batch or 'all'):3s}: max relative error {worst:.2e}")
        # the reference is not trivially close: logits vary across tokens
        check(np.std(ref) > 1e-3, f"{arch}: reference logits are (nearly) constant")
        # and the comparison has teeth: a reference with one deliberate mistake
        # (window ignored, renormalisation flipped, q/k rows left permuted)
        # must disagree with the engine far beyond the tolerance
        variant = {"gemma3": "no_window", "llama": "no_unpermute", "mixtral": "flip_norm_topk",
                   "qwen2moe": "flip_norm_topk", "qwen3moe": "flip_norm_topk"}.get(arch)
        if variant and got.size == ref.size:
            bad = numpy_forward.forward(GGUFReader(path), toks, variant)
            err = max(np.max(np.abs(got[t] - bad[t])) / np.max(np.abs(bad[t])) for t in range(len(toks)))
            check(err > 10 * TOL, f"{arch}: the '{variant}' reference also agrees ({err:.3g}): test has no teeth")
            print(f"{arch:9s} vs '{variant}' reference: {err:.2e} (must exceed {10 * TOL:g})")

if failures:
    print(f"{failures} failure(s)")
    sys.exit(1)
print("OK")
