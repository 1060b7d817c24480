// Global/write tables: default split/merge/update, RELEASE pools split across
// concurrent instances, EVENTUAL counters merged, scale-in, timers, NF hooks,
// persistence after the last instance and after a crash.

#include "state_test_util.h"

#include "state/default_hooks.h"

#include <doctest/doctest.h>

#include <atomic>
#include <bit>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

using serpens::monotonic_ns;
using namespace serpens::state;
using namespace serpens::state::test;

namespace {

constexpr uint32_t REL = SERPENS_STATE_GLOBAL | SERPENS_STATE_WRITE | SERPENS_STATE_RELEASE;
constexpr uint32_t EV = SERPENS_STATE_GLOBAL | SERPENS_STATE_WRITE | SERPENS_STATE_EVENTUAL;
constexpr uint32_t n_ports = 65536;
constexpr uint32_t pool_bytes = n_ports / 8;
const char pool_key[8] = "pool";

serpens_state_hook_args args(uint32_t n, uint32_t vs, const void *whole, void *const *parts, void *out)
{
    serpens_state_hook_args a{};
    a.struct_size = sizeof(a);
    a.n = n;
    a.table = "t";
    a.value_size = vs;
    a.whole = whole;
    a.parts = parts;
    a.out = out;
    return a;
}

// Instances 0 and 1 of one nat with a RELEASE table "pool" of 8-byte keys
// and values (64 items per key).
struct TwoInstancePool {
    ScratchDir d;
    StoreOptions o;
    std::unique_ptr<StateStore> store;
    Executor *ex = nullptr;
    std::unique_ptr<FakeInstance> a, b;
    serpens_table *ta = nullptr, *tb = nullptr;
    // Two instances of table `name` (8-byte keys and values), RELEASE
    // unless `flags` says otherwise.
    explicit TwoInstancePool(const std::string &tag, uint32_t flags = REL, const char *name = "pool") : d(tag)
    {
        o.root = d.path;
        store = std::make_unique<StateStore>(o);
        ex = &store->executor("c", "nat");
        a = std::make_unique<FakeInstance>(*ex, 0);
        b = std::make_unique<FakeInstance>(*ex, 1);
        ta = a->create(name, flags, 8, 8, 8);
        tb = b->create(name, flags, 8, 8, 8);
        REQUIRE(ta);
        REQUIRE(tb);
    }
};

uint64_t popcount(const std::vector<uint64_t> &v)
{
    uint64_t n = 0;
    for (uint64_t w : v) {
        n += static_cast<uint64_t>(std::popcount(w));
    }
    return n;
}

} // namespace

TEST_CASE("state-default-hooks: release split deals free items equally and disjointly")
{
    std::vector<uint64_t> whole(4, 0);
    // 100 free items scattered over 256 bits.
    for (int i = 0, n = 0; n < 100; i += 2, ++n) {
        whole[i / 64] |= 1ull << (i % 64);
    }
    whole[3] |= 1ull << 63;
    std::vector<std::vector<uint64_t>> parts(3, std::vector<uint64_t>(4, 0xdead));
    void *pp[3] = {parts[0].data(), parts[1].data(), parts[2].data()};
    auto a = args(3, 32, whole.data(), pp, nullptr);
    REQUIRE(default_release_split(nullptr, &a) == SERPENS_OK);
    CHECK(popcount(parts[0]) == 34);
    CHECK(popcount(parts[1]) == 34);
    CHECK(popcount(parts[2]) == 33);
    for (int w = 0; w < 4; ++w) {
        CHECK((parts[0][w] & parts[1][w]) == 0);
        CHECK((parts[1][w] & parts[2][w]) == 0);
        CHECK((parts[0][w] | parts[1][w] | parts[2][w]) == whole[w]);
    }
    // merge = union; update = merge then split
    std::vector<uint64_t> out(4, 0);
    auto m = args(3, 32, nullptr, pp, out.data());
    REQUIRE(default_release_merge(nullptr, &m) == SERPENS_OK);
    CHECK(out == whole);
    parts[0].assign(4, 0);
    parts[1] = whole; // everything in one part
    parts[2].assign(4, 0);
    auto u = args(3, 32, nullptr, pp, nullptr);
    REQUIRE(default_release_update(nullptr, &u) == SERPENS_OK);
    CHECK(popcount(parts[0]) == 34);
    CHECK(popcount(parts[2]) == 33);
}

TEST_CASE("state-default-hooks: eventual split copies, merge adds every replica's change")
{
    uint64_t g[2] = {100, 7};
    uint64_t r0[2], r1[2], r2[2];
    void *pp[3] = {r0, r1, r2};
    auto s = args(3, 16, g, pp, nullptr);
    REQUIRE(default_eventual_split(nullptr, &s) == SERPENS_OK);
    CHECK(r1[0] == 100);
    r0[0] += 5;
    r1[0] += 10;
    r2[1] += 1;
    uint64_t out[2];
    auto m = args(3, 16, g, pp, out);
    REQUIRE(default_eventual_merge(nullptr, &m) == SERPENS_OK);
    CHECK(out[0] == 115);
    CHECK(out[1] == 8);
}

TEST_CASE("state-release: 4 instances allocate 64k ports concurrently; never twice; all accounted after scale-in")
{
    ScratchDir d("rel");
    StoreOptions o;
    o.root = d.path;
    o.max_instances = 8;
    auto store = std::make_unique<StateStore>(o);
    Executor &ex = store->executor("nat-chain", "nat");
    const serpens_host_api &api = state_api();
    std::vector<std::unique_ptr<FakeInstance>> inst;
    std::vector<serpens_table *> tab;
    for (uint32_t i = 0; i < 4; ++i) {
        inst.push_back(std::make_unique<FakeInstance>(ex, i));
        tab.push_back(inst[i]->create("ports", REL, sizeof(pool_key), pool_bytes, 4));
        REQUIRE(tab[i]);
    }
    // Instance 0's init creates the pool, then splits it.
    std::vector<uint8_t> full(pool_bytes, 0xff), buf(pool_bytes);
    REQUIRE(api.get_state(tab[0], pool_key, buf.data()) == SERPENS_ENOENT);
    REQUIRE(api.put_state(tab[0], pool_key, full.data()) == SERPENS_OK);
    REQUIRE(api.split(tab[0], pool_key) == SERPENS_OK);
    for (uint32_t i = 0; i < 4; ++i) {
        REQUIRE(api.get_state(tab[i], pool_key, buf.data()) == SERPENS_OK);
        CHECK(popcount(std::vector<uint64_t>(reinterpret_cast<uint64_t *>(buf.data()),
                                             reinterpret_cast<uint64_t *>(buf.data()) + pool_bytes / 8)) ==
              n_ports / 4);
    }

    // Handed-out ports, set by whoever allocates; a second set is a double grant.
    std::vector<std::atomic<uint8_t>> owner(n_ports);
    std::atomic<uint64_t> double_grants{0}, triggers{0}, retries{0};
    std::atomic<bool> stop_rebalancer{false};
    std::vector<std::vector<uint32_t>> held(4);

    auto worker = [&](uint32_t id) {
        std::vector<uint8_t> mine(pool_bytes);
        std::mt19937 rng(id);
        uint64_t allocations = 0;
        for (;;) {
            if (api.get_state(tab[id], pool_key, mine.data()) != SERPENS_OK) {
                return;
            }
            auto *w = reinterpret_cast<uint64_t *>(mine.data());
            int port = -1;
            // Start at a random word so instances do not walk in lockstep.
            uint32_t start = rng() % (pool_bytes / 8);
            for (uint32_t j = 0; j < pool_bytes / 8 && port < 0; ++j) {
                uint32_t wi = (start + j) % (pool_bytes / 8);
                if (w[wi] != 0) {
                    int b = std::countr_zero(w[wi]);
                    w[wi] &= ~(1ull << b);
                    port = static_cast<int>(wi * 64 + b);
                }
            }
            if (port < 0) {
                ++triggers;
                int rc = api.trigger(tab[id], pool_key);
                if (rc == SERPENS_ENOSPC) {
                    return; // pool exhausted for this instance
                }
                std::this_thread::yield();
                continue;
            }
            int rc = api.put_state(tab[id], pool_key, mine.data());
            if (rc == err_again) {
                ++retries; // rebalanced under us: read again
                continue;
            }
            REQUIRE(rc == SERPENS_OK);
            // The port is ours only now.
            if (owner[port].exchange(static_cast<uint8_t>(id + 1)) != 0) {
                ++double_grants;
            }
            held[id].push_back(static_cast<uint32_t>(port));
            // Release every 8th port back to our own cell.
            if (++allocations % 8 == 0) {
                uint32_t back = held[id][rng() % held[id].size()];
                for (;;) {
                    REQUIRE(api.get_state(tab[id], pool_key, mine.data()) == SERPENS_OK);
                    owner[back].store(0); // stop using it before it is visible as free
                    mine[back / 8] |= static_cast<uint8_t>(1u << (back % 8));
                    if (api.put_state(tab[id], pool_key, mine.data()) == SERPENS_OK) {
                        break;
                    }
                    owner[back].store(static_cast<uint8_t>(id + 1));
                }
                std::erase(held[id], back);
            }
        }
    };
    std::thread rebalancer([&] {
        while (!stop_rebalancer.load()) {
            auto *t = ex.find("ports");
            ex.update(*t, pool_key);
            store->tick(monotonic_ns());
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    });
    std::vector<std::thread> th;
    for (uint32_t i = 0; i < 4; ++i) {
        th.emplace_back(worker, i);
    }
    for (auto &t : th) {
        t.join();
    }
    stop_rebalancer = true;
    rebalancer.join();

    CHECK(double_grants.load() == 0);
    CHECK(triggers.load() > 0);
    MESSAGE("triggers ", triggers.load(), ", put retries after rebalance ", retries.load());
    uint64_t outstanding = 0;
    for (auto &h : held) {
        outstanding += h.size();
    }

    // Every port is either held by exactly one instance or free in the pool.
    auto account = [&](const char *when) {
        Table *t = ex.find("ports");
        std::vector<uint8_t> g(pool_bytes);
        REQUIRE(ex.read_global(*t, pool_key, g.data()) == SERPENS_OK);
        uint64_t free_n = 0, both = 0, none = 0;
        for (uint32_t p = 0; p < n_ports; ++p) {
            bool f = g[p / 8] & (1u << (p % 8));
            bool h = owner[p].load() != 0;
            free_n += f;
            both += f && h;
            none += !f && !h;
        }
        INFO(when);
        CHECK(both == 0);
        CHECK(none == 0);
        CHECK(free_n + outstanding == n_ports);
    };
    account("after allocation");
    // Instances give back half of what they hold, then scale in one by one.
    for (uint32_t id = 0; id < 4; ++id) {
        std::vector<uint8_t> mine(pool_bytes);
        REQUIRE(api.get_state(tab[id], pool_key, mine.data()) == SERPENS_OK);
        while (held[id].size() > 100) {
            uint32_t p = held[id].back();
            held[id].pop_back();
            owner[p].store(0);
            mine[p / 8] |= static_cast<uint8_t>(1u << (p % 8));
            --outstanding;
        }
        REQUIRE(api.put_state(tab[id], pool_key, mine.data()) == SERPENS_OK);
    }
    account("after returns");
    ex.remove_instance(3);
    account("after removing instance 3");
    CHECK(api.put_state(tab[3], pool_key, full.data()) == SERPENS_EINVAL); // no cell any more
    ex.remove_instance(1);
    account("after removing instance 1");
    ex.remove_instance(0);
    ex.remove_instance(2);
    account("after the last instance left");

    // The state stays in the segment for the next host run.
    tab.clear();
    inst.clear();
    store.reset();
    store = std::make_unique<StateStore>(o);
    Executor &ex2 = store->executor("nat-chain", "nat");
    FakeInstance again(ex2, 5);
    serpens_table *t5 = again.create("ports", REL, sizeof(pool_key), pool_bytes, 4);
    REQUIRE(t5);
    std::vector<uint8_t> mine(pool_bytes);
    REQUIRE(api.get_state(t5, pool_key, mine.data()) == SERPENS_OK);
    uint64_t got = 0;
    for (uint8_t b : mine) {
        got += static_cast<uint64_t>(std::popcount(b));
    }
    CHECK(got == n_ports - outstanding);
}

TEST_CASE("state-eventual: K instances count packets; merged total is exact, also across scale-in and restart")
{
    ScratchDir d("ev");
    StoreOptions o;
    o.root = d.path;
    auto store = std::make_unique<StateStore>(o);
    Executor &ex = store->executor("mon-chain", "mon");
    const serpens_host_api &api = state_api();
    constexpr uint32_t K = 4, hosts = 10;
    struct Stat {
        uint64_t pkts, bytes;
    };
    std::vector<std::unique_ptr<FakeInstance>> inst;
    std::vector<serpens_table *> tab;
    for (uint32_t i = 0; i < K; ++i) {
        inst.push_back(std::make_unique<FakeInstance>(ex, i));
        tab.push_back(inst[i]->create("host-stats", EV, 4, sizeof(Stat), 64));
        REQUIRE(tab[i]);
    }
    Table *t = ex.find("host-stats");
    std::atomic<bool> stop{false};
    std::thread merger([&] {
        while (!stop.load()) {
            for (uint32_t h = 0; h < hosts; ++h) {
                ex.merge(*t, &h);
            }
            store->tick(monotonic_ns());
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
    });
    auto count = [&](uint32_t id, uint64_t packets) {
        for (uint64_t p = 0; p < packets; ++p) {
            uint32_t h = static_cast<uint32_t>((p * 7 + id) % hosts);
            for (;;) {
                Stat s{};
                int rc = api.get_state(tab[id], &h, &s);
                REQUIRE((rc == SERPENS_OK || rc == SERPENS_ENOENT));
                s.pkts += 1;
                s.bytes += 64 + (p % 3);
                rc = api.put_state(tab[id], &h, &s);
                if (rc == SERPENS_OK) {
                    break;
                }
                REQUIRE(rc == err_again);
            }
        }
    };
    auto expect_bytes = [](uint64_t packets) {
        uint64_t b = 0;
        for (uint64_t p = 0; p < packets; ++p) {
            b += 64 + (p % 3);
        }
        return b;
    };
    const uint64_t P1 = 20000, P2 = 5000;
    std::vector<std::thread> th;
    for (uint32_t i = 0; i < K; ++i) {
        th.emplace_back(count, i, P1);
    }
    for (auto &x : th) {
        x.join();
    }
    th.clear();
    // Instance 3 leaves with un-merged counts: they fold into the base.
    ex.remove_instance(K - 1);
    for (uint32_t i = 0; i + 1 < K; ++i) {
        th.emplace_back(count, i, P2);
    }
    for (auto &x : th) {
        x.join();
    }
    stop = true;
    merger.join();
    auto totals = [&]() {
        Stat sum{};
        for (uint32_t h = 0; h < hosts; ++h) {
            Stat s{};
            REQUIRE(ex.read_global(*t, &h, &s) == SERPENS_OK);
            sum.pkts += s.pkts;
            sum.bytes += s.bytes;
        }
        return sum;
    };
    for (uint32_t h = 0; h < hosts; ++h) {
        REQUIRE(ex.merge(*t, &h) == SERPENS_OK);
    }
    Stat s = totals();
    CHECK(s.pkts == K * P1 + (K - 1) * P2);
    CHECK(s.bytes == K * expect_bytes(P1) + (K - 1) * expect_bytes(P2));
    // An instance's view after a merge is the global value.
    Stat v{};
    uint32_t h1 = 1;
    REQUIRE(api.get_state(tab[0], &h1, &v) == SERPENS_OK);
    Stat g{};
    REQUIRE(ex.read_global(*t, &h1, &g) == SERPENS_OK);
    CHECK(v.pkts == g.pkts);

    // Timer-driven merge: count more, let tick() merge.
    REQUIRE(api.timer(tab[0], &h1, 1000) == SERPENS_OK);
    count(1, 7); // 7 packets, some on host 1
    uint64_t before = g.pkts;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    store->tick(monotonic_ns());
    REQUIRE(ex.read_global(*t, &h1, &g) == SERPENS_OK);
    CHECK(g.pkts > before);
    REQUIRE(api.timer(tab[0], &h1, 0) == SERPENS_OK);

    // "Crash": the store goes away without scale-in; un-merged counts live on
    // in the replicas and are folded when the next host attaches.
    count(2, 1000);
    Stat all = totals();
    uint64_t expect_pkts = K * P1 + (K - 1) * P2 + 7 + 1000;
    CHECK(all.pkts < expect_pkts); // some not merged yet
    tab.clear();
    inst.clear();
    store.reset();
    store = std::make_unique<StateStore>(o);
    Executor &ex2 = store->executor("mon-chain", "mon");
    FakeInstance next(ex2, 0);
    REQUIRE(next.create("host-stats", EV, 4, sizeof(Stat), 64));
    Table *t2 = ex2.find("host-stats");
    Stat sum{};
    for (uint32_t h = 0; h < hosts; ++h) {
        Stat x{};
        REQUIRE(ex2.read_global(*t2, &h, &x) == SERPENS_OK);
        sum.pkts += x.pkts;
    }
    CHECK(sum.pkts == expect_pkts);
    // The last instance leaving keeps the totals.
    ex2.remove_instance(0);
    Stat x{};
    REQUIRE(ex2.read_global(*t2, &h1, &x) == SERPENS_OK);
    CHECK(x.pkts > 0);
}

TEST_CASE("state-eventual: add_state_bulk from K instances under a table-wide (NULL key) timer is exact")
{
    ScratchDir d("evadd");
    StoreOptions o;
    o.root = d.path;
    StateStore store(o);
    Executor &ex = store.executor("mon-chain", "mon");
    const serpens_host_api &api = state_api();
    REQUIRE(SERPENS_HOST_HAS(&api, add_state_bulk));
    constexpr uint32_t K = 3, hosts = 200, cap = 150;
    std::vector<std::unique_ptr<FakeInstance>> inst;
    std::vector<serpens_table *> tab;
    for (uint32_t i = 0; i < K; ++i) {
        inst.push_back(std::make_unique<FakeInstance>(ex, i));
        tab.push_back(inst[i]->create("hosts", EV, 16, 16, cap));
        REQUIRE(tab[i]);
    }
    Table *t = ex.find("hosts");
    // One timer for every key, also the ones created after it was set.
    REQUIRE(api.timer(tab[0], nullptr, 1) == SERPENS_OK);
    std::atomic<bool> stop{false};
    std::thread manager([&] {
        while (!stop.load()) {
            store.tick(monotonic_ns());
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
    });
    constexpr uint64_t rounds = 3000;
    std::vector<uint64_t> refused(K, 0);
    auto count = [&](uint32_t id) {
        struct Key {
            uint64_t a, b;
        } keys[64];
        uint64_t rows[64][2];
        for (uint64_t r = 0; r < rounds; ++r) {
            for (uint32_t j = 0; j < 64; ++j) {
                keys[j] = Key{(r * 64 + j * 7 + id) % hosts, 0x5eed};
                rows[j][0] = 1;
                rows[j][1] = 100 + j;
            }
            uint64_t ok = api.add_state_bulk(tab[id], keys, 64, &rows[0][0]);
            refused[id] += 64 - static_cast<uint64_t>(std::popcount(ok));
        }
    };
    std::vector<std::thread> th;
    for (uint32_t i = 0; i < K; ++i) {
        th.emplace_back(count, i);
    }
    for (auto &x : th) {
        x.join();
    }
    stop = true;
    manager.join();
    REQUIRE(ex.merge(*t, nullptr) == SERPENS_OK); // NULL: every key
    uint64_t pkts = 0, refused_all = 0;
    uint64_t live = 0;
    t->for_each_live_slot([&](std::size_t s) {
        uint64_t v[2];
        REQUIRE(ex.read_global(*t, t->slot_key(s), v) == SERPENS_OK);
        pkts += v[0];
        ++live;
    });
    for (uint64_t r : refused) {
        refused_all += r;
    }
    CHECK(live == cap); // the rest found the table full ...
    CHECK(refused_all > 0);
    CHECK(pkts + refused_all == K * rounds * 64); // ... and every row is either counted or refused
    // After the merge each replica shows the global value.
    uint64_t mine[2], global[2];
    const void *k0 = nullptr;
    t->for_each_live_slot([&](std::size_t s) { k0 = k0 ? k0 : t->slot_key(s); });
    REQUIRE(api.get_state(tab[1], k0, mine) == SERPENS_OK);
    REQUIRE(ex.read_global(*t, k0, global) == SERPENS_OK);
    CHECK(mine[0] == global[0]);
    // Wrong table kinds and a removed instance add nothing.
    FakeInstance other(ex, 0);
    serpens_table *flows = other.create("flows", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE, 16, 16, 8);
    uint64_t one[2] = {1, 1};
    CHECK(api.add_state_bulk(flows, k0, 1, one) == 0);
    ex.remove_instance(2);
    CHECK(api.add_state_bulk(tab[2], k0, 1, one) == 0);
    CHECK(api.timer(tab[0], nullptr, 0) == SERPENS_OK);
    CHECK(api.trigger(tab[0], nullptr) == SERPENS_EINVAL);
}

TEST_CASE("state ABI 1.4: the _v2 bulk calls tell a full table from a refused call")
{
    ScratchDir d("bulkv2");
    StoreOptions o;
    o.root = d.path;
    StateStore store(o);
    Executor &ex = store.executor("v2-chain", "nf");
    const serpens_host_api &api = state_api();
    REQUIRE(SERPENS_HOST_HAS(&api, update_state_bulk_v2));
    REQUIRE(SERPENS_HOST_HAS(&api, add_state_bulk_v2));
    FakeInstance a(ex, 0), b(ex, 1);
    serpens_table *flows = a.create("flows", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE, 8, 8, 4);
    serpens_table *hosts = a.create("hosts", EV, 16, 16, 4);
    serpens_table *hosts_b = b.create("hosts", EV, 16, 16, 4);
    REQUIRE(flows);
    REQUIRE(hosts);
    REQUIRE(hosts_b);
    const uint8_t add[1] = {SERPENS_WORD_ADD};
    uint64_t keys[6] = {1, 2, 3, 4, 5, 6}, rows[6] = {1, 1, 1, 1, 1, 1};
    uint64_t written = 99;

    // update: room for every row, then a full table (capacity 4), then refusals.
    CHECK(api.update_state_bulk_v2(flows, keys, 3, rows, add, nullptr, &written) == SERPENS_OK);
    CHECK(written == 0x7);
    CHECK(api.update_state_bulk_v2(flows, keys, 6, rows, add, nullptr, &written) == SERPENS_ENOSPC);
    CHECK(written == 0xf); // keys 1-3 exist, 4 takes the last entry, 5 and 6 find none
    uint64_t v = 0;
    REQUIRE(api.get_state(flows, &keys[0], &v) == SERPENS_OK);
    CHECK(v == 2);
    // The 1.3 call says 0 for a table of another kind, as for a full one; _v2 tells them apart.
    CHECK(api.update_state_bulk(hosts, keys, 1, rows, add, nullptr) == 0);
    CHECK(api.update_state_bulk_v2(hosts, keys, 1, rows, add, nullptr, &written) == SERPENS_ENOTSUP);
    CHECK(written == 0);
    CHECK(api.update_state_bulk_v2(flows, keys, 65, rows, add, nullptr, &written) == SERPENS_EINVAL);
    CHECK(api.update_state_bulk_v2(flows, keys, 1, rows, nullptr, nullptr, &written) == SERPENS_EINVAL);
    CHECK(api.update_state_bulk_v2(flows, keys, 1, rows, add, nullptr, nullptr) == SERPENS_EINVAL);

    // add: the same, on an EVENTUAL table's replica.
    struct Key {
        uint64_t a, b;
    } hk[6] = {{1, 0}, {2, 0}, {3, 0}, {4, 0}, {5, 0}, {6, 0}};
    uint64_t hrows[6][2] = {{1, 10}, {1, 10}, {1, 10}, {1, 10}, {1, 10}, {1, 10}};
    CHECK(api.add_state_bulk_v2(hosts, hk, 3, &hrows[0][0], &written) == SERPENS_OK);
    CHECK(written == 0x7);
    CHECK(api.add_state_bulk_v2(hosts, hk, 6, &hrows[0][0], &written) == SERPENS_ENOSPC);
    CHECK(written == 0xf);
    CHECK(api.add_state_bulk_v2(flows, keys, 1, rows, &written) == SERPENS_ENOTSUP);
    CHECK(written == 0);
    ex.remove_instance(1);
    CHECK(api.add_state_bulk(hosts_b, hk, 1, &hrows[0][0]) == 0);
    CHECK(api.add_state_bulk_v2(hosts_b, hk, 1, &hrows[0][0], &written) == SERPENS_EINVAL);
    CHECK(api.add_state_bulk_v2(hosts, hk, 65, &hrows[0][0], &written) == SERPENS_EINVAL);
}

namespace {
std::atomic<int> g_custom_merges{0};
// An NF whose global value is the maximum seen by any instance.
int max_merge(serpens_nf_ctx *ctx, const serpens_state_hook_args *a)
{
    REQUIRE(ctx != nullptr);
    ++g_custom_merges;
    uint64_t m = *static_cast<const uint64_t *>(a->whole);
    for (uint32_t i = 0; i < a->n; ++i) {
        m = std::max(m, *static_cast<const uint64_t *>(a->parts[i]));
    }
    *static_cast<uint64_t *>(a->out) = m;
    return SERPENS_OK;
}
int failing_update(serpens_nf_ctx *, const serpens_state_hook_args *) { return SERPENS_EINVAL; }
} // namespace

TEST_CASE("state-hooks: NF split/merge/update hooks override the defaults")
{
    ScratchDir d("hooks");
    StoreOptions o;
    o.root = d.path;
    StateStore store(o);
    const serpens_host_api &api = state_api();
    {
        serpens_nf_descriptor desc{};
        desc.merge = &max_merge;
        Executor &ex = store.executor("c", "maxnf");
        FakeInstance a(ex, 0, &desc), b(ex, 1, &desc);
        serpens_table *ta = a.create("peak", EV, 8, 8, 8);
        serpens_table *tb = b.create("peak", EV, 8, 8, 8);
        REQUIRE(ta);
        REQUIRE(tb);
        uint64_t k = 1, v = 30, w = 0;
        REQUIRE(api.put_state(ta, &k, &v) == SERPENS_OK);
        v = 12;
        REQUIRE(api.put_state(tb, &k, &v) == SERPENS_OK);
        REQUIRE(api.merge(ta, &k) == SERPENS_OK);
        REQUIRE(ex.read_global(*ex.find("peak"), &k, &w) == SERPENS_OK);
        CHECK(w == 30);
        CHECK(g_custom_merges.load() >= 1);
    }
    {
        serpens_nf_descriptor desc{};
        desc.update = &failing_update;
        Executor &ex = store.executor("c", "badnf");
        FakeInstance a(ex, 0, &desc);
        serpens_table *ta = a.create("pool", REL, 8, 8, 8);
        REQUIRE(ta);
        uint64_t k = 1, v = 0xff, out = 0;
        REQUIRE(api.put_state(ta, &k, &v) == SERPENS_OK);
        CHECK(api.update(ta, &k) == SERPENS_EINVAL); // hook failure is reported, state unchanged
        REQUIRE(api.get_state(ta, &k, &out) == SERPENS_OK);
        CHECK(out == 0xff);
        uint64_t missing = 9;
        CHECK(api.update(ta, &missing) == SERPENS_ENOENT);
    }
    // Odd value size with the default (uint64) merge is refused at create.
    Executor &ex = store.executor("c", "oddnf");
    FakeInstance a(ex, 0);
    CHECK(a.create("odd", EV, 8, 12, 8) == nullptr);
}

TEST_CASE("state-eventual: a put computed from an absent key lands only on a cell that still holds zero")
{
    TwoInstancePool p("absent", EV, "hits");
    const serpens_host_api &api = state_api();
    serpens_table *ta = p.ta, *tb = p.tb;
    Table *t = p.ex->find("hits");
    auto total = [&](uint64_t key) {
        REQUIRE(p.ex->merge(*t, &key) == SERPENS_OK);
        uint64_t v = 0;
        REQUIRE(p.ex->read_global(*t, &key, &v) == SERPENS_OK);
        return v;
    };
    // Both read the key as absent; b creates it.  a's cell still holds the
    // zero a counted from, so a's put stands.
    uint64_t k = 1, va = 0, vb = 0;
    REQUIRE(api.get_state(ta, &k, &va) == SERPENS_ENOENT);
    REQUIRE(api.get_state(tb, &k, &vb) == SERPENS_ENOENT);
    REQUIRE(api.put_state(tb, &k, &(vb = 1)) == SERPENS_OK);
    CHECK(api.put_state(ta, &k, &(va = 1)) == SERPENS_OK);
    CHECK(total(k) == 2);
    // Again, but a merge copies b's counts into a's cell first: a's put from
    // zero would take its delta below the base.  It is refused; a reads again.
    uint64_t k2 = 2;
    REQUIRE(api.get_state(ta, &k2, &va) == SERPENS_ENOENT);
    REQUIRE(api.get_state(tb, &k2, &vb) == SERPENS_ENOENT);
    REQUIRE(api.put_state(tb, &k2, &(vb = 5)) == SERPENS_OK);
    REQUIRE(total(k2) == 5);
    CHECK(api.put_state(ta, &k2, &(va = 1)) == err_again);
    REQUIRE(api.get_state(ta, &k2, &va) == SERPENS_OK);
    CHECK(va == 5);
    CHECK(api.put_state(ta, &k2, &(va += 1)) == SERPENS_OK);
    CHECK(total(k2) == 6);
}

TEST_CASE("state-release: a stale put after a rebalance is refused, so nothing is granted twice")
{
    ScratchDir d("stale");
    StoreOptions o;
    o.root = d.path;
    StateStore store(o);
    Executor &ex = store.executor("c", "nat");
    const serpens_host_api &api = state_api();
    FakeInstance a(ex, 0), b(ex, 1);
    serpens_table *ta = a.create("pool", REL, 8, 8, 8);
    REQUIRE(ta);
    uint64_t k = 7, all = ~0ull, mine = 0;
    REQUIRE(api.put_state(ta, &k, &all) == SERPENS_OK); // 64 items, all in instance 0's cell
    REQUIRE(api.get_state(ta, &k, &mine) == SERPENS_OK);
    CHECK(mine == ~0ull);
    // Instance 1 joins: the rebalance gives it half of instance 0's items.
    serpens_table *tb = b.create("pool", REL, 8, 8, 8);
    REQUIRE(tb);
    // Instance 0 allocates from its stale copy: refused.
    mine &= ~1ull;
    CHECK(api.put_state(ta, &k, &mine) == err_again);
    REQUIRE(api.get_state(ta, &k, &mine) == SERPENS_OK);
    uint64_t theirs = 0;
    REQUIRE(api.get_state(tb, &k, &theirs) == SERPENS_OK);
    CHECK(std::popcount(mine) == 32);
    CHECK(std::popcount(theirs) == 32);
    CHECK((mine & theirs) == 0);
    CHECK(api.put_state(ta, &k, &mine) == SERPENS_OK);
}

TEST_CASE("state-release: items an instance puts into a cell the state manager emptied are dealt out again")
{
    // The manager marks a cell it empties as known zero and skips reading it
    // later; an owner's put must take that mark away, or its items vanish.
    TwoInstancePool p("zero-hint");
    const serpens_host_api &api = state_api();
    uint64_t k = 7, mine = 0, theirs = 0, zero = 0, one = 1;
    REQUIRE(api.put_state(p.ta, &k, &zero) == SERPENS_OK);
    REQUIRE(api.get_state(p.tb, &k, &theirs) == SERPENS_OK);
    REQUIRE(api.put_state(p.tb, &k, &one) == SERPENS_OK); // the only free item, in instance 1's cell
    // Instance 1 leaves (the manager empties its cell) and comes back: one
    // item for two instances leaves one of the cells empty.
    p.ex->remove_instance(1);
    p.ex->add_instance(1, nullptr);
    REQUIRE(api.get_state(p.ta, &k, &mine) == SERPENS_OK);
    REQUIRE(api.get_state(p.tb, &k, &theirs) == SERPENS_OK);
    REQUIRE(std::popcount(mine) + std::popcount(theirs) == 1);
    // Both give an item back through their own cells.
    REQUIRE(api.put_state(p.ta, &k, &(mine |= 1ull << 10)) == SERPENS_OK);
    REQUIRE(api.put_state(p.tb, &k, &(theirs |= 1ull << 20)) == SERPENS_OK);
    // Instance 1 leaves again: instance 0 holds every item.
    p.ex->remove_instance(1);
    REQUIRE(api.get_state(p.ta, &k, &mine) == SERPENS_OK);
    CHECK(mine == (1ull | 1ull << 10 | 1ull << 20));
}

TEST_CASE("state-trigger: trigger only records a request; the next tick rebalances; a stale put is refused")
{
    TwoInstancePool p("trig");
    StateStore &store = *p.store;
    const serpens_host_api &api = state_api();
    serpens_table *ta = p.ta, *tb = p.tb;
    uint64_t k = 7, all = ~0ull, mine = 0, theirs = 0;
    REQUIRE(api.put_state(ta, &k, &all) == SERPENS_OK); // every item in instance 0's cell
    REQUIRE(api.get_state(ta, &k, &mine) == SERPENS_OK);
    REQUIRE(api.get_state(tb, &k, &theirs) == SERPENS_OK);
    REQUIRE(theirs == 0);
    uint64_t missing = 9;
    CHECK(api.trigger(tb, &missing) == SERPENS_ENOENT);
    CHECK(api.trigger(tb, &k) == SERPENS_OK);
    // Nothing moved on the caller's thread.
    REQUIRE(api.get_state(tb, &k, &theirs) == SERPENS_OK);
    CHECK(theirs == 0);
    uint64_t again = 0;
    REQUIRE(api.get_state(ta, &k, &again) == SERPENS_OK);
    CHECK(again == ~0ull);
    // The state manager's tick (host.cpp's thread every 5 ms) does it.
    store.tick(monotonic_ns());
    REQUIRE(api.get_state(tb, &k, &theirs) == SERPENS_OK);
    CHECK(std::popcount(theirs) == 32);
    mine &= ~1ull; // instance 0 allocates from its copy read before the rebalance
    CHECK(api.put_state(ta, &k, &mine) == err_again);
    REQUIRE(api.get_state(ta, &k, &mine) == SERPENS_OK);
    CHECK(std::popcount(mine) == 32);
    CHECK((mine & theirs) == 0);
    // Pool exhausted: both hand everything out.
    uint64_t zero = 0;
    REQUIRE(api.put_state(ta, &k, &zero) == SERPENS_OK);
    REQUIRE(api.put_state(tb, &k, &zero) == SERPENS_OK);
    CHECK(api.trigger(tb, &k) == SERPENS_OK); // the last rebalance had given it items
    store.tick(monotonic_ns());
    CHECK(api.trigger(tb, &k) == SERPENS_ENOSPC); // this one found nothing
    // An item comes back: the request recorded with ENOSPC is still served.
    uint64_t one = 1;
    REQUIRE(api.get_state(ta, &k, &mine) == SERPENS_OK);
    REQUIRE(api.put_state(ta, &k, &one) == SERPENS_OK);
    store.tick(monotonic_ns());
    REQUIRE(api.get_state(ta, &k, &mine) == SERPENS_OK);
    REQUIRE(api.get_state(tb, &k, &theirs) == SERPENS_OK);
    CHECK(std::popcount(mine | theirs) == 1);
    CHECK(api.trigger(tb, &k) == (theirs == 0 ? SERPENS_ENOSPC : SERPENS_OK));
}

namespace {
// A split hook that records who called it and can be held inside (so the
// executor's lock stays taken), then splits as the default does.
std::mutex g_hook_mu;
std::vector<std::thread::id> g_hook_threads;
std::vector<serpens_nf_ctx> g_hook_ctxs;
std::vector<const serpens_nf_ctx *> g_hook_ctx_ptrs;
std::atomic<bool> g_hold{false}, g_in_hook{false};

int held_split(serpens_nf_ctx *ctx, const serpens_state_hook_args *a)
{
    {
        std::lock_guard lk(g_hook_mu);
        g_hook_threads.push_back(std::this_thread::get_id());
        g_hook_ctxs.push_back(*ctx);
        g_hook_ctx_ptrs.push_back(ctx);
    }
    g_in_hook = true;
    while (g_hold.load()) {
        std::this_thread::yield();
    }
    g_in_hook = false;
    return default_release_split(ctx, a);
}

std::size_t hook_calls()
{
    std::lock_guard lk(g_hook_mu);
    return g_hook_threads.size();
}
} // namespace

TEST_CASE("state-trigger: trigger never waits for the state manager; hooks run on it with their own ctx")
{
    ScratchDir d("trighold");
    StoreOptions o;
    o.root = d.path;
    StateStore store(o);
    const serpens_host_api &api = state_api();
    serpens_nf_descriptor desc{};
    desc.split = &held_split;
    Executor &ex = store.executor("c", "holdnf");
    FakeInstance a(ex, 0, &desc), b(ex, 1, &desc);
    int a_priv = 0, b_priv = 0;
    a.ctx()->priv = &a_priv;
    b.ctx()->priv = &b_priv;
    serpens_table *ta = a.create("pool", REL, 8, 8, 8);
    serpens_table *tb = b.create("pool", REL, 8, 8, 8);
    REQUIRE(ta);
    REQUIRE(tb);
    uint64_t k = 3, all = ~0ull, theirs = 0;
    REQUIRE(api.put_state(ta, &k, &all) == SERPENS_OK);
    {
        std::lock_guard lk(g_hook_mu);
        g_hook_threads.clear();
        g_hook_ctxs.clear();
        g_hook_ctx_ptrs.clear();
    }
    // With the executor idle, a trigger still runs no hook on the worker.
    CHECK(api.trigger(tb, &k) == SERPENS_OK);
    CHECK(hook_calls() == 0);

    // The state manager's tick takes the executor's lock and is held inside
    // the hook; a worker's triggers meanwhile all return at once.
    g_hold = true;
    std::thread::id mgr_id;
    std::thread mgr([&] {
        mgr_id = std::this_thread::get_id();
        store.tick(monotonic_ns());
    });
    const uint64_t wait_until = monotonic_ns() + 10'000'000'000ull;
    while (!g_in_hook.load() && monotonic_ns() < wait_until) {
        std::this_thread::yield();
    }
    REQUIRE(g_in_hook.load());
    const uint64_t t0 = monotonic_ns();
    int not_ok = 0;
    for (int i = 0; i < 100000; ++i) {
        not_ok += api.trigger(ta, &k) != SERPENS_OK;
    }
    const uint64_t elapsed = monotonic_ns() - t0;
    CHECK(g_in_hook.load()); // the lock was held throughout
    g_hold = false;
    mgr.join();
    CHECK(not_ok == 0);
    CHECK(elapsed < 2'000'000'000ull);
    MESSAGE("100000 triggers while the state manager held the executor: ", elapsed / 1000, " us");

    // That tick served instance 1's trigger, on the state manager's thread.
    REQUIRE(api.get_state(tb, &k, &theirs) == SERPENS_OK);
    CHECK(std::popcount(theirs) == 32);
    REQUIRE(hook_calls() == 1);
    // The next tick serves the 100000 triggers recorded meanwhile with one rebalance.
    store.tick(monotonic_ns());
    CHECK(hook_calls() == 2);
    store.tick(monotonic_ns());
    CHECK(hook_calls() == 2);

    std::lock_guard lk(g_hook_mu);
    for (std::size_t i = 0; i < g_hook_threads.size(); ++i) {
        CHECK(g_hook_ctx_ptrs[i] != a.ctx());
        CHECK(g_hook_ctx_ptrs[i] != b.ctx());
        CHECK(g_hook_ctx_ptrs[i] == &ex.hook_context());
        CHECK(g_hook_ctxs[i].instance_id == SERPENS_INSTANCE_STATE_MANAGER);
        CHECK(g_hook_ctxs[i].priv == nullptr);
        CHECK(g_hook_ctxs[i].host == &api);
        CHECK(std::string(g_hook_ctxs[i].nf_name) == "holdnf");
    }
    CHECK(g_hook_threads[0] == mgr_id); // the tick's thread, not the trigger's
}
