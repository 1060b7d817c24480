#include "io/router.h"

#include "core/error.h"

#include <limits>
#include <string>
#include <thread>

namespace serpens::io {

std::unique_ptr<RouteTable> RouteTable::spread(std::span<const RoutedInstance> instances, unsigned dispatch_lcore)
{
    if (instances.size() > std::numeric_limits<uint16_t>::max()) {
        throw Error("the router takes at most 65535 instances, got " + std::to_string(instances.size()));
    }
    auto table = std::make_unique<RouteTable>();
    std::vector<std::vector<uint16_t>> members; // chain tag -> indices into targets
    for (const RoutedInstance &inst : instances) {
        const bool local = inst.lcore == dispatch_lcore;
        table->targets.push_back({local ? RouteKind::in_place : RouteKind::ring, inst.instance,
                                  local ? nullptr : inst.ring, local ? nullptr : inst.wakeup});
        if (members.size() <= inst.chain_tag) {
            members.resize(inst.chain_tag + 1);
        }
        members[inst.chain_tag].push_back(static_cast<uint16_t>(table->targets.size() - 1));
    }
    table->buckets_by_tag.resize(members.size());
    for (std::size_t tag = 0; tag < members.size(); ++tag) {
        if (members[tag].empty()) {
            continue;
        }
        std::vector<uint16_t> &buckets = table->buckets_by_tag[tag];
        buckets.resize(route_buckets);
        for (uint32_t b = 0; b < route_buckets; ++b) {
            buckets[b] = members[tag][b % members[tag].size()];
        }
    }
    return table;
}

Router::~Router() { delete _table.load(std::memory_order_acquire); }

void Router::publish(std::unique_ptr<RouteTable> table)
{
    const RouteTable *old = _table.exchange(table.release(), std::memory_order_acq_rel);
    if (old == nullptr) {
        return;
    }
    // Grace period: two epoch steps guarantee the dispatcher finished the loop
    // iteration that may have loaded `old`.
    uint64_t start = _epoch.load(std::memory_order_acquire);
    while (_running.load(std::memory_order_acquire) && _epoch.load(std::memory_order_acquire) < start + 2) {
        std::this_thread::yield();
    }
    delete old;
}

} // namespace serpens::io
