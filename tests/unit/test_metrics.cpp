// The Prometheus text of a snapshot: label values escaped, one HELP and one
// TYPE per family, the batch-latency histogram folded into cumulative `le`
// buckets with +Inf, _sum and _count.  No DPDK: the renderer is pure.  And
// the server: GET /metrics, 404 elsewhere, bounded requests, a deadline per
// connection, a silent client holding up nobody, a taken port refused.

#include "core/error.h"
#include "core/latency.h"
#include "metrics/render.h"
#include "metrics/server.h"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <string>

using namespace serpens;
using namespace serpens::metrics;

namespace {

std::vector<std::string> lines_of(const std::string &text)
{
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    return lines;
}

// The value of the sample line that starts with `head` ("name{labels}").
std::string value_of(const std::string &text, const std::string &head)
{
    for (const std::string &line : lines_of(text)) {
        if (line.rfind(head + " ", 0) == 0) {
            return line.substr(head.size() + 1);
        }
    }
    return "(missing " + head + ")";
}

// A histogram of latencies given in ns, as the dataplane reports it.
LatencySample histogram(unsigned lcore, std::initializer_list<uint64_t> ns)
{
    LatencyHistogram h;
    for (uint64_t v : ns) {
        h.record(v);
    }
    LatencySample s;
    s.lcore = lcore;
    for (std::size_t b = 0; b < LatencyHistogram::buckets; ++b) {
        if (h.count(b) != 0) {
            s.buckets.emplace_back(LatencyHistogram::bucket_low(b), h.count(b));
        }
    }
    s.sum_ns = h.sum_ns();
    return s;
}

} // namespace

TEST_CASE("label values escape backslash, double quote and newline, and replace what is not UTF-8")
{
    CHECK(escape_label_value("plain") == "\"plain\"");
    CHECK(escape_label_value("a\\b") == "\"a\\\\b\"");
    CHECK(escape_label_value("say \"hi\"") == "\"say \\\"hi\\\"\"");
    CHECK(escape_label_value("two\nlines") == "\"two\\nlines\"");
    CHECK(escape_label_value("") == "\"\"");
    CHECK(escape_label_value("caf\xc3\xa9") == "\"caf\xc3\xa9\"");                       // UTF-8 stays
    CHECK(escape_label_value("bad\xff") == "\"bad\xef\xbf\xbd\"");                       // a stray byte
    CHECK(escape_label_value("\xc0\xaf") == "\"\xef\xbf\xbd\xef\xbf\xbd\"");             // an overlong '/'
    CHECK(escape_label_value("cut\xe2\x82") == "\"cut\xef\xbf\xbd\xef\xbf\xbd\"");       // a sequence cut short
    CHECK(escape_label_value(std::string("nul\0x", 5)) == std::string("\"nul\0x\"", 7)); // NUL is UTF-8
}

TEST_CASE("names from config files are escaped in every sample that carries them")
{
    Snapshot s;
    s.ports.push_back({"p\"0", 5, 4, 300, 200, {{"rx_missed", 1}}});
    s.rules.push_back({"rule\\1", 7});
    s.nfs.push_back({"c\nx", 0, "f", "fw", 9, 1, {{"denied", 1}}});
    const std::string text = render(s);
    CHECK(value_of(text, "serpens_port_rx_packets_total{port=\"p\\\"0\"}") == "5");
    CHECK(value_of(text, "serpens_port_dropped_packets_total{port=\"p\\\"0\",reason=\"rx_missed\"}") == "1");
    CHECK(value_of(text, "serpens_gateway_rule_matched_packets_total{rule=\"rule\\\\1\"}") == "7");
    CHECK(
        value_of(text,
                 "serpens_nf_events_total{chain=\"c\\nx\",instance=\"0\",nf=\"f\",plugin=\"fw\",counter=\"denied\"}") ==
        "1");
    for (const std::string &line : lines_of(text)) {
        CHECK(line.find('\n') == std::string::npos);
    }
}

TEST_CASE("every family has one HELP and one TYPE line, before its samples, and names follow the conventions")
{
    Snapshot s;
    s.ports.push_back({"p0", 1, 1, 1, 1, {{"rx_missed", 0}}});
    s.parser = {{"ok", 1}};
    s.dispatch = {{"ring_full", 0}};
    s.rules.push_back({"r", 1});
    s.chains.push_back({"c", 10, 1, 1, 0, 0, 0, 0, true, 3, 64, 0});
    s.instances.push_back({"c", 0, "active", 10, 9, {{"nf", 1}, {"tx_full", 0}}});
    s.nfs.push_back({"c", 0, "f", "fw", 10, 1, {{"a", 1}, {"b", 2}}});
    s.tables.push_back({"c", "f", "t", 5, 100});
    s.latency.push_back(histogram(1, {500, 3000}));
    s.latency.push_back(histogram(2, {70}));
    s.has_peers = true;
    s.peers.push_back({"b", true, 2});
    s.peers.push_back({"c", false, 0});
    s.peer_sessions_refused = 3;
    const std::string text = render(s);

    std::map<std::string, std::string> type_of;
    std::map<std::string, int> help_count;
    std::set<std::string> sampled; // families whose samples were seen
    for (const std::string &line : lines_of(text)) {
        REQUIRE(!line.empty());
        if (line.rfind("# HELP ", 0) == 0) {
            const std::string name = line.substr(7, line.find(' ', 7) - 7);
            ++help_count[name];
            CHECK(sampled.count(name) == 0);
            continue;
        }
        if (line.rfind("# TYPE ", 0) == 0) {
            const std::string name = line.substr(7, line.find(' ', 7) - 7);
            CHECK(type_of.count(name) == 0); // one TYPE per family
            CHECK(help_count[name] == 1);    // after its HELP
            type_of[name] = line.substr(line.rfind(' ') + 1);
            continue;
        }
        std::string name = line.substr(0, line.find_first_of("{ "));
        for (const char *suffix : {"_bucket", "_sum", "_count"}) {
            const std::string base = name.substr(0, name.size() - std::min(name.size(), std::strlen(suffix)));
            if (name.size() > std::strlen(suffix) && name.ends_with(suffix) && type_of[base] == "histogram") {
                name = base;
            }
        }
        CAPTURE(line);
        REQUIRE(type_of.count(name) == 1); // its TYPE came first
        sampled.insert(name);
    }
    for (const auto &entry : type_of) {
        const std::string &name = entry.first;
        const std::string &type = entry.second;
        CAPTURE(name);
        CHECK(help_count[name] == 1);
        CHECK(name.rfind("serpens_", 0) == 0);
        CHECK(name.ends_with("_total") == (type == "counter"));
    }
    CHECK(type_of["serpens_batch_latency_seconds"] == "histogram");
    CHECK(type_of["serpens_chain_instances"] == "gauge");
    CHECK(type_of["serpens_flow_table_entries"] == "gauge");
    CHECK(value_of(text, "serpens_state_table_entries{chain=\"c\",nf=\"f\",table=\"t\"}") == "5");
    CHECK(value_of(text, "serpens_state_table_capacity_entries{chain=\"c\",nf=\"f\",table=\"t\"}") == "100");
    CHECK(value_of(text, "serpens_flow_table_capacity_entries{chain=\"c\"}") == "64");
    CHECK(value_of(text, "serpens_chain_instances{chain=\"c\",state=\"pooled\"}") == "1");
    CHECK(value_of(text, "serpens_instance_dropped_packets_total{chain=\"c\",instance=\"0\",reason=\"nf\"}") == "1");
    CHECK(value_of(text, "serpens_peer_up{peer=\"b\"}") == "1");
    CHECK(value_of(text, "serpens_peer_up{peer=\"c\"}") == "0");
    CHECK(value_of(text, "serpens_peer_sessions_total{peer=\"b\"}") == "2");
    CHECK(value_of(text, "serpens_peer_sessions_refused_total") == "3");
    // Without [peer], no peer family at all.
    CHECK(render(Snapshot{}).find("serpens_peer_") == std::string::npos);
}

TEST_CASE("the batch-latency histogram: cumulative le buckets in seconds, +Inf, _sum and _count")
{
    const auto &bounds = latency_bounds_ns();
    REQUIRE(bounds.size() == 21);
    CHECK(bounds.front() == 1024);        // ~1 us
    CHECK(bounds.back() == (1ull << 30)); // ~1.07 s
    for (uint64_t b : bounds) {
        // Each bound is an edge of a log-linear bucket: the folding is exact.
        CHECK(LatencyHistogram::bucket_low(LatencyHistogram::bucket_of(b)) == b);
    }
    CHECK(format_double(1024 / 1e9) == "1.024e-06");

    Snapshot s;
    // 500 ns and 1023 ns under the first bound; 1024 ns (exactly a bound) in
    // the next; 3 us under 4.096 us; 2 s past every bound.
    s.latency.push_back(histogram(3, {500, 1023, 1024, 3000, 2'000'000'000}));
    const std::string text = render(s);
    auto bucket = [&](const std::string &le) {
        return value_of(text, "serpens_batch_latency_seconds_bucket{lcore=\"3\",le=\"" + le + "\"}");
    };
    CHECK(bucket("1.024e-06") == "2");
    CHECK(bucket("2.048e-06") == "3");
    CHECK(bucket("4.096e-06") == "4");
    CHECK(bucket(format_double(static_cast<double>(1ull << 30) / 1e9)) == "4");
    CHECK(bucket("+Inf") == "5");
    CHECK(value_of(text, "serpens_batch_latency_seconds_count{lcore=\"3\"}") == "5");
    CHECK(std::stod(value_of(text, "serpens_batch_latency_seconds_sum{lcore=\"3\"}")) ==
          doctest::Approx((500 + 1023 + 1024 + 3000 + 2'000'000'000) / 1e9));
    // Cumulative: never decreasing, in the order of the bounds.
    uint64_t last = 0;
    int seen = 0;
    for (const std::string &line : lines_of(text)) {
        if (line.rfind("serpens_batch_latency_seconds_bucket{lcore=\"3\"", 0) == 0) {
            const uint64_t v = std::stoull(line.substr(line.rfind(' ') + 1));
            CHECK(v >= last);
            last = v;
            ++seen;
        }
    }
    CHECK(seen == 22); // 21 bounds and +Inf

    // An lcore that timed nothing: zeros everywhere, still a valid histogram.
    Snapshot empty;
    empty.latency.push_back(histogram(0, {}));
    const std::string zero = render(empty);
    CHECK(value_of(zero, "serpens_batch_latency_seconds_bucket{lcore=\"0\",le=\"+Inf\"}") == "0");
    CHECK(value_of(zero, "serpens_batch_latency_seconds_sum{lcore=\"0\"}") == "0");
}

namespace {

// A connected TCP socket to 127.0.0.1:port (closed by its destructor).
struct Client {
    explicit Client(uint16_t port)
    {
        fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0);
    }
    ~Client() { ::close(fd); }
    void send(const std::string &text) const { REQUIRE(::send(fd, text.data(), text.size(), MSG_NOSIGNAL) >= 0); }
    // Everything until the server closes, or what came within `ms`.
    std::string receive(int ms = 3000) const
    {
        std::string out;
        const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
        for (;;) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
            pollfd p{fd, POLLIN, 0};
            if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
                return out;
            }
            char buf[4096];
            const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) {
                return out;
            }
            out.append(buf, static_cast<std::size_t>(n));
        }
    }
    int fd = -1;
};

metrics::ServerOptions loopback()
{
    metrics::ServerOptions o;
    o.address = "127.0.0.1";
    o.port = 0; // any free port
    return o;
}

} // namespace

TEST_CASE("the server answers GET /metrics with the text format, 404 elsewhere, one request per connection")
{
    MetricsServer server(loopback(), [] { return std::string("serpens_up 1\n"); });
    REQUIRE(server.port() != 0);
    {
        Client c(server.port());
        c.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        const std::string reply = c.receive();
        CHECK(reply.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
        CHECK(reply.find("Content-Type: text/plain; version=0.0.4") != std::string::npos);
        CHECK(reply.find("Connection: close") != std::string::npos);
        CHECK(reply.ends_with("\r\n\r\nserpens_up 1\n"));
    }
    {
        Client c(server.port());
        c.send("GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
        CHECK(c.receive().rfind("HTTP/1.1 404", 0) == 0);
    }
    {
        Client c(server.port());
        c.send("garbage\r\n\r\n");
        CHECK(c.receive().rfind("HTTP/1.1 400", 0) == 0);
    }
}

TEST_CASE("a Range header is ignored: the body comes whole, once")
{
    const std::string body(1000, 'x');
    MetricsServer server(loopback(), [&body] { return body + "\n"; });
    // Thousands of ranges in one header once made httplib build a copy of
    // the body per range: megabytes per request, from any local user.
    std::string ranges = "bytes=";
    for (int i = 0; i < 2000; ++i) {
        ranges += "0-,";
    }
    ranges += "0-";
    for (const std::string &header :
         std::vector<std::string>{"Range: " + ranges, "rAnGe: bytes=0-3", "Range: bytes=0-3,\r\n 5-9"}) {
        CAPTURE(header);
        Client c(server.port());
        c.send("GET /metrics HTTP/1.1\r\nHost: x\r\n" + header + "\r\nAccept: */*\r\n\r\n");
        const std::string reply = c.receive();
        CHECK(reply.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
        CHECK(reply.ends_with("\r\n\r\n" + body + "\n"));
    }
}

TEST_CASE("a render that throws is a 500, and the server goes on")
{
    bool fail = true;
    MetricsServer server(loopback(), [&fail] {
        if (fail) {
            throw Error("no counters");
        }
        return std::string("ok\n");
    });
    Client a(server.port());
    a.send("GET /metrics HTTP/1.1\r\n\r\n");
    CHECK(a.receive().rfind("HTTP/1.1 500", 0) == 0);
    fail = false;
    Client b(server.port());
    b.send("GET /metrics HTTP/1.1\r\n\r\n");
    CHECK(b.receive().rfind("HTTP/1.1 200", 0) == 0);
}

TEST_CASE("silent, trickling and oversized clients hold up no scrape, and each is cut off")
{
    metrics::ServerOptions o = loopback();
    o.deadline = std::chrono::milliseconds(300);
    MetricsServer server(o, [] { return std::string("x 1\n"); });
    std::vector<std::unique_ptr<Client>> silent;
    for (int i = 0; i < 20; ++i) {
        silent.push_back(std::make_unique<Client>(server.port()));
        silent.back()->send("GET /metr");
    }
    {
        const auto began = std::chrono::steady_clock::now();
        Client c(server.port());
        c.send("GET /metrics HTTP/1.1\r\n\r\n");
        CHECK(c.receive().rfind("HTTP/1.1 200", 0) == 0);
        CHECK(std::chrono::steady_clock::now() - began < std::chrono::milliseconds(250));
    }
    // Past the deadline the silent ones are closed: recv sees the end.
    for (auto &c : silent) {
        CHECK(c->receive(2000).empty());
    }
    {
        Client big(server.port());
        big.send("GET /metrics HTTP/1.1\r\nX: " + std::string(10000, 'a'));
        CHECK(big.receive().rfind("HTTP/1.1 431", 0) == 0);
    }
}

TEST_CASE("a port another socket has is refused with the address and the reason")
{
    MetricsServer first(loopback(), [] { return std::string(); });
    metrics::ServerOptions o = loopback();
    o.port = first.port();
    const std::string taken = "cannot listen on 127.0.0.1:" + std::to_string(first.port()) + ": Address already in use";
    CHECK_THROWS_WITH_AS(MetricsServer(o, [] { return std::string(); }), doctest::Contains(taken.c_str()), Error);
    metrics::ServerOptions v6;
    v6.address = "::1";
    try {
        MetricsServer server(v6, [] { return std::string("v6 1\n"); });
        CHECK(server.port() != 0);
    } catch (const Error &e) {
        MESSAGE("no IPv6 loopback here: " << e.what()); // containers without IPv6
    }
}
