// serpens-bench throughput: one measured run of one configuration — testpmd
// driven through its command line, or serpens-host for a fixed duration —
// as packets, window and the CPU the process got.

#include "throughput.h"

#include "process.h"

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
    if (c1 >= 0 && c2 >= 0) {
        r.cpu_cores = static_cast<double>(c2 - c1) / 1e9 / r.window_s;
    }
    return r;
}

Run ThroughputRig::run_serpens(bool two_cores, const std::string &chain)
{
    const fs::path toml = write_host_toml(two_cores, chain);
    const std::string what = chain + (two_cores ? "-2core" : "-1core");
    const fs::path log = tmp / fmt::format("host-{}-{}.log", what, runs);
    const fs::path json = tmp / fmt::format("host-{}-{}.json", what, runs);
    fs::remove(json);
    Child host({host_exe, "-c", toml.string(), "--duration", fmt::format("{}", window_s), "--stats-json", json.string(),
                "--log-level", "info"},
               log, false);
    auto fail = [&](const std::string &why) {
        return std::runtime_error(
            fmt::format("serpens-host ({}): {} (log {}):\n{}", what, why, log.string(), last_lines(host.log(), 15)));
    };
    // "running" is logged just before the main loop starts.
    if (!host.wait_log([](const std::string &text) { return text.find("' running;") != std::string::npos; }, 60)) {
        throw fail("did not start");
    }
    const double t0 = now_s();
    const int64_t c0 = cpu_ns(host.pid());
    sleep_s(window_s * 0.9);
    const double t1 = now_s();
    const int64_t c1 = cpu_ns(host.pid());
    const int code = host.wait_exit(window_s + 60);
    if (code != 0) {
        throw fail(fmt::format("exit code {}", code));
    }
    const std::string stats = read_text(json);
    // The host's stats JSON: ports[] entries with "name" and "tx".
    const auto parsed = nlohmann::json::parse(stats, nullptr, false);
    std::optional<uint64_t> out_tx;
    if (parsed.is_object() && parsed.contains("ports") && parsed["ports"].is_array()) {
        for (const auto &port : parsed["ports"]) {
            if (port.is_object() && port.value("name", "") == "out" && port.contains("tx") &&
                port["tx"].is_number_unsigned()) {
                out_tx = port["tx"].get<uint64_t>();
            }
        }
    }
    if (!out_tx) {
        throw fail("no TX count for port 'out' in " + json.string());
    }
    Run r;
    r.packets = *out_tx;
    r.window_s = window_s;
    r.mpps = static_cast<double>(r.packets) / window_s / 1e6;
    if (c0 >= 0 && c1 >= 0 && t1 > t0) {
        r.cpu_cores = static_cast<double>(c1 - c0) / 1e9 / (t1 - t0);
    }
    return r;
}

} // namespace serpens::bench
