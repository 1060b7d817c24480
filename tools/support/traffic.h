#pragma once
// Reproducible synthetic traffic: the engine behind serpens-pktgen, kept in
// serpens_support (not libserpens: the host never generates traffic) so tests
// and benchmarks can generate packets in memory.
//
// A run is fully determined by TrafficConfig (same config, same seed -> same
// bytes on every machine: the generator uses its own PRNG and integer
// arithmetic, never std:: distributions).  Flows are split between the
// classes of the mix, each flow gets a share of the packets, and the packets
// of all flows are interleaved at random while each flow keeps its order:
//  - TCP: SYN, SYN-ACK, ACK, data both ways, FIN-ACK, FIN-ACK, ACK
//    (a flow with fewer than 6 packets plays the first packets of that
//    script without data);
//  - UDP: the first packet from the client, then both directions;
//  - ICMP/ICMPv6: echo request (client) and echo reply (server), alternating.
// IPv4 header checksums and TCP/UDP/ICMP/ICMPv6 checksums are correct on every
// packet that is not deliberately corrupted.
//
// Corruptions (TrafficConfig::malformed_ratio of the packets, independently
// per packet; each picks one kind that applies to its packet):
//   truncate_l2     frame cut to 1..13 bytes             -> truncated_l2
//   truncate_vlan   frame cut inside a VLAN tag          -> truncated_vlan
//   truncate_l3     frame cut inside the IP header       -> truncated_ipv4/ipv6
//   bad_ip_header   IPv4 IHL 0..4, IPv6 version != 6     -> bad_ipv4_header/bad_ipv6_header
//   bad_ip_length   IPv4 total length beyond the frame or below the header,
//                   IPv6 payload length beyond the frame -> bad_ipv4_length/bad_ipv6_length
//   truncate_l4     IP length and frame end inside the L4 header -> truncated_l4
//   bad_tcp_offset  TCP data offset 0..4                 -> bad_tcp_offset
//   bad_udp_length  UDP length 0..7 or beyond the IP payload -> bad_udp_length
// The IPv4 header checksum is recomputed after a corruption whenever the
// header is still whole, so the fault is the one intended and nothing else.

#include "net/parse.h"
#include "net/pcap.h"

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace serpens::net {

enum class TrafficClass : uint8_t { tcp, udp, icmp, tcp6, udp6, icmp6 };
inline constexpr std::size_t kTrafficClassCount = 6;
// "tcp", "udp", "icmp", "tcp6", "udp6", "icmp6".
const char *traffic_class_name(TrafficClass c) noexcept;

enum class Corruption : uint8_t {
    none,
    truncate_l2,
    truncate_vlan,
    truncate_l3,
    bad_ip_header,
    bad_ip_length,
    truncate_l4,
    bad_tcp_offset,
    bad_udp_length,
};
inline constexpr std::size_t kCorruptionCount = 9;
const char *corruption_name(Corruption c) noexcept;

struct Ipv4Prefix {
    uint32_t addr = 0; // host byte order, host bits zero
    uint8_t len = 0;
};
struct Ipv6Prefix {
    std::array<uint8_t, 16> addr{};
    uint8_t len = 0;
};

// "198.18.0.0/16"; a bare address is a /32 (/128); host bits are refused, as
// serpens_parse_prefix refuses them everywhere.  Throw std::invalid_argument.
Ipv4Prefix parse_ipv4_prefix(std::string_view text);
Ipv6Prefix parse_ipv6_prefix(std::string_view text);

// Relative weights per class, indexed by TrafficClass.
using TrafficMix = std::array<double, kTrafficClassCount>;
// "tcp=60,udp=30,icmp=5,ipv6=5": keys are the class names, plus "ipv6" which
// spreads its weight over tcp6/udp6/icmp6 as 6:3:1.  Classes not named get 0.
// Throws std::invalid_argument naming the bad item.
TrafficMix parse_traffic_mix(std::string_view text);
std::string format_traffic_mix(const TrafficMix &mix);

struct TrafficConfig {
    uint64_t seed = 1;
    uint64_t packets = 10000;
    uint32_t flows = 256;
    TrafficMix mix = {55, 25, 5, 8, 5, 2};
    double vlan_ratio = 0.1;  // share of flows carrying VLAN tags (a quarter of those QinQ)
    uint32_t size_min = 64;   // frame bytes as stored in the pcap (no FCS), data packets;
    uint32_t size_max = 1024; // control packets (SYN, ACK, FIN) carry no payload
    double malformed_ratio = 0.01;
    Ipv4Prefix src_net{0xc6120000u, 16};                           // 198.18.0.0/16 (RFC 2544 benchmarking range)
    Ipv4Prefix dst_net{0xc6130000u, 16};                           // 198.19.0.0/16
    Ipv6Prefix src_net6{{0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0a}, 48}; // 2001:db8:a::/48
    Ipv6Prefix dst_net6{{0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0b}, 48}; // 2001:db8:b::/48
    uint64_t start_ns = 1700000000ull * 1000000000ull;
    uint64_t gap_ns = 10000; // between consecutive packets

    // Throws std::invalid_argument naming the field and its limit.
    void validate() const;
};

// What a run produced; the expected parser verdicts let tests compare without
// hard-coding numbers.
struct TrafficSummary {
    uint64_t packets = 0;
    uint64_t bytes = 0;
    uint32_t flows = 0; // flows with at least one packet
    std::array<uint64_t, kTrafficClassCount> packets_by_class{};
    std::array<uint32_t, kTrafficClassCount> flows_by_class{};
    uint64_t vlan = 0; // packets with one or two tags
    uint64_t qinq = 0; // packets with two tags
    uint64_t tcp_syn = 0;
    uint64_t tcp_fin = 0;
    uint64_t from_server = 0;
    std::array<uint64_t, kCorruptionCount> by_corruption{};
    ParseCounters expected;                 // what parse_packet() must answer, per reason
    std::vector<uint64_t> malformed_frames; // 1-based frame numbers (as tshark counts)

    uint64_t malformed() const noexcept { return packets - by_corruption[0]; }
    // One JSON object; keys documented in tools/pktgen/README.md.
    std::string to_json() const;
};

// One generated packet.  `data` stays valid until the next call to next().
struct GeneratedPacket {
    std::span<const uint8_t> data;
    uint64_t ts_ns = 0;
    uint64_t frame = 0; // 1-based
    uint32_t flow = 0;
    TrafficClass cls = TrafficClass::tcp;
    bool from_client = true;
    Corruption corruption = Corruption::none;
    ParseResult expected = ParseResult::ok;
};

class TrafficGenerator {
public:
    // Plans all flows and the interleaving; throws std::invalid_argument.
    explicit TrafficGenerator(TrafficConfig cfg);
    ~TrafficGenerator();
    TrafficGenerator(TrafficGenerator &&) noexcept;
    TrafficGenerator &operator=(TrafficGenerator &&) noexcept;

    // The next packet, or nullopt after config().packets packets.
    std::optional<GeneratedPacket> next();

    const TrafficConfig &config() const noexcept;
    // Counts over the packets generated so far.
    const TrafficSummary &summary() const noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> _impl;
};

// A whole run in memory.
struct GeneratedTraffic {
    std::vector<PcapRecord> packets;
    TrafficSummary summary;
};
GeneratedTraffic generate_traffic(const TrafficConfig &cfg);

// A whole run into a pcap file; throws std::invalid_argument or PcapError.
TrafficSummary write_traffic_pcap(const TrafficConfig &cfg, const std::string &path);

} // namespace serpens::net
