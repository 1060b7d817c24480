#pragma once
// A chain of `hops` noop NFs built the way serpens-host builds one: the noop
// plugin loaded from its .so by PluginRegistry, the chain compiled by
// compile_chain, run by ChainInstance on packets in plain memory.

#include "bench.h"

#include "chain/compiled.h"
#include "support/mem_packets.h"
#include "chain/runtime.h"
#include "plugin/registry.h"

#include <memory>
#include <string>
#include <vector>

namespace serpens::bench {

// One batch of 64-byte frames and its label array; owned by one runner.
struct PacketBatch {
    explicit PacketBatch(uint32_t n);
    std::vector<MemPacket> storage;
    std::vector<serpens_pkt> pkts;
    std::vector<uint16_t> labels;
    uint32_t size() const noexcept { return static_cast<uint32_t>(pkts.size()); }
};

class NoopChain {
public:
    // Loads serpens_nf_<plugin>.so from plugin_dir (or plugin_dir/<plugin>/),
    // compiles `hops` of it into one chain.  Throws Error with what to do.
    NoopChain(const std::string &plugin_dir, uint32_t hops, const std::string &plugin = "noop");

    // A fresh instance: instances are single-threaded, so each worker needs one.
    std::unique_ptr<ChainInstance> instance(uint32_t id) const;
    // Runs one batch through a new instance and checks every packet reached
    // egress, so a benchmark never times a chain that silently drops.
    void verify(uint32_t batch) const;

    uint32_t hops() const noexcept { return _hops; }
    const std::string &plugin_path() const noexcept { return _plugin_path; }
    const CompiledChain &compiled() const noexcept { return *_chain; }

private:
    uint32_t _hops;
    std::string _plugin_path;
    PluginRegistry _registry;
    serpens_host_api _api;
    std::shared_ptr<const CompiledChain> _chain;
};

// Finds serpens_nf_<name>.so in dir or dir/<name>/; empty when absent.
std::string find_plugin(const std::string &dir, const std::string &name);

} // namespace serpens::bench
