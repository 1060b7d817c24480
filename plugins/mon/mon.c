/*
 * mon — traffic monitor: per-flow and per-host packet and byte counts.
 *
 * SYNOPSIS
 *   [[nf]]
 *   name   = "mon"
 *   plugin = "mon"
 *   [nf.config]              # every key optional; defaults shown
 *   max_flows = 1048576      # flows the per-flow table holds
 *   max_hosts = 262144       # hosts the per-host table is sized for
 *   merge_ms  = 1000         # how often the state manager folds the
 *                            # instances' host replicas (0: only at scale events)
 *   fold_ms   = 1000         # how long a flow's counts may wait before they
 *                            # are added to its hosts' (0: every batch)
 *   idle_timeout = 300       # seconds without a packet before a flow's entry
 *                            # is removed (0: never)
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
 *   A batch sums its packets per flow first, then updates up to 64 flows with
 *   one update_state_bulk_v2 (counts added, last seen set, one probe per
 *   flow).  With fold_ms = 0, where every write folds, it does one bulk
 *   lookup and one put per flow instead: one write less.
 *
 *   Host counts are eventually consistent (paper §III-A1), in two steps.
 *    1. Fold: a flow's entry keeps the packets and bytes each endpoint sent
 *       that its hosts have not been told of yet (`pending`).  They are added
 *       to the hosts' counts when the flow is next written at least fold_ms
 *       after its last fold, or, for a flow that went quiet, by the sweep
 *       (below) once it has been idle for fold_ms; so a host's counts lag its
 *       flows' by less than 2 * fold_ms.  Adding per flow every fold_ms rather
 *       than per packet is what keeps mon cheap: two host-table updates per
 *       packet made it cost four times what fw or nat cost.  Pending counts
 *       live in the shared entry, so a crash or restart loses none of them.
 *    2. Merge: each instance adds to its own replica of `hosts` (one bulk
 *       add_state_bulk per 64 hosts) and the state manager folds the replicas
 *       every merge_ms with one table-wide timer (the host's default EVENTUAL
 *       merge: counters add, G' = G + sum_i (R_i - G), exact).
 *   At any moment, a host's exact counts are its global value in `hosts` plus
 *   the pending counts of its flows.  A host that finds the table full
 *   (max_hosts) is added to the single row of host_overflow instead and
 *   counted in `host_overflow`, so tx packets over all hosts, the overflow's
 *   and the flows' pending always sum to the packets counted.
 *
 *   Each flow entry names its owner, the instance that last wrote it (the
 *   host steers a flow to one instance).  Each instance sweeps the flows
 *   table (scan_state, at most MON_SWEEP_SLOTS_MAX slots per batch, a whole
 *   pass per min(fold_ms, idle_timeout / 2)): it folds the
 *   pending counts of its own flows idle for fold_ms and removes its flows
 *   idle for idle_timeout (folding what they still hold).  The table is
 *   NF_EXPIRY, so the host never removes an entry with pending counts.
 *
 * READING THE STATE FROM OUTSIDE (serpens-state dump <chain> <nf> <table>)
 *   flows  key   40 B: addr_a[16] addr_b[16] port_a port_b (u16, host order)
 *                      proto ip_version pad[2]; IPv4 in the first 4 bytes of
 *                      each address.  (addr_a, port_a) is the lower endpoint.
 *          value 80 B: packets bytes first_ns last_ns (both directions),
 *                      pending: a_packets a_bytes b_packets b_bytes (sent by
 *                      endpoint a / b, not yet in the hosts' counts),
 *                      folded_ns owner (u64 each, little endian)
 *   hosts  key   16 B: the address (IPv4 mapped as ::ffff:a.b.c.d)
 *          value 32 B: tx_packets tx_bytes rx_packets rx_bytes (u64)
 *   host_overflow  key 4 B: 0 (u32); value 32 B as in hosts: the sums of the
 *                      hosts that did not fit
 *   The dump of an EVENTUAL table shows the base (last merge) and each
 *   instance's replica; the global value is base + sum over instances of
 *   (replica - base), word by word (an all-zero replica: an instance that
 *   never ran since the key was created).
 *
 * LIMITATIONS
 *   The sweep runs only when packets arrive: after traffic stops, the last
 *   fold_ms of counts stay pending in the flows (read them there) until
 *   traffic resumes.  Only a flow's owner folds and removes it: the flows of
 *   an instance scaled in for good wait for an instance with its id, or for
 *   their next packet (which makes its instance the owner).
 *
 * STATE (paper Table I)
 *   flows          PER_FLOW|WRITE|NF_EXPIRY  connection statistics
 *   hosts          GLOBAL|WRITE|EVENTUAL  host statistics, default merge
 *   host_overflow  GLOBAL|WRITE|EVENTUAL  hosts beyond max_hosts, summed
 *
 * HOST ABI
 *   1.4 or later (min_host_minor): update_state_bulk_v2 for the flows
 *   (get_state_bulk + put_state when fold_ms = 0), scan_state for the sweep,
 *   a table-wide merge timer (the NULL key), and add_state_bulk_v2 for the
 *   hosts.  A write the host
 *   refuses (not for a full table) counts in state_errors, not in
 *   flow_table_full or host_overflow.
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

#define MON_CHUNK 64u       /* packets summed per table round: the bulk calls' limit */
#define MON_FLOW_SLOTS 128u /* a chunk's flows: power of two, >= 2 * MON_CHUNK */
#define MON_HOST_SLOTS 256u /* a chunk's hosts (two per packet): >= 2 * 2 * MON_CHUNK */
#define MON_BULK 64u        /* keys per bulk call (nf.h) */
#define MON_HOST_WORDS 4u
#define MON_SWEEP_SLOTS_MAX 4096u /* flow slots the sweep walks per batch at most */

#define MON_COUNTERS(X)                                                                                                \
    X(PACKETS, "packets", "packets seen (all of them pass)")                                                           \
    X(BYTES, "bytes", "frame bytes seen")                                                                              \
    X(FLOWS_NEW, "flows_new", "flows this instance saw first")                                                         \
    X(FLOW_TABLE_FULL, "flow_table_full", "packets of flows the full table could not hold")                            \
    X(FLOWS_EXPIRED, "flows_expired", "flows removed after idle_timeout without a packet")                             \
    X(HOST_OVERFLOW, "host_overflow", "host updates (one per host per table round) that found the host table full")    \
    X(UNPARSED, "unparsed", "frames the host could not parse: counted here only")                                      \
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

/* What each endpoint of a flow sent: a flow's pending counts, a chunk's sums. */
enum { MON_A_PACKETS, MON_A_BYTES, MON_B_PACKETS, MON_B_BYTES, MON_DIR_WORDS };

struct mon_flow_val {
    uint64_t packets; /* both directions */
    uint64_t bytes;
    uint64_t first_ns;
    uint64_t last_ns;
    uint64_t pending[MON_DIR_WORDS]; /* not yet added to the hosts' counts */
    uint64_t folded_ns;              /* when pending was last added */
    uint64_t owner;                  /* instance id of the last writer */
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
    uint64_t fold_ns; /* 0: fold at every write */
    uint64_t idle_ns; /* 0: flows never expire here */
    uint64_t *counter[MON_N_COUNTERS];
    struct serpens_sweep sweep;

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
    struct mon_flow_val frow[MON_CHUNK]; /* update_state_bulk's rows */
    uint64_t fdelta[MON_CHUNK][MON_DIR_WORDS];
    uint8_t hkey[2 * MON_CHUNK][16];
    uint64_t hdelta[2 * MON_CHUNK][MON_HOST_WORDS];
};

static inline void mon_add(struct mon *m, enum mon_counter c, uint64_t v) { *m->counter[c] += v; }

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

static void mon_flush_hosts(struct mon *m)
{
    uint64_t spill[1][MON_HOST_WORDS] = {{0, 0, 0, 0}};
    uint64_t spilled = 0;
    for (uint32_t off = 0; off < m->n_hosts; off += MON_BULK) {
        uint32_t n = m->n_hosts - off < MON_BULK ? m->n_hosts - off : MON_BULK;
        uint64_t ok = 0;
        const int rc = m->host->add_state_bulk_v2(m->hosts, m->hkey[off], n, &m->hdelta[off][0], &ok);
        if (rc != SERPENS_OK && rc != SERPENS_ENOSPC) {
            mon_add(m, MON_C_STATE_ERRORS, 1); /* refused, not full: host_overflow is for full */
            continue;
        }
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
        uint64_t ok = 0;
        if (m->host->add_state_bulk_v2(m->overflow, &zero_key, 1, &spill[0][0], &ok) != SERPENS_OK) {
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

/* An endpoint's address as a hosts key: IPv4 mapped (::ffff:a.b.c.d). */
static void mon_host_key(const struct mon_flow_key *k, const uint8_t addr[16], uint8_t out[16])
{
    if (k->ip_version == 4) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, addr, 4);
    } else {
        memcpy(out, addr, 16);
    }
}

/* Adds what a flow's endpoints sent (d: MON_DIR_WORDS) to the hosts' rows of
 * this chunk; at most two rows. */
static void mon_fold(struct mon *m, const struct mon_flow_key *k, const uint64_t d[MON_DIR_WORDS])
{
    if ((d[MON_A_PACKETS] | d[MON_B_PACKETS]) == 0) {
        return;
    }
    uint8_t a[16], b[16];
    mon_host_key(k, k->addr_a, a);
    mon_host_key(k, k->addr_b, b);
    uint64_t *ra = mon_host_row(m, a);
    ra[MON_TX_PACKETS] += d[MON_A_PACKETS], ra[MON_TX_BYTES] += d[MON_A_BYTES];
    ra[MON_RX_PACKETS] += d[MON_B_PACKETS], ra[MON_RX_BYTES] += d[MON_B_BYTES];
    uint64_t *rb = mon_host_row(m, b);
    rb[MON_TX_PACKETS] += d[MON_B_PACKETS], rb[MON_TX_BYTES] += d[MON_B_BYTES];
    rb[MON_RX_PACKETS] += d[MON_A_PACKETS], rb[MON_RX_BYTES] += d[MON_A_BYTES];
}

/* A written flow's pending counts go to its hosts now: fold_ms = 0, fold_ms
 * since its last fold, or a clock that went back. */
static int mon_fold_due(const struct mon *m, const struct mon_flow_val *v, uint64_t now)
{
    return m->fold_ns == 0 || now < v->folded_ns || now - v->folded_ns >= m->fold_ns;
}

/* Moves v's pending counts into `out` and stamps the fold. */
static void mon_take_pending(struct mon_flow_val *v, uint64_t out[MON_DIR_WORDS], uint64_t now)
{
    memcpy(out, v->pending, sizeof v->pending);
    memset(v->pending, 0, sizeof v->pending);
    v->folded_ns = now;
}

/* ---- per-flow counts ---------------------------------------------------- */

/* A flow's row for update_state_bulk, and what each of its words does. */
static const uint8_t mon_flow_ops[sizeof(struct mon_flow_val) / 8] = {
    SERPENS_WORD_ADD,  SERPENS_WORD_ADD,                                     /* packets, bytes */
    SERPENS_WORD_KEEP, SERPENS_WORD_SET,                                     /* first_ns, last_ns */
    SERPENS_WORD_ADD,  SERPENS_WORD_ADD, SERPENS_WORD_ADD, SERPENS_WORD_ADD, /* pending */
    SERPENS_WORD_KEEP, SERPENS_WORD_SET,                                     /* folded_ns, owner */
};
_Static_assert(offsetof(struct mon_flow_val, pending) == 32 && offsetof(struct mon_flow_val, owner) == 72,
               "mon_flow_ops follows struct mon_flow_val");

/* One read-modify-write per flow (the counts added, last_ns and owner set),
 * and a put only for the flows whose fold is due, once per fold_ms each. */
static void mon_update_flows(struct mon *m, uint64_t now)
{
    const uint32_t n = m->n_flows;
    for (uint32_t j = 0; j < n; ++j) {
        const uint64_t *d = m->fdelta[j];
        struct mon_flow_val *r = &m->frow[j];
        r->packets = d[MON_A_PACKETS] + d[MON_B_PACKETS];
        r->bytes = d[MON_A_BYTES] + d[MON_B_BYTES];
        r->first_ns = r->last_ns = r->folded_ns = now;
        memcpy(r->pending, d, sizeof r->pending);
        r->owner = m->ctx->instance_id;
    }
    uint64_t written = 0;
    const int rc =
        m->host->update_state_bulk_v2(m->flows, m->fkey, n, (const uint64_t *)m->frow, mon_flow_ops, m->fval, &written);
    if (rc != SERPENS_OK && rc != SERPENS_ENOSPC) {
        mon_add(m, MON_C_STATE_ERRORS, 1); /* refused, not full */
    }
    for (uint32_t j = 0; j < n; ++j) {
        const uint64_t *d = m->fdelta[j];
        if (!(written & (1ull << j))) {
            /* Not written: the hosts still count this chunk's packets. */
            mon_fold(m, &m->fkey[j], d);
            if (rc == SERPENS_ENOSPC) {
                mon_add(m, MON_C_FLOW_TABLE_FULL, m->frow[j].packets);
            }
            continue;
        }
        struct mon_flow_val *v = &m->fval[j];
        if (v->packets == m->frow[j].packets) {
            mon_add(m, MON_C_FLOWS_NEW, 1); /* an entry holds at least one packet */
        }
        if (!mon_fold_due(m, v, now)) {
            continue;
        }
        uint64_t fold[MON_DIR_WORDS];
        mon_take_pending(v, fold, now);
        if (m->host->put_state(m->flows, &m->fkey[j], v) == SERPENS_OK) {
            mon_fold(m, &m->fkey[j], fold);
        } else {
            mon_add(m, MON_C_STATE_ERRORS, 1); /* the counts stay pending in the entry */
        }
    }
}

static void mon_flush_flows(struct mon *m, uint64_t now)
{
    /* With fold_ms = 0 every write folds: get + put is then one write less. */
    if (m->fold_ns != 0) {
        mon_update_flows(m, now);
        return;
    }
    uint32_t n = m->n_flows;
    const uint64_t hit =
        serpens_get_state_bulk(m->host, m->flows, m->fkey, n, m->fval, sizeof m->fkey[0], sizeof m->fval[0]);
    for (uint32_t j = 0; j < n; ++j) {
        struct mon_flow_val *v = &m->fval[j];
        const uint64_t *d = m->fdelta[j];
        if (!(hit & (1ull << j))) {
            memset(v, 0, sizeof *v);
            v->first_ns = v->folded_ns = now;
            mon_add(m, MON_C_FLOWS_NEW, 1);
        }
        v->packets += d[MON_A_PACKETS] + d[MON_B_PACKETS];
        v->bytes += d[MON_A_BYTES] + d[MON_B_BYTES];
        for (unsigned w = 0; w < MON_DIR_WORDS; ++w) {
            v->pending[w] += d[w];
        }
        v->last_ns = now;
        v->owner = m->ctx->instance_id;
        uint64_t fold[MON_DIR_WORDS];
        const int due = mon_fold_due(m, v, now);
        if (due) {
            mon_take_pending(v, fold, now);
        }
        int rc = m->host->put_state(m->flows, &m->fkey[j], v);
        if (rc == SERPENS_OK) {
            if (due) {
                mon_fold(m, &m->fkey[j], fold);
            }
            continue;
        }
        /* Not stored: the hosts still count this chunk's packets (the entry,
         * if any, keeps its own pending counts). */
        mon_fold(m, &m->fkey[j], d);
        if (rc == SERPENS_ENOSPC) {
            mon_add(m, MON_C_FLOW_TABLE_FULL, d[MON_A_PACKETS] + d[MON_B_PACKETS]);
        } else {
            mon_add(m, MON_C_STATE_ERRORS, 1);
        }
    }
}

/* Adds one packet to the chunk's sums: `a_sent` when endpoint a sent it. */
static void mon_count_flow(struct mon *m, const struct mon_flow_key *k, uint32_t len, int a_sent)
{
    uint32_t h = mon_hash((const uint8_t *)k, sizeof *k / 8);
    const unsigned dir = a_sent ? MON_A_PACKETS : MON_B_PACKETS;
    for (uint32_t probe = 0;; ++probe) {
        uint32_t s = (h + probe) & (MON_FLOW_SLOTS - 1);
        uint32_t at = m->flow_at[s];
        if (m->flow_stamp[s] != m->gen) {
            at = m->n_flows++;
            m->flow_stamp[s] = m->gen;
            m->flow_at[s] = (uint8_t)at;
            m->fkey[at] = *k;
            memset(m->fdelta[at], 0, sizeof m->fdelta[at]);
        } else if (!mon_words_eq(&m->fkey[at], k, sizeof *k / 8)) {
            continue; /* another flow's slot */
        }
        m->fdelta[at][dir] += 1;
        m->fdelta[at][dir + 1] += len;
        return;
    }
}

/* ---- the data path ---------------------------------------------------- */

static inline void wr64(uint8_t *p, uint64_t w) { memcpy(p, &w, 8); }

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
        *sport = serpens_ld_be16(l4);
        *dport = serpens_ld_be16(l4 + 2);
    } else if ((proto == 1 && avail >= 8 && (l4[0] == 8 || l4[0] == 0)) ||
               (proto == 58 && avail >= 8 && (l4[0] == 128 || l4[0] == 129))) {
        *sport = *dport = serpens_ld_be16(l4 + 4); /* echo id: both directions alike */
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

/* Fills the flow key and *a_sent (the packet's source is endpoint a); 0 on
 * success, -1 when the headers it needs are cut.  Keys are written as whole
 * words: the chunk index reads them back as words at once, and a word pieced
 * together from narrower stores stalls that read (store forwarding fails). */
static int mon_flow_key(const struct serpens_pkt *p, struct mon_flow_key *k, int *a_sent)
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
        mon_ports(p, ip[9], &sport, &dport);
        /* The lower (address, port) endpoint first: one entry per connection. */
        uint32_t sh = serpens_ld_be32(ip + 12), dh = serpens_ld_be32(ip + 16);
        int src_first = sh < dh || (sh == dh && sport <= dport);
        wr64(kb, src_first ? sa : da), wr64(kb + 8, 0);
        wr64(kb + 16, src_first ? da : sa), wr64(kb + 24, 0);
        wr64(kb + 32, mon_tail_word(src_first, sport, dport, ip[9], 4));
        *a_sent = src_first;
        return 0;
    }
    if (p->len < (uint32_t)p->l3_offset + 40u) {
        return -1;
    }
    const uint8_t *src = ip + 8, *dst = ip + 24;
    mon_ports(p, p->l4_proto, &sport, &dport);
    int c = memcmp(src, dst, 16);
    int src_first = c < 0 || (c == 0 && sport <= dport);
    memcpy(k->addr_a, src_first ? src : dst, 16);
    memcpy(k->addr_b, src_first ? dst : src, 16);
    wr64(kb + 32, mon_tail_word(src_first, sport, dport, p->l4_proto, 6));
    *a_sent = src_first;
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
    int a_sent;
    if (mon_flow_key(p, &key, &a_sent) != 0) {
        mon_add(m, MON_C_UNPARSED, 1);
        return;
    }
    mon_count_flow(m, &key, p->len, a_sent);
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

/* The sweep: over this instance's flows, folds the pending
 * counts of those idle for fold_ms and removes those idle for idle_timeout.
 * Runs in its own table rounds after the batch's, on the same thread as this
 * instance's writes, so it never races the owner of what it touches. */
static void mon_sweep(struct mon *m, uint64_t now)
{
    const uint64_t slots = m->host->table_slots(m->flows);
    uint64_t budget = serpens_sweep_budget(&m->sweep, slots, now, MON_SWEEP_SLOTS_MAX);
    if (budget == 0) {
        return; /* most batches: too soon to visit a slot */
    }
    struct mon_flow_key k;
    struct mon_flow_val v;
    mon_chunk_begin(m);
    while (serpens_sweep_next(m->host, m->flows, &m->sweep, slots, &budget, &k, &v) == SERPENS_OK) {
        if (v.owner != m->ctx->instance_id) {
            continue;
        }
        const uint64_t idle = now > v.last_ns ? now - v.last_ns : 0;
        uint64_t fold[MON_DIR_WORDS];
        if (m->idle_ns != 0 && idle > m->idle_ns) {
            if (m->host->delete_state(m->flows, &k) != SERPENS_OK) {
                continue;
            }
            mon_take_pending(&v, fold, now);
            mon_add(m, MON_C_FLOWS_EXPIRED, 1);
        } else if ((v.pending[MON_A_PACKETS] | v.pending[MON_B_PACKETS]) != 0 && idle >= m->fold_ns) {
            mon_take_pending(&v, fold, now);
            if (m->host->put_state(m->flows, &k, &v) != SERPENS_OK) {
                mon_add(m, MON_C_STATE_ERRORS, 1);
                continue;
            }
        } else {
            continue;
        }
        mon_fold(m, &k, fold);
        if (m->n_hosts + 2 > 2 * MON_CHUNK) { /* room for the next flow's two rows */
            mon_flush_hosts(m);
            mon_chunk_begin(m);
        }
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
        mon_packet(m, serpens_batch_pkt(batch, i));
        /* One table round per MON_CHUNK packets: at most that many flows and
         * twice as many hosts, whatever the burst size. */
        if (++in_chunk == MON_CHUNK) {
            mon_chunk_end(m, now);
            mon_chunk_begin(m);
            in_chunk = 0;
        }
    }
    mon_chunk_end(m, now);
    mon_sweep(m, now);
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
    int64_t max_flows = 1048576, max_hosts = 262144, merge_ms = 1000, fold_ms = 1000, idle_s = 300;
    int rc;
    if ((rc = serpens_config_int_range(ctx, config, "mon", "max_flows", 1, 1ll << 26, &max_flows)) != SERPENS_OK ||
        (rc = serpens_config_int_range(ctx, config, "mon", "max_hosts", 1, 1ll << 22, &max_hosts)) != SERPENS_OK ||
        (rc = serpens_config_int_range(ctx, config, "mon", "merge_ms", 0, 3600000, &merge_ms)) != SERPENS_OK ||
        (rc = serpens_config_int_range(ctx, config, "mon", "fold_ms", 0, 3600000, &fold_ms)) != SERPENS_OK ||
        (rc = serpens_config_int_range(ctx, config, "mon", "idle_timeout", 0, 7 * 86400, &idle_s)) != SERPENS_OK) {
        return rc;
    }
    m->merge_ns = (uint64_t)merge_ms * 1000000ull;
    m->fold_ns = (uint64_t)fold_ms * 1000000ull;
    m->idle_ns = (uint64_t)idle_s * 1000000000ull;
    /* A pass per fold_ms finds a quiet flow within 2 * fold_ms of its last
     * packet; one per idle_timeout / 2 removes a flow within 1.5 timeouts. */
    m->sweep.period_ns = m->fold_ns;
    if (m->idle_ns != 0 && (m->sweep.period_ns == 0 || m->idle_ns / 2 < m->sweep.period_ns)) {
        m->sweep.period_ns = m->idle_ns / 2;
    }
    m->sweep.last_ns = h->now_ns();
    const uint32_t ev = SERPENS_STATE_GLOBAL | SERPENS_STATE_WRITE | SERPENS_STATE_EVENTUAL;
    m->flows = h->create_table(ctx, "flows", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE | SERPENS_STATE_NF_EXPIRY,
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
    .min_host_minor = SERPENS_ABI_MINOR_PKT_STRIDE, /* serpens_batch_pkt */
};

SERPENS_NF_REGISTER(mon_descriptor)
