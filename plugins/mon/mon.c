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
 *   to its own replica and the state manager folds replicas every merge_ms
 *   with one table-wide timer (the host's default EVENTUAL merge: counters
 *   add, G' = G + sum_i (R_i - G), exact).  Each host is its own key; a batch
 *   sums its packets per host and per flow first, then updates the tables
 *   with one bulk call per 64 hosts (add_state_bulk, misses overlapped) and
 *   one bulk lookup plus one put per flow.  A host that finds the table full
 *   (max_hosts) is added to the single row of host_overflow instead and
 *   counted in `host_overflow`, so tx packets over all hosts plus the
 *   overflow's always equal the packets counted.
 *
 * READING THE STATE FROM OUTSIDE (serpens-state dump <chain> <nf> <table>)
 *   flows  key   40 B: addr_a[16] addr_b[16] port_a port_b (u16, host order)
 *                      proto ip_version pad[2]; IPv4 in the first 4 bytes of
 *                      each address.  (addr_a, port_a) is the lower endpoint.
 *          value 32 B: packets bytes first_ns last_ns (u64, little endian)
 *   hosts  key   16 B: the address (IPv4 mapped as ::ffff:a.b.c.d)
 *          value 32 B: tx_packets tx_bytes rx_packets rx_bytes (u64)
 *   host_overflow  key 4 B: 0 (u32); value 32 B as in hosts: the sums of the
 *                      hosts that did not fit
 *   The dump of an EVENTUAL table shows the base (last merge) and each
 *   instance's replica; the global value is base + sum over instances of
 *   (replica - base), word by word (an all-zero replica: an instance that
 *   never ran since the key was created).
 *
 * STATE (paper Table I)
 *   flows          PER_FLOW|WRITE         connection statistics
 *   hosts          GLOBAL|WRITE|EVENTUAL  host statistics, default merge
 *   host_overflow  GLOBAL|WRITE|EVENTUAL  hosts beyond max_hosts, summed
 *
 * HOST ABI
 *   1.1 or later when merge_ms > 0 (a table-wide merge timer: the NULL key).
 *   Uses add_state_bulk when the host has it, else get_state + put_state.
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
#include <serpens/nf_util.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MON_CHUNK 64u          /* packets summed per table round: the bulk calls' limit */
#define MON_FLOW_SLOTS 128u    /* a chunk's flows: power of two, >= 2 * MON_CHUNK */
#define MON_HOST_SLOTS 256u    /* a chunk's hosts (two per packet): >= 2 * 2 * MON_CHUNK */
#define MON_BULK 64u           /* keys per bulk call (nf.h) */
#define MON_HOST_WORDS 4u
#define MON_PUT_RETRIES 4

#define MON_COUNTERS(X)                                                                  \
    X(PACKETS, "packets", "packets seen (all of them pass)")                             \
    X(BYTES, "bytes", "frame bytes seen")                                                \
    X(FLOWS_NEW, "flows_new", "flows this instance saw first")                           \
    X(FLOW_TABLE_FULL, "flow_table_full", "packets of flows the full table could not hold") \
    X(HOST_OVERFLOW, "host_overflow", "host updates (one per host per batch) that found the host table full") \
    X(UNPARSED, "unparsed", "frames the host could not parse: counted here only")        \
    X(STATE_ERRORS, "state_errors", "state API calls that failed unexpectedly")

enum mon_counter {
#define MON_COUNTER_ENUM(sym, name, desc) MON_C_##sym,
    MON_COUNTERS(MON_COUNTER_ENUM)
#undef MON_COUNTER_ENUM
    MON_N_COUNTERS
};

static const char *const mon_counter_names[MON_N_COUNTERS] = {MON_COUNTERS(SERPENS_COUNTER_NAME)};

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

/* Whole words: the chunk index hashes and compares keys word by word. */
_Static_assert(sizeof(struct mon_flow_key) % 8 == 0, "mon_flow_key is not a whole number of words");

struct mon_flow_val {
    uint64_t packets;
    uint64_t bytes;
    uint64_t first_ns;
    uint64_t last_ns;
};

/* hosts and host_overflow values: MON_HOST_WORDS counters. */
enum { MON_TX_PACKETS, MON_TX_BYTES, MON_RX_PACKETS, MON_RX_BYTES };

struct mon {
    struct serpens_nf_ctx *ctx;
    const struct serpens_host_api *host;
    serpens_table *flows;
    serpens_table *hosts;
    serpens_table *overflow;
    uint64_t merge_ns;
    uint64_t *counter[MON_N_COUNTERS];
    int have_add; /* the host has add_state_bulk (ABI 1.1) */

    /* One chunk's sums, deduplicated through small open-addressing indexes
     * whose slots are valid when their stamp equals `gen`. */
    uint32_t gen;
    uint32_t n_flows, n_hosts;
    uint32_t flow_stamp[MON_FLOW_SLOTS];
    uint8_t flow_at[MON_FLOW_SLOTS];
    uint32_t host_stamp[MON_HOST_SLOTS];
    uint8_t host_at[MON_HOST_SLOTS];
    struct mon_flow_key fkey[MON_CHUNK];
    struct mon_flow_val fval[MON_CHUNK];
    uint64_t fpackets[MON_CHUNK];
    uint64_t fbytes[MON_CHUNK];
    uint8_t hkey[2 * MON_CHUNK][16];
    uint64_t hdelta[2 * MON_CHUNK][MON_HOST_WORDS];
};

static inline void mon_add(struct mon *m, enum mon_counter c, uint64_t v)
{
    *m->counter[c] += v;
}

static inline uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t rd64(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* Equality of n 8-byte words: inline, where a memcmp call cost this NF
 * about 13 ns per packet in serpens-host. */
static inline int mon_words_eq(const void *a, const void *b, unsigned words)
{
    uint64_t diff = 0;
    for (unsigned i = 0; i < words; ++i) {
        diff |= rd64((const uint8_t *)a + 8 * i) ^ rd64((const uint8_t *)b + 8 * i);
    }
    return diff == 0;
}

/* A quick hash of n 8-byte words, for the chunk's indexes only.  The top
 * bits of the last product depend on every input bit (an IPv4 address sits
 * in the high half of a mapped address's second word). */
static inline uint32_t mon_hash(const uint8_t *p, unsigned words)
{
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (unsigned i = 0; i < words; ++i) {
        h = (h ^ rd64(p + 8 * i)) * 0xff51afd7ed558ccdull;
        h ^= h >> 29;
    }
    return (uint32_t)((h * 0xc4ceb9fe1a85ec53ull) >> 32);
}

/* ---- per-host counts (EVENTUAL) --------------------------------------- */

/* Adds n rows to this instance's replica of `t`; returns the mask applied. */
static uint64_t mon_add_rows(struct mon *m, serpens_table *t, const void *keys, uint32_t key_size, uint32_t n,
                             const uint64_t (*rows)[MON_HOST_WORDS])
{
    if (m->have_add) {
        return m->host->add_state_bulk(t, keys, n, &rows[0][0]);
    }
    /* A host without add_state_bulk: read, add, write back; a merge between
     * the two refuses the write (SERPENS_EAGAIN) and the row is redone. */
    uint64_t mask = 0;
    for (uint32_t i = 0; i < n; ++i) {
        const uint8_t *key = (const uint8_t *)keys + (size_t)i * key_size;
        for (int attempt = 0; attempt < MON_PUT_RETRIES; ++attempt) {
            uint64_t v[MON_HOST_WORDS];
            int rc = m->host->get_state(t, key, v);
            if (rc == SERPENS_ENOENT) {
                memset(v, 0, sizeof v);
            } else if (rc != SERPENS_OK) {
                break;
            }
            for (unsigned w = 0; w < MON_HOST_WORDS; ++w) {
                v[w] += rows[i][w];
            }
            rc = m->host->put_state(t, key, v);
            if (rc == SERPENS_OK) {
                mask |= 1ull << i;
            }
            if (rc != SERPENS_EAGAIN) {
                break;
            }
        }
    }
    return mask;
}

static void mon_flush_hosts(struct mon *m)
{
    uint64_t spill[1][MON_HOST_WORDS] = {{0, 0, 0, 0}};
    uint64_t spilled = 0;
    for (uint32_t off = 0; off < m->n_hosts; off += MON_BULK) {
        uint32_t n = m->n_hosts - off < MON_BULK ? m->n_hosts - off : MON_BULK;
        uint64_t ok = mon_add_rows(m, m->hosts, m->hkey[off], 16, n, (const uint64_t(*)[MON_HOST_WORDS])m->hdelta[off]);
        for (uint32_t i = 0; i < n; ++i) {
            if (!(ok & (1ull << i))) {
                for (unsigned w = 0; w < MON_HOST_WORDS; ++w) {
                    spill[0][w] += m->hdelta[off + i][w];
                }
                ++spilled;
            }
        }
    }
    if (spilled != 0) {
        static const uint32_t zero_key = 0;
        mon_add(m, MON_C_HOST_OVERFLOW, spilled);
        if (mon_add_rows(m, m->overflow, &zero_key, sizeof zero_key, 1, (const uint64_t(*)[MON_HOST_WORDS])spill) !=
            1) {
            mon_add(m, MON_C_STATE_ERRORS, 1);
        }
    }
}

static uint64_t *mon_host_row(struct mon *m, const uint8_t addr[16])
{
    uint32_t h = mon_hash(addr, 2);
    for (uint32_t probe = 0;; ++probe) {
        uint32_t s = (h + probe) & (MON_HOST_SLOTS - 1);
        if (m->host_stamp[s] != m->gen) {
            uint32_t at = m->n_hosts++;
            m->host_stamp[s] = m->gen;
            m->host_at[s] = (uint8_t)at;
            memcpy(m->hkey[at], addr, 16);
            memset(m->hdelta[at], 0, sizeof m->hdelta[at]);
            return m->hdelta[at];
        }
        if (mon_words_eq(m->hkey[m->host_at[s]], addr, 2)) {
            return m->hdelta[m->host_at[s]];
        }
    }
}

/* ---- per-flow counts ---------------------------------------------------- */

static void mon_flush_flows(struct mon *m, uint64_t now)
{
    uint32_t n = m->n_flows;
    const uint64_t hit = serpens_get_state_bulk(m->host, m->flows, m->fkey, n, m->fval, sizeof m->fkey[0],
                                                sizeof m->fval[0]);
    for (uint32_t j = 0; j < n; ++j) {
        struct mon_flow_val *v = &m->fval[j];
        if (!(hit & (1ull << j))) {
            memset(v, 0, sizeof *v);
            v->first_ns = now;
            mon_add(m, MON_C_FLOWS_NEW, 1);
        }
        v->packets += m->fpackets[j];
        v->bytes += m->fbytes[j];
        v->last_ns = now;
        int rc = m->host->put_state(m->flows, &m->fkey[j], v);
        if (rc == SERPENS_ENOSPC) {
            mon_add(m, MON_C_FLOW_TABLE_FULL, m->fpackets[j]);
        } else if (rc != SERPENS_OK) {
            mon_add(m, MON_C_STATE_ERRORS, 1);
        }
    }
}

static void mon_count_flow(struct mon *m, const struct mon_flow_key *k, uint32_t len)
{
    uint32_t h = mon_hash((const uint8_t *)k, sizeof *k / 8);
    for (uint32_t probe = 0;; ++probe) {
        uint32_t s = (h + probe) & (MON_FLOW_SLOTS - 1);
        if (m->flow_stamp[s] != m->gen) {
            uint32_t at = m->n_flows++;
            m->flow_stamp[s] = m->gen;
            m->flow_at[s] = (uint8_t)at;
            m->fkey[at] = *k;
            m->fpackets[at] = 1;
            m->fbytes[at] = len;
            return;
        }
        uint32_t at = m->flow_at[s];
        if (mon_words_eq(&m->fkey[at], k, sizeof *k / 8)) {
            m->fpackets[at] += 1;
            m->fbytes[at] += len;
            return;
        }
    }
}

/* ---- the data path ---------------------------------------------------- */

static inline void wr64(uint8_t *p, uint64_t w)
{
    memcpy(p, &w, 8);
}

/* The flow's ports: TCP/UDP ports, the echo id in both for ICMP(v6) echo,
 * else 0. */
static void mon_ports(const struct serpens_pkt *p, uint8_t proto, uint16_t *sport, uint16_t *dport)
{
    *sport = *dport = 0;
    if ((p->flags & SERPENS_PKT_F_FRAGMENT) || p->l4_offset == SERPENS_OFFSET_NONE) {
        return;
    }
    const uint8_t *l4 = p->data + p->l4_offset;
    uint32_t avail = p->len > p->l4_offset ? p->len - p->l4_offset : 0;
    if ((proto == 6 || proto == 17) && avail >= 4) {
        *sport = rd16(l4);
        *dport = rd16(l4 + 2);
    } else if ((proto == 1 && avail >= 8 && (l4[0] == 8 || l4[0] == 0)) ||
               (proto == 58 && avail >= 8 && (l4[0] == 128 || l4[0] == 129))) {
        *sport = *dport = rd16(l4 + 4); /* echo id: both directions alike */
    }
}

/* The key's last word: port_a, port_b, proto, ip_version, pad[2], as the
 * struct lays them out on a little-endian host, port_a being the lower
 * endpoint's (the source's when src_first).  Computed, not stored field by
 * field and read back: that read would stall on store forwarding too. */
static inline uint64_t mon_tail_word(int src_first, uint16_t sport, uint16_t dport, uint8_t proto, uint8_t version)
{
    const uint16_t port_a = src_first ? sport : dport, port_b = src_first ? dport : sport;
    return (uint64_t)port_a | (uint64_t)port_b << 16 | (uint64_t)proto << 32 | (uint64_t)version << 40;
}
_Static_assert(offsetof(struct mon_flow_key, port_a) == 32 && offsetof(struct mon_flow_key, port_b) == 34 &&
                   offsetof(struct mon_flow_key, proto) == 36 && offsetof(struct mon_flow_key, ip_version) == 37,
               "mon_tail_word follows struct mon_flow_key");

/* Fills the flow key and the two host keys; 0 on success, -1 when the
 * headers it needs are cut.  Keys are written as whole words: the chunk
 * index reads them back as words at once, and a word pieced together from
 * narrower stores stalls that read (store forwarding fails). */
static int mon_flow_key(const struct serpens_pkt *p, struct mon_flow_key *k, uint8_t src[16], uint8_t dst[16])
{
    const uint8_t *ip = p->data + p->l3_offset;
    uint8_t *kb = (uint8_t *)k;
    uint16_t sport, dport;
    if (p->l3_type == SERPENS_L3_IPV4) {
        if (p->len < (uint32_t)p->l3_offset + 20u) {
            return -1;
        }
        uint32_t sa, da; /* network order, as in the packet */
        memcpy(&sa, ip + 12, 4);
        memcpy(&da, ip + 16, 4);
        /* IPv4-mapped (::ffff:a.b.c.d) in the host table, as 4 bytes in flows
         * (words little-endian, as the host's state segments are). */
        wr64(src, 0), wr64(src + 8, 0xffff0000ull | (uint64_t)sa << 32);
        wr64(dst, 0), wr64(dst + 8, 0xffff0000ull | (uint64_t)da << 32);
        mon_ports(p, ip[9], &sport, &dport);
        /* The lower (address, port) endpoint first: one entry per connection. */
        uint32_t sh = rd32(ip + 12), dh = rd32(ip + 16);
        int src_first = sh < dh || (sh == dh && sport <= dport);
        wr64(kb, src_first ? sa : da), wr64(kb + 8, 0);
        wr64(kb + 16, src_first ? da : sa), wr64(kb + 24, 0);
        wr64(kb + 32, mon_tail_word(src_first, sport, dport, ip[9], 4));
        return 0;
    }
    if (p->len < (uint32_t)p->l3_offset + 40u) {
        return -1;
    }
    memcpy(src, ip + 8, 16);
    memcpy(dst, ip + 24, 16);
    mon_ports(p, p->l4_proto, &sport, &dport);
    int c = memcmp(src, dst, 16);
    int src_first = c < 0 || (c == 0 && sport <= dport);
    memcpy(k->addr_a, src_first ? src : dst, 16);
    memcpy(k->addr_b, src_first ? dst : src, 16);
    wr64(kb + 32, mon_tail_word(src_first, sport, dport, p->l4_proto, 6));
    return 0;
}

/* Adds one packet to the chunk's sums. */
static void mon_packet(struct mon *m, const struct serpens_pkt *p)
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
    mon_count_flow(m, &key, p->len);
    uint64_t *s = mon_host_row(m, src);
    s[MON_TX_PACKETS] += 1;
    s[MON_TX_BYTES] += p->len;
    uint64_t *d = mon_host_row(m, dst);
    d[MON_RX_PACKETS] += 1;
    d[MON_RX_BYTES] += p->len;
}

static void mon_chunk_begin(struct mon *m)
{
    if (++m->gen == 0) {
        /* Wrapped: clear so no slot looks filled by this generation. */
        memset(m->flow_stamp, 0, sizeof m->flow_stamp);
        memset(m->host_stamp, 0, sizeof m->host_stamp);
        m->gen = 1;
    }
    m->n_flows = 0;
    m->n_hosts = 0;
}

static void mon_chunk_end(struct mon *m, uint64_t now)
{
    if (m->n_flows != 0) {
        mon_flush_flows(m, now);
    }
    if (m->n_hosts != 0) {
        mon_flush_hosts(m);
    }
}

static void mon_process(struct serpens_nf_ctx *ctx, struct serpens_batch *batch)
{
    struct mon *m = ctx->priv;
    const uint64_t now = batch->now_ns;
    uint32_t in_chunk = 0;
    mon_chunk_begin(m);
    for (uint32_t i = 0; i < batch->count; ++i) {
        if (batch->labels[i] != batch->self) {
            continue;
        }
        mon_packet(m, &batch->pkts[i]);
        /* One table round per MON_CHUNK packets: at most that many flows and
         * twice as many hosts, whatever the burst size. */
        if (++in_chunk == MON_CHUNK) {
            mon_chunk_end(m, now);
            mon_chunk_begin(m);
            in_chunk = 0;
        }
    }
    mon_chunk_end(m, now);
}

/* ---- configuration (cold path) ---------------------------------------- */

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
    if ((rc = serpens_config_int_range(ctx, config, "mon", "max_flows", 1, 1ll << 26, &max_flows)) != SERPENS_OK ||
        (rc = serpens_config_int_range(ctx, config, "mon", "max_hosts", 1, 1ll << 22, &max_hosts)) != SERPENS_OK ||
        (rc = serpens_config_int_range(ctx, config, "mon", "merge_ms", 0, 3600000, &merge_ms)) != SERPENS_OK) {
        return rc;
    }
    m->merge_ns = (uint64_t)merge_ms * 1000000ull;
    if (h->create_table == NULL || h->get_state == NULL || h->put_state == NULL || h->timer == NULL) {
        h->log(ctx, SERPENS_LOG_ERROR, "mon: this host provides no state API");
        return SERPENS_ENOTSUP;
    }
    if (m->merge_ns != 0 && h->abi_minor < 1) {
        h->log(ctx, SERPENS_LOG_ERROR,
               "mon: merge_ms > 0 needs a host of ABI 1.1 or later (table-wide merge timers); this host speaks "
               "%u.%u (set merge_ms = 0 to merge only at scale events)",
               (unsigned)h->abi_major, (unsigned)h->abi_minor);
        return SERPENS_ENOTSUP;
    }
    m->have_add = SERPENS_HOST_HAS(h, add_state_bulk);
    const uint32_t ev = SERPENS_STATE_GLOBAL | SERPENS_STATE_WRITE | SERPENS_STATE_EVENTUAL;
    m->flows = h->create_table(ctx, "flows", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE,
                               sizeof(struct mon_flow_key), sizeof(struct mon_flow_val), (uint64_t)max_flows);
    m->hosts = h->create_table(ctx, "hosts", ev, 16, MON_HOST_WORDS * 8, (uint64_t)max_hosts);
    m->overflow = h->create_table(ctx, "host_overflow", ev, sizeof(uint32_t), MON_HOST_WORDS * 8, 1);
    if (m->flows == NULL || m->hosts == NULL || m->overflow == NULL) {
        h->log(ctx, SERPENS_LOG_ERROR, "mon: cannot create its state tables (see the host's message)");
        return SERPENS_EINVAL;
    }
    /* One table-wide timer per EVENTUAL table (NULL key: every key, also
     * those created later), set once, never from the data path. */
    if (m->merge_ns != 0 && ctx->instance_id == 0) {
        if ((rc = h->timer(m->hosts, NULL, m->merge_ns)) != SERPENS_OK ||
            (rc = h->timer(m->overflow, NULL, m->merge_ns)) != SERPENS_OK) {
            h->log(ctx, SERPENS_LOG_ERROR, "mon: cannot set the merge timer: state error %d", rc);
            return rc;
        }
    }
    return serpens_register_counters(ctx, "mon", mon_counter_names, MON_N_COUNTERS, m->counter, NULL);
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
    .version = "2.0",
    .summary = "counts packets and bytes per flow and per host (host counts merged across instances)",
    .n_ports = 1,
    .init = mon_init,
    .process = mon_process,
    .fini = mon_fini,
};

SERPENS_NF_REGISTER(mon_descriptor)
