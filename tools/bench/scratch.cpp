#include "scratch.h"

#include "config/host_config.h"
#include "core/error.h"

#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace serpens::bench {

namespace fs = std::filesystem;

fs::path host_state_parent()
{
    std::error_code ec;
    if (fs::is_directory(default_state_parent, ec) && ::access(default_state_parent, W_OK) == 0) {
        return default_state_parent;
    }
    if (fs::is_directory("/dev/shm", ec)) {
        return "/dev/shm";
    }
    const char *tmpdir = std::getenv("TMPDIR");
    return tmpdir != nullptr && *tmpdir ? tmpdir : "/tmp";
}

ScratchDir::ScratchDir(const std::string &what)
{
    std::string templ = (host_state_parent() / ("serpens-bench-" + what + "-XXXXXX")).string();
    if (mkdtemp(templ.data()) == nullptr) {
        throw Error("mkdtemp " + templ + ": " + std::strerror(errno));
    }
    _path = templ;
}

ScratchDir::~ScratchDir()
{
    std::error_code ec;
    fs::remove_all(_path, ec);
}

fs::path eal_runtime_dir(const std::string &prefix)
{
    const char *xdg = std::getenv("XDG_RUNTIME_DIR");
    const fs::path run = geteuid() == 0 ? "/var/run" : (xdg != nullptr && *xdg != '\0' ? xdg : "/tmp");
    return run / "dpdk" / prefix;
}

RemovedOnExit::~RemovedOnExit()
{
    std::error_code ec;
    fs::remove_all(_path, ec);
}

} // namespace serpens::bench
