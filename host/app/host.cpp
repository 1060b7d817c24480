#include "app/host.h"

#include "app/control_commands.h"
#include "app/peers.h"
#include "app/reload.h"
#include "app/stats.h"

#include "chain/compiled.h"
#include "chain/runtime.h"
#include "config/host_config.h"
#include "config/eal_lcores.h"
#include "core/clock.h"
#include "control/server.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/private_dir.h"
#include "instance/dataplane.h"
#include "instance/manager.h"
#include "metering/meter.h"
#include "io/gateway.h"
#include "io/mbuf.h"
#include "io/port.h"
#include "metrics/endpoint.h"
#include "net/parse.h"
#include "plugin/host_api.h"
#include "plugin/registry.h"
#include "state/executor.h"
#include "state/segment_file.h"

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>

#include <nlohmann/json.hpp>
#include <spdlog/fmt/ranges.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>
#include <unistd.h>
#include <map>
#include <set>

namespace serpens {
namespace {

std::atomic<Dataplane *> running_dataplane{nullptr};

void on_signal(int)
{
    // Only an atomic store: async-signal-safe.
    if (Dataplane *dp = running_dataplane.load()) {
        dp->stop();
    }
}

// Where a chain's instances run at the start, and where it may scale to.
struct Placement {
    std::string chain;
    uint32_t count = 1;                 // 0: parked (one instance, held) until a packet comes
    std::vector<unsigned> lcores;       // of each started instance (one even at count 0)
    std::vector<unsigned> scale_lcores; // [[instance]] lcores: where new ones go; empty: any worker
};

// Where each instance runs.  The same for `--check` (lcores read from the EAL
// args) and a start (lcores the EAL reports), so a config --check accepts
// places the same way when it starts.
std::vector<Placement> plan_instances(const HostConfig &cfg, const ChainSet &loaded, const LcoreSet &lcores)
{
    std::vector<Placement> plan;
    std::set<std::string> placed;
    // A chain without a placement runs on the first worker lcore, or in place
    // on the main lcore when the EAL gives no other.
    const unsigned default_lcore = lcores.first_worker().value_or(lcores.main);
    for (const InstanceConfig &ic : cfg.instances) {
        if (loaded.tag_of.count(ic.chain) == 0) {
            throw ConfigError(cfg.file, ic.line, 0,
                              "[[instance]]: unknown chain '" + ic.chain + "' (no chain of that name in " +
                                  cfg.chains_dir + ")");
        }
        if (!placed.insert(ic.chain).second) {
            throw ConfigError(cfg.file, ic.line, 0, "[[instance]]: chain '" + ic.chain + "' is placed twice");
        }
        for (unsigned lcore : ic.lcores) {
            if (!lcores.has(lcore)) {
                throw ConfigError(cfg.file, ic.line, 0,
                                  "[[instance]] of chain '" + ic.chain + "': lcore " + std::to_string(lcore) +
                                      " is not enabled (the EAL args give " + lcores.describe() +
                                      "; add it to -l in [eal] args)");
            }
        }
        Placement p{ic.chain, ic.count, {}, {ic.lcores.begin(), ic.lcores.end()}};
        for (uint32_t i = 0; i < std::max<uint32_t>(ic.count, 1); ++i) {
            p.lcores.push_back(ic.lcores.empty() ? default_lcore : ic.lcores.size() == 1 ? ic.lcores[0] : ic.lcores[i]);
        }
        plan.push_back(std::move(p));
    }
    for (const GatewayRuleConfig &rule : cfg.rules) {
        if (placed.insert(rule.chain).second && loaded.tag_of.count(rule.chain) != 0) {
            plan.push_back({rule.chain, 1, {default_lcore}, {}});
        }
    }
    for (const AutoscaleChainConfig &a : cfg.autoscale.chains) {
        if (std::none_of(plan.begin(), plan.end(), [&](const Placement &p) { return p.chain == a.chain; })) {
            throw ConfigError(cfg.file, a.line, 0,
                              "[[autoscale.chain]]: chain '" + a.chain +
                                  "' runs nowhere (give it an [[instance]] or a gateway rule)");
        }
    }
    return plan;
}

std::size_t instance_count(const std::vector<Placement> &plan)
{
    std::size_t n = 0;
    for (const Placement &p : plan) {
        n += p.lcores.size();
    }
    return n;
}

LcoreSet lcores_of_eal()
{
    LcoreSet set;
    set.main = rte_get_main_lcore();
    for (unsigned id = 0; id < RTE_MAX_LCORE; ++id) {
        if (rte_lcore_is_enabled(id) != 0) {
            set.enabled.insert(id);
        }
    }
    return set;
}

// A thread of the host's own control work, on the CPUs the EAL leaves to
// control work, so it never preempts a worker.
class ControlThread {
public:
    // Runs `step` over and over on a DPDK control thread named `name` until
    // destroyed; each step waits (sleeps, polls) for its own period, which
    // is how soon a stopping host is noticed.  Throws Error naming `what`.
    ControlThread(const char *name, const char *what, std::function<void()> step) : _step(std::move(step))
    {
        if (int rc = rte_ctrl_thread_create(&_thread, name, nullptr, &ControlThread::loop, this); rc != 0) {
            throw Error(std::string("cannot start the ") + what + " thread: " + std::strerror(rc < 0 ? -rc : rc));
        }
    }
    ~ControlThread()
    {
        _running.store(false);
        pthread_join(_thread, nullptr);
    }
    ControlThread(const ControlThread &) = delete;
    ControlThread &operator=(const ControlThread &) = delete;

private:
    static void *loop(void *self_ptr)
    {
        auto *self = static_cast<ControlThread *>(self_ptr);
        while (self->_running.load(std::memory_order_relaxed)) {
            self->_step();
        }
        return nullptr;
    }

    std::function<void()> _step;
    std::atomic<bool> _running{true};
    pthread_t _thread{};
};

// The services every NF of this host gets, packets being DPDK mbufs.
const serpens_host_api *host_api()
{
    static const serpens_host_api api = make_host_api(io::mbuf_packet_ops());
    return &api;
}

io::Gateway make_gateway(const HostConfig &cfg, const ChainSet &loaded)
{
    auto port_index = [&](const std::string &name) -> int32_t {
        for (std::size_t i = 0; i < cfg.ports.size(); ++i) {
            if (cfg.ports[i].name == name) {
                return static_cast<int32_t>(i);
            }
        }
        return -1;
    };
    auto chain_tag = [&](const std::string &name) -> int32_t {
        auto it = loaded.tag_of.find(name);
        return it == loaded.tag_of.end() ? -1 : static_cast<int32_t>(it->second);
    };
    return io::Gateway(cfg, chain_tag, port_index);
}

// Chains' flow tables in `store`, sized and timed as host.toml says.
FlowTableResolver flow_tables(const HostConfig &cfg, state::StateStore &store)
{
    return [&cfg, &store](state::FlowTableSpec spec, bool &first) {
        spec.capacity = cfg.flow_capacity;
        double idle_s = cfg.flow_idle_s;
        std::string full = cfg.flow_full;
        for (const InstanceConfig &inst : cfg.instances) {
            if (inst.chain == spec.chain) {
                spec.capacity = inst.flow_capacity.value_or(spec.capacity);
                idle_s = inst.flow_idle_s.value_or(idle_s);
                full = inst.flow_full.value_or(full);
            }
        }
        spec.idle_timeout_ns = static_cast<uint64_t>(idle_s * 1e9);
        state::FlowTable &table = store.flow_table(std::move(spec), first);
        table.set_drops_when_full(full == "drop");
        return &table;
    };
}

// `--check`: every instance a start would run is created, which runs each
// NF's init against throw-away state, then destroyed (fini).  No port opens.
void start_and_stop_instances(const HostConfig &cfg, const ChainSet &loaded, const std::vector<Placement> &plan)
{
    namespace fs = std::filesystem;
    // Beside the real state, on the same filesystem: a table that would not
    // fit there fails here too, with the same message.
    fs::path base = fs::path(cfg.state_dir).parent_path();
    std::error_code ec;
    fs::create_directories(base, ec);
    std::string dir_template = (base / ("." + cfg.id + ".check-XXXXXX")).string();
    if (mkdtemp(dir_template.data()) == nullptr) {
        throw Error("--check: cannot create throw-away state in " + base.string() + ": " + std::strerror(errno));
    }
    struct RemoveOnExit {
        fs::path path;
        ~RemoveOnExit()
        {
            std::error_code ignored;
            fs::remove_all(path, ignored);
        }
    } scratch{dir_template};
    // What a start would refuse (core/private_dir.h): the directories above
    // the state, which the scratch shares, and the state's own if it exists.
    std::string why = private_directory_problem(scratch.path);
    if (why.empty() && fs::exists(cfg.state_dir, ec)) {
        why = private_directory_problem(cfg.state_dir);
    }
    if (!why.empty()) {
        throw Error("[host] state_dir " + cfg.state_dir + " is not the host's alone: " + why);
    }

    state::StoreOptions store_options;
    store_options.root = scratch.path;
    store_options.host_id = cfg.id;
    state::StateStore store(store_options);
    ExecutorResolver executors = [&store](const std::string &chain, const std::string &nf) {
        return &store.executor(chain, nf);
    };
    const FlowTableResolver flows = flow_tables(cfg, store);
    std::vector<std::unique_ptr<ChainInstance>> instances; // all at once, as a start has them
    for (const Placement &p : plan) {
        for (uint32_t i = 0; i < p.lcores.size(); ++i) {
            instances.push_back(std::make_unique<ChainInstance>(loaded.chains[loaded.tag_of.at(p.chain)], i, host_api(),
                                                                executors, std::chrono::milliseconds(cfg.init_warn_ms),
                                                                flows));
        }
    }
    instances.clear(); // fini, in reverse chain order per instance
}

// Logs go to stderr, where journald takes them under systemd, and also to
// `file` when set (appended).  Throws Error when the file cannot be opened.
void log_to(const std::string &file)
{
    std::vector<spdlog::sink_ptr> sinks{std::make_shared<spdlog::sinks::stderr_color_sink_mt>()};
    if (!file.empty()) {
        try {
            sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(file));
        } catch (const spdlog::spdlog_ex &e) {
            throw Error("cannot open [host] log_file " + file + ": " + e.what());
        }
    }
    auto logger = std::make_shared<spdlog::logger>("serpens", sinks.begin(), sinks.end());
    logger->set_level(spdlog::get_level());
    spdlog::set_default_logger(std::move(logger));
}

// SIGHUP asks for a reload.  It is blocked in every thread (install_signal_
// handlers runs before any thread starts, and threads inherit the mask) and
// taken by this step of a control thread with sigtimedwait, so the reload
// runs on an ordinary thread, never inside a signal handler.
void reload_on_hangup(Reloader &reloader)
{
    sigset_t hangup;
    sigemptyset(&hangup);
    sigaddset(&hangup, SIGHUP);
    const timespec wait{0, 200'000'000}; // how soon a stopping host notices
    if (sigtimedwait(&hangup, nullptr, &wait) != SIGHUP) {
        return;
    }
    spdlog::info("SIGHUP: reloading chains and plugins");
    try {
        reloader.reload();
    } catch (const std::exception &e) { // an Error, or anything else: the running chains stay
        spdlog::error("SIGHUP: {}", e.what());
    }
}

void install_signal_handlers()
{
    // A peer that goes away (a control client, a pipe) is an error to handle
    // where it happens, never a reason for the data plane to die.
    std::signal(SIGPIPE, SIG_IGN);
    sigset_t hangup;
    sigemptyset(&hangup);
    sigaddset(&hangup, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &hangup, nullptr);
    fault::install_fault_handlers("serpens-host");
}

} // namespace

int run_host(const HostOptions &options)
{
    install_signal_handlers();
    log_to("");
    HostConfig cfg;
    std::shared_ptr<const ChainSet> chain_set;
    std::vector<Placement> plan;
    try {
        cfg = load_host_config(options.config_path);
        const std::filesystem::path config_dir = std::filesystem::path(cfg.file).parent_path();
        if (std::string why = config_directory_problem(config_dir.empty() ? "." : config_dir, false); !why.empty()) {
            throw ConfigError(cfg.file, "others could replace it: " + why);
        }
        spdlog::set_level(spdlog::level::from_str(options.log_level.empty() ? cfg.log_level : options.log_level));
        if (!options.check_only) {
            if (!cfg.log_file.empty()) {
                check_output_file(cfg.log_file, "[host] log_file");
            }
            log_to(cfg.log_file);
            if (!options.stats_json.empty()) {
                check_output_file(options.stats_json, "--stats-json");
            }
            // Before anything is kept there: the bills, leases and tables
            // the host writes and maps (core/private_dir.h says why).
            make_private_directory(cfg.state_dir, "[host] state_dir");
            if (const std::string note = state::small_pages_note(cfg.state_dir); !note.empty()) {
                spdlog::info("{}", note);
            }
        }
        chain_set = load_chain_set(cfg);
        const ChainSet &loaded = *chain_set;
        for (const auto &chain : loaded.chains) {
            egress_port_of(cfg, *chain);
        }
        for (const GatewayRuleConfig &rule : cfg.rules) {
            if (loaded.tag_of.count(rule.chain) == 0) {
                throw ConfigError(cfg.file, rule.line, 0,
                                  "[[gateway.rule]] '" + rule.name + "': unknown chain '" + rule.chain +
                                      "' (no chain of that name in " + cfg.chains_dir + ")");
            }
        }
        plan = plan_instances(cfg, loaded, lcores_of_eal_args(cfg.eal_args, cfg.file));
        for (const auto &chain_tag : loaded.tag_of) {
            const std::string &name = chain_tag.first; // a named variable: lambdas capture no binding before clang 16
            if (std::none_of(plan.begin(), plan.end(), [&](const Placement &p) { return p.chain == name; })) {
                // A chains directory is a library: unused chains are normal.
                spdlog::info("chain '{}' has neither a gateway rule nor an [[instance]]: it runs nowhere", name);
            }
        }
        make_gateway(cfg, loaded); // its rules' prefixes and ports
        // For --check, and for a start too: a refused argument in one line,
        // where rte_eal_init would bury it in its usage text.  After the
        // checks that say more (the lcore list above), before any thread
        // starts: it forks.
        if (std::string why = io::eal_arguments_problem(cfg, "serpens-host"); !why.empty()) {
            throw ConfigError(cfg.file, "[eal] args (with a --vdev or --allow for each [[port]]): " + why);
        }
        if (options.check_only) {
            start_and_stop_instances(cfg, loaded, plan);
        }
    } catch (const std::exception &e) { // an Error, or a library's on input it did not expect
        std::fprintf(stderr, "serpens-host: %s\n", e.what());
        return 2;
    }
    const ChainSet &loaded = *chain_set;
    if (options.check_only) {
        std::printf("%s: OK — %zu plugin(s), %zu chain(s), %zu port(s), %zu gateway rule(s), %zu instance(s) "
                    "started and stopped\n",
                    cfg.file.c_str(), loaded.plugins->size(), loaded.chains.size(), cfg.ports.size(), cfg.rules.size(),
                    instance_count(plan));
        for (const auto &chain : loaded.chains) {
            std::printf("  chain %s\n", chain->describe().c_str());
        }
        return loaded.plugins->refusals().empty() ? 0 : 1;
    }

    int exit_code = 0;
    std::vector<io::Port> ports;
    try {
        // Before any packet or flow table is hashed.
        net::set_bucket_hash(cfg.bucket_hash == "rss" ? net::BucketHash::rss : net::BucketHash::crc32c);
        io::start_eal(cfg, "serpens-host");
        io::register_packet_meta();
        rte_mempool *pool = io::create_mbuf_pool(cfg);
        // The EAL has the last word on lcores (it may refuse what the args name).
        plan = plan_instances(cfg, loaded, lcores_of_eal());
        std::vector<unsigned> instance_lcores;
        for (const Placement &p : plan) {
            instance_lcores.insert(instance_lcores.end(), p.lcores.begin(), p.lcores.end());
        }
        // Every enabled lcore may run instances (scaling places them at run
        // time), so each gets a TX queue where the port has enough.
        const LcoreSet enabled = lcores_of_eal();
        const auto receivers = Dataplane::receiving_lcores(instance_lcores, rte_get_main_lcore());
        ports = io::start_ports(cfg, pool, static_cast<uint16_t>(enabled.enabled.size()),
                                static_cast<uint16_t>(receivers.size()));
        io::Gateway gateway = make_gateway(cfg, loaded);

        DataplaneOptions dp_options;
        dp_options.dispatch.burst = cfg.burst;
        dp_options.dispatch.drop_malformed = cfg.parse_malformed == "drop";
        dp_options.wake_deadline_us = cfg.wake_deadline_us;
        dp_options.idle_sleep_us = cfg.idle_sleep_us;
        dp_options.idle_exit_s = options.idle_exit_s;
        dp_options.duration_s = options.duration_s;
        dp_options.receivers = receivers;
        state::StoreOptions store_options;
        store_options.root = cfg.state_dir;
        store_options.host_id = cfg.id;
        state::StateStore store(store_options);
        ExecutorResolver executors = [&store](const std::string &chain, const std::string &nf) {
            return &store.executor(chain, nf);
        };
        const FlowTableResolver flows = flow_tables(cfg, store);
        {
            Dataplane dataplane(ports, std::move(gateway), dp_options);
            dataplane.wake_threshold().store(cfg.wake_threshold);
            // The chains that run here; a chain the directory holds but
            // nothing places gets no pool, no state and no scaling.
            std::vector<ManagedChain> managed;
            for (const Placement &p : plan) {
                const uint32_t tag = loaded.tag_of.at(p.chain);
                managed.push_back({p.chain, tag, egress_port_of(cfg, *loaded.chains[tag]),
                                   std::vector<unsigned>(p.scale_lcores.begin(), p.scale_lcores.end()),
                                   loaded.chains[tag]});
            }
            ManagerOptions manager_options;
            manager_options.pool = cfg.pool;
            manager_options.keep_warm_s = cfg.keep_warm_s;
            manager_options.ring_size = cfg.ring_size;
            manager_options.max_instances = store_options.max_instances;
            manager_options.autoscale = cfg.autoscale;
            auto manager = std::make_unique<InstanceManager>(
                dataplane, std::move(managed),
                [&](const std::shared_ptr<const CompiledChain> &chain, uint32_t index) {
                    return std::make_unique<ChainInstance>(chain, index, host_api(), executors,
                                                           std::chrono::milliseconds(cfg.init_warn_ms), flows);
                },
                manager_options);
            for (const Placement &p : plan) {
                manager->start(p.chain, p.count, p.lcores);
                spdlog::info("chain '{}': {} instance(s) on lcore(s) {}{}", p.chain, p.count, fmt::join(p.lcores, ","),
                             p.count == 0 ? " (parked until a packet comes)" : "");
            }
            // [peer]: the other hosts of this cluster and the underlay to
            // them (before prepare: dispatchers decapsulate); off when absent.
            std::map<std::string, uint32_t> running_chains;
            for (const Placement &p : plan) {
                running_chains.emplace(p.chain, loaded.tag_of.at(p.chain));
            }
            Cluster cluster(cfg, dataplane, *manager, store, std::move(running_chains));
            dataplane.prepare();
            // On the EAL's control CPUs, like the state manager: never where a
            // worker lcore polls.
            auto control_cpus = [](pthread_t *thread, void *(*body)(void *), void *arg) {
                return rte_ctrl_thread_create(thread, "serpens-ctl", nullptr, body, arg);
            };
            ControlServerOptions control_options;
            control_options.path = cfg.control_socket;
            control_options.group = cfg.control_gid;
            control_options.start_thread = control_cpus;
            // Bills: the usage ledger in the state dir, sampled every second.
            metering::Meter meter(*manager, std::filesystem::path(cfg.state_dir) / "usage.jsonl");
            meter.start_thread([](pthread_t *thread, void *(*body)(void *), void *arg) {
                return rte_ctrl_thread_create(thread, "serpens-meter", nullptr, body, arg);
            });
            Reloader reloader(cfg, *manager, chain_set);
            ControlCommands commands(
                dataplane, *manager, meter, reloader,
                HostIdentity{cfg.id, cfg.file, cfg.state_dir, cfg.control_socket, cfg.plugin_dir, cfg.chains_dir},
                cluster);
            ControlServer control(
                std::move(control_options),
                [&commands](std::string_view line, const ControlPeer &peer) { return commands.handle(line, peer); });
            // [metrics] listen: the Prometheus endpoint, on a control CPU too; off when absent.
            auto metrics_endpoint = metrics::start_endpoint(cfg, dataplane, *manager, store, cluster.service());
            manager->start_thread([](pthread_t *thread, void *(*body)(void *), void *arg) {
                return rte_ctrl_thread_create(thread, "serpens-inst", nullptr, body, arg);
            });
            running_dataplane.store(&dataplane);
            std::signal(SIGINT, on_signal);
            std::signal(SIGTERM, on_signal);
            ControlThread hangup("serpens-hup", "reload", [&reloader] { reload_on_hangup(reloader); });
            ControlThread peer_watch("serpens-peers", "peer liveness", [&cluster] {
                cluster.tick();
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
            });
            {
                // The state manager's clock: timers, triggers, idle-flow
                // expiry.  5 ms: fine enough for ms-scale timers and deferred
                // triggers; at 1 ms this thread alone cost an idle host 1.2%
                // of a core.
                ControlThread state_manager("serpens-state", "state manager", [&store] {
                    store.tick(monotonic_ns());
                    std::this_thread::sleep_for(std::chrono::milliseconds(5));
                });
                spdlog::info("serpens-host '{}' running; SIGINT or SIGTERM stops it, SIGHUP reloads chains and plugins",
                             cfg.id);
                dataplane.run();
                // No packet runs any more: NFs fold what their flows hold.
                manager->visit_flows_at_stop(monotonic_ns());
            }
            meter.stop(); // the lcores are done: the ledger gets their last packets
            const std::vector<ChainSummary> chains = manager->chain_summaries();
            running_dataplane.store(nullptr);
            // Scrapes read the ports' counters: none once they close.
            metrics_endpoint.reset();
            io::stop_ports(ports); // flushes pcap output before anyone reads it
            ports.clear();
            print_stats(dataplane, stdout);
            if (!options.stats_json.empty()) {
                // Names come from config files and plugins: invalid UTF-8 is replaced.
                std::ofstream out(options.stats_json);
                out << stats_json(dataplane, chains, false)
                           .dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace)
                    << "\n";
                out.close();
                if (!out) {
                    spdlog::error("--stats-json {}: could not write the counters: {}", options.stats_json,
                                  std::strerror(errno));
                    exit_code = 1;
                }
            }
        } // chain instances are finalized here, after the lcores stopped
    } catch (const ConfigError &e) {
        std::fprintf(stderr, "serpens-host: %s\n", e.what());
        exit_code = 2;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "serpens-host: %s\n", e.what());
        exit_code = 1;
    }
    io::stop_ports(ports);
    io::stop_eal();
    return exit_code;
}

} // namespace serpens
