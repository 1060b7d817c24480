// serpens-bench — the paper's evaluation (§IV) as subcommands.  This file
// holds the common flags, `all`, and dispatch; each benchmark is one file
// that registers itself (see bench.h and README.md).

#include "bench.h"
#include "paths.h"

#include "core/error.h"
#include "core/fault.h"
#include "core/version.h"

#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <sstream>

using namespace serpens::bench;

namespace {

// "any" (every CPU allowed at start), "same" (the measuring CPU), or a list
// such as "1" or "0,2-3".
cpu_set_t parse_cpus(const std::string &text, const cpu_set_t &allowed, int measuring_cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (text == "any") {
        return allowed;
    }
    if (text == "same") {
        if (measuring_cpu < 0) {
            return allowed;
        }
        CPU_SET(measuring_cpu, &set);
        return set;
    }
    std::stringstream in(text);
    std::string part;
    while (std::getline(in, part, ',')) {
        const auto dash = part.find('-');
        const int lo = std::stoi(part.substr(0, dash));
        const int hi = dash == std::string::npos ? lo : std::stoi(part.substr(dash + 1));
        if (lo < 0 || hi < lo || hi >= CPU_SETSIZE) {
            throw serpens::Error("--worker-cpus: bad CPU range '" + part + "'");
        }
        for (int c = lo; c <= hi; ++c) {
            CPU_SET(c, &set);
        }
    }
    if (CPU_COUNT(&set) == 0) {
        throw serpens::Error("--worker-cpus: no CPU given");
    }
    return set;
}

int run_one(const SubcommandInfo &info, Subcommand &sub, const Options &opts)
{
    try {
        return sub.run(opts);
    } catch (const std::exception &e) {
        std::cerr << "serpens-bench " << info.name << ": " << e.what() << '\n';
        return 1;
    }
}

} // namespace

int main(int argc, char **argv)
{
    spdlog::set_level(spdlog::level::warn); // keep tables readable; refusals still show
    // The bench runs plugin code too: a crash names the NF it was in.
    serpens::fault::install_fault_handlers("serpens-bench");
    // The hosts it starts refuse configs every local user may write to: the
    // ones it writes are not, whatever umask it was started with.
    ::umask(::umask(022) | 022);

    Options opts;
    opts.out_dir = "bench-out";
    opts.plugin_dir = default_paths().plugin_dir;
    opts.plot_script = default_paths().plot_script;
    bool want_plot = false;
    bool no_plot = false;
    int cpu = -2; // -2: not given
    std::string worker_cpus = "any";

    CLI::App app{"serpens-bench: Serpens' evaluation (paper §IV) on this machine.\n"
                 "Each subcommand prints a table, writes <out>/<name>.csv (+ .png), and `report` gathers them "
                 "into <out>/REPORT.md.  Measurements are medians of --repeat runs after a warm-up, with min/max; "
                 "speed is reported, never asserted (exit 0 whatever the numbers)."};
    app.set_version_flag("--version", serpens::version_line("serpens-bench"));
    app.fallthrough(); // common flags may follow the subcommand name
    app.require_subcommand(1);
    app.add_option("--out", opts.out_dir, "directory for CSV, PNG and REPORT.md")->capture_default_str();
    app.add_option("--plugins", opts.plugin_dir,
                   "directory of NF plugins: serpens_nf_<name>.so flat or in <name>/ folders (default: this "
                   "build's plugins/, or the installed ones)")
        ->capture_default_str();
    auto *repeat_opt = app.add_option("--repeat", opts.repeat,
                                      "measured repeats per point, after one warm-up "
                                      "(default 5; --quick: 3)");
    auto *time_opt = app.add_option("--min-time", opts.min_time_ms,
                                    "milliseconds each repeat runs at least (default 200; --quick: 20)");
    app.add_flag("--quick", opts.quick, "smaller sizes and fewer/shorter repeats: a smoke run");
    auto *plot_opt = app.add_flag("--plot", want_plot, "draw PNGs (default: on when python3-matplotlib is installed)");
    app.add_flag("--no-plot", no_plot, "do not draw PNGs")->excludes(plot_opt);
    bool no_reference = false;
    app.add_flag("--no-reference", no_reference,
                 "do not measure dpdk-testpmd io forwarding for the reference line of the throughput figures");
    app.add_option("--plot-script", opts.plot_script,
                   "the plotting script (tools/bench/plot.py; default: this build's copy, or the installed one)")
        ->capture_default_str();
    app.add_option("--python", opts.python,
                   "python interpreter for plots (default: python3 on PATH, else /usr/bin/python3, whichever "
                   "has matplotlib)");
    app.add_option("--cpu", cpu,
                   "pin the measuring thread to this CPU; -1: do not pin (default: the CPU it "
                   "starts on)");
    app.add_option("--worker-cpus", worker_cpus,
                   "CPUs for worker threads the models create: any (all allowed), same (the measuring CPU), "
                   "or a list like 1 or 0,2-3")
        ->capture_default_str();

    // One CLI subcommand per table entry; `all` runs the ordered ones, then report.
    auto &table = subcommand_table();
    std::sort(table.begin(), table.end(), [](const auto &a, const auto &b) {
        return std::pair(a.order < 0, a.order) < std::pair(b.order < 0, b.order);
    });
    std::vector<std::pair<CLI::App *, std::unique_ptr<Subcommand>>> subs;
    for (const auto &info : table) {
        auto *cmd = app.add_subcommand(info.name, info.summary);
        auto sub = info.make();
        sub->add_options(*cmd);
        subs.emplace_back(cmd, std::move(sub));
    }
    auto *all = app.add_subcommand("all", "run every benchmark with its defaults (--quick: a fast smoke run), "
                                          "then report");

    CLI11_PARSE(app, argc, argv);

    if (opts.quick && repeat_opt->count() == 0) {
        opts.repeat = 3;
    }
    if (opts.quick && time_opt->count() == 0) {
        opts.min_time_ms = 20;
    }
    opts.reference = !no_reference;
    if (opts.repeat < 1 || opts.min_time_ms <= 0) {
        std::cerr << "--repeat must be >= 1 and --min-time > 0\n";
        return 2;
    }

    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    sched_getaffinity(0, sizeof allowed, &allowed);
    opts.cpu = cpu == -2 ? sched_getcpu() : cpu;
    if (opts.cpu >= 0 && !pin_self(opts.cpu)) {
        std::cout << fmt::format("could not pin to CPU {} ({}); measuring unpinned\n", opts.cpu, std::strerror(errno));
        opts.cpu = -1;
    }
    try {
        opts.worker_cpus = parse_cpus(worker_cpus, allowed, opts.cpu);
    } catch (const std::exception &e) {
        std::cerr << e.what() << '\n';
        return 2;
    }
    opts.worker_cpus_text = describe_cpus(opts.worker_cpus);

    const bool is_report = !subs.empty() && std::any_of(subs.begin(), subs.end(), [](const auto &s) {
        return s.first->parsed() && std::string(s.first->get_name()) == "report";
    });
    if (!is_report) {
        const std::string missing = no_plot ? std::string() : find_plotter(opts);
        opts.plot = !no_plot && missing.empty();
        if (!no_plot && !missing.empty()) {
            std::cout << "no plots: " << missing << '\n';
        }
        std::cout << fmt::format("measuring on CPU {}, {} repeat(s) of >= {} ms after a warm-up{}\n",
                                 opts.cpu < 0 ? std::string("(unpinned)") : std::to_string(opts.cpu), opts.repeat,
                                 opts.min_time_ms, opts.quick ? " (quick)" : "");
    }

    if (all->parsed()) {
        const uint64_t t0 = now_ns();
        int rc = 0;
        for (std::size_t i = 0; i < table.size(); ++i) {
            if (table[i].order >= 0) {
                std::cout << "\n=== " << table[i].name << " ===\n";
                rc |= run_one(table[i], *subs[i].second, opts);
            }
        }
        for (std::size_t i = 0; i < table.size(); ++i) {
            if (std::string(table[i].name) == "report") {
                rc |= run_one(table[i], *subs[i].second, opts);
            }
        }
        std::cout << fmt::format("all: {:.1f} s\n", static_cast<double>(now_ns() - t0) / 1e9);
        return rc;
    }
    for (std::size_t i = 0; i < table.size(); ++i) {
        if (subs[i].first->parsed()) {
            return run_one(table[i], *subs[i].second, opts);
        }
    }
    return 2;
}
