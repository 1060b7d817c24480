#pragma once
// Executors and the per-host state store (paper §III-A).
//
// One StateStore per host owns a directory of segments:
//     <root>/<chain>/<nf>/<table>.tbl          (names %-escaped)
// An Executor is one (chain, NF): it owns that NF's tables, outlives the
// instances that use them, and is the state manager for its global/write
// tables (split, merge, update, timers, triggers, scale-in).
//
// Global/write protocol (why a resource is never handed out twice):
//  - Each key has cells: cell 0 is the base, cell 1 + i belongs to instance i.
//    An instance reads and writes only its own cell (get_state / put_state).
//  - A put is a CAS on the cell's control word against the version the
//    instance last read; a rebalance or merge owns every cell it touches at
//    once (W bit on each), rewrites them, and bumps their versions.  So an
//    instance whose get raced with a rebalance has its put refused
//    (err_again, proposed SERPENS_EAGAIN): it reads again and redoes its
//    change on what it now owns.  A resource is therefore in exactly one cell
//    at any time, and an instance may hand a resource out only after the put
//    that removed it from its cell succeeded.
//  - No quiescence is needed; the manager holds the cells for the few
//    microseconds of a memcpy, during which owners' gets still succeed
//    (double-buffered cells) and their puts fail fast.
//
// Default state formats (used when the NF gives no hook):
//  - RELEASE: the value is a bitmap pool of value_size * 8 items; a set bit
//    is a free item owned by that cell.  merge = OR, split = deal the free
//    items out in equal contiguous runs, update = merge then split among the
//    active instances ("split the remaining resources equally").
//  - EVENTUAL: the value is an array of uint64 counters (value_size a
//    multiple of 8).  Every active replica starts as a copy of the base G
//    (the last merge result); merge computes G' = G + sum_i (R_i - G) word
//    by word and copies G' back into every replica, so an instance's get
//    shows the global value as of the last merge plus its own increments.
//    update = merge.  The all-zero value must be the empty state.

#include "core/clock.h"
#include "state/flow_table.h"
#include "state/table.h"

#include <serpens/nf.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace serpens::state {

class Executor;
class StateStore;

struct StoreOptions {
    std::filesystem::path root; // empty: default_root(host_id)
    std::string host_id = "default";
    uint32_t max_instances = 16;                        // cells per global/write key, <= 64
    uint64_t flow_idle_timeout_ns = 300'000'000'000ull; // per-flow expiry; 0 = never
    std::size_t expire_budget = 16384;                  // slots swept per table per tick, at most
};

// Trigger requests of one global/write table, preallocated when the table is
// created so a worker records one without locking or allocating: bit i of
// want[slot] = instance i asked for that key's rebalance; `any` tells the
// state manager's tick that some bit may be set.  empty[slot] bit i = the last
// rebalance done for instance i's trigger left its cell empty (default RELEASE
// format only), reported to its next trigger as SERPENS_ENOSPC.  A slot reused
// by another key at worst gets one extra rebalance.
struct TriggerBoard {
    explicit TriggerBoard(std::size_t n_slots)
        : n(n_slots), want(new std::atomic<uint64_t>[n_slots]()), empty(new std::atomic<uint64_t>[n_slots]())
    {}
    std::size_t n;
    std::unique_ptr<std::atomic<uint64_t>[]> want;
    std::unique_ptr<std::atomic<uint64_t>[]> empty;
    std::atomic<bool> any{false};
};

// What a plugin's serpens_table * points to: one table as seen by one
// instance.  Owned by the Executor; stays valid until the Executor goes.
// Used by one worker thread (the instance's).
struct TableHandle {
    Table *table = nullptr;
    Executor *executor = nullptr;
    uint32_t instance = 0;
    uint32_t cell = 0; // global/write: 1 + instance
    TableKind kind = TableKind::per_flow;
    TriggerBoard *board = nullptr; // global/write tables only
    VersionCache vc;
};

inline serpens_table *to_abi(TableHandle *h) noexcept { return reinterpret_cast<serpens_table *>(h); }
inline TableHandle *from_abi(serpens_table *t) noexcept { return reinterpret_cast<TableHandle *>(t); }

class Executor {
public:
    Executor(StateStore &store, std::string chain, std::string nf, std::filesystem::path dir);
    ~Executor();

    // Cold path, thread-safe.  Creates or attaches table `spec.name`.  When
    // this executor already has the table, flags and sizes must match.
    // Returns nullptr and sets `err` (what mismatched, the file path).
    Table *create_table(TableSpec spec, std::string &err);
    // create_table, then the handle for `instance`; for global/write tables
    // the instance becomes active (gets its share).  `ctx` is passed to NF
    // hooks (may be null).  Thread-safe.
    TableHandle *open_handle(TableSpec spec, uint32_t instance, serpens_nf_ctx *ctx, std::string &err);
    Table *find(std::string_view name);
    std::vector<Table *> tables();

    // The NF's split/merge/update hooks (NULL entries select the defaults).
    // Thread-safe; the first non-null descriptor wins.
    void set_descriptor(const serpens_nf_descriptor *desc);
    // A reload swapped in another build of the NF: its hooks from now on.
    void replace_descriptor(const serpens_nf_descriptor *desc);

    // Seals every global/read table: call once the first instance's init
    // returned.  Thread-safe.
    void seal();

    // State manager operations for global/write tables.  They take the
    // executor's lock (never call them from a hot loop); SERPENS_OK or a
    // negative code (SERPENS_ENOENT: no such key, SERPENS_EINVAL: not a
    // global/write table, or an NF hook's own code).  key == nullptr: every
    // live key of the table (the first failure's code is returned; the other
    // keys are still done).
    int split(Table &t, const void *key);
    int merge(Table &t, const void *key);
    int update(Table &t, const void *key);
    // Runs update (RELEASE) / merge (EVENTUAL) every period_ns from tick();
    // period 0 cancels.  key == nullptr: one timer for every key of the
    // table, including keys created after this call.
    int timer(Table &t, const void *key, uint64_t period_ns);
    // An instance ran out: records the request for the next tick(), which
    // rebalances the key (update).  Worker-safe: no lock, no allocation, no
    // hook call.  SERPENS_ENOENT: no such key.  RELEASE with the default
    // format returns SERPENS_ENOSPC when the rebalance done for this
    // instance's previous trigger of the key left its cell empty (the request
    // is still recorded).
    int trigger(TableHandle &h, const void *key);
    // The merged global value (EVENTUAL: last merge result; RELEASE: union
    // of all cells).  Thread-safe.
    int read_global(Table &t, const void *key, void *out);

    // Moving state between hosts (the peer protocol's state side).  Each
    // takes the executor's lock and owns every cell of the key it changes, as
    // a rebalance does, so an instance's put racing one of them is refused
    // (err_again).  `key`/`value` are the table's key_size/value_size bytes.
    // SERPENS_OK or a negative code: SERPENS_EINVAL (wrong table kind or
    // length), SERPENS_ENOENT (no such key), SERPENS_ENOSPC (table full when
    // a key had to be created) or an NF hook's own code (state unchanged).
    //
    // RELEASE: carves the share one more (remote) instance would get in a
    // split among the active instances + 1 (2 when none is active: the base
    // keeps one) with the NF's split hook or the default bitmap split, and
    // removes it from every cell: `out` (value_size bytes) holds it.
    int lease_out(Table &t, const void *key, std::vector<uint8_t> &out);
    // RELEASE: merges `value` (a returned lease) in as one more part and
    // re-splits among the active instances.  Creates the key when absent, so
    // returned items are never dropped.
    int take_back(Table &t, const void *key, const void *value, std::size_t len);
    // EVENTUAL with the default format only (an NF merge hook: SERPENS_EINVAL):
    // adds `delta` word by word (uint64, wrapping) to the base and to every
    // active replica, so the global value grows by delta and no replica's
    // unmerged change (R_i - G) is lost.  Creates the key when absent.
    int apply_delta(Table &t, const void *key, const void *delta, std::size_t len);
    // The serving host takes a key over: its whole state becomes `value`
    // (key created when absent), RELEASE: split among the active instances
    // (kept in the base when none is); EVENTUAL: base and every active replica.
    int adopt(Table &t, const void *key, const void *value, std::size_t len);
    // The serving host gives a key up.  RELEASE: `out` = the union of every
    // cell and every cell is left zero, so no instance hands anything out
    // from it any more; EVENTUAL: merges and `out` = the global value G.
    int surrender(Table &t, const void *key, std::vector<uint8_t> &out);
    // The live keys of `t` (key_size bytes each).  Thread-safe.
    std::vector<std::vector<uint8_t>> keys(Table &t);
    // Global/read: every entry, key bytes -> value bytes, in key order.
    // Thread-safe.
    std::map<std::string, std::string> read_entries(Table &t);
    // Global/read: makes `t` hold exactly `entries` despite its seal, as a
    // copy of the chain's table on the host that owns the chain.  Entries
    // change one at a time: a reader sees each entry's old value or its new
    // one.  SERPENS_EINVAL (another kind, a key or value of another size:
    // nothing changed), SERPENS_ENOSPC (full: some entries changed).
    int copy_read_state(Table &t, const std::map<std::string, std::string> &entries);
    // Whether the NF keeps its global/write values in the default formats
    // (no split and no merge hook): a RELEASE value is then a bitmap of free
    // items.  Thread-safe.
    bool default_format() const;

    // The context NF hooks get: not any instance's (instance_id
    // SERPENS_INSTANCE_STATE_MANAGER, priv NULL), same host API.
    const serpens_nf_ctx &hook_context() const noexcept { return _mgr_ctx; }

    // Scale events.  add_instance activates `id` in every global/write table
    // (RELEASE: rebalance so it gets a share; EVENTUAL: its replica becomes a
    // copy of the base).  remove_instance folds the leaving instance into the
    // survivors (RELEASE: its free items go back and are re-split; EVENTUAL:
    // its counts are merged into the base); after the last one the state
    // stays in the segments.  Call remove_instance after the instance stopped
    // processing.  Thread-safe.
    void add_instance(uint32_t id, serpens_nf_ctx *ctx);
    void remove_instance(uint32_t id);
    uint64_t active_instances() const; // bit i = instance i (union over tables)

    // Runs due timers and pending triggers, and sweeps idle per-flow entries.
    // Called by StateStore::tick().
    void tick(uint64_t now_ns);

    const std::string &chain() const noexcept { return _chain; }
    const std::string &nf() const noexcept { return _nf; }
    const std::filesystem::path &dir() const noexcept { return _dir; }

private:
    struct Timer {
        Table *table;
        std::vector<uint8_t> key; // empty: every key of the table
        uint64_t period_ns;
        uint64_t due_ns;
    };
    using Buf = std::vector<uint64_t>;

    Table *create_table_locked(TableSpec &spec, std::string &err);
    void activate_locked(Table &t, uint32_t id);
    void deactivate_locked(Table &t, uint32_t id);
    // What a RELEASE rebalance exchanges with the outside (another host).
    struct Exchange {
        const Buf *in = nullptr; // merged in as one more part (a returned lease)
        bool replace = false;    // `in` is the whole instead of the cells' merge (adopt)
        Buf *out = nullptr;      // one more share split off and removed from the cells (lease)
        bool everything = false; // `out` gets the whole; every cell is left empty (surrender)
    };
    int rebalance_locked(Table &t, std::size_t slot, bool prefer_update_hook, const Exchange &x);
    // What rebalance_locked and merge_locked work in, kept between calls
    // (under _mu): a scale event or a timed merge goes over every key, and
    // allocating these per key cost about as much as the work itself.
    struct CellScratch {
        std::vector<uint64_t> ctl;
        std::vector<Buf> cur, nxt, all, parts;
        Buf whole;
        std::vector<uint32_t> active, to; // rebalance: instances, cells that keep a part
        std::vector<uint32_t> idx;        // merge: the base and the replicas merged
    };
    int rebalance_locked(Table &t, std::size_t slot, bool prefer_update_hook)
    {
        return rebalance_locked(t, slot, prefer_update_hook, Exchange{});
    }
    // The live slot of `key`; with `create`, makes the key (all cells zero)
    // when absent.  Table::npos with `rc` set otherwise.
    std::size_t slot_of_locked(Table &t, const void *key, bool create, int &rc);
    int gather_locked(Table &t, std::size_t slot); // RELEASE: everything into the base
    int merge_locked(Table &t, std::size_t slot, uint64_t mask);
    int update_locked(Table &t, std::size_t slot);
    int call_hook(int (*hook)(serpens_nf_ctx *, const serpens_state_hook_args *), Table &t, const void *key,
                  const void *whole, std::vector<Buf> &parts, uint32_t n, void *out);
    int op_by_key(Table &t, const void *key, int (Executor::*op)(Table &, std::size_t));
    int split_slot(Table &t, std::size_t slot) { return rebalance_locked(t, slot, false); }
    int update_slot(Table &t, std::size_t slot) { return update_locked(t, slot); }
    int merge_slot(Table &t, std::size_t slot);
    void run_triggers_locked();
    // op on every live slot of t (a NULL key); the first error, else OK.
    int for_all_locked(Table &t, int (Executor::*op)(Table &, std::size_t));

    StateStore &_store;
    std::string _chain;
    std::string _nf;
    std::filesystem::path _dir;
    mutable std::mutex _mu;
    std::map<std::string, std::unique_ptr<Table>, std::less<>> _tables;
    std::map<std::pair<std::string, uint32_t>, std::unique_ptr<TableHandle>> _handles;
    // Hooks get this, never a worker's ctx: a worker's priv is its own.
    serpens_nf_ctx _mgr_ctx{};
    const serpens_nf_descriptor *_desc = nullptr;
    std::vector<Timer> _timers;
    std::map<const Table *, std::unique_ptr<TriggerBoard>> _boards; // global/write tables
    uint64_t _last_expire_ns = 0; // tick() paces the idle-flow sweep by the time since
    CellScratch _scratch;
};

class StateStore {
public:
    // Cold path.  Does not touch the disk until a table is created.
    explicit StateStore(StoreOptions opts);
    ~StateStore();
    StateStore(const StateStore &) = delete;
    StateStore &operator=(const StateStore &) = delete;

    // "/dev/shm/serpens/<host-id>".
    static std::filesystem::path default_root(std::string_view host_id);
    // The directory name used for a chain, NF or table name.
    static std::string escape(std::string_view name);
    static std::string unescape(std::string_view name);

    // The executor of (chain, nf), created on first use.  Thread-safe; the
    // reference stays valid for the store's lifetime.
    Executor &executor(std::string_view chain, std::string_view nf);
    std::vector<Executor *> executors();

    // Host control thread, e.g. every millisecond: advances the coarse clock
    // used for last-access stamps, runs timers and pending triggers, and
    // sweeps idle per-flow entries incrementally.  Thread-safe.
    void tick(uint64_t now_ns);

    // The flow table of chain spec.chain (<root>/<chain>/flows.seg), opened
    // on first use; later calls get the same one (their spec is not looked
    // at).  `first` says whether this call opened it: then the caller
    // recovers it (FlowTable::recover) before any worker uses it.  Throws
    // Error naming the file and what to do.  Thread-safe.
    FlowTable &flow_table(FlowTableSpec spec, bool &first);
    // The flow tables opened so far.  Thread-safe.
    std::vector<FlowTable *> flow_tables();

    const StoreOptions &options() const noexcept { return _opts; }
    const std::filesystem::path &root() const noexcept { return _opts.root; }

private:
    StoreOptions _opts;
    std::mutex _mu;
    std::map<std::pair<std::string, std::string>, std::unique_ptr<Executor>, std::less<>> _executors;
    std::map<std::string, std::unique_ptr<FlowTable>, std::less<>> _flow_tables;
};

} // namespace serpens::state
