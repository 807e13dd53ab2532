#!/usr/bin/env bash
# bench/embed.sh — EmbeddingGemma-300M (F32 HF directory from
# `scripts/fetch-models --quality`): nibble's encoder against llama.cpp and
# transformers, and the fidelity of each weight type, on the sentence set
# tests/data/text/embed_sentences.txt (24 queries + their 24 paraphrases).
#
#   1. nibble convert DIR -> F32 GGUF; bench/embed_tok.py adds the tokenizer
#      keys of the Gemma 3 270M GGUF (until tokenizer.json is imported);
#   2. nibble quantize to each type (f16 q8_0 q4_k_m ...);
#   3. per type: nibble embed -o nb-T.emb and llama.cpp (llama-cpp-python,
#      bench/embed_ref.py llama) -o ll-T.emb; agreement = `nibble embed
#      nb-T.emb --compare ll-T.emb`; fidelity = nb-T against nb-f32 and
#      ll-T against ll-f32 (mean / worst cosine distance, same nearest
#      neighbour, pair hits);
#   4. transformers on the HF directory (bench/embed_ref.py torch, with the
#      oracle venv) against nb-f32, when TORCH_PY is set.
# Prints one markdown table; outputs already present in --out are reused.
#
#   bench/embed.sh [--nibble BIN] [--types "f16 q8_0 q4_k_m"] [--out DIR]
#   env: LLAMA_PY (python with llama_cpp), TORCH_PY (python with torch +
#        transformers), THREADS (2)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nb=$root/build/rel/nibble
types="f16 q8_0 q4_k_m"
out=$root/out/bench-embed
while (($#)); do
  case $1 in
    --nibble) nb=$2; shift 2 ;;
    --types) types=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "bench/embed.sh: unknown argument $1" >&2; exit 1 ;;
  esac
done
[[ -x $nb ]] || { echo "bench/embed.sh: no nibble at $nb (build it or pass --nibble)" >&2; exit 1; }
src=$("$root/scripts/fetch-models" --path embeddinggemma-300m) ||
  { echo "bench/embed.sh: run scripts/fetch-models --quality first" >&2; exit 1; }
tok=$("$root/scripts/fetch-models" --path gemma3-270m) || { echo "bench/embed.sh: run scripts/fetch-models" >&2; exit 1; }
llama_py=${LLAMA_PY:-}
torch_py=${TORCH_PY:-}
threads=${THREADS:-2}
text=$root/tests/data/text/embed_sentences.txt
py=$("$root/scripts/pyenv")
mkdir -p "$out"
cd "$out"

[[ -f raw-f32.gguf ]] || "$nb" convert "$src" -o raw-f32.gguf --type f32 --quiet
[[ -f f32.gguf ]] || "$py" "$root/bench/embed_tok.py" raw-f32.gguf "$tok" f32.gguf
for t in $types; do
  [[ -f $t.gguf ]] || "$nb" quantize f32.gguf -o "$t.gguf" --type "$t" --quiet
done

metric() { # metric TEST.emb BASE.emb -> "mean | worst | same NN | pair hits"
  "$nb" embed "$1" --compare "$2" --json --any-text --quiet |
    python3 -c 'import json,sys; c=json.load(sys.stdin); print("%.2e | %.2e | %d/%d | %d/%d" % (c["cos_dist_mean"], c["cos_dist_max"], c["same_nn"], c["queries"], c["pair_hits"], c["queries"]))'
}

echo "| type | MiB | nb vs llama.cpp: mean | worst | nb vs nb F32: mean | worst | same NN | pairs | llama.cpp vs its F32: mean | worst | same NN | pairs | nibble s | llama.cpp s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for t in f32 $types; do
  s_nb=- s_ll=-
  if [[ ! -f nb-$t.emb ]]; then
    a=$(date +%s.%N)
    "$nb" embed "$t.gguf" --text "$text" -o "nb-$t.emb" -t "$threads" --quiet
    s_nb=$(echo "$(date +%s.%N) - $a" | bc)
  fi
  if [[ -n $llama_py && ! -f ll-$t.emb ]]; then
    a=$(date +%s.%N)
    "$llama_py" "$root/bench/embed_ref.py" llama "$t.gguf" "$text" "ll-$t.emb" "ids-$t.txt"
    s_ll=$(echo "$(date +%s.%N) - $a" | bc)
  fi
  agree="- | -" fid_nb=- fid_ll="- | - | - | -"
  [[ -f ll-$t.emb ]] && agree=$(metric "nb-$t.emb" "ll-$t.emb" | cut -d'|' -f1-2)
  fid_nb=$(metric "nb-$t.emb" nb-f32.emb)
  [[ -f ll-$t.emb && -f ll-f32.emb ]] && fid_ll=$(metric "ll-$t.emb" ll-f32.emb)
  mib=$(($(stat -c %s "$t.gguf") / 1048576))
  echo "| $t | $mib | $agree | $fid_nb | $fid_ll | $s_nb | $s_ll |"
done
if [[ -n $torch_py ]]; then
  [[ -f torch.emb ]] || "$torch_py" "$root/bench/embed_ref.py" torch "$src" "$text" torch.emb
  echo
  echo "transformers (HF directory, F32) vs nibble F32: $(metric nb-f32.emb torch.emb)"
  [[ -f ll-f32.emb ]] && echo "transformers (HF directory, F32) vs llama.cpp F32: $(metric ll-f32.emb torch.emb)"
fi
echo
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); nibble $(git -C "$root" rev-parse --short HEAD)"
