#!/usr/bin/env python3
"""bench/embed_ref.py llama|llama-embedding|torch MODEL TEXT OUT.emb [IDS.txt] — reference
sentence embeddings in nibble's .emb layout (docs/formats.md), one text per
non-empty line of TEXT, the header's text hash = SHA-256 of TEXT's bytes so
`nibble embed ... --compare OUT.emb` accepts it.

  llama: llama.cpp through llama-cpp-python on a GGUF (Llama(embedding=True,
         pooling mean), one text per call, normalised as llama-embedding's
         --embd-normalize 2); IDS.txt receives the token ids it used.
  llama-embedding: llama.cpp's own llama-embedding binary (found in the
         directory $LLAMA_BIN) on a GGUF: every line of TEXT a prompt,
         --pooling mean --embd-normalize 2, read back as a JSON array.
  torch: transformers' Gemma3TextModel on the HF directory, then
         sentence-transformers' modules by hand: mean pooling over the
         attention mask, 2_Dense, 3_Dense (no bias, identity), L2 norm (F32).
"""
import hashlib
import os
import struct
import sys


def lines(text):
    out = []
    for ln in text.split(b"\n"):
        if ln.endswith(b"\r"):
            ln = ln[:-1]
        if ln:
            out.append(ln.decode("utf-8"))
    return out


def write_emb(path, text, rows):
    dim = len(rows[0])
    with open(path + ".tmp", "wb") as f:
        f.write(b"NBEMB\0\0\1" + struct.pack("<IIQ", 1, dim, len(rows)) + hashlib.sha256(text).digest())
        for r in rows:
            f.write(struct.pack(f"<{dim}f", *r))
    os.replace(path + ".tmp", path)


def llama(model, texts, ids_path):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=model, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                          n_ctx=2048, n_batch=2048, n_ubatch=2048, n_threads=2, verbose=False)
    rows, ids = [], []
    for t in texts:
        ids.append(llm.tokenize(t.encode("utf-8"), add_bos=True, special=False))
        rows.append(llm.embed(t, normalize=True))
    if ids_path:
        with open(ids_path, "w") as f:
            f.write("".join(" ".join(map(str, x)) + "\n" for x in ids))
    return rows


def llama_embedding(model, text_path, n):
    import json
    import subprocess
    exe = os.path.join(os.environ["LLAMA_BIN"], "llama-embedding")
    p = subprocess.run([exe, "-m", model, "-f", text_path, "--pooling", "mean", "--embd-normalize", "2",
                        "--embd-output-format", "array", "-c", "2048", "-b", "2048", "-ub", "2048", "-t", "2"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True)
    rows = json.loads(p.stdout[p.stdout.index("["):])
    if len(rows) != n:
        sys.exit("llama-embedding gave %d embeddings for %d texts" % (len(rows), n))
    return rows


def torch_ref(model, texts):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model)
    m = AutoModel.from_pretrained(model, torch_dtype=torch.float32).eval()
    d2 = load_file(os.path.join(model, "2_Dense", "model.safetensors"))["linear.weight"]
    d3 = load_file(os.path.join(model, "3_Dense", "model.safetensors"))["linear.weight"]
    rows = []
    with torch.no_grad():
        for t in texts:
            enc = tok(t, return_tensors="pt")
            h = m(**enc).last_hidden_state[0]
            mask = enc["attention_mask"][0].to(h.dtype)[:, None]
            p = (h * mask).sum(0) / mask.sum()
            p = d3 @ (d2 @ p)
            rows.append((p / p.norm()).tolist())
    return rows


def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    kind, model, text_path, out = sys.argv[1:5]
    text = open(text_path, "rb").read()
    texts = lines(text)
    if kind == "llama":
        rows = llama(model, texts, sys.argv[5] if len(sys.argv) > 5 else None)
    elif kind == "llama-embedding":
        rows = llama_embedding(model, text_path, len(texts))
    else:
        rows = torch_ref(model, texts)
    write_emb(out, text, rows)


if __name__ == "__main__":
    main()
