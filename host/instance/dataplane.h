#pragma once
// The lcores of one host and the chain instances that run on them.
//
// The main lcore receives: its dispatcher (io/dispatcher.h) takes every port
// through parse, gateway and router, runs the instances placed on the main
// lcore in place and enqueues the others' packets into their rings.  Every
// other lcore serves the rings of its instances: dequeue a burst, run the
// whole chain by function calls, transmit on the chain's egress port, free
// drops.  Idle workers sleep on a futex and are woken by the dispatcher once
// a ring holds `wake_threshold` packets, or by the main lcore once a packet
// has waited `wake_deadline_us`; with no traffic at all nobody wakes them, so
// an idle host costs (almost) no CPU.

#include "chain/runtime.h"
#include "core/counter.h"
#include "core/wakeup.h"
#include "io/dispatcher.h"
#include "io/gateway.h"
#include "io/port.h"
#include "io/router.h"

#include <rte_mbuf.h>
#include <rte_ring.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace serpens {

struct InstanceSlot {
    std::string chain_name;
    uint32_t chain_tag = 0;
    uint32_t index = 0;        // instance number within its chain
    unsigned lcore = 0;
    uint16_t egress = 0;       // index into the host's ports
    rte_ring *ring = nullptr;
    std::unique_ptr<ChainInstance> chain;

    Counter packets{0};        // metered: packets the chain ran on
    Counter out{0};            // reached egress and were handed to TX
    Counter dropped{0};        // dropped by an NF's verdict
    Counter tx_dropped{0};     // TX queue or TX ring full
    Counter batches{0};
};

using io::DispatchCounters;

struct DataplaneOptions {
    uint32_t burst = 32;
    bool drop_malformed = true;
    uint32_t wake_deadline_us = 1000;
    uint32_t idle_sleep_us = 1000;
    double idle_exit_s = 0;  // 0: never; else stop after this long without RX
    double duration_s = 0;   // 0: until signalled
};

class Dataplane {
public:
    Dataplane(std::vector<io::Port> ports, io::Gateway gateway, DataplaneOptions options);
    ~Dataplane();

    // Cold path: add an instance before run(); creates its ring.
    InstanceSlot &add_instance(std::string chain_name, uint32_t tag, uint32_t index, unsigned lcore,
                               uint16_t egress, std::unique_ptr<ChainInstance> chain, uint32_t ring_size);

    // Runs until stop() (or idle-exit/duration); returns when every lcore has
    // drained its rings.  Call from the main lcore.
    void run();
    void stop() noexcept { _stop.store(true, std::memory_order_release); }

    std::atomic<uint32_t> &wake_threshold() noexcept { return _wake_threshold; }

    const std::vector<io::Port> &ports() const noexcept { return _ports; }
    // Device counters read after run() returns, before the ports close.
    struct PortTotals {
        uint64_t tx = 0;
        uint64_t rx_missed = 0;
        uint64_t tx_errors = 0;
    };
    const std::vector<PortTotals> &port_totals() const noexcept { return _port_totals; }
    const io::Gateway &gateway() const noexcept { return _gateway; }
    const DispatchCounters &counters() const noexcept { return _dispatcher.counters(); }
    // Per port: packets of lcores without a TX queue of their own that the
    // port refused when the main lcore sent them on.
    uint64_t tx_ring_dropped(std::size_t port_index) const noexcept
    {
        return port_index < _tx_ring_dropped.size() ? _tx_ring_dropped[port_index].load() : 0;
    }
    const std::vector<std::unique_ptr<InstanceSlot>> &instances() const noexcept { return _instances; }

private:
    struct TxPath {
        uint16_t port_id = 0;
        int32_t queue = -1;       // own TX queue, or -1: through the port's TX ring
        rte_ring *ring = nullptr; // drained by the main lcore
    };
    struct Lcore {
        unsigned id = 0;
        bool main = false;
        std::vector<InstanceSlot *> instances;
        std::vector<TxPath> tx; // per port index
        Wakeup wakeup;
        std::atomic<bool> done{false};
        uint64_t pending_since = 0; // main lcore only: when it saw packets waiting for this sleeper
    };

    // The main lcore's side of its dispatcher: in-place runs and transmits.
    class MainSink final : public io::LocalSink {
    public:
        MainSink(Dataplane &dp, Lcore &lcore) : _dp(dp), _lcore(lcore) {}
        void run_in_place(uint32_t instance, rte_mbuf **mbufs, serpens_pkt *views, unsigned n,
                          uint64_t now) override;
        void transmit(uint16_t port_index, rte_mbuf **mbufs, uint16_t n, Counter &dropped) override;

    private:
        Dataplane &_dp;
        Lcore &_lcore;
    };

    static int worker_entry(void *arg);
    void worker_loop(Lcore &lcore);
    void main_loop(Lcore &lcore);
    uint32_t serve(Lcore &lcore, InstanceSlot &slot, uint64_t now);
    // A batch from an instance's ring: views rebuilt from the mbufs' metadata.
    void run_batch(Lcore &lcore, InstanceSlot &slot, rte_mbuf **mbufs, unsigned n, uint64_t now);
    // Runs the chain on views[i] of mbufs[i], then frees or transmits each.
    void run_views(Lcore &lcore, InstanceSlot &slot, rte_mbuf **mbufs, serpens_pkt *views, unsigned n,
                   uint64_t now);
    void transmit(Lcore &lcore, uint16_t port_index, rte_mbuf **mbufs, uint16_t n, Counter &dropped);
    uint32_t drain_tx_rings();
    void wake_overdue(uint64_t now);
    void build_routes();
    Lcore &lcore_state(unsigned id);

    std::vector<io::Port> _ports;
    std::vector<PortTotals> _port_totals;
    io::Gateway _gateway;
    DataplaneOptions _options;
    io::Router _router;
    std::atomic<uint32_t> _wake_threshold{128};
    io::Dispatcher _dispatcher; // after what it refers to
    std::vector<std::unique_ptr<InstanceSlot>> _instances;
    std::vector<std::unique_ptr<Lcore>> _lcores;
    std::vector<rte_ring *> _tx_rings; // per port; nullptr when every lcore has a queue
    std::vector<Counter> _tx_ring_dropped; // per port: from the TX ring, refused by the port
    std::atomic<bool> _stop{false};
    std::atomic<bool> _rx_stopped{false};
};

} // namespace serpens
