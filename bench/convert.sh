#!/usr/bin/env bash
# bench/convert.sh — conversion throughput (GB/s of input) and peak RSS for
# synthetic models of 1 GB and 4 GB (or the sizes given), median of RUNS runs.
# Prints a Markdown table; bench/run.sh puts it into bench/RESULTS.md.
# usage: bench/convert.sh [SIZES...]   (env: NB_BIN, RUNS=3, BENCH_DIR)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nb=${NB_BIN:-$root/build/release/nibble}
runs=${RUNS:-3}
dir=${BENCH_DIR:-$root/build/bench}
# Outputs go to OUT_DIR: a tmpfs (/dev/shm) by default, so the figure is nibble's
# conversion speed rather than the disk's write speed; OUT_DIR=$dir measures the disk.
out=${OUT_DIR:-/dev/shm/nibble-bench}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1G 4G)
mkdir -p "$dir" "$out"
command -v /usr/bin/time >/dev/null || { echo "bench: needs GNU time (apt-get install time)" >&2; exit 1; }

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# one measured run: prints "seconds maxrss_kb"
measure() { /usr/bin/time -f "%e %M" -o "$dir/time.txt" "$@" >/dev/null 2>"$dir/err.txt" || { cat "$dir/err.txt" >&2; exit 1; }; cat "$dir/time.txt"; }

echo "| job | input | input bytes | median s | GB/s | peak RSS MiB |"
echo "|---|---|---:|---:|---:|---:|"
for size in "${sizes[@]}"; do
  src="$dir/synth-$size.gguf"
  [ -f "$src" ] || "$nb" synth --arch llama --size "$size" --dtype f16 --seed 1 -o "$src" --quiet
  bytes=$(stat -L -c %s "$src")
  for job in "gguf->safetensors:st" "gguf->gguf f32:f32" "safetensors->gguf:back"; do
    name=${job%%:*}; kind=${job##*:}
    : > "$dir/t.txt"; : > "$dir/m.txt"
    for _ in $(seq "$runs"); do
      case $kind in
        st) r=$(measure "$nb" convert "$src" -o "$out/out.safetensors" --quiet) ;;
        f32) r=$(measure "$nb" convert "$src" -o "$out/out-f32.gguf" --type f32 --quiet); rm -f "$out/out-f32.gguf" ;;
        back) r=$(measure "$nb" convert "$out/out.safetensors" -o "$out/out.gguf" --quiet); rm -f "$out/out.gguf" ;;
      esac
      echo "${r% *}" >> "$dir/t.txt"; echo "${r#* }" >> "$dir/m.txt"
    done
    t=$(median < "$dir/t.txt"); m=$(median < "$dir/m.txt")
    awk -v n="$name" -v s="$size" -v b="$bytes" -v t="$t" -v m="$m" \
      'BEGIN { printf "| %s | synth llama %s f16 | %.0f | %.2f | %.2f | %.0f |\n", n, s, b, t, (t > 0 ? b / t / 1e9 : 0), m / 1024 }'
  done
  rm -f "$out/out.safetensors"
done
