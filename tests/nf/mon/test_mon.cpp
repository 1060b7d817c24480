// mon against the mock host (with the chain's flow table): per-flow counts in
// mon's area of each flow entry and per-host counts match what the test
// counts itself (also in batches larger than mon's 64-packet rounds), both
// directions of a flow in one area with per-endpoint pending counts, replicas
// of two instances fold without loss or double counting, flows fold their
// pending counts into the hosts every fold_ms on write and through the host's
// flow visits (quiet and expiring flows), a full flow table and hosts beyond
// max_hosts are counted and lose nothing, bad config, an old host and
// truncated packets.

#include "mock_host.h"

#include <doctest/doctest.h>

#include <map>
#include <tuple>

using namespace nfmock;
using namespace nfmock::ipv4_frames;

namespace {

const serpens_nf_descriptor *mon() { return load_plugin(NF_PLUGIN); }

constexpr uint64_t kMs = 1000000ull;

// mon's area of a flow entry, as documented at the top of mon.c.
struct Area {
    uint64_t packets, bytes, first_ns, folded_ns;
    uint64_t a_packets, a_bytes, b_packets, b_bytes; // pending: not yet in the hosts' counts
};
static_assert(sizeof(Area) == 64);
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

struct KeyLess {
    bool operator()(const serpens::net::FlowKey &a, const serpens::net::FlowKey &b) const
    {
        return std::memcmp(&a, &b, sizeof a) < 0;
    }
};

struct Mon {
    MockHost host{mon()};
    explicit Mon(const std::string &cfg = "", uint32_t instances = 1, uint64_t flow_capacity = 65536,
                 uint64_t flow_idle_ns = 300'000'000'000ull)
    {
        host.flow_capacity = flow_capacity;
        host.flow_idle_ns = flow_idle_ns;
        host.set_config(cfg);
        for (uint32_t i = 0; i < instances; ++i) {
            REQUIRE(host.init(i) == SERPENS_OK);
        }
    }
    // mon's area of every live flow entry, by the entry's canonical key.
    std::map<serpens::net::FlowKey, Area, KeyLess> flows()
    {
        std::map<serpens::net::FlowKey, Area, KeyLess> out;
        serpens::state::FlowTable *t = host.flows();
        REQUIRE(t != nullptr);
        REQUIRE(t->spec().areas.size() == 1);
        REQUIRE(t->spec().areas[0].size == sizeof(Area));
        const uint32_t off = t->spec().areas[0].offset;
        t->for_each_entry([&](const uint8_t *entry, uint32_t) {
            std::memcpy(&out[serpens::state::FlowTable::entry_key(entry)], entry + off, sizeof(Area));
        });
        return out;
    }
    // What the flows hold for their hosts and have not folded yet.
    std::map<Addr, HostCounts> pending()
    {
        std::map<Addr, HostCounts> out;
        for (auto &[key, v] : flows()) {
            out[host_of(key.src.data(), key.ip_version)] += HostCounts{v.a_packets, v.a_bytes, v.b_packets, v.b_bytes};
            out[host_of(key.dst.data(), key.ip_version)] += HostCounts{v.b_packets, v.b_bytes, v.a_packets, v.a_bytes};
        }
        return out;
    }
    uint64_t pending_packets()
    {
        uint64_t n = 0;
        for (auto &[k, v] : flows()) {
            n += v.a_packets + v.b_packets;
        }
        return n;
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

Flow rev(Flow f)
{
    std::swap(f.src, f.dst);
    std::swap(f.sport, f.dport);
    return f;
}

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
    auto areas = m.flows();
    CHECK(areas.size() == want.flows.size());
    for (auto &[key, v] : areas) {
        CHECK(key.ip_version == 4);
        auto k = std::make_tuple(rd32(key.src.data()), rd32(key.dst.data()), key.src_port, key.dst_port, key.proto);
        REQUIRE(want.flows.count(k));
        CHECK(v.packets == want.flows[k].first);
        CHECK(v.bytes == want.flows[k].second);
        CHECK(v.first_ns >= 1 * kMs);
        CHECK(v.first_ns <= v.folded_ns);
        CHECK(v.a_packets + v.b_packets + v.a_bytes + v.b_bytes == 0); // all folded
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
    CHECK(m.host.counter(0, "flows_new") == 0);
    CHECK(m.host.counter(0, "flow_table_full") == 0);
    for (auto &[k, a] : m.flows()) {
        CHECK(a.packets == 0); // an entry the host made; mon counted nothing in it
    }
    CHECK(m.hosts().empty());
}

TEST_CASE("mon: both directions of a flow count in one area, per endpoint until they fold")
{
    Mon m("fold_ms = 10\n");
    const Flow up{6, ip4("10.0.0.9"), ip4("10.0.0.3"), 40000, 443}; // from endpoint b (the higher address)
    Packets p;
    Bytes f1 = frame(up, 10), f2 = frame(up, 20), f3 = frame(rev(up), 30);
    p.add(f1), p.add(f2), p.add(f3);
    m.host.process(0, p.parse(), p.ports, 1 * kMs);
    auto flows = m.flows();
    REQUIRE(flows.size() == 1);
    const auto &[key, a] = *flows.begin();
    CHECK(rd32(key.src.data()) == ip4("10.0.0.3")); // endpoint a: the lower address
    CHECK(key.src_port == 443);
    CHECK(a.packets == 3);
    CHECK(a.bytes == f1.size() + f2.size() + f3.size());
    CHECK(a.first_ns == 1 * kMs);
    CHECK(a.b_packets == 2);
    CHECK(a.b_bytes == f1.size() + f2.size());
    CHECK(a.a_packets == 1);
    CHECK(a.a_bytes == f3.size());
    CHECK(m.host.counter(0, "flows_new") == 1);
    CHECK(m.hosts().empty()); // before fold_ms
    // The next write after fold_ms folds: the hosts then hold what each sent.
    Packets q;
    Bytes f4 = frame(rev(up), 40);
    q.add(f4);
    m.host.process(0, q.parse(), q.ports, 12 * kMs);
    auto hosts = m.hosts();
    const HostCounts client{2, f1.size() + f2.size(), 2, f3.size() + f4.size()};
    const HostCounts server{2, f3.size() + f4.size(), 2, f1.size() + f2.size()};
    CHECK(hosts[mapped(ip4("10.0.0.9"))] == client);
    CHECK(hosts[mapped(ip4("10.0.0.3"))] == server);
    CHECK(m.pending_packets() == 0);
    CHECK(m.flows().begin()->second.folded_ns == 12 * kMs);
    CHECK(m.flows().begin()->second.packets == 4);
}

TEST_CASE("mon: a full flow table is counted; the hosts still get every packet, none lost")
{
    // A small table: 256 parts of a few slots each refuse most of 4000 flows.
    Mon m("", 1, 16);
    const uint64_t n = 4000;
    uint64_t bytes = 0;
    for (uint64_t start = 0; start < n; start += 500) {
        Packets p;
        for (uint64_t i = start; i < start + 500; ++i) {
            Bytes f = frame({17, ip4("10.0.0.1"), ip4("10.0.0.2"), static_cast<uint16_t>(1 + i), 53}, i % 7);
            bytes += f.size();
            p.add(f);
        }
        m.host.process(0, p.parse(), p.ports, kMs);
    }
    const auto areas = m.flows();
    const uint64_t full = m.host.counter(0, "flow_table_full");
    CHECK(full > 0);
    CHECK(full == n - areas.size());
    CHECK(full == m.host.flows()->totals().refused_full);
    CHECK(m.host.counter(0, "flows_new") == areas.size());
    // Every packet reached the hosts, directly or pending in its flow.
    auto hosts = m.hosts();
    CHECK(hosts[mapped(ip4("10.0.0.1"))].tx_packets == full);
    CHECK(m.counted()[mapped(ip4("10.0.0.1"))] == HostCounts{n, bytes, 0, 0});
    CHECK(m.counted()[mapped(ip4("10.0.0.2"))] == HostCounts{0, 0, n, bytes});
    HostCounts overflow;
    uint64_t tx = 0;
    for (auto &[h, c] : m.hosts(&overflow)) {
        tx += c.tx_packets;
    }
    CHECK(tx + overflow.tx_packets + m.pending_packets() == m.host.counter(0, "packets"));
}

TEST_CASE("mon: a host older than 1.6 is refused in init, saying why")
{
    MockHost host(mon());
    host.set_config("");
    host.api().abi_minor = 5;
    CHECK(host.init(0) == SERPENS_ENOTSUP);
    REQUIRE(!host.logs.empty());
    CHECK(host.logs.back().find("ABI 1.6 or later") != std::string::npos);
    CHECK(host.logs.back().find("this host is 1.5") != std::string::npos);
}

TEST_CASE("mon: a host replica the host refuses is a state error, not host_overflow; the counts stay pending")
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
    CHECK(m.pending_packets() == 1); // not taken: folded again later
    // An expiring flow whose fold is refused stays, so its counts do not go with it.
    CHECK(m.host.expire_flows(1000 * 1'000'000'000ull) == 0);
    CHECK(m.pending_packets() == 1);
    CHECK(m.host.counter(0, "flows_expired") == 0);
}

TEST_CASE("mon: hosts hear of a flow's packets every fold_ms on write, of a quiet one's by a visit; none lost, none "
          "twice")
{
    Mon m("fold_ms = 10\n");
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
    send(0, 60, 1 * kMs); // new flows: everything pending
    REQUIRE(m.flows().size() == want.flows.size());
    CHECK(m.hosts().empty());
    CHECK(m.pending_packets() == 60);
    CHECK(m.counted() == want.hosts);
    send(0, 60, 5 * kMs); // before fold_ms: still pending
    CHECK(m.hosts().empty());
    CHECK(m.counted() == want.hosts);
    m.host.expire_flows(8 * kMs); // a visit before fold_ms folds nothing
    CHECK(m.hosts().empty());
    send(0, 30, 12 * kMs); // these flows are due: written, and folded with it
    CHECK(!m.hosts().empty());
    CHECK(m.pending_packets() > 0);
    CHECK(m.pending_packets() < 150);
    CHECK(m.counted() == want.hosts);
    // A quiet spell: the host's visit folds every flow left, and no flow goes.
    CHECK(m.host.expire_flows(40 * kMs) == 0);
    CHECK(m.pending_packets() == 0);
    CHECK(m.hosts() == want.hosts);
    for (auto &[k, v] : m.flows()) {
        CHECK(v.folded_ns >= 12 * kMs);
    }
    m.host.expire_flows(80 * kMs); // nothing pending: nothing twice
    CHECK(m.hosts() == want.hosts);
    CHECK(m.host.counter(0, "flows_expired") == 0);
    CHECK(m.host.counter(0, "flows_new") == want.flows.size());
    CHECK(m.host.counter(0, "state_errors") == 0);
}

TEST_CASE("mon: a flow idle past the chain's timeout goes, everything it held folded")
{
    const uint64_t second = 1'000'000'000ull;
    Mon m("fold_ms = 1000\n", 1, 65536, 2 * second); // fold_ms: nothing folds on write in this test
    Expect want;
    auto flows = traffic(40);
    Packets p;
    for (std::size_t i = 0; i < flows.size(); ++i) {
        Bytes f = frame(flows[i], i % 5);
        want.add(flows[i], f.size());
        p.add(f);
    }
    m.host.process(0, p.parse(), p.ports, 1 * kMs);
    const std::size_t n = m.flows().size();
    CHECK(m.hosts().empty());
    CHECK(m.host.expire_flows(10 * second) == n);
    CHECK(m.host.flows()->totals().live == 0);
    CHECK(m.host.counter(0, "flows_expired") == n);
    CHECK(m.hosts() == want.hosts);
}

TEST_CASE("mon: config errors name file:line and fail init")
{
    struct Case {
        const char *config;
        int line;
        const char *what;
    };
    const Case cases[] = {
        {"max_hosts = \"many\"\n", 2, "max_hosts: expected an integer"},
        {"merge_ms = -1\n", 2, "merge_ms: -1 is out of range"},
        {"merge_ms = 10\nmax_hosts = 0\n", 3, "max_hosts: 0 is out of range"},
        {"fold_ms = -5\n", 2, "fold_ms: -5 is out of range"},
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

TEST_CASE("mon: init reads every key its synopsis documents, and no longer the flow table's")
{
    Mon m("max_hosts = 256\nmerge_ms = 100\nfold_ms = 10\n");
    CHECK(serpens::config::unread_keys(m.host.config()).empty());
    Mon typo("max_host = 1024\n");
    auto unread = serpens::config::unread_keys(typo.host.config());
    REQUIRE(unread.size() == 1);
    CHECK(unread[0].find(":2:1: unknown key 'max_host'") != std::string::npos);
    // The flow table's size and timeout are the host's now (flow_capacity, flow_idle_s).
    Mon old("max_flows = 1024\nidle_timeout = 30\n");
    CHECK(serpens::config::unread_keys(old.host.config()).size() == 2);
}
