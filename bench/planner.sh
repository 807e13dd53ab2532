#!/usr/bin/env bash
# bench/planner.sh — issue 10's planner figures (not a test: nothing here is
# asserted). Two parts, each skipped with a message when it cannot run:
#   quality  llama.cpp's mixes with an imatrix vs a `nibble plan --target-size`
#            plan at exactly that file's size with the same imatrix; mean KLD
#            against the F32 source (`nibble ppl --save-logits / --kld`), on
#            stories260K (tests/data/models, unquantized F32: q4_0, iq4_nl, the
#            types its 64-wide rows allow) and SmolLM2-135M (scripts/fetch-models;
#            its Q4_1 weights dequantized to F32 as bench/quality.sh does: q4_k_m,
#            q3_k_m; biased, since Q4_1 itself reproduces that source exactly).
#   timing   `nibble plan` on a 7B-shaped synthetic model (32 layers, dim 4096,
#            ff 11008, 32 heads, 8 kv heads; F16, ~13.5 GB: only when the work
#            folder's disk has 20 GB free) with an imatrix collected from 64
#            tokens: wall time and peak RSS of planning alone.
# Prints markdown rows on stdout; copy them into bench/RESULTS.md.
# usage: bench/planner.sh [quality] [timing]
#   env: NB_BIN (default build/release/nibble), WORK (default build/planner-bench),
#        CTX=512, CHUNKS=4, CALIB_TOKENS=2048, THREADS=2, MIXES="q4_k_m q3_k_m",
#        STORIES (stories260K.gguf), STORIES_MIXES="q4_0 iq4_nl"
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

# rows NAME SRC MIXES...: each mix with the imatrix vs a plan at exactly its file size
rows() {
  local name=$1 src=$2 d=$work/$1; shift 2
  [ -f "$d/base.bin" ] || "$nb" ppl "$src" --save-logits "$d/base.bin" --text "$eval" --ctx "$ctx" --chunks "$chunks" -t "$thr" -q >/dev/null
  [ -f "$d/im.gguf" ] || "$nb" calibrate "$src" --calib "$calib" --ctx "$ctx" --calib-tokens "$ctoks" -o "$d/im.gguf" -t "$thr" -q
  for mix in "$@"; do
    "$nb" quantize "$src" --type "$mix" --imatrix "$d/im.gguf" -o "$d/$mix.gguf" -t "$thr" -q 2>/dev/null >/dev/null
    size=$(stat -c %s "$d/$mix.gguf")
    t0=$(date +%s.%N)
    "$nb" plan "$src" --imatrix "$d/im.gguf" --target-size "$size" -o "$d/plan-$mix.json" -t "$thr" -q > "$d/plan-$mix.txt"
    t1=$(date +%s.%N)
    "$nb" quantize "$src" --plan "$d/plan-$mix.json" --imatrix "$d/im.gguf" -o "$d/plan-$mix.gguf" -t "$thr" -q >/dev/null
    k1=$(kld "$d/$mix.gguf" "$d/base.bin") k2=$(kld "$d/plan-$mix.gguf" "$d/base.bin")
    printf "| %s | %s+imatrix | %s | %.5f | %s | %.5f | %.3f | %.1f |\n" "$name" "$mix" "$size" "$k1" \
      "$(stat -c %s "$d/plan-$mix.gguf")" "$k2" "$(awk "BEGIN{print $k2/$k1}")" "$(awk "BEGIN{print $t1-$t0}")"
  done
}

if [[ " $parts " == *" quality "* ]]; then
  echo "| model | mix | file bytes | mix KLD | plan bytes | plan KLD | plan/mix | plan s |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  stories=${STORIES:-$root/tests/data/models/stories260K.gguf}
  if [ -f "$stories" ]; then
    mkdir -p "$work/stories260k"
    rows stories260k "$stories" ${STORIES_MIXES:-q4_0 iq4_nl}
  else
    echo "planner: no $stories (set STORIES): stories260K skipped" >&2
  fi
  if orig=$("$root/scripts/fetch-models" --path smollm2-135m 2>/dev/null); then
    mkdir -p "$work/smollm2"
    [ -f "$work/smollm2/src.gguf" ] || "$nb" convert "$orig" --type f32 -o "$work/smollm2/src.gguf" -q
    rows smollm2 "$work/smollm2/src.gguf" ${MIXES:-q4_k_m q3_k_m}
  else
    echo "planner: smollm2-135m is not cached (scripts/fetch-models smollm2-135m): skipped" >&2
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
