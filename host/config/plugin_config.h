#pragma once
// serpens_config: an NF's config table from its chain file, read by plugins
// through the host API's config_* entries.

#include <serpens/nf.h>

#include <toml++/toml.h>

#include <string>

#include <memory>

struct serpens_config {
    // The whole parsed chain file: kept alive (not copied) because toml++
    // drops source positions on copy, and config_where needs them.
    std::shared_ptr<const toml::table> document;
    const toml::table *table = nullptr; // the NF's config table, or an empty one
    std::string file;                   // the chain file it came from
    std::string directory;              // relative paths resolve against this
};

namespace serpens::config {

// Fills the config_* entries of a host API table.
void install_config_api(serpens_host_api &api);

} // namespace serpens::config
