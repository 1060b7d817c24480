// Shared output, statistics and plotting for serpens-bench subcommands.

#include "bench.h"

#include <fmt/format.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <stdexcept>

namespace serpens::bench {

std::vector<SubcommandInfo> &subcommand_table()
{
    // A function-local static: registrars in other files run during static
    // initialisation, in unspecified order.
    static std::vector<SubcommandInfo> table;
    return table;
}

uint64_t now_ns() noexcept
{
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

namespace {

// Nearest-rank percentile of sorted samples.
double percentile(const std::vector<double> &sorted, double p)
{
    const double rank = p / 100.0 * static_cast<double>(sorted.size() - 1);
    return sorted[static_cast<std::size_t>(std::lround(rank))];
}

std::string csv_field(const std::string &s)
{
    if (s.find_first_of(",\"\n") == std::string::npos) {
        return s;
    }
    std::string quoted = "\"";
    for (char c : s) {
        quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
    }
    return quoted + "\"";
}

std::string join(const std::vector<std::string> &parts, const char *sep)
{
    std::string out;
    for (std::size_t i = 0; i < parts.size(); ++i) {
        out += (i == 0 ? "" : sep) + parts[i];
    }
    return out;
}

} // namespace

Summary summarize(std::vector<double> samples)
{
    Summary s;
    if (samples.empty()) {
        return s;
    }
    std::sort(samples.begin(), samples.end());
    const std::size_t n = samples.size();
    s.median = n % 2 == 1 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
    s.min = samples.front();
    s.max = samples.back();
    s.p5 = percentile(samples, 5);
    s.p95 = percentile(samples, 95);
    return s;
}

std::string fmt_num(double v)
{
    const double a = std::fabs(v);
    if (a >= 100 || a == 0) {
        return fmt::format("{:.0f}", v);
    }
    if (a >= 10) {
        return fmt::format("{:.1f}", v);
    }
    if (a >= 1) {
        return fmt::format("{:.2f}", v);
    }
    return fmt::format("{:.3g}", v);
}

void print_table(const Table &table)
{
    std::vector<std::size_t> width(table.columns.size(), 0);
    for (std::size_t c = 0; c < table.columns.size(); ++c) {
        width[c] = table.columns[c].size();
        for (const auto &row : table.rows) {
            width[c] = std::max(width[c], row[c].size());
        }
    }
    auto line = [&](const std::vector<std::string> &cells) {
        std::string out;
        for (std::size_t c = 0; c < cells.size(); ++c) {
            // Text left, numbers right: the first column is the row's name.
            out += c == 0 ? fmt::format("{:<{}}", cells[c], width[c]) : fmt::format("  {:>{}}", cells[c], width[c]);
        }
        std::cout << out << '\n';
    };
    std::cout << '\n' << table.title << '\n';
    line(table.columns);
    for (const auto &row : table.rows) {
        line(row);
    }
    std::cout.flush();
}

std::string write_csv(const Options &opts, const Table &table)
{
    std::filesystem::create_directories(opts.out_dir);
    const std::string path = (std::filesystem::path(opts.out_dir) / (table.name + ".csv")).string();
    std::ofstream out(path);
    std::vector<std::string> cells;
    for (const auto &c : table.columns) {
        cells.push_back(csv_field(c));
    }
    out << join(cells, ",") << '\n';
    for (const auto &row : table.rows) {
        cells.clear();
        for (const auto &c : row) {
            cells.push_back(csv_field(c));
        }
        out << join(cells, ",") << '\n';
    }
    if (!out) {
        throw std::runtime_error("cannot write " + path);
    }
    std::cout << "wrote " << path << '\n';
    return path;
}

void write_notes(const Options &opts, const std::string &stem, const std::string &markdown)
{
    std::filesystem::create_directories(opts.out_dir);
    const std::string path = (std::filesystem::path(opts.out_dir) / (stem + ".notes.md")).string();
    std::ofstream out(path);
    out << markdown;
    if (!out) {
        throw std::runtime_error("cannot write " + path);
    }
}

std::string find_plotter(Options &opts)
{
    if (!std::filesystem::exists(opts.plot_script)) {
        return "plot script " + opts.plot_script + " not found (pass --plot-script)";
    }
    // PATH may lead to a python (pyenv, venv) without Debian's matplotlib.
    std::vector<std::string> candidates = {"python3", "/usr/bin/python3"};
    if (!opts.python.empty()) {
        candidates = {opts.python};
    }
    for (const auto &py : candidates) {
        const std::string probe = "'" + py + "' -c 'import matplotlib' >/dev/null 2>&1";
        if (std::system(probe.c_str()) == 0) {
            opts.python = py;
            return {};
        }
    }
    return "no python3 with matplotlib (tried " + join(candidates, ", ") +
           "; apt-get install python3-matplotlib or pass --python)";
}

void plot(const Options &opts, const Table &table, const PlotSpec &spec, const std::optional<RefLine> &ref)
{
    if (!opts.plot) {
        return;
    }
    const auto dir = std::filesystem::path(opts.out_dir);
    std::vector<std::string> argv = {opts.python, opts.plot_script,
                                     "--csv",     (dir / (table.name + ".csv")).string(),
                                     "--out",     (dir / (table.name + ".png")).string(),
                                     "--kind",    spec.kind,
                                     "--x",       spec.x,
                                     "--y",       join(spec.y, ","),
                                     "--title",   table.title,
                                     "--ylabel",  spec.ylabel};
    for (const auto &[flag, value] : {std::pair{"--group", spec.group}, {"--lo", spec.lo}, {"--hi", spec.hi}}) {
        if (!value.empty()) {
            argv.push_back(flag);
            argv.push_back(value);
        }
    }
    if (spec.logy) {
        argv.push_back("--logy");
    }
    if (ref) {
        argv.insert(argv.end(), {"--ref", fmt::format("{}", ref->y), "--ref-label", ref->label});
    }
    // fork/exec rather than system(): no shell quoting of titles and paths.
    const pid_t pid = fork();
    if (pid == 0) {
        std::vector<char *> args;
        for (auto &a : argv) {
            args.push_back(a.data());
        }
        args.push_back(nullptr);
        execvp(args[0], args.data());
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::cout << "plot of " << table.name << " failed (see above); CSV is intact\n";
        return;
    }
    std::cout << "wrote " << (dir / (table.name + ".png")).string() << '\n';
}

bool pin_self(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set) == 0; // 0: the calling thread
}

std::string describe_cpus(const cpu_set_t &set)
{
    std::vector<std::string> cpus;
    for (int c = 0; c < CPU_SETSIZE; ++c) {
        if (CPU_ISSET(c, &set)) {
            cpus.push_back(std::to_string(c));
        }
    }
    return cpus.empty() ? "none" : join(cpus, ",");
}

void pin_like(const Options &opts)
{
    if (opts.cpu >= 0) {
        pin_self(opts.cpu);
    }
}

int first_worker_cpu(const Options &opts)
{
    for (int c = 0; c < CPU_SETSIZE; ++c) {
        if (CPU_ISSET(c, &opts.worker_cpus)) {
            return c;
        }
    }
    return -1;
}

} // namespace serpens::bench
