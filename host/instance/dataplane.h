#pragma once
// The lcores of one host and the chain instances that run on them.
//
// Every lcore that runs an instance at start receives on RX queues of its own
// when the ports have enough (a port with one queue is received by the first):
// its dispatcher (io/dispatcher.h) parses, classifies and routes each burst,
// runs the flows its own instances own in place, and passes the others into
// the owning instance's ring.  Each lcore serves its instances' rings too,
// runs the whole chain by function calls, and transmits on its own TX queue
// (or through the main lcore when the port has too few).  An lcore that
// neither receives nor has packets waiting sleeps on a futex; a dispatcher
// wakes it once its ring holds `wake_threshold` packets, and the main lcore
// once a packet has waited `wake_deadline_us`.  With no traffic at all nobody
// wakes it, and receiving lcores back off to short sleeps, so an idle host
// costs (almost) no CPU.
//
// Instances come and go while it runs (instance/manager.h decides which):
// attach and detach change an lcore's instance list, assign moves buckets
// between instances with a handover (io/router.h), park holds a chain at
// zero.  Every enabled lcore runs a loop, so an instance can be placed on any
// of them; those that had instances at the start receive.

#include "chain/runtime.h"
#include "core/cache_line.h"
#include "core/counter.h"
#include "core/latency.h"
#include "core/wakeup.h"
#include "io/dispatcher.h"
#include "io/gateway.h"
#include "io/port.h"
#include "io/underlay.h"

#include <rte_mbuf.h>
#include <rte_ring.h>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace serpens {

// What the instance manager has made of a slot.
enum class SlotState : uint8_t {
    empty,  // no chain instance (never created, or destroyed)
    pooled, // initialized, on no lcore, owns no bucket
    active, // on an lcore, may own buckets
    parked, // its chain is at zero: it owns every bucket, held, its ring buffers
};

const char *slot_state_name(SlotState state) noexcept;
// Whether a slot in `state` is on an lcore's list (and routed to).
constexpr bool on_lcore(SlotState state) noexcept { return state == SlotState::active || state == SlotState::parked; }

// A chain's side of other servers: where its new flows go (the instances
// read it), and the tag the chain has on each peer (what a packet sent there
// carries).  One per chain tag, for the dataplane's life; the control side
// writes it.
struct ChainPeering {
    FlowSteering steering;
    // Per peer: 1 + this chain's tag there; 0: the peer does not run it for us.
    std::array<std::atomic<uint32_t>, io::max_peer + 1> tag_at_peer_plus_one{};
    // Per peer: when an instance here first processed a packet of the chain
    // for it (monotonic ns, at the start of that lcore iteration) since the
    // control side set it to 0, at the peer's scale-out request.
    std::array<std::atomic<uint64_t>, io::max_peer + 1> first_served_ns{};
};

// One instance number of one chain.  A slot outlives the chain instances
// that fill it in turn, so its counters (metering included) keep counting
// across scale events; it is never freed while the dataplane lives.  Its
// lcore writes the counters per batch: they share no line with another
// lcore's slot, nor with what it reads (cache_line.h).
struct alignas(cache_line) InstanceSlot {
    std::string chain_name;
    uint32_t chain_tag = 0;
    uint32_t index = 0;  // instance number within its chain
    uint32_t number = 0; // the host's instance number (route targets name it)
    unsigned lcore = 0;  // where it runs while active or parked
    uint16_t egress = 0; // index into the host's ports
    rte_ring *ring = nullptr;
    ChainPeering *peering = nullptr; // its chain's, shared by every slot of the chain
    std::unique_ptr<ChainInstance> chain;
    SlotState state = SlotState::empty; // control side only
    io::InstanceGate gate;

    alignas(cache_line) Counter packets{0}; // metered: packets the chain ran on
    Counter bytes{0};                       // metered: their bytes as they entered the chain
    Counter out{0};                         // reached egress and were handed to TX
    Counter dropped{0};                     // dropped by an NF's verdict
    Counter tx_dropped{0}; // its TX queue was full (through the main lcore, nothing is dropped: it waits)
    Counter batches{0};
    Counter to_peers{0};                      // of a flow a peer serves: sent there unprocessed
    Counter for_peers{0};                     // processed here for a peer, and sent back to it
    Counter peer_dropped{0};                  // for a peer, or back from one, but no tunnel or tag to send it with
    std::atomic<uint32_t> served{0};          // ring position up to which packets were processed
    std::atomic<uint64_t> last_batch_ns{0};   // when it last processed a batch
    std::atomic<uint64_t> wake_latency_ns{0}; // last wake: from the packet that opened the gate to its processing
    // Router buckets (= flow-table parts) whose flows it may expire: bit b of
    // word b / 64.  Set by handovers so that a part has one sweeper, its
    // owner, and never while the previous owner may still touch it.
    std::array<std::atomic<uint64_t>, io::route_buckets / 64> sweep_parts{};
    uint64_t next_sweep_ns = 0; // its lcore's: when it next sweeps the flow table
};

struct DataplaneOptions {
    io::DispatchOptions dispatch; // burst (also of ring dequeues) and malformed packets
    uint32_t wake_deadline_us = 1000;
    uint32_t idle_sleep_us = 1000;
    double idle_exit_s = 0;    // 0: never; else stop after this long without RX
    double duration_s = 0;     // 0: until signalled
    uint32_t max_slots = 1024; // instance slots of all chains together
    // The lcores that receive, in RX queue order (receiving_lcores() of the
    // instances the host starts with); empty: those of the instances
    // attached when the lcores start.
    std::vector<unsigned> receivers;
};

class Dataplane {
public:
    Dataplane(std::vector<io::Port> ports, io::Gateway gateway, DataplaneOptions options);
    ~Dataplane();

    // The lcores that receive, in RX queue order, for instances on `lcores`:
    // each of them, the main lcore first; the main lcore alone when none.
    static std::vector<unsigned> receiving_lcores(const std::vector<unsigned> &lcores, unsigned main_lcore);

    // Cold path (the instance manager's thread, one call at a time; also
    // before run()).  The slot of (chain, index), created with its ring on
    // first use.  Throws Error when the host has no slot left.
    InstanceSlot &slot(const std::string &chain_name, uint32_t tag, uint32_t index, uint16_t egress,
                       uint32_t ring_size);
    // Puts `chain` into an empty or pooled-out slot and onto `lcore`'s list;
    // it owns no bucket yet.  Throws Error for an lcore the EAL did not enable.
    void attach(InstanceSlot &slot, unsigned lcore, std::unique_ptr<ChainInstance> chain);
    // Takes an instance that owns no bucket off its lcore and hands its chain
    // instance back, once no lcore can still be running it.
    std::unique_ptr<ChainInstance> detach(InstanceSlot &slot);

    // What a handover cost the data path.
    struct Handover {
        uint64_t pause_ns = 0; // the gaining instances were held this long
        uint32_t moved = 0;    // buckets that changed owner
    };
    // Gives chain `tag`'s buckets to `owners` (slot numbers of attached
    // slots; empty: the chain has none) without losing or reordering a
    // packet: see the handover in io/router.h.  A losing instance must not be
    // held.  Works before run() and after the lcores stopped too.
    Handover assign(uint32_t tag, io::BucketOwners owners);
    const io::BucketOwners &owners(uint32_t tag) const;
    // Per bucket, the lcore its packets arrive on when the ports' RSS
    // follows the buckets (io::bucket_queue of the first port with several
    // RX queues); empty when no port has several or the receivers are not
    // known yet.  Dealing each bucket to an instance there lets it run in
    // place.
    std::span<const unsigned> bucket_homes() const noexcept { return _bucket_homes; }
    // Parks the attached slot that owns every bucket of its chain: its lcore
    // stops running it, and its ring buffers the chain's packets until the
    // first one opens the gate (or unpark does).
    void park(InstanceSlot &slot);
    void unpark(InstanceSlot &slot);

    // Every slot created so far, by number.  Slots are never removed.
    std::span<const std::unique_ptr<InstanceSlot>> slots() const noexcept
    {
        return {_slots.data(), _slot_count.load(std::memory_order_acquire)};
    }
    // Time an lcore spent on iterations that did work (monotonic ns).
    uint64_t busy_ns(unsigned lcore) const noexcept;
    // Every lcore the dataplane runs on: the main one first.
    std::vector<unsigned> lcore_ids() const;

    // Cold path, once the instances of the start are attached and own their
    // buckets: sets up receiving (those instances' lcores receive) and TX
    // paths (run() does it when not done).  Call it before anything reads
    // counters from another thread.
    void prepare();
    // Runs until stop() (or idle-exit/duration); returns when every lcore has
    // drained its rings.  Call from the main lcore.
    void run();
    // Async-signal-safe.
    void stop() noexcept
    {
        _stop.store(true, std::memory_order_release);
        _lcores.front()->wakeup.wake(); // the main lcore may sleep
    }

    // True once the host stopped receiving: no more scale events.
    bool stopping() const noexcept { return _rx_stopped.load(std::memory_order_acquire); }

    std::atomic<uint32_t> &wake_threshold() noexcept { return _wake_threshold; }

    // Cold path, before prepare(): the port and tunnels to this host's peers.
    void set_underlay(std::unique_ptr<io::Underlay> underlay) { _underlay = std::move(underlay); }
    io::Underlay *underlay() const noexcept { return _underlay.get(); }
    // Chain `tag`'s peering, created on first use; it stays where it is.
    // Control side, any thread.
    ChainPeering &peering(uint32_t tag);
    // Every lcore's encapsulations and every dispatcher's decapsulations.
    net::VxlanCounters vxlan_totals() const;

    const std::vector<io::Port> &ports() const noexcept { return _ports; }
    // Device counters read after run() returns, before the ports close.
    struct PortTotals {
        uint64_t tx = 0;
        uint64_t rx_missed = 0;
        uint64_t tx_errors = 0;
    };
    const std::vector<PortTotals> &port_totals() const noexcept { return _port_totals; }
    const io::Gateway &gateway() const noexcept { return _gateway; }
    // Every dispatcher's counters, summed.
    io::DispatchTotals dispatch_totals() const;
    struct LcoreTotals {
        unsigned id = 0;
        std::vector<io::RxQueue> rx_queues;
        uint64_t rx = 0;
        std::vector<std::pair<uint64_t, uint64_t>> batch_latency;   // (bucket's lowest ns, batches), non-empty buckets
        uint64_t batch_latency_sum_ns = 0;                          // of every batch counted there
        std::vector<std::pair<uint64_t, uint64_t>> busy_iterations; // (bucket's lowest ns, iterations), non-empty
    };
    std::vector<LcoreTotals> lcore_totals() const;
    // Per port: packets of lcores without a TX queue of their own that the
    // port refused when the main lcore sent them on.
    uint64_t tx_ring_dropped(std::size_t port_index) const noexcept
    {
        return port_index < _tx_ring_dropped.size() ? _tx_ring_dropped[port_index].load() : 0;
    }

private:
    struct TxPath {
        uint16_t port_id = 0;
        int32_t queue = -1;       // own TX queue, or -1: through the port's TX ring
        rte_ring *ring = nullptr; // drained by the main lcore
    };
    // Loaded by its lcore every iteration: the list and its array on lines
    // of their own.
    struct alignas(cache_line) InstanceList : LineVector<InstanceSlot *> {
        using LineVector<InstanceSlot *>::LineVector;
    };
    // Laid out by who writes: what other threads read often (its wakeup,
    // its instance list) must not share a cache line with what the lcore
    // writes every iteration, or each read pulls the line across cores.
    struct Lcore {
        unsigned id = 0;
        bool main = false;
        // Replaced whole by the control side and freed after a grace period
        // (synchronize): the lcore loads it once per loop iteration.
        std::atomic<const InstanceList *> instances{nullptr};
        std::atomic<bool> running{false}; // in lcore_loop
        std::atomic<bool> done{false};
        std::vector<TxPath> tx;                     // per port index
        std::unique_ptr<io::Dispatcher> dispatcher; // null: this lcore does not receive
        alignas(cache_line) Wakeup wakeup;          // written by wakers and by the lcore when it sleeps
        uint64_t pending_since = 0;                 // main lcore only: when it saw packets waiting for this sleeper
        // Written by the lcore every iteration.
        // The grace token it read at the end of its last iteration: the
        // lists it loads from the next one on are those published before it.
        alignas(cache_line) std::atomic<uint64_t> passed{0};
        std::atomic<uint64_t> busy_ns{0}; // in iterations that did work
        std::atomic<uint64_t> last_rx{0}; // when it last received (or was held back)
        LatencyHistogram batch_latency;   // from a batch's RX to the end of its chain run (sampled)
        // How long each iteration that did work lasted.  Meanwhile the lcore
        // polls nothing, so this bounds how long it leaves a packet waiting:
        // a stall of its data path (a held state cell, a lock) shows here.
        LatencyHistogram busy_iterations;
        net::VxlanCounters vxlan; // its encapsulations towards peers
    };

    // An lcore's side of its dispatcher: in-place runs and transmits.
    class LcoreSink final : public io::LocalSink {
    public:
        LcoreSink(Dataplane &dp, Lcore &lcore) : _dp(dp), _lcore(lcore) {}
        void run_in_place(uint32_t instance, rte_mbuf **mbufs, serpens_pkt *views, const net::FlowKey *keys, unsigned n,
                          uint64_t now, uint64_t rx_tsc, const uint8_t *peer_marks) override;
        void transmit(uint16_t port_index, rte_mbuf **mbufs, uint16_t n, Counter &dropped) override;

    private:
        Dataplane &_dp;
        Lcore &_lcore;
    };

    static int worker_entry(void *arg);
    void lcore_loop(Lcore &lcore);
    // Main lcore: whether to stop receiving now (stop(), duration, idle exit).
    bool should_stop(uint64_t start, uint64_t now);
    // Whether the rings of `list` are empty; `servable`: only those of
    // instances whose gate is open.
    static bool rings_empty(const InstanceList &list, bool servable);
    bool finished(const Lcore &lcore, const InstanceList &list) const;
    uint32_t serve(Lcore &lcore, InstanceSlot &slot, uint64_t now);
    // A batch from an instance's ring: views rebuilt from the mbufs' metadata.
    void run_batch(Lcore &lcore, InstanceSlot &slot, rte_mbuf **mbufs, unsigned n, uint64_t now);
    // Runs the chain on views[i] of mbufs[i], then frees or transmits each:
    // to the chain's egress, or through a tunnel to the peer that serves its
    // flow or that it is served for.  keys, peer_marks: as io::LocalSink
    // has them (nullptr: none).
    void run_views(Lcore &lcore, InstanceSlot &slot, rte_mbuf **mbufs, serpens_pkt *views, const net::FlowKey *keys,
                   unsigned n, uint64_t now, const uint8_t *peer_marks);
    // Encapsulates mbufs[i] towards peers[i] with the chain's tag there and
    // `flags`, and sends them on the underlay; what cannot go is dropped and
    // counted.
    void send_to_peers(Lcore &lcore, InstanceSlot &slot, rte_mbuf **mbufs, const uint8_t *peers,
                       const uint32_t *flow_hashes, unsigned n, uint8_t flags);
    void transmit(Lcore &lcore, uint16_t port_index, rte_mbuf **mbufs, uint16_t n, Counter &dropped);
    void record_latency(Lcore &lcore, uint64_t rx_tsc) const noexcept;
    uint32_t drain_tx_rings();
    void wake_overdue(uint64_t now);
    void build_dispatchers();
    // Sets bucket_homes() for these receiving lcores.
    void find_bucket_homes(const std::vector<unsigned> &receivers);
    void build_tx_paths();
    Lcore &lcore_state(unsigned id);
    Lcore *find_lcore(unsigned id) const;
    // Waits until every running lcore has finished the loop iteration it was
    // in: what it loaded before (instance list, route table) is no longer used.
    // Quiescent-state based, as rte_rcu_qsbr: one report per lcore suffices.
    void synchronize();
    void publish_instances(Lcore &lcore, InstanceList list);
    void publish_routes();
    void update_main_polls();
    // Waits until `slot` has processed everything queued to it so far, and
    // its lcore's TX ring (if it transmits through the main lcore) has been
    // sent on that far.
    void wait_processed(const InstanceSlot &slot);
    // slot's sweep_parts: the buckets both `a` and `b` give it.
    static void set_sweep_parts(InstanceSlot &slot, const io::BucketOwners &a, const io::BucketOwners &b);

    std::vector<io::Port> _ports;
    std::vector<PortTotals> _port_totals;
    io::Gateway _gateway;
    DataplaneOptions _options;
    std::atomic<uint32_t> _wake_threshold{128};
    double _ns_per_tsc = 0;
    std::vector<std::unique_ptr<InstanceSlot>> _slots; // sized once: lcores index it while it grows
    std::atomic<std::size_t> _slot_count{0};
    std::vector<io::BucketOwners> _owners; // per chain tag
    std::unique_ptr<io::Underlay> _underlay;
    std::mutex _peerings_mutex;
    std::vector<std::unique_ptr<ChainPeering>> _peerings; // per chain tag
    std::vector<std::unique_ptr<Lcore>> _lcores;
    std::vector<rte_ring *> _tx_rings;    // per port; nullptr when every lcore has a queue
    LineVector<Counter> _tx_ring_dropped; // per port: from the TX ring, refused by the port
    std::atomic<bool> _stop{false};
    std::atomic<bool> _rx_stopped{false};        // set by the main lcore: receive no more
    std::atomic<uint32_t> _receivers_stopped{0}; // lcores that saw it and will enqueue no more
    uint32_t _receivers = 0;
    std::vector<unsigned> _bucket_homes;
    bool _prepared = false;
    std::atomic<bool> _main_polls{false};                // else it sleeps until stop() when it has nothing to receive
    alignas(cache_line) std::atomic<uint64_t> _grace{0}; // raised by synchronize(), read by every lcore per iteration
};

} // namespace serpens
