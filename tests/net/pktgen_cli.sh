#!/bin/sh
# serpens-pktgen as a program: same seed -> identical file, another seed ->
# another file, --summary is JSON with the requested count, bad input fails
# with a message.  Usage: pktgen_cli.sh <serpens-pktgen>
set -eu
pktgen=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

"$pktgen" -o "$dir/a.pcap" --seed 3 --packets 2000 --flows 50 --summary > "$dir/a.json"
"$pktgen" -o "$dir/b.pcap" --seed 3 --packets 2000 --flows 50 --summary > "$dir/b.json"
"$pktgen" -o "$dir/c.pcap" --seed 4 --packets 2000 --flows 50 2> /dev/null
cmp "$dir/a.pcap" "$dir/b.pcap" || { echo "FAIL: same seed gave different files"; exit 1; }
cmp -s "$dir/a.pcap" "$dir/c.pcap" && { echo "FAIL: different seeds gave the same file"; exit 1; }
cmp "$dir/a.json" "$dir/b.json"
grep -q '"packets": 2000,' "$dir/a.json" || { echo "FAIL: summary lacks packets"; cat "$dir/a.json"; exit 1; }
grep -q '"flows": 50,' "$dir/a.json" || { echo "FAIL: summary lacks flows"; exit 1; }

# Default run: 10000 packets, some of them malformed.
"$pktgen" -o "$dir/d.pcap" --summary > "$dir/d.json"
grep -q '"packets": 10000,' "$dir/d.json" || { echo "FAIL: default packet count"; exit 1; }
grep -q '"malformed": 0,' "$dir/d.json" && { echo "FAIL: default run has no malformed packets"; exit 1; }
# 24-byte header + 10000 records of 16-byte header and >= 1 byte.
size=$(wc -c < "$dir/d.pcap")
[ "$size" -gt 200000 ] || { echo "FAIL: default pcap only $size bytes"; exit 1; }

# Errors: exit non-zero with a message naming the problem.
if "$pktgen" -o "$dir/e.pcap" --mix tcp=1,bogus=2 2> "$dir/err"; then
    echo "FAIL: bad mix accepted"; exit 1
fi
grep -q "unknown mix class 'bogus'" "$dir/err" || { echo "FAIL: message: $(cat "$dir/err")"; exit 1; }
if "$pktgen" -o "$dir/nonexistent/x.pcap" 2> "$dir/err"; then
    echo "FAIL: unwritable output accepted"; exit 1
fi
grep -q "nonexistent/x.pcap" "$dir/err" || { echo "FAIL: message: $(cat "$dir/err")"; exit 1; }
"$pktgen" --help | grep -q -- "--malformed-ratio" || { echo "FAIL: --help"; exit 1; }
echo "pktgen cli: ok"
