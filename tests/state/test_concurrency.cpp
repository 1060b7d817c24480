// Several threads insert, update, delete and read disjoint and overlapping
// keys of one per-flow table while an expiry sweep reclaims tombstones.
// Run under ASan/UBSan in CI; build with -fsanitize=thread to check races.

#include "state_test_util.h"

#include "state/table.h"

#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <random>
#include <thread>
#include <vector>

using namespace serpens::state;
using namespace serpens::state::test;

namespace {

struct Val {
    uint64_t key;
    uint64_t writer;
    uint64_t seq;
    uint64_t check;
};
uint64_t check_of(const Val &v) { return mix64(v.key ^ (v.writer << 48) ^ (v.seq * 0x9e3779b97f4a7c15ull)); }

} // namespace

TEST_CASE("state-concurrency: threads on disjoint and overlapping keys stay consistent")
{
    ScratchDir d("conc");
    std::string err;
    constexpr uint32_t T = 4;
    constexpr uint64_t own_keys = 2000, shared_keys = 64, ops = 150000;
    auto t = Table::open(d.path / "flows.tbl",
                         TableSpec{"flows", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE, 8, sizeof(Val),
                                   T * own_keys + shared_keys + 16, 0},
                         err);
    REQUIRE(t);
    std::atomic<uint64_t> torn{0}, stop_sweep{0};
    std::vector<std::map<uint64_t, Val>> model(T); // own keys: exact expected state
    auto worker = [&](uint32_t id) {
        std::mt19937_64 rng(id * 7919 + 1);
        uint64_t seq = 0;
        for (uint64_t n = 0; n < ops; ++n) {
            bool shared = rng() % 4 == 0;
            uint64_t key = shared ? (1ull << 40) + rng() % shared_keys : (uint64_t{id} << 32) + rng() % own_keys;
            int op = static_cast<int>(rng() % 10);
            Val v{};
            if (op < 5) {
                v = Val{key, id, ++seq, 0};
                v.check = check_of(v);
                int rc = t->put(&key, &v);
                CHECK(rc == SERPENS_OK);
                if (!shared) {
                    model[id][key] = v;
                }
            } else if (op < 7) {
                int rc = t->del(&key);
                if (!shared) {
                    CHECK((rc == SERPENS_OK) == (model[id].count(key) == 1));
                    model[id].erase(key);
                }
            } else {
                int rc = t->get(&key, &v);
                if (rc == SERPENS_OK && (v.key != key || v.check != check_of(v))) {
                    ++torn;
                }
                if (!shared) {
                    CHECK((rc == SERPENS_OK) == (model[id].count(key) == 1));
                }
            }
        }
    };
    // Expiry with a long idle time removes nothing but turns tombstones back
    // into empty slots concurrently with the writers.
    std::thread sweeper([&] {
        while (stop_sweep.load() == 0) {
            t->expire(coarse_units(1) << 20, 1ull << 50, 256);
        }
    });
    std::vector<std::thread> th;
    for (uint32_t i = 0; i < T; ++i) {
        th.emplace_back(worker, i);
    }
    for (auto &x : th) {
        x.join();
    }
    stop_sweep = 1;
    sweeper.join();
    CHECK(torn.load() == 0);
    uint64_t expect_live = 0;
    for (uint32_t id = 0; id < T; ++id) {
        for (auto &[k, v] : model[id]) {
            Val got{};
            REQUIRE(t->get(&k, &got) == SERPENS_OK);
            CHECK(got.seq == v.seq);
            CHECK(got.writer == id);
        }
        expect_live += model[id].size();
    }
    auto rep = t->check();
    CHECK_MESSAGE(rep.ok(), (rep.problems.empty() ? std::string() : rep.problems.front()));
    CHECK(rep.duplicates == 0);
    CHECK(rep.live >= expect_live);
    CHECK(rep.live <= expect_live + shared_keys);
    CHECK(t->live() == rep.live);
}

TEST_CASE("state-concurrency: readers never see a half-written value while one writer updates")
{
    ScratchDir d("seq");
    std::string err;
    struct Big {
        uint64_t w[32];
    };
    auto t = Table::open(d.path / "big.tbl",
                         TableSpec{"big", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE, 8, sizeof(Big), 16, 0}, err);
    REQUIRE(t);
    uint64_t key = 1;
    Big b{};
    REQUIRE(t->put(&key, &b) == SERPENS_OK);
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> torn{0}, reads{0};
    // The writer goes on until the readers have read a while beside it: on a
    // busy machine they may not be scheduled before 200000 puts are done.
    std::thread writer([&] {
        Big v{};
        for (uint64_t i = 1; i < 200000 || reads.load() < 10000; ++i) {
            for (auto &w : v.w) {
                w = i;
            }
            t->put(&key, &v);
        }
        stop = true;
    });
    auto reader = [&] {
        Big v{};
        while (!stop.load()) {
            REQUIRE(t->get(&key, &v) == SERPENS_OK);
            for (auto &w : v.w) {
                torn += w != v.w[0];
            }
            ++reads;
        }
    };
    std::thread r1(reader), r2(reader);
    writer.join();
    r1.join();
    r2.join();
    CHECK(torn.load() == 0);
    CHECK(reads.load() > 0);
}
