#pragma once
// serpens-host's batch latency as its `stats` report it (every lcore's
// histogram, lcores.batch_latency_ns), and the window between two reads:
// what the throughput and scale subcommands both measure.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>

namespace serpens::bench {

using BatchLatency = std::map<uint64_t, uint64_t>; // bucket's lowest ns -> batches, all lcores

BatchLatency batch_latency_of(const nlohmann::ordered_json &stats);
// Adds what was counted between two reads of the same host to `sum`.
void add_difference(BatchLatency &sum, const BatchLatency &later, const BatchLatency &earlier);
// The p-th percentile's bucket (its lowest value), in microseconds; 0 when
// nothing was counted.
double percentile_us(const BatchLatency &h, double p);
// The highest bucket any batch reached, in microseconds; -1 when none.
double highest_us(const BatchLatency &h);

} // namespace serpens::bench
