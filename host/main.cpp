// serpens-host: one per server.  Loads NF plugins, compiles the chains, and
// runs them on DPDK ports until SIGINT/SIGTERM.

#include "app/host.h"
#include "core/log_level.h"
#include "core/version.h"

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdlib>

int main(int argc, char **argv)
{
    serpens::HostOptions options;
    CLI::App app{"serpens-host: runs service function chains of NF plugins on DPDK ports.\n"
                 "Everything is configured in host.toml (ports, EAL args, plugin and chain\n"
                 "directories, gateway rules, instance placement); see conf/host.toml."};
    app.set_version_flag("--version", serpens::version_line("serpens-host"));
    app.add_option("-c,--config", options.config_path, "host config file")->required()->check(CLI::ExistingFile);
    app.add_option("--log-level", options.log_level, serpens::log_levels_text() + " (overrides [host])")
        ->check(CLI::IsMember(serpens::log_level_names()));
    app.add_option("--stats-json", options.stats_json, "also write the final counters to this file as JSON");
    // NaN passes CLI11's PositiveNumber (every comparison with it is false).
    const CLI::Validator seconds(
        [](const std::string &text) {
            const double value = std::strtod(text.c_str(), nullptr);
            return std::isfinite(value) && value > 0 ? std::string() : "expected a number of seconds above 0";
        },
        "SECONDS");
    app.add_option("--idle-exit", options.idle_exit_s,
                   "stop after this many seconds without a received packet (for pcap replays)")
        ->check(seconds);
    app.add_option("--duration", options.duration_s, "stop after this many seconds")->check(seconds);
    app.add_flag("--check", options.check_only,
                 "validate host.toml, plugins and chains, print the compiled chains, start nothing");
    CLI11_PARSE(app, argc, argv);
    return serpens::run_host(options);
}
