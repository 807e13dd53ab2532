#!/usr/bin/env bash
# bench/quality_embed.sh — issue 17.7's quality table on an unquantized encoder:
# EmbeddingGemma-300M (F32 HF directory from `scripts/fetch-models --quality`),
# each 4-bit scheme x method quantized by nibble, and llama.cpp's own
# Q4_K_M + imatrix and IQ4_XS + imatrix of the same F32 GGUF (imatrix from
# llama-imatrix on the same calibration text), all embedded by nibble's engine
# (`nibble embed`, fast arithmetic) and scored with `nibble embed --compare`
# against the F32 GGUF's embeddings: mean / worst cosine distance, same nearest
# neighbour. Columns: file bytes, bits per weight of the block matrices (blk.*,
# from the GGUF tensor table), quantize wall seconds and peak RSS (GNU time),
# the load average before the quantize.
#
# Calibration text: the first CALIB_BYTES of tests/data/text/calib.txt cut at a
# line end ($WORK/calib.txt: 9 chunks of CTX=256 tokens with Gemma's tokenizer);
# both tools use every whole chunk of it in order (llama-imatrix's chunking: BOS
# first, then the text; nibble's corpus mirrors it), GPTQ and AWQ too.
#
# Rows go to $WORK/quality_embed.tsv (resumable: finished rows are not re-run);
# the markdown table is printed from it at the end. Not a test: nothing asserted.
#
# usage: bench/quality_embed.sh [ROW...]   ROW = scheme:method, e.g. q4_k_m:gptq,
#          llama:q4_k_m, llama:iq4_xs (default: every row, llama.cpp's first; llama@RE=TYPE:q4_k_m
#          passes --tensor-type RE=TYPE to llama-quantize);
#          scheme@T=TYPE adds --rule 'blk.*.T.weight=TYPE' (iq4_xs@ffn_down=q5_0:gptq; several
#          @T=TYPE in a row add one rule each);
#          sizeBYTES is the size planner's mix for a file of at most BYTES (--target-size);
#          pinsizeBYTES the same with token_embd pinned to Q6_K (--rule, as llama.cpp's files have it),
#          calsizeBYTES that with the planner's errors calibrated (--calibrate-kld calib.txt: each
#          tensor group's measured cosine distance); method mixed: GPTQ/AWQ/imatrix per tensor.
#          NF4 and INT4 keep token_embd in Q6_K (--rule) as the GGUF mixes do: their
#          own mixes leave it F16, which would double the file
#   env: NB_BIN (build/rel/nibble), LLAMA_BIN (directory with llama-imatrix and
#        llama-quantize; without it the llama.cpp rows are skipped), WORK
#        (build/quality-embed), THREADS (2), CTX (256), CALIB_BYTES (10700)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nb=${NB_BIN:-$root/build/rel/nibble}
[[ -x $nb ]] || { echo "quality_embed: no nibble at $nb (set NB_BIN)" >&2; exit 1; }
work=${WORK:-$root/build/quality-embed}
thr=${THREADS:-2}; ctx=${CTX:-256}
llama=${LLAMA_BIN:-}
py=$("$root/scripts/pyenv")
text=$root/tests/data/text/embed_sentences.txt
mkdir -p "$work"
cd "$work"

# ---- source: the F32 GGUF bench/embed.sh makes (tokenizer keys via bench/embed_tok.py) ----
if [[ ! -f f32.gguf ]]; then
  src=$("$root/scripts/fetch-models" --path embeddinggemma-300m) || { echo "run scripts/fetch-models --quality" >&2; exit 1; }
  tok=$("$root/scripts/fetch-models" --path gemma3-270m) || { echo "run scripts/fetch-models" >&2; exit 1; }
  "$nb" convert "$src" -o raw-f32.gguf --type f32 --quiet
  "$py" "$root/bench/embed_tok.py" raw-f32.gguf "$tok" f32.gguf
  rm -f raw-f32.gguf
fi
if [[ ! -f calib.txt ]]; then
  awk -v max="${CALIB_BYTES:-10700}" '{ n += length($0) + 1; if (n > max) exit; print }' \
    "$root/tests/data/text/calib.txt" > calib.txt
fi
[[ -f nb-f32.emb ]] || "$nb" embed f32.gguf --text "$text" -o nb-f32.emb -t "$thr" --quiet
[[ -f nb-imatrix.gguf ]] || "$nb" calibrate f32.gguf --calib calib.txt --ctx "$ctx" -o nb-imatrix.gguf \
  -t "$thr" 2> nb-imatrix.log
if [[ -n $llama && ! -f ll-imatrix.gguf ]]; then
  # llama-imatrix refuses a vocabulary that adds EOS (EmbeddingGemma's does); its chunks never
  # hold one (BOS + text, as nibble's), so the override changes nothing it measures
  "$llama/llama-imatrix" -m f32.gguf -f calib.txt -c "$ctx" -b "$ctx" -ub "$ctx" -o ll-imatrix.gguf -t "$thr" --no-ppl \
    --override-kv tokenizer.ggml.add_eos_token=bool:false \
    > ll-imatrix.log 2>&1 || { echo "llama-imatrix failed: see $work/ll-imatrix.log" >&2; exit 1; }
fi

tsv=quality_embed.tsv
[[ -f $tsv ]] || printf 'row\tbytes\tbpw_blk\tmean\tworst\tsame_nn\tqueries\tseconds\trss_mb\tload\n' > $tsv

bpw_blk() { # GGUF -> bits per weight of blk.* matrices (nibble's tensor table: it names NF4/INT4 too)
  "$nb" inspect "$1" --json | python3 -c '
import json, sys
t = [x for x in json.load(sys.stdin)["tensors"] if x["name"].startswith("blk.") and len(x["shape"]) >= 2]
n = sum(x["shape"][0] * x["shape"][1] for x in t)
print("%.3f" % (8.0 * sum(x["bytes"] for x in t) / n))'
}

one() { # one ROW
  local row=$1 sc=${1%%:*} me=${1#*:} out args=() rule=
  if [[ $sc == *@* ]]; then rule=${sc#*@}; sc=${sc%%@*}; fi # rule: T=TYPE[@T=TYPE...]
  grep -q "^$row	" $tsv && return 0
  out=${row/:/.}.gguf
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  if [[ $sc == llama ]]; then
    [[ -n $llama ]] || { echo "skip $row: no LLAMA_BIN" >&2; return 0; }
    local r; local -a rs=() la=()
    [[ -n $rule ]] && IFS=@ read -ra rs <<< "$rule"
    for r in "${rs[@]}"; do la+=(--tensor-type "$r"); done # llama@dense_2=q6_K:q4_k_m: a regex over the names
    /usr/bin/time -f "TIME %e %M" -o "$row.time" "$llama/llama-quantize" --imatrix ll-imatrix.gguf "${la[@]}" \
      f32.gguf "$out" "${me^^}" "$thr" > "$row.log" 2>&1
  else
    if [[ $sc == size* ]]; then args=(--target-size "${sc#size}" -t "$thr" --quiet) # the planner's mix
    elif [[ $sc == pinsize* ]]; then # the planner's mix, token_embd pinned to Q6_K as in llama.cpp's files
      args=(--target-size "${sc#pinsize}" --rule token_embd.weight=q6_K -t "$thr" --quiet)
    elif [[ $sc == calsize* ]]; then # ... and its errors calibrated on the embeddings of calib.txt's lines
      args=(--target-size "${sc#calsize}" --rule token_embd.weight=q6_K --calibrate-kld calib.txt -t "$thr" --quiet)
    else args=(--type "$sc" -t "$thr" --quiet); fi
    local r; local -a rs=()
    [[ -n $rule ]] && IFS=@ read -ra rs <<< "$rule"
    for r in "${rs[@]}"; do args+=(--rule "blk.*.${r%%=*}.weight=${r#*=}"); done
    [[ $sc == nf4* || $sc == int4* ]] && args+=(--rule "token_embd.weight=q6_K")
    case $me in
      rtn) ;;
      imatrix) args+=(--imatrix nb-imatrix.gguf) ;;
      mixed) args+=(--method mixed --imatrix nb-imatrix.gguf --calib calib.txt --ctx "$ctx") ;;
      *) args+=(--method "$me" --calib calib.txt --ctx "$ctx") ;;
    esac
    /usr/bin/time -f "TIME %e %M" -o "$row.time" "$nb" quantize f32.gguf -o "$out" "${args[@]}" > "$row.log" 2>&1
  fi
  "$nb" embed "$out" --text "$text" -o "$row.emb" -t "$thr" --quiet
  local c; c=$("$nb" embed "$row.emb" --compare nb-f32.emb --json --quiet |
    python3 -c 'import json,sys; c=json.load(sys.stdin); print("%.4e\t%.4e\t%d\t%d" % (c["cos_dist_mean"], c["cos_dist_max"], c["same_nn"], c["queries"]))')
  local tm; tm=$(awk '/^TIME/ {printf "%s\t%.0f", $2, $3 / 1024}' "$row.time")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$(stat -c %s "$out")" "$(bpw_blk "$out")" "$c" "$tm" "$load" >> $tsv
  [[ $sc == llama ]] || rm -f "$out" # llama.cpp's files are kept for llama-embedding
}

rows=("$@")
if ((${#rows[@]} == 0)); then
  rows=(llama:q4_k_m llama:iq4_xs)
  for sc in q4_k_m iq4_xs iq4_nl q4_0 nf4 int4-g32 int4-g128; do
    for me in rtn imatrix gptq awq awq+gptq; do rows+=("$sc:$me"); done
  done
fi
for r in "${rows[@]}"; do one "$r"; done

echo "| file | bytes | MiB | bpw blk.* | mean cos. distance | worst | same NN | quantize s | peak RSS MiB | load |"
echo "|---|---|---|---|---|---|---|---|---|---|"
tail -n +2 $tsv | awk -F'\t' '{printf "| %s | %d | %.1f | %s | %.3e | %.3e | %d/%d | %s | %s | %s |\n", $1, $2, $2/1048576, $3, $4, $5, $6, $7, $8, $9, $10}'
echo
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); nibble $(git -C "$root" rev-parse --short HEAD)"
