#include "lab_traffic.h"

#include "net/parse.h"
#include "support/traffic.h"

#include <algorithm>
#include <span>

namespace serpens::bench {

Traffic make_traffic(uint32_t flows, uint64_t packets, uint32_t frame_size, uint64_t seed)
{
    net::TrafficConfig cfg;
    cfg.seed = seed;
    cfg.flows = flows;
    cfg.packets = std::max<uint64_t>(packets, flows);
    cfg.mix = net::parse_traffic_mix("tcp=50,udp=50");
    cfg.vlan_ratio = 0;
    cfg.malformed_ratio = 0;
    cfg.size_min = frame_size;
    cfg.size_max = frame_size;
    net::TrafficGenerator gen(cfg);
    Traffic t;
    t.flows = flows;
    t.bytes.reserve(cfg.packets * frame_size);
    t.offset.reserve(cfg.packets);
    t.length.reserve(cfg.packets);
    while (auto p = gen.next()) {
        t.offset.push_back(t.bytes.size());
        t.length.push_back(static_cast<uint32_t>(p->data.size()));
        t.bytes.insert(t.bytes.end(), p->data.begin(), p->data.end());
    }
    return t;
}

LabBatch::LabBatch(uint32_t cap) : storage(cap), pkts(cap), labels(cap) {}

void LabBatch::load(const Traffic &t, std::size_t &cursor, uint32_t count) noexcept
{
    net::FlowKey key;
    n = count;
    for (uint32_t i = 0; i < count; ++i) {
        if (cursor >= t.size()) {
            cursor = 0;
        }
        pkts[i] = storage[i].load(std::span<const uint8_t>(t.bytes.data() + t.offset[cursor], t.length[cursor]));
        net::parse_packet(pkts[i], key);
        ++cursor;
    }
}

void LabBatch::compact() noexcept
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; ++i) {
        if (labels[i] == SERPENS_LABEL_OUT) {
            pkts[k++] = pkts[i];
        }
    }
    n = k;
}

} // namespace serpens::bench
