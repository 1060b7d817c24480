/*
 * mon — traffic monitor: per-flow and per-host packet and byte counts.
 *
 * SYNOPSIS
 *   [[nf]]
 *   name   = "mon"
 *   plugin = "mon"
 *   [nf.config]              # every key optional; defaults shown
 *   max_hosts = 262144       # hosts the per-host table is sized for
 *   merge_ms  = 1000         # how often the state manager folds the
 *                            # instances' host replicas (0: only at scale events)
 *   fold_ms   = 1000         # how long a flow's counts may wait before they
 *                            # are added to its hosts' (0: every batch)
 *   How many flows are counted and when an idle flow goes are the chain's
 *   flow table's settings (host config flow_capacity, flow_idle_s).
 *
 * DESCRIPTION
 *   Counts every packet it sees and passes it on unchanged (port 0).  For each
 *   parsed IPv4/IPv6 packet it updates
 *    - the flow's counts, in mon's area of the flow's entry in the chain's
 *      flow table (nf.h, "Per-flow state of the chain"): both directions of
 *      a connection are one flow; packets, bytes (frame length), first seen
 *      (batch clock, ns).  The host looked the packet's flow up once for the
 *      whole chain, so counting it costs mon no lookup, only a few adds to
 *      a line the host has prefetched; the entry's last use is the host's;
 *    - the source host's sent and the destination host's received packets and
 *      bytes.
 *   A flow's endpoints are in the host's canonical order: endpoint a is the
 *   lower (address bytewise, then port; ports are TCP/UDP ports, the echo
 *   identifier in both for ICMP/ICMPv6 echo, and 0 for fragments, other ICMP
 *   messages and other protocols).  Frames the host could not parse are
 *   counted (`unparsed`) and passed.
 *
 *   Host counts are eventually consistent (paper §III-A1), in two steps.
 *    1. Fold: a flow's area keeps the packets and bytes each endpoint sent
 *       that its hosts have not been told of yet (`pending`).  They are added
 *       to the hosts' counts when the flow is next written at least fold_ms
 *       after its last fold, or, for a flow that went quiet, when the host's
 *       flow sweep shows it to mon (flow_visit, every max(fold_ms, 100 ms))
 *       at least fold_ms after its last fold, and always when the flow
 *       expires or the host stops cleanly (its last visit); so a host's counts lag its flows' by less than about
 *       fold_ms plus the visit period.  Adding per flow every fold_ms rather
 *       than per packet is what keeps mon cheap: two host-table updates per
 *       packet made it cost four times what fw or nat cost.
 *       A fold adds a snapshot of the pending counts to the hosts and only
 *       after the hosts took it subtracts the snapshot from the area: a crash
 *       in between counts those packets twice, never loses them (mon's
 *       counts never go lower after a crash).  A hosts write the host
 *       refuses (not for a full table) leaves the counts pending, to be
 *       folded again.
 *    2. Merge: each instance adds to its own replica of `hosts` (one bulk
 *       add_state_bulk_v2 per 64 hosts) and the state manager folds the
 *       replicas every merge_ms with one table-wide timer (the host's default
 *       EVENTUAL merge: counters add, G' = G + sum_i (R_i - G), exact).
 *   At any moment, a host's exact counts are its global value in `hosts` plus
 *   the pending counts of its flows.  A host that finds the table full
 *   (max_hosts) is added to the single row of host_overflow instead and
 *   counted in `host_overflow`; a packet whose flow has no entry (the flow
 *   table was full) goes to its hosts directly and is counted in
 *   `flow_table_full`.  So tx packets over all hosts, the overflow's and the
 *   flows' pending always sum to the packets counted.
 *
 *   mon never keeps a flow past the chain's idle timeout: the visit of an
 *   expiring entry folds what it still holds, then the host removes it
 *   (`flows_expired`).  Only when the host refuses that hosts write does mon
 *   keep the entry, so that the next pass folds it again.
 *
 * READING THE STATE FROM OUTSIDE
 *   serpens-state flows <chain> [--json]   the chain's flow table: per entry
 *       the canonical key (addr_a addr_b port_a port_b proto), the initiator
 *       and each NF's area as u64 words; mon's area (64 B, 8 words, little
 *       endian): packets bytes first_ns folded_ns (both directions; batch
 *       clock), then pending: a_packets a_bytes b_packets b_bytes (sent by
 *       endpoint a / b, not yet in the hosts' counts).  An entry mon never
 *       saw a packet of (another NF's flow, or one another branch took) is
 *       all zero.
 *   serpensctl state dump <chain> <nf> <table> (or serpens-state dump)
 *   mon's own tables, decoded field by field (mon declares their layout):
 *   hosts  key   16 B: addr (IPv4 mapped as ::ffff:a.b.c.d)
 *          value 32 B: tx_packets tx_bytes rx_packets rx_bytes (u64)
 *   host_overflow  key 4 B: row, 0 (u32); value 32 B as in hosts: the sums
 *                      of the hosts that did not fit
 *   The dump of an EVENTUAL table shows the base (last merge) and each
 *   instance's replica; the global value is base + sum over instances of
 *   (replica - base), word by word (an all-zero replica: an instance that
 *   never ran since the key was created).
 *
 * LIMITATIONS
 *   The sweep runs between batches on the owner's worker: after traffic
 *   stops entirely a worker may sweep less often, and the last counts stay
 *   pending in the flows (read them there) until it does.  A flow's counts
 *   are folded only by the instance that owns its part of the table.
 *   Expiry and crashes: the host shows mon an expiring entry (the visit
 *   folds everything) before it marks the entry expiring and removes it;
 *   after a crash during a removal the host re-runs only flow_expired hooks,
 *   which mon has none of (it cannot fold there: the hook gets no key).
 *   Nothing is lost by that: a crash before or during the visit leaves the
 *   entry live, shown again at the next pass (a crash between the hosts
 *   write and the subtraction counts that fold twice); a crash after the
 *   visit finds the area's pending already zero.
 *
 * STATE (paper Table I)
 *   per flow       64 B in the chain's flow table (above)
 *   hosts          GLOBAL|WRITE|EVENTUAL  host statistics, default merge
 *   host_overflow  GLOBAL|WRITE|EVENTUAL  hosts beyond max_hosts, summed
 *
 * HOST ABI
 *   1.6 or later (min_host_minor; init refuses an older host): the chain's
 *   flow table (1.5), flow_visit and flow_visit_every (1.6), a table-wide
 *   merge timer (the NULL key), and add_state_bulk_v2 for the hosts.  A
 *   hosts write the host refuses (not for a full table) counts in
 *   state_errors, not in host_overflow.
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

#define MON_CHUNK 64u       /* packets per table round: the bulk calls' limit */
#define MON_FOLD_SLOTS 128u /* a chunk's due flows: power of two, >= 2 * MON_CHUNK */
#define MON_HOST_SLOTS 256u /* a chunk's hosts (two per packet): >= 2 * 2 * MON_CHUNK */
#define MON_BULK 64u        /* keys per bulk call (nf.h) */
#define MON_HOST_WORDS 4u
#define MON_VISIT_MIN_MS 100u /* visits more often than this cost more than they bring */

#define MON_COUNTERS(X)                                                                                                \
    X(PACKETS, "packets", "packets seen (all of them pass)")                                                           \
    X(BYTES, "bytes", "frame bytes seen")                                                                              \
    X(FLOWS_NEW, "flows_new", "flows whose first packet this instance saw (the host created their entry)")             \
    X(FLOW_TABLE_FULL, "flow_table_full", "IP packets the full flow table gave no entry (their hosts count them)")     \
    X(FLOWS_EXPIRED, "flows_expired", "flows gone after the chain's idle timeout, counts folded")                      \
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

/* What each endpoint of a flow sent: a flow's pending counts. */
enum { MON_A_PACKETS, MON_A_BYTES, MON_B_PACKETS, MON_B_BYTES, MON_DIR_WORDS };

/* mon's area of a flow entry; the host zeroes it when the flow appears.
 * Single writer (the flow's owner), aligned words: never torn. */
struct mon_area {
    uint64_t packets; /* both directions */
    uint64_t bytes;
    uint64_t first_ns;               /* batch clock of the first packet mon saw */
    uint64_t folded_ns;              /* when pending was last added to the hosts */
    uint64_t pending[MON_DIR_WORDS]; /* not yet in the hosts' counts */
};
#define MON_AREA_SIZE 64u
_Static_assert(sizeof(struct mon_area) == MON_AREA_SIZE, "mon_area is the documented 64 bytes");

/* hosts and host_overflow values: MON_HOST_WORDS counters. */
enum { MON_TX_PACKETS, MON_TX_BYTES, MON_RX_PACKETS, MON_RX_BYTES };

struct mon {
    struct serpens_nf_ctx *ctx;
    const struct serpens_host_api *host;
    serpens_table *hosts;
    serpens_table *overflow;
    uint64_t merge_ns;
    uint64_t fold_ns; /* 0: fold at every write */
    int flow_side;    /* the host says which endpoint sent a packet (SERPENS_FLOW_FROM_B) */
    uint64_t *counter[MON_N_COUNTERS];

    /* One table round: the flows due to fold and the hosts' sums,
     * deduplicated through small open-addressing indexes whose slots are
     * valid when their stamp equals `gen`. */
    uint32_t gen;
    uint32_t n_folds, n_hosts;
    uint32_t fold_stamp[MON_FOLD_SLOTS];
    uint8_t fold_at[MON_FOLD_SLOTS];
    struct mon_area *fold_area[MON_CHUNK];
    uint8_t fold_key[MON_CHUNK][2][16]; /* hosts keys of endpoints a and b */
    uint64_t fold_snap[MON_CHUNK][MON_DIR_WORDS];
    uint32_t host_stamp[MON_HOST_SLOTS];
    uint8_t host_at[MON_HOST_SLOTS];
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

/* Equality of two 16-byte keys: inline, where a memcmp call cost this NF
 * about 13 ns per packet in serpens-host. */
static inline int mon_key_eq(const uint8_t *a, const uint8_t *b)
{
    return ((rd64(a) ^ rd64(b)) | (rd64(a + 8) ^ rd64(b + 8))) == 0;
}

/* A quick hash of n 8-byte words, for the round's indexes only.  The top
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

/* Adds the round's host rows to this instance's replica; rows of a full
 * table go to the overflow row.  Returns 1 when every row was taken (by
 * hosts or the overflow), 0 when the host refused a write for another
 * reason (counted in state_errors). */
static int mon_flush_hosts(struct mon *m)
{
    uint64_t spill[1][MON_HOST_WORDS] = {{0, 0, 0, 0}};
    uint64_t spilled = 0;
    int taken = 1;
    for (uint32_t off = 0; off < m->n_hosts; off += MON_BULK) {
        uint32_t n = m->n_hosts - off < MON_BULK ? m->n_hosts - off : MON_BULK;
        uint64_t ok = 0;
        const int rc = m->host->add_state_bulk_v2(m->hosts, m->hkey[off], n, &m->hdelta[off][0], &ok);
        if (rc != SERPENS_OK && rc != SERPENS_ENOSPC) {
            mon_add(m, MON_C_STATE_ERRORS, 1); /* refused, not full: host_overflow is for full */
            taken = 0;
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
            taken = 0;
        }
    }
    return taken;
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
        if (mon_key_eq(m->hkey[m->host_at[s]], addr)) {
            return m->hdelta[m->host_at[s]];
        }
    }
}

/* An address (network order, IPv4 in the first 4 bytes) as a hosts key:
 * IPv4 mapped (::ffff:a.b.c.d). */
static void mon_host_key(unsigned ip_version, const uint8_t *addr, uint8_t out[16])
{
    if (ip_version == 4) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, addr, 4);
    } else {
        memcpy(out, addr, 16);
    }
}

/* Adds what a flow's endpoints a and b sent (d: MON_DIR_WORDS) to the hosts'
 * rows of this round; at most two rows. */
static void mon_fold(struct mon *m, const uint8_t a[16], const uint8_t b[16], const uint64_t d[MON_DIR_WORDS])
{
    uint64_t *ra = mon_host_row(m, a);
    ra[MON_TX_PACKETS] += d[MON_A_PACKETS], ra[MON_TX_BYTES] += d[MON_A_BYTES];
    ra[MON_RX_PACKETS] += d[MON_B_PACKETS], ra[MON_RX_BYTES] += d[MON_B_BYTES];
    uint64_t *rb = mon_host_row(m, b);
    rb[MON_TX_PACKETS] += d[MON_B_PACKETS], rb[MON_TX_BYTES] += d[MON_B_BYTES];
    rb[MON_RX_PACKETS] += d[MON_A_PACKETS], rb[MON_RX_BYTES] += d[MON_A_BYTES];
}

static void mon_round_begin(struct mon *m)
{
    if (++m->gen == 0) {
        /* Wrapped: clear so no slot looks filled by this generation. */
        memset(m->fold_stamp, 0, sizeof m->fold_stamp);
        memset(m->host_stamp, 0, sizeof m->host_stamp);
        m->gen = 1;
    }
    m->n_folds = 0;
    m->n_hosts = 0;
}

/* ---- per-flow counts (the chain's flow table) -------------------------- */

static inline int mon_pending(const struct mon_area *f)
{
    return (f->pending[MON_A_PACKETS] | f->pending[MON_A_BYTES] | f->pending[MON_B_PACKETS] |
            f->pending[MON_B_BYTES]) != 0;
}

/* A flow's pending counts go to its hosts now: fold_ms = 0, fold_ms since
 * its last fold, or a clock that went back (the difference wraps to above
 * any fold_ns).  One compare: this runs for every packet. */
static inline int mon_fold_due(const struct mon *m, const struct mon_area *f, uint64_t now)
{
    return now - f->folded_ns >= m->fold_ns;
}

/* Adds snapshots of the round's due flows' pending counts to their hosts'
 * rows, writes the rows, and only then takes the snapshots out of the
 * areas: a crash in between counts them twice rather than never.  A
 * refused write leaves them pending, to fold again.  Returns 1 when the
 * hosts took every row. */
static int mon_round_end(struct mon *m, uint64_t now)
{
    for (uint32_t j = 0; j < m->n_folds; ++j) {
        struct mon_area *f = m->fold_area[j];
        memcpy(m->fold_snap[j], f->pending, sizeof f->pending);
        f->folded_ns = now; /* once per fold_ms, even if this write is refused */
        mon_fold(m, m->fold_key[j][0], m->fold_key[j][1], m->fold_snap[j]);
    }
    if (m->n_hosts == 0) {
        return 1;
    }
    if (!mon_flush_hosts(m)) {
        return 0;
    }
    for (uint32_t j = 0; j < m->n_folds; ++j) {
        for (unsigned w = 0; w < MON_DIR_WORDS; ++w) {
            m->fold_area[j]->pending[w] -= m->fold_snap[j][w];
        }
    }
    return 1;
}

/* Puts flow f on the round's fold list once: endpoints a and b are the
 * packet's source and destination (src, dst: hosts keys) as a_sent says. */
static void mon_queue_fold(struct mon *m, struct mon_area *f, const uint8_t src[16], const uint8_t dst[16], int a_sent)
{
    const uintptr_t ptr = (uintptr_t)f;
    uint8_t word[8];
    memcpy(word, &ptr, sizeof ptr < 8 ? sizeof ptr : 8);
    uint32_t h = mon_hash(word, 1);
    for (uint32_t probe = 0;; ++probe) {
        uint32_t s = (h + probe) & (MON_FOLD_SLOTS - 1);
        if (m->fold_stamp[s] != m->gen) {
            uint32_t at = m->n_folds++;
            m->fold_stamp[s] = m->gen;
            m->fold_at[s] = (uint8_t)at;
            m->fold_area[at] = f;
            memcpy(m->fold_key[at][0], a_sent ? src : dst, 16);
            memcpy(m->fold_key[at][1], a_sent ? dst : src, 16);
            return;
        }
        if (m->fold_area[m->fold_at[s]] == f) {
            return; /* fold_ms = 0: already due this round */
        }
    }
}

/* ---- the data path ---------------------------------------------------- */

/* The flow's ports: TCP/UDP ports, the echo id in both for ICMP(v6) echo,
 * else 0 (the host's flow key's). */
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

/* The packet's addresses and whether its source is the flow's endpoint a
 * (the lower: address bytewise, then port, as the host orders its key).
 * Ports are read only when the addresses tie.  Returns the IP version, 0
 * when the headers it needs are cut. */
static unsigned mon_endpoints(const struct serpens_pkt *p, const uint8_t **src, const uint8_t **dst, int *a_sent)
{
    const uint8_t *ip = p->data + p->l3_offset;
    uint16_t sport, dport;
    if (p->l3_type == SERPENS_L3_IPV4) {
        if (p->len < (uint32_t)p->l3_offset + 20u) {
            return 0;
        }
        *src = ip + 12, *dst = ip + 16;
        /* Bytewise order is the host-order u32's. */
        const uint32_t sh = serpens_ld_be32(ip + 12), dh = serpens_ld_be32(ip + 16);
        if (sh != dh) {
            *a_sent = sh < dh;
            return 4;
        }
        mon_ports(p, ip[9], &sport, &dport);
        *a_sent = sport <= dport;
        return 4;
    }
    if (p->len < (uint32_t)p->l3_offset + 40u) {
        return 0;
    }
    *src = ip + 8, *dst = ip + 24;
    const int c = memcmp(*src, *dst, 16);
    if (c != 0) {
        *a_sent = c < 0;
        return 6;
    }
    mon_ports(p, p->l4_proto, &sport, &dport);
    *a_sent = sport <= dport;
    return 6;
}

/* A packet of len bytes in its flow's area, sent by the endpoint whose
 * pending counts start at dir (MON_A_PACKETS or MON_B_PACKETS). */
static inline void mon_flow_count(struct mon_area *f, unsigned dir, uint32_t len)
{
    f->packets += 1;
    f->bytes += len;
    f->pending[dir] += 1;
    f->pending[dir + 1] += len;
}

/* Counts packet i: in its flow's area, or, without one, in its hosts' rows
 * of this round directly. */
static void mon_packet(struct mon *m, const struct serpens_batch *batch, const struct serpens_flow_view *flows,
                       uint32_t i, uint64_t now)
{
    const struct serpens_pkt *p = serpens_batch_pkt(batch, i);
    const uint32_t len = p->len;
    struct mon_area *f = serpens_flow_area(flows, i);
    if (f != NULL && m->flow_side && f->first_ns != 0 && !mon_fold_due(m, f, now)) {
        /* The usual packet of a known flow: the host keyed it as IP and
         * says which way it goes, so neither its parse nor its headers are
         * read (a fifth of mon's instructions a packet, and the checks
         * below another seventh). */
        mon_flow_count(f, (serpens_flow_flags(flows, i) & SERPENS_FLOW_FROM_B) ? MON_B_PACKETS : MON_A_PACKETS, len);
        return;
    }
    if (!(p->flags & SERPENS_PKT_F_PARSED) || p->l3_offset == SERPENS_OFFSET_NONE ||
        (p->l3_type != SERPENS_L3_IPV4 && p->l3_type != SERPENS_L3_IPV6)) {
        mon_add(m, MON_C_UNPARSED, 1);
        return;
    }
    const uint8_t *src, *dst;
    int a_sent;
    const unsigned version = mon_endpoints(p, &src, &dst, &a_sent);
    if (version == 0) {
        mon_add(m, MON_C_UNPARSED, 1);
        return;
    }
    uint8_t skey[16], dkey[16];
    if (f == NULL) {
        /* No entry (the flow table was full): the hosts count it now. */
        mon_add(m, MON_C_FLOW_TABLE_FULL, 1);
        const uint64_t sent[MON_DIR_WORDS] = {1, len, 0, 0}; /* by the source, as endpoint a */
        mon_host_key(version, src, skey);
        mon_host_key(version, dst, dkey);
        mon_fold(m, skey, dkey, sent);
        return;
    }
    /* A new flow's area is zeroed; an older one with first_ns 0 was
     * created before mon was in its chain (a reload added it). */
    if (f->first_ns == 0) {
        mon_add(m, MON_C_FLOWS_NEW, (serpens_flow_flags(flows, i) & SERPENS_FLOW_NEW) != 0);
        /* The first fold is fold_ms from now: a short flow folds once. */
        f->first_ns = f->folded_ns = now;
    }
    mon_flow_count(f, a_sent ? MON_A_PACKETS : MON_B_PACKETS, len);
    if (mon_fold_due(m, f, now)) {
        mon_host_key(version, src, skey);
        mon_host_key(version, dst, dkey);
        mon_queue_fold(m, f, skey, dkey, a_sent);
        if (m->fold_ns != 0) {
            f->folded_ns = now; /* not due again this batch */
        }
    }
}

static void mon_process(struct serpens_nf_ctx *ctx, struct serpens_batch *batch)
{
    struct mon *m = ctx->priv;
    const uint64_t now = batch->now_ns;
    const struct serpens_flow_view flows = serpens_batch_flow_view(batch);
    uint32_t in_round = 0;
    uint64_t packets = 0, bytes = 0; /* counted once per batch */
    mon_round_begin(m);
    for (uint32_t i = 0; i < batch->count; ++i) {
        if (batch->labels[i] != batch->self) {
            continue;
        }
        ++packets;
        bytes += serpens_batch_pkt(batch, i)->len;
        mon_packet(m, batch, &flows, i, now);
        /* One table round per MON_CHUNK packets: at most that many folds
         * and twice as many hosts, whatever the burst size. */
        if (++in_round == MON_CHUNK) {
            mon_round_end(m, now);
            mon_round_begin(m);
            in_round = 0;
        }
    }
    mon_round_end(m, now);
    mon_add(m, MON_C_PACKETS, packets);
    mon_add(m, MON_C_BYTES, bytes);
}

/* The host's sweep shows mon each flow (every visit period, and when it
 * expires): a quiet flow's pending counts are folded here, an expiring
 * flow's all of them, since its area goes with the entry. */
static int mon_flow_visit(struct serpens_nf_ctx *ctx, void *state, const struct serpens_flow_info *flow)
{
    struct mon *m = ctx->priv;
    struct mon_area *f = state;
    if (m == NULL) {
        return 0;
    }
    int keep = 0;
    /* A stopping host shows each flow one last time: all it holds goes now. */
    if (mon_pending(f) && (flow->expiring || flow->stopping || mon_fold_due(m, f, flow->now_ns))) {
        const unsigned version = flow->ip_version == 4 ? 4u : 6u;
        mon_round_begin(m);
        m->n_folds = 1;
        m->fold_area[0] = f;
        mon_host_key(version, flow->addr_a, m->fold_key[0][0]);
        mon_host_key(version, flow->addr_b, m->fold_key[0][1]);
        /* Refused: an expiring flow stays for the next pass, or its counts
         * would go with it. */
        keep = !mon_round_end(m, flow->now_ns) && flow->expiring;
    }
    if (flow->expiring && !keep) {
        mon_add(m, MON_C_FLOWS_EXPIRED, 1);
    }
    return keep ? SERPENS_FLOW_KEEP : 0;
}

/* ---- configuration (cold path) ---------------------------------------- */

static int mon_init(struct serpens_nf_ctx *ctx, const serpens_config *config)
{
    const struct serpens_host_api *h = ctx->host;
    /* A 1.4 host cannot read min_host_minor's successors' fields: say why. */
    if (h->abi_minor < SERPENS_ABI_MINOR_FLOW_VISIT || !SERPENS_HOST_HAS(h, flow_visit_every)) {
        h->log(ctx, SERPENS_LOG_ERROR,
               "mon: needs a host of ABI 1.%u or later (the chain's flow table with flow visits); this host is 1.%u",
               SERPENS_ABI_MINOR_FLOW_VISIT, (unsigned)h->abi_minor);
        return SERPENS_ENOTSUP;
    }
    struct mon *m = calloc(1, sizeof *m);
    if (m == NULL) {
        h->log(ctx, SERPENS_LOG_ERROR, "mon: out of memory");
        return SERPENS_ENOMEM;
    }
    ctx->priv = m;
    m->ctx = ctx;
    m->host = h;
    int64_t max_hosts = 262144, merge_ms = 1000, fold_ms = 1000;
    int rc;
    if ((rc = serpens_config_int_range(ctx, config, "mon", "max_hosts", 1, 1ll << 22, &max_hosts)) != SERPENS_OK ||
        (rc = serpens_config_int_range(ctx, config, "mon", "merge_ms", 0, 3600000, &merge_ms)) != SERPENS_OK ||
        (rc = serpens_config_int_range(ctx, config, "mon", "fold_ms", 0, 3600000, &fold_ms)) != SERPENS_OK) {
        return rc;
    }
    m->merge_ns = (uint64_t)merge_ms * 1000000ull;
    m->fold_ns = (uint64_t)fold_ms * 1000000ull;
    m->flow_side = h->abi_minor >= SERPENS_ABI_MINOR_FLOW_SIDE;
    /* A visit per fold_ms finds a quiet flow within about 2 * fold_ms of its
     * last packet; fold_ms = 0 folds at every write, visits stay sparse. */
    const uint32_t visit_ms = fold_ms < MON_VISIT_MIN_MS ? MON_VISIT_MIN_MS : (uint32_t)fold_ms;
    if ((rc = h->flow_visit_every(ctx, visit_ms)) != SERPENS_OK) {
        h->log(ctx, SERPENS_LOG_ERROR, "mon: the host refused a flow visit every %u ms (error %d)", visit_ms, rc);
        return rc;
    }
    const uint32_t ev = SERPENS_STATE_GLOBAL | SERPENS_STATE_WRITE | SERPENS_STATE_EVENTUAL;
    m->hosts = h->create_table(ctx, "hosts", ev, 16, MON_HOST_WORDS * 8, (uint64_t)max_hosts);
    m->overflow = h->create_table(ctx, "host_overflow", ev, sizeof(uint32_t), MON_HOST_WORDS * 8, 1);
    if (m->hosts == NULL || m->overflow == NULL) {
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

/* What the tools show of mon's tables (nf.h, "What a table's bytes mean"). */
static const struct serpens_field mon_host_key_fields[] = {{"addr", 0, SERPENS_FIELD_IPV6, 16}};
static const struct serpens_field mon_overflow_key_fields[] = {{"row", 0, SERPENS_FIELD_U32, 4}};
static const struct serpens_field mon_host_value_fields[MON_HOST_WORDS] = {
    {"tx_packets", 0, SERPENS_FIELD_U64, 8},
    {"tx_bytes", 8, SERPENS_FIELD_U64, 8},
    {"rx_packets", 16, SERPENS_FIELD_U64, 8},
    {"rx_bytes", 24, SERPENS_FIELD_U64, 8},
};
static const struct serpens_table_layout mon_layouts[] = {
    {"hosts", mon_host_key_fields, mon_host_value_fields, 1, MON_HOST_WORDS, 0},
    {"host_overflow", mon_overflow_key_fields, mon_host_value_fields, 1, MON_HOST_WORDS, 0},
};

/* 1.6 host (flow table, flow_visit); no flow_expired hook: an expiring
 * flow's visit folds what it holds (LIMITATIONS); init sets the visit period
 * to max(fold_ms, 100 ms). */
static const struct serpens_nf_descriptor mon_descriptor = {
    SERPENS_NF_DESCRIPTOR_HEADER,
    .name = "mon",
    .version = "3.0",
    .summary = "counts packets and bytes per flow and per host (host counts merged across instances)",
    .n_ports = 1,
    .init = mon_init,
    .process = mon_process,
    .fini = mon_fini,
    .min_host_minor = SERPENS_ABI_MINOR_FLOW_VISIT,
    .flow_state_size = MON_AREA_SIZE,
    .flow_expired = NULL,
    .flow_visit = mon_flow_visit,
    .flow_visit_ms = 1000,
    .table_layouts = mon_layouts,
    .n_table_layouts = sizeof mon_layouts / sizeof mon_layouts[0],
};

SERPENS_NF_REGISTER(mon_descriptor)
