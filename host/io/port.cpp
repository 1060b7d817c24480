#include "io/port.h"

#include "core/error.h"
#include "io/router.h"
#include "net/rss.h"

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string_view>

namespace serpens::io {
namespace {

bool is_vdev(const std::string &device) { return device.rfind("net_", 0) == 0 || device.rfind("eth_", 0) == 0; }

// rte_eal_init's argv over `args`, null-terminated as a C argv is.
std::vector<char *> argv_of(std::vector<std::string> &args)
{
    std::vector<char *> argv;
    for (std::string &arg : args) {
        argv.push_back(arg.data());
    }
    argv.push_back(nullptr);
    return argv;
}

// The device name DPDK gives the port: the vdev name before its first comma,
// or the PCI address.
std::string device_name(const std::string &device) { return device.substr(0, device.find(',')); }

// The host's symmetric Toeplitz key (net/rss.h): both directions of a flow
// hash alike, so a NIC puts them on the same RX queue.
void symmetric_rss(const rte_eth_dev_info &info, rte_eth_conf &conf, std::vector<uint8_t> &key)
{
    key.resize(info.hash_key_size != 0 ? info.hash_key_size : 40);
    for (std::size_t i = 0; i < key.size(); ++i) {
        key[i] = net::rss_key_byte(i);
    }
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_key = key.data();
    conf.rx_adv_conf.rss_conf.rss_key_len = static_cast<uint8_t>(key.size());
    conf.rx_adv_conf.rss_conf.rss_hf =
        (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
}

// Writes the port's RSS redirection table so that each router bucket
// arrives on bucket_queue(), and returns it as the NIC reads it back; empty
// (with a warning saying what follows) when the driver cannot.
std::vector<uint16_t> write_bucket_table(const std::string &name, uint16_t port_id, uint16_t reta_size,
                                         uint16_t rx_queues)
{
    const auto why_not = [&](const std::string &what) {
        spdlog::warn("port '{}': {}; its RSS spreads flows as the NIC likes, and packets that arrive on another "
                     "lcore than their bucket's reach it through a ring",
                     name, what);
        return std::vector<uint16_t>{};
    };
    if (reta_size < RTE_ETH_RETA_GROUP_SIZE || (reta_size & (reta_size - 1)) != 0) {
        return why_not("the device has no RSS redirection table the host can write (" + std::to_string(reta_size) +
                       " entries)");
    }
    // Entry i serves the buckets whose low bits are i's.
    std::vector<uint16_t> want(reta_size);
    for (uint16_t i = 0; i < reta_size; ++i) {
        want[i] = bucket_queue(i, rx_queues, reta_size);
    }
    std::vector<rte_eth_rss_reta_entry64> table(reta_size / RTE_ETH_RETA_GROUP_SIZE);
    for (uint16_t i = 0; i < reta_size; ++i) {
        rte_eth_rss_reta_entry64 &group = table[i / RTE_ETH_RETA_GROUP_SIZE];
        group.mask |= uint64_t{1} << (i % RTE_ETH_RETA_GROUP_SIZE);
        group.reta[i % RTE_ETH_RETA_GROUP_SIZE] = want[i];
    }
    if (int rc = rte_eth_dev_rss_reta_update(port_id, table.data(), reta_size); rc != 0) {
        return why_not("writing its RSS redirection table failed: " + std::string(rte_strerror(-rc)));
    }
    for (auto &group : table) {
        std::memset(group.reta, 0, sizeof group.reta);
    }
    if (int rc = rte_eth_dev_rss_reta_query(port_id, table.data(), reta_size); rc != 0) {
        return why_not("reading back its RSS redirection table failed: " + std::string(rte_strerror(-rc)));
    }
    for (uint16_t i = 0; i < reta_size; ++i) {
        const uint16_t read = table[i / RTE_ETH_RETA_GROUP_SIZE].reta[i % RTE_ETH_RETA_GROUP_SIZE];
        if (read != want[i]) {
            return why_not(
                fmt::format("its RSS redirection table reads back queue {} at entry {}, not {}", read, i, want[i]));
        }
    }
    return want; // what the device read back
}

} // namespace

uint16_t bucket_queue(uint32_t bucket, uint16_t rx_queues, uint16_t reta_size) noexcept
{
    const uint32_t entries = reta_size == 0 ? route_buckets : std::min<uint32_t>(reta_size, route_buckets);
    return static_cast<uint16_t>((bucket & (entries - 1)) % std::max<uint16_t>(rx_queues, 1));
}

std::vector<std::string> eal_arguments(const HostConfig &cfg, const std::string &program)
{
    std::vector<std::string> args{program};
    args.insert(args.end(), cfg.eal_args.begin(), cfg.eal_args.end());
    for (const PortConfig &port : cfg.ports) {
        args.push_back(is_vdev(port.device) ? "--vdev=" + port.device : "--allow=" + port.device);
    }
    return args;
}

namespace {

// What to do when the EAL finds no hugepages.
constexpr std::string_view hugepages_fix =
    "reserve hugepages (dpdk-hugepages.py -p 2M --setup 1G), or add \"--no-huge\", \"-m\", \"512\" to [eal] args";

// What keeps the EAL from the hugepages `args` ask for, found before it
// starts ("" when nothing does): with none free, rte_eal_init fails as if
// the user lacked the rights (EACCES).
std::string hugepages_problem(const std::vector<std::string> &args)
{
    // getopt takes an option's unambiguous prefix too ("--no-hu"); `unique`
    // is the length past which no other EAL option shares it.
    auto has = [&](std::string_view option, std::size_t unique) {
        return std::any_of(args.begin() + 1, args.end(), [&](const std::string &arg) {
            return arg.size() > unique && arg.size() <= option.size() && option.starts_with(arg);
        });
    };
    if (has("--no-huge", std::string_view("--no-h").size())) { // --no-hpet
        return {};
    }
    const std::string fix(hugepages_fix);
    uint64_t free_pages = 0;
    std::error_code ec;
    for (const auto &size : std::filesystem::directory_iterator("/sys/kernel/mm/hugepages", ec)) {
        std::ifstream in(size.path() / "free_hugepages");
        uint64_t n = 0;
        if (in >> n) {
            free_pages += n;
        }
    }
    if (free_pages == 0) {
        return "no free hugepages on this machine (free_hugepages is 0 for every size in /sys/kernel/mm/hugepages): " +
               fix;
    }
    // --in-memory takes its pages without a mount.
    std::ifstream mounts("/proc/mounts");
    std::string device, mount_point, type;
    bool mounted = false;
    while (!mounted && mounts >> device >> mount_point >> type) {
        mounted = type == "hugetlbfs";
        mounts.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
    }
    if (!mounted && !has("--in-memory", std::string_view("--i").size())) { // --iova-mode
        return "no hugetlbfs is mounted (none in /proc/mounts): " + fix;
    }
    return {};
}

} // namespace

std::string eal_arguments_problem(const HostConfig &cfg, const std::string &program)
{
    std::vector<std::string> args = eal_arguments(cfg, program);
    // getopt stops at "--": the --help after it would end nothing, and the
    // child would go on to start the EAL.
    if (std::find(args.begin() + 1, args.end(), "--") != args.end()) {
        return {};
    }
    args.push_back("--help");
    int said_pipe[2];
    if (::pipe2(said_pipe, O_CLOEXEC) != 0) {
        throw Error(fmt::format("checking [eal] args: pipe: {}", std::strerror(errno)));
    }
    // The child's exit flushes whatever the parent's streams (a log file's)
    // hold: flushed now, nothing is written twice.
    spdlog::apply_all([](const std::shared_ptr<spdlog::logger> &logger) { logger->flush(); });
    std::fflush(nullptr);
    const pid_t child = ::fork();
    if (child < 0) {
        const int err = errno;
        ::close(said_pipe[0]);
        ::close(said_pipe[1]);
        throw Error(fmt::format("checking [eal] args: fork: {}", std::strerror(err)));
    }
    if (child == 0) {
        // --help's usage text goes nowhere; what the EAL says of an argument
        // (on stderr) comes back through the pipe.
        const int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null_fd >= 0) {
            ::dup2(null_fd, STDOUT_FILENO);
        }
        ::dup2(said_pipe[1], STDERR_FILENO);
        std::vector<char *> argv = argv_of(args);
        rte_eal_init(static_cast<int>(args.size()), argv.data()); // exits 0 at --help when all before it parsed
        ::_exit(1);
    }
    ::close(said_pipe[1]);
    std::string said;
    constexpr std::size_t max_said = 64 * 1024;
    constexpr int deadline_ms = 30'000; // a parse takes milliseconds
    bool timed_out = false;
    for (char buf[4096];;) {
        pollfd pfd{said_pipe[0], POLLIN, 0};
        const int ready = ::poll(&pfd, 1, deadline_ms);
        if (ready == 0) {
            timed_out = true;
            ::kill(child, SIGKILL);
            break;
        }
        if (ready < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        const ssize_t n = ::read(said_pipe[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        if (said.size() < max_said) { // past that, drained so the child can finish
            said.append(buf, std::min(static_cast<std::size_t>(n), max_said - said.size()));
        }
    }
    ::close(said_pipe[0]);
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (timed_out) {
        return fmt::format("DPDK's EAL did not finish reading them within {} s", deadline_ms / 1000);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        return hugepages_problem(args);
    }
    // What it said of the arguments, without what it says of every start
    // ("EAL: Detected ...") or of every refusal ("Invalid 'command line'
    // arguments.").
    std::string why;
    std::size_t start = 0;
    while (start < said.size()) {
        std::size_t end = said.find('\n', start);
        if (end == std::string::npos) {
            end = said.size();
        }
        const std::string_view line(said.data() + start, end - start);
        start = end + 1;
        if (line.empty() || line.starts_with("EAL: Detected") ||
            line.find("Invalid 'command line' arguments") != std::string_view::npos ||
            why.find(line) != std::string::npos) { // getopt's complaint comes once per pass over them
            continue;
        }
        why += why.empty() ? "" : "; ";
        why += line;
    }
    if (!why.empty()) {
        return why;
    }
    return WIFSIGNALED(status) ? fmt::format("DPDK's EAL died of signal {} reading them", WTERMSIG(status))
                               : "DPDK's EAL refused them";
}

void stop_eal()
{
    // The EAL leaves its runtime directory (<run>/dpdk/<file-prefix>) behind,
    // empty with --no-shconf: one more for every prefix a host ran with.
    // Removed only when empty; with a shared config it holds what the EAL
    // left for its next start, as it always has.
    const std::string runtime_dir = rte_eal_get_runtime_dir();
    rte_eal_cleanup();
    if (!runtime_dir.empty()) {
        ::rmdir(runtime_dir.c_str());
    }
}

void start_eal(const HostConfig &cfg, const std::string &program)
{
    std::vector<std::string> args = eal_arguments(cfg, program);
    std::vector<char *> argv = argv_of(args);
    std::string joined;
    for (const auto &arg : args) {
        joined += " " + arg;
    }
    spdlog::info("starting DPDK EAL:{}", joined);
    if (rte_eal_init(static_cast<int>(args.size()), argv.data()) < 0) {
        int err = rte_errno;
        std::string hint;
        switch (err) {
        case EACCES:
            // What the EAL says when it finds no hugepages: as root, that is
            // the likelier cause.
            hint = ::geteuid() == 0
                       ? "no hugepages to use (none reserved, or no hugetlbfs mounted): " + std::string(hugepages_fix)
                       : "run as root, or give the user access to hugepages and devices";
            break;
        case EALREADY:
            hint = "EAL is already initialised in this process";
            break;
        case ENOMEM:
            hint = "no memory: " + std::string(hugepages_fix);
            break;
        case EEXIST:
        case EBUSY:
            hint = "another DPDK process uses the same --file-prefix; give each host its own";
            break;
        default:
            hint = "check the [eal] args in " + cfg.file + " (see dpdk-testpmd --help for EAL options)";
            break;
        }
        throw Error("DPDK EAL start-up failed (" + std::string(rte_strerror(err)) + "): " + hint);
    }
}

rte_mempool *create_mbuf_pool(const HostConfig &cfg)
{
    rte_mempool *pool =
        rte_pktmbuf_pool_create("serpens_mbufs", cfg.mbufs, cfg.mbuf_cache, 0,
                                static_cast<uint16_t>(cfg.mbuf_data_room), static_cast<int>(rte_socket_id()));
    if (pool == nullptr) {
        throw Error("cannot create the mbuf pool of " + std::to_string(cfg.mbufs) + " mbufs (" +
                    rte_strerror(rte_errno) + "): lower [mempool] mbufs or give EAL more memory (-m)");
    }
    return pool;
}

std::vector<Port> start_ports(const HostConfig &cfg, rte_mempool *pool, uint16_t wanted_tx_queues,
                              uint16_t wanted_rx_queues)
{
    std::vector<Port> ports;
    for (const PortConfig &pc : cfg.ports) {
        Port port;
        port.name = pc.name;
        std::string name = device_name(pc.device);
        if (rte_eth_dev_get_port_by_name(name.c_str(), &port.id) != 0) {
            throw ConfigError(cfg.file, pc.line, 0,
                              "port '" + pc.name + "': no DPDK device '" + name +
                                  "' (for a NIC: bind it to vfio-pci with dpdk-devbind.py and drop "
                                  "--no-pci; for a vdev: check the driver name and its arguments)");
        }
        rte_eth_dev_info info{};
        if (int rc = rte_eth_dev_info_get(port.id, &info); rc != 0) {
            throw Error("port '" + pc.name + "': cannot read device info: " + rte_strerror(-rc));
        }
        port.tx_queues = std::max<uint16_t>(1, std::min<uint16_t>(wanted_tx_queues, info.max_tx_queues));
        const uint16_t rx_wanted = pc.rx_queues != 0 ? pc.rx_queues : wanted_rx_queues;
        port.rx_queues = std::max<uint16_t>(1, std::min<uint16_t>(rx_wanted, info.max_rx_queues));
        if (pc.rx_queues > info.max_rx_queues) {
            throw ConfigError(cfg.file, pc.line, 0,
                              "port '" + pc.name + "': rx_queues = " + std::to_string(pc.rx_queues) + ", but " +
                                  info.driver_name + " offers " + std::to_string(info.max_rx_queues) +
                                  " (net_pcap: one per rx_pcap; net_af_packet: qpairs)");
        }
        rte_eth_conf conf{};
        std::vector<uint8_t> rss_key;
        if (port.rx_queues > 1 && info.flow_type_rss_offloads != 0) {
            symmetric_rss(info, conf, rss_key);
        }
        // With RSS buckets the table is written before the port starts, so
        // no flow's packets arrive on one queue and then another.
        const bool bucket_table = !rss_key.empty() && net::bucket_hash() == net::BucketHash::rss;
        if (int rc = rte_eth_dev_configure(port.id, port.rx_queues, port.tx_queues, &conf); rc != 0) {
            throw Error("port '" + pc.name + "': configure failed: " + rte_strerror(-rc));
        }
        uint16_t rx_desc = pc.rx_descriptors;
        uint16_t tx_desc = pc.tx_descriptors;
        rte_eth_dev_adjust_nb_rx_tx_desc(port.id, &rx_desc, &tx_desc);
        int socket = rte_eth_dev_socket_id(port.id);
        for (uint16_t q = 0; q < port.rx_queues; ++q) {
            if (int rc = rte_eth_rx_queue_setup(port.id, q, rx_desc, socket, nullptr, pool); rc != 0) {
                throw Error("port '" + pc.name + "': RX queue set-up failed: " + rte_strerror(-rc) +
                            " (too few mbufs? raise [mempool] mbufs)");
            }
        }
        for (uint16_t q = 0; q < port.tx_queues; ++q) {
            if (int rc = rte_eth_tx_queue_setup(port.id, q, tx_desc, socket, nullptr); rc != 0) {
                throw Error("port '" + pc.name + "': TX queue set-up failed: " + rte_strerror(-rc));
            }
        }
        if (bucket_table) {
            port.rss_table = write_bucket_table(pc.name, port.id, info.reta_size, port.rx_queues);
        }
        if (int rc = rte_eth_dev_start(port.id); rc != 0) {
            throw Error("port '" + pc.name + "': start failed: " + rte_strerror(-rc));
        }
        if (pc.promiscuous) {
            rte_eth_promiscuous_enable(port.id); // vdevs may not support it; harmless
        }
        spdlog::info("port '{}' is DPDK port {} ({}; {} RX queue(s){}, {} TX queue(s))", pc.name, port.id,
                     info.driver_name, port.rx_queues,
                     rss_key.empty()          ? ""
                     : port.rss_table.empty() ? " by symmetric RSS"
                                              : " by symmetric RSS, its redirection table following the buckets",
                     port.tx_queues);
        ports.push_back(port);
    }
    return ports;
}

void stop_ports(const std::vector<Port> &ports) noexcept
{
    for (const Port &port : ports) {
        rte_eth_dev_stop(port.id);
        rte_eth_dev_close(port.id); // net_pcap flushes its output file here
    }
}

} // namespace serpens::io
