// Table: segment creation/attach/validation (cold) and the lock-free hash
// table (hot).  See table.h for the protocol and thread-safety summary.

#include "state/table.h"

#include "state/segment_file.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <new>
#include <type_traits>

namespace serpens::state {

namespace {

// Upper bound on one segment; a typo in a capacity should not eat /dev/shm.
constexpr uint64_t max_segment_bytes = 64ull << 30;
// Spins an inserter waits on a neighbour's claim before backing off; only a
// pathological probe-range overlap can make it wait this long.
constexpr uint32_t rescan_spin_limit = 1u << 16;

bool compute_layout(const TableSpec &spec, SegmentHeader &h, std::string &err)
{
    std::memset(&h, 0, sizeof(h));
    TableKind kind = kind_of(spec.flags);
    uint32_t kw = words_of(spec.key_size);
    uint32_t vw = words_of(spec.value_size);
    uint32_t cells = is_global_write(kind) ? 1 + spec.max_instances : 0;
    uint64_t payload = cells ? uint64_t{cells} * (8 + 16ull * vw) : 16ull * vw;
    uint64_t slot = sizeof(SlotHeader) + 8ull * kw + payload;
    if (slot <= 64) {
        // Keep small slots inside one cache line.
        uint64_t p = 16;
        while (p < slot) {
            p *= 2;
        }
        slot = p;
    } else {
        slot = (slot + 63) & ~uint64_t{63};
    }
    if (slot > UINT32_MAX) {
        err = "slot of " + std::to_string(slot) + " bytes is too large";
        return false;
    }
    // Linear probing stays short at <= 50% load for small slots; big slots
    // trade probe length for memory at 75%.
    uint64_t n = slot <= 128 ? spec.capacity * 2 : spec.capacity + spec.capacity / 3;
    n = std::max<uint64_t>(n, spec.capacity + 8);
    uint64_t bytes = header_size + n * slot;
    if (n > max_segment_bytes / slot || bytes > max_segment_bytes) {
        err = "capacity " + std::to_string(spec.capacity) + " needs more than " +
              std::to_string(max_segment_bytes >> 30) + " GiB";
        return false;
    }
    h.magic = segment_magic;
    h.version = layout_version;
    h.header_size = header_size;
    h.flags = spec.flags;
    h.key_size = spec.key_size;
    h.value_size = spec.value_size;
    h.max_instances = cells ? spec.max_instances : 0;
    h.capacity = spec.capacity;
    h.n_slots = n;
    h.slot_size = static_cast<uint32_t>(slot);
    h.hash_id = hash_id_v1;
    h.file_size = bytes;
    std::strncpy(h.name, spec.name.c_str(), table_name_max);
    h.layout_checksum = 0;
    return true;
}

// Reasons an existing header cannot be used for `want` (empty when it can).
std::vector<std::string> header_mismatch(const SegmentHeader &got, const SegmentHeader *want, uint64_t actual_size)
{
    std::vector<std::string> why;
    if (got.magic != segment_magic) {
        why.push_back("bad magic (not a serpens state segment)");
        return why;
    }
    if (got.version != layout_version) {
        why.push_back("layout version " + std::to_string(got.version) + ", this host reads " +
                      std::to_string(layout_version));
        return why;
    }
    if (got.header_size != header_size) {
        why.push_back("header size " + std::to_string(got.header_size));
    }
    if (layout_checksum(got) != got.layout_checksum) {
        why.push_back("layout checksum mismatch (header corrupted)");
        return why;
    }
    if (got.file_size != actual_size) {
        why.push_back("file is " + std::to_string(actual_size) + " bytes, header says " +
                      std::to_string(got.file_size));
    }
    if (got.hash_id != hash_id_v1) {
        why.push_back("hash function " + std::to_string(got.hash_id));
    }
    if (want != nullptr) {
        auto cmp = [&](const char *what, uint64_t g, uint64_t w) {
            if (g != w) {
                why.push_back(std::string(what) + " " + std::to_string(g) + " on disk, " + std::to_string(w) +
                              " requested");
            }
        };
        if (!flags_compatible(got.flags, want->flags)) {
            why.push_back("flags " + flags_to_string(got.flags) + " on disk, " + flags_to_string(want->flags) +
                          " requested");
        }
        cmp("key_size", got.key_size, want->key_size);
        cmp("value_size", got.value_size, want->value_size);
        cmp("capacity", got.capacity, want->capacity);
        cmp("max_instances", got.max_instances, want->max_instances);
        cmp("n_slots", got.n_slots, want->n_slots);
        cmp("slot_size", got.slot_size, want->slot_size);
    }
    return why;
}

} // namespace

const char *kind_name(TableKind kind) noexcept
{
    switch (kind) {
    case TableKind::per_flow:
        return "per-flow";
    case TableKind::global_read:
        return "global/read";
    case TableKind::release:
        return "global/write release";
    case TableKind::eventual:
        return "global/write eventual";
    }
    return "?";
}

std::string flags_to_string(uint32_t flags)
{
    static const std::pair<uint32_t, const char *> names[] = {
        {SERPENS_STATE_PER_FLOW, "PER_FLOW"},   {SERPENS_STATE_GLOBAL, "GLOBAL"},
        {SERPENS_STATE_READ, "READ"},           {SERPENS_STATE_WRITE, "WRITE"},
        {SERPENS_STATE_RELEASE, "RELEASE"},     {SERPENS_STATE_EVENTUAL, "EVENTUAL"},
        {SERPENS_STATE_NF_EXPIRY, "NF_EXPIRY"},
    };
    std::string s;
    uint32_t rest = flags;
    for (auto &[bit, name] : names) {
        if (flags & bit) {
            s += s.empty() ? "" : "|";
            s += name;
            rest &= ~bit;
        }
    }
    if (rest != 0) {
        char buf[16];
        std::snprintf(buf, sizeof(buf), "0x%x", rest);
        s += s.empty() ? "" : "|";
        s += buf;
    }
    return s.empty() ? "0" : s;
}

std::string validate_spec(const TableSpec &spec)
{
    const uint32_t known = SERPENS_STATE_PER_FLOW | SERPENS_STATE_GLOBAL | SERPENS_STATE_READ | SERPENS_STATE_WRITE |
                           SERPENS_STATE_RELEASE | SERPENS_STATE_EVENTUAL | SERPENS_STATE_NF_EXPIRY;
    uint32_t f = spec.flags;
    if (spec.name.empty()) {
        return "table name is empty";
    }
    if (spec.name.size() > table_name_max) {
        return "table name longer than " + std::to_string(table_name_max) + " bytes";
    }
    if (f & ~known) {
        return "unknown flag bits in " + flags_to_string(f);
    }
    if (!(f & SERPENS_STATE_PER_FLOW) == !(f & SERPENS_STATE_GLOBAL)) {
        return "flags " + flags_to_string(f) + ": need exactly one of PER_FLOW, GLOBAL";
    }
    if (!(f & SERPENS_STATE_READ) == !(f & SERPENS_STATE_WRITE)) {
        return "flags " + flags_to_string(f) + ": need exactly one of READ, WRITE";
    }
    bool gw = (f & SERPENS_STATE_GLOBAL) && (f & SERPENS_STATE_WRITE);
    bool has_cons = (f & (SERPENS_STATE_RELEASE | SERPENS_STATE_EVENTUAL)) != 0;
    if (gw && !(f & SERPENS_STATE_RELEASE) == !(f & SERPENS_STATE_EVENTUAL)) {
        return "flags " + flags_to_string(f) + ": GLOBAL|WRITE needs exactly one of RELEASE, EVENTUAL";
    }
    if (!gw && has_cons) {
        return "flags " + flags_to_string(f) + ": RELEASE/EVENTUAL only apply to GLOBAL|WRITE";
    }
    if ((f & SERPENS_STATE_NF_EXPIRY) && !(f & SERPENS_STATE_PER_FLOW)) {
        return "flags " + flags_to_string(f) + ": NF_EXPIRY only applies to PER_FLOW";
    }
    if (spec.key_size == 0 || spec.key_size > max_key_size) {
        return "key_size " + std::to_string(spec.key_size) + " outside 1.." + std::to_string(max_key_size);
    }
    if (spec.value_size == 0 || spec.value_size > max_value_size) {
        return "value_size " + std::to_string(spec.value_size) + " outside 1.." + std::to_string(max_value_size);
    }
    if (spec.capacity == 0) {
        return "capacity is 0";
    }
    if (gw && (spec.max_instances == 0 || spec.max_instances > max_instances_limit)) {
        return "max_instances " + std::to_string(spec.max_instances) + " outside 1.." +
               std::to_string(max_instances_limit);
    }
    return {};
}

TableKind kind_of(uint32_t flags) noexcept
{
    if (flags & SERPENS_STATE_PER_FLOW) {
        return TableKind::per_flow;
    }
    if (flags & SERPENS_STATE_READ) {
        return TableKind::global_read;
    }
    return (flags & SERPENS_STATE_RELEASE) ? TableKind::release : TableKind::eventual;
}

uint32_t g_coarse_now = 0;

void set_coarse_now(uint64_t now_ns) noexcept
{
    __atomic_store_n(&g_coarse_now, coarse_units(now_ns), __ATOMIC_RELAXED);
}

// ---------------------------------------------------------------------------
// Cold path: files and mappings
// ---------------------------------------------------------------------------

Table::~Table()
{
    if (_map != nullptr) {
        ::munmap(_map, _map_size);
    }
    if (_fd >= 0) {
        ::close(_fd); // also drops the flock
    }
}

bool Table::map(int fd, std::size_t size, bool ro, std::string &err)
{
    void *p = ::mmap(nullptr, size, ro ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        err = _path.string() + ": mmap of " + std::to_string(size) + " bytes failed: " + errno_text(errno);
        return false;
    }
    if (!ro) {
        ready_for_data_path(p, size);
    }
    _map = p;
    _map_size = size;
    _fd = fd;
    _ro = ro;
    _h = static_cast<SegmentHeader *>(p);
    _slots = static_cast<uint8_t *>(p) + header_size;
    return true;
}

void Table::init_from_header()
{
    _kind = kind_of(_h->flags);
    set_nf_expiry((_h->flags & SERPENS_STATE_NF_EXPIRY) != 0);
    _key_size = _h->key_size;
    _value_size = _h->value_size;
    _kw = words_of(_key_size);
    _vw = words_of(_value_size);
    _slot_size = _h->slot_size;
    _n_slots = _h->n_slots;
    _capacity = _h->capacity;
    _cells = is_global_write(_kind) ? 1 + _h->max_instances : 0;
    pick_shape();
    _name.assign(_h->name, strnlen(_h->name, sizeof(_h->name)));
}

std::unique_ptr<Table> Table::open(const std::filesystem::path &file, const TableSpec &spec, std::string &err)
{
    if (auto why = validate_spec(spec); !why.empty()) {
        err = "table '" + spec.name + "': " + why;
        return nullptr;
    }
    SegmentHeader want;
    if (!compute_layout(spec, want, err)) {
        err = "table '" + spec.name + "': " + err;
        return nullptr;
    }
    std::unique_ptr<Table> t(new Table());
    t->_path = file;

    SegmentHeader got{};
    uint64_t size = 0;
    const SegmentFit fits = [&](uint64_t file_size) {
        want.layout_checksum = layout_checksum(want);
        return header_mismatch(got, &want, file_size);
    };
    int fd =
        open_existing(file, "segment of table '" + spec.name + "'", &got, sizeof got, header_size, fits, size, err);
    if (fd >= 0) {
        if (!t->map(fd, size, false, err)) {
            ::close(fd);
            return nullptr;
        }
        t->init_from_header();
        t->set_nf_expiry((spec.flags & SERPENS_STATE_NF_EXPIRY) != 0);
        t->repair();
        fetch_add(&t->_h->attaches, 1);
        return t;
    }
    if (!err.empty()) {
        return nullptr;
    }

    const std::string tmp = creation_name(file);
    // Reserved now, so memory that is not there is an error from
    // create_table that says what to do.
    fd = create_reserved(tmp, want.file_size,
                         "for the table (free space in " + file.parent_path().string() + ", or lower its capacity)",
                         err);
    if (fd < 0) {
        return nullptr;
    }
    if (!t->map(fd, want.file_size, false, err)) {
        ::close(fd);
        ::unlink(tmp.c_str());
        return nullptr;
    }
    want.created_unix_ns = unix_now_ns();
    want.layout_checksum = layout_checksum(want);
    std::memcpy(t->_h, &want, sizeof(want));
    t->_h->attaches = 1;
    if (!publish(tmp, file, err)) {
        return nullptr;
    }
    t->init_from_header();
    return t;
}

std::unique_ptr<Table> Table::open_readonly(const std::filesystem::path &file, std::string &err)
{
    std::unique_ptr<Table> t(new Table());
    t->_path = file;
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = file.string() + ": open failed: " + errno_text(errno);
        return nullptr;
    }
    SegmentHeader got{};
    uint64_t size = 0;
    if (std::string unread = read_header(fd, &got, sizeof(got), header_size, size); !unread.empty()) {
        err = file.string() + ": " + unread;
        ::close(fd);
        return nullptr;
    }
    auto why = header_mismatch(got, nullptr, size);
    if (why.empty()) {
        TableSpec spec{std::string(got.name, strnlen(got.name, sizeof(got.name))),
                       got.flags,
                       got.key_size,
                       got.value_size,
                       got.capacity,
                       got.max_instances ? got.max_instances : 16};
        SegmentHeader want;
        std::string e2;
        if (!validate_spec(spec).empty() || !compute_layout(spec, want, e2) || want.n_slots != got.n_slots ||
            want.slot_size != got.slot_size) {
            why.push_back("header fields are inconsistent (" + validate_spec(spec) + ")");
        }
    }
    if (!why.empty()) {
        err = file.string() + ": " + why.front();
        ::close(fd);
        return nullptr;
    }
    if (!t->map(fd, size, true, err)) {
        ::close(fd);
        return nullptr;
    }
    t->init_from_header();
    t->_sealed = true; // puts and deletes are refused on a read-only map
    return t;
}

// Attach-time recovery: the only process using the segment just died, so a
// set W bit is a write that never finished.
void Table::repair()
{
    uint64_t live = 0, repaired = 0, discarded = 0;
    for (uint64_t i = 0; i < _n_slots; ++i) {
        SlotHeader *s = slot(i);
        uint64_t c = s->ctl;
        if (c & ctl_w) {
            if (ctl_state(c) == slot_live) {
                // Update in flight: the active buffer still holds the old value.
                s->ctl = c & ~ctl_w;
                ++repaired;
            } else {
                // Insert (or tombstone cleanup) in flight: key/value may be torn.
                s->ctl = ctl_next(c, slot_dead, ctl_buf(c));
                ++discarded;
            }
            c = s->ctl;
        }
        for (uint32_t k = 0; k < _cells; ++k) {
            uint64_t *cp = cell(s, k);
            if (*cp & ctl_w) {
                *cp &= ~ctl_w;
                ++repaired;
            }
        }
        live += ctl_state(c) == slot_live;
    }
    _h->live = live;
    _h->torn_repaired += repaired;
    _h->torn_discarded += discarded;
    if (repaired != 0 || discarded != 0) {
        spdlog::warn("state: {}: recovered from an interrupted run: {} in-flight update(s) rolled back to the "
                     "previous value, {} in-flight insert(s) discarded",
                     _path.string(), repaired, discarded);
    }
}

// ---------------------------------------------------------------------------
// Hot path
// ---------------------------------------------------------------------------

// One slot of k's probe sequence: a hit (value copied), the end of the
// sequence (an empty slot: a miss), or another key's slot (go on).
template<uint32_t KW, uint32_t VW>
__attribute__((always_inline)) inline Table::Step Table::probe_slot(const KeyBuf &k, std::size_t i, void *out) noexcept
{
    SlotHeader *s = slot(i);
    for (;;) {
        const uint64_t c1 = ld_acq(&s->ctl);
        const uint32_t st = ctl_state(c1);
        if (st == slot_empty) {
            return Step::miss;
        }
        if (!holds<KW>(s, c1, k)) {
            return Step::next;
        }
        words_out(vbuf<KW, VW>(s, ctl_buf(c1)), out, vbytes<VW>());
        if (ctl_unchanged(&s->ctl, c1)) {
            touch(s);
            return Step::hit;
        }
        // changed under us: read this slot again
    }
}

// k's probe sequence from its home slot + `skip` on.
template<uint32_t KW, uint32_t VW>
__attribute__((always_inline)) inline int Table::lookup(const KeyBuf &k, void *out, uint64_t skip) noexcept
{
    std::size_t i = home(k.h);
    for (uint64_t n = 0; n < skip; ++n) {
        i = next(i);
    }
    // A quarter of the keys sit past home at 50% load (measured, 1M keys):
    // start fetching the next line too so a second probe does not pay a
    // second miss.
    __builtin_prefetch(slot(next(i)));
    for (uint64_t n = skip; n < _n_slots; ++n, i = next(i)) {
        const Step step = probe_slot<KW, VW>(k, i, out);
        if (step != Step::next) {
            return step == Step::hit ? SERPENS_OK : SERPENS_ENOENT;
        }
    }
    return SERPENS_ENOENT;
}

template<uint32_t KW, uint32_t VW>
int Table::get_as(const void *key, void *value_out) noexcept
{
    KeyBuf k;
    load_key<KW>(k, key);
    return lookup<KW, VW>(k, value_out);
}

// The public entry points jump to the code compiled for this table's shape
// (pick_shape): one well-predicted indirect call, the same target for every
// call on a table.
int Table::get(const void *key, void *value_out) noexcept { return (this->*_get)(key, value_out); }

int Table::scan(uint64_t *cursor, uint32_t max_slots, void *key_out, void *value_out) noexcept
{
    if (_cells != 0) {
        return SERPENS_ENOTSUP;
    }
    std::size_t i = static_cast<std::size_t>(*cursor % _n_slots);
    const std::size_t n = std::min<std::size_t>(max_slots, _n_slots);
    for (std::size_t k = 0; k < n; ++k, i = next(i)) {
        SlotHeader *s = slot(i);
        __builtin_prefetch(slot(next(next(i))));
        for (;;) {
            const uint64_t c1 = ld_acq(&s->ctl);
            if (ctl_state(c1) != slot_live) {
                break;
            }
            words_out(key_words(s), key_out, _key_size);
            words_out(vbuf(s, ctl_buf(c1)), value_out, _value_size);
            if (!ctl_unchanged(&s->ctl, c1)) {
                continue; // changed under us: read this slot again
            }
            *cursor = next(i);
            return SERPENS_OK;
        }
    }
    *cursor = i;
    return SERPENS_ENOENT;
}

template<uint32_t KW, uint32_t VW>
uint64_t Table::get_bulk_as(const void *keys, uint32_t n, void *values) noexcept
{
    KeyBuf kb[max_bulk];
    auto *vp = static_cast<uint8_t *>(values);
    const std::size_t vs = vbytes<VW>();
    // In stages, so the cache misses of all n keys overlap at every step of
    // their probe sequences rather than only at the first: hash every key and
    // fetch its home slot; then settle the keys found at home (or missing)
    // while fetching the next slot of the others; then finish those.  A
    // quarter of the keys are displaced at 50% load, and each displaced one
    // used to cost a full serial miss.
    n = load_keys<KW>(keys, n, kb, [&](const KeyBuf &k) { __builtin_prefetch(slot(home(k.h))); });
    uint64_t mask = 0, displaced = 0;
    for (uint32_t i = 0; i < n; ++i) {
        const std::size_t h = home(kb[i].h);
        const Step step = probe_slot<KW, VW>(kb[i], h, vp + i * vs);
        if (step == Step::hit) {
            mask |= 1ull << i;
        } else if (step == Step::next) {
            displaced |= 1ull << i;
            __builtin_prefetch(slot(next(h)));
        }
    }
    for (uint64_t d = displaced; d != 0; d &= d - 1) {
        const auto i = static_cast<uint32_t>(__builtin_ctzll(d));
        if (lookup<KW, VW>(kb[i], vp + i * vs, 1) == SERPENS_OK) {
            mask |= 1ull << i;
        }
    }
    return mask;
}

uint64_t Table::get_bulk(const void *keys, uint32_t n, void *values) noexcept
{
    return (this->*_get_bulk)(keys, n, values);
}

template<uint32_t KW, uint32_t VW>
void Table::use_shape() noexcept
{
    _get = &Table::get_as<KW, VW>;
    _get_bulk = &Table::get_bulk_as<KW, VW>;
    _put = &Table::put_as<KW, VW>;
    _update_bulk = &Table::update_bulk_as<KW, VW>;
    _cell_add_bulk = &Table::cell_add_bulk_as<KW, VW>;
}

// Keys of whole words (up to 64 bytes: all keys) get straight-line code,
// with values of one to four whole words too, other values copied by the
// general loop; other keys get the general loops.
void Table::pick_shape() noexcept
{
    use_shape<0, 0>();
    if (_key_size % 8 != 0) {
        return;
    }
    const bool small_value = _value_size % 8 == 0 && _vw <= 4;
    auto pick = [&]<uint32_t KW>(std::integral_constant<uint32_t, KW>) {
        switch (small_value ? _vw : 0) {
        case 1:
            use_shape<KW, 1>();
            break;
        case 2:
            use_shape<KW, 2>();
            break;
        case 3:
            use_shape<KW, 3>();
            break;
        case 4:
            use_shape<KW, 4>();
            break;
        default:
            use_shape<KW, 0>();
            break;
        }
    };
    switch (_kw) {
    case 1:
        pick(std::integral_constant<uint32_t, 1>{});
        break;
    case 2:
        pick(std::integral_constant<uint32_t, 2>{});
        break;
    case 3:
        pick(std::integral_constant<uint32_t, 3>{});
        break;
    case 4:
        pick(std::integral_constant<uint32_t, 4>{});
        break;
    case 5:
        pick(std::integral_constant<uint32_t, 5>{});
        break;
    case 6:
        pick(std::integral_constant<uint32_t, 6>{});
        break;
    case 7:
        pick(std::integral_constant<uint32_t, 7>{});
        break;
    case 8:
        pick(std::integral_constant<uint32_t, 8>{});
        break;
    default:
        break;
    }
}

template<uint32_t KW>
Table::Probe Table::probe_for_write(const KeyBuf &k) noexcept
{
    const uint32_t h32 = static_cast<uint32_t>(k.h);
    const bool gw = _cells != 0;
    Probe p;
    std::size_t i = home(k.h);
    for (uint64_t n = 0; n < _n_slots;) {
        SlotHeader *s = slot(i);
        uint64_t c = ld_acq(&s->ctl);
        uint32_t st = ctl_state(c);
        if ((c & ctl_w) && st != slot_live) {
            // A claim or cleanup is in flight here; its outcome decides
            // whether our key is already present, so wait for it.
            cpu_relax();
            continue;
        }
        if (st == slot_empty) {
            if (p.free == npos) {
                p.free = i;
                p.free_ctl = c;
            }
            return p;
        }
        bool same = ld_rlx(&s->hash) == h32 && key_eq<KW>(s, k.w);
        if (same && st == slot_live) {
            p.found = i;
            p.found_ctl = c;
            return p;
        }
        // Tombstones are reused by any key in flow tables; global/write
        // tables only revive a key in its own tombstone (late cell writers
        // may still hold its slot index).
        if (st == slot_dead && p.free == npos && (!gw || same)) {
            p.free = i;
            p.free_ctl = c;
        }
        ++n;
        i = next(i);
    }
    return p;
}

void Table::reset_cells(SlotHeader *s) noexcept
{
    for (uint32_t k = 0; k < _cells; ++k) {
        uint64_t *cp = cell(s, k);
        uint64_t c;
        for (;;) {
            c = ld_acq(cp);
            if (!(c & ctl_w) && cas(cp, c, c | ctl_w)) {
                break;
            }
            cpu_relax();
        }
        uint32_t nb = ctl_buf(c) ^ 1u;
        uint64_t *b = cbuf(cp, nb);
        for (uint32_t w = 0; w < _vw; ++w) {
            st_rlx(b + w, 0);
        }
        st_rel(cp, ctl_next(c, cell_zero, nb));
    }
}

int Table::insert(const KeyBuf &k, const Probe &p, const void *value) noexcept
{
    if (p.free == npos) {
        fetch_add(&_h->refused_full, 1);
        return SERPENS_ENOSPC;
    }
    if (fetch_add(&_h->live, 1) >= _capacity) {
        fetch_sub(&_h->live, 1);
        fetch_add(&_h->refused_full, 1);
        return SERPENS_ENOSPC;
    }
    SlotHeader *s = slot(p.free);
    if (!cas(&s->ctl, p.free_ctl, p.free_ctl | ctl_w)) {
        fetch_sub(&_h->live, 1);
        return err_again;
    }
    // Re-check the probe range now that we own the slot: a concurrent
    // inserter of the same key may have claimed an earlier slot, or a
    // tombstone cleanup may have cut the chain.  Whoever sits earlier wins.
    const uint32_t h32 = static_cast<uint32_t>(k.h);
    for (std::size_t j = home(k.h); j != p.free; j = next(j)) {
        SlotHeader *o = slot(j);
        uint64_t c;
        uint32_t spins = 0;
        for (;;) {
            c = ld_acq(&o->ctl);
            if (!((c & ctl_w) && ctl_state(c) != slot_live)) {
                break;
            }
            if (++spins > rescan_spin_limit) {
                st_rel(&s->ctl, p.free_ctl);
                fetch_sub(&_h->live, 1);
                return err_again;
            }
            cpu_relax();
        }
        uint32_t st = ctl_state(c);
        if (st == slot_empty || holds(o, c, k)) {
            st_rel(&s->ctl, p.free_ctl);
            fetch_sub(&_h->live, 1);
            return err_again;
        }
    }
    uint64_t *kw = key_words(s);
    for (uint32_t w = 0; w < _kw; ++w) {
        st_rlx(kw + w, k.w[w]);
    }
    st_rlx(&s->hash, h32);
    st_rlx(&s->access, coarse_now());
    if (_cells != 0) {
        reset_cells(s);
    } else {
        words_in(vbuf(s, 0), value, _value_size);
    }
    st_rel(&s->ctl, ctl_next(p.free_ctl, slot_live, 0));
    return SERPENS_OK;
}

int Table::put_sealed(const KeyBuf &k, const void *value) noexcept
{
    // Identical re-puts are fine (each instance's init may load the same
    // data).  Not a hot path: a sealed table is not written after init.
    if (_copied.load(std::memory_order_relaxed)) {
        return SERPENS_OK;
    }
    alignas(8) uint8_t small[512];
    std::unique_ptr<uint8_t[]> big;
    uint8_t *cur = small;
    if (_value_size > sizeof(small)) {
        big.reset(new (std::nothrow) uint8_t[_value_size]);
        if (!big) {
            return SERPENS_ENOMEM;
        }
        cur = big.get();
    }
    if (lookup(k, cur) == SERPENS_OK && std::memcmp(cur, value, _value_size) == 0) {
        return SERPENS_OK;
    }
    return SERPENS_ENOTSUP;
}

template<uint32_t KW, uint32_t VW, class Fill>
__attribute__((always_inline)) inline int Table::upsert(const KeyBuf &k, const void *fresh, Fill &&fill) noexcept
{
    for (;;) {
        Probe p = probe_for_write<KW>(k);
        if (p.found == npos) {
            const int r = insert(k, p, fresh);
            if (r != err_again) {
                return r;
            }
            continue;
        }
        SlotHeader *s = slot(p.found);
        const uint64_t c = p.found_ctl;
        if ((c & ctl_w) || !cas(&s->ctl, c, c | ctl_w)) {
            cpu_relax(); // another writer of this key; look again
            continue;
        }
        const uint32_t nb = ctl_buf(c) ^ 1u;
        fill(vbuf<KW, VW>(s, ctl_buf(c)), vbuf<KW, VW>(s, nb));
        touch(s);
        st_rel(&s->ctl, ctl_next(c, slot_live, nb));
        return SERPENS_OK;
    }
}

template<uint32_t KW, uint32_t VW>
int Table::put_as(const void *key, const void *value) noexcept
{
    KeyBuf k;
    load_key<KW>(k, key);
    if (_sealed) {
        return put_sealed(k, value);
    }
    return upsert<KW, VW>(k, value, [&](const uint64_t *, uint64_t *dst) { words_in(dst, value, vbytes<VW>()); });
}

int Table::put(const void *key, const void *value) noexcept { return (this->*_put)(key, value); }

template<uint32_t KW, uint32_t VW>
uint64_t Table::update_bulk_as(const void *keys, uint32_t n, const uint64_t *rows, const uint8_t *ops,
                               void *out) noexcept
{
    KeyBuf kb[max_bulk];
    // Hash every key and fetch its home slot first, so the n misses overlap.
    n = load_keys<KW>(keys, n, kb, [&](const KeyBuf &k) { __builtin_prefetch(slot(home(k.h)), 1); });
    const uint32_t vw = vwords<VW>();
    uint64_t mask = 0;
    for (uint32_t i = 0; i < n; ++i) {
        const uint64_t *row = rows + static_cast<std::size_t>(i) * vw;
        uint64_t *res = out != nullptr ? static_cast<uint64_t *>(out) + static_cast<std::size_t>(i) * vw : nullptr;
        const int r = upsert<KW, VW>(kb[i], row, [&](const uint64_t *src, uint64_t *dst) {
            for (uint32_t w = 0; w < vw; ++w) {
                const uint64_t old = ld_rlx(src + w);
                const uint64_t v = ops[w] == SERPENS_WORD_ADD   ? old + row[w]
                                   : ops[w] == SERPENS_WORD_SET ? row[w]
                                                                : old;
                st_rlx(dst + w, v);
                if (res != nullptr) {
                    res[w] = v;
                }
            }
            res = nullptr; // written: not the inserted row
        });
        if (r == SERPENS_OK) {
            mask |= 1ull << i;
            if (res != nullptr) { // inserted: the value is the row
                std::memcpy(res, row, 8ull * vw);
            }
        }
    }
    return mask;
}

uint64_t Table::update_bulk(const void *keys, uint32_t n, const uint64_t *rows, const uint8_t *ops, void *out) noexcept
{
    if (_kind != TableKind::per_flow || _ro || _value_size % 8 != 0 || n == 0) {
        return 0;
    }
    return (this->*_update_bulk)(keys, n, rows, ops, out);
}

int Table::del(const void *key) noexcept
{
    if (_sealed) {
        return SERPENS_ENOTSUP;
    }
    KeyBuf k;
    load_key(k, key);
    return del_key(k);
}

int Table::put_despite_seal(const void *key, const void *value) noexcept
{
    if (_ro) {
        return SERPENS_ENOTSUP;
    }
    _copied.store(true, std::memory_order_relaxed);
    KeyBuf k;
    load_key(k, key);
    return upsert<0, 0>(k, value, [&](const uint64_t *, uint64_t *dst) { words_in(dst, value, vbytes()); });
}

int Table::del_despite_seal(const void *key) noexcept
{
    if (_ro) {
        return SERPENS_ENOTSUP;
    }
    _copied.store(true, std::memory_order_relaxed);
    KeyBuf k;
    load_key(k, key);
    return del_key(k);
}

int Table::del_key(const KeyBuf &k) noexcept
{
    for (;;) {
        Probe p = probe_for_write(k);
        if (p.found == npos) {
            return SERPENS_ENOENT;
        }
        SlotHeader *s = slot(p.found);
        uint64_t c = p.found_ctl;
        if (!(c & ctl_w) && cas(&s->ctl, c, ctl_next(c, slot_dead, ctl_buf(c)))) {
            fetch_sub(&_h->live, 1);
            return SERPENS_OK;
        }
        cpu_relax();
    }
}

uint64_t Table::read_cell(uint64_t *cp, void *out) const noexcept
{
    for (;;) {
        uint64_t c1 = ld_acq(cp);
        words_out(cbuf(cp, ctl_buf(c1)), out, _value_size);
        if (ctl_unchanged(cp, c1)) {
            return c1 & ~ctl_w;
        }
    }
}

int Table::cell_get(const void *key, uint32_t cellno, void *out, VersionCache *vc) noexcept
{
    KeyBuf k;
    load_key(k, key);
    std::size_t i = home(k.h);
    for (uint64_t n = 0; n < _n_slots;) {
        SlotHeader *s = slot(i);
        uint64_t c1 = ld_acq(&s->ctl);
        uint32_t st = ctl_state(c1);
        if (st == slot_empty) {
            if (vc != nullptr) {
                vc->absent_hash = k.h | 1u;
            }
            return SERPENS_ENOENT;
        }
        if (holds(s, c1, k)) {
            uint64_t v = read_cell(cell(s, cellno), out);
            if (!ctl_unchanged(&s->ctl, c1)) {
                continue;
            }
            if (vc != nullptr) {
                vc->remember(i, v);
            }
            return SERPENS_OK;
        }
        ++n;
        i = next(i);
    }
    return SERPENS_ENOENT;
}

int Table::cell_put(const void *key, uint32_t cellno, const void *value, VersionCache *vc) noexcept
{
    KeyBuf k;
    load_key(k, key);
    for (;;) {
        Probe p = probe_for_write(k);
        if (p.found == npos) {
            int r = insert(k, p, nullptr);
            if (r != SERPENS_OK && r != err_again) {
                return r;
            }
            continue;
        }
        uint64_t *cp = cell(slot(p.found), cellno);
        uint64_t expected = vc != nullptr ? vc->find(p.found) : VersionCache::none;
        if (expected == VersionCache::none) {
            // No version read to protect: write over what the cell holds now.
            expected = ld_acq(cp);
            if (expected & ctl_w) {
                cpu_relax();
                continue;
            }
            // Unless it was read as absent: the value was computed from zero,
            // so it may only replace a cell that still holds zero.  Whoever
            // created the key (another instance, or this put a moment ago), a
            // merge may since have copied the global value into our cell, and
            // writing over it would take our delta below the base: a lost
            // increment in mon's e2e test, and 554 lost in state-eventual's
            // under ASan when this put was descheduled between its insert and
            // its write.  The CAS below fails if the cell moves on now.
            if (vc != nullptr && vc->absent_hash == (k.h | 1u) && ctl_state(expected) != cell_zero) {
                vc->absent_hash = 0;
                return err_again; // read again
            }
        }
        if (!cas(cp, expected, expected | ctl_w)) {
            const uint64_t now = ld_acq(cp);
            if ((now & ctl_w) != 0 && (now & ~ctl_w) == expected) {
                // The state manager holds the cell (merge/split) and has not
                // changed it yet: wait for it rather than make the NF retry
                // against a lock it cannot outwait (mon gave up after 4
                // EAGAINs and lost an increment on a loaded machine).
                cpu_relax();
                continue;
            }
            return err_again; // the cell moved on since this instance read it
        }
        uint32_t nb = ctl_buf(expected) ^ 1u;
        words_in(cbuf(cp, nb), value, _value_size);
        uint64_t nc = ctl_next(expected, 0, nb);
        st_rel(cp, nc);
        if (vc != nullptr) {
            vc->remember(p.found, nc);
            if (vc->absent_hash == (k.h | 1u)) {
                vc->absent_hash = 0; // no longer absent to this instance
            }
        }
        return SERPENS_OK;
    }
}

template<uint32_t KW, uint32_t VW>
int Table::cell_add(const KeyBuf &k, uint32_t cellno, const uint64_t *delta) noexcept
{
    for (;;) {
        // Lock-free find first (the common case: the key exists).
        std::size_t found = find_live<KW>(k);
        if (found == npos) {
            Probe p = probe_for_write(k);
            if (p.found == npos) {
                int r = insert(k, p, nullptr);
                if (r != SERPENS_OK && r != err_again) {
                    return r;
                }
                continue; // look it up again (ours, or a racing creator's)
            }
            found = p.found;
        }
        uint64_t *cp = cell(slot(found), cellno);
        uint64_t c = ld_acq(cp);
        if ((c & ctl_w) || !cas(cp, c, c | ctl_w)) {
            cpu_relax(); // the state manager (or a merge) holds the cell: wait
            continue;
        }
        add_to_held_cell<VW>(cp, c, delta);
        return SERPENS_OK;
    }
}

template<uint32_t KW, uint32_t VW>
bool Table::cell_add_at(const KeyBuf &k, std::size_t i, uint32_t cellno, const uint64_t *delta) noexcept
{
    SlotHeader *s = slot(i);
    uint64_t *cp = cell(s, cellno);
    const uint64_t c = ld_acq(cp);
    if ((c & ctl_w) || !cas(cp, c, c | ctl_w)) {
        return false;
    }
    // Found a little earlier: the slot may have been emptied and reused since.
    if (!holds<KW>(s, ld_acq(&s->ctl), k)) {
        st_rel(cp, c);
        return false;
    }
    add_to_held_cell<VW>(cp, c, delta);
    return true;
}

template<uint32_t VW>
void Table::add_to_held_cell(uint64_t *cp, uint64_t c, const uint64_t *delta) noexcept
{
    // Into the other buffer, then flip to it and drop the write bit: a
    // reader (or a crash) sees the old sums or the new ones.
    const uint64_t *src = cbuf<VW>(cp, ctl_buf(c));
    const uint32_t nb = ctl_buf(c) ^ 1u;
    uint64_t *dst = cbuf<VW>(cp, nb);
    for (uint32_t w = 0; w < vwords<VW>(); ++w) {
        st_rlx(dst + w, ld_rlx(src + w) + delta[w]);
    }
    st_rel(cp, ctl_next(c, 0, nb));
}

uint64_t Table::cell_add_bulk(const void *keys, uint32_t n, uint32_t cellno, const uint64_t *deltas) noexcept
{
    if (_cells == 0 || cellno >= _cells || _value_size % 8 != 0) {
        return 0;
    }
    return (this->*_cell_add_bulk)(keys, n, cellno, deltas);
}

template<uint32_t KW, uint32_t VW>
uint64_t Table::cell_add_bulk_as(const void *keys, uint32_t n, uint32_t cellno, const uint64_t *deltas) noexcept
{
    KeyBuf kb[max_bulk];
    std::size_t at[max_bulk];
    // In stages, so the misses of the n keys overlap with about one line
    // per key in flight at a time: the home slots; then each key's slot,
    // and the prefetch of its cell; then the adds.  A core holds a few
    // dozen misses at once: prefetching all three lines of all keys up
    // front measured 250 ns/key on a 1M-key EVENTUAL table like mon's
    // hosts, the home slots alone 170, these stages 140.
    n = load_keys<KW>(keys, n, kb, [&](const KeyBuf &k) { __builtin_prefetch(slot(home(k.h))); });
    for (uint32_t i = 0; i < n; ++i) {
        at[i] = find_live<KW>(kb[i]);
        if (at[i] != npos) {
            __builtin_prefetch(cell(slot(at[i]), cellno), 1);
        }
    }
    uint64_t mask = 0;
    for (uint32_t i = 0; i < n; ++i) {
        const uint64_t *delta = deltas + static_cast<std::size_t>(i) * _vw;
        if ((at[i] != npos && cell_add_at<KW, VW>(kb[i], at[i], cellno, delta)) ||
            cell_add<KW, VW>(kb[i], cellno, delta) == SERPENS_OK) {
            mask |= 1ull << i;
        }
    }
    return mask;
}

void Table::try_reclaim(std::size_t i) noexcept
{
    // A tombstone whose successor is empty ends no chain that needs it, so it
    // can become empty; walk backwards while that keeps holding.
    for (int steps = 0; steps < 64; ++steps) {
        SlotHeader *s = slot(i);
        uint64_t c = ld_acq(&s->ctl);
        if (ctl_state(c) != slot_dead || (c & ctl_w)) {
            return;
        }
        SlotHeader *nx = slot(next(i));
        uint64_t cn = ld_acq(&nx->ctl);
        if (ctl_state(cn) != slot_empty || (cn & ctl_w)) {
            return;
        }
        if (!cas(&s->ctl, c, c | ctl_w)) {
            return;
        }
        cn = ld_acq(&nx->ctl);
        if (ctl_state(cn) != slot_empty || (cn & ctl_w)) {
            st_rel(&s->ctl, c);
            return;
        }
        st_rel(&s->ctl, ctl_next(c, slot_empty, ctl_buf(c)));
        i = prev(i);
    }
}

std::size_t Table::expire(uint64_t now_ns, uint64_t idle_ns, std::size_t budget) noexcept
{
    if (_kind != TableKind::per_flow || _ro || budget == 0 || nf_expiry()) {
        return 0;
    }
    const uint32_t nowu = coarse_units(now_ns);
    const uint32_t idleu = std::max<uint32_t>(1, static_cast<uint32_t>(std::min<uint64_t>(idle_ns >> 20, INT32_MAX)));
    budget = std::min<std::size_t>(budget, _n_slots);
    std::size_t start = fetch_add(&_h->expire_cursor, budget) % _n_slots;
    std::size_t removed = 0;
    for (std::size_t k = 0; k < budget; ++k) {
        std::size_t i = (start + k) % _n_slots;
        SlotHeader *s = slot(i);
        uint64_t c = ld_acq(&s->ctl);
        if (ctl_state(c) == slot_live && !(c & ctl_w)) {
            int32_t age = static_cast<int32_t>(nowu - ld_rlx(&s->access));
            if (age > static_cast<int32_t>(idleu) && cas(&s->ctl, c, ctl_next(c, slot_dead, ctl_buf(c)))) {
                fetch_sub(&_h->live, 1);
                fetch_add(&_h->expired, 1);
                ++removed;
            }
        }
        try_reclaim(i);
    }
    return removed;
}

// ---------------------------------------------------------------------------
// State manager
// ---------------------------------------------------------------------------

std::size_t Table::find_live(const void *key) const noexcept
{
    KeyBuf k;
    load_key(k, key);
    return find_live(k);
}

template<uint32_t KW>
std::size_t Table::find_live(const KeyBuf &k) const noexcept
{
    std::size_t i = home(k.h);
    for (uint64_t n = 0; n < _n_slots; ++n, i = next(i)) {
        SlotHeader *s = slot(i);
        uint64_t c = ld_acq(&s->ctl);
        if (ctl_state(c) == slot_empty) {
            return npos;
        }
        if (holds<KW>(s, c, k)) {
            return i;
        }
    }
    return npos;
}

void Table::for_each_live_slot(const std::function<void(std::size_t)> &fn) const
{
    for (uint64_t i = 0; i < _n_slots; ++i) {
        if (ctl_state(ld_acq(&slot(i)->ctl)) == slot_live) {
            fn(i);
        }
    }
}

const void *Table::slot_key(std::size_t i) const noexcept { return key_words(slot(i)); }

bool Table::is_live_slot(std::size_t i) const noexcept
{
    return i < _n_slots && ctl_state(ld_acq(&slot(i)->ctl)) == slot_live;
}

uint64_t Table::lock_cell(std::size_t i, uint32_t c) noexcept
{
    uint64_t *cp = cell(slot(i), c);
    for (;;) {
        uint64_t v = ld_acq(cp);
        if (!(v & ctl_w) && cas(cp, v, v | ctl_w)) {
            return v;
        }
        cpu_relax();
    }
}

void Table::read_locked_cell(std::size_t i, uint32_t c, uint64_t ctl, void *out) const noexcept
{
    if (ctl_state(ctl) == cell_zero) {
        std::memset(out, 0, _value_size);
        return;
    }
    words_out(cbuf(cell(slot(i), c), ctl_buf(ctl)), out, _value_size);
}

void Table::write_unlock_cell(std::size_t i, uint32_t c, uint64_t ctl, const void *value) noexcept
{
    uint64_t *cp = cell(slot(i), c);
    uint32_t nb = ctl_buf(ctl) ^ 1u;
    words_in(cbuf(cp, nb), value, _value_size);
    const auto *bytes = static_cast<const uint8_t *>(value);
    const bool zero = std::all_of(bytes, bytes + _value_size, [](uint8_t b) { return b == 0; });
    st_rel(cp, ctl_next(ctl, zero ? cell_zero : 0, nb));
}

void Table::unlock_cell(std::size_t i, uint32_t c, uint64_t ctl) noexcept { st_rel(cell(slot(i), c), ctl); }

void Table::seal() noexcept
{
    _sealed = true;
    if (!_ro) {
        st_rlx(&_h->sealed, 1);
    }
}

// ---------------------------------------------------------------------------
// Inspection
// ---------------------------------------------------------------------------

void Table::dump(const std::function<void(const uint8_t *, const uint8_t *)> &fn) const
{
    uint32_t nvals = _cells ? _cells : 1;
    std::vector<uint8_t> key(_key_size), vals(static_cast<std::size_t>(nvals) * _value_size);
    for (uint64_t i = 0; i < _n_slots; ++i) {
        SlotHeader *s = slot(i);
        for (int attempt = 0; attempt < 1000; ++attempt) {
            uint64_t c1 = ld_acq(&s->ctl);
            if (ctl_state(c1) != slot_live) {
                break;
            }
            words_out(key_words(s), key.data(), _key_size);
            if (_cells == 0) {
                words_out(vbuf(s, ctl_buf(c1)), vals.data(), _value_size);
            } else {
                for (uint32_t k = 0; k < _cells; ++k) {
                    read_cell(cell(s, k), vals.data() + static_cast<std::size_t>(k) * _value_size);
                }
            }
            if (ctl_unchanged(&s->ctl, c1)) {
                fn(key.data(), vals.data());
                break;
            }
        }
    }
}

CheckReport Table::check() const
{
    CheckReport r;
    r.slots = _n_slots;
    std::vector<std::string> &pb = r.problems;
    auto note = [&](const std::string &s) {
        if (pb.size() < 20) {
            pb.push_back(s);
        }
    };
    for (uint64_t i = 0; i < _n_slots; ++i) {
        SlotHeader *s = slot(i);
        uint64_t c = ld_acq(&s->ctl);
        uint32_t st = ctl_state(c);
        if (c & ctl_w) {
            ++r.in_flight;
            note("slot " + std::to_string(i) + ": write in flight (torn unless a host is writing right now)");
        }
        for (uint32_t k = 0; k < _cells; ++k) {
            if (ld_acq(cell(s, k)) & ctl_w) {
                ++r.in_flight;
                note("slot " + std::to_string(i) + " cell " + std::to_string(k) + ": write in flight");
            }
        }
        if (st == slot_empty) {
            ++r.empty;
            continue;
        }
        if (st == slot_dead) {
            ++r.dead;
            continue;
        }
        if (st != slot_live) {
            note("slot " + std::to_string(i) + ": invalid state " + std::to_string(st));
            continue;
        }
        ++r.live;
        KeyBuf k;
        for (uint32_t w = 0; w < _kw; ++w) {
            k.w[w] = ld_rlx(key_words(s) + w);
        }
        k.h = hash_key(k.w, _kw);
        if (static_cast<uint32_t>(k.h) != ld_rlx(&s->hash)) {
            ++r.bad_hash;
            note("slot " + std::to_string(i) + ": stored hash does not match the key");
            continue;
        }
        for (std::size_t j = home(k.h); j != i; j = next(j)) {
            SlotHeader *o = slot(j);
            uint64_t co = ld_acq(&o->ctl);
            if (ctl_state(co) == slot_empty) {
                ++r.unreachable;
                note("slot " + std::to_string(i) + ": unreachable (empty slot " + std::to_string(j) + " before it)");
                break;
            }
            if (ctl_state(co) == slot_live && key_eq(o, k.w)) {
                ++r.duplicates;
                note("slot " + std::to_string(i) + ": duplicate of slot " + std::to_string(j));
                break;
            }
        }
    }
    if (r.live > _capacity) {
        note(std::to_string(r.live) + " live entries exceed capacity " + std::to_string(_capacity));
    }
    uint64_t hl = ld_rlx(&_h->live);
    if (hl != r.live) {
        r.warnings.push_back("header counts " + std::to_string(hl) + " live entries, scan found " +
                             std::to_string(r.live) + " (fine while a host is writing)");
    }
    return r;
}

} // namespace serpens::state
