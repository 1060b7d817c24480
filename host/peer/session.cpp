#include "peer/session.h"

#include "core/error.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>

namespace serpens::peer {
namespace {

// OpenSSL writes with write(2): a peer gone mid-write would raise SIGPIPE,
// which kills a process that does not ignore it.  Blocked around the write
// and a SIGPIPE it raised consumed, the failure is only an error return.
class SigpipeBlock {
public:
    SigpipeBlock()
    {
        sigset_t pipe;
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        sigset_t pending;
        sigpending(&pending);
        _was_pending = sigismember(&pending, SIGPIPE) == 1;
        pthread_sigmask(SIG_BLOCK, &pipe, &_old);
    }
    ~SigpipeBlock()
    {
        if (!_was_pending) {
            sigset_t pending;
            sigpending(&pending);
            if (sigismember(&pending, SIGPIPE) == 1) {
                sigset_t pipe;
                sigemptyset(&pipe);
                sigaddset(&pipe, SIGPIPE);
                const timespec zero{};
                sigtimedwait(&pipe, nullptr, &zero);
            }
        }
        pthread_sigmask(SIG_SETMASK, &_old, nullptr);
    }
    SigpipeBlock(const SigpipeBlock &) = delete;
    SigpipeBlock &operator=(const SigpipeBlock &) = delete;

private:
    sigset_t _old{};
    bool _was_pending = false;
};

} // namespace

Session::Session(int fd, const TlsContext &tls, Role role, std::string expected_peer)
    : _fd(fd), _expected_peer(std::move(expected_peer))
{
    const int flags = fcntl(_fd, F_GETFL);
    if (flags < 0 || fcntl(_fd, F_SETFL, flags | O_NONBLOCK) != 0) {
        const int err = errno;
        ::close(_fd);
        throw serpens::Error(std::string("peer: cannot make a socket non-blocking: ") + std::strerror(err));
    }
    ERR_clear_error();
    _ssl.reset(SSL_new(tls.get()));
    if (!_ssl || SSL_set_fd(_ssl.get(), _fd) != 1) {
        ::close(_fd);
        throw serpens::Error("peer: cannot set up TLS on a connection: " + openssl_errors());
    }
    if (role == Role::client) {
        // OpenSSL checks the server's certificate names the peer dialled.
        if (SSL_set1_host(_ssl.get(), _expected_peer.c_str()) != 1) {
            ::close(_fd);
            throw serpens::Error("peer: cannot expect host id '" + _expected_peer + "': " + openssl_errors());
        }
        SSL_set_hostflags(_ssl.get(), X509_CHECK_FLAG_NO_WILDCARDS);
        SSL_set_connect_state(_ssl.get());
    } else {
        SSL_set_accept_state(_ssl.get());
    }
}

Session::~Session()
{
    if (_established && !_broken) {
        // A close_notify, best effort: the peer learns this was no cut.
        SigpipeBlock block;
        SSL_shutdown(_ssl.get());
    }
    _ssl.reset();
    ::close(_fd);
}

void Session::fail(const std::string &what)
{
    _broken = true;
    const std::string who = _expected_peer.empty() ? std::string() : " with " + _expected_peer;
    throw serpens::Error("peer: connection" + who + ": " + what);
}

void Session::check_usable() const
{
    if (_broken) {
        throw serpens::Error("peer: connection" + (_expected_peer.empty() ? std::string() : " with " + _expected_peer) +
                             " already failed");
    }
}

bool Session::heard_from() const noexcept
{
    BIO *in = SSL_get_rbio(_ssl.get());
    return in != nullptr && BIO_number_read(in) > 0;
}

bool Session::handshake_step()
{
    check_usable();
    if (_established) {
        return true;
    }
    ERR_clear_error();
    errno = 0; // SSL_ERROR_SYSCALL leaves the reason in errno, or none
    const int rc = SSL_do_handshake(_ssl.get());
    if (rc == 1) {
        _established = true;
        _ssl_wants_write = false;
        return true;
    }
    const int err = SSL_get_error(_ssl.get(), rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        _ssl_wants_write = err == SSL_ERROR_WANT_WRITE;
        return false;
    }
    std::string why = openssl_errors();
    const long verify = SSL_get_verify_result(_ssl.get());
    if (verify != X509_V_OK) {
        why += " (certificate: " + std::string(X509_verify_cert_error_string(verify)) + ")";
    }
    if (err == SSL_ERROR_SYSCALL && errno != 0) {
        why += std::string(" (") + std::strerror(errno) + ")";
    }
    fail("TLS handshake failed: " + why);
}

void Session::handshake(Clock::time_point deadline)
{
    while (!handshake_step()) {
        if (!wait(deadline)) {
            fail("no TLS handshake by the deadline");
        }
    }
}

bool Session::peer_is(std::string_view host_id) const
{
    X509Ptr cert(SSL_get1_peer_certificate(_ssl.get()));
    return _established && SSL_get_verify_result(_ssl.get()) == X509_V_OK && certificate_names(cert.get(), host_id);
}

std::string Session::peer_cn() const
{
    X509Ptr cert(SSL_get1_peer_certificate(_ssl.get()));
    return certificate_cn(cert.get());
}

void Session::queue(Envelope envelope)
{
    check_usable();
    envelope.set_version(kProtocolVersion);
    envelope.set_sequence(_sent_sequence + 1);
    _out += encode_frame(envelope); // throws before the sequence is used
    ++_sent_sequence;
}

void Session::queue_raw(std::string bytes)
{
    check_usable();
    _out += bytes;
}

bool Session::flush()
{
    check_usable();
    if (!_established) {
        return _out.empty();
    }
    SigpipeBlock block;
    while (!_out.empty()) {
        ERR_clear_error();
        errno = 0;
        std::size_t written = 0;
        const int rc = SSL_write_ex(_ssl.get(), _out.data(), _out.size(), &written);
        if (rc == 1) {
            _out.erase(0, written);
            continue;
        }
        const int err = SSL_get_error(_ssl.get(), rc);
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
            _ssl_wants_write = err == SSL_ERROR_WANT_WRITE;
            return false;
        }
        fail("cannot send: " + openssl_errors() +
             (err == SSL_ERROR_SYSCALL && errno != 0 ? std::string(" (") + std::strerror(errno) + ")" : ""));
    }
    _ssl_wants_write = false;
    return true;
}

std::optional<Envelope> Session::try_receive()
{
    check_usable();
    if (!_established) {
        return std::nullopt;
    }
    for (;;) {
        if (_in.size() >= kFrameHeaderBytes) {
            const auto *bytes = reinterpret_cast<const uint8_t *>(_in.data());
            auto length = frame_payload_length(std::span<const uint8_t, kFrameHeaderBytes>(bytes, kFrameHeaderBytes));
            if (auto *f = std::get_if<DecodeFailure>(&length)) {
                fail(std::string("refused a frame (") + decode_error_name(f->error) + "): " + f->message);
            }
            const std::size_t size = std::get<std::size_t>(length);
            if (_in.size() >= kFrameHeaderBytes + size) {
                Decoded decoded = decode_payload(std::span<const uint8_t>(bytes + kFrameHeaderBytes, size));
                _in.erase(0, kFrameHeaderBytes + size);
                if (auto *f = std::get_if<DecodeFailure>(&decoded)) {
                    fail(std::string("refused a frame (") + decode_error_name(f->error) + "): " + f->message);
                }
                Envelope &envelope = std::get<Envelope>(decoded);
                if (envelope.sequence() <= _received_sequence) {
                    fail("refused a " + std::string(body_name(envelope)) + " with sequence " +
                         std::to_string(envelope.sequence()) + " after " + std::to_string(_received_sequence) +
                         " (replayed or reordered)");
                }
                _received_sequence = envelope.sequence();
                return std::move(envelope);
            }
        }
        // Read only as much as one frame needs: a flood costs at most a frame's buffer.
        std::array<char, 16 * 1024> buf;
        std::size_t n = 0;
        ERR_clear_error();
        errno = 0;
        const int rc = SSL_read_ex(_ssl.get(), buf.data(), buf.size(), &n);
        if (rc == 1) {
            _in.append(buf.data(), n);
            continue;
        }
        const int err = SSL_get_error(_ssl.get(), rc);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            _ssl_wants_write = err == SSL_ERROR_WANT_WRITE;
            return std::nullopt;
        }
        if (err == SSL_ERROR_ZERO_RETURN) {
            fail("closed by the peer");
        }
        if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
            fail(errno != 0 ? std::string("cannot receive: ") + std::strerror(errno)
                            : std::string("closed by the peer without a TLS close_notify"));
        }
        fail("cannot receive: " + openssl_errors());
    }
}

void Session::send(Envelope envelope, Clock::time_point deadline)
{
    queue(std::move(envelope));
    while (!flush()) {
        if (!wait(deadline)) {
            fail("could not send by the deadline");
        }
    }
}

std::optional<Envelope> Session::receive(Clock::time_point deadline)
{
    for (;;) {
        if (auto envelope = try_receive()) {
            return envelope;
        }
        if (!wait(deadline)) {
            return std::nullopt;
        }
    }
}

short Session::poll_events() const noexcept
{
    short events = POLLIN;
    if (_ssl_wants_write || (_established && !_out.empty())) {
        events |= POLLOUT;
    }
    return events;
}

bool Session::wait(Clock::time_point deadline) const
{
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
        return false;
    }
    pollfd p{_fd, poll_events(), 0};
    ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    return true;
}

} // namespace serpens::peer
