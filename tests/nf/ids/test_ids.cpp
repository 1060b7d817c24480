// ids: signatures split across packets (streaming), pcre flags, per-rule
// counters, rule headers, malformed rules with file:line, truncated packets.

#include "mock_host.h"

#include <doctest/doctest.h>

using namespace nfmock;
using namespace nfmock::text_frames;

namespace {

const char *kRules = R"(# test signatures
alert tcp any any -> any 80 (msg:"evil over http"; content:"evil"; nocase; sid:1001; rev:1;)
alert udp any any -> 192.0.2.0/24 53 (msg:"dns tunnel"; pcre:"/x{4}[0-9]+\.tunnel/i"; sid:1002;)
alert ip any any <> 2001:db8::/32 any (msg:"binary marker"; content:"|de ad|BEEF|0d 0a|"; sid:1003;)
alert tcp 10.0.0.0/8 any -> any any (msg:"inside only"; content:"secret"; sid:1004;)
alert tcp any any -> any 8080 (msg:"escapes"; pcre:"/GET \/[^ ]*\.sh( |\?)/"; sid:1005;)
alert tcp any any -> any 8081 (msg:"quote \" and \; in content"; content:"a\"b\;c\\d"; sid:1006;)
)";

struct Fixture {
    MockHost h{IDS_PLUGIN};
    Ctx *c = nullptr;
    Fixture()
    {
        h.write("ids.rules", kRules);
        h.set_config("rules = \"ids.rules\"\n");
        REQUIRE_MESSAGE(h.init(c) == SERPENS_OK, h.all_logs());
    }
    uint8_t send(const Flow &f, const std::string &payload, uint64_t now = 1'000'000'000)
    {
        Packet p(frame(f, payload));
        return h.run1(*c, p, now);
    }
};

} // namespace

TEST_CASE("ids: a signature split across packets of one flow is found")
{
    Fixture t;
    Flow web{false, "198.51.100.7", "192.0.2.80", 6, 40000, 80};
    Flow other{false, "198.51.100.8", "192.0.2.80", 6, 40001, 80};
    CHECK(t.send(web, "GET /?q=ev") == 0);
    CHECK(t.send(other, "il") == 0);        // another flow in between: its own stream
    CHECK(t.send(web, "IL HTTP/1.0") == 1); // "evIL" completes here (nocase)
    CHECK(t.send(web, "more evil") == 0);   // one alert per rule per stream
    CHECK(t.c->counter("sid_1001") == 1);
    CHECK(t.c->counter("alerts") == 1);
    CHECK(t.c->counter("scanned") == 4);
    // The reverse direction is a stream of its own, and the rule says -> port 80.
    CHECK(t.send(reverse(web), "evil") == 0);
}

TEST_CASE("ids: pcre flags, hex content, rule headers and <>")
{
    Fixture t;
    Flow dns{false, "10.1.1.1", "192.0.2.53", 17, 5353, 53};
    CHECK(t.send(dns, "XXXX1234.TUNNEL.example") == 1);
    CHECK(t.send({false, "10.1.1.1", "198.18.0.1", 17, 5353, 53}, "xxxx1.tunnel") == 0); // dst outside /24
    Flow v6{true, "2001:db8::1", "2001:db8:1::2", 17, 9, 9};
    CHECK(t.send(v6, std::string("\xde\xad"
                                 "BEEF\r\n",
                                 8)) == 1);
    CHECK(t.send(reverse(v6), std::string("ab\xde\xad"
                                          "BEEF\r\n",
                                          10)) == 1); // <> : either direction
    CHECK(t.send({true, "2001:db9::1", "2001:db9::2", 17, 9, 9}, std::string("\xde\xad"
                                                                             "BEEF\r\n",
                                                                             8)) == 0);
    CHECK(t.send({false, "10.2.3.4", "203.0.113.1", 6, 1, 2}, "a secret") == 1);
    CHECK(t.send({false, "11.2.3.4", "203.0.113.1", 6, 1, 2}, "a secret") == 0);
    CHECK(t.c->counter("sid_1002") == 1);
    CHECK(t.c->counter("sid_1003") == 2);
    CHECK(t.c->counter("sid_1004") == 1);
    CHECK(t.c->counter("matches") == 4);
    // Regex escapes survive option parsing; \" \; \\ are option escapes.
    Flow alt{false, "10.9.9.9", "203.0.113.5", 6, 3333, 8080};
    CHECK(t.send(alt, "GET /x/ysh HTTP") == 0); // '.' is literal: \. kept
    CHECK(t.send({false, "10.9.9.9", "203.0.113.5", 6, 3334, 8080}, "GET /x/y.sh?a") == 1);
    CHECK(t.send({false, "10.9.9.9", "203.0.113.5", 6, 3335, 8081}, "xa\"b;c\\dx") == 1);
}

TEST_CASE("ids: truncated packets, no payload, small flow table, idle expiry")
{
    MockHost h(IDS_PLUGIN);
    h.write("ids.rules", kRules);
    h.set_config("rules = \"ids.rules\"\nmax_flows = 4\nidle_timeout = 1\n");
    Ctx *c = nullptr;
    REQUIRE(h.init(c) == SERPENS_OK);
    Packet cut(frame({false, "1.1.1.1", "2.2.2.2", 6, 1, 80}, "evil"));
    cut.view.len -= 3; // IP length beyond the view: scans what is there
    CHECK(h.run1(*c, cut) == 0);
    Packet empty(frame({false, "1.1.1.1", "2.2.2.2", 6, 1, 80}));
    CHECK(h.run1(*c, empty) == 0);
    Packet arp(Bytes{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1});
    CHECK(h.run1(*c, arp) == 0);
    // Many flows through a 4-stream table: streams are recycled, never allocated.
    for (int i = 0; i < 50; ++i) {
        Packet p(frame({false, "1.1.1.1", "2.2.2.2", 6, static_cast<uint16_t>(100 + i), 80}, "ev"));
        CHECK(h.run1(*c, p) == 0);
    }
    CHECK(c->counter("evicted") > 0);
    // A stream idle longer than idle_timeout starts over: "ev" + (2 s later) "il" is no match.
    Flow f{false, "9.9.9.9", "2.2.2.2", 6, 7, 80};
    Packet a(frame(f, "ev")), b(frame(f, "il"));
    CHECK(h.run1(*c, a, 10'000'000'000) == 0);
    CHECK(h.run1(*c, b, 12'000'000'000) == 0);
    CHECK(c->counter("scan_errors") == 0);
}

TEST_CASE("ids on the chain's flow table: expiry frees a flow's streams; a flow without an entry still streams")
{
    MockHost h(IDS_PLUGIN);
    h.flow_capacity = 16;
    h.flow_idle_ns = 30'000'000'000ull;
    h.write("ids.rules", kRules);
    h.set_config("rules = \"ids.rules\"\nmax_flows = 8\n");
    Ctx *c = nullptr;
    REQUIRE(h.init(c) == SERPENS_OK);
    REQUIRE(h.flows() != nullptr);
    auto flow = [](int i) { return Flow{false, "10.0.0.1", "192.0.2.80", 6, static_cast<uint16_t>(1000 + i), 80}; };
    auto send = [&](const Flow &f, const std::string &payload, uint64_t now) {
        Packet p(frame(f, payload));
        return h.run1(*c, p, now);
    };
    const uint64_t t0 = 1'000'000'000;
    // Eight flows fill the eight streams; the host expires them and their
    // streams serve eight new flows without evicting anything.
    for (int i = 0; i < 8; ++i) {
        CHECK(send(flow(i), "ev", t0) == 0);
    }
    CHECK(h.expire_flows(t0 + 40'000'000'000ull) == 8);
    const uint64_t t1 = t0 + 41'000'000'000ull;
    for (int i = 8; i < 16; ++i) {
        CHECK(send(flow(i), "ev", t1) == 0);
    }
    CHECK(c->counter("evicted") == 0);
    // Each of them keeps its own stream: the signature completes in every one.
    for (int i = 8; i < 16; ++i) {
        CHECK(send(flow(i), "il", t1) == 1);
    }
    CHECK(c->counter("evicted") == 0);
    // The table (16 entries) is full now: a new flow has no entry, and the
    // 5-tuple index finds its stream across packets all the same.
    for (int i = 16; i < 24; ++i) {
        CHECK(send(flow(i), "x", t1) == 0);
    }
    const Flow late{false, "10.0.0.2", "192.0.2.80", 6, 5000, 80};
    CHECK(send(late, "GET /e", t1) == 0);
    CHECK(send(late, "vil", t1) == 1);
    CHECK(c->counter("scan_errors") == 0);
}

TEST_CASE("ids on the chain's flow table: a flow that moves to another instance gets a stream of its own there")
{
    // Both instances hand out their first pool slot first; only the tags tell
    // the moved flow's slot number from the other instance's flow using it.
    MockHost h(IDS_PLUGIN);
    h.write("ids.rules", kRules);
    h.set_config("rules = \"ids.rules\"\n");
    Ctx *a = nullptr, *b = nullptr;
    REQUIRE(h.init(a, 0) == SERPENS_OK);
    REQUIRE(h.init(b, 1) == SERPENS_OK);
    const Flow moved{false, "10.0.0.1", "192.0.2.80", 6, 1000, 80};
    const Flow local{false, "10.0.0.2", "192.0.2.80", 6, 2000, 80};
    auto send = [&](Ctx &c, const Flow &f, const std::string &payload) {
        Packet p(frame(f, payload));
        return h.run1(c, p);
    };
    CHECK(send(*a, moved, "ev") == 0);
    CHECK(send(*b, local, "ev") == 0);
    // The flow moves to instance 1 (a scale event): its "il" starts afresh
    // there instead of continuing `local`'s stream.
    CHECK(send(*b, moved, "il") == 0);
    CHECK(send(*b, local, "il") == 1);
    CHECK(b->counter("alerts") == 1);
}

TEST_CASE("ids: malformed rules fail init with file:line and what was expected")
{
    struct Case {
        const char *text, *needle;
    } cases[] = {
        {"alert tcp any any -> any 80 (content:\"x\"; sid:1;)\nlog tcp any any -> any 80 (content:\"y\"; sid:2;)\n",
         "ids.rules:2: expected 'alert'"},
        {"alert tcp any any -> any 80 (content:\"x\"; sid:1;)\nalert tcp any any -> any 80 (content:\"y\"; sid:1;)\n",
         "ids.rules:2: sid 1 already used on line 1"},
        {"\nalert tcp any any => any 80 (content:\"x\"; sid:1;)\n", "ids.rules:2: expected direction"},
        {"alert icmp any any -> any 80 (content:\"x\"; sid:1;)\n", "ids.rules:1: expected protocol"},
        {"alert tcp any any -> any 99999 (content:\"x\"; sid:1;)\n", "ids.rules:1: expected a port"},
        {"alert tcp 10.0.0.0/99 any -> any 80 (content:\"x\"; sid:1;)\n",
         "ids.rules:1: '10.0.0.0/99' has a bad prefix length (0..32)"},
        // Host bits are refused, as in every other file that names a prefix.
        {"alert tcp 10.1.2.3/8 any -> any 80 (content:\"x\"; sid:1;)\n",
         "ids.rules:1: '10.1.2.3/8' has host bits set; did you mean 10.0.0.0/8?"},
        {"alert tcp 10.0.0.0/8 any -> 2001:db8::/32 80 (content:\"x\"; sid:1;)\n",
         "ids.rules:1: '2001:db8::/32' is IPv6, the rule's other address IPv4"},
        {"alert tcp any any -> any 80 (content:\"x\";)\n", "ids.rules:1: a rule needs sid"},
        {"alert tcp any any -> any 80 (msg:\"m\"; sid:3;)\n", "ids.rules:1: a rule needs a content"},
        {"alert tcp any any -> any 80 (content:\"|4\"; sid:1;)\n", "ids.rules:1: expected content with balanced"},
        {"alert tcp any any -> any 80 (content:\"a\"; content:\"b\"; sid:1;)\n", "ids.rules:1: only one content"},
        {"alert tcp any any -> any 80 (pcre:\"/a/q\"; sid:1;)\n", "ids.rules:1: unsupported pcre flag 'q'"},
        {"alert tcp any any -> any 80 (pcre:\"/a(/\"; sid:1;)\n", "ids.rules:1: Hyperscan cannot compile"},
        {"alert tcp any any -> any 80 (content:\"a\"; flow:established; sid:1;)\n", "unsupported option 'flow'"},
        {"alert tcp any any -> any 80 (content:\"a\"; sid:1;\n", "ids.rules:1: expected 'alert <proto>"},
        {"alert tcp any any -> any 80 (nocase; content:\"a\"; sid:1;)\n", "'nocase' must follow a content"},
        {"# nothing\n", "no rules"},
    };
    for (const Case &k : cases) {
        MockHost h(IDS_PLUGIN);
        h.write("ids.rules", k.text);
        h.set_config("rules = \"ids.rules\"\n");
        Ctx *c = nullptr;
        INFO(k.text);
        CHECK(h.init(c) == SERPENS_EINVAL);
        CHECK_MESSAGE(h.logged(k.needle), h.all_logs());
    }
    {
        // Once read as 'any': the part stopped at the NUL.
        MockHost h(IDS_PLUGIN);
        h.write("ids.rules", std::string("alert tcp any\0junk any -> any 80 (content:\"x\"; sid:1;)\n", 55));
        h.set_config("rules = \"ids.rules\"\n");
        Ctx *c = nullptr;
        CHECK(h.init(c) == SERPENS_EINVAL);
        CHECK_MESSAGE(h.logged("ids.rules:1: a NUL byte"), h.all_logs());
    }
    MockHost h(IDS_PLUGIN);
    h.set_config("max_flows = 1\n");
    Ctx *c = nullptr;
    CHECK(h.init(c) == SERPENS_EINVAL);
    h.write("ids.rules", kRules);
    h.set_config("rules = \"ids.rules\"\nmax_flows = 1\n");
    CHECK(h.init(c) == SERPENS_EINVAL);
    CHECK(h.logged("chain.toml:3"));
}

TEST_CASE("ids: the signatures file must be a regular file within the size limit")
{
    MockHost h(IDS_PLUGIN);
    for (const BadFile &bad : bad_config_files(h)) {
        CAPTURE(bad.path);
        h.set_config("rules = \"" + bad.path + "\"\n");
        Ctx *c = nullptr;
        CHECK(h.init(c) == SERPENS_EINVAL);
        CHECK_MESSAGE(h.logged(bad.logged), h.all_logs());
    }
}

TEST_CASE("ids: init reads every key its synopsis documents")
{
    MockHost h(IDS_PLUGIN);
    h.write("ids.rules", "alert tcp any any -> any any (msg:\"x\"; content:\"evil\"; sid:1;)\n");
    h.set_config("rules = \"ids.rules\"\nmax_flows = 64\nidle_timeout = 10\nmax_flow = 3\n");
    Ctx *c = nullptr;
    REQUIRE_MESSAGE(h.init(c) == SERPENS_OK, h.all_logs());
    auto unread = serpens::config::unread_keys(h.config());
    REQUIRE(unread.size() == 1);
    CHECK(unread[0].find(":5:1: unknown key 'max_flow'") != std::string::npos);
}
