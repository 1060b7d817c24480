// fw: the rules parser (file:line errors), the tuple-space classifier against
// a linear scan, and the NF through its .so against the mock host table.

#include "fw_rules.h"
#include "mock_host.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

using namespace nfmock;
using namespace nfmock::text_frames;
using namespace serpens_fw;

namespace {

const char *kRules = R"(# test rules
default deny
deny  proto=tcp src=10.0.0.66 dport=80
allow proto=tcp src=10.0.0.0/8 dport=80
allow suspicious proto=tcp dport=23
allow proto=udp dst=2001:db8::/32 sport=1000-2000
allow proto=icmp
)";

Packet make(const Flow &f, const std::string &payload = "") { return Packet(frame(f, payload)); }

} // namespace

TEST_CASE("rules: a good file parses")
{
    RuleSet set;
    CHECK(parse_rules(kRules, "t.rules", set) == "");
    REQUIRE(set.rules.size() == 5);
    CHECK(set.default_action == Action::deny);
    CHECK(set.rules[0].action == Action::deny);
    CHECK(set.rules[0].src_len == 32);
    CHECK(set.rules[1].src_len == 8);
    CHECK(set.rules[2].suspicious);
    CHECK(set.rules[3].family == 6);
    CHECK(set.rules[3].sport_lo == 1000);
    CHECK(set.rules[3].sport_hi == 2000);
    CHECK(set.rules[3].line == 6);
    RuleSet empty;
    CHECK(parse_rules("\n# nothing\ndefault allow\n", "e.rules", empty) == "");
    CHECK(empty.rules.empty());
    CHECK(empty.default_action == Action::allow);
    CHECK(empty.default_given);
    CHECK(parse_rules("# nothing\n\n", "n.rules", empty) == "");
    CHECK_FALSE(empty.default_given);
    CHECK(empty.default_action == Action::deny);
}

TEST_CASE("rules: malformed lines fail with file:line and what was expected")
{
    struct Case {
        const char *text;
        const char *where;
        const char *what;
    } cases[] = {
        {"allow proto=tcp\npermit src=1.2.3.4\n", "r.rules:2:", "expected 'allow', 'deny' or 'default'"},
        {"allow proto=xyz\n", "r.rules:1:", "expected proto=tcp"},
        {"\n\nallow src=10.0.0.0/33\n", "r.rules:3:", "bad prefix length (0..32)"},
        {"allow src=10.0.0.1/8\n", "r.rules:1:", "host bits set; did you mean 10.0.0.0/8?"},
        {"allow src=10.0.0.300\n", "r.rules:1:", "is not an IPv4 or IPv6 address or prefix"},
        {"allow dport=90-80\n", "r.rules:1:", "dport=port or lo-hi"},
        {"allow dport=70000\n", "r.rules:1:", "dport=port or lo-hi"},
        {"allow proto=icmp dport=80\n", "r.rules:1:", "need proto=tcp, udp or sctp"},
        {"allow src=10.0.0.0/8 dst=2001:db8::/32\n", "r.rules:1:", "same family"},
        {"allow src=1.2.3.4 src=1.2.3.5\n", "r.rules:1:", "duplicate key 'src'"},
        {"allow color=red\n", "r.rules:1:", "unknown key 'color'"},
        {"allow tcp\n", "r.rules:1:", "expected key=value"},
        {"deny suspicious proto=tcp\n", "r.rules:1:", "only applies to allow"},
        {"default deny\ndefault allow\n", "r.rules:2:", "second 'default'"},
        {"default maybe\n", "r.rules:1:", "'default allow' or 'default deny'"},
        {"allow proto=icmp src=2001:db8::1\n", "r.rules:1:", "does not fit the address family"},
    };
    for (const Case &c : cases) {
        RuleSet set;
        std::string err = parse_rules(c.text, "r.rules", set);
        INFO(c.text);
        CHECK(err.rfind(c.where, 0) == 0);
        CHECK(err.find(c.what) != std::string::npos);
    }
    RuleSet set;
    serpens_host_api before_1_9{}; // no config_file: the file is read where it is
    before_1_9.struct_size = SERPENS_HOST_API_V1_0_SIZE;
    CHECK(load_rules(&before_1_9, nullptr, "rules", "/nonexistent/fw.rules", set).find("cannot read") !=
          std::string::npos);
    // Once read as 10.0.0.0/8: the token stopped at the NUL.
    const std::string nul("default deny\nallow src=10.0.0.0/8\0junk\n", 39);
    CHECK(parse_rules(nul, "r.rules", set).rfind("r.rules:2: a NUL byte", 0) == 0);
}

namespace {

// Random rules over a small address space so that packets hit them often.
RuleSet random_rules(std::mt19937 &rng, std::size_t n)
{
    std::string text;
    const char *protos[] = {"", "proto=tcp ", "proto=udp ", "proto=icmp "};
    for (std::size_t i = 0; i < n; ++i) {
        int fam6 = rng() % 5 == 0;
        text += rng() % 3 == 0 ? "deny " : rng() % 4 == 0 ? "allow suspicious " : "allow ";
        int pi = static_cast<int>(rng() % 4);
        if (fam6 && pi == 3) {
            pi = 1;
        }
        text += protos[pi];
        auto prefix = [&](bool v6) {
            unsigned len = v6 ? std::vector<unsigned>{0, 32, 48, 64, 128}[rng() % 5]
                              : std::vector<unsigned>{0, 8, 16, 24, 32}[rng() % 5];
            if (len == 0) {
                return std::string("any");
            }
            char buf[80];
            if (v6) {
                std::snprintf(buf, sizeof buf, "2001:db8:%x:%x::%x", static_cast<unsigned>(rng() % 2),
                              static_cast<unsigned>(rng() % 3), static_cast<unsigned>(rng() % 4));
            } else {
                std::snprintf(buf, sizeof buf, "10.%u.%u.%u", static_cast<unsigned>(rng() % 3),
                              static_cast<unsigned>(rng() % 3), static_cast<unsigned>(rng() % 4));
            }
            Bytes a = ip_bytes(buf, v6);
            for (unsigned b = len; b < a.size() * 8; ++b) {
                a[b / 8] &= static_cast<uint8_t>(~(0x80u >> (b % 8)));
            }
            char out[INET6_ADDRSTRLEN];
            inet_ntop(v6 ? AF_INET6 : AF_INET, a.data(), out, sizeof out);
            return std::string(out) + "/" + std::to_string(len);
        };
        if (rng() % 2) {
            text += "src=" + prefix(fam6) + " ";
        }
        if (rng() % 2 || fam6) {
            text += "dst=" + prefix(fam6) + " ";
        }
        if (pi != 3 && rng() % 2) {
            unsigned lo = rng() % 8, hi = lo + rng() % 4;
            text += "dport=" + std::to_string(lo) + "-" + std::to_string(hi) + " ";
        }
        if (pi != 3 && rng() % 3 == 0) {
            text += "sport=" + std::to_string(rng() % 8) + " ";
        }
        text += "\n";
    }
    RuleSet set;
    std::string err = parse_rules(text, "random", set);
    REQUIRE_MESSAGE(err == "", err);
    return set;
}

PacketKey random_packet(std::mt19937 &rng)
{
    PacketKey p;
    bool v6 = rng() % 4 == 0;
    p.family = v6 ? 6 : 4;
    uint8_t protos[] = {6, 17, 1, 47};
    p.proto = protos[rng() % 4];
    if (v6 && p.proto == 1) {
        p.proto = 58;
    }
    p.has_ports = p.proto == 6 || p.proto == 17;
    if (p.has_ports) {
        p.sport = static_cast<uint16_t>(rng() % 10);
        p.dport = static_cast<uint16_t>(rng() % 12);
    }
    char buf[80];
    for (uint8_t *a : {p.src, p.dst}) {
        if (v6) {
            std::snprintf(buf, sizeof buf, "2001:db8:%x:%x::%x", static_cast<unsigned>(rng() % 2),
                          static_cast<unsigned>(rng() % 3), static_cast<unsigned>(rng() % 4));
        } else {
            std::snprintf(buf, sizeof buf, "10.%u.%u.%u", static_cast<unsigned>(rng() % 3),
                          static_cast<unsigned>(rng() % 3), static_cast<unsigned>(rng() % 4));
        }
        Bytes b = ip_bytes(buf, v6);
        std::memcpy(a, b.data(), b.size());
    }
    return p;
}

// Starts an fw instance on h with `rules` as its rules file and `more`
// after the rules line of its config.
// With chain_flows false the host is a 1.4 one (no chain flow table), so fw
// keeps its verdicts in tables of its own, which these tests look into.
Ctx *start_fw(MockHost &h, const std::string &rules, const std::string &more = "", bool chain_flows = false)
{
    if (!chain_flows) {
        h.api().flow_state = nullptr;
    }
    h.write("fw.rules", rules);
    h.set_config("rules = \"fw.rules\"\n" + more);
    Ctx *c = nullptr;
    REQUIRE_MESSAGE(h.init(c) == SERPENS_OK, h.all_logs());
    return c;
}

// Stateful: TCP from inside opens connections, and so does UDP over IPv6.
const char *kStatefulRules = "default deny\nallow proto=tcp src=10.0.0.0/8\nallow proto=udp src=fd00::/8\n";

// What the stateful tests send: a TCP connection opened from inside and a
// UDP flow over IPv6, their replies (one before the connection exists), and
// a reply-like packet of no connection.
struct StatefulTraffic {
    Flow out{false, "10.0.0.5", "198.51.100.9", 6, 40000, 443};
    Flow out6{true, "fd00::5", "2001:db8::9", 17, 5353, 53};
    Packet reply_early = make(reverse(out));
    Packet syn = make(out);
    Packet reply = make(reverse(out));
    Packet reply6 = make(reverse(out6));
    Packet out6p = make(out6);
    Packet stranger = make({false, "198.51.100.9", "10.0.0.5", 6, 40001, 443});
};

} // namespace

TEST_CASE("classifier: tuple-space search agrees with the linear scan")
{
    std::mt19937 rng(42);
    for (std::size_t n : {1u, 10u, 300u, 3000u}) {
        RuleSet set = random_rules(rng, n);
        Classifier c;
        c.build(set);
        std::size_t matched = 0;
        for (int i = 0; i < 20000; ++i) {
            PacketKey p = random_packet(rng);
            int32_t want = classify_linear(set, p);
            matched += want >= 0;
            REQUIRE(c.classify(p) == want);
        }
        CHECK(matched > 0);
        MESSAGE(n << " rules: " << c.tuples() << " tuples, " << matched << "/20000 packets matched a rule");
    }
}

TEST_CASE("fw: verdicts, ports and counters through the mock host")
{
    MockHost h(FW_PLUGIN);
    Ctx *c = start_fw(h, kRules);

    Packet web = make({false, "10.1.2.3", "192.0.2.1", 6, 4000, 80});
    Packet bad = make({false, "10.0.0.66", "192.0.2.1", 6, 4000, 80});
    Packet telnet = make({false, "198.51.100.1", "192.0.2.1", 6, 4000, 23});
    Packet v6udp = make({true, "2001:db8:1::1", "2001:db8::2", 17, 1500, 53});
    Packet v6udp_out = make({true, "2001:db8:1::1", "2001:db8::2", 17, 2500, 53});
    Packet ping = make({false, "203.0.113.1", "192.0.2.1", 1, 0, 0});
    Packet other = make({false, "203.0.113.1", "192.0.2.1", 6, 4000, 443});
    auto ports = h.run(*c, {&web, &bad, &telnet, &v6udp, &v6udp_out, &ping, &other});
    CHECK(ports == std::vector<uint8_t>{0, SERPENS_PORT_DROP, 1, 0, SERPENS_PORT_DROP, 0, SERPENS_PORT_DROP});
    CHECK(c->counter("allowed") == 4);
    CHECK(c->counter("denied") == 3);
    CHECK(c->counter("suspicious") == 1);
    CHECK(c->counter("cache_misses") == 7);
    CHECK(c->counter("cache_hits") == 0);

    // Established flows: answered from the verdict cache (one get, no put).
    MockTable *t = h.table("verdicts");
    REQUIRE(t != nullptr);
    CHECK(t->flags() == (SERPENS_STATE_PER_FLOW | SERPENS_STATE_READ));
    uint64_t puts = t->puts;
    ports = h.run(*c, {&web, &bad, &telnet});
    CHECK(ports == std::vector<uint8_t>{0, SERPENS_PORT_DROP, 1});
    CHECK(c->counter("cache_hits") == 3);
    CHECK(t->puts == puts);

    // A restarted instance attaches to the same table and finds the verdicts.
    h.fini(*c);
    Ctx *c2 = nullptr;
    REQUIRE(h.init(c2) == SERPENS_OK);
    CHECK(h.run1(*c2, web) == 0);
    CHECK(c2->counter("cache_hits") == 1);
    CHECK(c2->counter("cache_misses") == 0);
}

TEST_CASE("fw: bad input — truncated packets, non-IP, malformed rules file, bad config")
{
    MockHost h(FW_PLUGIN);
    Ctx *c = start_fw(h, "default allow\n");

    // An IP packet whose TCP header is cut after the host parsed it.
    Packet cut = make({false, "10.1.2.3", "192.0.2.1", 6, 4000, 80});
    cut.view.len = 14 + 20 + 2;
    Packet arp(Bytes{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1});
    Packet runt(Bytes{1, 2, 3});
    auto ports = h.run(*c, {&cut, &arp, &runt});
    CHECK(ports == std::vector<uint8_t>{SERPENS_PORT_DROP, SERPENS_PORT_DROP, SERPENS_PORT_DROP});
    CHECK(c->counter("malformed") == 1);
    CHECK(c->counter("non_ip") == 2);

    // non_ip = "allow" lets ARP through.
    h.set_config("rules = \"fw.rules\"\nnon_ip = \"allow\"\n");
    Ctx *c2 = nullptr;
    REQUIRE(h.init(c2) == SERPENS_OK);
    CHECK(h.run1(*c2, arp) == 0);

    // A malformed rules file: init fails and the log names file:line.
    h.write("bad.rules", "default deny\nallow proto=tcp\nallow src=10.0.0.0/40\n");
    h.set_config("rules = \"bad.rules\"\n");
    Ctx *c3 = nullptr;
    CHECK(h.init(c3) == SERPENS_EINVAL);
    CHECK_MESSAGE(h.logged("bad.rules:3: '10.0.0.0/40' has a bad prefix length (0..32)"), h.all_logs());

    // Config errors name the chain file's line.
    h.set_config("cache_size = 8\nrules = \"fw.rules\"\n");
    CHECK(h.init(c3) == SERPENS_EINVAL);
    CHECK_MESSAGE(h.logged("chain.toml:2"), h.all_logs());
    h.set_config("rules = \"fw.rules\"\nidle_timeout = 31536001\n");
    CHECK(h.init(c3) == SERPENS_EINVAL);
    CHECK_MESSAGE(h.logged("0..31536000"), h.all_logs());
    h.set_config("stateful = true\n");
    CHECK(h.init(c3) == SERPENS_EINVAL);
    CHECK(h.logged("fw needs `rules"));
    h.set_config("rules = \"missing.rules\"\n");
    CHECK(h.init(c3) == SERPENS_EINVAL);
    CHECK(h.logged("missing.rules: cannot read"));

    // An emptied rules file fails closed, and the log says why nothing passes.
    h.write("empty.rules", "# truncated\n");
    h.set_config("rules = \"empty.rules\"\n");
    Ctx *c4 = nullptr;
    REQUIRE(h.init(c4) == SERPENS_OK);
    CHECK_MESSAGE(h.logged("empty.rules has no rules and no 'default' line: every packet is denied"), h.all_logs());
    Packet web = make({false, "10.1.2.3", "192.0.2.1", 6, 4000, 80});
    CHECK(h.run1(*c4, web) == SERPENS_PORT_DROP);
}

TEST_CASE("fw: stateful mode admits replies of connections opened from inside")
{
    MockHost h(FW_PLUGIN);
    Ctx *c = start_fw(h, kStatefulRules, "stateful = true\n");
    StatefulTraffic t;
    auto &[out, out6, reply_early, syn, reply, reply6, out6p, stranger] = t;
    // A reply before its connection exists is denied (and cached) ...
    CHECK(h.run1(*c, reply_early) == SERPENS_PORT_DROP);
    // ... opening the connection re-decides it.
    auto ports = h.run(*c, {&syn, &reply, &stranger, &out6p, &reply6});
    CHECK(ports == std::vector<uint8_t>{0, 0, SERPENS_PORT_DROP, 0, 0});
    CHECK(c->counter("replies") == 2);
    MockTable *conns = h.table("conns");
    REQUIRE(conns != nullptr);
    CHECK(conns->flags() == (SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE));
    CHECK(conns->entries().size() == 2);
    // Replies of established connections come from the verdict cache.
    CHECK(h.run1(*c, reply) == 0);
    CHECK(c->counter("replies") == 3);
    // The verdicts were looked up in bulk: the reply's cached deny, read
    // before the syn of the same batch deleted it, was not used.
    CHECK(h.table("verdicts")->bulk_calls > 0);

    // Without stateful, the same reply is denied.
    MockHost h2(FW_PLUGIN);
    h2.write("fw.rules", "default deny\nallow proto=tcp src=10.0.0.0/8\n");
    h2.set_config("rules = \"fw.rules\"\n");
    Ctx *d = nullptr;
    REQUIRE(h2.init(d) == SERPENS_OK);
    CHECK(h2.run(*d, {&syn, &reply}) == std::vector<uint8_t>{0, SERPENS_PORT_DROP});
}

TEST_CASE("fw: stateful mode admits ICMP errors about open connections (RELATED), one by one")
{
    MockHost h(FW_PLUGIN);
    Ctx *c = start_fw(h, kStatefulRules, "stateful = true\n");
    const Flow out{false, "10.0.0.5", "198.51.100.9", 6, 40000, 443};
    const Flow out6{true, "fd00::5", "2001:db8::9", 17, 5353, 53};
    const Flow never{false, "10.0.0.5", "198.51.100.9", 6, 40001, 443};
    Packet frag_needed(icmp_error(false, "192.0.2.254", "10.0.0.5", 3, frame(out)));
    Packet too_big(icmp_error(true, "2001:db8::1", "fd00::5", 2, frame(out6)));
    Packet about_other(icmp_error(false, "192.0.2.254", "10.0.0.5", 11, frame(never)));
    Packet misdirected(icmp_error(false, "192.0.2.254", "10.0.0.6", 3, frame(out))); // not the quote's sender
    Packet cut(frame({false, "192.0.2.254", "10.0.0.5", 1, 0, 0}, "short"));
    cut.buf[cut.off + 34] = 3;
    cut.reparse();

    // Before the connections exist every error is denied, and nothing is cached ...
    CHECK(h.run(*c, {&frag_needed, &too_big}) == std::vector<uint8_t>{SERPENS_PORT_DROP, SERPENS_PORT_DROP});
    // ... so once they are open, the same errors are admitted.
    Packet syn = make(out), first6 = make(out6);
    CHECK(h.run(*c, {&syn, &first6}) == std::vector<uint8_t>{0, 0});
    auto ports = h.run(*c, {&frag_needed, &too_big, &about_other, &misdirected, &cut, &frag_needed});
    CHECK(ports == std::vector<uint8_t>{0, 0, SERPENS_PORT_DROP, SERPENS_PORT_DROP, SERPENS_PORT_DROP, 0});
    CHECK(c->counter("related") == 3);
    CHECK(c->counter("denied") == 5);
    // Only the two connections' own verdicts were cached, no error's.
    CHECK(h.table("verdicts")->entries().size() == 2);

    // Without stateful, errors are ordinary packets for the rules.
    MockHost h2(FW_PLUGIN);
    h2.write("fw.rules", "default deny\nallow proto=tcp src=10.0.0.0/8\n");
    h2.set_config("rules = \"fw.rules\"\n");
    Ctx *d = nullptr;
    REQUIRE(h2.init(d) == SERPENS_OK);
    CHECK(h2.run(*d, {&syn, &frag_needed}) == std::vector<uint8_t>{0, SERPENS_PORT_DROP});
    CHECK(d->counter("related") == 0);
}

TEST_CASE("fw: a bulk verdict lookup counts as a lookup per packet would")
{
    // 100 packets (two bulk runs) of 10 new flows, each flow repeated: every
    // flow misses once, its later packets hit, also those of the same run
    // whose bulk lookup came before the first packet's verdict was stored.
    MockHost h(FW_PLUGIN);
    Ctx *c = start_fw(h, "default deny\nallow proto=tcp src=10.0.0.0/8\n");
    std::vector<std::unique_ptr<Packet>> storage; // a Packet's view points into itself: never moved
    for (int f = 0; f < 10; ++f) {
        storage.push_back(std::make_unique<Packet>(
            frame({false, "10.0.0." + std::to_string(f + 1), "192.0.2.1", 6, static_cast<uint16_t>(2000 + f), 80})));
    }
    storage.push_back(std::make_unique<Packet>(frame({false, "198.51.100.1", "192.0.2.1", 6, 3000, 80}))); // denied
    std::vector<Packet *> batch;
    for (int i = 0; i < 100; ++i) {
        batch.push_back(storage[static_cast<std::size_t>(i % 11)].get());
    }
    auto ports = h.run(*c, batch);
    for (int i = 0; i < 100; ++i) {
        CHECK(ports[static_cast<std::size_t>(i)] == (i % 11 == 10 ? SERPENS_PORT_DROP : 0));
    }
    CHECK(c->counter("cache_misses") == 11);
    CHECK(c->counter("cache_hits") == 89);
    CHECK(c->counter("denied") == 9);
    CHECK(c->counter("allowed") == 91);
    CHECK(h.table("verdicts")->bulk_calls == 2);
}

TEST_CASE("fw: state = \"local\" runs on per-instance caches; the default refuses a host without tables")
{
    MockHost h(FW_PLUGIN, /*with_state=*/false);
    Ctx *c = start_fw(h, kRules, "stateful = true\nstate = \"local\"\n");
    CHECK(h.logged("per-instance"));
    Packet web = make({false, "10.1.2.3", "192.0.2.1", 6, 4000, 80});
    Packet back = make(reverse({false, "10.1.2.3", "192.0.2.1", 6, 4000, 80}));
    CHECK(h.run(*c, {&web, &back, &web}) == std::vector<uint8_t>{0, 0, 0});
    CHECK(c->counter("cache_hits") == 1);
    CHECK(c->counter("replies") == 1);
    // state = "host", the default, refuses to run without it, saying what
    // would, and "auto" (which fell back without a word) is gone.
    for (const char *state : {"", "state = \"host\"\n"}) {
        h.set_config(std::string("rules = \"fw.rules\"\n") + state);
        Ctx *c2 = nullptr;
        CHECK(h.init(c2) != SERPENS_OK);
        CHECK(h.logged("could not create table 'verdicts' (state = \"local\" keeps per-instance caches)"));
    }
    h.set_config("rules = \"fw.rules\"\nstate = \"auto\"\n");
    Ctx *c3 = nullptr;
    CHECK(h.init(c3) == SERPENS_EINVAL);
    CHECK(h.logged("`state` must be \"host\""));
}

TEST_CASE("fw: established-flow cost does not depend on the rule count")
{
    // Per-instance cache (the NF's own hot path, without host state); 4096
    // established flows, rules that never match them ahead of a final allow,
    // so a classification would have to pass them all.
    // The three rule sets are timed in alternating rounds (best of 25) so a
    // busy machine slows them alike.
    struct Run {
        std::size_t n;
        std::unique_ptr<MockHost> h;
        Ctx *c = nullptr;
        double best = 1e18;
    };
    std::vector<Run> runs;
    for (std::size_t n : {1u, 1000u, 10000u}) {
        std::string text = "default deny\n";
        for (std::size_t i = 0; i + 1 < n; ++i) {
            text += "deny proto=udp src=172." + std::to_string(16 + i % 16) + "." + std::to_string(i / 16 % 256) +
                    ".0/24 dport=" + std::to_string(i % 60000) + "\n";
        }
        text += "allow\n";
        Run r{n, std::make_unique<MockHost>(FW_PLUGIN, false)};
        r.h->write("fw.rules", text);
        r.h->set_config("rules = \"fw.rules\"\nstate = \"local\"\n");
        REQUIRE(r.h->init(r.c) == SERPENS_OK);
        runs.push_back(std::move(r));
    }
    std::vector<std::unique_ptr<Packet>> storage;
    for (int f = 0; f < 4096; ++f) {
        storage.push_back(
            std::make_unique<Packet>(frame({false, "10.0." + std::to_string(f / 256) + "." + std::to_string(f % 256),
                                            "192.0.2.1", 6, static_cast<uint16_t>(1024 + f), 80})));
    }
    // Batches of 32, views prepared once, so only process() is timed.
    std::vector<serpens_pkt> views;
    for (auto &p : storage) {
        views.push_back(p->view);
    }
    std::vector<uint16_t> labels(32, 1);
    std::vector<uint8_t> ports(32, 0);
    serpens_batch b{};
    b.struct_size = sizeof b;
    b.count = 32;
    b.pkt_stride = sizeof(serpens_pkt);
    b.self = 1;
    b.labels = labels.data();
    b.ports = ports.data();
    b.now_ns = 1'000'000'000;
    auto pass = [&](Run &r) {
        for (std::size_t i = 0; i < views.size(); i += 32) {
            b.pkts = &views[i];
            r.h->desc()->process(&r.c->pub, &b);
        }
    };
    for (Run &r : runs) {
        pass(r); // warm: every flow established
    }
    for (int round = 0; round < 25; ++round) {
        for (Run &r : runs) {
            auto t0 = std::chrono::steady_clock::now();
            for (int k = 0; k < 10; ++k) {
                pass(r);
            }
            double d = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
            r.best = std::min(r.best, d / (10.0 * static_cast<double>(views.size())));
        }
    }
    // What makes the cost independent of the rules: once established, no
    // packet is classified again, whatever the rule count; every one is a
    // cache hit.  The times are printed, not asserted (a busy machine must
    // not fail a test): `serpens-bench nf` measures the ratio.
    for (Run &r : runs) {
        CHECK(r.c->counter("cache_misses") == 4096);
        CHECK(r.c->counter("cache_hits") == 25 * 10 * 4096);
        CHECK(r.c->counter("denied") == 0);
        MESSAGE(r.n << " rules: " << r.best << " ns/packet on established flows (" << r.best / runs[0].best
                    << "x of 1 rule)");
    }
}

TEST_CASE("fw: the rules file must be a regular file within the size limit")
{
    MockHost h(FW_PLUGIN);
    for (const BadFile &bad : bad_config_files(h)) {
        CAPTURE(bad.path);
        h.set_config("rules = \"" + bad.path + "\"\n");
        Ctx *c = nullptr;
        auto start = std::chrono::steady_clock::now();
        CHECK(h.init(c) == SERPENS_EINVAL);
        CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
        CHECK_MESSAGE(h.logged(bad.logged), h.all_logs());
    }
}

TEST_CASE("fw: init reads every key its synopsis documents, so a misspelt one stands out")
{
    MockHost h(FW_PLUGIN);
    start_fw(h, "default allow\n",
             "stateful = true\nnon_ip = \"allow\"\ncache_size = 1024\nidle_timeout = 60\nstate = \"host\"\n");
    CHECK(serpens::config::unread_keys(h.config()).empty());
    // A host of its own: this one's tables were made with another cache_size.
    MockHost h2(FW_PLUGIN);
    start_fw(h2, "default allow\n", "statefull = true\n");
    auto unread = serpens::config::unread_keys(h2.config());
    REQUIRE(unread.size() == 1);
    CHECK(unread[0].find("chain.toml:3:1: unknown key 'statefull' in the config of this NF; it reads: cache_size, "
                         "idle_timeout, non_ip, rules, state, stateful") != std::string::npos);
}

TEST_CASE("fw on a 1.5 host: verdicts in the chain's flow table, no lookup of its own")
{
    MockHost h(FW_PLUGIN);
    Ctx *c = start_fw(h, kRules, "", /*chain_flows=*/true);
    REQUIRE(h.flows() != nullptr);
    Packet web = make({false, "10.1.2.3", "192.0.2.1", 6, 4000, 80});
    Packet bad = make({false, "10.0.0.66", "192.0.2.1", 6, 4000, 80});
    Packet telnet = make({false, "198.51.100.1", "192.0.2.1", 6, 4000, 23});
    Packet v6udp = make({true, "2001:db8:1::1", "2001:db8::2", 17, 1500, 53});
    Packet v6udp_out = make({true, "2001:db8:1::1", "2001:db8::2", 17, 2500, 53});
    Packet ping = make({false, "203.0.113.1", "192.0.2.1", 1, 0, 0});
    Packet other = make({false, "203.0.113.1", "192.0.2.1", 6, 4000, 443});
    const std::vector<uint8_t> want{0, SERPENS_PORT_DROP, 1, 0, SERPENS_PORT_DROP, 0, SERPENS_PORT_DROP};
    CHECK(h.run(*c, {&web, &bad, &telnet, &v6udp, &v6udp_out, &ping, &other}) == want);
    CHECK(c->counter("cache_misses") == 7);
    CHECK(h.table("verdicts") == nullptr);
    CHECK(h.flows()->totals().live == 7);

    // Known flows: the verdict from the entry, the same ports.
    CHECK(h.run(*c, {&web, &bad, &telnet, &v6udp, &v6udp_out, &ping, &other}) == want);
    CHECK(c->counter("cache_hits") == 7);
    CHECK(c->counter("allowed") == 8);
    CHECK(c->counter("suspicious") == 2);

    // A restarted instance finds them in the entries.
    h.fini(*c);
    Ctx *c2 = nullptr;
    REQUIRE(h.init(c2) == SERPENS_OK);
    CHECK(h.run1(*c2, web) == 0);
    CHECK(h.run1(*c2, bad) == SERPENS_PORT_DROP);
    CHECK(c2->counter("cache_hits") == 2);
    CHECK(c2->counter("cache_misses") == 0);

    // The file edited under the running chain: another instance of it (a
    // scale-out) runs the rules the chain started with, as c2 does.
    h.write("fw.rules", "default allow\ndeny proto=tcp dport=23\n");
    Ctx *scaled = nullptr;
    REQUIRE(h.init(scaled, 1) == SERPENS_OK);
    CHECK(h.run1(*scaled, telnet) == 1);
    CHECK(scaled->counter("cache_hits") == 1);

    // The next version of the chain (a reload, a restart) reads the file
    // again: other rules (another fingerprint) re-decide, telnet is denied.
    h.set_config("rules = \"fw.rules\"\n");
    Ctx *c3 = nullptr;
    REQUIRE(h.init(c3) == SERPENS_OK);
    CHECK(h.run(*c3, {&telnet, &bad}) == std::vector<uint8_t>{SERPENS_PORT_DROP, 0});
    CHECK(c3->counter("cache_misses") == 2);
}

TEST_CASE("fw on a 1.5 host: stateful replies are admitted through the flow's entry")
{
    MockHost h(FW_PLUGIN);
    Ctx *c = start_fw(h, kStatefulRules, "stateful = true\n", /*chain_flows=*/true);
    StatefulTraffic t;
    auto &[out, out6, reply_early, syn, reply, reply6, out6p, stranger] = t;
    // A reply before its connection exists is denied (and its entry says so) ...
    CHECK(h.run1(*c, reply_early) == SERPENS_PORT_DROP);
    // ... opening the connection re-decides it, in the same batch too.
    CHECK(h.run(*c, {&syn, &reply, &stranger, &out6p, &reply6}) == std::vector<uint8_t>{0, 0, SERPENS_PORT_DROP, 0, 0});
    CHECK(c->counter("replies") == 2);
    // Later replies: hits.
    const uint64_t hits = c->counter("cache_hits");
    CHECK(h.run(*c, {&reply, &reply6, &syn}) == std::vector<uint8_t>{0, 0, 0});
    CHECK(c->counter("cache_hits") == hits + 3);
    CHECK(c->counter("replies") == 4);
    // ICMP errors about the connection still find it (RELATED, via conns).
    Packet frag_needed(icmp_error(false, "192.0.2.254", "10.0.0.5", 3, frame(out)));
    CHECK(h.run1(*c, frag_needed) == 0);
    CHECK(c->counter("related") == 1);
    // Without stateful, the same reply is denied.
    MockHost h2(FW_PLUGIN);
    Ctx *d = start_fw(h2, "default deny\nallow proto=tcp src=10.0.0.0/8\n", "", /*chain_flows=*/true);
    CHECK(h2.run(*d, {&syn, &reply}) == std::vector<uint8_t>{0, SERPENS_PORT_DROP});
}
