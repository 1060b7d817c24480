/*
 * lb — L4 load balancer: Maglev consistent hashing of flows to backends.
 *
 * SYNOPSIS
 *   [[nf]]
 *   name   = "lb"
 *   plugin = "lb"
 *   [nf.config]
 *   vips       = ["198.19.0.0/16"]        # service addresses/prefixes (string or array); required
 *   vport      = 80                       # only this destination port (default: any)
 *   backends   = ["10.1.0.1", "10.1.0.2:8080"]  # address[:port]; a port rewrites the
 *                                         # destination port too; required, 1..256
 *   table_size = 65537                    # Maglev lookup table size, a prime > 100 * backends
 *   max_flows  = 1048576                  # flows the mapping table holds (see STATE)
 *   merge_ms   = 1000                     # backend usage replicas folded this often (0: at scale events)
 *
 * DESCRIPTION
 *   A TCP or UDP packet to a service address (and vport, when set) is sent
 *   to a backend: its destination address (and port, for backends given with
 *   one) is rewritten and the IP and L4 checksums are updated incrementally
 *   (RFC 1624).  A new flow picks its backend from a Maglev lookup table
 *   (Eisenbud et al., NSDI 2016, §3.4: each backend fills the table in its
 *   own permutation order, offset and skip from two hashes of its name, so
 *   every backend owns M/N entries within one, and a changed backend set
 *   moves few entries).  The choice is stored per flow, so a flow stays on
 *   its backend when the backend set changes (a restart with a new list, or
 *   instances with different configs sharing the executor's state).
 *   Replies from a backend to a client whose flow it serves get the service
 *   address and port back as their source.
 *   On a host with the chain's flow table (ABI 1.5), a flow's backend lives
 *   in lb's area of the flow's entry, which the host has already looked up:
 *   a packet of a known flow costs lb no lookup.  Replies are another flow
 *   of the chain, so they still look their service up in the `flows` table.
 *   Those lookups go in bulk, one state call per 64 packets, so their cache
 *   misses overlap; a packet whose entry an earlier packet of the same run
 *   created reads it again.
 *   Every other packet passes unchanged; frames the host could not parse
 *   pass too (counted), since the LB is no filter.  Fragments and packets cut
 *   short inside the headers to rewrite, when bound for a service address,
 *   are dropped and counted.
 *
 * STATE (paper Table I)
 *   (flow)    chain flow area, 8 B   backend address, port and index: the forward mapping
 *   flows     PER_FLOW|WRITE         (backend, client) -> service for replies, max_flows
 *                                    entries; on a host without the chain's flow table
 *                                    also (proto, client, service) -> backend, 2 x max_flows
 *   backends  GLOBAL|WRITE|EVENTUAL  key backend addr:port (8 B: address and port in
 *                                    network order, 2 B zero), value flows, packets,
 *                                    bytes (u64, little endian); replicas summed by the
 *                                    host's default merge on a timer per backend.
 *
 * COUNTERS
 *   See LB_COUNTERS below.
 *
 * PORTS
 *   0  everything not dropped.
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

#define LB_MAX_VIPS 32
#define LB_MAX_BACKENDS 256
#define LB_MAX_TABLE 1000003u /* a prime; the table is 2 bytes per entry */
#define LB_PUT_RETRIES 4
#define LB_EAGAIN SERPENS_EAGAIN
#define LB_BULK 64u /* packets whose flow entries are looked up together (nf.h bulk limit) */

#define LB_COUNTERS(X)                                                                                                 \
    X(BALANCED, "balanced", "packets to a service sent to a backend")                                                  \
    X(REPLIES, "replies", "backend replies given the service address back")                                            \
    X(PASSED, "passed", "packets for no service, passed unchanged")                                                    \
    X(FLOWS_NEW, "flows_new", "flows given a backend from the Maglev table")                                           \
    X(TABLE_FULL, "table_full", "new flows balanced without a stored mapping: table full")                             \
    X(UNPARSED, "unparsed", "frames the host could not parse, passed unchanged")                                       \
    X(MALFORMED, "malformed", "packets to a service cut short inside their headers, dropped")                          \
    X(UNSUPPORTED, "unsupported", "fragments to a service: no ports to balance by, dropped")                           \
    X(STATE_ERRORS, "state_errors", "state API calls that failed unexpectedly")

enum lb_counter {
#define LB_COUNTER_ENUM(sym, name, desc) LB_C_##sym,
    LB_COUNTERS(LB_COUNTER_ENUM)
#undef LB_COUNTER_ENUM
        LB_N_COUNTERS
};

static const char *const lb_counter_names[LB_N_COUNTERS] = {LB_COUNTERS(SERPENS_COUNTER_NAME)};

/* ---- state layouts (network byte order for addresses and ports) -------- */

#define LB_DIR_FORWARD 0u /* client -> service */
#define LB_DIR_REPLY 1u   /* backend -> client */

struct lb_flow_key {
    uint32_t a_ip; /* forward: client; reply: backend */
    uint32_t b_ip; /* forward: service; reply: client */
    uint16_t a_port;
    uint16_t b_port;
    uint8_t proto;
    uint8_t dir;
    uint8_t pad[2];
};

struct lb_flow_val {
    uint32_t ip;   /* forward: backend; reply: service */
    uint16_t port; /* forward: backend port (the service port when kept); reply: service port */
    uint16_t pad;
};

/* lb's area of a flow's entry in the chain's flow table: one word, so a
 * crash leaves it unset or whole.  It is set after the reply entry is in
 * the table, so a flow with an area always has its replies translated. */
struct lb_flow_area {
    uint32_t ip;     /* backend address */
    uint16_t port;   /* backend port (the service port when kept) */
    uint8_t backend; /* its index in the list of the instance that chose it: a hint */
    uint8_t mapped;  /* 1: set */
};

_Static_assert(sizeof(struct lb_flow_area) == 8, "a flow's backend is one word");
_Static_assert(LB_MAX_BACKENDS <= 256, "a backend index fits the area's byte");

struct lb_backend_key {
    uint32_t ip;
    uint16_t port; /* 0: the service port is kept */
    uint16_t pad;
};

struct lb_usage {
    uint64_t flows;
    uint64_t packets;
    uint64_t bytes;
};

struct lb_prefix {
    uint32_t net; /* host byte order */
    uint32_t mask;
};

enum lb_kind { LB_K_FORWARD, LB_K_REPLY };

/* Up to LB_BULK packets between classification and rewriting: their flow
 * entries are read in one bulk call, so the cache misses overlap. */
struct lb_run {
    uint32_t at[LB_BULK]; /* index in the batch */
    uint8_t kind[LB_BULK];
    struct lb_flow_key key[LB_BULK];
    struct lb_flow_val val[LB_BULK];
    uint32_t n;
    /* Keys this run wrote (new flows, two each): a later packet of the run
     * with one of them reads it again, its bulk result being older. */
    struct lb_flow_key written_keys[2 * LB_BULK];
    struct serpens_written written;
};

struct lb {
    struct serpens_nf_ctx *ctx;
    const struct serpens_host_api *host;
    serpens_table *flows;
    serpens_table *usage;
    int chain_flows; /* forward mappings live in the chain's flow table */
    struct lb_prefix vip[LB_MAX_VIPS];
    uint32_t n_vips;
    int32_t vport; /* host order; -1 = any */
    struct lb_backend_key backend[LB_MAX_BACKENDS];
    uint32_t n_backends;
    uint32_t table_size;
    uint16_t *lookup; /* table_size entries: backend index */
    uint64_t *counter[LB_N_COUNTERS];
    /* backend usage gathered over one batch, flushed after it */
    struct lb_usage batch_usage[LB_MAX_BACKENDS];
    uint16_t touched[LB_MAX_BACKENDS];
    uint32_t n_touched;
    struct lb_run run;
};

static inline void lb_count(struct lb *l, enum lb_counter c) { ++*l->counter[c]; }

/* ---- hashing ----------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    /* splitmix64's finalizer: every input bit moves every output bit. */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t hash_bytes(const void *data, size_t len, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (size_t i = 0; i < len; ++i) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return mix64(h);
}

/* ---- rewriting --------------------------------------------------------- */

/* Rewrites the address at ip + addr_at and the port at l4 + port_at. */
static void lb_rewrite(uint8_t *ip, unsigned addr_at, uint8_t *l4, uint8_t proto, unsigned port_at, uint32_t new_ip,
                       uint16_t new_port)
{
    serpens_ipv4_rewrite(ip, addr_at, l4, proto == 6 ? 16 : 6, port_at, 1, proto == 17, new_ip, new_port);
}

/* The flow key of a TCP/UDP packet, in the direction dir. */
static struct lb_flow_key lb_key_of(const uint8_t *ip, const uint8_t *l4, uint8_t proto, uint8_t dir)
{
    struct lb_flow_key key;
    memset(&key, 0, sizeof key);
    key.a_ip = serpens_ld32(ip + 12);
    key.b_ip = serpens_ld32(ip + 16);
    key.a_port = serpens_ld16(l4);
    key.b_port = serpens_ld16(l4 + 2);
    key.proto = proto;
    key.dir = dir;
    return key;
}

/* ---- Maglev (cold path) -------------------------------------------------- */

/* Fills lookup[] as Maglev's Populate (NSDI 2016, Pseudocode 1). */
static int lb_populate(struct lb *l)
{
    const uint32_t m = l->table_size, n = l->n_backends;
    uint32_t *offset = calloc(n, sizeof *offset);
    uint32_t *skip = calloc(n, sizeof *skip);
    uint32_t *next = calloc(n, sizeof *next);
    l->lookup = malloc((size_t)m * sizeof *l->lookup);
    if (offset == NULL || skip == NULL || next == NULL || l->lookup == NULL) {
        free(offset), free(skip), free(next);
        return SERPENS_ENOMEM;
    }
    for (uint32_t i = 0; i < n; ++i) {
        /* The backend's name is its address and port, so every instance and
         * every host builds the same table from the same list. */
        offset[i] = (uint32_t)(hash_bytes(&l->backend[i], sizeof l->backend[i], 0x6d61676c6576ull) % m);
        skip[i] = (uint32_t)(hash_bytes(&l->backend[i], sizeof l->backend[i], 0x736b6970ull) % (m - 1)) + 1;
    }
    for (uint32_t j = 0; j < m; ++j) {
        l->lookup[j] = UINT16_MAX;
    }
    uint32_t filled = 0;
    while (filled < m) {
        for (uint32_t i = 0; i < n && filled < m; ++i) {
            uint32_t c = (uint32_t)(((uint64_t)offset[i] + (uint64_t)next[i] * skip[i]) % m);
            while (l->lookup[c] != UINT16_MAX) {
                ++next[i];
                c = (uint32_t)(((uint64_t)offset[i] + (uint64_t)next[i] * skip[i]) % m);
            }
            l->lookup[c] = (uint16_t)i;
            ++next[i];
            ++filled;
        }
    }
    free(offset), free(skip), free(next);
    return SERPENS_OK;
}

/* ---- the data path ------------------------------------------------------ */

static int lb_is_vip(const struct lb *l, uint32_t ip_h)
{
    for (uint32_t i = 0; i < l->n_vips; ++i) {
        if ((ip_h & l->vip[i].mask) == l->vip[i].net) {
            return 1;
        }
    }
    return 0;
}

static void lb_use(struct lb *l, uint32_t b, uint32_t len, int new_flow)
{
    struct lb_usage *u = &l->batch_usage[b];
    if (u->packets == 0 && u->flows == 0) {
        l->touched[l->n_touched++] = (uint16_t)b;
    }
    u->packets += 1;
    u->bytes += len;
    u->flows += (uint64_t)new_flow;
}

/* The backend the Maglev table gives a new flow, into *val; its index. */
static uint32_t lb_pick(const struct lb *l, const struct lb_flow_key *key, struct lb_flow_val *val)
{
    const uint32_t b = l->lookup[hash_bytes(key, sizeof *key, 0) % l->table_size];
    val->ip = l->backend[b].ip;
    val->port = l->backend[b].port != 0 ? l->backend[b].port : key->b_port;
    val->pad = 0;
    return b;
}

/* Stores where a new flow's replies go back to: backend -> client maps to
 * the service (forward key, backend val); the reply key in *rkey.  The
 * put's result. */
static int lb_put_reply(struct lb *l, const struct lb_flow_key *key, const struct lb_flow_val *val,
                        struct lb_flow_key *rkey)
{
    memset(rkey, 0, sizeof *rkey);
    rkey->a_ip = val->ip;
    rkey->b_ip = key->a_ip;
    rkey->a_port = val->port;
    rkey->b_port = key->a_port;
    rkey->proto = key->proto;
    rkey->dir = LB_DIR_REPLY;
    const struct lb_flow_val rval = {key->b_ip, key->b_port, 0};
    return l->host->put_state(l->flows, rkey, &rval);
}

/* The index in this instance's list of a stored backend (hint: where it was
 * when chosen), or UINT32_MAX when it has left the list. */
static uint32_t lb_backend_index(const struct lb *l, const struct lb_flow_key *key, const struct lb_flow_val *val,
                                 uint32_t hint)
{
    for (uint32_t n = 0, i = hint < l->n_backends ? hint : 0; n < l->n_backends;
         ++n, i = i + 1 < l->n_backends ? i + 1 : 0) {
        const struct lb_backend_key *b = &l->backend[i];
        if (b->ip == val->ip && (b->port == 0 ? val->port == key->b_port : b->port == val->port)) {
            return i;
        }
    }
    return UINT32_MAX;
}

/* Rewrites a client's packet to backend *val and counts it; b is the
 * backend's index here (UINT32_MAX: it has left the list, so no usage). */
static void lb_forwarded(struct lb *l, struct serpens_pkt *p, const struct lb_flow_key *key,
                         const struct lb_flow_val *val, uint32_t b, int new_flow)
{
    if (b != UINT32_MAX) {
        lb_use(l, b, p->len, new_flow);
    }
    if (new_flow) {
        lb_count(l, LB_C_FLOWS_NEW);
    }
    lb_rewrite(p->data + p->l3_offset, 16, p->data + p->l4_offset, key->proto, 2, val->ip, val->port);
    lb_count(l, LB_C_BALANCED);
}

/* A stored mapping that failed: the flow is still balanced (the Maglev
 * table keeps the choice stable), without the memory that survives a
 * backend change. */
static void lb_put_failed(struct lb *l, int rc)
{
    lb_count(l, rc == SERPENS_ENOSPC ? LB_C_TABLE_FULL : LB_C_STATE_ERRORS);
}

/* Client -> service without the chain's flow table: recall the flow's
 * backend from the table (`found`: *val holds it) or pick one. */
static void lb_forward(struct lb *l, struct serpens_pkt *p, const struct lb_flow_key *key, struct lb_flow_val *val,
                       int found)
{
    if (found) {
        lb_forwarded(l, p, key, val, lb_backend_index(l, key, val, 0), 0);
        return;
    }
    const uint32_t b = lb_pick(l, key, val);
    struct lb_flow_key rkey;
    int rc = lb_put_reply(l, key, val, &rkey);
    if (rc == SERPENS_OK) {
        rc = l->host->put_state(l->flows, key, val);
    }
    serpens_written_add(&l->run.written, &rkey);
    serpens_written_add(&l->run.written, key);
    if (rc != SERPENS_OK) {
        lb_put_failed(l, rc);
    }
    lb_forwarded(l, p, key, val, b, 1);
}

/* Client -> service, the flow's area in hand: it holds the backend, or gets
 * it once the reply entry is stored (a crash in between leaves a reply
 * entry the flow's next packet writes again). */
static void lb_forward_flow(struct lb *l, struct serpens_pkt *p, const struct lb_flow_key *key, void *area)
{
    struct lb_flow_area a;
    serpens_flow_word_load(area, &a);
    struct lb_flow_val val;
    memset(&val, 0, sizeof val);
    if (a.mapped) {
        val.ip = a.ip;
        val.port = a.port;
        lb_forwarded(l, p, key, &val, lb_backend_index(l, key, &val, a.backend), 0);
        return;
    }
    const uint32_t b = lb_pick(l, key, &val);
    struct lb_flow_key rkey;
    const int rc = lb_put_reply(l, key, &val, &rkey);
    if (rc == SERPENS_OK) {
        a.ip = val.ip;
        a.port = val.port;
        a.backend = (uint8_t)b;
        a.mapped = 1;
        serpens_flow_word_store(area, &a);
    } else {
        lb_put_failed(l, rc);
    }
    lb_forwarded(l, p, key, &val, b, 1);
}

/* Backend -> client (`found`: *val holds the service): put the service
 * address back; anything else passes. */
static void lb_reply(struct lb *l, struct serpens_pkt *p, const struct lb_flow_key *key, const struct lb_flow_val *val,
                     int found)
{
    if (!found) {
        lb_count(l, LB_C_PASSED);
        return;
    }
    lb_rewrite(p->data + p->l3_offset, 12, p->data + p->l4_offset, key->proto, 0, val->ip, val->port);
    lb_count(l, LB_C_REPLIES);
}

/* Decides what packet p needs: 1 when its flow entry must be looked up
 * (*kind and *key set), else 0 with its port in *port (counted). */
static int lb_classify(struct lb *l, struct serpens_pkt *p, uint8_t *kind, struct lb_flow_key *key, uint8_t *port)
{
    *port = SERPENS_PORT_DEFAULT;
    if (!(p->flags & SERPENS_PKT_F_PARSED)) {
        lb_count(l, LB_C_UNPARSED);
        return 0;
    }
    if (p->l3_type != SERPENS_L3_IPV4 || p->l3_offset == SERPENS_OFFSET_NONE || p->len < (uint32_t)p->l3_offset + 20u) {
        lb_count(l, LB_C_PASSED);
        return 0;
    }
    uint8_t *ip = p->data + p->l3_offset;
    uint8_t proto = ip[9];
    int to_vip = lb_is_vip(l, ntohl(serpens_ld32(ip + 16)));
    if (proto != 6 && proto != 17) {
        lb_count(l, LB_C_PASSED);
        return 0;
    }
    if (p->flags & SERPENS_PKT_F_FRAGMENT) {
        if (to_vip) {
            lb_count(l, LB_C_UNSUPPORTED);
            *port = SERPENS_PORT_DROP;
            return 0;
        }
        lb_count(l, LB_C_PASSED);
        return 0;
    }
    uint32_t need = proto == 6 ? 20u : 8u;
    if (p->l4_offset == SERPENS_OFFSET_NONE || p->len < (uint32_t)p->l4_offset + need) {
        if (to_vip) {
            lb_count(l, LB_C_MALFORMED);
            *port = SERPENS_PORT_DROP;
            return 0;
        }
        lb_count(l, LB_C_PASSED);
        return 0;
    }
    uint8_t *l4 = p->data + p->l4_offset;
    *kind = to_vip && (l->vport < 0 || ntohs(serpens_ld16(l4 + 2)) == (uint16_t)l->vport) ? LB_K_FORWARD : LB_K_REPLY;
    *key = lb_key_of(ip, l4, proto, *kind == LB_K_FORWARD ? LB_DIR_FORWARD : LB_DIR_REPLY);
    return 1;
}

/* Looks up the run's flow entries in one bulk call, then handles its packets
 * in order; an entry a packet before it created is read again. */
static void lb_run_packets(struct lb *l, struct serpens_batch *batch)
{
    struct lb_run *r = &l->run;
    const uint64_t hit =
        serpens_get_state_bulk(l->host, l->flows, r->key, r->n, r->val, sizeof r->key[0], sizeof r->val[0]);
    serpens_written_reset(&r->written);
    for (uint32_t j = 0; j < r->n; ++j) {
        int found = (int)((hit >> j) & 1u);
        if (serpens_written_has(&r->written, &r->key[j])) {
            found = l->host->get_state(l->flows, &r->key[j], &r->val[j]) == SERPENS_OK;
        }
        struct serpens_pkt *p = serpens_batch_pkt(batch, r->at[j]);
        if (r->kind[j] == LB_K_FORWARD) {
            lb_forward(l, p, &r->key[j], &r->val[j], found);
        } else {
            lb_reply(l, p, &r->key[j], &r->val[j], found);
        }
    }
    r->n = 0;
}

/* Adds one batch's usage of a backend to this instance's replica. */
static void lb_flush(struct lb *l, uint32_t b)
{
    struct lb_usage *add = &l->batch_usage[b];
    for (int attempt = 0; attempt < LB_PUT_RETRIES; ++attempt) {
        struct lb_usage u;
        int rc = l->host->get_state(l->usage, &l->backend[b], &u);
        if (rc == SERPENS_ENOENT) {
            memset(&u, 0, sizeof u);
        } else if (rc != SERPENS_OK) {
            break;
        }
        u.flows += add->flows;
        u.packets += add->packets;
        u.bytes += add->bytes;
        rc = l->host->put_state(l->usage, &l->backend[b], &u);
        if (rc == SERPENS_OK) {
            memset(add, 0, sizeof *add);
            return;
        }
        if (rc != LB_EAGAIN) {
            break;
        }
    }
    memset(add, 0, sizeof *add);
    lb_count(l, LB_C_STATE_ERRORS);
}

static void lb_process(struct serpens_nf_ctx *ctx, struct serpens_batch *batch)
{
    struct lb *l = ctx->priv;
    struct lb_run *r = &l->run;
    const struct serpens_flow_view flows = serpens_batch_flow_view(batch);
    l->n_touched = 0;
    r->n = 0;
    for (uint32_t i = 0; i < batch->count; ++i) {
        if (batch->labels[i] != batch->self) {
            continue;
        }
        struct serpens_pkt *p = serpens_batch_pkt(batch, i);
        if (lb_classify(l, p, &r->kind[r->n], &r->key[r->n], &batch->ports[i])) {
            void *area = l->chain_flows && r->kind[r->n] == LB_K_FORWARD ? serpens_flow_area(&flows, i) : NULL;
            if (area != NULL) {
                lb_forward_flow(l, p, &r->key[r->n], area);
                continue;
            }
            r->at[r->n++] = i;
            if (r->n == LB_BULK) {
                lb_run_packets(l, batch);
            }
        }
    }
    if (r->n != 0) {
        lb_run_packets(l, batch);
    }
    for (uint32_t t = 0; t < l->n_touched; ++t) {
        lb_flush(l, l->touched[t]);
    }
}

/* ---- configuration (cold path) ------------------------------------------ */

#define lb_config_error(l, cfg, path, ...) serpens_config_error((l)->ctx, cfg, "lb", path, __VA_ARGS__)

/* "address" or "address<sep>number" with number in [lo, hi] (*number kept
 * when absent): 0, -1 when not that shape, -2 when the number is bad. */
static int lb_parse_addr(const char *value, char sep, unsigned long lo, unsigned long hi, struct in_addr *a,
                         unsigned long *number)
{
    char buf[64];
    if (strlen(value) >= sizeof buf) {
        return -1;
    }
    strcpy(buf, value);
    char *at = strchr(buf, sep);
    if (at != NULL && strchr(at + 1, sep) != NULL) {
        return -3; /* an IPv6 address: more than one separator */
    }
    if (at != NULL) {
        /* Digits only: strtoul alone would take " 80" and "+80". */
        char *end = NULL;
        *at = '\0';
        *number = strtoul(at + 1, &end, 10);
        if (at[1] < '0' || at[1] > '9' || *end != '\0' || *number < lo || *number > hi) {
            return -2;
        }
    }
    return inet_pton(AF_INET, buf, a) == 1 ? 0 : -1;
}

static int add_vip(void *arg, const serpens_config *cfg, const char *path, const char *value)
{
    struct lb *l = arg;
    uint32_t net = 0, mask = 0;
    char why[256];
    if (serpens_parse_prefix4(value, &net, &mask, why, sizeof why) != SERPENS_OK) {
        return lb_config_error(l, cfg, path, "%s", why);
    }
    if (l->n_vips == LB_MAX_VIPS) {
        return lb_config_error(l, cfg, path, "more than %d service prefixes", LB_MAX_VIPS);
    }
    l->vip[l->n_vips].net = net;
    l->vip[l->n_vips].mask = mask;
    ++l->n_vips;
    return SERPENS_OK;
}

static int add_backend(void *arg, const serpens_config *cfg, const char *path, const char *value)
{
    struct lb *l = arg;
    unsigned long port = 0;
    struct in_addr a;
    int bad = lb_parse_addr(value, ':', 1, 65535, &a, &port);
    if (bad == -2) {
        return lb_config_error(l, cfg, path, "'%s': the port must be 1..65535", value);
    }
    if (bad == -3) {
        return lb_config_error(l, cfg, path, "'%s': lb balances to IPv4 backends (address[:port])", value);
    }
    if (bad != 0) {
        return lb_config_error(l, cfg, path, "'%s' is not address[:port]", value);
    }
    /* No packet could reach these: refused, as host.toml's underlay_address is. */
    const uint32_t host = ntohl(a.s_addr);
    if (host == 0 || host == 0xffffffffu || (host >> 28) == 0xe || (host >> 24) == 127) {
        return lb_config_error(l, cfg, path, "'%s': a backend is a unicast address, not %s", value,
                               host == 0             ? "the unspecified address"
                               : host == 0xffffffffu ? "the broadcast address"
                               : (host >> 28) == 0xe ? "a multicast address"
                                                     : "a loopback address");
    }
    if (lb_is_vip(l, host)) { /* vips are read first */
        return lb_config_error(l, cfg, path,
                               "'%s' is inside a service prefix (vips): its packets would be balanced again", value);
    }
    if (l->n_backends == LB_MAX_BACKENDS) {
        return lb_config_error(l, cfg, path, "more than %d backends", LB_MAX_BACKENDS);
    }
    struct lb_backend_key k;
    memset(&k, 0, sizeof k);
    k.ip = a.s_addr;
    k.port = htons((uint16_t)port);
    for (uint32_t i = 0; i < l->n_backends; ++i) {
        if (memcmp(&l->backend[i], &k, sizeof k) == 0) {
            return lb_config_error(l, cfg, path, "'%s' is listed twice", value);
        }
    }
    l->backend[l->n_backends++] = k;
    return SERPENS_OK;
}

static int is_prime(uint32_t n)
{
    if (n < 2) {
        return 0;
    }
    for (uint32_t d = 2; (uint64_t)d * d <= n; ++d) {
        if (n % d == 0) {
            return 0;
        }
    }
    return 1;
}

static int lb_init(struct serpens_nf_ctx *ctx, const serpens_config *config)
{
    const struct serpens_host_api *h = ctx->host;
    struct lb *l = calloc(1, sizeof *l);
    if (l == NULL) {
        h->log(ctx, SERPENS_LOG_ERROR, "lb: out of memory");
        return SERPENS_ENOMEM;
    }
    ctx->priv = l;
    l->ctx = ctx;
    l->host = h;
    l->run.written.keys = l->run.written_keys;
    l->run.written.key_size = sizeof l->run.written_keys[0];
    l->run.written.cap = 2 * LB_BULK;
    int rc;
    if ((rc = serpens_config_for_each_string(ctx, config, "lb", "vips", add_vip, l)) != SERPENS_OK ||
        (rc = serpens_config_for_each_string(ctx, config, "lb", "backends", add_backend, l)) != SERPENS_OK) {
        return rc;
    }
    int64_t vport = -1, table_size = 65537, max_flows = 1048576, merge_ms = 1000;
    if ((rc = serpens_config_int_range(ctx, config, "lb", "vport", 1, 65535, &vport)) != SERPENS_OK ||
        (rc = serpens_config_int_range(ctx, config, "lb", "table_size", 2, LB_MAX_TABLE, &table_size)) != SERPENS_OK ||
        (rc = serpens_config_int_range(ctx, config, "lb", "max_flows", 1, 1ll << 26, &max_flows)) != SERPENS_OK ||
        (rc = serpens_config_int_range(ctx, config, "lb", "merge_ms", 0, 3600000, &merge_ms)) != SERPENS_OK) {
        return rc;
    }
    if (!is_prime((uint32_t)table_size)) {
        return lb_config_error(l, config, "table_size", "%lld is not a prime (Maglev needs one, e.g. 65537)",
                               (long long)table_size);
    }
    if ((uint64_t)table_size < 100ull * l->n_backends) {
        /* Maglev's balance is within about N/M: keep M at least 100 N. */
        return lb_config_error(l, config, "table_size", "%lld is below 100 x %u backends", (long long)table_size,
                               l->n_backends);
    }
    l->vport = (int32_t)vport;
    l->table_size = (uint32_t)table_size;
    if ((rc = lb_populate(l)) != SERPENS_OK) {
        h->log(ctx, SERPENS_LOG_ERROR, "lb: out of memory for the lookup table");
        return rc;
    }
    if (SERPENS_HOST_HAS(h, flow_state)) {
        if ((rc = h->flow_state(ctx, sizeof(struct lb_flow_area))) != SERPENS_OK) {
            h->log(ctx, SERPENS_LOG_ERROR, "lb: the host refused the chain's flow state: error %d", rc);
            return rc;
        }
        l->chain_flows = 1;
    }
    /* Per flow a reply entry, and without the chain's flow table a forward one. */
    l->flows = h->create_table(ctx, "flows", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE, sizeof(struct lb_flow_key),
                               sizeof(struct lb_flow_val), (l->chain_flows ? 1u : 2u) * (uint64_t)max_flows);
    l->usage = h->create_table(ctx, "backends", SERPENS_STATE_GLOBAL | SERPENS_STATE_WRITE | SERPENS_STATE_EVENTUAL,
                               sizeof(struct lb_backend_key), sizeof(struct lb_usage), LB_MAX_BACKENDS * 4);
    if (l->flows == NULL || l->usage == NULL) {
        h->log(ctx, SERPENS_LOG_ERROR, "lb: cannot create its state tables (see the host's message)");
        return SERPENS_EINVAL;
    }
    if (merge_ms != 0 && ctx->instance_id == 0) {
        for (uint32_t b = 0; b < l->n_backends; ++b) {
            if ((rc = h->timer(l->usage, &l->backend[b], (uint64_t)merge_ms * 1000000ull)) != SERPENS_OK) {
                h->log(ctx, SERPENS_LOG_ERROR, "lb: cannot set the merge timer: state error %d", rc);
                return rc;
            }
        }
    }
    return serpens_register_counters(ctx, "lb", lb_counter_names, LB_N_COUNTERS, l->counter, NULL);
}

static void lb_fini(struct serpens_nf_ctx *ctx)
{
    struct lb *l = ctx->priv;
    if (l != NULL) {
        free(l->lookup);
        free(l);
    }
    ctx->priv = NULL;
}

/* ---- registration ------------------------------------------------------ */

static const struct serpens_nf_descriptor lb_descriptor = {
    SERPENS_NF_DESCRIPTOR_HEADER,
    .name = "lb",
    .version = "1.0",
    .summary = "L4 load balancer: Maglev consistent hashing, per-flow backend memory",
    .n_ports = 1,
    .init = lb_init,
    .process = lb_process,
    .fini = lb_fini,
    .min_host_minor = SERPENS_ABI_MINOR_PKT_STRIDE, /* serpens_batch_pkt */
};

SERPENS_NF_REGISTER(lb_descriptor)
