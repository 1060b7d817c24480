#pragma once
// The packet helpers of serpens_host_api (prepend, append, trim, adj).  They
// depend on what backs the packets (DPDK mbufs in io/, plain memory in tests
// and benchmarks), so each backend supplies a PacketOps and plugin/'s
// make_host_api installs it; core/ is where both sides can include it.

#include <serpens/nf.h>

#include <cstdint>

namespace serpens {

struct PacketOps {
    uint8_t *(*prepend)(serpens_pkt *pkt, uint32_t len);
    uint8_t *(*append)(serpens_pkt *pkt, uint32_t len);
    int (*trim)(serpens_pkt *pkt, uint32_t len);
    int (*adj)(serpens_pkt *pkt, uint32_t len);
};

} // namespace serpens
