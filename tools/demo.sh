#!/bin/bash
# The demo: installs what is missing, builds Serpens, generates a capture and
# runs the paper's chain FW -> MON -> NAT in serpens-host on DPDK virtual
# devices (no NIC, no hugepages), then shows what each NF did (counters), a
# few translated flows, and where the output capture is.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash tools/setup-deps.sh
if [ ! -f build/build.ninja ]; then
    meson setup build --buildtype=release -Dtests=false >/dev/null
fi
ninja -C build >/dev/null

mkdir -p build/demo
build/tools/pktgen/serpens-pktgen -o build/demo/in.pcap --packets 20000 --flows 1024 --seed 7
echo
build/host/serpens-host -c conf/host.toml --idle-exit 1 --log-level warn \
    --stats-json build/demo/stats.json
echo
echo "A few flows NAT translated (from the captures, decoded independently):"
python3 tools/demo_flows.py build/demo/in.pcap build/demo/out.pcap 203.0.113.
echo
echo "input capture:  $root/build/demo/in.pcap"
echo "output capture: $root/build/demo/out.pcap   (open it with tshark -r or wireshark)"
echo "counters JSON:  $root/build/demo/stats.json"
echo "NF state:       /dev/shm/serpens/demo (it outlives the host: a second run continues"
echo "                the same flows and NAT mappings; build/tools/serpens-state/serpens-state"
echo "                --host-id demo list shows it, rm -r starts afresh)"
