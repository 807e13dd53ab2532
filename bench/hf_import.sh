#!/usr/bin/env bash
# bench/hf_import.sh — importing a quantized HF checkpoint: time and peak RSS
# of convert (lossless INT4), convert --type f16 (dequantized) and quantize
# --type q4_k_m from a synthetic GPTQ llama (bench/make_quantized_hf.py),
# median of RUNS runs. Prints a Markdown table for bench/RESULTS.md.
# usage: bench/hf_import.sh [LAYERS]   (env: NB_BIN, PYTHON, RUNS=3, BENCH_DIR, OUT_DIR)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nb=${NB_BIN:-$root/build/release/nibble}
py=${PYTHON:-$("$root/scripts/pyenv")}
runs=${RUNS:-3}
layers=${1:-8}
dir=${BENCH_DIR:-$root/build/bench}
out=${OUT_DIR:-/dev/shm/nibble-bench}
mkdir -p "$dir" "$out"
command -v /usr/bin/time >/dev/null || { echo "bench: needs GNU time (apt-get install time)" >&2; exit 1; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
measure() { /usr/bin/time -f "%e %M" -o "$dir/time.txt" "$@" >/dev/null 2>"$dir/err.txt" || { cat "$dir/err.txt" >&2; exit 1; }; cat "$dir/time.txt"; }

src="$dir/gptq-llama-$layers"
[ -f "$src/model.safetensors" ] || "$py" "$root/bench/make_quantized_hf.py" "$src" --layers "$layers" >/dev/null
bytes=$(stat -L -c %s "$src/model.safetensors")
largest=$("$nb" inspect "$src" --json | "$py" -c 'import json,sys; print(max(t["bytes"] for t in json.load(sys.stdin)["tensors"]))')
echo "source: synthetic GPTQ 4-bit g128 llama, $layers layers, hidden 2048, ff 5632, vocab 32000: $bytes bytes; largest tensor as nibble reads it: $largest bytes"
echo
echo "| job | median s | MB/s of input | peak RSS MiB |"
echo "|---|---:|---:|---:|"
for job in "convert (int4_sym_g128, lossless):keep" "convert --type f16:f16" "quantize --type q4_k_m --allow-requantize:q4km"; do
  name=${job%%:*}; kind=${job##*:}
  : > "$dir/t.txt"; : > "$dir/m.txt"
  for _ in $(seq "$runs"); do
    case $kind in
      keep) r=$(measure "$nb" convert "$src" -o "$out/hfq.gguf" --quiet) ;;
      f16) r=$(measure "$nb" convert "$src" -o "$out/hfq.gguf" --type f16 --quiet) ;;
      q4km) r=$(measure "$nb" quantize "$src" -o "$out/hfq.gguf" --type q4_k_m --allow-requantize --quiet) ;;
    esac
    rm -f "$out/hfq.gguf"
    echo "${r% *}" >> "$dir/t.txt"; echo "${r#* }" >> "$dir/m.txt"
  done
  s=$(median < "$dir/t.txt"); m=$(median < "$dir/m.txt")
  awk -v n="$name" -v s="$s" -v m="$m" -v b="$bytes" 'BEGIN {printf "| %s | %.2f | %.0f | %.0f |\n", n, s, b / s / 1e6, m / 1024}'
done
