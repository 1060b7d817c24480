#!/bin/sh
# Independent check of serpens-pktgen's checksums: tshark with IPv4/TCP/UDP
# checksum validation on must find no bad IPv4, TCP, UDP, ICMP or ICMPv6
# checksum in any packet that pktgen did not deliberately corrupt (their
# frame numbers come from --summary).  Exits 77 (skipped) without tshark.
# Usage: tshark_checksums.sh <serpens-pktgen>
set -eu
pktgen=$1
if ! command -v tshark > /dev/null 2>&1; then
    echo "tshark not installed: skipping"
    exit 77
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

"$pktgen" -o "$dir/t.pcap" --seed 11 --packets 20000 --flows 300 --vlan-ratio 0.2 \
    --mix tcp=40,udp=25,icmp=10,tcp6=10,udp6=10,icmp6=5 --summary > "$dir/s.json"
# The malformed frame numbers, one per line (read as JSON, not by layout).
python3 -c 'import json, sys; print("\n".join(str(f) for f in json.load(open(sys.argv[1]))["malformed_frames"]))' \
    "$dir/s.json" > "$dir/malformed"

# checksum.status: 0 = bad, 1 = good, 2 = unverified.
TSHARK="tshark -n -r $dir/t.pcap -o ip.check_checksum:TRUE -o tcp.check_checksum:TRUE -o udp.check_checksum:TRUE"
$TSHARK -Y 'ip.checksum.status == 0 || tcp.checksum.status == 0 || udp.checksum.status == 0 || icmp.checksum.status == 0 || icmpv6.checksum.status == 0' \
    -T fields -e frame.number 2> "$dir/tshark.err" > "$dir/bad" || { cat "$dir/tshark.err"; exit 1; }
bad=$(grep -vxF -f "$dir/malformed" "$dir/bad" || true)
if [ -n "$bad" ]; then
    echo "FAIL: bad checksums in frames that are not malformed:"
    echo "$bad" | head -20
    exit 1
fi

# And the checks really ran: most frames have a verified-good checksum.
good=$($TSHARK -Y 'tcp.checksum.status == 1 || udp.checksum.status == 1 || icmp.checksum.status == 1 || icmpv6.checksum.status == 1' \
    -T fields -e frame.number 2> /dev/null | wc -l)
if [ "$good" -lt 19000 ]; then
    echo "FAIL: only $good of 20000 frames had a verified L4 checksum"
    exit 1
fi
echo "tshark checksums: ok ($good verified, $(wc -l < "$dir/malformed") malformed skipped)"
