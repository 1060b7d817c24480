// serpens-state against a prepared store: list, dump (text and JSON), and
// check exiting non-zero on a segment with an interrupted write.

#include "state_test_util.h"

#include "state/table.h"

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sys/wait.h>

using namespace serpens::state;
using namespace serpens::state::test;

namespace {

struct Run {
    int status;
    std::string out;
};

Run run(const std::string &args)
{
    const char *tool = std::getenv("SERPENS_STATE_TOOL");
    REQUIRE_MESSAGE(tool != nullptr, "SERPENS_STATE_TOOL not set (run through meson test)");
    std::string cmd = std::string(tool) + " " + args + " 2>&1";
    FILE *p = ::popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    Run r{0, {}};
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) {
        r.out.append(buf, n);
    }
    int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

} // namespace

TEST_CASE("state-tool: list, dump and check a host's segments read-only")
{
    ScratchDir d("tool");
    StoreOptions o;
    o.root = d.path;
    {
        StateStore store(o);
        Executor &ex = store.executor("web chain", "fw");
        FakeInstance i0(ex, 0);
        serpens_table *t = i0.create("conn", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE, 4, 4, 100);
        REQUIRE(t);
        uint32_t k = 0x0a0b0c0d, v = 0x11223344;
        REQUIRE(state_api().put_state(t, &k, &v) == SERPENS_OK);
        serpens_table *c =
            i0.create("bytes", SERPENS_STATE_GLOBAL | SERPENS_STATE_WRITE | SERPENS_STATE_EVENTUAL, 4, 8, 10);
        REQUIRE(c);
        uint64_t n = 5;
        REQUIRE(state_api().put_state(c, &k, &n) == SERPENS_OK);
    }
    std::string root = "--root " + d.path.string();
    Run l = run(root + " list");
    CHECK(l.status == 0);
    CHECK(l.out.find("executor web chain / fw") != std::string::npos);
    CHECK(l.out.find("conn") != std::string::npos);
    CHECK(l.out.find("live 1/100") != std::string::npos);

    Run dj = run(root + " dump 'web chain' fw conn --json");
    CHECK(dj.status == 0);
    CHECK(dj.out.find("\"key\":\"0d0c0b0a\"") != std::string::npos);
    CHECK(dj.out.find("\"value\":\"44332211\"") != std::string::npos);
    Run dt = run(root + " dump 'web chain' fw bytes");
    CHECK(dt.status == 0);
    CHECK(dt.out.find("instance 0 0500000000000000") != std::string::npos);

    Run ok = run(root + " check");
    CHECK_MESSAGE(ok.status == 0, ok.out);

    // Simulate a crash in the middle of an insert: a slot with its W bit set.
    auto file = d.path / StateStore::escape("web chain") / "fw" / "conn.tbl";
    {
        std::string err;
        auto t = Table::open_readonly(file, err);
        REQUIRE(t);
        REQUIRE(t->n_slots() > 3);
    }
    {
        std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
        SegmentHeader h{};
        f.read(reinterpret_cast<char *>(&h), sizeof(h));
        // Find an empty slot and mark it "being claimed".
        for (uint64_t i = 0; i < h.n_slots; ++i) {
            uint64_t ctl = 0;
            f.seekg(static_cast<std::streamoff>(header_size + i * h.slot_size));
            f.read(reinterpret_cast<char *>(&ctl), 8);
            if (ctl == 0) {
                ctl = ctl_w;
                f.seekp(static_cast<std::streamoff>(header_size + i * h.slot_size));
                f.write(reinterpret_cast<const char *>(&ctl), 8);
                break;
            }
        }
    }
    Run bad = run(root + " check");
    CHECK(bad.status == 1);
    CHECK(bad.out.find("write in flight") != std::string::npos);
    // Re-attaching repairs it (and counts it); check is clean again.
    {
        std::string err;
        auto t = Table::open(file, TableSpec{"conn", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE, 4, 4, 100, 0}, err);
        REQUIRE(t);
        CHECK(t->header().torn_discarded == 1);
        CHECK(t->live() == 1);
    }
    Run fixed = run(root + " check 'web chain' fw conn");
    CHECK_MESSAGE(fixed.status == 0, fixed.out);
    Run none = run(root + " check nochain");
    CHECK(none.status == 1);
}
