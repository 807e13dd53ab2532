#!/usr/bin/env bash
# `nibble build` with Hugging Face outputs (recipe outputs.formats) on a
# synthetic model: recipes/dense-int4.json writes a GGUF and a GPTQ directory
# from the same validated job; the directory is byte for byte what `nibble
# quantize --format gptq` writes by hand; manifest.json lists every file of it;
# the bundle carries it (a MoE's too), `verify` passes and names an altered file, `tar --zstd
# -xf` unpacks it and Python's safetensors reads it back (skipped with a
# reason without NB_PYTHON); a rerun skips every stage, the export included,
# and another format reuses the quantize and validate stages; combinations a
# layout cannot hold are refused before any work, naming the key. The report
# draws the per-token KLD histogram. Needs NB_BIN (set by ctest).
set -uo pipefail
. "$(dirname "$0")/common.bash"
root=$(cd "$(dirname "$0")/../.." && pwd)
calib="$NB_TEST_DATA/text/calib.txt"
eval_="$NB_TEST_DATA/text/eval.txt"
vars=(--var "CALIB=$calib" --var "EVAL=$eval_" --var CALIB_CTX=64 --var CALIB_TOKENS=1024 --var EVAL_CTX=64)
recipe="$root/recipes/dense-int4.json"
sha() { sha256sum "$1" | cut -c1-64; }
py=${NB_PYTHON:-}

check "synth llama" 0 "$nb" synth --arch llama --layers 2 --dim 256 --ff 256 --vocab 300 --seed 3 -o "$tmp/llama.gguf"
check "build gguf + gptq" 0 "$nb" build "$recipe" --source "$tmp/llama.gguf" "${vars[@]}" -o "$tmp/g"
has "export-gptq" "$tmp/out"
n=$(ls "$tmp/g/dense-int4-gptq" | wc -l)
has "dense-int4-gptq/: gptq, $n files" "$tmp/out"
for f in dense-int4.gguf report.html manifest.json dense-int4.tar.zst dense-int4-gptq/config.json \
         dense-int4-gptq/model.safetensors; do
  [ -s "$tmp/g/$f" ] || { echo "FAIL: $f missing"; fail=1; }
done

# the same job by hand: the directory is the same bytes (the export packs the validated GGUF)
check "quantize --format gptq by hand" 0 "$nb" quantize "$tmp/llama.gguf" --type int4-g128 --method gptq \
  --calib "$calib" --ctx 64 --calib-tokens 1024 --format gptq -o "$tmp/hand" -q
n_same=0
for f in "$tmp"/hand/*; do
  if cmp -s "$f" "$tmp/g/dense-int4-gptq/$(basename "$f")"; then n_same=$((n_same + 1));
  else echo "FAIL: $(basename "$f") differs from nibble quantize --format gptq"; fail=1; fi
done
[ "$n_same" = "$n" ] && [ "$n" -ge 6 ] || { echo "FAIL: $n_same files equal the hand export's, the directory holds $n"; fail=1; }

# every file of the directory in manifest.json with its size and SHA-256; the histogram in the metrics
python3 - "$tmp/g" <<'EOF' || fail=1
import hashlib, json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
names = {f["name"]: f for f in m["files"]}
on_disk = sorted("dense-int4-gptq/" + n for n in os.listdir(os.path.join(d, "dense-int4-gptq")))
listed = sorted(n for n in names if n.startswith("dense-int4-gptq/"))
assert listed == on_disk, f"manifest lists {listed}, the directory holds {on_disk}"
for n in on_disk:
    b = open(os.path.join(d, n), "rb").read()
    assert names[n]["size"] == len(b) and names[n]["sha256"] == hashlib.sha256(b).hexdigest(), n
out = m["outputs"]
assert [(o["format"], o["dir"], o["files"]) for o in out] == [("gptq", "dense-int4-gptq", len(on_disk))], out
h = m["metrics"]["kld_histogram"]
assert (h["lo_log10"], h["hi_log10"], h["per_decade"]) == (-6, 2, 5) and len(h["counts"]) == 42, h
assert sum(h["counts"]) > 0, h
print(f"ok: manifest lists the {len(on_disk)} files of the GPTQ directory; KLD histogram over {sum(h['counts'])} tokens")
EOF

check "verify bundle" 0 "$nb" verify "$tmp/g/dense-int4.tar.zst"
has "$((n + 2)) files" "$tmp/out"
check "verify dir" 0 "$nb" verify "$tmp/g"
check "inspect bundle" 0 "$nb" inspect "$tmp/g/dense-int4.tar.zst"
has "output      dense-int4-gptq" "$tmp/out"
has "dense-int4-gptq/model.safetensors" "$tmp/out"
has "dense-int4-gptq/" "$tmp/g/report.html"
has "one bar per bin" "$tmp/g/report.html"
hasnt "<script" "$tmp/g/report.html"

# the system tar unpacks the directory; Python's safetensors reads it back
mkdir -p "$tmp/un" && tar --zstd -xf "$tmp/g/dense-int4.tar.zst" -C "$tmp/un" ||
  { echo "FAIL: tar --zstd cannot unpack the bundle"; fail=1; }
cmp -s "$tmp/un/dense-int4-gptq/model.safetensors" "$tmp/g/dense-int4-gptq/model.safetensors" ||
  { echo "FAIL: the unpacked safetensors differs"; fail=1; }
if [ -n "$py" ] && "$py" -c "import safetensors, numpy" 2>/dev/null; then
  "$py" - "$tmp/un/dense-int4-gptq" <<'EOF' || fail=1
import json, os, sys
from safetensors.numpy import load_file
d = sys.argv[1]
t = load_file(os.path.join(d, "model.safetensors"))
q = json.load(open(os.path.join(d, "config.json")))["quantization_config"]
assert q["quant_method"] == "gptq" and q["bits"] == 4 and q["group_size"] == 128, q
for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
    for l in (0, 1):
        qw = t[f"model.layers.{l}.self_attn.{p}.qweight"]
        sc = t[f"model.layers.{l}.self_attn.{p}.scales"]
        assert str(qw.dtype) == "int32" and str(sc.dtype) == "float16", (p, qw.dtype, sc.dtype)
        assert qw.shape[0] * 8 == 256 and sc.shape[0] == 256 // 128, (p, qw.shape, sc.shape)
assert t["model.embed_tokens.weight"].shape == (300, 256)
print(f"ok: safetensors reads the unpacked GPTQ directory ({len(t)} tensors)")
EOF
else
  echo "SKIP: safetensors read-back (NB_PYTHON '${py}' without safetensors and numpy; scripts/test sets it up)"
fi

# an altered file inside the directory: verify names it (directory, and a bundle repacked in manifest order)
cp -r "$tmp/g" "$tmp/g2"   # a copy: the published files are hard links to the stage's
printf 'x' | dd of="$tmp/g2/dense-int4-gptq/model.safetensors" bs=1 seek=4000 conv=notrunc status=none
check "altered dir file" 2 "$nb" verify "$tmp/g2"
has "dense-int4-gptq/model.safetensors: sha256 differs" "$tmp/err"
cp "$tmp/g2/dense-int4-gptq/model.safetensors" "$tmp/un/dense-int4-gptq/model.safetensors"
names=$(python3 -c 'import json,sys; print("\n".join(f["name"] for f in json.load(open(sys.argv[1]))["files"]))' \
  "$tmp/un/manifest.json")
(cd "$tmp/un" && printf 'manifest.json\n%s\n' "$names" | tar --zstd --no-recursion -cf "$tmp/bad.tar.zst" -T -) ||
  { echo "FAIL: cannot repack"; fail=1; }
check "altered bundle entry" 2 "$nb" verify "$tmp/bad.tar.zst"
has "dense-int4-gptq/model.safetensors: sha256 differs" "$tmp/err"
cp "$tmp/g/dense-int4-gptq/model.safetensors" "$tmp/un/dense-int4-gptq/model.safetensors"
rm -f "$tmp/un/dense-int4-gptq/config.json"
(cd "$tmp/un" && printf 'manifest.json\n%s\n' "$names" | grep -v config.json | tar --zstd --no-recursion -cf "$tmp/bad2.tar.zst" -T -)
check "missing bundle entry" 2 "$nb" verify "$tmp/bad2.tar.zst"
has "dense-int4-gptq/config.json: in the manifest but not in the bundle" "$tmp/err"

# a manifest naming a file outside the bundle's root is malformed, not followed
python3 - "$tmp/g2/manifest.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
m["files"][2]["name"] = "dense-int4-gptq/../../outside"
json.dump(m, open(sys.argv[1], "w"))
EOF
check "name escaping the root" 2 "$nb" verify "$tmp/g2"
has "files\[2\] is malformed" "$tmp/err"

# resume: a rerun skips every stage, the export included, and publishes the same bytes
ref=$(sha "$tmp/g/dense-int4-gptq/model.safetensors")
check "rerun" 0 "$nb" build "$recipe" --source "$tmp/llama.gguf" "${vars[@]}" -o "$tmp/g"
[ "$(grep -c 'done in an earlier run' "$tmp/out")" = 4 ] || { echo "FAIL: rerun did not skip 4 stages"; cat "$tmp/out"; fail=1; }
has "export-gptq: done in an earlier run" "$tmp/out"
[ "$(sha "$tmp/g/dense-int4-gptq/model.safetensors")" = "$ref" ] || { echo "FAIL: rerun changed the directory"; fail=1; }
check "verify after rerun" 0 "$nb" verify "$tmp/g/dense-int4.tar.zst"
# another layout of the same variant: only its export stage runs
check "awq from the same stages" 0 "$nb" build "$recipe" --source "$tmp/llama.gguf" "${vars[@]}" --var HF_FORMAT=awq -o "$tmp/g"
[ "$(grep -c 'done in an earlier run' "$tmp/out")" = 3 ] || { echo "FAIL: awq did not reuse 3 stages"; cat "$tmp/out"; fail=1; }
has "export-awq finished" "$tmp/out"
check "verify awq" 0 "$nb" verify "$tmp/g"
has '"dense-int4-awq/model.safetensors"' "$tmp/g/manifest.json"
hasnt '"dense-int4-gptq/' "$tmp/g/manifest.json"

# combinations a layout cannot hold: refused before any work, naming the key; nothing written
check "k-quant to gptq" 2 "$nb" build "$recipe" --source "$tmp/llama.gguf" "${vars[@]}" --var MIX=q4_k_m -o "$tmp/x1"
has "outputs.formats\[1\]: gptq cannot hold" "$tmp/err"
has "got q4_k_m" "$tmp/err"
[ ! -e "$tmp/x1" ] || { echo "FAIL: a refused recipe wrote $tmp/x1"; fail=1; }
check "bnb-nf4 with gptq" 2 "$nb" build "$recipe" --source "$tmp/llama.gguf" "${vars[@]}" --var MIX=nf4-dq \
  --var HF_FORMAT=bnb-nf4 -o "$tmp/x2"
has "outputs.formats\[1\]: bnb-nf4 cannot hold" "$tmp/err"
has "multiples of 16384" "$tmp/err"
printf '{"nibble_recipe":1,"name":"x","source":"%s","target":{"size":"900KiB"},"outputs":{"formats":["gguf","bnb-nf4"]}}' \
  "$tmp/llama.gguf" > "$tmp/r0.json"
check "bnb-nf4 with a planned mix" 2 "$nb" build "$tmp/r0.json" -o "$tmp/x8"
has "outputs.formats\[1\]: bnb-nf4 cannot hold" "$tmp/err"
has "a planned mix (size budget)" "$tmp/err"
sed 's/"bnb-nf4"/"gptq"/' "$tmp/r0.json" > "$tmp/r0g.json"
check "gptq with a planned mix" 2 "$nb" build "$tmp/r0g.json" -o "$tmp/x9"
has "a size budget mixes types" "$tmp/err"
[ ! -e "$tmp/x8" ] && [ ! -e "$tmp/x9" ] || { echo "FAIL: a refused recipe wrote its output directory"; fail=1; }
check "synth moe" 0 "$nb" synth --arch mixtral --layers 2 --dim 256 --ff 128 --experts 4 --experts-used 2 --vocab 300 \
  --seed 4 -o "$tmp/moe.gguf"
# a MoE's experts go into the GPTQ directory one Linear per expert
check "moe to gptq" 0 "$nb" build "$recipe" --source "$tmp/moe.gguf" "${vars[@]}" -o "$tmp/m"
check "verify moe" 0 "$nb" verify "$tmp/m/dense-int4.tar.zst"
has '"dense-int4-gptq/model.safetensors"' "$tmp/m/manifest.json"
check "unknown format" 2 "$nb" build "$recipe" --source "$tmp/llama.gguf" "${vars[@]}" --var HF_FORMAT=onnx -o "$tmp/x4"
has "outputs.formats\[1\]: unknown format 'onnx'" "$tmp/err"
printf '{"nibble_recipe":1,"name":"x","source":"a.gguf","target":{"mix":"int4-g128"},"outputs":{"formats":[{"format":"gptq","name":"report.html"}]}}' > "$tmp/r1.json"
check "name clash" 2 "$nb" build "$tmp/r1.json" -o "$tmp/x5"
has "the name 'report.html' is used twice" "$tmp/err"
printf '{"nibble_recipe":1,"name":"x","source":"a.gguf","target":{"mix":"int4-g128"},"outputs":{"formats":["gptq","gptq"]}}' > "$tmp/r2.json"
check "format twice" 2 "$nb" build "$tmp/r2.json" -o "$tmp/x6"
has "outputs.formats\[1\]: 'gptq' is listed twice" "$tmp/err"
printf '{"nibble_recipe":1,"name":"x","source":"a.gguf","target":{"mix":"int4-g128"},"outputs":{"formats":[{"format":"gptq","name":"../up"}]}}' > "$tmp/r3.json"
check "name with a directory" 2 "$nb" build "$tmp/r3.json" -o "$tmp/x7"
has "outputs.formats\[0\].name: a plain name" "$tmp/err"
echo "done"
exit $fail
