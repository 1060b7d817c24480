#pragma once
// A private scratch directory for a benchmark's files (rules files, state
// segments, redis), removed with the object.

#include <filesystem>
#include <string>
#include <utility>

namespace serpens::bench {

// Where a benchmark keeps a host's state, as the host's default state_dir
// lies: under /dev/shm/serpens when this user may write there (an
// installed host's tmpfs with 2 MB pages), else /dev/shm, else $TMPDIR or
// /tmp.  On disk every new page of a table would wait for writeback.
std::filesystem::path host_state_parent();

// Under host_state_parent() (state segments are files).  Throws Error when
// it cannot be created.
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
