#include "instance/dataplane.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/fault.h"
#include "io/mbuf.h"

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
    _options.dispatch.burst = std::clamp<uint32_t>(_options.dispatch.burst, 1, max_burst);
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
    // Every receiving lcore may produce; the instance's lcore consumes.
    slot->ring = rte_ring_create(ring_name.c_str(), ring_size, static_cast<int>(rte_socket_id()), RING_F_SC_DEQ);
    if (slot->ring == nullptr) {
        throw Error("cannot create the ring of chain '" + slot->chain_name + "' instance " + std::to_string(index) +
                    ": " + rte_strerror(rte_errno));
    }
    lcore_state(lcore).instances.push_back(slot.get());
    _instances.push_back(std::move(slot));
    return *_instances.back();
}

std::vector<unsigned> Dataplane::receiving_lcores(const std::vector<unsigned> &lcores, unsigned main_lcore)
{
    std::vector<unsigned> receivers;
    for (unsigned id : lcores) {
        if (std::find(receivers.begin(), receivers.end(), id) == receivers.end()) {
            receivers.push_back(id);
        }
    }
    std::sort(receivers.begin(), receivers.end(), [main_lcore](unsigned a, unsigned b) {
        return (a == main_lcore) != (b == main_lcore) ? a == main_lcore : a < b;
    });
    if (receivers.empty()) {
        receivers.push_back(main_lcore);
    }
    return receivers;
}

void Dataplane::build_dispatchers()
{
    std::vector<unsigned> instance_lcores;
    for (const auto &slot : _instances) {
        instance_lcores.push_back(slot->lcore);
    }
    const std::vector<unsigned> receivers = receiving_lcores(instance_lcores, rte_get_main_lcore());
    // Queue q of each port goes to receiver q (a port has no more queues than
    // there are receivers, unless its rx_queues says so: then they wrap).
    std::vector<std::vector<io::RxQueue>> queues(receivers.size());
    for (uint16_t p = 0; p < _ports.size(); ++p) {
        for (uint16_t q = 0; q < _ports[p].rx_queues; ++q) {
            queues[q % receivers.size()].push_back({p, q});
        }
    }
    _receivers = 0;
    for (std::size_t r = 0; r < receivers.size(); ++r) {
        if (queues[r].empty()) {
            continue; // every port has fewer queues than there are receivers
        }
        lcore_state(receivers[r]).dispatcher = std::make_unique<io::Dispatcher>(
            _ports, _gateway, _wake_threshold, std::move(queues[r]), _options.dispatch);
        ++_receivers;
    }
}

void Dataplane::build_routes()
{
    std::vector<io::RoutedInstance> routed;
    for (std::size_t i = 0; i < _instances.size(); ++i) {
        const InstanceSlot &slot = *_instances[i];
        routed.push_back(
            {slot.chain_tag, static_cast<uint32_t>(i), slot.lcore, slot.ring, &lcore_state(slot.lcore).wakeup});
    }
    for (auto &lcore : _lcores) {
        if (lcore->dispatcher != nullptr) {
            lcore->dispatcher->router().publish(io::RouteTable::spread(routed, lcore->id));
        }
    }
}

void Dataplane::build_tx_paths()
{
    // TX paths: the main lcore owns queue 0 of every port; each worker lcore
    // takes the next queue, and shares the port's TX ring when none is left.
    _tx_rings.assign(_ports.size(), nullptr);
    _tx_ring_dropped = std::vector<Counter>(_ports.size());
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
                _tx_rings[p] = rte_ring_create(name.c_str(), 16384, static_cast<int>(rte_socket_id()), RING_F_SC_DEQ);
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
            transmit(main, static_cast<uint16_t>(p), mbufs, static_cast<uint16_t>(n), _tx_ring_dropped[p]);
            moved += n;
        }
    }
    return moved;
}

void Dataplane::LcoreSink::run_in_place(uint32_t instance, rte_mbuf **mbufs, serpens_pkt *views, unsigned n,
                                        uint64_t now)
{
    _dp.run_views(_lcore, *_dp._instances[instance], mbufs, views, n, now);
}

void Dataplane::LcoreSink::transmit(uint16_t port_index, rte_mbuf **mbufs, uint16_t n, Counter &dropped)
{
    _dp.transmit(_lcore, port_index, mbufs, n, dropped);
}

uint32_t Dataplane::serve(Lcore &lcore, InstanceSlot &slot, uint64_t now)
{
    rte_mbuf *mbufs[max_burst];
    const unsigned n =
        rte_ring_dequeue_burst(slot.ring, reinterpret_cast<void **>(mbufs), _options.dispatch.burst, nullptr);
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
            self->lcore_loop(*lcore);
        }
    }
    return 0;
}

bool Dataplane::rings_empty(const Lcore &lcore) const
{
    for (const InstanceSlot *slot : lcore.instances) {
        if (!rte_ring_empty(slot->ring)) {
            return false;
        }
    }
    return true;
}

bool Dataplane::finished(const Lcore &lcore) const
{
    // Once every receiver has stopped, no ring gets another packet.
    if (!_rx_stopped.load(std::memory_order_acquire) ||
        _receivers_stopped.load(std::memory_order_acquire) < _receivers || !rings_empty(lcore)) {
        return false;
    }
    if (!lcore.main) {
        return true;
    }
    // The main lcore sends on what the others put in the TX rings, so it
    // finishes last.
    for (const auto &other : _lcores) {
        if (!other->main && !other->done.load(std::memory_order_acquire)) {
            return false;
        }
    }
    for (rte_ring *ring : _tx_rings) {
        if (ring != nullptr && !rte_ring_empty(ring)) {
            return false;
        }
    }
    return true;
}

bool Dataplane::should_stop(uint64_t start, uint64_t now)
{
    if (_stop.load(std::memory_order_acquire)) {
        return true;
    }
    if (_options.duration_s > 0 && now - start >= static_cast<uint64_t>(_options.duration_s * 1e9)) {
        return true;
    }
    if (_options.idle_exit_s > 0) {
        uint64_t last_rx = start;
        for (const auto &lcore : _lcores) {
            last_rx = std::max(last_rx, lcore->last_rx.load(std::memory_order_relaxed));
        }
        // Another lcore may have read its clock after ours.
        if (now > last_rx && now - last_rx >= static_cast<uint64_t>(_options.idle_exit_s * 1e9)) {
            spdlog::info("no packet received for {} s: stopping (--idle-exit)", _options.idle_exit_s);
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
        if (rings_empty(*other)) {
            other->pending_since = 0;
        } else if (other->pending_since == 0) {
            other->pending_since = now;
        } else if (now - other->pending_since >= deadline_ns) {
            other->wakeup.wake();
            other->pending_since = 0;
        }
    }
}

void Dataplane::lcore_loop(Lcore &lcore)
{
    // An lcore that does not receive keeps polling its rings for this long
    // after the last packet before it sleeps: under steady traffic one that
    // sleeps between bursts pays a futex round trip (tens of µs) per wake-up
    // and starves; measured with serpens-bench throughput, 2 lcores,
    // 4096-flow replay: 4.6-6.8 Mpps with a 2048-poll spin, the worker on CPU
    // 13% of the time.
    constexpr uint64_t spin_ns = 500'000;
    // Its sleep is cut short by a dispatcher or the main lcore; the timeout
    // is only a safety net.
    constexpr uint32_t safety_sleep_us = 100'000;
    LcoreSink sink(*this, lcore);
    const uint64_t start = monotonic_ns();
    uint64_t last_work = start;
    uint32_t idle = 0;
    bool receiving = lcore.dispatcher != nullptr;
    auto sleep = [&](uint32_t us) {
        lcore.wakeup.prepare_sleep();
        if (!rings_empty(lcore)) { // re-checked after announcing it: no wake-up is missed
            lcore.wakeup.cancel_sleep();
            return;
        }
        lcore.wakeup.wait(us);
    };
    for (;;) {
        const uint64_t now = monotonic_ns();
        if (lcore.main && !_rx_stopped.load(std::memory_order_relaxed) && should_stop(start, now)) {
            // Stop receiving; everything already received is still delivered.
            _rx_stopped.store(true, std::memory_order_release);
            for (auto &other : _lcores) {
                other->wakeup.wake();
            }
        }
        uint32_t work = 0;
        if (receiving && _rx_stopped.load(std::memory_order_acquire)) {
            receiving = false;
            lcore.dispatcher->router().set_dispatcher_running(false);
            if (_receivers_stopped.fetch_add(1, std::memory_order_acq_rel) + 1 == _receivers) {
                for (auto &other : _lcores) {
                    other->wakeup.wake(); // the last one: the rings get nothing more
                }
            }
        }
        if (receiving) {
            const io::Dispatcher::Poll got = lcore.dispatcher->poll(now, sink);
            if (got.received > 0 || got.backlogged) {
                lcore.last_rx.store(now, std::memory_order_relaxed); // a backlogged lcore is not idle
            }
            work += got.received;
        }
        for (InstanceSlot *slot : lcore.instances) {
            work += serve(lcore, *slot, now);
        }
        if (lcore.main) {
            work += drain_tx_rings();
            wake_overdue(now);
        }
        if (work > 0) {
            last_work = now;
            idle = 0;
            continue;
        }
        if (finished(lcore)) {
            break;
        }
        if (receiving || (lcore.main && _main_polls)) {
            // Back off while idle: pause first, then sleep longer and longer
            // up to idle_sleep_us, so an idle host burns no CPU and a busy one
            // no time.
            ++idle;
            if (idle < 1024 || _options.idle_sleep_us == 0) {
                rte_pause();
            } else {
                sleep(std::min<uint32_t>(_options.idle_sleep_us, (idle - 1023) * 10));
            }
        } else if (now - last_work < spin_ns) {
            rte_pause();
        } else {
            sleep(safety_sleep_us);
        }
    }
    lcore.done.store(true, std::memory_order_release);
}

void Dataplane::prepare()
{
    if (_prepared) {
        return;
    }
    build_dispatchers();
    build_routes();
    build_tx_paths();
    // The main lcore polls for duties of its own when some lcore transmits
    // through it, or sleeps with nobody but it to notice a waiting packet.
    _main_polls = false;
    for (rte_ring *ring : _tx_rings) {
        _main_polls = _main_polls || ring != nullptr;
    }
    for (const auto &lcore : _lcores) {
        _main_polls = _main_polls || (lcore->dispatcher == nullptr && !lcore->instances.empty());
    }
    _prepared = true;
}

io::DispatchTotals Dataplane::dispatch_totals() const
{
    io::DispatchTotals totals;
    totals.rx.assign(_ports.size(), 0);
    totals.rule_matched.assign(_gateway.rules().size(), 0);
    for (const auto &lcore : _lcores) {
        if (lcore->dispatcher != nullptr) {
            totals.add(lcore->dispatcher->counters());
        }
    }
    return totals;
}

std::vector<Dataplane::LcoreTotals> Dataplane::lcore_totals() const
{
    std::vector<LcoreTotals> out;
    for (const auto &lcore : _lcores) {
        LcoreTotals t;
        t.id = lcore->id;
        if (lcore->dispatcher != nullptr) {
            t.rx_queues = lcore->dispatcher->rx_queues();
            for (const Counter &c : lcore->dispatcher->counters().rx) {
                t.rx += c.load(std::memory_order_relaxed);
            }
        }
        out.push_back(std::move(t));
    }
    return out;
}

void Dataplane::run()
{
    prepare();
    for (auto &lcore : _lcores) {
        if (lcore->dispatcher != nullptr) {
            lcore->dispatcher->router().set_dispatcher_running(true);
        }
    }
    for (auto &lcore : _lcores) {
        if (!lcore->main) {
            if (int rc = rte_eal_remote_launch(worker_entry, this, lcore->id); rc != 0) {
                throw Error("cannot launch lcore " + std::to_string(lcore->id) + ": " + rte_strerror(-rc));
            }
        }
    }
    lcore_loop(*_lcores.front());
    rte_eal_mp_wait_lcore();
    _port_totals.clear();
    for (const io::Port &port : _ports) {
        rte_eth_stats stats{};
        rte_eth_stats_get(port.id, &stats);
        _port_totals.push_back({stats.opackets, stats.imissed, stats.oerrors});
    }
}

} // namespace serpens
