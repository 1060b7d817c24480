/*
 * nat_pool.c — the nat NF's pool of (external address, port) items and the
 * sweep that gives expired mappings' items back to it.
 *
 * EXPIRY (hosts older than 1.6; on a 1.6 host see nat_flow.c)
 *   Mappings expire after the idle timeout of their protocol; only outbound
 *   packets refresh them (RFC 4787 REQ-6 makes inbound refresh optional, and
 *   keeping the inbound path read-only means a reply steered to another
 *   instance never writes a flow it does not own).  Each instance sweeps the
 *   mappings it made, paced to see each twice per shortest timeout, and
 *   returns expired ones' items to its share of the pool.  It walks the `in`
 *   table (scan_state, at most NAT_SWEEP_SLOTS_MAX slots per batch), so the
 *   sweep costs in proportion to max_mappings, not to the pool.  The
 *   mapping tables are created with NF_EXPIRY: the host's own per-flow idle
 *   expiry leaves them alone, so a mapping and its item always go together,
 *   through the sweep (a mapping the host removed would keep its item out of
 *   the pool for good).
 *
 * LIMITATIONS
 *   The sweep runs only when packets arrive: after a quiet period, expired
 *   mappings are freed when traffic resumes (a bounded slice per batch).
 *   Only the instance that took an item frees it: the items of mappings
 *   made by an instance that was scaled in for good stay taken until an
 *   instance with its id runs again.
 */
#include "nat_internal.h"

#include <string.h>

static const uint8_t nat_protos[NAT_N_PROTOS] = {NAT_PROTO_TCP, NAT_PROTO_UDP, NAT_PROTO_ICMP};

static struct nat_pool_key nat_pool_key(const struct nat *n, unsigned pi, uint32_t chunk)
{
    struct nat_pool_key k;
    memset(&k, 0, sizeof k);
    k.fingerprint = n->fingerprint;
    k.chunk = (uint16_t)chunk;
    k.proto = nat_protos[pi];
    return k;
}

/* The inverse: the item of an endpoint (network order), or -1 when it is
 * not in this pool (e.g. one of an earlier pool configuration). */
int64_t nat_endpoint_item(const struct nat *n, uint32_t ip_net, uint16_t port_net)
{
    const int32_t ext = nat_ext_index(n, ntohl(ip_net));
    const uint32_t port = ntohs(port_net);
    if (ext < 0 || port < n->port_min || port - n->port_min >= n->n_ports) {
        return -1;
    }
    return (int64_t)ext * n->n_ports + (port - n->port_min);
}

/* ---- the pool (RELEASE) ----------------------------------------------- */

/* Takes one free item of `chunk` from this instance's share; -1 when none. */
static int64_t nat_chunk_take(struct nat *n, unsigned pi, uint32_t chunk)
{
    struct nat_pool_key key = nat_pool_key(n, pi, chunk);
    for (int attempt = 0; attempt < NAT_PUT_RETRIES; ++attempt) {
        if (n->host->get_state(n->pool, &key, n->bitmap) != SERPENS_OK) {
            return -1;
        }
        /* Start after the last item handed out, so a just-freed port is not
         * reused at once (remote TIME_WAIT). */
        uint32_t start = n->hint[pi] % NAT_CHUNK_ITEMS;
        uint32_t w0 = start / 64u;
        int64_t bit = -1;
        for (uint32_t j = 0; j <= NAT_CHUNK_WORDS && bit < 0; ++j) {
            uint32_t w = (w0 + j) % NAT_CHUNK_WORDS;
            uint64_t word = n->bitmap[w];
            if (j == 0) {
                word &= ~0ull << (start % 64u);
            } else if (j == NAT_CHUNK_WORDS) {
                word &= (start % 64u) ? ~(~0ull << (start % 64u)) : 0;
            }
            if (word != 0) {
                bit = (int64_t)w * 64 + __builtin_ctzll(word);
            }
        }
        if (bit < 0) {
            return -1;
        }
        n->bitmap[bit / 64] &= ~(1ull << (bit % 64));
        int rc = n->host->put_state(n->pool, &key, n->bitmap);
        if (rc == SERPENS_OK) {
            n->hint[pi] = (uint32_t)bit + 1;
            return (int64_t)chunk * NAT_CHUNK_ITEMS + bit;
        }
        if (rc != NAT_EAGAIN) {
            nat_count(n, NAT_C_STATE_ERRORS);
            return -1;
        }
        /* A rebalance moved items between our get and put: read again. */
    }
    return -1;
}

/* Takes a free item for protocol pi, triggering a rebalance when this
 * instance's share is empty.  -1 when the pool has nothing for us. */
int64_t nat_pool_take(struct nat *n, unsigned pi, uint64_t now)
{
    if (now < n->retry_after_ns[pi]) {
        return -1;
    }
    uint32_t window = n->n_chunks < NAT_SCAN_WINDOW ? n->n_chunks : NAT_SCAN_WINDOW;
    for (int pass = 0; pass < 2; ++pass) {
        for (uint32_t j = 0; j < window; ++j) {
            uint32_t c = (n->cursor[pi] + j) % n->n_chunks;
            int64_t item = nat_chunk_take(n, pi, c);
            if (item >= 0) {
                n->cursor[pi] = c;
                n->empty_windows[pi] = 0;
                return item;
            }
        }
        if (pass == 0) {
            /* Our share of these chunks is gone: ask the state manager to
             * re-split what is left (paper §III-A1, "actively updating"). */
            for (uint32_t j = 0; j < window; ++j) {
                struct nat_pool_key key = nat_pool_key(n, pi, (n->cursor[pi] + j) % n->n_chunks);
                n->host->trigger(n->pool, &key);
            }
            nat_count(n, NAT_C_TRIGGERS);
        }
    }
    n->cursor[pi] = (n->cursor[pi] + window) % n->n_chunks;
    if (++n->empty_windows[pi] >= (n->n_chunks + window - 1) / window) {
        /* Every chunk came up empty: back off instead of re-triggering per packet. */
        n->empty_windows[pi] = 0;
        n->retry_after_ns[pi] = now + NAT_EXHAUSTED_BACKOFF_NS;
    }
    return -1;
}

/* Returns an item to this instance's share. */
void nat_pool_give(struct nat *n, unsigned pi, uint32_t item)
{
    struct nat_pool_key key = nat_pool_key(n, pi, item / NAT_CHUNK_ITEMS);
    uint32_t bit = item % NAT_CHUNK_ITEMS;
    for (int attempt = 0; attempt < NAT_PUT_RETRIES; ++attempt) {
        if (n->host->get_state(n->pool, &key, n->bitmap) != SERPENS_OK) {
            break;
        }
        n->bitmap[bit / 64u] |= 1ull << (bit % 64u);
        int rc = n->host->put_state(n->pool, &key, n->bitmap);
        if (rc == SERPENS_OK) {
            n->retry_after_ns[pi] = 0;
            return;
        }
        if (rc != NAT_EAGAIN) {
            break;
        }
    }
    nat_count(n, NAT_C_STATE_ERRORS);
}

/* ---- expiry ----------------------------------------------------------- */

uint64_t nat_timeout(const struct nat *n, uint8_t proto, int closing)
{
    if (proto == NAT_PROTO_TCP) {
        return n->timeout_ns[closing ? NAT_TO_TCP_CLOSED : NAT_TO_TCP];
    }
    return n->timeout_ns[proto == NAT_PROTO_UDP ? NAT_TO_UDP : NAT_TO_ICMP];
}

void nat_in_entry(const struct nat *n, const struct nat_out_key *key, uint32_t ext_ip, uint16_t ext_port,
                  struct nat_in_key *ik, struct nat_in_val *iv)
{
    memset(ik, 0, sizeof *ik);
    memset(iv, 0, sizeof *iv);
    ik->ext_ip = ext_ip;
    ik->ext_port = ext_port;
    ik->proto = key->proto;
    iv->in_ip = key->in_ip;
    iv->rem_ip = key->rem_ip;
    iv->in_port = key->in_port;
    iv->rem_port = key->rem_port;
    iv->owner = (uint16_t)n->ctx->instance_id;
    iv->proto = key->proto;
}

int nat_put_mapping(struct nat *n, const struct nat_out_key *key, const struct nat_out_val *val)
{
    struct nat_in_key ik;
    struct nat_in_val iv;
    nat_in_entry(n, key, val->ext_ip, val->ext_port, &ik, &iv);
    int rc = n->host->put_state(n->in, &ik, &iv);
    if (rc == SERPENS_OK) {
        rc = n->host->put_state(n->out, key, val);
        if (rc != SERPENS_OK) {
            n->host->delete_state(n->in, &ik);
        }
    }
    return rc;
}

/* The forward key of the mapping an `in` entry describes. */
static struct nat_out_key nat_out_key_of(const struct nat_in_val *iv)
{
    struct nat_out_key ok;
    memset(&ok, 0, sizeof ok);
    ok.in_ip = iv->in_ip;
    ok.rem_ip = iv->rem_ip;
    ok.in_port = iv->in_port;
    ok.rem_port = iv->rem_port;
    ok.proto = iv->proto;
    return ok;
}

void nat_drop_mapping(struct nat *n, const struct nat_in_key *ik)
{
    struct nat_in_val iv;
    if (n->host->get_state(n->in, ik, &iv) == SERPENS_OK) {
        const struct nat_out_key ok = nat_out_key_of(&iv);
        struct nat_out_val ov;
        /* Only this item's: the flow may have moved on to another one. */
        if (n->host->get_state(n->out, &ok, &ov) == SERPENS_OK && ov.ext_ip == ik->ext_ip &&
            ov.ext_port == ik->ext_port) {
            n->host->delete_state(n->out, &ok);
        }
        n->host->delete_state(n->in, ik);
    }
    const int64_t item = nat_endpoint_item(n, ik->ext_ip, ik->ext_port);
    if (item >= 0) { /* else an item of another pool configuration: not ours to give back */
        nat_pool_give(n, nat_proto_index(ik->proto), (uint32_t)item);
    }
    nat_count(n, NAT_C_EXPIRED);
}

/* Frees one mapping of this instance (its `in` entry ik -> iv) when its
 * outbound side is idle or gone. */
static void nat_expire_mapping(struct nat *n, const struct nat_in_key *ik, const struct nat_in_val *iv, uint64_t now)
{
    const struct nat_out_key ok = nat_out_key_of(iv);
    struct nat_out_val ov;
    if (n->host->get_state(n->out, &ok, &ov) == SERPENS_OK && ov.ext_ip == ik->ext_ip && ov.ext_port == ik->ext_port &&
        now - ov.last_ns <= nat_timeout(n, iv->proto, ov.closing)) {
        return; /* still in use */
    }
    nat_drop_mapping(n, ik);
}

/* The sweep: walks the `in` table's slots (scan_state), so its cost follows
 * the table, not the pool (16M items per protocol for a /24 of external
 * addresses). */
void nat_sweep_entries(struct nat *n, uint64_t now)
{
    const uint64_t slots = n->host->table_slots(n->in);
    if (slots == 0) {
        return;
    }
    uint64_t budget = serpens_sweep_budget(&n->sweep, slots, now, NAT_SWEEP_SLOTS_MAX);
    struct nat_in_key ik;
    struct nat_in_val iv;
    while (serpens_sweep_next(n->host, n->in, &n->sweep, slots, &budget, &ik, &iv) == SERPENS_OK) {
        if (iv.owner != n->ctx->instance_id || nat_endpoint_item(n, ik.ext_ip, ik.ext_port) < 0) {
            continue; /* another instance's, or an item of another pool configuration */
        }
        nat_expire_mapping(n, &ik, &iv, now);
    }
}

/* ---- filling the pool (cold path) ------------------------------------ */

/* Puts every item of the pool into it, once per executor. */
int nat_pool_init(struct nat *n)
{
    for (unsigned pi = 0; pi < NAT_N_PROTOS; ++pi) {
        for (uint32_t c = 0; c < n->n_chunks; ++c) {
            struct nat_pool_key key = nat_pool_key(n, pi, c);
            /* Timers live in the executor, not in the segment: set them on
             * every start, also for chunks an earlier run made. */
            int rc = SERPENS_OK;
            if (n->rebalance_ns != 0 && (rc = n->host->timer(n->pool, &key, n->rebalance_ns)) != SERPENS_OK) {
                return rc;
            }
            rc = n->host->get_state(n->pool, &key, n->bitmap);
            if (rc == SERPENS_OK) {
                continue; /* another instance (or an earlier run) made it */
            }
            if (rc != SERPENS_ENOENT) {
                return rc;
            }
            uint32_t items = n->n_items - c * NAT_CHUNK_ITEMS;
            if (items > NAT_CHUNK_ITEMS) {
                items = NAT_CHUNK_ITEMS;
            }
            memset(n->bitmap, 0, sizeof n->bitmap);
            for (uint32_t b = 0; b < items; ++b) {
                n->bitmap[b / 64u] |= 1ull << (b % 64u);
            }
            if ((rc = n->host->put_state(n->pool, &key, n->bitmap)) != SERPENS_OK) {
                return rc;
            }
            /* Deal the fresh chunk out to every active instance.  Should two
             * instances ever fill the same chunk, the merge (OR) before the
             * split folds the copies into one. */
            if ((rc = n->host->split(n->pool, &key)) != SERPENS_OK) {
                return rc;
            }
        }
    }
    return SERPENS_OK;
}
