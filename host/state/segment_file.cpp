#include "state/segment_file.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string_view>
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

namespace {

// Segments this big ask for huge pages: below it the TLB holds them anyway.
constexpr std::size_t huge_worthy_bytes = std::size_t{64} << 20;

void advise_huge(void *map, std::size_t size) noexcept
{
#ifdef MADV_HUGEPAGE
    if (size >= huge_worthy_bytes) {
        ::madvise(map, size, MADV_HUGEPAGE);
    }
#endif
}

// Faults every page of a new big segment in through a mapping that asks for
// huge pages; 0, or the errno of a memory that ran out (ENOSPC for a full
// tmpfs).  A kernel without MADV_POPULATE_WRITE (before 5.14) leaves it to
// posix_fallocate.
int populate_huge(int fd, uint64_t size) noexcept
{
#ifdef MADV_POPULATE_WRITE
    if (size < huge_worthy_bytes) {
        return 0;
    }
    void *map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        return 0; // posix_fallocate reserves it, in small pages
    }
    advise_huge(map, size);
    int rc = 0;
    if (::madvise(map, size, MADV_POPULATE_WRITE) != 0 && errno != EINVAL) {
        rc = errno == EFAULT ? ENOSPC : errno; // EFAULT: a page would have been SIGBUS
    }
    ::munmap(map, size);
    return rc;
#else
    (void)fd;
    (void)size;
    return 0;
#endif
}

} // namespace

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
    const std::string reserving_text =
        fmt::format("reserving {:.1f} MiB {}", static_cast<double>(size) / (1 << 20), reserving);
    // posix_fallocate alone would give a tmpfs mounted huge=advise 4 KiB
    // pages for good: it honours MADV_HUGEPAGE only for pages a mapping
    // that asks faults in.  So a big segment is first reserved that way.
    if (int rc = populate_huge(fd, size); rc != 0) {
        return fail(reserving_text, rc);
    }
    if (int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(size)); rc != 0) {
        return fail(reserving_text, rc);
    }
    return fd;
}

namespace {

// A mountinfo path field with its octal escapes (" " is "\040") undone.
std::string unescape_mount_path(const std::string &field)
{
    std::string out;
    for (std::size_t i = 0; i < field.size(); ++i) {
        if (field[i] == '\\' && i + 3 < field.size()) {
            const std::string digits = field.substr(i + 1, 3);
            if (digits.find_first_not_of("01234567") == std::string::npos) {
                out += static_cast<char>(std::stoi(digits, nullptr, 8));
                i += 3;
                continue;
            }
        }
        out += field[i];
    }
    return out;
}

} // namespace

std::string small_pages_note(const std::filesystem::path &dir)
{
    std::error_code ec;
    const std::filesystem::path at = std::filesystem::canonical(dir, ec);
    std::ifstream mounts("/proc/self/mountinfo");
    if (ec || !mounts) {
        return {};
    }
    // The mount that holds `at`: the longest mount point it lies under
    // (the last such line when one is mounted over another).
    std::string point, type, options, line;
    while (std::getline(mounts, line)) {
        std::istringstream fields(line);
        std::string id, parent, dev, root, mount_point;
        fields >> id >> parent >> dev >> root >> mount_point;
        const std::size_t dash = line.find(" - ");
        if (dash == std::string::npos) {
            continue;
        }
        mount_point = unescape_mount_path(mount_point);
        const std::string_view path = at.native();
        const bool under = path.starts_with(mount_point) &&
                           (mount_point == "/" || path.size() == mount_point.size() || path[mount_point.size()] == '/');
        if (!under || mount_point.size() < point.size()) {
            continue;
        }
        std::istringstream tail(line.substr(dash + 3));
        std::string source;
        point = mount_point;
        tail >> type >> source >> options;
    }
    if (type != "tmpfs") {
        return {}; // hugetlbfs, or a disk, where pages are not the question
    }
    for (const char *huge : {"huge=always", "huge=within_size", "huge=advise"}) {
        if (("," + options + ",").find("," + std::string(huge) + ",") != std::string::npos) {
            return {};
        }
    }
    std::ifstream shmem("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
    if (std::string policy; std::getline(shmem, policy) && policy.find("[force]") != std::string::npos) {
        return {};
    }
    return fmt::format("state_dir {} is on a tmpfs mounted without huge= ({}), so its big tables get 4 KiB pages "
                       "whose TLB misses slow a million flows down; `mount -o remount,huge=advise {}` lets the host "
                       "ask for 2 MB pages for them",
                       dir.string(), point, point);
}

void ready_for_data_path(void *map, std::size_t size) noexcept
{
    // Before the pages are faulted in, so they can be huge: a tmpfs mounted
    // with huge=advise honours it (one without huge= does not, whatever
    // shmem_enabled says short of "force").
    advise_huge(map, size);
#ifdef MADV_POPULATE_WRITE
    ::madvise(map, size, MADV_POPULATE_WRITE); // Linux 5.14+; an older kernel faults them in later
#endif
    // The kernel's populate fills the guest's page tables, but a hypervisor
    // that shadows them (PVM, KVM without EPT) still stops the first access
    // from user space to each page: 5.8 us per 4 KiB page on the machine
    // this was measured on, then 30 ns.  Read one byte of every page now, so
    // a new flow's first packet to a table page does not pay it.  A read is
    // enough (a write after it ran at 30 ns) and is safe beside writers.
    const auto *bytes = static_cast<const volatile uint8_t *>(map);
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    for (std::size_t at = 0; at < size; at += page) {
        (void)bytes[at];
    }
}

} // namespace serpens::state
