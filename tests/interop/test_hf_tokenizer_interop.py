#!/usr/bin/env python3
"""Hugging Face tokenizers -> GGUF (formats/hf_tokenizer.c), checked from Python.

1. A tiny llama HF directory (weights written with PyPI safetensors) with a
   byte-level BPE tokenizer.json (pair-form merges, added tokens, Digits +
   ByteLevel pre-tokenizer) is converted by `$NB_BIN convert DIR -o x.gguf`;
   gguf-py reads the tokenizer keys, which must equal what an independent
   Python rendering of llama.cpp's converter rules (get_vocab_base,
   SpecialVocab) gives for the same files.
2. The same with a SentencePiece tokenizer.model (encoded here with a
   protobuf writer of its own) and tokenizer_config.json added_tokens_decoder
   (_create_vocab_sentencepiece's rules: [PAD] fill, CONTROL / USER_DEFINED,
   U+2581 -> space, score -1000).
3. Opt-in oracle (NB_ORACLE_PYTHON names a Python with `tokenizers`,
   `sentencepiece` and `transformers`; skipped with the reason otherwise):
   the real Gemma 3 and SmolLM2 vocabularies exported by
   nb_hf_tokenizer_write (the C test keeps them with NB_HF_TOK_KEEP) load in
   HF tokenizers (SmolLM2: the ids recorded from the original files in
   tests/data/tokenizer/hf/hf_ids.json) and sentencepiece (Gemma 3: the ids of
   the original tokenizer.model).
Exit 77 when numpy / safetensors / gguf are missing.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from gguf import GGUFReader
    from safetensors.numpy import save_file
except Exception as e:  # pragma: no cover - environment dependent
    print(f"SKIP: needs numpy, safetensors and gguf ({e})")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

NB = harness.nb_bin()
DATA = harness.DATA

check = harness.Checks()


def write_llama_dir(d, vocab):
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
           "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4,
           "num_key_value_heads": 4, "vocab_size": vocab, "max_position_embeddings": 128,
           "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    rng = np.random.default_rng(1)
    t = {"model.embed_tokens.weight": rng.standard_normal((vocab, 64), dtype=np.float32),
         "model.norm.weight": np.ones(64, np.float32)}
    p = "model.layers.0."
    for n, shape in [("self_attn.q_proj", (64, 64)), ("self_attn.k_proj", (64, 64)), ("self_attn.v_proj", (64, 64)),
                     ("self_attn.o_proj", (64, 64)), ("mlp.gate_proj", (128, 64)), ("mlp.up_proj", (128, 64)),
                     ("mlp.down_proj", (64, 128))]:
        t[p + n + ".weight"] = rng.standard_normal(shape, dtype=np.float32) * 0.05
    t[p + "input_layernorm.weight"] = np.ones(64, np.float32)
    t[p + "post_attention_layernorm.weight"] = np.ones(64, np.float32)
    save_file(t, os.path.join(d, "model.safetensors"))


def convert(d, out):
    r = subprocess.run([NB, "convert", d, "-o", out, "--quiet"], capture_output=True, text=True)
    check(r.returncode == 0, f"convert {d}: rc {r.returncode} {r.stderr.strip()}")
    return GGUFReader(out) if r.returncode == 0 else None


def field(r, key):
    f = r.fields.get(key)
    if f is None:
        return None
    if f.types[0] == 9:  # array
        return [f.contents(i) for i in range(len(f.data))]
    return f.contents()


def looks_special(t):
    return (t in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (t.startswith("<|") and t.endswith("|>"))
            or (t.startswith("<\uff5c") and t.endswith("\uff5c>")) or (t.startswith("<unused") and t.endswith(">")))


def bpe_case(tmp):
    d = os.path.join(tmp, "bpe")
    os.makedirs(d)
    vocab = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "a": 3, "b": 4, "\u0120": 5, "ab": 6,
             "\u0120a": 7, "1": 8, "c": 9}
    added = [{"id": 0, "content": "<|endoftext|>", "special": True},
             {"id": 1, "content": "<|im_start|>", "special": True},
             {"id": 2, "content": "<|im_end|>", "special": True},
             {"id": 10, "content": "<tool>", "special": False}]
    merges = [[" ", "a"], ["a", "b"], "c c"]
    tj = {"version": "1.0", "added_tokens": added,
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
              {"type": "Digits", "individual_digits": True},
              {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
          "post_processor": {"type": "ByteLevel"},
          "model": {"type": "BPE", "byte_fallback": False, "vocab": vocab, "merges": merges}}
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                   "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}, f)
    n_vocab = 12
    write_llama_dir(d, n_vocab)
    r = convert(d, os.path.join(tmp, "bpe.gguf"))
    if r is None:
        return
    # the converter's rules, in Python
    toks, types = [], []
    rev = {i: t for t, i in vocab.items()}
    for a in added:
        rev[a["id"]] = a["content"]
    added_by = {a["id"]: a for a in added}
    for i in range(n_vocab):
        if i not in rev:
            toks.append(f"[PAD{i}]")
            types.append(5)
        elif i in added_by:
            t = rev[i]
            if added_by[i]["special"] or looks_special(t):
                types.append(3)
            else:
                t = t.replace("\u2581", " ")
                types.append(4)
            toks.append(t)
        else:
            toks.append(rev[i])
            types.append(1)
    want_merges = [m if isinstance(m, str) else " ".join("".join(chr(ord(c) + 256) if c == " " else c for c in p)
                                                         for p in m) for m in merges]
    check(field(r, "tokenizer.ggml.model") == "gpt2", "bpe: model")
    check(field(r, "tokenizer.ggml.pre") == "starcoder", f"bpe: pre {field(r, 'tokenizer.ggml.pre')}")
    check(field(r, "tokenizer.ggml.tokens") == toks, f"bpe: tokens {field(r, 'tokenizer.ggml.tokens')}")
    check(field(r, "tokenizer.ggml.token_type") == types, f"bpe: types {field(r, 'tokenizer.ggml.token_type')}")
    check(field(r, "tokenizer.ggml.merges") == want_merges, f"bpe: merges {field(r, 'tokenizer.ggml.merges')}")
    check(field(r, "tokenizer.ggml.scores") is None, "bpe: no scores")
    check(field(r, "tokenizer.ggml.bos_token_id") == 1 and field(r, "tokenizer.ggml.eos_token_id") == 2
          and field(r, "tokenizer.ggml.padding_token_id") == 0, "bpe: special ids")
    check(field(r, "tokenizer.chat_template") == "{% for m in messages %}{{ m['content'] }}{% endfor %}",
          "bpe: chat template")
    print(f"bpe: {len(toks)} tokens, {len(want_merges)} merges as the converter's rules give")


def pb_varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def pb_ld(field_no, payload):
    return pb_varint(field_no << 3 | 2) + pb_varint(len(payload)) + payload


def spm_case(tmp):
    d = os.path.join(tmp, "spm")
    os.makedirs(d)
    pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3), ("<0x0A>", 0.0, 6), ("\u2581the", -1.5, 1),
              ("a", -2.0, 1), ("<unused0>", 0.0, 5), ("\u2581\u2581", -3.0, 4)]
    body = b""
    for text, score, typ in pieces:
        p = pb_ld(1, text.encode()) + pb_varint(2 << 3 | 5) + struct.pack("<f", score)
        if typ != 1:
            p += pb_varint(3 << 3) + pb_varint(typ)
        body += pb_ld(1, p)
    body += pb_ld(2, pb_varint(3 << 3) + pb_varint(2) + pb_varint(40 << 3) + pb_varint(0))
    with open(os.path.join(d, "tokenizer.model"), "wb") as f:
        f.write(body)
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"add_bos_token": True, "added_tokens_decoder": {
            "7": {"content": "\u2581\u2581", "special": False},
            "9": {"content": "<start_of_turn>", "special": True}}}, f, ensure_ascii=False)
    n_vocab = 12
    write_llama_dir(d, n_vocab)
    r = convert(d, os.path.join(tmp, "spm.gguf"))
    if r is None:
        return
    toks = [f"[PAD{i}]" for i in range(n_vocab)]
    scores = [-10000.0] * n_vocab
    types = [5] * n_vocab
    for i, (text, score, typ) in enumerate(pieces):
        toks[i], scores[i] = text, score
        types[i] = typ if typ in (2, 3, 5, 6) else 1
    toks[7], scores[7], types[7] = "  ", -1000.0, 4
    toks[9], scores[9], types[9] = "<start_of_turn>", -1000.0, 3
    check(field(r, "tokenizer.ggml.model") == "llama", "spm: model")
    check(field(r, "tokenizer.ggml.tokens") == toks, f"spm: tokens {field(r, 'tokenizer.ggml.tokens')}")
    check([float(x) for x in field(r, "tokenizer.ggml.scores")] == scores, "spm: scores")
    check(field(r, "tokenizer.ggml.token_type") == types, f"spm: types {field(r, 'tokenizer.ggml.token_type')}")
    check(field(r, "tokenizer.ggml.bos_token_id") == 1 and field(r, "tokenizer.ggml.eos_token_id") == 2,
          "spm: bos/eos from config.json")
    check(field(r, "tokenizer.ggml.add_bos_token") is True, "spm: add_bos")
    print(f"spm: {n_vocab} tokens as _create_vocab_sentencepiece gives")


ORACLE_CODE = r'''
import json, sys
from tokenizers import Tokenizer
import sentencepiece as spm
keep, fixture = sys.argv[1], sys.argv[2]
fx = {e["dir"]: e["cases"] for e in json.load(open(fixture, encoding="utf-8"))["tokenizers"]}
bad = 0
if "smollm2-135m-hf" in fx:
    t = Tokenizer.from_file(keep + "/rt_smollm2/tokenizer.json")
    n = 0
    for c in fx["smollm2-135m-hf"]:
        ids = t.encode(c["text"], add_special_tokens=False).ids
        if ids != c["ids"]:
            bad += 1; print("FAIL smollm2 export:", repr(c["text"][:50]))
        n += 1
    print(f"smollm2 export in HF tokenizers: {n - bad}/{n} texts give the original ids")
if "embeddinggemma-300m" in fx:
    # sentencepiece on the export against sentencepiece on the original model
    # (sentencepiece alone does not split HF's added tokens out, so HF's ids are
    # not the reference here)
    sp = spm.SentencePieceProcessor(model_file=keep + "/rt_gemma3/tokenizer.model")
    ref = spm.SentencePieceProcessor(model_file=sys.argv[3] + "/embeddinggemma-300m/tokenizer.model")
    n = same = 0
    for c in fx["embeddinggemma-300m"]:
        n += 1
        same += sp.encode(c["text"]) == ref.encode(c["text"])
    print(f"gemma3 export in sentencepiece: {same}/{n} texts give the original tokenizer.model's ids")
    if same < n:
        bad += 1
sys.exit(1 if bad else 0)
'''


def oracle_case(tmp):
    py = os.environ.get("NB_ORACLE_PYTHON")
    if not py or not os.path.exists(py):
        print("SKIP oracle: NB_ORACLE_PYTHON does not name a Python with tokenizers/sentencepiece")
        return
    test_bin = os.path.join(os.path.dirname(NB), "formats_test_hf_tokenizer")
    if not os.path.exists(test_bin):
        print("SKIP oracle: formats_test_hf_tokenizer is not built beside NB_BIN")
        return
    keep = os.path.join(tmp, "keep")
    os.makedirs(keep)
    env = dict(os.environ, NB_HF_TOK_KEEP=keep, NB_TEST_DATA=DATA, CK_RUN_CASE="core")
    r = subprocess.run([test_bin], env=env, capture_output=True, text=True)
    check(r.returncode == 0, f"C test with NB_HF_TOK_KEEP: {r.stdout[-500:]}")
    if not os.path.exists(os.path.join(keep, "rt_smollm2")) or not os.path.exists(os.path.join(keep, "rt_gemma3")):
        print("SKIP oracle: the real GGUFs are not cached (scripts/fetch-models)")
        return
    cache = os.environ.get("NIBBLE_MODELS") or os.path.join(os.path.expanduser("~"), ".cache", "nibble", "models")
    if not os.path.exists(os.path.join(cache, "embeddinggemma-300m", "tokenizer.model")):
        print("SKIP oracle: embeddinggemma-300m not fetched (scripts/fetch-models --quality)")
        return
    r = subprocess.run([py, "-c", ORACLE_CODE, keep, os.path.join(DATA, "tokenizer", "hf", "hf_ids.json"), cache],
                       capture_output=True, text=True)
    print(r.stdout.strip())
    check(r.returncode == 0, f"oracle: {r.stderr.strip()[-500:]}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        bpe_case(tmp)
        spm_case(tmp)
        oracle_case(tmp)
    if check.summary():
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
