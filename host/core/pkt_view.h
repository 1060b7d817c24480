#pragma once
// Keeps a serpens_pkt view's header offsets in step when bytes are added or
// removed at the head of the packet (shared by every packet backend).

#include <serpens/nf.h>

#include <cstdint>

namespace serpens {

inline void shift_offsets(serpens_pkt &pkt, int32_t delta) noexcept
{
    auto shift = [delta](uint16_t &offset) {
        if (offset == SERPENS_OFFSET_NONE) {
            return;
        }
        int32_t moved = static_cast<int32_t>(offset) + delta;
        offset = moved < 0 || moved >= static_cast<int32_t>(SERPENS_OFFSET_NONE) ? uint16_t{SERPENS_OFFSET_NONE}
                                                                                 : static_cast<uint16_t>(moved);
    };
    shift(pkt.l3_offset);
    shift(pkt.l4_offset);
    shift(pkt.payload_offset);
}

// A view with no parsed headers yet.
inline serpens_pkt unparsed_view(uint8_t *data, uint32_t len, void *handle) noexcept
{
    serpens_pkt pkt{};
    pkt.data = data;
    pkt.len = len;
    pkt.l3_offset = SERPENS_OFFSET_NONE;
    pkt.l4_offset = SERPENS_OFFSET_NONE;
    pkt.payload_offset = SERPENS_OFFSET_NONE;
    pkt.handle = handle;
    return pkt;
}

} // namespace serpens
