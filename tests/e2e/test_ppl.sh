#!/usr/bin/env bash
# e2e: `nibble ppl` and `nibble run` through the CLI.
#
# On a tiny synthetic llama (nibble synth, SentencePiece vocabulary) and the
# KJV evaluation text:
#   - running per-chunk PPL `[1]x,[2]y,...` and `Final estimate: PPL = X +/- err`;
#     --json agrees with the text output; chunk count = min(--chunks, tokens/ctx);
#   - the same PPL to the last digit at 1, 2 and 3 threads and at any --batch;
#   - --save-logits on the source, --kld on a q4_0 quantization of it: KLD > 0,
#     statistics printed; --kld on the source itself: KLD ~ 0, same top 100 %;
#   - refusals with exit 2 and a one-line message: a text shorter than
#     2 x ctx, a base file from another vocabulary / text / context, a damaged
#     base file; usage errors exit 1;
#   - `nibble run`: prompt echoed, greedy and seeded sampling reproducible;
#   - --kv-type f16 moves PPL a little (and reproducibly), q8_0 refuses a head
#     size of 16; a base saved in llama.cpp's layout (--logits-format llama.cpp)
#     gives the KLD of nibble's layout; a truncated one exits 2.
# On the real SmolLM2 (if scripts/fetch-models cached it): the same PPL at 1
# and 2 threads.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
if [[ -z ${NB_BIN:-} || ! -x ${NB_BIN:-} ]]; then
  echo "SKIP: NB_BIN is not an executable nibble binary ('${NB_BIN:-}')"
  exit 77
fi
nb=$NB_BIN
text=${NB_TEST_DATA:-$root/tests/data}/text/eval.txt
other=${NB_TEST_DATA:-$root/tests/data}/text/calib.txt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# expect CODE CMD...: run, keep stdout/stderr in $tmp/out $tmp/err
expect() {
  local want=$1; shift
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [[ $rc != "$want" ]]; then
    fail "exit $rc (want $want): $*"; sed 's/^/  | /' "$tmp/err" | tail -5
    return 1
  fi
  return 0
}
final() { grep -o 'Final estimate: PPL = .*' "$1"; }

expect 0 "$nb" synth --arch llama --layers 2 --dim 64 --ff 128 --heads 4 --kv-heads 2 --vocab 300 --seed 7 \
  -o "$tmp/tiny.gguf" || { echo "cannot make the synthetic model"; exit 1; }
expect 0 "$nb" synth --arch llama --layers 2 --dim 64 --ff 128 --heads 4 --kv-heads 2 --vocab 320 --seed 7 \
  -o "$tmp/other-vocab.gguf"
expect 0 "$nb" quantize "$tmp/tiny.gguf" -o "$tmp/tiny-q4_0.gguf" --type q4_0 --quiet

# ---- perplexity ----------------------------------------------------------------
ctx=64
if expect 0 "$nb" ppl "$tmp/tiny.gguf" --text "$text" --ctx $ctx --chunks 3 --threads 1; then
  cp "$tmp/out" "$tmp/t1.out"
  grep -qE '^\[1\][0-9.]+,\[2\][0-9.]+,\[3\][0-9.]+,$' "$tmp/t1.out" || fail "per-chunk line: $(head -1 "$tmp/t1.out")"
  grep -qE '^Final estimate: PPL = [0-9]+\.[0-9]{4} \+/- [0-9]+\.[0-9]{5}$' "$tmp/t1.out" || fail "final line"
  last=$(grep -oE '\[3\][0-9.]+' "$tmp/t1.out" | cut -c4-)
  [[ "$(final "$tmp/t1.out")" == "Final estimate: PPL = $last "* ]] || fail "last running PPL ($last) != final"
fi
for t in 2 3; do
  expect 0 "$nb" ppl "$tmp/tiny.gguf" --text "$text" --ctx $ctx --chunks 3 --threads $t &&
    { [[ "$(final "$tmp/out")" == "$(final "$tmp/t1.out")" ]] || fail "threads $t: $(final "$tmp/out") vs $(final "$tmp/t1.out")"; }
done
for b in 7 32 64; do
  expect 0 "$nb" ppl "$tmp/tiny.gguf" --text "$text" --ctx $ctx --chunks 3 --batch $b --threads 2 &&
    { [[ "$(final "$tmp/out")" == "$(final "$tmp/t1.out")" ]] || fail "batch $b: $(final "$tmp/out")"; }
done
if expect 0 "$nb" ppl "$tmp/tiny.gguf" --text "$text" --ctx $ctx --chunks 3 --json --threads 2; then
  python3 - "$tmp/out" "$tmp/t1.out" <<'EOF' || fail "JSON output"
import json, re, sys
js = json.loads(open(sys.argv[1]).read())
txt = open(sys.argv[2]).read()
want = float(re.search(r"PPL = ([0-9.]+)", txt).group(1))
assert js["n_chunk"] == 3 and js["n_ctx"] == 64 and len(js["chunk_ppl"]) == 3, js
assert js["n_scored"] == 3 * (64 - 1 - 32), js["n_scored"]
assert abs(js["ppl"] - want) < 1e-4 and js["chunk_ppl"][-1] == js["ppl"], (js["ppl"], want)
assert js["ppl"] > 1 and js["ppl_err"] > 0
EOF
fi

# ---- packed weights: the same PPL as the file's rows -------------------------------------
# The engine keeps row-interleaved copies of Q4_0/Q4_1/Q5_0/IQ4_NL/NF4/Q8_0 matrices for
# its row-lane kernels where the CPU has them (AVX-512 VNNI); NB_PACK=0 turns
# that off. Every logit must be the same, so the PPL is the same to the last
# digit, at 1 and 2 threads and in odd batches (1-8 token kernels, remainders);
# a MoE model exercises the per-expert copies.
expect 0 "$nb" synth --arch qwen2moe --layers 2 --dim 64 --ff 64 --heads 4 --kv-heads 2 --vocab 300 --seed 9 \
  -o "$tmp/moe.gguf" || fail "synth moe"
for src in tiny moe; do
  for ty in q4_0 q4_1 q5_0 iq4_nl nf4 q8_0; do
    expect 0 "$nb" quantize "$tmp/$src.gguf" -o "$tmp/pk-$src-$ty.gguf" --type $ty --quiet || continue
    NB_PACK=0 expect 0 "$nb" ppl "$tmp/pk-$src-$ty.gguf" --text "$text" --ctx $ctx --chunks 2 --threads 1 || continue
    want=$(final "$tmp/out")
    for tb in "1 64" "2 7" "2 3"; do
      set -- $tb
      expect 0 "$nb" ppl "$tmp/pk-$src-$ty.gguf" --text "$text" --ctx $ctx --chunks 2 --threads $1 --batch $2 &&
        { [[ "$(final "$tmp/out")" == "$want" ]] || fail "$src $ty packed, $1 threads, batch $2: $(final "$tmp/out") vs $want"; }
    done
  done
done

# ---- KL-divergence ------------------------------------------------------------------
expect 0 "$nb" ppl "$tmp/tiny.gguf" --text "$text" --ctx $ctx --chunks 4 --save-logits "$tmp/base.bin" ||
  fail "save logits"
[[ -s $tmp/base.bin && ! -e $tmp/base.bin.lock ]] && ! compgen -G "$tmp/base.bin.partial*" >/dev/null || fail "base file missing or partial left"
base_ppl=$(final "$tmp/out" | awk '{print $5}')
if expect 0 "$nb" ppl "$tmp/tiny-q4_0.gguf" --text "$text" --kld "$tmp/base.bin"; then
  for k in "Mean PPL(Q)" "Mean PPL(base)" "Cor(ln(PPL(Q)), ln(PPL(base)))" "Mean ln(PPL(Q)/PPL(base))" \
    "Mean    KLD" "Maximum KLD" "99.9%   KLD" "Median  KLD" " 0.1%   KLD" "Minimum KLD" "Mean    Δp" \
    "RMS Δp" "Same top p"; do
    grep -qF "$k" "$tmp/out" || fail "KLD output lacks '$k'"
  done
  grep -qE "^Mean PPL\(base\) +: +$base_ppl" "$tmp/out" || fail "PPL(base) is not the base run's $base_ppl"
fi
if expect 0 "$nb" ppl "$tmp/tiny-q4_0.gguf" --kld "$tmp/base.bin" --json; then # tokens from the file
  python3 - "$tmp/out" "$base_ppl" <<'EOF' || fail "KLD JSON (q4_0)"
import json, sys
k = json.loads(open(sys.argv[1]).read())["kld"]
assert k["count"] == 4 * 31, k["count"]
assert 0 < k["kld_mean"] < 1, k["kld_mean"]
assert k["kld_percentiles"]["max"] >= k["kld_percentiles"]["p99"] >= k["kld_percentiles"]["median"] >= k["kld_percentiles"]["min"]
assert 0 < k["same_top_p_pct"] <= 100 and k["dp_rms_pct"] > 0
assert abs(k["ppl_base"] - float(sys.argv[2])) < 1e-3 * k["ppl_base"]
EOF
fi
if expect 0 "$nb" ppl "$tmp/tiny.gguf" --text "$text" --kld "$tmp/base.bin" --json --threads 3; then
  python3 - "$tmp/out" <<'EOF' || fail "KLD JSON (self)"
import json, sys
k = json.loads(open(sys.argv[1]).read())["kld"]
assert abs(k["kld_mean"]) <= 1e-5 and k["same_top_p_pct"] == 100, k
assert abs(k["ppl_q"] / k["ppl_base"] - 1) < 1e-5, k
EOF
fi
# a quantized model against its own weights: precise (the default with --save-logits / --kld)
# measures ~0; the fast kernels' 8-bit activations add an error the precise mode does not have
expect 0 "$nb" ppl "$tmp/tiny-q4_0.gguf" --text "$text" --save-logits "$tmp/q4base.bin" || fail "q4_0 base"
kld_of() { "$nb" ppl "$tmp/tiny-q4_0.gguf" --kld "$tmp/q4base.bin" --json "$@" 2>/dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["kld"]["kld_mean"])'; }
kp=$(kld_of) kf=$(kld_of --fast)
python3 -c "import sys; p, f = float(sys.argv[1]), float(sys.argv[2]); assert abs(p) <= 1e-5 and f > abs(p), (p, f)" \
  "$kp" "$kf" && echo "ok: self-KLD precise $kp, fast $kf" || fail "self-KLD precise $kp / fast $kf"
expect 1 "$nb" ppl "$tmp/tiny-q4_0.gguf" --text "$text" --precise --fast || fail "--precise --fast accepted"

# KV cache types
ppl_of() { "$nb" ppl "$tmp/tiny.gguf" --text "$text" --ctx $ctx --chunks 4 --json "$@" 2>/dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])'; }
p32=$(ppl_of) p16=$(ppl_of --kv-type f16) p16b=$(ppl_of --kv-type f16 --threads 3 --batch 7)
python3 -c "import sys; a, b, c = map(float, sys.argv[1:]); assert a != b and abs(a - b) < 0.01 * a and b == c, (a, b, c)" \
  "$p32" "$p16" "$p16b" && echo "ok: PPL with an F32 cache $p32, F16 $p16" || fail "kv f16: $p32 / $p16 / $p16b"
expect 1 "$nb" ppl "$tmp/tiny.gguf" --text "$text" --ctx $ctx --kv-type q8_0 &&
  { grep -q "multiple of 32" "$tmp/err" || fail "q8_0 head-size message: $(cat "$tmp/err")"; }
expect 1 "$nb" ppl "$tmp/tiny.gguf" --text "$text" --kv-type q4_0

# a base in llama.cpp's --kl-divergence-base layout scores the variant as nibble's does
expect 0 "$nb" ppl "$tmp/tiny.gguf" --text "$text" --ctx $ctx --chunks 4 --save-logits "$tmp/base.kld" \
  --logits-format llama.cpp || fail "llama.cpp base"
[[ $(head -c 8 "$tmp/base.kld") == _logits_ ]] || fail "llama.cpp base: magic"
kl_of() { "$nb" ppl "$tmp/tiny-q4_0.gguf" --text "$text" --kld "$1" --json 2>/dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["kld"]["kld_mean"])'; }
kn=$(kl_of "$tmp/base.bin") kl=$(kl_of "$tmp/base.kld")
python3 -c "import sys; a, b = map(float, sys.argv[1:]); assert a > 0 and abs(a - b) <= 1e-3 * a, (a, b)" "$kn" "$kl" &&
  echo "ok: KLD against a nibble base $kn, a llama.cpp base $kl" || fail "KLD nibble base $kn vs llama.cpp base $kl"
head -c 3000 "$tmp/base.kld" >"$tmp/trunc.kld"
expect 2 "$nb" ppl "$tmp/tiny-q4_0.gguf" --kld "$tmp/trunc.kld" &&
  { grep -q "trunc.kld" "$tmp/err" && [[ $(wc -l <"$tmp/err") -le 1 ]] || fail "llama.cpp truncation: $(cat "$tmp/err")"; }

# ---- refusals ----------------------------------------------------------------------
head -c 40 "$text" >"$tmp/short.txt"
expect 2 "$nb" ppl "$tmp/tiny.gguf" --text "$tmp/short.txt" --ctx $ctx &&
  { grep -q "needs at least 128" "$tmp/err" || fail "short text message: $(cat "$tmp/err")"; }
expect 2 "$nb" ppl "$tmp/other-vocab.gguf" --text "$text" --kld "$tmp/base.bin" &&
  { grep -q "vocabulary" "$tmp/err" || fail "vocab message: $(cat "$tmp/err")"; }
expect 2 "$nb" ppl "$tmp/tiny-q4_0.gguf" --text "$other" --kld "$tmp/base.bin" &&
  { grep -q "different text" "$tmp/err" || fail "text message: $(cat "$tmp/err")"; }
expect 2 "$nb" ppl "$tmp/tiny-q4_0.gguf" --text "$text" --ctx 32 --kld "$tmp/base.bin"
head -c 2000 "$tmp/base.bin" >"$tmp/trunc.bin"
expect 2 "$nb" ppl "$tmp/tiny-q4_0.gguf" --kld "$tmp/trunc.bin" &&
  { grep -q "truncated" "$tmp/err" || fail "truncation message: $(cat "$tmp/err")"; }
expect 2 "$nb" ppl "$tmp/tiny-q4_0.gguf" --kld "$text"
for e in "$tmp/err"; do [[ $(wc -l <"$e") -le 1 ]] || fail "error is not one line: $(cat "$e")"; done
expect 1 "$nb" ppl "$tmp/tiny.gguf"
expect 1 "$nb" ppl "$tmp/tiny.gguf" --text "$text" --save-logits "$tmp/a.bin" --kld "$tmp/base.bin"
expect 1 "$nb" ppl "$tmp/tiny.gguf" --text "$text" --ctx 2
expect 3 "$nb" ppl "$tmp/tiny.gguf" --text "$tmp/no-such-file.txt"
expect 0 "$nb" ppl --help

# ---- generation --------------------------------------------------------------------
if expect 0 "$nb" run "$tmp/tiny.gguf" -p "In the beginning" -n 12 --ignore-eos; then
  cp "$tmp/out" "$tmp/g1"
  [[ $(head -c 16 "$tmp/g1") == "In the beginning" ]] || fail "prompt not echoed"
  [[ $(wc -c <"$tmp/g1") -gt 17 ]] || fail "nothing generated"
  expect 0 "$nb" run "$tmp/tiny.gguf" -p "In the beginning" -n 12 --ignore-eos --threads 1 &&
    { cmp -s "$tmp/out" "$tmp/g1" || fail "greedy output differs between runs/threads"; }
fi
if expect 0 "$nb" run "$tmp/tiny.gguf" -p "And" -n 16 --temp 1.2 --top-k 20 --seed 5 --ignore-eos; then
  cp "$tmp/out" "$tmp/s1"
  expect 0 "$nb" run "$tmp/tiny.gguf" -p "And" -n 16 --temp 1.2 --top-k 20 --seed 5 --ignore-eos &&
    { cmp -s "$tmp/out" "$tmp/s1" || fail "same seed, different text"; }
fi
expect 1 "$nb" run "$tmp/tiny.gguf"
expect 1 "$nb" run "$tmp/tiny.gguf" -p x --temp -1
# --bench: llama-bench's pp/tg tests, one JSON line with positive rates
if expect 0 "$nb" run "$tmp/tiny.gguf" --bench -P 24 -n 8 --reps 2 --threads 2; then
  python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline()); assert r["n_prompt"]==24 and r["n_gen"]==8 and r["reps"]==2 and r["pp_tps"]>0 and r["tg_tps"]>0, r' "$tmp/out" ||
    fail "run --bench: unexpected output $(cat "$tmp/out")"
fi
expect 2 "$nb" run "$tmp/tiny.gguf" --bench -P 100000 --ctx 64

# ---- real model: same PPL at 1 and 2 threads ------------------------------------
if real=$("$root/scripts/fetch-models" --path smollm2-135m 2>/dev/null); then
  expect 0 "$nb" ppl "$real" --text "$text" --ctx 64 --chunks 2 --threads 1 && cp "$tmp/out" "$tmp/r1" &&
    expect 0 "$nb" ppl "$real" --text "$text" --ctx 64 --chunks 2 --threads 2 &&
    { [[ "$(final "$tmp/out")" == "$(final "$tmp/r1")" ]] || fail "SmolLM2: $(final "$tmp/out") vs $(final "$tmp/r1")"; }
  echo "SmolLM2-135M Q4_1, ctx 64 x 2 chunks: $(final "$tmp/r1") at 1 and 2 threads"
else
  echo "note: smollm2-135m not in the model cache; real-model thread check not run"
fi

if ((fails)); then echo "$fails failure(s)"; exit 1; fi
echo "ok"
