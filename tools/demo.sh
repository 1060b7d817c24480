#!/bin/bash
# The demo: installs what is missing, builds Serpens, generates a capture and
# runs the paper's chain FW -> MON -> NAT in serpens-host on DPDK virtual
# devices (no NIC, no hugepages), then shows what each NF did (counters), a
# few translated flows, and where the output capture is.  Then the serverless
# part: a host replaying the capture for as long as it runs is scaled out, to
# zero (the next packet wakes it) and billed, with its Prometheus endpoint on.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
umask 022 # the host refuses configs every local user may write to

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

echo
echo "=== Serverless: scale while traffic flows, to zero and back, then the bill ==="
# The same host, replaying its capture for as long as it runs, with the
# Prometheus endpoint on (README: Operating a running host).
sed -e 's|"../build/plugins"|"../plugins"|; s|^chains_dir = "chains"|chains_dir = "../../conf/chains"|' \
    -e 's|,tx_pcap=build/demo/out.pcap|,infinite_rx=1|; s|^mbufs = 8191|mbufs = 32767|' \
    conf/host.toml > build/demo/live.toml
printf '\n[metrics]\nlisten = "127.0.0.1:9650"\n' >> build/demo/live.toml
build/host/serpens-host -c build/demo/live.toml --log-level warn >build/demo/live.log 2>&1 &
host=$!
trap 'kill $host 2>/dev/null || true' EXIT
ctl() {
    echo "\$ serpensctl $*"
    build/tools/serpensctl/serpensctl -c build/demo/live.toml "$@"
}
for _ in $(seq 100); do
    build/tools/serpensctl/serpensctl -c build/demo/live.toml ping >/dev/null 2>&1 && break
    sleep 0.1
done
sleep 1
ctl status
ctl stats --watch 1 --count 1 | sed '/^instance\/nf/,$d'
ctl scale fw-mon-nat +1
sleep 1
ctl instances
ctl scale fw-mon-nat 0
sleep 1
echo "(the next packet woke the chain: wakeups $(build/tools/serpensctl/serpensctl -c build/demo/live.toml \
    stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["chains"]["fw-mon-nat"]["wakeups"])'))"
ctl instances
ctl bill
echo
echo "Prometheus metrics: http://127.0.0.1:9650/metrics, e.g."
python3 -c 'import urllib.request
for line in urllib.request.urlopen("http://127.0.0.1:9650/metrics", timeout=5).read().decode().splitlines():
    if line.startswith("serpens_chain_packets_total"):
        print("  " + line)'
kill -TERM $host
wait $host >/dev/null 2>&1 || true
trap - EXIT
echo
echo "The bill outlives the host: /dev/shm/serpens/demo/usage.jsonl"
