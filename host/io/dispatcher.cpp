#include "io/dispatcher.h"

#include "io/mbuf.h"
#include "io/vxlan_io.h"

#include <rte_cycles.h>
#include <rte_ethdev.h>

#include <algorithm>

namespace serpens::io {

void DispatchTotals::add(const DispatchCounters &c)
{
    rx.resize(std::max(rx.size(), c.rx.size()));
    for (std::size_t p = 0; p < c.rx.size(); ++p) {
        rx[p] += c.rx[p].load(std::memory_order_relaxed);
    }
    parse.add(c.parse);
    rule_matched.resize(std::max(rule_matched.size(), c.rules.matched.size()));
    for (std::size_t r = 0; r < c.rules.matched.size(); ++r) {
        rule_matched[r] += c.rules.matched[r].load(std::memory_order_relaxed);
    }
    unmatched += c.rules.unmatched.load(std::memory_order_relaxed);
    vxlan.add(c.vxlan);
#define SERPENS_X(name) name += c.name.load(std::memory_order_relaxed);
    SERPENS_DISPATCH_COUNTERS(SERPENS_X)
#undef SERPENS_X
}

Dispatcher::Dispatcher(std::span<const Port> ports, const Gateway &gateway, const std::atomic<uint32_t> &wake_threshold,
                       std::vector<RxQueue> rx_queues, DispatchOptions options, const Underlay *underlay)
    : _ports(ports), _gateway(gateway), _wake_threshold(wake_threshold), _options(options), _rx(std::move(rx_queues)),
      _underlay(underlay), _counters(ports.size(), gateway.rules().size())
{
    _options.burst = std::clamp<uint32_t>(_options.burst, 1, max_burst);
    _options.producers = std::max<uint32_t>(_options.producers, 1);
}

Dispatcher::Poll Dispatcher::poll(uint64_t now, LocalSink &sink)
{
    Poll result;
    const RouteTable *routes = _router.current();
    for (const RxQueue &rxq : _rx) {
        if (backlogged(routes)) {
            result.backlogged = true;
            break;
        }
        result.received += receive(rxq, routes, now, sink);
    }
    return result;
}

bool Dispatcher::backlogged(const RouteTable *routes)
{
    // Back-pressure: while a ring cannot take one more burst, leave packets in
    // the ports' RX queues (a NIC counts what overflows there as rx_missed; a
    // pcap replay just waits) rather than parse them only to drop them at the
    // ring.
    if (routes == nullptr) {
        return false;
    }
    for (const RouteTarget &target : routes->targets) {
        // A ring too small for every producer's burst waits until empty.
        const unsigned room = std::min(_options.burst * _options.producers, rte_ring_get_capacity(target.ring));
        if (rte_ring_free_count(target.ring) < room) {
            bump(_counters.rx_paused);
            target.wakeup->wake();
            return true;
        }
    }
    return false;
}

uint16_t Dispatcher::take_from_tunnels(rte_mbuf **mbufs, uint16_t n, uint32_t *tags, uint8_t *marks)
{
    net::VxlanDecapped found[max_burst];
    decap_burst({mbufs, n}, _underlay->decap(), found, _counters.vxlan);
    rte_mbuf *drops[max_burst];
    uint16_t n_drop = 0;
    uint16_t kept = 0;
    for (uint16_t i = 0; i < n; ++i) {
        const net::VxlanClass cls = net::vxlan_result_class(found[i].result);
        const uint8_t peer = cls == net::VxlanClass::ok ? _underlay->peer_at(found[i].outer_src) : 0;
        if (peer == 0) {
            bump(cls == net::VxlanClass::not_vxlan ? _counters.underlay_other
                 : cls == net::VxlanClass::ok      ? _counters.unknown_peer
                                                   : _counters.tunnel_dropped);
            drops[n_drop++] = mbufs[i];
            continue;
        }
        tags[kept] = found[i].chain_tag;
        marks[kept] = static_cast<uint8_t>(peer | ((found[i].flags & net::kVxlanReturned) ? peer_mark_returned : 0));
        mbufs[kept++] = mbufs[i];
    }
    if (n_drop > 0) {
        rte_pktmbuf_free_bulk(drops, n_drop);
    }
    return kept;
}

uint32_t Dispatcher::receive(const RxQueue &rxq, const RouteTable *routes, uint64_t now, LocalSink &sink)
{
    rte_mbuf *mbufs[max_burst];
    const uint16_t received =
        rte_eth_rx_burst(_ports[rxq.port_index].id, rxq.queue, mbufs, static_cast<uint16_t>(_options.burst));
    if (received == 0) {
        return 0;
    }
    bump(_counters.rx[rxq.port_index], received);
    // From the underlay: peers' packets, each with its chain tag and peer.
    const bool tunnelled = _underlay != nullptr && rxq.port_index == _underlay->port_index();
    uint32_t tunnel_tags[max_burst];
    uint8_t marks[max_burst];
    const uint16_t n = tunnelled ? take_from_tunnels(mbufs, received, tunnel_tags, marks) : received;
    if (n == 0) {
        return received;
    }
    // Latency is sampled: one burst in latency_sample carries its RX time
    // (0: not sampled), which keeps two TSC reads off most bursts.
    const uint64_t rx_tsc = (++_bursts & (latency_sample - 1)) == 0 ? rte_rdtsc() : 0;

    // The burst goes through in stages (parse all, hash all, then classify and
    // route) rather than packet by packet: each stage is a short loop over
    // independent packets whose latencies the CPU overlaps.
    serpens_pkt views[max_burst];
    // Left uninitialised: parse_headers writes every key.
    net::FlowKeySlot keys[max_burst];
    uint32_t hashes[max_burst];
    bool parsed[max_burst];
    rte_mbuf *drops[max_burst];
    uint16_t n_drop = 0;
    uint16_t n_kept = 0; // mbufs[0, n_kept) survive parsing, in order
    for (uint16_t i = 0; i < n; ++i) {
        rte_mbuf *m = mbufs[i];
        if (m->nb_segs > 1 && rte_pktmbuf_linearize(m) != 0) {
            bump(_counters.linearize_failed);
            drops[n_drop++] = m;
            continue;
        }
        // Field by field, not a copy of a temporary: the narrow stores of a
        // temporary read back 16 bytes at a time stall store forwarding, and
        // the profile showed that as the dispatcher's hottest spot.
        serpens_pkt &view = views[n_kept];
        view.data = rte_pktmbuf_mtod(m, uint8_t *);
        view.len = m->data_len;
        view.reserved0 = 0;
        view.reserved1 = 0;
        view.handle = m;
        const net::ParseResult result = net::parse_headers(view.data, view.len, view, keys[n_kept].key);
        _counters.parse.count(result);
        parsed[n_kept] = result == net::ParseResult::ok;
        if (!parsed[n_kept] && _options.drop_malformed && net::is_malformed(result)) {
            bump(_counters.malformed_dropped);
            drops[n_drop++] = m;
            continue;
        }
        if (tunnelled) {
            tunnel_tags[n_kept] = tunnel_tags[i];
            marks[n_kept] = marks[i];
        }
        mbufs[n_kept++] = m;
    }
    net::hash_flows(&keys[0].key, n_kept, hashes);
    for (uint16_t i = 0; i < n_kept; ++i) {
        hashes[i] = views[i].flow_hash = parsed[i] ? hashes[i] : views[i].flow_hash;
    }

    // Per-target staging, so each target gets its packets as one batch.
    struct Stage {
        const RouteTarget *target;
        uint16_t count;
        uint8_t index[max_burst]; // into mbufs/views
    };
    static_assert(max_burst <= 256);
    Stage stages[8];
    uint32_t n_stages = 0;
    rte_mbuf *passthrough[max_burst];
    uint16_t n_pass = 0;

    auto flush_stage = [&](Stage &stage) {
        rte_mbuf *batch[max_burst];
        // A stage of the whole burst holds it in order: its index is not read
        // (the sole-target route leaves it unset).
        const bool whole = stage.count == n_kept;
        auto at = [&](uint16_t k) -> uint16_t { return whole ? k : stage.index[k]; };
        auto gather = [&] {
            for (uint16_t k = 0; k < stage.count; ++k) {
                batch[k] = mbufs[at(k)];
            }
        };
        const RouteTarget &target = *stage.target;
        if (target.kind == RouteKind::in_place && !target.gate->held.load(std::memory_order_acquire) &&
            rte_ring_empty(target.ring)) {
            // Run the chain now on the views just parsed: no ring and no
            // metadata round trip through the mbuf, and nothing is reordered,
            // since this instance receives only from here.
            if (whole) {
                // The whole burst, in order (the common case): no gather.
                sink.run_in_place(stage.target->instance, mbufs, views, &keys[0].key, stage.count, now, rx_tsc,
                                  tunnelled ? marks : nullptr);
            } else {
                gather();
                serpens_pkt batch_views[max_burst];
                net::FlowKeySlot batch_keys[max_burst];
                uint8_t batch_marks[max_burst];
                for (uint16_t k = 0; k < stage.count; ++k) {
                    batch_views[k] = views[stage.index[k]];
                    batch_keys[k].key = keys[stage.index[k]].key;
                    batch_marks[k] = tunnelled ? marks[stage.index[k]] : 0;
                }
                sink.run_in_place(stage.target->instance, batch, batch_views, &batch_keys[0].key, stage.count, now,
                                  rx_tsc, tunnelled ? batch_marks : nullptr);
            }
            stage.count = 0;
            return;
        }
        gather();
        for (uint16_t k = 0; k < stage.count; ++k) {
            store_meta(batch[k], views[at(k)], rx_tsc, tunnelled ? marks[at(k)] : 0);
        }
        unsigned queued =
            rte_ring_enqueue_burst(target.ring, reinterpret_cast<void *const *>(batch), stage.count, nullptr);
        if (queued < stage.count) {
            bump(_counters.ring_full, stage.count - queued);
            for (unsigned k = queued; k < stage.count; ++k) {
                drops[n_drop++] = batch[k];
            }
        }
        if (target.wake_on_arrival) {
            // Parked: these packets open the gate.  The fence orders the
            // enqueue before the load, against the parking thread's store of
            // `held` before its look at the ring: one of the two sees the other.
            std::atomic_thread_fence(std::memory_order_seq_cst);
            if (target.gate->held.load(std::memory_order_relaxed) &&
                target.gate->held.exchange(false, std::memory_order_acq_rel)) {
                target.gate->woken_ns.store(now, std::memory_order_release);
                bump(_counters.wakeups);
                target.wakeup->wake();
            }
        } else if (target.kind == RouteKind::ring && target.wakeup->sleeping() &&
                   rte_ring_count(target.ring) >= _wake_threshold.load(std::memory_order_relaxed)) {
            target.wakeup->wake();
        }
        stage.count = 0;
    };

    // One chain for all traffic: rule 0 for every packet, counted at once.
    // A peer's packets bypass the gateway: their header names the chain.
    const bool match_all = !tunnelled && _gateway.first_rule_matches_everything();
    if (match_all) {
        bump(_counters.rules.matched[0], n_kept);
    }
    // ... and one instance of it owns every bucket, or every flow of the
    // burst: the burst is one stage.
    const RouteTarget *sole =
        match_all && routes != nullptr ? routes->sole(_gateway.rules()[0].chain_tag, hashes, n_kept) : nullptr;
    if (sole != nullptr) {
        stages[0].target = sole;
        stages[0].count = n_kept;
        n_stages = 1;
    }
    // Else each packet is classified and routed on its own.
    int32_t cached_rule = gateway_no_match;
    uint32_t cached_tag = 0;
    std::span<const uint16_t> cached_buckets;
    for (uint16_t i = 0; i < n_kept && sole == nullptr; ++i) {
        serpens_pkt &view = views[i];
        if (tunnelled) {
            // Its header names the chain: runs of one tag are looked up once.
            if (i == 0 || tunnel_tags[i] != cached_tag) {
                cached_tag = tunnel_tags[i];
                cached_buckets = routes != nullptr ? routes->buckets(cached_tag) : std::span<const uint16_t>{};
            }
        } else {
            const int32_t rule =
                match_all ? 0
                          : _gateway.classify(rxq.port_index, view.vlan_id, (view.flags & SERPENS_PKT_F_VLAN) != 0,
                                              parsed[i], keys[i].key, _counters.rules);
            if (rule == gateway_no_match) {
                if (_gateway.default_port() >= 0) {
                    bump(_counters.unmatched_passed);
                    passthrough[n_pass++] = mbufs[i];
                } else {
                    bump(_counters.unmatched_dropped);
                    drops[n_drop++] = mbufs[i];
                }
                continue;
            }
            // Consecutive packets mostly match the same rule: look its chain's
            // buckets up once per run of them, not once per packet.
            if (rule != cached_rule) {
                cached_rule = rule;
                cached_tag = _gateway.rules()[static_cast<std::size_t>(rule)].chain_tag;
                cached_buckets = routes != nullptr ? routes->buckets(cached_tag) : std::span<const uint16_t>{};
            }
        }
        const RouteTarget *target = routes != nullptr ? routes->pick(cached_buckets, view.flow_hash) : nullptr;
        if (target == nullptr) {
            bump(_counters.no_instance);
            drops[n_drop++] = mbufs[i];
            continue;
        }
        Stage *stage = nullptr;
        for (uint32_t s = 0; s < n_stages; ++s) {
            if (stages[s].target == target) {
                stage = &stages[s];
                break;
            }
        }
        if (stage == nullptr) {
            if (n_stages == std::size(stages)) {
                flush_stage(stages[0]); // rare: more targets in one burst than stages
                stages[0].target = target;
                stage = &stages[0];
            } else {
                stage = &stages[n_stages++];
                stage->target = target;
                stage->count = 0;
            }
        }
        stage->index[stage->count++] = static_cast<uint8_t>(i);
    }
    for (uint32_t s = 0; s < n_stages; ++s) {
        if (stages[s].count > 0) {
            flush_stage(stages[s]);
        }
    }
    if (n_pass > 0) {
        sink.transmit(static_cast<uint16_t>(_gateway.default_port()), passthrough, n_pass,
                      _counters.default_tx_dropped);
    }
    if (n_drop > 0) {
        rte_pktmbuf_free_bulk(drops, n_drop);
    }
    return received;
}

} // namespace serpens::io
