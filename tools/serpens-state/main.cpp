// serpens-state — inspect a host's state segments read-only.
//
//   serpens-state [--root DIR | -c host.toml | --host-id ID] list [--json]
//   serpens-state [...] dump CHAIN NF TABLE [--json] [--limit N]
//   serpens-state [...] check [CHAIN [NF [TABLE]]] [--json]
//   serpens-state [...] flows CHAIN [--json] [--limit N]
//
// For operators after a crash and for tests; `serpensctl state` runs the
// same commands (tools/support/state_inspect.h says what they print).  Never
// writes, so it is safe next to a running host.  `check` exits 1 when a
// segment is unreadable or inconsistent.

#include "config/install_dirs.h"
#include "core/error.h"
#include "core/version.h"
#include "support/state_inspect.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

namespace {

// Documented in --help; scripts rely on them.  1 is
// serpens::support::state_not_found.
enum ExitCode {
    kOk = 0,
    kUsage = 2, // bad arguments or an unreadable host.toml
};

constexpr const char *kExitCodes =
    "Exit codes: 0 done; 1 check found an unreadable or inconsistent segment (or none matched the names "
    "given), or dump/flows could not read theirs; 2 bad arguments or host.toml.";

} // namespace

int main(int argc, char **argv)
{
    CLI::App app{"serpens-state: inspect Serpens state segments (read-only).\n"
                 "The state root is --root, else host.toml's [host] state_dir (-c, or the installed\n"
                 "config of --host-id when there is one), else /dev/shm/serpens/<host-id>.\n"
                 "A table whose NF declares its key/value layout is dumped field by field, others in hex."};
    app.footer(kExitCodes);
    app.set_version_flag("--version", serpens::version_line("serpens-state"));
    serpens::support::StateWhere where;
    auto *root_option = app.add_option("--root", where.root, "the state root directory itself");
    auto *config_option =
        app.add_option("-c,--config", where.config, "the host's host.toml: its [host] state_dir is used");
    app.add_option("--host-id", where.host_id,
                   std::string("the host's [host] id (default serpens): uses ") + serpens::install_dirs::sysconf +
                       "/<id>.toml when there is one, else /dev/shm/serpens/<id>")
        ->excludes(config_option);
    root_option->excludes(config_option);
    app.require_subcommand(1);
    const serpens::support::StateCommands commands(app, nullptr);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError &e) {
        const int code = app.exit(e);
        return code == 0 ? kOk : kUsage;
    }
    try {
        return commands.run(serpens::support::state_root(where), "serpens-state");
    } catch (const serpens::Error &e) {
        std::fprintf(stderr, "serpens-state: %s\n", e.what());
        return kUsage;
    }
}
