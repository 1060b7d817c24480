#pragma once
// TLS for the peer protocol: OpenSSL, TLS 1.3 only, mutual authentication by
// certificates.  Each host holds a certificate and key signed by the CA its
// peers trust, and trusts only that CA (a file of one or more).  A peer's
// identity, its host id, is what its certificate names: a DNS subjectAltName
// equal to the id, or, in a certificate with no DNS name, the subject CN
// (OpenSSL's X509_check_host, RFC 6125; no wildcards).  The client checks it
// during the handshake (the peer id it dials); the server after the peer's
// Hello (the id it claims must be the one its certificate names).
//
// Thread safety: a TlsContext is immutable once made and may create
// connections on any thread; the free functions are thread-safe (OpenSSL's
// error queue is per thread).

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <string_view>

namespace serpens::peer {

struct SslCtxFree {
    void operator()(SSL_CTX *ctx) const noexcept { SSL_CTX_free(ctx); }
};
struct SslFree {
    void operator()(SSL *ssl) const noexcept { SSL_free(ssl); }
};
struct X509Free {
    void operator()(X509 *cert) const noexcept { X509_free(cert); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;
using SslPtr = std::unique_ptr<SSL, SslFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;

// PEM files: this host's certificate (a chain: leaf first), its private key,
// and the CA certificates a peer's certificate must chain to.
struct TlsCredentials {
    std::string cert_file;
    std::string key_file;
    std::string ca_file;
};

// One context for both directions (accepting and dialing): TLS 1.3 only, a
// peer certificate required and verified against ca_file, no session tickets
// (a connection is always a full handshake with both certificates).
class TlsContext {
public:
    // Throws Error naming the file and OpenSSL's reason when a file is
    // missing, unreadable, not PEM, or the key does not match the certificate.
    explicit TlsContext(const TlsCredentials &credentials);

    SSL_CTX *get() const noexcept { return _ctx.get(); }

private:
    SslCtxPtr _ctx;
};

// OpenSSL's error queue of this thread as one line ("error:...; error:..."),
// emptied; "no OpenSSL error" when it is empty.
std::string openssl_errors();

// True when `cert` names `host_id` (see the top of this file).
bool certificate_names(X509 *cert, std::string_view host_id);

// The certificate's subject CN, for messages ("" when it has none).
std::string certificate_cn(X509 *cert);

} // namespace serpens::peer
