#include "state/flow_table.h"

#include "state/layout.h"
#include "state/table.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
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
    uint32_t buckets_per_part;
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
};
static_assert(sizeof(FlowTableHeader) <= flow_header_size);

struct alignas(64) PartHeader {
    FlowPartCounters counters;
};
static_assert(sizeof(PartHeader) == 64);

// What a lookup reads first, and everything about a slot but its key: so an
// entry is the key and the NF areas only, and small areas share its line.
struct alignas(64) BucketLine {
    uint32_t sig[flow_bucket_slots];       // (hash >> 8) | 1 << 31; 0: empty slot
    uint16_t last_seen[flow_bucket_slots]; // idle units (2^30 ns), modulo 2^16
    uint32_t overflow;                     // flows of this primary living in their alternative
    uint8_t initiator;                     // bit s: slot s's first packet went key.dst -> key.src
    uint8_t expiring;                      // bit s: slot s is being removed (hooks running)
    uint8_t pad[10];
};
static_assert(sizeof(BucketLine) == 64);
static_assert(sizeof(net::FlowKey) == flow_entry_header);

struct FlowTable::Part {
    PartHeader *header;
    BucketLine *buckets;
    uint8_t *entries;
    uint32_t index;
};

namespace {

std::string errno_text(int e) { return std::strerror(e); }

// The signature of a flow hash: its bits above the part, never 0.  With the
// part it gives the hash back.
inline uint32_t signature(uint32_t hash) noexcept { return (hash >> 8) | 0x80000000u; }
inline uint32_t hash_of(uint32_t sig, uint32_t part) noexcept { return (sig << 8) | part; }

// Idle time is kept in units of 2^30 ns (about a second) in 16 bits.
inline uint16_t idle_units(uint64_t ns) noexcept { return static_cast<uint16_t>(ns >> 30); }
inline void st16(uint16_t *p, uint16_t v) noexcept { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
inline void st8(uint8_t *p, uint8_t v) noexcept { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

inline uint32_t ld32(const uint32_t *p) noexcept { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline void st32_rel(uint32_t *p, uint32_t v) noexcept { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
inline void st32(uint32_t *p, uint32_t v) noexcept { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
inline void bump(uint64_t &counter, uint64_t by = 1) noexcept
{
    __atomic_store_n(&counter, __atomic_load_n(&counter, __ATOMIC_RELAXED) + by, __ATOMIC_RELAXED);
}

// Inline word compares: the library calls were 12% of a lookup's profile.
inline bool same_key(const net::FlowKey &a, const net::FlowKey &b) noexcept
{
    uint64_t x[5], y[5];
    std::memcpy(x, &a, sizeof x);
    std::memcpy(y, &b, sizeof y);
    return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) == 0;
}

// FlowKey::is_canonical(), inline: the lower (address, port) endpoint first,
// addresses compared as big-endian numbers (bytewise).
inline bool canonical_order(const net::FlowKey &k) noexcept
{
    uint64_t s[2], d[2];
    std::memcpy(s, k.src.data(), sizeof s);
    std::memcpy(d, k.dst.data(), sizeof d);
    for (int w = 0; w < 2; ++w) {
        if (s[w] != d[w]) {
            return __builtin_bswap64(s[w]) < __builtin_bswap64(d[w]);
        }
    }
    return k.src_port <= k.dst_port;
}

inline void reverse_in_place(net::FlowKey &k) noexcept
{
    std::swap(k.src, k.dst);
    std::swap(k.src_port, k.dst_port);
}

// Buckets a part needs so that its share of `capacity` fits with room for the
// unevenness of hashing (4 standard deviations) and for two-choice placement.
uint32_t buckets_for(uint64_t capacity)
{
    const double per_part = static_cast<double>(capacity) / flow_parts;
    const double slots = per_part * 1.1 + 4 * std::sqrt(per_part) + 8;
    return static_cast<uint32_t>(std::ceil(slots / flow_bucket_slots));
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
    if (got.capacity != want.capacity || got.buckets_per_part != want.buckets_per_part || got.parts != want.parts) {
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
    return why;
}

std::string utc_stamp()
{
    std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
    return buf;
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
    want.buckets_per_part = buckets_for(spec.capacity);
    want.entry_size = entry_size;
    want.n_areas = static_cast<uint32_t>(spec.areas.size());
    for (std::size_t i = 0; i < spec.areas.size(); ++i) {
        std::snprintf(want.areas[i].nf, sizeof want.areas[i].nf, "%s", spec.areas[i].nf.c_str());
        want.areas[i].size = spec.areas[i].size;
        want.areas[i].offset = spec.areas[i].offset;
    }
    std::snprintf(want.chain, sizeof want.chain, "%s", spec.chain.c_str());
    const std::size_t part_size = sizeof(PartHeader) + std::size_t{want.buckets_per_part} * sizeof(BucketLine) +
                                  std::size_t{want.buckets_per_part} * flow_bucket_slots * entry_size;
    want.file_size = flow_header_size + part_size * flow_parts;

    std::unique_ptr<FlowTable> t(new FlowTable());
    t->_path = file;
    t->_spec = std::move(spec);
    t->_entry_size = entry_size;
    t->_n_buckets = want.buckets_per_part;
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
#ifdef MADV_HUGEPAGE
        if (size >= (64u << 20)) {
            ::madvise(p, size, MADV_HUGEPAGE); // a big table is TLB-bound on 4 KiB pages
        }
#endif
        t->_map = static_cast<uint8_t *>(p);
        t->_map_size = size;
        t->_fd = fd;
        return true;
    };

    int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
        if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
            err = file.string() + ": flow table is in use by another process (flock: " + errno_text(errno) + ")";
            ::close(fd);
            return nullptr;
        }
        struct stat st {};
        ::fstat(fd, &st);
        FlowTableHeader got{};
        std::vector<std::string> why;
        if (static_cast<uint64_t>(st.st_size) < flow_header_size ||
            ::pread(fd, &got, sizeof got, 0) != static_cast<ssize_t>(sizeof got)) {
            why.push_back("no complete header");
        } else {
            why = layout_mismatch(got, want, static_cast<uint64_t>(st.st_size));
        }
        if (why.empty()) {
            if (!map(fd, static_cast<std::size_t>(st.st_size))) {
                ::close(fd);
                return nullptr;
            }
            return t;
        }
        const std::string aside = file.string() + ".bad-" + utc_stamp();
        if (::rename(file.c_str(), aside.c_str()) != 0) {
            err = fmt::format("{}: cannot use it ({}) nor move it aside: {}", file.string(), fmt::join(why, "; "),
                              errno_text(errno));
            ::close(fd);
            return nullptr;
        }
        ::close(fd);
        spdlog::warn("state: {}: flow table not usable ({}); moved it to {} and created a new one", file.string(),
                     fmt::join(why, "; "), aside);
    } else if (errno != ENOENT) {
        err = file.string() + ": open failed: " + errno_text(errno);
        return nullptr;
    }

    // Built under a temporary name and renamed into place: a crash during
    // creation never leaves a half-written header.
    const std::string tmp = file.string() + ".tmp-" + std::to_string(::getpid());
    fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        err = tmp + ": create failed: " + errno_text(errno);
        return nullptr;
    }
    auto fail = [&](const std::string &what, int e) {
        err = tmp + ": " + what + ": " + errno_text(e);
        ::close(fd);
        ::unlink(tmp.c_str());
        return nullptr;
    };
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        return fail("flock", errno);
    }
    uint64_t size = want.file_size;
    if (struct statfs fs{}; ::fstatfs(fd, &fs) == 0 && fs.f_type == HUGETLBFS_MAGIC && fs.f_bsize > 0) {
        const auto page = static_cast<uint64_t>(fs.f_bsize); // hugetlbfs files are whole pages
        size = (size + page - 1) / page * page;
        want.file_size = size;
    }
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
        return fail(fmt::format("ftruncate to {} bytes", size), errno);
    }
    // Reserved now: on a full tmpfs a sparse file takes SIGBUS at the first
    // write to a new page, in the data path.
    if (int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(size)); rc != 0) {
        return fail(fmt::format("reserving {:.1f} MiB for {} flows (free space in {}, or lower the chain's "
                                "flow_capacity)",
                                static_cast<double>(size) / (1 << 20), want.capacity, file.parent_path().string()),
                    rc);
    }
    if (!map(fd, static_cast<std::size_t>(size))) {
        ::close(fd);
        t->_fd = -1;
        ::unlink(tmp.c_str());
        return nullptr;
    }
    want.created_unix_ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
    std::memcpy(t->_map, &want, sizeof want);
    if (::rename(tmp.c_str(), file.c_str()) != 0) {
        err = tmp + ": rename to " + file.string() + ": " + errno_text(errno);
        ::unlink(tmp.c_str());
        return nullptr;
    }
    return t;
}

[[gnu::always_inline]] inline FlowTable::Part FlowTable::part(uint32_t p) const noexcept
{
    uint8_t *base = _map + flow_header_size + _part_size * p;
    auto *buckets = reinterpret_cast<BucketLine *>(base + sizeof(PartHeader));
    return {reinterpret_cast<PartHeader *>(base), buckets, reinterpret_cast<uint8_t *>(buckets + _n_buckets), p};
}

uint8_t *FlowTable::entry_at(uint32_t p, uint32_t bucket, uint32_t slot, uint32_t &hash) const noexcept
{
    const Part pv = part(p);
    const uint32_t sig = ld32(&pv.buckets[bucket].sig[slot]);
    if (sig == 0) {
        return nullptr;
    }
    hash = hash_of(sig, p);
    return pv.entries + (std::size_t{bucket} * flow_bucket_slots + slot) * _entry_size;
}

uint32_t FlowTable::primary_bucket(uint32_t hash) const noexcept
{
    // The 24 bits above the part, scaled to [0, n_buckets) without a division.
    return static_cast<uint32_t>((uint64_t{hash >> 8} * _n_buckets) >> 24);
}

uint32_t FlowTable::alternative_bucket(uint32_t hash, uint32_t primary) const noexcept
{
    if (_n_buckets == 1) {
        return primary;
    }
    const uint32_t mixed = (hash >> 8) * 0x9e3779b1u; // another view of the same bits
    uint32_t alt = static_cast<uint32_t>((uint64_t{mixed >> 8} * _n_buckets) >> 24);
    return alt != primary ? alt : (primary + 1) % _n_buckets;
}

uint8_t *FlowTable::find(const Part &part, uint32_t hash, const net::FlowKey &key, uint32_t primary,
                         uint32_t alternative) const noexcept
{
    const uint32_t sig = signature(hash);
    auto scan = [&](uint32_t b) -> uint8_t * {
        const BucketLine &line = part.buckets[b];
        for (uint32_t s = 0; s < flow_bucket_slots; ++s) {
            if (ld32(&line.sig[s]) == sig) {
                uint8_t *entry = part.entries + (std::size_t{b} * flow_bucket_slots + s) * _entry_size;
                if (same_key(entry_key(entry), key)) {
                    return entry;
                }
            }
        }
        return nullptr;
    };
    if (uint8_t *e = scan(primary)) {
        return e;
    }
    if (alternative != primary && __atomic_load_n(&part.buckets[primary].overflow, __ATOMIC_ACQUIRE) != 0) {
        return scan(alternative);
    }
    return nullptr;
}

uint8_t *FlowTable::insert(const Part &part, uint32_t hash, const net::FlowKey &key, bool initiator_hi,
                           uint32_t primary, uint32_t alternative, uint16_t now) noexcept
{
    auto free_slot = [&](uint32_t b) -> int {
        for (uint32_t s = 0; s < flow_bucket_slots; ++s) {
            if (ld32(&part.buckets[b].sig[s]) == 0) {
                return static_cast<int>(s);
            }
        }
        return -1;
    };
    uint32_t b = primary;
    int s = free_slot(primary);
    if (s < 0 && alternative != primary) {
        b = alternative;
        s = free_slot(alternative);
        if (s >= 0) {
            // Raised before the entry appears: never too low, even after a crash.
            uint32_t &overflow = part.buckets[primary].overflow;
            st32_rel(&overflow, overflow + 1);
        }
    }
    if (s < 0) {
        bump(part.header->counters.refused_full);
        return nullptr;
    }
    const auto slot = static_cast<uint32_t>(s);
    uint8_t *entry = part.entries + (std::size_t{b} * flow_bucket_slots + slot) * _entry_size;
    std::memcpy(entry, &key, sizeof key);
    std::memset(entry + flow_entry_header, 0, _entry_size - flow_entry_header);
    BucketLine &line = part.buckets[b];
    st16(&line.last_seen[slot], now);
    const auto bit = static_cast<uint8_t>(1u << slot);
    st8(&line.initiator, static_cast<uint8_t>(initiator_hi ? line.initiator | bit : line.initiator & ~bit));
    st8(&line.expiring, static_cast<uint8_t>(line.expiring & ~bit));
    st32_rel(&line.sig[slot], signature(hash)); // publishes the entry
    bump(part.header->counters.live);
    bump(part.header->counters.created);
    return entry;
}

void FlowTable::remove(const Part &part, uint32_t bucket, uint32_t slot, ExpireFn fn, void *arg) noexcept
{
    uint8_t *entry = part.entries + (std::size_t{bucket} * flow_bucket_slots + slot) * _entry_size;
    BucketLine &line = part.buckets[bucket];
    const uint32_t hash = hash_of(ld32(&line.sig[slot]), part.index);
    st8(&line.expiring, static_cast<uint8_t>(line.expiring | 1u << slot));
    if (fn != nullptr) {
        fn(arg, entry);
    }
    st32_rel(&line.sig[slot], 0);
    const uint32_t primary = primary_bucket(hash);
    if (primary != bucket) {
        // Lowered after the entry is gone: never too low.
        uint32_t &overflow = part.buckets[primary].overflow;
        st32_rel(&overflow, overflow > 0 ? overflow - 1 : 0);
    }
    FlowPartCounters &c = part.header->counters;
    bump(c.expired);
    __atomic_store_n(&c.live, c.live > 0 ? c.live - 1 : 0, __ATOMIC_RELAXED);
}

void FlowTable::lookup_burst(const serpens_pkt *pkts, uint32_t stride, uint32_t n, uint64_t now_ns, void **entries,
                             uint8_t *flags) noexcept
{
    constexpr uint32_t chunk = 64;
    // Three passes per chunk, so the cache misses of its packets overlap:
    // keys and bucket prefetches, signature scans and entry prefetches, then
    // key checks and creation.
    net::FlowKey keys[chunk];
    bool reverse[chunk];
    uint32_t primary[chunk];
    uint8_t *candidate[chunk];
    const uint16_t now = idle_units(now_ns);
    auto view = [&](uint32_t i) -> const serpens_pkt & {
        return *reinterpret_cast<const serpens_pkt *>(reinterpret_cast<const uint8_t *>(pkts) +
                                                      std::size_t{i} * stride);
    };
    for (uint32_t base = 0; base < n; base += chunk) {
        const uint32_t m = std::min(chunk, n - base);
        for (uint32_t j = 0; j < m; ++j) {
            const serpens_pkt &pkt = view(base + j);
            entries[base + j] = nullptr;
            flags[base + j] = 0;
            if (!net::flow_key_of(pkt, keys[j])) {
                primary[j] = UINT32_MAX;
                continue;
            }
            reverse[j] = !canonical_order(keys[j]);
            if (reverse[j]) {
                reverse_in_place(keys[j]);
            }
            primary[j] = primary_bucket(pkt.flow_hash);
            __builtin_prefetch(&part(pkt.flow_hash % flow_parts).buckets[primary[j]], 0, 3);
        }
        for (uint32_t j = 0; j < m; ++j) {
            candidate[j] = nullptr;
            if (primary[j] == UINT32_MAX) {
                continue;
            }
            const uint32_t hash = view(base + j).flow_hash;
            const BucketLine &line = part(hash % flow_parts).buckets[primary[j]];
            const uint32_t sig = signature(hash);
            for (uint32_t s = 0; s < flow_bucket_slots; ++s) {
                if (ld32(&line.sig[s]) == sig) {
                    candidate[j] = part(hash % flow_parts).entries +
                                   (std::size_t{primary[j]} * flow_bucket_slots + s) * _entry_size;
                    for (uint32_t off = 0; off < _entry_size; off += 64) {
                        __builtin_prefetch(candidate[j] + off, 1, 3); // the NFs' areas too
                    }
                    break;
                }
            }
        }
        for (uint32_t j = 0; j < m; ++j) {
            if (primary[j] == UINT32_MAX) {
                continue;
            }
            const uint32_t hash = view(base + j).flow_hash;
            const Part p = part(hash % flow_parts);
            uint8_t *entry = candidate[j];
            if (entry == nullptr || !same_key(entry_key(entry), keys[j])) {
                // A miss, a signature collision, or a flow an earlier packet of
                // this burst created: the full search (its lines are cached).
                entry = find(p, hash, keys[j], primary[j], alternative_bucket(hash, primary[j]));
            }
            uint8_t f = 0;
            if (entry == nullptr) {
                entry = insert(p, hash, keys[j], reverse[j], primary[j], alternative_bucket(hash, primary[j]), now);
                f = SERPENS_FLOW_NEW;
            }
            if (entry == nullptr) {
                continue;
            }
            // Its bucket line (cached by the search): last use and direction.
            const std::size_t index = static_cast<std::size_t>(entry - p.entries) / _entry_size;
            BucketLine &line = p.buckets[index / flow_bucket_slots];
            const auto slot = static_cast<uint32_t>(index % flow_bucket_slots);
            if (line.last_seen[slot] != now) {
                st16(&line.last_seen[slot], now);
            }
            if (reverse[j] != ((line.initiator >> slot & 1u) != 0)) {
                f |= SERPENS_FLOW_REPLY;
            }
            entries[base + j] = entry;
            flags[base + j] = f;
        }
    }
}

std::size_t FlowTable::expire(const uint64_t *owned, FlowSweepCursor &cursor, uint64_t now_ns, uint32_t max_buckets,
                              ExpireFn fn, void *arg) noexcept
{
    if (_idle_units == 0) {
        return 0;
    }
    const uint16_t now = idle_units(now_ns);
    std::size_t gone = 0;
    // Unowned parts are skipped without counting against the budget, but a
    // call looks at each part at most once.
    for (uint32_t visited = 0; visited < flow_parts && max_buckets > 0; ++visited) {
        const uint32_t p = cursor.part % flow_parts;
        if ((owned[p / 64] >> (p % 64) & 1u) == 0) {
            cursor.part = (p + 1) % flow_parts;
            cursor.bucket = 0;
            continue;
        }
        const Part part_view = part(p);
        while (cursor.bucket < _n_buckets && max_buckets > 0) {
            const uint32_t b = cursor.bucket++;
            --max_buckets;
            for (uint32_t s = 0; s < flow_bucket_slots; ++s) {
                if (ld32(&part_view.buckets[b].sig[s]) == 0) {
                    continue;
                }
                // Idle time modulo 2^16 units: right while below half of that
                // (flow_max_idle_units), and a sweep passes much more often.
                const auto idle = static_cast<uint16_t>(now - part_view.buckets[b].last_seen[s]);
                if (idle > _idle_units) {
                    remove(part_view, b, s, fn, arg);
                    ++gone;
                }
            }
        }
        if (cursor.bucket >= _n_buckets) {
            cursor.part = (p + 1) % flow_parts;
            cursor.bucket = 0;
        } else {
            break; // budget spent inside this part: resume here
        }
    }
    return gone;
}

uint32_t FlowTable::sweep_buckets(uint64_t period_ns) const noexcept
{
    if (_idle_units == 0) {
        return 0;
    }
    const double passes_per_call = static_cast<double>(period_ns) / (static_cast<double>(_spec.idle_timeout_ns) / 2);
    const double buckets = passes_per_call * flow_parts * _n_buckets;
    return static_cast<uint32_t>(std::clamp(std::ceil(buckets), 1.0, 256.0));
}

std::size_t FlowTable::recover(ExpireFn fn, void *arg) noexcept
{
    std::size_t done = 0;
    for (uint32_t p = 0; p < flow_parts; ++p) {
        const Part pv = part(p);
        uint64_t live = 0;
        for (uint32_t b = 0; b < _n_buckets; ++b) {
            for (uint32_t s = 0; s < flow_bucket_slots; ++s) {
                if (ld32(&pv.buckets[b].sig[s]) == 0) {
                    continue;
                }
                if ((pv.buckets[b].expiring >> s & 1u) != 0) {
                    remove(pv, b, s, fn, arg);
                    ++done;
                } else {
                    ++live;
                }
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
    t.capacity = uint64_t{flow_parts} * _n_buckets * flow_bucket_slots;
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
