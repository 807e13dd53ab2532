#!/usr/bin/env bash
# bench/ppl.sh — `nibble ppl` per weight type on the real Gemma 3 270M:
# quantizes the cached Q4_K_M source to each type, saves the source's
# log-probs once, then for every type and thread count runs `nibble ppl --kld`
# and prints one markdown table: type, file size, bpw, PPL, mean KLD,
# same-top-p, prompt-processing tokens/s (forward pass only) and peak RSS
# (GNU time). Medians are not taken: one run per cell (the numbers are
# comparisons on one machine, recorded with the machine load).
#
#   bench/ppl.sh [--nibble BIN] [--types "q8_0 q4_0 q4_k_m nf4"] [--threads "1 2"]
#                [--ctx 512] [--chunks 2] [--out DIR]
#
# Notes: the only real model here is itself 4-bit (Q4_K_M), so every type is a
# requantization and KLD is against that 4-bit source. llama.cpp's own numbers
# on the source come from bench/compare_llamacpp_ppl.py.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nb=$root/build/release/nibble
types="q8_0 q4_0 q4_k_m iq4_nl nf4 int4-g128"
threads="1 2"
ctx=512
chunks=2
out=$root/out/bench-ppl
while (($#)); do
  case $1 in
    --nibble) nb=$2; shift 2 ;;
    --types) types=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --ctx) ctx=$2; shift 2 ;;
    --chunks) chunks=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "bench/ppl.sh: unknown argument $1" >&2; exit 1 ;;
  esac
done
[[ -x $nb ]] || { echo "bench/ppl.sh: no nibble at $nb (build it or pass --nibble)" >&2; exit 1; }
model=$("$root/scripts/fetch-models" --path gemma3-270m) || { echo "bench/ppl.sh: run scripts/fetch-models first" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "bench/ppl.sh: needs GNU time (apt-get install time)" >&2; exit 1; }
text=$root/tests/data/text/eval.txt
mkdir -p "$out"

"$nb" ppl "$model" --text "$text" --ctx "$ctx" --chunks "$chunks" --save-logits "$out/base.bin" --json --quiet \
  >"$out/source.json"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git -C "$root" rev-parse --short HEAD); text: eval.txt, $chunks chunks x $ctx tokens"
echo
echo "| type | size MiB | bpw | threads | PPL | mean KLD | same top p | tokens/s | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
for t in source $types; do
  if [[ $t == source ]]; then f=$model
  else
    f=$out/gemma3-270m-$t.gguf
    [[ -s $f ]] || "$nb" quantize "$model" -o "$f" --type "$t" --quiet --allow-requantize 2>"$out/quantize-$t.log"
  fi
  bpw=$("$nb" inspect "$f" --json | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["bpw"],3))')
  for th in $threads; do
    /usr/bin/time -v "$nb" ppl "$f" --kld "$out/base.bin" --threads "$th" --json --quiet \
      >"$out/$t-t$th.json" 2>"$out/$t-t$th.time"
    rss=$(awk -F: '/Maximum resident set size/ {print int($2/1024)}' "$out/$t-t$th.time")
    python3 - "$out/$t-t$th.json" "$t" "$f" "$bpw" "$th" "$rss" <<'EOF'
import json, os, sys
p = json.load(open(sys.argv[1])); k = p["kld"]
t, f, bpw, th, rss = sys.argv[2:7]
print(f"| {t} | {os.path.getsize(f) / 2**20:.1f} | {bpw} | {th} | {p['ppl']:.4f} ± {p['ppl_err']:.4f} | "
      f"{k['kld_mean']:.5f} ± {k['kld_err']:.5f} | {k['same_top_p_pct']:.2f} % | {p['tokens_per_second']:.1f} | {rss} |")
EOF
  done
done
