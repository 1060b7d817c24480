// The host's state directory is its alone (core/private_dir.h): a directory
// on the way that another local user owns, or can write to without the
// sticky bit, or a link such a user owns, is refused with its path (and
// nothing is made below it), as is a state directory others can write to;
// the host's own and the usual shared sticky homes (/tmp, /dev/shm) above it
// are not.  A file the host writes by name (a log, stats) is made by the
// host, or must be its user's or root's, not a link another user planted.

#include "core/error.h"
#include "core/private_dir.h"
#include "support.h"

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

using serpens::make_private_directory;
using serpens::private_directory_problem;
using serpens::test::ScratchDir;

namespace {

// A user that is neither root nor this test (nobody's usual uid).
constexpr uid_t other_uid = 65534;

bool can_chown() { return ::geteuid() == 0; }

void set_mode(const std::string &path, mode_t mode) { REQUIRE(::chmod(path.c_str(), mode) == 0); }

} // namespace

TEST_CASE("a state directory the host makes below a sticky shared directory is its alone")
{
    ScratchDir scratch; // mkdtemp: 0700, in /tmp (root's and sticky)
    const std::string dir = scratch / "serpens/host-a";
    make_private_directory(dir, "[host] state_dir");
    struct stat st {};
    REQUIRE(::stat(dir.c_str(), &st) == 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK((st.st_mode & (S_IWGRP | S_IWOTH)) == 0);
    CHECK(private_directory_problem(dir) == "");
    // Again: an existing directory that passes is kept as it is.
    make_private_directory(dir, "[host] state_dir");
    // A shared temporary directory (/tmp, unless TMPDIR says otherwise) is
    // fine above the host's directory, not as it.
    REQUIRE(::stat(scratch.path().parent_path().c_str(), &st) == 0);
    if ((st.st_mode & S_IWOTH) != 0) {
        CHECK(private_directory_problem(scratch.path().parent_path()).find("writable by group or others") !=
              std::string::npos);
    }
}

TEST_CASE("a directory on the way that others may write to without the sticky bit is refused")
{
    ScratchDir scratch;
    const std::string shared = scratch / "shared";
    REQUIRE(::mkdir(shared.c_str(), 0700) == 0);
    set_mode(shared, 0777);
    const std::string dir = shared + "/state";
    try {
        make_private_directory(dir, "[host] state_dir");
        FAIL("accepted a state directory below a world-writable one");
    } catch (const serpens::Error &e) {
        const std::string text = e.what();
        CHECK(text.find("[host] state_dir " + dir) == 0);
        CHECK(text.find(shared + " is writable by group or others and not sticky (mode 777)") != std::string::npos);
    }
    CHECK_FALSE(std::filesystem::exists(dir)); // nothing is made below it
    // Sticky, as /tmp is: then only an entry's owner may move it.
    set_mode(shared, 01777);
    make_private_directory(dir, "[host] state_dir");
    CHECK(private_directory_problem(dir) == "");
    // The state directory itself writable by others: refused even so.
    set_mode(dir, 0777);
    CHECK(private_directory_problem(dir).find(dir + " is writable by group or others (mode 777)") == 0);
}

TEST_CASE("a directory or link on the way that another user owns is refused")
{
    if (!can_chown()) {
        MESSAGE("skipped: making a directory another user's needs root");
        return;
    }
    ScratchDir scratch;
    // As a local user who made /dev/shm/serpens before the host first ran.
    const std::string planted = scratch / "serpens";
    REQUIRE(::mkdir(planted.c_str(), 0755) == 0);
    REQUIRE(::chown(planted.c_str(), other_uid, other_uid) == 0);
    const std::string dir = planted + "/host-a";
    CHECK_THROWS_WITH_AS(make_private_directory(dir, "[host] state_dir"),
                         doctest::Contains((planted + " is a directory owned by uid 65534").c_str()), serpens::Error);

    // A link the host's user owns leads on to a directory that is checked too.
    const std::string mine = scratch / "mine";
    REQUIRE(::mkdir(mine.c_str(), 0750) == 0);
    const std::string link = scratch / "link";
    REQUIRE(::symlink(mine.c_str(), link.c_str()) == 0);
    CHECK(private_directory_problem(link + "/../mine/.") == ""); // ".." from where the link leads
    CHECK(private_directory_problem(link) == "");
    REQUIRE(::chown(mine.c_str(), other_uid, other_uid) == 0);
    CHECK(private_directory_problem(link).find(mine + " is a directory owned by uid 65534") == 0);
    REQUIRE(::chown(mine.c_str(), 0, 0) == 0);

    // A link another user owns: they could point it elsewhere at any time.
    const std::string their_link = scratch / "their-link";
    REQUIRE(::symlink(mine.c_str(), their_link.c_str()) == 0);
    REQUIRE(::lchown(their_link.c_str(), other_uid, other_uid) == 0);
    CHECK(private_directory_problem(their_link).find(their_link + " is a symbolic link owned by uid 65534") == 0);
}

TEST_CASE("a state directory that is a file, or below one, is refused with its path")
{
    ScratchDir scratch;
    const std::string file = scratch.write("file", "x");
    CHECK(private_directory_problem(file) == file + " is not a directory");
    CHECK_THROWS_WITH_AS(
        make_private_directory(file + "/state", "[host] state_dir"),
        doctest::Contains(
            ("[host] state_dir " + file + "/state is not the host's alone: " + file + " is not a directory").c_str()),
        serpens::Error);
}

TEST_CASE(
    "an output file is made by the host, or must be its user's or root's own, in a directory others cannot change")
{
    using serpens::check_output_file;
    ScratchDir scratch;
    // Missing: made now, empty, the host's.
    const std::string log = scratch / "host.log";
    check_output_file(log, "[host] log_file");
    struct stat st {};
    REQUIRE(::lstat(log.c_str(), &st) == 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK(st.st_size == 0);
    CHECK(st.st_uid == ::geteuid());
    // In directories yet to be made, as a log sink makes them.
    check_output_file(scratch / "logs/serpens/host.log", "[host] log_file");
    CHECK(std::filesystem::is_regular_file(scratch / "logs/serpens/host.log"));
    CHECK(private_directory_problem(scratch / "logs/serpens") == "");
    // Existing and the host's own: kept as it is, for appending.
    scratch.write("kept.log", "earlier lines\n");
    check_output_file(scratch / "kept.log", "[host] log_file");
    CHECK(std::filesystem::file_size(scratch / "kept.log") == 14);
    // A link the host's user made: where it leads is that user's choice.
    REQUIRE(::symlink(log.c_str(), (scratch / "mine").c_str()) == 0);
    check_output_file(scratch / "mine", "--stats-json");

    // In a directory others may write to and that is not sticky: refused.
    const std::string shared = scratch / "shared";
    REQUIRE(::mkdir(shared.c_str(), 0700) == 0);
    set_mode(shared, 0777);
    CHECK_THROWS_WITH_AS(check_output_file(shared + "/stats.json", "--stats-json"),
                         doctest::Contains(("--stats-json " + shared + "/stats.json: " + shared +
                                            " is writable by group or others and not sticky")
                                               .c_str()),
                         serpens::Error);
    CHECK_FALSE(std::filesystem::exists(shared + "/stats.json"));

    if (!can_chown()) {
        MESSAGE("skipped: planting another user's link needs root");
        return;
    }
    // As /tmp: sticky, so fine as the way, but another user's link or file
    // planted at the name is refused, and what it leads to left alone.
    set_mode(shared, 01777);
    const std::string victim = scratch.write("victim", "precious\n");
    const std::string planted = shared + "/host.log";
    REQUIRE(::symlink(victim.c_str(), planted.c_str()) == 0);
    REQUIRE(::lchown(planted.c_str(), other_uid, other_uid) == 0);
    CHECK_THROWS_WITH_AS(
        check_output_file(planted, "[host] log_file"),
        doctest::Contains(("[host] log_file " + planted +
                           ": it is a symbolic link owned by uid 65534, neither root nor this host's uid")
                              .c_str()),
        serpens::Error);
    const std::string their_file = shared + "/stats.json";
    std::ofstream(their_file) << "";
    REQUIRE(::chown(their_file.c_str(), other_uid, other_uid) == 0);
    CHECK_THROWS_WITH_AS(check_output_file(their_file, "--stats-json"),
                         doctest::Contains("it is a file owned by uid 65534"), serpens::Error);
    CHECK(std::filesystem::file_size(victim) == 9);
}

TEST_CASE("a config directory others could add to or replace configs in is refused; an operator's own is not")
{
    using serpens::config_directory_problem;
    ScratchDir scratch;
    const std::string conf = scratch / "conf";
    const std::string chains = conf + "/chains";
    REQUIRE(::mkdir(conf.c_str(), 0700) == 0);
    REQUIRE(::mkdir(chains.c_str(), 0700) == 0);
    set_mode(conf, 0775); // a group's is the operator's choice
    set_mode(chains, 0755);
    CHECK(config_directory_problem(conf, false) == "");
    CHECK(config_directory_problem(chains, true) == "");
    if (can_chown()) {
        // Owners are not checked: `sudo serpens-host -c ~/host.toml` works.
        REQUIRE(::chown(chains.c_str(), other_uid, other_uid) == 0);
        CHECK(config_directory_problem(chains, true) == "");
    }

    // Sticky, as /tmp: no one can replace another's file, but anyone can add one.
    set_mode(chains, 01777);
    CHECK(config_directory_problem(chains, false) == "");
    const std::string added = config_directory_problem(chains, true);
    CHECK(added.find(chains + " is writable by every local user (mode 1777), who could add files") !=
          std::string::npos);

    // Not sticky: anyone can replace host.toml there, and the chains below.
    set_mode(chains, 0755);
    set_mode(conf, 0777);
    const std::string host_dir = config_directory_problem(conf, false);
    CHECK(host_dir.find(conf + " is writable by every local user and not sticky (mode 777)") != std::string::npos);
    CHECK(config_directory_problem(chains, true).find(conf + " is writable by every local user and not sticky") !=
          std::string::npos);
    // Through a link, the directory it leads to is the one judged.
    const std::string link = scratch / "conf-link";
    REQUIRE(::symlink(chains.c_str(), link.c_str()) == 0);
    CHECK(config_directory_problem(link, true).find(conf + " is writable") != std::string::npos);
    set_mode(conf, 0755);
    CHECK(config_directory_problem(link, true) == "");

    CHECK(config_directory_problem(scratch / "missing", false).find("cannot resolve") != std::string::npos);
}
