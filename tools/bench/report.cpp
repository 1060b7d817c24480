// serpens-bench report — gathers every <name>.csv in --out into REPORT.md:
// one section per table (in `all` order, then any others by name), with the
// subcommand's notes and a link to its PNG when one was drawn.

#include "bench.h"

#include <fmt/format.h>

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

namespace serpens::bench {
namespace {

namespace fs = std::filesystem;

// Splits one CSV line (RFC 4180 quoting, no embedded newlines: we write none).
std::vector<std::string> split_csv(const std::string &line)
{
    std::vector<std::string> cells(1);
    bool quoted = false;
    for (std::size_t i = 0; i < line.size(); ++i) {
        const char c = line[i];
        if (quoted && c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
            cells.back() += '"';
            ++i;
        } else if (c == '"') {
            quoted = !quoted;
        } else if (c == ',' && !quoted) {
            cells.emplace_back();
        } else {
            cells.back() += c;
        }
    }
    return cells;
}

std::string markdown_table(const fs::path &csv)
{
    std::ifstream in(csv);
    std::string line;
    std::string out;
    bool header = true;
    while (std::getline(in, line)) {
        if (line.empty()) {
            continue;
        }
        auto cells = split_csv(line);
        std::string row = "|";
        for (auto &c : cells) {
            std::replace(c.begin(), c.end(), '|', '/');
            row += " " + c + " |";
        }
        out += row + "\n";
        if (header) {
            out += "|";
            for (std::size_t i = 0; i < cells.size(); ++i) {
                out += i == 0 ? "---|" : "---:|";
            }
            out += "\n";
            header = false;
        }
    }
    return out;
}

std::string read_file(const fs::path &path)
{
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string cpu_model()
{
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("model name", 0) == 0) {
            const auto colon = line.find(':');
            return colon == std::string::npos ? line : line.substr(colon + 2);
        }
    }
    return "unknown CPU";
}

// Cell `col` of the first row of <dir>/<stem>.csv whose cells match every
// (column, value) in `where`; empty when absent.
std::string lookup(const fs::path &dir, const std::string &stem,
                   const std::vector<std::pair<std::string, std::string>> &where, const std::string &col)
{
    std::ifstream in(dir / (stem + ".csv"));
    std::string line;
    if (!std::getline(in, line)) {
        return {};
    }
    const auto header = split_csv(line);
    auto index = [&](const std::string &name) -> int {
        for (std::size_t i = 0; i < header.size(); ++i) {
            if (header[i] == name) {
                return static_cast<int>(i);
            }
        }
        return -1;
    };
    const int c = index(col);
    while (c >= 0 && std::getline(in, line)) {
        const auto cells = split_csv(line);
        bool ok = true;
        for (const auto &[k, v] : where) {
            const int i = index(k);
            ok = ok && i >= 0 && static_cast<std::size_t>(i) < cells.size() && cells[i] == v;
        }
        if (ok && static_cast<std::size_t>(c) < cells.size()) {
            return cells[c];
        }
    }
    return {};
}

// The paper's headline numbers beside this run's (where this run has them).
std::string paper_summary(const fs::path &dir)
{
    struct Item {
        const char *what, *paper, *stem;
        std::vector<std::pair<std::string, std::string>> where;
        const char *col;
    };
    const std::vector<Item> items = {
        {"Table II: fork per batch, us", "249.72", "launch", {{"model", "fork per batch"}}, "us_per_launch"},
        {"Table II: kThread create, us", "23.66", "launch", {{"model", "kThread create"}}, "us_per_launch"},
        {"Table II: kThread pool, us", "5.57", "launch", {{"model", "kThread pool"}}, "us_per_launch"},
        {"Table II: uThread pool, us", "0.46", "launch", {{"model", "uThread pool"}}, "us_per_launch"},
        {"Table II: function call, us", "0.11", "launch", {{"model", "function call"}}, "us_per_launch"},
        {"Fig. 17: SFC FW->MON->NAT, Serpens / SAND",
         "74.2x (target >= 50x)",
         "e2e",
         {{"workload", "fw-mon-nat"}, {"platform", "SAND"}},
         "serpens_x"},
        {"Fig. 17: SFC, Serpens / Fission",
         "-",
         "e2e",
         {{"workload", "fw-mon-nat"}, {"platform", "Fission"}},
         "serpens_x"},
        {"Fig. 17: SFC, Serpens / OpenFaaS",
         "-",
         "e2e",
         {{"workload", "fw-mon-nat"}, {"platform", "OpenFaaS"}},
         "serpens_x"},
        {"fw established-flow cost, 10000 rules / 1 rule",
         "target within 10%",
         "nf-fw-rules",
         {{"rules", "10000"}},
         "x_1rule"},
        {"SFC FW->MON->NAT in serpens-host / testpmd macswap (throughput)",
         "target >= 0.5x",
         "throughput",
         {{"config", "serpens fw-mon-nat 1 core"}},
         "x_macswap"},
        {"its floor: 3 noops, one per-flow state access each (lookup, count, lookup) / testpmd macswap",
         "-",
         "throughput",
         {{"config", "serpens lookup-count-lookup 1 core"}},
         "x_macswap"},
        {"serpens-host noop / testpmd macswap",
         "target >= 0.8x",
         "throughput",
         {{"config", "serpens 1 core"}},
         "x_macswap"},
    };
    std::string md = "## Paper vs this run\n\n| figure | paper | this run |\n|---|---:|---:|\n";
    for (const auto &it : items) {
        std::string ours = lookup(dir, it.stem, it.where, it.col);
        md += fmt::format("| {} | {} | {} |\n", it.what, it.paper, ours.empty() ? "not measured" : ours);
    }
    md += "\nWhere they differ, the subcommand's notes below say why; in short: our hardware is a shared "
          "2-core VM (the paper: dedicated servers with NICs), our NFs are this project's plugins, the "
          "baselines are emulations (launch model + chaining model + redis state) rather than the real "
          "platforms, and short --quick runs on a noisy machine move medians by tens of percent.\n\n";
    return md;
}

class ReportBench : public Subcommand {
public:
    int run(const Options &opts) override
    {
        const fs::path dir(opts.out_dir);
        if (!fs::is_directory(dir)) {
            std::cerr << "report: " << opts.out_dir << " does not exist; run a benchmark first\n";
            return 1;
        }
        std::vector<std::string> stems;
        for (const auto &entry : fs::directory_iterator(dir)) {
            if (entry.path().extension() == ".csv") {
                stems.push_back(entry.path().stem().string());
            }
        }
        // Subcommand order first, so the report reads like `all` ran.
        auto rank = [](const std::string &stem) {
            for (const auto &info : subcommand_table()) {
                if (stem == info.name) {
                    return info.order;
                }
            }
            return 1 << 30;
        };
        std::sort(stems.begin(), stems.end(), [&](const std::string &a, const std::string &b) {
            return std::pair(rank(a), a) < std::pair(rank(b), b);
        });

        utsname un{};
        uname(&un);
        const std::time_t now = std::time(nullptr);
        char when[64];
        std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %Z", std::localtime(&now));
        std::string md = "# serpens-bench report\n\n";
        md += fmt::format("Generated {} on {} ({} {}, {}, {} online CPUs).  Figures are medians of repeated "
                          "runs after a warm-up, with min/max spread; compare rows of one run, not runs of "
                          "different machines.\n\n",
                          when, un.nodename, un.sysname, un.release, cpu_model(), sysconf(_SC_NPROCESSORS_ONLN));
        if (stems.empty()) {
            md += "No CSV files found.\n";
        } else {
            md += paper_summary(dir);
        }
        for (const auto &stem : stems) {
            md += "## " + stem + "\n\n";
            const fs::path notes = dir / (stem + ".notes.md");
            if (fs::exists(notes)) {
                md += read_file(notes) + "\n";
            }
            md += markdown_table(dir / (stem + ".csv")) + "\n";
            md += fmt::format("CSV: [{0}.csv]({0}.csv)", stem);
            if (fs::exists(dir / (stem + ".png"))) {
                md += fmt::format("\n\n![{0}]({0}.png)", stem);
            }
            md += "\n\n";
        }
        const fs::path path = dir / "REPORT.md";
        std::ofstream out(path);
        out << md;
        if (!out) {
            std::cerr << "report: cannot write " << path.string() << '\n';
            return 1;
        }
        std::cout << "wrote " << path.string() << " (" << stems.size() << " tables)\n";
        return 0;
    }
};

} // namespace

SERPENS_BENCH_SUBCOMMAND(ReportBench, "report", "write <out>/REPORT.md from the CSVs (and PNGs) in --out", -1);

} // namespace serpens::bench
