#!/usr/bin/env bash
# bench/gptq_speed.sh — GPTQ speed of two nibble binaries (e.g. this commit vs
# an older one built separately) on the same models, same options, runs
# interleaved (old, new, old, new ...) so both see the same machine load.
# Prints one markdown row per (model, binary): median wall time, median of the
# "GPTQ" and "calibration passes" seconds nibble reports, peak RSS, the load
# average before the first run, and whether the outputs are byte-identical.
# On a loaded machine the CPU seconds (user + sys, all threads) say more about
# the work than the wall time.
# Not a test: nothing is asserted.
# usage: OLD=path/to/old/nibble NEW=build/rel/nibble bench/gptq_speed.sh MODEL.gguf...
#   env: REPS (3), TYPE (q4_0), THREADS (2), CALIB_TOKENS (512), CTX (512), WORK (build/gptq_speed)
# Models used for bench/RESULTS.md: ../shared/models/stories260K.gguf; SmolLM2-135M
# dequantized to F32 (`nibble convert SmolLM2-135M-Instruct.Q4_1.gguf --type f32`, as
# bench/quality.sh does); a 7B-shaped layer (`nibble synth --arch llama --layers 1
# --dim 4096 --ff 11008 --heads 32 --kv-heads 32 --dtype f16 --vocab 512 --seed 1`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
old=${OLD:?set OLD to the baseline nibble binary}
new=${NEW:-$root/build/rel/nibble}
reps=${REPS:-3}; type=${TYPE:-q4_0}; thr=${THREADS:-2}
work=${WORK:-$root/build/gptq_speed}
mkdir -p "$work"
calib="$root/tests/data/text/calib.txt"
echo "| model | binary | wall s (median of $reps) | CPU s (user+sys) | GPTQ s | calibration passes s | peak RSS MiB | load avg at start | output |"
echo "|---|---|---|---|---|---|---|---|---|"
for m in "$@"; do
  name=$(basename "$m" .gguf)
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  for r in $(seq 1 "$reps"); do
    for b in old new; do
      bin=$old; [ "$b" = new ] && bin=$new
      log="$work/$name.$b.$r.log"
      /usr/bin/time -f "TIME %e %M %U %S" "$bin" quantize "$m" -o "$work/$name.$b.gguf" --type "$type" --method gptq \
        --calib "$calib" --calib-tokens "${CALIB_TOKENS:-512}" --ctx "${CTX:-512}" --threads "$thr" >"$log" 2>&1
    done
  done
  same=$(cmp -s "$work/$name.old.gguf" "$work/$name.new.gguf" && echo identical || echo differs)
  for b in old new; do
    python3 - "$work" "$name" "$b" "$reps" "$load" "$same" <<'PY'
import re, statistics, sys
work, name, b, reps, load, same = sys.argv[1:]
wall, gq, cal, rss, cpu = [], [], [], [], []
for r in range(1, int(reps) + 1):
    t = open("%s/%s.%s.%d.log" % (work, name, b, r)).read()
    m = re.search(r"TIME ([0-9.]+) ([0-9]+) ([0-9.]+) ([0-9.]+)", t)
    wall.append(float(m.group(1))); rss.append(int(m.group(2)) / 1024); cpu.append(float(m.group(3)) + float(m.group(4)))
    m = re.search(r"calibration passes ([0-9.]+) s, GPTQ ([0-9.]+) s", t); cal.append(float(m.group(1))); gq.append(float(m.group(2)))
md = statistics.median
print("| %s | %s | %.1f | %.1f | %.1f | %.1f | %.0f | %s | %s |" % (name, b, md(wall), md(cpu), md(gq), md(cal), max(rss), load, same))
PY
  done
done
