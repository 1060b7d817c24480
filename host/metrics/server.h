#pragma once
// The Prometheus endpoint: GET /metrics over HTTP, everything else 404.
// One thread, started by `start_thread` (rte_ctrl_thread_create in the host,
// so it stays on the EAL's control CPUs, never on a worker lcore), serves
// every client from one poll() loop: accept, read and write are its own and
// non-blocking, and cpp-httplib parses each complete request and writes the
// response into memory.  So no client can hold it up: a slow or silent one
// costs a buffer until its deadline (`deadline` after accept, then it is
// closed), a request head over 8 KiB is answered 431, a body is limited to
// `max_body`, each connection serves one request ("Connection: close"), and
// beyond 64 open connections the oldest is closed.  A scrape runs `render`
// on this thread (metrics/collect.h reads only counters).

#include <pthread.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace serpens::metrics {

struct ServerOptions {
    std::string address;                      // numeric IPv4 or IPv6, without brackets
    uint16_t port = 0;                        // 0: any free port (tests), see MetricsServer::port()
    std::chrono::milliseconds deadline{5000}; // from accept to close, whatever the client does
    std::size_t max_body = 4096;
    // Starts a thread (e.g. rte_ctrl_thread_create); returns an errno-style
    // code.  Empty: pthread_create.
    std::function<int(pthread_t *thread, void *(*body)(void *), void *arg)> start_thread;
};

class MetricsServer {
public:
    // The text of one scrape (the Prometheus text format); called on the
    // server's thread, one scrape at a time.  An exception becomes a 500.
    using Render = std::function<std::string()>;

    // Binds at once: throws Error naming the address when it cannot.
    MetricsServer(ServerOptions options, Render render);
    ~MetricsServer(); // stops the thread, closes every connection and the listening socket
    MetricsServer(const MetricsServer &) = delete;
    MetricsServer &operator=(const MetricsServer &) = delete;

    uint16_t port() const noexcept { return _port; }

private:
    struct Impl;
    std::unique_ptr<Impl> _impl;
    uint16_t _port = 0;
};

} // namespace serpens::metrics
