// The router's table: every bucket of a chain has exactly one owner, buckets
// are spread evenly, both directions of a flow meet one instance, and a
// target is run in place exactly when its instance is on the dispatching lcore.

#include "io/router.h"
#include "net/parse.h"

#include <doctest/doctest.h>

#include <map>
#include <set>
#include <vector>

using namespace serpens;

namespace {

// Fake rings: the table only stores and compares the pointers.
rte_ring *fake_ring(uintptr_t n) { return reinterpret_cast<rte_ring *>(n * 64); }

} // namespace

TEST_CASE("each chain's buckets are spread evenly over its own instances, one owner each")
{
    Wakeup w1, w2;
    // Chain 1 has three instances (one on the dispatching lcore 0), chain 3
    // one, chain 0 and 2 none.
    const std::vector<io::RoutedInstance> instances = {
        {1, 10, 0, fake_ring(1), &w1},
        {3, 11, 2, fake_ring(2), &w2},
        {1, 12, 1, fake_ring(3), &w1},
        {1, 13, 2, fake_ring(4), &w2},
    };
    auto table = io::RouteTable::spread(instances, 0);

    CHECK(table->route(0, 5) == nullptr); // a chain without instances
    CHECK(table->route(2, 5) == nullptr);
    CHECK(table->route(99, 5) == nullptr); // an unknown tag

    std::map<uint32_t, unsigned> buckets_of; // instance -> buckets it owns
    for (uint32_t b = 0; b < io::route_buckets; ++b) {
        const io::RouteTarget *t = table->route(1, b);
        REQUIRE(t != nullptr);
        CHECK((t->instance == 10 || t->instance == 12 || t->instance == 13));
        ++buckets_of[t->instance];
        // A bucket is what the flow hash selects: every hash in it has the same owner.
        CHECK(table->route(1, b + 7 * io::route_buckets) == t);
        CHECK(table->route(1, b | 0xffff0000u) == t);
    }
    REQUIRE(buckets_of.size() == 3);
    for (const auto &[instance, n] : buckets_of) {
        CHECK(n >= io::route_buckets / 3);
        CHECK(n <= io::route_buckets / 3 + 1);
    }
    for (uint32_t b = 0; b < io::route_buckets; ++b) {
        CHECK(table->route(3, b)->instance == 11);
    }
}

TEST_CASE("an instance on the dispatching lcore runs in place; others are reached by their ring")
{
    Wakeup w0, w1;
    const std::vector<io::RoutedInstance> instances = {
        {0, 0, 4, fake_ring(1), &w0},
        {0, 1, 5, fake_ring(2), &w1},
    };
    for (unsigned dispatcher : {4u, 5u, 6u}) {
        auto table = io::RouteTable::spread(instances, dispatcher);
        std::set<uint32_t> seen;
        for (uint32_t b = 0; b < io::route_buckets; ++b) {
            const io::RouteTarget *t = table->route(0, b);
            seen.insert(t->instance);
            const unsigned lcore = t->instance == 0 ? 4 : 5;
            if (lcore == dispatcher) {
                CHECK(t->kind == io::RouteKind::in_place);
                CHECK(t->ring == nullptr);
            } else {
                CHECK(t->kind == io::RouteKind::ring);
                CHECK(t->ring == instances[t->instance].ring);
                CHECK(t->wakeup == instances[t->instance].wakeup);
            }
        }
        CHECK(seen.size() == 2);
    }
}

TEST_CASE("both directions of a flow are routed to the same instance")
{
    Wakeup w;
    std::vector<io::RoutedInstance> instances;
    for (uint32_t i = 0; i < 5; ++i) {
        instances.push_back({0, i, 1, fake_ring(i + 1), &w});
    }
    auto table = io::RouteTable::spread(instances, 0);
    std::set<uint32_t> used;
    for (uint16_t port = 1000; port < 1400; ++port) {
        net::FlowKey key{};
        key.ip_version = 4;
        key.proto = 17;
        key.src = {10, 0, static_cast<uint8_t>(port >> 8), static_cast<uint8_t>(port)};
        key.dst = {192, 168, 0, 1};
        key.src_port = port;
        key.dst_port = 53;
        const io::RouteTarget *forward = table->route(0, key.hash());
        CHECK(table->route(0, key.reversed().hash()) == forward);
        used.insert(forward->instance);
    }
    CHECK(used.size() == 5); // 400 flows reach every one of 5 instances
}

TEST_CASE("a published table replaces the previous one whole")
{
    io::Router router;
    CHECK(router.current() == nullptr);
    Wakeup w0, w1;
    const std::vector<io::RoutedInstance> two = {{1, 0, 1, fake_ring(1), &w0}, {1, 1, 1, fake_ring(2), &w1}};
    router.publish(io::RouteTable::spread(two, 0));
    CHECK(router.current()->route(1, 4)->wakeup == &w0);
    CHECK(router.current()->route(1, 5)->wakeup == &w1);
    const std::vector<io::RoutedInstance> one = {{1, 1, 1, fake_ring(2), &w1}};
    router.publish(io::RouteTable::spread(one, 0)); // dispatcher not running: old table freed at once
    CHECK(router.current()->route(1, 4)->wakeup == &w1);
    CHECK(router.current()->route(1, 5)->wakeup == &w1);
}
