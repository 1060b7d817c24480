#include "instance/dataplane.h"

#include "core/error.h"
#include "core/fault.h"
#include "io/mbuf.h"
#include "plugin/host_api.h"

#include <rte_ethdev.h>
#include <rte_lcore.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <span>
#include <thread>

namespace serpens {

Dataplane::Dataplane(std::vector<io::Port> ports, io::Gateway gateway, DataplaneOptions options)
    : _ports(std::move(ports)), _gateway(std::move(gateway)), _options(options)
{
    _counters.rx = std::vector<Counter>(_ports.size());
    _options.burst = std::clamp<uint32_t>(_options.burst, 1, max_burst);
    auto main_lcore = std::make_unique<Lcore>();
    main_lcore->id = rte_get_main_lcore();
    main_lcore->main = true;
    _lcores.push_back(std::move(main_lcore));
}

Dataplane::~Dataplane()
{
    for (auto &slot : _instances) {
        rte_ring_free(slot->ring);
    }
    for (rte_ring *ring : _tx_rings) {
        rte_ring_free(ring);
    }
}

Dataplane::Lcore &Dataplane::lcore_state(unsigned id)
{
    for (auto &lcore : _lcores) {
        if (lcore->id == id) {
            return *lcore;
        }
    }
    auto lcore = std::make_unique<Lcore>();
    lcore->id = id;
    _lcores.push_back(std::move(lcore));
    return *_lcores.back();
}

InstanceSlot &Dataplane::add_instance(std::string chain_name, uint32_t tag, uint32_t index, unsigned lcore,
                                      uint16_t egress, std::unique_ptr<ChainInstance> chain, uint32_t ring_size)
{
    if (lcore != rte_get_main_lcore() && !rte_lcore_is_enabled(lcore)) {
        throw Error("chain '" + chain_name + "' instance " + std::to_string(index) + ": lcore " +
                    std::to_string(lcore) + " is not enabled; list it in the EAL -l argument");
    }
    auto slot = std::make_unique<InstanceSlot>();
    slot->chain_name = std::move(chain_name);
    slot->chain_tag = tag;
    slot->index = index;
    slot->lcore = lcore;
    slot->egress = egress;
    slot->chain = std::move(chain);
    std::string ring_name = "sp_i" + std::to_string(_instances.size());
    // One producer (the dispatcher) and one consumer (the instance's lcore).
    slot->ring = rte_ring_create(ring_name.c_str(), ring_size, static_cast<int>(rte_socket_id()),
                                 RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (slot->ring == nullptr) {
        throw Error("cannot create the ring of chain '" + slot->chain_name + "' instance " +
                    std::to_string(index) + ": " + rte_strerror(rte_errno));
    }
    lcore_state(lcore).instances.push_back(slot.get());
    _instances.push_back(std::move(slot));
    return *_instances.back();
}

void Dataplane::build_routes()
{
    auto table = std::make_unique<io::RouteTable>();
    for (const auto &slot : _instances) {
        if (table->by_tag.size() <= slot->chain_tag) {
            table->by_tag.resize(slot->chain_tag + 1);
        }
        Lcore &owner = lcore_state(slot->lcore);
        table->by_tag[slot->chain_tag].push_back(
            {slot->ring, &owner.wakeup, owner.main ? static_cast<void *>(slot.get()) : nullptr});
    }
    _router.publish(std::move(table));

    // TX paths: the main lcore owns queue 0 of every port; each worker lcore
    // takes the next queue, and shares the port's TX ring when none is left.
    _tx_rings.assign(_ports.size(), nullptr);
    uint16_t next_queue = 1;
    for (auto &lcore : _lcores) {
        lcore->tx.resize(_ports.size());
        uint16_t queue = lcore->main ? 0 : next_queue++;
        for (std::size_t p = 0; p < _ports.size(); ++p) {
            TxPath &path = lcore->tx[p];
            path.port_id = _ports[p].id;
            if (queue < _ports[p].tx_queues) {
                path.queue = queue;
                continue;
            }
            if (_tx_rings[p] == nullptr) {
                std::string name = "sp_tx" + std::to_string(p);
                _tx_rings[p] = rte_ring_create(name.c_str(), 16384, static_cast<int>(rte_socket_id()),
                                               RING_F_SC_DEQ);
                if (_tx_rings[p] == nullptr) {
                    throw Error("cannot create the TX ring of port '" + _ports[p].name + "'");
                }
                spdlog::info("port '{}' has {} TX queue(s) for {} lcores: extra lcores transmit through "
                             "the main lcore",
                             _ports[p].name, _ports[p].tx_queues, _lcores.size());
            }
            path.ring = _tx_rings[p];
        }
    }
}

void Dataplane::transmit(Lcore &lcore, uint16_t port_index, rte_mbuf **mbufs, uint16_t n, Counter &dropped)
{
    const TxPath &path = lcore.tx[port_index];
    uint16_t sent = 0;
    if (path.queue >= 0) {
        // A few retries absorb a momentarily full descriptor ring.
        for (int attempt = 0; attempt < 4 && sent < n; ++attempt) {
            sent += rte_eth_tx_burst(path.port_id, static_cast<uint16_t>(path.queue), mbufs + sent,
                                     static_cast<uint16_t>(n - sent));
        }
    } else {
        sent = static_cast<uint16_t>(
            rte_ring_enqueue_burst(path.ring, reinterpret_cast<void *const *>(mbufs), n, nullptr));
    }
    if (sent < n) {
        rte_pktmbuf_free_bulk(mbufs + sent, n - sent);
        bump(dropped, n - sent);
    }
}

uint32_t Dataplane::drain_tx_rings()
{
    uint32_t moved = 0;
    Lcore &main = *_lcores.front();
    for (std::size_t p = 0; p < _tx_rings.size(); ++p) {
        if (_tx_rings[p] == nullptr) {
            continue;
        }
        // Several bursts per call: the ring collects the output of every
        // worker without a queue of its own, so one burst per loop could not
        // keep up with the burst the main lcore receives in the same loop.
        for (int round = 0; round < 8; ++round) {
            rte_mbuf *mbufs[max_burst];
            unsigned n = rte_ring_dequeue_burst(_tx_rings[p], reinterpret_cast<void **>(mbufs), max_burst, nullptr);
            if (n == 0) {
                break;
            }
            transmit(main, static_cast<uint16_t>(p), mbufs, static_cast<uint16_t>(n), _counters.default_tx_dropped);
            moved += n;
        }
    }
    return moved;
}

uint32_t Dataplane::dispatch(uint16_t port_index, uint64_t now)
{
    rte_mbuf *mbufs[max_burst];
    const uint16_t port_id = _ports[port_index].id;
    const uint16_t n = rte_eth_rx_burst(port_id, 0, mbufs, static_cast<uint16_t>(_options.burst));
    if (n == 0) {
        return 0;
    }
    bump(_counters.rx[port_index], n);

    // The burst goes through in stages (parse all, hash all, then classify and
    // route) rather than packet by packet: each stage is a short loop over
    // independent packets whose latencies the CPU overlaps.
    serpens_pkt views[max_burst];
    // Left uninitialised: parse_headers writes every key, and zeroing 256 of
    // them per burst cost more than parsing.
    union KeySlot {
        KeySlot() noexcept {}
        net::FlowKey key;
    } keys[max_burst];
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
        mbufs[n_kept++] = m;
    }
    static_assert(sizeof(KeySlot) == sizeof(net::FlowKey));
    net::hash_flows(&keys[0].key, n_kept, hashes);

    // Per-target staging, so each target gets its packets as one batch.
    struct Stage {
        const io::RouteTarget *target;
        uint16_t count;
        uint8_t index[max_burst]; // into mbufs/views
    };
    static_assert(max_burst <= 256);
    Stage stages[8];
    uint32_t n_stages = 0;
    rte_mbuf *passthrough[max_burst];
    uint16_t n_pass = 0;
    uint32_t tags[max_burst];

    auto flush_stage = [&](Stage &stage) {
        rte_mbuf *batch[max_burst];
        auto gather = [&] {
            for (uint16_t k = 0; k < stage.count; ++k) {
                batch[k] = mbufs[stage.index[k]];
            }
        };
        if (stage.target->direct != nullptr) {
            // Same lcore: run the chain now on the views just parsed; no ring
            // and no metadata round trip through the mbuf, and nothing is
            // reordered, since this instance receives only from here.
            auto *slot = static_cast<InstanceSlot *>(stage.target->direct);
            if (stage.count == n_kept) {
                // The whole burst, in order (the common case): no gather.
                run_views(*_lcores.front(), *slot, mbufs, views, stage.count, now);
            } else {
                gather();
                serpens_pkt batch_views[max_burst];
                for (uint16_t k = 0; k < stage.count; ++k) {
                    batch_views[k] = views[stage.index[k]];
                }
                run_views(*_lcores.front(), *slot, batch, batch_views, stage.count, now);
            }
            stage.count = 0;
            return;
        }
        gather();
        for (uint16_t k = 0; k < stage.count; ++k) {
            io::store_meta(batch[k], views[stage.index[k]], tags[stage.index[k]]);
        }
        unsigned queued =
            rte_ring_enqueue_burst(stage.target->ring, reinterpret_cast<void *const *>(batch), stage.count, nullptr);
        if (queued < stage.count) {
            bump(_counters.ring_full, stage.count - queued);
            for (unsigned k = queued; k < stage.count; ++k) {
                drops[n_drop++] = batch[k];
            }
        }
        if (stage.target->wakeup->sleeping() &&
            rte_ring_count(stage.target->ring) >= _wake_threshold.load(std::memory_order_relaxed)) {
            stage.target->wakeup->wake();
        }
        stage.count = 0;
    };

    const io::RouteTable *routes = _router.current();
    // One chain for all traffic: rule 0 for every packet, counted at once.
    const bool match_all = _gateway.first_rule_matches_everything();
    if (match_all) {
        _gateway.count_matches(0, n_kept);
    }
    int32_t cached_rule = io::gateway_no_match;
    uint32_t cached_tag = 0;
    std::span<const io::RouteTarget> cached_targets;
    for (uint16_t i = 0; i < n_kept; ++i) {
        serpens_pkt &view = views[i];
        if (parsed[i]) {
            view.flow_hash = hashes[i];
        }
        const int32_t rule =
            match_all ? 0
                      : _gateway.classify(port_index, view.vlan_id, (view.flags & SERPENS_PKT_F_VLAN) != 0,
                                          parsed[i], keys[i].key);
        if (rule == io::gateway_no_match) {
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
        // instances up once per run of them, not once per packet.
        if (rule != cached_rule) {
            cached_rule = rule;
            cached_tag = _gateway.rules()[static_cast<std::size_t>(rule)].chain_tag;
            cached_targets = routes != nullptr ? routes->targets(cached_tag) : std::span<const io::RouteTarget>{};
        }
        const uint32_t tag = cached_tag;
        const io::RouteTarget *target = io::RouteTable::pick(cached_targets, view.flow_hash);
        if (target == nullptr) {
            bump(_counters.no_instance);
            drops[n_drop++] = mbufs[i];
            continue;
        }
        tags[i] = tag;
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
        transmit(*_lcores.front(), static_cast<uint16_t>(_gateway.default_port()), passthrough, n_pass,
                 _counters.default_tx_dropped);
    }
    if (n_drop > 0) {
        rte_pktmbuf_free_bulk(drops, n_drop);
    }
    return n;
}

uint32_t Dataplane::serve(Lcore &lcore, InstanceSlot &slot, uint64_t now)
{
    rte_mbuf *mbufs[max_burst];
    const unsigned n = rte_ring_dequeue_burst(slot.ring, reinterpret_cast<void **>(mbufs), _options.burst, nullptr);
    if (n > 0) {
        run_batch(lcore, slot, mbufs, n, now);
    }
    return n;
}

void Dataplane::run_batch(Lcore &lcore, InstanceSlot &slot, rte_mbuf **mbufs, unsigned n, uint64_t now)
{
    serpens_pkt views[max_burst];
    for (unsigned i = 0; i < n; ++i) {
        io::load_view(mbufs[i], views[i]);
    }
    run_views(lcore, slot, mbufs, views, n, now);
}

void Dataplane::run_views(Lcore &lcore, InstanceSlot &slot, rte_mbuf **mbufs, serpens_pkt *views, unsigned n,
                          uint64_t now)
{
    uint16_t labels[max_burst];
    slot.chain->run(views, n, labels, now);

    rte_mbuf *out[max_burst];
    rte_mbuf *drops[max_burst];
    uint16_t n_out = 0;
    uint16_t n_drop = 0;
    for (unsigned i = 0; i < n; ++i) {
        if (labels[i] == SERPENS_LABEL_OUT) {
            out[n_out++] = mbufs[i];
        } else {
            drops[n_drop++] = mbufs[i];
        }
    }
    bump(slot.packets, n);
    bump(slot.batches);
    bump(slot.dropped, n_drop);
    bump(slot.out, n_out);
    if (n_drop > 0) {
        rte_pktmbuf_free_bulk(drops, n_drop);
    }
    if (n_out > 0) {
        transmit(lcore, slot.egress, out, n_out, slot.tx_dropped);
    }
}

int Dataplane::worker_entry(void *arg)
{
    auto *self = static_cast<Dataplane *>(arg);
    fault::use_alternate_signal_stack(); // a stack overflow in an NF is still named
    unsigned id = rte_lcore_id();
    for (auto &lcore : self->_lcores) {
        if (lcore->id == id) {
            self->worker_loop(*lcore);
        }
    }
    return 0;
}

void Dataplane::worker_loop(Lcore &lcore)
{
    // Keeps polling for this long after the last packet before it sleeps:
    // under steady traffic a worker that sleeps between bursts pays a futex
    // round trip (tens of µs) per wake-up and starves; measured with
    // serpens-bench throughput, 2 lcores, 4096-flow replay: 4.6-6.8 Mpps with a
    // 2048-poll spin, the worker on CPU 13% of the time.
    constexpr uint64_t spin_ns = 500'000;
    uint64_t last_work = monotonic_ns();
    for (;;) {
        uint32_t work = 0;
        const uint64_t now = monotonic_ns();
        for (InstanceSlot *slot : lcore.instances) {
            work += serve(lcore, *slot, now);
        }
        if (work > 0) {
            last_work = now;
            continue;
        }
        bool empty = true;
        for (InstanceSlot *slot : lcore.instances) {
            empty = empty && rte_ring_empty(slot->ring);
        }
        if (empty && _rx_stopped.load(std::memory_order_acquire)) {
            break;
        }
        if (now - last_work < spin_ns) {
            rte_pause();
            continue;
        }
        lcore.wakeup.prepare_sleep();
        empty = true;
        for (InstanceSlot *slot : lcore.instances) {
            empty = empty && rte_ring_empty(slot->ring);
        }
        if (!empty) {
            lcore.wakeup.cancel_sleep();
            continue;
        }
        // The main lcore wakes us when packets wait (threshold or deadline);
        // the timeout is only a safety net.
        lcore.wakeup.wait(100000);
    }
    lcore.done.store(true, std::memory_order_release);
}

bool Dataplane::backlogged()
{
    // Back-pressure: while a worker's ring cannot take one more burst, leave
    // packets in the ports' RX queues (a NIC counts what overflows there as
    // rx_missed; a pcap replay just waits) rather than parse them only to
    // drop them at the ring.
    for (const auto &slot : _instances) {
        if (slot->lcore != rte_get_main_lcore() && rte_ring_free_count(slot->ring) < _options.burst) {
            bump(_counters.rx_paused);
            lcore_state(slot->lcore).wakeup.wake();
            return true;
        }
    }
    return false;
}

void Dataplane::wake_overdue(uint64_t now)
{
    const uint64_t deadline_ns = uint64_t{_options.wake_deadline_us} * 1000;
    for (auto &other : _lcores) {
        if (other->main || !other->wakeup.sleeping()) {
            other->pending_since = 0;
            continue;
        }
        bool pending = false;
        for (InstanceSlot *slot : other->instances) {
            pending = pending || !rte_ring_empty(slot->ring);
        }
        if (!pending) {
            other->pending_since = 0;
        } else if (other->pending_since == 0) {
            other->pending_since = now;
        } else if (now - other->pending_since >= deadline_ns) {
            other->wakeup.wake();
            other->pending_since = 0;
        }
    }
}

void Dataplane::main_loop(Lcore &lcore)
{
    const uint64_t start = monotonic_ns();
    uint64_t last_rx = start;
    uint32_t idle = 0;
    for (;;) {
        const uint64_t now = monotonic_ns();
        bool stopping = _stop.load(std::memory_order_acquire);
        if (!stopping && _options.duration_s > 0 && now - start >= static_cast<uint64_t>(_options.duration_s * 1e9)) {
            stopping = true;
        }
        if (!stopping && !_rx_stopped.load(std::memory_order_relaxed) && _options.idle_exit_s > 0 &&
            now - last_rx >= static_cast<uint64_t>(_options.idle_exit_s * 1e9)) {
            spdlog::info("no packet received for {} s: stopping (--idle-exit)", _options.idle_exit_s);
            stopping = true;
        }
        if (stopping && !_rx_stopped.load(std::memory_order_relaxed)) {
            // Stop receiving; everything already received is still delivered.
            _rx_stopped.store(true, std::memory_order_release);
            for (auto &other : _lcores) {
                other->wakeup.wake();
            }
        }
        uint32_t work = 0;
        if (!_rx_stopped.load(std::memory_order_relaxed)) {
            for (uint16_t p = 0; p < _ports.size(); ++p) {
                if (backlogged()) {
                    last_rx = now; // a worker still has work: not idle
                    break;
                }
                uint32_t got = dispatch(p, now);
                if (got > 0) {
                    last_rx = now;
                }
                work += got;
            }
        }
        _router.quiescent();
        for (InstanceSlot *slot : lcore.instances) {
            work += serve(lcore, *slot, now); // only non-empty if routes changed
        }
        work += drain_tx_rings();
        wake_overdue(now);
        if (_rx_stopped.load(std::memory_order_relaxed) && work == 0) {
            bool all_done = true;
            for (auto &other : _lcores) {
                all_done = all_done && (other->main || other->done.load(std::memory_order_acquire));
            }
            bool empty = true;
            for (InstanceSlot *slot : lcore.instances) {
                empty = empty && rte_ring_empty(slot->ring);
            }
            for (rte_ring *ring : _tx_rings) {
                empty = empty && (ring == nullptr || rte_ring_empty(ring));
            }
            if (all_done && empty) {
                break;
            }
        }
        if (work > 0) {
            idle = 0;
            continue;
        }
        // Back off while idle: pause first, then sleep longer and longer up to
        // idle_sleep_us, so an idle host burns no CPU and a busy one no time.
        ++idle;
        if (idle < 1024 || _options.idle_sleep_us == 0) {
            rte_pause();
        } else {
            uint32_t us = std::min<uint32_t>(_options.idle_sleep_us, (idle - 1023) * 10);
            std::this_thread::sleep_for(std::chrono::microseconds(us));
        }
    }
}

void Dataplane::run()
{
    build_routes();
    _router.set_dispatcher_running(true);
    for (auto &lcore : _lcores) {
        if (!lcore->main) {
            if (int rc = rte_eal_remote_launch(worker_entry, this, lcore->id); rc != 0) {
                throw Error("cannot launch lcore " + std::to_string(lcore->id) + ": " + rte_strerror(-rc));
            }
        }
    }
    main_loop(*_lcores.front());
    rte_eal_mp_wait_lcore();
    _port_totals.clear();
    for (const io::Port &port : _ports) {
        rte_eth_stats stats{};
        rte_eth_stats_get(port.id, &stats);
        _port_totals.push_back({stats.opackets, stats.imissed, stats.oerrors});
    }
    _router.set_dispatcher_running(false);
}

} // namespace serpens
