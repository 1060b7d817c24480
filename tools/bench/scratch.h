#pragma once
// A private scratch directory for a benchmark's files (rules files, state
// segments, redis), removed with the object.

#include <filesystem>
#include <string>

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

} // namespace serpens::bench
