#pragma once
// Packets in plain memory, for running chains without DPDK: unit tests, the
// in-memory demo and micro-benchmarks.  Same headroom/tailroom rules as mbufs.

#include "core/packet_ops.h"

#include <serpens/nf.h>

#include <cstdint>
#include <span>
#include <vector>

namespace serpens {

struct MemPacket {
    static constexpr uint32_t headroom = 128;
    static constexpr uint32_t capacity = 2048 + headroom;
    uint32_t data_off = headroom;
    uint32_t data_len = 0;
    alignas(64) uint8_t storage[capacity];

    uint8_t *data() noexcept { return storage + data_off; }
    // Copies `bytes` in (truncated to the tailroom) and returns a fresh view.
    serpens_pkt load(std::span<const uint8_t> bytes) noexcept;
};

PacketOps mem_packet_ops();

} // namespace serpens
