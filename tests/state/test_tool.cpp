// serpens-state against a prepared store: list, dump (text and JSON), check
// exiting non-zero on a segment with an interrupted write, and flows (a
// chain's flow table) read-only; tables decoded by their NF's layout; and
// `serpensctl state`, which must print exactly what serpens-state prints.

#include "state_test_util.h"

#include "net/parse.h"
#include "state/flow_table.h"
#include "state/record_layout.h"
#include "state/table.h"

#include <doctest/doctest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sys/wait.h>

using namespace serpens::state;
using namespace serpens::state::test;

namespace {

struct Run {
    int status;
    std::string out;
};

// `args` run by the tool in the environment variable `tool_env`.
Run run(const std::string &args, const char *tool_env = "SERPENS_STATE_TOOL", bool with_stderr = true)
{
    const char *tool = std::getenv(tool_env);
    REQUIRE_MESSAGE(tool != nullptr, tool_env << " not set (run through meson test)");
    std::string cmd = std::string(tool) + " " + args + (with_stderr ? " 2>&1" : " 2>/dev/null");
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

// Whether some line of `text` matches `pattern` (a table row: cells are
// separated by runs of spaces).
bool has_row(const std::string &text, const std::string &pattern)
{
    return std::regex_search(text, std::regex("(^|\n)" + pattern + "(\n|$)"));
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
    CHECK_MESSAGE(has_row(l.out, "web chain +fw +conn +per-flow +4 +4 +1 +100 .* - +hex"), l.out);
    CHECK_MESSAGE(has_row(l.out, "web chain +fw +bytes +global/write eventual +4 +8 +1 +10 .* 0x1 +hex"), l.out);

    Run dj = run(root + " dump 'web chain' fw conn --json");
    CHECK(dj.status == 0);
    CHECK(dj.out.find("\"key\":\"0d0c0b0a\"") != std::string::npos);
    CHECK(dj.out.find("\"value\":\"44332211\"") != std::string::npos);
    Run dt = run(root + " dump 'web chain' fw bytes");
    CHECK(dt.status == 0);
    CHECK_MESSAGE(has_row(dt.out, "0d0c0b0a +instance 0 +0500000000000000"), dt.out);
    CHECK(dt.out.find("hex (the NF declares no layout)") != std::string::npos);

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

TEST_CASE("state-tool: flows prints a chain's flow table read-only, each NF's area as words")
{
    ScratchDir d("tool-flows");
    StoreOptions o;
    o.root = d.path;
    const std::string root = "--root " + d.path.string();
    // Nothing there: an error, and nothing created.
    Run none = run(root + " flows 'web chain'");
    CHECK(none.status == 1);
    CHECK(none.out.find("flows.seg") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(d.path / StateStore::escape("web chain")));
    {
        StateStore store(o);
        FlowTableSpec spec;
        spec.chain = "web chain";
        spec.capacity = 1024;
        spec.areas = {{"fw", 16, 0}, {"pass", 0, 0}, {"mon", 64, 0}};
        bool first = false;
        FlowTable &t = store.flow_table(spec, first);
        REQUIRE(first);
        // 10.0.0.2:5000 -> 10.0.0.1:80: the first packet came from endpoint b.
        std::array<uint8_t, 64> frame{};
        uint8_t *ip = frame.data() + 14;
        frame[12] = 0x08;
        ip[0] = 0x45, ip[3] = 28, ip[8] = 64, ip[9] = 17;
        const uint8_t src[4] = {10, 0, 0, 2}, dst[4] = {10, 0, 0, 1};
        std::memcpy(ip + 12, src, 4);
        std::memcpy(ip + 16, dst, 4);
        ip[20] = 5000 >> 8, ip[21] = 5000 & 0xff, ip[22] = 0, ip[23] = 80, ip[25] = 8;
        serpens_pkt view{};
        view.data = frame.data();
        view.len = static_cast<uint32_t>(frame.size());
        serpens::net::FlowKey key;
        REQUIRE(serpens::net::parse_packet(view, key) == serpens::net::ParseResult::ok);
        void *entry = nullptr;
        uint8_t flags = 0;
        t.lookup_burst(&view, sizeof view, 1, 1'000'000'000, &entry, &flags);
        REQUIRE(entry != nullptr);
        const FlowArea &mon = t.spec().areas.back();
        REQUIRE(mon.nf == "mon");
        const uint64_t words[8] = {3, 180, 1'000'000'000, 0, 1, 60, 2, 120};
        std::memcpy(static_cast<uint8_t *>(entry) + mon.offset, words, sizeof words);
    }
    const auto seg = d.path / StateStore::escape("web chain") / "flows.seg";
    const auto before = std::filesystem::last_write_time(seg);
    Run j = run(root + " flows 'web chain' --json");
    CHECK_MESSAGE(j.status == 0, j.out);
    CHECK(j.out.find("\"chain\":\"web chain\"") != std::string::npos);
    CHECK(j.out.find("\"areas\":[{\"nf\":\"fw\",\"size\":16,") != std::string::npos);
    CHECK(j.out.find("\"addr_a\":\"10.0.0.1\",\"addr_b\":\"10.0.0.2\",\"port_a\":80,\"port_b\":5000,\"proto\":17,"
                     "\"ip_version\":4,\"initiator\":\"b\"") != std::string::npos);
    CHECK(j.out.find("\"areas\":{\"fw\":[0,0],\"mon\":[3,180,1000000000,0,1,60,2,120]}") != std::string::npos);
    CHECK(j.out.find("\"pass\"") == std::string::npos); // no per-flow state: no area
    Run txt = run(root + " flows 'web chain'");
    CHECK_MESSAGE(txt.status == 0, txt.out);
    CHECK(txt.out.find("1 live") != std::string::npos);
    CHECK_MESSAGE(has_row(txt.out, "addr_a +port_a +addr_b +port_b +proto +initiator +fw +mon"), txt.out);
    CHECK_MESSAGE(
        has_row(txt.out, "10\\.0\\.0\\.1 +80 +10\\.0\\.0\\.2 +5000 +17 +b +0 0 +3 180 1000000000 0 1 60 2 120"),
        txt.out);
    CHECK(std::filesystem::last_write_time(seg) == before); // read-only
    // Not a flow table: refused, left in place.
    std::filesystem::create_directories(d.path / "junk");
    std::ofstream(d.path / "junk" / "flows.seg") << std::string(8192, 'x');
    Run junk = run(root + " flows junk");
    CHECK(junk.status == 1);
    CHECK(junk.out.find("not a flow table of this version") != std::string::npos);
    CHECK(std::filesystem::file_size(d.path / "junk" / "flows.seg") == 8192);
}

TEST_CASE("state-tool: -c host.toml finds a custom state_dir; list and check in JSON; exit codes")
{
    // A host.toml whose state_dir is neither the default nor absolute: it
    // resolves against the file's directory, as the host resolves it.
    ScratchDir d("tool-config");
    std::filesystem::create_directories(d.path / "plugins");
    std::filesystem::create_directories(d.path / "chains");
    const auto config = d.path / "host.toml";
    std::ofstream(config) << "[host]\nid = \"tool-config-test\"\nplugin_dir = \"plugins\"\nchains_dir = \"chains\"\n"
                             "state_dir = \"custom-state\"\n[[port]]\nname = \"p\"\ndevice = \"net_null0\"\n";
    StoreOptions o;
    o.root = d.path / "custom-state";
    {
        StateStore store(o);
        Executor &ex = store.executor("web", "fw");
        FakeInstance i0(ex, 0);
        serpens_table *t = i0.create("conn", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE, 4, 4, 100);
        REQUIRE(t);
        uint32_t k = 1, v = 2;
        REQUIRE(state_api().put_state(t, &k, &v) == SERPENS_OK);
    }
    const std::string c = "-c " + config.string();
    Run l = run(c + " list");
    CHECK_MESSAGE(l.status == 0, l.out);
    CHECK_MESSAGE(has_row(l.out, "web +fw +conn +per-flow +4 +4 +1 +100 .*"), l.out);
    Run lj = run(c + " list --json");
    CHECK_MESSAGE(lj.status == 0, lj.out);
    CHECK(lj.out.find("\"root\":\"" + o.root.string() + "\"") != std::string::npos);
    CHECK(lj.out.find("{\"chain\":\"web\",\"nf\":\"fw\",\"table\":\"conn\",\"kind\":") != std::string::npos);
    CHECK(lj.out.find("\"live\":1,\"capacity\":100") != std::string::npos);
    Run cj = run(c + " check --json");
    CHECK_MESSAGE(cj.status == 0, cj.out);
    CHECK(cj.out.find("\"ok\":true,\"segments\":[{\"chain\":\"web\",\"nf\":\"fw\",\"table\":\"conn\",\"ok\":true,"
                      "\"live\":1") != std::string::npos);
    Run none = run(c + " check --json nochain");
    CHECK(none.status == 1);
    CHECK(none.out.find("\"ok\":false,\"segments\":[]") != std::string::npos);
    // The same host's default root is elsewhere: --host-id alone (no
    // installed config of that id) does not find it.
    // A root that is not there is said to be missing (exit 1), not listed
    // as empty: a mistyped --root once exited 0.
    Run by_id = run("--host-id tool-config-test list");
    CHECK(by_id.status == 1);
    CHECK_MESSAGE(by_id.out.find("/dev/shm/serpens/tool-config-test does not exist: no host kept state") !=
                      std::string::npos,
                  by_id.out);
    Run file_root = run("--root " + config.string() + " list --json");
    CHECK(file_root.status == 1);
    CHECK_MESSAGE(file_root.out.find("is not a directory") != std::string::npos, file_root.out);
    std::filesystem::create_directories(d.path / "empty-state");
    Run empty = run("--root " + (d.path / "empty-state").string() + " list");
    CHECK(empty.status == 0);
    CHECK(empty.out.find("no state segments under") != std::string::npos);

    // 2: a host.toml that is not there or not valid, or -c with --host-id.
    Run missing = run("-c " + (d.path / "nope.toml").string() + " list");
    CHECK(missing.status == 2);
    CHECK(missing.out.find("nope.toml") != std::string::npos);
    std::ofstream(d.path / "bad.toml") << "[host]\nstate_dirr = \"x\"\n";
    Run bad = run("-c " + (d.path / "bad.toml").string() + " list");
    CHECK(bad.status == 2);
    CHECK(bad.out.find("bad.toml:2:") != std::string::npos);
    CHECK(run(c + " --host-id x list").status == 2);
    CHECK(run("list --no-such-option").status == 2);
    CHECK(run("dump web fw conn --limit -1").status == 2); // once 2^64 - 1 entries
}

TEST_CASE("state-tool: a table whose NF declares its layout is dumped field by field, by both tools")
{
    ScratchDir d("tool-layout");
    StoreOptions o;
    o.root = d.path;
    // A NAT-like reverse map: (external ip, port, proto) -> (inside ip, port, owner).
    static const serpens_field key[] = {{"ext_ip", 0, SERPENS_FIELD_IPV4, 0},
                                        {"ext_port", 4, SERPENS_FIELD_BE16, 0},
                                        {"proto", 6, SERPENS_FIELD_U8, 0}};
    static const serpens_field value[] = {
        {"in_ip", 0, SERPENS_FIELD_IPV4, 0}, {"in_port", 4, SERPENS_FIELD_BE16, 0}, {"owner", 6, SERPENS_FIELD_U16, 0}};
    static const serpens_field counts[] = {{"packets", 0, SERPENS_FIELD_U64, 0}};
    static const serpens_table_layout layouts[] = {{"in", key, value, 3, 3, 0}, {"bytes", nullptr, counts, 0, 1, 0}};
    serpens_nf_descriptor desc{};
    desc.struct_size = sizeof desc;
    desc.table_layouts = layouts;
    desc.n_table_layouts = 2;
    {
        StateStore store(o);
        Executor &ex = store.executor("c", "nat");
        FakeInstance i0(ex, 0, &desc);
        serpens_table *in = i0.create("in", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE, 8, 8, 100);
        REQUIRE(in);
        const uint8_t k[8] = {203, 0, 113, 5, 0x9c, 0x40, 17, 0}; // 203.0.113.5:40000 UDP
        const uint8_t v[8] = {10, 0, 0, 2, 0x13, 0x88, 3, 0};     // 10.0.0.2:5000, instance 3
        REQUIRE(state_api().put_state(in, k, v) == SERPENS_OK);
        serpens_table *bytes =
            i0.create("bytes", SERPENS_STATE_GLOBAL | SERPENS_STATE_WRITE | SERPENS_STATE_EVENTUAL, 4, 8, 10);
        REQUIRE(bytes);
        const uint32_t bk = 7;
        const uint64_t n = 42;
        REQUIRE(state_api().put_state(bytes, &bk, &n) == SERPENS_OK);
        // Declared, but not for this table: stays hex.
        REQUIRE(i0.create("conn", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE, 4, 4, 100));
    }
    const std::string root = "--root " + d.path.string();
    Run j = run(root + " dump c nat in --json");
    CHECK_MESSAGE(j.status == 0, j.out);
    CHECK(j.out.find("\"layout\":{\"key\":[{\"name\":\"ext_ip\",\"type\":\"ipv4\",\"offset\":0,\"size\":4},") !=
          std::string::npos);
    CHECK_MESSAGE(j.out.find("{\"key\":\"cb007105"
                             "9c401100\",\"value\":\"0a000002"
                             "13880300\",\"decoded\":{\"key\":{\"ext_ip\":\"203.0.113.5\",\"ext_port\":40000,"
                             "\"proto\":17},\"value\":{\"in_ip\":\"10.0.0.2\",\"in_port\":5000,\"owner\":3}}}") !=
                      std::string::npos,
                  j.out);
    Run t = run(root + " dump c nat in");
    CHECK(t.out.find("decoded by the NF's layout") != std::string::npos);
    CHECK_MESSAGE(has_row(t.out, "ext_ip +ext_port +proto +in_ip +in_port +owner"), t.out);
    CHECK_MESSAGE(has_row(t.out, "203\\.0\\.113\\.5 +40000 +17 +10\\.0\\.0\\.2 +5000 +3"), t.out);
    // Global/write: the base and each instance's cell; a key without fields stays hex.
    Run g = run(root + " dump c nat bytes --json");
    CHECK_MESSAGE(g.out.find("\"decoded\":{\"key\":{},\"base\":{\"packets\":0},\"instances\":[{\"packets\":42},") !=
                      std::string::npos,
                  g.out);
    Run gt = run(root + " dump c nat bytes");
    CHECK_MESSAGE(has_row(gt.out, "key +cell +packets"), gt.out);
    CHECK_MESSAGE(has_row(gt.out, "07000000 +instance 0 +42"), gt.out);
    Run plain = run(root + " dump c nat conn --json");
    CHECK(plain.out.find("\"layout\":null") != std::string::npos);
    CHECK(plain.out.find("decoded") == std::string::npos);
    Run l = run(root + " list --json");
    CHECK(l.out.find("\"table\":\"in\",\"kind\":\"per-flow\"") != std::string::npos);
    CHECK_MESSAGE(l.out.find("\"layout\":true}") != std::string::npos, l.out);
    CHECK_MESSAGE(l.out.find("\"table\":\"conn\",\"kind\":\"per-flow\",\"key_size\":4,\"value_size\":4,\"live\":0,"
                             "\"capacity\":100,\"refused\":0,\"expired\":0,\"torn_repaired\":0,\"torn_discarded\":0,"
                             "\"attaches\":1,\"layout\":false}") != std::string::npos,
                  l.out);

    // serpensctl state reads the same dir with the same code: the same bytes.
    for (const char *args : {" list", " list --json", " dump c nat in", " dump c nat in --json", " dump c nat bytes",
                             " check --json", " dump c nat in --limit 0 --json"}) {
        Run a = run(root + args, "SERPENS_STATE_TOOL", false);
        Run b = run(std::string("state ") + root + args, "SERPENSCTL", false);
        CHECK_MESSAGE(a.out == b.out, args);
        CHECK(a.status == b.status);
    }
    Run missing = run("state " + root + " dump c nat nosuch --json", "SERPENSCTL", false);
    CHECK(missing.status == 1);
    CHECK(missing.out.find("{\"error\":{\"code\":\"not_found\",\"message\":") == 0);

    // A layout file that does not fit the segment is not trusted: hex, and a note.
    std::ofstream(layout_file(d.path / "c" / "nat" / "in.tbl"))
        << "{\"version\":1,\"key_size\":8,\"value_size\":8,\"key\":[{\"name\":\"x\",\"type\":\"u64\",\"offset\":4,"
           "\"size\":8}],\"value\":[]}";
    Run bad = run(root + " dump c nat in --json");
    CHECK(bad.status == 0);
    CHECK(bad.out.find("layout not used, showing hex") != std::string::npos);
    CHECK(bad.out.find("ends past the key's 8 bytes") != std::string::npos);
    CHECK(bad.out.find("\"layout\":null") != std::string::npos);
}
