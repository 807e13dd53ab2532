#!/usr/bin/env bash
# bench/batch_jobs.sh — `nibble batch --jobs` scaling (issue 12): N small jobs run with
# --jobs 1 and with --jobs J under the same total thread budget (--threads T), compared
# with the ideal max(longest single job, sum of single-job times / J), the single-job
# times being those of the --jobs 1 run (each job alone with all T threads).
#
#   NB_BIN=build/rel/nibble BENCH_DIR=/tmp/nbjobs JOBS=20 J=2 THREADS=2 RUNS=3 bench/batch_jobs.sh
#
# Each job is a `nibble build` of a recipe (imatrix from TOKENS calibration tokens, default
# 512, then Q4_K_M) on its own synthetic llama (2 layers, dim DIM (256), ff 2 DIM; seeds 1..N). Runs
# alternate (--jobs 1, --jobs J, ...) so that a change in the machine's load hits both;
# one Markdown row per run (wall seconds, sum and longest of the per-job seconds from the
# state file, the ideal, wall / ideal, load average before and after).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nb=${NB_BIN:-$root/build/rel/nibble}
nb=$(cd "$(dirname "$nb")" && pwd)/$(basename "$nb")
dir=${BENCH_DIR:-/tmp/nibble-batch-bench}
n=${JOBS:-20}
j=${J:-2}
threads=${THREADS:-$(nproc)}
runs=${RUNS:-3}
dim=${DIM:-256}
tokens=${TOKENS:-512}
mkdir -p "$dir/models"
cd "$dir"
for ((i = 1; i <= n; i++)); do
  [ -s "models/m$i.gguf" ] || "$nb" synth --arch llama --layers 2 --dim "$dim" --ff $((2 * dim)) --heads 4 --kv-heads 2 --vocab 300 \
    --seed "$i" -q -o "models/m$i.gguf"
done
printf '{"nibble_recipe": 1, "name": "q", "source": "${SOURCE}",\n "calibration": {"text": "%s", "ctx": 64, "tokens": %d},\n "method": "imatrix", "target": {"mix": "q4_k_m"}}\n' \
  "$root/tests/data/text/calib.txt" "$tokens" > recipe.json
printf '{"nibble_batch": 1, "out": "out", "jobs": [{"sources": ["models/*.gguf"], "recipes": ["recipe.json"]}]}\n' > jobs.json

echo "$(date -u +%FT%TZ) commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo ?), $(nproc) cores, $n jobs (dim $dim, $tokens tokens), --threads $threads"
echo
echo "| run | --jobs | wall s | sum of job s | longest job s | ideal s | wall / ideal | load avg before → after |"
echo "|---|---:|---:|---:|---:|---:|---:|---|"
declare -A single_sum single_max
for ((r = 1; r <= runs; r++)); do
  for jobs in 1 "$j"; do
    rm -rf out
    la0=$(cut -d' ' -f1 /proc/loadavg)
    t0=$(date +%s.%N)
    "$nb" batch jobs.json --jobs "$jobs" --threads "$threads" --quiet >batch.log 2>&1 || { tail -5 batch.log; exit 1; }
    t1=$(date +%s.%N)
    la1=$(cut -d' ' -f1 /proc/loadavg)
    read -r sum max < <(python3 -c 'import json, sys
s = [j["seconds"] for j in json.load(open(sys.argv[1]))["jobs"]]
print(sum(s), max(s))' out/.batch/state-0-of-1.json)
    if [ "$jobs" = 1 ]; then single_sum[$r]=$sum; single_max[$r]=$max; fi
    ideal=$(python3 -c "print(max(${single_max[$r]}, ${single_sum[$r]} / $jobs))")
    wall=$(python3 -c "print($t1 - $t0)")
    printf '| %d | %d | %.1f | %.1f | %.1f | %.1f | %.2f | %s → %s |\n' "$r" "$jobs" "$wall" "$sum" "$max" "$ideal" \
      "$(python3 -c "print($wall / $ideal)")" "$la0" "$la1"
  done
done
rm -rf out
