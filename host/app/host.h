#pragma once
// Assembles a running serpens-host from host.toml: plugins, chains, DPDK,
// gateway, router, instances; runs until signalled; reports counters.

#include <string>

namespace serpens {

struct HostOptions {
    std::string config_path;
    std::string log_level;   // overrides [host] log_level when set
    std::string stats_json;  // also write the final counters here as JSON
    double idle_exit_s = 0;  // stop after this long without a received packet
    double duration_s = 0;   // stop after this long
    bool check_only = false; // validate config, plugins and chains; start nothing
};

// Returns the process exit code.  Configuration errors are printed as
// "file:line:col: message" and give exit code 2; runtime failures 1.
int run_host(const HostOptions &options);

} // namespace serpens
