#pragma once
// What the Prometheus endpoint shows: a plain copy of the host's counters,
// taken by collect.h on the metrics thread and turned into text by render.h.
// Nothing here touches DPDK, so the rendering is testable on its own.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace serpens::metrics {

struct PortSample {
    std::string name;
    uint64_t rx_packets = 0; // received by the host's dispatchers
    uint64_t tx_packets = 0; // sent by the device
    uint64_t rx_bytes = 0;
    uint64_t tx_bytes = 0;
    std::vector<std::pair<std::string, uint64_t>> dropped; // (reason, packets)
};

struct RuleSample {
    std::string name;
    uint64_t matched = 0;
};

// Named counters of one NF of one chain instance.
struct NfSample {
    std::string chain;
    uint32_t instance = 0;
    std::string nf;
    std::string plugin;
    uint64_t packets = 0;
    uint64_t dropped = 0;
    std::vector<std::pair<std::string, uint64_t>> counters; // (name, value)
};

struct InstanceSample {
    std::string chain;
    uint32_t instance = 0;
    std::string state; // empty, pooled, active, parked
    uint64_t packets = 0;
    uint64_t out = 0;
    std::vector<std::pair<std::string, uint64_t>> dropped; // (reason, packets)
};

struct ChainSample {
    std::string name;
    uint64_t packets = 0; // metered
    uint32_t active = 0;
    uint32_t pooled = 0;
    uint32_t parked = 0;
    uint64_t scale_events = 0;
    uint64_t wakeups = 0;
    uint64_t cold_starts = 0;
    bool has_flows = false; // its flow table exists
    uint64_t flows_live = 0;
    uint64_t flows_capacity = 0;
    uint64_t flows_refused_full = 0;
};

// One state table of one executor (chain, NF).
struct TableSample {
    std::string chain;
    std::string nf;
    std::string table;
    uint64_t live = 0;
    uint64_t capacity = 0;
};

// Batch latency of one lcore: the log-linear buckets of core/latency.h.
struct LatencySample {
    unsigned lcore = 0;
    std::vector<std::pair<uint64_t, uint64_t>> buckets; // (bucket's lowest ns, batches), ascending
    uint64_t sum_ns = 0;
};

// Another host of [peer], as this one sees it.
struct PeerSample {
    std::string id;
    bool up = false;
    uint64_t sessions = 0; // connections that completed their Hello, ever
};

struct Snapshot {
    std::vector<PortSample> ports;
    std::vector<std::pair<std::string, uint64_t>> parser;   // (result, packets)
    std::vector<std::pair<std::string, uint64_t>> dispatch; // (reason, packets) dropped before a chain
    std::vector<RuleSample> rules;
    uint64_t unmatched = 0;
    std::vector<ChainSample> chains;
    std::vector<InstanceSample> instances;
    std::vector<NfSample> nfs;
    std::vector<TableSample> tables;
    std::vector<LatencySample> latency;
    bool has_peers = false; // [peer] is there
    std::vector<PeerSample> peers;
    uint64_t peer_sessions_refused = 0;
};

} // namespace serpens::metrics
