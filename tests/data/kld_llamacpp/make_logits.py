#!/usr/bin/env python3
"""tests/data/kld_llamacpp/make_logits.py — llama.cpp's logits of a model at the
positions a llama-perplexity --kl-divergence-base file scores, and a check that
they are the logits llama-perplexity scored.

  make_logits.py MODEL BASE.kld OUT.f32 [PRINTED.txt]

Evaluates each chunk of the base file's tokens (first token BOS, as
llama-perplexity does) with llama-cpp-python in one batch of n_ctx, KV cache F16
and flash attention on (llama-perplexity's defaults on a CPU), and writes the
logits of positions n_ctx/2 .. n_ctx-2 of every chunk (float32, little endian,
n_chunk * (n_ctx - 1 - n_ctx/2) rows of n_vocab). With PRINTED (what
llama-perplexity --kl-divergence printed), recomputes its statistics from these
logits with its arithmetic (float where it uses float) and fails unless every
printed figure comes out the same to its printed digits (last digit +-1, or 1e-6 relative: the
error of PPL(Q)-PPL(base) is a float difference of near-equal terms).
"""
import re
import struct
import sys

import numpy as np
from llama_cpp import Llama

F = np.float32


def read_base(path):
    b = open(path, "rb").read()
    if b[:8] != b"_logits_":
        sys.exit(f"{path}: not a llama-perplexity base file")
    n_ctx, n_vocab, n_chunk = struct.unpack("<iii", b[8:20])
    toks = np.frombuffer(b, dtype=np.int32, count=n_ctx * n_chunk, offset=20)
    rec = np.frombuffer(b, dtype=np.uint16, offset=20 + 4 * n_ctx * n_chunk)
    return n_ctx, n_vocab, n_chunk, toks, rec.reshape(-1, 2 * ((n_vocab + 1) // 2) + 4)


def logits_of(model, n_ctx, n_chunk, toks):
    llm = Llama(model_path=model, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True, n_threads=1,
                verbose=False, flash_attn=True)
    rows = []
    for c in range(n_chunk):
        t = [int(x) for x in toks[c * n_ctx:(c + 1) * n_ctx]]
        t[0] = llm.token_bos()
        llm.reset()
        llm.eval(t)
        rows.append(np.array(llm.scores[n_ctx // 2:n_ctx - 1], dtype=F))
    return np.concatenate(rows)


def stats(n_ctx, n_vocab, n_chunk, toks, rec, L):
    """llama-perplexity's per-token values and summary (tools/perplexity)."""
    s = dict.fromkeys(["nll", "nll2", "nb", "nb2", "nnb", "kld", "kld2", "dp", "dp2", "dp4"], 0.0)
    same, kv, dv, k = 0, [], [], 0
    for c in range(n_chunk):
        for j in range(n_ctx // 2, n_ctx - 1):
            lg, r, tok = L[k], rec[k], toks[c * n_ctx + j + 1]
            sc, mn = np.frombuffer(r[:4].tobytes(), dtype="<f4")
            q = r[4:4 + n_vocab].astype(F)
            mx = lg.max()
            lse = F(np.log(np.sum(np.exp(lg - mx).astype(np.float64))))
            nll = F(F(mx + lse) - lg[tok])
            nllb = -F(F(sc * q[tok]) + mn)
            plb = (sc * q + mn).astype(F)
            sel = plb > F(-16)
            kl = float(np.sum((np.exp(plb[sel]) * ((plb[sel] - lg[sel]) + F(mx + lse))).astype(np.float64)))
            pd = F(np.exp(-nll) - np.exp(-nllb))
            for key, v in (("nll", nll), ("nb", nllb), ("kld", kl), ("dp", pd)):
                s[key] += float(v)
            s["nll2"] += float(nll) ** 2
            s["nb2"] += float(nllb) ** 2
            s["nnb"] += float(nll) * float(nllb)
            s["kld2"] += kl * kl
            s["dp2"] += float(pd) ** 2
            s["dp4"] += float(pd) ** 4
            same += int(np.argmax(lg)) == int(np.argmax(plb))
            kv.append(F(kl))
            dv.append(pd)
            k += 1
    n = k

    def mu(a, a2):
        f = a / n
        d = a2 / n - f * f
        return f, (np.sqrt(d / (n - 1)) if d > 0 and n > 10 else 0.0)

    def pct(v, fr):
        p = F(fr * (len(v) - 1))
        ip = int(p)
        p = F(p - ip)
        return float((F(1) - p) * v[ip] + p * v[min(ip + 1, len(v) - 1)])

    lq, lqu = mu(s["nll"], s["nll2"])
    lb, lbu = mu(s["nb"], s["nb2"])
    cov = (s["nnb"] / n - (s["nll"] / n) * (s["nb"] / n)) / (n - 1)
    lr, lru = lq - lb, np.sqrt(lqu ** 2 + lbu ** 2 - 2 * cov)
    kv, dv = np.sort(np.array(kv, dtype=F)), np.sort(np.array(dv, dtype=F))
    out = {"Mean PPL(Q)": (np.exp(lq), np.exp(lq) * lqu), "Mean PPL(base)": (np.exp(lb), np.exp(lb) * lbu),
           "Cor(ln(PPL(Q)), ln(PPL(base)))": (100 * cov / (lqu * lbu),),
           "Mean ln(PPL(Q)/PPL(base))": (lr, lru), "Mean PPL(Q)/PPL(base)": (np.exp(lr), np.exp(lr) * lru),
           "Mean    KLD": mu(s["kld"], s["kld2"]), "Maximum KLD": (float(kv[-1]),),
           "Minimum KLD": (float(kv[0]),), "Maximum Δp": (100 * float(dv[-1]),), "Minimum Δp": (100 * float(dv[0]),)}
    out["Mean PPL(Q)-PPL(base)"] = (np.exp(lq) - np.exp(lb), np.sqrt((np.exp(lq) * lqu) ** 2 + (np.exp(lb) * lbu) ** 2 -
                                                                     2 * np.exp(lq) * np.exp(lb) * cov))
    for fr, name in ((0.999, "99.9%"), (0.99, "99.0%"), (0.95, "95.0%"), (0.90, "90.0%"), (0.10, "10.0%"),
                     (0.05, " 5.0%"), (0.01, " 1.0%"), (0.001, " 0.1%")):
        out[f"{name}   KLD"] = (pct(kv, fr),)
        out[f"{name}   Δp"] = (100 * pct(dv, fr),)
    out["75.0%   Δp"], out["25.0%   Δp"] = (100 * pct(dv, 0.75),), (100 * pct(dv, 0.25),)
    med = lambda v: float(F(0.5) * (v[len(v) // 2] + v[len(v) // 2 - 1]) if len(v) % 2 == 0 else v[len(v) // 2])
    out["Median  KLD"], out["Median  Δp"] = (med(kv),), (100 * med(dv),)
    dm = mu(s["dp"], s["dp2"])
    out["Mean    Δp"] = (100 * dm[0], 100 * dm[1])
    ms, msu = mu(s["dp2"], s["dp4"])
    out["RMS Δp    "] = (100 * np.sqrt(ms), 100 * 0.5 / np.sqrt(ms) * msu)
    st = same / n
    out["Same top p"] = (100 * st, 100 * np.sqrt(st * (1 - st) / (n - 1)))
    return out


def check(printed, ours):
    bad = 0
    for line in open(printed, encoding="utf-8"):
        if ":" not in line:
            continue
        key, val = line.rstrip("\n").split(":", 1)
        key = key.rstrip() if key.rstrip() in ours else key
        if key not in ours:
            continue
        nums = re.findall(r"-?\d+\.\d+", val)
        for txt, mine in zip(nums, ours[key]):
            ulp = 10.0 ** -len(txt.split(".")[1])
            ok = abs(float(txt) - mine) <= max(1.01 * ulp, 1e-6 * abs(mine))
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'} {key.strip():32s} printed {txt:>12s}  recomputed {mine:.8f}")
    return bad


def main():
    model, base, out = sys.argv[1:4]
    n_ctx, n_vocab, n_chunk, toks, rec = read_base(base)
    L = logits_of(model, n_ctx, n_chunk, toks)
    assert L.shape == (n_chunk * (n_ctx - 1 - n_ctx // 2), n_vocab)
    L.astype("<f4").tofile(out)
    if len(sys.argv) > 4 and check(sys.argv[4], stats(n_ctx, n_vocab, n_chunk, toks, rec, L)):
        sys.exit("the logits do not reproduce llama-perplexity's figures")


if __name__ == "__main__":
    main()
