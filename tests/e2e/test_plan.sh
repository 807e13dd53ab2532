#!/usr/bin/env bash
# `nibble plan` and `nibble quantize --target-size/--target-bpw/--budget` end
# to end: the plan applied by quantize --plan gives a file of exactly the
# predicted size, within the budget; plan-and-apply in one go writes the same
# bytes; smaller budgets never give larger files; the same plan at 1 and 2
# threads; --calib and --imatrix weighting; --method mixed (the table's
# methods column, the plan's per-tensor methods, applied by quantize --plan);
# bad input (a budget below the
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

# methods mixed per tensor: the table says which, the plan records it, quantize --plan applies it
mixed=(plan "$src" --imatrix "$tmp/im.gguf" --calib "$calib" --calib-ctx 32 --calib-tokens 256 --target-bpw 4.5 --method mixed)
check "plan --method mixed --json" 0 "$nb" "${mixed[@]}" --json
half=$(awk -v a="$(num pred_seconds_all_gptq "$tmp/out")" -v r="$(num pred_seconds_round "$tmp/out")" \
  'BEGIN { printf "%.9f", (a - r) / 2 }')
check "plan --method mixed" 0 "$nb" "${mixed[@]}" --method-time-budget "$half" -o "$tmp/pm.json"
has "methods" "$tmp/out"; has "gptq:" "$tmp/out"; has "imatrix:" "$tmp/out"
grep -q '"method":"gptq"' "$tmp/pm.json" && grep -q '"method":"imatrix"' "$tmp/pm.json" ||
  { echo "FAIL: the mixed plan does not record both methods"; fail=1; }
[ "$(types "$tmp/pm.json")" = "$(types "$tmp/pi.json")" ] ||
  { echo "FAIL: --method mixed changed the types"; fail=1; }
check "quantize --plan mixed" 0 "$nb" quantize "$src" --plan "$tmp/pm.json" --imatrix "$tmp/im.gguf" --method mixed \
  --calib "$calib" --ctx 32 --calib-tokens 256 -o "$tmp/pm.gguf"
has "by gptq" "$tmp/out"
check "--method mixed without --calib" 1 "$nb" plan "$src" --target-bpw 4.5 --method mixed -o "$tmp/x.json"
one_line; has "--calib" "$tmp/err"
check "--method-time-budget without mixed" 1 "$nb" plan "$src" --target-bpw 4.5 --method-time-budget 3 -o "$tmp/x.json"
one_line
check "quantize --method mixed without a budget" 1 "$nb" quantize "$src" --type q4_0 --method mixed \
  --calib "$calib" -o "$tmp/x.gguf"
one_line; has "size budget" "$tmp/err"
[ -e "$tmp/x.json" ] && { echo "FAIL: refused plan wrote a file"; fail=1; }

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

# calibrated predictions: each tensor group's errors scaled by the engine's KLD with that group alone
# quantized; the table and the JSON give every group's factor = KLD / predicted error, and the plan
# still lands within the target, applied to exactly its predicted size
eval_="$data/text/eval.txt"
TMPDIR="$tmp" check "plan --calibrate-kld" 0 "$nb" plan "$src" --target-bpw 4.5 --calibrate-kld "$eval_" --calibrate-ctx 64 \
  --calibrate-chunks 2 -o "$tmp/pk.json" --json
has "calibrated on" "$tmp/err"
python3 - "$tmp/out" <<'PY' || fail=1
import json, sys
d = json.loads(open(sys.argv[1]).read().strip().split("\n")[-1])
cal = d["calibration"]
groups = {c["group"] for c in cal}
for g in ("attn_q.weight", "attn_v.weight", "ffn_down.weight", "output.weight", "token_embd.weight"):
    assert g in groups, (g, groups)
for c in cal:
    assert c["predicted"] > 0 and c["kld"] >= 0 and c["factor"] > 0, c
    if c["kld"] > 0:
        assert abs(c["factor"] - c["kld"] / c["predicted"]) <= 1e-9 * c["factor"], c
assert d["budget"]["bpw"] <= 4.5, d["budget"]
print("ok: calibrated on", len(cal), "groups")
PY
pred=$(tail -1 "$tmp/out" | grep -oE '"file_bytes":[0-9]+' | head -1 | cut -d: -f2)
check "apply the calibrated plan" 0 "$nb" quantize "$src" --plan "$tmp/pk.json" -o "$tmp/pk.gguf" -q
[ "$(stat -c %s "$tmp/pk.gguf")" = "$pred" ] || { echo "FAIL: calibrated plan: predicted $pred, written $(stat -c %s "$tmp/pk.gguf")"; fail=1; }
ls "$tmp"/nibble-cal-* 2>/dev/null | grep -q . && { echo "FAIL: calibration temporaries left behind"; fail=1; }
# an encoder: the calibration scores each group by the mean cosine distance of the embeddings of
# the text's lines, measured near the budget's bits per weight; --rule pins token_embd inside the budget
enc="$tmp/enc.gguf"
check "synth encoder" 0 "$nb" synth --arch gemma-embedding --layers 2 --dim 256 --ff 512 --heads 4 --kv-heads 1 \
  --vocab 400 --dtype f32 --seed 2 -o "$enc" -q
TMPDIR="$tmp" check "plan an encoder --calibrate-kld --rule" 0 "$nb" plan "$enc" --target-bpw 4.6 \
  --rule token_embd.weight=q8_0 --calibrate-kld "$data/text/embed_sentences.txt" -o "$tmp/pe.json" --json
has "token_embd.weight (--rule)" "$tmp/err"
has "errors scaled to predicted cosine distance" "$tmp/err"
python3 - "$tmp/out" "$tmp/pe.json" <<'PY' || fail=1
import json, sys
d = json.loads(open(sys.argv[1]).read().strip().split("\n")[-1])
cal = d["calibration"]
assert {c["metric"] for c in cal} == {"cos_dist"}, cal
assert "token_embd.weight" not in {c["group"] for c in cal}, "a pinned group was calibrated"
for c in cal:
    assert c["predicted"] > 0 and c["score"] > 0 and c["factor"] > 0 and "kld" not in c, c
    assert abs(c["factor"] - c["score"] / c["predicted"]) <= 1e-9 * c["factor"], c
    assert 4.0 <= c["bpw"] <= 5.0, c  # measured near the 4.6-bpw budget, not at the cheapest type
plan = json.load(open(sys.argv[2]))
t = {x["name"]: x for x in plan["tensors"]}
assert t["token_embd.weight"]["type"] == "q8_0" and t["token_embd.weight"]["why"] == "rule", t["token_embd.weight"]
assert d["budget"]["bpw"] <= 4.6, d["budget"]
print("ok: encoder calibrated on", len(cal), "groups, token_embd pinned")
PY
check "apply the encoder's plan" 0 "$nb" quantize "$enc" --plan "$tmp/pe.json" -o "$tmp/pe.gguf" -q
check "embed the planned encoder" 0 "$nb" embed "$tmp/pe.gguf" --text "$data/text/embed_sentences.txt" -q
check "--pure inside a budget" 1 "$nb" quantize "$src" --target-bpw 4.5 --pure -o "$tmp/x.gguf"
check "--calibrate-kld without a target" 1 "$nb" quantize "$src" --type q8_0 --calibrate-kld "$eval_" -o "$tmp/x.gguf"

# resumable measurement: a plan killed mid-measurement resumes from its --measure-state journal
# to the same plan bytes as an uninterrupted run; a finished journal is reused; a journal of
# another model or other options is refused; a torn last line is cut off, a damaged one named
big="$tmp/big.gguf"
check "synth big" 0 "$nb" synth --arch llama --layers 6 --dim 512 --ff 1024 --heads 8 --kv-heads 4 --vocab 500 --dtype f32 \
  --seed 9 -o "$big" -q
check "plan big (no state)" 0 "$nb" plan "$big" --target-bpw 4.5 -o "$tmp/ref.json" -q
st_="$tmp/m.state"
"$nb" plan "$big" --target-bpw 4.5 --measure-state "$st_" -o "$tmp/res.json" -q -t 1 &
pid=$!
for _ in $(seq 1 3000); do [ -f "$st_" ] && [ "$(wc -l < "$st_")" -ge 4 ] && break; sleep 0.01; done
kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
lines=$(wc -l < "$st_")
total=$(grep -o '"why":"budget"' "$tmp/ref.json" | wc -l)
[ -e "$tmp/res.json" ] && { echo "FAIL: the killed plan wrote its output"; fail=1; }
[ "$lines" -ge 2 ] && [ "$((lines - 1))" -lt "$total" ] ||
  { echo "FAIL: the journal has $((lines - 1)) of $total tensors: the kill did not land mid-measurement"; fail=1; }
echo "ok: killed after $((lines - 1)) of $total tensors measured"
printf 'T 9' >> "$st_"   # a torn last line, as a kill inside a write leaves it
check "resume" 0 "$nb" plan "$big" --target-bpw 4.5 --measure-state "$st_" -o "$tmp/res.json" -t 2
has "tensors from $st_ (an earlier run)" "$tmp/err"
cmp -s "$tmp/res.json" "$tmp/ref.json" || { echo "FAIL: the resumed plan differs from the uninterrupted one"; fail=1; }
[ "$(($(wc -l < "$st_") - 1))" = "$total" ] || { echo "FAIL: the finished journal does not hold every tensor"; fail=1; }
check "reuse at another budget" 0 "$nb" plan "$big" --target-bpw 3.5 --measure-state "$st_" -o "$tmp/res35.json"
has "$total tensors from" "$tmp/err"
check "reference at 3.5" 0 "$nb" plan "$big" --target-bpw 3.5 -o "$tmp/ref35.json" -q
cmp -s "$tmp/res35.json" "$tmp/ref35.json" || { echo "FAIL: a plan from the journal differs"; fail=1; }
check "journal, other options" 2 "$nb" plan "$big" --target-bpw 4.5 --sample-rows 16 --measure-state "$st_" -o "$tmp/x.json"
one_line; has "another model or other options" "$tmp/err"
check "journal, other model" 2 "$nb" plan "$src" --target-bpw 4.5 --measure-state "$st_" -o "$tmp/x.json"
one_line; has "another model or other options" "$tmp/err"
[ -e "$tmp/x.json" ] && { echo "FAIL: a refused plan wrote a file"; fail=1; }
sed -i '3s/^T [0-9]*/T x/' "$st_"
check "damaged journal" 2 "$nb" plan "$big" --target-bpw 4.5 --measure-state "$st_" -o "$tmp/x.json"
one_line; has "line 3: damaged measurement state" "$tmp/err"
check "--measure-state without a target" 1 "$nb" quantize "$big" --type q8_0 --measure-state "$st_" -o "$tmp/x.gguf"

# --allow-prune on a synthetic 16-expert MoE: a size every expert cannot reach says how many
# experts would fit; with --allow-prune the plan keeps that many (or fewer), `nibble prune --plan`
# + `quantize --plan` and `quantize --allow-prune` write the same bytes, of exactly the predicted size
moe="$tmp/moe16.gguf"
check "synth moe16" 0 "$nb" synth --arch mixtral --layers 2 --dim 256 --ff 256 --experts 16 --experts-used 2 --vocab 300 \
  --seed 4 -o "$moe" -q
check "calibrate moe" 0 "$nb" calibrate "$moe" --calib "$calib" --ctx 32 --calib-tokens 512 -o "$tmp/mim.gguf" -q
check "moe: below every expert" 2 "$nb" plan "$moe" --imatrix "$tmp/mim.gguf" --target-size 1200KiB -o "$tmp/x.json" -q
one_line; has "experts per layer would fit" "$tmp/err"; has "allow-prune" "$tmp/err"
[ -e "$tmp/x.json" ] && { echo "FAIL: refused plan wrote a file"; fail=1; }
k_hint=$(grep -oE 'keeping [0-9]+ of 16' "$tmp/err" | grep -oE '[0-9]+' | head -1)
check "moe: --allow-prune" 0 "$nb" plan "$moe" --imatrix "$tmp/mim.gguf" --target-size 1200KiB --allow-prune \
  -o "$tmp/pp.json" --json -q
keep=$(num keep "$tmp/out"); pred=$(num file_bytes "$tmp/out")
[ -n "$keep" ] && [ "$keep" -ge 2 ] && [ "$keep" -le "$k_hint" ] ||
  { echo "FAIL: keep '$keep' not in [2, $k_hint] (the hint)"; fail=1; }
has '"prune":{"keep":' "$tmp/pp.json"
python3 - "$tmp/pp.json" "$keep" <<'PY' || fail=1
import json, sys
p = json.load(open(sys.argv[1])); k = int(sys.argv[2])
pr = p["prune"]
assert pr["keep"] == k and pr["n_expert"] == 16 and pr["criterion"] == "reap", pr
assert [l["layer"] for l in pr["layers"]] == [0, 1], pr
for l in pr["layers"]:
    assert len(l["kept"]) == k and l["kept"] == sorted(set(l["kept"])) and max(l["kept"]) < 16, l
for t in p["tensors"]:
    if "_exps." in t["name"] or t["name"].endswith("ffn_gate_inp.weight"):
        assert t["shape"][-1] == k, t
print("ok: plan prunes to", k, "experts; tensors have the pruned shapes")
PY
check "apply to the unpruned source" 1 "$nb" quantize "$moe" --plan "$tmp/pp.json" -o "$tmp/x.gguf"
one_line; has "prune first" "$tmp/err"
check "prune --plan" 0 "$nb" prune "$moe" --plan "$tmp/pp.json" --stats "$tmp/mim.gguf" -o "$tmp/pruned.gguf" -q
check "quantize the pruned model --plan" 0 "$nb" quantize "$tmp/pruned.gguf" --plan "$tmp/pp.json" \
  --imatrix "$tmp/mim.gguf" -o "$tmp/twostep.gguf" -q
[ "$(stat -c %s "$tmp/twostep.gguf")" = "$pred" ] || { echo "FAIL: predicted $pred, written $(stat -c %s "$tmp/twostep.gguf")"; fail=1; }
check "quantize --allow-prune" 0 "$nb" quantize "$moe" --imatrix "$tmp/mim.gguf" --target-size 1200KiB --allow-prune \
  -o "$tmp/onestep.gguf"
has "experts kept per layer" "$tmp/out"
cmp -s "$tmp/onestep.gguf" "$tmp/twostep.gguf" || { echo "FAIL: quantize --allow-prune differs from prune --plan + quantize --plan"; fail=1; }
ls "$tmp"/onestep.gguf.* 2>/dev/null && { echo "FAIL: a temporary pruned file was left behind"; fail=1; }
check "inspect pruned+quantized" 0 "$nb" inspect "$tmp/onestep.gguf" --json
has "\"llama.expert_count\":$keep" "$tmp/out"
check "prune --plan with other statistics" 2 "$nb" prune "$moe" --plan "$tmp/pp.json" --stats "$tmp/im.gguf" -o "$tmp/x.gguf"
check "prune --plan on another model" 1 "$nb" prune "$other" --plan "$tmp/pp.json" --stats "$tmp/mim.gguf" -o "$tmp/x.gguf"
check "--allow-prune without routing statistics" 2 "$nb" plan "$moe" --target-size 1200KiB --allow-prune
one_line; has "no expert routing statistics" "$tmp/err"
check "--allow-prune below even 2 experts" 2 "$nb" plan "$moe" --imatrix "$tmp/mim.gguf" --target-size 300KiB --allow-prune -q
one_line; has "keeping only 2 of 16 experts" "$tmp/err"
# --json: JSON lines, progress events (with units) then the result
check "plan --json events" 0 "$nb" plan "$src" --calib "$calib" --calib-ctx 32 --calib-tokens 256 --target-bpw 4.5 --json
python3 "$(dirname "$0")/json_lines.py" "$tmp/out" plan plan measure calibrate || fail=1
has '"unit":"tokens"' "$tmp/out"
check "quantize --json events" 0 "$nb" quantize "$moe" --imatrix "$tmp/mim.gguf" --target-size 1200KiB --allow-prune \
  -o "$tmp/ev.gguf" --json
python3 "$(dirname "$0")/json_lines.py" "$tmp/out" tensors plan measure prune quantize || fail=1
check "failure --json" 2 "$nb" plan "$moe" --target-size 1KiB --json
has '"event":"error"' "$tmp/out"
check "--allow-prune with --target-bpw" 1 "$nb" plan "$moe" --target-bpw 3 --allow-prune
[ -e "$tmp/x.gguf" ] && { echo "FAIL: a refused command wrote a file"; fail=1; }
echo "done"
exit $fail
