#!/bin/sh
# Builds (if needed) and runs the parser fuzzer for a bounded time.
#   tests/fuzz/run.sh [seconds] [build-dir]      default: 60 s, build-fuzz
# Needs clang and its libFuzzer runtime (Debian: clang, libclang-rt-14-dev or
# the llvm-14 runtime shipped with clang-14).  Seeds are the hex files in
# seeds/, converted to binary into <build-dir>/fuzz-corpus/ (the corpus also
# keeps what the fuzzer finds, so later runs start from there).  A crash
# leaves its input as <build-dir>/fuzz-crash-* and exits non-zero.
set -eu
seconds=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${2:-$root/build-fuzz}

if [ ! -f "$build/build.ninja" ]; then
    CC=clang CXX=clang++ meson setup "$build" "$root" -Dfuzz=true -Dbuildtype=debugoptimized
fi
# Only the fuzz target: the rest of the tree need not build with clang here.
ninja -C "$build" tests/fuzz/fuzz-parse

corpus="$build/fuzz-corpus"
mkdir -p "$corpus"
for hex in "$here"/seeds/*.hex; do
    name=$(basename "$hex" .hex)
    # perl is always present on Debian (perl-base); xxd may not be.
    grep -v '^#' "$hex" | perl -ne 's/\s+//g; print pack("H*", $_)' > "$corpus/seed-$name"
done

exec "$build/tests/fuzz/fuzz-parse" "$corpus" \
    -dict="$here/parse.dict" \
    -max_total_time="$seconds" \
    -max_len=2048 \
    -print_final_stats=1 \
    -artifact_prefix="$build/fuzz-"
