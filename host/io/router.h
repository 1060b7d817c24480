#pragma once
// The router: delivers tagged packets to one instance of their chain by the
// flow hash (symmetric, so both directions of a flow meet the same instance).
//
// The routing table is immutable once published and swapped atomically
// (RCU-style): the dispatcher reads it with one acquire load per burst and
// reports a quiescent state once per loop; the control thread frees an old
// table only after the dispatcher has passed a quiescent state, so scaling
// can change instance sets without a lock and without losing a packet.

#include "core/wakeup.h"

#include <rte_ring.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace serpens::io {

struct RouteTarget {
    rte_ring *ring = nullptr;
    Wakeup *wakeup = nullptr; // the worker lcore that serves the ring
    void *direct = nullptr;   // set when the instance runs on the dispatching lcore:
                              // it is called in place, with no ring between
};

struct RouteTable {
    std::vector<std::vector<RouteTarget>> by_tag; // chain tag -> instances

    // The chain's instances; empty when it has none.
    std::span<const RouteTarget> targets(uint32_t tag) const noexcept
    {
        return tag < by_tag.size() ? std::span<const RouteTarget>(by_tag[tag]) : std::span<const RouteTarget>{};
    }
    // The instance of `targets` a flow goes to; nullptr when there is none.
    static const RouteTarget *pick(std::span<const RouteTarget> targets, uint32_t flow_hash) noexcept
    {
        // 32-bit modulo: a 64-bit division per packet showed in profiles.
        const auto n = static_cast<uint32_t>(targets.size());
        return n == 0 ? nullptr : n == 1 ? targets.data() : &targets[flow_hash % n];
    }
    // nullptr when the chain has no instance.
    const RouteTarget *route(uint32_t tag, uint32_t flow_hash) const noexcept
    {
        return pick(targets(tag), flow_hash);
    }
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
