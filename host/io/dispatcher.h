#pragma once
// The dispatcher: the one place a packet goes from RX to an instance.  Per
// burst it receives, parses and hashes, classifies (gateway), routes (router)
// and hands each target its packets as one batch: in place through the
// lcore's sink, or into another lcore's ring.  One dispatcher runs on each
// lcore that receives, over the RX queues it was given, with its own routes
// and counters.

#include "core/burst.h"
#include "core/cache_line.h"
#include "core/counter.h"
#include "io/gateway.h"
#include "io/port.h"
#include "io/router.h"
#include "io/underlay.h"
#include "net/parse.h"
#include "net/vxlan.h"

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

// What a dispatcher counts besides RX, parse results and rule matches, each
// a packet count except rx_paused and wakeups.
#define SERPENS_DISPATCH_COUNTERS(X)                                                                                   \
    X(malformed_dropped)  /* malformed and [parser] says drop */                                                       \
    X(unmatched_dropped)  /* no rule matched, no default port */                                                       \
    X(unmatched_passed)   /* no rule matched, sent to the default port */                                              \
    X(no_instance)        /* the chain has no instance */                                                              \
    X(ring_full)          /* another lcore's ring could not take it */                                                 \
    X(linearize_failed)   /* a multi-segment mbuf that could not be made one */                                        \
    X(default_tx_dropped) /* the default port refused it */                                                            \
    X(rx_paused)          /* loops that left RX alone because a ring was nearly full */                                \
    X(wakeups)            /* parked instances (chains at zero) a packet woke */                                        \
    X(underlay_other)     /* on the underlay port, not VXLAN for this host (ARP, the kernel's own) */                  \
    X(tunnel_dropped)     /* VXLAN refused as malformed or not ours; vxlan counts why */                               \
    X(unknown_peer)       /* VXLAN from an address no peer announced */

// One dispatcher's counters: written by its lcore only, read by anyone.
struct DispatchCounters {
    DispatchCounters(std::size_t ports, std::size_t rules) : rx(ports), rules(rules) {}

    LineVector<Counter> rx;   // per port
    net::ParseCounters parse; // read live: a stats reply may lag by a burst
    RuleCounts rules;
    net::VxlanCounters vxlan; // decapsulation results on the underlay port
#define SERPENS_X(name) Counter name{0};
    SERPENS_DISPATCH_COUNTERS(SERPENS_X)
#undef SERPENS_X
};

// The sum of several dispatchers' counters.
struct DispatchTotals {
    std::vector<uint64_t> rx; // per port
    net::ParseCounters parse;
    std::vector<uint64_t> rule_matched;
    uint64_t unmatched = 0;
    net::VxlanCounters vxlan;
#define SERPENS_X(name) uint64_t name = 0;
    SERPENS_DISPATCH_COUNTERS(SERPENS_X)
#undef SERPENS_X

    void add(const DispatchCounters &c);
};

// What the dispatching lcore does with the packets that stay on it.  Called
// once per batch, never per packet.
class LocalSink {
public:
    // Runs `instance` on packets just parsed here: views[i] describes mbufs[i],
    // and keys[i] is the flow key its parse gave (valid where the view says
    // it parsed); they were received at `rx_tsc` (rte_rdtsc; 0 when their
    // latency is not sampled).  peer_marks[i] says which peer's tunnel
    // brought packet i (io/underlay.h); nullptr: they all came from traffic
    // ports.
    virtual void run_in_place(uint32_t instance, rte_mbuf **mbufs, serpens_pkt *views, const net::FlowKey *keys,
                              unsigned n, uint64_t now, uint64_t rx_tsc, const uint8_t *peer_marks) = 0;
    // Transmits on this lcore's path to a port; frees what does not fit and
    // adds it to `dropped`.
    virtual void transmit(uint16_t port_index, rte_mbuf **mbufs, uint16_t n, Counter &dropped) = 0;

protected:
    ~LocalSink() = default;
};

struct DispatchOptions {
    uint32_t burst = 32;
    bool drop_malformed = true;
    // Dispatchers that may enqueue into the same ring.  RX pauses while a
    // ring has room for fewer than this many bursts, so that all of them
    // enqueueing at once still fit: back-pressure, never a ring_full drop.
    uint32_t producers = 1;
};

// One burst in this many has its latency measured (a power of two).
inline constexpr uint32_t latency_sample = 8;

// What arrives on the underlay port (when the host has peers) is VXLAN from
// them: decapsulated here, its inner frame goes to the instance of the
// chain the header's tag names that owns the inner flow's bucket, past the
// gateway (the sending host classified it), marked with its peer.  Anything
// else on that port is the underlay's own traffic and is dropped, counted.
class Dispatcher {
public:
    // `ports`, `gateway`, `wake_threshold` and `underlay` (nullptr: no peers)
    // outlive the dispatcher.
    Dispatcher(std::span<const Port> ports, const Gateway &gateway, const std::atomic<uint32_t> &wake_threshold,
               std::vector<RxQueue> rx_queues, DispatchOptions options, const Underlay *underlay = nullptr);

    const std::vector<RxQueue> &rx_queues() const noexcept { return _rx; }
    // The routes as seen from this dispatcher's lcore.
    Router &router() noexcept { return _router; }

    struct Poll {
        uint32_t received = 0;
        bool backlogged = false; // a ring target could not take a burst: RX was left alone
    };
    // Hot path: one burst from each RX queue, unless a ring target is
    // backlogged.
    Poll poll(uint64_t now, LocalSink &sink);

    const DispatchCounters &counters() const noexcept { return _counters; }

private:
    uint32_t receive(const RxQueue &rxq, const RouteTable *routes, uint64_t now, LocalSink &sink);
    bool backlogged(const RouteTable *routes);
    // Decapsulates a burst from the underlay port: keeps mbufs[0, returned)
    // in order, the inner frames of peers' VXLAN, with their chain tags and
    // peer marks; frees and counts the rest.
    uint16_t take_from_tunnels(rte_mbuf **mbufs, uint16_t n, uint32_t *tags, uint8_t *marks);

    std::span<const Port> _ports;
    const Gateway &_gateway;
    const std::atomic<uint32_t> &_wake_threshold;
    DispatchOptions _options;
    std::vector<RxQueue> _rx;
    const Underlay *_underlay;
    Router _router;
    DispatchCounters _counters;
    uint32_t _bursts = 0;
};

} // namespace serpens::io
