#!/usr/bin/env python3
"""Perplexity of nibble vs llama.cpp on the same GGUF, text and context.

llama.cpp runs through PyPI `llama-cpp-python` (which compiles llama.cpp from
source). Its perplexity is computed here from llama.cpp's logits with
llama-perplexity's method (tools/perplexity/perplexity.cpp): tokenize the whole
text with BOS, n_chunk = n_tokens // n_ctx, each chunk from an empty KV cache
with its first token replaced by BOS, score positions n_ctx/2 .. n_ctx-2
predicting the next token, PPL = exp(mean nll), error = PPL * sqrt(var/(n-1)).
nibble runs as `nibble ppl MODEL --text FILE --ctx N --json`.

Modes:
  compare (default)  print the side-by-side table (and --markdown FILE appends it)
  grid               for each model and each --ctx-list value: llama.cpp's PPL with each
                     KV cache type of --llama-kvs and nibble's with each argument set of
                     --nibble-configs (';'-separated), all on the same chunks, as one table
                     with every figure's difference from nibble --precise (the reference
                     arithmetic) and from llama.cpp with its default F16 cache
  fixture            write the small reference fixture that the Check test
                     tests/engine/test_llamacpp.c compares nibble's engine to
                     (token ids, llama.cpp's top-k and sampled log-probs per
                     position, llama.cpp's PPL on those tokens)

Setup (once):
  python3 -m venv .venv-llamacpp
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF" .venv-llamacpp/bin/pip install llama-cpp-python numpy
Examples:
  .venv-llamacpp/bin/python bench/compare_llamacpp_ppl.py --nibble build/release/nibble \\
      --models gemma3-270m,smollm2-135m --ctx 512 --chunks 8
  .venv-llamacpp/bin/python bench/compare_llamacpp_ppl.py fixture --ctx 64 --chunks 2
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = os.path.join(ROOT, "tests", "data", "text", "eval.txt")

# Fixture layout (little-endian), one file per model, tests/data/llamacpp/<id>.lcpp:
#   "NBLCPP01"                     8 bytes
#   u32 n_vocab, n_ctx, n_chunk, k_top, k_rand; i32 bos (put first in every chunk; -1: the vocabulary adds none)
#   u64 model file size            (the fixture belongs to that exact file)
#   f64 llama.cpp PPL, f64 its error   (llama-perplexity's method on these tokens)
#   i32 tokens[n_chunk*n_ctx]      (the text's first tokens as llama.cpp tokenizes them, BOS first)
#   i32 rand_ids[k_rand]           (fixed vocabulary sample, same for every position)
#   per chunk, per position p in 0..n_ctx-1 (chunk evaluated alone, BOS at p = 0):
#     i32 top_ids[k_top]           (llama.cpp's highest logits, best first)
#     f32 top_lp[k_top]            (their log-softmax)
#     f32 rand_lp[k_rand]          (log-softmax at rand_ids)
#     f32 next_lp                  (log-softmax of the next token; 0 at p = n_ctx-1)
MAGIC = b"NBLCPP01"
KV_TYPES = {"f32": 0, "f16": 1, "q8_0": 8}  # ggml type ids for llama.cpp's type_k / type_v


def fetch_path(model_id):
    r = subprocess.run([os.path.join(ROOT, "scripts", "fetch-models"), "--path", model_id],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{model_id}: not in the model cache (run scripts/fetch-models)")
    return r.stdout.strip()


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


class LlamaCpp:
    def __init__(self, path, n_ctx, threads, kv="f16"):
        from llama_cpp import Llama
        # llama.cpp quantizes the V cache only with flash attention; F32/F16 run its default non-FA path
        t = KV_TYPES[kv]
        self.llm = Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                         n_threads=threads, n_threads_batch=threads, verbose=False, type_k=t, type_v=t,
                         flash_attn=kv not in ("f32", "f16"))
        self.n_ctx = n_ctx
        self.n_vocab = self.llm.n_vocab()
        self.bos = self.llm.token_bos()
        self.add_bos = bool(self.llm._model.add_bos_token())

    def tokenize(self, text):
        # llama-perplexity: common_tokenize(ctx, text, add_special = true, parse_special = false)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def chunk_logits(self, chunk):
        """Logits (n_ctx x n_vocab) of one chunk from an empty cache, BOS first."""
        toks = list(chunk)
        if self.add_bos:
            toks[0] = self.bos
        self.llm.reset()
        self.llm.eval(toks)
        return np.asarray(self.llm.scores[: len(toks)], dtype=np.float32)  # a view: use before the next eval


def llama_ppl(lc, tokens, n_ctx, n_chunks):
    """llama-perplexity's number from llama.cpp's logits. Returns (ppl, err, n_chunk, seconds)."""
    n_chunk = len(tokens) // n_ctx
    if n_chunks:
        n_chunk = min(n_chunk, n_chunks)
    first = n_ctx // 2
    nll = nll2 = 0.0
    count = 0
    t0 = time.time()
    for c in range(n_chunk):
        chunk = tokens[c * n_ctx:(c + 1) * n_ctx]
        logits = lc.chunk_logits(chunk)
        # row slices: a float64 log-softmax of 1000 x 262144 logits at once would need several GB
        v = np.concatenate([-log_softmax(logits[r:min(r + 64, n_ctx - 1)])[
            np.arange(min(64, n_ctx - 1 - r)), np.array(chunk[r + 1:min(r + 65, n_ctx)])]
            for r in range(first, n_ctx - 1, 64)])
        del logits
        nll += v.sum()
        nll2 += (v * v).sum()
        count += v.shape[0]
        print(f"[{c + 1}]{np.exp(nll / count):.4f},", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    secs = time.time() - t0
    m, m2 = nll / count, nll2 / count
    ppl = float(np.exp(m))
    err = float(np.sqrt((m2 - m * m) / (count - 1)) * ppl)
    return ppl, err, n_chunk, secs


def nibble_ppl(nibble, path, text, n_ctx, n_chunks, threads, extra=()):
    cmd = [nibble, "ppl", path, "--text", text, "--ctx", str(n_ctx), "--json", "--threads", str(threads)]
    cmd += list(extra)
    if n_chunks:
        cmd += ["--chunks", str(n_chunks)]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"nibble ppl failed ({r.returncode}): {r.stderr.strip()}")
    js = json.loads(r.stdout)
    js["wall"] = time.time() - t0
    return js


def cmd_compare(a):
    text = open(a.text, encoding="utf-8").read()
    rows = []
    for mid in a.models.split(","):
        path = fetch_path(mid)
        lc = LlamaCpp(path, a.ctx, a.threads, a.llama_kv)
        toks = lc.tokenize(text)
        lp, le, nch, lsec = llama_ppl(lc, toks, a.ctx, a.chunks)
        del lc
        nb = nibble_ppl(a.nibble, path, a.text, a.ctx, a.chunks, a.threads, a.nibble_args.split())
        rel = (nb["ppl"] - lp) / lp * 100
        rows.append((mid, os.path.basename(path), len(toks), nb["n_text_tokens"], nch, lp, le, nb["ppl"],
                     nb["ppl_err"], rel, nch * a.ctx / lsec, nb["tokens_per_second"]))
        print(f"{mid}: llama.cpp {lp:.4f} +/- {le:.5f}, nibble {nb['ppl']:.4f} +/- {nb['ppl_err']:.5f} "
              f"({rel:+.3f} %)", file=sys.stderr)
    hdr = ("| model | file | tokens llama.cpp / nibble | chunks x ctx | PPL llama.cpp | PPL nibble | Δ | "
           "tok/s llama.cpp | tok/s nibble |\n|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(f"| {m} | {f} | {tl} / {tn} | {c} x {a.ctx} | {lp:.4f} ± {le:.4f} | {np_:.4f} ± {ne:.4f} | "
                   f"{rel:+.3f} % | {ls:.0f} | {ns:.0f} |\n"
                   for m, f, tl, tn, c, lp, le, np_, ne, rel, ls, ns in rows)
    print(hdr + body)
    if a.markdown:
        with open(a.markdown, "a", encoding="utf-8") as f:
            f.write(hdr + body)
    bad = [r for r in rows if abs(r[9]) > 0.5]
    return 1 if bad else 0


def cmd_fixture(a):
    text = open(a.text, encoding="utf-8").read()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(1234)
    for mid in a.models.split(","):
        path = fetch_path(mid)
        lc = LlamaCpp(path, a.ctx, a.threads)
        toks = lc.tokenize(text)[: a.ctx * a.chunks]
        ppl, err, nch, _ = llama_ppl(lc, toks, a.ctx, a.chunks)
        assert nch == a.chunks
        nv = lc.n_vocab
        rand_ids = np.sort(rng.choice(nv, size=a.k_rand, replace=False)).astype(np.int32)
        out = bytearray(MAGIC)
        out += struct.pack("<5Ii", nv, a.ctx, a.chunks, a.k_top, a.k_rand, lc.bos if lc.add_bos else -1)
        out += struct.pack("<Q", os.path.getsize(path))
        out += struct.pack("<2d", ppl, err)
        out += np.asarray(toks, dtype="<i4").tobytes()
        out += rand_ids.astype("<i4").tobytes()
        for c in range(a.chunks):
            chunk = toks[c * a.ctx:(c + 1) * a.ctx]
            lp = log_softmax(lc.chunk_logits(chunk))
            for p in range(a.ctx):
                row = lp[p]
                top = np.argsort(-row, kind="stable")[: a.k_top].astype(np.int32)
                out += top.astype("<i4").tobytes()
                out += row[top].astype("<f4").tobytes()
                out += row[rand_ids].astype("<f4").tobytes()
                out += struct.pack("<f", float(row[chunk[p + 1]]) if p + 1 < a.ctx else 0.0)
        fn = os.path.join(a.out, f"{mid}.lcpp")
        with open(fn, "wb") as f:
            f.write(out)
        print(f"{fn}: {len(out)} bytes; {nv} vocab, {a.chunks} x {a.ctx} tokens, llama.cpp PPL {ppl:.4f} +/- {err:.4f}",
              file=sys.stderr)
    return 0


def cmd_grid(a):
    text = open(a.text, encoding="utf-8").read()
    configs = [c.strip() for c in a.nibble_configs.split(";") if c.strip()]
    rows = []
    for mid in a.models.split(","):
        path = fetch_path(mid)
        for n_ctx in [int(c) for c in a.ctx_list.split(",")]:
            chunks = max(1, a.tokens // n_ctx)
            res = {}
            for kv in a.llama_kvs.split(","):
                lc = LlamaCpp(path, n_ctx, a.threads, kv)
                toks = lc.tokenize(text)
                lp, le, nch, _ = llama_ppl(lc, toks, n_ctx, chunks)
                del lc
                res[f"llama.cpp kv {kv}" + (" (flash attn)" if kv not in ("f32", "f16") else "")] = (lp, le)
            for c in configs:
                nb = nibble_ppl(a.nibble, path, a.text, n_ctx, chunks, a.threads, c.split())
                res[f"nibble {c}"] = (nb["ppl"], nb["ppl_err"])
            ref = res.get("nibble --precise", (None,))[0]
            base = res.get("llama.cpp kv f16", (None,))[0]
            for k, (v, e) in res.items():
                rows.append((mid, n_ctx, chunks, k, v, e, (v - ref) / ref * 100 if ref else float("nan"),
                             (v - base) / base * 100 if base else float("nan")))
                print(f"{mid} ctx {n_ctx} x {chunks}: {k}: {v:.4f} +/- {e:.4f}", file=sys.stderr, flush=True)
    hdr = ("| model | ctx x chunks | engine | PPL | vs nibble --precise | vs llama.cpp (F16 KV) |\n"
           "|---|---|---|---:|---:|---:|\n")
    body = "".join(f"| {m} | {c} x {n} | {k} | {v:.4f} ± {e:.4f} | {dr:+.3f} % | {dl:+.3f} % |\n"
                   for m, c, n, k, v, e, dr, dl in rows)
    print(hdr + body)
    if a.markdown:
        with open(a.markdown, "a", encoding="utf-8") as f:
            f.write(hdr + body)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="compare", choices=["compare", "fixture", "grid"])
    ap.add_argument("--models", default="gemma3-270m,smollm2-135m", help="fetch-models ids, comma-separated")
    ap.add_argument("--text", default=TEXT)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=0, help="0: all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nibble", default=os.path.join(ROOT, "build", "release", "nibble"))
    ap.add_argument("--markdown", help="append the table to this file")
    ap.add_argument("--llama-kv", default="f16", choices=sorted(KV_TYPES),
                    help="llama.cpp's KV cache type (f16: its default; q8_0 turns flash attention on, as it must)")
    ap.add_argument("--nibble-args", default="", help="extra arguments for nibble ppl, e.g. \"--kv-type f16\"")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "llamacpp"))
    ap.add_argument("--k-top", type=int, default=16)
    ap.add_argument("--k-rand", type=int, default=16)
    ap.add_argument("--ctx-list", default="128,512,2048", help="grid: context lengths")
    ap.add_argument("--tokens", type=int, default=2048, help="grid: chunks = max(1, TOKENS // ctx)")
    ap.add_argument("--llama-kvs", default="f16,f32,q8_0", help="grid: llama.cpp KV cache types")
    ap.add_argument("--nibble-configs", default="--precise;--kv-type f32;--kv-type f16;--kv-type q8_0",
                    help="grid: ';'-separated nibble ppl argument sets")
    a = ap.parse_args()
    if a.mode == "grid":
        return cmd_grid(a)
    if a.mode == "fixture" and not a.chunks:
        a.chunks = 2
    return cmd_fixture(a) if a.mode == "fixture" else cmd_compare(a)


if __name__ == "__main__":
    sys.exit(main())
