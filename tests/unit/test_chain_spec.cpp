// Chain files: every malformed chain is refused with file:line and what was
// expected; valid ones compile to the prime sequential order.

#include "support.h"

#include "chain/compiled.h"
#include "core/error.h"
#include "plugin/registry.h"

#include <doctest/doctest.h>

using namespace serpens;
using serpens::test::install_plugin;
using serpens::test::ScratchDir;

namespace {

struct Fixture {
    ScratchDir plugins;
    ScratchDir chains;
    PluginRegistry registry;

    Fixture()
    {
        install_plugin(plugins, "noop");
        install_plugin(plugins, "steer");
        install_plugin(plugins, "trace");
        registry.load_directory(plugins.path().string());
    }

    std::shared_ptr<const CompiledChain> compile(const std::string &text, const std::string &file = "c.toml")
    {
        return compile_chain(parse_chain_file(chains.write(file, text)), registry);
    }

    // Compiling `text` must fail with a message containing "c.toml:<line>" and `part`.
    void expect_rejected(const std::string &text, int line, const std::string &part)
    {
        std::string where = (chains / "c.toml") + ":" + std::to_string(line) + ":";
        try {
            compile(text);
            FAIL("accepted a chain that must be rejected: " << part);
        } catch (const ConfigError &e) {
            std::string message = e.what();
            CHECK_MESSAGE(message.find(where) == 0, message);
            CHECK_MESSAGE(message.find(part) != std::string::npos, message);
        }
    }
};

const char *branch_chain = R"(name = "branch"
egress = "out0"

[[nf]]
name = "fw"
plugin = "steer"

[[nf]]
name = "ids"
plugin = "trace"

[[nf]]
name = "mon"
plugin = "trace"

[[distribute]]
from = "fw"
to = ["mon", "ids"]
)";

} // namespace

TEST_CASE("a branching chain compiles to the prime sequential order")
{
    Fixture f;
    auto chain = f.compile(branch_chain);
    REQUIRE(chain->nfs.size() == 3);
    CHECK(chain->name == "branch");
    CHECK(chain->egress == "out0");
    CHECK(chain->nfs[0].name == "fw");
    CHECK(chain->nfs[1].name == "ids");
    CHECK(chain->nfs[2].name == "mon");
    // steer has 4 ports: 0 -> mon, 1 -> ids, unconnected 2 and 3 follow port 0.
    CHECK(chain->nfs[0].next[0] == 3);
    CHECK(chain->nfs[0].next[1] == 2);
    CHECK(chain->nfs[0].next[2] == 3);
    CHECK(chain->nfs[0].next[3] == 3);
    CHECK(chain->nfs[0].next[4] == SERPENS_LABEL_DROP);
    CHECK(chain->nfs[0].next[SERPENS_PORT_DROP] == SERPENS_LABEL_DROP);
    CHECK(chain->nfs[1].next[0] == SERPENS_LABEL_OUT);
    CHECK(chain->nfs[2].next[0] == SERPENS_LABEL_OUT);
    CHECK(chain->describe().find("fw(1)[steer] -> {0: mon(3), 1: ids(2)") != std::string::npos);
}

TEST_CASE("topological order follows dependencies, not declaration order")
{
    Fixture f;
    auto chain = f.compile(R"(name = "seq"
chain = ["c", "a", "b"]
[[nf]]
name = "a"
plugin = "noop"
[[nf]]
name = "b"
plugin = "noop"
[[nf]]
name = "c"
plugin = "noop"
)");
    REQUIRE(chain->nfs.size() == 3);
    CHECK(chain->nfs[0].name == "c");
    CHECK(chain->nfs[1].name == "a");
    CHECK(chain->nfs[2].name == "b");
    CHECK(chain->nfs[2].next[0] == SERPENS_LABEL_OUT);
}

TEST_CASE("aggregate joins branches and out/drop are targets")
{
    Fixture f;
    auto chain = f.compile(R"(name = "join"
[[nf]]
name = "fw"
plugin = "steer"
[[nf]]
name = "ids"
plugin = "trace"
[[nf]]
name = "mon"
plugin = "trace"
[[nf]]
name = "nat"
plugin = "trace"
[[distribute]]
from = "fw"
to = ["mon", "ids", "drop", "out"]
[[aggregate]]
from = ["ids", "mon"]
to = "nat"
)");
    REQUIRE(chain->nfs.size() == 4);
    CHECK(chain->nfs[3].name == "nat");
    CHECK(chain->nfs[0].next[2] == SERPENS_LABEL_DROP);
    CHECK(chain->nfs[0].next[3] == SERPENS_LABEL_OUT);
    CHECK(chain->nfs[1].next[0] == 4);
    CHECK(chain->nfs[2].next[0] == 4);
}

TEST_CASE("rejects an unknown NF in an edge")
{
    Fixture f;
    f.expect_rejected("name = \"x\"\nchain = [\"a\", \"ghost\"]\n[[nf]]\nname = \"a\"\nplugin = \"noop\"\n", 2,
                      "unknown NF 'ghost' in chain");
}

TEST_CASE("rejects an unknown plugin")
{
    Fixture f;
    f.expect_rejected("name = \"x\"\n\n[[nf]]\nname = \"a\"\nplugin = \"nosuch\"\n", 5,
                      "unknown NF plugin 'nosuch' for NF 'a' (loaded: noop, steer, trace)");
}

TEST_CASE("rejects a cycle")
{
    Fixture f;
    f.expect_rejected(R"(name = "loop"
entry = "a"
chain = ["a", "b"]
[[nf]]
name = "a"
plugin = "steer"
[[nf]]
name = "b"
plugin = "noop"
[[distribute]]
from = "a"
to = ["b", "a"]
)",
                      12, "cycle a -> a");
    f.expect_rejected(R"(name = "loop2"
entry = "a"
chain = ["a", "b", "c"]
[[nf]]
name = "a"
plugin = "noop"
[[nf]]
name = "b"
plugin = "noop"
[[nf]]
name = "c"
plugin = "noop"
[[aggregate]]
from = ["c"]
to = "b"
)",
                      14, "cycle b -> c -> b");
    // Without 'entry' every NF of a cycle has an incoming edge: the cycle
    // and its closing edge are still named.
    f.expect_rejected(R"(name = "loop3"
chain = ["a", "b"]
[[nf]]
name = "a"
plugin = "noop"
[[nf]]
name = "b"
plugin = "noop"
[[aggregate]]
from = ["b"]
to = "a"
)",
                      10, "cycle a -> b -> a");
}

TEST_CASE("rejects an unreachable NF")
{
    Fixture f;
    f.expect_rejected(R"(name = "island"
chain = ["a", "b"]
[[nf]]
name = "a"
plugin = "noop"
[[nf]]
name = "b"
plugin = "noop"
[[nf]]
name = "lonely"
plugin = "noop"
)",
                      9, "NF 'lonely' is unreachable from the entry NF 'a'");
}

TEST_CASE("rejects a port out of range")
{
    Fixture f;
    f.expect_rejected(R"(name = "ports"
[[nf]]
name = "a"
plugin = "noop"
[[nf]]
name = "b"
plugin = "noop"
[[distribute]]
from = "a"
to = ["b", "b"]
)",
                      10, "port 1 out of range: NF 'a' (plugin noop) has 1 output port(s)");
}

TEST_CASE("rejects one port sent to two places")
{
    Fixture f;
    f.expect_rejected(R"(name = "twice"
chain = ["a", "b"]
[[nf]]
name = "a"
plugin = "steer"
[[nf]]
name = "b"
plugin = "noop"
[[nf]]
name = "c"
plugin = "noop"
[[distribute]]
from = "a"
to = ["c", "b"]
)",
                      14, "port 0 of NF 'a' already goes to 'b' (chain at line 2)");
}

TEST_CASE("rejects a duplicate chain name across files")
{
    ScratchDir dir;
    std::string first = dir.write("a.toml", "name = \"same\"\n[[nf]]\nname = \"a\"\nplugin = \"noop\"\n");
    std::string second = dir.write("b.toml", "# another\nname = \"same\"\n[[nf]]\nname = \"a\"\nplugin = \"noop\"\n");
    std::string expected = second + ":2:8: duplicate chain name 'same' (already defined in " + first + ")";
    CHECK_THROWS_WITH_AS(load_chain_directory(dir.path().string()), doctest::Contains(expected.c_str()), ConfigError);
}

TEST_CASE("rejects wrong types")
{
    Fixture f;
    f.expect_rejected("name = 42\n[[nf]]\nname = \"a\"\nplugin = \"noop\"\n", 1,
                      "'name' must be a string, not an integer");
    f.expect_rejected("name = \"x\"\nchain = \"a\"\n[[nf]]\nname = \"a\"\nplugin = \"noop\"\n", 2,
                      "'chain' must be an array, not a string");
    f.expect_rejected("name = \"x\"\nchain = [\"a\", 3]\n[[nf]]\nname = \"a\"\nplugin = \"noop\"\n", 2,
                      "'chain' must hold strings, found an integer");
    f.expect_rejected("name = \"x\"\nnf = 5\n", 2, "'nf' must be an array, not an integer");
    f.expect_rejected("name = \"x\"\n[[nf]]\nname = \"a\"\nplugin = \"noop\"\nconfig = 1\n", 5,
                      "'config' must be a table, not an integer");
}

TEST_CASE("rejects missing required keys")
{
    Fixture f;
    f.expect_rejected("[[nf]]\nname = \"a\"\nplugin = \"noop\"\n", 1, "missing required key 'name'");
    f.expect_rejected("name = \"x\"\n\n[[nf]]\nname = \"a\"\n", 3, "[[nf]] #1: missing required key 'plugin'");
    f.expect_rejected("name = \"x\"\n", 1, "missing required [[nf]] entries");
    f.expect_rejected("name = \"x\"\n[[nf]]\nname = \"a\"\nplugin = \"steer\"\n[[distribute]]\nfrom = \"a\"\n", 5,
                      "[[distribute]]: missing required key 'to'");
}

TEST_CASE("rejects unknown keys and TOML syntax errors")
{
    Fixture f;
    f.expect_rejected("name = \"x\"\negres = \"out\"\n[[nf]]\nname = \"a\"\nplugin = \"noop\"\n", 2,
                      "unknown key 'egres'");
    f.expect_rejected("name = \"x\"\n[[nf]]\nname = \"a\"\nplugn = \"noop\"\n", 4, "unknown key 'plugn'");
    f.expect_rejected("name = \"x\"\n[[nf]\n", 2, "TOML syntax error");
}

TEST_CASE("rejects an ambiguous entry and reserved NF names")
{
    Fixture f;
    f.expect_rejected(
        "name = \"x\"\n[[nf]]\nname = \"a\"\nplugin = \"noop\"\n[[nf]]\nname = \"b\"\nplugin = \"noop\"\n", 1,
        "ambiguous entry: NFs a, b have no incoming edge");
    f.expect_rejected("name = \"x\"\n[[nf]]\nname = \"out\"\nplugin = \"noop\"\n", 3, "reserved");
}

namespace {

// A chain file of n noop NFs n0..n(n-1), each [[nf]] three lines long from line 3 on.
std::string long_chain(std::size_t n, const std::string &tail = "")
{
    std::string text = "name = \"long\"\nentry = \"n0\"\n";
    std::string sequence = "chain = [";
    for (std::size_t i = 0; i < n; ++i) {
        text += "[[nf]]\nname = \"n" + std::to_string(i) + "\"\nplugin = \"noop\"\n";
        sequence += (i ? ", \"n" : "\"n") + std::to_string(i) + "\"";
    }
    // Root keys must come before the first table: put chain first.
    return sequence + "]\n" + text + tail;
}

} // namespace

TEST_CASE("refuses a chain longer than SERPENS_MAX_CHAIN_NFS at the first NF over the limit")
{
    Fixture f;
    // Line 1 is `chain`, 2-3 name and entry; NF #k starts at line 4 + 3 * (k - 1).
    const int first_over = 4 + 3 * static_cast<int>(SERPENS_MAX_CHAIN_NFS);
    f.expect_rejected(long_chain(SERPENS_MAX_CHAIN_NFS + 1), first_over,
                      "[[nf]] #1025: a chain holds at most 1024 NFs (SERPENS_MAX_CHAIN_NFS)");
    // Far beyond the limit: refused the same way, without ever building a graph.
    f.expect_rejected(long_chain(40000), first_over, "a chain holds at most 1024 NFs");
}

TEST_CASE("a chain of SERPENS_MAX_CHAIN_NFS NFs compiles, and a cycle through all of them is named")
{
    Fixture f;
    auto chain = f.compile(long_chain(SERPENS_MAX_CHAIN_NFS));
    REQUIRE(chain->nfs.size() == SERPENS_MAX_CHAIN_NFS);
    CHECK(chain->nfs.front().name == "n0");
    CHECK(chain->nfs.back().name == "n1023");
    CHECK(chain->nfs.back().next[0] == SERPENS_LABEL_OUT);

    const int distribute_to = 4 + 3 * static_cast<int>(SERPENS_MAX_CHAIN_NFS) + 2;
    f.expect_rejected(long_chain(SERPENS_MAX_CHAIN_NFS, "[[distribute]]\nfrom = \"n1023\"\nto = [\"n0\"]\n"),
                      distribute_to, "cycle n0 -> n1 -> n2 -> ");
    try {
        f.compile(long_chain(SERPENS_MAX_CHAIN_NFS, "[[distribute]]\nfrom = \"n1023\"\nto = [\"n0\"]\n"));
        FAIL("a cycle was accepted");
    } catch (const ConfigError &e) {
        CHECK(std::string(e.what()).find("n1022 -> n1023 -> n0: a chain must be a DAG") != std::string::npos);
    }
}

TEST_CASE("chain and NF names are limited to a safe character set")
{
    Fixture f;
    const char *nf = "[[nf]]\nname = \"a\"\nplugin = \"noop\"\n";
    for (const char *bad : {"..", ".hidden", "a/b", "../x", "with space", "tab\\tname", "naïve", ""}) {
        f.expect_rejected("name = \"" + std::string(bad) + "\"\n" + nf, 1, "is not a valid chain name");
    }
    f.expect_rejected("name = \"" + std::string(65, 'c') + "\"\n" + nf, 1, "expected 1..64 characters");
    f.expect_rejected("name = \"x\"\n[[nf]]\nname = \"../up\"\nplugin = \"noop\"\n", 3,
                      "'../up' is not a valid NF name");
    f.expect_rejected("name = \"x\"\n[[nf]]\nname = \"a b\"\nplugin = \"noop\"\n", 3, "is not a valid NF name");

    auto chain = f.compile("name = \"Fw-1.v2_" + std::string(56, 'x') +
                           "\"\n[[nf]]\nname = \"fw.0-A_b\"\nplugin = "
                           "\"noop\"\n");
    CHECK(chain->name.size() == 64);
    CHECK(chain->nfs.front().name == "fw.0-A_b");
}
