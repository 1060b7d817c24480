#include "io/router.h"

#include "core/error.h"

#include <algorithm>
#include <limits>
#include <map>
#include <numeric>
#include <string>

namespace serpens::io {

namespace {

// The affinity, checked: empty unless it names a home per bucket and an
// lcore per member.
bool has_affinity(const BucketAffinity &a, std::size_t members)
{
    return a.home_of_bucket.size() == route_buckets && a.lcore_of.size() == members;
}

// The buckets the member of rank `rank` among `n` owns when shares are even:
// 256/n, the first 256 mod n ranks one more.
uint32_t fair_share(uint32_t rank, uint32_t n) { return route_buckets / n + (rank < route_buckets % n ? 1 : 0); }

// Deals `buckets` to members (indices) below their quota: first each to a
// member on its home lcore, the one holding fewest; then the rest to those
// still below, in the members' order.
void deal(std::span<const uint32_t> buckets, std::span<const uint32_t> members, const BucketAffinity &affinity,
          bool homes, std::vector<uint32_t> &holds, std::span<const uint32_t> quota, BucketOwners &owners)
{
    std::vector<uint32_t> rest;
    for (uint32_t b : buckets) {
        std::size_t best = members.size();
        for (std::size_t m = 0; homes && m < members.size(); ++m) {
            if (affinity.lcore_of[m] == affinity.home_of_bucket[b] && holds[m] < quota[m] &&
                (best == members.size() || holds[m] < holds[best])) {
                best = m;
            }
        }
        if (best == members.size()) {
            rest.push_back(b);
            continue;
        }
        owners[b] = members[best];
        ++holds[best];
    }
    std::size_t m = 0;
    for (uint32_t b : rest) {
        while (holds[m] >= quota[m]) {
            ++m; // the quotas add up to route_buckets: someone is below
        }
        owners[b] = members[m];
        ++holds[m];
    }
}

} // namespace

BucketOwners spread_buckets(std::span<const uint32_t> members, const BucketAffinity &affinity)
{
    BucketOwners owners;
    if (members.empty()) {
        return owners;
    }
    owners.resize(route_buckets);
    if (!has_affinity(affinity, members.size())) {
        for (uint32_t b = 0; b < route_buckets; ++b) {
            owners[b] = members[b % members.size()];
        }
        return owners;
    }
    const auto n = static_cast<uint32_t>(members.size());
    std::vector<uint32_t> quota(n);
    for (uint32_t m = 0; m < n; ++m) {
        quota[m] = fair_share(m, n);
    }
    std::vector<uint32_t> all(route_buckets);
    std::iota(all.begin(), all.end(), 0u);
    std::vector<uint32_t> holds(n, 0);
    deal(all, members, affinity, true, holds, quota, owners);
    return owners;
}

BucketOwners rebalance_buckets(const BucketOwners &current, std::span<const uint32_t> members,
                               const BucketAffinity &affinity)
{
    if (members.empty()) {
        return {};
    }
    if (current.size() != route_buckets) {
        return spread_buckets(members, affinity);
    }
    const auto n = static_cast<uint32_t>(members.size());
    std::map<uint32_t, uint32_t> index; // member -> its index in members
    for (uint32_t m = 0; m < n; ++m) {
        index.emplace(members[m], m);
    }
    std::vector<uint32_t> held(n, 0); // buckets each member owns now
    for (uint32_t owner : current) {
        if (auto it = index.find(owner); it != index.end()) {
            ++held[it->second];
        }
    }
    // The remainder goes to the members that own most already: fewer moves.
    std::vector<uint32_t> by_holding(n);
    std::iota(by_holding.begin(), by_holding.end(), 0u);
    std::stable_sort(by_holding.begin(), by_holding.end(), [&](uint32_t a, uint32_t b) { return held[a] > held[b]; });
    std::vector<uint32_t> quota(n);
    for (uint32_t i = 0; i < n; ++i) {
        quota[by_holding[i]] = fair_share(i, n);
    }
    const bool homes = has_affinity(affinity, n);
    // Kept: each member's buckets up to its quota, those on its own lcore
    // first (the same count either way, so the same number of moves).
    BucketOwners owners(route_buckets);
    std::vector<uint32_t> kept(n, 0);
    std::vector<bool> placed(route_buckets, false);
    for (int pass = homes ? 0 : 1; pass < 2; ++pass) {
        for (uint32_t b = 0; b < route_buckets; ++b) {
            auto it = index.find(current[b]);
            if (placed[b] || it == index.end()) {
                continue;
            }
            const uint32_t m = it->second;
            const bool at_home = homes && affinity.lcore_of[m] == affinity.home_of_bucket[b];
            if ((pass == 1 || at_home) && kept[m] < quota[m]) {
                owners[b] = current[b];
                placed[b] = true;
                ++kept[m];
            }
        }
    }
    std::vector<uint32_t> freed;
    for (uint32_t b = 0; b < route_buckets; ++b) {
        if (!placed[b]) {
            freed.push_back(b);
        }
    }
    deal(freed, members, affinity, homes, kept, quota, owners);
    return owners;
}

std::unique_ptr<RouteTable> RouteTable::build(std::span<const RoutedInstance> instances,
                                              std::span<const BucketOwners> owners_by_tag, unsigned dispatch_lcore)
{
    if (instances.size() > std::numeric_limits<uint16_t>::max()) {
        throw Error("the router takes at most 65535 instances, got " + std::to_string(instances.size()));
    }
    static InstanceGate always_open; // never held: nobody stores to it
    auto table = std::make_unique<RouteTable>();
    std::map<uint32_t, uint16_t> target_of; // instance number -> index into targets
    for (const RoutedInstance &inst : instances) {
        const bool local = inst.lcore == dispatch_lcore;
        table->targets.push_back({local ? RouteKind::in_place : RouteKind::ring, inst.parked, inst.instance, inst.ring,
                                  inst.wakeup, inst.gate != nullptr ? inst.gate : &always_open});
        target_of[inst.instance] = static_cast<uint16_t>(table->targets.size() - 1);
    }
    table->buckets_by_tag.resize(owners_by_tag.size());
    table->sole_by_tag.assign(owners_by_tag.size(), -1);
    for (std::size_t tag = 0; tag < owners_by_tag.size(); ++tag) {
        const BucketOwners &owners = owners_by_tag[tag];
        if (owners.empty()) {
            continue;
        }
        if (owners.size() != route_buckets) {
            throw Error("chain tag " + std::to_string(tag) + ": " + std::to_string(owners.size()) +
                        " bucket owners, expected " + std::to_string(route_buckets));
        }
        std::vector<uint16_t> &buckets = table->buckets_by_tag[tag];
        buckets.resize(route_buckets);
        for (uint32_t b = 0; b < route_buckets; ++b) {
            auto it = target_of.find(owners[b]);
            if (it == target_of.end()) {
                throw Error("chain tag " + std::to_string(tag) + ": bucket " + std::to_string(b) +
                            " is owned by instance " + std::to_string(owners[b]) + ", which is not routed");
            }
            buckets[b] = it->second;
        }
        if (std::all_of(buckets.begin(), buckets.end(), [&](uint16_t t) { return t == buckets[0]; })) {
            table->sole_by_tag[tag] = buckets[0];
        }
    }
    return table;
}

std::unique_ptr<RouteTable> RouteTable::spread(std::span<const RoutedInstance> instances, unsigned dispatch_lcore)
{
    std::vector<std::vector<uint32_t>> members; // chain tag -> its instance numbers
    for (const RoutedInstance &inst : instances) {
        if (members.size() <= inst.chain_tag) {
            members.resize(inst.chain_tag + 1);
        }
        members[inst.chain_tag].push_back(inst.instance);
    }
    std::vector<BucketOwners> owners;
    for (const auto &m : members) {
        owners.push_back(spread_buckets(m));
    }
    return build(instances, owners, dispatch_lcore);
}

Router::~Router() { delete _table.load(std::memory_order_acquire); }

std::unique_ptr<const RouteTable> Router::exchange(std::unique_ptr<RouteTable> table)
{
    return std::unique_ptr<const RouteTable>(_table.exchange(table.release(), std::memory_order_acq_rel));
}

} // namespace serpens::io
