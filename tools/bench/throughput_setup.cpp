// serpens-bench throughput: the files every run reads — a scratch directory,
// the pcap serpens-pktgen writes, the plugins and chains serpens-host loads
// and its config — and the lcores and EAL prefixes of each run.

#include "throughput.h"

#include "fixture.h"
#include "lab_config.h"
#include "process.h"
#include "scratch.h"

#include "io/port.h"
#include "io/router.h"
#include "net/parse.h"
#include "net/pcap.h"
#include "net/rss.h"

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <stdexcept>

namespace serpens::bench {

namespace fs = std::filesystem;

// Runs `body` with a fresh temporary directory (tmp) for configs, pcap
// and logs; removes it afterwards unless --keep (or on error, for a look).
int ThroughputRig::in_scratch_dir(const std::function<int()> &body)
{
    const char *tmpdir = std::getenv("TMPDIR");
    std::string dir_template =
        (fs::path(tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp") / "serpens-bench-throughput-XXXXXX").string();
    if (mkdtemp(dir_template.data()) == nullptr) {
        throw std::runtime_error("mkdtemp " + dir_template + ": " + std::strerror(errno));
    }
    tmp = dir_template;
    // Host state where the host's default state_dir is (host_state_parent);
    // --state-dir picks another mount.
    if (!state_parent.empty()) {
        std::error_code ec;
        if (!fs::is_directory(state_parent, ec)) {
            throw std::runtime_error("--state-dir " + state_parent + ": not a directory");
        }
        state_root = fs::path(state_parent) / tmp.filename();
    } else {
        state_root = host_state_parent() / tmp.filename();
    }
    const RemovedOnExit remove_state(state_root);
    // testpmd may exit before reading all of its stdin.
    struct sigaction ignore {
    }, old_pipe{};
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, &old_pipe);
    auto remove_eal_runtime_dirs = [this] {
        for (const std::string &prefix : eal_prefixes) {
            std::error_code ec;
            fs::remove_all(eal_runtime_dir(prefix), ec);
        }
        eal_prefixes.clear();
    };
    int rc = 0;
    try {
        rc = body();
    } catch (...) {
        sigaction(SIGPIPE, &old_pipe, nullptr);
        remove_eal_runtime_dirs();
        std::cout << "throughput: logs kept in " << tmp.string() << '\n';
        throw;
    }
    sigaction(SIGPIPE, &old_pipe, nullptr);
    remove_eal_runtime_dirs();
    if (keep) {
        std::cout << "throughput: configs, pcap and logs kept in " << tmp.string() << '\n';
    } else {
        std::error_code ec;
        fs::remove_all(tmp, ec);
    }
    return rc;
}

void ThroughputRig::pick_lcores(const Options &opts)
{
    if (!lcores.empty()) {
        const auto comma = lcores.find(',');
        if (comma == std::string::npos) {
            throw std::runtime_error("--lcores wants MAIN,FWD (two lcore numbers)");
        }
        main_lcore = std::stoi(lcores.substr(0, comma));
        fwd_lcore = std::stoi(lcores.substr(comma + 1));
        return;
    }
    std::vector<int> cpus;
    for (int c = 0; c < CPU_SETSIZE && cpus.size() < 2; ++c) {
        if (CPU_ISSET(c, &opts.worker_cpus)) {
            cpus.push_back(c);
        }
    }
    if (cpus.empty()) {
        cpus.push_back(0);
    }
    main_lcore = cpus.front();
    fwd_lcore = cpus.back();
}

std::string ThroughputRig::eal_prefix(const char *what)
{
    eal_prefixes.push_back(fmt::format("serpens-bench-{}-{}-{}", what, getpid(), runs++));
    return "--file-prefix=" + eal_prefixes.back();
}

std::string ThroughputRig::pcap_vdev(unsigned queues) const
{
    if (queues == 1) {
        return "net_pcap0,rx_pcap=" + fs::absolute(pcap).string() + ",infinite_rx=1";
    }
    return "net_pcap0,rx_pcap=" + fs::absolute(queue_pcaps[0]).string() +
           ",rx_pcap=" + fs::absolute(queue_pcaps[1]).string() + ",infinite_rx=1";
}

void ThroughputRig::make_pcap()
{
    pcap = tmp / "in.pcap";
    std::vector<std::string> argv = {pktgen_exe,
                                     "-o",
                                     pcap.string(),
                                     "--flows",
                                     std::to_string(flows),
                                     "--size",
                                     std::to_string(size),
                                     "--packets",
                                     std::to_string(packets),
                                     "--malformed-ratio",
                                     "0",
                                     "--mix",
                                     mix,
                                     "--vlan-ratio",
                                     fmt::format("{}", vlan_ratio)};
    Child gen(argv, tmp / "pktgen.log", false);
    if (gen.wait_exit(120) != 0 || !fs::exists(pcap)) {
        throw std::runtime_error("serpens-pktgen failed (" + pktgen_exe +
                                 "; pass --pktgen): " + last_lines(gen.log(), 5));
    }
    pktgen_cmd.clear();
    for (std::size_t i = 0; i < argv.size(); ++i) {
        pktgen_cmd += (i ? " " : "") + (i == 0 ? std::string("serpens-pktgen") : i == 2 ? "in.pcap" : argv[i]);
    }
}

void ThroughputRig::make_queue_pcaps()
{
    // Split as a NIC would whose RSS table the host wrote from the buckets
    // (bucket_hash = "rss", io::bucket_queue); the host deals each bucket
    // to the instance on the lcore that receives it.
    net::PcapReader reader(pcap.string());
    std::unique_ptr<net::PcapWriter> halves[2];
    for (unsigned q = 0; q < 2; ++q) {
        queue_pcaps[q] = tmp / fmt::format("in-q{}.pcap", q);
        halves[q] = std::make_unique<net::PcapWriter>(queue_pcaps[q].string());
    }
    while (auto rec = reader.next()) {
        serpens_pkt view{};
        net::FlowKey key;
        net::parse_packet(rec->data, view, key);
        const uint32_t bucket = io::route_bucket(net::rss_hash(key));
        halves[io::bucket_queue(bucket, 2, 0)]->write(rec->data, rec->ts_ns, rec->orig_len);
    }
    for (auto &half : halves) {
        half->close();
    }
}

// The noop plugin alone in a private plugin directory: the host loads
// every .so in plugin_dir, and the build's may hold others.
void ThroughputRig::make_serpens_files(const Options &opts, const std::vector<std::string> &chains)
{
    const std::string noop = find_plugin(opts.plugin_dir, "noop");
    if (noop.empty()) {
        throw std::runtime_error("no serpens_nf_noop.so in " + opts.plugin_dir + " or its noop/: pass --plugins");
    }
    fs::create_directories(tmp / "plugins");
    fs::copy_file(noop, tmp / "plugins" / "serpens_nf_noop.so", fs::copy_options::overwrite_existing);
    fs::permissions(tmp / "plugins" / "serpens_nf_noop.so", fs::perms(0755));
    // Each chain in a chains directory of its own: the host sets up every
    // chain it finds, and a run should hold only the chain it measures.
    for (const std::string &chain : chains) {
        // The chain's plugins beside noop; NF configs as the nf subcommand's.
        const std::vector<std::string> nfs = split_chain(chain);
        for (const std::string &nf : nfs) {
            const std::string plugin = lab_plugin(nf);
            const std::string so = find_plugin(opts.plugin_dir, plugin);
            if (so.empty()) {
                throw std::runtime_error("no serpens_nf_" + plugin + ".so in " + opts.plugin_dir + ": pass --plugins");
            }
            const fs::path dst = tmp / "plugins" / ("serpens_nf_" + plugin + ".so");
            fs::copy_file(so, dst, fs::copy_options::overwrite_existing);
            fs::permissions(dst, fs::perms(0755));
        }
        NfParams params;
        params.fw_rules = fw_rules;
        params.flows = flows;
        if (!nat_external.empty()) {
            params.nat_external = nat_external;
        }
        params.mon_fold_ms = mon_fold_ms;
        fs::create_directories(tmp / ("chains-" + chain));
        std::ofstream(tmp / ("chains-" + chain) / (chain + ".toml")) << "egress = \"out\"\n"
                                                                     << lab_chain_toml(tmp, nfs, params, chain);
    }
    fs::create_directories(tmp / "chains-passthrough");
    std::ofstream(tmp / "chains-passthrough" / "passthrough.toml") << "name = \"passthrough\"\n"
                                                                      "egress = \"out\"\n\n"
                                                                      "[[nf]]\n"
                                                                      "name = \"pass\"\n"
                                                                      "plugin = \"noop\"\n";
}

fs::path ThroughputRig::write_host_toml(bool two_cores, const std::string &chain)
{
    const std::string eal_lcores = two_cores ? fmt::format("{},{}", main_lcore, fwd_lcore) : std::to_string(fwd_lcore);
    const std::string instance_lcores = two_cores ? eal_lcores : std::to_string(fwd_lcore);
    const fs::path path = tmp / (chain + (two_cores ? "-host-2core.toml" : "-host-1core.toml"));
    host_socket = tmp / fmt::format("host-{}.sock", runs);
    host_state = state_root / fmt::format("state-{}", runs);
    std::ofstream out(path);
    out << fmt::format("# serpens-bench throughput: {}\n"
                       "[host]\n"
                       "id = \"bench-tp-{}\"\n"
                       "log_level = \"info\"\n"
                       "plugin_dir = \"plugins\"\n"
                       "chains_dir = \"chains-{}\"\n"
                       "state_dir = \"{}\"\n"
                       "control_socket = \"{}\"\n\n"
                       "[eal]\n"
                       "args = [\"-l\", \"{}\", \"--no-huge\", \"-m\", \"{}\", \"--no-pci\", \"--no-shconf\", \"{}\", "
                       "\"--no-telemetry\", \"--log-level=warning\"]\n\n"
                       "[mempool]\n"
                       "mbufs = {}\n"
                       "cache = 256\n\n"
                       "[[port]]\n"
                       "name = \"in\"\n"
                       "device = \"{}\"\n\n"
                       "[[port]]\n"
                       "name = \"out\"\n"
                       "device = \"net_null0,no-rx=1\"\n\n"
                       "[gateway]\n"
                       "default = \"drop\"\n\n"
                       "[[gateway.rule]]\n"
                       "name = \"all\"\n"
                       "chain = \"{}\"\n\n"
                       "[instances]\n"
                       "burst = {}\n"
                       "flow_capacity = {}\n{}\n"
                       "[[instance]]\n"
                       "chain = \"{}\"\n"
                       "count = {}\n"
                       "lcores = [{}]\n",
                       two_cores ? "two lcores, each receiving one RX queue and running an instance"
                                 : "everything on the main lcore (one core)",
                       getpid(), chain, host_state.string(), host_socket.string(), eal_lcores, memory_mb,
                       eal_prefix("host"), mbufs - 1, pcap_vdev(two_cores ? 2 : 1), chain, burst,
                       flow_capacity != 0 ? flow_capacity : bench_flow_capacity(flows),
                       two_cores ? "bucket_hash = \"rss\"\n" : "", chain, two_cores ? 2 : 1, instance_lcores);
    if (!out) {
        throw std::runtime_error("cannot write " + path.string());
    }
    return path;
}

} // namespace serpens::bench
