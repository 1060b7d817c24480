#pragma once
// A chain checked against the loaded plugins and compiled to its prime
// sequential order: NFs numbered 1..N in a topological order of the chain's
// DAG, and per NF a map from output port to the label of the next hop.

#include "chain/spec.h"
#include "config/plugin_config.h"

#include <serpens/nf.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

namespace serpens {

class Plugin;
class PluginRegistry;

struct CompiledNf {
    std::string name;
    // Shared: the plugin stays loaded while a chain compiled against it (and
    // so any instance of it) lives, whatever reloads did to its registry.
    std::shared_ptr<const Plugin> plugin;
    const serpens_nf_descriptor *desc = nullptr;
    std::shared_ptr<const serpens_config> config;
    uint16_t label = 0; // 1..N
    uint16_t n_ports = 1;
    // Port -> next label (another NF's label, SERPENS_LABEL_OUT or _DROP).
    // Ports >= n_ports and SERPENS_PORT_DROP map to SERPENS_LABEL_DROP.
    std::array<uint16_t, 256> next{};
};

struct CompiledChain {
    std::string name;
    std::string file;
    std::string egress;
    uint32_t egress_line = 0; // where the chain file names it (or, without one, the chain), for messages
    uint32_t egress_column = 0;
    std::vector<CompiledNf> nfs; // nfs[i].label == i + 1

    // "fw(1) -> {0: mon(3), 1: ids(2)}; ..." for logs and `serpens-host --check`.
    std::string describe() const;
};

// Checks and compiles a chain.  Throws ConfigError with file:line:col for an
// unknown NF or plugin, a cycle, an unreachable NF, a port out of range, a
// port given two targets, or a missing/ambiguous entry.
// `defaults`: host.toml's [nf_defaults], attached to each NF's config.
std::shared_ptr<const CompiledChain> compile_chain(const ChainSpec &spec, const PluginRegistry &plugins,
                                                   const config::NfDefaults *defaults = nullptr);

} // namespace serpens
