#pragma once
// serpens_config: an NF's config table from its chain file, read by plugins
// through the host API's config_* entries.

#include <serpens/nf.h>

#include <toml++/toml.h>

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

struct serpens_config {
    // The whole parsed chain file: kept alive (not copied) because toml++
    // drops source positions on copy, and config_where needs them.
    std::shared_ptr<const toml::table> document;
    const toml::table *table = nullptr; // the NF's config table, or an empty one
    std::string file;                   // the chain file it came from
    std::string directory;              // relative paths resolve against this
    std::string nf_name;                // for messages: the chain's name for the NF
    std::string plugin;                 // and its plugin

    // host.toml's [nf_defaults.<plugin>]: where a key the chain file does not
    // set is looked up next (nullptr: nowhere).  Same lifetime rule as above.
    std::shared_ptr<const toml::table> defaults_document;
    const toml::table *defaults = nullptr;
    std::string defaults_file;      // host.toml
    std::string defaults_directory; // relative paths found there resolve against this

    // Every path the NF asked a config_* getter for (config_where aside),
    // found or not, as toml++ spells it: what unread_keys compares against.
    // Written by init, which may run for several instances of one config.
    mutable std::mutex queried_mutex;
    mutable std::set<std::string> queried;

    // The files config_file read for this version of the chain, by resolved
    // path: the first instance's read is every later instance's contents.
    mutable std::mutex files_mutex;
    mutable std::map<std::string, std::string> files;
};

namespace serpens::config {

// host.toml's [nf_defaults]: per plugin name, config keys every NF of that
// plugin reads when its chain file does not set them (sizes for a server).
struct NfDefaults {
    std::shared_ptr<const toml::table> document; // host.toml, kept for source positions
    std::map<std::string, const toml::table *> by_plugin;
    std::string file;
    std::string directory;

    // Points `cfg` at the defaults of its plugin, if any.
    void attach(serpens_config &cfg) const;
};

// Fills the config_* entries of a host API table.
void install_config_api(serpens_host_api &api);

// The keys of the NF's config table, then of its [nf_defaults.<plugin>]
// table, that no getter asked for, in file order, each as "file:line:col:
// unknown key 'k' in the config of NF 'n' (plugin p); it reads: a, b".  A table or array counts as read when it or
// any path below it was asked for; the keys of a table are checked one by
// one (those inside arrays of tables too); any other value only when it was
// asked for itself.  Call after init returned SERPENS_OK.
struct UnreadKey {
    std::string file;
    uint32_t line = 0;
    uint32_t column = 0;
    std::string message; // without the location
    std::string text;    // "file:line:col: " + message
};
std::vector<UnreadKey> unread_key_list(const serpens_config &cfg);
std::vector<std::string> unread_keys(const serpens_config &cfg);

// The files config_file handed out for `cfg` whose contents are no longer
// what it read (or that can no longer be read), by resolved path: a reload
// swaps their chain.
std::vector<std::string> changed_files(const serpens_config &cfg);

} // namespace serpens::config
