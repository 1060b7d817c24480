#pragma once
// One TLS connection to a peer, carrying Envelopes (peer/codec.h) over a
// non-blocking TCP socket.  Every call either does what can be done now and
// returns (handshake_step, flush, try_receive: for one poll() loop serving
// many sessions, as PeerService does), or waits with poll() until a deadline
// (handshake, send, receive: for tests and simple clients).
//
// Replay protection on top of TLS's own: each direction numbers its
// envelopes 1, 2, 3, ... (queue() stamps them) and try_receive refuses an
// envelope whose sequence is not above the last one received.  Any failure
// (TLS alert, bad record, closed socket, a frame the codec refuses, a
// sequence going backwards) throws Error, and the session is then broken:
// every later call throws too; close it.
//
// Thread safety: none.  A Session (its SSL object above all) is used by one
// thread at a time.

#include "peer/codec.h"
#include "peer/tls.h"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace serpens::peer {

using Clock = std::chrono::steady_clock;

class Session {
public:
    enum class Role { client, server };

    // Takes `fd`, a TCP socket connected or still connecting, makes it
    // non-blocking and closes it when the session ends.  A client gives the
    // host id the server's certificate must name (checked by OpenSSL during
    // the handshake); a server gives "" and checks the peer's Hello against
    // peer_is().  Throws Error (closing fd) when OpenSSL cannot set up.
    Session(int fd, const TlsContext &tls, Role role, std::string expected_peer);
    ~Session();
    Session(const Session &) = delete;
    Session &operator=(const Session &) = delete;

    // Advances the handshake as far as the socket allows: true once it is done.
    bool handshake_step();
    // Until the handshake is done; throws Error on failure or at the deadline.
    void handshake(Clock::time_point deadline);
    bool established() const noexcept { return _established; }
    // Whether the other side has sent anything at all (a ClientHello's first
    // bytes): what tells a peer mid-handshake from a connection that only
    // connected.
    bool heard_from() const noexcept;

    // True when the peer's verified certificate names `host_id` (tls.h).
    bool peer_is(std::string_view host_id) const;
    // The peer certificate's CN, for messages.
    std::string peer_cn() const;

    // Stamps version and the next sequence on `envelope` and queues its
    // frame; throws Error when the codec refuses it (tls.h).
    void queue(Envelope envelope);
    // Queues these bytes as they are: for tests and tools that must send
    // what a well-behaved host never would (a sequence going backwards).
    void queue_raw(std::string bytes);
    // Writes what the socket takes now: true when nothing is left queued.
    bool flush();
    bool wants_write() const noexcept { return !_out.empty(); }

    // The next whole envelope, or nullopt when the socket has no more for
    // now.  Call it until nullopt before polling again: OpenSSL may hold
    // bytes the socket no longer shows.
    std::optional<Envelope> try_receive();

    // queue() and flush() until sent; throws Error at the deadline.
    void send(Envelope envelope, Clock::time_point deadline);
    // The next envelope, or nullopt when none came by the deadline.
    std::optional<Envelope> receive(Clock::time_point deadline);

    int fd() const noexcept { return _fd; }
    // What to poll() for: POLLIN, plus POLLOUT while OpenSSL or the queue must write.
    short poll_events() const noexcept;
    uint64_t last_sent_sequence() const noexcept { return _sent_sequence; }

private:
    [[noreturn]] void fail(const std::string &what);
    void check_usable() const;
    // Waits for poll_events() or the deadline: false at the deadline.
    bool wait(Clock::time_point deadline) const;

    int _fd = -1;
    SslPtr _ssl;
    std::string _expected_peer;
    bool _established = false;
    bool _broken = false;
    bool _ssl_wants_write = false; // the last OpenSSL call stopped for want of writing
    std::string _out;              // frames not yet taken by OpenSSL
    std::string _in;               // bytes read, not yet a whole frame
    uint64_t _sent_sequence = 0;
    uint64_t _received_sequence = 0;
};

} // namespace serpens::peer
