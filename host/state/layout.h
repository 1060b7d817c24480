#pragma once
// On-disk (shared-memory) layout of one state table segment.
//
// A segment is one file under the store root, mapped MAP_SHARED by the host
// and read-only by `serpens-state`.  It holds plain integers only: no
// pointers, no process-local addresses, so any process can map it anywhere.
//
//   [SegmentHeader, header_size bytes][slot 0][slot 1]...[slot n_slots-1]
//
// Slot (every table kind):
//   u64 ctl     W bit | state (EMPTY/LIVE/DEAD) | active buffer | version
//   u32 hash    low 32 bits of the key hash (cheap pre-compare)
//   u32 access  coarse last-access time (see coarse_now())
//   key         key_words * 8 bytes, zero padded
//   payload     per-flow / global-read: two value buffers (double buffering:
//               a writer fills the inactive one, then flips `active`, so a
//               reader or a SIGKILL never sees a half-written value)
//               global-write: (1 + max_instances) cells, cell = u64 ctl +
//               two value buffers; cell 0 is the base (RELEASE: the reserve,
//               EVENTUAL: the last merge result), cell 1 + i is instance i's.
//
// Every shared word is accessed through the __atomic builtins below, so the
// seqlock-style protocol is race-free in the C++ memory model (and TSan-clean).

#include <bit>
#include <cstddef>
#include <cstdint>

namespace serpens::state {

// Keys are hashed and stored as little-endian words.
static_assert(std::endian::native == std::endian::little, "state segments assume a little-endian host");

inline constexpr uint64_t segment_magic = 0x31544e5350524553ull; // "SERPSNT1" little endian
inline constexpr uint32_t layout_version = 1;
inline constexpr uint32_t header_size = 4096;
inline constexpr uint32_t hash_id_v1 = 1; // hash_key() below; part of the layout
inline constexpr uint32_t max_key_size = 64;
inline constexpr uint32_t max_value_size = 64 * 1024;
inline constexpr uint32_t max_instances_limit = 64; // active masks are one u64
inline constexpr uint32_t max_bulk = 64;
inline constexpr std::size_t table_name_max = 127;

// --- slot / cell control word -------------------------------------------
inline constexpr uint64_t ctl_w = 1ull;          // a writer owns the slot/cell
inline constexpr uint64_t ctl_state_mask = 6ull; // bits 1..2
inline constexpr uint64_t ctl_active = 8ull;     // which value buffer is current
inline constexpr uint64_t ctl_ver_one = 16ull;   // version lives in bits 4..63

enum SlotState : uint32_t { slot_empty = 0, slot_live = 1, slot_dead = 2 };

// A cell's control word uses the state bits for one hint: cell_zero, set when
// the state manager publishes an all-zero value and when a key is made.  Every
// other write clears it (ctl_next with state 0).  The manager then reads no
// buffer of the cells of inactive instances, which are almost always zero: a
// RELEASE rebalance at a scale event touches every key's every cell.
inline constexpr uint32_t cell_zero = 1;

inline constexpr uint32_t ctl_state(uint64_t c) noexcept { return static_cast<uint32_t>((c >> 1) & 3u); }
inline constexpr uint32_t ctl_buf(uint64_t c) noexcept { return (c & ctl_active) ? 1u : 0u; }
// Same version and buffer with a new state, W cleared, version bumped.
inline constexpr uint64_t ctl_next(uint64_t c, uint32_t state, uint32_t buf) noexcept
{
    return ((c & ~(ctl_w | ctl_state_mask | ctl_active)) + ctl_ver_one) | (uint64_t{state} << 1) |
           (buf ? ctl_active : 0);
}

struct SlotHeader {
    uint64_t ctl;
    uint32_t hash;
    uint32_t access;
};
static_assert(sizeof(SlotHeader) == 16);

// --- segment header -------------------------------------------------------
struct SegmentHeader {
    // Immutable layout; everything up to layout_checksum is covered by it.
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint32_t flags; // SERPENS_STATE_* as given to create_table
    uint32_t key_size;
    uint32_t value_size;
    uint32_t max_instances; // global/write: number of instance cells; else 0
    uint64_t capacity;      // live entries allowed
    uint64_t n_slots;
    uint32_t slot_size;
    uint32_t hash_id;
    uint64_t file_size;
    uint64_t created_unix_ns;
    char name[table_name_max + 1]; // table name, NUL padded (display only)
    uint64_t layout_checksum;

    // Mutable, shared by every mapping.  Own cache lines: written at runtime.
    alignas(64) uint64_t live; // LIVE slots (approximate while inserts race)
    uint64_t refused_full;     // puts refused because the table was full
    uint64_t torn_repaired;    // in-flight updates found at attach (old value kept)
    uint64_t torn_discarded;   // in-flight inserts found at attach (dropped)
    uint64_t expired;          // entries removed by expire()
    uint64_t attaches;         // times a host attached read-write
    alignas(64) uint64_t expire_cursor;
    alignas(64) uint64_t active_mask; // global/write: instances holding a cell
    uint64_t sealed;                  // global/read: informational copy of the seal
};
static_assert(sizeof(SegmentHeader) <= header_size);
static_assert(offsetof(SegmentHeader, layout_checksum) % 8 == 0);

// --- atomics on shared words ----------------------------------------------
inline uint64_t ld_acq(const uint64_t *p) noexcept { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline uint64_t ld_rlx(const uint64_t *p) noexcept { return __atomic_load_n(p, __ATOMIC_RELAXED); }
inline uint32_t ld_rlx(const uint32_t *p) noexcept { return __atomic_load_n(p, __ATOMIC_RELAXED); }
inline void st_rel(uint64_t *p, uint64_t v) noexcept { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
inline void st_rlx(uint64_t *p, uint64_t v) noexcept { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
inline void st_rlx(uint32_t *p, uint32_t v) noexcept { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
inline bool cas(uint64_t *p, uint64_t expected, uint64_t desired) noexcept
{
    return __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
inline uint64_t fetch_add(uint64_t *p, uint64_t v) noexcept { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline uint64_t fetch_sub(uint64_t *p, uint64_t v) noexcept { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
inline void fence_acq() noexcept { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
// The reader's side of the seqlock: after copying out what control word c1
// guarded, true when no writer published in between (the W bit alone, a
// writer that has not finished, does not count: it writes the other buffer).
inline bool ctl_unchanged(const uint64_t *ctl, uint64_t c1) noexcept
{
    fence_acq();
    return ((c1 ^ ld_rlx(ctl)) & ~ctl_w) == 0;
}
inline void cpu_relax() noexcept
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

// --- hashing (persisted: changing it needs a new hash_id) ------------------
inline uint64_t mix64(uint64_t h) noexcept
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

// Hash of a zero-padded key of `nwords` 64-bit words.  Short dependency
// chain (one multiply per word) because it sits on every lookup; the final
// fold spreads entropy into the high bits that slot selection uses.
inline uint64_t hash_key(const uint64_t *w, uint32_t nwords) noexcept
{
    uint64_t h = 0x243f6a8885a308d3ull ^ nwords;
    for (uint32_t i = 0; i < nwords; ++i) {
        h = (h ^ w[i]) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 32;
    }
    return h * 0xff51afd7ed558ccdull;
}

// Checksum of the immutable part of a header.
inline uint64_t layout_checksum(const SegmentHeader &h) noexcept
{
    const auto *w = reinterpret_cast<const uint64_t *>(&h);
    return hash_key(w, static_cast<uint32_t>(offsetof(SegmentHeader, layout_checksum) / 8));
}

inline constexpr uint32_t words_of(uint32_t bytes) noexcept { return (bytes + 7u) / 8u; }

} // namespace serpens::state
