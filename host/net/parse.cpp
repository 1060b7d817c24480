// Packet parser and flow hash; see parse.h for the contract.
#include "net/parse.h"

#include "net/result_table.h"
#include "net/rss.h"
#include "net/wire.h"

#include <serpens/nf_util.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#define SERPENS_NET_HAVE_X86 1
#endif

namespace serpens::net {

namespace {

// ---------------------------------------------------------------------------
// Result tables
// ---------------------------------------------------------------------------

using ParseRow = detail::ResultRow<ParseClass>;

constexpr ParseRow kParseResults[] = {
#define SERPENS_NET_PARSE_RESULT(sym, cls, desc) {#sym, desc, ParseClass::cls},
#include "net/parse_results.def"
#undef SERPENS_NET_PARSE_RESULT
};
static_assert(std::size(kParseResults) == kParseResultCount);
static_assert(kParseResults[0].cls == ParseClass::ok);

constexpr ParseRow kParseUnknown{"?", "?", ParseClass::malformed};

// ---------------------------------------------------------------------------
// CRC32C, in hardware when we can, with bit-identical software fallback
// ---------------------------------------------------------------------------

constexpr std::array<uint32_t, 256> make_crc32c_table()
{
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) {
            c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        }
        t[i] = c;
    }
    return t;
}
constexpr auto kCrcTable = make_crc32c_table();

// Same semantics as _mm_crc32_u32/_u64: bytes of v taken least significant first.
struct SoftCrc {
    static uint32_t u8(uint32_t c, uint8_t v) noexcept { return kCrcTable[(c ^ v) & 0xff] ^ (c >> 8); }
    static uint32_t u32(uint32_t c, uint32_t v) noexcept
    {
        for (int i = 0; i < 4; ++i, v >>= 8) {
            c = u8(c, static_cast<uint8_t>(v));
        }
        return c;
    }
    static uint32_t u64(uint32_t c, uint64_t v) noexcept
    {
        for (int i = 0; i < 8; ++i, v >>= 8) {
            c = u8(c, static_cast<uint8_t>(v));
        }
        return c;
    }
};

#ifdef SERPENS_NET_HAVE_X86
struct HwCrc {
    [[gnu::target("sse4.2")]] static inline uint32_t u8(uint32_t c, uint8_t v) noexcept { return _mm_crc32_u8(c, v); }
    [[gnu::target("sse4.2")]] static inline uint32_t u32(uint32_t c, uint32_t v) noexcept
    {
        return _mm_crc32_u32(c, v);
    }
    [[gnu::target("sse4.2")]] static inline uint32_t u64(uint32_t c, uint64_t v) noexcept
    {
#if defined(__x86_64__)
        return static_cast<uint32_t>(_mm_crc32_u64(c, v));
#else
        return _mm_crc32_u32(_mm_crc32_u32(c, static_cast<uint32_t>(v)), static_cast<uint32_t>(v >> 32));
#endif
    }
};

// Decided once at load time; a predictable branch per call after that.  The
// software path gives the same values, so an early caller is still correct.
const bool g_have_sse42 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
}();
#endif

inline uint64_t load_u64(const uint8_t *p) noexcept
{
    uint64_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template<class Crc>
inline uint32_t crc_bytes(uint32_t c, const uint8_t *p, std::size_t n) noexcept
{
    for (; n >= 8; n -= 8, p += 8) {
        c = Crc::u64(c, load_u64(p));
    }
    for (; n > 0; --n, ++p) {
        c = Crc::u8(c, *p);
    }
    return c;
}

// Read per key: set once at start, so the branch always goes one way.
BucketHash g_bucket_hash = BucketHash::crc32c;

// Hash each endpoint on its own, then combine the two in sorted order: that is
// what makes A->B and B->A agree without comparing 16-byte addresses.  With
// BucketHash::rss the low byte is the RSS hash's (rss.h), the bucket a NIC
// given the host's key computes, and the CRC gives the bits above it.
template<class Crc>
inline uint32_t flow_hash_impl(const FlowKey &k) noexcept
{
    constexpr uint32_t seed = 0x5e7be115u;
    uint32_t ha;
    uint32_t hb;
    if (k.ip_version == 4) {
        // An IPv4 address is the first 4 bytes (the rest are zero): half the
        // CRC steps.
        ha = Crc::u32(Crc::u32(seed, k.src_port), k.src_v4());
        hb = Crc::u32(Crc::u32(seed, k.dst_port), k.dst_v4());
    } else {
        ha = Crc::u32(seed, k.src_port);
        ha = Crc::u64(ha, load_u64(k.src.data()));
        ha = Crc::u64(ha, load_u64(k.src.data() + 8));
        hb = Crc::u32(seed, k.dst_port);
        hb = Crc::u64(hb, load_u64(k.dst.data()));
        hb = Crc::u64(hb, load_u64(k.dst.data() + 8));
    }
    const uint32_t lo = std::min(ha, hb);
    const uint32_t hi = std::max(ha, hb);
    const uint64_t pair = (static_cast<uint64_t>(hi) << 32) | lo;
    uint32_t h = Crc::u64(~seed, pair);
    h = Crc::u32(h, (static_cast<uint32_t>(k.ip_version) << 8) | k.proto);
    // CRC is linear; a final multiply-xorshift spreads it over all bits so
    // any range of them (the flow table's slot) is well distributed.
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    if (g_bucket_hash == BucketHash::rss) {
        h = (h & ~0xffu) | (rss_hash(k) & 0xffu);
    }
    return h;
}

#ifdef SERPENS_NET_HAVE_X86
// flatten: pull the generic template and the intrinsics into one function
// compiled for SSE4.2 (always_inline cannot cross the target mismatch).
[[gnu::target("sse4.2"), gnu::flatten]] uint32_t flow_hash_hw(const FlowKey &k) noexcept
{
    return flow_hash_impl<HwCrc>(k);
}

// One loop over independent keys: the CPU overlaps their CRC dependency
// chains, where hashing inside the per-packet parse left each chain exposed.
[[gnu::target("sse4.2"), gnu::flatten]] void flow_hash_burst_hw(const FlowKey *keys, uint32_t n, uint32_t *out) noexcept
{
    for (uint32_t i = 0; i < n; ++i) {
        out[i] = flow_hash_impl<HwCrc>(keys[i]);
    }
}
[[gnu::target("sse4.2"), gnu::flatten]] uint32_t crc_bytes_hw(uint32_t c, const uint8_t *p, std::size_t n) noexcept
{
    return crc_bytes<HwCrc>(c, p, n);
}
#endif

inline uint32_t flow_hash(const FlowKey &k) noexcept
{
#ifdef SERPENS_NET_HAVE_X86
    if (g_have_sse42) {
        return flow_hash_hw(k);
    }
#endif
    return flow_hash_impl<SoftCrc>(k);
}

// ---------------------------------------------------------------------------
// Parsing helpers
// ---------------------------------------------------------------------------

// The length of the IPv6 extension header `nh` at h, whose first 8 bytes are
// there: a fragment header is 8 bytes, AH counts 4-byte words minus 2, the
// others 8-byte words minus 1.
inline uint32_t ipv6_ext_len(uint8_t nh, const uint8_t *h) noexcept
{
    if (nh == kProtoFragment) {
        return 8;
    }
    if (nh == kProtoAh) {
        return (static_cast<uint32_t>(h[1]) + 2) * 4;
    }
    return (static_cast<uint32_t>(h[1]) + 1) * 8;
}

// Marks everything past L2 absent and clears the hash: the "not parsed" view.
inline ParseResult fail(serpens_pkt &pkt, FlowKey &key, ParseResult r) noexcept
{
    pkt.l4_offset = SERPENS_OFFSET_NONE;
    pkt.payload_offset = SERPENS_OFFSET_NONE;
    pkt.l3_type = SERPENS_L3_NONE;
    pkt.l4_proto = 0;
    pkt.flow_hash = 0;
    pkt.flags &= ~(SERPENS_PKT_F_PARSED | SERPENS_PKT_F_FRAGMENT);
    key = FlowKey{};
    return r;
}

// L4 header at [p, end).  `first_fragment`: the datagram continues in later
// fragments, so lengths covering the whole datagram cannot be checked here.
inline ParseResult parse_l4(const uint8_t *data, uint32_t p, uint32_t end, uint8_t proto, bool first_fragment,
                            bool ipv6, serpens_pkt &pkt, FlowKey &key) noexcept
{
    const uint32_t avail = end - p;
    const uint8_t *h = data + p;
    pkt.l4_proto = proto;
    pkt.l4_offset = static_cast<uint16_t>(p);
    switch (proto) {
    case kProtoTcp: {
        if (avail < 20) {
            return ParseResult::truncated_l4;
        }
        const uint32_t hlen = static_cast<uint32_t>(h[12] >> 4) * 4;
        if (hlen < 20 || hlen > avail) {
            return ParseResult::bad_tcp_offset;
        }
        key.src_port = serpens_ld_be16(h);
        key.dst_port = serpens_ld_be16(h + 2);
        pkt.payload_offset = static_cast<uint16_t>(p + hlen);
        return ParseResult::ok;
    }
    case kProtoUdp: {
        if (avail < 8) {
            return ParseResult::truncated_l4;
        }
        const uint32_t ulen = serpens_ld_be16(h + 4);
        // Shorter than the IP payload is tolerated (trailing bytes), longer is not.
        if (ulen < 8 || (!first_fragment && ulen > avail)) {
            return ParseResult::bad_udp_length;
        }
        key.src_port = serpens_ld_be16(h);
        key.dst_port = serpens_ld_be16(h + 2);
        pkt.payload_offset = static_cast<uint16_t>(p + 8);
        return ParseResult::ok;
    }
    case kProtoIcmp:
    case kProtoIcmpv6: {
        if ((proto == kProtoIcmp) == ipv6) {
            break; // ICMP in IPv6 or ICMPv6 in IPv4: carry it as an opaque protocol
        }
        // Every ICMP/ICMPv6 message has at least 4 bytes after type/code/checksum.
        if (avail < 8) {
            return ParseResult::truncated_l4;
        }
        const uint8_t type = h[0];
        const bool echo = ipv6 ? (type == 128 || type == 129) : (type == 8 || type == 0);
        if (echo) {
            key.src_port = key.dst_port = serpens_ld_be16(h + 4);
        }
        pkt.payload_offset = static_cast<uint16_t>(p + 8);
        return ParseResult::ok;
    }
    default:
        break;
    }
    pkt.payload_offset = SERPENS_OFFSET_NONE;
    return ParseResult::ok;
}

inline ParseResult parse_ipv4(const uint8_t *data, uint32_t len, uint32_t off, serpens_pkt &pkt, FlowKey &key) noexcept
{
    if (len - off < 20) {
        return ParseResult::truncated_ipv4;
    }
    const uint8_t *ip = data + off;
    const uint32_t hlen = static_cast<uint32_t>(ip[0] & 0x0f) * 4;
    if ((ip[0] >> 4) != 4 || hlen < 20) {
        return ParseResult::bad_ipv4_header;
    }
    if (hlen > len - off) {
        return ParseResult::truncated_ipv4;
    }
    const uint32_t total = serpens_ld_be16(ip + 2);
    if (total < hlen || total > len - off) {
        return ParseResult::bad_ipv4_length;
    }
    pkt.l3_type = SERPENS_L3_IPV4;
    key.ip_version = 4;
    key.proto = ip[9];
    std::memcpy(key.src.data(), ip + 12, 4);
    std::memcpy(key.dst.data(), ip + 16, 4);

    const uint16_t frag = serpens_ld_be16(ip + 6);
    const bool more = (frag & 0x2000) != 0;
    const uint16_t frag_off = frag & 0x1fff;
    if (frag_off != 0) {
        // Non-first fragment: the bytes here are the middle of some L4 payload.
        pkt.flags |= SERPENS_PKT_F_FRAGMENT;
        pkt.l4_proto = key.proto;
        return ParseResult::ok;
    }
    const ParseResult r = parse_l4(data, off + hlen, off + total, key.proto, more, false, pkt, key);
    if (more) {
        key.src_port = key.dst_port = 0; // all fragments of a datagram hash alike
    }
    return r;
}

inline ParseResult parse_ipv6(const uint8_t *data, uint32_t len, uint32_t off, serpens_pkt &pkt, FlowKey &key) noexcept
{
    if (len - off < 40) {
        return ParseResult::truncated_ipv6;
    }
    const uint8_t *ip = data + off;
    if ((ip[0] >> 4) != 6) {
        return ParseResult::bad_ipv6_header;
    }
    const uint32_t end = off + 40 + serpens_ld_be16(ip + 4);
    if (end > len) {
        return ParseResult::bad_ipv6_length;
    }
    pkt.l3_type = SERPENS_L3_IPV6;
    key.ip_version = 6;
    std::memcpy(key.src.data(), ip + 8, 16);
    std::memcpy(key.dst.data(), ip + 24, 16);

    uint8_t nh = ip[6];
    uint32_t p = off + 40;
    bool first_fragment = false;
    for (unsigned n = 0;; ++n) {
        switch (nh) {
        case kProtoHopByHop:
        case kProtoRouting:
        case kProtoDestOpts:
        case kProtoFragment:
        case kProtoAh:
            break;
        case kProtoNoNext:
            key.proto = nh;
            pkt.l4_proto = nh;
            return ParseResult::ok;
        default: {
            key.proto = nh;
            const ParseResult r = parse_l4(data, p, end, nh, first_fragment, true, pkt, key);
            if (first_fragment) {
                key.src_port = key.dst_port = 0;
            }
            return r;
        }
        }
        if (n == kMaxIpv6ExtHeaders) {
            return ParseResult::too_many_ext_headers;
        }
        // Every extension header starts with next-header and a length byte and
        // is at least 8 bytes long.
        if (end - p < 8) {
            return ParseResult::truncated_ext_header;
        }
        const uint8_t *h = data + p;
        if (nh == kProtoFragment) {
            const uint16_t fo = serpens_ld_be16(h + 2);
            if ((fo & 0xfff8) != 0) {
                key.proto = h[0];
                pkt.l4_proto = h[0];
                pkt.flags |= SERPENS_PKT_F_FRAGMENT;
                return ParseResult::ok;
            }
            first_fragment = (fo & 1) != 0;
        }
        const uint32_t hlen = ipv6_ext_len(nh, h);
        if (hlen > end - p) {
            return ParseResult::truncated_ext_header;
        }
        nh = h[0];
        p += hlen;
    }
}

} // namespace

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

const char *parse_result_name(ParseResult r) noexcept
{
    return detail::result_row(kParseResults, r, kParseUnknown).name;
}

const char *parse_result_description(ParseResult r) noexcept
{
    return detail::result_row(kParseResults, r, kParseUnknown).description;
}

ParseClass parse_result_class(ParseResult r) noexcept
{
    return detail::result_row(kParseResults, r, kParseUnknown).cls;
}

uint64_t ParseCounters::total() const noexcept
{
    uint64_t t = 0;
    for (uint64_t v : by_result) {
        t += v;
    }
    return t;
}

uint64_t ParseCounters::malformed() const noexcept
{
    uint64_t t = 0;
    for (std::size_t i = 0; i < kParseResultCount; ++i) {
        t += kParseResults[i].cls == ParseClass::malformed ? by_result[i] : 0;
    }
    return t;
}

uint64_t ParseCounters::unsupported() const noexcept
{
    uint64_t t = 0;
    for (std::size_t i = 0; i < kParseResultCount; ++i) {
        t += kParseResults[i].cls == ParseClass::unsupported ? by_result[i] : 0;
    }
    return t;
}

void ParseCounters::add(const ParseCounters &other) noexcept
{
    for (std::size_t i = 0; i < kParseResultCount; ++i) {
        by_result[i] += other.by_result[i];
    }
}

FlowKey FlowKey::canonical() const noexcept { return is_canonical() ? *this : reversed(); }

uint32_t FlowKey::hash() const noexcept { return flow_hash(*this); }

void set_bucket_hash(BucketHash how) noexcept { g_bucket_hash = how; }
BucketHash bucket_hash() noexcept { return g_bucket_hash; }

uint32_t crc32c(uint32_t crc, const void *data, std::size_t len) noexcept
{
    const auto *p = static_cast<const uint8_t *>(data);
#ifdef SERPENS_NET_HAVE_X86
    if (g_have_sse42) {
        return crc_bytes_hw(crc, p, len);
    }
#endif
    return crc_bytes<SoftCrc>(crc, p, len);
}

namespace {

// The frame nearly all traffic is: untagged Ethernet, IPv4 without options,
// not a fragment, TCP or UDP with its whole header.  Gives exactly what the
// general path gives (a test compares them on every frame of generated traces
// and all their truncations); false sends the frame to the general path.
inline bool parse_common_v4(const uint8_t *data, uint32_t len, serpens_pkt &pkt, FlowKey &key) noexcept
{
    constexpr uint32_t l3 = 14;
    constexpr uint32_t l4 = l3 + 20;
    if (data == nullptr || len < l4 + 8 || serpens_ld_be16(data + 12) != kEtherIpv4) {
        return false;
    }
    const uint8_t *ip = data + l3;
    const uint32_t total = serpens_ld_be16(ip + 2);
    // 0x45: version 4, 20-byte header; neither MF nor a fragment offset.
    if (ip[0] != 0x45 || total > len - l3 || (serpens_ld_be16(ip + 6) & 0x3fff) != 0) {
        return false;
    }
    const uint8_t proto = ip[9];
    const uint8_t *h = data + l4;
    const uint32_t avail = total >= 20 ? total - 20 : 0;
    uint32_t l4_len;
    if (proto == kProtoTcp) {
        if (avail < 20) { // total <= len - 14 keeps h[0, avail) inside the frame
            return false;
        }
        l4_len = static_cast<uint32_t>(h[12] >> 4) * 4;
        if (l4_len < 20 || l4_len > avail) {
            return false;
        }
    } else if (proto == kProtoUdp) {
        const uint32_t ulen = serpens_ld_be16(h + 4);
        if (avail < 8 || ulen < 8 || ulen > avail) {
            return false;
        }
        l4_len = 8;
    } else {
        return false;
    }
    key = FlowKey{};
    std::memcpy(key.src.data(), ip + 12, 4);
    std::memcpy(key.dst.data(), ip + 16, 4);
    key.src_port = serpens_ld_be16(h);
    key.dst_port = serpens_ld_be16(h + 2);
    key.proto = proto;
    key.ip_version = 4;
    pkt.l3_offset = l3;
    pkt.l4_offset = l4;
    pkt.payload_offset = static_cast<uint16_t>(l4 + l4_len);
    pkt.l3_type = SERPENS_L3_IPV4;
    pkt.l4_proto = proto;
    pkt.flow_hash = 0;
    pkt.flags = SERPENS_PKT_F_PARSED;
    pkt.vlan_id = 0;
    return true;
}

} // namespace

ParseResult parse_headers(const uint8_t *data, uint32_t len, serpens_pkt &pkt, FlowKey &key) noexcept
{
    if (parse_common_v4(data, len, pkt, key)) {
        return ParseResult::ok;
    }
    return detail::parse_headers_general(data, len, pkt, key);
}

ParseResult detail::parse_headers_general(const uint8_t *data, uint32_t len, serpens_pkt &pkt, FlowKey &key) noexcept
{
    key = FlowKey{};
    pkt.l3_offset = SERPENS_OFFSET_NONE;
    pkt.l4_offset = SERPENS_OFFSET_NONE;
    pkt.payload_offset = SERPENS_OFFSET_NONE;
    pkt.l3_type = SERPENS_L3_NONE;
    pkt.l4_proto = 0;
    pkt.flow_hash = 0;
    pkt.flags = 0;
    pkt.vlan_id = 0;

    if (data == nullptr || len < 14) {
        return ParseResult::truncated_l2;
    }
    // Offsets are 16-bit in the view; they always fit: L2 <= 22 bytes, IPv4
    // <= 60, IPv6 + 8 extension headers <= 16 KiB + 40, L4 header <= 60.
    uint16_t type = serpens_ld_be16(data + 12);
    uint32_t off = 14;
    for (unsigned tags = 0; type == kEtherVlan || type == kEtherQinQ; ++tags) {
        if (tags == kMaxVlanTags) {
            return ParseResult::too_many_vlans;
        }
        if (len - off < 4) {
            return ParseResult::truncated_vlan;
        }
        if (tags == 0) {
            pkt.flags |= SERPENS_PKT_F_VLAN;
            pkt.vlan_id = serpens_ld_be16(data + off) & 0x0fff;
        }
        type = serpens_ld_be16(data + off + 2);
        off += 4;
    }
    pkt.l3_offset = static_cast<uint16_t>(off);

    ParseResult r;
    if (type == kEtherIpv4) {
        r = parse_ipv4(data, len, off, pkt, key);
    } else if (type == kEtherIpv6) {
        r = parse_ipv6(data, len, off, pkt, key);
    } else {
        return ParseResult::unsupported_ethertype;
    }
    if (r != ParseResult::ok) {
        return fail(pkt, key, r);
    }
    pkt.flags |= SERPENS_PKT_F_PARSED;
    return ParseResult::ok;
}

ParseResult parse_packet(const uint8_t *data, uint32_t len, serpens_pkt &pkt, FlowKey &key) noexcept
{
    const ParseResult r = parse_headers(data, len, pkt, key);
    if (r == ParseResult::ok) {
        pkt.flow_hash = key.hash();
    }
    return r;
}

namespace {

// Whether a parsed IPv6 packet is the first fragment of a datagram, which
// the view does not say: a fragment header with more to come on the way
// from the IPv6 header to l4_offset (parse_ipv6 checked that chain).
bool ipv6_first_fragment(const serpens_pkt &pkt) noexcept
{
    const uint8_t *ip = pkt.data + pkt.l3_offset;
    uint8_t nh = ip[6];
    uint32_t p = pkt.l3_offset + 40u;
    for (unsigned n = 0; n < kMaxIpv6ExtHeaders && p < pkt.l4_offset; ++n) {
        const uint8_t *h = pkt.data + p;
        if (nh == kProtoFragment && (serpens_ld_be16(h + 2) & 1u) != 0) {
            return true;
        }
        p += ipv6_ext_len(nh, h);
        nh = h[0];
    }
    return false;
}

} // namespace

bool flow_key_of(const serpens_pkt &pkt, FlowKey &key) noexcept
{
    if (!has_flow_key(pkt)) {
        return false;
    }
    // The key is built in registers and stored a whole word at a time: the
    // flow table reads it straight back by words (is_canonical, its probe),
    // and a load that spans several narrower stores waits for them to
    // retire instead of being forwarded.
    static_assert(std::endian::native == std::endian::little, "the last word below is laid out little-endian");
    static_assert(offsetof(FlowKey, src_port) == 32 && offsetof(FlowKey, dst_port) == 34 &&
                      offsetof(FlowKey, proto) == 36 && offsetof(FlowKey, ip_version) == 37,
                  "FlowKey's last word: ports, proto, version, padding");
    uint64_t w[5] = {};
    const uint8_t *ip = pkt.data + pkt.l3_offset;
    bool fragment = (pkt.flags & SERPENS_PKT_F_FRAGMENT) != 0;
    bool ipv6 = false;
    uint64_t version = 4;
    if (pkt.l3_type == SERPENS_L3_IPV4) {
        uint32_t src = 0, dst = 0;
        std::memcpy(&src, ip + 12, 4);
        std::memcpy(&dst, ip + 16, 4);
        w[0] = src;
        w[2] = dst;
        fragment = fragment || (serpens_ld_be16(ip + 6) & 0x3fff) != 0; // MF or an offset: ports 0
    } else if (pkt.l3_type == SERPENS_L3_IPV6) {
        ipv6 = true;
        version = 6;
        std::memcpy(&w[0], ip + 8, 32); // source, then destination
        // Extension headers before L4: a first fragment's ports are 0 too.
        fragment =
            fragment || (ip[6] != pkt.l4_proto && pkt.l4_offset != SERPENS_OFFSET_NONE && ipv6_first_fragment(pkt));
    } else {
        return false;
    }
    const uint8_t proto = pkt.l4_proto;
    uint16_t sport = 0, dport = 0;
    if (!fragment && pkt.l4_offset != SERPENS_OFFSET_NONE) {
        // parse_l4 checked that these bytes are there.
        const uint8_t *h = pkt.data + pkt.l4_offset;
        if (proto == kProtoTcp || proto == kProtoUdp) {
            sport = serpens_ld_be16(h);
            dport = serpens_ld_be16(h + 2);
        } else if ((proto == kProtoIcmp && !ipv6) || (proto == kProtoIcmpv6 && ipv6)) {
            const uint8_t type = h[0];
            if (ipv6 ? (type == 128 || type == 129) : (type == 8 || type == 0)) {
                sport = dport = serpens_ld_be16(h + 4);
            }
        }
    }
    w[4] = uint64_t{sport} | uint64_t{dport} << 16 | uint64_t{proto} << 32 | version << 40;
    std::memcpy(static_cast<void *>(&key), w, sizeof w);
    return true;
}

void hash_flows(const FlowKey *keys, uint32_t n, uint32_t *out) noexcept
{
#ifdef SERPENS_NET_HAVE_X86
    if (g_have_sse42) {
        flow_hash_burst_hw(keys, n, out);
        return;
    }
#endif
    for (uint32_t i = 0; i < n; ++i) {
        out[i] = flow_hash_impl<SoftCrc>(keys[i]);
    }
}

} // namespace serpens::net
