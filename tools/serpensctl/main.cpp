// serpensctl: operates a running serpens-host through its control socket.

#include "config/host_config.h"
#include "config/install_dirs.h"
#include "config/toml_reader.h"
#include "control/protocol.h"
#include "control/request.h"
#include "core/error.h"
#include "core/log_level.h"
#include "core/version.h"
#include "render.h"
#include "support/state_inspect.h"

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <optional>
#include <thread>

namespace {

using nlohmann::ordered_json;

// Documented in --help; scripts rely on them.
enum ExitCode {
    kOk = 0,
    kRefused = 1,     // the host answered with an error
    kUsage = 2,       // bad arguments or an unreadable host.toml
    kUnreachable = 3, // no host answered on the socket (not running, no permission, timeout)
};

constexpr const char *kExitCodes = "Exit codes: 0 done; 1 the host refused the request (its reason on stderr), or "
                                   "for state: the table or chain has no readable segment, or check found a "
                                   "problem; 2 bad arguments or host.toml; 3 no host answered on the control socket.";

struct Target {
    std::string config;
    std::string host_id = "serpens";
    std::string socket;
    bool json = false;
    int timeout_ms = 5000;
    std::optional<uid_t> host_uid; // trusted to serve the socket besides root and this user
};

// Where the host listens: --socket, else host.toml's [host] control_socket
// (-c, or the installed config of --host-id when there is one), else
// /run/serpens/<id>.sock.
std::string socket_of(const Target &target)
{
    if (!target.socket.empty()) {
        return target.socket;
    }
    const std::string config = serpens::support::host_config_of(target.config, target.host_id);
    if (!config.empty()) {
        return serpens::load_host_config(config).control_socket;
    }
    return "/run/serpens/" + target.host_id + ".sock";
}

void print(const std::string &text) { std::fputs(text.c_str(), stdout); }

void print_json(const ordered_json &value, int indent = 2)
{
    print(value.dump(indent, ' ', false, ordered_json::error_handler_t::replace) + "\n");
}

// A request the host would refuse for its own shape (a count of "abc"),
// found before any host is called: bad arguments, exit 2.
struct BadArguments : serpens::Error {
    using Error::Error;
};

// Exit 3; with --json, scripts get an error object on stdout as for a
// refusal, with the code "unreachable".
int unreachable(const std::string &why, bool json)
{
    if (json) {
        print_json({{"error", {{"code", "unreachable"}, {"message", why}}}});
    }
    std::fprintf(stderr, "serpensctl: %s\n", why.c_str());
    return kUnreachable;
}

} // namespace

int main(int argc, char **argv)
{
    CLI::App app{"serpensctl: operates a running serpens-host through its control socket.\n"
                 "The host is found through -c host.toml, or --host-id (its installed config, else\n"
                 "/run/serpens/<id>.sock), or --socket.  Every command prints a table for people, or with\n"
                 "--json the host's reply as JSON for scripts.  `state` reads the host's state dir\n"
                 "(host.toml's state_dir, else /dev/shm/serpens/<id>) directly, read-only: it needs no socket."};
    app.footer(kExitCodes);
    app.set_version_flag("--version", serpens::version_line("serpensctl"));
    app.fallthrough(); // global options may follow the command too
    Target target;
    app.add_option("-c,--config", target.config, "the host's host.toml: its control_socket is used");
    app.add_option("--host-id", target.host_id,
                   std::string("the host's [host] id (default serpens): uses ") + serpens::install_dirs::sysconf +
                       "/<id>.toml when there is one, else /run/serpens/<id>.sock")
        ->check(CLI::Validator(
            [](const std::string &id) {
                // It becomes a path: checked as the host checks its own id.
                return serpens::config::is_safe_name(id) ? std::string()
                                                         : serpens::config::unsafe_name_message("host id", id);
            },
            "ID"));
    app.add_option("-s,--socket", target.socket, "the control socket's path (overrides -c and --host-id)");
    app.add_flag("--json", target.json, "print the reply as JSON");
    app.add_option("--host-uid", target.host_uid,
                   "the uid serpens-host runs as, when neither root nor you (a control_group member's case): "
                   "serpensctl talks only to a socket served by root, you, or this uid")
        ->check(CLI::Range(uid_t{1}, uid_t{0x7fffffff}));
    app.add_option("--timeout", target.timeout_ms, "milliseconds to wait for the host (default 5000)")
        ->check(CLI::Range(1, 600000));
    app.require_subcommand(1);

    auto *status = app.add_subcommand("status", "who the host is, since when, from which config; its chains");
    auto *chains = app.add_subcommand("chains", "every chain: its graph, egress and instances");
    auto *plugins = app.add_subcommand("plugins", "every loaded plugin: version, ABI, file, the chains using it");
    auto *instances = app.add_subcommand("instances", "every chain instance: lcore, state and packet counters");
    auto *peers = app.add_subcommand("peers", "the other hosts of host.toml's [peer]: up or down, when last heard,\n"
                                              "their underlay address and MAC; and the peer protocol's counters");
    auto *stats = app.add_subcommand("stats", "the counters (ports, gateway rules, chains, NFs) since the last clear");
    double watch_s = 0;
    unsigned watch_count = 0;
    stats->add_option("-w,--watch", watch_s, "repeat every SECONDS, showing rates per second")
        ->check(CLI::Validator(
            [](const std::string &text) { return serpens::config::seconds_problem(text, 0.1, 3600.0); }, "SECONDS"))
        ->expected(0, 1)
        ->default_str("1");
    stats->add_option("-n,--count", watch_count, "with --watch: stop after this many updates (default: never)");
    auto *clear = app.add_subcommand("clear", "zero the counters stats shows (bills and metrics keep counting)");
    auto *scale = app.add_subcommand(
        "scale", "change how many instances of a chain run, while traffic flows: no packet is lost or reordered.\n"
                 "N sets the count, +K / -K change it; 0 parks the chain (it keeps its state and its gateway rule,\n"
                 "and the first packet wakes an instance).\n"
                 "With --peer, +1 runs the chain on that peer too: it takes the new flows of an equal share of the\n"
                 "chain's buckets, while every flow already here stays here; -1 sends new flows back here, and the\n"
                 "flows the peer serves finish there.");
    std::string scale_chain;
    std::string scale_count;
    std::vector<unsigned> scale_lcores;
    scale->add_option("chain", scale_chain, "the chain's name")->required();
    scale->add_option("count", scale_count, "N, +K or -K")->required();
    scale
        ->add_option("-l,--lcores", scale_lcores,
                     "lcores new instances may run on (default: the chain's [[instance]] lcores, else any "
                     "worker lcore; the least loaded is taken)")
        ->delimiter(',');
    std::string scale_peer;
    scale->add_option("-p,--peer", scale_peer, "scale onto (+1) or back from (-1) this peer, a [[peer.host]] id");
    auto *wake = app.add_subcommand("wake-threshold", "show, or set, how many queued packets wake a sleeping instance");
    uint32_t threshold = 0;
    wake->add_option("packets", threshold, "the new threshold, 1..1048576; omit to show the current one")
        ->check(CLI::Range(1u, 1u << 20));
    auto *log_level = app.add_subcommand("log-level", "show, or set, the host's log level");
    std::string level;
    log_level->add_option("level", level, serpens::log_levels_text() + "; omit to show the current one")
        ->check(CLI::IsMember(serpens::log_level_names()));
    auto *bill = app.add_subcommand(
        "bill", "what each chain used (packets, bytes, drops, instance-seconds, busy CPU-seconds; per NF packets,\n"
                "bytes, drops), from the usage ledger in the host's state dir: it survives restarts, and a crash\n"
                "loses at most the last second.  Exact to the second over the last hour, to the hour before.");
    std::string bill_since;
    std::string bill_chain;
    bill->add_option("--since", bill_since,
                     "from when: 30s, 10m, 2h or 7d ago; Unix seconds; or UTC 2026-12-03T18:00:00Z or 2026-12-03 "
                     "(default: all the ledger holds)");
    bill->add_option("--chain", bill_chain, "only this chain");
    auto *reload = app.add_subcommand(
        "reload", "read the chain and plugin directories again, while traffic flows (as SIGHUP does).  A chain\n"
                  "whose file, plugins or NFs' files (fw's rules, ids' signatures) changed gets new instances\n"
                  "that take over at a batch boundary, its state kept; an invalid edit, or a new build whose\n"
                  "state tables differ, is refused and the running chains stay as they are (exit 1).  Until\n"
                  "then every instance, a scale-out's too, runs on the files as the chain first read them.\n"
                  "host.toml is not read again.");
    std::vector<std::string> reload_chains;
    reload->add_option("--chain", reload_chains,
                       "also swap this chain though nothing it reads changed (new instances, NF init again); "
                       "repeatable");
    auto *drain = app.add_subcommand(
        "drain", "move every instance off these lcores, while traffic flows (each hands its flows to one started on\n"
                 "another lcore, no packet lost or reordered), and keep scaling off them until --undo; an lcore\n"
                 "that receives keeps receiving.  Without lcores: list the drained ones.");
    std::vector<unsigned> drain_lcores;
    bool drain_undo = false;
    drain->add_option("lcores", drain_lcores, "lcore ids (comma- or space-separated)")->delimiter(',');
    drain->add_flag("--undo", drain_undo, "let these lcores (default: every drained one) run instances again");
    auto *version = app.add_subcommand("version", "serpensctl's version and the host's");
    auto *ping = app.add_subcommand("ping", "check that the host answers");
    auto *state = app.add_subcommand(
        "state", "the host's NF state, read from its state dir (safe beside a running host): list the tables,\n"
                 "dump one (field by field when its NF declares the layout, else hex), check them, or dump a\n"
                 "chain's flow table.  --json prints one JSON document on one line.");
    state->require_subcommand(1);
    std::string state_root;
    state->add_option("--root", state_root, "the state dir itself (default: host.toml's state_dir)");
    const serpens::support::StateCommands state_commands(*state, &target.json);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError &e) {
        const int code = app.exit(e);
        return code == 0 ? kOk : kUsage;
    }

    if (state->parsed()) {
        try {
            return state_commands.run(serpens::support::state_root({state_root, target.config, target.host_id}),
                                      "serpensctl");
        } catch (const std::exception &e) { // serpens::Error; a filesystem one for a path that loops
            std::fprintf(stderr, "serpensctl: %s\n", e.what());
            return kUsage;
        }
    }
    std::string socket;
    try {
        socket = socket_of(target);
    } catch (const std::exception &e) { // serpens::Error; a filesystem one for a path that loops
        std::fprintf(stderr, "serpensctl: %s\n", e.what());
        return kUsage;
    }
    auto call = [&](ordered_json request) {
        // Checked by the host's own rules (control/request.h) first, so an
        // argument is judged the same here and there.
        ordered_json versioned = request;
        versioned["v"] = serpens::kControlProtocolVersion;
        const serpens::ParsedControlRequest parsed = serpens::parse_control_request(versioned.dump());
        if (const auto *refused = std::get_if<serpens::ControlRequestError>(&parsed)) {
            throw BadArguments(refused->message);
        }
        return serpens::control_call(socket, std::move(request), target.timeout_ms, target.host_uid);
    };
    try {
        if (status->parsed()) {
            ordered_json r = call({{"cmd", "status"}});
            target.json ? print_json(r) : print(serpensctl::render_status(r));
        } else if (chains->parsed()) {
            ordered_json r = call({{"cmd", "chains"}});
            target.json ? print_json(r) : print(serpensctl::render_chains(r));
        } else if (peers->parsed()) {
            ordered_json r = call({{"cmd", "peers"}});
            target.json ? print_json(r) : print(serpensctl::render_peers(r));
        } else if (plugins->parsed()) {
            ordered_json r = call({{"cmd", "plugins"}});
            target.json ? print_json(r) : print(serpensctl::render_plugins(r));
        } else if (instances->parsed()) {
            ordered_json r = call({{"cmd", "instances"}});
            target.json ? print_json(r) : print(serpensctl::render_instances(r));
        } else if (stats->parsed() && stats->count("--watch") == 0) {
            ordered_json r = call({{"cmd", "stats"}});
            target.json ? print_json(r) : print(serpensctl::render_stats(r));
        } else if (stats->parsed()) {
            using Clock = std::chrono::steady_clock;
            const auto period = std::chrono::duration<double>(watch_s > 0 ? watch_s : 1.0);
            ordered_json before = call({{"cmd", "stats"}});
            Clock::time_point t0 = Clock::now();
            for (unsigned n = 0; watch_count == 0 || n < watch_count; ++n) {
                std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(period));
                ordered_json now = call({{"cmd", "stats"}});
                const Clock::time_point t1 = Clock::now();
                const double seconds = std::chrono::duration<double>(t1 - t0).count();
                ordered_json rates = serpensctl::stats_rates(now, before, seconds);
                if (target.json) {
                    print_json({{"seconds", seconds}, {"rates", std::move(rates)}, {"counters", now}}, -1);
                } else {
                    print((n == 0 ? "" : "\n") + serpensctl::render_rates(rates, seconds));
                }
                std::fflush(stdout);
                before = std::move(now);
                t0 = t1;
            }
        } else if (clear->parsed()) {
            ordered_json r = call({{"cmd", "clear"}});
            target.json ? print_json(r)
                        : print("counters cleared at " + r.value("cleared", std::string("?")) +
                                " (bills and metrics keep counting)\n");
        } else if (scale->parsed()) {
            ordered_json request = {{"cmd", "scale"}, {"chain", scale_chain}, {"count", scale_count}};
            if (!scale_lcores.empty()) {
                request["lcores"] = scale_lcores;
            }
            if (!scale_peer.empty()) {
                request["peer"] = scale_peer;
            }
            ordered_json r = call(request);
            target.json ? print_json(r)
                        : print(scale_peer.empty() ? serpensctl::render_scale(r) : serpensctl::render_peer_scale(r));
        } else if (wake->parsed()) {
            ordered_json request = {{"cmd", "wake_threshold"}};
            if (threshold != 0) {
                request["set"] = threshold;
            }
            ordered_json r = call(request);
            target.json ? print_json(r) : print("wake threshold: " + r["wake_threshold"].dump() + " packets\n");
        } else if (log_level->parsed()) {
            ordered_json request = {{"cmd", "log_level"}};
            if (!level.empty()) {
                request["set"] = level;
            }
            ordered_json r = call(request);
            target.json ? print_json(r) : print("log level: " + r.value("log_level", std::string("?")) + "\n");
        } else if (bill->parsed()) {
            ordered_json request = {{"cmd", "bill"}};
            if (!bill_since.empty()) {
                const auto now = std::chrono::system_clock::now().time_since_epoch();
                const std::optional<int64_t> since =
                    serpensctl::parse_since(bill_since, std::chrono::duration_cast<std::chrono::seconds>(now).count());
                if (!since || *since < 0) {
                    std::fprintf(stderr,
                                 "serpensctl: --since %s: expected 30s, 10m, 2h, 7d, Unix seconds, or a UTC time "
                                 "like 2026-12-03T18:00:00Z\n",
                                 bill_since.c_str());
                    return kUsage;
                }
                request["since"] = *since;
            }
            if (!bill_chain.empty()) {
                request["chain"] = bill_chain;
            }
            ordered_json r = call(request);
            target.json ? print_json(r) : print(serpensctl::render_bill(r));
        } else if (reload->parsed()) {
            ordered_json request = {{"cmd", "reload"}};
            if (!reload_chains.empty()) {
                request["chains"] = reload_chains;
            }
            // NF init may take seconds (ids compiles its signatures): wait
            // longer than for a read, unless told otherwise.
            const int timeout_ms = app.get_option("--timeout")->count() == 0 ? 120000 : target.timeout_ms;
            ordered_json r = serpens::control_call(socket, std::move(request), timeout_ms, target.host_uid);
            target.json ? print_json(r) : print(serpensctl::render_reload(r));
        } else if (drain->parsed()) {
            ordered_json request = {{"cmd", "drain"}};
            if (!drain_lcores.empty()) {
                request["lcores"] = drain_lcores;
            }
            if (drain_undo) {
                request["undo"] = true;
            }
            ordered_json r = call(request);
            target.json ? print_json(r) : print(serpensctl::render_drain(r));
        } else if (version->parsed()) {
            ordered_json r = call({{"cmd", "version"}});
            r["serpensctl"] = SERPENS_VERSION;
            target.json ? print_json(r)
                        : print(std::string("serpensctl ") + SERPENS_VERSION + "\nserpens-host " +
                                r.value("host", std::string("?")) + " (control protocol " + r["protocol"].dump() +
                                ", plugin ABI " + r.value("plugin_abi", std::string("?")) + ")\n");
        } else if (ping->parsed()) {
            ordered_json r = call({{"cmd", "ping"}});
            target.json ? print_json(r) : print("pong\n");
        }
    } catch (const BadArguments &e) {
        if (target.json) {
            print_json({{"error", {{"code", "bad_arguments"}, {"message", e.what()}}}});
        }
        std::fprintf(stderr, "serpensctl: %s\n", e.what());
        return kUsage;
    } catch (const serpens::ControlReplyError &e) {
        if (target.json) {
            print_json({{"error", {{"code", e.code()}, {"message", e.what()}}}});
        }
        std::fprintf(stderr, "serpensctl: %s (%s)\n", e.what(), e.code().c_str());
        return kRefused;
    } catch (const serpens::Error &e) {
        return unreachable(e.what(), target.json);
    } catch (const nlohmann::json::exception &e) {
        return unreachable(std::string("the host's reply has an unexpected shape: ") + e.what(), target.json);
    }
    return kOk;
}
