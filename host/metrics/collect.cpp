#include "metrics/collect.h"

#include "chain/runtime.h"
#include "instance/dataplane.h"
#include "instance/manager.h"
#include "net/parse.h"
#include "peer/service.h"
#include "state/executor.h"

#include <rte_ethdev.h>

namespace serpens::metrics {
namespace {

void collect_ports(const Dataplane &dp, const io::DispatchTotals &c, Snapshot &s)
{
    for (std::size_t p = 0; p < dp.ports().size(); ++p) {
        rte_eth_stats stats{};
        rte_eth_stats_get(dp.ports()[p].id, &stats);
        PortSample port;
        port.name = dp.ports()[p].name;
        port.rx_packets = p < c.rx.size() ? c.rx[p] : 0;
        port.tx_packets = stats.opackets;
        port.rx_bytes = stats.ibytes;
        port.tx_bytes = stats.obytes;
        port.dropped = {
            {"rx_missed", stats.imissed}, {"tx_errors", stats.oerrors}, {"tx_ring_full", dp.tx_ring_dropped(p)}};
        s.ports.push_back(std::move(port));
    }
}

// What the slots' chain instances count: under the manager's lock, which
// keeps scale events from replacing them meanwhile.
void collect_instances(const Dataplane &dp, Snapshot &s)
{
    for (const auto &slot : dp.slots()) {
        InstanceSample inst;
        inst.chain = slot->chain_name;
        inst.instance = slot->index;
        inst.state = slot_state_name(slot->state);
        inst.packets = slot->packets.load(std::memory_order_relaxed);
        inst.out = slot->out.load(std::memory_order_relaxed);
        inst.dropped = {{"nf", slot->dropped.load(std::memory_order_relaxed)},
                        {"tx_full", slot->tx_dropped.load(std::memory_order_relaxed)}};
        s.instances.push_back(std::move(inst));
        if (slot->chain == nullptr) {
            continue;
        }
        const ChainInstance &ci = *slot->chain;
        for (std::size_t i = 0; i < ci.size(); ++i) {
            const NfContext &ctx = ci.context(i);
            NfSample nf;
            nf.chain = slot->chain_name;
            nf.instance = slot->index;
            nf.nf = ctx.nf_name;
            nf.plugin = ctx.desc->name;
            nf.packets = ci.stats(i).packets.load(std::memory_order_relaxed);
            nf.dropped = ci.stats(i).dropped.load(std::memory_order_relaxed);
            for (std::size_t k = 0; k < ctx.counters.size(); ++k) {
                nf.counters.emplace_back(ctx.counters.name(k), ctx.counters.value(k));
            }
            s.nfs.push_back(std::move(nf));
        }
    }
}

} // namespace

Snapshot collect(const Dataplane &dp, const InstanceManager &manager, state::StateStore &store,
                 const peer::PeerService *peers)
{
    Snapshot s;
    const io::DispatchTotals c = dp.dispatch_totals();
    collect_ports(dp, c, s);
    for (std::size_t r = 0; r < net::kParseResultCount; ++r) {
        s.parser.emplace_back(net::parse_result_name(static_cast<net::ParseResult>(r)), c.parse.by_result[r]);
    }
    s.dispatch = {{"malformed", c.malformed_dropped},       {"unmatched", c.unmatched_dropped},
                  {"no_instance", c.no_instance},           {"ring_full", c.ring_full},
                  {"linearize_failed", c.linearize_failed}, {"default_tx", c.default_tx_dropped}};
    for (std::size_t r = 0; r < dp.gateway().rules().size() && r < c.rule_matched.size(); ++r) {
        s.rules.push_back({dp.gateway().rules()[r].name, c.rule_matched[r]});
    }
    s.unmatched = c.unmatched;

    for (const ChainSummary &summary : manager.chain_summaries()) {
        ChainSample chain;
        chain.name = summary.name;
        chain.packets = summary.metered;
        chain.active = summary.active;
        chain.pooled = summary.pooled;
        chain.parked = summary.parked;
        chain.scale_events = summary.events.scale_events;
        chain.wakeups = summary.events.wakeups;
        chain.cold_starts = summary.events.cold_starts;
        chain.has_flows = summary.has_flows;
        chain.flows_live = summary.flows_live;
        chain.flows_capacity = summary.flows_capacity;
        chain.flows_refused_full = summary.flows_refused_full;
        s.chains.push_back(std::move(chain));
    }
    manager.locked([&] { collect_instances(dp, s); });

    for (state::Executor *executor : store.executors()) {
        for (state::Table *table : executor->tables()) {
            s.tables.push_back(
                {executor->chain(), executor->nf(), std::string(table->name()), table->live(), table->capacity()});
        }
    }

    for (const Dataplane::LcoreTotals &l : dp.lcore_totals()) {
        s.latency.push_back({l.id, l.batch_latency, l.batch_latency_sum_ns});
    }

    if (peers != nullptr) {
        s.has_peers = true;
        for (const peer::PeerStatus &p : peers->peers()) {
            s.peers.push_back({p.id, p.up, p.sessions});
        }
        s.peer_sessions_refused = peers->counters().sessions_refused;
    }
    return s;
}

} // namespace serpens::metrics
