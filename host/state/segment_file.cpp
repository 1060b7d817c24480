#include "state/segment_file.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
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

std::string read_header(int fd, void *header, std::size_t len, uint64_t room, uint64_t &size)
{
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        return "cannot stat it: " + errno_text(errno);
    }
    size = static_cast<uint64_t>(st.st_size);
    if (size < room) {
        return fmt::format("file is {} bytes, smaller than its header ({} bytes)", size, room);
    }
    const ssize_t got = ::pread(fd, header, len, 0);
    if (got != static_cast<ssize_t>(len)) {
        return "cannot read its header: " + (got < 0 ? errno_text(errno) : std::string("short read"));
    }
    return {};
}

int open_existing(const std::filesystem::path &file, const std::string &what, void *header, std::size_t len,
                  uint64_t room, const SegmentFit &fits, uint64_t &size, std::string &err)
{
    err.clear();
    const int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) {
            err = file.string() + ": open failed: " + errno_text(errno);
        }
        return -1;
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        err = fmt::format("{}: {} is in use by another process (flock: {})", file.string(), what, errno_text(errno));
        ::close(fd);
        return -1;
    }
    std::vector<std::string> why;
    if (std::string unread = read_header(fd, header, len, room, size); !unread.empty()) {
        why.push_back(std::move(unread));
    } else {
        why = fits(size);
    }
    if (why.empty()) {
        return fd;
    }
    const std::string aside = move_aside(file);
    const int move_errno = errno;
    ::close(fd);
    if (aside.empty()) {
        err = fmt::format("{}: cannot use it ({}) nor move it aside: {}", file.string(), fmt::join(why, "; "),
                          errno_text(move_errno));
        return -1;
    }
    spdlog::warn("state: {}: {} not usable ({}); moved it to {} and created a new one", file.string(), what,
                 fmt::join(why, "; "), aside);
    return -1;
}

std::string creation_name(const std::filesystem::path &file)
{
    return file.string() + ".tmp-" + std::to_string(::getpid());
}

bool publish(const std::string &tmp, const std::filesystem::path &file, std::string &err)
{
    if (::rename(tmp.c_str(), file.c_str()) != 0) {
        err = tmp + ": rename to " + file.string() + ": " + errno_text(errno);
        ::unlink(tmp.c_str());
        return false;
    }
    return true;
}

uint64_t unix_now_ns()
{
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
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
