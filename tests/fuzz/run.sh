#!/bin/sh
# Builds (if needed) and runs one libFuzzer target for a bounded time.
#   tests/fuzz/run.sh <target> [seconds] [build-dir]   default: 60 s, build-fuzz
# Targets: fuzz-parse, fuzz-vxlan, fuzz-pcap, fuzz-chain, fuzz-host-config, fuzz-control, fuzz-peer,
# fuzz-nf, fuzz-nf-config (one per fuzz_*.cpp here).
# Needs clang and its libFuzzer runtime (Debian: clang, libclang-rt-14-dev or
# the llvm-14 runtime shipped with clang-14).  Each target has its own corpus,
# <build-dir>/fuzz-corpus/<target>/, which also keeps what the fuzzer finds so
# later runs start from there.  Seeds: the files of seeds/<target>/ (*.hex
# converted to binary), and for the config readers the shipped conf/ files.
# A dictionary <name>.dict (fuzz-parse: parse.dict) is used when present.  A
# crash leaves its input as <build-dir>/fuzz-<target>-crash-* and exits
# non-zero.
set -eu
target=${1:?usage: run.sh <target> [seconds] [build-dir]}
seconds=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${3:-$root/build-fuzz}

if [ ! -f "$here/fuzz_$(echo "${target#fuzz-}" | tr - _).cpp" ]; then
    echo "run.sh: no fuzz target '$target' (expected $here/fuzz_*.cpp)" >&2
    exit 2
fi
# Line tables only, and each target's sources compiled as one unit: the nine
# fuzz targets build in 207 s together instead of about 290 s on 2 cores.
if [ ! -f "$build/build.ninja" ]; then
    CC=clang CXX=clang++ meson setup "$build" "$root" -Dfuzz=true -Dbuildtype=debugoptimized -Dc_args=-g1 -Dcpp_args=-g1 \
        --unity on
fi
# Only the fuzz target and what it loads (fuzz-nf: the NF plugins).
ninja -C "$build" "build-$target"

corpus="$build/fuzz-corpus/$target"
mkdir -p "$corpus"
if [ -d "$here/seeds/$target" ]; then
    for seed in "$here/seeds/$target"/*; do
        name=$(basename "$seed")
        case "$name" in
        *.hex)
            # perl is always present on Debian (perl-base); xxd may not be.
            grep -v '^#' "$seed" | perl -ne 's/\s+//g; print pack("H*", $_)' > "$corpus/seed-${name%.hex}" ;;
        *) cp "$seed" "$corpus/seed-$name" ;;
        esac
    done
fi
# The shipped configs are the best seeds the config readers can have.
case "$target" in
fuzz-chain)
    for f in "$root"/conf/chains/*.toml; do cp "$f" "$corpus/seed-conf-$(basename "$f")"; done ;;
fuzz-host-config)
    cp "$root/conf/host.toml" "$corpus/seed-conf-host.toml" ;;
fuzz-nf-config)
    # A selector byte (fuzz_nf_config.cpp), then each shipped chain's NF
    # config as the mock host's [config] table, or a shipped rule file.
    python3 - "$root/conf" "$corpus" <<'PY'
import pathlib, re, sys
conf, corpus = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
order = ["fw", "nat", "mon", "ids", "vpn", "lb"]
def seed(name, selector, text):
    (corpus / ("seed-" + name)).write_bytes(bytes([selector]) + text.encode())
for chain in sorted((conf / "chains").glob("*.toml")):
    for n, block in enumerate(re.split(r"^\[\[nf\]\]", chain.read_text(), flags=re.M)[1:]):
        plugin = re.search(r'^plugin\s*=\s*"(\w+)"', block, re.M)
        at = block.find("[nf.config]")
        if plugin and plugin.group(1) in order and at >= 0:
            i = order.index(plugin.group(1))
            body = block[at + len("[nf.config]"):].replace("nf.config.", "config.")
            seed(f"{chain.stem}-{n}", i + (6 if i in (0, 3) else 0), body)
for i, rules in ((0, "fw.rules"), (3, "ids.rules")):
    seed(rules, i, (conf / "rules" / rules).read_text())
PY
    ;;
esac

dict="$here/${target#fuzz-}.dict"
set -- "$corpus" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$build/$target-"
case "$target" in
fuzz-nf)
    # Twelve NF hosts with their state segments mapped and populated: about
    # 2 GB, libFuzzer's default limit.  A single allocation is still held to 2 GB.
    set -- "$@" -rss_limit_mb=6144 -malloc_limit_mb=2048 ;;
esac
if [ -f "$dict" ]; then
    set -- "$@" -dict="$dict"
fi
# The mock NF hosts' state goes in a directory of this run's, removed
# however the fuzzer ends: a crash or an abort runs no destructor.
scratch=$(mktemp -d /dev/shm/serpens-fuzz-XXXXXX) || exit 1
trap 'rm -rf "$scratch"' EXIT
SERPENS_NFTEST_DIR=$scratch "$build/tests/fuzz/$target" "$@"
