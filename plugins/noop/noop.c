/*
 * noop — the pass-through NF, optionally with the least per-flow state work.
 *
 * SYNOPSIS
 *   [[nf]]
 *   name   = "pass"
 *   plugin = "noop"
 *   [nf.config]              # every key optional; defaults shown
 *   flow_state = "none"      # "lookup" or "count": one state access per packet
 *   max_flows = 1048576      # flows the per-flow table holds (lookup, count)
 *   spin_ns = 0              # busy-waits this long per packet (0..1000000)
 *
 * DESCRIPTION
 *   Sends every packet it sees to its default next hop (port 0) without
 *   reading or writing the packet.  With flow_state = "none" it keeps no state
 *   or counters, so a chain of noops measures the chaining runtime alone:
 *   serpens-bench uses it to cost one NF hop.  Also useful as a placeholder NF
 *   while writing a chain file.
 *
 *   With flow_state set it does, per packet, the one per-flow state access a
 *   stateful NF cannot do without, and nothing else:
 *    - "lookup": looks the packet's flow up (one get_state_bulk per 64
 *      packets) and inserts a flow it did not find, as a verdict or mapping
 *      cache does (fw, nat);
 *    - "count": adds one to the flow's packet count (one update_state_bulk_v2
 *      per 64 packets), as a per-flow counter does (mon).
 *   On a host with the chain's flow table (ABI 1.5) the state is 8 bytes of
 *   the packet's flow entry, which the host looked up once for the whole
 *   chain: "lookup" reads them, "count" adds one.  On an older host it is a
 *   table of its own keyed by the host's 32-bit flow hash, the cheapest key
 *   there is (flows whose hashes collide share an entry).  A chain of these
 *   is the floor of what a chain of stateful NFs costs on this host:
 *   serpens-bench throughput measures "lookup-count-lookup" beside
 *   FW -> MON -> NAT.
 *
 *   With spin_ns set it also busy-waits that long per packet: a stand-in for
 *   a heavy NF, so that load (and the autoscaler's reaction to it) can be
 *   produced at a rate a paced sender reaches.
 *
 * STATE (paper Table I)
 *   per flow       8 B in the chain's flow table (ABI 1.5 hosts): packets
 *                  counted (count), 0 (lookup)
 *   flows          PER_FLOW|WRITE, older hosts only: key 8 B, the flow hash
 *                  (u32) and 4 zero bytes; value 8 B as above
 *
 * HOST ABI
 *   1.4 or later (serpens_batch_pkt); flow_state = "count" uses
 *   update_state_bulk_v2 (1.4) there, the chain's flow table on 1.5.
 *
 * COUNTERS
 *   table_full    IP packets whose flow the full table could not take
 *                 (flow_state only)
 *   state_errors  count rounds the host refused for another reason than a
 *                 full table (flow_state only; none expected)
 *
 * PORTS
 *   0  every packet (the runtime resets ports to 0 before each NF, so
 *      process() has nothing to write).
 *
 * Builds against plugin-api/ alone, as C with pedantic warnings.
 */
#define _POSIX_C_SOURCE 200112L /* clock_gettime under -std=c11 */
#include <serpens/nf.h>
#include <serpens/nf_util.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NOOP_BULK 64u /* keys per bulk call (nf.h) */

enum noop_flow_state { NOOP_NONE, NOOP_LOOKUP, NOOP_COUNT };

struct noop {
    const struct serpens_host_api *host;
    serpens_table *flows;
    enum noop_flow_state mode;
    int chain_flows; /* the state is in the chain's flow table */
    uint64_t sink;   /* what "lookup" read, so that the read stays */
    uint64_t spin_ns;
    uint64_t *table_full;
    uint64_t *state_errors;
    uint64_t key[NOOP_BULK];
    uint64_t value[NOOP_BULK];
    uint64_t one[NOOP_BULK]; /* update_state_bulk's rows: +1 each */
};

static const uint8_t noop_count_ops[1] = {SERPENS_WORD_ADD};

/* One round of at most NOOP_BULK keys. */
static void noop_flush(struct noop *s, uint32_t n)
{
    if (s->mode == NOOP_COUNT) {
        uint64_t done = 0;
        const int rc = s->host->update_state_bulk_v2(s->flows, s->key, n, s->one, noop_count_ops, NULL, &done);
        if (rc == SERPENS_ENOSPC) {
            *s->table_full += (uint64_t)(n - (uint32_t)__builtin_popcountll(done));
        } else if (rc != SERPENS_OK) {
            ++*s->state_errors; /* not full: table_full would mislead */
        }
        return;
    }
    const uint64_t hit =
        serpens_get_state_bulk(s->host, s->flows, s->key, n, s->value, sizeof s->key[0], sizeof s->value[0]);
    for (uint64_t miss = ~hit & (n == 64 ? ~0ull : (1ull << n) - 1); miss != 0; miss &= miss - 1) {
        static const uint64_t zero = 0;
        if (s->host->put_state(s->flows, &s->key[__builtin_ctzll(miss)], &zero) != SERPENS_OK) {
            ++*s->table_full;
        }
    }
}

static uint64_t noop_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void noop_spin(const struct noop *s, const struct serpens_batch *batch)
{
    uint32_t visiting = 0;
    for (uint32_t i = 0; i < batch->count; ++i) {
        visiting += batch->labels[i] == batch->self;
    }
    const uint64_t until = noop_clock_ns() + s->spin_ns * visiting;
    while (noop_clock_ns() < until) {
    }
}

static void noop_process(struct serpens_nf_ctx *ctx, struct serpens_batch *batch)
{
    /* Ports arrive as SERPENS_PORT_DEFAULT: "pass on" needs no store. */
    struct noop *s = ctx->priv;
    if (s->spin_ns != 0) {
        noop_spin(s, batch);
    }
    if (s->mode == NOOP_NONE) {
        return;
    }
    if (s->chain_flows) {
        const struct serpens_flow_view flows = serpens_batch_flow_view(batch);
        for (uint32_t i = 0; i < batch->count; ++i) {
            if (batch->labels[i] != batch->self) {
                continue;
            }
            uint64_t *count = serpens_flow_area(&flows, i);
            if (count == NULL) {
                *s->table_full += (serpens_batch_pkt(batch, i)->flags & SERPENS_PKT_F_PARSED) != 0;
            } else if (s->mode == NOOP_COUNT) {
                ++*count;
            } else {
                s->sink += *count;
            }
        }
        return;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < batch->count; ++i) {
        if (batch->labels[i] != batch->self) {
            continue;
        }
        s->key[n++] = serpens_batch_pkt(batch, i)->flow_hash;
        if (n == NOOP_BULK) {
            noop_flush(s, n);
            n = 0;
        }
    }
    if (n != 0) {
        noop_flush(s, n);
    }
}

/* ---- configuration (cold path) ---------------------------------------- */

static int noop_init(struct serpens_nf_ctx *ctx, const serpens_config *config)
{
    const struct serpens_host_api *h = ctx->host;
    struct noop *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return SERPENS_ENOMEM;
    }
    ctx->priv = s;
    s->host = h;
    const char *mode = "none";
    int rc = h->config_string(config, "flow_state", &mode);
    if (rc == SERPENS_OK || rc == SERPENS_EINVAL) {
        if (rc == SERPENS_EINVAL ||
            (strcmp(mode, "none") != 0 && strcmp(mode, "lookup") != 0 && strcmp(mode, "count") != 0)) {
            return serpens_config_error(ctx, config, "noop", "flow_state",
                                        "expected \"none\", \"lookup\" or \"count\"");
        }
    }
    s->mode = strcmp(mode, "lookup") == 0 ? NOOP_LOOKUP : strcmp(mode, "count") == 0 ? NOOP_COUNT : NOOP_NONE;
    int64_t max_flows = 1048576, spin_ns = 0;
    if ((rc = serpens_config_int_range(ctx, config, "noop", "max_flows", 16, 1ll << 32, &max_flows)) != SERPENS_OK ||
        (rc = serpens_config_int_range(ctx, config, "noop", "spin_ns", 0, 1000000, &spin_ns)) != SERPENS_OK) {
        return rc;
    }
    s->spin_ns = (uint64_t)spin_ns;
    if (s->mode == NOOP_NONE) {
        return SERPENS_OK;
    }
    static const char *const names[2] = {"table_full", "state_errors"};
    uint64_t *slots[2] = {NULL, NULL};
    if ((rc = serpens_register_counters(ctx, "noop", names, 2, slots, NULL)) != SERPENS_OK) {
        return rc;
    }
    s->table_full = slots[0];
    s->state_errors = slots[1];
    if (SERPENS_HOST_HAS(h, flow_state)) {
        s->chain_flows = 1;
        return h->flow_state(ctx, sizeof(uint64_t));
    }
    s->flows = h->create_table(ctx, "flows", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE, sizeof s->key[0],
                               sizeof s->value[0], (uint64_t)max_flows);
    if (s->flows == NULL) {
        h->log(ctx, SERPENS_LOG_ERROR, "noop: cannot create its state table (see the host's message)");
        return SERPENS_EINVAL;
    }
    for (uint32_t i = 0; i < NOOP_BULK; ++i) {
        s->one[i] = 1;
    }
    return SERPENS_OK;
}

static void noop_fini(struct serpens_nf_ctx *ctx)
{
    free(ctx->priv);
    ctx->priv = NULL;
}

/* ---- registration ---------------------------------------------------- */

static const struct serpens_nf_descriptor noop_descriptor = {
    SERPENS_NF_DESCRIPTOR_HEADER,
    .name = "noop",
    .version = "1.2",
    .summary = "passes every packet to its default next hop unchanged (optionally one flow-state access each)",
    .n_ports = 1,
    .init = noop_init,
    .process = noop_process,
    .fini = noop_fini,
    .min_host_minor = SERPENS_ABI_MINOR_PKT_STRIDE, /* serpens_batch_pkt */
};

SERPENS_NF_REGISTER(noop_descriptor)
