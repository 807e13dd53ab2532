#!/usr/bin/env bash
# `nibble quantize` end to end: help, mixes, rules, dry run, JSON, report,
# determinism across thread counts, HF-directory and requantized sources,
# NaN weights, usage errors, a write failure (file-size limit) leaving nothing.
# Needs NB_BIN (set by ctest).
set -uo pipefail
. "$(dirname "$0")/common.bash"
no_partial() { ls "$tmp"/*.partial* "$tmp"/*.lock >/dev/null 2>&1 && { echo "FAIL: partial output left behind"; fail=1; }; }
# type of a tensor in a GGUF, from inspect --json
ttype() { "$nb" inspect "$1" --json | grep -oE "\"name\":\"$2\",\"type\":\"[^\"]*\"" | sed 's/.*"type":"//; s/"$//'; }

check "quantize --help" 0 "$nb" quantize --help
for m in q4_k_m q8_0 iq4_xs nf4 int4-g128 int4-asym-g128 "--rule"; do has "$m" "$tmp/out"; done
check "nibble --help lists quantize" 0 "$nb" --help
has "quantize" "$tmp/out"

src="$tmp/s.gguf"
check "synth" 0 "$nb" synth --arch llama --layers 4 --dim 256 --ff 512 --heads 4 --kv-heads 2 --vocab 300 --seed 11 -o "$src"

# q4_k_m: llama.cpp's mix for 4 layers (use_more_bits: layers 2, 3), output Q6_K
check "q4_k_m" 0 "$nb" quantize "$src" -o "$tmp/q4km.gguf" --type q4_k_m --threads 2
has "q6_K" "$tmp/out"
has "sha256" "$tmp/out"
[ "$(ttype "$tmp/q4km.gguf" output.weight)" = q6_K ] || { echo "FAIL: output.weight not q6_K"; fail=1; }
[ "$(ttype "$tmp/q4km.gguf" blk.0.attn_v.weight)" = q4_K ] || { echo "FAIL: blk.0.attn_v not q4_K"; fail=1; }
[ "$(ttype "$tmp/q4km.gguf" blk.2.attn_v.weight)" = q6_K ] || { echo "FAIL: blk.2.attn_v not q6_K"; fail=1; }
[ "$(ttype "$tmp/q4km.gguf" blk.3.ffn_down.weight)" = q6_K ] || { echo "FAIL: blk.3.ffn_down not q6_K"; fail=1; }
[ "$(ttype "$tmp/q4km.gguf" blk.1.attn_norm.weight)" = f32 ] || { echo "FAIL: norm not f32"; fail=1; }
check "inspect q4_k_m" 0 "$nb" inspect "$tmp/q4km.gguf" --json
has '"general.file_type":15' "$tmp/out"
has '"general.quantization_version":2' "$tmp/out"
has '"tokenizer.ggml.tokens"' "$tmp/out"

# determinism: 1 vs 2 threads, byte-identical
for m in q4_k_m q4_0 q8_0 nf4 int4-g64; do
  check "$m t1" 0 "$nb" quantize "$src" -o "$tmp/$m.t1.gguf" --type "$m" --threads 1 --quiet
  check "$m t2" 0 "$nb" quantize "$src" -o "$tmp/$m.t2.gguf" --type "$m" --threads 2 --quiet
  cmp -s "$tmp/$m.t1.gguf" "$tmp/$m.t2.gguf" || { echo "FAIL: $m differs between 1 and 2 threads"; fail=1; }
done
check "quiet prints nothing" 0 "$nb" quantize "$src" -o "$tmp/quiet.gguf" --type q8_0 --quiet
[ -s "$tmp/out" ] && { echo "FAIL: --quiet printed to stdout"; fail=1; }

# rules, dry run, pure
check "dry run with rules" 0 "$nb" quantize "$src" --type q4_k_m --dry-run \
  --rule 'blk.*.ffn_down.weight=q8_0' --rule 're:^blk\.1\.ffn_down=q5_0' --rule 'output.weight=f16'
grep -E '^blk\.0\.ffn_down\.weight .* q8_0 +rule' "$tmp/out" >/dev/null || { echo "FAIL: rule not applied"; fail=1; }
grep -E '^blk\.1\.ffn_down\.weight .* q5_0 +rule' "$tmp/out" >/dev/null || { echo "FAIL: later rule does not win"; fail=1; }
grep -E '^output\.weight .* f16 +rule' "$tmp/out" >/dev/null || { echo "FAIL: output rule"; fail=1; }
check "pure" 0 "$nb" quantize "$src" --type q4_k_m --dry-run --pure
hasnt "q6_K" "$tmp/out"
check "rule on norms warns" 0 "$nb" quantize "$src" --type q8_0 --dry-run --rule '*norm.weight=q8_0'
has "decided no tensor" "$tmp/err"

# JSON and the error report
check "json + report file" 0 "$nb" quantize "$src" -o "$tmp/j.gguf" --type q4_0 --json --report="$tmp/rep.json" --threads 2
has '"mix":"q4_0"' "$tmp/out"
has '"file_type":2' "$tmp/out"
has '"cosine"' "$tmp/out"
has '"rmse"' "$tmp/rep.json"
has '"name":"blk.0.attn_q.weight"' "$tmp/rep.json"
check "report table" 0 "$nb" quantize "$src" -o "$tmp/r.gguf" --type q4_k_m --report "$tmp/rep2.json"
has "cosine" "$tmp/out"
has "blk.0.ffn_up.weight" "$tmp/out"
[ -s "$tmp/rep2.json" ] || { echo "FAIL: report file missing"; fail=1; }
cmp -s "$tmp/r.gguf" "$tmp/q4km.gguf" || { echo "FAIL: --report changed the output"; fail=1; }

# HF directory source gives the same tensors as the GGUF source
check "synth hf dir" 0 "$nb" synth --arch llama --layers 4 --dim 256 --ff 512 --heads 4 --kv-heads 2 --vocab 300 --seed 11 -o "$tmp/hf"
check "quantize hf dir" 0 "$nb" quantize "$tmp/hf" -o "$tmp/hf.q8.gguf" --type q8_0 --quiet
tensors() { "$nb" inspect "$1" --json | grep -oE '"name":"[^"]*","type":"[^"]*","ne":\[[0-9,]*\],"shape":\[[0-9,]*\],"bytes":[0-9]*' | sort; }
diff <(tensors "$tmp/hf.q8.gguf") <(tensors "$tmp/q8_0.t1.gguf") >/dev/null || { echo "FAIL: HF and GGUF sources give different tensor tables"; fail=1; }

# requantizing an already quantized file is refused without --allow-requantize, then warns; same type copies
check "requantize refused" 1 "$nb" quantize "$tmp/q8_0.t1.gguf" -o "$tmp/rq.gguf" --type q4_0
has "allow-requantize" "$tmp/err"
[ -e "$tmp/rq.gguf" ] && { echo "FAIL: refused requantization wrote a file"; fail=1; }
check "requantize q8_0 -> q4_0" 0 "$nb" quantize "$tmp/q8_0.t1.gguf" -o "$tmp/rq.gguf" --type q4_0 --allow-requantize
has "requantiz" "$tmp/err"
check "q8_0 -> q8_0 copies" 0 "$nb" quantize "$tmp/q8_0.t1.gguf" -o "$tmp/same.gguf" --type q8_0 --quiet
cmp -s "$tmp/q8_0.t1.gguf" "$tmp/same.gguf" || { echo "FAIL: q8_0 -> q8_0 is not identical"; fail=1; }

# usage errors: exit 1
check "no args" 1 "$nb" quantize
check "missing -o" 1 "$nb" quantize "$src" --type q8_0
check "missing --type" 1 "$nb" quantize "$src" -o "$tmp/x.gguf"
check "unknown type" 1 "$nb" quantize "$src" -o "$tmp/x.gguf" --type q9_9
has "q9_9" "$tmp/err"
check "bad rule" 1 "$nb" quantize "$src" -o "$tmp/x.gguf" --type q8_0 --rule 'blk.*'
check "bad rule type" 1 "$nb" quantize "$src" -o "$tmp/x.gguf" --type q8_0 --rule 'x=nope'
check "bad regex" 1 "$nb" quantize "$src" -o "$tmp/x.gguf" --type q8_0 --rule 're:(=q8_0'
check "output == input" 1 "$nb" quantize "$src" -o "$src" --type q8_0
has "same file" "$tmp/err"
check "missing input" 3 "$nb" quantize "$tmp/nope.gguf" -o "$tmp/x.gguf" --type q8_0
[ -e "$tmp/x.gguf" ] && { echo "FAIL: output written on error"; fail=1; }

# NaN and Inf weights: exit 2, one line naming tensor and element, nothing left
check "to f32" 0 "$nb" convert "$src" -o "$tmp/f32.gguf" --type f32
off=$("$nb" inspect "$tmp/f32.gguf" --json | grep -oE '"name":"blk.1.attn_k.weight"[^}]*"offset":[0-9]+' | grep -oE '[0-9]+$')
if [ -n "$off" ]; then
  cp "$tmp/f32.gguf" "$tmp/nan.gguf"
  printf '\x00\x00\xc0\x7f' | dd of="$tmp/nan.gguf" bs=1 seek=$((off + 4 * 300)) conv=notrunc status=none
  check "NaN weight" 2 "$nb" quantize "$tmp/nan.gguf" -o "$tmp/nan.q4.gguf" --type q4_k_m --threads 2
  has "blk.1.attn_k.weight" "$tmp/err"
  has "element 300 (row 1, column 44) is NaN" "$tmp/err"
  [ "$(wc -l < "$tmp/err")" = 1 ] || { echo "FAIL: NaN error is not one line"; cat "$tmp/err"; fail=1; }
  [ -e "$tmp/nan.q4.gguf" ] && { echo "FAIL: output left after NaN"; fail=1; }
  cp "$tmp/f32.gguf" "$tmp/inf.gguf"
  printf '\x00\x00\x80\xff' | dd of="$tmp/inf.gguf" bs=1 seek=$((off + 4 * 7)) conv=notrunc status=none
  check "Inf weight" 2 "$nb" quantize "$tmp/inf.gguf" -o "$tmp/inf.q8.gguf" --type q8_0
  has "element 7 (row 0, column 7) is infinite" "$tmp/err"
else
  echo "FAIL: could not find a tensor offset in inspect --json"; fail=1
fi
# a row length the type cannot take: exit 2 with --no-fallback, else the fallback
# (synth rows are 256/512 wide, so ask for NF4_DQ, whose block is 16384)
check "no-fallback" 2 "$nb" quantize "$src" -o "$tmp/nf.gguf" --type q8_0 --no-fallback --rule 'blk.0.attn_q.weight=nf4_dq'
has "blk.0.attn_q.weight" "$tmp/err"
check "fallback" 0 "$nb" quantize "$src" -o "$tmp/nf.gguf" --type q8_0 --rule 'blk.0.attn_q.weight=nf4_dq'
[ "$(ttype "$tmp/nf.gguf" blk.0.attn_q.weight)" = nf4 ] || { echo "FAIL: nf4_dq did not fall back to nf4"; fail=1; }

# plans: --dry-run --json prints the plan; --plan applies it (byte-identical to --type);
# a hand edit of one "type" is honoured; a plan of another model is refused
check "plan json" 0 "$nb" quantize "$src" --type q4_k_m --dry-run --json
cp "$tmp/out" "$tmp/plan.json"
has '"nibble_plan":1' "$tmp/plan.json"
has '"tensors_sha256"' "$tmp/plan.json"
check "apply plan" 0 "$nb" quantize "$src" -o "$tmp/fromplan.gguf" --plan "$tmp/plan.json" --quiet
cmp -s "$tmp/q4km.gguf" "$tmp/fromplan.gguf" || { echo "FAIL: --plan output differs from --type q4_k_m"; fail=1; }
sed 's/"name":"blk.0.ffn_up.weight","shape":\[256,512\],"src_type":"f16","type":"q4_K"/"name":"blk.0.ffn_up.weight","shape":[256,512],"src_type":"f16","type":"q8_0"/' \
  "$tmp/plan.json" > "$tmp/edited.json"
cmp -s "$tmp/plan.json" "$tmp/edited.json" && { echo "FAIL: the plan edit did not apply (test bug)"; fail=1; }
check "apply edited plan" 0 "$nb" quantize "$src" -o "$tmp/edited.gguf" --plan "$tmp/edited.json" --json
[ "$(ttype "$tmp/edited.gguf" blk.0.ffn_up.weight)" = q8_0 ] || { echo "FAIL: edited plan type not written"; fail=1; }
check "synth other" 0 "$nb" synth --arch llama --layers 4 --dim 512 --ff 512 --heads 4 --kv-heads 2 --vocab 300 -o "$tmp/other.gguf"
check "plan of another model" 1 "$nb" quantize "$tmp/other.gguf" -o "$tmp/x.gguf" --plan "$tmp/plan.json"
has "another model" "$tmp/err"
[ -e "$tmp/x.gguf" ] && { echo "FAIL: refused plan wrote a file"; fail=1; }
check "plan with --type" 1 "$nb" quantize "$src" -o "$tmp/x.gguf" --plan "$tmp/plan.json" --type q8_0
echo '{"nibble_plan":1,"bogus":2}' > "$tmp/bad.json"
check "plan unknown key" 2 "$nb" quantize "$src" -o "$tmp/x.gguf" --plan "$tmp/bad.json"
has "unknown key 'bogus'" "$tmp/err"

# llama-quantize spellings
check "aliases" 0 "$nb" quantize "$src" --type q4_0 --dry-run --output-tensor-type q8_0 --token-embedding-type q5_0 \
  --tensor-type 'ffn_down=q6_k'
grep -E '^output\.weight .* q8_0 +rule' "$tmp/out" >/dev/null || { echo "FAIL: --output-tensor-type"; fail=1; }
grep -E '^token_embd\.weight .* q5_0 +rule' "$tmp/out" >/dev/null || { echo "FAIL: --token-embedding-type"; fail=1; }
grep -E '^blk\.2\.ffn_down\.weight .* q6_K +rule' "$tmp/out" >/dev/null || { echo "FAIL: --tensor-type"; fail=1; }
check "calibrate" 0 "$nb" calibrate "$src" --calib "$NB_TEST_DATA/text/calib.txt" --ctx 64 --calib-tokens 512 -o "$tmp/imx.gguf"
check "imatrix all" 0 "$nb" quantize "$src" -o "$tmp/im_all.gguf" --type q4_0 --pure --imatrix "$tmp/imx.gguf" --quiet
check "imatrix exclude" 0 "$nb" quantize "$src" -o "$tmp/im_ex.gguf" --type q4_0 --pure --imatrix "$tmp/imx.gguf" \
  --exclude-weights attn_ --quiet
check "rtn" 0 "$nb" quantize "$src" -o "$tmp/rtn.gguf" --type q4_0 --pure --quiet
# excluded tensors equal plain rounding, the others the imatrix rounding
py_eq() { "$NB_PYTHON" -c 'import sys; from gguf import GGUFReader as R
a, b, n = R(sys.argv[1]), R(sys.argv[2]), sys.argv[3]
ta = [t for t in a.tensors if t.name == n][0]; tb = [t for t in b.tensors if t.name == n][0]
sys.exit(0 if bytes(ta.data.tobytes()) == bytes(tb.data.tobytes()) else 1)' "$@"; }
if [ -n "${NB_PYTHON:-}" ]; then
  py_eq "$tmp/im_ex.gguf" "$tmp/rtn.gguf" blk.0.attn_q.weight || { echo "FAIL: excluded tensor not plainly rounded"; fail=1; }
  py_eq "$tmp/im_ex.gguf" "$tmp/im_all.gguf" blk.0.ffn_up.weight || { echo "FAIL: kept tensor lost its imatrix"; fail=1; }
  py_eq "$tmp/im_all.gguf" "$tmp/rtn.gguf" blk.0.ffn_up.weight && { echo "FAIL: the imatrix changed nothing (test is blind)"; fail=1; }
else
  echo "SKIP: --exclude-weights byte comparison needs NB_PYTHON (gguf)"
fi
check "include without imatrix" 1 "$nb" quantize "$src" -o "$tmp/x.gguf" --type q4_0 --include-weights attn

# a write failure (file-size limit, like a full disk): exit 3, no partial, no output
( trap '' XFSZ; ulimit -f 200; "$nb" quantize "$src" -o "$tmp/big.gguf" --type f32 --quiet ) >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" = 3 ] || { echo "FAIL: write failure: exit $rc, expected 3"; head -3 "$tmp/err"; fail=1; }
[ -e "$tmp/big.gguf" ] && { echo "FAIL: output exists after a write failure"; fail=1; }
no_partial
echo "done"
exit $fail
