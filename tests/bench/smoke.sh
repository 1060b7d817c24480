#!/bin/sh
# bench-smoke: `serpens-bench --repeat 1 all --quick` completes and writes its outputs.
# Speed is never asserted here; only that every benchmark ran and reported.
# usage: smoke.sh SERPENS_BENCH PLUGIN_DIR
set -eu
bench=$1
plugins=$2
out=$(mktemp -d "${TMPDIR:-/tmp}/serpens-bench-smoke-XXXXXX")
trap 'rm -rf "$out"' EXIT

# One repeat per point: the smoke checks that each benchmark runs and reports.
"$bench" --repeat 1 all --quick --out "$out" --plugins "$plugins"

fail=0
for f in chain.csv launch.csv nf.csv nf-fw-rules.csv exec-models.csv exec-models-latency.csv chaining.csv e2e.csv state.csv profile.csv throughput.csv scale.csv vxlan.csv \
         REPORT.md; do
    if [ ! -s "$out/$f" ]; then
        echo "missing or empty: $f"
        fail=1
    fi
done
# PNGs only when a plotter exists (the bench skips plots otherwise).
if python3 -c 'import matplotlib' >/dev/null 2>&1 || /usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1; then
    for f in chain.png launch.png nf.png nf-fw-rules.png exec-models.png exec-models-latency.png chaining.png e2e.png state.png profile.png throughput.png scale.png; do
        if [ ! -s "$out/$f" ]; then
            echo "matplotlib is installed but $f was not drawn"
            fail=1
        fi
    done
fi
# Every throughput figure carries dpdk-testpmd io, measured in this run, as its reference.
if command -v dpdk-testpmd >/dev/null 2>&1; then
    for f in throughput exec-models chaining state e2e; do
        if ! grep -q "^Reference line: dpdk-testpmd io forwarding" "$out/$f.notes.md"; then
            echo "$f.notes.md names no testpmd io reference"
            fail=1
        fi
    done
fi
# Every row of every CSV has as many cells as its header (no half-written
# rows), read as CSV: a quoted cell may hold a comma.
for csv in "$out"/*.csv; do
    python3 - "$csv" <<'PY' || fail=1
import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline="")))
bad = [(i + 1, len(r)) for i, r in enumerate(rows) if len(r) != len(rows[0])]
for line, n in bad:
    print(f"{sys.argv[1]}: row {line} has {n} cells, header {len(rows[0])}")
sys.exit(1 if bad else 0)
PY
done
[ $fail -eq 0 ] && echo "bench-smoke: ok"
exit $fail
