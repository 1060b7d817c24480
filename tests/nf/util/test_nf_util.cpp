// serpens/nf_util.h: the full checksum against RFC 1071's example, the
// incremental updates (RFC 1624) against a full recompute on random data,
// serpens_ipv4_rewrite on TCP, UDP and ICMP packets, and the bulk state
// lookup with and without the host's get_state_bulk; big-endian loads and
// stores, the pseudo header sum, and the one prefix parser and match.

#include <serpens/nf_util.h>

#include <doctest/doctest.h>

#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

extern "C" uint16_t nf_util_c_rewrite_csum(uint8_t *ip, uint8_t *l4, uint32_t new_ip, uint16_t new_port);
extern "C" int nf_util_c_prefix_len(const char *text);

namespace {

// The checksum of a buffer whose checksum field (at csum_at) is taken as zero.
uint16_t recompute(std::vector<uint8_t> b, std::size_t csum_at)
{
    b[csum_at] = b[csum_at + 1] = 0;
    return serpens_csum(b.data(), b.size());
}

// The TCP/UDP checksum over the pseudo header and the L4 bytes l4[0, len).
uint16_t l4_csum(const uint8_t *ip, const uint8_t *l4, std::size_t len, uint8_t proto, std::size_t csum_at)
{
    std::vector<uint8_t> b(12 + len);
    std::memcpy(b.data(), ip + 12, 8);
    b[8] = 0;
    b[9] = proto;
    b[10] = static_cast<uint8_t>(len >> 8);
    b[11] = static_cast<uint8_t>(len);
    std::memcpy(b.data() + 12, l4, len);
    return recompute(b, 12 + csum_at);
}

struct Packet {
    std::vector<uint8_t> bytes; // 20 B IPv4 header, then L4
    uint8_t *ip() { return bytes.data(); }
    uint8_t *l4() { return bytes.data() + 20; }
    std::size_t l4_len() const { return bytes.size() - 20; }
};

// A random IPv4 packet of protocol proto with both checksums right.
Packet random_packet(std::mt19937 &rng, uint8_t proto, std::size_t l4_len, std::size_t csum_at, bool pseudo)
{
    Packet p;
    p.bytes.resize(20 + l4_len);
    for (uint8_t &x : p.bytes) {
        x = static_cast<uint8_t>(rng());
    }
    p.ip()[0] = 0x45;
    p.ip()[9] = proto;
    serpens_st16(p.ip() + 10, 0);
    serpens_st16(p.ip() + 10, serpens_csum(p.ip(), 20));
    serpens_st16(p.l4() + csum_at, 0);
    uint16_t c = pseudo ? l4_csum(p.ip(), p.l4(), l4_len, proto, csum_at)
                        : recompute(std::vector<uint8_t>(p.l4(), p.l4() + l4_len), csum_at);
    serpens_st16(p.l4() + csum_at, c);
    return p;
}

} // namespace

TEST_CASE("serpens_csum: RFC 1071's example, odd lengths, a header that verifies")
{
    // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2; checksum 220d.
    const uint8_t words[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
    uint8_t out[2];
    serpens_st16(out, serpens_csum(words, sizeof words));
    CHECK(out[0] == 0x22);
    CHECK(out[1] == 0x0d);
    // An odd last byte counts as the high byte of a word padded with zero.
    const uint8_t odd[] = {0x00, 0x01, 0xf2};
    const uint8_t even[] = {0x00, 0x01, 0xf2, 0x00};
    CHECK(serpens_csum(odd, sizeof odd) == serpens_csum(even, sizeof even));
    // A header with its checksum in place sums to zero.
    std::mt19937 rng(1);
    Packet p = random_packet(rng, 6, 20, 16, true);
    CHECK(serpens_csum(p.ip(), 20) == 0);
}

TEST_CASE("serpens_csum_replace16/32 equal a full recompute on random data")
{
    std::mt19937 rng(1624);
    for (int round = 0; round < 20000; ++round) {
        std::vector<uint8_t> b(2 * (2 + rng() % 40));
        for (uint8_t &x : b) {
            x = static_cast<uint8_t>(rng());
        }
        if (round % 7 == 0) {
            std::fill(b.begin(), b.end(), uint8_t{0}); // all-zero data: the +0/-0 corner of RFC 1624 §3
        }
        const std::size_t csum_at = 0;
        serpens_st16(b.data() + csum_at, recompute(b, csum_at));
        // A 16-bit or a 32-bit field, at any even offset after the checksum.
        const bool wide = round % 2 == 0 && b.size() >= 6;
        const std::size_t at = 2 + 2 * (rng() % ((b.size() - (wide ? 4 : 2)) / 2));
        uint16_t hc = serpens_ld16(b.data() + csum_at);
        if (wide) {
            uint32_t old = serpens_ld32(b.data() + at), now = static_cast<uint32_t>(rng());
            serpens_st32(b.data() + at, now);
            hc = serpens_csum_replace32(hc, old, now);
        } else {
            uint16_t old = serpens_ld16(b.data() + at), now = static_cast<uint16_t>(rng());
            serpens_st16(b.data() + at, now);
            hc = serpens_csum_replace16(hc, old, now);
        }
        const uint16_t full = recompute(b, csum_at);
        INFO("round " << round);
        // Equal, or the other zero of one's complement (~0 = 0xffff) when a
        // recompute of data summing to zero gives 0xffff; both verify.
        CHECK((hc == full || (hc == 0 && full == 0xffff)));
        serpens_st16(b.data() + csum_at, hc);
        CHECK((serpens_csum(b.data(), b.size()) == 0 || serpens_csum(b.data(), b.size()) == 0xffff));
    }
}

TEST_CASE("serpens_csum_apply of deltas added up equals updating field by field")
{
    // What serpens_ipv4_rewrite relies on: one fold of the summed deltas of
    // an address and a port gives the checksum that four 16-bit updates give.
    std::mt19937_64 rng(1624);
    for (int round = 0; round < 20000; ++round) {
        uint16_t hc = static_cast<uint16_t>(rng());
        if (round % 5 == 0) {
            hc = round % 10 == 0 ? 0 : 0xffff; // both zeros of one's complement
        }
        const int fields = 1 + static_cast<int>(rng() % 6);
        uint16_t stepwise = hc;
        uint32_t delta = 0;
        for (int f = 0; f < fields; ++f) {
            uint16_t old = static_cast<uint16_t>(rng()), now = static_cast<uint16_t>(rng());
            if (round % 3 == 0) {
                old = 0, now = 0xffff; // the largest delta: 0x1fffe a field
            }
            stepwise = serpens_csum_replace16(stepwise, old, now);
            delta += serpens_csum_delta16(old, now);
        }
        INFO("round " << round);
        CHECK(serpens_csum_apply(hc, delta) == stepwise);
    }
    // Every checksum with the largest deltas of 1 to 6 fields: where the sum
    // needs its second fold.
    for (uint32_t hc = 0; hc <= 0xffff; ++hc) {
        uint16_t stepwise = static_cast<uint16_t>(hc);
        uint32_t delta = 0;
        for (int f = 0; f < 6; ++f) {
            stepwise = serpens_csum_replace16(stepwise, 0, 0xffff);
            delta += serpens_csum_delta16(0, 0xffff);
            if (serpens_csum_apply(static_cast<uint16_t>(hc), delta) != stepwise) {
                FAIL_CHECK("hc " << hc << ", " << f + 1 << " fields");
            }
        }
    }
    const uint32_t old_ip = 0xc0a80001u, new_ip = 0xcb007101u;
    CHECK(serpens_csum_apply(0x1234, serpens_csum_delta32(old_ip, new_ip)) ==
          serpens_csum_replace16(serpens_csum_replace16(0x1234, 0x0001, 0x7101), 0xc0a8, 0xcb00));
}

TEST_CASE("serpens_ipv4_rewrite keeps IPv4, TCP, UDP and ICMP checksums right")
{
    std::mt19937 rng(768);
    for (int round = 0; round < 2000; ++round) {
        const uint32_t new_ip = static_cast<uint32_t>(rng());
        const uint16_t new_port = static_cast<uint16_t>(rng());
        const unsigned addr_at = round % 2 == 0 ? 16 : 12;
        INFO("round " << round);
        { // tcp
            Packet p = random_packet(rng, 6, 20 + rng() % 64, 16, true);
            serpens_ipv4_rewrite(p.ip(), addr_at, p.l4(), 16, addr_at == 16 ? 2 : 0, 1, 0, new_ip, new_port);
            CHECK(serpens_ld32(p.ip() + addr_at) == new_ip);
            CHECK(serpens_ld16(p.l4() + (addr_at == 16 ? 2 : 0)) == new_port);
            CHECK(serpens_csum(p.ip(), 20) == 0);
            CHECK(serpens_ld16(p.l4() + 16) == l4_csum(p.ip(), p.l4(), p.l4_len(), 6, 16));
        }
        { // udp
            Packet p = random_packet(rng, 17, 8 + rng() % 64, 6, true);
            serpens_ipv4_rewrite(p.ip(), addr_at, p.l4(), 6, 2, 1, 1, new_ip, new_port);
            CHECK(serpens_csum(p.ip(), 20) == 0);
            const uint16_t hc = serpens_ld16(p.l4() + 6), full = l4_csum(p.ip(), p.l4(), p.l4_len(), 17, 6);
            CHECK(hc != 0); // zero means "no checksum"
            CHECK((hc == full || (hc == 0xffff && full == 0)));
        }
        { // udp without a checksum keeps none
            Packet p = random_packet(rng, 17, 8, 6, true);
            serpens_st16(p.l4() + 6, 0);
            serpens_ipv4_rewrite(p.ip(), addr_at, p.l4(), 6, 2, 1, 1, new_ip, new_port);
            CHECK(serpens_ld16(p.l4() + 6) == 0);
            CHECK(serpens_ld16(p.l4() + 2) == new_port);
            CHECK(serpens_csum(p.ip(), 20) == 0);
        }
        { // icmp echo id: no pseudo header
            Packet p = random_packet(rng, 1, 8 + rng() % 64, 2, false);
            serpens_ipv4_rewrite(p.ip(), addr_at, p.l4(), 2, 4, 0, 0, new_ip, new_port);
            CHECK(serpens_csum(p.ip(), 20) == 0);
            CHECK(serpens_ld16(p.l4() + 2) == recompute(std::vector<uint8_t>(p.l4(), p.l4() + p.l4_len()), 2));
        }
    }
}

TEST_CASE("nf_util.h compiled as C gives the same rewrite")
{
    std::mt19937 rng(99);
    Packet a = random_packet(rng, 6, 40, 16, true);
    Packet b = a;
    serpens_ipv4_rewrite(a.ip(), 16, a.l4(), 16, 2, 1, 0, 0x01020304u, 0x5000);
    CHECK(nf_util_c_rewrite_csum(b.ip(), b.l4(), 0x01020304u, 0x5000) == serpens_ld16(a.l4() + 16));
    CHECK(a.bytes == b.bytes);
}

namespace {

// A "table" of keys 0..9 (4-byte keys), each with the value key * 7 (8 bytes).
int fake_get(serpens_table *, const void *key, void *out)
{
    uint32_t k;
    std::memcpy(&k, key, 4);
    if (k >= 10) {
        return SERPENS_ENOENT;
    }
    const uint64_t v = uint64_t{k} * 7;
    std::memcpy(out, &v, 8);
    return SERPENS_OK;
}

int bulk_calls = 0;
uint64_t fake_bulk(serpens_table *t, const void *keys, uint32_t n, void *values)
{
    ++bulk_calls;
    uint64_t hit = 0;
    for (uint32_t j = 0; j < n; ++j) {
        if (fake_get(t, static_cast<const uint8_t *>(keys) + 4 * j, static_cast<uint8_t *>(values) + 8 * j) ==
            SERPENS_OK) {
            hit |= 1ull << j;
        }
    }
    return hit;
}

} // namespace

TEST_CASE("serpens_get_state_bulk: the host's bulk call when there is one, else one get_state per key")
{
    const uint32_t keys[5] = {3, 12, 0, 9, 40};
    for (bool with_bulk : {false, true}) {
        CAPTURE(with_bulk);
        serpens_host_api api{};
        api.get_state = fake_get;
        api.get_state_bulk = with_bulk ? fake_bulk : nullptr;
        bulk_calls = 0;
        uint64_t values[5] = {0, 0, 0, 0, 0};
        const uint64_t hit = serpens_get_state_bulk(&api, nullptr, keys, 5, values, 4, 8);
        CHECK(hit == 0b01101);
        CHECK(values[0] == 21);
        CHECK(values[2] == 0);
        CHECK(values[3] == 63);
        CHECK(bulk_calls == (with_bulk ? 1 : 0));
        CHECK(serpens_get_state_bulk(&api, nullptr, keys, 0, values, 4, 8) == 0);
    }
}

TEST_CASE("serpens_read_config_file: reads to EOF within the limit, refuses past it")
{
    char tmpl[] = "/tmp/serpens-read-XXXXXX";
    int fd = mkstemp(tmpl);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, "0123456789", 10) == 10);
    close(fd);
    char *data = nullptr;
    size_t size = 0;
    char err[256] = "";
    // Exactly at the limit: read whole and NUL-terminated.
    REQUIRE(serpens_read_config_file(tmpl, 10, &data, &size, err, sizeof err) == SERPENS_OK);
    CHECK(size == 10);
    CHECK(std::string(data) == "0123456789");
    std::free(data);
    CHECK(serpens_read_config_file(tmpl, 9, &data, &size, err, sizeof err) == SERPENS_EINVAL);
    CHECK(data == nullptr);
    CHECK(std::string(err) == std::string(tmpl) + ": 10 bytes, over the limit of 9 bytes");
    // One every local user may rewrite: refused, whatever it says.
    REQUIRE(chmod(tmpl, 0646) == 0);
    CHECK(serpens_read_config_file(tmpl, 10, &data, &size, err, sizeof err) == SERPENS_EINVAL);
    CHECK(data == nullptr);
    CHECK(std::string(err) == std::string(tmpl) +
                                  ": every local user may write to it (mode 646), and so change what it sets; run "
                                  "chmod o-w on it");
    REQUIRE(chmod(tmpl, 0664) == 0); // a group's is the operator's choice
    REQUIRE(serpens_read_config_file(tmpl, 10, &data, &size, err, sizeof err) == SERPENS_OK);
    std::free(data);
    unlink(tmpl);
    CHECK(serpens_read_config_file(tmpl, 9, &data, &size, err, sizeof err) == SERPENS_ENOENT);
    CHECK(std::string(err).find(": cannot read: No such file") != std::string::npos);

    // A regular file whose st_size says 0 (procfs) is still read to its end,
    // and the limit holds while reading, not only against st_size.
    REQUIRE(serpens_read_config_file("/proc/self/status", 1 << 20, &data, &size, err, sizeof err) == SERPENS_OK);
    CHECK(size > 100);
    CHECK(std::string(data, size).find("Pid:") != std::string::npos);
    std::free(data);
    CHECK(serpens_read_config_file("/proc/self/status", 100, &data, &size, err, sizeof err) == SERPENS_EINVAL);
    CHECK(std::string(err) == "/proc/self/status: more than the limit of 100 bytes");
}

TEST_CASE("serpens_ld_be/st_be: network order at any alignment")
{
    uint8_t b[7] = {0};
    serpens_st_be16(b + 1, 0x1234);
    serpens_st_be32(b + 3, 0xa1b2c3d4u);
    const uint8_t want[7] = {0, 0x12, 0x34, 0xa1, 0xb2, 0xc3, 0xd4};
    CHECK(std::memcmp(b, want, sizeof b) == 0);
    CHECK(serpens_ld_be16(b + 1) == 0x1234);
    CHECK(serpens_ld_be32(b + 3) == 0xa1b2c3d4u);
    CHECK(serpens_ld_be16(b + 2) == 0x34a1);
}

TEST_CASE("serpens_csum_pseudo: IPv4 equals the pseudo header written out; IPv6 verifies a hand-summed packet")
{
    std::mt19937 rng(793);
    for (std::size_t len : {8u, 9u, 20u, 33u}) {
        Packet p = random_packet(rng, 17, len, 6, true);
        // The packet carries a correct UDP checksum: pseudo + L4 must fold to 0.
        CHECK(serpens_csum_fold(serpens_csum_add(serpens_csum_pseudo(p.ip(), 0, 17, len), p.l4(), len)) == 0);
        serpens_st16(p.l4() + 6, 0);
        uint16_t c = serpens_csum_fold(serpens_csum_add(serpens_csum_pseudo(p.ip(), 0, 17, len), p.l4(), len));
        CHECK(c == l4_csum(p.ip(), p.l4(), len, 17, 6));
    }
    // IPv6 pseudo header: 2001:db8::1 -> 2001:db8::2, next header 58, 8 bytes:
    // 2001+0db8+0001 + 2001+0db8+0002 + 0008 + 003a = 0x5bb7 (no carries);
    // the L4 word 8000 (echo request) gives ~(0x5bb7 + 0x8000) = 0x2448.
    uint8_t ip6[40] = {0x60};
    const uint8_t src[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    std::memcpy(ip6 + 8, src, 16);
    std::memcpy(ip6 + 24, src, 16);
    ip6[39] = 2;
    const uint8_t icmp[8] = {0x80, 0, 0, 0, 0, 0, 0, 0};
    uint8_t out[2];
    serpens_st16(out, serpens_csum_fold(serpens_csum_add(serpens_csum_pseudo(ip6, 1, 58, 8), icmp, 8)));
    CHECK(serpens_ld_be16(out) == 0x2448);
}

namespace {

std::string prefix_error(const char *text)
{
    serpens_prefix p;
    char why[256] = "";
    CHECK(serpens_parse_prefix(text, &p, why, sizeof why) == SERPENS_EINVAL);
    return why;
}

serpens_prefix prefix_ok(const char *text)
{
    serpens_prefix p;
    char why[256] = "";
    INFO(text, ": ", why);
    CHECK(serpens_parse_prefix(text, &p, why, sizeof why) == SERPENS_OK);
    return p;
}

} // namespace

TEST_CASE("serpens_parse_prefix: addresses, prefixes, /0, /32, /128")
{
    // Network-order address bytes from the start of addr; the rest are zero.
    const struct {
        const char *text;
        uint8_t family, len;
        std::vector<uint8_t> addr;
    } cases[] = {
        {"10.0.0.0/8", 4, 8, {10}},
        {"192.0.2.1", 4, 32, {192, 0, 2, 1}},
        {"192.0.2.1/32", 4, 32, {192, 0, 2, 1}},
        {"0.0.0.0/0", 4, 0, {}},
        {"2001:db8::/32", 6, 32, {0x20, 0x01, 0x0d, 0xb8}},
        {"2001:db8::1", 6, 128, {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
        {"2001:db8::1/128", 6, 128, {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
        {"::/0", 6, 0, {}},
        // IPv4-mapped addresses are IPv6: their prefix lengths count 128 bits.
        {"::ffff:10.0.0.0/104", 6, 104, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10}},
    };
    for (const auto &c : cases) {
        INFO(c.text);
        const serpens_prefix p = prefix_ok(c.text);
        CHECK(p.family == c.family);
        CHECK(p.len == c.len);
        std::vector<uint8_t> want = c.addr;
        want.resize(16, 0);
        CHECK(std::vector<uint8_t>(p.addr, p.addr + 16) == want);
    }
}

TEST_CASE("serpens_parse_prefix: host bits refused with the prefix meant")
{
    CHECK(prefix_error("10.1.2.3/8") == "'10.1.2.3/8' has host bits set; did you mean 10.0.0.0/8?");
    CHECK(prefix_error("10.0.0.1/0") == "'10.0.0.1/0' has host bits set; did you mean 0.0.0.0/0?");
    CHECK(prefix_error("192.168.1.128/24") == "'192.168.1.128/24' has host bits set; did you mean 192.168.1.0/24?");
    CHECK(prefix_error("2001:db8::1/64") == "'2001:db8::1/64' has host bits set; did you mean 2001:db8::/64?");
    CHECK(prefix_error("::ffff:10.1.2.3/104") ==
          "'::ffff:10.1.2.3/104' has host bits set; did you mean ::ffff:10.0.0.0/104?");
    // The last host bit alone counts.
    CHECK(prefix_error("10.0.0.1/31").find("did you mean 10.0.0.0/31?") != std::string::npos);
    CHECK(prefix_error("::1/127").find("did you mean ::/127?") != std::string::npos);
}

TEST_CASE("serpens_parse_selector: any matches all, a prefix sets the family, the other family is refused")
{
    uint8_t family = 0, len = 99;
    uint8_t addr[16];
    std::memset(addr, 0xff, sizeof addr);
    char why[256] = "";
    REQUIRE(serpens_parse_selector("any", &family, addr, &len, why, sizeof why) == SERPENS_OK);
    CHECK(family == 0);
    CHECK(len == 0);
    CHECK(addr[15] == 0);
    REQUIRE(serpens_parse_selector("2001:db8::/32", &family, addr, &len, why, sizeof why) == SERPENS_OK);
    CHECK(family == 6);
    CHECK(len == 32);
    CHECK(addr[1] == 0x01);
    REQUIRE(serpens_parse_selector("any", &family, addr, &len, why, sizeof why) == SERPENS_OK);
    CHECK(family == 6); // "any" keeps the family the other address set
    CHECK(serpens_parse_selector("10.0.0.0/8", &family, addr, &len, why, sizeof why) == SERPENS_EINVAL);
    CHECK(std::string(why) == "'10.0.0.0/8' is IPv4, the rule's other address IPv6");
    family = 0;
    CHECK(serpens_parse_selector("10.1.2.3/8", &family, addr, &len, why, sizeof why) == SERPENS_EINVAL);
    CHECK(std::string(why).find("did you mean 10.0.0.0/8?") != std::string::npos);
    CHECK(serpens_parse_selector("ANY", &family, addr, &len, why, sizeof why) == SERPENS_EINVAL);
    CHECK(family == 0);
}

TEST_CASE("serpens_parse_prefix: bad lengths, garbage and overlong text refused")
{
    CHECK(prefix_error("10.0.0.0/33") == "'10.0.0.0/33' has a bad prefix length (0..32)");
    CHECK(prefix_error("::/129") == "'::/129' has a bad prefix length (0..128)");
    for (const char *bad_len : {"10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/8 ", "10.0.0.0/0x8",
                                "10.0.0.0/8/8", "10.0.0.0/0008", "::/1280"}) {
        INFO(bad_len);
        CHECK(prefix_error(bad_len).find("bad prefix length") != std::string::npos);
    }
    for (const char *garbage : {"", "/8", "any", "10.0.0", "10.0.0.256/8", "10.0.0.0.0/8", " 10.0.0.0/8", "010.0.0.0/8",
                                "2001:db8:::/32", "2001:db8::g/32", "example.com"}) {
        INFO(garbage);
        CHECK(prefix_error(garbage).find("is not an IPv4 or IPv6 address or prefix") != std::string::npos);
    }
    const std::string longest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128";
    CHECK(longest.size() == SERPENS_PREFIX_TEXT_MAX);
    CHECK(prefix_ok(longest.c_str()).len == 128);
    const std::string overlong = "10.0.0.0/8" + std::string(5000, '0');
    const std::string why = prefix_error(overlong.c_str());
    CHECK(why.find("is too long") != std::string::npos);
    CHECK(why.size() < 120); // quotes only the start of it
}

TEST_CASE("serpens_prefix_match: whole bytes, partial bytes, /0 and full lengths")
{
    serpens_prefix p = prefix_ok("10.128.0.0/9");
    const uint8_t in[4] = {10, 200, 1, 1}, out[4] = {10, 127, 255, 255}, other[4] = {11, 128, 0, 0};
    CHECK(serpens_prefix_match(p.addr, p.len, in));
    CHECK_FALSE(serpens_prefix_match(p.addr, p.len, out));
    CHECK_FALSE(serpens_prefix_match(p.addr, p.len, other));
    p = prefix_ok("0.0.0.0/0");
    CHECK(serpens_prefix_match(p.addr, p.len, other));
    p = prefix_ok("10.200.1.1");
    CHECK(serpens_prefix_match(p.addr, p.len, in));
    CHECK_FALSE(serpens_prefix_match(p.addr, p.len, out));
    p = prefix_ok("2001:db8::1");
    uint8_t a6[16];
    std::memcpy(a6, p.addr, 16);
    CHECK(serpens_prefix_match(p.addr, p.len, a6));
    a6[15] ^= 1;
    CHECK_FALSE(serpens_prefix_match(p.addr, p.len, a6));
    p = prefix_ok("2001:db8::/127");
    CHECK(serpens_prefix_match(p.addr, p.len, a6));
    CHECK(serpens_prefix_mask4(0) == 0);
    CHECK(serpens_prefix_mask4(9) == 0xff800000u);
    CHECK(serpens_prefix_mask4(32) == 0xffffffffu);
}

TEST_CASE("serpens_parse_prefix compiled as C reads the same")
{
    CHECK(nf_util_c_prefix_len("10.0.0.0/8") == 8);
    CHECK(nf_util_c_prefix_len("2001:db8::1") == 128);
    CHECK(nf_util_c_prefix_len("10.1.2.3/8") == -1);
}
