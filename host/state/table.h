#pragma once
// serpens::state::Table — one state table in one file-backed shared-memory
// segment (layout in state/layout.h).
//
// The table is an open-addressing hash table with linear probing.  Slots
// never move, so lookups need no lock: a reader reads the slot's control word,
// compares the key, copies the current value buffer and re-reads the control
// word (seqlock).  Writers claim a slot or a cell with one CAS on its control
// word; updates write the inactive value buffer and flip, so a SIGKILL in the
// middle of any write leaves the previous value intact, and attach() repairs
// the interrupted write and counts it.
//
// Thread safety, in one place:
//  - get / get_bulk / cell_get: any number of threads, lock-free, never block
//    on writers.
//  - put / del / cell_put: any number of threads, also on the same key (the
//    last writer wins; a key is never present twice).
//  - expire: any thread, concurrently with the above (incremental).
//  - lock_cell / write_unlock_cell / unlock_cell / for_each_live_slot: the
//    state manager; callers serialise them (Executor holds its mutex).
//  - open / open_readonly / destructor: cold path, one thread.

#include "state/layout.h"

#include <serpens/nf.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace serpens::state {

// Returned by cell_put when the cell changed since the caller read it (another
// party rebalanced or merged it): read again and redo the change.  Proposed
// for nf.h as SERPENS_EAGAIN.
inline constexpr int err_again = SERPENS_EAGAIN;

enum class TableKind : uint8_t { per_flow, global_read, release, eventual };

const char *kind_name(TableKind kind) noexcept;
inline constexpr bool is_global_write(TableKind k) noexcept
{
    return k == TableKind::release || k == TableKind::eventual;
}

struct TableSpec {
    std::string name;
    uint32_t flags = 0;
    uint32_t key_size = 0;
    uint32_t value_size = 0;
    uint64_t capacity = 0;
    uint32_t max_instances = 16; // global/write only: cells per key
};

// Checks flags and sizes.  Returns "" when valid, else the reason (one rule
// per message, naming the limit).
std::string validate_spec(const TableSpec &spec);
// The kind of a flag set that validate_spec() accepted.
TableKind kind_of(uint32_t flags) noexcept;
// "PER_FLOW|WRITE" etc.
std::string flags_to_string(uint32_t flags);
// Whether an existing table can serve a request with these flags.
// NF_EXPIRY is a policy for idle entries, not layout: a table made with the
// other setting keeps its entries (moving a vpn's sequence numbers aside
// would reuse its nonces) and takes the one asked for (set_nf_expiry).
inline bool flags_compatible(uint32_t existing, uint32_t requested) noexcept
{
    return ((existing ^ requested) & ~uint32_t{SERPENS_STATE_NF_EXPIRY}) == 0;
}

// Coarse clock for last-access stamps: the hot path stores this value instead
// of reading a clock.  StateStore::tick() advances it.  Units of 2^20 ns.
void set_coarse_now(uint64_t now_ns) noexcept;
extern uint32_t g_coarse_now; // written by set_coarse_now(); read on the hot path
inline uint32_t coarse_now() noexcept { return __atomic_load_n(&g_coarse_now, __ATOMIC_RELAXED); }
inline constexpr uint32_t coarse_units(uint64_t ns) noexcept { return static_cast<uint32_t>(ns >> 20); }

// Remembers the cell versions a handle last read, so a put after a get is
// refused (err_again) when the cell changed in between.  Per handle, one thread.
struct VersionCache {
    static constexpr uint32_t size = 8;
    uint64_t slot[size] = {}; // slot index + 1; 0 = unused
    uint64_t ver[size] = {};
    uint32_t next = 0;
    // The hash of the last key this instance read as absent (0: none): a put
    // of that key must not land on a cell someone created meanwhile.
    uint64_t absent_hash = 0;
    static constexpr uint64_t none = ~0ull;

    uint64_t find(uint64_t s) const noexcept
    {
        for (uint32_t i = 0; i < size; ++i) {
            if (slot[i] == s + 1) {
                return ver[i];
            }
        }
        return none;
    }
    void remember(uint64_t s, uint64_t v) noexcept
    {
        for (uint32_t i = 0; i < size; ++i) {
            if (slot[i] == s + 1) {
                ver[i] = v;
                return;
            }
        }
        slot[next] = s + 1;
        ver[next] = v;
        next = (next + 1) % size;
    }
};

struct CheckReport {
    uint64_t slots = 0, live = 0, dead = 0, empty = 0;
    uint64_t in_flight = 0;   // W bit set: torn if no host is running
    uint64_t bad_hash = 0;    // stored hash differs from the key's hash
    uint64_t unreachable = 0; // an EMPTY slot lies between home and entry
    uint64_t duplicates = 0;  // the same key live twice
    std::vector<std::string> problems;
    std::vector<std::string> warnings;
    bool ok() const noexcept { return problems.empty(); }
};

class Table {
public:
    static constexpr std::size_t npos = ~std::size_t{0};

    // Cold path.  Creates the segment at `file` or attaches to it.  An
    // existing file whose header is invalid or was made for another spec is
    // renamed to `<file>.bad-<UTC time>` (logged, never deleted) and a fresh
    // one is created.  Attaching repairs writes interrupted by a crash.
    // Returns nullptr and sets `err` (with the path) on failure.
    static std::unique_ptr<Table> open(const std::filesystem::path &file, const TableSpec &spec, std::string &err);
    // Maps an existing segment read-only (for serpens-state); no repair.
    static std::unique_ptr<Table> open_readonly(const std::filesystem::path &file, std::string &err);
    ~Table();
    Table(const Table &) = delete;
    Table &operator=(const Table &) = delete;

    // --- hot path: per-flow and global/read tables ------------------------
    // SERPENS_OK / SERPENS_ENOENT.  Copies value_size bytes into value_out.
    int get(const void *key, void *value_out) noexcept;
    // Insert or replace.  SERPENS_ENOSPC when full (counted),
    // SERPENS_ENOTSUP when the table is sealed and the value differs.
    int put(const void *key, const void *value) noexcept;
    // SERPENS_OK / SERPENS_ENOENT (SERPENS_ENOTSUP when sealed).
    int del(const void *key) noexcept;
    // n <= 64 keys back to back; hits copied to values + i * value_size.
    uint64_t get_bulk(const void *keys, uint32_t n, void *values) noexcept;
    // Per-flow, value of whole words: for key i, row i applied word by word
    // (ops[w]: SERPENS_WORD_ADD / SET / KEEP), or inserted as the value when
    // absent; one probe and one atomic write per key.  Results copied to
    // out + i * value_size when out is not null.  Returns the mask of keys
    // written (not: table full, counted); 0 for other tables.
    uint64_t update_bulk(const void *keys, uint32_t n, const uint64_t *rows, const uint8_t *ops, void *out) noexcept;

    // Per-flow and global/read: looks at up to max_slots slots from
    // *cursor (taken modulo n_slots) and copies out the first live entry,
    // key_size then value_size bytes; SERPENS_OK, else SERPENS_ENOENT.
    // *cursor ends past the last slot looked at, wrapping to 0.  A walk
    // sees every entry live throughout it; others may or may not show.
    int scan(uint64_t *cursor, uint32_t max_slots, void *key_out, void *value_out) noexcept;

    // --- hot path: global/write cells (0 = base, 1 + i = instance i) -------
    // Reads one cell.  Remembers its version in `vc` (may be null).
    int cell_get(const void *key, uint32_t cell, void *out, VersionCache *vc) noexcept;
    // Writes one cell, creating the key (all cells zero) when absent.  When
    // `vc` holds a version for this key the write is refused with err_again
    // if the cell changed since.  SERPENS_ENOSPC when full.
    int cell_put(const void *key, uint32_t cell, const void *value, VersionCache *vc) noexcept;
    // EVENTUAL with uint64 values: adds row i of `deltas` (value_size / 8
    // words each) to key i's cell, creating the key (all cells zero) when
    // absent; n <= 64 keys back to back.  One probe per key, misses of all
    // keys overlapped; waits out a state manager holding the cell (an
    // addition commutes with its merge).  Returns the mask of rows applied
    // (a row is not when the table is full).
    uint64_t cell_add_bulk(const void *keys, uint32_t n, uint32_t cell, const uint64_t *deltas) noexcept;

    // Tables created with SERPENS_STATE_NF_EXPIRY are left alone (returns 0).
    // Removes per-flow entries idle for more than idle_ns, visiting at most
    // `budget` slots from a shared cursor (so it can run in small steps from
    // any thread).  Also turns tombstones back into empty slots where safe.
    // Returns the number of entries removed.
    std::size_t expire(uint64_t now_ns, uint64_t idle_ns, std::size_t budget) noexcept;

    // --- state manager (callers serialise) ----------------------------------
    // find_live only reads (acquire loads), so a worker may call it too.
    std::size_t find_live(const void *key) const noexcept;
    bool is_live_slot(std::size_t slot) const noexcept;
    void for_each_live_slot(const std::function<void(std::size_t slot)> &fn) const;
    const void *slot_key(std::size_t slot) const noexcept;
    // Waits for the owner's write to finish, then owns the cell; returns its
    // control word (pass it to the two functions below).
    uint64_t lock_cell(std::size_t slot, uint32_t cell) noexcept;
    void read_locked_cell(std::size_t slot, uint32_t cell, uint64_t ctl, void *out) const noexcept;
    // Publishes `value` and releases; bumps the version so pending owner puts
    // based on the old content fail with err_again.
    void write_unlock_cell(std::size_t slot, uint32_t cell, uint64_t ctl, const void *value) noexcept;
    void unlock_cell(std::size_t slot, uint32_t cell, uint64_t ctl) noexcept;

    // Global/read: refuse changes from now on (puts of an identical value
    // still succeed, so every instance's init may load the same data).
    void seal() noexcept;
    bool sealed() const noexcept { return _sealed; }
    // Global/read, the state manager only: puts or deletes an entry despite
    // the seal, to make the table a copy of the chain owner's on another
    // host.  A reader sees an entry's old value or its new one, never a mix.
    // SERPENS_ENOTSUP on a read-only map; otherwise as put() / del().  Once
    // copied, puts into the sealed table succeed and change nothing: an
    // instance started later loads its own config in init, and runs on the
    // copy like the others.
    int put_despite_seal(const void *key, const void *value) noexcept;
    int del_despite_seal(const void *key) noexcept;

    // --- inspection ----------------------------------------------------------
    // Seqlock-consistent copy of every live entry: key bytes and, for
    // per-flow/global-read, one value; for global/write, 1 + max_instances
    // cell values back to back.
    void dump(const std::function<void(const uint8_t *key, const uint8_t *values)> &fn) const;
    CheckReport check() const;

    const SegmentHeader &header() const noexcept { return *_h; }
    SegmentHeader &header_rw() noexcept { return *_h; }
    const std::filesystem::path &path() const noexcept { return _path; }
    std::string_view name() const noexcept { return _name; }
    TableKind kind() const noexcept { return _kind; }
    uint32_t flags() const noexcept { return _h->flags; }
    // Whether the host's idle expiry leaves this table alone: NF_EXPIRY as
    // the NF last asked, which may differ from the bit the segment was made
    // with (flags_compatible).
    // Atomic: a reload sets it while the state manager may be expiring.
    bool nf_expiry() const noexcept { return _nf_expiry.load(std::memory_order_relaxed); }
    void set_nf_expiry(bool on) noexcept { _nf_expiry.store(on, std::memory_order_relaxed); }
    uint32_t key_size() const noexcept { return _key_size; }
    uint32_t value_size() const noexcept { return _value_size; }
    uint64_t capacity() const noexcept { return _capacity; }
    uint64_t n_slots() const noexcept { return _n_slots; }
    uint32_t cells() const noexcept { return _cells; }
    uint64_t live() const noexcept { return ld_rlx(&_h->live); }
    bool read_only() const noexcept { return _ro; }

private:
    struct KeyBuf {
        alignas(8) uint64_t w[max_key_size / 8];
        uint64_t h;
    };
    struct Probe {
        std::size_t found = npos;
        uint64_t found_ctl = 0;
        std::size_t free = npos;
        uint64_t free_ctl = 0;
    };

    Table() = default;
    bool map(int fd, std::size_t size, bool ro, std::string &err);
    void init_from_header();
    void repair();

    // Lookups are compiled once per key and value size in words (KW, VW;
    // 0: the table's own, read at run time) so that hashing, comparing and
    // copying are straight-line code; init_from_header() picks the variant.
    template<uint32_t KW = 0>
    uint32_t kwords() const noexcept
    {
        return KW != 0 ? KW : _kw;
    }
    template<uint32_t KW = 0>
    uint32_t kbytes() const noexcept
    {
        return KW != 0 ? 8 * KW : _key_size;
    }
    template<uint32_t KW = 0>
    void load_key(KeyBuf &k, const void *key) const noexcept
    {
        // Fixed-size word loads (no memcpy call); the tail is zero padded.
        const auto *p = static_cast<const uint8_t *>(key);
        const uint32_t full = KW != 0 ? KW : _key_size / 8;
        uint32_t i = 0;
        for (; i < full; ++i) {
            uint64_t w;
            __builtin_memcpy(&w, p + 8 * i, 8);
            k.w[i] = w;
            if constexpr (KW == 0) {
                asm("" : "+r"(w)); // keeps GCC from turning the loop back into a memcpy call
            }
        }
        if (KW == 0 && i != _kw) {
            uint64_t w = 0;
            for (uint32_t b = 0; b < _key_size % 8; ++b) {
                w |= uint64_t{p[8 * i + b]} << (8 * b);
            }
            k.w[i] = w;
        }
        k.h = hash_key(k.w, kwords<KW>());
    }
    // The first min(n, max_bulk) keys of a bulk call into kb, calling
    // fetch(kb[i]) after each so its prefetches start while the rest hash.
    // Returns how many.
    template<uint32_t KW, class Fetch>
    uint32_t load_keys(const void *keys, uint32_t n, KeyBuf *kb, Fetch &&fetch) const noexcept
    {
        n = n < max_bulk ? n : max_bulk;
        const auto *kp = static_cast<const uint8_t *>(keys);
        for (uint32_t i = 0; i < n; ++i) {
            load_key<KW>(kb[i], kp + static_cast<std::size_t>(i) * kbytes<KW>());
            fetch(kb[i]);
        }
        return n;
    }
    std::size_t home(uint64_t h) const noexcept
    {
        return static_cast<std::size_t>((static_cast<unsigned __int128>(h) * _n_slots) >> 64);
    }
    std::size_t next(std::size_t i) const noexcept { return (i + 1 == _n_slots) ? 0 : i + 1; }
    std::size_t prev(std::size_t i) const noexcept { return (i == 0) ? _n_slots - 1 : i - 1; }
    SlotHeader *slot(std::size_t i) const noexcept { return reinterpret_cast<SlotHeader *>(_slots + i * _slot_size); }
    uint64_t *key_words(SlotHeader *s) const noexcept { return reinterpret_cast<uint64_t *>(s + 1); }
    template<uint32_t VW = 0>
    uint32_t vwords() const noexcept
    {
        return VW != 0 ? VW : _vw;
    }
    template<uint32_t VW = 0>
    uint32_t vbytes() const noexcept
    {
        return VW != 0 ? 8 * VW : _value_size;
    }
    template<uint32_t KW = 0, uint32_t VW = 0>
    uint64_t *vbuf(SlotHeader *s, uint32_t b) const noexcept
    {
        return key_words(s) + kwords<KW>() + b * vwords<VW>();
    }
    uint64_t *cell(SlotHeader *s, uint32_t c) const noexcept
    {
        return key_words(s) + _kw + static_cast<std::size_t>(c) * (1 + 2 * _vw);
    }
    template<uint32_t VW = 0>
    uint64_t *cbuf(uint64_t *cellp, uint32_t b) const noexcept
    {
        return cellp + 1 + b * vwords<VW>();
    }
    template<uint32_t KW = 0>
    bool key_eq(SlotHeader *s, const uint64_t *kw) const noexcept
    {
        const uint64_t *sk = key_words(s);
        for (uint32_t i = 0; i < kwords<KW>(); ++i) {
            if (ld_rlx(sk + i) != kw[i]) {
                return false;
            }
        }
        return true;
    }
    // Slot s, whose control word was c, is live and holds key k.
    template<uint32_t KW = 0>
    bool holds(SlotHeader *s, uint64_t c, const KeyBuf &k) const noexcept
    {
        return ctl_state(c) == slot_live && ld_rlx(&s->hash) == static_cast<uint32_t>(k.h) && key_eq<KW>(s, k.w);
    }
    void touch(SlotHeader *s) const noexcept
    {
        uint32_t now = coarse_now();
        if (ld_rlx(&s->access) != now) {
            st_rlx(&s->access, now);
        }
    }
    enum class Step { hit, miss, next };
    template<uint32_t KW = 0, uint32_t VW = 0>
    inline Step probe_slot(const KeyBuf &k, std::size_t i, void *out) noexcept;
    // k's probe sequence from its home slot + skip on: SERPENS_OK / ENOENT.
    template<uint32_t KW = 0, uint32_t VW = 0>
    inline int lookup(const KeyBuf &k, void *out, uint64_t skip = 0) noexcept;
    template<uint32_t KW, uint32_t VW>
    int get_as(const void *key, void *value_out) noexcept;
    template<uint32_t KW, uint32_t VW>
    uint64_t get_bulk_as(const void *keys, uint32_t n, void *values) noexcept;
    // Inserts `fresh` when k is absent, else rewrites k's value: fill(cur,
    // next) writes the next value's words from the current ones into the
    // inactive buffer, published with one flip.  The writer protocol shared
    // by put and update_bulk.
    template<uint32_t KW, uint32_t VW, class Fill>
    inline int upsert(const KeyBuf &k, const void *fresh, Fill &&fill) noexcept;
    template<uint32_t KW, uint32_t VW>
    int put_as(const void *key, const void *value) noexcept;
    template<uint32_t KW, uint32_t VW>
    uint64_t update_bulk_as(const void *keys, uint32_t n, const uint64_t *rows, const uint8_t *ops, void *out) noexcept;
    template<uint32_t KW, uint32_t VW>
    uint64_t cell_add_bulk_as(const void *keys, uint32_t n, uint32_t cell, const uint64_t *deltas) noexcept;
    template<uint32_t KW, uint32_t VW>
    void use_shape() noexcept;
    void pick_shape() noexcept;
    template<uint32_t KW = 0, uint32_t VW = 0>
    int cell_add(const KeyBuf &k, uint32_t cell, const uint64_t *delta) noexcept;
    // cell_add's add into the cell of slot i, which held k: false when the
    // cell is busy or the slot holds k no more (cell_add then does it all).
    template<uint32_t KW, uint32_t VW>
    bool cell_add_at(const KeyBuf &k, std::size_t i, uint32_t cell, const uint64_t *delta) noexcept;
    // Adds delta to a cell whose write bit the caller set (cp's word was c).
    template<uint32_t VW>
    void add_to_held_cell(uint64_t *cp, uint64_t c, const uint64_t *delta) noexcept;
    template<uint32_t KW = 0>
    std::size_t find_live(const KeyBuf &k) const noexcept;
    template<uint32_t KW = 0>
    Probe probe_for_write(const KeyBuf &k) noexcept;
    int insert(const KeyBuf &k, const Probe &p, const void *value) noexcept;
    int put_sealed(const KeyBuf &k, const void *value) noexcept;
    int del_key(const KeyBuf &k) noexcept;
    uint64_t read_cell(uint64_t *cellp, void *out) const noexcept;
    void reset_cells(SlotHeader *s) noexcept;
    void try_reclaim(std::size_t i) noexcept;

    SegmentHeader *_h = nullptr;
    uint8_t *_slots = nullptr;
    void *_map = nullptr;
    std::size_t _map_size = 0;
    int _fd = -1;
    bool _ro = false;
    std::atomic<bool> _nf_expiry{false};
    bool _sealed = false;
    std::atomic<bool> _copied{false}; // global/read: holds a copy (put_despite_seal)
    TableKind _kind = TableKind::per_flow;
    uint32_t _key_size = 0, _value_size = 0, _kw = 1, _vw = 1, _slot_size = 0, _cells = 0;
    uint64_t _n_slots = 0, _capacity = 0;
    int (Table::*_get)(const void *, void *) noexcept = nullptr;
    uint64_t (Table::*_get_bulk)(const void *, uint32_t, void *) noexcept = nullptr;
    int (Table::*_put)(const void *, const void *) noexcept = nullptr;
    uint64_t (Table::*_update_bulk)(const void *, uint32_t, const uint64_t *, const uint8_t *,
                                    void *) noexcept = nullptr;
    uint64_t (Table::*_cell_add_bulk)(const void *, uint32_t, uint32_t, const uint64_t *) noexcept = nullptr;
    std::filesystem::path _path;
    std::string _name;
};

// Copies between shared words and caller memory with relaxed atomics.
inline void words_out(const uint64_t *src, void *dst, uint32_t size) noexcept
{
    auto *d = static_cast<uint8_t *>(dst);
    uint32_t full = size / 8;
    for (uint32_t i = 0; i < full; ++i) {
        uint64_t w = ld_rlx(src + i);
        __builtin_memcpy(d + 8 * i, &w, 8);
    }
    if (uint32_t tail = size % 8) {
        uint64_t w = ld_rlx(src + full);
        __builtin_memcpy(d + 8 * full, &w, tail);
    }
}
inline void words_in(uint64_t *dst, const void *src, uint32_t size) noexcept
{
    const auto *s = static_cast<const uint8_t *>(src);
    uint32_t full = size / 8;
    for (uint32_t i = 0; i < full; ++i) {
        uint64_t w;
        __builtin_memcpy(&w, s + 8 * i, 8);
        st_rlx(dst + i, w);
    }
    if (uint32_t tail = size % 8) {
        uint64_t w = 0;
        __builtin_memcpy(&w, s + 8 * full, tail);
        st_rlx(dst + full, w);
    }
}

} // namespace serpens::state
