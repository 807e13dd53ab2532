#!/usr/bin/env bash
# `nibble prune` end to end: help, statistics from `nibble calibrate` (--stats)
# and from a calibration run (--calib, --save-stats gives the same output),
# --keep / --keep-ratio, both criteria, JSON report and --report file, --eval
# (PPL and KLD), --dry-run, the pruned file read back by nibble (inspect) and,
# when NB_PYTHON has PyPI `gguf`, by gguf-py: expert_count and every shape
# consistent, kept expert slices and router rows equal to the original's;
# bad input (dense model, --keep out of range, statistics missing or of another
# model, usage errors) exits != 0 leaving no output; with NB_LLAMA_PYTHON (a
# Python with llama-cpp-python), llama.cpp loads the pruned files and its logits
# match nibble's engine. Needs NB_BIN (set by ctest).
# --threads 1: the models are tiny, and OpenMP threads on a loaded CI machine
# only add waiting (20 s instead of 5 under ASan).
set -uo pipefail
. "$(dirname "$0")/common.bash"
data=${NB_TEST_DATA:-$(dirname "$0")/../data}
no_output() { # no_output FILE: neither FILE nor its temporary (FILE.partial.*) nor its lock exists
  if [ -e "$1" ] || ls "$1".partial* "$1".lock >/dev/null 2>&1; then echo "FAIL: output $1 left behind"; fail=1; fi
}

check "prune --help" 0 "$nb" prune --threads 1 --help
for w in --keep --keep-ratio --criterion --stats --calib --renormalize-topk --eval; do has "$w" "$tmp/out"; done
check "nibble --help lists prune" 0 "$nb" --help
has "prune" "$tmp/out"

mx="$tmp/mx.gguf" q2="$tmp/q2.gguf" dense="$tmp/dense.gguf"
check "synth mixtral" 0 "$nb" synth --arch mixtral --layers 2 --dim 64 --ff 64 --heads 4 --kv-heads 2 \
  --experts 8 --experts-used 2 --vocab 300 --dtype f16 --seed 3 -o "$mx"
check "synth qwen2moe" 0 "$nb" synth --arch qwen2moe --layers 3 --dim 64 --ff 64 --heads 4 --kv-heads 2 \
  --experts 6 --experts-used 2 --vocab 300 --dtype f32 --seed 4 -o "$q2"
check "synth dense" 0 "$nb" synth --arch llama --layers 2 --dim 64 --ff 64 --heads 4 --kv-heads 2 --vocab 300 -o "$dense"
calib="$data/text/calib.txt" eval="$data/text/eval.txt"
check "calibrate mixtral" 0 "$nb" calibrate --threads 1 "$mx" --calib "$calib" --ctx 32 --calib-tokens 256 -o "$tmp/mx.stats.gguf"
check "calibrate qwen2moe" 0 "$nb" calibrate --threads 1 "$q2" --calib "$calib" --ctx 32 --calib-tokens 256 -o "$tmp/q2.stats.gguf"

# --stats, --keep, reap (default), JSON on stdout
check "prune --stats --keep 5 --json" 0 "$nb" prune --threads 1 "$mx" --stats "$tmp/mx.stats.gguf" --keep 5 -o "$tmp/mx5.gguf" --json
cp "$tmp/out" "$tmp/mx5.json"
has '"criterion":"reap"' "$tmp/mx5.json"
has '"expert_count":8' "$tmp/mx5.json"
has '"expert_count_new":5' "$tmp/mx5.json"
has '"dropped":\[{"expert":' "$tmp/mx5.json"
has '"sha256":"' "$tmp/mx5.json"
check "inspect pruned" 0 "$nb" inspect "$tmp/mx5.gguf"
has "expert_count *5" "$tmp/out"
has "expert_used_count *2" "$tmp/out"
check "logits of pruned" 0 "$nb" logits --threads 1 "$tmp/mx5.gguf" --tokens 1,72,101,108 --quiet

# --calib with --save-stats, then --stats from the saved file: same output file
check "prune --calib --save-stats" 0 "$nb" prune --threads 1 "$q2" --calib "$calib" --ctx 32 --calib-tokens 256 \
  --keep-ratio 0.5 --criterion freq --save-stats "$tmp/q2.saved.gguf" -o "$tmp/q2a.gguf"
has "layer 0 (256 tokens): kept" "$tmp/out"
has "6 -> 3 experts per layer in 3 MoE layers (criterion freq)" "$tmp/out"
check "prune --stats (saved)" 0 "$nb" prune --threads 1 "$q2" --stats "$tmp/q2.saved.gguf" --keep 3 --criterion freq -o "$tmp/q2b.gguf"
cmp -s "$tmp/q2a.gguf" "$tmp/q2b.gguf" || { echo "FAIL: --calib and --stats of the same calibration differ"; fail=1; }
check "prune --stats (calibrate's file)" 0 "$nb" prune --threads 1 "$q2" --stats "$tmp/q2.stats.gguf" --keep 3 --criterion freq -o "$tmp/q2c.gguf"
cmp -s "$tmp/q2a.gguf" "$tmp/q2c.gguf" || { echo "FAIL: prune --calib differs from calibrate + prune --stats"; fail=1; }
check "keep all" 0 "$nb" prune --threads 1 "$q2" --stats "$tmp/q2.stats.gguf" --keep 6 -o "$tmp/q2all.gguf"
check "logits original" 0 "$nb" logits --threads 1 "$q2" --tokens 1,72,101,108,108,111 -o "$tmp/l0.f32" --quiet
check "logits keep-all" 0 "$nb" logits --threads 1 "$tmp/q2all.gguf" --tokens 1,72,101,108,108,111 -o "$tmp/l1.f32" --quiet
[ -s "$tmp/l0.f32" ] && cmp -s "$tmp/l0.f32" "$tmp/l1.f32" || { echo "FAIL: keeping every expert changed the logits"; fail=1; }

# --eval and --report; --renormalize-topk on qwen2moe warns about llama.cpp
check "prune --eval --report" 0 "$nb" prune --threads 1 "$q2" --stats "$tmp/q2.stats.gguf" --keep 2 --renormalize-topk \
  -o "$tmp/q2e.gguf" --eval "$eval" --eval-ctx 32 --eval-chunks 2 --report "$tmp/r.json"
has "PPL original" "$tmp/out"
has "mean KLD" "$tmp/out"
has "llama.cpp's qwen2moe" "$tmp/err"
has '"kld_mean":' "$tmp/r.json"
has '"renormalize_topk_written":true' "$tmp/r.json"
[ -e "$tmp/q2e.gguf.base-logprobs" ] && { echo "FAIL: temporary log-prob file left behind"; fail=1; }
check "dry run" 0 "$nb" prune --threads 1 "$mx" --stats "$tmp/mx.stats.gguf" --keep 4 --dry-run
has "dry run" "$tmp/out"
no_output "$tmp/dry.gguf"

# bad input: exit code, message, no output
o="$tmp/bad.gguf"
check "dense model" 2 "$nb" prune --threads 1 "$dense" --stats "$tmp/mx.stats.gguf" --keep 2 -o "$o"
has "not a mixture-of-experts model" "$tmp/err"; no_output "$o"
check "--keep > expert_count" 2 "$nb" prune --threads 1 "$mx" --stats "$tmp/mx.stats.gguf" --keep 9 -o "$o"
has "has only 8 per layer" "$tmp/err"; no_output "$o"
check "--keep < expert_used_count" 2 "$nb" prune --threads 1 "$mx" --stats "$tmp/mx.stats.gguf" --keep 1 -o "$o"
has "expert_used_count" "$tmp/err"; no_output "$o"
check "--keep-ratio too small" 2 "$nb" prune --threads 1 "$mx" --stats "$tmp/mx.stats.gguf" --keep-ratio 0.1 -o "$o"
no_output "$o"
check "--keep 1 --reduce-topk" 0 "$nb" prune --threads 1 "$mx" --stats "$tmp/mx.stats.gguf" --keep 1 --reduce-topk -o "$tmp/top1.gguf"
has "expert_used_count 2 -> 1" "$tmp/out"
check "statistics of another model" 2 "$nb" prune --threads 1 "$mx" --stats "$tmp/q2.stats.gguf" --keep 4 -o "$o"
has "another model" "$tmp/err"; no_output "$o"
check "calibrate --dat" 0 "$nb" calibrate --threads 1 "$mx" --calib "$calib" --ctx 32 --calib-tokens 64 -o "$tmp/mx.dat" --dat
check "statistics without routing data" 2 "$nb" prune --threads 1 "$mx" --stats "$tmp/mx.dat" --keep 4 -o "$o"
has "no expert routing statistics" "$tmp/err"; no_output "$o"
check "missing statistics file" 3 "$nb" prune --threads 1 "$mx" --stats "$tmp/nope.gguf" --keep 4 -o "$o"
no_output "$o"
check "no statistics" 1 "$nb" prune --threads 1 "$mx" --keep 4 -o "$o"
has "missing statistics" "$tmp/err"; no_output "$o"
check "--keep and --keep-ratio" 1 "$nb" prune --threads 1 "$mx" --stats "$tmp/mx.stats.gguf" --keep 4 --keep-ratio 0.5 -o "$o"
check "bad criterion" 1 "$nb" prune --threads 1 "$mx" --stats "$tmp/mx.stats.gguf" --keep 4 --criterion best -o "$o"
check "no -o" 1 "$nb" prune --threads 1 "$mx" --stats "$tmp/mx.stats.gguf" --keep 4
check "--eval with --dry-run" 1 "$nb" prune --threads 1 "$mx" --stats "$tmp/mx.stats.gguf" --keep 4 --dry-run --eval "$eval"
check "output onto the input" 1 "$nb" prune --threads 1 "$mx" --stats "$tmp/mx.stats.gguf" --keep 4 -o "$mx"
printf "too short" >"$tmp/short.txt"
check "text too short for calibration" 2 "$nb" prune --threads 1 "$mx" --calib "$tmp/short.txt" --ctx 64 --keep 4 -o "$o"
no_output "$o"

# gguf-py: the pruned files as llama.cpp's Python reader sees them
py=${NB_PYTHON:-}
if [ -n "$py" ] && "$py" -c "import gguf, numpy" 2>/dev/null; then
  cat >"$tmp/check.py" <<'EOF'
import json, sys
import numpy as np
import gguf

def load(p):
    r = gguf.GGUFReader(p)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    kv = lambda k: int(r.fields[f"{arch}.{k}"].parts[-1][0])
    return r, arch, kv, {t.name: t for t in r.tensors}

def per_expert(name):
    s = name.split(".", 2)[2] if name.startswith("blk.") else ""
    return "_exps." in s or s in ("ffn_gate_inp.weight", "ffn_gate_inp.bias") or s.startswith("exp_probs_b.")

src, dst, report = sys.argv[1:4]
rep = json.load(open(report))
_, _, kv0, t0 = load(src)
r1, arch, kv1, t1 = load(dst)
keep, X = rep["expert_count_new"], rep["expert_count"]
assert kv0("expert_count") == X and kv1("expert_count") == keep, (kv1("expert_count"), keep)
assert kv1("expert_used_count") <= keep
assert set(t0) == set(t1), set(t0) ^ set(t1)
kept = {l["layer"]: [e["expert"] for e in l["kept"]] for l in rep["layers"]}
n_cut = 0
for name, a in t0.items():
    b = t1[name]
    sa, sb = list(a.shape), list(b.shape)  # gguf-py: ne order, as in the file
    assert a.tensor_type == b.tensor_type, name
    if per_expert(name):
        L = int(name.split(".")[1])
        assert sa[-1] == X and sb[:-1] == sa[:-1] and sb[-1] == keep, (name, sa, sb)
        # raw bytes: slice j of the output is slice kept[j] of the input
        ra = np.asarray(a.data).reshape(X, -1)
        rb = np.asarray(b.data).reshape(keep, -1)
        assert np.array_equal(rb, ra[kept[L]]), name
        n_cut += 1
    else:
        assert sa == sb, (name, sa, sb)
        assert np.array_equal(np.asarray(a.data), np.asarray(b.data)), name
    # the data fits the declared shape (what llama.cpp's loader checks)
    assert b.n_bytes == b.data.nbytes, name
assert n_cut == 4 * len(rep["layers"]), n_cut
print(f"gguf-py: {dst}: {len(t1)} tensors, {n_cut} cut to {keep} of {X} experts, shapes and bytes consistent")
EOF
  for m in mx5 q2e; do
    src=$([ $m = mx5 ] && echo "$mx" || echo "$q2")
    json=$([ $m = mx5 ] && echo "$tmp/mx5.json" || echo "$tmp/r.json")
    check "gguf-py reads $m" 0 "$py" "$tmp/check.py" "$src" "$tmp/$m.gguf" "$json"
    cat "$tmp/out"
  done
else
  echo "skip: gguf-py checks (NB_PYTHON unset or without gguf/numpy)"
fi

# llama.cpp itself (optional): NB_LLAMA_PYTHON names a Python with PyPI
# llama-cpp-python. The pruned files must load, and llama.cpp's logits must
# match nibble's engine (llama.cpp keeps an F16 KV cache: ~1e-3 relative).
lpy=${NB_LLAMA_PYTHON:-}
if [ -n "$lpy" ] && "$lpy" -c "import llama_cpp, numpy" 2>/dev/null; then
  cat >"$tmp/ll.py" <<'EOF'
import sys
import numpy as np
from llama_cpp import Llama
toks = [1, 72, 101, 108, 108, 111, 44, 32, 119]
model, nbl = sys.argv[1], sys.argv[2]
llm = Llama(model_path=model, n_ctx=32, logits_all=True, verbose=False, n_threads=1)
llm.eval(toks)
ll = np.array(llm.scores[:len(toks)], dtype=np.float32)
if nbl != "-":
    nb = np.fromfile(nbl, dtype=np.float32).reshape(len(toks), -1)
    d, m = float(np.abs(ll - nb).max()), float(np.abs(nb).max())
    assert d <= 1e-2 * m and (ll.argmax(1) == nb.argmax(1)).all(), (d, m)
    print(f"llama.cpp: {model}: logits match nibble's (max |diff| {d:.2e}, max |logit| {m:.3f})")
else:
    print(f"llama.cpp: {model}: loads and runs")
EOF
  for m in mx5 q2a; do
    check "nibble logits $m" 0 "$nb" logits --threads 1 "$tmp/$m.gguf" --tokens 1,72,101,108,108,111,44,32,119 -o "$tmp/$m.f32"
    check "llama.cpp runs $m" 0 "$lpy" "$tmp/ll.py" "$tmp/$m.gguf" "$tmp/$m.f32"
    cat "$tmp/out"
  done
  check "llama.cpp loads q2e (renormalize key ignored there)" 0 "$lpy" "$tmp/ll.py" "$tmp/q2e.gguf" -
else
  echo "skip: llama.cpp checks (set NB_LLAMA_PYTHON to a Python with llama-cpp-python)"
fi

exit $fail
