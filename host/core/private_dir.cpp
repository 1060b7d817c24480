#include "core/private_dir.h"

#include "core/error.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace serpens {
namespace {

namespace fs = std::filesystem;

// Links followed on the way, as the kernel's own bound (ELOOP).
constexpr int max_links = 40;

std::string not_ours(const fs::path &at, const char *what, uid_t uid)
{
    return at.string() + " is " + what + " " + foreign_owner_text(uid) +
           ", so that user could replace what the host keeps below it";
}

// Why the directory `at` (its lstat in `st`) may not be on the way to the
// host's directory, or be it when `last`.
std::string directory_problem(const fs::path &at, const struct stat &st, bool last)
{
    if (!S_ISDIR(st.st_mode)) {
        return at.string() + " is not a directory";
    }
    if (!owned_by_host_user(st.st_uid)) {
        return not_ours(at, "a directory", st.st_uid);
    }
    const bool shared = (st.st_mode & (S_IWGRP | S_IWOTH)) != 0;
    if (shared && last) {
        return at.string() + " is writable by group or others (mode " + mode_text(st.st_mode) +
               "), who could put files of their own where the host will open its";
    }
    if (shared && (st.st_mode & S_ISVTX) == 0) {
        return at.string() + " is writable by group or others and not sticky (mode " + mode_text(st.st_mode) +
               "), so they could replace what the host keeps below it";
    }
    return {};
}

std::string inspect(const fs::path &at, struct stat &st)
{
    if (::lstat(at.c_str(), &st) != 0) {
        return "cannot inspect " + at.string() + ": " + std::strerror(errno);
    }
    return {};
}

// Checks `dir` (absolute) component by component from /, as the kernel
// resolves it: `at` is always a directory already checked and free of
// links, so ".." is its parent.  `ends_here`: dir is the host's directory
// itself, not a link's target on the way to it.
std::string walk(const fs::path &dir, bool ends_here, int links_left)
{
    std::vector<fs::path> parts;
    for (const fs::path &part : dir.relative_path()) {
        if (!part.empty() && part != ".") {
            parts.push_back(part);
        }
    }
    fs::path at = dir.root_path();
    struct stat st {};
    if (std::string why = inspect(at, st); !why.empty()) {
        return why;
    }
    if (std::string why = directory_problem(at, st, ends_here && parts.empty()); !why.empty()) {
        return why;
    }
    for (std::size_t i = 0; i < parts.size(); ++i) {
        const bool last = ends_here && i + 1 == parts.size();
        if (parts[i] == "..") {
            at = at.parent_path();
            if (last) {
                if (std::string why = inspect(at, st); !why.empty()) {
                    return why;
                }
                if (std::string why = directory_problem(at, st, true); !why.empty()) {
                    return why;
                }
            }
            continue;
        }
        const fs::path next = at / parts[i];
        if (std::string why = inspect(next, st); !why.empty()) {
            return why;
        }
        if (S_ISLNK(st.st_mode)) {
            // The link itself sits in a directory checked above, so only its
            // owner can change it; where it leads is checked like the rest.
            if (!owned_by_host_user(st.st_uid)) {
                return not_ours(next, "a symbolic link", st.st_uid);
            }
            if (links_left == 0) {
                return next.string() + ": too many symbolic links on the way";
            }
            char resolved[PATH_MAX];
            if (::realpath(next.c_str(), resolved) == nullptr) {
                return "cannot resolve " + next.string() + ": " + std::strerror(errno);
            }
            if (std::string why = walk(resolved, last, links_left - 1); !why.empty()) {
                return why;
            }
            at = resolved;
            continue;
        }
        if (std::string why = directory_problem(next, st, last); !why.empty()) {
            return why;
        }
        at = next;
    }
    return {};
}

// walk() from `dir` made absolute.
std::string walk_from(const fs::path &dir, bool ends_here)
{
    std::error_code ec;
    const fs::path absolute = fs::absolute(dir, ec);
    if (ec) {
        return "cannot make " + dir.string() + " absolute: " + ec.message();
    }
    return walk(absolute, ends_here, max_links);
}

// mkdir -p with mode 0750: a directory made here is the host's from the start.
void create_missing(const fs::path &dir, const std::string &what)
{
    struct stat st {};
    if (dir.empty() || ::lstat(dir.c_str(), &st) == 0) {
        return; // whatever is there, the check says whether it will do
    }
    create_missing(dir.parent_path(), what);
    if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) {
        throw Error("cannot create " + what + " " + dir.string() + ": " + std::strerror(errno));
    }
}

// Makes what is missing of `dir`, once the part that exists passes as the
// way to it: nothing is made below a directory another user could change.
// Returns why not, or "".
std::string make_missing(const fs::path &dir, const std::string &what)
{
    std::error_code ec;
    const fs::path absolute = fs::absolute(dir, ec);
    if (ec) {
        return "cannot make " + dir.string() + " absolute: " + ec.message();
    }
    fs::path existing = absolute;
    struct stat st {};
    while (::lstat(existing.c_str(), &st) != 0 && existing != existing.root_path()) {
        existing = existing.parent_path();
    }
    if (existing == absolute) {
        return {};
    }
    if (std::string why = walk(existing, false, max_links); !why.empty()) {
        return why;
    }
    create_missing(absolute, what);
    return {};
}

} // namespace

bool owned_by_host_user(uid_t uid) { return uid == 0 || uid == ::geteuid(); }

std::string foreign_owner_text(uid_t uid)
{
    return "owned by uid " + std::to_string(uid) + ", neither root nor this host's uid " + std::to_string(::geteuid());
}

std::string mode_text(mode_t mode)
{
    char buf[8];
    std::snprintf(buf, sizeof buf, "%o", static_cast<unsigned>(mode & 07777));
    return buf;
}

std::string private_directory_problem(const fs::path &dir) { return walk_from(dir, true); }

std::string directory_way_problem(const fs::path &dir) { return walk_from(dir, false); }

void make_private_directory(const fs::path &dir, const std::string &what)
{
    const auto refuse = [&](const std::string &why) {
        return Error(what + " " + dir.string() + " is not the host's alone: " + why +
                     ". Fix the owner or mode, or remove what another user made for the host to make it again, or "
                     "set " +
                     what + " elsewhere");
    };
    if (std::string why = make_missing(dir, what); !why.empty()) {
        throw refuse(why);
    }
    if (std::string why = private_directory_problem(dir); !why.empty()) {
        throw refuse(why);
    }
}

void check_output_file(const fs::path &file, const std::string &what)
{
    const auto refuse = [&](const std::string &why) { return Error(what + " " + file.string() + ": " + why); };
    std::error_code ec;
    const fs::path absolute = fs::absolute(file, ec);
    if (ec || absolute.filename().empty()) {
        throw refuse("not a file name" + (ec ? ": " + ec.message() : std::string()));
    }
    // Its directory made if missing, as a log sink would.
    if (std::string why = make_missing(absolute.parent_path(), what); !why.empty()) {
        throw refuse(why + "; write it elsewhere");
    }
    if (std::string why = directory_way_problem(absolute.parent_path()); !why.empty()) {
        throw refuse(why + "; write it elsewhere");
    }
    for (int attempt = 0; attempt < 3; ++attempt) {
        struct stat st {};
        if (::lstat(absolute.c_str(), &st) == 0) {
            if (!owned_by_host_user(st.st_uid)) {
                throw refuse(std::string("it is ") + (S_ISLNK(st.st_mode) ? "a symbolic link " : "a file ") +
                             foreign_owner_text(st.st_uid) + ", who could lead the host's writes elsewhere; remove it");
            }
            if (S_ISDIR(st.st_mode)) {
                throw refuse("it is a directory; name a file");
            }
            return;
        }
        if (errno != ENOENT) {
            throw refuse(std::string("cannot inspect it: ") + std::strerror(errno));
        }
        // Made now, so that nobody else's file or link can take its place
        // before the host opens it.
        const int fd = ::open(absolute.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
        if (fd >= 0) {
            ::close(fd);
            return;
        }
        if (errno != EEXIST) {
            throw refuse(std::string("cannot create it: ") + std::strerror(errno));
        }
        // Someone made it meanwhile: look at what it is.
    }
    throw refuse("it keeps appearing and going while the host makes it");
}

std::string trusted_file_problem(const fs::path &file, bool secret)
{
    fs::path at = file;
    for (int links = 0;; ++links) {
        std::error_code ec;
        const fs::path absolute = fs::absolute(at, ec);
        if (ec) {
            return "cannot make " + at.string() + " absolute: " + ec.message();
        }
        if (std::string why = directory_way_problem(absolute.parent_path()); !why.empty()) {
            return why;
        }
        struct stat st {};
        if (std::string why = inspect(absolute, st); !why.empty()) {
            return why;
        }
        if (!owned_by_host_user(st.st_uid)) {
            return absolute.string() + " is " + foreign_owner_text(st.st_uid) + ", who could change it";
        }
        if (S_ISLNK(st.st_mode)) {
            char resolved[PATH_MAX];
            if (links == max_links || ::realpath(absolute.c_str(), resolved) == nullptr) {
                return "cannot resolve the link " + absolute.string() +
                       (links == max_links ? std::string(": too many links")
                                           : ": " + std::string(std::strerror(errno)));
            }
            at = resolved;
            continue;
        }
        if (!S_ISREG(st.st_mode)) {
            return absolute.string() + " is not a regular file";
        }
        if (secret && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
            return absolute.string() + " is open to group or others (mode " + mode_text(st.st_mode) +
                   "), who could read the key and be this host; run chmod 600 on it";
        }
        if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
            return absolute.string() + " is writable by group or others (mode " + mode_text(st.st_mode) +
                   "); run chmod go-w on it";
        }
        return {};
    }
}

std::string config_directory_problem(const fs::path &dir, bool read_whole)
{
    char resolved[PATH_MAX];
    if (::realpath(dir.c_str(), resolved) == nullptr) {
        return "cannot resolve " + dir.string() + ": " + std::strerror(errno);
    }
    const fs::path target = resolved;
    std::vector<fs::path> way{target.root_path()};
    for (const fs::path &part : target.relative_path()) {
        way.push_back(way.back() / part);
    }
    for (std::size_t i = 0; i < way.size(); ++i) {
        struct stat st {};
        if (::stat(way[i].c_str(), &st) != 0) {
            return "cannot inspect " + way[i].string() + ": " + std::strerror(errno);
        }
        if ((st.st_mode & S_IWOTH) == 0) {
            continue;
        }
        if (read_whole && i + 1 == way.size()) {
            return way[i].string() + " is writable by every local user (mode " + mode_text(st.st_mode) +
                   "), who could add files the host would read; run chmod o-w on it";
        }
        if ((st.st_mode & S_ISVTX) == 0) {
            return way[i].string() + " is writable by every local user and not sticky (mode " + mode_text(st.st_mode) +
                   "), so any of them could replace the configs below it; run chmod o-w on it";
        }
    }
    return {};
}

} // namespace serpens
