// serpensctl: talks to a running serpens-host over its control socket.

#include "control/server.h"
#include "core/error.h"

#include <CLI/CLI.hpp>

#include <cstdio>

int main(int argc, char **argv)
{
    CLI::App app{"serpensctl: inspect, tune and scale a running serpens-host through its control socket\n"
                 "([host] control_socket in host.toml, default /run/serpens/<id>.sock)."};
    std::string host_id = "serpens";
    std::string socket;
    app.add_option("--host-id", host_id, "the host's [host] id; picks /run/serpens/<id>.sock");
    app.add_option("-s,--socket", socket, "the control socket path (overrides --host-id)");
    app.require_subcommand(1);

    auto *ping = app.add_subcommand("ping", "check that the host answers");
    auto *stats = app.add_subcommand("stats", "print the live counters as JSON (ports, parser, gateway "
                                              "rules, instances and their NFs; metered packets per chain)");
    auto *wake = app.add_subcommand("wake-threshold", "show, or set, how many queued packets wake a sleeping instance");
    long long threshold = 0;
    wake->add_option("packets", threshold, "new threshold (1..1048576); omit to show the current one");

    auto *scale = app.add_subcommand(
        "scale", "change how many instances of a chain run, while traffic flows: no packet is lost or reordered.\n"
                 "N sets the count, +K / -K change it; 0 parks the chain (it keeps its state and its gateway rule,\n"
                 "and the first packet wakes an instance).  Prints what happened as JSON: instances before and\n"
                 "after, buckets moved, how long the data path paused, and whether new instances came warm from\n"
                 "the pool or were started cold (NF init).");
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

    CLI11_PARSE(app, argc, argv);
    if (socket.empty()) {
        socket = "/run/serpens/" + host_id + ".sock";
    }
    std::string command;
    if (ping->parsed()) {
        command = "ping";
    } else if (stats->parsed()) {
        command = "stats";
    } else if (wake->parsed()) {
        command = threshold != 0 ? "set wake_threshold " + std::to_string(threshold) : "get wake_threshold";
    } else if (scale->parsed()) {
        command = "scale " + scale_chain + " " + scale_count;
        for (std::size_t i = 0; i < scale_lcores.size(); ++i) {
            command += (i == 0 ? " " : ",") + std::to_string(scale_lcores[i]);
        }
    }
    try {
        std::string reply = serpens::control_request(socket, command);
        std::puts(reply.c_str());
        return reply.rfind("error:", 0) == 0 ? 1 : 0;
    } catch (const serpens::Error &e) {
        std::fprintf(stderr, "serpensctl: %s\n", e.what());
        return 1;
    }
}
