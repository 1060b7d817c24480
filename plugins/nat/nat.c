/*
 * nat — source NAT with port translation (NAPT) for IPv4 TCP, UDP and ICMP echo.
 *
 * SYNOPSIS
 *   [[nf]]
 *   name   = "nat"
 *   plugin = "nat"
 *   [nf.config]
 *   inside       = ["10.0.0.0/8", "192.168.0.0/16"]   # prefixes to translate (string or array)
 *   external     = ["203.0.113.1", "203.0.113.8/30",   # the pool's addresses: a string or an array
 *                   "198.51.100.10-198.51.100.20"]     #   of addresses, prefixes and a-b ranges
 *   ports        = [1024, 65535]    # external ports (and ICMP echo ids), inclusive; default shown
 *   max_mappings = 1048576          # flows the mapping tables hold; default shown
 *   rebalance_ms = 0                # > 0: also rebalance the pool periodically (timer)
 *   [nf.config.timeouts]            # idle timeouts in seconds; defaults shown
 *   tcp = 7440                      #   established TCP (RFC 5382 REQ-5: at least 2 h 4 min)
 *   tcp_closed = 240                #   TCP after a FIN or RST from inside
 *   udp = 300                       #   RFC 4787 REQ-5: at least 2 min
 *   icmp = 60                       #   RFC 5508 REQ-1: at least 60 s
 *
 * DESCRIPTION
 *   A packet from an inside address to a destination outside every inside
 *   prefix is translated: its source address and port (TCP, UDP) or echo
 *   identifier (ICMP echo request) are replaced by an (external address,
 *   port) item taken from the pool, the same item for every packet of the
 *   flow.  A packet to an external address is looked up by (protocol,
 *   external address, port) and translated back when it comes from the
 *   flow's remote endpoint (address- and port-dependent filtering); other
 *   packets to external addresses are dropped.  Every other IPv4 packet
 *   (inside to inside, outside to outside) and every IPv6 packet passes
 *   unchanged.  IP and L4 checksums are updated incrementally (RFC 1624);
 *   a UDP checksum of zero (none) stays zero.
 *
 *   ICMP errors (destination unreachable, time exceeded, parameter problem)
 *   about a mapped flow are translated too (nat_icmp.c).
 *
 *   Dropped: frames the host could not parse (a NAT must not forward what it
 *   cannot vet), fragments and protocols other than TCP/UDP/ICMP echo (and
 *   the ICMP errors above) to or from translated addresses, packets cut short
 *   inside the headers it rewrites or quotes, and new flows when the pool has
 *   no free item.
 *
 *   Mappings expire after the idle timeout of their protocol (at most
 *   32000 s).  On a 1.6 host the forward mapping lives in the chain's flow
 *   table and the host's flow sweep shows nat its flows (nat_flow.c), and a
 *   reload that changes `inside` applies to new flows only: a mapped flow
 *   keeps its translation, and a direction that passed keeps passing, until
 *   the flow expires.  On an older host the instance
 *   that made a mapping sweeps its own tables (nat_pool.c, also for the
 *   limitations).
 *
 * STATE (paper Table I)
 *   pool  GLOBAL|WRITE|RELEASE  key (pool fingerprint, chunk, protocol), value a
 *                               bitmap of 4096 items, set = free.  The host's
 *                               default split deals each chunk's free items out
 *                               to the instances; an instance that runs out
 *                               triggers a rebalance and drops (counted) only
 *                               when that finds nothing either.
 *   per flow  8 B of the chain's flow table (1.6 hosts): the flow's external
 *                               addr:port, protocol and flags (taken, mapped,
 *                               closing, which way it goes out, which ways
 *                               pass untouched), one word (nat_flow.c)
 *   out   PER_FLOW|WRITE|NF_EXPIRY  (proto, inside addr:port, remote addr:port)
 *                               -> (external addr:port, last outbound packet);
 *                               with the flow table only ICMP errors from
 *                               inside read it
 *   in    PER_FLOW|WRITE|NF_EXPIRY  (proto, external addr:port) -> (inside addr:port,
 *                               remote addr:port, owning instance)
 *   Pool size: (addresses x ports) / 4096 keys per protocol; the host keeps
 *   (1 + max instances) double-buffered cells per key, i.e. about 17 KiB per
 *   4096 items with 16 instances (2 addresses x 64512 ports: 1.6 MiB).
 *   The fingerprint (of the external addresses and port range) keeps a
 *   restarted host with a changed pool from reading an old pool's bitmaps.
 *   Changing the pool while old mappings are live is not supported: give the
 *   NF a new name in the chain, or clear the host's state directory.
 *   `serpensctl state dump <chain> <nf> out|in|pool` shows these tables
 *   field by field (nat declares their layout; names as in nat_internal.h).
 *
 * COUNTERS
 *   See NAT_COUNTERS in nat_internal.h: one line each, with what it counts.
 *
 * PORTS
 *   0  translated and passed packets (everything not dropped).
 *
 * Builds against plugin-api/ alone, as C with pedantic warnings.
 */
#include "nat_internal.h"

#include <stdlib.h>
#include <string.h>

static const char *const nat_counter_names[NAT_N_COUNTERS] = {NAT_COUNTERS(SERPENS_COUNTER_NAME)};

/* ---- the data path ---------------------------------------------------- */

/* Finds the L4 fields to rewrite; 0 on success, else the counter to bump. */
static int nat_l4_of(struct serpens_pkt *p, uint8_t proto, int outbound, struct nat_l4 *l4)
{
    if (p->l4_offset == SERPENS_OFFSET_NONE) {
        return NAT_C_MALFORMED;
    }
    uint32_t avail = p->len > p->l4_offset ? p->len - p->l4_offset : 0;
    l4->hdr = p->data + p->l4_offset;
    l4->proto = proto;
    if (proto == NAT_PROTO_TCP) {
        if (avail < 20) {
            return NAT_C_MALFORMED;
        }
        l4->csum_at = 16, l4->sport_at = 0, l4->dport_at = 2, l4->pseudo = 1;
        return 0;
    }
    if (proto == NAT_PROTO_UDP) {
        if (avail < 8) {
            return NAT_C_MALFORMED;
        }
        l4->csum_at = 6, l4->sport_at = 0, l4->dport_at = 2, l4->pseudo = 1;
        return 0;
    }
    if (proto == NAT_PROTO_ICMP) {
        if (avail < 8) {
            return NAT_C_MALFORMED;
        }
        /* Only echo: outbound requests (8), inbound replies (0), code 0. */
        if (l4->hdr[1] != 0 || l4->hdr[0] != (outbound ? 8 : 0)) {
            return NAT_C_UNSUPPORTED;
        }
        l4->csum_at = 2, l4->sport_at = 4, l4->dport_at = 4, l4->pseudo = 0;
        return 0;
    }
    return NAT_C_UNSUPPORTED;
}

/* A TCP segment with FIN or RST: the flow is closing. */
static int nat_fin_or_rst(const struct nat_l4 *l4) { return l4->proto == NAT_PROTO_TCP && (l4->hdr[13] & 0x05) != 0; }

/* A packet that is not the NAT's business: it passes, and so will the next
 * packets of its flow's direction (NAT_FLOW_PASS_*). */
static enum nat_kind nat_pass(struct nat *n, const struct nat_job *job, uint8_t *port)
{
    nat_count(n, NAT_C_PASSED);
    *port = SERPENS_PORT_DEFAULT;
    if (job->flow != NULL) {
        struct nat_flow f = nat_flow_load(job->flow);
        const uint8_t bit = nat_flow_pass(job->reply);
        /* Never the way a mapping translates, which can pass only after a
         * reload changed `inside` (an echo reply on an echo flow's way
         * out): that way keeps translating. */
        const uint8_t mapped_way = (uint8_t)(NAT_FLOW_TAKEN | nat_flow_dir(job->reply));
        if (!(f.flags & bit) && (f.flags & (NAT_FLOW_TAKEN | NAT_FLOW_DIR_KNOWN | NAT_FLOW_OUT_REPLY)) != mapped_way) {
            f.flags |= bit;
            nat_flow_store(job->flow, f);
        }
    }
    return NAT_K_DONE;
}

/* Decides what a packet needs.  NAT_K_DONE: its verdict is in *port (and
 * counted); else its key is added to the chunk. */
static enum nat_kind nat_classify(struct nat *n, struct serpens_pkt *p, struct nat_chunk *c, struct nat_job *job,
                                  uint8_t *port)
{
    *port = SERPENS_PORT_DROP;
    if (!(p->flags & SERPENS_PKT_F_PARSED)) {
        nat_count(n, NAT_C_MALFORMED);
        return NAT_K_DONE;
    }
    if (p->l3_type != SERPENS_L3_IPV4) {
        return nat_pass(n, job, port);
    }
    if (p->l3_offset == SERPENS_OFFSET_NONE || p->len < (uint32_t)p->l3_offset + 20u) {
        nat_count(n, NAT_C_MALFORMED);
        return NAT_K_DONE;
    }
    uint8_t *ip = p->data + p->l3_offset;
    uint32_t src = ntohl(serpens_ld32(ip + 12));
    uint32_t dst = ntohl(serpens_ld32(ip + 16));
    int outbound = nat_inside(n, src) && !nat_inside(n, dst);
    int inbound = !outbound && nat_ext_index(n, dst) >= 0;
    if (!outbound && !inbound) {
        return nat_pass(n, job, port);
    }
    if (p->flags & SERPENS_PKT_F_FRAGMENT) {
        /* Non-first fragments carry no ports to translate or look up. */
        nat_count(n, NAT_C_UNSUPPORTED);
        return NAT_K_DONE;
    }
    uint8_t proto = ip[9];
    if (proto == NAT_PROTO_ICMP && serpens_is_icmp_error(p)) {
        *port = nat_icmp_error(n, p, ip, outbound);
        return NAT_K_DONE;
    }
    int bad = nat_l4_of(p, proto, outbound, &job->l4);
    if (bad) {
        nat_count(n, (enum nat_counter)bad);
        return NAT_K_DONE;
    }
    job->ip = ip;
    const struct nat_l4 *l4 = &job->l4;
    if (outbound) {
        struct nat_out_key *key = &c->okey[c->n_out];
        memset(key, 0, sizeof *key);
        key->in_ip = serpens_ld32(ip + 12);
        key->rem_ip = serpens_ld32(ip + 16);
        key->in_port = serpens_ld16(l4->hdr + l4->sport_at);
        key->rem_port = proto == NAT_PROTO_ICMP ? 0 : serpens_ld16(l4->hdr + l4->dport_at);
        key->proto = proto;
        job->fin_or_rst = nat_fin_or_rst(l4);
        job->at = (uint8_t)c->n_out++;
        return NAT_K_OUT;
    }
    struct nat_in_key *key = &c->ikey[c->n_in];
    memset(key, 0, sizeof *key);
    key->ext_ip = serpens_ld32(ip + 16);
    key->ext_port = serpens_ld16(l4->hdr + l4->dport_at);
    key->proto = proto;
    job->at = (uint8_t)c->n_in++;
    return NAT_K_IN;
}

/* After a write to key `at` of the out table, later packets of the chunk
 * with the same key must read it again (their bulk result is old). */
static void nat_invalidate_out(struct nat_chunk *c, uint32_t at)
{
    for (uint32_t j = at + 1; j < c->n_out; ++j) {
        if ((c->ohit & (1ull << j)) && memcmp(&c->okey[j], &c->okey[at], sizeof c->okey[at]) == 0) {
            c->ohit &= ~(1ull << j);
        }
    }
}

/* Inside -> outside.  Returns SERPENS_PORT_DEFAULT or SERPENS_PORT_DROP. */
static uint8_t nat_outbound(struct nat *n, struct nat_chunk *c, const struct nat_job *job, uint64_t now)
{
    const struct nat_out_key *key = &c->okey[job->at];
    struct nat_out_val *val = &c->oval[job->at];
    struct nat_l4 l4 = job->l4;
    const uint8_t proto = key->proto;
    const int fin_or_rst = job->fin_or_rst;
    /* A bulk miss may since have been created by an earlier packet of this
     * chunk (a new flow's second packet): look again before taking an item. */
    if ((c->ohit & (1ull << job->at)) || n->host->get_state(n->out, key, val) == SERPENS_OK) {
        if (now - val->last_ns >= n->refresh_ns || (fin_or_rst && !val->closing)) {
            val->last_ns = now;
            val->closing |= (uint8_t)fin_or_rst;
            if (n->host->put_state(n->out, key, val) != SERPENS_OK) {
                nat_count(n, NAT_C_STATE_ERRORS); /* the old stamp stays: harmless */
            }
            nat_invalidate_out(c, job->at);
        }
    } else {
        unsigned pi = nat_proto_index(proto);
        int64_t item = nat_pool_take(n, pi, now);
        if (item < 0) {
            nat_count(n, NAT_C_EXHAUSTED);
            return SERPENS_PORT_DROP;
        }
        memset(val, 0, sizeof *val);
        nat_item_endpoint(n, (uint32_t)item, &val->ext_ip, &val->ext_port);
        val->closing = (uint8_t)fin_or_rst;
        val->last_ns = now;
        const int rc = nat_put_mapping(n, key, val);
        if (rc != SERPENS_OK) {
            nat_pool_give(n, pi, (uint32_t)item);
            nat_count(n, rc == SERPENS_ENOSPC ? NAT_C_TABLE_FULL : NAT_C_STATE_ERRORS);
            return SERPENS_PORT_DROP;
        }
        nat_count(n, NAT_C_NEW);
    }
    nat_rewrite(job->ip, 12, &l4, l4.sport_at, val->ext_ip, val->ext_port);
    nat_count(n, NAT_C_OUT);
    return SERPENS_PORT_DEFAULT;
}

/* Outside -> an external address. */
static uint8_t nat_inbound(struct nat *n, struct nat_chunk *c, const struct nat_job *job)
{
    const struct nat_in_key *key = &c->ikey[job->at];
    struct nat_in_val *val = &c->ival[job->at];
    struct nat_l4 l4 = job->l4;
    const uint8_t *ip = job->ip;
    /* A miss: the mapping may have been made by this chunk's outbound packets. */
    if (!(c->ihit & (1ull << job->at)) && n->host->get_state(n->in, key, val) != SERPENS_OK) {
        nat_count(n, NAT_C_NO_MAPPING);
        return SERPENS_PORT_DROP;
    }
    if (val->rem_ip != serpens_ld32(ip + 12) ||
        (key->proto != NAT_PROTO_ICMP && val->rem_port != serpens_ld16(l4.hdr + l4.sport_at))) {
        nat_count(n, NAT_C_FILTERED);
        return SERPENS_PORT_DROP;
    }
    nat_rewrite(job->ip, 16, &l4, l4.dport_at, val->in_ip, val->in_port);
    nat_count(n, NAT_C_IN);
    return SERPENS_PORT_DEFAULT;
}

/* A packet of a known flow, the common case with the chain's flow table.
 * Its area says whether its direction passes (a reply to an inside host,
 * transit, IPv6), or else the flow's outbound direction and its item: it
 * is passed or translated here without classifying it or going through
 * the chunk.  Returns 0 for anything else, which nat_classify sees.  A
 * reload that changes `inside` applies to new flows: known ones keep
 * passing or translating until they expire, as conntrack keeps a
 * connection's NAT binding. */
static int nat_known_flow(struct nat *n, struct serpens_pkt *p, void *area, int reply)
{
    if (area == NULL) {
        return 0;
    }
    struct nat_flow f = nat_flow_load(area);
    if (f.flags & nat_flow_pass(reply)) {
        if (!(p->flags & SERPENS_PKT_F_PARSED)) {
            return 0; /* rewritten beyond parsing by an NF before nat: nat_classify drops it */
        }
        nat_count(n, NAT_C_PASSED);
        return 1;
    }
    const uint8_t want = (uint8_t)(NAT_FLOW_MAPPED | nat_flow_dir(reply));
    if ((f.flags & (NAT_FLOW_MAPPED | NAT_FLOW_DIR_KNOWN | NAT_FLOW_OUT_REPLY)) != want ||
        (p->flags & (SERPENS_PKT_F_PARSED | SERPENS_PKT_F_FRAGMENT)) != SERPENS_PKT_F_PARSED ||
        p->l3_type != SERPENS_L3_IPV4 || p->l4_proto != f.proto) {
        return 0;
    }
    if (f.proto == NAT_PROTO_ICMP) {
        struct nat_l4 l4;
        if (nat_l4_of(p, f.proto, 1, &l4) != 0) {
            return 0; /* an ICMP other than an echo request: nat_classify says what */
        }
        nat_rewrite(p->data + p->l3_offset, 12, &l4, l4.sport_at, f.ext_ip, f.ext_port);
        nat_count(n, NAT_C_OUT);
        return 1;
    }
    /* TCP or UDP, the only other protocols a mapping holds.  Which of the two
     * picks offsets rather than code paths: with both in the traffic, a
     * branch on it was mispredicted about every other packet. */
    const unsigned tcp = f.proto == NAT_PROTO_TCP;
    if (p->l4_offset == SERPENS_OFFSET_NONE || p->len < (uint32_t)p->l4_offset + 8u + 12u * tcp) {
        return 0; /* cut short: nat_classify counts it */
    }
    uint8_t *l4 = p->data + p->l4_offset;
    const unsigned fin_or_rst = (l4[13u * tcp] & (0x05u * tcp)) != 0; /* TCP's flags; nothing for UDP */
    if (fin_or_rst && !(f.flags & NAT_FLOW_CLOSING)) {
        f.flags |= NAT_FLOW_CLOSING;
        nat_flow_store(area, f);
    }
    serpens_ipv4_rewrite(p->data + p->l3_offset, 12, l4, 6u + 10u * tcp, 0, 1, (int)(tcp ^ 1u), f.ext_ip, f.ext_port);
    nat_count(n, NAT_C_OUT);
    return 1;
}

/* Up to NAT_BULK packets: classify all, look their mappings up in one bulk
 * call per table, then translate in order. */
static void nat_run_chunk(struct nat *n, struct serpens_batch *batch, uint32_t first, uint32_t end, uint64_t now)
{
    struct nat_chunk *c = &n->chunk;
    const struct serpens_flow_view flows = serpens_batch_flow_view(batch);
    c->n_out = c->n_in = 0;
    for (uint32_t i = first; i < end; ++i) {
        struct nat_job *job = &c->job[i - first];
        job->kind = NAT_K_DONE;
        job->no_item = 0;
        if (batch->labels[i] != batch->self) {
            continue;
        }
        struct serpens_pkt *p = serpens_batch_pkt(batch, i);
        if (n->chain_flows) {
            job->flow = serpens_flow_area(&flows, i);
            job->reply = (serpens_flow_flags(&flows, i) & SERPENS_FLOW_REPLY) != 0;
            if (nat_known_flow(n, p, job->flow, job->reply)) {
                batch->ports[i] = SERPENS_PORT_DEFAULT;
                continue;
            }
        } else {
            job->flow = NULL;
        }
        job->kind = (uint8_t)nat_classify(n, p, c, job, &batch->ports[i]);
    }
    c->n_jobs = end - first;
    if (c->n_out + c->n_in == 0) {
        /* The usual chunk of mapped flows: each packet was translated on
         * the way, or needs nothing more.  No lookups, no second pass. */
        return;
    }
    if (n->chain_flows) {
        nat_flow_map_new(n, c, now);
    }
    /* With the chain's flow table an outbound packet's mapping is its area. */
    c->ohit = n->chain_flows ? 0
                             : serpens_get_state_bulk(n->host, n->out, c->okey, c->n_out, c->oval, sizeof c->okey[0],
                                                      sizeof c->oval[0]);
    c->ihit = serpens_get_state_bulk(n->host, n->in, c->ikey, c->n_in, c->ival, sizeof c->ikey[0], sizeof c->ival[0]);
    for (uint32_t i = first; i < end; ++i) {
        const struct nat_job *job = &c->job[i - first];
        if (job->kind == NAT_K_OUT) {
            batch->ports[i] = n->chain_flows ? nat_outbound_flow(n, c, job, now) : nat_outbound(n, c, job, now);
        } else if (job->kind == NAT_K_IN) {
            batch->ports[i] = nat_inbound(n, c, job);
        }
    }
}

static void nat_process(struct serpens_nf_ctx *ctx, struct serpens_batch *batch)
{
    struct nat *n = ctx->priv;
    const uint64_t now = batch->now_ns;
    for (uint32_t first = 0; first < batch->count; first += NAT_BULK) {
        nat_run_chunk(n, batch, first, batch->count - first < NAT_BULK ? batch->count : first + NAT_BULK, now);
    }
    if (!n->chain_flows) {
        nat_sweep_entries(n, now); /* else the host's sweep shows nat its flows (nat_flow.c) */
    }
}

static int nat_init(struct serpens_nf_ctx *ctx, const serpens_config *config)
{
    const struct serpens_host_api *h = ctx->host;
    struct nat *n = calloc(1, sizeof *n);
    if (n == NULL) {
        h->log(ctx, SERPENS_LOG_ERROR, "nat: out of memory");
        return SERPENS_ENOMEM;
    }
    ctx->priv = n;
    n->ctx = ctx;
    n->host = h;
    int rc = nat_configure(n, config);
    if (rc != SERPENS_OK || (rc = nat_flow_init(n)) != SERPENS_OK) {
        return rc;
    }
    n->pool = h->create_table(ctx, "pool", SERPENS_STATE_GLOBAL | SERPENS_STATE_WRITE | SERPENS_STATE_RELEASE,
                              sizeof(struct nat_pool_key), sizeof n->bitmap, (uint64_t)n->n_chunks * NAT_N_PROTOS);
    /* The sweep alone expires mappings, so an item goes back with its mapping. */
    const uint32_t flow_flags = SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE | SERPENS_STATE_NF_EXPIRY;
    n->out = h->create_table(ctx, "out", flow_flags, sizeof(struct nat_out_key), sizeof(struct nat_out_val),
                             n->max_mappings);
    n->in =
        h->create_table(ctx, "in", flow_flags, sizeof(struct nat_in_key), sizeof(struct nat_in_val), n->max_mappings);
    if (n->pool == NULL || n->out == NULL || n->in == NULL) {
        h->log(ctx, SERPENS_LOG_ERROR, "nat: cannot create its state tables (see the host's message)");
        return SERPENS_EINVAL;
    }
    if ((rc = nat_pool_init(n)) != SERPENS_OK) {
        h->log(ctx, SERPENS_LOG_ERROR, "nat: cannot fill the address pool: state error %d", rc);
        return rc;
    }
    if ((rc = serpens_register_counters(ctx, "nat", nat_counter_names, NAT_N_COUNTERS, n->counter, NULL)) !=
        SERPENS_OK) {
        return rc;
    }
    n->sweep.last_ns = h->now_ns();
    struct in_addr first = {htonl(n->ext_ip[0])};
    h->log(ctx, SERPENS_LOG_INFO,
           "nat: %u inside prefixes, %u external addresses from %s, ports %u-%u (%u items per protocol)", n->n_inside,
           n->n_ext, inet_ntoa(first), n->port_min, n->port_min + n->n_ports - 1, n->n_items);
    return SERPENS_OK;
}

static void nat_fini(struct serpens_nf_ctx *ctx)
{
    free(ctx->priv);
    ctx->priv = NULL;
}

/* ---- registration ---------------------------------------------------- */

/* What the tools show of nat's tables (nf.h, "What a table's bytes mean").
 * Addresses and ports are in network order, as in the packet. */
#define NAT_FIELD(type, member, kind)                                                                                  \
    {                                                                                                                  \
#member, (uint32_t)offsetof(type, member), kind, 0                                                             \
    }
static const struct serpens_field nat_pool_key_fields[] = {
    NAT_FIELD(struct nat_pool_key, fingerprint, SERPENS_FIELD_U32),
    NAT_FIELD(struct nat_pool_key, chunk, SERPENS_FIELD_U16),
    NAT_FIELD(struct nat_pool_key, proto, SERPENS_FIELD_U8),
};
static const struct serpens_field nat_pool_value_fields[] = {
    {"free_bitmap", 0, SERPENS_FIELD_BYTES, NAT_CHUNK_ITEMS / 8},
};
static const struct serpens_field nat_out_key_fields[] = {
    NAT_FIELD(struct nat_out_key, in_ip, SERPENS_FIELD_IPV4),
    NAT_FIELD(struct nat_out_key, rem_ip, SERPENS_FIELD_IPV4),
    NAT_FIELD(struct nat_out_key, in_port, SERPENS_FIELD_BE16),
    NAT_FIELD(struct nat_out_key, rem_port, SERPENS_FIELD_BE16),
    NAT_FIELD(struct nat_out_key, proto, SERPENS_FIELD_U8),
};
static const struct serpens_field nat_out_value_fields[] = {
    NAT_FIELD(struct nat_out_val, ext_ip, SERPENS_FIELD_IPV4),
    NAT_FIELD(struct nat_out_val, ext_port, SERPENS_FIELD_BE16),
    NAT_FIELD(struct nat_out_val, closing, SERPENS_FIELD_U8),
    NAT_FIELD(struct nat_out_val, last_ns, SERPENS_FIELD_U64),
};
static const struct serpens_field nat_in_key_fields[] = {
    NAT_FIELD(struct nat_in_key, ext_ip, SERPENS_FIELD_IPV4),
    NAT_FIELD(struct nat_in_key, ext_port, SERPENS_FIELD_BE16),
    NAT_FIELD(struct nat_in_key, proto, SERPENS_FIELD_U8),
};
static const struct serpens_field nat_in_value_fields[] = {
    NAT_FIELD(struct nat_in_val, in_ip, SERPENS_FIELD_IPV4),
    NAT_FIELD(struct nat_in_val, rem_ip, SERPENS_FIELD_IPV4),
    NAT_FIELD(struct nat_in_val, in_port, SERPENS_FIELD_BE16),
    NAT_FIELD(struct nat_in_val, rem_port, SERPENS_FIELD_BE16),
    NAT_FIELD(struct nat_in_val, owner, SERPENS_FIELD_U16),
    NAT_FIELD(struct nat_in_val, proto, SERPENS_FIELD_U8),
};
#undef NAT_FIELD
#define NAT_N(fields) (uint16_t)(sizeof fields / sizeof fields[0])
static const struct serpens_table_layout nat_layouts[] = {
    {"pool", nat_pool_key_fields, nat_pool_value_fields, NAT_N(nat_pool_key_fields), NAT_N(nat_pool_value_fields), 0},
    {"out", nat_out_key_fields, nat_out_value_fields, NAT_N(nat_out_key_fields), NAT_N(nat_out_value_fields), 0},
    {"in", nat_in_key_fields, nat_in_value_fields, NAT_N(nat_in_key_fields), NAT_N(nat_in_value_fields), 0},
};
#undef NAT_N

static const struct serpens_nf_descriptor nat_descriptor = {
    SERPENS_NF_DESCRIPTOR_HEADER,
    .name = "nat",
    .version = "1.0",
    .summary = "source NAT (NAPT) for IPv4 TCP/UDP/ICMP echo with a pool split across instances",
    .n_ports = 1,
    .init = nat_init,
    .process = nat_process,
    .fini = nat_fini,
    .min_host_minor = SERPENS_ABI_MINOR_PKT_STRIDE, /* serpens_batch_pkt */
    .flow_state_size = 0,                           /* asked for in init on a 1.6 host (nat_flow.c) */
    .flow_expired = nat_flow_expired,
    .flow_visit = nat_flow_visit,
    .table_layouts = nat_layouts,
    .n_table_layouts = sizeof nat_layouts / sizeof nat_layouts[0],
};

SERPENS_NF_REGISTER(nat_descriptor)
