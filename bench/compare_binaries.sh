#!/usr/bin/env bash
# bench/compare_binaries.sh OLD_NIBBLE NEW_NIBBLE [OUTDIR]
# Proves a refactor changed no output byte: the same synthetic suite (every
# architecture, F16/F32/BF16 sources, GGUF and HF-directory inputs) and the
# real models (when scripts/fetch-models has them) are converted and
# quantized to every mix family by both binaries, and the sha256 of each
# output is compared. Prints one line per case and a final count; exit 1 on
# any difference.
set -euo pipefail
old=$1 new=$2
out=${3:-$(mktemp -d)}
mkdir -p "$out/src" "$out/old" "$out/new"
models=${NB_MODELS_DIR:-$HOME/.cache/nibble/models}
n=0 diff=0
sum() { sha256sum "$1" | cut -c1-64; }
both() { [ -f "$1" ] && [ -f "$2" ] || { echo "missing output: $1 or $2"; exit 2; }; }
# run LABEL OUTNAME ARGS... : ARGS with @OUT@ replaced by each binary's output path
run() {
  local label=$1 name=$2; shift 2
  local a=() b=()
  for x in "$@"; do a+=("${x//@OUT@/$out/old/$name}"); b+=("${x//@OUT@/$out/new/$name}"); done
  "$old" "${a[@]}" --quiet >/dev/null 2>"$out/old/$name.err" || { echo "old binary failed: $label"; cat "$out/old/$name.err"; exit 2; }
  "$new" "${b[@]}" --quiet >/dev/null 2>"$out/new/$name.err" || { echo "new binary failed: $label"; cat "$out/new/$name.err"; exit 2; }
  n=$((n + 1))
  both "$out/old/$name" "$out/new/$name"
  if [ "$(sum "$out/old/$name")" = "$(sum "$out/new/$name")" ]; then echo "same  $(sum "$out/new/$name" | cut -c1-16)  $label"
  else echo "DIFF  $label"; diff=$((diff + 1)); fi
}
srcs=()
for arch in llama qwen2 qwen3 mixtral qwen2moe qwen3moe gemma3; do
  "$old" synth --arch "$arch" --layers 2 --dim 256 --ff 512 --seed 7 -o "$out/src/$arch.gguf" --quiet
  srcs+=("$out/src/$arch.gguf")
done
"$old" synth --arch llama --dtype f32 --dim 512 --ff 1024 -o "$out/src/llama-f32.gguf" --quiet
"$old" synth --arch qwen2 --dtype bf16 -o "$out/src/qwen2-bf16.gguf" --quiet
"$old" synth --arch mixtral -o "$out/src/mixtral-hf" --quiet
srcs+=("$out/src/llama-f32.gguf" "$out/src/qwen2-bf16.gguf" "$out/src/mixtral-hf")
for s in "${srcs[@]}"; do
  b=$(basename "$s")
  for t in f16 bf16; do run "convert $b --type $t" "$b.$t.gguf" convert "$s" -o @OUT@ --type "$t"; done
  run "convert $b -> safetensors" "$b.safetensors" convert "$s" -o @OUT@
  for m in q4_k_m q3_k_s q5_k_m q6_k q8_0 q4_0 q5_1 iq4_xs iq4_nl nf4 nf4-dq int4-g32 int4-asym-g64 int4-g128; do
    run "quantize $b $m" "$b.$m.gguf" quantize "$s" -o @OUT@ --type "$m" --threads 2
  done
  run "quantize $b q4_k_m --pure --rule" "$b.rule.gguf" quantize "$s" -o @OUT@ --type q4_k_m --pure \
    --rule 'blk.*.ffn_down.weight=q8_0' --rule 're:attn_v=q6_k'
done
# calibrated methods on two synthetic models: imatrix file, imatrix from text, GPTQ
root=$(cd "$(dirname "$0")/.." && pwd)
calib="$root/tests/data/text/calib.txt"
for arch in llama qwen2moe gemma3; do
  s="$out/src/$arch.gguf"
  "$old" calibrate "$s" --calib "$calib" --ctx 64 --calib-tokens 1024 -o "$out/src/$arch.imatrix.gguf" --quiet
  for m in q4_k_m iq4_xs nf4; do
    run "quantize $arch $m --imatrix" "$arch.imx.$m.gguf" quantize "$s" -o @OUT@ --type "$m" --imatrix "$out/src/$arch.imatrix.gguf"
  done
  run "quantize $arch q4_k_m --method imatrix --calib" "$arch.imxc.gguf" quantize "$s" -o @OUT@ --type q4_k_m \
    --method imatrix --calib "$calib" --ctx 64 --calib-tokens 1024
  for m in q4_0 int4-g32; do
    run "quantize $arch $m --method gptq" "$arch.gptq.$m.gguf" quantize "$s" -o @OUT@ --type "$m" --method gptq \
      --calib "$calib" --ctx 64 --calib-tokens 512 --act-order
  done
done
# requantization needs --allow-requantize in binaries that have it; older ones only warned
extra=(); help=$("$new" quantize --help)
[[ $help == *--allow-requantize* ]] && extra=(--allow-requantize)
extra_old=(); help=$("$old" quantize --help)
[[ $help == *--allow-requantize* ]] && extra_old=(--allow-requantize)
for f in gemma-3-270m-Q4_K_M.gguf SmolLM2-135M-Instruct.Q4_1.gguf; do
  [ -f "$models/$f" ] || { echo "skip  $f: not fetched (scripts/fetch-models)"; continue; }
  for m in q4_k_m q8_0 iq4_xs nf4 int4-g128; do
    a=("$out/old/$f.$m.gguf") b=("$out/new/$f.$m.gguf")
    "$old" quantize "$models/$f" -o "$a" --type "$m" --quiet "${extra_old[@]}" 2>/dev/null
    "$new" quantize "$models/$f" -o "$b" --type "$m" --quiet "${extra[@]}" 2>/dev/null
    n=$((n + 1))
    both "$a" "$b"
    if [ "$(sum "$a")" = "$(sum "$b")" ]; then echo "same  $(sum "$b" | cut -c1-16)  quantize $f $m"
    else echo "DIFF  quantize $f $m"; diff=$((diff + 1)); fi
    rm -f "$a" "$b"
  done
done
echo "$n outputs compared, $diff differ"
[ "$diff" = 0 ]
