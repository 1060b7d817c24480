#pragma once
// AES-128-GCM for ESP (RFC 4106) over OpenSSL EVP: one key schedule per SA,
// set up once in init; seal/open then only feed a new nonce, so the hot path
// allocates nothing.  Not thread safe: one Gcm per SA per NF context.

#include <cstddef>
#include <cstdint>

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

namespace serpens_vpn {

class Gcm {
public:
    static constexpr std::size_t key_size = 16, nonce_size = 12, tag_size = 16;

    Gcm() = default;
    ~Gcm();
    Gcm(const Gcm &) = delete;
    Gcm &operator=(const Gcm &) = delete;

    // Cold path.  False when OpenSSL refuses (no memory, no AES-GCM).
    bool init(const uint8_t key[key_size]) noexcept;
    // Encrypts data[0, len) in place and writes the tag.  nonce = salt || IV.
    bool seal(const uint8_t nonce[nonce_size], const uint8_t *aad, std::size_t aad_len, uint8_t *data, std::size_t len,
              uint8_t tag[tag_size]) noexcept;
    // Decrypts in place; false when the tag does not verify (data is then garbage).
    bool open(const uint8_t nonce[nonce_size], const uint8_t *aad, std::size_t aad_len, uint8_t *data, std::size_t len,
              const uint8_t tag[tag_size]) noexcept;

private:
    EVP_CIPHER_CTX *_enc = nullptr;
    EVP_CIPHER_CTX *_dec = nullptr;
};

} // namespace serpens_vpn
