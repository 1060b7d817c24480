#pragma once
// Builds the serpens_host_api table a plugin receives.  Packet helpers depend
// on what backs the packets (DPDK mbufs in serpens-host, plain memory in tests
// and benchmarks), so the caller supplies them.

#include "core/packet_ops.h"

#include <serpens/nf.h>

namespace serpens {

serpens_host_api make_host_api(const PacketOps &packets);

} // namespace serpens
