#pragma once
// VXLAN (RFC 7348) between Serpens hosts: the outer headers a packet gets on
// its way to the peer that owns its flow's bucket, and their validation when
// such a packet arrives on the underlay.
//
// Outer packet, 50 bytes in front of the inner Ethernet frame:
//
//   Ethernet  0..13   dst MAC (the peer's, or the next hop's), src MAC, type 0x0800
//   IPv4     14..33   version 4, IHL 5, TOS 0, total length, id 0, DF, TTL 64,
//                     protocol UDP, header checksum, src = this host's underlay
//                     address, dst = the peer's
//   UDP      34..41   src port from the inner flow hash, dst port 4789 (or the
//                     configured one), length, checksum 0 (allowed over IPv4 by
//                     RFC 7348 §5; not verified on receipt either, as §5 permits)
//   VXLAN    42..49   below
//
// The VXLAN header as Serpens sends it: RFC 7348 §5's layout, with two of
// its reserved fields given a meaning between Serpens hosts:
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |R|R|R|R|I|R|R|R|     chain tag (24 bits, most significant first) |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |      VXLAN network identifier (VNI, 24 bits)  |0|0|0|0|0|0|0|P|
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
//   byte 0     flags: 0x08 (I, the VNI is valid); every other bit zero
//   bytes 1-3  the chain tag the sending gateway gave the packet (RFC: reserved)
//   bytes 4-6  the VNI of this Serpens cluster
//   byte 7     Serpens flags (RFC: reserved): bit 0 (0x01, kVxlanReturned) says
//              the packet is coming back to the host that sent it, already
//              processed by the chain; bits 1-7 zero
//
// Decapsulation refuses an I flag that is clear and any flag bit this host
// does not define (in byte 0 or byte 7): RFC 7348 lets a receiver ignore
// reserved bits, but Serpens reads two reserved fields, so a header from a
// VTEP that uses them otherwise (VXLAN-GPE, -GBP) or from a newer Serpens is
// refused rather than misread.
//
// The UDP source port is 49152 + 14 bits of the inner packet's symmetric flow
// hash (FlowKey::hash): a range RFC 7348 §5 suggests, different flows spread
// over the underlay's ECMP paths, and — the hash being symmetric — both
// directions of one flow carry the same port.
//
// The underlay MTU is an IP MTU (what `ip link` shows): the outer IPv4 packet,
// 36 bytes + the inner frame, must fit, i.e. an inner IP packet may be
// MTU - 50 bytes long (MTU - 54 with an inner 802.1Q tag).  Encapsulation
// refuses a packet that would not fit, it never truncates one.
//
// Hot path: no allocation, no exceptions, no DPDK types; every read is checked
// against the real length.  The functions are thread-safe (they touch only
// their arguments); a VxlanEncap is immutable after construction, so any
// number of threads may use one; one VxlanCounters must have one writer.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

namespace serpens::net {

// ---------------------------------------------------------------------------
// Results and counters
// ---------------------------------------------------------------------------

// What an encapsulation or decapsulation concluded.  Generated from
// vxlan_results.def.
enum class VxlanResult : uint8_t {
#define SERPENS_NET_VXLAN_RESULT(sym, cls, desc) sym,
#include "net/vxlan_results.def"
#undef SERPENS_NET_VXLAN_RESULT
};

inline constexpr std::size_t kVxlanResultCount = 0
#define SERPENS_NET_VXLAN_RESULT(sym, cls, desc) +1
#include "net/vxlan_results.def"
#undef SERPENS_NET_VXLAN_RESULT
    ;

// not_vxlan: well-formed traffic that is not VXLAN for this host (hand it to
// the ordinary path); malformed: drop; refused: could not be encapsulated (or
// taken in) as asked.
enum class VxlanClass : uint8_t { ok, not_vxlan, malformed, refused };

// Short snake_case name of a result ("bad_ipv4_checksum"); "?" when out of range.
const char *vxlan_result_name(VxlanResult r) noexcept;
// One-line human description of a result.
const char *vxlan_result_description(VxlanResult r) noexcept;
VxlanClass vxlan_result_class(VxlanResult r) noexcept;

// One 64-bit counter per VxlanResult, indexed by the enum.  Keep one per
// lcore (single writer) and sum them for reporting: add() may read another
// lcore's counters while it counts (relaxed atomic accesses, and a load-add-
// store rather than a locked add on the writer's side).
struct alignas(64) VxlanCounters {
    std::array<uint64_t, kVxlanResultCount> by_result{};

    void count(VxlanResult r) noexcept
    {
        std::atomic_ref<uint64_t> c(by_result[static_cast<std::size_t>(r)]);
        c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
    uint64_t operator[](VxlanResult r) const noexcept { return load(static_cast<std::size_t>(r)); }
    void add(const VxlanCounters &other) noexcept;

private:
    uint64_t load(std::size_t i) const noexcept
    {
        // atomic_ref needs a non-const object; the counters never are const.
        return std::atomic_ref<uint64_t>(const_cast<uint64_t &>(by_result[i])).load(std::memory_order_relaxed);
    }
};

// ---------------------------------------------------------------------------
// Header layout
// ---------------------------------------------------------------------------

inline constexpr uint16_t kVxlanUdpPort = 4789;     // IANA
inline constexpr uint32_t kVxlanOuterLen = 50;      // Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
inline constexpr uint32_t kVxlanIpOverhead = 36;    // what the outer IPv4 packet adds to the inner frame
inline constexpr uint32_t kVxlanMaxVni = 0xffffff;  // 24 bits
inline constexpr uint32_t kVxlanMaxTag = 0xffffff;  // 24 bits
inline constexpr uint8_t kVxlanReturned = 0x01;     // byte 7: processed, coming back to its sender
inline constexpr uint8_t kVxlanKnownFlags = 0x01;   // every byte-7 bit this host defines
inline constexpr uint8_t kVxlanFlagI = 0x08;        // byte 0: the VNI is valid
inline constexpr uint32_t kVxlanMinInnerFrame = 14; // an inner Ethernet header
inline constexpr uint32_t kVxlanMinMtu = 68 + 50;   // IPv4's minimum MTU (RFC 791) for the inner packets
inline constexpr uint32_t kVxlanMaxMtu = 65535;     // the IPv4 total length field
inline constexpr uint16_t kVxlanSourcePortLow = 49152;

// The outer UDP source port for an inner flow hash: 49152 + its low 14 bits
// folded with its high ones.  Equal for both directions of a flow, since the
// flow hash is symmetric.
inline constexpr uint16_t vxlan_source_port(uint32_t flow_hash) noexcept
{
    return static_cast<uint16_t>(kVxlanSourcePortLow | ((flow_hash ^ (flow_hash >> 16)) & 0x3fff));
}

// ---------------------------------------------------------------------------
// Encapsulation
// ---------------------------------------------------------------------------

// One tunnel to one peer: what the outer headers say.  Addresses are in
// network byte order as they sit in the header (in_addr.s_addr).
struct VxlanTunnel {
    std::array<uint8_t, 6> src_mac{}; // this host's underlay port
    std::array<uint8_t, 6> dst_mac{}; // the peer's underlay port, or the next hop's
    uint32_t src_ip = 0;              // this host's underlay address
    uint32_t dst_ip = 0;              // the peer's underlay address
    uint16_t udp_port = kVxlanUdpPort;
    uint32_t vni = 0;    // 0..kVxlanMaxVni
    uint32_t mtu = 1500; // the underlay's IP MTU, kVxlanMinMtu..kVxlanMaxMtu
};

// The outer headers of one tunnel, built once (cold) and stamped in front of
// each packet (hot): a copy of 50 bytes, five fields patched, and the IPv4
// checksum updated from the template's for the one field that differs.
class VxlanEncap {
public:
    // Throws std::invalid_argument for a VNI or MTU out of range.
    explicit VxlanEncap(const VxlanTunnel &tunnel);

    // Whether a packet could be encapsulated: ok, or why not (too_big,
    // truncated_inner, bad_chain_tag, bad_encap_flags).
    VxlanResult check(uint32_t inner_len, uint32_t chain_tag, uint8_t flags) const noexcept
    {
        if (inner_len > _max_inner) {
            return VxlanResult::too_big;
        }
        if (inner_len < kVxlanMinInnerFrame) {
            return VxlanResult::truncated_inner;
        }
        if (chain_tag > kVxlanMaxTag) {
            return VxlanResult::bad_chain_tag;
        }
        if ((flags & ~kVxlanKnownFlags) != 0) {
            return VxlanResult::bad_encap_flags;
        }
        return VxlanResult::ok;
    }

    // Writes the 50 outer bytes at `outer`, which the inner frame of
    // `inner_len` bytes follows directly (it is not read): the packet is
    // then [outer, outer + 50 + inner_len).  `flow_hash` is the inner flow's
    // symmetric hash (the UDP source port).  Writes nothing unless check()
    // says ok, and returns what check() says.
    VxlanResult encap(uint8_t *outer, uint32_t inner_len, uint32_t chain_tag, uint8_t flags,
                      uint32_t flow_hash) const noexcept;
    // The same over a whole packet buffer: its first 50 bytes are written, the
    // rest is the inner frame.
    VxlanResult encap(std::span<uint8_t> packet, uint32_t chain_tag, uint8_t flags, uint32_t flow_hash) const noexcept
    {
        if (packet.size() < kVxlanOuterLen) {
            return VxlanResult::truncated_inner;
        }
        const std::size_t inner = packet.size() - kVxlanOuterLen;
        return encap(packet.data(), inner > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(inner), chain_tag, flags,
                     flow_hash);
    }

    // The largest inner frame that fits the underlay MTU.
    uint32_t max_inner() const noexcept { return _max_inner; }
    // The template: total length, checksum, UDP source port and length, chain
    // tag and flags zero.
    const std::array<uint8_t, kVxlanOuterLen> &header() const noexcept { return _header; }

private:
    std::array<uint8_t, kVxlanOuterLen> _header{};
    uint16_t _checksum = 0; // of the template's IPv4 header, total length 0; as stored (memory order)
    uint32_t _max_inner = 0;
};

// ---------------------------------------------------------------------------
// Decapsulation
// ---------------------------------------------------------------------------

inline constexpr uint32_t kVxlanAnyVni = UINT32_MAX;

// What vxlan_decap accepts.
struct VxlanDecapConfig {
    uint16_t udp_port = kVxlanUdpPort;
    uint32_t local_ip = 0;       // network order; 0: any destination address
    uint32_t vni = kVxlanAnyVni; // kVxlanAnyVni: any VNI (the caller looks)
};

// What vxlan_decap found.  Past `result`, the fields are meaningful only when
// it is ok.
struct VxlanDecapped {
    VxlanResult result = VxlanResult::ok;
    uint8_t flags = 0;         // byte 7: kVxlanReturned or 0
    uint16_t inner_offset = 0; // where the inner frame starts: the outer bytes to remove
    uint32_t inner_len = 0;    // its length, from the UDP length (outer padding excluded)
    uint32_t vni = 0;
    uint32_t chain_tag = 0;
    uint32_t outer_src = 0; // the sending peer's underlay address, network order
};

// Validates the frame [data, data + len) as a VXLAN packet for this host:
// Ethernet (IPv4, at most one 802.1Q tag), IPv4 (version 4, IHL >= 5, UDP,
// destination config.local_ip unless 0 — these two first: a packet that is
// not UDP to us is not_udp / not_for_us whatever else is wrong with it —
// total length within the frame, header checksum right, not a fragment), UDP (destination config.udp_port,
// length equal to the IPv4 payload's), VXLAN (I flag, no unknown flag, VNI
// config.vni unless any) and an inner frame of at least an Ethernet header.
// Bytes after the IPv4 total length (Ethernet padding) are ignored.
VxlanDecapped vxlan_decap(const uint8_t *data, uint32_t len, const VxlanDecapConfig &config) noexcept;

inline VxlanDecapped vxlan_decap(std::span<const uint8_t> frame, const VxlanDecapConfig &config) noexcept
{
    return vxlan_decap(frame.data(), frame.size() > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(frame.size()),
                       config);
}

} // namespace serpens::net
