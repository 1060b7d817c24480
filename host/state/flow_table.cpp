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
inline constexpr uint32_t flow_layout_version = 1;
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
};
static_assert(sizeof(PartHeader) == 64);

struct FlowTable::Part {
    PartHeader *header;
    uint8_t *slots;
    uint32_t index;
};

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

std::vector<std::string> layout_mismatch(const FlowTableHeader &got, const FlowTableHeader &want, uint64_t size)
{
    std::vector<std::string> why;
    if (got.magic != flow_magic || got.version != flow_layout_version || got.header_size != flow_header_size) {
        why.push_back("not a flow table of this version");
        return why;
    }
    if (got.file_size != size) {
        why.push_back(fmt::format("file is {} bytes, its header says {}", size, got.file_size));
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
    want.file_size = flow_header_size + part_size * flow_parts;

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
    if (h.magic != flow_magic || h.version != flow_layout_version || h.header_size != flow_header_size) {
        why = "not a flow table of this version";
    } else if (h.parts != flow_parts || h.n_areas > flow_max_areas || h.entry_size < flow_entry_header ||
               h.entry_size % 64 != 0 || h.slots_per_part == 0 ||
               h.file_size != flow_header_size + part_size * flow_parts) {
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
    return t;
}

[[gnu::always_inline]] inline FlowTable::Part FlowTable::part(uint32_t p) const noexcept
{
    uint8_t *base = _map + flow_header_size + _part_size * p;
    return {reinterpret_cast<PartHeader *>(base), base + sizeof(PartHeader), p};
}

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

uint32_t FlowTable::home_slot(uint32_t hash) const noexcept
{
    // The 24 bits above the part, scaled to [0, n_slots) without a division.
    return static_cast<uint32_t>((uint64_t{hash >> 8} * _n_slots) >> 24);
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
    for (uint32_t n = 0; n < std::min(_n_slots, flow_max_probe); ++n) {
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
        s = s + 1 == _n_slots ? 0 : s + 1;
        entry = slot_at(part, s);
    }
    return nullptr;
}

uint8_t *FlowTable::insert(const Part &part, uint32_t hash, const net::FlowKey &key, bool initiator_hi, uint8_t peer,
                           uint32_t slot, uint16_t now) noexcept
{
    // Refused when the probe found no room, or when the part holds its share
    // of the capacity: fuller, probes would grow long.
    if (slot == UINT32_MAX || __atomic_load_n(&part.header->counters.live, __ATOMIC_RELAXED) >= max_live_per_part()) {
        bump(part.header->counters.refused_full);
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
    const uint32_t next = slot + 1 == _n_slots ? 0 : slot + 1;
    auto state_at = [&](uint32_t s) -> uint8_t & { return reinterpret_cast<EntryHeader *>(slot_at(part, s))->state; };
    if (state_at(next) == flow_free) {
        st8(&h->state, flow_free);
        for (uint32_t s = slot == 0 ? _n_slots - 1 : slot - 1, n = 0; n < _n_slots && state_at(s) == flow_deleted;
             s = s == 0 ? _n_slots - 1 : s - 1, ++n) {
            st8(&state_at(s), flow_free);
        }
    } else {
        st8(&h->state, flow_deleted);
    }
    FlowPartCounters &c = part.header->counters;
    bump(c.expired);
    __atomic_store_n(&c.live, c.live > 0 ? c.live - 1 : 0, __ATOMIC_RELAXED);
}

FlowBurst FlowTable::lookup_burst(const serpens_pkt *pkts, uint32_t stride, uint32_t n, uint64_t now_ns, void **entries,
                                  uint8_t *flags, const uint8_t *new_flow_peer,
                                  const net::FlowKey *parsed_keys) noexcept
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
    auto view = [&](uint32_t i) -> const serpens_pkt & {
        return *reinterpret_cast<const serpens_pkt *>(reinterpret_cast<const uint8_t *>(pkts) +
                                                      std::size_t{i} * stride);
    };
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
            home_of[j] = home_slot(pkt.flow_hash);
            home_entry[j] = slot_at(part(pkt.flow_hash % flow_parts), home_of[j]);
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
            uint8_t f = 0;
            if (entry == nullptr) {
                entry = insert(p, hash, keys[j].key, reverse[j], new_flow_peer != nullptr ? new_flow_peer[base + j] : 0,
                               free_slot, now);
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
        while (cursor.slot < _n_slots && max_slots > 0) {
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
        if (cursor.slot >= _n_slots) {
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
    const double passes_per_call = static_cast<double>(call_period_ns) / static_cast<double>(pass_ns);
    const double slots = passes_per_call * flow_parts * _n_slots;
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
    std::size_t done = 0;
    for (uint32_t p = 0; p < flow_parts; ++p) {
        const Part pv = part(p);
        uint64_t live = 0;
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
