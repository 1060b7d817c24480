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
 *   about a mapped flow are translated too (RFC 5508 REQ-3), so traceroute
 *   and path MTU discovery work through the NAT: one from outside, quoting a
 *   translated packet, goes to the inside host with the quoted source set
 *   back; one from inside, quoting a translated reply, leaves from the
 *   external address with the quoted destination set to the item.  The
 *   quote's IP checksum, its L4 checksum when quoted, and the ICMP checksum
 *   are kept right.  Errors about no mapping, or from outside quoting another
 *   remote endpoint than the flow's, are dropped.
 *
 *   Dropped: frames the host could not parse (a NAT must not forward what it
 *   cannot vet), fragments and protocols other than TCP/UDP/ICMP echo (and
 *   the ICMP errors above) to or from translated addresses, packets cut short
 *   inside the headers it rewrites or quotes, and new flows when the pool has
 *   no free item.
 *
 *   Mappings expire after the idle timeout of their protocol; only outbound
 *   packets refresh them (RFC 4787 REQ-6 makes inbound refresh optional, and
 *   keeping the inbound path read-only means a reply steered to another
 *   instance never writes a flow it does not own).  Each instance sweeps the
 *   mappings it made, paced to see each twice per shortest timeout, and
 *   returns expired ones' items to its share of the pool.  It walks the `in`
 *   table (host ABI 1.2 scan_state, at most NAT_SWEEP_SLOTS_MAX slots per
 *   batch), so the sweep costs in proportion to max_mappings; an older host
 *   makes it look up every item of the pool in turn (at most NAT_SWEEP_MAX
 *   per batch), which costs about a probe per packet with a /24 pool.  The
 *   mapping tables are created with NF_EXPIRY (host ABI 1.1): the host's own
 *   per-flow idle expiry leaves them alone, so a mapping and its item always
 *   go together, through the sweep.  (Before, a host expiry removed mappings
 *   whose items then never came back to the pool, e.g. after the NF saw no
 *   packet for longer than the host's idle timeout.)
 *
 * LIMITATIONS
 *   The sweep runs only when packets arrive: after a quiet period, expired
 *   mappings are freed when traffic resumes (a bounded slice per batch).
 *   Only the instance that took an item frees it: the items of mappings
 *   made by an instance that was scaled in for good stay taken until an
 *   instance with its id runs again.  On an ABI 1.0 host the tables have no
 *   NF_EXPIRY and the old leak on host expiry remains (logged at init).
 *
 * STATE (paper Table I)
 *   pool  GLOBAL|WRITE|RELEASE  key (pool fingerprint, chunk, protocol), value a
 *                               bitmap of 4096 items, set = free.  The host's
 *                               default split deals each chunk's free items out
 *                               to the instances; an instance that runs out
 *                               triggers a rebalance and drops (counted) only
 *                               when that finds nothing either.
 *   out   PER_FLOW|WRITE|NF_EXPIRY  (proto, inside addr:port, remote addr:port)
 *                               -> (external addr:port, last outbound packet)
 *   in    PER_FLOW|WRITE|NF_EXPIRY  (proto, external addr:port) -> (inside addr:port,
 *                               remote addr:port, owning instance)
 *   Pool size: (addresses x ports) / 4096 keys per protocol; the host keeps
 *   (1 + max instances) double-buffered cells per key, i.e. about 17 KiB per
 *   4096 items with 16 instances (2 addresses x 64512 ports: 1.6 MiB).
 *   The fingerprint (of the external addresses and port range) keeps a
 *   restarted host with a changed pool from reading an old pool's bitmaps.
 *   Changing the pool while old mappings are live is not supported: give the
 *   NF a new name in the chain, or clear the host's state directory.
 *
 * COUNTERS
 *   See NAT_COUNTERS below: one line each, with what it counts.
 *
 * PORTS
 *   0  translated and passed packets (everything not dropped).
 *
 * Builds against plugin-api/ alone, as C with pedantic warnings.
 */
#define _POSIX_C_SOURCE 200809L /* inet_pton */
#include <serpens/nf.h>
#include <serpens/nf_util.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- limits and constants -------------------------------------------- */

#define NAT_MAX_INSIDE 32          /* inside prefixes */
#define NAT_MAX_EXTERNAL_IPS 4096  /* external addresses, after expanding ranges */
#define NAT_CHUNK_ITEMS 4096u      /* items per pool key: a 512-byte bitmap */
#define NAT_CHUNK_WORDS (NAT_CHUNK_ITEMS / 64u)
#define NAT_MAX_CHUNKS 65535u      /* chunk index is 16 bits */
#define NAT_SCAN_WINDOW 16u        /* pool chunks tried per allocation */
#define NAT_PUT_RETRIES 4          /* redo a pool update that raced a rebalance */
#define NAT_EXHAUSTED_BACKOFF_NS 1000000ull /* after a failed trigger, wait 1 ms */
#define NAT_SWEEP_MAX 1024u        /* items swept per batch at most: ~1024 probes, mostly misses */
#define NAT_BULK 64u               /* packets whose mappings are looked up together (nf.h bulk limit) */
#define NAT_SWEEP_SLOTS_MAX 4096u  /* `in` slots walked per batch at most (ABI 1.2 sweep) */
#define NAT_REFRESH_MAX_NS 1000000000ull    /* rewrite last-seen at most once a second */

/* The host's "cell changed since you read it, read again" code.  */
#define NAT_EAGAIN SERPENS_EAGAIN

#define NAT_PROTO_TCP 6u
#define NAT_PROTO_UDP 17u
#define NAT_PROTO_ICMP 1u
#define NAT_N_PROTOS 3u /* pool index: 0 TCP, 1 UDP, 2 ICMP */

enum nat_timeout { NAT_TO_TCP, NAT_TO_TCP_CLOSED, NAT_TO_UDP, NAT_TO_ICMP, NAT_N_TIMEOUTS };

/* Counters: symbol, name shown by the host, what it counts. */
#define NAT_COUNTERS(X)                                                                         \
    X(OUT, "translated_out", "inside-to-outside packets translated")                            \
    X(IN, "translated_in", "outside-to-inside packets translated back")                         \
    X(PASSED, "passed", "packets not the NAT's business, passed unchanged (IPv6, transit)")     \
    X(NEW, "mappings_created", "new flows given an external item")                              \
    X(EXPIRED, "mappings_expired", "mappings removed after their idle timeout")                 \
    X(EXHAUSTED, "pool_exhausted", "new flows dropped: no free item even after a trigger")      \
    X(TRIGGERS, "pool_triggers", "rebalances this instance asked for when its share ran out")   \
    X(NO_MAPPING, "no_mapping", "packets to an external address with no mapping, dropped")      \
    X(FILTERED, "filtered", "packets to a mapping from another remote endpoint, dropped")       \
    X(UNSUPPORTED, "unsupported", "fragments and other protocols to or from NAT space, dropped") \
    X(MALFORMED, "malformed", "unparsed frames or headers cut short, dropped")                  \
    X(TABLE_FULL, "table_full", "new flows dropped: the mapping tables are full")               \
    X(ICMP_ERRORS, "icmp_errors", "ICMP errors about a mapped flow, translated with their inner header") \
    X(STATE_ERRORS, "state_errors", "state API calls that failed unexpectedly")

enum nat_counter {
#define NAT_COUNTER_ENUM(sym, name, desc) NAT_C_##sym,
    NAT_COUNTERS(NAT_COUNTER_ENUM)
#undef NAT_COUNTER_ENUM
    NAT_N_COUNTERS
};

static const char *const nat_counter_names[NAT_N_COUNTERS] = {NAT_COUNTERS(SERPENS_COUNTER_NAME)};

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
    uint16_t in_port; /* ICMP: echo id */
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
    int pseudo;        /* the checksum covers the IP addresses */
};

/* One packet of a chunk, between classification and translation. */
enum nat_kind { NAT_K_DONE, NAT_K_OUT, NAT_K_IN };

struct nat_job {
    uint8_t kind;
    uint8_t at;      /* index of its key in the chunk's out or in keys */
    uint8_t fin_or_rst;
    uint8_t *ip;
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
};

struct nat_prefix {
    uint32_t net;  /* host byte order */
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
    uint32_t n_items;   /* per protocol: n_ext * n_ports */
    uint32_t n_chunks;  /* per protocol */
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

    /* expiry sweep: the `in` table's slots (scan), else every item of the
     * pool, all protocols in a row */
    int scan; /* the host has scan_state (ABI 1.2) */
    struct serpens_sweep sweep;

    uint64_t *counter[NAT_N_COUNTERS];
    uint64_t bitmap[NAT_CHUNK_WORDS]; /* scratch for one pool chunk */
    struct nat_chunk chunk;           /* scratch for the packets in flight */
};

static const uint8_t nat_protos[NAT_N_PROTOS] = {NAT_PROTO_TCP, NAT_PROTO_UDP, NAT_PROTO_ICMP};

static inline void nat_count(struct nat *n, enum nat_counter c)
{
    ++*n->counter[c];
}

/* ---- helpers ---------------------------------------------------------- */

static int nat_inside(const struct nat *n, uint32_t ip_h)
{
    for (uint32_t i = 0; i < n->n_inside; ++i) {
        if ((ip_h & n->inside[i].mask) == n->inside[i].net) {
            return 1;
        }
    }
    return 0;
}

/* Index of an external address, or -1. */
static int32_t nat_ext_index(const struct nat *n, uint32_t ip_h)
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

static unsigned nat_proto_index(uint8_t proto)
{
    return proto == NAT_PROTO_TCP ? 0u : proto == NAT_PROTO_UDP ? 1u : 2u;
}

static struct nat_pool_key nat_pool_key(const struct nat *n, unsigned pi, uint32_t chunk)
{
    struct nat_pool_key k;
    memset(&k, 0, sizeof k);
    k.fingerprint = n->fingerprint;
    k.chunk = (uint16_t)chunk;
    k.proto = nat_protos[pi];
    return k;
}

/* Item i of a protocol's pool is (ext_ip[i / n_ports], port_min + i % n_ports). */
static void nat_item_endpoint(const struct nat *n, uint32_t item, uint32_t *ip_net, uint16_t *port_net)
{
    *ip_net = htonl(n->ext_ip[item / n->n_ports]);
    *port_net = htons((uint16_t)(n->port_min + item % n->n_ports));
}

/* The inverse: the item of an endpoint (network order), or -1 when it is
 * not in this pool (e.g. one of an earlier pool configuration). */
static int64_t nat_endpoint_item(const struct nat *n, uint32_t ip_net, uint16_t port_net)
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
static int64_t nat_pool_take(struct nat *n, unsigned pi, uint64_t now)
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
static void nat_pool_give(struct nat *n, unsigned pi, uint32_t item)
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

static uint64_t nat_timeout(const struct nat *n, uint8_t proto, int closing)
{
    if (proto == NAT_PROTO_TCP) {
        return n->timeout_ns[closing ? NAT_TO_TCP_CLOSED : NAT_TO_TCP];
    }
    return n->timeout_ns[proto == NAT_PROTO_UDP ? NAT_TO_UDP : NAT_TO_ICMP];
}

/* Frees one mapping of this instance (its `in` entry ik -> iv, item `item`
 * of protocol pi) when its outbound side is idle or gone. */
static void nat_expire_mapping(struct nat *n, unsigned pi, uint32_t item, const struct nat_in_key *ik,
                               const struct nat_in_val *iv, uint64_t now)
{
    struct nat_out_key ok;
    struct nat_out_val ov;
    memset(&ok, 0, sizeof ok);
    ok.in_ip = iv->in_ip;
    ok.rem_ip = iv->rem_ip;
    ok.in_port = iv->in_port;
    ok.rem_port = iv->rem_port;
    ok.proto = iv->proto;
    int have_out = n->host->get_state(n->out, &ok, &ov) == SERPENS_OK;
    if (have_out && (ov.ext_ip != ik->ext_ip || ov.ext_port != ik->ext_port)) {
        have_out = 0; /* the flow moved on to another item: this one is stale */
    } else if (have_out && now - ov.last_ns <= nat_timeout(n, iv->proto, ov.closing)) {
        return; /* still in use */
    }
    if (have_out) {
        n->host->delete_state(n->out, &ok);
    }
    n->host->delete_state(n->in, ik);
    nat_pool_give(n, pi, item);
    nat_count(n, NAT_C_EXPIRED);
}

/* The sweep on an ABI 1.2 host: walks the `in` table's slots, so its cost
 * follows the table, not the pool (16M items per protocol for a /24 of
 * external addresses, swept item by item, cost this NF ~1 probe per packet). */
static void nat_sweep_entries(struct nat *n, uint64_t now)
{
    const uint64_t slots = n->host->table_slots(n->in);
    if (slots == 0) {
        return;
    }
    uint64_t budget = serpens_sweep_budget(&n->sweep, slots, now, NAT_SWEEP_SLOTS_MAX);
    struct nat_in_key ik;
    struct nat_in_val iv;
    while (serpens_sweep_next(n->host, n->in, &n->sweep, slots, &budget, &ik, &iv) == SERPENS_OK) {
        if (iv.owner != n->ctx->instance_id) {
            continue;
        }
        const int64_t item = nat_endpoint_item(n, ik.ext_ip, ik.ext_port);
        if (item < 0) {
            continue; /* an item of another pool configuration: not ours to give back */
        }
        nat_expire_mapping(n, nat_proto_index(ik.proto), (uint32_t)item, &ik, &iv, now);
    }
}

/* The sweep on an older host: every item of the pool in turn, one lookup
 * each, mostly misses. */
static void nat_sweep_items(struct nat *n, uint64_t now)
{
    const uint64_t total = (uint64_t)n->n_items * NAT_N_PROTOS;
    const uint64_t budget = serpens_sweep_budget(&n->sweep, total, now, NAT_SWEEP_MAX);
    for (uint64_t k = 0; k < budget; ++k) {
        uint64_t pos = n->sweep.pos % total;
        n->sweep.pos = (pos + 1) % total;
        unsigned pi = (unsigned)(pos / n->n_items);
        uint32_t item = (uint32_t)(pos % n->n_items);
        struct nat_in_key ik;
        struct nat_in_val iv;
        memset(&ik, 0, sizeof ik);
        nat_item_endpoint(n, item, &ik.ext_ip, &ik.ext_port);
        ik.proto = nat_protos[pi];
        if (n->host->get_state(n->in, &ik, &iv) == SERPENS_OK && iv.owner == n->ctx->instance_id) {
            nat_expire_mapping(n, pi, item, &ik, &iv, now);
        }
    }
}

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

/* Rewrites one address (at ip + addr_at) and one port/id, fixing checksums. */
static void nat_rewrite(uint8_t *ip, unsigned addr_at, struct nat_l4 *l4, unsigned port_at, uint32_t new_ip,
                        uint16_t new_port)
{
    serpens_ipv4_rewrite(ip, addr_at, l4->hdr, l4->csum_at, port_at, l4->pseudo, l4->proto == NAT_PROTO_UDP, new_ip,
                         new_port);
}

/* ---- ICMP errors (RFC 5508 REQ-3) -------------------------------------- */

/* Stores a 16- or 32-bit field inside an ICMP message and keeps the
 * message's checksum (at icmp + 2) right.  Fields sit at even offsets. */
static void nat_icmp_set16(uint8_t *icmp, uint8_t *field, uint16_t now)
{
    const uint16_t old = serpens_ld16(field);
    serpens_st16(field, now);
    serpens_st16(icmp + 2, serpens_csum_replace16(serpens_ld16(icmp + 2), old, now));
}

static void nat_icmp_set32(uint8_t *icmp, uint8_t *field, uint32_t now)
{
    const uint32_t old = serpens_ld32(field);
    serpens_st32(field, now);
    serpens_st16(icmp + 2, serpens_csum_replace32(serpens_ld16(icmp + 2), old, now));
}

/* The quoted packet: its IPv4 header and the part of its L4 header the
 * error carries (at least the 8 bytes RFC 792 asks for). */
struct nat_quote {
    uint8_t *ip;
    uint8_t *l4;
    uint32_t l4_len;
    uint8_t proto;
};

/* Rewrites the quoted packet's address at addr_at (12 source, 16
 * destination) and its port or echo id at port_at, with its IP checksum and,
 * when quoted, its L4 checksum; every change also goes into the ICMP
 * checksum, which covers the quote. */
static void nat_quote_rewrite(uint8_t *icmp, const struct nat_quote *q, unsigned addr_at, unsigned port_at,
                              uint32_t new_ip, uint16_t new_port)
{
    const uint32_t old_ip = serpens_ld32(q->ip + addr_at);
    const uint16_t old_port = serpens_ld16(q->l4 + port_at);
    const unsigned csum_at = q->proto == NAT_PROTO_TCP ? 16u : q->proto == NAT_PROTO_UDP ? 6u : 2u;
    if (q->l4_len >= csum_at + 2u) {
        const uint16_t hc = serpens_ld16(q->l4 + csum_at);
        const int udp = q->proto == NAT_PROTO_UDP;
        if (!udp || hc != 0) { /* a zero UDP checksum: none was sent, nothing to change */
            nat_icmp_set16(icmp, q->l4 + csum_at,
                           serpens_l4_csum_update(hc, q->proto != NAT_PROTO_ICMP, udp, old_ip, new_ip, old_port,
                                                  new_port));
        }
    }
    nat_icmp_set16(icmp, q->l4 + port_at, new_port);
    nat_icmp_set16(icmp, q->ip + 10, serpens_csum_replace32(serpens_ld16(q->ip + 10), old_ip, new_ip));
    nat_icmp_set32(icmp, q->ip + addr_at, new_ip);
}

/* Finds the quoted packet; 0 on success, else the counter to bump.  The
 * quote must be an unfragmented (or first-fragment) TCP, UDP or ICMP echo
 * packet with its ports or echo id: `echo_type` is the echo type the flow's
 * packet has in that direction (8 going out, 0 coming in). */
static int nat_quote_of(struct serpens_pkt *p, const uint8_t *ip, uint8_t echo_type, struct nat_quote *q)
{
    const uint32_t ihl = (ip[0] & 0x0fu) * 4u;
    const uint32_t total = ntohs(serpens_ld16(ip + 2));
    uint32_t avail = p->len - p->l4_offset;
    if (total >= ihl && total - ihl < avail) {
        avail = total - ihl; /* not the Ethernet padding */
    }
    if (avail < 8u + 20u) {
        return NAT_C_MALFORMED;
    }
    q->ip = p->data + p->l4_offset + 8;
    const uint32_t qihl = (q->ip[0] & 0x0fu) * 4u;
    if ((q->ip[0] >> 4) != 4 || qihl < 20u || avail < 8u + qihl + 8u) {
        return NAT_C_MALFORMED;
    }
    if ((ntohs(serpens_ld16(q->ip + 6)) & 0x1fffu) != 0) {
        return NAT_C_UNSUPPORTED; /* a later fragment quotes no ports */
    }
    q->l4 = q->ip + qihl;
    q->l4_len = avail - 8u - qihl;
    q->proto = q->ip[9];
    if (q->proto == NAT_PROTO_ICMP) {
        return q->l4[0] == echo_type && q->l4[1] == 0 ? 0 : NAT_C_UNSUPPORTED;
    }
    return q->proto == NAT_PROTO_TCP || q->proto == NAT_PROTO_UDP ? 0 : NAT_C_UNSUPPORTED;
}

/* An ICMP error about a mapped flow quotes the flow's packet as it was on
 * the error's side of the NAT.  From outside (to an external address): the
 * quote is an outbound packet, source = the external item; it goes to the
 * inside host with the quote's source set back.  From inside: the quote is
 * a translated reply, destination = the inside host; it goes out from the
 * external address with the quote's destination set to the item.  Errors
 * about no mapping, or (from outside) quoting another remote endpoint than
 * the flow's, are dropped.  Looked up one by one: errors are rare. */
static uint8_t nat_icmp_error(struct nat *n, struct serpens_pkt *p, uint8_t *ip, int outbound)
{
    struct nat_quote q;
    int bad = nat_quote_of(p, ip, outbound ? 0 : 8, &q);
    if (bad) {
        nat_count(n, (enum nat_counter)bad);
        return SERPENS_PORT_DROP;
    }
    uint8_t *icmp = p->data + p->l4_offset;
    const int echo = q.proto == NAT_PROTO_ICMP;
    const unsigned sport_at = echo ? 4u : 0u, dport_at = echo ? 4u : 2u;
    if (outbound) {
        struct nat_out_key key;
        struct nat_out_val val;
        memset(&key, 0, sizeof key);
        key.in_ip = serpens_ld32(q.ip + 16);
        key.rem_ip = serpens_ld32(q.ip + 12);
        key.in_port = serpens_ld16(q.l4 + dport_at);
        key.rem_port = echo ? 0 : serpens_ld16(q.l4 + sport_at);
        key.proto = q.proto;
        if (n->host->get_state(n->out, &key, &val) != SERPENS_OK) {
            nat_count(n, NAT_C_NO_MAPPING);
            return SERPENS_PORT_DROP;
        }
        nat_quote_rewrite(icmp, &q, 16, dport_at, val.ext_ip, val.ext_port);
        serpens_ipv4_set_addr(ip, 12, val.ext_ip);
        nat_count(n, NAT_C_OUT);
    } else {
        struct nat_in_key key;
        struct nat_in_val val;
        memset(&key, 0, sizeof key);
        key.ext_ip = serpens_ld32(q.ip + 12);
        key.ext_port = serpens_ld16(q.l4 + sport_at);
        key.proto = q.proto;
        if (n->host->get_state(n->in, &key, &val) != SERPENS_OK) {
            nat_count(n, NAT_C_NO_MAPPING);
            return SERPENS_PORT_DROP;
        }
        if (val.rem_ip != serpens_ld32(q.ip + 16) || (!echo && val.rem_port != serpens_ld16(q.l4 + dport_at))) {
            nat_count(n, NAT_C_FILTERED);
            return SERPENS_PORT_DROP;
        }
        nat_quote_rewrite(icmp, &q, 12, sport_at, val.in_ip, val.in_port);
        serpens_ipv4_set_addr(ip, 16, val.in_ip);
        nat_count(n, NAT_C_IN);
    }
    nat_count(n, NAT_C_ICMP_ERRORS);
    return SERPENS_PORT_DEFAULT;
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
        nat_count(n, NAT_C_PASSED);
        *port = SERPENS_PORT_DEFAULT;
        return NAT_K_DONE;
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
        nat_count(n, NAT_C_PASSED);
        *port = SERPENS_PORT_DEFAULT;
        return NAT_K_DONE;
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
        job->fin_or_rst = proto == NAT_PROTO_TCP && (l4->hdr[13] & 0x05) != 0;
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
        struct nat_in_key ik;
        struct nat_in_val iv;
        memset(&ik, 0, sizeof ik);
        memset(&iv, 0, sizeof iv);
        memset(val, 0, sizeof *val);
        nat_item_endpoint(n, (uint32_t)item, &ik.ext_ip, &ik.ext_port);
        ik.proto = proto;
        iv.in_ip = key->in_ip;
        iv.rem_ip = key->rem_ip;
        iv.in_port = key->in_port;
        iv.rem_port = key->rem_port;
        iv.owner = (uint16_t)n->ctx->instance_id;
        iv.proto = proto;
        val->ext_ip = ik.ext_ip;
        val->ext_port = ik.ext_port;
        val->closing = (uint8_t)fin_or_rst;
        val->last_ns = now;
        /* Reverse entry first: once the forward one exists, replies may come. */
        int rc = n->host->put_state(n->in, &ik, &iv);
        if (rc == SERPENS_OK) {
            rc = n->host->put_state(n->out, key, val);
            if (rc != SERPENS_OK) {
                n->host->delete_state(n->in, &ik);
            }
        }
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

/* Up to NAT_BULK packets: classify all, look their mappings up in one bulk
 * call per table, then translate in order. */
static void nat_run_chunk(struct nat *n, struct serpens_batch *batch, uint32_t first, uint32_t end, uint64_t now)
{
    struct nat_chunk *c = &n->chunk;
    c->n_out = c->n_in = 0;
    for (uint32_t i = first; i < end; ++i) {
        struct nat_job *job = &c->job[i - first];
        job->kind = NAT_K_DONE;
        if (batch->labels[i] == batch->self) {
            job->kind = (uint8_t)nat_classify(n, serpens_batch_pkt(batch, i), c, job, &batch->ports[i]);
        }
    }
    c->ohit = serpens_get_state_bulk(n->host, n->out, c->okey, c->n_out, c->oval, sizeof c->okey[0], sizeof c->oval[0]);
    c->ihit = serpens_get_state_bulk(n->host, n->in, c->ikey, c->n_in, c->ival, sizeof c->ikey[0], sizeof c->ival[0]);
    for (uint32_t i = first; i < end; ++i) {
        const struct nat_job *job = &c->job[i - first];
        if (job->kind == NAT_K_OUT) {
            batch->ports[i] = nat_outbound(n, c, job, now);
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
    if (n->scan) {
        nat_sweep_entries(n, now);
    } else {
        nat_sweep_items(n, now);
    }
}

/* ---- configuration (cold path) ---------------------------------------- */

/* Logs "file:line:col: nat: <path>: <message>" and returns SERPENS_EINVAL. */
#define nat_config_error(ctx, cfg, path, ...) serpens_config_error(ctx, cfg, "nat", path, __VA_ARGS__)

static int parse_ipv4(const char *text, uint32_t *out_h)
{
    struct in_addr a;
    if (inet_pton(AF_INET, text, &a) != 1) {
        return -1;
    }
    *out_h = ntohl(a.s_addr);
    return 0;
}

static int add_inside(void *arg, const serpens_config *cfg, const char *path, const char *value)
{
    struct nat *n = arg;
    uint32_t net = 0, mask = 0;
    char why[256];
    if (serpens_parse_prefix4(value, &net, &mask, why, sizeof why) != SERPENS_OK) {
        return nat_config_error(n->ctx, cfg, path, "%s", why);
    }
    if (n->n_inside == NAT_MAX_INSIDE) {
        return nat_config_error(n->ctx, cfg, path, "more than %d inside prefixes", NAT_MAX_INSIDE);
    }
    n->inside[n->n_inside].net = net;
    n->inside[n->n_inside].mask = mask;
    ++n->n_inside;
    return SERPENS_OK;
}

static int add_external(void *arg, const serpens_config *cfg, const char *path, const char *value)
{
    struct nat *n = arg;
    uint32_t first = 0, last = 0;
    const char *dash = strchr(value, '-');
    if (dash != NULL) {
        char a[64];
        size_t la = (size_t)(dash - value);
        if (la >= sizeof a) {
            return nat_config_error(n->ctx, cfg, path, "'%s' is not an address range (a.b.c.d-e.f.g.h)", value);
        }
        memcpy(a, value, la);
        a[la] = '\0';
        if (parse_ipv4(a, &first) != 0 || parse_ipv4(dash + 1, &last) != 0 || last < first) {
            return nat_config_error(n->ctx, cfg, path, "'%s' is not an address range (a.b.c.d-e.f.g.h, low-high)",
                                    value);
        }
    } else {
        uint32_t mask = 0;
        char why[256];
        if (serpens_parse_prefix4(value, &first, &mask, why, sizeof why) != SERPENS_OK) {
            return nat_config_error(n->ctx, cfg, path, "%s (or a range a.b.c.d-e.f.g.h)", why);
        }
        last = first | ~mask;
    }
    if ((uint64_t)last - first + 1 > NAT_MAX_EXTERNAL_IPS - n->n_ext) {
        return nat_config_error(n->ctx, cfg, path, "more than %d external addresses in all", NAT_MAX_EXTERNAL_IPS);
    }
    for (uint64_t ip = first; ip <= last; ++ip) {
        n->ext_ip[n->n_ext++] = (uint32_t)ip;
    }
    return SERPENS_OK;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t fnv1a(uint32_t h, const void *data, size_t len)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < len; ++i) {
        h = (h ^ p[i]) * 16777619u;
    }
    return h;
}

static int nat_configure(struct nat *n, const serpens_config *cfg)
{
    int rc;
    if ((rc = serpens_config_for_each_string(n->ctx, cfg, "nat", "inside", add_inside, n)) != SERPENS_OK) {
        return rc;
    }
    if ((rc = serpens_config_for_each_string(n->ctx, cfg, "nat", "external", add_external, n)) != SERPENS_OK) {
        return rc;
    }
    qsort(n->ext_ip, n->n_ext, sizeof n->ext_ip[0], cmp_u32);
    for (uint32_t i = 1; i < n->n_ext; ++i) {
        if (n->ext_ip[i] == n->ext_ip[i - 1]) {
            struct in_addr a = {htonl(n->ext_ip[i])};
            return nat_config_error(n->ctx, cfg, "external", "address %s is listed twice", inet_ntoa(a));
        }
    }
    for (uint32_t i = 0; i < n->n_ext; ++i) {
        if (nat_inside(n, n->ext_ip[i])) {
            struct in_addr a = {htonl(n->ext_ip[i])};
            return nat_config_error(n->ctx, cfg, "external", "address %s lies inside an inside prefix",
                                    inet_ntoa(a));
        }
    }

    int64_t port_lo = 1024, port_hi = 65535;
    size_t n_ports = 0;
    rc = n->host->config_array_size(cfg, "ports", &n_ports);
    if (rc == SERPENS_OK) {
        if (n_ports != 2) {
            return nat_config_error(n->ctx, cfg, "ports", "expected [first, last], got %zu elements", n_ports);
        }
        if ((rc = serpens_config_int_range(n->ctx, cfg, "nat", "ports[0]", 1, 65535, &port_lo)) != SERPENS_OK ||
            (rc = serpens_config_int_range(n->ctx, cfg, "nat", "ports[1]", 1, 65535, &port_hi)) != SERPENS_OK) {
            return rc;
        }
        if (port_hi < port_lo) {
            return nat_config_error(n->ctx, cfg, "ports", "last port %lld is below first port %lld",
                                    (long long)port_hi, (long long)port_lo);
        }
    } else if (rc != SERPENS_ENOENT) {
        return nat_config_error(n->ctx, cfg, "ports", "expected [first, last]");
    }
    n->port_min = (uint32_t)port_lo;
    n->n_ports = (uint32_t)(port_hi - port_lo + 1);
    uint64_t items = (uint64_t)n->n_ext * n->n_ports;
    if (items > (uint64_t)NAT_CHUNK_ITEMS * NAT_MAX_CHUNKS) {
        return nat_config_error(n->ctx, cfg, "external", "%llu (address, port) items exceed the limit of %llu",
                                (unsigned long long)items,
                                (unsigned long long)NAT_CHUNK_ITEMS * NAT_MAX_CHUNKS);
    }
    n->n_items = (uint32_t)items;
    n->n_chunks = (n->n_items + NAT_CHUNK_ITEMS - 1) / NAT_CHUNK_ITEMS;

    int64_t max_mappings = 1048576;
    if ((rc = serpens_config_int_range(n->ctx, cfg, "nat", "max_mappings", 1, 1ll << 26, &max_mappings)) !=
        SERPENS_OK) {
        return rc;
    }
    n->max_mappings = (uint64_t)max_mappings;
    int64_t rebalance_ms = 0;
    if ((rc = serpens_config_int_range(n->ctx, cfg, "nat", "rebalance_ms", 0, 3600000, &rebalance_ms)) != SERPENS_OK) {
        return rc;
    }
    n->rebalance_ns = (uint64_t)rebalance_ms * 1000000ull;

    static const char *const timeout_keys[NAT_N_TIMEOUTS] = {"timeouts.tcp", "timeouts.tcp_closed", "timeouts.udp",
                                                             "timeouts.icmp"};
    static const int64_t timeout_defaults[NAT_N_TIMEOUTS] = {7440, 240, 300, 60};
    uint64_t shortest = ~0ull;
    for (int t = 0; t < NAT_N_TIMEOUTS; ++t) {
        int64_t s = timeout_defaults[t];
        if ((rc = serpens_config_int_range(n->ctx, cfg, "nat", timeout_keys[t], 1, 7 * 86400, &s)) != SERPENS_OK) {
            return rc;
        }
        n->timeout_ns[t] = (uint64_t)s * 1000000000ull;
        if (n->timeout_ns[t] < shortest) {
            shortest = n->timeout_ns[t];
        }
    }
    /* Stamps at 1/16 of the shortest timeout cost little precision; sweeps
     * twice per shortest timeout bound how late a mapping is freed. */
    n->refresh_ns = shortest / 16 < NAT_REFRESH_MAX_NS ? shortest / 16 : NAT_REFRESH_MAX_NS;
    n->sweep.period_ns = shortest / 2;

    uint32_t fp = fnv1a(2166136261u, n->ext_ip, (size_t)n->n_ext * sizeof n->ext_ip[0]);
    fp = fnv1a(fp, &n->port_min, sizeof n->port_min);
    n->fingerprint = fnv1a(fp, &n->n_ports, sizeof n->n_ports);
    return SERPENS_OK;
}

/* Puts every item of the pool into it, once per executor. */
static int nat_pool_init(struct nat *n)
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
    if (rc != SERPENS_OK) {
        return rc;
    }
    if (h->create_table == NULL || h->get_state == NULL || h->trigger == NULL || h->split == NULL) {
        h->log(ctx, SERPENS_LOG_ERROR, "nat: this host provides no state API");
        return SERPENS_ENOTSUP;
    }
    n->pool = h->create_table(ctx, "pool", SERPENS_STATE_GLOBAL | SERPENS_STATE_WRITE | SERPENS_STATE_RELEASE,
                              sizeof(struct nat_pool_key), sizeof n->bitmap, (uint64_t)n->n_chunks * NAT_N_PROTOS);
    /* The sweep alone expires mappings, so an item goes back with its mapping. */
    uint32_t flow_flags = SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE;
    if (h->abi_minor >= 1) {
        flow_flags |= SERPENS_STATE_NF_EXPIRY;
    } else {
        h->log(ctx, SERPENS_LOG_WARN,
               "nat: host ABI %u.%u has no NF_EXPIRY tables: mappings the host expires keep their external port "
               "out of the pool",
               (unsigned)h->abi_major, (unsigned)h->abi_minor);
    }
    n->scan = SERPENS_HOST_HAS(h, scan_state) && SERPENS_HOST_HAS(h, table_slots);
    n->out = h->create_table(ctx, "out", flow_flags, sizeof(struct nat_out_key), sizeof(struct nat_out_val),
                             n->max_mappings);
    n->in = h->create_table(ctx, "in", flow_flags, sizeof(struct nat_in_key), sizeof(struct nat_in_val),
                            n->max_mappings);
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
    h->log(ctx, SERPENS_LOG_INFO, "nat: %u inside prefixes, %u external addresses from %s, ports %u-%u (%u items per protocol)",
           n->n_inside, n->n_ext, inet_ntoa(first), n->port_min, n->port_min + n->n_ports - 1, n->n_items);
    return SERPENS_OK;
}

static void nat_fini(struct serpens_nf_ctx *ctx)
{
    free(ctx->priv);
    ctx->priv = NULL;
}

/* ---- registration ---------------------------------------------------- */

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
};

SERPENS_NF_REGISTER(nat_descriptor)
