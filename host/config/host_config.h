#pragma once
// host.toml: everything one serpens-host needs.  Every key has a default; the
// shipped conf/host.toml documents each one.

#include "config/install_dirs.h"
#include "config/plugin_config.h"

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace serpens {

// Packets an instance's ring of `ring_size` slots holds: a DPDK ring keeps
// one slot free to tell full from empty.
constexpr uint32_t ring_capacity(uint32_t ring_size) noexcept { return ring_size - 1; }

struct PortConfig {
    std::string name;   // how chains and rules refer to the port
    std::string device; // a DPDK vdev string ("net_pcap0,rx_pcap=...") or a PCI address
    uint16_t rx_descriptors = 1024;
    uint16_t tx_descriptors = 1024;
    uint16_t rx_queues = 0; // 0: one per receiving lcore, as many as the device has
    bool promiscuous = true;
    uint32_t line; // where it was declared, for later errors
};

struct PortRange {
    uint16_t low = 0;
    uint16_t high = 65535;
};

struct GatewayRuleConfig {
    std::string name;
    std::string chain;
    std::optional<std::string> in_port;
    std::optional<std::string> src; // prefix, v4 or v6
    std::optional<std::string> dst;
    std::optional<uint8_t> proto; // IPPROTO_* number
    std::optional<PortRange> src_ports;
    std::optional<PortRange> dst_ports;
    std::optional<uint16_t> vlan;
    uint32_t line = 0;
};

struct InstanceConfig {
    std::string chain;
    uint32_t count = 1;                    // 0: the chain starts parked (at zero)
    std::vector<uint32_t> lcores;          // where its instances run (the first `count`, or one for all) and scale to
    std::optional<uint64_t> flow_capacity; // the chain's flow table; default [instances] flow_capacity
    std::optional<double> flow_idle_s;     // its flows' idle timeout; default [instances] flow_idle_s
    std::optional<std::string> flow_full;  // "drop" or "pass"; default [instances] flow_full
    uint32_t line = 0;
};

// [[autoscale.chain]]: one chain the autoscaler sizes.
struct AutoscaleChainConfig {
    std::string chain;
    uint32_t min = 1;
    uint32_t max = 4;
    double target_busy = 0.7; // busy fraction of its instances' lcores it aims at
    uint32_t line = 0;
};

struct AutoscaleConfig {
    uint32_t interval_ms = 100;               // how often load is sampled
    uint32_t scale_out_ms = 300;              // above target this long: more instances
    uint32_t scale_in_ms = 3000;              // below it (with the margin) this long: one fewer
    double scale_in_margin = 0.8;             // fewer instances only if their load would stay under target x margin
    std::vector<AutoscaleChainConfig> chains; // empty: the autoscaler is off
};

// [metrics]: the Prometheus endpoint, off unless `listen` is given.
struct MetricsConfig {
    bool enabled = false;
    std::string address; // numeric IPv4 or IPv6 (without brackets)
    uint16_t port = 0;   // 1..65535
    uint32_t line = 0;   // of `listen`, for later errors (cannot bind)
};

// [[peer.host]]: another serpens-host this one talks to.
struct PeerHostConfig {
    std::string id;      // its [host] id, which its certificate must name
    std::string address; // its peer listener: numeric IPv4
    uint16_t port = 0;   // 1..65535
    // Where VXLAN to it goes when it is not on the underlay's L2 segment;
    // absent: the MAC it announces over the peer protocol.
    std::optional<std::array<uint8_t, 6>> next_hop_mac;
    uint32_t line = 0; // of its [[peer.host]], for later errors
};

// [peer]: the host-to-host protocol and VXLAN between hosts; off when absent.
struct PeerConfig {
    // The underlay MTU's limits, as net/vxlan.h has them (io/vxlan_io.cpp
    // checks that they agree; config does not include net): the inner IPv4
    // minimum MTU (68) plus the 50 bytes VXLAN adds, and the IPv4 length field.
    static constexpr uint32_t min_underlay_mtu = 68 + 50;
    static constexpr uint32_t max_underlay_mtu = 65535;
    static constexpr uint32_t max_vni = 0xffffff; // 24 bits
    // Peers are numbered 1..127 in [[peer.host]] order (state/flow_table.h
    // keeps the serving peer of a flow in 7 bits).
    static constexpr std::size_t max_peer_hosts = 127;

    bool enabled = false;
    std::string listen_address; // numeric IPv4 of the TLS listener for peers
    uint16_t listen_port = 0;
    std::string certificate; // this host's; its CN/SAN must be [host] id (checked by the peer protocol)
    std::string private_key;
    std::string ca;               // peers' certificates must be signed by it
    std::string underlay_port;    // the [[port]] that carries VXLAN
    std::string underlay_address; // this host's VXLAN source address, numeric IPv4
    uint32_t underlay_ip = 0;     // the same in network byte order (in_addr.s_addr)
    uint32_t underlay_mtu = 1500; // the underlay's IP MTU: larger outer packets are counted and dropped
    uint16_t vxlan_udp_port = 4789;
    uint32_t vni = 1; // this Serpens cluster's VXLAN network id
    uint32_t heartbeat_ms = 500;
    uint32_t dead_after_ms = 2000; // a peer silent this long is down
    uint32_t lease_ms = 10000;     // granted global/write state returns after this unless renewed
    std::vector<PeerHostConfig> hosts;
    uint32_t line = 0; // of `listen`, for later errors (cannot bind)
};

// Where the default state_dir (<this>/<id>) lies; the installed
// dev-shm-serpens.mount makes it a tmpfs with 2 MB pages.
inline constexpr const char *default_state_parent = "/dev/shm/serpens";

struct HostConfig {
    std::string file;           // the host.toml path, for messages
    std::string id = "serpens"; // names this host's shared-memory state
    std::string log_level = "info";
    std::string log_file;                           // logs go here too (appended); stderr always has them
    std::string plugin_dir = install_dirs::plugins; // where `meson install` puts the NF plugins
    std::string chains_dir = "chains";
    std::string state_dir;            // default <default_state_parent>/<id>
    std::string control_socket;       // default /run/serpens/<id>.sock
    std::string control_group;        // may use the control socket besides root and the host's user
    std::optional<gid_t> control_gid; // control_group resolved

    std::vector<std::string> eal_args;

    uint32_t mbufs = 8191;
    uint32_t mbuf_cache = 256;
    uint32_t mbuf_data_room = 2048 + 128;

    std::vector<PortConfig> ports;

    std::string parse_malformed = "drop"; // or "pass": classified without L3/L4
    std::string gateway_default = "drop"; // or a port name: unmatched traffic leaves there
    std::vector<GatewayRuleConfig> rules;

    uint32_t burst = 32;
    uint32_t ring_size = 4096;
    uint32_t wake_threshold = 128;
    uint32_t wake_deadline_us = 1000;
    uint32_t idle_sleep_us = 1000;
    uint32_t init_warn_ms = 5000;     // an NF init still running after this long is named in a warning
    uint32_t pool = 1;                // pre-initialized instances kept ready per chain
    double keep_warm_s = 0;           // an instance idle this long goes back to the pool; 0: never
    uint64_t flow_capacity = 1048576; // flows a chain's flow table holds (per chain, see [[instance]])
    double flow_idle_s = 300;         // a flow idle this long is removed; 0: never
    // A new flow's first packet that finds the chain's flow table full:
    // "drop" it before any NF (as conntrack does; a flood then costs a
    // lookup per packet), or "pass" it through the chain with no entry.
    std::string flow_full = "drop";
    // Where a flow's router bucket comes from (net::BucketHash): "crc32c",
    // or "rss", the NIC's hash, so that ports with several RX queues get
    // their RSS redirection table written from the buckets.
    std::string bucket_hash = "crc32c";
    std::vector<InstanceConfig> instances;
    AutoscaleConfig autoscale;
    MetricsConfig metrics;
    PeerConfig peer;

    config::NfDefaults nf_defaults; // [nf_defaults.<plugin>]
};

// Parses and validates a host.toml.  Relative paths resolve against the file's
// directory.  Throws ConfigError (file:line:col: what was expected).
HostConfig load_host_config(const std::string &path);
// The same from text that claims to come from `path` (for messages and
// relative paths); does not require plugin_dir and chains_dir to exist.
HostConfig load_host_config_text(std::string_view text, const std::string &path);

} // namespace serpens
