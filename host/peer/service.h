#pragma once
// PeerService: this host's side of the peer protocol.  One cold-path thread
// (started by `start_thread`, e.g. rte_ctrl_thread_create, so it stays off
// the worker lcores) serves every connection from one poll() loop, like the
// metrics and control servers: it listens, dials the configured peers (again
// and again, backing off from reconnect_min to reconnect_max), runs the TLS
// handshake and the Hello exchange, sends heartbeats, closes a connection
// silent for dead_after, and tracks each peer's liveness.
//
// Connections: a host dials every peer that has an address and accepts any
// peer in its list whose certificate names the id its Hello claims (tls.h).
// Two hosts that dial each other hold two connections; a request goes on
// either (the one this host dialled first), replies come back on the one the
// request came on.  A peer is up while one of its connections has finished
// its Hello and is not silent.
//
// Requests: request() sends a body and waits for the reply.  It is resent
// with the same request id on the next connection when its connection closes
// first, and the receiver answers a request id it has answered before (the
// last reply_cache ones per peer incarnation) from its cache without running
// the handler again: a request runs at most once per incarnation of the
// receiver.  The handler runs on the service thread: it must be quick (the
// heartbeats of every connection wait for it) and must not call request().
//
// Thread safety: request(), peer(), peers() and counters() may be called from
// any thread but the service thread; the constructor and destructor from one.

#include "peer/codec.h"
#include "peer/session.h"
#include "peer/tls.h"

#include <pthread.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace serpens::peer {

// A peer this host knows.  With an address it is dialled; without one, this
// host only accepts it.
struct PeerEndpoint {
    std::string id;      // its host id, as its certificate names it
    std::string address; // numeric IPv4 or IPv6; "" to only accept
    uint16_t port = 0;
};

struct PeerServiceOptions {
    std::string host_id;        // this host's id, as its certificate names it
    std::string listen_address; // numeric IPv4 or IPv6; "" to dial only
    uint16_t listen_port = 0;   // 0: any free port (tests), see port()
    TlsCredentials tls;
    // What the Hello tells peers about this host's VXLAN underlay.
    uint32_t underlay_ipv4 = 0; // a.b.c.d as (a << 24 | b << 16 | c << 8 | d)
    std::array<uint8_t, kMacBytes> underlay_mac{};
    uint16_t vxlan_port = 4789;
    uint64_t incarnation = 0; // 0: a random one (a new one every start)
    std::vector<PeerEndpoint> peers;
    std::chrono::milliseconds heartbeat_interval{1000};
    std::chrono::milliseconds dead_after{5000};    // silence after which a connection is closed
    std::chrono::milliseconds setup_timeout{5000}; // from connect to the peer's Hello
    std::chrono::milliseconds reconnect_min{100};
    std::chrono::milliseconds reconnect_max{10000};
    std::size_t reply_cache = 1024; // replies remembered per peer, for retried requests
    // Accepted connections before their Hello; past it the oldest is closed.
    std::size_t max_unidentified = 64;
    // Starts the service thread; returns an errno-style code.  Empty: pthread_create.
    std::function<int(pthread_t *thread, void *(*body)(void *), void *arg)> start_thread;
};

struct PeerStatus {
    std::string id;
    bool up = false;
    Clock::time_point last_seen{}; // last envelope received from it; epoch when never
    uint64_t incarnation = 0;      // from its last Hello; 0 before the first
    Hello hello;                   // its last Hello
    uint64_t sessions = 0;         // connections that completed their Hello, ever
};

struct PeerCounters {
    uint64_t envelopes_in = 0;
    uint64_t envelopes_out = 0;
    uint64_t sessions_refused = 0; // connections closed for a TLS, codec, sequence or Hello failure
    uint64_t handler_calls = 0;
    uint64_t replies_from_cache = 0;
};

class PeerService {
public:
    // Answers one request from `peer_id`: returns an Envelope whose body is
    // the reply (no body: Ack); the header is the service's.  An exception
    // becomes an Error reply with CODE_INTERNAL.
    using Handler = std::function<Envelope(const std::string &peer_id, const Envelope &request)>;

    // Loads the credentials, binds, and starts the thread.  Throws Error
    // naming the file or address when it cannot.
    PeerService(PeerServiceOptions options, Handler handler);
    ~PeerService(); // stops the thread and closes every connection
    PeerService(const PeerService &) = delete;
    PeerService &operator=(const PeerService &) = delete;

    uint16_t port() const noexcept;
    uint64_t incarnation() const noexcept;

    // Sends `body` (an Envelope whose body is set; the header is the
    // service's) to `peer_id` and returns the reply, which may be an Error
    // body.  Throws Error when the peer is unknown or no reply came within
    // `timeout`.
    Envelope request(const std::string &peer_id, Envelope body, std::chrono::milliseconds timeout);

    std::optional<PeerStatus> peer(const std::string &id) const;
    std::vector<PeerStatus> peers() const;
    PeerCounters counters() const;

private:
    struct Impl;
    std::unique_ptr<Impl> _impl;
};

} // namespace serpens::peer
