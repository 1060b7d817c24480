#include "fixture.h"

#include "chain/spec.h"
#include "core/error.h"
#include "plugin/host_api.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <filesystem>

namespace serpens::bench {

PacketBatch::PacketBatch(uint32_t n) : storage(n), pkts(n), labels(n)
{
    std::vector<uint8_t> frame(64, 0);
    for (uint32_t i = 0; i < n; ++i) {
        frame[0] = static_cast<uint8_t>(i);
        pkts[i] = storage[i].load(frame);
    }
}

std::string find_plugin(const std::string &dir, const std::string &name)
{
    const std::string file = "serpens_nf_" + name + ".so";
    for (const auto &candidate : {std::filesystem::path(dir) / file, std::filesystem::path(dir) / name / file}) {
        if (std::filesystem::is_regular_file(candidate)) {
            return candidate.string();
        }
    }
    return {};
}

NoopChain::NoopChain(const std::string &plugin_dir, uint32_t hops, const std::string &plugin)
    : _hops(hops), _api(make_host_api(mem_packet_ops()))
{
    if (hops == 0 || hops > SERPENS_MAX_CHAIN_NFS) {
        throw Error(fmt::format("--hops must be 1..{}", SERPENS_MAX_CHAIN_NFS));
    }
    _plugin_path = find_plugin(plugin_dir, plugin);
    if (_plugin_path.empty()) {
        throw Error(fmt::format("no serpens_nf_{0}.so in {1} or {1}/{0}/: build the plugin or pass --plugins DIR",
                                plugin, plugin_dir));
    }
    if (!_registry.load_file(_plugin_path)) {
        throw Error("plugin refused: " + _registry.refusals().back().message);
    }
    // The same text a chain file would hold, parsed by the host's own parser.
    std::string text = fmt::format("name = \"bench-{}x{}\"\nchain = [", plugin, hops);
    for (uint32_t i = 0; i < hops; ++i) {
        text += fmt::format("{}\"n{}\"", i == 0 ? "" : ", ", i);
    }
    text += "]\n";
    for (uint32_t i = 0; i < hops; ++i) {
        text += fmt::format("[[nf]]\nname = \"n{}\"\nplugin = \"{}\"\n", i, plugin);
    }
    auto root = std::make_shared<const toml::table>(toml::parse(text));
    _chain = compile_chain(parse_chain_toml(root, "<serpens-bench>"), _registry);
}

std::unique_ptr<ChainInstance> NoopChain::instance(uint32_t id) const
{
    return std::make_unique<ChainInstance>(_chain, id, &_api);
}

void NoopChain::verify(uint32_t batch) const
{
    auto inst = instance(0);
    PacketBatch b(batch);
    const uint32_t out = inst->run(b.pkts.data(), b.size(), b.labels.data(), 0);
    if (out != batch || inst->stats(_hops - 1).packets != batch) {
        throw Error(fmt::format("chain check failed: {} of {} packets reached egress", out, batch));
    }
}

} // namespace serpens::bench
