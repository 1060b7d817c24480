#pragma once
// A service function chain as written in TOML, before it is checked against
// the loaded plugins.  File format (conf/chains/*.toml, one chain per file):
//
//   name   = "fw-ids-mon"       # unique across the chains directory
//   egress = "out"              # host port name the chain's packets leave on
//   entry  = "fw"               # optional: first of `chain`, else the only root
//   chain  = ["fw", "mon"]      # chain(): port 0 of each NF goes to the next
//
//   [[nf]]                      # one per NF of the chain
//   name   = "fw"               # the chain's name for it
//   plugin = "fw"               # the plugin's NF name (descriptor name)
//   [nf.config]                 # optional: the NF's own settings
//
//   [[distribute]]              # distribute(): output port k -> to[k]
//   from = "fw"
//   to   = ["mon", "ids"]       # NF names, or "out" (egress) / "drop"
//
//   [[aggregate]]               # aggregate(): port 0 of every `from` -> `to`
//   from = ["ids", "mon"]
//   to   = "nat"

#include <toml++/toml.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace serpens {

struct SourcePos {
    uint32_t line = 0;
    uint32_t column = 0;
};

inline constexpr const char *chain_target_out = "out";
inline constexpr const char *chain_target_drop = "drop";

struct NfSpec {
    std::string name;
    std::string plugin;
    const toml::table *config = nullptr; // inside ChainSpec::document; null when absent
    SourcePos where;
    SourcePos plugin_where;
};

struct EdgeSpec {
    std::string from;
    uint32_t port = 0;
    std::string to;  // an NF name, chain_target_out or chain_target_drop
    std::string via; // "chain", "distribute" or "aggregate", for messages
    SourcePos where;
};

struct ChainSpec {
    std::shared_ptr<const toml::table> document; // owns every NfSpec::config
    std::string name;
    std::string file;
    std::string directory;
    std::string egress;
    SourcePos egress_where; // of the 'egress' key; the chain's name when there is none
    std::string entry;      // empty: derived
    std::vector<NfSpec> nfs;
    std::vector<EdgeSpec> edges;
    SourcePos where;
};

// Parses one chain file.  Throws ConfigError (file:line:col: what was expected)
// on syntax errors, wrong types, missing required keys and unknown keys.
ChainSpec parse_chain_file(const std::string &path);
// The same from text that claims to come from `path` (messages, relative paths).
ChainSpec parse_chain_text(std::string_view text, const std::string &path);
ChainSpec parse_chain_toml(std::shared_ptr<const toml::table> root, const std::string &file);

// Parses every *.toml in a directory (sorted by name); refuses a chain name
// that two files use, and a directory every local user may add a file to
// (core/private_dir.h, config_directory_problem).
std::vector<ChainSpec> load_chain_directory(const std::string &directory);

} // namespace serpens
