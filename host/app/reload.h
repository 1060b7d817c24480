#pragma once
// Hot reload (SIGHUP, `serpensctl reload`): what the host runs from, its
// plugins and compiled chains, and how a new version of them replaces the
// running one.
//
// A reload reads the plugin and chain directories again, as a start does.  A
// plugin file whose bytes did not change keeps its loaded copy; a rebuilt one
// is loaded beside the old.  Every chain compiles first: an invalid edit is
// refused with its file:line and nothing changes.  A chain whose file, whose
// plugins or whose NFs' files (config_file) changed, or that the request
// names, gets new instances that take over from the running ones at a batch
// boundary (InstanceManager::replace): its state tables and flow table are
// kept, and a new build that declares them otherwise is refused, the old one
// running on.  host.toml is not read again: ports, gateway rules, placements
// and [nf_defaults] need a restart.
//
// A replaced plugin's code stays mapped until the host stops: nothing of the
// old build runs any more, but unloading code an NF may have handed out
// pointers into (a hook, a string) is not worth the risk.

#include "chain/compiled.h"
#include "chain/spec.h"
#include "config/host_config.h"
#include "instance/manager.h"
#include "plugin/registry.h"

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace serpens {

// The plugins and chains a host runs from.  Immutable once published.
struct ChainSet {
    std::shared_ptr<const PluginRegistry> plugins;
    // Index = chain tag (the gateway's and the router's): a tag is never
    // reused, so a chain whose file went away leaves a null entry.
    std::vector<std::shared_ptr<const CompiledChain>> chains;
    std::map<std::string, uint32_t> tag_of;
    // Chain name -> its parsed file, to tell an edit (comments and layout aside).
    std::map<std::string, std::shared_ptr<const toml::table>> documents;

    const CompiledChain *find(const std::string &name) const;
};

// Loads every plugin of cfg.plugin_dir and compiles every chain of
// cfg.chains_dir (a start's load).  Throws ConfigError (file:line) or Error.
std::shared_ptr<const ChainSet> load_chain_set(const HostConfig &cfg);

// The port index a chain leaves by.  Throws ConfigError naming its file.
uint16_t egress_port_of(const HostConfig &cfg, const CompiledChain &chain);

struct ReloadReport {
    std::vector<std::string> reloaded;        // chains that run here, swapped for their new version
    std::vector<std::string> updated;         // chains that run nowhere, whose new version is now loaded
    std::vector<std::string> added;           // new in chains_dir (they run once host.toml places them)
    std::vector<std::string> removed;         // gone from chains_dir (they ran nowhere)
    std::vector<std::string> unchanged;       //
    std::vector<std::string> plugins_changed; // NFs loaded from a new build
    std::vector<std::string> files_changed;   // files NFs read (config_file) that changed since
    std::vector<std::string> refusals;        // plugin files refused (as a start logs them)
    std::vector<ReplaceResult> swaps;         // what each swap cost the data path
    uint64_t took_ns = 0;
};

class Reloader {
public:
    Reloader(const HostConfig &cfg, InstanceManager &manager, std::shared_ptr<const ChainSet> initial);

    // What the host runs from now.  Thread-safe.
    std::shared_ptr<const ChainSet> current() const;

    // Reads the directories again and swaps what changed (a chain file, a
    // plugin build, or a file its NFs read through config_file, such as
    // fw's rules), plus the chains in `force`.  All or
    // nothing: throws ConfigError (an invalid chain, with file:line) or Error
    // (a running chain removed, a new build refused by its init or for its
    // state, an unknown chain in `force`), and then nothing changed.  One
    // reload at a time; thread-safe.
    ReloadReport reload(const std::vector<std::string> &force = {});

private:
    const HostConfig &_cfg;
    InstanceManager &_manager;
    mutable std::mutex _mutex; // one reload at a time; guards _current
    std::shared_ptr<const ChainSet> _current;
    // The plugins of every set swapped out stay loaded (see above).  Its
    // chains go with their last instance, and with them what they hold: the
    // parsed files, the bytes config_file kept of their NFs' files.
    std::vector<std::shared_ptr<const PluginRegistry>> _retired_plugins;
};

} // namespace serpens
