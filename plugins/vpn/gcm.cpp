// AES-128-GCM over OpenSSL EVP (see gcm.h).

#include "gcm.h"

#include <climits>
#include <openssl/evp.h>

namespace serpens_vpn {

Gcm::~Gcm()
{
    EVP_CIPHER_CTX_free(_enc);
    EVP_CIPHER_CTX_free(_dec);
}

bool Gcm::init(const uint8_t key[key_size]) noexcept
{
    _enc = EVP_CIPHER_CTX_new();
    _dec = EVP_CIPHER_CTX_new();
    if (_enc == nullptr || _dec == nullptr) {
        return false;
    }
    // Key now, nonce per packet: the key schedule is computed once here.
    return EVP_EncryptInit_ex(_enc, EVP_aes_128_gcm(), nullptr, nullptr, nullptr) == 1 &&
           EVP_CIPHER_CTX_ctrl(_enc, EVP_CTRL_GCM_SET_IVLEN, nonce_size, nullptr) == 1 &&
           EVP_EncryptInit_ex(_enc, nullptr, nullptr, key, nullptr) == 1 &&
           EVP_DecryptInit_ex(_dec, EVP_aes_128_gcm(), nullptr, nullptr, nullptr) == 1 &&
           EVP_CIPHER_CTX_ctrl(_dec, EVP_CTRL_GCM_SET_IVLEN, nonce_size, nullptr) == 1 &&
           EVP_DecryptInit_ex(_dec, nullptr, nullptr, key, nullptr) == 1;
}

bool Gcm::seal(const uint8_t nonce[nonce_size], const uint8_t *aad, std::size_t aad_len, uint8_t *data, std::size_t len,
               uint8_t tag[tag_size]) noexcept
{
    int n = 0;
    if (_enc == nullptr || len > INT_MAX || aad_len > INT_MAX ||
        EVP_EncryptInit_ex(_enc, nullptr, nullptr, nullptr, nonce) != 1 ||
        EVP_EncryptUpdate(_enc, nullptr, &n, aad, static_cast<int>(aad_len)) != 1 ||
        EVP_EncryptUpdate(_enc, data, &n, data, static_cast<int>(len)) != 1 ||
        EVP_EncryptFinal_ex(_enc, data + n, &n) != 1) {
        return false;
    }
    return EVP_CIPHER_CTX_ctrl(_enc, EVP_CTRL_GCM_GET_TAG, tag_size, tag) == 1;
}

bool Gcm::open(const uint8_t nonce[nonce_size], const uint8_t *aad, std::size_t aad_len, uint8_t *data, std::size_t len,
               const uint8_t tag[tag_size]) noexcept
{
    int n = 0;
    if (_dec == nullptr || len > INT_MAX || aad_len > INT_MAX ||
        EVP_DecryptInit_ex(_dec, nullptr, nullptr, nullptr, nonce) != 1 ||
        EVP_DecryptUpdate(_dec, nullptr, &n, aad, static_cast<int>(aad_len)) != 1 ||
        EVP_DecryptUpdate(_dec, data, &n, data, static_cast<int>(len)) != 1 ||
        EVP_CIPHER_CTX_ctrl(_dec, EVP_CTRL_GCM_SET_TAG, tag_size, const_cast<uint8_t *>(tag)) != 1) {
        return false;
    }
    return EVP_DecryptFinal_ex(_dec, data + n, &n) == 1;
}

} // namespace serpens_vpn
