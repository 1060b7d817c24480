#include "instance/dataplane.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/fault.h"
#include "io/mbuf.h"
#include "io/vxlan_io.h"

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <span>
#include <thread>

namespace serpens {

// How often an instance sweeps its parts of the flow table for idle flows.
inline constexpr uint64_t flow_sweep_period_ns = 1'000'000;
static_assert(state::flow_parts == io::route_buckets, "a flow-table part is a router bucket: one owner each");
static_assert(io::max_peer == state::flow_max_peer, "a peer number is what a flow-table entry keeps");

namespace {

// One step of the control side's wait for an lcore.  It spins first: a yield
// hands this CPU to any runnable thread (a cold start's NF init, a state
// rebalance) for a whole time slice, milliseconds during which the gaining
// instances of a handover stay held.  serpens-bench scale on 2 CPUs, three
// runs of 30 events: pause p99 38-557 us (once 3.9 ms) with yield, 25-40 us
// spinning.  Past spin_ns it yields, so an lcore that is itself descheduled
// is not waited for at full burn.
class LcoreWait {
public:
    void step() noexcept
    {
        const uint64_t now = monotonic_ns();
        if (_since == 0) {
            _since = now;
        }
        if (now - _since < spin_ns) {
            rte_pause();
        } else {
            std::this_thread::yield();
        }
    }

private:
    static constexpr uint64_t spin_ns = 200'000;
    uint64_t _since = 0;
};

} // namespace

const char *slot_state_name(SlotState state) noexcept
{
    switch (state) {
    case SlotState::empty:
        return "empty";
    case SlotState::pooled:
        return "pooled";
    case SlotState::active:
        return "active";
    case SlotState::parked:
        return "parked";
    }
    return "?";
}

Dataplane::Dataplane(std::vector<io::Port> ports, io::Gateway gateway, DataplaneOptions options)
    : _ports(std::move(ports)), _gateway(std::move(gateway)), _options(options)
{
    _options.dispatch.burst = std::clamp<uint32_t>(_options.dispatch.burst, 1, max_burst);
    _ns_per_tsc = 1e9 / static_cast<double>(rte_get_tsc_hz());
    _slots.resize(std::max<uint32_t>(_options.max_slots, 1));
    auto main_lcore = std::make_unique<Lcore>();
    main_lcore->id = rte_get_main_lcore();
    main_lcore->main = true;
    _lcores.push_back(std::move(main_lcore));
    // Every enabled lcore runs a loop, so that an instance can be placed on
    // any of them at run time; one without instances sleeps.
    unsigned id = 0;
    RTE_LCORE_FOREACH_WORKER(id) { lcore_state(id); }
    for (auto &lcore : _lcores) {
        lcore->instances.store(new InstanceList(), std::memory_order_release);
    }
    find_bucket_homes(_options.receivers);
}

void Dataplane::find_bucket_homes(const std::vector<unsigned> &receivers)
{
    auto port = std::find_if(_ports.begin(), _ports.end(), [](const io::Port &p) { return p.rx_queues > 1; });
    if (port == _ports.end() || receivers.empty()) {
        return;
    }
    // Queue q of each port is received by receiver q (mod their number),
    // as build_dispatchers deals them.
    _bucket_homes.resize(io::route_buckets);
    const auto reta_size = static_cast<uint16_t>(port->rss_table.size());
    for (uint32_t b = 0; b < io::route_buckets; ++b) {
        _bucket_homes[b] = receivers[io::bucket_queue(b, port->rx_queues, reta_size) % receivers.size()];
    }
}

Dataplane::~Dataplane()
{
    for (auto &lcore : _lcores) {
        delete lcore->instances.load(std::memory_order_acquire);
    }
    for (auto &slot : _slots) {
        if (slot != nullptr) {
            rte_ring_free(slot->ring);
        }
    }
    for (rte_ring *ring : _tx_rings) {
        rte_ring_free(ring);
    }
}

Dataplane::Lcore *Dataplane::find_lcore(unsigned id) const
{
    for (const auto &lcore : _lcores) {
        if (lcore->id == id) {
            return lcore.get();
        }
    }
    return nullptr;
}

Dataplane::Lcore &Dataplane::lcore_state(unsigned id)
{
    if (Lcore *lcore = find_lcore(id)) {
        return *lcore;
    }
    auto lcore = std::make_unique<Lcore>();
    lcore->id = id;
    _lcores.push_back(std::move(lcore));
    return *_lcores.back();
}

std::vector<unsigned> Dataplane::lcore_ids() const
{
    std::vector<unsigned> ids;
    for (const auto &lcore : _lcores) {
        ids.push_back(lcore->id);
    }
    return ids;
}

uint64_t Dataplane::busy_ns(unsigned lcore) const noexcept
{
    const Lcore *l = find_lcore(lcore);
    return l != nullptr ? l->busy_ns.load(std::memory_order_relaxed) : 0;
}

InstanceSlot &Dataplane::slot(const std::string &chain_name, uint32_t tag, uint32_t index, uint16_t egress,
                              uint32_t ring_size)
{
    for (const auto &existing : slots()) {
        if (existing->chain_tag == tag && existing->index == index) {
            return *existing;
        }
    }
    const std::size_t number = _slot_count.load(std::memory_order_relaxed);
    if (number == _slots.size()) {
        throw Error("chain '" + chain_name + "' instance " + std::to_string(index) +
                    ": the host has no instance slot left (" + std::to_string(_slots.size()) + " in all)");
    }
    auto slot = std::make_unique<InstanceSlot>();
    slot->chain_name = chain_name;
    slot->chain_tag = tag;
    slot->index = index;
    slot->number = static_cast<uint32_t>(number);
    slot->egress = egress;
    slot->peering = &peering(tag);
    std::string ring_name = "sp_i" + std::to_string(number);
    // Every receiving lcore may produce; the instance's lcore consumes.
    slot->ring = rte_ring_create(ring_name.c_str(), ring_size, static_cast<int>(rte_socket_id()), RING_F_SC_DEQ);
    if (slot->ring == nullptr) {
        throw Error("cannot create the ring of chain '" + chain_name + "' instance " + std::to_string(index) + ": " +
                    rte_strerror(rte_errno));
    }
    _slots[number] = std::move(slot);
    _slot_count.store(number + 1, std::memory_order_release);
    return *_slots[number];
}

void Dataplane::synchronize()
{
    // An lcore that reads the new token has finished the iteration in which
    // it may have loaded an old pointer (its report is a release store after
    // it), and its acquire load of the token orders its next loads after our
    // exchange.  So one report does, where counting iterations needs two: an
    // iteration's end could be observed before that iteration's loads.
    const uint64_t token = _grace.fetch_add(1, std::memory_order_seq_cst) + 1;
    for (auto &lcore : _lcores) {
        lcore->wakeup.wake(); // a sleeper completes no iteration
    }
    LcoreWait wait;
    for (auto &lcore : _lcores) {
        while (lcore->running.load(std::memory_order_acquire) &&
               lcore->passed.load(std::memory_order_acquire) < token) {
            lcore->wakeup.wake();
            wait.step();
        }
    }
}

void Dataplane::publish_instances(Lcore &lcore, InstanceList list)
{
    const InstanceList *old = lcore.instances.exchange(new InstanceList(std::move(list)), std::memory_order_acq_rel);
    synchronize();
    delete old;
}

void Dataplane::update_main_polls()
{
    // The main lcore polls for duties of its own when some lcore transmits
    // through it, or when an lcore that does not receive has instances: the
    // main lcore is who notices their packets waiting past the deadline.
    bool polls = false;
    for (rte_ring *ring : _tx_rings) {
        polls = polls || ring != nullptr;
    }
    for (const auto &lcore : _lcores) {
        polls = polls || (lcore->dispatcher == nullptr && !lcore->instances.load()->empty());
    }
    const bool polled = _main_polls.exchange(polls);
    if (polls && !polled) {
        _lcores.front()->wakeup.wake(); // it may sleep until stop()
    }
}

void Dataplane::attach(InstanceSlot &slot, unsigned lcore_id, std::unique_ptr<ChainInstance> chain)
{
    Lcore *lcore = find_lcore(lcore_id);
    if (lcore == nullptr) {
        throw Error("chain '" + slot.chain_name + "' instance " + std::to_string(slot.index) + ": lcore " +
                    std::to_string(lcore_id) + " is not enabled; list it in the EAL -l argument");
    }
    slot.chain = std::move(chain);
    slot.chain->steer_by(&slot.peering->steering);
    slot.lcore = lcore_id;
    slot.gate.held.store(false);
    slot.last_batch_ns.store(monotonic_ns(), std::memory_order_relaxed); // idle from now, not from boot
    slot.state = SlotState::active;
    InstanceList list = *lcore->instances.load();
    list.push_back(&slot);
    publish_instances(*lcore, std::move(list));
    if (_prepared) {
        update_main_polls();
    }
}

std::unique_ptr<ChainInstance> Dataplane::detach(InstanceSlot &slot)
{
    Lcore &lcore = *find_lcore(slot.lcore);
    InstanceList list = *lcore.instances.load();
    std::erase(list, &slot);
    wait_processed(slot); // owns no bucket: nothing more comes in
    publish_instances(lcore, std::move(list));
    slot.state = SlotState::empty;
    if (_prepared) {
        update_main_polls();
    }
    return std::move(slot.chain);
}

const io::BucketOwners &Dataplane::owners(uint32_t tag) const
{
    static const io::BucketOwners none;
    return tag < _owners.size() ? _owners[tag] : none;
}

void Dataplane::publish_routes()
{
    std::vector<io::RoutedInstance> routed;
    for (const auto &slot : slots()) {
        if (on_lcore(slot->state)) {
            routed.push_back({slot->chain_tag, slot->number, slot->lcore, slot->ring, &find_lcore(slot->lcore)->wakeup,
                              &slot->gate, slot->state == SlotState::parked});
        }
    }
    std::vector<std::unique_ptr<const io::RouteTable>> old;
    for (auto &lcore : _lcores) {
        if (lcore->dispatcher != nullptr) {
            old.push_back(lcore->dispatcher->router().exchange(io::RouteTable::build(routed, _owners, lcore->id)));
        }
    }
    synchronize(); // the old tables are freed on return
}

void Dataplane::wait_processed(const InstanceSlot &slot)
{
    // Every packet queued to the slot so far sits below the producer's tail;
    // the slot publishes `served` after it ran (and transmitted) a batch.
    const uint32_t queued = __atomic_load_n(&slot.ring->prod.tail, __ATOMIC_ACQUIRE);
    Lcore &lcore = *find_lcore(slot.lcore);
    auto processed = [&] { return static_cast<int32_t>(slot.served.load(std::memory_order_acquire) - queued) >= 0; };
    const uint64_t start = monotonic_ns();
    bool warned = false;
    LcoreWait wait;
    while (!processed()) {
        lcore.wakeup.wake();
        wait.step();
        if (!warned && monotonic_ns() - start > 1'000'000'000) {
            spdlog::warn("handover: chain '{}' instance {} on lcore {} has not processed its queue for 1 s",
                         slot.chain_name, slot.index, slot.lcore);
            warned = true;
        }
    }
    // What it transmitted through the main lcore must have left too before
    // the next owner's packets can, or the main lcore could send them first.
    if (!lcore.tx.empty() && lcore.tx[slot.egress].ring != nullptr) {
        rte_ring *tx = lcore.tx[slot.egress].ring;
        const uint32_t sent = __atomic_load_n(&tx->prod.tail, __ATOMIC_ACQUIRE);
        Lcore &main = *_lcores.front();
        while (static_cast<int32_t>(__atomic_load_n(&tx->cons.tail, __ATOMIC_ACQUIRE) - sent) < 0 &&
               main.running.load(std::memory_order_acquire)) {
            main.wakeup.wake();
            wait.step();
        }
    }
}

Dataplane::Handover Dataplane::assign(uint32_t tag, io::BucketOwners owners)
{
    if (_owners.size() <= tag) {
        _owners.resize(tag + 1);
    }
    const io::BucketOwners &before = _owners[tag];
    std::vector<InstanceSlot *> gaining;
    std::vector<InstanceSlot *> losing;
    Handover result;
    auto note = [](std::vector<InstanceSlot *> &set, InstanceSlot *slot) {
        if (std::find(set.begin(), set.end(), slot) == set.end()) {
            set.push_back(slot);
        }
    };
    const bool had = !before.empty();
    const bool has = !owners.empty();
    for (uint32_t b = 0; (had || has) && b < io::route_buckets; ++b) {
        if (had && has && before[b] == owners[b]) {
            continue;
        }
        ++result.moved;
        if (has) {
            note(gaining, _slots[owners[b]].get());
        }
        if (had) {
            note(losing, _slots[before[b]].get());
        }
    }
    if (result.moved == 0) {
        return result;
    }
    const uint64_t start = monotonic_ns();
    // Hold the gaining instances before any packet can reach them.
    for (InstanceSlot *slot : gaining) {
        slot->gate.held.store(true, std::memory_order_seq_cst);
    }
    // Flow-table sweeps: meanwhile only the buckets an instance keeps;
    // publish_routes() waits out the lcore iterations still sweeping the
    // others.
    for (auto *set : {&gaining, &losing}) {
        for (InstanceSlot *slot : *set) {
            set_sweep_parts(*slot, before, owners);
        }
    }
    _owners[tag] = std::move(owners);
    publish_routes(); // returns once no dispatcher uses the old owners
    for (InstanceSlot *slot : losing) {
        wait_processed(*slot);
    }
    for (InstanceSlot *slot : gaining) {
        set_sweep_parts(*slot, _owners[tag], _owners[tag]); // the losers are done with them
    }
    for (InstanceSlot *slot : gaining) {
        if (slot->state != SlotState::parked) {
            slot->gate.held.store(false, std::memory_order_release);
            find_lcore(slot->lcore)->wakeup.wake();
        }
    }
    result.pause_ns = monotonic_ns() - start;
    return result;
}

void Dataplane::set_sweep_parts(InstanceSlot &slot, const io::BucketOwners &a, const io::BucketOwners &b)
{
    std::array<uint64_t, io::route_buckets / 64> bits{};
    for (uint32_t bucket = 0; bucket < io::route_buckets && !a.empty() && !b.empty(); ++bucket) {
        if (a[bucket] == slot.number && b[bucket] == slot.number) {
            bits[bucket / 64] |= uint64_t{1} << (bucket % 64);
        }
    }
    for (std::size_t w = 0; w < bits.size(); ++w) {
        slot.sweep_parts[w].store(bits[w], std::memory_order_release);
    }
}

void Dataplane::park(InstanceSlot &slot)
{
    slot.state = SlotState::parked;
    publish_routes(); // dispatchers now open its gate on arrival
    slot.gate.held.store(true, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // A packet queued before it saw the gate held has nobody to open it.
    if (!rte_ring_empty(slot.ring) && slot.gate.held.exchange(false)) {
        find_lcore(slot.lcore)->wakeup.wake();
    }
    // Whatever its lcore was running of it finishes before parking counts.
    synchronize();
}

void Dataplane::unpark(InstanceSlot &slot)
{
    slot.state = SlotState::active;
    slot.gate.held.store(false, std::memory_order_release);
    find_lcore(slot.lcore)->wakeup.wake();
    publish_routes();
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
    for (const auto &slot : slots()) {
        if (slot->state == SlotState::active) {
            instance_lcores.push_back(slot->lcore);
        }
    }
    const std::vector<unsigned> receivers = receiving_lcores(instance_lcores, rte_get_main_lcore());
    // The instances the host started with chose these receivers, so they
    // are options.receivers, which set the homes already (read by scaling
    // from now on), unless it gave none.
    if (_bucket_homes.empty()) {
        find_bucket_homes(receivers);
    }
    // Queue q of each port goes to receiver q (a port has no more queues than
    // there are receivers, unless its rx_queues says so: then they wrap).
    std::vector<std::vector<io::RxQueue>> queues(receivers.size());
    for (uint16_t p = 0; p < _ports.size(); ++p) {
        for (uint16_t q = 0; q < _ports[p].rx_queues; ++q) {
            queues[q % receivers.size()].push_back({p, q});
        }
    }
    io::DispatchOptions options = _options.dispatch;
    options.producers =
        static_cast<uint32_t>(std::count_if(queues.begin(), queues.end(), [](const auto &q) { return !q.empty(); }));
    _receivers = 0;
    for (std::size_t r = 0; r < receivers.size(); ++r) {
        if (queues[r].empty()) {
            continue; // every port has fewer queues than there are receivers
        }
        lcore_state(receivers[r]).dispatcher = std::make_unique<io::Dispatcher>(
            _ports, _gateway, _wake_threshold, std::move(queues[r]), options, _underlay.get());
        ++_receivers;
    }
}

void Dataplane::build_tx_paths()
{
    // TX paths: the main lcore owns queue 0 of every port; each worker lcore
    // takes the next queue, and shares the port's TX ring when none is left.
    _tx_rings.assign(_ports.size(), nullptr);
    _tx_ring_dropped = LineVector<Counter>(_ports.size());
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
        // Through the main lcore, which drains the ring every loop and waits
        // for no other lcore: waiting for room always ends, and it is
        // back-pressure (this lcore stops taking packets, its rings fill, RX
        // pauses) where a drop would lose packets a slow main lcore could
        // still have sent.  Only the main lcore's own transmit may drop.
        Wakeup &main = _lcores.front()->wakeup;
        for (;;) {
            sent += static_cast<uint16_t>(
                rte_ring_enqueue_burst(path.ring, reinterpret_cast<void *const *>(mbufs + sent), n - sent, nullptr));
            if (sent == n) {
                break;
            }
            if (main.sleeping()) {
                main.wake();
            }
            rte_pause();
        }
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

void Dataplane::LcoreSink::run_in_place(uint32_t instance, rte_mbuf **mbufs, serpens_pkt *views,
                                        const net::FlowKey *keys, unsigned n, uint64_t now, uint64_t rx_tsc,
                                        const uint8_t *peer_marks)
{
    _dp.run_views(_lcore, *_dp._slots[instance], mbufs, views, keys, n, now, peer_marks);
    _dp.record_latency(_lcore, rx_tsc);
}

void Dataplane::record_latency(Lcore &lcore, uint64_t rx_tsc) const noexcept
{
    if (rx_tsc == 0) {
        return; // not sampled
    }
    lcore.batch_latency.record(static_cast<uint64_t>(static_cast<double>(rte_rdtsc() - rx_tsc) * _ns_per_tsc));
}

void Dataplane::LcoreSink::transmit(uint16_t port_index, rte_mbuf **mbufs, uint16_t n, Counter &dropped)
{
    _dp.transmit(_lcore, port_index, mbufs, n, dropped);
}

uint32_t Dataplane::serve(Lcore &lcore, InstanceSlot &slot, uint64_t now)
{
    if (slot.gate.held.load(std::memory_order_acquire)) {
        return 0; // a handover (or parking) holds it
    }
    rte_mbuf *mbufs[max_burst];
    const unsigned n =
        rte_ring_dequeue_burst(slot.ring, reinterpret_cast<void **>(mbufs), _options.dispatch.burst, nullptr);
    if (n > 0) {
        const uint64_t rx_tsc = io::meta_of(mbufs[0]).rx_tsc; // the batch's oldest packet
        run_batch(lcore, slot, mbufs, n, now);
        record_latency(lcore, rx_tsc);
        // Processed, transmitted: a handover may let the next owner go.
        slot.served.store(slot.served.load(std::memory_order_relaxed) + n, std::memory_order_release);
        if (const uint64_t woken = slot.gate.woken_ns.load(std::memory_order_relaxed); woken != 0) {
            slot.wake_latency_ns.store(monotonic_ns() - woken, std::memory_order_relaxed);
            slot.gate.woken_ns.store(0, std::memory_order_relaxed);
        }
    }
    if (now >= slot.next_sweep_ns) {
        // Idle flows go a little at a time, between batches.
        slot.next_sweep_ns = now + flow_sweep_period_ns;
        uint64_t parts[io::route_buckets / 64];
        for (std::size_t w = 0; w < std::size(parts); ++w) {
            parts[w] = slot.sweep_parts[w].load(std::memory_order_acquire);
        }
        slot.chain->expire_flows(parts, now, flow_sweep_period_ns);
    }
    return n;
}

void Dataplane::run_batch(Lcore &lcore, InstanceSlot &slot, rte_mbuf **mbufs, unsigned n, uint64_t now)
{
    serpens_pkt views[max_burst];
    uint8_t marks[max_burst];
    uint8_t any_mark = 0;
    for (unsigned i = 0; i < n; ++i) {
        io::load_view(mbufs[i], views[i]);
        marks[i] = io::meta_of(mbufs[i]).peer_mark;
        any_mark |= marks[i];
    }
    run_views(lcore, slot, mbufs, views, nullptr, n, now, any_mark != 0 ? marks : nullptr);
}

void Dataplane::run_views(Lcore &lcore, InstanceSlot &slot, rte_mbuf **mbufs, serpens_pkt *views,
                          const net::FlowKey *keys, unsigned n, uint64_t now, const uint8_t *peer_marks)
{
    uint64_t bytes = 0;
    for (unsigned i = 0; i < n; ++i) {
        bytes += views[i].len;
    }
    // Packets a peer processed for us and sends back: the chain passes them.
    uint8_t returned_from[max_burst];
    unsigned n_returned = 0;
    if (peer_marks != nullptr) {
        for (unsigned i = 0; i < n; ++i) {
            const bool back = (peer_marks[i] & io::peer_mark_returned) != 0;
            returned_from[i] = back ? io::peer_of_mark(peer_marks[i]) : 0;
            n_returned += back ? 1 : 0;
        }
    }
    uint16_t labels[max_burst];
    const uint32_t reached = slot.chain->run(views, n, labels, now, n_returned > 0 ? returned_from : nullptr, keys);

    rte_mbuf *out[max_burst];
    rte_mbuf *drops[max_burst];
    uint16_t n_out = 0;
    uint16_t n_drop = 0;
    // Towards peers: flows they serve (unprocessed), and packets processed
    // here for them (back to where they came from).
    rte_mbuf *remote[max_burst];
    uint8_t remote_peer[max_burst];
    uint32_t remote_hash[max_burst];
    unsigned n_remote = 0;
    rte_mbuf *back[max_burst];
    uint8_t back_peer[max_burst];
    uint32_t back_hash[max_burst];
    unsigned n_back = 0;
    const uint8_t *remote_peers = slot.chain->remote_peers();
    rte_mbuf **egress = out;
    if (reached == n && peer_marks == nullptr) {
        // The usual batch: every packet reached egress, and none came from
        // or goes to a peer.  It leaves as it came, with nothing to sort.
        egress = mbufs;
        n_out = static_cast<uint16_t>(n);
    }
    // Else each packet goes where its label says.
    for (unsigned i = 0; i < n && egress == out; ++i) {
        if (labels[i] == SERPENS_LABEL_OUT) {
            const uint8_t origin = peer_marks != nullptr && (peer_marks[i] & io::peer_mark_returned) == 0
                                       ? io::peer_of_mark(peer_marks[i])
                                       : 0;
            if (origin != 0) {
                back[n_back] = mbufs[i];
                back_peer[n_back] = origin;
                back_hash[n_back++] = views[i].flow_hash;
            } else {
                out[n_out++] = mbufs[i];
            }
            // Passed through untouched: the peer ran it, and bills it.
            bytes -= n_returned > 0 && returned_from[i] != 0 ? views[i].len : 0;
        } else if (labels[i] == label_remote) {
            bytes -= views[i].len; // untouched: no NF saw it
            remote[n_remote] = mbufs[i];
            remote_peer[n_remote] = remote_peers[i];
            remote_hash[n_remote++] = views[i].flow_hash;
        } else {
            drops[n_drop++] = mbufs[i];
        }
    }
    // Metered here: what the chain processed, not what only passed through
    // it on the way to or from a peer.
    bump(slot.packets, n - n_remote - n_returned);
    bump(slot.bytes, bytes);
    bump(slot.batches);
    slot.last_batch_ns.store(now, std::memory_order_relaxed);
    bump(slot.dropped, n_drop);
    bump(slot.out, n_out);
    if (n_drop > 0) {
        rte_pktmbuf_free_bulk(drops, n_drop);
    }
    if (n_out > 0) {
        transmit(lcore, slot.egress, egress, n_out, slot.tx_dropped);
    }
    if (n_remote > 0) {
        bump(slot.to_peers, n_remote);
        send_to_peers(lcore, slot, remote, remote_peer, remote_hash, n_remote, 0);
    }
    if (n_back > 0) {
        bump(slot.for_peers, n_back);
        std::atomic<uint64_t> &first = slot.peering->first_served_ns[back_peer[0]];
        if (first.load(std::memory_order_relaxed) == 0) {
            first.store(now, std::memory_order_relaxed);
        }
        send_to_peers(lcore, slot, back, back_peer, back_hash, n_back, net::kVxlanReturned);
    }
}

void Dataplane::send_to_peers(Lcore &lcore, InstanceSlot &slot, rte_mbuf **mbufs, const uint8_t *peers,
                              const uint32_t *flow_hashes, unsigned n, uint8_t flags)
{
    rte_mbuf *ready[max_burst];
    uint32_t ready_hash[max_burst];
    const net::VxlanEncap *ready_tunnel[max_burst];
    uint32_t ready_tag[max_burst];
    rte_mbuf *drops[max_burst];
    uint16_t n_ready = 0;
    uint16_t n_drop = 0;
    for (unsigned i = 0; i < n; ++i) {
        // A peer that has not announced itself, or does not run the chain
        // for us (any more): nowhere to send it.
        const net::VxlanEncap *tunnel = _underlay != nullptr ? _underlay->tunnel(peers[i]) : nullptr;
        const uint32_t tag_plus_one =
            peers[i] <= io::max_peer ? slot.peering->tag_at_peer_plus_one[peers[i]].load(std::memory_order_relaxed) : 0;
        if (tunnel == nullptr || tag_plus_one == 0) {
            drops[n_drop++] = mbufs[i];
            continue;
        }
        ready[n_ready] = mbufs[i];
        ready_hash[n_ready] = flow_hashes[i];
        ready_tunnel[n_ready] = tunnel;
        ready_tag[n_ready++] = tag_plus_one - 1;
    }
    bump(slot.peer_dropped, n_drop);
    net::VxlanResult results[max_burst];
    io::encap_burst({ready, n_ready}, ready_tunnel, ready_tag, ready_hash, flags, results, lcore.vxlan);
    uint16_t n_sent = 0;
    for (uint16_t i = 0; i < n_ready; ++i) {
        if (results[i] == net::VxlanResult::ok) {
            ready[n_sent++] = ready[i];
        } else {
            drops[n_drop++] = ready[i]; // too big for the underlay, no headroom: counted by result
        }
    }
    if (n_drop > 0) {
        rte_pktmbuf_free_bulk(drops, n_drop);
    }
    if (n_sent > 0) {
        transmit(lcore, _underlay->port_index(), ready, n_sent, slot.tx_dropped);
    }
}

ChainPeering &Dataplane::peering(uint32_t tag)
{
    std::lock_guard lock(_peerings_mutex);
    if (tag >= _peerings.size()) {
        _peerings.resize(tag + 1);
    }
    if (_peerings[tag] == nullptr) {
        _peerings[tag] = std::make_unique<ChainPeering>();
    }
    return *_peerings[tag];
}

net::VxlanCounters Dataplane::vxlan_totals() const
{
    net::VxlanCounters total;
    for (const auto &lcore : _lcores) {
        total.add(lcore->vxlan);
        if (lcore->dispatcher != nullptr) {
            total.add(lcore->dispatcher->counters().vxlan);
        }
    }
    return total;
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

bool Dataplane::rings_empty(const InstanceList &list, bool servable)
{
    for (const InstanceSlot *slot : list) {
        if (!rte_ring_empty(slot->ring) && !(servable && slot->gate.held.load(std::memory_order_relaxed))) {
            return false;
        }
    }
    return true;
}

bool Dataplane::finished(const Lcore &lcore, const InstanceList &list) const
{
    // Once every receiver has stopped, no ring gets another packet.  A held
    // ring is not finished either: its gate opens when the handover ends.
    if (!_rx_stopped.load(std::memory_order_acquire) ||
        _receivers_stopped.load(std::memory_order_acquire) < _receivers || !rings_empty(list, false)) {
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
        if (other->main || !other->wakeup.sleeping() ||
            rings_empty(*other->instances.load(std::memory_order_acquire), true)) {
            if (other->pending_since != 0) {
                other->pending_since = 0; // written only when it changes: a running lcore reads beside it
            }
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
    uint64_t last_now = start;
    bool worked = false;
    uint32_t idle = 0;
    bool receiving = lcore.dispatcher != nullptr;
    // The main lcore looks whether to stop once a millisecond, not every
    // iteration: the idle test reads every lcore's last_rx, in the line each
    // of them writes every iteration.  A stop() it is woken for is seen at once.
    constexpr uint64_t stop_check_ns = 1'000'000;
    uint64_t next_stop_check = start;
    lcore.running.store(true, std::memory_order_release);
    for (;; lcore.passed.store(_grace.load(std::memory_order_acquire), std::memory_order_release)) {
        const uint64_t now = monotonic_ns();
        if (worked) {
            // The iteration that just ended did work: busy time, for the autoscaler.
            lcore.busy_ns.store(lcore.busy_ns.load(std::memory_order_relaxed) + (now - last_now),
                                std::memory_order_relaxed);
            lcore.busy_iterations.record(now - last_now);
        }
        last_now = now;
        // Loaded once per iteration; replaced ones are freed only after this
        // iteration (synchronize).
        const InstanceList &instances = *lcore.instances.load(std::memory_order_acquire);
        if (lcore.main && !_rx_stopped.load(std::memory_order_relaxed) &&
            (now >= next_stop_check || _stop.load(std::memory_order_relaxed))) {
            next_stop_check = now + stop_check_ns;
            if (should_stop(start, now)) {
                // Stop receiving; everything already received is still delivered.
                _rx_stopped.store(true, std::memory_order_release);
                for (auto &other : _lcores) {
                    other->wakeup.wake();
                }
            }
        }
        uint32_t work = 0;
        if (receiving && _rx_stopped.load(std::memory_order_acquire)) {
            receiving = false;
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
        for (InstanceSlot *slot : instances) {
            work += serve(lcore, *slot, now);
        }
        if (lcore.main) {
            work += drain_tx_rings();
            wake_overdue(now);
        }
        worked = work > 0;
        if (worked) {
            last_work = now;
            idle = 0;
            continue;
        }
        if (finished(lcore, instances)) {
            break;
        }
        auto sleep = [&](uint32_t us) {
            lcore.wakeup.prepare_sleep();
            // Re-checked after announcing it: no wake-up is missed.
            if (!rings_empty(instances, true)) {
                lcore.wakeup.cancel_sleep();
                return;
            }
            lcore.wakeup.wait(us);
        };
        if (receiving || (lcore.main && _main_polls.load(std::memory_order_relaxed))) {
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
    lcore.running.store(false, std::memory_order_release);
    lcore.done.store(true, std::memory_order_release);
}

void Dataplane::prepare()
{
    if (_prepared) {
        return;
    }
    build_dispatchers();
    build_tx_paths();
    publish_routes();
    _prepared = true;
    update_main_polls();
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
        for (std::size_t b = 0; b < LatencyHistogram::buckets; ++b) {
            if (const uint64_t n = lcore->batch_latency.count(b); n != 0) {
                t.batch_latency.emplace_back(LatencyHistogram::bucket_low(b), n);
            }
            if (const uint64_t n = lcore->busy_iterations.count(b); n != 0) {
                t.busy_iterations.emplace_back(LatencyHistogram::bucket_low(b), n);
            }
        }
        t.batch_latency_sum_ns = lcore->batch_latency.sum_ns();
        out.push_back(std::move(t));
    }
    return out;
}

void Dataplane::run()
{
    prepare();
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
