#!/usr/bin/env bash
# bench/methods_mixed.sh — methods mixed per tensor (docs/planner.md "Methods
# per tensor") against one method everywhere, at one size: the planner's types
# for TARGET (importance from the same imatrix) written three ways:
#   imatrix   every tensor by importance-weighted rounding (plan + quantize)
#   all-gptq  the same types, every tensor GPTQ can do by GPTQ (plan + quantize --plan --method gptq)
#   mixed     quantize TARGET --method mixed --method-time-budget S for each S of SECONDS_BUDGET
#             (plan, ratio measurement, GPTQ on the tensors the plan chose, rounding for the others)
# Mean KLD (± its standard error) against the source's own log-probs on
# tests/data/text/eval.txt, file bytes, wall and CPU seconds of the whole
# command(s), one markdown row each. The imatrix is collected once beforehand
# and given to every row (not timed). Not a test: nothing is asserted.
# usage: bench/methods_mixed.sh  (env: NB_BIN, SRC (default tests/data/models/stories260K.gguf),
#        WORK, TARGET="--target-bpw 7.3", SECONDS_BUDGET="0.25 0.4" (predicted seconds), CTX=256, CHUNKS=16, CALIB_TOKENS=4096,
#        THREADS=1, EVAL_TEXT)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nb=${NB_BIN:-$root/build/rel/nibble}
src=${SRC:-$root/tests/data/models/stories260K.gguf}
work=${WORK:-$root/build/methods_mixed}
target=${TARGET:---target-bpw 7.3}
budget=${SECONDS_BUDGET:-0.25 0.4}
ctx=${CTX:-256}; chunks=${CHUNKS:-16}; ctok=${CALIB_TOKENS:-4096}; thr=${THREADS:-1}
calib="$root/tests/data/text/calib.txt"; eval_=${EVAL_TEXT:-$root/tests/data/text/eval.txt}
mkdir -p "$work"
base="$work/base.bin"; im="$work/imatrix.gguf"
"$nb" ppl "$src" --save-logits "$base" --text "$eval_" --ctx "$ctx" --chunks "$chunks" --threads "$thr" -q
"$nb" calibrate "$src" --calib "$calib" --calib-tokens "$ctok" --ctx "$ctx" -o "$im" --threads "$thr" -q
cal=(--calib "$calib" --calib-tokens "$ctok" --ctx "$ctx")
# shellcheck disable=SC2206
tgt=($target)
row() { # label, output file, command
  /usr/bin/time -o "$work/time.txt" -f "%e %U %S" bash -c "$3" >/dev/null 2>"$work/last.err" ||
    { cat "$work/last.err" >&2; exit 1; }
  local wall cpu
  wall=$(awk '{print $1}' "$work/time.txt"); cpu=$(awk '{print $2+$3}' "$work/time.txt")
  "$nb" ppl "$2" --kld "$base" --text "$eval_" --ctx "$ctx" --chunks "$chunks" --threads "$thr" --json 2>/dev/null |
    python3 -c "import json,sys,os; j=json.load(sys.stdin)['kld']; print('| %s | %d | %.4g | %.2g | %.1f | %.1f |' % ('$1', os.path.getsize('$2'), j['kld_mean'], j['kld_err'], $wall, $cpu))"
}
q=(--threads "$thr" -q)
echo "| method | bytes | mean KLD | ± | wall s | CPU s |"
echo "|---|---|---|---|---|---|"
row imatrix "$work/imatrix.q.gguf" \
  "'$nb' quantize '$src' -o '$work/imatrix.q.gguf' ${tgt[*]} --imatrix '$im' ${q[*]}"
row all-gptq "$work/allgptq.q.gguf" \
  "'$nb' plan '$src' ${tgt[*]} --imatrix '$im' -o '$work/plan.json' ${q[*]} && \
   '$nb' quantize '$src' -o '$work/allgptq.q.gguf' --plan '$work/plan.json' --imatrix '$im' --method gptq ${cal[*]} ${q[*]}"
for b in $budget; do
  row "mixed ($b s)" "$work/mixed.q.gguf" \
    "'$nb' quantize '$src' -o '$work/mixed.q.gguf' ${tgt[*]} --imatrix '$im' --method mixed --method-time-budget $b ${cal[*]} ${q[*]}"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
