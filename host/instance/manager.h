#pragma once
// The instance manager: the serverless lifecycle of chain instances on one
// host (paper §III-A2, §IV-A2).
//
//  - Scale: `scale(chain, n)` adds or removes instances while traffic
//    flows.  A new instance attaches the executors' state (no per-flow copy;
//    RELEASE state is re-split so it gets a share, EVENTUAL state gives it a
//    replica), then buckets move to it by a handover (io/router.h); a leaving
//    instance's buckets move first, then its share is merged back.
//  - Warm pool: per chain, `pool` instances whose NF init is done wait on no
//    lcore, holding no share of global/write state, so a scale-out is taking
//    a share, an attach and a handover, with no NF init.
//  - Keep-warm: an instance that has processed nothing for keep_warm_s goes
//    back to the pool (its state stays); the last one of a chain is parked
//    instead (scale to zero): it owns every bucket, its lcore does not run it,
//    and its ring buffers packets until the first one opens its gate (a
//    wake-up is that, and the manager noticing it).
//  - Autoscaler (off unless [[autoscale.chain]] names chains): every
//    interval, a chain whose instances' lcores are busier than its target for
//    scale_out_ms gets the instances that bring it back under; one below it
//    with a margin for scale_in_ms gets fewer.  Every decision is logged and
//    counted.
//
// Everything here runs on the control thread or the manager's own thread,
// never on a worker lcore; one mutex serializes them.

#include "config/host_config.h"
#include "instance/dataplane.h"

#include <pthread.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace serpens {

// A chain the manager can run.
struct ManagedChain {
    std::string name;
    uint32_t tag = 0;
    uint16_t egress = 0;
    std::vector<unsigned> lcores;                  // where new instances may go; empty: every worker lcore
    std::shared_ptr<const CompiledChain> compiled; // the version new instances run
};

// A new version of a managed chain, for a reload.
struct ChainUpdate {
    std::string chain;
    std::shared_ptr<const CompiledChain> compiled;
    uint16_t egress = 0;
};

// What a reload did to one chain.
struct ReplaceResult {
    std::string chain;
    uint32_t replaced = 0; // instances on lcores swapped for the new version (a parked one included)
    uint32_t moved = 0;    // buckets that changed owner
    uint64_t pause_ns = 0; // the new instances were held this long
};

struct ManagerOptions {
    uint32_t pool = 1;      // pre-initialized instances kept per chain
    double keep_warm_s = 0; // 0: an idle instance is never reaped
    uint32_t ring_size = 4096;
    uint32_t max_instances = 16; // per chain (cells of global/write state)
    AutoscaleConfig autoscale;
};

// What a drain did: instances moved off the drained lcores.
struct DrainResult {
    struct Move {
        std::string chain;
        uint32_t from_index = 0;
        uint32_t to_index = 0;
        unsigned from_lcore = 0;
        unsigned to_lcore = 0;
    };
    std::vector<unsigned> drained; // every drained lcore, after this request
    std::vector<Move> moves;
    uint32_t moved = 0;    // buckets that changed owner
    uint64_t pause_ns = 0; // longest a gaining instance was held
};

// How many instances a scale request asks for.
struct ScaleTarget {
    bool relative = false;
    int64_t value = 0; // absolute count, or +k / -k
};

// What a scale event did.
struct ScaleResult {
    std::string chain;
    uint32_t before = 0;
    uint32_t after = 0;
    uint32_t moved = 0;                                   // buckets that changed owner
    uint64_t pause_ns = 0;                                // longest a gaining instance was held
    uint32_t from_pool = 0;                               // instances that came ready from the pool
    uint32_t cold = 0;                                    // instances created (NF init) for this event
    uint64_t launch_ns = 0;                               // from the request to the new instances owning buckets
    std::vector<std::pair<uint32_t, unsigned>> instances; // (index, lcore) of each active one
};

// What happened to one chain's instances since the host started.
struct ChainEvents {
    uint64_t scale_events = 0;
    uint64_t autoscale_out = 0; // scale-outs the autoscaler decided
    uint64_t autoscale_in = 0;
    uint64_t reaped = 0;      // instances that left after keep_warm_s without a packet
    uint64_t wakeups = 0;     // times a packet woke the chain from zero
    uint64_t cold_starts = 0; // instances created with NF init
    uint64_t pool_starts = 0; // instances that came ready from the pool
    uint64_t reloads = 0;
};

// One chain's instances and events, as the stats show them.
struct ChainSummary {
    std::string name;
    uint32_t active = 0;
    uint32_t pooled = 0;
    uint32_t parked = 0;
    uint64_t metered = 0; // packets its instance slots ran on (they survive scale events)
    ChainEvents events;
    double load = 0;
    uint64_t pause_ns_p50 = 0;
    uint64_t pause_ns_p99 = 0;
    std::vector<uint64_t> wake_latency_ns; // last wake-up of each slot that had one
    // Its flow table (its NFs' per-flow state), summed over parts; only when
    // an instance exists to hold it.
    bool has_flows = false;
    uint64_t flows_live = 0;
    uint64_t flows_capacity = 0;
    uint64_t flows_created = 0;
    uint64_t flows_expired = 0;
    uint64_t flows_refused_full = 0;
};

// What the host's chains used so far, for metering: counters that only grow
// while the host runs, across scale events (an instance that is finalized
// leaves its NFs' counts with its chain).
struct NfUsage {
    std::string name;
    uint64_t packets = 0;
    uint64_t bytes = 0;
    uint64_t dropped = 0;
    uint64_t sampled_ns = 0; // NfRunStats::sampled_ns: its share of the chain's busy time
    bool running = false;    // an instance on an lcore runs it now (it accrues instance-seconds)
};
struct ChainUsage {
    std::string name;
    uint64_t packets = 0;     // its instances ran on
    uint64_t bytes = 0;       // of those, as they entered the chain
    uint64_t dropped = 0;     // by an NF's verdict, or a full TX queue
    uint32_t active = 0;      // instances running now
    std::vector<NfUsage> nfs; // chain order; empty until the chain has had an instance
};
// One instance slot's packets and where it runs: busy time of an lcore is
// shared among the chains it ran, by packets.
struct SlotUsage {
    std::size_t chain = 0; // index into HostUsage::chains
    uint32_t number = 0;   // the host's instance number: stable across samples
    unsigned lcore = 0;
    bool on_lcore = false;
    uint64_t packets = 0;
};
struct HostUsage {
    std::vector<ChainUsage> chains;
    std::vector<SlotUsage> slots;
    std::map<unsigned, uint64_t> lcore_busy_ns; // of the lcores that run instances
};

class InstanceManager {
public:
    // Creates instance `index` of a chain's version `chain` (NF init, which
    // takes its share of global/write state).  Throws Error.
    using Factory = std::function<std::unique_ptr<ChainInstance>(const std::shared_ptr<const CompiledChain> &chain,
                                                                 uint32_t index)>;

    InstanceManager(Dataplane &dataplane, std::vector<ManagedChain> chains, Factory factory, ManagerOptions options);
    ~InstanceManager(); // stops its thread; instances stay in the dataplane's slots
    InstanceManager(const InstanceManager &) = delete;
    InstanceManager &operator=(const InstanceManager &) = delete;

    // Before Dataplane::prepare(): the instances a start runs, `count` of
    // chain `chain` on `lcores` (one per instance, or one for all, or empty:
    // the least loaded).  Count 0 parks one instance.  Throws Error.
    void start(const std::string &chain, uint32_t count, const std::vector<unsigned> &lcores);
    // Starts the thread that refills pools, reaps idle instances, notices
    // wake-ups and runs the autoscaler, with `start` (e.g.
    // rte_ctrl_thread_create, to keep it off the workers' CPUs; returns an
    // errno-style code).  Throws Error when it cannot.
    using ThreadStarter = std::function<int(pthread_t *thread, void *(*body)(void *), void *arg)>;
    void start_thread(const ThreadStarter &start);

    // Scales `chain` to the target; `lcores` (empty: the chain's, or any
    // worker lcore) is where new instances may go.  Throws Error with the
    // reason a request cannot be done (unknown chain, out of range,
    // stopping).
    ScaleResult scale(const std::string &chain, ScaleTarget target, const std::vector<unsigned> &lcores,
                      const std::string &why);

    // Reload: swaps every instance of each updated chain for one of its new
    // version, all chains or none.  First the new instances are created
    // (NF init: a state table the new build declares otherwise than the
    // running one refuses it, as does anything else init refuses); when any
    // fails, those created are finalized and Error says why, the running
    // instances untouched.  Then, per chain, each new instance takes the
    // buckets of the old one on the same lcore by a handover, so the old
    // version finishes the packets it has and the new one starts at a batch
    // boundary, no packet lost or reordered; the old ones are finalized (their
    // share of global/write state merged back, their metering kept with the
    // chain).  Pooled instances of the old version are finalized; the pool
    // refills with the new one.
    std::vector<ReplaceResult> replace(const std::vector<ChainUpdate> &updates);

    // Drain: every instance on `lcores` hands its buckets to one started on
    // another lcore (from the pool, else created), by the handover scaling
    // uses, and goes back to the pool; no scale event, autoscaler or wake-up
    // places an instance there until undrain.  An lcore that receives keeps
    // receiving and dispatches to the instances' new lcores.  Throws Error
    // (an lcore not enabled, none left to run instances, a chain at its most
    // instances); then the lcores are not drained, and instances already
    // moved stay where they went.
    DrainResult drain(const std::vector<unsigned> &lcores);
    // Lets scaling use `lcores` again (empty: every drained lcore); no
    // instance moves back by itself.  Returns the lcores still drained.
    std::vector<unsigned> undrain(const std::vector<unsigned> &lcores);
    std::vector<unsigned> drained() const;
    // Packets an instance's ring holds (one slot of ring_size stays empty).
    uint32_t ring_capacity() const noexcept { return serpens::ring_capacity(_options.ring_size); }

    // Per chain: instances by state, events, pauses and wake-ups.
    std::vector<ChainSummary> chain_summaries() const;

    // A clean stop, after Dataplane::run() returned: every instance on an
    // lcore shows the flows it owns to its NFs' flow_visit hooks once more
    // (ChainInstance::visit_flows_at_stop), before any fini.
    void visit_flows_at_stop(uint64_t now_ns);

    // What every chain used so far (for the meter).
    HostUsage usage() const;

    // Runs `f` with every scale event held off, so it may read slots'
    // chain instances.
    template<class F>
    auto locked(F &&f) const
    {
        std::lock_guard lock(_mutex);
        return f();
    }

    // One pass of the background work (the thread calls it; tests may too).
    void tick(uint64_t now_ns);

private:
    struct ChainRuntime {
        ManagedChain spec;
        ChainEvents events;
        uint64_t generation = 0;         // of spec.compiled: a pool instance of an older one is not kept
        std::vector<uint64_t> pauses_ns; // of the last events, for p50/p99
        // autoscaler
        std::map<unsigned, uint64_t> busy_seen; // lcore -> its busy_ns at the last sample
        std::vector<NfUsage> retired;           // NF counts of its finalized instances
        uint64_t sampled_at = 0;
        uint64_t above_since = 0;
        uint64_t below_since = 0;
        double load = 0;
        // Pool refills that failed in a row (an NF's init refused): the next
        // waits longer each time, so a broken rules file is not re-read and
        // logged ten times a second.
        uint32_t pool_failures = 0;
        uint64_t pool_retry_ns = 0;
    };

    ChainRuntime &chain_named(const std::string &name);
    std::vector<InstanceSlot *> slots_of(uint32_t tag, SlotState state) const;
    std::optional<uint32_t> free_index(uint32_t tag) const;
    // The least loaded lcore `chain` may use.  Throws Error when every one it
    // may use is drained.
    unsigned pick_lcore(const ChainRuntime &chain, const std::vector<unsigned> &allowed) const;
    // An instance ready to attach, holding its share of global/write state:
    // from the pool, else created now.
    InstanceSlot &ready_instance(ChainRuntime &chain, ScaleResult &result);
    // Gives the buckets of `leaving` to `stay` (a handover), then releases them.
    Dataplane::Handover shrink(ChainRuntime &chain, const std::vector<InstanceSlot *> &stay,
                               const std::vector<InstanceSlot *> &leaving);
    void release(ChainRuntime &chain, InstanceSlot &slot); // detached: to the pool or destroyed
    static void record_pause(ChainRuntime &chain, const Dataplane::Handover &handover);
    ScaleResult resize_locked(ChainRuntime &chain, uint32_t n, const std::vector<unsigned> &lcores,
                              const std::string &why);
    void refill_pools();
    uint32_t autoscale_min(const ChainRuntime &chain) const; // 0 when not autoscaled
    void reap_idle(uint64_t now_ns);
    void notice_wakeups();
    void autoscale(uint64_t now_ns);
    static void add_nf_usage(std::vector<NfUsage> &into, const ChainInstance &instance);
    // An instance staged on `slot` to take over from `old` on `lcore` (null:
    // already attached there).
    struct Staged {
        InstanceSlot *old = nullptr;
        InstanceSlot *slot = nullptr;
        std::unique_ptr<ChainInstance> instance;
        unsigned lcore = 0;
    };
    std::vector<Staged> stage_replacements(ChainRuntime &chain, const ChainUpdate &update);
    ReplaceResult swap_in(ChainRuntime &chain, const ChainUpdate &update, std::vector<Staged> &staged);
    // Attaches each staged instance and gives it its old one's buckets in one
    // handover (a parked old one is unparked first, its successor parked
    // after); the old ones go back to the pool, or are finalized.
    Dataplane::Handover hand_over(ChainRuntime &chain, std::vector<Staged> &staged, bool old_to_pool);

    static void *thread_main(void *self);

    Dataplane &_dp;
    std::vector<ChainRuntime> _chains;
    Factory _factory;
    ManagerOptions _options;
    mutable std::mutex _mutex;
    std::vector<unsigned> _drained; // lcores no instance is placed on
    bool _thread_started = false;
    pthread_t _thread{};
    std::mutex _stop_mutex;
    std::condition_variable _stop_cv;
    bool _stopping = false;
};

} // namespace serpens
