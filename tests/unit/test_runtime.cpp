// The chaining runtime runs a compiled chain over a batch by function calls
// with the label array (paper Fig. 8(b)).

#include "support.h"

#include "chain/compiled.h"
#include "support/mem_packets.h"
#include "chain/runtime.h"
#include "config/host_config.h"
#include "core/cache_line.h"
#include "core/error.h"
#include "plugin/host_api.h"
#include "plugin/registry.h"
#include "net/parse.h"
#include "state/executor.h"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <cstdint>
#include <cstring>
#include <memory>
#include <set>
#include <vector>

using namespace serpens;
using serpens::test::install_plugin;
using serpens::test::ScratchDir;

namespace {

struct Harness {
    ScratchDir plugins;
    ScratchDir chains;
    PluginRegistry registry;
    serpens_host_api api = make_host_api(mem_packet_ops());

    Harness()
    {
        for (const char *name : {"noop", "steer", "trace", "bad_init", "abi10", "tally"}) {
            install_plugin(plugins, name);
        }
        registry.load_directory(plugins.path().string());
    }

    std::shared_ptr<const CompiledChain> compile(const std::string &text)
    {
        return compile_chain(parse_chain_file(chains.write("c.toml", text)), registry);
    }
};

// Packets whose first byte selects steer's output port.
struct Batch {
    std::vector<MemPacket> storage;
    std::vector<serpens_pkt> pkts;
    std::vector<uint16_t> labels;

    explicit Batch(const std::vector<uint8_t> &first_bytes)
        : storage(first_bytes.size()), pkts(first_bytes.size()), labels(first_bytes.size())
    {
        for (std::size_t i = 0; i < first_bytes.size(); ++i) {
            std::vector<uint8_t> frame(64, 0);
            frame[0] = first_bytes[i];
            pkts[i] = storage[i].load(frame);
        }
    }

    // The tag bytes NFs appended to packet i, in the order they were appended.
    std::vector<uint8_t> trail(std::size_t i) const
    {
        const serpens_pkt &p = pkts[i];
        return {p.data + 64, p.data + p.len};
    }
};

} // namespace

TEST_CASE("Fig. 8(b): FW branches to IDS or MON; labels read 2-3-3-2")
{
    Harness h;
    auto chain = h.compile(R"(name = "fig8b"
[[nf]]
name = "fw"
plugin = "steer"
config = { tag = 1 }
[[nf]]
name = "ids"
plugin = "trace"
config = { tag = 2 }
[[nf]]
name = "mon"
plugin = "trace"
config = { tag = 3 }
[[distribute]]
from = "fw"
to = ["mon", "ids"]
)");
    ChainInstance instance(chain, 0, &h.api);
    // Port 1 (suspicious) -> IDS, port 0 -> MON.
    Batch batch({1, 0, 0, 1});

    // Prime sequential order FW(1), IDS(2), MON(3): suspicious (port 1) -> IDS.
    CHECK(chain->nfs[0].next[1] == 2);
    CHECK(chain->nfs[0].next[0] == 3);

    uint32_t out = instance.run(batch.pkts.data(), 4, batch.labels.data(), 0);
    CHECK(out == 4);
    for (uint16_t label : batch.labels) {
        CHECK(label == SERPENS_LABEL_OUT);
    }
    // Each packet saw exactly the NFs on its path, in order: FW then IDS/MON.
    CHECK(batch.trail(0) == std::vector<uint8_t>{1, 2});
    CHECK(batch.trail(1) == std::vector<uint8_t>{1, 3});
    CHECK(batch.trail(2) == std::vector<uint8_t>{1, 3});
    CHECK(batch.trail(3) == std::vector<uint8_t>{1, 2});
    CHECK(instance.stats(0).packets == 4);
    CHECK(instance.stats(1).packets == 2);
    CHECK(instance.stats(2).packets == 2);
}

TEST_CASE("Fig. 8(b): the label array after FW is 2-3-3-2")
{
    // Calls FW by hand on a batch, then maps its ports through the compiled
    // edges exactly as the runtime does, to read the label array after FW.
    Harness h;
    auto chain = h.compile(R"(name = "fig8b"
[[nf]]
name = "fw"
plugin = "steer"
[[nf]]
name = "ids"
plugin = "noop"
[[nf]]
name = "mon"
plugin = "noop"
[[distribute]]
from = "fw"
to = ["mon", "ids"]
)");
    Batch batch({1, 0, 0, 1});
    std::vector<uint8_t> ports(4, 0);
    serpens_batch b{};
    b.struct_size = sizeof b;
    b.count = 4;
    b.self = 1;
    b.pkts = batch.pkts.data();
    b.pkt_stride = sizeof(serpens_pkt);
    std::vector<uint16_t> labels(4, 1);
    b.labels = labels.data();
    b.ports = ports.data();
    ChainInstance instance(chain, 0, &h.api); // owns the NF contexts
    const serpens_nf_ctx *fw_ctx = &instance.context(0).pub;
    chain->nfs[0].desc->process(const_cast<serpens_nf_ctx *>(fw_ctx), &b);
    for (std::size_t i = 0; i < 4; ++i) {
        labels[i] = chain->nfs[0].next[ports[i]];
    }
    CHECK(labels == std::vector<uint16_t>{2, 3, 3, 2});
}

TEST_CASE("a plugin built against the frozen ABI 1.0 header runs in a chain beside a 1.4 one")
{
    Harness h;
    // abi10 indexes batch->pkts[i] at the 1.0 size; trace walks the same
    // views with serpens_batch_pkt.  Both must see the same packets.
    auto chain = h.compile(R"(name = "old-and-new"
chain = ["old", "new"]
[[nf]]
name = "old"
plugin = "abi10"
[[nf]]
name = "new"
plugin = "trace"
config = { tag = 7 }
)");
    ChainInstance instance(chain, 0, &h.api);
    Batch batch({0, 1, 2, 3, 4});
    uint32_t out = instance.run(batch.pkts.data(), 5, batch.labels.data(), 0);
    CHECK(out == 3);
    // abi10 decided: odd first bytes dropped, even ones rewritten to 0x10.
    CHECK(batch.labels == std::vector<uint16_t>{SERPENS_LABEL_OUT, SERPENS_LABEL_DROP, SERPENS_LABEL_OUT,
                                                SERPENS_LABEL_DROP, SERPENS_LABEL_OUT});
    for (std::size_t i : {0u, 2u, 4u}) {
        CHECK(batch.pkts[i].data[0] == 0x10);
        CHECK(batch.trail(i) == std::vector<uint8_t>{7}); // then trace saw it
    }
    CHECK(batch.pkts[1].data[0] == 1); // dropped untouched
    CHECK(batch.trail(1).empty());
    CHECK(instance.stats(0).dropped == 2);
    CHECK(instance.stats(1).packets == 3);
}

// steer, then trace: fw's port 0 goes on to tail, 1 is dropped, 2 leaves,
// 3 goes to tail too.
constexpr const char *kSteerToTail = R"(name = "drops"
chain = ["fw", "tail"]
[[nf]]
name = "fw"
plugin = "steer"
[[nf]]
name = "tail"
plugin = "trace"
[[distribute]]
from = "fw"
to = ["tail", "drop", "out", "tail"]
)";

TEST_CASE("drops are counted per NF and never reach egress")
{
    Harness h;
    auto chain = h.compile(kSteerToTail);
    ChainInstance instance(chain, 0, &h.api);
    Batch batch({0, 1, 2, 3, 0xff, 1});
    uint32_t out = instance.run(batch.pkts.data(), 6, batch.labels.data(), 0);
    CHECK(out == 3);
    CHECK(batch.labels == std::vector<uint16_t>{SERPENS_LABEL_OUT, SERPENS_LABEL_DROP, SERPENS_LABEL_OUT,
                                                SERPENS_LABEL_OUT, SERPENS_LABEL_DROP, SERPENS_LABEL_DROP});
    CHECK(instance.stats(0).packets == 6);
    CHECK(instance.stats(0).dropped == 3);
    CHECK(instance.stats(1).packets == 2); // only ports 0 and 3 reach tail
    CHECK(batch.trail(2).size() == 1);     // port 2 left straight after fw
    CHECK(batch.trail(3).size() == 2);
}

TEST_CASE("what an instance writes per batch shares no cache line with another allocation")
{
    // Two lcores each writing their instance's counters into one line halved
    // what the second lcore added (serpens-bench throughput, 2 lcores).
    const auto line = [](const void *p) { return reinterpret_cast<uintptr_t>(p) / cache_line; };
    Harness h;
    auto chain = h.compile(kSteerToTail);
    ChainInstance a(chain, 0, &h.api);
    ChainInstance b(chain, 1, &h.api);
    for (const ChainInstance *instance : {&a, &b}) {
        for (std::size_t nf = 0; nf < instance->size(); ++nf) {
            CHECK(reinterpret_cast<uintptr_t>(&instance->stats(nf)) % cache_line == 0);
        }
    }
    CHECK(line(&a.stats(1)) != line(&b.stats(0)));
    // Small vectors take whole lines: blocks malloc hands out between them
    // (which it packs 32 bytes apart) fall outside those lines.
    std::vector<LineVector<uint32_t>> vectors;
    std::vector<std::unique_ptr<uint64_t>> others;
    for (int i = 0; i < 32; ++i) {
        vectors.emplace_back(3);
        others.push_back(std::make_unique<uint64_t>(0));
    }
    std::set<uintptr_t> lines;
    for (const LineVector<uint32_t> &v : vectors) {
        CHECK(reinterpret_cast<uintptr_t>(v.data()) % cache_line == 0);
        lines.insert(line(v.data()));
    }
    for (const std::unique_ptr<uint64_t> &other : others) {
        CHECK(lines.count(line(other.get())) == 0);
    }
}

TEST_CASE("a batch that all goes on by the default port and one that branches are counted alike")
{
    Harness h;
    auto chain = h.compile(kSteerToTail);
    ChainInstance instance(chain, 0, &h.api);
    // Every packet visits each NF and takes the default port: the runtime's
    // short way.  Each NF appends a tag, so bytes are counted after it ran.
    Batch all({0, 0, 0});
    CHECK(instance.run(all.pkts.data(), 3, all.labels.data(), 0) == 3);
    CHECK(all.labels == std::vector<uint16_t>(3, SERPENS_LABEL_OUT));
    CHECK(instance.stats(0).packets == 3);
    CHECK(instance.stats(0).bytes == 3 * 65);
    CHECK(instance.stats(1).packets == 3);
    CHECK(instance.stats(1).bytes == 3 * 66);
    CHECK(all.trail(1).size() == 2);
    // One packet takes port 1 (drop): each packet is mapped on its own.
    Batch branching({0, 1, 0});
    CHECK(instance.run(branching.pkts.data(), 3, branching.labels.data(), 0) == 2);
    CHECK(branching.labels == std::vector<uint16_t>{SERPENS_LABEL_OUT, SERPENS_LABEL_DROP, SERPENS_LABEL_OUT});
    CHECK(instance.stats(0).packets == 6);
    CHECK(instance.stats(0).dropped == 1);
    CHECK(instance.stats(0).bytes == 6 * 65);
    CHECK(instance.stats(1).packets == 5);
    CHECK(instance.stats(1).bytes == 5 * 66);
    // The dropped packet's port did not stay behind for the next batch.
    Batch again({0, 0});
    CHECK(instance.run(again.pkts.data(), 2, again.labels.data(), 0) == 2);
    CHECK(again.labels == std::vector<uint16_t>(2, SERPENS_LABEL_OUT));
    CHECK(instance.stats(0).dropped == 1);
    CHECK(instance.stats(1).packets == 7);
}

TEST_CASE("an NF no packet visits is not called, and ports reset between batches")
{
    Harness h;
    auto chain = h.compile(R"(name = "skip"
[[nf]]
name = "fw"
plugin = "steer"
[[nf]]
name = "rare"
plugin = "trace"
[[nf]]
name = "common"
plugin = "trace"
[[distribute]]
from = "fw"
to = ["common", "rare"]
)");
    ChainInstance instance(chain, 0, &h.api);
    Batch first({0, 0, 0});
    instance.run(first.pkts.data(), 3, first.labels.data(), 0);
    CHECK(instance.stats(1).batches == 0);
    CHECK(instance.stats(2).batches == 1);
    Batch second({1, 0});
    instance.run(second.pkts.data(), 2, second.labels.data(), 0);
    CHECK(instance.stats(1).packets == 1);
    CHECK(instance.stats(2).packets == 4);
    // The NF's counters are its own, readable by the host.
    const CounterBlock &counters = instance.context(2).counters;
    REQUIRE(counters.size() == 1);
    CHECK(counters.name(0) == "seen");
    CHECK(counters.value(0) == 4);
}

TEST_CASE("a failing init refuses the chain and fini still runs once")
{
    Harness h;
    auto chain = h.compile(R"(name = "broken"
chain = ["a", "b"]
[[nf]]
name = "a"
plugin = "trace"
[[nf]]
name = "b"
plugin = "bad_init"
)");
    auto *fini_calls = static_cast<int *>(h.registry.find("bad_init")->symbol("bad_init_fini_calls"));
    REQUIRE(fini_calls != nullptr);
    int before = *fini_calls;
    CHECK_THROWS_WITH_AS(ChainInstance(chain, 0, &h.api),
                         doctest::Contains("NF 'b' (plugin bad_init) refused to start: init returned -22"), Error);
    CHECK(*fini_calls == before + 1);
}

TEST_CASE("a plugin's config error names the file and line")
{
    Harness h;
    auto chain = h.compile("name = \"cfg\"\n[[nf]]\nname = \"a\"\nplugin = \"steer\"\n[nf.config]\nby = \"color\"\n");
    CHECK_THROWS_AS(ChainInstance(chain, 0, &h.api), Error);
    // The NF read its config through the host API: where() points at line 6.
    char where[256];
    REQUIRE(h.api.config_where(chain->nfs[0].config.get(), "by", where, sizeof where) == SERPENS_OK);
    CHECK(std::string(where) == (h.chains / "c.toml") + ":6:6");
    const char *value = nullptr;
    CHECK(h.api.config_string(chain->nfs[0].config.get(), "by", &value) == SERPENS_OK);
    CHECK(std::string(value) == "color");
    int64_t number = 0;
    CHECK(h.api.config_int(chain->nfs[0].config.get(), "by", &number) == SERPENS_EINVAL);
    CHECK(h.api.config_int(chain->nfs[0].config.get(), "missing", &number) == SERPENS_ENOENT);
}

TEST_CASE("config_double gives numbers, and refuses nan and inf, which an NF's range check would let through")
{
    Harness h;
    auto chain = h.compile("name = \"cfg\"\n[[nf]]\nname = \"a\"\nplugin = \"steer\"\n[nf.config]\n"
                           "by = \"color\"\nratio = 0.25\nwhole = 3\nbad = nan\nhuge = inf\n");
    const serpens_config *cfg = chain->nfs[0].config.get();
    double value = -1;
    CHECK(h.api.config_double(cfg, "ratio", &value) == SERPENS_OK);
    CHECK(value == 0.25);
    CHECK(h.api.config_double(cfg, "whole", &value) == SERPENS_OK);
    CHECK(value == 3.0);
    value = -1;
    CHECK(h.api.config_double(cfg, "bad", &value) == SERPENS_EINVAL);
    CHECK(h.api.config_double(cfg, "huge", &value) == SERPENS_EINVAL);
    CHECK(value == -1); // untouched
}

TEST_CASE("config_file: every instance of a chain version gets the bytes the first read; a reload sees the edit")
{
    Harness h;
    const std::string rules = h.chains.write("x.rules", "version 1\n");
    auto chain = h.compile("name = \"f\"\n[[nf]]\nname = \"a\"\nplugin = \"steer\"\n[nf.config]\nfile = \"x.rules\"\n"
                           "missing = \"nowhere.rules\"\nnumber = 3\n");
    const serpens_config *cfg = chain->nfs[0].config.get();
    auto read = [&](const char *key, size_t max, std::string &out) {
        const char *data = nullptr;
        size_t size = 0;
        char err[512] = "";
        const int rc = h.api.config_file(cfg, key, max, &data, &size, err, sizeof err);
        out = rc == SERPENS_OK ? std::string(data, size) : std::string(err);
        return rc;
    };
    std::string got;
    REQUIRE(read("file", 1 << 20, got) == SERPENS_OK);
    CHECK(got == "version 1\n");
    CHECK(config::changed_files(*cfg).empty());

    // Edited under the running chain: a later instance (a scale-out) still
    // reads version 1, and a reload learns that the file changed.
    h.chains.write("x.rules", "version 2, longer\n");
    REQUIRE(read("file", 1 << 20, got) == SERPENS_OK);
    CHECK(got == "version 1\n");
    CHECK(config::changed_files(*cfg) == std::vector<std::string>{rules});
    h.chains.write("x.rules", "version 1\n"); // put back: nothing to swap
    CHECK(config::changed_files(*cfg).empty());
    std::filesystem::remove(rules); // gone: its chain must be swapped, and that init says why
    CHECK(config::changed_files(*cfg) == std::vector<std::string>{rules});

    // The next version of the chain reads the file again.
    h.chains.write("x.rules", "version 3\n");
    auto next = h.compile("name = \"f\"\n[[nf]]\nname = \"a\"\nplugin = \"steer\"\n[nf.config]\nfile = \"x.rules\"\n");
    const char *data = nullptr;
    size_t size = 0;
    char err[512];
    REQUIRE(h.api.config_file(next->nfs[0].config.get(), "file", 1 << 20, &data, &size, err, sizeof err) == SERPENS_OK);
    CHECK(std::string(data, size) == "version 3\n");

    // Errors: the NF's size limit, a missing file, a missing key, not a string.
    CHECK(read("file", 4, got) == SERPENS_EINVAL);
    CHECK(got.find("over the limit of 4 bytes") != std::string::npos);
    CHECK(read("missing", 1 << 20, got) == SERPENS_ENOENT);
    CHECK(got.find("nowhere.rules: cannot read") != std::string::npos);
    CHECK(read("absent", 1 << 20, got) == SERPENS_ENOENT);
    CHECK(got == "absent: no such key");
    CHECK(read("number", 1 << 20, got) == SERPENS_EINVAL);
}

TEST_CASE("packet helpers keep the view and header offsets in step")
{
    serpens_host_api api = make_host_api(mem_packet_ops());
    MemPacket m;
    std::vector<uint8_t> frame(60, 0xab);
    serpens_pkt pkt = m.load(frame);
    pkt.l3_offset = 14;
    pkt.l4_offset = 34;
    pkt.payload_offset = SERPENS_OFFSET_NONE;
    uint8_t *head = api.pkt_prepend(&pkt, 8);
    REQUIRE(head != nullptr);
    CHECK(pkt.len == 68);
    CHECK(pkt.data == head);
    CHECK(pkt.l3_offset == 22);
    CHECK(pkt.l4_offset == 42);
    CHECK(pkt.payload_offset == SERPENS_OFFSET_NONE);
    CHECK(api.pkt_adj(&pkt, 30) == SERPENS_OK);
    CHECK(pkt.l3_offset == SERPENS_OFFSET_NONE);
    CHECK(pkt.l4_offset == 12);
    CHECK(api.pkt_trim(&pkt, 38) == SERPENS_OK);
    CHECK(pkt.len == 0);
    CHECK(api.pkt_trim(&pkt, 1) == SERPENS_EINVAL);
    CHECK(api.pkt_prepend(&pkt, MemPacket::capacity) == nullptr);
    CHECK(api.pkt_append(&pkt, MemPacket::capacity) == nullptr);
}

TEST_CASE("a config key the NF never read refuses the chain at that key, after fini")
{
    Harness h;
    auto chain = h.compile(R"(name = "typo"
chain = ["a", "b"]
[[nf]]
name = "a"
plugin = "trace"
[[nf]]
name = "b"
plugin = "steer"
[nf.config]
by = "proto"
ofset = 3
)");
    auto *fini_calls = static_cast<int *>(h.registry.find("trace")->symbol("trace_fini_calls"));
    REQUIRE(fini_calls != nullptr);
    int before = *fini_calls;
    std::string expected =
        (h.chains / "c.toml") +
        ":11:1: unknown key 'ofset' in the config of NF 'b' (plugin steer); it reads: by, offset, tag";
    CHECK_THROWS_WITH_AS(ChainInstance(chain, 0, &h.api), expected.c_str(), ConfigError);
    CHECK(*fini_calls == before + 1); // 'a' had started: it is finalized

    // Tables the NF never looks into are named as a whole; every key is named.
    chain = h.compile("name = \"t\"\n[[nf]]\nname = \"a\"\nplugin = \"trace\"\n[nf.config]\ntag = 1\n"
                      "[nf.config.pool]\nsize = 3\n");
    CHECK_THROWS_WITH_AS(ChainInstance(chain, 0, &h.api),
                         doctest::Contains(":7:12: unknown key 'pool' in the config of NF 'a' (plugin trace)"),
                         ConfigError);
    // The same keys, all read: the chain starts.
    chain = h.compile("name = \"t\"\n[[nf]]\nname = \"a\"\nplugin = \"trace\"\n[nf.config]\ntag = 1\n"
                      "by_instance = true\n");
    CHECK_NOTHROW(ChainInstance(chain, 0, &h.api));
}

TEST_CASE("unread_keys: paths touch their prefixes; where() reads nothing; leaves count only when read")
{
    Harness h;
    auto chain = h.compile(R"(name = "keys"
[[nf]]
name = "a"
plugin = "noop"
[nf.config]
a = { b = [ { c = 1, d = 2 }, { c = 3 } ], e = 1 }
f = [1, 2]
g = { h = 1 }
i = "x"
j = 5
k = 5
)");
    const serpens_config *cfg = chain->nfs[0].config.get();
    int64_t v = 0;
    size_t n = 0;
    char where[256];
    const char *s = nullptr;
    CHECK(h.api.config_int(cfg, "a.b[0].c", &v) == SERPENS_OK);
    CHECK(h.api.config_int(cfg, "a.b[1].c", &v) == SERPENS_OK);
    CHECK(h.api.config_array_size(cfg, "f", &n) == SERPENS_OK);
    CHECK(h.api.config_where(cfg, "g.h", where, sizeof where) == SERPENS_OK);
    CHECK(h.api.config_int(cfg, "i", &v) == SERPENS_EINVAL); // asked for, wrong type: still read
    CHECK(h.api.config_string(cfg, "absent", &s) == SERPENS_ENOENT);
    CHECK(h.api.config_int(cfg, "k.x", &v) == SERPENS_ENOENT); // read as a table; the file has a number
    std::string file = h.chains / "c.toml";
    std::vector<std::string> unread = config::unread_keys(*cfg);
    REQUIRE(unread.size() == 5);
    CHECK(unread[0] == file + ":6:22: unknown key 'a.b[0].d' in the config of NF 'a' (plugin noop); it reads: c");
    CHECK(unread[1] == file + ":6:44: unknown key 'a.e' in the config of NF 'a' (plugin noop); it reads: b");
    CHECK(unread[2] ==
          file + ":8:1: unknown key 'g' in the config of NF 'a' (plugin noop); it reads: a, absent, f, i, k");
    CHECK(unread[3] ==
          file + ":10:1: unknown key 'j' in the config of NF 'a' (plugin noop); it reads: a, absent, f, i, k");
    // Once "unknown key 'k' ...; it reads: ..., k": a contradiction.
    CHECK(unread[4] ==
          file + ":11:1: 'k' in the config of NF 'a' (plugin noop) is read as a table (k.x ...), not a single value");
}

TEST_CASE("[nf_defaults.<plugin>] of host.toml fills the keys a chain file leaves out, and is checked like it")
{
    Harness h;
    std::string host_toml = h.chains / "host.toml";
    HostConfig host = load_host_config_text("[host]\nid = \"d\"\n"
                                            "[[port]]\nname = \"p\"\ndevice = \"net_null0\"\n"
                                            "[nf_defaults.steer]\nby = \"proto\"\noffset = 7\n"
                                            "file = \"rules/x.rules\"\n"
                                            "[nf_defaults.noop]\ncolour = 1\n",
                                            host_toml);
    auto compile = [&](const std::string &text) {
        return compile_chain(parse_chain_file(h.chains.write("c.toml", text)), h.registry, &host.nf_defaults);
    };
    auto chain = compile("name = \"d\"\n[[nf]]\nname = \"s\"\nplugin = \"steer\"\n[nf.config]\noffset = 3\n");
    const serpens_config *cfg = chain->nfs[0].config.get();
    const char *by = nullptr;
    int64_t offset = 0;
    char path[512];
    char where[512];
    CHECK(h.api.config_string(cfg, "by", &by) == SERPENS_OK); // from host.toml
    CHECK(std::string(by) == "proto");
    CHECK(h.api.config_int(cfg, "offset", &offset) == SERPENS_OK); // the chain file wins
    CHECK(offset == 3);
    CHECK(h.api.config_int(cfg, "tag", &offset) == SERPENS_ENOENT); // set nowhere
    // A default's relative path resolves against host.toml's directory, and is named there.
    REQUIRE(h.api.config_path(cfg, "file", path, sizeof path) == SERPENS_OK);
    CHECK(std::string(path) == (h.chains / "rules/x.rules"));
    REQUIRE(h.api.config_where(cfg, "by", where, sizeof where) == SERPENS_OK);
    CHECK(std::string(where) == host_toml + ":7:6");

    // steer never reads `file` (the calls above did, not the NF): the default
    // is refused where it stands in host.toml.
    chain = compile("name = \"d\"\n[[nf]]\nname = \"s\"\nplugin = \"steer\"\n[nf.config]\noffset = 3\n");
    CHECK_THROWS_WITH_AS(
        ChainInstance(chain, 0, &h.api),
        doctest::Contains((host_toml + ":9:1: unknown key 'file' in [nf_defaults.steer], read by NF 's' "
                                       "(plugin steer)")
                              .c_str()),
        ConfigError);
    // Another plugin's defaults do not concern this NF; a plugin's unread ones do.
    chain = compile("name = \"d\"\n[[nf]]\nname = \"n\"\nplugin = \"noop\"\n");
    CHECK_THROWS_WITH_AS(ChainInstance(chain, 0, &h.api),
                         doctest::Contains(":11:1: unknown key 'colour' in [nf_defaults.noop]"), ConfigError);
    CHECK_THROWS_WITH_AS(
        load_host_config_text("[[port]]\nname = \"p\"\ndevice = \"d\"\n[nf_defaults]\nnat = 5\n", "h.toml"),
        doctest::Contains("h.toml:5:7: [nf_defaults]: 'nat' must be a table"), ConfigError);
}

namespace {

// A parsed IPv4/UDP frame from 10.0.0.<client>:<sport> to 10.9.9.9:80, or back.
std::vector<uint8_t> udp_frame(uint8_t client, uint16_t sport, bool reply)
{
    std::vector<uint8_t> f(60, 0);
    f[12] = 0x08;
    uint8_t *ip = f.data() + 14;
    ip[0] = 0x45;
    ip[3] = 28;
    ip[8] = 64;
    ip[9] = 17;
    const uint8_t a[4] = {10, 0, 0, client}, b[4] = {10, 9, 9, 9};
    std::memcpy(ip + (reply ? 16 : 12), a, 4);
    std::memcpy(ip + (reply ? 12 : 16), b, 4);
    const uint16_t sp = htons(sport), dp = htons(80), ulen = htons(8);
    std::memcpy(ip + (reply ? 22 : 20), &sp, 2);
    std::memcpy(ip + (reply ? 20 : 22), &dp, 2);
    std::memcpy(ip + 24, &ulen, 2);
    return f;
}

// One flow table and the chain "count" (tally) over it, in a scratch state dir.
struct SteeredChain {
    Harness h;
    ScratchDir dir;
    state::StateStore store{[this] {
        state::StoreOptions o;
        o.root = dir.path();
        return o;
    }()};
    std::unique_ptr<state::FlowTable> table;
    FlowSteering steering;
    std::unique_ptr<ChainInstance> instance;

    // capacity 0: the spec's default; drop: the table's drops_when_full.
    explicit SteeredChain(uint64_t capacity = 0, bool drop_when_full = true)
    {
        auto chain = h.compile("name = \"count\"\nchain = [\"t\"]\n[[nf]]\nname = \"t\"\nplugin = \"tally\"\n");
        ExecutorResolver executors = [this](const std::string &c, const std::string &nf) {
            return &store.executor(c, nf);
        };
        FlowTableResolver flows = [this, capacity, drop_when_full](state::FlowTableSpec spec, bool &first) {
            std::string err;
            if (capacity != 0) {
                spec.capacity = capacity;
            }
            table = state::FlowTable::open(dir.path() / "flows.seg", std::move(spec), err);
            table->set_drops_when_full(drop_when_full);
            first = true;
            return table.get();
        };
        instance = std::make_unique<ChainInstance>(chain, 0, &h.api, executors, default_init_warn_after, flows);
        instance->steer_by(&steering);
    }

    // Runs the frames; returns their labels, and in peers the peer of each remote one.
    std::vector<uint16_t> run(const std::vector<std::vector<uint8_t>> &frames, std::vector<uint8_t> &peers,
                              const std::vector<uint8_t> &returned_from = {})
    {
        std::vector<MemPacket> storage(frames.size());
        std::vector<serpens_pkt> pkts(frames.size());
        for (std::size_t i = 0; i < frames.size(); ++i) {
            pkts[i] = storage[i].load(frames[i]);
            net::FlowKey key;
            REQUIRE(net::parse_packet(pkts[i], key) == net::ParseResult::ok);
        }
        std::vector<uint16_t> labels(frames.size());
        instance->run(pkts.data(), static_cast<uint32_t>(pkts.size()), labels.data(), 1'000'000'000,
                      returned_from.empty() ? nullptr : returned_from.data());
        peers.assign(instance->remote_peers(), instance->remote_peers() + frames.size());
        last_lengths.clear();
        for (const serpens_pkt &p : pkts) {
            last_lengths.push_back(p.len);
        }
        return labels;
    }
    std::vector<uint32_t> last_lengths; // tally appends 5 bytes to what it sees
};

} // namespace

TEST_CASE("flows served by a peer: new flows follow their bucket, old ones stay, replies and returns stick")
{
    SteeredChain c;
    std::vector<uint8_t> peers;
    // Flow 1 starts before any steering: it is this host's for good.
    auto labels = c.run({udp_frame(1, 1000, false)}, peers);
    CHECK(labels[0] == SERPENS_LABEL_OUT);

    for (auto &bucket : c.steering.new_flows) {
        bucket.store(3);
    }
    c.steering.peer_up[3].store(true);
    c.steering.steers.store(true);
    // Flow 1 and its reply stay here; flow 2 is new and goes to peer 3, its
    // reply too; no NF sees flow 2.
    labels = c.run(
        {udp_frame(1, 1000, false), udp_frame(2, 2000, false), udp_frame(1, 1000, true), udp_frame(2, 2000, true)},
        peers);
    CHECK(labels == std::vector<uint16_t>{SERPENS_LABEL_OUT, label_remote, SERPENS_LABEL_OUT, label_remote});
    CHECK(peers[1] == 3);
    CHECK(peers[3] == 3);
    CHECK(c.last_lengths == std::vector<uint32_t>{65, 60, 65, 60});
    CHECK(c.instance->stats(0).packets == 3);

    // Steering stops: flow 2 still belongs to peer 3, a new flow stays here.
    c.steering.steers.store(false);
    labels = c.run({udp_frame(2, 2000, false), udp_frame(4, 4000, false)}, peers);
    CHECK(labels == std::vector<uint16_t>{label_remote, SERPENS_LABEL_OUT});

    // Packets peer 5 processed go out untouched, and their flow (flow 6, as
    // the peer translated it) is then peer 5's: its replies go there.
    labels = c.run({udp_frame(6, 6000, false)}, peers, {5});
    CHECK(labels[0] == SERPENS_LABEL_OUT);
    CHECK(c.last_lengths[0] == 60);
    c.steering.peer_up[5].store(true);
    labels = c.run({udp_frame(6, 6000, true)}, peers);
    CHECK(labels[0] == label_remote);
    CHECK(peers[0] == 5);

    // Peer 3 goes down: its flow 2 starts over here, as a new flow.
    c.steering.peer_up[3].store(false);
    labels = c.run({udp_frame(2, 2000, false), udp_frame(2, 2000, true)}, peers);
    CHECK(labels == std::vector<uint16_t>{SERPENS_LABEL_OUT, SERPENS_LABEL_OUT});
    CHECK(c.last_lengths == std::vector<uint32_t>{65, 65});
}

namespace {

// Sends `batches` batches of max_burst new flows (flow b * max_burst + i + 1
// by source port) through `c`; counts the labels and what the NF saw.
struct Flood {
    uint64_t out = 0;
    uint64_t dropped = 0;
};

Flood flood(SteeredChain &c, uint32_t batches)
{
    Flood f;
    std::vector<uint8_t> peers;
    for (uint32_t b = 0; b < batches; ++b) {
        std::vector<std::vector<uint8_t>> frames;
        for (uint32_t i = 0; i < max_burst; ++i) {
            frames.push_back(udp_frame(1, static_cast<uint16_t>(b * max_burst + i + 1), false));
        }
        const auto labels = c.run(frames, peers);
        for (uint32_t i = 0; i < max_burst; ++i) {
            if (labels[i] == SERPENS_LABEL_OUT) {
                ++f.out;
            } else {
                CHECK(labels[i] == SERPENS_LABEL_DROP);
                ++f.dropped;
            }
        }
    }
    return f;
}

} // namespace

TEST_CASE("a new flow the full flow table refuses is dropped before any NF, or passed without an entry")
{
    // Capacity 16 gives each of the 256 parts 14 flows: 20 bursts of new
    // flows overflow some parts whatever their hashes.
    const uint32_t batches = 20;
    const uint64_t sent = uint64_t{batches} * max_burst;
    SUBCASE("drop (the default)")
    {
        SteeredChain c(16);
        REQUIRE(c.table->drops_when_full());
        const Flood f = flood(c, batches);
        const state::FlowTableTotals t = c.table->totals();
        CHECK(t.refused_full > 0);
        CHECK(f.dropped == t.refused_full);
        CHECK(f.out == t.created);
        CHECK(f.out + f.dropped == sent);
        CHECK(c.instance->stats(0).packets == f.out); // the NF never saw a refused packet
        CHECK(c.instance->stats(0).dropped == 0);     // nor are they its drops
    }
    SUBCASE("pass")
    {
        SteeredChain c(16, false);
        const Flood f = flood(c, batches);
        const state::FlowTableTotals t = c.table->totals();
        CHECK(t.refused_full > 0);
        CHECK(f.dropped == 0);
        CHECK(f.out == sent);
        CHECK(c.instance->stats(0).packets == sent);
    }
}
