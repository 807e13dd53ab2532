#!/usr/bin/env bash
# bench/quality.sh — issue 5's quality table: for each real model cached by
# scripts/fetch-models (Gemma 3 270M Q4_K_M, SmolLM2-135M Q4_1), every 4-bit
# scheme x method (rtn, imatrix, gptq): size, bits per weight, PPL, mean KLD
# and same-top-token rate vs the model's own weights dequantized to F32,
# quantize time and peak RSS. Writes the "## Quality" section of
# bench/RESULTS.md (other sections are left alone). Resumable: finished rows
# are kept in $WORK/quality.tsv and not re-run. Models that are not cached
# are skipped with a message. Not a test: nothing here is asserted.
# usage: bench/quality.sh
#   env: NB_BIN (default build/release/nibble), WORK (default build/quality),
#        MODELS, SCHEMES, METHODS (comma lists), CHUNKS=4, CTX=512,
#        CALIB_TOKENS=2048, THREADS, RESULTS (file to update)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nb=${NB_BIN:-$root/build/release/nibble}
[ -x "$nb" ] || { echo "quality: no nibble binary at $nb (set NB_BIN)" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "quality: needs GNU time (apt-get install time)" >&2; exit 1; }
args=(--nibble "$nb" --repo "$root" --work "${WORK:-$root/build/quality}"
      --ctx "${CTX:-512}" --chunks "${CHUNKS:-4}" --calib-tokens "${CALIB_TOKENS:-2048}")
[ -n "${MODELS:-}" ] && args+=(--models "$MODELS")
[ -n "${SCHEMES:-}" ] && args+=(--schemes "$SCHEMES")
[ -n "${METHODS:-}" ] && args+=(--methods "$METHODS")
[ -n "${THREADS:-}" ] && args+=(--threads "$THREADS")
[ -n "${RESULTS:-}" ] && args+=(--results "$RESULTS")
exec python3 "$root/bench/quality.py" "${args[@]}" "$@"
