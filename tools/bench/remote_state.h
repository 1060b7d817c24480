#pragma once
// Remote state for the baselines: a redis-server of our own and a shim that
// sends every state request of an NF to it (hiredis, pipelined per batch).

#include "scratch.h"

#include <serpens/nf.h>

#include <cstdint>
#include <memory>
#include <string>

namespace serpens::bench {

class Child;

// A redis-server of our own on a free loopback port in a scratch directory
// (`--save '' --appendonly no`), stopped with the object.
class RedisServer {
public:
    RedisServer(); // starts it; available() false with why() when it cannot
    ~RedisServer();
    bool available() const noexcept { return _port > 0; }
    const std::string &why() const noexcept { return _why; }
    int port() const noexcept { return _port; }

private:
    std::unique_ptr<ScratchDir> _dir;
    std::unique_ptr<Child> _child;
    int _port = 0;
    std::string _why;
};

// Whether this build has hiredis.
bool have_hiredis() noexcept;

// The remote-state shim: a serpens_host_api whose create_table, get_state,
// put_state, delete_state and get_state_bulk also go to redis.  Every call is
// appended to the client's pipeline (GET / SET / DEL on "<table>:<key>") and
// the batch is not done until flush() has sent the pipeline and read every
// reply — the paper's "requests aggregated per batch".  Values the NF reads
// come from a local mirror (the host's own tables) so the NFs behave exactly
// as with local state; redis pays every request's round trip and work.
class RemoteClient {
public:
    RemoteClient(const RedisServer &server, const serpens_host_api &local);
    ~RemoteClient();
    RemoteClient(const RemoteClient &) = delete;
    RemoteClient &operator=(const RemoteClient &) = delete;
    // The API table to build instances with; tables created through it use
    // this client (one client per thread running the instance).
    const serpens_host_api *api() const noexcept { return &_api; }
    // Sends the pipeline and waits for every reply; returns requests flushed.
    uint32_t flush();
    uint64_t requests() const noexcept { return _requests; }
    // Tables created by instances constructed next on this thread use this client.
    void bind() noexcept;

    struct Impl;

private:
    std::unique_ptr<Impl> _impl;
    serpens_host_api _api;
    uint64_t _requests = 0;
};

} // namespace serpens::bench
