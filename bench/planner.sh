#!/usr/bin/env bash
# bench/planner.sh — issue 10's planner figures (not a test: nothing here is
# asserted). Two parts, each skipped with a message when it cannot run:
#   quality  SmolLM2-135M (scripts/fetch-models; its Q4_1 weights dequantized
#            to F32, as bench/quality.sh does): llama.cpp's mix (q4_k_m,
#            q3_k_m) with an imatrix vs a `nibble plan --target-size` plan at
#            exactly that file's size with the same imatrix; mean KLD against
#            the F32 source (`nibble ppl --save-logits / --kld`).
#   timing   `nibble plan` on a 7B-shaped synthetic model (32 layers, dim 4096,
#            ff 11008, 32 heads, 8 kv heads; F16, ~13.5 GB: only when the work
#            folder's disk has 20 GB free) with an imatrix collected from 64
#            tokens: wall time and peak RSS of planning alone.
# Prints markdown rows on stdout; copy them into bench/RESULTS.md.
# usage: bench/planner.sh [quality] [timing]
#   env: NB_BIN (default build/release/nibble), WORK (default build/planner-bench),
#        CTX=512, CHUNKS=4, CALIB_TOKENS=2048, THREADS=2, MIXES="q4_k_m q3_k_m"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nb=${NB_BIN:-$root/build/release/nibble}
work=${WORK:-$root/build/planner-bench}
ctx=${CTX:-512} chunks=${CHUNKS:-4} ctoks=${CALIB_TOKENS:-2048} thr=${THREADS:-2}
parts=${*:-quality timing}
[ -x "$nb" ] || { echo "planner: no nibble binary at $nb (set NB_BIN)" >&2; exit 1; }
mkdir -p "$work"
calib=$root/tests/data/text/calib.txt eval=$root/tests/data/text/eval.txt
jnum() { grep -oE "\"$1\":[0-9.e+-]+" | head -1 | sed 's/.*://'; }
kld() { "$nb" ppl "$1" --kld "$2" --text "$eval" --ctx "$ctx" --chunks "$chunks" --json -t "$thr" -q 2>/dev/null | jnum kld_mean; }

if [[ " $parts " == *" quality "* ]]; then
  if orig=$("$root/scripts/fetch-models" --path smollm2-135m 2>/dev/null); then
    d=$work/smollm2; mkdir -p "$d"
    [ -f "$d/src.gguf" ] || "$nb" convert "$orig" --type f32 -o "$d/src.gguf" -q
    [ -f "$d/base.bin" ] || "$nb" ppl "$d/src.gguf" --save-logits "$d/base.bin" --text "$eval" --ctx "$ctx" --chunks "$chunks" -t "$thr" -q >/dev/null
    [ -f "$d/im.gguf" ] || "$nb" calibrate "$d/src.gguf" --calib "$calib" --ctx "$ctx" --calib-tokens "$ctoks" -o "$d/im.gguf" -t "$thr" -q
    echo "| model | mix | file bytes | mix KLD | plan bytes | plan KLD | ratio | plan s |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for mix in ${MIXES:-q4_k_m q3_k_m}; do
      "$nb" quantize "$d/src.gguf" --type "$mix" --imatrix "$d/im.gguf" -o "$d/$mix.gguf" -t "$thr" -q >/dev/null
      size=$(stat -c %s "$d/$mix.gguf")
      t0=$(date +%s.%N)
      "$nb" plan "$d/src.gguf" --imatrix "$d/im.gguf" --target-size "$size" -o "$d/plan-$mix.json" -t "$thr" -q > "$d/plan-$mix.txt"
      t1=$(date +%s.%N)
      "$nb" quantize "$d/src.gguf" --plan "$d/plan-$mix.json" --imatrix "$d/im.gguf" -o "$d/plan-$mix.gguf" -t "$thr" -q >/dev/null
      k1=$(kld "$d/$mix.gguf" "$d/base.bin") k2=$(kld "$d/plan-$mix.gguf" "$d/base.bin")
      echo "| smollm2-135m | $mix+imatrix | $size | $k1 | $(stat -c %s "$d/plan-$mix.gguf") | $k2 | $(awk "BEGIN{printf \"%.3f\", $k2/$k1}") | $(awk "BEGIN{printf \"%.1f\", $t1-$t0}") |"
    done
  else
    echo "planner: smollm2-135m is not cached (scripts/fetch-models smollm2-135m): quality skipped" >&2
  fi
fi

if [[ " $parts " == *" timing "* ]]; then
  free=$(df -B1 --output=avail "$work" | tail -1)
  if [ "$free" -lt 20000000000 ]; then
    echo "planner: less than 20 GB free under $work: timing skipped" >&2
  else
    m=$work/7b.gguf
    [ -f "$m" ] || "$nb" synth --arch llama --layers 32 --dim 4096 --ff 11008 --heads 32 --kv-heads 8 --vocab 32000 -o "$m" -t "$thr" -q
    [ -f "$work/7b-im.gguf" ] || "$nb" calibrate "$m" --calib "$calib" --ctx 64 --calib-tokens 64 -o "$work/7b-im.gguf" -t "$thr" -q
    echo "| model | target | threads | plan wall s | peak RSS MiB | measure s |"
    echo "|---|---|---:|---:|---:|---:|"
    for target in "--target-size 4GiB" "--budget 8GiB --ctx 4096"; do
      /usr/bin/time -f "%e %M" -o "$work/time.txt" "$nb" plan "$m" --imatrix "$work/7b-im.gguf" $target --json -t "$thr" -q > "$work/plan.json"
      read -r wall rss < "$work/time.txt"
      echo "| 7B-shaped synth (F16, $(stat -c %s "$m") B) | $target | $thr | $wall | $((rss / 1024)) | $(jnum measure_seconds < "$work/plan.json") |"
    done
  fi
fi
