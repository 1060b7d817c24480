// VXLAN encapsulation and decapsulation (net/vxlan.h): round trips, the bit
// layout the header comment documents, the IPv4 checksum against the test's
// own RFC 1071 code, the MTU refusal, every decapsulation refusal, and (suite
// vxlan-tshark) Wireshark's VXLAN dissector reading what encap wrote.
#include "packet_builder.h"

#include "net/parse.h"
#include "net/pcap.h"
#include "net/vxlan.h"

#include <doctest/doctest.h>

#include <arpa/inet.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <unistd.h>

using namespace serpens::net;
using namespace serpens::net::test;

namespace {

uint32_t addr(const char *text)
{
    in_addr a{};
    REQUIRE(inet_pton(AF_INET, text, &a) == 1);
    return a.s_addr;
}

VxlanTunnel tunnel_ab(uint32_t vni = 0x123456, uint32_t mtu = 1500)
{
    VxlanTunnel t;
    t.src_mac = {0x02, 0xaa, 0, 0, 0, 1};
    t.dst_mac = {0x02, 0xbb, 0, 0, 0, 2};
    t.src_ip = addr("10.0.0.1");
    t.dst_ip = addr("10.0.0.2");
    t.vni = vni;
    t.mtu = mtu;
    return t;
}

// The inner frame behind 50 bytes of room, encapsulated.
Bytes encapsulate(const VxlanEncap &encap, const Bytes &inner, uint32_t tag, uint8_t flags, uint32_t hash,
                  VxlanResult expect = VxlanResult::ok)
{
    Bytes packet = cat({Bytes(kVxlanOuterLen, 0xee), inner});
    CHECK(encap.encap(packet, tag, flags, hash) == expect);
    return packet;
}

VxlanDecapConfig config_b() { return VxlanDecapConfig{kVxlanUdpPort, addr("10.0.0.2"), 0x123456}; }

uint32_t flow_hash_of(const Bytes &frame)
{
    serpens_pkt pkt{};
    FlowKey key;
    REQUIRE(parse_packet(frame, pkt, key) == ParseResult::ok);
    return pkt.flow_hash;
}

} // namespace

TEST_SUITE_BEGIN("vxlan");

TEST_CASE("encap then decap gives back the inner frame, tag, flags, VNI and sender")
{
    const VxlanEncap encap(tunnel_ab());
    for (const Bytes &inner : {v4_tcp(), v4_udp(), v6_tcp(), cat({eth(0x0806), Bytes(28, 1)})}) {
        for (uint32_t tag : {0u, 1u, 0xabcdefu, kVxlanMaxTag}) {
            for (uint8_t flags : {uint8_t{0}, kVxlanReturned}) {
                const Bytes packet = encapsulate(encap, inner, tag, flags, 0xdeadbeef);
                const VxlanDecapped d = vxlan_decap(packet, config_b());
                REQUIRE(d.result == VxlanResult::ok);
                CHECK(d.inner_offset == kVxlanOuterLen);
                CHECK(d.inner_len == inner.size());
                CHECK(Bytes(packet.begin() + d.inner_offset, packet.end()) == inner);
                CHECK(d.chain_tag == tag);
                CHECK(d.flags == flags);
                CHECK(d.vni == 0x123456);
                CHECK(d.outer_src == addr("10.0.0.1"));
                // The outer packet is itself an ordinary UDP packet to the parser.
                serpens_pkt pkt{};
                FlowKey key;
                CHECK(parse_packet(packet, pkt, key) == ParseResult::ok);
                CHECK(key.dst_port == kVxlanUdpPort);
            }
        }
    }
}

TEST_CASE("the header's fields sit where vxlan.h documents them")
{
    VxlanTunnel t = tunnel_ab(0xa1b2c3);
    t.udp_port = 8472;
    const VxlanEncap encap(t);
    const Bytes inner = v4_tcp();
    const Bytes p = encapsulate(encap, inner, 0x0d0e0f, kVxlanReturned, 0x12345678);
    CHECK(Bytes(p.begin(), p.begin() + 6) == Bytes{0x02, 0xbb, 0, 0, 0, 2}); // dst MAC
    CHECK(Bytes(p.begin() + 6, p.begin() + 12) == Bytes{0x02, 0xaa, 0, 0, 0, 1});
    CHECK(get16(&p[12]) == 0x0800);
    CHECK(p[14] == 0x45);
    CHECK(p[15] == 0);                                 // TOS
    CHECK(get16(&p[16]) == 20 + 8 + 8 + inner.size()); // total length
    CHECK(get16(&p[18]) == 0);                         // id
    CHECK(get16(&p[20]) == 0x4000);                    // DF, no offset
    CHECK(p[22] == 64);                                // TTL
    CHECK(p[23] == 17);                                // UDP
    CHECK(Bytes(p.begin() + 26, p.begin() + 34) == Bytes{10, 0, 0, 1, 10, 0, 0, 2});
    CHECK(get16(&p[34]) == vxlan_source_port(0x12345678));
    CHECK(get16(&p[36]) == 8472);
    CHECK(get16(&p[38]) == 8 + 8 + inner.size()); // UDP length
    CHECK(get16(&p[40]) == 0);                    // no UDP checksum
    // VXLAN: flags 0x08, tag in bytes 1-3, VNI in 4-6, Serpens flags in 7.
    CHECK(Bytes(p.begin() + 42, p.begin() + 50) == Bytes{0x08, 0x0d, 0x0e, 0x0f, 0xa1, 0xb2, 0xc3, 0x01});
    const Bytes q = encapsulate(encap, inner, 0, 0, 0);
    CHECK(Bytes(q.begin() + 42, q.begin() + 50) == Bytes{0x08, 0, 0, 0, 0xa1, 0xb2, 0xc3, 0});
}

TEST_CASE("the IPv4 header checksum is what RFC 1071 computes, for every length")
{
    for (uint32_t mtu : {kVxlanMinMtu, 1500u, 9000u, kVxlanMaxMtu}) {
        for (uint32_t vni : {0u, 1u, 0x8000u, kVxlanMaxVni}) {
            VxlanTunnel t = tunnel_ab(vni, mtu);
            t.src_ip = addr("255.255.255.255"); // sums that wrap
            t.dst_ip = addr("192.0.2.254");
            const VxlanEncap encap(t);
            for (uint32_t inner_len = kVxlanMinInnerFrame; inner_len <= encap.max_inner(); inner_len += 61) {
                Bytes packet(kVxlanOuterLen + inner_len, 0);
                REQUIRE(encap.encap(packet, 5, 0, inner_len) == VxlanResult::ok);
                Bytes ip(packet.begin() + 14, packet.begin() + 34);
                const uint16_t stored = get16(&ip[10]);
                put16(ip, 10, 0);
                CHECK(stored == inet_csum(ip.data(), ip.size()));
            }
        }
    }
}

TEST_CASE("a packet the underlay MTU cannot carry is refused and left untouched")
{
    const VxlanEncap encap(tunnel_ab(1, 1500));
    CHECK(encap.max_inner() == 1500 - 36);
    Bytes fits(kVxlanOuterLen + 1464, 0x11);
    CHECK(encap.encap(fits, 1, 0, 0) == VxlanResult::ok);
    CHECK(get16(&fits[16]) == 1500);
    Bytes big(kVxlanOuterLen + 1465, 0x11);
    CHECK(encap.encap(big, 1, 0, 0) == VxlanResult::too_big);
    CHECK(big == Bytes(kVxlanOuterLen + 1465, 0x11));
    // A 1500-byte underlay carries inner IP packets of 1450 bytes: the usual 50.
    CHECK(encap.check(14 + 1450, 1, 0) == VxlanResult::ok);
    CHECK(encap.check(14 + 1451, 1, 0) == VxlanResult::too_big);
    CHECK(encap.check(13, 1, 0) == VxlanResult::truncated_inner);
    CHECK(encap.check(100, kVxlanMaxTag + 1, 0) == VxlanResult::bad_chain_tag);
    CHECK(encap.check(100, 1, 0x02) == VxlanResult::bad_encap_flags);
    Bytes short_packet(kVxlanOuterLen - 1, 0);
    CHECK(encap.encap(short_packet, 1, 0, 0) == VxlanResult::truncated_inner);

    CHECK_THROWS_AS(VxlanEncap(tunnel_ab(kVxlanMaxVni + 1)), std::invalid_argument);
    CHECK_THROWS_AS(VxlanEncap(tunnel_ab(1, kVxlanMinMtu - 1)), std::invalid_argument);
    CHECK_THROWS_AS(VxlanEncap(tunnel_ab(1, kVxlanMaxMtu + 1)), std::invalid_argument);
}

TEST_CASE("the UDP source port is in 49152..65535, spreads flows, and is the same both ways")
{
    std::set<uint16_t> seen;
    for (uint32_t i = 0; i < 4096; ++i) {
        const uint32_t h = i * 2654435761u;
        const uint16_t port = vxlan_source_port(h);
        CHECK(port >= 49152);
        seen.insert(port);
    }
    CHECK(vxlan_source_port(0) == 49152);
    CHECK(vxlan_source_port(0x3fff) == 65535);
    CHECK(seen.size() > 3500); // 4096 hashes over 16384 ports: few collisions

    const VxlanEncap encap(tunnel_ab());
    const Bytes there = v4_tcp(40000, 80, {10, 1, 0, 1}, {10, 2, 0, 2});
    const Bytes back = v4_tcp(80, 40000, {10, 2, 0, 2}, {10, 1, 0, 1});
    const Bytes a = encapsulate(encap, there, 1, 0, flow_hash_of(there));
    const Bytes b = encapsulate(encap, back, 1, 0, flow_hash_of(back));
    CHECK(get16(&a[34]) == get16(&b[34]));
    const Bytes other = v4_tcp(40001, 80, {10, 1, 0, 1}, {10, 2, 0, 2});
    CHECK(get16(&encapsulate(encap, other, 1, 0, flow_hash_of(other))[34]) != get16(&a[34]));
}

TEST_CASE("an outer 802.1Q tag and Ethernet padding are accepted")
{
    const VxlanEncap encap(tunnel_ab());
    const Bytes inner = v4_udp();
    Bytes p = encapsulate(encap, inner, 7, 0, 1);
    Bytes tagged = cat(
        {Bytes(p.begin(), p.begin() + 12), Bytes{0x81, 0x00, 0x00, 0x64}, Bytes(p.begin() + 12, p.end()), Bytes(9, 0)});
    const VxlanDecapped d = vxlan_decap(tagged, config_b());
    REQUIRE(d.result == VxlanResult::ok);
    CHECK(d.inner_offset == kVxlanOuterLen + 4);
    CHECK(d.inner_len == inner.size());
    CHECK(d.chain_tag == 7);
    // Any VNI and any destination when the config says so.
    CHECK(vxlan_decap(p, VxlanDecapConfig{}).result == VxlanResult::ok);
}

TEST_CASE("every decapsulation refusal, each for its own reason")
{
    const VxlanEncap encap(tunnel_ab());
    const Bytes good = encapsulate(encap, v4_tcp(), 3, 0, 9);
    REQUIRE(vxlan_decap(good, config_b()).result == VxlanResult::ok);

    // Rewrites the IPv4 header checksum after a change, so that only the
    // change is wrong.
    auto fix_ip = [](Bytes &p) {
        put16(p, 24, 0);
        put16(p, 24, inet_csum(&p[14], 20));
    };
    struct Case {
        VxlanResult expect;
        std::function<void(Bytes &)> mutate;
    };
    const Case cases[] = {
        {VxlanResult::truncated_l2, [](Bytes &p) { p.resize(13); }},
        {VxlanResult::truncated_l2,
         [](Bytes &p) {
             p.resize(16);
             put16(p, 12, 0x8100);
         }},
        {VxlanResult::not_ipv4, [](Bytes &p) { put16(p, 12, 0x86dd); }},
        {VxlanResult::not_ipv4,
         [](Bytes &p) { // two tags: only one is read
             p = cat({Bytes(p.begin(), p.begin() + 12), Bytes{0x81, 0, 0, 1, 0x81, 0, 0, 2},
                      Bytes(p.begin() + 12, p.end())});
         }},
        {VxlanResult::truncated_ipv4, [](Bytes &p) { p.resize(33); }},
        {VxlanResult::bad_ipv4_header, [](Bytes &p) { p[14] = 0x65; }},
        {VxlanResult::bad_ipv4_header, [](Bytes &p) { p[14] = 0x44; }},
        {VxlanResult::truncated_ipv4,
         [](Bytes &p) { // IHL 15: 60 bytes of header in a 40-byte frame
             p[14] = 0x4f;
             p.resize(40);
         }},
        {VxlanResult::bad_ipv4_length,
         [&](Bytes &p) { put16(p, 16, static_cast<uint16_t>(p.size() - 14 + 1)), fix_ip(p); }},
        {VxlanResult::bad_ipv4_length, [&](Bytes &p) { put16(p, 16, 19), fix_ip(p); }},
        {VxlanResult::bad_ipv4_checksum, [](Bytes &p) { p[22] = 63; }},
        {VxlanResult::ipv4_fragment, [&](Bytes &p) { put16(p, 20, 0x2000), fix_ip(p); }},
        {VxlanResult::ipv4_fragment, [&](Bytes &p) { put16(p, 20, 0x0001), fix_ip(p); }},
        {VxlanResult::not_udp, [&](Bytes &p) { p[23] = 6, fix_ip(p); }},
        {VxlanResult::not_for_us, [&](Bytes &p) { p[33] = 3, fix_ip(p); }},
        {VxlanResult::truncated_udp,
         [&](Bytes &p) {
             put16(p, 16, 27);
             fix_ip(p);
         }},
        {VxlanResult::not_vxlan_port, [](Bytes &p) { put16(p, 36, 4790); }},
        {VxlanResult::bad_udp_length, [](Bytes &p) { put16(p, 38, static_cast<uint16_t>(get16(&p[38]) - 1)); }},
        {VxlanResult::bad_udp_length, [](Bytes &p) { put16(p, 38, static_cast<uint16_t>(get16(&p[38]) + 1)); }},
        {VxlanResult::truncated_vxlan,
         [&](Bytes &p) {
             p.resize(14 + 20 + 8 + 7);
             put16(p, 16, 20 + 8 + 7);
             put16(p, 38, 8 + 7);
             fix_ip(p);
         }},
        {VxlanResult::no_vni_flag, [](Bytes &p) { p[42] = 0x00; }},
        {VxlanResult::no_vni_flag, [](Bytes &p) { p[42] = 0x80; }},
        {VxlanResult::unknown_vxlan_flags, [](Bytes &p) { p[42] = 0x88; }}, // VXLAN-GBP's G bit
        {VxlanResult::unknown_vxlan_flags, [](Bytes &p) { p[42] = 0x0c; }}, // VXLAN-GPE's P bit
        {VxlanResult::unknown_vxlan_flags, [](Bytes &p) { p[49] = 0x02; }},
        {VxlanResult::wrong_vni, [](Bytes &p) { p[48] ^= 1; }},
        {VxlanResult::truncated_inner,
         [&](Bytes &p) {
             p.resize(kVxlanOuterLen + 13);
             put16(p, 16, 20 + 8 + 8 + 13);
             put16(p, 38, 8 + 8 + 13);
             fix_ip(p);
         }},
    };
    std::set<VxlanResult> covered;
    for (const Case &c : cases) {
        CAPTURE(vxlan_result_name(c.expect));
        Bytes p = good;
        c.mutate(p);
        const VxlanDecapped d = vxlan_decap(p, config_b());
        CHECK(vxlan_result_name(d.result) == std::string(vxlan_result_name(c.expect)));
        covered.insert(c.expect);
    }
    CHECK(vxlan_decap(nullptr, 0, config_b()).result == VxlanResult::truncated_l2);
    // Every reason decap can give is tested above: all of class not_vxlan and
    // malformed (encap's refusals have their own test case).
    for (std::size_t i = 1; i < kVxlanResultCount; ++i) {
        const auto r = static_cast<VxlanResult>(i);
        CAPTURE(vxlan_result_name(r));
        const VxlanClass cls = vxlan_result_class(r);
        if (cls == VxlanClass::not_vxlan || cls == VxlanClass::malformed) {
            CHECK(covered.count(r) == 1);
        } else {
            CHECK(cls == VxlanClass::refused);
        }
    }
}

TEST_CASE("result names, descriptions and counters come from the .def table")
{
    CHECK(std::string(vxlan_result_name(VxlanResult::ok)) == "ok");
    CHECK(std::string(vxlan_result_name(VxlanResult::too_big)) == "too_big");
    CHECK(std::string(vxlan_result_description(VxlanResult::too_big)).find("MTU") != std::string::npos);
    CHECK(std::string(vxlan_result_name(static_cast<VxlanResult>(kVxlanResultCount))) == "?");
    CHECK(vxlan_result_class(VxlanResult::not_ipv4) == VxlanClass::not_vxlan);
    VxlanCounters a;
    VxlanCounters b;
    a.count(VxlanResult::too_big);
    b.count(VxlanResult::too_big);
    b.count(VxlanResult::ok);
    a.add(b);
    CHECK(a[VxlanResult::too_big] == 2);
    CHECK(a[VxlanResult::ok] == 1);
}

TEST_SUITE_END();

// Wireshark's own VXLAN dissector reads what encap wrote: VNI, outer
// addresses and ports, the inner 5-tuple, and a good outer IPv4 checksum.
// Run as its own meson test, which exits 77 (skipped) without tshark.
TEST_SUITE_BEGIN("vxlan-tshark");

TEST_CASE("tshark decodes encapsulated packets as VXLAN with the inner flow intact")
{
    if (std::system("command -v tshark > /dev/null 2>&1") != 0) {
        std::puts("tshark not installed: skipping");
        std::exit(77);
    }
    char dir_template[] = "/tmp/serpens-vxlan-XXXXXX";
    REQUIRE(mkdtemp(dir_template) != nullptr);
    const std::filesystem::path dir = dir_template;
    const std::string file = (dir / "vxlan.pcap").string();

    const VxlanEncap encap(tunnel_ab(4242));
    const Bytes flows[] = {
        v4_tcp(40000, 80, {10, 1, 0, 1}, {10, 2, 0, 2}),
        v4_tcp(80, 40000, {10, 2, 0, 2}, {10, 1, 0, 1}),
        v4_udp(5000, 53),
    };
    {
        PcapWriter writer(file);
        uint64_t ts = 1'000'000'000;
        for (const Bytes &inner : flows) {
            writer.write(encapsulate(encap, inner, 9, 0, flow_hash_of(inner)), ts += 1000);
        }
        writer.close();
    }
    const std::string out = (dir / "fields.txt").string();
    const std::string cmd = "tshark -n -r " + file +
                            " -o ip.check_checksum:TRUE -d udp.port==4789,vxlan -T fields -e vxlan.vni -e ip.src "
                            "-e ip.dst -e ip.proto -e tcp.srcport -e tcp.dstport -e udp.srcport -e udp.dstport "
                            "-e ip.checksum.status > " +
                            out + " 2> " + (dir / "tshark.err").string(); // it warns on stderr when run as root
    REQUIRE(std::system(cmd.c_str()) == 0);
    std::vector<std::string> lines;
    {
        std::FILE *f = std::fopen(out.c_str(), "r");
        REQUIRE(f != nullptr);
        char buf[1024];
        while (std::fgets(buf, sizeof buf, f) != nullptr) {
            std::string line(buf);
            while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
                line.pop_back();
            }
            lines.push_back(line);
        }
        std::fclose(f);
    }
    std::filesystem::remove_all(dir);
    std::string all;
    for (const std::string &line : lines) {
        all += line + "\n";
    }
    INFO("tshark printed:\n", all);
    REQUIRE(lines.size() == 3);
    // TCP: VNI, outer and inner addresses, protocol, inner ports, the outer
    // checksum good (status 1; the inner one also verified, hence one value).
    CHECK(lines[0].starts_with("4242\t10.0.0.1,10.1.0.1\t10.0.0.2,10.2.0.2\t17,6\t40000\t80\t"));
    CHECK(lines[1].starts_with("4242\t10.0.0.1,10.2.0.2\t10.0.0.2,10.1.0.1\t17,6\t80\t40000\t"));
    // The outer UDP ports come first: the same source port both ways.
    const uint16_t sport = vxlan_source_port(flow_hash_of(flows[0]));
    CHECK(lines[0].find("\t" + std::to_string(sport) + "\t4789\t") != std::string::npos);
    CHECK(lines[1].find("\t" + std::to_string(sport) + "\t4789\t") != std::string::npos);
    CHECK(lines[2].starts_with("4242\t10.0.0.1,10.0.0.1\t10.0.0.2,10.0.0.2\t17,17\t\t\t"));
    CHECK(lines[2].find(",5000\t4789,53\t") != std::string::npos);
    for (const std::string &line : lines) {
        CAPTURE(line);
        CHECK(line.ends_with("\t1,1")); // outer and inner IPv4 checksums good
    }
}

TEST_SUITE_END();
