"""The preamble every interop test shared: where the nibble CLI and the test
data are, skipping (exit 77) when the CLI is not there, running it, and
counting checks.

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import harness
    NB = harness.nb_bin()          # NB_BIN, or exit 77 with "SKIP: NB_BIN not set"
    check = harness.Checks()       # check(cond, what): prints "FAIL: what" when cond is false
    r = harness.run("inspect", p)  # exit 1 (printing the command's output) when it fails
    r = harness.run("x", ok=False) # the CompletedProcess whatever the exit code
    sys.exit(check.summary())      # "N of M checks failed" and 1, or 0

Standard library only, so it can be imported before a test probes for
numpy / gguf / safetensors and skips without them.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.environ.get("NB_TEST_DATA", os.path.join(HERE, "..", "data"))


def skip(msg):
    print(f"SKIP: {msg}")
    sys.exit(77)


def nb_bin():
    """NB_BIN (set by ctest): the nibble CLI under test; skips when it is unset
    or not an executable file."""
    nb = os.environ.get("NB_BIN", "")
    if not nb or not os.access(nb, os.X_OK):
        skip("NB_BIN not set")
    return nb


def run(*args, ok=True):
    """`nibble ARGS` (each argument str()'d) with its output captured. With ok,
    a non-zero exit prints the command, its stdout and stderr, and ends the
    test with exit 1."""
    r = subprocess.run([nb_bin(), *map(str, args)], capture_output=True, text=True)
    if ok and r.returncode != 0:
        print(f"command failed (exit {r.returncode}): nibble {' '.join(map(str, args))}\n{r.stdout}{r.stderr}")
        sys.exit(1)
    return r


class Checks:
    """check(cond, what) counts a check and records `what` as a failure when
    cond is false; returns cond, so callers can stop early."""

    def __init__(self):
        self.n = 0
        self.failures = []

    def __call__(self, cond, what):
        self.n += 1
        if not cond:
            self.failures.append(what)
            print("FAIL:", what)
        return bool(cond)

    def fail(self, what):
        self(False, what)

    def summary(self):
        """Print how many checks failed; the exit code for the test."""
        if self.failures:
            print(f"{len(self.failures)} of {self.n} checks failed")
            return 1
        return 0
