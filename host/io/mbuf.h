#pragma once
// What serpens keeps in each mbuf, and the packet helpers over mbufs.
//
// The gateway parses a packet once; the result travels with the mbuf in a
// registered dynamic field so the instance that runs the chain (maybe on
// another lcore) builds the NF's packet view without parsing again.

#include "core/packet_ops.h"

#include <serpens/nf.h>

#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>

#include <cstdint>

namespace serpens::io {

struct PacketMeta {
    uint8_t peer_mark; // where it came from (io/underlay.h): 0, a traffic port
    uint8_t reserved[3];
    uint16_t l3_offset;
    uint16_t l4_offset;
    uint16_t payload_offset;
    uint8_t l3_type;
    uint8_t l4_proto;
    uint16_t flags;
    uint16_t vlan_id;
    uint64_t rx_tsc; // when its burst was received (TSC; 0: not sampled): its batch's latency starts here
};
// The mbuf's dynamic-field area has room for little more (DPDK 22.11).
static_assert(sizeof(PacketMeta) == 24);

// Registers the dynamic field; call once after EAL init.  Throws Error.
void register_packet_meta();
extern int packet_meta_offset;

inline PacketMeta &meta_of(rte_mbuf *m) noexcept { return *RTE_MBUF_DYNFIELD(m, packet_meta_offset, PacketMeta *); }

// Stores a parsed view's offsets in the mbuf.
// The instance it is queued to knows its chain.
inline void store_meta(rte_mbuf *m, const serpens_pkt &view, uint64_t rx_tsc, uint8_t peer_mark) noexcept
{
    PacketMeta &meta = meta_of(m);
    meta.rx_tsc = rx_tsc;
    meta.peer_mark = peer_mark;
    meta.l3_offset = view.l3_offset;
    meta.l4_offset = view.l4_offset;
    meta.payload_offset = view.payload_offset;
    meta.l3_type = view.l3_type;
    meta.l4_proto = view.l4_proto;
    meta.flags = static_cast<uint16_t>(view.flags);
    meta.vlan_id = view.vlan_id;
    m->hash.rss = view.flow_hash;
}

// The NF's view of an mbuf the gateway has tagged.
inline void load_view(rte_mbuf *m, serpens_pkt &view) noexcept
{
    const PacketMeta &meta = meta_of(m);
    view.data = rte_pktmbuf_mtod(m, uint8_t *);
    view.len = m->data_len;
    view.l3_offset = meta.l3_offset;
    view.l4_offset = meta.l4_offset;
    view.payload_offset = meta.payload_offset;
    view.l3_type = meta.l3_type;
    view.l4_proto = meta.l4_proto;
    view.flow_hash = m->hash.rss;
    view.flags = meta.flags;
    view.vlan_id = meta.vlan_id;
    view.reserved0 = 0;
    view.reserved1 = 0;
    view.handle = m;
}

PacketOps mbuf_packet_ops();

} // namespace serpens::io
