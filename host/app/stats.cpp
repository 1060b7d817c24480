#include "app/stats.h"

#include "instance/dataplane.h"
#include "instance/manager.h"
#include "io/gateway.h"
#include "io/port.h"
#include "net/parse.h"
#include "net/vxlan.h"

#include <rte_ethdev.h>

#include <algorithm>
#include <array>
#include <string_view>

namespace serpens {

using nlohmann::ordered_json;

void print_stats(const Dataplane &dp, std::FILE *out)
{
    const io::DispatchTotals c = dp.dispatch_totals();
    std::fprintf(out, "\n=== serpens-host counters ===\n");
    std::fprintf(out, "%-14s %14s %14s %12s %12s %14s\n", "port", "rx", "tx", "rx_missed", "tx_errors",
                 "tx_ring_drops");
    for (std::size_t p = 0; p < dp.ports().size(); ++p) {
        const Dataplane::PortTotals &totals = dp.port_totals()[p];
        std::fprintf(out, "%-14s %14lu %14lu %12lu %12lu %14lu\n", dp.ports()[p].name.c_str(),
                     static_cast<unsigned long>(c.rx[p]), static_cast<unsigned long>(totals.tx),
                     static_cast<unsigned long>(totals.rx_missed), static_cast<unsigned long>(totals.tx_errors),
                     static_cast<unsigned long>(dp.tx_ring_dropped(p)));
    }
    std::fprintf(out, "\nparser:");
    for (std::size_t r = 0; r < net::kParseResultCount; ++r) {
        uint64_t v = c.parse.by_result[r];
        if (v != 0) {
            std::fprintf(out, " %s=%lu", net::parse_result_name(static_cast<net::ParseResult>(r)),
                         static_cast<unsigned long>(v));
        }
    }
    std::fprintf(out, "\ndispatch:");
#define SERPENS_X(name) std::fprintf(out, " %s=%lu", #name, static_cast<unsigned long>(c.name));
    SERPENS_DISPATCH_COUNTERS(SERPENS_X)
#undef SERPENS_X
    std::fprintf(out, "\n");
    for (const Dataplane::LcoreTotals &l : dp.lcore_totals()) {
        if (!l.rx_queues.empty()) {
            std::fprintf(out, "lcore %u received %lu on %zu queue(s)\n", l.id, static_cast<unsigned long>(l.rx),
                         l.rx_queues.size());
        }
    }
    std::fprintf(out, "\n%-24s %14s\n", "gateway rule", "matched");
    for (std::size_t r = 0; r < dp.gateway().rules().size(); ++r) {
        std::fprintf(out, "%-24s %14lu\n", dp.gateway().rules()[r].name.c_str(),
                     static_cast<unsigned long>(c.rule_matched[r]));
    }
    std::fprintf(out, "%-24s %14lu\n", "(no match)", static_cast<unsigned long>(c.unmatched));

    std::fprintf(out, "\n%-20s %4s %6s %-7s %14s %14s %12s %12s\n", "chain", "inst", "lcore", "state", "packets", "out",
                 "dropped", "tx_dropped");
    for (const auto &slot : dp.slots()) {
        const std::string lcore = on_lcore(slot->state) ? std::to_string(slot->lcore) : "-";
        std::fprintf(out, "%-20s %4u %6s %-7s %14lu %14lu %12lu %12lu\n", slot->chain_name.c_str(), slot->index,
                     lcore.c_str(), slot_state_name(slot->state), static_cast<unsigned long>(slot->packets.load()),
                     static_cast<unsigned long>(slot->out.load()), static_cast<unsigned long>(slot->dropped.load()),
                     static_cast<unsigned long>(slot->tx_dropped.load()));
    }
    std::fprintf(out, "\n%-20s %-12s %14s %12s  %s\n", "chain/nf", "plugin", "packets", "dropped", "nf counters");
    for (const auto &slot : dp.slots()) {
        if (slot->chain == nullptr) {
            continue;
        }
        const ChainInstance &ci = *slot->chain;
        for (std::size_t i = 0; i < ci.size(); ++i) {
            const NfContext &ctx = ci.context(i);
            std::string counters;
            for (std::size_t k = 0; k < ctx.counters.size(); ++k) {
                counters += ctx.counters.name(k) + "=" + std::to_string(ctx.counters.value(k)) + " ";
            }
            std::string name = slot->chain_name + "#" + std::to_string(slot->index) + "/" + ctx.nf_name;
            std::fprintf(out, "%-20s %-12s %14lu %12lu  %s\n", name.c_str(), ctx.desc->name,
                         static_cast<unsigned long>(ci.stats(i).packets.load()),
                         static_cast<unsigned long>(ci.stats(i).dropped.load()), counters.c_str());
        }
    }
    std::fflush(out);
}

nlohmann::ordered_json chains_json(const std::vector<ChainSummary> &chains)
{
    ordered_json out = nlohmann::ordered_json::object();
    for (const ChainSummary &s : chains) {
        ordered_json wake_us = ordered_json::array();
        for (uint64_t ns : s.wake_latency_ns) {
            wake_us.push_back(static_cast<double>(ns) / 1e3);
        }
        out[s.name] = {
            {"instances", s.active},
            {"pooled", s.pooled},
            {"parked", s.parked},
            {"metered_packets", s.metered},
            {"scale_events", s.events.scale_events},
            {"autoscale_out", s.events.autoscale_out},
            {"autoscale_in", s.events.autoscale_in},
            {"reaped", s.events.reaped},
            {"wakeups", s.events.wakeups},
            {"cold_starts", s.events.cold_starts},
            {"pool_starts", s.events.pool_starts},
            {"reloads", s.events.reloads},
            {"load", s.load},
            {"pause_us_p50", static_cast<double>(s.pause_ns_p50) / 1e3},
            {"pause_us_p99", static_cast<double>(s.pause_ns_p99) / 1e3},
            {"wake_latency_us", std::move(wake_us)},
        };
        if (s.has_flows) {
            // The chain's flow table (its NFs' per-flow state), summed over parts.
            out[s.name]["flows"] = {{"live", s.flows_live},
                                    {"capacity", s.flows_capacity},
                                    {"created", s.flows_created},
                                    {"expired", s.flows_expired},
                                    {"refused_full", s.flows_refused_full}};
        }
    }
    return out;
}

nlohmann::ordered_json stats_json(const Dataplane &dp, const std::vector<ChainSummary> &chains, bool live)
{
    const io::DispatchTotals c = dp.dispatch_totals();
    ordered_json j;
    ordered_json ports = ordered_json::array();
    for (std::size_t p = 0; p < dp.ports().size(); ++p) {
        Dataplane::PortTotals totals;
        if (live) {
            rte_eth_stats stats{};
            rte_eth_stats_get(dp.ports()[p].id, &stats);
            totals = {stats.opackets, stats.imissed, stats.oerrors};
        } else {
            totals = dp.port_totals()[p];
        }
        ordered_json port = {{"name", dp.ports()[p].name},
                             {"rx", c.rx[p]},
                             {"tx", totals.tx},
                             {"rx_missed", totals.rx_missed},
                             {"tx_errors", totals.tx_errors},
                             {"tx_ring_dropped", dp.tx_ring_dropped(p)}};
        if (!dp.ports()[p].rss_table.empty()) {
            port["rss_table"] = dp.ports()[p].rss_table; // entry -> RX queue, as the NIC reads it back
        }
        ports.push_back(std::move(port));
    }
    j["ports"] = std::move(ports);
    ordered_json parser = ordered_json::object();
    for (std::size_t r = 0; r < net::kParseResultCount; ++r) {
        parser[net::parse_result_name(static_cast<net::ParseResult>(r))] = c.parse.by_result[r];
    }
    j["parser"] = std::move(parser);
    ordered_json dispatch = ordered_json::object();
#define SERPENS_X(name) dispatch[#name] = c.name;
    SERPENS_DISPATCH_COUNTERS(SERPENS_X)
#undef SERPENS_X
    j["dispatch"] = std::move(dispatch);
    if (dp.underlay() != nullptr) {
        // To and from peers: encapsulations and decapsulations by result.
        const net::VxlanCounters vxlan = dp.vxlan_totals();
        ordered_json results = ordered_json::object();
        for (std::size_t r = 0; r < net::kVxlanResultCount; ++r) {
            results[net::vxlan_result_name(static_cast<net::VxlanResult>(r))] = vxlan[static_cast<net::VxlanResult>(r)];
        }
        j["vxlan"] = std::move(results);
    }
    ordered_json lcores = ordered_json::array();
    for (const Dataplane::LcoreTotals &l : dp.lcore_totals()) {
        ordered_json queues = ordered_json::array();
        for (const io::RxQueue &q : l.rx_queues) {
            queues.push_back({{"port", dp.ports()[q.port_index].name}, {"queue", q.queue}});
        }
        auto histogram = [](const std::vector<std::pair<uint64_t, uint64_t>> &buckets) {
            ordered_json h = ordered_json::array(); // [lowest ns of the bucket, count]
            for (const auto &[low, n] : buckets) {
                h.push_back({low, n});
            }
            return h;
        };
        lcores.push_back({{"id", l.id},
                          {"rx_queues", std::move(queues)},
                          {"rx", l.rx},
                          {"batch_latency_ns", histogram(l.batch_latency)},
                          {"busy_iteration_ns", histogram(l.busy_iterations)}});
    }
    j["lcores"] = std::move(lcores);
    ordered_json rules = ordered_json::object();
    for (std::size_t r = 0; r < dp.gateway().rules().size(); ++r) {
        rules[dp.gateway().rules()[r].name] = c.rule_matched[r];
    }
    j["rules"] = std::move(rules);
    j["unmatched"] = c.unmatched;
    ordered_json instances = ordered_json::array();
    for (const auto &slot : dp.slots()) {
        ordered_json nfs = ordered_json::array();
        for (std::size_t i = 0; slot->chain != nullptr && i < slot->chain->size(); ++i) {
            const ChainInstance &ci = *slot->chain;
            const NfContext &ctx = ci.context(i);
            ordered_json counters = ordered_json::object();
            for (std::size_t k = 0; k < ctx.counters.size(); ++k) {
                counters[ctx.counters.name(k)] = ctx.counters.value(k);
            }
            nfs.push_back({{"name", ctx.nf_name},
                           {"plugin", ctx.desc->name},
                           {"packets", ci.stats(i).packets.load()},
                           {"dropped", ci.stats(i).dropped.load()},
                           {"counters", std::move(counters)}});
        }
        ordered_json instance = instance_json(*slot);
        instance["nfs"] = std::move(nfs);
        instances.push_back(std::move(instance));
    }
    j["instances"] = std::move(instances);
    j["chains"] = chains_json(chains);
    j["wake_threshold"] = const_cast<Dataplane &>(dp).wake_threshold().load();
    return j;
}

ordered_json instance_json(const InstanceSlot &slot)
{
    return {{"chain", slot.chain_name},
            {"index", slot.index},
            {"lcore", on_lcore(slot.state) ? ordered_json(slot.lcore) : ordered_json()},
            {"state", slot_state_name(slot.state)},
            {"packets", slot.packets.load()},
            {"bytes", slot.bytes.load()},
            {"out", slot.out.load()},
            {"dropped", slot.dropped.load()},
            {"tx_dropped", slot.tx_dropped.load()},
            {"to_peers", slot.to_peers.load()},
            {"for_peers", slot.for_peers.load()},
            {"peer_dropped", slot.peer_dropped.load()}};
}

namespace {

// Keys whose unsigned values are identities or gauges, never counters.
constexpr std::array<std::string_view, 12> kNotCounters = {
    "id",        "index",  "lcore",  "queue", "port",     "wake_threshold",
    "instances", "pooled", "parked", "live",  "capacity", "load",
};

// What identifies an element of an array across two snapshots.
ordered_json identity_of(const ordered_json &element)
{
    if (element.is_object()) {
        if (element.contains("name")) {
            return element["name"];
        }
        if (element.contains("id")) {
            return element["id"];
        }
        if (element.contains("chain") && element.contains("index")) {
            return ordered_json::array({element["chain"], element["index"]});
        }
        return nullptr;
    }
    if (element.is_array() && element.size() == 2) {
        return element.front(); // [bucket, count]
    }
    return nullptr;
}

// `key`: what `now` is under in its object.  Under an NF's "counters", every
// name is a counter, whatever the NF called it.
void subtract_into(ordered_json &now, const ordered_json &base, std::string_view key, bool nf_counters,
                   double per_seconds)
{
    auto whole = [](const ordered_json &v) { return v.is_number_integer() && v.get<int64_t>() >= 0; };
    if (whole(now) && whole(base)) {
        const uint64_t n = now.get<uint64_t>();
        const uint64_t b = base.get<uint64_t>();
        const bool counter =
            nf_counters || std::find(kNotCounters.begin(), kNotCounters.end(), key) == kNotCounters.end();
        if (counter && n >= b) {
            now = per_seconds > 0 ? ordered_json(static_cast<double>(n - b) / per_seconds) : ordered_json(n - b);
        }
        return;
    }
    if (now.is_object() && base.is_object()) {
        for (auto &[name, value] : now.items()) {
            if (auto it = base.find(name); it != base.end()) {
                subtract_into(value, *it, name, key == "counters", per_seconds);
            }
        }
        return;
    }
    if (now.is_array() && base.is_array()) {
        for (ordered_json &element : now) {
            const ordered_json id = identity_of(element);
            if (id.is_null()) {
                continue;
            }
            auto match =
                std::find_if(base.begin(), base.end(), [&](const ordered_json &b) { return identity_of(b) == id; });
            if (match == base.end()) {
                continue;
            }
            if (element.is_array()) {
                subtract_into(element[1], (*match)[1], key, false, per_seconds);
            } else {
                subtract_into(element, *match, key, false, per_seconds);
            }
        }
    }
}

} // namespace

ordered_json subtract_counters(ordered_json now, const ordered_json &base, double per_seconds)
{
    subtract_into(now, base, "", false, per_seconds);
    return now;
}

} // namespace serpens
