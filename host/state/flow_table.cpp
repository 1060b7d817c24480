#include "state/flow_table.h"

#include "state/segment_file.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace serpens::state {

inline constexpr uint64_t flow_magic = 0x31574c4650524553ull; // "SERPFLW1" little endian
// 2: parts grow into their room, through a scratch area after them.  1: a
// part uses all of its room (no scratch area); attached as it is.
inline constexpr uint32_t flow_layout_version = 2;
inline constexpr uint32_t flow_layout_fixed = 1;
inline constexpr uint32_t flow_header_size = 4096;
inline constexpr uint32_t flow_max_areas = 32;

struct FlowTableHeader {
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t capacity;
    uint64_t idle_timeout_ns; // informational: the host's setting wins at attach
    uint32_t parts;
    uint32_t slots_per_part;
    uint32_t entry_size;
    uint32_t n_areas;
    uint64_t file_size;
    uint64_t created_unix_ns;
    struct {
        char nf[64];
        uint32_t size;
        uint32_t offset;
    } areas[flow_max_areas];
    char chain[128];
    // net::BucketHash the parts were filled by (a flow's part is its bucket);
    // files from before this field have 0 here, crc32c.
    uint32_t bucket_hash;
};
static_assert(sizeof(FlowTableHeader) <= flow_header_size);

struct alignas(64) PartHeader {
    FlowPartCounters counters;
    uint32_t in_use;       // slots in use, the first ones; 0 (layout 1): all of its room
    uint32_t blocked_live; // a rehash found no room for its flows: not tried again below this many live
};
static_assert(sizeof(PartHeader) == 64);

struct FlowTable::Part {
    PartHeader *header;
    uint8_t *slots;
    uint32_t index;
    uint32_t in_use;
};

namespace {

// The scratch area after the parts, which a part's rehash copies its flows
// to before it moves them: [ScratchHeader][old slot of each flow][flows].
struct alignas(64) ScratchHeader {
    uint32_t busy;  // an owner is rehashing a part through it (cleared at attach)
    uint32_t valid; // the copy below is whole: a crash from here on is finished by recover()
    uint32_t part;
    uint32_t old_in_use;
    uint32_t new_in_use;
    uint32_t count;
};
static_assert(sizeof(ScratchHeader) == 64);

// Flows a rehash may copy: a part refuses new flows at three quarters of
// its slots in use.
uint32_t scratch_cap(uint32_t room) { return room * 3 / 4 + 1; }
std::size_t scratch_slots_bytes(uint32_t cap) { return (std::size_t{cap} * sizeof(uint32_t) + 63) & ~std::size_t{63}; }
std::size_t scratch_bytes(uint32_t room, uint32_t entry_size)
{
    const uint32_t cap = scratch_cap(room);
    return sizeof(ScratchHeader) + scratch_slots_bytes(cap) + std::size_t{cap} * entry_size;
}

// The scratch area of a table whose rehashes copy up to `cap` flows.
struct ScratchView {
    ScratchHeader *header;
    uint32_t *old_slot; // where each copied flow was
    uint8_t *copies;    // the flows, entry after entry
};
ScratchView scratch_view(uint8_t *scratch, uint32_t cap)
{
    return {reinterpret_cast<ScratchHeader *>(scratch), reinterpret_cast<uint32_t *>(scratch + sizeof(ScratchHeader)),
            scratch + sizeof(ScratchHeader) + scratch_slots_bytes(cap)};
}

// The packet `i` of a burst whose packets lie `stride` bytes apart.
const serpens_pkt &pkt_at(const serpens_pkt *pkts, uint32_t stride, uint32_t i)
{
    return *reinterpret_cast<const serpens_pkt *>(reinterpret_cast<const uint8_t *>(pkts) + std::size_t{i} * stride);
}

} // namespace

namespace {

// The first bytes of every slot: the key, then what the table keeps about
// the flow, so the lookup of a known flow reads one line.  NF areas follow.
struct EntryHeader {
    net::FlowKey key;   // canonical: both directions look it up alike
    uint32_t sig;       // (hash >> 8) | 1 << 31: a cheap first compare, and the hash with the part
    uint16_t last_seen; // idle units (2^30 ns), modulo 2^16
    uint8_t state;      // flow_* below; written last when a flow appears
    // Bit 0: the first packet went from key.dst to key.src.  Bits 1-7: the
    // peer whose instance serves the flow (remote_peer), 0 on this host.
    uint8_t initiator;
};
static_assert(sizeof(EntryHeader) == flow_entry_header);

enum : uint8_t { flow_free = 0, flow_live = 1, flow_deleted = 2, flow_expiring = 3 };

// The signature of a flow hash: its bits above the part, never 0.  With the
// part it gives the hash back.
inline uint32_t signature(uint32_t hash) noexcept { return (hash >> 8) | 0x80000000u; }
inline uint32_t hash_of(uint32_t sig, uint32_t part) noexcept { return (sig << 8) | part; }

// Idle time is kept in units of 2^30 ns (about a second) in 16 bits.
inline uint16_t idle_units(uint64_t ns) noexcept { return static_cast<uint16_t>(ns >> 30); }
inline void st16(uint16_t *p, uint16_t v) noexcept { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
inline void st8(uint8_t *p, uint8_t v) noexcept { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

inline void bump(uint64_t &counter, uint64_t by = 1) noexcept
{
    __atomic_store_n(&counter, __atomic_load_n(&counter, __ATOMIC_RELAXED) + by, __ATOMIC_RELAXED);
}

// Inline word compares: the library calls were 12% of a lookup's profile.
inline bool same_key(const net::FlowKey &a, const net::FlowKey &b) noexcept
{
    uint64_t diff = 0;
    for (unsigned i = 0; i < net::FlowKey::words; ++i) {
        diff |= a.word(i) ^ b.word(i);
    }
    return diff == 0;
}

// Bytes of one part: its header and its slots.
std::size_t part_bytes(uint32_t slots, uint32_t entry_size)
{
    return sizeof(PartHeader) + std::size_t{slots} * entry_size;
}

// Slots a part needs: its share of `capacity` with room for the unevenness
// of hashing (4 standard deviations), at most half full so that a linear
// probe stays short (about 1.5 slots for a hit, 2.5 for a miss).
uint32_t slots_for(uint64_t capacity)
{
    const double per_part = static_cast<double>(capacity) / flow_parts;
    return static_cast<uint32_t>(std::ceil(2 * (per_part + 4 * std::sqrt(per_part)) + 16));
}

// Bytes a table of this layout version needs (a hugetlbfs file is longer).
uint64_t needed_bytes(uint32_t version, uint32_t slots, uint32_t entry_size)
{
    const uint64_t parts = flow_header_size + uint64_t{flow_parts} * part_bytes(slots, entry_size);
    return version == flow_layout_fixed ? parts : parts + scratch_bytes(slots, entry_size);
}

bool known_version(const FlowTableHeader &h)
{
    return h.magic == flow_magic && (h.version == flow_layout_version || h.version == flow_layout_fixed) &&
           h.header_size == flow_header_size;
}

std::vector<std::string> layout_mismatch(const FlowTableHeader &got, const FlowTableHeader &want, uint64_t size)
{
    std::vector<std::string> why;
    if (!known_version(got)) {
        why.push_back("not a flow table of this version");
        return why;
    }
    if (got.file_size != size) {
        why.push_back(fmt::format("file is {} bytes, its header says {}", size, got.file_size));
    } else if (size < needed_bytes(got.version, got.slots_per_part, got.entry_size)) {
        why.push_back(fmt::format("file is {} bytes, its layout needs {}", size,
                                  needed_bytes(got.version, got.slots_per_part, got.entry_size)));
    }
    if (got.capacity != want.capacity || got.slots_per_part != want.slots_per_part || got.parts != want.parts) {
        why.push_back(fmt::format("capacity {} (configured: {})", got.capacity, want.capacity));
    }
    bool same_areas = got.n_areas == want.n_areas && got.entry_size == want.entry_size;
    for (uint32_t i = 0; same_areas && i < got.n_areas; ++i) {
        same_areas = std::strncmp(got.areas[i].nf, want.areas[i].nf, sizeof got.areas[i].nf) == 0 &&
                     got.areas[i].size == want.areas[i].size && got.areas[i].offset == want.areas[i].offset;
    }
    if (!same_areas) {
        why.push_back("the chain's NFs keep other per-flow state than when it was created");
    }
    if (got.bucket_hash != want.bucket_hash) {
        auto name = [](uint32_t how) { return how == static_cast<uint32_t>(net::BucketHash::rss) ? "rss" : "crc32c"; };
        why.push_back(fmt::format("its flows are in parts by bucket_hash \"{}\" (configured: \"{}\")",
                                  name(got.bucket_hash), name(want.bucket_hash)));
    }
    return why;
}

} // namespace

uint32_t FlowTableSpec::layout()
{
    std::erase_if(areas, [](const FlowArea &a) { return a.size == 0; });
    uint32_t offset = flow_entry_header;
    for (FlowArea &area : areas) {
        area.offset = offset;
        offset += (area.size + 7) & ~7u;
    }
    return (offset + 63) & ~63u;
}

FlowTable::~FlowTable()
{
    if (_map != nullptr) {
        ::munmap(_map, _map_size);
    }
    if (_fd >= 0) {
        ::close(_fd); // also drops the flock
    }
}

std::unique_ptr<FlowTable> FlowTable::open(const std::filesystem::path &file, FlowTableSpec spec, std::string &err)
{
    const uint32_t entry_size = spec.layout();
    if (spec.areas.size() > flow_max_areas) {
        err = fmt::format("chain '{}': {} NFs keep per-flow state; at most {} may", spec.chain, spec.areas.size(),
                          flow_max_areas);
        return nullptr;
    }
    if (spec.capacity == 0 || spec.capacity > (uint64_t{1} << 32)) {
        err = fmt::format("chain '{}': flow capacity {} is outside 1..2^32", spec.chain, spec.capacity);
        return nullptr;
    }
    FlowTableHeader want{};
    want.magic = flow_magic;
    want.version = flow_layout_version;
    want.header_size = flow_header_size;
    want.capacity = spec.capacity;
    want.idle_timeout_ns = spec.idle_timeout_ns;
    want.parts = flow_parts;
    want.slots_per_part = slots_for(spec.capacity);
    want.entry_size = entry_size;
    want.n_areas = static_cast<uint32_t>(spec.areas.size());
    for (std::size_t i = 0; i < spec.areas.size(); ++i) {
        std::snprintf(want.areas[i].nf, sizeof want.areas[i].nf, "%s", spec.areas[i].nf.c_str());
        want.areas[i].size = spec.areas[i].size;
        want.areas[i].offset = spec.areas[i].offset;
    }
    std::snprintf(want.chain, sizeof want.chain, "%s", spec.chain.c_str());
    want.bucket_hash = static_cast<uint32_t>(net::bucket_hash());
    const std::size_t part_size = part_bytes(want.slots_per_part, entry_size);
    want.file_size = needed_bytes(flow_layout_version, want.slots_per_part, entry_size);

    std::unique_ptr<FlowTable> t(new FlowTable());
    t->_path = file;
    t->_spec = std::move(spec);
    t->_entry_size = entry_size;
    t->_n_slots = want.slots_per_part;
    t->_part_size = part_size;
    t->_idle_units =
        t->_spec.idle_timeout_ns == 0
            ? 0
            : std::clamp<uint32_t>(static_cast<uint32_t>(t->_spec.idle_timeout_ns >> 30), 1, flow_max_idle_units);
    auto map = [&](int fd, std::size_t size) {
        void *p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            err = fmt::format("{}: mmap of {} bytes failed: {}", file.string(), size, errno_text(errno));
            return false;
        }
        ready_for_data_path(p, size);
        t->_map = static_cast<uint8_t *>(p);
        t->_map_size = size;
        t->_fd = fd;
        return true;
    };

    FlowTableHeader got{};
    uint64_t size = 0;
    const SegmentFit fits = [&](uint64_t file_size) { return layout_mismatch(got, want, file_size); };
    int fd = open_existing(file, "flow table", &got, sizeof got, flow_header_size, fits, size, err);
    if (fd >= 0) {
        if (!map(fd, static_cast<std::size_t>(size))) {
            ::close(fd);
            return nullptr;
        }
        if (got.version == flow_layout_version) {
            t->use_scratch();
        } else {
            t->mirror_in_use();
        }
        return t;
    }
    if (!err.empty()) {
        return nullptr;
    }

    const std::string tmp = creation_name(file);
    fd = create_reserved(tmp, want.file_size,
                         fmt::format("for {} flows (free space in {}, or lower the chain's flow_capacity)",
                                     want.capacity, file.parent_path().string()),
                         err);
    if (fd < 0) {
        return nullptr;
    }
    if (!map(fd, static_cast<std::size_t>(want.file_size))) {
        ::close(fd);
        ::unlink(tmp.c_str());
        return nullptr;
    }
    want.created_unix_ns = unix_now_ns();
    std::memcpy(t->_map, &want, sizeof want);
    for (uint32_t p = 0; p < flow_parts; ++p) {
        t->part(p).header->in_use = std::min(flow_min_slots, t->_n_slots);
    }
    t->use_scratch();
    if (!publish(tmp, file, err)) {
        return nullptr;
    }
    return t;
}

std::unique_ptr<FlowTable> FlowTable::open_readonly(const std::filesystem::path &file, std::string &err)
{
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = file.string() + ": open failed: " + errno_text(errno);
        return nullptr;
    }
    FlowTableHeader h{};
    uint64_t size = 0;
    if (std::string unread = read_header(fd, &h, sizeof h, flow_header_size, size); !unread.empty()) {
        err = file.string() + ": not a flow table: " + unread;
        ::close(fd);
        return nullptr;
    }
    // Everything the mapping is walked with comes from the header: checked
    // against itself and the file's size before any of it is trusted.
    const std::size_t part_size = part_bytes(h.slots_per_part, h.entry_size);
    std::string why;
    if (!known_version(h)) {
        why = "not a flow table of this version";
    } else if (h.parts != flow_parts || h.n_areas > flow_max_areas || h.entry_size < flow_entry_header ||
               h.entry_size % 64 != 0 || h.slots_per_part == 0 ||
               h.file_size < needed_bytes(h.version, h.slots_per_part, h.entry_size)) {
        why = "inconsistent header";
    } else if (h.file_size != size) {
        why = fmt::format("file is {} bytes, its header says {}", size, h.file_size);
    }
    FlowTableSpec spec;
    spec.chain.assign(h.chain, ::strnlen(h.chain, sizeof h.chain));
    spec.capacity = h.capacity;
    spec.idle_timeout_ns = h.idle_timeout_ns;
    for (uint32_t i = 0; why.empty() && i < h.n_areas; ++i) {
        FlowArea a;
        a.nf.assign(h.areas[i].nf, ::strnlen(h.areas[i].nf, sizeof h.areas[i].nf));
        a.size = h.areas[i].size;
        a.offset = h.areas[i].offset;
        if (a.size > SERPENS_MAX_FLOW_STATE || a.offset < flow_entry_header || a.offset + a.size > h.entry_size) {
            why = fmt::format("area of '{}' lies outside the entry", a.nf);
        }
        spec.areas.push_back(std::move(a));
    }
    if (!why.empty()) {
        err = file.string() + ": " + why;
        ::close(fd);
        return nullptr;
    }
    void *p = ::mmap(nullptr, h.file_size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        err = fmt::format("{}: mmap of {} bytes failed: {}", file.string(), h.file_size, errno_text(errno));
        ::close(fd);
        return nullptr;
    }
    std::unique_ptr<FlowTable> t(new FlowTable());
    t->_path = file;
    t->_spec = std::move(spec);
    t->_fd = fd;
    t->_map = static_cast<uint8_t *>(p); // PROT_READ: a write through it faults
    t->_map_size = h.file_size;
    t->_entry_size = h.entry_size;
    t->_n_slots = h.slots_per_part;
    t->_part_size = part_size;
    t->_idle_units = 0; // never sweeps
    t->mirror_in_use();
    return t;
}

[[gnu::always_inline]] inline FlowTable::Part FlowTable::part(uint32_t p) const noexcept
{
    uint8_t *base = _map + flow_header_size + _part_size * p;
    // The mirror: the header's line would be one more load before the home
    // slot's prefetch, for every packet.
    return {reinterpret_cast<PartHeader *>(base), base + sizeof(PartHeader), p,
            __atomic_load_n(&_in_use[p], __ATOMIC_RELAXED)};
}

uint32_t FlowTable::file_in_use(uint32_t p) const noexcept
{
    const PartHeader *header = part(p).header;
    // 0 (layout 1) is the whole room, and no file makes a part use more.
    return std::min(__atomic_load_n(&header->in_use, __ATOMIC_RELAXED) - 1u, _n_slots - 1u) + 1u;
}

void FlowTable::mirror_in_use() noexcept
{
    for (uint32_t p = 0; p < flow_parts; ++p) {
        _in_use[p] = file_in_use(p);
        _wants_room[p] = 0;
    }
    _room_wanted.store(0, std::memory_order_relaxed);
}

void FlowTable::want_room(uint32_t p, bool wanted) noexcept
{
    if ((_wants_room[p] != 0) != wanted) {
        _wants_room[p] = wanted ? 1 : 0;
        _room_wanted.fetch_add(wanted ? 1u : UINT32_MAX, std::memory_order_relaxed);
    }
}

void FlowTable::use_scratch() noexcept
{
    _scratch = _map + flow_header_size + _part_size * flow_parts;
    _scratch_cap = scratch_cap(_n_slots);
    mirror_in_use();
}

uint32_t FlowTable::slots_in_use(uint32_t p) const noexcept { return file_in_use(p); }

uint8_t *FlowTable::entry_at(uint32_t p, uint32_t slot, uint32_t &hash) const noexcept
{
    uint8_t *entry = slot_at(part(p), slot);
    const auto *h = reinterpret_cast<const EntryHeader *>(entry);
    if (__atomic_load_n(&h->state, __ATOMIC_ACQUIRE) != flow_live) {
        return nullptr;
    }
    hash = hash_of(h->sig, p);
    return entry;
}

[[gnu::always_inline]] inline uint8_t *FlowTable::slot_at(const Part &part, uint32_t slot) const noexcept
{
    return part.slots + std::size_t{slot} * _entry_size;
}

uint32_t FlowTable::home_slot(uint32_t hash, uint32_t in_use) noexcept
{
    // The 24 bits above the part, scaled to [0, in_use) without a division.
    return static_cast<uint32_t>((uint64_t{hash >> 8} * in_use) >> 24);
}

[[gnu::always_inline]] inline uint8_t *FlowTable::probe(const Part &part, uint32_t hash, uint32_t home,
                                                        uint8_t *home_entry, const net::FlowKey &key,
                                                        uint32_t &free_slot) const noexcept
{
    const uint32_t sig = signature(hash);
    free_slot = UINT32_MAX;
    uint32_t s = home;
    uint8_t *entry = home_entry;
    // A flow lives within flow_max_probe slots of its home (insert() puts it
    // nowhere else), so no probe, even of a full part, goes further.
    for (uint32_t n = 0; n < std::min(part.in_use, flow_max_probe); ++n) {
        const auto *h = reinterpret_cast<const EntryHeader *>(entry);
        const uint8_t state = __atomic_load_n(&h->state, __ATOMIC_ACQUIRE);
        if (state == flow_free) {
            if (free_slot == UINT32_MAX) {
                free_slot = s;
            }
            return nullptr; // the end of the probe: not here
        }
        if (state == flow_live && h->sig == sig && same_key(h->key, key)) {
            return entry;
        }
        if (state == flow_deleted && free_slot == UINT32_MAX) {
            free_slot = s; // reused if the flow is not further on
        }
        s = s + 1 == part.in_use ? 0 : s + 1;
        entry = slot_at(part, s);
    }
    return nullptr;
}

uint8_t *FlowTable::insert(const Part &part, uint32_t hash, const net::FlowKey &key, bool initiator_hi, uint8_t peer,
                           uint32_t slot, uint16_t now, uint32_t arriving) noexcept
{
    // Refused when the probe found no room, or when the part's slots in use
    // are three quarters full (all its room: its share of the capacity):
    // fuller, probes would grow long.
    if (slot == UINT32_MAX || __atomic_load_n(&part.header->counters.live, __ATOMIC_RELAXED) >= part.in_use * 3 / 4) {
        return nullptr;
    }
    uint8_t *entry = slot_at(part, slot);
    auto *h = reinterpret_cast<EntryHeader *>(entry);
    h->key = key;
    h->sig = signature(hash);
    h->last_seen = now;
    h->initiator = static_cast<uint8_t>((initiator_hi ? 1u : 0u) | (peer & flow_max_peer) << 1);
    std::memset(entry + flow_entry_header, 0, _entry_size - flow_entry_header);
    st8(&h->state, flow_live); // publishes the entry, after all of it
    bump(part.header->counters.live);
    bump(part.header->counters.created);
    // A burst like this one could fill the part past half: it grows before
    // the next burst that brings it a packet (make_room).
    if (part.in_use < _n_slots && part.header->counters.live + arriving > part.in_use / 2) {
        want_room(part.index, true);
    }
    return entry;
}

void FlowTable::remove(const Part &part, uint32_t slot, FlowExpireFn fn, void *arg) noexcept
{
    uint8_t *entry = slot_at(part, slot);
    auto *h = reinterpret_cast<EntryHeader *>(entry);
    st8(&h->state, flow_expiring); // a crash from here on: recover() runs the hooks again
    if (fn != nullptr) {
        fn(arg, entry);
    }
    // A slot followed by a free one ends no probe: it becomes free, and so
    // do the deleted slots before it.  Otherwise it stays a tombstone that
    // probes step over.
    const uint32_t size = part.in_use;
    const uint32_t next = slot + 1 == size ? 0 : slot + 1;
    auto state_at = [&](uint32_t s) -> uint8_t & { return reinterpret_cast<EntryHeader *>(slot_at(part, s))->state; };
    if (state_at(next) == flow_free) {
        st8(&h->state, flow_free);
        for (uint32_t s = slot == 0 ? size - 1 : slot - 1, n = 0; n < size && state_at(s) == flow_deleted;
             s = s == 0 ? size - 1 : s - 1, ++n) {
            st8(&state_at(s), flow_free);
        }
    } else {
        st8(&h->state, flow_deleted);
    }
    FlowPartCounters &c = part.header->counters;
    bump(c.expired);
    __atomic_store_n(&c.live, c.live > 0 ? c.live - 1 : 0, __ATOMIC_RELAXED);
}

bool FlowTable::make_room(const Part &part, uint32_t arriving) noexcept
{
    PartHeader &h = *part.header;
    const uint64_t live = h.counters.live;
    if (part.in_use >= _n_slots || live < h.blocked_live) {
        want_room(part.index, false);
        return false;
    }
    uint32_t size = part.in_use;
    while (size < _n_slots && live + arriving > size / 2) {
        size = static_cast<uint32_t>(std::min<uint64_t>(uint64_t{size} * 2, _n_slots));
    }
    const auto [scratch, old_slot, copies] = scratch_view(_scratch, _scratch_cap);
    uint32_t idle = 0;
    if (!__atomic_compare_exchange_n(&scratch->busy, &idle, 1u, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        return false; // another part's owner is rehashing: this part tries again with its next burst
    }
    uint32_t count = 0;
    bool fits = true;
    for (uint32_t s = 0; s < part.in_use && fits; ++s) {
        const uint8_t *entry = slot_at(part, s);
        const uint8_t state = reinterpret_cast<const EntryHeader *>(entry)->state;
        if (state == flow_live || state == flow_expiring) {
            fits = count < _scratch_cap; // always: insert() keeps a part below three quarters full
            if (fits) {
                std::memcpy(copies + std::size_t{count} * _entry_size, entry, _entry_size);
                old_slot[count++] = s;
            }
        }
    }
    bool moved = false;
    if (fits) {
        scratch->part = part.index;
        scratch->old_in_use = part.in_use;
        scratch->new_in_use = size;
        scratch->count = count;
        __atomic_store_n(&scratch->valid, 1u, __ATOMIC_RELEASE); // a crash from here on: recover() finishes it
        moved = rehash_from_scratch();
    }
    if (!moved) {
        h.blocked_live = static_cast<uint32_t>(std::min<uint64_t>(live + 1, UINT32_MAX));
    }
    want_room(part.index, false);
    __atomic_store_n(&scratch->busy, 0u, __ATOMIC_RELEASE);
    return moved;
}

bool FlowTable::rehash_from_scratch() noexcept
{
    // Named, not a structured binding: place_all captures them (clang
    // before 16 refuses a lambda capture of a binding).
    const ScratchView view = scratch_view(_scratch, _scratch_cap);
    ScratchHeader *scratch = view.header;
    const uint32_t *old_slot = view.old_slot;
    const uint8_t *copies = view.copies;
    const uint32_t from = scratch->old_in_use, to = scratch->new_in_use, count = scratch->count;
    if (scratch->part >= flow_parts || from == 0 || from > to || to > _n_slots || count > _scratch_cap) {
        __atomic_store_n(&scratch->valid, 0u, __ATOMIC_RELEASE); // not this table's rehash: nothing was moved
        return false;
    }
    PartHeader *header = part(scratch->part).header;
    // Every slot either size covers free, the size set, then each flow from
    // its home (or, back at the old size, where it was, and the slots its
    // probe stepped over tombstones again).
    auto place_all = [&](uint32_t size) {
        Part p = part(scratch->part);
        for (uint32_t s = 0; s < to; ++s) {
            reinterpret_cast<EntryHeader *>(slot_at(p, s))->state = flow_free;
        }
        __atomic_store_n(&header->in_use, size, __ATOMIC_RELEASE);
        __atomic_store_n(&_in_use[scratch->part], size, __ATOMIC_RELAXED);
        p = part(scratch->part);
        for (uint32_t i = 0; i < count; ++i) {
            const uint8_t *copy = copies + std::size_t{i} * _entry_size;
            const auto *copied = reinterpret_cast<const EntryHeader *>(copy);
            const uint32_t home = home_slot(hash_of(copied->sig, p.index), size);
            uint32_t slot = UINT32_MAX;
            if (size == from) {
                slot = old_slot[i] < from ? old_slot[i] : UINT32_MAX;
                for (uint32_t s = home; slot != UINT32_MAX && s != slot; s = s + 1 == size ? 0 : s + 1) {
                    auto *passed = reinterpret_cast<EntryHeader *>(slot_at(p, s));
                    if (passed->state == flow_free) {
                        passed->state = flow_deleted;
                    }
                }
            } else {
                for (uint32_t n = 0, s = home; n < std::min(size, flow_max_probe) && slot == UINT32_MAX;
                     ++n, s = s + 1 == size ? 0 : s + 1) {
                    const uint8_t state = reinterpret_cast<const EntryHeader *>(slot_at(p, s))->state;
                    if (state == flow_free || state == flow_deleted) {
                        slot = s;
                    }
                }
            }
            if (slot == UINT32_MAX) {
                return false;
            }
            // All but the state byte, then the state: a reader of the file
            // (serpens-state) sees the slot live only once it is whole.
            uint8_t *entry = slot_at(p, slot);
            constexpr std::size_t state_at = offsetof(EntryHeader, state);
            std::memcpy(entry, copy, state_at);
            std::memcpy(entry + state_at + 1, copy + state_at + 1, _entry_size - state_at - 1);
            st8(&reinterpret_cast<EntryHeader *>(entry)->state, copied->state);
        }
        return true;
    };
    const bool moved = place_all(to);
    if (!moved) {
        place_all(from);
    }
    __atomic_store_n(&scratch->valid, 0u, __ATOMIC_RELEASE);
    return moved;
}

FlowBurst FlowTable::lookup_burst(const serpens_pkt *pkts, uint32_t stride, uint32_t n, uint64_t now_ns, void **entries,
                                  uint8_t *flags, const uint8_t *new_flow_peer,
                                  const net::FlowKey *parsed_keys) noexcept
{
    FlowBurst found = lookup_pass(pkts, stride, n, now_ns, entries, flags, new_flow_peer, parsed_keys, false);
    if (found.refused == 0) {
        return found;
    }
    auto hash_at = [&](uint32_t i) { return pkt_at(pkts, stride, i).flow_hash; };
    // A part that can still grow refuses only for want of a slot near a
    // flow's home, or at three quarters of its slots in use: rarely, at
    // about half full.  It grows now, once, and the burst is looked up again
    // (no NF has seen an entry yet), keeping which flows it created.
    if (_scratch != nullptr) {
        std::array<uint64_t, flow_parts / 64> grown{};
        bool any = false;
        for (uint32_t i = 0; i < n; ++i) {
            const uint32_t p = hash_at(i) % flow_parts;
            if (flags[i] != flow_flag_refused || (grown[p / 64] >> (p % 64) & 1u) != 0) {
                continue;
            }
            grown[p / 64] |= uint64_t{1} << (p % 64);
            const Part part_now = part(p);
            const uint64_t live = part_now.header->counters.live;
            const uint64_t one_doubling = live < part_now.in_use / 2 + 1 ? part_now.in_use / 2 + 1 - live : 1;
            any |= part_now.in_use < _n_slots &&
                   make_room(part_now, static_cast<uint32_t>(std::max<uint64_t>(one_doubling, flow_room_reserve)));
        }
        if (any) {
            found = lookup_pass(pkts, stride, n, now_ns, entries, flags, new_flow_peer, parsed_keys, true);
        }
    }
    for (uint32_t i = 0; i < n; ++i) {
        if (flags[i] == flow_flag_refused) {
            bump(part(hash_at(i) % flow_parts).header->counters.refused_full);
        }
    }
    return found;
}

FlowBurst FlowTable::lookup_pass(const serpens_pkt *pkts, uint32_t stride, uint32_t n, uint64_t now_ns, void **entries,
                                 uint8_t *flags, const uint8_t *new_flow_peer, const net::FlowKey *parsed_keys,
                                 bool again) noexcept
{
    FlowBurst found;
    constexpr uint32_t chunk = 64;
    // Two passes per chunk, so the cache misses of its packets overlap: keys
    // and the prefetch of each home slot's first line, then the probes,
    // creation and stamps (and the prefetch of the entry's other lines).
    net::FlowKeySlot keys[chunk]; // written before read: not zeroed per burst
    bool reverse[chunk];
    // What the first pass found of each packet's home, for the second.
    uint32_t hash_of[chunk];
    uint32_t home_of[chunk];
    uint8_t *home_entry[chunk];
    const uint16_t now = idle_units(now_ns);
    auto view = [&](uint32_t i) -> const serpens_pkt & { return pkt_at(pkts, stride, i); };
    // Room first: a rehash moves a part's flows, so it may only come before
    // the burst hands out any entry.  A pass of its own, and only while some
    // part asks for room: checked per packet, it cost every lookup (3% of
    // the chain's rate at 8192 flows, where no part grows).  Only parts of
    // the burst's IP packets: this caller owns those.
    if (!again && _room_wanted.load(std::memory_order_relaxed) != 0) {
        for (uint32_t i = 0; i < n; ++i) {
            const serpens_pkt &pkt = view(i);
            const uint32_t p = pkt.flow_hash % flow_parts;
            if (_wants_room[p] != 0 && net::has_flow_key(pkt)) {
                make_room(part(p), room_reserve(n));
            }
        }
    }
    for (uint32_t base = 0; base < n; base += chunk) {
        const uint32_t m = std::min(chunk, n - base);
        bool keyed[chunk];
        for (uint32_t j = 0; j < m; ++j) {
            const serpens_pkt &pkt = view(base + j);
            // The parser's key, in the cache since it was written: reading
            // the headers again was a tenth of the lookup.
            const net::FlowKey *key = parsed_keys != nullptr ? &parsed_keys[base + j] : &keys[j].key;
            keyed[j] = parsed_keys != nullptr ? net::has_flow_key(pkt) : net::flow_key_of(pkt, keys[j].key);
            if (!keyed[j]) {
                entries[base + j] = nullptr;
                flags[base + j] = 0;
                continue;
            }
            // Ordered on the key where it lies, then copied once: reading a
            // copy just stored stalled on store forwarding.
            reverse[j] = !key->is_canonical();
            keys[j].key = reverse[j] ? key->reversed() : *key;
            // Only the line the probe reads: a chunk's further lines would
            // fill the core's miss buffers before its probes' lines are in.
            hash_of[j] = pkt.flow_hash;
            const Part p = part(pkt.flow_hash % flow_parts);
            home_of[j] = home_slot(pkt.flow_hash, p.in_use);
            home_entry[j] = slot_at(p, home_of[j]);
            __builtin_prefetch(home_entry[j], 1, 3);
        }
        for (uint32_t j = 0; j < m; ++j) {
            if (!keyed[j]) {
                continue;
            }
            const uint32_t hash = hash_of[j];
            // Recomputed: keeping the first pass's Part cost more (callgrind,
            // lookup_burst 123.9 -> 125.4 instructions per packet).
            const Part p = part(hash % flow_parts);
            uint32_t free_slot;
            uint8_t *entry = probe(p, hash, home_of[j], home_entry[j], keys[j].key, free_slot);
            // Looked up again: the flows the first pass created are found
            // now, and still new to the NFs.
            uint8_t f = again ? static_cast<uint8_t>(flags[base + j] & SERPENS_FLOW_NEW) : 0;
            if (entry == nullptr) {
                entry = insert(p, hash, keys[j].key, reverse[j], new_flow_peer != nullptr ? new_flow_peer[base + j] : 0,
                               free_slot, now, room_reserve(n));
                f = SERPENS_FLOW_NEW;
                if (entry == nullptr) {
                    entries[base + j] = nullptr;
                    flags[base + j] = flow_flag_refused;
                    ++found.refused;
                    continue;
                }
            }
            auto *h = reinterpret_cast<EntryHeader *>(entry);
            if (h->last_seen != now) {
                st16(&h->last_seen, now);
            }
            // Which endpoint sent it, and whether that is against the first
            // packet, in arithmetic: as branches they cost 13 instructions a
            // packet (callgrind).
            static_assert(SERPENS_FLOW_REPLY == 1u << 1 && SERPENS_FLOW_FROM_B == 1u << 2);
            const unsigned from_b = reverse[j] ? 1u : 0u;
            f |= static_cast<uint8_t>((from_b ^ (h->initiator & 1u)) << 1 | from_b << 2);
            if (h->initiator > 1u) {
                f |= flow_flag_remote;
                ++found.remote;
            }
            // The NFs' areas past the first line, for their turn.  The second
            // line on its own: most chains' entries end there, and the loop
            // alone was 10 instructions a packet.
            if (_entry_size > 64) {
                __builtin_prefetch(entry + 64, 1, 3);
                for (uint32_t off = 128; off < _entry_size; off += 64) {
                    __builtin_prefetch(entry + off, 1, 3);
                }
            }
            entries[base + j] = entry;
            flags[base + j] = f;
        }
    }
    return found;
}

std::size_t FlowTable::sweep(const uint64_t *owned, FlowSweepCursor &cursor, uint64_t now_ns, uint32_t max_slots,
                             const FlowSweepHooks &hooks) noexcept
{
    if (_idle_units == 0 && !(hooks.visit != nullptr && hooks.visit_all)) {
        return 0;
    }
    const uint16_t now = idle_units(now_ns);
    std::size_t gone = 0;
    // Unowned parts are skipped without counting against the budget, but a
    // call looks at each part at most once.
    for (uint32_t visited = 0; visited < flow_parts && max_slots > 0; ++visited) {
        const uint32_t p = cursor.part % flow_parts;
        if ((owned[p / 64] >> (p % 64) & 1u) == 0) {
            cursor.part = (p + 1) % flow_parts;
            cursor.slot = 0;
            continue;
        }
        const Part pv = part(p);
        // A part that grew since the cursor entered it is looked at in its
        // new order: some flows twice or not before the next pass.
        while (cursor.slot < pv.in_use && max_slots > 0) {
            const uint32_t s = cursor.slot++;
            --max_slots;
            uint8_t *entry = slot_at(pv, s);
            const auto *h = reinterpret_cast<const EntryHeader *>(entry);
            if (h->state != flow_live) {
                continue;
            }
            // Idle time modulo 2^16 units: right while below half of that
            // (flow_max_idle_units), and a sweep passes much more often.
            const uint16_t idle = static_cast<uint16_t>(now - h->last_seen);
            const bool expiring = _idle_units != 0 && idle > _idle_units;
            if (hooks.visit != nullptr && (expiring || hooks.visit_all)) {
                const bool keep = hooks.visit(hooks.arg, entry, uint64_t{idle} << 30, expiring);
                if (expiring && keep) {
                    continue;
                }
            }
            if (expiring) {
                remove(pv, s, hooks.expired, hooks.arg);
                ++gone;
            }
        }
        if (cursor.slot >= pv.in_use) {
            cursor.part = (p + 1) % flow_parts;
            cursor.slot = 0;
        } else {
            break; // budget spent inside this part: resume here
        }
    }
    return gone;
}

uint32_t FlowTable::sweep_slots(uint64_t call_period_ns, uint64_t pass_ns) const noexcept
{
    if (pass_ns == 0) {
        return 0;
    }
    uint64_t in_use = 0; // the parts' slots in use: a pass looks at no others
    for (uint32_t p = 0; p < flow_parts; ++p) {
        in_use += __atomic_load_n(&_in_use[p], __ATOMIC_RELAXED);
    }
    const double passes_per_call = static_cast<double>(call_period_ns) / static_cast<double>(pass_ns);
    const double slots = passes_per_call * static_cast<double>(in_use);
    return static_cast<uint32_t>(std::clamp(std::ceil(slots), 8.0, 2048.0));
}

uint8_t FlowTable::remote_peer(const uint8_t *entry) noexcept
{
    return reinterpret_cast<const EntryHeader *>(entry)->initiator >> 1;
}

void FlowTable::make_local(uint8_t *entry) noexcept
{
    auto *h = reinterpret_cast<EntryHeader *>(entry);
    st8(&h->initiator, h->initiator & 1u);
}

serpens_flow_info FlowTable::entry_info(const uint8_t *entry, uint64_t idle_ns, bool expiring, uint64_t now_ns) noexcept
{
    const auto *h = reinterpret_cast<const EntryHeader *>(entry);
    serpens_flow_info info{};
    info.struct_size = sizeof info;
    info.ip_version = h->key.ip_version;
    info.proto = h->key.proto;
    info.initiator_b = h->initiator & 1u;
    info.expiring = expiring ? 1 : 0;
    std::memcpy(info.addr_a, h->key.src.data(), sizeof info.addr_a);
    std::memcpy(info.addr_b, h->key.dst.data(), sizeof info.addr_b);
    info.port_a = h->key.src_port;
    info.port_b = h->key.dst_port;
    info.idle_ns = idle_ns;
    info.now_ns = now_ns;
    return info;
}

std::size_t FlowTable::recover(ExpireFn fn, void *arg) noexcept
{
    if (_scratch != nullptr) {
        auto *scratch = reinterpret_cast<ScratchHeader *>(_scratch);
        if (scratch->valid != 0) {
            rehash_from_scratch();
        }
        scratch->busy = 0; // its holder is gone with the process
    }
    std::size_t done = 0;
    for (uint32_t p = 0; p < flow_parts; ++p) {
        const Part pv = part(p);
        uint64_t live = 0;
        // Every slot of the room, although no flow lies past the slots in
        // use: the walk faults the whole file in, so a part that grows
        // takes no page faults on the data path.  Without it (reading only
        // slots in use) 1M new flows went through FW -> MON -> NAT at 0.23
        // M/s instead of 0.49 (serpens-bench throughput --new-flows).
        for (uint32_t s = 0; s < _n_slots; ++s) {
            const auto *h = reinterpret_cast<const EntryHeader *>(slot_at(pv, s));
            if (h->state == flow_expiring) {
                remove(pv, s, fn, arg);
                ++done;
            } else {
                live += h->state == flow_live;
            }
        }
        // A crash between an entry's publication and its count leaves the
        // count behind: recounted here, where nobody writes.
        pv.header->counters.live = live;
    }
    return done;
}

FlowTableTotals FlowTable::totals() const noexcept
{
    FlowTableTotals t;
    t.capacity = uint64_t{flow_parts} * max_live_per_part();
    for (uint32_t p = 0; p < flow_parts; ++p) {
        const FlowPartCounters &c = part(p).header->counters;
        t.live += __atomic_load_n(&c.live, __ATOMIC_RELAXED);
        t.created += __atomic_load_n(&c.created, __ATOMIC_RELAXED);
        t.refused_full += __atomic_load_n(&c.refused_full, __ATOMIC_RELAXED);
        t.expired += __atomic_load_n(&c.expired, __ATOMIC_RELAXED);
    }
    return t;
}

} // namespace serpens::state
