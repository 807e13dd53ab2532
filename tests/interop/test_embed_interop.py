#!/usr/bin/env python3
"""nibble's text encoder vs an independent numpy implementation.

`nibble synth --arch gemma-embedding --dtype f32` writes a small random
EmbeddingGemma-shaped model (6 layers: 5 local + 1 global, the Dense head
E -> 4E -> E); its sliding window is patched down to 4 tokens so the
symmetric window (|i - j| <= 2) cuts. `nibble embed --ids` embeds token
sequences into a .emb file, which is read here with numpy from the layout
docs/formats.md documents; every embedding must agree with
numpy_forward.embed (written from transformers' Gemma3TextModel with
bidirectional attention and sentence-transformers' Pooling / Dense /
Normalize, float64) to 1e-4 relative. References with one deliberate
mistake (causal attention, no window, no Dense head) must disagree, so the
test has teeth. The HF directory synth writes (with 2_Dense/ and 3_Dense/)
loads in PyPI safetensors and embeds to the same file.
Exit 77 (skip) when numpy / gguf / safetensors are missing or NB_BIN is unset.
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from gguf import GGUFReader
    from safetensors.numpy import load_file
except Exception as e:  # pragma: no cover - environment dependent
    print(f"SKIP: needs numpy, gguf and safetensors ({e})")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import numpy_forward  # noqa: E402

NB = harness.nb_bin()
run = harness.run

TOL = 1e-4
check = harness.Checks()


def read_emb(path):
    """The .emb layout of docs/formats.md, read independently."""
    raw = open(path, "rb").read()
    assert raw[:8] == b"NBEMB\0\0\1", "magic"
    ver, dim = np.frombuffer(raw[8:16], "<u4")
    count = int(np.frombuffer(raw[16:24], "<u8")[0])
    assert ver == 1 and len(raw) == 56 + count * int(dim) * 4, "header / size"
    return np.frombuffer(raw[56:], "<f4").reshape(count, int(dim)).astype(np.float64)


def rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "enc.gguf")
    opts = ["--arch", "gemma-embedding", "--layers", "6", "--dim", "64", "--ff", "96", "--heads", "4",
            "--kv-heads", "1", "--vocab", "320", "--dtype", "f32", "--seed", "3", "--quiet"]
    run("synth", *opts, "-o", path)
    r = GGUFReader(path, "r+")
    f = r.fields["gemma-embedding.attention.sliding_window"]
    f.parts[f.data[0]][0] = 4
    del r
    rng = np.random.default_rng(5)
    seqs = [rng.integers(0, 320, size=n).tolist() for n in (1, 3, 9, 13)]
    ids = os.path.join(tmp, "ids.txt")
    with open(ids, "w") as fp:
        fp.write("".join(" ".join(map(str, s)) + "\n" for s in seqs))
    out = os.path.join(tmp, "enc.emb")
    run("embed", path, "--text", ids, "--ids", "-o", out, "--quiet")
    got = read_emb(out)
    check(got.shape == (len(seqs), 64), f"shape {got.shape}")
    reader = GGUFReader(path)
    for k, toks in enumerate(seqs):
        ref = numpy_forward.embed(reader, toks)
        err = rel(got[k], ref)
        check(abs(np.linalg.norm(got[k]) - 1) < 1e-5, f"text {k}: norm {np.linalg.norm(got[k])}")
        check(err <= TOL, f"text {k} ({len(toks)} tokens): relative error {err:.3g} > {TOL}")
        print(f"text {k} ({len(toks):2d} tokens): max relative error {err:.2e}")
        if len(toks) < 9:
            continue
        for variant in ("causal", "no_window", "no_dense"):
            bad = rel(got[k], numpy_forward.embed(reader, toks, variant))
            check(bad > 10 * TOL, f"text {k}: the '{variant}' reference also agrees ({bad:.3g}): no teeth")
            print(f"text {k} vs '{variant}' reference: {bad:.2e} (must exceed {10 * TOL:g})")

    # the HF directory: Dense modules beside the model, readable by PyPI safetensors
    hf = os.path.join(tmp, "enc_hf")
    run("synth", *opts, "-o", hf)
    d2 = load_file(os.path.join(hf, "2_Dense", "model.safetensors"))
    d3 = load_file(os.path.join(hf, "3_Dense", "model.safetensors"))
    check(list(d2) == ["linear.weight"] and d2["linear.weight"].shape == (256, 64), f"2_Dense: {d2.keys()}")
    check(list(d3) == ["linear.weight"] and d3["linear.weight"].shape == (64, 256), f"3_Dense: {d3.keys()}")
    w = {t.name: np.asarray(t.data) for t in GGUFReader(path).tensors}
    check(np.array_equal(d2["linear.weight"], w["dense_2.weight"]), "2_Dense differs from the GGUF's dense_2")
    # (the HF dir keeps synth's window of 512; the GGUF was patched, so compare texts the window does not cut)
    short = os.path.join(tmp, "short.txt")
    with open(short, "w") as fp:
        fp.write("5 6 7\n9 10\n")
    a, b = os.path.join(tmp, "a.emb"), os.path.join(tmp, "b.emb")
    run("embed", path, "--text", short, "--ids", "-o", a, "--quiet")
    run("embed", hf, "--text", short, "--ids", "-o", b, "--quiet")
    check(open(a, "rb").read() == open(b, "rb").read(), "GGUF and HF directory embed differently")

if check.summary():
    sys.exit(1)
print("OK")
