#include "lab_chain.h"

#include "fixture.h"

#include "chain/compiled.h"
#include "chain/spec.h"
#include "core/error.h"
#include "plugin/host_api.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <fstream>
#include <mutex>

namespace serpens::bench {

NfChain::NfChain(const Options &opts, const ScratchDir &dir, const std::vector<std::string> &nfs,
                 const NfParams &params, const std::string &chain_name, bool load)
    : _nfs(nfs), _name(chain_name), _api(make_host_api(mem_packet_ops()))
{
    for (const std::string &nf : nfs) {
        const std::string path = find_plugin(opts.plugin_dir, lab_plugin(nf));
        if (path.empty()) {
            throw Error(fmt::format("no serpens_nf_{0}.so in {1} or {1}/{0}/: build it or pass --plugins",
                                    lab_plugin(nf), opts.plugin_dir));
        }
        if (std::find(_paths.begin(), _paths.end(), path) != _paths.end()) {
            continue;
        }
        _paths.push_back(path);
        if (load && !_registry.load_file(path)) {
            throw Error("plugin refused: " + _registry.refusals().back().message);
        }
    }
    state::StoreOptions so;
    so.root = dir.path() / ("state-" + chain_name);
    _state_root = so.root;
    _flow_capacity = bench_flow_capacity(params.flows);
    so.host_id = "bench";
    so.flow_idle_timeout_ns = 0;
    _store = std::make_unique<state::StateStore>(so);
    _text = lab_chain_toml(dir.path(), nfs, params, chain_name);
    _file = (dir.path() / (chain_name + ".toml")).string();
    std::ofstream(_file) << _text;
    if (load) {
        auto root = std::make_shared<const toml::table>(toml::parse(_text, _file));
        _chain = compile_chain(parse_chain_toml(root, _file), _registry);
    }
}

ExecutorResolver NfChain::resolver()
{
    state::StateStore *store = _store.get();
    return [store](const std::string &chain, const std::string &nf) { return &store->executor(chain, nf); };
}

FlowTableResolver NfChain::flow_tables()
{
    state::StateStore *store = _store.get();
    return [store, capacity = _flow_capacity](state::FlowTableSpec spec, bool &first) {
        spec.capacity = capacity;
        spec.idle_timeout_ns = 0;
        return &store->flow_table(std::move(spec), first);
    };
}

uint32_t NfChain::run_cold(const serpens_host_api *api, LabBatch &b)
{
    // One cold load at a time: loading, parsing and init from several stage
    // threads at once crashed inside toml++ (seen here); on one core they
    // would only interleave anyway.
    static std::mutex cold_mu;
    std::lock_guard<std::mutex> lock(cold_mu);
    PluginRegistry registry; // destroyed last: dlclose after fini
    for (const std::string &p : _paths) {
        if (!registry.load_file(p)) {
            throw Error("plugin refused: " + registry.refusals().back().message);
        }
    }
    auto root = std::make_shared<const toml::table>(toml::parse(_text, _file));
    auto chain = compile_chain(parse_chain_toml(root, _file), registry);
    ChainInstance inst(chain, 0, api != nullptr ? api : &_api, resolver(), default_init_warn_after, flow_tables());
    return inst.run(b.pkts.data(), b.n, b.labels.data(), now_ns());
}

NfChain::~NfChain()
{
    _chain.reset(); // NF fini and table handles before the store goes
    _store.reset();
    std::error_code ec;
    std::filesystem::remove_all(_state_root, ec);
}

std::unique_ptr<ChainInstance> NfChain::instance(uint32_t id, const serpens_host_api *api)
{
    return std::make_unique<ChainInstance>(_chain, id, api != nullptr ? api : &_api, resolver(),
                                           default_init_warn_after, flow_tables());
}

std::string NfChain::describe() const
{
    std::string s;
    for (std::size_t i = 0; i < _nfs.size(); ++i) {
        s += (i ? " -> " : "") + _nfs[i];
    }
    return s;
}

Summary time_in_place(const Options &opts, NfChain &chain, const Traffic &traffic, uint32_t batch)
{
    auto inst = chain.instance(0);
    LabBatch b(batch);
    std::size_t cursor = 0;
    for (std::size_t i = 0; i < traffic.size(); i += batch) {
        b.load(traffic, cursor, batch);
        inst->run(b.pkts.data(), b.n, b.labels.data(), now_ns());
    }
    return summarize(measure(opts, [&](uint64_t iters) {
        for (uint64_t i = 0; i < iters; ++i) {
            b.load(traffic, cursor, batch);
            keep(inst->run(b.pkts.data(), b.n, b.labels.data(), now_ns()));
        }
    }));
}

} // namespace serpens::bench
