// noop against the mock host: without flow_state it keeps no state; "count"
// keeps each flow's packet count exactly, in the chain's flow table on a 1.5
// host and in a table of its own on an older one (also over batches larger
// than its 64-key rounds); "lookup" inserts each flow once; a full table is
// counted, packets always pass unchanged; bad config is refused with the key
// named.

#include "mock_host.h"

#include <doctest/doctest.h>

#include <map>

using namespace nfmock;
using namespace nfmock::ipv4_frames;

namespace {

const serpens_nf_descriptor *noop() { return load_plugin(NF_PLUGIN); }

// 150 packets over 40 TCP/UDP flows, both directions (one flow hash each).
std::vector<Flow> traffic()
{
    std::vector<Flow> out;
    for (uint16_t i = 0; i < 150; ++i) {
        Flow f{static_cast<uint8_t>(i % 2 ? 6 : 17), ip4("10.0.0.1") + i % 8u, ip4("198.51.100.7"),
               static_cast<uint16_t>(2000 + i % 5), 443};
        if (i % 3 == 0) {
            std::swap(f.src, f.dst), std::swap(f.sport, f.dport);
        }
        out.push_back(f);
    }
    return out;
}

Bytes hash_key(uint32_t flow_hash)
{
    Bytes k(8, 0);
    std::memcpy(k.data(), &flow_hash, 4);
    return k;
}

// A host of ABI 1.4: no chain flow table, so noop keeps a table of its own.
MockHost &as_1_4_host(MockHost &host)
{
    host.api().flow_state = nullptr;
    return host;
}

// Runs the traffic in one batch; returns the packets each flow hash sent.
std::map<Bytes, uint64_t> run(MockHost &host)
{
    Packets p;
    for (const Flow &f : traffic()) {
        p.add(frame(f, 12));
    }
    const std::vector<Bytes> before = p.frames;
    auto &views = p.parse();
    std::map<Bytes, uint64_t> sent;
    for (const serpens_pkt &v : views) {
        ++sent[hash_key(v.flow_hash)];
    }
    host.process(0, views, p.ports, 1000);
    for (std::size_t i = 0; i < before.size(); ++i) {
        CHECK_FALSE(p.dropped(i));
        CHECK(p.frames[i] == before[i]);
    }
    return sent;
}

uint64_t value_of(const std::vector<Bytes> &cells)
{
    REQUIRE(cells.at(0).size() == 8);
    uint64_t v;
    std::memcpy(&v, cells[0].data(), 8);
    return v;
}

} // namespace

TEST_CASE("noop: by default it keeps no state and passes every packet unchanged")
{
    MockHost host(noop());
    REQUIRE(host.init(0) == SERPENS_OK);
    run(host);
    CHECK(host.table("flows") == nullptr);
    CHECK_FALSE(host.has_counter(0, "table_full"));
}

TEST_CASE("noop on a 1.4 host: flow_state = \"count\" keeps each flow's packet count in its table")
{
    MockHost host(noop());
    as_1_4_host(host);
    host.set_config("flow_state = \"count\"\n");
    REQUIRE(host.init(0) == SERPENS_OK);
    std::map<Bytes, uint64_t> want = run(host);
    REQUIRE(want.size() > 10);
    for (auto &[k, n] : run(host)) { // a second batch adds to the same entries
        want[k] += n;
    }
    MockTable *t = host.table("flows");
    REQUIRE(t != nullptr);
    CHECK(t->entries().size() == want.size());
    for (auto &[key, cells] : t->entries()) {
        REQUIRE(want.count(key));
        CHECK(value_of(cells) == want[key]);
    }
    CHECK(host.counter(0, "table_full") == 0);
    CHECK(host.bulk_updates == 2 * 3); // 150 packets: rounds of 64, 64 and 22 per batch
}

TEST_CASE("noop on a 1.4 host: flow_state = \"lookup\" inserts each flow once and finds it after")
{
    MockHost host(noop());
    as_1_4_host(host);
    host.set_config("flow_state = \"lookup\"\n");
    REQUIRE(host.init(0) == SERPENS_OK);
    const std::map<Bytes, uint64_t> flows = run(host);
    MockTable *t = host.table("flows");
    REQUIRE(t != nullptr);
    CHECK(t->entries().size() == flows.size());
    for (auto &[key, cells] : t->entries()) {
        CHECK(flows.count(key) == 1);
        CHECK(value_of(cells) == 0);
    }
    const uint64_t bulk_before = host.bulk_lookups;
    run(host);
    CHECK(host.bulk_lookups > bulk_before);
    CHECK(t->entries().size() == flows.size());
}

TEST_CASE("noop on a 1.4 host: a full flow table is counted, and its packets still pass")
{
    const char *mode = "count";
    SUBCASE("count") {}
    SUBCASE("lookup") { mode = "lookup"; }
    MockHost host(noop());
    as_1_4_host(host);
    host.set_config(std::string("flow_state = \"") + mode + "\"\nmax_flows = 16\n");
    REQUIRE(host.init(0) == SERPENS_OK);
    const std::map<Bytes, uint64_t> flows = run(host);
    REQUIRE(flows.size() > 16);
    CHECK(host.table("flows")->entries().size() == 16);
    // Every packet of a flow left out is counted: in lookup mode each one
    // misses and its insert is refused again.
    uint64_t refused = 0;
    for (auto &[key, n] : flows) {
        if (!host.table("flows")->entries().count(key)) {
            refused += n;
        }
    }
    CHECK(refused > 0);
    CHECK(host.counter(0, "table_full") == refused);
}

TEST_CASE("noop: a write the host refuses is a state error, not a full table")
{
    MockHost host(noop());
    as_1_4_host(host);
    host.set_config("flow_state = \"count\"\n");
    REQUIRE(host.init(0) == SERPENS_OK);
    // A host that refuses every round for another reason than room (as the
    // 1.3 call did, it returns no rows written).
    host.api().update_state_bulk_v2 = [](serpens_table *, const void *, uint32_t, const uint64_t *, const uint8_t *,
                                         void *, uint64_t *written) {
        *written = 0;
        return SERPENS_ENOTSUP;
    };
    run(host); // packets still pass unchanged
    CHECK(host.counter(0, "table_full") == 0);
    CHECK(host.counter(0, "state_errors") == 3); // rounds of 64, 64 and 22
}

TEST_CASE("noop: flow_state keeps 8 bytes of the chain's flow entry: a count per flow, both directions")
{
    const char *mode = "count";
    SUBCASE("count") {}
    SUBCASE("lookup") { mode = "lookup"; }
    MockHost host(noop());
    host.set_config(std::string("flow_state = \"") + mode + "\"\n");
    REQUIRE(host.init(0) == SERPENS_OK);
    REQUIRE(host.flows() != nullptr);
    std::map<Bytes, uint64_t> want = run(host);
    for (auto &[k, n] : run(host)) {
        want[k] += n;
    }
    CHECK(host.table("flows") == nullptr); // nothing of its own
    CHECK(host.flows()->totals().live == want.size());
    Packets p;
    for (const Flow &f : traffic()) {
        p.add(frame(f, 12));
    }
    for (const serpens_pkt &v : p.parse()) {
        auto *count = static_cast<uint64_t *>(host.flow_area(v));
        REQUIRE(count != nullptr);
        CHECK(*count == (std::string(mode) == "count" ? want[hash_key(v.flow_hash)] : 0));
    }
    CHECK(host.counter(0, "table_full") == 0);
    CHECK(host.bulk_updates == 0);
    CHECK(host.bulk_lookups == 0);
}

TEST_CASE("noop: bad configuration is refused, naming the key")
{
    const char *cfg = nullptr;
    const char *key = "flow_state"; // the key the error names
    SUBCASE("an unknown mode") { cfg = "flow_state = \"sometimes\"\n"; }
    SUBCASE("a mode that is not a string") { cfg = "flow_state = 1\n"; }
    SUBCASE("max_flows out of range")
    {
        cfg = "flow_state = \"count\"\nmax_flows = 2\n";
        key = "max_flows";
    }
    MockHost host(noop());
    host.set_config(cfg);
    CHECK(host.init(0) == SERPENS_EINVAL);
    REQUIRE_FALSE(host.logs.empty());
    CHECK(host.logs.back().find(key) != std::string::npos);
}

TEST_CASE("noop: init reads every key its synopsis documents")
{
    MockHost host(noop());
    host.set_config("flow_state = \"lookup\"\nmax_flows = 1024\n");
    REQUIRE(host.init(0) == SERPENS_OK);
    CHECK(serpens::config::unread_keys(host.config()).empty());
}
