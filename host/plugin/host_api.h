#pragma once
// Builds the serpens_host_api table a plugin receives.  Packet helpers depend
// on what backs the packets (DPDK mbufs in serpens-host, plain memory in tests
// and benchmarks), so the caller supplies them.

#include <serpens/nf.h>

namespace serpens {

struct PacketOps {
    uint8_t *(*prepend)(serpens_pkt *pkt, uint32_t len);
    uint8_t *(*append)(serpens_pkt *pkt, uint32_t len);
    int (*trim)(serpens_pkt *pkt, uint32_t len);
    int (*adj)(serpens_pkt *pkt, uint32_t len);
};

serpens_host_api make_host_api(const PacketOps &packets);

uint64_t monotonic_ns() noexcept;

} // namespace serpens
