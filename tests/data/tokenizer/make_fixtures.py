#!/usr/bin/env python3
"""Record tokenizer fixtures from llama.cpp (through PyPI llama-cpp-python).

    python make_fixtures.py [--check] MODEL_ID=GGUF_PATH ...

    e.g. python tests/data/tokenizer/make_fixtures.py \\
            gemma3-270m=$(scripts/fetch-models --path gemma3-270m) \\
            smollm2-135m=$(scripts/fetch-models --path smollm2-135m)

For each model it writes MODEL_ID.json next to this script: the model file's
sha256, the oracle's version, the vocab facts llama.cpp reports (size, BOS,
EOS, add_bos, add_eos) and, for every text of TEXTS (plus seeded random
strings), the token ids of llama_tokenize(add_special=false, parse_special=P)
for P in (false, true), and a sample of token pieces
(llama_token_to_piece(special=true)). A text that is not valid UTF-8 (or holds a NUL)
is stored as "hex" instead of "text".

--check: do not write; compare what llama.cpp gives now with the stored
fixture and exit 1 on any difference (used by tests/interop).
"""
import argparse
import hashlib
import json
import os
import random
import sys

import llama_cpp

HERE = os.path.dirname(os.path.abspath(__file__))

# Texts written for these fixtures (no third-party text).
PROSE = (
    "The river had risen overnight, and by morning the low road to the mill was under a foot of brown "
    "water. Martha didn't wait for the ferryman; she took the long way over the hill, past the chapel "
    "and the three oaks, counting her steps the way her father had taught her. At the top she stopped, "
    "caught her breath, and looked back. The village seemed smaller than it had ever been - twenty-two "
    "roofs, a steeple, and smoke from four chimneys. \"We'll manage,\" she said aloud, to no one. "
    "It was 7:45 a.m. on the 3rd of March, 1887; the price of flour had doubled (from $1.20 to $2.40) "
    "and nobody could say why.\n\n"
    "She'd heard the men at the inn argue about it: the railway, the tariffs, the weather in Kansas. "
    "They're all guessing, she thought. I've got bread to bake.\n"
)

TEXTS = [
    "",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    "Hello world",
    " Hello world",
    "Hello  world   with    runs     of      spaces",
    "trailing spaces   ",
    "   leading spaces",
    "don't can't won't it's I'm you're we've they'll he'd",
    "DON'T CAN'T IT'S I'M YOU'RE WE'VE THEY'LL HE'D 'S 'T",
    "'s 're 'll",
    "numbers: 0 1 12 123 1234 12345 1234567 3.14159 -42 1e10 0x1F",
    "unicode numbers: \u00bd \u00b2 \u0663\u0664\u0665 \u2167 \u2460",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber stra\u00dfe se\u00f1or",
    "e\u0301 combining a\u0308 marks",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002",
    "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c \u30ab\u30bf\u30ab\u30ca",
    "\ud55c\uad6d\uc5b4 \ud14c\uc2a4\ud2b8",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u0928\u092e\u0938\u094d\u0924\u0947",
    "emoji \U0001F600\U0001F44D\U0001F3FD \U0001F468\u200d\U0001F469\u200d\U0001F467 \u2764\ufe0f \U0001F1EB\U0001F1F7",
    "nbsp\u00a0here ideographic\u3000space em\u2003space",
    "line one\nline two\r\nline three\rend",
    "tabs\tand\t\tmore\t\t\ttabs",
    "\n\n\n\nmany newlines\n\n\n\n\n\n\n\n\n",
    "def f(x):\n    return x * 2  # comment\n\nfor i in range(10):\n\tprint(f(i))\n",
    "int main(void) { int a[3] = {1, 2, 3}; return a[0] >= 1 && a[1] != 2 ? 0 : -1; }",
    "if (x<=y || y>=z) { s += \"a\"; } // $var ^ ~mask | 0b1010; a->b; c::d;",
    "<html><body><h1>Title</h1><p>Para <b>bold</b> <i>it</i></p></body></html>",
    "<table><tr><td>1</td><td>2</td></tr></table>",
    "special text: <bos> <eos> <s> </s> <unk> <pad> <start_of_turn>user\nhi<end_of_turn>",
    "chat: <|im_start|>user\nhello<|im_end|>\n<|endoftext|>",
    "<mask> [multimodal] <start_of_image> <unused0>",
    "    indented code block",
    " " * 40 + "forty spaces",
    "punctuation!!! ??? ... --- ;;; ::: ((( ))) [[[ ]]] {{{ }}}",
    "a.b,c;d:e!f?g'h\"i(j)k[l]m{n}o<p>q/r\\s|t~u`v@w#x$y%z^&*_+=-",
    "\u201csmart quotes\u201d \u2018single\u2019 \u2014 em dash \u2013 en dash \u2026",
    "mixed123abc456def 7eleven 3D x86_64 UTF-8 e.g. i.e.",
    "URL: https://example.com/path?query=1&other=two#frag email: someone@example.org",
    "\u0000\u0001\u001f control \u007f chars",
    "\u00ad soft hyphen \u200b zero width \ufeff bom",
    "x" * 64,
    "ab" * 30,
    PROSE,
]

# Byte strings that are not valid UTF-8 (llama.cpp's handling of broken input).
RAW = [
    b"\xff",
    b"abc\xff\xfedef",
    b"\xc3",
    b"caf\xc3",
    b"\xc3(\xa9 mid",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\x80\x80 stray continuation",
    b"\xed\xa0\x80 surrogate",
    b"\xc0\x80 overlong",
]

POOL = list("aAzZ09 '\n\t\r.,;!?-_<>/\\\"$+=|^~`@#%&*()[]{}") + [
    "\u00e9", "\u00a0", "\u3000", "\u4e2d", "\U0001F600", "\u0301", "\u0663", "\u00bd", "\u2581", "\u2028",
    "'s", "'LL", "  ", "\n\n", "<b>", "</s>", "<bos>", "123", "4567",
]


def random_texts(n, seed=20260101):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(1, 24)
        out.append("".join(rng.choice(POOL) for _ in range(k)))
    return out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def piece(vocab, tok):
    buf = (llama_cpp.ctypes.c_char * 256)()
    n = llama_cpp.llama_token_to_piece(vocab, tok, buf, 256, 0, True)
    assert 0 <= n <= 256
    return bytes(buf[:n])


def record(model_id, path):
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    cases = []
    inputs = [t.encode("utf-8") for t in TEXTS] + RAW + [t.encode("utf-8") for t in random_texts(40)]
    for data in inputs:
        case = {}
        try:
            case["text"] = data.decode("utf-8")
            if "\0" in case["text"]:  # JSON readers in C stop at NUL
                raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL")
        except UnicodeDecodeError:
            case.pop("text", None)
            case["hex"] = data.hex()
        case["ids"] = llm.tokenize(data, add_bos=False, special=False)
        ids_sp = llm.tokenize(data, add_bos=False, special=True)
        if ids_sp != case["ids"]:
            case["ids_special"] = ids_sp
        cases.append(case)
    rng = random.Random(7)
    sample = sorted(set([0, 1, 2, 3, n_vocab - 1] + list(range(100, 140)) + list(range(230, 270)) + [rng.randrange(n_vocab) for _ in range(80)]))
    pieces = {str(t): piece(vocab, t).hex() for t in sample}
    return {
        "model": model_id,
        "file": os.path.basename(path),
        "sha256": sha256_file(path),
        "oracle": "llama-cpp-python %s (llama_tokenize add_special=false; llama_token_to_piece special=true)"
        % llama_cpp.__version__,
        "n_vocab": n_vocab,
        "bos": llama_cpp.llama_vocab_bos(vocab),
        "eos": llama_cpp.llama_vocab_eos(vocab),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "add_eos": bool(llama_cpp.llama_vocab_get_add_eos(vocab)),
        "cases": cases,
        "pieces_hex": pieces,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("models", nargs="+", help="MODEL_ID=GGUF_PATH")
    args = ap.parse_args()
    bad = 0
    for spec in args.models:
        model_id, path = spec.split("=", 1)
        fx = record(model_id, path)
        out = os.path.join(HERE, model_id + ".json")
        if args.check:
            with open(out) as f:
                old = json.load(f)
            for key in ("n_vocab", "bos", "eos", "add_bos", "add_eos", "pieces_hex"):
                if old[key] != fx[key]:
                    print("%s: %s differs from the fixture" % (model_id, key))
                    bad += 1
            for a, b in zip(old["cases"], fx["cases"]):
                if a != b:
                    print("%s: case %r: fixture %s, llama.cpp now %s" % (model_id, a.get("text", a.get("hex")), a, b))
                    bad += 1
            if len(old["cases"]) != len(fx["cases"]):
                print("%s: %d cases in the fixture, %d now" % (model_id, len(old["cases"]), len(fx["cases"])))
                bad += 1
            print("%s: %d cases checked against llama.cpp" % (model_id, len(fx["cases"])))
        else:
            with open(out, "w") as f:
                json.dump(fx, f, ensure_ascii=False, separators=(",", ":"))
                f.write("\n")
            print("wrote %s (%d cases)" % (out, len(fx["cases"])))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
