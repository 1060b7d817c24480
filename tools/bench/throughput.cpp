// serpens-bench throughput — packets per second of serpens-host forwarding
// through a pass-through chain (one noop NF), against dpdk-testpmd's io and
// macswap forwarding on the very same virtual devices, in the same run
// (issue "Data path" acceptance: serpens >= 0.8x testpmd macswap on one core).
//
// Every configuration is a separate process started here:
//   testpmd io / macswap  one forwarding lcore (+ the main lcore, asleep in
//                         testpmd's command line), driven through stdin:
//                         start, warm-up, `show port stats all`, window,
//                         `show port stats all`; Mpps = TX delta / window.
//   serpens 1 core        main lcore = the instance's lcore: receive, parse,
//                         classify, route, run the chain, transmit on one core.
//   serpens 2 cores       main lcore dispatches, a worker lcore runs the chain.
//   serpens <chain> 1 core  as serpens 1 core with a chain of real NFs (--chain:
//                         the SFC FW -> MON -> NAT, and by default its parts,
//                         so the report shows what each NF costs in the host).
//                         serpens-host runs `--duration <window>`; its counters
//                         cover its main loop from the first poll, so
//                         Mpps = egress TX / window (no start-up inside).
// Input: a serpens-pktgen pcap (--flows distinct flows, --size B frames)
// replayed forever by net_pcap (infinite_rx=1); output: net_null,no-rx=1.
//
// The machine is shared: besides Mpps, each run reports the CPU its process
// actually got over the window (/proc/<pid>/task/*/schedstat) so a run that
// was starved by other load shows as such; Mpps per busy core is printed too.
// A tool that is not installed (dpdk-testpmd: Debian's dpdk-dev) skips its
// rows with the reason, so `all` runs anywhere; speed is never asserted.

#include "bench.h"
#include "fixture.h"
#include "lab_config.h"
#include "process.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

#ifndef SERPENS_BENCH_HOST
#define SERPENS_BENCH_HOST "serpens-host"
#endif
#ifndef SERPENS_BENCH_PKTGEN
#define SERPENS_BENCH_PKTGEN "serpens-pktgen"
#endif

namespace serpens::bench {
namespace {

namespace fs = std::filesystem;

std::size_t count_of(const std::string &text, const std::string &needle)
{
    std::size_t n = 0;
    for (std::size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
        ++n;
    }
    return n;
}

struct Run {
    double mpps = 0;
    double window_s = 0;
    double cpu_cores = -1; // CPU the process got over the window, in cores; -1 unknown
    uint64_t packets = 0;
};

enum class Kind { testpmd_io, testpmd_macswap, serpens_1core, serpens_2core, serpens_chain };

struct Config {
    Kind kind;
    const char *name;
    const char *tool;
    const char *forward;
    int lcores; // lcores that poll
};

const Config configs[] = {
    {Kind::testpmd_io, "testpmd io", "dpdk-testpmd", "io (no packet access)", 1},
    {Kind::testpmd_macswap, "testpmd macswap", "dpdk-testpmd", "macswap (swaps MACs)", 1},
    {Kind::serpens_1core, "serpens 1 core", "serpens-host", "parse+gateway+router+noop chain", 1},
    {Kind::serpens_2core, "serpens 2 cores", "serpens-host", "dispatch on main; chain on worker", 2},
    // One row per chain of --chain; name and forwarding are the chain's (Entry).
    {Kind::serpens_chain, "serpens <chain> 1 core", "serpens-host", "parse+gateway+router+<chain>", 1},
};

// What one row measures: a configuration, and for serpens_chain its chain.
struct Entry {
    const Config *config;
    std::string chain; // dash-separated plugin names; empty but for serpens_chain
    std::string name;
    std::string forward;
};

// The chains --chain runs when not given: the SFC; its floor, three noops
// that each make only the one per-flow state access fw, mon and nat make per
// packet (a lookup, a counter add, a lookup); and, in a full run, the SFC's
// parts, whose ratios show where its time goes.
const std::vector<std::string> default_chains_full = {"fw-mon-nat", "lookup-count-lookup", "fw-nat", "fw", "mon",
                                                      "nat"};
const std::vector<std::string> default_chains_quick = {"fw-mon-nat", "lookup-count-lookup"};

// The one reference measurement of this process (see bench.h).
struct ReferenceCache {
    bool measured = false;
    std::optional<double> mpps;
};
ReferenceCache &reference_cache()
{
    static ReferenceCache cache;
    return cache;
}

class ThroughputBench : public Subcommand {
public:
    void add_options(CLI::App &app) override
    {
        _window_opt = app.add_option("--duration", _window_s,
                                     "measured seconds per run (default 3; --quick: 1)");
        _warmup_opt = app.add_option("--warmup", _warmup_s,
                                     "testpmd: seconds forwarded before the window opens (default 1; --quick: 0.3)");
        app.add_option("--flows", _flows, "distinct flows in the pcap")->capture_default_str();
        app.add_option("--size", _size, "frame size in bytes")->capture_default_str();
        app.add_option("--packets", _packets, "packets in the pcap (replayed forever)")->capture_default_str();
        app.add_option("--mix", _mix, "serpens-pktgen --mix")->capture_default_str();
        app.add_option("--vlan-ratio", _vlan_ratio, "serpens-pktgen --vlan-ratio")->capture_default_str();
        app.add_option("--burst", _burst, "packets per burst, both tools")->capture_default_str();
        app.add_option("--mbufs", _mbufs, "mbufs in each tool's pool")->capture_default_str();
        app.add_option("--memory", _memory_mb, "EAL -m (MB, --no-huge)")->capture_default_str();
        app.add_option("--lcores", _lcores,
                       "MAIN,FWD: testpmd's main and forwarding lcores; serpens 1 core runs on FWD, 2 cores on "
                       "both (default: the first two of --worker-cpus)");
        app.add_option("--testpmd", _testpmd, "dpdk-testpmd executable (Debian: apt-get install dpdk-dev)")
            ->capture_default_str();
        app.add_option("--host", _host, "serpens-host executable (default: this build's)")->capture_default_str();
        app.add_option("--pktgen", _pktgen, "serpens-pktgen executable (default: this build's)")
            ->capture_default_str();
        app.add_option("--only", _only, "configurations to run: io, macswap, serpens1, serpens2, chain (default all)")
            ->expected(1, -1);
        app.add_option("--target-ratio", _target_ratio, "target: serpens 1 core / testpmd macswap (informational)")
            ->capture_default_str();
        app.add_flag("--keep", _keep, "keep the temporary directory (configs, pcap, logs)");
        _chain_opt = app.add_option("--chain", _chains,
                                    "also run these chains of real NFs (each dash-separated plugin names; "
                                    "\"lookup\" and \"count\" are noops that make one per-flow state access per "
                                    "packet) on one core, as ratios to testpmd macswap (issue target >= 0.5x for "
                                    "fw-mon-nat); default fw-mon-nat lookup-count-lookup fw-nat fw mon nat "
                                    "(--quick: fw-mon-nat lookup-count-lookup); \"\" for none")
                         ->expected(1, -1);
        app.add_option("--fw-rules", _fw_rules, "rules of the fw in --chain")->capture_default_str();
    }

    int run(const Options &opts) override
    {
        if (_window_opt == nullptr || _window_opt->count() == 0) {
            _window_s = opts.quick ? 1.0 : 3.0;
        }
        if (_warmup_opt == nullptr || _warmup_opt->count() == 0) {
            _warmup_s = opts.quick ? 0.3 : 1.0;
        }
        if (_window_s <= 0 || _warmup_s < 0) {
            throw std::runtime_error("--duration must be > 0 and --warmup >= 0");
        }
        pick_lcores(opts);
        if (_chain_opt == nullptr || _chain_opt->count() == 0) {
            _chains = opts.quick ? default_chains_quick : default_chains_full;
        }
        std::erase(_chains, std::string());
        // A missing tool skips its configurations (with the reason), so
        // `all` still runs where testpmd is not installed.
        const bool have_testpmd = !which(_testpmd).empty();
        const bool have_host = !which(_host).empty();
        std::string skipped;
        if (!have_testpmd) {
            skipped += "dpdk-testpmd not found ('" + _testpmd +
                       "'; apt-get install dpdk-dev or pass --testpmd): testpmd not measured, no ratios\n";
        }
        if (!have_host) {
            skipped += "serpens-host not found ('" + _host + "'; build it or pass --host): serpens not measured\n";
        }
        if (which(_pktgen).empty()) {
            skipped += "serpens-pktgen not found ('" + _pktgen + "'; build it or pass --pktgen): nothing measured\n";
        }
        std::vector<Entry> chosen;
        for (const Config &c : configs) {
            const bool is_testpmd = c.kind == Kind::testpmd_io || c.kind == Kind::testpmd_macswap;
            if (!wanted(c) || (c.kind == Kind::serpens_2core && _main_lcore == _fwd_lcore) ||
                !(is_testpmd ? have_testpmd : have_host) || which(_pktgen).empty()) {
                continue;
            }
            if (c.kind != Kind::serpens_chain) {
                chosen.push_back(Entry{&c, "", c.name, c.forward});
                continue;
            }
            for (const std::string &chain : _chains) {
                chosen.push_back(Entry{&c, chain, "serpens " + chain + " 1 core", "parse+gateway+router+" + chain});
            }
        }
        if (!skipped.empty()) {
            std::cout << "throughput: " << skipped;
        }
        if (chosen.empty()) {
            std::cout << "throughput: nothing to measure\n";
            write_notes(opts, "throughput", "Not measured:\n\n" + skipped);
            return 0;
        }
        _skipped = skipped;

        return in_scratch_dir([&] { return measure_all(opts, chosen); });
    }

    // The reference line of every throughput figure: testpmd io forwarding
    // on this subcommand's vdevs and pcap, one short run.  Empty when a tool
    // is missing (the figures then go without it).
    std::optional<double> measure_reference(const Options &opts)
    {
        _window_s = 1.0;
        _warmup_s = 0.3;
        pick_lcores(opts);
        if (which(_testpmd).empty() || which(_pktgen).empty()) {
            return std::nullopt;
        }
        std::optional<double> mpps;
        in_scratch_dir([&] {
            make_pcap();
            mpps = run_testpmd("io").mpps;
            return 0;
        });
        return mpps;
    }

private:
    // Runs `body` with a fresh temporary directory (_tmp) for configs, pcap
    // and logs; removes it afterwards unless --keep (or on error, for a look).
    template <class Body> int in_scratch_dir(Body &&body)
    {
        const char *tmpdir = std::getenv("TMPDIR");
        std::string dir_template =
            (fs::path(tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp") / "serpens-bench-throughput-XXXXXX")
                .string();
        if (mkdtemp(dir_template.data()) == nullptr) {
            throw std::runtime_error("mkdtemp " + dir_template + ": " + std::strerror(errno));
        }
        _tmp = dir_template;
        // Host state on tmpfs, as the host's default puts it: on disk every
        // new page of a table waits for writeback, which no operator runs.
        std::error_code shm_ec;
        _state_root = fs::is_directory("/dev/shm", shm_ec) ? fs::path("/dev/shm") / _tmp.filename() : _tmp;
        struct RemoveState {
            const fs::path &root;
            ~RemoveState()
            {
                std::error_code ignored;
                fs::remove_all(root, ignored);
            }
        } remove_state{_state_root};
        // testpmd may exit before reading all of its stdin.
        struct sigaction ignore {}, old_pipe {};
        ignore.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &ignore, &old_pipe);
        int rc = 0;
        try {
            rc = body();
        } catch (...) {
            sigaction(SIGPIPE, &old_pipe, nullptr);
            std::cout << "throughput: logs kept in " << _tmp.string() << '\n';
            throw;
        }
        sigaction(SIGPIPE, &old_pipe, nullptr);
        if (_keep) {
            std::cout << "throughput: configs, pcap and logs kept in " << _tmp.string() << '\n';
        } else {
            std::error_code ec;
            fs::remove_all(_tmp, ec);
        }
        return rc;
    }

    bool wanted(const Config &c) const
    {
        if (_only.empty()) {
            return true;
        }
        const char *key = c.kind == Kind::testpmd_io        ? "io"
                          : c.kind == Kind::testpmd_macswap ? "macswap"
                          : c.kind == Kind::serpens_1core   ? "serpens1"
                          : c.kind == Kind::serpens_chain   ? "chain"
                                                            : "serpens2";
        return std::find(_only.begin(), _only.end(), key) != _only.end();
    }

    void pick_lcores(const Options &opts)
    {
        if (!_lcores.empty()) {
            const auto comma = _lcores.find(',');
            if (comma == std::string::npos) {
                throw std::runtime_error("--lcores wants MAIN,FWD (two lcore numbers)");
            }
            _main_lcore = std::stoi(_lcores.substr(0, comma));
            _fwd_lcore = std::stoi(_lcores.substr(comma + 1));
            return;
        }
        std::vector<int> cpus;
        for (int c = 0; c < CPU_SETSIZE && cpus.size() < 2; ++c) {
            if (CPU_ISSET(c, &opts.worker_cpus)) {
                cpus.push_back(c);
            }
        }
        if (cpus.empty()) {
            cpus.push_back(0);
        }
        _main_lcore = cpus.front();
        _fwd_lcore = cpus.back();
    }

    std::string eal_prefix(const char *what)
    {
        return fmt::format("--file-prefix=serpens-bench-{}-{}-{}", what, getpid(), _runs++);
    }

    std::string pcap_vdev() const
    {
        return "net_pcap0,rx_pcap=" + fs::absolute(_pcap).string() + ",infinite_rx=1";
    }

    void make_pcap()
    {
        _pcap = _tmp / "in.pcap";
        std::vector<std::string> argv = {_pktgen,
                                         "-o",
                                         _pcap.string(),
                                         "--flows",
                                         std::to_string(_flows),
                                         "--size",
                                         std::to_string(_size),
                                         "--packets",
                                         std::to_string(_packets),
                                         "--malformed-ratio",
                                         "0",
                                         "--mix",
                                         _mix,
                                         "--vlan-ratio",
                                         fmt::format("{}", _vlan_ratio)};
        Child gen(argv, _tmp / "pktgen.log", false);
        if (gen.wait_exit(120) != 0 || !fs::exists(_pcap)) {
            throw std::runtime_error("serpens-pktgen failed (" + _pktgen + "; pass --pktgen): " +
                                     last_lines(gen.log(), 5));
        }
        _pktgen_cmd.clear();
        for (std::size_t i = 0; i < argv.size(); ++i) {
            _pktgen_cmd += (i ? " " : "") + (i == 0 ? std::string("serpens-pktgen") : i == 2 ? "in.pcap" : argv[i]);
        }
    }

    // The noop plugin alone in a private plugin directory: the host loads
    // every .so in plugin_dir, and the build's may hold others.
    void make_serpens_files(const Options &opts)
    {
        const std::string noop = find_plugin(opts.plugin_dir, "noop");
        if (noop.empty()) {
            throw std::runtime_error("no serpens_nf_noop.so in " + opts.plugin_dir + " or its noop/: pass --plugins");
        }
        fs::create_directories(_tmp / "plugins");
        fs::copy_file(noop, _tmp / "plugins" / "serpens_nf_noop.so", fs::copy_options::overwrite_existing);
        fs::permissions(_tmp / "plugins" / "serpens_nf_noop.so", fs::perms(0755));
        // Each chain in a chains directory of its own: the host sets up every
        // chain it finds, and a run should hold only the chain it measures.
        for (const std::string &chain : _chains) {
            // The chain's plugins beside noop; NF configs as the nf subcommand's.
            const std::vector<std::string> nfs = split_chain(chain);
            for (const std::string &nf : nfs) {
                const std::string plugin = lab_plugin(nf);
                const std::string so = find_plugin(opts.plugin_dir, plugin);
                if (so.empty()) {
                    throw std::runtime_error("no serpens_nf_" + plugin + ".so in " + opts.plugin_dir +
                                             ": pass --plugins");
                }
                const fs::path dst = _tmp / "plugins" / ("serpens_nf_" + plugin + ".so");
                fs::copy_file(so, dst, fs::copy_options::overwrite_existing);
                fs::permissions(dst, fs::perms(0755));
            }
            NfParams params;
            params.fw_rules = _fw_rules;
            params.flows = _flows;
            fs::create_directories(_tmp / ("chains-" + chain));
            std::ofstream(_tmp / ("chains-" + chain) / (chain + ".toml"))
                << "egress = \"out\"\n" << lab_chain_toml(_tmp, nfs, params, chain);
        }
        fs::create_directories(_tmp / "chains-passthrough");
        std::ofstream(_tmp / "chains-passthrough" / "passthrough.toml") << "name = \"passthrough\"\n"
                                                               "egress = \"out\"\n\n"
                                                               "[[nf]]\n"
                                                               "name = \"pass\"\n"
                                                               "plugin = \"noop\"\n";
    }

    fs::path write_host_toml(bool two_cores, const std::string &chain = "passthrough")
    {
        const int instance_lcore = _fwd_lcore;
        const std::string lcores = two_cores ? fmt::format("{},{}", _main_lcore, _fwd_lcore)
                                             : std::to_string(_fwd_lcore);
        const fs::path path = _tmp / (chain + (two_cores ? "-host-2core.toml" : "-host-1core.toml"));
        std::ofstream out(path);
        out << fmt::format(
            "# serpens-bench throughput: {}\n"
            "[host]\n"
            "id = \"bench-tp-{}\"\n"
            "log_level = \"info\"\n"
            "plugin_dir = \"plugins\"\n"
            "chains_dir = \"chains-{}\"\n"
            "state_dir = \"{}\"\n\n"
            "[eal]\n"
            "args = [\"-l\", \"{}\", \"--no-huge\", \"-m\", \"{}\", \"--no-pci\", \"--no-shconf\", \"{}\", "
            "\"--no-telemetry\", \"--log-level=warning\"]\n\n"
            "[mempool]\n"
            "mbufs = {}\n"
            "cache = 256\n\n"
            "[[port]]\n"
            "name = \"in\"\n"
            "device = \"{}\"\n\n"
            "[[port]]\n"
            "name = \"out\"\n"
            "device = \"net_null0,no-rx=1\"\n\n"
            "[gateway]\n"
            "default = \"drop\"\n\n"
            "[[gateway.rule]]\n"
            "name = \"all\"\n"
            "chain = \"{}\"\n\n"
            "[instances]\n"
            "burst = {}\n\n"
            "[[instance]]\n"
            "chain = \"{}\"\n"
            "count = 1\n"
            "lcores = [{}]\n",
            two_cores ? "dispatch on the main lcore, the chain on a worker lcore"
                      : "everything on the main lcore (one core)",
            getpid(), chain, (_state_root / fmt::format("state-{}", _runs)).string(), lcores, _memory_mb, eal_prefix("host"), _mbufs - 1, pcap_vdev(), chain, _burst,
            chain, instance_lcore);
        if (!out) {
            throw std::runtime_error("cannot write " + path.string());
        }
        return path;
    }

    std::vector<std::string> testpmd_argv(const char *mode)
    {
        return {_testpmd,
                "-l",
                fmt::format("{},{}", _main_lcore, _fwd_lcore),
                "--no-huge",
                "-m",
                std::to_string(_memory_mb),
                "--no-pci",
                "--no-shconf",
                eal_prefix("testpmd"),
                "--no-telemetry",
                "--vdev=" + pcap_vdev(),
                "--vdev=net_null0,no-rx=1",
                "--",
                "-i",
                std::string("--forward-mode=") + mode,
                "--port-topology=chained",
                "--nb-cores=1",
                "--burst=" + std::to_string(_burst),
                "--total-num-mbufs=" + std::to_string(_mbufs),
                "--no-mlockall"};
    }

    Run run_testpmd(const char *mode)
    {
        const fs::path log = _tmp / fmt::format("testpmd-{}-{}.log", mode, _runs);
        Child tp(testpmd_argv(mode), log, true);
        auto prompts = [&](std::size_t n) {
            return tp.wait_log([n](const std::string &text) { return count_of(text, "testpmd> ") >= n; }, 60);
        };
        auto fail = [&](const std::string &what) {
            return std::runtime_error(fmt::format("testpmd {}: {} (log {}):\n{}", mode, what, log.string(),
                                                  last_lines(tp.log(), 15)));
        };
        if (!prompts(1)) {
            throw fail("no prompt");
        }
        tp.send("start\n");
        if (!prompts(2)) {
            throw fail("`start` did not complete");
        }
        sleep_s(_warmup_s);
        tp.send("show port stats all\n");
        if (!prompts(3)) {
            throw fail("no stats");
        }
        const double t1 = now_s();
        const int64_t c1 = cpu_ns(tp.pid());
        sleep_s(_window_s);
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

    Run run_serpens(bool two_cores, const std::string &chain = "passthrough")
    {
        const fs::path toml = write_host_toml(two_cores, chain);
        const std::string what = chain + (two_cores ? "-2core" : "-1core");
        const fs::path log = _tmp / fmt::format("host-{}-{}.log", what, _runs);
        const fs::path json = _tmp / fmt::format("host-{}-{}.json", what, _runs);
        fs::remove(json);
        Child host({_host, "-c", toml.string(), "--duration", fmt::format("{}", _window_s), "--stats-json",
                    json.string(), "--log-level", "info"},
                   log, false);
        auto fail = [&](const std::string &why) {
            return std::runtime_error(fmt::format("serpens-host ({}): {} (log {}):\n{}", what, why, log.string(),
                                                  last_lines(host.log(), 15)));
        };
        // "running" is logged just before the main loop starts.
        if (!host.wait_log([](const std::string &text) { return text.find("' running;") != std::string::npos; },
                           60)) {
            throw fail("did not start");
        }
        const double t0 = now_s();
        const int64_t c0 = cpu_ns(host.pid());
        sleep_s(_window_s * 0.9);
        const double t1 = now_s();
        const int64_t c1 = cpu_ns(host.pid());
        const int code = host.wait_exit(_window_s + 60);
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
        r.window_s = _window_s;
        r.mpps = static_cast<double>(r.packets) / _window_s / 1e6;
        if (c0 >= 0 && c1 >= 0 && t1 > t0) {
            r.cpu_cores = static_cast<double>(c1 - c0) / 1e9 / (t1 - t0);
        }
        return r;
    }

    Run run_config(const Entry &e)
    {
        switch (e.config->kind) {
        case Kind::testpmd_io:
            return run_testpmd("io");
        case Kind::testpmd_macswap:
            return run_testpmd("macswap");
        case Kind::serpens_1core:
            return run_serpens(false);
        case Kind::serpens_2core:
            return run_serpens(true);
        case Kind::serpens_chain:
            return run_serpens(false, e.chain);
        }
        return {};
    }

    int measure_all(const Options &opts, const std::vector<Entry> &chosen)
    {
        make_pcap();
        make_serpens_files(opts);
        std::cout << fmt::format("throughput: {} packets of {} B, {} flows ({}), replayed by net_pcap into "
                                 "net_null; lcores main {} fwd {}; {} s window after {} s warm-up, {} round(s)\n",
                                 _packets, _size, _flows, _mix, _main_lcore, _fwd_lcore, _window_s, _warmup_s,
                                 opts.repeat);
        // Rounds interleave the configurations, so drift in the machine's
        // load hits them alike; each round starts with a different one.
        std::vector<std::vector<Run>> runs(chosen.size());
        for (int round = 0; round < opts.repeat; ++round) {
            for (std::size_t k = 0; k < chosen.size(); ++k) {
                const std::size_t i = (k + static_cast<std::size_t>(round)) % chosen.size();
                Run r = run_config(chosen[i]);
                std::cout << fmt::format("  round {} {:<16} {:>7} Mpps  ({} pkts / {:.2f} s, CPU {:.2f} cores)\n",
                                         round + 1, chosen[i].name, fmt_num(r.mpps), r.packets, r.window_s,
                                         r.cpu_cores);
                std::cout.flush();
                runs[i].push_back(r);
            }
        }

        auto find = [&](Kind kind) -> int {
            for (std::size_t i = 0; i < chosen.size(); ++i) {
                if (chosen[i].config->kind == kind) {
                    return static_cast<int>(i);
                }
            }
            return -1;
        };
        const int io = find(Kind::testpmd_io);
        const int macswap = find(Kind::testpmd_macswap);
        if (io >= 0 && opts.reference && !reference_cache().measured) {
            // This run's io rounds are the reference for every later figure.
            std::vector<double> io_mpps;
            for (const Run &r : runs[static_cast<std::size_t>(io)]) {
                io_mpps.push_back(r.mpps);
            }
            reference_cache() = ReferenceCache{true, summarize(io_mpps).median};
        }
        // Ratios per round (same round: same load), then their median and range.
        auto ratio = [&](std::size_t i, int ref, bool per_core) -> Summary {
            std::vector<double> v;
            if (ref < 0) {
                return Summary{-1, -1, -1, -1, -1};
            }
            for (std::size_t r = 0; r < runs[i].size(); ++r) {
                const Run &a = runs[i][r];
                const Run &b = runs[static_cast<std::size_t>(ref)][r];
                if (per_core) {
                    if (a.cpu_cores > 0 && b.cpu_cores > 0) {
                        v.push_back((a.mpps / a.cpu_cores) / (b.mpps / b.cpu_cores));
                    }
                } else {
                    v.push_back(a.mpps / b.mpps);
                }
            }
            return v.empty() ? Summary{-1, -1, -1, -1, -1} : summarize(v);
        };
        auto cell = [](double v) { return v < 0 ? std::string("-") : fmt_num(v); };

        // What a chain's NFs add per packet in the host: its time per packet
        // minus the noop chain's, round by round.
        const int noop = find(Kind::serpens_1core);
        auto ns_over_noop = [&](std::size_t i) -> Summary {
            std::vector<double> v;
            if (noop < 0) {
                return Summary{-1, -1, -1, -1, -1};
            }
            for (std::size_t r = 0; r < runs[i].size(); ++r) {
                v.push_back(1e3 / runs[i][r].mpps - 1e3 / runs[static_cast<std::size_t>(noop)][r].mpps);
            }
            return summarize(v);
        };

        Table table{"throughput",
                    fmt::format("Forwarding throughput, {} B x {} flows, net_pcap replay -> net_null (Mpps; median "
                                "[min..max] of {})",
                                _size, _flows, opts.repeat),
                    {"config", "tool", "forwarding", "lcores", "cpu_cores", "mpps", "mpps_min", "mpps_max",
                     "mpps_per_cpu", "x_macswap", "x_io", "x_macswap_per_cpu", "nf_ns_pkt"},
                    {}};
        std::string summary;
        for (std::size_t i = 0; i < chosen.size(); ++i) {
            const Config &c = *chosen[i].config;
            std::vector<double> mpps, cores, per_cpu;
            for (const Run &r : runs[i]) {
                mpps.push_back(r.mpps);
                if (r.cpu_cores > 0) {
                    cores.push_back(r.cpu_cores);
                    per_cpu.push_back(r.mpps / r.cpu_cores);
                }
            }
            const Summary m = summarize(mpps);
            const Summary x_mac = ratio(i, macswap, false);
            const Summary x_io = ratio(i, io, false);
            const Summary x_mac_cpu = ratio(i, macswap, true);
            const Summary nf_ns = c.kind == Kind::serpens_chain ? ns_over_noop(i) : Summary{-1, -1, -1, -1, -1};
            table.rows.push_back({chosen[i].name, c.tool, chosen[i].forward, std::to_string(c.lcores),
                                  cores.empty() ? "-" : fmt_num(summarize(cores).median), fmt_num(m.median),
                                  fmt_num(m.min), fmt_num(m.max),
                                  per_cpu.empty() ? "-" : fmt_num(summarize(per_cpu).median), cell(x_mac.median),
                                  cell(x_io.median), cell(x_mac_cpu.median), cell(nf_ns.median)});
            if (c.kind == Kind::serpens_chain && chosen[i].chain == "fw-mon-nat" && macswap >= 0) {
                summary += fmt::format("serpens SFC fw-mon-nat on 1 core / testpmd macswap = {} (rounds {}..{}; "
                                       "target >= 0.5): {}\n",
                                       fmt_num(x_mac.median), cell(x_mac.min), cell(x_mac.max),
                                       x_mac.median >= 0.5 ? "MEETS" : "BELOW");
            }
            if (c.kind == Kind::serpens_1core || c.kind == Kind::serpens_2core || c.kind == Kind::serpens_chain) {
                summary += fmt::format("{}: {} Mpps on {} lcore(s)", chosen[i].name, fmt_num(m.median), c.lcores);
                if (macswap >= 0) {
                    summary += fmt::format("; x{} of testpmd macswap (rounds {}..{}), per CPU-second x{}",
                                           cell(x_mac.median), cell(x_mac.min), cell(x_mac.max),
                                           cell(x_mac_cpu.median));
                }
                if (io >= 0) {
                    summary += fmt::format("; x{} of testpmd io", cell(x_io.median));
                }
                if (nf_ns.median >= 0) {
                    summary += fmt::format("; its NFs add {} ns/packet to the noop chain's", fmt_num(nf_ns.median));
                }
                summary += "\n";
            }
            if (c.kind == Kind::serpens_1core && macswap >= 0) {
                summary += fmt::format("serpens 1 core / testpmd macswap = {} (target >= {}): {}\n",
                                       fmt_num(x_mac.median), fmt_num(_target_ratio),
                                       x_mac.median >= _target_ratio ? "MEETS" : "BELOW");
            }
        }
        print_table(table);
        std::cout << '\n' << summary;
        write_csv(opts, table);

        std::string notes = fmt::format(
            "Target (issue \"Data path\", informational): serpens on one core >= {}x testpmd macswap on one "
            "forwarding core.\n\n{}\n"
            "Input: `{}`, replayed by `{}` into `net_null0,no-rx=1`; burst {}, {} mbufs, EAL `--no-huge -m {} "
            "--no-pci`.  testpmd: `-l {},{} ... -- -i --forward-mode=io|macswap --port-topology=chained "
            "--nb-cores=1`, Mpps = TX delta between two `show port stats all` {} s apart, after {} s of "
            "warm-up.  serpens-host: `--duration {}`; Mpps = egress TX / duration (its counters start with "
            "its main loop, start-up is outside).  `cpu_cores`: CPU time the process got over the window "
            "(schedstat) — below `lcores` means the machine's other load took CPU from it; "
            "`mpps_per_cpu` and `x_macswap_per_cpu` normalise for that.  Ratios are medians of per-round "
            "ratios (the configurations run interleaved, round by round).  `nf_ns_pkt`: what a chain's NFs add "
            "to the noop chain's time per packet (1000 / Mpps, per round); a chain of one NF gives that NF's "
            "cost in the host, and the parts of the SFC show where its time goes.  `lookup-count-lookup` is the "
            "SFC's floor: three noops that make only the per-flow state access fw, mon and nat each need per "
            "packet (a lookup, a counter add, a lookup) on one-word keys, and nothing else.\n{}",
            fmt_num(_target_ratio), summary, _pktgen_cmd, "net_pcap0,rx_pcap=in.pcap,infinite_rx=1", _burst,
            _mbufs, _memory_mb, _main_lcore, _fwd_lcore, fmt_num(_window_s), fmt_num(_warmup_s),
            fmt_num(_window_s), _skipped.empty() ? "" : "\nNot measured: " + _skipped);
        write_notes(opts, table.name, notes + "\n" + reference_note(opts));
        plot_with_reference(opts, table, PlotSpec{"bar", "config", "", {"mpps"}, "mpps_min", "mpps_max", "Mpps", false});
        return 0;
    }

    double _window_s = 3;
    double _warmup_s = 1;
    CLI::Option *_window_opt = nullptr;
    CLI::Option *_warmup_opt = nullptr;
    uint32_t _flows = 4096;
    uint32_t _size = 64;
    uint32_t _packets = 8192;
    std::string _mix = "tcp=50,udp=50";
    double _vlan_ratio = 0;
    uint32_t _burst = 32;
    uint32_t _mbufs = 32768;
    uint32_t _memory_mb = 512;
    std::string _lcores;
    std::string _testpmd = "dpdk-testpmd";
    std::string _host = SERPENS_BENCH_HOST;
    std::string _pktgen = SERPENS_BENCH_PKTGEN;
    std::vector<std::string> _only;
    double _target_ratio = 0.8;
    bool _keep = false;
    std::vector<std::string> _chains;
    CLI::Option *_chain_opt = nullptr;
    uint32_t _fw_rules = 1000;

    int _main_lcore = 0;
    int _fwd_lcore = 1;
    unsigned _runs = 0;
    fs::path _tmp;
    fs::path _state_root; // host state: /dev/shm/<_tmp's name>, or _tmp without /dev/shm
    fs::path _pcap;
    std::string _pktgen_cmd;
    std::string _skipped;
};

} // namespace

std::optional<double> reference_io_mpps(const Options &opts)
{
    ReferenceCache &cache = reference_cache();
    if (!opts.reference) {
        return std::nullopt;
    }
    if (!cache.measured) {
        cache.measured = true;
        std::cout << "reference: measuring dpdk-testpmd io forwarding for the figures' reference line\n";
        try {
            cache.mpps = ThroughputBench().measure_reference(opts);
        } catch (const std::exception &e) {
            std::cout << "reference: not measured: " << e.what() << '\n';
        }
        if (cache.mpps) {
            std::cout << fmt::format("reference: dpdk-testpmd io {} Mpps\n", fmt_num(*cache.mpps));
        } else {
            std::cout << "reference: none (dpdk-testpmd or serpens-pktgen missing)\n";
        }
    }
    return cache.mpps;
}

void plot_with_reference(const Options &opts, const Table &table, const PlotSpec &spec)
{
    std::optional<RefLine> line;
    if (const auto mpps = reference_io_mpps(opts)) {
        line = RefLine{*mpps, fmt::format("dpdk-testpmd io, same vdevs: {} Mpps", fmt_num(*mpps))};
    }
    plot(opts, table, spec, line);
}

std::string reference_note(const Options &opts)
{
    const auto mpps = reference_io_mpps(opts);
    if (!mpps) {
        return "No reference line: dpdk-testpmd io was not measured in this run (--no-reference, or testpmd "
               "not installed).\n";
    }
    return fmt::format("Reference line: dpdk-testpmd io forwarding, net_pcap replay -> net_null on one core, "
                       "{} Mpps, measured in this run (see `throughput`): the I/O alone, no packet access.\n",
                       fmt_num(*mpps));
}

SERPENS_BENCH_SUBCOMMAND(ThroughputBench, "throughput",
                         "Mpps of serpens-host (noop chain, 1 and 2 cores; the chains of --chain) vs dpdk-testpmd "
                         "io/macswap, same vdevs",
                         22);

} // namespace serpens::bench
