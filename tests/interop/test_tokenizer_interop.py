#!/usr/bin/env python3
"""Tokenizer fixtures re-derived independently of nibble's C code.

1. Unicode tables: engine/unicode_gen.py re-run with this Python's unicodedata
   must reproduce engine/unicode_data.c byte for byte (only when the Unicode
   version matches the committed one; otherwise skipped with the reason).
2. An independent Python reference, written from the algorithm descriptions
   (special-token split by priority, SentencePiece best-score merges with byte
   fallback; byte-level BPE with the pre-tokenizer regex run by Python's `re`
   engine over character classes built from unicodedata, lowest-rank merges),
   tokenizes every fixture text with the real vocabulary (read by a small GGUF
   metadata reader of its own), and
   must give the ids llama.cpp recorded in tests/data/tokenizer/*.json. This
   checks the fixtures and the rules tokenizer.c follows without llama.cpp.
3. When NB_LLAMA_PYTHON names a Python with llama-cpp-python, the fixtures are
   recorded again from llama.cpp and compared (make_fixtures.py --check).

The C test (tests/engine/test_tokenizer.c) compares nibble with the fixtures.
Models come from the cache of scripts/fetch-models; absent ones are skipped.
"""
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.environ.get("NB_TEST_DATA", os.path.join(ROOT, "tests", "data"))
FIX = os.path.join(DATA, "tokenizer")

passed = failed = skipped = 0


def ok(msg):
    global passed
    passed += 1
    print("ok   " + msg)


def bad(msg):
    global failed
    failed += 1
    print("FAIL " + msg)


def skip(msg):
    global skipped
    skipped += 1
    print("SKIP " + msg)


def models_dir():
    d = os.environ.get("NIBBLE_MODELS")
    return d if d else os.path.join(os.path.expanduser("~"), ".cache", "nibble", "models")


# ---- 1. Unicode tables ----------------------------------------------------------------

def check_unicode_tables():
    committed = open(os.path.join(ROOT, "engine", "unicode_data.c")).read()
    m = re.search(r'nb_ucd_version\[\] = "([0-9.]+)"', committed)
    try:
        import unicodedata2 as ud  # noqa: F401
        have = ud.unidata_version
    except ImportError:
        have = unicodedata.unidata_version
    if not m or m.group(1) != have:
        skip("unicode tables: committed for Unicode %s, this Python has %s (pip install unicodedata2==%s)"
             % (m.group(1) if m else "?", have, m.group(1) if m else "?"))
        return
    out = subprocess.run([sys.executable, os.path.join(ROOT, "engine", "unicode_gen.py")],
                         capture_output=True, text=True, check=True).stdout
    if out == committed:
        ok("unicode tables: engine/unicode_data.c equals the generator's output (Unicode %s)" % have)
    else:
        bad("unicode tables: engine/unicode_data.c differs from engine/unicode_gen.py's output")


# ---- 2. independent reference ------------------------------------------------------------

WHITE_SPACE = set(range(0x09, 0x0E)) | set(range(0x2000, 0x200B)) | {
    0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000}


def llama_decode(b):
    """Code points of bytes, llama.cpp's way: one U+FFFD per byte that does not start a
    well-formed (lead-byte-length, continuation-byte) sequence; overlong forms accepted."""
    out, i, n = [], 0, len(b)
    while i < n:
        c = b[i]
        need = 1 if c < 0x80 else 2 if c >> 5 == 6 else 3 if c >> 4 == 14 else 4 if c >> 3 == 30 else 0
        if need == 1:
            out.append(c)
            i += 1
            continue
        if need and i + need <= n and all(b[i + k] >> 6 == 2 for k in range(1, need)):
            v = c & (0x7F >> need)
            for k in range(1, need):
                v = (v << 6) | (b[i + k] & 0x3F)
            if v <= 0x10FFFF:
                out.append(v)
                i += need
                continue
        out.append(0xFFFD)
        i += 1
    return out


def cp_utf8(cp):
    return chr(cp).encode("utf-8", "surrogatepass")


def char_class(pred):
    """A regex character class (without brackets) of all code points satisfying pred."""
    parts, start = [], None
    for cp in range(0x110000 + 1):
        inside = cp < 0x110000 and not (0xD800 <= cp <= 0xDFFF) and pred(cp)
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            parts.append(re.escape(chr(start)) + ("-" + re.escape(chr(cp - 1)) if cp - 1 > start else ""))
            start = None
    return "".join(parts)


def cat(cp):
    return unicodedata.category(chr(cp))


_CLASSES = {}


def classes():
    if not _CLASSES:
        _CLASSES["L"] = char_class(lambda c: cat(c)[0] == "L")
        _CLASSES["N"] = char_class(lambda c: cat(c)[0] == "N")
        _CLASSES["S"] = "".join(re.escape(chr(c)) for c in sorted(WHITE_SPACE))
    return _CLASSES


def gpt2_regex():
    c = classes()
    L, N, S = c["L"], c["N"], c["S"]
    return re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[%s]+| ?[%s]+| ?[^%s%s%s]+|[%s]+(?![^%s])|[%s]+"
                      % (L, N, S, L, N, S, S, S))


def split_keep(rx, s):
    """Matches and the gaps between them, in order (std::regex_iterator as llama.cpp uses it)."""
    out, last = [], 0
    for m in rx.finditer(s):
        if m.start() > last:
            out.append(s[last:m.start()])
        out.append(m.group(0))
        last = m.end()
    if last < len(s):
        out.append(s[last:])
    return out


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def gguf_kv(path):
    """The metadata of a GGUF file (v2/v3), values as Python objects, strings as bytes.
    A small reader of its own: gguf-py's GGUFReader takes ~20 s on a 262k-token vocab."""
    import struct
    scal = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
    with open(path, "rb") as fh:
        head = fh.read(24)
        assert head[:4] == b"GGUF", path
        n_kv = struct.unpack_from("<Q", head, 16)[0]
        buf = fh.read(64 << 20)  # the tokenizer arrays sit in the first few MiB
    pos = 0

    def rd(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)[0]
        pos += struct.calcsize(fmt)
        return v

    def rstr():
        nonlocal pos
        n = rd("<Q")
        pos += n
        return buf[pos - n:pos]

    def val(t):
        if t == 8:
            return rstr()
        if t == 9:
            et, n = rd("<I"), rd("<Q")
            if et == 8:
                return [rstr() for _ in range(n)]
            return [rd(scal[et]) for _ in range(n)]
        return rd(scal[t])

    kv = {}
    for _ in range(n_kv):
        key = rstr().decode()
        kv[key] = val(rd("<I"))
    return kv


class Vocab:
    def __init__(self, path):
        f = gguf_kv(path)
        self.model = f["tokenizer.ggml.model"].decode()
        self.tokens = f["tokenizer.ggml.tokens"]
        self.types = f.get("tokenizer.ggml.token_type", [1] * len(self.tokens))
        self.scores = f.get("tokenizer.ggml.scores", [0.0] * len(self.tokens))
        self.id = {}
        for i, t in enumerate(self.tokens):
            self.id[t] = i
        self.ranks = {}
        for r_, m in enumerate(f.get("tokenizer.ggml.merges", [])):
            k = m.find(b" ", 1)  # the left side may itself be " "
            if k > 0:
                self.ranks.setdefault((m[:k], m[k + 1:]), r_)
        self.add_space_prefix = f.get("tokenizer.ggml.add_space_prefix", self.model == "llama")
        # llama.cpp forces these end-of-generation texts to control
        self.control = {i for i, ty in enumerate(self.types) if ty == 3}
        for txt in ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>",
                    "<|end_of_text|>", "<eos>", "<end_of_utterance>", "<EOT>"):
            if txt.encode() in self.id:
                self.control.add(self.id[txt.encode()])
        self.user = {i for i, ty in enumerate(self.types) if ty == 4}
        self.unknown = {i for i, ty in enumerate(self.types) if ty == 2}
        self.cand = {}

    def partition(self, text, special):
        """[(bytes, None) | (None, id)] after splitting on special tokens, longest first."""
        if special not in self.cand:
            hidden = self.control | self.unknown
            c = [i for i in (self.user | hidden) if special or i not in hidden]
            self.cand[special] = sorted(c, key=lambda i: (-len(self.tokens[i]), i))
        cand = self.cand[special]
        frags = [(text, None)] if text else []
        for i in cand:
            tok = self.tokens[i]
            if not any(f[0] is not None and tok in f[0] for f in frags):
                continue
            nxt = []
            for raw, tid in frags:
                if raw is None:
                    nxt.append((raw, tid))
                    continue
                parts = raw.split(tok)
                for k, p in enumerate(parts):
                    if p:
                        nxt.append((p, None))
                    if k + 1 < len(parts):
                        nxt.append((None, i))
            frags = nxt
        return frags

    # SentencePiece: best score first (leftmost on ties), byte fallback
    def spm(self, raw, prefix):
        s = (b" " if prefix else b"") + raw
        s = s.replace(b" ", "\u2581".encode())
        syms, i = [], 0
        while i < len(s):
            c = s[i]
            ln = 1 if c < 0xC0 else 2 if c < 0xE0 else 3 if c < 0xF0 else 4
            syms.append(s[i:i + ln])
            i += ln
        while True:
            best = None
            for k in range(len(syms) - 1):
                t = self.id.get(syms[k] + syms[k + 1])
                if t is not None and (best is None or self.scores[t] > best[0]):
                    best = (self.scores[t], k)
            if best is None:
                break
            k = best[1]
            syms[k:k + 2] = [syms[k] + syms[k + 1]]
        out = []
        for sy in syms:
            if sy in self.id:
                out.append(self.id[sy])
            else:
                out.extend(self.id[("<0x%02X>" % b).encode()] for b in sy)
        return out

    # byte-level BPE with the smollm pre-tokenizer: \p{N} isolated, then the GPT-2 regex
    def bpe(self, raw):
        b2u = self.b2u
        text = "".join(chr(c) for c in llama_decode(raw))
        pieces = []
        for p in split_keep(self.num_rx, text):
            pieces.extend(self.gpt2_rx.findall(p))
        out = []
        for p in pieces:
            enc = "".join(b2u[b] for ch in p for b in cp_utf8(ord(ch)))
            syms = [ch.encode() for ch in enc]
            while True:
                best = None
                for k in range(len(syms) - 1):
                    r_ = self.ranks.get((syms[k], syms[k + 1]))
                    if r_ is not None and (best is None or r_ < best[0]):
                        best = (r_, k)
                if best is None:
                    break
                k = best[1]
                syms[k:k + 2] = [syms[k] + syms[k + 1]]
            for sy in syms:
                if sy in self.id:
                    out.append(self.id[sy])
                else:
                    out.extend(self.id[bytes([x])] for x in sy if bytes([x]) in self.id)
        return out

    def tokenize(self, raw, special):
        out, prev_special = [], True
        for text, tid in self.partition(raw, special):
            if tid is not None:
                out.append(tid)
                prev_special = True
            elif self.model == "llama":
                out.extend(self.spm(text, self.add_space_prefix and prev_special))
                prev_special = False
            else:
                out.extend(self.bpe(text))
        return out


def check_reference(fixture):
    fx = json.load(open(os.path.join(FIX, fixture)))
    path = os.path.join(models_dir(), fx["file"])
    if not os.path.exists(path):
        skip("%s: model %s not cached (scripts/fetch-models)" % (fixture, fx["file"]))
        return
    try:
        v = Vocab(path)
    except (AssertionError, KeyError, ValueError, struct.error) as e:
        bad("%s: cannot read the vocabulary of %s: %r" % (fixture, path, e))
        return
    if v.model == "gpt2":
        v.b2u = bytes_to_unicode()
        v.num_rx = re.compile("[%s]" % classes()["N"])
        v.gpt2_rx = gpt2_regex()
    n_bad = 0
    for case in fx["cases"]:
        raw = case["text"].encode() if "text" in case else bytes.fromhex(case["hex"])
        for special, key in ((False, "ids"), (True, "ids_special")):
            want = case.get(key, case["ids"])
            got = v.tokenize(raw, special)
            if got != want:
                n_bad += 1
                if n_bad <= 5:
                    print("  %r special=%s: reference %s, llama.cpp %s" % (raw[:60], special, got[:20], want[:20]))
    if n_bad:
        bad("%s: the Python reference disagrees with llama.cpp on %d of %d tokenizations"
            % (fixture, n_bad, 2 * len(fx["cases"])))
    else:
        ok("%s: Python reference (%s, %d tokens) gives llama.cpp's ids for all %d fixture tokenizations"
           % (fixture, v.model, len(v.tokens), 2 * len(fx["cases"])))


# ---- 3. llama.cpp itself ------------------------------------------------------------------

def check_llama_cpp():
    py = os.environ.get("NB_LLAMA_PYTHON")
    if not py and importlib.util.find_spec("llama_cpp") is not None:
        py = sys.executable
    if not py:
        skip("llama.cpp re-recording: set NB_LLAMA_PYTHON to a Python with llama-cpp-python")
        return
    args = []
    for fixture in sorted(os.listdir(FIX)):
        if fixture.endswith(".json"):
            fx = json.load(open(os.path.join(FIX, fixture)))
            path = os.path.join(models_dir(), fx["file"])
            if os.path.exists(path):
                args.append("%s=%s" % (fixture[:-5], path))
    if not args:
        skip("llama.cpp re-recording: no model cached")
        return
    r = subprocess.run([py, os.path.join(FIX, "make_fixtures.py"), "--check"] + args, capture_output=True, text=True)
    print(r.stdout.strip())
    if r.returncode == 0:
        ok("llama.cpp (%s) still gives the recorded fixtures" % py)
    else:
        bad("llama.cpp disagrees with the recorded fixtures:\n" + r.stderr[-2000:])


def main():
    check_unicode_tables()
    for fixture in sorted(os.listdir(FIX)):
        if fixture.endswith(".json"):
            check_reference(fixture)
    check_llama_cpp()
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    if failed:
        return 1
    return 0 if passed else 77


if __name__ == "__main__":
    sys.exit(main())
