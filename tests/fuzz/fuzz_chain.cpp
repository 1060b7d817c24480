// libFuzzer target: a chain file from arbitrary bytes, parsed (parse_chain_text)
// and compiled against a fixed set of in-process NF descriptors with 1 to 4
// output ports, so the graph code (entry, reachability, cycles, order) runs
// on whatever the parser accepts.  A refusal must be a ConfigError; anything
// else escaping, or a compiled chain that breaks the contract of compiled.h,
// is a finding.  The plugin names match the stock NFs, so conf/chains/*.toml
// are good seeds.
#include "chain/compiled.h"
#include "config/toml_reader.h"
#include "core/error.h"
#include "plugin/registry.h"

#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

using namespace serpens;

namespace {

void check(bool ok)
{
    if (!ok) {
        __builtin_trap();
    }
}

int fake_init(serpens_nf_ctx *, const serpens_config *) { return SERPENS_OK; }

void fake_process(serpens_nf_ctx *, serpens_batch *) {}

constexpr serpens_nf_descriptor fake(const char *name, uint16_t ports)
{
    serpens_nf_descriptor d{};
    d.abi_major = SERPENS_ABI_MAJOR;
    d.abi_minor = SERPENS_ABI_MINOR;
    d.struct_size = sizeof(serpens_nf_descriptor);
    d.name = name;
    d.n_ports = ports;
    d.init = fake_init;
    d.process = fake_process;
    return d;
}

const serpens_nf_descriptor fakes[] = {
    fake("noop", 1), fake("mon", 1), fake("nat", 1), fake("lb", 1),
    fake("fw", 2),   fake("ids", 2), fake("vpn", 3), fake("steer", 4),
};

const PluginRegistry &registry()
{
    static PluginRegistry *plugins = [] {
        spdlog::set_level(spdlog::level::off);
        auto *r = new PluginRegistry;
        for (const serpens_nf_descriptor &d : fakes) {
            check(r->add_builtin(d, std::string("builtin:") + d.name));
        }
        return r;
    }();
    return *plugins;
}

// compiled.h: labels 1..N in order, each port to OUT, DROP or a later NF
// (the order is topological), unused ports to DROP, every NF reachable.
void check_compiled(const ChainSpec &spec, const CompiledChain &chain)
{
    const std::size_t n = chain.nfs.size();
    check(n == spec.nfs.size() && n >= 1 && n <= SERPENS_MAX_CHAIN_NFS);
    check(config::is_safe_name(chain.name));
    std::vector<bool> reached(n, false);
    reached[0] = true;
    for (std::size_t i = 0; i < n; ++i) {
        const CompiledNf &nf = chain.nfs[i];
        check(nf.label == i + 1);
        check(nf.n_ports >= 1 && nf.n_ports <= 4);
        check(config::is_safe_name(nf.name));
        for (std::size_t port = 0; port < nf.next.size(); ++port) {
            uint16_t next = nf.next[port];
            if (port >= nf.n_ports) {
                check(next == SERPENS_LABEL_DROP);
                continue;
            }
            check(next == SERPENS_LABEL_OUT || next == SERPENS_LABEL_DROP || (next > nf.label && next <= n));
            if (next != SERPENS_LABEL_OUT && next != SERPENS_LABEL_DROP) {
                reached[next - 1] = true;
            }
        }
    }
    for (bool r : reached) {
        check(r);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, std::size_t size)
{
    const PluginRegistry &plugins = registry();
    std::string_view text(reinterpret_cast<const char *>(data), size);
    try {
        ChainSpec spec = parse_chain_text(text, "/fuzz/chains/c.toml");
        check(spec.nfs.size() <= SERPENS_MAX_CHAIN_NFS);
        auto chain = compile_chain(spec, plugins);
        check_compiled(spec, *chain);
    } catch (const ConfigError &) {
        // A refusal with file:line:col is the expected answer to bad input.
    }
    return 0;
}
