# tests/e2e/common.bash — shared by the e2e scripts (sourced, not a test).
# Sets nb (the CLI under test), tmp (removed at exit), fail; defines check/has/hasnt.
nb=${NB_BIN:?NB_BIN not set}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { # check DESC EXPECTED_RC CMD...
  local desc=$1 want=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ "$rc" != "$want" ]; then
    echo "FAIL: $desc: exit $rc, expected $want"; sed 's/^/  | /' "$tmp/err" | head -5; fail=1
  else
    echo "ok: $desc"
  fi
}
has() { grep -q -- "$1" "$2" || { echo "FAIL: expected '$1' in $2:"; head -5 "$2" | sed 's/^/  | /'; fail=1; }; }
hasnt() { ! grep -q -- "$1" "$2" || { echo "FAIL: did not expect '$1' in $2"; fail=1; }; }
