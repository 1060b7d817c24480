// net::TrafficGenerator: reproducibility, checksums (verified independently),
// flow scripts, and agreement with the parser.
#include "support/traffic.h"
#include "packet_builder.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <stdexcept>

using namespace serpens::net;
using namespace serpens::net::test;

namespace {

TrafficConfig small_config(uint64_t seed = 42)
{
    TrafficConfig c;
    c.seed = seed;
    c.packets = 3000;
    c.flows = 64;
    c.vlan_ratio = 0.3;
    c.malformed_ratio = 0.05;
    c.mix = parse_traffic_mix("tcp=40,udp=20,icmp=10,tcp6=15,udp6=10,icmp6=5");
    return c;
}

struct Layers {
    std::size_t l3 = 0;
    bool v6 = false;
};

Layers find_l3(const std::vector<uint8_t> &f)
{
    std::size_t off = 12;
    while (get16(&f[off]) == 0x8100 || get16(&f[off]) == 0x88a8) {
        off += 4;
    }
    return {off + 2, get16(&f[off]) == 0x86dd};
}

// Verifies the IPv4 header checksum and the L4 checksum with the test's own code.
void check_checksums(const std::vector<uint8_t> &f, uint64_t frame)
{
    INFO("frame " << frame);
    const Layers l = find_l3(f);
    const uint8_t *ip = f.data() + l.l3;
    uint32_t l4_off, l4_len;
    uint8_t proto;
    uint64_t pseudo = 0;
    if (l.v6) {
        proto = ip[6];
        l4_off = static_cast<uint32_t>(l.l3 + 40);
        l4_len = get16(ip + 4);
        for (int i = 8; i < 40; i += 2) {
            pseudo += get16(ip + i);
        }
    } else {
        const uint32_t hlen = (ip[0] & 0x0f) * 4u;
        CHECK(inet_csum(ip, hlen) == 0); // a correct header sums to 0xffff
        proto = ip[9];
        l4_off = static_cast<uint32_t>(l.l3 + hlen);
        l4_len = get16(ip + 2) - hlen;
        for (int i = 12; i < 20; i += 2) {
            pseudo += get16(ip + i);
        }
    }
    REQUIRE(l4_off + l4_len <= f.size());
    pseudo += proto + l4_len;
    if (proto == 1) {
        CHECK(inet_csum(f.data() + l4_off, l4_len) == 0);
    } else {
        CHECK(inet_csum(f.data() + l4_off, l4_len, pseudo) == 0);
    }
}

} // namespace

TEST_SUITE_BEGIN("traffic");

TEST_CASE("same seed, same bytes; another seed, other bytes")
{
    const auto a = generate_traffic(small_config(7));
    const auto b = generate_traffic(small_config(7));
    const auto c = generate_traffic(small_config(8));
    REQUIRE(a.packets.size() == 3000);
    REQUIRE(b.packets.size() == 3000);
    bool all_same = true;
    bool any_diff = false;
    for (std::size_t i = 0; i < a.packets.size(); ++i) {
        all_same = all_same && a.packets[i].data == b.packets[i].data && a.packets[i].ts_ns == b.packets[i].ts_ns;
        any_diff = any_diff || a.packets[i].data != c.packets[i].data;
    }
    CHECK(all_same);
    CHECK(any_diff);
    CHECK(a.summary.to_json() == b.summary.to_json());
}

TEST_CASE("checksums are correct on every packet not deliberately broken")
{
    TrafficGenerator gen(small_config());
    uint64_t checked = 0;
    while (auto p = gen.next()) {
        if (p->corruption == Corruption::none) {
            check_checksums(std::vector<uint8_t>(p->data.begin(), p->data.end()), p->frame);
            ++checked;
        }
    }
    CHECK(checked == gen.summary().by_corruption[0]);
    CHECK(checked > 2500);
}

TEST_CASE("the parser agrees with what the generator meant, and the summary adds up")
{
    TrafficGenerator gen(small_config());
    ParseCounters seen;
    std::map<uint32_t, std::set<uint32_t>> hashes_by_flow;
    while (auto p = gen.next()) {
        serpens_pkt pkt{};
        FlowKey key;
        const ParseResult r = parse_packet(p->data, pkt, key);
        INFO("frame " << p->frame << " corruption " << corruption_name(p->corruption));
        CHECK(std::string(parse_result_name(r)) == parse_result_name(p->expected));
        seen.count(r);
        if (r == ParseResult::ok) {
            hashes_by_flow[p->flow].insert(pkt.flow_hash);
        }
    }
    const TrafficSummary &s = gen.summary();
    CHECK(seen.by_result == s.expected.by_result);
    CHECK(s.packets == 3000);
    CHECK(s.expected[ParseResult::ok] == s.by_corruption[0]);
    CHECK(s.malformed() == s.malformed_frames.size());
    CHECK(s.malformed() > 50); // 5% of 3000, loosely
    uint64_t by_class = 0;
    uint32_t flows = 0;
    for (std::size_t i = 0; i < kTrafficClassCount; ++i) {
        by_class += s.packets_by_class[i];
        flows += s.flows_by_class[i];
        CHECK(s.packets_by_class[i] > 0);
    }
    CHECK(by_class == s.packets);
    CHECK(flows == 64);
    CHECK(s.vlan > 0);
    CHECK(s.qinq > 0);
    CHECK(s.qinq < s.vlan);
    // Both directions of each flow hash alike.
    CHECK(hashes_by_flow.size() == 64);
    for (const auto &[flow, hashes] : hashes_by_flow) {
        CHECK(hashes.size() == 1);
    }
}

TEST_CASE("the parser's fast path and its general path agree on every frame, cut or mutated")
{
    // parse_headers takes a shortcut for plain IPv4 TCP/UDP frames; anything
    // it accepts must come out exactly as the general parser has it.
    TrafficConfig cfg = small_config(3);
    cfg.malformed_ratio = 0.2;
    TrafficGenerator gen(cfg);
    std::mt19937 rng(11);
    uint64_t fast_candidates = 0;
    auto same = [&](const std::vector<uint8_t> &frame) {
        serpens_pkt a{};
        serpens_pkt b{};
        FlowKey ka;
        FlowKey kb;
        const auto len = static_cast<uint32_t>(frame.size());
        const ParseResult ra = parse_headers(frame.data(), len, a, ka);
        const ParseResult rb = detail::parse_headers_general(frame.data(), len, b, kb);
        CHECK(ra == rb);
        CHECK(std::memcmp(&a, &b, sizeof a) == 0);
        CHECK(ka == kb);
        fast_candidates += ra == ParseResult::ok && ka.ip_version == 4 && !(a.flags & SERPENS_PKT_F_VLAN);
    };
    while (auto p = gen.next()) {
        const std::vector<uint8_t> full(p->data.begin(), p->data.end());
        INFO("frame " << p->frame);
        same(full);
        for (std::size_t n = 0; n < std::min<std::size_t>(full.size(), 80); ++n) {
            same(std::vector<uint8_t>(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n)));
        }
        for (int k = 0; k < 8; ++k) {
            std::vector<uint8_t> mutated = full;
            const std::size_t at = rng() % std::min<std::size_t>(full.size(), 64);
            mutated[at] = static_cast<uint8_t>(rng());
            same(mutated);
        }
    }
    CHECK(fast_candidates > 100); // the shortcut was exercised, not just the fallback
}

TEST_CASE("TCP flows open with a handshake, close with FIN, and both sides talk")
{
    TrafficConfig c = small_config();
    c.mix = parse_traffic_mix("tcp=1,tcp6=1");
    c.malformed_ratio = 0;
    c.vlan_ratio = 0;
    TrafficGenerator gen(c);
    std::map<uint32_t, std::vector<std::pair<uint8_t, bool>>> script; // flags, from_client
    while (auto p = gen.next()) {
        const Layers l = find_l3(std::vector<uint8_t>(p->data.begin(), p->data.end()));
        const std::size_t l4 = l.l3 + (l.v6 ? 40 : 20);
        script[p->flow].emplace_back(p->data[l4 + 13], p->from_client);
    }
    REQUIRE(script.size() == 64);
    for (const auto &[flow, s] : script) {
        INFO("flow " << flow);
        REQUIRE(s.size() >= 6);
        CHECK(s[0] == std::make_pair(uint8_t{0x02}, true));  // SYN
        CHECK(s[1] == std::make_pair(uint8_t{0x12}, false)); // SYN-ACK
        CHECK(s[2] == std::make_pair(uint8_t{0x10}, true));  // ACK
        const std::size_t n = s.size();
        CHECK(s[n - 3] == std::make_pair(uint8_t{0x11}, true));  // FIN-ACK from the client
        CHECK(s[n - 2] == std::make_pair(uint8_t{0x11}, false)); // FIN-ACK from the server
        CHECK(s[n - 1] == std::make_pair(uint8_t{0x10}, true));  // last ACK
    }
    CHECK(gen.summary().tcp_syn == 128);
    CHECK(gen.summary().tcp_fin == 128);
    CHECK(gen.summary().from_server > 3000 / 4);
}

TEST_CASE("mix, VLAN ratio and sizes are honoured")
{
    TrafficConfig c;
    c.packets = 500;
    c.flows = 10;
    c.mix = parse_traffic_mix("udp=1");
    c.vlan_ratio = 0;
    c.malformed_ratio = 0;
    c.size_min = c.size_max = 200;
    const auto t = generate_traffic(c);
    CHECK(t.summary.packets_by_class[static_cast<std::size_t>(TrafficClass::udp)] == 500);
    CHECK(t.summary.vlan == 0);
    CHECK(t.summary.malformed() == 0);
    for (const auto &p : t.packets) {
        CHECK(p.data.size() == 200);
    }
    // Fewer packets than flows: only the flows that got packets count.
    c.packets = 3;
    CHECK(generate_traffic(c).summary.flows == 3);
}

TEST_CASE("addresses come from the configured prefixes")
{
    TrafficConfig c;
    c.packets = 400;
    c.flows = 40;
    c.malformed_ratio = 0;
    c.mix = parse_traffic_mix("udp=1,udp6=1");
    c.src_net = parse_ipv4_prefix("172.20.0.0/24");
    c.dst_net = parse_ipv4_prefix("172.21.5.0/30");
    c.src_net6 = parse_ipv6_prefix("fd00:1::/64");
    TrafficGenerator gen(c);
    while (auto p = gen.next()) {
        serpens_pkt pkt{};
        FlowKey k;
        REQUIRE(parse_packet(p->data, pkt, k) == ParseResult::ok);
        const FlowKey ck = p->from_client ? k : k.reversed();
        if (k.ip_version == 4) {
            CHECK(ck.src[0] == 172);
            CHECK(ck.src[1] == 20);
            CHECK(ck.src[2] == 0);
            CHECK(ck.dst[2] == 5);
            CHECK((ck.dst[3] == 1 || ck.dst[3] == 2)); // /30 without network and broadcast
        } else {
            CHECK(ck.src[0] == 0xfd);
            CHECK(ck.src[3] == 1);
            CHECK(ck.dst[0] == 0x20);
        }
    }
}

TEST_CASE("config parsing and validation errors name the problem")
{
    const TrafficMix m = parse_traffic_mix("tcp=60,udp=30,icmp=5,ipv6=5");
    CHECK(m[0] == 60);
    CHECK(m[3] == doctest::Approx(3));
    CHECK(m[4] == doctest::Approx(1.5));
    CHECK(m[5] == doctest::Approx(0.5));
    CHECK_THROWS_WITH_AS(parse_traffic_mix("tcp=1,sctp=2"), doctest::Contains("unknown mix class 'sctp'"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(parse_traffic_mix("tcp"), doctest::Contains("not class=weight"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(parse_traffic_mix("tcp=-1"), doctest::Contains("non-negative"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(parse_traffic_mix("tcp=0"), doctest::Contains("no positive weight"), std::invalid_argument);

    const Ipv4Prefix p = parse_ipv4_prefix("10.0.0.0/8");
    CHECK(p.addr == 0x0a000000u);
    CHECK(p.len == 8);
    CHECK_THROWS_WITH_AS(parse_ipv4_prefix("10.1.2.3/8"), doctest::Contains("did you mean 10.0.0.0/8?"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(parse_ipv4_prefix("2001:db8::/32"), doctest::Contains("is not an IPv4 prefix"),
                         std::invalid_argument);
    CHECK(parse_ipv4_prefix("1.2.3.4").len == 32);
    CHECK_THROWS_AS(parse_ipv4_prefix("10.0.0.0/33"), std::invalid_argument);
    CHECK_THROWS_AS(parse_ipv4_prefix("10.0.0/8"), std::invalid_argument);
    CHECK_THROWS_AS(parse_ipv6_prefix("2001:db8::/129"), std::invalid_argument);
    CHECK(parse_ipv6_prefix("2001:db8::/120").addr[1] == 0x01);
    CHECK_THROWS_WITH_AS(parse_ipv6_prefix("2001:db8::ff/120"), doctest::Contains("has host bits set"),
                         std::invalid_argument);

    TrafficConfig c;
    c.size_min = 10;
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("size-min"), std::invalid_argument);
    c = TrafficConfig{};
    c.flows = 0;
    CHECK_THROWS_AS(c.validate(), std::invalid_argument);
    c = TrafficConfig{};
    c.malformed_ratio = 1.5;
    CHECK_THROWS_AS(c.validate(), std::invalid_argument);
    // Too many flows for a /32 -> /32 pair of UDP endpoints is still fine (ports
    // vary); ICMP between two fixed hosts runs out of identifiers only at 65536.
    c = TrafficConfig{};
    c.src_net = parse_ipv4_prefix("1.1.1.1/32");
    c.dst_net = parse_ipv4_prefix("1.1.1.1/32");
    c.mix = parse_traffic_mix("icmp=1");
    CHECK_THROWS_WITH_AS(TrafficGenerator{c}, doctest::Contains("distinct flows"), std::invalid_argument);
}

TEST_SUITE_END();
