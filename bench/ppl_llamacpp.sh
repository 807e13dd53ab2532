#!/usr/bin/env bash
# bench/ppl_llamacpp.sh — perplexity of nibble against llama.cpp's own
# llama-perplexity on the same GGUF files and text, at several contexts.
#
#   LLAMA_BIN=DIR [NB_BIN=build/rel/nibble] [MODELS=~/.cache/nibble/models]
#   [CTXS="128 512 2048"] [TOKENS=2048] [THREADS=2] bench/ppl_llamacpp.sh
#
# Text: tests/data/text/eval.txt; chunks = TOKENS / ctx (llama-perplexity's method on
# both sides: BOS first, second half of each chunk scored). llama.cpp runs with
# its defaults (F16 KV cache, flash attention auto) and with -fa off (its
# non-flash-attention path, which nibble's --kv-type f16 follows); nibble with
# its F32 cache (default), --kv-type f16, and --precise (the reference
# arithmetic: dequantized weights x F32 activations). PPL is deterministic on
# both sides, so load does not change the figures. Prints one markdown table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nb=${NB_BIN:-$root/build/rel/nibble}
models=${MODELS:-$HOME/.cache/nibble/models}
ctxs=${CTXS:-128 512 2048}
tokens=${TOKENS:-2048}
threads=${THREADS:-2}
text=$root/tests/data/text/eval.txt
lp=${LLAMA_BIN:?set LLAMA_BIN to the directory holding llama-perplexity}/llama-perplexity
[ -x "$nb" ] || { echo "ppl_llamacpp: no nibble at $nb (set NB_BIN)" >&2; exit 1; }

# llama-perplexity's "Final estimate: PPL = X +/- E" (its logger sometimes drops
# the end of its output at exit: retried)
llama_ppl() {
  local out
  for _ in 1 2 3; do
    out=$("$lp" "$@" -f "$text" -t "$threads" 2>&1 | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
    [ -n "$out" ] && { echo "$out"; return; }
  done
  echo n/a
}
nb_ppl() {
  "$nb" ppl "$@" --text "$text" -t "$threads" --json -q | python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["ppl"])'
}
pct() { python3 -c "import sys; a,b=sys.argv[1:]; print('n/a' if 'n/a' in (a,b) else '%+.2f %%' % (100*(float(a)/float(b)-1)))" "$1" "$2"; }

echo "nibble $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'); llama-perplexity from \$LLAMA_BIN; $(date -u +%FT%TZ); text eval.txt, $tokens tokens per context"
echo
echo "| model | ctx x chunks | llama.cpp (F16 KV, FA auto) | llama.cpp (F16 KV, FA off) | nibble F32 KV | nibble F16 KV | nibble --precise | nibble F16 KV vs llama.cpp FA off | nibble F32 KV vs llama.cpp default |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for m in gemma-3-270m-Q4_K_M.gguf SmolLM2-135M-Instruct.Q4_1.gguf; do
  f=$models/$m
  [ -f "$f" ] || { echo "ppl_llamacpp: missing $f" >&2; continue; }
  for c in $ctxs; do
    n=$((tokens / c))
    l_def=$(llama_ppl -m "$f" -c "$c" --chunks "$n" -b "$c")
    l_nofa=$(llama_ppl -m "$f" -c "$c" --chunks "$n" -b "$c" -fa off)
    n32=$(nb_ppl "$f" --ctx "$c" --chunks "$n")
    n16=$(nb_ppl "$f" --ctx "$c" --chunks "$n" --kv-type f16)
    npr=$(nb_ppl "$f" --ctx "$c" --chunks "$n" --precise)
    echo "| $m | $c x $n | $l_def | $l_nofa | $n32 | $n16 | $npr | $(pct "$n16" "$l_nofa") | $(pct "$n32" "$l_def") |"
  done
done
