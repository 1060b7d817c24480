// serpens-bench scale — what a scale event costs the data path (paper §III-A2,
// Fig. 12: scaling inside a server without state migration and without
// performance fluctuation), and what a first packet pays to wake a chain at
// zero.
//
// serpens-host forwards the chain (default FW -> MON -> NAT) on two lcores,
// each receiving one RX queue of a replayed capture (one lcore on a machine
// with fewer than 4 CPUs: the control thread needs one), while this process
// scales it through the control socket, alternately 2 -> 3 and 3 -> 2, every
// --gap seconds.  Measured in the same run:
//  - pause: how long the instances that gain buckets are held (the host's
//    reply to each `scale`): p50 and p99 over the events;
//  - batch latency: from a batch's RX to the end of its chain run, from the
//    host's per-lcore histograms, p99 in the second around each event (from
//    gap/2 before it to gap/2 after) against the steady seconds between events;
//  - the migration baseline, OpenNF-like: a system whose instances keep
//    state of their own copies the moving flows' entries of every per-flow
//    table to the new owner and holds their packets meanwhile.  After the run
//    the same copy is timed here on the tables the host left in shared
//    memory, for each event's share of the buckets: its pause is at least
//    that copy (OpenNF adds a controller round trip per flow batch on top).
//  - warm start: hosts that start with the chain at zero (parked) get one
//    packet each; its latency from RX to the end of its chain run is the
//    host's wake-up latency.  And a scale-out's launch (request to buckets
//    owned) from the pool against one with the pool empty, which runs the
//    NFs' init (cold).
// Targets: p99 pause < 50 us; p99 batch latency around events <= 2x steady;
// warm start < 100 us.  Reported, never asserted.

#include "batch_latency.h"
#include "bench.h"
#include "process.h"
#include "throughput.h"

#include "control/protocol.h"
#include "state/table.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

namespace serpens::bench {
namespace {

namespace fs = std::filesystem;
double quantile(std::vector<double> v, double p)
{
    if (v.empty()) {
        return 0;
    }
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

// OpenNF-like move of `share` of every per-flow table under `state`: the
// selected entries are read and written into tables of the same layout.
// Returns the copy's duration in microseconds and the entries copied.
std::pair<double, uint64_t> copy_moving_flows(const fs::path &state, const fs::path &scratch, double share)
{
    std::vector<std::unique_ptr<state::Table>> sources;
    if (!fs::exists(state)) {
        return {0, 0}; // a chain without state has nothing to move
    }
    for (const auto &entry : fs::recursive_directory_iterator(state)) {
        if (entry.path().extension() != ".tbl") {
            continue;
        }
        std::string err;
        auto table = state::Table::open_readonly(entry.path(), err);
        if (table && table->cells() == 0) { // per-flow: one value per key
            sources.push_back(std::move(table));
        }
    }
    std::vector<std::unique_ptr<state::Table>> targets;
    fs::create_directories(scratch);
    for (const auto &src : sources) {
        state::TableSpec spec;
        spec.name = std::string(src->name());
        spec.flags = src->flags();
        spec.key_size = src->key_size();
        spec.value_size = src->value_size();
        spec.capacity = src->capacity();
        std::string err;
        fs::remove(scratch / (spec.name + ".tbl"));
        auto dst = state::Table::open(scratch / (spec.name + ".tbl"), spec, err);
        if (!dst) {
            throw std::runtime_error("migration baseline: " + err);
        }
        targets.push_back(std::move(dst));
    }
    const auto every = static_cast<uint64_t>(std::max(1.0, 1.0 / std::max(share, 1e-6)));
    uint64_t copied = 0;
    auto copy = [&] {
        copied = 0;
        for (std::size_t i = 0; i < sources.size(); ++i) {
            uint64_t n = 0;
            std::vector<uint8_t> value(sources[i]->value_size());
            sources[i]->dump([&](const uint8_t *key, const uint8_t *values) {
                if (n++ % every == 0) {
                    std::copy(values, values + value.size(), value.begin());
                    targets[i]->put(key, value.data());
                    ++copied;
                }
            });
        }
    };
    copy(); // first touch of the new tables' pages: not what a warm new instance pays
    const uint64_t t0 = now_ns();
    copy();
    return {static_cast<double>(now_ns() - t0) / 1e3, copied};
}

class ScaleBench : public Subcommand {
public:
    void add_options(CLI::App &app) override
    {
        _events_opt = app.add_option("--events", _events,
                                     "scale events, alternately 2 -> 3 and 3 -> 2 (default 30; "
                                     "--quick: 6)");
        app.add_option("--gap", _gap_s, "seconds between events (a steady window, then one around the event)")
            ->capture_default_str();
        app.add_option("--host-lcores", _lcores_used,
                       "lcores the host forwards on, 1 or 2 (default: 2 with at least 4 CPUs, else 1, so that its "
                       "control thread has a CPU)")
            ->check(CLI::Range(0, 2));
        app.add_option("--ring-size", _ring_size, "instance ring size: the backlog a handover waits for at saturation")
            ->capture_default_str();
        app.add_option("--chain", _chain, "the chain scaled (dash-separated NFs, as throughput's --chain)")
            ->capture_default_str();
        app.add_option("--flows", _rig.flows, "distinct flows in the pcap")->capture_default_str();
        app.add_option("--lcores", _rig.lcores,
                       "MAIN,FWD: the host's two lcores (default: the first two of "
                       "--worker-cpus)");
        app.add_option("--host", _rig.host_exe, "serpens-host executable")->capture_default_str();
        app.add_option("--pktgen", _rig.pktgen_exe, "serpens-pktgen executable")->capture_default_str();
        app.add_flag("--keep", _rig.keep, "keep the scratch directory (configs, logs)");
    }

    int run(const Options &opts) override
    {
        if (opts.quick && _events_opt->count() == 0) {
            _events = 6;
        }
        _rig.pick_lcores(opts);
        return _rig.in_scratch_dir([&] { return measure(opts); });
    }

private:
    int measure(const Options &opts)
    {
        _rig.make_pcap();
        _rig.make_queue_pcaps();
        _rig.make_serpens_files(opts, {_chain});
        // The control thread that carries the handover needs a CPU of its
        // own, or the pause measures how long the scheduler keeps it off one.
        const bool two_lcores = _lcores_used == 2 || (_lcores_used == 0 && std::thread::hardware_concurrency() >= 4);
        std::cout << fmt::format("scale: the host forwards on {} lcore(s) of {} CPUs\n", two_lcores ? 2 : 1,
                                 std::thread::hardware_concurrency());
        const fs::path toml = _rig.write_host_toml(two_lcores, _chain);
        const fs::path socket = _rig.host_socket; // what it scales through
        // The rig's config, with the instance rings' size under test.
        patch(toml, "[instances]\n", fmt::format("ring_size = {}\n", _ring_size));
        const unsigned scale_run = _rig.runs;
        const fs::path log = _rig.tmp / "host-scale.log";
        Child host({_rig.host_exe, "-c", toml.string(), "--log-level", "info"}, log, false);
        if (!host.wait_log([](const std::string &text) { return text.find("' running;") != std::string::npos; }, 60)) {
            throw std::runtime_error("serpens-host did not start (log " + log.string() + "):\n" +
                                     last_lines(host.log(), 15));
        }
        auto request = [&](nlohmann::ordered_json line) {
            return control_call(socket.string(), std::move(line), 30000);
        };
        auto stats = [&] { return request({{"cmd", "stats"}}); };
        auto scale_to = [&](const std::string &count) {
            return request({{"cmd", "scale"}, {"chain", _chain}, {"count", count}});
        };
        sleep_s(1); // warm: the pool fills, caches and tables settle

        BatchLatency steady;
        BatchLatency around;
        std::vector<double> pauses;
        std::vector<double> shares;
        for (int k = 0; k < _events; ++k) {
            const nlohmann::ordered_json a = stats();
            sleep_s(_gap_s / 2);
            const nlohmann::ordered_json b = stats();
            sleep_s(_gap_s / 4);
            const auto reply = scale_to(k % 2 == 0 ? "3" : "2");
            sleep_s(_gap_s / 4);
            const nlohmann::ordered_json c = stats();
            add_difference(steady, batch_latency_of(b), batch_latency_of(a));
            add_difference(around, batch_latency_of(c), batch_latency_of(b));
            pauses.push_back(reply.at("pause_us").get<double>());
            shares.push_back(reply.at("moved_buckets").get<double>() / 256.0);
        }

        // Launch: a scale-out drawing on the pool (refilled meanwhile), then
        // one with the pool empty, which runs the NFs' init (cold).
        scale_to("2");
        sleep_s(0.5);
        const auto warm_launch = scale_to("+1");
        const auto cold_launch = scale_to("+1");
        host.stop(10);
        const fs::path state = _rig.state_root / fmt::format("state-{}", scale_run);
        std::vector<double> baseline;
        uint64_t copied = 0;
        for (double share : shares) {
            auto [us, n] = copy_moving_flows(state, _rig.state_root / "migrated", share);
            baseline.push_back(us);
            copied = std::max(copied, n);
        }

        Table table{"scale",
                    fmt::format("Scale events 2 <-> 3 instances of {} under traffic ({} events)", _chain, _events),
                    {"what", "p50_us", "p99_us", "target"},
                    {}};
        const double steady_p99 = percentile_us(steady, 0.99);
        const double around_p99 = percentile_us(around, 0.99);
        table.rows.push_back(
            {"serpens handover pause", fmt_num(quantile(pauses, 0.5)), fmt_num(quantile(pauses, 0.99)), "p99 < 50"});
        table.rows.push_back(
            {"OpenNF-like state copy pause", fmt_num(quantile(baseline, 0.5)), fmt_num(quantile(baseline, 0.99)), "-"});
        table.rows.push_back({"batch latency, steady", fmt_num(percentile_us(steady, 0.5)), fmt_num(steady_p99), "-"});
        table.rows.push_back({"batch latency, around events", fmt_num(percentile_us(around, 0.5)), fmt_num(around_p99),
                              "p99 <= 2x steady"});
        const std::vector<double> wakes = wake_latencies(opts);
        table.rows.push_back({"first packet from zero (parked, warm)", fmt_num(quantile(wakes, 0.5)),
                              fmt_num(quantile(wakes, 0.99)), "< 100"});
        table.rows.push_back({fmt::format("launch from the pool ({} warm)", warm_launch.at("from_pool").get<int>()),
                              fmt_num(warm_launch.at("launch_us").get<double>()), "-", "-"});
        table.rows.push_back({fmt::format("launch with NF init ({} cold)", cold_launch.at("cold").get<int>()),
                              fmt_num(cold_launch.at("launch_us").get<double>()), "-", "-"});
        const double warm_us = quantile(wakes, 0.5);
        print_table(table);
        write_csv(opts, table);
        std::string summary = fmt::format(
            "pause p99 {} us (target < 50): {}; batch latency p99 around events / steady = {} (target <= 2): {}; "
            "warm start {} us (target < 100): {}; OpenNF-like copy of up to {} entries: p50 {} us\n",
            fmt_num(quantile(pauses, 0.99)), quantile(pauses, 0.99) < 50 ? "MEETS" : "BELOW",
            fmt_num(steady_p99 > 0 ? around_p99 / steady_p99 : 0),
            steady_p99 > 0 && around_p99 <= 2 * steady_p99 ? "MEETS" : "BELOW", fmt_num(warm_us),
            warm_us >= 0 && warm_us < 100 ? "MEETS" : "BELOW", copied, fmt_num(quantile(baseline, 0.5)));
        std::cout << summary;
        write_notes(opts, "scale",
                    summary +
                        "\nThe pause holds only the instances that gain buckets (their packets queue in their "
                        "rings); the others run on.  Batch latency: the host's per-lcore histograms (buckets "
                        "12.5% wide), RX of a batch to the end of its chain run.  Command: serpens-bench scale "
                        "--chain " +
                        _chain + "\n");
        PlotSpec spec;
        spec.x = "what";
        spec.y = {"p50_us", "p99_us"};
        spec.ylabel = "microseconds";
        spec.logy = true;
        plot(opts, table, spec);
        return 0;
    }

    static void patch(const fs::path &file, const std::string &after, const std::string &line)
    {
        std::string text = read_text(file);
        const std::size_t at = text.find(after);
        if (at == std::string::npos) {
            throw std::runtime_error(file.string() + ": no '" + after + "' to add a line after");
        }
        text.insert(at + after.size(), line);
        std::ofstream(file) << text;
    }

    // First-packet latency from zero: hosts that start with the chain
    // parked (count = 0) and get one packet each; the host measures from its
    // RX to the end of its chain run.  That packet is also the instance's
    // first, so it pays what an NF does on its first packet after a pause
    // (mon sweeps up to 4096 flow slots).
    std::vector<double> wake_latencies(const Options &opts)
    {
        std::vector<double> out;
        const int runs = opts.quick ? 3 : 10;
        const fs::path one = _rig.tmp / "one.pcap";
        {
            // The first packet of the capture, alone.
            const std::string all = read_text(_rig.pcap);
            constexpr std::size_t file_header = 24;
            constexpr std::size_t record_header = 16;
            uint32_t caplen = 0;
            if (all.size() >= file_header + record_header) {
                std::memcpy(&caplen, all.data() + file_header + 8, sizeof caplen);
            }
            if (caplen == 0 || all.size() < file_header + record_header + caplen) {
                throw std::runtime_error(_rig.pcap.string() + " holds no whole first packet");
            }
            std::ofstream(one, std::ios::binary) << all.substr(0, file_header + record_header + caplen);
        }
        // Run 0 starts the chain at one instance and creates the packet's
        // flow state; the measured runs wake a parked instance on that state,
        // as after keep-warm reaped the last one.
        const fs::path state = _rig.state_root / "state-wake";
        for (int r = 0; r <= runs; ++r) {
            ++_rig.runs;
            const fs::path toml = _rig.write_host_toml(false, _chain);
            std::string text = read_text(toml);
            const std::string from = fs::absolute(_rig.pcap).string() + ",infinite_rx=1";
            text.replace(text.find(from), from.size(), fs::absolute(one).string());
            const std::size_t dir = text.find("state_dir = \"");
            text.replace(dir, text.find('\n', dir) - dir, fmt::format("state_dir = \"{}\"", state.string()));
            if (r > 0) {
                text.replace(text.find("count = 1"), 9, "count = 0");
            }
            std::ofstream(toml) << text;
            // No pool refill meanwhile: taking a new instance's share of
            // RELEASE state out (nat's port pool) holds the parked
            // instance's cells for tens of ms, which is not the wake-up.
            patch(toml, "[instances]\n", "pool = 0\n");
            const fs::path json = _rig.tmp / fmt::format("wake-{}.json", r);
            Child host({_rig.host_exe, "-c", toml.string(), "--idle-exit", "0.5", "--stats-json", json.string()},
                       _rig.tmp / fmt::format("wake-{}.log", r), false);
            if (host.wait_exit(60) != 0) {
                throw std::runtime_error("serpens-host (wake-up run) failed:\n" + last_lines(host.log(), 15));
            }
            const auto stats = nlohmann::json::parse(read_text(json));
            for (const auto &us : stats.at("chains").at(_chain).at("wake_latency_us")) {
                if (r > 0) {
                    out.push_back(us.get<double>());
                }
            }
        }
        return out;
    }

    ThroughputRig _rig;
    int _events = 30;
    uint32_t _ring_size = 4096;
    int _lcores_used = 0; // 0: by the CPUs there are
    double _gap_s = 1.0;
    std::string _chain = "fw-mon-nat";
    CLI::Option *_events_opt = nullptr;
};

} // namespace

SERPENS_BENCH_SUBCOMMAND(ScaleBench, "scale",
                         "pause and batch latency of scale events under traffic, against an OpenNF-like state copy; "
                         "warm vs cold start",
                         95);

} // namespace serpens::bench
