// The router's table: every bucket of a chain has exactly one owner, buckets
// are spread evenly, both directions of a flow meet one instance, and a
// target is run in place exactly when its instance is on the dispatching lcore.

#include "core/error.h"
#include "io/router.h"
#include "net/parse.h"

#include <doctest/doctest.h>

#include <algorithm>
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
    // The dispatcher routes a burst of a chain with one owner without a
    // lookup per packet: only such a chain names a sole target.
    REQUIRE(table->sole(3) != nullptr);
    CHECK(table->sole(3)->instance == 11);
    CHECK(table->sole(1) == nullptr);
    CHECK(table->sole(0) == nullptr);
    CHECK(table->sole(99) == nullptr);

    // A burst whose flows all have one owner needs no route per packet
    // either, even in a chain with several; one more owner, and it does.
    std::vector<uint32_t> one_owner, two_owners;
    const io::RouteTarget *owner = table->route(1, 0);
    for (uint32_t b = 0; b < io::route_buckets; ++b) {
        const uint32_t hash = b | 0x5a5a0000u;
        if (table->route(1, b) == owner) {
            one_owner.push_back(hash);
        } else if (two_owners.empty()) {
            two_owners.push_back(hash);
        }
    }
    REQUIRE(one_owner.size() > 1);
    CHECK(table->sole(1, one_owner.data(), static_cast<uint32_t>(one_owner.size())) == owner);
    two_owners.insert(two_owners.begin(), one_owner.begin(), one_owner.end());
    CHECK(table->sole(1, two_owners.data(), static_cast<uint32_t>(two_owners.size())) == nullptr);
    two_owners.push_back(one_owner.front()); // the other owner's flow in the middle
    std::rotate(two_owners.begin(), two_owners.begin() + 1, two_owners.end());
    CHECK(table->sole(1, two_owners.data(), static_cast<uint32_t>(two_owners.size())) == nullptr);
    CHECK(table->sole(1, one_owner.data(), 0) == nullptr);
    // A chain with a sole target has it for any burst; one without instances none.
    CHECK(table->sole(3, two_owners.data(), static_cast<uint32_t>(two_owners.size()))->instance == 11);
    CHECK(table->sole(0, one_owner.data(), static_cast<uint32_t>(one_owner.size())) == nullptr);
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
            CHECK(t->kind == (lcore == dispatcher ? io::RouteKind::in_place : io::RouteKind::ring));
            // The ring is there in place too: the handover queues into it.
            CHECK(t->ring == instances[t->instance].ring);
            CHECK(t->wakeup == instances[t->instance].wakeup);
            REQUIRE(t->gate != nullptr); // a gate that is always open
            CHECK(!t->gate->held.load());
            CHECK(!t->wake_on_arrival);
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

TEST_CASE("a published table replaces the previous one whole, and the previous one is handed back")
{
    io::Router router;
    CHECK(router.current() == nullptr);
    Wakeup w0, w1;
    const std::vector<io::RoutedInstance> two = {{1, 0, 1, fake_ring(1), &w0}, {1, 1, 1, fake_ring(2), &w1}};
    CHECK(router.exchange(io::RouteTable::spread(two, 0)) == nullptr);
    const io::RouteTable *first = router.current();
    CHECK(first->route(1, 4)->wakeup == &w0);
    CHECK(first->route(1, 5)->wakeup == &w1);
    const std::vector<io::RoutedInstance> one = {{1, 1, 1, fake_ring(2), &w1}};
    std::unique_ptr<const io::RouteTable> old = router.exchange(io::RouteTable::spread(one, 0));
    CHECK(old.get() == first); // the caller frees it after its grace period
    CHECK(router.current()->route(1, 4)->wakeup == &w1);
    CHECK(router.current()->route(1, 5)->wakeup == &w1);
}

namespace {

std::map<uint32_t, unsigned> holdings(const io::BucketOwners &owners)
{
    std::map<uint32_t, unsigned> n;
    for (uint32_t owner : owners) {
        ++n[owner];
    }
    return n;
}

unsigned moved(const io::BucketOwners &a, const io::BucketOwners &b)
{
    unsigned n = 0;
    for (uint32_t i = 0; i < io::route_buckets; ++i) {
        n += a[i] != b[i];
    }
    return n;
}

} // namespace

TEST_CASE("rebalancing keeps every bucket owned, shares even, and moves only what it must")
{
    const std::vector<uint32_t> one = {7};
    const std::vector<uint32_t> two = {7, 9};
    const std::vector<uint32_t> three = {7, 9, 4};
    io::BucketOwners owners = io::rebalance_buckets({}, one);
    REQUIRE(owners.size() == io::route_buckets);
    CHECK(holdings(owners) == std::map<uint32_t, unsigned>{{7, 256}});

    // 1 -> 2: the newcomer gets half, nothing else moves.
    io::BucketOwners next = io::rebalance_buckets(owners, two);
    CHECK(holdings(next) == std::map<uint32_t, unsigned>{{7, 128}, {9, 128}});
    CHECK(moved(owners, next) == 128);
    owners = next;

    // 2 -> 3: each gives a third of its share; 256 = 86 + 85 + 85.
    next = io::rebalance_buckets(owners, three);
    auto held = holdings(next);
    REQUIRE(held.size() == 3);
    for (const auto &[owner, n] : held) {
        CHECK(n >= 85);
        CHECK(n <= 86);
    }
    CHECK(moved(owners, next) == held[4]);
    owners = next;

    // 3 -> 2 (instance 9 leaves): only its buckets move.
    const std::vector<uint32_t> stay = {7, 4};
    next = io::rebalance_buckets(owners, stay);
    CHECK(holdings(next) == std::map<uint32_t, unsigned>{{7, 128}, {4, 128}});
    for (uint32_t b = 0; b < io::route_buckets; ++b) {
        if (owners[b] != 9) {
            CHECK(next[b] == owners[b]);
        }
    }
    CHECK(io::rebalance_buckets(next, std::vector<uint32_t>{}).empty()); // no member: no owner
}

TEST_CASE("with an affinity, buckets go to instances on the lcore that receives them, for no more moves")
{
    // Two receiving lcores, each bucket arriving on lcore b mod 2 (a NIC's
    // RSS table following the buckets over two queues).
    std::vector<unsigned> homes(io::route_buckets);
    for (uint32_t b = 0; b < io::route_buckets; ++b) {
        homes[b] = b % 2 == 0 ? 4 : 6;
    }
    auto at_home = [&](const io::BucketOwners &owners, const std::map<uint32_t, unsigned> &lcore_of) {
        unsigned n = 0;
        for (uint32_t b = 0; b < io::route_buckets; ++b) {
            n += lcore_of.at(owners[b]) == homes[b] ? 1 : 0;
        }
        return n;
    };
    const std::map<uint32_t, unsigned> lcore_of = {{7, 4}, {9, 6}, {5, 4}};

    // Started on both lcores: every bucket on its home, halves even.  The
    // members' order does not matter.
    const std::vector<uint32_t> two = {9, 7};
    const std::vector<unsigned> two_lcores = {6, 4};
    io::BucketOwners owners = io::spread_buckets(two, {homes, two_lcores});
    CHECK(holdings(owners) == std::map<uint32_t, unsigned>{{7, 128}, {9, 128}});
    CHECK(at_home(owners, lcore_of) == io::route_buckets);

    // 1 -> 2: the newcomer on the other lcore takes exactly that lcore's
    // buckets, as many moves as without an affinity.
    const std::vector<uint32_t> one = {7};
    const std::vector<unsigned> one_lcore = {4};
    owners = io::spread_buckets(one, {homes, one_lcore});
    const std::vector<uint32_t> seven_nine = {7, 9};
    const std::vector<unsigned> seven_nine_lcores = {4, 6};
    io::BucketOwners next = io::rebalance_buckets(owners, seven_nine, {homes, seven_nine_lcores});
    CHECK(moved(owners, next) == moved(owners, io::rebalance_buckets(owners, seven_nine)));
    CHECK(at_home(next, lcore_of) == io::route_buckets);
    CHECK(at_home(io::rebalance_buckets(owners, seven_nine), lcore_of) == io::route_buckets / 2); // blind: half

    // 2 -> 3 with the third on lcore 4: counts within one, the same moves
    // as without an affinity, and the new one takes lcore 4's buckets first
    // (7 gives up 43 of lcore 4's, 9 gives up 42 of lcore 6's).
    const std::vector<uint32_t> three = {7, 9, 5};
    const std::vector<unsigned> three_lcores = {4, 6, 4};
    io::BucketOwners third = io::rebalance_buckets(next, three, {homes, three_lcores});
    auto held = holdings(third);
    for (const auto &[member, n] : held) {
        CHECK(n >= 85);
        CHECK(n <= 86);
    }
    CHECK(moved(next, third) == moved(next, io::rebalance_buckets(next, three)));
    CHECK(at_home(third, lcore_of) >= io::route_buckets - 43);

    // An affinity that does not fit the members is ignored, not trusted.
    const std::vector<unsigned> wrong = {4};
    CHECK(io::spread_buckets(two, {homes, wrong}) == io::spread_buckets(two));
}

TEST_CASE("a table built from owners routes each bucket to its owner and marks parked instances")
{
    Wakeup w;
    io::InstanceGate gate;
    const std::vector<io::RoutedInstance> instances = {
        {0, 3, 1, fake_ring(1), &w, &gate, true},
        {2, 8, 0, fake_ring(2), &w, nullptr, false},
    };
    std::vector<io::BucketOwners> owners(3);
    owners[0] = io::spread_buckets(std::vector<uint32_t>{3});
    owners[2] = io::spread_buckets(std::vector<uint32_t>{8});
    auto table = io::RouteTable::build(instances, owners, 0);
    CHECK(table->route(1, 0) == nullptr);
    for (uint32_t b = 0; b < io::route_buckets; ++b) {
        const io::RouteTarget *parked = table->route(0, b);
        CHECK(parked->instance == 3);
        CHECK(parked->wake_on_arrival);
        CHECK(parked->gate == &gate);
        CHECK(parked->kind == io::RouteKind::ring);
        CHECK(table->route(2, b)->kind == io::RouteKind::in_place);
    }
    REQUIRE(table->sole(0) != nullptr);
    CHECK(table->sole(0)->instance == 3);
    // Two instances of a chain, one of them with every bucket (the other
    // idle, about to leave): that one is the sole target.
    const std::vector<io::RoutedInstance> pair = {
        {0, 3, 1, fake_ring(1), &w, nullptr, false},
        {0, 4, 0, fake_ring(2), &w, nullptr, false},
    };
    std::vector<io::BucketOwners> one_owner = {io::spread_buckets(std::vector<uint32_t>{4})};
    auto lopsided = io::RouteTable::build(pair, one_owner, 0);
    REQUIRE(lopsided->sole(0) != nullptr);
    CHECK(lopsided->sole(0)->instance == 4);
    one_owner[0][7] = 3; // one bucket moves: each packet is routed again
    CHECK(io::RouteTable::build(pair, one_owner, 0)->sole(0) == nullptr);
    owners[1] = io::spread_buckets(std::vector<uint32_t>{42}); // not an instance given
    CHECK_THROWS_AS(io::RouteTable::build(instances, owners, 0), Error);
}
