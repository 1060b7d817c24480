#pragma once
// Read-only inspection of a host's state dir: the list, dump, check and
// flows commands of serpens-state and of `serpensctl state`, written once so
// the two tools print the same thing.
//
// Never writes: segments are mapped PROT_READ, so it is safe next to a
// running host (results are then a snapshot; "write in flight" may be
// transient).  A table whose NF declared its layout (nf.h, ABI 1.7) is
// decoded by the <table>.layout.json the host wrote beside its segment; any
// other table, and the bytes no field covers, are shown as hex.
//
// Output: a table for people, or with --json one JSON document on one line
// (dump and flows stream their entries, so a large table needs no memory).

#include <CLI/CLI.hpp>

#include <filesystem>
#include <string>

namespace serpens::support {

// The installed host.toml of `host_id` (<sysconfdir>/serpens/<id>.toml) when
// `config` is empty and there is one; else `config` (possibly empty).  How
// serpensctl and serpens-state find a host from its id.
std::string host_config_of(const std::string &config, const std::string &host_id);

// Where a tool was told the state is.
struct StateWhere {
    std::string root;   // the state root itself
    std::string config; // a host.toml
    std::string host_id = "serpens";
};

// --root, else host.toml's [host] state_dir (the config, or the installed
// config of the id when there is one), else the host's default for the id
// (/dev/shm/serpens/<id>).  Throws serpens::Error for an unreadable host.toml.
std::filesystem::path state_root(const StateWhere &where);

// Exit statuses of run(); a tool maps its own usage error to 2.
inline constexpr int state_ok = 0;
inline constexpr int state_not_found = 1; // a named segment is missing or unreadable, or check found a problem

// list, dump, check and flows as CLI11 subcommands of `parent`.
class StateCommands {
public:
    // `json`: the flag --json sets; nullptr gives each subcommand a --json
    // of its own (serpensctl passes its global one).
    StateCommands(CLI::App &parent, bool *json);
    StateCommands(const StateCommands &) = delete;
    StateCommands &operator=(const StateCommands &) = delete;

    // Runs the subcommand that was parsed against `root`: its output on
    // stdout, errors on stderr prefixed with "<tool>: ".  state_ok or
    // state_not_found.
    int run(const std::filesystem::path &root, const char *tool) const;

private:
    bool _own_json = false;
    bool *_json;
    std::string _chain, _nf, _table;
    uint64_t _limit = 0;
    CLI::App *_list, *_dump, *_check, *_flows;
};

} // namespace serpens::support
