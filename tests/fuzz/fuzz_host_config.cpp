// libFuzzer target: host.toml from arbitrary bytes (load_host_config_text).
// A refusal must be a ConfigError; anything else escaping, or an accepted
// config that breaks what the host relies on later, is a finding.
#include "config/host_config.h"
#include "config/toml_reader.h"
#include "core/error.h"

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

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, std::size_t size)
{
    std::string_view text(reinterpret_cast<const char *>(data), size);
    try {
        HostConfig cfg = load_host_config_text(text, "/fuzz/etc/host.toml");
        // The id names files: it must never leave the state root.
        check(config::is_safe_name(cfg.id));
        check(!cfg.ports.empty());
        check(cfg.burst >= 1 && cfg.burst <= 256 && cfg.ring_size >= 2 * cfg.burst);
        check((cfg.ring_size & (cfg.ring_size - 1)) == 0);
        for (const InstanceConfig &inst : cfg.instances) {
            check(inst.lcores.empty() || inst.lcores.size() == 1 || inst.lcores.size() == inst.count);
        }
    } catch (const ConfigError &) {
        // A refusal with file:line:col is the expected answer to bad input.
    }
    return 0;
}
