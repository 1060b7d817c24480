#!/bin/bash
# Installs the Debian 12 packages Serpens needs to build, test, demo and
# benchmark, running `apt-get update` once and only when something is missing.
set -euo pipefail

packages=(
    # build
    meson ninja-build pkg-config g++ python3
    libdpdk-dev libtomlplusplus-dev libcli11-dev libspdlog-dev doctest-dev nlohmann-json3-dev
    # the Prometheus endpoint (HTTP)
    libcpp-httplib-dev
    # NFs: IDS signatures, VPN ciphers; remote-state baseline of the benchmarks
    libhyperscan-dev libssl-dev libhiredis-dev redis-server
    # peer protocol: messages (protoc, libprotobuf), TLS via libssl-dev above
    protobuf-compiler libprotobuf-dev
    # plugin loader: reads a plugin's ELF symbols before dlopen
    libelf-dev
    # tests: independent decoder, network namespaces, fuzzing
    tshark iproute2 clang
    # e2e-peers: certificates for the peer protocol
    openssl
    # e2e-metrics: promtool and a real Prometheus scraping the endpoint
    prometheus
    # layout check of every source (.clang-format)
    clang-format
    # benchmarks: dpdk-testpmd as the reference, plots
    dpdk-dev python3-matplotlib
    # install: man pages from each tool's --help
    help2man
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-deps: missing Debian packages: ${missing[*]}" >&2
    echo "setup-deps: run as root (or: sudo apt-get install -y ${missing[*]})" >&2
    exit 1
fi
echo "setup-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
