#!/usr/bin/env bash
# bench/bigger_than_ram.sh — models larger than this machine's memory (issue 12.3).
#
#   NB_BIN=build/rel/nibble BENCH_DIR=/big/disk/dir SIZE=26G bench/bigger_than_ram.sh [STEP...]
#
# STEPs (default: all, in this order):
#   dense   synth a dense llama of SIZE (F32), measure the disk's direct sequential read
#           speed on it (dd iflag=direct), then: convert to BF16 safetensors, quantize
#           RTN_TYPE (default q4_k_m) by rounding to nearest, quantize IMX_TYPE (default
#           q4_k_m) with an importance matrix
#           (a synthetic legacy .dat covering every weight matrix), merge a synthetic
#           PEFT LoRA (rank 16 on q_proj and v_proj of every layer), written as MERGE_TYPE
#           (default bf16; q4_0 or q8_0 keep the output small when disk is short)
#   merge   only the merge of the dense step (on BENCH_DIR/dense.gguf when it is there)
#   moe     synth a mixtral of MOE_SIZE (default SIZE; F32, 8 experts) and prune it to
#           PRUNE_KEEP experts (default 4; 2 writes a quarter of the experts) (routing
#           statistics from a small mixtral with the same layers and experts)
#   gptq    GPTQ (Q4_K_M, 7B-shaped layers: dim 4096, ff 11008, 32 heads, F16) on a model
#           of GPTQ_LAYERS layers (default 4), calibrated on tests/data/text/calib.txt
#           (GPTQ_TOKENS tokens, default 1024, chunks of 512); the time of the 32-layer 7B
#           is extrapolated from it (per-layer cost x 32)
# Every output is deleted right after it is measured; the sources at the end of their
# step. Disk needed: SIZE for a source plus the largest output (SIZE / 2 for the BF16
# convert and the merge): run it where SIZE * 1.5 + 10 GB are free.
# Each command runs under `nice -n 19` and /usr/bin/time -v; one Markdown row per command
# is printed (and appended to BENCH_DIR/results.md): input and output bytes, seconds,
# input GB/s, peak RSS, bytes written to disk (from the time's "File system outputs"),
# and the load average before and after (the machine may be shared).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nb=${NB_BIN:-$root/build/rel/nibble}
nb=$(cd "$(dirname "$nb")" && pwd)/$(basename "$nb")
dir=${BENCH_DIR:-$root/bench-big}
size=${SIZE:-26G}
gptq_layers=${GPTQ_LAYERS:-4}
gptq_tokens=${GPTQ_TOKENS:-1024}
rtn_type=${RTN_TYPE:-q4_k_m}
imx_type=${IMX_TYPE:-q4_k_m}
merge_type=${MERGE_TYPE:-bf16}
moe_size=${MOE_SIZE:-$size}
keep=${PRUNE_KEEP:-4}
threads=${THREADS:-$(nproc)}
py=${PYTHON:-$("$root/scripts/pyenv" 2>/dev/null || command -v python3)}
steps=${*:-dense moe gptq}
mkdir -p "$dir"
res="$dir/results.md"
[ -x /usr/bin/time ] || { echo "bigger_than_ram: needs /usr/bin/time (Debian: time)" >&2; exit 1; }

row() { echo "$*" | tee -a "$res"; }
bytes() { stat -c %s "$1" 2>/dev/null || du -sb "$1" | cut -f1; }
# measure NAME INPUT OUTPUT CMD...: run CMD, print one row; OUTPUT may be - (none)
measure() {
  local name=$1 in=$2 out=$3; shift 3
  local la0 la1 t0 t1 rc=0
  la0=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(date +%s.%N)
  nice -n 19 /usr/bin/time -v -o "$dir/time.txt" "$@" >"$dir/cmd.log" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  la1=$(cut -d' ' -f1 /proc/loadavg)
  if [ "$rc" != 0 ]; then echo "bigger_than_ram: $name failed (exit $rc):" >&2; tail -5 "$dir/cmd.log" >&2; return 1; fi
  local rss wr ib ob secs
  rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$dir/time.txt")
  wr=$(awk -F': ' '/File system outputs/ {print $2}' "$dir/time.txt")
  ib=$(bytes "$in")
  ob=$([ "$out" = - ] && echo 0 || bytes "$out")
  secs=$(echo "$t1 - $t0" | bc -l)
  row "$(printf '| %s | %s | %s | %.1f | %.3f | %d | %.2f | %s → %s |' "$name" "$ib" "$ob" "$secs" \
    "$(echo "$ib / $secs / 1000000000" | bc -l)" "$((rss / 1024))" "$(echo "$wr * 512 / 1000000000" | bc -l)" "$la0" "$la1")"
}

row ""
row "$(date -u +%FT%TZ) commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo ?), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, SIZE=$size, threads $threads"
row ""
row "| command | input bytes | output bytes | s | input GB/s | peak RSS MiB | written GB | load avg before → after |"
row "|---|---:|---:|---:|---:|---:|---:|---|"

merge_step() { # merge_step SRC: a synthetic PEFT LoRA merged into SRC (tensors.json written)
  local src=$1
  "$nb" inspect "$src" --json > "$dir/tensors.json"
  "$py" - "$dir/tensors.json" "$dir/adapter" <<'EOF'
import json, os, sys
import numpy as np
from safetensors.numpy import save_file
ts = {t["name"]: t for t in json.load(open(sys.argv[1]))["tensors"]}
os.makedirs(sys.argv[2], exist_ok=True)
rng = np.random.default_rng(0); r = 16; d = {}
for name, t in ts.items():
    if not name.startswith("blk.") or not name.endswith((".attn_q.weight", ".attn_v.weight")): continue
    layer = name.split(".")[1]; mod = "q_proj" if "attn_q" in name else "v_proj"
    n_in, n_out = t["ne"]
    p = "base_model.model.model.layers.%s.self_attn.%s" % (layer, mod)
    d[p + ".lora_A.weight"] = (rng.standard_normal((r, n_in)) * 0.01).astype(np.float32)
    d[p + ".lora_B.weight"] = (rng.standard_normal((n_out, r)) * 0.01).astype(np.float32)
save_file(d, os.path.join(sys.argv[2], "adapter_model.safetensors"))
json.dump({"peft_type": "LORA", "r": r, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"]},
          open(os.path.join(sys.argv[2], "adapter_config.json"), "w"))
EOF
  measure "merge LoRA r16 (q,v) → $merge_type gguf" "$src" "$dir/out.gguf" "$nb" merge "$src" --adapter "$dir/adapter" \
    --type "$merge_type" -q -t "$threads" -o "$dir/out.gguf"
  rm -rf "$dir/out.gguf" "$dir/adapter"
}

for step in $steps; do
  case $step in
  dense)
    src="$dir/dense.gguf"
    measure "synth llama $size f32" /dev/null "$src" "$nb" synth --arch llama --size "$size" --dtype f32 --seed 1 -q \
      -t "$threads" -o "$src"
    # the disk's own sequential read speed, page cache bypassed (8 GiB of the source)
    dd if="$src" of=/dev/null bs=16M count=512 iflag=direct 2>"$dir/dd.txt"
    row "| dd iflag=direct (8 GiB of the source) | $(awk '/copied/ {print $1}' "$dir/dd.txt") | - | $(awk '/copied/ {print $(NF-3)}' "$dir/dd.txt" | tr -d ,) | $(awk '/copied/ {print $(NF-1), $NF}' "$dir/dd.txt") | - | - | $(cut -d' ' -f1 /proc/loadavg) |"
    measure "convert → bf16 safetensors" "$src" "$dir/out.safetensors" "$nb" convert "$src" --type bf16 -q -t "$threads" \
      -o "$dir/out.safetensors"
    rm -f "$dir/out.safetensors"
    measure "quantize $rtn_type (round to nearest)" "$src" "$dir/out.gguf" "$nb" quantize "$src" --type "$rtn_type" -q \
      -t "$threads" -o "$dir/out.gguf"
    rm -f "$dir/out.gguf"
    "$nb" inspect "$src" --json > "$dir/tensors.json"
    "$py" - "$dir/tensors.json" "$dir/imatrix.dat" <<'EOF'
import json, struct, sys, random
ts = json.load(open(sys.argv[1]))["tensors"]
ents = [t for t in ts if t["name"].startswith("blk.") and len(t["ne"]) == 2]
rnd = random.Random(0)
out = [struct.pack("<i", len(ents))]
for t in ents:
    n = t["name"].encode(); k = t["ne"][0]
    out += [struct.pack("<i", len(n)), n, struct.pack("<ii", 1, k), struct.pack("<%df" % k, *[rnd.uniform(0.1, 4) for _ in range(k)])]
out += [struct.pack("<i", 1), struct.pack("<i", 4), b"synt"]
open(sys.argv[2], "wb").write(b"".join(out))
EOF
    measure "quantize $imx_type --imatrix" "$src" "$dir/out.gguf" "$nb" quantize "$src" --type "$imx_type" --imatrix \
      "$dir/imatrix.dat" -q -t "$threads" -o "$dir/out.gguf"
    rm -f "$dir/out.gguf"
    merge_step "$src"
    rm -rf "$dir/imatrix.dat" "$src"
    ;;
  moe)
    src="$dir/moe.gguf"
    measure "synth mixtral $moe_size f32 (8 experts)" /dev/null "$src" "$nb" synth --arch mixtral --size "$moe_size" --experts 8 \
      --experts-used 2 --dtype f32 --seed 2 -q -t "$threads" -o "$src"
    layers=$("$nb" inspect "$src" --json | "$py" -c 'import json, sys; m = json.load(sys.stdin)["metadata"]; print([v for k, v in m.items() if k.endswith(".block_count")][0])')
    "$nb" synth --arch mixtral --layers "$layers" --dim 64 --ff 64 --heads 4 --kv-heads 2 --experts 8 --experts-used 2 \
      --vocab 300 --dtype f32 -q -o "$dir/moe-small.gguf"
    "$nb" calibrate "$dir/moe-small.gguf" --calib "$root/tests/data/text/calib.txt" --ctx 64 --calib-tokens 512 -q \
      -o "$dir/moe.stats.gguf"
    measure "prune mixtral 8 → $keep experts" "$src" "$dir/out.gguf" "$nb" prune "$src" --stats "$dir/moe.stats.gguf" --keep "$keep" \
      -q -t "$threads" -o "$dir/out.gguf"
    rm -f "$dir/out.gguf" "$src" "$dir/moe-small.gguf" "$dir/moe.stats.gguf"
    ;;
  gptq)
    src="$dir/gptq7b.gguf"
    measure "synth llama 7B-shaped, $gptq_layers layers f16" /dev/null "$src" "$nb" synth --arch llama --layers "$gptq_layers" \
      --dim 4096 --ff 11008 --heads 32 --kv-heads 32 --vocab 32000 --dtype f16 --seed 3 -q -t "$threads" -o "$src"
    measure "quantize q4_k_m --method gptq ($gptq_layers layers, $gptq_tokens tokens)" "$src" "$dir/out.gguf" "$nb" quantize \
      "$src" --type q4_k_m --method gptq --calib "$root/tests/data/text/calib.txt" --calib-tokens "$gptq_tokens" --ctx 512 \
      -q -t "$threads" -o "$dir/out.gguf"
    rm -f "$dir/out.gguf" "$src"
    ;;
  merge) # the merge alone, on the dense source of an earlier (interrupted) dense step
    src="$dir/dense.gguf"
    [ -s "$src" ] || measure "synth llama $size f32" /dev/null "$src" "$nb" synth --arch llama --size "$size" --dtype f32 \
      --seed 1 -q -t "$threads" -o "$src"
    merge_step "$src"
    rm -f "$src"
    ;;
  *) echo "bigger_than_ram: unknown step '$step' (dense, merge, moe, gptq)" >&2; exit 1 ;;
  esac
done
