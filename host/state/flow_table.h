#pragma once
// The chain's flow table: one entry per flow (both directions share it) that
// holds the per-flow state of every NF of the chain, so a packet is looked up
// once when its batch enters the chain instead of once per NF (nf.h, "Per-flow
// state of the chain").
//
// One segment file per chain, <root>/<chain>/flows.seg, mapped MAP_SHARED:
//
//   [FlowTableHeader, 4096 B][part 0][part 1]...[part flow_parts-1]
//   part = [PartHeader, 64 B][slot 0][slot 1]...[slot n_slots-1]
//
// A flow's part is its router bucket (flow_hash mod flow_parts), and the
// router gives every bucket exactly one owning instance at a time and drains
// the old owner before the new one runs (io/router.h).  So a part has a
// single writer and the hot path needs no atomic read-modify-write, only
// ordered stores for the crash guarantee and for readers in other processes.
//
// A part is an open-addressing table: a flow lives in the first usable slot
// from its home slot on (linear probing, at most flow_max_probe slots), and
// a slot is the flow's key and state (last use, direction) followed by the
// NFs' areas.  So the lookup of a known flow reads one line, which the
// lookup prefetches for a whole burst before it looks.  A part has room for
// twice its share of the capacity in slots and refuses new flows at three
// quarters full, and a removed flow leaves a tombstone unless the slot after
// it is free (then it and the tombstones before it become free), so probes
// stay short.
//
// A part uses only the first slots of its room, flow_min_slots at first,
// and doubles them (rehashing its flows) before the burst after the one that
// filled them near half (flow_room_reserve), or within a burst that brings
// it more new flows than it can take: a part's live flows stay close
// together whatever the capacity, since flows spread thin over a large
// table cost every lookup (README, "The table's density").  A part never
// shrinks.  The rehash goes through a scratch area after the parts, so a
// crash during it leaves the flows there, and the next attach finishes it
// (recover()).  It moves entries: an entry is valid for the burst that got
// it.
//
// Crash guarantee (SIGKILL at any instruction): a slot's state is stored
// last when a flow appears, after its key and zeroed areas, so no reader or
// restart sees a torn entry.  Removing marks the slot expiring, runs the
// NFs' flow_expired hooks, then frees it; a slot still marked expiring at
// the next attach gets its hooks again (recover()).  Idle timeouts are whole
// units of 2^30 ns (about a second), at most flow_max_idle_units.

#include "net/parse.h"

#include <serpens/nf.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace serpens::state {

// Parts per table: the router's buckets per chain (io::route_buckets, which
// checks that they agree).
inline constexpr uint32_t flow_parts = 256;
inline constexpr uint32_t flow_entry_header = 48; // the key and the flow's state; NF areas follow
inline constexpr uint32_t flow_max_probe = 32;    // slots a flow may live from its home
inline constexpr uint32_t flow_min_slots = 64;    // a part's slots in use at first (or its room, if less)
// New flows one burst is assumed to bring a part, when the part decides to
// grow: a whole burst's would keep every part at four times its flows or
// more.  A burst that brings it more than it can take (crafted traffic)
// grows it within the burst, at the cost of a second lookup of the burst.
inline constexpr uint32_t flow_room_reserve = 8;
// Longest idle timeout, in units of 2^30 ns (about 9.5 hours): idle times
// are kept modulo 2^16 units.
inline constexpr uint32_t flow_max_idle_units = 32000;
// Peers an entry can name as the one serving its flow (remote_peer), 1 on.
inline constexpr uint8_t flow_max_peer = 127;
// lookup_burst's flag, beside SERPENS_FLOW_*, for a packet whose flow a peer
// serves.  The host's own: no NF is shown such a packet.
inline constexpr uint8_t flow_flag_remote = 0x80;
// lookup_burst's flag for a packet whose new flow found its part full: it
// has no entry.  The host's own too (drops_when_full says what follows).
inline constexpr uint8_t flow_flag_refused = 0x40;

// What lookup_burst found besides entries: packets flagged flow_flag_remote
// and flow_flag_refused.
struct FlowBurst {
    uint32_t remote = 0;
    uint32_t refused = 0;
};

// One NF's area in every entry.
struct FlowArea {
    std::string nf;      // the name the chain gives the NF (identifies the layout)
    uint32_t size = 0;   // bytes the NF asked for
    uint32_t offset = 0; // from the entry's start; set by FlowTableSpec::layout
};

struct FlowTableSpec {
    std::string chain;
    uint64_t capacity = 65536;                     // flows the table must hold
    uint64_t idle_timeout_ns = 300'000'000'000ull; // 0: entries never expire
    std::vector<FlowArea> areas;                   // in chain order; zero-sized ones are left out

    // Sets each area's offset; returns the entry size (a multiple of 64).
    uint32_t layout();
};

// Per-part counters, written by the part's owner only.
struct FlowPartCounters {
    uint64_t live = 0;
    uint64_t created = 0;
    uint64_t refused_full = 0; // first packets that found the part full (or no slot within reach)
    uint64_t expired = 0;
};

struct FlowTableTotals {
    uint64_t capacity = 0; // slots
    uint64_t live = 0;
    uint64_t created = 0;
    uint64_t refused_full = 0;
    uint64_t expired = 0;
};

// The owner's position in an incremental sweep (one per instance).
struct FlowSweepCursor {
    uint32_t part = 0;
    uint32_t slot = 0;
};

// Called for every entry that expires, before it is removed.
using FlowExpireFn = void (*)(void *arg, uint8_t *entry) noexcept;

// What a sweep does with the live entries it looks at.
struct FlowSweepHooks {
    // Shown each entry idle past the timeout (`expiring`: true; returns
    // true to keep it) and, when visit_all, every other live entry too.
    // idle_ns is whole units of 2^30 ns.
    using VisitFn = bool (*)(void *arg, uint8_t *entry, uint64_t idle_ns, bool expiring) noexcept;
    VisitFn visit = nullptr;
    bool visit_all = false;
    FlowExpireFn expired = nullptr;
    void *arg = nullptr;
};

class FlowTable {
public:
    using ExpireFn = FlowExpireFn;

    ~FlowTable();
    FlowTable(const FlowTable &) = delete;
    FlowTable &operator=(const FlowTable &) = delete;

    // Cold path.  Attaches `file` when its layout is this spec's (same
    // capacity, areas and entry size), else moves it aside (with a warning
    // naming why) and creates it.  Returns nullptr and sets `err` (the file,
    // what failed, what to do) on failure.
    static std::unique_ptr<FlowTable> open(const std::filesystem::path &file, FlowTableSpec spec, std::string &err);

    // Cold path (tools): maps `file` read-only with the layout its own header
    // gives (chain, capacity, areas), without locking, creating, moving or
    // writing anything, so it is safe next to a running host (what it reads
    // is then a snapshot).  Only the const accessors, for_each_entry and
    // totals may be used on it.  nullptr and `err` when the file is missing
    // or not a flow table of this version.
    static std::unique_ptr<FlowTable> open_readonly(const std::filesystem::path &file, std::string &err);

    // Cold path, before any worker uses the table: finishes the rehash of a
    // part that a crash interrupted, then the expiries (fn on each entry
    // still marked expiring, then removes it).  Returns how many expired.
    std::size_t recover(ExpireFn fn, void *arg) noexcept;

    // Hot path, by the owner of the packets' parts.  First doubles the slots
    // in use of each of the burst's parts that an earlier burst filled near
    // half (rehashing its flows: an entry is valid for the burst that got
    // it, not after); a part that would refuse a new flow while it can still
    // grow grows too, and the burst is looked up again.  For each of the n
    // packets (views `stride` bytes apart) finds or creates its flow's entry:
    // entries[i] (nullptr: not IP, or no room) and flags[i] (SERPENS_FLOW_*).
    // `now_ns` stamps the entries' last use.  A flow created here is served
    // by peer new_flow_peer[i] (remote_peer; nullptr: all on this host).
    // Returns how many packets belong to flows a peer serves (flagged
    // flow_flag_remote) and how many new flows found no room (no entry,
    // flagged flow_flag_refused).  keys[i]: the key parse_headers gave
    // packet i (read only when the view says it parsed); nullptr: read
    // again from the headers (net::flow_key_of, the same key).
    FlowBurst lookup_burst(const serpens_pkt *pkts, uint32_t stride, uint32_t n, uint64_t now_ns, void **entries,
                           uint8_t *flags, const uint8_t *new_flow_peer = nullptr,
                           const net::FlowKey *keys = nullptr) noexcept;

    // Hot path, by the owner: looks at up to `max_slots` slots of the parts
    // whose bit is set in `owned` (bit p of word p / 64), from `cursor` on,
    // shows live entries to hooks.visit as it says, and removes the entries
    // idle for longer than the timeout that no visit kept (hooks.expired
    // first).  Returns how many went.
    std::size_t sweep(const uint64_t *owned, FlowSweepCursor &cursor, uint64_t now_ns, uint32_t max_slots,
                      const FlowSweepHooks &hooks) noexcept;

    // How long a whole sweep pass may take for expiry alone: half the idle
    // timeout (0: entries never expire).
    uint64_t expiry_pass_ns() const noexcept { return _idle_units == 0 ? 0 : _spec.idle_timeout_ns / 2; }
    // Slots to look at per sweep() call made every `call_period_ns` so that
    // a whole pass over the slots in use takes at most `pass_ns` (0: no
    // sweep), at least 8.  At most 2048, so
    // a pass over a large table takes longer than a short pass_ns asks.
    uint32_t sweep_slots(uint64_t call_period_ns, uint64_t pass_ns) const noexcept;

    // Cold path (tools, tests; no worker writing): fn(entry, flow hash) on
    // every entry.
    template<class Fn>
    void for_each_entry(Fn &&fn) const
    {
        for (uint32_t p = 0; p < flow_parts; ++p) {
            const uint32_t in_use = file_in_use(p); // no flow lies further
            for (uint32_t s = 0; s < in_use; ++s) {
                uint32_t hash = 0;
                if (const uint8_t *entry = entry_at(p, s, hash)) {
                    fn(entry, hash);
                }
            }
        }
    }

    // The entry's key, in canonical form (for tools and tests).
    static const net::FlowKey &entry_key(const uint8_t *entry) noexcept
    {
        return *reinterpret_cast<const net::FlowKey *>(entry);
    }

    // Scaling onto another server (migration avoidance): a flow whose first
    // packet was steered to a peer is served there for its whole life, and
    // its entry here only remembers which peer (1..flow_max_peer; 0: served
    // on this host).  Its NF areas stay zero: no NF of this host touches it.
    // Set when the entry is created (lookup_burst's new_flow_peer), so a
    // crash never leaves a steered flow looking local.
    static uint8_t remote_peer(const uint8_t *entry) noexcept;
    // By the part's owner: the flow is served on this host from now on, its
    // NF areas still zero (its peer went away).
    static void make_local(uint8_t *entry) noexcept;

    // What a flow_visit hook is shown of the entry (nf.h, "Visiting flows").
    static serpens_flow_info entry_info(const uint8_t *entry, uint64_t idle_ns, bool expiring,
                                        uint64_t now_ns) noexcept;

    const FlowTableSpec &spec() const noexcept { return _spec; }
    // host.toml's flow_full for the chain: a refused packet is dropped
    // before any NF (true, the default), or runs through the chain with no
    // entry.  Set by whoever opens the table for a chain; read by its
    // instances per batch.
    void set_drops_when_full(bool drop) noexcept { _drops_when_full.store(drop, std::memory_order_relaxed); }
    bool drops_when_full() const noexcept { return _drops_when_full.load(std::memory_order_relaxed); }
    uint32_t entry_size() const noexcept { return _entry_size; }
    // A part's room: the most slots it may use.
    uint32_t slots_per_part() const noexcept { return _n_slots; }
    // The slots part `p` uses now (its first ones).
    uint32_t slots_in_use(uint32_t p) const noexcept;
    // Flows a part takes before it refuses new ones (its share of the capacity).
    uint32_t max_live_per_part() const noexcept { return _n_slots * 3 / 4; }
    const std::filesystem::path &path() const noexcept { return _path; }
    // Summed over parts; exact when no worker writes, approximate otherwise.
    FlowTableTotals totals() const noexcept;

private:
    struct Part;
    FlowTable() = default;
    // The entry in a slot and its flow hash; nullptr: no live flow there.
    uint8_t *entry_at(uint32_t part, uint32_t slot, uint32_t &hash) const noexcept;
    Part part(uint32_t p) const noexcept;
    uint8_t *slot_at(const Part &part, uint32_t slot) const noexcept;
    // The flow's first slot to look at among a part's `in_use` slots.
    static uint32_t home_slot(uint32_t hash, uint32_t in_use) noexcept;
    // The flow's entry, or nullptr and in free_slot where it would go
    // (UINT32_MAX: nowhere within reach).  The probe starts at the flow's
    // home slot, whose entry home_entry is (the caller prefetched it).
    uint8_t *probe(const Part &part, uint32_t hash, uint32_t home, uint8_t *home_entry, const net::FlowKey &key,
                   uint32_t &free_slot) const noexcept;
    // lookup_burst once over the burst; `again`: a second time, after parts
    // grew, keeping SERPENS_FLOW_NEW of flags[] from the first.  Refusals
    // are flagged, not yet counted.
    FlowBurst lookup_pass(const serpens_pkt *pkts, uint32_t stride, uint32_t n, uint64_t now_ns, void **entries,
                          uint8_t *flags, const uint8_t *new_flow_peer, const net::FlowKey *parsed_keys,
                          bool again) noexcept;
    // By the part's owner, before a burst that may bring `arriving` new
    // flows to it: doubles its slots in use until they would stay at most
    // half full.  false: it could not now (another part's rehash holds the
    // scratch area, or its flows did not fit the new size, which it then
    // does not retry before it holds more), and the part goes on as it is.
    bool make_room(const Part &part, uint32_t arriving) noexcept;
    // Moves the flows the scratch area holds into their part at the scratch
    // header's new size; false (and the old size back, every flow where it
    // was) when one finds no slot within reach.  Ends the scratch's use.
    bool rehash_from_scratch() noexcept;
    // Cold path: the table has the scratch area after its parts (layout 2).
    void use_scratch() noexcept;
    // Cold path: the parts' slots in use as the file says, in _in_use.
    void mirror_in_use() noexcept;
    uint32_t file_in_use(uint32_t p) const noexcept;
    // `arriving`: the new flows a burst may bring the part (make_room).
    uint8_t *insert(const Part &part, uint32_t hash, const net::FlowKey &key, bool initiator_hi, uint8_t peer,
                    uint32_t slot, uint16_t now, uint32_t arriving) noexcept;
    void remove(const Part &part, uint32_t slot, FlowExpireFn fn, void *arg) noexcept;

    std::filesystem::path _path;
    FlowTableSpec _spec;
    int _fd = -1;
    uint8_t *_map = nullptr;
    std::size_t _map_size = 0;
    uint32_t _entry_size = 0;
    uint32_t _n_slots = 0; // per part: its room
    std::size_t _part_size = 0;
    uint8_t *_scratch = nullptr; // nullptr: a table of the layout before parts grew, whose parts use all their room
    uint32_t _scratch_cap = 0;   // flows the scratch area holds
    // Each part's slots in use, as its header says (the part's owner writes
    // both), and whether an insert asked the owner to make room.
    std::array<uint32_t, flow_parts> _in_use{};
    std::array<uint8_t, flow_parts> _wants_room{};
    std::atomic<uint32_t> _room_wanted{0}; // parts whose _wants_room is set: lookups look for them
    // Sets or clears part p's _wants_room, counted in _room_wanted.
    void want_room(uint32_t p, bool wanted) noexcept;
    static uint32_t room_reserve(uint32_t burst) noexcept { return std::min(burst, flow_room_reserve); }
    uint32_t _idle_units = 0; // timeout in units of 2^30 ns (0: never)
    std::atomic<bool> _drops_when_full{true};
};

} // namespace serpens::state
