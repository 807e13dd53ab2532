#!/usr/bin/env python3
"""Oracle: the tokenizer.json nibble writes for SentencePiece vocabularies
(formats/hf_tokenizer_write.c) loads in HF `tokenizers` and transformers'
AutoTokenizer and gives nibble's ids.

Runs tests/data/tokenizer/make_spm_export_ids.py --check with the C test
formats_test_hf_tokenizer built beside NB_BIN: the exports of stories260K
(and its no-prefix, no-BOS variant) are the files recorded in
tests/data/tokenizer/hf/spm_export_ids.json (sha256) and give the recorded
ids in tokenizers; AutoTokenizer equals tokenizers on all 84 texts; with the
Gemma 3 270M GGUF cached, its export gives the ids of Google's own
tokenizer.json (tests/data/tokenizer/hf/hf_ids.json) on all 84 texts.
Exit 77 when tokenizers / transformers are missing or the C test is not built.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
NB = os.environ.get("NB_BIN")
if not NB or not os.path.exists(NB):
    print("SKIP: NB_BIN not set")
    sys.exit(77)
test_bin = os.path.join(os.path.dirname(NB), "formats_test_hf_tokenizer")
if not os.path.exists(test_bin):
    print(f"SKIP: {test_bin} is not built")
    sys.exit(77)
script = os.path.join(HERE, "..", "data", "tokenizer", "make_spm_export_ids.py")
sys.exit(subprocess.run([sys.executable, script, test_bin, "--check"]).returncode)
