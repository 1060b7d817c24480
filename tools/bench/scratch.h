#pragma once
// A private scratch directory for a benchmark's files (rules files, state
// segments, redis), removed with the object.

#include <filesystem>
#include <string>
#include <utility>

namespace serpens::bench {

// Under /dev/shm when it exists (state segments are files), else $TMPDIR or
// /tmp.  Throws Error when it cannot be created.
class ScratchDir {
public:
    explicit ScratchDir(const std::string &what);
    ~ScratchDir();
    ScratchDir(const ScratchDir &) = delete;
    ScratchDir &operator=(const ScratchDir &) = delete;
    const std::filesystem::path &path() const noexcept { return _path; }

private:
    std::filesystem::path _path;
};

// Where the EAL keeps the runtime files of --file-prefix `prefix`, as DPDK
// decides it: <run>/dpdk/<prefix>, <run> being /var/run for root, else
// $XDG_RUNTIME_DIR or /tmp.  Even --no-shconf creates it, and dpdk-testpmd
// leaves it behind.
std::filesystem::path eal_runtime_dir(const std::string &prefix);

// Removes a directory the bench did not make itself (a host's state) when
// the scope ends, however it ends.
class RemovedOnExit {
public:
    explicit RemovedOnExit(std::filesystem::path path) : _path(std::move(path)) {}
    ~RemovedOnExit();
    RemovedOnExit(const RemovedOnExit &) = delete;
    RemovedOnExit &operator=(const RemovedOnExit &) = delete;

private:
    std::filesystem::path _path;
};

} // namespace serpens::bench
