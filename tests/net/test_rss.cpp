// net::rss_hash against DPDK's software Toeplitz (what NICs compute), and
// the router's bucket taken from it (BucketHash::rss).
#include "net/rss.h"

#include <doctest/doctest.h>
#include <rte_thash.h>

#include <array>
#include <random>
#include <vector>

using namespace serpens::net;

namespace {

// The host's key at a length a NIC asks for (40 bytes for most, 52 for some).
template<std::size_t N = 52>
std::array<uint8_t, N> host_key()
{
    std::array<uint8_t, N> key{};
    for (std::size_t i = 0; i < key.size(); ++i) {
        key[i] = rss_key_byte(i);
    }
    return key;
}

uint32_t be32(const uint8_t *p) { return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3]; }

// What a NIC with RSS on IP, TCP and UDP hashes for the key's packet, as
// DPDK's rte_softrss takes it: addresses, then the ports for TCP and UDP.
std::vector<uint32_t> nic_tuple(const FlowKey &k)
{
    std::vector<uint32_t> tuple;
    const unsigned addr_words = k.ip_version == 4 ? 1 : 4;
    for (unsigned w = 0; w < addr_words; ++w) {
        tuple.push_back(be32(k.src.data() + 4 * w));
    }
    for (unsigned w = 0; w < addr_words; ++w) {
        tuple.push_back(be32(k.dst.data() + 4 * w));
    }
    if (k.proto == 6 || k.proto == 17) {
        tuple.push_back(uint32_t{k.src_port} << 16 | k.dst_port);
    }
    return tuple;
}

uint32_t nic_hash(const FlowKey &k)
{
    std::vector<uint32_t> tuple = nic_tuple(k); // rte_softrss takes it non-const
    const auto key = host_key();
    return rte_softrss(tuple.data(), static_cast<uint32_t>(tuple.size()), key.data());
}

FlowKey random_key(std::mt19937_64 &rng, uint8_t version, uint8_t proto)
{
    FlowKey k;
    k.ip_version = version;
    k.proto = proto;
    const unsigned addr_bytes = version == 4 ? 4 : 16;
    for (unsigned i = 0; i < addr_bytes; ++i) {
        k.src[i] = static_cast<uint8_t>(rng());
        k.dst[i] = static_cast<uint8_t>(rng());
    }
    k.src_port = static_cast<uint16_t>(rng());
    k.dst_port = static_cast<uint16_t>(rng());
    return k;
}

// Sets the process's bucket hash for one test case and puts it back.
struct BucketHashScope {
    BucketHash saved = bucket_hash();
    explicit BucketHashScope(BucketHash how) { set_bucket_hash(how); }
    ~BucketHashScope() { set_bucket_hash(saved); }
};

} // namespace

TEST_SUITE_BEGIN("flowhash");

TEST_CASE("the RSS hash is the NIC's Toeplitz hash with the host's key, in both directions")
{
    std::mt19937_64 rng(7);
    // TCP and UDP hash their ports; ICMP, other protocols and fragments
    // (whose keys have ports 0) hash the addresses alone, as NICs do.
    for (uint8_t version : {uint8_t{4}, uint8_t{6}}) {
        for (uint8_t proto : {uint8_t{6}, uint8_t{17}, uint8_t{1}, uint8_t{47}, uint8_t{132}}) {
            for (int i = 0; i < 500; ++i) {
                const FlowKey k = random_key(rng, version, proto);
                CAPTURE(version);
                CAPTURE(proto);
                CHECK(rss_hash(k) == nic_hash(k));
                CHECK(rss_hash(k.reversed()) == rss_hash(k));
                CHECK(nic_hash(k.reversed()) == nic_hash(k));
            }
        }
    }
}

TEST_CASE("the key is the host's at any length a NIC asks for")
{
    // 40 bytes (most NICs) and 52 (some): the same repeating word, so the
    // hash of a 36-byte input (IPv6 with ports) does not depend on it.
    const auto short_key = host_key<40>();
    const auto long_key = host_key<52>();
    std::mt19937_64 rng(11);
    std::vector<uint32_t> tuple = nic_tuple(random_key(rng, 6, 6));
    REQUIRE(tuple.size() == 9);
    CHECK(rte_softrss(tuple.data(), 9, short_key.data()) == rte_softrss(tuple.data(), 9, long_key.data()));
    CHECK(short_key[0] == 0x6d);
    CHECK(short_key[1] == 0x5a);
}

TEST_CASE("with RSS buckets the flow hash's low byte is the RSS hash's and the rest is unchanged")
{
    std::mt19937_64 rng(13);
    std::vector<FlowKey> keys;
    for (int i = 0; i < 1000; ++i) {
        keys.push_back(random_key(rng, i % 3 == 0 ? 6 : 4, i % 2 == 0 ? 6 : 17));
    }
    std::vector<uint32_t> crc(keys.size());
    {
        BucketHashScope scope(BucketHash::crc32c);
        hash_flows(keys.data(), static_cast<uint32_t>(keys.size()), crc.data());
    }
    BucketHashScope scope(BucketHash::rss);
    std::vector<uint32_t> rss(keys.size());
    hash_flows(keys.data(), static_cast<uint32_t>(keys.size()), rss.data());
    std::array<unsigned, 256> per_bucket{};
    for (std::size_t i = 0; i < keys.size(); ++i) {
        CAPTURE(i);
        CHECK((rss[i] & 0xffu) == (nic_hash(keys[i]) & 0xffu));
        CHECK((rss[i] & ~0xffu) == (crc[i] & ~0xffu));
        CHECK(keys[i].hash() == rss[i]);
        CHECK(keys[i].reversed().hash() == rss[i]);
        ++per_bucket[rss[i] & 0xffu];
    }
    // Random flows still reach every part of the range (1000 flows over 256
    // buckets: an empty bucket has odds of about 2%; none has 20).
    unsigned empty = 0;
    for (unsigned n : per_bucket) {
        empty += n == 0 ? 1 : 0;
        CHECK(n < 20);
    }
    CHECK(empty < 20);
}

TEST_SUITE_END();
