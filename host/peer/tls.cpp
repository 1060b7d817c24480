#include "peer/tls.h"

#include "core/error.h"
#include "core/private_dir.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <array>
#include <tuple>

namespace serpens::peer {

std::string openssl_errors()
{
    std::string out;
    while (const unsigned long code = ERR_get_error()) {
        std::array<char, 256> text{};
        ERR_error_string_n(code, text.data(), text.size());
        if (!out.empty()) {
            out += "; ";
        }
        out += text.data();
    }
    return out.empty() ? "no OpenSSL error" : out;
}

TlsContext::TlsContext(const TlsCredentials &credentials) : _ctx(SSL_CTX_new(TLS_method()))
{
    ERR_clear_error();
    if (!_ctx) {
        throw serpens::Error("peer: cannot create a TLS context: " + openssl_errors());
    }
    SSL_CTX *ctx = _ctx.get();
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
        throw serpens::Error("peer: this OpenSSL cannot restrict TLS to 1.3: " + openssl_errors());
    }
    // Files another local user could read (the key) or change (any of
    // them) would let that user be this host, or be trusted by it.
    for (const auto &[file, what, secret] :
         {std::tuple{credentials.cert_file, "certificate", false},
          std::tuple{credentials.key_file, "private key", true}, std::tuple{credentials.ca_file, "CA file", false}}) {
        if (std::string why = serpens::trusted_file_problem(file, secret); !why.empty()) {
            throw serpens::Error(std::string("peer: ") + what + " " + file + ": " + why);
        }
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, credentials.cert_file.c_str()) != 1) {
        throw serpens::Error("peer: certificate " + credentials.cert_file + ": " + openssl_errors());
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, credentials.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
        throw serpens::Error("peer: private key " + credentials.key_file + ": " + openssl_errors());
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        throw serpens::Error("peer: private key " + credentials.key_file + " does not match certificate " +
                             credentials.cert_file + ": " + openssl_errors());
    }
    if (SSL_CTX_load_verify_locations(ctx, credentials.ca_file.c_str(), nullptr) != 1) {
        throw serpens::Error("peer: CA file " + credentials.ca_file + ": " + openssl_errors());
    }
    // Both sides present a certificate, and a missing one ends the handshake.
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    // No resumption: every connection proves both certificates again.
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    // Writes from a buffer that is consumed as it goes (peer/session.cpp).
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

bool certificate_names(X509 *cert, std::string_view host_id)
{
    if (cert == nullptr || host_id.empty()) {
        return false;
    }
    return X509_check_host(cert, host_id.data(), host_id.size(), X509_CHECK_FLAG_NO_WILDCARDS, nullptr) == 1;
}

std::string certificate_cn(X509 *cert)
{
    if (cert == nullptr) {
        return "";
    }
    std::array<char, 256> cn{};
    const int n =
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn.data(), static_cast<int>(cn.size()));
    return n > 0 ? std::string(cn.data(), static_cast<std::size_t>(n)) : std::string();
}

} // namespace serpens::peer
