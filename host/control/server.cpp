#include "control/server.h"

#include "control/protocol.h"

#include "core/error.h"
#include "core/private_dir.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <poll.h>
#include <sstream>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace serpens {

using Clock = std::chrono::steady_clock;

struct ControlServer::Connection {
    int fd = -1;
    ControlPeer peer;
    bool allowed = false;
    Clock::time_point deadline;
    std::string in;  // bytes of the request line received so far
    std::string out; // the reply, once known
    std::size_t sent = 0;
    // reading -> replying -> draining: after its reply the connection reads
    // and discards until the client closes, because closing with unread
    // input would reset the connection and lose the reply (an over-long
    // request is the usual case).
    enum class Phase { reading, replying, draining };
    Phase phase = Phase::reading;
};

namespace {

constexpr std::size_t kMaxReply = 16u << 20;

std::string errno_text(int err) { return std::strerror(err); }

sockaddr_un address_of(const std::string &path)
{
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
        throw Error("control socket path is too long or empty (" + std::to_string(path.size()) + " bytes, at most " +
                    std::to_string(sizeof(addr.sun_path) - 1) + "): " + path);
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    return addr;
}

int remaining_ms(Clock::time_point deadline)
{
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return static_cast<int>(std::clamp<long long>(left, 0, 1 << 30));
}

// Creates the missing directories above the socket, 0700 (0750 and owned by
// the group when there is one) whatever the umask.  Existing ones are left
// as they are: they may be shared, like /tmp.
void make_parent_directories(const std::filesystem::path &dir, std::optional<gid_t> group)
{
    if (dir.empty()) {
        return;
    }
    struct stat st {};
    if (lstat(dir.c_str(), &st) == 0) {
        return;
    }
    make_parent_directories(dir.parent_path(), group);
    const mode_t mode = group ? 0750 : 0700;
    if (mkdir(dir.c_str(), mode) != 0) {
        if (errno == EEXIST) {
            return; // made by someone else meanwhile; not ours to change
        }
        throw Error("cannot create the control socket's directory " + dir.string() + ": " + errno_text(errno));
    }
    if (chmod(dir.c_str(), mode) != 0 || (group && lchown(dir.c_str(), static_cast<uid_t>(-1), *group) != 0)) {
        throw Error("cannot set the mode or group of the control socket's directory " + dir.string() + ": " +
                    errno_text(errno));
    }
}

// Makes room for the socket at `path`: nothing there, or a socket nobody
// listens on any more (its host died).  Everything else is refused and kept.
void clear_stale_socket(const std::string &path)
{
    struct stat st {};
    if (lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) {
            return;
        }
        throw Error("cannot inspect control socket path " + path + ": " + errno_text(errno));
    }
    if (!S_ISSOCK(st.st_mode)) {
        const char *what = S_ISREG(st.st_mode)   ? "a regular file"
                           : S_ISLNK(st.st_mode) ? "a symbolic link"
                           : S_ISDIR(st.st_mode) ? "a directory"
                                                 : "not a socket";
        throw Error("control socket path " + path + " exists and is not a socket (" + what +
                    "); refusing to replace it: remove it or set [host] control_socket to another path");
    }
    if (!owned_by_host_user(st.st_uid)) {
        // Another user's socket: whoever listens there is not a serpens-host
        // of ours, and it is not ours to remove.
        throw Error("control socket path " + path + " is a socket " + foreign_owner_text(st.st_uid) +
                    "; refusing to use or replace it: remove it or set [host] control_socket to another path");
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        throw Error("cannot create a socket to probe " + path + ": " + errno_text(errno));
    }
    sockaddr_un addr = address_of(path);
    int rc = connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr);
    int err = errno;
    close(fd);
    if (rc == 0 || err == EAGAIN || err == EINPROGRESS) {
        throw Error("control socket " + path +
                    " is in use by a running serpens-host; give this host "
                    "another [host] id or control_socket");
    }
    if (err != ECONNREFUSED) {
        throw Error("control socket " + path + " exists and cannot be probed (" + errno_text(err) +
                    "); refusing to replace it");
    }
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
        throw Error("cannot remove the stale control socket " + path + ": " + errno_text(errno));
    }
    spdlog::info("removed stale control socket {} (no host listened on it)", path);
}

// Is `group` among the supplementary groups of process `pid`?  Reads the
// "Groups:" line of /proc/<pid>/status (racy with pid reuse, but only ever
// widens access to what the file mode already allowed).
bool supplementary_member(pid_t pid, gid_t group)
{
    if (pid <= 0) {
        return false;
    }
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("Groups:", 0) == 0) {
            std::istringstream ids(line.substr(7));
            unsigned long id = 0;
            while (ids >> id) {
                if (id == group) {
                    return true;
                }
            }
            return false;
        }
    }
    return false;
}

} // namespace

ControlServer::ControlServer(ControlServerOptions options, Handler handler)
    : _options(std::move(options)), _handler(std::move(handler)), _euid(geteuid())
{
    const std::string &path = _options.path;
    if (_options.max_request == 0 || _options.max_connections == 0 || _options.deadline.count() <= 0) {
        throw Error("control socket " + path + ": max_request, max_connections and deadline must be positive");
    }
    address_of(path); // refuses a path that cannot be bound before touching anything
    const std::filesystem::path fs_path(path);
    make_parent_directories(fs_path.parent_path(), _options.group);
    // Where no other user can swap the socket, or the temporary name below
    // for a link the chmod would follow (core/private_dir.h).
    if (std::string why = directory_way_problem(fs_path.has_parent_path() ? fs_path.parent_path() : ".");
        !why.empty()) {
        throw Error("control socket " + path + ": " + why + "; put it elsewhere");
    }
    clear_stale_socket(path);

    // Bound under a temporary name, given its mode, then published: the
    // socket never exists at `path` with the umask's mode, and link() will
    // not replace a socket another host published meanwhile.
    const std::string temp =
        (fs_path.parent_path() / ("." + fs_path.filename().string() + "." + std::to_string(getpid()) + ".tmp"))
            .string();
    sockaddr_un temp_addr = address_of(temp);
    _listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (_listen_fd < 0) {
        throw Error("cannot create the control socket " + path + ": " + errno_text(errno));
    }
    auto fail = [&](const std::string &what, int err) {
        close(_listen_fd);
        unlink(temp.c_str());
        throw Error(what + ": " + errno_text(err));
    };
    unlink(temp.c_str()); // a leftover of a previous host with our pid
    if (bind(_listen_fd, reinterpret_cast<sockaddr *>(&temp_addr), sizeof temp_addr) != 0) {
        int err = errno;
        close(_listen_fd);
        throw Error("cannot bind the control socket " + temp + ": " + errno_text(err));
    }
    const mode_t mode = _options.group ? 0660 : 0600;
    if (chmod(temp.c_str(), mode) != 0) {
        int err = errno; // before building the message can change it
        fail("cannot set the mode of the control socket " + temp, err);
    }
    if (_options.group && lchown(temp.c_str(), static_cast<uid_t>(-1), *_options.group) != 0) {
        int err = errno; // before building the message can change it
        fail("cannot give the control socket " + temp + " to group " + std::to_string(*_options.group), err);
    }
    struct stat st {};
    if (lstat(temp.c_str(), &st) != 0) {
        int err = errno; // before building the message can change it
        fail("cannot inspect the control socket " + temp, err);
    }
    _dev = st.st_dev;
    _ino = st.st_ino;
    if (listen(_listen_fd, _options.backlog) != 0) {
        int err = errno; // before building the message can change it
        fail("cannot listen on the control socket " + temp, err);
    }
    if (link(temp.c_str(), path.c_str()) != 0) {
        int err = errno;
        if (err == EEXIST) {
            fail("control socket " + path +
                     " appeared while this host started (another host with the same "
                     "[host] id or control_socket?)",
                 err);
        }
        // A filesystem without hard links: rename is atomic too, only not
        // exclusive.
        if (rename(temp.c_str(), path.c_str()) != 0) {
            int rename_err = errno; // before building the message can change it
            fail("cannot publish the control socket at " + path, rename_err);
        }
    } else {
        unlink(temp.c_str());
    }

    auto unpublish = [&] {
        close(_listen_fd);
        unlink(path.c_str());
        if (_wake_fd >= 0) {
            close(_wake_fd);
        }
    };
    _wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (_wake_fd < 0) {
        int err = errno;
        unpublish();
        throw Error("cannot create the control thread's eventfd: " + errno_text(err));
    }
    _connections.reserve(_options.max_connections);
    int rc = _options.start_thread ? _options.start_thread(&_thread, &ControlServer::thread_main, this)
                                   : pthread_create(&_thread, nullptr, &ControlServer::thread_main, this);
    if (rc != 0) {
        unpublish();
        throw Error("cannot start the control thread for " + path + ": " + errno_text(rc < 0 ? -rc : rc));
    }
    _thread_started = true;
    spdlog::info("control socket {} (mode {:o}{})", path, mode,
                 _options.group ? ", group " + std::to_string(*_options.group) : std::string());
}

ControlServer::~ControlServer()
{
    if (_thread_started) {
        uint64_t one = 1;
        if (write(_wake_fd, &one, sizeof one) != static_cast<ssize_t>(sizeof one)) {
            spdlog::warn("cannot wake the control thread to stop it: {}", errno_text(errno));
        }
        pthread_join(_thread, nullptr);
    }
    for (Connection &c : _connections) {
        close(c.fd);
    }
    close(_listen_fd);
    close(_wake_fd);
    // Remove the socket only if it is still the one this server published.
    struct stat st {};
    if (lstat(_options.path.c_str(), &st) == 0 && st.st_dev == _dev && st.st_ino == _ino) {
        unlink(_options.path.c_str());
    }
}

void *ControlServer::thread_main(void *self)
{
    static_cast<ControlServer *>(self)->serve();
    return nullptr;
}

bool ControlServer::peer_allowed(const ControlPeer &peer) const
{
    if (peer.uid == 0 || peer.uid == _euid) {
        return true;
    }
    return _options.group && (peer.gid == *_options.group || supplementary_member(peer.pid, *_options.group));
}

void ControlServer::accept_new(Clock::time_point now)
{
    // Bounded per round so a flood of connects cannot starve the table.
    for (int round = 0; round < 64; ++round) {
        int fd = accept4(_listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (accept_must_pause(errno)) {
                spdlog::warn("control socket {}: cannot accept ({}); pausing accepts for {} ms", _options.path,
                             errno_text(errno), accept_pause.count());
                _accept_paused_until = now + accept_pause;
            }
            return; // EAGAIN, or a connection that went away before accept
        }
        if (_connections.size() >= _options.max_connections && !evict_oldest_waiting()) {
            close(fd); // every slot is draining a reply: this client sees EOF at once
            continue;
        }
        Connection c;
        c.fd = fd;
        c.deadline = now + _options.deadline;
        ucred cred{};
        socklen_t len = sizeof cred;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
            c.peer = ControlPeer{cred.pid, cred.uid, cred.gid};
            c.allowed = peer_allowed(c.peer);
        } // else: unknown peer, not allowed
        _connections.push_back(std::move(c));
    }
}

bool ControlServer::evict_oldest_waiting()
{
    // The oldest connection not sending a reply (still short of its request
    // line, or draining) gives way: a flood of idle connections then only
    // ever holds the newest slots, and a client that sends its line at once
    // is served before the flood reaches it.
    auto oldest = _connections.end();
    for (auto it = _connections.begin(); it != _connections.end(); ++it) {
        if (it->phase != Connection::Phase::replying &&
            (oldest == _connections.end() || it->deadline < oldest->deadline)) {
            oldest = it;
        }
    }
    if (oldest == _connections.end()) {
        return false;
    }
    close(oldest->fd);
    if (oldest != _connections.end() - 1) {
        *oldest = std::move(_connections.back());
    }
    _connections.pop_back();
    return true;
}

void ControlServer::reply(Connection &c, std::string text)
{
    c.out = std::move(text);
    c.out += '\n';
    c.sent = 0;
    c.phase = Connection::Phase::replying;
    c.in.clear();
    c.in.shrink_to_fit();
}

bool ControlServer::on_readable(Connection &c)
{
    char buf[4096];
    if (c.phase == Connection::Phase::draining) {
        for (;;) {
            ssize_t n = recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n < 0) {
                return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
            }
            if (n == 0) {
                return false; // the client has read its reply and closed
            }
        }
    }
    for (;;) {
        // Never read more than one byte past the limit: that byte is enough
        // to know the line is too long.
        std::size_t room = std::min(sizeof buf, _options.max_request + 1 - c.in.size());
        ssize_t n = recv(c.fd, buf, room, MSG_DONTWAIT);
        if (n < 0) {
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        }
        bool eof = n == 0;
        std::size_t scan_from = c.in.size();
        c.in.append(buf, static_cast<std::size_t>(n));
        std::size_t newline = c.in.find('\n', scan_from);
        if (newline == std::string::npos && eof && !c.in.empty()) {
            newline = c.in.size(); // a last line without newline still counts
        }
        if (newline != std::string::npos && newline <= _options.max_request) {
            std::string_view line(c.in.data(), newline);
            if (!line.empty() && line.back() == '\r') {
                line.remove_suffix(1);
            }
            std::string answer;
            if (!c.allowed) {
                answer = control_error_reply(ControlErrorCode::permission_denied,
                                             "permission denied (uid " + std::to_string(c.peer.uid) +
                                                 " is neither root, the host's user nor in its control group)");
            } else {
                try {
                    answer = _handler(line, c.peer);
                } catch (const std::exception &e) {
                    answer = control_error_reply(ControlErrorCode::internal, e.what());
                }
            }
            reply(c, std::move(answer));
            return on_writable(c);
        }
        if (c.in.size() > _options.max_request) {
            reply(c, control_error_reply(ControlErrorCode::too_large,
                                         "request longer than " + std::to_string(_options.max_request) + " bytes"));
            return on_writable(c);
        }
        if (eof) {
            return false; // nothing asked
        }
    }
}

bool ControlServer::on_writable(Connection &c)
{
    while (c.sent < c.out.size()) {
        // MSG_NOSIGNAL: a client gone before its reply is an EPIPE, never a
        // SIGPIPE that would kill the host.
        ssize_t n = send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        }
        c.sent += static_cast<std::size_t>(n);
    }
    // All sent: one request per connection.  The client sees EOF after the
    // reply; whatever it still sends is read and dropped until it closes.
    shutdown(c.fd, SHUT_WR);
    c.phase = Connection::Phase::draining;
    c.out.clear();
    c.out.shrink_to_fit();
    return true;
}

void ControlServer::serve()
{
    std::vector<pollfd> fds;
    fds.reserve(_options.max_connections + 2);
    for (;;) {
        Clock::time_point now = Clock::now();
        fds.clear();
        fds.push_back({_wake_fd, POLLIN, 0});
        bool accepting = now >= _accept_paused_until;
        fds.push_back({accepting ? _listen_fd : -1, POLLIN, 0});
        Clock::time_point next_deadline = accepting ? Clock::time_point::max() : _accept_paused_until;
        for (const Connection &c : _connections) {
            fds.push_back({c.fd, static_cast<short>(c.phase == Connection::Phase::replying ? POLLOUT : POLLIN), 0});
            next_deadline = std::min(next_deadline, c.deadline);
        }
        int timeout = next_deadline == Clock::time_point::max() ? -1 : remaining_ms(next_deadline);
        int ready = poll(fds.data(), fds.size(), timeout);
        if (ready < 0 && errno != EINTR) {
            spdlog::error("control socket {}: poll failed ({}); control stops", _options.path, errno_text(errno));
            return;
        }
        if (fds[0].revents != 0) {
            return; // the destructor asks us to stop
        }
        now = Clock::now();
        // Walk the connections polled this round (accept_new appends after them).
        std::size_t polled = _connections.size();
        std::vector<bool> done(polled, false);
        for (std::size_t i = 0; i < polled; ++i) {
            Connection &c = _connections[i];
            short revents = ready > 0 ? fds[i + 2].revents : 0;
            bool keep = true;
            if (revents & POLLNVAL) {
                keep = false;
            } else if (revents != 0) {
                keep = c.phase == Connection::Phase::replying ? on_writable(c) : on_readable(c);
            }
            if (keep && now >= c.deadline) {
                if (c.phase == Connection::Phase::reading) {
                    // Best effort, never waits: say why before closing.
                    std::string why = control_error_reply(ControlErrorCode::timeout,
                                                          "no complete request within " +
                                                              std::to_string(_options.deadline.count()) + " ms") +
                                      "\n";
                    (void)send(c.fd, why.data(), why.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
                }
                spdlog::debug("control socket {}: closing a connection from pid {} at its deadline", _options.path,
                              c.peer.pid);
                keep = false;
            }
            done[i] = !keep;
        }
        std::size_t kept = 0;
        for (std::size_t i = 0; i < _connections.size(); ++i) {
            if (i < polled && done[i]) {
                close(_connections[i].fd);
                continue;
            }
            if (kept != i) {
                _connections[kept] = std::move(_connections[i]);
            }
            ++kept;
        }
        _connections.resize(kept);
        if (accepting && (fds[1].revents & POLLIN)) {
            accept_new(now);
        }
    }
}

std::string control_request(const std::string &path, const std::string &command, int timeout_ms,
                            std::optional<uid_t> host_uid)
{
    if (command.find('\n') != std::string::npos) {
        throw Error("a control command is one line; this one holds a newline");
    }
    const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    sockaddr_un addr = address_of(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        throw Error("cannot create a socket to reach serpens-host at " + path + ": " + errno_text(errno));
    }
    struct Closer {
        int fd;
        ~Closer() { close(fd); }
    } closer{fd};
    // A non-blocking connect to a Unix socket fails with EAGAIN while the
    // host's backlog is full; retry until the deadline rather than hang.
    while (connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0) {
        int err = errno;
        if (err == EAGAIN && Clock::now() < deadline) {
            usleep(10000);
            continue;
        }
        throw Error("cannot reach serpens-host at " + path + ": " +
                    (err == EAGAIN ? std::string("its backlog stayed full") : errno_text(err)) +
                    " (is it running? is --socket right?)");
    }
    ucred server{};
    socklen_t cred_len = sizeof server;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &server, &cred_len) != 0) {
        throw Error("cannot tell who serves the control socket " + path + ": " + errno_text(errno));
    }
    if (!owned_by_host_user(server.uid) && (!host_uid || server.uid != *host_uid)) {
        throw Error("the control socket " + path + " is served by uid " + std::to_string(server.uid) + " (pid " +
                    std::to_string(server.pid) + "), neither root nor you (uid " + std::to_string(::geteuid()) +
                    "): not a host of yours, so nothing was sent; if serpens-host runs as that user, say so with "
                    "--host-uid " +
                    std::to_string(server.uid));
    }
    auto wait_for = [&](short events, const char *doing) {
        pollfd p{fd, events, 0};
        int rc = poll(&p, 1, remaining_ms(deadline));
        if (rc == 0) {
            throw Error("serpens-host at " + path + " did not answer within " + std::to_string(timeout_ms) + " ms (" +
                        doing + ")");
        }
        if (rc < 0 && errno != EINTR) {
            throw Error("poll on the control socket " + path + " failed: " + errno_text(errno));
        }
    };
    const std::string line = command + "\n";
    std::size_t sent = 0;
    while (sent < line.size()) {
        ssize_t n = send(fd, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                wait_for(POLLOUT, "sending the request");
                continue;
            }
            throw Error("cannot send to serpens-host at " + path + ": " + errno_text(errno));
        }
        sent += static_cast<std::size_t>(n);
    }
    shutdown(fd, SHUT_WR);
    std::string reply;
    char buf[4096];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0) {
            break;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                wait_for(POLLIN, "waiting for the reply");
                continue;
            }
            throw Error("lost the connection to serpens-host at " + path + ": " + errno_text(errno));
        }
        reply.append(buf, static_cast<std::size_t>(n));
        if (reply.size() > kMaxReply) {
            throw Error("serpens-host at " + path + " sent a reply longer than " + std::to_string(kMaxReply) +
                        " bytes");
        }
    }
    if (reply.empty()) {
        throw Error("serpens-host at " + path + " closed the connection without a reply");
    }
    while (!reply.empty() && reply.back() == '\n') {
        reply.pop_back();
    }
    return reply;
}

} // namespace serpens
