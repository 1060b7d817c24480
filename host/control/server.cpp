#include "control/server.h"

#include "core/error.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace serpens {
namespace {

sockaddr_un address_of(const std::string &path)
{
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path)) {
        throw Error("control socket path is too long (" + std::to_string(path.size()) + " bytes, at most " +
                    std::to_string(sizeof(addr.sun_path) - 1) + "): " + path);
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    return addr;
}

// Reads until a newline or EOF, waiting at most timeout_ms per read.
std::string read_line(int fd, int timeout_ms, bool whole_reply)
{
    std::string data;
    char buf[4096];
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, timeout_ms) <= 0) {
            break;
        }
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) {
            break;
        }
        data.append(buf, static_cast<std::size_t>(n));
        if (!whole_reply && data.find('\n') != std::string::npos) {
            break;
        }
        if (data.size() > (1u << 20)) {
            break;
        }
    }
    return data;
}

void write_all(int fd, const std::string &data)
{
    std::size_t done = 0;
    while (done < data.size()) {
        ssize_t n = write(fd, data.data() + done, data.size() - done);
        if (n <= 0) {
            return;
        }
        done += static_cast<std::size_t>(n);
    }
}

} // namespace

ControlServer::ControlServer(std::string path, Handler handler)
    : _path(std::move(path)), _handler(std::move(handler))
{
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(_path).parent_path(), ec);
    if (std::filesystem::exists(_path)) {
        try {
            control_request(_path, "ping", 500);
            throw Error("control socket " + _path + " is in use by a running serpens-host; give this host "
                        "another [host] id or control_socket");
        } catch (const Error &e) {
            if (std::string(e.what()).find("in use") != std::string::npos) {
                throw;
            }
            std::filesystem::remove(_path, ec); // left by a host that died
        }
    }
    _fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr = address_of(_path);
    if (_fd < 0 || bind(_fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 || listen(_fd, 8) != 0) {
        int err = errno;
        if (_fd >= 0) {
            close(_fd);
        }
        throw Error("cannot listen on control socket " + _path + ": " + std::strerror(err));
    }
    _thread = std::thread([this] { serve(); });
    spdlog::info("control socket {}", _path);
}

ControlServer::~ControlServer()
{
    _stop.store(true);
    if (_thread.joinable()) {
        _thread.join();
    }
    close(_fd);
    std::error_code ec;
    std::filesystem::remove(_path, ec);
}

void ControlServer::serve()
{
    while (!_stop.load()) {
        pollfd p{_fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0) {
            continue;
        }
        int client = accept4(_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) {
            continue;
        }
        std::string line = read_line(client, 1000, false);
        while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
            line.pop_back();
        }
        std::string reply;
        try {
            reply = _handler(line);
        } catch (const std::exception &e) {
            reply = std::string("error: ") + e.what();
        }
        write_all(client, reply + "\n");
        close(client);
    }
}

std::string control_request(const std::string &path, const std::string &command, int timeout_ms)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr = address_of(path);
    if (fd < 0 || connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0) {
        int err = errno;
        if (fd >= 0) {
            close(fd);
        }
        throw Error("cannot reach serpens-host at " + path + ": " + std::strerror(err) +
                    " (is it running? is --socket right?)");
    }
    write_all(fd, command + "\n");
    shutdown(fd, SHUT_WR);
    std::string reply = read_line(fd, timeout_ms, true);
    close(fd);
    while (!reply.empty() && reply.back() == '\n') {
        reply.pop_back();
    }
    return reply;
}

} // namespace serpens
