#include "metrics/server.h"

#include "core/error.h"
#include "metrics/render.h"

#include <httplib.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <vector>

namespace serpens::metrics {
namespace {

using Clock = std::chrono::steady_clock;

// cpp-httplib parses the request and writes the response; the connection
// itself (accept, reading, writing, deadlines) is ours, non-blocking, so a
// slow client costs a buffer, never the thread.
class Http : public httplib::Server {
public:
    using httplib::Server::process_request;
};

// The request as read so far, and the response httplib writes, in memory.
class BufferStream final : public httplib::Stream {
public:
    BufferStream(std::string_view in, int fd) : _in(in), _fd(fd) {}

    bool is_readable() const override { return _pos < _in.size(); }
    bool is_writable() const override { return true; }
    ssize_t read(char *ptr, size_t size) override
    {
        const std::size_t n = std::min(size, _in.size() - _pos);
        std::memcpy(ptr, _in.data() + _pos, n);
        _pos += n;
        return static_cast<ssize_t>(n);
    }
    ssize_t write(const char *ptr, size_t size) override
    {
        out.append(ptr, size);
        return static_cast<ssize_t>(size);
    }
    void get_remote_ip_and_port(std::string &ip, int &port) const override
    {
        ip.clear();
        port = 0;
    }
    void get_local_ip_and_port(std::string &ip, int &port) const override
    {
        ip.clear();
        port = 0;
    }
    int socket() const override { return _fd; }

    std::string out;

private:
    std::string_view _in;
    std::size_t _pos = 0;
    int _fd;
};

struct Connection {
    int fd = -1;
    Clock::time_point deadline;
    std::string in;
    std::string out;
    std::size_t sent = 0;
    bool writing = false;
};

// Headers (8 KiB, cpp-httplib's own limit) and a small body.
constexpr std::size_t max_head = 8192;
constexpr std::size_t max_connections = 64;

// Removes every `name:` header line (name in lower case) from the request
// head in `request` (up to its blank line), with any folded lines after it.
void drop_header(std::string &request, std::string_view name)
{
    std::size_t head_end = request.find("\r\n\r\n");
    if (head_end == std::string::npos) {
        return;
    }
    std::size_t line = request.find("\r\n"); // the end of the request line
    while (line < head_end) {
        const std::size_t start = line + 2;
        std::size_t end = request.find("\r\n", start);
        const bool match = request.size() - start > name.size() && request[start + name.size()] == ':' &&
                           std::equal(name.begin(), name.end(), request.begin() + static_cast<std::ptrdiff_t>(start),
                                      [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); });
        if (!match) {
            line = end;
            continue;
        }
        while (end < head_end && (request[end + 2] == ' ' || request[end + 2] == '\t')) {
            end = request.find("\r\n", end + 2);
        }
        request.erase(start, end - start + 2);
        head_end -= end - start + 2;
    }
}

} // namespace

struct MetricsServer::Impl {
    ServerOptions options;
    Render render;
    Http http;
    int listen_fd = -1;
    int wake_fd = -1;
    std::vector<Connection> connections;
    std::vector<pollfd> fds; // of one poll(): wake_fd, listen_fd, then connections in order
    pthread_t thread{};
    bool started = false;
    std::atomic<bool> stopping{false};
    Clock::time_point accept_paused_until{};

    static void *thread_main(void *self)
    {
        static_cast<Impl *>(self)->serve();
        return nullptr;
    }
    void serve();
    void serve_once(); // one poll() and what it found
    void accept_new(Clock::time_point now);
    bool on_readable(Connection &c);
    bool on_writable(Connection &c);
    void respond(Connection &c);
};

MetricsServer::MetricsServer(ServerOptions options, Render render) : _impl(std::make_unique<Impl>())
{
    Impl &s = *_impl;
    s.options = std::move(options);
    s.render = std::move(render);
    const std::string where = s.options.address.find(':') != std::string::npos
                                  ? "[" + s.options.address + "]:" + std::to_string(s.options.port)
                                  : s.options.address + ":" + std::to_string(s.options.port);

    sockaddr_storage addr{};
    socklen_t addr_len = 0;
    auto *v4 = reinterpret_cast<sockaddr_in *>(&addr);
    auto *v6 = reinterpret_cast<sockaddr_in6 *>(&addr);
    if (inet_pton(AF_INET, s.options.address.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(s.options.port);
        addr_len = sizeof *v4;
    } else if (inet_pton(AF_INET6, s.options.address.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(s.options.port);
        addr_len = sizeof *v6;
    } else {
        throw Error("metrics: '" + s.options.address + "' is not a numeric IPv4 or IPv6 address");
    }
    s.listen_fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s.listen_fd < 0) {
        throw Error("metrics: cannot create a socket for " + where + ": " + std::strerror(errno));
    }
    // SO_REUSEADDR only (not SO_REUSEPORT): a second host on the same port
    // is an error, not a silent share.
    int one = 1;
    setsockopt(s.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (addr.ss_family == AF_INET6) {
        setsockopt(s.listen_fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (::bind(s.listen_fd, reinterpret_cast<sockaddr *>(&addr), addr_len) != 0 || ::listen(s.listen_fd, 64) != 0) {
        const int err = errno;
        ::close(s.listen_fd);
        throw Error("metrics: cannot listen on " + where + ": " + std::strerror(err) +
                    (err == EADDRINUSE      ? " (another process has the port: change [metrics] listen)"
                     : err == EADDRNOTAVAIL ? " (not an address of this host)"
                                            : ""));
    }
    addr_len = sizeof addr;
    getsockname(s.listen_fd, reinterpret_cast<sockaddr *>(&addr), &addr_len);
    _port = ntohs(addr.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);

    s.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s.wake_fd < 0) {
        ::close(s.listen_fd);
        throw Error(std::string("metrics: eventfd: ") + std::strerror(errno));
    }
    s.http.set_payload_max_length(s.options.max_body);
    s.http.Get("/metrics", [&s](const httplib::Request &, httplib::Response &res) {
        try {
            res.set_content(s.render(), content_type);
        } catch (const std::exception &e) {
            res.status = 500;
            res.set_content(std::string("metrics: ") + e.what() + "\n", "text/plain");
        }
    });
    int rc = s.options.start_thread ? s.options.start_thread(&s.thread, &Impl::thread_main, &s)
                                    : pthread_create(&s.thread, nullptr, &Impl::thread_main, &s);
    if (rc != 0) {
        ::close(s.listen_fd);
        ::close(s.wake_fd);
        throw Error(std::string("metrics: cannot start the metrics thread: ") + std::strerror(rc < 0 ? -rc : rc));
    }
    s.started = true;
}

MetricsServer::~MetricsServer()
{
    Impl &s = *_impl;
    s.stopping.store(true);
    uint64_t one = 1;
    ssize_t ignored = ::write(s.wake_fd, &one, sizeof one);
    (void)ignored;
    if (s.started) {
        pthread_join(s.thread, nullptr);
    }
    for (Connection &c : s.connections) {
        ::close(c.fd);
    }
    ::close(s.listen_fd);
    ::close(s.wake_fd);
}

void MetricsServer::Impl::serve()
{
    while (!stopping.load(std::memory_order_relaxed)) {
        try {
            serve_once();
        } catch (const std::exception &) {
            // Out of memory for a buffer: drop every connection rather than end the host.
            for (Connection &c : connections) {
                ::close(c.fd);
            }
            connections.clear();
        }
    }
}

void MetricsServer::Impl::serve_once()
{
    Clock::time_point now = Clock::now();
    // Connections past their deadline go first.
    std::erase_if(connections, [&](const Connection &c) {
        if (now >= c.deadline) {
            ::close(c.fd);
            return true;
        }
        return false;
    });
    int timeout_ms = 1000;
    for (const Connection &c : connections) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(c.deadline - now).count();
        timeout_ms = std::min<int>(timeout_ms, static_cast<int>(std::max<int64_t>(left, 1)));
    }
    const bool accepting = now >= accept_paused_until;
    if (!accepting) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(accept_paused_until - now).count();
        timeout_ms = std::min<int>(timeout_ms, static_cast<int>(std::max<int64_t>(left, 1)));
    }
    fds.clear();
    fds.push_back({wake_fd, POLLIN, 0});
    fds.push_back({listen_fd, static_cast<short>(accepting ? POLLIN : 0), 0});
    for (const Connection &c : connections) {
        fds.push_back({c.fd, static_cast<short>(c.writing ? POLLOUT : POLLIN), 0});
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0) {
        return; // EINTR
    }
    now = Clock::now();
    // Connections first (accepting may evict some).
    std::vector<bool> keep(connections.size(), true);
    for (std::size_t i = 0; i < connections.size(); ++i) {
        const short ev = fds[i + 2].revents;
        if (ev == 0) {
            continue;
        }
        Connection &c = connections[i];
        keep[i] = (ev & (POLLERR | POLLNVAL)) == 0 && (c.writing ? on_writable(c) : on_readable(c));
    }
    std::size_t i = 0;
    std::erase_if(connections, [&](const Connection &c) {
        const bool gone = !keep[i++];
        if (gone) {
            ::close(c.fd);
        }
        return gone;
    });
    if ((fds[1].revents & POLLIN) != 0) {
        accept_new(now);
    }
}

void MetricsServer::Impl::accept_new(Clock::time_point now)
{
    for (;;) {
        const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (accept_must_pause(errno)) {
                accept_paused_until = now + accept_pause;
            }
            return; // EAGAIN, or a connection that went away before accept
        }
        if (connections.size() >= max_connections) {
            // The oldest connection makes room: whoever holds many open cannot lock a scraper out.
            ::close(connections.front().fd);
            connections.erase(connections.begin());
        }
        Connection c;
        c.fd = fd;
        c.deadline = now + options.deadline;
        connections.push_back(std::move(c));
    }
}

bool MetricsServer::Impl::on_readable(Connection &c)
{
    char buf[4096];
    const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n == 0) {
        return false; // closed before a whole request came
    }
    if (n < 0) {
        return errno == EAGAIN || errno == EINTR;
    }
    c.in.append(buf, static_cast<std::size_t>(n));
    const std::size_t head_end = c.in.find("\r\n\r\n");
    if (head_end == std::string::npos) {
        if (c.in.size() > max_head) {
            c.out = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            c.writing = true;
        }
        return true;
    }
    respond(c);
    return true;
}

void MetricsServer::Impl::respond(Connection &c)
{
    // The body is small and always sent whole: with a Range header httplib
    // would build one copy of it per range, thousands from one 8 KiB header.
    drop_header(c.in, "range");
    BufferStream stream(c.in, c.fd);
    bool closed = false;
    try {
        // One request per connection ("Connection: close"): nothing waits on an idle keep-alive.
        http.process_request(stream, true, closed, [](httplib::Request &) {});
        c.out = std::move(stream.out);
    } catch (...) {
        // Nothing may leave this thread (it would end the host): the client gets a 500.
        c.out = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    }
    c.in.clear();
    c.in.shrink_to_fit();
    c.writing = true;
    if (c.out.empty()) {
        c.out = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    }
}

bool MetricsServer::Impl::on_writable(Connection &c)
{
    const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n < 0) {
        return errno == EAGAIN || errno == EINTR;
    }
    c.sent += static_cast<std::size_t>(n);
    if (c.sent < c.out.size()) {
        return true;
    }
    ::shutdown(c.fd, SHUT_WR);
    return false;
}

} // namespace serpens::metrics
