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

// rte_eal_init with the arguments above; throws Error with a hint on failure.
void start_eal(const HostConfig &cfg, const std::string &program);

rte_mempool *create_mbuf_pool(const HostConfig &cfg);

struct Port {
    std::string name;
    uint16_t id = 0;        // DPDK port id
    uint16_t rx_queues = 1; // queue q is received by the q-th receiving lcore
    uint16_t tx_queues = 1; // queue 0 belongs to the main lcore
};

// Finds each configured device's port, configures its RX queues (its
// rx_queues, or else `wanted_rx_queues`) and up to `wanted_tx_queues` TX
// queues, fewer if the device has fewer, and starts it.  Several RX queues
// on a NIC are fed by symmetric RSS.
std::vector<Port> start_ports(const HostConfig &cfg, rte_mempool *pool, uint16_t wanted_tx_queues,
                              uint16_t wanted_rx_queues);

void stop_ports(const std::vector<Port> &ports) noexcept;

} // namespace serpens::io
