/*
 * nat_internal.h — what the files of the nat NF share: limits, counters,
 * state layouts, the per-instance struct, the small helpers the packet path
 * inlines, and the functions one file calls in another.  Private to
 * plugins/nat/; nat.c describes the NF.
 *
 * Every nat .c file includes this header first: it sets the feature macro
 * the system headers read.
 */
#pragma once

#define _POSIX_C_SOURCE 200809L /* inet_pton */
#include <serpens/nf.h>
#include <serpens/nf_util.h>

#include <arpa/inet.h>
#include <stdint.h>

/* ---- limits and constants -------------------------------------------- */

#define NAT_MAX_INSIDE 32         /* inside prefixes */
#define NAT_MAX_EXTERNAL_IPS 4096 /* external addresses, after expanding ranges */
#define NAT_CHUNK_ITEMS 4096u     /* items per pool key: a 512-byte bitmap */
#define NAT_CHUNK_WORDS (NAT_CHUNK_ITEMS / 64u)
#define NAT_MAX_CHUNKS 65535u               /* chunk index is 16 bits */
#define NAT_SCAN_WINDOW 16u                 /* pool chunks tried per allocation */
#define NAT_PUT_RETRIES 4                   /* redo a pool update that raced a rebalance */
#define NAT_EXHAUSTED_BACKOFF_NS 1000000ull /* after a failed trigger, wait 1 ms */
#define NAT_BULK 64u                        /* packets whose mappings are looked up together (nf.h bulk limit) */
#define NAT_SWEEP_SLOTS_MAX 4096u           /* `in` slots the sweep walks per batch at most */
#define NAT_REFRESH_MAX_NS 1000000000ull    /* rewrite last-seen at most once a second */
#define NAT_MAX_TIMEOUT_S 32000             /* the chain's flow table tells idle times up to about 9.5 h */

/* The host's "cell changed since you read it, read again" code.  */
#define NAT_EAGAIN SERPENS_EAGAIN

#define NAT_PROTO_TCP 6u
#define NAT_PROTO_UDP 17u
#define NAT_PROTO_ICMP 1u
#define NAT_N_PROTOS 3u /* pool index: 0 TCP, 1 UDP, 2 ICMP */

enum nat_timeout { NAT_TO_TCP, NAT_TO_TCP_CLOSED, NAT_TO_UDP, NAT_TO_ICMP, NAT_N_TIMEOUTS };

/* Counters: symbol, name shown by the host, what it counts. */
#define NAT_COUNTERS(X)                                                                                                \
    X(OUT, "translated_out", "inside-to-outside packets translated")                                                   \
    X(IN, "translated_in", "outside-to-inside packets translated back")                                                \
    X(PASSED, "passed", "packets not the NAT's business, passed unchanged (IPv6, transit)")                            \
    X(NEW, "mappings_created", "new flows given an external item")                                                     \
    X(EXPIRED, "mappings_expired", "mappings removed after their idle timeout")                                        \
    X(EXHAUSTED, "pool_exhausted", "new flows dropped: no free item even after a trigger")                             \
    X(TRIGGERS, "pool_triggers", "rebalances this instance asked for when its share ran out")                          \
    X(NO_MAPPING, "no_mapping", "packets to an external address with no mapping, dropped")                             \
    X(FILTERED, "filtered", "packets to a mapping from another remote endpoint, dropped")                              \
    X(UNSUPPORTED, "unsupported", "fragments and other protocols to or from NAT space, dropped")                       \
    X(MALFORMED, "malformed", "unparsed frames or headers cut short, dropped")                                         \
    X(TABLE_FULL, "table_full", "new flows dropped: the mapping tables are full")                                      \
    X(ICMP_ERRORS, "icmp_errors", "ICMP errors about a mapped flow, translated with their inner header")               \
    X(STATE_ERRORS, "state_errors", "state API calls that failed unexpectedly")

enum nat_counter {
#define NAT_COUNTER_ENUM(sym, name, desc) NAT_C_##sym,
    NAT_COUNTERS(NAT_COUNTER_ENUM)
#undef NAT_COUNTER_ENUM
        NAT_N_COUNTERS
};

/* ---- state layouts (plain bytes in shared memory, zero padded) -------- */
/* Addresses and ports are kept in network byte order, as in the packet. */

struct nat_pool_key {
    uint32_t fingerprint;
    uint16_t chunk;
    uint8_t proto;
    uint8_t pad;
};

struct nat_out_key {
    uint32_t in_ip;
    uint32_t rem_ip;
    uint16_t in_port;  /* ICMP: echo id */
    uint16_t rem_port; /* ICMP: 0 */
    uint8_t proto;
    uint8_t pad[3];
};

struct nat_out_val {
    uint32_t ext_ip;
    uint16_t ext_port;
    uint8_t closing; /* a FIN or RST went out: the short TCP timeout applies */
    uint8_t pad;
    uint64_t last_ns; /* last outbound packet (batch clock) */
};

struct nat_in_key {
    uint32_t ext_ip;
    uint16_t ext_port;
    uint8_t proto;
    uint8_t pad;
};

/* The NF's area of a flow entry (chain flow table, nf.h "Per-flow state of
 * the chain"): one word, so a crash never tears it.  ext_ip and ext_port in
 * network order, as in the packet. */
struct nat_flow {
    uint32_t ext_ip;
    uint16_t ext_port;
    uint8_t proto;
    uint8_t flags; /* NAT_FLOW_* */
};
#define NAT_FLOW_TAKEN 0x1u   /* the item is this flow's: give it back when it goes */
#define NAT_FLOW_MAPPED 0x2u  /* its `in` and `out` entries are written */
#define NAT_FLOW_CLOSING 0x4u /* a FIN or RST went out: the short TCP timeout applies */
/* Which way the flow goes out, against the host's SERPENS_FLOW_REPLY:
 * DIR_KNOWN says OUT_REPLY is set (areas an older nat made lack both), and
 * OUT_REPLY that outbound packets are the flow's replies (the host saw it
 * first from outside). */
#define NAT_FLOW_DIR_KNOWN 0x8u
#define NAT_FLOW_OUT_REPLY 0x10u
/* The flow's packets without (PASS_FWD) or with (PASS_REPLY) the host's
 * SERPENS_FLOW_REPLY were found not to be the NAT's business: their
 * addresses, which the flow's key fixes, neither leave the inside nor reach
 * the pool.  Their next packets pass without being classified again.  Like
 * a mapping, the decision holds for the flow's life across a reload. */
#define NAT_FLOW_PASS_FWD 0x20u
#define NAT_FLOW_PASS_REPLY 0x40u
#define NAT_FLOW_PASSES (NAT_FLOW_PASS_FWD | NAT_FLOW_PASS_REPLY)

static inline struct nat_flow nat_flow_load(const void *area)
{
    struct nat_flow f;
    serpens_flow_word_load(area, &f);
    return f;
}

/* One 8-byte store: a crash leaves the old area or the new one. */
static inline void nat_flow_store(void *area, struct nat_flow f) { serpens_flow_word_store(area, &f); }

/* The direction bits of a flow whose outbound packets carry `reply`. */
static inline uint8_t nat_flow_dir(int reply)
{
    return (uint8_t)(NAT_FLOW_DIR_KNOWN | (reply ? NAT_FLOW_OUT_REPLY : 0u));
}

/* The pass bit of the flow's direction `reply` (0 or 1). */
static inline uint8_t nat_flow_pass(int reply) { return (uint8_t)(NAT_FLOW_PASS_FWD << (reply != 0)); }

struct nat_in_val {
    uint32_t in_ip;
    uint32_t rem_ip;
    uint16_t in_port;
    uint16_t rem_port;
    uint16_t owner; /* instance that took the item: the only one that frees it */
    uint8_t proto;
    uint8_t pad;
};

/* ---- per-instance data ------------------------------------------------ */

/* Where the L4 checksum and port (or echo id) sit, per protocol. */
struct nat_l4 {
    uint8_t *hdr;
    uint8_t proto;
    uint16_t csum_at;  /* offset of the checksum in the L4 header */
    uint16_t sport_at; /* ICMP: the echo id for both */
    uint16_t dport_at;
    int pseudo; /* the checksum covers the IP addresses */
};

/* One packet of a chunk, between classification and translation. */
enum nat_kind { NAT_K_DONE, NAT_K_OUT, NAT_K_IN };

struct nat_job {
    uint8_t kind;
    uint8_t at; /* index of its key in the chunk's out or in keys */
    uint8_t fin_or_rst;
    uint8_t no_item; /* chain_flows: the pool had no item for this new flow */
    uint8_t reply;   /* chain_flows: the host flagged it SERPENS_FLOW_REPLY */
    uint8_t *ip;
    struct nat_flow *flow; /* chain_flows: the packet's area (NULL: none) */
    struct nat_l4 l4;
};

/* A chunk's lookups, done in two bulk calls so their cache misses overlap. */
struct nat_chunk {
    struct nat_job job[NAT_BULK];
    struct nat_out_key okey[NAT_BULK];
    struct nat_out_val oval[NAT_BULK];
    struct nat_in_key ikey[NAT_BULK];
    struct nat_in_val ival[NAT_BULK];
    uint64_t ohit, ihit; /* bulk results still valid for this chunk */
    uint32_t n_out, n_in;
    uint32_t n_jobs;
};

struct nat_prefix {
    uint32_t net; /* host byte order */
    uint32_t mask;
};

struct nat {
    struct serpens_nf_ctx *ctx;
    const struct serpens_host_api *host;
    serpens_table *pool;
    serpens_table *out;
    serpens_table *in;

    struct nat_prefix inside[NAT_MAX_INSIDE];
    uint32_t n_inside;
    uint32_t ext_ip[NAT_MAX_EXTERNAL_IPS]; /* host byte order, sorted, unique */
    uint32_t n_ext;
    uint32_t port_min;
    uint32_t n_ports;
    uint32_t n_items;  /* per protocol: n_ext * n_ports */
    uint32_t n_chunks; /* per protocol */
    uint32_t fingerprint;
    uint64_t max_mappings;
    uint64_t rebalance_ns;
    uint64_t timeout_ns[NAT_N_TIMEOUTS];
    uint64_t refresh_ns;

    /* allocation, per protocol */
    uint32_t cursor[NAT_N_PROTOS];
    uint32_t hint[NAT_N_PROTOS];
    uint32_t empty_windows[NAT_N_PROTOS];
    uint64_t retry_after_ns[NAT_N_PROTOS];

    struct serpens_sweep sweep; /* expiry sweep over the `in` table's slots */
    int chain_flows;            /* mappings live in the chain's flow table (nat_flow.c) */

    uint64_t *counter[NAT_N_COUNTERS];
    uint64_t bitmap[NAT_CHUNK_WORDS]; /* scratch for one pool chunk */
    struct nat_chunk chunk;           /* scratch for the packets in flight */
};

static inline void nat_count(struct nat *n, enum nat_counter c) { ++*n->counter[c]; }

/* ---- helpers ---------------------------------------------------------- */

static inline int nat_inside(const struct nat *n, uint32_t ip_h)
{
    for (uint32_t i = 0; i < n->n_inside; ++i) {
        if ((ip_h & n->inside[i].mask) == n->inside[i].net) {
            return 1;
        }
    }
    return 0;
}

/* Index of an external address, or -1. */
static inline int32_t nat_ext_index(const struct nat *n, uint32_t ip_h)
{
    /* Most traffic that is no NAT's business is addressed outside the
     * external range: one compare instead of a mispredicted binary search
     * (13% of this NF in serpens-host). */
    if (n->n_ext == 0 || ip_h < n->ext_ip[0] || ip_h > n->ext_ip[n->n_ext - 1]) {
        return -1;
    }
    uint32_t lo = 0, hi = n->n_ext;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (n->ext_ip[mid] < ip_h) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return (lo < n->n_ext && n->ext_ip[lo] == ip_h) ? (int32_t)lo : -1;
}

static inline unsigned nat_proto_index(uint8_t proto)
{
    return proto == NAT_PROTO_TCP ? 0u : proto == NAT_PROTO_UDP ? 1u : 2u;
}

/* Rewrites one address (at ip + addr_at) and one port/id, fixing checksums. */
static inline void nat_rewrite(uint8_t *ip, unsigned addr_at, struct nat_l4 *l4, unsigned port_at, uint32_t new_ip,
                               uint16_t new_port)
{
    serpens_ipv4_rewrite(ip, addr_at, l4->hdr, l4->csum_at, port_at, l4->pseudo, l4->proto == NAT_PROTO_UDP, new_ip,
                         new_port);
}

/* Item i of a protocol's pool is (ext_ip[i / n_ports], port_min + i % n_ports). */
static inline void nat_item_endpoint(const struct nat *n, uint32_t item, uint32_t *ip_net, uint16_t *port_net)
{
    *ip_net = htonl(n->ext_ip[item / n->n_ports]);
    *port_net = htons((uint16_t)(n->port_min + item % n->n_ports));
}

/* ---- across files ----------------------------------------------------- */

/* nat_config.c: reads the config into n (cold path). */
int nat_configure(struct nat *n, const serpens_config *cfg);

/* nat_pool.c: the pool and the expiry sweep. */
int nat_pool_init(struct nat *n);
int64_t nat_pool_take(struct nat *n, unsigned pi, uint64_t now);
void nat_pool_give(struct nat *n, unsigned pi, uint32_t item);
void nat_sweep_entries(struct nat *n, uint64_t now);

int64_t nat_endpoint_item(const struct nat *n, uint32_t ip_net, uint16_t port_net);
uint64_t nat_timeout(const struct nat *n, uint8_t proto, int closing);
/* The `in` entry of the mapping of flow `key` to external (ext_ip, ext_port). */
void nat_in_entry(const struct nat *n, const struct nat_out_key *key, uint32_t ext_ip, uint16_t ext_port,
                  struct nat_in_key *ik, struct nat_in_val *iv);
/* Writes a new mapping's `in` (first: once `out` exists, replies may come)
 * and `out` entries; on failure neither stays.  SERPENS_OK or the error. */
int nat_put_mapping(struct nat *n, const struct nat_out_key *key, const struct nat_out_val *val);
/* Removes the mapping of external item `ik` (both entries) and gives the
 * item back to this instance's share; counts it expired. */
void nat_drop_mapping(struct nat *n, const struct nat_in_key *ik);

/* nat_flow.c: mappings in the chain's flow table. */
int nat_flow_init(struct nat *n);
/* Before a chunk's packets are translated: gives its new outbound flows
 * their items and writes their `in` and `out` entries in one bulk call per
 * table, so the cache misses of the inserts overlap.  A flow it leaves
 * unmapped (no item, a full table) nat_outbound_flow handles and counts. */
void nat_flow_map_new(struct nat *n, struct nat_chunk *c, uint64_t now);
uint8_t nat_outbound_flow(struct nat *n, struct nat_chunk *c, const struct nat_job *job, uint64_t now);
int nat_flow_visit(struct serpens_nf_ctx *ctx, void *state, const struct serpens_flow_info *flow);
void nat_flow_expired(struct serpens_nf_ctx *ctx, void *state);

/* nat_icmp.c: an ICMP error about a mapped flow (RFC 5508 REQ-3). */
uint8_t nat_icmp_error(struct nat *n, struct serpens_pkt *p, uint8_t *ip, int outbound);
