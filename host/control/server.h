#pragma once
// The control socket: a Unix stream socket on which serpensctl sends one
// command line and reads one reply.  Runs on its own thread, off the data
// path; the handler must only touch what is safe to read or set while the
// lcores run (relaxed atomics, RCU publishes).

#include <atomic>
#include <functional>
#include <string>
#include <thread>

namespace serpens {

class ControlServer {
public:
    using Handler = std::function<std::string(const std::string &command)>;

    // Binds `path` (removing a stale socket left by a dead host; refusing one
    // a live host still answers on) and starts serving.  Throws Error.
    ControlServer(std::string path, Handler handler);
    ~ControlServer(); // stops the thread and removes the socket file
    ControlServer(const ControlServer &) = delete;
    ControlServer &operator=(const ControlServer &) = delete;

    const std::string &path() const noexcept { return _path; }

private:
    void serve();

    std::string _path;
    Handler _handler;
    int _fd = -1;
    std::atomic<bool> _stop{false};
    std::thread _thread;
};

// Client side, for serpensctl and tests: sends `command`, returns the reply.
// Throws Error when the host cannot be reached.
std::string control_request(const std::string &path, const std::string &command, int timeout_ms = 5000);

} // namespace serpens
