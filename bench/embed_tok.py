#!/usr/bin/env python3
"""bench/embed_tok.py SRC.gguf TOK.gguf OUT.gguf — a copy of SRC with the
tokenizer.* metadata of TOK and tokenizer.ggml.add_eos_token = true.

For EmbeddingGemma until nibble imports tokenizer.json itself: the Gemma 3
270M GGUF's vocabulary is EmbeddingGemma's but for 30 whitespace-run tokens
(262,114 of 262,144 strings equal), so sentences without runs of spaces
tokenize the same; EmbeddingGemma's tokenizer_config.json adds BOS and EOS.
Both nibble and llama.cpp read the same keys, so their comparison is fair
whatever the keys say. Needs gguf-py (scripts/pyenv); tensors are streamed
from SRC's mapping."""
import sys

from gguf import GGUFReader, GGUFValueType, GGUFWriter


def copy_kv(w, r, keep):
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture" or not keep(k):
            continue
        if f.types[0] == GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), f.types[0], sub_type=f.types[-1])
        else:
            w.add_key_value(k, f.contents(), f.types[0])


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    src, tok, out = sys.argv[1:]
    r, t = GGUFReader(src), GGUFReader(tok)
    w = GGUFWriter(out, r.fields["general.architecture"].contents())
    copy_kv(w, r, lambda k: not k.startswith("tokenizer."))
    copy_kv(w, t, lambda k: k.startswith("tokenizer.") and k != "tokenizer.ggml.add_eos_token"
            and not k.startswith("tokenizer.chat_template"))
    w.add_key_value("tokenizer.ggml.add_eos_token", True, GGUFValueType.BOOL)
    for x in r.tensors:
        w.add_tensor(x.name, x.data, raw_shape=list(reversed([int(d) for d in x.shape])), raw_dtype=x.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
