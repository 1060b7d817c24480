#pragma once
// The Prometheus endpoint: GET /metrics over HTTP (cpp-httplib), everything
// else 404.  It runs on threads of its own that never touch a worker lcore:
// the listening thread is started by `start_thread` (rte_ctrl_thread_create
// in the host, so it and the connection threads it spawns, which inherit
// its CPU set, stay on the EAL's control CPUs), and a scrape reads only
// counters (metrics/collect.h).
//
// No client can hold it for long: a connection serves one request and is
// closed; reading the request and writing the reply each time out after
// `io_timeout`, and a watchdog shuts down any connection still open
// `deadline` after accept (a client trickling bytes included).  Requests are
// bounded (headers by cpp-httplib, 8 KiB; a body by `max_body`).  At most
// `threads` connections are served at once and `queue` wait; beyond that the
// listening thread waits and the kernel's backlog takes the rest.

#include <pthread.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace serpens::metrics {

struct ServerOptions {
    std::string address; // numeric IPv4 or IPv6, without brackets
    uint16_t port = 0;   // 0: any free port (tests), see MetricsServer::port()
    std::chrono::milliseconds io_timeout{2000};
    std::chrono::milliseconds deadline{5000};
    std::size_t max_body = 4096;
    unsigned threads = 2;
    std::size_t queue = 16;
    // Starts a thread (e.g. rte_ctrl_thread_create); returns an errno-style
    // code.  Empty: pthread_create.
    std::function<int(pthread_t *thread, void *(*body)(void *), void *arg)> start_thread;
};

class MetricsServer {
public:
    // The text of one scrape (the Prometheus text format); called on a
    // connection thread, several at once.  An exception becomes a 500.
    using Render = std::function<std::string()>;

    // Binds at once: throws Error naming the address when it cannot.
    MetricsServer(ServerOptions options, Render render);
    ~MetricsServer(); // stops accepting, finishes or cuts the open connections, joins every thread
    MetricsServer(const MetricsServer &) = delete;
    MetricsServer &operator=(const MetricsServer &) = delete;

    uint16_t port() const noexcept { return _port; }

private:
    struct Impl;
    std::unique_ptr<Impl> _impl;
    uint16_t _port = 0;
};

} // namespace serpens::metrics
