#pragma once
// The control socket: a Unix stream socket on which serpensctl sends one
// request line and reads one reply line (protocol.h says what they hold).  One control thread (never a worker
// lcore) serves every connection without blocking, with poll(): a client that
// is idle, slow, hostile or gone costs a table slot until its deadline and
// delays nobody.  The handler runs on that thread and must only touch what is
// safe to read or set while the lcores run (relaxed atomics, RCU publishes).
//
// Who may talk: the socket is created 0600 (0660 with a control group)
// whatever the umask, and every accepted peer is checked with SO_PEERCRED.
// Only root, the host's own user, and members of the control group are
// served; any other peer that reaches the socket gets a "permission_denied"
// error for every command, reads included: counters describe the traffic,
// and a peer the file mode should have kept out is not one to trust.

#include <sys/types.h>

#include <pthread.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace serpens {

// The process at the other end of a connection (SO_PEERCRED).
struct ControlPeer {
    pid_t pid = 0;
    uid_t uid = 0;
    gid_t gid = 0;
};

struct ControlServerOptions {
    std::string path;
    // Members (primary or supplementary) may use the socket too; it is then
    // 0660 and owned by this group.
    std::optional<gid_t> group;
    // A request line longer than this is answered with an error and closed.
    std::size_t max_request = 64 * 1024;
    // Connections served at once.  Beyond it a new connection displaces the
    // oldest one not sending a reply (or, when all are, is closed at once): the listen backlog never fills and
    // idle clients cannot lock a prompt one out.
    std::size_t max_connections = 256;
    int backlog = 128;
    // From accept to the client's close after its reply; a client slower
    // than that is closed.
    std::chrono::milliseconds deadline{2000};
    // Starts the control thread (e.g. rte_ctrl_thread_create, to keep it off
    // the lcores' CPUs); returns its errno-style code, 0 on success.  Default:
    // pthread_create.
    std::function<int(pthread_t *thread, void *(*body)(void *), void *arg)> start_thread;
};

class ControlServer {
public:
    // Gets one request line (newline removed) and returns the reply (without
    // newline).  An exception becomes an "internal" error reply.
    using Handler = std::function<std::string(std::string_view line, const ControlPeer &peer)>;

    // Publishes the socket at options.path and starts serving.  A socket
    // left there by a dead host is replaced; anything else there (a live
    // host's socket, a file, a symlink) is refused and left intact.  Throws
    // Error naming the path.
    ControlServer(ControlServerOptions options, Handler handler);
    ~ControlServer(); // stops the thread, closes every connection, removes the socket it made
    ControlServer(const ControlServer &) = delete;
    ControlServer &operator=(const ControlServer &) = delete;

    const std::string &path() const noexcept { return _options.path; }

private:
    struct Connection;

    static void *thread_main(void *self);
    void serve();
    void accept_new(std::chrono::steady_clock::time_point now);
    // Advances one connection; false when it is finished and must be closed.
    bool on_readable(Connection &c);
    bool on_writable(Connection &c);
    void reply(Connection &c, std::string text);
    bool evict_oldest_waiting();
    bool peer_allowed(const ControlPeer &peer) const;

    ControlServerOptions _options;
    Handler _handler;
    uid_t _euid = 0;
    int _listen_fd = -1;
    int _wake_fd = -1; // an eventfd: the destructor's "stop"
    dev_t _dev = 0;    // the socket file published at path, so that only it is removed
    ino_t _ino = 0;
    std::vector<Connection> _connections;
    std::chrono::steady_clock::time_point _accept_paused_until{};
    bool _thread_started = false;
    pthread_t _thread{};
};

// Client side, for serpensctl and tests: sends `command` (one line) and
// returns the reply without its newline.  The whole exchange is bounded by
// timeout_ms and the reply by 16 MiB.  Throws Error when the host cannot be
// reached, does not answer in time, or answers too much, and before sending
// anything when the process serving the socket (SO_PEERCRED) runs as
// neither root, nor this user, nor `host_uid`: a socket another local user
// put at the path would otherwise be told the request and believed.
std::string control_request(const std::string &path, const std::string &command, int timeout_ms = 5000,
                            std::optional<uid_t> host_uid = std::nullopt);

} // namespace serpens
