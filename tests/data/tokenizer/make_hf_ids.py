#!/usr/bin/env python3
"""Record token ids from Hugging Face `tokenizers` for the HF tokenizer
directories of the real test models (tests/data/tokenizer/hf/hf_ids.json), and
make the SmolLM2 one.

Directories (under the model cache, $NIBBLE_MODELS or ~/.cache/nibble/models):
  embeddinggemma-300m/   fetched by scripts/fetch-models --quality (Gemma 3's
                         real tokenizer.json / tokenizer.model)
  smollm2-135m-hf/       made here with --make-dirs: transformers loads the
                         tokenizer of SmolLM2-135M-Instruct.Q4_1.gguf
                         (AutoTokenizer(gguf_file=...)) and saves it. Its GGUF
                         loader writes a plain ByteLevel pre-tokenizer; the
                         published SmolLM2 tokenizer.json splits digits first
                         (Digits(individual_digits) + ByteLevel, what llama.cpp
                         calls "smollm"), so that step is put back, and
                         tokenizer_config.json's add_prefix_space false.

Ids are `Tokenizer.from_file(tokenizer.json).encode(text,
add_special_tokens=False).ids`: the same convention as nibble's nb_tokenize
(no BOS/EOS). Texts: the tests/data/tokenizer/make_fixtures.py texts that are
valid UTF-8 without NUL, plus lines of tests/data/text/eval.txt, code, CJK,
emoji and whitespace runs.

Usage (with a Python that has `tokenizers`, and `transformers` for --make-dirs;
--with-weights also saves the dequantized SmolLM2 weights and config.json
there, a complete HF model directory):
    python tests/data/tokenizer/make_hf_ids.py [--make-dirs [--with-weights]] [--check]
--check compares with the committed fixture instead of writing it (exit 1 on
a difference, 77 when a directory or the library is missing).
"""
import importlib.util
import json
import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
OUT = os.path.join(HERE, "hf", "hf_ids.json")


def cache_dir():
    d = os.environ.get("NIBBLE_MODELS")
    return d if d else os.path.join(os.path.expanduser("~"), ".cache", "nibble", "models")


TOKENIZERS = [
    # dir under the cache, file whose presence the C test probes, GGUF arch name
    {"dir": "embeddinggemma-300m", "probe": "tokenizer.model", "arch": "gemma3"},
    {"dir": "smollm2-135m-hf", "probe": "tokenizer.json", "arch": "llama"},
]


def texts():
    # make_fixtures.py imports llama_cpp at the top; only its texts are used here
    sys.modules.setdefault("llama_cpp", types.ModuleType("llama_cpp"))
    spec = importlib.util.spec_from_file_location("mf", os.path.join(HERE, "make_fixtures.py"))
    mf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mf)
    out = [t for t in mf.TEXTS if isinstance(t, str) and "\0" not in t]
    out += mf.random_texts(20)
    with open(os.path.join(ROOT, "tests", "data", "text", "eval.txt"), encoding="utf-8") as f:
        lines = [ln for ln in f.read().split("\n") if ln.strip()]
    out += lines[:12]
    out += [
        "int main(void) {\n    printf(\"%d\\n\", 42);\n    return 0;\n}\n",
        "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
        "emoji: 👩‍👩‍👧‍👦 🏳️‍🌈 🇫🇷 ✌🏽 🦙🦙🦙",
        "tabs\t\t\tand   spaces      and\n\n\nnewlines \r\n end   ",
        "     leading and trailing     ",
        "1234567890 3.14159 1e-9 0xDEADBEEF",
    ]
    seen, uniq = set(), []
    for t in out:
        if t not in seen:
            seen.add(t)
            uniq.append(t)
    return uniq


def make_smollm2(cache):
    from transformers import AutoTokenizer

    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not os.path.exists(os.path.join(cache, gguf)):
        print(f"SKIP smollm2-135m-hf: {gguf} not cached (scripts/fetch-models)")
        return
    out = os.path.join(cache, "smollm2-135m-hf")
    tok = AutoTokenizer.from_pretrained(cache, gguf_file=gguf)
    tok.save_pretrained(out)
    p = os.path.join(out, "tokenizer.json")
    with open(p, encoding="utf-8") as f:
        tj = json.load(f)
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    with open(p, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)
    if "--with-weights" in sys.argv:
        # transformers dequantizes the GGUF; save_pretrained refuses a model loaded
        # that way, so the weights go into a plain model built from its config
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM
        src = AutoModelForCausalLM.from_pretrained(cache, gguf_file=gguf, torch_dtype=torch.float32)
        cfg = AutoConfig.from_pretrained(cache, gguf_file=gguf)
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        dst = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
        dst.load_state_dict(src.state_dict())
        dst.save_pretrained(out)
    print(f"wrote {out}")


def main():
    check = "--check" in sys.argv
    cache = cache_dir()
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("SKIP: no `tokenizers` in this Python")
        return 77
    if "--make-dirs" in sys.argv:
        make_smollm2(cache)
    tx = texts()
    rec = {"generator": "tests/data/tokenizer/make_hf_ids.py", "tokenizers": []}
    missing = 0
    for spec in TOKENIZERS:
        d = os.path.join(cache, spec["dir"])
        if not os.path.exists(os.path.join(d, "tokenizer.json")):
            print(f"SKIP {spec['dir']}: not in {cache}")
            missing += 1
            continue
        t = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        cases = [{"text": s, "ids": t.encode(s, add_special_tokens=False).ids} for s in tx]
        rec["tokenizers"].append(dict(spec, cases=cases))
    if check:
        with open(OUT, encoding="utf-8") as f:
            old = json.load(f)
        old_by = {e["dir"]: e for e in old["tokenizers"]}
        bad = 0
        for e in rec["tokenizers"]:
            o = old_by.get(e["dir"])
            if o is None or o["cases"] != e["cases"]:
                print(f"FAIL {e['dir']}: ids differ from the committed fixture")
                bad += 1
            else:
                print(f"ok {e['dir']}: {len(e['cases'])} texts")
        return 1 if bad else (77 if missing == len(TOKENIZERS) else 0)
    with open(OUT, "w", encoding="utf-8") as f:  # one case per line
        f.write('{"generator": %s, "tokenizers": [\n' % json.dumps(rec["generator"]))
        for k, e in enumerate(rec["tokenizers"]):
            head = {x: e[x] for x in ("dir", "probe", "arch")}
            f.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "cases": [\n')
            f.write(",\n".join(json.dumps(c, ensure_ascii=False) for c in e["cases"]))
            f.write("\n]}" + ("," if k + 1 < len(rec["tokenizers"]) else "") + "\n")
        f.write("]}\n")
    print(f"wrote {OUT}: {sum(len(e['cases']) for e in rec['tokenizers'])} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
