#include "plugin/host_api.h"

#include "config/plugin_config.h"
#include "core/clock.h"
#include "core/nf_context.h"
#include "state/host_api.h"

#include <spdlog/spdlog.h>

#include <cstdarg>
#include <cstdio>
#include <ctime>

namespace serpens {

namespace {

void plugin_log(const serpens_nf_ctx *ctx, int level, const char *fmt, ...)
{
    char message[1024];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    const char *chain = ctx != nullptr && ctx->chain_name != nullptr ? ctx->chain_name : "-";
    const char *nf = ctx != nullptr && ctx->nf_name != nullptr ? ctx->nf_name : "-";
    auto spd_level = spdlog::level::info;
    switch (level) {
    case SERPENS_LOG_ERROR:
        spd_level = spdlog::level::err;
        break;
    case SERPENS_LOG_WARN:
        spd_level = spdlog::level::warn;
        break;
    case SERPENS_LOG_INFO:
        spd_level = spdlog::level::info;
        break;
    default:
        spd_level = spdlog::level::debug;
        break;
    }
    spdlog::log(spd_level, "[{}/{}] {}", chain, nf, message);
    if (level == SERPENS_LOG_ERROR && ctx != nullptr && NfContext::of(ctx)->in_init) {
        NfContext::of(ctx)->note_init_error(message);
    }
}

uint64_t *plugin_counter(serpens_nf_ctx *ctx, const char *name)
{
    if (ctx == nullptr || name == nullptr) {
        return nullptr;
    }
    uint64_t *slot = NfContext::of(ctx)->counters.get(name);
    if (slot == nullptr) {
        spdlog::error("[{}/{}] counter '{}' refused: at most {} counters per NF", ctx->chain_name, ctx->nf_name, name,
                      CounterBlock::capacity);
    }
    return slot;
}

int plugin_flow_state(serpens_nf_ctx *ctx, uint32_t size)
{
    if (ctx == nullptr || size > SERPENS_MAX_FLOW_STATE || !NfContext::of(ctx)->in_init) {
        return SERPENS_EINVAL;
    }
    NfContext::of(ctx)->flow_state_size = size;
    return SERPENS_OK;
}

int plugin_flow_visit_every(serpens_nf_ctx *ctx, uint32_t ms)
{
    if (ctx == nullptr || !NfContext::of(ctx)->in_init) {
        return SERPENS_EINVAL;
    }
    NfContext::of(ctx)->flow_visit_ms = ms;
    return SERPENS_OK;
}

} // namespace

serpens_host_api make_host_api(const PacketOps &packets)
{
    serpens_host_api api{};
    api.struct_size = sizeof(serpens_host_api);
    api.abi_major = SERPENS_ABI_MAJOR;
    api.abi_minor = SERPENS_ABI_MINOR;
    api.log = plugin_log;
    api.now_ns = monotonic_ns;
    config::install_config_api(api);
    state::install_host_api(api);
    api.pkt_prepend = packets.prepend;
    api.pkt_append = packets.append;
    api.pkt_trim = packets.trim;
    api.pkt_adj = packets.adj;
    api.counter = plugin_counter;
    api.flow_state = plugin_flow_state;
    api.flow_visit_every = plugin_flow_visit_every;
    return api;
}

} // namespace serpens
