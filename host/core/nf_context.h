#pragma once
// The host side of one NF inside one chain instance: what serpens_nf_ctx's
// host_private points to.  Owned by chain/'s ChainInstance; every area that
// implements a host service (plugin/'s counters, state/'s tables) finds its
// context through here, so it lives in core/ below all of them.

#include "core/cache_line.h"

#include <serpens/nf.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace serpens {

namespace state {
class Executor;
}

// Named 64-bit counters of one NF context.  Slots never move once handed out,
// so NFs increment them through a plain pointer on the hot path.
class CounterBlock {
public:
    static constexpr std::size_t capacity = 64;

    // Returns the slot for `name`, registering it on first use; nullptr when full.
    uint64_t *get(const char *name);
    std::size_t size() const noexcept { return _size; }
    const std::string &name(std::size_t i) const { return _names[i]; }
    uint64_t value(std::size_t i) const noexcept { return _values[i]; }

private:
    alignas(cache_line) std::array<uint64_t, capacity> _values{};
    std::array<std::string, capacity> _names;
    std::size_t _size = 0;
};

struct NfContext {
    serpens_nf_ctx pub{}; // handed to the plugin
    const serpens_nf_descriptor *desc = nullptr;
    std::string chain_name;
    std::string nf_name;                 // the chain's name for this NF
    std::string where;                   // "NF 'x' (plugin y, file) of chain 'c' instance i"
    std::string process_site;            // "process() of " + where: what a crash line names
    std::string fini_site;               // "fini() of " + where
    state::Executor *executor = nullptr; // owner of this NF's state tables
    CounterBlock counters;
    bool in_init = false;         // init() is running (what flow_state may be called from)
    std::string init_error;       // errors logged by or for it during init: why init failed
    uint32_t flow_state_size = 0; // bytes it keeps per flow in the chain's flow table
    uint32_t flow_visit_ms = 0;   // how often its flow_visit hook sees every entry (0: expiring ones only)

    // Adds an error of its init to init_error (bounded: an NF logging in a
    // loop must not grow it without end).
    void note_init_error(std::string_view message)
    {
        constexpr std::size_t kMaxInitError = 2048;
        if (init_error.size() < kMaxInitError) {
            init_error += (init_error.empty() ? "" : "; ") + std::string(message.substr(0, kMaxInitError));
        }
    }

    // Fills `pub`, what the plugin sees of this context, from it; chain_name
    // and nf_name are set by then, and the context does not move afterwards.
    void fill_public(const serpens_host_api *api, uint32_t instance_id) noexcept
    {
        pub.struct_size = sizeof(serpens_nf_ctx);
        pub.instance_id = instance_id;
        pub.host = api;
        pub.chain_name = chain_name.c_str();
        pub.nf_name = nf_name.c_str();
        pub.host_private = this;
    }

    static NfContext *of(const serpens_nf_ctx *ctx) noexcept { return static_cast<NfContext *>(ctx->host_private); }
};

} // namespace serpens
