/*
 * serpens/nf.h — the Serpens network-function plugin ABI, version 1.
 *
 * An NF is a shared object (serpens_nf_<name>.so) that exports one C function,
 * SERPENS_NF_ENTRY_SYMBOL, returning a pointer to a static, plain-data
 * descriptor.  The host refuses a plugin before running any of its code (other
 * than that entry function) when the descriptor's ABI major differs from the
 * host's, when struct_size is smaller than SERPENS_NF_DESCRIPTOR_V1_SIZE, when
 * unknown flag bits or reserved fields are set, when a required callback is
 * missing, (ABI 1.4 and later) when min_host_minor exceeds the host's minor,
 * or (ABI 1.7 and later) when a table layout is malformed.
 *
 * This header is pure C99: no DPDK, no C++ types, no exceptions cross it.
 * Everything a plugin may call in the host arrives in `struct serpens_host_api`
 * (handed over in the NF context), so a plugin never links against the host.
 *
 * Compatibility rules (what keeps old plugins loadable):
 *  - New fields are only ever appended to the descriptor, the host API table,
 *    the context, the packet view and the batch; each grows its struct_size.
 *  - A minor version bump adds; a major bump is the only thing that breaks.
 *  - Readers check struct_size before touching a field added after v1.0.
 *  - The v1.0 sizes below are literals, frozen forever: a reader compares
 *    struct_size with them, never with a sizeof that grows with this header.
 *    They are the LP64 sizes (x86-64, aarch64: the targets the host builds
 *    for); tests/unit/test_abi_layout.c pins every field's offset.
 *  - Packet views are reached through serpens_batch_pkt(), never pkts[i]
 *    (since ABI 1.4; see struct serpens_batch for the rule).
 *
 * Threading: init/fini run on a control thread.  process() runs on exactly one
 * worker thread per NF context (one context per NF per instance), so an NF
 * needs no locking for anything it keeps in ctx->priv.  The descriptor's
 * state hooks (split/merge/update) run on the state manager's side (its
 * thread, or the thread calling the host's split/merge/update), never
 * concurrently with each other for one (chain, NF), and get a context of
 * their own whose instance_id is SERPENS_INSTANCE_STATE_MANAGER and whose
 * priv is NULL: they must not reach any instance's priv.
 */
#ifndef SERPENS_NF_H
#define SERPENS_NF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SERPENS_ABI_MAJOR 1
#define SERPENS_ABI_MINOR 9

/* Sizes of the ABI 1.0 structs (LP64), frozen: never change them. */
#define SERPENS_NF_DESCRIPTOR_V1_SIZE 120u
#define SERPENS_HOST_API_V1_0_SIZE 200u
#define SERPENS_NF_CTX_V1_0_SIZE 48u
#define SERPENS_BATCH_V1_0_SIZE 48u
#define SERPENS_PKT_V1_0_SIZE 48u

/* The name of the one symbol every plugin exports. */
#define SERPENS_NF_ENTRY_SYMBOL "serpens_nf_entry"

#if defined(_WIN32)
#define SERPENS_EXPORT __declspec(dllexport)
#else
#define SERPENS_EXPORT __attribute__((visibility("default")))
#endif

/* ------------------------------------------------------------------------ */
/* Labels and output ports                                                   */
/* ------------------------------------------------------------------------ */

/*
 * A chain is compiled to a *prime sequential order*: its NFs numbered 1..N.
 * Each packet of a batch carries a label: the number of the next NF it visits,
 * SERPENS_LABEL_OUT when it has finished the chain (goes to egress), or
 * SERPENS_LABEL_DROP.  An NF only sees the packets whose label is its own
 * number (batch->self) and decides, per packet, an output port.
 */
#define SERPENS_LABEL_OUT 0u
#define SERPENS_LABEL_DROP 0xffffu
#define SERPENS_MAX_CHAIN_NFS 1024u

/* Output ports an NF writes into batch->ports[i]. 0 is the default next hop. */
#define SERPENS_PORT_DEFAULT 0u
#define SERPENS_PORT_DROP 0xffu
#define SERPENS_MAX_PORTS 16u

/* ------------------------------------------------------------------------ */
/* Packets and batches                                                       */
/* ------------------------------------------------------------------------ */

/* Values of serpens_pkt.l3_type. */
#define SERPENS_L3_NONE 0u
#define SERPENS_L3_IPV4 4u
#define SERPENS_L3_IPV6 6u

/* Bits of serpens_pkt.flags. */
#define SERPENS_PKT_F_PARSED 0x1u   /* l3/l4 offsets are valid */
#define SERPENS_PKT_F_FRAGMENT 0x2u /* IP fragment: no L4 header here */
#define SERPENS_PKT_F_VLAN 0x4u     /* carried at least one 802.1Q tag */

/*
 * A view of one packet.  The bytes [data, data + len) are contiguous and
 * writable.  Offsets are from `data`; an offset of 0xffff means "absent".
 * The host fills the view before the chain runs; packet helpers keep it in
 * step when they move `data` or change `len`.
 */
struct serpens_pkt {
    uint8_t *data;
    uint32_t len;
    uint16_t l3_offset;
    uint16_t l4_offset;
    uint16_t payload_offset;
    uint8_t l3_type;    /* SERPENS_L3_* */
    uint8_t l4_proto;   /* IPPROTO_* value, 0 when none */
    uint32_t flow_hash; /* symmetric: both directions of a flow hash alike */
    uint32_t flags;     /* SERPENS_PKT_F_* */
    uint16_t vlan_id;   /* outermost VLAN id when SERPENS_PKT_F_VLAN */
    uint16_t reserved0;
    uint32_t reserved1;
    void *handle; /* opaque to the NF: the host's buffer (e.g. an mbuf) */
};
#define SERPENS_OFFSET_NONE 0xffffu

/* True when the views of `batch` have the member `field` of serpens_pkt
 * (appended after ABI 1.0): the host may lay out views smaller than the
 * plugin's sizeof(struct serpens_pkt).  Check once per batch, not per packet. */
#define SERPENS_PKT_HAS(batch, field)                                                                                  \
    ((batch)->pkt_stride >= offsetof(struct serpens_pkt, field) + sizeof(((struct serpens_pkt *)0)->field))

/*
 * One burst of packets as one NF sees it.  pkts, labels and ports are arrays
 * of `count` elements shared by every NF of the chain during this batch.
 * An NF processes exactly the packets i with labels[i] == self and writes
 * ports[i] (left at SERPENS_PORT_DEFAULT it means "default next hop").  It must
 * not write labels[] — the runtime maps ports to labels after the call.
 *
 * Packet views are pkt_stride bytes apart (ABI 1.4 and later), so that
 * serpens_pkt can grow.  The rule:
 *  - A plugin built against ABI 1.4 or later reaches packet i only through
 *    serpens_batch_pkt(batch, i), and reads a serpens_pkt field appended after
 *    1.0 only when SERPENS_PKT_HAS(batch, field).  It declares min_host_minor
 *    >= SERPENS_ABI_MINOR_PKT_STRIDE (an older host sets no pkt_stride).
 *  - A plugin built against 1.0..1.3 indexes pkts[i] at the 1.0 size.  So in a
 *    chain holding such a plugin the host lays views out at exactly
 *    SERPENS_PKT_V1_0_SIZE; otherwise at its own sizeof(struct serpens_pkt).
 *    (Today both are SERPENS_PKT_V1_0_SIZE: serpens_pkt has not grown yet.)
 *  - pkt_stride is a multiple of 8 and at least SERPENS_PKT_V1_0_SIZE.
 */
struct serpens_batch {
    uint32_t struct_size;
    uint32_t count;
    uint16_t self; /* this NF's label in the chain's order */
    uint16_t reserved0;
    uint32_t reserved1;
    struct serpens_pkt *pkts;
    const uint16_t *labels;
    uint8_t *ports;
    uint64_t now_ns; /* monotonic clock sampled once per batch */

    /* --- ABI 1.4 and later: valid when struct_size covers them --- */

    uint32_t pkt_stride; /* bytes from one serpens_pkt view to the next */
    uint32_t reserved2;

    /* --- ABI 1.5 and later: valid when struct_size covers them --- */

    /* The chain's flow table (see "Per-flow state of the chain" below):
     * flows[i] is packet i's entry, NULL when it has none (not IP, or the
     * table was full); flow_flags[i] holds SERPENS_FLOW_*; flow_offset is
     * where this NF's own area starts in every entry.  Reach them through
     * serpens_batch_flow() and serpens_batch_flow_flags(). */
    void *const *flows;
    const uint8_t *flow_flags;
    uint32_t flow_offset;
    uint32_t reserved3;
};

/* The host minor that introduced pkt_stride: a plugin calling
 * serpens_batch_pkt declares it as its min_host_minor. */
#define SERPENS_ABI_MINOR_PKT_STRIDE 4u

/* Packet i of a batch: one multiply-add, whatever size the host's views are. */
static inline struct serpens_pkt *serpens_batch_pkt(const struct serpens_batch *batch, uint32_t i)
{
    return (struct serpens_pkt *)(void *)((uint8_t *)batch->pkts + (size_t)i * batch->pkt_stride);
}

/* ------------------------------------------------------------------------ */
/* Per-flow state of the chain (ABI 1.5)                                     */
/* ------------------------------------------------------------------------ */

/*
 * An NF that keeps state per flow declares how many bytes it wants in its
 * descriptor (flow_state_size).  The host keeps one flow table per chain in
 * shared memory, looks every packet up once as its batch enters the chain
 * (both directions of a flow share one entry), creates the entry on the
 * flow's first packet with every area zeroed, and hands each NF its own area.
 * Packets of one flow all go to one instance, so an area has one writer.
 *
 * An area is written in place and survives the instance (and a crash of the
 * host).  Its address holds for the batch (or the hook call) that gives it:
 * between batches the host may move a flow's entry, with its areas, when
 * the table grows, so an NF keeps no pointer to an area.  An aligned store
 * of up to 8 bytes is never torn; an NF whose state spans several words
 * writes them first and a word that says they are valid last.  Entries
 * idle past the chain's flow timeout are removed; before that the NF's
 * flow_expired hook (optional) gets the area to give back what it held (a
 * NAT port).  The hook may run again for the same area after a crash in
 * the middle of an expiry, so giving back must be idempotent.
 */
#define SERPENS_MAX_FLOW_STATE 256u

/* Bits of batch->flow_flags[i]. */
#define SERPENS_FLOW_NEW 0x1u   /* this packet created the entry */
#define SERPENS_FLOW_REPLY 0x2u /* it goes against the direction of the flow's first packet */
/* (ABI 1.8) Its source is the flow's endpoint b: the higher of the two,
 * address bytewise, then port, as serpens_flow_info orders them.  Which way
 * a packet goes, without reading its headers; hosts older than 1.8 leave it
 * 0 (SERPENS_ABI_MINOR_FLOW_SIDE: check host->abi_minor in init). */
#define SERPENS_FLOW_FROM_B 0x4u

/* NF area of packet i's flow entry; NULL when the packet has none or the
 * host is older than 1.5 (a plugin using it declares min_host_minor 5). */
static inline void *serpens_batch_flow(const struct serpens_batch *batch, uint32_t i)
{
    if (batch->struct_size < offsetof(struct serpens_batch, reserved3) || batch->flows == NULL) {
        return NULL;
    }
    void *entry = batch->flows[i];
    return entry != NULL ? (void *)((uint8_t *)entry + batch->flow_offset) : NULL;
}

/* SERPENS_FLOW_* of packet i (0 when it has no entry). */
static inline uint32_t serpens_batch_flow_flags(const struct serpens_batch *batch, uint32_t i)
{
    if (batch->struct_size < offsetof(struct serpens_batch, reserved3) || batch->flow_flags == NULL) {
        return 0;
    }
    return batch->flow_flags[i];
}

/*
 * The same, read once per batch: an NF's loop over the batch calls
 * serpens_flow_area(&view, i) and serpens_flow_flags(&view, i).  The two
 * above check the batch's size and arrays for every packet, and an NF's own
 * stores (its counters, its areas) may alias the batch, so the compiler
 * cannot hoist those checks: they were about a tenth of fw, mon and nat.
 */
struct serpens_flow_view {
    void *const *entries; /* NULL: no packet of the batch has an entry */
    const uint8_t *flags; /* NULL: every packet's flags are 0 */
    uint32_t offset;      /* this NF's area in every entry */
};

static inline struct serpens_flow_view serpens_batch_flow_view(const struct serpens_batch *batch)
{
    struct serpens_flow_view v = {NULL, NULL, 0};
    if (batch->struct_size >= offsetof(struct serpens_batch, reserved3)) {
        v.entries = batch->flows;
        v.flags = batch->flow_flags;
        v.offset = batch->flow_offset;
    }
    return v;
}

/* As serpens_batch_flow(batch, i), for the view's batch. */
static inline void *serpens_flow_area(const struct serpens_flow_view *view, uint32_t i)
{
    if (view->entries == NULL) {
        return NULL;
    }
    void *entry = view->entries[i];
    return entry != NULL ? (void *)((uint8_t *)entry + view->offset) : NULL;
}

/* As serpens_batch_flow_flags(batch, i), for the view's batch. */
static inline uint32_t serpens_flow_flags(const struct serpens_flow_view *view, uint32_t i)
{
    return view->flags != NULL ? view->flags[i] : 0u;
}

/* The host minor that introduced the chain's flow table. */
#define SERPENS_ABI_MINOR_FLOW_STATE 5u

/*
 * Visiting flows (ABI 1.6).  The instance that owns a flow sweeps its entries
 * between batches.  An NF with a flow_visit hook is shown each live entry it
 * asked for:
 *  - every entry, at least every flow_visit_ms (0: only the next case), for
 *    work due while a flow is quiet (a monitor folding counts);
 *  - an entry idle past the chain's flow timeout (`expiring`), which goes
 *    unless a hook returns SERPENS_FLOW_KEEP: an NF whose flows outlive the
 *    chain's timeout (a NAT's established TCP) keeps them, and is asked
 *    again at the next pass.  Idle times wrap after about 9.5 hours: keep no
 *    flow idle longer;
 *  - (ABI 1.7) every entry once more when the host stops cleanly, after the
 *    last packet and before fini, with `stopping` set: the last chance to
 *    fold what a flow holds into tables that outlive it.
 * The entry's key is the flow's, endpoints in canonical order: endpoint a is
 * the lower (address bytewise, then port).  Hot-path rules apply.
 */
struct serpens_flow_info {
    uint32_t struct_size;
    uint8_t ip_version;  /* 4 or 6 */
    uint8_t proto;       /* IPPROTO_* */
    uint8_t initiator_b; /* 1: endpoint b sent the flow's first packet */
    uint8_t expiring;    /* idle past the chain's timeout: goes unless kept */
    uint8_t addr_a[16];  /* network order; IPv4 in the first 4 bytes */
    uint8_t addr_b[16];
    uint16_t port_a; /* host order; ICMP echo: the identifier in both */
    uint16_t port_b;
    uint8_t stopping; /* ABI 1.7: the last visit of a clean stop (0 from older hosts) */
    uint8_t reserved[3];
    uint64_t idle_ns; /* since the flow's last packet, in whole units of 2^30 ns */
    uint64_t now_ns;  /* the sweep's clock (the batch clock's) */
};

/* flow_visit's answer: keep an expiring entry. */
#define SERPENS_FLOW_KEEP 1

/* The host minor that introduced flow_visit. */
#define SERPENS_ABI_MINOR_FLOW_VISIT 6u

/* ------------------------------------------------------------------------ */
/* State (paper Fig. 9)                                                      */
/* ------------------------------------------------------------------------ */

/* Flags of create_table: exactly one scope, exactly one access pattern, and for
 * GLOBAL|WRITE exactly one consistency. */
#define SERPENS_STATE_PER_FLOW 0x01u
#define SERPENS_STATE_GLOBAL 0x02u
#define SERPENS_STATE_READ 0x04u
#define SERPENS_STATE_WRITE 0x08u
#define SERPENS_STATE_RELEASE 0x10u  /* single writer: split into sub-states */
#define SERPENS_STATE_EVENTUAL 0x20u /* multi writer: replicas, merged */
/* ABI 1.1 and later (an ABI 1.0 host refuses the bit: check host->abi_minor).
 * PER_FLOW only: the host never removes this table's entries for being idle
 * (its per-flow idle expiry skips the table); the NF deletes them itself.
 * For entries that hold a resource the NF must give back when they go (a
 * NAT mapping's external port): an entry the host expired silently would
 * leak it. */
#define SERPENS_STATE_NF_EXPIRY 0x40u

typedef struct serpens_table serpens_table; /* opaque, owned by the host */

/* Arguments of the state-manager hooks; one struct so it can grow. */
struct serpens_state_hook_args {
    uint32_t struct_size;
    uint32_t n;        /* number of parts/replicas */
    const char *table; /* table name as given to create_table */
    const void *key;
    uint32_t key_size;
    uint32_t value_size;
    const void *whole;  /* split: the value to split (NULL otherwise) */
    void *const *parts; /* split/update/merge: n values of value_size */
    void *out;          /* merge: where the folded value goes */
};

/*
 * What a table's bytes mean (ABI 1.7).  An NF may describe the keys and
 * values of its tables (descriptor table_layouts) so that tools show them
 * decoded (`serpensctl state dump`, `serpens-state dump`) rather than as hex.
 * The host never reads it on the hot path: the loader refuses a plugin whose
 * description is malformed (unknown type, bad or repeated name, overlapping
 * fields, non-zero reserved field), and create_table refuses a table whose
 * fields do not fit its key_size or value_size; an accepted description is
 * written beside the table's segment.  A table the NF does not describe stays
 * hex, and so do bytes no field covers.  Multi-byte integers are in the
 * host's byte order (little endian on the targets) or, for the BE types,
 * network order, as the NF stores them.
 */
#define SERPENS_FIELD_U8 1u
#define SERPENS_FIELD_U16 2u    /* host byte order */
#define SERPENS_FIELD_U32 3u    /* host byte order */
#define SERPENS_FIELD_U64 4u    /* host byte order */
#define SERPENS_FIELD_BE16 5u   /* network byte order */
#define SERPENS_FIELD_BE32 6u   /* network byte order */
#define SERPENS_FIELD_BE64 7u   /* network byte order */
#define SERPENS_FIELD_IPV4 8u   /* 4 bytes, network order */
#define SERPENS_FIELD_IPV6 9u   /* 16 bytes; IPv4-mapped shows as ::ffff:a.b.c.d */
#define SERPENS_FIELD_MAC 10u   /* 6 bytes */
#define SERPENS_FIELD_BYTES 11u /* `size` bytes, shown as hex */

/* At most this many fields in one key or one value. */
#define SERPENS_MAX_TABLE_FIELDS 64u

/* One named field of a key or a value.  Frozen: 16 bytes. */
struct serpens_field {
    const char *name; /* [a-z0-9_]+, 1-31 characters, unique in its key or value */
    uint32_t offset;  /* bytes from the start of the key or the value */
    uint16_t type;    /* SERPENS_FIELD_* */
    uint16_t size;    /* BYTES: its length (>= 1); any other type: 0 or that type's size */
};

/* The fields of one table's keys and values.  Frozen: 32 bytes. */
struct serpens_table_layout {
    const char *table;                 /* the name the NF gives create_table */
    const struct serpens_field *key;   /* n_key fields (NULL when 0) */
    const struct serpens_field *value; /* n_value fields (NULL when 0) */
    uint16_t n_key;                    /* <= SERPENS_MAX_TABLE_FIELDS */
    uint16_t n_value;                  /* <= SERPENS_MAX_TABLE_FIELDS */
    uint32_t reserved;                 /* must be 0 */
};

/* The host minor that introduced table layouts. */
#define SERPENS_ABI_MINOR_TABLE_LAYOUT 7u

/* The host minor that introduced SERPENS_FLOW_FROM_B. */
#define SERPENS_ABI_MINOR_FLOW_SIDE 8u

/* The host minor that introduced config_file. */
#define SERPENS_ABI_MINOR_CONFIG_FILE 9u

/* ------------------------------------------------------------------------ */
/* Configuration and host services                                           */
/* ------------------------------------------------------------------------ */

/* The NF's config table from the chain TOML; opaque, read through the API. */
typedef struct serpens_config serpens_config;

struct serpens_nf_ctx;

/* Log levels for host_api.log. */
#define SERPENS_LOG_ERROR 0
#define SERPENS_LOG_WARN 1
#define SERPENS_LOG_INFO 2
#define SERPENS_LOG_DEBUG 3

/* Return codes: 0 success, negative errno-style values on failure. */
#define SERPENS_OK 0
#define SERPENS_ENOENT (-2)
#define SERPENS_EAGAIN (-11)
#define SERPENS_ENOMEM (-12)
#define SERPENS_EINVAL (-22)
#define SERPENS_ENOSPC (-28)
#define SERPENS_ENOTSUP (-95)

/*
 * Everything a plugin may call in the host.  Append-only: entries added after
 * v1.0 sit below a "ABI 1.x and later" comment and are valid only when
 * struct_size covers them.  A NULL entry means "this host does not provide it"
 * and must be checked by plugins that use optional services.
 */
struct serpens_host_api {
    uint32_t struct_size;
    uint16_t abi_major;
    uint16_t abi_minor;

    /* --- ABI 1.0 --- */

    /* printf-style logging, tagged with the NF and chain name. */
    void (*log)(const struct serpens_nf_ctx *ctx, int level, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 3, 4)))
#endif
        ;
    /* Monotonic clock in nanoseconds. */
    uint64_t (*now_ns)(void);

    /* Configuration, addressed by TOML paths such as "pool.ports[1]".
     * Getters return SERPENS_OK, SERPENS_ENOENT (absent) or SERPENS_EINVAL
     * (present with another type; for config_double also nan and inf,
     * which no setting means). */
    int (*config_string)(const serpens_config *cfg, const char *path, const char **out);
    int (*config_int)(const serpens_config *cfg, const char *path, int64_t *out);
    int (*config_double)(const serpens_config *cfg, const char *path, double *out);
    int (*config_bool)(const serpens_config *cfg, const char *path, int *out);
    /* Number of elements of an array (SERPENS_ENOENT when not an array). */
    int (*config_array_size)(const serpens_config *cfg, const char *path, size_t *out);
    /* A path value resolved against the directory of the chain file. */
    int (*config_path)(const serpens_config *cfg, const char *path, char *buf, size_t len);
    /* "file:line:col" of a key, for error messages (best effort). */
    int (*config_where)(const serpens_config *cfg, const char *path, char *buf, size_t len);

    /* State, paper Fig. 9.  create_table attaches when the executor already has
     * a table of that name with identical flags and sizes (so a restarted or
     * added instance sees the same state) and fails otherwise. */
    serpens_table *(*create_table)(struct serpens_nf_ctx *ctx, const char *name, uint32_t flags, uint32_t key_size,
                                   uint32_t value_size, uint64_t capacity);
    /* Copies the value out (consistent even while another instance writes). */
    int (*get_state)(serpens_table *t, const void *key, void *value_out);
    /* Inserts or replaces; SERPENS_ENOSPC when the table is full.  On a
     * GLOBAL|WRITE table, SERPENS_EAGAIN when the state manager rebalanced
     * this instance's share since its last get_state: read again, retry. */
    int (*put_state)(serpens_table *t, const void *key, const void *value);
    int (*delete_state)(serpens_table *t, const void *key);
    /* Looks up n (<= 64) keys laid out back to back; copies hits into values
     * (n * value_size bytes) and returns a bit mask of the hits. */
    uint64_t (*get_state_bulk)(serpens_table *t, const void *keys, uint32_t n, void *values);
    /* State-manager operations on one key of a GLOBAL|WRITE table (paper
     * Fig. 9).  timer runs update (RELEASE) / merge (EVENTUAL) every
     * period_ns; period 0 cancels.  Since ABI 1.1 a NULL key to split, merge,
     * update and timer means "every key of the table", including keys created
     * later (one table-wide timer instead of one per key); check
     * host->abi_minor >= 1 before passing NULL.  trigger needs a key. */
    int (*split)(serpens_table *t, const void *key);
    int (*merge)(serpens_table *t, const void *key);
    int (*update)(serpens_table *t, const void *key);
    int (*timer)(serpens_table *t, const void *key, uint64_t period_ns);
    /* Hot path (process() may call it: never blocks, locks or allocates): asks
     * the state manager to rebalance key, done at its next tick (update:
     * RELEASE re-splits, EVENTUAL merges); until then this instance's share is
     * unchanged, and afterwards its put_state fails once with SERPENS_EAGAIN
     * as for any rebalance.  SERPENS_ENOENT: no such key; SERPENS_ENOSPC
     * (RELEASE, default format): the rebalance done for this instance's
     * previous trigger of key left its share empty (the request is recorded
     * all the same); SERPENS_EAGAIN: the request could not be recorded. */
    int (*trigger)(serpens_table *t, const void *key);

    /* Packet helpers.  Each keeps the view (data, len, offsets) in step and
     * returns NULL / a negative code when the buffer has no room. */
    uint8_t *(*pkt_prepend)(struct serpens_pkt *pkt, uint32_t len);
    uint8_t *(*pkt_append)(struct serpens_pkt *pkt, uint32_t len);
    int (*pkt_trim)(struct serpens_pkt *pkt, uint32_t len); /* drop len bytes at the tail */
    int (*pkt_adj)(struct serpens_pkt *pkt, uint32_t len);  /* drop len bytes at the head */

    /* A named 64-bit counter of this NF context, registered in init.  The
     * returned pointer is the context's own cache-aligned slot: increment it
     * directly in process(); the host reads and sums it. */
    uint64_t *(*counter)(struct serpens_nf_ctx *ctx, const char *name);

    /* --- ABI 1.1 and later: valid when struct_size covers them --- */

    /* Adds to this instance's replica of a GLOBAL|WRITE|EVENTUAL table whose
     * values are arrays of uint64 counters (value_size a multiple of 8, the
     * default merge's format): for each of n (<= 64) keys laid out back to
     * back, row i of `deltas` (value_size / 8 words) is added word by word
     * (modulo 2^64), a missing key is created at zero first.  One call does
     * what get_state + put_state do per key, without their SERPENS_EAGAIN
     * retries: an addition commutes with the state manager's merge, so it
     * simply waits out a merge in progress on that cell.  Returns the bit
     * mask of the rows applied; a row is not applied when the table is full
     * (or the call is invalid: wrong table kind, value_size not a multiple of
     * 8, this instance no longer active — then no row is).  Hot path: misses
     * of the n keys overlap.  Same thread rules as put_state. */
    uint64_t (*add_state_bulk)(serpens_table *t, const void *keys, uint32_t n, const uint64_t *deltas);

    /* --- ABI 1.2 and later: valid when struct_size covers them --- */

    /* Walks a PER_FLOW or GLOBAL|READ table, e.g. for an NF's own expiry
     * sweep over the entries it has rather than over every key it could
     * have.  Looks at up to max_slots slots from *cursor on (taken modulo
     * table_slots) and copies the first live entry's key and value out:
     * SERPENS_OK; SERPENS_ENOENT when none of them held one; SERPENS_ENOTSUP
     * on a GLOBAL|WRITE table.  *cursor ends just past the slots looked at
     * and wraps to 0 after the last one, so table_slots(t) slots from any
     * cursor are one full pass.  An entry live during a whole pass is seen
     * in it; one added or removed meanwhile may or may not be.  Start at 0;
     * the cursor means nothing to another table. */
    int (*scan_state)(serpens_table *t, uint64_t *cursor, uint32_t max_slots, void *key_out, void *value_out);
    /* The number of slots scan_state walks over: fixed for a table's life. */
    uint64_t (*table_slots)(serpens_table *t);

    /* --- ABI 1.3 and later: valid when struct_size covers them --- */

    /* Read-modify-write of n <= 64 entries of a PER_FLOW|WRITE table whose
     * value is value_size / 8 uint64 words, in one probe per key (misses of
     * the n keys overlapped): for key i, row i (value_size / 8 words) is
     * applied word by word as ops[w] says (SERPENS_WORD_*, one per word, the
     * same for every key); an absent key is created with row i as its
     * value.  Each update is one atomic write, as put_state's.  When
     * values_out is not NULL the resulting values are copied there (key i's
     * at i * value_size).  Returns the mask of keys written; a key is not
     * when the table is full (counted as put_state's).  Other tables: 0,
     * nothing written.  Same thread rules as put_state: one writer per key
     * (the host steers a flow to one instance). */
    uint64_t (*update_state_bulk)(serpens_table *t, const void *keys, uint32_t n, const uint64_t *rows,
                                  const uint8_t *ops, void *values_out);

    /* --- ABI 1.4 and later: valid when struct_size covers them --- */

    /* update_state_bulk and add_state_bulk, saying why a row was not written
     * (the 1.1/1.3 calls return 0 alike for "full" and for "not allowed").
     * *written gets the mask of the rows written.  Returns:
     *   SERPENS_OK      every row i < n was written;
     *   SERPENS_ENOSPC  the table was full for the rows missing from *written;
     *   SERPENS_ENOTSUP the table is of another kind (update: not
     *                   PER_FLOW|WRITE; add: not GLOBAL|WRITE|EVENTUAL or its
     *                   value_size not a multiple of 8): nothing written;
     *   SERPENS_EINVAL  n > 64, a NULL rows/ops/deltas/written, or (add) this
     *                   instance is no longer active: nothing written.
     * Otherwise exactly as the 1.1/1.3 calls (hot path, thread rules). */
    int (*update_state_bulk_v2)(serpens_table *t, const void *keys, uint32_t n, const uint64_t *rows,
                                const uint8_t *ops, void *values_out, uint64_t *written);
    int (*add_state_bulk_v2)(serpens_table *t, const void *keys, uint32_t n, const uint64_t *deltas, uint64_t *written);

    /* --- ABI 1.5 and later: valid when struct_size covers them --- */

    /* In init only: this NF keeps `size` bytes (0..SERPENS_MAX_FLOW_STATE)
     * of per-flow state in the chain's flow table, instead of the
     * descriptor's flow_state_size: for an NF whose need depends on its
     * config.  Every instance of a chain must ask the same.  SERPENS_EINVAL
     * outside init or above the maximum. */
    int (*flow_state)(struct serpens_nf_ctx *ctx, uint32_t size);

    /* --- ABI 1.6 and later: valid when struct_size covers them --- */

    /* In init only: visit this NF's flows at least every `ms` instead of the
     * descriptor's flow_visit_ms (see "Visiting flows").  SERPENS_EINVAL
     * outside init. */
    int (*flow_visit_every)(struct serpens_nf_ctx *ctx, uint32_t ms);

    /* --- ABI 1.9 and later: valid when struct_size covers them --- */

    /* The contents of the file that the config string at `path` names
     * (resolved as config_path resolves it), as this version of the chain
     * read it.  The first call for a file reads it; every later one, by
     * any instance of the same version (also one a scale-out or the pool
     * starts hours later), gets the same bytes, whatever became of the file
     * since: the instances of a chain never run on two versions of one
     * rules file.  A reload reads the file again and swaps the chain when
     * its contents changed.  Regular files only, not writable by every
     * local user, at most max_size bytes.  SERPENS_OK with *data
     * (NUL-terminated, read-only, valid until fini) and *size; otherwise
     * SERPENS_ENOENT (no such key, or the file cannot be opened),
     * SERPENS_EINVAL (the key is not a string; the file is not a regular
     * one, too big, writable by all, or unreadable) or SERPENS_ENOMEM, and
     * err holds "<file>: <why>" (cut to err_len).  serpens_config_file_copy
     * (nf_util.h) falls back to reading the file on an older host. */
    int (*config_file)(const serpens_config *cfg, const char *path, size_t max_size, const char **data, size_t *size,
                       char *err, size_t err_len);
};

/* update_state_bulk's operations on one value word. */
#define SERPENS_WORD_ADD 0u  /* word += row word */
#define SERPENS_WORD_SET 1u  /* word = row word */
#define SERPENS_WORD_KEEP 2u /* word unchanged (a new entry takes the row's) */

/* True when `api` provides the member `field` (appended after ABI 1.0). */
#define SERPENS_HOST_HAS(api, field)                                                                                   \
    ((api)->struct_size >= offsetof(struct serpens_host_api, field) + sizeof((api)->field) && (api)->field != NULL)

/*
 * One NF inside one chain instance.  The host owns it; the NF reads the public
 * fields and may set `priv` in init.
 */
/* instance_id of the context state hooks get: not any instance. */
#define SERPENS_INSTANCE_STATE_MANAGER UINT32_MAX

struct serpens_nf_ctx {
    uint32_t struct_size;
    uint32_t instance_id; /* which instance of the chain (0..n-1) */
    const struct serpens_host_api *host;
    const char *chain_name;
    const char *nf_name; /* the name the chain gives this NF */
    void *priv;          /* the NF's own per-instance data */
    void *host_private;  /* opaque to the NF */
};

/* ------------------------------------------------------------------------ */
/* The descriptor                                                            */
/* ------------------------------------------------------------------------ */

struct serpens_nf_descriptor {
    uint16_t abi_major; /* SERPENS_ABI_MAJOR the plugin was built against */
    uint16_t abi_minor;
    uint32_t struct_size; /* sizeof(struct serpens_nf_descriptor) */
    const char *name;     /* unique NF type name, [a-z0-9_-]+ */
    const char *version;  /* the NF's own version, free text */
    const char *summary;  /* one line for listings */
    uint32_t flags;       /* none defined in 1.0: must be 0 */
    uint16_t n_ports;     /* output ports the NF uses, 1..SERPENS_MAX_PORTS */
    uint16_t reserved0;   /* must be 0 */

    /* Required.  Returns SERPENS_OK or a negative code; on failure the NF
     * should log why.  fini is still called once, even after a failed init. */
    int (*init)(struct serpens_nf_ctx *ctx, const serpens_config *config);
    /* Required.  Hot path: no blocking, no allocation. */
    void (*process)(struct serpens_nf_ctx *ctx, struct serpens_batch *batch);
    /* Optional.  Called exactly once per context, whatever init returned. */
    void (*fini)(struct serpens_nf_ctx *ctx);

    /* Optional state-manager hooks for GLOBAL|WRITE tables; NULL selects the
     * host's default (RELEASE: split equally; EVENTUAL: copy, then add).
     * They run on the state manager's side, one at a time per (chain, NF),
     * with the state manager's ctx (instance_id
     * SERPENS_INSTANCE_STATE_MANAGER, priv NULL, the same host API), never
     * an instance's: they must not touch any worker's ctx->priv. */
    int (*split)(struct serpens_nf_ctx *ctx, const struct serpens_state_hook_args *args);
    int (*merge)(struct serpens_nf_ctx *ctx, const struct serpens_state_hook_args *args);
    int (*update)(struct serpens_nf_ctx *ctx, const struct serpens_state_hook_args *args);

    void *reserved[4]; /* must be NULL */

    /* --- ABI 1.4 and later: the host reads them when struct_size covers them --- */

    /* The oldest host ABI minor this plugin runs on (0: any 1.x host), so a
     * plugin may drop its fallbacks for older hosts.  A 1.4+ host refuses the
     * plugin when this exceeds its SERPENS_ABI_MINOR; an older host cannot
     * read it, so a plugin that must not run there also checks
     * ctx->host->abi_minor in init. */
    uint16_t min_host_minor;
    uint16_t reserved1; /* must be 0 */
    uint32_t reserved2; /* must be 0 */

    /* --- ABI 1.5 and later: the host reads them when struct_size covers them --- */

    /* Bytes of per-flow state this NF wants in every entry of the chain's
     * flow table, 0..SERPENS_MAX_FLOW_STATE (0: none); see "Per-flow state
     * of the chain".  Declare min_host_minor >= SERPENS_ABI_MINOR_FLOW_STATE
     * with it: an older host does not read it. */
    uint32_t flow_state_size;
    uint32_t reserved3; /* must be 0 */
    /* Optional.  An entry goes (idle past the chain's flow timeout): give
     * back what `state` (this NF's area) held.  Runs on the worker of the
     * instance that owns the flow, between batches: hot-path rules. */
    void (*flow_expired)(struct serpens_nf_ctx *ctx, void *state);

    /* --- ABI 1.6 and later: the host reads them when struct_size covers them --- */

    /* Optional.  Shown this NF's area of a live entry as the flow's owner
     * sweeps it (see "Visiting flows"); returns SERPENS_FLOW_KEEP to keep an
     * expiring entry, else 0.  Declare min_host_minor >=
     * SERPENS_ABI_MINOR_FLOW_VISIT with it. */
    int (*flow_visit)(struct serpens_nf_ctx *ctx, void *state, const struct serpens_flow_info *flow);
    uint32_t flow_visit_ms; /* visit every entry at least this often (0: expiring ones only) */
    uint32_t reserved4;     /* must be 0 */

    /* --- ABI 1.7 and later: the host reads them when struct_size covers them --- */

    /* Optional: n_table_layouts descriptions of this NF's tables (see "What a
     * table's bytes mean"), at most one per table name; NULL when 0.  An
     * older host ignores them, so the NF needs no min_host_minor for them. */
    const struct serpens_table_layout *table_layouts;
    uint32_t n_table_layouts;
    uint32_t reserved5; /* must be 0 */
};

/* Fills the version fields; use as the first line of a descriptor initializer. */
#define SERPENS_NF_DESCRIPTOR_HEADER                                                                                   \
    .abi_major = SERPENS_ABI_MAJOR, .abi_minor = SERPENS_ABI_MINOR,                                                    \
    .struct_size = (uint32_t)sizeof(struct serpens_nf_descriptor)

/* Exports `desc` (a static struct serpens_nf_descriptor) as the plugin entry. */
#define SERPENS_NF_REGISTER(desc)                                                                                      \
    SERPENS_EXPORT const struct serpens_nf_descriptor *serpens_nf_entry(void);                                         \
    SERPENS_EXPORT const struct serpens_nf_descriptor *serpens_nf_entry(void) { return &(desc); }

typedef const struct serpens_nf_descriptor *(*serpens_nf_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* SERPENS_NF_H */
