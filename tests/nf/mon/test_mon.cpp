// mon against the mock host: per-flow and per-host counts match what the
// test counts itself (also in batches larger than mon's 64-packet rounds),
// replicas of two instances fold
// without loss or double counting, flows fold their pending counts into the hosts
// every fold_ms and through the sweep (which also expires idle flows, each
// instance only its own), hosts beyond max_hosts go to the counted overflow
// row, bad config and truncated packets.

#include "mock_host.h"

#include <doctest/doctest.h>

#include <map>
#include <tuple>

using namespace nfmock;
using namespace nfmock::ipv4_frames;

namespace {

const serpens_nf_descriptor *mon() { return load_plugin(NF_PLUGIN); }

constexpr uint64_t kMs = 1000000ull;

// The table layouts, as documented at the top of mon.c.
struct FlowVal {
    uint64_t packets, bytes, first_ns, last_ns;
    uint64_t a_packets, a_bytes, b_packets, b_bytes; // pending: not yet in the hosts' counts
    uint64_t folded_ns, owner;
};
static_assert(sizeof(FlowVal) == 80);
struct HostCounts {
    uint64_t tx_packets = 0, tx_bytes = 0, rx_packets = 0, rx_bytes = 0;
    bool operator==(const HostCounts &) const = default;
};

using Addr = std::array<uint8_t, 16>;

Addr mapped(uint32_t ip)
{
    Addr a{};
    a[10] = a[11] = 0xff;
    a[12] = static_cast<uint8_t>(ip >> 24), a[13] = static_cast<uint8_t>(ip >> 16);
    a[14] = static_cast<uint8_t>(ip >> 8), a[15] = static_cast<uint8_t>(ip);
    return a;
}

uint64_t u64(const uint8_t *p)
{
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}

// A hosts / host_overflow value: tx_packets tx_bytes rx_packets rx_bytes.
HostCounts read_counts(const Bytes &v)
{
    REQUIRE(v.size() == 32);
    return HostCounts{u64(v.data()), u64(v.data() + 8), u64(v.data() + 16), u64(v.data() + 24)};
}

Addr host_of(const uint8_t *addr, uint8_t ip_version)
{
    Addr a{};
    if (ip_version == 4) {
        return mapped(rd32(addr));
    }
    std::memcpy(a.data(), addr, 16);
    return a;
}

HostCounts &operator+=(HostCounts &a, const HostCounts &b)
{
    a.tx_packets += b.tx_packets, a.tx_bytes += b.tx_bytes;
    a.rx_packets += b.rx_packets, a.rx_bytes += b.rx_bytes;
    return a;
}

struct Mon {
    MockHost host{mon()};
    explicit Mon(const std::string &cfg = "", uint32_t instances = 1)
    {
        host.set_config(cfg);
        for (uint32_t i = 0; i < instances; ++i) {
            REQUIRE(host.init(i) == SERPENS_OK);
        }
    }
    std::map<Bytes, FlowVal> flows()
    {
        std::map<Bytes, FlowVal> out;
        for (auto &[key, cells] : host.table("flows")->entries()) {
            REQUIRE(cells[0].size() == sizeof(FlowVal));
            std::memcpy(&out[key], cells[0].data(), sizeof(FlowVal));
        }
        return out;
    }
    // What the flows hold for their hosts and have not folded yet.
    std::map<Addr, HostCounts> pending()
    {
        std::map<Addr, HostCounts> out;
        for (auto &[key, v] : flows()) {
            out[host_of(key.data(), key[37])] += HostCounts{v.a_packets, v.a_bytes, v.b_packets, v.b_bytes};
            out[host_of(key.data() + 16, key[37])] += HostCounts{v.b_packets, v.b_bytes, v.a_packets, v.a_bytes};
        }
        return out;
    }
    // The hosts table plus the flows' pending counts: what mon has counted.
    std::map<Addr, HostCounts> counted()
    {
        std::map<Addr, HostCounts> out = hosts();
        for (auto &[a, c] : pending()) {
            if (c != HostCounts{}) {
                out[a] += c;
            }
        }
        return out;
    }
    // The global per-host counts, and the overflow's: the merged values, as
    // the state manager reports them once the merge timer has fired.
    std::map<Addr, HostCounts> hosts(HostCounts *overflow = nullptr)
    {
        host.merge_all("hosts");
        host.merge_all("host_overflow");
        std::map<Addr, HostCounts> out;
        for (auto &[key, cells] : host.table("hosts")->entries()) {
            REQUIRE(key.size() == 16);
            Addr a;
            std::memcpy(a.data(), key.data(), 16);
            out[a] = read_counts(host.global_value("hosts", key));
        }
        if (overflow) {
            *overflow = HostCounts{};
            for (auto &[key, cells] : host.table("host_overflow")->entries()) {
                CHECK(key == Bytes(4, 0));
                *overflow = read_counts(host.global_value("host_overflow", key));
            }
        }
        return out;
    }
};

struct Expect {
    std::map<std::tuple<uint32_t, uint32_t, uint16_t, uint16_t, uint8_t>, std::pair<uint64_t, uint64_t>> flows;
    std::map<Addr, HostCounts> hosts;
    void add(const Flow &f, std::size_t len)
    {
        // Direction-independent: the lower (address, port) first.
        auto k = std::make_tuple(f.src, f.dst, f.sport, f.dport, f.proto);
        if (std::make_pair(f.dst, f.dport) < std::make_pair(f.src, f.sport)) {
            k = std::make_tuple(f.dst, f.src, f.dport, f.sport, f.proto);
        }
        flows[k].first += 1;
        flows[k].second += len;
        hosts[mapped(f.src)].tx_packets += 1, hosts[mapped(f.src)].tx_bytes += len;
        hosts[mapped(f.dst)].rx_packets += 1, hosts[mapped(f.dst)].rx_bytes += len;
    }
};

// Traffic between 6 clients and 3 servers, both directions, TCP/UDP/ICMP.
std::vector<Flow> traffic(std::size_t n)
{
    std::vector<Flow> out;
    for (std::size_t i = 0; i < n; ++i) {
        uint32_t client = ip4("10.0.0.1") + static_cast<uint32_t>(i % 6);
        uint32_t server = ip4("198.51.100.1") + static_cast<uint32_t>(i % 3);
        uint8_t proto = i % 5 == 0 ? 1 : (i % 2 ? 6 : 17);
        Flow f{proto, client, server, static_cast<uint16_t>(1000 + i % 7), 80};
        if (proto == 1) {
            f.dport = f.sport; // echo id in both
        }
        if (i % 3 == 1) {
            std::swap(f.src, f.dst), std::swap(f.sport, f.dport);
            f.icmp_type = 0;
        }
        out.push_back(f);
    }
    return out;
}

} // namespace

TEST_CASE("mon: per-flow and per-host counts match an independent count; packets pass unchanged")
{
    // fold_ms = 0: hosts hear of every batch at once.
    Mon m("fold_ms = 0\n");
    Expect want;
    auto flows = traffic(300);
    for (std::size_t start = 0; start < flows.size(); start += 100) { // > 64: two table rounds per batch
        Packets p;
        for (std::size_t i = start; i < std::min(flows.size(), start + 100); ++i) {
            Bytes f = frame(flows[i], i % 40);
            want.add(flows[i], f.size());
            p.add(f);
        }
        std::vector<Bytes> before = p.frames;
        m.host.process(0, p.parse(), p.ports, (1 + start) * kMs);
        for (std::size_t i = 0; i < before.size(); ++i) {
            CHECK_FALSE(p.dropped(i));
            CHECK(p.frames[i] == before[i]);
        }
    }
    MockTable *ft = m.host.table("flows");
    REQUIRE(ft != nullptr);
    CHECK(ft->entries().size() == want.flows.size());
    for (auto &[key, cells] : ft->entries()) {
        REQUIRE(key.size() == 40);
        CHECK(key[37] == 4);
        auto k = std::make_tuple(rd32(key.data()), rd32(key.data() + 16), uint16_t(key[32] | key[33] << 8),
                                 uint16_t(key[34] | key[35] << 8), key[36]);
        REQUIRE(want.flows.count(k));
        FlowVal v;
        std::memcpy(&v, cells[0].data(), sizeof v);
        CHECK(v.packets == want.flows[k].first);
        CHECK(v.bytes == want.flows[k].second);
        CHECK(v.first_ns <= v.last_ns);
        CHECK(v.first_ns >= 1 * kMs);
        CHECK(v.a_packets + v.b_packets == 0); // all folded
    }
    CHECK(m.hosts() == want.hosts);
    CHECK(m.host.bulk_adds > 0);
    CHECK(m.host.counter(0, "packets") == 300);
    CHECK(m.host.counter(0, "flows_new") == want.flows.size());
    CHECK(m.host.counter(0, "host_overflow") == 0);
    uint64_t bytes = 0;
    for (auto &[k, v] : want.flows) {
        bytes += v.second;
    }
    CHECK(m.host.counter(0, "bytes") == bytes);
}

TEST_CASE("mon: two instances' host replicas fold without loss or double counting")
{
    Mon m("merge_ms = 250\nfold_ms = 0\n", 2); // every write folds: hosts hold every count
    // Only instance 0 registers the merge timers: one table-wide (NULL key)
    // timer per EVENTUAL table, whatever the number of hosts.
    CHECK(m.host.timers.size() == 2);
    CHECK(m.host.null_key_timers);
    CHECK(m.host.timers.front().second == 250 * kMs);
    Expect want;
    auto flows = traffic(400);
    for (std::size_t i = 0; i < flows.size(); ++i) {
        Packets p;
        Bytes f = frame(flows[i], 10);
        want.add(flows[i], f.size());
        p.add(f);
        m.host.process(static_cast<uint32_t>(i % 2), p.parse(), p.ports, (i + 1) * kMs);
        if (i % 97 == 0) {
            m.host.merge_all("hosts"); // the timer firing
        }
    }
    CHECK(m.hosts() == want.hosts);
    m.host.merge_all("hosts");
    m.host.merge_all("hosts"); // a second merge with nothing new changes nothing
    CHECK(m.hosts() == want.hosts);
    // After a merge the base alone holds everything.
    std::map<Addr, HostCounts> base;
    for (auto &[key, cells] : m.host.table("hosts")->entries()) {
        Addr a;
        std::memcpy(a.data(), key.data(), 16);
        base[a] = read_counts(cells[0]);
    }
    CHECK(base == want.hosts);
    // Scale-in folds the leaving instance's fresh counts into the survivors.
    Packets p;
    Bytes f = frame(flows[0], 10);
    want.add(flows[0], f.size());
    p.add(f);
    m.host.process(1, p.parse(), p.ports, 1000 * kMs);
    m.host.remove_instance(1);
    CHECK(m.hosts() == want.hosts);
}

TEST_CASE("mon: hosts beyond max_hosts are summed in the overflow row and counted")
{
    Mon m("max_hosts = 8\nfold_ms = 0\n"); // every write folds: hosts hold every count
    std::size_t total = 0;
    for (uint32_t h = 0; h < 12; ++h) {
        Packets p;
        p.add(frame({17, ip4("10.0.0.1") + h, ip4("10.0.0.1") + h, 1, 1})); // src = dst: one host each
        m.host.process(0, p.parse(), p.ports, kMs);
        ++total;
    }
    HostCounts overflow;
    auto hosts = m.hosts(&overflow);
    CHECK(hosts.size() == 8);
    uint64_t tx = 0;
    for (auto &[a, c] : hosts) {
        tx += c.tx_packets;
        CHECK(c.rx_packets == 1);
    }
    CHECK(tx + overflow.tx_packets == total);
    CHECK(overflow.tx_packets == 4);
    CHECK(overflow.rx_packets == 4);
    CHECK(m.host.counter(0, "host_overflow") == 4);
}

TEST_CASE("mon: unparsed and truncated frames are counted and passed")
{
    Mon m;
    Packets p;
    p.add(Bytes(10, 0)); // shorter than Ethernet
    Bytes arp(60, 0);
    arp[12] = 0x08, arp[13] = 0x06;
    p.add(arp); // not IP
    Bytes cut = frame({6, ip4("10.0.0.1"), ip4("10.0.0.2"), 1, 2});
    cut.resize(14 + 20 + 8); // inside TCP
    p.add(cut);
    p.add(frame({17, ip4("10.0.0.1"), ip4("10.0.0.2"), 1, 2})); // fine, then the view lies:
    auto &v = p.parse();
    v[3].len = 14 + 12;
    m.host.process(0, v, p.ports, kMs);
    for (std::size_t i = 0; i < 4; ++i) {
        CHECK_FALSE(p.dropped(i));
    }
    CHECK(m.host.counter(0, "unparsed") == 4);
    CHECK(m.host.counter(0, "packets") == 4);
    CHECK(m.host.table("flows")->entries().empty());
}

TEST_CASE("mon: the flow table full is counted; counting goes on for hosts")
{
    std::string fold;
    SUBCASE("flows written by update_state_bulk_v2") {}
    SUBCASE("flows written by get and put (fold_ms = 0)") { fold = "fold_ms = 0\n"; }
    Mon m("max_flows = 2\n" + fold);
    Packets p;
    for (uint16_t i = 0; i < 5; ++i) {
        p.add(frame({17, ip4("10.0.0.1"), ip4("10.0.0.2"), static_cast<uint16_t>(i + 1), 53}));
    }
    m.host.process(0, p.parse(), p.ports, kMs);
    CHECK(m.host.table("flows")->entries().size() == 2);
    CHECK(m.host.counter(0, "flow_table_full") == 3);
    CHECK(m.counted()[mapped(ip4("10.0.0.1"))].tx_packets == 5);
}

TEST_CASE("mon: a flow write the host refuses is a state error, not a full table; hosts still count")
{
    Mon m; // mon folds every fold_ms, so it uses update_state_bulk_v2
    // A host that refuses every flow round for another reason than room.
    m.host.api().update_state_bulk_v2 = [](serpens_table *, const void *, uint32_t, const uint64_t *, const uint8_t *,
                                           void *, uint64_t *written) {
        *written = 0;
        return SERPENS_ENOTSUP;
    };
    Packets p;
    for (uint16_t i = 0; i < 5; ++i) {
        p.add(frame({17, ip4("10.0.0.1"), ip4("10.0.0.2"), static_cast<uint16_t>(i + 1), 53}));
    }
    m.host.process(0, p.parse(), p.ports, kMs);
    CHECK(m.host.table("flows")->entries().empty());
    CHECK(m.host.counter(0, "flow_table_full") == 0);
    CHECK(m.host.counter(0, "state_errors") == 1); // one round of 5 flows
    CHECK(m.counted()[mapped(ip4("10.0.0.1"))].tx_packets == 5);
}

TEST_CASE("mon: a host replica the host refuses is a state error, not host_overflow")
{
    Mon m("fold_ms = 0\n"); // every write folds: the hosts table is written this batch
    m.host.api().add_state_bulk_v2 = [](serpens_table *, const void *, uint32_t, const uint64_t *, uint64_t *written) {
        *written = 0;
        return SERPENS_EINVAL; // e.g. this instance is no longer active
    };
    Packets p;
    p.add(frame({17, ip4("10.0.0.1"), ip4("10.0.0.2"), 1, 53}));
    m.host.process(0, p.parse(), p.ports, kMs);
    CHECK(m.host.counter(0, "host_overflow") == 0);
    CHECK(m.host.counter(0, "state_errors") >= 1);
}

TEST_CASE("mon: hosts hear of a flow's packets every fold_ms, of a quiet one's by the sweep; none lost, none twice")
{
    Mon m("fold_ms = 10\nmax_flows = 64\n");
    CHECK((m.host.table("flows")->flags() & SERPENS_STATE_NF_EXPIRY) != 0);
    Expect want;
    auto flows = traffic(60);
    auto send = [&](std::size_t from, std::size_t to, uint64_t now) {
        Packets p;
        for (std::size_t i = from; i < to; ++i) {
            Bytes f = frame(flows[i], i % 9);
            want.add(flows[i], f.size());
            p.add(f);
        }
        m.host.process(0, p.parse(), p.ports, now);
    };
    auto pending_packets = [&] {
        uint64_t n = 0;
        for (auto &[k, v] : m.flows()) {
            n += v.a_packets + v.b_packets;
        }
        return n;
    };
    send(0, 60, 1 * kMs); // new flows: everything pending
    REQUIRE(m.flows().size() == want.flows.size());
    CHECK(m.hosts().empty());
    CHECK(pending_packets() == 60);
    CHECK(m.counted() == want.hosts);
    send(0, 60, 5 * kMs); // before fold_ms: still pending
    CHECK(m.hosts().empty());
    CHECK(m.counted() == want.hosts);
    send(0, 30, 12 * kMs); // these flows are due: written, and folded with it
    CHECK(!m.hosts().empty());
    CHECK(pending_packets() > 0);
    CHECK(pending_packets() < 150);
    CHECK(m.counted() == want.hosts);
    send(0, 1, 40 * kMs); // a quiet spell: the sweep folds every flow left
    CHECK(pending_packets() == 0);
    CHECK(m.hosts() == want.hosts);
    for (auto &[k, v] : m.flows()) {
        CHECK(v.owner == 0);
        CHECK(v.folded_ns >= 12 * kMs);
    }
    CHECK(m.host.counter(0, "flows_expired") == 0);
    CHECK(m.host.counter(0, "flows_new") == want.flows.size());
    CHECK(m.host.bulk_updates > 0);
}

TEST_CASE("mon: flows idle for idle_timeout go, their pending counts folded; each instance sweeps only its own")
{
    Mon m("idle_timeout = 1\nfold_ms = 1000\nmax_flows = 64\n", 2);
    Expect want;
    auto send = [&](uint32_t instance, const Flow &f, uint64_t now) {
        Packets p;
        Bytes b = frame(f, 3);
        want.add(f, b.size());
        p.add(b);
        m.host.process(instance, p.parse(), p.ports, now);
    };
    const Flow a{17, ip4("10.0.0.1"), ip4("198.51.100.1"), 1000, 53};
    const Flow b{6, ip4("10.0.0.2"), ip4("198.51.100.2"), 2000, 80};
    const Flow c{17, ip4("10.0.0.3"), ip4("198.51.100.3"), 3000, 53};
    send(0, a, 1 * kMs);
    send(0, a, 2 * kMs);
    send(1, b, 1 * kMs);
    // Instance 1 sweeps 2 s later: a is idle past the timeout but not its flow.
    send(1, c, 2000 * kMs);
    CHECK(m.flows().size() == 2); // a (instance 0's) and c; b went
    CHECK(m.host.counter(1, "flows_expired") == 1);
    CHECK(m.counted() == want.hosts);
    for (auto &[k, v] : m.flows()) {
        CHECK(v.owner == (rd32(k.data()) == ip4("10.0.0.1") ? 0u : 1u));
    }
    // Instance 0's own sweep removes a, folding its two pending packets.
    send(0, c, 2001 * kMs); // c is now instance 0's: the host steered it there
    CHECK(m.flows().size() == 1);
    CHECK(m.host.counter(0, "flows_expired") == 1);
    CHECK(m.hosts()[mapped(ip4("10.0.0.1"))] == want.hosts[mapped(ip4("10.0.0.1"))]);
    CHECK(m.counted() == want.hosts);
    CHECK(m.flows().begin()->second.owner == 0);
    CHECK(m.flows().begin()->second.packets == 2);
}

TEST_CASE("mon: config errors name file:line and fail init")
{
    struct Case {
        const char *config;
        int line;
        const char *what;
    };
    const Case cases[] = {
        {"max_flows = \"many\"\n", 2, "max_flows: expected an integer"},
        {"merge_ms = -1\n", 2, "merge_ms: -1 is out of range"},
        {"max_flows = 10\nmax_hosts = 0\n", 3, "max_hosts: 0 is out of range"},
        {"fold_ms = -5\n", 2, "fold_ms: -5 is out of range"},
        {"idle_timeout = \"1h\"\n", 2, "idle_timeout: expected an integer"},
    };
    for (const Case &c : cases) {
        CAPTURE(c.config);
        MockHost host(mon());
        host.set_config(c.config);
        CHECK(host.init(0) == SERPENS_EINVAL);
        REQUIRE(!host.logs.empty());
        CAPTURE(host.logs.back());
        CHECK(host.logs.back().find(host.config_file() + ":" + std::to_string(c.line) + ":") != std::string::npos);
        CHECK(host.logs.back().find(c.what) != std::string::npos);
    }
}

TEST_CASE("mon: init reads every key its synopsis documents")
{
    Mon m("max_flows = 1024\nmax_hosts = 256\nmerge_ms = 100\nfold_ms = 10\nidle_timeout = 30\n");
    CHECK(serpens::config::unread_keys(m.host.config()).empty());
    Mon typo("max_flow = 1024\n");
    auto unread = serpens::config::unread_keys(typo.host.config());
    REQUIRE(unread.size() == 1);
    CHECK(unread[0].find(":2:1: unknown key 'max_flow'") != std::string::npos);
}
