#!/usr/bin/env bash
# Memory bounded by the largest tensor, not by the model (issue 12.3, CI's small
# version of bench/bigger_than_ram.sh): convert, quantize (round to nearest and
# with an importance matrix), merge and prune run on a model of 2 layers and on
# one of 16 layers of the same shapes; the peak RSS of the big run may exceed
# the small one's by at most a quarter of the difference in file size (reading
# every tensor into memory, or keeping the mapped input resident, costs all of
# it). Needs NB_BIN (set by ctest) and GNU time; python3 writes the adapter.
set -uo pipefail
. "$(dirname "$0")/common.bash"
calib="$NB_TEST_DATA/text/calib.txt"
[ -x /usr/bin/time ] || { echo "SKIP: needs GNU time (/usr/bin/time, Debian package time)"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: needs python3 to write the LoRA adapter"; exit 77; }
# ASan keeps freed blocks in a quarantine (256 MB by default) that would count as growth
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=4"

peak_kb() { # peak_kb CMD...: run CMD under GNU time; prints its peak RSS in KiB (empty on failure)
  /usr/bin/time -f '%M' -o "$tmp/rss" "$@" >"$tmp/out" 2>"$tmp/err" || { sed 's/^/  | /' "$tmp/err" | head -3 >&2; return 1; }
  tail -1 "$tmp/rss"
}
shape=(--dim 512 --ff 1024 --heads 8 --kv-heads 4 --vocab 1000 --dtype f32 --seed 5 -q)
moe=(--arch mixtral --dim 256 --ff 256 --heads 4 --kv-heads 2 --experts 8 --experts-used 2 --vocab 1000 --dtype f32 -q)
for L in 2 16; do
  check "synth llama $L layers" 0 "$nb" synth --arch llama --layers $L "${shape[@]}" -o "$tmp/m$L.gguf"
  check "synth mixtral $L layers" 0 "$nb" synth "${moe[@]}" --layers $L -o "$tmp/e$L.gguf"
done
check "calibrate (imatrix)" 0 "$nb" calibrate "$tmp/m2.gguf" --calib "$calib" --ctx 32 --calib-tokens 64 -q -o "$tmp/im.gguf"
check "calibrate (routing)" 0 "$nb" calibrate "$tmp/e2.gguf" --calib "$calib" --ctx 32 --calib-tokens 64 -q -o "$tmp/st2.gguf"
check "calibrate (routing, 16)" 0 "$nb" calibrate "$tmp/e16.gguf" --calib "$calib" --ctx 32 --calib-tokens 64 -q \
  -o "$tmp/st16.gguf"
# a PEFT LoRA on layer 0's q_proj (the same for both models)
python3 - "$tmp/lora" <<'EOF'
import json, os, struct, sys
d = sys.argv[1]; os.makedirs(d)
r, n = 4, 512
p = "base_model.model.model.layers.0.self_attn.q_proj."
tensors = [(p + "lora_A.weight", [r, n]), (p + "lora_B.weight", [n, r])]
hdr, off, data = {}, 0, b""
for i, (name, shape) in enumerate(tensors):
    k = shape[0] * shape[1]
    hdr[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + 4 * k]}
    data += struct.pack("<%df" % k, *[0.001 * ((j * 7 + i) % 13 - 6) for j in range(k)])
    off += 4 * k
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
open(os.path.join(d, "adapter_model.safetensors"), "wb").write(struct.pack("<Q", len(h)) + h + data)
json.dump({"peft_type": "LORA", "r": r, "lora_alpha": 8, "target_modules": ["q_proj"]},
          open(os.path.join(d, "adapter_config.json"), "w"))
EOF

bounded() { # [SHARE=N] bounded WHAT SMALL_MODEL BIG_MODEL CMD_SMALL... -- CMD_BIG...: growth <= size growth / N (4)
  local what=$1 small=$2 big=$3 share=${SHARE:-4}; shift 3
  local a=() b=() in_b=0 x
  for x in "$@"; do if [ "$x" = -- ]; then in_b=1; elif [ $in_b = 1 ]; then b+=("$x"); else a+=("$x"); fi; done
  local r1 r2 s1 s2
  r1=$(peak_kb "${a[@]}") && r2=$(peak_kb "${b[@]}") || { echo "FAIL: $what: a run failed"; fail=1; return; }
  s1=$(stat -c %s "$small"); s2=$(stat -c %s "$big")
  local grow=$(( (r2 - r1) * 1024 )) allowed=$(( (s2 - s1) / share ))
  if [ "$grow" -le "$allowed" ]; then
    echo "ok: $what: peak RSS $((r1 / 1024)) -> $((r2 / 1024)) MiB for models of $((s1 >> 20)) -> $((s2 >> 20)) MiB"
  else
    echo "FAIL: $what: peak RSS grew by $((grow >> 20)) MiB (allowed $((allowed >> 20))) for models of $((s1 >> 20)) -> $((s2 >> 20)) MiB"
    fail=1
  fi
}
bounded "convert gguf -> gguf f16" "$tmp/m2.gguf" "$tmp/m16.gguf" \
  "$nb" convert "$tmp/m2.gguf" --type f16 -q -o "$tmp/c2.gguf" -- "$nb" convert "$tmp/m16.gguf" --type f16 -q -o "$tmp/c16.gguf"
# Another order than the input's (safetensors sorts by name; prune): a fault maps neighbours'
# pages too (fault-around, large folios), which stayed resident until their own tensor's turn,
# and RSS grew with the tensor count (21 -> 73 -> 183 MiB for 2, 16, 48 layers); released with
# the tensor now (formats/convert.c: 14 MiB for each).
bounded "convert gguf -> safetensors" "$tmp/m2.gguf" "$tmp/m16.gguf" \
  "$nb" convert "$tmp/m2.gguf" -q -o "$tmp/c2.safetensors" -- "$nb" convert "$tmp/m16.gguf" -q -o "$tmp/c16.safetensors"
bounded "convert safetensors -> gguf" "$tmp/c2.safetensors" "$tmp/c16.safetensors" \
  "$nb" convert "$tmp/c2.safetensors" -q -o "$tmp/d2.gguf" -- "$nb" convert "$tmp/c16.safetensors" -q -o "$tmp/d16.gguf"
rm -f "$tmp"/c*.gguf "$tmp"/c*.safetensors "$tmp"/d*.gguf
bounded "quantize q8_0" "$tmp/m2.gguf" "$tmp/m16.gguf" \
  "$nb" quantize "$tmp/m2.gguf" --type q8_0 -q -o "$tmp/q2.gguf" -- "$nb" quantize "$tmp/m16.gguf" --type q8_0 -q -o "$tmp/q16.gguf"
bounded "quantize q4_0 --imatrix" "$tmp/m2.gguf" "$tmp/m16.gguf" \
  "$nb" quantize "$tmp/m2.gguf" --type q4_0 --imatrix "$tmp/im.gguf" -q -o "$tmp/q2.gguf" -- \
  "$nb" quantize "$tmp/m16.gguf" --type q4_0 --imatrix "$tmp/im.gguf" -q -o "$tmp/q16.gguf"
rm -f "$tmp"/q*.gguf
bounded "merge LoRA -> f16" "$tmp/m2.gguf" "$tmp/m16.gguf" \
  "$nb" merge "$tmp/m2.gguf" --adapter "$tmp/lora" --type f16 -q -o "$tmp/g2.gguf" -- \
  "$nb" merge "$tmp/m16.gguf" --adapter "$tmp/lora" --type f16 -q -o "$tmp/g16.gguf"
rm -f "$tmp"/g*.gguf
bounded "prune 8 -> 4 experts" "$tmp/e2.gguf" "$tmp/e16.gguf" \
  "$nb" prune "$tmp/e2.gguf" --stats "$tmp/st2.gguf" --keep 4 -q -o "$tmp/p2.gguf" -- \
  "$nb" prune "$tmp/e16.gguf" --stats "$tmp/st16.gguf" --keep 4 -q -o "$tmp/p16.gguf"
echo "done"
exit $fail
