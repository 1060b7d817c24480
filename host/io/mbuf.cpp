#include "io/mbuf.h"

#include "core/error.h"
#include "core/pkt_view.h"

#include <rte_errno.h>

#include <cstdio>

namespace serpens::io {

int packet_meta_offset = -1;

void register_packet_meta()
{
    rte_mbuf_dynfield desc{};
    std::snprintf(desc.name, sizeof desc.name, "%s", "serpens_packet_meta");
    desc.size = sizeof(PacketMeta);
    desc.align = alignof(PacketMeta);
    packet_meta_offset = rte_mbuf_dynfield_register(&desc);
    if (packet_meta_offset < 0) {
        throw Error(std::string("cannot register the mbuf field for packet metadata: ") + rte_strerror(rte_errno));
    }
}

namespace {

rte_mbuf *mbuf_of(serpens_pkt *pkt) { return static_cast<rte_mbuf *>(pkt->handle); }

// Views cover one contiguous segment: the host linearizes on receive.
uint8_t *mbuf_prepend(serpens_pkt *pkt, uint32_t len)
{
    if (len > UINT16_MAX) {
        return nullptr;
    }
    rte_mbuf *m = mbuf_of(pkt);
    auto *head = reinterpret_cast<uint8_t *>(rte_pktmbuf_prepend(m, static_cast<uint16_t>(len)));
    if (head == nullptr) {
        return nullptr;
    }
    pkt->data = head;
    pkt->len = m->data_len;
    shift_offsets(*pkt, static_cast<int32_t>(len));
    return head;
}

uint8_t *mbuf_append(serpens_pkt *pkt, uint32_t len)
{
    if (len > UINT16_MAX) {
        return nullptr;
    }
    rte_mbuf *m = mbuf_of(pkt);
    auto *tail = reinterpret_cast<uint8_t *>(rte_pktmbuf_append(m, static_cast<uint16_t>(len)));
    if (tail == nullptr) {
        return nullptr;
    }
    pkt->len = m->data_len;
    return tail;
}

int mbuf_trim(serpens_pkt *pkt, uint32_t len)
{
    rte_mbuf *m = mbuf_of(pkt);
    if (len > m->data_len || rte_pktmbuf_trim(m, static_cast<uint16_t>(len)) != 0) {
        return SERPENS_EINVAL;
    }
    pkt->len = m->data_len;
    return SERPENS_OK;
}

int mbuf_adj(serpens_pkt *pkt, uint32_t len)
{
    rte_mbuf *m = mbuf_of(pkt);
    if (len > m->data_len || rte_pktmbuf_adj(m, static_cast<uint16_t>(len)) == nullptr) {
        return SERPENS_EINVAL;
    }
    pkt->data = rte_pktmbuf_mtod(m, uint8_t *);
    pkt->len = m->data_len;
    shift_offsets(*pkt, -static_cast<int32_t>(len));
    return SERPENS_OK;
}

} // namespace

PacketOps mbuf_packet_ops() { return {mbuf_prepend, mbuf_append, mbuf_trim, mbuf_adj}; }

} // namespace serpens::io
