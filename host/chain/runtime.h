#pragma once
// The chaining runtime: one instance of a compiled chain, run on packet
// batches by plain function calls in prime sequential order (paper §III-B,
// Fig. 8(b)).  One indirect call per NF per batch; NFs that no packet of the
// batch visits are skipped.

#include "chain/compiled.h"
#include "core/burst.h"
#include "core/cache_line.h"
#include "core/nf_context.h"
#include "state/flow_table.h"

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <vector>

namespace serpens {

inline constexpr std::chrono::milliseconds default_init_warn_after{5000};

// Finds (or creates) the state executor of (chain, NF); may return nullptr
// when the host runs without state (then create_table fails).
using ExecutorResolver = std::function<state::Executor *(const std::string &chain, const std::string &nf)>;

// Opens (or finds) the flow table of a chain whose NFs keep per-flow state:
// `spec` names the chain and its NFs' areas; the resolver sets capacity and
// timeout and says in `first` whether it opened the table just now.
using FlowTableResolver = std::function<state::FlowTable *(state::FlowTableSpec spec, bool &first)>;

// Per-NF counters the runtime keeps.  Written by the instance's worker only;
// relaxed atomics let the control thread read them while it runs.  A line
// each, so one lcore's never shares one with another's (cache_line.h).
struct alignas(cache_line) NfRunStats {
    std::atomic<uint64_t> packets{0}; // packets this NF processed
    std::atomic<uint64_t> dropped{0}; // of those, dropped by its verdict
    std::atomic<uint64_t> bytes{0};   // their lengths as the NF left them (metering)
    std::atomic<uint64_t> batches{0}; // calls of process()
    // Time in process() over one batch in kTimedBatchEvery: shares the
    // chain's busy time among its NFs (metering) at no per-packet cost.
    std::atomic<uint64_t> sampled_ns{0};
};

// One batch in this many is timed per NF (a power of two).
inline constexpr uint32_t kTimedBatchEvery = 16;

// run()'s label for a packet whose flow a peer serves (remote_peers()).  No
// NF is shown it: it is no NF's index, nor OUT or DROP.
inline constexpr uint16_t label_remote = 0xfffe;

// Where a chain's flows are served when it has instances on other servers
// (migration avoidance, paper SIII-A2): a flow stays where its first packet
// was served, and only new flows follow new_flows.  One per chain, shared
// by its instances; the control thread writes it, workers read it.
struct FlowSteering {
    // Per router bucket: the peer (1..flow_max_peer) that serves the
    // bucket's new flows; 0: this host does.
    std::array<std::atomic<uint8_t>, state::flow_parts> new_flows{};
    std::atomic<bool> steers{false}; // some bucket's new flows go to a peer
    // Per peer: whether it serves.  A flow of a peer that is down comes
    // back to this host as a new flow: its state there is lost.
    std::array<std::atomic<bool>, state::flow_max_peer + 1> peer_up{};
};

class ChainInstance {
public:
    // Creates a context per NF and calls each NF's init, in chain order.  When
    // one init fails, every context created so far (the failing one included)
    // gets fini, and Error is thrown naming the NF and its return code.  An
    // NF whose config holds a key its init never read is refused the same
    // way with ConfigError at that key (config::unread_keys).  An init still
    // running after `init_warn_after` is named in a warning (0: never).
    //
    // When an NF of the chain keeps per-flow state and `flows` is given, the
    // instance uses the chain's flow table: run() looks every packet up in
    // it once, and expire_flows() sweeps it.  The first instance to open the
    // table finishes the expiries a crash interrupted.
    ChainInstance(std::shared_ptr<const CompiledChain> chain, uint32_t instance_id, const serpens_host_api *api,
                  const ExecutorResolver &executors = {},
                  std::chrono::milliseconds init_warn_after = default_init_warn_after,
                  const FlowTableResolver &flows = {});
    ~ChainInstance(); // fini for every NF, exactly once, in reverse order
    ChainInstance(const ChainInstance &) = delete;
    ChainInstance &operator=(const ChainInstance &) = delete;

    // Runs n <= max_burst packets through the chain.  On return labels[i] is
    // SERPENS_LABEL_OUT (reached egress), SERPENS_LABEL_DROP (by an NF, or
    // by the host: a new flow its full flow table refused), or
    // label_remote: its flow is served by peer remote_peers()[i], which it
    // must be sent to unprocessed.  returned_from[i] != 0 (nullptr: none
    // is) says packet i comes back processed from that peer: it goes OUT
    // untouched, and its flow is remembered as that peer's, so the replies
    // to a flow a peer translated find their way back there.  keys[i]
    // (nullptr: none) is the flow key the parser gave packet i, which
    // spares the flow table reading it again.  Returns the number of
    // packets that reached egress.  Hot path: no allocation.
    uint32_t run(serpens_pkt *pkts, uint32_t n, uint16_t *labels, uint64_t now_ns,
                 const uint8_t *returned_from = nullptr, const net::FlowKey *keys = nullptr) noexcept;
    // After run(): the peer of each label_remote packet.
    const uint8_t *remote_peers() const noexcept { return _remote_peers; }
    // Steers this instance's new flows as `steering` says (nullptr: all on
    // this host); it outlives the instance.  Control side, before it serves.
    void steer_by(const FlowSteering *steering) noexcept { _steering = steering; }

    // Its share of the chain's global/write state: the constructor takes it;
    // leave_state gives it back (RELEASE: re-split among the others;
    // EVENTUAL: its counts merged into the base) while it waits in a pool,
    // and join_state takes a share again before it serves.  Control side.
    void join_state();
    void leave_state();
    // Makes this instance's NFs the ones whose split/merge/update hooks the
    // state manager calls: a reload swapped in their build.  Control side.
    void adopt_state_hooks();

    // Hot path, on the instance's worker between batches: sweeps the parts
    // of the flow table this instance owns (bit p of owned[p / 64]), a share
    // sized for a call every `period_ns`: shows entries to the NFs'
    // flow_visit hooks (nf.h, "Visiting flows") and removes the flows idle
    // past the chain's timeout that none kept, flow_expired hooks first.
    // Returns how many went.
    std::size_t expire_flows(const uint64_t *owned, uint64_t now_ns, uint64_t period_ns) noexcept;
    state::FlowTable *flow_table() const noexcept { return _flows; }
    // A clean stop, once no packet runs any more: shows every entry of the
    // parts this instance owns to the NFs' flow_visit hooks with `stopping`
    // set, so they fold what flows hold (entries past the timeout go as in
    // a sweep).  Runs on the caller's thread.
    void visit_flows_at_stop(const uint64_t *owned, uint64_t now_ns) noexcept;

    const CompiledChain &chain() const noexcept { return *_chain; }
    uint32_t instance_id() const noexcept { return _instance_id; }
    const NfRunStats &stats(std::size_t nf_index) const { return _stats[nf_index]; }
    const NfContext &context(std::size_t nf_index) const { return *_contexts[nf_index]; }
    std::size_t size() const noexcept { return _slots.size(); }

private:
    struct Slot {
        void (*process)(serpens_nf_ctx *, serpens_batch *);
        serpens_nf_ctx *ctx;
        const uint16_t *next; // port -> label, 256 entries
        const char *site;     // what a crash in process() names (fault.h)
        uint32_t flow_offset; // its area in a flow entry (0: it keeps none)
        void (*flow_expired)(serpens_nf_ctx *, void *);
        int (*flow_visit)(serpens_nf_ctx *, void *, const serpens_flow_info *);
        uint32_t flow_visit_ms;
    };

    void finalize(std::size_t count) noexcept;
    void open_flow_table(const FlowTableResolver &flows);
    static void on_flow_expired(void *self, uint8_t *entry) noexcept;
    static bool on_flow_visit(void *self, uint8_t *entry, uint64_t idle_ns, bool expiring) noexcept;
    // run()'s part for flows peers serve and packets they processed:
    // relabels them and takes them from the entry NF's count.
    void steer_remote(uint32_t n, uint16_t *labels, const uint8_t *returned_from, uint32_t *pending) noexcept;
    // run()'s part for new flows the full table refused (flow_flag_refused):
    // dropped before the entry NF, or shown to the NFs with no entry, as the
    // table's drops_when_full says.
    void refuse_full(uint32_t n, uint16_t *labels, const uint8_t *returned_from, uint32_t *pending) noexcept;
    // Whether every one of the batch's first n packets has the default port.
    bool all_default_ports(uint32_t n) const noexcept;

    std::shared_ptr<const CompiledChain> _chain;
    uint32_t _instance_id;
    std::vector<std::unique_ptr<NfContext>> _contexts;
    std::vector<Slot> _slots;
    std::unique_ptr<NfRunStats[]> _stats;
    LineVector<uint32_t> _pending; // per label bucket: 0 out, 1..N NFs, N+1 drop
    uint32_t _batch_seq = 0;       // batches run, for kTimedBatchEvery
    state::FlowTable *_flows = nullptr;
    state::FlowSweepCursor _sweep;
    uint64_t _sweep_pass_ns = 0; // a whole pass over the owned parts at least this often (0: no sweep)
    bool _visitors = false;      // an NF of the chain has a flow_visit hook
    bool _visit_all = false;     // an NF visits every entry, not only expiring ones
    uint64_t _sweep_now_ns = 0;  // the running sweep's clock, for the visitors
    bool _stopping = false;      // the running sweep is visit_flows_at_stop's
    alignas(cache_line) uint8_t _ports[max_burst] = {};
    void *_flow_entries[max_burst] = {};
    uint8_t _flow_flags[max_burst] = {};
    const FlowSteering *_steering = nullptr;
    uint8_t _new_flow_peers[max_burst] = {};
    uint8_t _remote_peers[max_burst] = {};
};

} // namespace serpens
