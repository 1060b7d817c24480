// Per-flow and global/read tables: flags, CRUD, bulk, capacity, expiry,
// persistence, validation of re-attached segments, the read-only tool view.

#include "state_test_util.h"

#include "state/table.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <vector>

using namespace serpens::state;
using namespace serpens::state::test;

namespace {

constexpr uint32_t PF = SERPENS_STATE_PER_FLOW, GL = SERPENS_STATE_GLOBAL, RD = SERPENS_STATE_READ,
                   WR = SERPENS_STATE_WRITE, REL = SERPENS_STATE_RELEASE, EV = SERPENS_STATE_EVENTUAL;

struct Key {
    uint32_t src, dst;
    uint16_t sport, dport;
    uint8_t proto;
}; // 13 significant bytes; tables use key_size 13

void key_of(uint8_t *k, uint64_t i)
{
    std::memset(k, 0, 13);
    std::memcpy(k, &i, 8);
    k[12] = static_cast<uint8_t>(i * 7);
}

TableSpec flow_spec(uint64_t cap, uint32_t vs = 24) { return TableSpec{"flows", PF | WR, 13, vs, cap, 0}; }

} // namespace

TEST_CASE("state-flags: exactly the five flag combinations of the paper are accepted")
{
    int valid = 0;
    for (uint32_t f = 0; f < 64; ++f) {
        TableSpec s{"t", f, 8, 8, 16, 4};
        bool ok = validate_spec(s).empty();
        bool expect = f == (PF | RD) || f == (PF | WR) || f == (GL | RD) || f == (GL | WR | REL) || f == (GL | WR | EV);
        CHECK_MESSAGE(ok == expect, "flags ", flags_to_string(f), ": ", validate_spec(s));
        valid += ok;
    }
    CHECK(valid == 5);
    CHECK(validate_spec({"t", PF | WR | 0x100, 8, 8, 16, 4}).find("unknown flag") != std::string::npos);
    CHECK(validate_spec({"t", GL | WR, 8, 8, 16, 4}).find("RELEASE, EVENTUAL") != std::string::npos);
    CHECK(validate_spec({"t", PF | WR | REL, 8, 8, 16, 4}).find("only apply") != std::string::npos);
    CHECK(validate_spec({"t", PF | WR, 65, 8, 16, 4}).find("key_size 65") != std::string::npos);
    CHECK(validate_spec({"t", PF | WR, 8, 0, 16, 4}).find("value_size 0") != std::string::npos);
    CHECK(validate_spec({"t", PF | WR, 8, 8, 0, 4}).find("capacity") != std::string::npos);
    CHECK(validate_spec({"", PF | WR, 8, 8, 1, 4}).find("empty") != std::string::npos);
}

TEST_CASE("state-perflow: put/get/delete/bulk round trip")
{
    ScratchDir d("pf");
    std::string err;
    auto t = Table::open(d.path / "flows.tbl", flow_spec(1000), err);
    REQUIRE_MESSAGE(t, err);
    uint8_t k[13], v[24], out[24];
    for (uint64_t i = 0; i < 500; ++i) {
        key_of(k, i);
        std::memset(v, static_cast<int>(i), sizeof(v));
        REQUIRE(t->put(k, v) == SERPENS_OK);
    }
    CHECK(t->live() == 500);
    for (uint64_t i = 0; i < 500; ++i) {
        key_of(k, i);
        REQUIRE(t->get(k, out) == SERPENS_OK);
        CHECK(out[0] == static_cast<uint8_t>(i));
        CHECK(out[23] == static_cast<uint8_t>(i));
    }
    key_of(k, 999);
    CHECK(t->get(k, out) == SERPENS_ENOENT);
    CHECK(t->del(k) == SERPENS_ENOENT);

    // Replace keeps one entry.
    key_of(k, 7);
    std::memset(v, 0xee, sizeof(v));
    CHECK(t->put(k, v) == SERPENS_OK);
    CHECK(t->live() == 500);
    CHECK(t->get(k, out) == SERPENS_OK);
    CHECK(out[5] == 0xee);

    // Delete then re-insert.
    CHECK(t->del(k) == SERPENS_OK);
    CHECK(t->get(k, out) == SERPENS_ENOENT);
    CHECK(t->live() == 499);
    CHECK(t->put(k, v) == SERPENS_OK);
    CHECK(t->live() == 500);

    // Bulk: 40 keys, every third one missing.
    std::vector<uint8_t> keys(40 * 13), vals(40 * 24);
    uint64_t expect = 0;
    for (uint32_t i = 0; i < 40; ++i) {
        uint64_t id = (i % 3 == 2) ? 10000 + i : i;
        key_of(&keys[i * 13], id);
        if (i % 3 != 2) {
            expect |= 1ull << i;
        }
    }
    CHECK(t->get_bulk(keys.data(), 40, vals.data()) == expect);
    CHECK(vals[24 * 4] == 4);
    auto rep = t->check();
    CHECK_MESSAGE(rep.ok(), (rep.problems.empty() ? std::string() : rep.problems.front()));
}

TEST_CASE("state-perflow: get_bulk agrees with get on a full table (long probe runs, tombstones, misses)")
{
    ScratchDir d("bulkfull");
    std::string err;
    auto t = Table::open(d.path / "flows.tbl", flow_spec(256), err);
    REQUIRE_MESSAGE(t, err);
    uint8_t k[13], v[24];
    for (uint64_t i = 0; i < 256; ++i) {
        key_of(k, i);
        std::memset(v, static_cast<int>(i), sizeof v);
        REQUIRE(t->put(k, v) == SERPENS_OK);
    }
    for (uint64_t i = 0; i < 256; i += 5) { // tombstones inside the runs
        key_of(k, i);
        REQUIRE(t->del(k) == SERPENS_OK);
    }
    // Keys 0..383 in chunks of up to 64: present, deleted and never-put ones.
    for (uint64_t first = 0; first < 384; first += 61) {
        const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(61, 384 - first));
        std::vector<uint8_t> keys(n * 13), vals(n * 24, 0xcc);
        uint64_t want = 0;
        for (uint32_t j = 0; j < n; ++j) {
            key_of(&keys[j * 13], first + j);
            uint8_t one[24];
            if (t->get(&keys[j * 13], one) == SERPENS_OK) {
                want |= 1ull << j;
                CHECK(one[0] == static_cast<uint8_t>(first + j));
            }
        }
        const uint64_t got = t->get_bulk(keys.data(), n, vals.data());
        CHECK(got == want);
        for (uint32_t j = 0; j < n; ++j) {
            if (got & (1ull << j)) {
                CHECK(vals[j * 24] == static_cast<uint8_t>(first + j));
                CHECK(vals[j * 24 + 23] == static_cast<uint8_t>(first + j));
            }
        }
    }
}

// Keys and values of whole words run specialised lookup code, other sizes the
// general loops (Table::pick_shape); every shape must read back exactly what
// was written, from get, get_bulk and after updates, and hash alike on disk.
TEST_CASE("state-perflow: every key/value shape reads back what was written, specialised or not")
{
    const std::pair<uint32_t, uint32_t> shapes[] = {{8, 8},   {16, 16}, {40, 32}, {64, 24}, {24, 40},
                                                    {13, 24}, {16, 12}, {7, 8},   {64, 64}, {40, 80}};
    for (auto [ks, vs] : shapes) {
        CAPTURE(ks);
        CAPTURE(vs);
        ScratchDir d("shape");
        std::string err;
        const TableSpec spec{"flows", PF | WR, ks, vs, 200, 0};
        auto t = Table::open(d.path / "flows.tbl", spec, err);
        REQUIRE_MESSAGE(t, err);
        auto key = [&](uint64_t i) {
            std::vector<uint8_t> k(ks);
            for (uint32_t b = 0; b < ks; ++b) {
                k[b] = static_cast<uint8_t>((i >> (8 * (b % 8))) + b * 31);
            }
            return k;
        };
        auto value = [&](uint64_t i, uint8_t round) {
            std::vector<uint8_t> v(vs);
            for (uint32_t b = 0; b < vs; ++b) {
                v[b] = static_cast<uint8_t>(i * 13 + b + round);
            }
            return v;
        };
        for (uint64_t i = 0; i < 200; ++i) {
            REQUIRE(t->put(key(i).data(), value(i, 0).data()) == SERPENS_OK);
        }
        for (uint64_t i = 0; i < 200; i += 4) { // tombstones inside the runs
            REQUIRE(t->del(key(i).data()) == SERPENS_OK);
        }
        for (uint64_t i = 1; i < 200; i += 4) { // updates write the other buffer
            REQUIRE(t->put(key(i).data(), value(i, 1).data()) == SERPENS_OK);
        }
        auto expected = [&](uint64_t i) -> std::optional<std::vector<uint8_t>> {
            if (i >= 200 || i % 4 == 0) {
                return std::nullopt;
            }
            return value(i, i % 4 == 1 ? 1 : 0);
        };
        for (int reopen = 0; reopen < 2; ++reopen) {
            for (uint64_t first = 0; first < 260; first += 50) {
                const uint32_t n = 50;
                std::vector<uint8_t> keys(n * ks), vals(n * vs, 0xcc);
                for (uint32_t j = 0; j < n; ++j) {
                    auto k = key(first + j);
                    std::memcpy(&keys[j * ks], k.data(), ks);
                }
                const uint64_t got = t->get_bulk(keys.data(), n, vals.data());
                for (uint32_t j = 0; j < n; ++j) {
                    const auto want = expected(first + j);
                    std::vector<uint8_t> one(vs);
                    const int rc = t->get(&keys[j * ks], one.data());
                    REQUIRE((rc == SERPENS_OK) == want.has_value());
                    REQUIRE(((got >> j) & 1) == (want.has_value() ? 1u : 0u));
                    if (want) {
                        CHECK(one == *want);
                        CHECK(std::memcmp(&vals[j * vs], want->data(), vs) == 0);
                    }
                }
            }
            // The hash is part of the layout: a re-attached table finds every key.
            t.reset();
            t = Table::open(d.path / "flows.tbl", spec, err);
            REQUIRE_MESSAGE(t, err);
        }
    }
}

TEST_CASE("state-perflow: a full table refuses new flows cleanly and counts it")
{
    ScratchDir d("full");
    std::string err;
    auto t = Table::open(d.path / "flows.tbl", flow_spec(64), err);
    REQUIRE(t);
    uint8_t k[13], v[24] = {};
    for (uint64_t i = 0; i < 64; ++i) {
        key_of(k, i);
        REQUIRE(t->put(k, v) == SERPENS_OK);
    }
    key_of(k, 64);
    CHECK(t->put(k, v) == SERPENS_ENOSPC);
    CHECK(t->put(k, v) == SERPENS_ENOSPC);
    CHECK(t->header().refused_full == 2);
    key_of(k, 3);
    CHECK(t->put(k, v) == SERPENS_OK); // updates still work when full
    CHECK(t->del(k) == SERPENS_OK);
    key_of(k, 64);
    CHECK(t->put(k, v) == SERPENS_OK); // room again
}

TEST_CASE("state-perflow: update_bulk adds, sets or keeps each word, inserts absent keys, refuses when full")
{
    for (const uint32_t words : {4u, 10u}) { // the specialised value copy and the general one
        CAPTURE(words);
        ScratchDir d("update");
        std::string err;
        auto t = Table::open(d.path / "flows.tbl", TableSpec{"flows", PF | WR, 16, 8 * words, 8, 0}, err);
        REQUIRE_MESSAGE(t, err);
        std::vector<uint8_t> ops(words);
        for (uint32_t w = 0; w < words; ++w) {
            ops[w] = w % 3 == 0 ? SERPENS_WORD_ADD : w % 3 == 1 ? SERPENS_WORD_SET : SERPENS_WORD_KEEP;
        }
        auto keys = [](std::initializer_list<uint64_t> ids) {
            std::vector<uint64_t> k;
            for (uint64_t id : ids) {
                k.push_back(id), k.push_back(~id);
            }
            return k;
        };
        auto row = [&](uint64_t id, uint64_t round) {
            std::vector<uint64_t> r(words);
            for (uint32_t w = 0; w < words; ++w) {
                r[w] = 1000 * round + 10 * id + w;
            }
            return r;
        };
        // What the entry of `id` holds after rounds 1..`rounds` of updates.
        auto expected = [&](uint64_t id, uint64_t rounds) {
            std::vector<uint64_t> v = row(id, 1);
            for (uint64_t r = 2; r <= rounds; ++r) {
                const auto x = row(id, r);
                for (uint32_t w = 0; w < words; ++w) {
                    v[w] = ops[w] == SERPENS_WORD_ADD ? v[w] + x[w] : ops[w] == SERPENS_WORD_SET ? x[w] : v[w];
                }
            }
            return v;
        };
        auto update = [&](std::initializer_list<uint64_t> ids, uint64_t round, std::vector<uint64_t> *out) {
            const auto k = keys(ids);
            std::vector<uint64_t> rows;
            for (uint64_t id : ids) {
                const auto r = row(id, round);
                rows.insert(rows.end(), r.begin(), r.end());
            }
            if (out != nullptr) {
                out->assign(rows.size(), 0);
            }
            return t->update_bulk(k.data(), static_cast<uint32_t>(ids.size()), rows.data(), ops.data(),
                                  out != nullptr ? out->data() : nullptr);
        };
        std::vector<uint64_t> out;
        CHECK(update({0, 1, 2, 3, 4, 5}, 1, &out) == 0x3f); // all new: the rows are the values
        CHECK(std::vector<uint64_t>(out.begin(), out.begin() + words) == expected(0, 1));
        CHECK(update({0, 1, 2}, 2, nullptr) == 0x7);
        CHECK(update({0, 1, 2, 6}, 3, &out) == 0xf);
        for (uint64_t id = 0; id < 7; ++id) {
            CAPTURE(id);
            const uint64_t rounds = id < 3 ? 3 : id < 6 ? 1 : 0;
            std::vector<uint64_t> got(words);
            const auto k = keys({id});
            CHECK(t->get(k.data(), got.data()) == SERPENS_OK);
            std::vector<uint64_t> want = id < 6 ? expected(id, rounds) : row(6, 3);
            CHECK(got == want);
        }
        CHECK(std::vector<uint64_t>(out.begin(), out.begin() + words) == expected(0, 3));
        CHECK(std::vector<uint64_t>(out.begin() + 3 * words, out.end()) == row(6, 3));
        CHECK(update({7, 8}, 1, nullptr) == 0x1); // 8 live entries: key 8 does not fit
        CHECK(t->header().refused_full == 1);
        CHECK(t->live() == 8);
    }
    ScratchDir d("update-global");
    std::string err;
    auto g = Table::open(d.path / "g.tbl", TableSpec{"g", GL | RD, 16, 32, 8, 0}, err);
    REQUIRE(g);
    const uint64_t k[2] = {1, 2}, r[4] = {1, 2, 3, 4};
    const uint8_t ops[4] = {};
    CHECK(g->update_bulk(k, 1, r, ops, nullptr) == 0); // per-flow tables only
    CHECK(g->live() == 0);
}

TEST_CASE("state-perflow: idle expiry is incremental and keeps touched flows")
{
    ScratchDir d("exp");
    std::string err;
    auto t = Table::open(d.path / "flows.tbl", flow_spec(1000), err);
    REQUIRE(t);
    const uint64_t t0 = 1'000'000'000'000ull, s = 1'000'000'000ull;
    set_coarse_now(t0);
    uint8_t k[13], v[24] = {}, out[24];
    for (uint64_t i = 0; i < 300; ++i) {
        key_of(k, i);
        REQUIRE(t->put(k, v) == SERPENS_OK);
    }
    set_coarse_now(t0 + 10 * s);
    for (uint64_t i = 0; i < 300; i += 2) {
        key_of(k, i);
        REQUIRE(t->get(k, out) == SERPENS_OK); // refreshes last access
    }
    // Small steps: each call visits at most 100 slots.
    std::size_t removed = 0;
    for (uint64_t done = 0; done < t->n_slots(); done += 100) {
        removed += t->expire(t0 + 11 * s, 5 * s, 100);
    }
    CHECK(removed == 150);
    CHECK(t->live() == 150);
    CHECK(t->header().expired == 150);
    for (uint64_t i = 0; i < 300; ++i) {
        key_of(k, i);
        CHECK((t->get(k, out) == SERPENS_OK) == (i % 2 == 0));
    }
    auto rep = t->check();
    CHECK(rep.ok());
    set_coarse_now(0);
}

TEST_CASE("state-perflow: reopened with NF_EXPIRY changed, a segment keeps its entries and takes the new policy")
{
    // A plugin update that opts its table out of idle expiry (or back in):
    // the entries stay (a vpn's sequence numbers moved aside would reuse its
    // GCM nonces), and the host expires them as the NF now asks.
    ScratchDir d("expiry-policy");
    std::string err;
    const uint64_t t0 = 1'000'000'000'000ull, s = 1'000'000'000ull;
    set_coarse_now(t0);
    uint8_t k[13], v[24] = {7}, out[24];
    {
        auto t = Table::open(d.path / "flows.tbl", flow_spec(100), err);
        REQUIRE(t);
        key_of(k, 1);
        REQUIRE(t->put(k, v) == SERPENS_OK);
    }
    TableSpec never = flow_spec(100);
    never.flags |= SERPENS_STATE_NF_EXPIRY;
    {
        auto t = Table::open(d.path / "flows.tbl", never, err);
        REQUIRE(t);
        CHECK(t->header().attaches == 2); // the same segment, not a new one
        CHECK(t->nf_expiry());
        for (uint64_t done = 0; done < t->n_slots(); done += 100) {
            CHECK(t->expire(t0 + 100 * s, 5 * s, 100) == 0);
        }
        REQUIRE(t->get(k, out) == SERPENS_OK);
        CHECK(out[0] == 7);
    }
    {
        auto t = Table::open(d.path / "flows.tbl", flow_spec(100), err); // and back
        REQUIRE(t);
        CHECK_FALSE(t->nf_expiry());
        std::size_t removed = 0;
        for (uint64_t done = 0; done < t->n_slots(); done += 100) {
            removed += t->expire(t0 + 200 * s, 5 * s, 100);
        }
        CHECK(removed == 1);
    }
    for (auto &e : std::filesystem::directory_iterator(d.path)) {
        CHECK(e.path().filename().string().find(".bad-") == std::string::npos);
    }
    set_coarse_now(0);
}

TEST_CASE("state-perflow: entries survive close and re-attach; a mismatching segment is moved aside")
{
    ScratchDir d("reattach");
    std::string err;
    uint8_t k[13], v[24], out[24];
    {
        auto t = Table::open(d.path / "flows.tbl", flow_spec(100), err);
        REQUIRE(t);
        for (uint64_t i = 0; i < 50; ++i) {
            key_of(k, i);
            std::memset(v, static_cast<int>(i + 1), sizeof(v));
            REQUIRE(t->put(k, v) == SERPENS_OK);
        }
        // A second writer of the same segment is refused while this one lives.
        std::string e2;
        CHECK_FALSE(Table::open(d.path / "flows.tbl", flow_spec(100), e2));
        CHECK(e2.find("in use") != std::string::npos);
    }
    {
        auto t = Table::open(d.path / "flows.tbl", flow_spec(100), err);
        REQUIRE(t);
        CHECK(t->live() == 50);
        CHECK(t->header().attaches == 2);
        key_of(k, 17);
        REQUIRE(t->get(k, out) == SERPENS_OK);
        CHECK(out[0] == 18);
    }
    // Another value size: the old file is renamed, not wiped.
    {
        auto t = Table::open(d.path / "flows.tbl", flow_spec(100, 32), err);
        REQUIRE(t);
        CHECK(t->live() == 0);
    }
    int aside = 0;
    for (auto &e : std::filesystem::directory_iterator(d.path)) {
        if (e.path().filename().string().find("flows.tbl.bad-") == 0) {
            ++aside;
            std::string e2;
            auto old = Table::open_readonly(e.path(), e2); // the evidence is intact
            REQUIRE(old);
            CHECK(old->live() == 50);
        }
    }
    CHECK(aside == 1);
}

TEST_CASE("state-perflow: a corrupted header is detected and moved aside")
{
    ScratchDir d("corrupt");
    std::string err;
    {
        auto t = Table::open(d.path / "flows.tbl", flow_spec(100), err);
        REQUIRE(t);
    }
    {
        std::fstream f(d.path / "flows.tbl", std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(offsetof(SegmentHeader, capacity));
        uint64_t bogus = 12345;
        f.write(reinterpret_cast<const char *>(&bogus), 8);
    }
    std::string e2;
    CHECK_FALSE(Table::open_readonly(d.path / "flows.tbl", e2));
    CHECK(e2.find("checksum") != std::string::npos);
    auto t = Table::open(d.path / "flows.tbl", flow_spec(100), err);
    REQUIRE(t);
    int aside = 0;
    for (auto &e : std::filesystem::directory_iterator(d.path)) {
        aside += e.path().filename().string().find(".bad-") != std::string::npos;
    }
    CHECK(aside == 1);
}

TEST_CASE("state-perflow-read: PER_FLOW|READ tables behave like lookup tables")
{
    ScratchDir d("pfr");
    std::string err;
    auto t = Table::open(d.path / "rules.tbl", TableSpec{"rules", PF | RD, 8, 8, 10, 0}, err);
    REQUIRE(t);
    CHECK(t->kind() == TableKind::per_flow);
    uint64_t k = 5, v = 6, out = 0;
    CHECK(t->put(&k, &v) == SERPENS_OK);
    CHECK(t->get(&k, &out) == SERPENS_OK);
    CHECK(out == 6);
}

TEST_CASE("state-global-read: one copy per executor, writes refused after seal")
{
    ScratchDir d("gr");
    StoreOptions o;
    o.root = d.path;
    StateStore store(o);
    Executor &ex = store.executor("chain-a", "ids");
    FakeInstance i0(ex, 0), i1(ex, 1);
    serpens_table *t0 = i0.create("patterns", GL | RD, 8, 16, 100);
    REQUIRE(t0);
    const serpens_host_api &api = state_api();
    uint64_t k = 1;
    char v[16] = "abcdefghijklmno", out[16];
    CHECK(api.put_state(t0, &k, v) == SERPENS_OK);
    ex.seal();
    // Instance 1's init loads the same data: identical re-puts are accepted.
    serpens_table *t1 = i1.create("patterns", GL | RD, 8, 16, 100);
    REQUIRE(t1);
    CHECK(api.put_state(t1, &k, v) == SERPENS_OK);
    char other[16] = "different-value";
    CHECK(api.put_state(t1, &k, other) == SERPENS_ENOTSUP);
    uint64_t k2 = 2;
    CHECK(api.put_state(t0, &k2, v) == SERPENS_ENOTSUP);
    CHECK(api.delete_state(t0, &k) == SERPENS_ENOTSUP);
    CHECK(api.get_state(t1, &k, out) == SERPENS_OK);
    CHECK(std::memcmp(out, v, 16) == 0);
    CHECK(ex.find("patterns")->header().sealed == 1);
    // Same name with other sizes: refused, existing table untouched.
    CHECK(i1.create("patterns", GL | RD, 8, 32, 100) == nullptr);
    CHECK(i1.create("patterns", PF | RD, 8, 16, 100) == nullptr);
    CHECK(i1.create("bad", GL | WR, 8, 16, 100) == nullptr);
}

TEST_CASE("state-global-read: a copy from the chain's owner replaces the sealed table, entry by entry")
{
    ScratchDir d("grcopy");
    StoreOptions o;
    o.root = d.path;
    StateStore store(o);
    Executor &ex = store.executor("chain-a", "ids");
    FakeInstance i0(ex, 0);
    serpens_table *t0 = i0.create("patterns", GL | RD, 8, 8, 4);
    REQUIRE(t0);
    const serpens_host_api &api = state_api();
    for (uint64_t k = 1; k <= 4; ++k) {
        const uint64_t v = 100 + k;
        REQUIRE(api.put_state(t0, &k, &v) == SERPENS_OK);
    }
    ex.seal();
    Table &t = *ex.find("patterns");
    const auto entry = [](uint64_t k, uint64_t v) {
        return std::pair{std::string(reinterpret_cast<const char *>(&k), 8),
                         std::string(reinterpret_cast<const char *>(&v), 8)};
    };
    // The owner has 2 (changed), 3 (same) and 9 (new); 1 and 4 go.  The table
    // was full: removals make room first.
    const std::map<std::string, std::string> owners{entry(2, 22), entry(3, 103), entry(9, 99)};
    CHECK(ex.copy_read_state(t, owners) == SERPENS_OK);
    CHECK(ex.read_entries(t) == owners);
    uint64_t out = 0;
    uint64_t k = 1;
    CHECK(api.get_state(t0, &k, &out) == SERPENS_ENOENT);
    k = 9;
    CHECK(api.get_state(t0, &k, &out) == SERPENS_OK);
    CHECK(out == 99);
    // An instance that starts later loads its own config in init: the copy stays.
    FakeInstance i1(ex, 1);
    serpens_table *t1 = i1.create("patterns", GL | RD, 8, 8, 4);
    REQUIRE(t1);
    k = 2;
    const uint64_t own = 102;
    CHECK(api.put_state(t1, &k, &own) == SERPENS_OK);
    CHECK(api.get_state(t1, &k, &out) == SERPENS_OK);
    CHECK(out == 22);
    // NFs still cannot delete from it.
    CHECK(api.delete_state(t1, &k) == SERPENS_ENOTSUP);
    // Entries of another size change nothing.
    std::map<std::string, std::string> wrong = owners;
    wrong.emplace(std::string(7, 'k'), std::string(8, 'v'));
    CHECK(ex.copy_read_state(t, wrong) == SERPENS_EINVAL);
    CHECK(ex.read_entries(t) == owners);
    // More entries than the table holds: refused as full.
    std::map<std::string, std::string> big;
    for (uint64_t n = 0; n < 64; ++n) {
        big.insert(entry(1000 + n, n));
    }
    CHECK(ex.copy_read_state(t, big) == SERPENS_ENOSPC);
}

TEST_CASE("state-abi: per-flow table through the host API; instances share it")
{
    ScratchDir d("abi");
    StoreOptions o;
    o.root = d.path;
    StateStore store(o);
    Executor &ex = store.executor("c1", "fw");
    FakeInstance a(ex, 0), b(ex, 1);
    serpens_table *ta = a.create("conn", PF | WR, 13, 8, 1000);
    serpens_table *tb = b.create("conn", PF | WR, 13, 8, 1000);
    REQUIRE(ta);
    REQUIRE(tb);
    const serpens_host_api &api = state_api();
    uint8_t k[13];
    key_of(k, 42);
    uint64_t v = 99, out = 0;
    CHECK(api.put_state(ta, k, &v) == SERPENS_OK);
    CHECK(api.get_state(tb, k, &out) == SERPENS_OK);
    CHECK(out == 99);
    uint64_t mask = api.get_state_bulk(tb, k, 1, &out);
    CHECK(mask == 1);
    CHECK(api.delete_state(tb, k) == SERPENS_OK);
    CHECK(api.get_state(ta, k, &out) == SERPENS_ENOENT);
    CHECK(api.split(ta, k) == SERPENS_EINVAL); // not global/write
    CHECK(std::filesystem::exists(d.path / "c1" / "fw" / "conn.tbl"));
    // A context without executor is refused with a log, not a crash.
    FakeInstance lost(ex, 2);
    lost.nc.executor = nullptr;
    CHECK(lost.create("conn", PF | WR, 13, 8, 1000) == nullptr);
}

TEST_CASE("state-abi: scan_state walks every live entry once per pass, in slices, and refuses cell tables")
{
    ScratchDir d("scan");
    StoreOptions o;
    o.root = d.path;
    StateStore store(o);
    Executor &ex = store.executor("c1", "nat");
    FakeInstance a(ex, 0);
    serpens_table *t = a.create("in", PF | WR, 13, 8, 1000);
    REQUIRE(t);
    const serpens_host_api &api = state_api();
    REQUIRE(SERPENS_HOST_HAS(&api, scan_state));
    REQUIRE(SERPENS_HOST_HAS(&api, table_slots));
    uint8_t k[13];
    for (uint64_t i = 0; i < 300; ++i) {
        key_of(k, i);
        uint64_t v = i * 3;
        REQUIRE(api.put_state(t, k, &v) == SERPENS_OK);
    }
    for (uint64_t i = 0; i < 300; i += 3) { // tombstones in the middle of runs
        key_of(k, i);
        REQUIRE(api.delete_state(t, k) == SERPENS_OK);
    }
    const uint64_t slots = api.table_slots(t);
    REQUIRE(slots >= 1000);
    // One pass from an arbitrary cursor in slices of 37 slots.
    std::vector<int> seen(300, 0);
    uint64_t cursor = slots / 2 + 5, walked = 0;
    while (walked < slots) {
        const uint64_t before = cursor;
        const uint32_t want = static_cast<uint32_t>(std::min<uint64_t>(37, slots - walked));
        uint8_t key[13];
        uint64_t v = 0;
        const int rc = api.scan_state(t, &cursor, want, key, &v);
        REQUIRE(cursor < slots);
        const uint64_t moved = (cursor + slots - before) % slots;
        if (rc == SERPENS_ENOENT) {
            CHECK(moved == want % slots);
            walked += want;
            continue;
        }
        REQUIRE(rc == SERPENS_OK);
        REQUIRE(moved >= 1);
        REQUIRE(moved <= want);
        walked += moved;
        uint64_t id = 0;
        std::memcpy(&id, key, 8);
        REQUIRE(id < 300);
        CHECK(v == id * 3);
        ++seen[id];
    }
    for (uint64_t i = 0; i < 300; ++i) {
        CHECK_MESSAGE(seen[i] == (i % 3 == 0 ? 0 : 1), "key ", i);
    }
    serpens_table *g = a.create("pool", GL | WR | REL, 8, 8, 16);
    REQUIRE(g);
    uint64_t c0 = 0, key8 = 0, v8 = 0;
    CHECK(api.scan_state(g, &c0, 16, &key8, &v8) == SERPENS_ENOTSUP);
}

TEST_CASE("state-readonly: dump and check through a read-only mapping")
{
    ScratchDir d("ro");
    std::string err;
    auto t = Table::open(d.path / "flows.tbl", flow_spec(100), err);
    REQUIRE(t);
    uint8_t k[13], v[24] = {};
    for (uint64_t i = 0; i < 10; ++i) {
        key_of(k, i);
        REQUIRE(t->put(k, v) == SERPENS_OK);
    }
    auto ro = Table::open_readonly(d.path / "flows.tbl", err);
    REQUIRE(ro);
    CHECK(ro->read_only());
    int n = 0;
    ro->dump([&](const uint8_t *, const uint8_t *) { ++n; });
    CHECK(n == 10);
    CHECK(ro->check().ok());
}
