#!/usr/bin/env bash
# bench/matmul_vs_ggml.sh — nb_matmul against ggml's CPU matmul, type by type,
# the two interleaved in one run (bench_matmul, then bench/ggml_matmul.py, per
# type), same shapes: 4096 x 4096 weights, n_tok 1 / 64 / 512, 1 and 2
# threads. Prints one markdown table: median wall ms per call of each, the
# ratio ggml / nibble (> 1: nibble is faster), process CPU ms of each, and the
# load average around each type's runs. A few minutes on an idle 2-core machine.
#
#   [NB_BENCH=build/rel/bench_matmul] [PY=.venv/bin/python] [TYPES="q4_K f16 ..."]
#   [THREADS=1,2] [NTOK=1,64,512] [PACKED=1] bench/matmul_vs_ggml.sh
#
# PACKED=1: the types with a packed form (Q4_0, Q5_0, IQ4_NL, NF4, Q8_0 on
# AVX-512 VNNI) run on it (bench_matmul -p), as the engine runs them; the
# type column then says "packed".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bm=${NB_BENCH:-$root/build/rel/bench_matmul}
py=${PY:-$("$root/scripts/pyenv")}
types=${TYPES:-q4_K q2_K f16 f32 bf16 q3_K iq4_xs q5_K q6_K q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl}
threads=${THREADS:-1,2}
ntok=${NTOK:-1,64,512}
[ -x "$bm" ] || { echo "matmul_vs_ggml: no bench_matmul at $bm (set NB_BENCH)" >&2; exit 1; }
load() { cut -d' ' -f1 /proc/loadavg; }

echo "nibble $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?') ($("$bm" -t 1 -n 1 -r 32 -c 256 f32 | head -1));" \
  "ggml: PyPI libggml-python; $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(date -u +%FT%TZ)"
echo
echo "| type | n_tok | threads | nibble ms | ggml ms | ggml / nibble | nibble CPU ms | ggml CPU ms | load avg |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for t in $types; do
  l0=$(load)
  nbo=$("$bm" ${PACKED:+-p} -t "$threads" -n "$ntok" "$t" | grep '^| [a-z]' | grep -v '^| type' || true)
  ggo=$("$py" "$root/bench/ggml_matmul.py" -t "$threads" -n "$ntok" "$t" | grep '^| [a-z]' | grep -v '^| type' || true)
  l1=$(load)
  python3 - "$t" "$l0" "$l1" "$nbo" "$ggo" <<'EOF'
import sys
t, l0, l1, nbo, ggo = sys.argv[1:]
if " packed |" in nbo: t += " packed"
def rows(txt):
    out = {}
    for line in txt.splitlines():
        c = [x.strip() for x in line.strip("|").split("|")]
        out[(c[1], c[2])] = (float(c[3]), float(c[4]))
    return out
a, b = rows(nbo), rows(ggo)
for k in a:
    g = b.get(k)
    gm, gc = (f"{g[0]:.3f}", f"{g[1]:.3f}") if g else ("n/a", "n/a")
    r = f"{g[0] / a[k][0]:.2f}" if g else "n/a"
    print(f"| {t} | {k[0]} | {k[1]} | {a[k][0]:.3f} | {gm} | {r} | {a[k][1]:.3f} | {gc} | {l0}–{l1} |")
EOF
done
