#pragma once
// Real NF chains for the paper's NF-level figures (Figs. 5, 11, 13-17 and
// the NF library's ns/packet): plugins loaded from their .so files, chains
// parsed and compiled by the host's own code, state in a real StateStore in a
// private temporary directory, run on lab traffic (lab_traffic.h).

#include "bench.h"
#include "lab_config.h"
#include "lab_traffic.h"
#include "scratch.h"

#include "chain/runtime.h"
#include "plugin/registry.h"
#include "state/executor.h"

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace serpens::bench {

// A chain of NFs (plugin names, e.g. {"fw","mon","nat"}; repeats allowed,
// named <plugin><index>) built as serpens-host builds it.
class NfChain {
public:
    // `state`: the host's state store (nullptr: NFs get no state API slots
    // beyond what `api` has).  Throws Error with what to do.
    // load = false: only the chain file and the state store (for load-per-batch models).
    NfChain(const Options &opts, const ScratchDir &dir, const std::vector<std::string> &nfs, const NfParams &params,
            const std::string &chain_name = "lab", bool load = true);
    // Removes the chain's state directory: a 1M-flow chain's tables take
    // gigabytes of /dev/shm, and a long run builds dozens of chains.
    ~NfChain();
    NfChain(const NfChain &) = delete;
    NfChain &operator=(const NfChain &) = delete;

    // A new instance; `api` replaces the default host API (local state).
    std::unique_ptr<ChainInstance> instance(uint32_t id, const serpens_host_api *api = nullptr);

    const std::vector<std::string> &nfs() const noexcept { return _nfs; }
    const std::string &name() const noexcept { return _name; }
    const serpens_host_api &local_api() const noexcept { return _api; }
    std::string describe() const;
    ExecutorResolver resolver();
    // The chain's flow table in its state directory, sized as the throughput
    // bench sizes the host's (bench_flow_capacity), with no expiry.
    FlowTableResolver flow_tables();
    const std::string &toml_text() const noexcept { return _text; }
    const std::string &toml_file() const noexcept { return _file; }
    const std::vector<std::string> &plugin_paths() const noexcept { return _paths; }

    // Load per batch (Fission/OpenFaaS-like): dlopen the plugins, compile the
    // chain, create an instance (NF init), run the batch, destroy everything
    // (NF fini, dlclose).  Only when no loaded NfChain holds the same .so.
    uint32_t run_cold(const serpens_host_api *api, LabBatch &b);

private:
    std::string _text, _file;
    std::vector<std::string> _paths;
    std::vector<std::string> _nfs;
    std::string _name;
    PluginRegistry _registry;
    serpens_host_api _api;
    std::filesystem::path _state_root;
    uint64_t _flow_capacity = 0; // set in the constructor
    std::unique_ptr<state::StateStore> _store;
    std::shared_ptr<const CompiledChain> _chain;
};

// Serpens' model: an instance of `chain` run by plain function calls on the
// measuring thread.  One pass over `traffic` establishes every flow, then
// timed batches of `batch` frames cycle over it; ns per batch.
Summary time_in_place(const Options &opts, NfChain &chain, const Traffic &traffic, uint32_t batch);

} // namespace serpens::bench
