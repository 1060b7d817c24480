#pragma once
// serpens-bench: shared pieces of every subcommand — the subcommand table,
// common options, timing, statistics, tables/CSV/notes output and plotting.
//
// A subcommand is one file (tools/bench/<name>.cpp) holding a class derived
// from Subcommand and one SERPENS_BENCH_SUBCOMMAND line; see README.md.

#include "config/host_config.h"

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

// CLI11 2.1 compiles about 100 KB of code into every file that includes it
// (5 s each at -O2): only the files that add options include it.
namespace CLI {
class App;
}

namespace serpens::bench {

// Flags every subcommand sees (given before or after the subcommand name).
struct Options {
    std::string out_dir;      // CSV, PNG and notes go here
    std::string plugin_dir;   // where serpens_nf_<name>.so are (flat or <name>/ folders)
    std::string plot_script;  // tools/bench/plot.py
    std::string python;       // interpreter that runs it (resolved: has matplotlib)
    int repeat = 5;           // measured repeats (after a warm-up)
    double min_time_ms = 200; // each repeat runs at least this long
    bool quick = false;       // smaller sizes, fewer repeats (smoke runs)
    bool plot = false;        // resolved: requested and a plotter exists
    bool reference = true;    // measure and draw the testpmd io reference line
    int cpu = -1;             // the measuring thread's CPU, -1 when not pinned
    cpu_set_t worker_cpus{};  // affinity of worker threads the benchmarks create
    std::string worker_cpus_text;
};

class Subcommand {
public:
    virtual ~Subcommand() = default;
    // Adds the subcommand's own flags.  Defaults stay in the object, so `all`
    // runs a subcommand whose flags were never parsed.
    virtual void add_options(CLI::App &app) { (void)app; }
    // Measures, prints, writes CSV (+ PNG).  Returns the process exit code.
    virtual int run(const Options &opts) = 0;
};

struct SubcommandInfo {
    const char *name;
    const char *summary;
    int order; // position in `all`, lower first; negative: `all` skips it
    std::unique_ptr<Subcommand> (*make)();
};

std::vector<SubcommandInfo> &subcommand_table();

struct Registrar {
    explicit Registrar(const SubcommandInfo &info) { subcommand_table().push_back(info); }
};

// Registers class `cls` as subcommand `name` (static initialisation; every
// bench file is linked into the executable directly, so none is dropped).
#define SERPENS_BENCH_SUBCOMMAND(cls, name, summary, order)                                                            \
    static const ::serpens::bench::Registrar serpens_bench_registrar_##cls                                             \
    {                                                                                                                  \
        ::serpens::bench::SubcommandInfo                                                                               \
        {                                                                                                              \
            name, summary, order,                                                                                      \
                []() -> std::unique_ptr<::serpens::bench::Subcommand> { return std::make_unique<cls>(); }              \
        }                                                                                                              \
    }

// ---- timing ------------------------------------------------------------

uint64_t now_ns() noexcept; // CLOCK_MONOTONIC

// The chain flow table's capacity for a run of `flows` flows, in the lab and
// in the throughput host alike: the host's default, as an operator runs it
// (the table grows with its flows), or room for all of them.
inline uint64_t bench_flow_capacity(uint64_t flows) noexcept
{
    return std::max<uint64_t>(HostConfig{}.flow_capacity, flows);
}

// Keeps `value` alive so the compiler cannot drop the work producing it.
template<class T>
inline void keep(const T &value) noexcept
{
    asm volatile("" : : "r,m"(value) : "memory");
}

struct Summary {
    double median = 0;
    double min = 0;
    double max = 0;
    double p5 = 0;
    double p95 = 0;
};
Summary summarize(std::vector<double> samples);

// Calls run(iters) — which must do `iters` operations — first to warm up and
// calibrate iters so a repeat lasts >= opts.min_time_ms, then opts.repeat
// times.  Returns ns per operation for each measured repeat.
template<class Run>
std::vector<double> measure(const Options &opts, Run &&run)
{
    const double target_ns = opts.min_time_ms * 1e6;
    uint64_t iters = 1;
    // Warm-up: grow iters until one call takes >= 1/4 of the target.
    for (;;) {
        const uint64_t t0 = now_ns();
        run(iters);
        const double dt = static_cast<double>(now_ns() - t0);
        if (dt >= target_ns / 4) {
            iters = std::max<uint64_t>(1, static_cast<uint64_t>(static_cast<double>(iters) * target_ns / dt));
            break;
        }
        iters *= dt < target_ns / 64 ? 8 : 2;
    }
    std::vector<double> per_op;
    for (int r = 0; r < opts.repeat; ++r) {
        const uint64_t t0 = now_ns();
        run(iters);
        per_op.push_back(static_cast<double>(now_ns() - t0) / static_cast<double>(iters));
    }
    return per_op;
}

// Paced open-loop latency: batches arrive every interval_ns (the schedule
// does not wait for completions); each is served as soon as the server is
// free; latency = completion - scheduled arrival.  serve(i) handles batch i.
struct Latency {
    double mean_us = 0;
    double p50_us = 0;
    double p99_us = 0;
    uint64_t batches = 0;
};
template<class Serve>
Latency paced_latency(double interval_ns, uint64_t batches, Serve &&serve)
{
    std::vector<double> lat;
    lat.reserve(batches);
    const uint64_t t0 = now_ns() + 1000000;
    for (uint64_t i = 0; i < batches; ++i) {
        const uint64_t arrival = t0 + static_cast<uint64_t>(interval_ns * static_cast<double>(i));
        for (uint64_t now = now_ns(); now < arrival; now = now_ns()) {
            if (arrival - now > 100000) {
                timespec ts{0, static_cast<long>(arrival - now - 50000)};
                nanosleep(&ts, nullptr);
            }
        }
        serve(i);
        lat.push_back(static_cast<double>(now_ns() - arrival) / 1e3);
    }
    Latency l;
    l.batches = batches;
    double sum = 0;
    for (double v : lat) {
        sum += v;
    }
    l.mean_us = lat.empty() ? 0 : sum / static_cast<double>(lat.size());
    std::sort(lat.begin(), lat.end());
    if (!lat.empty()) {
        l.p50_us = lat[lat.size() / 2];
        l.p99_us = lat[std::min(lat.size() - 1, static_cast<std::size_t>(static_cast<double>(lat.size()) * 0.99))];
    }
    return l;
}

// ---- output --------------------------------------------------------------

struct Table {
    std::string name; // file stem: <out>/<name>.csv, .png, .notes.md
    std::string title;
    std::vector<std::string> columns;
    std::vector<std::vector<std::string>> rows;
};

std::string fmt_num(double v); // 3 significant digits, no exponent for normal ranges
// Median and spread of samples as table cells.
inline std::vector<std::string> cells(const Summary &s) { return {fmt_num(s.median), fmt_num(s.min), fmt_num(s.max)}; }

void print_table(const Table &table);
// Writes <out>/<name>.csv; returns the path.  Throws on I/O errors.
std::string write_csv(const Options &opts, const Table &table);
// Writes <out>/<stem>.notes.md, which `report` places under the table.
void write_notes(const Options &opts, const std::string &stem, const std::string &markdown);

// What plot.py draws from a table's CSV.
struct PlotSpec {
    std::string kind = "bar";   // "bar" (grouped bars) or "line"
    std::string x;              // x column
    std::string group;          // optional: one series per value of this column
    std::vector<std::string> y; // y columns (one series each when no group)
    std::string lo, hi;         // optional error-bar columns for the first y
    std::string ylabel;
    bool logy = false;
};
// A dashed horizontal line across a figure, with its legend entry.
struct RefLine {
    double y = 0;
    std::string label;
};
// Draws <out>/<name>.png when opts.plot; prints why not when it fails.
void plot(const Options &opts, const Table &table, const PlotSpec &spec,
          const std::optional<RefLine> &ref = std::nullopt);

// ---- the reference line ----------------------------------------------------

// Mpps of dpdk-testpmd io forwarding (net_pcap replay -> net_null, one
// forwarding core, the vdevs and pcap of `throughput`): measured once per
// serpens-bench process, by `throughput` or on first use, and drawn on every
// throughput figure so each can be read against what the I/O alone allows.
// Empty with --no-reference or when testpmd is not installed.
std::optional<double> reference_io_mpps(const Options &opts);
// plot() for a Mpps figure: with the reference line when there is one.
void plot_with_reference(const Options &opts, const Table &table, const PlotSpec &spec);
// One line for a figure's notes: where the reference came from.
std::string reference_note(const Options &opts);

// Sets opts.python to the first interpreter (opts.python if given, else
// python3 on PATH, then Debian's /usr/bin/python3) that imports matplotlib.
// Returns empty when plotting can work, else why not.
std::string find_plotter(Options &opts);

// ---- threads ---------------------------------------------------------------

// Pins the calling thread; returns false (errno set) when the kernel refuses.
bool pin_self(int cpu);
std::string describe_cpus(const cpu_set_t &set);
// Pins the calling thread to opts.cpu when set (all threads of a one-core
// experiment), else leaves it.
void pin_like(const Options &opts);
int first_worker_cpu(const Options &opts);

} // namespace serpens::bench
