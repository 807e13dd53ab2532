#!/usr/bin/env bash
# bench/methods_stories.sh — the 4.5-bpw-class schemes x calibration methods on
# an unquantized F32 model (default tests/data/models/stories260K.gguf): mean KLD
# (± its standard error), same-top-token rate and PPL against the F32 model's
# own log-probs on tests/data/text/eval.txt, one markdown row each, all scored
# by nibble's engine (`nibble ppl --kld`).
#
# With LLAMA_BIN (a directory holding llama.cpp's llama-imatrix and
# llama-quantize) the reference rows come from llama.cpp itself: llama-imatrix
# on the same calibration text and chunking (CTX tokens per chunk, BOS first,
# every whole chunk), then llama-quantize --imatrix to Q4_0 and IQ4_NL (and
# without it, as a check that nibble's rtn rows write the same tensors). The
# "same tensors" column: nibble quantize of the same source with the same
# imatrix file (llama-imatrix's) against llama-quantize's file, tensor data
# and types compared (the metadata differs).
# Calibration for every method and both tools: the first CALIB_BYTES of
# tests/data/text/calib.txt cut at a line end ($WORK/calib.txt: 16 chunks of
# 256 tokens with stories260K's tokenizer), every whole chunk in order.
# Not a test: nothing is asserted.
# usage: bench/methods_stories.sh  (env: NB_BIN, LLAMA_BIN, SRC, WORK, SCHEMES, METHODS, CTX=256, CHUNKS=16,
#        CALIB_BYTES=8000, THREADS=1)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nb=${NB_BIN:-$root/build/rel/nibble}
src=${SRC:-$root/tests/data/models/stories260K.gguf}
work=${WORK:-$root/build/methods}
schemes=${SCHEMES:-q4_0 iq4_nl nf4 int4-g32}
methods=${METHODS:-rtn imatrix gptq awq awq+gptq}
ctx=${CTX:-256}; chunks=${CHUNKS:-16}; thr=${THREADS:-1}
llama=${LLAMA_BIN:-}
py=$("$root/scripts/pyenv")
eval_="$root/tests/data/text/eval.txt"
mkdir -p "$work"
calib="$work/calib.txt"
[ -f "$calib" ] || awk -v max="${CALIB_BYTES:-8000}" '{ n += length($0) + 1; if (n > max) exit; print }' \
  "$root/tests/data/text/calib.txt" > "$calib"
base="$work/base.bin"
[ -f "$base" ] || "$nb" ppl "$src" --save-logits "$base" --text "$eval_" --ctx "$ctx" --chunks "$chunks" --threads "$thr" -q >/dev/null
[ -f "$work/imatrix.gguf" ] || "$nb" calibrate "$src" --calib "$calib" --ctx "$ctx" \
  -o "$work/imatrix.gguf" --threads "$thr" -q
if [ -n "$llama" ] && [ ! -f "$work/ll-imatrix.gguf" ]; then
  "$llama/llama-imatrix" -m "$src" -f "$calib" -c "$ctx" -b "$ctx" -ub "$ctx" --no-ppl -o "$work/ll-imatrix.gguf" \
    -t "$thr" > "$work/ll-imatrix.log" 2>&1 || { echo "llama-imatrix failed: $work/ll-imatrix.log" >&2; exit 1; }
fi

row() { # row SCHEME LABEL FILE SECONDS [SAME]
  "$nb" ppl "$3" --kld "$base" --text "$eval_" --ctx "$ctx" --chunks "$chunks" --threads "$thr" --json 2>/dev/null |
    python3 -c "import json,sys,os; j=json.load(sys.stdin)['kld']; print('| %s | %s | %d | %.5f | %.5f | %.2f | %.3f | %s | %s |' % ('$1', '$2', os.path.getsize('$3'), j['kld_mean'], j['kld_err'], j['same_top_p_pct'], j['ppl_q'], '$4', '${5:-}'))"
}

echo "| scheme | method | bytes | mean KLD | ± | same top % | PPL | quantize s | same tensors |"
echo "|---|---|---|---|---|---|---|---|---|"
if [ -n "$llama" ]; then
  for sc in q4_0 iq4_nl; do
    for im in "" imatrix; do
      out="$work/ll-$sc${im:+-$im}.gguf"
      t0=$(date +%s.%N)
      "$llama/llama-quantize" ${im:+--imatrix "$work/ll-imatrix.gguf"} "$src" "$out" "${sc^^}" 1 > "$out.log" 2>&1
      dt=$(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)")
      # the same quantization by nibble: bytes equal?
      nbo="$work/nb-$sc${im:+-ll$im}.gguf"
      "$nb" quantize "$src" -o "$nbo" --type "$sc" ${im:+--imatrix "$work/ll-imatrix.gguf"} --threads "$thr" -q 2>/dev/null
      same=$("$py" - "$out" "$nbo" <<'PY'
import sys, gguf
a, b = (gguf.GGUFReader(p) for p in sys.argv[1:3])
ta = {t.name: (int(t.tensor_type), bytes(t.data)) for t in a.tensors}
tb = {t.name: (int(t.tensor_type), bytes(t.data)) for t in b.tensors}
diff = [n for n in ta if ta[n] != tb.get(n)]
print("same as nibble" if not diff and len(ta) == len(tb) else "%d of %d tensors differ" % (len(diff), len(ta)))
PY
)
      row "$sc" "llama.cpp ${sc^^}${im:++imatrix (llama-imatrix)}" "$out" "$dt" "$same"
    done
  done
fi
for sc in $schemes; do
  for me in $methods; do
    out="$work/$sc.$me.gguf"
    args=(--type "$sc" --threads "$thr" -q)
    case "$me" in
      rtn) ;;
      imatrix) args+=(--imatrix "$work/imatrix.gguf") ;;
      *) args+=(--method "$me" --calib "$calib" --ctx "$ctx") ;;
    esac
    t0=$(date +%s.%N)
    "$nb" quantize "$src" -o "$out" "${args[@]}" 2>/dev/null
    dt=$(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)")
    row "$sc" "$me" "$out" "$dt"
  done
done
echo
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); nibble $(git -C "$root" rev-parse --short HEAD)"
