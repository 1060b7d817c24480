#pragma once
// Hand-rolled packet construction for the net tests.  Deliberately separate
// from tools/support/traffic.cpp (its own checksum code too) so the tests check the
// generator instead of agreeing with it.

#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

namespace serpens::net::test {

using Bytes = std::vector<uint8_t>;

inline void put16(Bytes &b, std::size_t at, uint16_t v)
{
    b[at] = static_cast<uint8_t>(v >> 8);
    b[at + 1] = static_cast<uint8_t>(v);
}

inline uint16_t get16(const uint8_t *p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

inline Bytes cat(std::initializer_list<Bytes> parts)
{
    Bytes out;
    for (const auto &p : parts) {
        out.insert(out.end(), p.begin(), p.end());
    }
    return out;
}

// RFC 1071, written the straightforward way (32-bit accumulate, fold at end).
inline uint16_t inet_csum(const uint8_t *p, std::size_t n, uint64_t sum = 0)
{
    for (std::size_t i = 0; i + 1 < n; i += 2) {
        sum += get16(p + i);
    }
    if (n % 2 != 0) {
        sum += static_cast<uint64_t>(p[n - 1]) << 8;
    }
    while (sum >> 16) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return static_cast<uint16_t>(~sum & 0xffff);
}

// Ethernet header with optional tags given as (TPID, TCI) pairs.
inline Bytes eth(uint16_t type, std::initializer_list<std::pair<uint16_t, uint16_t>> tags = {})
{
    Bytes b = {0x02, 0, 0, 0, 0, 0xbb, 0x02, 0, 0, 0, 0, 0xaa};
    for (auto [tpid, tci] : tags) {
        b.push_back(static_cast<uint8_t>(tpid >> 8));
        b.push_back(static_cast<uint8_t>(tpid));
        b.push_back(static_cast<uint8_t>(tci >> 8));
        b.push_back(static_cast<uint8_t>(tci));
    }
    b.push_back(static_cast<uint8_t>(type >> 8));
    b.push_back(static_cast<uint8_t>(type));
    return b;
}

struct V4 {
    uint8_t a, b, c, d;
};

// IPv4 header (with options padded to 4 bytes by the caller) for `payload_len`
// bytes of payload; correct total length and checksum.
inline Bytes ipv4(uint8_t proto, std::size_t payload_len, V4 src = {10, 0, 0, 1}, V4 dst = {10, 0, 0, 2},
                  const Bytes &options = {}, uint16_t frag = 0x4000)
{
    const std::size_t hlen = 20 + options.size();
    Bytes b(20, 0);
    b[0] = static_cast<uint8_t>(0x40 | (hlen / 4));
    put16(b, 2, static_cast<uint16_t>(hlen + payload_len));
    put16(b, 4, 0x1234);
    put16(b, 6, frag);
    b[8] = 64;
    b[9] = proto;
    b[12] = src.a, b[13] = src.b, b[14] = src.c, b[15] = src.d;
    b[16] = dst.a, b[17] = dst.b, b[18] = dst.c, b[19] = dst.d;
    b.insert(b.end(), options.begin(), options.end());
    put16(b, 10, inet_csum(b.data(), b.size()));
    return b;
}

inline Bytes v6addr(uint8_t last)
{
    Bytes a = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last};
    return a;
}

inline Bytes ipv6(uint8_t next, std::size_t payload_len, uint8_t src_last = 1, uint8_t dst_last = 2)
{
    Bytes b(8, 0);
    b[0] = 0x60;
    put16(b, 4, static_cast<uint16_t>(payload_len));
    b[6] = next;
    b[7] = 64;
    return cat({b, v6addr(src_last), v6addr(dst_last)});
}

// Generic IPv6 extension header (hop-by-hop, routing, destination options) of
// (len_units + 1) * 8 bytes.
inline Bytes ext(uint8_t next, uint8_t len_units = 0)
{
    Bytes b((len_units + 1u) * 8u, 0);
    b[0] = next;
    b[1] = len_units;
    if (b.size() >= 4) {
        b[2] = 1; // PadN so Wireshark would accept it
        b[3] = static_cast<uint8_t>(b.size() - 4);
    }
    return b;
}

inline Bytes frag6(uint8_t next, uint16_t offset_units, bool more)
{
    Bytes b(8, 0);
    b[0] = next;
    put16(b, 2, static_cast<uint16_t>((offset_units << 3) | (more ? 1 : 0)));
    b[7] = 0x42; // identification
    return b;
}

inline Bytes tcp(uint16_t sport, uint16_t dport, uint8_t doff = 5, uint8_t flags = 0x02)
{
    Bytes b(std::max<std::size_t>(20, doff * 4u), 0);
    put16(b, 0, sport);
    put16(b, 2, dport);
    b[12] = static_cast<uint8_t>(doff << 4);
    b[13] = flags;
    put16(b, 14, 1024);
    for (std::size_t i = 20; i < b.size(); ++i) {
        b[i] = 1; // NOP options
    }
    return b;
}

inline Bytes udp(uint16_t sport, uint16_t dport, std::size_t payload_len, int length_override = -1)
{
    Bytes b(8, 0);
    put16(b, 0, sport);
    put16(b, 2, dport);
    put16(b, 4, static_cast<uint16_t>(length_override >= 0 ? length_override : 8 + payload_len));
    return b;
}

inline Bytes icmp_echo(uint8_t type, uint16_t id, uint16_t seq)
{
    Bytes b(8, 0);
    b[0] = type;
    put16(b, 4, id);
    put16(b, 6, seq);
    return b;
}

// Complete frames used by several tests.
inline Bytes v4_tcp(uint16_t sport = 40000, uint16_t dport = 80, V4 src = {10, 0, 0, 1}, V4 dst = {10, 0, 0, 2},
                    std::size_t payload = 10)
{
    const Bytes t = tcp(sport, dport);
    return cat({eth(0x0800), ipv4(6, t.size() + payload, src, dst), t, Bytes(payload, 0xab)});
}

inline Bytes v4_udp(uint16_t sport = 5000, uint16_t dport = 53, std::size_t payload = 12)
{
    return cat({eth(0x0800), ipv4(17, 8 + payload), udp(sport, dport, payload), Bytes(payload, 0xcd)});
}

inline Bytes v6_tcp(uint8_t src_last = 1, uint8_t dst_last = 2, uint16_t sport = 40000, uint16_t dport = 443)
{
    Bytes t = tcp(sport, dport);
    if (src_last > dst_last) {
        std::swap(t[0], t[2]);
        std::swap(t[1], t[3]);
    }
    return cat({eth(0x86dd), ipv6(6, t.size(), src_last, dst_last), t});
}

} // namespace serpens::net::test
