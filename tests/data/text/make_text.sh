#!/usr/bin/env bash
# tests/data/text/make_text.sh — regenerate the evaluation and calibration
# texts from Debian's bible-kjv-text package (King James Version, public
# domain; `apt-get install bible-kjv-text` brings the `bible` reader).
# Verse labels ("Ruth1:1 ") are dropped and each chapter becomes one
# paragraph under a "Book N" heading. eval.txt and calib.txt share no book.
set -euo pipefail
cd "$(dirname "$0")"
command -v bible >/dev/null || { echo "needs the 'bible' reader: apt-get install bible-kjv-text" >&2; exit 1; }

# book name as printed, verse spec for `bible`
emit() {
  local title=$1 spec=$2
  bible -f "$spec" | awk -v title="$title" '
    {
      label = $1; sub(/^[^ ]+ /, "")
      split(label, a, ":"); ch = a[1]; sub(/^[A-Za-z]+/, "", ch)
      if (ch != cur) { if (cur != "") printf "\n\n"; printf "%s %s\n\n", title, ch; cur = ch; sep = "" }
      printf "%s%s", sep, $0; sep = " "
    }
    END { printf "\n\n" }'
}

{ emit Ruth ruth1:1-4:22; emit Jonah jonah1:1-4:11; emit Esther esther1:1-10:3; } > eval.txt
{ emit Genesis genesis1:1-11:32; } > calib.txt
wc -c eval.txt calib.txt
