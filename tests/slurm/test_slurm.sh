#!/usr/bin/env bash
# tests/slurm/test_slurm.sh — `nibble batch` on a real Slurm (opt-in:
# `scripts/test --slurm`, or run it directly as root with NB_BIN set).
#
# Installs Debian's slurm-wlm and munge if missing, writes a one-node
# slurm.conf for this host in a temporary directory, starts munged, slurmctld
# and slurmd, then:
#   1. submits an array of 3 shards over 6 jobs (3 synthetic models x 2
#      recipes), waits, and checks every output and the combined --status;
#   2. submits a slower batch, cancels one array task while it runs,
#      resubmits that task, and checks every job is done exactly once (one
#      output per job, the same bytes as a direct build) with nothing lost.
# Everything it started is stopped and removed at exit.
set -uo pipefail
nb=$(readlink -f "${NB_BIN:?NB_BIN not set}")
root=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (installs and starts slurm)"; exit 77; }
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 ||
    { echo "SKIP: cannot install slurm-wlm/munge from the Debian repositories"; exit 77; }
fi
t=$(mktemp -d /tmp/nibble-slurm.XXXXXX)
chmod 755 "$t"
fail=0
cleanup() {
  [ -f "$t/slurmctld.pid" ] && kill "$(cat "$t/slurmctld.pid")" 2>/dev/null
  [ -f "$t/slurmd.pid" ] && kill "$(cat "$t/slurmd.pid")" 2>/dev/null
  [ -f "$t/munged.pid" ] && kill "$(cat "$t/munged.pid")" 2>/dev/null
  sleep 1
  rm -rf "$t"
}
trap cleanup EXIT
host=$(hostname -s)
mkdir -p "$t/munge" "$t/state" "$t/spool" "$t/log"
dd if=/dev/urandom of="$t/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$t/munge/munge.key"
munged --force -S "$t/munge/socket" --key-file "$t/munge/munge.key" --pid-file "$t/munged.pid" \
  --log-file "$t/log/munged.log" --seed-file "$t/munge/seed" ||
  { echo "FAIL: munged did not start"; exit 1; }
cat > "$t/slurm.conf" <<CONF
ClusterName=nibbletest
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$t/munge/socket
CredType=cred/munge
StateSaveLocation=$t/state
SlurmdSpoolDir=$t/spool
SlurmctldPidFile=$t/slurmctld.pid
SlurmdPidFile=$t/slurmd.pid
SlurmctldLogFile=$t/log/slurmctld.log
SlurmdLogFile=$t/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$t/slurm.conf"
slurmctld -f "$t/slurm.conf" || { echo "FAIL: slurmctld did not start"; cat "$t/log/slurmctld.log"; exit 1; }
slurmd -f "$t/slurm.conf" || { echo "FAIL: slurmd did not start"; cat "$t/log/slurmd.log"; exit 1; }
for _ in $(seq 1 60); do sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed)' && break; sleep 1; done
sinfo -h -o %T | grep -qE '^(idle|mixed)' || { echo "FAIL: the node did not come up"; sinfo; tail -20 "$t/log/slurmd.log"; exit 1; }
echo "ok: slurm is up ($(sinfo -h -o '%N %T %c'))"

# ---- 1. an array of 3 shards over 6 jobs ----
w="$t/w1"
mkdir -p "$w/models"
for s in 1 2 3; do "$nb" synth --arch llama --layers 2 --dim 128 --ff 256 --vocab 300 --seed $s -o "$w/models/m$s.gguf" -q; done
cat > "$w/q8.json" <<R
{"nibble_recipe":1,"name":"q8","source":"\${SOURCE}","target":{"mix":"q8_0"},
 "validation":{"text":"$root/tests/data/text/eval.txt","ctx":64,"chunks":2}}
R
cat > "$w/q4.json" <<'R'
{"nibble_recipe":1,"name":"q4","source":"${SOURCE}","target":{"mix":"q4_k_m"}}
R
echo '{"nibble_batch":1,"out":"out","jobs":[{"sources":["models/*.gguf"],"recipes":["q8.json","q4.json"]}]}' > "$w/jobs.json"
chmod -R a+rwX "$t"
(cd "$w" && NIBBLE="$nb" sbatch --wait --array=0-2 -o "$w/slurm-%a.log" "$root/scripts/slurm/batch.sbatch" jobs.json -q) >/dev/null ||
  { echo "FAIL: sbatch array failed"; cat "$w"/slurm-*.log; fail=1; }
"$nb" batch --status "$w/jobs.json" > "$w/status.txt"
[ "$(grep -c ' done ' "$w/status.txt")" = 6 ] || { echo "FAIL: not every job is done"; cat "$w/status.txt"; fail=1; }
[ "$(ls "$w"/out/.batch/state-*-of-3.json | wc -l)" = 3 ] || { echo "FAIL: expected 3 state files"; fail=1; }
for s in 1 2 3; do for r in q8 q4; do
  [ -s "$w/out/m$s/$r/$r.gguf" ] || { echo "FAIL: m$s/$r: no output"; fail=1; }
done; done
[ $fail = 0 ] && echo "ok: 3 shards, 6 jobs, every output present, --status combines the shards"

# ---- 2. cancel a shard mid-run, resubmit it ----
w="$t/w2"
mkdir -p "$w/models"
for s in 1 2 3 4; do "$nb" synth --arch llama --layers 4 --dim 512 --ff 1024 --vocab 300 --seed $s -o "$w/models/m$s.gguf" -q; done
cat > "$w/slow.json" <<R
{"nibble_recipe":1,"name":"slow","source":"\${SOURCE}","target":{"mix":"q4_k_m"},
 "calibration":{"text":"$root/tests/data/text/calib.txt","ctx":128,"tokens":4096},"method":"imatrix",
 "validation":{"text":"$root/tests/data/text/eval.txt","ctx":128,"chunks":4}}
R
echo '{"nibble_batch":1,"out":"out","jobs":[{"sources":["models/*.gguf"],"recipes":["slow.json"]}]}' > "$w/jobs.json"
chmod -R a+rwX "$t"
jid=$(cd "$w" && NIBBLE="$nb" sbatch --parsable --array=0-1 -o "$w/slurm-%a.log" "$root/scripts/slurm/batch.sbatch" jobs.json -q)
for _ in $(seq 1 240); do   # until shard 1 is running its first job (m2)
  grep -q '"status":[[:space:]]*"running"' "$w/out/.batch/state-1-of-2.json" 2>/dev/null && break
  sleep 0.25
done
sleep 1
scancel "${jid}_1"
for _ in $(seq 1 240); do squeue -h -j "$jid" 2>/dev/null | grep -q . || break; sleep 0.5; done
if grep -qE '"status":[[:space:]]*"(interrupted|running|pending)"' "$w/out/.batch/state-1-of-2.json"; then
  echo "ok: shard 1 cancelled mid-run ($(grep -cE '"status":[[:space:]]*"done"' "$w/out/.batch/state-1-of-2.json") of 2 jobs done)"
else
  echo "FAIL: shard 1 finished before the cancel reached it (the test did not test a cancel)"; fail=1
fi
(cd "$w" && NIBBLE="$nb" sbatch --wait --array=1 -o "$w/slurm-re-%a.log" "$root/scripts/slurm/batch.sbatch" jobs.json --shard 1/2 -q) >/dev/null ||
  { echo "FAIL: resubmitted shard failed"; cat "$w"/slurm-re-*.log; fail=1; }
"$nb" batch --status "$w/jobs.json" > "$w/status.txt"
[ "$(grep -c ' done ' "$w/status.txt")" = 4 ] || { echo "FAIL: after the resubmission not every job is done"; cat "$w/status.txt"; fail=1; }
n_out=$(find "$w/out" -name 'slow.gguf' | wc -l)
[ "$n_out" = 4 ] || { echo "FAIL: expected 4 outputs, found $n_out"; fail=1; }
find "$w/out" -name '*.partial*' | grep -q . && { echo "FAIL: partial files left in outputs"; fail=1; }
# the resumed job's model equals a direct, uninterrupted build
"$nb" build "$w/slow.json" --source "$w/models/m2.gguf" -o "$t/direct" -q ||
  { echo "FAIL: direct build"; fail=1; }
cmp -s "$t/direct/slow.gguf" "$w/out/m2/slow/slow.gguf" || { echo "FAIL: resumed output differs from a direct build"; fail=1; }
[ $fail = 0 ] && echo "ok: a cancelled shard resumed; 4 jobs, 4 outputs, identical to a direct build"
echo "done"
exit $fail
