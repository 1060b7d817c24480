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
//                         serpens-host is read through its control socket:
//                         once every flow of the capture is in the chain's
//                         flow table, warm-up, egress TX, window, egress TX;
//                         Mpps = TX delta / window, as for testpmd.  With
//                         --new-flows the window starts at once and ends
//                         before the capture's first pass does (every packet
//                         opens a flow), and the chain's new flows/s count too.
// Input: a serpens-pktgen pcap (--flows distinct flows, --size B frames)
// replayed forever by net_pcap (infinite_rx=1); output: net_null,no-rx=1.
//
// The machine is shared: besides Mpps, each run reports the CPU its process
// actually got over the window (/proc/<pid>/task/*/schedstat) so a run that
// was starved by other load shows as such; Mpps per busy core is printed too.
// A tool that is not installed (dpdk-testpmd: Debian's dpdk-dev) skips its
// rows with the reason, so `all` runs anywhere; speed is never asserted.

#include "bench.h"
#include "process.h"
#include "throughput.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace serpens::bench {
namespace {

const Config configs[] = {
    {Kind::testpmd_io, "testpmd io", "dpdk-testpmd", "io (no packet access)", 1},
    {Kind::testpmd_macswap, "testpmd macswap", "dpdk-testpmd", "macswap (swaps MACs)", 1},
    {Kind::serpens_1core, "serpens 1 core", "serpens-host", "parse+gateway+router+noop chain", 1},
    {Kind::testpmd_macswap_2core, "testpmd macswap 2 cores", "dpdk-testpmd", "macswap, 2 RX queues", 2},
    {Kind::serpens_2core, "serpens 2 cores", "serpens-host", "2 lcores each receive a queue, 2 instances", 2},
    // One row per chain of --chain; name and forwarding are the chain's (Entry).
    {Kind::serpens_chain, "serpens <chain> 1 core", "serpens-host", "parse+gateway+router+<chain>", 1},
};

// The chains --chain runs when not given: the SFC; its floor, three noops
// that each make only the one per-flow state access fw, mon and nat make per
// packet (a lookup, a counter add, a lookup); and, in a full run, the SFC's
// parts, whose ratios show where its time goes.
const std::vector<std::string> default_chains_full = {"fw-mon-nat", "lookup-count-lookup", "fw-nat", "fw", "mon",
                                                      "nat"};
const std::vector<std::string> default_chains_quick = {"fw-mon-nat", "lookup-count-lookup"};

class ThroughputBench : public Subcommand {
public:
    void add_options(CLI::App &app) override
    {
        _window_opt = app.add_option("--duration", _rig.window_s, "measured seconds per run (default 3; --quick: 1)");
        _warmup_opt = app.add_option("--warmup", _rig.warmup_s,
                                     "testpmd: seconds forwarded before the window opens (default 1; --quick: 0.3)");
        app.add_option("--flows", _rig.flows, "distinct flows in the pcap")->capture_default_str();
        app.add_option("--size", _rig.size, "frame size in bytes")->capture_default_str();
        app.add_option("--packets", _rig.packets, "packets in the pcap (replayed forever)")->capture_default_str();
        app.add_option("--mix", _rig.mix, "serpens-pktgen --mix")->capture_default_str();
        app.add_option("--vlan-ratio", _rig.vlan_ratio, "serpens-pktgen --vlan-ratio")->capture_default_str();
        app.add_option("--burst", _rig.burst, "packets per burst, both tools")->capture_default_str();
        app.add_option("--mbufs", _rig.mbufs, "mbufs in each tool's pool")->capture_default_str();
        app.add_option("--memory", _rig.memory_mb, "EAL -m (MB, --no-huge)")->capture_default_str();
        app.add_option("--state-dir", _rig.state_parent,
                       "put the host's state in a fresh directory under this one (default: where the host's "
                       "default state_dir is, /dev/shm/serpens if it exists, which an installed host mounts with 2 MB "
                       "pages, else /dev/shm): e.g. a tmpfs mounted with huge=advise, to measure the tables with "
                       "2 MB pages");
        app.add_option("--lcores", _rig.lcores,
                       "MAIN,FWD: testpmd's main and forwarding lcores; serpens 1 core runs on FWD, 2 cores on "
                       "both (default: the first two of --worker-cpus)");
        app.add_option("--testpmd", _rig.testpmd_exe, "dpdk-testpmd executable (Debian: apt-get install dpdk-dev)")
            ->capture_default_str();
        app.add_option("--host", _rig.host_exe, "serpens-host executable (default: this build's, or the installed one)")
            ->capture_default_str();
        app.add_option("--pktgen", _rig.pktgen_exe,
                       "serpens-pktgen executable (default: this build's, or the installed one)")
            ->capture_default_str();
        app.add_option("--only", _only,
                       "configurations to run: io, macswap, macswap2, serpens1, serpens2, chain (default all)")
            ->expected(1, -1);
        app.add_option("--target-ratio", _target_ratio, "target: serpens 1 core / testpmd macswap (informational)")
            ->capture_default_str();
        app.add_flag("--keep", _rig.keep, "keep the temporary directory (configs, pcap, logs)");
        _chain_opt = app.add_option("--chain", _chains,
                                    "also run these chains of real NFs (each dash-separated plugin names; "
                                    "\"lookup\" and \"count\" are noops that make one per-flow state access per "
                                    "packet) on one core, as ratios to testpmd macswap (issue target >= 0.5x for "
                                    "fw-mon-nat); default fw-mon-nat lookup-count-lookup fw-nat fw mon nat "
                                    "(--quick: fw-mon-nat lookup-count-lookup); \"\" for none")
                         ->expected(1, -1);
        app.add_option("--fw-rules", _rig.fw_rules, "rules of the fw in --chain")->capture_default_str();
        app.add_option("--flow-capacity", _rig.flow_capacity,
                       "flows the chain's flow table holds (default: the host's, 1048576, or --flows if more); "
                       "below --flows with --new-flows, a flood that fills the table")
            ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 32));
        app.add_option("--nat-external", _rig.nat_external,
                       "nat's external pool, a CIDR (default 203.0.113.0/24); a small one, e.g. /30, with "
                       "--new-flows: a flood that exhausts it");
        app.add_option("--mon-fold-ms", _rig.mon_fold_ms,
                       "mon's fold_ms (default: mon's, 1000): how long a flow's counts may wait before they are "
                       "added to its hosts'; each flow folds at most that often, two hosts-table writes a fold")
            ->check(CLI::Range(1u, 3600000u));
        app.add_flag("--new-flows", _rig.new_flows,
                     "serpens runs measure the capture's first pass, where every packet of a new flow opens it "
                     "(use --flows = --packets: a SYN flood's worst case), and report new flows per second; "
                     "otherwise every flow is established before the warm-up");
    }

    int run(const Options &opts) override
    {
        if (_window_opt == nullptr || _window_opt->count() == 0) {
            _rig.window_s = opts.quick ? 1.0 : 3.0;
        }
        if (_warmup_opt == nullptr || _warmup_opt->count() == 0) {
            _rig.warmup_s = opts.quick ? 0.3 : 1.0;
        }
        if (_rig.window_s <= 0 || _rig.warmup_s < 0) {
            throw std::runtime_error("--duration must be > 0 and --warmup >= 0");
        }
        _rig.pick_lcores(opts);
        if (_chain_opt == nullptr || _chain_opt->count() == 0) {
            _chains = opts.quick ? default_chains_quick : default_chains_full;
        }
        std::erase(_chains, std::string());
        // A missing tool skips its configurations (with the reason), so
        // `all` still runs where testpmd is not installed.
        const bool have_testpmd = !which(_rig.testpmd_exe).empty();
        const bool have_host = !which(_rig.host_exe).empty();
        std::string skipped;
        if (!have_testpmd) {
            skipped += "dpdk-testpmd not found ('" + _rig.testpmd_exe +
                       "'; apt-get install dpdk-dev or pass --testpmd): testpmd not measured, no ratios\n";
        }
        if (!have_host) {
            skipped +=
                "serpens-host not found ('" + _rig.host_exe + "'; build it or pass --host): serpens not measured\n";
        }
        if (which(_rig.pktgen_exe).empty()) {
            skipped +=
                "serpens-pktgen not found ('" + _rig.pktgen_exe + "'; build it or pass --pktgen): nothing measured\n";
        }
        std::vector<Entry> chosen;
        for (const Config &c : configs) {
            const bool is_testpmd =
                c.kind == Kind::testpmd_io || c.kind == Kind::testpmd_macswap || c.kind == Kind::testpmd_macswap_2core;
            if (!wanted(c) || (c.lcores == 2 && _rig.main_lcore == _rig.fwd_lcore) ||
                !(is_testpmd ? have_testpmd : have_host) || which(_rig.pktgen_exe).empty()) {
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

        return _rig.in_scratch_dir([&] { return measure_all(opts, chosen); });
    }

private:
    bool wanted(const Config &c) const
    {
        if (_only.empty()) {
            return true;
        }
        const char *key = c.kind == Kind::testpmd_io              ? "io"
                          : c.kind == Kind::testpmd_macswap       ? "macswap"
                          : c.kind == Kind::testpmd_macswap_2core ? "macswap2"
                          : c.kind == Kind::serpens_1core         ? "serpens1"
                          : c.kind == Kind::serpens_chain         ? "chain"
                                                                  : "serpens2";
        return std::find(_only.begin(), _only.end(), key) != _only.end();
    }

    Run run_config(const Entry &e)
    {
        switch (e.config->kind) {
        case Kind::testpmd_io:
            return _rig.run_testpmd("io");
        case Kind::testpmd_macswap:
            return _rig.run_testpmd("macswap");
        case Kind::testpmd_macswap_2core:
            return _rig.run_testpmd("macswap", true);
        case Kind::serpens_1core:
            return _rig.run_serpens(false);
        case Kind::serpens_2core:
            return _rig.run_serpens(true);
        case Kind::serpens_chain:
            return _rig.run_serpens(false, e.chain);
        }
        return {};
    }

    int measure_all(const Options &opts, const std::vector<Entry> &chosen)
    {
        _rig.make_pcap();
        if (std::any_of(chosen.begin(), chosen.end(), [](const Entry &e) { return e.config->lcores == 2; })) {
            _rig.make_queue_pcaps();
        }
        _rig.make_serpens_files(opts, _chains);
        std::cout << fmt::format("throughput: {} packets of {} B, {} flows ({}), replayed by net_pcap into "
                                 "net_null; lcores main {} fwd {}; {} s window after {} s warm-up, {} round(s)\n",
                                 _rig.packets, _rig.size, _rig.flows, _rig.mix, _rig.main_lcore, _rig.fwd_lcore,
                                 _rig.window_s, _rig.warmup_s, opts.repeat);
        // Rounds interleave the configurations, so drift in the machine's
        // load hits them alike; each round starts with a different one.
        std::vector<std::vector<Run>> runs(chosen.size());
        for (int round = 0; round < opts.repeat; ++round) {
            for (std::size_t k = 0; k < chosen.size(); ++k) {
                const std::size_t i = (k + static_cast<std::size_t>(round)) % chosen.size();
                Run r = run_config(chosen[i]);
                std::cout << fmt::format(
                    "  round {} {:<16} {:>7} Mpps  ({} pkts / {:.2f} s, CPU {:.2f} cores){}\n", round + 1,
                    chosen[i].name, fmt_num(r.mpps), r.packets, r.window_s, r.cpu_cores,
                    r.new_flows_per_s >= 0 ? fmt::format(", {} M new flows/s", fmt_num(r.new_flows_per_s / 1e6)) : "");
                std::cout.flush();
                runs[i].push_back(r);
            }
        }
        const int io = find_entry(chosen, Kind::testpmd_io);
        if (io >= 0) {
            // This run's io rounds are the reference for every later figure.
            std::vector<double> io_mpps;
            for (const Run &r : runs[static_cast<std::size_t>(io)]) {
                io_mpps.push_back(r.mpps);
            }
            offer_reference_io_mpps(opts, summarize(io_mpps).median);
        }
        return report_throughput(opts, _rig, chosen, runs, _target_ratio, _skipped);
    }

    ThroughputRig _rig; // the options of the runs, and their files
    CLI::Option *_window_opt = nullptr;
    CLI::Option *_warmup_opt = nullptr;
    std::vector<std::string> _only;
    double _target_ratio = 0.8;
    std::vector<std::string> _chains;
    CLI::Option *_chain_opt = nullptr;
    std::string _skipped;
};

} // namespace

SERPENS_BENCH_SUBCOMMAND(ThroughputBench, "throughput",
                         "Mpps of serpens-host (noop chain, 1 and 2 cores; the chains of --chain) vs dpdk-testpmd "
                         "io/macswap, same vdevs",
                         22);

} // namespace serpens::bench
