// C-callable shims for the state slots of serpens_host_api.

#include "state/host_api.h"

#include "core/nf_context.h"
#include "state/executor.h"

#include <spdlog/spdlog.h>

namespace serpens::state {

namespace {

serpens_table *shim_create_table(serpens_nf_ctx *ctx, const char *name, uint32_t flags, uint32_t key_size,
                                 uint32_t value_size, uint64_t capacity)
{
    NfContext *nc = ctx ? NfContext::of(ctx) : nullptr;
    if (nc == nullptr || nc->executor == nullptr) {
        spdlog::error("state: create_table('{}'): this NF context has no state executor", name ? name : "");
        return nullptr;
    }
    if (name == nullptr) {
        spdlog::error("state: chain '{}' nf '{}': create_table with a NULL name", nc->chain_name, nc->nf_name);
        return nullptr;
    }
    Executor &ex = *nc->executor;
    ex.set_descriptor(nc->desc);
    TableSpec spec;
    spec.name = name;
    spec.flags = flags;
    spec.key_size = key_size;
    spec.value_size = value_size;
    spec.capacity = capacity;
    std::string err;
    TableHandle *h = ex.open_handle(spec, ctx->instance_id, ctx, err);
    if (h == nullptr) {
        spdlog::error("state: create_table refused: {}", err);
        if (nc->in_init) {
            nc->note_init_error("create_table refused: " + err);
        }
        return nullptr;
    }
    return to_abi(h);
}

int shim_get(serpens_table *t, const void *key, void *value_out)
{
    TableHandle *h = from_abi(t);
    if (h->kind == TableKind::per_flow || h->kind == TableKind::global_read) {
        return h->table->get(key, value_out);
    }
    return h->table->cell_get(key, h->cell, value_out, &h->vc);
}

int shim_put(serpens_table *t, const void *key, const void *value)
{
    TableHandle *h = from_abi(t);
    if (h->kind == TableKind::per_flow || h->kind == TableKind::global_read) {
        return h->table->put(key, value);
    }
    // A removed instance no longer owns a cell; its writes would be lost.
    if (!(ld_rlx(&h->table->header().active_mask) & (1ull << h->instance))) {
        return SERPENS_EINVAL;
    }
    return h->table->cell_put(key, h->cell, value, &h->vc);
}

int shim_delete(serpens_table *t, const void *key) { return from_abi(t)->table->del(key); }

uint64_t shim_get_bulk(serpens_table *t, const void *keys, uint32_t n, void *values)
{
    TableHandle *h = from_abi(t);
    if (h->kind == TableKind::per_flow || h->kind == TableKind::global_read) {
        return h->table->get_bulk(keys, n, values);
    }
    uint64_t mask = 0;
    const uint32_t ks = h->table->key_size(), vs = h->table->value_size();
    for (uint32_t i = 0; i < n && i < max_bulk; ++i) {
        if (h->table->cell_get(static_cast<const uint8_t *>(keys) + static_cast<std::size_t>(i) * ks, h->cell,
                               static_cast<uint8_t *>(values) + static_cast<std::size_t>(i) * vs,
                               &h->vc) == SERPENS_OK) {
            mask |= 1ull << i;
        }
    }
    return mask;
}

uint64_t shim_add_bulk(serpens_table *t, const void *keys, uint32_t n, const uint64_t *deltas)
{
    TableHandle *h = from_abi(t);
    if (h->kind != TableKind::eventual || !(ld_rlx(&h->table->header().active_mask) & (1ull << h->instance))) {
        return 0;
    }
    return h->table->cell_add_bulk(keys, n, h->cell, deltas);
}

uint64_t shim_update_bulk(serpens_table *t, const void *keys, uint32_t n, const uint64_t *rows, const uint8_t *ops,
                          void *values_out)
{
    TableHandle *h = from_abi(t);
    if (h->kind != TableKind::per_flow || !(h->table->flags() & SERPENS_STATE_WRITE) || rows == nullptr ||
        ops == nullptr) {
        return 0;
    }
    return h->table->update_bulk(keys, n, rows, ops, values_out);
}

// Rows 0..n-1 of a bulk call, as a mask.
uint64_t all_rows(uint32_t n) noexcept { return n >= 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1; }

// ABI 1.4: the same writes as shim_update_bulk, but saying why a row was not
// written; the 1.3 call's 0 meant "full" and "not allowed" alike.
int shim_update_bulk_v2(serpens_table *t, const void *keys, uint32_t n, const uint64_t *rows, const uint8_t *ops,
                        void *values_out, uint64_t *written)
{
    if (written == nullptr) {
        return SERPENS_EINVAL;
    }
    *written = 0;
    if (n > max_bulk || rows == nullptr || ops == nullptr || (n != 0 && keys == nullptr)) {
        return SERPENS_EINVAL;
    }
    TableHandle *h = from_abi(t);
    if (h->kind != TableKind::per_flow || !(h->table->flags() & SERPENS_STATE_WRITE) || h->table->read_only() ||
        h->table->value_size() % 8 != 0) {
        return SERPENS_ENOTSUP;
    }
    if (n == 0) {
        return SERPENS_OK;
    }
    *written = h->table->update_bulk(keys, n, rows, ops, values_out);
    return *written == all_rows(n) ? SERPENS_OK : SERPENS_ENOSPC; // insert fails only for room
}

// ABI 1.4: shim_add_bulk with the reason told apart, as update's.
int shim_add_bulk_v2(serpens_table *t, const void *keys, uint32_t n, const uint64_t *deltas, uint64_t *written)
{
    if (written == nullptr) {
        return SERPENS_EINVAL;
    }
    *written = 0;
    if (n > max_bulk || deltas == nullptr || (n != 0 && keys == nullptr)) {
        return SERPENS_EINVAL;
    }
    TableHandle *h = from_abi(t);
    if (h->kind != TableKind::eventual || h->table->value_size() % 8 != 0) {
        return SERPENS_ENOTSUP;
    }
    // A removed instance no longer owns a cell, as in shim_put.
    if (!(ld_rlx(&h->table->header().active_mask) & (1ull << h->instance))) {
        return SERPENS_EINVAL;
    }
    if (n == 0) {
        return SERPENS_OK;
    }
    *written = h->table->cell_add_bulk(keys, n, h->cell, deltas);
    return *written == all_rows(n) ? SERPENS_OK : SERPENS_ENOSPC;
}

int shim_scan(serpens_table *t, uint64_t *cursor, uint32_t max_slots, void *key_out, void *value_out)
{
    if (cursor == nullptr) {
        return SERPENS_EINVAL;
    }
    return from_abi(t)->table->scan(cursor, max_slots, key_out, value_out);
}

uint64_t shim_table_slots(serpens_table *t) { return from_abi(t)->table->n_slots(); }

int shim_split(serpens_table *t, const void *key)
{
    TableHandle *h = from_abi(t);
    return h->executor->split(*h->table, key);
}

int shim_merge(serpens_table *t, const void *key)
{
    TableHandle *h = from_abi(t);
    return h->executor->merge(*h->table, key);
}

int shim_update(serpens_table *t, const void *key)
{
    TableHandle *h = from_abi(t);
    return h->executor->update(*h->table, key);
}

int shim_timer(serpens_table *t, const void *key, uint64_t period_ns)
{
    TableHandle *h = from_abi(t);
    return h->executor->timer(*h->table, key, period_ns);
}

int shim_trigger(serpens_table *t, const void *key)
{
    TableHandle *h = from_abi(t);
    return h->executor->trigger(*h, key);
}

} // namespace

void install_host_api(serpens_host_api &api)
{
    api.create_table = &shim_create_table;
    api.get_state = &shim_get;
    api.put_state = &shim_put;
    api.delete_state = &shim_delete;
    api.get_state_bulk = &shim_get_bulk;
    api.split = &shim_split;
    api.merge = &shim_merge;
    api.update = &shim_update;
    api.timer = &shim_timer;
    api.trigger = &shim_trigger;
    api.add_state_bulk = &shim_add_bulk;
    api.scan_state = &shim_scan;
    api.table_slots = &shim_table_slots;
    api.update_state_bulk = &shim_update_bulk;
    api.update_state_bulk_v2 = &shim_update_bulk_v2;
    api.add_state_bulk_v2 = &shim_add_bulk_v2;
}

} // namespace serpens::state
