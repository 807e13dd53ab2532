#!/usr/bin/env bash
# e2e: `nibble embed` through the CLI, on a tiny synthetic gemma-embedding
# model (nibble synth, SentencePiece byte vocabulary) and the sentence set
# tests/data/text/embed_sentences.txt:
#   - text output: one line of E values per non-empty line, each unit-norm;
#     --json holds the same numbers; -o writes an .emb of the documented size;
#   - the same file at 1 and 2 threads (bit-identical);
#   - --compare against itself: distance 0, every nearest neighbour the same;
#     against a q8_0 quantization: a small non-zero distance; TEST.emb
#     --compare BASE.emb gives the same figures as running the model;
#   - refusals with one line and exit 2: a decoder model, a damaged .emb,
#     a base of other texts; usage errors exit 1; no partial output left.
# On the real EmbeddingGemma (scripts/fetch-models --quality): the HF
# directory embeds the ids of a few sentences to unit vectors at 1 and 2
# threads identically (skipped with a note when the model is not cached).
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
if [[ -z ${NB_BIN:-} || ! -x ${NB_BIN:-} ]]; then
  echo "SKIP: NB_BIN is not an executable nibble binary ('${NB_BIN:-}')"
  exit 77
fi
source "$root/tests/e2e/common.bash"
text=${NB_TEST_DATA:-$root/tests/data}/text/embed_sentences.txt
n_lines=$(grep -c . "$text")

"$nb" synth --arch gemma-embedding --layers 6 --dim 64 --ff 96 --heads 4 --kv-heads 1 --vocab 400 \
  --dtype f32 --seed 2 -o "$tmp/enc.gguf" --quiet || { echo "FAIL: synth"; exit 1; }

check "embed prints one line per text" 0 "$nb" embed "$tmp/enc.gguf" --text "$text" --quiet
[[ $(wc -l <"$tmp/out") == "$n_lines" ]] || { echo "FAIL: $(wc -l <"$tmp/out") lines, want $n_lines"; fail=1; }
awk '{ if (NF != 64) bad = 1; s = 0; for (i = 1; i <= NF; i++) s += $i * $i;
       if (s < 0.9999 || s > 1.0001) bad = 1 } END { exit bad }' "$tmp/out" ||
  { echo "FAIL: a line is not 64 unit-norm values"; fail=1; }
cp "$tmp/out" "$tmp/text.out"

check "embed --json" 0 "$nb" embed "$tmp/enc.gguf" --text "$text" --json --quiet
python3 - "$tmp/out" "$tmp/text.out" <<'EOF' || { echo "FAIL: --json differs from the text output"; fail=1; }
import json, sys
j = json.load(open(sys.argv[1]))
rows = [[float(x) for x in ln.split()] for ln in open(sys.argv[2])]
assert j["dim"] == 64 and j["count"] == len(rows)
assert all(abs(a - b) <= 1e-6 * max(1, abs(b)) for r, e in zip(rows, j["embeddings"]) for a, b in zip(r, e))
EOF

check "embed -o at 1 thread" 0 "$nb" embed "$tmp/enc.gguf" --text "$text" -o "$tmp/t1.emb" -t 1 --quiet
check "embed -o at 2 threads" 0 "$nb" embed "$tmp/enc.gguf" --text "$text" -o "$tmp/t2.emb" -t 2 --quiet
cmp -s "$tmp/t1.emb" "$tmp/t2.emb" || { echo "FAIL: 1 and 2 threads differ"; fail=1; }
[[ $(stat -c %s "$tmp/t1.emb") == $((56 + n_lines * 64 * 4)) ]] || { echo "FAIL: .emb size"; fail=1; }
[[ ! -s $tmp/out ]] || { echo "FAIL: -o also printed embeddings"; fail=1; }

check "compare with itself" 0 "$nb" embed "$tmp/enc.gguf" --text "$text" --compare "$tmp/t1.emb" --quiet
has "mean 0.000e+00" "$tmp/out"
has "same nearest neighbour: 24 of 24" "$tmp/out"

check "quantize q8_0" 0 "$nb" quantize "$tmp/enc.gguf" -o "$tmp/q8.gguf" --type q8_0 --quiet
check "embed q8_0 -o" 0 "$nb" embed "$tmp/q8.gguf" --text "$text" -o "$tmp/q8.emb" --quiet
check "compare q8_0 (json)" 0 "$nb" embed "$tmp/q8.gguf" --text "$text" --compare "$tmp/t1.emb" --json --quiet
python3 - "$tmp/out" <<'EOF' || { echo "FAIL: q8_0 distance not small and positive"; fail=1; }
import json, sys
c = json.load(open(sys.argv[1]))
assert 0 < c["cos_dist_mean"] <= c["cos_dist_max"] < 0.05 and c["queries"] == 24 and c["corpus"] == 24, c
EOF
cp "$tmp/out" "$tmp/q8.json"
check "compare two files" 0 "$nb" embed "$tmp/q8.emb" --compare "$tmp/t1.emb" --json --quiet
cmp -s "$tmp/out" "$tmp/q8.json" || { echo "FAIL: file compare differs from the model run"; fail=1; }

# refusals: one line naming the problem, exit 2 (input) or 1 (usage), no partial output
"$nb" synth --arch llama --dim 64 --vocab 400 -o "$tmp/llama.gguf" --quiet
check "a decoder is refused" 2 "$nb" embed "$tmp/llama.gguf" --text "$text" -o "$tmp/x.emb"
has "not a text encoder" "$tmp/err"
[[ $(wc -l <"$tmp/err") == 1 ]] || { echo "FAIL: more than one error line"; fail=1; }
[[ ! -e $tmp/x.emb ]] && ! ls "$tmp"/x.emb.* >/dev/null 2>&1 || { echo "FAIL: output left behind"; fail=1; }
head -c 100 "$tmp/t1.emb" >"$tmp/short.emb"
check "a truncated .emb is refused" 2 "$nb" embed "$tmp/enc.gguf" --text "$text" --compare "$tmp/short.emb"
has "short.emb" "$tmp/err"
printf 'only one line\nand another\n' >"$tmp/other.txt"
check "embed other texts" 0 "$nb" embed "$tmp/enc.gguf" --text "$tmp/other.txt" -o "$tmp/other.emb" --quiet
check "a base of other texts is refused" 2 "$nb" embed "$tmp/enc.gguf" --text "$tmp/other.txt" --compare "$tmp/t1.emb"
has "differ" "$tmp/err"
check "missing --text" 1 "$nb" embed "$tmp/enc.gguf"
check ".emb input without --compare" 1 "$nb" embed "$tmp/t1.emb"
check "bad ids line" 2 "$nb" embed "$tmp/enc.gguf" --ids --text "$text"
has "line 1" "$tmp/err"

# the real EmbeddingGemma HF directory, when cached
model=$("$root/scripts/fetch-models" --path embeddinggemma-300m 2>/dev/null || true)
if [[ -n $model && -d $model ]]; then
  printf '2 818 5279 563 4135 236761 1\n2 9259 1902 1\n' >"$tmp/ids.txt"
  check "EmbeddingGemma, 1 thread" 0 "$nb" embed "$model" --ids --text "$tmp/ids.txt" -o "$tmp/r1.emb" -t 1 --quiet
  check "EmbeddingGemma, 2 threads" 0 "$nb" embed "$model" --ids --text "$tmp/ids.txt" -o "$tmp/r2.emb" -t 2 --quiet
  cmp -s "$tmp/r1.emb" "$tmp/r2.emb" || { echo "FAIL: EmbeddingGemma: 1 and 2 threads differ"; fail=1; }
else
  echo "note: EmbeddingGemma not cached (scripts/fetch-models --quality): real-model checks skipped"
fi
exit $fail
