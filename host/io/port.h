#pragma once
// DPDK environment and ports: EAL start-up, the mbuf pool, and port set-up,
// with failures explained in plain words and the likely fix.

#include "config/host_config.h"

#include <rte_mempool.h>

#include <cstdint>
#include <string>
#include <vector>

namespace serpens::io {

// Builds the EAL argv from host.toml: [eal] args, plus one --vdev / -a per port.
std::vector<std::string> eal_arguments(const HostConfig &cfg, const std::string &program);

// What DPDK's EAL says against the arguments above, empty when it takes
// them, without starting it: `serpens-host --check` and a start ask it
// first.  The EAL's own parser reads them in a child process, with --help
// appended, on which it exits before it touches memory or devices.  Its
// checks that need the machine (lcores the process may not run on,
// hugepages) are left to rte_eal_init.  Forks: call it before any thread
// starts.  Throws Error when the child cannot be run.
std::string eal_arguments_problem(const HostConfig &cfg, const std::string &program);

// rte_eal_init with the arguments above; throws Error with a hint on failure.
void start_eal(const HostConfig &cfg, const std::string &program);

// rte_eal_cleanup, then removes the EAL's runtime directory when it is empty.
void stop_eal();

rte_mempool *create_mbuf_pool(const HostConfig &cfg);

struct Port {
    std::string name;
    uint16_t id = 0;        // DPDK port id
    uint16_t rx_queues = 1; // queue q is received by the q-th receiving lcore
    uint16_t tx_queues = 1; // queue 0 belongs to the main lcore
    // The NIC's RSS redirection table (entry -> RX queue) as read back after
    // the host wrote it from the buckets; empty when it did not.
    std::vector<uint16_t> rss_table;
};

// The RX queue a router bucket arrives on when the port's RSS table follows
// the buckets (and the queue the benchmark's per-queue captures give it):
// bucket mod rx_queues.  NICs index the table by the hash's low bits, so a
// table of fewer entries than buckets (reta_size, a power of two; 0: as
// many) sees only the bucket's low bits, and entry i of any table serves
// the buckets whose low bits are i's.
uint16_t bucket_queue(uint32_t bucket, uint16_t rx_queues, uint16_t reta_size) noexcept;

// Finds each configured device's port, configures its RX queues (its
// rx_queues, or else `wanted_rx_queues`) and up to `wanted_tx_queues` TX
// queues, fewer if the device has fewer, and starts it.  Several RX queues
// on a NIC are fed by symmetric RSS; with net::BucketHash::rss its
// redirection table is written first, so each bucket arrives on
// bucket_queue().
std::vector<Port> start_ports(const HostConfig &cfg, rte_mempool *pool, uint16_t wanted_tx_queues,
                              uint16_t wanted_rx_queues);

void stop_ports(const std::vector<Port> &ports) noexcept;

} // namespace serpens::io
