// fuzz-nf-config: every NF plugin's init on configs the fuzzer writes, as an
// operator's chain file and rule files reach it: the [config] table of fw,
// nat, mon, ids, vpn and lb, and the rule files of fw and ids.  An NF runs
// inside the host, so no config may crash it; one it refuses must say why
// (an error line), and one it takes must then handle traffic (nf-hostile's
// frames) and fini cleanly.  Tables are limited in size, as on a host with
// little room for state.
//
// An input is a selector byte, then the text: byte % 6 picks the NF
// (nf-hostile's order); for fw and ids, (byte / 6) % 2 == 0 makes the text
// the rule file (the config naming it is nf-hostile's), else the config.
// Seeds: the shipped chains' NF configs and rule files (run.sh).

#include "hostile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

using namespace nfmock;
using namespace nfhostile;

namespace {

// A host with room for tables of up to 512 MiB: a bigger one is refused, as
// on a host whose state directory is full, and the NF must say so.  The
// configs the fuzzer writes ask for up to 2^26 entries in each of 17 cells,
// gigabytes each on tmpfs.
constexpr uint64_t max_table_bytes = uint64_t{512} << 20;
decltype(serpens_host_api::create_table) host_create_table = nullptr;

serpens_table *create_bounded_table(serpens_nf_ctx *ctx, const char *name, uint32_t flags, uint32_t key_size,
                                    uint32_t value_size, uint64_t capacity)
{
    const bool per_instance_cells = (flags & SERPENS_STATE_GLOBAL) != 0 && (flags & SERPENS_STATE_WRITE) != 0;
    const uint64_t entry = (uint64_t{key_size} + value_size + 16) * (per_instance_cells ? 17 : 1);
    if (capacity > max_table_bytes / entry) {
        return nullptr;
    }
    return host_create_table(ctx, name, flags, key_size, value_size, capacity);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, std::size_t size)
{
    static const std::vector<Case> all = cases();
    if (size == 0) {
        return 0;
    }
    const Case &c = all[data[0] % all.size()];
    const std::string text(reinterpret_cast<const char *>(data) + 1, size - 1);
    const bool rules_file = !c.files.empty() && (data[0] / all.size()) % 2 == 0;

    MockHost host(c.plugin);
    host.flow_capacity = 64; // a small table: a fresh one per input
    host_create_table = host.api().create_table;
    host.api().create_table = create_bounded_table;
    for (const auto &[name, content] : c.files) {
        host.write(name, rules_file ? text : content);
    }
    try {
        host.set_config(rules_file ? c.config : text);
    } catch (const std::exception &) {
        return 0; // not TOML: the host's chain reader refuses it (fuzz-chain)
    }
    Ctx *ctx = nullptr;
    if (host.init(ctx) != SERPENS_OK) {
        // The operator's only clue: an error line (the mock host keeps
        // "<level> <text>").
        const bool said_why = std::any_of(host.logs.begin(), host.logs.end(), [](const std::string &line) {
            return line.rfind(std::to_string(SERPENS_LOG_ERROR) + " ", 0) == 0;
        });
        if (!said_why) {
            std::fprintf(stderr, "fuzz-nf-config: %s refused a config with no error line\n", c.name);
            std::abort();
        }
        return 0;
    }
    std::mt19937 rng(static_cast<uint32_t>(size));
    std::vector<Bytes> passed;
    for (int burst = 0; burst < 4; ++burst) {
        std::vector<std::unique_ptr<Packet>> owned;
        std::vector<Packet *> pkts;
        for (int i = 0; i < 16; ++i) {
            owned.push_back(std::make_unique<Packet>(valid_frame(rng, passed)));
            pkts.push_back(owned.back().get());
        }
        const std::vector<uint8_t> ports = host.run(*ctx, pkts, kSec * (burst + 1));
        for (std::size_t i = 0; i < pkts.size(); ++i) {
            if (ports[i] >= ctx->desc->n_ports && ports[i] != SERPENS_PORT_DROP) {
                std::fprintf(stderr, "fuzz-nf-config: %s gave a port it does not have\n", c.name);
                std::abort();
            }
            if (ports[i] != SERPENS_PORT_DROP) {
                passed.push_back(pkts[i]->bytes());
            }
        }
    }
    return 0; // the host's destructor runs fini
}
