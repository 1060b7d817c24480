// net::parse_packet, result tables and flow hashing.
#include "net/parse.h"
#include "packet_builder.h"

#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

using namespace serpens::net;
using namespace serpens::net::test;

namespace {

struct Parsed {
    ParseResult result;
    serpens_pkt pkt;
    FlowKey key;
};

// Parses from an exact-size heap copy so ASan sees any read past the end.
Parsed parse(const Bytes &frame)
{
    auto copy = std::make_unique<uint8_t[]>(frame.size() + (frame.empty() ? 1 : 0));
    if (!frame.empty()) { // memcpy from an empty vector's null data() is undefined
        std::memcpy(copy.get(), frame.data(), frame.size());
    }
    Parsed p{};
    p.pkt.data = copy.get();
    p.pkt.len = static_cast<uint32_t>(frame.size());
    p.result = parse_packet(copy.get(), static_cast<uint32_t>(frame.size()), p.pkt, p.key);
    p.pkt.data = nullptr;
    return p;
}

ParseResult result_of(const Bytes &frame) { return parse(frame).result; }

} // namespace

TEST_SUITE_BEGIN("parse");

TEST_CASE("IPv4 TCP: offsets, key and flags")
{
    const Bytes f = v4_tcp(40000, 80, {10, 0, 0, 1}, {10, 0, 0, 2}, 10);
    const Parsed p = parse(f);
    REQUIRE(p.result == ParseResult::ok);
    CHECK(p.pkt.flags == SERPENS_PKT_F_PARSED);
    CHECK(p.pkt.l3_offset == 14);
    CHECK(p.pkt.l4_offset == 34);
    CHECK(p.pkt.payload_offset == 54);
    CHECK(p.pkt.l3_type == SERPENS_L3_IPV4);
    CHECK(p.pkt.l4_proto == 6);
    CHECK(p.pkt.flow_hash == p.key.hash());
    CHECK(p.key.ip_version == 4);
    CHECK(p.key.proto == 6);
    CHECK(p.key.src_port == 40000);
    CHECK(p.key.dst_port == 80);
    CHECK(p.key.src[0] == 10);
    CHECK(p.key.src[3] == 1);
    CHECK(p.key.dst[3] == 2);
    CHECK(p.key.src[4] == 0); // rest of an IPv4 address stays zero
}

TEST_CASE("IPv4 options move L4")
{
    const Bytes opts = {0x94, 0x04, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0}; // router alert + NOPs + EOL: 12 bytes
    const Bytes t = tcp(1, 2);
    const Parsed p = parse(cat({eth(0x0800), ipv4(6, t.size(), {1, 1, 1, 1}, {2, 2, 2, 2}, opts), t}));
    REQUIRE(p.result == ParseResult::ok);
    CHECK(p.pkt.l4_offset == 14 + 32);
    CHECK(p.pkt.payload_offset == 14 + 32 + 20);
    // Options present but cut by the frame end.
    Bytes cut = cat({eth(0x0800), ipv4(6, 0, {1, 1, 1, 1}, {2, 2, 2, 2}, opts)});
    cut.resize(14 + 24);
    CHECK(result_of(cut) == ParseResult::truncated_ipv4);
}

TEST_CASE("Ethernet padding after the IP datagram is ignored")
{
    Bytes f = v4_tcp(1, 2, {1, 2, 3, 4}, {5, 6, 7, 8}, 0);
    f.resize(60, 0);
    const Parsed p = parse(f);
    REQUIRE(p.result == ParseResult::ok);
    CHECK(p.pkt.payload_offset == 54);
}

TEST_CASE("VLAN and QinQ")
{
    const Bytes ipt = cat({ipv4(6, 20), tcp(1, 2)});
    SUBCASE("one 802.1Q tag")
    {
        const Parsed p = parse(cat({eth(0x0800, {{0x8100, 0x2064}}), ipt}));
        REQUIRE(p.result == ParseResult::ok);
        CHECK((p.pkt.flags & SERPENS_PKT_F_VLAN) != 0);
        CHECK(p.pkt.vlan_id == 100); // PCP bits (0x2000) are not part of the id
        CHECK(p.pkt.l3_offset == 18);
    }
    SUBCASE("QinQ: 0x88a8 outer, 0x8100 inner; the outer id is reported")
    {
        const Parsed p = parse(cat({eth(0x0800, {{0x88a8, 300}, {0x8100, 7}}), ipt}));
        REQUIRE(p.result == ParseResult::ok);
        CHECK(p.pkt.vlan_id == 300);
        CHECK(p.pkt.l3_offset == 22);
        CHECK(p.pkt.l4_offset == 42);
    }
    SUBCASE("double 0x8100 also counts as two tags")
    {
        CHECK(result_of(cat({eth(0x0800, {{0x8100, 1}, {0x8100, 2}}), ipt})) == ParseResult::ok);
    }
    SUBCASE("three tags are unsupported, not malformed")
    {
        const ParseResult r = result_of(cat({eth(0x0800, {{0x88a8, 1}, {0x8100, 2}, {0x8100, 3}}), ipt}));
        CHECK(r == ParseResult::too_many_vlans);
        CHECK(is_unsupported(r));
    }
    SUBCASE("tag cut short")
    {
        Bytes f = eth(0x0800, {{0x8100, 5}});
        f.resize(16);
        CHECK(result_of(f) == ParseResult::truncated_vlan);
        Bytes g = eth(0x0800, {{0x88a8, 5}, {0x8100, 6}});
        g.resize(20);
        CHECK(result_of(g) == ParseResult::truncated_vlan);
    }
}

TEST_CASE("non-IP ethertypes are unsupported, not malformed")
{
    Bytes arp = cat({eth(0x0806), Bytes(28, 0)});
    const Parsed p = parse(arp);
    CHECK(p.result == ParseResult::unsupported_ethertype);
    CHECK(is_unsupported(p.result));
    CHECK_FALSE(is_malformed(p.result));
    CHECK(p.pkt.l3_offset == 14); // ARP still found behind L2
    CHECK((p.pkt.flags & SERPENS_PKT_F_PARSED) == 0);
    CHECK(p.pkt.flow_hash == 0);
    CHECK(result_of(cat({eth(0x0806, {{0x8100, 9}}), Bytes(28, 0)})) == ParseResult::unsupported_ethertype);
    CHECK(result_of(cat({eth(0x0040), Bytes(46, 0)})) == ParseResult::unsupported_ethertype); // 802.3 length
}

TEST_CASE("Ethernet truncation")
{
    CHECK(result_of({}) == ParseResult::truncated_l2);
    Bytes f = eth(0x0800);
    f.pop_back();
    CHECK(result_of(f) == ParseResult::truncated_l2);
    CHECK(is_malformed(ParseResult::truncated_l2));
}

TEST_CASE("IPv4 header faults")
{
    const Bytes t = tcp(1, 2);
    const Bytes good = cat({eth(0x0800), ipv4(6, t.size()), t});
    SUBCASE("header cut short")
    {
        Bytes f = good;
        f.resize(14 + 19);
        CHECK(result_of(f) == ParseResult::truncated_ipv4);
    }
    SUBCASE("version not 4")
    {
        Bytes f = good;
        f[14] = 0x55;
        CHECK(result_of(f) == ParseResult::bad_ipv4_header);
    }
    SUBCASE("IHL below 5")
    {
        Bytes f = good;
        f[14] = 0x44;
        CHECK(result_of(f) == ParseResult::bad_ipv4_header);
    }
    SUBCASE("total length beyond the frame")
    {
        Bytes f = good;
        put16(f, 16, static_cast<uint16_t>(f.size() - 14 + 1));
        CHECK(result_of(f) == ParseResult::bad_ipv4_length);
    }
    SUBCASE("total length below the header length")
    {
        Bytes f = good;
        put16(f, 16, 19);
        CHECK(result_of(f) == ParseResult::bad_ipv4_length);
    }
    SUBCASE("a failed parse leaves an unparsed view")
    {
        Bytes f = good;
        put16(f, 16, 19);
        const Parsed p = parse(f);
        CHECK(p.pkt.l3_type == SERPENS_L3_NONE);
        CHECK(p.pkt.l4_offset == SERPENS_OFFSET_NONE);
        CHECK(p.pkt.flow_hash == 0);
        CHECK(p.key == FlowKey{});
    }
}

TEST_CASE("IPv4 fragments")
{
    const Bytes u = udp(5000, 6000, 100); // claims the whole 108-byte datagram
    const Bytes first = cat({eth(0x0800), ipv4(17, 8 + 40, {1, 1, 1, 1}, {2, 2, 2, 2}, {}, 0x2000), u, Bytes(40, 1)});
    const Bytes middle = cat({eth(0x0800), ipv4(17, 48, {1, 1, 1, 1}, {2, 2, 2, 2}, {}, 0x2000 | 6), Bytes(48, 2)});
    const Bytes last = cat({eth(0x0800), ipv4(17, 12, {1, 1, 1, 1}, {2, 2, 2, 2}, {}, 12), Bytes(12, 3)});

    const Parsed p1 = parse(first);
    REQUIRE(p1.result == ParseResult::ok); // UDP length is for the whole datagram: not checked here
    CHECK(p1.pkt.l4_offset == 34);
    CHECK(p1.pkt.payload_offset == 42);
    CHECK((p1.pkt.flags & SERPENS_PKT_F_FRAGMENT) == 0);
    CHECK(p1.key.src_port == 0); // fragments hash on addresses and protocol only

    for (const Bytes *f : {&middle, &last}) {
        const Parsed p = parse(*f);
        REQUIRE(p.result == ParseResult::ok);
        CHECK((p.pkt.flags & SERPENS_PKT_F_FRAGMENT) != 0);
        CHECK((p.pkt.flags & SERPENS_PKT_F_PARSED) != 0);
        CHECK(p.pkt.l4_offset == SERPENS_OFFSET_NONE);
        CHECK(p.pkt.payload_offset == SERPENS_OFFSET_NONE);
        CHECK(p.pkt.l4_proto == 17);
        CHECK(p.pkt.flow_hash == p1.pkt.flow_hash); // all fragments meet at one instance
    }
    // A first fragment too short for its L4 header is still malformed.
    const Bytes tiny = cat({eth(0x0800), ipv4(6, 8, {1, 1, 1, 1}, {2, 2, 2, 2}, {}, 0x2000), Bytes(8, 0)});
    CHECK(result_of(tiny) == ParseResult::truncated_l4);
}

TEST_CASE("IPv6 and its extension headers")
{
    const Bytes t = tcp(1234, 443);
    SUBCASE("plain TCP")
    {
        const Parsed p = parse(cat({eth(0x86dd), ipv6(6, 20), t}));
        REQUIRE(p.result == ParseResult::ok);
        CHECK(p.pkt.l3_type == SERPENS_L3_IPV6);
        CHECK(p.pkt.l4_offset == 54);
        CHECK(p.key.ip_version == 6);
        CHECK(p.key.src[15] == 1);
        CHECK(p.key.dst[0] == 0x20);
    }
    SUBCASE("hop-by-hop, routing, destination options, AH")
    {
        Bytes ah(16, 0); // AH with payload length 2 -> (2 + 2) * 4 = 16 bytes
        ah[0] = 6;
        ah[1] = 2;
        const Bytes chain = cat({ext(43, 0), ext(60, 1), ext(51, 0), ah, t});
        const Parsed p = parse(cat({eth(0x86dd), ipv6(0, chain.size()), chain}));
        REQUIRE(p.result == ParseResult::ok);
        CHECK(p.pkt.l4_offset == 54 + 8 + 16 + 8 + 16); // HBH 8, routing 16, dest-opts 8, AH 16
        CHECK(p.pkt.l4_proto == 6);
        CHECK(p.key.proto == 6);
        CHECK(p.key.dst_port == 443);
    }
    SUBCASE("fragments")
    {
        const Bytes first = cat({frag6(17, 0, true), udp(1, 2, 500), Bytes(16, 0)});
        const Parsed p1 = parse(cat({eth(0x86dd), ipv6(44, first.size()), first}));
        REQUIRE(p1.result == ParseResult::ok);
        CHECK(p1.pkt.l4_offset == 62);
        CHECK(p1.pkt.l4_proto == 17);
        CHECK((p1.pkt.flags & SERPENS_PKT_F_FRAGMENT) == 0);
        CHECK(p1.key.src_port == 0);

        const Bytes later = cat({frag6(17, 3, false), Bytes(16, 0)});
        const Parsed p2 = parse(cat({eth(0x86dd), ipv6(44, later.size()), later}));
        REQUIRE(p2.result == ParseResult::ok);
        CHECK((p2.pkt.flags & SERPENS_PKT_F_FRAGMENT) != 0);
        CHECK(p2.pkt.l4_offset == SERPENS_OFFSET_NONE);
        CHECK(p2.pkt.l4_proto == 17);
        CHECK(p2.pkt.flow_hash == p1.pkt.flow_hash);

        // An atomic fragment (offset 0, no more fragments) is a whole datagram.
        const Bytes atomic = cat({frag6(6, 0, false), t});
        const Parsed p3 = parse(cat({eth(0x86dd), ipv6(44, atomic.size()), atomic}));
        REQUIRE(p3.result == ParseResult::ok);
        CHECK(p3.key.dst_port == 443);
    }
    SUBCASE("the walk is bounded")
    {
        Bytes chain8, chain9;
        for (unsigned i = 0; i < kMaxIpv6ExtHeaders; ++i) {
            chain8 = cat({chain8, ext(i + 1 < kMaxIpv6ExtHeaders ? 60 : 6)});
        }
        chain8 = cat({chain8, t});
        CHECK(result_of(cat({eth(0x86dd), ipv6(60, chain8.size()), chain8})) == ParseResult::ok);
        for (unsigned i = 0; i <= kMaxIpv6ExtHeaders; ++i) {
            chain9 = cat({chain9, ext(i < kMaxIpv6ExtHeaders ? 60 : 6)});
        }
        chain9 = cat({chain9, t});
        const ParseResult r = result_of(cat({eth(0x86dd), ipv6(60, chain9.size()), chain9}));
        CHECK(r == ParseResult::too_many_ext_headers);
        CHECK(is_unsupported(r));
    }
    SUBCASE("extension header longer than the payload")
    {
        const Bytes e = ext(6, 4); // says 40 bytes
        Bytes chain = cat({e});
        chain.resize(16);
        CHECK(result_of(cat({eth(0x86dd), ipv6(0, chain.size()), chain})) == ParseResult::truncated_ext_header);
        CHECK(result_of(cat({eth(0x86dd), ipv6(0, 4), Bytes(4, 0)})) == ParseResult::truncated_ext_header);
    }
    SUBCASE("header faults")
    {
        Bytes f = cat({eth(0x86dd), ipv6(6, 20), t});
        Bytes cut = f;
        cut.resize(14 + 39);
        CHECK(result_of(cut) == ParseResult::truncated_ipv6);
        Bytes ver = f;
        ver[14] = 0x40;
        CHECK(result_of(ver) == ParseResult::bad_ipv6_header);
        Bytes len = f;
        put16(len, 18, 21);
        CHECK(result_of(len) == ParseResult::bad_ipv6_length);
    }
    SUBCASE("no next header")
    {
        const Parsed p = parse(cat({eth(0x86dd), ipv6(59, 0)}));
        REQUIRE(p.result == ParseResult::ok);
        CHECK(p.pkt.l4_proto == 59);
        CHECK(p.pkt.l4_offset == SERPENS_OFFSET_NONE);
    }
}

TEST_CASE("L4 faults and ICMP")
{
    SUBCASE("TCP cut short")
    {
        CHECK(result_of(cat({eth(0x0800), ipv4(6, 19), Bytes(19, 0)})) == ParseResult::truncated_l4);
    }
    SUBCASE("TCP data offset")
    {
        CHECK(result_of(cat({eth(0x0800), ipv4(6, 20), tcp(1, 2, 4)})) == ParseResult::bad_tcp_offset);
        Bytes t = tcp(1, 2);
        t[12] = 0xf0; // 60 bytes claimed, 20 present
        CHECK(result_of(cat({eth(0x0800), ipv4(6, 20), t})) == ParseResult::bad_tcp_offset);
        const Parsed p = parse(cat({eth(0x0800), ipv4(6, 32), tcp(1, 2, 8)}));
        REQUIRE(p.result == ParseResult::ok);
        CHECK(p.pkt.payload_offset == 34 + 32);
    }
    SUBCASE("UDP length")
    {
        CHECK(result_of(cat({eth(0x0800), ipv4(17, 7), Bytes(7, 0)})) == ParseResult::truncated_l4);
        CHECK(result_of(cat({eth(0x0800), ipv4(17, 8), udp(1, 2, 0, 7)})) == ParseResult::bad_udp_length);
        CHECK(result_of(cat({eth(0x0800), ipv4(17, 12), udp(1, 2, 4, 13), Bytes(4, 0)})) ==
              ParseResult::bad_udp_length);
        // Shorter than the IP payload is tolerated.
        CHECK(result_of(cat({eth(0x0800), ipv4(17, 12), udp(1, 2, 0), Bytes(4, 0)})) == ParseResult::ok);
    }
    SUBCASE("ICMP echo: both ports carry the identifier")
    {
        const Parsed rq = parse(cat({eth(0x0800), ipv4(1, 8, {1, 1, 1, 1}, {2, 2, 2, 2}), icmp_echo(8, 77, 1)}));
        const Parsed rp = parse(cat({eth(0x0800), ipv4(1, 8, {2, 2, 2, 2}, {1, 1, 1, 1}), icmp_echo(0, 77, 1)}));
        REQUIRE(rq.result == ParseResult::ok);
        REQUIRE(rp.result == ParseResult::ok);
        CHECK(rq.key.src_port == 77);
        CHECK(rq.key.dst_port == 77);
        CHECK(rq.pkt.payload_offset == 42);
        CHECK(rq.pkt.flow_hash == rp.pkt.flow_hash);
        CHECK(same_flow(rq.key, rp.key));
        const Parsed unreach = parse(cat({eth(0x0800), ipv4(1, 8), icmp_echo(3, 77, 1)}));
        CHECK(unreach.key.src_port == 0);
        CHECK(result_of(cat({eth(0x0800), ipv4(1, 7), Bytes(7, 0)})) == ParseResult::truncated_l4);
    }
    SUBCASE("ICMPv6 echo")
    {
        const Parsed p = parse(cat({eth(0x86dd), ipv6(58, 8), icmp_echo(128, 9, 1)}));
        REQUIRE(p.result == ParseResult::ok);
        CHECK(p.pkt.l4_proto == 58);
        CHECK(p.key.src_port == 9);
        CHECK(result_of(cat({eth(0x86dd), ipv6(58, 4), Bytes(4, 0)})) == ParseResult::truncated_l4);
    }
    SUBCASE("other protocols are opaque but parsed")
    {
        const Parsed p = parse(cat({eth(0x0800), ipv4(47, 4), Bytes(4, 0)})); // GRE
        REQUIRE(p.result == ParseResult::ok);
        CHECK(p.pkt.l4_offset == 34);
        CHECK(p.pkt.l4_proto == 47);
        CHECK(p.pkt.payload_offset == SERPENS_OFFSET_NONE);
    }
}

TEST_CASE("every result has a crafted packet, a unique name and a class")
{
    const Bytes t = tcp(1, 2);
    Bytes trunc_vlan = eth(0x0800, {{0x8100, 1}});
    trunc_vlan.resize(15);
    Bytes trunc_v4 = cat({eth(0x0800), ipv4(6, 0)});
    trunc_v4.resize(20);
    Bytes bad_v4 = cat({eth(0x0800), ipv4(6, 20), t});
    bad_v4[14] = 0x43;
    Bytes bad_v4_len = cat({eth(0x0800), ipv4(6, 20), t});
    bad_v4_len.pop_back();
    Bytes trunc_v6 = eth(0x86dd);
    trunc_v6.resize(30);
    Bytes bad_v6 = cat({eth(0x86dd), ipv6(6, 20), t});
    bad_v6[14] = 0x70;
    Bytes bad_v6_len = cat({eth(0x86dd), ipv6(6, 20), t});
    bad_v6_len.pop_back();
    Bytes many_ext;
    for (unsigned i = 0; i <= kMaxIpv6ExtHeaders; ++i) {
        many_ext = cat({many_ext, ext(60)});
    }

    const std::vector<std::pair<ParseResult, Bytes>> cases = {
        {ParseResult::ok, v4_tcp()},
        {ParseResult::unsupported_ethertype, cat({eth(0x0806), Bytes(28, 0)})},
        {ParseResult::too_many_vlans, cat({eth(0x0800, {{0x8100, 1}, {0x8100, 2}, {0x8100, 3}}), Bytes(40, 0)})},
        {ParseResult::too_many_ext_headers, cat({eth(0x86dd), ipv6(60, many_ext.size()), many_ext})},
        {ParseResult::truncated_l2, Bytes(5, 0)},
        {ParseResult::truncated_vlan, trunc_vlan},
        {ParseResult::truncated_ipv4, trunc_v4},
        {ParseResult::bad_ipv4_header, bad_v4},
        {ParseResult::bad_ipv4_length, bad_v4_len},
        {ParseResult::truncated_ipv6, trunc_v6},
        {ParseResult::bad_ipv6_header, bad_v6},
        {ParseResult::bad_ipv6_length, bad_v6_len},
        {ParseResult::truncated_ext_header, cat({eth(0x86dd), ipv6(0, 6), Bytes(6, 0)})},
        {ParseResult::truncated_l4, cat({eth(0x0800), ipv4(17, 4), Bytes(4, 0)})},
        {ParseResult::bad_tcp_offset, cat({eth(0x0800), ipv4(6, 20), tcp(1, 2, 3)})},
        {ParseResult::bad_udp_length, cat({eth(0x0800), ipv4(17, 8), udp(1, 2, 0, 9)})},
    };
    std::set<ParseResult> covered;
    ParseCounters counters;
    for (const auto &[want, frame] : cases) {
        INFO("expected " << parse_result_name(want));
        const ParseResult got = result_of(frame);
        CHECK(std::string(parse_result_name(got)) == parse_result_name(want));
        covered.insert(got);
        counters.count(got);
    }
    CHECK(covered.size() == kParseResultCount);

    std::set<std::string> names;
    for (std::size_t i = 0; i < kParseResultCount; ++i) {
        const auto r = static_cast<ParseResult>(i);
        names.insert(parse_result_name(r));
        CHECK(std::strlen(parse_result_description(r)) > 0);
        CHECK((parse_result_class(r) == ParseClass::ok) == (r == ParseResult::ok));
        CHECK(counters[r] == 1);
    }
    CHECK(names.size() == kParseResultCount);
    CHECK(std::string(parse_result_name(ParseResult::ok)) == "ok");
    CHECK(std::string(parse_result_name(static_cast<ParseResult>(200))) == "?");
    CHECK(counters.total() == kParseResultCount);
    CHECK(counters.unsupported() == 3);
    CHECK(counters.malformed() == kParseResultCount - 4);
    ParseCounters sum;
    sum.add(counters);
    sum.add(counters);
    CHECK(sum[ParseResult::bad_udp_length] == 2);
}

TEST_CASE("every truncation of valid packets parses without reading past the end")
{
    Bytes ah(16, 0);
    ah[0] = 17;
    ah[1] = 2;
    const Bytes chain = cat({ext(43, 1), frag6(51, 0, false), ah, udp(1, 2, 4), Bytes(4, 9)});
    const Bytes opts(20, 1);
    const std::vector<Bytes> frames = {
        v4_tcp(),
        v4_udp(),
        v6_tcp(),
        cat({eth(0x0800, {{0x88a8, 1}, {0x8100, 2}}), ipv4(6, 32, {1, 2, 3, 4}, {4, 3, 2, 1}, opts), tcp(1, 2, 8)}),
        cat({eth(0x86dd, {{0x8100, 3}}), ipv6(0, chain.size()), chain}),
        cat({eth(0x0800), ipv4(1, 8), icmp_echo(8, 1, 1)}),
        cat({eth(0x86dd), ipv6(58, 8), icmp_echo(129, 1, 1)}),
    };
    for (const Bytes &full : frames) {
        REQUIRE(result_of(full) == ParseResult::ok);
        for (std::size_t n = 0; n <= full.size(); ++n) {
            const Bytes cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
            const Parsed p = parse(cut);
            INFO("length " << n << " of " << full.size() << ": " << parse_result_name(p.result));
            if (n < full.size()) {
                // Every header above claims the full length, so any cut is an error.
                CHECK(is_malformed(p.result));
            }
            if (p.result == ParseResult::ok) {
                CHECK(p.pkt.l3_offset <= n);
                CHECK((p.pkt.l4_offset == SERPENS_OFFSET_NONE || p.pkt.l4_offset <= n));
                CHECK((p.pkt.payload_offset == SERPENS_OFFSET_NONE || p.pkt.payload_offset <= n));
            }
        }
    }
}

TEST_SUITE_END();

TEST_SUITE_BEGIN("flowhash");

TEST_CASE("CRC32C matches the standard check value")
{
    const char *s = "123456789";
    CHECK((~crc32c(0xffffffffu, s, 9)) == 0xe3069283u);
    CHECK(crc32c(0, s, 0) == 0);
}

TEST_CASE("flow hash and canonical form are direction independent")
{
    const Parsed ab = parse(v4_tcp(40000, 80, {10, 0, 0, 1}, {10, 0, 0, 2}));
    const Parsed ba = parse(v4_tcp(80, 40000, {10, 0, 0, 2}, {10, 0, 0, 1}));
    CHECK(ab.pkt.flow_hash == ba.pkt.flow_hash);
    CHECK(ab.key != ba.key);
    CHECK(ab.key == ba.key.reversed());
    CHECK(ab.key.canonical() == ba.key.canonical());
    CHECK(ab.key.canonical().is_canonical());
    CHECK(same_flow(ab.key, ba.key));

    const Parsed v6ab = parse(v6_tcp(1, 2));
    const Parsed v6ba = parse(v6_tcp(2, 1));
    REQUIRE(v6ab.result == ParseResult::ok);
    CHECK(v6ab.pkt.flow_hash == v6ba.pkt.flow_hash);
    CHECK(same_flow(v6ab.key, v6ba.key));

    // Same addresses, ports swapped only on one side: a different flow.
    const Parsed other = parse(v4_tcp(80, 40000, {10, 0, 0, 1}, {10, 0, 0, 2}));
    CHECK(other.pkt.flow_hash != ab.pkt.flow_hash);
    CHECK_FALSE(same_flow(other.key, ab.key));
    // Same endpoints, other protocol.
    FlowKey udp_key = ab.key;
    udp_key.proto = 17;
    CHECK(udp_key.hash() != ab.key.hash());
}

TEST_CASE("flow hash spreads many flows")
{
    std::set<uint32_t> hashes;
    std::array<unsigned, 16> buckets{};
    constexpr unsigned kFlows = 4096;
    for (unsigned i = 0; i < kFlows; ++i) {
        FlowKey k;
        k.ip_version = 4;
        k.proto = 17;
        k.src = {10, 0, static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)};
        k.dst = {10, 1, 0, 1};
        k.src_port = static_cast<uint16_t>(1024 + i);
        k.dst_port = 53;
        CHECK(k.hash() == k.reversed().hash());
        hashes.insert(k.hash());
        ++buckets[k.hash() % buckets.size()];
    }
    CHECK(hashes.size() >= kFlows - 2);
    for (unsigned b : buckets) {
        CHECK(b > kFlows / 16 / 2); // no bucket below half its share
        CHECK(b < kFlows / 16 * 2);
    }
}

TEST_CASE("a burst parsed, then hashed at once, equals parsing one packet at a time")
{
    // The dispatcher's path (parse_headers + hash_flows) and parse_packet
    // must agree on every packet, or flows would land on other instances.
    const std::vector<Bytes> frames = {v4_tcp(40000, 80, {10, 0, 0, 1}, {10, 0, 0, 2}),
                                       v4_tcp(80, 40000, {10, 0, 0, 2}, {10, 0, 0, 1}), v6_tcp(1, 2), v6_tcp(2, 1),
                                       Bytes(10, 0xab)};
    std::vector<FlowKey> keys(frames.size());
    std::vector<uint32_t> hashes(frames.size());
    for (std::size_t i = 0; i < frames.size(); ++i) {
        Bytes copy = frames[i];
        serpens_pkt pkt{};
        const ParseResult r = parse_headers(copy.data(), static_cast<uint32_t>(copy.size()), pkt, keys[i]);
        CHECK(pkt.flow_hash == 0);
        CHECK(r == parse(frames[i]).result);
    }
    hash_flows(keys.data(), static_cast<uint32_t>(keys.size()), hashes.data());
    for (std::size_t i = 0; i < frames.size(); ++i) {
        CAPTURE(i);
        CHECK(hashes[i] == keys[i].hash());
        const Parsed one = parse(frames[i]);
        if (one.result == ParseResult::ok) {
            CHECK(one.key == keys[i]);
            CHECK(hashes[i] == one.pkt.flow_hash);
        }
    }
    CHECK(hashes[0] == hashes[1]);
    CHECK(hashes[2] == hashes[3]);
}

TEST_CASE("a parsed packet's flow key read again from its headers is the key its parse gave")
{
    // The flow table takes the dispatcher's keys for packets it runs in
    // place and reads them again for packets that went through a ring: one
    // flow must find one entry either way.
    Bytes ah(16, 0);
    ah[0] = 17;
    ah[1] = 2;
    const Bytes first6 = cat({ext(44), frag6(51, 0, true), ah, udp(1, 2, 4), Bytes(4, 9)}); // HBH, fragment, AH
    const Bytes atomic6 = cat({frag6(6, 0, false), tcp(7, 8)});
    const Bytes later6 = cat({frag6(17, 3, false), Bytes(16, 0)});
    const Bytes udp_first = udp(5000, 6000, 100);
    const std::vector<Bytes> frames = {
        v4_tcp(),
        v4_udp(),
        v6_tcp(),
        cat({eth(0x0800, {{0x88a8, 1}, {0x8100, 2}}), ipv4(6, 20), tcp(1, 2)}),
        cat({eth(0x0800), ipv4(17, 8 + 40, {1, 1, 1, 1}, {2, 2, 2, 2}, {}, 0x2000), udp_first, Bytes(40, 1)}),
        cat({eth(0x0800), ipv4(17, 48, {1, 1, 1, 1}, {2, 2, 2, 2}, {}, 0x2000 | 6), Bytes(48, 2)}),
        cat({eth(0x86dd), ipv6(0, first6.size()), first6}),
        cat({eth(0x86dd), ipv6(44, atomic6.size()), atomic6}),
        cat({eth(0x86dd), ipv6(44, later6.size()), later6}),
        cat({eth(0x0800), ipv4(1, 8), icmp_echo(8, 77, 1)}),
        cat({eth(0x0800), ipv4(1, 8), icmp_echo(3, 77, 1)}),
        cat({eth(0x86dd), ipv6(58, 8), icmp_echo(128, 77, 1)}),
        cat({eth(0x86dd), ipv6(59, 0)}),
        cat({eth(0x0800), ipv4(47, 4), Bytes(4, 0)}),
    };
    for (std::size_t i = 0; i < frames.size(); ++i) {
        CAPTURE(i);
        Bytes copy = frames[i];
        serpens_pkt pkt{};
        pkt.data = copy.data();
        pkt.len = static_cast<uint32_t>(copy.size());
        FlowKey parsed;
        REQUIRE(parse_packet(copy.data(), pkt.len, pkt, parsed) == ParseResult::ok);
        FlowKey again;
        REQUIRE(flow_key_of(pkt, again));
        CHECK(again == parsed);
    }
    // The first IPv6 fragment behind other extension headers has ports 0,
    // as the datagram's later fragments do.
    Bytes copy = frames[6];
    serpens_pkt pkt{};
    pkt.data = copy.data();
    FlowKey key;
    REQUIRE(parse_packet(copy.data(), static_cast<uint32_t>(copy.size()), pkt, key) == ParseResult::ok);
    CHECK(key.src_port == 0);
}

TEST_SUITE_END();
