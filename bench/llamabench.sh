#!/usr/bin/env bash
# bench/llamabench.sh — whole-model speed, nibble vs llama.cpp's llama-bench,
# on the same GGUF files: prompt processing of 512 tokens (pp512) and
# generation of 128 tokens (tg128), tokens/s at 1 and 2 threads, one
# markdown table with the ratios (nibble / llama.cpp: > 1 means nibble is
# faster). About 10 minutes on an idle 2-core machine.
#
#   LLAMA_BIN=DIR [NB_BIN=build/rel/nibble] [MODELS=~/.cache/nibble/models]
#   [WORK=/tmp/nibble-llamabench] [THREADS="1 2"] [REPS=3] [KV=f16] [FILES="..."]
#   bench/llamabench.sh
#
# LLAMA_BIN: the directory holding llama-bench (without it only nibble runs).
# Files: the real models' own types (Gemma 3 270M Q4_K_M, SmolLM2-135M Q4_1)
# and variants that `nibble quantize --allow-requantize` makes from them once
# (kept in WORK): Q8_0, Q4_K_M, Q4_0, and NF4 (nibble only: its row's
# llama.cpp figures are those of the Q4_0 file, llama.cpp's type of the same
# 4.5 bits per weight; the NF4 file keeps the embeddings / output in Q8_0 as
# the Q4_0 mix does, so the two differ only in the layers' matrices).
# Both tools: one warm-up, REPS timed runs, mean tokens/s (llama-bench's
# avg_ts; nibble: `nibble run --bench`, the same tests: pp = 512 tokens from an
# empty cache, logits of the last one; tg = 128 single-token steps from an empty
# cache); KV cache F16 on both (llama-bench's default), llama-bench's other
# defaults (flash attention auto, weight repacking on). The two tools run
# interleaved per file and thread count; the load average is printed per row,
# so rows taken while the machine was busy can be told apart.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nb=${NB_BIN:-$root/build/rel/nibble}
models=${MODELS:-$HOME/.cache/nibble/models}
work=${WORK:-${TMPDIR:-/tmp}/nibble-llamabench}
threads=${THREADS:-1 2}
reps=${REPS:-3}
kv=${KV:-f16}
lb=${LLAMA_BIN:+$LLAMA_BIN/llama-bench}
[ -x "$nb" ] || { echo "llamabench: no nibble binary at $nb (set NB_BIN)" >&2; exit 1; }
if [ -n "$lb" ] && [ ! -x "$lb" ]; then echo "llamabench: no llama-bench in $LLAMA_BIN" >&2; exit 1; fi
[ -n "$lb" ] || echo "llamabench: LLAMA_BIN not set: nibble only" >&2
mkdir -p "$work"

gemma=$models/gemma-3-270m-Q4_K_M.gguf
smol=$models/SmolLM2-135M-Instruct.Q4_1.gguf
for f in "$gemma" "$smol"; do [ -f "$f" ] || { echo "llamabench: missing $f (scripts/fetch-models)" >&2; exit 1; }; done

# variant NAME SRC MIX -> path (made once)
variant() {
  local out=$work/$1.gguf name=$1 src=$2 mix=$3
  shift 3
  [ -f "$out" ] || "$nb" quantize "$src" -o "$out" --type "$mix" --allow-requantize -q "$@" >&2
  echo "$out"
}
# label path nibble-only
default_files="gemma-q4_k_m:$gemma smollm2-q4_1:$smol"
for spec in gemma:"$gemma" smollm2:"$smol"; do
  name=${spec%%:*}; src=${spec#*:}
  default_files+=" $name-q8_0:$(variant "$name-q8_0" "$src" q8_0)"
  [ "$name" = smollm2 ] && default_files+=" $name-q4_k_m:$(variant "$name-q4_k_m" "$src" q4_k_m)"
  default_files+=" $name-q4_0:$(variant "$name-q4_0" "$src" q4_0)"
  default_files+=" $name-nf4:$(variant "$name-nf4" "$src" nf4 --runtime nibble \
    --rule token_embd.weight=q8_0 --rule output.weight=q8_0)"
done
files=${FILES:-$default_files}

load() { cut -d' ' -f1 /proc/loadavg; }

echo "nibble commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?') ($nb);" \
  "llama-bench from ${LLAMA_BIN:-(none)}; $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //');" \
  "$(date -u +%FT%TZ); reps $reps, KV $kv"
echo
echo "| file | threads | llama.cpp pp512 t/s | nibble pp512 t/s | pp ratio | llama.cpp tg128 t/s | nibble tg128 t/s | tg ratio | load avg |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for spec in $files; do
  label=${spec%%:*}; f=${spec#*:}
  for t in $threads; do
    l0=$(load)
    lpp=n/a ltg=n/a
    lf=$f
    [[ $label == *-nf4 ]] && lf=$work/${label%-nf4}-q4_0.gguf
    if [ -n "$lb" ] && [ -f "$lf" ]; then
      read -r lpp ltg < <("$lb" -m "$lf" -p 512 -n 128 -t "$t" -r "$reps" -ctk "$kv" -ctv "$kv" -o jsonl 2>/dev/null | python3 -c '
import json, sys
pp = tg = "n/a"
for line in sys.stdin:
    r = json.loads(line)
    if r["n_prompt"] and not r["n_gen"]: pp = "%.1f" % r["avg_ts"]
    if r["n_gen"] and not r["n_prompt"]: tg = "%.1f" % r["avg_ts"]
print(pp, tg)')
    fi
    read -r npp ntg < <("$nb" run "$f" --bench -P 512 -n 128 --reps "$reps" --kv-type "$kv" -t "$t" -q | python3 -c '
import json, sys
r = json.loads(sys.stdin.readline())
print("%.1f %.1f" % (r["pp_tps"], r["tg_tps"]))')
    l1=$(load)
    python3 - "$label" "$t" "$lpp" "$npp" "$ltg" "$ntg" "$l0" "$l1" <<'EOF'
import sys
label, t, lpp, npp, ltg, ntg, l0, l1 = sys.argv[1:]
def ratio(n, l):
    return "%.2f" % (float(n) / float(l)) if l != "n/a" and n != "n/a" else "n/a"
if label.endswith("-nf4"): label += " (llama.cpp: q4_0)"
print(f"| {label} | {t} | {lpp} | {npp} | {ratio(npp, lpp)} | {ltg} | {ntg} | {ratio(ntg, ltg)} | {l0}–{l1} |")
EOF
  done
done
