// Executor (state manager of one (chain, NF)) and StateStore.

#include "state/executor.h"

#include "core/error.h"
#include "state/default_hooks.h"
#include "state/record_layout.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <ctime>
#include <optional>
#include <system_error>

namespace serpens::state {

namespace {

uint64_t instance_mask(uint32_t max_instances) { return max_instances >= 64 ? ~0ull : ((1ull << max_instances) - 1); }

// The cells an EVENTUAL operation owns: the base (0), then 1 + i for each
// instance i in `mask`.
void base_and_replicas(uint64_t mask, uint32_t cells, std::vector<uint32_t> &idx)
{
    idx.assign(1, 0);
    for (uint32_t i = 0; i + 1 < cells; ++i) {
        if (mask & (1ull << i)) {
            idx.push_back(1 + i);
        }
    }
}

bool all_zero(const std::vector<uint64_t> &b)
{
    return std::all_of(b.begin(), b.end(), [](uint64_t w) { return w == 0; });
}

// `bufs` as n zeroed buffers of vw words, reusing what it already holds.
void fit(std::vector<std::vector<uint64_t>> &bufs, std::size_t n, uint32_t vw)
{
    bufs.resize(n);
    for (auto &b : bufs) {
        b.assign(vw, 0);
    }
}

} // namespace

// ---------------------------------------------------------------------------
// Executor
// ---------------------------------------------------------------------------

Executor::Executor(StateStore &store, std::string chain, std::string nf, std::filesystem::path dir)
    : _store(store), _chain(std::move(chain)), _nf(std::move(nf)), _dir(std::move(dir))
{
    _mgr_ctx.struct_size = sizeof(serpens_nf_ctx);
    _mgr_ctx.instance_id = SERPENS_INSTANCE_STATE_MANAGER;
    _mgr_ctx.chain_name = _chain.c_str();
    _mgr_ctx.nf_name = _nf.c_str();
}

Executor::~Executor() = default;

void Executor::set_descriptor(const serpens_nf_descriptor *desc)
{
    std::lock_guard lk(_mu);
    if (_desc == nullptr) {
        _desc = desc;
    }
}

void Executor::replace_descriptor(const serpens_nf_descriptor *desc)
{
    std::lock_guard lk(_mu);
    _desc = desc;
}

Table *Executor::create_table_locked(TableSpec &spec, std::string &err)
{
    const std::string where = "chain '" + _chain + "' nf '" + _nf + "' table '" + spec.name + "'";
    if (kind_of(spec.flags) != TableKind::release && kind_of(spec.flags) != TableKind::eventual) {
        spec.max_instances = 0;
    } else {
        spec.max_instances = _store.options().max_instances;
    }
    if (auto why = validate_spec(spec); !why.empty()) {
        err = where + ": " + why;
        return nullptr;
    }
    if (kind_of(spec.flags) == TableKind::eventual && spec.value_size % 8 != 0 &&
        (_desc == nullptr || _desc->merge == nullptr)) {
        err = where + ": EVENTUAL with the default merge (uint64 counters) needs value_size a multiple of 8, got " +
              std::to_string(spec.value_size);
        return nullptr;
    }
    if (auto it = _tables.find(spec.name); it != _tables.end()) {
        const SegmentHeader &h = it->second->header();
        // As when a segment is reopened, NF_EXPIRY may change (a reload).
        if (!flags_compatible(h.flags, spec.flags) || h.key_size != spec.key_size || h.value_size != spec.value_size ||
            h.capacity != spec.capacity) {
            err = where + ": already exists as " + flags_to_string(h.flags) + " key " + std::to_string(h.key_size) +
                  " value " + std::to_string(h.value_size) + " capacity " + std::to_string(h.capacity) +
                  ", requested " + flags_to_string(spec.flags) + " key " + std::to_string(spec.key_size) + " value " +
                  std::to_string(spec.value_size) + " capacity " + std::to_string(spec.capacity);
            return nullptr;
        }
        it->second->set_nf_expiry((spec.flags & SERPENS_STATE_NF_EXPIRY) != 0);
        return it->second.get();
    }
    // Checked before the segment exists, so a layout that does not fit
    // leaves nothing behind.
    std::optional<RecordLayout> layout;
    if (_desc != nullptr) {
        layout = declared_layout(*_desc, spec.name, spec.key_size, spec.value_size, err);
        if (!err.empty()) {
            err = where + ": " + err;
            return nullptr;
        }
    }
    std::error_code ec;
    std::filesystem::create_directories(_dir, ec);
    if (ec) {
        err = where + ": cannot create " + _dir.string() + ": " + ec.message();
        return nullptr;
    }
    const std::filesystem::path file = _dir / (StateStore::escape(spec.name) + ".tbl");
    auto t = Table::open(file, spec, err);
    if (!t) {
        err = where + ": " + err;
        return nullptr;
    }
    // For the tools, which load no plugin.  Without it they show hex, so a
    // failure to write it costs readability, not the table.
    if (!layout) {
        remove_layout(file);
    } else if (std::string why; !write_layout(file, *layout, spec.key_size, spec.value_size, why)) {
        spdlog::warn("state: {}: {}; tools will show this table in hex", where, why);
    }
    // Instances of a previous run are gone.  EVENTUAL: fold what they had not
    // merged yet; RELEASE: their cells keep their items until the next
    // rebalance collects every cell.
    uint64_t old = ld_rlx(&t->header().active_mask);
    if (old != 0 && is_global_write(t->kind())) {
        if (t->kind() == TableKind::eventual) {
            t->for_each_live_slot([&](std::size_t s) { merge_locked(*t, s, old); });
        }
        st_rlx(&t->header_rw().active_mask, 0);
        spdlog::info("state: {}: folded replicas of previous instances (mask {:#x})", t->path().string(), old);
    }
    Table *raw = t.get();
    if (is_global_write(raw->kind())) {
        _boards.emplace(raw, std::make_unique<TriggerBoard>(raw->n_slots()));
    }
    _tables.emplace(spec.name, std::move(t));
    return raw;
}

Table *Executor::create_table(TableSpec spec, std::string &err)
{
    std::lock_guard lk(_mu);
    return create_table_locked(spec, err);
}

TableHandle *Executor::open_handle(TableSpec spec, uint32_t instance, serpens_nf_ctx *ctx, std::string &err)
{
    std::lock_guard lk(_mu);
    Table *t = create_table_locked(spec, err);
    if (t == nullptr) {
        return nullptr;
    }
    if (is_global_write(t->kind()) && instance >= t->header().max_instances) {
        err = "chain '" + _chain + "' nf '" + _nf + "' table '" + spec.name + "': instance " +
              std::to_string(instance) + " >= max_instances " + std::to_string(t->header().max_instances);
        return nullptr;
    }
    if (ctx != nullptr && _mgr_ctx.host == nullptr) {
        _mgr_ctx.host = ctx->host;
    }
    auto &slot = _handles[{spec.name, instance}];
    if (!slot) {
        slot = std::make_unique<TableHandle>();
        slot->table = t;
        slot->executor = this;
        slot->instance = instance;
        slot->cell = 1 + instance;
        slot->kind = t->kind();
        if (auto b = _boards.find(t); b != _boards.end()) {
            slot->board = b->second.get();
        }
    }
    if (is_global_write(t->kind())) {
        activate_locked(*t, instance);
    }
    return slot.get();
}

Table *Executor::find(std::string_view name)
{
    std::lock_guard lk(_mu);
    auto it = _tables.find(name);
    return it == _tables.end() ? nullptr : it->second.get();
}

std::vector<Table *> Executor::tables()
{
    std::lock_guard lk(_mu);
    std::vector<Table *> v;
    for (auto &[n, t] : _tables) {
        v.push_back(t.get());
    }
    return v;
}

void Executor::seal()
{
    std::lock_guard lk(_mu);
    for (auto &[n, t] : _tables) {
        if (t->kind() == TableKind::global_read) {
            t->seal();
        }
    }
}

int Executor::call_hook(int (*hook)(serpens_nf_ctx *, const serpens_state_hook_args *), Table &t, const void *key,
                        const void *whole, std::vector<Buf> &parts, uint32_t n, void *out)
{
    std::array<void *, max_instances_limit + 2> ptrs{}; // every cell, and one part exchanged with a peer
    if (n > ptrs.size()) {
        return SERPENS_EINVAL;
    }
    for (uint32_t i = 0; i < n; ++i) {
        ptrs[i] = parts[i].data();
    }
    std::string name(t.name());
    serpens_state_hook_args a{};
    a.struct_size = sizeof(a);
    a.n = n;
    a.table = name.c_str();
    a.key = key;
    a.key_size = t.key_size();
    a.value_size = t.value_size();
    a.whole = whole;
    a.parts = ptrs.data();
    a.out = out;
    int rc = hook(&_mgr_ctx, &a);
    if (rc != SERPENS_OK) {
        spdlog::error("state: chain '{}' nf '{}' table '{}': state hook returned {}; state left unchanged", _chain, _nf,
                      name, rc);
    }
    return rc;
}

// RELEASE: collect every cell (base, active and inactive instances) into one
// whole and deal it out to the active instances — or keep it in the base when
// none is active.  With prefer_update_hook and an NF update hook, the hook
// rebalances the active cells in place instead (only when nothing sits
// outside them and nothing is exchanged with another host).  `x` adds a part
// from outside, replaces the whole, or splits a share off for outside.
int Executor::rebalance_locked(Table &t, std::size_t slot, bool prefer_update_hook, const Exchange &x)
{
    const uint32_t cells = t.cells();
    const uint32_t vw = words_of(t.value_size());
    const uint64_t mask = ld_rlx(&t.header().active_mask) & instance_mask(cells - 1);
    CellScratch &r = _scratch;
    r.active.clear();
    for (uint32_t i = 0; i + 1 < cells; ++i) {
        if (mask & (1ull << i)) {
            r.active.push_back(i);
        }
    }
    const void *key = t.slot_key(slot);
    r.ctl.resize(cells);
    fit(r.cur, cells, vw);
    for (uint32_t c = 0; c < cells; ++c) {
        r.ctl[c] = t.lock_cell(slot, c);
        t.read_locked_cell(slot, c, r.ctl[c], r.cur[c].data());
    }
    fit(r.nxt, cells, vw);
    int rc = SERPENS_OK;
    bool outside_empty = all_zero(r.cur[0]);
    for (uint32_t c = 1; c < cells && outside_empty; ++c) {
        if (!(mask & (1ull << (c - 1)))) {
            outside_empty = all_zero(r.cur[c]);
        }
    }
    const bool exchange = x.in != nullptr || x.out != nullptr;
    if (prefer_update_hook && !exchange && _desc != nullptr && _desc->update != nullptr && !r.active.empty() &&
        outside_empty) {
        fit(r.parts, r.active.size(), vw);
        for (std::size_t j = 0; j < r.active.size(); ++j) {
            r.parts[j] = r.cur[1 + r.active[j]];
        }
        rc = call_hook(_desc->update, t, key, nullptr, r.parts, static_cast<uint32_t>(r.parts.size()), nullptr);
        for (std::size_t j = 0; j < r.active.size(); ++j) {
            r.nxt[1 + r.active[j]] = r.parts[j];
        }
    } else {
        Buf &whole = r.whole;
        whole.assign(vw, 0);
        if (x.replace) {
            whole = *x.in;
        } else {
            auto merge = (_desc && _desc->merge) ? _desc->merge : &default_release_merge;
            fit(r.all, cells + (x.in != nullptr ? 1 : 0), vw);
            std::copy(r.cur.begin(), r.cur.end(), r.all.begin()); // the hook may scribble on its parts
            if (x.in != nullptr) {
                r.all.back() = *x.in;
            }
            rc = call_hook(merge, t, key, nullptr, r.all, static_cast<uint32_t>(r.all.size()), whole.data());
        }
        // Who keeps a part on this host: the active cells, else the base.
        r.to.clear();
        for (uint32_t a : r.active) {
            r.to.push_back(1 + a);
        }
        if (r.to.empty()) {
            r.to.push_back(0);
        }
        if (rc == SERPENS_OK && x.everything) {
            *x.out = whole;
        } else if (rc == SERPENS_OK && r.active.empty() && x.out == nullptr) {
            r.nxt[0] = whole;
        } else if (rc == SERPENS_OK) {
            const uint32_t n = static_cast<uint32_t>(r.to.size()) + (x.out != nullptr ? 1 : 0);
            fit(r.parts, n, vw);
            auto split = (_desc && _desc->split) ? _desc->split : &default_release_split;
            rc = call_hook(split, t, key, whole.data(), r.parts, n, nullptr);
            for (std::size_t j = 0; j < r.to.size(); ++j) {
                r.nxt[r.to[j]] = r.parts[j];
            }
            if (x.out != nullptr) {
                *x.out = r.parts.back();
            }
        }
    }
    for (uint32_t c = 0; c < cells; ++c) {
        if (rc == SERPENS_OK && r.nxt[c] != r.cur[c]) {
            t.write_unlock_cell(slot, c, r.ctl[c], r.nxt[c].data());
        } else {
            t.unlock_cell(slot, c, r.ctl[c]);
        }
    }
    return rc;
}

int Executor::gather_locked(Table &t, std::size_t slot)
{
    // Temporarily nobody is active: everything goes to the base.
    uint64_t mask = ld_rlx(&t.header().active_mask);
    st_rlx(&t.header_rw().active_mask, 0);
    int rc = rebalance_locked(t, slot, false);
    st_rlx(&t.header_rw().active_mask, mask);
    return rc;
}

// EVENTUAL: G' = merge(G, replicas in `mask`); base and those replicas := G'.
int Executor::merge_locked(Table &t, std::size_t slot, uint64_t mask)
{
    const uint32_t vw = words_of(t.value_size());
    const void *key = t.slot_key(slot);
    CellScratch &r = _scratch;
    base_and_replicas(mask & instance_mask(t.cells() - 1), t.cells(), r.idx);
    const std::size_t n = r.idx.size();
    r.ctl.resize(n);
    fit(r.cur, n, vw);
    for (std::size_t j = 0; j < n; ++j) {
        r.ctl[j] = t.lock_cell(slot, r.idx[j]);
        t.read_locked_cell(slot, r.idx[j], r.ctl[j], r.cur[j].data());
    }
    fit(r.all, n - 1, vw);
    std::copy(r.cur.begin() + 1, r.cur.end(), r.all.begin()); // the replicas; the hook may scribble on them
    Buf &out = r.whole;
    out.assign(vw, 0);
    auto merge = (_desc && _desc->merge) ? _desc->merge : &default_eventual_merge;
    int rc = call_hook(merge, t, key, r.cur[0].data(), r.all, static_cast<uint32_t>(n - 1), out.data());
    fit(r.parts, n - 1, vw);
    if (rc == SERPENS_OK && n > 1) {
        auto split = (_desc && _desc->split) ? _desc->split : &default_eventual_split;
        rc = call_hook(split, t, key, out.data(), r.parts, static_cast<uint32_t>(n - 1), nullptr);
    }
    for (std::size_t j = 0; j < n; ++j) {
        const Buf &next = j == 0 ? out : r.parts[j - 1];
        if (rc == SERPENS_OK && next != r.cur[j]) {
            t.write_unlock_cell(slot, r.idx[j], r.ctl[j], next.data());
        } else {
            t.unlock_cell(slot, r.idx[j], r.ctl[j]);
        }
    }
    return rc;
}

int Executor::merge_slot(Table &t, std::size_t slot)
{
    if (t.kind() == TableKind::release) {
        return gather_locked(t, slot);
    }
    return merge_locked(t, slot, ld_rlx(&t.header().active_mask));
}

int Executor::update_locked(Table &t, std::size_t slot)
{
    if (t.kind() == TableKind::release) {
        return rebalance_locked(t, slot, true);
    }
    return merge_locked(t, slot, ld_rlx(&t.header().active_mask));
}

void Executor::activate_locked(Table &t, uint32_t id)
{
    uint64_t mask = ld_rlx(&t.header().active_mask);
    if (mask & (1ull << id)) {
        return;
    }
    st_rlx(&t.header_rw().active_mask, mask | (1ull << id));
    if (t.kind() == TableKind::release) {
        t.for_each_live_slot([&](std::size_t s) { rebalance_locked(t, s, false); });
        return;
    }
    // EVENTUAL: the newcomer's replica starts as a copy of the base.
    Buf base(words_of(t.value_size()), 0);
    t.for_each_live_slot([&](std::size_t s) {
        uint64_t c0 = t.lock_cell(s, 0);
        uint64_t ci = t.lock_cell(s, 1 + id);
        t.read_locked_cell(s, 0, c0, base.data());
        t.write_unlock_cell(s, 1 + id, ci, base.data());
        t.unlock_cell(s, 0, c0);
    });
}

void Executor::deactivate_locked(Table &t, uint32_t id)
{
    uint64_t mask = ld_rlx(&t.header().active_mask);
    if (!(mask & (1ull << id))) {
        return;
    }
    if (t.kind() == TableKind::release) {
        st_rlx(&t.header_rw().active_mask, mask & ~(1ull << id));
        t.for_each_live_slot([&](std::size_t s) { rebalance_locked(t, s, false); });
        return;
    }
    t.for_each_live_slot([&](std::size_t s) { merge_locked(t, s, mask); });
    st_rlx(&t.header_rw().active_mask, mask & ~(1ull << id));
}

void Executor::add_instance(uint32_t id, serpens_nf_ctx *ctx)
{
    std::lock_guard lk(_mu);
    if (ctx != nullptr && _mgr_ctx.host == nullptr) {
        _mgr_ctx.host = ctx->host;
    }
    for (auto &[n, t] : _tables) {
        if (is_global_write(t->kind()) && id < t->header().max_instances) {
            activate_locked(*t, id);
        }
    }
}

void Executor::remove_instance(uint32_t id)
{
    std::lock_guard lk(_mu);
    for (auto &[n, t] : _tables) {
        if (is_global_write(t->kind()) && id < t->header().max_instances) {
            deactivate_locked(*t, id);
        }
    }
}

uint64_t Executor::active_instances() const
{
    std::lock_guard lk(_mu);
    uint64_t m = 0;
    for (auto &[n, t] : _tables) {
        m |= ld_rlx(&t->header().active_mask);
    }
    return m;
}

int Executor::op_by_key(Table &t, const void *key, int (Executor::*op)(Table &, std::size_t))
{
    if (!is_global_write(t.kind())) {
        return SERPENS_EINVAL;
    }
    std::lock_guard lk(_mu);
    if (key == nullptr) {
        return for_all_locked(t, op);
    }
    std::size_t s = t.find_live(key);
    if (s == Table::npos) {
        return SERPENS_ENOENT;
    }
    return (this->*op)(t, s);
}

int Executor::for_all_locked(Table &t, int (Executor::*op)(Table &, std::size_t))
{
    int rc = SERPENS_OK;
    t.for_each_live_slot([&](std::size_t s) {
        int r = (this->*op)(t, s);
        rc = rc == SERPENS_OK ? r : rc;
    });
    return rc;
}

int Executor::split(Table &t, const void *key)
{
    return op_by_key(t, key, t.kind() == TableKind::release ? &Executor::split_slot : &Executor::merge_slot);
}

int Executor::merge(Table &t, const void *key) { return op_by_key(t, key, &Executor::merge_slot); }

int Executor::update(Table &t, const void *key) { return op_by_key(t, key, &Executor::update_slot); }

int Executor::timer(Table &t, const void *key, uint64_t period_ns)
{
    if (!is_global_write(t.kind())) {
        return SERPENS_EINVAL;
    }
    std::lock_guard lk(_mu);
    std::vector<uint8_t> k;
    if (key != nullptr) {
        k.assign(static_cast<const uint8_t *>(key), static_cast<const uint8_t *>(key) + t.key_size());
    }
    auto it = std::find_if(_timers.begin(), _timers.end(), [&](const Timer &x) { return x.table == &t && x.key == k; });
    if (period_ns == 0) {
        if (it != _timers.end()) {
            _timers.erase(it);
        }
        return SERPENS_OK;
    }
    uint64_t due = monotonic_ns() + period_ns;
    if (it != _timers.end()) {
        it->period_ns = period_ns;
        it->due_ns = due;
    } else {
        _timers.push_back(Timer{&t, std::move(k), period_ns, due});
    }
    return SERPENS_OK;
}

int Executor::trigger(TableHandle &h, const void *key)
{
    if (!is_global_write(h.kind) || key == nullptr || h.board == nullptr) {
        return SERPENS_EINVAL;
    }
    const std::size_t s = h.table->find_live(key);
    if (s == Table::npos) {
        return SERPENS_ENOENT;
    }
    if (s >= h.board->n || h.instance >= 64) {
        return SERPENS_EAGAIN; // cannot be recorded; not expected with a slot-sized board
    }
    const uint64_t bit = 1ull << h.instance;
    const bool was_empty = (h.board->empty[s].fetch_and(~bit, std::memory_order_relaxed) & bit) != 0;
    // want before any, so a tick that clears any still sees this bit next time.
    h.board->want[s].fetch_or(bit, std::memory_order_release);
    h.board->any.store(true, std::memory_order_release);
    return was_empty ? SERPENS_ENOSPC : SERPENS_OK;
}

int Executor::read_global(Table &t, const void *key, void *out)
{
    if (t.kind() == TableKind::eventual) {
        return t.cell_get(key, 0, out, nullptr);
    }
    if (t.kind() != TableKind::release) {
        return SERPENS_EINVAL;
    }
    std::lock_guard lk(_mu);
    std::size_t s = t.find_live(key);
    if (s == Table::npos) {
        return SERPENS_ENOENT;
    }
    const uint32_t cells = t.cells();
    const uint32_t vw = words_of(t.value_size());
    std::vector<uint64_t> ctl(cells);
    std::vector<Buf> cur(cells, Buf(vw, 0));
    for (uint32_t c = 0; c < cells; ++c) {
        ctl[c] = t.lock_cell(s, c);
        t.read_locked_cell(s, c, ctl[c], cur[c].data());
    }
    for (uint32_t c = 0; c < cells; ++c) {
        t.unlock_cell(s, c, ctl[c]);
    }
    Buf whole(vw, 0);
    auto merge = (_desc && _desc->merge) ? _desc->merge : &default_release_merge;
    int rc = call_hook(merge, t, t.slot_key(s), nullptr, cur, cells, whole.data());
    if (rc == SERPENS_OK) {
        std::memcpy(out, whole.data(), t.value_size());
    }
    return rc;
}

std::size_t Executor::slot_of_locked(Table &t, const void *key, bool create, int &rc)
{
    rc = SERPENS_OK;
    std::size_t s = t.find_live(key);
    if (s != Table::npos || !create) {
        rc = s == Table::npos ? SERPENS_ENOENT : SERPENS_OK;
        return s;
    }
    // Writing the base creates the key with every cell zero (the empty
    // state); only the state manager writes the base, and we hold it.
    const Buf zero(words_of(t.value_size()), 0);
    rc = t.cell_put(key, 0, zero.data(), nullptr);
    if (rc != SERPENS_OK) {
        return Table::npos;
    }
    s = t.find_live(key);
    rc = s == Table::npos ? SERPENS_ENOENT : SERPENS_OK;
    return s;
}

namespace {

std::vector<uint64_t> to_words(const void *value, std::size_t len)
{
    std::vector<uint64_t> b(words_of(static_cast<uint32_t>(len)), 0);
    std::memcpy(b.data(), value, len);
    return b;
}

void to_bytes(const std::vector<uint64_t> &b, uint32_t len, std::vector<uint8_t> &out)
{
    out.resize(len);
    std::memcpy(out.data(), b.data(), len);
}

} // namespace

int Executor::lease_out(Table &t, const void *key, std::vector<uint8_t> &out)
{
    if (t.kind() != TableKind::release || key == nullptr) {
        return SERPENS_EINVAL;
    }
    std::lock_guard lk(_mu);
    int rc;
    const std::size_t s = slot_of_locked(t, key, false, rc);
    if (s == Table::npos) {
        return rc;
    }
    Buf part(words_of(t.value_size()), 0);
    Exchange x;
    x.out = &part;
    rc = rebalance_locked(t, s, false, x);
    if (rc == SERPENS_OK) {
        to_bytes(part, t.value_size(), out);
    }
    return rc;
}

int Executor::take_back(Table &t, const void *key, const void *value, std::size_t len)
{
    if (t.kind() != TableKind::release || key == nullptr || value == nullptr || len != t.value_size()) {
        return SERPENS_EINVAL;
    }
    std::lock_guard lk(_mu);
    int rc;
    const std::size_t s = slot_of_locked(t, key, true, rc);
    if (s == Table::npos) {
        return rc;
    }
    const Buf in = to_words(value, len);
    Exchange x;
    x.in = &in;
    return rebalance_locked(t, s, false, x);
}

int Executor::apply_delta(Table &t, const void *key, const void *delta, std::size_t len)
{
    if (t.kind() != TableKind::eventual || key == nullptr || delta == nullptr || len != t.value_size() ||
        len % 8 != 0) {
        return SERPENS_EINVAL;
    }
    std::lock_guard lk(_mu);
    if (_desc != nullptr && _desc->merge != nullptr) {
        return SERPENS_EINVAL; // the NF's own format: a word-wise sum may mean nothing
    }
    int rc;
    const std::size_t s = slot_of_locked(t, key, true, rc);
    if (s == Table::npos) {
        return rc;
    }
    const uint32_t vw = words_of(t.value_size());
    const Buf d = to_words(delta, len);
    const uint64_t mask = ld_rlx(&t.header().active_mask) & instance_mask(t.cells() - 1);
    std::vector<uint32_t> idx;
    base_and_replicas(mask, t.cells(), idx);
    // All cells owned at once, so no merge sees the base moved without the
    // replicas (it would count the delta once per replica).
    std::vector<uint64_t> ctl(idx.size());
    std::vector<Buf> v(idx.size(), Buf(vw, 0));
    for (std::size_t j = 0; j < idx.size(); ++j) {
        ctl[j] = t.lock_cell(s, idx[j]);
        t.read_locked_cell(s, idx[j], ctl[j], v[j].data());
        for (uint32_t w = 0; w < vw; ++w) {
            v[j][w] += d[w];
        }
    }
    for (std::size_t j = 0; j < idx.size(); ++j) {
        t.write_unlock_cell(s, idx[j], ctl[j], v[j].data());
    }
    return SERPENS_OK;
}

int Executor::adopt(Table &t, const void *key, const void *value, std::size_t len)
{
    if (!is_global_write(t.kind()) || key == nullptr || value == nullptr || len != t.value_size()) {
        return SERPENS_EINVAL;
    }
    std::lock_guard lk(_mu);
    int rc;
    const std::size_t s = slot_of_locked(t, key, true, rc);
    if (s == Table::npos) {
        return rc;
    }
    const Buf whole = to_words(value, len);
    if (t.kind() == TableKind::release) {
        Exchange x;
        x.in = &whole;
        x.replace = true;
        return rebalance_locked(t, s, false, x);
    }
    const uint32_t vw = words_of(t.value_size());
    const uint64_t mask = ld_rlx(&t.header().active_mask) & instance_mask(t.cells() - 1);
    std::vector<uint32_t> idx;
    base_and_replicas(mask, t.cells(), idx);
    std::vector<uint64_t> ctl(idx.size());
    for (std::size_t j = 0; j < idx.size(); ++j) {
        ctl[j] = t.lock_cell(s, idx[j]);
    }
    // Replicas as the NF's split makes them from a base (copies by default).
    std::vector<Buf> copies(idx.size() - 1, Buf(vw, 0));
    rc = SERPENS_OK;
    if (!copies.empty()) {
        auto split = (_desc && _desc->split) ? _desc->split : &default_eventual_split;
        rc = call_hook(split, t, key, whole.data(), copies, static_cast<uint32_t>(copies.size()), nullptr);
    }
    for (std::size_t j = 0; j < idx.size(); ++j) {
        if (rc == SERPENS_OK) {
            t.write_unlock_cell(s, idx[j], ctl[j], j == 0 ? whole.data() : copies[j - 1].data());
        } else {
            t.unlock_cell(s, idx[j], ctl[j]);
        }
    }
    return rc;
}

int Executor::surrender(Table &t, const void *key, std::vector<uint8_t> &out)
{
    if (!is_global_write(t.kind()) || key == nullptr) {
        return SERPENS_EINVAL;
    }
    std::lock_guard lk(_mu);
    int rc;
    const std::size_t s = slot_of_locked(t, key, false, rc);
    if (s == Table::npos) {
        return rc;
    }
    Buf whole(words_of(t.value_size()), 0);
    if (t.kind() == TableKind::release) {
        Exchange x;
        x.out = &whole;
        x.everything = true;
        rc = rebalance_locked(t, s, false, x);
    } else {
        rc = merge_locked(t, s, ld_rlx(&t.header().active_mask));
        if (rc == SERPENS_OK) {
            rc = t.cell_get(key, 0, whole.data(), nullptr);
        }
    }
    if (rc == SERPENS_OK) {
        to_bytes(whole, t.value_size(), out);
    }
    return rc;
}

bool Executor::default_format() const
{
    std::lock_guard lk(_mu);
    return _desc == nullptr || (_desc->split == nullptr && _desc->merge == nullptr);
}

std::vector<std::vector<uint8_t>> Executor::keys(Table &t)
{
    std::lock_guard lk(_mu);
    std::vector<std::vector<uint8_t>> v;
    t.for_each_live_slot([&](std::size_t s) {
        const auto *k = static_cast<const uint8_t *>(t.slot_key(s));
        v.emplace_back(k, k + t.key_size());
    });
    return v;
}

std::map<std::string, std::string> Executor::read_entries(Table &t)
{
    std::lock_guard lk(_mu);
    std::map<std::string, std::string> entries;
    if (t.kind() != TableKind::global_read) {
        return entries;
    }
    t.dump([&](const uint8_t *key, const uint8_t *value) {
        entries.emplace(std::string(reinterpret_cast<const char *>(key), t.key_size()),
                        std::string(reinterpret_cast<const char *>(value), t.value_size()));
    });
    return entries;
}

int Executor::copy_read_state(Table &t, const std::map<std::string, std::string> &entries)
{
    if (t.kind() != TableKind::global_read) {
        return SERPENS_EINVAL;
    }
    for (const auto &[key, value] : entries) {
        if (key.size() != t.key_size() || value.size() != t.value_size()) {
            return SERPENS_EINVAL;
        }
    }
    std::lock_guard lk(_mu);
    std::vector<std::string> stale;
    t.for_each_live_slot([&](std::size_t s) {
        std::string key(static_cast<const char *>(t.slot_key(s)), t.key_size());
        if (!entries.contains(key)) {
            stale.push_back(std::move(key));
        }
    });
    // Removals first, so a full table has room for what comes.
    for (const std::string &key : stale) {
        t.del_despite_seal(key.data());
    }
    for (const auto &[key, value] : entries) {
        if (const int rc = t.put_despite_seal(key.data(), value.data()); rc != SERPENS_OK) {
            return rc;
        }
    }
    return SERPENS_OK;
}

// Executes the triggers workers recorded since the last tick: one update per
// requested key, whatever the number of instances or triggers that asked.
void Executor::run_triggers_locked()
{
    for (auto &[tp, board] : _boards) {
        if (!board->any.exchange(false, std::memory_order_acq_rel)) {
            continue;
        }
        Table &t = *const_cast<Table *>(tp);
        const bool default_release = t.kind() == TableKind::release && !(_desc && (_desc->split || _desc->update));
        Buf mine(default_release ? words_of(t.value_size()) : 0, 0);
        for (std::size_t s = 0; s < board->n; ++s) {
            const uint64_t want = board->want[s].exchange(0, std::memory_order_acquire);
            if (want == 0 || !t.is_live_slot(s)) {
                continue;
            }
            if (update_locked(t, s) != SERPENS_OK || !default_release) {
                continue;
            }
            // Tell each asker whether the rebalance found anything for it.
            uint64_t empty = 0;
            for (uint64_t w = want; w != 0; w &= w - 1) {
                const uint32_t i = static_cast<uint32_t>(std::countr_zero(w));
                if (t.cell_get(t.slot_key(s), 1 + i, mine.data(), nullptr) == SERPENS_OK && all_zero(mine)) {
                    empty |= 1ull << i;
                }
            }
            board->empty[s].fetch_and(~(want & ~empty), std::memory_order_relaxed);
            board->empty[s].fetch_or(empty, std::memory_order_relaxed);
        }
    }
}

void Executor::tick(uint64_t now_ns)
{
    std::vector<Table *> flows;
    {
        std::lock_guard lk(_mu);
        for (auto &tm : _timers) {
            if (now_ns >= tm.due_ns) {
                if (tm.key.empty()) {
                    for_all_locked(*tm.table, &Executor::update_slot);
                } else if (std::size_t s = tm.table->find_live(tm.key.data()); s != Table::npos) {
                    update_locked(*tm.table, s);
                }
                tm.due_ns = now_ns + tm.period_ns;
            }
        }
        run_triggers_locked();
        for (auto &[n, t] : _tables) {
            if (t->kind() == TableKind::per_flow) {
                flows.push_back(t.get());
            }
        }
    }
    const StoreOptions &o = _store.options();
    if (o.flow_idle_timeout_ns != 0) {
        // Paced: each table is swept once per quarter of the idle timeout, so
        // an idle flow goes within 1.25 timeouts.  Sweeping expire_budget
        // slots every tick instead walked a 128k-slot table every 40 ms on
        // the state manager's CPU, often the data path's own.
        const uint64_t elapsed = now_ns > _last_expire_ns ? now_ns - _last_expire_ns : 0;
        const uint64_t period = std::max<uint64_t>(1, o.flow_idle_timeout_ns / 4);
        _last_expire_ns = now_ns;
        for (Table *t : flows) {
            const unsigned __int128 due = static_cast<unsigned __int128>(t->n_slots()) * elapsed / period;
            const std::size_t budget = static_cast<std::size_t>(std::min<unsigned __int128>(due + 1, o.expire_budget));
            t->expire(now_ns, o.flow_idle_timeout_ns, budget);
        }
    }
}

// ---------------------------------------------------------------------------
// StateStore
// ---------------------------------------------------------------------------

StateStore::StateStore(StoreOptions opts) : _opts(std::move(opts))
{
    if (_opts.root.empty()) {
        _opts.root = default_root(_opts.host_id);
    }
    _opts.max_instances = std::clamp<uint32_t>(_opts.max_instances, 1, max_instances_limit);
    set_coarse_now(monotonic_ns());
}

StateStore::~StateStore() = default;

std::filesystem::path StateStore::default_root(std::string_view host_id)
{
    return std::filesystem::path("/dev/shm/serpens") / escape(host_id);
}

std::string StateStore::escape(std::string_view s)
{
    std::string o;
    for (std::size_t i = 0; i < s.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-' || (c == '.' && i > 0);
        if (keep) {
            o += static_cast<char>(c);
        } else {
            char b[4];
            std::snprintf(b, sizeof(b), "%%%02X", c);
            o += b;
        }
    }
    return o.empty() ? "%" : o;
}

std::string StateStore::unescape(std::string_view s)
{
    std::string o;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size()) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            o += static_cast<char>(std::strtol(hex, nullptr, 16));
            i += 2;
        } else if (s[i] != '%') {
            o += s[i];
        }
    }
    return o;
}

Executor &StateStore::executor(std::string_view chain, std::string_view nf)
{
    std::lock_guard lk(_mu);
    auto key = std::make_pair(std::string(chain), std::string(nf));
    auto it = _executors.find(key);
    if (it == _executors.end()) {
        auto dir = _opts.root / escape(chain) / escape(nf);
        it = _executors.emplace(key, std::make_unique<Executor>(*this, key.first, key.second, dir)).first;
    }
    return *it->second;
}

FlowTable &StateStore::flow_table(FlowTableSpec spec, bool &first)
{
    std::lock_guard lk(_mu);
    first = false;
    if (auto it = _flow_tables.find(spec.chain); it != _flow_tables.end()) {
        return *it->second;
    }
    const std::filesystem::path dir = _opts.root / escape(spec.chain);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) {
        throw Error("state: cannot create " + dir.string() + ": " + ec.message());
    }
    std::string err;
    const std::string chain = spec.chain;
    std::unique_ptr<FlowTable> table = FlowTable::open(dir / "flows.seg", std::move(spec), err);
    if (!table) {
        throw Error("state: " + err);
    }
    first = true;
    return *_flow_tables.emplace(chain, std::move(table)).first->second;
}

std::vector<FlowTable *> StateStore::flow_tables()
{
    std::lock_guard lk(_mu);
    std::vector<FlowTable *> v;
    for (auto &[chain, table] : _flow_tables) {
        v.push_back(table.get());
    }
    return v;
}

std::vector<Executor *> StateStore::executors()
{
    std::lock_guard lk(_mu);
    std::vector<Executor *> v;
    for (auto &[k, e] : _executors) {
        v.push_back(e.get());
    }
    return v;
}

void StateStore::tick(uint64_t now_ns)
{
    set_coarse_now(now_ns);
    for (Executor *e : executors()) {
        e->tick(now_ns);
    }
}

} // namespace serpens::state
