// nat against the mock host: translation both ways with valid checksums,
// the pool split across instances and never handed out twice, exhaustion,
// expiry, and bad input (config errors with file:line, truncated packets).

#include "mock_host.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <set>

using namespace nfmock;
using namespace nfmock::ipv4_frames;

namespace {

const serpens_nf_descriptor *nat() { return load_plugin(NF_PLUGIN); }

// Built twice: nf-nat runs nat on its own tables (a 1.5 host), nf-nat-flows
// on the chain's flow table (NAT_CHAIN_FLOWS=1, a 1.6 host).
#ifndef NAT_CHAIN_FLOWS
#define NAT_CHAIN_FLOWS 0
#endif
constexpr bool kChainFlows = NAT_CHAIN_FLOWS != 0;

constexpr uint64_t kSec = 1000000000ull;

const char *kConfig = R"(inside = ["10.0.0.0/8", "192.168.0.0/16"]
external = ["203.0.113.1", "203.0.113.8/31"]
ports = [2000, 2099]
[config.timeouts]
udp = 30
icmp = 30
tcp = 600
tcp_closed = 20
)";

// With chain_flows false the host is a 1.5 one (no flow visits), so nat
// keeps its mappings in tables of its own.  flow_idle_ns: the chain's flow
// timeout (0: the mock host's default).
struct Nat {
    MockHost host{nat()};
    explicit Nat(const std::string &cfg = kConfig, uint32_t instances = 1, bool chain_flows = kChainFlows,
                 uint64_t flow_idle_ns = 0)
    {
        if (!chain_flows) {
            host.api().flow_visit_every = nullptr;
        }
        if (flow_idle_ns != 0) {
            host.flow_idle_ns = flow_idle_ns;
        }
        sweeps = chain_flows;
        host.set_config(cfg);
        for (uint32_t i = 0; i < instances; ++i) {
            REQUIRE(host.init(i) == SERPENS_OK);
        }
    }
    // Runs one frame through instance `id`; returns the output frame or an
    // empty one when dropped.
    Bytes run(const Bytes &in, uint64_t now = kSec, uint32_t id = 0)
    {
        Packets p;
        p.add(in);
        host.process(id, p.parse(), p.ports, now);
        if (sweeps) {
            host.expire_flows(now, id); // the host's sweep between batches
        }
        return p.dropped(0) ? Bytes{} : p.frames[0];
    }
    bool sweeps = false;
    uint64_t c(const std::string &name, uint32_t id = 0) { return host.counter(id, name); }
};

Flow reply_to(const Decoded &out, uint8_t proto)
{
    Flow r{proto, out.dst, out.src, out.dport, out.sport};
    r.icmp_type = 0;
    return r;
}

bool is_external(uint32_t ip)
{
    return ip == ip4("203.0.113.1") || ip == ip4("203.0.113.8") || ip == ip4("203.0.113.9");
}

} // namespace

TEST_CASE("nat: TCP, UDP and ICMP echo go out translated and replies come back")
{
    Nat n;
    for (uint8_t proto : {6, 17, 1}) {
        CAPTURE(int(proto));
        Flow f{proto, ip4("10.1.2.3"), ip4("198.51.100.7"), 40000, 443};
        Bytes out = n.run(frame(f));
        REQUIRE(!out.empty());
        Decoded d = decode(out);
        CHECK(d.ip_ok);
        CHECK(d.l4_ok);
        CHECK(is_external(d.src));
        CHECK(d.dst == f.dst);
        CHECK(d.sport >= 2000);
        CHECK(d.sport <= 2099);
        if (proto != 1) {
            CHECK(d.dport == 443);
        }
        // The same flow keeps its item.
        Decoded again = decode(n.run(frame(f), 2 * kSec));
        CHECK(again.src == d.src);
        CHECK(again.sport == d.sport);

        // The reply, addressed to the external item, goes back to the inside host.
        Bytes back = n.run(frame(reply_to(d, proto)), 3 * kSec);
        REQUIRE(!back.empty());
        Decoded b = decode(back);
        CHECK(b.ip_ok);
        CHECK(b.l4_ok);
        CHECK(b.src == f.dst);
        CHECK(b.dst == f.src);
        CHECK(b.dport == 40000);
        if (proto != 1) {
            CHECK(b.sport == 443);
        }
    }
    CHECK(n.c("translated_out") == 6);
    CHECK(n.c("translated_in") == 3);
    CHECK(n.c("mappings_created") == 3);
}

TEST_CASE("nat: distinct flows get distinct items; payload bytes are untouched")
{
    Nat n;
    std::set<std::pair<uint32_t, uint16_t>> items;
    for (uint16_t i = 0; i < 50; ++i) {
        Flow f{17, ip4("192.168.0.10"), ip4("198.51.100.1"), static_cast<uint16_t>(5000 + i), 53};
        Bytes in = frame(f, 33);
        Bytes out = n.run(in);
        REQUIRE(out.size() == in.size());
        Decoded d = decode(out);
        CHECK(d.l4_ok);
        CHECK(std::equal(in.begin() + 42, in.end(), out.begin() + 42)); // UDP payload
        items.insert({d.src, d.sport});
    }
    CHECK(items.size() == 50);
}

TEST_CASE("nat: a UDP checksum of zero stays zero; odd-length payloads keep valid checksums")
{
    Nat n;
    Flow f{17, ip4("10.0.0.5"), ip4("198.51.100.2"), 7000, 7001};
    Flow g{6, ip4("10.0.0.5"), ip4("198.51.100.2"), 7002, 80};
    // The first packet makes the mapping; the second goes the way of an
    // established flow (with the chain's flow table, straight from its area).
    for (int packet = 0; packet < 2; ++packet) {
        INFO("packet " << packet);
        Bytes out = n.run(frame(f, 5, true));
        REQUIRE(!out.empty());
        CHECK(rd16(out.data() + 14 + 20 + 6) == 0);
        CHECK(decode(out).ip_ok);
        Decoded d = decode(n.run(frame(g, 7)));
        CHECK(d.ip_ok);
        CHECK(d.l4_ok);
        Decoded u = decode(n.run(frame(f, 9)));
        CHECK(u.ip_ok);
        CHECK(u.l4_ok);
    }
}

TEST_CASE("nat: replies are filtered by remote endpoint; unknown external ports are dropped")
{
    Nat n;
    Flow f{6, ip4("10.1.1.1"), ip4("198.51.100.9"), 1234, 80};
    Decoded d = decode(n.run(frame(f)));
    Flow other = reply_to(d, 6);
    other.sport = 81; // another remote port
    CHECK(n.run(frame(other)).empty());
    CHECK(n.c("filtered") == 1);
    Flow stranger = reply_to(d, 6);
    stranger.src = ip4("198.51.100.10");
    CHECK(n.run(frame(stranger)).empty());
    CHECK(n.c("filtered") == 2);
    Flow unknown = reply_to(d, 6);
    unknown.dport = static_cast<uint16_t>(d.sport == 2000 ? 2001 : 2000);
    CHECK(n.run(frame(unknown)).empty());
    Flow udp_reply = reply_to(d, 17); // same item number, other protocol: no mapping
    CHECK(n.run(frame(udp_reply)).empty());
    CHECK(n.c("no_mapping") == 2);
    // An echo request from outside to an external address is not a reply.
    Flow ping{1, ip4("198.51.100.9"), d.src, 77, 77};
    CHECK(n.run(frame(ping)).empty());
    CHECK(n.c("unsupported") == 1);
}

namespace {

// An ICMP error from `src` to `dst` quoting the IP header and the first
// `quoted_l4` bytes of L4 of `offending` (a whole frame), checksums right.
Bytes icmp_error(uint32_t src, uint32_t dst, uint8_t type, uint8_t code, const Bytes &offending,
                 std::size_t quoted_l4 = 8)
{
    const uint8_t *oip = offending.data() + 14;
    const std::size_t oihl = (oip[0] & 15u) * 4u;
    const std::size_t quote = std::min(oihl + quoted_l4, offending.size() > 14 ? offending.size() - 14 : 0);
    Flow f{1, src, dst, 0, 0, type};
    Bytes b = frame(f, quote);
    uint8_t *icmp = b.data() + 14 + 20;
    icmp[1] = code;
    wr32(icmp + 4, 0);
    std::copy(oip, oip + quote, icmp + 8);
    wr16(icmp + 2, 0);
    wr16(icmp + 2, csum(icmp, 8 + quote));
    return b;
}

// The quoted header's fields, read within the quote (decode() would follow
// the quoted total length past an 8-byte quote).
Decoded quoted_header(const Bytes &err)
{
    const uint8_t *ip = err.data() + 14 + 20 + 8;
    const std::size_t ihl = (ip[0] & 15u) * 4u;
    const uint8_t *l4 = ip + ihl;
    Decoded d;
    d.proto = ip[9];
    d.src = rd32(ip + 12), d.dst = rd32(ip + 16);
    d.ip_ok = csum(ip, ihl) == 0;
    d.sport = rd16(l4 + (d.proto == 1 ? 4 : 0));
    d.dport = rd16(l4 + (d.proto == 1 ? 4 : 2));
    return d;
}

// A whole quote inside an ICMP error, as a frame of its own (for decode()).
Bytes quoted(const Bytes &err)
{
    constexpr std::size_t skip = 20 + 8; // the outer IPv4 and ICMP headers
    Bytes q(err.size() - skip);
    std::copy_n(err.begin(), 14, q.begin());
    std::copy(err.begin() + 14 + skip, err.end(), q.begin() + 14);
    return q;
}

} // namespace

TEST_CASE("nat: ICMP errors about a mapped flow are translated with the header they quote (RFC 5508)")
{
    Nat n;
    const uint32_t router = ip4("192.0.2.254"), remote = ip4("198.51.100.7");
    for (uint8_t proto : {6, 17, 1}) {
        CAPTURE(int(proto));
        const Flow f{proto, ip4("10.1.2.3"), remote, 40000, 443};
        const Bytes sent = n.run(frame(f));
        REQUIRE(!sent.empty());
        const Decoded d = decode(sent);
        for (std::size_t quoted_l4 : {std::size_t{8}, std::size_t{64}}) { // RFC 792's 8 bytes, or all of it
            CAPTURE(quoted_l4);
            // From outside: a router's time exceeded about the translated packet.
            const uint64_t icmp_before = n.c("icmp_errors");
            Bytes back = n.run(icmp_error(router, d.src, 11, 0, sent, quoted_l4), 2 * kSec);
            REQUIRE(!back.empty());
            const Decoded outer = decode(back);
            CHECK(outer.ip_ok);
            CHECK(outer.l4_ok); // the ICMP checksum, over the rewritten quote
            CHECK(outer.src == router);
            CHECK(outer.dst == f.src);
            const Decoded in = quoted_header(back);
            CHECK(in.ip_ok);
            CHECK(in.src == f.src);
            CHECK(in.dst == remote);
            CHECK(in.sport == 40000);
            if (quoted_l4 == 64) {
                const Bytes q = quoted(back);
                CHECK(decode(q).l4_ok); // the whole packet is quoted: its own checksum holds too
                CHECK(q == frame(f));
            }
            CHECK(n.c("icmp_errors") == icmp_before + 1);
        }

        // From inside: the inside host's port unreachable about the reply it got.
        Flow reply{proto, remote, d.src, proto == 1 ? d.sport : uint16_t{443}, d.sport, 0}; // echo: the id in both
        const Bytes delivered = n.run(frame(reply), 3 * kSec);
        REQUIRE(!delivered.empty());
        Bytes out = n.run(icmp_error(f.src, remote, 3, 3, delivered, 64), 4 * kSec);
        REQUIRE(!out.empty());
        const Decoded outer = decode(out);
        CHECK(outer.ip_ok);
        CHECK(outer.l4_ok);
        CHECK(outer.src == d.src);
        CHECK(outer.dst == remote);
        const Decoded in = decode(quoted(out));
        CHECK(in.ip_ok);
        CHECK(in.l4_ok);
        CHECK(in.src == remote);
        CHECK(in.dst == d.src);
        CHECK(in.dport == d.sport);
    }
    CHECK(n.c("icmp_errors") == 9);

    // Errors about no mapping, or quoting another remote endpoint, are dropped.
    const Decoded d = decode(n.run(frame({17, ip4("10.1.2.4"), remote, 5000, 53})));
    Bytes other = frame({17, d.src, ip4("198.51.100.8"), d.sport, 53});
    CHECK(n.run(icmp_error(router, d.src, 3, 1, other)).empty());
    CHECK(n.c("filtered") == 1);
    Bytes unmapped = frame({17, d.src, remote, 3000, 53}); // outside the pool's ports
    CHECK(n.run(icmp_error(router, d.src, 3, 1, unmapped)).empty());
    Bytes not_ours = frame({17, remote, ip4("10.9.9.9"), 53, 5000});
    CHECK(n.run(icmp_error(ip4("10.9.9.9"), remote, 3, 3, not_ours)).empty());
    CHECK(n.c("no_mapping") == 2);
    // A quote cut inside its ports is malformed.
    Bytes cut = icmp_error(router, d.src, 3, 1, frame({17, d.src, remote, d.sport, 53}), 4);
    CHECK(n.run(cut).empty());
    CHECK(n.c("malformed") == 1);
    CHECK(n.c("icmp_errors") == 9);
}

TEST_CASE("nat: traffic that is not the NAT's business passes unchanged")
{
    Nat n;
    Packets p;
    p.add(frame({6, ip4("10.1.1.1"), ip4("10.2.2.2"), 1, 2}));          // inside to inside
    p.add(frame({17, ip4("198.51.100.1"), ip4("198.51.100.2"), 1, 2})); // transit
    p.add(frame({17, ip4("198.51.100.1"), ip4("10.9.9.9"), 1, 2}));     // outside to inside address
    Bytes v6 = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd, 0x60, 0, 0, 0, 0, 0, 59, 64};
    v6.resize(14 + 40, 0);
    p.add(v6);
    std::vector<Bytes> before = p.frames;
    n.host.process(0, p.parse(), p.ports, kSec);
    for (std::size_t i = 0; i < before.size(); ++i) {
        CHECK_FALSE(p.dropped(i));
        CHECK(p.frames[i] == before[i]);
    }
    CHECK(n.c("passed") == 4);
}

TEST_CASE("nat: truncated, unparsed and fragmented packets are dropped and counted")
{
    Nat n;
    Flow f{6, ip4("10.1.1.1"), ip4("198.51.100.1"), 1000, 80};
    Packets p;
    Bytes cut = frame(f);
    cut.resize(14 + 20 + 10); // inside the TCP header: the host parser refuses it
    p.add(cut);
    p.add(Bytes(10, 0)); // shorter than Ethernet
    Bytes frag = frame({17, ip4("10.1.1.1"), ip4("198.51.100.1"), 1, 2});
    wr16(frag.data() + 14 + 6, 0x0010); // fragment offset 16 * 8
    wr16(frag.data() + 14 + 10, 0);
    wr16(frag.data() + 14 + 10, csum(frag.data() + 14, 20));
    p.add(frag);
    Bytes icmp_err = frame({1, ip4("10.1.1.1"), ip4("198.51.100.1"), 5, 5, 3}); // dest unreachable,
    p.add(icmp_err);                                                            // quoting no IPv4 header
    Bytes lying = frame(f); // parsed, then cut: the NF checks bounds itself
    p.add(lying);
    p.add(frame({47, ip4("10.1.1.1"), ip4("198.51.100.1"), 0, 0})); // GRE: no ports to map
    auto &views = p.parse();
    views[4].len = 14 + 20 + 12;
    n.host.process(0, views, p.ports, kSec);
    for (std::size_t i = 0; i < p.frames.size(); ++i) {
        CAPTURE(i);
        CHECK(p.dropped(i));
    }
    CHECK(n.c("malformed") == 4);
    CHECK(n.c("unsupported") == 2);
    CHECK(n.c("translated_out") == 0);
    CHECK(n.c("mappings_created") == 0);
}

TEST_CASE("nat: an exhausted pool drops new flows (counted) but keeps existing ones")
{
    Nat n(R"(inside = "10.0.0.0/8"
external = "203.0.113.1"
ports = [3000, 3003]
)");
    std::vector<Flow> flows;
    for (uint16_t i = 0; i < 6; ++i) {
        flows.push_back({17, ip4("10.0.0.1"), ip4("198.51.100.1"), static_cast<uint16_t>(100 + i), 53});
    }
    std::set<uint16_t> ports;
    for (std::size_t i = 0; i < 6; ++i) {
        Bytes out = n.run(frame(flows[i]), kSec + i * 10 * 1000000ull);
        if (i < 4) {
            REQUIRE(!out.empty());
            ports.insert(decode(out).sport);
        } else {
            CHECK(out.empty());
        }
    }
    CHECK(ports == std::set<uint16_t>{3000, 3001, 3002, 3003});
    CHECK(n.c("pool_exhausted") == 2);
    CHECK(n.c("pool_triggers") >= 1);
    CHECK(n.host.triggers >= 1);
    CHECK_FALSE(n.run(frame(flows[0]), 2 * kSec).empty()); // an existing flow still passes
    // TCP has a pool of its own.
    CHECK_FALSE(n.run(frame({6, ip4("10.0.0.1"), ip4("198.51.100.1"), 100, 53}), 2 * kSec).empty());
}

TEST_CASE("nat: two instances split the pool; triggers rebalance; no item is handed out twice")
{
    Nat n(R"(inside = "10.0.0.0/8"
external = "203.0.113.1"
ports = [4000, 4007]
)",
          2);
    std::set<uint16_t> seen;
    uint16_t next = 1;
    auto take = [&](uint32_t id) {
        Flow f{17, ip4("10.0.0.2"), ip4("198.51.100.3"), next++, 9};
        Bytes out = n.run(frame(f), kSec + next * 2000000ull, id);
        if (out.empty()) {
            return false;
        }
        uint16_t port = decode(out).sport;
        CHECK(seen.insert(port).second);
        return true;
    };
    // Each instance got half: instance 1 takes 2 of its 4 without asking for more.
    CHECK(take(1));
    CHECK(take(1));
    CHECK(n.c("pool_triggers", 1) == 0);
    // Instance 0 exhausts its 4 and triggers; the state manager's next tick
    // (before the next batch) re-splits what is left of instance 1's share,
    // so instance 0's later flows get those items.  The flow that found its
    // share empty before a rebalance landed is dropped and counted.
    int got = 0, dropped = 0;
    for (int i = 0; i < 12; ++i) {
        if (take(0)) {
            ++got;
        } else {
            ++dropped;
        }
    }
    CHECK(got == 6);
    CHECK(n.c("pool_triggers", 0) >= 1);
    CHECK_FALSE(take(1));
    CHECK(seen.size() == 8);
    CHECK(n.c("pool_exhausted", 0) == static_cast<uint64_t>(dropped));
    CHECK(n.c("pool_exhausted", 1) == 1);
}

TEST_CASE("nat: packets of one flow in one batch share a mapping; a reply in the same batch comes back; a FIN sticks")
{
    Nat n;
    Flow f{17, ip4("10.1.2.3"), ip4("198.51.100.7"), 40000, 53};
    Flow t{6, ip4("10.1.2.4"), ip4("198.51.100.7"), 40001, 80};
    Flow fin = t;
    fin.tcp_flags = 0x11; // FIN|ACK
    Flow ack = t;
    ack.tcp_flags = 0x10;
    // Batch 1 establishes t, so batch 2's lookups of t hit in bulk.
    n.run(frame(t), kSec);
    Packets p;
    p.add(frame(f));   // new flow: takes an item
    p.add(frame(f));   // same flow, looked up (missing) before the first made it
    p.add(frame(fin)); // refreshes t's mapping with closing set...
    p.add(frame(ack)); // ...which this later packet must not undo
    // 3 s: past the refresh interval (1/16 of the 20 s closed timeout), so
    // the ack would rewrite t's mapping from a stale bulk copy.
    n.host.process(0, p.parse(), p.ports, 3 * kSec);
    for (std::size_t i = 0; i < 4; ++i) {
        REQUIRE_FALSE(p.dropped(i));
    }
    Decoded d0 = decode(p.frames[0]), d1 = decode(p.frames[1]);
    CHECK(d0.l4_ok);
    CHECK(d1.src == d0.src);
    CHECK(d1.sport == d0.sport);
    CHECK(n.c("mappings_created") == 2);
    if (kChainFlows) {
        // closing: the TCP flow only (flags in the area's last byte); the
        // areas of the flows as they entered, before translation
        Packets entered;
        entered.add(frame(t));
        entered.add(frame(f));
        const auto &views = entered.parse();
        CHECK((static_cast<uint8_t *>(n.host.flow_area(views[0]))[7] & 0x4) != 0);
        CHECK((static_cast<uint8_t *>(n.host.flow_area(views[1]))[7] & 0x4) == 0);
    } else {
        MockTable *out = n.host.table("out");
        REQUIRE(out->entries().size() == 2);
        for (auto &[key, value] : out->entries()) {
            CHECK(value.at(0).at(6) == (key[12] == 6 ? 1 : 0)); // closing: the TCP flow only
        }
    }

    // A reply in the same batch as the packet that makes the mapping.
    Flow g{17, ip4("10.1.2.5"), ip4("198.51.100.9"), 40002, 53};
    Packets q;
    q.add(frame(g));
    Decoded predicted = d0; // the next item after d0's, from the same address
    predicted.sport = static_cast<uint16_t>(d0.sport + 1);
    predicted.dst = g.dst;
    predicted.dport = 53;
    q.add(frame(reply_to(predicted, 17)));
    n.host.process(0, q.parse(), q.ports, 4 * kSec);
    REQUIRE_FALSE(q.dropped(0));
    Decoded dg = decode(q.frames[0]);
    REQUIRE(dg.src == predicted.src);
    REQUIRE(dg.sport == predicted.sport);
    REQUIRE_FALSE(q.dropped(1));
    Decoded back = decode(q.frames[1]);
    CHECK(back.dst == g.src);
    CHECK(back.dport == 40002);
    CHECK(n.c("no_mapping") == 0);
}

TEST_CASE("nat: idle mappings expire and their items return to the pool")
{
    // max_mappings: tables this small are swept whole every batch.
    Nat n(R"(inside = "10.0.0.0/8"
external = "203.0.113.1"
ports = [5000, 5001]
max_mappings = 64
[config.timeouts]
udp = 2
tcp = 100
tcp_closed = 1
icmp = 100
)");
    Flow a{17, ip4("10.0.0.1"), ip4("198.51.100.1"), 1, 53};
    Flow b{17, ip4("10.0.0.1"), ip4("198.51.100.1"), 2, 53};
    Flow c{17, ip4("10.0.0.1"), ip4("198.51.100.1"), 3, 53};
    Decoded da = decode(n.run(frame(a), 1 * kSec));
    CHECK_FALSE(n.run(frame(b), 1 * kSec).empty());
    CHECK(n.run(frame(c), 1 * kSec + 5000000).empty()); // both items taken
    // Keep b alive; a goes idle.  Each batch runs a slice of the sweep.
    for (uint64_t t = 2; t <= 6; ++t) {
        CHECK_FALSE(n.run(frame(b), t * kSec).empty());
    }
    CHECK(n.c("mappings_expired") == 1);
    // a's reverse mapping went with it: a late reply is refused.
    CHECK(n.run(frame(reply_to(da, 17)), 6 * kSec).empty());
    CHECK(n.c("no_mapping") == 1);
    // And its item serves a new flow.
    Decoded dc = decode(n.run(frame(c), 6 * kSec + 1000));
    CHECK(dc.sport == da.sport);

    // A TCP flow that sent a FIN uses the short closed timeout (1 s, not 100 s).
    Flow t{6, ip4("10.0.0.1"), ip4("198.51.100.1"), 9, 80};
    t.tcp_flags = 0x11; // FIN|ACK
    CHECK_FALSE(n.run(frame(t), 7 * kSec).empty());
    for (uint64_t ms = 7100; ms <= 9000; ms += 100) {
        n.run(frame(b), ms * 1000000ull);
        n.run(frame(c), ms * 1000000ull);
    }
    MockTable *out = n.host.table("out");
    CHECK(out->entries().size() == 2); // b and c; the closed TCP flow is gone
    for (auto &[key, value] : out->entries()) {
        CHECK(key[12] == 17);
    }
}

TEST_CASE("nat: the pool conserves items: free bits plus live mappings is the whole pool")
{
    Nat n(kConfig, 2);
    for (uint16_t i = 0; i < 40; ++i) {
        Flow f{6, ip4("10.3.0.1"), ip4("198.51.100.77"), static_cast<uint16_t>(20000 + i), 443};
        CHECK_FALSE(n.run(frame(f), kSec, i % 2).empty());
    }
    MockTable *pool = n.host.table("pool");
    REQUIRE(pool != nullptr);
    uint64_t free_tcp = 0;
    for (auto &[key, cells] : pool->entries()) {
        if (key[6] != 6) {
            continue;
        }
        for (uint8_t byte : n.host.global_value("pool", key)) {
            free_tcp += static_cast<uint64_t>(__builtin_popcount(byte));
        }
    }
    CHECK(free_tcp + 40 == 3 * 100);
    CHECK(n.host.table("out")->entries().size() == 40);
    CHECK(n.host.table("in")->entries().size() == 40);
}

#if NAT_CHAIN_FLOWS
namespace {

// The mapping in a flow's area (nat_flow.c: struct nat_flow).
struct Area {
    uint32_t ext_ip; // network order
    uint16_t ext_port;
    uint8_t proto;
    uint8_t flags; // 1 taken, 2 mapped, 4 closing, 8 direction known, 16 outbound are replies,
                   // 32 / 64: packets without / with the host's reply flag pass untouched
};
constexpr uint8_t kTakenMapped = 3;
constexpr uint8_t kPassFirstWay = 32;
constexpr uint8_t kPassReplies = 64;

Area area_of(MockHost &h, const Flow &f)
{
    Packets p;
    p.add(frame(f));
    void *a = h.flow_area(p.parse()[0]);
    REQUIRE(a != nullptr);
    Area out;
    std::memcpy(&out, a, sizeof out);
    return out;
}

const char *kSmallPool = R"(inside = "10.0.0.0/8"
external = "203.0.113.1"
ports = [6000, 6001]
[config.timeouts]
udp = 2
tcp = 100
tcp_closed = 1
icmp = 2
)";

} // namespace

TEST_CASE("nat on the chain's flow table: a flow's mapping is its area; expiry hands the ports back to the pool")
{
    Nat n(kSmallPool);
    REQUIRE(n.host.flows() != nullptr);
    Flow a{17, ip4("10.0.0.1"), ip4("198.51.100.1"), 1, 53};
    Flow b{17, ip4("10.0.0.1"), ip4("198.51.100.1"), 2, 53};
    Flow c{17, ip4("10.0.0.1"), ip4("198.51.100.1"), 3, 53};
    Decoded da = decode(n.run(frame(a), kSec));
    Decoded db = decode(n.run(frame(b), kSec));
    const Area aa = area_of(n.host, a);
    CHECK(aa.flags == (kTakenMapped | 8));
    CHECK(aa.proto == 17);
    CHECK(ntohs(aa.ext_port) == da.sport);
    CHECK(ntohl(aa.ext_ip) == da.src);
    CHECK(n.run(frame(c), kSec).empty()); // both ports taken
    CHECK(n.c("pool_exhausted") == 1);

    // Past the UDP timeout (2 s), well within the chain's (300 s): the
    // sweep drops both mappings, the entries stay, the ports come back.
    n.host.expire_flows(5 * kSec);
    CHECK(n.c("mappings_expired") == 2);
    CHECK(area_of(n.host, a).flags == 0);
    CHECK(n.host.flows()->totals().live == 3);
    CHECK(n.run(frame(reply_to(db, 17)), 5 * kSec).empty()); // the reverse mapping went too
    Decoded dc = decode(n.run(frame(c), 5 * kSec));
    CHECK((dc.sport == da.sport || dc.sport == db.sport));
    // a comes back as a new mapping on the other port.
    Decoded da2 = decode(n.run(frame(a), 5 * kSec));
    CHECK(da2.sport != dc.sport);
    CHECK(n.c("mappings_created") == 4);
    // A second sweep gives nothing back twice.
    n.host.expire_flows(5 * kSec);
    CHECK(n.c("mappings_expired") == 2);
}

TEST_CASE("nat on the chain's flow table: an established TCP mapping outlives the chain's flow timeout")
{
    Nat n(kConfig, 1, true, 10 * kSec); // the chain's timeout: far below nat's TCP 600 s
    Flow t{6, ip4("10.0.0.7"), ip4("198.51.100.9"), 4000, 443};
    Flow u{17, ip4("10.0.0.7"), ip4("198.51.100.9"), 4001, 53};
    Decoded dt = decode(n.run(frame(t), kSec));
    REQUIRE_FALSE(n.run(frame(u), kSec).empty());
    n.host.expire_flows(60 * kSec);
    // UDP (30 s) went with the chain's timeout; TCP (600 s) stays.
    CHECK(n.host.flows()->totals().live == 1);
    CHECK(n.host.counter(0, "mappings_expired") == 1);
    CHECK_FALSE(n.run(frame(reply_to(dt, 6)), 60 * kSec).empty()); // replies still come back
    // Past nat's own TCP timeout, the mapping and the entry go.
    n.host.expire_flows(700 * kSec);
    CHECK(n.host.counter(0, "mappings_expired") == 2);
    CHECK(n.host.flows()->totals().live == 0);
    CHECK(n.run(frame(reply_to(dt, 6)), 700 * kSec).empty());
}

TEST_CASE("nat on the chain's flow table: a crash between taking a port and writing its entries heals")
{
    Nat n(kSmallPool);
    Flow a{17, ip4("10.0.0.1"), ip4("198.51.100.1"), 1, 53};
    // What a crash right after the port was taken leaves: the area holds
    // the port (taken, not mapped), and neither table has the mapping.
    Packets p;
    p.add(frame(a));
    auto *area = static_cast<uint8_t *>(n.host.flow_area(p.parse()[0]));
    REQUIRE(area != nullptr);
    const Area taken{htonl(ip4("203.0.113.1")), htons(6001), 17, 1};
    std::memcpy(area, &taken, sizeof taken);
    // The next packet writes the mapping for that port; the reply finds it.
    Decoded d = decode(n.run(frame(a), 2 * kSec));
    CHECK(d.sport == 6001);
    CHECK(area_of(n.host, a).flags == (kTakenMapped | 8));
    CHECK_FALSE(n.run(frame(reply_to(d, 17)), 2 * kSec).empty());
    CHECK(n.c("mappings_created") == 1);
}

TEST_CASE("nat on the chain's flow table: a flow first seen from outside is translated on its way out only")
{
    // The host saw the flow first from outside (to an inside address, which
    // nat passes), so its outbound packets are the flow's replies.
    Nat n;
    Flow in{17, ip4("198.51.100.5"), ip4("10.0.0.9"), 53, 5000};
    Flow out{17, ip4("10.0.0.9"), ip4("198.51.100.5"), 5000, 53};
    Decoded passed = decode(n.run(frame(in), kSec));
    CHECK(passed.src == in.src);
    CHECK(passed.dst == in.dst);
    Decoded first = decode(n.run(frame(out), kSec));
    REQUIRE(is_external(first.src));
    // The first packet's way passes; mapping the other way kept that.
    CHECK(area_of(n.host, out).flags == (kTakenMapped | 8 | 16 | kPassFirstWay));
    // The mapped flow's next packets: out translated the same, in untouched.
    for (int round = 0; round < 2; ++round) {
        Decoded o = decode(n.run(frame(out), 2 * kSec));
        CHECK(o.src == first.src);
        CHECK(o.sport == first.sport);
        CHECK(o.l4_ok);
        Decoded i = decode(n.run(frame(in), 2 * kSec));
        CHECK(i.src == in.src);
        CHECK(i.sport == in.sport);
        CHECK(i.dst == in.dst);
    }
    CHECK(n.c("translated_out") == 3);
    CHECK(n.c("passed") == 3);
}

TEST_CASE("nat on the chain's flow table: a way that passes is remembered, beside the mapping and past its expiry")
{
    // Replies addressed to the inside host itself (not to the pool) are not
    // the NAT's business: they pass, and so do the flow's next replies.
    Nat n(kSmallPool);
    Flow out{6, ip4("10.0.0.1"), ip4("198.51.100.1"), 1000, 80};
    Flow back{6, ip4("198.51.100.1"), ip4("10.0.0.1"), 80, 1000};
    Flow transit{17, ip4("198.51.100.2"), ip4("198.51.100.3"), 7, 9};
    Decoded d = decode(n.run(frame(out), kSec));
    REQUIRE(is_external(d.src));
    for (int round = 0; round < 3; ++round) {
        Decoded b = decode(n.run(frame(back), kSec));
        CHECK(b.src == back.src);
        CHECK(b.dst == back.dst);
        CHECK(b.dport == back.dport);
        CHECK(b.l4_ok);
        CHECK(area_of(n.host, out).flags == (kTakenMapped | 8 | kPassReplies));
        Decoded o = decode(n.run(frame(out), kSec));
        CHECK(o.src == d.src);
        CHECK(o.sport == d.sport);
    }
    CHECK(n.c("passed") == 3);
    CHECK(n.c("translated_out") == 4);
    // Transit: both ways pass, neither takes a port.
    REQUIRE_FALSE(n.run(frame(transit), kSec).empty());
    REQUIRE_FALSE(n.run(frame(reply_to(decode(n.run(frame(transit), kSec)), 17)), kSec).empty());
    CHECK(area_of(n.host, transit).flags == (kPassFirstWay | kPassReplies));
    CHECK(n.c("passed") == 6);
    // The mapping expires and its port goes back; what passes stays known.
    n.host.expire_flows(200 * kSec);
    CHECK(n.c("mappings_expired") == 1);
    CHECK(area_of(n.host, out).flags == kPassReplies);
    CHECK_FALSE(n.run(frame(back), 200 * kSec).empty());
    CHECK(n.c("passed") == 7);
    Decoded again = decode(n.run(frame(out), 200 * kSec));
    CHECK(is_external(again.src));
    CHECK(area_of(n.host, out).flags == (kTakenMapped | 8 | kPassReplies));

    // A reload that makes the remote side inside applies to new flows: the
    // known replies keep passing, a new flow from there is translated.
    std::string remote_inside = kSmallPool;
    remote_inside.replace(remote_inside.find("10.0.0.0/8"), 10, "198.51.100.0/24");
    n.host.set_config(remote_inside);
    REQUIRE(n.host.init(0) == SERPENS_OK);
    Decoded kept = decode(n.run(frame(back), 201 * kSec));
    CHECK(kept.src == back.src);
    CHECK(kept.sport == back.sport);
    Flow fresh{6, ip4("198.51.100.1"), ip4("10.0.0.1"), 81, 1000};
    CHECK(is_external(decode(n.run(frame(fresh), 201 * kSec)).src));
}

TEST_CASE("nat on the chain's flow table: after a reload, what passes on a mapped flow's way out does not stop its "
          "translation")
{
    // An ICMP echo flow is mapped.  A reload makes its remote side inside,
    // so an echo reply going the mapped way now passes; the echo requests
    // still take the mapping.
    Nat n(kSmallPool);
    Flow request{1, ip4("10.0.0.1"), ip4("198.51.100.1"), 77, 77};
    Flow reply = request;
    reply.icmp_type = 0;
    Decoded d = decode(n.run(frame(request), kSec));
    REQUIRE(is_external(d.src));
    std::string remote_inside = kSmallPool;
    remote_inside.replace(remote_inside.find("10.0.0.0/8"), 10, "198.51.100.0/24");
    n.host.set_config(remote_inside);
    REQUIRE(n.host.init(0) == SERPENS_OK);
    Decoded passed = decode(n.run(frame(reply), kSec));
    CHECK(passed.src == reply.src);
    CHECK(n.c("passed") == 1);
    CHECK((area_of(n.host, request).flags & (kPassFirstWay | kPassReplies)) == 0);
    Decoded again = decode(n.run(frame(request), kSec));
    CHECK(again.src == d.src);
    CHECK(again.sport == d.sport);
}

TEST_CASE("nat on the chain's flow table: a mapping an older nat made learns its direction from its next packet")
{
    Nat n(kSmallPool);
    Flow a{17, ip4("10.0.0.1"), ip4("198.51.100.1"), 1, 53};
    Decoded d = decode(n.run(frame(a), kSec));
    Packets p;
    p.add(frame(a));
    auto *area = static_cast<uint8_t *>(n.host.flow_area(p.parse()[0]));
    REQUIRE(area != nullptr);
    area[7] = kTakenMapped; // as nat before the direction bits left it
    Decoded again = decode(n.run(frame(a), 2 * kSec));
    CHECK(again.src == d.src);
    CHECK(again.sport == d.sport);
    CHECK(area_of(n.host, a).flags == (kTakenMapped | 8));
    CHECK(n.c("translated_out") == 2);
}

TEST_CASE("nat on the chain's flow table: new flows the full table cannot hold are dropped and counted")
{
    MockHost host(nat());
    host.flow_capacity = 256; // a few flows per part
    host.set_config("inside = \"10.0.0.0/8\"\nexternal = \"203.0.113.1\"\nports = [1024, 17407]\n");
    REQUIRE(host.init(0) == SERPENS_OK);
    const uint64_t flows = host.flows()->totals().capacity + 1000;
    REQUIRE(flows < 16384); // the pool does not run out first
    Packets p;
    for (uint64_t i = 0; i < flows; ++i) {
        p.add(frame({17, ip4("10.0.0.1"), ip4("198.51.100.1"), static_cast<uint16_t>(1000 + i), 53}));
        if (p.frames.size() == 64) {
            host.process(0, p.parse(), p.ports, kSec);
            p = Packets{};
        }
    }
    host.process(0, p.parse(), p.ports, kSec);
    const uint64_t full = host.counter(0, "table_full");
    CHECK(full > 0);
    CHECK(host.counter(0, "mappings_created") == host.flows()->totals().live);
    CHECK(host.counter(0, "mappings_created") + full == flows);
}

TEST_CASE("nat on the chain's flow table: a batch of new flows is mapped in bulk; what the full tables refuse keeps no "
          "item and no half entry")
{
    Nat n("max_mappings = 16\n" + std::string(kConfig));
    const uint16_t flows = 256; // batches of 64, past what the tables hold
    uint64_t mapped = 0;
    std::vector<Bytes> replies;
    for (uint16_t first = 0; first < flows; first += 64) {
        Packets p;
        for (uint16_t i = first; i < first + 64; ++i) {
            p.add(frame({17, ip4("10.4.0.1"), ip4("198.51.100.5"), static_cast<uint16_t>(30000 + i), 53}));
        }
        n.host.process(0, p.parse(), p.ports, kSec);
        for (std::size_t i = 0; i < 64; ++i) {
            if (!p.dropped(i)) {
                ++mapped;
                replies.push_back(frame(reply_to(decode(p.frames[i]), 17)));
            }
        }
    }
    CHECK(mapped > 0);
    CHECK(mapped < flows);
    CHECK(n.c("mappings_created") == mapped);
    CHECK(n.c("table_full") == flows - mapped);
    CHECK(n.host.table("in")->entries().size() == mapped);
    CHECK(n.host.table("out")->entries().size() == mapped);
    // Every refused flow's item went back: free UDP items plus mappings is the pool.
    uint64_t free_udp = 0;
    for (auto &[key, cells] : n.host.table("pool")->entries()) {
        if (key[6] == 17) {
            for (uint8_t byte : n.host.global_value("pool", key)) {
                free_udp += static_cast<uint64_t>(__builtin_popcount(byte));
            }
        }
    }
    CHECK(free_udp + mapped == 3 * 100);
    // The mapped flows' replies come back to them.
    for (const Bytes &r : replies) {
        CHECK_FALSE(n.run(r, kSec).empty());
    }
    CHECK(n.c("no_mapping") == 0);
}
#endif

TEST_CASE("nat: config errors name file:line and fail init")
{
    struct Case {
        const char *config;
        int line;
        const char *what;
    };
    const Case cases[] = {
        {"external = \"203.0.113.1\"\n", 1, "inside: required"},
        {"inside = \"10.0.0.1/8\"\nexternal = \"203.0.113.1\"\n", 2, "host bits set; did you mean 10.0.0.0/8?"},
        {"inside = [\"10.0.0.0/8\", \"ten\"]\nexternal = \"203.0.113.1\"\n", 2, "inside[1]: 'ten' is not an IPv4"},
        {"inside = \"10.0.0.0/8\"\nexternal = 5\n", 3, "external: expected a string"},
        {"inside = \"10.0.0.0/8\"\nexternal = \"203.0.113.9-203.0.113.1\"\n", 3, "not an address range"},
        {"inside = \"10.0.0.0/8\"\nexternal = \"10.0.0.1\"\n", 3, "lies inside"},
        {"inside = \"10.0.0.0/8\"\nexternal = [\"1.2.3.4\", \"1.2.3.4\"]\n", 3, "listed twice"},
        {"inside = \"10.0.0.0/8\"\nexternal = \"0.0.0.0\"\n", 3, "0.0.0.0 is not a unicast address"},
        {"inside = \"10.0.0.0/8\"\nexternal = \"255.255.255.255\"\n", 3, "is not a unicast address"},
        {"inside = \"10.0.0.0/8\"\nexternal = \"224.0.0.1\"\n", 3, "is not a unicast address"},
        {"inside = \"10.0.0.0/8\"\nexternal = \"127.0.0.1\"\n", 3, "is not a unicast address"},
        {"inside = \"10.0.0.0/8\"\nexternal = \"1.2.3.4\"\nports = [2000, 1000]\n", 4, "below first port"},
        {"inside = \"10.0.0.0/8\"\nexternal = \"1.2.3.4\"\nports = [0, 1000]\n", 4, "out of range [1, 65535]"},
        {"inside = \"10.0.0.0/8\"\nexternal = \"1.2.3.4\"\n[config.timeouts]\nudp = \"long\"\n", 5,
         "timeouts.udp: expected an integer"},
        {"inside = \"10.0.0.0/8\"\nexternal = \"1.0.0.0/8\"\n", 3, "more than 4096 external addresses"},
    };
    for (const Case &c : cases) {
        CAPTURE(c.config);
        MockHost host(nat());
        host.set_config(c.config);
        CHECK(host.init(0) == SERPENS_EINVAL);
        REQUIRE(!host.logs.empty());
        const std::string &log = host.logs.back();
        CAPTURE(log);
        CHECK(log.find(host.config_file() + ":" + std::to_string(c.line) + ":") != std::string::npos);
        CHECK(log.find(c.what) != std::string::npos);
    }
}

TEST_CASE("nat: rebalance_ms sets a pool timer per chunk and protocol, also when the pool exists")
{
    Nat n(R"(inside = "10.0.0.0/8"
external = "203.0.113.0/28"
ports = [1024, 65535]
rebalance_ms = 500
)",
          2);
    // 16 x 64512 items = 252 chunks of 4096 per protocol, 3 protocols, 2 instances.
    CHECK(n.host.timers.size() == 2 * 3 * 252);
    CHECK(n.host.timers.front().second == 500 * 1000000ull);
    CHECK(n.host.table("pool")->entries().size() == 3 * 252);
}

TEST_CASE("nat: init reads every key its synopsis documents")
{
    Nat n(std::string("max_mappings = 4096\nrebalance_ms = 100\n") + kConfig);
    CHECK(serpens::config::unread_keys(n.host.config()).empty());
    Nat typo(std::string("bogus = 1\n") + kConfig + "udpp = 3\n");
    auto unread = serpens::config::unread_keys(typo.host.config());
    REQUIRE(unread.size() == 2);
    CHECK(unread[0].find(":2:1: unknown key 'bogus'") != std::string::npos);
    CHECK(unread[1].find(":11:1: unknown key 'timeouts.udpp'") != std::string::npos);
    CHECK(unread[1].find("it reads: icmp, tcp, tcp_closed, udp") != std::string::npos);
}
