// The control server against hostile and careless clients: gone before the
// reply, 10 MB lines, 500 idle connections, one byte at a time, a weak umask,
// a path that is not its socket, and a peer SO_PEERCRED must refuse.

#include "control/server.h"

#include <nlohmann/json.hpp>
#include "core/error.h"
#include "support.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <iterator>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace serpens;
using Clock = std::chrono::steady_clock;

namespace {

constexpr gid_t kNobody = 65534;
constexpr gid_t kOtherGroup = 65533; // any gid the test user is not in

long long ms_since(Clock::time_point t0)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

// A handler that answers "pong", echoes everything else, and counts its calls.
struct EchoHandler {
    std::atomic<int> calls{0};
    ControlServer::Handler handler()
    {
        return [this](std::string_view line, const ControlPeer &) {
            ++calls;
            return line == "ping" ? std::string("pong") : "echo " + std::string(line);
        };
    }
};

// The error code of a reply line ("too_large", ...), or "" when it is none.
std::string error_code(std::string reply)
{
    if (!reply.empty() && reply.back() == '\n') {
        reply.pop_back();
    }
    const auto j = nlohmann::json::parse(reply, nullptr, false);
    if (!j.is_object() || !j.contains("error") || !j["error"].is_object()) {
        return "";
    }
    return j["error"].value("code", "");
}

ControlServerOptions options_at(const std::string &path)
{
    ControlServerOptions options;
    options.path = path;
    return options;
}

int connect_to(const std::string &path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    if (fd < 0 || connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0) {
        int err = errno;
        if (fd >= 0) {
            close(fd);
        }
        FAIL("cannot connect to ", path, ": ", std::strerror(err));
        return -1;
    }
    return fd;
}

// Everything the server sends until it closes, or until timeout_ms passed
// (closed = false then).
struct Received {
    std::string data;
    bool closed = false;
};

Received read_until_close(int fd, int timeout_ms)
{
    Received r;
    Clock::time_point end = Clock::now() + std::chrono::milliseconds(timeout_ms);
    char buf[4096];
    for (;;) {
        int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
        pollfd p{fd, POLLIN, 0};
        if (left < 0 || poll(&p, 1, left) <= 0) {
            return r;
        }
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
            r.closed = true; // EOF, or ECONNRESET when our request was left unread
            return r;
        }
        r.data.append(buf, static_cast<std::size_t>(n));
    }
}

mode_t mode_of(const std::string &path)
{
    struct stat st {};
    REQUIRE(lstat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

std::string content_of(const std::string &path)
{
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// Restores the umask when the test ends, however it ends.
struct UmaskGuard {
    mode_t old;
    explicit UmaskGuard(mode_t mask) : old(umask(mask)) {}
    ~UmaskGuard() { umask(old); }
};

} // namespace

TEST_CASE("a client gone before its reply does not kill the server (no SIGPIPE)")
{
    test::ScratchDir dir;
    std::promise<void> client_closed;
    std::shared_future<void> closed = client_closed.get_future().share();
    std::atomic<bool> replied_to_gone{false};
    ControlServer server(options_at(dir / "ctl.sock"), [&](std::string_view line, const ControlPeer &) {
        if (line == "wait") {
            closed.wait(); // the reply is written only after the client closed
            replied_to_gone = true;
        }
        return std::string(line == "ping" ? "pong" : "a reply nobody reads");
    });
    for (int i = 0; i < 3; ++i) {
        int fd = connect_to(server.path());
        REQUIRE(send(fd, "wait\n", 5, MSG_NOSIGNAL) == 5);
        close(fd);
        if (i == 0) {
            client_closed.set_value();
        }
    }
    CHECK(control_request(server.path(), "ping", 2000) == "pong");
    CHECK(replied_to_gone.load());
}

TEST_CASE("a 10 MB request line is refused and the server answers the next ping")
{
    test::ScratchDir dir;
    EchoHandler echo;
    ControlServer server(options_at(dir / "ctl.sock"), echo.handler());
    int fd = connect_to(server.path());
    std::thread sender([fd] {
        std::string chunk(1 << 20, 'x');
        for (int mb = 0; mb < 10; ++mb) {
            std::size_t done = 0;
            while (done < chunk.size()) {
                ssize_t n = send(fd, chunk.data() + done, chunk.size() - done, MSG_NOSIGNAL);
                if (n <= 0) {
                    return; // the server closed: EPIPE or ECONNRESET
                }
                done += static_cast<std::size_t>(n);
            }
        }
    });
    Received r = read_until_close(fd, 3000);
    sender.join();
    close(fd);
    CHECK(r.closed);
    CHECK((r.data.empty() || error_code(r.data) == "too_large"));
    CHECK(echo.calls.load() == 0);
    CHECK(control_request(server.path(), "ping", 2000) == "pong");
}

TEST_CASE("a line of exactly max_request bytes is served; one byte more is refused")
{
    test::ScratchDir dir;
    EchoHandler echo;
    ControlServerOptions options = options_at(dir / "ctl.sock");
    options.max_request = 100;
    ControlServer server(std::move(options), echo.handler());
    CHECK(control_request(server.path(), std::string(100, 'a'), 2000) == "echo " + std::string(100, 'a'));
    const std::string reply = control_request(server.path(), std::string(101, 'a'), 2000);
    CHECK(error_code(reply) == "too_large");
    CHECK(reply.find("request longer than 100 bytes") != std::string::npos);
}

TEST_CASE("500 idle connections neither fill the backlog nor delay a prompt client")
{
    test::ScratchDir dir;
    EchoHandler echo;
    ControlServer server(options_at(dir / "ctl.sock"), echo.handler()); // 256 slots, 2 s deadline
    std::vector<int> idle;
    Clock::time_point t0 = Clock::now();
    for (int i = 0; i < 500; ++i) {
        idle.push_back(connect_to(server.path()));
    }
    Clock::time_point asked = Clock::now();
    CHECK(control_request(server.path(), "ping", 2000) == "pong");
    CHECK(ms_since(asked) < 500);
    // The server keeps at most its 256 slots; the rest were let go at once.
    int closed_early = 0;
    for (int fd : idle) {
        closed_early += read_until_close(fd, 0).closed ? 1 : 0;
    }
    CHECK(closed_early >= 500 - 256);
    CHECK(ms_since(t0) < 1500); // all of the above well before any deadline
    // And at their deadline every idle connection is closed.
    for (int fd : idle) {
        CHECK(read_until_close(fd, 3000).closed);
        close(fd);
    }
    CHECK(echo.calls.load() == 1);
}

TEST_CASE("a client dripping one byte at a time is closed at its deadline and blocks no one")
{
    test::ScratchDir dir;
    EchoHandler echo;
    ControlServerOptions options = options_at(dir / "ctl.sock");
    options.deadline = std::chrono::milliseconds(1000);
    ControlServer server(std::move(options), echo.handler());
    std::promise<long long> closed_after;
    std::promise<std::string> said;
    std::thread drip([&] {
        int fd = connect_to(server.path());
        Clock::time_point t0 = Clock::now();
        std::string got;
        while (ms_since(t0) < 4000) {
            if (send(fd, "p", 1, MSG_NOSIGNAL) != 1) {
                break;
            }
            Received r = read_until_close(fd, 300);
            got += r.data;
            if (r.closed) {
                break;
            }
        }
        closed_after.set_value(ms_since(t0));
        said.set_value(got);
        close(fd);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    for (int i = 0; i < 3; ++i) {
        Clock::time_point asked = Clock::now();
        CHECK(control_request(server.path(), "ping", 2000) == "pong");
        CHECK(ms_since(asked) < 200);
    }
    long long after = closed_after.get_future().get();
    drip.join();
    CHECK(after >= 900);
    CHECK(after < 1800);
    const std::string why = said.get_future().get();
    CHECK(error_code(why) == "timeout");
    CHECK(why.find("no complete request within 1000 ms") != std::string::npos);
    CHECK(echo.calls.load() == 3);
}

TEST_CASE("the socket is 0600 and its new directory 0700 whatever the umask")
{
    test::ScratchDir dir;
    UmaskGuard permissive(0);
    EchoHandler echo;
    {
        ControlServer server(options_at(dir / "run/serpens/ctl.sock"), echo.handler());
        CHECK(mode_of(server.path()) == 0600);
        CHECK(mode_of(dir / "run/serpens") == 0700);
        CHECK(mode_of(dir / "run") == 0700);
        CHECK(control_request(server.path(), "ping", 2000) == "pong");
    }
    CHECK_FALSE(std::filesystem::exists(dir / "run/serpens/ctl.sock")); // removed at exit
    CHECK(std::filesystem::is_empty(dir / "run/serpens"));              // no temporary left behind

    SUBCASE("0660 and the group's with a control group")
    {
        // Root may give the socket any group; others only one of their own.
        gid_t group = geteuid() == 0 ? kOtherGroup : getegid();
        ControlServerOptions options = options_at(dir / "grp/ctl.sock");
        options.group = group;
        ControlServer server(std::move(options), echo.handler());
        CHECK(mode_of(server.path()) == 0660);
        CHECK(mode_of(dir / "grp") == 0750);
        struct stat st {};
        REQUIRE(stat(server.path().c_str(), &st) == 0);
        CHECK(st.st_gid == group);
    }
}

TEST_CASE("a path that is not a socket is refused and left intact")
{
    test::ScratchDir dir;
    EchoHandler echo;
    SUBCASE("a regular file")
    {
        std::string file = dir.write("precious.txt", "do not delete me\n");
        try {
            ControlServer server(options_at(file), echo.handler());
            FAIL("a regular file was taken as the control socket");
        } catch (const Error &e) {
            CHECK(std::string(e.what()).find(file) != std::string::npos);
            CHECK(std::string(e.what()).find("is not a socket") != std::string::npos);
        }
        CHECK(content_of(file) == "do not delete me\n");
    }
    SUBCASE("a symbolic link, even to a socket path")
    {
        std::string target = dir.write("target.txt", "kept\n");
        std::filesystem::create_symlink(target, dir / "link.sock");
        CHECK_THROWS_WITH_AS(ControlServer(options_at(dir / "link.sock"), echo.handler()),
                             doctest::Contains("a symbolic link"), Error);
        CHECK(std::filesystem::is_symlink(dir / "link.sock"));
        CHECK(content_of(target) == "kept\n");
    }
    SUBCASE("a directory")
    {
        std::filesystem::create_directory(dir / "ctl.sock");
        CHECK_THROWS_AS(ControlServer(options_at(dir / "ctl.sock"), echo.handler()), Error);
        CHECK(std::filesystem::is_directory(dir / "ctl.sock"));
    }
}

TEST_CASE("a socket directory that others may write to without the sticky bit is refused")
{
    // There another user could swap the socket, or its temporary name for a
    // link the server's chmod would follow to a file of the system's.
    test::ScratchDir dir;
    EchoHandler echo;
    const std::string shared = dir / "shared";
    REQUIRE(mkdir(shared.c_str(), 0700) == 0);
    REQUIRE(chmod(shared.c_str(), 0777) == 0);
    CHECK_THROWS_WITH_AS(ControlServer(options_at(shared + "/ctl.sock"), echo.handler()),
                         doctest::Contains(("control socket " + shared + "/ctl.sock: " + shared +
                                            " is writable by group or others and not sticky")
                                               .c_str()),
                         Error);
    CHECK(std::filesystem::is_empty(shared));
    // Sticky, as /tmp is: only the socket's owner may move it.
    REQUIRE(chmod(shared.c_str(), 01777) == 0);
    ControlServer server(options_at(shared + "/ctl.sock"), echo.handler());
    CHECK(control_request(server.path(), "ping", 2000) == "pong");
}

TEST_CASE("a stale socket is replaced; a live one is refused")
{
    test::ScratchDir dir;
    EchoHandler echo;
    std::string path = dir / "ctl.sock";
    SUBCASE("stale: bound, then its process closed it without removing it")
    {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
        REQUIRE(bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0);
        close(fd);
        REQUIRE(std::filesystem::is_socket(path));
        ControlServer server(options_at(path), echo.handler());
        CHECK(control_request(path, "ping", 2000) == "pong");
    }
    SUBCASE("live: another server answers there")
    {
        ControlServer first(options_at(path), echo.handler());
        CHECK_THROWS_WITH_AS(ControlServer(options_at(path), echo.handler()), doctest::Contains("in use"), Error);
        CHECK(control_request(path, "ping", 2000) == "pong");
    }
    SUBCASE("another user's: named as such, neither probed nor removed")
    {
        if (geteuid() != 0) {
            return; // only root can give the socket away
        }
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
        REQUIRE(bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0);
        REQUIRE(listen(fd, 1) == 0);
        REQUIRE(chown(path.c_str(), 65534, 65534) == 0);
        CHECK_THROWS_WITH_AS(ControlServer(options_at(path), echo.handler()),
                             doctest::Contains("is a socket owned by uid 65534"), Error);
        CHECK(std::filesystem::is_socket(path));
        close(fd);
    }
}

namespace {

// Runs `command` from a child process with the given credentials; returns the
// reply, or "refused: <why>" when the connection itself failed.
std::string request_as(const std::string &path, uid_t uid, gid_t gid, std::vector<gid_t> groups,
                       const std::string &command)
{
    int out[2];
    REQUIRE(pipe(out) == 0);
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        close(out[0]);
        std::string reply;
        if (setgroups(groups.size(), groups.data()) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
            reply = "refused: cannot drop privileges";
        } else {
            try {
                reply = control_request(path, command, 2000);
            } catch (const std::exception &e) {
                reply = std::string("refused: ") + e.what();
            }
        }
        ssize_t ignored = write(out[1], reply.data(), reply.size());
        (void)ignored;
        _exit(0);
    }
    close(out[1]);
    std::string reply;
    char buf[512];
    ssize_t n = 0;
    while ((n = read(out[0], buf, sizeof buf)) > 0) {
        reply.append(buf, static_cast<std::size_t>(n));
    }
    close(out[0]);
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status));
    return reply;
}

} // namespace

TEST_CASE("SO_PEERCRED: a peer that is not root, the host's user or in its group is refused")
{
    if (geteuid() != 0) {
        MESSAGE("skipped: switching to uid 65534 needs root");
        return;
    }
    test::ScratchDir dir;
    std::filesystem::permissions(dir.path(), std::filesystem::perms(0711)); // let nobody reach the socket
    EchoHandler echo;
    ControlServerOptions options = options_at(dir / "ctl.sock");
    options.group = kOtherGroup;
    ControlServer server(std::move(options), echo.handler());

    SUBCASE("the file mode alone keeps nobody out")
    {
        std::string reply = request_as(server.path(), kNobody, kNobody, {}, "set wake_threshold 7");
        CHECK(reply.find("refused: cannot reach serpens-host") == 0);
        CHECK(reply.find("Permission denied") != std::string::npos);
    }
    SUBCASE("with the mode loosened, SO_PEERCRED still refuses")
    {
        REQUIRE(chmod(server.path().c_str(), 0666) == 0);
        CHECK(error_code(request_as(server.path(), kNobody, kNobody, {}, "set wake_threshold 7")) ==
              "permission_denied");
        CHECK(error_code(request_as(server.path(), kNobody, kNobody, {}, "ping")) == "permission_denied");
        CHECK(echo.calls.load() == 0);
    }
    SUBCASE("members of the control group are served, by primary or supplementary group")
    {
        CHECK(request_as(server.path(), kNobody, kOtherGroup, {}, "set wake_threshold 7") ==
              "echo set wake_threshold 7");
        CHECK(request_as(server.path(), kNobody, kNobody, {kOtherGroup}, "ping") == "pong");
        CHECK(echo.calls.load() == 2);
    }
    CHECK(control_request(server.path(), "ping", 2000) == "pong"); // root still is
}

TEST_CASE("control_request: a socket served by another user is told nothing, unless that is the host's uid")
{
    if (geteuid() != 0) {
        MESSAGE("skipped: serving a socket as uid 65534 needs root");
        return;
    }
    test::ScratchDir dir;
    std::filesystem::permissions(dir.path(), std::filesystem::perms(0711));
    const std::string theirs = dir / "theirs"; // a directory nobody may write to
    std::filesystem::create_directory(theirs);
    REQUIRE(chown(theirs.c_str(), kNobody, kNobody) == 0);
    const std::string path = theirs + "/impostor.sock";
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    // The impostor: another local user's process at the path.  Its exit
    // status is how many bytes the first client sent it (want 0).
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        close(ready[0]);
        if (setgid(kNobody) != 0 || setuid(kNobody) != 0) {
            _exit(100);
        }
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
        if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 || listen(fd, 4) != 0 ||
            write(ready[1], "r", 1) != 1) {
            _exit(101);
        }
        int told = 0;
        for (int round = 0; round < 2; ++round) {
            int c = accept(fd, nullptr, nullptr);
            Received got = read_until_close(c, 5000);
            if (round == 0) {
                told = static_cast<int>(got.data.size());
            } else if (got.data == "ping\n") {
                (void)!write(c, "pong\n", 5);
            }
            close(c);
        }
        _exit(std::min(told, 99));
    }
    close(ready[1]);
    char byte = 0;
    REQUIRE(read(ready[0], &byte, 1) == 1);
    close(ready[0]);
    const std::string refusal = "is served by uid 65534 (pid " + std::to_string(child) +
                                "), neither root nor you (uid 0): not a host of yours, so nothing was sent";
    CHECK_THROWS_WITH_AS(control_request(path, "ping", 5000), doctest::Contains(refusal.c_str()), Error);
    CHECK(control_request(path, "ping", 5000, kNobody) == "pong"); // --host-uid 65534
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("control_request: bounded by its timeout, never hangs on a silent host")
{
    test::ScratchDir dir;
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    ControlServer server(options_at(dir / "ctl.sock"), [&](std::string_view, const ControlPeer &) {
        released.wait();
        return std::string("late");
    });
    Clock::time_point t0 = Clock::now();
    CHECK_THROWS_WITH_AS(control_request(server.path(), "ping", 300), doctest::Contains("did not answer within 300 ms"),
                         Error);
    CHECK(ms_since(t0) < 1000);
    release.set_value();
    CHECK_THROWS_WITH_AS(control_request(dir / "nothing.sock", "ping", 300),
                         doctest::Contains("cannot reach serpens-host"), Error);
}
