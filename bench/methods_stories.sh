#!/usr/bin/env bash
# bench/methods_stories.sh — the 4.5-bpw-class schemes x calibration methods on
# an unquantized F32 model (default ../shared/models/stories260K.gguf): mean KLD
# (± its standard error), same-top-token rate and PPL against the F32 model's
# own log-probs on tests/data/text/eval.txt, one markdown row each. The imatrix
# rows are llama.cpp's Q4_0/IQ4_NL + imatrix: nibble's imatrix rounding writes
# llama-quantize --imatrix's bytes for the GGUF types (tests/interop checks it),
# from the same imatrix text. Not a test: nothing is asserted.
# usage: bench/methods_stories.sh  (env: NB_BIN, SRC, WORK, SCHEMES, METHODS, CTX=256, CHUNKS=16,
#        CALIB_TOKENS=4096, THREADS=1)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nb=${NB_BIN:-$root/build/rel/nibble}
src=${SRC:-$root/../shared/models/stories260K.gguf}
work=${WORK:-$root/build/methods}
schemes=${SCHEMES:-q4_0 iq4_nl nf4 int4-g32}
methods=${METHODS:-rtn imatrix gptq awq awq+gptq}
ctx=${CTX:-256}; chunks=${CHUNKS:-16}; ctok=${CALIB_TOKENS:-4096}; thr=${THREADS:-1}
calib="$root/tests/data/text/calib.txt"; eval_="$root/tests/data/text/eval.txt"
mkdir -p "$work"
base="$work/base.bin"
[ -f "$base" ] || "$nb" ppl "$src" --save-logits "$base" --text "$eval_" --ctx "$ctx" --chunks "$chunks" --threads "$thr" -q
[ -f "$work/imatrix.gguf" ] || "$nb" calibrate "$src" --calib "$calib" --calib-tokens "$ctok" --ctx "$ctx" \
  -o "$work/imatrix.gguf" --threads "$thr" -q
echo "| scheme | method | bytes | mean KLD | ± | same top % | PPL | quantize s |"
echo "|---|---|---|---|---|---|---|---|"
for sc in $schemes; do
  for me in $methods; do
    out="$work/$sc.$me.gguf"
    args=(--type "$sc" --threads "$thr" -q)
    case "$me" in
      rtn) ;;
      imatrix) args+=(--imatrix "$work/imatrix.gguf") ;;
      *) args+=(--method "$me" --calib "$calib" --calib-tokens "$ctok" --ctx "$ctx") ;;
    esac
    t0=$(date +%s.%N)
    "$nb" quantize "$src" -o "$out" "${args[@]}" 2>/dev/null
    dt=$(echo "$(date +%s.%N) - $t0" | bc)
    "$nb" ppl "$out" --kld "$base" --text "$eval_" --ctx "$ctx" --chunks "$chunks" --threads "$thr" --json 2>/dev/null |
      python3 -c "import json,sys,os; j=json.load(sys.stdin)['kld']; print('| %s | %s | %d | %.5f | %.5f | %.2f | %.3f | %.1f |' % ('$sc', '$me', os.path.getsize('$out'), j['kld_mean'], j['kld_err'], j['same_top_p_pct'], j['ppl_q'], $dt))"
  done
done
