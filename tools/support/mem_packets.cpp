#include "support/mem_packets.h"

#include "core/pkt_view.h"

#include <algorithm>
#include <cstring>

namespace serpens {

serpens_pkt MemPacket::load(std::span<const uint8_t> bytes) noexcept
{
    data_off = headroom;
    data_len = static_cast<uint32_t>(std::min<std::size_t>(bytes.size(), capacity - headroom));
    std::memcpy(data(), bytes.data(), data_len);
    return unparsed_view(data(), data_len, this);
}

namespace {

MemPacket &backing(serpens_pkt *pkt) { return *static_cast<MemPacket *>(pkt->handle); }

uint8_t *mem_prepend(serpens_pkt *pkt, uint32_t len)
{
    MemPacket &m = backing(pkt);
    if (len > m.data_off) {
        return nullptr;
    }
    m.data_off -= len;
    m.data_len += len;
    pkt->data = m.data();
    pkt->len = m.data_len;
    shift_offsets(*pkt, static_cast<int32_t>(len));
    return pkt->data;
}

uint8_t *mem_append(serpens_pkt *pkt, uint32_t len)
{
    MemPacket &m = backing(pkt);
    if (m.data_off + m.data_len + len > MemPacket::capacity) {
        return nullptr;
    }
    uint8_t *tail = m.data() + m.data_len;
    m.data_len += len;
    pkt->len = m.data_len;
    return tail;
}

int mem_trim(serpens_pkt *pkt, uint32_t len)
{
    MemPacket &m = backing(pkt);
    if (len > m.data_len) {
        return SERPENS_EINVAL;
    }
    m.data_len -= len;
    pkt->len = m.data_len;
    return SERPENS_OK;
}

int mem_adj(serpens_pkt *pkt, uint32_t len)
{
    MemPacket &m = backing(pkt);
    if (len > m.data_len) {
        return SERPENS_EINVAL;
    }
    m.data_off += len;
    m.data_len -= len;
    pkt->data = m.data();
    pkt->len = m.data_len;
    shift_offsets(*pkt, -static_cast<int32_t>(len));
    return SERPENS_OK;
}

} // namespace

PacketOps mem_packet_ops() { return {mem_prepend, mem_append, mem_trim, mem_adj}; }

} // namespace serpens
