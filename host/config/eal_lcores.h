#pragma once
// The lcores the EAL arguments of host.toml give the host, read without
// starting DPDK: `serpens-host --check` places instances against them, and a
// start places them the same way (against what the EAL reports).

#include <optional>
#include <set>
#include <string>
#include <vector>

namespace serpens {

struct LcoreSet {
    unsigned main = 0;
    std::set<unsigned> enabled; // the main lcore included

    bool has(unsigned lcore) const { return enabled.count(lcore) != 0; }
    // The lowest enabled lcore other than the main one, if any.
    std::optional<unsigned> first_worker() const;
    std::string describe() const; // "main lcore 0, worker lcores 1,2"
    std::string list() const;     // "0,1,2"
};

// Reads -l/--lcores/-c and --main-lcore from EAL arguments (DPDK 22.11's
// syntax).  Without any of them the EAL takes every CPU the process may run
// on, as DPDK does.  Throws ConfigError (naming `file`'s [eal] args) for a
// list it cannot read or a main lcore outside the list.
LcoreSet lcores_of_eal_args(const std::vector<std::string> &args, const std::string &file);

} // namespace serpens
