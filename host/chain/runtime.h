#pragma once
// The chaining runtime: one instance of a compiled chain, run on packet
// batches by plain function calls in prime sequential order (paper §III-B,
// Fig. 8(b)).  One indirect call per NF per batch; NFs that no packet of the
// batch visits are skipped.

#include "chain/compiled.h"
#include "core/burst.h"
#include "core/nf_context.h"

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

// Per-NF counters the runtime keeps.  Written by the instance's worker only;
// relaxed atomics let the control thread read them while it runs.
struct NfRunStats {
    std::atomic<uint64_t> packets{0}; // packets this NF processed
    std::atomic<uint64_t> dropped{0}; // of those, dropped by its verdict
    std::atomic<uint64_t> batches{0}; // calls of process()
};

class ChainInstance {
public:
    // Creates a context per NF and calls each NF's init, in chain order.  When
    // one init fails, every context created so far (the failing one included)
    // gets fini, and Error is thrown naming the NF and its return code.  An
    // NF whose config holds a key its init never read is refused the same
    // way with ConfigError at that key (config::unread_keys).  An init still
    // running after `init_warn_after` is named in a warning (0: never).
    ChainInstance(std::shared_ptr<const CompiledChain> chain, uint32_t instance_id, const serpens_host_api *api,
                  const ExecutorResolver &executors = {},
                  std::chrono::milliseconds init_warn_after = default_init_warn_after);
    ~ChainInstance(); // fini for every NF, exactly once, in reverse order
    ChainInstance(const ChainInstance &) = delete;
    ChainInstance &operator=(const ChainInstance &) = delete;

    // Runs n <= max_burst packets through the chain.  On return labels[i] is
    // SERPENS_LABEL_OUT (reached egress) or SERPENS_LABEL_DROP.  Returns the
    // number of packets that reached egress.  Hot path: no allocation.
    uint32_t run(serpens_pkt *pkts, uint32_t n, uint16_t *labels, uint64_t now_ns) noexcept;

    // Its share of the chain's global/write state: the constructor takes it;
    // leave_state gives it back (RELEASE: re-split among the others;
    // EVENTUAL: its counts merged into the base) while it waits in a pool,
    // and join_state takes a share again before it serves.  Control side.
    void join_state();
    void leave_state();

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
    };

    void finalize(std::size_t count) noexcept;

    std::shared_ptr<const CompiledChain> _chain;
    uint32_t _instance_id;
    std::vector<std::unique_ptr<NfContext>> _contexts;
    std::vector<Slot> _slots;
    std::unique_ptr<NfRunStats[]> _stats;
    std::vector<uint32_t> _pending; // per label bucket: 0 out, 1..N NFs, N+1 drop
    alignas(64) uint8_t _ports[max_burst] = {};
};

} // namespace serpens
