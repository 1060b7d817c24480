#include "batch_latency.h"

namespace serpens::bench {

BatchLatency batch_latency_of(const nlohmann::ordered_json &stats)
{
    BatchLatency h;
    for (const auto &lcore : stats.at("lcores")) {
        for (const auto &bucket : lcore.at("batch_latency_ns")) {
            h[bucket.at(0).get<uint64_t>()] += bucket.at(1).get<uint64_t>();
        }
    }
    return h;
}

void add_difference(BatchLatency &sum, const BatchLatency &later, const BatchLatency &earlier)
{
    for (const auto &[low, n] : later) {
        auto it = earlier.find(low);
        sum[low] += n - (it == earlier.end() ? 0 : it->second);
    }
}

double percentile_us(const BatchLatency &h, double p)
{
    uint64_t total = 0;
    for (const auto &[low, n] : h) {
        total += n;
    }
    uint64_t seen = 0;
    for (const auto &[low, n] : h) {
        seen += n;
        if (static_cast<double>(seen) >= p * static_cast<double>(total)) {
            return static_cast<double>(low) / 1e3;
        }
    }
    return 0;
}

double highest_us(const BatchLatency &h)
{
    for (auto it = h.rbegin(); it != h.rend(); ++it) {
        if (it->second != 0) {
            return static_cast<double>(it->first) / 1e3;
        }
    }
    return -1;
}

} // namespace serpens::bench
