#pragma once
// Bounds-checked packet parsing and symmetric flow hashing.
//
// parse_packet() reads Ethernet, up to two VLAN tags (802.1Q 0x8100 and
// 802.1ad 0x88a8), IPv4 (with options and fragments) or IPv6 (with up to
// kMaxIpv6ExtHeaders extension headers), then TCP, UDP, ICMP or ICMPv6, and
// fills the plugin ABI's packet view (struct serpens_pkt) plus a FlowKey.
//
// Hot path: no allocation, no exceptions, no virtual calls, no DPDK types;
// every read is checked against the real length.  All functions here are
// thread-safe (they touch only their arguments), except that one ParseCounters
// must have one writer.

#include <serpens/nf.h>

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace serpens::net {

// ---------------------------------------------------------------------------
// Results and counters
// ---------------------------------------------------------------------------

// What parse_packet() concluded.  Generated from parse_results.def.
enum class ParseResult : uint8_t {
#define SERPENS_NET_PARSE_RESULT(sym, cls, desc) sym,
#include "net/parse_results.def"
#undef SERPENS_NET_PARSE_RESULT
};

inline constexpr std::size_t kParseResultCount = 0
#define SERPENS_NET_PARSE_RESULT(sym, cls, desc) +1
#include "net/parse_results.def"
#undef SERPENS_NET_PARSE_RESULT
    ;

// Unsupported packets are well-formed traffic we do not look into (forward or
// drop by policy); malformed ones are broken (count and usually drop).
enum class ParseClass : uint8_t { ok, unsupported, malformed };

// Short snake_case name of a result ("bad_ipv4_length"); "?" when out of range.
const char *parse_result_name(ParseResult r) noexcept;
// One-line human description of a result.
const char *parse_result_description(ParseResult r) noexcept;
ParseClass parse_result_class(ParseResult r) noexcept;
inline bool is_malformed(ParseResult r) noexcept { return parse_result_class(r) == ParseClass::malformed; }
inline bool is_unsupported(ParseResult r) noexcept { return parse_result_class(r) == ParseClass::unsupported; }

// One 64-bit counter per ParseResult, indexed by the enum.  Keep one per
// worker (single writer) and sum them for reporting.
struct alignas(64) ParseCounters {
    std::array<uint64_t, kParseResultCount> by_result{};

    void count(ParseResult r) noexcept { ++by_result[static_cast<std::size_t>(r)]; }
    uint64_t operator[](ParseResult r) const noexcept { return by_result[static_cast<std::size_t>(r)]; }
    uint64_t total() const noexcept;
    uint64_t malformed() const noexcept;
    uint64_t unsupported() const noexcept;
    void add(const ParseCounters &other) noexcept;
};

// ---------------------------------------------------------------------------
// Flow keys and hashing
// ---------------------------------------------------------------------------

// The 5-tuple of a packet.  Addresses are in network byte order (IPv4 uses the
// first 4 bytes, the rest stay zero); ports are in host byte order.  For ICMP
// and ICMPv6 echo request/reply both ports hold the echo identifier (so the
// key is direction-independent); other ICMP messages and IP fragments have
// ports 0.  Padding is always zero, so keys compare and hash as plain bytes.
struct alignas(8) FlowKey {
    std::array<uint8_t, 16> src{};
    std::array<uint8_t, 16> dst{};
    uint16_t src_port = 0;
    uint16_t dst_port = 0;
    uint8_t proto = 0;      // IPPROTO_*
    uint8_t ip_version = 0; // 4, 6, or 0 when the packet was not parsed
    std::array<uint8_t, 2> pad{};

    // An IPv4 key's addresses as they lie (network order, loaded natively).
    // 4-byte loads: an 8-byte load of a key just written 4 bytes at a time
    // stalls store forwarding (the profile showed it per packet).
    uint32_t src_v4() const noexcept { return load_v4(src); }
    uint32_t dst_v4() const noexcept { return load_v4(dst); }
    static uint32_t load_v4(const std::array<uint8_t, 16> &addr) noexcept
    {
        uint32_t v;
        std::memcpy(&v, addr.data(), sizeof v);
        return v;
    }

    // Exact (directional) equality.
    bool operator==(const FlowKey &) const noexcept = default;

    // The key as five 8-byte words (native order), each loaded where it
    // lies: copying a key to a word array first made the compiler bounce it
    // through the stack, and the reloads stalled on store forwarding.
    static constexpr unsigned words = 5;
    uint64_t word(unsigned i) const noexcept
    {
        uint64_t w;
        std::memcpy(&w, reinterpret_cast<const uint8_t *>(this) + 8 * i, sizeof w);
        return w;
    }

    // Same key with source and destination swapped.  By whole words: a
    // 16-bit store of a port inside a word that is then read back whole
    // stalls store forwarding (the flow table reverses every reply's key).
    FlowKey reversed() const noexcept
    {
        static_assert(std::endian::native == std::endian::little, "the ports are the last word's low half");
        const uint64_t last = word(4);
        const uint64_t ports = last & 0xffffffffu;
        const uint64_t r[words] = {word(2), word(3), word(0), word(1),
                                   (last & ~uint64_t{0xffffffffu}) | ports >> 16 | (ports & 0xffffu) << 16};
        FlowKey out;
        std::memcpy(static_cast<void *>(&out), r, sizeof r);
        return out;
    }
    // The direction-independent form: the (address, port) endpoint that
    // compares lower (bytewise, then port) is the source.  A key and its
    // reverse have the same canonical form.
    FlowKey canonical() const noexcept;
    // Inline and without a library call: the flow table orders every
    // packet's key with it.
    bool is_canonical() const noexcept
    {
        // Addresses compare bytewise, i.e. as big-endian numbers, a word at
        // a time (src is words 0-1, dst words 2-3).
        for (unsigned w = 0; w < 2; ++w) {
            const uint64_t s = word(w), d = word(w + 2);
            if (s != d) {
                return __builtin_bswap64(s) < __builtin_bswap64(d);
            }
        }
        return src_port <= dst_port;
    }
    // Symmetric 32-bit hash: hash() == reversed().hash().  Same value on every
    // host (CRC32C in hardware when the CPU has SSE4.2, in software otherwise),
    // so routers on different servers agree.  Its low byte, the router's
    // bucket, is the CRC's or the RSS hash's as bucket_hash() says.
    uint32_t hash() const noexcept;
};
static_assert(sizeof(FlowKey) == 8 * FlowKey::words);
static_assert(offsetof(FlowKey, src) == 0 && offsetof(FlowKey, dst) == 16 && offsetof(FlowKey, src_port) == 32 &&
                  offsetof(FlowKey, dst_port) == 34,
              "is_canonical() and reversed() read the key by word");

// Room for a FlowKey that is left uninitialised, for per-burst scratch
// arrays that are written before they are read: zeroing a burst's keys
// costs more than parsing them.
union FlowKeySlot {
    FlowKeySlot() noexcept {}
    FlowKey key;
};
static_assert(sizeof(FlowKeySlot) == sizeof(FlowKey));

// Both directions of a flow: a == b or a == b.reversed().
inline bool same_flow(const FlowKey &a, const FlowKey &b) noexcept { return a.canonical() == b.canonical(); }

// Where a flow's router bucket (the flow hash's low byte) comes from, the
// same for the whole process.
enum class BucketHash : uint8_t {
    crc32c, // the CRC's, like the rest of the hash: buckets even for any traffic
    // The RSS hash's (net/rss.h), so a NIC's redirection table can follow the
    // buckets.  It depends only on the XOR of a flow's 16-bit address and
    // port words, so traffic whose addresses and ports rise together crowds
    // a few buckets, on the NIC's queues as here.
    rss,
};
// Set once before any packet is hashed (the host at start, from host.toml);
// default crc32c.
void set_bucket_hash(BucketHash how) noexcept;
BucketHash bucket_hash() noexcept;

// For std::unordered_map<FlowKey, ...>.
struct FlowKeyHash {
    std::size_t operator()(const FlowKey &k) const noexcept { return k.hash(); }
};

// CRC32C (Castagnoli) of `len` bytes, continuing from `crc` (no pre/post
// inversion: pass 0xffffffff and invert yourself for the standard check value).
uint32_t crc32c(uint32_t crc, const void *data, std::size_t len) noexcept;

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

inline constexpr unsigned kMaxVlanTags = 2;
inline constexpr unsigned kMaxIpv6ExtHeaders = 8;

// Parses the frame [data, data + len).
//
// Fills pkt's l3_offset, l4_offset, payload_offset, l3_type, l4_proto, flags,
// vlan_id and flow_hash (data, len, handle and the reserved fields are left to
// the caller) and returns the key.  On OK: SERPENS_PKT_F_PARSED is set,
// l3_offset is the IP header, and
//  - TCP/UDP/ICMP/ICMPv6: l4_offset is the header, payload_offset follows it;
//  - other protocols: l4_offset is the header, payload_offset is NONE;
//  - a non-first IP fragment: SERPENS_PKT_F_FRAGMENT, l4_offset and
//    payload_offset NONE, l4_proto still names the protocol;
//  - a first fragment keeps its L4 offsets (UDP length is not checked there).
// Fragments (first or not) have key ports 0 so that all fragments of one
// datagram hash alike and meet at the same instance.
// On anything else: F_PARSED is clear, flow_hash is 0, l3_type NONE; l3_offset
// is still the end of the L2 header when that was read (ARP and friends), and
// vlan_id / F_VLAN describe the tags read so far.
ParseResult parse_packet(const uint8_t *data, uint32_t len, serpens_pkt &pkt, FlowKey &key) noexcept;

// parse_packet without the flow hash (flow_hash is left 0): for a caller that
// parses a whole burst first and then hashes its keys with hash_flows.
ParseResult parse_headers(const uint8_t *data, uint32_t len, serpens_pkt &pkt, FlowKey &key) noexcept;

namespace detail {
// parse_headers without its fast path for common IPv4 TCP/UDP frames: tests
// check that both give the same on every frame.
ParseResult parse_headers_general(const uint8_t *data, uint32_t len, serpens_pkt &pkt, FlowKey &key) noexcept;
} // namespace detail

// Whether parse_packet gave the packet it described in `pkt` a flow key:
// it parsed as IP.
inline bool has_flow_key(const serpens_pkt &pkt) noexcept
{
    return (pkt.flags & SERPENS_PKT_F_PARSED) != 0 && pkt.l3_offset != SERPENS_OFFSET_NONE;
}

// The flow key of a packet parse_packet already described in `pkt` (its
// offsets, l3_type, l4_proto and flags), read again from its headers: false
// when it is not a parsed IP packet.  The same key parse_packet returned.
bool flow_key_of(const serpens_pkt &pkt, FlowKey &key) noexcept;

// out[i] = keys[i].hash() for i < n, faster than one at a time.
void hash_flows(const FlowKey *keys, uint32_t n, uint32_t *out) noexcept;

// Same, over the view's own data/len.
inline ParseResult parse_packet(serpens_pkt &pkt, FlowKey &key) noexcept
{
    return parse_packet(pkt.data, pkt.len, pkt, key);
}

// Convenience for callers that hold a span (tests, tools).
inline ParseResult parse_packet(std::span<const uint8_t> frame, serpens_pkt &pkt, FlowKey &key) noexcept
{
    return parse_packet(frame.data(), static_cast<uint32_t>(frame.size()), pkt, key);
}

} // namespace serpens::net
