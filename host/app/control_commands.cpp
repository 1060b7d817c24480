#include "app/control_commands.h"

#include "app/peers.h"
#include "app/reload.h"
#include "app/stats.h"
#include "chain/compiled.h"
#include "control/protocol.h"
#include "control/request.h"
#include "core/error.h"
#include "core/version.h"
#include "instance/dataplane.h"
#include "instance/manager.h"
#include "metering/meter.h"
#include "plugin/registry.h"

#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <ctime>

namespace serpens {

using nlohmann::ordered_json;

namespace {

std::string iso_time(std::chrono::system_clock::time_point t)
{
    const std::time_t secs = std::chrono::system_clock::to_time_t(t);
    std::tm utc{};
    gmtime_r(&secs, &utc);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
    return text;
}

double seconds_since(std::chrono::system_clock::time_point t)
{
    return std::chrono::duration<double>(std::chrono::system_clock::now() - t).count();
}

ordered_json scale_result(const ScaleResult &r)
{
    ordered_json instances = ordered_json::array();
    for (const auto &[index, lcore] : r.instances) {
        instances.push_back({{"index", index}, {"lcore", lcore}});
    }
    return {
        {"chain", r.chain},
        {"before", r.before},
        {"after", r.after},
        {"moved_buckets", r.moved},
        {"pause_us", static_cast<double>(r.pause_ns) / 1e3},
        {"from_pool", r.from_pool},
        {"cold", r.cold},
        {"launch_us", static_cast<double>(r.launch_ns) / 1e3},
        {"instances", std::move(instances)},
    };
}

ordered_json reload_result(const ReloadReport &r)
{
    ordered_json swaps = ordered_json::array();
    for (const ReplaceResult &s : r.swaps) {
        swaps.push_back({{"chain", s.chain},
                         {"instances", s.replaced},
                         {"moved_buckets", s.moved},
                         {"pause_us", static_cast<double>(s.pause_ns) / 1e3}});
    }
    return {
        {"reloaded", r.reloaded},
        {"updated", r.updated},
        {"added", r.added},
        {"removed", r.removed},
        {"unchanged", r.unchanged},
        {"plugins_changed", r.plugins_changed},
        {"files_changed", r.files_changed},
        {"plugin_refusals", r.refusals},
        {"swaps", std::move(swaps)},
        {"took_ms", static_cast<double>(r.took_ns) / 1e6},
    };
}

ordered_json drain_result(const DrainResult &r)
{
    ordered_json moves = ordered_json::array();
    for (const DrainResult::Move &m : r.moves) {
        moves.push_back({{"chain", m.chain},
                         {"from_index", m.from_index},
                         {"from_lcore", m.from_lcore},
                         {"to_index", m.to_index},
                         {"to_lcore", m.to_lcore}});
    }
    return {{"drained", r.drained},
            {"moves", std::move(moves)},
            {"moved_buckets", r.moved},
            {"pause_us", static_cast<double>(r.pause_ns) / 1e3}};
}

std::string iso_time(int64_t unix_s)
{
    return iso_time(std::chrono::system_clock::time_point(std::chrono::seconds(unix_s)));
}

ordered_json bill_result(const metering::Bill &bill)
{
    ordered_json chains = ordered_json::object();
    for (const auto &[name, used] : bill.chains) {
        ordered_json nfs = ordered_json::object();
        for (const auto &[nf, n] : used.nfs) {
            nfs[nf] = metering::nf_json(n);
        }
        chains[name] = {{"packets", used.packets},       {"bytes", used.bytes},   {"dropped", used.dropped},
                        {"instance_s", used.instance_s}, {"busy_s", used.busy_s}, {"nfs", std::move(nfs)}};
    }
    return {{"from", iso_time(bill.from_s)},
            {"to", iso_time(bill.to_s)},
            {"from_s", bill.from_s},
            {"to_s", bill.to_s},
            {"chains", std::move(chains)}};
}

// The level by the names host.toml and log_level take (spdlog says
// "warning" and "critical").
std::string log_level_name()
{
    switch (spdlog::get_level()) {
    case spdlog::level::trace:
        return "trace";
    case spdlog::level::debug:
        return "debug";
    case spdlog::level::info:
        return "info";
    case spdlog::level::warn:
        return "warn";
    case spdlog::level::err:
    case spdlog::level::critical:
        return "error";
    default:
        return "off";
    }
}

std::string who(const ControlPeer &peer)
{
    return "the control socket (pid " + std::to_string(peer.pid) + ", uid " + std::to_string(peer.uid) + ")";
}

} // namespace

ControlCommands::ControlCommands(Dataplane &dataplane, InstanceManager &manager, metering::Meter &meter,
                                 Reloader &reloader, HostIdentity identity, Cluster &cluster)
    : _dp(dataplane), _manager(manager), _meter(meter), _reloader(reloader), _identity(std::move(identity)),
      _cluster(cluster), _cleared(ordered_json::object()), _cleared_at(_identity.started)
{}

ordered_json ControlCommands::live_stats() const
{
    const std::vector<ChainSummary> chains = _manager.chain_summaries();
    return _manager.locked([&] { return stats_json(_dp, chains, true); });
}

ordered_json ControlCommands::status() const
{
    ordered_json summary = ordered_json::object();
    for (const ChainSummary &chain : _manager.chain_summaries()) {
        summary[chain.name] = {{"instances", chain.active},
                               {"parked", chain.parked},
                               {"pooled", chain.pooled},
                               {"packets", chain.metered}};
    }
    ordered_json lcores = ordered_json::array();
    for (const Dataplane::LcoreTotals &l : _dp.lcore_totals()) {
        lcores.push_back(l.id);
    }
    ordered_json ports = ordered_json::array();
    for (const auto &port : _dp.ports()) {
        ports.push_back(port.name);
    }
    return {
        {"id", _identity.id},
        {"version", SERPENS_VERSION},
        {"pid", getpid()},
        {"started", iso_time(_identity.started)},
        {"uptime_s", seconds_since(_identity.started)},
        {"config", _identity.config_file},
        {"state_dir", _identity.state_dir},
        {"control_socket", _identity.control_socket},
        {"plugin_dir", _identity.plugin_dir},
        {"chains_dir", _identity.chains_dir},
        {"log_level", log_level_name()},
        {"wake_threshold", _dp.wake_threshold().load()},
        {"lcores", std::move(lcores)},
        {"drained_lcores", _manager.drained()},
        {"ports", std::move(ports)},
        {"chains", std::move(summary)},
    };
}

ordered_json ControlCommands::chains() const
{
    const ordered_json runtime = chains_json(_manager.chain_summaries());
    ordered_json out = ordered_json::array();
    const std::shared_ptr<const ChainSet> set = _reloader.current();
    for (const auto &chain : set->chains) {
        if (chain == nullptr) {
            continue; // its file went away in a reload
        }
        ordered_json nfs = ordered_json::array();
        for (const CompiledNf &nf : chain->nfs) {
            nfs.push_back({{"name", nf.name}, {"plugin", nf.desc->name}, {"label", nf.label}, {"ports", nf.n_ports}});
        }
        auto live = runtime.find(chain->name);
        out.push_back({{"name", chain->name},
                       {"file", chain->file},
                       {"egress", chain->egress},
                       {"graph", chain->describe()},
                       {"nfs", std::move(nfs)},
                       {"runs", live != runtime.end()},
                       {"runtime", live != runtime.end() ? *live : ordered_json()}});
    }
    return out;
}

ordered_json ControlCommands::plugins() const
{
    ordered_json out = ordered_json::array();
    const std::shared_ptr<const ChainSet> set = _reloader.current();
    for (const std::string &name : set->plugins->names()) {
        const Plugin *plugin = set->plugins->find(name);
        const serpens_nf_descriptor &desc = plugin->descriptor();
        ordered_json used_by = ordered_json::array();
        for (const auto &chain : set->chains) {
            if (chain == nullptr) {
                continue;
            }
            for (const CompiledNf &nf : chain->nfs) {
                if (nf.plugin.get() == plugin) {
                    used_by.push_back(chain->name + "/" + nf.name);
                }
            }
        }
        out.push_back({{"name", name},
                       {"version", desc.version != nullptr ? desc.version : ""},
                       {"summary", desc.summary != nullptr ? desc.summary : ""},
                       {"abi", std::to_string(desc.abi_major) + "." + std::to_string(desc.abi_minor)},
                       {"file", plugin->path()},
                       {"used_by", std::move(used_by)}});
    }
    return out;
}

ordered_json ControlCommands::instances() const
{
    return _manager.locked([&] {
        ordered_json out = ordered_json::array();
        for (const auto &slot : _dp.slots()) {
            if (slot->state == SlotState::empty) {
                continue;
            }
            out.push_back(instance_json(*slot));
        }
        return out;
    });
}

std::string ControlCommands::handle(std::string_view line, const ControlPeer &peer)
{
    ParsedControlRequest parsed = parse_control_request(line);
    if (const auto *refused = std::get_if<ControlRequestError>(&parsed)) {
        return control_error_reply(refused->code, refused->message);
    }
    const ControlRequest &request = std::get<ControlRequest>(parsed);
    switch (request.verb) {
    case ControlVerb::ping:
        return control_ok_reply({{"pong", true}});
    case ControlVerb::version:
        return control_ok_reply(
            {{"host", SERPENS_VERSION},
             {"protocol", kControlProtocolVersion},
             {"plugin_abi", std::to_string(SERPENS_ABI_MAJOR) + "." + std::to_string(SERPENS_ABI_MINOR)}});
    case ControlVerb::status:
        return control_ok_reply(status());
    case ControlVerb::stats: {
        ordered_json stats = subtract_counters(live_stats(), _cleared);
        stats["since"] = iso_time(_cleared_at);
        stats["seconds"] = seconds_since(_cleared_at);
        return control_ok_reply(stats);
    }
    case ControlVerb::chains:
        return control_ok_reply(chains());
    case ControlVerb::plugins:
        return control_ok_reply(plugins());
    case ControlVerb::instances:
        return control_ok_reply(instances());
    case ControlVerb::clear:
        _cleared = live_stats();
        _cleared_at = std::chrono::system_clock::now();
        spdlog::info("counters cleared by {}", who(peer));
        return control_ok_reply({{"cleared", iso_time(_cleared_at)}});
    case ControlVerb::wake_threshold:
        if (request.set_threshold && *request.set_threshold > _manager.ring_capacity()) {
            return control_error_reply(ControlErrorCode::bad_request, "a wake threshold of " +
                                                                          std::to_string(*request.set_threshold) +
                                                                          " would never be reached: a ring holds " +
                                                                          std::to_string(_manager.ring_capacity()) +
                                                                          " packets ([instances] ring_size)");
        }
        if (request.set_threshold) {
            _dp.wake_threshold().store(*request.set_threshold);
            spdlog::info("wake_threshold set to {} by {}", *request.set_threshold, who(peer));
        }
        return control_ok_reply({{"wake_threshold", _dp.wake_threshold().load()}});
    case ControlVerb::log_level:
        if (request.set_level) {
            spdlog::info("log level set to {} by {}", *request.set_level, who(peer));
            spdlog::set_level(spdlog::level::from_str(*request.set_level));
        }
        return control_ok_reply({{"log_level", log_level_name()}});
    case ControlVerb::bill: {
        const metering::Bill bill = _meter.bill(request.since, request.chain);
        // An empty table would read as "used nothing": say what is wrong.
        if (request.since && *request.since > bill.to_s) {
            return control_error_reply(ControlErrorCode::bad_request, "bill's \"since\" (" + iso_time(*request.since) +
                                                                          ") is after now (" + iso_time(bill.to_s) +
                                                                          ")");
        }
        if (!request.chain.empty() && bill.chains.count(request.chain) == 0 &&
            _reloader.current()->find(request.chain) == nullptr) {
            return control_error_reply(ControlErrorCode::not_found,
                                       "no chain '" + request.chain + "' on this host, nor in its ledger");
        }
        return control_ok_reply(bill_result(bill));
    }
    case ControlVerb::peers:
        return control_ok_reply(_cluster.peers_json());
    case ControlVerb::reload:
        try {
            spdlog::info("reload requested by {}", who(peer));
            return control_ok_reply(reload_result(_reloader.reload(request.chains)));
        } catch (const Error &e) { // a ConfigError too: file:line of the invalid edit
            return control_error_reply(ControlErrorCode::refused, e.what());
        }
    case ControlVerb::drain:
        try {
            // Logged once done: a refused drain changed nothing.
            if (request.undo) {
                auto still = _manager.undrain(request.lcores);
                spdlog::info("lcore(s) {} undrained by {}",
                             request.lcores.empty() ? std::string("all")
                                                    : fmt::format("{}", fmt::join(request.lcores, ",")),
                             who(peer));
                return control_ok_reply({{"drained", std::move(still)}});
            }
            if (request.lcores.empty()) {
                return control_ok_reply({{"drained", _manager.drained()}});
            }
            const auto drained = _manager.drain(request.lcores);
            spdlog::info("lcore(s) {} drained by {}", fmt::join(request.lcores, ","), who(peer));
            return control_ok_reply(drain_result(drained));
        } catch (const Error &e) {
            return control_error_reply(ControlErrorCode::refused, e.what());
        }
    case ControlVerb::scale: {
        if (_reloader.current()->find(request.chain) == nullptr) {
            return control_error_reply(ControlErrorCode::not_found, "no chain '" + request.chain + "' on this host");
        }
        const ScaleTarget target{request.relative,
                                 request.negative ? -static_cast<int64_t>(request.value) : request.value};
        if (!request.peer.empty()) {
            spdlog::info("chain '{}' scale {}1 on peer '{}' by {}", request.chain, request.negative ? '-' : '+',
                         request.peer, who(peer));
            try {
                return control_ok_reply(request.negative ? _cluster.scale_in(request.chain, request.peer)
                                                         : _cluster.scale_out(request.chain, request.peer));
            } catch (const Error &e) {
                return control_error_reply(ControlErrorCode::refused, e.what());
            }
        }
        try {
            return control_ok_reply(scale_result(_manager.scale(request.chain, target, request.lcores, who(peer))));
        } catch (const Error &e) {
            return control_error_reply(ControlErrorCode::refused, e.what());
        }
    }
    }
    return control_error_reply(ControlErrorCode::internal, "unhandled request"); // keeps -Wreturn-type quiet
}

} // namespace serpens
