#pragma once
// Helpers shared by the state tests: scratch roots under /dev/shm and NF
// contexts wired to an executor the way the host wires them.

#include "core/nf_context.h"
#include "state/executor.h"
#include "state/host_api.h"

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <unistd.h>

namespace serpens::state::test {

// A unique directory removed on destruction.
struct ScratchDir {
    std::filesystem::path path;
    explicit ScratchDir(const std::string &tag)
    {
        static std::atomic<int> seq{0};
        path = std::filesystem::path("/dev/shm") /
               ("serpens-test-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(seq++));
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    ~ScratchDir() { std::filesystem::remove_all(path); }
};

inline const serpens_host_api &state_api()
{
    static serpens_host_api api = [] {
        serpens_host_api a{};
        a.struct_size = sizeof(a);
        a.abi_major = SERPENS_ABI_MAJOR;
        a.abi_minor = SERPENS_ABI_MINOR;
        install_host_api(a);
        return a;
    }();
    return api;
}

// One NF context of one instance, as ChainInstance would build it.
struct FakeInstance {
    NfContext nc;
    FakeInstance(Executor &ex, uint32_t id, const serpens_nf_descriptor *desc = nullptr)
    {
        nc.chain_name = ex.chain();
        nc.nf_name = ex.nf();
        nc.executor = &ex;
        nc.desc = desc;
        nc.fill_public(&state_api(), id);
    }
    serpens_nf_ctx *ctx() { return &nc.pub; }
    serpens_table *create(const char *name, uint32_t flags, uint32_t ks, uint32_t vs, uint64_t cap)
    {
        return state_api().create_table(ctx(), name, flags, ks, vs, cap);
    }
};

} // namespace serpens::state::test
