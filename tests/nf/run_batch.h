#pragma once
// Running one batch through an NF's process(), shared by the NF tests' two
// mock hosts (nat/nf_mock.h, fw/nf_host.h).

#include <serpens/nf.h>

#include <cstdint>
#include <vector>

namespace nfbatch {

// Every packet labelled for the NF, every port reset to the default first.
inline void run_batch(const serpens_nf_descriptor *desc, serpens_nf_ctx *ctx, std::vector<serpens_pkt> &pkts,
                      std::vector<uint8_t> &ports, uint64_t now)
{
    std::vector<uint16_t> labels(pkts.size(), 1);
    ports.assign(pkts.size(), SERPENS_PORT_DEFAULT);
    serpens_batch b{};
    b.struct_size = sizeof b;
    b.count = static_cast<uint32_t>(pkts.size());
    b.self = 1;
    b.pkts = pkts.data();
    b.pkt_stride = sizeof(serpens_pkt);
    b.labels = labels.data();
    b.ports = ports.data();
    b.now_ns = now;
    desc->process(ctx, &b);
}

} // namespace nfbatch
