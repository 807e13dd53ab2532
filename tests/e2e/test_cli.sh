#!/usr/bin/env bash
# CLI end to end: help, exit codes, bad input, synth -> convert round trips,
# determinism, atomic outputs. Needs NB_BIN (set by ctest).
set -uo pipefail
. "$(dirname "$0")/common.bash"

check "nibble --help" 0 "$nb" --help
has "inspect" "$tmp/out"
check "no command is a usage error" 1 "$nb"
check "unknown command" 1 "$nb" frobnicate
for c in inspect convert synth plan quantize merge prune calibrate logits ppl run version; do
  check "$c --help" 0 "$nb" $c --help
  has "usage: nibble $c" "$tmp/out"
done
check "nibble --version" 0 "$nb" --version
has "^nibble [0-9]" "$tmp/out"; has "^commit: " "$tmp/out"; has "^build: " "$tmp/out"; has "CPU kernels generic" "$tmp/out"
check "nibble version --json" 0 "$nb" version --json
has '"commit":"' "$tmp/out"; has '"cuda":' "$tmp/out"; has '"cpu_kernels":\["generic"' "$tmp/out"
check "nibble --version --json" 0 "$nb" --version --json
has '"build_type":"' "$tmp/out"
check "inspect without file" 1 "$nb" inspect
check "inspect missing file" 3 "$nb" inspect "$tmp/nope.gguf"
has "nope.gguf" "$tmp/err"
printf 'GGUF\x03\x00\x00\x00' > "$tmp/trunc.gguf"
check "truncated gguf" 2 "$nb" inspect "$tmp/trunc.gguf"
has "trunc.gguf" "$tmp/err"
[ "$(wc -l < "$tmp/err")" = 1 ] || { echo "FAIL: error is not one line"; fail=1; }
printf '\x10\x00\x00\x00\x00\x00\x00\x00{"a":1}' > "$tmp/bad.safetensors"
check "corrupt safetensors" 2 "$nb" inspect "$tmp/bad.safetensors"
has "bad.safetensors" "$tmp/err"

# synth -> GGUF and HF dir; both inspect; convert round trips are lossless
check "synth gguf" 0 "$nb" synth --arch llama --layers 2 --dim 64 --ff 128 --heads 4 --kv-heads 2 --vocab 256 --seed 3 -o "$tmp/a.gguf"
check "synth gguf again (determinism)" 0 "$nb" synth --arch llama --layers 2 --dim 64 --ff 128 --heads 4 --kv-heads 2 --vocab 256 --seed 3 --threads 1 -o "$tmp/a2.gguf"
cmp -s "$tmp/a.gguf" "$tmp/a2.gguf" || { echo "FAIL: synth output differs between runs/thread counts"; fail=1; }
check "inspect synth gguf" 0 "$nb" inspect "$tmp/a.gguf"
has "blk.1.attn_q.weight" "$tmp/out"
check "inspect --json" 0 "$nb" inspect "$tmp/a.gguf" --json
has '"architecture":"llama"' "$tmp/out"
check "gguf -> safetensors" 0 "$nb" convert "$tmp/a.gguf" -o "$tmp/b.safetensors"
check "safetensors -> gguf" 0 "$nb" convert "$tmp/b.safetensors" -o "$tmp/c.gguf"
check "gguf -> gguf" 0 "$nb" convert "$tmp/a.gguf" -o "$tmp/d.gguf"
cmp -s "$tmp/a.gguf" "$tmp/d.gguf" || { echo "FAIL: gguf -> gguf is not byte-identical"; fail=1; }
check "safetensors -> safetensors" 0 "$nb" convert "$tmp/b.safetensors" -o "$tmp/e.safetensors"
cmp -s "$tmp/b.safetensors" "$tmp/e.safetensors" || { echo "FAIL: safetensors -> safetensors is not byte-identical"; fail=1; }
# tensor data survives gguf -> safetensors -> gguf (compare the tensor tables and bytes)
tensors() { "$nb" inspect "$1" --json | grep -oE '"name":"[^"]*","type":"[^"]*","ne":\[[0-9,]*\]'; }
tensors "$tmp/a.gguf" > "$tmp/ta"
tensors "$tmp/c.gguf" > "$tmp/tc"
[ "$(wc -l < "$tmp/ta")" -gt 10 ] || { echo "FAIL: no tensors listed"; fail=1; }
diff -q <(sort "$tmp/ta") <(sort "$tmp/tc") >/dev/null || { echo "FAIL: tensor tables differ after gguf->safetensors->gguf"; fail=1; }
check "f16 convert" 0 "$nb" convert "$tmp/a.gguf" -o "$tmp/f.gguf" --type f16
check "inspect f16" 0 "$nb" inspect "$tmp/f.gguf"
has "f16" "$tmp/out"
check "bad --type" 1 "$nb" convert "$tmp/a.gguf" -o "$tmp/g.gguf" --type q9
check "output == input" 1 "$nb" convert "$tmp/a.gguf" -o "$tmp/a.gguf"
check "output dir missing" 3 "$nb" convert "$tmp/a.gguf" -o "$tmp/no/dir/x.gguf"
ls "$tmp"/*.partial* "$tmp"/*.lock "$tmp"/no 2>/dev/null && { echo "FAIL: partial output left behind"; fail=1; }
check "bad output extension" 1 "$nb" convert "$tmp/a.gguf" -o "$tmp/x.bin"

# option syntax (cli/opts.h): --opt=value, -tN, bundles, --, -o - refused, usage errors are one line, exit 1
check "synth --opt=value, -t2" 0 "$nb" synth --arch=llama --layers=2 --dim 64 --ff=128 --heads 4 --kv-heads=2 --vocab 256 --seed=3 -t2 -q --output="$tmp/a3.gguf"
cmp -s "$tmp/a.gguf" "$tmp/a3.gguf" || { echo "FAIL: --opt=value spelling gives other bytes"; fail=1; }
check "-o attached" 0 "$nb" convert "$tmp/a.gguf" -o"$tmp/a4.gguf" -qt1
cmp -s "$tmp/a.gguf" "$tmp/a4.gguf" || { echo "FAIL: -oPATH spelling gives other bytes"; fail=1; }
cp "$tmp/a.gguf" "$tmp/-dash.gguf"
(cd "$tmp" && "$nb" inspect -- -dash.gguf >/dev/null 2>"$tmp/err"); rc=$?
[ "$rc" = 0 ] || { echo "FAIL: inspect -- -dash.gguf: exit $rc"; fail=1; }
(cd "$tmp" && "$nb" inspect -dash.gguf >/dev/null 2>"$tmp/err"); rc=$?
[ "$rc" = 1 ] || { echo "FAIL: inspect -dash.gguf without --: exit $rc, expected 1"; fail=1; }
one_line() { [ "$(wc -l < "$tmp/err")" = 1 ] || { echo "FAIL: $1: error is not one line:"; sed 's/^/  | /' "$tmp/err"; fail=1; }; }
check "-o - refused" 1 "$nb" convert "$tmp/a.gguf" -o -
has "cannot write to stdout" "$tmp/err"; one_line "-o -"
check "--output=- refused" 1 "$nb" synth --arch llama --output=-
check "unknown option" 1 "$nb" convert "$tmp/a.gguf" -o "$tmp/u.gguf" --frobnicate
has "unknown option '--frobnicate'" "$tmp/err"; one_line "unknown option"
check "unknown short option" 1 "$nb" inspect "$tmp/a.gguf" -Z
has "unknown option '-Z'" "$tmp/err"
check "missing value" 1 "$nb" inspect "$tmp/a.gguf" --threads
has "needs a value" "$tmp/err"; one_line "missing value"
check "value out of range" 1 "$nb" inspect "$tmp/a.gguf" -t0
has "between 1 and 1024" "$tmp/err"
check "flag with a value" 1 "$nb" inspect "$tmp/a.gguf" --json=yes
check "missing required option" 1 "$nb" convert "$tmp/a.gguf"
has "missing -o OUT" "$tmp/err"; one_line "missing -o"
check "extra positional" 1 "$nb" inspect "$tmp/a.gguf" "$tmp/a.gguf"
has "unexpected argument" "$tmp/err"
check "stdin positional" 1 "$nb" inspect -
check "bad size" 1 "$nb" synth --arch llama --size 4X -o "$tmp/s.gguf"
ls "$tmp"/u.gguf "$tmp"/s.gguf 2>/dev/null && { echo "FAIL: output written after a usage error"; fail=1; }

# a truncated copy of a valid file fails cleanly at every cut (no crash = exit 2 or 3, not >= 128)
size=$(stat -c %s "$tmp/a.gguf")
for cut in 4 8 24 100 1000 $((size / 2)) $((size - 1)); do
  head -c "$cut" "$tmp/a.gguf" > "$tmp/cut.gguf"
  "$nb" inspect "$tmp/cut.gguf" >/dev/null 2>&1; rc=$?
  [ "$rc" = 2 ] || { echo "FAIL: truncated at $cut: exit $rc"; fail=1; }
done
echo "cut tests done"
exit $fail
