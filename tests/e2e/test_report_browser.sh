#!/usr/bin/env bash
# report.html in a real browser: headless Chromium (Debian's `chromium`)
# renders a build's report without console errors and takes a screenshot
# (left in $NB_SCREENSHOT_DIR when set, e.g. for docs/). Skips with a printed
# reason when chromium is not installed (`scripts/test --browser` installs it).
# Needs NB_BIN (set by ctest).
set -uo pipefail
. "$(dirname "$0")/common.bash"
chrome=$(command -v chromium || command -v chromium-browser || true)
[ -n "$chrome" ] || { echo "SKIP: chromium not installed (apt-get install chromium, or scripts/test --browser)"; exit 77; }
root=$(cd "$(dirname "$0")/../.." && pwd)
td=$(cd "$NB_TEST_DATA" && pwd)
check "synth" 0 "$nb" synth --arch llama --layers 2 --dim 256 --ff 256 --vocab 300 --seed 3 -o "$tmp/llama.gguf"
# a memory budget through the planner: every section of the report has something to show
check "build" 0 "$nb" build "$root/recipes/dense-6gb.json" --source "$tmp/llama.gguf" --var "CALIB=$td/text/calib.txt" \
  --var "EVAL=$td/text/eval.txt" --var CALIB_CTX=64 --var CALIB_TOKENS=1024 --var EVAL_CTX=64 --var CTX=256 \
  --var OVERHEAD=0 --var BUDGET=3.5MiB -o "$tmp/b1"
for w in "Size against the target" "KV cache" "limit" "Predicted against measured error" "measured / predicted" \
         "standard error" "KLD per token" "one bar per bin" "Outputs" "quality gate: passed"; do has "$w" "$tmp/b1/report.html"; done
hasnt '<script' "$tmp/b1/report.html"
# a gate that fails shows the failure in the report too
sed 's/"max_kld": 0.5/"max_kld": 0.0000001/' "$root/recipes/dense-q4km.json" > "$tmp/strict.json"
check "build (gate fails)" 4 "$nb" build "$tmp/strict.json" --source "$tmp/llama.gguf" --var "CALIB=$td/text/calib.txt" \
  --var "EVAL=$td/text/eval.txt" --var CALIB_CTX=64 --var CALIB_TOKENS=1024 --var EVAL_CTX=64 -o "$tmp/b2"
shots=${NB_SCREENSHOT_DIR:-$tmp}
for d in b1 b2; do
  png="$shots/report-$d.png"
  rm -f "$png"
  timeout 120 "$chrome" --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1000,2800 \
    --enable-logging=stderr --v=0 --screenshot="$png" "file://$tmp/$d/report.html" >"$tmp/chrome.log" 2>&1
  rc=$?
  [ "$rc" = 0 ] || { echo "FAIL: chromium exit $rc on $d/report.html"; tail -5 "$tmp/chrome.log"; fail=1; }
  # console messages of the page (errors, warnings, uncaught exceptions) are logged as CONSOLE(...) lines
  if grep -E 'CONSOLE|Uncaught' "$tmp/chrome.log" >/dev/null; then
    echo "FAIL: console messages while rendering $d/report.html:"; grep -E 'CONSOLE|Uncaught' "$tmp/chrome.log" | head -5; fail=1
  fi
  size=$(stat -c %s "$png" 2>/dev/null || echo 0)
  [ "$size" -gt 20000 ] || { echo "FAIL: screenshot $png missing or blank ($size bytes)"; fail=1; }
  [ $fail = 0 ] && echo "ok: $d/report.html rendered without console messages; screenshot $png ($size bytes)"
done
echo "done"
exit $fail
