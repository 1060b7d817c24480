#!/bin/bash
# Checks (or with --fix, applies) the layout in .clang-format on every C and
# C++ source of the repository.  The frozen copy of the 1.0 plugin header is
# left exactly as 1.0 shipped it.
# Usage: tools/check-format.sh [--fix] [clang-format binary]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

mode=(--dry-run -Werror)
if [ "${1:-}" = "--fix" ]; then
    mode=(-i)
    shift
fi
clang_format=${1:-clang-format}

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files -- '*.c' '*.h' '*.cpp')
else
    mapfile -t files < <(find host plugin-api plugins tools tests -name '*.c' -o -name '*.h' -o -name '*.cpp' | sort)
fi
sources=()
for f in "${files[@]}"; do
    case "$f" in
    tests/plugins/abi-1.0/*) ;;
    *) [ -f "$f" ] && sources+=("$f") ;;
    esac
done
if ! "$clang_format" "${mode[@]}" --style=file "${sources[@]}"; then
    echo "check-format: run tools/check-format.sh --fix (clang-format $("$clang_format" --version | grep -o '[0-9][0-9.]*' | head -1))" >&2
    exit 1
fi
echo "check-format: ${#sources[@]} files follow .clang-format"
