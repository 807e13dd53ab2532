#!/usr/bin/env bash
# `nibble build` / `nibble verify` end to end on synthetic models: every
# runnable recipe in recipes/ builds; a rerun skips finished stages; a build
# killed mid-stage (SIGKILL and SIGTERM) resumes to the same model bytes as an
# uninterrupted one; a missed quality gate exits 4 and says which limit; a
# corrupted bundle fails `verify` naming the file; bundles unpack with the
# system tar; recipe errors name the key. Needs NB_BIN (set by ctest).
set -uo pipefail
. "$(dirname "$0")/common.bash"
root=$(cd "$(dirname "$0")/../.." && pwd)
calib="$NB_TEST_DATA/text/calib.txt"
eval_="$NB_TEST_DATA/text/eval.txt"
# small chunks keep the test quick (the recipes' defaults are 512-token chunks)
vars=(--var "CALIB=$calib" --var "EVAL=$eval_" --var CALIB_CTX=64 --var CALIB_TOKENS=1024 --var EVAL_CTX=64)
sha() { sha256sum "$1" | cut -c1-64; }

check "build --help" 0 "$nb" build --help
has "quality gate" "$tmp/out"
check "synth llama" 0 "$nb" synth --arch llama --layers 2 --dim 256 --ff 256 --vocab 300 --seed 3 -o "$tmp/llama.gguf"
check "synth mixtral" 0 "$nb" synth --arch mixtral --layers 2 --dim 256 --ff 128 --experts 8 --experts-used 2 \
  --vocab 300 --seed 4 -o "$tmp/moe.gguf"

# the baseline recipe: imatrix Q4_K_M, validated, bundled
check "build dense" 0 "$nb" build "$root/recipes/dense-q4km.json" --source "$tmp/llama.gguf" "${vars[@]}" -o "$tmp/d1"
has "validation: PPL" "$tmp/out"
for f in dense-q4km.gguf report.html manifest.json dense-q4km.tar.zst; do
  [ -s "$tmp/d1/$f" ] || { echo "FAIL: $f missing"; fail=1; }
done
check "verify bundle" 0 "$nb" verify "$tmp/d1/dense-q4km.tar.zst"
check "verify dir" 0 "$nb" verify "$tmp/d1"
mkdir -p "$tmp/unpack" && tar --zstd -xf "$tmp/d1/dense-q4km.tar.zst" -C "$tmp/unpack" ||
  { echo "FAIL: tar --zstd cannot unpack the bundle"; fail=1; }
cmp -s "$tmp/unpack/dense-q4km.gguf" "$tmp/d1/dense-q4km.gguf" || { echo "FAIL: unpacked model differs"; fail=1; }
has '"nibble_bundle"' "$tmp/unpack/manifest.json"
has '<svg' "$tmp/d1/report.html"
check "inspect bundle" 0 "$nb" inspect "$tmp/d1/dense-q4km.tar.zst"
has "gate passed" "$tmp/out"
has "dense-q4km.gguf" "$tmp/out"
hasnt '<script' "$tmp/d1/report.html"
ref=$(sha "$tmp/d1/dense-q4km.gguf")

# the same recipe through the library calls by hand gives the same bytes
check "calibrate by hand" 0 "$nb" calibrate "$tmp/llama.gguf" --calib "$calib" --ctx 64 --calib-tokens 1024 -o "$tmp/imx.gguf"
check "quantize by hand" 0 "$nb" quantize "$tmp/llama.gguf" -o "$tmp/hand.gguf" --type q4_k_m --imatrix "$tmp/imx.gguf"
[ "$(sha "$tmp/hand.gguf")" = "$ref" ] || { echo "FAIL: build and calibrate+quantize differ"; fail=1; }

# a rerun skips every stage and gives the same file
check "rerun" 0 "$nb" build "$root/recipes/dense-q4km.json" --source "$tmp/llama.gguf" "${vars[@]}" -o "$tmp/d1"
[ "$(grep -c 'done in an earlier run' "$tmp/out")" = 4 ] || { echo "FAIL: rerun did not skip 4 stages"; cat "$tmp/out"; fail=1; }
[ "$(sha "$tmp/d1/dense-q4km.gguf")" = "$ref" ] || { echo "FAIL: rerun changed the model"; fail=1; }
# --json
check "json" 0 "$nb" build "$root/recipes/dense-q4km.json" --source "$tmp/llama.gguf" "${vars[@]}" -o "$tmp/d1" --json
has '"gate_passed":true' "$tmp/out"
python3 "$(dirname "$0")/json_lines.py" "$tmp/out" recipe calibrate quantize reference validate || fail=1
has '"phase":"skip"' "$tmp/out"
check "json, a fresh build" 0 "$nb" build "$root/recipes/dense-q4km.json" --source "$tmp/llama.gguf" "${vars[@]}" \
  -o "$tmp/dj" --json
python3 "$(dirname "$0")/json_lines.py" "$tmp/out" recipe calibrate quantize reference validate || fail=1
has '"phase":"start"' "$tmp/out"
has '"unit":"tokens"' "$tmp/out"

# interrupted builds resume to the same bytes (killed once calibration has begun; a
# larger token budget keeps the build long enough to be hit before it ends)
slow=(--var CALIB_TOKENS=8192)
check "uninterrupted" 0 "$nb" build "$root/recipes/dense-q4km.json" --source "$tmp/llama.gguf" "${vars[@]}" "${slow[@]}" \
  -o "$tmp/int-ref" -q
ref_slow=$(sha "$tmp/int-ref/dense-q4km.gguf")
for sig in KILL TERM; do
  d="$tmp/int-$sig"
  "$nb" build "$root/recipes/dense-q4km.json" --source "$tmp/llama.gguf" "${vars[@]}" "${slow[@]}" -o "$d" -q &
  pid=$!
  for _ in $(seq 1 400); do ls "$d"/.work/calibrate-* >/dev/null 2>&1 && break; sleep 0.01; done
  sleep 0.1
  kill -s "$sig" "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  if [ -e "$d/dense-q4km.gguf" ]; then echo "FAIL: the $sig build finished before the signal (the test did not interrupt it)"; fail=1; fi
  echo "ok: SIG$sig stopped the build after $(ls "$d"/.work/*/done.json 2>/dev/null | wc -l) finished stages"
  check "resume after $sig" 0 "$nb" build "$root/recipes/dense-q4km.json" --source "$tmp/llama.gguf" "${vars[@]}" \
    "${slow[@]}" -o "$d"
  [ "$(sha "$d/dense-q4km.gguf")" = "$ref_slow" ] || { echo "FAIL: resumed build after SIG$sig differs"; fail=1; }
done

# a missed quality gate: exit 4, the limit and the miss named, outputs kept
sed 's/"max_kld": 0.5/"max_kld": 0.0000001/' "$root/recipes/dense-q4km.json" > "$tmp/strict.json"
check "gate fails" 4 "$nb" build "$tmp/strict.json" --source "$tmp/llama.gguf" "${vars[@]}" -o "$tmp/d2"
has "quality gate failed: mean KLD" "$tmp/err"
has "max_kld" "$tmp/err"
[ -s "$tmp/d2/report.html" ] || { echo "FAIL: no report after a failed gate"; fail=1; }
has 'class="fail"' "$tmp/d2/report.html"

# MoE: prune half of the experts, then Q4_K_M
check "build moe" 0 "$nb" build "$root/recipes/moe-prune-q4km.json" --source "$tmp/moe.gguf" "${vars[@]}" -o "$tmp/m1"
check "inspect pruned" 0 "$nb" inspect "$tmp/m1/moe-prune-q4km.gguf" --json
has '"llama.expert_count":4' "$tmp/out"

# budget recipes through the planner (budgets scaled to these tiny models; no fixed overhead)
small=(--var CTX=256 --var OVERHEAD=0)
check "build dense-6gb" 0 "$nb" build "$root/recipes/dense-6gb.json" --source "$tmp/llama.gguf" "${vars[@]}" "${small[@]}" \
  --var BUDGET=3.5MiB -o "$tmp/b6"
has "planned for a memory budget" "$tmp/out"
check "build dense-size" 0 "$nb" build "$root/recipes/dense-size.json" --source "$tmp/llama.gguf" "${vars[@]}" \
  --var SIZE=900KiB -o "$tmp/bs"
sz=$(stat -c %s "$tmp/bs/dense-size.gguf")
[ "$sz" -le 921600 ] || { echo "FAIL: dense-size wrote $sz bytes for a 900 KiB target"; fail=1; }
# a budget with a pinned tensor (rules) and the planner calibrated per tensor group (target.calibrate,
# on a few chunks of text: one engine pass per group)
head -c 3000 "$eval_" > "$tmp/cal_eval.txt"
cat > "$tmp/cal.json" <<'JSON'
{"nibble_recipe": 1, "name": "cal", "source": "${SOURCE}",
 "calibration": {"text": "${CALIB}", "ctx": 64, "tokens": 1024}, "method": "imatrix",
 "target": {"size": "900KiB", "calibrate": "${CAL_EVAL}", "calibrate_ctx": 64},
 "rules": ["token_embd.weight=q8_0"],
 "validation": {"text": "${EVAL}", "ctx": 64, "chunks": 2}}
JSON
TMPDIR="$tmp" check "build a calibrated, pinned budget" 0 "$nb" build "$tmp/cal.json" --source "$tmp/llama.gguf" \
  --var "CALIB=$calib" --var "EVAL=$eval_" --var "CAL_EVAL=$tmp/cal_eval.txt" -o "$tmp/bc"
has "calibrated on" "$tmp/err"
has "pinned by --rule" "$tmp/err"
[ "$(stat -c %s "$tmp/bc/cal.gguf")" -le 921600 ] || { echo "FAIL: the calibrated plan is over its 900 KiB target"; fail=1; }
check "inspect the calibrated build" 0 "$nb" inspect "$tmp/bc/cal.gguf" --json
python3 -c 'import json,sys; t={x["name"]: x["type"] for x in json.load(open(sys.argv[1]))["tensors"]}; assert t["token_embd.weight"] == "q8_0", t["token_embd.weight"]' "$tmp/out" ||
  { echo "FAIL: the pinned token_embd is not q8_0"; fail=1; }
ls "$tmp"/nibble-cal-* 2>/dev/null | grep -q . && { echo "FAIL: calibration temporaries left behind"; fail=1; }
check "synth moe16" 0 "$nb" synth --arch mixtral --layers 2 --dim 256 --ff 256 --experts 16 --experts-used 2 --vocab 300 \
  --seed 4 -o "$tmp/moe16.gguf"
check "build moe-24gb" 0 "$nb" build "$root/recipes/moe-24gb.json" --source "$tmp/moe16.gguf" "${vars[@]}" "${small[@]}" \
  --var BUDGET=6MiB -o "$tmp/m24"
check "build moe-6gb" 0 "$nb" build "$root/recipes/moe-6gb.json" --source "$tmp/moe16.gguf" "${vars[@]}" "${small[@]}" \
  --var BUDGET=4.5MiB -o "$tmp/m6"
s24=$(stat -c %s "$tmp/m24/moe-24gb.gguf") s6=$(stat -c %s "$tmp/m6/moe-6gb.gguf")
[ "$s6" -lt "$s24" ] || { echo "FAIL: the small MoE variant ($s6) is not smaller than the large one ($s24)"; fail=1; }
# prune "auto": the planner kept fewer experts (the budget cannot hold all 16 at any type)
check "inspect moe-6gb" 0 "$nb" inspect "$tmp/m6/moe-6gb.gguf" --json
ec=$(grep -oE '"llama.expert_count":[0-9]+' "$tmp/out" | grep -oE '[0-9]+$')
[ -n "$ec" ] && [ "$ec" -ge 2 ] && [ "$ec" -lt 16 ] || { echo "FAIL: moe-6gb kept '$ec' experts (expected 2..15)"; fail=1; }
has '"keep":' "$tmp/m6/manifest.json"
ls "$tmp"/m6/.work/quantize-*/pruned.tmp 2>/dev/null && { echo "FAIL: the pruned temporary was left"; fail=1; }
check "budget too small" 2 "$nb" build "$root/recipes/moe-6gb.json" --source "$tmp/moe16.gguf" "${vars[@]}" "${small[@]}" \
  --var BUDGET=1MiB -o "$tmp/m1"
has "below the smallest achievable" "$tmp/err"
has "keeping only 2 of 16 experts" "$tmp/err"

# QLoRA merge against the NF4 base, then quantize (the fixture's adapter fits this tiny base)
check "synth tiny" 0 "$nb" synth --arch llama --layers 1 --dim 16 --ff 32 --heads 4 --kv-heads 2 --vocab 32 --dtype f32 \
  -o "$tmp/tiny.gguf"
check "build qlora" 0 "$nb" build "$root/recipes/qlora-merge-q4km.json" --source "$tmp/tiny.gguf" \
  --var "ADAPTER=$NB_TEST_DATA/peft/peft_dora_rs" -o "$tmp/q1"
check "verify qlora" 0 "$nb" verify "$tmp/q1/qlora-merge-q4km.tar.zst"

# a corrupted bundle or directory names the file
cp "$tmp/d1/dense-q4km.tar.zst" "$tmp/bad.tar.zst"
size=$(stat -c %s "$tmp/bad.tar.zst")
printf 'XXXX' | dd of="$tmp/bad.tar.zst" bs=1 seek=$((size / 2)) conv=notrunc status=none
check "corrupt bundle" 2 "$nb" verify "$tmp/bad.tar.zst"
printf 'x' >> "$tmp/d1/report.html"
check "altered dir" 2 "$nb" verify "$tmp/d1"
has "report.html" "$tmp/err"

# recipe errors name the key; a variable that is not set names it
printf '{"nibble_recipe":1,"name":"x","source":"a.gguf","target":{"mix":"q8_0"},"bogus":1}' > "$tmp/r1.json"
check "unknown key" 2 "$nb" build "$tmp/r1.json" -o "$tmp/x"
has "bogus: unknown key" "$tmp/err"
printf '{"nibble_recipe":1,"name":"x","source":"a.gguf","target":{"mix":"q8_0"},"validation":{"text":"e","ctx":"big"}}' > "$tmp/r2.json"
check "wrong type" 2 "$nb" build "$tmp/r2.json" -o "$tmp/x"
has "validation.ctx: expected an integer" "$tmp/err"
check "unset variable" 2 "$nb" build "$root/recipes/dense-q4km.json" -o "$tmp/x"
has '${SOURCE} is not set' "$tmp/err"
printf '{"nibble_recipe":1,"name":"x","source":"%s","target":{"size":"5 lots"}}' "$tmp/llama.gguf" > "$tmp/r3.json"
check "bad size" 2 "$nb" build "$tmp/r3.json" -o "$tmp/x"
has "target.size: expected a size" "$tmp/err"
echo "done"
exit $fail
