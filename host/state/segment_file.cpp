#include "state/segment_file.h"

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

namespace serpens::state {

std::string errno_text(int e) { return std::strerror(e); }

std::string move_aside(const std::filesystem::path &file)
{
    std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm tm{};
    gmtime_r(&t, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    std::string aside = file.string() + ".bad-" + stamp;
    return ::rename(file.c_str(), aside.c_str()) == 0 ? aside : std::string();
}

int create_reserved(const std::string &tmp, uint64_t &size, const std::string &reserving, std::string &err)
{
    int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        err = tmp + ": create failed: " + errno_text(errno);
        return -1;
    }
    auto fail = [&](const std::string &what, int e) {
        err = tmp + ": " + what + ": " + errno_text(e);
        ::close(fd);
        ::unlink(tmp.c_str());
        return -1;
    };
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        return fail("flock", errno);
    }
    // On hugetlbfs (a state_dir on a hugepage mount: fewer TLB misses on big
    // tables) a file is a whole number of its pages.
    if (struct statfs fs{}; ::fstatfs(fd, &fs) == 0 && fs.f_type == HUGETLBFS_MAGIC && fs.f_bsize > 0) {
        const auto page = static_cast<uint64_t>(fs.f_bsize);
        size = (size + page - 1) / page * page;
    }
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
        return fail("ftruncate to " + std::to_string(size) + " bytes", errno);
    }
    if (int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(size)); rc != 0) {
        return fail(fmt::format("reserving {:.1f} MiB {}", static_cast<double>(size) / (1 << 20), reserving), rc);
    }
    return fd;
}

void ready_for_data_path(void *map, std::size_t size) noexcept
{
#ifdef MADV_HUGEPAGE
    // tmpfs honours this when /sys/kernel/mm/transparent_hugepage/shmem_enabled
    // is "advise" or more; before the pages are faulted in, so they can be huge.
    if (size >= (64u << 20)) {
        ::madvise(map, size, MADV_HUGEPAGE);
    }
#endif
#ifdef MADV_POPULATE_WRITE
    ::madvise(map, size, MADV_POPULATE_WRITE); // Linux 5.14+; an older kernel faults them in later
#endif
}

} // namespace serpens::state
