#pragma once
// The host's receive-side scaling hash: Toeplitz with a key that repeats
// every 16 bits (0x6d5a 0x6d5a ...).  The host gives NICs this key
// (io/port.cpp), and with BucketHash::rss (parse.h) the router's bucket of a
// flow is the low byte of this hash, so a NIC's RSS redirection table can
// send each bucket to the RX queue of the lcore that serves it.
//
// Why a periodic key: Toeplitz XORs, for every set input bit i, the 32 key
// bits from bit i on.  With a key of period 16 those windows repeat every 16
// input bits, so the hash depends only on the XOR of the input's 16-bit
// words.  That makes it symmetric (swapping addresses or ports leaves the
// XOR alone: both directions of a flow land on one queue) and cheap in
// software: two table lookups of the folded input.  The same property leaves
// it only 2^16 values, so it picks the bucket and no more; the flow table's
// slots come from the rest of the flow hash (CRC32C).
//
// The input is what NICs hash with RSS on IP, TCP and UDP: source and
// destination address, then source and destination port for TCP and UDP
// only (other protocols and fragments hash on the addresses).  Pure C++: no
// DPDK here.

#include "net/parse.h"
#include "net/wire.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace serpens::net {

// The key's repeating 16 bits (Woo and Park's symmetric key).
inline constexpr uint16_t rss_key_word = 0x6d5a;

// Byte i of the host's key, of any length a NIC asks for.
constexpr uint8_t rss_key_byte(std::size_t i) noexcept
{
    return i % 2 == 0 ? static_cast<uint8_t>(rss_key_word >> 8) : static_cast<uint8_t>(rss_key_word & 0xff);
}

namespace detail {

// The Toeplitz hash of one 16-bit input word in position 0: the XOR of the
// key windows of its set bits, most significant bit first.  Linear, so a
// folded word's hash is the XOR of its high and low byte's.
constexpr uint32_t rss_window(unsigned bit) noexcept
{
    // 32 key bits from bit `bit` (0: the key's first, most significant bit).
    const uint64_t key =
        uint64_t{rss_key_word} << 48 | uint64_t{rss_key_word} << 32 | uint64_t{rss_key_word} << 16 | rss_key_word;
    return static_cast<uint32_t>(key >> (32 - bit));
}

constexpr std::array<uint32_t, 256> rss_table(bool high_byte) noexcept
{
    std::array<uint32_t, 256> t{};
    for (uint32_t v = 0; v < 256; ++v) {
        uint32_t h = 0;
        for (unsigned b = 0; b < 8; ++b) {
            if ((v >> (7 - b) & 1u) != 0) {
                h ^= rss_window(high_byte ? b : b + 8);
            }
        }
        t[v] = h;
    }
    return t;
}

inline constexpr auto rss_high = rss_table(true);
inline constexpr auto rss_low = rss_table(false);

inline uint32_t fold64(const uint8_t *p) noexcept
{
    uint64_t w;
    std::memcpy(&w, p, sizeof w);
    return static_cast<uint32_t>(w ^ w >> 32);
}

} // namespace detail

// The RSS hash of the key's flow, as a NIC with the host's key computes it,
// in either direction.  Addresses are in network order in the key, so the
// fold runs on little-endian loads and swaps once at the end.
inline uint32_t rss_hash(const FlowKey &k) noexcept
{
    uint32_t x;
    if (k.ip_version == 4) {
        x = k.src_v4() ^ k.dst_v4(); // the rest of the addresses is zero
    } else {
        x = detail::fold64(k.src.data()) ^ detail::fold64(k.src.data() + 8) ^ detail::fold64(k.dst.data()) ^
            detail::fold64(k.dst.data() + 8);
    }
    uint32_t fold = (x ^ x >> 16) & 0xffffu;
    fold = static_cast<uint32_t>(__builtin_bswap16(static_cast<uint16_t>(fold)));
    // TCP and UDP hash their ports too (in host order: the wire's value).
    if (k.proto == kProtoTcp || k.proto == kProtoUdp) {
        fold ^= static_cast<uint32_t>(k.src_port ^ k.dst_port);
    }
    return detail::rss_high[fold >> 8] ^ detail::rss_low[fold & 0xffu];
}

} // namespace serpens::net
