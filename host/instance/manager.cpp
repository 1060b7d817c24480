#include "instance/manager.h"

#include "core/clock.h"
#include "core/error.h"

#include <rte_lcore.h>

#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

namespace serpens {
namespace {

// Pauses kept per chain for the percentiles in the stats.
constexpr std::size_t kPausesKept = 1024;

uint64_t percentile(std::vector<uint64_t> values, double p)
{
    if (values.empty()) {
        return 0;
    }
    std::sort(values.begin(), values.end());
    const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(values.size())));
    return values[std::clamp<std::size_t>(rank, 1, values.size()) - 1];
}

// The slots as the router deals buckets to them: their instance numbers
// and, in the same order, the lcores they run on.
struct Members {
    std::vector<uint32_t> numbers;
    std::vector<unsigned> lcores;
};

Members members_of(const std::vector<InstanceSlot *> &slots)
{
    Members m;
    for (const InstanceSlot *slot : slots) {
        m.numbers.push_back(slot->number);
        m.lcores.push_back(slot->lcore);
    }
    return m;
}

// Chain `tag`'s buckets dealt anew to `slots`, each where its packets
// arrive when an instance runs there, moving as few as possible.
io::BucketOwners rebalanced(const Dataplane &dp, uint32_t tag, const std::vector<InstanceSlot *> &slots)
{
    const Members m = members_of(slots);
    return io::rebalance_buckets(dp.owners(tag), m.numbers, {dp.bucket_homes(), m.lcores});
}

} // namespace

InstanceManager::InstanceManager(Dataplane &dataplane, std::vector<ManagedChain> chains, Factory factory,
                                 ManagerOptions options)
    : _dp(dataplane), _factory(std::move(factory)), _options(std::move(options))
{
    for (ManagedChain &chain : chains) {
        ChainRuntime runtime;
        runtime.spec = std::move(chain);
        _chains.push_back(std::move(runtime));
    }
}

InstanceManager::~InstanceManager()
{
    if (_thread_started) {
        {
            std::lock_guard lock(_stop_mutex);
            _stopping = true;
        }
        _stop_cv.notify_all();
        pthread_join(_thread, nullptr);
    }
}

InstanceManager::ChainRuntime &InstanceManager::chain_named(const std::string &name)
{
    for (ChainRuntime &chain : _chains) {
        if (chain.spec.name == name) {
            return chain;
        }
    }
    std::string known;
    for (const ChainRuntime &chain : _chains) {
        known += (known.empty() ? "" : ", ") + chain.spec.name;
    }
    throw Error("no chain '" + name + "' on this host (chains: " + (known.empty() ? "none" : known) + ")");
}

std::vector<InstanceSlot *> InstanceManager::slots_of(uint32_t tag, SlotState state) const
{
    std::vector<InstanceSlot *> out;
    for (const auto &slot : _dp.slots()) {
        if (slot->chain_tag == tag && slot->state == state) {
            out.push_back(slot.get());
        }
    }
    return out;
}

std::optional<uint32_t> InstanceManager::free_index(uint32_t tag) const
{
    for (uint32_t index = 0; index < _options.max_instances; ++index) {
        const bool used = std::any_of(_dp.slots().begin(), _dp.slots().end(), [&](const auto &slot) {
            return slot->chain_tag == tag && slot->index == index && slot->state != SlotState::empty;
        });
        if (!used) {
            return index;
        }
    }
    return std::nullopt;
}

unsigned InstanceManager::pick_lcore(const ChainRuntime &chain, const std::vector<unsigned> &allowed) const
{
    auto undrained = [&](std::vector<unsigned> ids) {
        std::erase_if(ids,
                      [&](unsigned id) { return std::find(_drained.begin(), _drained.end(), id) != _drained.end(); });
        return ids;
    };
    std::vector<unsigned> candidates = undrained(allowed);
    if (!allowed.empty() && candidates.empty()) {
        throw Error("every lcore asked for is drained (serpensctl drain --undo lets it run instances again)");
    }
    if (candidates.empty()) {
        candidates = undrained(chain.spec.lcores);
    }
    if (candidates.empty()) {
        for (unsigned id : _dp.lcore_ids()) {
            if (id != rte_get_main_lcore()) {
                candidates.push_back(id);
            }
        }
        candidates = undrained(std::move(candidates));
    }
    if (candidates.empty()) {
        candidates = undrained({rte_get_main_lcore()});
    }
    if (candidates.empty()) {
        throw Error("chain '" + chain.spec.name + "': every lcore it may run on is drained");
    }
    // The least loaded by instances (of every chain), then the lowest id.
    auto load = [&](unsigned lcore) {
        return std::count_if(_dp.slots().begin(), _dp.slots().end(),
                             [&](const auto &slot) { return slot->lcore == lcore && on_lcore(slot->state); });
    };
    return *std::min_element(candidates.begin(), candidates.end(), [&](unsigned a, unsigned b) {
        const auto la = load(a);
        const auto lb = load(b);
        return la != lb ? la < lb : a < b;
    });
}

InstanceSlot &InstanceManager::ready_instance(ChainRuntime &chain, ScaleResult &result)
{
    const uint32_t tag = chain.spec.tag;
    if (std::vector<InstanceSlot *> pooled = slots_of(tag, SlotState::pooled); !pooled.empty()) {
        ++result.from_pool;
        ++chain.events.pool_starts;
        pooled.front()->chain->join_state();
        return *pooled.front();
    }
    std::optional<uint32_t> index = free_index(tag);
    if (!index) {
        throw Error("chain '" + chain.spec.name + "' already has " + std::to_string(_options.max_instances) +
                    " instances (pooled ones included), the most one chain can have");
    }
    InstanceSlot &slot = _dp.slot(chain.spec.name, tag, *index, chain.spec.egress, _options.ring_size);
    slot.egress = chain.spec.egress;                    // a reload may have changed it since the slot was made
    slot.chain = _factory(chain.spec.compiled, *index); // its NFs' init took its share
    ++result.cold;
    ++chain.events.cold_starts;
    return slot;
}

void InstanceManager::record_pause(ChainRuntime &chain, const Dataplane::Handover &handover)
{
    if (handover.moved == 0) {
        return;
    }
    chain.pauses_ns.push_back(handover.pause_ns);
    if (chain.pauses_ns.size() > kPausesKept) {
        chain.pauses_ns.erase(chain.pauses_ns.begin());
    }
}

Dataplane::Handover InstanceManager::shrink(ChainRuntime &chain, const std::vector<InstanceSlot *> &stay,
                                            const std::vector<InstanceSlot *> &leaving)
{
    const Dataplane::Handover handover = _dp.assign(chain.spec.tag, rebalanced(_dp, chain.spec.tag, stay));
    for (InstanceSlot *slot : leaving) {
        release(chain, *slot);
    }
    return handover;
}

void InstanceManager::release(ChainRuntime &chain, InstanceSlot &slot)
{
    std::unique_ptr<ChainInstance> instance = _dp.detach(slot);
    instance->leave_state();
    if (slots_of(chain.spec.tag, SlotState::pooled).size() < _options.pool) {
        slot.chain = std::move(instance);
        slot.state = SlotState::pooled;
        return;
    }
    // Finalized here (fini), on this thread; what its NFs metered stays with the chain.
    add_nf_usage(chain.retired, *instance);
}

ScaleResult InstanceManager::resize_locked(ChainRuntime &chain, uint32_t n, const std::vector<unsigned> &lcores,
                                           const std::string &why)
{
    const uint64_t start = monotonic_ns();
    const uint32_t tag = chain.spec.tag;
    ScaleResult result;
    result.chain = chain.spec.name;
    std::vector<InstanceSlot *> active = slots_of(tag, SlotState::active);
    std::vector<InstanceSlot *> parked = slots_of(tag, SlotState::parked);
    result.before = static_cast<uint32_t>(active.size());
    auto record = [&](const Dataplane::Handover &h) {
        result.moved += h.moved;
        result.pause_ns = std::max(result.pause_ns, h.pause_ns);
        record_pause(chain, h);
    };
    if (!parked.empty() && n > 0) {
        _dp.unpark(*parked.front());
        active.push_back(parked.front());
    }
    if (n > active.size()) {
        std::vector<InstanceSlot *> added;
        try {
            while (active.size() + added.size() < n) {
                // The lcore first: a refusal there must not leave an instance taken.
                const unsigned lcore = pick_lcore(chain, lcores);
                InstanceSlot &slot = ready_instance(chain, result);
                _dp.attach(slot, lcore, std::move(slot.chain));
                added.push_back(&slot);
            }
        } catch (const Error &) {
            // All or nothing: the ones attached so far own no bucket yet.
            for (InstanceSlot *slot : added) {
                release(chain, *slot);
            }
            throw;
        }
        active.insert(active.end(), added.begin(), added.end());
        record(_dp.assign(tag, rebalanced(_dp, tag, active)));
    } else if (n < active.size()) {
        // The highest-numbered leave first; at zero the last one parks.
        const std::size_t keep = std::max<std::size_t>(n, 1);
        std::vector<InstanceSlot *> leaving(active.begin() + static_cast<std::ptrdiff_t>(keep), active.end());
        active.resize(keep);
        record(shrink(chain, active, leaving));
        if (n == 0) {
            _dp.park(*active.front());
            active.clear();
        }
    }
    result.after = static_cast<uint32_t>(active.size());
    for (const InstanceSlot *slot : active) {
        result.instances.emplace_back(slot->index, slot->lcore);
    }
    result.launch_ns = monotonic_ns() - start;
    if (result.before != result.after || result.moved > 0) {
        ++chain.events.scale_events;
        spdlog::info("chain '{}': {} -> {} instance(s) ({}); {} bucket(s) moved, data path paused {:.1f} us, "
                     "{} from the pool, {} cold, {:.1f} us in all",
                     chain.spec.name, result.before, result.after, why, result.moved,
                     static_cast<double>(result.pause_ns) / 1e3, result.from_pool, result.cold,
                     static_cast<double>(result.launch_ns) / 1e3);
    }
    return result;
}

void InstanceManager::start(const std::string &name, uint32_t count, const std::vector<unsigned> &lcores)
{
    std::lock_guard lock(_mutex);
    ChainRuntime &chain = chain_named(name);
    if (count > _options.max_instances) {
        throw Error("chain '" + name + "': " + std::to_string(count) + " instances, at most " +
                    std::to_string(_options.max_instances));
    }
    std::vector<InstanceSlot *> placed;
    for (uint32_t i = 0; i < std::max<uint32_t>(count, 1); ++i) {
        const uint32_t tag = chain.spec.tag;
        InstanceSlot &slot = _dp.slot(name, tag, i, chain.spec.egress, _options.ring_size);
        std::unique_ptr<ChainInstance> instance = _factory(chain.spec.compiled, i);
        ++chain.events.cold_starts;
        unsigned lcore = lcores.empty() ? pick_lcore(chain, {}) : lcores.size() == 1 ? lcores[0] : lcores[i];
        _dp.attach(slot, lcore, std::move(instance));
        placed.push_back(&slot);
    }
    const Members members = members_of(placed);
    _dp.assign(chain.spec.tag, io::spread_buckets(members.numbers, {_dp.bucket_homes(), members.lcores}));
    if (count == 0) {
        _dp.park(*placed.front());
    }
}

ScaleResult InstanceManager::scale(const std::string &name, ScaleTarget target, const std::vector<unsigned> &lcores,
                                   const std::string &why)
{
    std::lock_guard lock(_mutex);
    if (_dp.stopping()) {
        throw Error("the host is stopping");
    }
    ChainRuntime &chain = chain_named(name);
    for (unsigned lcore : lcores) {
        const std::vector<unsigned> ids = _dp.lcore_ids();
        if (std::find(ids.begin(), ids.end(), lcore) == ids.end()) {
            throw Error("lcore " + std::to_string(lcore) + " is not enabled on this host (add it to -l in [eal] args)");
        }
    }
    const auto current = static_cast<int64_t>(slots_of(chain.spec.tag, SlotState::active).size());
    const int64_t wanted = target.relative ? current + target.value : target.value;
    if (wanted < 0 || wanted > static_cast<int64_t>(_options.max_instances)) {
        throw Error("chain '" + name + "' has " + std::to_string(current) + " instance(s); " + std::to_string(wanted) +
                    " is outside 0.." + std::to_string(_options.max_instances));
    }
    return resize_locked(chain, static_cast<uint32_t>(wanted), lcores, why);
}

std::vector<InstanceManager::Staged> InstanceManager::stage_replacements(ChainRuntime &chain, const ChainUpdate &update)
{
    const uint32_t tag = chain.spec.tag;
    // Pooled instances of the old version hold no share and run nowhere:
    // finalized now, they leave their numbers to the new version.
    for (InstanceSlot *slot : slots_of(tag, SlotState::pooled)) {
        std::unique_ptr<ChainInstance> old = std::move(slot->chain);
        slot->state = SlotState::empty;
        add_nf_usage(chain.retired, *old);
    }
    std::vector<InstanceSlot *> running = slots_of(tag, SlotState::active);
    for (InstanceSlot *slot : slots_of(tag, SlotState::parked)) {
        running.push_back(slot);
    }
    std::vector<Staged> staged;
    std::vector<uint32_t> taken;
    for (InstanceSlot *old : running) {
        std::optional<uint32_t> index;
        for (uint32_t i = 0; i < _options.max_instances && !index; ++i) {
            const bool used = std::any_of(_dp.slots().begin(), _dp.slots().end(), [&](const auto &slot) {
                return slot->chain_tag == tag && slot->index == i && slot->state != SlotState::empty;
            });
            if (!used && std::find(taken.begin(), taken.end(), i) == taken.end()) {
                index = i;
            }
        }
        if (!index) {
            throw Error("chain '" + chain.spec.name + "' runs " + std::to_string(running.size()) +
                        " instances: a reload starts as many beside them, and a chain has at most " +
                        std::to_string(_options.max_instances) + "; scale it to " +
                        std::to_string(_options.max_instances / 2) + " or fewer first");
        }
        taken.push_back(*index);
        InstanceSlot &slot = _dp.slot(chain.spec.name, tag, *index, update.egress, _options.ring_size);
        slot.egress = update.egress; // empty: no lcore reads it until attached
        staged.push_back({old, &slot, _factory(update.compiled, *index), old->lcore});
    }
    return staged;
}

Dataplane::Handover InstanceManager::hand_over(ChainRuntime &chain, std::vector<Staged> &staged, bool old_to_pool)
{
    // A parked chain: the old instance runs again for the handover (a losing
    // instance must not be held), and the new one parks after it.
    bool was_parked = false;
    for (Staged &s : staged) {
        if (s.old->state == SlotState::parked) {
            _dp.unpark(*s.old);
            was_parked = true;
        }
    }
    std::map<uint32_t, uint32_t> successor;
    for (Staged &s : staged) {
        if (s.instance) {
            _dp.attach(*s.slot, s.lcore, std::move(s.instance));
        }
        successor[s.old->number] = s.slot->number;
    }
    io::BucketOwners owners = _dp.owners(chain.spec.tag);
    for (uint32_t &owner : owners) {
        if (auto it = successor.find(owner); it != successor.end()) {
            owner = it->second;
        }
    }
    const Dataplane::Handover handover = _dp.assign(chain.spec.tag, std::move(owners));
    record_pause(chain, handover);
    if (was_parked) {
        _dp.park(*staged.front().slot);
    }
    for (Staged &s : staged) {
        if (old_to_pool) {
            release(chain, *s.old);
            continue;
        }
        // Finalized here: its share of global/write state goes back, its
        // metering stays with the chain.
        std::unique_ptr<ChainInstance> old = _dp.detach(*s.old);
        old->leave_state();
        add_nf_usage(chain.retired, *old);
    }
    return handover;
}

ReplaceResult InstanceManager::swap_in(ChainRuntime &chain, const ChainUpdate &update, std::vector<Staged> &staged)
{
    ReplaceResult result;
    result.chain = chain.spec.name;
    chain.spec.compiled = update.compiled;
    chain.spec.egress = update.egress;
    ++chain.generation;
    if (staged.empty()) {
        return result;
    }
    staged.front().instance->adopt_state_hooks();
    const Dataplane::Handover handover = hand_over(chain, staged, false);
    ++chain.events.reloads;
    result.replaced = static_cast<uint32_t>(staged.size());
    result.moved = handover.moved;
    result.pause_ns = handover.pause_ns;
    return result;
}

std::vector<ReplaceResult> InstanceManager::replace(const std::vector<ChainUpdate> &updates)
{
    std::lock_guard lock(_mutex);
    if (_dp.stopping()) {
        throw Error("the host is stopping");
    }
    std::vector<std::pair<ChainRuntime *, std::vector<Staged>>> prepared;
    try {
        for (const ChainUpdate &update : updates) {
            ChainRuntime &chain = chain_named(update.chain);
            prepared.emplace_back(&chain, std::vector<Staged>{});
            prepared.back().second = stage_replacements(chain, update);
        }
    } catch (const Error &e) {
        // Nothing swapped: the staged instances are finalized (fini, their
        // share given back) and the running ones never noticed.
        prepared.clear();
        throw Error(std::string("reload refused, nothing changed: ") + e.what());
    }
    std::vector<ReplaceResult> results;
    for (std::size_t i = 0; i < prepared.size(); ++i) {
        ReplaceResult r = swap_in(*prepared[i].first, updates[i], prepared[i].second);
        spdlog::info("chain '{}': reloaded; {} instance(s) replaced, {} bucket(s) moved, data path paused {:.1f} us",
                     r.chain, r.replaced, r.moved, static_cast<double>(r.pause_ns) / 1e3);
        results.push_back(std::move(r));
    }
    return results;
}

DrainResult InstanceManager::drain(const std::vector<unsigned> &lcores)
{
    std::lock_guard lock(_mutex);
    if (_dp.stopping()) {
        throw Error("the host is stopping");
    }
    const std::vector<unsigned> ids = _dp.lcore_ids();
    std::vector<unsigned> drained = _drained;
    for (unsigned lcore : lcores) {
        if (std::find(ids.begin(), ids.end(), lcore) == ids.end()) {
            throw Error("lcore " + std::to_string(lcore) + " is not enabled on this host");
        }
        if (std::find(drained.begin(), drained.end(), lcore) == drained.end()) {
            drained.push_back(lcore);
        }
    }
    if (drained.size() == ids.size()) {
        throw Error("draining every lcore would leave none to run instances");
    }
    std::sort(drained.begin(), drained.end());
    const std::vector<unsigned> before = std::exchange(_drained, drained);
    DrainResult result;
    try {
        for (ChainRuntime &chain : _chains) {
            std::vector<InstanceSlot *> leaving;
            for (const auto &slot : _dp.slots()) {
                if (slot->chain_tag == chain.spec.tag && on_lcore(slot->state) &&
                    std::find(_drained.begin(), _drained.end(), slot->lcore) != _drained.end()) {
                    leaving.push_back(slot.get());
                }
            }
            std::vector<Staged> staged;
            try {
                for (InstanceSlot *old : leaving) {
                    // Attached at once (owning no bucket yet), so the next
                    // pick counts it and a pooled slot is not taken twice.
                    const unsigned lcore = pick_lcore(chain, {});
                    ScaleResult counted; // pool and cold starts are counted on the chain
                    InstanceSlot &fresh = ready_instance(chain, counted);
                    _dp.attach(fresh, lcore, std::move(fresh.chain));
                    staged.push_back({old, &fresh, nullptr, lcore});
                }
            } catch (const Error &) {
                // Nothing of this chain moved: the instances taken go back to the pool.
                for (Staged &s : staged) {
                    release(chain, *s.slot);
                }
                throw;
            }
            if (staged.empty()) {
                continue;
            }
            for (const Staged &s : staged) {
                result.moves.push_back({chain.spec.name, s.old->index, s.slot->index, s.old->lcore, s.lcore});
            }
            const Dataplane::Handover handover = hand_over(chain, staged, true);
            ++chain.events.scale_events;
            result.moved += handover.moved;
            result.pause_ns = std::max(result.pause_ns, handover.pause_ns);
            spdlog::info("chain '{}': {} instance(s) moved off drained lcore(s) {}; {} bucket(s) moved, data path "
                         "paused {:.1f} us",
                         chain.spec.name, staged.size(), fmt::join(_drained, ","), handover.moved,
                         static_cast<double>(handover.pause_ns) / 1e3);
        }
    } catch (const Error &) {
        _drained = before;
        throw;
    }
    result.drained = _drained;
    return result;
}

std::vector<unsigned> InstanceManager::undrain(const std::vector<unsigned> &lcores)
{
    std::lock_guard lock(_mutex);
    std::erase_if(_drained, [&](unsigned id) {
        return lcores.empty() || std::find(lcores.begin(), lcores.end(), id) != lcores.end();
    });
    return _drained;
}

std::vector<unsigned> InstanceManager::drained() const
{
    std::lock_guard lock(_mutex);
    return _drained;
}

void InstanceManager::refill_pools()
{
    const uint64_t now = monotonic_ns();
    for (ChainRuntime &chain : _chains) {
        if (now < chain.pool_retry_ns) {
            continue;
        }
        std::optional<uint32_t> index;
        std::shared_ptr<const CompiledChain> version;
        uint64_t generation = 0;
        {
            std::lock_guard lock(_mutex);
            if (_dp.stopping() || slots_of(chain.spec.tag, SlotState::pooled).size() >= _options.pool) {
                continue;
            }
            index = free_index(chain.spec.tag);
            if (!index) {
                continue;
            }
            version = chain.spec.compiled;
            generation = chain.generation;
        }
        // NF init may take long (a signature set to compile): outside the
        // lock, so scale requests are not held up.  Only this thread fills
        // pools, so the index stays free meanwhile unless a scale takes it.
        std::unique_ptr<ChainInstance> instance;
        try {
            instance = _factory(version, *index);
            instance->leave_state();
        } catch (const Error &e) {
            // 1 s, 2 s, 4 s ... up to a minute between tries.
            constexpr uint64_t first_wait_ns = 1'000'000'000, longest_wait_ns = 60'000'000'000;
            const uint64_t wait = std::min(longest_wait_ns, first_wait_ns << std::min(chain.pool_failures, 6u));
            ++chain.pool_failures;
            chain.pool_retry_ns = now + wait;
            spdlog::error("chain '{}': cannot pre-initialize a pool instance (try {}; next in {} s): {}",
                          chain.spec.name, chain.pool_failures, wait / 1'000'000'000, e.what());
            continue;
        }
        chain.pool_failures = 0;
        std::lock_guard lock(_mutex);
        if (free_index(chain.spec.tag) != index || chain.generation != generation) {
            continue; // a cold start took the index, or a reload made this version old; this one is finalized
        }
        InstanceSlot &slot = _dp.slot(chain.spec.name, chain.spec.tag, *index, chain.spec.egress, _options.ring_size);
        slot.egress = chain.spec.egress;
        slot.chain = std::move(instance);
        slot.state = SlotState::pooled;
    }
}

void InstanceManager::notice_wakeups()
{
    for (ChainRuntime &chain : _chains) {
        for (InstanceSlot *slot : slots_of(chain.spec.tag, SlotState::parked)) {
            if (!slot->gate.held.load(std::memory_order_acquire)) {
                // A packet opened its gate: the chain is at one again.
                _dp.unpark(*slot);
                ++chain.events.wakeups;
                spdlog::info("chain '{}': woken from zero by a packet (instance {} on lcore {})", chain.spec.name,
                             slot->index, slot->lcore);
            }
        }
    }
}

uint32_t InstanceManager::autoscale_min(const ChainRuntime &chain) const
{
    for (const AutoscaleChainConfig &rule : _options.autoscale.chains) {
        if (rule.chain == chain.spec.name) {
            return rule.min;
        }
    }
    return 0;
}

void InstanceManager::reap_idle(uint64_t now_ns)
{
    if (_options.keep_warm_s <= 0) {
        return;
    }
    const auto keep_warm_ns = static_cast<uint64_t>(_options.keep_warm_s * 1e9);
    for (ChainRuntime &chain : _chains) {
        std::vector<InstanceSlot *> active = slots_of(chain.spec.tag, SlotState::active);
        // The autoscaler's minimum stands: keep-warm reaps down to it only.
        const std::size_t floor = autoscale_min(chain);
        std::vector<InstanceSlot *> idle;
        for (InstanceSlot *slot : active) {
            const uint64_t last = slot->last_batch_ns.load(std::memory_order_relaxed);
            if (active.size() - idle.size() > floor && now_ns > last && now_ns - last >= keep_warm_ns &&
                rte_ring_empty(slot->ring)) {
                idle.push_back(slot);
            }
        }
        if (idle.empty()) {
            continue;
        }
        // Idle ones leave; when all are idle the chain goes to zero.
        const auto n = static_cast<uint32_t>(active.size() - idle.size());
        chain.events.reaped += idle.size();
        if (n == 0) {
            resize_locked(chain, 0, {}, "keep-warm " + std::to_string(_options.keep_warm_s) + " s expired");
            continue;
        }
        std::vector<InstanceSlot *> stay;
        for (InstanceSlot *slot : active) {
            if (std::find(idle.begin(), idle.end(), slot) == idle.end()) {
                stay.push_back(slot);
            }
        }
        record_pause(chain, shrink(chain, stay, idle));
        ++chain.events.scale_events;
        spdlog::info("chain '{}': {} idle instance(s) back to the pool after keep-warm {} s; {} left", chain.spec.name,
                     idle.size(), _options.keep_warm_s, n);
    }
}

void InstanceManager::autoscale(uint64_t now_ns)
{
    const AutoscaleConfig &cfg = _options.autoscale;
    for (const AutoscaleChainConfig &rule : cfg.chains) {
        ChainRuntime &chain = chain_named(rule.chain);
        std::vector<InstanceSlot *> active = slots_of(chain.spec.tag, SlotState::active);
        // Load: the busy fraction of the lcores its instances run on, averaged,
        // since the last sample.
        double busy = 0;
        unsigned lcores = 0;
        std::map<unsigned, uint64_t> seen;
        for (const InstanceSlot *slot : active) {
            if (seen.count(slot->lcore) != 0) {
                continue;
            }
            const uint64_t total = _dp.busy_ns(slot->lcore);
            seen[slot->lcore] = total;
            auto before = chain.busy_seen.find(slot->lcore);
            if (before != chain.busy_seen.end() && chain.sampled_at != 0 && now_ns > chain.sampled_at) {
                busy += std::min(1.0, static_cast<double>(total - before->second) /
                                          static_cast<double>(now_ns - chain.sampled_at));
                ++lcores;
            }
        }
        chain.busy_seen = std::move(seen);
        chain.sampled_at = now_ns;
        const auto n = static_cast<uint32_t>(active.size());
        if (lcores == 0) {
            // Parked or just resized: no sample yet.  A parked chain below its
            // minimum wakes.
            if (n < rule.min && !_dp.stopping()) {
                ++chain.events.autoscale_out;
                resize_locked(chain, rule.min, {}, "autoscale: below min " + std::to_string(rule.min));
            }
            chain.above_since = chain.below_since = 0;
            continue;
        }
        chain.load = busy / lcores;
        // Instances that would bring the load to the target.
        const double demand = chain.load * n / rule.target_busy;
        auto wanted = static_cast<uint32_t>(std::ceil(demand - 1e-9));
        wanted = std::clamp<uint32_t>(wanted, rule.min, rule.max);
        // Hysteresis: fewer instances only when they would stay below the
        // target with a margin, so a scale-in does not trigger a scale-out.
        if (wanted < n && chain.load * n / (n - 1.0) > rule.target_busy * cfg.scale_in_margin) {
            wanted = n;
        }
        // A direction held for its window acts; the other one's clock restarts.
        auto decide = [&](uint64_t &since, uint64_t &other, uint64_t window_ms, uint64_t &decisions, uint32_t to,
                          const char *direction) {
            other = 0;
            since = since != 0 ? since : now_ns;
            if (now_ns - since < window_ms * 1'000'000 || _dp.stopping()) {
                return;
            }
            ++decisions;
            char why[128];
            std::snprintf(why, sizeof why, "autoscale: load %.2f %s target %.2f", chain.load, direction,
                          rule.target_busy);
            resize_locked(chain, to, {}, why);
            since = 0;
            chain.busy_seen.clear(); // the next sample starts after the change
        };
        if (wanted > n) {
            decide(chain.above_since, chain.below_since, cfg.scale_out_ms, chain.events.autoscale_out, wanted, "above");
        } else if (wanted < n) {
            // One at a time: the load redistributes before the next.
            decide(chain.below_since, chain.above_since, cfg.scale_in_ms, chain.events.autoscale_in, n - 1, "below");
        } else {
            chain.above_since = chain.below_since = 0;
        }
    }
}

void InstanceManager::tick(uint64_t now_ns)
{
    {
        std::lock_guard lock(_mutex);
        if (_dp.stopping()) {
            return;
        }
        notice_wakeups();
        reap_idle(now_ns);
        autoscale(now_ns);
    }
    refill_pools();
}

void *InstanceManager::thread_main(void *self_ptr)
{
    auto *self = static_cast<InstanceManager *>(self_ptr);
    // Often enough to notice a woken chain and to react to load well within
    // a second; the autoscaler samples at its own interval.
    const auto period = std::chrono::milliseconds(std::clamp<uint32_t>(self->_options.autoscale.interval_ms, 10, 1000));
    std::unique_lock lock(self->_stop_mutex);
    while (!self->_stop_cv.wait_for(lock, period, [self] { return self->_stopping; })) {
        lock.unlock();
        try {
            self->tick(monotonic_ns());
        } catch (const Error &e) {
            spdlog::error("instance manager: {}", e.what());
        }
        lock.lock();
    }
    return nullptr;
}

void InstanceManager::start_thread(const ThreadStarter &start)
{
    if (int rc = start(&_thread, &InstanceManager::thread_main, this); rc != 0) {
        throw Error(std::string("cannot start the instance manager thread: ") + std::strerror(rc < 0 ? -rc : rc));
    }
    _thread_started = true;
}

std::vector<ChainSummary> InstanceManager::chain_summaries() const
{
    std::lock_guard lock(_mutex);
    std::vector<ChainSummary> out;
    for (const ChainRuntime &chain : _chains) {
        ChainSummary s;
        s.name = chain.spec.name;
        const state::FlowTable *flows = nullptr;
        for (const auto &slot : _dp.slots()) {
            if (slot->chain_tag != chain.spec.tag) {
                continue;
            }
            if (flows == nullptr && slot->state != SlotState::empty && slot->chain) {
                flows = slot->chain->flow_table();
            }
            s.active += slot->state == SlotState::active;
            s.pooled += slot->state == SlotState::pooled;
            s.parked += slot->state == SlotState::parked;
            s.metered += slot->packets.load(std::memory_order_relaxed);
            if (uint64_t ns = slot->wake_latency_ns.load(std::memory_order_relaxed); ns != 0) {
                s.wake_latency_ns.push_back(ns);
            }
        }
        s.events = chain.events;
        s.load = chain.load;
        s.pause_ns_p50 = percentile(chain.pauses_ns, 0.5);
        s.pause_ns_p99 = percentile(chain.pauses_ns, 0.99);
        if (flows != nullptr) {
            const state::FlowTableTotals t = flows->totals();
            s.has_flows = true;
            s.flows_live = t.live;
            s.flows_capacity = t.capacity;
            s.flows_created = t.created;
            s.flows_expired = t.expired;
            s.flows_refused_full = t.refused_full;
        }
        out.push_back(std::move(s));
    }
    return out;
}

void InstanceManager::visit_flows_at_stop(uint64_t now_ns)
{
    std::lock_guard lock(_mutex);
    for (const auto &slot : _dp.slots()) {
        if (!on_lcore(slot->state) || !slot->chain) {
            continue;
        }
        std::array<uint64_t, io::route_buckets / 64> owned{};
        for (std::size_t w = 0; w < owned.size(); ++w) {
            owned[w] = slot->sweep_parts[w].load(std::memory_order_acquire);
        }
        slot->chain->visit_flows_at_stop(owned.data(), now_ns);
    }
}

void InstanceManager::add_nf_usage(std::vector<NfUsage> &into, const ChainInstance &instance)
{
    // By name: a reload may have added, removed or reordered the chain's NFs.
    for (std::size_t i = 0; i < instance.size(); ++i) {
        const std::string &name = instance.context(i).nf_name;
        auto it = std::find_if(into.begin(), into.end(), [&](const NfUsage &u) { return u.name == name; });
        if (it == into.end()) {
            it = into.insert(into.end(), NfUsage{name});
        }
        const NfRunStats &s = instance.stats(i);
        it->packets += s.packets.load(std::memory_order_relaxed);
        it->bytes += s.bytes.load(std::memory_order_relaxed);
        it->dropped += s.dropped.load(std::memory_order_relaxed);
        it->sampled_ns += s.sampled_ns.load(std::memory_order_relaxed);
    }
}

HostUsage InstanceManager::usage() const
{
    std::lock_guard lock(_mutex);
    HostUsage out;
    for (const ChainRuntime &chain : _chains) {
        const std::size_t index = out.chains.size();
        ChainUsage u;
        u.name = chain.spec.name;
        u.nfs = chain.retired;
        for (const auto &slot : _dp.slots()) {
            if (slot->chain_tag != chain.spec.tag) {
                continue;
            }
            u.packets += slot->packets.load(std::memory_order_relaxed);
            u.bytes += slot->bytes.load(std::memory_order_relaxed);
            u.dropped +=
                slot->dropped.load(std::memory_order_relaxed) + slot->tx_dropped.load(std::memory_order_relaxed);
            u.active += slot->state == SlotState::active;
            if (slot->chain) {
                add_nf_usage(u.nfs, *slot->chain);
                for (std::size_t i = 0; on_lcore(slot->state) && i < slot->chain->size(); ++i) {
                    const std::string &nf = slot->chain->context(i).nf_name;
                    std::find_if(u.nfs.begin(), u.nfs.end(), [&](const NfUsage &n) { return n.name == nf; })->running =
                        true;
                }
            }
            const bool running = on_lcore(slot->state);
            out.slots.push_back(
                {index, slot->number, slot->lcore, running, slot->packets.load(std::memory_order_relaxed)});
            if (running && out.lcore_busy_ns.count(slot->lcore) == 0) {
                out.lcore_busy_ns[slot->lcore] = _dp.busy_ns(slot->lcore);
            }
        }
        out.chains.push_back(std::move(u));
    }
    return out;
}

} // namespace serpens
