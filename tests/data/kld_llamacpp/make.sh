#!/usr/bin/env bash
# tests/data/kld_llamacpp/make.sh — regenerate this fixture (README.md).
#   LLAMA_BIN=DIR LLAMACPP_PYTHON=PY tests/data/kld_llamacpp/make.sh
# LLAMA_BIN: llama.cpp's build/bin (llama-quantize, llama-perplexity);
# LLAMACPP_PYTHON: a Python with llama-cpp-python of the same llama.cpp version.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=$here/..
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$LLAMA_BIN/llama-quantize" "$data/models/stories260K.gguf" "$tmp/variant.gguf" Q4_0 >/dev/null 2>&1
"$LLAMA_BIN/llama-perplexity" -m "$data/models/stories260K.gguf" -f "$data/text/eval.txt" -c 64 --chunks 4 -b 64 \
  -t 1 --kl-divergence-base "$tmp/base.kld" >"$tmp/base.log" 2>&1
# llama-perplexity's logger thread sometimes loses the end of its output at exit: retry
for try in 1 2 3 4 5; do
  "$LLAMA_BIN/llama-perplexity" -m "$tmp/variant.gguf" -c 64 -b 64 -t 1 --kl-divergence-base "$tmp/base.kld" \
    --kl-divergence >"$tmp/variant.log" 2>&1
  sed -n '/====== Perplexity statistics/,$p' "$tmp/variant.log" | sed '/^$/N;/^\n$/D' >"$tmp/printed.txt"
  grep -q '^Same top p' "$tmp/printed.txt" && break
done
grep -q '^Same top p' "$tmp/printed.txt" || { echo "make.sh: no statistics from llama-perplexity" >&2; exit 1; }
cp "$tmp/printed.txt" "$here/llama-perplexity.txt"
"$LLAMACPP_PYTHON" "$here/make_logits.py" "$tmp/variant.gguf" "$tmp/base.kld" "$tmp/variant.logits" \
  "$here/llama-perplexity.txt"
zstd -19 -q -f "$tmp/base.kld" -o "$here/base.kld.zst"
zstd -19 -q -f "$tmp/variant.logits" -o "$here/variant.logits.zst"
sha256sum "$tmp/variant.gguf" "$tmp/base.kld" "$tmp/variant.logits"
