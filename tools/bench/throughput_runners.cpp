// serpens-bench throughput: one measured run of one configuration — testpmd
// driven through its command line, or serpens-host read through its control
// socket — as packets, window and the CPU the process got.

#include "throughput.h"

#include "batch_latency.h"
#include "process.h"
#include "scratch.h"

#include "control/protocol.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <optional>
#include <regex>
#include <stdexcept>

namespace serpens::bench {

namespace fs = std::filesystem;

namespace {

std::size_t count_of(const std::string &text, const std::string &needle)
{
    std::size_t n = 0;
    for (std::size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
        ++n;
    }
    return n;
}

// The CPU a process got over a window, in cores, from its CPU times at the
// window's ends (cpu_ns); -1 when either is unknown.
double cpu_cores_over(int64_t c1, int64_t c2, double window_s)
{
    return c1 >= 0 && c2 >= 0 ? static_cast<double>(c2 - c1) / 1e9 / window_s : -1;
}

} // namespace

std::vector<std::string> ThroughputRig::testpmd_argv(const char *mode, bool two_cores)
{
    // Two forwarding cores: testpmd's main lcore (which only reads commands)
    // shares the first CPU with a forwarding lcore.
    const std::string lcores = two_cores ? fmt::format("0@{},1@{},2@{}", main_lcore, main_lcore, fwd_lcore)
                                         : fmt::format("{},{}", main_lcore, fwd_lcore);
    const unsigned queues = two_cores ? 2 : 1;
    return {testpmd_exe,
            two_cores ? "--lcores" : "-l",
            lcores,
            "--no-huge",
            "-m",
            std::to_string(memory_mb),
            "--no-pci",
            "--no-shconf",
            eal_prefix("testpmd"),
            "--no-telemetry",
            "--vdev=" + pcap_vdev(queues),
            "--vdev=net_null0,no-rx=1",
            "--",
            "-i",
            std::string("--forward-mode=") + mode,
            "--port-topology=chained",
            "--nb-cores=" + std::to_string(queues),
            "--rxq=" + std::to_string(queues),
            "--txq=" + std::to_string(queues),
            "--burst=" + std::to_string(burst),
            "--total-num-mbufs=" + std::to_string(mbufs),
            "--no-mlockall"};
}

Run ThroughputRig::run_testpmd(const char *mode, bool two_cores)
{
    const fs::path log = tmp / fmt::format("testpmd-{}{}-{}.log", mode, two_cores ? "-2core" : "", runs);
    Child tp(testpmd_argv(mode, two_cores), log, true);
    auto prompts = [&](std::size_t n) {
        return tp.wait_log([n](const std::string &text) { return count_of(text, "testpmd> ") >= n; }, 60);
    };
    auto fail = [&](const std::string &what) {
        return std::runtime_error(
            fmt::format("testpmd {}: {} (log {}):\n{}", mode, what, log.string(), last_lines(tp.log(), 15)));
    };
    if (!prompts(1)) {
        throw fail("no prompt");
    }
    tp.send("start\n");
    if (!prompts(2)) {
        throw fail("`start` did not complete");
    }
    sleep_s(warmup_s);
    tp.send("show port stats all\n");
    if (!prompts(3)) {
        throw fail("no stats");
    }
    const double t1 = now_s();
    const int64_t c1 = cpu_ns(tp.pid());
    sleep_s(window_s);
    tp.send("show port stats all\n");
    if (!prompts(4)) {
        throw fail("no stats");
    }
    const double t2 = now_s();
    const int64_t c2 = cpu_ns(tp.pid());
    tp.send("stop\nquit\n");
    tp.close_stdin();
    const int code = tp.wait_exit(30);
    // "NIC statistics for port P ... TX-packets: N", twice per port.
    const std::string text = tp.log();
    static const std::regex block(R"(NIC statistics for port (\d+) *#+[^#]*?TX-packets:\s*(\d+))");
    std::map<int, std::vector<uint64_t>> tx;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), block); it != std::sregex_iterator(); ++it) {
        tx[std::stoi((*it)[1])].push_back(std::stoull((*it)[2]));
    }
    // The egress is the port that transmitted (net_null: port 1).
    uint64_t delta = 0;
    for (const auto &[port, samples] : tx) {
        if (samples.size() >= 2) {
            delta = std::max(delta, samples[1] - samples[0]);
        }
    }
    if (delta == 0) {
        throw fail(fmt::format("no TX counted in the window (exit code {})", code));
    }
    Run r;
    r.packets = delta;
    r.window_s = t2 - t1;
    r.mpps = static_cast<double>(delta) / r.window_s / 1e6;
    r.cpu_cores = cpu_cores_over(c1, c2, r.window_s);
    return r;
}

namespace {

// What the bench reads of a running host (its control socket's `stats`).
struct LiveCounters {
    uint64_t rx = 0;            // ingress port "in"
    uint64_t tx = 0;            // egress port "out"
    bool has_flows = false;     // the chain keeps a flow table
    uint64_t flows_live = 0;    // its live flows
    uint64_t flows_created = 0; // flows it created so far
    uint64_t flows_refused = 0; // first packets its full table refused
    uint64_t nf_dropped = 0;    // packets the chain's NFs dropped, all instances
    BatchLatency batch_latency;
};

LiveCounters live_counters(const fs::path &socket, const std::string &chain)
{
    const auto j = control_call(socket.string(), {{"cmd", "stats"}});
    if (!j.is_object() || !j.contains("ports")) {
        throw std::runtime_error("the host's stats are not the JSON expected");
    }
    LiveCounters c;
    for (const auto &port : j["ports"]) {
        if (port.value("name", "") == "out") {
            c.tx = port.value("tx", uint64_t{0});
        } else if (port.value("name", "") == "in") {
            c.rx = port.value("rx", uint64_t{0});
        }
    }
    if (j.contains("chains") && j["chains"].contains(chain) && j["chains"][chain].contains("flows")) {
        const auto &f = j["chains"][chain]["flows"];
        c.has_flows = true;
        c.flows_live = f.value("live", uint64_t{0});
        c.flows_created = f.value("created", uint64_t{0});
        c.flows_refused = f.value("refused_full", uint64_t{0});
    }
    for (const auto &inst : j.value("instances", nlohmann::json::array())) {
        if (inst.value("chain", "") == chain) {
            for (const auto &nf : inst.value("nfs", nlohmann::json::array())) {
                c.nf_dropped += nf.value("dropped", uint64_t{0});
            }
        }
    }
    c.batch_latency = batch_latency_of(j);
    return c;
}

} // namespace

Run ThroughputRig::run_serpens(bool two_cores, const std::string &chain)
{
    const fs::path toml = write_host_toml(two_cores, chain);
    const std::string what = chain + (two_cores ? "-2core" : "-1core");
    const fs::path log = tmp / fmt::format("host-{}-{}.log", what, runs);
    const fs::path json = tmp / fmt::format("host-{}-{}.json", what, runs);
    fs::remove(json);
    // Each run starts from fresh state, and at a million flows a run's is
    // gigabytes of tmpfs: kept until the end, they got the fifth round's
    // host killed for memory.  Declared before the host, so it goes after
    // the host has stopped, whether the run succeeds or throws.
    const RemovedOnExit remove_state(host_state);
    // Stopped once measured: how long the flows take to establish is not known.
    Child host({host_exe, "-c", toml.string(), "--stats-json", json.string(), "--log-level", "info"}, log, false);
    auto fail = [&](const std::string &why) {
        return std::runtime_error(
            fmt::format("serpens-host ({}): {} (log {}):\n{}", what, why, log.string(), last_lines(host.log(), 15)));
    };
    // "running" is logged just before the main loop starts.  With state for
    // a million flows, NF init alone takes 20-30 s here (mon's hosts table
    // is reserved and faulted in when it is made).
    if (!host.wait_log([](const std::string &text) { return text.find("' running;") != std::string::npos; }, 180)) {
        throw fail("did not start");
    }
    const fs::path socket = host_socket;
    auto counters = [&] {
        try {
            return live_counters(socket, chain);
        } catch (const std::exception &e) {
            throw fail(std::string("cannot read its counters: ") + e.what());
        }
    };
    if (!new_flows) {
        // Established flows: every flow of the capture is in the chain's
        // flow table before the warm-up (its growth stalling for a second
        // ends the wait too: a table that refuses the rest), as testpmd
        // has replayed the capture before its window.
        const double deadline = now_s() + 300;
        LiveCounters s = counters();
        double grew = now_s();
        while (s.has_flows && s.flows_live < flows && now_s() - grew < 1 && now_s() < deadline) {
            sleep_s(0.05);
            const LiveCounters next = counters();
            if (next.flows_live > s.flows_live) {
                grew = now_s();
            }
            s = next;
        }
        sleep_s(warmup_s);
    }
    const LiveCounters s1 = counters();
    const double t1 = now_s();
    const int64_t c1 = cpu_ns(host.pid());
    LiveCounters s2 = s1;
    double t2 = t1;
    if (new_flows) {
        // Every packet opens a flow: the window starts with the first packet
        // and ends before the capture's first pass does.  A capture whose
        // first pass was mostly over before the window opened cannot give
        // a rate: what is left of it would read as a slow chain.
        auto too_short = [&](const std::string &why) {
            return fail(why + ": measure new flows with a longer capture, e.g. --flows 1000000 --packets 1000000");
        };
        if (s1.flows_created >= flows / 2) {
            throw too_short(fmt::format("the capture's first pass was over before the window opened ({} of {} "
                                        "flows created)",
                                        s1.flows_created, flows));
        }
        while (t2 - t1 < window_s) {
            sleep_s(std::min(0.02, window_s / 10));
            s2 = counters();
            t2 = now_s();
            if (s2.flows_created >= flows * 9 / 10) {
                break; // most of the capture's flows exist: the rest would be established ones
            }
        }
        // Counters are read every 20 ms at most: a shorter pass is no rate.
        if (t2 - t1 < 0.2) {
            throw too_short(fmt::format("the capture's first pass took {:.0f} ms, too short to time", (t2 - t1) * 1e3));
        }
    } else {
        sleep_s(window_s);
        s2 = counters();
        t2 = now_s();
    }
    Run r;
    r.packets = s2.tx - s1.tx;
    r.window_s = t2 - t1;
    r.cpu_cores = cpu_cores_over(c1, cpu_ns(host.pid()), r.window_s);
    if (new_flows) {
        r.new_flows_per_s = static_cast<double>(s2.flows_created - s1.flows_created) / r.window_s;
        r.rx_mpps = static_cast<double>(s2.rx - s1.rx) / r.window_s / 1e6;
        r.refused_per_s = static_cast<double>(s2.flows_refused - s1.flows_refused) / r.window_s;
        r.nf_dropped_per_s = static_cast<double>(s2.nf_dropped - s1.nf_dropped) / r.window_s;
    }
    BatchLatency window;
    add_difference(window, s2.batch_latency, s1.batch_latency);
    r.batch_us_max = highest_us(window); // -1: no batch in the window
    r.batch_us_p99 = r.batch_us_max < 0 ? -1 : percentile_us(window, 0.99);
    const int code = host.stop(10);
    if (code != 0) {
        throw fail(fmt::format("exit code {} after SIGTERM", code));
    }
    // A flood the chain refuses whole forwards nothing, but takes packets in.
    if (r.packets == 0 && !(new_flows && s2.rx > s1.rx)) {
        throw fail("no packet left the chain in the window");
    }
    r.mpps = static_cast<double>(r.packets) / r.window_s / 1e6;
    return r;
}

} // namespace serpens::bench
