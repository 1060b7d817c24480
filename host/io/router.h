#pragma once
// The router: which instance of a chain each packet goes to, and how it gets
// there from the lcore that received it.
//
// A chain's flows are split into route_buckets buckets by their symmetric flow
// hash (so both directions of a flow meet the same instance), and each bucket
// has exactly one owning instance, so scaling can move buckets between
// instances rather than rehash every flow.  A route table is the view from one dispatching lcore:
// an owner on that lcore is run in place, an owner on another lcore is reached
// through its input ring (and, later, an owner on another server through a
// peer).
//
// A table is immutable once published and swapped whole (RCU-style): the
// dispatcher loads it once per poll of its RX queues and reports a quiescent
// state after each; the control thread frees an old table only after the dispatcher has
// passed a quiescent state, so routes change without a lock and without
// losing a packet.

#include "core/wakeup.h"

#include <rte_ring.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace serpens::io {

// Buckets per chain.  A power of two, like NICs' RSS redirection tables (128
// to 512 entries), so one can be programmed from the other.
inline constexpr uint32_t route_buckets = 256;

inline constexpr uint32_t route_bucket(uint32_t flow_hash) noexcept { return flow_hash & (route_buckets - 1); }

enum class RouteKind : uint8_t {
    in_place, // the instance runs on the dispatching lcore: called with no ring between
    ring,     // the instance runs on another lcore: enqueued to its input ring
};

struct RouteTarget {
    RouteKind kind = RouteKind::ring;
    uint32_t instance = 0;    // the host's instance number
    rte_ring *ring = nullptr; // ring: the instance's input ring
    Wakeup *wakeup = nullptr; // ring: the lcore that serves the ring
};

// One instance as the router needs to know it.
struct RoutedInstance {
    uint32_t chain_tag = 0;
    uint32_t instance = 0;
    unsigned lcore = 0;
    rte_ring *ring = nullptr;
    Wakeup *wakeup = nullptr;
};

struct RouteTable {
    std::vector<RouteTarget> targets; // every instance this lcore routes to
    // chain tag -> route_buckets indices into `targets`; empty when the chain
    // has no instance.
    std::vector<std::vector<uint16_t>> buckets_by_tag;

    // Spreads each chain's buckets evenly over its instances, in their order
    // (bucket b to the chain's instance b mod n), as seen from
    // `dispatch_lcore`.  Throws Error past 65535 instances.
    static std::unique_ptr<RouteTable> spread(std::span<const RoutedInstance> instances, unsigned dispatch_lcore);

    // The chain's bucket owners; empty when it has none.
    std::span<const uint16_t> buckets(uint32_t tag) const noexcept
    {
        return tag < buckets_by_tag.size() ? std::span<const uint16_t>(buckets_by_tag[tag])
                                           : std::span<const uint16_t>{};
    }
    // The target of a flow of a chain whose buckets are `buckets`; nullptr
    // when the chain has no instance.
    const RouteTarget *pick(std::span<const uint16_t> buckets, uint32_t flow_hash) const noexcept
    {
        return buckets.empty() ? nullptr : &targets[buckets[route_bucket(flow_hash)]];
    }
    const RouteTarget *route(uint32_t tag, uint32_t flow_hash) const noexcept { return pick(buckets(tag), flow_hash); }
};

class Router {
public:
    Router() = default;
    ~Router();

    // Control thread.  Publishes `table` and frees the previous one once the
    // dispatcher has moved past it (returns at once when it is not running).
    void publish(std::unique_ptr<RouteTable> table);

    // Dispatcher, hot path.
    const RouteTable *current() const noexcept { return _table.load(std::memory_order_acquire); }
    void quiescent() noexcept { _epoch.fetch_add(1, std::memory_order_release); }
    void set_dispatcher_running(bool running) noexcept { _running.store(running, std::memory_order_release); }

private:
    std::atomic<const RouteTable *> _table{nullptr};
    std::atomic<uint64_t> _epoch{0};
    std::atomic<bool> _running{false};
};

} // namespace serpens::io
