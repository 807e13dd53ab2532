#!/usr/bin/env bash
# `nibble batch` end to end on synthetic models (the real-Slurm test is
# tests/slurm/test_slurm.sh): glob x recipes expansion, a missing source and
# an unknown recipe fail their own jobs while the others run, two jobs with one
# output are refused before anything runs, a rerun skips finished jobs, --jobs
# 2 gives the same bytes as --jobs 1, shards split the list and --status
# combines their state files, SIGTERM stops a batch cleanly (exit 143) and a
# rerun finishes it. Needs NB_BIN (set by ctest).
set -uo pipefail
. "$(dirname "$0")/common.bash"
w="$tmp/w"
mkdir -p "$w/models"
td=$(cd "$NB_TEST_DATA" && pwd)   # recipes below name it; paths in a recipe are relative to the recipe
for s in 1 2 3; do
  check "synth $s" 0 "$nb" synth --arch llama --layers 2 --dim 128 --ff 256 --vocab 300 --seed $s -o "$w/models/m$s.gguf"
done
cat > "$w/q8.json" <<R
{"nibble_recipe":1,"name":"q8","source":"\${SOURCE}","target":{"mix":"q8_0"},
 "validation":{"text":"$td/text/eval.txt","ctx":64,"chunks":2}}
R
echo '{"nibble_recipe":1,"name":"q4","source":"${SOURCE}","target":{"mix":"q4_0"},"outputs":{"bundle":false}}' > "$w/q4.json"
cat > "$w/jobs.json" <<'J'
{"nibble_batch":1,"out":"out","jobs":[
  {"sources":["models/*.gguf"],"recipes":["q8.json","q4.json"]},
  {"source":"models/nope.gguf","recipe":"q8.json"},
  {"source":"models/m1.gguf","recipe":"missing-recipe.json","out":"m1-missing"}]}
J
check "batch" 2 "$nb" batch "$w/jobs.json" --jobs 2
[ "$(grep -c ' done ' "$tmp/out")" = 6 ] || { echo "FAIL: expected 6 done jobs"; cat "$tmp/out"; fail=1; }
has "no file matches: .*nope.gguf" "$tmp/out"
has "recipe not found: .*missing-recipe.json" "$tmp/out"
for s in 1 2 3; do
  [ -s "$w/out/m$s/q8/q8.gguf" ] && [ -s "$w/out/m$s/q4/q4.gguf" ] || { echo "FAIL: m$s outputs missing"; fail=1; }
done
has '"status":' "$w/out/.batch/state-0-of-1.json"
has '"sha256":' "$w/out/.batch/state-0-of-1.json"
check "rerun skips" 2 "$nb" batch "$w/jobs.json"
has "0 jobs run now; 6 done (6 of them in earlier runs), 2 failed" "$tmp/err"
check "status" 0 "$nb" batch --status "$w/jobs.json" --json
has '"id":"m2/q4","status":"done"' "$tmp/out"

# --jobs 1 and shards give the same bytes; --status combines the shards
sed 's/"out":"out"/"out":"out1"/' "$w/jobs.json" > "$w/jobs1.json"
check "serial" 2 "$nb" batch "$w/jobs1.json" --jobs 1 -q
for s in 1 2 3; do cmp -s "$w/out/m$s/q4/q4.gguf" "$w/out1/m$s/q4/q4.gguf" || { echo "FAIL: --jobs 2 vs 1 differ"; fail=1; }; done
sed 's/"out":"out"/"out":"outs"/' "$w/jobs.json" > "$w/jobs2.json"
check "shard 0/2" 2 "$nb" batch "$w/jobs2.json" --shard 0/2 -q
check "shard 1/2 (from Slurm's variables)" 2 env SLURM_ARRAY_TASK_ID=1 SLURM_ARRAY_TASK_COUNT=2 "$nb" batch "$w/jobs2.json" -q
[ "$(ls "$w"/outs/.batch/state-*-of-2.json | wc -l)" = 2 ] || { echo "FAIL: expected 2 state files"; fail=1; }
check "status of shards" 0 "$nb" batch --status "$w/jobs2.json"
[ "$(grep -c ' done ' "$tmp/out")" = 6 ] || { echo "FAIL: --status does not combine the shards"; cat "$tmp/out"; fail=1; }
check "bad shard" 1 "$nb" batch "$w/jobs2.json" --shard 2/2

# two jobs writing one output: refused before anything runs
echo '{"nibble_batch":1,"out":"dup","jobs":[{"source":"models/m1.gguf","recipe":"q8.json","out":"x"},{"source":"models/m2.gguf","recipe":"q4.json","out":"x"}]}' > "$w/dup.json"
check "duplicate outputs" 1 "$nb" batch "$w/dup.json"
has "write the same output" "$tmp/err"
[ -e "$w/dup/x" ] && { echo "FAIL: a refused batch wrote output"; fail=1; }
echo '{"nibble_batch":1,"jobs":[],"bogus":1}' > "$w/bad.json"
check "unknown key" 2 "$nb" batch "$w/bad.json"
has "bogus: unknown key" "$tmp/err"

# SIGTERM: the running builds stop, exit 143, a rerun finishes the batch
cat > "$w/slow.json" <<R
{"nibble_recipe":1,"name":"slow","source":"\${SOURCE}","target":{"mix":"q4_k_m"},
 "calibration":{"text":"$td/text/calib.txt","ctx":64,"tokens":2048},"method":"imatrix"}
R
echo '{"nibble_batch":1,"out":"slow-out","jobs":[{"sources":["models/*.gguf"],"recipes":["slow.json"]}]}' > "$w/slowjobs.json"
"$nb" batch "$w/slowjobs.json" -q >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 1 200); do grep -qE '"status":[[:space:]]*"running"' "$w/slow-out/.batch/state-0-of-1.json" 2>/dev/null && break; sleep 0.05; done
kill -TERM "$pid"
wait "$pid"
rc=$?
if [ "$rc" = 143 ]; then
  echo "ok: SIGTERM -> 143"
  grep -qE '"status":[[:space:]]*"(interrupted|pending)"' "$w/slow-out/.batch/state-0-of-1.json" ||
    { echo "FAIL: no job recorded as interrupted or pending"; fail=1; }
elif [ "$rc" = 0 ]; then
  echo "note: the batch finished before SIGTERM arrived (fast machine)"
else
  echo "FAIL: SIGTERM: exit $rc, expected 143"; cat "$tmp/err"; fail=1
fi
check "resume after SIGTERM" 0 "$nb" batch "$w/slowjobs.json"
[ "$(find "$w/slow-out" -name slow.gguf | wc -l)" = 3 ] || { echo "FAIL: expected 3 outputs after the resume"; fail=1; }
echo "done"
exit $fail
