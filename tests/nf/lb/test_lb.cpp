// lb against the mock host: Maglev spreads flows within 5% of even, a flow
// keeps its backend (also when the backend list changes), replies get the
// service address back, checksums stay valid, usage counts add up, and bad
// config and truncated packets are handled.  Built twice: on a host without
// the chain's flow table (LB_CHAIN_FLOWS=0: lb keeps forward mappings in its
// table) and on one with it (a flow's backend in lb's area).

#include "mock_host.h"

#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <set>

using namespace nfmock;
using namespace nfmock::ipv4_frames;

#ifndef LB_CHAIN_FLOWS
#define LB_CHAIN_FLOWS 0
#endif
constexpr bool kChainFlows = LB_CHAIN_FLOWS != 0;

namespace {

const serpens_nf_descriptor *lb() { return load_plugin(NF_PLUGIN); }

constexpr uint64_t kMs = 1000000ull;

const char *kConfig = R"(vips = ["198.19.0.0/16"]
vport = 80
backends = ["10.1.0.1", "10.1.0.2", "10.1.0.3:8080", "10.1.0.4"]
merge_ms = 100
)";

const char *kThree = R"(vips = ["198.19.0.0/16"]
vport = 80
backends = ["10.1.0.1", "10.1.0.2", "10.1.0.3:8080"]
)";

struct Lb {
    MockHost host{lb()};
    explicit Lb(const std::string &cfg = kConfig)
    {
        if (!kChainFlows) {
            host.api().flow_state = nullptr; // a 1.4 host
        }
        host.set_config(cfg);
        REQUIRE(host.init(0) == SERPENS_OK);
    }
    // Runs frames through an instance in batches of 64; returns the outputs
    // (empty when dropped).
    std::vector<Bytes> run(const std::vector<Bytes> &in, uint32_t id = 0)
    {
        std::vector<Bytes> out;
        for (std::size_t s = 0; s < in.size(); s += 64) {
            Packets p;
            for (std::size_t i = s; i < std::min(in.size(), s + 64); ++i) {
                p.add(in[i]);
            }
            host.process(id, p.parse(), p.ports, (s + 1) * kMs);
            for (std::size_t i = 0; i < p.frames.size(); ++i) {
                out.push_back(p.dropped(i) ? Bytes{} : p.frames[i]);
            }
        }
        return out;
    }
};

Flow client_flow(uint32_t i, uint8_t proto = 6)
{
    // Clients spread over a /16, ports over 1024..65535, services over a few VIPs.
    return Flow{proto, ip4("172.16.0.0") + (i * 2654435761u) % 65536u, ip4("198.19.0.10") + i % 3,
                static_cast<uint16_t>(1024 + (i * 40503u) % 64000u), 80};
}

} // namespace

TEST_CASE("lb: Maglev spreads 20000 flows within 5% of even, each flow on one backend, checksums valid")
{
    Lb l;
    const uint32_t n_flows = 20000;
    std::vector<Bytes> in;
    for (uint32_t i = 0; i < n_flows; ++i) {
        in.push_back(frame(client_flow(i, i % 4 ? 6 : 17), i % 50));
    }
    auto out = l.run(in);
    std::map<uint32_t, uint32_t> per_backend;
    std::vector<uint32_t> chosen(n_flows);
    for (uint32_t i = 0; i < n_flows; ++i) {
        REQUIRE(!out[i].empty());
        Decoded d = decode(out[i]);
        CHECK(d.ip_ok);
        CHECK(d.l4_ok);
        Flow f = client_flow(i);
        CHECK(d.src == f.src);
        CHECK(d.sport == f.sport);
        CHECK(d.dport == (d.dst == ip4("10.1.0.3") ? 8080 : 80));
        ++per_backend[d.dst];
        chosen[i] = d.dst;
    }
    REQUIRE(per_backend.size() == 4);
    for (auto &[ip, n] : per_backend) {
        CAPTURE(ip4_str(ip));
        CAPTURE(n);
        CHECK(std::fabs(double(n) - n_flows / 4.0) <= 0.05 * n_flows / 4.0);
    }
    // Second packets of the same flows land on the same backends.
    auto again = l.run(std::vector<Bytes>(in.begin(), in.begin() + 2000));
    for (uint32_t i = 0; i < 2000; ++i) {
        CHECK(decode(again[i]).dst == chosen[i]);
    }
    CHECK(l.host.counter(0, "flows_new") == n_flows);
    CHECK(l.host.counter(0, "balanced") == n_flows + 2000);
    // Usage per backend: flows and packets add up (timers: one per backend).
    CHECK(l.host.timers.size() == 4);
    l.host.merge_all("backends"); // the merge timers firing
    uint64_t flows = 0, packets = 0;
    for (auto &[key, cells] : l.host.table("backends")->entries()) {
        Bytes v = l.host.global_value("backends", key);
        uint64_t f, p;
        std::memcpy(&f, v.data(), 8);
        std::memcpy(&p, v.data() + 8, 8);
        flows += f, packets += p;
        uint32_t ip = rd32(key.data());
        CHECK(f == per_backend[ip]);
    }
    CHECK(flows == n_flows);
    CHECK(packets == n_flows + 2000);
}

TEST_CASE("lb: replies from a backend get the service address and port back")
{
    Lb l;
    for (uint32_t i = 0; i < 40; ++i) {
        Flow f = client_flow(i, i % 2 ? 6 : 17);
        Decoded d = decode(l.run({frame(f)})[0]);
        Flow reply{f.proto, d.dst, d.src, d.dport, d.sport};
        Bytes back = l.run({frame(reply, 9)})[0];
        REQUIRE(!back.empty());
        Decoded b = decode(back);
        CHECK(b.ip_ok);
        CHECK(b.l4_ok);
        CHECK(b.src == f.dst);
        CHECK(b.sport == 80);
        CHECK(b.dst == f.src);
        CHECK(b.dport == f.sport);
    }
    CHECK(l.host.counter(0, "replies") == 40);
}

TEST_CASE("lb: packets of one batch see the flows earlier packets of the batch created (bulk lookups)")
{
    // Where each flow goes, learnt on a separate host (Maglev is deterministic).
    Lb probe;
    std::vector<Flow> flows;
    std::vector<Decoded> to;
    for (uint32_t i = 0; i < 20; ++i) {
        flows.push_back(client_flow(100 + i, i % 2 ? 6 : 17));
        to.push_back(decode(probe.run({frame(flows.back())})[0]));
    }
    // One batch: each new flow's first packet, its reply from the backend,
    // and its second packet, interleaved with the other flows'.
    Lb l;
    std::vector<Bytes> batch;
    for (uint32_t i = 0; i < 20; ++i) {
        batch.push_back(frame(flows[i]));
        batch.push_back(frame({flows[i].proto, to[i].dst, to[i].src, to[i].dport, to[i].sport}, 9));
        batch.push_back(frame(flows[i], 3));
    }
    REQUIRE(batch.size() <= 64);
    const std::vector<Bytes> out = l.run(batch);
    for (uint32_t i = 0; i < 20; ++i) {
        CAPTURE(i);
        const Decoded first = decode(out[3 * i]), reply = decode(out[3 * i + 1]), second = decode(out[3 * i + 2]);
        CHECK(first.dst == to[i].dst);
        CHECK(second.dst == to[i].dst);
        CHECK(second.dport == to[i].dport);
        CHECK(reply.ip_ok);
        CHECK(reply.l4_ok);
        CHECK(reply.src == flows[i].dst); // the service address back
        CHECK(reply.sport == 80);
    }
    CHECK(l.host.counter(0, "flows_new") == 20);
    CHECK(l.host.counter(0, "balanced") == 40);
    CHECK(l.host.counter(0, "replies") == 20);
}

TEST_CASE("lb: a flow stays on its backend when the backend list changes; few new flows move")
{
    Lb l;
    const uint32_t n = 4000;
    std::vector<Bytes> in;
    for (uint32_t i = 0; i < n; ++i) {
        in.push_back(frame(client_flow(i)));
    }
    auto first = l.run(in);
    // Instance 1 starts with backend 10.1.0.4 gone and shares the flow table.
    l.host.set_config(kThree);
    REQUIRE(l.host.init(1) == SERPENS_OK);
    auto second = l.run(in, 1);
    uint32_t on_removed = 0;
    for (uint32_t i = 0; i < n; ++i) {
        CHECK(decode(second[i]).dst == decode(first[i]).dst);
        on_removed += decode(first[i]).dst == ip4("10.1.0.4");
    }
    CHECK(on_removed > 0);
    // New flows never go to the removed backend.
    std::vector<Bytes> fresh;
    for (uint32_t i = n; i < n + 1000; ++i) {
        fresh.push_back(frame(client_flow(i)));
    }
    for (auto &b : l.run(fresh, 1)) {
        CHECK(decode(b).dst != ip4("10.1.0.4"));
    }
    // Maglev's minimal disruption: without flow memory, flows of the
    // remaining backends mostly keep their choice.
    Lb a, b(kThree);
    auto with4 = a.run(in), with3 = b.run(in);
    uint32_t stayed = 0, moved = 0;
    for (uint32_t i = 0; i < n; ++i) {
        uint32_t before = decode(with4[i]).dst;
        if (before == ip4("10.1.0.4")) {
            continue;
        }
        (decode(with3[i]).dst == before ? stayed : moved) += 1;
    }
    MESSAGE("flows of remaining backends that moved: " << moved << " of " << (stayed + moved));
    CHECK(moved * 10 < stayed + moved);
}

TEST_CASE("lb: other traffic passes unchanged; fragments and cut packets to a service are dropped")
{
    Lb l;
    Packets p;
    p.add(frame({6, ip4("172.16.0.1"), ip4("198.51.100.1"), 1000, 80})); // not a service
    p.add(frame({6, ip4("172.16.0.1"), ip4("198.19.0.1"), 1000, 443}));  // service, other port
    p.add(frame({1, ip4("172.16.0.1"), ip4("198.19.0.1"), 7, 7}));       // ICMP to a service
    p.add(Bytes(10, 0));                                                 // unparsed
    Bytes frag = frame({17, ip4("172.16.0.1"), ip4("198.19.0.1"), 1, 80});
    wr16(frag.data() + 14 + 6, 0x0010);
    wr16(frag.data() + 14 + 10, 0);
    wr16(frag.data() + 14 + 10, csum(frag.data() + 14, 20));
    p.add(frag);                                                       // fragment to a service
    p.add(frame({6, ip4("172.16.0.1"), ip4("198.19.0.1"), 1000, 80})); // cut below (the view lies)
    std::vector<Bytes> before = p.frames;
    auto &v = p.parse();
    v[5].len = 14 + 20 + 10;
    l.host.process(0, v, p.ports, kMs);
    for (std::size_t i = 0; i < 4; ++i) {
        CAPTURE(i);
        CHECK_FALSE(p.dropped(i));
        CHECK(p.frames[i] == before[i]);
    }
    CHECK(p.dropped(4));
    CHECK(p.dropped(5));
    CHECK(l.host.counter(0, "passed") == 3);
    CHECK(l.host.counter(0, "unparsed") == 1);
    CHECK(l.host.counter(0, "unsupported") == 1);
    CHECK(l.host.counter(0, "malformed") == 1);
}

TEST_CASE("lb: a full flow table still balances by Maglev and counts it")
{
    Lb l(std::string(kConfig) + "max_flows = 2\n");
    std::vector<Bytes> in;
    for (uint32_t i = 0; i < 10; ++i) {
        in.push_back(frame(client_flow(i)));
    }
    auto out = l.run(in);
    for (auto &b : out) {
        CHECK_FALSE(b.empty());
    }
    CHECK(l.host.counter(0, "table_full") == 8);
}

TEST_CASE("lb: config errors name file:line and fail init")
{
    struct Case {
        const char *config;
        int line;
        const char *what;
    };
    const Case cases[] = {
        {"backends = \"10.0.0.1\"\n", 1, "vips: required"},
        {"vips = \"198.19.0.1/16\"\nbackends = \"10.0.0.1\"\n", 2, "host bits"},
        {"vips = \"198.19.0.0/16\"\nbackends = [\"10.0.0.1\", \"10.0.0.2:0\"]\n", 3,
         "backends[1]: '10.0.0.2:0': the port"},
        {"vips = \"198.19.0.0/16\"\nbackends = [\"10.0.0.1\", \"10.0.0.1\"]\n", 3, "listed twice"},
        {"vips = \"198.19.0.0/16\"\nbackends = \"bad\"\n", 3, "not address[:port]"},
        {"vips = \"198.19.0.0/16\"\nbackends = \"2001:db8::1\"\n", 3, "IPv4 backends"},
        {"vips = \"198.19.0.0/16\"\nbackends = \"10.1.0.1: 80\"\n", 3, "the port must be 1..65535"},
        {"vips = \"198.19.0.0/16\"\nbackends = \"10.1.0.1:+80\"\n", 3, "the port must be 1..65535"},
        {"vips = \"198.19.0.0/16\"\nbackends = \"0.0.0.0\"\n", 3, "not the unspecified address"},
        {"vips = \"198.19.0.0/16\"\nbackends = \"255.255.255.255\"\n", 3, "not the broadcast address"},
        {"vips = \"198.19.0.0/16\"\nbackends = \"224.0.0.1\"\n", 3, "not a multicast address"},
        {"vips = \"198.19.0.0/16\"\nbackends = \"198.19.3.4\"\n", 3, "inside a service prefix"},
        {"vips = \"198.19.0.0/16\"\nbackends = \"10.0.0.1\"\ntable_size = 65536\n", 4, "not a prime"},
        {"vips = \"198.19.0.0/16\"\nbackends = [\"10.0.0.1\", \"10.0.0.2\"]\ntable_size = 101\n", 4,
         "below 100 x 2 backends"},
        {"vips = \"198.19.0.0/16\"\nbackends = \"10.0.0.1\"\nvport = 70000\n", 4, "vport: 70000 is out of range"},
    };
    for (const Case &c : cases) {
        CAPTURE(c.config);
        MockHost host(lb());
        host.set_config(c.config);
        CHECK(host.init(0) == SERPENS_EINVAL);
        REQUIRE(!host.logs.empty());
        CAPTURE(host.logs.back());
        CHECK(host.logs.back().find(host.config_file() + ":" + std::to_string(c.line) + ":") != std::string::npos);
        CHECK(host.logs.back().find(c.what) != std::string::npos);
    }
}

TEST_CASE("lb: init reads every key its synopsis documents")
{
    Lb all(std::string(kConfig) + "table_size = 1009\nmax_flows = 1024\n");
    CHECK(serpens::config::unread_keys(all.host.config()).empty());
    Lb typo(std::string(kConfig) + "backend = [\"10.9.9.9\"]\n");
    auto unread = serpens::config::unread_keys(typo.host.config());
    REQUIRE(unread.size() == 1);
    CHECK(unread[0].find(":6:1: unknown key 'backend'") != std::string::npos);
}

#if LB_CHAIN_FLOWS
TEST_CASE("lb on the chain's flow table: a flow's backend is its area; the table holds only reply entries")
{
    Lb l;
    REQUIRE(l.host.flows() != nullptr);
    const uint32_t n = 300;
    std::vector<Bytes> in;
    for (uint32_t i = 0; i < n; ++i) {
        in.push_back(frame(client_flow(i, i % 2 ? 6 : 17)));
    }
    const auto out = l.run(in);
    for (uint32_t i = 0; i < n; ++i) {
        CAPTURE(i);
        Packets p;
        p.add(in[i]);
        const void *area = l.host.flow_area(p.parse()[0]);
        REQUIRE(area != nullptr);
        uint32_t ip;
        uint16_t port;
        std::memcpy(&ip, area, 4);
        std::memcpy(&port, static_cast<const uint8_t *>(area) + 4, 2);
        const Decoded d = decode(out[i]);
        CHECK(ntohl(ip) == d.dst);
        CHECK(ntohs(port) == d.dport);
        CHECK(static_cast<const uint8_t *>(area)[7] == 1); // set
    }
    CHECK(l.host.table("flows")->entries().size() == n); // one reply entry per flow
    // A stored backend wins over the Maglev table: point a flow's area at
    // another backend, and its next packet goes there.
    Packets p;
    p.add(in[0]);
    auto *area = static_cast<uint8_t *>(l.host.flow_area(p.parse()[0]));
    const uint32_t elsewhere = htonl(decode(out[0]).dst == ip4("10.1.0.1") ? ip4("10.1.0.2") : ip4("10.1.0.1"));
    std::memcpy(area, &elsewhere, 4);
    CHECK(decode(l.run({in[0]})[0]).dst == ntohl(elsewhere));
    CHECK(l.host.counter(0, "flows_new") == n);
}
#endif
