// Gateway rules: first match wins, every match key narrows, unmatched traffic
// is counted.

#include "core/error.h"
#include "io/gateway.h"

#include <doctest/doctest.h>

#include <arpa/inet.h>

using namespace serpens;
using serpens::io::Gateway;

namespace {

net::FlowKey v4(const char *src, const char *dst, uint8_t proto, uint16_t sport, uint16_t dport)
{
    net::FlowKey key;
    key.ip_version = 4;
    key.proto = proto;
    inet_pton(AF_INET, src, key.src.data());
    inet_pton(AF_INET, dst, key.dst.data());
    key.src_port = sport;
    key.dst_port = dport;
    return key;
}

net::FlowKey v6(const char *src, const char *dst, uint8_t proto)
{
    net::FlowKey key;
    key.ip_version = 6;
    key.proto = proto;
    inet_pton(AF_INET6, src, key.src.data());
    inet_pton(AF_INET6, dst, key.dst.data());
    return key;
}

GatewayRuleConfig rule(const char *name, const char *chain, uint32_t line = 0)
{
    GatewayRuleConfig r;
    r.name = name;
    r.chain = chain;
    r.line = line;
    return r;
}

Gateway make_gateway(std::vector<GatewayRuleConfig> rules, std::string default_action = "drop")
{
    HostConfig cfg;
    cfg.file = "host.toml";
    cfg.rules = std::move(rules);
    cfg.gateway_default = std::move(default_action);
    auto chain_tag = [](const std::string &name) -> int32_t { return name == "a" ? 0 : name == "b" ? 1 : -1; };
    auto port_index = [](const std::string &name) -> int32_t { return name == "p0" ? 0 : name == "p1" ? 1 : -1; };
    return Gateway(cfg, chain_tag, port_index);
}

} // namespace

TEST_CASE("first matching rule wins and counts")
{
    GatewayRuleConfig web = rule("web", "a");
    web.proto = 6;
    web.dst_ports = PortRange{80, 443};
    web.dst = "10.0.0.0/8";
    GatewayRuleConfig rest = rule("rest", "b");
    Gateway gw = make_gateway({web, rest});
    io::RuleCounts gw_counts(gw.rules().size());
    CHECK(gw.classify(0, 0, false, true, v4("1.2.3.4", "10.9.8.7", 6, 5555, 80), gw_counts) == 0);
    CHECK(gw.classify(0, 0, false, true, v4("1.2.3.4", "10.9.8.7", 6, 5555, 443), gw_counts) == 0);
    CHECK(gw.classify(0, 0, false, true, v4("1.2.3.4", "10.9.8.7", 6, 5555, 444), gw_counts) == 1);
    CHECK(gw.classify(0, 0, false, true, v4("1.2.3.4", "11.0.0.1", 6, 5555, 80), gw_counts) == 1);
    CHECK(gw.classify(0, 0, false, true, v4("1.2.3.4", "10.0.0.1", 17, 5555, 80), gw_counts) == 1);
    CHECK(gw_counts.matched[0] == 2);
    CHECK(gw_counts.matched[1] == 3);
    CHECK(gw.rules()[1].chain_tag == 1);
}

TEST_CASE("prefixes match on bit boundaries, v4 and v6 apart")
{
    GatewayRuleConfig r = rule("r", "a");
    r.src = "2001:db8:80::/41";
    Gateway gw = make_gateway({r});
    io::RuleCounts gw_counts(gw.rules().size());
    CHECK(gw.classify(0, 0, false, true, v6("2001:db8:80::1", "::1", 17), gw_counts) == 0);
    CHECK(gw.classify(0, 0, false, true, v6("2001:db8:ff::1", "::1", 17), gw_counts) == 0);
    CHECK(gw.classify(0, 0, false, true, v6("2001:db8:7f::1", "::1", 17), gw_counts) == io::gateway_no_match);
    CHECK(gw.classify(0, 0, false, true, v4("32.1.13.184", "1.1.1.1", 17, 1, 1), gw_counts) == io::gateway_no_match);
    CHECK(gw_counts.unmatched == 2);
}

TEST_CASE("ingress port and VLAN rules; unparsed packets only match rules without L3/L4 keys")
{
    GatewayRuleConfig by_port = rule("p1", "a");
    by_port.in_port = "p1";
    GatewayRuleConfig by_vlan = rule("vlan", "b");
    by_vlan.vlan = 100;
    by_vlan.proto = 17;
    Gateway gw = make_gateway({by_port, by_vlan}, "p0");
    io::RuleCounts gw_counts(gw.rules().size());
    net::FlowKey none;
    CHECK(gw.classify(1, 0, false, false, none, gw_counts) == 0);
    CHECK(gw.classify(0, 0, false, false, none, gw_counts) == io::gateway_no_match);
    CHECK(gw.classify(0, 100, true, true, v4("1.1.1.1", "2.2.2.2", 17, 1, 2), gw_counts) == 1);
    CHECK(gw.classify(0, 100, true, false, none, gw_counts) == io::gateway_no_match);
    CHECK(gw.classify(0, 101, true, true, v4("1.1.1.1", "2.2.2.2", 17, 1, 2), gw_counts) == io::gateway_no_match);
    CHECK(gw.classify(0, 0, false, true, v4("1.1.1.1", "2.2.2.2", 17, 1, 2), gw_counts) == io::gateway_no_match);
    CHECK(gw.default_port() == 0);
}

TEST_CASE("a first rule that tests nothing is recognised: the dispatcher may give a whole burst rule 0")
{
    Gateway all = make_gateway({rule("all", "a"), rule("later", "b")});
    io::RuleCounts all_counts(all.rules().size());
    CHECK(all.first_rule_matches_everything());
    net::FlowKey none;
    // What it stands for: classify gives rule 0 to anything, parsed or not.
    CHECK(all.classify(1, 7, true, false, none, all_counts) == 0);
    CHECK(all.classify(0, 0, false, true, v4("1.1.1.1", "2.2.2.2", 1, 7, 7), all_counts) == 0);
    CHECK(all_counts.matched[0] == 2);
    CHECK(all_counts.matched[1] == 0);

    GatewayRuleConfig by_port = rule("p1", "a");
    by_port.in_port = "p1";
    GatewayRuleConfig by_vlan = rule("v", "a");
    by_vlan.vlan = 5;
    GatewayRuleConfig by_proto = rule("udp", "a");
    by_proto.proto = 17;
    GatewayRuleConfig by_dst = rule("dst", "a");
    by_dst.dst = "10.0.0.0/8";
    GatewayRuleConfig by_ports = rule("ports", "a");
    by_ports.src_ports = PortRange{1, 2};
    for (const GatewayRuleConfig &first : {by_port, by_vlan, by_proto, by_dst, by_ports}) {
        CAPTURE(first.name);
        CHECK_FALSE(make_gateway({first, rule("all", "a")}).first_rule_matches_everything());
    }
    CHECK_FALSE(make_gateway({}).first_rule_matches_everything());
}

TEST_CASE("port ranges never match an ICMP echo id")
{
    GatewayRuleConfig r = rule("r", "a");
    r.dst_ports = PortRange{0, 65535};
    Gateway gw = make_gateway({r});
    io::RuleCounts gw_counts(gw.rules().size());
    CHECK(gw.classify(0, 0, false, true, v4("1.1.1.1", "2.2.2.2", 1, 7, 7), gw_counts) == io::gateway_no_match);
    CHECK(gw.classify(0, 0, false, true, v4("1.1.1.1", "2.2.2.2", 6, 7, 7), gw_counts) == 0);
}

TEST_CASE("a rule naming an unknown chain, a bad prefix or host bits is refused with its line")
{
    GatewayRuleConfig ghost = rule("g", "nope", 12);
    CHECK_THROWS_WITH_AS(make_gateway({ghost}),
                         doctest::Contains("host.toml:12: [[gateway.rule]] 'g': unknown chain 'nope'"), ConfigError);
    GatewayRuleConfig bad = rule("b", "a", 7);
    bad.src = "10.0.0.0/33";
    CHECK_THROWS_WITH_AS(make_gateway({bad}),
                         doctest::Contains("host.toml:7: [[gateway.rule]] 'b': '10.0.0.0/33' has a bad prefix length"),
                         ConfigError);
    // Host bits are refused as the NFs refuse them, with the prefix meant.
    GatewayRuleConfig sloppy = rule("s", "a", 9);
    sloppy.dst = "10.1.2.3/8";
    CHECK_THROWS_WITH_AS(make_gateway({sloppy}),
                         doctest::Contains("host.toml:9: [[gateway.rule]] 's': '10.1.2.3/8' has host bits set; "
                                           "did you mean 10.0.0.0/8?"),
                         ConfigError);
    GatewayRuleConfig mixed = rule("m", "a", 3);
    mixed.src = "10.0.0.0/8";
    mixed.dst = "::/0";
    CHECK_THROWS_WITH_AS(make_gateway({mixed}), doctest::Contains("different IP versions"), ConfigError);
}

TEST_CASE("a rule that could never match is refused: ports without TCP, UDP or SCTP, ICMP of the other IP version")
{
    GatewayRuleConfig ports = rule("p", "a", 4);
    ports.proto = 1; // icmp
    ports.dst_ports = PortRange{80, 80};
    CHECK_THROWS_WITH_AS(make_gateway({ports}),
                         doctest::Contains("host.toml:4: [[gateway.rule]] 'p': src_port/dst_port need proto"),
                         ConfigError);
    ports.proto = 50; // esp
    CHECK_THROWS_AS(make_gateway({ports}), ConfigError);
    for (int proto : {6, 17, 132}) {
        ports.proto = static_cast<uint8_t>(proto);
        CHECK(make_gateway({ports}).rules().size() == 1);
    }
    GatewayRuleConfig icmp = rule("i", "a", 5);
    icmp.proto = 1;
    icmp.dst = "2001:db8::/32";
    CHECK_THROWS_WITH_AS(make_gateway({icmp}), doctest::Contains("'i': proto does not fit the addresses' IP version"),
                         ConfigError);
    icmp.proto = 58; // icmpv6
    CHECK(make_gateway({icmp}).rules().size() == 1);
    icmp.src = "10.0.0.0/8";
    icmp.dst.reset();
    CHECK_THROWS_AS(make_gateway({icmp}), ConfigError);
}
