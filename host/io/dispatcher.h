#pragma once
// The dispatcher: the one place a packet goes from RX to an instance.  Per
// burst it receives, parses and hashes, classifies (gateway), routes (router)
// and hands each target its packets as one batch: in place through the
// lcore's sink, or into another lcore's ring.  One dispatcher runs on each
// lcore that receives, over the RX queues it was given.

#include "core/burst.h"
#include "core/counter.h"
#include "io/gateway.h"
#include "io/port.h"
#include "io/router.h"
#include "net/parse.h"

#include <serpens/nf.h>

#include <rte_mbuf.h>

#include <atomic>
#include <cstdint>
#include <span>
#include <vector>

namespace serpens::io {

struct RxQueue {
    uint16_t port_index = 0; // into the host's ports
    uint16_t queue = 0;
};

struct DispatchCounters {
    std::vector<Counter> rx;   // per port
    net::ParseCounters parse;  // written by the dispatcher only; read after stop
    Counter malformed_dropped{0};
    Counter unmatched_dropped{0};
    Counter unmatched_passed{0};
    Counter no_instance{0};
    Counter ring_full{0};
    Counter linearize_failed{0};
    Counter default_tx_dropped{0};
    Counter rx_paused{0}; // loops that left RX alone because a worker's ring was nearly full
};

// What the dispatching lcore does with the packets that stay on it.  Called
// once per batch, never per packet.
class LocalSink {
public:
    // Runs `instance` on packets just parsed here: views[i] describes mbufs[i].
    virtual void run_in_place(uint32_t instance, rte_mbuf **mbufs, serpens_pkt *views, unsigned n,
                              uint64_t now) = 0;
    // Transmits on this lcore's path to a port; frees what does not fit and
    // adds it to `dropped`.
    virtual void transmit(uint16_t port_index, rte_mbuf **mbufs, uint16_t n, Counter &dropped) = 0;

protected:
    ~LocalSink() = default;
};

struct DispatchOptions {
    uint32_t burst = 32;
    bool drop_malformed = true;
};

class Dispatcher {
public:
    // `ports`, `gateway`, `router` and `wake_threshold` outlive the dispatcher.
    Dispatcher(std::span<const Port> ports, Gateway &gateway, Router &router,
               const std::atomic<uint32_t> &wake_threshold, DispatchOptions options);

    void set_rx_queues(std::vector<RxQueue> queues) { _rx = std::move(queues); }

    struct Poll {
        uint32_t received = 0;
        bool backlogged = false; // a ring target could not take a burst: RX was left alone
    };
    // Hot path: one burst from each RX queue, unless a ring target is
    // backlogged; then reports a quiescent state to the router.
    Poll poll(uint64_t now, LocalSink &sink);

    const DispatchCounters &counters() const noexcept { return _counters; }

private:
    uint32_t receive(const RxQueue &rxq, const RouteTable *routes, uint64_t now, LocalSink &sink);
    bool backlogged(const RouteTable *routes);

    std::span<const Port> _ports;
    Gateway &_gateway;
    Router &_router;
    const std::atomic<uint32_t> &_wake_threshold;
    DispatchOptions _options;
    std::vector<RxQueue> _rx;
    DispatchCounters _counters;
};

} // namespace serpens::io
