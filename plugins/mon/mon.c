/*
 * mon — traffic monitor: per-flow and per-host packet and byte counts.
 *
 * SYNOPSIS
 *   [[nf]]
 *   name   = "mon"
 *   plugin = "mon"
 *   [nf.config]              # every key optional; defaults shown
 *   max_flows = 65536        # flows the per-flow table holds
 *   max_hosts = 4096         # hosts the per-host table is sized for
 *   merge_ms  = 1000         # how often the state manager folds the
 *                            # instances' host replicas (0: only at scale events)
 *
 * DESCRIPTION
 *   Counts every packet it sees and passes it on unchanged (port 0).  For each
 *   parsed IPv4/IPv6 packet it updates
 *    - the flow's entry, keyed by the direction-independent 5-tuple (both
 *      directions of a connection are one flow): packets, bytes (frame
 *      length), first and last seen (batch clock, ns);
 *    - the source host's sent and the destination host's received packets and
 *      bytes.
 *   Ports are TCP/UDP ports, the echo identifier (in both) for ICMP/ICMPv6
 *   echo, and 0 for fragments, other ICMP messages and other protocols — the
 *   same key the host's parser uses for steering.  Frames the host could not
 *   parse are counted (`unparsed`) and passed.
 *
 *   Host counts are eventually consistent (paper §III-A1): each instance adds
 *   to its own replica and the state manager folds replicas every merge_ms.
 *   Hosts are kept in buckets of MON_BUCKET_HOSTS (the bucket is the table
 *   key, so one timer per bucket, registered at init, merges them all); a
 *   host that finds its bucket full is counted in the bucket's overflow
 *   totals and in `host_overflow`, so sent packets over all hosts plus
 *   overflow always equals the packets counted.
 *
 * READING THE STATE FROM OUTSIDE (serpens-state dump <chain> <nf> <table>)
 *   flows  key   40 B: addr_a[16] addr_b[16] port_a port_b (u16, host order)
 *                      proto ip_version pad[2]; IPv4 in the first 4 bytes of
 *                      each address.  (addr_a, port_a) is the lower endpoint.
 *          value 32 B: packets bytes first_ns last_ns (u64, little endian)
 *   hosts  key    4 B: bucket (u32)
 *          value 400 B: overflow_packets overflow_bytes (u64), then
 *                      MON_BUCKET_HOSTS entries of addr[16] (IPv4 mapped as
 *                      ::ffff:a.b.c.d; all zero = empty) tx_packets tx_bytes
 *                      rx_packets rx_bytes (u64).  The dump shows the base
 *                      (last merge) and each instance's replica; the global
 *                      value is base + sum over instances of (replica - base),
 *                      matched by address.
 *
 * STATE (paper Table I)
 *   flows  PER_FLOW|WRITE         connection statistics
 *   hosts  GLOBAL|WRITE|EVENTUAL  host statistics, with this NF's merge hook
 *
 * COUNTERS
 *   See MON_COUNTERS below.
 *
 * PORTS
 *   0  every packet.
 *
 * Builds against plugin-api/ alone, as C with pedantic warnings.
 */
#include <serpens/nf.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MON_BUCKET_HOSTS 8u
#define MON_HOSTS_PER_BUCKET_AVG 4u /* buckets = max_hosts / this: overflow stays rare */
#define MON_AGG_SLOTS 1024u         /* distinct hosts per batch, power of two, >= 2 * max burst */
#define MON_PUT_RETRIES 4
#define MON_EAGAIN SERPENS_EAGAIN

#define MON_COUNTERS(X)                                                                  \
    X(PACKETS, "packets", "packets seen (all of them pass)")                             \
    X(BYTES, "bytes", "frame bytes seen")                                                \
    X(FLOWS_NEW, "flows_new", "flows this instance saw first")                           \
    X(FLOW_TABLE_FULL, "flow_table_full", "packets of flows the full table could not hold") \
    X(HOST_OVERFLOW, "host_overflow", "host updates that found their bucket full")       \
    X(UNPARSED, "unparsed", "frames the host could not parse: counted here only")        \
    X(STATE_ERRORS, "state_errors", "state API calls that failed unexpectedly")

enum mon_counter {
#define MON_COUNTER_ENUM(sym, name, desc) MON_C_##sym,
    MON_COUNTERS(MON_COUNTER_ENUM)
#undef MON_COUNTER_ENUM
    MON_N_COUNTERS
};

static const char *const mon_counter_names[MON_N_COUNTERS] = {
#define MON_COUNTER_NAME(sym, name, desc) name,
    MON_COUNTERS(MON_COUNTER_NAME)
#undef MON_COUNTER_NAME
};

/* ---- state layouts ---------------------------------------------------- */

struct mon_flow_key {
    uint8_t addr_a[16];
    uint8_t addr_b[16];
    uint16_t port_a;
    uint16_t port_b;
    uint8_t proto;
    uint8_t ip_version;
    uint8_t pad[2];
};

struct mon_flow_val {
    uint64_t packets;
    uint64_t bytes;
    uint64_t first_ns;
    uint64_t last_ns;
};

struct mon_host {
    uint8_t addr[16]; /* all zero: an empty slot */
    uint64_t tx_packets;
    uint64_t tx_bytes;
    uint64_t rx_packets;
    uint64_t rx_bytes;
};

struct mon_bucket {
    uint64_t overflow_packets; /* sent packets of hosts that did not fit */
    uint64_t overflow_bytes;
    struct mon_host host[MON_BUCKET_HOSTS];
};

/* One host's counts gathered over a batch before touching the table. */
struct mon_agg {
    uint8_t addr[16];
    uint32_t hash;
    uint32_t used; /* batch generation that filled this slot */
    uint64_t tx_packets, tx_bytes, rx_packets, rx_bytes;
};

struct mon {
    struct serpens_nf_ctx *ctx;
    const struct serpens_host_api *host;
    serpens_table *flows;
    serpens_table *hosts;
    uint32_t n_buckets;
    uint64_t merge_ns;
    uint64_t *counter[MON_N_COUNTERS];
    uint32_t generation;
    uint32_t n_touched;
    uint16_t touched[MON_AGG_SLOTS];
    struct mon_agg agg[MON_AGG_SLOTS];
    struct mon_bucket scratch;
};

static inline void mon_add(struct mon *m, enum mon_counter c, uint64_t v)
{
    *m->counter[c] += v;
}

static inline uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

/* FNV-1a over an address: which bucket a host lives in, the same on every host. */
static uint32_t mon_addr_hash(const uint8_t addr[16])
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; ++i) {
        h = (h ^ addr[i]) * 16777619u;
    }
    return h ^ (h >> 15);
}

static int addr_is_empty(const uint8_t addr[16])
{
    static const uint8_t zero[16];
    return memcmp(addr, zero, 16) == 0;
}

/* ---- per-host counts (EVENTUAL) --------------------------------------- */

static struct mon_agg *mon_agg_slot(struct mon *m, const uint8_t addr[16])
{
    uint32_t h = mon_addr_hash(addr);
    for (uint32_t probe = 0; probe < MON_AGG_SLOTS; ++probe) {
        uint32_t s = (h + probe) & (MON_AGG_SLOTS - 1);
        struct mon_agg *a = &m->agg[s];
        if (a->used != m->generation) {
            memset(a, 0, sizeof *a);
            memcpy(a->addr, addr, 16);
            a->hash = h;
            a->used = m->generation;
            m->touched[m->n_touched++] = (uint16_t)s;
            return a;
        }
        if (a->hash == h && memcmp(a->addr, addr, 16) == 0) {
            return a;
        }
    }
    return NULL; /* cannot happen: at most 2 per packet, MON_AGG_SLOTS >= 2 * burst */
}

/* Adds one host's batch counts to this instance's replica of its bucket. */
static void mon_flush_host(struct mon *m, const struct mon_agg *a)
{
    uint32_t bucket = a->hash % m->n_buckets;
    struct mon_bucket *b = &m->scratch;
    for (int attempt = 0; attempt < MON_PUT_RETRIES; ++attempt) {
        int rc = m->host->get_state(m->hosts, &bucket, b);
        if (rc == SERPENS_ENOENT) {
            memset(b, 0, sizeof *b);
        } else if (rc != SERPENS_OK) {
            break;
        }
        struct mon_host *slot = NULL;
        for (uint32_t i = 0; i < MON_BUCKET_HOSTS && slot == NULL; ++i) {
            if (memcmp(b->host[i].addr, a->addr, 16) == 0) {
                slot = &b->host[i];
            }
        }
        for (uint32_t i = 0; i < MON_BUCKET_HOSTS && slot == NULL; ++i) {
            if (addr_is_empty(b->host[i].addr)) {
                slot = &b->host[i];
                memcpy(slot->addr, a->addr, 16);
            }
        }
        if (slot != NULL) {
            slot->tx_packets += a->tx_packets;
            slot->tx_bytes += a->tx_bytes;
            slot->rx_packets += a->rx_packets;
            slot->rx_bytes += a->rx_bytes;
        } else {
            b->overflow_packets += a->tx_packets;
            b->overflow_bytes += a->tx_bytes;
        }
        rc = m->host->put_state(m->hosts, &bucket, b);
        if (rc == SERPENS_OK) {
            if (slot == NULL) {
                mon_add(m, MON_C_HOST_OVERFLOW, 1);
            }
            return;
        }
        if (rc != MON_EAGAIN) {
            break;
        }
        /* A merge rewrote our replica between get and put: redo on the new one. */
    }
    mon_add(m, MON_C_STATE_ERRORS, 1);
}

/* The NF's merge hook: G' = G + sum_i (R_i - G), host by host (matched by
 * address, since each replica places hosts in its own slot order).  A host
 * that no longer fits the merged bucket moves its counts to the overflow. */
static int mon_merge(struct serpens_nf_ctx *ctx, const struct serpens_state_hook_args *a)
{
    (void)ctx;
    if (a->value_size != sizeof(struct mon_bucket) || a->whole == NULL || a->out == NULL) {
        return SERPENS_EINVAL;
    }
    const struct mon_bucket *g = a->whole;
    struct mon_bucket out;
    memcpy(&out, g, sizeof out);
    for (uint32_t r = 0; r < a->n; ++r) {
        const struct mon_bucket *rep = a->parts[r];
        out.overflow_packets += rep->overflow_packets - g->overflow_packets;
        out.overflow_bytes += rep->overflow_bytes - g->overflow_bytes;
        for (uint32_t i = 0; i < MON_BUCKET_HOSTS; ++i) {
            const struct mon_host *e = &rep->host[i];
            if (addr_is_empty(e->addr)) {
                continue;
            }
            struct mon_host base;
            memset(&base, 0, sizeof base);
            for (uint32_t j = 0; j < MON_BUCKET_HOSTS; ++j) {
                if (memcmp(g->host[j].addr, e->addr, 16) == 0) {
                    base = g->host[j];
                }
            }
            struct mon_host *dst = NULL;
            for (uint32_t j = 0; j < MON_BUCKET_HOSTS && dst == NULL; ++j) {
                if (memcmp(out.host[j].addr, e->addr, 16) == 0) {
                    dst = &out.host[j];
                }
            }
            for (uint32_t j = 0; j < MON_BUCKET_HOSTS && dst == NULL; ++j) {
                if (addr_is_empty(out.host[j].addr)) {
                    dst = &out.host[j];
                    memcpy(dst->addr, e->addr, 16);
                }
            }
            if (dst == NULL) {
                out.overflow_packets += e->tx_packets - base.tx_packets;
                out.overflow_bytes += e->tx_bytes - base.tx_bytes;
                continue;
            }
            dst->tx_packets += e->tx_packets - base.tx_packets;
            dst->tx_bytes += e->tx_bytes - base.tx_bytes;
            dst->rx_packets += e->rx_packets - base.rx_packets;
            dst->rx_bytes += e->rx_bytes - base.rx_bytes;
        }
    }
    memcpy(a->out, &out, sizeof out);
    return SERPENS_OK;
}

/* ---- the data path ---------------------------------------------------- */

/* Fills the flow key; 0 on success, -1 when the headers it needs are cut. */
static int mon_flow_key(const struct serpens_pkt *p, struct mon_flow_key *k, uint8_t src[16], uint8_t dst[16])
{
    memset(k, 0, sizeof *k);
    memset(src, 0, 16);
    memset(dst, 0, 16);
    const uint8_t *ip = p->data + p->l3_offset;
    uint8_t proto;
    if (p->l3_type == SERPENS_L3_IPV4) {
        if (p->len < (uint32_t)p->l3_offset + 20u) {
            return -1;
        }
        /* IPv4-mapped (::ffff:a.b.c.d) in the host table, as 4 bytes in flows. */
        src[10] = src[11] = dst[10] = dst[11] = 0xff;
        memcpy(src + 12, ip + 12, 4);
        memcpy(dst + 12, ip + 16, 4);
        k->ip_version = 4;
        proto = ip[9];
    } else {
        if (p->len < (uint32_t)p->l3_offset + 40u) {
            return -1;
        }
        memcpy(src, ip + 8, 16);
        memcpy(dst, ip + 24, 16);
        k->ip_version = 6;
        proto = p->l4_proto;
    }
    uint16_t sport = 0, dport = 0;
    if (!(p->flags & SERPENS_PKT_F_FRAGMENT) && p->l4_offset != SERPENS_OFFSET_NONE) {
        const uint8_t *l4 = p->data + p->l4_offset;
        uint32_t avail = p->len > p->l4_offset ? p->len - p->l4_offset : 0;
        if ((proto == 6 || proto == 17) && avail >= 4) {
            sport = rd16(l4);
            dport = rd16(l4 + 2);
        } else if ((proto == 1 && avail >= 8 && (l4[0] == 8 || l4[0] == 0)) ||
                   (proto == 58 && avail >= 8 && (l4[0] == 128 || l4[0] == 129))) {
            sport = dport = rd16(l4 + 4); /* echo id: both directions alike */
        }
    }
    k->proto = proto;
    /* The lower (address, port) endpoint first: one entry per connection. */
    const uint8_t *sa = k->ip_version == 4 ? src + 12 : src;
    const uint8_t *da = k->ip_version == 4 ? dst + 12 : dst;
    size_t alen = k->ip_version == 4 ? 4 : 16;
    int c = memcmp(sa, da, alen);
    if (c < 0 || (c == 0 && sport <= dport)) {
        memcpy(k->addr_a, sa, alen), memcpy(k->addr_b, da, alen);
        k->port_a = sport, k->port_b = dport;
    } else {
        memcpy(k->addr_a, da, alen), memcpy(k->addr_b, sa, alen);
        k->port_a = dport, k->port_b = sport;
    }
    return 0;
}

static void mon_packet(struct mon *m, const struct serpens_pkt *p, uint64_t now)
{
    mon_add(m, MON_C_PACKETS, 1);
    mon_add(m, MON_C_BYTES, p->len);
    if (!(p->flags & SERPENS_PKT_F_PARSED) || p->l3_offset == SERPENS_OFFSET_NONE ||
        (p->l3_type != SERPENS_L3_IPV4 && p->l3_type != SERPENS_L3_IPV6)) {
        mon_add(m, MON_C_UNPARSED, 1);
        return;
    }
    struct mon_flow_key key;
    uint8_t src[16], dst[16];
    if (mon_flow_key(p, &key, src, dst) != 0) {
        mon_add(m, MON_C_UNPARSED, 1);
        return;
    }
    struct mon_flow_val v;
    if (m->host->get_state(m->flows, &key, &v) != SERPENS_OK) {
        memset(&v, 0, sizeof v);
        v.first_ns = now;
        mon_add(m, MON_C_FLOWS_NEW, 1);
    }
    v.packets += 1;
    v.bytes += p->len;
    v.last_ns = now;
    int rc = m->host->put_state(m->flows, &key, &v);
    if (rc != SERPENS_OK) {
        mon_add(m, rc == SERPENS_ENOSPC ? MON_C_FLOW_TABLE_FULL : MON_C_STATE_ERRORS, 1);
    }
    struct mon_agg *s = mon_agg_slot(m, src);
    struct mon_agg *d = mon_agg_slot(m, dst);
    if (s != NULL) {
        s->tx_packets += 1;
        s->tx_bytes += p->len;
    }
    if (d != NULL) {
        d->rx_packets += 1;
        d->rx_bytes += p->len;
    }
}

static void mon_process(struct serpens_nf_ctx *ctx, struct serpens_batch *batch)
{
    struct mon *m = ctx->priv;
    const uint64_t now = batch->now_ns;
    if (++m->generation == 0) {
        /* Wrapped: clear so no slot looks filled by this generation. */
        memset(m->agg, 0, sizeof m->agg);
        m->generation = 1;
    }
    m->n_touched = 0;
    for (uint32_t i = 0; i < batch->count; ++i) {
        if (batch->labels[i] == batch->self) {
            mon_packet(m, &batch->pkts[i], now);
        }
    }
    /* One table update per host per batch instead of one per packet. */
    for (uint32_t t = 0; t < m->n_touched; ++t) {
        mon_flush_host(m, &m->agg[m->touched[t]]);
    }
}

/* ---- configuration (cold path) ---------------------------------------- */

static int mon_config_int(struct mon *m, const serpens_config *cfg, const char *path, int64_t lo, int64_t hi,
                          int64_t *out)
{
    int64_t v = 0;
    int rc = m->host->config_int(cfg, path, &v);
    if (rc == SERPENS_ENOENT) {
        return SERPENS_OK;
    }
    char where[512];
    if (m->host->config_where(cfg, path, where, sizeof where) != SERPENS_OK) {
        snprintf(where, sizeof where, "%s", "(chain file)");
    }
    if (rc != SERPENS_OK) {
        m->host->log(m->ctx, SERPENS_LOG_ERROR, "%s: mon: %s: expected an integer", where, path);
        return SERPENS_EINVAL;
    }
    if (v < lo || v > hi) {
        m->host->log(m->ctx, SERPENS_LOG_ERROR, "%s: mon: %s: %lld is out of range [%lld, %lld]", where, path,
                     (long long)v, (long long)lo, (long long)hi);
        return SERPENS_EINVAL;
    }
    *out = v;
    return SERPENS_OK;
}

static int mon_init(struct serpens_nf_ctx *ctx, const serpens_config *config)
{
    const struct serpens_host_api *h = ctx->host;
    struct mon *m = calloc(1, sizeof *m);
    if (m == NULL) {
        h->log(ctx, SERPENS_LOG_ERROR, "mon: out of memory");
        return SERPENS_ENOMEM;
    }
    ctx->priv = m;
    m->ctx = ctx;
    m->host = h;
    int64_t max_flows = 65536, max_hosts = 4096, merge_ms = 1000;
    int rc;
    if ((rc = mon_config_int(m, config, "max_flows", 1, 1ll << 26, &max_flows)) != SERPENS_OK ||
        (rc = mon_config_int(m, config, "max_hosts", 1, 1ll << 22, &max_hosts)) != SERPENS_OK ||
        (rc = mon_config_int(m, config, "merge_ms", 0, 3600000, &merge_ms)) != SERPENS_OK) {
        return rc;
    }
    m->n_buckets = (uint32_t)((max_hosts + MON_HOSTS_PER_BUCKET_AVG - 1) / MON_HOSTS_PER_BUCKET_AVG);
    m->merge_ns = (uint64_t)merge_ms * 1000000ull;
    if (h->create_table == NULL || h->timer == NULL) {
        h->log(ctx, SERPENS_LOG_ERROR, "mon: this host provides no state API");
        return SERPENS_ENOTSUP;
    }
    m->flows = h->create_table(ctx, "flows", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE,
                               sizeof(struct mon_flow_key), sizeof(struct mon_flow_val), (uint64_t)max_flows);
    m->hosts = h->create_table(ctx, "hosts", SERPENS_STATE_GLOBAL | SERPENS_STATE_WRITE | SERPENS_STATE_EVENTUAL,
                               sizeof(uint32_t), sizeof(struct mon_bucket), m->n_buckets);
    if (m->flows == NULL || m->hosts == NULL) {
        h->log(ctx, SERPENS_LOG_ERROR, "mon: cannot create its state tables (see the host's message)");
        return SERPENS_EINVAL;
    }
    /* Timers are per key: one per bucket, set once here (a bucket that does
     * not exist yet is skipped until it does), never from the data path. */
    if (m->merge_ns != 0 && ctx->instance_id == 0) {
        for (uint32_t b = 0; b < m->n_buckets; ++b) {
            if ((rc = h->timer(m->hosts, &b, m->merge_ns)) != SERPENS_OK) {
                h->log(ctx, SERPENS_LOG_ERROR, "mon: cannot set the merge timer: state error %d", rc);
                return rc;
            }
        }
    }
    for (int c = 0; c < MON_N_COUNTERS; ++c) {
        m->counter[c] = h->counter(ctx, mon_counter_names[c]);
        if (m->counter[c] == NULL) {
            h->log(ctx, SERPENS_LOG_ERROR, "mon: counter '%s' refused", mon_counter_names[c]);
            return SERPENS_ENOMEM;
        }
    }
    return SERPENS_OK;
}

static void mon_fini(struct serpens_nf_ctx *ctx)
{
    free(ctx->priv);
    ctx->priv = NULL;
}

/* ---- registration ---------------------------------------------------- */

static const struct serpens_nf_descriptor mon_descriptor = {
    SERPENS_NF_DESCRIPTOR_HEADER,
    .name = "mon",
    .version = "1.0",
    .summary = "counts packets and bytes per flow and per host (host counts merged across instances)",
    .n_ports = 1,
    .init = mon_init,
    .process = mon_process,
    .fini = mon_fini,
    .merge = mon_merge,
};

SERPENS_NF_REGISTER(mon_descriptor)
