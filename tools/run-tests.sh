#!/bin/bash
# The full test suite: installs what is missing, builds with warnings as
# errors, runs every meson test, then the unit tests again under
# AddressSanitizer/UBSan, and a bounded run of every fuzz target.
# Ends with one line "N passed, N failed" and a non-zero exit on any failure.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# The host refuses configs every local user may write to: a umask of 0 here
# would make the tests' own files so.
umask 022

bash tools/setup-deps.sh || exit 1

passed=0
failed=0
skipped=0
# Adds meson's summary (Ok/Expected Fail/Fail/Unexpected Pass/Timeout/Skipped) to the totals.
count() {
    local log=$1
    local ok xf fail xp timeout skip
    ok=$(awk '/^Ok:/ {print $2}' "$log"); xf=$(awk '/^Expected Fail:/ {print $3}' "$log")
    fail=$(awk '/^Fail:/ {print $2}' "$log"); xp=$(awk '/^Unexpected Pass:/ {print $3}' "$log")
    timeout=$(awk '/^Timeout:/ {print $2}' "$log"); skip=$(awk '/^Skipped:/ {print $2}' "$log")
    passed=$((passed + ${ok:-0} + ${xf:-0}))
    failed=$((failed + ${fail:-0} + ${xp:-0} + ${timeout:-0}))
    skipped=$((skipped + ${skip:-0}))
}
# A build or run step that fails counts as one failed test.
step_failed() {
    echo "run-tests: $1 FAILED" >&2
    failed=$((failed + 1))
}

# The ninja targets (relative to build dir $1) that `meson test --suite unit`
# runs or loads: each test's program when it is built here, plus the targets
# the test declares in `depends` (mapped to their files as mtest does).
unit_targets() {
    meson introspect --tests --targets "$1" | python3 -c '
import json, os, sys
build = os.path.abspath(sys.argv[1])
intro = json.load(sys.stdin)
files = {t["id"]: t["filename"] for t in intro["targets"]}
built = {f for fs in files.values() for f in fs}
want = set()
for test in intro["tests"]:
    if "unit" in (s.split(":")[-1] for s in test["suite"]):
        want.update(p for p in test["cmd"][:1] if p in built)
        want.update(f for d in test["depends"] for f in files[d])
print("\n".join(sorted(os.path.relpath(p, build) for p in want)))
' "$1"
}

# Line tables only (-g1): backtraces and sanitizer reports keep file:line, and
# compiling takes about a quarter less time than with full debug info (-g).
line_tables=(-Dc_args=-g1 -Dcpp_args=-g1)

# 1. Everything, warnings as errors.
if [ ! -f build-test/build.ninja ]; then
    meson setup build-test --buildtype=debugoptimized -Dwerror=true "${line_tables[@]}" >/dev/null \
        || step_failed "meson setup build-test"
fi
if ninja -C build-test; then
    meson test -C build-test --print-errorlogs --num-processes 2 2>&1 | tee build-test/test-summary.txt
    count build-test/test-summary.txt
else
    step_failed "build"
fi

# 2. Unit tests under AddressSanitizer and UndefinedBehaviorSanitizer, which
#    run several times slower: their time limits are tripled.  A unity build
#    (each target's sources compiled as one) parses the common headers once
#    per target: 363 s against 426 s on 2 cores.  It needs names private to
#    a .cpp to differ between the .cpp files of one target.
if [ ! -f build-asan/build.ninja ]; then
    meson setup build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false --unity on \
        "${line_tables[@]}" >/dev/null || step_failed "meson setup build-asan"
fi
# Only the targets the unit suite needs: each unit test's program and what
# the test depends on (tests/plugins, the NF plugins, the tools it runs), as
# `meson test` itself resolves them.  The rest of the tree (serpens-host,
# serpensctl, the bench tools, man pages) is built and tested in step 1.
# Regenerate first, so the introspection reads the current meson.build files.
if ninja -C build-asan build.ninja >/dev/null && asan_targets=$(unit_targets build-asan) \
    && { [ -z "$asan_targets" ] || ninja -C build-asan $asan_targets; }; then
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
        meson test -C build-asan --suite unit --print-errorlogs --num-processes 2 --timeout-multiplier 3 2>&1 | tee build-asan/test-summary.txt
    count build-asan/test-summary.txt
else
    step_failed "sanitizer build"
fi

# 3. Every fuzz target (one per tests/fuzz/fuzz_*.cpp), each bounded in time
#    and counted as one test.
for src in tests/fuzz/fuzz_*.cpp; do
    target=$(basename "$src" .cpp | tr _ -)
    log="build-fuzz.$target.log"
    if bash tests/fuzz/run.sh "$target" "${SERPENS_FUZZ_SECONDS:-20}" "$root/build-fuzz" > "$log" 2>&1; then
        passed=$((passed + 1))
        echo "$target: OK ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{print $2}') inputs)"
    else
        tail -30 "$log"
        step_failed "$target"
    fi
done

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
