#include "peer/service.h"

#include "core/error.h"

#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <unordered_map>
#include <utility>

namespace serpens::peer {
namespace {

struct SocketAddress {
    sockaddr_storage storage{};
    socklen_t length = 0;
};

// A numeric IPv4 or IPv6 address and a port; throws Error naming `what`.
SocketAddress socket_address(const std::string &address, uint16_t port, const std::string &what)
{
    SocketAddress out;
    auto *v4 = reinterpret_cast<sockaddr_in *>(&out.storage);
    auto *v6 = reinterpret_cast<sockaddr_in6 *>(&out.storage);
    if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        out.length = sizeof *v4;
    } else if (inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        out.length = sizeof *v6;
    } else {
        throw serpens::Error("peer: " + what + " '" + address + "' is not a numeric IPv4 or IPv6 address");
    }
    return out;
}

// Envelopes are small and answered at once: no Nagle delay.
void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

uint64_t random_u64()
{
    std::random_device rd;
    return (uint64_t{rd()} << 32 | rd()) | 1; // never 0
}

// One connection and where it is in its life.
struct Conn {
    enum class Stage { connect, handshake, hello, up };
    uint64_t id = 0;
    int connecting_fd = -1; // Stage::connect: the socket until it connects
    std::unique_ptr<Session> session;
    bool outgoing = false;
    std::string peer_id; // outgoing: the id dialled; incoming: from its Hello
    Stage stage = Stage::handshake;
    Clock::time_point setup_deadline{};
    Clock::time_point last_received{};
    Clock::time_point last_sent{};
    // Set when the connection must close; it closes at the end of this round
    // of the loop, so that no index into the connections moves under it.
    std::optional<std::string> closing;
    bool refused = false; // closed for a failure, not for silence

    Conn() = default;
    Conn(const Conn &) = delete;
    Conn &operator=(const Conn &) = delete;
    ~Conn()
    {
        if (connecting_fd >= 0) {
            ::close(connecting_fd);
        }
    }
    int fd() const { return session ? session->fd() : connecting_fd; }
    short poll_events() const { return session ? session->poll_events() : static_cast<short>(POLLOUT); }
};

// A configured peer this host dials.
struct Dial {
    PeerEndpoint endpoint;
    Clock::time_point next_attempt{};
    std::chrono::milliseconds backoff{};
    uint64_t conn = 0; // its current outgoing connection, 0 when none
};

// A request() waiting for its reply.
struct Pending {
    std::string peer_id;
    Envelope envelope;    // body and request id; the session stamps the rest
    uint64_t sent_on = 0; // the connection it was last sent on, 0 when it must be (re)sent
    std::optional<Envelope> reply;
};

// Replies to the last requests of one peer incarnation, for retries.
struct ReplyCache {
    uint64_t incarnation = 0;
    std::unordered_map<uint64_t, Envelope> replies;
    std::deque<uint64_t> order;
};

// Closed connections that never said who they are, logged at most `burst`
// a window and then summed: anyone who can connect causes them, and a line
// each let one flood write a megabyte of log a second.
class RefusalLog {
public:
    void note(const std::string &why, Clock::time_point now)
    {
        roll(now);
        if (_logged < burst) {
            ++_logged;
            spdlog::warn("peer (not yet identified): connection closed: {}", why);
        } else {
            ++_suppressed;
            _last = why;
        }
    }
    // Says how many went unlogged once their window is over.
    void roll(Clock::time_point now)
    {
        if (now - _window_start < window) {
            return;
        }
        if (_suppressed > 0) {
            spdlog::warn("peer (not yet identified): {} more connections closed in the last {} s; the last: {}",
                         _suppressed, window.count(), _last);
        }
        _window_start = now;
        _logged = 0;
        _suppressed = 0;
    }

private:
    static constexpr std::chrono::seconds window{10};
    static constexpr unsigned burst = 10;
    Clock::time_point _window_start{};
    unsigned _logged = 0;
    uint64_t _suppressed = 0;
    std::string _last;
};

} // namespace

struct PeerService::Impl {
    PeerServiceOptions options;
    Handler handler;
    std::unique_ptr<TlsContext> tls;
    int listen_fd = -1;
    int wake_fd = -1;
    uint16_t port = 0;
    pthread_t thread{};
    bool started = false;
    std::atomic<bool> stopping{false};
    std::atomic<uint64_t> next_request_id{1};

    // Service thread only.
    std::vector<std::unique_ptr<Conn>> conns;
    std::vector<Dial> dials;
    std::map<std::string, ReplyCache> caches;
    uint64_t next_conn_id = 1;
    Clock::time_point accept_paused_until{}; // out of descriptors: no accepts until then
    RefusalLog refusal_log;

    // Shared with callers of request(), peer(), counters().
    mutable std::mutex mu;
    std::condition_variable replied;
    std::unordered_map<uint64_t, Pending> pending;
    std::map<std::string, PeerStatus> status;
    PeerCounters counts;

    static void *thread_main(void *self)
    {
        static_cast<Impl *>(self)->serve();
        return nullptr;
    }
    void wake() const
    {
        uint64_t one = 1;
        ssize_t ignored = ::write(wake_fd, &one, sizeof one);
        (void)ignored;
    }
    bool known_peer(const std::string &id) const
    {
        return std::any_of(options.peers.begin(), options.peers.end(), [&](const auto &p) { return p.id == id; });
    }
    void serve();
    void serve_once();
    void dial(Dial &d, Clock::time_point now);
    void accept_new(Clock::time_point now);
    void refused_unidentified(const std::string &why, Clock::time_point now);
    void advance(Conn &c, Clock::time_point now); // throws Error: the connection must close
    void on_envelope(Conn &c, Envelope envelope, Clock::time_point now);
    void on_hello(Conn &c, const Envelope &envelope, Clock::time_point now);
    void on_request(Conn &c, const Envelope &request);
    void send(Conn &c, Envelope envelope, Clock::time_point now);
    void send_pending(Clock::time_point now);
    static void doom(Conn &c, const std::string &why, bool refused);
    void reap();
    Envelope our_hello();
    uint64_t new_request_id() { return next_request_id.fetch_add(1, std::memory_order_relaxed); }
};

PeerService::PeerService(PeerServiceOptions options, Handler handler) : _impl(std::make_unique<Impl>())
{
    Impl &s = *_impl;
    s.options = std::move(options);
    s.handler = std::move(handler);
    if (s.options.incarnation == 0) {
        s.options.incarnation = random_u64();
    }
    // Request ids start at random, so a retry of an earlier run's id is never mistaken for one of this run's.
    s.next_request_id.store(random_u64() >> 1);
    s.tls = std::make_unique<TlsContext>(s.options.tls);
    for (const PeerEndpoint &p : s.options.peers) {
        s.status[p.id].id = p.id;
        if (!p.address.empty()) {
            socket_address(p.address, p.port, "address of peer " + p.id); // refused now, not on every dial
            s.dials.push_back(Dial{p, Clock::time_point{}, s.options.reconnect_min, 0});
        }
    }
    if (!s.options.listen_address.empty()) {
        const std::string where = s.options.listen_address + " port " + std::to_string(s.options.listen_port);
        SocketAddress addr = socket_address(s.options.listen_address, s.options.listen_port, "listen address");
        s.listen_fd = ::socket(addr.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s.listen_fd < 0) {
            throw serpens::Error("peer: cannot create a socket for " + where + ": " + std::strerror(errno));
        }
        int one = 1;
        setsockopt(s.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (::bind(s.listen_fd, reinterpret_cast<sockaddr *>(&addr.storage), addr.length) != 0 ||
            ::listen(s.listen_fd, 64) != 0) {
            const int err = errno;
            ::close(s.listen_fd);
            throw serpens::Error("peer: cannot listen on " + where + ": " + std::strerror(err));
        }
        addr.length = sizeof addr.storage;
        getsockname(s.listen_fd, reinterpret_cast<sockaddr *>(&addr.storage), &addr.length);
        s.port = ntohs(addr.storage.ss_family == AF_INET ? reinterpret_cast<sockaddr_in *>(&addr.storage)->sin_port
                                                         : reinterpret_cast<sockaddr_in6 *>(&addr.storage)->sin6_port);
    }
    s.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s.wake_fd < 0) {
        const int err = errno;
        if (s.listen_fd >= 0) {
            ::close(s.listen_fd);
        }
        throw serpens::Error(std::string("peer: eventfd: ") + std::strerror(err));
    }
    const int rc = s.options.start_thread ? s.options.start_thread(&s.thread, &Impl::thread_main, &s)
                                          : pthread_create(&s.thread, nullptr, &Impl::thread_main, &s);
    if (rc != 0) {
        if (s.listen_fd >= 0) {
            ::close(s.listen_fd);
        }
        ::close(s.wake_fd);
        throw serpens::Error(std::string("peer: cannot start the peer thread: ") + std::strerror(rc < 0 ? -rc : rc));
    }
    s.started = true;
}

PeerService::~PeerService()
{
    Impl &s = *_impl;
    s.stopping.store(true);
    s.wake();
    if (s.started) {
        pthread_join(s.thread, nullptr);
    }
    s.conns.clear();
    if (s.listen_fd >= 0) {
        ::close(s.listen_fd);
    }
    ::close(s.wake_fd);
}

uint16_t PeerService::port() const noexcept { return _impl->port; }

uint64_t PeerService::incarnation() const noexcept { return _impl->options.incarnation; }

Envelope PeerService::request(const std::string &peer_id, Envelope body, std::chrono::milliseconds timeout)
{
    Impl &s = *_impl;
    if (!s.known_peer(peer_id)) {
        throw serpens::Error("peer: '" + peer_id + "' is no configured peer");
    }
    const uint64_t id = s.new_request_id();
    body.set_request_id(id);
    body.set_in_reply_to(0);
    body.set_deadline_ms(static_cast<uint32_t>(std::max<int64_t>(timeout.count(), 1)));
    if (auto f = validate_body(body)) {
        throw serpens::Error("peer: refusing to send a " + std::string(body_name(body)) + " to " + peer_id + ": " +
                             f->message);
    }
    const Clock::time_point deadline = Clock::now() + timeout;
    std::unique_lock lock(s.mu);
    s.pending.emplace(id, Pending{peer_id, std::move(body), 0, std::nullopt});
    lock.unlock();
    s.wake();
    lock.lock();
    const bool answered = s.replied.wait_until(lock, deadline, [&] { return s.pending.at(id).reply.has_value(); });
    Pending done = std::move(s.pending.at(id));
    s.pending.erase(id);
    if (!answered) {
        const bool up = s.status.at(peer_id).up;
        throw serpens::Error("peer: no reply from " + peer_id + " within " + std::to_string(timeout.count()) + " ms (" +
                             (up ? "it is up" : "it is down") + ")");
    }
    return std::move(*done.reply);
}

std::optional<PeerStatus> PeerService::peer(const std::string &id) const
{
    std::lock_guard lock(_impl->mu);
    auto it = _impl->status.find(id);
    if (it == _impl->status.end()) {
        return std::nullopt;
    }
    return it->second;
}

std::vector<PeerStatus> PeerService::peers() const
{
    std::lock_guard lock(_impl->mu);
    std::vector<PeerStatus> out;
    for (const auto &[id, st] : _impl->status) {
        out.push_back(st);
    }
    return out;
}

PeerCounters PeerService::counters() const
{
    std::lock_guard lock(_impl->mu);
    return _impl->counts;
}

void PeerService::Impl::serve()
{
    while (!stopping.load(std::memory_order_relaxed)) {
        try {
            serve_once();
        } catch (const std::exception &e) {
            // Nothing may leave this thread (it would end the host); a
            // connection's own failures are handled below, so this is
            // memory: start every connection again.
            spdlog::error("peer: {}; closing every connection", e.what());
            conns.clear();
            for (Dial &d : dials) {
                d.conn = 0;
            }
        }
    }
}

void PeerService::Impl::serve_once()
{
    Clock::time_point now = Clock::now();
    for (Dial &d : dials) {
        if (d.conn == 0 && now >= d.next_attempt) {
            dial(d, now);
        }
    }
    send_pending(now);
    // Timers: setup deadlines, silence, heartbeats.
    for (const auto &conn : conns) {
        Conn &c = *conn;
        if (c.closing) {
            continue;
        }
        if (c.stage != Conn::Stage::up && now >= c.setup_deadline) {
            doom(c, "no TLS handshake and Hello within " + std::to_string(options.setup_timeout.count()) + " ms",
                 c.stage != Conn::Stage::connect);
        } else if (c.stage == Conn::Stage::up && now - c.last_received >= options.dead_after) {
            doom(c, "silent for " + std::to_string(options.dead_after.count()) + " ms", false);
        } else if (c.stage == Conn::Stage::up && now - c.last_sent >= options.heartbeat_interval) {
            Envelope hb;
            hb.mutable_heartbeat();
            hb.set_request_id(new_request_id());
            try {
                send(c, std::move(hb), now);
            } catch (const serpens::Error &e) {
                doom(c, e.what(), true);
            }
        }
    }
    reap();
    refusal_log.roll(now);
    // Wake often enough for the shortest timer; the peers are few.
    const auto tick = std::clamp(std::min(options.heartbeat_interval, options.dead_after) / 4,
                                 std::chrono::milliseconds(1), std::chrono::milliseconds(100));
    std::vector<pollfd> fds;
    fds.push_back({wake_fd, POLLIN, 0});
    fds.push_back({listen_fd, static_cast<short>(listen_fd >= 0 && now >= accept_paused_until ? POLLIN : 0), 0});
    for (const auto &c : conns) {
        fds.push_back({c->fd(), c->poll_events(), 0});
    }
    if (::poll(fds.data(), fds.size(), static_cast<int>(tick.count())) < 0) {
        return; // EINTR
    }
    if ((fds[0].revents & POLLIN) != 0) {
        uint64_t n;
        ssize_t ignored = ::read(wake_fd, &n, sizeof n);
        (void)ignored;
    }
    now = Clock::now();
    for (std::size_t i = 0; i + 2 < fds.size(); ++i) {
        Conn &c = *conns[i];
        if (fds[i + 2].revents == 0 || c.closing) {
            continue;
        }
        try {
            advance(c, now);
        } catch (const serpens::Error &e) {
            doom(c, e.what(), true);
        }
    }
    reap();
    if ((fds[1].revents & POLLIN) != 0) {
        accept_new(now);
    }
}

void PeerService::Impl::dial(Dial &d, Clock::time_point now)
{
    // Whatever happens, the next attempt backs off; a Hello resets it.
    d.next_attempt = now + d.backoff;
    d.backoff = std::min(d.backoff * 2, options.reconnect_max);
    const SocketAddress addr = socket_address(d.endpoint.address, d.endpoint.port, "address of peer");
    const int fd = ::socket(addr.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        spdlog::warn("peer {}: cannot create a socket: {}", d.endpoint.id, std::strerror(errno));
        return;
    }
    set_nodelay(fd);
    if (::connect(fd, reinterpret_cast<const sockaddr *>(&addr.storage), addr.length) != 0 && errno != EINPROGRESS) {
        spdlog::debug("peer {}: cannot connect: {}", d.endpoint.id, std::strerror(errno));
        ::close(fd);
        return;
    }
    auto c = std::make_unique<Conn>();
    c->id = next_conn_id++;
    c->outgoing = true;
    c->peer_id = d.endpoint.id;
    c->stage = Conn::Stage::connect;
    c->connecting_fd = fd;
    c->setup_deadline = now + options.setup_timeout;
    d.conn = c->id;
    conns.push_back(std::move(c));
}

void PeerService::Impl::accept_new(Clock::time_point now)
{
    // Connections not identified yet are bounded.  Past the bound the oldest
    // that has sent nothing at all goes, else the new one: a flood of bare
    // connects cannot push out a peer that is mid-handshake.  A round takes a
    // bounded number, so that heartbeats and timers run between rounds
    // however fast connections come, and an evicted one closes at once.
    constexpr int accepts_per_round = 16;
    std::size_t unidentified = static_cast<std::size_t>(std::count_if(conns.begin(), conns.end(), [](const auto &c) {
        return !c->outgoing && c->stage != Conn::Stage::up && !c->closing;
    }));
    for (int round = 0; round < accepts_per_round; ++round) {
        const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (accept_must_pause(errno)) {
                accept_paused_until = now + accept_pause;
            }
            return; // EAGAIN, or a connection that went away before accept
        }
        set_nodelay(fd);
        auto c = std::make_unique<Conn>();
        try {
            c->session = std::make_unique<Session>(fd, *tls, Session::Role::server, "");
        } catch (const serpens::Error &e) {
            spdlog::warn("{}", e.what());
            continue;
        }
        c->id = next_conn_id++;
        c->setup_deadline = now + options.setup_timeout;
        if (unidentified >= options.max_unidentified) {
            auto silent = std::find_if(conns.begin(), conns.end(), [](const auto &o) {
                return !o->outgoing && o->stage == Conn::Stage::handshake && !o->closing && !o->session->heard_from();
            });
            refused_unidentified("more than " + std::to_string(options.max_unidentified) +
                                     " connections not yet identified: one that sent nothing goes",
                                 now);
            if (silent == conns.end()) {
                continue; // every one is under way: the new one goes (closed by its destructor)
            }
            conns.erase(silent);
        } else {
            ++unidentified;
        }
        conns.push_back(std::move(c));
    }
}

void PeerService::Impl::refused_unidentified(const std::string &why, Clock::time_point now)
{
    {
        std::lock_guard lock(mu);
        ++counts.sessions_refused;
    }
    refusal_log.note(why, now);
}

Envelope PeerService::Impl::our_hello()
{
    Envelope e;
    Hello *h = e.mutable_hello();
    h->set_protocol_version(kProtocolVersion);
    h->set_host_id(options.host_id);
    h->set_underlay_ipv4(options.underlay_ipv4);
    h->set_underlay_mac(options.underlay_mac.data(), options.underlay_mac.size());
    h->set_vxlan_port(options.vxlan_port);
    h->set_incarnation(options.incarnation);
    e.set_request_id(new_request_id());
    return e;
}

void PeerService::Impl::advance(Conn &c, Clock::time_point now)
{
    if (c.stage == Conn::Stage::connect) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c.connecting_fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
            err = errno;
        }
        if (err != 0) {
            // Nobody listening (yet): no refusal, the dial backs off and tries again.
            spdlog::debug("peer {}: cannot connect: {}", c.peer_id, std::strerror(err));
            doom(c, std::string("cannot connect: ") + std::strerror(err), false);
            return;
        }
        const int fd = std::exchange(c.connecting_fd, -1);
        c.session = std::make_unique<Session>(fd, *tls, Session::Role::client, c.peer_id);
        c.stage = Conn::Stage::handshake;
    }
    Session &s = *c.session;
    if (c.stage == Conn::Stage::handshake) {
        if (!s.handshake_step()) {
            return;
        }
        c.stage = Conn::Stage::hello;
        if (c.outgoing) {
            send(c, our_hello(), now); // the server answers with its own
        }
    }
    while (auto envelope = s.try_receive()) {
        {
            std::lock_guard lock(mu);
            ++counts.envelopes_in;
        }
        c.last_received = now;
        on_envelope(c, std::move(*envelope), now);
    }
    s.flush();
}

void PeerService::Impl::on_envelope(Conn &c, Envelope envelope, Clock::time_point now)
{
    if (envelope.has_hello()) {
        if (c.stage != Conn::Stage::hello) {
            throw serpens::Error("peer " + c.peer_id + ": a second hello");
        }
        on_hello(c, envelope, now);
        return;
    }
    if (c.stage != Conn::Stage::up) {
        throw serpens::Error("peer: a " + std::string(body_name(envelope)) + " before the hello");
    }
    {
        std::lock_guard lock(mu);
        status[c.peer_id].last_seen = now;
    }
    if (envelope.has_heartbeat()) {
        return;
    }
    if (envelope.in_reply_to() != 0) {
        std::lock_guard lock(mu);
        auto it = pending.find(envelope.in_reply_to());
        // A reply nobody waits for any more (late, or its caller gave up) is dropped.
        if (it != pending.end() && it->second.peer_id == c.peer_id && !it->second.reply) {
            it->second.reply = std::move(envelope);
            replied.notify_all();
        }
        return;
    }
    on_request(c, envelope);
}

void PeerService::Impl::on_hello(Conn &c, const Envelope &envelope, Clock::time_point now)
{
    const Hello &h = envelope.hello();
    if (c.outgoing) {
        if (h.host_id() != c.peer_id) {
            throw serpens::Error("peer " + c.peer_id + ": its hello says it is '" + h.host_id() + "'");
        }
    } else {
        if (!known_peer(h.host_id())) {
            throw serpens::Error("peer: '" + h.host_id() + "' (certificate CN '" + c.session->peer_cn() +
                                 "') is no configured peer");
        }
        if (!c.session->peer_is(h.host_id())) {
            throw serpens::Error("peer: hello says '" + h.host_id() + "', its certificate names another host (CN '" +
                                 c.session->peer_cn() + "')");
        }
        c.peer_id = h.host_id();
    }
    c.stage = Conn::Stage::up;
    ReplyCache &cache = caches[c.peer_id];
    if (cache.incarnation != h.incarnation()) {
        // A restarted peer numbers its requests anew: its old replies must not answer them.
        cache = ReplyCache{h.incarnation(), {}, {}};
    }
    for (Dial &d : dials) {
        if (d.conn == c.id) {
            d.backoff = options.reconnect_min;
        }
    }
    bool was_up;
    {
        std::lock_guard lock(mu);
        PeerStatus &st = status[c.peer_id];
        was_up = st.up;
        st.up = true;
        st.last_seen = now;
        st.incarnation = h.incarnation();
        st.hello = h;
        ++st.sessions;
    }
    if (!was_up) {
        spdlog::info("peer {} is up (incarnation {:x})", c.peer_id, h.incarnation());
    }
    if (!c.outgoing) {
        // Answered once the peer counts as up here: whoever reads this Hello may rely on that.
        Envelope answer = our_hello();
        answer.set_in_reply_to(envelope.request_id());
        send(c, std::move(answer), now);
    }
    send_pending(now);
}

void PeerService::Impl::on_request(Conn &c, const Envelope &request)
{
    ReplyCache &cache = caches[c.peer_id];
    Envelope reply;
    if (auto hit = cache.replies.find(request.request_id()); hit != cache.replies.end()) {
        reply = hit->second;
        std::lock_guard lock(mu);
        ++counts.replies_from_cache;
    } else {
        {
            std::lock_guard lock(mu);
            ++counts.handler_calls;
        }
        try {
            reply = handler(c.peer_id, request);
        } catch (const std::exception &e) {
            reply = error_reply(Error_Code_CODE_INTERNAL, e.what());
        }
        if (reply.body_case() == Envelope::BODY_NOT_SET) {
            reply = ack_reply();
        } else if (reply.has_hello() || reply.has_heartbeat()) {
            reply = error_reply(Error_Code_CODE_INTERNAL, "the handler answered with a hello or heartbeat");
        } else if (auto f = validate_body(reply)) {
            // A reply the peer would refuse would close the connection: it gets the reason instead.
            reply = error_reply(Error_Code_CODE_INTERNAL,
                                "the handler's " + std::string(body_name(reply)) + " is invalid: " + f->message);
        }
        reply.set_in_reply_to(request.request_id());
        reply.set_deadline_ms(0);
        cache.replies.emplace(request.request_id(), reply);
        cache.order.push_back(request.request_id());
        while (cache.order.size() > options.reply_cache) {
            cache.replies.erase(cache.order.front());
            cache.order.pop_front();
        }
    }
    reply.set_request_id(new_request_id());
    send(c, std::move(reply), Clock::now());
}

void PeerService::Impl::send(Conn &c, Envelope envelope, Clock::time_point now)
{
    c.session->queue(std::move(envelope));
    c.session->flush();
    c.last_sent = now;
    std::lock_guard lock(mu);
    ++counts.envelopes_out;
}

void PeerService::Impl::send_pending(Clock::time_point now)
{
    std::vector<std::pair<uint64_t, Envelope>> to_send; // (connection, envelope), sent outside the lock
    {
        std::lock_guard lock(mu);
        for (auto &[id, p] : pending) {
            if (p.sent_on != 0 || p.reply) {
                continue;
            }
            // The first connection to that peer that is up (dialled ones come first: they are older).
            for (const auto &c : conns) {
                if (c->stage == Conn::Stage::up && !c->closing && c->peer_id == p.peer_id) {
                    p.sent_on = c->id;
                    to_send.emplace_back(c->id, p.envelope);
                    break;
                }
            }
        }
    }
    for (auto &[conn_id, envelope] : to_send) {
        for (const auto &c : conns) {
            if (c->id == conn_id) {
                try {
                    send(*c, std::move(envelope), now);
                } catch (const serpens::Error &e) {
                    doom(*c, e.what(), true);
                }
                break;
            }
        }
    }
}

void PeerService::Impl::doom(Conn &c, const std::string &why, bool refused)
{
    if (!c.closing) {
        c.closing = why;
        c.refused = refused;
    }
}

void PeerService::Impl::reap()
{
    for (std::size_t i = conns.size(); i-- > 0;) {
        if (!conns[i]->closing) {
            continue;
        }
        std::unique_ptr<Conn> c = std::move(conns[i]);
        conns.erase(conns.begin() + static_cast<std::ptrdiff_t>(i));
        for (Dial &d : dials) {
            if (d.conn == c->id) {
                d.conn = 0;
            }
        }
        const bool still_up = std::any_of(conns.begin(), conns.end(), [&](const auto &o) {
            return o->stage == Conn::Stage::up && !o->closing && o->peer_id == c->peer_id;
        });
        bool went_down = false;
        {
            std::lock_guard lock(mu);
            if (c->refused) {
                ++counts.sessions_refused;
            }
            for (auto &[id, p] : pending) {
                if (p.sent_on == c->id) {
                    p.sent_on = 0; // resent, same request id, on the next connection
                }
            }
            if (c->stage == Conn::Stage::up && !still_up) {
                went_down = status[c->peer_id].up;
                status[c->peer_id].up = false;
            }
        }
        const std::string who = c->peer_id.empty() ? std::string("(not yet identified)") : c->peer_id;
        if (went_down) {
            spdlog::warn("peer {} is down: {}", who, *c->closing);
        } else if (c->refused && c->peer_id.empty()) {
            refusal_log.note(*c->closing, Clock::now());
        } else if (c->refused) {
            spdlog::warn("peer {}: connection closed: {}", who, *c->closing);
        } else if (c->stage != Conn::Stage::connect) {
            spdlog::info("peer {}: connection closed: {}", who, *c->closing);
        }
        // The session's destructor sends a close_notify if TLS is still sound, and closes the socket.
    }
}

} // namespace serpens::peer
