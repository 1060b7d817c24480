// serpens-host: one per server.  Loads NF plugins, compiles the chains, and
// runs them on DPDK ports until SIGINT/SIGTERM.

#include "app/host.h"
#include "config/toml_reader.h"
#include "core/log_level.h"
#include "core/version.h"

#include <CLI/CLI.hpp>

#include <limits>

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
    // From a millisecond: nothing the host does takes effect sooner.
    const CLI::Validator seconds(
        [](const std::string &text) {
            return serpens::config::seconds_problem(text, 0.001, std::numeric_limits<double>::max());
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
