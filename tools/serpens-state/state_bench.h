#pragma once
// Microbenchmark of local state access against a Redis baseline (paper
// §IV-B, Fig. 11).  Not a test: `serpens-state-bench` calls bench_run() and
// prints bench_format().  Built with the tool, not in libserpens, so only the
// benchmark links hiredis.

#include <cstdint>
#include <filesystem>
#include <string>

namespace serpens::state {

struct BenchOptions {
    uint64_t entries = 1'000'000; // live entries in the table (and in Redis)
    uint32_t key_size = 16;
    uint32_t value_size = 16;
    uint32_t samples = 301; // timed samples per measurement (median)
    uint32_t ops_per_sample = 1024;
    bool redis = true;
    std::string redis_server = "redis-server";
    uint32_t redis_samples = 2001;
    std::filesystem::path dir; // scratch dir; empty: /dev/shm/serpens-bench-<pid>
};

struct BenchResult {
    uint64_t entries = 0;
    uint32_t key_size = 0, value_size = 0;
    double fill_ns = 0;          // per put while filling
    double get_hit_ns = 0;       // median per get_state hit
    double get_miss_ns = 0;      // median per get_state miss
    double put_update_ns = 0;    // median per put_state of an existing key
    double bulk32_ns = 0;        // median per get_state_bulk of 32 keys
    double mem_dependent_ns = 0; // reference: one random DRAM read, serialised
    double mem_parallel_ns = 0;  // reference: random DRAM reads, independent
    bool redis_available = false;
    std::string redis_note;     // why not, when not
    double redis_get_ns = 0;    // median per GET, one round trip each
    double redis_pipe32_ns = 0; // median per pipeline of 32 GETs
    std::string error;          // set when nothing could be measured (e.g. the table was refused)
};

// Runs everything in one process; cold path, allocates, takes seconds.
BenchResult bench_run(const BenchOptions &opts);
// Human-readable report with Serpens/Redis ratios.
std::string bench_format(const BenchResult &r);

} // namespace serpens::state
