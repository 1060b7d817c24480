#pragma once
// Lab traffic: frames from the host's traffic generator (tools/support/
// traffic.h) kept as raw bytes, and the batch they are loaded into — copied
// into packet buffers and parsed by the host's parser, as the dataplane does
// before a chain runs.

#include "support/mem_packets.h"
#include "chain/runtime.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace serpens::bench {

// Generated traffic, stored as raw frames (no per-packet allocation).
struct Traffic {
    std::vector<uint8_t> bytes;
    std::vector<uint64_t> offset;
    std::vector<uint32_t> length;
    uint32_t flows = 0;
    std::size_t size() const noexcept { return offset.size(); }
};
// `packets` frames of `frame_size` bytes over `flows` TCP/UDP IPv4 flows, no
// VLANs, no malformed frames (serpens-pktgen's generator).
Traffic make_traffic(uint32_t flows, uint64_t packets, uint32_t frame_size, uint64_t seed = 1);

// A batch as the dataplane hands it to an instance: frames copied into
// packet buffers and parsed (flow hash, offsets) before the chain runs.
struct LabBatch {
    explicit LabBatch(uint32_t cap = max_burst);
    std::vector<MemPacket> storage;
    std::vector<serpens_pkt> pkts;
    std::vector<uint16_t> labels;
    uint32_t n = 0;
    uint64_t t_arrival = 0; // for latency measurements
    uint32_t hop = 0;       // next stage (thread-based chaining)
    // Loads the next `count` frames of `t` from *cursor (wrapping).
    void load(const Traffic &t, std::size_t &cursor, uint32_t count) noexcept;
    // Keeps the packets that reached egress (labels OUT) in order.
    void compact() noexcept;
};

} // namespace serpens::bench
