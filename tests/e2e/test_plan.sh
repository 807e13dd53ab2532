#!/usr/bin/env bash
# `nibble plan` and `nibble quantize --target-size/--target-bpw/--budget` end
# to end: the plan applied by quantize --plan gives a file of exactly the
# predicted size, within the budget; plan-and-apply in one go writes the same
# bytes; smaller budgets never give larger files; the same plan at 1 and 2
# threads; --calib and --imatrix weighting; bad input (a budget below the
# smallest file, --ctx beyond the model's context, an imatrix lacking
# tensors, a plan for another model, usage errors) exits non-zero with one
# line and writes nothing. Needs NB_BIN (set by ctest).
set -uo pipefail
. "$(dirname "$0")/common.bash"
data=${NB_TEST_DATA:-$(dirname "$0")/../data}
one_line() { [ "$(wc -l < "$tmp/err")" = 1 ] || { echo "FAIL: expected one line on stderr:"; sed 's/^/  | /' "$tmp/err"; fail=1; }; }
num() { grep -oE "\"$1\":[0-9.e+-]+" "$2" | head -1 | sed 's/.*://'; }

check "plan --help" 0 "$nb" plan --help
for o in --target-size --target-bpw --budget --ctx --kv-type --runtime --imatrix --calib; do has "$o" "$tmp/out"; done
check "nibble --help lists plan" 0 "$nb" --help
has "plan" "$tmp/out"

src="$tmp/s.gguf" other="$tmp/o.gguf" deep="$tmp/d.gguf"
check "synth" 0 "$nb" synth --arch llama --layers 2 --dim 256 --ff 512 --heads 4 --kv-heads 2 --vocab 300 --dtype f32 --seed 2 -o "$src"
check "synth other" 0 "$nb" synth --arch llama --layers 2 --dim 256 --ff 768 --heads 4 --kv-heads 2 --vocab 300 --dtype f32 -o "$other"
check "synth deeper" 0 "$nb" synth --arch llama --layers 3 --dim 256 --ff 512 --heads 4 --kv-heads 2 --vocab 300 --dtype f32 -o "$deep"
check "q4_k_m reference" 0 "$nb" quantize "$src" --type q4_k_m -o "$tmp/q4km.gguf" --quiet
target=$(stat -c %s "$tmp/q4km.gguf")

# a plan at q4_k_m's size, applied: exactly the predicted size, within the target
check "plan --target-size" 0 "$nb" plan "$src" --target-size "$target" -o "$tmp/p.json" --json
cp "$tmp/out" "$tmp/p.out"
has '"nibble_plan":1' "$tmp/p.json"
has '"why":"budget"' "$tmp/p.json"
has '"mix":"budget"' "$tmp/p.json"
pred=$(num file_bytes "$tmp/p.out")
check "apply the plan" 0 "$nb" quantize "$src" --plan "$tmp/p.json" -o "$tmp/fromplan.gguf" --quiet
got=$(stat -c %s "$tmp/fromplan.gguf")
[ "$pred" = "$got" ] || { echo "FAIL: predicted $pred bytes, written $got"; fail=1; }
[ "$got" -le "$target" ] || { echo "FAIL: written $got > target $target"; fail=1; }
check "quantize --target-size" 0 "$nb" quantize "$src" --target-size "$target" -o "$tmp/direct.gguf"
has "budget: predicted file $got bytes, written $got" "$tmp/out"
cmp -s "$tmp/fromplan.gguf" "$tmp/direct.gguf" || { echo "FAIL: quantize --target-size differs from plan + --plan"; fail=1; }
check "plan table" 0 "$nb" plan "$src" --target-size "$target"
for w in "tensor group" "attn_q.weight" "ffn_down.weight" "pred. loss" "file " "total "; do has "$w" "$tmp/out"; done

# a Hugging Face directory source: the same exactness (its metadata is mapped, then written)
check "synth HF dir" 0 "$nb" synth --arch qwen2 --layers 2 --dim 256 --ff 512 --heads 4 --kv-heads 2 --vocab 300 -o "$tmp/hf"
check "plan HF dir" 0 "$nb" plan "$tmp/hf" --target-size 900K -o "$tmp/ph.json" --json -q
pred=$(num file_bytes "$tmp/out")
check "apply HF dir plan" 0 "$nb" quantize "$tmp/hf" --plan "$tmp/ph.json" -o "$tmp/ph.gguf" -q
[ "$pred" = "$(stat -c %s "$tmp/ph.gguf")" ] || { echo "FAIL: HF dir: predicted $pred, written $(stat -c %s "$tmp/ph.gguf")"; fail=1; }

# smaller budgets never give larger files
prev=999999999
for frac in 100 90 80 70 60; do
  b=$((target * frac / 100))
  check "plan at $frac%" 0 "$nb" plan "$src" --target-size "$b" --json -q
  f=$(num file_bytes "$tmp/out")
  [ "$f" -le "$b" ] || { echo "FAIL: file $f > budget $b"; fail=1; }
  [ "$f" -le "$prev" ] || { echo "FAIL: budget $b gave $f > $prev of a larger budget"; fail=1; }
  prev=$f
done

# determinism: same plan at 1 and 2 threads
check "plan -t 1" 0 "$nb" plan "$src" --target-bpw 4.5 -o "$tmp/t1.json" -t 1 -q
check "plan -t 2" 0 "$nb" plan "$src" --target-bpw 4.5 -o "$tmp/t2.json" -t 2 -q
cmp -s "$tmp/t1.json" "$tmp/t2.json" || { echo "FAIL: plans differ between 1 and 2 threads"; fail=1; }
check "quantize --target-bpw" 0 "$nb" quantize "$src" --target-bpw 4.5 -o "$tmp/bpw.gguf" --json
bpw=$(num bpw_out "$tmp/out")
awk "BEGIN { exit !($bpw <= 4.5) }" || { echo "FAIL: bpw $bpw > 4.5"; fail=1; }

# memory budget: the totals add up and fit
check "plan --budget" 0 "$nb" plan "$src" --budget 64MiB --ctx 2048 --kv-type q8_0 --overhead 1MiB --json
for k in kv_bytes compute_bytes '"kv_type":"q8_0"' '"ctx":2048'; do has "$k" "$tmp/out"; done
tot=$(num total_bytes "$tmp/out")
[ "$tot" -le $((64 * 1048576)) ] || { echo "FAIL: total $tot > 64 MiB"; fail=1; }
check "quantize --budget" 0 "$nb" quantize "$src" --budget 64MiB --budget-ctx 2048 --overhead 1MiB -o "$tmp/mem.gguf" --quiet

# importance: collected from text, or read from a file (the same plan either way)
calib="$data/text/calib.txt"
check "plan --calib" 0 "$nb" plan "$src" --calib "$calib" --calib-ctx 32 --calib-tokens 256 --target-bpw 4.5 -o "$tmp/pc.json" -q
check "calibrate" 0 "$nb" calibrate "$src" --calib "$calib" --ctx 32 --calib-tokens 256 -o "$tmp/im.gguf" -q
check "plan --imatrix" 0 "$nb" plan "$src" --imatrix "$tmp/im.gguf" --target-bpw 4.5 -o "$tmp/pi.json" -q
# the same types (errors differ in the last digits: the file stores the sums as f32)
types() { grep -oE '"name":"[^"]*","shape":\[[0-9,]*\],"src_type":"[^"]*","type":"[^"]*"' "$1"; }
[ "$(types "$tmp/pc.json")" = "$(types "$tmp/pi.json")" ] && [ -n "$(types "$tmp/pi.json")" ] ||
  { echo "FAIL: --calib and --imatrix of the same text plan differently"; fail=1; }
check "quantize --imatrix --target-size" 0 "$nb" quantize "$src" --imatrix "$tmp/im.gguf" --target-size "$target" -o "$tmp/imq.gguf" -q
[ "$(stat -c %s "$tmp/imq.gguf")" -le "$target" ] || { echo "FAIL: imatrix plan over target"; fail=1; }

# bad input: one line, non-zero, nothing written
check "budget below the smallest file" 2 "$nb" plan "$src" --target-size 100K -o "$tmp/x.json"
one_line; has "smallest achievable" "$tmp/err"
[ -e "$tmp/x.json" ] && { echo "FAIL: refused plan wrote a file"; fail=1; }
check "quantize below the smallest file" 2 "$nb" quantize "$src" --target-size 100K -o "$tmp/x.gguf"
one_line; [ -e "$tmp/x.gguf" ] && { echo "FAIL: refused quantize wrote a file"; fail=1; }
check "--ctx beyond the model" 2 "$nb" plan "$src" --budget 1GiB --ctx 100000 -o "$tmp/x.json"
one_line; has "larger than the model's context" "$tmp/err"
check "imatrix lacking tensors" 2 "$nb" plan "$deep" --imatrix "$tmp/im.gguf" --target-bpw 4.5 -o "$tmp/x.json" -q
one_line; has "no entry for tensor 'blk.2." "$tmp/err"
[ -e "$tmp/x.json" ] && { echo "FAIL: refused plan wrote a file"; fail=1; }
check "plan for another model" 1 "$nb" quantize "$other" --plan "$tmp/p.json" -o "$tmp/x.gguf"
one_line; has "another model" "$tmp/err"
[ -e "$tmp/x.gguf" ] && { echo "FAIL: refused plan wrote a file"; fail=1; }
check "no target" 1 "$nb" plan "$src"
check "two targets" 1 "$nb" plan "$src" --target-size 1M --target-bpw 4
check "--budget without --ctx" 1 "$nb" plan "$src" --budget 1GiB
check "--ctx without --budget" 1 "$nb" plan "$src" --target-size 1M --ctx 512
check "budget with --type" 1 "$nb" quantize "$src" --type q4_k_m --target-size 1M -o "$tmp/x.gguf"
check "--imatrix and --calib" 1 "$nb" plan "$src" --target-size 1M --imatrix "$tmp/im.gguf" --calib "$calib"
[ -e "$tmp/x.gguf" ] && { echo "FAIL: a refused command wrote a file"; fail=1; }
echo "done"
exit $fail
