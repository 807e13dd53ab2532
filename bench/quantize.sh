#!/usr/bin/env bash
# bench/quantize.sh — `nibble quantize` throughput (GB/s of F16 input) and peak
# RSS per mix at 1 and 2 threads (or THREADS), for synthetic llama models of
# 1 GB and 4 GB (or the sizes given); median of RUNS runs. Prints a Markdown
# table (for bench/RESULTS.md). When llama-cpp-python is importable by
# LLAMA_PY (a python), llama.cpp's llama_model_quantize is timed on the same
# file and thread count (GGUF mixes only) and the ratio printed.
# usage: bench/quantize.sh [SIZES...]
#   env: NB_BIN, RUNS=3, THREADS="1 2", MIXES="q8_0 q4_0 q4_k_m nf4 int4-g128", BENCH_DIR, LLAMA_PY
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nb=${NB_BIN:-$root/build/release/nibble}
runs=${RUNS:-3}
dir=${BENCH_DIR:-$root/build/bench}
threads=(${THREADS:-1 2})
mixes=(${MIXES:-q8_0 q4_0 q4_k_m nf4 int4-g128})
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1G 4G)
mkdir -p "$dir"
command -v /usr/bin/time >/dev/null || { echo "bench: needs GNU time (apt-get install time)" >&2; exit 1; }
llama_py=${LLAMA_PY:-}
if [ -n "$llama_py" ] && ! "$llama_py" -c "import llama_cpp" 2>/dev/null; then llama_py=; fi

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
measure() { /usr/bin/time -f "%e %M" -o "$dir/time.txt" "$@" >/dev/null 2>"$dir/err.txt" || { cat "$dir/err.txt" >&2; exit 1; }; cat "$dir/time.txt"; }
ftype() { case $1 in q4_0) echo 2;; q4_1) echo 3;; q8_0) echo 7;; q5_0) echo 8;; q5_1) echo 9;; q2_k) echo 10;;
  q3_k_m) echo 12;; q4_k_s) echo 14;; q4_k_m) echo 15;; q5_k_m) echo 17;; q6_k) echo 18;; iq4_nl) echo 25;;
  iq4_xs) echo 30;; *) echo "";; esac; }

echo "| mix | input | threads | input bytes | output bytes | median s | GB/s | peak RSS MiB | llama.cpp s | nibble / llama.cpp speed |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for size in "${sizes[@]}"; do
  src="$dir/synth-$size.gguf"
  [ -f "$src" ] || "$nb" synth --arch llama --size "$size" --dtype f16 --seed 1 -o "$src" --quiet
  bytes=$(stat -L -c %s "$src")
  for mix in "${mixes[@]}"; do
    for th in "${threads[@]}"; do
      : > "$dir/t.txt"; : > "$dir/m.txt"; : > "$dir/l.txt"
      for _ in $(seq "$runs"); do
        r=$(measure "$nb" quantize "$src" -o "$dir/out.gguf" --type "$mix" --threads "$th" --quiet)
        echo "${r% *}" >> "$dir/t.txt"; echo "${r#* }" >> "$dir/m.txt"
        out=$(stat -c %s "$dir/out.gguf"); rm -f "$dir/out.gguf"
        ft=$(ftype "$mix")
        if [ -n "$llama_py" ] && [ -n "$ft" ]; then
          "$llama_py" - "$src" "$dir/ll.gguf" "$ft" "$th" >> "$dir/l.txt" 2>/dev/null <<'EOF'
import ctypes, sys, time, llama_cpp
p = llama_cpp.llama_model_quantize_default_params(); p.ftype = int(sys.argv[3]); p.nthread = int(sys.argv[4])
t0 = time.perf_counter()
assert llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)) == 0
print(time.perf_counter() - t0)
EOF
          rm -f "$dir/ll.gguf"
        fi
      done
      t=$(median < "$dir/t.txt"); m=$(median < "$dir/m.txt")
      l=$([ -s "$dir/l.txt" ] && median < "$dir/l.txt" || echo "")
      awk -v x="$mix" -v s="$size" -v th="$th" -v b="$bytes" -v o="$out" -v t="$t" -v m="$m" -v l="$l" \
        'BEGIN { printf "| %s | synth llama %s f16 | %d | %d | %d | %.2f | %.3f | %.0f | %s | %s |\n", x, s, th, b, o, t,
                 (t > 0 ? b / t / 1e9 : 0), m / 1024, (l == "" ? "-" : sprintf("%.2f", l)),
                 (l == "" || t == 0 ? "-" : sprintf("%.2fx", l / t)) }'
    done
  done
done
