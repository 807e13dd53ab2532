#!/usr/bin/env python3
"""Record (or --check) tests/data/tokenizer/hf/spm_export_ids.json: the token ids
Hugging Face `tokenizers` gives on the tokenizer.json that nibble writes for
SentencePiece ("llama") vocabularies (formats/hf_tokenizer_write.c).

The C test tests/formats/test_hf_tokenizer.c (case "spm_json") exports each
vocabulary listed in the fixture ("set" overrides GGUF booleans before the
export: the no-prefix, no-BOS variant is the SmolLM2/Gemma style) and, with
NB_HF_TOK_KEEP=DIR, keeps the exports in DIR/spm_<name> (NB_HF_TOK_RECORD=1:
only that, no checks); with the Gemma 3 270M
GGUF cached it also keeps DIR/spm_gemma3. This script runs that case, then:
  - records, per export, the sha256 of tokenizer.json and, for every second
    text of hf_ids.json's EmbeddingGemma list (by index), the ids of
    Tokenizer.from_file(tokenizer.json).encode(text, add_special_tokens=False);
    the C test then checks that the file is unchanged and that nibble's
    tokenizer gives those ids;
  - checks that AutoTokenizer.from_pretrained(export) gives the same ids as
    the bare tokenizers file on every text (add_special_tokens=False) and adds
    the BOS the GGUF asks for;
  - checks the Gemma 3 export against hf_ids.json's EmbeddingGemma ids (HF
    tokenizers on Google's own tokenizer.json: the ground truth) on all texts.

Usage, with a Python that has tokenizers and transformers (scripts/oracle-env):
    python tests/data/tokenizer/make_spm_export_ids.py BUILD/formats_test_hf_tokenizer [--check]
Exit 0 ok, 1 on a difference, 77 when a library is missing.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "hf", "spm_export_ids.json")
TEXTS = os.path.join(HERE, "hf", "hf_ids.json")

try:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
except Exception as e:  # pragma: no cover - environment dependent
    print(f"SKIP: needs tokenizers and transformers ({e})")
    sys.exit(77)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 1
    test_bin, check = sys.argv[1], "--check" in sys.argv[2:]
    fx = json.load(open(FIX, encoding="utf-8"))
    cases = {t["dir"]: t["cases"] for t in json.load(open(TEXTS, encoding="utf-8"))["tokenizers"]}
    texts = [c["text"] for c in cases["embeddinggemma-300m"]]
    bad = 0
    with tempfile.TemporaryDirectory() as keep:
        env = dict(os.environ, NB_HF_TOK_KEEP=keep, CK_RUN_CASE="spm_json",
                   NB_TEST_DATA=os.path.dirname(HERE))
        if not check:
            env["NB_HF_TOK_RECORD"] = "1"
        r = subprocess.run([test_bin], env=env, capture_output=True, text=True)
        if check and r.returncode != 0:
            print("FAIL: the C test:", r.stdout[-800:])
            bad += 1
        for ex in fx["exports"]:
            d = os.path.join(keep, "spm_" + ex["name"])
            tj = os.path.join(d, "tokenizer.json")
            if not os.path.exists(tj):
                print(f"FAIL: {ex['name']}: the C test kept no export ({r.stdout[-400:]})")
                return 1
            sha = hashlib.sha256(open(tj, "rb").read()).hexdigest()
            tok = Tokenizer.from_file(tj)
            auto = AutoTokenizer.from_pretrained(d)
            got = []
            for i, t in enumerate(texts):
                ids = tok.encode(t, add_special_tokens=False).ids
                if auto(t, add_special_tokens=False)["input_ids"] != ids:
                    bad += 1
                    print(f"FAIL {ex['name']}: AutoTokenizer differs from tokenizer.json on {t[:40]!r}")
                if i % 2 == 0:
                    got.append([i, ids])
            want_bos = ex["set"].get("tokenizer.ggml.add_bos_token", True)
            with_sp = auto("hello")["input_ids"]
            if (with_sp[0] == auto.bos_token_id) != want_bos:
                bad += 1
                print(f"FAIL {ex['name']}: AutoTokenizer adds BOS: {with_sp[:3]}, want {want_bos}")
            print(f"{ex['name']}: {len(texts)} texts, AutoTokenizer == tokenizers; {len(got)} recorded")
            if check:
                if sha != ex["tokenizer_json_sha256"] or got != ex["cases"]:
                    bad += 1
                    print(f"FAIL {ex['name']}: differs from the fixture")
            else:
                ex["tokenizer_json_sha256"], ex["cases"] = sha, got
        g = os.path.join(keep, "spm_gemma3", "tokenizer.json")
        if os.path.exists(g):
            tok = Tokenizer.from_file(g)
            auto = AutoTokenizer.from_pretrained(os.path.dirname(g))
            same = sum(tok.encode(c["text"], add_special_tokens=False).ids == c["ids"]
                       for c in cases["embeddinggemma-300m"])
            same_auto = sum(auto(c["text"], add_special_tokens=False)["input_ids"] == c["ids"]
                            for c in cases["embeddinggemma-300m"])
            n = len(cases["embeddinggemma-300m"])
            print(f"gemma3 export: tokenizers {same}/{n}, AutoTokenizer {same_auto}/{n} texts give the ids of "
                  f"Google's tokenizer.json")
            bad += (same < n) + (same_auto < n)
        else:
            print("SKIP gemma3 export: gemma-3-270m-Q4_K_M.gguf not cached")
    if not check:
        fx["generator"] = (f"make_spm_export_ids.py, tokenizers {__import__('tokenizers').__version__}, "
                           f"transformers {__import__('transformers').__version__}")
        with open(FIX, "w", encoding="utf-8") as f:
            f.write("{\"generator\": " + json.dumps(fx["generator"]) + ",\n \"exports\": [\n")
            for k, ex in enumerate(fx["exports"]):
                head = {x: ex[x] for x in ("name", "model", "set", "tokenizer_json_sha256")}
                f.write("  " + json.dumps(head)[:-1] + ", \"cases\": [\n")
                f.write(",\n".join("   " + json.dumps(c) for c in ex["cases"]))
                f.write("]}" + (",\n" if k + 1 < len(fx["exports"]) else "\n"))
            f.write(" ]}\n")
        print("wrote", FIX)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
