#include "scratch.h"

#include "core/error.h"

#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace serpens::bench {

namespace fs = std::filesystem;

ScratchDir::ScratchDir(const std::string &what)
{
    const char *tmpdir = std::getenv("TMPDIR");
    fs::path base =
        fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::path(tmpdir != nullptr && *tmpdir ? tmpdir : "/tmp");
    std::string templ = (base / ("serpens-bench-" + what + "-XXXXXX")).string();
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
