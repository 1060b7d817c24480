// Moving global/write state between hosts: lease_out/take_back of RELEASE
// pools, apply_delta of EVENTUAL counters, adopt/surrender, and the LeaseBook
// that records granted leases and merged replicas across restarts.

#include "state_test_util.h"

#include "core/error.h"
#include "state/default_hooks.h"
#include "state/lease_book.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <fstream>
#include <span>
#include <string>
#include <thread>
#include <vector>

using namespace serpens::state;
using namespace serpens::state::test;

namespace {

constexpr uint32_t REL = SERPENS_STATE_GLOBAL | SERPENS_STATE_WRITE | SERPENS_STATE_RELEASE;
constexpr uint32_t EV = SERPENS_STATE_GLOBAL | SERPENS_STATE_WRITE | SERPENS_STATE_EVENTUAL;
constexpr uint32_t pool_words = 8; // 512 items
constexpr uint32_t pool_bytes = pool_words * 8;
using Pool = std::vector<uint64_t>;

Pool full_pool() { return Pool(pool_words, ~0ull); }

Pool from_bytes(const std::vector<uint8_t> &b)
{
    REQUIRE(b.size() == pool_bytes);
    Pool p(pool_words);
    std::memcpy(p.data(), b.data(), pool_bytes);
    return p;
}

std::span<const uint8_t> bytes_of(const Pool &p) { return {reinterpret_cast<const uint8_t *>(p.data()), pool_bytes}; }

uint64_t popcount(const Pool &p)
{
    uint64_t n = 0;
    for (uint64_t w : p) {
        n += static_cast<uint64_t>(std::popcount(w));
    }
    return n;
}

// Every cell of key k (base first) as the state manager sees them.
std::vector<Pool> cells_of(Table &t, uint64_t k)
{
    std::vector<Pool> v(t.cells(), Pool(pool_words));
    for (uint32_t c = 0; c < t.cells(); ++c) {
        REQUIRE(t.cell_get(&k, c, v[c].data(), nullptr) == SERPENS_OK);
    }
    return v;
}

// No item in two places among the cells and `extra`, and together they are `expect`.
void check_partition(Table &t, uint64_t k, const std::vector<Pool> &extra, const Pool &expect)
{
    std::vector<Pool> all = cells_of(t, k);
    all.insert(all.end(), extra.begin(), extra.end());
    for (uint32_t w = 0; w < pool_words; ++w) {
        uint64_t seen = 0;
        for (const Pool &p : all) {
            CHECK((seen & p[w]) == 0);
            seen |= p[w];
        }
        CHECK(seen == expect[w]);
    }
}

// A host with one NF of `n` instances sharing a RELEASE "pool" table (key 7,
// every item free), or an EVENTUAL "hosts" table.
struct Host {
    ScratchDir dir;
    std::unique_ptr<StateStore> store;
    Executor *ex = nullptr;
    std::vector<std::unique_ptr<FakeInstance>> inst;
    std::vector<serpens_table *> tab;

    Host(const std::string &tag, uint32_t n, uint32_t flags, const serpens_nf_descriptor *desc = nullptr) : dir(tag)
    {
        open(n, flags, desc);
    }
    void open(uint32_t n, uint32_t flags, const serpens_nf_descriptor *desc = nullptr)
    {
        StoreOptions o;
        o.root = dir.path;
        o.max_instances = 4;
        store = std::make_unique<StateStore>(o);
        ex = &store->executor("c", "nf");
        if (desc != nullptr) {
            ex->set_descriptor(desc);
        }
        for (uint32_t i = 0; i < n; ++i) {
            start(i, flags, desc);
        }
    }
    void start(uint32_t i, uint32_t flags, const serpens_nf_descriptor *desc = nullptr)
    {
        inst.push_back(std::make_unique<FakeInstance>(*ex, i, desc));
        tab.push_back(inst.back()->create(flags == REL ? "pool" : "hosts", flags, 8, pool_bytes, 16));
        REQUIRE(tab.back());
    }
    // Stops the instances and the store, keeping the directory (a restart).
    void close()
    {
        tab.clear();
        inst.clear();
        store.reset();
        ex = nullptr;
    }
    Table &table(const char *name = "pool") { return *ex->find(name); }
    void fill(uint64_t k)
    {
        Pool all = full_pool();
        REQUIRE(ex->adopt(table(), &k, all.data(), pool_bytes) == SERPENS_OK);
    }
    Pool cell(uint32_t i, uint64_t k)
    {
        Pool p(pool_words);
        REQUIRE(state_api().get_state(tab[i], &k, p.data()) == SERPENS_OK);
        return p;
    }
};

} // namespace

TEST_CASE("state-lease: lease_out carves one more instance's share out of every cell; take_back restores it")
{
    Host h("lease-out", 2, REL);
    const uint64_t k = 7;
    h.fill(k);
    check_partition(h.table(), k, {}, full_pool());
    std::vector<uint8_t> out;
    REQUIRE(h.ex->lease_out(h.table(), &k, out) == SERPENS_OK);
    const Pool part = from_bytes(out);
    // A split among 3 of 512 items: 171, 171, 170 (the remote gets the last part).
    CHECK(popcount(part) == 170);
    CHECK(popcount(h.cell(0, k)) == 171);
    CHECK(popcount(h.cell(1, k)) == 171);
    check_partition(h.table(), k, {part}, full_pool());
    Pool global(pool_words);
    REQUIRE(h.ex->read_global(h.table(), &k, global.data()) == SERPENS_OK);
    for (uint32_t w = 0; w < pool_words; ++w) {
        CHECK((global[w] & part[w]) == 0);
    }

    // The peer used 10 items and returns the rest: all but those 10 are back,
    // re-split between the instances.
    Pool unused = part;
    uint64_t used = 0;
    for (uint32_t w = 0; w < pool_words && used < 10; ++w) {
        while (unused[w] != 0 && used < 10) {
            unused[w] &= unused[w] - 1;
            ++used;
        }
    }
    REQUIRE(h.ex->take_back(h.table(), &k, unused.data(), pool_bytes) == SERPENS_OK);
    Pool expect = full_pool();
    for (uint32_t w = 0; w < pool_words; ++w) {
        expect[w] &= ~(part[w] & ~unused[w]);
    }
    check_partition(h.table(), k, {}, expect);
    CHECK(popcount(h.cell(0, k)) == 251);
    CHECK(popcount(h.cell(1, k)) == 251);
    CHECK(popcount(cells_of(h.table(), k)[0]) == 0); // nothing left in the base

    CHECK(h.ex->take_back(h.table(), &k, unused.data(), pool_bytes - 1) == SERPENS_EINVAL);
    const uint64_t missing = 8;
    CHECK(h.ex->lease_out(h.table(), &missing, out) == SERPENS_ENOENT);
}

TEST_CASE("state-lease: with no instance active lease_out splits in two and the base keeps one")
{
    Host h("lease-idle", 1, REL);
    const uint64_t k = 7;
    h.fill(k);
    h.ex->remove_instance(0);
    std::vector<uint8_t> out;
    REQUIRE(h.ex->lease_out(h.table(), &k, out) == SERPENS_OK);
    const Pool part = from_bytes(out);
    CHECK(popcount(part) == 256);
    CHECK(popcount(cells_of(h.table(), k)[0]) == 256);
    check_partition(h.table(), k, {part}, full_pool());
    REQUIRE(h.ex->take_back(h.table(), &k, part.data(), pool_bytes) == SERPENS_OK);
    CHECK(cells_of(h.table(), k)[0] == full_pool());
}

TEST_CASE("state-lease: an instance's put racing lease_out is refused, so no item is in two places")
{
    Host h("lease-race", 2, REL);
    const uint64_t k = 7;
    h.fill(k);
    Pool mine = h.cell(0, k); // read before the lease
    std::vector<uint8_t> out;
    REQUIRE(h.ex->lease_out(h.table(), &k, out) == SERPENS_OK);
    const Pool part = from_bytes(out);
    // Allocates an item from the stale copy, possibly one now lent out.
    for (uint32_t w = 0; w < pool_words; ++w) {
        mine[w] = 0;
    }
    CHECK(state_api().put_state(h.tab[0], &k, mine.data()) == err_again);
    mine = h.cell(0, k);
    mine[0] &= mine[0] - 1;
    CHECK(state_api().put_state(h.tab[0], &k, mine.data()) == SERPENS_OK);
    for (uint32_t w = 0; w < pool_words; ++w) {
        CHECK((h.cell(0, k)[w] & part[w]) == 0);
    }
}

TEST_CASE("state-lease: lease_out and take_back are RELEASE only; keys lists the live keys")
{
    Host h("lease-kind", 1, EV);
    const uint64_t k = 7;
    Pool zero(pool_words, 0);
    REQUIRE(h.ex->adopt(h.table("hosts"), &k, zero.data(), pool_bytes) == SERPENS_OK);
    std::vector<uint8_t> out;
    CHECK(h.ex->lease_out(h.table("hosts"), &k, out) == SERPENS_EINVAL);
    CHECK(h.ex->take_back(h.table("hosts"), &k, zero.data(), pool_bytes) == SERPENS_EINVAL);
    const uint64_t k2 = 9;
    REQUIRE(h.ex->adopt(h.table("hosts"), &k2, zero.data(), pool_bytes) == SERPENS_OK);
    auto keys = h.ex->keys(h.table("hosts"));
    REQUIRE(keys.size() == 2);
    std::vector<uint64_t> got;
    for (auto &key : keys) {
        REQUIRE(key.size() == 8);
        uint64_t v;
        std::memcpy(&v, key.data(), 8);
        got.push_back(v);
    }
    std::sort(got.begin(), got.end());
    CHECK(got == std::vector<uint64_t>{7, 9});
}

TEST_CASE("state-lease: apply_delta grows the global value by delta and keeps every replica's own counts")
{
    Host h("delta", 2, EV);
    const serpens_host_api &api = state_api();
    const uint64_t k = 7;
    Pool v(pool_words, 0);
    REQUIRE(api.get_state(h.tab[0], &k, v.data()) == SERPENS_ENOENT);
    v[0] = 5;
    REQUIRE(api.put_state(h.tab[0], &k, v.data()) == SERPENS_OK); // instance 0 counted 5
    REQUIRE(h.ex->merge(h.table("hosts"), &k) == SERPENS_OK);     // G = 5, both replicas 5
    Pool r1 = h.cell(1, k);
    REQUIRE(r1[0] == 5);
    r1[0] += 3;
    r1[1] += 1;
    REQUIRE(api.put_state(h.tab[1], &k, r1.data()) == SERPENS_OK); // instance 1: +3, +1 unmerged
    Pool delta(pool_words, 0);
    delta[0] = 100;
    delta[2] = ~0ull; // -1, wrapping
    REQUIRE(h.ex->apply_delta(h.table("hosts"), &k, delta.data(), pool_bytes) == SERPENS_OK);
    // An instance's put based on its read before the delta is refused.
    CHECK(api.put_state(h.tab[1], &k, r1.data()) == err_again);
    REQUIRE(h.ex->merge(h.table("hosts"), &k) == SERPENS_OK);
    Pool g(pool_words);
    REQUIRE(h.ex->read_global(h.table("hosts"), &k, g.data()) == SERPENS_OK);
    CHECK(g[0] == 108);
    CHECK(g[1] == 1);
    CHECK(g[2] == ~0ull);
    // A key only the peer saw is created.
    const uint64_t k2 = 11;
    REQUIRE(h.ex->apply_delta(h.table("hosts"), &k2, delta.data(), pool_bytes) == SERPENS_OK);
    REQUIRE(h.ex->read_global(h.table("hosts"), &k2, g.data()) == SERPENS_OK);
    CHECK(g[0] == 100);
    CHECK(h.cell(0, k2)[0] == 100);
    CHECK(h.ex->apply_delta(h.table("hosts"), &k, delta.data(), 8) == SERPENS_EINVAL);
}

namespace {
int custom_merge(serpens_nf_ctx *ctx, const serpens_state_hook_args *a) { return default_eventual_merge(ctx, a); }
std::atomic<int> g_splits{0};
std::atomic<uint32_t> g_split_n{0};
// Gives the last part (the remote instance's, in a lease) every item.
int greedy_split(serpens_nf_ctx *, const serpens_state_hook_args *a)
{
    ++g_splits;
    g_split_n = a->n;
    for (uint32_t i = 0; i < a->n; ++i) {
        std::memset(a->parts[i], 0, a->value_size);
    }
    std::memcpy(a->parts[a->n - 1], a->whole, a->value_size);
    return SERPENS_OK;
}
} // namespace

TEST_CASE("state-lease: apply_delta refuses an NF's own merge format")
{
    serpens_nf_descriptor desc{};
    desc.merge = &custom_merge;
    Host h("delta-hook", 1, EV, &desc);
    const uint64_t k = 7;
    Pool delta(pool_words, 1);
    CHECK(h.ex->apply_delta(h.table("hosts"), &k, delta.data(), pool_bytes) == SERPENS_EINVAL);
}

TEST_CASE("state-lease: lease_out uses the NF's split hook, among the active instances + 1")
{
    serpens_nf_descriptor desc{};
    desc.split = &greedy_split;
    Host h("lease-hook", 2, REL, &desc);
    const uint64_t k = 7;
    h.fill(k);
    g_splits = 0;
    std::vector<uint8_t> out;
    REQUIRE(h.ex->lease_out(h.table(), &k, out) == SERPENS_OK);
    CHECK(g_splits.load() == 1);
    CHECK(g_split_n.load() == 3);
    CHECK(from_bytes(out) == full_pool());
    check_partition(h.table(), k, {from_bytes(out)}, full_pool());
    CHECK(popcount(h.cell(0, k)) == 0);
    CHECK(popcount(h.cell(1, k)) == 0);
}

TEST_CASE("state-lease: surrender on one host and adopt on another move a key whole")
{
    SUBCASE("RELEASE")
    {
        Host a("surr-a", 2, REL), b("surr-b", 3, REL);
        const uint64_t k = 7;
        a.fill(k);
        Pool mine = a.cell(0, k);
        mine[0] = 0; // instance 0 handed out 64 items
        REQUIRE(state_api().put_state(a.tab[0], &k, mine.data()) == SERPENS_OK);
        std::vector<uint8_t> out;
        REQUIRE(a.ex->surrender(a.table(), &k, out) == SERPENS_OK);
        Pool expect = full_pool();
        expect[0] = 0;
        CHECK(from_bytes(out) == expect);
        for (const Pool &c : cells_of(a.table(), k)) {
            CHECK(popcount(c) == 0); // nothing left to hand out here
        }
        REQUIRE(b.ex->adopt(b.table(), &k, out.data(), out.size()) == SERPENS_OK);
        check_partition(b.table(), k, {}, expect);
        CHECK(popcount(b.cell(0, k)) == 150);
        CHECK(popcount(b.cell(2, k)) == 149);
        CHECK(popcount(cells_of(b.table(), k)[0]) == 0);
    }
    SUBCASE("EVENTUAL")
    {
        Host a("surr-ev-a", 2, EV), b("surr-ev-b", 2, EV);
        const uint64_t k = 7;
        Pool v(pool_words, 0);
        v[0] = 4;
        REQUIRE(state_api().put_state(a.tab[0], &k, v.data()) == SERPENS_OK);
        v[0] = 6;
        REQUIRE(state_api().put_state(a.tab[1], &k, v.data()) == SERPENS_OK);
        std::vector<uint8_t> out;
        REQUIRE(a.ex->surrender(a.table("hosts"), &k, out) == SERPENS_OK);
        CHECK(from_bytes(out)[0] == 10);
        REQUIRE(b.ex->adopt(b.table("hosts"), &k, out.data(), out.size()) == SERPENS_OK);
        CHECK(b.cell(0, k)[0] == 10);
        CHECK(b.cell(1, k)[0] == 10);
        Pool g(pool_words);
        REQUIRE(b.ex->read_global(b.table("hosts"), &k, g.data()) == SERPENS_OK);
        CHECK(g[0] == 10);
    }
}

TEST_CASE("lease-book: grant, give_back and expire keep every item in exactly one place")
{
    Host h("book", 2, REL);
    const uint64_t k = 7;
    h.fill(k);
    LeaseBook book(*h.store);
    const auto key = std::span<const uint8_t>(reinterpret_cast<const uint8_t *>(&k), 8);
    Lease l1 = book.grant("peer-b", "c", "nf", "pool", key, 1000, 5000);
    CHECK(l1.id == 1);
    CHECK(l1.expires_unix_ms == 6000);
    const Pool p1 = from_bytes(l1.value);
    CHECK(popcount(p1) == 170);
    Lease l2 = book.grant("peer-c", "c", "nf", "pool", key, 2000, 5000);
    CHECK(l2.id == 2);
    const Pool p2 = from_bytes(l2.value);
    check_partition(h.table(), k, {p1, p2}, full_pool());
    CHECK(book.leases().size() == 2);

    // A faulty peer-b returns everything it got and more (every item):
    // only what it was lent comes back; a second return does nothing.
    CHECK(book.give_back(l1.id, bytes_of(full_pool())));
    CHECK_FALSE(book.give_back(l1.id, bytes_of(p1)));
    check_partition(h.table(), k, {p2}, full_pool());
    CHECK_THROWS_AS(book.give_back(l2.id, bytes_of(p2).first(8)), serpens::Error);

    // peer-c's lease: not before its deadline, then the whole grant.
    CHECK(book.expire(6999).empty());
    CHECK(book.renew(l2.id, 1000, 6999)); // until 7999
    CHECK(book.expire(7998).empty());
    auto gone = book.expire(7999);
    REQUIRE(gone.size() == 1);
    CHECK(gone[0].id == l2.id);
    CHECK(gone[0].value == l2.value);
    check_partition(h.table(), k, {}, full_pool());
    CHECK_FALSE(book.renew(l2.id, 1000, 8000));
    CHECK_FALSE(book.give_back(l2.id, bytes_of(p2)));
    CHECK(book.leases().empty());

    CHECK_THROWS_AS(book.grant("p", "c", "nf", "nope", key, 1, 1), serpens::Error);
    const uint64_t missing = 8;
    CHECK_THROWS_AS(book.grant("p", "c", "nf", "pool",
                               std::span<const uint8_t>(reinterpret_cast<const uint8_t *>(&missing), 8), 1, 1),
                    serpens::Error);
}

TEST_CASE("lease-book: an expired lease is never renewed")
{
    Host h("book-renew", 1, REL);
    const uint64_t k = 7;
    h.fill(k);
    LeaseBook book(*h.store);
    const auto key = std::span<const uint8_t>(reinterpret_cast<const uint8_t *>(&k), 8);
    Lease l = book.grant("peer-b", "c", "nf", "pool", key, 100, 1000);
    CHECK(book.renew(l.id, 100, 1099));
    CHECK_FALSE(book.renew(l.id, 100, 1199)); // its deadline was 1199
    CHECK_FALSE(book.renew(999, 100, 0));
    CHECK(book.expire(1199).size() == 1);
}

TEST_CASE("lease-book: a reopened book still has its leases and expires them, also before the table is back")
{
    Host h("book-reopen", 2, REL);
    const uint64_t k = 7;
    h.fill(k);
    const auto key = std::span<const uint8_t>(reinterpret_cast<const uint8_t *>(&k), 8);
    Lease l1, l2;
    {
        LeaseBook book(*h.store);
        l1 = book.grant("peer-b", "c", "nf", "pool", key, 1000, 5000);
        l2 = book.grant("peer-b", "c", "nf", "pool", key, 1000, 5000);
    }
    const Pool p1 = from_bytes(l1.value), p2 = from_bytes(l2.value);
    check_partition(h.table(), k, {p1, p2}, full_pool());
    h.close(); // the grantor restarts

    h.open(0, REL);
    LeaseBook book(*h.store);
    auto ls = book.leases();
    REQUIRE(ls.size() == 2);
    CHECK(ls[0].id == l1.id);
    CHECK(ls[0].value == l1.value);
    CHECK(ls[0].peer == "peer-b");
    CHECK(ls[0].key == l1.key);
    CHECK(ls[0].expires_unix_ms == 6000);
    // The NF has not created its table yet: both wait, nothing is lost.
    CHECK(book.give_back(l2.id, bytes_of(p2)));
    CHECK(book.expire(6000).empty());
    CHECK(book.leases().size() == 2);
    CHECK_FALSE(book.renew(l2.id, 1000, 5500)); // given back already

    h.start(0, REL);
    h.start(1, REL);
    auto gone = book.expire(6000);
    REQUIRE(gone.size() == 2);
    CHECK(book.leases().empty());
    check_partition(h.table(), k, {}, full_pool());
    CHECK(popcount(h.cell(0, k)) == 256);
    CHECK(popcount(h.cell(1, k)) == 256);

    // Ids keep increasing across restarts.
    Lease l3 = book.grant("peer-b", "c", "nf", "pool", key, 1000, 5000);
    CHECK(l3.id == 3);
}

TEST_CASE("lease-book: apply_replica merges a sequence once, also after reopening")
{
    Host h("book-replica", 2, EV);
    const uint64_t k = 7;
    const auto key = std::span<const uint8_t>(reinterpret_cast<const uint8_t *>(&k), 8);
    Pool delta(pool_words, 0);
    delta[0] = 10;
    Pool g(pool_words);
    {
        LeaseBook book(*h.store);
        CHECK(book.apply_replica("peer-b", "c", "nf", "hosts", key, bytes_of(delta), 1));
        CHECK_FALSE(book.apply_replica("peer-b", "c", "nf", "hosts", key, bytes_of(delta), 1)); // a replay
        CHECK(book.apply_replica("peer-b", "c", "nf", "hosts", key, bytes_of(delta), 2));
        // Another peer has its own sequence.
        CHECK(book.apply_replica("peer-c", "c", "nf", "hosts", key, bytes_of(delta), 1));
        CHECK_THROWS_AS(book.apply_replica("peer-b", "c", "nf", "hosts", key, bytes_of(delta).first(8), 3),
                        serpens::Error);
        CHECK_THROWS_AS(book.apply_replica("peer-b", "c", "nf", "nope", key, bytes_of(delta), 3), serpens::Error);
    }
    REQUIRE(h.ex->read_global(h.table("hosts"), &k, g.data()) == SERPENS_OK);
    CHECK(g[0] == 30);
    LeaseBook again(*h.store);
    CHECK_FALSE(again.apply_replica("peer-b", "c", "nf", "hosts", key, bytes_of(delta), 2));
    CHECK(again.apply_replica("peer-b", "c", "nf", "hosts", key, bytes_of(delta), 3)); // the refused 3 was not kept
    REQUIRE(h.ex->read_global(h.table("hosts"), &k, g.data()) == SERPENS_OK);
    CHECK(g[0] == 40);
}

TEST_CASE("lease-book: apply_replicas merges a batch with one write; a bad item changes nothing")
{
    Host h("book-replicas", 2, EV);
    const uint64_t k1 = 7, k2 = 8;
    const auto key1 = std::span(reinterpret_cast<const uint8_t *>(&k1), sizeof(k1));
    const auto key2 = std::span(reinterpret_cast<const uint8_t *>(&k2), sizeof(k2));
    Pool delta(pool_words, 0);
    delta[0] = 5;
    LeaseBook book(*h.store);
    REQUIRE(book.apply_replica("peer-b", "c", "nf", "hosts", key1, bytes_of(delta), 1));
    // k1's sequence 1 is a replay, its 2 is new; k2 is new; the same change twice in one batch counts once.
    const std::vector<LeaseBook::ReplicaDelta> batch{{"c", "nf", "hosts", key1, bytes_of(delta), 1},
                                                     {"c", "nf", "hosts", key2, bytes_of(delta), 1},
                                                     {"c", "nf", "hosts", key2, bytes_of(delta), 1},
                                                     {"c", "nf", "hosts", key1, bytes_of(delta), 2}};
    CHECK(book.apply_replicas("peer-b", batch) == std::vector<bool>{false, true, false, true});
    Pool g(pool_words);
    REQUIRE(h.ex->read_global(h.table("hosts"), &k1, g.data()) == SERPENS_OK);
    CHECK(g[0] == 10);
    REQUIRE(h.ex->read_global(h.table("hosts"), &k2, g.data()) == SERPENS_OK);
    CHECK(g[0] == 5);
    // The peer sends in sequence order: a merge older than the newest is a
    // replay, and the book keeps only the newest sequence's keys.
    CHECK_FALSE(book.apply_replica("peer-b", "c", "nf", "hosts", key2, bytes_of(delta), 1));
    const auto saved = nlohmann::json::parse(std::ifstream(book.path()));
    REQUIRE(saved.at("replicas").size() == 1);
    CHECK(saved.at("replicas")[0].at("sequence") == 2);
    CHECK(saved.at("replicas")[0].at("keys").size() == 1);
    // An unknown table anywhere in the batch: refused before anything applies.
    const std::vector<LeaseBook::ReplicaDelta> bad{{"c", "nf", "hosts", key1, bytes_of(delta), 3},
                                                   {"c", "nf", "nope", key1, bytes_of(delta), 3}};
    CHECK_THROWS_AS(book.apply_replicas("peer-b", bad), serpens::Error);
    REQUIRE(h.ex->read_global(h.table("hosts"), &k1, g.data()) == SERPENS_OK);
    CHECK(g[0] == 10);
    LeaseBook again(*h.store);
    CHECK(again.apply_replicas("peer-b", {bad.front()}) == std::vector<bool>{true});
}

TEST_CASE("lease-book: a corrupt book is refused with its file name")
{
    ScratchDir d("book-corrupt");
    StoreOptions o;
    o.root = d.path;
    StateStore store(o);
    std::ofstream(d.path / "leases.json") << "{\"version\": 1, \"next_id\": ";
    try {
        LeaseBook book(store);
        FAIL("a corrupt book was accepted");
    } catch (const serpens::Error &e) {
        CHECK(std::string(e.what()).find("leases.json") != std::string::npos);
    }
}

TEST_CASE("state-lease: instances allocating while items are lent and returned never hold an item twice")
{
    ScratchDir d("lease-stress");
    StoreOptions o;
    o.root = d.path;
    StateStore store(o);
    Executor &ex = store.executor("c", "nat");
    const serpens_host_api &api = state_api();
    constexpr uint32_t items = 4096, bytes = items / 8, words = bytes / 8;
    FakeInstance a(ex, 0), b(ex, 1);
    serpens_table *tab[2] = {a.create("pool", REL, 8, bytes, 4), b.create("pool", REL, 8, bytes, 4)};
    REQUIRE(tab[0]);
    REQUIRE(tab[1]);
    const uint64_t k = 1;
    Table &t = *ex.find("pool");
    std::vector<uint64_t> all(words, ~0ull);
    REQUIRE(ex.adopt(t, &k, all.data(), bytes) == SERPENS_OK);

    // owner[i]: who holds item i (0 nobody, 1/2 an instance, 3 the peer).
    std::vector<std::atomic<uint8_t>> owner(items);
    std::atomic<uint64_t> doubles{0}, refused{0};
    auto take = [&](uint32_t item, uint8_t who) {
        if (owner[item].exchange(who) != 0) {
            ++doubles;
        }
    };
    auto worker = [&](uint32_t id) {
        std::vector<uint64_t> mine(words);
        for (uint32_t got = 0; got < 1000;) {
            REQUIRE(api.get_state(tab[id], &k, mine.data()) == SERPENS_OK);
            uint32_t w = 0;
            while (w < words && mine[w] == 0) {
                ++w;
            }
            if (w == words) {
                std::this_thread::yield(); // all lent out right now
                continue;
            }
            const uint32_t bit = static_cast<uint32_t>(std::countr_zero(mine[w]));
            mine[w] &= ~(1ull << bit);
            const int rc = api.put_state(tab[id], &k, mine.data());
            if (rc == err_again) {
                ++refused;
                continue;
            }
            REQUIRE(rc == SERPENS_OK);
            take(w * 64 + bit, static_cast<uint8_t>(id + 1)); // ours only once the put succeeded
            ++got;
        }
    };
    std::atomic<bool> stop{false};
    std::thread peer([&] {
        std::vector<uint8_t> out;
        while (!stop.load()) {
            REQUIRE(ex.lease_out(t, &k, out) == SERPENS_OK);
            std::vector<uint64_t> part(words);
            std::memcpy(part.data(), out.data(), bytes);
            for (uint32_t i = 0; i < items; ++i) {
                if (part[i / 64] >> (i % 64) & 1) {
                    take(i, 3);
                }
            }
            for (uint32_t i = 0; i < items; ++i) {
                if (part[i / 64] >> (i % 64) & 1) {
                    owner[i].store(0); // stop using it before it is returned
                }
            }
            REQUIRE(ex.take_back(t, &k, out.data(), out.size()) == SERPENS_OK);
        }
    });
    std::thread w0(worker, 0), w1(worker, 1);
    w0.join();
    w1.join();
    stop = true;
    peer.join();
    CHECK(doubles.load() == 0);
    MESSAGE("puts refused after a lease or return: ", refused.load());
    // Every item is either handed out by an instance or free in one cell.
    std::vector<uint64_t> global(words);
    REQUIRE(ex.read_global(t, &k, global.data()) == SERPENS_OK);
    uint32_t held = 0;
    for (uint32_t i = 0; i < items; ++i) {
        const bool free = global[i / 64] >> (i % 64) & 1;
        const bool taken = owner[i].load() != 0;
        CHECK(free != taken);
        held += taken;
    }
    CHECK(held == 2000);
}
