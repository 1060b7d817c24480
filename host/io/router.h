#pragma once
// The router: which instance of a chain each packet goes to, and how it gets
// there from the lcore that received it.
//
// A chain's flows are split into route_buckets buckets by their symmetric flow
// hash (so both directions of a flow meet the same instance), and each bucket
// has exactly one owning instance, so scaling can move buckets between
// instances rather than rehash every flow.  A route table is the view from
// one dispatching lcore: an owner on that lcore is run in place, an owner on
// another lcore is reached through its input ring (and, later, an owner on
// another server through a peer).
//
// A table is immutable once published and swapped whole (RCU-style): the
// dispatcher loads it once per poll of its RX queues, within one iteration of
// its lcore's loop; the dataplane frees an old table only after every lcore
// has finished the iterations that may have loaded it (its grace period), so
// routes change without a lock and without losing a packet.
//
// Moving a bucket must not reorder its flows either.  Each instance has a
// gate: while it is held, no lcore runs the instance and every dispatcher
// queues its packets in its ring, even one that would run it in place.  A
// handover holds the gaining instances, publishes the new tables, waits until
// the losing instances have processed everything queued to them before, then
// opens the gates (instance/dataplane.cpp).  A dispatcher runs an instance in
// place only when its gate is open and its ring is empty, so nothing queued
// earlier is overtaken.  A parked instance (a chain scaled to zero) is held
// with its ring as the chain's buffer, and the first packet opens its gate.

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

// Whether an instance may run now; see the handover above.
struct InstanceGate {
    std::atomic<bool> held{false};
    // When a packet opened a parked instance's gate (monotonic ns), until
    // that packet has been processed; 0 otherwise.
    std::atomic<uint64_t> woken_ns{0};
};

struct RouteTarget {
    RouteKind kind = RouteKind::ring;
    bool wake_on_arrival = false; // parked: a packet queued here opens the gate
    uint32_t instance = 0;        // the host's instance number
    rte_ring *ring = nullptr;     // the instance's input ring (in_place too: used while held or queued)
    Wakeup *wakeup = nullptr;     // the lcore that serves the ring
    InstanceGate *gate = nullptr; // never null in a built table
};

// One instance as the router needs to know it.
struct RoutedInstance {
    uint32_t chain_tag = 0;
    uint32_t instance = 0;
    unsigned lcore = 0;
    rte_ring *ring = nullptr;
    Wakeup *wakeup = nullptr;
    InstanceGate *gate = nullptr; // null: a gate that is always open
    bool parked = false;
};

// Per bucket, the instance number that owns it; empty: the chain has none.
using BucketOwners = std::vector<uint32_t>;

// Where buckets arrive and members run, so that each bucket can go to an
// instance on the lcore that receives it (and run there in place).  Empty
// spans: nothing is known, any member will do.
struct BucketAffinity {
    std::span<const unsigned> home_of_bucket; // route_buckets lcores: where each bucket's packets arrive
    std::span<const unsigned> lcore_of;       // per member, in the members' order: where it runs
};

// Buckets dealt evenly over `members`: bucket b to member b mod n, or with
// an affinity, to a member on b's home lcore where that keeps the counts
// even (they differ by at most one).  Empty when there is no member.
BucketOwners spread_buckets(std::span<const uint32_t> members, const BucketAffinity &affinity = {});

// New owners for `members` that move as few buckets as possible from
// `current`: a member keeps its buckets up to its fair share (256/n, the
// members holding most getting the remainder), and only the buckets of
// leaving instances and the excess of the others are dealt to those below
// their share.  Counts differ by at most one afterwards.  With an affinity,
// a member keeps the buckets of its own lcore first and a dealt bucket goes
// to a member on its home lcore when one is below its share, for the same
// number of moves.
BucketOwners rebalance_buckets(const BucketOwners &current, std::span<const uint32_t> members,
                               const BucketAffinity &affinity = {});

struct RouteTable {
    std::vector<RouteTarget> targets; // every instance this lcore routes to
    // chain tag -> route_buckets indices into `targets`; empty when the chain
    // has no instance.
    std::vector<std::vector<uint16_t>> buckets_by_tag;
    // chain tag -> index into `targets` of the one instance that owns all the
    // chain's buckets, or -1: such a chain's bursts need no route per packet.
    std::vector<int32_t> sole_by_tag;

    // The table seen from `dispatch_lcore` when chain tag t's buckets are
    // owned as owners_by_tag[t] says (instance numbers of `instances`; a
    // tag past the end or an empty entry: no instance).  Throws Error past
    // 65535 instances or for an owner not in `instances`.
    static std::unique_ptr<RouteTable> build(std::span<const RoutedInstance> instances,
                                             std::span<const BucketOwners> owners_by_tag, unsigned dispatch_lcore);
    // Each chain's buckets spread evenly over its instances, in their order.
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
    // The target of every flow of chain `tag`, when one instance owns all its
    // buckets; else nullptr.
    const RouteTarget *sole(uint32_t tag) const noexcept
    {
        return tag < sole_by_tag.size() && sole_by_tag[tag] >= 0 ? &targets[static_cast<std::size_t>(sole_by_tag[tag])]
                                                                 : nullptr;
    }
    // The target of all n flows of chain `tag` whose hashes are given, when
    // one instance owns them all (always so for a chain with a sole target);
    // else nullptr.  An lcore's RX queue carries the buckets its own
    // instances own (RSS programmed from them), so its bursts mostly have one
    // owner although the chain has several: a branch-free pass over their
    // owners costs less than routing each packet on its own.
    const RouteTarget *sole(uint32_t tag, const uint32_t *flow_hashes, uint32_t n) const noexcept
    {
        if (const RouteTarget *target = sole(tag); target != nullptr || n == 0) {
            return target;
        }
        const std::span<const uint16_t> owners = buckets(tag);
        if (owners.empty()) {
            return nullptr;
        }
        const uint16_t first = owners[route_bucket(flow_hashes[0])];
        uint32_t differ = 0;
        for (uint32_t i = 1; i < n; ++i) {
            differ |= static_cast<uint32_t>(owners[route_bucket(flow_hashes[i])] ^ first);
        }
        return differ == 0 ? &targets[first] : nullptr;
    }
};

class Router {
public:
    Router() = default;
    ~Router();

    // Control thread.  Publishes `table` and returns the previous one, which
    // the caller frees after a grace period (Dataplane::synchronize).
    std::unique_ptr<const RouteTable> exchange(std::unique_ptr<RouteTable> table);

    // Dispatcher, hot path.
    const RouteTable *current() const noexcept { return _table.load(std::memory_order_acquire); }

private:
    std::atomic<const RouteTable *> _table{nullptr};
};

} // namespace serpens::io
