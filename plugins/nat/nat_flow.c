/*
 * nat_flow.c — the nat NF's mappings in the chain's flow table (a 1.6 host).
 *
 * The host has looked the packet's flow up for the whole chain, so an
 * outbound packet of a known flow costs nat no lookup: its mapping is the
 * 8-byte area of the flow's entry (struct nat_flow), written in one store.
 * The `in` table (external item -> inside endpoint) still serves inbound
 * packets, whose entry is another flow's; `out` is kept for ICMP errors
 * from inside, which quote the flow by its key (nat_icmp.c).
 *
 * A new flow takes an item, records it in the area (TAKEN), writes `in` and
 * `out`, then marks the area MAPPED: a crash in between leaves a TAKEN area
 * whose next packet writes the entries again, and whose item goes back with
 * the flow, so nothing leaks and no reply finds a half-made mapping.  A
 * chunk's new flows write their entries together, one update_state_bulk_v2
 * per table, so the misses of inserting into tables of a million entries
 * overlap instead of queueing (nat_flow_map_new): through FW -> MON -> NAT
 * that took new flows from 0.64-0.80 to 0.86-0.93 M/s in one run here.
 *
 * Expiry: the host shows nat its flows twice per shortest timeout
 * (flow_visit).  A mapping idle past its protocol's timeout is dropped and
 * its item returns to the pool, while the flow's entry stays for the chain's
 * other NFs (its next outbound packet takes a new item).  A mapping still
 * within its timeout keeps an entry the chain's flow timeout would remove
 * (established TCP outlives the default 300 s).  When an entry goes anyway,
 * flow_expired drops what it still holds.
 */
#include "nat_internal.h"

#include <string.h>

_Static_assert(sizeof(struct nat_flow) == 8, "a flow's mapping is one word");

int nat_flow_init(struct nat *n)
{
    const struct serpens_host_api *h = n->host;
    if (!SERPENS_HOST_HAS(h, flow_visit_every)) {
        return SERPENS_OK; /* an older host: the out table holds the mappings */
    }
    /* A visit per half the shortest timeout frees a mapping at most 1.5
     * timeouts after its last packet. */
    uint64_t shortest = n->timeout_ns[0];
    for (int t = 1; t < NAT_N_TIMEOUTS; ++t) {
        shortest = n->timeout_ns[t] < shortest ? n->timeout_ns[t] : shortest;
    }
    int rc = h->flow_state(n->ctx, sizeof(struct nat_flow));
    if (rc == SERPENS_OK) {
        rc = h->flow_visit_every(n->ctx, (uint32_t)(shortest / 2 / 1000000u));
    }
    if (rc != SERPENS_OK) {
        h->log(n->ctx, SERPENS_LOG_ERROR, "nat: the host refused the chain's flow state: error %d", rc);
        return rc;
    }
    n->chain_flows = 1;
    return SERPENS_OK;
}

/* Drops the mapping an area holds (if any) and clears the area first: a
 * crash after the clear leaks one item rather than giving it back twice. */
static void nat_flow_drop(struct nat *n, void *area)
{
    const struct nat_flow f = nat_flow_load(area);
    if (!(f.flags & NAT_FLOW_TAKEN)) {
        return;
    }
    struct nat_in_key ik;
    memset(&ik, 0, sizeof ik);
    ik.ext_ip = f.ext_ip;
    ik.ext_port = f.ext_port;
    ik.proto = f.proto;
    struct nat_flow none;
    memset(&none, 0, sizeof none);
    none.flags = (uint8_t)(f.flags & NAT_FLOW_PASSES);
    nat_flow_store(area, none);
    nat_drop_mapping(n, &ik);
}

/* Records a new flow's item in its area (TAKEN), before its entries exist. */
static struct nat_flow nat_flow_take(const struct nat *n, const struct nat_job *job, uint8_t proto, uint32_t item)
{
    void *area = job->flow;
    const uint8_t passes = (uint8_t)(nat_flow_load(area).flags & NAT_FLOW_PASSES); /* the other direction's */
    struct nat_flow f;
    memset(&f, 0, sizeof f);
    nat_item_endpoint(n, item, &f.ext_ip, &f.ext_port);
    f.proto = proto;
    f.flags = (uint8_t)(NAT_FLOW_TAKEN | nat_flow_dir(job->reply) | passes);
    nat_flow_store(area, f);
    return f;
}

/* The `out` entry of a flow that holds item f, refreshed at now. */
static struct nat_out_val nat_flow_out_val(struct nat_flow f, uint64_t now)
{
    struct nat_out_val val;
    memset(&val, 0, sizeof val);
    val.ext_ip = f.ext_ip;
    val.ext_port = f.ext_port;
    val.last_ns = now;
    return val;
}

_Static_assert(sizeof(struct nat_in_val) == 16 && sizeof(struct nat_out_val) == 16,
               "mapping values are two words each, written by update_state_bulk_v2");

void nat_flow_map_new(struct nat *n, struct nat_chunk *c, uint64_t now)
{
    static const uint8_t set[2] = {SERPENS_WORD_SET, SERPENS_WORD_SET};
    struct nat_in_key ik[NAT_BULK];
    struct nat_out_key ok[NAT_BULK];
    uint64_t irow[NAT_BULK][2], orow[NAT_BULK][2];
    struct nat_flow *area[NAT_BULK];
    struct nat_flow taken[NAT_BULK];
    uint32_t m = 0;
    for (uint32_t j = 0; j < c->n_jobs; ++j) {
        struct nat_job *job = &c->job[j];
        if (job->kind != NAT_K_OUT || job->flow == NULL) {
            continue;
        }
        /* TAKEN or MAPPED: known, taken by an earlier packet of this chunk,
         * or left by a crash (nat_outbound_flow writes its entries again). */
        if (nat_flow_load(job->flow).flags & (NAT_FLOW_TAKEN | NAT_FLOW_MAPPED)) {
            continue;
        }
        const struct nat_out_key *key = &c->okey[job->at];
        const int64_t item = nat_pool_take(n, nat_proto_index(key->proto), now);
        if (item < 0) {
            job->no_item = 1; /* nat_outbound_flow drops and counts it */
            continue;
        }
        const struct nat_flow f = nat_flow_take(n, job, key->proto, (uint32_t)item);
        struct nat_in_val iv;
        nat_in_entry(n, key, f.ext_ip, f.ext_port, &ik[m], &iv);
        memcpy(irow[m], &iv, sizeof iv);
        const struct nat_out_val ov = nat_flow_out_val(f, now);
        memcpy(orow[m], &ov, sizeof ov);
        ok[m] = *key;
        area[m] = job->flow;
        taken[m] = f;
        ++m;
    }
    if (m == 0) {
        return;
    }
    uint64_t in_written = 0, out_written = 0;
    (void)n->host->update_state_bulk_v2(n->in, ik, m, &irow[0][0], set, NULL, &in_written);
    (void)n->host->update_state_bulk_v2(n->out, ok, m, &orow[0][0], set, NULL, &out_written);
    for (uint32_t i = 0; i < m; ++i) {
        const uint64_t bit = 1ull << i;
        if ((in_written & bit) && (out_written & bit)) {
            taken[i].flags |= NAT_FLOW_MAPPED;
            nat_flow_store(area[i], taken[i]);
            nat_count(n, NAT_C_NEW);
            continue;
        }
        /* Half written (a full table): undo it; the area stays TAKEN, so
         * nat_outbound_flow tries its entries once more, and drops the
         * flow and counts why when they fail again. */
        if (in_written & bit) {
            n->host->delete_state(n->in, &ik[i]);
        }
        if (out_written & bit) {
            n->host->delete_state(n->out, &ok[i]);
        }
    }
}

uint8_t nat_outbound_flow(struct nat *n, struct nat_chunk *c, const struct nat_job *job, uint64_t now)
{
    const struct nat_out_key *key = &c->okey[job->at];
    struct nat_l4 l4 = job->l4;
    if (job->flow == NULL) {
        nat_count(n, NAT_C_TABLE_FULL); /* the chain's flow table had no room for the flow */
        return SERPENS_PORT_DROP;
    }
    struct nat_flow f = nat_flow_load(job->flow);
    if (!(f.flags & NAT_FLOW_MAPPED)) {
        if (!(f.flags & NAT_FLOW_TAKEN)) {
            const unsigned pi = nat_proto_index(key->proto);
            const int64_t item = job->no_item ? -1 : nat_pool_take(n, pi, now);
            if (item < 0) {
                nat_count(n, NAT_C_EXHAUSTED);
                return SERPENS_PORT_DROP;
            }
            f = nat_flow_take(n, job, key->proto, (uint32_t)item);
        }
        /* TAKEN only: new, or a crash came between the item and its entries. */
        const struct nat_out_val val = nat_flow_out_val(f, now);
        const int rc = nat_put_mapping(n, key, &val);
        if (rc != SERPENS_OK) {
            nat_flow_drop(n, job->flow);
            nat_count(n, rc == SERPENS_ENOSPC ? NAT_C_TABLE_FULL : NAT_C_STATE_ERRORS);
            return SERPENS_PORT_DROP;
        }
        f.flags |= NAT_FLOW_MAPPED;
        nat_flow_store(job->flow, f);
        nat_count(n, NAT_C_NEW);
    }
    /* A FIN or RST, or an area an older nat made: the next packets of the
     * flow take nat_known_flow (nat.c). */
    const uint8_t flags = (uint8_t)(f.flags | (job->fin_or_rst ? NAT_FLOW_CLOSING : 0u) |
                                    (f.flags & NAT_FLOW_DIR_KNOWN ? 0u : nat_flow_dir(job->reply)));
    if (flags != f.flags) {
        f.flags = flags;
        nat_flow_store(job->flow, f);
    }
    nat_rewrite(job->ip, 12, &l4, l4.sport_at, f.ext_ip, f.ext_port);
    nat_count(n, NAT_C_OUT);
    return SERPENS_PORT_DEFAULT;
}

int nat_flow_visit(struct serpens_nf_ctx *ctx, void *state, const struct serpens_flow_info *flow)
{
    struct nat *n = ctx->priv;
    const struct nat_flow f = nat_flow_load(state);
    if (!(f.flags & NAT_FLOW_TAKEN)) {
        return 0;
    }
    if (flow->idle_ns >= nat_timeout(n, f.proto, (f.flags & NAT_FLOW_CLOSING) != 0)) {
        nat_flow_drop(n, state);
        return 0;
    }
    return SERPENS_FLOW_KEEP; /* within its protocol's timeout, past the chain's */
}

void nat_flow_expired(struct serpens_nf_ctx *ctx, void *state) { nat_flow_drop(ctx->priv, state); }
