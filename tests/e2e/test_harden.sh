#!/usr/bin/env bash
# Hardening (issue 15), one block per class: outputs that cannot clobber an
# input or each other, planted files and concurrent writers, signals and
# stdout errors, inputs truncated underneath, non-finite results, counts read
# from files, config consistency, messages. Needs NB_BIN (set by ctest).
set -uo pipefail
. "$(dirname "$0")/common.bash"
calib="$NB_TEST_DATA/text/calib.txt"
left_behind() { # left_behind OUT: its temporary or lock still exists
  compgen -G "$1.partial*" >/dev/null || [ -e "$1.lock" ]
}
one_line() { [ "$(wc -l < "$tmp/err")" = 1 ] || { echo "FAIL: $1: error is not one line:"; sed 's/^/  | /' "$tmp/err"; fail=1; }; }

m="$tmp/m.gguf"
check "synth" 0 "$nb" synth --arch llama --layers 2 --dim 64 --ff 128 --heads 4 --kv-heads 2 --vocab 300 --seed 3 -q -o "$m"
sum0=$(sha256sum < "$m")

# ---- class: an output may not be an input (any input, by device+inode) or another output
check "calibrate -o MODEL" 1 "$nb" calibrate "$m" --calib "$calib" --ctx 64 -o "$m"
has "m.gguf: is the input" "$tmp/err"; one_line "calibrate -o MODEL"
check "calibrate -o CALIB" 1 "$nb" calibrate "$m" --calib "$calib" --ctx 64 -o "$calib"
has "calib.txt" "$tmp/err"
ln "$m" "$tmp/hard.gguf"
check "quantize -o a hard link of SRC" 1 "$nb" quantize "$m" --type q8_0 -o "$tmp/hard.gguf"
has "hard.gguf: is the input .*m.gguf" "$tmp/err"
check "calibrate (imatrix)" 0 "$nb" calibrate "$m" --calib "$calib" --ctx 64 --calib-tokens 256 -q -o "$tmp/imx.gguf"
check "quantize -o IMATRIX" 1 "$nb" quantize "$m" --type q4_0 --imatrix "$tmp/imx.gguf" -o "$tmp/imx.gguf"
check "quantize --report = -o" 1 "$nb" quantize "$m" --type q8_0 -o "$tmp/q.gguf" --report="$tmp/q.gguf"
has "are the same file" "$tmp/err"
echo '{}' > "$tmp/plan.json"
check "quantize -o PLAN" 1 "$nb" quantize "$m" --plan "$tmp/plan.json" -o "$tmp/plan.json"
check "ppl --save-logits TEXT" 1 "$nb" ppl "$m" --text "$calib" --save-logits "$calib"
check "logits -o MODEL" 1 "$nb" logits "$m" --tokens 1,2 -o "$m"
check "convert -o MODEL" 1 "$nb" convert "$m" -o "$m"
check "build -o SOURCE" 1 "$nb" build "$(dirname "$0")/../../recipes/dense-q4km.json" --source "$m" -o "$m"
has "m.gguf: is the input" "$tmp/err"
mkdir -p "$tmp/ad" && cp -r "$NB_TEST_DATA/peft/peft_dora_rs/." "$tmp/ad/"
adsum=$(sha256sum < "$tmp/ad/adapter_model.safetensors")
check "merge -o a file of the adapter dir" 1 "$nb" merge "$m" --adapter "$tmp/ad" -o "$tmp/ad/adapter_model.safetensors"
has "adapter_model.safetensors: is the input" "$tmp/err"
[ "$(sha256sum < "$tmp/ad/adapter_model.safetensors")" = "$adsum" ] || { echo "FAIL: adapter changed"; fail=1; }
check "merge --report = base" 1 "$nb" merge "$m" --adapter "$tmp/ad" -o "$tmp/merged.gguf" --report="$m"
[ "$(sha256sum < "$m")" = "$sum0" ] || { echo "FAIL: the model changed"; fail=1; }

# ---- class: output creation (unique temporary, no symlink following, one writer at a time)
echo precious > "$tmp/precious"
ln -s "$tmp/precious" "$tmp/c.gguf.partial"
check "planted symlink at the old temporary name" 0 "$nb" convert "$m" -o "$tmp/c.gguf" -q
[ "$(cat "$tmp/precious")" = precious ] || { echo "FAIL: symlink target overwritten"; fail=1; }
cmp -s "$m" "$tmp/c.gguf" || { echo "FAIL: output differs"; fail=1; }
rm "$tmp/c.gguf.partial"
: > "$tmp/c.gguf.partial.AbCdEf"  # a dead writer's temporary: removed by the next writer
check "stale temporary" 0 "$nb" convert "$m" -o "$tmp/c.gguf" -q
left_behind "$tmp/c.gguf" && { echo "FAIL: stale temporary or lock left"; fail=1; }
if command -v flock >/dev/null; then
  flock "$tmp/d.gguf.lock" sleep 20 & holder=$!
  for _ in $(seq 100); do [ -e "$tmp/d.gguf.lock" ] && break; sleep 0.05; done
  sleep 0.2
  check "concurrent writer of the same output" 3 "$nb" convert "$m" -o "$tmp/d.gguf"
  has "d.gguf: another process is writing this file" "$tmp/err"; one_line "concurrent writer"
  [ -e "$tmp/d.gguf" ] && { echo "FAIL: second writer wrote"; fail=1; }
  kill "$holder"; wait "$holder" 2>/dev/null
else
  echo "SKIP: concurrent writer (no flock(1))"
fi

# ---- class: signals remove partials (128+N), stdout write errors exit 3
check "synth (slow enough to signal)" 0 "$nb" synth --arch llama --layers 2 --dim 512 --ff 1024 --heads 8 --kv-heads 4 \
  --vocab 1000 --seed 5 -q -o "$tmp/big.gguf"
signal_test() { # signal_test SIG WANT_RC
  local out="$tmp/sig-$1.gguf"
  env --default-signal=INT "$nb" quantize "$tmp/big.gguf" --type q4_k_m -q -o "$out" 2>"$tmp/err" & local pid=$!
  for _ in $(seq 2000); do compgen -G "$out.partial*" >/dev/null && break; sleep 0.01; done
  kill -s "$1" "$pid"; wait "$pid"; local rc=$?
  if [ "$rc" = 0 ]; then echo "SKIP: $1: quantize finished before the signal"; return; fi
  [ "$rc" = "$2" ] && echo "ok: $1 -> exit $rc" || { echo "FAIL: $1: exit $rc, expected $2"; fail=1; }
  left_behind "$out" && { echo "FAIL: $1: partial or lock left behind"; ls "$tmp" | sed 's/^/  | /'; fail=1; }
  [ -e "$out" ] && { echo "FAIL: $1: output exists"; fail=1; }
}
signal_test TERM 143
signal_test INT 130
if [ -w /dev/full ]; then
  "$nb" inspect "$m" > /dev/full 2>"$tmp/err"; rc=$?
  [ "$rc" = 3 ] && echo "ok: stdout write error -> exit 3" || { echo "FAIL: > /dev/full: exit $rc, expected 3"; fail=1; }
  has "stdout: write error" "$tmp/err"
fi

# ---- class: an input truncated underneath (SIGBUS on the mapping): exit 3 naming it, no partial
cp "$tmp/big.gguf" "$tmp/shrink.gguf"
"$nb" quantize "$tmp/shrink.gguf" --type q4_k_m -q -o "$tmp/shrunk.gguf" 2>"$tmp/err" & pid=$!
for _ in $(seq 2000); do compgen -G "$tmp/shrunk.gguf.partial*" >/dev/null && break; sleep 0.01; done
truncate -s 4096 "$tmp/shrink.gguf"
wait "$pid"; rc=$?
if [ "$rc" = 0 ]; then echo "SKIP: truncation: quantize finished first"; else
  [ "$rc" = 3 ] && echo "ok: truncated input -> exit 3" || { echo "FAIL: truncated input: exit $rc, expected 3"; fail=1; }
  # a cut during a tensor's read is the SIGBUS message, one between tensors the size check's
  has 'shrink.gguf: input file \(changed\|shrank to [0-9]* bytes\) while being read' "$tmp/err"
  left_behind "$tmp/shrunk.gguf" && { echo "FAIL: partial left after SIGBUS"; fail=1; }
fi

# ---- class: non-finite values after the check (what is written, after rounding; importance values)
check "synth adapter base" 0 "$nb" synth --arch llama --layers 1 --dim 16 --ff 32 --heads 4 --kv-heads 2 --vocab 32 \
  --dtype f32 -q -o "$tmp/b16.gguf"
check "merge fits f16" 0 "$nb" merge "$tmp/b16.gguf" --adapter "$NB_TEST_DATA/peft/peft_dora_rs" --type f16 -q -o "$tmp/ok16.gguf"
check "merge overflowing f16" 2 "$nb" merge "$tmp/b16.gguf" --adapter "$NB_TEST_DATA/peft/llama_lora.gguf:1e12" --type f16 \
  -o "$tmp/inf16.gguf"
has "does not fit f16" "$tmp/err"; has "b16.gguf: merged tensor '" "$tmp/err"; one_line "merge overflow"
[ -e "$tmp/inf16.gguf" ] && { echo "FAIL: overflowing merge written"; fail=1; }
check "merge overflowing f16 as f32" 0 "$nb" merge "$tmp/b16.gguf" --adapter "$NB_TEST_DATA/peft/llama_lora.gguf:1e12" \
  --type f32 -q -o "$tmp/inf32.gguf"
# legacy .dat imatrix: one entry of 64 columns (the attn_q input of m.gguf), values from a format string
dat() { # dat FILE VALUE: every value = VALUE
  python3 -c 'import struct, sys
import os; name = os.environb.get(b"NAME", b"blk.0.attn_q.weight"); v = float(sys.argv[2])
d = struct.pack("<i", 1) + struct.pack("<i", len(name)) + name + struct.pack("<ii", 1, 64) + struct.pack("<64f", *([v] * 64))
open(sys.argv[1], "wb").write(d + struct.pack("<i", 1) + struct.pack("<i", 0))' "$@"
}
if command -v python3 >/dev/null; then
  dat "$tmp/zero.dat" 0
  check "imatrix all zero: warned, neutral weights" 0 "$nb" quantize "$m" --type q4_0 --pure --imatrix "$tmp/zero.dat" -o "$tmp/iz.gguf"
  has "tensor 'blk.0.attn_q.weight': importance values are all zero" "$tmp/err"
  dat "$tmp/huge.dat" 3e38
  check "imatrix huge: warned, scaled" 0 "$nb" quantize "$m" --type q4_k --pure --imatrix "$tmp/huge.dat" -o "$tmp/ih.gguf"
  has "tensor 'blk.0.attn_q.weight': importance values up to 3e+38: scaled down" "$tmp/err"
  dat "$tmp/one.dat" 1
  check "imatrix of ones" 0 "$nb" quantize "$m" --type q4_k --pure --imatrix "$tmp/one.dat" -q -o "$tmp/i1.gguf"
  cmp -s "$tmp/ih.gguf" "$tmp/i1.gguf" || { echo "FAIL: huge importance is not the same as its ratios"; fail=1; }
  dat "$tmp/neg.dat" -1
  check "imatrix negative: refused" 2 "$nb" quantize "$m" --type q4_0 --pure --imatrix "$tmp/neg.dat" -q -o "$tmp/in.gguf"
  has "neg.dat: tensor 'blk.0.attn_q.weight': column 0 has a negative sum of squares" "$tmp/err"; one_line "imatrix negative"
else
  echo "SKIP: imatrix validation (no python3 to write the .dat files)"
fi

# ---- class: config.json consistent with the weights, duplicate keys as Python reads them
check "synth hf" 0 "$nb" synth --arch llama --layers 2 --dim 64 --ff 128 --heads 4 --kv-heads 2 --vocab 300 --seed 3 -q -o "$tmp/hf/"
cp "$tmp/hf/config.json" "$tmp/config.orig"
hf_with() { # hf_with SED-EXPR: config.json edited
  sed "$1" "$tmp/config.orig" > "$tmp/hf/config.json"
}
hf_with 's/"num_key_value_heads":.*/"num_key_value_heads": 4,/'
check "config: kv heads disagree" 2 "$nb" convert "$tmp/hf" -o "$tmp/hf.gguf"
has "config.json: tensor 'blk.0.attn_k.weight' has shape {64, 32} but the config" "$tmp/err"; one_line "kv heads"
hf_with 's/"num_key_value_heads":.*/"num_key_value_heads": 2, "head_dim": 32,/'
check "config: head_dim disagrees" 2 "$nb" convert "$tmp/hf" -o "$tmp/hf.gguf"
has "head_dim 32" "$tmp/err"
hf_with 's/"num_hidden_layers":.*/"num_hidden_layers": 3,/'
check "config: more layers than the weights" 2 "$nb" convert "$tmp/hf" -o "$tmp/hf.gguf"
has "num_hidden_layers is 3 but the weights hold 2 layers" "$tmp/err"
hf_with 's/"num_hidden_layers":.*/"num_hidden_layers": 1,/'
check "config: fewer layers than the weights" 2 "$nb" convert "$tmp/hf" -o "$tmp/hf.gguf"
[ -e "$tmp/hf.gguf" ] && { echo "FAIL: inconsistent config converted"; fail=1; }
hf_with 's/"num_key_value_heads":.*/"num_key_value_heads": 4, "num_key_value_heads": 2,/'
check "config: duplicate key, the last wins" 0 "$nb" convert "$tmp/hf" -o "$tmp/hf.gguf" -q
hf_with 's/"num_key_value_heads":.*/"num_key_value_heads": 2, "num_key_value_heads": 4,/'
check "config: duplicate key, the last (wrong) one wins" 2 "$nb" convert "$tmp/hf" -o "$tmp/hf2.gguf"
cp "$tmp/config.orig" "$tmp/hf/config.json"

# a failed --report says the model itself was written
check "quantize, report into a missing dir" 3 "$nb" quantize "$m" --type q8_0 -q -o "$tmp/rq.gguf" --report="$tmp/no/r.json"
has "rq.gguf is complete, but the report failed: .*no/r.json" "$tmp/err"; one_line "report failure"
[ -s "$tmp/rq.gguf" ] || { echo "FAIL: model not written"; fail=1; }

# ---- class: messages: terminal controls from a file are escaped in text output and errors
if command -v python3 >/dev/null; then
  python3 -c 'import sys
d = open(sys.argv[1], "rb").read()
d = d.replace(b"blk.0.attn_q.weight", b"blk.0.\x1b]0;p\x07.weight", 1)
open(sys.argv[2], "wb").write(d)' "$m" "$tmp/esc.gguf"
  check "inspect a name with terminal controls" 0 "$nb" inspect "$tmp/esc.gguf"
  has 'blk.0.\\x1b]0;p\\x07.weight' "$tmp/out"
  LC_ALL=C grep -q $'\x1b' "$tmp/out" && { echo "FAIL: raw ESC in inspect output"; fail=1; }
  # invalid UTF-8 in a name: --json stays valid JSON and shows the bytes as \xNN
  python3 -c 'import sys
d = open(sys.argv[1], "rb").read()
open(sys.argv[2], "wb").write(d.replace(b"blk.0.attn_q.weight", b"blk.0.\xff\xfetn_q.weight", 1))' "$m" "$tmp/bad8.gguf"
  check "inspect --json, invalid UTF-8 in a name" 0 "$nb" inspect "$tmp/bad8.gguf" --json
  python3 -c 'import json, sys
j = json.loads(open(sys.argv[1], "rb").read().decode("utf-8"))
assert any(t["name"] == "blk.0.\\xff\\xfetn_q.weight" for t in j["tensors"]), [t["name"] for t in j["tensors"]][:4]' "$tmp/out" \
    && echo "ok: --json is valid UTF-8 JSON" || { echo "FAIL: inspect --json is not valid JSON or lost the name"; fail=1; }
  NAME=$'blk.0.\x1b[2J.weight' dat "$tmp/esc.dat" 1
  check "an error quoting a name with terminal controls" 2 "$nb" quantize "$m" --type q4_0 --imatrix "$tmp/esc.dat" -q -o "$tmp/esc-q.gguf"
  has 'tensor .blk\.0\.\\x1b\[2J\.weight. is not in' "$tmp/err"
  LC_ALL=C grep -q $'\x1b' "$tmp/err" && { echo "FAIL: raw ESC in an error message"; fail=1; }
fi

# ---- habit: fault injection (core/fault.h, Debug/Asan builds): fail the N-th allocation or the
# N-th write/fsync/rename, for N = 1, 2, ... until the command succeeds. Every failing run must
# exit 3 and leave no output, temporary or lock (and, under ASan, no leak: LeakSanitizer's
# exit code would differ); the run that succeeds must give the same bytes as a run without faults.
# N steps by 1 up to 100, then by N/16 (a deterministic sample that keeps CI quick: a few hundred
# runs instead of thousands); NB_FAULT_FULL=1 tries every N.
fault_next() { # fault_next I: the N after I
  if [ -z "${NB_FAULT_FULL:-}" ] && [ "$1" -ge 100 ]; then echo $(($1 + $1 / 16)); else echo $(($1 + 1)); fi
}
fault_total() { # fault_total VAR: operations of VAR's kind counted by the last NIBBLE_FAULT_REPORT run
  awk -v k="$([ "$1" = NIBBLE_FAULT_IO ] && echo io || echo alloc)" '{ for (j = 1; j < NF; j++) if ($j == k) print $(j + 1) }' \
    "$tmp/fault-report" 2>/dev/null | tail -1
}
fault_ended() { # fault_ended VAR WHAT I TOTAL RUNS: the first success must come after the last operation
  if [ -n "$4" ] && [ "$3" -le "$4" ]; then
    echo "FAIL: $1=$3 $2: succeeded although the run makes $4 such operations (a failure was swallowed)"; fail=1
  else
    echo "ok: $1: $2 failed cleanly at each of $(($5 - 1)) of its $4 points tried, then succeeded"
  fi
}
fault_loop() { # [OUT_OPT=--save-logits] fault_loop VAR OUT CMD... (CMD writes OUT, given as OUT_OPT OUT; default -o)
  # OUT "-": CMD writes nothing but stdout (ppl --kld), which the successful run must print as the reference did
  local var=$1 out=$2; shift 2
  local ref="${out%/*}/ref-${out##*/}" what="$2 $3" oopt=(${OUT_OPT:--o})
  if [ "$out" = - ]; then oopt=(); ref="$tmp/ref.txt"; fi
  rm -f "$tmp/fault-report"
  NIBBLE_FAULT_REPORT="$tmp/fault-report" "$@" -q "${oopt[@]}" ${oopt[@]:+"$ref"} >"$tmp/stdout" 2>"$tmp/err" ||
    { echo "FAIL: fault loop reference: $*"; sed 's/^/  | /' "$tmp/err" | head -3; fail=1; return; }
  [ "$out" = - ] && mv "$tmp/stdout" "$ref"
  local i rc runs=0 total
  total=$(fault_total "$var")
  for ((i = 1; i < 100000; i = $(fault_next $i))); do
    env "$var=$i" "$@" -q "${oopt[@]}" ${oopt[@]:+"$out"} >"$tmp/stdout" 2>"$tmp/err"; rc=$?; runs=$((runs + 1))
    if [ "$out" != - ]; then
      [ -e "$out" ] && [ "$rc" != 0 ] && { echo "FAIL: $var=$i $what: exit $rc but the output exists"; fail=1; }
      left_behind "$out" && { echo "FAIL: $var=$i $what: temporary or lock left"; fail=1; rm -f "$out".partial.* "$out.lock"; }
    fi
    if [ "$rc" = 0 ]; then break; fi
    [ "$rc" = 3 ] || { echo "FAIL: $var=$i $*: exit $rc, expected 3"; sed 's/^/  | /' "$tmp/err" | head -3; fail=1; return; }
  done
  if [ "$i" = 1 ]; then echo "SKIP: $var: fault hooks not in this build"; return; fi
  [ "$out" = - ] && out="$tmp/stdout"
  cmp -s "$out" "$ref" || { echo "FAIL: $var $what: output after the loop differs"; fail=1; }
  fault_ended "$var" "$what" "$i" "$total" "$runs"
  rm -f "$out" "$ref"
}
# `nibble build` writes a directory: finished stages stay (that is how a rerun resumes), so each
# run starts from an empty one; a failing run must exit 3 and leave no temporary or lock in it.
fault_loop_build() { # fault_loop_build VAR RECIPE SOURCE
  local var=$1 recipe=$2 src=$3 out="$tmp/fb" ref="$tmp/fb-ref" i rc runs=0
  local args=(build "$recipe" --source "$src" --var "CALIB=$calib" -q)
  rm -rf "$ref" "$tmp/fault-report"
  NIBBLE_FAULT_REPORT="$tmp/fault-report" "$nb" "${args[@]}" -o "$ref" >/dev/null 2>"$tmp/err" ||
    { echo "FAIL: build reference"; fail=1; return; }
  local total
  total=$(fault_total "$var")
  for ((i = 1; i < 100000; i = $(fault_next $i))); do
    rm -rf "$out"
    env "$var=$i" "$nb" "${args[@]}" -o "$out" >/dev/null 2>"$tmp/err"; rc=$?; runs=$((runs + 1))
    if [ -d "$out" ] && [ -n "$(find "$out" -name '*.partial*' -o -name '*.lock')" ]; then
      echo "FAIL: $var=$i build: temporary or lock left:"; find "$out" -name '*.partial*' -o -name '*.lock' | sed 's/^/  | /'
      fail=1
    fi
    if [ "$rc" = 0 ]; then break; fi
    [ "$rc" = 3 ] || { echo "FAIL: $var=$i build: exit $rc, expected 3"; sed 's/^/  | /' "$tmp/err" | head -3; fail=1; return; }
  done
  if [ "$i" = 1 ]; then echo "SKIP: $var: fault hooks not in this build"; return; fi
  cmp -s "$out/tiny.gguf" "$ref/tiny.gguf" || { echo "FAIL: $var build: model after the loop differs"; fail=1; }
  check "$var: verify the bundle" 0 "$nb" verify "$out/tiny.tar.zst"
  fault_ended "$var" build "$i" "$total" "$runs"
  rm -rf "$out" "$ref"
}
check "synth moe" 0 "$nb" synth --arch mixtral --layers 1 --dim 32 --ff 32 --heads 4 --kv-heads 2 --experts 4 \
  --experts-used 2 --vocab 300 --dtype f32 --seed 3 -q -o "$tmp/moe.gguf"
check "calibrate moe" 0 "$nb" calibrate "$tmp/moe.gguf" --calib "$calib" --ctx 32 --calib-tokens 64 -q -o "$tmp/moe.stats.gguf"
check "synth small" 0 "$nb" synth --arch llama --layers 1 --dim 32 --ff 64 --heads 4 --kv-heads 2 --vocab 300 --dtype f32 \
  --seed 4 -q -o "$tmp/s32.gguf"
check "synth small hf" 0 "$nb" synth --arch llama --layers 1 --dim 32 --ff 64 --heads 4 --kv-heads 2 --vocab 300 \
  --dtype f32 --seed 4 -q -o "$tmp/s32hf/"
check "save logits" 0 "$nb" ppl "$tmp/s32.gguf" --text "$NB_TEST_DATA/text/eval.txt" --ctx 16 --chunks 2 -q \
  --save-logits "$tmp/s32.logits"
printf '%s\n' '{"nibble_recipe": 1, "name": "tiny", "source": "${SOURCE}",' \
  ' "calibration": {"text": "${CALIB}", "ctx": 16, "tokens": 32}, "method": "imatrix",' \
  ' "target": {"mix": "q4_0"}, "outputs": {"bundle": true}}' > "$tmp/tiny.json"
for var in NIBBLE_FAULT_ALLOC NIBBLE_FAULT_IO; do
  fault_loop $var "$tmp/fl.gguf" "$nb" prune "$tmp/moe.gguf" --stats "$tmp/moe.stats.gguf" --keep 3
  fault_loop $var "$tmp/fl.gguf" "$nb" convert "$tmp/b16.gguf" --type f16
  fault_loop $var "$tmp/fl.safetensors" "$nb" convert "$tmp/b16.gguf"
  fault_loop $var "$tmp/fl.gguf" "$nb" quantize "$tmp/b16.gguf" --type q4_k_m
  fault_loop $var "$tmp/fl.gguf" "$nb" merge "$tmp/b16.gguf" --adapter "$NB_TEST_DATA/peft/llama_lora.gguf" --type f16
  fault_loop $var "$tmp/fl.gguf" "$nb" calibrate "$tmp/s32.gguf" --calib "$calib" --ctx 16 --calib-tokens 32
  OUT_OPT=--save-logits fault_loop $var "$tmp/fl.bin" "$nb" ppl "$tmp/s32.gguf" --text "$NB_TEST_DATA/text/eval.txt" \
    --ctx 16 --chunks 2
  fault_loop_build $var "$tmp/tiny.json" "$tmp/s32.gguf"
  # cJSON (config.json, the safetensors header, adapter_config.json) and zstd under the hook too
  fault_loop $var "$tmp/fl.gguf" "$nb" convert "$tmp/s32hf"
  fault_loop $var "$tmp/fl.gguf" "$nb" merge "$tmp/b16.gguf" --adapter "$NB_TEST_DATA/peft/peft_dora_rs" --type f16
done
fault_loop NIBBLE_FAULT_ALLOC - "$nb" ppl "$tmp/s32.gguf" --kld "$tmp/s32.logits" --ctx 16 --chunks 2

echo "done"
exit $fail
